//! The wire: JSON text frames, one request (or an array of requests) per frame, answered in
//! one of two dialects. v1 is what the Ruby client speaks (bare replies, `"ack"`); v2 wraps
//! every reply in `{"result": ...}` or `{"error": ...}` and echoes `query_id`. Both dialects
//! run the same [`Command`]s.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::cmd::{Command, Reply};
use crate::db::{Db, Durable};
use crate::error::Error;
use crate::pubsub::Subscriber;
use crate::session::Session;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Access;
use crate::live::Live;

/// How replies are encoded on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Ruby-compatible: bare values, `"ack"`, `{"error": code}`, `"err"` for unknown requests.
    V1,
    /// Wrapped: `{"result": X}` / `{"error": code}`, with `query_id` echoed.
    V2,
}

impl Dialect {
    /// The dialect a websocket path asks for: `/v2` is v2, everything else v1. A query
    /// string (`/?token=...`) is not part of the path.
    pub fn for_path(path: &str) -> Dialect {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if path.trim_end_matches('/') == "/v2" {
            Dialect::V2
        } else {
            Dialect::V1
        }
    }
}

/// Answers one frame's payload with the reply frame's JSON, for the connection whose push
/// side is `me` and whose access and limits are `session`.
pub async fn answer(
    db: &Db,
    me: &Subscriber,
    session: &mut Session,
    dialect: Dialect,
    payload: &[u8],
) -> Json {
    // The frame that matters for speed, puts alone or in an array, is read into typed
    // fields borrowing from the payload; any other frame (or a put with a wrong shape, or
    // `query_id`) takes the general path below, which words every error as before.
    if let Ok(put) = serde_json::from_slice::<PutFrame>(payload) {
        return start_put(db, me, session, dialect, put)
            .await
            .finish(dialect)
            .await;
    }
    if payload.first() == Some(&b'[')
        && let Ok(puts) = serde_json::from_slice::<Vec<PutFrame>>(payload)
        && puts.len() <= session.limits().max_batch
    {
        let mut started = Vec::with_capacity(puts.len());
        for put in puts {
            started.push(start_put(db, me, session, dialect, put).await);
        }
        let mut replies = Vec::with_capacity(started.len());
        for s in started {
            replies.push(s.finish(dialect).await);
        }
        return Json::Array(replies);
    }
    let request: Json = match serde_json::from_slice(payload) {
        Ok(j) => j,
        Err(e) => return encode(dialect, Err(Error::InvalidJson(e.to_string())), None),
    };
    match request {
        Json::Array(requests) => {
            let max = session.limits().max_batch;
            if requests.len() > max {
                let e = Error::LimitExceeded(format!("at most {max} requests per frame"));
                return encode(dialect, Err(e), None);
            }
            // Apply every request in order, then wait for durability once for all of them:
            // the frame's writes share group commits instead of paying an fsync each.
            let mut started = Vec::with_capacity(requests.len());
            for request in requests {
                started.push(start_one(db, me, session, dialect, request).await);
            }
            let mut replies = Vec::with_capacity(started.len());
            for s in started {
                replies.push(s.finish(dialect).await);
            }
            Json::Array(replies)
        }
        request => {
            start_one(db, me, session, dialect, request)
                .await
                .finish(dialect)
                .await
        }
    }
}

/// A request applied but not yet answered.
enum Started {
    /// The reply is known (an error, or v1's `"err"`).
    Done(Json),
    /// The reply once the request's writes are durable.
    Pending(Reply, Durable, Option<Json>),
}

impl Started {
    async fn finish(self, dialect: Dialect) -> Json {
        match self {
            Started::Done(json) => json,
            Started::Pending(reply, durable, query_id) => {
                let result = durable.wait().await.map(|()| reply);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "write failed");
                }
                encode(dialect, result, query_id)
            }
        }
    }
}

/// `{"put": {"key": K, "value": V, "time": T}}` and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutFrame<'a> {
    #[serde(borrow)]
    put: PutArgs<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutArgs<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    value: Json,
    #[serde(default)]
    time: Option<f64>,
}

async fn start_put(
    db: &Db,
    me: &Subscriber,
    session: &mut Session,
    dialect: Dialect,
    frame: PutFrame<'_>,
) -> Started {
    let command = Command::Put {
        key: frame.put.key.into_owned(),
        value: frame.put.value,
        time: frame.put.time,
        create: true,
    };
    start_parsed(db, me, session, dialect, command, None).await
}

async fn start_one(
    db: &Db,
    me: &Subscriber,
    session: &mut Session,
    dialect: Dialect,
    request: Json,
) -> Started {
    let Json::Object(request) = request else {
        return Started::Done(encode(
            dialect,
            Err(Error::query("a request is a JSON object")),
            None,
        ));
    };
    let query_id = request.get("query_id").cloned();
    // `auth` is about the connection, not the database: the session answers it.
    if let Some(args) = request.get("auth")
        && request.len() == 1 + usize::from(query_id.is_some())
    {
        let result = session.authenticate(args).map(|()| Reply::Ack);
        return Started::Done(encode(dialect, result, query_id));
    }
    let command = match Command::parse(&request) {
        Ok(c) => c,
        Err(e) => {
            db.stats().count_error(e.code());
            return Started::Done(encode(dialect, Err(e), query_id));
        }
    };
    if let (Command::Unknown(name), Dialect::V1) = (&command, dialect) {
        if let Err(e) = session.admit(&mut command.clone()) {
            return Started::Done(encode(dialect, Err(e), query_id));
        }
        tracing::debug!(request = %name, "unknown request");
        db.stats().count("unknown");
        return Started::Done(Json::String("err".into()));
    }
    start_parsed(db, me, session, dialect, command, query_id).await
}

/// Runs a parsed command and keeps what its reply needs.
async fn start_parsed(
    db: &Db,
    me: &Subscriber,
    session: &mut Session,
    dialect: Dialect,
    command: Command,
    query_id: Option<Json>,
) -> Started {
    match start(db, me, session, command).await {
        Ok((reply, durable)) => Started::Pending(reply, durable, query_id),
        Err(e) => {
            tracing::debug!(error = %e, "request failed");
            db.stats().count_error(e.code());
            Started::Done(encode(dialect, Err(e), query_id))
        }
    }
}

/// Runs one command for a connection, whichever transport it came by: the session's
/// permission and limits first, then the command. The reply may be sent once the returned
/// [`Durable`] resolves. Every transport goes through here, so a command behaves the same
/// over websocket v1, v2 and HTTP.
pub async fn start(
    db: &Db,
    me: &Subscriber,
    session: &mut Session,
    mut command: Command,
) -> Result<(Reply, Durable), Error> {
    session.admit(&mut command)?;
    if let Command::Reload = command {
        db.stats().count(command.name());
        return Ok((Reply::Value(session.reload().await?), Durable::done()));
    }
    let subscribing = match &command {
        Command::Sub { key, .. } => Some(key.clone()),
        _ => None,
    };
    let (reply, durable) = command.start(db, me).await?;
    if let Some(key) = subscribing {
        session.subscribed(key);
    }
    Ok((reply, durable))
}

/// [`start`], then waits until the command's writes are durable.
pub async fn run(
    db: &Db,
    me: &Subscriber,
    session: &mut Session,
    command: Command,
) -> Result<Reply, Error> {
    let (reply, durable) = start(db, me, session, command).await?;
    durable.wait().await?;
    Ok(reply)
}

fn encode(dialect: Dialect, result: Result<Reply, Error>, query_id: Option<Json>) -> Json {
    match dialect {
        Dialect::V1 => match result {
            Ok(Reply::Ack) => Json::String("ack".into()),
            Ok(Reply::Value(v)) => v,
            Err(e) => Json::Object(error_object(&e, Dialect::V1)),
        },
        Dialect::V2 => {
            let mut out = match result {
                Ok(Reply::Ack) => Map::from_iter([("result".into(), Json::from("ok"))]),
                Ok(Reply::Value(v)) => Map::from_iter([("result".into(), v)]),
                Err(e) => error_object(&e, Dialect::V2),
            };
            if let Some(id) = query_id {
                out.insert("query_id".into(), id);
            }
            Json::Object(out)
        }
    }
}

/// `{"error": code}`, plus for `forbidden` the missing permission and the key, and in v2
/// a type's refusal with the plugin's own words (or a refused reload's reason) as
/// `message` (v1 keeps the Ruby shape).
pub fn error_object(e: &Error, dialect: Dialect) -> Map<String, Json> {
    let mut out = Map::from_iter([("error".into(), Json::from(e.code()))]);
    match e {
        Error::Forbidden { permission, key } => {
            out.insert("permission".into(), Json::from(*permission));
            out.insert("key".into(), Json::from(key.as_str()));
        }
        Error::Refused { message, .. } | Error::ConfigRefused(message)
            if dialect == Dialect::V2 && !message.is_empty() =>
        {
            out.insert("message".into(), Json::from(message.as_str()));
        }
        _ => {}
    }
    out
}

/// A connection's answer to a config reload, the same on every transport: its access is
/// recomputed from the new tokens (`Err`: why the connection must close), a connection that
/// is now authenticated gives back its unauthenticated slot, and the subscriptions it may no
/// longer read are dropped. Returns those keys, for the transport to tell its client.
pub fn reauthorize(
    db: &Db,
    me: &Subscriber,
    session: &mut Session,
    live: &Live,
    unauthenticated: &mut Option<OwnedSemaphorePermit>,
) -> Result<Vec<String>, &'static str> {
    let lost = session.reauthorize(live.auth.clone())?;
    if !matches!(session.access(), Access::Anonymous) {
        *unauthenticated = None;
    }
    for key in &lost {
        db.pubsub().unsubscribe(key, me.conn);
    }
    Ok(lost)
}
