// The primitives of summary and options encodings: bytes, little-endian f64s, LEB128
// varints, length-prefixed UTF-8 texts and length-prefixed bytes (another encoding, nested),
// the same as the Rust SDK's `summary::Writer` and `Reader`.

/**
 * Writes an encoding: bytes, little-endian f64s, LEB128 varints, texts, nested encodings.
 * A summary built around another writes its own tag and fields and lets the inner one
 * write itself into the same writer (`inner.encode(w)`), or nests it as length-prefixed
 * bytes (`w.bytes(...)`).
 */
export class Writer {
  private buf: Uint8Array = new Uint8Array(64);
  private len: i32 = 0;

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

  /** A varint byte length, then the bytes (read back with `Reader.bytes`). */
  bytes(bytes: Uint8Array): void {
    this.varint(<u64>bytes.length);
    this.raw(bytes);
  }

  /** The bytes as they are, no length (read back with `Reader.rest` or field by field). */
  raw(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    memory.copy(this.buf.dataStart + <usize>this.len, bytes.dataStart, <usize>bytes.length);
    this.len += bytes.length;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Reads an encoding written by [`Writer`]; the first failure is kept in `error`. */
export class Reader {
  private pos: i32 = 0;
  /** Why decoding failed ("" while it has not). */
  error: string = "";

  constructor(private data: Uint8Array) {}

  get ok(): bool {
    return this.error.length == 0;
  }

  /** Records a failure (the first one is kept); reads after it return zeros. */
  fail(what: string): void {
    if (this.ok) this.error = what;
  }

  /** Reads the tag byte, failing when it is not `expected`. */
  tag(expected: u8): void {
    if (!this.ok) return;
    if (this.pos >= this.data.length) {
      this.fail(this.pos == 0 ? "empty summary" : "summary cut short");
      return;
    }
    const found = this.data[this.pos++];
    if (found != expected) {
      this.fail("tag " + String.fromCharCode(found) + " instead of " + String.fromCharCode(expected));
    }
  }

  private take(n: i32): bool {
    if (!this.ok) return false;
    if (this.data.length - this.pos < n) {
      this.fail("summary cut short");
      return false;
    }
    this.pos += n;
    return true;
  }

  u8(): u8 {
    return this.take(1) ? this.data[this.pos - 1] : 0;
  }

  f64(): f64 {
    return this.take(8) ? load<f64>(this.data.dataStart + <usize>(this.pos - 8)) : 0;
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
    if (len > <u64>(this.data.length - this.pos)) {
      this.fail("summary cut short");
      return "";
    }
    if (!this.take(<i32>len)) return "";
    return String.UTF8.decodeUnsafe(this.data.dataStart + <usize>(this.pos - <i32>len), <usize>len);
  }

  /** A varint byte length, then that many bytes (written by `Writer.bytes`). */
  bytes(): Uint8Array {
    const len = this.varint();
    if (len > <u64>(this.data.length - this.pos)) {
      this.fail("summary cut short");
      return new Uint8Array(0);
    }
    this.pos += <i32>len;
    return this.data.slice(this.pos - <i32>len, this.pos);
  }

  /** Everything not read yet (the reader is then at the end). */
  rest(): Uint8Array {
    if (!this.ok) return new Uint8Array(0);
    const rest = this.data.slice(this.pos);
    this.pos = this.data.length;
    return rest;
  }

  /** Checks that nothing is left; false (with `error` set) otherwise. */
  finish(): bool {
    if (this.ok && this.pos != this.data.length) {
      this.fail((this.data.length - this.pos).toString() + " trailing bytes");
    }
    return this.ok;
  }
}

