//! The `meter` key type: a reading that only grows (an energy meter's kWh, a network
//! interface's byte count, a rain gauge), sent as its absolute value. rrdtool calls it
//! COUNTER/DERIVE, Prometheus a counter.
//!
//! A drop is not negative usage: the device restarted from zero (a reset: the reading after
//! it is all new usage), or, with option `wrap` (32 or 64), the counter went past its
//! largest value and started again at 0 (the usage is what it took to wrap). A drop smaller
//! than option `min_drop` is noise (a meter read twice, a rounding): it counts as it is, so
//! a jitter down and back up adds nothing.
//!
//! Values: finite numbers >= 0 (numeric text is parsed); anything else is `invalid_value`.
//! Options: `wrap` (`null`, 32 or 64: bits of a counter that wraps instead of resetting;
//! default `null`), `min_drop` (>= 0, default 0), and the resolution options.
//!
//! Figures: `increase` (the usage in the bucket, across resets and wraps, as Prometheus's
//! `increase`; the default figure), `rate` (per known second), `resets`, `first`, `last`,
//! `count`, `coverage_seconds`. Every figure depends only on consecutive readings, so the
//! summaries of adjacent buckets add up to the summary of their union, in every tier.

use komoku_guest::options::OptionsReader;
use komoku_guest::serde_json::json;
use komoku_guest::summary::{Bucket, DecodeError, Figures, NumberSummary, Reader, Summary, Writer};
use komoku_guest::{
    Input, Json, KeyType, OpKind, Options, Point, Refusal, Resolution, Value, cast, export_key_type,
};

/// A growing reading.
pub struct Meter;

/// The options of a meter key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeterOptions {
    pub resolution: Resolution,
    /// The counter wraps at 2^bits instead of resetting.
    pub wrap_bits: Option<u32>,
    /// Drops smaller than this are noise, not resets.
    pub min_drop: f64,
}

impl Options for MeterOptions {
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
        let resolution = Resolution::read(reader)?;
        let wrap_bits = reader.optional("wrap", "null, 32 or 64", |json| {
            let bits = json.as_u64().filter(|b| *b == 32 || *b == 64)?;
            Some((bits as u32, Json::from(bits)))
        })?;
        let min_drop = reader.number("min_drop", 0.0, "a number >= 0", |n| n >= 0.0)?;
        Ok(Self {
            resolution,
            wrap_bits,
            min_drop,
        })
    }

    fn resolution(&self) -> &Resolution {
        &self.resolution
    }
}

impl MeterOptions {
    /// The usage between two consecutive readings, and whether it was a reset.
    pub fn usage(&self, before: f64, after: f64) -> (f64, bool) {
        let change = after - before;
        if change >= 0.0 || -change < self.min_drop {
            return (change, false);
        }
        match self.wrap_bits {
            Some(bits) => (2f64.powi(bits as i32) - before + after, false),
            None => (after, true),
        }
    }
}

/// The summary of a meter over a bucket: [`NumberSummary`] for the readings, plus the usage
/// and the resets.
///
/// Encoding (tag `M`):
///
/// ```text
/// u8 'M'
/// f64    increase   usage in the bucket (from the reading carried in, if any)
/// varint resets
/// bytes  readings   a NumberSummary's encoding (tag 'N')
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeterSummary {
    pub readings: NumberSummary,
    pub increase: f64,
    pub resets: u64,
}

const TAG: u8 = b'M';

impl MeterSummary {
    /// One bucket, with the key's options.
    pub fn from_bucket_with(bucket: &Bucket<'_>, options: &MeterOptions) -> Self {
        let mut summary = Self {
            readings: NumberSummary::from_bucket(bucket),
            ..Self::default()
        };
        let mut before = bucket.initial.and_then(|v| v.as_number());
        for point in bucket.points {
            let Some(after) = point.value.as_number() else {
                continue;
            };
            if let Some(before) = before {
                let (usage, reset) = options.usage(before, after);
                summary.increase += usage;
                summary.resets += u64::from(reset);
            }
            before = Some(after);
        }
        summary
    }

    /// `rate`: the increase per known second.
    pub fn rate(&self) -> Option<f64> {
        (self.readings.known > 0.0).then(|| self.increase / self.readings.known)
    }
}

impl MeterSummary {
    /// The summary of this bucket followed by `next`.
    pub fn merge(self, next: Self) -> Self {
        Self {
            readings: self.readings.merge(next.readings),
            increase: self.increase + next.increase,
            resets: self.resets + next.resets,
        }
    }

    /// The binary encoding: the meter's own figures, then the readings' whole encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        w.f64(self.increase);
        w.varint(self.resets);
        w.bytes(&self.readings.encode());
        w.finish()
    }

    /// Reads an encoding back.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, TAG)?;
        let increase = r.f64()?;
        let resets = r.varint()?;
        let readings = NumberSummary::decode(r.bytes()?)?;
        r.finish()?;
        Ok(Self {
            readings,
            increase,
            resets,
        })
    }
}

impl Summary<MeterOptions> for MeterSummary {
    fn empty() -> Self {
        Self::default()
    }

    fn from_bucket(bucket: &Bucket<'_>, options: &MeterOptions) -> Self {
        Self::from_bucket_with(bucket, options)
    }

    fn merge(self, next: Self, _options: &MeterOptions) -> Self {
        MeterSummary::merge(self, next)
    }

    fn encode(&self) -> Vec<u8> {
        MeterSummary::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        MeterSummary::decode(bytes)
    }

    fn figures(&self, _options: &MeterOptions, out: &mut Figures<'_>) {
        let known = !self.readings.is_empty();
        out.add("increase", || {
            if known {
                cast::number_json(self.increase)
            } else {
                Json::Null
            }
        });
        out.add("rate", || self.rate().map_or(Json::Null, cast::number_json));
        out.add("resets", || Json::from(self.resets));
        for name in ["first", "last", "count", "coverage_seconds"] {
            out.add(name, || self.readings.figure(name).unwrap_or(Json::Null));
        }
    }

    fn default_figure(&self, _options: &MeterOptions) -> Json {
        if self.readings.is_empty() {
            Json::Null
        } else {
            cast::number_json(self.increase)
        }
    }
}

impl KeyType for Meter {
    const NAME: &'static str = "meter";
    const DESCRIPTION: &'static str =
        "A growing reading (energy, bytes, rain): usage per bucket across resets and wraps";

    type Options = MeterOptions;
    type Summary = MeterSummary;

    /// Meters are read for usage per hour, day and month, rarely at finer steps once old:
    /// raw points 7 days, then 1-minute summaries 30 days, 1-hour summaries 2 years, 1-day
    /// summaries forever. The increase is exact at every tier's step.
    fn default_retention() -> Option<Json> {
        Some(json!({"raw": "7d", "tiers": [["1M", "30d"], ["1H", "2y"], ["1d", null]]}))
    }

    fn cast(_options: &MeterOptions, input: Input) -> Result<Value, Refusal> {
        let n = cast::number(Self::NAME, &input)?;
        if n < 0.0 {
            return Err(Refusal::invalid_value(format!(
                "a meter reading is >= 0, got {n}"
            )));
        }
        Ok(Value::Number(n))
    }

    /// `increment` adds to the reading (a meter counted by the client).
    fn add(_options: &MeterOptions, previous: Option<&Point>, step: f64) -> Result<Value, Refusal> {
        let n = cast::add_number(previous, step)?;
        if n < 0.0 {
            return Err(Refusal::invalid_value("a meter reading is >= 0"));
        }
        Ok(Value::Number(n))
    }

    fn should_store(
        options: &MeterOptions,
        previous: Option<&Point>,
        point: &Point,
        kind: OpKind,
    ) -> bool {
        match kind {
            OpKind::Set => options.resolution.should_store(previous, point),
            OpKind::Add => !options.resolution.is_close_repeat(previous, point),
        }
    }
}

export_key_type!(Meter);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::testing::point;
    use komoku_guest::world::json::{apply, merge, render, summarize};
    use komoku_guest::{Operation, serde_json};

    fn figures(options: &str, edges: Vec<f64>, readings: &[(f64, f64)]) -> Json {
        let points = readings
            .iter()
            .map(|&(t, v)| point(t, Value::Number(v)))
            .collect();
        let parts = summarize::<Meter>(options.into(), edges, None, points);
        let mut all = parts.clone();
        all.push(merge::<Meter>(options.into(), parts));
        let names = ["increase", "resets", "rate"].map(String::from).to_vec();
        let text = render::<Meter>(options.into(), all, names).expect("renders");
        serde_json::from_str(&text).expect("JSON")
    }

    #[test]
    fn readings_must_be_non_negative_numbers() {
        let put = |input| apply::<Meter>("{}".into(), None, Operation::Set(input), 1.0);
        assert!(put(Input::Number(5.5)).is_ok());
        assert!(put(Input::Text("12".into())).is_ok());
        assert!(put(Input::Number(-1.0)).is_err());
        assert!(put(Input::Text("x".into())).is_err());
        assert!(
            apply::<Meter>(
                r#"{"wrap": 16}"#.into(),
                None,
                Operation::Set(Input::Number(1.0)),
                1.0
            )
            .is_err()
        );
    }

    #[test]
    fn a_reset_mid_bucket_counts_the_usage_on_both_sides() {
        // 100 → 130, reboot, 0 → 20 → 45: usage 30 + 45.
        let got = figures(
            "{}",
            vec![0.0, 100.0],
            &[
                (0.0, 100.0),
                (20.0, 130.0),
                (40.0, 0.0),
                (60.0, 20.0),
                (80.0, 45.0),
            ],
        );
        assert_eq!(got[0]["increase"], json!(75));
        assert_eq!(got[0]["resets"], json!(1));
    }

    #[test]
    fn two_resets_in_a_bucket_and_across_buckets() {
        let readings = [
            (0.0, 10.0),
            (10.0, 15.0),
            (20.0, 3.0),
            (30.0, 8.0),
            (40.0, 2.0),
            (50.0, 4.0),
            (60.0, 9.0),
        ];
        let got = figures("{}", vec![0.0, 35.0, 70.0], &readings);
        // [0, 35): 5 + 3 (reset) + 5; [35, 70): 2 (reset, from 8) + 2 + 5.
        assert_eq!(got[0]["increase"], json!(13));
        assert_eq!(got[0]["resets"], json!(1));
        assert_eq!(got[1]["increase"], json!(9));
        assert_eq!(got[1]["resets"], json!(1));
        assert_eq!(got[2]["increase"], json!(22));
        assert_eq!(got[2]["resets"], json!(2));
    }

    #[test]
    fn a_32_bit_counter_wraps_instead_of_resetting() {
        let max = 4_294_967_296.0;
        let got = figures(
            r#"{"wrap": 32}"#,
            vec![0.0, 100.0],
            &[(0.0, max - 100.0), (50.0, 50.0)],
        );
        assert_eq!(got[0]["increase"], json!(150));
        assert_eq!(got[0]["resets"], json!(0));
        assert_eq!(got[0]["rate"], json!(1.5));
    }

    #[test]
    fn small_drops_are_noise_that_nets_out() {
        let readings = [(0.0, 100.0), (10.0, 99.5), (20.0, 101.0)];
        let noisy = figures(r#"{"min_drop": 1}"#, vec![0.0, 15.0, 30.0], &readings);
        assert_eq!(noisy[2]["increase"], json!(1));
        assert_eq!(noisy[2]["resets"], json!(0));
        let strict = figures("{}", vec![0.0, 30.0], &readings);
        // The drop is a reset: 99.5 from zero, then 1.5.
        assert_eq!(strict[0]["increase"], json!(101));
        assert_eq!(strict[0]["resets"], json!(1));
    }

    #[test]
    fn encoding_round_trips() -> Result<(), DecodeError> {
        let points = [
            point(1.0, Value::Number(3.0)),
            point(2.0, Value::Number(1.0)),
        ];
        let s = MeterSummary::from_bucket_with(
            &Bucket {
                start: 0.0,
                end: 3.0,
                initial: None,
                points: &points,
            },
            &MeterOptions::default(),
        );
        assert_eq!(MeterSummary::decode(&s.encode())?, s);
        assert_eq!(s.resets, 1);
        Ok(())
    }
}
