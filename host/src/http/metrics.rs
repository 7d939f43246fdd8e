//! `GET /metrics`: the server's counters in the Prometheus text format (OpenMetrics), for a
//! scraper. Read from the same sources `stats` answers from, at each scrape.
//!
//! Who may read it: a peer on this machine (loopback) always; another peer when auth is
//! off, or with a valid token (`Authorization: Bearer`, any permissions) when auth is on.

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value as Json;

use super::api::error_response;
use super::{Body, Conn, full};
use crate::auth::Access;
use crate::error::Error;

use crate::stats::Labels;

/// Answers a scrape, or 401 for a remote peer without a token (auth on).
pub fn serve(conn: &Conn, req: &Request<Incoming>) -> Response<Body> {
    if !conn.peer.ip().is_loopback() {
        let live = conn.control.live().borrow().clone();
        match super::bearer_access(&live, req) {
            Ok(Access::Open | Access::Token(_)) => {}
            Ok(Access::Anonymous) => {
                return error_response(&Error::Unauthorized(
                    "/metrics from another machine needs a token".into(),
                ));
            }
            Err(e) => return error_response(&e),
        }
    }
    match render(conn) {
        Ok(text) => {
            let mut response = Response::new(full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(e) => super::text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// The whole exposition, built afresh from the server's state.
fn render(conn: &Conn) -> Result<String, std::fmt::Error> {
    let db = &conn.db;
    let stats = db.stats();
    let mut registry = Registry::with_prefix("komoku");

    let (open, unauthenticated) = conn.control.open_connections();
    gauge(
        &mut registry,
        "connections",
        "Open connections (websocket and HTTP), all listeners",
        open as f64,
    );
    gauge(
        &mut registry,
        "unauthenticated_connections",
        "Open websocket connections without a token yet",
        unauthenticated as f64,
    );

    let ops = stats.ops();
    let requests = Family::<Labels, Counter>::default();
    for (command, n) in &ops {
        requests
            .get_or_create(&vec![("command".into(), (*command).to_string())])
            .inc_by(*n);
    }
    registry.register("requests", "Requests run, by command", requests);

    let errors = Family::<Labels, Counter>::default();
    for (code, n) in stats.errors() {
        errors.get_or_create(&vec![("code".into(), code)]).inc_by(n);
    }
    registry.register("errors", "Failed requests, by error code", errors);

    counter(
        &mut registry,
        "puts",
        "Puts accepted and applied (rate() gives puts per second)",
        ops.get("put").copied().unwrap_or(0),
    );
    gauge(&mut registry, "keys", "Keys", db.key_count() as f64);
    gauge(
        &mut registry,
        "data_points",
        "Stored points (approximate)",
        db.store().approximate_points() as f64,
    );
    gauge(
        &mut registry,
        "disk_bytes",
        "Bytes of the data directory on disk",
        db.store().disk_space().unwrap_or(0) as f64,
    );
    gauge(
        &mut registry,
        "subscriptions",
        "Subscriptions (connection, key)",
        db.pubsub().count() as f64,
    );
    counter(
        &mut registry,
        "pushes_sent",
        "Pushes queued to subscribers",
        db.pubsub().pushes_sent(),
    );
    counter(
        &mut registry,
        "pushes_dropped",
        "Pushes dropped because a subscriber's queue was full (it is closed as too slow)",
        db.pubsub().pushes_dropped(),
    );
    gauge(
        &mut registry,
        "uptime_seconds",
        "Seconds since the server started",
        stats.uptime_secs() as f64,
    );
    if let Some(rss) = resident_bytes() {
        gauge(
            &mut registry,
            "resident_memory_bytes",
            "Resident memory of the server process",
            rss as f64,
        );
    }
    // Compaction progress: every number `stats` reports under `compaction`.
    if let Json::Object(fields) = db.compaction_stats() {
        for (name, value) in fields {
            if let Some(v) = value.as_f64() {
                let help = format!("Compaction: {name} (as in stats.compaction)");
                gauge(&mut registry, &format!("compaction_{name}"), &help, v);
            }
        }
    }
    registry.register(
        "writer_group_writes",
        "Writes per group commit (every server of this process)",
        crate::stats::WRITER_GROUP_WRITES.clone(),
    );
    registry.register(
        "writer_commit_seconds",
        "Seconds per group commit, fsync included with durability sync (every server of this process)",
        crate::stats::WRITER_COMMIT_SECONDS.clone(),
    );
    registry.register(
        "plugin_call_seconds",
        "Seconds per plugin call, by key type (every server of this process)",
        crate::stats::PLUGIN_CALLS.clone(),
    );
    for (name, section) in stats.sections() {
        if name == "mqtt" {
            mqtt(&mut registry, &section);
        }
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The MQTT bridges' counters, from the `mqtt` section `stats` shows (one entry per
/// `[[mqtt]]` section, each with its ingest mappings).
fn mqtt(registry: &mut Registry, section: &Json) {
    let connected = Family::<Labels, Gauge>::default();
    let published = Family::<Labels, Counter>::default();
    let messages = Family::<Labels, Counter>::default();
    let points = Family::<Labels, Counter>::default();
    let duplicates = Family::<Labels, Counter>::default();
    let bad = Family::<Labels, Counter>::default();
    let number = |v: &Json, field: &str| v.get(field).and_then(Json::as_u64).unwrap_or(0);
    for bridge in section.as_array().into_iter().flatten() {
        let client = bridge
            .get("client_id")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        let labels = vec![("client_id".to_string(), client.clone())];
        let up = bridge.get("connected").and_then(Json::as_bool) == Some(true);
        connected.get_or_create(&labels).set(i64::from(up));
        published
            .get_or_create(&labels)
            .inc_by(number(bridge, "published"));
        for mapping in bridge
            .get("ingest")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let topic = mapping
                .get("topic")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string();
            let labels = vec![
                ("client_id".to_string(), client.clone()),
                ("topic".to_string(), topic),
            ];
            messages
                .get_or_create(&labels)
                .inc_by(number(mapping, "messages"));
            points
                .get_or_create(&labels)
                .inc_by(number(mapping, "points"));
            duplicates
                .get_or_create(&labels)
                .inc_by(number(mapping, "duplicates"));
            if let Some(Json::Object(kinds)) = mapping.get("bad") {
                for (kind, n) in kinds {
                    let mut labels = labels.clone();
                    labels.push(("kind".to_string(), kind.clone()));
                    bad.get_or_create(&labels).inc_by(n.as_u64().unwrap_or(0));
                }
            }
        }
    }
    registry.register(
        "mqtt_connected",
        "Whether the MQTT bridge is connected and subscribed (1) or not (0)",
        connected,
    );
    registry.register(
        "mqtt_published",
        "Key changes published to the broker",
        published,
    );
    registry.register(
        "mqtt_messages",
        "Messages received, by ingest mapping",
        messages,
    );
    registry.register(
        "mqtt_points",
        "Points written from messages, by ingest mapping",
        points,
    );
    registry.register(
        "mqtt_duplicates",
        "Redelivered points already stored (not stored again), by ingest mapping",
        duplicates,
    );
    registry.register(
        "mqtt_bad_payloads",
        "Messages refused, by ingest mapping and kind (not_text, not_json, missing_field, bad_time, refused)",
        bad,
    );
}

/// The process's resident set size, from `/proc/self/statm` (Linux; none elsewhere).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
