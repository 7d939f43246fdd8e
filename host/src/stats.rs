//! Operation counters for the `stats` request and `/metrics`.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Instant, SystemTime};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels of a metric: `[("type", "numeric")]`.
pub type Labels = Vec<(String, String)>;

/// Histograms by labels, each with the same buckets.
pub type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Plugin call latency, by key type: 10 µs … 2.6 s in steps of ×4.
fn plugin_call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

/// Seconds per plugin call (every export: apply, summarize, merge, render, …), by key type,
/// for every plugin of the process; `/metrics` shows it.
pub static PLUGIN_CALLS: LazyLock<Histograms> =
    LazyLock::new(|| Family::new_with_constructor(plugin_call_buckets));

/// Writes per group commit of the writer thread (1 … 4096, doubling).
pub static WRITER_GROUP_WRITES: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(1.0, 2.0, 13)));

/// Seconds per group commit of the writer thread, its fsync included (with
/// `durability = "sync"`): 50 µs … 1 s, tripling.
pub static WRITER_COMMIT_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(5e-5, 3.0, 10)));

/// Records one group commit of the writer thread (`writes` writes, taking `took`). Groups
/// of barriers alone (no writes) are not commits and are not recorded.
pub fn group_committed(writes: usize, took: std::time::Duration) {
    if writes > 0 {
        WRITER_GROUP_WRITES.observe(writes as f64);
        WRITER_COMMIT_SECONDS.observe(took.as_secs_f64());
    }
}

/// The histogram a plugin of type `type_name` records its calls in.
pub fn plugin_call_histogram(type_name: &str) -> Histogram {
    PLUGIN_CALLS
        .get_or_create(&vec![("type".to_string(), type_name.to_string())])
        .clone()
}

/// Counters since the server started.
pub struct Stats {
    started: Instant,
    ops: Mutex<BTreeMap<&'static str, u64>>,
    /// Failed requests by error code (any transport).
    errors: Mutex<BTreeMap<String, u64>>,
    /// When the config in force was loaded, and the SHA-256 of its file (none without one).
    config: Mutex<(SystemTime, Option<String>)>,
    /// Sections a transport adds to `stats` (the MQTT bridge's counters), by name.
    sections: Mutex<Vec<(&'static str, Section)>>,
}

/// Renders one section of `stats`.
pub type Section = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            ops: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            config: Mutex::new((SystemTime::now(), None)),
            sections: Mutex::new(Vec::new()),
        }
    }
}

impl Stats {
    /// Counts one operation by its request name.
    pub fn count(&self, op: &'static str) {
        if let Ok(mut ops) = self.ops.lock() {
            *ops.entry(op).or_default() += 1;
        }
    }

    /// Counts one failed request by its error code.
    pub fn count_error(&self, code: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            match errors.get_mut(code) {
                Some(n) => *n += 1,
                None => {
                    errors.insert(code.to_string(), 1);
                }
            }
        }
    }

    /// Failed requests by error code.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Operations by name.
    pub fn ops(&self) -> BTreeMap<&'static str, u64> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Records the config now in force (at start and after each reload).
    pub fn config_loaded(&self, hash: Option<String>) {
        if let Ok(mut c) = self.config.lock() {
            *c = (SystemTime::now(), hash);
        }
    }

    /// `{"loaded_at": <time>, "hash": "sha256:..." or null}`.
    pub fn config_json(&self) -> serde_json::Value {
        let (at, hash) = self
            .config
            .lock()
            .map(|c| c.clone())
            .unwrap_or((SystemTime::UNIX_EPOCH, None));
        let at = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        serde_json::json!({"loaded_at": crate::value::number_json(at), "hash": hash})
    }

    /// Adds a section to `stats` (shown under `name`).
    pub fn add_section(&self, name: &'static str, section: Section) {
        if let Ok(mut s) = self.sections.lock() {
            s.push((name, section));
        }
    }

    /// The added sections, rendered now.
    pub fn sections(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.sections
            .lock()
            .map(|s| s.iter().map(|(name, f)| (*name, f())).collect())
            .unwrap_or_default()
    }

    /// Whole seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
