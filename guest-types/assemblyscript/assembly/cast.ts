// The casting rules the built-in types share: what each accepts, and how refusals read.

import { numberText, stringJson } from "./json";
import { Input, InputKind, Point, Refusal, Result, Value } from "./types";

/** Longest piece of a client's text quoted back in a refusal message. */
const QUOTE_LIMIT = 64;

/** Describes what a client sent, for refusal messages: `null`, `true`, `number 1.5`, `text "abc"`. */
export function describe(input: Input): string {
  switch (input.kind) {
    case InputKind.Null:
      return "null";
    case InputKind.Boolean:
      return input.flag ? "true" : "false";
    case InputKind.Number:
      return "number " + numberText(input.num);
    default:
      if (input.text.length > QUOTE_LIMIT) {
        return "text " + stringJson(input.text.substring(0, QUOTE_LIMIT)) + "...";
      }
      return "text " + stringJson(input.text);
  }
}

function isDigits(text: string, from: i32, to: i32): bool {
  if (from >= to) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/** Whether `text` is numeric text as the built-ins accept it: `^-?(\d+\.)?\d+$`. */
export function isNumericText(text: string): bool {
  const from = text.startsWith("-") ? 1 : 0;
  const dot = text.indexOf(".", from);
  if (dot < 0) return isDigits(text, from, text.length);
  return isDigits(text, from, dot) && isDigits(text, dot + 1, text.length);
}

/**
 * A finite number, or numeric text ([`isNumericText`]) parsed to one, as a number value;
 * else `invalid_value` naming what was received.
 */
export function castNumber(typeName: string, input: Input): Result<Value> {
  let n: f64 = NaN;
  if (input.kind == InputKind.Number) n = input.num;
  else if (input.kind == InputKind.Text && isNumericText(input.text)) n = parseFloat(input.text);
  if (isFinite(n)) return Result.ok<Value>(Value.ofNumber(n));
  return Result.err<Value>(
    Refusal.invalidValue(typeName + " expects a finite number or numeric text, got " + describe(input)),
  );
}

/**
 * A number key's value after `add(step)`: the latest value plus `step`, from 0 when the key
 * has no point yet; `invalid_value` for a step or a sum that is not finite.
 */
export function addNumber(previous: Point | null, step: f64): Result<Value> {
  if (!isFinite(step)) {
    return Result.err<Value>(Refusal.invalidValue("steps must be finite numbers, got " + numberText(step)));
  }
  let base: f64 = 0;
  if (previous != null) {
    if (!previous.value.isNumber) {
      return Result.err<Value>(Refusal.invalidValue("the key's latest value is not a number"));
    }
    base = previous.value.num;
  }
  const sum = base + step;
  if (!isFinite(sum)) {
    return Result.err<Value>(Refusal.invalidValue(numberText(base) + " + " + numberText(step) + " overflows"));
  }
  return Result.ok<Value>(Value.ofNumber(sum));
}

/** `true`/`false`, or the text `"true"`/`"false"`, as a boolean value; else `invalid_value`. */
export function castBoolean(typeName: string, input: Input): Result<Value> {
  if (input.kind == InputKind.Boolean) return Result.ok<Value>(Value.ofBoolean(input.flag));
  if (input.kind == InputKind.Text && (input.text == "true" || input.text == "false")) {
    return Result.ok<Value>(Value.ofBoolean(input.text == "true"));
  }
  return Result.err<Value>(
    Refusal.invalidValue(typeName + ' expects true, false, "true" or "false", got ' + describe(input)),
  );
}
