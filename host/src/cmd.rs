//! The command set, shared by both dialects: parse a request object, then apply it.
//!
//! Parsing never touches the database; applying never looks at JSON framing. How replies
//! are wrapped (v1 bare, v2 `{"result": ...}`) is the protocol module's business.

use serde_json::{Map, Value as Json, json};

use crate::db::{Db, Durable};
use crate::error::{Error, Result};
use crate::history::{self, FetchOpts};
use crate::pubsub::Subscriber;
use crate::query::Query;
use crate::retention::PolicySpec;
use crate::value::number_json;

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
        Ok(match name.as_str() {
            "get" => Command::Get {
                key: key_arg(args)?,
            },
            "put" => Command::Put {
                key: key_arg(args)?,
                value: args
                    .get("value")
                    .cloned()
                    .ok_or_else(|| Error::query("put needs a value"))?,
                time: optional_number(args, "time")?,
                create: true,
            },
            "last" => Command::Last {
                key: key_arg(args)?,
            },
            "keys" => {
                let include = match args.get("include") {
                    None | Some(Json::Null) => Vec::new(),
                    Some(Json::Array(items)) => items.clone(),
                    Some(_) => return Err(Error::query("keys.include must be a list")),
                };
                let limit = match args.get("limit") {
                    None | Some(Json::Null) => None,
                    Some(v) => {
                        let n = v
                            .as_u64()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| Error::query("keys.limit must be a positive integer"))?;
                        if n > MAX_KEYS as u64 {
                            return Err(Error::LimitExceeded(format!(
                                "keys.limit is at most {MAX_KEYS}: page with after"
                            )));
                        }
                        Some(n as usize)
                    }
                };
                Command::Keys {
                    include_value: include.iter().any(|i| i == "value"),
                    include_time: include.iter().any(|i| i == "time"),
                    pattern: optional_string(args, "pattern")?,
                    after: optional_string(args, "after")?,
                    limit,
                }
            }
            "define" => Command::Define {
                keys: definitions(args)?,
            },
            "sub" => Command::Sub {
                key: key_arg(args)?,
                since: optional_number(args, "since")?,
                numbered: match args.get("seq") {
                    None | Some(Json::Null) => false,
                    Some(Json::Bool(b)) => *b,
                    Some(_) => return Err(Error::query("sub.seq must be true or false")),
                },
            },
            "unsub" => Command::Unsub {
                key: key_arg(args)?,
            },
            "fetch" => Command::Fetch {
                key: key_arg(args)?,
                opts: match args.get("opts") {
                    None | Some(Json::Null) => FetchOpts::default(),
                    Some(Json::Object(o)) => FetchOpts::parse(o)?,
                    Some(_) => return Err(Error::query("fetch.opts must be an object")),
                },
            },
            "query" => Command::Query(Query::parse(args)?),
            "stats" => Command::Stats,
            "types" => Command::Types,
            "ping" => Command::Ping(args.clone()),
            "increment" | "decrement" => {
                let step = optional_number(args, "step")?.unwrap_or(1.0);
                let decrement = name == "decrement";
                Command::Add {
                    key: key_arg(args)?,
                    step: if decrement { -step } else { step },
                    decrement,
                    create: true,
                }
            }
            "delete" => Command::Delete {
                key: key_arg(args)?,
            },
            "retention" => {
                let pattern = match args.get("key") {
                    None | Some(Json::Null) => None,
                    Some(_) => Some(key_arg(args)?),
                };
                let remove = args.get("remove") == Some(&Json::Bool(true));
                let sets = args.get("raw").is_some() || args.get("tiers").is_some();
                if let Json::Object(fields) = args
                    && let Some(other) = fields
                        .keys()
                        .find(|k| !["key", "raw", "tiers", "remove"].contains(&k.as_str()))
                {
                    return Err(Error::query(format!("unknown retention field {other:?}")));
                }
                if (sets || remove) && pattern.is_none() {
                    return Err(Error::query("retention needs the key (name or pattern)"));
                }
                if sets && remove {
                    return Err(Error::query(
                        "retention sets a policy or removes it, not both",
                    ));
                }
                let spec = if sets {
                    let spec = PolicySpec::from_json(args)?;
                    spec.policy()?; // refused here, before anything is applied
                    Some(spec)
                } else {
                    None
                };
                Command::Retention {
                    pattern,
                    spec,
                    remove,
                }
            }
            "compact" => {
                // `{}` compacts every key, `{"key": K}` one; anything else is a mistake, not
                // a request to compact the whole database.
                let Json::Object(fields) = args else {
                    return Err(Error::query("compact takes {} or {\"key\": K}"));
                };
                if let Some(other) = fields.keys().find(|k| k.as_str() != "key") {
                    return Err(Error::query(format!("unknown compact field {other:?}")));
                }
                Command::Compact {
                    key: match args.get("key") {
                        None | Some(Json::Null) => None,
                        Some(_) => Some(key_arg(args)?),
                    },
                }
            }
            "reload" => Command::Reload,
            other => Command::Unknown(other.to_string()),
        })
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
            Command::Get { key } => Ok(Reply::Value(
                db.latest(&key)
                    .await
                    .map_or(Json::Null, |p| p.value.to_json()),
            )),
            Command::Put {
                key,
                value,
                time,
                create,
            } => {
                return Ok((Reply::Ack, db.put(&key, &value, time, create).await?));
            }
            Command::Last { key } => Ok(Reply::Value(db.latest(&key).await.map_or(
                Json::Null,
                |p| json!({"value": p.value.to_json(), "time": number_json(p.time)}),
            ))),
            Command::Keys {
                include_value,
                include_time,
                pattern,
                after,
                limit,
            } => {
                let mut out = Map::new();
                let chosen = db
                    .page(
                        pattern.as_deref(),
                        after.as_deref(),
                        limit.unwrap_or(MAX_KEYS + 1),
                    )
                    .await;
                if limit.is_none() && chosen.len() > MAX_KEYS {
                    return Err(Error::LimitExceeded(format!(
                        "more than {MAX_KEYS} keys: page with limit and after"
                    )));
                }
                for (name, listing) in chosen {
                    let mut entry = Map::new();
                    entry.insert("type".into(), Json::String(listing.def.type_name));
                    if !listing.def.opts.is_empty() {
                        entry.insert("opts".into(), Json::Object(listing.def.opts));
                    }
                    if include_value {
                        entry.insert(
                            "value".into(),
                            listing
                                .latest
                                .as_ref()
                                .map_or(Json::Null, |p| p.value.to_json()),
                        );
                    }
                    if include_time {
                        entry.insert(
                            "time".into(),
                            listing
                                .latest
                                .as_ref()
                                .map_or(Json::Null, |p| number_json(p.time)),
                        );
                    }
                    out.insert(name, Json::Object(entry));
                }
                Ok(Reply::Value(Json::Object(out)))
            }
            Command::Define { keys } => {
                let mut last = Durable::done();
                for d in keys {
                    // Writes are durable in queue order: waiting for the last covers all.
                    last = db.define(&d.key, d.type_name.as_deref(), d.opts).await?;
                }
                return Ok((Reply::Ack, last));
            }
            Command::Sub {
                key,
                since: None,
                numbered,
            } => {
                crate::store::check_key_name(&key)?;
                db.subscribe(&key, me.clone(), numbered);
                Ok(Reply::Ack)
            }
            Command::Sub {
                key,
                since: Some(since),
                ..
            } => {
                let (seq, history) = db.subscribe_with_history(&key, me.clone(), since).await?;
                Ok(Reply::Value(json!({
                    "seq": seq,
                    "history": history
                        .iter()
                        .map(|p| json!([number_json(p.time), p.value.to_json()]))
                        .collect::<Vec<_>>(),
                })))
            }
            Command::Unsub { key } => {
                db.pubsub().unsubscribe(&key, me.conn);
                Ok(Reply::Ack)
            }
            Command::Fetch { key, opts } => history::fetch(db, &key, opts).await.map(Reply::Value),
            Command::Query(query) => query.run(db).await.map(Reply::Value),
            Command::Stats => Ok(Reply::Value(stats(db))),
            Command::Types => Ok(Reply::Value(types(db))),
            Command::Ping(payload) => Ok(Reply::Value(json!({ "pong": payload }))),
            Command::Add {
                key, step, create, ..
            } => return Ok((Reply::Ack, db.add(&key, step, create).await?)),
            Command::Delete { key } => db.delete(&key).await.map(|_| Reply::Ack),
            Command::Retention {
                pattern: Some(pattern),
                spec,
                remove,
            } if spec.is_some() || remove => {
                return Ok((Reply::Ack, db.set_policy(&pattern, spec).await?));
            }
            Command::Retention { .. } => Ok(Reply::Value(db.policies_json())),
            Command::Compact { key } => db
                .compact(key.as_deref(), crate::value::now())
                .await
                .map(|r| Reply::Value(r.to_json())),
            Command::Reload => Err(Error::ConfigRefused(
                "a reload is answered by the connection's session".into(),
            )),
            Command::Unknown(name) => Err(Error::query(format!("unknown request {name:?}"))),
        };
        Ok((reply?, Durable::done()))
    }
}

fn stats(db: &Db) -> Json {
    let ops: Map<String, Json> = db
        .stats()
        .ops()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Json::from(v)))
        .collect();
    let mut out = json!({
        "keys_count": db.key_count(),
        "key_slots": db.key_slots(),
        "uptime": db.stats().uptime_secs(),
        "ops_count": ops,
        "change_notifications_count": db.pubsub().count(),
        "data_points_count": db.store().approximate_points(),
        "pushes_sent": db.pubsub().pushes_sent(),
        "disk_bytes": db.store().disk_space().unwrap_or(0),
        "compaction": db.compaction_stats(),
        "storage": storage_stats(db.store()),
        "config": db.stats().config_json(),
    });
    for (name, section) in db.stats().sections() {
        out[name] = section;
    }
    out
}

/// Disk use by keyspace, and per raw point (see the README's "On disk").
fn storage_stats(store: &crate::store::Store) -> Json {
    let points = store.approximate_points();
    let per_point = |bytes: u64| {
        if points == 0 {
            Json::Null
        } else {
            number_json(bytes as f64 / points as f64)
        }
    };
    let keyspaces: Map<String, Json> = store
        .keyspace_sizes()
        .into_iter()
        .map(|(name, bytes)| {
            (
                name.to_string(),
                json!({"bytes": bytes, "bytes_per_point": per_point(bytes)}),
            )
        })
        .collect();
    let journal = store.journal_disk_space().unwrap_or(0);
    json!({
        "format": crate::store::FORMAT_VERSION,
        "raw_points": points,
        "keyspaces": keyspaces,
        "journal_bytes": journal,
        "bytes_per_point": per_point(store.disk_space().unwrap_or(0)),
    })
}

fn types(db: &Db) -> Json {
    let loaded: Map<String, Json> = db
        .registry()
        .all()
        .iter()
        .map(|p| {
            let loaded_at = p.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            (
                p.info.name.clone(),
                json!({
                    "version": p.info.version,
                    "description": p.info.description,
                    "source": p.source.display().to_string(),
                    "loaded_at": number_json(loaded_at),
                    "default_options": serde_json::from_str::<Json>(&p.info.default_options).unwrap_or(Json::Null),
                }),
            )
        })
        .collect();
    let files: Map<String, Json> = db
        .registry()
        .files()
        .into_iter()
        .map(|(path, status)| {
            (
                path.display().to_string(),
                json!({"type": status.type_name, "last_error": status.last_error, "loads": status.loads}),
            )
        })
        .collect();
    let unavailable: Map<String, Json> = db
        .registry()
        .unavailable()
        .into_iter()
        .map(|(name, why)| (name, Json::String(why)))
        .collect();
    json!({"types": loaded, "files": files, "unavailable": unavailable})
}

fn key_arg(args: &Json) -> Result<String> {
    match args.get("key") {
        Some(Json::String(k)) => Ok(k.clone()),
        Some(_) => Err(Error::query("key must be a string")),
        None => Err(Error::query("missing key")),
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

/// `{"foo": {"type": "uptime", "max_time": 77}}`, options flat or nested under `opts`.
fn definitions(args: &Json) -> Result<Vec<Definition>> {
    let Json::Object(keys) = args else {
        return Err(Error::query("define takes an object of key definitions"));
    };
    keys.iter()
        .map(|(key, spec)| {
            let Json::Object(spec) = spec else {
                return Err(Error::query(format!(
                    "definition of {key:?} must be an object"
                )));
            };
            let mut opts = Map::new();
            let mut type_name = None;
            for (name, v) in spec {
                match (name.as_str(), v) {
                    ("type", Json::String(t)) => type_name = Some(t.clone()),
                    ("type", _) => return Err(Error::query("type must be a string")),
                    ("opts", Json::Object(nested)) => opts.extend(nested.clone()),
                    ("opts", Json::Null) => {}
                    ("opts", _) => return Err(Error::query("opts must be an object")),
                    _ => {
                        opts.insert(name.clone(), v.clone());
                    }
                }
            }
            Ok(Definition {
                key: key.clone(),
                type_name,
                opts,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
