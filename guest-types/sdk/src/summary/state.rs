//! The time-per-state summary (boolean, uptime and string keys in state mode).

use std::collections::BTreeMap;
use std::fmt::Debug;

use super::{Bucket, DecodeError, Reader, Writer, point_json, ratio_json};
use crate::cast::{number_json, number_text};
use crate::{Json, Value};

/// At most this many distinct states are kept per summary; the others are accounted
/// together in [`StateSummary::other`].
pub const MAX_STATES: usize = 256;

/// The key in the `time_per_state` figure under which overflowed states are reported.
pub const OTHER_STATE_KEY: &str = "(other)";

/// A state a key can be in: a boolean, or a text.
pub trait State: Ord + Clone + Debug {
    /// The tag byte of the summary encoding for this kind of state.
    const TAG: u8;
    /// The state of a stored value, `None` for a value that has none (it is skipped).
    fn from_value(value: &Value) -> Option<Self>;
    /// The state as a figure.
    fn to_json(&self) -> Json;
    /// Encodes the state.
    fn write(&self, w: &mut Writer);
    /// Decodes a state.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

impl State for bool {
    const TAG: u8 = b'B';

    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    fn to_json(&self) -> Json {
        Json::Bool(*self)
    }

    /// One byte, 0 or 1.
    fn write(&self, w: &mut Writer) {
        w.u8(u8::from(*self));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::new(format!("boolean state {other}"))),
        }
    }
}

impl State for String {
    const TAG: u8 = b'S';

    /// Text as is; numbers and booleans as the string type casts them.
    fn from_value(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Text(t) => t.clone(),
            Value::Number(n) => number_text(*n),
            Value::Boolean(b) => b.to_string(),
        })
    }

    fn to_json(&self) -> Json {
        Json::String(self.clone())
    }

    /// A `varint` length, then UTF-8.
    fn write(&self, w: &mut Writer) {
        w.text(self);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.text()
    }
}

/// What a summary knows about one state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StateStats {
    /// Seconds spent in the state.
    pub time: f64,
    /// Changes into the state from another known state.
    pub entries: u64,
    /// The longest uninterrupted run in the state, in seconds (within the summary's span).
    pub longest: f64,
}

impl StateStats {
    /// Adds `other`'s time and entries, keeps the longer run.
    fn absorb(&mut self, other: &StateStats) {
        self.time += other.time;
        self.entries += other.entries;
        self.longest = self.longest.max(other.longest);
    }

    fn write(&self, w: &mut Writer) {
        w.f64(self.time);
        w.varint(self.entries);
        w.f64(self.longest);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            time: r.f64()?,
            entries: r.varint()?,
            longest: r.f64()?,
        })
    }
}

/// Time per state over a bucket, with transitions and runs, mergeable exactly.
///
/// Known time is always a suffix of the bucket (unknown only before the first point when
/// nothing was carried in), so the first run (`lead`) and the last run (`trail`) are what
/// joins with the neighbours on a merge: a run that crosses bucket edges counts as one.
/// Merging is exact while the union has at most [`MAX_STATES`] states; beyond that, the
/// states with the least time (ties: the greatest) are folded into `other`, deterministically.
///
/// Encoding (tag `B` for booleans, `S` for texts; a state `S` is one byte 0/1 for a
/// boolean, a `varint` length and UTF-8 for a text):
///
/// ```text
/// u8 tag
/// u8 flags: 1 = start present, 2 = first/last present, 4 = lead/trail present,
///           8 = other present
/// f64 known          seconds during which the state was known
/// varint count       points in the bucket
/// [S start]                          the state in force at the bucket's start
/// [f64 t, S, f64 t, S]               first point, last point
/// [S, f64 len, S, f64 len]           first run (lead), last run (trail)
/// varint n, then n × (S, f64 time, varint entries, f64 longest), states ascending
/// [f64 time, varint entries, f64 longest]   other
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StateSummary<S: State> {
    /// Seconds during which the state was known.
    pub known: f64,
    /// How many points lie in the bucket.
    pub count: u64,
    /// The state in force at the bucket's start (carried in), if known.
    pub start: Option<S>,
    /// The first point in the bucket, `(time, state)`.
    pub first: Option<(f64, S)>,
    /// The last point in the bucket, `(time, state)`.
    pub last: Option<(f64, S)>,
    /// The first run of known time: its state and length.
    pub lead: Option<(S, f64)>,
    /// The last run, up to the bucket's end: its state and length.
    pub trail: Option<(S, f64)>,
    /// Per state seen (in force at the start or set by a point).
    pub states: BTreeMap<S, StateStats>,
    /// The states beyond [`MAX_STATES`], together.
    pub other: StateStats,
}

const HAS_START: u8 = 1;
const HAS_POINTS: u8 = 2;
const HAS_RUNS: u8 = 4;
const HAS_OTHER: u8 = 8;

impl<S: State> StateSummary<S> {
    /// Nothing known.
    pub fn new() -> Self {
        Self {
            known: 0.0,
            count: 0,
            start: None,
            first: None,
            last: None,
            lead: None,
            trail: None,
            states: BTreeMap::new(),
            other: StateStats::default(),
        }
    }

    /// Whether nothing at all is known about the bucket.
    pub fn is_empty(&self) -> bool {
        self.known == 0.0 && self.start.is_none() && self.count == 0
    }

    /// How many times the state changed (between known states).
    pub fn transitions(&self) -> u64 {
        self.states.values().map(|s| s.entries).sum::<u64>() + self.other.entries
    }

    /// What is known about `state` (zeros if never seen).
    pub fn stats(&self, state: &S) -> StateStats {
        self.states.get(state).copied().unwrap_or_default()
    }

    /// The state with the most time (ties: the least state), if any time is known.
    pub fn dominant(&self) -> Option<&S> {
        if self.known <= 0.0 {
            return None;
        }
        self.states
            .iter()
            .fold(None::<(&S, f64)>, |best, (state, stats)| match best {
                Some((_, time)) if time >= stats.time => best,
                _ => Some((state, stats.time)),
            })
            .map(|(state, _)| state)
    }

    /// Counts `seconds` in `state`.
    fn hold(&mut self, state: &S, seconds: f64) {
        self.known += seconds;
        self.entry(state).time += seconds;
    }

    /// Ends a run of `state` lasting `length`.
    fn close_run(&mut self, state: &S, length: f64) {
        let stats = self.entry(state);
        stats.longest = stats.longest.max(length);
        if self.lead.is_none() {
            self.lead = Some((state.clone(), length));
        }
    }

    /// The stats of `state`, created empty if needed.
    fn entry(&mut self, state: &S) -> &mut StateStats {
        if !self.states.contains_key(state) {
            self.states.insert(state.clone(), StateStats::default());
        }
        self.states.get_mut(state).expect("inserted above")
    }

    /// Folds the states beyond [`MAX_STATES`] (least time first) into `other`.
    fn cap(&mut self) {
        if self.states.len() <= MAX_STATES {
            return;
        }
        let mut ranked: Vec<(S, StateStats)> =
            std::mem::take(&mut self.states).into_iter().collect();
        ranked.sort_by(|(a, sa), (b, sb)| sb.time.total_cmp(&sa.time).then_with(|| a.cmp(b)));
        for (_, stats) in ranked.drain(MAX_STATES..) {
            self.other.absorb(&stats);
        }
        self.states = ranked.into_iter().collect();
    }

    /// Summarises one bucket; values without a state are skipped.
    pub fn from_bucket(bucket: &Bucket<'_>) -> Self {
        let mut summary = Self::new();
        summary.start = bucket.initial.and_then(S::from_value);
        // The state held, since when, and since when without a change.
        let mut current: Option<(S, f64, f64)> = None;
        if let Some(state) = summary.start.clone() {
            summary.entry(&state);
            current = Some((state, bucket.start, bucket.start));
        }
        for point in bucket.points {
            let Some(state) = S::from_value(&point.value) else {
                continue;
            };
            summary.count += 1;
            if summary.first.is_none() {
                summary.first = Some((point.time, state.clone()));
            }
            summary.last = Some((point.time, state.clone()));
            current = Some(match current.take() {
                None => {
                    summary.entry(&state);
                    (state, point.time, point.time)
                }
                Some((held, since, run_start)) => {
                    summary.hold(&held, point.time - since);
                    if held == state {
                        (held, point.time, run_start)
                    } else {
                        summary.close_run(&held, point.time - run_start);
                        summary.entry(&state).entries += 1;
                        (state, point.time, point.time)
                    }
                }
            });
        }
        if let Some((held, since, run_start)) = current {
            summary.hold(&held, bucket.end - since);
            let run = bucket.end - run_start;
            summary.close_run(&held, run);
            summary.trail = Some((held, run));
        }
        summary.cap();
        summary
    }

    /// The summary of `self`'s bucket followed by the adjacent `next`.
    pub fn merge(mut self, next: Self) -> Self {
        if self.is_empty() {
            return next;
        }
        if next.is_empty() {
            return self;
        }
        // The run crossing the edge, if the state carries on.
        let join = match (&self.trail, &next.lead) {
            (Some((a, a_len)), Some((b, b_len))) if next.start.is_some() && a == b => {
                Some((a.clone(), a_len + b_len))
            }
            _ => None,
        };
        let self_single_run = self.transitions() == 0;
        let next_single_run = next.transitions() == 0;
        self.known += next.known;
        self.count += next.count;
        self.first = self.first.or(next.first);
        self.last = next.last.or(self.last);
        for (state, stats) in &next.states {
            self.entry(state).absorb(stats);
        }
        self.other.absorb(&next.other);
        if let Some((state, length)) = &join {
            let stats = self.entry(state);
            stats.longest = stats.longest.max(*length);
        }
        self.lead = match &join {
            Some(joined) if self_single_run => Some(joined.clone()),
            _ => self.lead.or(next.lead),
        };
        self.trail = match join {
            Some(joined) if next_single_run => Some(joined),
            _ => next.trail.or(self.trail),
        };
        self.cap();
        self
    }

    /// The binary encoding (see the type's documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(S::TAG);
        let points = self.first.as_ref().zip(self.last.as_ref());
        let runs = self.lead.as_ref().zip(self.trail.as_ref());
        let other = self.other != StateStats::default();
        let mut flags = 0;
        for (present, flag) in [
            (self.start.is_some(), HAS_START),
            (points.is_some(), HAS_POINTS),
            (runs.is_some(), HAS_RUNS),
            (other, HAS_OTHER),
        ] {
            if present {
                flags |= flag;
            }
        }
        w.u8(flags);
        w.f64(self.known);
        w.varint(self.count);
        if let Some(start) = &self.start {
            start.write(&mut w);
        }
        if let Some(((t1, s1), (t2, s2))) = points {
            w.f64(*t1);
            s1.write(&mut w);
            w.f64(*t2);
            s2.write(&mut w);
        }
        if let Some(((s1, l1), (s2, l2))) = runs {
            s1.write(&mut w);
            w.f64(*l1);
            s2.write(&mut w);
            w.f64(*l2);
        }
        w.varint(self.states.len() as u64);
        for (state, stats) in &self.states {
            state.write(&mut w);
            stats.write(&mut w);
        }
        if other {
            self.other.write(&mut w);
        }
        w.finish()
    }

    /// Reads [`StateSummary::encode`]'s output back.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, S::TAG)?;
        let flags = r.u8()?;
        if flags & !(HAS_START | HAS_POINTS | HAS_RUNS | HAS_OTHER) != 0 {
            return Err(DecodeError::new(format!("unknown flags {flags:#04x}")));
        }
        let mut summary = Self::new();
        summary.known = r.f64()?;
        summary.count = r.varint()?;
        if flags & HAS_START != 0 {
            summary.start = Some(S::read(&mut r)?);
        }
        if flags & HAS_POINTS != 0 {
            summary.first = Some((r.f64()?, S::read(&mut r)?));
            summary.last = Some((r.f64()?, S::read(&mut r)?));
        }
        if flags & HAS_RUNS != 0 {
            summary.lead = Some((S::read(&mut r)?, r.f64()?));
            summary.trail = Some((S::read(&mut r)?, r.f64()?));
        }
        let n = r.varint()?;
        for _ in 0..n {
            let state = S::read(&mut r)?;
            let stats = StateStats::read(&mut r)?;
            if summary
                .states
                .last_key_value()
                .is_some_and(|(last, _)| *last >= state)
            {
                return Err(DecodeError::new("states out of order"));
            }
            summary.states.insert(state, stats);
        }
        if flags & HAS_OTHER != 0 {
            summary.other = StateStats::read(&mut r)?;
        }
        r.finish()?;
        Ok(summary)
    }
}

impl<S: State> Default for StateSummary<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl StateSummary<bool> {
    pub const FIGURES: &'static [&'static str] = &[
        "time_true",
        "time_false",
        "fraction_true",
        "rises",
        "falls",
        "longest_true",
        "longest_false",
        "coverage_seconds",
    ];

    pub fn figure(&self, name: &str) -> Option<Json> {
        let (on, off) = (self.stats(&true), self.stats(&false));
        Some(match name {
            "time_true" => number_json(on.time),
            "time_false" => number_json(off.time),
            "fraction_true" => ratio_json(on.time, self.known),
            "rises" => Json::from(on.entries),
            "falls" => Json::from(off.entries),
            "longest_true" => number_json(on.longest),
            "longest_false" => number_json(off.longest),
            "coverage_seconds" => number_json(self.known),
            _ => return None,
        })
    }

    /// `fraction_true`.
    pub fn default_figure(&self) -> Json {
        ratio_json(self.stats(&true).time, self.known)
    }
}

impl StateSummary<String> {
    pub const FIGURES: &'static [&'static str] = &[
        "time_per_state",
        "transitions",
        "count",
        "first",
        "last",
        "coverage_seconds",
    ];

    pub fn figure(&self, name: &str) -> Option<Json> {
        let point = |p: &Option<(f64, String)>| {
            p.as_ref()
                .map_or(Json::Null, |(t, s)| point_json(*t, s.to_json()))
        };
        Some(match name {
            "time_per_state" => {
                let mut times: serde_json::Map<String, Json> = self
                    .states
                    .iter()
                    .map(|(state, stats)| (state.clone(), number_json(stats.time)))
                    .collect();
                if self.other != StateStats::default() {
                    let shared = self.stats(&OTHER_STATE_KEY.to_owned()).time;
                    times.insert(
                        OTHER_STATE_KEY.to_owned(),
                        number_json(shared + self.other.time),
                    );
                }
                Json::Object(times)
            }
            "transitions" => Json::from(self.transitions()),
            "count" => Json::from(self.count),
            "first" => point(&self.first),
            "last" => point(&self.last),
            "coverage_seconds" => number_json(self.known),
            _ => return None,
        })
    }

    /// The state with the most time.
    pub fn default_figure(&self) -> Json {
        self.dominant().map_or(Json::Null, State::to_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Point;
    use crate::summary::buckets;
    use crate::summary::tests_support::{check_merge, random_history};
    use crate::testing::XorShift;

    fn flag(time: f64, on: bool) -> Point {
        Point {
            time,
            value: Value::Boolean(on),
        }
    }

    fn summarize<S: State>(
        edges: &[f64],
        carried: Option<&Point>,
        points: &[Point],
    ) -> Vec<StateSummary<S>> {
        buckets(edges, carried, points)
            .iter()
            .map(StateSummary::from_bucket)
            .collect()
    }

    #[test]
    fn boolean_bucket_counts_time_runs_and_changes() {
        let carried = flag(-1.0, true);
        let points = [
            flag(2.0, false),
            flag(3.0, false),
            flag(5.0, true),
            flag(9.0, false),
        ];
        let [s] = &summarize::<bool>(&[0.0, 10.0], Some(&carried), &points)[..] else {
            panic!("one bucket");
        };
        let fig = |name| s.figure(name).expect("known figure");
        assert_eq!(fig("time_true"), Json::from(6));
        assert_eq!(fig("time_false"), Json::from(4));
        assert_eq!(fig("fraction_true"), Json::from(0.6));
        assert_eq!((fig("rises"), fig("falls")), (Json::from(1), Json::from(2)));
        assert_eq!(fig("longest_true"), Json::from(4));
        assert_eq!(fig("longest_false"), Json::from(3));
        assert_eq!(s.lead, Some((true, 2.0)));
        assert_eq!(s.trail, Some((false, 1.0)));
        assert_eq!(s.default_figure(), Json::from(0.6));
    }

    #[test]
    fn runs_join_across_buckets() {
        let points = [flag(0.0, true), flag(25.0, false)];
        let parts = summarize::<bool>(&[0.0, 10.0, 20.0, 30.0], None, &points);
        let merged = parts
            .into_iter()
            .reduce(StateSummary::merge)
            .expect("three parts");
        assert_eq!(merged.stats(&true).longest, 25.0);
        assert_eq!(merged.lead, Some((true, 25.0)));
        assert_eq!(merged.trail, Some((false, 5.0)));
        assert_eq!(
            merged.figure("rises"),
            Some(Json::from(0)),
            "the first value is no rise"
        );
    }

    /// Brute force: integer, distinct times, so sampling each second gives exact runs.
    #[test]
    fn boolean_bucket_matches_brute_force() {
        let mut rng = XorShift::new(5);
        for _ in 0..300 {
            let (edges, carried, mut points) =
                random_history(&mut rng, |r| Value::Boolean(r.one_in(2)));
            points.dedup_by(|a, b| a.time == b.time);
            let union = [edges[0], edges[edges.len() - 1]];
            let [s] = &summarize::<bool>(&union, carried.as_ref(), &points)[..] else {
                panic!("one bucket");
            };
            let mut samples = Vec::new();
            let mut second = union[0];
            while second < union[1] {
                let value = points
                    .iter()
                    .rev()
                    .find(|p| p.time <= second)
                    .or(carried.as_ref());
                if let Some(Value::Boolean(b)) = value.map(|p| &p.value) {
                    samples.push(*b);
                }
                second += 1.0;
            }
            let time_true = samples.iter().filter(|b| **b).count() as f64;
            assert_eq!(s.stats(&true).time, time_true);
            assert_eq!(s.known, samples.len() as f64);
            // Changes are seen in the values set, carried one included (it may hold for 0 s).
            let sequence: Vec<bool> = carried
                .iter()
                .chain(&points)
                .filter_map(|p| bool::from_value(&p.value))
                .collect();
            let rises = sequence.windows(2).filter(|w| !w[0] && w[1]).count() as u64;
            let falls = sequence.windows(2).filter(|w| w[0] && !w[1]).count() as u64;
            assert_eq!(
                (s.stats(&true).entries, s.stats(&false).entries),
                (rises, falls)
            );
            let longest = |state: bool| {
                samples
                    .chunk_by(|a, b| a == b)
                    .filter(|run| run[0] == state)
                    .map(|run| run.len() as f64)
                    .fold(0.0, f64::max)
            };
            assert_eq!(s.stats(&true).longest, longest(true));
            assert_eq!(s.stats(&false).longest, longest(false));
        }
    }

    #[test]
    fn boolean_merge_equals_summary_of_union() {
        check_merge::<StateSummary<bool>>(17, |r| Value::Boolean(r.one_in(2)));
    }

    #[test]
    fn text_merge_equals_summary_of_union() {
        let words = ["on", "off", "idle", "3"];
        check_merge::<StateSummary<String>>(19, |r| {
            Value::Text(words[r.below(4) as usize].to_owned())
        });
    }

    #[test]
    fn text_states_overflow_into_other() {
        let points: Vec<Point> = (0..300)
            .map(|i| Point {
                time: f64::from(i),
                value: Value::Text(format!("s{i:03}")),
            })
            .collect();
        let [s] = &summarize::<String>(&[0.0, 1000.0], None, &points)[..] else {
            panic!("one bucket");
        };
        assert_eq!(s.states.len(), MAX_STATES);
        assert_eq!(s.transitions(), 299);
        assert_eq!(s.known, 1000.0);
        let kept: f64 = s.states.values().map(|st| st.time).sum();
        assert_eq!(kept + s.other.time, 1000.0);
        assert!(s.states.contains_key("s299"), "the longest state is kept");
        let figure = s.figure("time_per_state").expect("known figure");
        assert_eq!(figure[OTHER_STATE_KEY], Json::from(44));
        assert_eq!(StateSummary::<String>::decode(&s.encode()).as_ref(), Ok(s));
        assert_eq!(s.default_figure(), Json::from("s299"));
    }
}
