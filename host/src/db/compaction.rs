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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::{Db, Durable};
use crate::error::{Error, Result};
use crate::plugins::Plugin;
use crate::retention::{
    CompactionState, Policy, PolicySpec, Restructure, TierState, best_match, glob_matches,
    plan_restructure, step_label,
};
use crate::store::{Gap, View, Write, WriteBatch};
use crate::summary::summarize::{CHUNK, summarize};
use crate::value::{Time, now};

/// Raw points compacted per step, about (a step ends at a bucket edge, after one bucket at
/// least).
const RAW_CHUNK_POINTS: usize = 50_000;
/// Source summaries merged per step, about (likewise).
const TIER_CHUNK_SUMMARIES: usize = 2_000;
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
    pub(super) fn add_rows(&self, summaries: u64, gaps: u64) {
        self.summary_rows.fetch_add(summaries, Ordering::Relaxed);
        self.gap_rows.fetch_add(gaps, Ordering::Relaxed);
    }

    /// Uncounts the rows of a deleted key.
    pub(super) fn remove_rows(&self, summaries: u64, gaps: u64) {
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
            .unwrap_or_else(|| self.default_policy().1)
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
        let names = self.keys.names(|name| glob_matches(pattern, name));
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
            "default": self.default_policy().0.to_json(),
            "types": types,
            "policies": policies.iter().map(|(p, (spec, _))| (p.clone(), spec.to_json()))
                .collect::<serde_json::Map<_, _>>(),
        })
    }

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
        let (plugin, options, counted) = {
            let state = slot.lock().await;
            if state.def.is_none() {
                return Ok(None);
            }
            (
                self.plugin_of(&state)?,
                state.effective.clone(),
                state.summary_rows,
            )
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
                    summaries: Some(0),
                    gaps: 0,
                }
            }
        };
        // A state written before rows were counted: the count made at start.
        state.summaries.get_or_insert(counted);
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
            let unit = match state.tiers.get(i) {
                Some(next) => next.step,
                None if i == 0 => 1.0,
                None => state.tiers[i - 1].step,
            };
            let cut = (((now - keep) / unit).floor() * unit).min((hi / unit).floor() * unit);
            let source = (i > 0).then(|| state.tiers[i - 1].step);
            let mut a = lo;
            while a < cut {
                // `a` lies inside a bucket only where a change of steps left a partial one.
                let next_edge = (a / unit).floor() * unit + unit;
                // A step follows the rows it reads, never the time they span: it ends at the
                // bucket of the RAW_CHUNK_POINTS-th point (or TIER_CHUNK_SUMMARIES-th summary)
                // from `a`, or at `cut`; a silence of any length is one step.
                let (store, key) = (self.store.clone(), name.to_string());
                let nth = blocking(move || {
                    let view = store.view();
                    Ok(match source {
                        None => view
                            .scan(&key, a, cut)
                            .nth(RAW_CHUNK_POINTS)
                            .transpose()?
                            .map(|p| p.time),
                        Some(step) => view
                            .summaries(&key, step, a, cut)
                            .nth(TIER_CHUNK_SUMMARIES)
                            .transpose()?
                            .map(|(start, _)| start),
                    })
                })
                .await?;
                let b = nth.map_or(cut, |t| ((t / unit).floor() * unit).max(next_edge).min(cut));
                self.step(&ctx, &mut state, i, a, b, report).await?;
                a = b;
                // Other tasks of this runtime get their turn between steps.
                tokio::task::yield_now().await;
            }
        }
        Ok(Some(state))
    }

    /// Moves `[a, b)` of level `i` into level `i + 1` (or drops it past the last), as one
    /// atomic batch, and records the new watermark in `state`.
    ///
    /// Only target buckets that hold data get a summary: raw points make the summaries of
    /// the buckets they fall in and a [`Gap`] for each stretch between those buckets (the
    /// value carried through it); a coarser bucket merges, in time order, the finer
    /// summaries and the pieces of gaps inside it, and those pieces leave the gaps. So a
    /// step's rows follow the data, whatever time it spans.
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
        let store = self.store.clone();
        let (key, plugin, options, empty) = ctx.owned();
        let target = state.clone();
        let rows = blocking(move || {
            let view = store.view();
            let mut rows = Rows::new(&key);
            let mut targets = Vec::new();
            let step = target.tiers.get(i).map(|t| t.step);
            if i == 0 {
                raw_into(
                    &view,
                    &key,
                    &plugin,
                    &options,
                    &target,
                    (a, b),
                    &mut targets,
                    &mut rows,
                )?;
            } else {
                let source = target.tiers[i - 1].step;
                for item in view.summaries(&key, source, a, b) {
                    let (start, summary) = item?;
                    rows.delete_summary(source, start);
                    let Some(step) = step else {
                        continue;
                    };
                    let aligned = (start / step).floor() * step;
                    let bucket = target.bucket_start(i, start);
                    match targets.last_mut() {
                        Some(Target {
                            start: s, parts, ..
                        }) if *s == bucket => {
                            parts.push((start, summary));
                        }
                        _ => targets.push(Target {
                            step,
                            start: bucket,
                            span: (aligned.max(a), (aligned + step).min(b)),
                            parts: vec![(start, summary)],
                            existed: false,
                        }),
                    }
                }
            }
            let gaps = view
                .gaps_overlapping(&key, a, b)?
                .collect::<Result<Vec<_>>>()?;
            match step {
                Some(_) => {
                    // The partial bucket ending at `a` (after a change of steps) goes first.
                    if let Some(first) = targets.first_mut()
                        && first.start < first.span.0
                    {
                        let tier = target.tiers[i].step;
                        if let Some(item) = view.summaries(&key, tier, first.start, a).next() {
                            let (start, summary) = item?;
                            first.parts.insert(0, (start, summary));
                            first.existed = true;
                        }
                    }
                    store_targets(&plugin, &options, &empty, targets, &gaps, &[], &mut rows)?;
                }
                // Past the last tier: dropped, with the gaps inside.
                None => cut_gaps(&gaps, &[(a, b)], &mut rows),
            }
            Ok(rows)
        })
        .await?;
        let mut next = state.clone();
        next.set_from(i, b);
        self.commit(ctx.name, rows, &mut next, report).await?;
        *state = next;
        tracing::debug!(key = %ctx.name, level = i, from = a, to = b,
            into = %state.tiers.get(i).map_or("nothing".into(), |t| step_label(t.step)),
            "compaction step");
        Ok(())
    }

    /// Re-expresses a key's stored tiers in the steps of its (changed) policy, as one atomic
    /// batch: every old summary merges into the new tier that covers it (with the pieces of
    /// gaps inside that bucket), old data the new policy keeps nothing of is dropped. Raw
    /// points are not touched: finer new tiers fill from them as they age. Returns the new
    /// state, or `None` when the key's data does not fit the policy (counted in
    /// `skipped_keys`, warned once).
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
        let rows = blocking(move || {
            let view = store.view();
            let mut olds = Vec::new();
            // Per (new tier, bucket start): its parts.
            let mut buckets: HashMap<(usize, u64), Target> = HashMap::new();
            let mut dropped = Vec::new();
            for (k, tier) in old_state.tiers.iter().enumerate().rev() {
                let (lo, hi) = old_state.level_range(k + 1);
                if plan.dropped.contains(&k) {
                    dropped.push((lo, hi));
                }
                for item in view.summaries(&key, tier.step, lo, hi) {
                    let (start, summary) = item?;
                    olds.push((tier.step, start));
                    if plan.dropped.contains(&k) {
                        continue;
                    }
                    let (j, bucket) = new_state.home(start).ok_or_else(|| {
                        Error::Storage(format!("a {} summary at {start} of {key:?} has no tier after the change of steps", step_label(tier.step)))
                    })?;
                    let step = new_state.tiers[j].step;
                    let upper = new_state.level_range(j + 1).1;
                    buckets
                        .entry((j, bucket.to_bits()))
                        .or_insert_with(|| Target {
                            step,
                            start: bucket,
                            span: (bucket, ((bucket / step).floor() * step + step).min(upper)),
                            parts: Vec::new(),
                            existed: false,
                        })
                        .parts
                        .push((start, summary));
                }
            }
            let mut rows = Rows::new(&key);
            let old_keys: HashSet<(u64, u64)> = olds
                .iter()
                .map(|(step, start)| (step.to_bits(), start.to_bits()))
                .collect();
            let mut targets: Vec<Target> = buckets.into_values().collect();
            for t in &mut targets {
                // A summary rewritten under the same step and start replaces the old one.
                t.existed = old_keys.contains(&(t.step.to_bits(), t.start.to_bits()));
            }
            let gaps = view
                .gaps(&key, f64::NEG_INFINITY, f64::INFINITY)
                .collect::<Result<Vec<_>>>()?;
            let written =
                store_targets(&plugin, &options, &empty, targets, &gaps, &dropped, &mut rows)?;
            for (step, start) in olds {
                if !written.contains(&(step.to_bits(), start.to_bits())) {
                    rows.delete_summary(step, start);
                }
            }
            Ok(rows)
        })
        .await?;
        let mut next = plan.state.clone();
        next.summaries = old.summaries;
        next.gaps = old.gaps;
        self.commit(ctx.name, rows, &mut next, report).await?;
        tracing::info!(key = %ctx.name,
            from = %old.tiers.iter().map(|t| step_label(t.step)).collect::<Vec<_>>().join(" → "),
            to = %next.tiers.iter().map(|t| step_label(t.step)).collect::<Vec<_>>().join(" → "),
            "the key's compacted history now has its policy's tier steps");
        Ok(Some(next))
    }

    /// [`plan_restructure`] for `name`, reading which old tiers hold summaries or gaps.
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
                    if lo >= hi {
                        return Ok(false);
                    }
                    let summary = view
                        .summaries(&key, state.tiers[i - 1].step, lo, hi)
                        .next()
                        .transpose()?;
                    let gap = view.gaps_overlapping(&key, lo, hi)?.next().transpose()?;
                    Ok(summary.is_some() || gap.is_some())
                })
                .collect::<Result<Vec<bool>>>()
        })
        .await?;
        Ok(plan_restructure(old, &has_data, policy, now))
    }

    /// Queues one compaction batch (`rows`, and the key's new `state` with its row counts
    /// moved by what the batch adds and removes) under the key's lock, so a `delete` of the
    /// key comes wholly before or after it, waits until it is durable, and counts it.
    async fn commit(
        &self,
        name: &str,
        rows: Rows,
        state: &mut CompactionState,
        report: &mut RunReport,
    ) -> Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| Error::UnknownKey(name.to_string()))?;
        let summaries = state.summaries.unwrap_or(0) as i64 + rows.summaries;
        let gaps = state.gaps as i64 + rows.gaps;
        state.summaries = Some(summaries.max(0) as u64);
        state.gaps = gaps.max(0) as u64;
        let Rows {
            mut writes,
            written,
            removed_points,
            removed_summaries,
            ..
        } = rows;
        writes.push(Write::Compaction {
            key: name.to_string(),
            state: state.clone(),
        });
        let done = {
            let mut key_state = slot.lock().await;
            if key_state.def.is_none() {
                return Err(Error::UnknownKey(name.to_string()));
            }
            let c = &self.compaction;
            let (s, g) = (state.summaries.unwrap_or(0), state.gaps);
            // The totals follow the key's counts (every change of them is made here or by a
            // delete, both under the key's lock).
            c.summary_rows
                .fetch_add(s.wrapping_sub(key_state.summary_rows), Ordering::Relaxed);
            c.gap_rows
                .fetch_add(g.wrapping_sub(key_state.gap_rows), Ordering::Relaxed);
            key_state.summary_rows = s;
            key_state.gap_rows = g;
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

/// One compaction batch's writes, and how they change the key's row counts.
struct Rows {
    key: String,
    writes: Vec<Write>,
    /// Summary rows added less those removed.
    summaries: i64,
    /// Gap rows added less those removed.
    gaps: i64,
    /// Summaries stored (new or replacing one).
    written: u64,
    removed_points: u64,
    removed_summaries: u64,
}

impl Rows {
    fn new(key: &str) -> Rows {
        Rows {
            key: key.to_string(),
            writes: Vec::new(),
            summaries: 0,
            gaps: 0,
            written: 0,
            removed_points: 0,
            removed_summaries: 0,
        }
    }

    fn put_summary(&mut self, step: f64, start: Time, summary: Vec<u8>, replaces: bool) {
        self.summaries += i64::from(!replaces);
        // A replaced summary counts as removed: written less removed stays the row count.
        self.removed_summaries += u64::from(replaces);
        self.written += 1;
        self.writes.push(Write::Summary {
            key: self.key.clone(),
            step,
            start,
            summary,
        });
    }

    fn delete_summary(&mut self, step: f64, start: Time) {
        self.summaries -= 1;
        self.removed_summaries += 1;
        self.writes.push(Write::DeleteSummary {
            key: self.key.clone(),
            step,
            start,
        });
    }

    fn put_gap(&mut self, gap: Gap, replaces: bool) {
        self.gaps += i64::from(!replaces);
        self.writes.push(Write::Gap {
            key: self.key.clone(),
            gap,
        });
    }

    fn delete_gap(&mut self, start: Time) {
        self.gaps -= 1;
        self.writes.push(Write::DeleteGap {
            key: self.key.clone(),
            start,
        });
    }

    /// Deletes the `n` raw points with `from <= time < until`.
    fn delete_raw(&mut self, from: Time, until: Time, n: usize) {
        self.removed_points += n as u64;
        self.writes.push(Write::DeleteRaw {
            key: self.key.clone(),
            from,
            until,
        });
    }
}

/// A bucket of a target tier that a batch stores.
struct Target {
    step: f64,
    /// The start it is stored under.
    start: Time,
    /// The part of the bucket this batch builds: pieces of gaps inside it join the bucket.
    span: (Time, Time),
    /// `(time, summary)` parts of the bucket; merged in time order.
    parts: Vec<(Time, Vec<u8>)>,
    /// Whether a summary is stored under `start` already (it is replaced).
    existed: bool,
}

/// The raw part of a step over `[a, b)`: a target for each bucket of the first tier that
/// holds points (its summary, the value carried in included), a gap for each stretch between
/// such buckets (and after the last, up to `b`) during which a known value held, and the
/// deletion of every point before `b` but the newest (it carries its value into the raw
/// period that now starts at `b`). Without a tier (raw points are dropped), only deletions.
#[allow(clippy::too_many_arguments)]
fn raw_into(
    view: &View,
    key: &str,
    plugin: &Plugin,
    options: &str,
    target: &CompactionState,
    (a, b): (Time, Time),
    targets: &mut Vec<Target>,
    rows: &mut Rows,
) -> Result<()> {
    let before = view.point_before(key, a)?;
    // Scanning from the kept point, not from the start: the deleted ones before it may still
    // lie on disk as tombstones.
    let from = before.as_ref().map_or(a, |p| p.time);
    let step = target.tiers.first().map(|t| t.step);
    let mut old = Vec::new();
    // Edges of the stretches to summarise: buckets with points, and the gaps between them.
    let mut edges = vec![a];
    let mut bucket_starts = Vec::new();
    let mut gaps = Vec::new();
    let mut last = before.clone();
    for p in view.scan(key, from, b) {
        let p = p?;
        old.push(p.time);
        if let Some(step) = step
            && p.time >= a
        {
            let aligned = (p.time / step).floor() * step;
            let lo = aligned.max(a);
            let end = *edges.last().expect("edges start with a");
            if lo >= end {
                if lo > end {
                    if let Some(carried) = &last {
                        gaps.push(Gap {
                            start: end,
                            end: lo,
                            carried: carried.clone(),
                        });
                    }
                    edges.push(lo);
                }
                bucket_starts.push(lo);
                edges.push((aligned + step).min(b));
            }
        }
        last = Some(p);
    }
    if let Some(step) = step {
        let end = *edges.last().expect("edges start with a");
        if end < b
            && let Some(carried) = &last
        {
            gaps.push(Gap {
                start: end,
                end: b,
                carried: carried.clone(),
            });
        }
        if !bucket_starts.is_empty() {
            let summaries = summarize(
                plugin,
                options,
                &edges,
                before,
                view.scan(key, a, *edges.last().expect("edges start with a")),
                CHUNK,
            )?;
            let mut starts = bucket_starts.iter().peekable();
            for (k, summary) in summaries.into_iter().enumerate() {
                // The stretches between buckets are gaps: their summaries are not kept.
                if starts.next_if(|s| **s == edges[k]).is_some() {
                    targets.push(Target {
                        step,
                        start: target.bucket_start(0, edges[k]),
                        span: (edges[k], edges[k + 1]),
                        parts: vec![(edges[k], summary)],
                        existed: false,
                    });
                }
            }
        }
    }
    // A silence that goes on from the previous step: one gap, extended.
    if let Some(first) = gaps.first_mut()
        && first.start == a
        && let Some(previous) = view.gaps(key, f64::NEG_INFINITY, a).next_back()
    {
        let previous = previous?;
        if previous.end == a && previous.carried == first.carried {
            first.start = previous.start;
            rows.put_gap(gaps.remove(0), true);
        }
    }
    for gap in gaps {
        rows.put_gap(gap, false);
    }
    // Every raw point of the step but the newest (kept: it carries the value on) goes, as
    // one range: whole chunks are dropped.
    if let Some(kept) = old.pop()
        && let Some(&first) = old.first()
    {
        rows.delete_raw(first, kept, old.len());
    }
    Ok(())
}

/// Stores each target as the merge, in time order, of its parts and of the pieces of `gaps`
/// (in time order) inside its span (summarised through the plugin as a value held with no point), then cuts
/// those spans and `also_cut` out of the gaps. A merge that is the empty summary is not
/// stored. Returns the (step, start) bits of the summaries stored.
fn store_targets(
    plugin: &Plugin,
    options: &str,
    empty: &[u8],
    targets: Vec<Target>,
    gaps: &[Gap],
    also_cut: &[(Time, Time)],
    rows: &mut Rows,
) -> Result<HashSet<(u64, u64)>> {
    let mut spans = also_cut.to_vec();
    let mut stored = HashSet::new();
    for mut t in targets {
        // Gaps are disjoint and in time order: those ending after the span's start, until
        // one starts after its end.
        let first = gaps.partition_point(|g| g.end <= t.span.0);
        for g in gaps[first..].iter().take_while(|g| g.start < t.span.1) {
            let (lo, hi) = (g.start.max(t.span.0), g.end.min(t.span.1));
            if lo < hi {
                let piece = plugin.summarize(options, &[lo, hi], Some(&g.carried), &[])?;
                t.parts.extend(piece.into_iter().next().map(|s| (lo, s)));
            }
        }
        spans.push(t.span);
        t.parts.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut parts: Vec<Vec<u8>> = t.parts.into_iter().map(|(_, s)| s).collect();
        let merged = match parts.len() {
            0 => continue,
            1 => parts.pop().expect("one part"),
            _ => plugin.merge(options, &parts)?,
        };
        if merged != empty {
            stored.insert((t.step.to_bits(), t.start.to_bits()));
            rows.put_summary(t.step, t.start, merged, t.existed);
        }
    }
    cut_gaps(gaps, &spans, rows);
    Ok(stored)
}

/// Removes the time of `spans` from `gaps`: what is left of a gap is stored again (under its
/// old start when that is left, replacing it), what is covered goes.
fn cut_gaps(gaps: &[Gap], spans: &[(Time, Time)], rows: &mut Rows) {
    let mut spans: Vec<(Time, Time)> = spans.iter().copied().filter(|(lo, hi)| lo < hi).collect();
    spans.sort_by(|x, y| x.0.total_cmp(&y.0));
    for g in gaps {
        let mut left = Vec::new();
        let mut from = g.start;
        for &(lo, hi) in &spans {
            if hi <= from || lo >= g.end {
                continue;
            }
            if lo > from {
                left.push((from, lo));
            }
            from = from.max(hi);
        }
        if from < g.end {
            left.push((from, g.end));
        }
        if left == [(g.start, g.end)] {
            continue; // untouched
        }
        if left.first().is_none_or(|(lo, _)| *lo != g.start) {
            rows.delete_gap(g.start);
        }
        for (lo, hi) in left {
            let piece = Gap {
                start: lo,
                end: hi,
                carried: g.carried.clone(),
            };
            rows.put_gap(piece, lo == g.start);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Point, Value};

    fn gap(start: Time, end: Time) -> Gap {
        Gap {
            start,
            end,
            carried: Point {
                time: start - 1.0,
                value: Value::Number(7.0),
            },
        }
    }

    /// (start, end) of every gap written, and the starts deleted.
    fn cut(gaps: &[Gap], spans: &[(Time, Time)]) -> (Vec<(Time, Time)>, Vec<Time>, i64) {
        let mut rows = Rows::new("k");
        cut_gaps(gaps, spans, &mut rows);
        let mut put = Vec::new();
        let mut deleted = Vec::new();
        for w in rows.writes {
            match w {
                Write::Gap { gap, .. } => put.push((gap.start, gap.end)),
                Write::DeleteGap { start, .. } => deleted.push(start),
                other => panic!("unexpected {other:?}"),
            }
        }
        (put, deleted, rows.gaps)
    }

    #[test]
    fn cutting_spans_out_of_gaps_keeps_the_rest_and_counts_rows() {
        // Untouched: nothing written.
        assert_eq!(
            cut(&[gap(10.0, 20.0)], &[(30.0, 40.0)]),
            (vec![], vec![], 0)
        );
        // The middle cut out: the head replaces the gap, the tail is a new row.
        assert_eq!(
            cut(&[gap(10.0, 50.0)], &[(20.0, 30.0)]),
            (vec![(10.0, 20.0), (30.0, 50.0)], vec![], 1)
        );
        // The head cut out: the old row goes, the tail is a new one.
        assert_eq!(
            cut(&[gap(10.0, 50.0)], &[(0.0, 20.0), (20.0, 25.0)]),
            (vec![(25.0, 50.0)], vec![10.0], 0)
        );
        // All of it: deleted.
        assert_eq!(
            cut(&[gap(10.0, 50.0)], &[(0.0, 60.0)]),
            (vec![], vec![10.0], -1)
        );
        // Spans in any order, several gaps.
        assert_eq!(
            cut(
                &[gap(0.0, 10.0), gap(20.0, 40.0)],
                &[(30.0, 35.0), (5.0, 25.0)]
            ),
            (vec![(0.0, 5.0), (25.0, 30.0), (35.0, 40.0)], vec![20.0], 1)
        );
    }
}
