// Key options: a JSON object in, typed fields out, and the complete object back.
//
// A type reads each of its fields from an `OptionsReader`, which records the value it
// settled on (given or default) so that the complete object comes back from one description
// of the fields. Rules (the built-ins'): an unknown option, a wrong type or an out-of-range
// value is refused with `invalid_option`; `null` stands for the default.
//
// AssemblyScript has no exceptions, so the reader keeps the first refusal and hands back
// defaults after it; the SDK checks `refusal` once the type has read its fields.

import { Json, JsonKind, JsonObjectWriter, numberJson, parseJson, stringJson } from "./json";
import { Reader, Writer } from "./codec";
import { Point, Refusal } from "./types";

/** The tag byte of the options encoding `check-options` returns. */
const OPTIONS_TAG: u8 = 0x4f; // 'O'

/**
 * Reads typed fields of a key's options. Your `Options.read` asks it for each field once,
 * in a fixed order; the same method serves both ways the SDK reads options:
 *
 * - in `check-options`, from the JSON object `define` gave: it refuses unknown options,
 *   wrong types and out-of-range values (`invalid_option`), fills in defaults, and records
 *   the complete object (keys sorted) and a compact binary encoding of the values;
 * - in every later call, from that encoding (handed back by the host): no JSON, no names,
 *   just the values in the order they were read.
 */
export class OptionsReader {
  /** The first refusal, if any; later reads then return their defaults. */
  refusal: Refusal | null = null;
  private given: Json = new Json();
  private taken: bool[] = [];
  private complete: JsonObjectWriter = new JsonObjectWriter();
  private known: string[] = [];
  private encoded: Writer = new Writer();
  private input: Reader | null = null;

  /** A reader over JSON `text`, which must be a JSON object. */
  constructor(text: string) {
    this.encoded.u8(OPTIONS_TAG);
    const parsed = parseJson(text);
    const value = parsed.value;
    if (value == null) {
      this.refuse("options are not JSON: " + parsed.error);
    } else if (value.kind != JsonKind.Object) {
      this.refuse("options must be a JSON object, got " + kind(value));
    } else {
      this.given = value;
    }
    for (let i = 0; i < this.given.keys.length; i++) this.taken.push(false);
  }

  /** A reader over options encoded by an earlier `check-options` (`encoding()`). */
  static fromEncoding(bytes: Uint8Array): OptionsReader {
    const reader = new OptionsReader("{}");
    const input = new Reader(bytes);
    input.tag(OPTIONS_TAG);
    reader.input = input;
    return reader;
  }

  private refuse(message: string): void {
    if (this.refusal == null) this.refusal = Refusal.invalidOption(message);
  }

  private wrong(name: string, expected: string, got: Json): void {
    this.refuse("option " + stringJson(name) + " must be " + expected + ", got " + kind(got));
  }

  /** Takes option `name` out of the given ones; null when absent or `null`. */
  private take(name: string): Json | null {
    this.known.push(name);
    let found: Json | null = null;
    for (let i = 0; i < this.given.keys.length; i++) {
      if (this.given.keys[i] == name) {
        this.taken[i] = true;
        found = this.given.items[i];
      }
    }
    if (found != null && found.isNull) return null;
    return found;
  }

  /** A number for which `valid` holds (described by `expected`, e.g. "a number >= 0"). */
  number(name: string, defaultValue: f64, expected: string, valid: (n: f64) => bool): f64 {
    const input = this.input;
    if (input != null) return input.f64();
    let value = defaultValue;
    const json = this.take(name);
    if (json != null) {
      if (json.kind == JsonKind.Number && isFinite(json.num) && valid(json.num)) value = json.num;
      else this.wrong(name, expected, json);
    }
    this.complete.set(name, numberJson(value));
    this.encoded.f64(value);
    return value;
  }

  /** A duration in seconds, a finite number >= 0. */
  seconds(name: string, defaultValue: f64): f64 {
    return this.number(name, defaultValue, "a number of seconds >= 0", (n: f64): bool => n >= 0);
  }

  /** A duration in seconds, a finite number > 0. */
  positiveSeconds(name: string, defaultValue: f64): f64 {
    return this.number(name, defaultValue, "a number of seconds > 0", (n: f64): bool => n > 0);
  }

  /** `true` or `false`. */
  boolean(name: string, defaultValue: bool): bool {
    const input = this.input;
    if (input != null) return input.u8() != 0;
    let value = defaultValue;
    const json = this.take(name);
    if (json != null) {
      if (json.kind == JsonKind.Boolean) value = json.flag;
      else this.wrong(name, "true or false", json);
    }
    this.complete.set(name, value ? "true" : "false");
    this.encoded.u8(value ? 1 : 0);
    return value;
  }

  /** One of `choices` (strings). */
  choice(name: string, choices: string[], defaultValue: string): string {
    const input = this.input;
    if (input != null) return input.text();
    let value = defaultValue;
    const json = this.take(name);
    if (json != null) {
      if (json.kind == JsonKind.String && choices.includes(json.str)) value = json.str;
      else {
        const quoted = new Array<string>(choices.length);
        for (let i = 0; i < choices.length; i++) quoted[i] = stringJson(choices[i]);
        this.wrong(name, "one of " + quoted.join(", "), json);
      }
    }
    this.complete.set(name, stringJson(value));
    this.encoded.text(value);
    return value;
  }

  /** `null` or a non-empty list of strings. Default = null. */
  stringList(name: string): string[] | null {
    const input = this.input;
    if (input != null) {
      const n = input.varint();
      if (n == 0) return null;
      const list = new Array<string>(0);
      for (let i: u64 = 1; i < n && input.ok; i++) list.push(input.text());
      return list;
    }
    const json = this.take(name);
    let value: string[] | null = null;
    if (json != null) {
      let ok = json.kind == JsonKind.Array && json.items.length > 0;
      for (let i = 0; ok && i < json.items.length; i++) ok = json.items[i].kind == JsonKind.String;
      if (ok) {
        const list = new Array<string>(json.items.length);
        for (let i = 0; i < list.length; i++) list[i] = json.items[i].str;
        value = list;
      } else {
        this.wrong(name, "null or a non-empty list of strings", json);
      }
    }
    if (value == null) {
      this.complete.set(name, "null");
      this.encoded.varint(0);
    } else {
      const quoted = new Array<string>(value.length);
      for (let i = 0; i < value.length; i++) quoted[i] = stringJson(value[i]);
      this.complete.set(name, "[" + quoted.join(",") + "]");
      this.encoded.varint(<u64>value.length + 1);
      for (let i = 0; i < value.length; i++) this.encoded.text(value[i]);
    }
    return value;
  }

  /**
   * Ends reading. From JSON: refuses options left over, and returns the complete object as
   * JSON text (keys sorted), or null after a refusal. From an encoding: checks it was read
   * to its end (null, with `refusal` set, when not).
   */
  finish(): string | null {
    const input = this.input;
    if (input != null) {
      if (!input.finish()) this.refuse("options encoded by another version of the type: " + input.error);
      return this.refusal == null ? "" : null;
    }
    for (let i = 0; i < this.given.keys.length; i++) {
      if (!this.taken[i]) {
        this.refuse("unknown option " + stringJson(this.given.keys[i]) + "; known options: " + this.known.join(", "));
        break;
      }
    }
    if (this.refusal != null) return null;
    return this.complete.toString();
  }

  /** The binary encoding of the values read from JSON (after `finish`). */
  encoding(): Uint8Array {
    return this.encoded.finish();
  }
}

/** Names a JSON value for messages: its kind, and the value when short. */
function kind(json: Json): string {
  if (json.kind == JsonKind.Null) return "null";
  const text = json.toString();
  let what = "object";
  if (json.kind == JsonKind.Boolean) what = "boolean";
  else if (json.kind == JsonKind.Number) what = "number";
  else if (json.kind == JsonKind.String) what = "string";
  else if (json.kind == JsonKind.Array) what = "list";
  return text.length <= 40 ? what + " " + text : what;
}

/**
 * The resolution options every built-in type has, and the store decision they make.
 *
 * Given the key's latest stored point `p` and a new point at `t`: a backfill (`t < p.time`)
 * is stored; the same value less than `same_value_resolution` after `p` is not; any value
 * less than `min_resolution` after `p` is not; everything else is.
 */
export class Resolution {
  constructor(
    /** `same_value_resolution`: seconds within which a repeat of the latest value is not stored. */
    public sameValue: f64 = 0,
    /** `min_resolution`: seconds within which no new value is stored. */
    public min: f64 = 0,
  ) {}

  /** Reads `same_value_resolution` and `min_resolution` (both default 0). */
  static read(reader: OptionsReader): Resolution {
    const sameValue = reader.seconds("same_value_resolution", 0);
    const min = reader.seconds("min_resolution", 0);
    return new Resolution(sameValue, min);
  }

  /** The full store decision. */
  shouldStore(previous: Point | null, point: Point): bool {
    return !(this.isCloseRepeat(previous, point) || this.isTooSoon(previous, point));
  }

  /** Whether `point` repeats `previous`'s value less than `same_value_resolution` after it. */
  isCloseRepeat(previous: Point | null, point: Point): bool {
    if (previous == null) return false;
    return (
      point.time >= previous.time &&
      previous.value.equals(point.value) &&
      point.time - previous.time < this.sameValue
    );
  }

  /** Whether `point` comes less than `min_resolution` after `previous` (never a backfill). */
  isTooSoon(previous: Point | null, point: Point): bool {
    if (previous == null) return false;
    return point.time >= previous.time && point.time - previous.time < this.min;
  }
}

/**
 * A key's options, parsed. Extend it to add fields, and override `read` to read them (call
 * `super.read(reader)` first for the resolution options): the one description of your
 * options serves `check-options` (JSON in, complete JSON and an encoding out) and every
 * later call (the encoding in). `resolution` drives the default store decision.
 */
export class Options {
  resolution: Resolution = new Resolution();

  /** Reads every field from `reader`. Default = the resolution options. */
  read(reader: OptionsReader): void {
    this.resolution = Resolution.read(reader);
  }
}
