//! Retention policies and the compaction state of a key: which data answers for which time.
//!
//! A [`Policy`] keeps raw points for a while, then per-bucket summaries at coarser fixed
//! steps (each a multiple of the one before), each tier for a while or forever. A key's
//! [`CompactionState`] records the watermarks: raw points are authoritative from `raw_from`
//! on, tier `i` for `[tiers[i].from, the next finer level's from)`; before the coarsest tier's
//! `from` nothing is kept. Summaries are the plugin's mergeable ones, so a tier is built from
//! the tier below by merging and answers every figure exactly at its step.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::units::parse_step;
use crate::value::Time;

/// How long a key's history is kept, and how coarsely. Durations in seconds;
/// `f64::INFINITY` = forever.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How long raw points are kept.
    pub raw: f64,
    /// Coarser and coarser tiers, finest first.
    pub tiers: Vec<Tier>,
}

/// One tier of summaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tier {
    /// Bucket length in seconds, aligned to the epoch.
    pub step: f64,
    /// How long its summaries are kept (`f64::INFINITY` = forever).
    pub keep: f64,
}

/// A policy as written in requests and the config: `{"raw": "7d", "tiers": [["1M", "30d"],
/// ["1H", "2y"], ["1d", null]]}`. A missing or null duration (or `"forever"`) is forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub tiers: Vec<Vec<Option<String>>>,
}

impl Default for PolicySpec {
    /// Raw 7 days → 1 minute for 30 days → 1 hour for 2 years → 1 day forever.
    fn default() -> Self {
        let s = |v: &str| Some(v.to_string());
        PolicySpec {
            raw: s("7d"),
            tiers: vec![
                vec![s("1M"), s("30d")],
                vec![s("1H"), s("2y")],
                vec![s("1d")],
            ],
        }
    }
}

impl PolicySpec {
    /// Reads a policy from request JSON (`raw`, `tiers`; other fields are ignored).
    pub fn from_json(args: &Json) -> Result<PolicySpec> {
        let duration = |v: &Json| -> Result<Option<String>> {
            match v {
                Json::Null => Ok(None),
                Json::String(s) => Ok(Some(s.clone())),
                Json::Number(n) => Ok(Some(n.to_string())),
                _ => Err(Error::query("a duration is a string like \"7d\", or null")),
            }
        };
        let raw = duration(args.get("raw").unwrap_or(&Json::Null))?;
        let tiers = match args.get("tiers") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(tiers)) => tiers
                .iter()
                .map(|t| match t {
                    Json::Array(pair) => pair.iter().map(duration).collect::<Result<Vec<_>>>(),
                    _ => Err(Error::query("each tier is [step, keep]")),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(Error::query("tiers must be a list of [step, keep]")),
        };
        Ok(PolicySpec { raw, tiers })
    }

    /// Reads and checks a policy a plugin chose for its type (`default-retention`): JSON text
    /// of an object in the request's shape, with no other field than `raw` and `tiers` (a
    /// misspelt `tiers` would otherwise mean "no tiers" and drop history).
    pub fn from_plugin_json(text: &str) -> Result<(PolicySpec, Policy)> {
        let json: Json =
            serde_json::from_str(text).map_err(|e| Error::query(format!("not JSON: {e}")))?;
        let Some(fields) = json.as_object() else {
            return Err(Error::query("a policy is a JSON object"));
        };
        if let Some(other) = fields.keys().find(|k| *k != "raw" && *k != "tiers") {
            return Err(Error::query(format!(
                "unknown field {other:?} (a policy has raw and tiers)"
            )));
        }
        let spec = PolicySpec::from_json(&json)?;
        let policy = spec.policy()?;
        Ok((spec, policy))
    }

    /// The spec as JSON (`null` = forever).
    pub fn to_json(&self) -> Json {
        json!({"raw": self.raw, "tiers": self.tiers.iter().map(|t| {
            json!([t.first().cloned().flatten(), t.get(1).cloned().flatten()])
        }).collect::<Vec<_>>()})
    }

    /// Checks the spec and turns it into seconds.
    pub fn policy(&self) -> Result<Policy> {
        let raw = keep_seconds(self.raw.as_deref())?;
        let mut tiers: Vec<Tier> = Vec::new();
        for t in &self.tiers {
            let (Some(Some(step)), keep) = (t.first(), t.get(1).cloned().flatten()) else {
                return Err(Error::query("each tier is [step, keep] with a step"));
            };
            if t.len() > 2 {
                return Err(Error::query("each tier is [step, keep]"));
            }
            let step = parse_step(&Json::String(step.clone()))?;
            if step.fract() != 0.0 {
                return Err(Error::query("a tier step is a whole number of seconds"));
            }
            if let Some(prev) = tiers.last() {
                if step <= prev.step || step % prev.step != 0.0 {
                    return Err(Error::query(
                        "each tier's step must be a larger multiple of the one before",
                    ));
                }
                if prev.keep.is_infinite() {
                    return Err(Error::query(
                        "a tier kept forever must be the last (nothing would reach the next)",
                    ));
                }
            } else if raw.is_infinite() {
                return Err(Error::query(
                    "raw points kept forever leave nothing for tiers: give raw a duration",
                ));
            }
            tiers.push(Tier {
                step,
                keep: keep_seconds(keep.as_deref())?,
            });
        }
        Ok(Policy { raw, tiers })
    }
}

fn keep_seconds(v: Option<&str>) -> Result<f64> {
    match v {
        None | Some("forever") => Ok(f64::INFINITY),
        Some(s) => parse_step(&Json::String(s.to_string())),
    }
}

/// Retention patterns are the same patterns as tokens' grants.
pub use crate::pattern::glob as glob_matches;

/// The pattern that governs `name` among `patterns`: an exact name first, then the
/// matching pattern with the most literal characters (the most specific).
pub fn best_match<'a, T>(patterns: &'a [(String, T)], name: &str) -> Option<&'a T> {
    patterns
        .iter()
        .filter(|(p, _)| glob_matches(p, name))
        .max_by_key(|(p, _)| (!p.contains('*'), p.chars().filter(|c| *c != '*').count()))
        .map(|(_, t)| t)
}

/// One tier's watermark.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierState {
    pub step: f64,
    /// The tier's summaries answer from here to the next finer level's `from`.
    pub from: Time,
}

/// Which level answers for which time; stored per key, updated atomically with the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionState {
    /// Raw points answer from here on. The newest point before it is kept as the value
    /// carried into the raw period.
    pub raw_from: Time,
    /// Finest first; tier 0 answers `[tiers[0].from, raw_from)`.
    pub tiers: Vec<TierState>,
    /// Summary rows the key has, all tiers together; `None` in a state written before rows
    /// were counted (they are counted once, at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summaries: Option<u64>,
    /// Gap rows the key has (see [`crate::store::Gap`]).
    #[serde(default)]
    pub gaps: u64,
}

impl CompactionState {
    /// Where level `i` answers: 0 is raw, `i >= 1` is tier `i - 1`.
    pub fn level_range(&self, i: usize) -> (Time, Time) {
        if i == 0 {
            (self.raw_from, f64::INFINITY)
        } else {
            let upper = if i == 1 {
                self.raw_from
            } else {
                self.tiers[i - 2].from
            };
            (self.tiers[i - 1].from, upper)
        }
    }

    /// Moves the lower watermark of level `i`.
    pub fn set_from(&mut self, i: usize, from: Time) {
        if i == 0 {
            self.raw_from = from;
        } else {
            self.tiers[i - 1].from = from;
        }
    }
}

/// A key's stored tiers re-expressed in the tiers of a policy with other steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Restructure {
    /// The watermarks afterwards: raw points stay as they are (`raw_from` is unchanged);
    /// each new tier answers from where the old data it can hold begins.
    pub state: CompactionState,
    /// Old tiers (indices into the old state's tiers) whose summaries are dropped because
    /// the new policy keeps nothing that old; every other old summary moves into the new
    /// tier that covers its start (see [`CompactionState::home`]).
    pub dropped: Vec<usize>,
}

/// Plans how `old` becomes `policy`'s tiers at time `now` when the steps changed.
/// `has_data[k]` says whether old tier `k` holds any summary.
///
/// An old summary of step `s` fits a new tier whose step is a multiple of `s` (it merges
/// exactly into that tier's buckets). Old tiers are finest-first and each step divides the
/// next, so the old tiers that fit new tier `j` or a finer one cover one recent stretch of
/// time; new tier `j` starts where that stretch starts. Every new boundary is therefore an
/// old boundary, and no old summary straddles one. Old data that no new tier can hold is
/// refused (`Err` says why) unless the new policy keeps nothing that old anyway.
pub fn plan_restructure(
    old: &CompactionState,
    has_data: &[bool],
    policy: &Policy,
    now: Time,
) -> std::result::Result<Restructure, String> {
    let horizon = match policy.tiers.last() {
        Some(t) => now - t.keep,
        None => now - policy.raw,
    };
    let mut dropped = Vec::new();
    // (old lower bound, finest new tier that fits) of every old tier with data, finest first.
    let mut kept: Vec<(Time, usize)> = Vec::new();
    for (k, tier) in old.tiers.iter().enumerate() {
        if !has_data.get(k).copied().unwrap_or(true) {
            continue;
        }
        let (lo, hi) = old.level_range(k + 1);
        match policy.tiers.iter().position(|t| t.step % tier.step == 0.0) {
            Some(j) => kept.push((lo, j)),
            None if hi <= horizon => dropped.push(k),
            None => {
                return Err(format!(
                    "it holds {} summaries from {lo} to {hi} that no tier of the new policy can \
                     hold (none has a step that is a multiple of {}): add such a tier, or keep \
                     nothing that old",
                    step_label(tier.step),
                    step_label(tier.step)
                ));
            }
        }
    }
    let mut froms = vec![old.raw_from; policy.tiers.len()];
    for j in (0..policy.tiers.len()).rev() {
        // Where the old data that fits tier j (or a finer one) begins.
        let begins = kept
            .iter()
            .filter(|(_, fit)| *fit <= j)
            .map(|(lo, _)| *lo)
            .fold(old.raw_from, f64::min);
        froms[j] = match froms.get(j + 1) {
            Some(coarser) => begins.max(*coarser),
            None => begins,
        };
    }
    Ok(Restructure {
        state: CompactionState {
            raw_from: old.raw_from,
            tiers: policy
                .tiers
                .iter()
                .zip(froms)
                .map(|(t, from)| TierState { step: t.step, from })
                .collect(),
            summaries: old.summaries,
            gaps: old.gaps,
        },
        dropped,
    })
}

impl CompactionState {
    /// The tier (index into `tiers`) that answers for time `t`, and the start its bucket
    /// holding `t` is stored under; `None` when raw points answer or nothing is kept.
    pub fn home(&self, t: Time) -> Option<(usize, Time)> {
        (1..=self.tiers.len()).find_map(|i| {
            let (lo, hi) = self.level_range(i);
            (lo <= t && t < hi).then(|| (i - 1, self.bucket_start(i - 1, t)))
        })
    }

    /// The start tier `j`'s bucket holding `t` is stored under: the bucket's aligned start,
    /// or the tier's lower watermark when that lies inside the bucket (a bucket the tier
    /// holds only part of, after a change of steps).
    pub fn bucket_start(&self, j: usize, t: Time) -> Time {
        let tier = self.tiers[j];
        ((t / tier.step).floor() * tier.step).max(tier.from)
    }
}

/// A step as people write it: `"1H"`, `"1d"`, `"15M"`, `"30S"`.
pub fn step_label(step: f64) -> String {
    for (unit, secs) in [('d', 86_400.0), ('H', 3_600.0), ('M', 60.0)] {
        if step >= secs && step % secs == 0.0 {
            return format!("{}{unit}", step / secs);
        }
    }
    format!("{step}S")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_stars() {
        assert!(glob_matches("sensor.*", "sensor.kitchen"));
        assert!(glob_matches("*", "x"));
        assert!(glob_matches("a*b*c", "a12b34c"));
        assert!(!glob_matches("a*b*c", "a12c34b"));
        assert!(!glob_matches("sensor.*", "door"));
        assert!(glob_matches("door", "door"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let ps = vec![
            ("*".to_string(), 1),
            ("sensor.*".to_string(), 2),
            ("sensor.k*".to_string(), 3),
            ("sensor.kitchen".to_string(), 4),
        ];
        assert_eq!(best_match(&ps, "sensor.kitchen"), Some(&4));
        assert_eq!(best_match(&ps, "sensor.kid"), Some(&3));
        assert_eq!(best_match(&ps, "sensor.x"), Some(&2));
        assert_eq!(best_match(&ps, "door"), Some(&1));
    }

    #[test]
    fn policies_parse_and_are_checked() -> Result<()> {
        let p = PolicySpec::default().policy()?;
        assert_eq!(p.raw, 7.0 * 86_400.0);
        assert_eq!(p.tiers.len(), 3);
        assert_eq!(p.tiers[1].keep, 730.0 * 86_400.0);
        assert!(p.tiers[2].keep.is_infinite());
        let spec = PolicySpec::from_json(&json!({"raw": "1d", "tiers": [["1H", "30d"], ["1d"]]}))?;
        assert_eq!(spec.policy()?.tiers[1].step, 86_400.0);
        for bad in [
            json!({"raw": "1d", "tiers": [["1H", "30d"], ["90M", null]]}),
            json!({"raw": "1d", "tiers": [["1H", null], ["1d", null]]}),
            json!({"raw": null, "tiers": [["1H", null]]}),
            json!({"raw": "1q"}),
        ] {
            assert!(
                PolicySpec::from_json(&bad)
                    .and_then(|s| s.policy())
                    .is_err(),
                "{bad}"
            );
        }
        Ok(())
    }

    const H: f64 = 3_600.0;
    const D: f64 = 86_400.0;

    /// Raw from day 40 + 5 h; an hourly tier from day 10; a daily tier from day 0.
    fn two_tiers() -> CompactionState {
        CompactionState {
            raw_from: 40.0 * D + 5.0 * H,
            tiers: vec![
                TierState {
                    step: H,
                    from: 10.0 * D,
                },
                TierState { step: D, from: 0.0 },
            ],
            summaries: None,
            gaps: 0,
        }
    }

    fn policy(json: Json) -> Policy {
        PolicySpec::from_json(&json)
            .and_then(|s| s.policy())
            .expect("a valid policy")
    }

    #[test]
    fn a_change_of_steps_moves_old_tiers_into_the_finest_new_tier_that_holds_them() {
        let new = policy(json!({"raw": "1d", "tiers": [["1M", "4H"], ["6H", "60d"], ["1d"]]}));
        let plan = plan_restructure(&two_tiers(), &[true, true], &new, 41.0 * D)
            .expect("every old tier fits");
        let froms: Vec<f64> = plan.state.tiers.iter().map(|t| t.from).collect();
        // No old data fits 1 minute: that tier starts empty at the raw watermark; the hours
        // go to 6 hours where they began, the days stay days.
        assert_eq!(froms, vec![40.0 * D + 5.0 * H, 10.0 * D, 0.0]);
        assert_eq!(plan.state.raw_from, 40.0 * D + 5.0 * H);
        assert!(plan.dropped.is_empty());
        // The last hours before the raw watermark go to a 6-hour bucket the tier holds whole
        // (its start is aligned); the first ones to the bucket starting at the tier's start.
        assert_eq!(plan.state.home(40.0 * D + 4.0 * H), Some((1, 40.0 * D)));
        assert_eq!(plan.state.home(10.0 * D + H), Some((1, 10.0 * D)));
        assert_eq!(plan.state.home(3.0 * D + 7.0 * H), Some((2, 3.0 * D)));
        assert_eq!(plan.state.home(40.0 * D + 5.0 * H), None);
        // A tier that starts inside one of its buckets stores that bucket under its start.
        let mut state = plan.state.clone();
        state.tiers[1].from = 10.0 * D + 2.0 * H;
        assert_eq!(
            state.bucket_start(1, 10.0 * D + 3.0 * H),
            10.0 * D + 2.0 * H
        );
    }

    #[test]
    fn old_data_no_new_tier_can_hold_is_refused_unless_past_the_new_keep() {
        // 7 minutes: a multiple of neither an hour nor a day.
        let new = policy(json!({"raw": "1d", "tiers": [["1M", "4H"], ["7M", null]]}));
        let refused = plan_restructure(&two_tiers(), &[true, true], &new, 41.0 * D);
        assert!(refused.is_err_and(|e| e.contains("1H summaries")));
        let new = policy(json!({"raw": "1d", "tiers": [["1H", "30d"]]}));
        // Days older than the new 30-day keep are dropped, as a run would trim them.
        let plan = plan_restructure(&two_tiers(), &[true, true], &new, 41.0 * D)
            .expect("the days are past the keep");
        assert_eq!(plan.dropped, vec![1]);
        assert_eq!(plan.state.tiers[0].from, 10.0 * D);
        // ... but not days that it would still keep.
        assert!(plan_restructure(&two_tiers(), &[true, true], &new, 39.0 * D).is_err());
        // An old tier without summaries needs no home.
        assert!(plan_restructure(&two_tiers(), &[true, false], &new, 39.0 * D).is_ok());
    }

    #[test]
    fn plugin_policies_are_checked_strictly() -> Result<()> {
        let (spec, policy) = PolicySpec::from_plugin_json(
            r#"{"raw": "90d", "tiers": [["1H", "2y"], ["1d", null]]}"#,
        )?;
        assert_eq!(spec.raw.as_deref(), Some("90d"));
        assert_eq!(policy.tiers[0].step, 3600.0);
        assert!(policy.tiers[1].keep.is_infinite());
        for bad in [
            r#"{"raw": "7d", "tier": [["1H", null]]}"#,
            r#"{"raw": "7d", "tiers": [["1H", null], ["1d", null]]}"#,
            r#"["7d"]"#,
            "raw 7d",
        ] {
            assert!(PolicySpec::from_plugin_json(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn steps_are_labelled_in_their_largest_unit() {
        assert_eq!(step_label(60.0), "1M");
        assert_eq!(step_label(3600.0), "1H");
        assert_eq!(step_label(86_400.0), "1d");
        assert_eq!(step_label(5400.0), "90M");
        assert_eq!(step_label(7.0), "7S");
    }
}
