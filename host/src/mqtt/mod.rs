//! The MQTT bridge, one more transport: messages of a broker's topic tree become `put`s
//! (and `define`s) through a [`Session`] with the access of the section's token, exactly as
//! a websocket connection's requests do, and changes of keys are published back to topics.
//!
//! MQTT 3.1.1 or 5 (the `client` module hides which). Nothing is lost: the bridge
//! subscribes with QoS 1 under a persistent session (clean session off; in 5, one that
//! never expires), so the broker keeps what arrives while Komoku is down; a message is
//! acknowledged (PUBACK) only once its points are durable, in the order the messages came.
//! A message whose points were stored but not acknowledged comes again after a crash; a
//! point already stored with the same key, time and value is not stored again
//! ([`Db::holds_point`]).
//!
//! One `[[mqtt]]` section is one client: a task polls the connection and turns messages
//! into commands, a second acknowledges them as they become durable, a third publishes
//! changes of keys. A bad payload is counted per mapping (`stats` → `mqtt`), logged at most
//! once per topic per minute, and acknowledged: it never stops the bridge.

mod client;
pub mod config;
pub mod topic;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rumqttc::{TlsConfiguration, Transport};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, Auth, Permission};
use crate::cmd::{Command, Definition};
use crate::db::{Db, Durable};
use crate::limits::ConnectionLimits;
use crate::pubsub::Subscriber;
use crate::session::Session;

use client::{Client, Connection, Message, Polled};
pub use config::{IngestConfig, MqttConfig, PayloadFormat, PublishConfig};
use topic::{Bad, Filter, Template};

/// A topic's bad payloads are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// How long shutdown waits for the acknowledgements of durable messages to go out.
const ACK_DRAIN: Duration = Duration::from_secs(2);

/// Changes waiting to be published before the publisher counts as too slow (it then
/// starts over from the keys' latest values).
const PUBLISH_QUEUE: usize = 100_000;

/// Counters of one ingest mapping.
#[derive(Default)]
struct IngestStats {
    messages: AtomicU64,
    points: AtomicU64,
    duplicates: AtomicU64,
    bad: [AtomicU64; Bad::ALL.len()],
}

/// Counters of one `[[mqtt]]` section.
#[derive(Default)]
struct BridgeStats {
    connected: AtomicBool,
    connects: AtomicU64,
    published: AtomicU64,
    ingest: Vec<IngestStats>,
}

impl BridgeStats {
    fn json(&self, config: &MqttConfig) -> Json {
        let ingest: Vec<Json> = config
            .ingest
            .iter()
            .zip(&self.ingest)
            .map(|(m, s)| {
                let bad: serde_json::Map<String, Json> = Bad::ALL
                    .iter()
                    .zip(&s.bad)
                    .map(|(b, n)| (b.name().to_string(), json!(n.load(Ordering::Relaxed))))
                    .collect();
                json!({
                    "topic": m.topic,
                    "key": m.key,
                    "messages": s.messages.load(Ordering::Relaxed),
                    "points": s.points.load(Ordering::Relaxed),
                    "duplicates": s.duplicates.load(Ordering::Relaxed),
                    "bad": bad,
                })
            })
            .collect();
        json!({
            "url": config.url,
            "client_id": config.client_id,
            "connected": self.connected.load(Ordering::Relaxed),
            "connects": self.connects.load(Ordering::Relaxed),
            "published": self.published.load(Ordering::Relaxed),
            "ingest": ingest,
        })
    }
}

/// One ingest mapping, compiled.
struct Ingest {
    config: IngestConfig,
    filter: Filter,
    key: Template,
}

/// One publish mapping, compiled.
struct Outgoing {
    config: PublishConfig,
    topic: Template,
}

/// Checks every `[[mqtt]]` section (and, with auth on, that each names a token that
/// works), so that a server with a broken bridge refuses to start.
pub fn check(configs: &[MqttConfig], auth: &Auth) -> anyhow::Result<()> {
    for c in configs {
        c.check()?;
        if auth.enabled() {
            let token = c.token.as_deref().with_context(|| {
                format!(
                    "mqtt {}: auth is enabled, so the bridge needs a token",
                    c.url
                )
            })?;
            auth.check(token)
                .map_err(|e| anyhow::anyhow!("mqtt {}: token: {e}", c.url))?;
        }
    }
    let mut ids = HashSet::new();
    for c in configs {
        if !ids.insert((c.broker()?, c.client_id.clone())) {
            anyhow::bail!(
                "mqtt {}: two sections use client_id {:?} on one broker (the broker would \
                 drop one connection for the other)",
                c.url,
                c.client_id
            );
        }
    }
    Ok(())
}

/// Starts one bridge per section, as tasks of `tasks` that end at `shutdown`.
pub fn start(
    configs: &[MqttConfig],
    db: &Arc<Db>,
    auth: Arc<Auth>,
    limits: ConnectionLimits,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    check(configs, &auth)?;
    let mut all_stats = Vec::new();
    for config in configs {
        let access = match (&config.token, auth.enabled()) {
            (Some(token), true) => Access::Token(auth.check(token)?),
            _ => Access::Open,
        };
        let stats = Arc::new(BridgeStats {
            ingest: config
                .ingest
                .iter()
                .map(|_| IngestStats::default())
                .collect(),
            ..BridgeStats::default()
        });
        all_stats.push((config.clone(), stats.clone()));
        let ingest = config
            .ingest
            .iter()
            .map(|m| {
                let (filter, key) = m.compile()?;
                Ok(Ingest {
                    config: m.clone(),
                    filter,
                    key,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let outgoing = config
            .publish
            .iter()
            .map(|p| {
                Ok(Outgoing {
                    config: p.clone(),
                    topic: Template::publish(&p.topic)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tls = match config.broker()?.tls {
            true => Some(Transport::tls_with_config(tls(config)?)),
            false => None,
        };
        let (client, connection) = client::connect(config, tls)?;
        let session = Session::new(auth.clone(), access.clone(), limits);
        let (tx, rx) = mpsc::channel(1);
        let me = Subscriber::new(db.pubsub().next_conn_id(), tx, 1);
        let bridge = Bridge {
            url: config.url.clone(),
            filters: ingest
                .iter()
                .map(|m| m.filter.as_str().to_string())
                .collect(),
            ingest,
            db: db.clone(),
            session,
            me,
            _pushes: rx,
            stats: stats.clone(),
            known: HashSet::new(),
            logged: HashMap::new(),
            max_backoff: Duration::from_secs(config.max_backoff.max(1)),
        };
        tasks.spawn(bridge.run(client.clone(), connection, shutdown.clone()));
        if !outgoing.is_empty() {
            let publisher = Publisher {
                outgoing,
                access,
                db: db.clone(),
                client,
                stats,
                discovered: HashSet::new(),
            };
            tasks.spawn(publisher.run(shutdown.clone()));
        }
        tracing::info!(url = %config.url, client_id = %config.client_id, "mqtt bridge started");
    }
    if !all_stats.is_empty() {
        db.stats().add_section(
            "mqtt",
            Box::new(move || Json::Array(all_stats.iter().map(|(c, s)| s.json(c)).collect())),
        );
    }
    Ok(())
}

/// rustls with ring (as for wss://), the configured CAs and an optional client certificate.
fn tls(config: &MqttConfig) -> anyhow::Result<TlsConfiguration> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    let ca_file = config
        .ca_file
        .clone()
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca_file)
        .with_context(|| format!("mqtt ca_file {}", ca_file.display()))?
    {
        roots
            .add(cert.with_context(|| format!("mqtt ca_file {}", ca_file.display()))?)
            .with_context(|| format!("mqtt ca_file {}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let client = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("mqtt client_cert {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("mqtt client_key {}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .context("mqtt client_cert and client_key do not fit together")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(client)))
}

/// The ingest side of one section.
struct Bridge {
    url: String,
    filters: Vec<String>,
    ingest: Vec<Ingest>,
    db: Arc<Db>,
    session: Session,
    /// The push side commands need; the bridge subscribes to nothing through it.
    me: Subscriber,
    _pushes: mpsc::Receiver<Arc<str>>,
    stats: Arc<BridgeStats>,
    /// Keys this bridge has seen exist (so a mapping's `type` is defined only once).
    known: HashSet<String>,
    /// When each topic's last bad payload was logged.
    logged: HashMap<String, Instant>,
    max_backoff: Duration,
}

impl Bridge {
    async fn run(
        mut self,
        client: Client,
        mut connection: Connection,
        shutdown: CancellationToken,
    ) {
        // Unbounded, so that this loop never waits for the acknowledger (which waits for
        // the connection this loop polls); what it holds is bounded by the messages the
        // broker lets be unacknowledged at once (its in-flight window).
        let (acks, pending) = mpsc::unbounded_channel::<(Vec<Durable>, Box<Message>)>();
        let acker = tokio::spawn(acknowledge(pending, client.clone()));
        let mut backoff = Duration::from_secs(1);
        let mut subscribed = false;
        let mut last_error: Option<String> = None;
        loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => break,
                polled = connection.poll() => polled,
            };
            match polled {
                Polled::Connected { session_present } => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    backoff = Duration::from_secs(1);
                    last_error = None;
                    tracing::info!(url = %self.url, session_present, "mqtt connected");
                    // A broker that kept the session keeps the subscriptions; subscribing
                    // again would resend retained messages (MQTT 3.1.1). The first
                    // connection of a run subscribes anyway, since the mappings may have
                    // changed.
                    if (!session_present || !subscribed) && !self.filters.is_empty() {
                        if let Err(e) = client.subscribe(&self.filters) {
                            tracing::error!(url = %self.url, error = %e, "mqtt subscribe failed");
                        }
                        subscribed = true;
                    } else {
                        self.stats.connected.store(true, Ordering::Relaxed);
                    }
                }
                // `connected` in `stats` means subscribed too: from now on nothing
                // published to the mappings' topics is missed.
                Polled::Subscribed => self.stats.connected.store(true, Ordering::Relaxed),
                Polled::Message(message) => {
                    let durables = self.take(&message).await;
                    if acks.send((durables, message)).is_err() {
                        // The acknowledger stopped (storage failed): nothing more is acked.
                        break;
                    }
                }
                Polled::Other => {}
                Polled::Failed(text) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    // Logged when it changes, not at every attempt.
                    if last_error.as_deref() != Some(&text) {
                        tracing::warn!(url = %self.url, error = %text, retry_in = ?backoff, "mqtt connection failed");
                        last_error = Some(text);
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
        // Messages already taken are acknowledged once durable; the connection is polled
        // meanwhile so that the acknowledgements go out. Unacknowledged ones come again.
        drop(acks);
        let drained = async {
            let mut acker = acker;
            loop {
                tokio::select! {
                    _ = &mut acker => break,
                    polled = connection.poll() => if matches!(polled, Polled::Failed(_)) { break },
                }
            }
            client.disconnect();
            while !matches!(connection.poll().await, Polled::Failed(_)) {}
        };
        let _ = tokio::time::timeout(ACK_DRAIN, drained).await;
        self.stats.connected.store(false, Ordering::Relaxed);
        tracing::info!(url = %self.url, "mqtt bridge stopped");
    }

    /// Turns one message into queued writes, for every mapping whose filter matches.
    async fn take(&mut self, publish: &Message) -> Vec<Durable> {
        let mut durables = Vec::new();
        for i in 0..self.ingest.len() {
            let Some(captures) = self.ingest[i].filter.captures(&publish.topic) else {
                continue;
            };
            self.stats.ingest[i]
                .messages
                .fetch_add(1, Ordering::Relaxed);
            if let Err((bad, why)) = self.take_one(i, &captures, publish, &mut durables).await {
                self.bad(i, &publish.topic, bad, &why);
            }
        }
        durables
    }

    /// One mapping's share of a message. A missing field is counted while the other fields
    /// are still taken; anything else refuses the mapping's whole message.
    async fn take_one(
        &mut self,
        i: usize,
        captures: &[String],
        publish: &Message,
        durables: &mut Vec<Durable>,
    ) -> Result<(), (Bad, String)> {
        let m = &self.ingest[i];
        let (values, time) = if m.config.fields.is_empty() {
            let value = topic::bare_value(publish.payload())
                .map_err(|b| (b, "the payload is not UTF-8 text".to_string()))?;
            (vec![(m.key.key(captures, ""), value)], None)
        } else {
            let object = topic::json_object(publish.payload())
                .map_err(|b| (b, "the payload is not a JSON object".to_string()))?;
            let time = match &m.config.time_field {
                Some(f) => {
                    let raw = topic::field(&object, f)
                        .map_err(|b| (b, format!("no time field {f:?}")))?;
                    Some(topic::time_of(&raw).map_err(|b| (b, format!("{raw} is no time")))?)
                }
                None => None,
            };
            let mut values = Vec::new();
            let mut missing = Vec::new();
            for f in &m.config.fields {
                match topic::field(&object, f) {
                    Ok(v) => values.push((m.key.key(captures, f), v)),
                    Err(b) => missing.push((b, format!("no field {f:?}"))),
                }
            }
            for (b, why) in missing {
                self.bad(i, &publish.topic, b, &why);
            }
            (values, time)
        };
        let mut refused = None;
        for (key, value) in values {
            if let Err(e) = self
                .store(i, key, value, time, publish.retain, durables)
                .await
            {
                refused = Some((Bad::Refused, e.to_string()));
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Queues one point (defining its key first when the mapping says how), adding what to
    /// wait for before the acknowledgement to `durables`; nothing when the point is already
    /// stored.
    async fn store(
        &mut self,
        i: usize,
        key: String,
        value: Json,
        time: Option<f64>,
        retained: bool,
        durables: &mut Vec<Durable>,
    ) -> crate::Result<()> {
        let m = &self.ingest[i];
        let stats = &self.stats.ingest[i];
        if !self.known.contains(&key) {
            if self.db.describe(&key).await.is_none()
                && let Some(type_name) = &m.config.type_name
            {
                let mut define = Command::Define {
                    keys: vec![Definition {
                        key: key.clone(),
                        type_name: Some(type_name.clone()),
                        opts: m.config.opts.clone(),
                    }],
                };
                self.session.admit(&mut define)?;
                let (_, durable) = define.start(&self.db, &self.me).await?;
                durables.push(durable);
            }
            if self.known.len() > 100_000 {
                self.known.clear();
            }
            self.known.insert(key.clone());
        }
        // A redelivered message (after a crash before its ack) or a retained one the broker
        // sends again when the bridge subscribes: the point is there already.
        let already = match time {
            Some(t) => self.db.holds_point(&key, t, &value).await?,
            None => {
                retained
                    && self
                        .db
                        .latest(&key)
                        .await
                        .is_some_and(|p| p.value.to_json() == value)
            }
        };
        if already {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut put = Command::Put {
            key,
            value,
            time,
            create: true,
        };
        self.session.admit(&mut put)?;
        let (_, durable) = put.start(&self.db, &self.me).await?;
        durables.push(durable);
        stats.points.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts a bad payload; logs it unless its topic was logged in the last minute.
    fn bad(&mut self, i: usize, topic: &str, bad: Bad, why: &str) {
        self.stats.ingest[i].bad[bad as usize].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .logged
            .get(topic)
            .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
        {
            return;
        }
        if self.logged.len() > 10_000 {
            self.logged
                .retain(|_, t| now.duration_since(*t) < LOG_EVERY);
        }
        self.logged.insert(topic.to_string(), now);
        tracing::warn!(
            url = %self.url,
            topic,
            mapping = %self.ingest[i].config.topic,
            kind = bad.name(),
            reason = why,
            "mqtt message not taken (logged once a minute per topic)"
        );
    }
}

/// Acknowledges messages in the order they came, each once its writes are durable. A write
/// that fails (storage failed, or the server is stopping) stops all acknowledgements: the
/// broker sends those messages again.
async fn acknowledge(
    mut pending: mpsc::UnboundedReceiver<(Vec<Durable>, Box<Message>)>,
    client: Client,
) {
    while let Some((durables, publish)) = pending.recv().await {
        for durable in durables {
            if let Err(e) = durable.wait().await {
                tracing::warn!(error = %e, topic = %publish.topic, "mqtt message not acknowledged: its write failed");
                return;
            }
        }
        if client.ack(&publish).await.is_err() {
            return;
        }
    }
}

/// The publish side of one section.
struct Publisher {
    outgoing: Vec<Outgoing>,
    access: Access,
    db: Arc<Db>,
    client: Client,
    stats: Arc<BridgeStats>,
    /// (mapping, key) whose Home Assistant discovery config went out in this run.
    discovered: HashSet<(usize, String)>,
}

impl Publisher {
    fn wants(&self, key: &str) -> bool {
        self.access.may(Permission::Read, key)
            && self
                .outgoing
                .iter()
                .any(|o| crate::auth::glob(&o.config.keys, key))
    }

    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            // Watch first, then publish every matching key's latest value (retained, so a
            // change published twice does no harm): nothing changed in between is missed.
            let (tx, mut changes) = mpsc::channel::<Arc<str>>(PUBLISH_QUEUE);
            let me = Subscriber::new(self.db.pubsub().next_conn_id(), tx, 256 << 20);
            let patterns: Vec<String> = self
                .outgoing
                .iter()
                .map(|o| o.config.keys.clone())
                .collect();
            let access = self.access.clone();
            self.db.pubsub().watch(
                me.clone(),
                Arc::new(move |key: &str| {
                    access.may(Permission::Read, key)
                        && patterns.iter().any(|p| crate::auth::glob(p, key))
                }),
            );
            for (key, listing) in self.db.list().await {
                if let Some(point) = listing.latest
                    && self.wants(&key)
                {
                    let change = json!({"value": point.value.to_json(), "time": crate::value::number_json(point.time), "previous": Json::Null});
                    self.send(&key, &change).await;
                }
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.db.pubsub().drop_connection(me.conn);
                        return;
                    }
                    _ = me.kick.cancelled() => {
                        tracing::warn!("mqtt publishing fell behind; publishing every key's latest value again");
                        break;
                    }
                    Some(frame) = changes.recv() => {
                        me.sent(&frame);
                        let Ok(Json::Object(mut push)) = serde_json::from_str::<Json>(&frame) else { continue };
                        let Some(Json::Object(change)) = push.remove("pub") else { continue };
                        let Some(key) = change.get("key").and_then(Json::as_str).map(str::to_string) else { continue };
                        self.send(&key, &Json::Object(change)).await;
                    }
                }
            }
            self.db.pubsub().drop_connection(me.conn);
        }
    }

    /// Publishes one change of `key` through every mapping that covers it.
    async fn send(&mut self, key: &str, change: &Json) {
        let value = change.get("value").cloned().unwrap_or(Json::Null);
        for i in 0..self.outgoing.len() {
            let o = &self.outgoing[i].config;
            if !crate::auth::glob(&o.keys, key) {
                continue;
            }
            let topic = self.outgoing[i].topic.topic(key);
            let payload = match o.format {
                PayloadFormat::Value => topic::bare_payload(&value),
                PayloadFormat::Json => json!({
                    "value": value,
                    "time": change.get("time").cloned().unwrap_or(Json::Null),
                    "previous": change.get("previous").cloned().unwrap_or(Json::Null),
                })
                .to_string()
                .into_bytes(),
            };
            if o.ha_discovery && !self.discovered.contains(&(i, key.to_string())) {
                let (config_topic, config) = discovery(o, key, &topic, &value);
                if self
                    .client
                    .publish(config_topic, true, config.to_string().into_bytes())
                    .await
                    .is_ok()
                {
                    self.discovered.insert((i, key.to_string()));
                }
            }
            if self.client.publish(topic, o.retain, payload).await.is_ok() {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A Home Assistant MQTT discovery message for `key`, published to `state_topic`: its
/// config topic and body (a binary sensor for a boolean value, else a sensor).
fn discovery(o: &PublishConfig, key: &str, state_topic: &str, value: &Json) -> (String, Json) {
    let object_id: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let binary = value.is_boolean();
    let component = if binary { "binary_sensor" } else { "sensor" };
    let mut body = json!({
        "name": key,
        "unique_id": format!("komoku_{object_id}"),
        "object_id": object_id,
        "state_topic": state_topic,
        "device": {"identifiers": ["komoku"], "name": "Komoku"},
    });
    match (o.format, binary) {
        (PayloadFormat::Value, true) => {
            body["payload_on"] = json!("true");
            body["payload_off"] = json!("false");
        }
        (PayloadFormat::Json, true) => {
            body["value_template"] = json!("{{ 'ON' if value_json.value else 'OFF' }}");
        }
        (PayloadFormat::Json, false) => {
            body["value_template"] = json!("{{ value_json.value }}");
        }
        (PayloadFormat::Value, false) => {}
    }
    (
        format!(
            "{}/{component}/komoku/{object_id}/config",
            o.discovery_prefix
        ),
        body,
    )
}
