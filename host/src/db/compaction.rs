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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::{Db, Durable};
use crate::error::{Error, Result};
use crate::plugins::Plugin;
use crate::query::summarize::{CHUNK, summarize};
use crate::retention::{CompactionState, Policy, PolicySpec, TierState, best_match, step_label};
use crate::store::{Write, WriteBatch};
use crate::value::{Time, now};

/// Raw points compacted per step, at most (fewer when a bucket edge comes first).
const RAW_CHUNK_POINTS: usize = 50_000;
/// Raw time compacted per step, at most (rounded to whole target buckets): 31 days.
const RAW_CHUNK_SECONDS: f64 = 31.0 * 86_400.0;
/// Source summaries merged per step, about.
const TIER_CHUNK_SUMMARIES: f64 = 2_000.0;
/// A run longer than this is logged at info level.
const LONG_RUN: Duration = Duration::from_secs(10);

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
    /// The policy that governs `name`, a key of the type `plugin` serves: its own, else the
    /// most specific matching pattern, else the type's default (the plugin's
    /// `default-retention`), else the configured default.
    pub fn policy_for(&self, name: &str, plugin: &Plugin) -> Policy {
        let policies = self.policies.read().map(|p| p.clone()).unwrap_or_default();
        best_match(&policies, name)
            .or(plugin.default_retention.as_ref())
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.default_policy.1.clone())
    }

    /// Sets (or with `None` removes) the policy of a key name or `*` pattern. It applies to
    /// existing data at the next compaction run.
    pub async fn set_policy(&self, pattern: &str, spec: Option<PolicySpec>) -> Result<Durable> {
        if pattern.is_empty() || pattern.len() > crate::store::MAX_KEY_LEN {
            return Err(Error::query("a policy's key pattern is 1 to 1024 bytes"));
        }
        let policy = spec.as_ref().map(PolicySpec::policy).transpose()?;
        let mut policies = self
            .policies
            .write()
            .map_err(|_| Error::Storage("policy table lock poisoned".into()))?;
        policies.retain(|(p, _)| p != pattern);
        if let (Some(spec), Some(policy)) = (&spec, policy) {
            policies.push((pattern.to_string(), (spec.clone(), policy)));
        }
        let done = self.writer.submit(WriteBatch {
            writes: vec![Write::Policy {
                pattern: pattern.to_string(),
                spec,
            }],
            after: None,
        });
        Ok(Durable(Some(done)))
    }

    /// `{"default": spec, "types": {type: spec}, "policies": {pattern: spec}}`: `types`
    /// holds the loaded types that chose a default of their own.
    pub fn policies_json(&self) -> Json {
        let policies = self.policies.read().map(|p| p.clone()).unwrap_or_default();
        let types: serde_json::Map<_, _> = self
            .registry
            .all()
            .iter()
            .filter_map(|p| {
                Some((
                    p.info.name.clone(),
                    p.default_retention.as_ref()?.0.to_json(),
                ))
            })
            .collect();
        json!({
            "default": self.default_policy.0.to_json(),
            "types": types,
            "policies": policies.iter().map(|(p, (spec, _))| (p.clone(), spec.to_json()))
                .collect::<serde_json::Map<_, _>>(),
        })
    }

    /// Compaction counters and tier sizes for `stats`.
    pub fn compaction_stats(&self) -> Json {
        let c = &self.compaction;
        let (count, bytes) = self.store.summaries_size();
        json!({
            "runs": c.runs.load(Ordering::Relaxed),
            "steps": c.steps.load(Ordering::Relaxed),
            "points_compacted": c.points_compacted.load(Ordering::Relaxed),
            "summaries_written": c.summaries_written.load(Ordering::Relaxed),
            "summaries_removed": c.summaries_removed.load(Ordering::Relaxed),
            "skipped_keys": c.skipped_keys.load(Ordering::Relaxed),
            "last_run_seconds": c.last_run_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            "summaries": count,
            "summaries_disk_bytes": bytes,
        })
    }

    /// Compacts every key (or only `only`) as its policy says at time `now`, and returns
    /// when done. Runs never overlap.
    pub async fn compact(&self, only: Option<&str>, now: Time) -> Result<RunReport> {
        let _one_run = self.compact_lock.lock().await;
        let started = Instant::now();
        let names: Vec<String> = match only {
            Some(name) => vec![name.to_string()],
            None => self
                .keys
                .read()
                .map(|k| k.keys().cloned().collect())
                .unwrap_or_default(),
        };
        let mut report = RunReport::default();
        for name in names {
            let before = report.steps;
            if let Err(e) = self.compact_key(&name, now, &mut report).await {
                match e {
                    Error::Storage(_) | Error::ShuttingDown => return Err(e),
                    e => tracing::warn!(key = %name, error = %e, "compaction of a key failed"),
                }
            }
            if report.steps > before {
                report.keys += 1;
            }
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

    async fn compact_key(&self, name: &str, now: Time, report: &mut RunReport) -> Result<()> {
        let Some(slot) = self.slot(name) else {
            return Ok(());
        };
        let (plugin, options) = {
            let state = slot.lock().await;
            if state.def.is_none() {
                return Ok(());
            }
            (self.plugin_of(&state)?, state.effective.clone())
        };
        let policy = self.policy_for(name, &plugin);
        let store = self.store.clone();
        let key = name.to_string();
        let stored = blocking(move || store.view().compaction_state(&key)).await?;
        let mut state = match stored {
            Some(s) => s,
            None => {
                let (store, key) = (self.store.clone(), name.to_string());
                let first =
                    blocking(move || store.view().first_point_from(&key, f64::NEG_INFINITY))
                        .await?;
                let Some(first) = first else {
                    return Ok(());
                };
                if policy.raw.is_infinite() {
                    return Ok(());
                }
                // Every watermark starts at a bucket edge of the coarsest tier.
                let anchor = policy.tiers.last().map_or(1.0, |t| t.step);
                let start = (first.time / anchor).floor() * anchor;
                CompactionState {
                    raw_from: start,
                    tiers: policy
                        .tiers
                        .iter()
                        .map(|t| TierState {
                            step: t.step,
                            from: start,
                        })
                        .collect(),
                }
            }
        };
        let steps_match = state.tiers.len() == policy.tiers.len()
            && state
                .tiers
                .iter()
                .zip(&policy.tiers)
                .all(|(s, p)| s.step == p.step);
        if !steps_match {
            self.compaction.skipped_keys.fetch_add(1, Ordering::Relaxed);
            // Every run meets it again: counted, logged at debug only.
            tracing::debug!(key = %name, "the key's policy changed its tier steps; its stored tiers are kept as they are and it is not compacted");
            return Ok(());
        }
        let empty = plugin.merge(&options, &[])?;
        let ctx = Ctx {
            name,
            plugin: &plugin,
            options: &options,
            empty: &empty,
        };
        let levels = state.tiers.len() + 1;
        for i in 0..levels {
            let keep = if i == 0 {
                policy.raw
            } else {
                policy.tiers[i - 1].keep
            };
            if !keep.is_finite() {
                continue;
            }
            let (lo, hi) = state.level_range(i);
            // Into the next tier, in whole buckets of it; or, past the last tier, dropped.
            let (unit, span) = match state.tiers.get(i) {
                Some(next) => {
                    let per = if i == 0 {
                        RAW_CHUNK_SECONDS
                    } else {
                        TIER_CHUNK_SUMMARIES * state.tiers[i - 1].step
                    };
                    (next.step, (per / next.step).floor().max(1.0) * next.step)
                }
                None => {
                    let unit = if i == 0 { 1.0 } else { state.tiers[i - 1].step };
                    let per = if i == 0 {
                        RAW_CHUNK_SECONDS
                    } else {
                        TIER_CHUNK_SUMMARIES * unit
                    };
                    (unit, per)
                }
            };
            let cut = (((now - keep) / unit).floor() * unit).min((hi / unit).floor() * unit);
            let mut a = lo;
            while a < cut {
                let mut b = (a + span).min(cut);
                if i == 0 {
                    // At most RAW_CHUNK_POINTS points, but at least one target bucket.
                    let (store, key) = (self.store.clone(), name.to_string());
                    let nth = blocking(move || {
                        store
                            .view()
                            .scan(&key, a, b)
                            .nth(RAW_CHUNK_POINTS)
                            .transpose()
                    })
                    .await?;
                    if let Some(p) = nth {
                        b = ((p.time / unit).floor() * unit).max(a + unit).min(b);
                    }
                }
                self.step(&ctx, &mut state, i, a, b, report).await?;
                a = b;
            }
        }
        Ok(())
    }

    /// Moves `[a, b)` of level `i` into level `i + 1` (or drops it past the last), as one
    /// atomic batch, and records the new watermark in `state`.
    async fn step(
        &self,
        ctx: &Ctx<'_>,
        state: &mut CompactionState,
        i: usize,
        a: Time,
        b: Time,
        report: &mut RunReport,
    ) -> Result<()> {
        let slot = self
            .slot(ctx.name)
            .ok_or_else(|| Error::UnknownKey(ctx.name.to_string()))?;
        if i == 0 {
            // Fence: from now on a put before `b` is refused; the ones already queued land
            // before the points are read.
            slot.lock().await.raw_from = b;
            self.settled().await?;
        }
        let target = state.tiers.get(i).map(|t| t.step);
        let source = if i == 0 {
            None
        } else {
            Some(state.tiers[i - 1].step)
        };
        let store = self.store.clone();
        let (key, plugin, options, empty) = (
            ctx.name.to_string(),
            ctx.plugin.clone(),
            ctx.options.to_string(),
            ctx.empty.to_vec(),
        );
        let (mut writes, removed_points, removed_summaries) = blocking(move || {
            let view = store.view();
            let mut writes = Vec::new();
            let mut keep_summary = |start: Time, step: f64, summary: Vec<u8>| {
                if summary != empty {
                    writes.push(Write::Summary {
                        key: key.clone(),
                        step,
                        start,
                        summary,
                    });
                }
            };
            let removed;
            match source {
                None => {
                    if let Some(step) = target {
                        let n = ((b - a) / step).round().max(1.0) as usize;
                        let mut edges: Vec<Time> = (0..n).map(|k| a + k as f64 * step).collect();
                        edges.push(b);
                        let summaries = summarize(
                            &plugin,
                            &options,
                            &edges,
                            view.point_before(&key, a)?,
                            view.scan(&key, a, b),
                            CHUNK,
                        )?;
                        for (k, s) in summaries.into_iter().enumerate() {
                            keep_summary(edges[k], step, s);
                        }
                    }
                    // Every point before `b` goes but the newest: it carries its value into
                    // the raw period that now starts at `b`.
                    // (Scanning from the kept point, not from the start: the deleted ones
                    // before it may still lie on disk as tombstones.)
                    let from = view.point_before(&key, a)?.map_or(a, |p| p.time);
                    let mut old = Vec::new();
                    for p in view.scan(&key, from, b) {
                        old.push(p?.time);
                    }
                    old.pop();
                    removed = old.len() as u64;
                    for time in old {
                        writes.push(Write::DeletePoint {
                            key: key.clone(),
                            time,
                        });
                    }
                }
                Some(source) => {
                    let mut bucket: Option<Time> = None;
                    let mut parts: Vec<Vec<u8>> = Vec::new();
                    let mut starts = Vec::new();
                    for item in view.summaries(&key, source, a, b) {
                        let (start, summary) = item?;
                        starts.push(start);
                        if let Some(step) = target {
                            let this = (start / step).floor() * step;
                            if bucket.is_some_and(|t| t != this) {
                                let merged = plugin.merge(&options, &parts)?;
                                parts.clear();
                                keep_summary(bucket.unwrap_or(this), step, merged);
                            }
                            bucket = Some(this);
                            parts.push(summary);
                        }
                    }
                    if let (Some(step), Some(start)) = (target, bucket) {
                        let merged = plugin.merge(&options, &parts)?;
                        keep_summary(start, step, merged);
                    }
                    removed = starts.len() as u64;
                    for start in starts {
                        writes.push(Write::DeleteSummary {
                            key: key.clone(),
                            step: source,
                            start,
                        });
                    }
                }
            }
            let points = if source.is_none() { removed } else { 0 };
            let summaries = if source.is_some() { removed } else { 0 };
            Ok((writes, points, summaries))
        })
        .await?;
        let written = writes
            .iter()
            .filter(|w| matches!(w, Write::Summary { .. }))
            .count() as u64;
        let mut next = state.clone();
        next.set_from(i, b);
        writes.push(Write::Compaction {
            key: ctx.name.to_string(),
            state: next.clone(),
        });
        let done = {
            // Queued under the key's lock, so a `delete` of the key comes wholly before or
            // after this step.
            let key_state = slot.lock().await;
            if key_state.def.is_none() {
                return Err(Error::UnknownKey(ctx.name.to_string()));
            }
            self.writer.submit(WriteBatch {
                writes,
                after: None,
            })
        };
        done.await.unwrap_or(Err(Error::ShuttingDown))?;
        *state = next;
        let c = &self.compaction;
        c.steps.fetch_add(1, Ordering::Relaxed);
        c.points_compacted
            .fetch_add(removed_points, Ordering::Relaxed);
        c.summaries_written.fetch_add(written, Ordering::Relaxed);
        c.summaries_removed
            .fetch_add(removed_summaries, Ordering::Relaxed);
        report.steps += 1;
        report.points_compacted += removed_points;
        report.summaries_written += written;
        report.summaries_removed += removed_summaries;
        tracing::debug!(key = %ctx.name, level = i, from = a, to = b,
            into = %state.tiers.get(i).map_or("nothing".into(), |t| step_label(t.step)),
            "compaction step");
        Ok(())
    }
}

/// What every step of one key's compaction shares.
struct Ctx<'a> {
    name: &'a str,
    plugin: &'a Arc<Plugin>,
    options: &'a str,
    /// The summary of nothing: such buckets are not stored.
    empty: &'a [u8],
}

/// Runs compaction every `every` until the database is dropped.
pub(super) async fn run(db: std::sync::Weak<Db>, every: Duration) {
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("compaction task failed: {e}")))?
}
