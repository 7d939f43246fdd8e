// temperature_celsius: a gauge of degrees Celsius that refuses values below absolute zero.
// The same type as examples/temperature-rust, written with the AssemblyScript SDK.

import { castNumber, Input, KeyType, NumberSummary, numberText, Options, Refusal, register, Result, Value } from "komoku-key-type/assembly";

/** Absolute zero in degrees Celsius: nothing is colder. */
const ABSOLUTE_ZERO: f64 = -273.15;

/** The SDK's options (`Options`: the resolution options) and number summaries. */
class TemperatureCelsius extends KeyType<Options, NumberSummary> {
  constructor() {
    super("temperature_celsius", "A temperature in degrees Celsius (not below -273.15), summarised time-weighted");
  }

  // Finite numbers and numeric text, as numeric keys accept them, but nothing below absolute
  // zero. Everything else — options, store decision, summaries (default figure: mean) — is
  // the SDK's default.
  cast(options: Options, input: Input): Result<Value> {
    const cast = castNumber(this.name, input);
    if (!cast.isOk) return cast;
    const celsius = cast.unwrap().num;
    if (celsius < ABSOLUTE_ZERO) {
      return Result.err<Value>(
        new Refusal("below_absolute_zero", numberText(celsius) + " °C is below absolute zero (-273.15 °C)"),
      );
    }
    return cast;
  }
}

register(new TemperatureCelsius());

export * from "komoku-key-type/assembly/exports";
