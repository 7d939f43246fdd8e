//! The times a write may carry. A put with milliseconds sent as seconds used to land in the
//! year 58 900 and hold every later put of the key behind it, invisible to `fetch`; one far
//! in the past made compaction walk every year since. Both are refused now, on every path
//! that takes a time, and a put without a time stays visible.

use anyhow::{Result, ensure};
use komoku_tests::{TestServer, now, num};
use serde_json::{Value as Json, json};

const DAY: f64 = 86_400.0;

fn put(key: &str, value: Json, time: f64) -> Json {
    json!({"put": {"key": key, "value": value, "time": time}})
}

#[tokio::test]
async fn puts_outside_the_time_window_are_refused_with_invalid_time() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let t = now();
    for bad in [t * 1000.0, -1e18, -1.0, t + 2.0 * DAY] {
        let reply = c.request(put("victim", json!(1), bad)).await?;
        assert_eq!(reply, json!({"error": "invalid_time"}), "time {bad}");
    }
    // In an array each put is judged alone; v2 says the same, with its query_id.
    let replies = c
        .request(
            json!([put("victim", json!(1), t * 1000.0), {"put": {"key": "victim", "value": 2}}]),
        )
        .await?;
    assert_eq!(replies, json!([{"error": "invalid_time"}, "ack"]));
    let mut v2 = s.client_v2().await?;
    let mut request = put("victim", json!(3), t * 1000.0);
    request["query_id"] = json!("q");
    assert_eq!(
        v2.request(request).await?,
        json!({"error": "invalid_time", "query_id": "q"})
    );

    // Nothing was stored ahead: a put without a time is at now, and `fetch` (until now)
    // shows it.
    let reply = c
        .request(json!({"put": {"key": "victim", "value": 4}}))
        .await?;
    assert_eq!(reply, json!("ack"));
    let fetched = c.request(json!({"fetch": {"key": "victim"}})).await?;
    let rows = fetched.as_array().cloned().unwrap_or_default();
    ensure!(rows.len() == 2, "{fetched}");
    assert_eq!(rows[1][1], json!(4), "{fetched}");
    ensure!(num(&rows[1][0]) <= now(), "{fetched}");
    assert_eq!(
        c.request(json!({"get": {"key": "victim"}})).await?,
        json!(4)
    );

    // The window's edges are inside it: the epoch, and a little less than a day ahead.
    assert_eq!(c.request(put("edge", json!(1), 0.0)).await?, json!("ack"));
    assert_eq!(
        c.request(put("edge", json!(2), now() + DAY - 60.0)).await?,
        json!("ack")
    );
    Ok(())
}

#[tokio::test]
async fn a_put_without_time_after_a_point_ahead_of_the_clock_follows_that_point() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let ahead = (now() + 3600.0).floor();
    assert_eq!(c.request(put("k", json!(1), ahead)).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"put": {"key": "k", "value": 2}})).await?,
        json!("ack")
    );
    // Stored just after the newest point, so `get`, `last` and pushes follow write order;
    // at most the window (a day) ahead, and `fetch` with a later `until` sees it now.
    assert_eq!(c.request(json!({"get": {"key": "k"}})).await?, json!(2));
    let last = c.request(json!({"last": {"key": "k"}})).await?;
    ensure!(num(&last["time"]) > ahead, "{last}");
    let fetched = c
        .request(json!({"fetch": {"key": "k", "opts": {"until": ahead + 10.0}}}))
        .await?;
    assert_eq!(
        fetched[0],
        json!([komoku::value::number_json(ahead), 1]),
        "{fetched}"
    );
    assert_eq!(fetched[1][1], json!(2), "{fetched}");

    // An increment counts from that newest point, not from an older one.
    assert_eq!(c.request(put("c", json!(5), ahead)).await?, json!("ack"));
    let mut v2 = s.client_v2().await?;
    assert_eq!(
        v2.request(json!({"increment": {"key": "c"}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(c.request(json!({"get": {"key": "c"}})).await?, json!(6));
    Ok(())
}

#[tokio::test]
async fn the_time_window_is_configurable() -> Result<()> {
    let base = 1_774_656_000.0; // 2026-03-28
    let s = TestServer::start_with(|cfg| {
        cfg.earliest_time = base;
        cfg.max_time_ahead = 60.0;
    })
    .await?;
    let mut c = s.client().await?;
    for bad in [base - 1.0, now() + 120.0] {
        assert_eq!(
            c.request(put("k", json!(1), bad)).await?,
            json!({"error": "invalid_time"}),
            "time {bad}"
        );
    }
    assert_eq!(c.request(put("k", json!(1), base)).await?, json!("ack"));
    assert_eq!(
        c.request(put("k", json!(2), now() + 30.0)).await?,
        json!("ack")
    );
    Ok(())
}
