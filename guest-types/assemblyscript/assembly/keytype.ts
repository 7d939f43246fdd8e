// The key type an author extends, with the defaults of the Rust SDK's `KeyType`, and the
// world's functions in terms of it (what the exports in `exports.ts` call after lifting).

import { stringJson } from "./json";
import { Options, OptionsReader, Resolution } from "./options";
import { buckets, Bucket, GAUGE_FIGURES, NumberSummary, sortByTime, Summary } from "./summary";
import { codes, Info, Input, Operation, OperationKind, Outcome, Point, Refusal, Result, Scheduled, Value } from "./types";

/**
 * A key type: every rule of one type of key. Extend it, give the constructor your name,
 * description and version, implement `cast`, override what differs from the defaults, and
 * pass an instance to `register` at the top level of your entry file.
 *
 * Defaults: `guess` 0; `add` refused (`unsupported_operation`); options
 * `same_value_resolution` and `min_resolution` with the built-ins' store decision; no
 * schedule; time-weighted number summaries (`NumberSummary`, default figure `mean`); no
 * default retention policy of its own (the server's applies).
 */
export abstract class KeyType {
  constructor(
    /** The name clients use (`temperature_celsius`, ...). */
    public name: string,
    /** One line for humans. */
    public description: string,
    /** The plugin's own version (semver). */
    public version: string,
  ) {}

  /**
   * Reads the key's options. Default = the resolution options. To add options, extend
   * `Options`, read every field here (the reader refuses what is left over) and downcast
   * in your methods (`options as MyOptions`).
   */
  readOptions(reader: OptionsReader): Options {
    const options = new Options();
    options.resolution = Resolution.read(reader);
    return options;
  }

  /** How strongly this type claims a key created by a first `put` of `sample`. Default = 0. */
  guess(sample: Input): u8 {
    return 0;
  }

  /** Casts a client's value to this type, or refuses it. */
  abstract cast(options: Options, input: Input): Result<Value>;

  /** The value after adding `step` to the key. Default = refused (`unsupported_operation`). */
  add(options: Options, previous: Point | null, step: f64): Result<Value> {
    return Result.err<Value>(
      Refusal.unsupportedOperation(this.name + " keys do not support increment or decrement"),
    );
  }

  /** Whether `point` is written to history. Default = the options' resolution rules. */
  shouldStore(options: Options, previous: Point | null, point: Point, kind: OperationKind): bool {
    return options.resolution.shouldStore(previous, point);
  }

  /** The automatic value pending while `latest` is the key's latest point. Default = none. */
  schedule(options: Options, latest: Point): Scheduled | null {
    return null;
  }

  /**
   * Applies one operation. Default: cast (`set`) or `add`, decide storage with
   * `shouldStore`, and schedule from the newer of `previous` and the new point.
   */
  apply(options: Options, previous: Point | null, op: Operation, time: f64): Result<Outcome> {
    const cast = op.kind == OperationKind.Set ? this.cast(options, op.input) : this.add(options, previous, op.step);
    const refusal = cast.refusal;
    if (refusal != null) return Result.err<Outcome>(refusal);
    const point = new Point(time, cast.unwrap());
    const store = this.shouldStore(options, previous, point, op.kind);
    let latest = point;
    if (previous != null && previous.time > time) latest = previous;
    return Result.ok<Outcome>(new Outcome(point.value, store, this.schedule(options, latest)));
  }

  /** The figure names `render` accepts. Default = a gauge's (`NumberSummary`). */
  figures(): string[] {
    return GAUGE_FIGURES;
  }

  /** Summarises one bucket. Default = `NumberSummary.fromBucket`. */
  summarizeBucket(options: Options, bucket: Bucket): Summary {
    return NumberSummary.fromBucket(bucket);
  }

  /** The summary of a bucket where nothing is known (what merging no parts gives). */
  emptySummary(): Summary {
    return new NumberSummary();
  }

  /** Reads an encoded summary back, or refuses it (`invalid_summary`). */
  decodeSummary(bytes: Uint8Array): Result<Summary> {
    return NumberSummary.decode(bytes);
  }

  /** One named figure as JSON text (`name` is one of `figures()`). Default = the summary's. */
  figure(options: Options, summary: Summary, name: string): string {
    const json = summary.figure(name);
    return json == null ? "null" : json;
  }

  /** The default figure as a bare JSON scalar. Default = the summary's. */
  defaultFigure(options: Options, summary: Summary): string {
    return summary.defaultFigure();
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
   * when this version loads and `readOptions` refuses a key's stored options; what it
   * returns is stored as the key's options, so return only what the key was given (renamed,
   * converted). A refusal (its message reaches the operator), or options this version
   * refuses too, keeps this version from loading while such keys exist.
   * Default = no migration (a refusal).
   */
  migrateOptions(options: string): Result<string> {
    return Result.err<string>(Refusal.invalidOption(this.name + " has no migration for options " + options));
  }
}

let registered: KeyType | null = null;

/** Makes `keyType` the plugin's type; call it once, at the top level of the entry file. */
export function register(keyType: KeyType): void {
  registered = keyType;
}

/** The registered type; traps when `register` was not called. */
export function keyType(): KeyType {
  const t = registered;
  if (t == null) unreachable();
  return t!;
}

// --- the world's functions, on AssemblyScript values ----------------------------------

/** Parsed options, with the complete JSON text. */
class Parsed {
  constructor(
    public text: string,
    public options: Options,
  ) {}
}

/** How many distinct options texts the memo keeps (most recently used first). */
const MEMO_SIZE = 16;

/** Parsed options by options text: the host passes the same text on every call for a key. */
const memo = new Array<Parsed>(0);

function remember(text: string, options: Options): void {
  memo.unshift(new Parsed(text, options));
  if (memo.length > MEMO_SIZE) memo.length = MEMO_SIZE;
}

/** Parses options, returning them with the complete object as JSON text. */
function parseOptions(t: KeyType, text: string): Result<Parsed> {
  const reader = new OptionsReader(text);
  const options = t.readOptions(reader);
  const complete = reader.finish();
  const refusal = reader.refusal;
  if (refusal != null || complete == null) {
    return Result.err<Parsed>(refusal != null ? refusal : Refusal.invalidOption("invalid options"));
  }
  return Result.ok<Parsed>(new Parsed(complete, options));
}

/** The parsed options for `text`, memoized. */
export function parsedOptions(t: KeyType, text: string): Result<Options> {
  for (let i = 0; i < memo.length; i++) {
    if (memo[i].text == text) {
      const hit = memo[i];
      for (let j = i; j > 0; j--) memo[j] = memo[j - 1];
      memo[0] = hit;
      return Result.ok<Options>(hit.options);
    }
  }
  const parsed = parseOptions(t, text);
  const refusal = parsed.refusal;
  if (refusal != null) return Result.err<Options>(refusal);
  const options = parsed.unwrap().options;
  remember(text, options);
  return Result.ok<Options>(options);
}

/**
 * The options for calls that cannot refuse (`reschedule`, `summarize`, `merge`): the
 * parsed `text`, or the defaults if it does not parse (the host only passes options that
 * `check-options` returned, so that is a host bug, not a reason to lose data).
 */
function optionsOrDefault(t: KeyType, text: string): Options {
  const parsed = parsedOptions(t, text);
  if (parsed.isOk) return parsed.unwrap();
  return parsedOptions(t, "{}").unwrap();
}

/** `info`. */
export function worldInfo(t: KeyType): Info {
  return new Info(t.name, t.version, t.description, parseOptions(t, "{}").unwrap().text);
}

/** `check-options`: the options completed with defaults, as JSON text. */
export function worldCheckOptions(t: KeyType, text: string): Result<string> {
  const parsed = parseOptions(t, text);
  const refusal = parsed.refusal;
  if (refusal != null) return Result.err<string>(refusal);
  const complete = parsed.unwrap();
  remember(complete.text, complete.options);
  return Result.ok<string>(complete.text);
}

/** `apply`. */
export function worldApply(t: KeyType, text: string, previous: Point | null, op: Operation, time: f64): Result<Outcome> {
  const options = parsedOptions(t, text);
  const refusal = options.refusal;
  if (refusal != null) return Result.err<Outcome>(refusal);
  return t.apply(options.unwrap(), previous, op, time);
}

/** `reschedule`. */
export function worldReschedule(t: KeyType, text: string, latest: Point): Scheduled | null {
  return t.schedule(optionsOrDefault(t, text), latest);
}

/** `summarize`: one encoded summary per bucket (unsorted points are sorted first). */
export function worldSummarize(t: KeyType, text: string, edges: f64[], carried: Point | null, points: Point[]): Uint8Array[] {
  const options = optionsOrDefault(t, text);
  const split = buckets(edges, carried, sortByTime(points));
  const encoded = new Array<Uint8Array>(split.length);
  for (let i = 0; i < split.length; i++) encoded[i] = t.summarizeBucket(options, split[i]).encode();
  return encoded;
}

/** `merge`: the summary of the union of adjacent buckets; traps on an undecodable part. */
export function worldMerge(t: KeyType, text: string, parts: Uint8Array[]): Uint8Array {
  let merged = t.emptySummary();
  for (let i = 0; i < parts.length; i++) {
    const part = t.decodeSummary(parts[i]);
    // Trap rather than silently drop history: the host keeps the parts it has.
    if (!part.isOk) unreachable();
    merged = i == 0 ? part.unwrap() : merged.merge(part.unwrap());
  }
  return merged.encode();
}

/**
 * `render`: a JSON array with one element per summary, the default figure (a bare scalar)
 * when `figures` is empty, else an object of the named figures; `["*"]` names every figure.
 */
export function worldRender(t: KeyType, text: string, summaries: Uint8Array[], asked: string[]): Result<string> {
  const known = t.figures();
  const figures = asked.length == 1 && asked[0] == "*" ? known : asked;
  for (let i = 0; i < figures.length; i++) {
    if (!known.includes(figures[i])) {
      return Result.err<string>(
        new Refusal(
          codes.UNKNOWN_FIGURE,
          t.name + " has no figure " + stringJson(figures[i]) + "; known figures: " + known.join(", "),
        ),
      );
    }
  }
  const parsed = parsedOptions(t, text);
  const refusal = parsed.refusal;
  if (refusal != null) return Result.err<string>(refusal);
  const options = parsed.unwrap();
  // Figures as a sorted set, as the Rust SDK's JSON objects come out.
  const names = figures.slice(0);
  names.sort();
  const rendered = new Array<string>(summaries.length);
  for (let i = 0; i < summaries.length; i++) {
    const summary = t.decodeSummary(summaries[i]);
    const bad = summary.refusal;
    if (bad != null) {
      return Result.err<string>(
        new Refusal(codes.INVALID_SUMMARY, "summary #" + i.toString() + " is not a " + t.name + " summary: " + bad.message),
      );
    }
    if (names.length == 0) {
      rendered[i] = t.defaultFigure(options, summary.unwrap());
      continue;
    }
    const parts = new Array<string>(0);
    for (let j = 0; j < names.length; j++) {
      if (j > 0 && names[j] == names[j - 1]) continue;
      parts.push(stringJson(names[j]) + ":" + t.figure(options, summary.unwrap(), names[j]));
    }
    rendered[i] = "{" + parts.join(",") + "}";
  }
  return Result.ok<string>("[" + rendered.join(",") + "]");
}
