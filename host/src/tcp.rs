//! The binary TCP transport (`tcp_listen`): length-prefixed protobuf frames of
//! [`komoku_proto`] (`proto/komoku.proto`, package `komoku.v1`; docs/tcp-protocol.md).
//!
//! Like the websocket, it only translates: each [`Request`] becomes the request object the
//! shared command layer parses ([`Command::parse`]), runs through the connection's
//! [`Session`] ([`protocol::start`]: permissions, limits) and its [`Reply`] or [`Error`] is
//! rendered as a [`Response`]. Requests may be pipelined: the frames that have arrived (up to
//! `max_batch`) are applied in order, their writes share group commits, and they are answered
//! in order. Pushes go out between responses, never before the response to the request that
//! caused them.
//!
//! Where a failure stops: a frame that is no protobuf `Request`, or a request the command
//! layer refuses, gets an error response and the connection carries on; a length prefix over
//! `max_frame_bytes` loses the framing, so the server answers [`Closing`] and closes that
//! connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use komoku_proto::{self as proto, Closing, Frames, Request, Response, ServerFrame, request};
use prost::Message as _;
use serde_json::{Map, Value as Json, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::cmd::{Command, Reply};
use crate::db::{Db, Durable};
use crate::error::Error;
use crate::live::Control;
use crate::protocol::{self, Dialect};
use crate::pubsub::Subscriber;
use crate::session::Session;

/// Longest the server waits for a client to take a [`Closing`] frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the server ends a connection.
enum Ending {
    TooSlow,
    TooBig(String),
    AuthTimeout,
    Revoked(&'static str),
    ShuttingDown,
    TooManyUnauthenticated,
}

impl Ending {
    fn frame(&self) -> Closing {
        let (code, reason) = match self {
            Ending::TooSlow => ("limit_exceeded", "too slow: push queue full".to_string()),
            Ending::TooBig(why) => ("limit_exceeded", why.clone()),
            Ending::AuthTimeout => ("unauthorized", "authentication timeout".to_string()),
            Ending::Revoked(reason) => ("unauthorized", (*reason).to_string()),
            Ending::ShuttingDown => ("shutting_down", "server shutting down".to_string()),
            Ending::TooManyUnauthenticated => (
                "limit_exceeded",
                "too many unauthenticated connections".to_string(),
            ),
        };
        Closing {
            code: code.into(),
            reason,
        }
    }
}

/// Serves one accepted connection (after TLS, if any) until it closes, the server ends it,
/// or the server shuts down.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    db: Arc<Db>,
    control: &Arc<Control>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut live_changes = control.live();
    let live = live_changes.borrow_and_update().clone();
    let limits = live.limits;
    // No handshake carries a token: the connection starts anonymous (with auth on) and
    // sends `auth` first.
    let access = live.auth.access_of(&[])?;
    let mut unauthenticated = if matches!(access, Access::Anonymous) {
        match control.unauthenticated().clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                send_closing(&mut writer, &Ending::TooManyUnauthenticated).await;
                return Ok(());
            }
        }
    } else {
        None
    };
    let mut session = Session::new(live.auth.clone(), access, limits)
        .with_control(control.clone(), peer.ip().is_loopback());
    let (tx, mut pushes) = mpsc::channel::<Arc<str>>(limits.push_queue);
    let me = Subscriber::new(db.pubsub().next_conn_id(), tx, limits.push_queue_bytes);
    tracing::debug!(conn = me.conn, %peer, "tcp connected");
    let auth_deadline = tokio::time::Instant::now() + limits.auth_timeout;
    let mut frames = Frames::new(limits.max_frame_bytes);
    let mut input = BytesMut::with_capacity(4 << 10);
    let mut output = BytesMut::new();
    // After a reload took subscriptions away: pushes queued before it, and the lost keys.
    let mut stale: Option<(usize, Vec<String>)> = None;

    let result: anyhow::Result<Option<Ending>> = async {
        loop {
            // Whatever whole frames have arrived are answered first, as one batch.
            let mut batch = Vec::new();
            let mut too_big = None;
            while batch.len() < limits.max_batch {
                match frames.split(&mut input) {
                    Ok(Some(frame)) => batch.push(frame),
                    Ok(None) => break,
                    Err(e) => {
                        too_big = Some(e.to_string());
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                let mut started = Vec::with_capacity(batch.len());
                for frame in batch {
                    started.push(start_frame(&db, &me, &mut session, &frame).await);
                }
                if !matches!(session.access(), Access::Anonymous) {
                    unauthenticated = None;
                }
                for s in started {
                    let response = s.finish().await;
                    encode(proto::server_frame::Frame::Response(response), &mut output);
                }
            }
            if let Some(why) = too_big {
                write(&mut writer, &mut output, &me).await?;
                return Ok(Some(Ending::TooBig(why)));
            }
            if !output.is_empty() {
                if !write(&mut writer, &mut output, &me).await? {
                    return Ok(Some(Ending::TooSlow));
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Some(Ending::ShuttingDown)),
                _ = me.kick.cancelled() => return Ok(Some(Ending::TooSlow)),
                _ = tokio::time::sleep_until(auth_deadline), if unauthenticated.is_some() => {
                    return Ok(Some(Ending::AuthTimeout));
                }
                Ok(()) = live_changes.changed() => {
                    let live = live_changes.borrow_and_update().clone();
                    match protocol::reauthorize(&db, &me, &mut session, &live, &mut unauthenticated) {
                        Err(reason) => return Ok(Some(Ending::Revoked(reason))),
                        Ok(lost) => {
                            if !lost.is_empty() {
                                stale = Some((pushes.len(), lost.clone()));
                                encode(
                                    proto::server_frame::Frame::Unsubscribed(proto::Unsubscribed {
                                        keys: lost,
                                        reason: "forbidden".into(),
                                    }),
                                    &mut output,
                                );
                            }
                        }
                    }
                }
                read = reader.read_buf(&mut input) => {
                    if read? == 0 {
                        return Ok(None);
                    }
                }
                Some(push) = pushes.recv() => {
                    me.sent(&push);
                    let Some(push) = push_frame(&push) else { continue };
                    if let Some((left, keys)) = &mut stale {
                        *left = left.saturating_sub(1);
                        let lost = keys.contains(&push.key);
                        if *left == 0 {
                            stale = None;
                        }
                        if lost {
                            continue;
                        }
                    }
                    encode(proto::server_frame::Frame::Push(push), &mut output);
                }
            }
        }
    }
    .await;
    db.pubsub().drop_connection(me.conn);
    drop(pushes);
    let result = match result {
        Ok(Some(ending)) => {
            match &ending {
                Ending::TooSlow => tracing::warn!(
                    conn = me.conn,
                    "closing a subscriber that reads too slowly (its push queue is full)"
                ),
                Ending::Revoked(reason) => tracing::info!(
                    conn = me.conn,
                    reason,
                    "closing a connection after a config reload"
                ),
                _ => tracing::debug!(conn = me.conn, code = %ending.frame().code, "closing"),
            }
            send_closing(&mut writer, &ending).await;
            // What the client still sends (the rest of a frame too big) is read and dropped,
            // so that the closing frame arrives instead of a reset.
            crate::ws::drain(&mut reader, 2 * limits.max_frame_bytes + (64 << 10)).await;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    tracing::debug!(conn = me.conn, "tcp disconnected");
    result
}

/// Appends one server frame to `out`.
fn encode(frame: proto::server_frame::Frame, out: &mut BytesMut) {
    proto::encode_frame(&ServerFrame { frame: Some(frame) }, out);
}

/// Writes `out` and empties it. `false` when the connection was kicked as too slow while
/// the client did not read.
async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
    me: &Subscriber,
) -> std::io::Result<bool> {
    let written = tokio::select! {
        written = writer.write_all(out) => written.map(|()| true),
        _ = me.kick.cancelled() => Ok(false),
    };
    out.clear();
    written
}

/// Sends the closing frame if the client takes it within [`CLOSE_TIMEOUT`], then ends the
/// write side.
async fn send_closing<W: AsyncWrite + Unpin>(writer: &mut W, ending: &Ending) {
    let mut out = BytesMut::new();
    encode(
        proto::server_frame::Frame::Closing(ending.frame()),
        &mut out,
    );
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        writer.write_all(&out).await?;
        writer.shutdown().await
    })
    .await;
}

/// A request applied but not yet answered.
enum Started {
    Done(Response),
    Pending(u64, Reply, Durable),
}

impl Started {
    async fn finish(self) -> Response {
        match self {
            Started::Done(response) => response,
            Started::Pending(id, reply, durable) => {
                let result = durable.wait().await.map(|()| reply);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "write failed");
                }
                response(id, result)
            }
        }
    }
}

/// Decodes one frame and starts its request.
async fn start_frame(db: &Db, me: &Subscriber, session: &mut Session, frame: &[u8]) -> Started {
    let request = match Request::decode(frame) {
        Ok(r) => r,
        Err(e) => {
            let e = Error::InvalidFrame(e.to_string());
            db.stats().count_error(e.code());
            return Started::Done(response(0, Err(e)));
        }
    };
    let id = request.id;
    let request = match request_object(request) {
        Ok(r) => r,
        Err(e) => {
            db.stats().count_error(e.code());
            return Started::Done(response(id, Err(e)));
        }
    };
    // `auth` is about the connection, not the database: the session answers it.
    if let Some(args) = request.get("auth")
        && request.len() == 1
    {
        return Started::Done(response(
            id,
            session.authenticate(args).map(|()| Reply::Ack),
        ));
    }
    let command = match Command::parse(&request) {
        Ok(c) => c,
        Err(e) => {
            db.stats().count_error(e.code());
            return Started::Done(response(id, Err(e)));
        }
    };
    match protocol::start(db, me, session, command).await {
        Ok((reply, durable)) => Started::Pending(id, reply, durable),
        Err(e) => {
            tracing::debug!(error = %e, "request failed");
            db.stats().count_error(e.code());
            Started::Done(response(id, Err(e)))
        }
    }
}

/// The request object the command layer reads (the websocket's `{"<name>": args}`) for a
/// protobuf request.
pub fn request_object(request: Request) -> Result<Map<String, Json>, Error> {
    use request::Command as C;
    let value = |v: Option<proto::Value>| {
        v.unwrap_or_else(proto::Value::null)
            .to_json()
            .map_err(Error::InvalidFrame)
    };
    let key = |k: proto::Key| json!({ "key": k.key });
    let add = |a: proto::Add| {
        let mut args = json!({ "key": a.key });
        if let Some(step) = a.step {
            args["step"] = json!(step);
        }
        args
    };
    let (name, args) = match request.command {
        None => return Err(Error::query("a request without a command")),
        Some(C::Json(text)) => {
            return match serde_json::from_str(&text) {
                Ok(Json::Object(object)) => Ok(object),
                Ok(_) => Err(Error::query("a request is a JSON object")),
                Err(e) => Err(Error::InvalidJson(e.to_string())),
            };
        }
        Some(C::Auth(a)) => ("auth", json!({ "token": a.token })),
        Some(C::Get(k)) => ("get", key(k)),
        Some(C::Last(k)) => ("last", key(k)),
        Some(C::Unsub(k)) => ("unsub", key(k)),
        Some(C::Delete(k)) => ("delete", key(k)),
        Some(C::Put(p)) => {
            let mut args = json!({ "key": p.key, "value": value(p.value)? });
            if let Some(time) = p.time {
                args["time"] = json!(time);
            }
            ("put", args)
        }
        Some(C::Increment(a)) => ("increment", add(a)),
        Some(C::Decrement(a)) => ("decrement", add(a)),
        Some(C::Sub(s)) => {
            let mut args = json!({ "key": s.key, "seq": s.seq });
            if let Some(since) = s.since {
                args["since"] = json!(since);
            }
            ("sub", args)
        }
        Some(C::Ping(v)) => ("ping", value(Some(v))?),
    };
    Ok(Map::from_iter([(name.to_string(), args)]))
}

/// The response to request `id`.
pub fn response(id: u64, result: Result<Reply, Error>) -> Response {
    use proto::response::Result as R;
    let result = match result {
        Ok(Reply::Ack) => R::Ok(proto::Ok {}),
        Ok(Reply::Value(v)) => R::Value(proto::Value::from_json(&v)),
        Err(e) => {
            // The websocket v2 error object, field for field; the message, where v2 has none,
            // is the server's description (a binary client has no frame text to look at).
            let object = protocol::error_object(&e, Dialect::V2);
            let field = |name: &str| {
                object
                    .get(name)
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            R::Error(proto::Error {
                code: e.code().to_string(),
                message: Some(field("message"))
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| e.to_string()),
                permission: field("permission"),
                key: field("key"),
            })
        }
    };
    Response {
        id,
        result: Some(result),
    }
}

/// The protobuf push for a `{"pub": {...}}` frame of the push queue.
fn push_frame(frame: &str) -> Option<proto::Push> {
    let json: Json = serde_json::from_str(frame).ok()?;
    let body = json.get("pub")?;
    Some(proto::Push {
        key: body.get("key")?.as_str()?.to_string(),
        value: Some(proto::Value::from_json(body.get("value")?)),
        time: body.get("time")?.as_f64()?,
        previous: Some(proto::Value::from_json(
            body.get("previous").unwrap_or(&Json::Null),
        )),
        seq: body.get("seq").and_then(Json::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_requests_become_the_websocket_request_objects() -> Result<(), Error> {
        let put = Request {
            id: 3,
            command: Some(request::Command::Put(proto::Put {
                key: "t".into(),
                value: Some(proto::Value::from_json(&json!(21.5))),
                time: Some(1.0),
            })),
        };
        assert_eq!(
            Json::Object(request_object(put)?),
            json!({"put": {"key": "t", "value": 21.5, "time": 1.0}})
        );
        let dec = Request {
            id: 0,
            command: Some(request::Command::Decrement(proto::Add {
                key: "c".into(),
                step: None,
            })),
        };
        assert_eq!(
            Json::Object(request_object(dec)?),
            json!({"decrement": {"key": "c"}})
        );
        let raw = Request {
            id: 0,
            command: Some(request::Command::Json(r#"{"stats": {}}"#.into())),
        };
        assert_eq!(Json::Object(request_object(raw)?), json!({"stats": {}}));
        Ok(())
    }

    #[test]
    fn malformed_requests_are_errors_with_codes() {
        let code = |command| {
            request_object(Request { id: 0, command })
                .err()
                .map(|e| e.code().to_string())
        };
        assert_eq!(code(None).as_deref(), Some("invalid_query"));
        assert_eq!(
            code(Some(request::Command::Json("[1".into()))).as_deref(),
            Some("invalid_json")
        );
        assert_eq!(
            code(Some(request::Command::Json("[1]".into()))).as_deref(),
            Some("invalid_query")
        );
        let nan = proto::Value {
            kind: Some(proto::value::Kind::Number(f64::NAN)),
        };
        assert_eq!(
            code(Some(request::Command::Put(proto::Put {
                key: "k".into(),
                value: Some(nan),
                time: None
            })))
            .as_deref(),
            Some("invalid_frame")
        );
    }

    #[test]
    fn pushes_carry_key_value_time_previous_and_seq() {
        let push = push_frame(
            r#"{"pub": {"key": "k", "value": 2, "time": 5.5, "previous": 1, "previous_value": 1, "seq": 9}}"#,
        )
        .expect("a push");
        assert_eq!(push.key, "k");
        assert_eq!(push.value.and_then(|v| v.to_json().ok()), Some(json!(2)));
        assert_eq!(push.previous.and_then(|v| v.to_json().ok()), Some(json!(1)));
        assert_eq!((push.time, push.seq), (5.5, Some(9)));
    }
}
