//! The Rust client crate (`komoku-client`) against the real server binary: typed commands,
//! errors with the server's codes, and a server killed and restarted under a writer and a
//! subscriber: every put arrives once and in order, the subscription carries on.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::StreamExt;
use komoku_client::{Client, Error, Options};
use komoku_tests::{Client as RawClient, ServerProcess, WAIT, fixtures_dir};
use serde_json::{Value as Json, json};

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");

/// The server on a fixed address (so a restart is reachable at the same URL).
fn serve_at(addr: &str, data: &std::path::Path) -> Result<ServerProcess> {
    let mut command = Command::new(BIN);
    command
        .args(["--listen", addr, "--data"])
        .arg(data)
        .arg("--plugins")
        .arg(fixtures_dir());
    ServerProcess::spawn(command)
}

fn quick() -> Options {
    Options {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Options::default()
    }
}

/// Every stored point of `key`, oldest first, as (time, value).
async fn history(url: &str, key: &str) -> Result<Vec<(f64, Json)>> {
    let mut raw = RawClient::connect(url).await?;
    let answer = raw
        .request(json!({"fetch": {"key": key, "opts": {"since": 0, "limit": 10000}}}))
        .await?;
    let rows = answer.as_array().context("fetch answers rows")?;
    Ok(rows
        .iter()
        .map(|r| (r[0].as_f64().unwrap_or(f64::NAN), r[1].clone()))
        .collect())
}

#[tokio::test]
async fn typed_commands_and_server_errors() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start(BIN, data.path())?;
    let client = Client::connect(&server.url(), quick()).await?;

    client.put("room.temp", 21.5).await?;
    assert_eq!(client.get("room.temp").await?, Some(json!(21.5)));
    assert_eq!(client.get("nothing.here").await?, None);
    let last = client.last("room.temp").await?.context("a point")?;
    assert_eq!(last.value, json!(21.5));

    client.increment("visits", 2.0).await?;
    client.decrement("visits", 0.5).await?;
    assert_eq!(client.get("visits").await?, Some(json!(1.5)));

    let mut opts = serde_json::Map::new();
    opts.insert("max_time".into(), json!(77));
    client.define("door", "uptime", opts).await?;
    let keys = client.keys_with_values().await?;
    assert_eq!(keys["door"].type_name, "uptime");
    assert_eq!(keys["door"].opts.get("max_time"), Some(&json!(77)));
    assert_eq!(keys["room.temp"].value, Some(json!(21.5)));

    // The server's refusals keep their codes.
    match client.put("room.temp", "warm").await {
        Err(Error::Server { code, .. }) => assert_eq!(code, "invalid_value"),
        other => bail!("a numeric key took a word: {other:?}"),
    }
    match client
        .define("room.temp", "boolean", Default::default())
        .await
    {
        Err(e) => assert_eq!(e.code(), Some("type_mismatch"), "{e}"),
        Ok(()) => bail!("redefined with another type"),
    }
    let err = client
        .query(json!({"key": "missing", "since": 0}))
        .await
        .err()
        .context("a query of a missing key fails")?;
    assert_eq!(err.code(), Some("unknown_key"), "{err}");

    client.delete("visits").await?;
    assert_eq!(client.get("visits").await?, None);

    // Many requests in flight on one connection, answered each to its own caller.
    let puts: Vec<_> = (0..200).map(|i| client.put("burst", i)).collect();
    for p in puts {
        p.await?;
    }
    let values: Vec<Json> = history(&server.url(), "burst")
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, (0..200).map(Json::from).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn unreachable_server_and_wrong_token_are_clear_errors() -> Result<()> {
    // A port nothing listens on: bind one, then free it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    match Client::connect(&format!("ws://{addr}"), quick()).await {
        Err(Error::Connect { .. }) => {}
        Err(other) => bail!("expected a connect error, got {other}"),
        Ok(_) => bail!("connected to nothing"),
    }
    assert!(matches!(
        Client::connect("http://localhost", quick()).await,
        Err(Error::BadUrl(_))
    ));

    let data = tempfile::tempdir()?;
    let server = komoku_tests::start_with_one_token(BIN, data.path(), "right-token", "*")?;
    let wrong = Options {
        token: Some("wrong-token".into()),
        ..quick()
    };
    let err = Client::connect(&server.url(), wrong)
        .await
        .err()
        .context("a wrong token is refused")?;
    assert_eq!(err.code(), Some("unauthorized"), "{err}");
    let right = Options {
        token: Some("right-token".into()),
        ..quick()
    };
    let client = Client::connect(&server.url(), right).await?;
    client.put("k", 1).await?;
    assert_eq!(client.get("k").await?, Some(json!(1)));
    Ok(())
}

#[tokio::test]
async fn killed_server_loses_nothing_doubles_nothing_and_subscriptions_resume() -> Result<()> {
    let data = tempfile::tempdir()?;
    let first = ServerProcess::start(BIN, data.path())?;
    let addr = first.addr.to_string();
    let url = first.url();

    let client = Client::connect(&url, quick()).await?;
    let watcher = Client::connect(&url, quick()).await?;
    let mut changes = watcher.subscribe("seq").await?;
    // A key that does not exist yet: its subscription must survive the restart too.
    let mut later = watcher.subscribe("later").await?;

    // A writer puts 0, 1, 2, ... without pause, each awaited; the server is killed under it.
    const N: i64 = 600;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..N {
                // Keep a few in flight at once, as a busy agent does.
                let ack = client.put("seq", i);
                if i % 4 == 3 {
                    ack.await?;
                } else {
                    tokio::spawn(ack);
                }
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            client.put("seq", N).await?;
            Ok::<_, Error>(())
        })
    };

    // Wait until some values arrived, then kill the server with no shutdown at all.
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let c = tokio::time::timeout(WAIT, changes.next())
            .await?
            .context("stream ended")?;
        seen.push(c.value);
    }
    first.kill9()?;
    // While the server is down, puts wait in the client's queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(!client.is_connected(), "still connected to a killed server");
    let second = serve_at(&addr, data.path())?;

    tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .context("writer did not finish")???;
    assert_eq!(client.dropped(), 0);
    assert!(client.reconnects() >= 1);

    // The subscription resumed and saw every value once, in order.
    while seen.last() != Some(&json!(N)) {
        let c = tokio::time::timeout(WAIT, changes.next())
            .await
            .with_context(|| format!("subscription stalled after {:?}", seen.last()))?
            .context("stream ended")?;
        seen.push(c.value);
    }
    let expected: Vec<Json> = (0..=N).map(Json::from).collect();
    assert_eq!(
        seen, expected,
        "the subscription saw each value once, in order"
    );
    client.put("later", "here").await?;
    let c = tokio::time::timeout(WAIT, later.next())
        .await
        .context("the subscription to a key created after the restart is gone")?
        .context("stream ended")?;
    assert_eq!(c.value, json!("here"));

    // The server stored every value once, in order.
    let stored: Vec<Json> = history(&second.url(), "seq")
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(stored, expected, "history holds each put once, in order");
    Ok(())
}

#[tokio::test]
async fn offline_queue_is_bounded_keeps_order_and_reports_drops() -> Result<()> {
    let data = tempfile::tempdir()?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // Started with no server: puts queue.
    let client = Client::start(
        &format!("ws://{addr}"),
        Options {
            queue_limit: 5,
            ..quick()
        },
    )?;
    let acks: Vec<_> = (0..8).map(|i| client.put("q", i)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.pending_puts(), 5);
    assert_eq!(client.dropped(), 3);
    assert!(matches!(client.get("q").await, Err(Error::Offline)));

    let server = serve_at(&addr.to_string(), data.path())?;
    let mut results = Vec::new();
    for ack in acks {
        results.push(tokio::time::timeout(WAIT, ack).await?);
    }
    for r in &results[..3] {
        assert!(matches!(r, Err(Error::Dropped)), "{r:?}");
    }
    for r in &results[3..] {
        assert!(r.is_ok(), "{r:?}");
    }
    let stored: Vec<Json> = history(&server.url(), "q")
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(stored, (3..8).map(Json::from).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn wss_with_a_trusted_certificate_and_a_token() -> Result<()> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let server = komoku_tests::TestServer::start_with(|cfg| {
        cfg.tls = Some(komoku::tls::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![komoku_tests::token(
            "t",
            "tls-secret",
            [&["*"], &["*"], &["*"], &["*"]],
        )];
    })
    .await?;
    let url = format!("wss://localhost:{}", server.server.local_addr.port());
    let trusting = Options {
        token: Some("tls-secret".into()),
        ca_file: Some(cert.clone()),
        ..quick()
    };
    let client = Client::connect(&url, trusting.clone()).await?;
    client.put("secure", 1).await?;
    assert_eq!(client.get("secure").await?, Some(json!(1)));

    // Without the certificate trusted, the handshake fails, saying why.
    let err = Client::connect(
        &url,
        Options {
            ca_file: None,
            ..trusting.clone()
        },
    )
    .await
    .err()
    .context("an untrusted certificate was accepted")?;
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // Plain ws:// to a TLS listener fails too.
    let plain = format!("ws://localhost:{}", server.server.local_addr.port());
    assert!(Client::connect(&plain, trusting).await.is_err());
    Ok(())
}
