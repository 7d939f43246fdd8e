//! The websocket server: accept loop, one task per connection, orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, tokens_in_request};
use crate::config::Config;
use crate::db::Db;
use crate::live::{Control, Live};
use crate::plugins::Registry;
use crate::protocol::{self, Dialect};
use crate::pubsub::Subscriber;
pub use crate::session::ConnectionLimits;
use crate::session::Session;
use crate::store::Store;

/// How long shutdown waits for connections to finish their current request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a new connection has to finish its TLS and websocket handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors of the process's limit kept for storage (journal, tables, their
/// compactions) and the plugins folder: connections never take these, so a flood of them
/// cannot leave fjall unable to open a file.
pub const STORAGE_FDS: u64 = 256;

/// Longest a refused connection's leftover input is read (and dropped) after its close
/// frame, so that it gets the close frame rather than a TCP reset.
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// What every connection of a listener shares: the live settings (tokens, limits, TLS) and
/// the connection counts, both behind the server's [`Control`].
#[derive(Clone)]
pub struct Policy {
    pub control: Arc<Control>,
}
/// Raises the soft limit of open files to the hard limit and returns how many connections
/// fit beside [`STORAGE_FDS`]: at most `wanted`, at least 1.
pub fn connection_cap(wanted: usize) -> usize {
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit");
            return wanted.max(1);
        }
    };
    let fit = usize::try_from(files.saturating_sub(STORAGE_FDS)).unwrap_or(usize::MAX);
    if fit < wanted {
        tracing::warn!(
            open_files = files,
            max_connections = fit.max(1),
            "the open-files limit leaves room for fewer connections than max_connections; \
             raise it (ulimit -n, LimitNOFILE=) to allow more"
        );
    }
    wanted.min(fit).max(1)
}

/// A running server.
pub struct Server {
    /// Where the main listener is bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// Where the v2-only listener is bound, if configured.
    pub v2_addr: Option<SocketAddr>,
    db: Arc<Db>,
    control: Arc<Control>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    _watcher: Option<crate::plugins::PluginWatcher>,
}

impl Server {
    /// Opens the database, loads the plugins, binds the listeners and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Server> {
        Self::start_from(config, None).await
    }

    /// [`Server::start`], from a config read from `text` (its hash is shown in `stats`).
    pub async fn start_from(config: &Config, text: Option<&str>) -> anyhow::Result<Server> {
        config.check()?;
        let live = Live::from_config(config)?;
        let connections = connection_cap(config.max_connections);
        let store = Store::open(&config.data_dir)?;
        let shutdown = CancellationToken::new();
        let fatal = shutdown.clone();
        let writer = store.writer(config.durability(), move |e| {
            tracing::error!(error = %e, "storage failed: shutting down rather than acknowledge writes that may not be durable");
            fatal.cancel();
        });
        let good = config.data_dir.join("plugins.good");
        let registry = Arc::new(Registry::new(
            &config.plugins_dir,
            Some(&good),
            config.plugin_limits(),
        ));
        let db = Db::open(
            store,
            writer,
            registry.clone(),
            config.increment_creates.clone(),
            config.retention(),
        )
        .await?;
        // After the keys: each version that loads takes its type's keys (or does not load).
        let registry_ = registry.clone();
        let builtin = config.builtin_types;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if builtin {
                registry_.load_builtin()?;
            }
            registry_.load_dir()?;
            Ok(())
        })
        .await??;
        db.warn_unserved_types().await;
        let watcher = if config.hot_reload {
            crate::plugins::watch(registry, shutdown.clone())
        } else {
            None
        };

        let control = Arc::new(Control::new(config, text, live, connections, db.clone()));
        let policy = Policy {
            control: control.clone(),
        };
        let tasks = TaskTracker::new();
        // The bridges write through sessions like connections do, and stop with them.
        crate::mqtt::start(
            &config.mqtt,
            &db,
            control.live().borrow().auth.clone(),
            config.connection_limits(),
            &shutdown,
            &tasks,
        )?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        tasks.spawn(run(
            listener,
            None,
            db.clone(),
            policy.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
        let v2_addr = match config.v2_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await?;
                let addr = listener.local_addr()?;
                tasks.spawn(run(
                    listener,
                    Some(Dialect::V2),
                    db.clone(),
                    policy.clone(),
                    shutdown.clone(),
                    tasks.clone(),
                ));
                Some(addr)
            }
            None => None,
        };
        tracing::info!(
            %local_addr,
            v2 = ?v2_addr,
            data = %config.data_dir.display(),
            auth = config.auth.enabled,
            tls = config.tls.is_some(),
            "komoku listening"
        );
        Ok(Server {
            local_addr,
            v2_addr,
            db,
            control,
            shutdown,
            tasks,
            _watcher: watcher,
        })
    }

    /// The database behind the server.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Reloads the config (see [`crate::live`]); the server must have a source for it
    /// ([`Control::set_source`]).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Cancelled when the server stops (asked to, or after a fatal storage error).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes connections (waiting a bounded time for requests in
    /// flight), then makes everything written durable.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; closing anyway");
        }
        self.db.close().await?;
        // The live configuration holds the database too (for the default retention).
        drop(self.control);
        // Let the last tasks holding the database go, so that its files are unlocked when
        // this returns (a restart in the same process opens them again).
        let waited = std::time::Instant::now();
        while Arc::strong_count(&self.db) > 1 && waited.elapsed() < DRAIN_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(self.db);
        tracing::info!("komoku stopped");
        Ok(())
    }
}

/// Sends a close frame if the client takes it within a second; a client that stopped reading
/// does not get to hold the task.
async fn close<S>(sink: &mut S, code: CloseCode, reason: &'static str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
}

/// Accepts connections until `shutdown`. `dialect` forces one dialect on every path.
pub async fn run(
    listener: TcpListener,
    dialect: Option<Dialect>,
    db: Arc<Db>,
    policy: Policy,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut refused_logged: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = policy.control.connections().clone().try_acquire_owned() else {
                    // Closed at once: the cap keeps file descriptors for storage.
                    if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(%peer, "connection refused: max_connections reached");
                        refused_logged = Some(tokio::time::Instant::now());
                    }
                    drop(stream);
                    continue;
                };
                let db = db.clone();
                let shutdown = shutdown.clone();
                let policy = policy.clone();
                tasks.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let tls = policy.control.live().borrow().tls.clone();
                    let served = match tls {
                        Some(tls) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
                            {
                                Ok(Ok(stream)) => {
                                    serve(stream, peer, dialect, db, &policy, shutdown).await
                                }
                                Ok(Err(e)) => Err(anyhow::Error::from(e).context("tls handshake")),
                                Err(_) => Err(anyhow::anyhow!("tls handshake timed out")),
                            }
                        }
                        None => serve(stream, peer, dialect, db, &policy, shutdown).await,
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The answer to an upgrade request that is refused.
fn refusal(status: StatusCode, body: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{body}\n")));
    *response.status_mut() = status;
    response
}

/// The key of a `{"pub": {"key": ...}}` frame.
fn push_key(frame: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(frame).ok()?;
    json.get("pub")?.get("key")?.as_str().map(str::to_string)
}

/// Reads and drops what a client still sends after its close frame, for at most
/// [`DRAIN_AFTER_CLOSE`] and `budget` bytes, so that closing the socket does not reset the
/// connection (a TCP reset would destroy the close frame on its way).
async fn drain<S: AsyncRead + Unpin>(stream: &mut S, budget: usize) {
    let mut buf = vec![0u8; 16 << 10];
    let mut left = budget;
    let _ = tokio::time::timeout(DRAIN_AFTER_CLOSE, async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

// The handshake callback's error type is tungstenite's, large by its design.
#[allow(clippy::result_large_err)]
/// One connection: requests are answered in order; pushes go out between replies, never
/// before the reply to the request that caused them.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    dialect: Option<Dialect>,
    db: Arc<Db>,
    policy: &Policy,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let control = &policy.control;
    let mut live_changes = control.live();
    let live = live_changes.borrow_and_update().clone();
    let limits = live.limits;
    let mut path = String::from("/");
    let mut access = Access::Anonymous;
    let mut unauthenticated: Option<OwnedSemaphorePermit> = None;
    // Small buffers: an idle connection holds little memory (tungstenite's default is
    // 128 KiB each way); larger messages grow them while they last.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, resp: Response| {
            path = req.uri().path().to_string();
            let tokens = tokens_in_request(
                req.uri().query(),
                req.headers().get("authorization").map(|v| v.as_bytes()),
            );
            // A wrong token fails the upgrade (HTTP 401); none at all leaves the
            // connection anonymous until an `auth` request, if there is room for one more.
            access = live
                .auth
                .access_of(&tokens)
                .map_err(|_| refusal(StatusCode::UNAUTHORIZED, "unauthorized"))?;
            if matches!(access, Access::Anonymous) {
                unauthenticated = Some(
                    control
                        .unauthenticated()
                        .clone()
                        .try_acquire_owned()
                        .map_err(|_| {
                            refusal(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "too many unauthenticated connections",
                            )
                        })?,
                );
            }
            Ok(resp)
        },
        Some(ws_config),
    );
    let ws = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("websocket handshake timed out"))??;
    let dialect = dialect.unwrap_or_else(|| Dialect::for_path(&path));
    let mut session = Session::new(live.auth.clone(), access, limits)
        .with_control(control.clone(), peer.ip().is_loopback());
    let (mut sink, mut incoming) = ws.split();

    let (tx, mut pushes) = mpsc::channel::<Arc<str>>(limits.push_queue);
    let me = Subscriber::new(db.pubsub().next_conn_id(), tx, limits.push_queue_bytes);
    tracing::debug!(conn = me.conn, ?dialect, "connected");
    let auth_deadline = tokio::time::Instant::now() + limits.auth_timeout;
    // After a reload took subscriptions away: how many queued pushes were queued before it,
    // and the keys whose pushes among them are no longer for this connection.
    let mut stale: Option<(usize, Vec<String>)> = None;

    /// Why a connection is being closed by the server.
    enum Ending {
        TooSlow,
        TooBig,
        AuthTimeout,
        /// A reload took the connection's access away.
        Revoked(&'static str),
    }

    // A send waits for the client to read. One that never does must not pin the task: every
    // send also ends when the connection is kicked for falling behind.
    let result = async {
        loop {
            let outgoing = tokio::select! {
                _ = shutdown.cancelled() => {
                    close(&mut sink, CloseCode::Away, "server shutting down").await;
                    return Ok(None);
                }
                _ = me.kick.cancelled() => break Ok(Some(Ending::TooSlow)),
                _ = tokio::time::sleep_until(auth_deadline), if unauthenticated.is_some() => {
                    break Ok(Some(Ending::AuthTimeout));
                }
                Ok(()) = live_changes.changed() => {
                    let live = live_changes.borrow_and_update().clone();
                    match session.reauthorize(live.auth.clone()) {
                        Err(reason) => break Ok(Some(Ending::Revoked(reason))),
                        Ok(lost) => {
                            if !matches!(session.access(), Access::Anonymous) {
                                unauthenticated = None;
                            }
                            for key in &lost {
                                db.pubsub().unsubscribe(key, me.conn);
                            }
                            if !lost.is_empty() {
                                // Pushes of those keys already queued are dropped too.
                                stale = Some((pushes.len(), lost.clone()));
                            }
                            // v1 has no message a Ruby client would not take for a reply.
                            match dialect {
                                Dialect::V2 if !lost.is_empty() => {
                                    serde_json::json!({"unsubscribed": {"keys": lost, "reason": "forbidden"}})
                                        .to_string()
                                }
                                _ => continue,
                            }
                        }
                    }
                }
                frame = incoming.next() => {
                    let payload = match frame {
                        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                        Some(Ok(Message::Close(_))) | None => return Ok(None),
                        Some(Ok(_)) => continue, // ping/pong are answered by tungstenite
                        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                            tracing::debug!(conn = me.conn, error = %e, "message too big");
                            break Ok(Some(Ending::TooBig));
                        }
                        Some(Err(e)) => return Err(anyhow::Error::from(e)),
                    };
                    let answer = protocol::answer(&db, &me, &mut session, dialect, &payload).await;
                    if !matches!(session.access(), Access::Anonymous) {
                        unauthenticated = None;
                    }
                    answer.to_string()
                }
                Some(push) = pushes.recv() => {
                    me.sent(&push);
                    if let Some((left, keys)) = &mut stale {
                        *left = left.saturating_sub(1);
                        let lost = push_key(&push).is_some_and(|k| keys.contains(&k));
                        if *left == 0 {
                            stale = None;
                        }
                        if lost {
                            continue;
                        }
                    }
                    push.to_string()
                }
            };
            tokio::select! {
                sent = sink.send(Message::text(outgoing)) => sent?,
                _ = me.kick.cancelled() => break Ok(Some(Ending::TooSlow)),
            }
        }
    }
    .await;
    db.pubsub().drop_connection(me.conn);
    drop(pushes);
    let result = match result {
        Ok(Some(ending)) => {
            let (code, reason) = match ending {
                Ending::TooSlow => {
                    tracing::warn!(
                        conn = me.conn,
                        "closing a subscriber that reads too slowly (its push queue is full)"
                    );
                    (CloseCode::Policy, "too slow: push queue full")
                }
                Ending::TooBig => (CloseCode::Size, "message too big"),
                Ending::AuthTimeout => (CloseCode::Policy, "authentication timeout"),
                Ending::Revoked(reason) => {
                    tracing::info!(
                        conn = me.conn,
                        reason,
                        "closing a connection after a config reload"
                    );
                    (CloseCode::Policy, reason)
                }
            };
            close(&mut sink, code, reason).await;
            // What the client still sends (the rest of a message too big, its close reply)
            // is read and dropped, so that the close frame arrives instead of a reset.
            if let Ok(mut ws) = sink.reunite(incoming) {
                drain(ws.get_mut(), 2 * limits.max_frame_bytes + (64 << 10)).await;
            }
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    tracing::debug!(conn = me.conn, "disconnected");
    result
}
