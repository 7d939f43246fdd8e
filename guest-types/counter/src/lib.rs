//! The `counter` key type: a number that supports `increment` and `decrement`.
//!
//! Casting is numeric's. `add(step)` gives the previous value plus `step` (a counter without
//! points starts at 0). Options: `same_value_resolution`, `min_resolution`; an `add` is
//! never dropped by `min_resolution` (the host passes the latest *stored* point, so a
//! dropped increment would be lost), only a repeat of the same value within
//! `same_value_resolution` is. Summaries are [`NumberSummary`], with the figures `increase`
//! and `rate` besides numeric's.

use komoku_guest::serde_json::json;
use komoku_guest::summary::{Bucket, DecodeError, Figures, NumberSummary, Summary};
use komoku_guest::{
    Input, Json, KeyType, OpKind, Point, Refusal, Resolution, Value, cast, export_key_type,
};

/// A counter.
pub struct Counter;

impl KeyType for Counter {
    const NAME: &'static str = "counter";
    const DESCRIPTION: &'static str =
        "A number that supports increment and decrement (starting at 0)";

    type Options = Resolution;
    type Summary = CounterSummary;

    /// Like numeric (counters are sampled as often): raw 7 days, then 1-minute summaries 30
    /// days, 1-hour summaries 2 years, 1-day summaries forever.
    fn default_retention() -> Option<Json> {
        Some(json!({"raw": "7d", "tiers": [["1M", "30d"], ["1H", "2y"], ["1d", null]]}))
    }

    fn cast(_options: &Resolution, input: Input) -> Result<Value, Refusal> {
        cast::number(Self::NAME, &input).map(Value::Number)
    }

    fn add(_options: &Resolution, previous: Option<&Point>, step: f64) -> Result<Value, Refusal> {
        cast::add_number(previous, step).map(Value::Number)
    }

    fn should_store(
        options: &Resolution,
        previous: Option<&Point>,
        point: &Point,
        kind: OpKind,
    ) -> bool {
        match kind {
            OpKind::Set => options.should_store(previous, point),
            OpKind::Add => !options.is_close_repeat(previous, point),
        }
    }
}

/// A counter's summary: numeric's, encoded the same way (tag `N`), with the figures
/// `increase` and `rate` besides numeric's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CounterSummary(pub NumberSummary);

impl<O> Summary<O> for CounterSummary {
    fn empty() -> Self {
        Self::default()
    }

    fn from_bucket(bucket: &Bucket<'_>, _options: &O) -> Self {
        Self(NumberSummary::from_bucket(bucket))
    }

    fn merge(self, next: Self, _options: &O) -> Self {
        Self(self.0.merge(next.0))
    }

    fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        NumberSummary::decode(bytes).map(Self)
    }

    fn figures(&self, options: &O, out: &mut Figures<'_>) {
        Summary::<O>::figures(&self.0, options, out);
        out.add("increase", || {
            self.0.figure("increase").unwrap_or(Json::Null)
        });
        out.add("rate", || self.0.figure("rate").unwrap_or(Json::Null));
    }

    fn default_figure(&self, _options: &O) -> Json {
        self.0.default_figure()
    }
}

export_key_type!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::serde_json::json;
    use komoku_guest::testing::{point, rendered};
    use komoku_guest::world::json::{apply, check_options, guess};
    use komoku_guest::{Operation, Outcome};

    const DEFAULTS: &str = r#"{"min_resolution":0,"same_value_resolution":0}"#;

    fn add(options: &str, previous: Option<f64>, step: f64, time: f64) -> Result<Outcome, Refusal> {
        let previous = previous.map(|v| point(time - 1.0, Value::Number(v)));
        apply::<Counter>(options.to_owned(), previous, Operation::Add(step), time)
    }

    #[test]
    fn guess_claims_nothing() {
        assert_eq!(guess::<Counter>(Input::Number(1.0)), 0);
        assert_eq!(guess::<Counter>(Input::Text("x".into())), 0);
    }

    #[test]
    fn add_starts_at_zero_and_adds_steps() -> Result<(), Refusal> {
        assert_eq!(add(DEFAULTS, None, 1.0, 10.0)?.value, Value::Number(1.0));
        assert_eq!(
            add(DEFAULTS, Some(1.0), 2.4, 10.0)?.value,
            Value::Number(3.4)
        );
        assert_eq!(
            add(DEFAULTS, Some(3.0), -5.0, 10.0)?.value,
            Value::Number(-2.0)
        );
        assert_eq!(
            add(DEFAULTS, Some(3.0), f64::NAN, 10.0)
                .expect_err("NaN")
                .code,
            "invalid_value"
        );
        assert_eq!(
            add(DEFAULTS, Some(f64::MAX), f64::MAX, 10.0)
                .expect_err("overflow")
                .code,
            "invalid_value"
        );
        Ok(())
    }

    #[test]
    fn casting_is_numeric() -> Result<(), Refusal> {
        let put = |input| apply::<Counter>(DEFAULTS.into(), None, Operation::Set(input), 1.0);
        assert_eq!(put(Input::Text("12".into()))?.value, Value::Number(12.0));
        assert_eq!(
            put(Input::Text("twelve".into())).expect_err("text").code,
            "invalid_value"
        );
        assert_eq!(
            put(Input::Boolean(false)).expect_err("bool").code,
            "invalid_value"
        );
        Ok(())
    }

    #[test]
    fn add_ignores_min_resolution_but_not_repeats() -> Result<(), Refusal> {
        let options = check_options::<Counter>(
            r#"{"min_resolution": 60, "same_value_resolution": 60}"#.into(),
        )?;
        assert!(
            add(&options, Some(1.0), 1.0, 10.0)?.store,
            "an increment is never lost"
        );
        assert!(
            !add(&options, Some(1.0), 0.0, 10.0)?.store,
            "adding 0 repeats the value"
        );
        let set = apply::<Counter>(
            options,
            Some(point(9.0, Value::Number(1.0))),
            Operation::Set(Input::Number(5.0)),
            10.0,
        )?;
        assert!(!set.store, "a put is subject to min_resolution");
        Ok(())
    }

    #[test]
    fn render_increase_and_rate() -> Result<(), Refusal> {
        let points = [
            point(0.0, Value::Number(10.0)),
            point(5.0, Value::Number(12.0)),
            point(15.0, Value::Number(20.0)),
        ];
        let figures = rendered::<Counter>(
            DEFAULTS,
            &[0.0, 10.0, 20.0],
            None,
            &points,
            &["increase", "rate", "mean"],
        )?;
        assert_eq!(
            figures,
            json!([
                {"increase": 2, "rate": 0.2, "mean": 11},
                {"increase": 8, "rate": 0.8, "mean": 16},
            ])
        );
        let carried = Some(point(-3.0, Value::Number(4.0)));
        let figures =
            rendered::<Counter>(DEFAULTS, &[0.0, 10.0], carried, &points[..1], &["increase"])?;
        assert_eq!(figures, json!([{"increase": 6}]));
        let empty = rendered::<Counter>(DEFAULTS, &[0.0, 10.0], None, &[], &["increase", "rate"])?;
        assert_eq!(empty, json!([{"increase": null, "rate": null}]));
        Ok(())
    }
}
