//! The websocket server: accept loop, one task per connection, orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, Auth, token_in_request};
use crate::config::Config;
use crate::db::Db;
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

/// What every connection of a listener shares: its limits, the tokens, the TLS acceptor.
#[derive(Clone)]
pub struct Policy {
    pub limits: ConnectionLimits,
    pub auth: Arc<Auth>,
    /// With it, connections speak TLS (wss://).
    pub tls: Option<TlsAcceptor>,
}

/// A running server.
pub struct Server {
    /// Where the main listener is bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// Where the v2-only listener is bound, if configured.
    pub v2_addr: Option<SocketAddr>,
    db: Arc<Db>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    _watcher: Option<crate::plugins::PluginWatcher>,
}

impl Server {
    /// Opens the database, loads the plugins, binds the listeners and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Server> {
        config.check()?;
        let policy = Policy {
            limits: config.connection_limits(),
            auth: Arc::new(Auth::from_config(&config.auth)?),
            tls: config.tls.as_ref().map(crate::tls::acceptor).transpose()?,
        };
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

        let tasks = TaskTracker::new();
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
            auth = policy.auth.enabled(),
            tls = policy.tls.is_some(),
            "komoku listening"
        );
        Ok(Server {
            local_addr,
            v2_addr,
            db,
            shutdown,
            tasks,
            _watcher: watcher,
        })
    }

    /// The database behind the server.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
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
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let db = db.clone();
                let shutdown = shutdown.clone();
                let policy = policy.clone();
                tasks.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let served = match policy.tls.clone() {
                        Some(tls) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
                            {
                                Ok(Ok(stream)) => {
                                    serve(stream, dialect, db, &policy, shutdown).await
                                }
                                Ok(Err(e)) => Err(anyhow::Error::from(e).context("tls handshake")),
                                Err(_) => Err(anyhow::anyhow!("tls handshake timed out")),
                            }
                        }
                        None => serve(stream, dialect, db, &policy, shutdown).await,
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
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

/// The answer to an upgrade request with a wrong or revoked token.
fn unauthorized() -> ErrorResponse {
    let mut response = ErrorResponse::new(Some("unauthorized\n".into()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

// The handshake callback's error type is tungstenite's, large by its design.
#[allow(clippy::result_large_err)]
/// One connection: requests are answered in order; pushes go out between replies, never
/// before the reply to the request that caused them.
async fn serve<S>(
    stream: S,
    dialect: Option<Dialect>,
    db: Arc<Db>,
    policy: &Policy,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = policy.limits;
    let mut path = String::from("/");
    let mut access = Access::Anonymous;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, resp: Response| {
            path = req.uri().path().to_string();
            let token = token_in_request(
                req.uri().query(),
                req.headers().get("authorization").map(|v| v.as_bytes()),
            );
            // A wrong token fails the upgrade (HTTP 401); none at all leaves the
            // connection anonymous until an `auth` request.
            access = policy
                .auth
                .access(token.as_deref())
                .map_err(|_| unauthorized())?;
            Ok(resp)
        },
        Some(ws_config),
    );
    let ws = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("websocket handshake timed out"))??;
    let dialect = dialect.unwrap_or_else(|| Dialect::for_path(&path));
    let mut session = Session::new(policy.auth.clone(), access, limits);
    let (mut sink, mut incoming) = ws.split();

    let (tx, mut pushes) = mpsc::channel::<Arc<str>>(limits.push_queue);
    let me = Subscriber {
        conn: db.pubsub().next_conn_id(),
        tx,
        kick: CancellationToken::new(),
    };
    tracing::debug!(conn = me.conn, ?dialect, "connected");

    // A send waits for the client to read. One that never does must not pin the task: every
    // send also ends when the connection is kicked for falling behind.
    let result = async {
        loop {
            let outgoing = tokio::select! {
                _ = shutdown.cancelled() => {
                    close(&mut sink, CloseCode::Away, "server shutting down").await;
                    return Ok(());
                }
                _ = me.kick.cancelled() => break,
                frame = incoming.next() => {
                    let payload = match frame {
                        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                        Some(Ok(Message::Close(_))) | None => return Ok(()),
                        Some(Ok(_)) => continue, // ping/pong are answered by tungstenite
                        Some(Err(e)) => return Err(anyhow::Error::from(e)),
                    };
                    protocol::answer(&db, &me, &mut session, dialect, &payload).await.to_string()
                }
                Some(push) = pushes.recv() => push.to_string(),
            };
            tokio::select! {
                sent = sink.send(Message::text(outgoing)) => sent?,
                _ = me.kick.cancelled() => break,
            }
        }
        tracing::warn!(
            conn = me.conn,
            "closing a subscriber that reads too slowly (its push queue is full)"
        );
        close(&mut sink, CloseCode::Policy, "too slow: push queue full").await;
        Ok(())
    }
    .await;
    db.pubsub().drop_connection(me.conn);
    tracing::debug!(conn = me.conn, "disconnected");
    result
}
