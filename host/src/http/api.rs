//! The JSON API under `/api/v1/`: each route is one shared command (see the README's "HTTP
//! API" section), its answer rendered as JSON (or CSV with `format=csv`), its error as the
//! command's error code with an HTTP status. Auth is `Authorization: Bearer TOKEN`.
//!
//! | route | command |
//! |---|---|
//! | `GET keys?pattern=&limit=&after=` | `keys` (with values and times) |
//! | `GET keys/{key}` | `keys` for that one key |
//! | `PUT keys/{key}` | `put` |
//! | `DELETE keys/{key}` | `delete` |
//! | `POST keys/{key}/increment`, `.../decrement` | `increment`, `decrement` |
//! | `GET keys/{key}/points?since=&until=&limit=` | `fetch` |
//! | `GET keys/{key}/summary?since=&until=&step=&tz=&figures=&group=` | `query` |
//! | `GET events?keys=a,b` or `?pattern=` | `sub` for each key; pushes as events |

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value as Json, json};
use tokio::sync::mpsc;

use super::{Body, Conn, full};
use crate::auth::{Access, Permission, percent_decode};
use crate::cmd::{Command, Reply};
use crate::error::{Error, Result};
use crate::live::Live;
use crate::protocol::{self, Dialect};
use crate::pubsub::Subscriber;
use crate::session::Session;

/// How often an idle event stream sends a comment line, so that proxies and browsers keep
/// it open and a closed client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The HTTP status for an error code: the table, documented in the README.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidJson(_)
        | Error::InvalidFrame(_)
        | Error::InvalidQuery(_)
        | Error::InvalidKey(_)
        | Error::InvalidTime(_)
        | Error::UnknownType(_)
        | Error::TypeMismatch { .. }
        | Error::ConfigRefused(_) => StatusCode::BAD_REQUEST,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::UnknownKey(_) | Error::UnknownRoute(_) => StatusCode::NOT_FOUND,
        Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        Error::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::PluginFailed { .. } | Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"error": code, "message": ...}` (and for `forbidden` the permission and key) with the
/// code's status.
pub fn error_response(e: &Error) -> Response<Body> {
    let mut body = protocol::error_object(e, Dialect::V2);
    body.entry("message")
        .or_insert_with(|| Json::from(e.to_string()));
    let mut response = json_response(&Json::Object(body));
    *response.status_mut() = status_of(e);
    if matches!(e, Error::Unauthorized(_)) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"komoku\""),
        );
    }
    response
}

fn json_response(body: &Json) -> Response<Body> {
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn csv_response(text: String) -> Response<Body> {
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    response
}

/// One request's caller: its session (access from the bearer token) and push side.
struct Caller {
    session: Session,
    me: Subscriber,
    pushes: mpsc::Receiver<Arc<str>>,
    live: Arc<Live>,
}

impl Caller {
    fn new(conn: &Conn, req: &Request<Incoming>) -> Result<Caller> {
        let live = conn.control.live().borrow().clone();
        let access = super::bearer_access(&live, req)?;
        if matches!(access, Access::Anonymous) {
            // Every route needs a token when auth is on: say so before judging the request.
            return Err(Error::Unauthorized(
                "send Authorization: Bearer TOKEN".into(),
            ));
        }
        let session = Session::new(live.auth.clone(), access, live.limits)
            .with_control(conn.control.clone(), conn.peer.ip().is_loopback());
        let (tx, pushes) = mpsc::channel(live.limits.push_queue);
        let me = Subscriber::new(
            conn.db.pubsub().next_conn_id(),
            tx,
            live.limits.push_queue_bytes,
        );
        Ok(Caller {
            session,
            me,
            pushes,
            live,
        })
    }

    /// Runs one command as the websocket dialects do.
    async fn run(&mut self, conn: &Conn, request: Json) -> Result<Reply> {
        let Json::Object(request) = request else {
            return Err(Error::query("a request is a JSON object"));
        };
        let command = Command::parse(&request)?;
        protocol::run(&conn.db, &self.me, &mut self.session, command).await
    }
}

/// The query string as name → value, each value percent-decoded; a name given twice is
/// refused rather than one of them silently ignored.
fn query_params(req: &Request<Incoming>) -> Result<Map<String, Json>> {
    let mut out = Map::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name);
        if out
            .insert(name.clone(), Json::String(percent_decode(value)))
            .is_some()
        {
            return Err(Error::query(format!("{name} is given twice")));
        }
    }
    Ok(out)
}

/// Takes the parameters a route knows out of `params`; one left over is a mistake.
fn take(params: &mut Map<String, Json>, names: &[&str]) -> Result<Map<String, Json>> {
    let mut out = Map::new();
    for name in names {
        if let Some(v) = params.remove(*name) {
            out.insert((*name).to_string(), v);
        }
    }
    match params.keys().next() {
        Some(other) => Err(Error::query(format!("unknown parameter {other:?}"))),
        None => Ok(out),
    }
}

/// A query-string value as the command wants it: a number where it reads as one (times,
/// counts, steps in seconds), otherwise the text (`5M`, a zone name).
fn number_or_text(v: Json) -> Json {
    match &v {
        Json::String(s) => s
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(|n| {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    Some(Json::from(n as i64))
                } else {
                    serde_json::Number::from_f64(n).map(Json::Number)
                }
            })
            .unwrap_or(v),
        _ => v,
    }
}

/// Whether the answer is asked for as CSV (`format=csv`; `format=json` is the default).
fn wants_csv(params: &mut Map<String, Json>) -> Result<bool> {
    match params.remove("format").as_ref().and_then(Json::as_str) {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(Error::query(format!(
            "format must be json or csv, not {other:?}"
        ))),
    }
}

/// Answers one API request; `rest` is the path after `/api/v1/`.
pub async fn serve(conn: &Conn, req: Request<Incoming>, rest: &str) -> Response<Body> {
    match route(conn, req, rest).await {
        Ok(response) => response,
        Err(e) => {
            conn.db.stats().count_error(e.code());
            error_response(&e)
        }
    }
}

async fn route(conn: &Conn, req: Request<Incoming>, rest: &str) -> Result<Response<Body>> {
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let mut params = query_params(&req)?;
    let mut caller = Caller::new(conn, &req)?;
    match (&method, segments.as_slice()) {
        (&Method::GET, ["keys"] | ["keys", ""]) => {
            let csv = wants_csv(&mut params)?;
            let mut args = take(&mut params, &["pattern", "limit", "after"])?;
            if let Some(limit) = args.remove("limit") {
                args.insert("limit".into(), number_or_text(limit));
            }
            args.insert("include".into(), json!(["value", "time"]));
            let limit = args.get("limit").and_then(Json::as_u64);
            let reply = caller.run(conn, json!({ "keys": args })).await?;
            let keys = key_rows(reply);
            if csv {
                return Ok(csv_response(keys_csv(&keys)));
            }
            let next = match (limit, keys.last()) {
                (Some(limit), Some(last)) if keys.len() as u64 >= limit => {
                    last.get("name").cloned()
                }
                _ => None,
            };
            Ok(json_response(&json!({"keys": keys, "next": next})))
        }
        (&Method::GET, ["keys", key]) => {
            take(&mut params, &[])?;
            let reply = caller
                .run(
                    conn,
                    json!({"keys": {"pattern": key, "include": ["value", "time"]}}),
                )
                .await?;
            match key_rows(reply).into_iter().find(|k| k["name"] == *key) {
                Some(row) => Ok(json_response(&row)),
                None if !caller.session.access().may(Permission::Read, key)
                    && !matches!(caller.session.access(), Access::Anonymous) =>
                {
                    Err(Error::Forbidden {
                        permission: Permission::Read.name(),
                        key: key.to_string(),
                    })
                }
                None => Err(Error::UnknownKey(key.to_string())),
            }
        }
        (&Method::PUT, ["keys", key]) => {
            take(&mut params, &[])?;
            let body = read_body(req, caller.live.limits.max_frame_bytes).await?;
            let (value, time) = match body {
                Json::Object(mut o) if o.contains_key("value") => {
                    let value = o.remove("value").unwrap_or(Json::Null);
                    let time = o.remove("time");
                    if let Some(other) = o.keys().next() {
                        return Err(Error::query(format!("unknown put field {other:?}")));
                    }
                    (value, time)
                }
                Json::Object(_) | Json::Array(_) => {
                    return Err(Error::query(
                        "a PUT body is {\"value\": v, \"time\": t} or a bare JSON value",
                    ));
                }
                scalar => (scalar, None),
            };
            let mut put = json!({"key": key, "value": value});
            if let Some(time) = time {
                put["time"] = time;
            }
            ack(caller.run(conn, json!({ "put": put })).await?)
        }
        (&Method::DELETE, ["keys", key]) => {
            take(&mut params, &[])?;
            ack(caller.run(conn, json!({"delete": {"key": key}})).await?)
        }
        (&Method::POST, ["keys", key, op @ ("increment" | "decrement")]) => {
            take(&mut params, &[])?;
            let body = read_body(req, caller.live.limits.max_frame_bytes).await?;
            let step = match body {
                Json::Null => None,
                Json::Object(mut o) => {
                    let step = o.remove("step");
                    if let Some(other) = o.keys().next() {
                        return Err(Error::query(format!("unknown {op} field {other:?}")));
                    }
                    step
                }
                n @ Json::Number(_) => Some(n),
                _ => return Err(Error::query(format!("a {op} body is {{\"step\": n}} or n"))),
            };
            let mut args = json!({ "key": key });
            if let Some(step) = step {
                args["step"] = step;
            }
            ack(caller.run(conn, json!({ (*op): args })).await?)
        }
        (&Method::GET, ["keys", key, "points"]) => {
            let csv = wants_csv(&mut params)?;
            let opts: Map<String, Json> = take(&mut params, &["since", "until", "limit"])?
                .into_iter()
                .map(|(k, v)| (k, number_or_text(v)))
                .collect();
            let reply = caller
                .run(conn, json!({"fetch": {"key": key, "opts": opts}}))
                .await?;
            let points = value_of(reply);
            if csv {
                return Ok(csv_response(points_csv(&points)));
            }
            Ok(json_response(&points))
        }
        (&Method::GET, ["keys", key, "summary"]) => {
            let csv = wants_csv(&mut params)?;
            let mut args: Map<String, Json> = take(
                &mut params,
                &["since", "until", "step", "tz", "figures", "group"],
            )?
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "tz" | "group" => (k, v),
                "figures" => {
                    let list: Vec<Json> = v
                        .as_str()
                        .unwrap_or("")
                        .split(',')
                        .filter(|f| !f.is_empty())
                        .map(Json::from)
                        .collect();
                    (k, Json::Array(list))
                }
                _ => (k, number_or_text(v)),
            })
            .collect();
            args.insert("key".into(), Json::from(*key));
            let summary = value_of(caller.run(conn, json!({ "query": args })).await?);
            if csv {
                return Ok(csv_response(summary_csv(&summary)));
            }
            Ok(json_response(&summary))
        }
        (&Method::GET, ["events"]) => events(conn, caller, params).await,
        (_, ["keys"] | ["keys", _] | ["keys", _, _] | ["events"]) => {
            Err(Error::MethodNotAllowed(method.to_string()))
        }
        _ => Err(Error::UnknownRoute(format!("/api/v1/{rest}"))),
    }
}

fn ack(reply: Reply) -> Result<Response<Body>> {
    Ok(json_response(&match reply {
        Reply::Ack => json!({"result": "ok"}),
        Reply::Value(v) => v,
    }))
}

fn value_of(reply: Reply) -> Json {
    match reply {
        Reply::Ack => Json::Null,
        Reply::Value(v) => v,
    }
}

/// A request body as JSON (an empty body is `null`), refused past `max` bytes.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Json> {
    let body = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::LimitExceeded(format!("a request body is at most {max} bytes"))
            } else {
                Error::InvalidJson(format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Null);
    }
    serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))
}

/// A `keys` answer (name → entry) as rows `{"name", "type", "value", "time", "options"}`.
fn key_rows(reply: Reply) -> Vec<Json> {
    let Json::Object(keys) = value_of(reply) else {
        return Vec::new();
    };
    keys.into_iter()
        .map(|(name, entry)| {
            json!({
                "name": name,
                "type": entry.get("type").cloned().unwrap_or(Json::Null),
                "value": entry.get("value").cloned().unwrap_or(Json::Null),
                "time": entry.get("time").cloned().unwrap_or(Json::Null),
                "options": entry.get("opts").cloned().unwrap_or_else(|| json!({})),
            })
        })
        .collect()
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break; JSON values
/// other than strings and numbers are written as JSON.
fn csv_field(v: &Json) -> String {
    let text = match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_rows(header: &[String], rows: impl Iterator<Item = Vec<Json>>) -> String {
    let mut out = header.join(",");
    out.push('\n');
    for row in rows {
        let fields: Vec<String> = row.iter().map(csv_field).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn keys_csv(keys: &[Json]) -> String {
    let header: Vec<String> = ["name", "type", "value", "time"].map(String::from).to_vec();
    csv_rows(
        &header,
        keys.iter()
            .map(|k| header.iter().map(|h| k[h.as_str()].clone()).collect()),
    )
}

/// `[[time, value], ...]` as `time,value` rows.
fn points_csv(points: &Json) -> String {
    let rows = points.as_array().cloned().unwrap_or_default();
    csv_rows(
        &["time".into(), "value".into()],
        rows.into_iter().map(|p| {
            vec![
                p.get(0).cloned().unwrap_or(Json::Null),
                p.get(1).cloned().unwrap_or(Json::Null),
            ]
        }),
    )
}

/// A summary's `buckets` (or `groups`) as rows, one column per field in order of first
/// appearance.
fn summary_csv(summary: &Json) -> String {
    let rows = summary
        .get("buckets")
        .or_else(|| summary.get("groups"))
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut header: Vec<String> = Vec::new();
    for row in &rows {
        if let Json::Object(fields) = row {
            for name in fields.keys() {
                if !header.contains(name) {
                    header.push(name.clone());
                }
            }
        }
    }
    // Bucket bounds first, whatever order the map keeps.
    for first in ["end", "start"] {
        if let Some(at) = header.iter().position(|h| h == first) {
            let h = header.remove(at);
            header.insert(0, h);
        }
    }
    csv_rows(
        &header,
        rows.iter().map(|r| {
            header
                .iter()
                .map(|h| r.get(h).cloned().unwrap_or(Json::Null))
                .collect()
        }),
    )
}

/// `GET events?keys=a,b` (or `pattern=` for the existing keys matching it): subscribes the
/// request's own connection to each key and streams each push as one event, `data:` the
/// same `{"pub": ...}` JSON a websocket subscriber gets. Ends when the client goes, the
/// server shuts down, or the client reads too slowly (its queue full, as on a websocket).
async fn events(
    conn: &Conn,
    mut caller: Caller,
    mut params: Map<String, Json>,
) -> Result<Response<Body>> {
    let args = take(&mut params, &["keys", "pattern"])?;
    let keys: Vec<String> = match (args.get("keys"), args.get("pattern")) {
        (Some(keys), None) => keys
            .as_str()
            .unwrap_or("")
            .split(',')
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect(),
        (None, Some(pattern)) => {
            let reply = caller
                .run(conn, json!({"keys": {"pattern": pattern}}))
                .await?;
            key_rows(reply)
                .into_iter()
                .filter_map(|k| k["name"].as_str().map(String::from))
                .collect()
        }
        _ => return Err(Error::query("events takes keys=a,b or pattern=p")),
    };
    if keys.is_empty() {
        return Err(Error::query("events needs at least one key"));
    }
    for key in &keys {
        if let Err(e) = caller.run(conn, json!({"sub": {"key": key}})).await {
            conn.db.pubsub().drop_connection(caller.me.conn);
            return Err(e);
        }
    }
    let db = conn.db.clone();
    let shutdown = conn.shutdown.clone();
    let Caller { me, pushes, .. } = caller;
    // Dropped with the stream (the client went): the subscriptions go with it.
    struct Unsubscribe(Arc<crate::db::Db>, u64);
    impl Drop for Unsubscribe {
        fn drop(&mut self) {
            self.0.pubsub().drop_connection(self.1);
        }
    }
    let guard = Unsubscribe(db, me.conn);
    let hello = format!(": subscribed to {} keys\n\n", keys.len());
    let state = (Some(hello), pushes, me, shutdown, guard);
    let stream = futures_util::stream::unfold(
        state,
        |(hello, mut pushes, me, shutdown, guard)| async move {
            if let Some(hello) = hello {
                let frame = Frame::data(Bytes::from(hello));
                return Some((Ok(frame), (None, pushes, me, shutdown, guard)));
            }
            let text = tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = me.kick.cancelled() => return None,
                push = pushes.recv() => {
                    let push = push?;
                    me.sent(&push);
                    format!("event: pub\ndata: {push}\n\n")
                }
                _ = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_string(),
            };
            Some((
                Ok(Frame::data(Bytes::from(text))),
                (None, pushes, me, shutdown, guard),
            ))
        },
    );
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
