// percent: a gauge of 0..100 with two options of its own and a figure that depends on one.
//
// - `deadband` (percentage points, default 0): a value closer than this to the key's latest
//   stored value is acknowledged but not stored;
// - `threshold` (percent, default 80): the `time_above` figure counts the seconds the value
//   was above it.
//
// The summary is the SDK's NumberSummary with one more field, so every gauge figure stays
// and `time_above` joins them; the SDK hands the key's options to the summary's own
// `summarize`, `merge` and `figures`, so the type overrides none of the world's functions.
// The same type as examples/percent-rust.

import {
  Bucket,
  castNumber,
  Figures,
  Input,
  KeyType,
  NumberSummary,
  numberText,
  OperationKind,
  Options,
  OptionsReader,
  Point,
  Reader,
  Refusal,
  register,
  Result,
  Summary,
  Value,
  Writer,
} from "komoku-key-type/assembly";

class PercentOptions extends Options {
  deadband: f64 = 0;
  threshold: f64 = 80;

  read(reader: OptionsReader): void {
    super.read(reader); // same_value_resolution, min_resolution
    this.deadband = reader.number("deadband", 0, "a number of percentage points from 0 to 100", (n: f64): bool => n >= 0 && n <= 100);
    this.threshold = reader.number("threshold", 80, "a percentage from 0 to 100", (n: f64): bool => n >= 0 && n <= 100);
  }
}

/** The tag byte of PercentSummary's encoding: 'P', then a NumberSummary, then f64 seconds above. */
const TAG: u8 = 0x50;

class PercentSummary extends Summary {
  number: NumberSummary = new NumberSummary();
  /** Seconds during which the value was above the key's threshold. */
  above: f64 = 0;

  summarize(bucket: Bucket, options: PercentOptions): void {
    this.number.summarize(bucket, options);
    let held: Value | null = bucket.initial;
    let since = bucket.start;
    for (let i = 0; i < bucket.points.length; i++) {
      const point = bucket.points[i];
      this.count(held, point.time - since, options);
      held = point.value;
      since = point.time;
    }
    this.count(held, bucket.end - since, options);
  }

  private count(held: Value | null, seconds: f64, options: PercentOptions): void {
    if (held != null && held.isNumber && held.num > options.threshold) this.above += seconds;
  }

  merge(next: PercentSummary, options: PercentOptions): void {
    this.number.merge(next.number, options);
    this.above += next.above;
  }

  encode(w: Writer): void {
    w.u8(TAG);
    this.number.encode(w);
    w.f64(this.above);
  }

  decode(r: Reader): void {
    r.tag(TAG);
    this.number.decode(r);
    this.above = r.f64();
  }

  figures(out: Figures, options: PercentOptions): void {
    this.number.figures(out, options); // mean first: the default figure
    out.number("time_above", this.above);
  }
}

class Percent extends KeyType<PercentOptions, PercentSummary> {
  constructor() {
    super("percent", "A percentage (0 to 100) with a deadband; figure time_above counts seconds above a threshold");
  }

  cast(options: PercentOptions, input: Input): Result<Value> {
    const cast = castNumber(this.name, input);
    if (!cast.isOk) return cast;
    const n = cast.unwrap().num;
    if (n < 0 || n > 100) {
      return Result.err<Value>(new Refusal("out_of_range", numberText(n) + " is not a percentage from 0 to 100"));
    }
    return cast;
  }

  shouldStore(options: PercentOptions, latest: Point | null, point: Point, kind: OperationKind): bool {
    if (!options.resolution.shouldStore(latest, point)) return false;
    if (latest == null || !latest.value.isNumber || point.time < latest.time) return true;
    return Math.abs(point.value.num - latest.value.num) >= options.deadband;
  }
}

register(new Percent());

export * from "komoku-key-type/assembly/exports";
