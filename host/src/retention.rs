//! Retention policies and the compaction state of a key: which data answers for which time.
//!
//! A [`Policy`] keeps raw points for a while, then per-bucket summaries at coarser fixed
//! steps (each a multiple of the one before), each tier for a while or forever. A key's
//! [`CompactionState`] records the watermarks: raw points are authoritative from `raw_from`
//! on, tier `i` for `[tiers[i].from, the next finer level's from)`; before the coarsest tier's
//! `from` nothing is kept. Summaries are the plugin's mergeable ones, so a tier is built from
//! the tier below by merging and answers every figure exactly at its step.

use crate::value::Time;

pub use crate::policy::{CompactionState, Policy, PolicySpec, Tier, TierState, step_label};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use serde_json::{Value as Json, json};

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
