//! The `decimal` key type: an exact number with a fixed number of digits after the point
//! (a price, an energy reading in kWh, an amount that must add up).
//!
//! A value is read as the decimal digits it is written with: numeric text as it stands
//! (`"12.345"`), a JSON number by its shortest form (`0.1` is one tenth, not the double
//! nearest to it). A value with more digits after the point than `scale` allows is refused
//! with `invalid_value`, unless `rounding` says to round; one outside `min`/`max` is refused
//! too. Values have at most 15 significant digits, so each one is also exact as a JSON
//! number. `increment` and `decrement` add exactly: ten increments of 0.1 make 1, and
//! `0.1 + 0.2` is `0.3`.
//!
//! Stored as the number (the double whose shortest form is exactly the value's digits), or
//! with `render: "string"` as text at the key's scale (`"12.30"`), for clients that must not
//! read a float.
//!
//! Options: `scale` (digits after the point, 0 to 9, default 2), `min` and `max` (numbers or
//! numeric text, default none), `rounding` (`refuse`, `half_even`, `half_up`; default
//! `refuse`), `render` (`number` or `string`, default `number`), and the resolution options.
//!
//! Figures: numeric's, plus `sum` (of the points in the bucket) and `increase` (the value at
//! the end minus the value carried in). `sum`, `min`, `max`, `first`, `last` and `increase`
//! are exact; `mean` is time-weighted and rendered at the key's scale (half even).

mod dec;
mod summary;

use komoku_guest::options::OptionsReader;
use komoku_guest::serde_json::json;
use komoku_guest::{
    Input, Json, KeyType, OpKind, Options, Point, Refusal, Resolution, Value, cast, export_key_type,
};

pub use dec::{Dec, Rounding};
pub use summary::DecimalSummary;

/// An exact decimal number.
pub struct Decimal;

/// The options of a decimal key.
#[derive(Clone, Debug, PartialEq)]
pub struct DecimalOptions {
    pub resolution: Resolution,
    /// Digits after the point.
    pub scale: u32,
    /// What to do with a value that has more digits after the point.
    pub rounding: Rounding,
    /// Store text instead of numbers.
    pub as_text: bool,
    /// Least value accepted, in units of the scale.
    pub min: Option<i128>,
    /// Greatest value accepted, in units of the scale.
    pub max: Option<i128>,
}

impl Options for DecimalOptions {
    fn read(reader: &mut OptionsReader) -> Result<Self, Refusal> {
        let resolution = Resolution::read(reader)?;
        let scale = reader.number("scale", 2.0, "an integer from 0 to 9", |n| {
            n.fract() == 0.0 && (0.0..=f64::from(dec::MAX_SCALE)).contains(&n)
        })? as u32;
        let rounding =
            match reader.choice("rounding", &["refuse", "half_even", "half_up"], "refuse")? {
                "half_even" => Rounding::HalfEven,
                "half_up" => Rounding::HalfUp,
                _ => Rounding::Refuse,
            };
        let as_text = reader.choice("render", &["number", "string"], "number")? == "string";
        let bound = |json: &Json| {
            let dec = Dec::from_json(json)?.rescale(scale, Rounding::Refuse)?;
            Some((dec.units, dec.to_json(as_text)))
        };
        let expected = format!("a number with at most {scale} digits after the point");
        let min = reader.optional("min", &expected, bound)?;
        let max = reader.optional("max", &expected, bound)?;
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return Err(Refusal::invalid_option("min is greater than max"));
        }
        Ok(Self {
            resolution,
            scale,
            rounding,
            as_text,
            min,
            max,
        })
    }

    fn resolution(&self) -> &Resolution {
        &self.resolution
    }
}

impl DecimalOptions {
    /// `input`'s digits at the key's scale, rounded as the key says, within its bounds.
    fn accept(&self, dec: Dec, what: &dyn Fn() -> String) -> Result<Value, Refusal> {
        let dec = dec.rescale(self.scale, self.rounding).ok_or_else(|| {
            Refusal::invalid_value(format!(
                "{} has more than {} digits after the point (option rounding rounds instead)",
                what(),
                self.scale
            ))
        })?;
        if !dec.fits() {
            return Err(Refusal::invalid_value(format!(
                "{} has more than {} significant digits",
                what(),
                dec::MAX_DIGITS
            )));
        }
        let bounds = |units: Option<i128>| units.map(|u| Dec::new(u, self.scale).to_string());
        if self.min.is_some_and(|min| dec.units < min) {
            return Err(Refusal::invalid_value(format!(
                "{} is below min {}",
                what(),
                bounds(self.min).unwrap_or_default()
            )));
        }
        if self.max.is_some_and(|max| dec.units > max) {
            return Err(Refusal::invalid_value(format!(
                "{} is above max {}",
                what(),
                bounds(self.max).unwrap_or_default()
            )));
        }
        Ok(dec.to_value(self.as_text))
    }
}

impl KeyType for Decimal {
    const NAME: &'static str = "decimal";
    const DESCRIPTION: &'static str =
        "An exact number with a fixed number of digits after the point (option scale)";

    type Options = DecimalOptions;
    type Summary = DecimalSummary;

    /// Like numeric (readings and amounts are sampled as often and read at fine steps while
    /// recent): raw points 7 days, then 1-minute summaries 30 days, 1-hour summaries 2
    /// years, 1-day summaries forever. Sums stay exact in every tier.
    fn default_retention() -> Option<Json> {
        Some(json!({"raw": "7d", "tiers": [["1M", "30d"], ["1H", "2y"], ["1d", null]]}))
    }

    fn cast(options: &DecimalOptions, input: Input) -> Result<Value, Refusal> {
        let dec = match &input {
            Input::Number(n) => Dec::from_f64(*n),
            Input::Text(t) => Dec::parse(t),
            _ => None,
        }
        .ok_or_else(|| {
            Refusal::invalid_value(format!(
                "decimal takes a number or numeric text, got {}",
                cast::describe(&input)
            ))
        })?;
        options.accept(dec, &|| cast::describe(&input))
    }

    fn add(
        options: &DecimalOptions,
        previous: Option<&Point>,
        step: f64,
    ) -> Result<Value, Refusal> {
        let step_dec = Dec::from_f64(step)
            .ok_or_else(|| Refusal::invalid_value(format!("step {step} is not a decimal")))?
            .rescale(options.scale, options.rounding)
            .ok_or_else(|| {
                Refusal::invalid_value(format!(
                    "step {step} has more than {} digits after the point",
                    options.scale
                ))
            })?;
        let before = match previous {
            Some(p) => Dec::from_value(&p.value)
                .ok_or_else(|| Refusal::invalid_value("the latest value is not a decimal"))?
                .rescale(options.scale, Rounding::HalfEven)
                .ok_or_else(|| Refusal::invalid_value("the latest value is not at this scale"))?,
            None => Dec::new(0, options.scale),
        };
        let sum = before
            .checked_add(step_dec)
            .ok_or_else(|| Refusal::invalid_value("the sum is too large"))?;
        options.accept(sum, &|| format!("{before} + {step_dec}"))
    }

    fn should_store(
        options: &DecimalOptions,
        previous: Option<&Point>,
        point: &Point,
        kind: OpKind,
    ) -> bool {
        match kind {
            OpKind::Set => options.resolution.should_store(previous, point),
            OpKind::Add => !options.resolution.is_close_repeat(previous, point),
        }
    }
}

export_key_type!(Decimal);

#[cfg(test)]
mod tests {
    use super::*;
    use komoku_guest::testing::point;
    use komoku_guest::world::json::{apply, check_options, guess, render, summarize};
    use komoku_guest::{Operation, Outcome};

    fn options(extra: Json) -> String {
        extra.to_string()
    }

    fn put(options: &str, input: Input) -> Result<Value, Refusal> {
        apply::<Decimal>(options.to_owned(), None, Operation::Set(input), 1.0).map(|o| o.value)
    }

    fn add(options: &str, previous: Option<Value>, step: f64) -> Result<Outcome, Refusal> {
        let previous = previous.map(|v| point(0.5, v));
        apply::<Decimal>(options.to_owned(), previous, Operation::Add(step), 1.0)
    }

    #[test]
    fn options_default_to_two_digits_refusing_more() -> Result<(), Refusal> {
        let complete: Json =
            komoku_guest::serde_json::from_str(&check_options::<Decimal>("{}".into())?)
                .map_err(|e| Refusal::invalid_option(e.to_string()))?;
        assert_eq!(
            complete,
            json!({"scale": 2, "rounding": "refuse", "render": "number", "min": null,
                   "max": null, "min_resolution": 0, "same_value_resolution": 0})
        );
        for bad in [
            json!({"scale": 10}),
            json!({"scale": 1.5}),
            json!({"rounding": "up"}),
            json!({"min": "abc"}),
            json!({"min": 0.001}),
            json!({"min": 5, "max": 1}),
        ] {
            assert!(check_options::<Decimal>(bad.to_string()).is_err(), "{bad}");
        }
        assert!(guess::<Decimal>(Input::Number(1.0)) == 0);
        Ok(())
    }

    #[test]
    fn values_keep_their_digits_exactly() -> Result<(), Refusal> {
        let o = options(json!({}));
        assert_eq!(put(&o, Input::Number(0.1))?, Value::Number(0.1));
        assert_eq!(put(&o, Input::Text("12.34".into()))?, Value::Number(12.34));
        assert_eq!(put(&o, Input::Text("-007.50".into()))?, Value::Number(-7.5));
        let text = options(json!({"render": "string"}));
        assert_eq!(
            put(&text, Input::Number(12.3))?,
            Value::Text("12.30".into())
        );
        assert_eq!(
            put(&text, Input::Text("-0.5".into()))?,
            Value::Text("-0.50".into())
        );
        for bad in [
            Input::Text("1e3".into()),
            Input::Text("abc".into()),
            Input::Text("1.".into()),
            Input::Boolean(true),
            Input::Number(f64::NAN),
            Input::Text("1234567890123456".into()),
        ] {
            assert_eq!(
                put(&o, bad.clone()).map_err(|r| r.code),
                Err("invalid_value".to_string()),
                "{bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn each_rounding_mode_does_what_it_says() -> Result<(), Refusal> {
        let refuse = options(json!({}));
        assert!(put(&refuse, Input::Text("12.345".into())).is_err());
        assert_eq!(
            put(&refuse, Input::Text("12.3400".into()))?,
            Value::Number(12.34)
        );
        let even = options(json!({"rounding": "half_even"}));
        let up = options(json!({"rounding": "half_up"}));
        for (input, want_even, want_up) in [
            ("12.345", 12.34, 12.35),
            ("12.355", 12.36, 12.36),
            ("12.3451", 12.35, 12.35),
            ("-12.345", -12.34, -12.35),
            ("0.005", 0.0, 0.01),
            ("0.015", 0.02, 0.02),
        ] {
            assert_eq!(
                put(&even, Input::Text(input.into()))?,
                Value::Number(want_even),
                "{input}"
            );
            assert_eq!(
                put(&up, Input::Text(input.into()))?,
                Value::Number(want_up),
                "{input}"
            );
        }
        Ok(())
    }

    #[test]
    fn bounds_refuse_values_outside() -> Result<(), Refusal> {
        let o = options(json!({"min": "0", "max": 100}));
        assert_eq!(put(&o, Input::Number(100.0))?, Value::Number(100.0));
        assert!(put(&o, Input::Number(100.01)).is_err());
        assert!(put(&o, Input::Number(-0.01)).is_err());
        Ok(())
    }

    #[test]
    fn a_hundred_thousand_increments_of_a_tenth_make_ten_thousand() -> Result<(), Refusal> {
        let o = options(json!({}));
        let mut value = None;
        for _ in 0..100_000 {
            value = Some(add(&o, value, 0.1)?.value);
        }
        assert_eq!(value, Some(Value::Number(10_000.0)));
        let after = add(&o, Some(Value::Number(0.1)), 0.2)?.value;
        assert_eq!(after, Value::Number(0.3));
        let text = options(json!({"render": "string", "scale": 3}));
        let v = add(&text, Some(Value::Text("1.000".into())), -0.001)?.value;
        assert_eq!(v, Value::Text("0.999".into()));
        assert!(add(&o, Some(Value::Number(1.0)), 0.001).is_err());
        Ok(())
    }

    #[test]
    fn figures_are_exact_and_the_mean_is_at_the_scale() -> Result<(), Refusal> {
        let o = options(json!({}));
        let points: Vec<Point> = [(10.0, 0.1), (20.0, 0.2), (25.0, 0.3), (40.0, 1.02)]
            .iter()
            .map(|&(t, v)| point(t, Value::Number(v)))
            .collect();
        let carried = point(0.0, Value::Number(0.7));
        let edges = vec![5.0, 30.0, 50.0];
        let summaries = summarize::<Decimal>(o.clone(), edges, Some(carried), points);
        let all: Vec<String> = [
            "sum", "min", "max", "first", "last", "increase", "mean", "count",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rendered: Json = komoku_guest::serde_json::from_str(&render::<Decimal>(
            o.clone(),
            summaries.clone(),
            all.clone(),
        )?)
        .map_err(|e| Refusal::invalid_value(e.to_string()))?;
        // [5, 30): 0.7 carried 5 s, 0.1 for 10 s, 0.2 for 5 s, 0.3 for 5 s.
        assert_eq!(rendered[0]["sum"], json!(0.6));
        assert_eq!(rendered[0]["min"], json!(0.1));
        assert_eq!(rendered[0]["max"], json!(0.7));
        assert_eq!(rendered[0]["increase"], json!(-0.4));
        assert_eq!(rendered[0]["count"], json!(3));
        // (0.7*5 + 0.1*10 + 0.2*5 + 0.3*5) / 25 = 0.28
        assert_eq!(rendered[0]["mean"], json!(0.28));
        assert_eq!(rendered[1]["sum"], json!(1.02));
        assert_eq!(rendered[1]["increase"], json!(0.72));
        // (0.3*10 + 1.02*10) / 20 = 0.66, whatever the double's last bits.
        assert_eq!(rendered[1]["mean"], json!(0.66));
        // Merged: the whole window.
        let merged = komoku_guest::world::json::merge::<Decimal>(o.clone(), summaries);
        let whole: Json = komoku_guest::serde_json::from_str(&render::<Decimal>(
            options(json!({"render": "string"})),
            vec![merged],
            all,
        )?)
        .map_err(|e| Refusal::invalid_value(e.to_string()))?;
        assert_eq!(whole[0]["sum"], json!("1.62"));
        assert_eq!(whole[0]["increase"], json!("0.32"));
        assert_eq!(whole[0]["min"], json!("0.10"));
        Ok(())
    }
}
