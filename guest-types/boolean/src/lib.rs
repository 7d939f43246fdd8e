//! The `boolean` key type: `true` or `false`.
//!
//! Accepts `true`, `false`, `"true"` and `"false"`; refuses everything else with
//! `invalid_value`. Options: `same_value_resolution`, `min_resolution`. Summaries are time
//! per state ([`StateSummary<bool>`]); the default figure is `fraction_true`.

use komoku_guest::serde_json::json;
use komoku_guest::summary::StateSummary;
use komoku_guest::{Input, Json, KeyType, Refusal, Resolution, Value, cast, export_key_type};

/// A flag.
pub struct Boolean;

impl KeyType for Boolean {
    const NAME: &'static str = "boolean";
    const DESCRIPTION: &'static str =
        "true or false (the texts \"true\" and \"false\" too), summarised as time per state";

    type Options = Resolution;
    type Summary = StateSummary<bool>;

    /// A flag changes a few times an hour at most, and each change matters ("was the door
    /// open at 14:05?" is answered from raw points only): raw points 90 days, cheaper than
    /// 1-minute summaries (1 440 a day, changes or not) would be; then 1-hour summaries 2
    /// years (time per state, rises and falls, longest runs), 1-day summaries forever.
    fn default_retention() -> Option<Json> {
        Some(json!({"raw": "90d", "tiers": [["1H", "2y"], ["1d", null]]}))
    }

    /// Claims booleans and boolean text (3).
    fn guess(sample: &Input) -> u8 {
        if cast::is_boolean_like(sample) { 3 } else { 0 }
    }

    fn cast(_options: &Resolution, input: Input) -> Result<Value, Refusal> {
        cast::boolean(Self::NAME, &input).map(Value::Boolean)
    }
}

export_key_type!(Boolean);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::serde_json::json;
    use komoku_guest::testing::{point, rendered};
    use komoku_guest::world::json::{apply, check_options, guess};
    use komoku_guest::{Operation, Point};

    const DEFAULTS: &str = r#"{"min_resolution":0,"same_value_resolution":0}"#;

    fn put(
        options: &str,
        previous: Option<Point>,
        input: Input,
        time: f64,
    ) -> Result<komoku_guest::Outcome, Refusal> {
        apply::<Boolean>(options.to_owned(), previous, Operation::Set(input), time)
    }

    #[test]
    fn guess_claims_booleans_strongly() {
        assert_eq!(guess::<Boolean>(Input::Boolean(false)), 3);
        assert_eq!(guess::<Boolean>(Input::Text("true".into())), 3);
        assert_eq!(guess::<Boolean>(Input::Text("True".into())), 0);
        assert_eq!(guess::<Boolean>(Input::Number(1.0)), 0);
    }

    #[test]
    fn cast_accepts_booleans_and_their_text() -> Result<(), Refusal> {
        assert_eq!(
            put(DEFAULTS, None, Input::Boolean(true), 1.0)?.value,
            Value::Boolean(true)
        );
        assert_eq!(
            put(DEFAULTS, None, Input::Text("false".into()), 1.0)?.value,
            Value::Boolean(false)
        );
        for bad in [Input::Number(1.0), Input::Text("yes".into()), Input::Null] {
            assert_eq!(
                put(DEFAULTS, None, bad, 1.0).expect_err("not boolean").code,
                "invalid_value"
            );
        }
        Ok(())
    }

    #[test]
    fn repeats_are_dropped_within_same_value_resolution() -> Result<(), Refusal> {
        let options = check_options::<Boolean>(r#"{"same_value_resolution": 10}"#.into())?;
        let previous = || Some(point(100.0, Value::Boolean(true)));
        assert!(!put(&options, previous(), Input::Boolean(true), 105.0)?.store);
        assert!(put(&options, previous(), Input::Boolean(false), 105.0)?.store);
        assert!(put(&options, previous(), Input::Boolean(true), 110.0)?.store);
        Ok(())
    }

    #[test]
    fn render_fraction_true_by_default_and_named_figures() -> Result<(), Refusal> {
        let points = [
            point(0.0, Value::Boolean(true)),
            point(3.0, Value::Boolean(false)),
            point(4.0, Value::Boolean(true)),
            point(15.0, Value::Boolean(false)),
        ];
        let edges = [0.0, 10.0, 20.0];
        assert_eq!(
            rendered::<Boolean>(DEFAULTS, &edges, None, &points, &[])?,
            json!([0.9, 0.5])
        );
        let all = [
            "time_true",
            "time_false",
            "fraction_true",
            "rises",
            "falls",
            "longest_true",
            "longest_false",
            "coverage_seconds",
        ];
        assert_eq!(
            rendered::<Boolean>(DEFAULTS, &edges, None, &points, &all)?,
            json!([
                {"time_true": 9, "time_false": 1, "fraction_true": 0.9, "rises": 1, "falls": 1,
                 "longest_true": 6, "longest_false": 1, "coverage_seconds": 10},
                {"time_true": 5, "time_false": 5, "fraction_true": 0.5, "rises": 0, "falls": 1,
                 "longest_true": 5, "longest_false": 5, "coverage_seconds": 10},
            ])
        );
        assert_eq!(
            rendered::<Boolean>(DEFAULTS, &edges, None, &[], &[])?,
            json!([null, null])
        );
        let refusal = rendered::<Boolean>(DEFAULTS, &edges, None, &points, &["mean"])
            .expect_err("not a boolean figure");
        assert_eq!(refusal.code, "unknown_figure");
        Ok(())
    }

    #[test]
    fn merged_summary_joins_runs_across_buckets() -> Result<(), Refusal> {
        use komoku_guest::world::json::{merge, render, summarize};
        let points = vec![
            point(0.0, Value::Boolean(true)),
            point(25.0, Value::Boolean(false)),
        ];
        let parts =
            summarize::<Boolean>(DEFAULTS.into(), vec![0.0, 10.0, 20.0, 30.0], None, points);
        let merged = merge::<Boolean>(DEFAULTS.into(), parts);
        let text = render::<Boolean>(
            DEFAULTS.into(),
            vec![merged],
            vec!["longest_true".into(), "rises".into()],
        )?;
        assert_eq!(text, r#"[{"longest_true":25,"rises":0}]"#);
        Ok(())
    }

    /// The SDK's boolean conformance vectors, through this type as the host calls it.
    #[test]
    fn conformance_vectors() -> Result<(), String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
        let cases = komoku_guest::testing::run_vectors::<Boolean>(&dir, "boolean.json", |_| {
            DEFAULTS.to_owned()
        })?;
        assert!(cases > 0);
        Ok(())
    }
}
