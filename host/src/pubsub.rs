//! Subscriptions: which connections want pushes for which keys.
//!
//! A push is built once per change, and only for a key someone wants ([`PubSub::wanted`]),
//! then handed to every subscriber's outgoing queue, bounded both in frames and in bytes.
//! A subscriber whose queue is full (it reads too slowly) is cut off — its connection is
//! told to close — instead of letting the server's memory grow.
//!
//! Every push of a key carries a sequence number, consecutive per key since the server
//! started. Subscribers that ask for it (`sub` with `seq` or `since`) receive it as the
//! push's `seq` field, so they can tell a lost or duplicated push; a subscription that began
//! with the key's history skips the pushes that history already holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies one client connection.
pub type ConnId = u64;

/// The push side of one connection.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    /// Ready JSON text frames. The queue's length bounds how many wait.
    pub tx: mpsc::Sender<Arc<str>>,
    /// Cancelled when the connection fell behind and must close.
    pub kick: CancellationToken,
    /// Bytes of the frames waiting in `tx`: the connection takes a frame's length off when
    /// it sends one ([`Subscriber::sent`]).
    queued: Arc<AtomicUsize>,
    /// Most bytes that may wait in `tx`; one frame alone always may, however large.
    max_queued_bytes: usize,
}

impl Subscriber {
    /// The push side of connection `conn`: frames go to `tx`, at most `max_queued_bytes` of
    /// them waiting at once.
    pub fn new(conn: ConnId, tx: mpsc::Sender<Arc<str>>, max_queued_bytes: usize) -> Subscriber {
        Subscriber {
            conn,
            tx,
            kick: CancellationToken::new(),
            queued: Arc::default(),
            max_queued_bytes,
        }
    }

    /// The connection took `frame` off its queue.
    pub fn sent(&self, frame: &str) {
        self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
    }

    /// Bytes waiting in the queue now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `frame`, or tells the connection to close when its queue is full (by count or
    /// by bytes). Never blocks.
    fn offer(&self, frame: Arc<str>, key: &str) -> bool {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.max_queued_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.too_slow(key);
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                if let mpsc::error::TrySendError::Full(_) = e {
                    self.too_slow(key);
                }
                false
            }
        }
    }

    fn too_slow(&self, key: &str) {
        if !self.kick.is_cancelled() {
            tracing::warn!(
                conn = self.conn,
                key,
                "subscriber reads too slowly; disconnecting it"
            );
            self.kick.cancel();
        }
    }
}

/// One connection's subscription to one key.
#[derive(Clone)]
struct Subscription {
    sub: Subscriber,
    /// Pushes carry `seq`.
    numbered: bool,
    /// Pushes with a sequence number up to this one are skipped (the subscriber got them
    /// as history).
    after: u64,
}

/// One change of a key, ready to be pushed.
pub struct Push {
    /// The key's sequence number for this change.
    pub seq: u64,
    /// The `{"pub": {...}}` frame.
    pub frame: Arc<str>,
    /// The same frame with `seq` in it.
    pub numbered: Arc<str>,
}

/// Which keys a watcher wants.
pub type KeyFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Key → subscribers.
#[derive(Default)]
pub struct PubSub {
    subs: RwLock<HashMap<String, HashMap<ConnId, Subscription>>>,
    /// Subscribers to every key a filter takes (a bridge publishing a key pattern).
    watchers: RwLock<Vec<(KeyFilter, Subscriber)>>,
    next_conn: AtomicU64,
    pushes_sent: AtomicU64,
    pushes_dropped: AtomicU64,
}

impl PubSub {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Subscribes a connection to a key (a key that does not exist yet is fine). Pushes
    /// numbered up to `after` are skipped; `numbered` puts `seq` in the pushes.
    pub fn subscribe(&self, key: &str, sub: Subscriber, numbered: bool, after: u64) {
        if let Ok(mut subs) = self.subs.write() {
            subs.entry(key.to_string()).or_default().insert(
                sub.conn,
                Subscription {
                    sub,
                    numbered,
                    after,
                },
            );
        }
    }

    /// Ends one subscription.
    pub fn unsubscribe(&self, key: &str, conn: ConnId) {
        if let Ok(mut subs) = self.subs.write()
            && let Some(set) = subs.get_mut(key)
        {
            set.remove(&conn);
            if set.is_empty() {
                subs.remove(key);
            }
        }
    }

    /// Pushes every change of a key that `filter` takes to `sub` (unnumbered), including
    /// keys created later, until [`PubSub::drop_connection`].
    pub fn watch(&self, sub: Subscriber, filter: KeyFilter) {
        if let Ok(mut w) = self.watchers.write() {
            w.push((filter, sub));
        }
    }

    /// Ends every subscription of a connection (it disconnected).
    pub fn drop_connection(&self, conn: ConnId) {
        if let Ok(mut w) = self.watchers.write() {
            w.retain(|(_, sub)| sub.conn != conn);
        }
        if let Ok(mut subs) = self.subs.write() {
            subs.retain(|_, set| {
                set.remove(&conn);
                !set.is_empty()
            });
        }
    }

    /// Whether a connection is subscribed to `key` itself (watchers of patterns aside).
    pub fn has_subscribers(&self, key: &str) -> bool {
        self.subs.read().is_ok_and(|s| s.contains_key(key))
    }

    /// How many subscriptions exist right now.
    pub fn count(&self) -> usize {
        self.subs
            .read()
            .map(|s| s.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    /// Total pushes queued since start.
    pub fn pushes_sent(&self) -> u64 {
        self.pushes_sent.load(Ordering::Relaxed)
    }

    /// Total pushes not queued since start (the subscriber's queue was full: it is closed
    /// as too slow).
    pub fn pushes_dropped(&self) -> u64 {
        self.pushes_dropped.load(Ordering::Relaxed)
    }

    /// Whether any connection or watcher wants pushes of `key` now: a change nobody wants
    /// is not formatted at all.
    pub fn wanted(&self, key: &str) -> bool {
        self.subs.read().is_ok_and(|s| s.contains_key(key))
            || self
                .watchers
                .read()
                .is_ok_and(|w| w.iter().any(|(filter, _)| filter(key)))
    }

    /// Queues a push for every subscriber of `key`. Never blocks.
    pub fn publish(&self, key: &str, push: &Push) {
        if let Ok(watchers) = self.watchers.read() {
            for (filter, sub) in watchers.iter() {
                if !filter(key) {
                    continue;
                }
                if sub.offer(push.frame.clone(), key) {
                    self.pushes_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.pushes_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let Ok(subs) = self.subs.read() else { return };
        let Some(set) = subs.get(key) else { return };
        for Subscription {
            sub,
            numbered,
            after,
        } in set.values()
        {
            if push.seq <= *after {
                continue;
            }
            let frame = if *numbered {
                push.numbered.clone()
            } else {
                push.frame.clone()
            };
            if sub.offer(frame, key) {
                self.pushes_sent.fetch_add(1, Ordering::Relaxed);
            } else {
                self.pushes_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
