//! The run loop: which keys a compaction run visits, and when runs happen. The work on one
//! key is [`Db::compact_key`]'s (module `key`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::RunReport;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::value::{Time, now};

/// A run longer than this is logged at info level.
const LONG_RUN: Duration = Duration::from_secs(10);

impl Db {
    /// Compacts every key (or only `only`, which must exist: else `unknown_key`) as its
    /// policy says at time `now`, and returns when done. Runs never overlap.
    pub async fn compact(&self, only: Option<&str>, now: Time) -> Result<RunReport> {
        if let Some(name) = only {
            crate::store::check_key_name(name)?;
            if self.describe(name).await.is_none() {
                return Err(Error::UnknownKey(name.to_string()));
            }
        }
        let _one_run = self.compact_lock.lock().await;
        let started = Instant::now();
        let names: Vec<String> = match only {
            Some(name) => vec![name.to_string()],
            None => self.keys.names(|_| true),
        };
        let mut report = RunReport::default();
        // Per tier step (seconds): keys with the tier, buckets it spans.
        let mut tiers: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for name in names {
            let before = report.steps;
            match self.compact_key(&name, now, &mut report).await {
                Ok(Some(state)) => {
                    for (i, tier) in state.tiers.iter().enumerate() {
                        let (lo, hi) = state.level_range(i + 1);
                        let seen = tiers.entry(tier.step as u64).or_default();
                        seen.0 += 1;
                        seen.1 += ((hi - lo) / tier.step).ceil().max(0.0) as u64;
                    }
                }
                Ok(None) => {}
                Err(e @ (Error::Storage(_) | Error::ShuttingDown)) => return Err(e),
                Err(e) => tracing::warn!(key = %name, error = %e, "compaction of a key failed"),
            }
            if report.steps > before {
                report.keys += 1;
            }
        }
        if only.is_none()
            && let Ok(mut last) = self.compaction.tiers.lock()
        {
            *last = tiers;
        }
        let elapsed = started.elapsed();
        let c = &self.compaction;
        c.runs.fetch_add(1, Ordering::Relaxed);
        c.last_run_ms
            .store(elapsed.as_millis() as u64, Ordering::Relaxed);
        if elapsed >= LONG_RUN {
            tracing::info!(
                keys = report.keys,
                steps = report.steps,
                points = report.points_compacted,
                summaries = report.summaries_written,
                seconds = elapsed.as_secs_f64(),
                "compaction run done"
            );
        }
        Ok(report)
    }
}

/// Runs compaction every `every` until the database is dropped.
pub(in crate::db) async fn run(db: std::sync::Weak<Db>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(db) = db.upgrade() else {
            return;
        };
        if let Err(e) = db.compact(None, now()).await {
            tracing::error!(error = %e, "compaction run failed");
            if matches!(e, Error::ShuttingDown) {
                return;
            }
        }
    }
}
