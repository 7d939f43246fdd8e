//! The data folder's format version, and the in-place migration from format 1.
//!
//! Format 1 (before key ids and chunks) kept one row per point in `points`
//! (`u16 BE name length ‖ name ‖ sortable f64 time` → encoded value) and keyed `summaries`
//! and `gaps` by name the same way; `defs`, `touched`, `compaction` and `policies` are the
//! same in both formats.
//!
//! The migration is crash-safe without a second copy of the folder: it writes the new rows
//! into the new keyspaces (emptied first, since an interrupted attempt may have left some),
//! fsyncs them, then records `format = 2` in one atomic write. Only a folder that says
//! format 2 is read the new way, and only then are the old keyspaces dropped. A kill at any
//! moment leaves either format 1 (migrated again at the next start) or format 2.
//!
//! Float times become microseconds. Two points of a key less than a microsecond apart (a
//! format-1 server stepped a repeated time by one float ulp) are kept both, the later one
//! moved to the next free microsecond: nothing is dropped and order is kept.

use std::collections::HashMap;

use fjall::{Database, KeyspaceCreateOptions};

use super::{FORMAT_VERSION, KeyId, SEAL_POINTS, Store, encode_chunk, micros_key};
use crate::error::{Error, Result};
use crate::value::{Micros, Value, time_from_sortable, time_to_micros};

/// Keyspaces of format 1 that format 2 replaces.
const OLD: [&str; 3] = ["points", "summaries", "gaps"];

/// Chunks written per migration batch.
const BATCH_CHUNKS: usize = 256;

/// The format the folder records; `None` for a new folder or one of format 1.
pub(super) fn format_of(db: &Database) -> Result<Option<u32>> {
    if !db.keyspace_exists("meta") {
        return Ok(None);
    }
    let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
    match meta.get(b"format")? {
        Some(v) => {
            let b: [u8; 4] = v.as_ref().try_into().map_err(|_| {
                Error::Storage("the data folder's format record is unreadable".into())
            })?;
            Ok(Some(u32::from_be_bytes(b)))
        }
        None => Ok(None),
    }
}

/// Brings a folder without a format record to the current format: records it for a new
/// folder, migrates one of format 1.
pub(super) fn to_current(store: &Store) -> Result<()> {
    let db = &store.db;
    if OLD.iter().any(|name| db.keyspace_exists(name)) {
        migrate_from_1(store)?;
    }
    let mut batch = db.batch();
    batch.insert(&store.meta, b"format", FORMAT_VERSION.to_be_bytes());
    batch.commit()?;
    store.persist()
}

/// Drops format 1's keyspaces (only called once the folder says format 2).
pub(super) fn drop_old_keyspaces(db: &Database) -> Result<()> {
    for name in OLD {
        if db.keyspace_exists(name) {
            let ks = db.keyspace(name, KeyspaceCreateOptions::default)?;
            db.delete_keyspace(ks)?;
            tracing::info!(
                keyspace = name,
                "dropped a format-1 keyspace after migrating"
            );
        }
    }
    Ok(())
}

/// Splits a format-1 key `u16 BE length ‖ name ‖ rest`.
fn split_old_key(k: &[u8]) -> Result<(&[u8], &[u8])> {
    let corrupt = || Error::Storage("a format-1 row's key is unreadable".into());
    let len = u16::from_be_bytes(
        k.get(..2)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    );
    let end = 2 + len as usize;
    Ok((k.get(2..end).ok_or_else(corrupt)?, &k[end..]))
}

struct Ids {
    map: HashMap<Vec<u8>, KeyId>,
}

impl Ids {
    fn of(&mut self, name: &[u8]) -> KeyId {
        let next = self.map.len() as KeyId;
        *self.map.entry(name.to_vec()).or_insert(next)
    }
}

fn migrate_from_1(store: &Store) -> Result<()> {
    let db = &store.db;
    let started = std::time::Instant::now();
    tracing::info!("the data folder is format 1: migrating it in place to format {FORMAT_VERSION}");
    // An interrupted attempt may have left rows: start from empty.
    for ks in [
        &store.keys,
        &store.head,
        &store.chunks,
        &store.summaries,
        &store.gaps,
    ] {
        ks.clear()?;
    }
    let mut ids = Ids {
        map: HashMap::new(),
    };
    let mut batch = db.batch();
    let mut in_batch = 0;
    let mut points_done: u64 = 0;
    let mut counts: HashMap<KeyId, u64> = HashMap::new();

    if db.keyspace_exists("points") {
        let points = db.keyspace("points", KeyspaceCreateOptions::default)?;
        let mut current: Option<(KeyId, Vec<(Micros, Value)>)> = None;
        let mut flush = |batch: &mut fjall::OwnedWriteBatch,
                         id: KeyId,
                         buf: &mut Vec<(Micros, Value)>|
         -> Result<()> {
            if !buf.is_empty() {
                batch.insert(&store.chunks, micros_key(id, buf[0].0), encode_chunk(buf)?);
                *counts.entry(id).or_default() += buf.len() as u64;
                buf.clear();
            }
            Ok(())
        };
        for guard in points.iter() {
            let (k, v) = guard.into_inner()?;
            let (name, rest) = split_old_key(&k)?;
            let time: [u8; 8] = rest
                .try_into()
                .map_err(|_| Error::Storage("a format-1 point's time is unreadable".into()))?;
            let value = Value::decode(&v)
                .ok_or_else(|| Error::Storage("a format-1 point is unreadable".into()))?;
            let id = ids.of(name);
            if current.as_ref().is_none_or(|(c, _)| *c != id) {
                if let Some((c, mut buf)) = current.take() {
                    flush(&mut batch, c, &mut buf)?;
                    in_batch += 1;
                }
                current = Some((id, Vec::with_capacity(SEAL_POINTS)));
            }
            let Some((_, buf)) = current.as_mut() else {
                continue;
            };
            let mut us = time_to_micros(time_from_sortable(time));
            if let Some(last) = buf.last() {
                us = us.max(last.0 + 1);
            }
            buf.push((us, value));
            points_done += 1;
            if buf.len() >= SEAL_POINTS {
                flush(&mut batch, id, buf)?;
                in_batch += 1;
            }
            if in_batch >= BATCH_CHUNKS {
                std::mem::replace(&mut batch, db.batch()).commit()?;
                in_batch = 0;
                tracing::info!(points = points_done, "migrating");
            }
        }
        if let Some((c, mut buf)) = current.take() {
            flush(&mut batch, c, &mut buf)?;
        }
    }
    if db.keyspace_exists("summaries") {
        let old = db.keyspace("summaries", KeyspaceCreateOptions::default)?;
        for guard in old.iter() {
            let (k, v) = guard.into_inner()?;
            let (name, rest) = split_old_key(&k)?;
            let mut nk = ids.of(name).to_be_bytes().to_vec();
            nk.extend_from_slice(rest);
            batch.insert(&store.summaries, nk, v);
        }
    }
    if db.keyspace_exists("gaps") {
        let old = db.keyspace("gaps", KeyspaceCreateOptions::default)?;
        for guard in old.iter() {
            let (k, v) = guard.into_inner()?;
            let (name, rest) = split_old_key(&k)?;
            let mut nk = ids.of(name).to_be_bytes().to_vec();
            nk.extend_from_slice(rest);
            batch.insert(&store.gaps, nk, v);
        }
    }
    for (id, n) in &counts {
        batch.insert(&store.counts, id.to_be_bytes(), n.to_be_bytes());
    }
    for (name, id) in &ids.map {
        batch.insert(&store.keys, name.as_slice(), id.to_be_bytes());
    }
    batch.insert(
        &store.meta,
        b"next_id",
        (ids.map.len() as KeyId).to_be_bytes(),
    );
    batch.commit()?;
    store.persist()?;
    tracing::info!(
        points = points_done,
        keys = ids.map.len(),
        ms = started.elapsed().as_millis() as u64,
        "migrated the data folder to format {FORMAT_VERSION}"
    );
    Ok(())
}
