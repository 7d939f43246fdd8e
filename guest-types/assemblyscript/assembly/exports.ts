// The core exports of the `key-type` world (komoku:types@0.2.0), for the type passed to
// `register`. Re-export them from the plugin's entry file:
// `export * from "komoku-key-type/assembly/exports";`.
//
// The build (`komoku-build`) renames `check_options` to `check-options`,
// `default_retention` to `default-retention` and `migrate_options` to `migrate-options`
// (and their `cabi_post_`), since AssemblyScript names cannot hold a hyphen.
//
// Flattening (canonical ABI: at most 16 flat parameters, at most 1 flat result; beyond
// that, a pointer). Every function's parameters fit in 16 values; every result but
// `guess`'s exceeds 1 value, so it is written to the static return area and its address is
// returned; `cabi_post_<fn>` then frees the buffers the result points to.
//
//   info()                                      -> ptr info
//   figures()                                   -> ptr list<string>
//   guess(input: 3)                             -> i32 (u8)
//   check-options(string: 2)                    -> ptr result<checked-options, refusal>
//   migrate-options(string: 2)                  -> ptr result<string, string>
//   default-retention()                         -> ptr option<string>
//   apply(list<key-operations>: 2)              -> ptr list<list<result<outcome, refusal>>>
//   reschedule(list<u8>: 2, point: 4) = 6       -> ptr option<scheduled>
//   summarize(list<u8>: 2, list<f64>: 2, option<point>: 5, list<point>: 2) = 11
//                                               -> ptr list<list<u8>>
//   merge(list<u8>: 2, list<list<u8>>: 2)       -> ptr list<u8>
//   render(list<u8>: 2, list<list<u8>>: 2, list<string>: 2)
//                                               -> ptr result<string, refusal>

import {
  free,
  freeAt,
  freeValue,
  liftByteLists,
  liftBytes,
  liftF64s,
  liftInput,
  liftPoints,
  liftString,
  liftStrings,
  liftTimedOperations,
  liftValue,
  loadValue,
  realloc,
  RET_AREA,
  storeBytes,
  storeString,
  storeValue,
} from "./abi";
import { keyType } from "./keytype";
import { Outcome, Point, Refusal, Result } from "./types";

/** The canonical ABI's allocator, a real realloc on the AssemblyScript heap. */
export function cabi_realloc(ptr: usize, oldSize: usize, align: usize, newSize: usize): usize {
  return realloc(ptr, oldSize, align, newSize);
}

export function info(): usize {
  const i = keyType().worldInfo();
  storeString(RET_AREA, i.name);
  storeString(RET_AREA + 8, i.version);
  storeString(RET_AREA + 16, i.description);
  storeString(RET_AREA + 24, i.defaultOptions);
  return RET_AREA;
}

export function cabi_post_info(ret: usize): void {
  freeAt(ret);
  freeAt(ret + 8);
  freeAt(ret + 16);
  freeAt(ret + 24);
}

export function figures(): usize {
  const names = keyType().worldFigures();
  const count = <usize>names.length;
  const list: usize = count == 0 ? 0 : heap.alloc(count << 3);
  for (let i: usize = 0; i < count; i++) storeString(list + (i << 3), names[<i32>i]);
  store<u32>(RET_AREA, <u32>list);
  store<u32>(RET_AREA, <u32>count, 4);
  return RET_AREA;
}

export function cabi_post_figures(ret: usize): void {
  const list = <usize>load<u32>(ret);
  const count = <usize>load<u32>(ret, 4);
  for (let i: usize = 0; i < count; i++) freeAt(list + (i << 3));
  free(list);
}

export function guess(kind: i32, payload: i64, len: i32): i32 {
  return keyType().worldGuess(liftInput(kind, payload, len));
}

function storeRefusal(at: usize, refusal: Refusal): void {
  storeString(at, refusal.code);
  storeString(at + 8, refusal.message);
}

/** Writes a `result<string, refusal>` (payload at 4). */
function storeTextResult(result: Result<string>): usize {
  const refusal = result.refusal;
  if (refusal == null) {
    store<u8>(RET_AREA, 0);
    storeString(RET_AREA + 4, result.unwrap());
  } else {
    store<u8>(RET_AREA, 1);
    storeRefusal(RET_AREA + 4, refusal);
  }
  return RET_AREA;
}

/** Frees a `result<string, refusal>`: one buffer, or a refusal's two. */
function freeTextResult(ret: usize): void {
  freeAt(ret + 4);
  if (load<u8>(ret) != 0) freeAt(ret + 12);
}

export function check_options(ptr: usize, len: usize): usize {
  const result = keyType().worldCheckOptions(liftString(ptr, len));
  const refusal = result.refusal;
  if (refusal == null) {
    const checked = result.unwrap();
    store<u8>(RET_AREA, 0);
    storeString(RET_AREA + 4, checked.json);
    storeBytes(RET_AREA + 12, checked.encoded);
  } else {
    store<u8>(RET_AREA, 1);
    storeRefusal(RET_AREA + 4, refusal);
  }
  return RET_AREA;
}

/** Either case holds two buffers (json and encoding, or code and message). */
export function cabi_post_check_options(ret: usize): void {
  freeAt(ret + 4);
  freeAt(ret + 12);
}

/** Writes a `result<string, string>` (12 bytes: case u8 @0, string @4); a refusal gives its message. */
export function migrate_options(ptr: usize, len: usize): usize {
  const result = keyType().worldMigrateOptions(liftString(ptr, len));
  const refusal = result.refusal;
  store<u8>(RET_AREA, refusal == null ? 0 : 1);
  storeString(RET_AREA + 4, refusal == null ? result.unwrap() : refusal.message);
  return RET_AREA;
}

export function cabi_post_migrate_options(ret: usize): void {
  freeAt(ret + 4);
}

/** Writes an `option<string>` (12 bytes: case u8 @0, string @4). */
export function default_retention(): usize {
  const policy = keyType().worldDefaultRetention();
  if (policy == null) {
    store<u8>(RET_AREA, 0);
  } else {
    store<u8>(RET_AREA, 1);
    storeString(RET_AREA + 4, policy);
  }
  return RET_AREA;
}

export function cabi_post_default_retention(ret: usize): void {
  if (load<u8>(ret) != 0) freeAt(ret + 4);
}

/** Writes a `result<outcome, refusal>` (64 bytes) at `at`. */
function storeOutcomeResult(at: usize, result: Result<Outcome>): void {
  const refusal = result.refusal;
  if (refusal != null) {
    store<u8>(at, 1);
    storeRefusal(at + 8, refusal);
    return;
  }
  const outcome = result.unwrap();
  store<u8>(at, 0);
  storeValue(at + 8, outcome.value);
  store<u8>(at, outcome.store ? 1 : 0, 24);
  const schedule = outcome.schedule;
  if (schedule == null) {
    store<u8>(at, 0, 32);
  } else {
    store<u8>(at, 1, 32);
    store<f64>(at, schedule.at, 40);
    storeValue(at + 48, schedule.value);
  }
}

function freeOutcomeResult(at: usize): void {
  if (load<u8>(at) != 0) {
    freeAt(at + 8);
    freeAt(at + 16);
    return;
  }
  freeValue(at + 8);
  if (load<u8>(at, 32) != 0) freeValue(at + 48);
}

/** `batch` is a `list<key-operations>` (48 bytes each); every buffer in it is freed. */
export function apply(batchPtr: usize, batchLen: usize): usize {
  const t = keyType();
  const keys = <usize>batchLen;
  const outer: usize = keys == 0 ? 0 : heap.alloc(keys << 3);
  for (let k: usize = 0; k < keys; k++) {
    const at = batchPtr + k * 48;
    const options = liftBytes(load<u32>(at), load<u32>(at, 4));
    const latest = load<u8>(at, 8) != 0 ? new Point(load<f64>(at, 16), loadValue(at + 24)) : null;
    const ops = liftTimedOperations(load<u32>(at, 40), load<u32>(at, 44));
    const results = t.worldApply(options, latest, ops);
    const count = <usize>results.length;
    const inner: usize = count == 0 ? 0 : heap.alloc(count << 6);
    for (let i: usize = 0; i < count; i++) storeOutcomeResult(inner + (i << 6), results[<i32>i]);
    store<u32>(outer + (k << 3), <u32>inner);
    store<u32>(outer + (k << 3), <u32>count, 4);
  }
  free(batchPtr);
  store<u32>(RET_AREA, <u32>outer);
  store<u32>(RET_AREA, <u32>keys, 4);
  return RET_AREA;
}

export function cabi_post_apply(ret: usize): void {
  const outer = <usize>load<u32>(ret);
  const keys = <usize>load<u32>(ret, 4);
  for (let k: usize = 0; k < keys; k++) {
    const inner = <usize>load<u32>(outer + (k << 3));
    const count = <usize>load<u32>(outer + (k << 3), 4);
    for (let i: usize = 0; i < count; i++) freeOutcomeResult(inner + (i << 6));
    free(inner);
  }
  free(outer);
}

export function reschedule(optionsPtr: usize, optionsLen: usize, time: f64, kind: i32, payload: i64, len: i32): usize {
  const options = liftBytes(optionsPtr, optionsLen);
  const latest = new Point(time, liftValue(kind, payload, len));
  const scheduled = keyType().worldReschedule(options, latest);
  if (scheduled == null) {
    store<u8>(RET_AREA, 0);
  } else {
    store<u8>(RET_AREA, 1);
    store<f64>(RET_AREA, scheduled.at, 8);
    storeValue(RET_AREA + 16, scheduled.value);
  }
  return RET_AREA;
}

export function cabi_post_reschedule(ret: usize): void {
  if (load<u8>(ret) != 0) freeValue(ret + 16);
}

export function summarize(
  optionsPtr: usize,
  optionsLen: usize,
  edgesPtr: usize,
  edgesLen: usize,
  hasCarried: i32,
  carriedTime: f64,
  carriedKind: i32,
  carriedPayload: i64,
  carriedLen: i32,
  pointsPtr: usize,
  pointsLen: usize,
): usize {
  const options = liftBytes(optionsPtr, optionsLen);
  const edges = liftF64s(edgesPtr, edgesLen);
  const carried = hasCarried != 0 ? new Point(carriedTime, liftValue(carriedKind, carriedPayload, carriedLen)) : null;
  const points = liftPoints(pointsPtr, pointsLen);
  const summaries = keyType().worldSummarize(options, edges, carried, points);
  const count = <usize>summaries.length;
  const list: usize = count == 0 ? 0 : heap.alloc(count << 3);
  for (let i: usize = 0; i < count; i++) storeBytes(list + (i << 3), summaries[<i32>i]);
  store<u32>(RET_AREA, <u32>list);
  store<u32>(RET_AREA, <u32>count, 4);
  return RET_AREA;
}

export function cabi_post_summarize(ret: usize): void {
  const list = <usize>load<u32>(ret);
  const count = <usize>load<u32>(ret, 4);
  for (let i: usize = 0; i < count; i++) freeAt(list + (i << 3));
  free(list);
}

export function merge(optionsPtr: usize, optionsLen: usize, partsPtr: usize, partsLen: usize): usize {
  const options = liftBytes(optionsPtr, optionsLen);
  const parts = liftByteLists(partsPtr, partsLen);
  storeBytes(RET_AREA, keyType().worldMerge(options, parts));
  return RET_AREA;
}

export function cabi_post_merge(ret: usize): void {
  freeAt(ret);
}

export function render(
  optionsPtr: usize,
  optionsLen: usize,
  summariesPtr: usize,
  summariesLen: usize,
  figuresPtr: usize,
  figuresLen: usize,
): usize {
  const options = liftBytes(optionsPtr, optionsLen);
  const summaries = liftByteLists(summariesPtr, summariesLen);
  const figures = liftStrings(figuresPtr, figuresLen);
  return storeTextResult(keyType().worldRender(options, summaries, figures));
}

export function cabi_post_render(ret: usize): void {
  freeTextResult(ret);
}
