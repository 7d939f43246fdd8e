//! Operation counters for the `stats` request.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Counters since the server started.
pub struct Stats {
    started: Instant,
    ops: Mutex<BTreeMap<&'static str, u64>>,
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
