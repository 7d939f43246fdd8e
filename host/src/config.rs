//! Configuration: defaults that just run, a TOML file, and command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::db::{Retention, TimeWindow};
use crate::limits::ConnectionLimits;
use crate::mqtt::MqttConfig;
use crate::plugins::Limits;
use crate::retention::PolicySpec;
use crate::store::Durability;
use crate::tls::TlsConfig;

/// Everything a server needs to start. Every field has a default (see each).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where clients connect (v1 at `/`, v2 at `/v2`). Default = `127.0.0.1:7373`.
    pub listen: SocketAddr,
    /// An extra listener that speaks v2 on every path. Default = none.
    pub v2_listen: Option<SocketAddr>,
    /// A listener for the binary protocol: length-prefixed protobuf frames (`tcp://`, or
    /// `tcps://` with `[tls]`; see docs/tcp-protocol.md). Default = none (off).
    pub tcp_listen: Option<SocketAddr>,
    /// Where the database lives. Default = `./data`.
    pub data_dir: PathBuf,
    /// Where plugin components are loaded from; they add types or replace built-in ones by
    /// name. Default = `./plugins`; a missing directory just means no extra types.
    pub plugins_dir: PathBuf,
    /// Load the built-in types compiled into the binary. Default = true.
    pub builtin_types: bool,
    /// Where compiled plugins are kept, so a start does not compile them again (see
    /// [`crate::plugins::cache`]); `""` keeps them in memory only. Default =
    /// `$XDG_CACHE_HOME/komoku`, else `$HOME/.cache/komoku`, else none.
    pub cache_dir: Option<PathBuf>,
    /// Reload plugins when files in `plugins_dir` change. Default = true.
    pub hot_reload: bool,
    /// The type of a key created by `increment`/`decrement` on a missing key; none means such
    /// a request is refused with `unknown_key`. Default = `"counter"`.
    pub increment_creates: Option<String>,
    /// When an acknowledged write is on disk: `"sync"` (default: fsynced before the ack;
    /// survives kill -9 and power loss) or a number of milliseconds (acked once handed to the
    /// OS; fsynced at least that often, so a power loss can lose that window).
    pub durability: DurabilityConfig,
    /// Wall-clock budget of one plugin call, in milliseconds. Default = 500.
    pub plugin_deadline_ms: u64,
    /// Memory one plugin instance may use, in MiB. Default = 64.
    pub plugin_memory_mib: usize,
    /// Largest plugin file loaded, in MiB; a larger one is refused unread. Default = 64.
    pub plugin_file_mib: u64,
    /// Largest websocket message accepted, in bytes. Default = 1 MiB.
    pub max_frame_bytes: usize,
    /// Pushes queued for one connection before it counts as too slow and is dropped.
    /// Default = 10 000.
    pub push_queue: usize,
    /// Bytes of pushes queued for one connection before it counts as too slow and is
    /// dropped (one push alone is always queued, however large). Default = 16 MiB.
    pub push_queue_bytes: usize,
    /// Most open connections, all listeners together; more are closed as they arrive. The
    /// server also keeps 256 file descriptors of its soft limit (raised to the hard limit at
    /// start) for storage, and lowers this cap to fit. Default = 4 096.
    pub max_connections: usize,
    /// Most connections open at once that have not authenticated yet (with auth on); more
    /// are refused with HTTP 503 at the upgrade. Default = 128.
    pub max_unauthenticated: usize,
    /// Seconds a connection may stay unauthenticated (with auth on) before it is closed
    /// (close code 1008, reason `authentication timeout`). Default = 10.
    pub auth_timeout: u64,
    /// Seconds between background compaction runs; 0 = only when a `compact` request asks.
    /// Default = 60.
    pub compaction_interval: u64,
    /// The retention policy of keys no `retention` request covers and whose type chooses
    /// none (the plugin's `default-retention`; every built-in type chooses one). Default =
    /// raw points for 7 days, then 1-minute summaries for 30 days, 1-hour summaries for 2
    /// years, 1-day summaries forever.
    pub retention: PolicySpec,
    /// The earliest time a write may carry (`put`'s `time`), in seconds since the epoch;
    /// earlier ones are refused with `invalid_time`. Default = 0 (1970-01-01).
    pub earliest_time: f64,
    /// How far ahead of the server's clock a write's time may be, in seconds; further ones
    /// are refused with `invalid_time`. Default = 86 400 (a day: a server whose clock lags,
    /// such as a board without a battery clock that boots at its last shutdown time until NTP
    /// answers, still takes correct times; milliseconds sent as seconds are refused).
    pub max_time_ahead: f64,
    /// Most requests in one array frame. Default = 10 000.
    pub max_batch: usize,
    /// Most keys one connection may be subscribed to at once. Default = 10 000.
    pub max_subscriptions: usize,
    /// Tokens and what each may do (`[auth]`). Default = disabled.
    pub auth: AuthConfig,
    /// Serve wss:// with this certificate and key (`[tls]`). Default = none (plain ws://).
    pub tls: Option<TlsConfig>,
    /// What is logged, in `RUST_LOG` syntax (`"info"`, `"debug"`, `"komoku=debug,info"`).
    /// The `RUST_LOG` variable, when set, wins at start; a reload applies this setting.
    /// Default = `"info"`.
    pub log: String,
    /// Start even though a listener is reachable from other machines while auth is disabled.
    /// Default = false: such a server refuses to start.
    pub allow_unauthenticated_remote: bool,
    /// MQTT bridges (`[[mqtt]]`): a broker's topics into keys, keys out to topics (see
    /// [`crate::mqtt`]). Read at start only: a reload reports a change as needing a restart.
    /// Default = none.
    pub mqtt: Vec<MqttConfig>,
}

/// `durability = "sync"` or `durability = 50` (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DurabilityConfig {
    Named(DurabilityName),
    IntervalMs(u64),
}

/// The named durability modes.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityName {
    Sync,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7373)),
            v2_listen: None,
            tcp_listen: None,
            data_dir: PathBuf::from("data"),
            plugins_dir: PathBuf::from("plugins"),
            builtin_types: true,
            cache_dir: default_cache_dir(),
            hot_reload: true,
            increment_creates: Some("counter".into()),
            durability: DurabilityConfig::Named(DurabilityName::Sync),
            plugin_deadline_ms: 500,
            plugin_memory_mib: 64,
            plugin_file_mib: 64,
            max_frame_bytes: 1 << 20,
            push_queue: 10_000,
            push_queue_bytes: 16 << 20,
            max_connections: 4096,
            max_unauthenticated: 128,
            auth_timeout: 10,
            compaction_interval: 60,
            retention: PolicySpec::default(),
            earliest_time: 0.0,
            max_time_ahead: 86_400.0,
            max_batch: 10_000,
            max_subscriptions: 10_000,
            auth: AuthConfig::default(),
            tls: None,
            log: "info".into(),
            allow_unauthenticated_remote: false,
            mqtt: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        Self::read(path).map(|(config, _)| config)
    }

    /// [`Config::from_file`], also returning the file's text.
    pub fn read(path: &Path) -> anyhow::Result<(Config, String)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Ok((config, text))
    }

    /// Refuses settings that would expose an open server: a listener on a non-loopback
    /// address while auth is disabled, unless `allow_unauthenticated_remote` says so.
    pub fn check(&self) -> anyhow::Result<()> {
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| anyhow::anyhow!("log = {:?}: {e}", self.log))?;
        for mqtt in &self.mqtt {
            mqtt.check()?;
        }
        if self.auth.enabled || self.allow_unauthenticated_remote {
            return Ok(());
        }
        for addr in std::iter::once(self.listen)
            .chain(self.v2_listen)
            .chain(self.tcp_listen)
        {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "refusing to listen on {addr} without authentication: anyone who can reach \
                     it could read and change every key. Enable [auth] with tokens, listen on \
                     127.0.0.1, or set allow_unauthenticated_remote = true if the network is \
                     trusted"
                );
            }
        }
        Ok(())
    }

    /// The per-connection limits.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_frame_bytes: self.max_frame_bytes,
            push_queue: self.push_queue.max(1),
            push_queue_bytes: self.push_queue_bytes.max(1),
            auth_timeout: Duration::from_secs(self.auth_timeout.max(1)),
            max_batch: self.max_batch,
            max_subscriptions: self.max_subscriptions,
        }
    }

    /// The storage durability mode.
    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityConfig::Named(DurabilityName::Sync) => Durability::Sync,
            DurabilityConfig::IntervalMs(ms) => {
                Durability::Interval(Duration::from_millis(ms.max(1)))
            }
        }
    }

    /// How history is compacted.
    pub fn retention(&self) -> Retention {
        Retention {
            default: self.retention.clone(),
            every: (self.compaction_interval > 0)
                .then(|| Duration::from_secs(self.compaction_interval)),
            times: TimeWindow {
                earliest: self.earliest_time,
                ahead: self.max_time_ahead,
            },
        }
    }

    /// Where compiled plugins are kept, if anywhere.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty())
    }

    /// The plugin sandbox limits.
    pub fn plugin_limits(&self) -> Limits {
        Limits {
            deadline: Duration::from_millis(self.plugin_deadline_ms.max(1)),
            memory_bytes: self.plugin_memory_mib.max(1) << 20,
            file_bytes: self.plugin_file_mib.max(1) << 20,
            ..Limits::default()
        }
    }
}

/// `$XDG_CACHE_HOME/komoku`, else `$HOME/.cache/komoku` (the XDG base directory rules).
fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .map(|cache| cache.join("komoku"))
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        crate::Config::default().connection_limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() -> anyhow::Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../komoku.example.toml");
        let config = Config::from_file(&path)?;
        assert_eq!(config.listen, Config::default().listen);
        assert_eq!(config.durability(), Durability::Sync);
        assert_eq!(config.retention, PolicySpec::default());
        assert_eq!(config.compaction_interval, 60);
        assert_eq!(config.retention().times, TimeWindow::default());
        Ok(())
    }

    #[test]
    fn an_open_server_refuses_to_listen_beyond_loopback() -> anyhow::Result<()> {
        let remote: Config = toml::from_str("listen = \"0.0.0.0:7373\"")?;
        let message = remote
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("without authentication"), "{message}");
        let v2: Config = toml::from_str("v2_listen = \"192.168.1.2:7374\"")?;
        assert!(v2.check().is_err());
        let allowed: Config =
            toml::from_str("listen = \"0.0.0.0:7373\"\nallow_unauthenticated_remote = true")?;
        allowed.check()?;
        let authed: Config = toml::from_str("listen = \"[::]:7373\"\n[auth]\nenabled = true")?;
        authed.check()?;
        Config::default().check()
    }

    #[test]
    fn interval_durability_parses() -> anyhow::Result<()> {
        let config: Config = toml::from_str("durability = 20")?;
        assert_eq!(
            config.durability(),
            Durability::Interval(Duration::from_millis(20))
        );
        assert!(
            toml::from_str::<Config>("listn = \"x\"").is_err(),
            "unknown fields are refused"
        );
        Ok(())
    }
}
