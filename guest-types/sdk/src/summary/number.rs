//! The time-weighted summary of a number (numeric and counter keys).

use super::{Bucket, DecodeError, Reader, Writer, point_json, ratio_json};
use crate::Json;
use crate::cast::number_json;

/// The time-weighted summary of a number over a bucket.
///
/// Encoding (tag `N`):
///
/// ```text
/// u8 'N'
/// u8 flags: 1 = start present, 2 = min/max present, 4 = first/last present
/// f64 known        seconds during which a value was known
/// f64 integral     sum of value × seconds
/// varint count     points in the bucket
/// [f64 start]                      the value in force at the bucket's start
/// [f64 min, f64 max]               over the values held for some time in the bucket
/// [f64 t, f64 v, f64 t, f64 v]     first point, last point
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NumberSummary {
    /// Seconds during which a value was known.
    pub known: f64,
    /// The integral of the value over known time (value × seconds).
    pub integral: f64,
    /// How many points lie in the bucket.
    pub count: u64,
    /// The value in force at the bucket's start (carried in), if known.
    pub start: Option<f64>,
    /// The least and greatest values in force during the bucket: those held for some time
    /// in it (`start` unless a point replaces it at the bucket's start, and the points).
    pub range: Option<(f64, f64)>,
    /// The first point in the bucket, `(time, value)`.
    pub first: Option<(f64, f64)>,
    /// The last point in the bucket, `(time, value)`.
    pub last: Option<(f64, f64)>,
}

/// The tag byte of [`NumberSummary`]'s encoding.
const TAG: u8 = b'N';
const HAS_START: u8 = 1;
const HAS_RANGE: u8 = 2;
const HAS_POINTS: u8 = 4;

impl NumberSummary {
    /// The figures of a gauge (numeric).
    pub const GAUGE_FIGURES: &'static [&'static str] = &[
        "mean",
        "min",
        "max",
        "first",
        "last",
        "count",
        "integral",
        "coverage_seconds",
    ];

    /// The figures of a counter: a gauge's plus `increase` and `rate`.
    pub const COUNTER_FIGURES: &'static [&'static str] = &[
        "mean",
        "min",
        "max",
        "first",
        "last",
        "count",
        "integral",
        "coverage_seconds",
        "increase",
        "rate",
    ];

    /// Whether nothing at all is known about the bucket.
    pub fn is_empty(&self) -> bool {
        self.known == 0.0 && self.start.is_none() && self.count == 0
    }

    /// The time-weighted mean, if any time is known.
    pub fn mean(&self) -> Option<f64> {
        (self.known > 0.0).then(|| self.integral / self.known)
    }

    /// The value in force at the bucket's end: the last point's, else the start value.
    pub fn end_value(&self) -> Option<f64> {
        self.last.map(|(_, v)| v).or(self.start)
    }

    /// `increase`: the end value minus the start value (or minus the first point's value
    /// when nothing was carried in).
    pub fn increase(&self) -> Option<f64> {
        let base = self.start.or(self.first.map(|(_, v)| v))?;
        Some(self.end_value()? - base)
    }

    /// `rate`: [`NumberSummary::increase`] per known second.
    pub fn rate(&self) -> Option<f64> {
        let increase = self.increase()?;
        (self.known > 0.0).then(|| increase / self.known)
    }

    /// Counts `value` among the values in force.
    fn widen(&mut self, value: f64) {
        self.range = Some(match self.range {
            None => (value, value),
            Some((min, max)) => (min.min(value), max.max(value)),
        });
    }

    /// Counts `value` holding for `seconds` (among the values in force if `seconds > 0`).
    fn hold(&mut self, value: f64, seconds: f64) {
        if seconds > 0.0 {
            self.widen(value);
        }
        self.known += seconds;
        self.integral += value * seconds;
    }
}

/// An optional number as a figure.
fn opt_json(n: Option<f64>) -> Json {
    n.map_or(Json::Null, number_json)
}

impl NumberSummary {
    pub const FIGURES: &'static [&'static str] = Self::GAUGE_FIGURES;

    pub fn empty() -> Self {
        Self::default()
    }

    pub fn from_bucket(bucket: &Bucket<'_>) -> Self {
        let mut summary = Self {
            start: bucket.initial.and_then(|v| v.as_number()),
            ..Self::default()
        };
        let mut current = summary.start.map(|v| (v, bucket.start));
        for point in bucket.points {
            let Some(value) = point.value.as_number() else {
                continue;
            };
            if let Some((held, since)) = current {
                summary.hold(held, point.time - since);
            }
            current = Some((value, point.time));
            summary.count += 1;
            summary.first.get_or_insert((point.time, value));
            summary.last = Some((point.time, value));
        }
        if let Some((held, since)) = current {
            summary.hold(held, bucket.end - since);
        }
        summary
    }

    pub fn merge(mut self, next: Self) -> Self {
        if self.is_empty() {
            return next;
        }
        if next.is_empty() {
            return self;
        }
        self.known += next.known;
        self.integral += next.integral;
        self.count += next.count;
        if let Some((min, max)) = next.range {
            self.widen(min);
            self.widen(max);
        }
        self.first = self.first.or(next.first);
        self.last = next.last.or(self.last);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        let mut flags = 0;
        if self.start.is_some() {
            flags |= HAS_START;
        }
        if self.range.is_some() {
            flags |= HAS_RANGE;
        }
        if self.first.is_some() && self.last.is_some() {
            flags |= HAS_POINTS;
        }
        w.u8(flags);
        w.f64(self.known);
        w.f64(self.integral);
        w.varint(self.count);
        if let Some(start) = self.start {
            w.f64(start);
        }
        if let Some((min, max)) = self.range {
            w.f64(min);
            w.f64(max);
        }
        if let (Some(first), Some(last)) = (self.first, self.last) {
            for n in [first.0, first.1, last.0, last.1] {
                w.f64(n);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, TAG)?;
        let flags = r.u8()?;
        if flags & !(HAS_START | HAS_RANGE | HAS_POINTS) != 0 {
            return Err(DecodeError::new(format!("unknown flags {flags:#04x}")));
        }
        let mut summary = Self {
            known: r.f64()?,
            integral: r.f64()?,
            count: r.varint()?,
            ..Self::default()
        };
        if flags & HAS_START != 0 {
            summary.start = Some(r.f64()?);
        }
        if flags & HAS_RANGE != 0 {
            summary.range = Some((r.f64()?, r.f64()?));
        }
        if flags & HAS_POINTS != 0 {
            summary.first = Some((r.f64()?, r.f64()?));
            summary.last = Some((r.f64()?, r.f64()?));
        }
        r.finish()?;
        Ok(summary)
    }

    pub fn figure(&self, name: &str) -> Option<Json> {
        let point =
            |p: Option<(f64, f64)>| p.map_or(Json::Null, |(t, v)| point_json(t, number_json(v)));
        Some(match name {
            "mean" => ratio_json(self.integral, self.known),
            "min" => opt_json(self.range.map(|r| r.0)),
            "max" => opt_json(self.range.map(|r| r.1)),
            "first" => point(self.first),
            "last" => point(self.last),
            "count" => Json::from(self.count),
            "integral" => number_json(self.integral),
            "coverage_seconds" => number_json(self.known),
            "increase" => opt_json(self.increase()),
            "rate" => opt_json(self.rate()),
            _ => return None,
        })
    }

    pub fn default_figure(&self) -> Json {
        opt_json(self.mean())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::buckets;
    use crate::summary::tests_support::{check_merge, random_history};
    use crate::testing::XorShift;
    use crate::{Point, Value};

    fn point(time: f64, value: f64) -> Point {
        Point {
            time,
            value: Value::Number(value),
        }
    }

    fn summarize(edges: &[f64], carried: Option<&Point>, points: &[Point]) -> Vec<NumberSummary> {
        buckets(edges, carried, points)
            .iter()
            .map(NumberSummary::from_bucket)
            .collect()
    }

    #[test]
    fn bucket_is_time_weighted() {
        let carried = point(-10.0, 4.0);
        let points = [point(5.0, 10.0), point(8.0, 1.0)];
        let [s] = &summarize(&[0.0, 10.0], Some(&carried), &points)[..] else {
            panic!("one bucket");
        };
        assert_eq!(s.known, 10.0);
        assert_eq!(s.integral, 4.0 * 5.0 + 10.0 * 3.0 + 1.0 * 2.0);
        assert_eq!(s.range, Some((1.0, 10.0)));
        assert_eq!(s.first, Some((5.0, 10.0)));
        assert_eq!(s.last, Some((8.0, 1.0)));
        assert_eq!(s.count, 2);
        assert_eq!(s.mean(), Some(5.2));
        assert_eq!(s.increase(), Some(-3.0));
        assert_eq!(s.rate(), Some(-0.3));
    }

    #[test]
    fn time_before_the_first_point_is_unknown_without_carried() {
        let points = [point(6.0, 2.0)];
        let s = summarize(&[0.0, 10.0, 20.0], None, &points);
        assert_eq!((s[0].known, s[0].integral, s[0].start), (4.0, 8.0, None));
        assert_eq!(s[0].increase(), Some(0.0), "last - first without a start");
        assert_eq!((s[1].known, s[1].start, s[1].count), (10.0, Some(2.0), 0));
        assert_eq!(s[1].figure("mean"), Some(Json::from(2)));
        let empty = summarize(&[0.0, 10.0], None, &[]);
        assert!(empty[0].is_empty());
        assert_eq!(empty[0].default_figure(), Json::Null);
        assert_eq!(empty[0].figure("count"), Some(Json::from(0)));
    }

    #[test]
    fn min_max_leave_out_a_value_replaced_at_the_bucket_start() {
        // The carried 9 gives way at the bucket's start: it is never in force inside.
        let carried = point(-5.0, 9.0);
        let points = [point(10.0, 1.0), point(15.0, 3.0)];
        let s = summarize(&[0.0, 10.0, 20.0, 20.0], Some(&carried), &points);
        assert_eq!(s[0].range, Some((9.0, 9.0)));
        assert_eq!(s[1].range, Some((1.0, 3.0)), "9 held for 0 s in [10, 20)");
        assert_eq!(s[1].start, Some(9.0), "still the base of increase");
        assert_eq!(s[1].increase(), Some(-6.0));
        assert_eq!(s[2].range, None, "nothing is in force in an empty bucket");
        let merged = s.iter().cloned().reduce(NumberSummary::merge);
        assert_eq!(merged.and_then(|m| m.range), Some((1.0, 9.0)));
        // Of two points at one time, the later one is the value.
        let twice = [point(12.0, -4.0), point(12.0, 2.0)];
        let s = summarize(&[10.0, 20.0], None, &twice);
        assert_eq!(s[0].range, Some((2.0, 2.0)));
    }

    #[test]
    fn encoding_round_trips() -> Result<(), DecodeError> {
        let mut rng = XorShift::new(7);
        for _ in 0..200 {
            let (edges, carried, points) =
                random_history(&mut rng, |r| Value::Number(r.below(9) as f64 - 4.0));
            for s in summarize(&edges, carried.as_ref(), &points) {
                assert_eq!(NumberSummary::decode(&s.encode())?, s);
            }
        }
        assert!(NumberSummary::decode(&[b'N', 0x80]).is_err());
        assert!(NumberSummary::decode(b"B").is_err());
        Ok(())
    }

    /// Brute force: integer times, so sampling each second gives exact durations.
    #[test]
    fn bucket_matches_brute_force() {
        let mut rng = XorShift::new(11);
        for _ in 0..300 {
            let (edges, carried, points) =
                random_history(&mut rng, |r| Value::Number(r.below(9) as f64 - 4.0));
            let summaries = summarize(&edges, carried.as_ref(), &points);
            for (i, s) in summaries.iter().enumerate() {
                let (start, end) = (edges[i], edges[i + 1]);
                let in_force = |t: f64| {
                    points
                        .iter()
                        .rev()
                        .find(|p| p.time <= t)
                        .or(carried.as_ref())
                        .and_then(|p| p.value.as_number())
                };
                let (mut known, mut integral) = (0.0, 0.0);
                // The values in force, one per second (each one held holds for >= 1 s).
                let mut values = Vec::new();
                let mut second = start;
                while second < end {
                    if let Some(v) = in_force(second) {
                        known += 1.0;
                        integral += v;
                        values.push(v);
                    }
                    second += 1.0;
                }
                let inside: Vec<f64> = points
                    .iter()
                    .filter(|p| p.time >= start && p.time < end)
                    .filter_map(|p| p.value.as_number())
                    .collect();
                let before = points
                    .iter()
                    .rev()
                    .find(|p| p.time < start)
                    .or(carried.as_ref())
                    .and_then(|p| p.value.as_number());
                assert_eq!(s.known, known, "bucket {i}");
                assert_eq!(s.integral, integral, "bucket {i}");
                assert_eq!(s.count, inside.len() as u64);
                assert_eq!(s.start, before);
                let min = values.iter().copied().reduce(f64::min);
                let max = values.iter().copied().reduce(f64::max);
                assert_eq!(s.range.map(|r| r.0), min);
                assert_eq!(s.range.map(|r| r.1), max);
                assert_eq!(s.last.map(|l| l.1), inside.last().copied());
            }
        }
    }

    #[test]
    fn merge_equals_summary_of_union() {
        check_merge::<NumberSummary>(13, |r| Value::Number(r.below(9) as f64 - 4.0));
    }
}
