//! The binary protocol (`tcp://`, `tcps://`): the client's v2 request objects as protobuf
//! [`Request`]s, the server's frames back in the v2 shape, so the rest of the client does not
//! care which protocol carries them.

use bytes::BytesMut;
use komoku_proto::{self as proto, Frames, Request, ServerFrame, request, server_frame};
use prost::Message as _;
use serde_json::{Map, Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::{Error, Io, Options, Result};

/// Largest frame the client accepts from the server (a `keys` listing of many keys, a long
/// history).
const MAX_FRAME: usize = 256 << 20;

/// One connection speaking the binary protocol.
pub(crate) struct Conn {
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
    input: BytesMut,
    output: BytesMut,
    frames: Frames,
}

/// TCP, then TLS for `tcps://`, then `auth` with the token if there is one.
pub(crate) async fn open(url: &str, options: &Options) -> Result<Conn> {
    let fail = |reason: String| Error::Connect {
        url: url.to_string(),
        reason,
    };
    match tokio::time::timeout(options.connect_timeout, handshake(url, options)).await {
        Err(_) => Err(fail("timed out".into())),
        Ok(Err(Error::Connect { reason, .. })) => Err(fail(reason)),
        Ok(other) => other,
    }
}

async fn handshake(url: &str, options: &Options) -> Result<Conn> {
    let fail = |reason: String| Error::Connect {
        url: url.to_string(),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::BadUrl(url.to_string()))?;
    let (host, port) = super::tcp_host_port(rest).ok_or_else(|| Error::BadUrl(url.to_string()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let stream = super::connect_stream(url, &host, port, scheme == "tcps", options).await?;
    let (reader, writer) = tokio::io::split(stream);
    let mut conn = Conn {
        reader,
        writer,
        input: BytesMut::with_capacity(4 << 10),
        output: BytesMut::new(),
        frames: Frames::new(MAX_FRAME),
    };
    if let Some(token) = &options.token {
        let mut auth = Map::from_iter([("auth".to_string(), json!({ "token": token }))]);
        conn.send(0, &mut auth)
            .await
            .map_err(|e| fail(e.to_string()))?;
        loop {
            let Some(mut msg) = conn.next().await else {
                return Err(fail("the server closed the connection".into()));
            };
            if msg.contains_key("pub") {
                continue;
            }
            if let Some(code) = msg.get("error").and_then(Json::as_str) {
                return Err(Error::Server {
                    code: code.to_string(),
                    message: Some("the server refused the token".into()),
                    detail: Json::Object(std::mem::take(&mut msg)),
                });
            }
            break;
        }
    }
    Ok(conn)
}

impl Conn {
    /// Sends the v2 request object `request` as request `id`.
    pub(crate) async fn send(
        &mut self,
        id: u64,
        request: &mut Map<String, Json>,
    ) -> std::io::Result<()> {
        self.output.clear();
        proto::encode_frame(&to_proto(id, request), &mut self.output);
        self.writer.write_all(&self.output).await?;
        self.writer.flush().await
    }

    /// The next server frame in the v2 shape; `None` once the connection is gone (or the
    /// server closed it: its reason is logged). Cancel-safe: bytes read stay in `input`.
    pub(crate) async fn next(&mut self) -> Option<Map<String, Json>> {
        loop {
            match self.frames.split(&mut self.input) {
                Err(e) => {
                    tracing::warn!(error = %e, "frame from the server refused");
                    return None;
                }
                Ok(Some(frame)) => match ServerFrame::decode(frame) {
                    Ok(ServerFrame { frame: Some(frame) }) => {
                        if let Some(msg) = from_proto(frame) {
                            return Some(msg);
                        }
                        return None;
                    }
                    Ok(ServerFrame { frame: None }) => {}
                    Err(e) => tracing::warn!(error = %e, "undecodable frame from the server"),
                },
                Ok(None) => match self.reader.read_buf(&mut self.input).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
            }
        }
    }

    pub(crate) async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// A v2 request object as a protobuf request: the commands with a case of their own as that
/// case, any other (or one with arguments the case cannot carry) as its JSON.
fn to_proto(id: u64, request: &Map<String, Json>) -> Request {
    use request::Command as C;
    let typed = request.iter().next().and_then(|(name, args)| {
        let key = || args.get("key")?.as_str().map(str::to_string);
        let number = |name: &str| match args.get(name) {
            None | Some(Json::Null) => Some(None),
            Some(v) => v.as_f64().map(Some),
        };
        let only = |fields: &[&str]| {
            args.as_object()
                .is_some_and(|o| o.keys().all(|k| fields.contains(&k.as_str())))
        };
        if request.len() != 1 {
            return None;
        }
        Some(match name.as_str() {
            "get" | "last" | "unsub" | "delete" if only(&["key"]) => {
                let k = proto::Key { key: key()? };
                match name.as_str() {
                    "get" => C::Get(k),
                    "last" => C::Last(k),
                    "unsub" => C::Unsub(k),
                    _ => C::Delete(k),
                }
            }
            "put" if only(&["key", "value", "time"]) => C::Put(proto::Put {
                key: key()?,
                value: Some(proto::Value::from_json(args.get("value")?)),
                time: number("time")?,
            }),
            "increment" | "decrement" if only(&["key", "step"]) => {
                let add = proto::Add {
                    key: key()?,
                    step: number("step")?,
                };
                if name == "increment" {
                    C::Increment(add)
                } else {
                    C::Decrement(add)
                }
            }
            "sub" if only(&["key", "since", "seq"]) => C::Sub(proto::Sub {
                key: key()?,
                since: number("since")?,
                seq: args.get("seq").and_then(Json::as_bool).unwrap_or(false),
            }),
            "auth" if only(&["token"]) => C::Auth(proto::Auth {
                token: args.get("token")?.as_str()?.to_string(),
            }),
            "ping" => C::Ping(proto::Value::from_json(args)),
            _ => return None,
        })
    });
    Request {
        id,
        command: Some(typed.unwrap_or_else(|| C::Json(Json::Object(request.clone()).to_string()))),
    }
}

/// A server frame in the websocket v2 shape; `None` for a closing frame.
fn from_proto(frame: server_frame::Frame) -> Option<Map<String, Json>> {
    use proto::response::Result as R;
    let value = |v: Option<proto::Value>| v.and_then(|v| v.to_json().ok()).unwrap_or(Json::Null);
    Some(match frame {
        server_frame::Frame::Response(response) => {
            let mut msg = Map::new();
            match response.result {
                Some(R::Ok(_)) => {
                    msg.insert("result".into(), json!("ok"));
                }
                None => {
                    msg.insert("result".into(), Json::Null);
                }
                Some(R::Value(v)) => {
                    msg.insert("result".into(), value(Some(v)));
                }
                Some(R::Error(e)) => {
                    msg.insert("error".into(), json!(e.code));
                    for (name, field) in [
                        ("message", e.message),
                        ("permission", e.permission),
                        ("key", e.key),
                    ] {
                        if !field.is_empty() {
                            msg.insert(name.into(), json!(field));
                        }
                    }
                }
            }
            msg.insert("query_id".into(), json!(response.id));
            msg
        }
        server_frame::Frame::Push(push) => {
            let mut body = Map::new();
            body.insert("key".into(), json!(push.key));
            body.insert("value".into(), value(push.value));
            body.insert("time".into(), proto::number_json(push.time));
            body.insert("previous".into(), value(push.previous));
            if let Some(seq) = push.seq {
                body.insert("seq".into(), json!(seq));
            }
            Map::from_iter([("pub".to_string(), Json::Object(body))])
        }
        server_frame::Frame::Unsubscribed(lost) => Map::from_iter([(
            "unsubscribed".to_string(),
            json!({"keys": lost.keys, "reason": lost.reason}),
        )]),
        server_frame::Frame::Closing(closing) => {
            tracing::info!(code = %closing.code, reason = %closing.reason, "the server closed the connection");
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: Json) -> Map<String, Json> {
        match json {
            Json::Object(o) => o,
            _ => Map::new(),
        }
    }

    #[test]
    fn simple_requests_get_their_own_case_and_others_go_as_json() {
        let put = to_proto(
            4,
            &object(json!({"put": {"key": "t", "value": 21.5, "time": 2.0}})),
        );
        assert!(matches!(
            put.command,
            Some(request::Command::Put(proto::Put { ref key, time: Some(2.0), .. })) if key == "t"
        ));
        assert_eq!(put.id, 4);
        let keys = to_proto(0, &object(json!({"keys": {"include": ["value"]}})));
        assert_eq!(
            keys.command,
            Some(request::Command::Json(
                r#"{"keys":{"include":["value"]}}"#.into()
            ))
        );
        // An argument the typed case has no field for goes as JSON, not dropped.
        let odd = to_proto(0, &object(json!({"get": {"key": "t", "extra": 1}})));
        assert!(matches!(odd.command, Some(request::Command::Json(_))));
    }

    #[test]
    fn responses_come_back_in_the_v2_shape() {
        let error = from_proto(server_frame::Frame::Response(proto::Response {
            id: 9,
            result: Some(proto::response::Result::Error(proto::Error {
                code: "forbidden".into(),
                message: String::new(),
                permission: "write".into(),
                key: "k".into(),
            })),
        }));
        assert_eq!(
            error.map(Json::Object),
            Some(json!({"error": "forbidden", "permission": "write", "key": "k", "query_id": 9}))
        );
    }

    #[test]
    fn urls_take_the_default_port_and_refuse_paths() {
        assert_eq!(
            super::super::normal_url("tcp://localhost").ok().as_deref(),
            Some("tcp://localhost:7375")
        );
        assert_eq!(
            super::super::normal_url("tcps://[::1]:9/").ok().as_deref(),
            Some("tcps://[::1]:9")
        );
        assert!(super::super::normal_url("tcp://host/path").is_err());
        assert!(super::super::normal_url("tcp://:5").is_err());
        assert!(super::super::normal_url("http://host").is_err());
    }
}
