//! The wasmtime side of a plugin: compile, instantiate under limits, call with a deadline.
//!
//! A plugin is hostile until proven otherwise. Every call gets an epoch deadline, every
//! instance a memory cap; an instance whose call failed in any way (trap, deadline, memory,
//! malformed output) is thrown away and the next call gets a fresh one from the
//! pre-instantiated component, so one bad call never poisons the next.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

use super::bindings::{KeyTypeBase, KeyTypeBaseIndices, wit};
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
    /// Idle instances kept per plugin for reuse. Default = 16.
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

/// Refuses a component built against another, incompatible version of the WIT package.
///
/// wasmtime matches world-level exports by shape, and the types-only import of
/// `komoku:types/types` needs nothing from the linker, so a component built for another
/// version would link. Its import names carry the version it was built against: accept the
/// same major version (for 0.x, the same minor), as semver says is compatible.
fn check_contract(engine: &Engine, component: &Component) -> Result<(), String> {
    let ours = semver_parts(WIT_VERSION).unwrap_or((0, 0, 0));
    for (name, _) in component.component_type().imports(engine) {
        let Some(rest) = name.strip_prefix(WIT_PACKAGE) else {
            return Err(format!(
                "imports {name:?}, which this host does not provide (plugins may import only {WIT_PACKAGE}...@{WIT_VERSION})"
            ));
        };
        let theirs = rest.split_once('@').and_then(|(_, v)| semver_parts(v));
        let compatible = match theirs {
            Some((0, minor, _)) => ours.0 == 0 && minor == ours.1,
            Some((major, _, _)) => major == ours.0,
            None => false,
        };
        if !compatible {
            return Err(format!(
                "built against {name}, but this host serves komoku:types@{WIT_VERSION}: rebuild the plugin against wit/ of this Komoku"
            ));
        }
    }
    Ok(())
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

struct Instance {
    store: Store<StoreData>,
    /// The exports of `key-type-base`, which every plugin has.
    bindings: KeyTypeBase,
    /// The instance itself, for the optional exports `key-type` adds (looked up by name).
    handle: wasmtime::component::Instance,
}

/// The optional export naming the type's default retention policy (`key-type` in wit/).
const DEFAULT_RETENTION: &str = "default-retention";

/// The optional export migrating a key's stored options to this version (`key-type` in wit/).
const MIGRATE_OPTIONS: &str = "migrate-options";

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
    /// Its `migrate-options` export, if it has one (checked at load).
    migrate: Option<ComponentExportIndex>,
    engine: Engine,
    pre: InstancePre<StoreData>,
    indices: KeyTypeBaseIndices,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    /// Where its calls' durations go (by type name, once it is known).
    calls: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl Plugin {
    /// Compiles, links and smoke-tests a component (its `info()` is called once), and reads
    /// its default retention policy.
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
        check_contract(&engine, &component).map_err(|message| Error::PluginFailed {
            plugin: file.clone(),
            message,
        })?;
        let linker: Linker<StoreData> = Linker::new(&engine);
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| refuse("does not match the komoku:types world this host serves (rebuild it against wit/ of this Komoku)", e))?;
        let indices = KeyTypeBaseIndices::new(&instance_pre).map_err(|e| {
            refuse("does not export the key-type world of komoku:types (rebuild it against wit/ of this Komoku)", e)
        })?;
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
            migrate: None,
            engine,
            pre: instance_pre,
            indices,
            limits,
            idle: Mutex::new(Vec::new()),
            calls: None,
        };
        plugin.info = plugin
            .call("info", |b, s| b.call_info(s))
            .map(|i| PluginInfo {
                name: i.name,
                version: i.version,
                description: i.description,
                default_options: i.default_options,
            })?;
        if plugin.info.name.is_empty() {
            return Err(Error::PluginFailed {
                plugin: file,
                message: "info() returned an empty type name".into(),
            });
        }
        plugin.calls = Some(crate::stats::plugin_call_histogram(&plugin.info.name));
        plugin.default_retention = plugin.read_default_retention(&component)?;
        plugin.migrate = plugin.find_migrate_options(&component)?;
        tracing::info!(
            type_name = %plugin.info.name,
            version = %plugin.info.version,
            default_retention = plugin.default_retention.as_ref().map(|(spec, _)| spec.to_json().to_string()),
            file = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "loaded key type"
        );
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
        let bindings = self.indices.load(&mut store, &handle)?;
        Ok(Instance {
            store,
            bindings,
            handle,
        })
    }

    /// Calls the optional `default-retention` export, if the component has it, and checks
    /// the policy. A policy that does not parse, or the export with another signature,
    /// refuses the plugin.
    fn read_default_retention(
        &self,
        component: &Component,
    ) -> Result<Option<(PolicySpec, Policy)>> {
        let Some(index) = component.get_export_index(None, DEFAULT_RETENTION) else {
            return Ok(None); // built before the export existed: no opinion
        };
        let text = self.with_instance(DEFAULT_RETENTION, |i| {
            let f = i
                .handle
                .get_typed_func::<(), (Option<String>,)>(&mut i.store, &index)
                .map_err(|e| wasmtime::format_err!("is not `func() -> option<string>` ({e:#})"))?;
            Ok(f.call(&mut i.store, ())?.0)
        })?;
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

    /// The optional `migrate-options` export, if the component has it. The export with another
    /// signature refuses the plugin.
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
        let Some(index) = self.migrate else {
            return Err(refused(format!("this version has no {MIGRATE_OPTIONS}")));
        };
        let migrated = self.with_instance(MIGRATE_OPTIONS, |i| {
            let f = i
                .handle
                .get_typed_func::<(&str,), (Result<String, String>,)>(&mut i.store, &index)?;
            Ok(f.call(&mut i.store, (stored,))?.0)
        })?;
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

    /// Runs one export of `key-type-base` on an idle (or new) instance. A failed instance is
    /// dropped.
    fn call<R>(
        &self,
        what: &str,
        f: impl FnOnce(&KeyTypeBase, &mut Store<StoreData>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        self.with_instance(what, |i| f(&i.bindings, &mut i.store))
    }

    /// Runs `f` on an idle (or new) instance. A failed instance is dropped.
    fn with_instance<R>(
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
        let sample = input_to_wit(sample);
        self.call("guess", |b, s| b.call_guess(s, &sample))
    }

    /// Validates options and returns them complete (JSON object text).
    pub fn check_options(&self, options: &str) -> Result<String> {
        self.call("check-options", |b, s| b.call_check_options(s, options))?
            .map_err(refused)
    }

    /// Applies one operation at `time` given the latest stored point.
    pub fn apply(
        &self,
        options: &str,
        previous: Option<&Point>,
        op: &Operation,
        time: Time,
    ) -> Result<Outcome> {
        let previous = previous.map(point_to_wit);
        let op = match op {
            Operation::Set(input) => wit::Operation::Set(input_to_wit(input)),
            Operation::Add(step) => wit::Operation::Add(*step),
        };
        let outcome = self
            .call("apply", |b, s| {
                b.call_apply(s, options, previous.as_ref(), &op, time)
            })?
            .map_err(refused)?;
        let outcome = Outcome {
            value: value_from_wit(outcome.value),
            store: outcome.store,
            schedule: outcome.schedule.map(scheduled_from_wit),
        };
        self.check_value("apply", &outcome.value)?;
        if let Some(s) = &outcome.schedule {
            self.check_scheduled("apply", s)?;
        }
        Ok(outcome)
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
        let latest = point_to_wit(latest);
        let scheduled = self
            .call("reschedule", |b, s| b.call_reschedule(s, options, &latest))?
            .map(scheduled_from_wit);
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
        let carried = carried.map(point_to_wit);
        let points: Vec<wit::Point> = points.iter().map(point_to_wit).collect();
        let summaries = self.call("summarize", |b, s| {
            b.call_summarize(s, options, edges, carried.as_ref(), &points)
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
        self.call("merge", |b, s| b.call_merge(s, options, parts))
    }

    /// Renders summaries as a JSON array, one element per summary.
    pub fn render(
        &self,
        options: &str,
        summaries: &[Vec<u8>],
        figures: &[String],
    ) -> Result<serde_json::Value> {
        let text = self
            .call("render", |b, s| {
                b.call_render(s, options, summaries, figures)
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

fn refused(r: wit::Refusal) -> Error {
    Error::Refused {
        code: r.code,
        message: r.message,
    }
}

fn input_to_wit(input: &Input) -> wit::Input {
    match input {
        Input::Null => wit::Input::Null,
        Input::Bool(b) => wit::Input::Boolean(*b),
        Input::Number(n) => wit::Input::Number(*n),
        Input::Text(t) => wit::Input::Text(t.clone()),
    }
}

fn value_to_wit(value: &Value) -> wit::Value {
    match value {
        Value::Bool(b) => wit::Value::Boolean(*b),
        Value::Number(n) => wit::Value::Number(*n),
        Value::Text(t) => wit::Value::Text(t.clone()),
    }
}

fn value_from_wit(value: wit::Value) -> Value {
    match value {
        wit::Value::Boolean(b) => Value::Bool(b),
        wit::Value::Number(n) => Value::Number(n),
        wit::Value::Text(t) => Value::Text(t),
    }
}

fn point_to_wit(p: &Point) -> wit::Point {
    wit::Point {
        time: p.time,
        value: value_to_wit(&p.value),
    }
}

fn scheduled_from_wit(s: wit::Scheduled) -> Scheduled {
    Scheduled {
        at: s.at,
        value: value_from_wit(s.value),
    }
}
