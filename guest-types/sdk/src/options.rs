//! Key options: a JSON object in, typed fields out, and the complete object back.
//!
//! An [`Options`] type reads each of its fields from an [`OptionsReader`], which records
//! the value it settled on (given or default) so that the complete object comes back from
//! one description of the fields. Rules: an unknown option, a wrong type or an
//! out-of-range value is refused with `invalid_option`; `null` stands for the default (so a
//! `define` can reset an option the host merged in earlier).

use serde_json::Map;

use crate::cast::number_json;
use crate::{Json, Point, Refusal};

/// A key type's options, parsed.
pub trait Options: Sized + 'static {
    /// Reads every field from `reader` (which refuses what is left over).
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal>;

    /// The common resolution options, for the default store decision.
    fn resolution(&self) -> &Resolution;
}

/// Parses `json` into `O`, returning it with the complete options object as JSON text
/// (keys sorted, defaults filled in).
pub fn parse<O: Options>(json: &str) -> Result<(O, String), Refusal> {
    let mut reader = OptionsReader::new(json)?;
    let options = O::read(&mut reader)?;
    let complete = reader.finish()?;
    Ok((options, Json::Object(complete).to_string()))
}

/// Reads typed fields out of a JSON options object, recording the complete object.
#[derive(Debug)]
pub struct OptionsReader {
    /// The options as given, minus those read so far.
    given: Map<String, Json>,
    /// The options read so far, with defaults filled in.
    complete: Map<String, Json>,
    /// The names read so far, for the message about an unknown option.
    known: Vec<&'static str>,
}

impl OptionsReader {
    /// A reader over `json`, which must be a JSON object.
    pub fn new(json: &str) -> Result<Self, Refusal> {
        match serde_json::from_str::<Json>(json) {
            Ok(Json::Object(given)) => Ok(Self {
                given,
                complete: Map::new(),
                known: Vec::new(),
            }),
            Ok(other) => Err(Refusal::invalid_option(format!(
                "options must be a JSON object, got {}",
                kind(&other)
            ))),
            Err(e) => Err(Refusal::invalid_option(format!(
                "options are not JSON: {e}"
            ))),
        }
    }

    /// Takes option `name` out of the given ones; `None` when absent or `null`.
    fn take(&mut self, name: &'static str) -> Option<Json> {
        self.known.push(name);
        self.given.remove(name).filter(|v| !v.is_null())
    }

    /// A number satisfying `valid` (described by `expected`, e.g. "a number >= 0").
    /// Default = `default`.
    pub fn number(
        &mut self,
        name: &'static str,
        default: f64,
        expected: &str,
        valid: impl Fn(f64) -> bool,
    ) -> Result<f64, Refusal> {
        let value = match self.take(name) {
            None => default,
            Some(json) => match json.as_f64() {
                Some(n) if n.is_finite() && valid(n) => n,
                _ => return Err(wrong(name, expected, &json)),
            },
        };
        self.complete.insert(name.to_owned(), number_json(value));
        Ok(value)
    }

    /// A duration in seconds, a finite number >= 0. Default = `default`.
    pub fn seconds(&mut self, name: &'static str, default: f64) -> Result<f64, Refusal> {
        self.number(name, default, "a number of seconds >= 0", |n| n >= 0.0)
    }

    /// A duration in seconds, a finite number > 0. Default = `default`.
    pub fn positive_seconds(&mut self, name: &'static str, default: f64) -> Result<f64, Refusal> {
        self.number(name, default, "a number of seconds > 0", |n| n > 0.0)
    }

    /// One of `choices` (strings). Default = `default`.
    pub fn choice(
        &mut self,
        name: &'static str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, Refusal> {
        let value = match self.take(name) {
            None => default,
            Some(json) => match choices.iter().find(|c| json.as_str() == Some(**c)) {
                Some(choice) => choice,
                None => {
                    let expected = format!("one of {}", quoted(choices.iter().copied()));
                    return Err(wrong(name, &expected, &json));
                }
            },
        };
        self.complete.insert(name.to_owned(), Json::from(value));
        Ok(value)
    }

    /// An optional option of any shape: `parse` reads the given JSON into the value and the
    /// JSON the complete object shows for it, or `None` to refuse it as not `expected`.
    /// Default = `null` (absent).
    pub fn optional<T>(
        &mut self,
        name: &'static str,
        expected: &str,
        parse: impl FnOnce(&Json) -> Option<(T, Json)>,
    ) -> Result<Option<T>, Refusal> {
        let value = match self.take(name) {
            None => {
                self.complete.insert(name.to_owned(), Json::Null);
                return Ok(None);
            }
            Some(json) => match parse(&json) {
                Some((value, shown)) => {
                    self.complete.insert(name.to_owned(), shown);
                    value
                }
                None => return Err(wrong(name, expected, &json)),
            },
        };
        Ok(Some(value))
    }

    /// `null` or a non-empty list of strings. Default = `null`.
    pub fn string_list(&mut self, name: &'static str) -> Result<Option<Vec<String>>, Refusal> {
        let expected = "null or a non-empty list of strings";
        let value = match self.take(name) {
            None => None,
            Some(json) => {
                let list = json.as_array().filter(|items| !items.is_empty());
                let strings: Option<Vec<String>> = list.and_then(|items| {
                    items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect()
                });
                match strings {
                    Some(strings) => Some(strings),
                    None => return Err(wrong(name, expected, &json)),
                }
            }
        };
        let json = match &value {
            None => Json::Null,
            Some(list) => Json::from(list.clone()),
        };
        self.complete.insert(name.to_owned(), json);
        Ok(value)
    }

    /// The complete options object, or `invalid_option` for an option nobody read.
    pub fn finish(self) -> Result<Map<String, Json>, Refusal> {
        match self.given.keys().next() {
            None => Ok(self.complete),
            Some(unknown) => Err(Refusal::invalid_option(format!(
                "unknown option {unknown:?}; known options: {}",
                self.known.join(", ")
            ))),
        }
    }
}

/// The refusal for option `name` holding `got` instead of `expected`.
fn wrong(name: &str, expected: &str, got: &Json) -> Refusal {
    Refusal::invalid_option(format!(
        "option {name:?} must be {expected}, got {}",
        kind(got)
    ))
}

/// Names a JSON value for messages: its kind, and the value when short.
fn kind(json: &Json) -> String {
    let text = json.to_string();
    let what = match json {
        Json::Null => return "null".to_owned(),
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "object",
    };
    if text.len() <= 40 {
        format!("{what} {text}")
    } else {
        what.to_owned()
    }
}

/// `"a", "b"`.
pub(crate) fn quoted<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The resolution options every built-in type has, and the store decision they make.
///
/// Given the key's latest stored point `p` and a new point at `t`: a backfill (`t <
/// p.time`) is stored; the same value less than `same_value_resolution` after `p` is not;
/// any value less than `min_resolution` after `p` is not; everything else is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolution {
    /// `same_value_resolution`: seconds within which a repeat of the latest value is not
    /// stored. Default = 0.
    pub same_value: f64,
    /// `min_resolution`: seconds within which no new value is stored. Default = 0.
    pub min: f64,
}

impl Resolution {
    /// Reads `same_value_resolution` and `min_resolution`.
    pub fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
        Ok(Self {
            same_value: reader.seconds("same_value_resolution", 0.0)?,
            min: reader.seconds("min_resolution", 0.0)?,
        })
    }

    /// The full store decision.
    pub fn should_store(&self, previous: Option<&Point>, point: &Point) -> bool {
        !(self.is_close_repeat(previous, point) || self.is_too_soon(previous, point))
    }

    /// Whether `point` repeats `previous`'s value less than `same_value_resolution` after
    /// it (never for a backfill).
    pub fn is_close_repeat(&self, previous: Option<&Point>, point: &Point) -> bool {
        previous.is_some_and(|p| {
            point.time >= p.time && p.value == point.value && point.time - p.time < self.same_value
        })
    }

    /// Whether `point` comes less than `min_resolution` after `previous` (never for a
    /// backfill).
    pub fn is_too_soon(&self, previous: Option<&Point>, point: &Point) -> bool {
        previous.is_some_and(|p| point.time >= p.time && point.time - p.time < self.min)
    }
}

impl Options for Resolution {
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
        Resolution::read(reader)
    }

    fn resolution(&self) -> &Resolution {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn point(time: f64, value: f64) -> Point {
        Point {
            time,
            value: Value::Number(value),
        }
    }

    #[test]
    fn parse_fills_defaults_and_sorts_keys() {
        let (resolution, complete) = parse::<Resolution>("{}").expect("empty is valid");
        assert_eq!(resolution, Resolution::default());
        assert_eq!(
            complete,
            r#"{"min_resolution":0,"same_value_resolution":0}"#
        );
        let (resolution, _) =
            parse::<Resolution>(r#"{"min_resolution": 5, "same_value_resolution": null}"#)
                .expect("valid");
        assert_eq!(resolution.min, 5.0);
        assert_eq!(resolution.same_value, 0.0);
    }

    #[test]
    fn parse_refuses_unknown_wrong_type_and_range() {
        for bad in [
            r#"{"max_time": 3}"#,
            r#"{"min_resolution": "5"}"#,
            r#"{"min_resolution": -1}"#,
            r#"{"same_value_resolution": true}"#,
            "[]",
            "nope",
        ] {
            let refusal = parse::<Resolution>(bad).expect_err(bad);
            assert_eq!(refusal.code, "invalid_option", "{bad}");
        }
        let refusal = parse::<Resolution>(r#"{"min_resolution": "5"}"#).expect_err("string");
        assert!(
            refusal.message.contains("min_resolution") && refusal.message.contains("string"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn reader_choice_and_list() -> Result<(), Refusal> {
        let mut reader = OptionsReader::new(r#"{"mode": "log", "allowed": ["a", "b"]}"#)?;
        assert_eq!(reader.choice("mode", &["state", "log"], "state")?, "log");
        assert_eq!(
            reader.string_list("allowed")?,
            Some(vec!["a".into(), "b".into()])
        );
        reader.finish()?;
        for bad in [
            r#"{"allowed": []}"#,
            r#"{"allowed": [1]}"#,
            r#"{"allowed": "a"}"#,
        ] {
            let mut reader = OptionsReader::new(bad)?;
            assert!(reader.string_list("allowed").is_err(), "{bad}");
        }
        let mut reader = OptionsReader::new(r#"{"mode": "loud"}"#)?;
        assert!(reader.choice("mode", &["state", "log"], "state").is_err());
        Ok(())
    }

    #[test]
    fn store_decision_follows_resolution_rules() {
        let r = Resolution {
            same_value: 10.0,
            min: 2.0,
        };
        let p = point(100.0, 1.0);
        assert!(r.should_store(None, &point(0.0, 1.0)), "first point");
        assert!(r.should_store(Some(&p), &point(50.0, 1.0)), "backfill");
        assert!(
            !r.should_store(Some(&p), &point(105.0, 1.0)),
            "close repeat"
        );
        assert!(
            r.should_store(Some(&p), &point(110.0, 1.0)),
            "repeat after resolution"
        );
        assert!(!r.should_store(Some(&p), &point(101.0, 2.0)), "too soon");
        assert!(r.should_store(Some(&p), &point(102.0, 2.0)), "late enough");
        let defaults = Resolution::default();
        assert!(
            defaults.should_store(Some(&p), &point(100.0, 1.0)),
            "defaults store all"
        );
    }
}
