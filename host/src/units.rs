//! Durations as v1 writes them: a count and a unit letter (`"5M"`, `"6H"`, `"1d"`).
//!
//! Plain parsing, no I/O: `fetch` steps, retention durations and query steps read them.

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// `"5M"` → 300 seconds. Units: `S` second, `M` minute, `H` hour, `d` day, `w` week,
/// `m` month (31 days), `y` year (365 days). A bare number is seconds.
pub fn parse_step(v: &Json) -> Result<f64> {
    let bad = || Error::query("step must look like \"5M\": a count and one of S M H d w m y");
    let seconds = match v {
        Json::Number(n) => n.as_f64().ok_or_else(bad)?,
        Json::String(s) => {
            let (count, unit) = split_unit(s).ok_or_else(bad)?;
            let count: f64 = count.parse().map_err(|_| bad())?;
            count * unit_seconds(unit).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if seconds.is_finite() && seconds > 0.0 {
        Ok(seconds)
    } else {
        Err(bad())
    }
}

/// `"15M"` → (`"15"`, `'M'`): a step's count and its unit letter.
pub fn split_unit(s: &str) -> Option<(&str, char)> {
    let unit = s.chars().last()?;
    Some((&s[..s.len() - unit.len_utf8()], unit))
}

/// The fixed length of a step unit in seconds (`m` = 31 days, `y` = 365 days, as in v1).
pub fn unit_seconds(unit: char) -> Option<f64> {
    Some(match unit {
        'S' => 1.0,
        'M' => 60.0,
        'H' => 3600.0,
        'd' => 86_400.0,
        'w' => 7.0 * 86_400.0,
        'm' => 31.0 * 86_400.0,
        'y' => 365.0 * 86_400.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_parse_in_every_unit() {
        for (s, secs) in [
            ("5S", 5.0),
            ("5M", 300.0),
            ("6H", 21_600.0),
            ("1d", 86_400.0),
            ("2w", 1_209_600.0),
            ("1m", 2_678_400.0),
            ("1y", 31_536_000.0),
        ] {
            assert_eq!(parse_step(&json!(s)).ok(), Some(secs), "{s}");
        }
        for bad in ["", "M", "5", "5x", "-1M", "0M"] {
            assert!(parse_step(&json!(bad)).is_err(), "{bad}");
        }
    }
}
