//! One connection's state beyond its socket: what it may do (its [`Access`]) and the limits
//! that keep one client from using up the server. The protocol asks it before every command.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::auth::{Access, Auth, Permission};
use crate::cmd::Command;
use crate::error::{Error, Result};
pub use crate::limits::ConnectionLimits;

/// What a `reload` request runs: reading the config again and applying it, answering the
/// report as JSON or `config_refused` (implemented by [`crate::live::Control`]; a trait so
/// that sessions, below the server's live state, do not depend on it).
pub trait Reload: Send + Sync {
    fn reload_config(&self) -> Pin<Box<dyn Future<Output = Result<Json>> + Send + '_>>;
}

/// One connection's access and the bookkeeping its limits need.
pub struct Session {
    access: Access,
    auth: Arc<Auth>,
    limits: ConnectionLimits,
    subscriptions: HashSet<String>,
    /// The server's live configuration, for a `reload` request.
    control: Option<Arc<dyn Reload>>,
    /// The peer is on this machine (a loopback address): only such a peer may `reload`.
    local: bool,
}

impl Session {
    /// A connection that starts with `access` (see [`Auth::access`]).
    pub fn new(auth: Arc<Auth>, access: Access, limits: ConnectionLimits) -> Session {
        Session {
            access,
            auth,
            limits,
            subscriptions: HashSet::new(),
            control: None,
            local: false,
        }
    }

    /// Lets the connection ask for a config reload, if the peer is `local`.
    pub fn with_control(mut self, control: Arc<dyn Reload>, local: bool) -> Session {
        self.control = Some(control);
        self.local = local;
        self
    }

    /// Recomputes the connection's access from the tokens of a reloaded config. Returns the
    /// subscriptions it lost (it may no longer subscribe to or read those keys), or why the
    /// connection must close: its token was revoked or removed, or auth was switched on
    /// under a connection that never presented a token.
    pub fn reauthorize(&mut self, auth: Arc<Auth>) -> Result<Vec<String>, &'static str> {
        self.access = match (&self.access, auth.enabled()) {
            (_, false) => Access::Open,
            (Access::Open, true) => return Err("authentication required"),
            (Access::Anonymous, true) => Access::Anonymous,
            (Access::Token(grants), true) => match auth.regrant(grants) {
                Some(grants) => Access::Token(grants),
                None => return Err("token revoked"),
            },
        };
        self.auth = auth;
        let lost: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|key| {
                !(self.access.may(Permission::Subscribe, key)
                    && self.access.may(Permission::Read, key))
            })
            .cloned()
            .collect();
        for key in &lost {
            self.subscriptions.remove(key);
        }
        Ok(lost)
    }

    /// `{"reload": {}}`: reads the config again and applies it (see [`crate::live`]).
    pub async fn reload(&self) -> Result<Json> {
        if !self.local {
            return Err(Error::Forbidden {
                permission: "local",
                key: "*".into(),
            });
        }
        let control = self
            .control
            .as_ref()
            .ok_or_else(|| Error::ConfigRefused("this server cannot reload".into()))?;
        control.reload_config().await
    }

    /// A connection of a server without auth and with the default limits.
    pub fn open() -> Session {
        Session::new(
            Arc::new(Auth::disabled()),
            Access::Open,
            ConnectionLimits::default(),
        )
    }

    /// The connection's limits.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// The connection's current access.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// `{"auth": {"token": "..."}}`. A wrong token leaves the access as it was. With auth
    /// disabled any token is accepted, so a client configured with one still works.
    pub fn authenticate(&mut self, args: &Json) -> Result<()> {
        let Some(token) = args.get("token").and_then(Json::as_str) else {
            return Err(Error::query("auth takes {\"token\": \"...\"}"));
        };
        if !self.auth.enabled() {
            return Ok(());
        }
        let grants = self.auth.check(token)?;
        tracing::debug!(token = %grants.name, "authenticated");
        self.access = Access::Token(grants);
        Ok(())
    }

    /// Whether `command` may run on this connection now: its permission, and the
    /// subscription limit for a `sub`. A write that would create its key is allowed to only
    /// where the token may also define the key.
    pub fn admit(&mut self, command: &mut Command) -> Result<()> {
        self.access.authorize(command)?;
        match command {
            Command::Put { key, create, .. } | Command::Add { key, create, .. } => {
                *create = self.access.may(Permission::Define, key);
                Ok(())
            }
            Command::Sub { key, .. }
                if !self.subscriptions.contains(key)
                    && self.subscriptions.len() >= self.limits.max_subscriptions =>
            {
                Err(Error::LimitExceeded(format!(
                    "at most {} subscriptions per connection",
                    self.limits.max_subscriptions
                )))
            }
            Command::Keys { reader, .. } | Command::Export { reader, .. } => {
                *reader = self.access.clone();
                Ok(())
            }
            Command::Unsub { key, .. } => {
                self.subscriptions.remove(key);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records a subscription that succeeded.
    pub fn subscribed(&mut self, key: String) {
        self.subscriptions.insert(key);
    }
}
