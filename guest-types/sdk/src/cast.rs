//! The casting rules the built-in types share: what each accepts, and how refusals read.

use crate::{Input, Json, Refusal};

/// Longest piece of a client's text quoted back in a refusal message.
const QUOTE_LIMIT: usize = 64;

/// Describes what a client sent, for refusal messages: `null`, `true`, `number 1.5`,
/// `text "abc"` (long texts are cut).
pub fn describe(input: &Input) -> String {
    match input {
        Input::Null => "null".to_owned(),
        Input::Boolean(b) => b.to_string(),
        Input::Number(n) => format!("number {n}"),
        Input::Text(t) if t.chars().count() > QUOTE_LIMIT => {
            let cut: String = t.chars().take(QUOTE_LIMIT).collect();
            format!("text {cut:?}...")
        }
        Input::Text(t) => format!("text {t:?}"),
    }
}

/// Whether `text` is numeric text as the originals accepted it: `^-?(\d+\.)?\d+$`.
pub fn is_numeric_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match digits.split_once('.') {
        Some((whole, fraction)) => all_digits(whole) && all_digits(fraction),
        None => all_digits(digits),
    }
}

/// A finite number, or numeric text ([`is_numeric_text`]) parsed to one; else
/// `invalid_value` naming what was received.
pub fn number(type_name: &str, input: &Input) -> Result<f64, Refusal> {
    let parsed = match input {
        Input::Number(n) => Some(*n),
        Input::Text(t) if is_numeric_text(t) => t.parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n.is_finite() => Ok(n),
        _ => Err(Refusal::invalid_value(format!(
            "{type_name} expects a finite number or numeric text, got {}",
            describe(input)
        ))),
    }
}

/// A number key's value after `add(step)`: the latest value plus `step`, from 0 when the key
/// has no point yet; `invalid_value` for a step or a sum that is not finite.
pub fn add_number(previous: Option<&crate::Point>, step: f64) -> Result<f64, Refusal> {
    if !step.is_finite() {
        return Err(Refusal::invalid_value(format!(
            "steps must be finite numbers, got {step}"
        )));
    }
    let base = match previous {
        None => 0.0,
        Some(p) => p
            .value
            .as_number()
            .ok_or_else(|| Refusal::invalid_value("the key's latest value is not a number"))?,
    };
    let sum = base + step;
    if !sum.is_finite() {
        return Err(Refusal::invalid_value(format!("{base} + {step} overflows")));
    }
    Ok(sum)
}

/// `true`/`false`, or the text `"true"`/`"false"`; else `invalid_value`.
pub fn boolean(type_name: &str, input: &Input) -> Result<bool, Refusal> {
    match input {
        Input::Boolean(b) => Ok(*b),
        Input::Text(t) if t == "true" => Ok(true),
        Input::Text(t) if t == "false" => Ok(false),
        _ => Err(Refusal::invalid_value(format!(
            "{type_name} expects true, false, \"true\" or \"false\", got {}",
            describe(input)
        ))),
    }
}

/// Any scalar but `null` as text: text as is, numbers as their JSON text
/// ([`number_text`]), booleans as `"true"`/`"false"`; `null` → `invalid_value`.
pub fn text(type_name: &str, input: &Input) -> Result<String, Refusal> {
    match input {
        Input::Text(t) => Ok(t.clone()),
        Input::Number(n) if n.is_finite() => Ok(number_text(*n)),
        Input::Boolean(b) => Ok(b.to_string()),
        _ => Err(Refusal::invalid_value(format!(
            "{type_name} expects text, a finite number or a boolean, got {}",
            describe(input)
        ))),
    }
}

/// A number as JSON writes it: integral values without a fraction (`3` → `"3"`), others in
/// the shortest form that reads back the same (`2.5` → `"2.5"`, `1e300` → `"1e+300"`).
pub fn number_text(n: f64) -> String {
    /// Integral values below this are written digit by digit (like JavaScript does).
    const PLAIN_LIMIT: f64 = 1e21;
    if n == 0.0 {
        "0".to_owned()
    } else if n.fract() == 0.0 && n.abs() < PLAIN_LIMIT {
        format!("{n:.0}")
    } else {
        Json::from(n).to_string()
    }
}

/// A number as a JSON value: integral values as JSON integers (`3`, not `3.0`), non-finite
/// ones as `null`.
pub fn number_json(n: f64) -> Json {
    /// 2^53: every integer below it is exact in an f64.
    const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() < EXACT_LIMIT {
        // Exact: integral and within i64.
        Json::from(n as i64)
    } else {
        Json::from(n)
    }
}

/// Whether `input` is a boolean or boolean text, the claim of boolean-like types.
pub fn is_boolean_like(input: &Input) -> bool {
    matches!(input, Input::Boolean(_))
        || matches!(input, Input::Text(t) if t == "true" || t == "false")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_text_follows_the_original_pattern() {
        for ok in ["0", "12", "-3", "1.5", "-0.25", "007", "10.0"] {
            assert!(is_numeric_text(ok), "{ok}");
        }
        for bad in [
            "", "-", "1.", ".5", "+1", "1e3", "1.2.3", " 1", "0x10", "--1", "abc",
        ] {
            assert!(!is_numeric_text(bad), "{bad}");
        }
    }

    #[test]
    fn number_refuses_non_finite_and_describes_input() {
        assert_eq!(number("numeric", &Input::Text("-1.5".into())), Ok(-1.5));
        let refusal = number("numeric", &Input::Number(f64::NAN)).expect_err("NaN");
        assert_eq!(refusal.code, "invalid_value");
        let refusal = number("numeric", &Input::Text("abc".into())).expect_err("text");
        assert!(refusal.message.contains("\"abc\""), "{}", refusal.message);
        let huge = format!("1{}", "0".repeat(400));
        assert!(number("numeric", &Input::Text(huge)).is_err());
    }

    #[test]
    fn number_text_writes_json_numbers() {
        assert_eq!(number_text(3.0), "3");
        assert_eq!(number_text(-3.0), "-3");
        assert_eq!(number_text(-0.0), "0");
        assert_eq!(number_text(2.5), "2.5");
        assert_eq!(number_text(0.1), "0.1");
        assert_eq!(number_text(1e20), "100000000000000000000");
        assert_eq!(number_text(1e300), "1e+300");
    }

    #[test]
    fn number_json_keeps_integers_integral() {
        assert_eq!(number_json(77.0).to_string(), "77");
        assert_eq!(number_json(-0.0).to_string(), "0");
        assert_eq!(number_json(0.5).to_string(), "0.5");
        assert_eq!(number_json(f64::INFINITY), Json::Null);
    }

    #[test]
    fn describe_cuts_long_text() {
        let long = "x".repeat(100);
        let described = describe(&Input::Text(long));
        assert!(described.ends_with("\"..."), "{described}");
        assert_eq!(described.len(), "text \"\"...".len() + QUOTE_LIMIT);
        assert_eq!(describe(&Input::Null), "null");
    }
}
