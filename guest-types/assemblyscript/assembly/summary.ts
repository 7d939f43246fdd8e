// Mergeable summaries of time buckets and their binary encodings, compatible with the Rust
// SDK's (`guest-types/sdk/src/summary`): the same tag bytes and layouts, so a summary
// written by either decodes in the other.
//
// A bucket is a half-open time range `[start, end)`. A value holds from its point's time
// until the next point or the bucket's end; before the first point, the value in force is
// the one carried in from before the bucket, and without one the time is unknown (not
// counted). Summaries of adjacent buckets merge, oldest first, into exactly the summary of
// their union.

import { numberJson } from "./json";
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
 * A mergeable summary of one bucket of a key's history. Implementations also need a way
 * to be decoded and an empty value: see `KeyType.decodeSummary` and `KeyType.emptySummary`.
 */
export abstract class Summary {
  /** The summary of this bucket followed by the adjacent, later `next` (of the same kind). */
  abstract merge(next: Summary): Summary;

  /** The binary encoding (first byte: the format's tag). */
  abstract encode(): Uint8Array;

  /** One named figure as JSON text, or null for a name this summary does not know. */
  abstract figure(name: string): string | null;

  /** The default figure, a bare JSON scalar (`null` when nothing is known). */
  abstract defaultFigure(): string;
}

/** A point as a figure: `{"time": t, "value": v}` (`value` is JSON text). */
export function pointJson(time: f64, value: string): string {
  return '{"time":' + numberJson(time) + ',"value":' + value + "}";
}

/** `numerator / denominator` as a figure, `null` when the denominator is 0. */
export function ratioJson(numerator: f64, denominator: f64): string {
  return denominator > 0 ? numberJson(numerator / denominator) : "null";
}

// --- encodings --------------------------------------------------------------------------

/** Writes an encoding: a tag byte, little-endian f64s, LEB128 varints, texts. */
export class Writer {
  private buf: Uint8Array = new Uint8Array(64);
  private len: i32 = 0;

  constructor(tag: u8) {
    this.u8(tag);
  }

  private reserve(n: i32): void {
    if (this.len + n <= this.buf.length) return;
    let capacity = this.buf.length * 2;
    while (capacity < this.len + n) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.buf);
    this.buf = grown;
  }

  u8(byte: u8): void {
    this.reserve(1);
    this.buf[this.len++] = byte;
  }

  f64(n: f64): void {
    this.reserve(8);
    store<f64>(this.buf.dataStart + <usize>this.len, n);
    this.len += 8;
  }

  varint(n: u64): void {
    while (true) {
      const low = <u8>(n & 0x7f);
      n >>= 7;
      if (n == 0) {
        this.u8(low);
        return;
      }
      this.u8(low | 0x80);
    }
  }

  /** A varint byte length, then UTF-8 (lone surrogates become U+FFFD). */
  text(text: string): void {
    const bytes = String.UTF8.encode(text, false, String.UTF8.ErrorMode.REPLACE);
    this.varint(<u64>bytes.byteLength);
    this.reserve(bytes.byteLength);
    memory.copy(this.buf.dataStart + <usize>this.len, changetype<usize>(bytes), bytes.byteLength);
    this.len += bytes.byteLength;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Reads an encoding written by [`Writer`]; the first failure is kept in `error`. */
export class Reader {
  private pos: i32 = 1;
  /** Why decoding failed ("" while it has not). */
  error: string = "";

  /** A reader over `bytes`, which must start with `tag`. */
  constructor(
    private bytes: Uint8Array,
    tag: u8,
  ) {
    if (bytes.length == 0) this.fail("empty summary");
    else if (bytes[0] != tag) {
      this.fail("tag " + String.fromCharCode(bytes[0]) + " instead of " + String.fromCharCode(tag));
    }
  }

  get ok(): bool {
    return this.error.length == 0;
  }

  private fail(what: string): void {
    if (this.ok) this.error = what;
  }

  private take(n: i32): bool {
    if (!this.ok) return false;
    if (this.bytes.length - this.pos < n) {
      this.fail("summary cut short");
      return false;
    }
    this.pos += n;
    return true;
  }

  u8(): u8 {
    return this.take(1) ? this.bytes[this.pos - 1] : 0;
  }

  f64(): f64 {
    return this.take(8) ? load<f64>(this.bytes.dataStart + <usize>(this.pos - 8)) : 0;
  }

  varint(): u64 {
    let n: u64 = 0;
    for (let shift: u64 = 0; shift < 64; shift += 7) {
      const byte = this.u8();
      if (!this.ok) return 0;
      n |= (<u64>(byte & 0x7f)) << shift;
      if ((byte & 0x80) == 0) return n;
    }
    this.fail("varint too long");
    return 0;
  }

  text(): string {
    const len = this.varint();
    if (len > <u64>(this.bytes.length - this.pos)) {
      this.fail("summary cut short");
      return "";
    }
    if (!this.take(<i32>len)) return "";
    return String.UTF8.decodeUnsafe(this.bytes.dataStart + <usize>(this.pos - <i32>len), <usize>len);
  }

  /** Checks that nothing is left; false (with `error` set) otherwise. */
  finish(): bool {
    if (this.ok && this.pos != this.bytes.length) {
      this.fail((this.bytes.length - this.pos).toString() + " trailing bytes");
    }
    return this.ok;
  }
}

// --- numbers ----------------------------------------------------------------------------

const NUMBER_TAG: u8 = 0x4e; // 'N'
const HAS_START: u8 = 1;
const HAS_RANGE: u8 = 2;
const HAS_POINTS: u8 = 4;

/** The figures of a gauge: what [`NumberSummary.figure`] knows. */
export const GAUGE_FIGURES: string[] = [
  "mean",
  "min",
  "max",
  "first",
  "last",
  "count",
  "integral",
  "coverage_seconds",
];

function optJson(present: bool, n: f64): string {
  return present ? numberJson(n) : "null";
}

/**
 * The time-weighted summary of a number over a bucket (the Rust SDK's `NumberSummary`).
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
 * [f64 min, f64 max]               over start and the bucket's points
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
  /** The least and greatest values in force during the bucket, when `hasRange`. */
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
  static fromBucket(bucket: Bucket): NumberSummary {
    const s = new NumberSummary();
    const initial = bucket.initial;
    let holding = false;
    let held: f64 = 0;
    let since: f64 = 0;
    if (initial != null && initial.isNumber) {
      s.hasStart = true;
      s.start = initial.num;
      s.widen(initial.num);
      holding = true;
      held = initial.num;
      since = bucket.start;
    }
    for (let i = 0; i < bucket.points.length; i++) {
      const point = bucket.points[i];
      if (!point.value.isNumber) continue;
      const value = point.value.num;
      if (holding) s.hold(held, point.time - since);
      holding = true;
      held = value;
      since = point.time;
      s.count++;
      if (!s.hasPoints) {
        s.hasPoints = true;
        s.firstTime = point.time;
        s.firstValue = value;
      }
      s.lastTime = point.time;
      s.lastValue = value;
      s.widen(value);
    }
    if (holding) s.hold(held, bucket.end - since);
    return s;
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

  private hold(value: f64, seconds: f64): void {
    this.known += seconds;
    this.integral += value * seconds;
  }

  merge(other: Summary): Summary {
    const next = <NumberSummary>other;
    if (this.isEmpty) return next;
    if (next.isEmpty) return this;
    const m = this.copy();
    m.known += next.known;
    m.integral += next.integral;
    m.count += next.count;
    if (next.hasRange) {
      m.widen(next.min);
      m.widen(next.max);
    }
    if (!m.hasPoints && next.hasPoints) {
      m.hasPoints = true;
      m.firstTime = next.firstTime;
      m.firstValue = next.firstValue;
    }
    if (next.hasPoints) {
      m.lastTime = next.lastTime;
      m.lastValue = next.lastValue;
    }
    return m;
  }

  private copy(): NumberSummary {
    const c = new NumberSummary();
    c.known = this.known;
    c.integral = this.integral;
    c.count = this.count;
    c.hasStart = this.hasStart;
    c.start = this.start;
    c.hasRange = this.hasRange;
    c.min = this.min;
    c.max = this.max;
    c.hasPoints = this.hasPoints;
    c.firstTime = this.firstTime;
    c.firstValue = this.firstValue;
    c.lastTime = this.lastTime;
    c.lastValue = this.lastValue;
    return c;
  }

  encode(): Uint8Array {
    const w = new Writer(NUMBER_TAG);
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
    return w.finish();
  }

  /** Reads an encoding back, or refuses it (`invalid_summary`, saying why). */
  static decode(bytes: Uint8Array): Result<Summary> {
    const r = new Reader(bytes, NUMBER_TAG);
    const flags = r.u8();
    if (r.ok && (flags & ~(HAS_START | HAS_RANGE | HAS_POINTS)) != 0) {
      return Result.err<Summary>(new Refusal(codes.INVALID_SUMMARY, "unknown flags " + flags.toString()));
    }
    const s = new NumberSummary();
    s.known = r.f64();
    s.integral = r.f64();
    s.count = r.varint();
    if (flags & HAS_START) {
      s.hasStart = true;
      s.start = r.f64();
    }
    if (flags & HAS_RANGE) {
      s.hasRange = true;
      s.min = r.f64();
      s.max = r.f64();
    }
    if (flags & HAS_POINTS) {
      s.hasPoints = true;
      s.firstTime = r.f64();
      s.firstValue = r.f64();
      s.lastTime = r.f64();
      s.lastValue = r.f64();
    }
    if (!r.finish()) return Result.err<Summary>(new Refusal(codes.INVALID_SUMMARY, r.error));
    return Result.ok<Summary>(s);
  }

  figure(name: string): string | null {
    if (name == "mean") return ratioJson(this.integral, this.known);
    if (name == "min") return optJson(this.hasRange, this.min);
    if (name == "max") return optJson(this.hasRange, this.max);
    if (name == "first") {
      return this.hasPoints ? pointJson(this.firstTime, numberJson(this.firstValue)) : "null";
    }
    if (name == "last") return this.hasPoints ? pointJson(this.lastTime, numberJson(this.lastValue)) : "null";
    if (name == "count") return this.count.toString();
    if (name == "integral") return numberJson(this.integral);
    if (name == "coverage_seconds") return numberJson(this.known);
    return null;
  }

  defaultFigure(): string {
    return ratioJson(this.integral, this.known);
  }
}
