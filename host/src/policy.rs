//! Retention policies and compaction watermarks as plain data: what a policy says, and the
//! per-key [`CompactionState`] the store keeps beside the data. No storage, no decisions:
//! [`crate::retention`] decides, [`crate::store`] persists.

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
