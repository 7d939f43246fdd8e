// The shapes of `wit/key-type.wit` (interface `types`) as AssemblyScript classes.

import { numberJson, stringJson } from "./json";

/** Which case of `input` (the WIT variant's case order). */
export const enum InputKind {
  Null = 0,
  Boolean = 1,
  Number = 2,
  Text = 3,
}

/** A JSON scalar as a client sent it (WIT `input`). */
export class Input {
  kind: InputKind = InputKind.Null;
  flag: bool = false;
  num: f64 = 0;
  text: string = "";

  static ofNull(): Input {
    return new Input();
  }

  static ofBoolean(b: bool): Input {
    const i = new Input();
    i.kind = InputKind.Boolean;
    i.flag = b;
    return i;
  }

  static ofNumber(n: f64): Input {
    const i = new Input();
    i.kind = InputKind.Number;
    i.num = n;
    return i;
  }

  static ofText(t: string): Input {
    const i = new Input();
    i.kind = InputKind.Text;
    i.text = t;
    return i;
  }
}

/** Which case of `value` (the WIT variant's case order). */
export const enum ValueKind {
  Boolean = 0,
  Number = 1,
  Text = 2,
}

/** A value as stored and served (WIT `value`). */
export class Value {
  kind: ValueKind = ValueKind.Number;
  flag: bool = false;
  num: f64 = 0;
  text: string = "";

  static ofBoolean(b: bool): Value {
    const v = new Value();
    v.kind = ValueKind.Boolean;
    v.flag = b;
    return v;
  }

  static ofNumber(n: f64): Value {
    const v = new Value();
    v.kind = ValueKind.Number;
    v.num = n;
    return v;
  }

  static ofText(t: string): Value {
    const v = new Value();
    v.kind = ValueKind.Text;
    v.text = t;
    return v;
  }

  get isNumber(): bool {
    return this.kind == ValueKind.Number;
  }

  /** The same case and payload (numbers compare as f64: NaN differs from itself). */
  equals(other: Value): bool {
    if (this.kind != other.kind) return false;
    if (this.kind == ValueKind.Boolean) return this.flag == other.flag;
    if (this.kind == ValueKind.Number) return this.num == other.num;
    return this.text == other.text;
  }

  /** The value as JSON text (integral numbers as integers, non-finite ones as `null`). */
  toJson(): string {
    if (this.kind == ValueKind.Boolean) return this.flag ? "true" : "false";
    if (this.kind == ValueKind.Number) return numberJson(this.num);
    return stringJson(this.text);
  }
}

/** One stored point; `time` is float seconds since the Unix epoch (WIT `point`). */
export class Point {
  constructor(
    public time: f64,
    public value: Value,
  ) {}
}

/** Which case of `operation`. */
export const enum OperationKind {
  /** A `put`: `input` holds the client's value. */
  Set = 0,
  /** An `increment`/`decrement`: `step` holds the amount. */
  Add = 1,
}

/** What a client asked the key to do (WIT `operation`). */
export class Operation {
  constructor(
    public kind: OperationKind,
    public input: Input,
    public step: f64,
  ) {}

  static set(input: Input): Operation {
    return new Operation(OperationKind.Set, input, 0);
  }

  static add(step: f64): Operation {
    return new Operation(OperationKind.Add, Input.ofNull(), step);
  }
}

/** Stable refusal codes shared by the built-in types. */
export namespace codes {
  export const INVALID_VALUE = "invalid_value";
  export const VALUE_NOT_ALLOWED = "value_not_allowed";
  export const INVALID_OPTION = "invalid_option";
  export const UNSUPPORTED_OPERATION = "unsupported_operation";
  export const UNKNOWN_FIGURE = "unknown_figure";
  export const INVALID_SUMMARY = "invalid_summary";
}

/** A refusal: a stable machine-readable `code` and a `message` for humans (WIT `refusal`). */
export class Refusal {
  constructor(
    public code: string,
    public message: string,
  ) {}

  static invalidValue(message: string): Refusal {
    return new Refusal(codes.INVALID_VALUE, message);
  }

  static invalidOption(message: string): Refusal {
    return new Refusal(codes.INVALID_OPTION, message);
  }

  static unsupportedOperation(message: string): Refusal {
    return new Refusal(codes.UNSUPPORTED_OPERATION, message);
  }
}

/** A value the host writes by itself at `at` (WIT `scheduled`). */
export class Scheduled {
  constructor(
    public at: f64,
    public value: Value,
  ) {}
}

/** What the host does with one operation (WIT `outcome`). */
export class Outcome {
  constructor(
    public value: Value,
    public store: bool,
    public schedule: Scheduled | null,
  ) {}
}

/** Who the type is (WIT `info`). */
export class Info {
  constructor(
    public name: string,
    public version: string,
    public description: string,
    public defaultOptions: string,
  ) {}
}

/** A value of type `T`, or a refusal (AssemblyScript has no exceptions to carry one). */
export class Result<T> {
  constructor(
    public value: T | null,
    public refusal: Refusal | null,
  ) {}

  static ok<T>(value: T): Result<T> {
    return new Result<T>(value, null);
  }

  static err<T>(refusal: Refusal): Result<T> {
    return new Result<T>(null, refusal);
  }

  get isOk(): bool {
    return this.refusal == null;
  }

  /** The value; traps on a refusal (check [`isOk`] first). */
  unwrap(): T {
    const value = this.value;
    if (value == null) unreachable();
    return value!;
  }
}

/** An operation and the time it applies at (WIT `timed-operation`). */
export class TimedOperation {
  constructor(
    public op: Operation,
    public time: f64,
  ) {}
}

/** Options `check-options` accepted: the complete JSON object and its encoding (WIT `checked-options`). */
export class CheckedOptions {
  constructor(
    public json: string,
    public encoded: Uint8Array,
  ) {}
}
