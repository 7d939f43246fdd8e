//! Automatic values (an uptime key going false `max_time` after its last `true`): one
//! ordered set of `(due time, key)` and one task, however many keys are armed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Db;
use crate::value::{Time, now, time_to_sortable};

/// Longest single sleep of the scheduler task.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub(super) struct Scheduler {
    queue: Mutex<BTreeSet<([u8; 8], String)>>,
    wake: Arc<Notify>,
}

impl Scheduler {
    /// Arms `name` for `at`.
    pub(super) fn arm(&self, name: &str, at: Time) {
        let mut became_first = false;
        if let Ok(mut q) = self.queue.lock() {
            let entry = (time_to_sortable(at), name.to_string());
            became_first = q.first().is_none_or(|first| entry < *first);
            q.insert(entry);
        }
        if became_first {
            self.wake.notify_one();
        }
    }

    /// Disarms `name` for `at` (a no-op if it was not armed for it).
    pub(super) fn disarm(&self, name: &str, at: Time) {
        if let Ok(mut q) = self.queue.lock() {
            q.remove(&(time_to_sortable(at), name.to_string()));
        }
    }

    /// Removes and returns every entry due by `t`, or how long until the next one.
    fn take_due(&self, t: Time) -> (Vec<(Time, String)>, Option<Time>) {
        let Ok(mut q) = self.queue.lock() else {
            return (Vec::new(), None);
        };
        let mut due = Vec::new();
        while let Some((at, _)) = q.first() {
            let at = crate::value::time_from_sortable(*at);
            if at > t {
                return (due, Some(at));
            }
            if let Some((_, name)) = q.pop_first() {
                due.push((at, name));
            }
        }
        (due, None)
    }
}

/// The scheduler task: sleeps until the earliest due time, writes what fell due, repeats.
/// Ends when the database is dropped.
pub(super) async fn run(db: Weak<Db>) {
    loop {
        let Some(strong) = db.upgrade() else { return };
        let (due, next) = strong.scheduler.take_due(now());
        if !due.is_empty() {
            // Queue every due value first, then wait: they share group commits, so a
            // thousand expiries at once cost a few fsyncs, not a thousand.
            let mut queued = Vec::with_capacity(due.len());
            for (at, name) in due {
                match strong.fire(&name, at).await {
                    Ok(durable) => queued.push((name, durable)),
                    Err(e) => {
                        tracing::error!(key = %name, error = %e, "automatic value not written")
                    }
                }
            }
            for (name, durable) in queued {
                if let Err(e) = durable.wait().await {
                    tracing::error!(key = %name, error = %e, "automatic value not written");
                }
            }
            continue;
        }
        // Sleep at most an hour at a time: a due time decades away (or one too large for a
        // Duration) is simply looked at again later.
        let wait = next.map(|at| {
            Duration::try_from_secs_f64((at - now()).max(0.0))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP)
        });
        let notify = strong.scheduler.wake.clone();
        let wake = notify.notified();
        drop(strong);
        match wait {
            Some(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake => {}
                }
            }
            None => wake.await,
        }
    }
}
