//! `percent`: a gauge of 0..100 with two options of its own and a figure that depends on one.
//!
//! - `deadband` (percentage points, default 0): a value closer than this to the key's latest
//!   stored value is acknowledged but not stored;
//! - `threshold` (percent, default 80): the `time_above` figure counts the seconds the value
//!   was above it.
//!
//! The summary is the SDK's [`NumberSummary`] with one more field, so every gauge figure
//! stays and `time_above` joins them. The SDK hands the key's options to the summary, so the
//! type overrides neither `summarize` nor `render`. The same type, written in AssemblyScript,
//! is `examples/percent-as`; `docs/writing-a-key-type.md` builds it from an empty folder.

use komoku_guest::summary::{Bucket, DecodeError, Figures, NumberSummary, Reader, Summary, Writer};
use komoku_guest::{
    Input, Json, KeyType, OpKind, Options, OptionsReader, Point, Refusal, Resolution, Value, cast,
    export_key_type,
};

/// The options of a percent key.
pub struct PercentOptions {
    resolution: Resolution,
    /// Percentage points within which a new value is not stored.
    pub deadband: f64,
    /// `time_above` counts the seconds above this.
    pub threshold: f64,
}

impl Options for PercentOptions {
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
        Ok(PercentOptions {
            resolution: Resolution::read(reader)?,
            deadband: reader.number(
                "deadband",
                0.0,
                "a number of percentage points from 0 to 100",
                |n| (0.0..=100.0).contains(&n),
            )?,
            threshold: reader.number("threshold", 80.0, "a percentage from 0 to 100", |n| {
                (0.0..=100.0).contains(&n)
            })?,
        })
    }

    fn resolution(&self) -> &Resolution {
        &self.resolution
    }
}

/// The tag byte of [`PercentSummary`]'s encoding: `P`, the seconds above, then a
/// [`NumberSummary`]'s encoding.
const TAG: u8 = b'P';

/// A number summary plus the seconds the value was above the key's threshold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PercentSummary {
    number: NumberSummary,
    above: f64,
}

impl Summary<PercentOptions> for PercentSummary {
    fn empty() -> Self {
        Self::default()
    }

    fn from_bucket(bucket: &Bucket<'_>, options: &PercentOptions) -> Self {
        let mut above = 0.0;
        bucket.for_each_held(|value, seconds| {
            if value.as_number().is_some_and(|v| v > options.threshold) {
                above += seconds;
            }
        });
        PercentSummary {
            number: NumberSummary::from_bucket(bucket),
            above,
        }
    }

    fn merge(self, next: Self, _options: &PercentOptions) -> Self {
        PercentSummary {
            number: self.number.merge(next.number),
            above: self.above + next.above,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        w.f64(self.above);
        w.raw(&self.number.encode());
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, TAG)?;
        let above = r.f64()?;
        Ok(PercentSummary {
            number: NumberSummary::decode(r.rest())?,
            above,
        })
    }

    fn figures(&self, options: &PercentOptions, out: &mut Figures<'_>) {
        Summary::<PercentOptions>::figures(&self.number, options, out); // mean, min, max, ...
        out.add("time_above", || Json::from(self.above));
    }

    fn default_figure(&self, _options: &PercentOptions) -> Json {
        self.number.default_figure()
    }
}

/// A percentage.
pub struct Percent;

impl KeyType for Percent {
    const NAME: &'static str = "percent";
    const DESCRIPTION: &'static str = "A percentage (0 to 100) with a deadband; figure time_above counts seconds above a threshold";

    type Options = PercentOptions;
    type Summary = PercentSummary;

    fn cast(_options: &PercentOptions, input: Input) -> Result<Value, Refusal> {
        let n = cast::number(Self::NAME, &input)?;
        if !(0.0..=100.0).contains(&n) {
            return Err(Refusal::new(
                "out_of_range",
                format!("{n} is not a percentage from 0 to 100"),
            ));
        }
        Ok(Value::Number(n))
    }

    fn should_store(
        options: &PercentOptions,
        previous: Option<&Point>,
        point: &Point,
        _kind: OpKind,
    ) -> bool {
        if !options.resolution.should_store(previous, point) {
            return false;
        }
        match (previous, point.value.as_number()) {
            (Some(latest), Some(value)) if point.time >= latest.time => latest
                .value
                .as_number()
                .is_none_or(|stored| (value - stored).abs() >= options.deadband),
            _ => true,
        }
    }
}

export_key_type!(Percent);
