// Mergeable summaries of time buckets and their binary encodings, compatible with the Rust
// SDK's (`guest-types/sdk/src/summary`): the same tag bytes and layouts, so a summary
// written by either decodes in the other.
//
// A bucket is a half-open time range `[start, end)`. A value holds from its point's time
// until the next point or the bucket's end; before the first point, the value in force is
// the one carried in from before the bucket, and without one the time is unknown (not
// counted). Summaries of adjacent buckets merge, oldest first, into exactly the summary of
// their union.

import { Reader, Writer } from "./codec";
import { numberJson } from "./json";
import { Options } from "./options";
import { codes, Point, Refusal, Result, Value } from "./types";

/** One bucket's share of a `summarize` call. */
export class Bucket {
  constructor(
    /** The first instant in the bucket. */
    public start: f64,
    /** The first instant after the bucket (`>= start`). */
    public end: f64,
    /** The value in force at `start`, if known. */
    public initial: Value | null,
    /** The points in `[start, end)`, in time order. */
    public points: Point[],
  ) {}
}

/**
 * Splits a `summarize` call into buckets: `edges` has n+1 ascending times for n buckets,
 * `carried` is the point in force at `edges[0]`, `points` are sorted by time. Points before
 * `edges[0]` count as carried, points from `edges[n]` on are ignored, and a descending edge
 * is treated as an empty bucket.
 */
export function buckets(edges: f64[], carried: Point | null, points: Point[]): Bucket[] {
  const result = new Array<Bucket>(0);
  if (edges.length == 0) return result;
  let initial: Value | null = carried == null ? null : carried.value;
  let next = 0;
  while (next < points.length && points[next].time < edges[0]) {
    initial = points[next].value;
    next++;
  }
  for (let i = 0; i + 1 < edges.length; i++) {
    const start = edges[i];
    const end = Math.max(edges[i + 1], start);
    const from = next;
    while (next < points.length && points[next].time < end) next++;
    result.push(new Bucket(start, end, initial, points.slice(from, next)));
    if (next > from) initial = points[next - 1].value;
  }
  return result;
}

/** Sorts points by time (stable), when they are not sorted already. */
export function sortByTime(points: Point[]): Point[] {
  for (let i = 1; i < points.length; i++) {
    if (points[i - 1].time > points[i].time) {
      // Insertion sort: stable, and histories handed to a plugin come almost sorted.
      for (let j = i; j < points.length; j++) {
        const p = points[j];
        let k = j;
        while (k > 0 && points[k - 1].time > p.time) {
          points[k] = points[k - 1];
          k--;
        }
        points[k] = p;
      }
      break;
    }
  }
  return points;
}

/**
 * A mergeable summary of one bucket of a key's history. Extend it, give the class a
 * constructor without arguments (the empty summary: nothing known), implement `encode` and
 * `decode`, and give it three more methods, typed with your own classes (the SDK calls them
 * on your class itself, so no downcast is needed anywhere):
 *
 * ```ts
 * summarize(bucket: Bucket, options: MyOptions): void   // fill this empty summary from one bucket
 * merge(next: MySummary, options: MyOptions): void      // become this bucket followed by `next`
 * figures(out: Figures, options: MyOptions): void        // report every figure; the first is the default
 * ```
 *
 * `figures` is the one place that names the figures: the SDK asks an empty summary for the
 * list (the world's `figures` export) and picks what `render` asked for.
 */
export abstract class Summary {
  /** Writes the encoding: a tag byte naming the format, then the fields. */
  abstract encode(w: Writer): void;

  /** Reads what `encode` wrote (tag included) into this empty summary; failures go to `r`. */
  abstract decode(r: Reader): void;
}

/** The encoding of `summary`, as bytes. */
export function encodeSummary<S extends Summary>(summary: S): Uint8Array {
  const w = new Writer();
  summary.encode(w);
  return w.finish();
}

/** The summary `bytes` encode, or a refusal (`invalid_summary`) saying why not. */
export function decodeSummary<S extends Summary>(bytes: Uint8Array): Result<S> {
  const s = instantiate<S>();
  const r = new Reader(bytes);
  s.decode(r);
  if (!r.finish()) return Result.err<S>(new Refusal(codes.INVALID_SUMMARY, r.error));
  return Result.ok<S>(s);
}

/** A point as a figure: `{"time": t, "value": v}` (`value` is JSON text). */
export function pointJson(time: f64, value: string): string {
  return '{"time":' + numberJson(time) + ',"value":' + value + "}";
}

/** `numerator / denominator` as a figure, `null` when the denominator is 0. */
export function ratioJson(numerator: f64, denominator: f64): string {
  return denominator > 0 ? numberJson(numerator / denominator) : "null";
}

/**
 * The figures of one summary, as its `figures` method reports them (name, JSON text), in
 * the order reported. The first is the type's default figure.
 */
export class Figures {
  names: string[] = [];
  values: string[] = [];

  /** A figure given as JSON text. */
  json(name: string, json: string): void {
    this.names.push(name);
    this.values.push(json);
  }

  /** A number (integral ones without a fraction, non-finite ones `null`). */
  number(name: string, n: f64): void {
    this.json(name, numberJson(n));
  }

  /** A number when `present`, else `null`. */
  optional(name: string, present: bool, n: f64): void {
    this.json(name, present ? numberJson(n) : "null");
  }

  /** A count. */
  count(name: string, n: u64): void {
    this.json(name, n.toString());
  }

  /** `numerator / denominator`, `null` when the denominator is 0. */
  ratio(name: string, numerator: f64, denominator: f64): void {
    this.json(name, ratioJson(numerator, denominator));
  }

  /** The JSON text of figure `name`, or null when it was not reported. */
  get(name: string): string | null {
    for (let i = 0; i < this.names.length; i++) if (this.names[i] == name) return this.values[i];
    return null;
  }
}

// --- numbers ----------------------------------------------------------------------------

const NUMBER_TAG: u8 = 0x4e; // 'N'
const HAS_START: u8 = 1;
const HAS_RANGE: u8 = 2;
const HAS_POINTS: u8 = 4;

/**
 * The time-weighted summary of a number over a bucket (the Rust SDK's `NumberSummary`,
 * byte for byte). Figures: `mean` (the default), `min`, `max`, `first`, `last`, `count`,
 * `integral`, `coverage_seconds`.
 *
 * Encoding (tag `N`):
 *
 * ```text
 * u8 'N'
 * u8 flags: 1 = start present, 2 = min/max present, 4 = first/last present
 * f64 known        seconds during which a value was known
 * f64 integral     sum of value × seconds
 * varint count     points in the bucket
 * [f64 start]                      the value in force at the bucket's start
 * [f64 min, f64 max]               over the values held for some time in the bucket
 * [f64 t, f64 v, f64 t, f64 v]     first point, last point
 * ```
 */
export class NumberSummary extends Summary {
  /** Seconds during which a value was known. */
  known: f64 = 0;
  /** The integral of the value over known time (value × seconds). */
  integral: f64 = 0;
  /** How many points lie in the bucket. */
  count: u64 = 0;
  /** The value in force at the bucket's start (carried in), when `hasStart`. */
  hasStart: bool = false;
  start: f64 = 0;
  /**
   * The least and greatest values held for some time in the bucket, when `hasRange`: the
   * start value unless a point replaces it at the bucket's very start, and the points
   * (a point replaced at the same instant held for no time and does not count).
   */
  hasRange: bool = false;
  min: f64 = 0;
  max: f64 = 0;
  /** The first and last points in the bucket, when `hasPoints`. */
  hasPoints: bool = false;
  firstTime: f64 = 0;
  firstValue: f64 = 0;
  lastTime: f64 = 0;
  lastValue: f64 = 0;

  /** Summarises one bucket; values that are not numbers are skipped. */
  summarize(bucket: Bucket, options: Options): void {
    const initial = bucket.initial;
    let holding = false;
    let held: f64 = 0;
    let since: f64 = 0;
    if (initial != null && initial.isNumber) {
      this.hasStart = true;
      this.start = initial.num;
      holding = true;
      held = initial.num;
      since = bucket.start;
    }
    for (let i = 0; i < bucket.points.length; i++) {
      const point = bucket.points[i];
      if (!point.value.isNumber) continue;
      const value = point.value.num;
      if (holding) this.hold(held, point.time - since);
      holding = true;
      held = value;
      since = point.time;
      this.count++;
      if (!this.hasPoints) {
        this.hasPoints = true;
        this.firstTime = point.time;
        this.firstValue = value;
      }
      this.lastTime = point.time;
      this.lastValue = value;
    }
    if (holding) this.hold(held, bucket.end - since);
  }

  /** Whether nothing at all is known about the bucket. */
  get isEmpty(): bool {
    return this.known == 0 && !this.hasStart && this.count == 0;
  }

  /** The time-weighted mean; NaN when no time is known. */
  get mean(): f64 {
    return this.known > 0 ? this.integral / this.known : NaN;
  }

  private widen(value: f64): void {
    if (!this.hasRange) {
      this.hasRange = true;
      this.min = value;
      this.max = value;
    } else {
      this.min = Math.min(this.min, value);
      this.max = Math.max(this.max, value);
    }
  }

  /** Counts `value` holding for `seconds` (among the values in force if `seconds > 0`). */
  private hold(value: f64, seconds: f64): void {
    if (seconds > 0) this.widen(value);
    this.known += seconds;
    this.integral += value * seconds;
  }

  /** Becomes the summary of this bucket followed by the adjacent, later `next`. */
  merge(next: NumberSummary, options: Options): void {
    if (next.isEmpty) return;
    if (this.isEmpty) {
      this.copyFrom(next);
      return;
    }
    this.known += next.known;
    this.integral += next.integral;
    this.count += next.count;
    if (next.hasRange) {
      this.widen(next.min);
      this.widen(next.max);
    }
    if (!this.hasPoints && next.hasPoints) {
      this.hasPoints = true;
      this.firstTime = next.firstTime;
      this.firstValue = next.firstValue;
    }
    if (next.hasPoints) {
      this.lastTime = next.lastTime;
      this.lastValue = next.lastValue;
    }
  }

  private copyFrom(c: NumberSummary): void {
    this.known = c.known;
    this.integral = c.integral;
    this.count = c.count;
    this.hasStart = c.hasStart;
    this.start = c.start;
    this.hasRange = c.hasRange;
    this.min = c.min;
    this.max = c.max;
    this.hasPoints = c.hasPoints;
    this.firstTime = c.firstTime;
    this.firstValue = c.firstValue;
    this.lastTime = c.lastTime;
    this.lastValue = c.lastValue;
  }

  encode(w: Writer): void {
    w.u8(NUMBER_TAG);
    let flags: u8 = 0;
    if (this.hasStart) flags |= HAS_START;
    if (this.hasRange) flags |= HAS_RANGE;
    if (this.hasPoints) flags |= HAS_POINTS;
    w.u8(flags);
    w.f64(this.known);
    w.f64(this.integral);
    w.varint(this.count);
    if (this.hasStart) w.f64(this.start);
    if (this.hasRange) {
      w.f64(this.min);
      w.f64(this.max);
    }
    if (this.hasPoints) {
      w.f64(this.firstTime);
      w.f64(this.firstValue);
      w.f64(this.lastTime);
      w.f64(this.lastValue);
    }
  }

  decode(r: Reader): void {
    r.tag(NUMBER_TAG);
    const flags = r.u8();
    if ((flags & ~(HAS_START | HAS_RANGE | HAS_POINTS)) != 0) r.fail("unknown flags " + flags.toString());
    this.known = r.f64();
    this.integral = r.f64();
    this.count = r.varint();
    if (flags & HAS_START) {
      this.hasStart = true;
      this.start = r.f64();
    }
    if (flags & HAS_RANGE) {
      this.hasRange = true;
      this.min = r.f64();
      this.max = r.f64();
    }
    if (flags & HAS_POINTS) {
      this.hasPoints = true;
      this.firstTime = r.f64();
      this.firstValue = r.f64();
      this.lastTime = r.f64();
      this.lastValue = r.f64();
    }
  }

  /** A gauge's figures; `mean` first, the default. */
  figures(out: Figures, options: Options): void {
    out.ratio("mean", this.integral, this.known);
    out.optional("min", this.hasRange, this.min);
    out.optional("max", this.hasRange, this.max);
    out.json("first", this.hasPoints ? pointJson(this.firstTime, numberJson(this.firstValue)) : "null");
    out.json("last", this.hasPoints ? pointJson(this.lastTime, numberJson(this.lastValue)) : "null");
    out.count("count", this.count);
    out.number("integral", this.integral);
    out.number("coverage_seconds", this.known);
  }
}
