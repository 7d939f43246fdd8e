//! 100 000 uptime keys refreshed every `max_time / 2`: the memory their timers take and how
//! late expiries are pushed once the refreshes stop.
//!
//! `cargo bench -p komoku-tests --bench uptime_timers` (`-- --quick`: 10 000 keys).
//! Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use komoku_tests::Client;
use serde_json::{Value as Json, json};

const MAX_TIME: f64 = 6.0;
const CLIENTS: usize = 8;
const PER_FRAME: usize = 1000;
const SAMPLED: usize = 2000;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |pages| pages * 4096.0 / (1 << 20) as f64)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sends `make(key)` for every key, in arrays, over `CLIENTS` connections; returns seconds.
async fn for_all_keys(url: &str, keys: usize, make: fn(usize) -> Json) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await?;
            let mine: Vec<usize> = (c..keys).step_by(CLIENTS).collect();
            for chunk in mine.chunks(PER_FRAME) {
                let reply = client
                    .request(Json::Array(chunk.iter().map(|&k| make(k)).collect()))
                    .await?;
                ensure!(!reply.to_string().contains("error"), "refused: {reply}");
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let keys = if quick { 10_000 } else { 100_000 };
    let data = tempfile::tempdir()?;
    let config = komoku_tests::config(data.path(), &komoku_tests::fixtures_dir());
    let server = komoku::Server::start(&config).await?;
    let url = format!("ws://{}/", server.local_addr);

    println!(
        "{keys} uptime keys, max_time {MAX_TIME} s, refreshed every {} s",
        MAX_TIME / 2.0
    );
    let took = for_all_keys(
        &url,
        keys,
        |k| json!({"define": {format!("up.{k}"): {"type": "uptime", "max_time": MAX_TIME}}}),
    )
    .await?;
    println!("defined in {took:.1} s");
    let idle = rss_mib();

    let mut sub = Client::connect(&url).await?;
    let sampled: Vec<usize> = (0..keys).step_by((keys / SAMPLED).max(1)).collect();
    sub.request(Json::Array(
        sampled
            .iter()
            .map(|k| json!({"sub": {"key": format!("up.{k}")}}))
            .collect(),
    ))
    .await?;

    let rounds = 3;
    let mut armed = f64::NAN;
    for round in 0..rounds {
        let round_start = Instant::now();
        let took = for_all_keys(
            &url,
            keys,
            |k| json!({"put": {"key": format!("up.{k}"), "value": true}}),
        )
        .await?;
        println!("refresh round {round}: {keys} puts in {took:.2} s");
        if round == 0 {
            armed = rss_mib();
        }
        // Drain the pushes of the first `true` so only expiries are left afterwards.
        while sub.maybe_push(Duration::from_millis(1)).await?.is_some() {}
        let next = Duration::from_secs_f64(MAX_TIME / 2.0).saturating_sub(round_start.elapsed());
        if round + 1 < rounds {
            tokio::time::sleep(next).await;
        }
    }
    let expiries_from = now();
    println!(
        "memory: {idle:.1} MiB with keys defined, {armed:.1} MiB with every timer armed: {:.0} bytes per armed key (timer plus latest value)",
        (armed - idle) * (1 << 20) as f64 / keys as f64
    );

    // Stop refreshing: every key expires; measure how late the sampled pushes arrive.
    let mut late = Vec::with_capacity(sampled.len());
    let deadline = Instant::now() + Duration::from_secs_f64(MAX_TIME * 4.0);
    while late.len() < sampled.len() && Instant::now() < deadline {
        if let Some(push) = sub.maybe_push(Duration::from_millis(500)).await?
            && push["pub"]["value"] == json!(false)
        {
            late.push(now() - push["pub"]["time"].as_f64().unwrap_or(f64::NAN));
        }
    }
    late.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        late.get(((late.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
            * 1000.0
    };
    println!(
        "expiries (sample of {}, since {:.1} s after the last refresh): lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        late.len(),
        now() - expiries_from,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    server.shutdown().await?;
    Ok(())
}
