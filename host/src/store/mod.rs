//! Persistent storage in fjall.
//!
//! Two keyspaces:
//! - `defs`: key name → the key's definition (type and the options clients gave), as JSON;
//! - `points`: `u16 BE name length ‖ name ‖ sortable time` → encoded value. A key's history
//!   is therefore one prefix, and a prefix scan returns it in time order;
//! - `touched`: key name → the latest operation that was acknowledged but not stored
//!   (`sortable time ‖ encoded value`), so a refresh that a resolution option skipped still
//!   counts for automatic values (uptime) after a restart;
//! - `summaries`: `u16 BE name length ‖ name ‖ sortable step ‖ sortable bucket start` →
//!   the plugin's summary of that bucket (compacted history, see [`crate::retention`]);
//! - `gaps`: `u16 BE name length ‖ name ‖ sortable start` → a [`Gap`] of compacted history:
//!   `u8 format (1) ‖ f64 BE end ‖ f64 BE carried point's time ‖ encoded value`, a stretch
//!   without points during which the carried point's value held. Compaction stores one
//!   record per silence instead of a summary per tier bucket of it, so its rows follow the
//!   points, not the time they span;
//! - `compaction`: key name → its [`CompactionState`] (watermarks, row counts), as JSON;
//! - `policies`: key name or pattern → its retention [`PolicySpec`], as JSON.
//!
//! A compaction step writes its summaries, deletes what they replace and moves the
//! watermark in one atomic batch, so a crash leaves the old state or the new one.
//!
//! Writes go through one writer thread ([`writer`]) that commits whatever has queued up as
//! one batch and fsyncs it once (group commit), so an acknowledged write survives `kill -9`
//! without one fsync per put. Reads are synchronous fjall calls; async callers run them on
//! the blocking pool.

mod writer;

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::retention::{CompactionState, PolicySpec};
use crate::value::{Point, Time, Value, time_from_sortable, time_to_sortable};

pub use writer::{Durability, Write, WriteBatch, Writer};

/// The longest key name accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// What is stored about a key besides its points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDef {
    /// The key type's name (a plugin's `info().name`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// The options clients set with `define`, merged over earlier ones. Defaults are not
    /// stored: they come from the plugin, so a new plugin version's defaults apply.
    #[serde(default)]
    pub opts: serde_json::Map<String, serde_json::Value>,
}

/// The fjall database and its keyspaces.
#[derive(Clone)]
pub struct Store {
    db: Database,
    defs: Keyspace,
    points: Keyspace,
    touched: Keyspace,
    summaries: Keyspace,
    gaps: Keyspace,
    compaction: Keyspace,
    policies: Keyspace,
}

/// A stretch `[start, end)` of compacted history without points, during which the value of
/// `carried` (the last point before it) held. Queries summarise it through the key's plugin
/// as they would the raw stretch; coarser tiers absorb the part inside a bucket they store.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub start: Time,
    pub end: Time,
    pub carried: Point,
}

/// The format byte of a stored [`Gap`].
const GAP_FORMAT: u8 = 1;

impl Gap {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(26);
        v.push(GAP_FORMAT);
        v.extend_from_slice(&self.end.to_be_bytes());
        v.extend_from_slice(&self.carried.time.to_be_bytes());
        self.carried.value.encode_into(&mut v);
        v
    }

    fn decode(start: Time, v: &[u8]) -> Result<Gap> {
        let corrupt = || Error::Storage("a stored gap is unreadable".into());
        let (&format, rest) = v.split_first().ok_or_else(corrupt)?;
        if format != GAP_FORMAT || rest.len() < 16 {
            return Err(corrupt());
        }
        let f = |b: &[u8]| f64::from_be_bytes(b.try_into().expect("8 bytes"));
        Ok(Gap {
            start,
            end: f(&rest[..8]),
            carried: Point {
                time: f(&rest[8..16]),
                value: Value::decode(&rest[16..]).ok_or_else(corrupt)?,
            },
        })
    }
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        // We persist the journal ourselves (group commit in the writer thread).
        let db = Database::builder(dir).manual_journal_persist(true).open()?;
        let defs = db.keyspace("defs", KeyspaceCreateOptions::default)?;
        let points = db.keyspace("points", KeyspaceCreateOptions::default)?;
        let touched = db.keyspace("touched", KeyspaceCreateOptions::default)?;
        let summaries = db.keyspace("summaries", KeyspaceCreateOptions::default)?;
        let gaps = db.keyspace("gaps", KeyspaceCreateOptions::default)?;
        let compaction = db.keyspace("compaction", KeyspaceCreateOptions::default)?;
        let policies = db.keyspace("policies", KeyspaceCreateOptions::default)?;
        Ok(Store {
            db,
            defs,
            points,
            touched,
            summaries,
            gaps,
            compaction,
            policies,
        })
    }

    /// Starts the writer thread for this store.
    pub fn writer(
        &self,
        durability: Durability,
        on_fatal: impl Fn(&Error) + Send + 'static,
    ) -> Writer {
        Writer::start(self.clone(), durability, Box::new(on_fatal))
    }

    /// Every key definition.
    pub fn load_defs(&self) -> Result<Vec<(String, KeyDef)>> {
        load_json(&self.defs, "key definition")
    }

    /// Every stored retention policy, by key name or pattern.
    pub fn load_policies(&self) -> Result<Vec<(String, PolicySpec)>> {
        load_json(&self.policies, "retention policy")
    }

    /// A consistent view of every keyspace as of now: reads through it see either all of a
    /// compaction step or none of it.
    pub fn view(&self) -> View {
        View {
            snap: self.db.snapshot(),
            points: self.points.clone(),
            summaries: self.summaries.clone(),
            gaps: self.gaps.clone(),
            compaction: self.compaction.clone(),
        }
    }

    /// The newest point of a key.
    pub fn last_point(&self, name: &str) -> Result<Option<Point>> {
        match self.points.prefix(key_prefix(name)).next_back() {
            Some(guard) => {
                let (k, v) = guard.into_inner()?;
                decode_point(&k, &v).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The latest acknowledged-but-not-stored operation on a key, if newer than its points.
    pub fn touched(&self, name: &str) -> Result<Option<Point>> {
        let Some(v) = self.touched.get(name.as_bytes())? else {
            return Ok(None);
        };
        let (time, value) = v
            .split_at_checked(8)
            .ok_or_else(|| Error::Storage("a touch record is unreadable".into()))?;
        decode_point(time, value).map(Some)
    }

    /// Points of a key with `since <= time <= until`, oldest first.
    pub fn range(&self, name: &str, since: Time, until: Time) -> Result<Vec<Point>> {
        self.range_iter(name, since, until).collect()
    }

    /// Points of a key with `since <= time <= until`, newest first, at most `limit`.
    pub fn range_rev(
        &self,
        name: &str,
        since: Time,
        until: Time,
        limit: usize,
    ) -> Result<Vec<Point>> {
        self.range_iter(name, since, until)
            .rev()
            .take(limit)
            .collect()
    }

    /// The newest point strictly before `t` (from a fresh snapshot).
    pub fn point_before(&self, name: &str, t: Time) -> Result<Option<Point>> {
        self.view().point_before(name, t)
    }

    /// Points of a key with `since <= time <= until`, oldest first, read lazily.
    pub fn scan(
        &self,
        name: &str,
        since: Time,
        until: Time,
    ) -> impl DoubleEndedIterator<Item = Result<Point>> + use<> {
        self.range_iter(name, since, until)
    }

    /// The oldest point of a key (from a fresh snapshot).
    pub fn first_point(&self, name: &str) -> Result<Option<Point>> {
        self.view().first_point_from(name, f64::NEG_INFINITY)
    }

    fn range_iter(
        &self,
        name: &str,
        since: Time,
        until: Time,
    ) -> impl DoubleEndedIterator<Item = Result<Point>> + use<> {
        let (lo, hi) = (point_key(name, since), point_key(name, until));
        self.points.range(lo..=hi).map(|guard| {
            let (k, v) = guard.into_inner()?;
            decode_point(&k, &v)
        })
    }

    /// Fsyncs the journal: everything committed so far survives a power loss.
    pub fn persist(&self) -> Result<()> {
        Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
    }

    /// Writes the memtables out as tables and waits, so the journal can be trimmed. For
    /// measuring disk use; normal operation never needs it.
    pub fn flush(&self) -> Result<()> {
        self.defs.rotate_memtable_and_wait()?;
        self.points.rotate_memtable_and_wait()?;
        self.touched.rotate_memtable_and_wait()?;
        self.summaries.rotate_memtable_and_wait()?;
        self.gaps.rotate_memtable_and_wait()?;
        self.compaction.rotate_memtable_and_wait()?;
        self.policies.rotate_memtable_and_wait()?;
        self.persist()
    }

    /// Rewrites the points and summaries tables so deleted entries stop taking space now
    /// rather than at fjall's next compaction. For measuring disk use (benchmarks).
    pub fn major_compact(&self) -> Result<()> {
        self.points.major_compact()?;
        self.summaries.major_compact()?;
        Ok(())
    }

    /// About how many summaries are stored (removed ones count until fjall compacts their
    /// tables: `stats` keeps an exact count), and the bytes their tables take on disk.
    pub fn summaries_size(&self) -> (usize, u64) {
        (
            self.summaries.approximate_len(),
            self.summaries.disk_space(),
        )
    }

    /// Bytes the points keyspace takes on disk (its tables; the shared journal not counted).
    pub fn points_disk_space(&self) -> u64 {
        self.points.disk_space()
    }

    /// About how many points are stored (cheap; exact after a flush).
    pub fn approximate_points(&self) -> usize {
        self.points.approximate_len()
    }

    /// Bytes the database takes on disk.
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }
}

/// Every entry of a keyspace of name → JSON record; `what` names the records in errors.
fn load_json<T: serde::de::DeserializeOwned>(
    keyspace: &Keyspace,
    what: &str,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for guard in keyspace.iter() {
        let (k, v) = guard.into_inner()?;
        let name = String::from_utf8(k.to_vec())
            .map_err(|_| Error::Storage(format!("the name of a {what} on disk is not UTF-8")))?;
        let record = serde_json::from_slice(&v)
            .map_err(|e| Error::Storage(format!("{what} {name:?} is unreadable: {e}")))?;
        out.push((name, record));
    }
    Ok(out)
}

/// `u16 BE length ‖ name`: the prefix of all of a key's points.
fn key_prefix(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + name.len() + 8);
    // Key names are capped at MAX_KEY_LEN, far below u16::MAX.
    k.extend_from_slice(&(name.len() as u16).to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn point_key(name: &str, time: Time) -> Vec<u8> {
    let mut k = key_prefix(name);
    k.extend_from_slice(&time_to_sortable(time));
    k
}

/// `u16 BE length ‖ name ‖ sortable step`: the prefix of one tier's summaries.
fn tier_prefix(name: &str, step: f64) -> Vec<u8> {
    let mut k = key_prefix(name);
    k.extend_from_slice(&time_to_sortable(step));
    k
}

fn summary_key(name: &str, step: f64, start: Time) -> Vec<u8> {
    let mut k = tier_prefix(name, step);
    k.extend_from_slice(&time_to_sortable(start));
    k
}

fn gap_key(name: &str, start: Time) -> Vec<u8> {
    point_key(name, start)
}

/// A snapshot of the store (see [`Store::view`]).
pub struct View {
    snap: Snapshot,
    points: Keyspace,
    summaries: Keyspace,
    gaps: Keyspace,
    compaction: Keyspace,
}

impl View {
    /// A key's compaction state; `None` while nothing was ever compacted.
    pub fn compaction_state(&self, name: &str) -> Result<Option<CompactionState>> {
        let Some(v) = self.snap.get(&self.compaction, name.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| Error::Storage(format!("compaction state of {name:?}: {e}")))
    }

    /// The newest point strictly before `t`.
    pub fn point_before(&self, name: &str, t: Time) -> Result<Option<Point>> {
        let (lo, hi) = (point_key(name, f64::NEG_INFINITY), point_key(name, t));
        match self.snap.range(&self.points, lo..hi).next_back() {
            Some(guard) => {
                let (k, v) = guard.into_inner()?;
                decode_point(&k, &v).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Points with `since <= time < until`, oldest first, read lazily.
    pub fn scan(
        &self,
        name: &str,
        since: Time,
        until: Time,
    ) -> impl DoubleEndedIterator<Item = Result<Point>> + use<> {
        let (lo, hi) = (point_key(name, since), point_key(name, until));
        self.snap.range(&self.points, lo..hi).map(|guard| {
            let (k, v) = guard.into_inner()?;
            decode_point(&k, &v)
        })
    }

    /// The oldest point of a key at or after `since`.
    pub fn first_point_from(&self, name: &str, since: Time) -> Result<Option<Point>> {
        self.scan(name, since, f64::INFINITY).next().transpose()
    }

    /// Summaries of one tier with `since <= bucket start < until`, oldest first, lazily.
    pub fn summaries(
        &self,
        name: &str,
        step: f64,
        since: Time,
        until: Time,
    ) -> impl DoubleEndedIterator<Item = Result<(Time, Vec<u8>)>> + use<> {
        let (lo, hi) = (
            summary_key(name, step, since),
            summary_key(name, step, until),
        );
        self.snap.range(&self.summaries, lo..hi).map(|guard| {
            let (k, v) = guard.into_inner()?;
            let start: [u8; 8] = k
                .get(k.len().saturating_sub(8)..)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::Storage("a stored summary key is unreadable".into()))?;
            Ok((time_from_sortable(start), v.to_vec()))
        })
    }
}

impl View {
    /// Gaps with `since <= start < until`, oldest first, read lazily.
    pub fn gaps(
        &self,
        name: &str,
        since: Time,
        until: Time,
    ) -> impl DoubleEndedIterator<Item = Result<Gap>> + use<> {
        let (lo, hi) = (gap_key(name, since), gap_key(name, until));
        self.snap.range(&self.gaps, lo..hi).map(|guard| {
            let (k, v) = guard.into_inner()?;
            Gap::decode(time_in_key(&k)?, &v)
        })
    }

    /// Gaps that overlap `[since, until)`, oldest first: the one that began before `since`
    /// and reaches into it, then those that start inside.
    pub fn gaps_overlapping(
        &self,
        name: &str,
        since: Time,
        until: Time,
    ) -> Result<impl Iterator<Item = Result<Gap>> + use<>> {
        let before = self
            .gaps(name, f64::NEG_INFINITY, since)
            .next_back()
            .transpose()?
            .filter(|g| g.end > since);
        Ok(before
            .map(Ok)
            .into_iter()
            .chain(self.gaps(name, since, until)))
    }

    /// Summary rows of one tier, counted (for keys compacted before rows were counted).
    pub fn count_summaries(&self, name: &str, step: f64) -> Result<u64> {
        let mut n = 0;
        for item in self.summaries(name, step, f64::NEG_INFINITY, f64::INFINITY) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// The sortable time that ends a stored key.
fn time_in_key(k: &[u8]) -> Result<Time> {
    let bytes: [u8; 8] = k
        .get(k.len().saturating_sub(8)..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Storage("a stored key is unreadable".into()))?;
    Ok(time_from_sortable(bytes))
}

fn decode_point(k: &[u8], v: &[u8]) -> Result<Point> {
    let corrupt = || Error::Storage("a stored point is unreadable".into());
    let time_bytes: [u8; 8] = k
        .get(k.len().saturating_sub(8)..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok(Point {
        time: time_from_sortable(time_bytes),
        value: Value::decode(v).ok_or_else(corrupt)?,
    })
}

/// Checks a key name against the documented limits.
pub fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidKey("a key name cannot be empty".into()));
    }
    if name.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey(format!(
            "a key name is at most {MAX_KEY_LEN} bytes, this one has {}",
            name.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_different_names_never_overlap() {
        // "ab" must not see "abc"'s points: the length prefix differs.
        assert!(!point_key("abc", 1.0).starts_with(&key_prefix("ab")));
    }

    #[test]
    fn gaps_round_trip() -> Result<()> {
        let gap = Gap {
            start: 60.0,
            end: 1e9,
            carried: Point {
                time: 12.5,
                value: Value::Text("armed".into()),
            },
        };
        assert_eq!(Gap::decode(60.0, &gap.encode())?, gap);
        assert!(Gap::decode(60.0, &[2, 0]).is_err());
        Ok(())
    }
}
