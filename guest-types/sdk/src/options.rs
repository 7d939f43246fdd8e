//! Key options: a JSON object in, typed fields out, the complete object back, and a compact
//! binary encoding for every later call.
//!
//! An [`Options`] type reads each of its fields from an [`OptionsReader`]. Reading from the
//! JSON a client gave (in `check-options`), the reader records the value it settled on
//! (given or default) twice: into the complete JSON object shown to clients, and into a
//! compact encoding (the `encoded-options` of the WIT) that the host hands back to every
//! later call about the key. Reading from that encoding replays the same [`Options::read`]
//! without any JSON: a number is 8 bytes, a choice 1 byte. So one description of the fields
//! gives validation, defaults, the complete object and a per-call decoding that costs next
//! to nothing, and an author writes no encoder.
//!
//! Rules for the JSON: an unknown option, a wrong type or an out-of-range value is refused
//! with `invalid_option`; `null` stands for the default (so a `define` can reset an option
//! the host merged in earlier).
//!
//! ```
//! use komoku_guest::{Options, OptionsReader, Refusal, Resolution};
//! use komoku_guest::options::{decode, parse};
//!
//! struct Percent { resolution: Resolution, deadband: f64 }
//!
//! impl Options for Percent {
//!     fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
//!         Ok(Percent {
//!             resolution: Resolution::read(reader)?,
//!             deadband: reader.number("deadband", 0.0, "a number >= 0", |n| n >= 0.0)?,
//!         })
//!     }
//!     fn resolution(&self) -> &Resolution { &self.resolution }
//! }
//!
//! let (parsed, json, encoded) = parse::<Percent>(r#"{"deadband": 0.5}"#)?;
//! assert_eq!(json, r#"{"deadband":0.5,"min_resolution":0,"same_value_resolution":0}"#);
//! assert_eq!(encoded.len(), 25); // a tag byte and three f64s
//! assert_eq!(decode::<Percent>(&encoded)?.deadband, parsed.deadband);
//! # Ok::<(), Refusal>(())
//! ```

use serde_json::Map;

use crate::cast::number_json;
use crate::summary::{Reader, Writer};
use crate::{Json, Point, Refusal};

/// A key type's options, parsed.
pub trait Options: Sized + 'static {
    /// Reads every field from `reader` (which refuses what is left over). Read the same
    /// fields in the same order every time: the encoding replays this function.
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal>;

    /// The common resolution options, for the default store decision.
    fn resolution(&self) -> &Resolution;
}

/// The first byte of an options encoding (format version 1).
const ENCODING_TAG: u8 = b'O';

/// Parses `json` into `O`: the options, the complete options object as JSON text (keys
/// sorted, defaults filled in) and their compact encoding (for [`decode`]).
pub fn parse<O: Options>(json: &str) -> Result<(O, String, Vec<u8>), Refusal> {
    let mut reader = OptionsReader::new(json)?;
    let options = O::read(&mut reader)?;
    let (complete, encoded) = reader.finish_encoded()?;
    Ok((options, Json::Object(complete).to_string(), encoded))
}

/// The options [`parse`] encoded: replays [`Options::read`] over the bytes, no JSON.
pub fn decode<O: Options>(encoded: &[u8]) -> Result<O, Refusal> {
    let reader = Reader::new(encoded, ENCODING_TAG).map_err(|e| bad_encoding(&e))?;
    let mut reader = OptionsReader {
        source: Source::Encoded(reader),
    };
    let options = O::read(&mut reader)?;
    match reader.source {
        Source::Encoded(r) => r.finish().map_err(|e| bad_encoding(&e))?,
        Source::Json { .. } => unreachable!("decode reads an encoding"),
    }
    Ok(options)
}

fn bad_encoding(e: &dyn std::fmt::Display) -> Refusal {
    Refusal::invalid_option(format!(
        "encoded options do not decode ({e}); the host must pass what check-options returned"
    ))
}

/// Reads typed fields out of a JSON options object (recording the complete object and the
/// encoding), or out of an encoding made that way.
#[derive(Debug)]
pub struct OptionsReader<'a> {
    source: Source<'a>,
}

#[derive(Debug)]
enum Source<'a> {
    Json {
        /// The options as given, minus those read so far.
        given: Map<String, Json>,
        /// The options read so far, with defaults filled in.
        complete: Map<String, Json>,
        /// The names read so far, for the message about an unknown option.
        known: Vec<&'static str>,
        /// The encoding of what was read so far.
        encoded: Writer,
    },
    Encoded(Reader<'a>),
}

impl OptionsReader<'static> {
    /// A reader over `json`, which must be a JSON object.
    pub fn new(json: &str) -> Result<Self, Refusal> {
        match serde_json::from_str::<Json>(json) {
            Ok(Json::Object(given)) => Ok(Self {
                source: Source::Json {
                    given,
                    complete: Map::new(),
                    known: Vec::new(),
                    encoded: Writer::new(ENCODING_TAG),
                },
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
}

impl OptionsReader<'_> {
    /// Reads one field: from JSON, `json` settles the value (given the given JSON, `None`
    /// when absent or `null`) and returns it with the JSON shown and how to encode it; from
    /// an encoding, `replay` reads it back.
    fn field<T>(
        &mut self,
        name: &'static str,
        json: impl FnOnce(Option<Json>) -> Result<(T, Json), Refusal>,
        encode: impl FnOnce(&T, &mut Writer),
        replay: impl FnOnce(&mut Reader<'_>) -> Result<T, crate::summary::DecodeError>,
    ) -> Result<T, Refusal> {
        match &mut self.source {
            Source::Json {
                given,
                complete,
                known,
                encoded,
            } => {
                known.push(name);
                let taken = given.remove(name).filter(|v| !v.is_null());
                let (value, shown) = json(taken)?;
                complete.insert(name.to_owned(), shown);
                encode(&value, encoded);
                Ok(value)
            }
            Source::Encoded(reader) => replay(reader).map_err(|e| bad_encoding(&e)),
        }
    }

    /// A number satisfying `valid` (described by `expected`, e.g. "a number >= 0").
    /// Default = `default`. Encoded as 8 bytes.
    pub fn number(
        &mut self,
        name: &'static str,
        default: f64,
        expected: &str,
        valid: impl Fn(f64) -> bool,
    ) -> Result<f64, Refusal> {
        self.field(
            name,
            |given| {
                let value = match given {
                    None => default,
                    Some(json) => match json.as_f64() {
                        Some(n) if n.is_finite() && valid(n) => n,
                        _ => return Err(wrong(name, expected, &json)),
                    },
                };
                Ok((value, number_json(value)))
            },
            |n, w| w.f64(*n),
            |r| r.f64(),
        )
    }

    /// A duration in seconds, a finite number >= 0. Default = `default`.
    pub fn seconds(&mut self, name: &'static str, default: f64) -> Result<f64, Refusal> {
        self.number(name, default, "a number of seconds >= 0", |n| n >= 0.0)
    }

    /// A duration in seconds, a finite number > 0. Default = `default`.
    pub fn positive_seconds(&mut self, name: &'static str, default: f64) -> Result<f64, Refusal> {
        self.number(name, default, "a number of seconds > 0", |n| n > 0.0)
    }

    /// One of `choices` (strings). Default = `default`. Encoded as 1 byte.
    pub fn choice(
        &mut self,
        name: &'static str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, Refusal> {
        let index = self.field(
            name,
            |given| {
                let index = match given {
                    None => choices.iter().position(|c| *c == default).unwrap_or(0),
                    Some(json) => match choices.iter().position(|c| json.as_str() == Some(*c)) {
                        Some(index) => index,
                        None => {
                            let expected = format!("one of {}", quoted(choices.iter().copied()));
                            return Err(wrong(name, &expected, &json));
                        }
                    },
                };
                Ok((
                    index,
                    Json::from(choices.get(index).copied().unwrap_or(default)),
                ))
            },
            |index, w| w.varint(*index as u64),
            |r| r.varint().map(|i| i as usize),
        )?;
        Ok(choices.get(index).copied().unwrap_or(default))
    }

    /// An optional option of any shape: `parse` reads the given JSON into the value and the
    /// JSON the complete object shows for it, or `None` to refuse it as not `expected`.
    /// Default = `null` (absent). Encoded as the given JSON text, parsed again when decoded:
    /// prefer the typed readers for options read on every call.
    pub fn optional<T>(
        &mut self,
        name: &'static str,
        expected: &str,
        parse: impl Fn(&Json) -> Option<(T, Json)>,
    ) -> Result<Option<T>, Refusal> {
        let parse = &parse;
        let text = self.field(
            name,
            |given| match given {
                None => Ok((None, Json::Null)),
                Some(json) => match parse(&json) {
                    Some((_, shown)) => Ok((Some(json.to_string()), shown)),
                    None => Err(wrong(name, expected, &json)),
                },
            },
            |text: &Option<String>, w| match text {
                None => w.u8(0),
                Some(text) => {
                    w.u8(1);
                    w.text(text);
                }
            },
            |r| match r.u8()? {
                0 => Ok(None),
                _ => r.text().map(Some),
            },
        )?;
        let Some(text) = text else {
            return Ok(None);
        };
        let json: Json = serde_json::from_str(&text).map_err(|e| bad_encoding(&e))?;
        parse(&json)
            .map(|(value, _)| Some(value))
            .ok_or_else(|| wrong(name, expected, &json))
    }

    /// `null` or a non-empty list of strings. Default = `null`.
    pub fn string_list(&mut self, name: &'static str) -> Result<Option<Vec<String>>, Refusal> {
        self.field(
            name,
            |given| {
                let expected = "null or a non-empty list of strings";
                let value = match given {
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
                let shown = match &value {
                    None => Json::Null,
                    Some(list) => Json::from(list.clone()),
                };
                Ok((value, shown))
            },
            |value: &Option<Vec<String>>, w| match value {
                None => w.varint(0),
                Some(list) => {
                    w.varint(list.len() as u64);
                    for item in list {
                        w.text(item);
                    }
                }
            },
            |r| {
                let n = r.varint()?;
                if n == 0 {
                    return Ok(None);
                }
                (0..n)
                    .map(|_| r.text())
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            },
        )
    }

    /// The complete options object, or `invalid_option` for an option nobody read.
    pub fn finish(self) -> Result<Map<String, Json>, Refusal> {
        self.finish_encoded().map(|(complete, _)| complete)
    }

    /// [`OptionsReader::finish`], and the encoding.
    fn finish_encoded(self) -> Result<(Map<String, Json>, Vec<u8>), Refusal> {
        match self.source {
            Source::Json {
                given,
                complete,
                known,
                encoded,
            } => match given.keys().next() {
                None => Ok((complete, encoded.finish())),
                Some(unknown) => Err(Refusal::invalid_option(format!(
                    "unknown option {unknown:?}; known options: {}",
                    known.join(", ")
                ))),
            },
            Source::Encoded(_) => Err(Refusal::invalid_option(
                "an encoding has no JSON to finish".to_owned(),
            )),
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
    pub fn read(reader: &mut OptionsReader<'_>) -> Result<Self, Refusal> {
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
        let (resolution, complete, encoded) = parse::<Resolution>("{}").expect("empty is valid");
        assert_eq!(decode::<Resolution>(&encoded), Ok(Resolution::default()));
        assert_eq!(resolution, Resolution::default());
        assert_eq!(
            complete,
            r#"{"min_resolution":0,"same_value_resolution":0}"#
        );
        let (resolution, _, encoded) =
            parse::<Resolution>(r#"{"min_resolution": 5, "same_value_resolution": null}"#)
                .expect("valid");
        assert_eq!(decode::<Resolution>(&encoded).as_ref(), Ok(&resolution));
        assert!(decode::<Resolution>(&encoded[..5]).is_err(), "cut short");
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

    /// Every reader's value comes back from the encoding, with no JSON.
    #[test]
    fn every_reader_round_trips_through_the_encoding() -> Result<(), Refusal> {
        #[derive(Debug, PartialEq)]
        struct All {
            resolution: Resolution,
            mode: &'static str,
            allowed: Option<Vec<String>>,
            bound: Option<f64>,
        }
        impl Options for All {
            fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
                Ok(All {
                    resolution: Resolution::read(reader)?,
                    mode: reader.choice("mode", &["state", "log"], "state")?,
                    allowed: reader.string_list("allowed")?,
                    bound: reader
                        .optional("bound", "a number", |j| j.as_f64().map(|n| (n, j.clone())))?,
                })
            }
            fn resolution(&self) -> &Resolution {
                &self.resolution
            }
        }
        for json in [
            "{}",
            r#"{"mode": "log", "allowed": ["a", "b"], "bound": 2.5, "min_resolution": 3}"#,
        ] {
            let (parsed, _, encoded) = parse::<All>(json)?;
            assert_eq!(decode::<All>(&encoded)?, parsed, "{json}");
        }
        assert!(decode::<All>(b"X").is_err(), "another tag");
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
