//! v1 `fetch` is answered by the query engine: over compacted history it refuses where
//! `query` refuses (`compacted`), answers where `query` answers, and `single: "previous"`
//! reads a bounded number of points.

use anyhow::{Result, ensure};
use komoku_tests::{Client, TestServer, now};
use serde_json::{Value as Json, json};

const DAY: f64 = 86_400.0;

async fn put_all(c: &mut Client, puts: Vec<Json>) -> Result<()> {
    for frame in puts.chunks(1000) {
        let replies = c.request(Json::Array(frame.to_vec())).await?;
        let replies = replies.as_array().cloned().unwrap_or_default();
        ensure!(replies.len() == frame.len());
        for r in replies {
            ensure!(r == json!("ack"), "put refused: {r}");
        }
    }
    Ok(())
}

fn put(key: &str, value: Json, time: f64) -> Json {
    json!({"put": {"key": key, "value": value, "time": time}})
}

async fn fetch(c: &mut Client, key: &str, opts: Json) -> Result<Json> {
    c.request(json!({"fetch": {"key": key, "opts": opts}}))
        .await
}

#[tokio::test]
async fn fetch_over_compacted_time_refuses_like_query_and_answers_elsewhere() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let r = c
        .request(json!({"retention": {"key": "*", "raw": "1d", "tiers": [["1H", null]]}}))
        .await?;
    ensure!(r == json!("ack"), "{r}");
    // Three days of a point every 10 minutes: two of them get compacted. `p` holds 1 first,
    // then 2 from two and a half days ago on.
    let t0 = ((now() - 3.0 * DAY) / 600.0).floor() * 600.0;
    let mut puts = Vec::new();
    let mut t = t0;
    while t < now() - 60.0 {
        puts.push(put("n", json!((t / 600.0) % 7.0), t));
        let p = if t < t0 + 0.5 * DAY { 1 } else { 2 };
        puts.push(put("p", json!(p), t));
        t += 600.0;
    }
    put_all(&mut c, puts).await?;
    let r = c.request(json!({"compact": {}})).await?;
    ensure!(r.get("error").is_none(), "{r}");

    // Every raw point: some are gone, so it says so, as `query` does for `last`.
    let compacted = json!({"error": "compacted"});
    assert_eq!(fetch(&mut c, "n", json!({})).await?, compacted);
    assert_eq!(
        c.request(json!({"query": {"key": "n", "last": 1000}}))
            .await?,
        compacted
    );
    assert_eq!(
        fetch(&mut c, "n", json!({"since": t0, "until": t0 + DAY})).await?,
        compacted
    );
    // A window inside the raw period, or the newest `limit` points, are all there.
    let since = now() - 7200.0;
    let recent = fetch(&mut c, "n", json!({"since": since})).await?;
    let last = c.request(json!({"query": {"key": "n", "last": 3}})).await?;
    let rows = recent.as_array().cloned().unwrap_or_default();
    ensure!((11..=13).contains(&rows.len()), "{recent}");
    assert_eq!(Json::Array(rows[rows.len() - 3..].to_vec()), last);
    assert_eq!(fetch(&mut c, "n", json!({"limit": 3})).await?, last);
    // With a step, summaries answer for compacted time.
    let stepped = fetch(&mut c, "n", json!({"since": t0, "step": "1d"})).await?;
    let days = stepped.as_array().map_or(0, Vec::len);
    ensure!((3..=4).contains(&days), "{stepped}");
    // Timespans reaching into compacted time refuse like `spans`.
    let b = fetch(
        &mut c,
        "n",
        json!({"as": "timespans", "value": 1, "since": t0}),
    )
    .await?;
    assert_eq!(b, compacted);

    // `p`'s other value is only in compacted history: the previous point is gone.
    assert_eq!(
        fetch(&mut c, "p", json!({"single": "previous"})).await?,
        compacted
    );
    assert_eq!(
        fetch(&mut c, "p", json!({"single": "last"})).await?[1],
        json!(2)
    );
    Ok(())
}

#[tokio::test]
async fn previous_reads_at_most_ten_thousand_points() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let t0 = (now() - DAY).floor();
    for (key, repeats) in [("near", 9_999), ("far", 10_000)] {
        let mut puts = vec![put(key, json!(1), t0)];
        puts.extend((1..=repeats).map(|i| put(key, json!(2), t0 + f64::from(i))));
        put_all(&mut c, puts).await?;
    }
    assert_eq!(
        fetch(&mut c, "near", json!({"single": "previous"})).await?,
        json!([t0 as i64, 1])
    );
    assert_eq!(
        fetch(&mut c, "far", json!({"single": "previous"})).await?,
        json!({"error": "limit_exceeded"})
    );
    Ok(())
}
