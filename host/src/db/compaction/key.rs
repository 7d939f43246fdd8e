//! One key's compaction: level by level, in bounded steps, each one atomic batch.

use std::sync::atomic::Ordering;

use super::rows::{Ctx, Rows, Target, cut_gaps, raw_into, store_targets};
use super::{RunReport, blocking};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::retention::{CompactionState, TierState, step_label};
use crate::store::{Write, WriteBatch};
use crate::value::Time;

/// Raw points compacted per step, about (a step ends at a bucket edge, after one bucket at
/// least).
const RAW_CHUNK_POINTS: usize = 50_000;
/// Source summaries merged per step, about (likewise).
const TIER_CHUNK_SUMMARIES: usize = 2_000;

impl Db {
    /// Compacts one key as its policy says; returns its watermarks afterwards (`None` when it
    /// has no compacted history).
    pub(super) async fn compact_key(
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

    /// Queues one compaction batch (`rows`, and the key's new `state` with its row counts
    /// moved by what the batch adds and removes) under the key's lock, so a `delete` of the
    /// key comes wholly before or after it, waits until it is durable, and counts it.
    pub(super) async fn commit(
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
