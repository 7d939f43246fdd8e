//! `query`, end to end over real websockets: every shape of the History queries issue, for
//! every built-in type, with figures checked against hand-computed answers.
//!
//! Histories are written with explicit past times (some out of order), so every figure is
//! known exactly. 2026-03-28T00:00Z is the base: Warsaw moved to summer time the next night.

use anyhow::Result;
use komoku_tests::{Client, TestServer, num};
use serde_json::{Value as Json, json};

/// 2026-03-28T00:00:00Z, a Saturday.
const BASE: f64 = 1_774_656_000.0;

async fn put_at(c: &mut Client, key: &str, value: Json, time: f64) -> Result<()> {
    let reply = c
        .request(json!({"put": {"key": key, "value": value, "time": time}}))
        .await?;
    anyhow::ensure!(reply == json!("ack"), "put {key} at {time}: {reply}");
    Ok(())
}

async fn query(c: &mut Client, args: Json) -> Result<Json> {
    c.request(json!({ "query": args })).await
}

/// A time as the server renders it: whole seconds without a fraction.
fn ts(t: f64) -> Json {
    komoku::value::number_json(t)
}

fn close(a: &Json, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

#[tokio::test]
async fn numeric_buckets_report_time_weighted_figures_and_coverage() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // Out of order on purpose: the newest point first.
    put_at(&mut c, "t", json!(40), BASE + 90.0).await?;
    put_at(&mut c, "t", json!(10), BASE).await?;
    put_at(&mut c, "t", json!(20), BASE + 30.0).await?;
    let a = query(
        &mut c,
        json!({"key": "t", "since": BASE - 60.0, "until": BASE + 120.0, "step": "1M",
               "figures": ["mean", "min", "max", "count", "integral", "first", "last"]}),
    )
    .await?;
    assert_eq!(a["type"], json!("numeric"));
    assert_eq!(a["resolution"], json!("raw"));
    let b = a["buckets"].as_array().expect("buckets");
    assert_eq!(b.len(), 3);
    // Before the first point nothing is known.
    assert_eq!(b[0]["start"], ts(BASE - 60.0));
    assert_eq!(b[0]["coverage"], json!(0));
    assert_eq!(b[0]["mean"], json!(null));
    assert_eq!(b[0]["count"], json!(0));
    // 10 for 30 s, 20 for 30 s.
    assert_eq!(b[1]["mean"], json!(15));
    assert_eq!(b[1]["integral"], json!(900));
    assert_eq!(b[1]["min"], json!(10));
    assert_eq!(b[1]["max"], json!(20));
    assert_eq!(b[1]["count"], json!(2));
    assert_eq!(b[1]["first"], json!({"time": ts(BASE), "value": 10}));
    assert_eq!(b[1]["last"], json!({"time": ts(BASE + 30.0), "value": 20}));
    assert_eq!(b[1]["coverage"], json!(1));
    // 20 carried in for 30 s, then 40 for 30 s.
    assert_eq!(b[2]["mean"], json!(30));
    assert_eq!(b[2]["max"], json!(40));
    assert_eq!(b[2]["count"], json!(1));
    // The whole window: 2700 over 120 known seconds of 180.
    assert_eq!(a["total"]["integral"], json!(2700));
    assert!(close(&a["total"]["mean"], 22.5), "{}", a["total"]);
    assert!(close(&a["total"]["coverage"], 120.0 / 180.0));
    Ok(())
}

#[tokio::test]
async fn counters_report_increase_and_rate() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"c": {"type": "counter"}}}))
        .await?;
    put_at(&mut c, "c", json!(100), BASE).await?;
    put_at(&mut c, "c", json!(160), BASE + 60.0).await?;
    put_at(&mut c, "c", json!(190), BASE + 90.0).await?;
    let a = query(
        &mut c,
        json!({"key": "c", "since": BASE, "until": BASE + 120.0, "step": 60,
               "figures": ["increase", "rate"]}),
    )
    .await?;
    let b = &a["buckets"];
    // The jump at 60 s belongs to the bucket starting there.
    assert_eq!(b[0]["increase"], json!(0), "{a}");
    assert_eq!(b[1]["increase"], json!(90), "{a}");
    assert_eq!(b[1]["rate"], json!(1.5));
    assert_eq!(a["total"]["increase"], json!(90));
    Ok(())
}

#[tokio::test]
async fn booleans_answer_time_in_state_transitions_runs_and_uptime() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // true 0–100, false 100–130, true 130–200, false from 200 on.
    for (t, v) in [(0.0, true), (100.0, false), (130.0, true), (200.0, false)] {
        put_at(&mut c, "door", json!(v), BASE + t).await?;
    }
    let a = query(
        &mut c,
        json!({"key": "door", "since": BASE, "until": BASE + 300.0, "step": 150}),
    )
    .await?;
    let b = &a["buckets"];
    assert_eq!(b[0]["time_true"], json!(120), "{a}");
    assert_eq!(b[0]["time_false"], json!(30));
    assert!(close(&b[0]["fraction_true"], 0.8));
    assert_eq!(b[0]["falls"], json!(1));
    assert_eq!(b[0]["longest_true"], json!(100));
    assert_eq!(b[1]["time_true"], json!(50));
    assert_eq!(b[1]["longest_false"], json!(100));
    assert_eq!(b[1]["falls"], json!(1));
    // Uptime over the whole window, as one figure.
    let total = query(
        &mut c,
        json!({"key": "door", "since": BASE, "until": BASE + 300.0, "figures": ["fraction_true", "rises", "falls"]}),
    )
    .await?;
    assert!(
        close(&total["total"]["fraction_true"], 170.0 / 300.0),
        "{total}"
    );
    // The first `true` follows no known value: it is no rise.
    assert_eq!(total["total"]["rises"], json!(1));
    assert_eq!(total["total"]["falls"], json!(2));
    assert_eq!(total["buckets"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn calendar_days_follow_the_time_zone_across_dst() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // On from the start of the 28th (local) until the end of the 30th.
    let local_midnight_28 = BASE - 3600.0; // 00:00 CET is 23:00Z the day before
    put_at(&mut c, "light", json!(true), local_midnight_28).await?;
    put_at(&mut c, "light", json!(false), BASE + 3.0 * 86_400.0).await?;
    let a = query(
        &mut c,
        json!({"key": "light", "since": BASE, "until": BASE + 2.5 * 86_400.0, "step": "1d",
               "tz": "Europe/Warsaw", "figures": ["time_true"]}),
    )
    .await?;
    let b = a["buckets"].as_array().expect("buckets");
    assert_eq!(a["tz"], json!("Europe/Warsaw"));
    assert_eq!(b.len(), 3, "{a}");
    assert_eq!(b[0]["start"], ts(local_midnight_28));
    // The 29th has 23 hours in Warsaw.
    assert_eq!(b[1]["time_true"], json!(23 * 3600), "{a}");
    assert_eq!(num(&b[1]["end"]) - num(&b[1]["start"]), 23.0 * 3600.0);
    assert_eq!(b[0]["time_true"], json!(24 * 3600));
    // The same range in UTC: plain 24-hour days from midnight UTC.
    let utc = query(
        &mut c,
        json!({"key": "light", "since": BASE, "until": BASE + 2.5 * 86_400.0, "step": "1d",
               "figures": ["time_true"]}),
    )
    .await?;
    assert_eq!(utc["buckets"][0]["start"], ts(BASE));
    assert_eq!(utc["buckets"][1]["time_true"], json!(86_400));
    Ok(())
}

#[tokio::test]
async fn strings_report_time_per_state_and_logs_count_entries() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for (t, v) in [
        (0.0, "armed"),
        (40.0, "disabled"),
        (50.0, "armed"),
        (90.0, "waiting"),
    ] {
        put_at(&mut c, "alarm", json!(v), BASE + t).await?;
    }
    let a = query(
        &mut c,
        json!({"key": "alarm", "since": BASE, "until": BASE + 100.0,
               "figures": ["time_per_state", "transitions"]}),
    )
    .await?;
    assert_eq!(
        a["total"]["time_per_state"],
        json!({"armed": 80, "disabled": 10, "waiting": 10}),
        "{a}"
    );
    assert_eq!(a["total"]["transitions"], json!(3));

    c.request(json!({"define": {"log": {"type": "string", "mode": "log"}}}))
        .await?;
    for (t, v) in [(1.0, "boot"), (2.0, "boot"), (70.0, "disk full")] {
        put_at(&mut c, "log", json!(v), BASE + t).await?;
    }
    let a = query(
        &mut c,
        json!({"key": "log", "since": BASE, "until": BASE + 120.0, "step": 60,
               "figures": ["count", "first", "last"]}),
    )
    .await?;
    let b = &a["buckets"];
    assert_eq!(b[0]["count"], json!(2), "{a}");
    assert_eq!(
        b[0]["first"],
        json!({"time": ts(BASE + 1.0), "value": "boot"})
    );
    assert_eq!(
        b[1]["last"],
        json!({"time": ts(BASE + 70.0), "value": "disk full"})
    );
    Ok(())
}

#[tokio::test]
async fn value_at_a_time_last_points_and_spans() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for (t, v) in [
        (0.0, "home"),
        (100.0, "away"),
        (300.0, "home"),
        (400.0, "away"),
    ] {
        put_at(&mut c, "where", json!(v), BASE + t).await?;
    }
    assert_eq!(
        query(&mut c, json!({"key": "where", "at": BASE - 1.0})).await?,
        json!(null),
        "before the first point the value is unknown"
    );
    assert_eq!(
        query(&mut c, json!({"key": "where", "at": BASE + 100.0})).await?,
        json!({"time": ts(BASE + 100.0), "value": "away"}),
        "a point holds from its own time"
    );
    assert_eq!(
        query(&mut c, json!({"key": "where", "at": BASE + 299.5})).await?,
        json!({"time": ts(BASE + 100.0), "value": "away"})
    );
    assert_eq!(
        query(&mut c, json!({"key": "where", "last": 2})).await?,
        json!([[ts(BASE + 300.0), "home"], [ts(BASE + 400.0), "away"]])
    );
    assert_eq!(
        query(
            &mut c,
            json!({"key": "where", "spans": "home", "since": BASE + 50.0, "until": BASE + 350.0})
        )
        .await?,
        json!([[ts(BASE + 50.0), 50], [ts(BASE + 300.0), 50]]),
        "spans are clipped to the window"
    );
    assert_eq!(
        query(
            &mut c,
            json!({"key": "where", "spans": "away", "since": BASE})
        )
        .await?,
        json!([[ts(BASE + 100.0), 200], [ts(BASE + 400.0), null]]),
        "the period still going on is open"
    );
    Ok(())
}

#[tokio::test]
async fn buckets_average_by_hour_of_day_and_by_weekday() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // Two weeks from Monday 2026-11-16: home (true) from 18:00 to 20:00 UTC on weekdays,
    // and from 10:00 to 20:00 at weekends.
    let monday = 1_795_392_000.0 - 7.0 * 86_400.0;
    let mut t = monday;
    for day in 0..14 {
        let weekend = day % 7 >= 5;
        let from = if weekend { 10.0 } else { 18.0 };
        put_at(&mut c, "home", json!(true), t + from * 3600.0).await?;
        put_at(&mut c, "home", json!(false), t + 20.0 * 3600.0).await?;
        t += 86_400.0;
    }
    let weekdays = query(
        &mut c,
        json!({"key": "home", "since": monday, "until": monday + 14.0 * 86_400.0, "step": "1H",
               "group": "hour", "weekdays": [1, 2, 3, 4, 5], "figures": ["fraction_true"]}),
    )
    .await?;
    let groups = weekdays["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 24, "{weekdays}");
    let at = |h: usize| &groups[h];
    assert_eq!(at(18)["hour"], json!(18));
    assert_eq!(at(18)["buckets"], json!(10), "ten weekdays");
    assert_eq!(at(18)["fraction_true"], json!(1));
    assert_eq!(at(12)["fraction_true"], json!(0));
    // Hours before the first point are unknown and do not drag the mean down.
    assert_eq!(at(3)["fraction_true"], json!(0));

    let by_day = query(
        &mut c,
        json!({"key": "home", "since": monday, "until": monday + 14.0 * 86_400.0, "step": "1d",
               "group": "weekday", "figures": ["time_true"]}),
    )
    .await?;
    let groups = by_day["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 7);
    assert_eq!(groups[0]["weekday"], json!(1));
    assert_eq!(groups[0]["time_true"], json!(2 * 3600));
    assert_eq!(groups[6]["time_true"], json!(10 * 3600));
    Ok(())
}

#[tokio::test]
async fn bad_and_oversized_queries_get_clear_errors() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    put_at(&mut c, "t", json!(1), BASE).await?;
    for (args, code) in [
        (json!({"key": "nope"}), "unknown_key"),
        (json!({"key": "t", "tz": "Mars/Olympus"}), "invalid_query"),
        (json!({"key": "t", "step": "1q"}), "invalid_query"),
        (json!({"key": "t", "at": BASE, "last": 3}), "invalid_query"),
        (json!({"key": "t", "weekdays": [1]}), "invalid_query"),
        (json!({"key": "t", "frobnicate": 1}), "invalid_query"),
        (
            json!({"key": "t", "figures": ["time_true"]}),
            "unknown_figure",
        ),
        (
            json!({"key": "t", "since": 0, "step": "1S"}),
            "limit_exceeded",
        ),
        (json!({"key": "t", "last": 1_000_000}), "limit_exceeded"),
    ] {
        assert_eq!(
            query(&mut c, args.clone()).await?,
            json!({"error": code}),
            "{args}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn v2_wraps_query_answers_and_echoes_the_query_id() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client_v2().await?;
    c.request(json!({"put": {"key": "t", "value": 5, "time": BASE}}))
        .await?;
    let reply = c
        .request(json!({"query": {"key": "t", "at": BASE + 1.0}, "query_id": 7}))
        .await?;
    assert_eq!(
        reply,
        json!({"result": {"time": ts(BASE), "value": 5}, "query_id": 7})
    );
    Ok(())
}

#[tokio::test]
async fn fetch_limit_is_capped_like_every_other_answer() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for (k, v) in [1, 2, 3].into_iter().enumerate() {
        put_at(&mut c, "t", json!(v), BASE + k as f64).await?;
    }
    // A billion points asked (25 MB and 127 MB of server memory per request before):
    // refused like every answer past 10 000 rows.
    let huge = json!({"fetch": {"key": "t", "opts": {"limit": 1_000_000_000u64}}});
    assert_eq!(c.request(huge).await?, json!({"error": "limit_exceeded"}));
    let over = json!({"fetch": {"key": "t", "opts": {"limit": 10_001}}});
    assert_eq!(c.request(over).await?, json!({"error": "limit_exceeded"}));
    // Up to the cap the v1 shapes are as before: the newest `limit`, oldest first.
    let most = json!({"fetch": {"key": "t", "opts": {"limit": 10_000}}});
    assert_eq!(
        c.request(most).await?,
        json!([[ts(BASE), 1], [ts(BASE + 1.0), 2], [ts(BASE + 2.0), 3]])
    );
    let two = json!({"fetch": {"key": "t", "opts": {"limit": 2}}});
    assert_eq!(
        c.request(two).await?,
        json!([[ts(BASE + 1.0), 2], [ts(BASE + 2.0), 3]])
    );
    Ok(())
}

#[tokio::test]
async fn figures_beyond_a_double_are_null_in_query_and_stepped_fetch() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // The time-weighted mean of values near the largest double: their integral (value ×
    // seconds) overflows, so the mean is not a number either path can give.
    put_at(&mut c, "huge", json!(1.7e308), BASE).await?;
    put_at(&mut c, "huge", json!(1e300), BASE + 30.0).await?;
    put_at(&mut c, "huge", json!(1.0), BASE + 120.0).await?;
    let q = query(
        &mut c,
        json!({"key": "huge", "since": BASE, "until": BASE + 120.0, "step": 60,
               "figures": ["mean", "max", "integral"]}),
    )
    .await?;
    let first = &q["buckets"][0];
    assert_eq!(first["mean"], Json::Null, "{q}");
    assert_eq!(first["integral"], Json::Null, "{q}");
    assert_eq!(first["max"], json!(1.7e308), "{q}");
    assert_eq!(first["coverage"], json!(1), "{q}");
    // The stepped fetch keeps the bucket (it has data) with the same null, rather than
    // leaving it out like a bucket without data.
    let fetched = c
        .request(json!({"fetch": {"key": "huge", "opts": {"since": BASE, "until": BASE + 120.0, "step": "1M"}}}))
        .await?;
    assert_eq!(fetched[0], json!([ts(BASE), null]), "{fetched}");
    assert_eq!(fetched[1][0], ts(BASE + 60.0), "{fetched}");
    assert!(
        (num(&fetched[1][1]) / 1e300 - 1.0).abs() < 1e-12,
        "{fetched}"
    );
    assert_eq!(fetched.as_array().map(Vec::len), Some(2), "{fetched}");
    let before = c
        .request(json!({"fetch": {"key": "huge", "opts": {"since": BASE - 120.0, "until": BASE, "step": "1M"}}}))
        .await?;
    assert_eq!(before, json!([]), "no data before the first point");

    // Averaging buckets by hour of day scales before summing: two maxima of 1.7e308
    // average to 1.7e308, not to an overflow.
    put_at(&mut c, "big", json!(1.7e308), BASE).await?;
    let g = query(
        &mut c,
        json!({"key": "big", "since": BASE, "until": BASE + 2.0 * 86_400.0, "step": "1d",
               "group": "hour", "figures": ["max"]}),
    )
    .await?;
    assert_eq!(g["groups"][0]["buckets"], json!(2), "{g}");
    assert_eq!(g["groups"][0]["max"], json!(1.7e308), "{g}");
    Ok(())
}

/// Sealed chunks carry summaries made under the key's options at the time; after a change
/// of options those are not used (a meter's `min_drop` decides what counts as a reset).
#[tokio::test]
async fn chunk_summaries_made_under_old_options_are_not_used() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let defined = c
        .request(
            json!({"define": {"a": {"type": "meter", "min_drop": 0.6}, "b": {"type": "meter"}}}),
        )
        .await?;
    assert_eq!(defined, json!("ack"), "{defined}");
    // 6 000 points (a head seals at 4 096): a rise of 1 then a drop of 0.5, over and over.
    let n = 6_000;
    for key in ["a", "b"] {
        for from in (0..n).step_by(1_000) {
            let frame: Vec<Json> = (from..from + 1_000)
                .map(|i| {
                    let v = (i / 2 + 1) as f64 - (i % 2) as f64 * 0.5;
                    json!({"put": {"key": key, "value": v, "time": BASE + i as f64 * 10.0}})
                })
                .collect();
            let reply = c.request(Json::Array(frame)).await?;
            anyhow::ensure!(!reply.to_string().contains("error"), "{reply}");
        }
    }
    let ask = |key: &str| {
        json!({"key": key, "since": BASE - 100.0, "until": BASE + n as f64 * 10.0 + 100.0,
               "figures": ["increase", "resets", "count"]})
    };
    let a = query(&mut c, ask("a")).await?;
    let before = query(&mut c, ask("b")).await?;
    assert_eq!(a["total"]["count"], json!(n));
    assert_ne!(
        a["total"]["resets"], before["total"]["resets"],
        "min_drop decides what a reset is: {a} / {before}"
    );
    let redefined = c
        .request(json!({"define": {"b": {"type": "meter", "min_drop": 0.6}}}))
        .await?;
    assert_eq!(redefined, json!("ack"), "{redefined}");
    let after = query(&mut c, ask("b")).await?;
    for figure in ["increase", "resets", "count"] {
        assert_eq!(
            after["total"][figure], a["total"][figure],
            "{figure} of b under its new options: {after} / {a}"
        );
    }
    Ok(())
}
