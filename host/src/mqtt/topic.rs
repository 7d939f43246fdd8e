//! Topic filters, key and topic templates, and payloads: pure logic, no I/O.

use serde_json::Value as Json;

/// One level of a topic filter.
#[derive(Debug, Clone, PartialEq)]
enum Level {
    Exact(String),
    /// `+`
    One,
    /// `#` (always last)
    Rest,
}

/// An MQTT topic filter (`tele/+/SENSOR`, `zigbee2mqtt/#`).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    text: String,
    levels: Vec<Level>,
}

impl Filter {
    /// Checks the filter as a broker would: `+` and `#` only as whole levels, `#` last.
    pub fn parse(text: &str) -> anyhow::Result<Filter> {
        if text.is_empty() {
            anyhow::bail!("a topic filter cannot be empty");
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            levels.push(match *part {
                "+" => Level::One,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => anyhow::bail!("`#` must be the last level of {text:?}"),
                p if p.contains(['+', '#']) => {
                    anyhow::bail!("`+` and `#` must be whole levels in {text:?}")
                }
                p => Level::Exact(p.to_string()),
            });
        }
        Ok(Filter {
            text: text.to_string(),
            levels,
        })
    }

    /// The filter as written (what is subscribed to).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// How many wildcards the filter has (the `{N}` a key template may use).
    pub fn wildcards(&self) -> usize {
        self.levels
            .iter()
            .filter(|l| !matches!(l, Level::Exact(_)))
            .count()
    }

    /// What the wildcards matched, in order, if `topic` matches (`#` gives the rest of the
    /// topic with `/` turned into `.`). Topics starting with `$` match no leading wildcard,
    /// as brokers do.
    pub fn captures(&self, topic: &str) -> Option<Vec<String>> {
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return None;
        }
        let mut parts = topic.split('/');
        let mut out = Vec::new();
        for level in &self.levels {
            match level {
                Level::Exact(want) => {
                    if parts.next()? != want {
                        return None;
                    }
                }
                Level::One => out.push(parts.next()?.to_string()),
                Level::Rest => {
                    out.push(parts.collect::<Vec<_>>().join("."));
                    return Some(out);
                }
            }
        }
        parts.next().is_none().then_some(out)
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// `{N}`: the Nth wildcard's match (from 1).
    Capture(usize),
    /// `{field}`
    Field,
    /// `{key}`
    Key,
    /// `{path}`: the key with `.` turned into `/`.
    Path,
}

/// A key template (`zigbee.{1}.{field}`) or a topic template (`komoku/{path}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// A key template for a filter with `wildcards` wildcards; `{field}` only with `fields`.
    pub fn ingest(text: &str, wildcards: usize, fields: bool) -> anyhow::Result<Template> {
        let t = Self::parse(text)?;
        for piece in &t.pieces {
            match piece {
                Piece::Capture(n) if *n == 0 || *n > wildcards => anyhow::bail!(
                    "{{{n}}} in {text:?}: the topic filter has {wildcards} wildcard(s)"
                ),
                Piece::Field if !fields => {
                    anyhow::bail!("{{field}} in {text:?} needs `fields`")
                }
                Piece::Key | Piece::Path => {
                    anyhow::bail!("{{key}} and {{path}} are for publish topics, not keys")
                }
                _ => {}
            }
        }
        Ok(t)
    }

    /// A topic template for publishing a key: `{key}` and `{path}` only.
    pub fn publish(text: &str) -> anyhow::Result<Template> {
        let t = Self::parse(text)?;
        if t.pieces
            .iter()
            .any(|p| matches!(p, Piece::Capture(_) | Piece::Field))
        {
            anyhow::bail!("a publish topic takes {{key}} and {{path}} only: {text:?}");
        }
        Ok(t)
    }

    fn parse(text: &str) -> anyhow::Result<Template> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| anyhow::anyhow!("unclosed `{{` in {text:?}"))?;
            let name = &rest[open + 1..open + close];
            pieces.push(match name {
                "field" => Piece::Field,
                "key" => Piece::Key,
                "path" => Piece::Path,
                n => Piece::Capture(
                    n.parse()
                        .map_err(|_| anyhow::anyhow!("unknown placeholder {{{n}}} in {text:?}"))?,
                ),
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            anyhow::bail!("a template cannot be empty");
        }
        Ok(Template { pieces })
    }

    /// Whether the template names the field.
    pub fn has_field(&self) -> bool {
        self.pieces.contains(&Piece::Field)
    }

    /// Fills in a key template.
    pub fn key(&self, captures: &[String], field: &str) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Capture(n) => {
                    out.push_str(captures.get(n - 1).map(String::as_str).unwrap_or_default())
                }
                Piece::Field => out.push_str(field),
                Piece::Key | Piece::Path => {}
            }
        }
        out
    }

    /// Fills in a publish topic template.
    pub fn topic(&self, key: &str) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Key => out.push_str(key),
                Piece::Path => out.push_str(&key.replace('.', "/")),
                Piece::Capture(_) | Piece::Field => {}
            }
        }
        out
    }
}

/// Why a message could not be taken, as counted per mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The payload is not UTF-8 text.
    NotText,
    /// `fields` are configured but the payload is no JSON object.
    NotJson,
    /// A configured field (or the time field) is missing or not a scalar.
    MissingField,
    /// The time field holds no time.
    BadTime,
    /// The key's type (or the bridge's token) refused the value.
    Refused,
}

impl Bad {
    /// The counter's name in `stats`.
    pub fn name(self) -> &'static str {
        match self {
            Bad::NotText => "not_text",
            Bad::NotJson => "not_json",
            Bad::MissingField => "missing_field",
            Bad::BadTime => "bad_time",
            Bad::Refused => "refused",
        }
    }

    pub const ALL: [Bad; 5] = [
        Bad::NotText,
        Bad::NotJson,
        Bad::MissingField,
        Bad::BadTime,
        Bad::Refused,
    ];
}

/// A bare payload as a value: a number, `true`/`false`/`ON`/`OFF` (any case) as a boolean,
/// JSON `null`, a JSON string's text, or else the text itself as a string.
pub fn bare_value(payload: &[u8]) -> Result<Json, Bad> {
    let text = std::str::from_utf8(payload).map_err(|_| Bad::NotText)?;
    let text = text.trim();
    if text.eq_ignore_ascii_case("on") || text.eq_ignore_ascii_case("true") {
        return Ok(Json::Bool(true));
    }
    if text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("false") {
        return Ok(Json::Bool(false));
    }
    match serde_json::from_str::<Json>(text) {
        Ok(v @ (Json::Number(_) | Json::String(_) | Json::Null)) => Ok(v),
        _ => Ok(Json::String(text.to_string())),
    }
}

/// A JSON payload's object, or `NotJson`.
pub fn json_object(payload: &[u8]) -> Result<serde_json::Map<String, Json>, Bad> {
    let text = std::str::from_utf8(payload).map_err(|_| Bad::NotText)?;
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(o)) => Ok(o),
        _ => Err(Bad::NotJson),
    }
}

/// A field of a JSON object, `.` reaching into nested objects. Strings `ON`/`OFF` (as
/// Zigbee2MQTT sends a switch's state) become booleans.
pub fn field(object: &serde_json::Map<String, Json>, path: &str) -> Result<Json, Bad> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let mut value = object.get(first).ok_or(Bad::MissingField)?;
    for part in parts {
        value = value.get(part).ok_or(Bad::MissingField)?;
    }
    match value {
        Json::String(s) if s.eq_ignore_ascii_case("on") => Ok(Json::Bool(true)),
        Json::String(s) if s.eq_ignore_ascii_case("off") => Ok(Json::Bool(false)),
        Json::Object(_) | Json::Array(_) => Err(Bad::MissingField),
        v => Ok(v.clone()),
    }
}

/// A time field's value in seconds since the epoch: a number, or an RFC 3339 string.
pub fn time_of(value: &Json) -> Result<f64, Bad> {
    match value {
        Json::Number(n) => n.as_f64().filter(|t| t.is_finite()).ok_or(Bad::BadTime),
        Json::String(s) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_nanosecond() as f64 / 1e9)
            .map_err(|_| Bad::BadTime),
        _ => Err(Bad::BadTime),
    }
}

/// A value as a bare payload: numbers and booleans as JSON writes them, a string as its
/// text, null as an empty payload.
pub fn bare_payload(value: &Json) -> Vec<u8> {
    match value {
        Json::String(s) => s.clone().into_bytes(),
        Json::Null => Vec::new(),
        v => v.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_capture_their_wildcards() -> anyhow::Result<()> {
        let f = Filter::parse("tele/+/SENSOR")?;
        assert_eq!(f.wildcards(), 1);
        assert_eq!(f.captures("tele/plug1/SENSOR"), Some(vec!["plug1".into()]));
        assert_eq!(f.captures("tele/plug1/STATE"), None);
        assert_eq!(f.captures("tele/plug1/SENSOR/x"), None);
        assert_eq!(f.captures("tele/SENSOR"), None);
        let f = Filter::parse("z/#")?;
        assert_eq!(f.captures("z/a/b"), Some(vec!["a.b".into()]));
        assert_eq!(Filter::parse("+/x")?.captures("$SYS/x"), None);
        assert_eq!(Filter::parse("a/b")?.captures("a/b"), Some(vec![]));
        assert!(Filter::parse("a/#/b").is_err());
        assert!(Filter::parse("a/b#").is_err());
        Ok(())
    }

    #[test]
    fn templates_fill_in_captures_and_fields() -> anyhow::Result<()> {
        let t = Template::ingest("zigbee.{1}.{field}", 1, true)?;
        assert_eq!(
            t.key(&["kitchen".into()], "temperature"),
            "zigbee.kitchen.temperature"
        );
        assert!(Template::ingest("x.{2}", 1, false).is_err());
        assert!(Template::ingest("x.{field}", 1, false).is_err());
        assert!(Template::ingest("x.{1", 1, false).is_err());
        let t = Template::publish("komoku/{path}/state")?;
        assert_eq!(t.topic("a.b"), "komoku/a/b/state");
        assert_eq!(Template::publish("k/{key}")?.topic("a.b"), "k/a.b");
        assert!(Template::publish("k/{1}").is_err());
        Ok(())
    }

    #[test]
    fn bare_payloads_become_numbers_booleans_or_strings() {
        assert_eq!(bare_value(b"21.5"), Ok(json!(21.5)));
        assert_eq!(bare_value(b" 7\n"), Ok(json!(7)));
        assert_eq!(bare_value(b"ON"), Ok(json!(true)));
        assert_eq!(bare_value(b"off"), Ok(json!(false)));
        assert_eq!(bare_value(b"true"), Ok(json!(true)));
        assert_eq!(bare_value(b"open"), Ok(json!("open")));
        assert_eq!(bare_value(b"\"quoted\""), Ok(json!("quoted")));
        assert_eq!(bare_value(b"{\"a\":1}"), Ok(json!("{\"a\":1}")));
        assert_eq!(bare_value(&[0xff, 0xfe]), Err(Bad::NotText));
    }

    #[test]
    fn json_fields_and_times_are_read() -> anyhow::Result<()> {
        let o = json_object(
            br#"{"t": 21.3, "state": "ON", "u": {"v": 2}, "at": "2026-01-02T03:04:05Z"}"#,
        )
        .map_err(|b| anyhow::anyhow!("{b:?}"))?;
        assert_eq!(field(&o, "t"), Ok(json!(21.3)));
        assert_eq!(field(&o, "state"), Ok(json!(true)));
        assert_eq!(field(&o, "u.v"), Ok(json!(2)));
        assert_eq!(field(&o, "u"), Err(Bad::MissingField));
        assert_eq!(field(&o, "missing"), Err(Bad::MissingField));
        assert_eq!(time_of(&json!(1700000000.5)), Ok(1700000000.5));
        assert_eq!(time_of(&json!("2026-01-02T03:04:05Z")), Ok(1_767_323_045.0));
        assert_eq!(time_of(&json!("yesterday")), Err(Bad::BadTime));
        assert_eq!(json_object(b"21"), Err(Bad::NotJson));
        assert_eq!(json_object(b"not json"), Err(Bad::NotJson));
        Ok(())
    }
}
