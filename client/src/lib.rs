//! An async client for the Komoku database, on tokio.
//!
//! It speaks Komoku's websocket v2 dialect (`ws://host:7373/v2`, or `wss://` with TLS) or its
//! binary protocol, length-prefixed protobuf frames (`tcp://host:7375`, or `tcps://` with TLS;
//! the server's `tcp_listen`), chosen by the URL's scheme. Either way many requests are in
//! flight on one connection (each carries an id; the server answers in order). Over TCP the
//! token is sent as the connection's first request, `auth`.
//!
//! - a typed method per command ([`Client::get`], [`Client::put`], [`Client::increment`],
//!   [`Client::define`], [`Client::keys`], ...) and [`Client::request`] for any other;
//! - subscriptions as [`Stream`](futures_util::Stream)s of [`Change`]s ([`Client::subscribe`]);
//! - when the connection drops, it reconnects with exponential backoff and subscribes again,
//!   asking for the history missed meanwhile, so a subscription sees every stored change once;
//! - puts made while the server is unreachable wait in a bounded queue (order kept; the
//!   oldest dropped when full and counted in [`Client::dropped`]) and are sent on reconnect.
//!
//! # Writes that were in flight when the connection dropped
//!
//! Every put carries a time: the caller's, or the client's clock when the put was made
//! (strictly increasing within one client). A put sent but not acknowledged when the
//! connection drops is sent again after reconnecting, with the same time. If the server had
//! already stored it, the second put lands on the same point (same key, same time, same
//! value) and overwrites it, so nothing doubles; if it had not, it is stored now. Either way a
//! put's [`Ack`] resolves only once the server acknowledged it, and an acknowledged put is
//! durable on the server. Puts keep their order: the retried ones go first, then the queued
//! ones, then new ones.
//!
//! Increments, decrements, `define` and `delete` are not idempotent or not worth replaying
//! blind: while offline they fail at once with [`Error::Offline`], and one in flight when the
//! connection drops fails with [`Error::Disconnected`] (it may or may not have been applied).
//! Reads fail the same way; retry them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), komoku_client::Error> {
//! use futures_util::StreamExt;
//! let client = komoku_client::Client::connect("ws://127.0.0.1:7373", Default::default()).await?;
//! client.put("room.temp", 21.5).await?;
//! let mut changes = client.subscribe("room.temp").await?;
//! while let Some(change) = changes.next().await {
//!     println!("{} = {} at {}", change.key, change.value, change.time);
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value as Json, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub use serde_json::Value;

mod tcp;

/// What can go wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server could not be reached (the first connection of [`Client::connect`]).
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server answered with an error code (see the README's table of codes).
    #[error("{code}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Server {
        code: String,
        message: Option<String>,
        /// The whole error object (`forbidden` adds `permission` and `key`).
        detail: Json,
    },
    /// The server is unreachable now and this request is not one that waits in the queue.
    #[error("not connected to the server")]
    Offline,
    /// The connection dropped after the request was sent and before its answer: it may or
    /// may not have been applied.
    #[error("the connection dropped before the answer")]
    Disconnected,
    /// The offline queue was full and this put, the oldest waiting, was dropped.
    #[error("dropped from the full offline queue")]
    Dropped,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The URL is not one this client can use.
    #[error("bad url {0}")]
    BadUrl(String),
    /// The server answered something this client does not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl Error {
    /// The server's error code (`unknown_key`, `invalid_value`, ...), for [`Error::Server`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the client connects and what it keeps while the server is away.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sent as `Authorization: Bearer TOKEN` with every websocket connection, and as the first
    /// request (`auth`) of every TCP one.
    pub token: Option<String>,
    /// Most puts waiting (unsent or unacknowledged) while the server is away; the oldest is
    /// dropped past it. Default 10 000.
    pub queue_limit: usize,
    /// First wait before reconnecting; doubles on each failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest wait between reconnection attempts. Default 5 s.
    pub backoff_max: Duration,
    /// Longest wait for one connection attempt. Default 10 s.
    pub connect_timeout: Duration,
    /// For `wss://` and `tcps://`: a PEM file of the certificates to trust (a self-signed server's
    /// certificate); without it, the system's trusted roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            token: None,
            queue_limit: 10_000,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

/// One change of a subscribed key.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub value: Json,
    /// Seconds since the Unix epoch.
    pub time: f64,
}

/// A key's latest point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub value: Json,
    pub time: f64,
}

/// One key of [`Client::keys`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    pub type_name: String,
    pub opts: Map<String, Json>,
    /// The latest value (with [`Client::keys_with_values`]).
    pub value: Option<Json>,
}

/// A connection to a Komoku server that survives the server going away. Cheap to clone;
/// the connection closes when the last clone is dropped (or on [`Client::close`]).
#[derive(Clone)]
pub struct Client {
    ops: mpsc::UnboundedSender<Op>,
    shared: Arc<Shared>,
    _guard: Arc<CloseOnDrop>,
}

struct CloseOnDrop(mpsc::UnboundedSender<Op>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Op::Close);
    }
}

#[derive(Default)]
struct Shared {
    dropped: AtomicU64,
    queued: AtomicUsize,
    connected: AtomicBool,
    reconnects: AtomicU64,
    /// The last put time handed out, in microseconds since the epoch.
    last_stamp: AtomicU64,
}

enum Op {
    Request {
        request: Map<String, Json>,
        /// Puts wait in the queue and are sent again after a drop.
        replay: bool,
        reply: oneshot::Sender<Result<Json>>,
    },
    Subscribe {
        key: String,
        since: f64,
        changes: mpsc::UnboundedSender<Change>,
        reply: oneshot::Sender<Result<()>>,
    },
    Close,
}

/// The answer to a put: resolves once the server acknowledged it. Dropping it does not
/// cancel the put (fire and forget).
#[must_use = "a put is sent whether or not its Ack is awaited; await it to see the answer"]
pub struct Ack(oneshot::Receiver<Result<Json>>);

impl Future for Ack {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)).map(|_| ()))
    }
}

/// The changes of one subscribed key, as a stream. Ends when the client closes.
pub struct Subscription {
    key: String,
    changes: mpsc::UnboundedReceiver<Change>,
}

impl Subscription {
    /// The subscribed key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl futures_util::Stream for Subscription {
    type Item = Change;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        self.changes.poll_recv(cx)
    }
}

/// The current time in seconds since the Unix epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The v2 URL for what the user gave: `ws://host:port` or `ws://host:port/` become
/// `ws://host:port/v2`; a path is kept.
pub fn v2_url(url: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(scheme, _)| ["ws", "wss"].contains(scheme))
        .ok_or_else(|| Error::BadUrl(format!("{url}: use ws://HOST:PORT or wss://HOST:PORT")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(Error::BadUrl(format!("{url}: no host")));
    }
    Ok(match rest.split_once('/') {
        None => format!("{scheme}://{rest}/v2"),
        Some((host, "")) => format!("{scheme}://{host}/v2"),
        Some(_) => url.to_string(),
    })
}

/// The port a `tcp://` or `tcps://` URL without one means.
pub const DEFAULT_TCP_PORT: u16 = 7375;

/// The URL in the form the client connects to: `ws`/`wss` get their `/v2` path, `tcp`/`tcps`
/// their port (default [`DEFAULT_TCP_PORT`]) and no path.
fn normal_url(url: &str) -> Result<String> {
    match url.split_once("://") {
        Some((scheme @ ("tcp" | "tcps"), rest)) => {
            let (host, port) = tcp_host_port(rest)
                .ok_or_else(|| Error::BadUrl(format!("{url}: use {scheme}://HOST:PORT")))?;
            Ok(format!("{scheme}://{host}:{port}"))
        }
        _ => v2_url(url).map_err(|_| {
            Error::BadUrl(format!(
                "{url}: use ws://HOST:PORT, wss://HOST:PORT, tcp://HOST:PORT or tcps://HOST:PORT"
            ))
        }),
    }
}

/// `host:port`, `host`, `[v6]:port` or `[v6]` (a trailing `/` allowed), as host (brackets
/// kept) and port.
fn tcp_host_port(rest: &str) -> Option<(String, u16)> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{addr}]"), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    let port = match port {
        None => DEFAULT_TCP_PORT,
        Some(p) => p.parse().ok()?,
    };
    Some((host, port))
}

impl Client {
    /// Connects to `url` (`ws://host:port`, the `/v2` path implied; `wss://`; `tcp://host:port`
    /// for the binary protocol; `tcps://`) and fails if the server cannot be reached now or
    /// refuses the token. Once connected, the client reconnects by itself whenever the
    /// connection drops.
    pub async fn connect(url: &str, options: Options) -> Result<Client> {
        let url = normal_url(url)?;
        let ws = open(&url, &options).await?;
        Ok(Self::spawn(url, options, Some(ws)))
    }

    /// Like [`Client::connect`], but never fails for an unreachable server: it keeps trying
    /// in the background, queueing puts meanwhile (as an agent on a device that boots before
    /// the server does).
    pub fn start(url: &str, options: Options) -> Result<Client> {
        let url = normal_url(url)?;
        Ok(Self::spawn(url, options, None))
    }

    fn spawn(url: String, options: Options, ws: Option<Conn>) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let task = Task {
            url,
            options,
            shared: shared.clone(),
            ops: rx,
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            subs: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(task.run(ws));
        Client {
            ops: tx.clone(),
            shared,
            _guard: Arc::new(CloseOnDrop(tx)),
        }
    }

    /// Whether the client is connected now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Puts dropped from the full offline queue since the client started.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Puts waiting for the server's acknowledgement (queued or in flight).
    pub fn pending_puts(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// How many times the connection was established again after a drop.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::SeqCst)
    }

    /// Closes the connection; pending requests fail with [`Error::Closed`].
    pub fn close(&self) {
        let _ = self.ops.send(Op::Close);
    }

    fn send(&self, request: Json, replay: bool) -> oneshot::Receiver<Result<Json>> {
        let (reply, rx) = oneshot::channel();
        let request = match request {
            Json::Object(map) => map,
            other => Map::from_iter([("".to_string(), other)]),
        };
        // A closed task drops `reply`, which the receiver sees as Closed.
        let _ = self.ops.send(Op::Request {
            request,
            replay,
            reply,
        });
        rx
    }

    /// Sends any request object (`{"query": {...}}`) and returns the `result`.
    pub async fn request(&self, request: Json) -> Result<Json> {
        self.send(request, false)
            .await
            .unwrap_or(Err(Error::Closed))
    }

    /// The time of a put made now: the clock in whole microseconds (the server keeps times
    /// to the microsecond), at least one microsecond after this client's previous stamp, so
    /// two puts of one client never land on the same stored time.
    fn stamp(&self) -> f64 {
        let now_us = (now() * 1e6).round() as u64;
        let previous = self
            .shared
            .last_stamp
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now_us.max(last + 1))
            })
            .unwrap_or(0);
        now_us.max(previous + 1) as f64 / 1e6
    }

    /// Puts `value` at the client's clock now. The put is on its way when this returns;
    /// await the [`Ack`] for the server's answer.
    pub fn put(&self, key: &str, value: impl Into<Json>) -> Ack {
        let time = self.stamp();
        self.put_at(key, value, time)
    }

    /// Puts `value` at `time` (seconds since the Unix epoch).
    pub fn put_at(&self, key: &str, value: impl Into<Json>, time: f64) -> Ack {
        let request = json!({"put": {"key": key, "value": value.into(), "time": time}});
        Ack(self.send(request, true))
    }

    /// The key's latest value, `None` if it has none.
    pub async fn get(&self, key: &str) -> Result<Option<Json>> {
        let v = self.request(json!({"get": {"key": key}})).await?;
        Ok((!v.is_null()).then_some(v))
    }

    /// The key's latest value and its time.
    pub async fn last(&self, key: &str) -> Result<Option<Point>> {
        match self.request(json!({"last": {"key": key}})).await? {
            Json::Null => Ok(None),
            v => Ok(Some(Point {
                time: v
                    .get("time")
                    .and_then(Json::as_f64)
                    .ok_or_else(|| Error::Protocol(v.to_string()))?,
                value: v.get("value").cloned().unwrap_or(Json::Null),
            })),
        }
    }

    /// Adds `step` to a counter (creating it at 0).
    pub async fn increment(&self, key: &str, step: f64) -> Result<()> {
        self.request(json!({"increment": {"key": key, "step": step}}))
            .await
            .map(drop)
    }

    /// Takes `step` from a counter.
    pub async fn decrement(&self, key: &str, step: f64) -> Result<()> {
        self.request(json!({"decrement": {"key": key, "step": step}}))
            .await
            .map(drop)
    }

    /// Defines `key` with a type and options (or updates the options of the same type).
    pub async fn define(&self, key: &str, type_name: &str, opts: Map<String, Json>) -> Result<()> {
        let mut def = opts;
        def.insert("type".into(), Json::from(type_name));
        let mut keys = Map::new();
        keys.insert(key.into(), Json::Object(def));
        self.request(json!({ "define": keys })).await.map(drop)
    }

    /// Deletes a key and its history.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.request(json!({"delete": {"key": key}}))
            .await
            .map(drop)
    }

    /// Every key this token may read, with its type and options.
    pub async fn keys(&self) -> Result<BTreeMap<String, KeyInfo>> {
        self.keys_request(json!({"keys": {}})).await
    }

    /// As [`Client::keys`], with each key's latest value.
    pub async fn keys_with_values(&self) -> Result<BTreeMap<String, KeyInfo>> {
        self.keys_request(json!({"keys": {"include": ["value"]}}))
            .await
    }

    async fn keys_request(&self, request: Json) -> Result<BTreeMap<String, KeyInfo>> {
        let answer = self.request(request).await?;
        let Json::Object(keys) = answer else {
            return Err(Error::Protocol(answer.to_string()));
        };
        keys.into_iter()
            .map(|(name, info)| {
                let type_name = info
                    .get("type")
                    .and_then(Json::as_str)
                    .ok_or_else(|| Error::Protocol(info.to_string()))?
                    .to_string();
                let opts = match info.get("opts") {
                    Some(Json::Object(o)) => o.clone(),
                    _ => Map::new(),
                };
                let value = info.get("value").cloned();
                Ok((
                    name,
                    KeyInfo {
                        type_name,
                        opts,
                        value,
                    },
                ))
            })
            .collect()
    }

    /// A question about a key's past: `args` is the `query` object of the protocol
    /// (`{"key": "k", "since": S, "step": "1H", "figures": ["mean"]}`).
    pub async fn query(&self, args: Json) -> Result<Json> {
        self.request(json!({ "query": args })).await
    }

    /// The server's counters.
    pub async fn stats(&self) -> Result<Json> {
        self.request(json!({"stats": {}})).await
    }

    /// A round trip.
    pub async fn ping(&self) -> Result<()> {
        self.request(json!({"ping": "komoku-client"}))
            .await
            .map(drop)
    }

    /// Subscribes to `key`'s changes from now on. While connected, the server's refusal
    /// (`forbidden`) is returned here; while offline, the subscription starts when the
    /// connection does. After a reconnection the stream carries on with the changes stored
    /// meanwhile, each once, in time order: they come from the key's history, which holds
    /// every stored point (a repeat of the same value too, which a live push would skip). A
    /// resubscription the server refuses (a token that lost `subscribe`) is logged and
    /// that stream stays silent.
    pub async fn subscribe(&self, key: &str) -> Result<Subscription> {
        let (changes, rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        self.ops
            .send(Op::Subscribe {
                key: key.into(),
                since: now(),
                changes,
                reply,
            })
            .map_err(|_| Error::Closed)?;
        answer.await.unwrap_or(Err(Error::Closed))?;
        Ok(Subscription {
            key: key.into(),
            changes: rx,
        })
    }
}

/// A byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

fn tls_connector(options: &Options) -> Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let bad = |m: String| Error::Connect {
        url: String::new(),
        reason: m,
    };
    let mut roots = RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("ca file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(format!("ca file {}: no certificate", path.display())));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("ca file {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TCP connection to `host:port` (no Nagle delay), wrapped in TLS when `tls`: the first
/// leg of both transports (`ws`/`wss` and `tcp`/`tcps`). `url` names the server in errors.
async fn connect_stream(
    url: &str,
    host: &str,
    port: u16,
    tls: bool,
    options: &Options,
) -> Result<Box<dyn Io>> {
    let fail = |reason: String| Error::Connect {
        url: url.to_string(),
        reason,
    };
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Error::BadUrl(format!("{url}: {e}")))?;
    let connector = tls_connector(options)?;
    Ok(Box::new(
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?,
    ))
}

/// TCP, then TLS for `wss://`, then the websocket upgrade.
async fn handshake(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    options: &Options,
) -> std::result::Result<Ws, Error> {
    let uri = request.uri().clone();
    let fail = |reason: String| Error::Connect {
        url: uri.to_string(),
        reason,
    };
    let tls = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or_else(|| Error::BadUrl(format!("{uri}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = connect_stream(&uri.to_string(), &host, port, tls, options).await?;
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response))
            if response.status().as_u16() == 401 =>
        {
            Err(Error::Server {
                code: "unauthorized".into(),
                message: Some("the server refused the token".into()),
                detail: json!({"error": "unauthorized"}),
            })
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Connects to a normalised URL (see [`normal_url`]) by its scheme.
async fn open(url: &str, options: &Options) -> Result<Conn> {
    if let Some(("tcp" | "tcps", _)) = url.split_once("://") {
        return tcp::open(url, options).await.map(Conn::Tcp);
    }
    open_ws(url, options).await.map(|ws| Conn::Ws(Box::new(ws)))
}

async fn open_ws(url: &str, options: &Options) -> Result<Ws> {
    let fail = |reason: String| Error::Connect {
        url: url.to_string(),
        reason,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::BadUrl(format!("{url}: {e}")))?;
    if let Some(token) = &options.token {
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::BadUrl("the token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", header);
    }
    match tokio::time::timeout(options.connect_timeout, handshake(request, options)).await {
        Err(_) => Err(fail("timed out".into())),
        Ok(Err(Error::Connect { reason, .. })) => Err(fail(reason)),
        Ok(other) => other,
    }
}

/// One connection to the server, whichever the protocol.
enum Conn {
    // Boxed: a websocket stream is several times the size of the TCP connection.
    Ws(Box<Ws>),
    Tcp(tcp::Conn),
}

impl Conn {
    /// Sends `request` (a v2 request object) as request `id`. `request` is left as it was.
    async fn send(
        &mut self,
        id: u64,
        request: &mut Map<String, Json>,
    ) -> std::result::Result<(), ()> {
        match self {
            Conn::Ws(ws) => {
                request.insert("query_id".into(), Json::from(id));
                let text = Json::Object(request.clone()).to_string();
                request.remove("query_id");
                ws.send(Message::text(text)).await.map_err(|_| ())
            }
            Conn::Tcp(tcp) => tcp.send(id, request).await.map_err(|_| ()),
        }
    }

    /// The next message from the server in the websocket v2 shape (`{"result": ...,
    /// "query_id": N}`, `{"error": ...}`, `{"pub": ...}`); `None` once the connection is gone.
    /// Cancel-safe.
    async fn next(&mut self) -> Option<Map<String, Json>> {
        match self {
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                        Ok(Json::Object(msg)) => return Some(msg),
                        _ => tracing::warn!(frame = text.as_str(), "unexpected frame"),
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            },
            Conn::Tcp(tcp) => tcp.next().await,
        }
    }

    async fn close(&mut self) {
        match self {
            Conn::Ws(ws) => {
                let _ = (**ws).close(None).await;
            }
            Conn::Tcp(tcp) => tcp.close().await,
        }
    }
}

/// A request sent and not yet answered.
struct InFlight {
    request: Map<String, Json>,
    replay: bool,
    reply: Option<oneshot::Sender<Result<Json>>>,
    /// For a `sub`: whose subscription it (re)starts.
    sub: Option<String>,
}

struct Sub {
    outs: Vec<mpsc::UnboundedSender<Change>>,
    /// The time of the last change delivered: changes at or before it are not delivered
    /// again. Before the first one, pushes are taken as they come (the client's clock may
    /// differ from the server's).
    last: Option<f64>,
    /// When the subscription began, by the client's clock: a resubscription before any
    /// change asks for the history from then.
    began: f64,
}

/// A put waiting to be sent, and who awaits its answer.
type Queued = (Map<String, Json>, oneshot::Sender<Result<Json>>);

struct Task {
    url: String,
    options: Options,
    shared: Arc<Shared>,
    ops: mpsc::UnboundedReceiver<Op>,
    /// Puts not sent yet, in order.
    queue: VecDeque<Queued>,
    in_flight: BTreeMap<u64, InFlight>,
    subs: HashMap<String, Sub>,
    next_id: u64,
}

enum Ended {
    Closed,
    Dropped,
}

impl Task {
    async fn run(mut self, mut ws: Option<Conn>) {
        let mut backoff = self.options.backoff_min;
        let mut first = true;
        loop {
            if let Some(conn) = ws.take() {
                backoff = self.options.backoff_min;
                self.shared.connected.store(true, Ordering::SeqCst);
                if !first {
                    self.shared.reconnects.fetch_add(1, Ordering::SeqCst);
                }
                first = false;
                let ended = self.serve(conn).await;
                self.shared.connected.store(false, Ordering::SeqCst);
                self.connection_lost();
                if let Ended::Closed = ended {
                    break;
                }
                tracing::info!(url = %self.url, "connection to komoku lost; reconnecting");
                continue;
            }
            // Offline: wait out the backoff while answering what comes in, then try again.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    op = self.ops.recv() => match op {
                        None | Some(Op::Close) => { self.close_all(); return; }
                        Some(op) => self.offline(op),
                    },
                }
            }
            backoff = (backoff * 2).min(self.options.backoff_max);
            match open(&self.url, &self.options).await {
                Ok(conn) => ws = Some(conn),
                Err(e) => tracing::debug!(error = %e, "reconnect failed"),
            }
        }
        self.close_all();
    }

    fn count_queued(&self) {
        let n = self.queue.len() + self.in_flight.values().filter(|f| f.replay).count();
        self.shared.queued.store(n, Ordering::SeqCst);
    }

    fn offline(&mut self, op: Op) {
        match op {
            Op::Request {
                request,
                replay: true,
                reply,
            } => self.enqueue(request, reply),
            Op::Request { reply, .. } => {
                let _ = reply.send(Err(Error::Offline));
            }
            Op::Subscribe {
                key,
                since,
                changes,
                reply,
            } => {
                self.add_sub(key, since, changes);
                let _ = reply.send(Ok(()));
            }
            Op::Close => {}
        }
    }

    fn enqueue(&mut self, request: Map<String, Json>, reply: oneshot::Sender<Result<Json>>) {
        let limit = self.options.queue_limit.max(1);
        let waiting = self.queue.len() + self.in_flight.values().filter(|f| f.replay).count();
        if waiting >= limit {
            // Drop the oldest write that has not been sent.
            if let Some((_, old)) = self.queue.pop_front() {
                self.shared.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = old.send(Err(Error::Dropped));
            } else {
                self.shared.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = reply.send(Err(Error::Dropped));
                return;
            }
        }
        self.queue.push_back((request, reply));
        self.count_queued();
    }

    fn add_sub(&mut self, key: String, since: f64, out: mpsc::UnboundedSender<Change>) {
        let sub = self.subs.entry(key).or_insert(Sub {
            outs: Vec::new(),
            last: None,
            began: since,
        });
        sub.outs.push(out);
    }

    /// The connection dropped: puts in flight go back to the front of the queue, in order;
    /// the other requests fail.
    fn connection_lost(&mut self) {
        let in_flight = std::mem::take(&mut self.in_flight);
        let mut retry = Vec::new();
        for (_, f) in in_flight {
            match (f.replay, f.reply) {
                (true, Some(reply)) => retry.push((f.request, reply)),
                (_, Some(reply)) => {
                    let _ = reply.send(Err(Error::Disconnected));
                }
                (_, None) => {}
            }
        }
        for item in retry.into_iter().rev() {
            self.queue.push_front(item);
        }
        self.count_queued();
    }

    fn close_all(&mut self) {
        for (_, f) in std::mem::take(&mut self.in_flight) {
            if let Some(reply) = f.reply {
                let _ = reply.send(Err(Error::Closed));
            }
        }
        for (_, reply) in self.queue.drain(..) {
            let _ = reply.send(Err(Error::Closed));
        }
        self.subs.clear();
        self.count_queued();
    }

    async fn send(
        &mut self,
        ws: &mut Conn,
        mut request: Map<String, Json>,
        replay: bool,
        reply: Option<oneshot::Sender<Result<Json>>>,
        sub: Option<String>,
    ) -> std::result::Result<(), ()> {
        let id = self.next_id;
        self.next_id += 1;
        let sent = ws.send(id, &mut request).await;
        self.in_flight.insert(
            id,
            InFlight {
                request,
                replay,
                reply,
                sub,
            },
        );
        self.count_queued();
        sent
    }

    async fn resubscribe(&mut self, ws: &mut Conn, key: String) -> std::result::Result<(), ()> {
        let Some(sub) = self.subs.get(&key) else {
            return Ok(());
        };
        let request = json!({"sub": {"key": key, "since": sub.last.unwrap_or(sub.began)}});
        let Json::Object(request) = request else {
            return Ok(());
        };
        self.send(ws, request, false, None, Some(key)).await
    }

    async fn serve(&mut self, mut ws: Conn) -> Ended {
        // Subscriptions first, so pushes caused by the replayed puts are seen; then the
        // puts, in order.
        let keys: Vec<String> = self.subs.keys().cloned().collect();
        for key in keys {
            if self.resubscribe(&mut ws, key).await.is_err() {
                return Ended::Dropped;
            }
        }
        while let Some((request, reply)) = self.queue.pop_front() {
            if self
                .send(&mut ws, request, true, Some(reply), None)
                .await
                .is_err()
            {
                return Ended::Dropped;
            }
        }
        loop {
            tokio::select! {
                op = self.ops.recv() => {
                    let sent = match op {
                        None | Some(Op::Close) => {
                            ws.close().await;
                            return Ended::Closed;
                        }
                        Some(Op::Request { request, replay, reply }) => {
                            self.send(&mut ws, request, replay, Some(reply), None).await
                        }
                        Some(Op::Subscribe { key, since, changes, reply }) => {
                            let first = !self.subs.contains_key(&key);
                            self.add_sub(key.clone(), since, changes);
                            if first {
                                let request = json!({"sub": {"key": key, "seq": true}});
                                let Json::Object(request) = request else { continue };
                                let (tx, rx) = oneshot::channel();
                                let sent = self.send(&mut ws, request, false, Some(tx), Some(key.clone())).await;
                                // Answer the caller when the server does.
                                tokio::spawn(async move {
                                    let r = rx.await.unwrap_or(Err(Error::Disconnected));
                                    let _ = reply.send(r.map(drop));
                                });
                                sent
                            } else {
                                let _ = reply.send(Ok(()));
                                Ok(())
                            }
                        }
                    };
                    if sent.is_err() {
                        return Ended::Dropped;
                    }
                }
                msg = ws.next() => match msg {
                    Some(msg) => self.received(msg),
                    None => return Ended::Dropped,
                },
            }
        }
    }

    /// One message from the server, in the websocket v2 shape.
    fn received(&mut self, mut msg: Map<String, Json>) {
        if let Some(push) = msg.get("pub") {
            let key = push.get("key").and_then(Json::as_str).unwrap_or_default();
            let time = push.get("time").and_then(Json::as_f64).unwrap_or_default();
            let value = push.get("value").cloned().unwrap_or(Json::Null);
            self.deliver(key.to_string(), value, time);
            return;
        }
        let Some(id) = msg.get("query_id").and_then(Json::as_u64) else {
            if !msg.contains_key("unsubscribed") {
                tracing::warn!(frame = %Json::Object(msg), "answer without query_id");
            }
            return;
        };
        let Some(f) = self.in_flight.remove(&id) else {
            return;
        };
        self.count_queued();
        let result = if let Some(code) = msg.get("error").and_then(Json::as_str) {
            Err(Error::Server {
                code: code.to_string(),
                message: msg
                    .get("message")
                    .and_then(Json::as_str)
                    .map(str::to_string),
                detail: Json::Object(msg.clone()),
            })
        } else {
            Ok(msg.remove("result").unwrap_or(Json::Null))
        };
        if let (Some(key), Ok(answer)) = (&f.sub, &result)
            && let Some(history) = answer.get("history").and_then(Json::as_array)
        {
            for point in history.clone() {
                if let (Some(t), Some(v)) = (point.get(0).and_then(Json::as_f64), point.get(1)) {
                    self.deliver(key.clone(), v.clone(), t);
                }
            }
        }
        if let (Some(key), Err(_), None) = (&f.sub, &result, &f.reply) {
            tracing::warn!(key = %key, "resubscribing failed");
        }
        if let (Some(key), Err(_)) = (&f.sub, &result) {
            // A refused first subscription is not kept.
            if f.reply.is_some() {
                self.subs.remove(key);
            }
        }
        if let Some(reply) = f.reply {
            let _ = reply.send(result);
        }
    }

    fn deliver(&mut self, key: String, value: Json, time: f64) {
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        if sub.last.is_some_and(|last| time <= last) {
            return;
        }
        sub.last = Some(time);
        let change = Change { key, value, time };
        sub.outs.retain(|out| out.send(change.clone()).is_ok());
    }
}
