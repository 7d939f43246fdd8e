//! The `decimal` and `meter` types end to end, as built-in plugins made with the public SDK:
//! exact sums and increments, each rounding mode, resets and wraps of energy meters, and
//! figures that survive compaction (equal to the raw computation at the tier's step).

use anyhow::{Result, ensure};
use komoku_tests::{Client, TestServer, now, num};
use serde_json::{Value as Json, json};

const DAY: f64 = 86_400.0;

async fn ack(c: &mut Client, request: Json) -> Result<()> {
    let reply = c.request(request.clone()).await?;
    ensure!(reply == json!("ack"), "{request}: {reply}");
    Ok(())
}

/// Sends `requests` in frames of 1 000 and checks every reply is `"ack"`.
async fn ack_all(c: &mut Client, requests: Vec<Json>) -> Result<()> {
    for frame in requests.chunks(1000) {
        let replies = c.request(Json::Array(frame.to_vec())).await?;
        ensure!(
            replies
                .as_array()
                .is_some_and(|r| r.len() == frame.len() && r.iter().all(|a| *a == json!("ack"))),
            "refused: {replies}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn decimal_increments_add_up_exactly_over_a_hundred_thousand_operations() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    ack(&mut c, json!({"define": {"cash": {"type": "decimal"}}})).await?;
    let increments = (0..100_000)
        .map(|_| json!({"increment": {"key": "cash", "step": 0.1}}))
        .collect();
    ack_all(&mut c, increments).await?;
    assert_eq!(
        c.request(json!({"get": {"key": "cash"}})).await?,
        json!(10000)
    );
    // 0.1 + 0.2 is 0.3, not 0.30000000000000004.
    ack(&mut c, json!({"put": {"key": "cash", "value": 0.1}})).await?;
    ack(&mut c, json!({"increment": {"key": "cash", "step": 0.2}})).await?;
    assert_eq!(
        c.request(json!({"get": {"key": "cash"}})).await?,
        json!(0.3)
    );
    // As text, for clients that must not read a float.
    ack(
        &mut c,
        json!({"define": {"price": {"type": "decimal", "scale": 3, "render": "string"}}}),
    )
    .await?;
    ack(&mut c, json!({"put": {"key": "price", "value": "12.5"}})).await?;
    assert_eq!(
        c.request(json!({"get": {"key": "price"}})).await?,
        json!("12.500")
    );
    Ok(())
}

#[tokio::test]
async fn decimal_rounding_modes_and_bounds() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client_v2().await?;
    let defs = json!({"define": {
        "refuse": {"type": "decimal"},
        "even": {"type": "decimal", "rounding": "half_even"},
        "up": {"type": "decimal", "rounding": "half_up"},
        "pct": {"type": "decimal", "scale": 1, "min": 0, "max": "100"},
    }});
    assert_eq!(c.request(defs).await?, json!({"result": "ok"}));
    let put = |key: &str, value: Json| json!({"put": {"key": key, "value": value}});
    let refused = c.request(put("refuse", json!("2.345"))).await?;
    assert_eq!(refused["error"], json!("invalid_value"), "{refused}");
    for (key, value, want) in [
        ("even", "2.345", 2.34),
        ("even", "2.355", 2.36),
        ("up", "2.345", 2.35),
        ("up", "-2.345", -2.35),
    ] {
        assert_eq!(
            c.request(put(key, json!(value))).await?,
            json!({"result": "ok"})
        );
        assert_eq!(
            c.request(json!({"get": {"key": key}})).await?,
            json!({"result": want}),
            "{key} {value}"
        );
    }
    assert_eq!(
        c.request(put("pct", json!(100))).await?,
        json!({"result": "ok"})
    );
    for outside in [json!(100.1), json!(-0.1), json!("abc"), json!(true)] {
        let r = c.request(put("pct", outside.clone())).await?;
        assert_eq!(r["error"], json!("invalid_value"), "{outside}: {r}");
    }
    Ok(())
}

#[tokio::test]
async fn an_energy_meter_rebooting_mid_day_counts_the_day_correctly() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    ack(&mut c, json!({"define": {"kwh": {"type": "meter"}}})).await?;
    ack(
        &mut c,
        json!({"define": {"bytes": {"type": "meter", "wrap": 32}}}),
    )
    .await?;
    // Yesterday, every 15 minutes: 0.25 kWh used per quarter; at noon the meter reboots and
    // starts again from 0 (the quarter's usage after the reboot reads 0.25).
    let day = ((now() - DAY) / DAY).floor() * DAY;
    let mut reading = 1000.0;
    let mut puts = Vec::new();
    for q in 0..96 {
        let t = day + f64::from(q) * 900.0;
        if q == 48 {
            reading = 0.25;
        } else if q > 0 {
            reading += 0.25;
        }
        puts.push(json!({"put": {"key": "kwh", "value": reading, "time": t}}));
    }
    ack_all(&mut c, puts).await?;
    let daily = c
        .request(
            json!({"query": {"key": "kwh", "since": day, "until": day + DAY,
                                  "step": "1d", "figures": ["increase", "resets", "last"]}}),
        )
        .await?;
    // 95 quarters of 0.25 kWh after the first reading.
    assert_eq!(daily["buckets"][0]["increase"], json!(23.75), "{daily}");
    assert_eq!(daily["buckets"][0]["resets"], json!(1), "{daily}");

    // A 32-bit byte counter wrapping: 100 bytes before the wrap, 50 after.
    let t = now() - 60.0;
    ack(
        &mut c,
        json!({"put": {"key": "bytes", "value": 4_294_967_196_u64, "time": t - 10.0}}),
    )
    .await?;
    ack(
        &mut c,
        json!({"put": {"key": "bytes", "value": 50, "time": t}}),
    )
    .await?;
    let total = c
        .request(
            json!({"query": {"key": "bytes", "since": t - 20.0, "until": t + 1.0,
                                  "figures": ["increase", "resets"]}}),
        )
        .await?;
    assert_eq!(total["total"]["increase"], json!(150), "{total}");
    assert_eq!(total["total"]["resets"], json!(0), "{total}");
    let refused = c
        .request(json!({"put": {"key": "kwh", "value": -1}}))
        .await?;
    assert_eq!(refused, json!({"error": "invalid_value"}));
    Ok(())
}

#[tokio::test]
async fn decimal_and_meter_figures_survive_compaction() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for suffix in ["c", "raw"] {
        ack(
            &mut c,
            json!({"define": {
                format!("d.{suffix}"): {"type": "decimal"},
                format!("m.{suffix}"): {"type": "meter", "min_drop": 1},
            }}),
        )
        .await?;
    }
    ack(
        &mut c,
        json!({"retention": {"key": "*.c", "raw": "1d", "tiers": [["1H", "30d"], ["1d", null]]}}),
    )
    .await?;
    ack(&mut c, json!({"retention": {"key": "*.raw", "raw": null}})).await?;
    // Ten days up to two days ago, a point every 7 minutes: decimals in cents that wander,
    // a meter that grows, jitters down and resets now and then.
    let start = ((now() - 12.0 * DAY) / DAY).floor() * DAY;
    let (mut cents, mut reading, mut seed) = (10_000_i64, 0.0_f64, 7_u64);
    let mut puts = Vec::new();
    let mut t = start + 11.0;
    while t < start + 10.0 * DAY {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let r = (seed >> 33) % 100;
        cents += r as i64 - 50;
        reading = match r {
            0..3 => 0.0,            // a reset
            3..10 => reading - 0.5, // noise
            _ => reading + (r as f64) / 8.0,
        }
        .max(0.0);
        let decimal = format!("{}.{:02}", cents.div_euclid(100), cents.rem_euclid(100));
        for suffix in ["c", "raw"] {
            puts.push(json!({"put": {"key": format!("d.{suffix}"), "value": decimal, "time": t}}));
            puts.push(json!({"put": {"key": format!("m.{suffix}"), "value": reading, "time": t}}));
        }
        t += 420.0;
    }
    ack_all(&mut c, puts).await?;
    let report = c.request(json!({"compact": {}})).await?;
    ensure!(num(&report["points_compacted"]) > 4000.0, "{report}");

    let day0 = start + DAY;
    for (kind, figures) in [
        (
            "d",
            json!([
                "sum", "increase", "min", "max", "first", "last", "count", "mean"
            ]),
        ),
        (
            "m",
            json!(["increase", "resets", "rate", "first", "last", "count"]),
        ),
    ] {
        for (args, resolution) in [
            (
                json!({"since": day0, "until": day0 + 8.0 * DAY, "step": "1d"}),
                "1H",
            ),
            (
                json!({"since": day0, "until": day0 + 2.0 * DAY, "step": "1H"}),
                "1H",
            ),
            (
                json!({"since": day0, "until": day0 + 2.0 * DAY, "step": "6H"}),
                "1H",
            ),
        ] {
            let ask = |key: String| {
                let mut q = args.clone();
                q["key"] = json!(key);
                q["figures"] = figures.clone();
                json!({ "query": q })
            };
            let compacted = c.request(ask(format!("{kind}.c"))).await?;
            let raw = c.request(ask(format!("{kind}.raw"))).await?;
            assert_eq!(compacted["resolution"], json!(resolution), "{compacted}");
            assert_eq!(raw["resolution"], json!("raw"));
            for part in ["buckets", "total"] {
                assert_eq!(
                    compacted[part], raw[part],
                    "{kind} {args} {part}:\ncompacted {}\nraw       {}",
                    compacted[part], raw[part]
                );
            }
        }
    }
    Ok(())
}
