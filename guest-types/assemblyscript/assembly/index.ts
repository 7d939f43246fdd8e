// komoku-key-type: the AssemblyScript SDK for Komoku key-type plugins.
//
// Extend `KeyType<YourOptions, YourSummary>` (implement `cast`, override what differs from
// the defaults), pass an instance to `register`, and re-export the world's functions from
// your entry file:
//
//   import { castNumber, Input, KeyType, NumberSummary, Options, register, Result, Value } from "komoku-key-type/assembly";
//   class Celsius extends KeyType<Options, NumberSummary> { ... }
//   register(new Celsius("celsius", "A temperature in degrees Celsius"));
//   export * from "komoku-key-type/assembly/exports";
//
// Then build the component with `komoku-build` (see the package README).

export { castBoolean, castNumber, addNumber, describe, isNumericText } from "./cast";
export { Reader, Writer } from "./codec";
export { Json, JsonKind, JsonObjectWriter, numberJson, numberText, parseJson, stringJson } from "./json";
export { KeyType, Plugin, register } from "./keytype";
export { Options, OptionsReader, Resolution } from "./options";
export { PACKAGE_VERSION } from "./package";
export { Bucket, buckets, decodeSummary, encodeSummary, Figures, NumberSummary, pointJson, ratioJson, Summary } from "./summary";
export {
  CheckedOptions,
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
  TimedOperation,
  Value,
  ValueKind,
} from "./types";
// Reachable, so that `--use abort=...` finds it.
export { trap } from "./abort";
