// The SDK's tests: builds test/fixture.ts into a component with komoku-build, transpiles it
// with jco (an independent implementation of the canonical ABI's lifting and lowering) and
// calls every function of the world with every shape it carries.
//
// Run: npm test (node's test runner).

import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { transpileBytes } from "@bytecodealliance/jco-transpile";

import { build, WIT_PATH } from "../build.mjs";

const SDK_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
const DEFAULTS = '{"allowed":null,"expire_after":0,"min_resolution":0,"mode":"number","same_value_resolution":0}';

let workDir;
let plugin;

/** A fresh instance of the fixture component, with its core memory. */
async function instantiate() {
  const { instantiate } = await import(join(workDir, "plugin.js"));
  let memory = null;
  const root = await instantiate(
    async (path) => WebAssembly.compile(await readFile(join(workDir, path))),
    {},
    async (module, imports) => {
      const instance = await WebAssembly.instantiate(module, imports);
      if (instance.exports.memory instanceof WebAssembly.Memory) memory = instance.exports.memory;
      return instance;
    },
  );
  return { root, memory };
}

before(async () => {
  process.chdir(SDK_DIR);
  const { component } = await build("test/fixture.ts");
  workDir = await mkdtemp(join(tmpdir(), "komoku-as-sdk-"));
  const { files } = await transpileBytes(component, {
    name: "plugin",
    instantiation: "async",
    noComponentErrorWrapping: true,
  });
  for (const [name, bytes] of Object.entries(files)) {
    await mkdir(dirname(join(workDir, name)), { recursive: true });
    await writeFile(join(workDir, name), bytes);
  }
  plugin = (await instantiate()).root;
  D = opts("{}");
});

after(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Calls `f`, expecting a refusal; returns it. */
function refusal(f) {
  try {
    f();
  } catch (e) {
    if (e && typeof e.code === "string") return e;
    throw e;
  }
  assert.fail("expected a refusal");
}

/** Encoded options, as `check-options` returns them for `text`. */
const opts = (text) => plugin.checkOptions(text).encoded;
let D;

/** Applies one operation through the batch `apply`; a refusal is thrown, as other calls do. */
function apply1(instance, options, latest, op, time) {
  const [[result]] = instance.apply([{ options, latest, ops: [{ op, time }] }]);
  if (result.tag === "err") throw Object.assign(new Error(result.val.message), result.val);
  return result.val;
}

const num = (val) => ({ tag: "number", val });
const text = (val) => ({ tag: "text", val });
const point = (time, value) => ({ time, value });
const put = (input) => ({ tag: "set", val: input });

function render(options, edges, carried, points, figures = []) {
  const summaries = plugin.summarize(options, Float64Array.from(edges), carried, points);
  return JSON.parse(plugin.render(options, summaries, figures));
}

describe("the SDK's copy of the WIT", () => {
  test("matches the repository's wit/key-type.wit", async (t) => {
    const repoWit = join(SDK_DIR, "../../wit/key-type.wit");
    let original;
    try {
      original = await readFile(repoWit, "utf8");
    } catch {
      t.skip("not inside the Komoku repository");
      return;
    }
    assert.equal(await readFile(WIT_PATH, "utf8"), original, "copy wit/key-type.wit into the SDK's wit/");
  });
});

describe("info, guess, check-options", () => {
  test("info names the type with its complete default options and its package.json version", async () => {
    assert.deepEqual(plugin.info(), {
      name: "as_fixture",
      version: JSON.parse(await readFile(join(SDK_DIR, "package.json"), "utf8")).version,
      description: "Test fixture of the AssemblyScript SDK",
      defaultOptions: DEFAULTS,
    });
  });

  test("guess lifts every case of input", () => {
    assert.equal(plugin.guess(text("héllo")), 7);
    assert.equal(plugin.guess(text("")), 7);
    assert.equal(plugin.guess(num(1.5)), 0);
    assert.equal(plugin.guess({ tag: "boolean", val: true }), 0);
    assert.equal(plugin.guess({ tag: "null" }), 0);
  });

  test("check-options completes, sorts and normalises", () => {
    assert.equal(plugin.checkOptions("{}").json, DEFAULTS);
    assert.equal(
      plugin.checkOptions(' { "mode" : "text", "allowed": ["a", "é\\n\\"x\\"", "😀"], "min_resolution": 2.50, "expire_after": null } ').json,
      '{"allowed":["a","é\\n\\"x\\"","😀"],"expire_after":0,"min_resolution":2.5,"mode":"text","same_value_resolution":0}',
    );
    assert.equal(JSON.parse(plugin.checkOptions('{"same_value_resolution": 1e3}').json).same_value_resolution, 1000);
    assert.ok(plugin.checkOptions('{"allowed": ["a\\u0001b\\\\"]}').json.includes('["a\\u0001b\\\\"]'));
  });

  test("check-options refuses what the built-ins refuse, naming the option", () => {
    for (const [bad, said] of [
      ['{"max_time": 3}', 'unknown option "max_time"'],
      ['{"min_resolution": "5"}', 'option "min_resolution" must be a number of seconds >= 0, got string "5"'],
      ['{"min_resolution": -1}', "number -1"],
      ['{"same_value_resolution": true}', "got boolean true"],
      ['{"allowed": []}', "null or a non-empty list of strings"],
      ['{"allowed": [1]}', "got list [1]"],
      ['{"mode": "loud"}', 'one of "number", "text"'],
      ["[]", "options must be a JSON object, got list []"],
      ["nope", "options are not JSON"],
      ['{"a": 1,}', "options are not JSON"],
      ['{"min_resolution": 01}', "options are not JSON"],
      ["", "options are not JSON"],
    ]) {
      const r = refusal(() => plugin.checkOptions(bad).json);
      assert.equal(r.code, "invalid_option", bad);
      assert.ok(r.message.includes(said), `${bad}: ${r.message}`);
    }
  });

  test("lone surrogates from JSON escapes come back as U+FFFD, never as invalid UTF-8", () => {
    const complete = plugin.checkOptions('{"allowed": ["\\ud800x"]}').json;
    assert.ok(complete.includes("\ufffdx"), complete);
  });
});

describe("apply and reschedule", () => {
  test("set casts numbers and numeric text, refusing others", () => {
    assert.deepEqual(apply1(plugin, D, undefined, put(num(21.5)), 1), {
      value: num(21.5),
      store: true,
      schedule: undefined,
    });
    assert.deepEqual(apply1(plugin, D, undefined, put(text("-3.5")), 1).value, num(-3.5));
    for (const bad of [text("abc"), text("1e3"), text(" 1"), { tag: "null" }, { tag: "boolean", val: true }, num(NaN), num(Infinity)]) {
      const r = refusal(() => apply1(plugin, D, undefined, put(bad), 1));
      assert.equal(r.code, "invalid_value", JSON.stringify(bad));
    }
    assert.ok(refusal(() => apply1(plugin, D, undefined, put(text("abc")), 1)).message.includes('got text "abc"'));
  });

  test("previous points of every value case are lifted", () => {
    const options = opts('{"same_value_resolution": 10}');
    for (const previous of [point(0, num(1)), point(0, text("long text ".repeat(50))), point(0, { tag: "boolean", val: false })]) {
      assert.equal(apply1(plugin, options, previous, put(num(1)), 5).store, !(previous.value.tag === "number"));
    }
    assert.equal(apply1(plugin, options, point(0, num(1)), put(num(1)), 10).store, true);
    assert.equal(apply1(plugin, options, point(100, num(1)), put(num(1)), 50).store, true, "backfill");
  });

  test("add, and the refusals of the default add", () => {
    assert.deepEqual(apply1(plugin, D, point(1, num(2.5)), { tag: "add", val: -1 }, 2).value, num(1.5));
    assert.deepEqual(apply1(plugin, D, undefined, { tag: "add", val: 4 }, 2).value, num(4));
    assert.equal(refusal(() => apply1(plugin, D, point(1, text("x")), { tag: "add", val: 1 }, 2)).code, "invalid_value");
  });

  test("text results, allowed values and schedules carrying text", () => {
    const options = opts('{"mode": "text", "allowed": ["on", "ünïcode 😀"], "expire_after": 30}');
    assert.deepEqual(apply1(plugin, options, undefined, put(text("ünïcode 😀")), 100), {
      value: text("ünïcode 😀"),
      store: true,
      schedule: { at: 130, value: text("expired") },
    });
    assert.equal(refusal(() => apply1(plugin, options, undefined, put(text("off")), 100)).code, "value_not_allowed");
    // A backfill keeps the schedule of the newer previous point.
    assert.deepEqual(apply1(plugin, options, point(200, text("on")), put(text("on")), 100).schedule, {
      at: 230,
      value: text("expired"),
    });
    assert.deepEqual(plugin.reschedule(options, point(5, text("on"))), { at: 35, value: text("expired") });
    assert.equal(plugin.reschedule(D, point(5, num(1))), undefined);
    assert.equal(apply1(plugin, opts('{"mode": "text"}'), undefined, put(text("")), 1).value.val, "");
  });

  test("parsed options are remembered per options text, beyond the memo's 16", () => {
    for (let round = 0; round < 2; round++) {
      for (let i = 1; i <= 40; i++) {
        const options = opts(`{"min_resolution": ${i}}`);
        const previous = point(100, num(1));
        assert.equal(apply1(plugin, options, previous, put(num(2)), 100 + i - 0.5).store, false, `${i}: too soon`);
        assert.equal(apply1(plugin, options, previous, put(num(2)), 100 + i).store, true, `${i}: late enough`);
      }
    }
  });

  test("options bytes this version did not encode trap (a host bug, not a reason to act on wrong options)", async () => {
    const fresh = (await instantiate()).root;
    assert.throws(() => apply1(fresh, Uint8Array.of(0x4f, 1), undefined, put(num(1)), 1), WebAssembly.RuntimeError);
  });

  test("check-options encodes the values compactly, without names", () => {
    const { json, encoded } = plugin.checkOptions('{"min_resolution": 2, "mode": "text"}');
    assert.ok(json.includes('"min_resolution":2'));
    assert.equal(encoded[0], 0x4f, "tag O");
    assert.ok(encoded.length < 40, `${encoded.length} bytes`);
    assert.ok(!new TextDecoder().decode(encoded).includes("min_resolution"));
  });
});

describe("batch apply", () => {
  test("each operation sees as latest the point the one before stored, refusals change nothing", () => {
    const options = opts('{"min_resolution": 10}');
    const [results, other] = plugin.apply([
      {
        options,
        latest: point(0, num(1)),
        ops: [
          { op: put(num(2)), time: 5 }, // too soon after 0: not stored
          { op: put(num(3)), time: 12 }, // 12 s after 0 (5 was not stored): stored
          { op: put(text("x")), time: 30 }, // refused
          { op: put(num(4)), time: 15 }, // 3 s after 12: not stored
          { op: { tag: "add", val: 1 }, time: 40 }, // adds to 3, the latest stored
          { op: put(num(0)), time: 1 }, // a backfill: stored
        ],
      },
      { options: D, latest: undefined, ops: [{ op: put(num(9)), time: 1 }] },
    ]);
    assert.deepEqual(
      results.map((r) => (r.tag === "ok" ? [r.val.value.val, r.val.store] : r.val.code)),
      [[2, false], [3, true], "invalid_value", [4, false], [4, true], [0, true]],
    );
    assert.deepEqual(other.map((r) => r.val.value.val), [9]);
    assert.deepEqual(plugin.apply([]), []);
    assert.deepEqual(plugin.apply([{ options: D, latest: undefined, ops: [] }]), [[]]);
  });
});

describe("figures", () => {
  test("figures lists what render knows, the default first", () => {
    assert.deepEqual(plugin.figures(), ["mean", "min", "max", "first", "last", "count", "integral", "coverage_seconds"]);
  });
});

describe("summarize, merge, render", () => {
  test("the default figure is the time-weighted mean, null when unknown", () => {
    const points = [point(0, num(10)), point(30, num(20))];
    assert.deepEqual(render(D, [0, 60], undefined, points), [15]);
    assert.deepEqual(render(D, [0, 60, 120], undefined, [...points, point(119, num(20))]), [15, 20]);
    assert.deepEqual(render(D, [0, 10, 20], undefined, []), [null, null]);
    assert.deepEqual(render(D, [0, 10, 20, 30], undefined, [point(0, num(2)), point(5, num(4))]), [3, 4, 4]);
    assert.deepEqual(render(D, [0], undefined, points), []);
    assert.deepEqual(render(D, [10, 20], point(-5, num(7)), []), [7], "carried");
  });

  test("named figures come as one object per bucket", () => {
    const points = [point(0, num(2)), point(5, num(4))];
    assert.deepEqual(render(D, [0, 10], undefined, points, ["min", "max", "count", "last", "first", "coverage_seconds", "integral", "mean", "min"]), [
      {
        min: 2,
        max: 4,
        count: 2,
        first: { time: 0, value: 2 },
        last: { time: 5, value: 4 },
        coverage_seconds: 10,
        integral: 30,
        mean: 3,
      },
    ]);
    assert.deepEqual(
      Object.keys(render(D, [0, 10], undefined, points, ["*"])[0]),
      ["count", "coverage_seconds", "first", "integral", "last", "max", "mean", "min"],
      '["*"] names every figure',
    );
    const r = refusal(() => render(D, [0, 10], undefined, points, ["increase"]));
    assert.equal(r.code, "unknown_figure");
    assert.equal(refusal(() => plugin.render(D, [Uint8Array.of(0x42)], [])).code, "invalid_summary");
    assert.equal(refusal(() => plugin.render(D, [new Uint8Array(0)], [])).code, "invalid_summary");
  });

  test("summaries use the Rust SDK's encoding", () => {
    const [bytes] = plugin.summarize(D, Float64Array.of(0, 60), undefined, [point(0, num(10)), point(30, num(20))]);
    const view = new DataView(new ArrayBuffer(2 + 8 * 2 + 1 + 8 * 2 + 8 * 4));
    let at = 0;
    view.setUint8(at++, 0x4e); // 'N'
    view.setUint8(at++, 2 | 4); // range, first/last
    for (const f of [60, 900]) (view.setFloat64(at, f, true), (at += 8));
    view.setUint8(at++, 2); // count
    for (const f of [10, 20, 0, 10, 30, 20]) (view.setFloat64(at, f, true), (at += 8));
    assert.deepEqual(bytes, new Uint8Array(view.buffer));
  });

  test("text points are skipped by number summaries, and sorted input is not required", () => {
    const points = [point(30, num(20)), point(10, text("ignored ünïcode")), point(0, num(10))];
    assert.deepEqual(render(D, [0, 60], undefined, points, ["count", "mean"]), [{ count: 2, mean: 15 }]);
  });

  test("merging adjacent summaries equals summarising their union", () => {
    let seed = 42;
    const random = (n) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const edges = [random(5)];
      for (let i = 0, n = 1 + random(5); i < n; i++) edges.push(edges.at(-1) + (random(5) === 0 ? 0 : random(12)));
      const [first, last] = [edges[0], edges.at(-1)];
      const carried = random(3) === 0 ? undefined : point(first - 1 - random(3), num(random(9) - 4));
      const points = [];
      if (last > first) for (let i = 0, n = random(16); i < n; i++) points.push(point(first + random(last - first), num(random(9) - 4)));
      points.sort((a, b) => a.time - b.time);
      const parts = plugin.summarize(D, Float64Array.from(edges), carried, points);
      assert.equal(parts.length, edges.length - 1);
      const [direct] = plugin.summarize(D, Float64Array.of(first, last), carried, points);
      assert.deepEqual(plugin.merge(D, parts), direct, `round ${round}`);
      const split = random(parts.length + 1);
      const grouped = plugin.merge(D, [plugin.merge(D, parts.slice(0, split)), plugin.merge(D, parts.slice(split))]);
      assert.deepEqual(grouped, direct, `round ${round}, grouped at ${split}`);
    }
    assert.deepEqual([...plugin.merge(D, [])], [0x4e, 0, ...new Array(17).fill(0)], "empty");
  });

  test("merge traps on a summary it cannot decode", async () => {
    const fresh = (await instantiate()).root;
    assert.throws(() => fresh.merge(D, [Uint8Array.of(1, 2, 3)]), WebAssembly.RuntimeError);
  });
});

describe("default-retention", () => {
  test("the type's policy comes as JSON text", () => {
    assert.deepEqual(JSON.parse(plugin.defaultRetention()), {
      raw: "90d",
      tiers: [
        ["1H", "2y"],
        ["1d", null],
      ],
    });
  });
});

/** Calls `f`, expecting a `result<_, string>` error; returns its text. */
function failure(f) {
  try {
    f();
  } catch (e) {
    return String(typeof e === "string" ? e : (e?.payload ?? e?.message));
  }
  assert.fail("expected an error");
}

describe("migrate-options", () => {
  test("stored options come back migrated, as JSON text", () => {
    assert.deepEqual(JSON.parse(plugin.migrateOptions('{"expire": 5, "mode": "text"}')), { expire_after: 5, mode: "text" });
  });

  test("the default refuses, saying which options", () => {
    assert.match(failure(() => plugin.migrateOptions('{"colour": "red"}')), /no migration.*colour/);
  });
});

describe("memory", () => {
  test("argument and result buffers are freed: 5000 rounds of every call leave the memory as it was", async () => {
    const { root, memory } = await instantiate();
    assert.ok(memory, "the core memory was captured");
    const options = opts('{"mode": "text", "expire_after": 5}');
    const points = Array.from({ length: 50 }, (_, i) => point(i, i % 2 ? num(i) : text("point text ".repeat(5))));
    const round = () => {
      root.info();
      root.guess(text("a guess ".repeat(20)));
      root.checkOptions('{"allowed": ["x", "y"], "mode": "text"}');
      root.figures();
      root.apply([{ options, latest: point(0, num(1)), ops: [{ op: put(num(2)), time: 2 }, { op: put(text("no")), time: 3 }] }]);
      apply1(root, options, point(0, text("previous ".repeat(20))), put(text("current ".repeat(20))), 1);
      refusal(() => apply1(root, options, undefined, put(num(1)), 1));
      root.reschedule(options, point(1, text("latest")));
      const summaries = root.summarize(options, Float64Array.from([0, 10, 20, 30, 40, 50]), point(-1, text("carried")), points);
      root.merge(options, summaries);
      root.render(options, summaries, ["mean", "last"]);
      refusal(() => root.render(options, summaries, ["nope"]));
      root.defaultRetention();
      root.migrateOptions('{"expire": 5, "mode": "text"}');
      failure(() => root.migrateOptions('{"colour": "red"}'));
    };
    for (let i = 0; i < 500; i++) round();
    const warm = memory.buffer.byteLength;
    for (let i = 0; i < 5000; i++) round();
    assert.equal(memory.buffer.byteLength, warm, `memory grew from ${warm} to ${memory.buffer.byteLength} bytes`);
  });
});

describe("conformance vectors (guest-types/conformance, shared with the Rust SDK)", () => {
  const hex = (bytes) => Buffer.from(bytes).toString("hex");
  const value = (v) => (typeof v === "number" ? num(v) : typeof v === "boolean" ? { tag: "boolean", val: v } : text(v));
  const DIR = join(SDK_DIR, "../conformance");
  // Summary kinds this SDK implements (the fixture's summary is the number one): their vector
  // files run below.
  const IMPLEMENTED = { number: "number.json" };
  // Kinds of the Rust SDK this SDK has no built-in summary for yet, and why they are skipped.
  // A kind added to this SDK moves to IMPLEMENTED; a vector file of a kind in neither list
  // fails the test, so a new file cannot go unrun silently.
  const NOT_YET = {
    boolean: "no built-in boolean state summary (StateSummary<bool>) in this SDK yet",
    "text-state": "no built-in text state summary (StateSummary<String>) in this SDK yet",
    log: "no built-in log summary (LogSummary) in this SDK yet",
  };

  async function files() {
    try {
      return (await readdir(DIR)).filter((f) => f.endsWith(".json")).sort();
    } catch {
      return null;
    }
  }

  test("every vector file is either run here or skipped for a stated reason", async (t) => {
    const names = await files();
    if (names === null) {
      t.skip("not inside the Komoku repository");
      return;
    }
    const kinds = {};
    for (const f of names) kinds[f] = JSON.parse(await readFile(join(DIR, f), "utf8")).summary;
    for (const [f, kind] of Object.entries(kinds)) {
      assert.ok(kind in IMPLEMENTED || kind in NOT_YET, `${f}: summary kind ${kind} is neither run nor listed as not implemented`);
      assert.ok(!(kind in IMPLEMENTED && kind in NOT_YET), `${kind} is in both lists`);
      if (kind in NOT_YET) t.diagnostic(`skipped ${f} (${kind}): ${NOT_YET[kind]}`);
    }
    for (const [kind, f] of Object.entries(IMPLEMENTED)) assert.equal(kinds[f], kind, `${f} holds the ${kind} vectors`);
  });

  for (const [kind, file] of Object.entries(IMPLEMENTED)) {
    test(`${file}: ${kind} summaries' encodings, merges and figures match the vectors`, async (t) => {
      let vectors;
      try {
        vectors = JSON.parse(await readFile(join(DIR, file), "utf8"));
      } catch {
        t.skip("not inside the Komoku repository");
        return;
      }
      assert.equal(vectors.summary, kind);
      assert.ok(vectors.cases.length > 0);
      for (const c of vectors.cases) {
        const carried = c.carried ? point(c.carried[0], value(c.carried[1])) : undefined;
        const points = c.points.map(([time, v]) => point(time, value(v)));
        const summaries = plugin.summarize(D, Float64Array.from(c.edges), carried, points);
        assert.deepEqual(summaries.map(hex), c.buckets.map((b) => b.encoded), `${c.name}: encodings`);
        assert.deepEqual(JSON.parse(plugin.render(D, summaries, vectors.figures)), c.buckets.map((b) => b.figures), `${c.name}: figures`);
        const merged = plugin.merge(D, summaries);
        assert.equal(hex(merged), c.merged.encoded, `${c.name}: merged`);
        assert.deepEqual(JSON.parse(plugin.render(D, [merged], vectors.figures)), [c.merged.figures], `${c.name}: merged figures`);
        // Decoding the vector's bytes (not our own) renders the same figures.
        const given = c.buckets.map((b) => Uint8Array.from(Buffer.from(b.encoded, "hex")));
        assert.deepEqual(JSON.parse(plugin.render(D, given, vectors.figures)), c.buckets.map((b) => b.figures), `${c.name}: decoded`);
      }
      t.diagnostic(`${file}: ${vectors.cases.length} cases ran`);
    });
  }
});
