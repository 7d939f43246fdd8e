//! The summary of a text log (string keys in log mode): how many entries, first and last,
//! and optionally a bounded sample of them.

use super::{Bucket, DecodeError, Reader, State, StateSummary, Writer, point_json};
use crate::Json;

/// How many texts were logged in a bucket, the first and last of them, and up to
/// `sample_size` of them as a sample.
///
/// The sample is the entries with the smallest [`entry_hash`]: a fixed pseudo-random pick
/// that does not depend on how buckets were cut, so the sample of merged buckets is exactly
/// the sample of their union (what compaction needs), and every entry has the same chance.
///
/// Encoding (tag `L`):
///
/// ```text
/// u8 'L'
/// u8 flags: 1 = first/last present, 2 = sample present
/// varint count
/// [f64 t, text, f64 t, text]     first entry, last entry
/// [varint sample_size, varint n, n × (f64 t, text)]   the sample, in time order
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogSummary {
    /// How many entries lie in the bucket.
    pub count: u64,
    /// The first entry, `(time, text)`.
    pub first: Option<(f64, String)>,
    /// The last entry, `(time, text)`.
    pub last: Option<(f64, String)>,
    /// How many entries the sample keeps at most; 0 = no sample.
    pub sample_size: u32,
    /// At most `sample_size` entries, in time order.
    pub sample: Vec<(f64, String)>,
}

const TAG: u8 = b'L';
const HAS_POINTS: u8 = 1;
const HAS_SAMPLE: u8 = 2;

/// The most entries a sample keeps per bucket.
pub const MAX_SAMPLE: u32 = 100;

/// A stable 64-bit hash of an entry (FNV-1a over the time's bits and the text): the order
/// samples are picked in. Fixed forever: stored samples were picked with it.
pub fn entry_hash(time: f64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in time.to_bits().to_le_bytes().iter().chain(text.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl LogSummary {
    /// Summarises one bucket, keeping a sample of up to `sample_size` entries.
    pub fn sampled(bucket: &Bucket<'_>, sample_size: u32) -> Self {
        let mut summary = Self::from_bucket(bucket);
        summary.sample_size = sample_size.min(MAX_SAMPLE);
        if summary.sample_size > 0 {
            summary.sample = bucket
                .points
                .iter()
                .filter_map(|p| Some((p.time, String::from_value(&p.value)?)))
                .collect();
            summary.trim_sample();
        }
        summary
    }

    /// Keeps the `sample_size` entries of smallest hash, in time order.
    fn trim_sample(&mut self) {
        let size = self.sample_size as usize;
        if self.sample.len() > size {
            self.sample
                .sort_by_cached_key(|(t, text)| (entry_hash(*t, text), t.to_bits()));
            self.sample.truncate(size);
        }
        self.sample.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

impl From<StateSummary<String>> for LogSummary {
    /// The log view of a state summary (after a key switched from state to log mode).
    fn from(states: StateSummary<String>) -> Self {
        Self {
            count: states.count,
            first: states.first,
            last: states.last,
            ..Self::default()
        }
    }
}

impl LogSummary {
    pub const FIGURES: &'static [&'static str] = &["count", "first", "last", "sample"];

    pub fn empty() -> Self {
        Self::default()
    }

    pub fn from_bucket(bucket: &Bucket<'_>) -> Self {
        let mut summary = Self::default();
        for point in bucket.points {
            let Some(text) = String::from_value(&point.value) else {
                continue;
            };
            summary.count += 1;
            if summary.first.is_none() {
                summary.first = Some((point.time, text.clone()));
            }
            summary.last = Some((point.time, text));
        }
        summary
    }

    pub fn merge(self, next: Self) -> Self {
        let mut sample = self.sample;
        sample.extend(next.sample);
        let mut merged = Self {
            count: self.count + next.count,
            first: self.first.or(next.first),
            last: next.last.or(self.last),
            sample_size: self.sample_size.max(next.sample_size),
            sample,
        };
        merged.trim_sample();
        merged
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        match (&self.first, &self.last) {
            (Some((t1, first)), Some((t2, last))) => {
                w.u8(HAS_POINTS | if self.sample_size > 0 { HAS_SAMPLE } else { 0 });
                w.varint(self.count);
                w.f64(*t1);
                w.text(first);
                w.f64(*t2);
                w.text(last);
            }
            _ => {
                w.u8(if self.sample_size > 0 { HAS_SAMPLE } else { 0 });
                w.varint(self.count);
            }
        }
        if self.sample_size > 0 {
            w.varint(u64::from(self.sample_size));
            w.varint(self.sample.len() as u64);
            for (t, text) in &self.sample {
                w.f64(*t);
                w.text(text);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, TAG)?;
        let flags = r.u8()?;
        if flags & !(HAS_POINTS | HAS_SAMPLE) != 0 {
            return Err(DecodeError::new(format!("unknown flags {flags:#04x}")));
        }
        let mut summary = Self {
            count: r.varint()?,
            ..Self::default()
        };
        if flags & HAS_POINTS != 0 {
            summary.first = Some((r.f64()?, r.text()?));
            summary.last = Some((r.f64()?, r.text()?));
        }
        if flags & HAS_SAMPLE != 0 {
            let size = r.varint()?;
            let n = r.varint()?;
            if size == 0 || size > u64::from(MAX_SAMPLE) || n > size {
                return Err(DecodeError::new(format!(
                    "a sample of {n} of at most {size}"
                )));
            }
            summary.sample_size = size as u32;
            for _ in 0..n {
                summary.sample.push((r.f64()?, r.text()?));
            }
        }
        r.finish()?;
        Ok(summary)
    }

    pub fn figure(&self, name: &str) -> Option<Json> {
        let point = |p: &Option<(f64, String)>| {
            p.as_ref()
                .map_or(Json::Null, |(t, s)| point_json(*t, Json::String(s.clone())))
        };
        Some(match name {
            "count" => Json::from(self.count),
            "first" => point(&self.first),
            "last" => point(&self.last),
            // `null` when the key keeps no sample (not an empty one).
            "sample" if self.sample_size == 0 => Json::Null,
            "sample" => Json::Array(
                self.sample
                    .iter()
                    .map(|(t, text)| point_json(*t, Json::String(text.clone())))
                    .collect(),
            ),
            _ => return None,
        })
    }

    /// The last entry's text.
    pub fn default_figure(&self) -> Json {
        self.last
            .as_ref()
            .map_or(Json::Null, |(_, text)| Json::String(text.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests_support::{check_merge, check_merge_with};
    use crate::{Point, Value};

    #[test]
    fn log_merge_equals_summary_of_union() {
        check_merge::<LogSummary>(23, |r| Value::Text(format!("line {}", r.below(100))));
    }

    #[test]
    fn sampled_log_merge_equals_sample_of_union() {
        for size in [1, 3, 20] {
            check_merge_with(
                29 + u64::from(size),
                |r| Value::Text(format!("line {}", r.below(100))),
                |b| LogSummary::sampled(b, size),
            );
        }
    }

    #[test]
    fn a_sample_is_bounded_and_in_time_order() {
        let points: Vec<Point> = (0..500)
            .map(|i| Point {
                time: f64::from(i),
                value: Value::Text(format!("entry {i}")),
            })
            .collect();
        let bucket = Bucket {
            start: 0.0,
            end: 500.0,
            initial: None,
            points: &points,
        };
        let summary = LogSummary::sampled(&bucket, 5);
        assert_eq!(summary.sample.len(), 5);
        assert!(summary.sample.windows(2).all(|w| w[0].0 < w[1].0));
        // Spread over the bucket, not its first entries.
        assert!(summary.sample.iter().any(|(t, _)| *t > 100.0));
        assert_eq!(LogSummary::sampled(&bucket, 5_000).sample.len(), 100);
        let none = LogSummary::sampled(&bucket, 0);
        assert_eq!(none.figure("sample"), Some(Json::Null));
        assert_eq!(LogSummary::decode(&none.encode()), Ok(none));
    }
}
