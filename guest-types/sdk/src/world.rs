//! The `key-type` world's functions for a given [`KeyType`], as [`export_key_type!`] calls
//! them. Options arrive as the bytes `check-options` encoded ([`crate::options::decode`]
//! reads them back without JSON). Native tests call [`json`], the same functions with
//! options as JSON text.
//!
//! [`export_key_type!`]: crate::export_key_type

use crate::options;
use crate::summary::{Figures, Summary};
use crate::{
    CheckedOptions, Info, Input, Json, KeyOperations, KeyType, OpKind, Operation, Outcome, Point,
    Refusal, Scheduled,
};

/// The key's options from their encoding.
pub fn decode_options<T: KeyType>(encoded: &[u8]) -> Result<T::Options, Refusal> {
    options::decode::<T::Options>(encoded)
}

/// The type's default options.
fn default_options<T: KeyType>() -> T::Options {
    let (parsed, _, _) =
        options::parse::<T::Options>("{}").expect("a type's default options are valid");
    parsed
}

/// The options for calls that cannot refuse (`reschedule`, `summarize`, `merge`): the
/// decoded `encoded`, or the defaults if they do not decode (the host only passes what
/// `check-options` returned, so that is a host bug, not a reason to lose data).
fn options_or_default<T: KeyType>(encoded: &[u8]) -> T::Options {
    decode_options::<T>(encoded).unwrap_or_else(|_| default_options::<T>())
}

/// `info`: the type's identity; `version` is the plugin crate's version.
pub fn info<T: KeyType>(version: &str) -> Info {
    let (_, default_options, _) =
        options::parse::<T::Options>("{}").expect("a type's default options are valid");
    Info {
        name: T::NAME.to_owned(),
        version: version.to_owned(),
        description: T::DESCRIPTION.to_owned(),
        default_options,
    }
}

/// `figures`: every figure the type's summary declares, in order.
pub fn figures<T: KeyType>() -> Vec<String> {
    let mut out = Figures::names();
    T::Summary::empty().figures(&default_options::<T>(), &mut out);
    out.into_names().into_iter().map(str::to_owned).collect()
}

/// `default-retention`: the type's retention policy as JSON text, if it chose one.
pub fn default_retention<T: KeyType>() -> Option<String> {
    T::default_retention().map(|policy| policy.to_string())
}

/// `migrate-options`: a key's stored options (a JSON object) as this version takes them.
pub fn migrate_options<T: KeyType>(options: String) -> Result<String, String> {
    let Ok(Json::Object(options)) = serde_json::from_str::<Json>(&options) else {
        return Err(format!("options are not a JSON object: {options}"));
    };
    T::migrate_options(options).map(|migrated| Json::Object(migrated).to_string())
}

/// `guess`: how strongly the type claims a new key whose first value is `sample`.
pub fn guess<T: KeyType>(sample: Input) -> u8 {
    T::guess(&sample)
}

/// `check-options`: the options completed with defaults, as JSON text and encoded.
pub fn check_options<T: KeyType>(options: String) -> Result<CheckedOptions, Refusal> {
    let (_, json, encoded) = options::parse::<T::Options>(&options)?;
    Ok(CheckedOptions { json, encoded })
}

/// `apply`: a batch of operations on keys of this type, with the chaining rule of the WIT:
/// within one key, each operation sees as the latest point the one the operation before it
/// stored (when its time is not before the latest point's), else the one it saw itself; a
/// refused operation changes nothing. Consecutive keys with the same options bytes decode
/// them once.
pub fn apply<T: KeyType>(batch: Vec<KeyOperations>) -> Vec<Vec<Result<Outcome, Refusal>>> {
    let mut decoded: Option<(Vec<u8>, Result<T::Options, Refusal>)> = None;
    let mut results = Vec::with_capacity(batch.len());
    for key in batch {
        if decoded
            .as_ref()
            .is_none_or(|(bytes, _)| *bytes != key.options)
        {
            let parsed = decode_options::<T>(&key.options);
            decoded = Some((key.options, parsed));
        }
        let Some((_, parsed)) = &decoded else {
            unreachable!("decoded just above")
        };
        let options = match parsed {
            Ok(options) => options,
            Err(refusal) => {
                results.push(key.ops.iter().map(|_| Err(refusal.clone())).collect());
                continue;
            }
        };
        results.push(apply_key::<T>(options, key.latest, key.ops));
    }
    results
}

/// One key's operations, chained.
fn apply_key<T: KeyType>(
    options: &T::Options,
    mut latest: Option<Point>,
    ops: Vec<crate::TimedOperation>,
) -> Vec<Result<Outcome, Refusal>> {
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let time = op.time;
        let result = T::apply(options, latest.clone(), op.op, time);
        if let Ok(outcome) = &result
            && outcome.store
            && latest.as_ref().is_none_or(|p| time >= p.time)
        {
            latest = Some(Point {
                time,
                value: outcome.value.clone(),
            });
        }
        results.push(result);
    }
    results
}

/// The default [`KeyType::apply`]: cast (`set`) or [`KeyType::add`] (`add`), decide storage
/// with [`KeyType::should_store`], and schedule from the newer of `previous` and the new
/// point (a backfill older than `previous` leaves the pending value as it was).
pub fn default_apply<T: KeyType + ?Sized>(
    options: &T::Options,
    previous: Option<Point>,
    op: Operation,
    time: f64,
) -> Result<Outcome, Refusal> {
    let (value, kind) = match op {
        Operation::Set(input) => (T::cast(options, input)?, OpKind::Set),
        Operation::Add(step) => (T::add(options, previous.as_ref(), step)?, OpKind::Add),
    };
    let point = Point { time, value };
    let store = T::should_store(options, previous.as_ref(), &point, kind);
    let latest = match &previous {
        Some(p) if p.time > time => p,
        _ => &point,
    };
    let schedule = T::schedule(options, latest);
    Ok(Outcome {
        value: point.value,
        store,
        schedule,
    })
}

/// `reschedule`: the pending automatic value given the key's latest point.
pub fn reschedule<T: KeyType>(options: Vec<u8>, latest: Point) -> Option<Scheduled> {
    T::schedule(&options_or_default::<T>(&options), &latest)
}

/// `summarize`: one encoded summary per bucket. Unsorted points are sorted first.
pub fn summarize<T: KeyType>(
    options: Vec<u8>,
    edges: Vec<f64>,
    carried: Option<Point>,
    mut points: Vec<Point>,
) -> Vec<Vec<u8>> {
    if !points.is_sorted_by(|a, b| a.time <= b.time) {
        points.sort_by(|a, b| a.time.total_cmp(&b.time));
    }
    let parsed = options_or_default::<T>(&options);
    T::summarize(&parsed, &edges, carried.as_ref(), &points)
        .iter()
        .map(Summary::encode)
        .collect()
}

/// `merge`: the summary of the union of adjacent buckets, oldest first.
///
/// # Panics
///
/// On a part that does not decode: the plugin traps rather than silently dropping
/// history, so the host keeps the parts it has.
pub fn merge<T: KeyType>(options: Vec<u8>, parts: Vec<Vec<u8>>) -> Vec<u8> {
    let parsed = options_or_default::<T>(&options);
    let merged = parts
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            T::Summary::decode(bytes)
                .unwrap_or_else(|e| panic!("{}: cannot merge summary #{index}: {e}", T::NAME))
        })
        .reduce(|a, b| a.merge(b, &parsed))
        .unwrap_or_else(T::Summary::empty);
    merged.encode()
}

/// `render`: a JSON array with one element per summary, the default figure (a bare scalar)
/// when `figures` is empty, else an object of the named figures (`["*"]`, what hosts of
/// 0.1.0 asked, names every figure).
pub fn render<T: KeyType>(
    options: Vec<u8>,
    summaries: Vec<Vec<u8>>,
    figures: Vec<String>,
) -> Result<String, Refusal> {
    let known = self::figures::<T>();
    let figures = if figures.len() == 1 && figures[0] == "*" {
        known.clone()
    } else {
        figures
    };
    if let Some(unknown) = figures.iter().find(|f| !known.contains(f)) {
        return Err(Refusal::new(
            crate::codes::UNKNOWN_FIGURE,
            format!(
                "{} has no figure {unknown:?}; known figures: {}",
                T::NAME,
                known.join(", ")
            ),
        ));
    }
    let parsed = decode_options::<T>(&options)?;
    let mut rendered = Vec::with_capacity(summaries.len());
    for (index, bytes) in summaries.iter().enumerate() {
        let summary = T::Summary::decode(bytes).map_err(|e| {
            Refusal::new(
                crate::codes::INVALID_SUMMARY,
                format!("summary #{index} is not a {} summary: {e}", T::NAME),
            )
        })?;
        rendered.push(if figures.is_empty() {
            crate::summary::normalize(summary.default_figure(&parsed))
        } else {
            let mut out = Figures::pick(&figures);
            summary.figures(&parsed, &mut out);
            Json::Object(
                figures
                    .iter()
                    .cloned()
                    .zip(out.into_values())
                    .map(|(name, value)| (name, value.unwrap_or(Json::Null)))
                    .collect(),
            )
        });
    }
    Ok(Json::Array(rendered).to_string())
}

/// The world's functions with options as JSON text (encoded by `check-options` on each
/// call), for native tests: `json::apply::<MyType>(r#"{"min_resolution": 5}"#.into(), ...)`.
pub mod json {
    use super::*;

    /// The encoding `check-options` makes of `options`, or its refusal.
    pub fn encode<T: KeyType>(options: &str) -> Result<Vec<u8>, Refusal> {
        super::check_options::<T>(options.to_owned()).map(|c| c.encoded)
    }

    fn encoded<T: KeyType>(options: &str) -> Vec<u8> {
        encode::<T>(options).unwrap_or_default()
    }

    /// `check-options`: the complete options as JSON text.
    pub fn check_options<T: KeyType>(options: String) -> Result<String, Refusal> {
        super::check_options::<T>(options).map(|c| c.json)
    }

    /// `apply` of one operation (a batch of one): refused like the host would see it when
    /// the options themselves are refused.
    pub fn apply<T: KeyType>(
        options: String,
        previous: Option<Point>,
        op: Operation,
        time: f64,
    ) -> Result<Outcome, Refusal> {
        let options = encode::<T>(&options)?;
        let mut results = super::apply::<T>(vec![KeyOperations {
            options,
            latest: previous,
            ops: vec![crate::TimedOperation { op, time }],
        }]);
        results
            .pop()
            .and_then(|mut key| key.pop())
            .expect("one result per operation")
    }

    /// `reschedule`.
    pub fn reschedule<T: KeyType>(options: String, latest: Point) -> Option<Scheduled> {
        super::reschedule::<T>(encoded::<T>(&options), latest)
    }

    /// `summarize`.
    pub fn summarize<T: KeyType>(
        options: String,
        edges: Vec<f64>,
        carried: Option<Point>,
        points: Vec<Point>,
    ) -> Vec<Vec<u8>> {
        super::summarize::<T>(encoded::<T>(&options), edges, carried, points)
    }

    /// `merge`.
    pub fn merge<T: KeyType>(options: String, parts: Vec<Vec<u8>>) -> Vec<u8> {
        super::merge::<T>(encoded::<T>(&options), parts)
    }

    /// `render`.
    pub fn render<T: KeyType>(
        options: String,
        summaries: Vec<Vec<u8>>,
        figures: Vec<String>,
    ) -> Result<String, Refusal> {
        super::render::<T>(encode::<T>(&options)?, summaries, figures)
    }

    pub use super::{default_retention, figures, guess, info, migrate_options};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::NumberSummary;
    use crate::{Resolution, TimedOperation, Value, cast};

    struct Plain;

    impl KeyType for Plain {
        const NAME: &'static str = "plain";
        const DESCRIPTION: &'static str = "test";
        type Options = Resolution;
        type Summary = NumberSummary;

        fn cast(_options: &Resolution, input: Input) -> Result<Value, Refusal> {
            cast::number(Self::NAME, &input).map(Value::Number)
        }
    }

    fn set(n: f64, time: f64) -> TimedOperation {
        TimedOperation {
            op: Operation::Set(Input::Number(n)),
            time,
        }
    }

    /// A batch gives exactly what single applies give, each fed the latest point the one
    /// before it stored (a refused or unstored one changes nothing, a backfill neither).
    #[test]
    fn batch_apply_chains_like_single_applies() -> Result<(), Refusal> {
        let options = json::encode::<Plain>(r#"{"same_value_resolution": 10}"#)?;
        let ops = vec![
            set(1.0, 100.0),
            set(1.0, 105.0), // close repeat of 1 at 100: not stored
            TimedOperation {
                op: Operation::Set(Input::Text("x".into())),
                time: 106.0,
            }, // refused
            set(2.0, 50.0),  // backfill: stored, latest stays at 100
            set(1.0, 108.0), // still a close repeat of the point at 100
            set(1.0, 111.0), // 11 s after: stored
        ];
        let results = apply::<Plain>(vec![KeyOperations {
            options: options.clone(),
            latest: None,
            ops: ops.clone(),
        }]);
        let mut latest: Option<Point> = None;
        let mut expected = Vec::new();
        for op in ops {
            let one = Plain::apply(
                &decode_options::<Plain>(&options)?,
                latest.clone(),
                op.op,
                op.time,
            );
            if let Ok(o) = &one
                && o.store
                && latest.as_ref().is_none_or(|p| op.time >= p.time)
            {
                latest = Some(Point {
                    time: op.time,
                    value: o.value.clone(),
                });
            }
            expected.push(one);
        }
        assert_eq!(results, vec![expected.clone()]);
        let stored: Vec<bool> = expected
            .iter()
            .map(|r| r.as_ref().is_ok_and(|o| o.store))
            .collect();
        assert_eq!(stored, [true, false, false, true, false, true]);
        Ok(())
    }

    #[test]
    fn figures_are_listed_and_rendered_from_one_declaration() -> Result<(), Refusal> {
        let names = figures::<Plain>();
        assert_eq!(names[0], "mean");
        assert!(names.contains(&"coverage_seconds".to_string()));
        let options = json::encode::<Plain>("{}")?;
        let points = vec![Point {
            time: 0.0,
            value: Value::Number(15.0),
        }];
        let summaries = summarize::<Plain>(options.clone(), vec![0.0, 10.0], None, points);
        let text = render::<Plain>(options.clone(), summaries.clone(), vec!["max".into()])?;
        assert_eq!(text, r#"[{"max":15}]"#);
        let all = render::<Plain>(options.clone(), summaries, vec!["*".into()])?;
        let all: Json = serde_json::from_str(&all).expect("JSON");
        assert_eq!(all[0].as_object().map(|o| o.len()), Some(names.len()));
        let unknown = render::<Plain>(options, vec![], vec!["nope".into()]);
        assert_eq!(
            unknown.map_err(|r| r.code),
            Err("unknown_figure".to_string())
        );
        Ok(())
    }

    #[test]
    fn figures_render_integral_floats_as_integers() {
        assert_eq!(
            crate::summary::normalize(Json::from(15.0)).to_string(),
            "15"
        );
        assert_eq!(
            crate::summary::normalize(serde_json::json!({"a": [2.5, 3.0]})).to_string(),
            r#"{"a":[2.5,3]}"#
        );
    }
}
