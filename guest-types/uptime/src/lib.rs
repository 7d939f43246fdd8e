//! The `uptime` key type: a boolean that turns `false` by itself when no `true` arrives
//! within `max_time` seconds.
//!
//! Casting is boolean's. Options: `max_time` (seconds, > 0, default 60),
//! `same_value_resolution`, `min_resolution`. Every `true` schedules `false` at
//! `time + max_time` (even when the repeat is not stored: it still refreshes the key);
//! `false` cancels. Summaries are boolean's.

use komoku_guest::serde_json::json;
use komoku_guest::summary::StateSummary;
use komoku_guest::{
    Input, Json, KeyType, Options, OptionsReader, Point, Refusal, Resolution, Scheduled, Value,
    cast, export_key_type,
};

/// A liveness flag.
pub struct Uptime;

/// Uptime options.
#[derive(Clone, Debug, PartialEq)]
pub struct UptimeOptions {
    /// `same_value_resolution` and `min_resolution`.
    pub resolution: Resolution,
    /// `max_time`: seconds after the latest `true` at which the key goes `false`.
    /// Default = 60.
    pub max_time: f64,
}

impl Options for UptimeOptions {
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
        Ok(Self {
            resolution: Resolution::read(reader)?,
            max_time: reader.positive_seconds("max_time", 60.0)?,
        })
    }

    fn resolution(&self) -> &Resolution {
        &self.resolution
    }
}

impl KeyType for Uptime {
    const NAME: &'static str = "uptime";
    const DESCRIPTION: &'static str =
        "A boolean that turns false by itself max_time seconds after its latest true";

    type Options = UptimeOptions;
    type Summary = StateSummary<bool>;

    /// Every refresh is stored (unless `same_value_resolution` skips repeats), so raw points
    /// grow with the heartbeat rate (2 880 a day at 30 s), not with the outages. Raw points
    /// 30 days keep a month of exact outage times (`at`, `spans`); then 1-hour summaries 2
    /// years (fraction up, falls, longest outage per hour), 1-day summaries forever. A
    /// 1-minute tier would keep half as many entries as 30 s heartbeats, for little.
    fn default_retention() -> Option<Json> {
        Some(json!({"raw": "30d", "tiers": [["1H", "2y"], ["1d", null]]}))
    }

    fn cast(_options: &UptimeOptions, input: Input) -> Result<Value, Refusal> {
        cast::boolean(Self::NAME, &input).map(Value::Boolean)
    }

    /// `false` at `latest.time + max_time` while the latest value is `true`.
    fn schedule(options: &UptimeOptions, latest: &Point) -> Option<Scheduled> {
        (latest.value == Value::Boolean(true)).then_some(Scheduled {
            at: latest.time + options.max_time,
            value: Value::Boolean(false),
        })
    }
}

export_key_type!(Uptime);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::serde_json::json;
    use komoku_guest::testing::{point, rendered};
    use komoku_guest::world::json::{apply, check_options, guess, info, reschedule};
    use komoku_guest::{Operation, Outcome};

    fn put(
        options: &str,
        previous: Option<Point>,
        input: Input,
        time: f64,
    ) -> Result<Outcome, Refusal> {
        apply::<Uptime>(options.to_owned(), previous, Operation::Set(input), time)
    }

    fn going_false(at: f64) -> Option<Scheduled> {
        Some(Scheduled {
            at,
            value: Value::Boolean(false),
        })
    }

    #[test]
    fn defaults_include_max_time() {
        assert_eq!(
            info::<Uptime>("0").default_options,
            r#"{"max_time":60,"min_resolution":0,"same_value_resolution":0}"#
        );
        assert_eq!(guess::<Uptime>(Input::Boolean(true)), 0);
    }

    #[test]
    fn max_time_must_be_positive_seconds() -> Result<(), Refusal> {
        assert_eq!(
            check_options::<Uptime>(r#"{"max_time": 77}"#.into())?,
            r#"{"max_time":77,"min_resolution":0,"same_value_resolution":0}"#
        );
        for bad in [
            r#"{"max_time": 0}"#,
            r#"{"max_time": -3}"#,
            r#"{"max_time": "60"}"#,
            r#"{"max_time": [1]}"#,
        ] {
            let refusal = check_options::<Uptime>(bad.into()).expect_err(bad);
            assert_eq!(refusal.code, "invalid_option");
            assert!(refusal.message.contains("max_time"), "{}", refusal.message);
        }
        Ok(())
    }

    #[test]
    fn true_schedules_false_after_max_time() -> Result<(), Refusal> {
        let options = check_options::<Uptime>(r#"{"max_time": 77}"#.into())?;
        assert_eq!(
            put(&options, None, Input::Boolean(true), 100.0)?.schedule,
            going_false(177.0)
        );
        assert_eq!(
            put(&options, None, Input::Text("true".into()), 100.0)?.schedule,
            going_false(177.0)
        );
        assert_eq!(
            put(&options, None, Input::Boolean(false), 100.0)?.schedule,
            None
        );
        assert_eq!(
            put(&options, None, Input::Number(1.0), 100.0)
                .expect_err("number")
                .code,
            "invalid_value"
        );
        Ok(())
    }

    #[test]
    fn unstored_true_still_refreshes() -> Result<(), Refusal> {
        let options = check_options::<Uptime>(r#"{"same_value_resolution": 30}"#.into())?;
        let outcome = put(
            &options,
            Some(point(100.0, Value::Boolean(true))),
            Input::Boolean(true),
            110.0,
        )?;
        assert!(!outcome.store);
        assert_eq!(outcome.schedule, going_false(170.0));
        Ok(())
    }

    #[test]
    fn backfill_keeps_the_pending_value_of_the_latest_point() -> Result<(), Refusal> {
        let options = check_options::<Uptime>("{}".into())?;
        let outcome = put(
            &options,
            Some(point(100.0, Value::Boolean(true))),
            Input::Boolean(false),
            50.0,
        )?;
        assert!(outcome.store);
        assert_eq!(outcome.schedule, going_false(160.0));
        Ok(())
    }

    #[test]
    fn reschedule_follows_the_latest_point() -> Result<(), Refusal> {
        let options = check_options::<Uptime>(r#"{"max_time": 5}"#.into())?;
        assert_eq!(
            reschedule::<Uptime>(options.clone(), point(10.0, Value::Boolean(true))),
            going_false(15.0)
        );
        assert_eq!(
            reschedule::<Uptime>(options, point(10.0, Value::Boolean(false))),
            None
        );
        Ok(())
    }

    #[test]
    fn render_is_boolean() -> Result<(), Refusal> {
        let options = check_options::<Uptime>("{}".into())?;
        let points = [
            point(0.0, Value::Boolean(true)),
            point(6.0, Value::Boolean(false)),
        ];
        assert_eq!(
            rendered::<Uptime>(&options, &[0.0, 10.0], None, &points, &[])?,
            json!([0.6])
        );
        Ok(())
    }

    /// Uptime summarises as boolean does: the boolean conformance vectors hold here too.
    #[test]
    fn conformance_vectors_of_boolean() -> Result<(), String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
        let cases = komoku_guest::testing::run_vectors::<Uptime>(&dir, "boolean.json", |_| {
            r#"{"max_time": 60}"#.to_owned()
        })?;
        assert!(cases > 0);
        Ok(())
    }
}
