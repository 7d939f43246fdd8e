// The core exports of the `key-type` world, for the type passed to `register`. Re-export
// them from the plugin's entry file: `export * from "komoku-key-type/assembly/exports";`.
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
//   guess(input: 3)                             -> i32 (u8)
//   check-options(string: 2)                    -> ptr result<string, refusal>
//   apply(string: 2, option<point>: 5, operation: 4, f64: 1) = 12
//                                               -> ptr result<outcome, refusal>
//   reschedule(string: 2, point: 4) = 6         -> ptr option<scheduled>
//   summarize(string: 2, list<f64>: 2, option<point>: 5, list<point>: 2) = 11
//                                               -> ptr list<list<u8>>
//   merge(string: 2, list<list<u8>>: 2)         -> ptr list<u8>
//   render(string: 2, list<list<u8>>: 2, list<string>: 2)
//                                               -> ptr result<string, refusal>
//   default-retention()                         -> ptr option<string>
//   migrate-options(string: 2)                  -> ptr result<string, string>

import {
  free,
  freeAt,
  freeValue,
  liftByteLists,
  liftF64s,
  liftInput,
  liftPoints,
  liftString,
  liftStrings,
  liftValue,
  realloc,
  RET_AREA,
  storeBytes,
  storeString,
  storeValue,
} from "./abi";
import {
  keyType,
  worldApply,
  worldCheckOptions,
  worldInfo,
  worldMerge,
  worldRender,
  worldReschedule,
  worldSummarize,
} from "./keytype";
import { Operation, Point, Refusal, Result } from "./types";

/** The canonical ABI's allocator, a real realloc on the AssemblyScript heap. */
export function cabi_realloc(ptr: usize, oldSize: usize, align: usize, newSize: usize): usize {
  return realloc(ptr, oldSize, align, newSize);
}

export function info(): usize {
  const i = worldInfo(keyType());
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

export function guess(kind: i32, payload: i64, len: i32): i32 {
  return keyType().guess(liftInput(kind, payload, len));
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

function freeTextResult(ret: usize): void {
  freeAt(ret + 4);
  if (load<u8>(ret) != 0) freeAt(ret + 12);
}

function storeRefusal(at: usize, refusal: Refusal): void {
  storeString(at, refusal.code);
  storeString(at + 8, refusal.message);
}

export function check_options(ptr: usize, len: usize): usize {
  return storeTextResult(worldCheckOptions(keyType(), liftString(ptr, len)));
}

export function cabi_post_check_options(ret: usize): void {
  freeTextResult(ret);
}

export function apply(
  optionsPtr: usize,
  optionsLen: usize,
  hasPrevious: i32,
  previousTime: f64,
  previousKind: i32,
  previousPayload: i64,
  previousLen: i32,
  opKind: i32,
  op0: i64,
  op1: i64,
  op2: i32,
  time: f64,
): usize {
  const options = liftString(optionsPtr, optionsLen);
  const previous = hasPrevious != 0 ? new Point(previousTime, liftValue(previousKind, previousPayload, previousLen)) : null;
  let op: Operation;
  if (opKind == 0) op = Operation.set(liftInput(<i32>op0, op1, op2));
  else if (opKind == 1) op = Operation.add(reinterpret<f64>(op0));
  else {
    unreachable();
    op = Operation.add(0);
  }
  const result = worldApply(keyType(), options, previous, op, time);
  const refusal = result.refusal;
  if (refusal != null) {
    store<u8>(RET_AREA, 1);
    storeRefusal(RET_AREA + 8, refusal);
    return RET_AREA;
  }
  const outcome = result.unwrap();
  store<u8>(RET_AREA, 0);
  storeValue(RET_AREA + 8, outcome.value);
  store<u8>(RET_AREA, outcome.store ? 1 : 0, 24);
  const schedule = outcome.schedule;
  if (schedule == null) {
    store<u8>(RET_AREA, 0, 32);
  } else {
    store<u8>(RET_AREA, 1, 32);
    store<f64>(RET_AREA, schedule.at, 40);
    storeValue(RET_AREA + 48, schedule.value);
  }
  return RET_AREA;
}

export function cabi_post_apply(ret: usize): void {
  if (load<u8>(ret) != 0) {
    freeAt(ret + 8);
    freeAt(ret + 16);
    return;
  }
  freeValue(ret + 8);
  if (load<u8>(ret, 32) != 0) freeValue(ret + 48);
}

export function reschedule(
  optionsPtr: usize,
  optionsLen: usize,
  time: f64,
  kind: i32,
  payload: i64,
  len: i32,
): usize {
  const options = liftString(optionsPtr, optionsLen);
  const latest = new Point(time, liftValue(kind, payload, len));
  const scheduled = worldReschedule(keyType(), options, latest);
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
  const options = liftString(optionsPtr, optionsLen);
  const edges = liftF64s(edgesPtr, edgesLen);
  const carried = hasCarried != 0 ? new Point(carriedTime, liftValue(carriedKind, carriedPayload, carriedLen)) : null;
  const points = liftPoints(pointsPtr, pointsLen);
  const summaries = worldSummarize(keyType(), options, edges, carried, points);
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
  const options = liftString(optionsPtr, optionsLen);
  const parts = liftByteLists(partsPtr, partsLen);
  storeBytes(RET_AREA, worldMerge(keyType(), options, parts));
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
  const options = liftString(optionsPtr, optionsLen);
  const summaries = liftByteLists(summariesPtr, summariesLen);
  const figures = liftStrings(figuresPtr, figuresLen);
  return storeTextResult(worldRender(keyType(), options, summaries, figures));
}

export function cabi_post_render(ret: usize): void {
  freeTextResult(ret);
}

/** Writes an `option<string>` (12 bytes: case u8 @0, string @4). */
export function default_retention(): usize {
  const policy = keyType().defaultRetention();
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

/** Writes a `result<string, string>` (12 bytes: case u8 @0, string @4); a refusal gives its message. */
export function migrate_options(ptr: usize, len: usize): usize {
  const result = keyType().migrateOptions(liftString(ptr, len));
  const refusal = result.refusal;
  store<u8>(RET_AREA, refusal == null ? 0 : 1);
  storeString(RET_AREA + 4, refusal == null ? result.unwrap() : refusal.message);
  return RET_AREA;
}

export function cabi_post_migrate_options(ret: usize): void {
  freeAt(ret + 4);
}
