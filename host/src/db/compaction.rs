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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::{Db, Durable};
use crate::error::{Error, Result};
use crate::plugins::Plugin;
use crate::query::summarize::{CHUNK, summarize};
use crate::retention::{
    CompactionState, Policy, PolicySpec, Restructure, TierState, best_match, glob_matches,
    plan_restructure, step_label,
};
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
    /// As of the last run over every key: per tier step in seconds, how many keys have the
    /// tier and how many buckets it spans in all.
    tiers: std::sync::Mutex<BTreeMap<u64, (u64, u64)>>,
    /// Keys already warned about (a policy their compacted history does not fit).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
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
        self.governing(&policies, name, plugin)
    }

    /// [`Db::policy_for`] with the table `policies`.
    fn governing(
        &self,
        policies: &[(String, (PolicySpec, Policy))],
        name: &str,
        plugin: &Plugin,
    ) -> Policy {
        best_match(policies, name)
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
        let mut after = self.policies.read().map(|p| p.clone()).unwrap_or_default();
        after.retain(|(p, _)| p != pattern);
        if let (Some(spec), Some(policy)) = (&spec, &policy) {
            after.push((pattern.to_string(), (spec.clone(), policy.clone())));
        }
        self.check_fits(pattern, &after).await?;
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

    /// Refuses a change of policies (`after` is the table with it) that would leave a key
    /// that `pattern` matches with compacted history its new tiers cannot hold: the change
    /// would otherwise stop that key's compaction (see [`plan_restructure`]).
    async fn check_fits(
        &self,
        pattern: &str,
        after: &[(String, (PolicySpec, Policy))],
    ) -> Result<()> {
        let names: Vec<String> = self
            .keys
            .read()
            .map(|k| {
                k.keys()
                    .filter(|name| glob_matches(pattern, name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for name in names {
            let Some(slot) = self.slot(&name) else {
                continue;
            };
            let plugin = {
                let state = slot.lock().await;
                if state.def.is_none() {
                    continue;
                }
                self.plugin_of(&state)?
            };
            let policy = self.governing(after, &name, &plugin);
            let (store, key) = (self.store.clone(), name.clone());
            let Some(state) = blocking(move || store.view().compaction_state(&key)).await? else {
                continue;
            };
            if let Err(why) = self.plan_restructure(&name, &state, &policy, now()).await? {
                return Err(Error::query(format!(
                    "the policy does not fit key {name:?}: {why}"
                )));
            }
        }
        Ok(())
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
            "tiers": c.tiers.lock().map(|t| t.iter().map(|(step, (keys, buckets))| json!({
                "step": step_label(*step as f64), "keys": keys, "buckets": buckets,
            })).collect::<Vec<_>>()).unwrap_or_default(),
        })
    }

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
            None => self
                .keys
                .read()
                .map(|k| k.keys().cloned().collect())
                .unwrap_or_default(),
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

    /// Compacts one key as its policy says; returns its watermarks afterwards (`None` when it
    /// has no compacted history).
    async fn compact_key(
        &self,
        name: &str,
        now: Time,
        report: &mut RunReport,
    ) -> Result<Option<CompactionState>> {
        let Some(slot) = self.slot(name) else {
            return Ok(None);
        };
        let (plugin, options) = {
            let state = slot.lock().await;
            if state.def.is_none() {
                return Ok(None);
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
                    return Ok(None);
                };
                if policy.raw.is_infinite() {
                    return Ok(None);
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
        let empty = plugin.merge(&options, &[])?;
        let ctx = Ctx {
            name,
            plugin: &plugin,
            options: &options,
            empty: &empty,
        };
        let steps_match = state.tiers.len() == policy.tiers.len()
            && state
                .tiers
                .iter()
                .zip(&policy.tiers)
                .all(|(s, p)| s.step == p.step);
        if !steps_match {
            match self.restructure(&ctx, &state, &policy, now, report).await? {
                Some(next) => state = next,
                None => return Ok(Some(state)),
            }
        }
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
                // `a` lies inside a bucket only where a change of steps left a partial one.
                let next_edge = (a / unit).floor() * unit + unit;
                let mut b = (((a + span) / unit).floor() * unit).max(next_edge).min(cut);
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
                        b = ((p.time / unit).floor() * unit).max(next_edge).min(b);
                    }
                }
                self.step(&ctx, &mut state, i, a, b, report).await?;
                a = b;
            }
        }
        Ok(Some(state))
    }

    /// Moves `[a, b)` of level `i` into level `i + 1` (or drops it past the last), as one
    /// atomic batch, and records the new watermark in `state`.
    ///
    /// `a` is a bucket edge of the target tier except after a change of steps, where the
    /// target may hold a partial bucket ending at `a`: that summary is merged first into the
    /// first new one (summaries of adjacent spans merge exactly) and stored again under its
    /// start.
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
        let source = if i == 0 {
            None
        } else {
            Some(state.tiers[i - 1].step)
        };
        let store = self.store.clone();
        let (key, plugin, options, empty) = ctx.owned();
        let target = state.clone();
        let (writes, removed_points, removed_summaries) = blocking(move || {
            let view = store.view();
            let mut writes = Vec::new();
            // The target tier's summaries of `[a, b)`, in time order, as (bucket start,
            // part): merged per bucket, after the partial bucket ending at `a` if any.
            let mut parts: Vec<(Time, Vec<u8>)> = Vec::new();
            let removed;
            match source {
                None => {
                    if let Some(step) = target.tiers.get(i).map(|t| t.step) {
                        let first = (a / step).floor() * step + step;
                        let mut edges = vec![a];
                        let n = ((b - first) / step).ceil().max(0.0) as usize;
                        edges.extend((0..n).map(|k| first + k as f64 * step));
                        edges.push(b);
                        let summaries = summarize(
                            &plugin,
                            &options,
                            &edges,
                            view.point_before(&key, a)?,
                            view.scan(&key, a, b),
                            CHUNK,
                        )?;
                        for (k, summary) in summaries.into_iter().enumerate() {
                            parts.push((target.bucket_start(i, edges[k]), summary));
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
                    let mut starts = Vec::new();
                    for item in view.summaries(&key, source, a, b) {
                        let (start, summary) = item?;
                        starts.push(start);
                        if i < target.tiers.len() {
                            parts.push((target.bucket_start(i, start), summary));
                        }
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
            if let Some(tier) = target.tiers.get(i) {
                let partial = target.bucket_start(i, a);
                if partial < a {
                    for item in view.summaries(&key, tier.step, partial, a) {
                        let (start, summary) = item?;
                        parts.insert(0, (start, summary));
                    }
                }
                for (start, merged) in merge_runs(&plugin, &options, parts)? {
                    if merged != empty {
                        writes.push(Write::Summary {
                            key: key.clone(),
                            step: tier.step,
                            start,
                            summary: merged,
                        });
                    }
                }
            }
            let points = if source.is_none() { removed } else { 0 };
            let summaries = if source.is_some() { removed } else { 0 };
            Ok((writes, points, summaries))
        })
        .await?;
        let mut next = state.clone();
        next.set_from(i, b);
        self.commit(
            ctx.name,
            writes,
            &next,
            removed_points,
            removed_summaries,
            report,
        )
        .await?;
        *state = next;
        tracing::debug!(key = %ctx.name, level = i, from = a, to = b,
            into = %state.tiers.get(i).map_or("nothing".into(), |t| step_label(t.step)),
            "compaction step");
        Ok(())
    }

    /// Re-expresses a key's stored tiers in the steps of its (changed) policy, as one atomic
    /// batch: every old summary merges into the new tier that covers it, old data the new
    /// policy keeps nothing of is dropped. Raw points are not touched: finer new tiers fill
    /// from them as they age. Returns the new state, or `None` when the key's data does not
    /// fit the policy (counted in `skipped_keys`, warned once).
    async fn restructure(
        &self,
        ctx: &Ctx<'_>,
        old: &CompactionState,
        policy: &Policy,
        now: Time,
        report: &mut RunReport,
    ) -> Result<Option<CompactionState>> {
        let plan = match self.plan_restructure(ctx.name, old, policy, now).await? {
            Ok(plan) => plan,
            Err(why) => {
                self.compaction.skipped_keys.fetch_add(1, Ordering::Relaxed);
                let first = self
                    .compaction
                    .warned
                    .lock()
                    .map(|mut w| w.insert(ctx.name.to_string()))
                    .unwrap_or(false);
                if first {
                    tracing::warn!(key = %ctx.name, reason = %why, "the key's policy changed its tier steps and its compacted history does not fit them; the key is not compacted until the policy changes");
                }
                return Ok(None);
            }
        };
        let store = self.store.clone();
        let (key, plugin, options, empty) = ctx.owned();
        let (old_state, new_state) = (old.clone(), plan.state.clone());
        let (writes, removed) = blocking(move || {
            let view = store.view();
            let mut deletes = Vec::new();
            // Per new tier, (bucket start, part) in time order.
            let mut parts: Vec<Vec<(Time, Vec<u8>)>> = vec![Vec::new(); new_state.tiers.len()];
            for (k, tier) in old_state.tiers.iter().enumerate().rev() {
                let (lo, hi) = old_state.level_range(k + 1);
                for item in view.summaries(&key, tier.step, lo, hi) {
                    let (start, summary) = item?;
                    deletes.push((tier.step, start));
                    if plan.dropped.contains(&k) {
                        continue;
                    }
                    let (j, bucket) = new_state.home(start).ok_or_else(|| {
                        Error::Storage(format!("a {} summary at {start} of {key:?} has no tier after the change of steps", step_label(tier.step)))
                    })?;
                    parts[j].push((bucket, summary));
                }
            }
            let mut writes = Vec::new();
            let mut written = std::collections::HashSet::new();
            for (tier, parts) in new_state.tiers.iter().zip(parts) {
                for (start, merged) in merge_runs(&plugin, &options, parts)? {
                    if merged != empty {
                        written.insert((tier.step.to_bits(), start.to_bits()));
                        writes.push(Write::Summary {
                            key: key.clone(),
                            step: tier.step,
                            start,
                            summary: merged,
                        });
                    }
                }
            }
            let removed = deletes.len() as u64;
            // A summary rewritten under the same step and start is replaced, not deleted.
            for (step, start) in deletes {
                if !written.contains(&(step.to_bits(), start.to_bits())) {
                    writes.push(Write::DeleteSummary {
                        key: key.clone(),
                        step,
                        start,
                    });
                }
            }
            Ok((writes, removed))
        })
        .await?;
        self.commit(ctx.name, writes, &plan.state, 0, removed, report)
            .await?;
        tracing::info!(key = %ctx.name,
            from = %old.tiers.iter().map(|t| step_label(t.step)).collect::<Vec<_>>().join(" → "),
            to = %plan.state.tiers.iter().map(|t| step_label(t.step)).collect::<Vec<_>>().join(" → "),
            "the key's compacted history now has its policy's tier steps");
        Ok(Some(plan.state))
    }

    /// [`plan_restructure`] for `name`, reading which old tiers hold summaries.
    async fn plan_restructure(
        &self,
        name: &str,
        old: &CompactionState,
        policy: &Policy,
        now: Time,
    ) -> Result<std::result::Result<Restructure, String>> {
        let (store, key, state) = (self.store.clone(), name.to_string(), old.clone());
        let has_data = blocking(move || {
            let view = store.view();
            (1..=state.tiers.len())
                .map(|i| {
                    let (lo, hi) = state.level_range(i);
                    Ok(view
                        .summaries(&key, state.tiers[i - 1].step, lo, hi)
                        .next()
                        .transpose()?
                        .is_some())
                })
                .collect::<Result<Vec<bool>>>()
        })
        .await?;
        Ok(plan_restructure(old, &has_data, policy, now))
    }

    /// Queues one compaction batch (the data `writes` and the key's new `state`) under the
    /// key's lock, so a `delete` of the key comes wholly before or after it, waits until it
    /// is durable, and counts it.
    async fn commit(
        &self,
        name: &str,
        mut writes: Vec<Write>,
        state: &CompactionState,
        removed_points: u64,
        removed_summaries: u64,
        report: &mut RunReport,
    ) -> Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| Error::UnknownKey(name.to_string()))?;
        let written = writes
            .iter()
            .filter(|w| matches!(w, Write::Summary { .. }))
            .count() as u64;
        writes.push(Write::Compaction {
            key: name.to_string(),
            state: state.clone(),
        });
        let done = {
            let key_state = slot.lock().await;
            if key_state.def.is_none() {
                return Err(Error::UnknownKey(name.to_string()));
            }
            self.writer.submit(WriteBatch {
                writes,
                after: None,
            })
        };
        done.await.unwrap_or(Err(Error::ShuttingDown))?;
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
        Ok(())
    }
}

/// Merges consecutive parts with the same bucket start (parts in time order), oldest first.
fn merge_runs(
    plugin: &Plugin,
    options: &str,
    parts: Vec<(Time, Vec<u8>)>,
) -> Result<Vec<(Time, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut run: Vec<Vec<u8>> = Vec::new();
    let mut bucket = None;
    for (start, part) in parts {
        if bucket.is_some_and(|b| b != start) {
            out.push((bucket.unwrap_or(start), merge(plugin, options, &mut run)?));
        }
        bucket = Some(start);
        run.push(part);
    }
    if let Some(start) = bucket {
        out.push((start, merge(plugin, options, &mut run)?));
    }
    Ok(out)
}

/// One part as it is, several merged; leaves `run` empty.
fn merge(plugin: &Plugin, options: &str, run: &mut Vec<Vec<u8>>) -> Result<Vec<u8>> {
    if run.len() == 1 {
        return Ok(run.pop().expect("one part"));
    }
    let merged = plugin.merge(options, run)?;
    run.clear();
    Ok(merged)
}

/// What every step of one key's compaction shares.
struct Ctx<'a> {
    name: &'a str,
    plugin: &'a Arc<Plugin>,
    options: &'a str,
    /// The summary of nothing: such buckets are not stored.
    empty: &'a [u8],
}

impl Ctx<'_> {
    /// (name, plugin, options, empty summary), owned, for a blocking task.
    fn owned(&self) -> (String, Arc<Plugin>, String, Vec<u8>) {
        (
            self.name.to_string(),
            self.plugin.clone(),
            self.options.to_string(),
            self.empty.to_vec(),
        )
    }
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
