//! Exact decimals: an integer count of units of 10^-scale.

use std::fmt;

use komoku_guest::{Json, Value};

/// Most digits after the point a key may keep.
pub const MAX_SCALE: u32 = 9;

/// Most significant digits of a value: every value is then exact as a JSON number (a double
/// holds 15 significant decimal digits).
pub const MAX_DIGITS: u32 = 15;

/// Most digits read from a text (more cannot be a value; this keeps the units in an i128).
const MAX_TEXT_DIGITS: usize = 36;

/// What to do with digits beyond the key's scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Refuse the value (unless the extra digits are zeros).
    Refuse,
    /// Round to nearest, ties to the even digit (banker's rounding).
    HalfEven,
    /// Round to nearest, ties away from zero.
    HalfUp,
}

/// `units × 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dec {
    pub units: i128,
    pub scale: u32,
}

fn pow10(n: u32) -> i128 {
    10i128.pow(n)
}

impl Dec {
    pub fn new(units: i128, scale: u32) -> Dec {
        Dec { units, scale }
    }

    /// Numeric text `^-?\d+(\.\d+)?$`, exactly.
    pub fn parse(text: &str) -> Option<Dec> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || (digits.contains('.') && fraction.is_empty())
        {
            return None;
        }
        // Leading zeros carry nothing; what is left must fit.
        let whole = whole.trim_start_matches('0');
        if whole.len() + fraction.len() > MAX_TEXT_DIGITS {
            return None;
        }
        let mut units: i128 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            units = units * 10 + i128::from(b - b'0');
        }
        let scale = u32::try_from(fraction.len()).ok()?;
        Some(Dec::new(if negative { -units } else { units }, scale))
    }

    /// A double by its shortest decimal form (the digits a JSON writer prints for it).
    pub fn from_f64(n: f64) -> Option<Dec> {
        if !n.is_finite() {
            return None;
        }
        // Rust prints doubles without an exponent, in their shortest round-trip digits.
        Dec::parse(&format!("{n}"))
    }

    /// A JSON number or numeric text.
    pub fn from_json(json: &Json) -> Option<Dec> {
        match json {
            Json::Number(n) => Dec::from_f64(n.as_f64()?),
            Json::String(s) => Dec::parse(s),
            _ => None,
        }
    }

    /// A stored value: a number or text.
    pub fn from_value(value: &Value) -> Option<Dec> {
        match value {
            Value::Number(n) => Dec::from_f64(*n),
            Value::Text(t) => Dec::parse(t),
            _ => None,
        }
    }

    /// The same value with `scale` digits after the point; `None` when digits are lost and
    /// `rounding` is [`Rounding::Refuse`] (or the value does not fit).
    pub fn rescale(self, scale: u32, rounding: Rounding) -> Option<Dec> {
        if scale >= self.scale {
            let units = self.units.checked_mul(pow10(scale - self.scale))?;
            return Some(Dec::new(units, scale));
        }
        let divisor = pow10(self.scale - scale);
        let quotient = self.units / divisor;
        let rest = self.units % divisor;
        if rest == 0 {
            return Some(Dec::new(quotient, scale));
        }
        let away = self.units.signum();
        let twice = rest.abs() * 2;
        let up = match rounding {
            Rounding::Refuse => return None,
            Rounding::HalfUp => twice >= divisor,
            Rounding::HalfEven => twice > divisor || (twice == divisor && quotient % 2 != 0),
        };
        Some(Dec::new(if up { quotient + away } else { quotient }, scale))
    }

    /// Whether the value has at most [`MAX_DIGITS`] significant digits.
    pub fn fits(self) -> bool {
        self.units.unsigned_abs() < 10u128.pow(MAX_DIGITS)
    }

    /// The sum, at the finer of the two scales.
    pub fn checked_add(self, other: Dec) -> Option<Dec> {
        let scale = self.scale.max(other.scale);
        let a = self.rescale(scale, Rounding::Refuse)?;
        let b = other.rescale(scale, Rounding::Refuse)?;
        Some(Dec::new(a.units.checked_add(b.units)?, scale))
    }

    /// The double whose shortest form is this value (exact for values that fit).
    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    /// As stored: text at the scale, or the number.
    pub fn to_value(self, as_text: bool) -> Value {
        if as_text {
            Value::Text(self.to_string())
        } else {
            Value::Number(self.to_f64())
        }
    }

    /// As a figure or option: text at the scale, or a JSON number (integral ones as
    /// integers, `3` rather than `3.0`).
    pub fn to_json(self, as_text: bool) -> Json {
        if as_text {
            Json::String(self.to_string())
        } else {
            komoku_guest::cast::number_json(self.to_f64())
        }
    }
}

impl fmt::Display for Dec {
    /// `-12.30` for units -1230 at scale 2.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let digits = self.units.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for (text, units, scale, shown) in [
            ("0", 0, 0, "0"),
            ("12.30", 1230, 2, "12.30"),
            ("-0.05", -5, 2, "-0.05"),
            ("007", 7, 0, "7"),
            ("-0", 0, 0, "0"),
        ] {
            let d = Dec::parse(text).expect(text);
            assert_eq!((d.units, d.scale), (units, scale), "{text}");
            assert_eq!(d.to_string(), shown);
        }
        for bad in ["", "-", ".5", "1.", "1e3", "+1", "1.2.3", " 1", "0x10", "١"] {
            assert_eq!(Dec::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Dec::parse(&"9".repeat(40)), None);
    }

    #[test]
    fn doubles_read_by_their_shortest_digits() {
        assert_eq!(Dec::from_f64(0.1), Some(Dec::new(1, 1)));
        assert_eq!(Dec::from_f64(0.1 + 0.2), Dec::parse("0.30000000000000004"));
        assert_eq!(Dec::from_f64(1e-7), Some(Dec::new(1, 7)));
        assert_eq!(Dec::from_f64(f64::INFINITY), None);
        assert_eq!(
            Dec::new(123_456_789_012_345, 2).to_f64(),
            1_234_567_890_123.45
        );
    }

    #[test]
    fn rescale_rounds_as_asked() {
        let d = |t: &str| Dec::parse(t).expect(t);
        assert_eq!(
            d("2.5").rescale(0, Rounding::HalfEven),
            Some(Dec::new(2, 0))
        );
        assert_eq!(
            d("3.5").rescale(0, Rounding::HalfEven),
            Some(Dec::new(4, 0))
        );
        assert_eq!(
            d("-2.5").rescale(0, Rounding::HalfUp),
            Some(Dec::new(-3, 0))
        );
        assert_eq!(
            d("-2.5").rescale(0, Rounding::HalfEven),
            Some(Dec::new(-2, 0))
        );
        assert_eq!(
            d("2.51").rescale(0, Rounding::HalfEven),
            Some(Dec::new(3, 0))
        );
        assert_eq!(d("2.5").rescale(0, Rounding::Refuse), None);
        assert_eq!(
            d("2.50").rescale(1, Rounding::Refuse),
            Some(Dec::new(25, 1))
        );
        assert_eq!(
            d("2.5").rescale(3, Rounding::Refuse),
            Some(Dec::new(2500, 3))
        );
    }
}
