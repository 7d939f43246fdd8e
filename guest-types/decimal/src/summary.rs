//! The summary of a decimal over a bucket: numeric's time-weighted summary, plus the exact
//! sum of the points.

use komoku_guest::summary::{Bucket, DecodeError, Figures, NumberSummary, Reader, Summary, Writer};
use komoku_guest::{Json, Point, Value};

use crate::DecimalOptions;
use crate::dec::{Dec, MAX_SCALE, Rounding};

/// [`NumberSummary`] over the values as numbers (text values read as the digits they are),
/// and the sum of the points' values, exact, in units of 10^-9.
///
/// Encoding (tag `D`):
///
/// ```text
/// u8 'D'
/// text  sum         the exact sum of the points, as decimal text
/// bytes number      a NumberSummary's encoding (tag 'N')
/// ```
///
/// Every stored value is an exact decimal of at most 15 significant digits, so the
/// numbers inside (`min`, `max`, `first`, `last`, `start`) are the doubles whose shortest
/// form is exactly those digits: the exact figures are read back from them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecimalSummary {
    pub number: NumberSummary,
    /// Sum of the points' values, in units of 10^-[`MAX_SCALE`].
    pub sum: i128,
}

const TAG: u8 = b'D';

impl DecimalSummary {
    /// Every figure of the decimal type.
    pub const FIGURES_ALL: &'static [&'static str] = &[
        "mean",
        "min",
        "max",
        "first",
        "last",
        "count",
        "sum",
        "increase",
        "integral",
        "coverage_seconds",
    ];

    /// A figure with decimals at `scale` digits, as numbers or (`as_text`) as text.
    pub fn figure_at(&self, name: &str, scale: u32, as_text: bool) -> Json {
        let at_scale = |n: Option<f64>| -> Json {
            n.and_then(Dec::from_f64)
                .and_then(|d| d.rescale(scale, Rounding::HalfEven))
                .map_or(Json::Null, |d| d.to_json(as_text))
        };
        let point = |p: Option<(f64, f64)>| -> Json {
            p.map_or(Json::Null, |(t, v)| {
                komoku_guest::summary::point_json(t, at_scale(Some(v)))
            })
        };
        let n = &self.number;
        match name {
            "mean" => at_scale(n.mean()),
            "min" => at_scale(n.range.map(|r| r.0)),
            "max" => at_scale(n.range.map(|r| r.1)),
            "first" => point(n.first),
            "last" => point(n.last),
            "sum" => Dec::new(self.sum, MAX_SCALE)
                .rescale(scale, Rounding::HalfEven)
                .map_or(Json::Null, |d| d.to_json(as_text)),
            "increase" => self
                .increase()
                .and_then(|d| d.rescale(scale, Rounding::HalfEven))
                .map_or(Json::Null, |d| d.to_json(as_text)),
            other => n.figure(other).unwrap_or(Json::Null),
        }
    }

    /// The value at the end minus the value carried in (or the first point's), exactly.
    pub fn increase(&self) -> Option<Dec> {
        let n = &self.number;
        let base = Dec::from_f64(n.start.or(n.first.map(|(_, v)| v))?)?;
        let end = Dec::from_f64(n.end_value()?)?;
        end.checked_add(Dec::new(-base.units, base.scale))
    }
}

/// A stored value as a number (text read as its digits).
fn as_number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value.clone()),
        other => Dec::from_value(other).map(|d| Value::Number(d.to_f64())),
    }
}

impl DecimalSummary {
    /// Summarises one bucket.
    pub fn from_bucket(bucket: &Bucket<'_>) -> Self {
        let initial = bucket.initial.and_then(as_number);
        let points: Vec<Point> = bucket
            .points
            .iter()
            .filter_map(|p| {
                Some(Point {
                    time: p.time,
                    value: as_number(&p.value)?,
                })
            })
            .collect();
        let sum = points
            .iter()
            .filter_map(|p| Dec::from_value(&p.value)?.rescale(MAX_SCALE, Rounding::HalfEven))
            .map(|d| d.units)
            .sum();
        let number = NumberSummary::from_bucket(&Bucket {
            start: bucket.start,
            end: bucket.end,
            initial: initial.as_ref(),
            points: &points,
        });
        Self { number, sum }
    }

    /// The summary of this bucket followed by `next`.
    pub fn merge(self, next: Self) -> Self {
        Self {
            number: self.number.merge(next.number),
            sum: self.sum + next.sum,
        }
    }

    /// The binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        w.text(&self.sum.to_string());
        w.bytes(&self.number.encode());
        w.finish()
    }

    /// Reads an encoding back.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, TAG)?;
        let sum = r
            .text()?
            .parse()
            .map_err(|_| DecodeError::new("the sum is not an integer"))?;
        let number = NumberSummary::decode(r.bytes()?)?;
        r.finish()?;
        Ok(Self { number, sum })
    }
}

impl Summary<DecimalOptions> for DecimalSummary {
    fn empty() -> Self {
        Self::default()
    }

    fn from_bucket(bucket: &Bucket<'_>, _options: &DecimalOptions) -> Self {
        DecimalSummary::from_bucket(bucket)
    }

    fn merge(self, next: Self, _options: &DecimalOptions) -> Self {
        DecimalSummary::merge(self, next)
    }

    fn encode(&self) -> Vec<u8> {
        DecimalSummary::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        DecimalSummary::decode(bytes)
    }

    /// Exact at the key's scale, as text when the key's values are text.
    fn figures(&self, options: &DecimalOptions, out: &mut Figures<'_>) {
        for name in Self::FIGURES_ALL {
            out.add(name, || {
                self.figure_at(name, options.scale, options.as_text)
            });
        }
    }

    fn default_figure(&self, options: &DecimalOptions) -> Json {
        self.figure_at("mean", options.scale, options.as_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::testing::point;

    #[test]
    fn encoding_round_trips_and_merging_adds_exactly() -> Result<(), DecodeError> {
        let points = [
            point(1.0, Value::Number(0.1)),
            point(2.0, Value::Text("0.20".into())),
        ];
        let a = DecimalSummary::from_bucket(&Bucket {
            start: 0.0,
            end: 1.5,
            initial: None,
            points: &points[..1],
        });
        let b = DecimalSummary::from_bucket(&Bucket {
            start: 1.5,
            end: 3.0,
            initial: Some(&points[0].value),
            points: &points[1..],
        });
        assert_eq!(DecimalSummary::decode(&a.encode())?, a);
        let merged = a.merge(b);
        assert_eq!(merged.sum, 300_000_000);
        assert_eq!(merged.figure_at("sum", 2, true), Json::from("0.30"));
        assert_eq!(merged.figure_at("increase", 2, false), Json::from(0.1));
        assert!(DecimalSummary::decode(b"N").is_err());
        Ok(())
    }
}
