//! The wasmtime side of a plugin: compile, instantiate under limits, call with a deadline.
//!
//! A plugin is hostile until proven otherwise. Every call gets an epoch deadline, every
//! instance a memory cap; an instance whose call failed in any way (trap, deadline, memory,
//! malformed output) is thrown away and the next call gets a fresh one from the
//! pre-instantiated component, so one bad call never poisons the next.
//!
//! Bounded and off the async workers: a plugin has at most [`Limits::pool_size`] live
//! instances (a call beyond waits for one), and a call made on a worker thread of a
//! multi-threaded tokio runtime runs under `block_in_place`, so a call that takes its whole
//! deadline holds one thread, not the accept loop and the other connections.
//!
//! Two contracts: `komoku:types@0.2.0` (bound in [`super::bindings::v2`]) and, through an
//! adapter, plugins built for `0.1.0` ([`super::bindings::v1`]): their "encoded options" are
//! the options' JSON bytes, a batch of operations is a loop of single applies with the
//! chaining rule of the WIT, and their figures are learnt once by rendering `["*"]`. The rest
//! of the host sees one API, [`Plugin`]. A component of any other version is refused with
//! the message [`check_contract`] gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

use super::bindings::{v1, v2};
use crate::error::{Error, Result};
use crate::policy::{Policy, PolicySpec};
use crate::value::{Input, Point, Time, Value};

/// How often the engine's epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Sandbox limits for every plugin call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock budget of one call. Default = 500 ms.
    pub deadline: Duration,
    /// Linear memory one instance may grow to. Default = 64 MiB.
    pub memory_bytes: usize,
    /// Most live instances per plugin (idle ones are kept for reuse); a call beyond waits
    /// for one to be free. Default = 16.
    pub pool_size: usize,
    /// The largest plugin file that is read; a larger one is refused unread. Default = 64 MiB.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(500),
            memory_bytes: 64 << 20,
            pool_size: 16,
            file_bytes: 64 << 20,
        }
    }
}

/// The shared wasmtime engine, with a thread that advances its epoch.
pub(super) fn engine() -> Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    static TICKER: AtomicBool = AtomicBool::new(false);
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    let engine = Engine::new(&config).map_err(|e| Error::Storage(format!("wasm engine: {e}")))?;
    let engine = ENGINE.get_or_init(|| engine).clone();
    if !TICKER.swap(true, Ordering::SeqCst) {
        let ticking = engine.weak();
        std::thread::Builder::new()
            .name("komoku-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticking.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::Storage(format!("cannot start the epoch thread: {e}")))?;
    }
    Ok(engine)
}

/// The WIT package this host serves: `komoku:types@` + this version (read from
/// `wit/key-type.wit` by the build script).
pub const WIT_VERSION: &str = env!("KOMOKU_WIT_VERSION");
const WIT_PACKAGE: &str = "komoku:types/";

/// Which contract a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    /// `komoku:types@0.2.x`, this host's.
    V2,
    /// `komoku:types@0.1.x`, through the adapter.
    V1,
}

/// How to rebuild a plugin of an unsupported contract version (shown to operators).
const REBUILD: &str = "rebuild it with the SDK of this Komoku (Rust: guest-types/sdk, AssemblyScript: guest-types/assemblyscript; see docs/writing-a-key-type.md, \"Versions of the plugin contract\")";

/// The contract a component was built for, from the version its imports carry, or `None`
/// when it imports nothing (its exports decide). A component of another version, or one
/// importing anything else, is refused with a message saying how to rebuild it.
///
/// wasmtime matches world-level exports by shape, and the types-only import of
/// `komoku:types/types` needs nothing from the linker, so the version must be read from
/// the import names: 0.2.x is served, 0.1.x goes through the adapter (semver: for 0.x, the
/// same minor is compatible).
fn check_contract(engine: &Engine, component: &Component) -> Result<Option<Contract>, String> {
    let ours = semver_parts(WIT_VERSION).unwrap_or((0, 0, 0));
    let mut found = None;
    for (name, _) in component.component_type().imports(engine) {
        let Some(rest) = name.strip_prefix(WIT_PACKAGE) else {
            return Err(format!(
                "imports {name:?}, which this host does not provide (plugins may import only {WIT_PACKAGE}...@{WIT_VERSION}); {REBUILD}"
            ));
        };
        let contract = match rest.split_once('@').and_then(|(_, v)| semver_parts(v)) {
            Some((0, minor, _)) if ours.0 == 0 && minor == ours.1 => Contract::V2,
            Some((0, 1, _)) => Contract::V1,
            _ => {
                return Err(format!(
                    "built against {name}, but this host serves komoku:types@{WIT_VERSION} (and loads 0.1.0 plugins through an adapter): {REBUILD}"
                ));
            }
        };
        if found.is_some_and(|f| f != contract) {
            return Err(format!("imports two versions of komoku:types; {REBUILD}"));
        }
        found = Some(contract);
    }
    Ok(found)
}

fn semver_parts(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split(['.', '-', '+']).map(str::parse::<u64>);
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

/// What a plugin says about itself.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// JSON object.
    pub default_options: String,
}

/// What a client asked a key to do.
#[derive(Debug, Clone)]
pub enum Operation {
    Set(Input),
    Add(f64),
}

/// The options of an existing key under a newly loaded version ([`Plugin::fit_options`]).
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// What `migrate-options` made of the key's stored options, to store instead of them.
    pub migrated: Option<String>,
    /// The complete options (what `check-options` returned).
    pub effective: String,
}

/// A value to be written by the host at `at` unless something else happens to the key first.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub at: Time,
    pub value: Value,
}

/// The plugin's decision on one operation.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub value: Value,
    pub store: bool,
    pub schedule: Option<Scheduled>,
}

struct StoreData {
    limits: StoreLimits,
}

/// The exports of one instance, by contract.
enum Exports {
    V2(v2::KeyType),
    /// The exports of `key-type-base` (the two added later are looked up by name).
    V1(v1::KeyTypeBase),
}

/// Where the exports are, by contract (resolved once per plugin).
enum Indices {
    V2(v2::KeyTypeIndices),
    V1(v1::KeyTypeBaseIndices),
}

struct Instance {
    store: Store<StoreData>,
    exports: Exports,
    /// The instance itself, for a 0.1.0 plugin's optional exports (looked up by name).
    handle: wasmtime::component::Instance,
}

/// The optional export naming the type's default retention policy (added to 0.1.0).
const DEFAULT_RETENTION: &str = "default-retention";

/// The optional export migrating a key's stored options to this version (added to 0.1.0).
const MIGRATE_OPTIONS: &str = "migrate-options";

/// Most options encodings a plugin keeps by their JSON (one per distinct options object, not
/// per key: keys with the same options share one).
const MAX_ENCODED_OPTIONS: usize = 4096;

/// A key's options as its plugin encoded them in `check-options`: opaque bytes handed back to
/// every call about the key. Shared by content ([`Plugin::encoded`]).
pub type EncodedOptions = Arc<[u8]>;

/// The operations of one key in a batch ([`Plugin::apply_batch`]).
#[derive(Debug, Clone)]
pub struct KeyOps<'a> {
    /// The key's options (from [`Plugin::encoded`]).
    pub options: &'a EncodedOptions,
    /// The key's latest stored point before the first operation.
    pub latest: Option<&'a Point>,
    /// The operations and their times, in order.
    pub ops: &'a [(Operation, Time)],
}

/// A count of live instances with a bound: [`Gate::enter`] waits while it is reached.
struct Gate {
    live: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Gate {
    fn enter(&self) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        while *live >= self.max {
            live = self
                .freed
                .wait(live)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *live += 1;
    }

    fn leave(&self) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        *live = live.saturating_sub(1);
        self.freed.notify_one();
    }
}

/// One loaded plugin: a compiled component ready to instantiate, and idle instances.
pub struct Plugin {
    pub info: PluginInfo,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The retention policy the type chose for its keys (its `default-retention`), checked;
    /// `None` when it has no opinion or predates that export.
    pub default_retention: Option<(PolicySpec, Policy)>,
    /// Every figure `render` knows, the default one first (the `figures` export; for a 0.1.0
    /// plugin, what rendering `["*"]` showed).
    pub figures: Vec<String>,
    /// The contract version it was built for (`0.2.0` or `0.1.0`), for operators.
    pub contract: &'static str,
    contract_kind: Contract,
    /// A 0.1.0 plugin's `migrate-options` export, if it has one (checked at load).
    migrate: Option<ComponentExportIndex>,
    engine: Engine,
    pre: InstancePre<StoreData>,
    indices: Indices,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    gate: Gate,
    /// Options encodings by the complete options' JSON.
    encoded: RwLock<HashMap<Arc<str>, EncodedOptions>>,
    /// Where its calls' durations go (by type name, once it is known).
    calls: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl Plugin {
    /// Compiles, links and smoke-tests a component (its `info()` is called once), and reads
    /// its default retention policy and figures.
    pub fn load(path: &Path, bytes: &[u8], limits: Limits) -> Result<Plugin> {
        let started = Instant::now();
        let engine = engine()?;
        let file = path.display().to_string();
        let refuse = |what: &str, e: wasmtime::Error| Error::PluginFailed {
            plugin: file.clone(),
            message: format!("{what}: {e:#}"),
        };
        let component = super::cache::compile(&engine, bytes)
            .map_err(|e| refuse("not a valid component", e))?;
        let contract =
            check_contract(&engine, &component).map_err(|message| Error::PluginFailed {
                plugin: file.clone(),
                message,
            })?;
        let linker: Linker<StoreData> = Linker::new(&engine);
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            refuse(
                &format!("does not match a komoku:types world this host serves; {REBUILD}"),
                e,
            )
        })?;
        let v2 = || v2::KeyTypeIndices::new(&instance_pre).map(Indices::V2);
        let v1 = || v1::KeyTypeBaseIndices::new(&instance_pre).map(Indices::V1);
        let indices = match contract {
            Some(Contract::V2) => v2(),
            Some(Contract::V1) => v1(),
            // Imports nothing: the exports say which world it is.
            None => v2().or_else(|_| v1()),
        }
        .map_err(|e| {
            refuse(
                &format!(
                    "does not export the key-type world of komoku:types@{WIT_VERSION}; {REBUILD}"
                ),
                e,
            )
        })?;
        let contract_kind = match indices {
            Indices::V2(_) => Contract::V2,
            Indices::V1(_) => Contract::V1,
        };
        let mut plugin = Plugin {
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                default_options: String::new(),
            },
            source: path.to_path_buf(),
            loaded_at: SystemTime::now(),
            default_retention: None,
            figures: Vec::new(),
            contract: match contract_kind {
                Contract::V2 => WIT_VERSION,
                Contract::V1 => "0.1.0",
            },
            contract_kind,
            migrate: None,
            engine,
            pre: instance_pre,
            indices,
            gate: Gate {
                live: Mutex::new(0),
                freed: Condvar::new(),
                max: limits.pool_size.max(1),
            },
            limits,
            idle: Mutex::new(Vec::new()),
            encoded: RwLock::new(HashMap::new()),
            calls: None,
        };
        let info = plugin.with_instance("info", |i| {
            Ok(match &i.exports {
                Exports::V2(b) => {
                    let i2 = b.call_info(&mut i.store)?;
                    (i2.name, i2.version, i2.description, i2.default_options)
                }
                Exports::V1(b) => {
                    let i1 = b.call_info(&mut i.store)?;
                    (i1.name, i1.version, i1.description, i1.default_options)
                }
            })
        })?;
        plugin.info = PluginInfo {
            name: info.0,
            version: info.1,
            description: info.2,
            default_options: info.3,
        };
        if plugin.info.name.is_empty() {
            return Err(Error::PluginFailed {
                plugin: file,
                message: "info() returned an empty type name".into(),
            });
        }
        plugin.calls = Some(crate::stats::plugin_call_histogram(&plugin.info.name));
        plugin.default_retention = plugin.read_default_retention(&component)?;
        if contract_kind == Contract::V1 {
            plugin.migrate = plugin.find_migrate_options(&component)?;
        }
        plugin.figures = plugin.read_figures()?;
        tracing::info!(
            type_name = %plugin.info.name,
            version = %plugin.info.version,
            contract = plugin.contract,
            default_retention = plugin.default_retention.as_ref().map(|(spec, _)| spec.to_json().to_string()),
            file = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "loaded key type"
        );
        if contract_kind == Contract::V1 {
            tracing::warn!(
                type_name = %plugin.info.name,
                file = %path.display(),
                "plugin built for komoku:types@0.1.0, served through the adapter (slower: one call per operation, options as JSON); {REBUILD}"
            );
        }
        Ok(plugin)
    }

    fn instantiate(&self) -> wasmtime::Result<Instance> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(4)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, StoreData { limits });
        store.limiter(|data| &mut data.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        store.epoch_deadline_trap();
        let handle = self.pre.instantiate(&mut store)?;
        let exports = match &self.indices {
            Indices::V2(ix) => Exports::V2(ix.load(&mut store, &handle)?),
            Indices::V1(ix) => Exports::V1(ix.load(&mut store, &handle)?),
        };
        Ok(Instance {
            store,
            exports,
            handle,
        })
    }

    /// The figures: the `figures` export, or for a 0.1.0 plugin the names of what rendering
    /// `["*"]` of an empty summary shows. A 0.2.0 plugin must name at least one.
    fn read_figures(&self) -> Result<Vec<String>> {
        match self.contract_kind {
            Contract::V2 => {
                let figures = self.with_instance("figures", |i| match &i.exports {
                    Exports::V2(b) => b.call_figures(&mut i.store),
                    Exports::V1(_) => unreachable!("a 0.2.0 plugin"),
                })?;
                if figures.is_empty() || figures.iter().any(|f| f.is_empty()) {
                    return Err(Error::PluginFailed {
                        plugin: self.label(),
                        message: "figures must name at least one figure, none empty".into(),
                    });
                }
                Ok(figures)
            }
            // Plugins of 0.1.0 built before `["*"]` existed refuse it: they answer named
            // figures only (an empty list).
            Contract::V1 => {
                let rendered = self.check_options("{}").and_then(|options| {
                    let empty = self.merge(&options, &[])?;
                    self.render(&options, &[empty], &["*".to_string()])
                });
                Ok(rendered
                    .ok()
                    .and_then(|r| r.get(0).and_then(serde_json::Value::as_object).cloned())
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default())
            }
        }
    }

    /// Calls `default-retention` (for a 0.1.0 plugin: if the component has it) and checks
    /// the policy. A policy that does not parse, or a 0.1.0 export with another signature,
    /// refuses the plugin.
    fn read_default_retention(
        &self,
        component: &Component,
    ) -> Result<Option<(PolicySpec, Policy)>> {
        let text = match self.contract_kind {
            Contract::V2 => self.with_instance(DEFAULT_RETENTION, |i| match &i.exports {
                Exports::V2(b) => b.call_default_retention(&mut i.store),
                Exports::V1(_) => unreachable!("a 0.2.0 plugin"),
            })?,
            Contract::V1 => {
                let Some(index) = component.get_export_index(None, DEFAULT_RETENTION) else {
                    return Ok(None); // built before the export existed: no opinion
                };
                self.with_instance(DEFAULT_RETENTION, |i| {
                    let f = i
                        .handle
                        .get_typed_func::<(), (Option<String>,)>(&mut i.store, &index)
                        .map_err(|e| {
                            wasmtime::format_err!("is not `func() -> option<string>` ({e:#})")
                        })?;
                    Ok(f.call(&mut i.store, ())?.0)
                })?
            }
        };
        let Some(text) = text else {
            return Ok(None);
        };
        PolicySpec::from_plugin_json(&text).map(Some).map_err(|e| {
            // The text is the plugin's: quote a bounded part of it.
            let quoted: String = text.chars().take(200).collect();
            Error::PluginFailed {
                plugin: self.label(),
                message: format!("{DEFAULT_RETENTION} returned an invalid policy {quoted}: {e}"),
            }
        })
    }

    /// A 0.1.0 plugin's optional `migrate-options` export, if the component has it. The
    /// export with another signature refuses the plugin.
    fn find_migrate_options(&self, component: &Component) -> Result<Option<ComponentExportIndex>> {
        let Some(index) = component.get_export_index(None, MIGRATE_OPTIONS) else {
            return Ok(None); // built before the export existed: migrates nothing
        };
        self.with_instance(MIGRATE_OPTIONS, |i| {
            i.handle
                .get_typed_func::<(&str,), (Result<String, String>,)>(&mut i.store, &index)
                .map_err(|e| {
                    wasmtime::format_err!(
                        "is not `func(options: string) -> result<string, string>` ({e:#})"
                    )
                })
                .map(drop)
        })?;
        Ok(Some(index))
    }

    /// Calls `migrate-options`: `None` when a 0.1.0 plugin does not have it.
    fn migrate_options(&self, stored: &str) -> Result<Option<Result<String, String>>> {
        match self.contract_kind {
            Contract::V2 => self
                .with_instance(MIGRATE_OPTIONS, |i| match &i.exports {
                    Exports::V2(b) => b.call_migrate_options(&mut i.store, stored),
                    Exports::V1(_) => unreachable!("a 0.2.0 plugin"),
                })
                .map(Some),
            Contract::V1 => {
                let Some(index) = self.migrate else {
                    return Ok(None);
                };
                self.with_instance(MIGRATE_OPTIONS, |i| {
                    let f = i
                        .handle
                        .get_typed_func::<(&str,), (Result<String, String>,)>(
                            &mut i.store,
                            &index,
                        )?;
                    Ok(f.call(&mut i.store, (stored,))?.0)
                })
                .map(Some)
            }
        }
    }

    /// The options a key defined with `stored` (JSON object text, what `define` gave) has
    /// under this version: `check-options` of them. When it refuses them and the plugin has
    /// `migrate-options`, the migrated options are checked instead and returned too, to be
    /// stored as the key's options. The same at start-up and at a hot load.
    pub fn fit_options(&self, stored: &str) -> Result<FitOptions> {
        let (code, message) = match self.check_options(stored) {
            Ok(effective) => {
                return Ok(FitOptions {
                    migrated: None,
                    effective,
                });
            }
            Err(Error::Refused { code, message }) => (code, message),
            Err(e) => return Err(e), // a trap or garbage is no reason to migrate
        };
        let refused = |more: String| Error::Refused {
            code: code.clone(),
            message: format!("{message}; {more}"),
        };
        let Some(migrated) = self.migrate_options(stored)? else {
            return Err(refused(format!("this version has no {MIGRATE_OPTIONS}")));
        };
        let migrated =
            migrated.map_err(|why| refused(format!("{MIGRATE_OPTIONS} refused them: {why}")))?;
        if !serde_json::from_str::<serde_json::Value>(&migrated).is_ok_and(|j| j.is_object()) {
            return Err(Error::PluginFailed {
                plugin: self.label(),
                message: format!("{MIGRATE_OPTIONS} returned options that are not a JSON object"),
            });
        }
        let effective = self.check_options(&migrated).map_err(|e| {
            refused(format!(
                "the options {MIGRATE_OPTIONS} made of them are refused too: {e}"
            ))
        })?;
        Ok(FitOptions {
            migrated: Some(migrated),
            effective,
        })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// Runs `f` on an idle (or new) instance, within the bound of live instances and off the
    /// async workers (see the module's doc). A failed instance is dropped.
    fn with_instance<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R> {
        off_the_workers(|| {
            self.gate.enter();
            let result = self.with_instance_inside(what, f);
            self.gate.leave();
            result
        })
    }

    fn with_instance_inside<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut instance = match pooled {
            Some(i) => i,
            None => self.instantiate().map_err(|e| self.failed(what, e))?,
        };
        instance.store.set_epoch_deadline(self.deadline_ticks());
        let started = Instant::now();
        let result = f(&mut instance);
        if let Some(calls) = &self.calls {
            calls.observe(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(r) => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < self.limits.pool_size
                {
                    idle.push(instance);
                }
                Ok(r)
            }
            Err(e) => Err(self.failed(what, e)),
        }
    }

    fn failed(&self, what: &str, e: wasmtime::Error) -> Error {
        let message = format!("{what}: {e:#}");
        tracing::warn!(
            plugin = %self.label(),
            error = %message,
            "plugin call failed; instance discarded"
        );
        Error::PluginFailed {
            plugin: self.label(),
            message,
        }
    }

    /// `name version`, or the file while the plugin has not said who it is.
    fn label(&self) -> String {
        if self.info.name.is_empty() {
            self.source.display().to_string()
        } else {
            format!("{} {}", self.info.name, self.info.version)
        }
    }

    /// How strongly the type claims a new key first put with `sample`.
    pub fn guess(&self, sample: &Input) -> Result<u8> {
        self.with_instance("guess", |i| match &i.exports {
            Exports::V2(b) => b.call_guess(&mut i.store, &input_to_v2(sample)),
            Exports::V1(b) => b.call_guess(&mut i.store, &input_to_v1(sample)),
        })
    }

    /// Validates options and returns them complete (JSON object text). Their encoding is
    /// kept, shared by every key with the same options ([`Plugin::encoded`]).
    pub fn check_options(&self, options: &str) -> Result<String> {
        let (json, encoded) = self.check_options_encoded(options)?;
        self.remember(&json, encoded);
        Ok(json)
    }

    fn check_options_encoded(&self, options: &str) -> Result<(String, EncodedOptions)> {
        let checked = self.with_instance("check-options", |i| match &i.exports {
            Exports::V2(b) => Ok(b
                .call_check_options(&mut i.store, options)?
                .map(|c| (c.json, c.encoded))),
            Exports::V1(b) => Ok(b
                .call_check_options(&mut i.store, options)?
                .map(|json| (json.clone(), json.into_bytes()))
                .map_err(refusal_from_v1)),
        })?;
        let (json, encoded) = checked.map_err(refused)?;
        Ok((json, encoded.into()))
    }

    fn remember(&self, json: &str, encoded: EncodedOptions) {
        let mut memo = self.encoded.write().unwrap_or_else(PoisonError::into_inner);
        if memo.len() >= MAX_ENCODED_OPTIONS {
            memo.clear();
        }
        memo.insert(json.into(), encoded);
    }

    /// The encoding of a key's complete options (what [`Plugin::check_options`] returned),
    /// shared by every key with the same options: kept from `check-options`, or asked again
    /// (after this plugin forgot it).
    pub fn encoded(&self, options: &str) -> Result<EncodedOptions> {
        if let Some(e) = self
            .encoded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(options)
        {
            return Ok(e.clone());
        }
        let (json, encoded) = self.check_options_encoded(options)?;
        self.remember(options, encoded.clone());
        if json != options {
            self.remember(&json, encoded.clone());
        }
        Ok(encoded)
    }

    /// Applies one operation at `time` given the latest stored point (a batch of one).
    pub fn apply(
        &self,
        options: &str,
        previous: Option<&Point>,
        op: &Operation,
        time: Time,
    ) -> Result<Outcome> {
        let encoded = self.encoded(options)?;
        let ops = [(op.clone(), time)];
        let mut results = self.apply_batch(&[KeyOps {
            options: &encoded,
            latest: previous,
            ops: &ops,
        }])?;
        results
            .pop()
            .and_then(|mut key| key.pop())
            .unwrap_or_else(|| {
                Err(Error::PluginFailed {
                    plugin: self.label(),
                    message: "apply returned no result".into(),
                })
            })
    }

    /// Applies a batch of operations on keys of this type in one call: for each key, one
    /// result per operation, in order. Within a key, each operation sees as the latest point
    /// the one the operation before it stored (when its time is not before the latest
    /// point's), else the one it saw itself; a refused operation changes nothing. A failed
    /// call (trap, deadline, malformed answer) fails the whole batch.
    pub fn apply_batch(&self, batch: &[KeyOps<'_>]) -> Result<Vec<Vec<Result<Outcome>>>> {
        let results = match self.contract_kind {
            Contract::V2 => self.apply_v2(batch)?,
            Contract::V1 => self.apply_v1(batch)?,
        };
        if results.len() != batch.len()
            || results
                .iter()
                .zip(batch)
                .any(|(r, k)| r.len() != k.ops.len())
        {
            return Err(Error::PluginFailed {
                plugin: self.label(),
                message: "apply returned another number of results than operations".into(),
            });
        }
        for outcome in results.iter().flatten().flatten() {
            self.check_value("apply", &outcome.value)?;
            if let Some(s) = &outcome.schedule {
                self.check_scheduled("apply", s)?;
            }
        }
        Ok(results)
    }

    fn apply_v2(&self, batch: &[KeyOps<'_>]) -> Result<Vec<Vec<Result<Outcome>>>> {
        let wit_batch: Vec<v2::wit::KeyOperations> = batch
            .iter()
            .map(|k| v2::wit::KeyOperations {
                options: k.options.to_vec(),
                latest: k.latest.map(point_to_v2),
                ops: k
                    .ops
                    .iter()
                    .map(|(op, time)| v2::wit::TimedOperation {
                        op: op_to_v2(op),
                        time: *time,
                    })
                    .collect(),
            })
            .collect();
        let results = self.with_instance("apply", |i| match &i.exports {
            Exports::V2(b) => b.call_apply(&mut i.store, &wit_batch),
            Exports::V1(_) => unreachable!("a 0.2.0 plugin"),
        })?;
        Ok(results
            .into_iter()
            .map(|key| {
                key.into_iter()
                    .map(|r| r.map(outcome_from_v2).map_err(refused))
                    .collect()
            })
            .collect())
    }

    /// The adapter: one 0.1.0 `apply` per operation, chained as the 0.2.0 batch is.
    fn apply_v1(&self, batch: &[KeyOps<'_>]) -> Result<Vec<Vec<Result<Outcome>>>> {
        let mut results = Vec::with_capacity(batch.len());
        for key in batch {
            let options = std::str::from_utf8(key.options).map_err(|_| Error::PluginFailed {
                plugin: self.label(),
                message: "options of a 0.1.0 plugin are not JSON text".into(),
            })?;
            let mut latest = key.latest.cloned();
            let mut out = Vec::with_capacity(key.ops.len());
            for (op, time) in key.ops {
                let previous = latest.as_ref().map(point_to_v1);
                let wit_op = op_to_v1(op);
                let result = self.with_instance("apply", |i| match &i.exports {
                    Exports::V1(b) => {
                        b.call_apply(&mut i.store, options, previous.as_ref(), &wit_op, *time)
                    }
                    Exports::V2(_) => unreachable!("a 0.1.0 plugin"),
                })?;
                let result = result
                    .map(outcome_from_v1)
                    .map_err(|r| refused(refusal_from_v1(r)));
                if let Ok(outcome) = &result
                    && outcome.store
                    && latest.as_ref().is_none_or(|p| *time >= p.time)
                {
                    latest = Some(Point {
                        time: *time,
                        value: outcome.value.clone(),
                    });
                }
                out.push(result);
            }
            results.push(out);
        }
        Ok(results)
    }

    /// Refuses values the host cannot store or serve: numbers must be finite.
    fn check_value(&self, what: &str, value: &Value) -> Result<()> {
        match value {
            Value::Number(n) if !n.is_finite() => Err(Error::PluginFailed {
                plugin: self.label(),
                message: format!("{what} returned a number that is not finite"),
            }),
            _ => Ok(()),
        }
    }

    fn check_scheduled(&self, what: &str, s: &Scheduled) -> Result<()> {
        if !s.at.is_finite() {
            return Err(Error::PluginFailed {
                plugin: self.label(),
                message: format!("{what} scheduled a value at a time that is not finite"),
            });
        }
        self.check_value(what, &s.value)
    }

    /// The pending automatic value given the latest point.
    pub fn reschedule(&self, options: &str, latest: &Point) -> Result<Option<Scheduled>> {
        let encoded = self.encoded(options)?;
        let scheduled = self.with_instance("reschedule", |i| match &i.exports {
            Exports::V2(b) => Ok(b
                .call_reschedule(&mut i.store, &encoded.to_vec(), &point_to_v2(latest))?
                .map(scheduled_from_v2)),
            Exports::V1(b) => Ok(b
                .call_reschedule(&mut i.store, options, &point_to_v1(latest))?
                .map(scheduled_from_v1)),
        })?;
        if let Some(s) = &scheduled {
            self.check_scheduled("reschedule", s)?;
        }
        Ok(scheduled)
    }

    /// Summaries of the buckets between consecutive `edges`.
    pub fn summarize(
        &self,
        options: &str,
        edges: &[Time],
        carried: Option<&Point>,
        points: &[Point],
    ) -> Result<Vec<Vec<u8>>> {
        let encoded = self.encoded(options)?;
        let summaries = self.with_instance("summarize", |i| match &i.exports {
            Exports::V2(b) => {
                let carried = carried.map(point_to_v2);
                let points: Vec<v2::wit::Point> = points.iter().map(point_to_v2).collect();
                b.call_summarize(
                    &mut i.store,
                    &encoded.to_vec(),
                    edges,
                    carried.as_ref(),
                    &points,
                )
            }
            Exports::V1(b) => {
                let carried = carried.map(point_to_v1);
                let points: Vec<v1::wit::Point> = points.iter().map(point_to_v1).collect();
                b.call_summarize(&mut i.store, options, edges, carried.as_ref(), &points)
            }
        })?;
        let expected = edges.len().saturating_sub(1);
        if summaries.len() != expected {
            return Err(Error::PluginFailed {
                plugin: self.label(),
                message: format!(
                    "summarize returned {} summaries for {expected} buckets",
                    summaries.len()
                ),
            });
        }
        Ok(summaries)
    }

    /// Merges summaries of adjacent buckets.
    pub fn merge(&self, options: &str, parts: &[Vec<u8>]) -> Result<Vec<u8>> {
        let encoded = self.encoded(options)?;
        self.with_instance("merge", |i| match &i.exports {
            Exports::V2(b) => b.call_merge(&mut i.store, &encoded.to_vec(), parts),
            Exports::V1(b) => b.call_merge(&mut i.store, options, parts),
        })
    }

    /// Renders summaries as a JSON array, one element per summary.
    pub fn render(
        &self,
        options: &str,
        summaries: &[Vec<u8>],
        figures: &[String],
    ) -> Result<serde_json::Value> {
        let encoded = self.encoded(options)?;
        let text = self
            .with_instance("render", |i| match &i.exports {
                Exports::V2(b) => {
                    b.call_render(&mut i.store, &encoded.to_vec(), summaries, figures)
                }
                Exports::V1(b) => Ok(b
                    .call_render(&mut i.store, options, summaries, figures)?
                    .map_err(refusal_from_v1)),
            })?
            .map_err(refused)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::PluginFailed {
                plugin: self.label(),
                message: format!("render returned invalid JSON: {e}"),
            })?;
        match json.as_array() {
            Some(rows) if rows.len() == summaries.len() => Ok(json),
            _ => Err(Error::PluginFailed {
                plugin: self.label(),
                message: format!(
                    "render must return a JSON array of {} elements",
                    summaries.len()
                ),
            }),
        }
    }
}

/// Runs `f`, a plugin call, where it cannot starve the async runtime: on a worker thread of a
/// multi-threaded tokio runtime under `block_in_place` (the worker's other tasks move to
/// another thread for as long as the call lasts); elsewhere (a blocking thread, a
/// current-thread runtime, no runtime) as it is.
fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn refused(r: v2::wit::Refusal) -> Error {
    Error::Refused {
        code: r.code,
        message: r.message,
    }
}

fn refusal_from_v1(r: v1::wit::Refusal) -> v2::wit::Refusal {
    v2::wit::Refusal {
        code: r.code,
        message: r.message,
    }
}

fn input_to_v2(input: &Input) -> v2::wit::Input {
    match input {
        Input::Null => v2::wit::Input::Null,
        Input::Bool(b) => v2::wit::Input::Boolean(*b),
        Input::Number(n) => v2::wit::Input::Number(*n),
        Input::Text(t) => v2::wit::Input::Text(t.clone()),
    }
}

fn input_to_v1(input: &Input) -> v1::wit::Input {
    match input {
        Input::Null => v1::wit::Input::Null,
        Input::Bool(b) => v1::wit::Input::Boolean(*b),
        Input::Number(n) => v1::wit::Input::Number(*n),
        Input::Text(t) => v1::wit::Input::Text(t.clone()),
    }
}

fn op_to_v2(op: &Operation) -> v2::wit::Operation {
    match op {
        Operation::Set(input) => v2::wit::Operation::Set(input_to_v2(input)),
        Operation::Add(step) => v2::wit::Operation::Add(*step),
    }
}

fn op_to_v1(op: &Operation) -> v1::wit::Operation {
    match op {
        Operation::Set(input) => v1::wit::Operation::Set(input_to_v1(input)),
        Operation::Add(step) => v1::wit::Operation::Add(*step),
    }
}

fn point_to_v2(p: &Point) -> v2::wit::Point {
    v2::wit::Point {
        time: p.time,
        value: match &p.value {
            Value::Bool(b) => v2::wit::Value::Boolean(*b),
            Value::Number(n) => v2::wit::Value::Number(*n),
            Value::Text(t) => v2::wit::Value::Text(t.clone()),
        },
    }
}

fn point_to_v1(p: &Point) -> v1::wit::Point {
    v1::wit::Point {
        time: p.time,
        value: match &p.value {
            Value::Bool(b) => v1::wit::Value::Boolean(*b),
            Value::Number(n) => v1::wit::Value::Number(*n),
            Value::Text(t) => v1::wit::Value::Text(t.clone()),
        },
    }
}

fn value_from_v2(value: v2::wit::Value) -> Value {
    match value {
        v2::wit::Value::Boolean(b) => Value::Bool(b),
        v2::wit::Value::Number(n) => Value::Number(n),
        v2::wit::Value::Text(t) => Value::Text(t),
    }
}

fn value_from_v1(value: v1::wit::Value) -> Value {
    match value {
        v1::wit::Value::Boolean(b) => Value::Bool(b),
        v1::wit::Value::Number(n) => Value::Number(n),
        v1::wit::Value::Text(t) => Value::Text(t),
    }
}

fn scheduled_from_v2(s: v2::wit::Scheduled) -> Scheduled {
    Scheduled {
        at: s.at,
        value: value_from_v2(s.value),
    }
}

fn scheduled_from_v1(s: v1::wit::Scheduled) -> Scheduled {
    Scheduled {
        at: s.at,
        value: value_from_v1(s.value),
    }
}

fn outcome_from_v2(o: v2::wit::Outcome) -> Outcome {
    Outcome {
        value: value_from_v2(o.value),
        store: o.store,
        schedule: o.schedule.map(scheduled_from_v2),
    }
}

fn outcome_from_v1(o: v1::wit::Outcome) -> Outcome {
    Outcome {
        value: value_from_v1(o.value),
        store: o.store,
        schedule: o.schedule.map(scheduled_from_v1),
    }
}
