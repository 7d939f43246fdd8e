//! The `numeric` key type: a gauge holding a finite double.
//!
//! Accepts finite numbers and numeric text (`^-?(\d+\.)?\d+$`, parsed to a double); refuses
//! everything else with `invalid_value`. `increment`/`decrement` add to the latest value,
//! as the original server allowed on numeric keys (a key first `put` a number is numeric).
//! Options: `same_value_resolution`, `min_resolution` (never dropping an increment).
//! Summaries are time-weighted ([`NumberSummary`]); the default figure is the mean.

use komoku_guest::serde_json::json;
use komoku_guest::summary::NumberSummary;
use komoku_guest::{
    Input, Json, KeyType, OpKind, Point, Refusal, Resolution, Value, cast, export_key_type,
};

/// A gauge: the latest reading of something.
pub struct Numeric;

impl KeyType for Numeric {
    const NAME: &'static str = "numeric";
    const DESCRIPTION: &'static str =
        "A gauge: a finite double (numeric text is parsed), summarised time-weighted";

    type Options = Resolution;
    type Summary = NumberSummary;

    /// Gauges are sampled often and read at fine steps while recent: raw points 7 days, then
    /// 1-minute summaries 30 days, 1-hour summaries 2 years, 1-day summaries forever.
    fn default_retention() -> Option<Json> {
        Some(json!({"raw": "7d", "tiers": [["1M", "30d"], ["1H", "2y"], ["1d", null]]}))
    }

    /// Claims numbers (2).
    fn guess(sample: &Input) -> u8 {
        match sample {
            Input::Number(n) if n.is_finite() => 2,
            _ => 0,
        }
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

export_key_type!(Numeric);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::serde_json::json;
    use komoku_guest::testing::{point, rendered};
    use komoku_guest::world::json::{apply, check_options, guess, info};
    use komoku_guest::{Json, Operation, Point};

    const DEFAULTS: &str = r#"{"min_resolution":0,"same_value_resolution":0}"#;

    fn put(
        options: &str,
        previous: Option<Point>,
        input: Input,
        time: f64,
    ) -> Result<komoku_guest::Outcome, Refusal> {
        apply::<Numeric>(options.to_owned(), previous, Operation::Set(input), time)
    }

    #[test]
    fn info_names_the_type_with_default_options() {
        let info = info::<Numeric>(env!("CARGO_PKG_VERSION"));
        assert_eq!(info.name, "numeric");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.default_options, DEFAULTS);
    }

    #[test]
    fn guess_claims_numbers_only() {
        assert_eq!(guess::<Numeric>(Input::Number(1.5)), 2);
        assert_eq!(guess::<Numeric>(Input::Text("1".into())), 0);
        assert_eq!(guess::<Numeric>(Input::Boolean(true)), 0);
    }

    #[test]
    fn cast_accepts_numbers_and_numeric_text() -> Result<(), Refusal> {
        assert_eq!(
            put(DEFAULTS, None, Input::Number(3.0), 1.0)?.value,
            Value::Number(3.0)
        );
        assert_eq!(
            put(DEFAULTS, None, Input::Text("-2.5".into()), 1.0)?.value,
            Value::Number(-2.5)
        );
        assert_eq!(
            put(DEFAULTS, None, Input::Text("007".into()), 1.0)?.value,
            Value::Number(7.0)
        );
        Ok(())
    }

    #[test]
    fn cast_refuses_other_values_saying_what_came() {
        for (input, said) in [
            (Input::Number(f64::NAN), "NaN"),
            (Input::Number(f64::INFINITY), "inf"),
            (Input::Text("1e3".into()), "\"1e3\""),
            (Input::Text("abc".into()), "\"abc\""),
            (Input::Boolean(true), "true"),
            (Input::Null, "null"),
        ] {
            let refusal = put(DEFAULTS, None, input, 1.0).expect_err(said);
            assert_eq!(refusal.code, "invalid_value");
            assert!(refusal.message.contains(said), "{}", refusal.message);
        }
    }

    #[test]
    fn add_counts_from_the_latest_value_or_zero() -> Result<(), Refusal> {
        let first = apply::<Numeric>(DEFAULTS.into(), None, Operation::Add(2.5), 1.0)?;
        assert_eq!(first.value, Value::Number(2.5));
        let next = apply::<Numeric>(
            DEFAULTS.into(),
            Some(point(1.0, Value::Number(2.5))),
            Operation::Add(-1.0),
            2.0,
        )?;
        assert_eq!(next.value, Value::Number(1.5));
        Ok(())
    }

    #[test]
    fn options_are_checked_and_completed() -> Result<(), Refusal> {
        assert_eq!(check_options::<Numeric>("{}".into())?, DEFAULTS);
        assert_eq!(
            check_options::<Numeric>(r#"{"min_resolution": 2.5}"#.into())?,
            r#"{"min_resolution":2.5,"same_value_resolution":0}"#
        );
        for bad in [
            r#"{"max_time": 1}"#,
            r#"{"min_resolution": "1"}"#,
            r#"{"same_value_resolution": -1}"#,
        ] {
            assert_eq!(
                check_options::<Numeric>(bad.into()).expect_err(bad).code,
                "invalid_option"
            );
        }
        Ok(())
    }

    #[test]
    fn store_decision_uses_resolutions() -> Result<(), Refusal> {
        let options = check_options::<Numeric>(
            r#"{"same_value_resolution": 60, "min_resolution": 5}"#.into(),
        )?;
        let previous = || Some(point(100.0, Value::Number(1.0)));
        assert!(put(&options, None, Input::Number(1.0), 100.0)?.store);
        assert!(
            !put(&options, previous(), Input::Number(1.0), 130.0)?.store,
            "repeat"
        );
        assert!(
            put(&options, previous(), Input::Number(1.0), 160.0)?.store,
            "late repeat"
        );
        assert!(
            !put(&options, previous(), Input::Number(2.0), 103.0)?.store,
            "too soon"
        );
        assert!(put(&options, previous(), Input::Number(2.0), 105.0)?.store);
        assert!(
            put(&options, previous(), Input::Number(1.0), 50.0)?.store,
            "backfill"
        );
        assert_eq!(
            put(&options, previous(), Input::Number(2.0), 105.0)?.schedule,
            None
        );
        Ok(())
    }

    #[test]
    fn render_gives_mean_by_default_and_named_figures() -> Result<(), Refusal> {
        let points = [
            point(0.0, Value::Number(2.0)),
            point(5.0, Value::Number(4.0)),
        ];
        let means = rendered::<Numeric>(DEFAULTS, &[0.0, 10.0, 20.0, 30.0], None, &points, &[])?;
        assert_eq!(means, json!([3, 4, 4]));
        let none = rendered::<Numeric>(DEFAULTS, &[0.0, 10.0], None, &[], &[])?;
        assert_eq!(none, json!([null]));
        let figures = rendered::<Numeric>(
            DEFAULTS,
            &[0.0, 10.0],
            None,
            &points,
            &["min", "max", "count", "last", "coverage_seconds"],
        )?;
        assert_eq!(
            figures,
            json!([{"min": 2, "max": 4, "count": 2, "last": {"time": 5, "value": 4}, "coverage_seconds": 10}])
        );
        let refusal = rendered::<Numeric>(DEFAULTS, &[0.0, 10.0], None, &points, &["increase"])
            .expect_err("counter figure");
        assert_eq!(refusal.code, "unknown_figure");
        let refusal = komoku_guest::world::json::render::<Numeric>(
            DEFAULTS.into(),
            vec![b"B".to_vec()],
            vec![],
        )
        .expect_err("bad summary");
        assert_eq!(refusal.code, "invalid_summary");
        assert_eq!(
            rendered::<Numeric>(DEFAULTS, &[0.0], None, &points, &[])?,
            Json::Array(vec![])
        );
        Ok(())
    }
}
