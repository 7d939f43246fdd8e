//! The summary of a text log (string keys in log mode): how many entries, first and last.

use super::{Bucket, DecodeError, Reader, State, StateSummary, Summary, Writer, point_json};
use crate::Json;

/// How many texts were logged in a bucket, and the first and last of them.
///
/// Encoding (tag `L`):
///
/// ```text
/// u8 'L'
/// u8 flags: 1 = first/last present
/// varint count
/// [f64 t, text, f64 t, text]     first entry, last entry
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogSummary {
    /// How many entries lie in the bucket.
    pub count: u64,
    /// The first entry, `(time, text)`.
    pub first: Option<(f64, String)>,
    /// The last entry, `(time, text)`.
    pub last: Option<(f64, String)>,
}

const TAG: u8 = b'L';
const HAS_POINTS: u8 = 1;

impl From<StateSummary<String>> for LogSummary {
    /// The log view of a state summary (after a key switched from state to log mode).
    fn from(states: StateSummary<String>) -> Self {
        Self {
            count: states.count,
            first: states.first,
            last: states.last,
        }
    }
}

impl Summary for LogSummary {
    const FIGURES: &'static [&'static str] = &["count", "first", "last"];

    fn empty() -> Self {
        Self::default()
    }

    fn from_bucket(bucket: &Bucket<'_>) -> Self {
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

    fn merge(self, next: Self) -> Self {
        Self {
            count: self.count + next.count,
            first: self.first.or(next.first),
            last: next.last.or(self.last),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        match (&self.first, &self.last) {
            (Some((t1, first)), Some((t2, last))) => {
                w.u8(HAS_POINTS);
                w.varint(self.count);
                w.f64(*t1);
                w.text(first);
                w.f64(*t2);
                w.text(last);
            }
            _ => {
                w.u8(0);
                w.varint(self.count);
            }
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, TAG)?;
        let flags = r.u8()?;
        if flags & !HAS_POINTS != 0 {
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
        r.finish()?;
        Ok(summary)
    }

    fn figure(&self, name: &str) -> Option<Json> {
        let point = |p: &Option<(f64, String)>| {
            p.as_ref()
                .map_or(Json::Null, |(t, s)| point_json(*t, Json::String(s.clone())))
        };
        Some(match name {
            "count" => Json::from(self.count),
            "first" => point(&self.first),
            "last" => point(&self.last),
            _ => return None,
        })
    }

    /// The last entry's text.
    fn default_figure(&self) -> Json {
        self.last
            .as_ref()
            .map_or(Json::Null, |(_, text)| Json::String(text.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;
    use crate::summary::tests_support::check_merge;

    #[test]
    fn log_merge_equals_summary_of_union() {
        check_merge::<LogSummary>(23, |r| Value::Text(format!("line {}", r.below(100))));
    }
}
