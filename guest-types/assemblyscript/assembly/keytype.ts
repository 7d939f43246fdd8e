// The key type an author extends, with the defaults of the Rust SDK's `KeyType`, and the
// world's functions in terms of it (what the exports in `exports.ts` call after lifting).

import { stringJson } from "./json";
import { Options, OptionsReader } from "./options";
import { PACKAGE_VERSION } from "./package";
import { buckets, Bucket, decodeSummary, encodeSummary, Figures, sortByTime, Summary } from "./summary";
import {
  CheckedOptions,
  codes,
  Info,
  Input,
  Operation,
  OperationKind,
  Outcome,
  Point,
  Refusal,
  Result,
  Scheduled,
  TimedOperation,
  Value,
} from "./types";

/**
 * The world's functions on AssemblyScript values: what `register` keeps and the exports
 * call. `KeyType` implements it; authors extend `KeyType`, not this.
 */
export abstract class Plugin {
  abstract worldInfo(): Info;
  abstract worldFigures(): string[];
  abstract worldGuess(sample: Input): u8;
  abstract worldCheckOptions(text: string): Result<CheckedOptions>;
  abstract worldMigrateOptions(text: string): Result<string>;
  abstract worldDefaultRetention(): string | null;
  abstract worldApply(options: Uint8Array, latest: Point | null, ops: TimedOperation[]): Result<Outcome>[];
  abstract worldReschedule(options: Uint8Array, latest: Point): Scheduled | null;
  abstract worldSummarize(options: Uint8Array, edges: f64[], carried: Point | null, points: Point[]): Uint8Array[];
  abstract worldMerge(options: Uint8Array, parts: Uint8Array[]): Uint8Array;
  abstract worldRender(options: Uint8Array, summaries: Uint8Array[], figures: string[]): Result<string>;
}

/** How many distinct encoded options the memo keeps (most recently used first). */
const MEMO_SIZE = 16;

function sameBytes(a: Uint8Array, b: Uint8Array): bool {
  if (a.length != b.length) return false;
  return memory.compare(a.dataStart, b.dataStart, <usize>a.length) == 0;
}

/**
 * A key type: every rule of one type of key, with its options class `O` (extend `Options`)
 * and its summary class `S` (extend `Summary`, or use `NumberSummary`). Your methods get
 * `O` and `S` themselves: no downcasts.
 *
 * Extend it, give the constructor your name and description (the version is the `version`
 * of your package.json), implement `cast`, override what differs from the defaults, and
 * pass an instance to `register` at the top level of your entry file.
 *
 * Defaults: `guess` 0; `add` refused (`unsupported_operation`); the store decision of the
 * options' `resolution`; no schedule; summaries and figures are `S`'s; no default retention
 * policy of its own (the server's applies); no options migration.
 */
export abstract class KeyType<O extends Options, S extends Summary> extends Plugin {
  private memoBytes: Uint8Array[] = [];
  private memoOptions: O[] = [];
  private figureNames: string[] | null = null;

  constructor(
    /** The name clients use (`temperature_celsius`, ...). */
    public name: string,
    /** One line for humans. */
    public description: string,
  ) {
    super();
  }

  /** How strongly this type claims a key created by a first `put` of `sample`. Default = 0. */
  guess(sample: Input): u8 {
    return 0;
  }

  /** Casts a client's value to this type, or refuses it. */
  abstract cast(options: O, input: Input): Result<Value>;

  /** The value after adding `step` to the key. Default = refused (`unsupported_operation`). */
  add(options: O, latest: Point | null, step: f64): Result<Value> {
    return Result.err<Value>(Refusal.unsupportedOperation(this.name + " keys do not support increment or decrement"));
  }

  /** Whether `point` is written to history, given the key's latest point. Default = the options' resolution rules. */
  shouldStore(options: O, latest: Point | null, point: Point, kind: OperationKind): bool {
    return options.resolution.shouldStore(latest, point);
  }

  /** The automatic value pending while `latest` is the key's latest point. Default = none. */
  schedule(options: O, latest: Point): Scheduled | null {
    return null;
  }

  /**
   * Applies one operation given the key's latest point. Default: cast (`set`) or `add`,
   * decide storage with `shouldStore`, and schedule from the newer of `latest` and the new
   * point. (The SDK applies a batch by calling this once per operation, with the latest
   * point as the operations before left it.)
   */
  apply(options: O, latest: Point | null, op: Operation, time: f64): Result<Outcome> {
    const cast = op.kind == OperationKind.Set ? this.cast(options, op.input) : this.add(options, latest, op.step);
    const refusal = cast.refusal;
    if (refusal != null) return Result.err<Outcome>(refusal);
    const point = new Point(time, cast.unwrap());
    const store = this.shouldStore(options, latest, point, op.kind);
    let newest = point;
    if (latest != null && latest.time > time) newest = latest;
    return Result.ok<Outcome>(new Outcome(point.value, store, this.schedule(options, newest)));
  }

  /** Summarises one bucket. Default = `S`'s own `summarize(bucket, options)`. */
  summarizeBucket(options: O, bucket: Bucket): S {
    const s = instantiate<S>();
    s.summarize(bucket, options);
    return s;
  }

  /**
   * The retention policy of this type's keys when no `retention` request covers them, as
   * JSON text in the shape of a `retention` request:
   * `{"raw": "7d", "tiers": [["1M", "30d"], ["1H", "2y"], ["1d", null]]}` keeps raw points
   * 7 days, then 1-minute summaries 30 days, 1-hour summaries 2 years and 1-day summaries
   * forever. The host reads it once, when the plugin loads, and refuses the plugin if the
   * policy is invalid. Default = null: the server's configured default applies.
   */
  defaultRetention(): string | null {
    return null;
  }

  /**
   * Migrates the options a key was defined with under an earlier version of this type (the
   * JSON object text `define` gave, not the completed one) to options this version accepts:
   * for a version that renames or removes an option existing keys have. The host calls it
   * when this version loads and `check-options` refuses a key's stored options; what it
   * returns is stored as the key's options, so return only what the key was given (renamed,
   * converted). A refusal (its message reaches the operator), or options this version
   * refuses too, keeps this version from loading while such keys exist.
   * Default = no migration (a refusal).
   */
  migrateOptions(options: string): Result<string> {
    return Result.err<string>(Refusal.invalidOption(this.name + " has no migration for options " + options));
  }

  // --- options -------------------------------------------------------------------------

  /** The options encoded by `check-options`, decoded (memoized: the host passes the same bytes for a key). */
  options(bytes: Uint8Array): O {
    for (let i = 0; i < this.memoBytes.length; i++) {
      if (sameBytes(this.memoBytes[i], bytes)) {
        const hit = this.memoOptions[i];
        if (i > 0) {
          const hitBytes = this.memoBytes[i];
          for (let j = i; j > 0; j--) {
            this.memoBytes[j] = this.memoBytes[j - 1];
            this.memoOptions[j] = this.memoOptions[j - 1];
          }
          this.memoBytes[0] = hitBytes;
          this.memoOptions[0] = hit;
        }
        return hit;
      }
    }
    const reader = OptionsReader.fromEncoding(bytes);
    const options = instantiate<O>();
    options.read(reader);
    // Bytes this version did not encode: the host hands back only what `check-options`
    // returned, so this is a host bug; trap rather than act on wrong options.
    if (reader.finish() == null) unreachable();
    this.memoBytes.unshift(bytes);
    this.memoOptions.unshift(options);
    if (this.memoBytes.length > MEMO_SIZE) {
      this.memoBytes.length = MEMO_SIZE;
      this.memoOptions.length = MEMO_SIZE;
    }
    return options;
  }

  // --- the world -----------------------------------------------------------------------

  worldInfo(): Info {
    return new Info(this.name, PACKAGE_VERSION, this.description, this.worldCheckOptions("{}").unwrap().json);
  }

  /** The names an empty summary reports (with the default options), worked out once. */
  worldFigures(): string[] {
    let names = this.figureNames;
    if (names == null) {
      const out = new Figures();
      instantiate<S>().figures(out, this.options(this.worldCheckOptions("{}").unwrap().encoded));
      names = out.names;
      this.figureNames = names;
    }
    return names;
  }

  worldGuess(sample: Input): u8 {
    return this.guess(sample);
  }

  worldCheckOptions(text: string): Result<CheckedOptions> {
    const reader = new OptionsReader(text);
    const options = instantiate<O>();
    options.read(reader);
    const complete = reader.finish();
    const refusal = reader.refusal;
    if (refusal != null || complete == null) {
      return Result.err<CheckedOptions>(refusal != null ? refusal : Refusal.invalidOption("invalid options"));
    }
    return Result.ok<CheckedOptions>(new CheckedOptions(complete, reader.encoding()));
  }

  worldMigrateOptions(text: string): Result<string> {
    return this.migrateOptions(text);
  }

  worldDefaultRetention(): string | null {
    return this.defaultRetention();
  }

  /** One key's operations, each seeing as latest the point the one before stored (the WIT's chaining rule). */
  worldApply(bytes: Uint8Array, latest: Point | null, ops: TimedOperation[]): Result<Outcome>[] {
    const options = this.options(bytes);
    const results = new Array<Result<Outcome>>(ops.length);
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i];
      const result = this.apply(options, latest, op.op, op.time);
      results[i] = result;
      if (!result.isOk) continue;
      const outcome = result.unwrap();
      if (outcome.store && (latest == null || op.time >= latest.time)) latest = new Point(op.time, outcome.value);
    }
    return results;
  }

  worldReschedule(bytes: Uint8Array, latest: Point): Scheduled | null {
    return this.schedule(this.options(bytes), latest);
  }

  /** One encoded summary per bucket (unsorted points are sorted first). */
  worldSummarize(bytes: Uint8Array, edges: f64[], carried: Point | null, points: Point[]): Uint8Array[] {
    const options = this.options(bytes);
    const split = buckets(edges, carried, sortByTime(points));
    const encoded = new Array<Uint8Array>(split.length);
    for (let i = 0; i < split.length; i++) encoded[i] = encodeSummary<S>(this.summarizeBucket(options, split[i]));
    return encoded;
  }

  /** The summary of the union of adjacent buckets; traps on an undecodable part. */
  worldMerge(bytes: Uint8Array, parts: Uint8Array[]): Uint8Array {
    const options = this.options(bytes);
    const merged = instantiate<S>();
    for (let i = 0; i < parts.length; i++) {
      const part = decodeSummary<S>(parts[i]);
      // Trap rather than silently drop history: the host keeps the parts it has.
      if (!part.isOk) unreachable();
      merged.merge(part.unwrap(), options);
    }
    return encodeSummary<S>(merged);
  }

  /**
   * A JSON array with one element per summary: the default figure (the first `figures`
   * reports, a bare scalar) when `asked` is empty, else an object of the named figures; `["*"]` names every figure.
   */
  worldRender(bytes: Uint8Array, summaries: Uint8Array[], figures: string[]): Result<string> {
    const options = this.options(bytes);
    const known = this.worldFigures();
    const asked = figures.length == 1 && figures[0] == "*" ? known : figures;
    for (let i = 0; i < asked.length; i++) {
      if (!known.includes(asked[i])) {
        return Result.err<string>(
          new Refusal(codes.UNKNOWN_FIGURE, this.name + " has no figure " + stringJson(asked[i]) + "; known figures: " + known.join(", ")),
        );
      }
    }
    // Figures as a sorted set, as the Rust SDK's JSON objects come out.
    const names = asked.slice(0);
    names.sort();
    const rendered = new Array<string>(summaries.length);
    for (let i = 0; i < summaries.length; i++) {
      const summary = decodeSummary<S>(summaries[i]);
      const bad = summary.refusal;
      if (bad != null) {
        return Result.err<string>(
          new Refusal(codes.INVALID_SUMMARY, "summary #" + i.toString() + " is not a " + this.name + " summary: " + bad.message),
        );
      }
      const reported = new Figures();
      summary.unwrap().figures(reported, options);
      if (names.length == 0) {
        rendered[i] = reported.values.length > 0 ? reported.values[0] : "null";
        continue;
      }
      const parts = new Array<string>(0);
      for (let j = 0; j < names.length; j++) {
        if (j > 0 && names[j] == names[j - 1]) continue;
        const value = reported.get(names[j]);
        parts.push(stringJson(names[j]) + ":" + (value == null ? "null" : value));
      }
      rendered[i] = "{" + parts.join(",") + "}";
    }
    return Result.ok<string>("[" + rendered.join(",") + "]");
  }
}

let registered: Plugin | null = null;

/** Makes `keyType` the plugin's type; call it once, at the top level of the entry file. */
export function register(keyType: Plugin): void {
  registered = keyType;
}

/** The registered type; traps when `register` was not called. */
export function keyType(): Plugin {
  const t = registered;
  if (t == null) unreachable();
  return t!;
}
