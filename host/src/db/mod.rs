//! The database: keys, their latest values, and every change to them.
//!
//! Each key has a slot holding its definition, the options its plugin completed, its latest
//! point and its pending automatic value. Operations on one key are serialised by the slot's
//! lock, which is held while the plugin decides and the write is *queued* — not while it is
//! fsynced — so one key's operations are applied in order while many keys' writes share an
//! fsync. A change is published by the writer thread once it is durable, in write order.

mod adopt;
mod chunk_summaries;
mod compaction;
mod export;
mod scheduler;
mod table;
mod transfer;

pub use compaction::RunReport;
pub use export::{ExportCursor, ExportItem, ExportPage};
pub use transfer::TierPage;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value as Json};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::plugins::{Operation, Plugin, Registry, Scheduled};
use crate::pubsub::{PubSub, Push, Subscriber};
use crate::retention::{Policy, PolicySpec};
use crate::stats::Stats;
use crate::store::{KeyDef, Store, Write, WriteBatch, Writer, check_key_name};
use crate::value::{Input, Point, Time, micros_to_time, now, quantize_time, time_to_micros};

use scheduler::Scheduler;
use table::{Held, KeyTable, Slot};

/// `{"pub": {...}}`, a push frame.
#[derive(serde::Serialize)]
struct PubFrame<'a> {
    #[serde(rename = "pub")]
    pubs: PubBody<'a>,
}

#[derive(serde::Serialize)]
struct PubBody<'a> {
    key: &'a str,
    previous: &'a Json,
    previous_value: &'a Json,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    time: &'a Json,
    value: &'a Json,
}

/// Most points one answer holds: a `sub` with history here, and `query`'s `last` and
/// `spans` and a raw `fetch` (see [`crate::query`]); more needs a narrower window.
pub const MAX_POINTS: usize = 10_000;

/// Everything known about one key.
struct KeyState {
    /// `None` while the key does not exist (never created, or deleted).
    def: Option<KeyDef>,
    /// The options as the serving version of its type completed them (JSON object text);
    /// empty until a version of its type has taken the key.
    effective: String,
    latest: Option<Point>,
    /// The latest operation that was acknowledged but not stored, when newer than `latest`:
    /// it still refreshes automatic values.
    touched: Option<Point>,
    schedule: Option<Scheduled>,
    /// The sequence number of the key's latest push (see [`crate::pubsub`]). Kept when the
    /// key is deleted, so numbers never repeat within a run.
    seq: u64,
    /// Raw points are authoritative from here on; earlier history is compacted, and a put
    /// before it is refused (`compacted`). `-inf` while nothing is compacted.
    raw_from: Time,
    /// The key's summary and gap rows (its stored compaction state's counts), so `stats`
    /// stays exact when the key is deleted.
    summary_rows: u64,
    gap_rows: u64,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            def: None,
            effective: String::new(),
            latest: None,
            touched: None,
            schedule: None,
            seq: 0,
            raw_from: f64::NEG_INFINITY,
            summary_rows: 0,
            gap_rows: 0,
        }
    }
}

impl KeyState {
    /// The point automatic values are counted from: the newest operation, stored or not.
    fn reference(&self) -> Option<&Point> {
        match (&self.latest, &self.touched) {
            (Some(l), Some(t)) => Some(if t.time > l.time { t } else { l }),
            (l, t) => l.as_ref().or(t.as_ref()),
        }
    }
}

/// A write that was queued and may not be durable yet. Await [`Durable::wait`] before
/// acknowledging it.
#[must_use = "a write is only acknowledged once durable"]
pub struct Durable(Option<tokio::sync::oneshot::Receiver<Result<()>>>);

impl Durable {
    /// Nothing to wait for.
    pub fn done() -> Durable {
        Durable(None)
    }

    /// Resolves once the write is on disk as the durability mode promises.
    pub async fn wait(self) -> Result<()> {
        match self.0 {
            Some(rx) => rx.await.unwrap_or(Err(Error::ShuttingDown)),
            None => Ok(()),
        }
    }
}

/// A key as `keys` lists it.
#[derive(Debug, Clone)]
pub struct KeyListing {
    pub def: KeyDef,
    pub latest: Option<Point>,
}

/// The shared state of a running Komoku.
pub struct Db {
    add_creates: Option<String>,
    store: Store,
    writer: Writer,
    registry: Arc<Registry>,
    pubsub: Arc<PubSub>,
    stats: Stats,
    keys: KeyTable,
    scheduler: Scheduler,
    /// The configured default retention policy (a config reload may change it).
    default_policy: RwLock<(PolicySpec, Policy)>,
    /// The times a write may carry.
    times: TimeWindow,
    /// Policies set by requests, by key name or pattern.
    policies: RwLock<Vec<(String, (PolicySpec, Policy))>>,
    compaction: compaction::CompactionStats,
    /// One compaction run at a time.
    compact_lock: Mutex<()>,
    /// Each key's type and options, for the summaries of the chunks the writer stores.
    chunk_keys: Arc<chunk_summaries::ChunkKeys>,
    /// The snapshots exports read from.
    snapshots: export::Snapshots,
}

/// How a [`Db`] keeps history: which times it takes, how it compacts.
#[derive(Debug, Clone)]
pub struct Retention {
    /// The policy of keys no stored policy matches.
    pub default: PolicySpec,
    /// How often the background run starts; `None` = only when asked (`compact`).
    pub every: Option<std::time::Duration>,
    /// The times a write may carry.
    pub times: TimeWindow,
}

/// The times a write may carry: from `earliest` (seconds since the epoch) to `ahead` seconds
/// after the server's clock. Anything else is refused with `invalid_time`: a point far in the
/// future would hold every later put without a time behind it (they go after the newest
/// point), and one far in the past would make compaction walk the years between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeWindow {
    /// Default = 0 (1970-01-01).
    pub earliest: Time,
    /// Default = 86 400 (a day).
    pub ahead: f64,
}

impl Default for TimeWindow {
    fn default() -> Self {
        TimeWindow {
            earliest: 0.0,
            ahead: 86_400.0,
        }
    }
}

impl TimeWindow {
    /// `t` if a write may carry it at time `now` (`-0` as `0`), else `invalid_time`.
    pub fn check(&self, t: Time, now: Time) -> Result<Time> {
        let latest = now + self.ahead;
        if !t.is_finite() || t < self.earliest || t > latest {
            return Err(Error::InvalidTime(format!(
                "time {t} is outside the accepted window [{}, {latest}] (seconds since the \
                 epoch: not before {}, at most {} s after the server's clock); milliseconds \
                 sent as seconds land far in the future",
                self.earliest, self.earliest, self.ahead
            )));
        }
        Ok(t + 0.0)
    }
}

impl Db {
    /// Loads every key from the store and starts the scheduler. From then on each version of
    /// a type that loads into `registry` takes the type's keys over (module `adopt`): it gives
    /// them their options and re-arms their pending automatic values (writing, at their past
    /// time, those that fell due while the server was down); a version that cannot take them
    /// does not load. So load the plugins after this (on a blocking thread).
    /// `add_creates`: the type of a key created by an `increment` (see
    /// [`crate::Config::increment_creates`]).
    pub async fn open(
        store: Store,
        writer: Writer,
        registry: Arc<Registry>,
        add_creates: Option<String>,
        retention: Retention,
    ) -> Result<Arc<Db>> {
        let default_policy = (retention.default.clone(), retention.default.policy()?);
        let policies = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.load_policies())
                .await
                .map_err(|e| Error::Storage(format!("loading policies: {e}")))??
        };
        let mut checked = Vec::new();
        for (pattern, spec) in policies {
            match spec.policy() {
                Ok(policy) => checked.push((pattern, (spec, policy))),
                Err(e) => tracing::warn!(%pattern, error = %e, "stored policy ignored"),
            }
        }
        let chunk_keys = Arc::new(chunk_summaries::ChunkKeys::new(registry.clone()));
        store.set_summarizer(chunk_keys.clone());
        let db = Arc::new(Db {
            chunk_keys,
            add_creates,
            store: store.clone(),
            writer,
            registry,
            pubsub: Arc::new(PubSub::default()),
            stats: Stats::default(),
            keys: KeyTable::default(),
            scheduler: Scheduler::default(),
            default_policy: RwLock::new(default_policy),
            times: retention.times,
            policies: RwLock::new(checked),
            compaction: compaction::CompactionStats::default(),
            compact_lock: Mutex::new(()),
            snapshots: export::Snapshots::default(),
        });
        let defs = tokio::task::spawn_blocking(move || {
            let defs = store.load_defs()?;
            defs.into_iter()
                .map(|(name, def)| {
                    let latest = store.last_point(&name)?;
                    let touched = store.touched(&name)?;
                    let view = store.view();
                    let compaction = view.compaction_state(&name)?;
                    let raw_from = compaction
                        .as_ref()
                        .map_or(f64::NEG_INFINITY, |s| s.raw_from);
                    let rows = match compaction {
                        None => (0, 0),
                        Some(s) => match s.summaries {
                            Some(n) => (n, s.gaps),
                            // Compacted before rows were counted: counted once, here.
                            None => {
                                let mut n = 0;
                                for tier in &s.tiers {
                                    n += view.count_summaries(&name, tier.step)?;
                                }
                                (n, s.gaps)
                            }
                        },
                    };
                    Ok((name, def, latest, touched, raw_from, rows))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Storage(format!("loading keys: {e}")))??;

        let count = defs.len();
        for (name, def, latest, touched, raw_from, (summary_rows, gap_rows)) in defs {
            db.compaction.add_rows(summary_rows, gap_rows);
            // Its options and automatic value come when a version of its type loads.
            let state = KeyState {
                def: Some(def),
                latest,
                touched,
                raw_from,
                summary_rows,
                gap_rows,
                ..KeyState::default()
            };
            db.keys.insert_loaded(&name, state)?;
        }
        db.registry
            .set_keys(Arc::new(adopt::KeyBook(Arc::downgrade(&db))));
        tracing::info!(keys = count, "keys loaded");
        tokio::spawn(scheduler::run(Arc::downgrade(&db)));
        if let Some(every) = retention.every {
            tokio::spawn(compaction::run(Arc::downgrade(&db), every));
        }
        Ok(db)
    }

    /// Replaces the configured default retention (a config reload); it applies to existing
    /// data at the next compaction run, as a restart with the new config would.
    pub fn set_default_retention(&self, spec: PolicySpec, policy: Policy) {
        if let Ok(mut d) = self.default_policy.write() {
            *d = (spec, policy);
        }
    }

    /// The configured default retention.
    fn default_policy(&self) -> (PolicySpec, Policy) {
        self.default_policy
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The subscription registry.
    pub fn pubsub(&self) -> &Arc<PubSub> {
        &self.pubsub
    }

    /// Operation counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The loaded key types.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Stops the writer after making everything queued durable; later writes fail with
    /// `shutting_down`. Part of an orderly shutdown.
    pub async fn close(&self) -> Result<()> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer.close())
            .await
            .map_err(|e| Error::Storage(format!("closing the writer: {e}")))
    }

    /// The storage engine, for tools and benchmarks (flushing, sizes).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits until every write queued so far is in the store (see [`Writer::barrier`]).
    pub async fn settled(&self) -> Result<()> {
        self.writer.barrier().await
    }

    /// The slot of `name`, if the table holds one. Only for a key that exists: a slot
    /// holding no key may leave the table at any time (see [`Db::lock_key`]).
    fn slot(&self, name: &str) -> Option<Slot> {
        self.keys.get(name)
    }

    /// Locks the state of `name`, making a slot for it if there is none. Hand it back with
    /// [`Db::unlock_key`].
    async fn lock_key(&self, name: &str) -> Result<(Held, bool)> {
        let held = self
            .keys
            .lock(name, true)
            .await?
            .ok_or_else(|| Error::Storage("key table refused a slot".into()))?;
        let existed = held.def.is_some();
        Ok((held, existed))
    }

    /// Hands back a key's state locked by [`Db::lock_key`] (`existed`: whether the key
    /// existed then): counts a key created or deleted meanwhile, and frees the slot if it
    /// holds no key and no subscriber counts on its push numbers.
    fn unlock_key(&self, name: &str, held: Held, existed: bool) {
        match (existed, held.def.is_some()) {
            (false, true) => self.keys.created(),
            (true, false) => self.keys.deleted(),
            _ => {}
        }
        self.keys
            .release(name, held, || self.pubsub.has_subscribers(name));
    }

    fn plugin_of(&self, state: &KeyState) -> Result<Arc<Plugin>> {
        let def = state
            .def
            .as_ref()
            .ok_or_else(|| Error::UnknownKey(String::new()))?;
        self.registry.get(&def.type_name)
    }

    /// Sets a key's value (a `put`). A key that does not exist is created with the type that
    /// claims the value most strongly. `time` defaults to now (see [`next_time`]) and must lie
    /// in the configured [`TimeWindow`] (else `invalid_time`). The write is queued in order
    /// with the key's other operations; await the returned [`Durable`] before acknowledging.
    pub async fn put(
        &self,
        name: &str,
        value: &Json,
        time: Option<Time>,
        create: bool,
    ) -> Result<Durable> {
        let input = Input::from_json(value).ok_or_else(|| Error::Refused {
            code: "invalid_value".into(),
            message: "a value must be a JSON scalar (number, string, boolean or null)".into(),
        })?;
        self.operate(name, Operation::Set(input), time, create)
            .await
    }

    /// Adds `step` to a key's value (`increment`/`decrement`). A missing key is created with
    /// the configured type (default `counter`), or refused with `unknown_key` if none is.
    pub async fn add(&self, name: &str, step: f64, create: bool) -> Result<Durable> {
        if !step.is_finite() {
            return Err(Error::query("step must be a finite number"));
        }
        self.operate(name, Operation::Add(step), None, create).await
    }

    /// `create`: whether the operation may create a missing key (else `forbidden`, for the
    /// define permission it lacks).
    async fn operate(
        &self,
        name: &str,
        op: Operation,
        time: Option<Time>,
        create: bool,
    ) -> Result<Durable> {
        check_key_name(name)?;
        // Times are stored to the microsecond: keep the one that will be read back.
        let time = time
            .map(|t| self.times.check(t, now()).map(quantize_time))
            .transpose()?;
        let (mut held, existed) = self.lock_key(name).await?;
        let done = self.operate_locked(name, &mut held, op, time, create);
        self.unlock_key(name, held, existed);
        done
    }

    /// [`Db::operate`] on the locked state of the key.
    fn operate_locked(
        &self,
        name: &str,
        state: &mut KeyState,
        op: Operation,
        time: Option<Time>,
        create: bool,
    ) -> Result<Durable> {
        let mut writes = Vec::with_capacity(2);

        let plugin = if state.def.is_some() {
            self.plugin_of(state)?
        } else if !create {
            return Err(Error::Forbidden {
                permission: "define",
                key: name.to_string(),
            });
        } else {
            let plugin = match &op {
                Operation::Set(input) => {
                    self.registry.guess(input)?.ok_or_else(|| Error::Refused {
                        code: "invalid_value".into(),
                        message: "no key type accepts this value for a new key".into(),
                    })?
                }
                Operation::Add(_) => match &self.add_creates {
                    Some(type_name) => self.registry.get(type_name)?,
                    None => return Err(Error::UnknownKey(name.to_string())),
                },
            };
            let def = KeyDef {
                type_name: plugin.info.name.clone(),
                opts: Map::new(),
            };
            let effective = plugin.check_options("{}")?;
            self.chunk_keys.set(name, &plugin.info.name, &effective);
            writes.push(Write::Def {
                key: name.to_string(),
                def: def.clone(),
            });
            // Only kept if the operation succeeds (below). A deleted key's push numbers go on.
            *state = KeyState {
                def: Some(def),
                effective,
                seq: state.seq,
                ..KeyState::default()
            };
            plugin
        };
        let created = !writes.is_empty();

        if let Some(t) = time
            && t < state.raw_from
        {
            // Compacted history is summaries: a point cannot be added to it.
            return Err(Error::Refused {
                code: "compacted".into(),
                message: format!(
                    "time {t} is before {}, where this key's history is compacted",
                    state.raw_from
                ),
            });
        }
        let time = time.unwrap_or_else(|| next_time(now(), state.latest.as_ref()));
        let outcome = plugin.apply(&state.effective, state.latest.as_ref(), &op, time);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if created {
                    // The key is only created if its first operation succeeds.
                    state.def = None;
                }
                return Err(e);
            }
        };

        // A point older than the latest one fills in history; it changes nothing current.
        let backfill = state.latest.as_ref().is_some_and(|l| time < l.time);
        let point = Point {
            time,
            value: outcome.value,
        };
        let mut after = None;
        if outcome.store {
            writes.push(Write::Point {
                key: name.to_string(),
                point: point.clone(),
            });
            if !backfill {
                let previous = state.latest.replace(point.clone());
                if previous.as_ref().is_none_or(|p| p.value != point.value) {
                    state.seq += 1;
                    after = self.publisher(name, &point, previous.as_ref(), state.seq);
                }
            }
        }
        if !backfill {
            if outcome.store {
                state.touched = None;
            } else if outcome.schedule != state.schedule {
                // Not stored, but it moved an automatic value: remember it across restarts.
                writes.push(Write::Touch {
                    key: name.to_string(),
                    point: point.clone(),
                });
                state.touched = Some(point);
            }
            self.set_schedule(name, state, outcome.schedule);
        }
        Ok(Durable(
            (!writes.is_empty()).then(|| self.writer.submit(WriteBatch { writes, after })),
        ))
    }

    fn set_schedule(&self, name: &str, state: &mut KeyState, schedule: Option<Scheduled>) {
        if state.schedule == schedule {
            return;
        }
        if let Some(old) = &state.schedule {
            self.scheduler.disarm(name, old.at);
        }
        if let Some(new) = &schedule {
            self.scheduler.arm(name, new.at);
        }
        state.schedule = schedule;
    }

    /// A hook that publishes a change (the key's `seq`th) once it is durable; `None` when
    /// nobody subscribes to the key, so no frame is built for it. (A subscription made
    /// after this moment starts after this change: a plain `sub` is not promised pushes of
    /// writes queued before it, and `sub` with history skips numbers up to the key's `seq`.)
    fn publisher(
        &self,
        name: &str,
        point: &Point,
        previous: Option<&Point>,
        seq: u64,
    ) -> Option<Box<dyn FnOnce() + Send>> {
        if !self.pubsub.wanted(name) {
            return None;
        }
        let value = point.value.to_json();
        let previous = previous.map_or(Json::Null, |p| p.value.to_json());
        let time = crate::value::number_json(point.time);
        let frame = |seq| {
            // Written straight into the frame's text; fields in the order the JSON object
            // form always had (sorted).
            let body = PubBody {
                key: name,
                previous: &previous,
                previous_value: &previous,
                seq,
                time: &time,
                value: &value,
            };
            serde_json::to_string(&PubFrame { pubs: body }).map(Arc::<str>::from)
        };
        let (Ok(plain), Ok(numbered)) = (frame(None), frame(Some(seq))) else {
            tracing::error!(key = name, "a push frame could not be written");
            return None;
        };
        let push = Push {
            seq,
            frame: plain,
            numbered,
        };
        let pubsub = self.pubsub.clone();
        let name = name.to_string();
        Some(Box::new(move || pubsub.publish(&name, &push)))
    }

    /// Subscribes a connection to a key's pushes from now on.
    pub fn subscribe(&self, name: &str, sub: Subscriber, numbered: bool) {
        self.pubsub.subscribe(name, sub, numbered, 0);
    }

    /// Subscribes a connection to a key and returns the key's points since `since` (at most
    /// [`MAX_POINTS`]) with the sequence number of the last change they hold.
    /// Pushes follow from the next number on: none lost, none repeated.
    pub async fn subscribe_with_history(
        &self,
        name: &str,
        sub: Subscriber,
        since: Time,
    ) -> Result<(u64, Vec<Point>)> {
        check_key_name(name)?;
        // The key's lock keeps new changes out until the history is read: changes numbered
        // up to `seq` are all queued, so once they are in the store the history holds them,
        // and later ones (pushed) are not in it.
        let cap = MAX_POINTS;
        let (held, existed) = self.lock_key(name).await?;
        let seq = held.seq;
        let conn = sub.conn;
        self.pubsub.subscribe(name, sub, true, seq);
        let read = async {
            self.settled().await?;
            let store = self.store.clone();
            let key = name.to_string();
            tokio::task::spawn_blocking(move || {
                store.range_rev(&key, since, f64::INFINITY, cap + 1)
            })
            .await
            .map_err(|e| Error::Storage(format!("reading history: {e}")))?
        };
        let points = read.await;
        self.unlock_key(name, held, existed);
        let points = points?;
        if points.len() > cap {
            self.pubsub.unsubscribe(name, conn);
            return Err(Error::LimitExceeded(format!(
                "more than {cap} points since {since}: subscribe from a later time"
            )));
        }
        let mut points = points;
        points.reverse();
        Ok((seq, points))
    }

    /// Queues a key's due automatic value, if it is still pending for `at`.
    async fn fire(&self, name: &str, at: Time) -> Result<Durable> {
        // An armed key exists: its slot stays in the table.
        let Some(mut state) = self.keys.lock(name, false).await? else {
            return Ok(Durable::done());
        };
        let Some(scheduled) = state.schedule.clone().filter(|s| s.at == at) else {
            return Ok(Durable::done());
        };
        let plugin = self.plugin_of(&state)?;
        let point = Point {
            time: quantize_time(scheduled.at),
            value: scheduled.value,
        };
        let next = plugin.reschedule(&state.effective, &point)?;
        let previous = state.latest.replace(point.clone());
        let changed = previous.as_ref().is_none_or(|p| p.value != point.value);
        let after = if changed {
            state.seq += 1;
            self.publisher(name, &point, previous.as_ref(), state.seq)
        } else {
            None
        };
        state.schedule = None;
        self.set_schedule(name, &mut state, next.filter(|n| n.at > at));
        Ok(Durable(Some(self.writer.submit(WriteBatch {
            writes: vec![Write::Point {
                key: name.to_string(),
                point,
            }],
            after,
        }))))
    }

    /// Creates a key or updates its options. Options are merged over the key's current ones
    /// and validated by its type; a different type than the key has is refused. Await the
    /// returned [`Durable`] before acknowledging.
    pub async fn define(
        &self,
        name: &str,
        type_name: Option<&str>,
        opts: Map<String, Json>,
    ) -> Result<Durable> {
        check_key_name(name)?;
        let (mut held, existed) = self.lock_key(name).await?;
        let done = self.define_locked(name, &mut held, type_name, opts);
        self.unlock_key(name, held, existed);
        done
    }

    /// [`Db::define`] on the locked state of the key.
    fn define_locked(
        &self,
        name: &str,
        state: &mut KeyState,
        type_name: Option<&str>,
        opts: Map<String, Json>,
    ) -> Result<Durable> {
        let mut def = match (&state.def, type_name) {
            (Some(def), Some(t)) if def.type_name != t => {
                return Err(Error::TypeMismatch {
                    key: name.to_string(),
                    existing: def.type_name.clone(),
                    requested: t.to_string(),
                });
            }
            (Some(def), _) => def.clone(),
            (None, Some(t)) => KeyDef {
                type_name: t.to_string(),
                opts: Map::new(),
            },
            (None, None) => {
                return Err(Error::query(format!(
                    "key {name:?} does not exist; define needs its type"
                )));
            }
        };
        let plugin = self.registry.get(&def.type_name)?;
        def.opts.extend(opts);
        let effective = plugin.check_options(&Json::Object(def.opts.clone()).to_string())?;
        let schedule = match state.reference() {
            Some(reference) => plugin.reschedule(&effective, reference)?,
            None => None,
        };
        let done = self.writer.submit(WriteBatch {
            writes: vec![Write::Def {
                key: name.to_string(),
                def: def.clone(),
            }],
            after: None,
        });
        self.chunk_keys.set(name, &def.type_name, &effective);
        state.def = Some(def);
        state.effective = effective;
        self.set_schedule(name, state, schedule);
        Ok(Durable(Some(done)))
    }

    /// Removes a key with all its history. Its subscribers stay subscribed.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let Some(mut state) = self.keys.lock(name, false).await? else {
            return Ok(false);
        };
        if state.def.is_none() {
            return Ok(false);
        }
        self.set_schedule(name, &mut state, None);
        self.chunk_keys.remove(name);
        // The key's summaries and gaps go with it.
        self.compaction
            .remove_rows(state.summary_rows, state.gap_rows);
        *state = KeyState {
            seq: state.seq,
            ..KeyState::default()
        };
        let done = self.writer.submit(WriteBatch {
            writes: vec![Write::DeleteKey {
                key: name.to_string(),
            }],
            after: None,
        });
        // Its slot goes unless a subscriber counts on its push numbers.
        self.unlock_key(name, state, true);
        done.await.unwrap_or(Err(Error::ShuttingDown))?;
        Ok(true)
    }

    /// Whether `name` already holds a point at `time` with `value` (a redelivered message
    /// is then not stored again). `time` is compared as it is stored (to the microsecond, as
    /// `put` keeps it). The latest point answers for times from it on; older times are looked
    /// up in the store.
    pub async fn holds_point(&self, name: &str, time: Time, value: &Json) -> Result<bool> {
        let time = quantize_time(time);
        let Some(latest) = self.latest(name).await else {
            return Ok(false);
        };
        if time > latest.time {
            return Ok(false);
        }
        if time == latest.time {
            return Ok(latest.value.to_json() == *value);
        }
        let store = self.store.clone();
        let key = name.to_string();
        let points = tokio::task::spawn_blocking(move || store.range(&key, time, time))
            .await
            .map_err(|e| Error::Storage(format!("reading a point: {e}")))??;
        Ok(points.iter().any(|p| p.value.to_json() == *value))
    }

    /// The latest point of a key, if it exists and has one.
    pub async fn latest(&self, name: &str) -> Option<Point> {
        let slot = self.slot(name)?;
        let state = slot.lock().await;
        state.def.as_ref()?;
        state.latest.clone()
    }

    /// A key's effective options and its plugin (an error if the type is not loaded: the
    /// key's raw data is still readable). `None` if the key does not exist.
    pub async fn describe(&self, name: &str) -> Option<(String, Result<Arc<Plugin>>)> {
        let slot = self.slot(name)?;
        let state = slot.lock().await;
        let def = state.def.as_ref()?;
        Some((state.effective.clone(), self.registry.get(&def.type_name)))
    }

    /// Every existing key, by name (the MQTT bridge's first publication).
    pub async fn list(&self) -> BTreeMap<String, KeyListing> {
        let mut out = BTreeMap::new();
        for (name, slot) in self.keys.all() {
            if let Some(listing) = listing(&slot).await {
                out.insert(name.into(), listing);
            }
        }
        out
    }

    /// Up to `limit` existing keys in name order, after `after` (from the first with `None`)
    /// and matching `pattern` (`*` any run of characters, as in grants). Costs what the page
    /// costs, however many keys exist (see [`KeyTable`]).
    pub async fn page(
        &self,
        wanted: impl Fn(&str) -> bool,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(String, KeyListing)> {
        let mut out = Vec::new();
        let mut cursor: Option<Box<str>> = after.map(Into::into);
        while out.len() < limit {
            let want = limit - out.len();
            let (batch, last) = self.keys.batch_after(cursor.as_deref(), want, &wanted);
            for (name, slot) in batch {
                if let Some(listing) = listing(&slot).await {
                    out.push((name.into(), listing));
                }
            }
            match last {
                Some(last) => cursor = Some(last),
                None => break,
            }
        }
        out.truncate(limit);
        out
    }

    /// How many keys exist. O(1).
    pub fn key_count(&self) -> usize {
        self.keys.live()
    }

    /// How many key slots are in memory (existing keys, and names a subscriber still
    /// counts on): `stats` shows it beside `keys_count`.
    pub fn key_slots(&self) -> usize {
        self.keys.slots()
    }
}

/// A slot's key as `keys` lists it; `None` if it holds no key.
async fn listing(slot: &Slot) -> Option<KeyListing> {
    let state = slot.lock().await;
    Some(KeyListing {
        def: state.def.clone()?,
        latest: state.latest.clone(),
    })
}

fn opts_json(state: &KeyState) -> String {
    state.def.as_ref().map_or_else(
        || "{}".to_string(),
        |d| Json::Object(d.opts.clone()).to_string(),
    )
}

/// A server-assigned time for a key's next point: now, but always after its latest point, so
/// two puts in the same instant both keep their place in history, and a put after a point
/// that is ahead of the clock (at most [`TimeWindow::ahead`]) follows it: `get`, pushes and
/// increments stay in write order.
/// The time of a put without one: now, to the microsecond, or one microsecond after the
/// latest point when the clock has not moved past it.
fn next_time(now: Time, latest: Option<&Point>) -> Time {
    let now = quantize_time(now);
    match latest {
        Some(l) if now <= l.time => micros_to_time(time_to_micros(l.time) + 1),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_window_takes_the_epoch_to_a_day_ahead() {
        let w = TimeWindow::default();
        let now = 1_774_656_000.0;
        for ok in [0.0, 1.5, now, now + 86_400.0] {
            assert_eq!(w.check(ok, now).ok(), Some(ok), "{ok}");
        }
        // -0 is stored as 0: one key for one instant.
        assert_eq!(w.check(-0.0, now).map(f64::to_bits).ok(), Some(0));
        for bad in [
            -1.0,
            -1e18,
            now * 1000.0,
            now + 86_401.0,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert_eq!(
                w.check(bad, now)
                    .map_err(|e| e.code().to_string())
                    .err()
                    .as_deref(),
                Some("invalid_time"),
                "{bad}"
            );
        }
    }
}
