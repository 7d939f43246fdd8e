//! `temperature_celsius`: a gauge of degrees Celsius that refuses values below absolute zero.
//!
//! Accepts finite numbers and numeric text like the built-in `numeric` (`"-3.5"` → -3.5);
//! refuses values below -273.15 with `below_absolute_zero` and everything else that is not
//! a number with `invalid_value`. It claims no key in `guess`. Everything else is the SDK's
//! default: options `same_value_resolution` and `min_resolution`, time-weighted number
//! summaries with the mean as the default figure. The same type, written in AssemblyScript,
//! is `examples/temperature-as`.

use komoku_guest::summary::NumberSummary;
use komoku_guest::{Input, KeyType, Refusal, Resolution, Value, cast, export_key_type};

/// Absolute zero in degrees Celsius: nothing is colder.
pub const ABSOLUTE_ZERO: f64 = -273.15;

/// The refusal code for a temperature below [`ABSOLUTE_ZERO`].
pub const BELOW_ABSOLUTE_ZERO: &str = "below_absolute_zero";

/// A temperature in degrees Celsius.
pub struct TemperatureCelsius;

impl KeyType for TemperatureCelsius {
    const NAME: &'static str = "temperature_celsius";
    const DESCRIPTION: &'static str =
        "A temperature in degrees Celsius (not below -273.15), summarised time-weighted";

    type Options = Resolution;
    type Summary = NumberSummary;

    fn cast(_options: &Resolution, input: Input) -> Result<Value, Refusal> {
        let celsius = cast::number(Self::NAME, &input)?;
        if celsius < ABSOLUTE_ZERO {
            return Err(Refusal::new(
                BELOW_ABSOLUTE_ZERO,
                format!("{celsius} °C is below absolute zero ({ABSOLUTE_ZERO} °C)"),
            ));
        }
        Ok(Value::Number(celsius))
    }
}

export_key_type!(TemperatureCelsius);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::serde_json::json;
    use komoku_guest::testing::{point, rendered};
    use komoku_guest::world::json::{apply, check_options, guess, info};
    use komoku_guest::{Operation, Outcome};

    const DEFAULTS: &str = r#"{"min_resolution":0,"same_value_resolution":0}"#;

    fn put(input: Input) -> Result<Outcome, Refusal> {
        apply::<TemperatureCelsius>(DEFAULTS.to_owned(), None, Operation::Set(input), 1.0)
    }

    #[test]
    fn info_names_the_type_with_resolution_options() -> Result<(), Refusal> {
        let info = info::<TemperatureCelsius>(env!("CARGO_PKG_VERSION"));
        assert_eq!(info.name, "temperature_celsius");
        assert_eq!(info.default_options, DEFAULTS);
        assert_eq!(check_options::<TemperatureCelsius>("{}".into())?, DEFAULTS);
        Ok(())
    }

    #[test]
    fn guess_claims_nothing() {
        assert_eq!(guess::<TemperatureCelsius>(Input::Number(21.5)), 0);
        assert_eq!(guess::<TemperatureCelsius>(Input::Text("21.5".into())), 0);
    }

    #[test]
    fn cast_accepts_numbers_and_numeric_text_down_to_absolute_zero() -> Result<(), Refusal> {
        assert_eq!(put(Input::Number(21.5))?.value, Value::Number(21.5));
        assert_eq!(put(Input::Text("-3.5".into()))?.value, Value::Number(-3.5));
        assert_eq!(
            put(Input::Number(ABSOLUTE_ZERO))?.value,
            Value::Number(ABSOLUTE_ZERO)
        );
        Ok(())
    }

    #[test]
    fn cast_refuses_below_absolute_zero_and_non_numbers() {
        let refusal = put(Input::Number(-300.0)).expect_err("below absolute zero");
        assert_eq!(refusal.code, BELOW_ABSOLUTE_ZERO);
        assert!(refusal.message.contains("-300"), "{}", refusal.message);
        for input in [
            Input::Text("abc".into()),
            Input::Null,
            Input::Boolean(true),
            Input::Number(f64::NAN),
        ] {
            assert_eq!(put(input).expect_err("not a number").code, "invalid_value");
        }
    }

    #[test]
    fn mean_is_the_default_figure() -> Result<(), Refusal> {
        let points = [
            point(0.0, Value::Number(10.0)),
            point(30.0, Value::Number(20.0)),
        ];
        let means = rendered::<TemperatureCelsius>(DEFAULTS, &[0.0, 60.0], None, &points, &[])?;
        assert_eq!(means, json!([15]));
        Ok(())
    }
}
