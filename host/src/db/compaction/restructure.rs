//! A key's stored tiers re-expressed in the steps of its changed policy.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::rows::{Ctx, Rows, Target, store_targets};
use super::{RunReport, blocking};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::retention::{CompactionState, Policy, Restructure, plan_restructure, step_label};
use crate::value::Time;

impl Db {
    /// Re-expresses a key's stored tiers in the steps of its (changed) policy, as one atomic
    /// batch: every old summary merges into the new tier that covers it (with the pieces of
    /// gaps inside that bucket), old data the new policy keeps nothing of is dropped. Raw
    /// points are not touched: finer new tiers fill from them as they age. Returns the new
    /// state, or `None` when the key's data does not fit the policy (counted in
    /// `skipped_keys`, warned once).
    pub(super) async fn restructure(
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
    pub(super) async fn plan_restructure(
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
}
