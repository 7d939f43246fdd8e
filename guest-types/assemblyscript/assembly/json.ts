// A minimal JSON reader and writer: enough for option objects (numbers, strings, booleans,
// null, arrays, nested objects) and for rendering figures. Numbers are f64, as in JSON.

/** What a [`Json`] value is. */
export const enum JsonKind {
  Null = 0,
  Boolean = 1,
  Number = 2,
  String = 3,
  Array = 4,
  Object = 5,
}

/** A parsed JSON value. Objects keep their keys in order; a repeated key keeps its last value. */
export class Json {
  kind: JsonKind = JsonKind.Null;
  flag: bool = false;
  num: f64 = 0;
  str: string = "";
  items: Json[] = [];
  keys: string[] = [];

  static ofNull(): Json {
    return new Json();
  }

  static ofBoolean(b: bool): Json {
    const j = new Json();
    j.kind = JsonKind.Boolean;
    j.flag = b;
    return j;
  }

  static ofNumber(n: f64): Json {
    const j = new Json();
    j.kind = JsonKind.Number;
    j.num = n;
    return j;
  }

  static ofString(s: string): Json {
    const j = new Json();
    j.kind = JsonKind.String;
    j.str = s;
    return j;
  }

  get isNull(): bool {
    return this.kind == JsonKind.Null;
  }

  /** The value of `key` in an object, or null when absent (or not an object). */
  get(key: string): Json | null {
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  /** The JSON text (object keys in their order, numbers as [`numberJson`] writes them). */
  toString(): string {
    switch (this.kind) {
      case JsonKind.Null:
        return "null";
      case JsonKind.Boolean:
        return this.flag ? "true" : "false";
      case JsonKind.Number:
        return numberJson(this.num);
      case JsonKind.String:
        return stringJson(this.str);
      case JsonKind.Array: {
        const parts = new Array<string>(this.items.length);
        for (let i = 0; i < this.items.length; i++) parts[i] = this.items[i].toString();
        return "[" + parts.join(",") + "]";
      }
      default: {
        const parts = new Array<string>(this.keys.length);
        for (let i = 0; i < this.keys.length; i++) {
          parts[i] = stringJson(this.keys[i]) + ":" + this.items[i].toString();
        }
        return "{" + parts.join(",") + "}";
      }
    }
  }
}

/** The outcome of [`parseJson`]: a value, or an error message. */
export class JsonParse {
  constructor(
    public value: Json | null,
    public error: string,
  ) {}
}

/** Nesting deeper than this is refused (the reader is recursive). */
const MAX_DEPTH = 64;

/** Parses one JSON value (surrounded by optional whitespace). */
export function parseJson(text: string): JsonParse {
  const p = new Parser(text);
  const value = p.value(0);
  if (value == null) return new JsonParse(null, p.error);
  p.space();
  if (p.pos < text.length) return new JsonParse(null, p.fail("trailing characters"));
  return new JsonParse(value, "");
}

class Parser {
  pos: i32 = 0;
  error: string = "";

  constructor(public text: string) {}

  fail(what: string): string {
    if (this.error.length == 0) this.error = what + " at character " + this.pos.toString();
    return this.error;
  }

  space(): void {
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.pos++;
    }
  }

  literal(word: string): bool {
    if (this.text.substr(this.pos, word.length) != word) return false;
    this.pos += word.length;
    return true;
  }

  value(depth: i32): Json | null {
    if (depth > MAX_DEPTH) {
      this.fail("nesting too deep");
      return null;
    }
    this.space();
    if (this.pos >= this.text.length) {
      this.fail("unexpected end");
      return null;
    }
    const c = this.text.charCodeAt(this.pos);
    if (c == 0x7b) return this.object(depth);
    if (c == 0x5b) return this.array(depth);
    if (c == 0x22) {
      const s = this.string();
      return s == null ? null : Json.ofString(s);
    }
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (this.literal("true")) return Json.ofBoolean(true);
    if (this.literal("false")) return Json.ofBoolean(false);
    if (this.literal("null")) return Json.ofNull();
    this.fail("unexpected character");
    return null;
  }

  digits(): i32 {
    const start = this.pos;
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c < 0x30 || c > 0x39) break;
      this.pos++;
    }
    return this.pos - start;
  }

  number(): Json | null {
    const start = this.pos;
    if (this.text.charCodeAt(this.pos) == 0x2d) this.pos++;
    const intStart = this.pos;
    const intDigits = this.digits();
    if (intDigits == 0 || (intDigits > 1 && this.text.charCodeAt(intStart) == 0x30)) {
      this.fail("invalid number");
      return null;
    }
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == 0x2e) {
      this.pos++;
      if (this.digits() == 0) {
        this.fail("invalid number");
        return null;
      }
    }
    if (this.pos < this.text.length && (this.text.charCodeAt(this.pos) | 0x20) == 0x65) {
      this.pos++;
      const sign = this.pos < this.text.length ? this.text.charCodeAt(this.pos) : 0;
      if (sign == 0x2b || sign == 0x2d) this.pos++;
      if (this.digits() == 0) {
        this.fail("invalid number");
        return null;
      }
    }
    return Json.ofNumber(parseFloat(this.text.substring(start, this.pos)));
  }

  hex4(): i32 {
    if (this.pos + 4 > this.text.length) return -1;
    let n = 0;
    for (let i = 0; i < 4; i++) {
      const c = this.text.charCodeAt(this.pos + i);
      let d: i32;
      if (c >= 0x30 && c <= 0x39) d = c - 0x30;
      else if ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66) d = (c | 0x20) - 0x61 + 10;
      else return -1;
      n = (n << 4) | d;
    }
    this.pos += 4;
    return n;
  }

  string(): string | null {
    this.pos++; // the opening quote
    let out = "";
    let runStart = this.pos;
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c == 0x22) {
        out += this.text.substring(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) {
        this.fail("control character in string");
        return null;
      }
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      out += this.text.substring(runStart, this.pos);
      this.pos++;
      if (this.pos >= this.text.length) break;
      const e = this.text.charCodeAt(this.pos);
      this.pos++;
      if (e == 0x22) out += '"';
      else if (e == 0x5c) out += "\\";
      else if (e == 0x2f) out += "/";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75) {
        const unit = this.hex4();
        if (unit < 0) {
          this.fail("invalid \\u escape");
          return null;
        }
        out += String.fromCharCode(unit);
      } else {
        this.fail("invalid escape");
        return null;
      }
      runStart = this.pos;
    }
    this.fail("unterminated string");
    return null;
  }

  array(depth: i32): Json | null {
    this.pos++;
    const j = new Json();
    j.kind = JsonKind.Array;
    this.space();
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == 0x5d) {
      this.pos++;
      return j;
    }
    while (true) {
      const item = this.value(depth + 1);
      if (item == null) return null;
      j.items.push(item);
      this.space();
      const c = this.pos < this.text.length ? this.text.charCodeAt(this.pos) : 0;
      this.pos++;
      if (c == 0x5d) return j;
      if (c != 0x2c) {
        this.pos--;
        this.fail("expected , or ]");
        return null;
      }
    }
  }

  object(depth: i32): Json | null {
    this.pos++;
    const j = new Json();
    j.kind = JsonKind.Object;
    this.space();
    if (this.pos < this.text.length && this.text.charCodeAt(this.pos) == 0x7d) {
      this.pos++;
      return j;
    }
    while (true) {
      this.space();
      if (this.pos >= this.text.length || this.text.charCodeAt(this.pos) != 0x22) {
        this.fail("expected a key");
        return null;
      }
      const key = this.string();
      if (key == null) return null;
      this.space();
      if (this.pos >= this.text.length || this.text.charCodeAt(this.pos) != 0x3a) {
        this.fail("expected :");
        return null;
      }
      this.pos++;
      const item = this.value(depth + 1);
      if (item == null) return null;
      j.keys.push(key);
      j.items.push(item);
      this.space();
      const c = this.pos < this.text.length ? this.text.charCodeAt(this.pos) : 0;
      this.pos++;
      if (c == 0x7d) return j;
      if (c != 0x2c) {
        this.pos--;
        this.fail("expected , or }");
        return null;
      }
    }
  }
}

/** 2^53: every integer below it is exact in an f64. */
const EXACT_LIMIT: f64 = 9007199254740992.0;

/**
 * A number as JSON text: integral values as integers (`3`, not `3.0`), others in a form
 * that reads back to the same f64; non-finite numbers as `null` (JSON has none).
 */
export function numberJson(n: f64): string {
  if (!isFinite(n)) return "null";
  if (n == Math.trunc(n) && Math.abs(n) < EXACT_LIMIT) return (<i64>n).toString();
  return n.toString();
}

/** A number as text the way JSON writes it (`3`, `2.5`, `1e+300`); `NaN`/`inf` as such. */
export function numberText(n: f64): string {
  if (isNaN(n)) return "NaN";
  if (!isFinite(n)) return n > 0 ? "inf" : "-inf";
  return numberJson(n);
}

/** A string as a JSON string literal. */
export function stringJson(s: string): string {
  let out = '"';
  let runStart = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c != 0x22 && c != 0x5c) continue;
    out += s.substring(runStart, i);
    runStart = i + 1;
    if (c == 0x22) out += '\\"';
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else if (c == 0x08) out += "\\b";
    else if (c == 0x0c) out += "\\f";
    else out += "\\u00" + (c < 0x10 ? "0" : "") + c.toString(16);
  }
  return out + s.substring(runStart) + '"';
}

/** A JSON object written key by key, keys sorted (as the Rust SDK writes objects). */
export class JsonObjectWriter {
  keys: string[] = [];
  values: string[] = [];

  /** Sets `key` to the JSON text `json` (replacing an earlier value of the same key). */
  set(key: string, json: string): void {
    let at = 0;
    while (at < this.keys.length && this.keys[at] < key) at++;
    if (at < this.keys.length && this.keys[at] == key) {
      this.values[at] = json;
      return;
    }
    this.keys.push(key);
    this.values.push(json);
    for (let i = this.keys.length - 1; i > at; i--) {
      this.keys[i] = this.keys[i - 1];
      this.values[i] = this.values[i - 1];
    }
    this.keys[at] = key;
    this.values[at] = json;
  }

  toString(): string {
    const parts = new Array<string>(this.keys.length);
    for (let i = 0; i < this.keys.length; i++) {
      parts[i] = stringJson(this.keys[i]) + ":" + this.values[i];
    }
    return "{" + parts.join(",") + "}";
  }
}
