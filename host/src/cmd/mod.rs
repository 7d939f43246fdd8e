//! The command set, shared by every transport: parse a request object, declare the
//! permissions it needs, then apply it. One file per command (or per pair that shares its
//! arguments, like `sub`/`unsub`, `increment`/`decrement`, `fetch`/`query`); this module
//! only dispatches.
//!
//! Parsing never touches the database; applying never looks at JSON framing. How replies
//! are wrapped (v1 bare, v2 `{"result": ...}`) is the protocol module's business.

mod add;
mod compact;
mod define;
mod delete;
mod export;
mod get;
mod history;
mod keys;
mod last;
mod ping;
mod put;
mod reload;
mod retention;
mod stats;
mod sub;
mod tiers;
mod types;

use serde_json::{Map, Value as Json};

use crate::auth::{Access, Needs, Permission};
use crate::db::{Db, Durable, ExportCursor, TierPage};
use crate::error::{Error, Result};
use crate::pubsub::Subscriber;
use crate::query::Query;
use crate::query::fetch::FetchOpts;
use crate::retention::PolicySpec;

/// How a command states a permission it needs (see [`Needs`]).
type Require<'a> = &'a mut dyn FnMut(Permission, &str) -> Result<()>;

/// Most keys one `keys` answer lists; with more keys, `keys` needs `limit` (at most this)
/// and pages with `after`.
pub const MAX_KEYS: usize = 100_000;

/// One request.
#[derive(Debug, Clone)]
pub enum Command {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Json,
        time: Option<f64>,
        /// Whether this put may create the key (its first write defines it, so the session
        /// clears this for a token without define on the key). Parsed as true.
        create: bool,
    },
    Last {
        key: String,
    },
    /// `keys`: the keys in name order, optionally only those matching `pattern` (`*` any
    /// run of characters), after the name `after`, at most `limit` of them.
    Keys {
        include_value: bool,
        /// Adds each key's latest time (`include: ["time"]`).
        include_time: bool,
        pattern: Option<String>,
        after: Option<String>,
        limit: Option<usize>,
        /// Who lists: a page holds only keys it may read, so paging never stops early on
        /// a page the reader's grants emptied. Set by the session when it admits the command.
        reader: Access,
    },
    Define {
        keys: Vec<Definition>,
    },
    /// `sub`; with `since`, the key's history from then is returned first, and with
    /// `since` or `seq`, pushes carry the key's sequence number.
    Sub {
        key: String,
        since: Option<f64>,
        numbered: bool,
    },
    Unsub {
        key: String,
    },
    Fetch {
        key: String,
        opts: FetchOpts,
    },
    /// Any question about a key's past (see [`crate::query`]).
    Query(Query),
    Stats,
    /// The loaded key types and the state of each plugin file.
    Types,
    Ping(Json),
    /// `increment`, or `decrement` (with the step negated).
    Add {
        key: String,
        step: f64,
        decrement: bool,
        /// As for `Put`.
        create: bool,
    },
    Delete {
        key: String,
    },
    /// `retention`: list the policies (`spec` and `remove` unset), set one, or remove one.
    Retention {
        pattern: Option<String>,
        spec: Option<PolicySpec>,
        remove: bool,
    },
    /// `compact`: run compaction now (every key, or one) and answer when done.
    Compact {
        key: Option<String>,
    },
    /// `tiers`: a page of a key's compacted history (summaries, gaps, watermarks), after
    /// `(step, bucket start)`, at most `limit` summary rows.
    Tiers {
        key: String,
        after: Option<(f64, f64)>,
        limit: usize,
    },
    /// `export`: a page of a consistent dump of the keys the reader may read (see
    /// [`export`]), from the snapshot `snapshot` (a new one when unset) at `after`.
    Export {
        pattern: Option<String>,
        snapshot: Option<u64>,
        after: Option<ExportCursor>,
        limit: usize,
        /// Who exports (set by the session, as for `Keys`).
        reader: Access,
    },
    /// `load_tiers`: stores a page `tiers` gave into a key of the same type and options.
    LoadTiers {
        key: String,
        page: Box<TierPage>,
    },
    /// `reload`: read the config again and apply it (answered by the session, which holds
    /// the server's live configuration; see [`crate::live`]).
    Reload,
    /// A request name Komoku does not know.
    Unknown(String),
}

/// One key of a `define`.
#[derive(Debug, Clone)]
pub struct Definition {
    pub key: String,
    pub type_name: Option<String>,
    pub opts: Map<String, Json>,
}

/// What a command answers, before the dialect wraps it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Done, nothing to return (`"ack"` in v1, `"ok"` in v2).
    Ack,
    /// A value.
    Value(Json),
}

impl Command {
    /// The request's name, as counted in `stats`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "get",
            Command::Put { .. } => "put",
            Command::Last { .. } => "last",
            Command::Keys { .. } => "keys",
            Command::Define { .. } => "define",
            Command::Sub { .. } => "sub",
            Command::Unsub { .. } => "unsub",
            Command::Fetch { .. } => "fetch",
            Command::Query(_) => "query",
            Command::Stats => "stats",
            Command::Types => "types",
            Command::Ping(_) => "ping",
            Command::Add {
                decrement: true, ..
            } => "decrement",
            Command::Add { .. } => "increment",
            Command::Delete { .. } => "delete",
            Command::Retention { .. } => "retention",
            Command::Compact { .. } => "compact",
            Command::Tiers { .. } => "tiers",
            Command::LoadTiers { .. } => "load_tiers",
            Command::Export { .. } => "export",
            Command::Reload => "reload",
            Command::Unknown(_) => "unknown",
        }
    }

    /// Reads one request object: `{"<name>": <args>}`, optionally with `"query_id"`.
    pub fn parse(request: &Map<String, Json>) -> Result<Command> {
        let mut names = request.iter().filter(|(k, _)| k.as_str() != "query_id");
        let (name, args) = match (names.next(), names.next()) {
            (Some(one), None) => one,
            (None, _) => return Ok(Command::Unknown(String::new())),
            (Some(_), Some(_)) => return Err(Error::query("a request holds exactly one command")),
        };
        match name.as_str() {
            "get" => get::parse(args),
            "put" => put::parse(args),
            "last" => last::parse(args),
            "keys" => keys::parse(args),
            "define" => define::parse(args),
            "sub" => sub::parse(args),
            "unsub" => sub::parse_unsub(args),
            "fetch" => history::parse_fetch(args),
            "query" => history::parse_query(args),
            "stats" => Ok(Command::Stats),
            "types" => Ok(Command::Types),
            "ping" => Ok(ping::parse(args)),
            "increment" | "decrement" => add::parse(name, args),
            "delete" => delete::parse(args),
            "retention" => retention::parse(args),
            "compact" => compact::parse(args),
            "tiers" => tiers::parse(args),
            "load_tiers" => tiers::parse_load(args),
            "export" => export::parse(args),
            "reload" => Ok(Command::Reload),
            other => Ok(Command::Unknown(other.to_string())),
        }
    }

    /// Applies the command for the connection whose push side is `me` and waits until its
    /// writes are durable.
    pub async fn apply(self, db: &Db, me: &Subscriber) -> Result<Reply> {
        let (reply, durable) = self.start(db, me).await?;
        durable.wait().await?;
        Ok(reply)
    }

    /// Applies the command, but returns as soon as its writes are queued (in order with every
    /// other operation on the same keys). The reply may only be sent once the returned
    /// [`Durable`] resolves; this lets one frame's many puts share an fsync.
    pub async fn start(self, db: &Db, me: &Subscriber) -> Result<(Reply, Durable)> {
        db.stats().count(self.name());
        let reply = match self {
            Command::Put {
                key,
                value,
                time,
                create,
            } => return put::start(db, &key, &value, time, create).await,
            Command::Add {
                key, step, create, ..
            } => return add::start(db, &key, step, create).await,
            Command::Define { keys } => return define::start(db, keys).await,
            Command::Retention {
                pattern,
                spec,
                remove,
            } => return retention::start(db, pattern, spec, remove).await,
            Command::Get { key } => get::apply(db, &key).await,
            Command::Last { key } => last::apply(db, &key).await,
            Command::Keys {
                include_value,
                include_time,
                pattern,
                after,
                limit,
                reader,
            } => {
                keys::apply(
                    db,
                    include_value,
                    include_time,
                    pattern.as_deref(),
                    after.as_deref(),
                    limit,
                    &reader,
                )
                .await
            }
            Command::Sub {
                key,
                since,
                numbered,
            } => sub::apply(db, me, &key, since, numbered).await,
            Command::Unsub { key } => Ok(sub::unsub(db, me, &key)),
            Command::Fetch { key, opts } => history::fetch(db, &key, opts).await,
            Command::Query(query) => history::query(db, query).await,
            Command::Stats => Ok(stats::apply(db)),
            Command::Types => Ok(types::apply(db)),
            Command::Ping(payload) => Ok(ping::apply(payload)),
            Command::Delete { key } => delete::apply(db, &key).await,
            Command::Compact { key } => compact::apply(db, key.as_deref()).await,
            Command::Tiers { key, after, limit } => tiers::apply(db, &key, after, limit).await,
            Command::LoadTiers { key, page } => tiers::apply_load(db, &key, *page).await,
            Command::Export {
                pattern,
                snapshot,
                after,
                limit,
                reader,
            } => export::apply(db, pattern, snapshot, after, limit, reader).await,
            Command::Reload => reload::apply(),
            Command::Unknown(name) => Err(Error::query(format!("unknown request {name:?}"))),
        };
        Ok((reply?, Durable::done()))
    }
}

impl Needs for Command {
    // Exhaustive on purpose: a new command must say what it needs (in its own file).
    fn needs(&self, require: Require) -> Result<()> {
        match self {
            Command::Get { key } => get::needs(key, require),
            Command::Last { key } => last::needs(key, require),
            Command::Fetch { key, .. } => history::needs(key, require),
            Command::Query(query) => history::needs(&query.key, require),
            // Creating a key by its first write also needs define: the session tells the
            // command whether it may create (see `Session::admit`).
            Command::Put { key, .. } => put::needs(key, require),
            Command::Add { key, .. } => add::needs(key, require),
            Command::Delete { key } => delete::needs(key, require),
            Command::Sub { key, .. } => sub::needs(key, require),
            Command::Define { keys } => define::needs(keys, require),
            Command::Retention {
                pattern,
                spec,
                remove,
            } => retention::needs(pattern.as_deref(), spec.is_some() || *remove, require),
            Command::Compact { key } => compact::needs(key.as_deref(), require),
            Command::Tiers { key, .. } => tiers::needs(key, require),
            Command::LoadTiers { key, .. } => tiers::needs_load(key, require),
            Command::Reload => reload::needs(require),
            // Like `keys`: a page holds only what the reader may read.
            Command::Keys { .. }
            | Command::Export { .. }
            | Command::Unsub { .. }
            | Command::Stats
            | Command::Types
            | Command::Ping(_)
            | Command::Unknown(_) => Ok(()),
        }
    }
}

fn key_arg(args: &Json) -> Result<String> {
    match args.get("key") {
        Some(Json::String(k)) => Ok(k.clone()),
        Some(_) => Err(Error::query("key must be a string")),
        None => Err(Error::query("missing key")),
    }
}

/// The `limit` of a paged request (`keys`, `tiers`, `export`): unset, or a positive integer
/// up to `max` (`limit_exceeded` beyond, saying to page with `after`).
fn page_limit(args: &Json, command: &str, max: usize) -> Result<Option<usize>> {
    match args.get("limit") {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(0) | None => Err(Error::query(format!(
                "{command}.limit must be a positive integer"
            ))),
            Some(n) if n > max as u64 => Err(Error::LimitExceeded(format!(
                "{command}.limit is at most {max}: page with after"
            ))),
            Some(n) => Ok(Some(n as usize)),
        },
    }
}

fn optional_string(args: &Json, name: &str) -> Result<Option<String>> {
    match args.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::query(format!("{name} must be a string"))),
    }
}

fn optional_number(args: &Json, name: &str) -> Result<Option<f64>> {
    match args.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| Error::query(format!("{name} must be a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Command> {
        let json: Json =
            serde_json::from_str(text).map_err(|e| Error::InvalidJson(e.to_string()))?;
        Command::parse(
            json.as_object()
                .ok_or_else(|| Error::query("not an object"))?,
        )
    }

    #[test]
    fn define_reads_flat_and_nested_options() -> Result<()> {
        let Command::Define { keys } = parse(
            r#"{"define": {"a": {"type": "uptime", "max_time": 7, "opts": {"min_resolution": 1}}}}"#,
        )?
        else {
            panic!("not a define");
        };
        assert_eq!(keys[0].type_name.as_deref(), Some("uptime"));
        assert_eq!(
            Json::Object(keys[0].opts.clone()),
            json!({"max_time": 7, "min_resolution": 1})
        );
        Ok(())
    }

    #[test]
    fn wrong_shapes_are_invalid_queries_not_panics() {
        for bad in [
            r#"{"get": {"key": 5}}"#,
            r#"{"get": 5}"#,
            r#"{"put": {"key": "a"}}"#,
            r#"{"put": {"key": "a", "value": 1, "time": "x"}}"#,
            r#"{"fetch": {"key": "a", "opts": {"step": "5q"}}}"#,
            r#"{"get": {"key": "a"}, "put": {"key": "a", "value": 1}}"#,
            r#"{"compact": 1}"#,
            r#"{"compact": "x"}"#,
            r#"{"compact": null}"#,
            r#"{"compact": []}"#,
            r#"{"compact": true}"#,
            r#"{"compact": {"bogus": 1}}"#,
            r#"{"compact": {"key": 5}}"#,
            r#"{"fetch": {"key": "a", "opts": {"limit": 0}}}"#,
            r#"{"keys": {"limit": 0}}"#,
            r#"{"keys": {"limit": "5"}}"#,
            r#"{"keys": {"pattern": 5}}"#,
            r#"{"keys": {"after": ["a"]}}"#,
            r#"{"export": 5}"#,
            r#"{"export": {"limit": 0}}"#,
            r#"{"export": {"snapshot": -1}}"#,
            r#"{"export": {"snapshot": "1"}}"#,
            r#"{"export": {"after": {"key": "a"}}}"#,
            r#"{"export": {"snapshot": 1, "after": {"points_after": 5}}}"#,
            r#"{"export": {"snapshot": 1, "after": {"key": "a", "points_after": "x"}}}"#,
            r#"{"export": {"snapshot": 1, "after": {"key": "a", "tiers_after": [1]}}}"#,
            r#"{"export": {"snapshot": 1, "after": {"key": "a", "points_after": 1, "tiers_after": [1, 2]}}}"#,
            r#"{"export": {"pattern": 5}}"#,
        ] {
            assert_eq!(
                parse(bad)
                    .map_err(|e| e.code().to_string())
                    .err()
                    .as_deref(),
                Some("invalid_query"),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_reads_pattern_limit_after_and_caps_the_limit() -> Result<()> {
        let Command::Keys {
            include_value,
            include_time,
            pattern,
            after,
            limit,
            ..
        } = parse(
            r#"{"keys": {"pattern": "room.*", "after": "room.a", "limit": 10, "include": ["time"]}}"#,
        )?
        else {
            panic!("not keys");
        };
        assert!(!include_value && include_time);
        assert_eq!(pattern.as_deref(), Some("room.*"));
        assert_eq!(after.as_deref(), Some("room.a"));
        assert_eq!(limit, Some(10));
        let too_many = format!(r#"{{"keys": {{"limit": {}}}}}"#, MAX_KEYS + 1);
        assert_eq!(
            parse(&too_many)
                .err()
                .map(|e| e.code().to_string())
                .as_deref(),
            Some("limit_exceeded")
        );
        Ok(())
    }

    #[test]
    fn unknown_requests_are_recognised_as_such() -> Result<()> {
        assert!(
            matches!(parse(r#"{"frobnicate": {}}"#)?, Command::Unknown(n) if n == "frobnicate")
        );
        Ok(())
    }
}
