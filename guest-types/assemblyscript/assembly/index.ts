// komoku-key-type: the AssemblyScript SDK for Komoku key-type plugins.
//
// Extend `KeyType` (implement `cast`, override what differs from the defaults), pass an
// instance to `register`, and re-export the world's functions from your entry file:
//
//   import { castNumber, Input, KeyType, Options, register, Result, Value } from "komoku-key-type/assembly";
//   class Celsius extends KeyType { ... }
//   register(new Celsius());
//   export * from "komoku-key-type/assembly/exports";
//
// Then build the component with `komoku-build` (see the package README).

export { castBoolean, castNumber, addNumber, describe, isNumericText } from "./cast";
export { Json, JsonKind, JsonObjectWriter, numberJson, numberText, parseJson, stringJson } from "./json";
export { KeyType, register } from "./keytype";
export { Options, OptionsReader, Resolution } from "./options";
export {
  Bucket,
  buckets,
  GAUGE_FIGURES,
  NumberSummary,
  pointJson,
  ratioJson,
  Reader,
  Summary,
  Writer,
} from "./summary";
export {
  codes,
  Info,
  Input,
  InputKind,
  Operation,
  OperationKind,
  Outcome,
  Point,
  Refusal,
  Result,
  Scheduled,
  Value,
  ValueKind,
} from "./types";
// Reachable, so that `--use abort=...` finds it.
export { trap } from "./abort";
