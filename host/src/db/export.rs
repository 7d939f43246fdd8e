//! `export`: everything a reader may see, page by page, from one store snapshot. The first
//! page opens the snapshot and the later ones name it, so a dump of a live server is the
//! server at one instant: a write is in every page's view or in none.
//!
//! A page walks the keys in name order and, for each key, gives its definition, its raw
//! points from the compacted watermark on (oldest first), then its compacted history (as
//! [`Db::tiers`] gives it). Where a page stops, its cursor says where the next one starts.
//!
//! Snapshots are bounded: at most [`MAX_OPEN`] at once, each dropped after [`IDLE`] without
//! a page asked of it and after its last page. A snapshot keeps fjall from dropping the
//! versions it sees, so a forgotten one costs disk until it goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::transfer::{TierPage, tier_page};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::retention::PolicySpec;
use crate::store::{KeyDef, View};
use crate::value::{Point, Time, now};

/// Most export snapshots open at once.
pub const MAX_OPEN: usize = 16;
/// How long a snapshot stays open without a page asked of it.
pub const IDLE: Duration = Duration::from_secs(120);

/// The open export snapshots, by id.
#[derive(Default)]
pub(super) struct Snapshots {
    open: Mutex<OpenSnapshots>,
}

#[derive(Default)]
struct OpenSnapshots {
    next_id: u64,
    by_id: HashMap<u64, Opened>,
}

struct Opened {
    view: Arc<View>,
    until: Time,
    used: Instant,
}

/// Where an export page starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportCursor {
    /// At the first key after this name (the policies come first when there is no cursor).
    KeyAfter(String),
    /// Inside a key's raw points, after this time.
    Points { key: String, after: Time },
    /// Inside a key's compacted history, after this `(step, bucket start)`.
    Tiers { key: String, after: (f64, Time) },
}

/// One record of an export.
#[derive(Debug)]
pub enum ExportItem {
    Policy(String, PolicySpec),
    Define(String, KeyDef),
    Points(String, Vec<Point>),
    Tiers(String, Box<TierPage>),
}

/// One page of an export.
#[derive(Debug)]
pub struct ExportPage {
    /// The snapshot the page was read from; later pages name it.
    pub snapshot: u64,
    /// When the snapshot was taken (seconds since the epoch).
    pub until: Time,
    pub items: Vec<ExportItem>,
    /// Where the next page starts; `None` after the last (the snapshot is then released).
    pub next: Option<ExportCursor>,
}

impl Db {
    /// A page of at most about `limit` rows (a definition, a point, a summary each) of the
    /// keys `wanted` accepts and of the policies `policy_wanted` accepts, from `snapshot`
    /// (a new one when `None`) at `cursor` (the beginning when `None`).
    pub async fn export(
        &self,
        snapshot: Option<u64>,
        cursor: Option<ExportCursor>,
        limit: usize,
        wanted: impl Fn(&str) -> bool + Send + 'static,
        policy_wanted: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ExportPage> {
        let (id, view, until) = match snapshot {
            Some(id) => self.snapshots.take_up(id)?,
            None => self.snapshots.open(self.store.view())?,
        };
        let registry = self.registry.clone();
        let page = tokio::task::spawn_blocking(move || -> Result<ExportPage> {
            let limit = limit.max(1);
            let mut page = ExportPage {
                snapshot: id,
                until,
                items: Vec::new(),
                next: None,
            };
            if cursor.is_none() {
                for (pattern, spec) in view.policies()? {
                    if policy_wanted(&pattern) {
                        page.items.push(ExportItem::Policy(pattern, spec));
                    }
                }
            }
            let mut rows = 0;
            let mut at = cursor.unwrap_or(ExportCursor::KeyAfter(String::new()));
            loop {
                if rows >= limit {
                    page.next = Some(at);
                    return Ok(page);
                }
                at = match at {
                    ExportCursor::KeyAfter(name) => {
                        let after = (!name.is_empty()).then_some(name.as_str());
                        let Some((key, def)) = view.defs_after(after, 1, &wanted)?.pop() else {
                            return Ok(page);
                        };
                        page.items.push(ExportItem::Define(key.clone(), def));
                        rows += 1;
                        ExportCursor::Points {
                            key,
                            after: f64::NEG_INFINITY,
                        }
                    }
                    ExportCursor::Points { key, after } => {
                        let state = view.compaction_state(&key)?;
                        let from = state.as_ref().map_or(f64::NEG_INFINITY, |s| s.raw_from);
                        let points: Vec<Point> = view
                            .scan(&key, from.max(after), f64::INFINITY)
                            .filter(|p| p.as_ref().map_or(true, |p| p.time > after))
                            .take(limit - rows)
                            .collect::<Result<_>>()?;
                        rows += points.len();
                        let last = points.last().map(|p| p.time);
                        if !points.is_empty() {
                            page.items.push(ExportItem::Points(key.clone(), points));
                        }
                        match last {
                            Some(after) if rows >= limit => ExportCursor::Points { key, after },
                            _ if state.is_some() => ExportCursor::Tiers {
                                key,
                                after: (f64::NEG_INFINITY, f64::NEG_INFINITY),
                            },
                            _ => ExportCursor::KeyAfter(key),
                        }
                    }
                    ExportCursor::Tiers { key, after } => {
                        let first = after.0 == f64::NEG_INFINITY;
                        let def = view
                            .def(&key)?
                            .ok_or_else(|| Error::UnknownKey(key.clone()))?;
                        // The summaries were made under the key's effective options, as
                        // `tiers` says: the options the type makes of the stored ones, as at
                        // start-up and at a hot load (migrated when this version refuses
                        // options stored before it came).
                        let plugin = registry.get(&def.type_name)?;
                        let opts = plugin
                            .fit_options(&serde_json::Value::Object(def.opts.clone()).to_string())?
                            .effective;
                        let version = plugin.info.version.clone();
                        let tiers = tier_page(
                            &view,
                            &key,
                            def.type_name,
                            version,
                            opts,
                            (!first).then_some(after),
                            limit - rows,
                        )?;
                        rows += tiers.rows.len().max(1);
                        let next = tiers.next;
                        page.items
                            .push(ExportItem::Tiers(key.clone(), Box::new(tiers)));
                        match next {
                            Some(after) => ExportCursor::Tiers { key, after },
                            None => ExportCursor::KeyAfter(key),
                        }
                    }
                };
            }
        })
        .await
        .map_err(|e| Error::Storage(format!("export task failed: {e}")))??;
        if page.next.is_none() {
            self.snapshots.release(page.snapshot);
        }
        Ok(page)
    }
}

impl Snapshots {
    /// Opens `view` as a new export snapshot.
    fn open(&self, view: View) -> Result<(u64, Arc<View>, Time)> {
        let mut open = self.open.lock().map_err(|_| poisoned())?;
        open.by_id.retain(|_, o| o.used.elapsed() < IDLE);
        if open.by_id.len() >= MAX_OPEN {
            return Err(Error::LimitExceeded(format!(
                "{MAX_OPEN} exports are open at once; one ends with its last page or after {} s \
                 without a page asked of it",
                IDLE.as_secs()
            )));
        }
        open.next_id += 1;
        let id = open.next_id;
        let view = Arc::new(view);
        let until = now();
        open.by_id.insert(
            id,
            Opened {
                view: view.clone(),
                until,
                used: Instant::now(),
            },
        );
        Ok((id, view, until))
    }

    /// The snapshot `id`, marked as used now.
    fn take_up(&self, id: u64) -> Result<(u64, Arc<View>, Time)> {
        let mut open = self.open.lock().map_err(|_| poisoned())?;
        open.by_id.retain(|_, o| o.used.elapsed() < IDLE);
        let opened = open.by_id.get_mut(&id).ok_or_else(|| {
            Error::query(format!(
                "export snapshot {id} is not open (it ended with its last page, or went \
                 after {} s without a page asked of it): export again",
                IDLE.as_secs()
            ))
        })?;
        opened.used = Instant::now();
        Ok((id, opened.view.clone(), opened.until))
    }

    fn release(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.by_id.remove(&id);
        }
    }
}

fn poisoned() -> Error {
    Error::Storage("the export snapshots' lock is poisoned".into())
}
