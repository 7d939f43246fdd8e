//! Persistent storage in fjall.
//!
//! # On-disk layout (format version [`FORMAT_VERSION`])
//!
//! Keyspaces, and how each is read:
//! - `meta`: `format` → u32 BE format version; `next_id` → u32 BE, the next key id to hand out.
//!   A folder without `format` but with a `points` keyspace was written before key ids and
//!   chunks (format 1) and is migrated in place when opened ([`migrate`]);
//! - `keys`: key name → u32 BE id. Every other row of a key carries this id, never its name,
//!   and a deleted key's id is never reused;
//! - `defs`: key name → the key's definition (type and the options clients gave), as JSON;
//! - `head`: `u32 BE id ‖ i64 µs (sign bit flipped, BE)` → encoded value: the open head, the
//!   newest points of a key not yet sealed, one row each, durable through the journal like
//!   any fjall write;
//! - `chunks`: `u32 BE id ‖ i64 µs of the first point` → a sealed chunk ([`chunk`]): the
//!   header (count, last time) then a zstd frame of delta-of-delta times and values encoded by
//!   their shape. A key's chunks never overlap in time and every head row is newer than its
//!   chunks, so a scan reads chunks then head rows, in time order;
//! - `chunk_summaries`: the same key as the chunk it belongs to → the key type's summary of
//!   the chunk's inside ([`ChunkSummary`]): `u8 format (1) ‖ u32 BE n ‖ identity (n bytes:
//!   type, version and options it was made under) ‖ i64 BE last µs ‖ u32 BE n ‖ first value ‖
//!   u32 BE n ‖ last value ‖ summary`. Written, replaced and deleted in the batch that writes,
//!   rewrites or drops its chunk, so a row always describes its chunk as stored;
//! - `counts`: `u32 BE id` → u64 BE, how many points the key's chunks hold (kept by the
//!   writer as it seals, rewrites and drops chunks, so `stats` need not read the chunks);
//! - `touched`: key name → the latest operation that was acknowledged but not stored
//!   (`sortable time ‖ encoded value`), so a refresh that a resolution option skipped still
//!   counts for automatic values (uptime) after a restart;
//! - `tier_summaries`: `u32 BE id ‖ sortable step ‖ sortable bucket start` → the plugin's
//!   summary of that bucket (compacted history, see [`crate::retention`]);
//! - `tier_gaps`: `u32 BE id ‖ sortable start` → a [`Gap`] of compacted history:
//!   `u8 format (1) ‖ f64 BE end ‖ f64 BE carried point's time ‖ encoded value`, a stretch
//!   without points during which the carried point's value held;
//! - `compaction`: key name → its [`CompactionState`] (watermarks, row counts), as JSON;
//! - `policies`: key name or pattern → its retention [`PolicySpec`], as JSON.
//!
//! Times of points are stored as integer microseconds: a time a client sends reads back
//! within 0.5 µs (exactly when written with six decimals or fewer).
//!
//! # Sealing
//!
//! A key's head is sealed into a chunk when it holds [`SEAL_POINTS`] points or spans
//! [`SEAL_SPAN`] (whichever comes first), and every head is sealed at a graceful stop.
//! 4096 points: large enough that zstd's frame and the chunk's row cost well under 0.01 byte a
//! point and a year of 10-s points is ~770 chunks; small enough that decoding the one chunk a
//! query's edge cuts takes tens of microseconds and re-encoding a chunk for a late point is
//! cheap. A week: a slow key (a point an hour) does not keep months of points as head rows,
//! which cost ~10–20 bytes each, while its chunks still hold enough points (168 at one an
//! hour, ~350 for a state changing 50 times a day) that a chunk's fixed cost (its row,
//! zstd's frame, a text dictionary: ~100–200 bytes) is spread thin; sealed daily, such a
//! state cost 6.5 bytes a point in tables. A point older than a key's newest chunk
//! (backfill) is merged into the chunk that covers it, which is rewritten in the same atomic
//! batch; the late points of one group commit share that rewrite (a chunk is rewritten at
//! most once per group, however many of them fall in it).
//!
//! # Chunk summaries
//!
//! When the writer stores a chunk of two points or more it asks the layer above (a
//! [`ChunkSummarizer`]: the key's type plugin, with the key's effective options) for the
//! summary of the chunk's inside, the span `[first + 1 µs, last + 1 µs)` with the first point
//! carried in. That span depends on the chunk's points alone (never on the point before the
//! chunk or after it), so a late point elsewhere, a dropped neighbour or a sealed head leaves
//! it true. A query bucket that holds a whole chunk merges this summary instead of decoding
//! the chunk; the first point, the stretch from the chunk's last point to whatever follows,
//! and every chunk a bucket edge cuts are summarised from points as before (the row holds
//! the first and last points for that). A summary is used only when its identity (type,
//! version, effective options) is the key's current one: after a change of options or of
//! the plugin's version the old rows are ignored (those chunks are decoded, exact as
//! before) and each is replaced when its chunk is next rewritten. A chunk stored while its
//! key's type was not loaded, or written by the format-1 migration, has no row and is always
//! decoded.
//!
//! # Writes
//!
//! A compaction step writes its summaries, deletes what they replace and moves the
//! watermark in one atomic batch, so a crash leaves the old state or the new one. Dropping
//! raw history deletes whole chunks (one tombstone per chunk) and rewrites at most the chunk
//! its edge cuts.
//!
//! Writes go through one writer thread ([`writer`]) that commits whatever has queued up as
//! one batch and fsyncs it once (group commit), so an acknowledged write survives `kill -9`
//! without one fsync per put. Reads are synchronous fjall calls; async callers run them on
//! the blocking pool.
//!
//! # Tuning
//!
//! Range-scanned keyspaces (`head`, `chunks`, `tier_summaries`, `tier_gaps`) have no bloom
//! filters (a filter answers point reads only). `chunks` stores zstd frames, so fjall's own
//! block compression is off there. A graceful stop seals every head and flushes every
//! memtable, so no journal content is needed after it; fjall deletes fully flushed journal
//! files but rotates the active one only at 64 MB, which bounds the journal left after a
//! graceful stop and start (under 64 MB plus one batch).

mod chunk;
mod migrate;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, RwLock};

use fjall::config::{CompressionPolicy, FilterPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{CompactionState, PolicySpec};
use crate::value::{
    Micros, Point, Time, Value, micros_to_time, time_from_sortable, time_to_sortable,
};

pub use writer::{Durability, Write, WriteBatch, Writer};

/// The longest key name accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The data folder format this version reads and writes.
pub const FORMAT_VERSION: u32 = 2;

/// A head is sealed into a chunk once it holds this many points.
pub const SEAL_POINTS: usize = 4096;

/// A head is sealed into a chunk once its points span this long (µs): a week.
pub const SEAL_SPAN: Micros = 7 * 86_400_000_000;

/// The format byte of a stored [`ChunkSummary`].
const CHUNK_SUMMARY_FORMAT: u8 = 1;

/// Summarises chunks as the writer stores them: the layer above (the key's type plugin)
/// plugged into the store.
pub trait ChunkSummarizer: Send + Sync {
    /// The summary of `[from, until)` of key `name`, given `carried` (the value in force at
    /// `from`) and every point inside, with the identity of what made it (type, version,
    /// options: a summary is used only under the same one). `None` when the key's type is
    /// not loaded or failed: the chunk is then stored without a summary.
    fn summarize(
        &self,
        name: &str,
        carried: &Point,
        points: &[Point],
        span: (Time, Time),
    ) -> Option<(Vec<u8>, Vec<u8>)>;
}

/// A sealed chunk's stored summary of its inside (see "Chunk summaries" above).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSummary {
    /// The chunk's first point: the summary covers `[first.time + 1 µs, last.time + 1 µs)`.
    pub first: Point,
    pub last: Point,
    /// Type, version and options it was made under.
    pub identity: Vec<u8>,
    pub summary: Vec<u8>,
    /// Stored microseconds of the first and last points.
    pub first_us: Micros,
    pub last_us: Micros,
}

impl ChunkSummary {
    /// The row stored for a chunk whose points are `first` ... `last`.
    fn encode(
        identity: &[u8],
        (last_us, last): (Micros, &Value),
        first: &Value,
        summary: &[u8],
    ) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + identity.len() + summary.len());
        v.push(CHUNK_SUMMARY_FORMAT);
        let put = |v: &mut Vec<u8>, bytes: &[u8]| {
            v.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            v.extend_from_slice(bytes);
        };
        put(&mut v, identity);
        v.extend_from_slice(&last_us.to_be_bytes());
        put(&mut v, &first.encode());
        put(&mut v, &last.encode());
        v.extend_from_slice(summary);
        v
    }

    fn decode(first_us: Micros, v: &[u8]) -> Result<ChunkSummary> {
        let corrupt = || Error::Storage("a stored chunk summary is unreadable".into());
        let (&format, mut rest) = v.split_first().ok_or_else(corrupt)?;
        if format != CHUNK_SUMMARY_FORMAT {
            return Err(corrupt());
        }
        let identity = take_field(&mut rest).ok_or_else(corrupt)?.to_vec();
        let last_us = take(&mut rest, 8)
            .and_then(|b| b.try_into().ok())
            .map(Micros::from_be_bytes)
            .ok_or_else(corrupt)?;
        let first = take_field(&mut rest)
            .and_then(Value::decode)
            .ok_or_else(corrupt)?;
        let last = take_field(&mut rest)
            .and_then(Value::decode)
            .ok_or_else(corrupt)?;
        Ok(ChunkSummary {
            first: Point {
                time: micros_to_time(first_us),
                value: first,
            },
            last: Point {
                time: micros_to_time(last_us),
                value: last,
            },
            identity,
            summary: rest.to_vec(),
            first_us,
            last_us,
        })
    }
}

/// The first `n` bytes of `rest`, which moves past them.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (a, b) = rest.split_at_checked(n)?;
    *rest = b;
    Some(a)
}

/// A `u32 BE length ‖ bytes` field of `rest`, which moves past it.
fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_be_bytes(take(rest, 4)?.try_into().ok()?);
    take(rest, n as usize)
}

/// The store's [`ChunkSummarizer`], set once the layer above exists (shared by clones).
type SummarizerSlot = Arc<RwLock<Option<Arc<dyn ChunkSummarizer>>>>;

/// A key's id: what its rows carry instead of its name.
pub type KeyId = u32;

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
    meta: Keyspace,
    keys: Keyspace,
    defs: Keyspace,
    head: Keyspace,
    chunks: Keyspace,
    chunk_summaries: Keyspace,
    counts: Keyspace,
    touched: Keyspace,
    summaries: Keyspace,
    gaps: Keyspace,
    compaction: Keyspace,
    policies: Keyspace,
    summarizer: SummarizerSlot,
    /// Points at which a head is sealed ([`SEAL_POINTS`] unless a test asks for less).
    seal_points: usize,
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
    /// The stored form (`u8 format ‖ f64 BE end ‖ f64 BE carried time ‖ value`).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(26);
        v.push(GAP_FORMAT);
        v.extend_from_slice(&self.end.to_be_bytes());
        v.extend_from_slice(&self.carried.time.to_be_bytes());
        self.carried.value.encode_into(&mut v);
        v
    }

    /// Reads the stored form back (the start is the row's key).
    pub fn decode(start: Time, v: &[u8]) -> Result<Gap> {
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

/// Options of a keyspace read by range scans: a bloom filter would never be consulted.
fn scanned() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().filter_policy(FilterPolicy::disabled())
}

impl Store {
    /// Opens (or creates) the database in `dir`, migrating a folder of an older format in
    /// place first.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        // We persist the journal ourselves (group commit in the writer thread).
        let db = Database::builder(dir).manual_journal_persist(true).open()?;
        let format = migrate::format_of(&db)?;
        match format {
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(Error::Storage(format!(
                    "{} holds data format {other}; this Komoku reads format {FORMAT_VERSION} \
                     (and migrates format 1): run the Komoku version that wrote it",
                    dir.display()
                )));
            }
            None => {}
        }
        let store = Store {
            meta: db.keyspace("meta", KeyspaceCreateOptions::default)?,
            keys: db.keyspace("keys", KeyspaceCreateOptions::default)?,
            defs: db.keyspace("defs", KeyspaceCreateOptions::default)?,
            head: db.keyspace("head", scanned)?,
            chunks: db.keyspace("chunks", || {
                scanned().data_block_compression_policy(CompressionPolicy::disabled())
            })?,
            chunk_summaries: db.keyspace("chunk_summaries", scanned)?,
            counts: db.keyspace("counts", KeyspaceCreateOptions::default)?,
            touched: db.keyspace("touched", KeyspaceCreateOptions::default)?,
            summaries: db.keyspace("tier_summaries", scanned)?,
            gaps: db.keyspace("tier_gaps", scanned)?,
            compaction: db.keyspace("compaction", KeyspaceCreateOptions::default)?,
            policies: db.keyspace("policies", KeyspaceCreateOptions::default)?,
            summarizer: SummarizerSlot::default(),
            seal_points: SEAL_POINTS,
            db,
        };
        if format.is_none() {
            migrate::to_current(&store)?;
        }
        migrate::drop_old_keyspaces(&store.db)?;
        Ok(store)
    }

    /// Seals heads (and splits rewritten chunks) at `n` points instead of [`SEAL_POINTS`]:
    /// for tests that need many chunk boundaries in a few points. Set before the writer
    /// starts.
    pub fn with_seal_points(mut self, n: usize) -> Store {
        self.seal_points = n.max(1);
        self
    }

    /// Plugs in what summarises chunks as they are written (before, chunks get no summary).
    pub fn set_summarizer(&self, summarizer: Arc<dyn ChunkSummarizer>) {
        if let Ok(mut slot) = self.summarizer.write() {
            *slot = Some(summarizer);
        }
    }

    /// The stored row summarising the chunk `points` of key `name` (at least two points,
    /// sorted), `None` when it gets none.
    fn chunk_summary_row(&self, name: &str, points: &[(Micros, Value)]) -> Option<Vec<u8>> {
        let [(first_us, first), .., (last_us, last)] = points else {
            return None;
        };
        let summarizer = self.summarizer.read().ok()?.clone()?;
        let as_point = |(us, value): &(Micros, Value)| Point {
            time: micros_to_time(*us),
            value: value.clone(),
        };
        let inside: Vec<Point> = points[1..].iter().map(as_point).collect();
        let span = (
            micros_to_time(first_us + 1),
            micros_to_time(last_us.saturating_add(1)),
        );
        let (identity, summary) =
            summarizer.summarize(name, &as_point(&points[0]), &inside, span)?;
        Some(ChunkSummary::encode(
            &identity,
            (*last_us, last),
            first,
            &summary,
        ))
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
            keys: self.keys.clone(),
            defs: self.defs.clone(),
            policies: self.policies.clone(),
            head: self.head.clone(),
            chunks: self.chunks.clone(),
            chunk_summaries: self.chunk_summaries.clone(),
            summaries: self.summaries.clone(),
            gaps: self.gaps.clone(),
            compaction: self.compaction.clone(),
        }
    }

    /// The newest point of a key.
    pub fn last_point(&self, name: &str) -> Result<Option<Point>> {
        self.view()
            .scan(name, f64::NEG_INFINITY, f64::INFINITY)
            .next_back()
            .transpose()
    }

    /// The latest acknowledged-but-not-stored operation on a key, if newer than its points.
    pub fn touched(&self, name: &str) -> Result<Option<Point>> {
        let Some(v) = self.touched.get(name.as_bytes())? else {
            return Ok(None);
        };
        let corrupt = || Error::Storage("a touch record is unreadable".into());
        let (time, value) = v.split_at_checked(8).ok_or_else(corrupt)?;
        Ok(Some(Point {
            time: time_from_sortable(time.try_into().map_err(|_| corrupt())?),
            value: Value::decode(value).ok_or_else(corrupt)?,
        }))
    }

    /// Points of a key with `since <= time <= until`, oldest first.
    pub fn range(&self, name: &str, since: Time, until: Time) -> Result<Vec<Point>> {
        self.scan(name, since, until).collect()
    }

    /// Points of a key with `since <= time <= until`, newest first, at most `limit`.
    pub fn range_rev(
        &self,
        name: &str,
        since: Time,
        until: Time,
        limit: usize,
    ) -> Result<Vec<Point>> {
        self.scan(name, since, until).rev().take(limit).collect()
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
        self.view().scan(name, since, until.next_up())
    }

    /// The oldest point of a key (from a fresh snapshot).
    pub fn first_point(&self, name: &str) -> Result<Option<Point>> {
        self.view().first_point_from(name, f64::NEG_INFINITY)
    }

    /// Fsyncs the journal: everything committed so far survives a power loss.
    pub fn persist(&self) -> Result<()> {
        Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
    }

    fn all_keyspaces(&self) -> [&Keyspace; 12] {
        [
            &self.counts,
            &self.chunk_summaries,
            &self.meta,
            &self.keys,
            &self.defs,
            &self.head,
            &self.chunks,
            &self.touched,
            &self.summaries,
            &self.gaps,
            &self.compaction,
            &self.policies,
        ]
    }

    /// Writes the memtables out as tables and waits, so the journal can be trimmed (a
    /// graceful stop does this too).
    pub fn flush(&self) -> Result<()> {
        for ks in self.all_keyspaces() {
            ks.rotate_memtable_and_wait()?;
        }
        self.persist()
    }

    /// Rewrites the raw and summary tables so deleted entries stop taking space now rather
    /// than at fjall's next compaction. For measuring disk use (benchmarks).
    pub fn major_compact(&self) -> Result<()> {
        self.head.major_compact()?;
        self.chunks.major_compact()?;
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

    /// Bytes raw history takes on disk: the head and chunk tables (the shared journal not
    /// counted).
    pub fn points_disk_space(&self) -> u64 {
        self.head.disk_space() + self.chunks.disk_space()
    }

    /// How many raw points are stored: exactly those in chunks, and about how many head rows
    /// (exact after a flush). Reads one row per key.
    pub fn approximate_points(&self) -> usize {
        let mut n = self.head.approximate_len() as u64;
        for guard in self.counts.iter() {
            if let Ok(v) = guard.value()
                && let Ok(b) = <[u8; 8]>::try_from(v.as_ref())
            {
                n += u64::from_be_bytes(b);
            }
        }
        n as usize
    }

    /// Bytes the database takes on disk.
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }

    /// Bytes on disk per keyspace (tables only), by keyspace name.
    pub fn keyspace_sizes(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("head", self.head.disk_space()),
            ("chunks", self.chunks.disk_space()),
            ("chunk_summaries", self.chunk_summaries.disk_space()),
            ("tier_summaries", self.summaries.disk_space()),
            ("tier_gaps", self.gaps.disk_space()),
            (
                "other",
                self.meta.disk_space()
                    + self.keys.disk_space()
                    + self.counts.disk_space()
                    + self.defs.disk_space()
                    + self.touched.disk_space()
                    + self.compaction.disk_space()
                    + self.policies.disk_space(),
            ),
        ]
    }

    /// Bytes the journal takes on disk.
    pub fn journal_disk_space(&self) -> Result<u64> {
        Ok(self.db.journal_disk_space()?)
    }
}

/// Every entry of a keyspace of name → JSON record; `what` names the records in errors.
fn load_json<T: serde::de::DeserializeOwned>(
    keyspace: &Keyspace,
    what: &str,
) -> Result<Vec<(String, T)>> {
    keyspace
        .iter()
        .map(|guard| json_record(guard.into_inner()?, what))
        .collect()
}

/// A row named by a key name and holding a JSON record.
fn json_record<T: serde::de::DeserializeOwned>(
    (k, v): (fjall::Slice, fjall::Slice),
    what: &str,
) -> Result<(String, T)> {
    let name = String::from_utf8(k.to_vec())
        .map_err(|_| Error::Storage(format!("the name of a {what} on disk is not UTF-8")))?;
    let record = serde_json::from_slice(&v)
        .map_err(|e| Error::Storage(format!("{what} {name:?} is unreadable: {e}")))?;
    Ok((name, record))
}

fn decode_id(v: &[u8]) -> Result<KeyId> {
    v.try_into()
        .map(KeyId::from_be_bytes)
        .map_err(|_| Error::Storage("a stored key id is unreadable".into()))
}

/// `u32 BE id ‖ i64 µs, sign bit flipped, BE`: sorts by key, then time.
fn micros_key(id: KeyId, us: Micros) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&id.to_be_bytes());
    k[4..].copy_from_slice(&((us as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The time of a `head` or `chunks` key.
fn micros_in_key(k: &[u8]) -> Result<Micros> {
    let b: [u8; 8] = k
        .get(4..12)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Storage("a stored point key is unreadable".into()))?;
    Ok((u64::from_be_bytes(b) ^ (1 << 63)) as Micros)
}

/// `u32 BE id ‖ sortable step`: the prefix of one tier's summaries.
fn tier_prefix(id: KeyId, step: f64) -> Vec<u8> {
    let mut k = id.to_be_bytes().to_vec();
    k.extend_from_slice(&time_to_sortable(step));
    k
}

fn summary_key(id: KeyId, step: f64, start: Time) -> Vec<u8> {
    let mut k = tier_prefix(id, step);
    k.extend_from_slice(&time_to_sortable(start));
    k
}

fn gap_key(id: KeyId, start: Time) -> Vec<u8> {
    let mut k = id.to_be_bytes().to_vec();
    k.extend_from_slice(&time_to_sortable(start));
    k
}

/// Widened µs bounds of `[since, until)`: every point inside has its µs in them (the exact
/// test is on the float time).
fn micros_bounds(since: Time, until: Time) -> (Micros, Micros) {
    (
        ((since * 1e6).floor() as Micros).saturating_sub(1),
        ((until * 1e6).ceil() as Micros).saturating_add(1),
    )
}

/// A snapshot of the store (see [`Store::view`]).
pub struct View {
    snap: Snapshot,
    keys: Keyspace,
    defs: Keyspace,
    policies: Keyspace,
    head: Keyspace,
    chunks: Keyspace,
    chunk_summaries: Keyspace,
    summaries: Keyspace,
    gaps: Keyspace,
    compaction: Keyspace,
}

impl View {
    /// A key's id, if it has one.
    fn id(&self, name: &str) -> Result<Option<KeyId>> {
        match self.snap.get(&self.keys, name.as_bytes())? {
            Some(v) => decode_id(&v).map(Some),
            None => Ok(None),
        }
    }

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
        self.scan(name, f64::NEG_INFINITY, t)
            .next_back()
            .transpose()
    }

    /// Points with `since <= time < until`, oldest first, read lazily (a chunk is decoded
    /// when the scan reaches it, from either end).
    pub fn scan(&self, name: &str, since: Time, until: Time) -> Scan {
        let mut scan = Scan {
            since,
            until,
            error: None,
            first: None,
            chunks: None,
            head: None,
            front: VecDeque::new(),
            back: VecDeque::new(),
            skip: HashMap::new(),
        };
        let id = match self.id(name) {
            Ok(Some(id)) => id,
            Ok(None) => return scan,
            Err(e) => {
                scan.error = Some(e);
                return scan;
            }
        };
        let (lo, hi) = micros_bounds(since, until);
        if since >= until {
            return scan;
        }
        // Head rows are newer than every chunk; the sealed ones lie before that as tombstones
        // until fjall compacts them, so the head is read from just after the newest chunk.
        let mut head_lo = lo;
        match self
            .snap
            .range(
                &self.chunks,
                micros_key(id, Micros::MIN)..=micros_key(id, Micros::MAX),
            )
            .next_back()
            .map(|g| g.value())
            .transpose()
        {
            Ok(Some(v)) => match chunk::header(&v) {
                Some(h) => head_lo = head_lo.max(h.last.saturating_add(1)),
                None => scan.error = Some(corrupt_chunk()),
            },
            Ok(None) => {}
            Err(e) => scan.error = Some(e.into()),
        }
        // The chunk that began before `lo` and may reach into it.
        match self
            .snap
            .range(
                &self.chunks,
                micros_key(id, Micros::MIN)..micros_key(id, lo),
            )
            .next_back()
            .map(|g| g.into_inner())
            .transpose()
        {
            Ok(Some((k, v))) => match (micros_in_key(&k), chunk::header(&v)) {
                (Ok(first), Some(h)) if h.last >= lo => scan.first = Some((first, v)),
                (Ok(_), Some(_)) => {}
                (Err(e), _) => scan.error = Some(e),
                (_, None) => scan.error = Some(corrupt_chunk()),
            },
            Ok(None) => {}
            Err(e) => scan.error = Some(e.into()),
        }
        scan.chunks = Some(
            self.snap
                .range(&self.chunks, micros_key(id, lo)..=micros_key(id, hi)),
        );
        if head_lo <= hi {
            scan.head = Some(
                self.snap
                    .range(&self.head, micros_key(id, head_lo)..=micros_key(id, hi)),
            );
        }
        scan
    }

    /// The summaries of the chunks that start in `[since, until)`, oldest first (chunks
    /// without one are missing).
    pub fn chunk_summaries(
        &self,
        name: &str,
        since: Time,
        until: Time,
    ) -> Result<Vec<ChunkSummary>> {
        let Some(id) = self.id(name)? else {
            return Ok(Vec::new());
        };
        if since >= until {
            return Ok(Vec::new());
        }
        let (lo, hi) = micros_bounds(since, until);
        let mut out = Vec::new();
        for g in self.snap.range(
            &self.chunk_summaries,
            micros_key(id, lo)..=micros_key(id, hi),
        ) {
            let (k, v) = g.into_inner()?;
            let s = ChunkSummary::decode(micros_in_key(&k)?, &v)?;
            if since <= s.first.time && s.first.time < until {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// [`View::scan`], except that the chunks starting at the times in `skip` are not decoded:
    /// each yields only the two points given for it (its first and last, from its summary).
    pub fn scan_skipping(
        &self,
        name: &str,
        since: Time,
        until: Time,
        skip: HashMap<Micros, [Point; 2]>,
    ) -> Scan {
        let mut scan = self.scan(name, since, until);
        scan.skip = skip;
        scan
    }

    /// The oldest point of a key at or after `since`.
    pub fn first_point_from(&self, name: &str, since: Time) -> Result<Option<Point>> {
        self.scan(name, since, f64::INFINITY).next().transpose()
    }

    /// Rows of `keyspace` in `id ‖ lo .. id ‖ hi`; empty when the key has no id.
    fn id_range(
        &self,
        keyspace: &Keyspace,
        name: &str,
        (lo, hi): (Vec<u8>, Vec<u8>),
    ) -> impl DoubleEndedIterator<Item = Result<(fjall::Slice, fjall::Slice)>> + use<> {
        let (iter, error) = match self.id(name) {
            Ok(Some(id)) => {
                let prefixed = |rest: Vec<u8>| [id.to_be_bytes().to_vec(), rest].concat();
                (
                    Some(self.snap.range(keyspace, prefixed(lo)..prefixed(hi))),
                    None,
                )
            }
            Ok(None) => (None, None),
            Err(e) => (None, Some(Err(e))),
        };
        error.into_iter().chain(
            iter.into_iter()
                .flatten()
                .map(|g| g.into_inner().map_err(Error::from)),
        )
    }

    /// Summaries of one tier with `since <= bucket start < until`, oldest first, lazily.
    pub fn summaries(
        &self,
        name: &str,
        step: f64,
        since: Time,
        until: Time,
    ) -> impl DoubleEndedIterator<Item = Result<(Time, Vec<u8>)>> + use<> {
        let within = |t: Time| [time_to_sortable(step), time_to_sortable(t)].concat();
        self.id_range(&self.summaries, name, (within(since), within(until)))
            .map(|item| {
                let (k, v) = item?;
                Ok((time_in_key(&k)?, v.to_vec()))
            })
    }
}

impl View {
    /// A key's definition.
    pub fn def(&self, name: &str) -> Result<Option<KeyDef>> {
        self.snap
            .get(&self.defs, name.as_bytes())?
            .map(|v| json_record((name.as_bytes().into(), v), "key definition").map(|(_, d)| d))
            .transpose()
    }

    /// Up to `limit` key definitions whose names `wanted` accepts, in name order, after the
    /// name `after` (from the first without).
    pub fn defs_after(
        &self,
        after: Option<&str>,
        limit: usize,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, KeyDef)>> {
        let from = match after {
            Some(name) => std::ops::Bound::Excluded(name.as_bytes().to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for guard in self
            .snap
            .range(&self.defs, (from, std::ops::Bound::Unbounded))
        {
            if out.len() == limit {
                break;
            }
            let (name, def) = json_record(guard.into_inner()?, "key definition")?;
            if wanted(&name) {
                out.push((name, def));
            }
        }
        Ok(out)
    }

    /// Every stored retention policy, by key name or pattern.
    pub fn policies(&self) -> Result<Vec<(String, PolicySpec)>> {
        self.snap
            .iter(&self.policies)
            .map(|guard| json_record(guard.into_inner()?, "retention policy"))
            .collect()
    }

    /// Gaps with `since <= start < until`, oldest first, read lazily.
    pub fn gaps(
        &self,
        name: &str,
        since: Time,
        until: Time,
    ) -> impl DoubleEndedIterator<Item = Result<Gap>> + use<> {
        let bounds = (
            time_to_sortable(since).to_vec(),
            time_to_sortable(until).to_vec(),
        );
        self.id_range(&self.gaps, name, bounds).map(|item| {
            let (k, v) = item?;
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

/// A sealed chunk of points (oldest first, distinct times).
fn encode_chunk(points: &[(Micros, Value)]) -> Result<Vec<u8>> {
    chunk::encode(points).map_err(|e| Error::Storage(format!("cannot compress a chunk: {e}")))
}

fn corrupt_chunk() -> Error {
    Error::Storage("a stored chunk is unreadable".into())
}

/// A lazy scan of a key's raw points in `[since, until)`: the chunk reaching in from before,
/// the chunks that start inside, then the head rows, each decoded when reached.
pub struct Scan {
    since: Time,
    until: Time,
    /// A lookup failed before scanning: reported once, first.
    error: Option<Error>,
    first: Option<(Micros, fjall::Slice)>,
    chunks: Option<fjall::Iter>,
    head: Option<fjall::Iter>,
    /// Decoded points not yet taken, from the front and from the back.
    front: VecDeque<Point>,
    back: VecDeque<Point>,
    /// Chunks (by first time) not decoded: the points they yield instead.
    skip: HashMap<Micros, [Point; 2]>,
}

impl Scan {
    fn stop(&mut self, e: Error) -> Option<Result<Point>> {
        self.first = None;
        self.chunks = None;
        self.head = None;
        self.front.clear();
        self.back.clear();
        Some(Err(e))
    }

    /// Decodes a chunk's points inside the scan's range.
    fn decode(&self, first: Micros, v: &[u8]) -> Result<Vec<Point>> {
        if let Some(points) = self.skip.get(&first) {
            return Ok(points
                .iter()
                .filter(|p| self.since <= p.time && p.time < self.until)
                .cloned()
                .collect());
        }
        let points = chunk::decode(first, v).ok_or_else(corrupt_chunk)?;
        Ok(points
            .into_iter()
            .map(|(us, value)| Point {
                time: micros_to_time(us),
                value,
            })
            .filter(|p| self.since <= p.time && p.time < self.until)
            .collect())
    }

    fn chunk_guard(&self, g: fjall::Guard) -> Result<Vec<Point>> {
        let (k, v) = g.into_inner()?;
        self.decode(micros_in_key(&k)?, &v)
    }

    /// A head row as a point, `None` when outside the range.
    fn head_row(&self, g: fjall::Guard) -> Result<Option<Point>> {
        let (k, v) = g.into_inner()?;
        let p = Point {
            time: micros_to_time(micros_in_key(&k)?),
            value: Value::decode(&v)
                .ok_or_else(|| Error::Storage("a stored point is unreadable".into()))?,
        };
        Ok((self.since <= p.time && p.time < self.until).then_some(p))
    }
}

impl Iterator for Scan {
    type Item = Result<Point>;

    fn next(&mut self) -> Option<Result<Point>> {
        if let Some(e) = self.error.take() {
            return self.stop(e);
        }
        loop {
            if let Some(p) = self.front.pop_front() {
                return Some(Ok(p));
            }
            if let Some((first, v)) = self.first.take() {
                match self.decode(first, &v) {
                    Ok(points) => self.front.extend(points),
                    Err(e) => return self.stop(e),
                }
                continue;
            }
            if let Some(chunks) = &mut self.chunks {
                match chunks.next() {
                    Some(g) => match self.chunk_guard(g) {
                        Ok(points) => self.front.extend(points),
                        Err(e) => return self.stop(e),
                    },
                    None => self.chunks = None,
                }
                continue;
            }
            if let Some(p) = self.back.pop_front() {
                return Some(Ok(p));
            }
            let g = self.head.as_mut()?.next()?;
            match self.head_row(g) {
                Ok(Some(p)) => return Some(Ok(p)),
                Ok(None) => {}
                Err(e) => return self.stop(e),
            }
        }
    }
}

impl DoubleEndedIterator for Scan {
    fn next_back(&mut self) -> Option<Result<Point>> {
        if let Some(e) = self.error.take() {
            return self.stop(e);
        }
        loop {
            if let Some(head) = &mut self.head {
                match head.next_back() {
                    Some(g) => match self.head_row(g) {
                        Ok(Some(p)) => return Some(Ok(p)),
                        Ok(None) => continue,
                        Err(e) => return self.stop(e),
                    },
                    None => self.head = None,
                }
            }
            if let Some(p) = self.back.pop_back() {
                return Some(Ok(p));
            }
            if let Some(chunks) = &mut self.chunks {
                match chunks.next_back() {
                    Some(g) => match self.chunk_guard(g) {
                        Ok(points) => {
                            for p in points.into_iter().rev() {
                                self.back.push_front(p);
                            }
                        }
                        Err(e) => return self.stop(e),
                    },
                    None => self.chunks = None,
                }
                continue;
            }
            if let Some((first, v)) = self.first.take() {
                match self.decode(first, &v) {
                    Ok(points) => {
                        for p in points.into_iter().rev() {
                            self.back.push_front(p);
                        }
                    }
                    Err(e) => return self.stop(e),
                }
                continue;
            }
            return self.front.pop_back().map(Ok);
        }
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
    fn point_keys_sort_by_id_then_time() {
        assert!(micros_key(1, i64::MAX) < micros_key(2, i64::MIN));
        assert!(micros_key(1, -1) < micros_key(1, 0));
        assert!(micros_key(1, 0) < micros_key(1, 1));
        for us in [i64::MIN, -5, 0, 7, i64::MAX] {
            assert_eq!(micros_in_key(&micros_key(3, us)).ok(), Some(us));
        }
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
