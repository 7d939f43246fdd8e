//! The one writer thread: group commit.
//!
//! Callers queue [`WriteBatch`]es. The thread takes the first one, then everything else
//! already queued (up to [`MAX_GROUP`]), commits them as one fjall batch and, with
//! [`Durability::Sync`], fsyncs the journal once for the whole group. Only then does it run
//! each batch's `after` hook (publishing the change) and wake its caller, in queue order.
//!
//! A failed commit or fsync is fatal: the thread reports it once through `on_fatal` (the
//! server shuts down rather than lie about durability) and refuses every later write.

use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use fjall::PersistMode;
use tokio::sync::oneshot;

use super::{Gap, KeyDef, Store, gap_key, key_prefix, point_key, summary_key};
use crate::error::{Error, Result};
use crate::retention::{CompactionState, PolicySpec};
use crate::value::{Point, Time, time_to_sortable};

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
    /// Remove one point.
    DeletePoint { key: String, time: Time },
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
    loop {
        let first = match durability {
            Durability::Sync => match rx.recv() {
                Ok(Msg::Job(job)) => job,
                Ok(Msg::Stop) | Err(_) => break,
            },
            Durability::Interval(every) => {
                let wait = unsynced_since.map_or(every, |t| every.saturating_sub(t.elapsed()));
                match rx.recv_timeout(wait) {
                    Ok(Msg::Job(job)) => job,
                    Ok(Msg::Stop) => break,
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
            None => commit(&store, &group, durability),
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
            break;
        }
    }
    // Stopped, or every sender is gone: make what was committed durable before ending.
    if failed.is_none()
        && let Err(e) = store.db.persist(PersistMode::SyncAll)
    {
        tracing::error!(error = %e, "final journal fsync failed");
    }
    tracing::debug!("writer thread stopped");
}

fn fail(failed: &mut Option<String>, on_fatal: &dyn Fn(&Error), e: Error) {
    tracing::error!(error = %e, "storage write failed; refusing further writes");
    on_fatal(&e);
    *failed = Some(e.to_string());
}

fn commit(store: &Store, group: &[Job], durability: Durability) -> Result<()> {
    if group.iter().all(|job| job.batch.writes.is_empty()) {
        return Ok(()); // only barriers: everything before them is already committed
    }
    let mut batch = store.db.batch();
    for job in group {
        for write in &job.batch.writes {
            match write {
                Write::Point { key, point } => {
                    batch.insert(
                        &store.points,
                        point_key(key, point.time),
                        point.value.encode(),
                    );
                }
                Write::Touch { key, point } => {
                    let mut v = time_to_sortable(point.time).to_vec();
                    point.value.encode_into(&mut v);
                    batch.insert(&store.touched, key.as_bytes(), v);
                }
                Write::Def { key, def } => {
                    let json =
                        serde_json::to_vec(def).map_err(|e| Error::Storage(e.to_string()))?;
                    batch.insert(&store.defs, key.as_bytes(), json);
                }
                Write::DeleteKey { key } => {
                    batch.remove(&store.defs, key.as_bytes());
                    batch.remove(&store.touched, key.as_bytes());
                    batch.remove(&store.compaction, key.as_bytes());
                    for guard in store.points.prefix(key_prefix(key)) {
                        batch.remove(&store.points, guard.key()?);
                    }
                    for guard in store.summaries.prefix(key_prefix(key)) {
                        batch.remove(&store.summaries, guard.key()?);
                    }
                    for guard in store.gaps.prefix(key_prefix(key)) {
                        batch.remove(&store.gaps, guard.key()?);
                    }
                }
                Write::DeletePoint { key, time } => {
                    batch.remove(&store.points, point_key(key, *time));
                }
                Write::Summary {
                    key,
                    step,
                    start,
                    summary,
                } => {
                    batch.insert(
                        &store.summaries,
                        summary_key(key, *step, *start),
                        summary.as_slice(),
                    );
                }
                Write::DeleteSummary { key, step, start } => {
                    batch.remove(&store.summaries, summary_key(key, *step, *start));
                }
                Write::Gap { key, gap } => {
                    batch.insert(&store.gaps, gap_key(key, gap.start), gap.encode());
                }
                Write::DeleteGap { key, start } => {
                    batch.remove(&store.gaps, gap_key(key, *start));
                }
                Write::Compaction { key, state } => {
                    let json =
                        serde_json::to_vec(state).map_err(|e| Error::Storage(e.to_string()))?;
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
    }
    batch.commit()?;
    if durability == Durability::Sync {
        store.db.persist(PersistMode::SyncAll)?;
    } else {
        // Hand the journal to the OS so a killed process loses nothing acknowledged.
        store.db.persist(PersistMode::Buffer)?;
    }
    Ok(())
}
