// A test-only key type exercising every shape of the world: text values, schedules,
// `add`, extra options, a default retention policy, an options migration. `npm test` builds it into a component and calls it through jco.
import {
  addNumber,
  castNumber,
  describe,
  Input,
  InputKind,
  KeyType,
  NumberSummary,
  Options,
  OptionsReader,
  Point,
  Refusal,
  register,
  Result,
  Scheduled,
  Value,
} from "../assembly/index";

class FixtureOptions extends Options {
  expireAfter: f64 = 0;
  allowed: string[] | null = null;
  mode: string = "number";

  read(reader: OptionsReader): void {
    super.read(reader);
    this.expireAfter = reader.seconds("expire_after", 0);
    this.allowed = reader.stringList("allowed");
    this.mode = reader.choice("mode", ["number", "text"], "number");
  }
}

/** Numbers (like numeric, with add), or any text when mode is "text"; a value expires to "expired". */
class Fixture extends KeyType<FixtureOptions, NumberSummary> {

  guess(sample: Input): u8 {
    return sample.kind == InputKind.Text ? 7 : 0;
  }

  cast(o: FixtureOptions, input: Input): Result<Value> {
    if (o.mode == "text") {
      if (input.kind != InputKind.Text) return Result.err<Value>(Refusal.invalidValue("text only, got " + describe(input)));
      const allowed = o.allowed;
      if (allowed != null && !allowed.includes(input.text)) {
        return Result.err<Value>(new Refusal("value_not_allowed", input.text + " is not allowed"));
      }
      return Result.ok<Value>(Value.ofText(input.text));
    }
    return castNumber(this.name, input);
  }

  add(options: FixtureOptions, previous: Point | null, step: f64): Result<Value> {
    return addNumber(previous, step);
  }

  schedule(o: FixtureOptions, latest: Point): Scheduled | null {
    if (o.expireAfter <= 0) return null;
    return new Scheduled(latest.time + o.expireAfter, Value.ofText("expired"));
  }

  defaultRetention(): string | null {
    return '{"raw": "90d", "tiers": [["1H", "2y"], ["1d", null]]}';
  }

  /** An earlier version called `expire_after` `expire`; `colour` cannot be migrated. */
  migrateOptions(options: string): Result<string> {
    if (options.includes('"colour"')) return super.migrateOptions(options);
    return Result.ok<string>(options.replace('"expire":', '"expire_after":'));
  }
}

register(new Fixture("as_fixture", "Test fixture of the AssemblyScript SDK"));

export * from "../assembly/exports";
