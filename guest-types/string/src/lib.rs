//! The `string` key type: text, kept as states or as a log.
//!
//! Text is stored as is; numbers as their JSON text (`3` → `"3"`, `2.5` → `"2.5"`),
//! booleans as `"true"`/`"false"`; `null` is refused with `invalid_value`. Options:
//! - `allowed`: `null` (default, anything goes) or a non-empty list of strings; a value
//!   outside it is refused with `value_not_allowed`, naming the allowed set;
//! - `mode`: `"state"` (default: the key is in one state at a time, summarised as time per
//!   state) or `"log"` (every put is an entry: repeats are stored whatever
//!   `same_value_resolution` says, and summaries count entries);
//! - `sample` (log mode): how many entries each bucket's summary keeps as a sample, 0 to
//!   100 (default 0, none); they outlive the raw points when history is compacted;
//! - `same_value_resolution`, `min_resolution`.
//!
//! Figures: `time_per_state` (an object, overflowed states under `"(other)"`),
//! `transitions`, `count`, `first`, `last`, `coverage_seconds`, `sample`. Log summaries know
//! only `count`, `first`, `last` and `sample` (a list of `{"time", "value"}`, `null` without
//! the option), the others render as `null`; state summaries render `sample` as `null`.
//! Default figure: the state with the most time (state mode), the last entry (log mode).

use komoku_guest::serde_json::json;
use komoku_guest::summary::{
    Bucket, DecodeError, Figures, LogSummary, MAX_SAMPLE, StateSummary, Summary,
};
use komoku_guest::{
    Input, Json, KeyType, OpKind, Options, OptionsReader, Point, Refusal, Resolution, Value, cast,
    codes, export_key_type,
};

/// Text states or a text log.
pub struct Text;

/// How a string key keeps its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One state at a time; repeats are subject to `same_value_resolution`.
    State,
    /// Every put is an entry.
    Log,
}

/// String options.
#[derive(Clone, Debug, PartialEq)]
pub struct StringOptions {
    /// `same_value_resolution` and `min_resolution`.
    pub resolution: Resolution,
    /// `allowed`: the only values accepted, if set. Default = any.
    pub allowed: Option<Vec<String>>,
    /// `mode`: `"state"` or `"log"`. Default = state.
    pub mode: Mode,
    /// `sample`: entries kept per bucket summary as a sample (log mode). Default = 0.
    pub sample: u32,
}

impl Options for StringOptions {
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
        let resolution = Resolution::read(reader)?;
        let allowed = reader.string_list("allowed")?;
        let mode = match reader.choice("mode", &["state", "log"], "state")? {
            "log" => Mode::Log,
            _ => Mode::State,
        };
        let expected = format!("a whole number of entries from 0 to {MAX_SAMPLE}");
        let sample = reader.number("sample", 0.0, &expected, |n| {
            n.fract() == 0.0 && (0.0..=f64::from(MAX_SAMPLE)).contains(&n)
        })? as u32;
        if sample > 0 && mode != Mode::Log {
            return Err(Refusal::invalid_option(
                "sample keeps log entries: it needs \"mode\": \"log\"",
            ));
        }
        Ok(Self {
            resolution,
            allowed,
            mode,
            sample,
        })
    }

    fn resolution(&self) -> &Resolution {
        &self.resolution
    }
}

/// A string key's summary: time per state, or a log's count (after a switch to log mode,
/// merging both kinds gives a log summary).
#[derive(Clone, Debug, PartialEq)]
pub enum StringSummary {
    /// State mode (tag `S`, [`StateSummary<String>`]).
    States(StateSummary<String>),
    /// Log mode (tag `L`, [`LogSummary`]).
    Log(LogSummary),
}

impl StringSummary {
    /// The log view of this summary.
    fn into_log(self) -> LogSummary {
        match self {
            Self::States(states) => states.into(),
            Self::Log(log) => log,
        }
    }
}

/// The state figures, then the log's `sample`.
const FIGURES: &[&str] = &[
    "time_per_state",
    "transitions",
    "count",
    "first",
    "last",
    "coverage_seconds",
    "sample",
];

impl Summary<StringOptions> for StringSummary {
    fn empty() -> Self {
        Self::States(StateSummary::new())
    }

    /// State mode: time per state; log mode: the entries, sampled as the key says.
    fn from_bucket(bucket: &Bucket<'_>, options: &StringOptions) -> Self {
        match options.mode {
            Mode::State => Self::States(StateSummary::from_bucket(bucket)),
            Mode::Log => Self::Log(LogSummary::sampled(bucket, options.sample)),
        }
    }

    fn merge(self, next: Self, _options: &StringOptions) -> Self {
        match (self, next) {
            (Self::States(a), Self::States(b)) => Self::States(a.merge(b)),
            (a, b) => Self::Log(a.into_log().merge(b.into_log())),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Self::States(states) => states.encode(),
            Self::Log(log) => log.encode(),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(b'L') => LogSummary::decode(bytes).map(Self::Log),
            _ => StateSummary::decode(bytes).map(Self::States),
        }
    }

    fn figures(&self, _options: &StringOptions, out: &mut Figures<'_>) {
        for name in FIGURES {
            out.add(name, || {
                match self {
                    Self::States(states) => states.figure(name),
                    Self::Log(log) => log.figure(name),
                }
                .unwrap_or(Json::Null)
            });
        }
    }

    fn default_figure(&self, _options: &StringOptions) -> Json {
        match self {
            Self::States(states) => states.default_figure(),
            Self::Log(log) => log.default_figure(),
        }
    }
}

impl KeyType for Text {
    const NAME: &'static str = "string";
    const DESCRIPTION: &'static str =
        "Text (numbers and booleans as their JSON text), kept as states or as a log";

    type Options = StringOptions;
    type Summary = StringSummary;

    /// States (armed, away, ...) change rarely and logs are read entry by entry: raw points
    /// 90 days; then 1-hour summaries 2 years (time per state and transitions, or the
    /// entries' count, first and last), 1-day summaries forever.
    fn default_retention() -> Option<Json> {
        Some(json!({"raw": "90d", "tiers": [["1H", "2y"], ["1d", null]]}))
    }

    /// Claims any text (1); boolean claims `"true"`/`"false"` more strongly.
    fn guess(sample: &Input) -> u8 {
        match sample {
            Input::Text(_) => 1,
            _ => 0,
        }
    }

    fn cast(options: &StringOptions, input: Input) -> Result<Value, Refusal> {
        let text = match input {
            Input::Text(text) => text,
            other => cast::text(Self::NAME, &other)?,
        };
        if let Some(allowed) = &options.allowed
            && !allowed.contains(&text)
        {
            let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            return Err(Refusal::new(
                codes::VALUE_NOT_ALLOWED,
                format!(
                    "{} is not allowed; allowed values: {}",
                    cast::describe(&Input::Text(text)),
                    quoted.join(", ")
                ),
            ));
        }
        Ok(Value::Text(text))
    }

    /// Log mode stores repeats (only `min_resolution` applies); state mode is the default.
    fn should_store(
        options: &StringOptions,
        previous: Option<&Point>,
        point: &Point,
        _kind: OpKind,
    ) -> bool {
        match options.mode {
            Mode::State => options.resolution.should_store(previous, point),
            Mode::Log => !options.resolution.is_too_soon(previous, point),
        }
    }
}

export_key_type!(Text);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::serde_json::json;
    use komoku_guest::testing::{point, rendered};
    use komoku_guest::world::json::{apply, check_options, guess, info, merge, render, summarize};
    use komoku_guest::{Operation, Outcome};

    fn put(
        options: &str,
        previous: Option<Point>,
        input: Input,
        time: f64,
    ) -> Result<Outcome, Refusal> {
        apply::<Text>(options.to_owned(), previous, Operation::Set(input), time)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    fn defaults() -> String {
        info::<Text>("0").default_options
    }

    #[test]
    fn defaults_and_guess() {
        assert_eq!(
            defaults(),
            r#"{"allowed":null,"min_resolution":0,"mode":"state","same_value_resolution":0,"sample":0}"#
        );
        assert_eq!(guess::<Text>(Input::Text("oink".into())), 1);
        assert_eq!(guess::<Text>(Input::Number(1.0)), 0);
    }

    #[test]
    fn cast_stores_scalars_as_text() -> Result<(), Refusal> {
        let d = defaults();
        assert_eq!(
            put(&d, None, Input::Text("oink".into()), 1.0)?.value,
            text("oink")
        );
        assert_eq!(put(&d, None, Input::Number(3.0), 1.0)?.value, text("3"));
        assert_eq!(put(&d, None, Input::Number(2.5), 1.0)?.value, text("2.5"));
        assert_eq!(
            put(&d, None, Input::Boolean(true), 1.0)?.value,
            text("true")
        );
        assert_eq!(
            put(&d, None, Input::Null, 1.0).expect_err("null").code,
            "invalid_value"
        );
        Ok(())
    }

    #[test]
    fn allowed_restricts_values() -> Result<(), Refusal> {
        let options = check_options::<Text>(r#"{"allowed": ["on", "off", "3"]}"#.into())?;
        assert_eq!(
            put(&options, None, Input::Text("on".into()), 1.0)?.value,
            text("on")
        );
        assert_eq!(
            put(&options, None, Input::Number(3.0), 1.0)?.value,
            text("3")
        );
        let refusal = put(&options, None, Input::Text("dim".into()), 1.0).expect_err("not allowed");
        assert_eq!(refusal.code, "value_not_allowed");
        assert!(
            refusal.message.contains(r#""on", "off", "3""#),
            "{}",
            refusal.message
        );
        for bad in [
            r#"{"allowed": []}"#,
            r#"{"allowed": [1]}"#,
            r#"{"mode": "loud"}"#,
            r#"{"colour": 1}"#,
        ] {
            assert_eq!(
                check_options::<Text>(bad.into()).expect_err(bad).code,
                "invalid_option"
            );
        }
        Ok(())
    }

    #[test]
    fn log_mode_stores_repeats() -> Result<(), Refusal> {
        let previous = || Some(point(100.0, text("x")));
        let state = check_options::<Text>(r#"{"same_value_resolution": 60}"#.into())?;
        assert!(!put(&state, previous(), Input::Text("x".into()), 110.0)?.store);
        let log = check_options::<Text>(r#"{"same_value_resolution": 60, "mode": "log"}"#.into())?;
        assert!(put(&log, previous(), Input::Text("x".into()), 110.0)?.store);
        let log_min = check_options::<Text>(r#"{"min_resolution": 60, "mode": "log"}"#.into())?;
        assert!(!put(&log_min, previous(), Input::Text("y".into()), 110.0)?.store);
        Ok(())
    }

    #[test]
    fn render_state_mode() -> Result<(), Refusal> {
        let d = defaults();
        let points = [
            point(0.0, text("idle")),
            point(2.0, text("busy")),
            point(9.0, text("idle")),
        ];
        assert_eq!(
            rendered::<Text>(&d, &[0.0, 10.0, 20.0], None, &points, &[])?,
            json!(["busy", "idle"])
        );
        assert_eq!(
            rendered::<Text>(
                &d,
                &[0.0, 10.0],
                None,
                &points,
                &[
                    "time_per_state",
                    "transitions",
                    "count",
                    "first",
                    "last",
                    "coverage_seconds"
                ]
            )?,
            json!([{
                "time_per_state": {"idle": 3, "busy": 7},
                "transitions": 2,
                "count": 3,
                "first": {"time": 0, "value": "idle"},
                "last": {"time": 9, "value": "idle"},
                "coverage_seconds": 10,
            }])
        );
        assert_eq!(
            rendered::<Text>(&d, &[0.0, 10.0], None, &[], &[])?,
            json!([null])
        );
        assert_eq!(
            rendered::<Text>(&d, &[0.0, 10.0], None, &points, &["mean"])
                .expect_err("unknown")
                .code,
            "unknown_figure"
        );
        Ok(())
    }

    #[test]
    fn render_log_mode() -> Result<(), Refusal> {
        let log = check_options::<Text>(r#"{"mode": "log"}"#.into())?;
        let points = [
            point(1.0, text("a")),
            point(2.0, text("a")),
            point(3.0, text("b")),
        ];
        assert_eq!(
            rendered::<Text>(&log, &[0.0, 10.0, 20.0], None, &points, &[])?,
            json!(["b", null])
        );
        assert_eq!(
            rendered::<Text>(
                &log,
                &[0.0, 10.0],
                None,
                &points,
                &["count", "first", "transitions"]
            )?,
            json!([{"count": 3, "first": {"time": 1, "value": "a"}, "transitions": null}])
        );
        // Without the option no sample is kept: `null`, not an empty list.
        assert_eq!(
            rendered::<Text>(&log, &[0.0, 10.0], None, &points, &["sample"])?,
            json!([{"sample": null}])
        );
        Ok(())
    }

    #[test]
    fn a_log_keeps_a_sample_when_asked() -> Result<(), Refusal> {
        let log = check_options::<Text>(r#"{"mode": "log", "sample": 2}"#.into())?;
        let points: Vec<Point> = (0..50)
            .map(|i| point(f64::from(i), text(&format!("entry {i}"))))
            .collect();
        let answer = rendered::<Text>(&log, &[0.0, 50.0], None, &points, &["sample"])?;
        let sample = answer[0]["sample"].as_array().cloned().unwrap_or_default();
        assert_eq!(sample.len(), 2, "{answer}");
        // A state key keeps no log sample; a sample is bounded.
        for bad in [
            r#"{"sample": 2}"#,
            r#"{"mode": "log", "sample": 101}"#,
            r#"{"mode": "log", "sample": 1.5}"#,
        ] {
            let refused = check_options::<Text>(bad.into()).expect_err(bad);
            assert_eq!(refused.code, "invalid_option", "{bad}");
        }
        Ok(())
    }

    #[test]
    fn merging_state_and_log_summaries_gives_a_log() -> Result<(), Refusal> {
        let state = defaults();
        let log = check_options::<Text>(r#"{"mode": "log"}"#.into())?;
        let mut parts =
            summarize::<Text>(state, vec![0.0, 10.0], None, vec![point(1.0, text("a"))]);
        parts.extend(summarize::<Text>(
            log.clone(),
            vec![10.0, 20.0],
            None,
            vec![point(11.0, text("b"))],
        ));
        let merged = merge::<Text>(log.clone(), parts);
        assert_eq!(merged[0], b'L');
        assert_eq!(
            render::<Text>(log, vec![merged], vec!["count".into()])?,
            r#"[{"count":2}]"#
        );
        Ok(())
    }

    /// The SDK's conformance vectors, through this type as the host calls it: state mode
    /// gives the text-state summaries, log mode the log ones, with the case's `sample`.
    #[test]
    fn conformance_vectors_of_state_and_log_mode() -> Result<(), String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
        let states = komoku_guest::testing::run_vectors::<Text>(&dir, "text-state.json", |_| {
            r#"{"mode": "state"}"#.to_owned()
        })?;
        let logs = komoku_guest::testing::run_vectors::<Text>(&dir, "log.json", |case| {
            let sample = case["options"]["sample"].as_u64().unwrap_or(0);
            format!(r#"{{"mode": "log", "sample": {sample}}}"#)
        })?;
        assert!(states > 0 && logs > 0);
        Ok(())
    }
}
