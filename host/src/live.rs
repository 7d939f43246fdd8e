//! Live configuration: the settings a running server changes on a reload (`SIGHUP`, or the
//! `reload` request that `komoku reload` sends) without dropping its clients.
//!
//! A reload reads the config again through the [`ConfigSource`] the server was started with
//! (the file, with the command line's overrides). A config that does not parse or validate
//! is refused whole and the old one stays in force. Otherwise what can change live is
//! applied — tokens and their grants, connection limits, TLS certificate, the default
//! retention, the log level — and every open connection recomputes its access from the new
//! tokens ([`Live`] is watched by each connection task). Settings that only take effect at
//! start are left as they were and listed as needing a restart.

use std::sync::{Arc, Mutex};

use serde_json::{Value as Json, json};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::auth::Auth;
use crate::config::Config;
use crate::db::Db;
use crate::limits::ConnectionLimits;

/// Reads the config again, as the server was first configured (file plus overrides); also
/// returns the text it was read from, whose hash `stats` shows.
pub type ConfigSource = Arc<dyn Fn() -> anyhow::Result<(Config, Option<String>)> + Send + Sync>;

/// Changes the log filter (`RUST_LOG` syntax); set by the command line, which owns logging.
pub type LogControl = Arc<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// What every connection reads at its start and again after each reload.
pub struct Live {
    pub auth: Arc<Auth>,
    pub limits: ConnectionLimits,
    /// With it, new connections speak TLS (wss://).
    pub tls: Option<TlsAcceptor>,
}

impl Live {
    /// The live part of `config`; fails if a token or the TLS files are wrong.
    pub fn from_config(config: &Config) -> anyhow::Result<Live> {
        Ok(Live {
            auth: Arc::new(Auth::from_config(&config.auth)?),
            limits: config.connection_limits(),
            tls: config.tls.as_ref().map(crate::tls::acceptor).transpose()?,
        })
    }
}

/// What a reload did: the settings applied and those that need a restart.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub applied: Vec<&'static str>,
    pub needs_restart: Vec<&'static str>,
}

impl Report {
    /// `{"applied": [...], "needs_restart": [...]}`.
    pub fn to_json(&self) -> Json {
        json!({"applied": self.applied, "needs_restart": self.needs_restart})
    }
}

/// Applies reloads: owned by the server, reached by connections through their policy.
pub struct Control {
    live: watch::Sender<Arc<Live>>,
    /// The config in force (what needs a restart as it was at start).
    in_force: Mutex<Config>,
    source: Mutex<Option<ConfigSource>>,
    log: Mutex<Option<LogControl>>,
    connections: Capped,
    unauthenticated: Capped,
    db: Arc<Db>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// A semaphore whose size a reload may change.
pub struct Capped {
    pub permits: Arc<Semaphore>,
    size: Mutex<usize>,
}

impl Capped {
    pub fn new(size: usize) -> Capped {
        Capped {
            permits: Arc::new(Semaphore::new(size)),
            size: Mutex::new(size),
        }
    }

    /// Permits taken now (open connections, for `/metrics`).
    pub fn in_use(&self) -> usize {
        let size = self.size.lock().map(|s| *s).unwrap_or(0);
        size.saturating_sub(self.permits.available_permits())
    }

    /// Grows at once; shrinks as permits come back (open connections are not closed).
    fn resize(&self, new: usize) {
        let Ok(mut size) = self.size.lock() else {
            return;
        };
        if new > *size {
            self.permits.add_permits(new - *size);
        } else if new < *size {
            let permits = self.permits.clone();
            let fewer = u32::try_from(*size - new).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(fewer).await {
                    p.forget();
                }
            });
        }
        *size = new;
    }
}

impl Control {
    /// The control of a server started with `config` (read from `text`, if from a file).
    pub fn new(
        config: &Config,
        text: Option<&str>,
        live: Live,
        connections: usize,
        db: Arc<Db>,
    ) -> Control {
        db.stats().config_loaded(text.map(crate::auth::hash_token));
        Control {
            live: watch::Sender::new(Arc::new(live)),
            in_force: Mutex::new(config.clone()),
            source: Mutex::new(None),
            log: Mutex::new(None),
            connections: Capped::new(connections),
            unauthenticated: Capped::new(config.max_unauthenticated.max(1)),
            db,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Where reloads read the config from. Without one, a reload is refused.
    pub fn set_source(&self, source: ConfigSource) {
        if let Ok(mut s) = self.source.lock() {
            *s = Some(source);
        }
    }

    /// How a reload changes the log level.
    pub fn set_log(&self, log: LogControl) {
        if let Ok(mut l) = self.log.lock() {
            *l = Some(log);
        }
    }

    /// The live settings, watched for reloads.
    pub fn live(&self) -> watch::Receiver<Arc<Live>> {
        self.live.subscribe()
    }

    /// A permit per open connection.
    pub fn connections(&self) -> &Arc<Semaphore> {
        &self.connections.permits
    }

    /// Connections open now, and of them unauthenticated ones.
    pub fn open_connections(&self) -> (usize, usize) {
        (self.connections.in_use(), self.unauthenticated.in_use())
    }

    /// A permit per open unauthenticated connection.
    pub fn unauthenticated(&self) -> &Arc<Semaphore> {
        &self.unauthenticated.permits
    }

    /// Reads the config again and applies it (see the module's documentation).
    pub async fn reload(&self) -> anyhow::Result<Report> {
        let _one = self.reloading.lock().await;
        let source = self
            .source
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or_else(|| anyhow::anyhow!("this server was started without a config source"))?;
        let result = async {
            let (config, text) = tokio::task::spawn_blocking(move || source()).await??;
            self.apply(config, text.as_deref()).await
        }
        .await;
        match &result {
            Ok(report) => tracing::info!(
                applied = ?report.applied,
                needs_restart = ?report.needs_restart,
                "config reloaded"
            ),
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; the old config stays in force")
            }
        }
        result
    }

    /// Applies `new` (already read): checked whole first, then applied.
    pub async fn apply(&self, new: Config, text: Option<&str>) -> anyhow::Result<Report> {
        new.check()?;
        let live = Live::from_config(&new)?;
        let default_retention = new.retention.policy()?;
        let old = self
            .in_force
            .lock()
            .map_err(|_| anyhow::anyhow!("config state poisoned"))?
            .clone();
        let mut report = Report::default();
        let mut changed = |name: &'static str, differs: bool| {
            if differs {
                report.applied.push(name);
            }
        };
        changed(
            "auth",
            format!("{:?}", old.auth) != format!("{:?}", new.auth),
        );
        changed("tls", format!("{:?}", old.tls) != format!("{:?}", new.tls));
        let limits = |c: &Config| {
            (
                c.max_frame_bytes,
                c.push_queue,
                c.push_queue_bytes,
                c.max_batch,
                c.max_subscriptions,
                c.auth_timeout,
            )
        };
        changed("limits", limits(&old) != limits(&new));
        changed(
            "max_connections",
            old.max_connections != new.max_connections,
        );
        changed(
            "max_unauthenticated",
            old.max_unauthenticated != new.max_unauthenticated,
        );
        changed("retention", old.retention != new.retention);
        changed("log", old.log != new.log);
        changed(
            "allow_unauthenticated_remote",
            old.allow_unauthenticated_remote != new.allow_unauthenticated_remote,
        );
        // Read once at start: reported, and kept as they are in force. Each is named once,
        // for both.
        let mut kept = new;
        macro_rules! restart_only {
            ($($field:ident),* $(,)?) => {$(
                if kept.$field != old.$field {
                    report.needs_restart.push(stringify!($field));
                    kept.$field = old.$field.clone();
                }
            )*};
        }
        restart_only!(
            listen,
            v2_listen,
            data_dir,
            plugins_dir,
            builtin_types,
            cache_dir,
            hot_reload,
            increment_creates,
            durability,
            plugin_deadline_ms,
            plugin_memory_mib,
            plugin_file_mib,
            compaction_interval,
            earliest_time,
            max_time_ahead,
            mqtt,
        );

        // Everything is checked: apply. The log level first, since it may still fail.
        if old.log != kept.log
            && let Some(log) = self.log.lock().ok().and_then(|l| l.clone())
        {
            log(&kept.log)?;
        }
        self.db
            .set_default_retention(kept.retention.clone(), default_retention);
        self.connections
            .resize(connection_cap(kept.max_connections));
        self.unauthenticated.resize(kept.max_unauthenticated.max(1));
        self.live.send_replace(Arc::new(live));
        if let Ok(mut f) = self.in_force.lock() {
            *f = kept;
        }
        self.db
            .stats()
            .config_loaded(text.map(crate::auth::hash_token));
        Ok(report)
    }
}

/// File descriptors of the process's limit kept for storage (journal, tables, their
/// compactions) and the plugins folder: connections never take these, so a flood of them
/// cannot leave fjall unable to open a file.
pub const STORAGE_FDS: u64 = 256;

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

impl crate::session::Reload for Control {
    fn reload_config(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::Result<Json>> + Send + '_>> {
        Box::pin(async move {
            self.reload()
                .await
                .map(|report| report.to_json())
                .map_err(|e| crate::Error::ConfigRefused(format!("{e:#}")))
        })
    }
}
