//! Mergeable summaries of time buckets, and their compact binary encodings.
//!
//! A bucket is a half-open time range `[start, end)`. A value holds from its point's time
//! until the next point or the bucket's end; before the first point, the value in force is
//! the one carried in from before the bucket, and without one the time is unknown (not
//! counted). Summaries of adjacent buckets merge, oldest first, into exactly the summary of
//! their union (up to the state cap of [`StateSummary`]).
//!
//! Every encoding starts with a tag byte naming the format (and its version), so a summary
//! decodes without the key's options, and a changed format gets a new tag:
//!
//! | tag | format |
//! |---|---|
//! | `N` (0x4E) | [`NumberSummary`] |
//! | `B` (0x42) | [`StateSummary<bool>`], boolean states |
//! | `S` (0x53) | [`StateSummary<String>`], text states |
//! | `L` (0x4C) | [`LogSummary`] |
//!
//! Numbers are little-endian IEEE 754 doubles (`f64`), counts are unsigned LEB128
//! (`varint`), texts are a `varint` byte length then UTF-8. Each format's layout is on its
//! type.

/// Implements [`Summary<O>`] for every `O` for a summary that ignores options, from its
/// inherent `from_bucket`, `merge`, `encode`, `decode`, `FIGURES`, `figure` and
/// `default_figure`.
macro_rules! builtin_summary {
    ($t:ty) => {
        impl<O: ?Sized> $crate::summary::Summary<O> for $t {
            fn empty() -> Self {
                <$t>::default()
            }
            fn from_bucket(bucket: &$crate::summary::Bucket<'_>, _options: &O) -> Self {
                <$t>::from_bucket(bucket)
            }
            fn merge(self, next: Self, _options: &O) -> Self {
                <$t>::merge(self, next)
            }
            fn encode(&self) -> Vec<u8> {
                <$t>::encode(self)
            }
            fn decode(bytes: &[u8]) -> Result<Self, $crate::summary::DecodeError> {
                <$t>::decode(bytes)
            }
            fn figures(&self, _options: &O, out: &mut $crate::summary::Figures<'_>) {
                for name in <$t>::FIGURES {
                    out.add(name, || self.figure(name).unwrap_or($crate::Json::Null));
                }
            }
            fn default_figure(&self, _options: &O) -> $crate::Json {
                <$t>::default_figure(self)
            }
        }
    };
}

builtin_summary!(NumberSummary);
builtin_summary!(LogSummary);
builtin_summary!(StateSummary<bool>);
builtin_summary!(StateSummary<String>);

mod codec;
mod log;
mod number;
mod state;

pub use codec::{DecodeError, Reader, Writer};
pub use log::{LogSummary, MAX_SAMPLE, entry_hash};
pub use number::NumberSummary;
pub use state::{MAX_STATES, State, StateStats, StateSummary};

use crate::cast::number_json;
use crate::{Json, Point, Value};

/// A mergeable summary of one bucket of a key's history, for keys with options `O`.
///
/// The key's options reach every step, so a figure that depends on an option (time above a
/// threshold) is computed where the bucket is read, with no constant in the code. The
/// built-in summaries ([`NumberSummary`], [`StateSummary`], [`LogSummary`]) ignore options
/// and implement `Summary<O>` for every `O`.
///
/// A summary of its own around a built-in one:
///
/// ```
/// use komoku_guest::summary::{Bucket, DecodeError, Figures, NumberSummary, Reader, Summary, Writer};
/// use komoku_guest::{Json, Resolution};
///
/// /// Options with a threshold (reading them is shown in [`komoku_guest::options`]).
/// pub struct Limits { pub resolution: Resolution, pub threshold: f64 }
///
/// #[derive(Clone, Debug, Default, PartialEq)]
/// pub struct Above { number: NumberSummary, seconds_above: f64 }
///
/// impl Summary<Limits> for Above {
///     fn empty() -> Self { Self::default() }
///     fn from_bucket(bucket: &Bucket<'_>, options: &Limits) -> Self {
///         let mut seconds_above = 0.0;
///         bucket.for_each_held(|value, seconds| {
///             if value.as_number().is_some_and(|v| v > options.threshold) {
///                 seconds_above += seconds;
///             }
///         });
///         Above { number: NumberSummary::from_bucket(bucket), seconds_above }
///     }
///     fn merge(self, next: Self, _options: &Limits) -> Self {
///         Above {
///             number: self.number.merge(next.number),
///             seconds_above: self.seconds_above + next.seconds_above,
///         }
///     }
///     fn encode(&self) -> Vec<u8> {
///         let mut w = Writer::new(b'A');
///         w.f64(self.seconds_above);
///         w.raw(&self.number.encode()); // the whole inner encoding, at the end
///         w.finish()
///     }
///     fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
///         let mut r = Reader::new(bytes, b'A')?;
///         let seconds_above = r.f64()?;
///         Ok(Above { number: NumberSummary::decode(r.rest())?, seconds_above })
///     }
///     fn figures(&self, options: &Limits, out: &mut Figures<'_>) {
///         Summary::<Limits>::figures(&self.number, options, out); // mean, min, max, ...
///         out.add("time_above", || Json::from(self.seconds_above));
///     }
///     fn default_figure(&self, _options: &Limits) -> Json {
///         Json::from(self.seconds_above)
///     }
/// }
/// ```
pub trait Summary<O: ?Sized = ()>: Sized {
    /// The summary of a bucket where nothing is known (what merging no parts gives).
    fn empty() -> Self;

    /// Summarises one bucket of a key with `options`.
    fn from_bucket(bucket: &Bucket<'_>, options: &O) -> Self;

    /// The summary of `self`'s bucket followed by the adjacent, later `next`.
    fn merge(self, next: Self, options: &O) -> Self;

    /// The binary encoding. Start it with a tag byte of your own ([`Writer::new`]).
    fn encode(&self) -> Vec<u8>;

    /// Reads an encoding back.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// Every figure, each declared once with [`Figures::add`]: its name and how to compute
    /// it. The `figures` export lists these names (in this order) and `render` computes the
    /// ones asked for, so the list and the computation cannot disagree.
    fn figures(&self, options: &O, out: &mut Figures<'_>);

    /// The default figure, a bare JSON scalar (`null` when nothing is known): what a v1
    /// `fetch` with `step` shows.
    fn default_figure(&self, options: &O) -> Json;
}

/// Where [`Summary::figures`] declares its figures: it either collects the names (for the
/// `figures` export) or computes the ones a `render` asked for. A figure's closure runs only
/// when that figure is asked for.
///
/// Numbers are rendered the SDK's way whatever closure made them: an integral `f64` as an
/// integer (`Json::from(15.0)` renders `15`), a non-finite one as `null`.
#[derive(Debug)]
pub struct Figures<'a> {
    mode: FiguresMode<'a>,
}

#[derive(Debug)]
enum FiguresMode<'a> {
    Names(Vec<&'static str>),
    Pick {
        wanted: &'a [String],
        found: Vec<Option<Json>>,
    },
}

impl<'a> Figures<'a> {
    /// Collects the names declared.
    pub fn names() -> Self {
        Self {
            mode: FiguresMode::Names(Vec::new()),
        }
    }

    /// Computes the figures `wanted`.
    pub fn pick(wanted: &'a [String]) -> Self {
        Self {
            mode: FiguresMode::Pick {
                wanted,
                found: vec![None; wanted.len()],
            },
        }
    }

    /// Declares figure `name`, computed by `value` when asked for.
    pub fn add(&mut self, name: &'static str, value: impl FnOnce() -> Json) {
        match &mut self.mode {
            FiguresMode::Names(names) => {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            FiguresMode::Pick { wanted, found } => {
                let mut value = Some(value);
                let mut computed: Option<Json> = None;
                for (w, slot) in wanted.iter().zip(found.iter_mut()) {
                    if w == name && slot.is_none() {
                        if let Some(f) = value.take() {
                            computed = Some(normalize(f()));
                        }
                        slot.clone_from(&computed);
                    }
                }
            }
        }
    }

    /// The names declared (after [`Figures::names`]).
    pub fn into_names(self) -> Vec<&'static str> {
        match self.mode {
            FiguresMode::Names(names) => names,
            FiguresMode::Pick { .. } => Vec::new(),
        }
    }

    /// The figures asked for, in the order asked, `None` for a name nobody declared (after
    /// [`Figures::pick`]).
    pub fn into_values(self) -> Vec<Option<Json>> {
        match self.mode {
            FiguresMode::Names(_) => Vec::new(),
            FiguresMode::Pick { found, .. } => found,
        }
    }
}

/// Numbers as the SDK renders them: integral `f64`s as integers, non-finite as `null`.
pub fn normalize(json: Json) -> Json {
    match json {
        Json::Number(n) if n.is_f64() => n.as_f64().map_or(Json::Null, number_json),
        Json::Array(items) => Json::Array(items.into_iter().map(normalize).collect()),
        Json::Object(fields) => {
            Json::Object(fields.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        other => other,
    }
}

/// One bucket's share of a `summarize` call.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket<'a> {
    /// The first instant in the bucket.
    pub start: f64,
    /// The first instant after the bucket (`>= start`).
    pub end: f64,
    /// The value in force at `start`, if known.
    pub initial: Option<&'a Value>,
    /// The points in `[start, end)`, in time order.
    pub points: &'a [Point],
}

impl Bucket<'_> {
    /// Calls `f(value, seconds)` for each value held during the bucket, in time order: the
    /// value carried in until the first point (if known), then each point's value until the
    /// next point or the bucket's end. Zero-length holds are included.
    pub fn for_each_held(&self, mut f: impl FnMut(&Value, f64)) {
        let mut current = self.initial.map(|v| (v, self.start));
        for point in self.points {
            if let Some((value, since)) = current {
                f(value, point.time - since);
            }
            current = Some((&point.value, point.time));
        }
        if let Some((value, since)) = current {
            f(value, self.end - since);
        }
    }
}

/// Splits a `summarize` call into buckets: `edges` has n+1 ascending times for n buckets,
/// `carried` is the point in force at `edges[0]`, `points` are sorted by time. Points
/// before `edges[0]` count as carried, points from `edges[n]` on are ignored, and a
/// descending edge is treated as an empty bucket.
pub fn buckets<'a>(
    edges: &[f64],
    carried: Option<&'a Point>,
    points: &'a [Point],
) -> Vec<Bucket<'a>> {
    let Some(&first_edge) = edges.first() else {
        return Vec::new();
    };
    let mut initial = carried.map(|p| &p.value);
    let mut next = 0;
    while next < points.len() && points[next].time < first_edge {
        initial = Some(&points[next].value);
        next += 1;
    }
    let mut result = Vec::with_capacity(edges.len().saturating_sub(1));
    for pair in edges.windows(2) {
        let (start, end) = (pair[0], pair[1].max(pair[0]));
        let from = next;
        while next < points.len() && points[next].time < end {
            next += 1;
        }
        result.push(Bucket {
            start,
            end,
            initial,
            points: &points[from..next],
        });
        if let Some(last) = points[from..next].last() {
            initial = Some(&last.value);
        }
    }
    result
}

/// A point as a figure: `{"time": t, "value": v}`.
pub fn point_json(time: f64, value: Json) -> Json {
    let mut object = serde_json::Map::new();
    object.insert("time".to_owned(), number_json(time));
    object.insert("value".to_owned(), value);
    Json::Object(object)
}

/// `numerator / denominator` as a figure, `null` when the denominator is 0.
pub fn ratio_json(numerator: f64, denominator: f64) -> Json {
    if denominator > 0.0 {
        number_json(numerator / denominator)
    } else {
        Json::Null
    }
}

/// Random histories and the merge property, shared by the summaries' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::testing::XorShift;
    use std::fmt::Debug;

    /// Random `summarize` arguments with integer times: 1 to 5 buckets (some empty, some of
    /// zero width), maybe a carried point, up to 15 points (times may repeat).
    pub(crate) fn random_history(
        rng: &mut XorShift,
        mut value: impl FnMut(&mut XorShift) -> Value,
    ) -> (Vec<f64>, Option<Point>, Vec<Point>) {
        let mut edges = vec![rng.below(5) as f64];
        for _ in 0..1 + rng.below(5) {
            let width = if rng.one_in(5) { 0 } else { rng.below(12) };
            edges.push(edges[edges.len() - 1] + width as f64);
        }
        let (first, last) = (edges[0], edges[edges.len() - 1]);
        let carried = (!rng.one_in(3)).then(|| Point {
            time: first - 1.0 - rng.below(3) as f64,
            value: value(rng),
        });
        let mut points = Vec::new();
        if last > first {
            for _ in 0..rng.below(16) {
                let time = first + rng.below((last - first) as u64) as f64;
                points.push(Point {
                    time,
                    value: value(rng),
                });
            }
        }
        points.sort_by(|a, b| a.time.total_cmp(&b.time));
        (edges, carried, points)
    }

    /// Checks on random histories that merging the buckets' summaries, in any grouping,
    /// equals summarising their union as one bucket.
    pub(crate) fn check_merge<S: Summary<()> + PartialEq + Debug + Clone>(
        seed: u64,
        value: impl FnMut(&mut XorShift) -> Value,
    ) {
        check_merge_with(seed, value, |b| S::from_bucket(b, &()));
    }

    /// [`check_merge`] with summaries made by `summarize` instead of `S::from_bucket`.
    pub(crate) fn check_merge_with<S: Summary<()> + PartialEq + Debug + Clone>(
        seed: u64,
        mut value: impl FnMut(&mut XorShift) -> Value,
        summarize: impl Fn(&Bucket<'_>) -> S,
    ) {
        let mut rng = XorShift::new(seed);
        for round in 0..2000 {
            let (edges, carried, points) = random_history(&mut rng, &mut value);
            let parts: Vec<S> = buckets(&edges, carried.as_ref(), &points)
                .iter()
                .map(&summarize)
                .collect();
            let union = [edges[0], edges[edges.len() - 1]];
            let direct = summarize(&buckets(&union, carried.as_ref(), &points)[0]);
            let merge_all = |parts: &[S]| {
                parts
                    .iter()
                    .cloned()
                    .reduce(|a, b| a.merge(b, &()))
                    .unwrap_or_else(S::empty)
            };
            assert_eq!(
                merge_all(&parts),
                direct,
                "round {round}: {edges:?} {carried:?} {points:?}"
            );
            let split = rng.below(parts.len() as u64 + 1) as usize;
            let grouped = merge_all(&parts[..split]).merge(merge_all(&parts[split..]), &());
            assert_eq!(grouped, direct, "round {round}: grouped at {split}");
            assert_eq!(
                S::empty().merge(direct.clone(), &()),
                direct,
                "round {round}: empty first"
            );
            assert_eq!(
                S::decode(&direct.encode()).as_ref(),
                Ok(&direct),
                "round {round}: encoding"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(time: f64, value: f64) -> Point {
        Point {
            time,
            value: Value::Number(value),
        }
    }

    #[test]
    fn buckets_split_points_and_carry_values() {
        let carried = point(-5.0, 1.0);
        let points = [
            point(-1.0, 2.0),
            point(0.0, 3.0),
            point(15.0, 4.0),
            point(30.0, 5.0),
        ];
        let split = buckets(&[0.0, 10.0, 20.0, 30.0], Some(&carried), &points);
        assert_eq!(split.len(), 3);
        assert_eq!(split[0].initial, Some(&Value::Number(2.0)));
        assert_eq!(split[0].points, &points[1..2]);
        assert_eq!(split[1].initial, Some(&Value::Number(3.0)));
        assert_eq!(split[1].points, &points[2..3]);
        assert_eq!(split[2].initial, Some(&Value::Number(4.0)));
        assert!(
            split[2].points.is_empty(),
            "a point at the last edge is outside"
        );
        assert!(buckets(&[0.0], None, &points).is_empty());
    }
}
