//! The one writer thread: group commit.
//!
//! Callers queue [`WriteBatch`]es. The thread takes the first one, then everything else
//! already queued (up to [`MAX_GROUP`]), commits them as one fjall batch and, with
//! [`Durability::Sync`], fsyncs the journal once for the whole group. Only then does it run
//! each batch's `after` hook (publishing the change) and wake its caller, in queue order.
//!
//! A failed commit or fsync is fatal: the thread reports it once through `on_fatal` (the
//! server shuts down rather than lie about durability) and refuses every later write.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use fjall::PersistMode;
use tokio::sync::oneshot;

use super::{
    Gap, KeyDef, KeyId, SEAL_SPAN, Store, chunk, corrupt_chunk, decode_id, encode_chunk, gap_key,
    micros_bounds, micros_in_key, micros_key, summary_key,
};
use crate::error::{Error, Result};
use crate::policy::{CompactionState, PolicySpec};
use crate::value::{Micros, Point, Time, Value, micros_to_time, time_to_micros, time_to_sortable};

/// Most batches committed together.
const MAX_GROUP: usize = 4096;

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Durability {
    /// Default. A write is acknowledged after the journal is fsynced: it survives `kill -9`
    /// and power loss (as far as the disk honours fsync).
    Sync,
    /// A write is acknowledged once in the journal's buffer; the journal is fsynced at least
    /// this often. A crash of the machine may lose up to this window; `kill -9` of the
    /// process loses nothing that was acknowledged (the buffer is flushed to the OS on commit).
    Interval(Duration),
}

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// Add (or overwrite, at the same time) one point of a key.
    Point { key: String, point: Point },
    /// Record an operation that was acknowledged but not stored (see `touched`).
    Touch { key: String, point: Point },
    /// Create or replace a key's definition.
    Def { key: String, def: KeyDef },
    /// Remove a key's definition, all of its points, summaries and gaps, and its compaction
    /// state.
    DeleteKey { key: String },
    /// Remove the raw points with `from <= time < until`: whole chunks inside are dropped
    /// (one delete each), a chunk the range cuts is rewritten, head rows are deleted.
    DeleteRaw {
        key: String,
        from: Time,
        until: Time,
    },
    /// Store the summary of one tier bucket.
    Summary {
        key: String,
        step: f64,
        start: Time,
        summary: Vec<u8>,
    },
    /// Remove the summary of one tier bucket.
    DeleteSummary { key: String, step: f64, start: Time },
    /// Store (or replace, at the same start) a gap of compacted history.
    Gap { key: String, gap: Gap },
    /// Remove the gap starting at `start`.
    DeleteGap { key: String, start: Time },
    /// Set a key's compaction watermarks.
    Compaction { key: String, state: CompactionState },
    /// Set (`Some`) or remove a retention policy for a key name or pattern.
    Policy {
        pattern: String,
        spec: Option<PolicySpec>,
    },
}

/// Writes committed atomically together, and what to do once they are durable.
pub struct WriteBatch {
    pub writes: Vec<Write>,
    /// Runs on the writer thread after the batch is durable, before later batches' hooks.
    pub after: Option<Box<dyn FnOnce() + Send>>,
}

struct Job {
    batch: WriteBatch,
    done: oneshot::Sender<Result<()>>,
}

enum Msg {
    Job(Job),
    /// Finish what is queued, make it durable, end the thread.
    Stop,
}

/// Handle to the writer thread. Cloning shares the thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
}

impl Writer {
    pub(super) fn start(
        store: Store,
        durability: Durability,
        on_fatal: Box<dyn Fn(&Error) + Send>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("komoku-writer".into())
            .spawn(move || run(store, durability, on_fatal, rx))
            .expect("the OS can start one more thread at start-up");
        Writer {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Commits and fsyncs everything queued, then stops the thread and waits for it (so its
    /// handle on the database is gone). Later writes fail with `shutting_down`. Blocking.
    pub fn close(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }

    /// Queues a batch; the returned receiver resolves when it is durable (or failed).
    /// Batches are applied in the order they were queued.
    pub fn submit(&self, batch: WriteBatch) -> oneshot::Receiver<Result<()>> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(Msg::Job(job))) = self.tx.send(Msg::Job(Job { batch, done })) {
            let _ = job.done.send(Err(Error::ShuttingDown));
        }
        rx
    }

    /// Waits until every write queued before this call is committed: a read that follows
    /// sees them (the in-memory latest values run ahead of the store by the queue).
    pub async fn barrier(&self) -> Result<()> {
        let empty = WriteBatch {
            writes: Vec::new(),
            after: None,
        };
        self.submit(empty).await.unwrap_or(Err(Error::ShuttingDown))
    }
}

fn run(
    store: Store,
    durability: Durability,
    on_fatal: Box<dyn Fn(&Error) + Send>,
    rx: mpsc::Receiver<Msg>,
) {
    let mut failed: Option<String> = None;
    let mut unsynced_since: Option<Instant> = None;
    let mut state = match State::load(&store) {
        Ok(state) => state,
        Err(e) => {
            fail(&mut failed, &on_fatal, e);
            State::default()
        }
    };
    let mut graceful = false;
    loop {
        let first = match durability {
            Durability::Sync => match rx.recv() {
                Ok(Msg::Job(job)) => job,
                Ok(Msg::Stop) => {
                    graceful = true;
                    break;
                }
                Err(_) => break,
            },
            Durability::Interval(every) => {
                let wait = unsynced_since.map_or(every, |t| every.saturating_sub(t.elapsed()));
                match rx.recv_timeout(wait) {
                    Ok(Msg::Job(job)) => job,
                    Ok(Msg::Stop) => {
                        graceful = true;
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if unsynced_since.take().is_some()
                            && failed.is_none()
                            && let Err(e) = store.db.persist(PersistMode::SyncAll)
                        {
                            fail(&mut failed, &on_fatal, e.into());
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut group = vec![first];
        let mut stop = false;
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => group.push(job),
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }

        let committing = Instant::now();
        let result = match &failed {
            Some(why) => Err(Error::Storage(why.clone())),
            None => commit(&store, &mut state, &group, durability),
        };
        crate::stats::group_committed(
            group.iter().map(|job| job.batch.writes.len()).sum(),
            committing.elapsed(),
        );
        match result {
            Ok(()) => {
                if durability != Durability::Sync && unsynced_since.is_none() {
                    unsynced_since = Some(Instant::now());
                }
                for job in group {
                    if let Some(after) = job.batch.after {
                        after();
                    }
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) => {
                if failed.is_none() {
                    fail(&mut failed, &on_fatal, e);
                }
                let why = failed.clone().unwrap_or_default();
                for job in group {
                    let _ = job.done.send(Err(Error::Storage(why.clone())));
                }
            }
        }
        if stop {
            graceful = true;
            break;
        }
    }
    // Stopped, or every sender is gone: make what was committed durable before ending. A
    // graceful stop also seals every head and flushes the memtables, so the journal is
    // trimmed and the folder holds tables only.
    if failed.is_none() {
        let mut tidy = || -> Result<()> {
            if graceful {
                let ids: Vec<KeyId> = state.heads.keys().copied().collect();
                seal(&store, &mut state, ids)?;
                store.db.persist(PersistMode::SyncAll)?;
                store.flush()?;
                store.head.major_compact()?;
            }
            Ok(store.db.persist(PersistMode::SyncAll)?)
        };
        if let Err(e) = tidy() {
            tracing::error!(error = %e, "final journal fsync failed");
        }
    }
    tracing::debug!("writer thread stopped");
}

fn fail(failed: &mut Option<String>, on_fatal: &dyn Fn(&Error), e: Error) {
    tracing::error!(error = %e, "storage write failed; refusing further writes");
    on_fatal(&e);
    *failed = Some(e.to_string());
}

/// A key's open head, as the writer tracks it.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// Rows written since the last seal (overwrites count twice: it only triggers sealing).
    rows: usize,
    first: Micros,
    last: Micros,
}

/// What the writer thread knows so that it never reads before writing a plain point.
#[derive(Default)]
struct State {
    ids: HashMap<String, KeyId>,
    /// Each id's key name (what a chunk summariser is asked about).
    names: HashMap<KeyId, String>,
    next_id: KeyId,
    /// The last time of each key's newest chunk: a point at or before it goes into a chunk.
    sealed_end: HashMap<KeyId, Micros>,
    heads: HashMap<KeyId, Head>,
    /// Points in each key's chunks (the `counts` keyspace).
    counts: HashMap<KeyId, u64>,
}

impl State {
    fn load(store: &Store) -> Result<State> {
        let mut state = State::default();
        for guard in store.keys.iter() {
            let (k, v) = guard.into_inner()?;
            let name = String::from_utf8(k.to_vec())
                .map_err(|_| Error::Storage("a stored key name is not UTF-8".into()))?;
            let id = decode_id(&v)?;
            if let Some(end) = last_chunk_end(store, id)? {
                state.sealed_end.insert(id, end);
            }
            state.names.insert(id, name.clone());
            state.ids.insert(name, id);
        }
        state.next_id = match store.meta.get(b"next_id")? {
            Some(v) => decode_id(&v)?,
            None => 0,
        };
        for guard in store.counts.iter() {
            let (k, v) = guard.into_inner()?;
            let n: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| Error::Storage("a stored point count is unreadable".into()))?;
            state.counts.insert(decode_id(&k)?, u64::from_be_bytes(n));
        }
        for guard in store.head.iter() {
            let k = guard.key()?;
            let id = decode_id(k.get(..4).unwrap_or_default())?;
            state.note_head(id, micros_in_key(&k)?);
        }
        Ok(state)
    }

    fn note_head(&mut self, id: KeyId, us: Micros) {
        let h = self.heads.entry(id).or_insert(Head {
            rows: 0,
            first: us,
            last: us,
        });
        h.rows += 1;
        h.first = h.first.min(us);
        h.last = h.last.max(us);
    }

    /// The key's id, handing out (and recording in `batch`) a new one the first time.
    fn id(&mut self, store: &Store, batch: &mut fjall::OwnedWriteBatch, name: &str) -> KeyId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        batch.insert(&store.keys, name.as_bytes(), id.to_be_bytes());
        batch.insert(&store.meta, b"next_id", self.next_id.to_be_bytes());
        self.ids.insert(name.to_string(), id);
        self.names.insert(id, name.to_string());
        id
    }

    /// Adds `delta` to a key's count of points in chunks, in `batch`.
    fn count(&mut self, store: &Store, batch: &mut fjall::OwnedWriteBatch, id: KeyId, delta: i64) {
        let n = self.counts.entry(id).or_default();
        *n = n.saturating_add_signed(delta);
        batch.insert(&store.counts, id.to_be_bytes(), n.to_be_bytes());
    }
}

/// Stores `points` (sorted, at least one) as a chunk of key `id`, with its summary when it
/// gets one; a summary row left under the same key by an earlier chunk goes.
fn put_chunk(
    store: &Store,
    state: &State,
    batch: &mut fjall::OwnedWriteBatch,
    id: KeyId,
    points: &[(Micros, Value)],
) -> Result<()> {
    let key = micros_key(id, points[0].0);
    batch.insert(&store.chunks, key, encode_chunk(points)?);
    let row = state
        .names
        .get(&id)
        .and_then(|name| store.chunk_summary_row(name, points));
    match row {
        Some(row) => batch.insert(&store.chunk_summaries, key, row),
        None => batch.remove(&store.chunk_summaries, key),
    }
    Ok(())
}

fn last_chunk_end(store: &Store, id: KeyId) -> Result<Option<Micros>> {
    match store.chunks.prefix(id.to_be_bytes()).next_back() {
        Some(g) => {
            let v = g.value()?;
            Ok(Some(chunk::header(&v).ok_or_else(corrupt_chunk)?.last))
        }
        None => Ok(None),
    }
}

/// Chunks a job rewrites, read from committed state and changed in memory, keyed by the
/// key they are stored under (deleted and re-inserted when the job commits).
#[derive(Default)]
struct Edits {
    chunks: BTreeMap<(KeyId, Micros), Vec<(Micros, Value)>>,
    /// How many points each edited chunk held as stored.
    stored: HashMap<(KeyId, Micros), u32>,
}

impl Edits {
    fn load(&mut self, store: &Store, id: KeyId, first: Micros, v: &[u8]) -> Result<()> {
        if !self.chunks.contains_key(&(id, first)) {
            let points = chunk::decode(first, v).ok_or_else(corrupt_chunk)?;
            self.stored.insert((id, first), points.len() as u32);
            self.chunks.insert((id, first), points);
        }
        let _ = store;
        Ok(())
    }

    /// Puts a point into the chunk that covers its time (or the key's first chunk, when it
    /// is older than all). `false` when the key has no chunk.
    fn put(&mut self, store: &Store, id: KeyId, us: Micros, value: &Value) -> Result<bool> {
        let found = match store
            .chunks
            .range(micros_key(id, Micros::MIN)..=micros_key(id, us))
            .next_back()
        {
            Some(g) => Some(g.into_inner()?),
            None => store
                .chunks
                .prefix(id.to_be_bytes())
                .next()
                .map(|g| g.into_inner())
                .transpose()?,
        };
        let Some((k, v)) = found else {
            return Ok(false);
        };
        let first = micros_in_key(&k)?;
        self.load(store, id, first, &v)?;
        let points = self.chunks.entry((id, first)).or_default();
        match points.binary_search_by_key(&us, |p| p.0) {
            Ok(i) => points[i].1 = value.clone(),
            Err(i) => points.insert(i, (us, value.clone())),
        }
        Ok(true)
    }

    /// Drops the points with `from <= time < until` from the key's chunks.
    fn delete(&mut self, store: &Store, id: KeyId, from: Time, until: Time) -> Result<()> {
        let (lo, hi) = micros_bounds(from, until);
        let mut rows = Vec::new();
        if let Some(g) = store
            .chunks
            .range(micros_key(id, Micros::MIN)..micros_key(id, lo))
            .next_back()
        {
            rows.push(g.into_inner()?);
        }
        for g in store.chunks.range(micros_key(id, lo)..=micros_key(id, hi)) {
            rows.push(g.into_inner()?);
        }
        let inside = |us: Micros| {
            let t = micros_to_time(us);
            from <= t && t < until
        };
        for (k, v) in rows {
            let first = micros_in_key(&k)?;
            let h = chunk::header(&v).ok_or_else(corrupt_chunk)?;
            if !self.chunks.contains_key(&(id, first)) && inside(first) && inside(h.last) {
                // Wholly inside: dropped without decoding.
                self.stored.insert((id, first), h.count);
                self.chunks.insert((id, first), Vec::new());
                continue;
            }
            if !self.chunks.contains_key(&(id, first)) && (h.last < lo || first > hi) {
                continue;
            }
            self.load(store, id, first, &v)?;
            if let Some(points) = self.chunks.get_mut(&(id, first)) {
                points.retain(|p| !inside(p.0));
            }
        }
        Ok(())
    }

    /// Writes the changed chunks: each old row deleted, its points stored again in chunks of
    /// at most the store's seal size.
    fn finish(
        self,
        store: &Store,
        state: &mut State,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<()> {
        for ((id, first), points) in self.chunks {
            let before = self.stored.get(&(id, first)).copied().unwrap_or(0);
            state.count(store, batch, id, points.len() as i64 - i64::from(before));
            batch.remove(&store.chunks, micros_key(id, first));
            batch.remove(&store.chunk_summaries, micros_key(id, first));
            for piece in points.chunks(store.seal_points) {
                put_chunk(store, state, batch, id, piece)?;
            }
        }
        Ok(())
    }
}

/// Whether a job deletes stored rows (a key, or raw history), reading what is stored first:
/// the batch before it must be committed first, and it gets its own.
fn deletes(job: &Job) -> bool {
    job.batch
        .writes
        .iter()
        .any(|w| matches!(w, Write::DeleteKey { .. } | Write::DeleteRaw { .. }))
}

fn commit(store: &Store, state: &mut State, group: &[Job], durability: Durability) -> Result<()> {
    if group.iter().all(|job| job.batch.writes.is_empty()) {
        return Ok(()); // only barriers: everything before them is already committed
    }
    let mut batch = store.db.batch();
    // The late points (older than their key's newest chunk) of the whole group share one
    // set of chunk edits: a chunk they fall in is decoded and rewritten once per group, not
    // once per point. Only edits and deletions change chunks before the group is committed
    // (heads are sealed after it), so the edits read nothing the batch has changed.
    let mut edits = Edits::default();
    for job in group {
        if deletes(job) {
            std::mem::take(&mut edits).finish(store, state, &mut batch)?;
            if !batch.is_empty() {
                std::mem::replace(&mut batch, store.db.batch()).commit()?;
            }
            let mut own = Edits::default();
            let mut cut = Vec::new();
            apply(store, state, &mut batch, Some(&mut own), &mut cut, job)?;
            own.finish(store, state, &mut batch)?;
            std::mem::replace(&mut batch, store.db.batch()).commit()?;
            for id in cut {
                match last_chunk_end(store, id)? {
                    Some(end) => state.sealed_end.insert(id, end),
                    None => state.sealed_end.remove(&id),
                };
            }
        } else {
            apply(
                store,
                state,
                &mut batch,
                Some(&mut edits),
                &mut Vec::new(),
                job,
            )?;
        }
    }
    edits.finish(store, state, &mut batch)?;
    batch.commit()?;
    let due: Vec<KeyId> = state
        .heads
        .iter()
        .filter(|(_, h)| h.rows >= store.seal_points || h.last - h.first >= SEAL_SPAN)
        .map(|(id, _)| *id)
        .collect();
    seal(store, state, due)?;
    if durability == Durability::Sync {
        store.db.persist(PersistMode::SyncAll)?;
    } else {
        // Hand the journal to the OS so a killed process loses nothing acknowledged.
        store.db.persist(PersistMode::Buffer)?;
    }
    Ok(())
}

/// Seals the heads of `ids` into chunks, in one atomic batch.
fn seal(store: &Store, state: &mut State, ids: Vec<KeyId>) -> Result<()> {
    let mut batch = store.db.batch();
    for id in ids {
        state.heads.remove(&id);
        let mut points = Vec::new();
        let mut keys = Vec::new();
        // From just after the newest chunk: the rows sealed before lie there as tombstones
        // until fjall compacts them, and a prefix scan would step over every one.
        let from = state
            .sealed_end
            .get(&id)
            .map_or(Micros::MIN, |end| end.saturating_add(1));
        for g in store
            .head
            .range(micros_key(id, from)..=micros_key(id, Micros::MAX))
        {
            let (k, v) = g.into_inner()?;
            let value = Value::decode(&v)
                .ok_or_else(|| Error::Storage("a stored point is unreadable".into()))?;
            points.push((micros_in_key(&k)?, value));
            keys.push(k);
        }
        let Some(last) = points.last().map(|p| p.0) else {
            continue;
        };
        for piece in points.chunks(store.seal_points) {
            put_chunk(store, state, &mut batch, id, piece)?;
        }
        state.count(store, &mut batch, id, points.len() as i64);
        for k in keys {
            batch.remove(&store.head, k);
        }
        state.sealed_end.insert(id, last);
    }
    if !batch.is_empty() {
        batch.commit()?;
    }
    Ok(())
}

/// Adds one job's writes to `batch`; late points and deletions of raw history go through
/// `edits` (see [`commit`]); `cut` collects keys whose raw history was cut.
fn apply(
    store: &Store,
    state: &mut State,
    batch: &mut fjall::OwnedWriteBatch,
    mut edits: Option<&mut Edits>,
    cut: &mut Vec<KeyId>,
    job: &Job,
) -> Result<()> {
    for write in &job.batch.writes {
        match write {
            Write::Point { key, point } => {
                let id = state.id(store, batch, key);
                let us = time_to_micros(point.time);
                let sealed = state.sealed_end.get(&id).is_some_and(|end| us <= *end);
                if sealed
                    && let Some(edits) = edits.as_deref_mut()
                    && edits.put(store, id, us, &point.value)?
                {
                    continue;
                }
                batch.insert(&store.head, micros_key(id, us), point.value.encode());
                state.note_head(id, us);
            }
            Write::Touch { key, point } => {
                let mut v = time_to_sortable(point.time).to_vec();
                point.value.encode_into(&mut v);
                batch.insert(&store.touched, key.as_bytes(), v);
            }
            Write::Def { key, def } => {
                let json = serde_json::to_vec(def).map_err(|e| Error::Storage(e.to_string()))?;
                batch.insert(&store.defs, key.as_bytes(), json);
            }
            Write::DeleteKey { key } => {
                batch.remove(&store.defs, key.as_bytes());
                batch.remove(&store.touched, key.as_bytes());
                batch.remove(&store.compaction, key.as_bytes());
                if let Some(id) = state.ids.remove(key) {
                    state.names.remove(&id);
                    batch.remove(&store.keys, key.as_bytes());
                    state.sealed_end.remove(&id);
                    state.heads.remove(&id);
                    state.counts.remove(&id);
                    batch.remove(&store.counts, id.to_be_bytes());
                    if let Some(edits) = edits.as_deref_mut() {
                        edits.chunks.retain(|(i, _), _| *i != id);
                    }
                    let prefix = id.to_be_bytes();
                    // One delete per chunk, not per point.
                    for ks in [
                        &store.chunks,
                        &store.chunk_summaries,
                        &store.head,
                        &store.summaries,
                        &store.gaps,
                    ] {
                        for guard in ks.prefix(prefix) {
                            batch.remove(ks, guard.key()?);
                        }
                    }
                }
            }
            Write::DeleteRaw { key, from, until } => {
                let Some(&id) = state.ids.get(key) else {
                    continue;
                };
                let (lo, hi) = micros_bounds(*from, *until);
                for g in store.head.range(micros_key(id, lo)..=micros_key(id, hi)) {
                    let k = g.key()?;
                    let t = micros_to_time(micros_in_key(&k)?);
                    if *from <= t && t < *until {
                        batch.remove(&store.head, k);
                    }
                }
                if let Some(edits) = edits.as_deref_mut() {
                    edits.delete(store, id, *from, *until)?;
                }
                cut.push(id);
            }
            Write::Summary {
                key,
                step,
                start,
                summary,
            } => {
                let id = state.id(store, batch, key);
                batch.insert(
                    &store.summaries,
                    summary_key(id, *step, *start),
                    summary.as_slice(),
                );
            }
            Write::DeleteSummary { key, step, start } => {
                if let Some(&id) = state.ids.get(key) {
                    batch.remove(&store.summaries, summary_key(id, *step, *start));
                }
            }
            Write::Gap { key, gap } => {
                let id = state.id(store, batch, key);
                batch.insert(&store.gaps, gap_key(id, gap.start), gap.encode());
            }
            Write::DeleteGap { key, start } => {
                if let Some(&id) = state.ids.get(key) {
                    batch.remove(&store.gaps, gap_key(id, *start));
                }
            }
            Write::Compaction { key, state: c } => {
                let json = serde_json::to_vec(c).map_err(|e| Error::Storage(e.to_string()))?;
                batch.insert(&store.compaction, key.as_bytes(), json);
            }
            Write::Policy { pattern, spec } => match spec {
                Some(spec) => {
                    let json =
                        serde_json::to_vec(spec).map_err(|e| Error::Storage(e.to_string()))?;
                    batch.insert(&store.policies, pattern.as_bytes(), json);
                }
                None => batch.remove(&store.policies, pattern.as_bytes()),
            },
        }
    }
    Ok(())
}
