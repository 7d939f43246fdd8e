//! The server: listeners and their accept loop, TLS, one task per connection (served by
//! [`crate::http`]: HTTP requests, websocket upgrades), orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::Db;
pub use crate::limits::ConnectionLimits;
use crate::live::{Control, Live};
use crate::plugins::Registry;
use crate::protocol::Dialect;
use crate::store::Store;

/// How long shutdown waits for connections to finish their current request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a new connection has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection of a listener shares: the live settings (tokens, limits, TLS) and
/// the connection counts, both behind the server's [`Control`].
#[derive(Clone)]
pub struct Policy {
    pub control: Arc<Control>,
}

/// A running server.
pub struct Server {
    /// Where the main listener is bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// Where the v2-only listener is bound, if configured.
    pub v2_addr: Option<SocketAddr>,
    /// Where the binary protocol's listener is bound, if configured (`tcp_listen`).
    pub tcp_addr: Option<SocketAddr>,
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
        let connections = crate::live::connection_cap(config.max_connections);
        let store = Store::open(&config.data_dir)?;
        let shutdown = CancellationToken::new();
        let fatal = shutdown.clone();
        let writer = store.writer(config.durability(), move |e| {
            tracing::error!(error = %e, "storage failed: shutting down rather than acknowledge writes that may not be durable");
            fatal.cancel();
        });
        crate::plugins::cache::set_dir(config.cache_dir());
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
            Serves::Http(None),
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
                    Serves::Http(Some(Dialect::V2)),
                    db.clone(),
                    policy.clone(),
                    shutdown.clone(),
                    tasks.clone(),
                ));
                Some(addr)
            }
            None => None,
        };
        let tcp_addr = match config.tcp_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await?;
                let addr = listener.local_addr()?;
                tasks.spawn(run(
                    listener,
                    Serves::Tcp,
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
            tcp = ?tcp_addr,
            data = %config.data_dir.display(),
            auth = config.auth.enabled,
            tls = config.tls.is_some(),
            "komoku listening"
        );
        Ok(Server {
            local_addr,
            v2_addr,
            tcp_addr,
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

/// What a listener's connections speak.
#[derive(Debug, Clone, Copy)]
pub enum Serves {
    /// HTTP and websocket upgrades; a dialect forces one dialect on every path.
    Http(Option<Dialect>),
    /// The binary protocol ([`crate::tcp`]).
    Tcp,
}

/// Accepts connections until `shutdown`, each served as `serves` says.
pub async fn run(
    listener: TcpListener,
    serves: Serves,
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
                                    serve(stream, peer, serves, db, &policy.control, shutdown).await
                                }
                                Ok(Err(e)) => Err(anyhow::Error::from(e).context("tls handshake")),
                                Err(_) => Err(anyhow::anyhow!("tls handshake timed out")),
                            }
                        }
                        None => serve(stream, peer, serves, db, &policy.control, shutdown).await,
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

/// Serves one connection (after TLS, if any) in its listener's protocol.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    serves: Serves,
    db: Arc<Db>,
    control: &Arc<Control>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match serves {
        Serves::Http(dialect) => {
            crate::http::serve(stream, peer, dialect, db, control, shutdown).await
        }
        Serves::Tcp => crate::tcp::serve(stream, peer, db, control, shutdown).await,
    }
}
