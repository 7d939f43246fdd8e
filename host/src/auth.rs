//! Who may do what. Tokens come from the config as SHA-256 hashes (the secret itself is never
//! stored), a presented token is hashed and compared with every configured hash in constant
//! time, and each token grants four permissions — read, write, subscribe, define — on key
//! patterns (`*` matches any run of characters: `sensor.*`, `*`).
//!
//! A connection's [`Access`] decides each command before it runs: [`Access::authorize`].

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
pub use crate::pattern::glob;

/// The `[auth]` section of the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Every connection must present a token before anything else. Default = false.
    pub enabled: bool,
    /// The tokens (`[[auth.tokens]]`). Default = none.
    pub tokens: Vec<TokenConfig>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs, never to clients.
    pub name: String,
    /// `"sha256:<64 hex digits>"`, as printed by `komoku hash-token`.
    pub hash: String,
    /// A revoked token is refused like a wrong one. Default = false.
    #[serde(default)]
    pub revoked: bool,
    /// Key patterns this token may `get`, `last`, `fetch`, see in `keys` and receive pushes for.
    #[serde(default)]
    pub read: Vec<String>,
    /// Key patterns this token may `put`, `increment`, `decrement`, `delete`.
    #[serde(default)]
    pub write: Vec<String>,
    /// Key patterns this token may `sub` to (pushes also need `read`).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Key patterns this token may `define`.
    #[serde(default)]
    pub define: Vec<String>,
}

/// What a request needs on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Subscribe,
    Define,
}

impl Permission {
    /// The word used in the config and in `forbidden` replies.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Subscribe => "subscribe",
            Permission::Define => "define",
        }
    }
}

/// The key patterns one token is granted, per permission.
#[derive(Debug)]
pub struct Grants {
    /// The token's name from the config.
    pub name: String,
    /// The token's hash: a reloaded config finds the same token by it.
    hash: [u8; 32],
    read: Vec<String>,
    write: Vec<String>,
    subscribe: Vec<String>,
    define: Vec<String>,
}

impl Grants {
    /// Whether this token has `permission` on `key`.
    pub fn allows(&self, permission: Permission, key: &str) -> bool {
        let patterns = match permission {
            Permission::Read => &self.read,
            Permission::Write => &self.write,
            Permission::Subscribe => &self.subscribe,
            Permission::Define => &self.define,
        };
        patterns.iter().any(|p| glob(p, key))
    }
}

struct Token {
    hash: [u8; 32],
    revoked: bool,
    grants: Arc<Grants>,
}

/// The configured tokens, ready to check.
pub struct Auth {
    enabled: bool,
    tokens: Vec<Token>,
}

impl Auth {
    /// Checks the config: every hash well formed, every name unique.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Auth> {
        let mut tokens = Vec::with_capacity(config.tokens.len());
        for t in &config.tokens {
            let hash = parse_hash(&t.hash).map_err(|e| {
                anyhow::anyhow!(
                    "auth token {:?}: {e} (make one with `komoku hash-token`)",
                    t.name
                )
            })?;
            if config.tokens.iter().filter(|o| o.name == t.name).count() > 1 {
                anyhow::bail!("auth token name {:?} is used twice", t.name);
            }
            tokens.push(Token {
                hash,
                revoked: t.revoked,
                grants: Arc::new(Grants {
                    name: t.name.clone(),
                    hash,
                    read: t.read.clone(),
                    write: t.write.clone(),
                    subscribe: t.subscribe.clone(),
                    define: t.define.clone(),
                }),
            });
        }
        if config.enabled && !tokens.iter().any(|t| !t.revoked) {
            tracing::warn!("auth is enabled but no token is usable: no client can connect");
        }
        Ok(Auth {
            enabled: config.enabled,
            tokens,
        })
    }

    /// Auth switched off: every connection may do everything.
    pub fn disabled() -> Auth {
        Auth {
            enabled: false,
            tokens: Vec::new(),
        }
    }

    /// Whether connections must present a token.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The grants of a presented token, or `unauthorized` (wrong or revoked: the client is
    /// not told which). Every configured hash is compared, in constant time, so the time
    /// taken says nothing about how close a guess was or which token matched.
    pub fn check(&self, presented: &str) -> Result<Arc<Grants>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        match found {
            Some(t) if !t.revoked => Ok(t.grants.clone()),
            Some(t) => {
                tracing::warn!(token = %t.grants.name, "a revoked token was presented");
                Err(Error::Unauthorized("token revoked".into()))
            }
            None => {
                tracing::warn!("a wrong token was presented");
                Err(Error::Unauthorized("wrong token".into()))
            }
        }
    }

    /// The grants the same token has here (after a reload), unless it was removed or
    /// revoked.
    pub fn regrant(&self, old: &Grants) -> Option<Arc<Grants>> {
        self.tokens
            .iter()
            .find(|t| t.hash == old.hash && !t.revoked)
            .map(|t| t.grants.clone())
    }

    /// The access of a new connection that presented `tokens` (in its URL and headers): none
    /// leaves it anonymous until an `auth` request; every one presented must be valid and
    /// they must be the same token, else the upgrade is refused. A wrong token beside a good
    /// one is still a wrong token.
    pub fn access_of(&self, tokens: &[String]) -> Result<Access> {
        if !self.enabled {
            return Ok(Access::Open);
        }
        let mut granted: Option<Arc<Grants>> = None;
        for token in tokens {
            let grants = self.check(token)?;
            match &granted {
                Some(first) if !Arc::ptr_eq(first, &grants) => {
                    return Err(Error::Unauthorized("two different tokens".into()));
                }
                _ => granted = Some(grants),
            }
        }
        Ok(granted.map_or(Access::Anonymous, Access::Token))
    }
}

/// What one connection may do right now.
#[derive(Debug, Clone)]
pub enum Access {
    /// Auth is disabled: everything.
    Open,
    /// Auth is enabled and no token was accepted yet: nothing but `auth`.
    Anonymous,
    /// Whatever the token grants.
    Token(Arc<Grants>),
}

impl Access {
    /// Whether the connection may use `permission` on `key`.
    pub fn may(&self, permission: Permission, key: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Anonymous => false,
            Access::Token(g) => g.allows(permission, key),
        }
    }

    fn require(&self, permission: Permission, key: &str) -> Result<()> {
        match self {
            Access::Anonymous => Err(Error::Unauthorized("authenticate first".into())),
            _ if self.may(permission, key) => Ok(()),
            _ => Err(Error::Forbidden {
                permission: permission.name(),
                key: key.to_string(),
            }),
        }
    }

    /// Decides whether `command` may run: every permission it declares (see [`Needs`]). An
    /// anonymous connection may run nothing; `keys` runs for any token, its answer filtered
    /// by [`Access::may`] read.
    pub fn authorize(&self, command: &impl Needs) -> Result<()> {
        if matches!(self, Access::Open) {
            return Ok(());
        }
        if matches!(self, Access::Anonymous) {
            return Err(Error::Unauthorized("authenticate first".into()));
        }
        command.needs(&mut |permission, key| self.require(permission, key))
    }
}

/// A request that says which permissions it needs, on which keys. Each command declares its
/// own (in its file under [`crate::cmd`]); auth only checks them.
pub trait Needs {
    /// Calls `require` with each (permission, key) the request needs, stopping at the first
    /// refusal.
    fn needs(&self, require: &mut dyn FnMut(Permission, &str) -> Result<()>) -> Result<()>;
}

/// `"sha256:<hex>"` of a token, the form the config stores.
pub fn hash_token(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A new random token: 32 bytes from the OS as 64 hex digits (URL-safe).
pub fn new_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn parse_hash(text: &str) -> std::result::Result<[u8; 32], String> {
    let hex = text
        .strip_prefix("sha256:")
        .ok_or("hash must start with \"sha256:\"")?;
    if hex.len() != 64 || !hex.is_ascii() {
        return Err("hash must be 64 hex digits after \"sha256:\"".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "hash must be 64 hex digits after \"sha256:\"")?;
    }
    Ok(out)
}

/// Every token a websocket upgrade request carries: `Authorization: Bearer <token>` (the
/// scheme in any case, as RFC 9110 says) and each `?token=<token>` in the URL (how the
/// unmodified Ruby client sends one). An `Authorization` header of another scheme (`Basic`,
/// added by a proxy) is not Komoku's and is ignored. [`Auth::access_of`] checks them all.
pub fn tokens_in_request(query: Option<&str>, authorization: Option<&[u8]>) -> Vec<String> {
    let mut tokens = Vec::new();
    if let Some(value) = authorization.and_then(|v| std::str::from_utf8(v).ok()) {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            tokens.push(rest.trim().to_string());
        }
    }
    if let Some(query) = query {
        tokens.extend(
            query
                .split('&')
                .filter_map(|pair| pair.strip_prefix("token="))
                .map(percent_decode),
        );
    }
    tokens
}

/// `%XX` and `+` decoding of a query value; malformed escapes are kept as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_against_hashes_and_revocation() -> anyhow::Result<()> {
        let config: AuthConfig = toml::from_str(&format!(
            r#"
            enabled = true
            [[tokens]]
            name = "good"
            hash = "{}"
            read = ["*"]
            [[tokens]]
            name = "old"
            hash = "{}"
            revoked = true
            read = ["*"]
            "#,
            hash_token("s3cret"),
            hash_token("old")
        ))?;
        let auth = Auth::from_config(&config)?;
        assert_eq!(auth.check("s3cret").map(|g| g.name.clone())?, "good");
        assert_eq!(
            auth.check("wrong")
                .err()
                .map(|e| e.code().to_string())
                .as_deref(),
            Some("unauthorized")
        );
        assert_eq!(
            auth.check("old")
                .err()
                .map(|e| e.code().to_string())
                .as_deref(),
            Some("unauthorized")
        );
        assert!(matches!(auth.access_of(&[])?, Access::Anonymous));
        Ok(())
    }

    #[test]
    fn malformed_hashes_are_refused_at_start() {
        for bad in [
            "s3cret",
            "sha256:abc",
            &format!("sha256:{}", "zz".repeat(32)),
        ] {
            let config = AuthConfig {
                enabled: true,
                tokens: vec![TokenConfig {
                    name: "t".into(),
                    hash: bad.to_string(),
                    revoked: false,
                    read: vec![],
                    write: vec![],
                    subscribe: vec![],
                    define: vec![],
                }],
            };
            assert!(Auth::from_config(&config).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_found_in_headers_and_urls() {
        let found = |query, header: Option<&[u8]>| tokens_in_request(query, header);
        assert_eq!(found(Some("a=1&token=x%2By+z"), None), ["x+y z"]);
        assert_eq!(found(Some("token=%zz%4"), None), ["%zz%4"]);
        assert_eq!(
            found(Some("token=url"), Some(b"Bearer hdr")),
            ["hdr", "url"]
        );
        assert_eq!(found(None, Some(b"BEARER hdr")), ["hdr"]);
        assert_eq!(found(None, Some(b"bEaReR  hdr ")), ["hdr"]);
        assert_eq!(found(None, Some(b"Bearer")), [""]);
        assert!(found(None, Some(b"Basic xyz")).is_empty());
        assert!(found(Some("tokenx=1"), None).is_empty());
    }

    #[test]
    fn every_presented_token_must_be_right() -> anyhow::Result<()> {
        let grant = |name: &str, secret: &str| TokenConfig {
            name: name.into(),
            hash: hash_token(secret),
            revoked: false,
            read: vec!["*".into()],
            write: vec![],
            subscribe: vec![],
            define: vec![],
        };
        let auth = Auth::from_config(&AuthConfig {
            enabled: true,
            tokens: vec![grant("a", "good"), grant("b", "other")],
        })?;
        let of = |tokens: &[&str]| {
            let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
            auth.access_of(&tokens)
        };
        assert!(matches!(of(&[])?, Access::Anonymous));
        assert!(matches!(of(&["good"])?, Access::Token(_)));
        assert!(matches!(of(&["good", "good"])?, Access::Token(_)));
        for refused in [
            &["good", "wrong"][..],
            &["wrong", "good"],
            &["good", "other"],
        ] {
            assert!(of(refused).is_err(), "{refused:?}");
        }
        Ok(())
    }
}
