//! Operation counters for the `stats` request.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// Counters since the server started.
pub struct Stats {
    started: Instant,
    ops: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            ops: Mutex::new(BTreeMap::new()),
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

    /// Whole seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
