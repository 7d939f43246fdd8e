//! The binary protocol (`tcp_listen`): length-prefixed protobuf frames against a real server.
//! Every command answers as it does over the websocket (the same command layer), auth and
//! permissions hold, requests pipeline and are answered in order, and malformed frames (bad
//! protobuf, a length prefix over the limit, a frame cut short) are answered or end only
//! their own connection. Then `komoku-client` and the `komoku` CLI over `tcp://` and
//! `tcps://`.

use std::net::SocketAddr;
use std::process::Command as Process;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::BytesMut;
use futures_util::StreamExt;
use komoku_proto::{
    self as proto, Frames, Request, Response, ServerFrame, request, response, server_frame,
};
use komoku_tests::{ServerProcess, TestServer, WAIT, fixtures_dir, token};
use prost::Message as _;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");
const ALL: &[&str] = &["*"];
const SENSORS: &[&str] = &["sensor.*"];

/// A server with the binary listener on, auth on with an admin token (everything) and a
/// sensors token (`sensor.*` only).
async fn server() -> Result<TestServer> {
    TestServer::start_with(|cfg| {
        cfg.tcp_listen = Some("127.0.0.1:0".parse().expect("an address"));
        cfg.max_frame_bytes = 64 << 10;
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![
            token("admin", "admin-secret", [ALL, ALL, ALL, ALL]),
            token(
                "sensors",
                "sensor-secret",
                [SENSORS, SENSORS, SENSORS, SENSORS],
            ),
        ];
    })
    .await
}

fn tcp_addr(server: &TestServer) -> Result<SocketAddr> {
    server.server.tcp_addr.context("tcp_listen is on")
}

/// A raw protobuf connection: requests numbered from 1, pushes kept aside.
struct Tcp {
    stream: TcpStream,
    input: BytesMut,
    frames: Frames,
    next_id: u64,
    pushes: Vec<proto::Push>,
}

impl Tcp {
    async fn connect(addr: SocketAddr) -> Result<Tcp> {
        Ok(Tcp {
            stream: TcpStream::connect(addr).await?,
            input: BytesMut::new(),
            frames: Frames::new(64 << 20),
            next_id: 1,
            pushes: Vec::new(),
        })
    }

    /// Connects and authenticates with `secret`.
    async fn login(addr: SocketAddr, secret: &str) -> Result<Tcp> {
        let mut c = Tcp::connect(addr).await?;
        let answer = c
            .call(request::Command::Auth(proto::Auth {
                token: secret.into(),
            }))
            .await?;
        ensure!(answer == json!("ok"), "auth answered {answer}");
        Ok(c)
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Sends `command` without waiting; returns its id.
    async fn send(&mut self, command: request::Command) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        proto::encode_frame(
            &Request {
                id,
                command: Some(command),
            },
            &mut out,
        );
        self.send_raw(&out).await?;
        Ok(id)
    }

    /// The next server frame; `None` at the end of the stream.
    async fn frame(&mut self) -> Result<Option<server_frame::Frame>> {
        loop {
            if let Some(frame) = self.frames.split(&mut self.input)? {
                return Ok(ServerFrame::decode(frame)?.frame);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.input))
                .await
                .context("no frame from the server")??;
            if n == 0 {
                ensure!(self.input.is_empty(), "the stream ended inside a frame");
                return Ok(None);
            }
        }
    }

    /// The next response (pushes before it are kept).
    async fn response(&mut self) -> Result<Response> {
        loop {
            match self.frame().await? {
                Some(server_frame::Frame::Response(r)) => return Ok(r),
                Some(server_frame::Frame::Push(p)) => self.pushes.push(p),
                Some(other) => bail!("expected a response, got {other:?}"),
                None => bail!("the connection closed"),
            }
        }
    }

    /// Sends `command` and returns its answer in the websocket v2 shape: the result, or
    /// `{"error": code, ...}`.
    async fn call(&mut self, command: request::Command) -> Result<Json> {
        let id = self.send(command).await?;
        let r = self.response().await?;
        ensure!(r.id == id, "response {} to request {id}", r.id);
        Ok(v2(r))
    }

    async fn json(&mut self, request: Json) -> Result<Json> {
        self.call(request::Command::Json(request.to_string())).await
    }
}

/// A response as the websocket v2 would render it (the result, or the error object).
fn v2(r: Response) -> Json {
    match r.result {
        Some(response::Result::Ok(_)) => json!("ok"),
        Some(response::Result::Value(v)) => v.to_json().unwrap_or(Json::Null),
        Some(response::Result::Error(e)) => {
            let mut o = json!({"error": e.code});
            if !e.permission.is_empty() {
                o["permission"] = json!(e.permission);
                o["key"] = json!(e.key);
            }
            o
        }
        None => Json::Null,
    }
}

fn key(k: &str) -> proto::Key {
    proto::Key { key: k.into() }
}

fn put(k: &str, v: Json, time: Option<f64>) -> request::Command {
    request::Command::Put(proto::Put {
        key: k.into(),
        value: Some(proto::Value::from_json(&v)),
        time,
    })
}

#[tokio::test]
async fn tcp_every_command_answers_as_the_websocket_does() -> Result<()> {
    use request::Command as C;
    let server = server().await?;
    let addr = tcp_addr(&server)?;
    let mut c = Tcp::login(addr, "admin-secret").await?;
    let mut ws =
        komoku_tests::Client::connect(&format!("{}?token=admin-secret", server.url_v2())).await?;

    assert_eq!(
        c.call(put("t", json!(21.5), Some(1000.0))).await?,
        json!("ok")
    );
    assert_eq!(c.call(put("t", json!(22), None)).await?, json!("ok"));
    assert_eq!(c.call(C::Get(key("t"))).await?, json!(22));
    assert_eq!(c.call(C::Get(key("missing"))).await?, Json::Null);
    let last = c.call(C::Last(key("t"))).await?;
    assert_eq!(last["value"], json!(22));
    assert_eq!(
        last,
        ws.request(json!({"last": {"key": "t"}})).await?["result"]
    );
    assert_eq!(
        c.call(put("t", json!("warm"), None)).await?,
        json!({"error": "invalid_value"})
    );
    let add = |key: &str, step| proto::Add {
        key: key.into(),
        step,
    };
    assert_eq!(c.call(C::Increment(add("c", None))).await?, json!("ok"));
    assert_eq!(
        c.call(C::Increment(add("c", Some(2.5)))).await?,
        json!("ok")
    );
    assert_eq!(
        c.call(C::Decrement(add("c", Some(0.5)))).await?,
        json!("ok")
    );
    assert_eq!(c.call(C::Get(key("c"))).await?, json!(3));
    assert_eq!(
        c.call(C::Ping(proto::Value::from_json(&json!("foo"))))
            .await?,
        json!({"pong": "foo"})
    );
    assert_eq!(
        c.json(json!({"define": {"door": {"type": "uptime", "max_time": 77}}}))
            .await?,
        json!("ok")
    );
    // Structured commands go as JSON and answer exactly as over the websocket.
    for request in [
        json!({"keys": {"include": ["value"]}}),
        json!({"fetch": {"key": "t", "opts": {"since": 0}}}),
        json!({"query": {"key": "t", "since": 0, "until": 2000, "step": "1h", "figures": ["mean", "max"]}}),
        json!({"retention": {}}),
        json!({"define": {"door": {"type": "boolean"}}}),
        json!({"frobnicate": {}}),
        json!({"get": {"key": 5}}),
    ] {
        let over_tcp = c.json(request.clone()).await?;
        let over_ws = ws.request(request.clone()).await?;
        let expected = over_ws
            .get("result")
            .cloned()
            .unwrap_or_else(|| json!({"error": over_ws["error"]}));
        assert_eq!(over_tcp, expected, "{request}");
    }
    assert!(c.json(json!({"stats": {}})).await?["ops_count"]["put"].as_u64() >= Some(2));
    assert!(c.json(json!({"types": {}})).await?["types"]["numeric"].is_object());
    assert!(c.json(json!({"compact": {"key": "t"}})).await?.is_object());

    // sub: pushes with key, value, time and previous; after unsub, none.
    assert_eq!(
        c.call(C::Sub(proto::Sub {
            key: "t".into(),
            since: None,
            seq: true,
        }))
        .await?,
        json!("ok")
    );
    ws.request(json!({"put": {"key": "t", "value": 23}}))
        .await?;
    let push = match c.frame().await? {
        Some(server_frame::Frame::Push(p)) => p,
        other => bail!("expected a push, got {other:?}"),
    };
    assert_eq!(push.key, "t");
    assert_eq!(push.value.map(|v| v.to_json()), Some(Ok(json!(23))));
    assert_eq!(push.previous.map(|v| v.to_json()), Some(Ok(json!(22))));
    assert!(push.seq.is_some() && push.time > 1000.0);
    assert_eq!(c.call(C::Unsub(key("t"))).await?, json!("ok"));
    ws.request(json!({"put": {"key": "t", "value": 24}}))
        .await?;
    assert_eq!(c.call(C::Get(key("t"))).await?, json!(24));
    assert!(c.pushes.is_empty(), "a push after unsub: {:?}", c.pushes);
    // sub with since: the history first.
    let with_history = c
        .call(C::Sub(proto::Sub {
            key: "t".into(),
            since: Some(0.0),
            seq: false,
        }))
        .await?;
    assert_eq!(with_history["history"][0], json!([1000, 21.5]));

    assert_eq!(c.call(C::Delete(key("c"))).await?, json!("ok"));
    assert_eq!(c.call(C::Get(key("c"))).await?, Json::Null);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tcp_auth_and_permissions_are_the_websockets() -> Result<()> {
    use request::Command as C;
    let server = server().await?;
    let addr = tcp_addr(&server)?;
    let mut anonymous = Tcp::connect(addr).await?;
    assert_eq!(
        anonymous.call(C::Get(key("sensor.a"))).await?,
        json!({"error": "unauthorized"})
    );
    assert_eq!(
        anonymous
            .call(C::Auth(proto::Auth {
                token: "wrong".into()
            }))
            .await?,
        json!({"error": "unauthorized"})
    );
    // A wrong token leaves the connection as it was; a right one opens it.
    let mut sensors = anonymous;
    assert_eq!(
        sensors
            .call(C::Auth(proto::Auth {
                token: "sensor-secret".into()
            }))
            .await?,
        json!("ok")
    );
    assert_eq!(
        sensors.call(put("sensor.a", json!(1), None)).await?,
        json!("ok")
    );
    assert_eq!(
        sensors.call(put("kitchen", json!(1), None)).await?,
        json!({"error": "forbidden", "permission": "write", "key": "kitchen"})
    );
    assert_eq!(
        sensors
            .json(json!({"auth": {"token": "admin-secret"}}))
            .await?,
        json!("ok")
    );
    assert_eq!(
        sensors.call(put("kitchen", json!(1), None)).await?,
        json!("ok")
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tcp_a_connection_that_never_authenticates_is_closed_with_a_reason() -> Result<()> {
    let server = TestServer::start_with(|cfg| {
        cfg.tcp_listen = Some("127.0.0.1:0".parse().expect("an address"));
        cfg.auth.enabled = true;
        cfg.auth_timeout = 1;
    })
    .await?;
    let mut idle = Tcp::connect(tcp_addr(&server)?).await?;
    match idle.frame().await? {
        Some(server_frame::Frame::Closing(c)) => assert_eq!(c.code, "unauthorized"),
        other => bail!("expected a closing frame, got {other:?}"),
    }
    assert!(idle.frame().await?.is_none());
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tcp_pipelined_requests_are_answered_in_order() -> Result<()> {
    let server = server().await?;
    let mut c = Tcp::login(tcp_addr(&server)?, "admin-secret").await?;
    // 2000 requests in one write, puts and gets interleaved, before reading any answer.
    let mut out = BytesMut::new();
    let n = 1000u64;
    for i in 0..n {
        for (id, command) in [
            (2 * i + 100, put("p", json!(i), Some(1000.0 + i as f64))),
            (2 * i + 101, request::Command::Get(key("p"))),
        ] {
            proto::encode_frame(
                &Request {
                    id,
                    command: Some(command),
                },
                &mut out,
            );
        }
    }
    c.send_raw(&out).await?;
    for i in 0..n {
        let r = c.response().await?;
        ensure!(r.id == 2 * i + 100, "put {i} answered as {}", r.id);
        ensure!(v2(r) == json!("ok"));
        let r = c.response().await?;
        ensure!(r.id == 2 * i + 101, "get {i} answered as {}", r.id);
        // Each get sees the put just before it.
        let value = v2(r);
        ensure!(value == json!(i), "get after put {i} answered {value}");
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tcp_malformed_frames_harm_no_other_connection() -> Result<()> {
    use request::Command as C;
    let server = server().await?;
    let addr = tcp_addr(&server)?;
    // A healthy connection, subscribed, throughout.
    let mut healthy = Tcp::login(addr, "admin-secret").await?;
    healthy
        .call(C::Sub(proto::Sub {
            key: "k".into(),
            since: None,
            seq: false,
        }))
        .await?;

    // Bad protobuf: answered with invalid_frame, and the connection carries on.
    let mut bad = Tcp::login(addr, "admin-secret").await?;
    bad.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await?;
    let r = bad.response().await?;
    assert_eq!(v2(r), json!({"error": "invalid_frame"}));
    // An empty frame is a request without a command.
    bad.send_raw(&[0, 0, 0, 0]).await?;
    assert_eq!(v2(bad.response().await?), json!({"error": "invalid_query"}));
    // A value that is no JSON.
    let broken = bad
        .call(C::Put(proto::Put {
            key: "k".into(),
            value: Some(proto::Value {
                kind: Some(proto::value::Kind::Json("{".into())),
            }),
            time: None,
        }))
        .await?;
    assert_eq!(broken, json!({"error": "invalid_frame"}));
    assert_eq!(bad.call(put("k", json!(1), None)).await?, json!("ok"));

    // A length prefix over max_frame_bytes (64 KiB here): a closing frame, then the end.
    let mut huge = Tcp::login(addr, "admin-secret").await?;
    huge.send_raw(&[0xff, 0xff, 0xff, 0xf0]).await?;
    huge.send_raw(&[7u8; 4096]).await?;
    match huge.frame().await? {
        Some(server_frame::Frame::Closing(c)) => {
            assert_eq!(c.code, "limit_exceeded");
            assert!(c.reason.contains("over the limit"), "{}", c.reason);
        }
        other => bail!("expected a closing frame, got {other:?}"),
    }
    assert!(huge.frame().await?.is_none());
    // Just over the limit is refused as well; at the limit is read.
    let mut over = Tcp::login(addr, "admin-secret").await?;
    over.send_raw(&((64u32 << 10) + 1).to_be_bytes()).await?;
    assert!(matches!(
        over.frame().await?,
        Some(server_frame::Frame::Closing(_))
    ));

    // A frame cut short (the prefix promises more than arrives, then the client stops
    // writing): the server ends that connection without an answer.
    let mut cut = Tcp::login(addr, "admin-secret").await?;
    cut.send_raw(&[0, 0, 0, 100, 1, 2, 3]).await?;
    cut.stream.shutdown().await?;
    assert!(cut.frame().await.map(|f| f.is_none()).unwrap_or(true));

    // Garbage that is not the protocol at all (an HTTP request): its "length" is over the
    // limit, so it is closed.
    let mut http = Tcp::connect(addr).await?;
    http.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(matches!(
        http.frame().await?,
        Some(server_frame::Frame::Closing(_))
    ));

    // The healthy connection noticed nothing: it answers and gets both pushes, in order.
    assert_eq!(healthy.call(put("k", json!(2), None)).await?, json!("ok"));
    while healthy.pushes.len() < 2 {
        match healthy.frame().await? {
            Some(server_frame::Frame::Push(p)) => healthy.pushes.push(p),
            other => bail!("expected a push, got {other:?}"),
        }
    }
    let values: Vec<_> = healthy
        .pushes
        .iter()
        .map(|p| p.value.clone().map(|v| v.to_json()))
        .collect();
    assert_eq!(values, vec![Some(Ok(json!(1))), Some(Ok(json!(2)))]);
    assert_eq!(healthy.call(C::Get(key("k"))).await?, json!(2));
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tcp_client_crate_speaks_tcp_and_tcps() -> Result<()> {
    // A TLS server: the listener's TLS is the websocket's ([tls]).
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key_file, certified.signing_key.serialize_pem())?;
    let secure = TestServer::start_with(|cfg| {
        cfg.tcp_listen = Some("127.0.0.1:0".parse().expect("an address"));
        cfg.tls = Some(komoku::tls::TlsConfig {
            cert: cert.clone(),
            key: key_file.clone(),
        });
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![token("t", "tls-secret", [ALL, ALL, ALL, ALL])];
    })
    .await?;
    let port = tcp_addr(&secure)?.port();
    let options = komoku_client::Options {
        token: Some("tls-secret".into()),
        ca_file: Some(cert.clone()),
        ..Default::default()
    };
    let client =
        komoku_client::Client::connect(&format!("tcps://localhost:{port}"), options.clone())
            .await?;
    client.put("room.temp", 21.5).await?;
    assert_eq!(client.get("room.temp").await?, Some(json!(21.5)));
    let mut changes = client.subscribe("room.temp").await?;
    client.put("room.temp", 22).await?;
    let change = tokio::time::timeout(WAIT, changes.next())
        .await?
        .context("the subscription ended")?;
    assert_eq!(change.value, json!(22));
    match client.put("room.temp", "warm").await {
        Err(komoku_client::Error::Server { code, .. }) => assert_eq!(code, "invalid_value"),
        other => bail!("a numeric key took a word: {other:?}"),
    }
    // Plain tcp:// to a TLS listener does not get through; a wrong token is refused.
    let plain = komoku_client::Client::connect(
        &format!("tcp://localhost:{port}"),
        komoku_client::Options {
            connect_timeout: Duration::from_secs(3),
            ..options.clone()
        },
    )
    .await;
    assert!(plain.is_err(), "plain tcp to a TLS listener connected");
    let wrong = komoku_client::Client::connect(
        &format!("tcps://localhost:{port}"),
        komoku_client::Options {
            token: Some("wrong".into()),
            ..options
        },
    )
    .await;
    match wrong {
        Err(e) => assert_eq!(e.code(), Some("unauthorized"), "{e}"),
        Ok(_) => bail!("a wrong token connected"),
    }
    client.close();
    secure.stop().await?;
    Ok(())
}

/// The server binary with the binary listener on a fixed port (so a restart is reachable at
/// the same URL); returns it with its tcp address.
fn serve_tcp_at(ws: &str, tcp: &str, data: &std::path::Path) -> Result<ServerProcess> {
    let mut command = Process::new(BIN);
    command
        .args(["--listen", ws, "--tcp-listen", tcp, "--data"])
        .arg(data)
        .arg("--plugins")
        .arg(fixtures_dir());
    ServerProcess::spawn(command)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn tcp_client_survives_a_server_restart_and_the_cli_speaks_tcp() -> Result<()> {
    let data = tempfile::tempdir()?;
    let ws = format!("127.0.0.1:{}", free_port()?);
    let tcp = format!("127.0.0.1:{}", free_port()?);
    let url = format!("tcp://{tcp}");
    let server = serve_tcp_at(&ws, &tcp, data.path())?;
    let client = komoku_client::Client::connect(
        &url,
        komoku_client::Options {
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await?;
    let mut changes = client.subscribe("w").await?;
    client.put("w", 1).await?;
    server.kill9()?;
    // Puts while the server is down wait in the queue.
    let queued: Vec<_> = (2..=5).map(|i| client.put("w", i)).collect();
    let server = serve_tcp_at(&ws, &tcp, data.path())?;
    for ack in queued {
        tokio::time::timeout(WAIT, ack).await??;
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&json!(5)) {
        let change = tokio::time::timeout(WAIT, changes.next())
            .await?
            .context("the subscription ended")?;
        seen.push(change.value);
    }
    assert_eq!(seen, (1..=5).map(|i| json!(i)).collect::<Vec<_>>());
    client.close();

    // The CLI through the same client: put, get, and an error with the server's code.
    let cli = |args: &[&str]| {
        Process::new(BIN)
            .args(args)
            .env("KOMOKU_URL", &url)
            .env_remove("KOMOKU_TOKEN")
            .output()
    };
    let out = cli(&["put", "cli.k", "7"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["get", "cli.k"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
    let out = cli(&["put", "cli.k", "warm"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_value"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kill9()?;
    Ok(())
}
