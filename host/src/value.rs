//! Values and times as the host sees them: JSON scalars with a compact binary encoding.
//!
//! The host knows only the *shape* of values (boolean, number, text); what a value means,
//! which ones a key accepts and how they are cast is each key type's business (its plugin).

use serde_json::Value as Json;

/// Seconds since the Unix epoch, as clients send and receive them.
pub type Time = f64;

/// A stored value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// One stored point of a key's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub time: Time,
    pub value: Value,
}

/// The current time as float seconds since the Unix epoch.
pub fn now() -> Time {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Renders a number the way the original servers did: integral values without a fraction
/// (`3`, not `3.0`), everything else as the shortest round-tripping float.
pub fn number_json(n: f64) -> Json {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    if n.fract() == 0.0 && n.abs() < EXACT {
        Json::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

impl Value {
    /// The value as a JSON scalar.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => number_json(*n),
            Value::Text(s) => Json::String(s.clone()),
        }
    }

    /// Appends the storage encoding: one tag byte, then the payload.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bool(false) => out.push(0),
            Value::Bool(true) => out.push(1),
            Value::Number(n) => {
                out.push(2);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Value::Text(s) => {
                out.push(3);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// The storage encoding as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9);
        self.encode_into(&mut out);
        out
    }

    /// Reads the storage encoding; `None` for bytes this version did not write.
    pub fn decode(bytes: &[u8]) -> Option<Value> {
        let (&tag, rest) = bytes.split_first()?;
        match tag {
            0 if rest.is_empty() => Some(Value::Bool(false)),
            1 if rest.is_empty() => Some(Value::Bool(true)),
            2 => Some(Value::Number(f64::from_be_bytes(rest.try_into().ok()?))),
            3 => Some(Value::Text(String::from_utf8(rest.to_vec()).ok()?)),
            _ => None,
        }
    }
}

/// A JSON scalar as a client sent it, before its key type casts it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
}

impl Input {
    /// Takes a JSON value; arrays and objects are not scalars and are refused.
    pub fn from_json(json: &Json) -> Option<Input> {
        Some(match json {
            Json::Null => Input::Null,
            Json::Bool(b) => Input::Bool(*b),
            Json::Number(n) => Input::Number(n.as_f64()?),
            Json::String(s) => Input::Text(s.clone()),
            Json::Array(_) | Json::Object(_) => return None,
        })
    }
}

/// Maps times to keys that sort in time order: the IEEE-754 bits, with the sign bit flipped
/// for positive numbers and all bits flipped for negative ones, big-endian.
pub fn time_to_sortable(t: Time) -> [u8; 8] {
    let bits = t.to_bits();
    let ordered = if bits >> 63 == 0 {
        bits | (1 << 63)
    } else {
        !bits
    };
    ordered.to_be_bytes()
}

/// The inverse of [`time_to_sortable`].
pub fn time_from_sortable(bytes: [u8; 8]) -> Time {
    let ordered = u64::from_be_bytes(bytes);
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits)
}

/// Microseconds since the Unix epoch: how times are stored. Clients send float seconds; a
/// time is kept to the nearest microsecond, so any time a client sends reads back within
/// 0.5 µs (and exactly, for times written with at most six decimals).
pub type Micros = i64;

/// The stored microsecond of a time (saturating at the ends of `i64`; NaN maps to 0).
pub fn time_to_micros(t: Time) -> Micros {
    (t * 1e6).round() as Micros
}

/// The time of a stored microsecond.
pub fn micros_to_time(us: Micros) -> Time {
    us as f64 / 1e6
}

/// A time as it will be stored and read back: rounded to the microsecond.
pub fn quantize_time(t: Time) -> Time {
    if t.is_finite() {
        micros_to_time(time_to_micros(t))
    } else {
        t
    }
}

/// The smallest microsecond at or after `t` (`since` bounds of scans).
pub fn micros_ceil(t: Time) -> Micros {
    (t * 1e6).ceil() as Micros
}

/// The largest microsecond at or before `t` (`until` bounds of scans).
pub fn micros_floor(t: Time) -> Micros {
    (t * 1e6).floor() as Micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_encoding_round_trips() {
        for v in [
            Value::Bool(false),
            Value::Bool(true),
            Value::Number(-3.25),
            Value::Number(f64::MAX),
            Value::Text(String::new()),
            Value::Text("armed ✓".into()),
        ] {
            assert_eq!(Value::decode(&v.encode()), Some(v));
        }
        assert_eq!(Value::decode(&[]), None);
        assert_eq!(Value::decode(&[2, 1, 2]), None);
        assert_eq!(Value::decode(&[9]), None);
    }

    #[test]
    fn sortable_times_keep_order_and_round_trip() {
        let times = [
            -1e12,
            -1.5,
            -0.0,
            0.0,
            1e-9,
            1.0,
            1432468182.25,
            1432468182.250001,
            1e15,
        ];
        for pair in times.windows(2) {
            assert!(
                time_to_sortable(pair[0]) <= time_to_sortable(pair[1]),
                "{pair:?}"
            );
        }
        for t in times {
            assert_eq!(
                time_from_sortable(time_to_sortable(t)).to_bits(),
                t.to_bits()
            );
        }
    }

    #[test]
    fn client_times_round_trip_within_a_microsecond() {
        for t in [
            0.0,
            1.5,
            1432468182.25,
            1432468182.250001,
            1700000000.123456,
            -12.000001,
        ] {
            assert_eq!(quantize_time(t).to_bits(), t.to_bits(), "{t}");
        }
        for t in [1700000000.1234567, 0.00000049, 1e9 + 1e-7] {
            assert!(
                (quantize_time(t) - t).abs() <= 0.5e-6 + t.abs() * f64::EPSILON,
                "{t}"
            );
        }
    }

    #[test]
    fn numbers_render_like_the_originals() {
        assert_eq!(number_json(3.0).to_string(), "3");
        assert_eq!(number_json(-0.5).to_string(), "-0.5");
        assert_eq!(number_json(1432468182.25).to_string(), "1432468182.25");
        assert_eq!(number_json(1e300).to_string(), "1e+300");
    }
}
