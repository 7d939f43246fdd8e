//! Configuration: defaults that just run, a TOML file, and command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::db::Retention;
use crate::plugins::Limits;
use crate::retention::PolicySpec;
use crate::session::ConnectionLimits;
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
    /// Where the database lives. Default = `./data`.
    pub data_dir: PathBuf,
    /// Where plugin components are loaded from; they add types or replace built-in ones by
    /// name. Default = `./plugins`; a missing directory just means no extra types.
    pub plugins_dir: PathBuf,
    /// Load the built-in types compiled into the binary. Default = true.
    pub builtin_types: bool,
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
    /// Seconds between background compaction runs; 0 = only when a `compact` request asks.
    /// Default = 60.
    pub compaction_interval: u64,
    /// The retention policy of keys no `retention` request covers and whose type chooses
    /// none (the plugin's `default-retention`; every built-in type chooses one). Default =
    /// raw points for 7 days, then 1-minute summaries for 30 days, 1-hour summaries for 2
    /// years, 1-day summaries forever.
    pub retention: PolicySpec,
    /// Most requests in one array frame. Default = 10 000.
    pub max_batch: usize,
    /// Most keys one connection may be subscribed to at once. Default = 10 000.
    pub max_subscriptions: usize,
    /// Tokens and what each may do (`[auth]`). Default = disabled.
    pub auth: AuthConfig,
    /// Serve wss:// with this certificate and key (`[tls]`). Default = none (plain ws://).
    pub tls: Option<TlsConfig>,
    /// Start even though a listener is reachable from other machines while auth is disabled.
    /// Default = false: such a server refuses to start.
    pub allow_unauthenticated_remote: bool,
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
            data_dir: PathBuf::from("data"),
            plugins_dir: PathBuf::from("plugins"),
            builtin_types: true,
            hot_reload: true,
            increment_creates: Some("counter".into()),
            durability: DurabilityConfig::Named(DurabilityName::Sync),
            plugin_deadline_ms: 500,
            plugin_memory_mib: 64,
            plugin_file_mib: 64,
            max_frame_bytes: 1 << 20,
            push_queue: 10_000,
            compaction_interval: 60,
            retention: PolicySpec::default(),
            max_batch: 10_000,
            max_subscriptions: 10_000,
            auth: AuthConfig::default(),
            tls: None,
            allow_unauthenticated_remote: false,
        }
    }
}

impl Config {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Refuses settings that would expose an open server: a listener on a non-loopback
    /// address while auth is disabled, unless `allow_unauthenticated_remote` says so.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.auth.enabled || self.allow_unauthenticated_remote {
            return Ok(());
        }
        for addr in std::iter::once(self.listen).chain(self.v2_listen) {
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
        }
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
