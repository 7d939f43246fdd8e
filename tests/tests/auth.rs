//! Authentication and authorization over a real websocket: tokens in the URL, in a header or
//! in an `auth` request; wrong, missing and revoked tokens; each permission denied and
//! granted; `keys` and pushes filtered to what the token may read.

use std::time::Duration;

use anyhow::{Result, bail};
use komoku_tests::{Client, TestServer, token};
use serde_json::json;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ALL: &[&str] = &["*"];
const NONE: &[&str] = &[];
const SENSORS: &[&str] = &["sensor.*"];

/// admin: everything; sensors: read/write/subscribe/define `sensor.*` (a first put defines a
/// key, so writers of new keys need define too);
/// watcher: subscribe to everything but read nothing; old: everything, revoked.
async fn server() -> Result<TestServer> {
    TestServer::start_with(|cfg| {
        cfg.auth.enabled = true;
        let mut old = token("old", "old-secret", [ALL, ALL, ALL, ALL]);
        old.revoked = true;
        cfg.auth.tokens = vec![
            token("admin", "admin-secret", [ALL, ALL, ALL, ALL]),
            token(
                "sensors",
                "sensor-secret",
                [SENSORS, SENSORS, SENSORS, SENSORS],
            ),
            token("watcher", "watcher-secret", [NONE, NONE, ALL, NONE]),
            old,
        ];
    })
    .await
}

async fn connect_as(s: &TestServer, secret: &str) -> Result<Client> {
    Client::connect(&format!("{}?token={secret}", s.url())).await
}

/// The HTTP status of a refused websocket upgrade.
async fn refused_status(url: &str) -> Result<u16> {
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => bail!("expected an HTTP refusal, got {e}"),
        Ok(_) => bail!("the upgrade with a bad token was accepted"),
    }
}

#[tokio::test]
async fn a_connection_without_token_can_only_authenticate() -> Result<()> {
    let s = server().await?;
    let mut c = s.client().await?;
    let unauthorized = json!({"error": "unauthorized"});
    for request in [
        json!({"get": {"key": "sensor.t"}}),
        json!({"put": {"key": "sensor.t", "value": 1}}),
        json!({"keys": {}}),
        json!({"sub": {"key": "sensor.t"}}),
        json!({"stats": {}}),
        json!({"frobnicate": {}}),
    ] {
        assert_eq!(c.request(request.clone()).await?, unauthorized, "{request}");
    }
    assert_eq!(
        c.request(json!([{"get": {"key": "a"}}, {"ping": 1}]))
            .await?,
        json!([unauthorized, unauthorized])
    );
    let mut v2 = s.client_v2().await?;
    assert_eq!(
        v2.request(json!({"get": {"key": "a"}, "query_id": 7}))
            .await?,
        json!({"error": "unauthorized", "query_id": 7})
    );
    // Then it authenticates and may work.
    assert_eq!(
        c.request(json!({"auth": {"token": "sensor-secret"}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "sensor.t", "value": 1}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        v2.request(json!({"auth": {"token": "admin-secret"}, "query_id": 8}))
            .await?,
        json!({"result": "ok", "query_id": 8})
    );
    assert_eq!(
        v2.request(json!({"get": {"key": "sensor.t"}})).await?,
        json!({"result": 1})
    );
    Ok(())
}

#[tokio::test]
async fn wrong_and_revoked_tokens_are_refused() -> Result<()> {
    let s = server().await?;
    // In the URL or a header: the upgrade itself fails with 401.
    assert_eq!(
        refused_status(&format!("{}?token=nope", s.url())).await?,
        401
    );
    assert_eq!(
        refused_status(&format!("{}?token=old-secret", s.url())).await?,
        401
    );
    assert_eq!(
        refused_status(&format!("{}?token=", s.url_v2())).await?,
        401
    );
    let mut request = s.url().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", "Bearer old-secret".parse()?);
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => bail!("a revoked bearer token was not refused: {:?}", other.err()),
    }

    // In an `auth` request: an error reply, and the connection stays unauthenticated.
    let mut c = s.client().await?;
    for wrong in ["nope", "old-secret", "", "ADMIN-SECRET"] {
        assert_eq!(
            c.request(json!({"auth": {"token": wrong}})).await?,
            json!({"error": "unauthorized"}),
            "{wrong}"
        );
        assert_eq!(
            c.request(json!({"get": {"key": "a"}})).await?,
            json!({"error": "unauthorized"})
        );
    }
    assert_eq!(
        c.request(json!({"auth": {"secret": "admin-secret"}}))
            .await?,
        json!({"error": "invalid_query"})
    );
    Ok(())
}

#[tokio::test]
async fn a_bearer_header_authenticates() -> Result<()> {
    let s = server().await?;
    let mut request = s.url_v2().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", "Bearer sensor-secret".parse()?);
    let mut c = Client::connect_request(request).await?;
    assert_eq!(
        c.request(json!({"put": {"key": "sensor.h", "value": 40}}))
            .await?,
        json!({"result": "ok"})
    );
    Ok(())
}

#[tokio::test]
async fn the_ruby_client_authenticates_through_its_url() -> Result<()> {
    let s = server().await?;
    // Exactly what the unmodified Ruby client does with ws://host:port/?token=...: v1 replies.
    let mut ruby = connect_as(&s, "sensor-secret").await?;
    assert_eq!(
        ruby.request(json!({"put": {"key": "sensor.t", "value": 21.5}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        ruby.request(json!({"get": {"key": "sensor.t"}})).await?,
        json!(21.5)
    );
    assert_eq!(ruby.request(json!({"frobnicate": {}})).await?, json!("err"));
    // The query string does not hide the v2 path.
    let mut v2 = Client::connect(&format!("{}?token=sensor-secret", s.url_v2())).await?;
    assert_eq!(
        v2.request(json!({"get": {"key": "sensor.t"}})).await?,
        json!({"result": 21.5})
    );
    Ok(())
}

#[tokio::test]
async fn each_permission_is_denied_and_granted_by_pattern() -> Result<()> {
    let s = server().await?;
    let mut admin = connect_as(&s, "admin-secret").await?;
    let mut sensors = connect_as(&s, "sensor-secret").await?;
    let mut watcher = connect_as(&s, "watcher-secret").await?;
    let forbidden = |permission: &str, key: &str| json!({"error": "forbidden", "permission": permission, "key": key});

    // write
    assert_eq!(
        sensors
            .request(json!({"put": {"key": "sensor.t", "value": 1}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        sensors
            .request(json!({"put": {"key": "door", "value": true}}))
            .await?,
        forbidden("write", "door")
    );
    assert_eq!(
        sensors
            .request(json!({"increment": {"key": "visits"}}))
            .await?,
        forbidden("write", "visits")
    );
    assert_eq!(
        sensors.request(json!({"delete": {"key": "door"}})).await?,
        forbidden("write", "door")
    );
    assert_eq!(
        admin
            .request(json!({"put": {"key": "door", "value": true}}))
            .await?,
        json!("ack")
    );
    // read
    for request in [
        json!({"get": {"key": "door"}}),
        json!({"last": {"key": "door"}}),
        json!({"fetch": {"key": "door"}}),
        json!({"query": {"key": "door", "at": 0}}),
        json!({"query": {"key": "door", "figures": ["fraction_true"]}}),
    ] {
        assert_eq!(
            sensors.request(request.clone()).await?,
            forbidden("read", "door"),
            "{request}"
        );
    }
    assert_eq!(
        sensors.request(json!({"get": {"key": "sensor.t"}})).await?,
        json!(1)
    );
    assert_eq!(
        sensors
            .request(json!({"query": {"key": "sensor.t", "last": 1}}))
            .await?[0][1],
        json!(1)
    );
    assert_eq!(
        admin.request(json!({"get": {"key": "door"}})).await?,
        json!(true)
    );
    // define: only on sensors' pattern; in a multi-key define, one denied key refuses the
    // request.
    assert_eq!(
        sensors
            .request(
                json!({"define": {"sensor.u": {"type": "uptime"}, "door": {"type": "boolean"}}})
            )
            .await?,
        forbidden("define", "door")
    );
    assert_eq!(
        admin
            .request(json!({"define": {"sensor.u": {"type": "uptime", "max_time": 5}}}))
            .await?,
        json!("ack")
    );
    // subscribe: needs subscribe, and read (a push carries the value).
    assert_eq!(
        sensors.request(json!({"sub": {"key": "door"}})).await?,
        forbidden("subscribe", "door")
    );
    assert_eq!(
        watcher.request(json!({"sub": {"key": "door"}})).await?,
        forbidden("read", "door")
    );
    assert_eq!(
        sensors.request(json!({"sub": {"key": "sensor.t"}})).await?,
        json!("ack")
    );
    // Denials in an array are per request.
    assert_eq!(
        sensors
            .request(json!([
                {"put": {"key": "sensor.t", "value": 2}},
                {"put": {"key": "door", "value": false}},
            ]))
            .await?,
        json!(["ack", forbidden("write", "door")])
    );
    // v2 names the permission too.
    let mut v2 = Client::connect(&format!("{}?token=sensor-secret", s.url_v2())).await?;
    assert_eq!(
        v2.request(json!({"get": {"key": "door"}, "query_id": "q"}))
            .await?,
        json!({"error": "forbidden", "permission": "read", "key": "door", "query_id": "q"})
    );
    Ok(())
}

#[tokio::test]
async fn keys_lists_only_readable_keys() -> Result<()> {
    let s = server().await?;
    let mut admin = connect_as(&s, "admin-secret").await?;
    for (key, value) in [
        ("sensor.a", json!(1)),
        ("sensor.b", json!(2)),
        ("secret.c", json!(3)),
    ] {
        assert_eq!(
            admin
                .request(json!({"put": {"key": key, "value": value}}))
                .await?,
            json!("ack")
        );
    }
    let mut sensors = connect_as(&s, "sensor-secret").await?;
    assert_eq!(
        sensors
            .request(json!({"keys": {"include": ["value"]}}))
            .await?,
        json!({
            "sensor.a": {"type": "numeric", "value": 1},
            "sensor.b": {"type": "numeric", "value": 2},
        })
    );
    let mut watcher = connect_as(&s, "watcher-secret").await?;
    assert_eq!(watcher.request(json!({"keys": {}})).await?, json!({}));
    let all = admin.request(json!({"keys": {}})).await?;
    assert_eq!(all.as_object().map(|o| o.len()), Some(3), "{all}");
    Ok(())
}

#[tokio::test]
async fn pushes_reach_only_readers_of_the_key() -> Result<()> {
    let s = server().await?;
    let mut admin = connect_as(&s, "admin-secret").await?;
    let mut sensors = connect_as(&s, "sensor-secret").await?;
    assert_eq!(
        sensors.request(json!({"sub": {"key": "sensor.t"}})).await?,
        json!("ack")
    );
    assert_eq!(
        sensors.request(json!({"sub": {"key": "secret.c"}})).await?,
        json!({"error": "forbidden", "permission": "subscribe", "key": "secret.c"})
    );
    assert_eq!(
        admin.request(json!({"sub": {"key": "secret.c"}})).await?,
        json!("ack")
    );
    admin
        .request(json!([
            {"put": {"key": "secret.c", "value": 1}},
            {"put": {"key": "sensor.t", "value": 2}},
        ]))
        .await?;
    // The sensors connection gets sensor.t only; the secret push never comes.
    let push = sensors.push().await?;
    assert_eq!(push["pub"]["key"], json!("sensor.t"), "{push}");
    assert_eq!(sensors.maybe_push(Duration::from_millis(300)).await?, None);
    assert_eq!(admin.push().await?["pub"]["key"], json!("secret.c"));
    Ok(())
}

#[tokio::test]
async fn an_open_server_refuses_a_non_loopback_listener() -> Result<()> {
    let refused = TestServer::start_with(|cfg| cfg.listen = "0.0.0.0:0".parse().expect("addr"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("without authentication"), "{refused}");
    let with_auth = TestServer::start_with(|cfg| {
        cfg.listen = "0.0.0.0:0".parse().expect("addr");
        cfg.auth.enabled = true;
    })
    .await?;
    with_auth.stop().await?;
    Ok(())
}

#[tokio::test]
async fn retention_needs_define_on_the_pattern_and_compact_needs_write() -> Result<()> {
    let s = server().await?;
    let mut sensors = connect_as(&s, "sensor-secret").await?;
    // A grant on `sensor.*` does not cover the pattern `sensor*`.
    let policy = json!({"retention": {"key": "sensor*", "raw": "1d", "tiers": [["1H", null]]}});
    assert_eq!(
        sensors.request(policy.clone()).await?,
        json!({"error": "forbidden", "permission": "define", "key": "sensor*"})
    );
    assert_eq!(
        sensors
            .request(json!({"put": {"key": "sensor.t", "value": 1}}))
            .await?,
        json!("ack")
    );
    // Listing policies needs only a token; compacting needs write (of a key that exists).
    assert!(sensors.request(json!({"retention": {}})).await?["policies"].is_object());
    assert!(
        sensors
            .request(json!({"compact": {"key": "sensor.t"}}))
            .await?["steps"]
            .is_number()
    );
    assert_eq!(
        sensors.request(json!({"compact": {}})).await?,
        json!({"error": "forbidden", "permission": "write", "key": "*"})
    );
    let mut admin = connect_as(&s, "admin-secret").await?;
    assert_eq!(admin.request(policy).await?, json!("ack"));
    assert!(admin.request(json!({"compact": {}})).await?["steps"].is_number());
    Ok(())
}

#[tokio::test]
async fn reading_compacted_history_needs_read_and_loading_it_define() -> Result<()> {
    let s = server().await?;
    let mut sensors = connect_as(&s, "sensor-secret").await?;
    let put = json!({"put": {"key": "sensor.t", "value": 1}});
    assert_eq!(sensors.request(put).await?, json!("ack"));
    let page = sensors
        .request(json!({"tiers": {"key": "sensor.t"}}))
        .await?;
    assert_eq!(page["type"], "numeric", "{page}");
    assert!(page["state"].is_null(), "{page}");
    let load = json!({"load_tiers": {"key": "sensor.t", "type": "numeric",
        "version": page["version"], "opts": page["opts"], "state": null}});
    assert_eq!(sensors.request(load.clone()).await?, json!("ack"));
    let mut watcher = connect_as(&s, "watcher-secret").await?;
    assert_eq!(
        watcher
            .request(json!({"tiers": {"key": "sensor.t"}}))
            .await?,
        json!({"error": "forbidden", "permission": "read", "key": "sensor.t"})
    );
    assert_eq!(
        watcher.request(load).await?,
        json!({"error": "forbidden", "permission": "define", "key": "sensor.t"})
    );
    Ok(())
}

#[tokio::test]
async fn creating_a_key_by_a_write_and_deleting_one_need_define() -> Result<()> {
    let s = TestServer::start_with(|cfg| {
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![
            token("admin", "admin-secret", [ALL, ALL, ALL, ALL]),
            token(
                "writer",
                "writer-secret",
                [SENSORS, SENSORS, NONE, &["sensor.k*"]],
            ),
        ];
    })
    .await?;
    let mut admin = connect_as(&s, "admin-secret").await?;
    let mut writer = connect_as(&s, "writer-secret").await?;
    let forbidden = |key: &str| json!({"error": "forbidden", "permission": "define", "key": key});
    assert_eq!(
        admin
            .request(json!({"define": {"sensor.up": {"type": "uptime", "max_time": 60}}}))
            .await?,
        json!("ack")
    );
    // The bypass: delete the uptime key, then re-create it as a string by a put.
    assert_eq!(
        writer
            .request(json!({"delete": {"key": "sensor.up"}}))
            .await?,
        forbidden("sensor.up")
    );
    assert_eq!(
        writer
            .request(json!({"put": {"key": "sensor.new", "value": "text"}}))
            .await?,
        forbidden("sensor.new")
    );
    assert_eq!(
        writer
            .request(json!({"increment": {"key": "sensor.count"}}))
            .await?,
        forbidden("sensor.count")
    );
    // Writing to an existing key needs only write; where define is granted, writes create.
    assert_eq!(
        writer
            .request(json!({"put": {"key": "sensor.up", "value": true}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        writer
            .request(json!({"put": {"key": "sensor.k1", "value": 1}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        writer
            .request(json!({"delete": {"key": "sensor.k1"}}))
            .await?,
        json!("ack")
    );
    // Nothing was created or changed by the refused requests.
    let keys = admin.request(json!({"keys": {}})).await?;
    assert_eq!(keys["sensor.up"]["type"], json!("uptime"), "{keys}");
    assert!(
        keys.get("sensor.new").is_none() && keys.get("sensor.count").is_none(),
        "{keys}"
    );
    Ok(())
}

#[tokio::test]
async fn a_wrong_token_beside_a_right_one_is_refused() -> Result<()> {
    let s = server().await?;
    let with_header = |url: String, header: &'static str| -> Result<_> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", header.parse()?);
        Ok(request)
    };
    // A wrong token in the URL and a right one in the header, and the other way round.
    for (url, header) in [
        (format!("{}?token=nope", s.url()), "Bearer admin-secret"),
        (format!("{}?token=admin-secret", s.url()), "Bearer nope"),
        (
            format!("{}?token=sensor-secret", s.url()),
            "Bearer admin-secret",
        ),
    ] {
        match tokio_tungstenite::connect_async(with_header(url.clone(), header)?).await {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
            other => bail!("{url} with {header:?} was not refused: {:?}", other.err()),
        }
    }
    // The scheme is case-insensitive (RFC 9110): BEARER is a bearer token, not no token.
    let mut c = Client::connect_request(with_header(s.url_v2(), "BEARER sensor-secret")?).await?;
    assert_eq!(
        c.request(json!({"get": {"key": "sensor.x"}})).await?,
        json!({"result": null})
    );
    match tokio_tungstenite::connect_async(with_header(s.url(), "BEARER nope")?).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => bail!("a wrong BEARER token was not refused: {:?}", other.err()),
    }
    Ok(())
}

#[tokio::test]
async fn unauthenticated_connections_are_capped_and_timed_out() -> Result<()> {
    let s = TestServer::start_with(|cfg| {
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![token("admin", "admin-secret", [ALL, ALL, ALL, ALL])];
        cfg.max_unauthenticated = 2;
        cfg.auth_timeout = 1;
    })
    .await?;
    let mut first = s.client().await?;
    let _second = s.client().await?;
    assert_eq!(refused_status(&s.url()).await?, 503);
    // Connections with a token do not count.
    let mut admin = connect_as(&s, "admin-secret").await?;
    assert_eq!(admin.request(json!({"ping": 1})).await?, json!({"pong": 1}));
    // One that authenticates frees its place; one that does not is closed after the timeout.
    assert_eq!(
        first
            .request(json!({"auth": {"token": "admin-secret"}}))
            .await?,
        json!("ack")
    );
    let mut third = s.client().await?;
    assert_eq!(
        third.close_frame().await?,
        (1008, "authentication timeout".to_string())
    );
    // The authenticated one stays.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(first.request(json!({"ping": 2})).await?, json!({"pong": 2}));
    Ok(())
}

/// A page of `keys` holds only keys the token may read, so a reader pages through its own
/// keys however many unreadable ones sort before them (a page is not cut down after it was
/// taken, which would answer an empty page while readable keys follow).
#[tokio::test]
async fn keys_pages_hold_only_readable_keys() -> Result<()> {
    let s = server().await?;
    let mut admin = connect_as(&s, "admin-secret").await?;
    for i in 0..20 {
        admin
            .request(json!({"put": {"key": format!("a.{i:02}"), "value": i}}))
            .await?;
    }
    for i in 0..3 {
        admin
            .request(json!({"put": {"key": format!("sensor.{i}"), "value": i}}))
            .await?;
    }
    let mut sensors = connect_as(&s, "sensor-secret").await?;
    let first = sensors.request(json!({"keys": {"limit": 2}})).await?;
    let names: Vec<&String> = first
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(names, ["sensor.0", "sensor.1"], "{first}");
    let rest = sensors
        .request(json!({"keys": {"limit": 2, "after": "sensor.1"}}))
        .await?;
    let names: Vec<&String> = rest
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(names, ["sensor.2"], "{rest}");
    Ok(())
}

#[tokio::test]
async fn an_export_holds_only_readable_keys_page_after_page() -> Result<()> {
    let s = server().await?;
    let mut admin = connect_as(&s, "admin-secret").await?;
    for name in ["a.0", "sensor.0", "sensor.1", "z.0"] {
        admin
            .request(json!({"put": {"key": name, "value": 1}}))
            .await?;
    }
    let mut sensors = connect_as(&s, "sensor-secret").await?;
    let mut args = json!({"limit": 1});
    let mut defined = Vec::new();
    loop {
        let page = sensors.request(json!({ "export": args })).await?;
        for line in page["lines"].as_array().into_iter().flatten() {
            if let Some(key) = line["define"]["key"].as_str() {
                defined.push(key.to_string());
            }
        }
        if page["next"].is_null() {
            break;
        }
        args = json!({"limit": 1, "snapshot": page["snapshot"], "after": page["next"]});
    }
    assert_eq!(defined, ["sensor.0", "sensor.1"]);
    // The snapshot ended with its last page.
    let gone = sensors
        .request(json!({"export": {"snapshot": args["snapshot"], "after": {"key": "sensor.1"}}}))
        .await?;
    assert_eq!(gone, json!({"error": "invalid_query"}), "{gone}");
    Ok(())
}
