//! History query latency over a year of points at 10 s (3.15 million points per key),
//! through a real server and websocket, beside a baseline in the same run: a bare decode of
//! the same chunks (every point read from the store natively, no summarising at all), and
//! that decode's throughput in points per second on one core. Sealed chunks carry their
//! summaries, so a query decodes only the chunks its bucket edges cut.
//!
//! `cargo bench -p komoku-tests --bench queries` (add `-- --quick` for a month of points).
//! Prints figures; asserts nothing about speed.

use std::time::Instant;

use anyhow::{Result, ensure};
use komoku_tests::{Client, TestServer};
use serde_json::{Value as Json, json};

/// 2025-01-01T00:00:00Z.
const START: f64 = 1_735_689_600.0;
const EVERY: f64 = 10.0;
const PER_FRAME: usize = 2_000;

/// Writes `count` points at 10 s: a door that changes every 7th point, a temperature wave.
async fn ingest(c: &mut Client, count: usize) -> Result<f64> {
    let started = Instant::now();
    let mut i = 0;
    while i < count {
        let frame: Vec<Json> = (i..(i + PER_FRAME).min(count))
            .flat_map(|n| {
                let t = START + n as f64 * EVERY;
                [
                    json!({"put": {"key": "door", "value": (n / 7) % 3 != 0, "time": t}}),
                    json!({"put": {"key": "temp", "value": 20.0 + ((n % 8640) as f64 / 8640.0 * std::f64::consts::TAU).sin() * 5.0, "time": t}}),
                ]
            })
            .collect();
        c.send_text(&Json::Array(frame).to_string()).await?;
        let reply = c.reply().await?;
        ensure!(!reply.to_string().contains("error"), "refused: {reply}");
        i += PER_FRAME;
    }
    Ok((2 * count) as f64 / started.elapsed().as_secs_f64())
}

/// Runs a query `runs` times; returns the best and median milliseconds.
async fn time_query(c: &mut Client, q: &Json, runs: usize) -> Result<(f64, f64, Json)> {
    let mut times = Vec::new();
    let mut answer = Json::Null;
    for _ in 0..runs {
        let started = Instant::now();
        answer = c.request(json!({ "query": q })).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(answer.get("error").is_none(), "{q}: {answer}");
    }
    times.sort_by(f64::total_cmp);
    Ok((times[0], times[times.len() / 2], answer))
}

/// The baseline: read every point of `key` in `[since, until]` from the store, nothing else;
/// the best of `runs` milliseconds.
fn scan_ms(s: &TestServer, key: &str, since: f64, until: f64, runs: usize) -> Result<(f64, usize)> {
    let mut best = f64::INFINITY;
    let mut n = 0;
    for _ in 0..runs {
        let started = Instant::now();
        n = 0;
        for p in s.server.db().store().scan(key, since, until) {
            p?;
            n += 1;
        }
        best = best.min(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((best, n))
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let days = if quick { 31.0 } else { 365.0 };
    let count = (days * 86_400.0 / EVERY) as usize;
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    println!(
        "ingesting {count} points per key (door: boolean, temp: numeric), 10 s apart, {days} days"
    );
    let rate = ingest(&mut c, count).await?;
    println!(
        "ingest: {rate:.0} puts/s (frames of {} puts)",
        2 * PER_FRAME
    );
    let end = START + days * 86_400.0;
    let month = end - 31.0 * 86_400.0;
    let week = end - 7.0 * 86_400.0;

    let cases = [
        (
            "uptime % for the whole range (target < 5 ms)",
            "door",
            START,
            json!({"key": "door", "since": START, "until": end, "figures": ["fraction_true"]}),
        ),
        (
            "daily mean/min/max for the whole range (target < 20 ms)",
            "temp",
            START,
            json!({"key": "temp", "since": START, "until": end, "step": "1d", "figures": ["mean", "min", "max"]}),
        ),
        (
            "hourly mean for a week (target < 2 ms)",
            "temp",
            week,
            json!({"key": "temp", "since": week, "until": end, "step": "1H", "figures": ["mean"]}),
        ),
        (
            "time true per day for a month",
            "door",
            month,
            json!({"key": "door", "since": month, "until": end, "step": "1d", "figures": ["time_true"]}),
        ),
        (
            "typical hour of day (fraction true) over a month",
            "door",
            month,
            json!({"key": "door", "since": month, "until": end, "step": "1H", "group": "hour", "figures": ["fraction_true"]}),
        ),
    ];
    println!();
    println!(
        "| query | points | komoku best ms | komoku median ms | baseline: bare decode of the same chunks, best ms | decode points/s (one core) | ratio (median/decode) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, key, since, q) in cases {
        let runs = if quick { 3 } else { 7 };
        let (best, median, answer) = time_query(&mut c, &q, runs).await?;
        let (scan, points) = scan_ms(&s, key, since, end, runs)?;
        println!(
            "| {name} | {points} | {best:.2} | {median:.2} | {scan:.1} | {:.1} M | {:.3} |",
            points as f64 / (scan / 1000.0).max(1e-9) / 1e6,
            median / scan.max(0.001)
        );
        if name.starts_with("uptime") {
            println!(
                "|   answer | | {} | | | | |",
                answer["total"]["fraction_true"]
            );
        }
    }
    Ok(())
}
