// Canonical ABI helpers for `wit/key-type.wit` (string encoding UTF-8, 32-bit memory).
//
// Memory: argument buffers (strings, lists) are allocated by the host through
// `cabi_realloc` on the AssemblyScript heap (`heap.*`, outside the GC) and belong to the
// callee: the lifting helpers copy them into managed objects and free them at once. Result
// buffers are allocated here with `heap.alloc` and freed by the `cabi_post_*` functions
// after the host has read them. The return area is static: one call at a time per instance.
//
// Layouts (size/alignment; variants: u8 case, then the payload at the payload's alignment):
//   string, list<T>        8/4   ptr u32, len u32 (len in elements; bytes for strings)
//   value, input          16/8   case u8 @0; bool u8 @8 | f64 @8 | string @8
//   point, scheduled      24/8   f64 @0, value @8
//   option<point>,
//   option<scheduled>     32/8   case u8 @0, point/scheduled @8
//   operation             24/8   case u8 @0; input @8 (set) | f64 @8 (add)
//   timed-operation       32/8   operation @0, time f64 @24
//   key-operations        48/8   options list<u8> @0, latest option<point> @8, ops list @40
//   outcome               56/8   value @0, store u8 @16, option<scheduled> @24
//   refusal               16/4   code @0, message @8
//   checked-options       16/4   json @0, encoded list<u8> @8
//   result<string,refusal>,
//   result<checked-options,refusal>  20/4   case u8 @0, payload @4
//   result<outcome,refusal> 64/8   case u8 @0, payload @8
//   info                  32/4   name @0, version @8, description @16, default-options @24
//   option<string>        12/4   case u8 @0, string @4
//
// Flattened values (a variant: i32 case, then its cases' flattenings joined slot by slot;
// i32 joined with f64 gives i64):
//   value/input   [i32 case, i64 payload (bool | f64 bits | string ptr), i32 string len]
//   point         [f64 time, ...value]
//   operation     [i32 case, i64 (input case | f64 bits of add's step), i64 input payload, i32 input len]

import { Input, InputKind, Operation, Point, TimedOperation, Value, ValueKind } from "./types";

/** The static return area: large enough for the largest result (`result<outcome, refusal>`). */
export const RET_AREA: usize = memory.data(64, 16);

/** The heap aligns every block to 16 bytes, which covers every alignment in the WIT. */
const HEAP_ALIGN: usize = 16;

/** Allocates, grows, shrinks or (size 0 after a block) keeps a block for the host. */
export function realloc(ptr: usize, oldSize: usize, align: usize, newSize: usize): usize {
  if (align > HEAP_ALIGN) unreachable();
  if (ptr == 0) return heap.alloc(newSize);
  return heap.realloc(ptr, newSize);
}

/** Frees an argument or result buffer (0 stands for an empty one that was never allocated). */
export function free(ptr: usize): void {
  if (ptr != 0) heap.free(ptr);
}

/** Frees the buffer whose pointer is stored at `at` (a string or list slot). */
export function freeAt(at: usize): void {
  free(load<u32>(at));
}

// --- lifting (arguments) -----------------------------------------------------------------

/** A string argument, copied out of its buffer, which is freed. */
export function liftString(ptr: usize, len: usize): string {
  const text = len == 0 ? "" : String.UTF8.decodeUnsafe(ptr, len);
  free(ptr);
  return text;
}

/** A `list<u8>` argument, copied out of its buffer, which is freed. */
export function liftBytes(ptr: usize, len: usize): Uint8Array {
  const bytes = new Uint8Array(<i32>len);
  memory.copy(bytes.dataStart, ptr, len);
  free(ptr);
  return bytes;
}

/** A `list<f64>` argument, copied out of its buffer, which is freed. */
export function liftF64s(ptr: usize, len: usize): f64[] {
  const out = new Array<f64>(<i32>len);
  for (let i: usize = 0; i < len; i++) out[<i32>i] = load<f64>(ptr + (i << 3));
  free(ptr);
  return out;
}

/** A flattened `input`. */
export function liftInput(kind: i32, payload: i64, len: i32): Input {
  switch (kind) {
    case InputKind.Null:
      return Input.ofNull();
    case InputKind.Boolean:
      return Input.ofBoolean(<i32>payload != 0);
    case InputKind.Number:
      return Input.ofNumber(reinterpret<f64>(payload));
    case InputKind.Text:
      return Input.ofText(liftString(<usize>payload, <usize>(<u32>len)));
    default:
      unreachable();
      return Input.ofNull();
  }
}

/** A flattened `value`. */
export function liftValue(kind: i32, payload: i64, len: i32): Value {
  switch (kind) {
    case ValueKind.Boolean:
      return Value.ofBoolean(<i32>payload != 0);
    case ValueKind.Number:
      return Value.ofNumber(reinterpret<f64>(payload));
    case ValueKind.Text:
      return Value.ofText(liftString(<usize>payload, <usize>(<u32>len)));
    default:
      unreachable();
      return Value.ofNumber(0);
  }
}

/** A `value` in memory (16 bytes). */
export function loadValue(at: usize): Value {
  const kind = <i32>load<u8>(at);
  switch (kind) {
    case ValueKind.Boolean:
      return Value.ofBoolean(load<u8>(at, 8) != 0);
    case ValueKind.Number:
      return Value.ofNumber(load<f64>(at, 8));
    case ValueKind.Text:
      return Value.ofText(liftString(load<u32>(at, 8), load<u32>(at, 12)));
    default:
      unreachable();
      return Value.ofNumber(0);
  }
}

/** An `input` in memory (16 bytes). */
export function loadInput(at: usize): Input {
  const kind = <i32>load<u8>(at);
  switch (kind) {
    case InputKind.Null:
      return Input.ofNull();
    case InputKind.Boolean:
      return Input.ofBoolean(load<u8>(at, 8) != 0);
    case InputKind.Number:
      return Input.ofNumber(load<f64>(at, 8));
    case InputKind.Text:
      return Input.ofText(liftString(load<u32>(at, 8), load<u32>(at, 12)));
    default:
      unreachable();
      return Input.ofNull();
  }
}

/** A `list<timed-operation>` argument (32 bytes each), copied out; its texts and buffer are freed. */
export function liftTimedOperations(ptr: usize, len: usize): TimedOperation[] {
  const out = new Array<TimedOperation>(<i32>len);
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + (i << 5);
    const kind = <i32>load<u8>(at);
    let op: Operation;
    if (kind == 0) op = Operation.set(loadInput(at + 8));
    else if (kind == 1) op = Operation.add(load<f64>(at, 8));
    else {
      unreachable();
      op = Operation.add(0);
    }
    out[<i32>i] = new TimedOperation(op, load<f64>(at, 24));
  }
  free(ptr);
  return out;
}

/** A `list<point>` argument (24 bytes each), copied out; its texts and buffer are freed. */
export function liftPoints(ptr: usize, len: usize): Point[] {
  const out = new Array<Point>(<i32>len);
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + i * 24;
    out[<i32>i] = new Point(load<f64>(at), loadValue(at + 8));
  }
  free(ptr);
  return out;
}

/** A `list<list<u8>>` argument (8 bytes each), copied out; every buffer is freed. */
export function liftByteLists(ptr: usize, len: usize): Uint8Array[] {
  const out = new Array<Uint8Array>(<i32>len);
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + (i << 3);
    out[<i32>i] = liftBytes(load<u32>(at), load<u32>(at, 4));
  }
  free(ptr);
  return out;
}

/** A `list<string>` argument (8 bytes each), copied out; every buffer is freed. */
export function liftStrings(ptr: usize, len: usize): string[] {
  const out = new Array<string>(<i32>len);
  for (let i: usize = 0; i < len; i++) {
    const at = ptr + (i << 3);
    out[<i32>i] = liftString(load<u32>(at), load<u32>(at, 4));
  }
  free(ptr);
  return out;
}

// --- lowering (results) ------------------------------------------------------------------

/** Writes `text` as UTF-8 into a new buffer and its (ptr, len) at `at`; lone surrogates become U+FFFD. */
export function storeString(at: usize, text: string): void {
  const len = <usize>String.UTF8.byteLength(text);
  let ptr: usize = 0;
  if (len > 0) {
    ptr = heap.alloc(len);
    String.UTF8.encodeUnsafe(changetype<usize>(text), text.length, ptr, false, String.UTF8.ErrorMode.REPLACE);
  }
  store<u32>(at, <u32>ptr);
  store<u32>(at, <u32>len, 4);
}

/** Copies `bytes` into a new buffer and writes its (ptr, len) at `at`. */
export function storeBytes(at: usize, bytes: Uint8Array): void {
  const len = <usize>bytes.length;
  let ptr: usize = 0;
  if (len > 0) {
    ptr = heap.alloc(len);
    memory.copy(ptr, bytes.dataStart, len);
  }
  store<u32>(at, <u32>ptr);
  store<u32>(at, <u32>len, 4);
}

/** Writes a `value` (16 bytes) at `at`. */
export function storeValue(at: usize, value: Value): void {
  store<u8>(at, <u8>value.kind);
  if (value.kind == ValueKind.Boolean) store<u8>(at, value.flag ? 1 : 0, 8);
  else if (value.kind == ValueKind.Number) store<f64>(at, value.num, 8);
  else storeString(at + 8, value.text);
}

/** Frees what a `value` written by [`storeValue`] owns. */
export function freeValue(at: usize): void {
  if (load<u8>(at) == ValueKind.Text) freeAt(at + 8);
}
