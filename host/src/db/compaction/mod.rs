//! Compaction: moving old history into coarser tiers, and retention policies.
//!
//! One step moves one bounded chunk `[a, b)` of one level of one key into the next coarser
//! level (or drops it, past the coarsest level's keep). The new summaries, the deletion of
//! what they replace and the moved watermark go to the writer as ONE batch, which fjall
//! commits atomically and the writer fsyncs like any put: killed at any instant, the store
//! holds the state before the step or after it, never a mix (nothing lost, nothing counted
//! twice). Before raw points are compacted, the key's in-memory watermark is raised under
//! its lock and queued writes are waited for, so a late put cannot slip into a range being
//! compacted (it is refused with `compacted`). Bulk reads and the summarising run without
//! any key lock: puts and queries carry on (queries read snapshots).
//!
//! Work follows the data, never the time it spans: a step is bounded by the points or
//! summaries it reads, a tier bucket gets a summary only when it holds data, and a stretch
//! without points is one [`Gap`] record (the value carried through it), however long.
//!
//! The module by concern: [`policy`] (the policy table: which policy governs a key),
//! [`run`] (the run loop: which keys a run visits, and when), [`key`] (one key's steps:
//! level by level, bounded atomic batches), [`rows`] (what one step reads and writes: raw
//! points and finer summaries into tier buckets and gaps), [`restructure`] (a key's stored
//! tiers re-expressed after its policy changed steps).

mod key;
mod policy;
mod restructure;
mod rows;
mod run;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value as Json, json};

use super::Db;
use crate::error::{Error, Result};
use crate::retention::step_label;

pub(super) use run::run;

/// Compaction counters since the server started.
#[derive(Default)]
pub struct CompactionStats {
    runs: AtomicU64,
    steps: AtomicU64,
    points_compacted: AtomicU64,
    summaries_written: AtomicU64,
    summaries_removed: AtomicU64,
    skipped_keys: AtomicU64,
    last_run_ms: AtomicU64,
    /// Summary and gap rows stored, exactly: the sum of every key's counts.
    summary_rows: AtomicU64,
    gap_rows: AtomicU64,
    /// As of the last run over every key: per tier step in seconds, how many keys have the
    /// tier and how many buckets it spans in all.
    tiers: std::sync::Mutex<BTreeMap<u64, (u64, u64)>>,
    /// Keys already warned about (a policy their compacted history does not fit).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl CompactionStats {
    /// Counts a key's rows found at start.
    pub(in crate::db) fn add_rows(&self, summaries: u64, gaps: u64) {
        self.summary_rows.fetch_add(summaries, Ordering::Relaxed);
        self.gap_rows.fetch_add(gaps, Ordering::Relaxed);
    }

    /// Uncounts the rows of a deleted key.
    pub(in crate::db) fn remove_rows(&self, summaries: u64, gaps: u64) {
        self.summary_rows.fetch_sub(summaries, Ordering::Relaxed);
        self.gap_rows.fetch_sub(gaps, Ordering::Relaxed);
    }
}

/// What one compaction run did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RunReport {
    /// Keys that had something to compact or trim.
    pub keys: u64,
    /// Atomic steps committed.
    pub steps: u64,
    /// Raw points removed (summarised into the first tier, or trimmed).
    pub points_compacted: u64,
    pub summaries_written: u64,
    /// Summaries merged into a coarser tier or trimmed.
    pub summaries_removed: u64,
}

impl RunReport {
    pub fn to_json(self) -> Json {
        json!({
            "keys": self.keys,
            "steps": self.steps,
            "points_compacted": self.points_compacted,
            "summaries_written": self.summaries_written,
            "summaries_removed": self.summaries_removed,
        })
    }
}

impl Db {
    /// Compaction counters and tier sizes for `stats`.
    pub fn compaction_stats(&self) -> Json {
        let c = &self.compaction;
        let (_, bytes) = self.store.summaries_size();
        json!({
            "runs": c.runs.load(Ordering::Relaxed),
            "steps": c.steps.load(Ordering::Relaxed),
            "points_compacted": c.points_compacted.load(Ordering::Relaxed),
            "summaries_written": c.summaries_written.load(Ordering::Relaxed),
            "summaries_removed": c.summaries_removed.load(Ordering::Relaxed),
            "skipped_keys": c.skipped_keys.load(Ordering::Relaxed),
            "last_run_seconds": c.last_run_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            "summaries": c.summary_rows.load(Ordering::Relaxed),
            "gaps": c.gap_rows.load(Ordering::Relaxed),
            "summaries_disk_bytes": bytes,
            "tiers": c.tiers.lock().map(|t| t.iter().map(|(step, (keys, buckets))| json!({
                "step": step_label(*step as f64), "keys": keys, "buckets": buckets,
            })).collect::<Vec<_>>()).unwrap_or_default(),
        })
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("compaction task failed: {e}")))?
}
