//! A key's compacted history handed out and taken back whole (`tiers`, `load_tiers`): what
//! `komoku export` and `komoku import` carry besides raw points.
//!
//! Summaries are the key type's opaque bytes: they mean something only to the same type, at
//! the same version, under the same effective options, so a page names all three and a load
//! under another one is refused.

use crate::db::Db;
use crate::error::{Error, Result};
use crate::retention::CompactionState;
use crate::store::{Gap, View, Write, WriteBatch};
use crate::value::{Point, Time};

/// One page of a key's compacted history, read from one store snapshot.
#[derive(Debug, Clone)]
pub struct TierPage {
    /// What the summaries were made by: type, its version, the key's effective options
    /// (JSON object text).
    pub type_name: String,
    pub version: String,
    pub opts: String,
    /// The watermarks; `None` when nothing of the key is compacted (the page is then empty).
    pub state: Option<CompactionState>,
    /// The first page only: the raw point kept before `raw_from` (the value carried into the
    /// raw period) and every gap.
    pub carried: Option<Point>,
    pub gaps: Vec<Gap>,
    /// `(step, bucket start, summary)`, tier by tier in the state's order, oldest first.
    pub rows: Vec<(f64, Time, Vec<u8>)>,
    /// Where the next page starts (its `after`), when this one is full.
    pub next: Option<(f64, Time)>,
}

impl Db {
    /// Up to `limit` summary rows of `name` after `(step, start)` (from the first without).
    pub async fn tiers(
        &self,
        name: &str,
        after: Option<(f64, Time)>,
        limit: usize,
    ) -> Result<TierPage> {
        let (type_name, effective, plugin) = {
            let slot = self
                .slot(name)
                .ok_or_else(|| Error::UnknownKey(name.to_string()))?;
            let state = slot.lock().await;
            let def = state
                .def
                .as_ref()
                .ok_or_else(|| Error::UnknownKey(name.to_string()))?;
            (
                def.type_name.clone(),
                state.effective.clone(),
                self.plugin_of(&state),
            )
        };
        let store = self.store.clone();
        let key = name.to_string();
        let mut page = tokio::task::spawn_blocking(move || -> Result<TierPage> {
            let view = store.view();
            // Without compacted history the type need not be loaded (nothing to describe).
            let version = match (view.compaction_state(&key)?, plugin) {
                (_, Ok(p)) => p.info.version.clone(),
                (None, Err(_)) => String::new(),
                (Some(_), Err(e)) => return Err(e),
            };
            tier_page(&view, &key, type_name, version, effective, after, limit)
        })
        .await
        .map_err(|e| Error::Storage(format!("tiers task failed: {e}")))??;
        page.rows.shrink_to_fit();
        Ok(page)
    }

    /// Stores a page of compacted history (as [`Db::tiers`] gave it) into `name`, which
    /// must be a key of the same type, version and effective options, and either have no
    /// compacted history yet or the very same watermarks (a later page, or the same page
    /// again: rows at the same bucket are replaced by themselves).
    pub async fn load_tiers(&self, name: &str, page: TierPage) -> Result<()> {
        let Some(state) = page.state else {
            return Ok(());
        };
        let (mut held, existed) = self.lock_key(name).await?;
        let result = async {
            let def = held
                .def
                .as_ref()
                .ok_or_else(|| Error::UnknownKey(name.to_string()))?;
            let plugin = self.plugin_of(&held)?;
            let same_opts = serde_json::from_str::<serde_json::Value>(&held.effective).ok()
                == serde_json::from_str::<serde_json::Value>(&page.opts).ok();
            if def.type_name != page.type_name || plugin.info.version != page.version || !same_opts
            {
                return Err(Error::Refused {
                    code: "type_mismatch".into(),
                    message: format!(
                        "summaries of {name:?} were made by {} {} with options {}; the key \
                         here is {} {} with options {}: summaries only load into the same \
                         type, version and options",
                        page.type_name,
                        page.version,
                        page.opts,
                        def.type_name,
                        plugin.info.version,
                        held.effective
                    ),
                });
            }
            let store = self.store.clone();
            let key = name.to_string();
            let stored = tokio::task::spawn_blocking(move || store.view().compaction_state(&key))
                .await
                .map_err(|e| Error::Storage(format!("tiers task failed: {e}")))??;
            if let Some(stored) = &stored
                && (stored.raw_from != state.raw_from || stored.tiers != state.tiers)
            {
                return Err(Error::Refused {
                    code: "compacted".into(),
                    message: format!(
                        "{name:?} already has other compacted history (raw from {}); \
                         summaries load only into a key without any or with the same",
                        stored.raw_from
                    ),
                });
            }
            let mut writes = Vec::new();
            if let Some(p) = &page.carried {
                writes.push(Write::Point {
                    key: name.to_string(),
                    point: p.clone(),
                });
            }
            for gap in page.gaps {
                writes.push(Write::Gap {
                    key: name.to_string(),
                    gap,
                });
            }
            for (step, start, summary) in page.rows {
                writes.push(Write::Summary {
                    key: name.to_string(),
                    step,
                    start,
                    summary,
                });
            }
            writes.push(Write::Compaction {
                key: name.to_string(),
                state: state.clone(),
            });
            let (s, g) = (state.summaries.unwrap_or(0), state.gaps);
            self.compaction.add_rows(
                s.wrapping_sub(held.summary_rows),
                g.wrapping_sub(held.gap_rows),
            );
            held.summary_rows = s;
            held.gap_rows = g;
            held.raw_from = state.raw_from;
            if let Some(p) = page.carried
                && held.latest.as_ref().is_none_or(|l| l.time < p.time)
            {
                held.latest = Some(p);
            }
            Ok(self.writer.submit(WriteBatch {
                writes,
                after: None,
            }))
        }
        .await;
        self.unlock_key(name, held, existed);
        result?.await.unwrap_or(Err(Error::ShuttingDown))
    }
}

/// Up to `limit` summary rows of `key` in `view` after `(step, start)` (from the first
/// without), described as made by `type_name` at `version` under options `opts`.
pub(super) fn tier_page(
    view: &View,
    key: &str,
    type_name: String,
    version: String,
    opts: String,
    after: Option<(f64, Time)>,
    limit: usize,
) -> Result<TierPage> {
    let state = view.compaction_state(key)?;
    let mut page = TierPage {
        type_name,
        version,
        opts,
        state: state.clone(),
        carried: None,
        gaps: Vec::new(),
        rows: Vec::new(),
        next: None,
    };
    let Some(state) = state else {
        return Ok(page);
    };
    if after.is_none() {
        page.carried = view.point_before(key, state.raw_from)?;
        for gap in view.gaps(key, f64::NEG_INFINITY, f64::INFINITY) {
            page.gaps.push(gap?);
        }
    }
    let first_tier = match after {
        None => 0,
        Some((step, _)) => state
            .tiers
            .iter()
            .position(|t| t.step == step)
            .ok_or_else(|| Error::query("after names a step the key has no tier of"))?,
    };
    for tier in &state.tiers[first_tier..] {
        for row in view.summaries(key, tier.step, f64::NEG_INFINITY, f64::INFINITY) {
            let (start, summary) = row?;
            if after.is_some_and(|(s, t)| s == tier.step && start <= t) {
                continue;
            }
            if page.rows.len() == limit {
                page.next = page.rows.last().map(|(s, t, _)| (*s, *t));
                return Ok(page);
            }
            page.rows.push((tier.step, start, summary));
        }
    }
    Ok(page)
}
