#!/usr/bin/env node
// komoku-build: compiles an AssemblyScript key type into a Komoku plugin component, with
// node alone (no wasm-tools CLI):
//
//   1. asc compiles the entry file to a core module (incremental GC runtime, `abort` mapped
//      to a trap, so the module imports nothing);
//   2. exports whose WIT names hold a hyphen are renamed (`check_options` -> `check-options`,
//      and their `cabi_post_`), since AssemblyScript identifiers cannot hold one;
//   3. `componentEmbed` adds the world's type information (wit/key-type.wit, UTF-8 strings)
//      and `componentNew` wraps the module into a validated component — wasm-tools compiled
//      to wasm, from the npm package @bytecodealliance/jco-transpile.
//
// Usage: komoku-build <entry.ts> -o <component.wasm> [--core <core.wasm>] [--debug]
//   --core   also write the core module (for inspection)
//   --debug  no optimisation, with debug names

import { mkdir, readFile, realpath, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

import asc from "assemblyscript/asc";
import { componentEmbed, componentNew } from "@bytecodealliance/jco-transpile/wasm-tools";

const SDK_DIR = dirname(fileURLToPath(import.meta.url));
/** The WIT the SDK's glue implements (a copy of the repository's wit/key-type.wit). */
export const WIT_PATH = resolve(SDK_DIR, "wit/key-type.wit");
const WORLD = "key-type";

function usage(message) {
  console.error(`komoku-build: ${message}`);
  console.error("usage: komoku-build <entry.ts> -o <component.wasm> [--core <core.wasm>] [--debug]");
  process.exit(2);
}

function parseArgs(argv) {
  const args = { entry: null, out: null, core: null, debug: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-o" || a === "--out") args.out = argv[++i];
    else if (a === "--core") args.core = argv[++i];
    else if (a === "--debug") args.debug = true;
    else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else if (args.entry === null) args.entry = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!args.entry) usage("no entry file");
  if (!args.out) usage("no output (-o)");
  return args;
}

/**
 * asc's internal path of the SDK's abort handler: relative to the project when the entry
 * is the SDK's own (its tests), else through the package name, as asc resolves imports of
 * `komoku-key-type/...` from node_modules.
 */
async function abortPath(entry) {
  const sdk = await realpath(SDK_DIR);
  const realEntry = await realpath(entry);
  if (realEntry.startsWith(sdk + sep)) {
    return relative(process.cwd(), resolve(sdk, "assembly/abort")).split(sep).join("/") + "/trap";
  }
  return "~lib/komoku-key-type/assembly/abort/trap";
}

/** The `version` of the package.json nearest to `entry` (walking up), or "0.0.0". */
async function packageVersion(entry) {
  let dir = dirname(await realpath(entry));
  for (;;) {
    try {
      const pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
      if (typeof pkg.version !== "string") throw new Error(`${join(dir, "package.json")} has no "version"`);
      return pkg.version;
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
    }
    const up = dirname(dir);
    if (up === dir) return "0.0.0";
    dir = up;
  }
}

/** Compiles the entry file to a core module with asc. */
async function compile(entry, debug) {
  const version = await packageVersion(entry);
  const versionFile = await realpath(resolve(SDK_DIR, "assembly/package.ts"));
  const outFile = "plugin.wasm";
  let binary = null;
  const argv = [
    entry,
    "--runtime",
    "incremental",
    "--use",
    `abort=${await abortPath(entry)}`,
    "--outFile",
    outFile,
    ...(debug ? ["--debug"] : ["-O3"]),
  ];
  const { error, stderr } = await asc.main(argv, {
    // The SDK's assembly/package.ts is read as the plugin's own version.
    async readFile(name, baseDir) {
      const path = resolve(baseDir, name);
      let text;
      try {
        text = await readFile(path, "utf8");
      } catch {
        return null;
      }
      if ((await realpath(path)) === versionFile) {
        return `export const PACKAGE_VERSION: string = ${JSON.stringify(version)};\n`;
      }
      return text;
    },
    writeFile(name, contents) {
      if (name === outFile) binary = contents;
    },
  });
  if (error) {
    throw new Error(`asc failed: ${error.message}\n${stderr.toString()}`);
  }
  if (!binary) throw new Error("asc wrote no module");
  return binary;
}

// --- export renaming -------------------------------------------------------------------

function readU32(bytes, pos) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[pos++];
    value |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [value >>> 0, pos];
    shift += 7;
  }
}

function u32(value) {
  const out = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return out;
}

/** The world's export names, from the WIT (`export name: func`). */
function worldExports(wit) {
  return [...wit.matchAll(/^\s*export\s+([a-z][a-z0-9-]*)\s*:\s*func\b/gm)].map((m) => m[1]);
}

/**
 * Rewrites the module's export section: `renames` maps old names to new ones. Returns the
 * new module and the export names it has.
 */
function renameExports(module, renames) {
  const bytes = new Uint8Array(module);
  const out = [bytes.subarray(0, 8)];
  const names = [];
  let pos = 8;
  while (pos < bytes.length) {
    const id = bytes[pos];
    const [size, start] = readU32(bytes, pos + 1);
    const end = start + size;
    if (id !== 7) {
      out.push(bytes.subarray(pos, end));
      pos = end;
      continue;
    }
    let [count, p] = readU32(bytes, start);
    const body = [...u32(count)];
    const encoder = new TextEncoder();
    for (let i = 0; i < count; i++) {
      const [len, q] = readU32(bytes, p);
      const name = new TextDecoder().decode(bytes.subarray(q, q + len));
      p = q + len;
      const kind = bytes[p++];
      const [index, r] = readU32(bytes, p);
      p = r;
      const renamed = renames.get(name) ?? name;
      names.push(renamed);
      const encoded = encoder.encode(renamed);
      body.push(...u32(encoded.length), ...encoded, kind, ...u32(index));
    }
    out.push(Uint8Array.of(7, ...u32(body.length), ...body));
    pos = end;
  }
  const total = out.reduce((n, part) => n + part.length, 0);
  const result = new Uint8Array(total);
  let at = 0;
  for (const part of out) {
    result.set(part, at);
    at += part.length;
  }
  return { module: result, names };
}

/** Builds the component for `entry`; returns { component, core }. */
export async function build(entry, { debug = false } = {}) {
  const wit = await readFile(WIT_PATH, "utf8");
  const exports = worldExports(wit);
  const renames = new Map();
  for (const name of exports.filter((n) => n.includes("-"))) {
    renames.set(name.replaceAll("-", "_"), name);
    renames.set(`cabi_post_${name.replaceAll("-", "_")}`, `cabi_post_${name}`);
  }
  const compiled = await compile(entry, debug);
  const { module: core, names } = renameExports(compiled, renames);
  const missing = exports.filter((n) => !names.includes(n));
  if (missing.length) {
    throw new Error(
      `the module does not export ${missing.join(", ")}: does ${entry} ` +
        `\`export * from "komoku-key-type/assembly/exports"\`?`,
    );
  }
  const embedded = await componentEmbed({ binary: core, witSource: wit, world: WORLD, stringEncoding: "utf8" });
  const component = await componentNew(embedded);
  return { component, core };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const { component, core } = await build(args.entry, { debug: args.debug });
  await mkdir(dirname(resolve(args.out)), { recursive: true });
  await writeFile(args.out, component);
  if (args.core) await writeFile(args.core, core);
  const ms = Math.round(performance.now() - started);
  console.log(`komoku-build: ${args.out} (${component.length} bytes, core ${core.length} bytes) in ${ms} ms`);
}

if (process.argv[1] && (await realpath(process.argv[1])) === (await realpath(fileURLToPath(import.meta.url)))) {
  main().catch((e) => {
    console.error(`komoku-build: ${e.message}`);
    process.exit(1);
  });
}
