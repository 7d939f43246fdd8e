//! The HTTP API on the websocket's listener: every route against a real server, answers
//! compared with the websocket commands' answers for the same question, every error status,
//! CSV, Server-Sent Events (each change once, in order), auth on and off, and `/metrics`
//! read by a Prometheus text-format parser.

use std::time::Duration;

use anyhow::{Context, Result};
use komoku_tests::http::{HttpRequest, HttpResponse};
use komoku_tests::{TestServer, now, num, token};
use serde_json::{Value as Json, json};

const ALL: &[&str] = &["*"];
const NONE: &[&str] = &[];
const ROOM: &[&str] = &["room.*"];

async fn get(s: &TestServer, path: &str) -> Result<HttpResponse> {
    HttpRequest::get(path).send(s.addr()).await
}

fn assert_status(r: &HttpResponse, status: u16, code: &str) -> Result<()> {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json()?["error"], code, "{r:?}");
    Ok(())
}

#[tokio::test]
async fn api_routes_answer_as_the_websocket_commands_do() -> Result<()> {
    let s = TestServer::start().await?;
    let addr = s.addr();
    let mut c = s.client_v2().await?;

    // A bare JSON scalar, as `curl -X PUT --data 21.5` sends it, creates a numeric key.
    let r = HttpRequest::new("PUT", "/api/v1/keys/room.temp")
        .body("21.5")
        .send(addr)
        .await?;
    assert_eq!((r.status, r.json()?), (200, json!({"result": "ok"})));
    assert_eq!(
        c.request(json!({"get": {"key": "room.temp"}})).await?,
        json!({"result": 21.5})
    );
    // The object form with a time.
    // On the hour, so that 5-minute buckets start at `since`.
    let t0 = ((now() - 7200.0) / 3600.0).floor() * 3600.0;
    for i in 0..10 {
        let body = json!({"value": 20 + i, "time": t0 + 60.0 * f64::from(i)}).to_string();
        let r = HttpRequest::new("PUT", "/api/v1/keys/room.hum")
            .body(&body)
            .send(addr)
            .await?;
        assert_eq!(r.status, 200, "{r:?}");
    }
    HttpRequest::new("PUT", "/api/v1/keys/door.open")
        .body("true")
        .send(addr)
        .await?;

    // One key: name, type, value, time, options.
    let one = get(&s, "/api/v1/keys/room.hum").await?.json()?;
    assert_eq!(one["name"], "room.hum");
    assert_eq!(one["type"], "numeric");
    assert_eq!(one["value"], 29);
    assert_eq!(num(&one["time"]), t0 + 540.0);
    assert!(one["options"].is_object());

    // The list, filtered and paged.
    let all = get(&s, "/api/v1/keys").await?.json()?;
    let names: Vec<&str> = all["keys"]
        .as_array()
        .context("keys")?
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["door.open", "room.hum", "room.temp"]);
    assert_eq!(all["next"], Json::Null);
    let room = get(&s, "/api/v1/keys?pattern=room.*").await?.json()?;
    assert_eq!(room["keys"].as_array().map(Vec::len), Some(2));
    let page = get(&s, "/api/v1/keys?limit=2").await?.json()?;
    assert_eq!(page["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next"], "room.hum");
    let page2 = get(&s, "/api/v1/keys?limit=2&after=room.hum")
        .await?
        .json()?;
    assert_eq!(page2["keys"][0]["name"], "room.temp");
    assert_eq!(page2["keys"].as_array().map(Vec::len), Some(1));
    // The same through websocket v2's `keys` (the shared command).
    let ws = c
        .request(json!({"keys": {"pattern": "room.*", "limit": 1, "include": ["value", "time"]}}))
        .await?;
    assert_eq!(ws["result"]["room.hum"]["type"], "numeric");
    assert_eq!(ws["result"]["room.hum"]["value"], 29);
    assert_eq!(num(&ws["result"]["room.hum"]["time"]), t0 + 540.0);
    assert_eq!(ws["result"].as_object().map(|o| o.len()), Some(1));

    // Points and summary equal `fetch` and `query` for the same range.
    let (since, until) = (t0, t0 + 600.0);
    let points = get(
        &s,
        &format!("/api/v1/keys/room.hum/points?since={since}&until={until}"),
    )
    .await?
    .json()?;
    let fetched = c
        .request(json!({"fetch": {"key": "room.hum", "opts": {"since": since, "until": until}}}))
        .await?;
    assert_eq!(points, fetched["result"]);
    assert_eq!(points.as_array().map(Vec::len), Some(10));
    let limited = get(&s, "/api/v1/keys/room.hum/points?limit=3")
        .await?
        .json()?;
    assert_eq!(limited.as_array().map(Vec::len), Some(3));
    let csv = get(
        &s,
        &format!("/api/v1/keys/room.hum/points?since={since}&until={until}&format=csv"),
    )
    .await?;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "time,value");
    assert_eq!(lines[1], format!("{t0},20"));
    assert_eq!(lines.len(), 11);

    let summary = get(
        &s,
        &format!(
            "/api/v1/keys/room.hum/summary?since={since}&until={until}&step=5M&figures=mean,max"
        ),
    )
    .await?
    .json()?;
    let queried = c
        .request(
            json!({"query": {"key": "room.hum", "since": since, "until": until,
                                  "step": "5M", "figures": ["mean", "max"]}}),
        )
        .await?;
    assert_eq!(summary, queried["result"]);
    assert_eq!(summary["buckets"].as_array().map(Vec::len), Some(2));
    let csv = get(
        &s,
        &format!(
            "/api/v1/keys/room.hum/summary?since={since}&until={until}&step=5M&figures=mean,max&format=csv"
        ),
    )
    .await?;
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 3, "{}", csv.body);
    assert!(lines[0].starts_with("start,end,"), "{}", lines[0]);
    assert!(lines[0].contains("mean") && lines[0].contains("max"));
    let typical = get(
        &s,
        &format!(
            "/api/v1/keys/room.hum/summary?since={since}&until={until}&step=1H&group=hour&tz=UTC"
        ),
    )
    .await?
    .json()?;
    let queried = c
        .request(
            json!({"query": {"key": "room.hum", "since": since, "until": until,
                                  "step": "1H", "group": "hour", "tz": "UTC"}}),
        )
        .await?;
    assert_eq!(typical, queried["result"]);

    // increment / decrement, with and without a step.
    let r = HttpRequest::new("POST", "/api/v1/keys/hits/increment")
        .send(addr)
        .await?;
    assert_eq!(r.status, 200, "{r:?}");
    HttpRequest::new("POST", "/api/v1/keys/hits/increment")
        .body("{\"step\": 5}")
        .send(addr)
        .await?;
    HttpRequest::new("POST", "/api/v1/keys/hits/decrement")
        .body("2")
        .send(addr)
        .await?;
    assert_eq!(
        c.request(json!({"get": {"key": "hits"}})).await?,
        json!({"result": 4})
    );
    assert_eq!(
        get(&s, "/api/v1/keys/hits").await?.json()?["type"],
        "counter"
    );

    // Delete, then it is gone.
    let r = HttpRequest::new("DELETE", "/api/v1/keys/hits")
        .send(addr)
        .await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_status(&get(&s, "/api/v1/keys/hits").await?, 404, "unknown_key")?;
    // A key name with a slash, percent-encoded in the path.
    let r = HttpRequest::new("PUT", "/api/v1/keys/a%2Fb")
        .body("1")
        .send(addr)
        .await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(get(&s, "/api/v1/keys/a%2Fb").await?.json()?["name"], "a/b");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn api_errors_have_the_documented_statuses() -> Result<()> {
    let s = TestServer::start_with(|cfg| cfg.max_frame_bytes = 4096).await?;
    let addr = s.addr();
    HttpRequest::new("PUT", "/api/v1/keys/n")
        .body("1")
        .send(addr)
        .await?;

    // 400: bad JSON, a wrong shape, a bad or unknown parameter, a bad format.
    let bad = [
        HttpRequest::new("PUT", "/api/v1/keys/n")
            .body("{nope")
            .send(addr)
            .await?,
        HttpRequest::new("PUT", "/api/v1/keys/n")
            .body("[1]")
            .send(addr)
            .await?,
        get(&s, "/api/v1/keys?limit=zero").await?,
        get(&s, "/api/v1/keys?bogus=1").await?,
        get(&s, "/api/v1/keys/n/points?format=xml").await?,
        get(&s, "/api/v1/keys/n/summary?step=5q").await?,
        get(&s, "/api/v1/keys?limit=1&limit=2").await?,
        get(&s, "/api/v1/events").await?,
    ];
    for r in &bad {
        assert_eq!(r.status, 400, "{r:?}");
        let code = r.json()?["error"].as_str().unwrap_or_default().to_string();
        assert!(code == "invalid_json" || code == "invalid_query", "{r:?}");
        assert!(r.json()?["message"].is_string());
    }
    // 404: unknown key, unknown route.
    assert_status(&get(&s, "/api/v1/keys/missing").await?, 404, "unknown_key")?;
    assert_status(
        &get(&s, "/api/v1/keys/missing/summary").await?,
        404,
        "unknown_key",
    )?;
    assert_status(&get(&s, "/api/v1/nothing").await?, 404, "not_found")?;
    assert_status(&get(&s, "/nothing").await?, 404, "not_found")?;
    // 405: a route without that method.
    let r = HttpRequest::new("POST", "/api/v1/keys/n")
        .send(addr)
        .await?;
    assert_status(&r, 405, "method_not_allowed")?;
    // 413: a body past max_frame_bytes, a limit past the cap.
    let big = "1".repeat(5000);
    let r = HttpRequest::new("PUT", "/api/v1/keys/n")
        .body(&big)
        .send(addr)
        .await?;
    assert_status(&r, 413, "limit_exceeded")?;
    assert_status(
        &get(&s, "/api/v1/keys?limit=100001").await?,
        413,
        "limit_exceeded",
    )?;
    // 422: the key's type refuses the value, with its own code and words.
    let r = HttpRequest::new("PUT", "/api/v1/keys/n")
        .body("\"NaN\"")
        .send(addr)
        .await?;
    assert_status(&r, 422, "invalid_value")?;
    // A failed request changed nothing.
    assert_eq!(get(&s, "/api/v1/keys/n").await?.json()?["value"], 1);
    // The websocket on the same port is untouched by all this.
    let mut c = s.client().await?;
    assert_eq!(c.request(json!({"get": {"key": "n"}})).await?, json!(1));
    s.stop().await?;
    Ok(())
}

async fn auth_server() -> Result<TestServer> {
    TestServer::start_with(|cfg| {
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![
            token("admin", "admin-secret", [ALL, ALL, ALL, ALL]),
            token("room", "room-secret", [ROOM, ROOM, ROOM, ROOM]),
            token("reader", "reader-secret", [ALL, NONE, NONE, NONE]),
        ];
    })
    .await
}

#[tokio::test]
async fn api_auth_takes_a_bearer_token_and_checks_each_permission() -> Result<()> {
    let s = auth_server().await?;
    let addr = s.addr();
    // No token, a wrong one, or one in the URL (never read from an HTTP URL): 401.
    for r in [
        get(&s, "/api/v1/keys").await?,
        HttpRequest::get("/api/v1/keys")
            .token("wrong")
            .send(addr)
            .await?,
        get(&s, "/api/v1/keys?token=admin-secret").await?,
    ] {
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json()?["error"], "unauthorized");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer"))
        );
    }
    let r = HttpRequest::new("PUT", "/api/v1/keys/room.temp")
        .token("admin-secret")
        .body("21")
        .send(addr)
        .await?;
    assert_eq!(r.status, 200, "{r:?}");
    HttpRequest::new("PUT", "/api/v1/keys/cellar.temp")
        .token("admin-secret")
        .body("12")
        .send(addr)
        .await?;
    // 403 names the permission and the key.
    let r = HttpRequest::new("PUT", "/api/v1/keys/room.temp")
        .token("reader-secret")
        .body("22")
        .send(addr)
        .await?;
    assert_status(&r, 403, "forbidden")?;
    assert_eq!(r.json()?["permission"], "write");
    assert_eq!(r.json()?["key"], "room.temp");
    let r = HttpRequest::get("/api/v1/keys/cellar.temp")
        .token("room-secret")
        .send(addr)
        .await?;
    assert_status(&r, 403, "forbidden")?;
    assert_eq!(r.json()?["permission"], "read");
    let r = HttpRequest::get("/api/v1/keys/cellar.temp/points")
        .token("room-secret")
        .send(addr)
        .await?;
    assert_status(&r, 403, "forbidden")?;
    let r = HttpRequest::get("/api/v1/events?keys=cellar.temp")
        .token("room-secret")
        .send(addr)
        .await?;
    assert_status(&r, 403, "forbidden")?;
    // The list holds only what the token may read.
    let listed = HttpRequest::get("/api/v1/keys")
        .token("room-secret")
        .send(addr)
        .await?
        .json()?;
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["keys"][0]["name"], "room.temp");
    let listed = HttpRequest::get("/api/v1/keys")
        .token("reader-secret")
        .send(addr)
        .await?
        .json()?;
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(2));
    // Granted: the room token writes its own keys.
    let r = HttpRequest::new("PUT", "/api/v1/keys/room.temp")
        .token("room-secret")
        .body("23")
        .send(addr)
        .await?;
    assert_eq!(r.status, 200, "{r:?}");
    let one = HttpRequest::get("/api/v1/keys/room.temp")
        .token("room-secret")
        .send(addr)
        .await?
        .json()?;
    assert_eq!(one["value"], 23);
    s.stop().await?;
    Ok(())
}

/// Collects `n` events (failing if one does not come within the wait).
async fn events(stream: &mut komoku_tests::http::EventStream, n: usize) -> Result<Vec<Json>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            stream
                .next(komoku_tests::WAIT)
                .await?
                .with_context(|| format!("only {} of {n} events arrived", out.len()))?,
        );
    }
    Ok(out)
}

#[tokio::test]
async fn events_deliver_each_change_once_in_order() -> Result<()> {
    for auth in [false, true] {
        let s = if auth {
            auth_server().await?
        } else {
            TestServer::start().await?
        };
        let addr = s.addr();
        let token = auth.then_some("admin-secret");
        let mut c = if auth {
            komoku_tests::Client::connect(&format!("{}?token=admin-secret", s.url())).await?
        } else {
            s.client().await?
        };
        c.request(json!({"put": {"key": "room.b", "value": 0}}))
            .await?;
        let mut request = HttpRequest::get("/api/v1/events?keys=room.a,room.b");
        if let Some(t) = token {
            request = request.token(t);
        }
        let mut stream = request.events(addr).await?;
        let mut by_pattern = {
            let mut r = HttpRequest::get("/api/v1/events?pattern=room.*");
            if let Some(t) = token {
                r = r.token(t);
            }
            r.events(addr).await?
        };
        // Subscribed once the stream is open; a websocket client writes.
        for i in 1..=50 {
            let key = if i % 2 == 0 { "room.a" } else { "room.b" };
            c.request(json!({"put": {"key": key, "value": i}})).await?;
        }
        let got = events(&mut stream, 50).await?;
        for (i, push) in got.iter().enumerate() {
            let i = i as i64 + 1;
            let key = if i % 2 == 0 { "room.a" } else { "room.b" };
            assert_eq!(push["pub"]["key"], key, "{push}");
            assert_eq!(push["pub"]["value"], i, "{push}");
        }
        // Once: nothing more arrives.
        assert_eq!(stream.next(Duration::from_millis(300)).await?, None);
        // The pattern covered only the keys existing when the stream opened (room.b).
        let got = events(&mut by_pattern, 25).await?;
        assert!(got.iter().all(|p| p["pub"]["key"] == "room.b"));
        assert_eq!(by_pattern.next(Duration::from_millis(300)).await?, None);
        // The same content as a websocket push.
        let mut sub = if auth {
            komoku_tests::Client::connect(&format!("{}?token=admin-secret", s.url())).await?
        } else {
            s.client().await?
        };
        sub.request(json!({"sub": {"key": "room.a"}})).await?;
        c.request(json!({"put": {"key": "room.a", "value": 99}}))
            .await?;
        let ws_push = sub.push().await?;
        let sse_push = events(&mut stream, 1).await?.remove(0);
        assert_eq!(ws_push, sse_push);
        s.stop().await?;
    }
    Ok(())
}

/// One sample's value by metric name and labels.
fn sample(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    label: Option<(&str, &str)>,
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && label.is_none_or(|(name, value)| s.labels.get(name) == Some(value))
        })
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test]
async fn metrics_are_prometheus_text_a_scraper_reads() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for i in 0..7 {
        c.request(json!({"put": {"key": format!("k{i}"), "value": i}}))
            .await?;
    }
    c.request(json!({"get": {"key": 5}})).await?; // invalid_query
    let r = get(&s, "/metrics").await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.contains("openmetrics-text"))
    );
    let lines = r.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines)?;
    assert_eq!(
        sample(&scrape, "komoku_keys", None),
        Some(7.0),
        "{}",
        r.body
    );
    assert_eq!(
        sample(&scrape, "komoku_requests_total", Some(("command", "put"))),
        Some(7.0)
    );
    assert_eq!(sample(&scrape, "komoku_puts_total", None), Some(7.0));
    assert_eq!(
        sample(
            &scrape,
            "komoku_errors_total",
            Some(("code", "invalid_query"))
        ),
        Some(1.0)
    );
    // This websocket and the scrape's own connection.
    assert!(sample(&scrape, "komoku_connections", None).is_some_and(|n| n >= 1.0));
    assert!(sample(&scrape, "komoku_resident_memory_bytes", None).is_some_and(|n| n > 1e6));
    assert!(sample(&scrape, "komoku_compaction_runs", None).is_some());
    assert_eq!(
        sample(&scrape, "komoku_pushes_dropped_total", None),
        Some(0.0)
    );
    s.stop().await?;
    Ok(())
}

/// This machine's address on its default route, if it has one besides loopback.
fn outside_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?; // no packet is sent
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn metrics_from_another_machine_need_a_token() -> Result<()> {
    let Some(ip) = outside_address() else {
        eprintln!("no address besides loopback: the remote /metrics case cannot be tried here");
        return Ok(());
    };
    let s = TestServer::start_with(|cfg| {
        cfg.listen = std::net::SocketAddr::new([0, 0, 0, 0].into(), 0);
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![token("reader", "reader-secret", [ALL, NONE, NONE, NONE])];
    })
    .await?;
    let remote = std::net::SocketAddr::new(ip, s.addr().port());
    let local = std::net::SocketAddr::new([127, 0, 0, 1].into(), s.addr().port());
    assert_eq!(HttpRequest::get("/metrics").send(local).await?.status, 200);
    let r = HttpRequest::get("/metrics").send(remote).await?;
    assert_status(&r, 401, "unauthorized")?;
    let r = HttpRequest::get("/metrics")
        .token("reader-secret")
        .send(remote)
        .await?;
    assert_eq!(r.status, 200, "{r:?}");
    s.stop().await?;
    Ok(())
}
