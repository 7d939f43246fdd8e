//! 1 000 concurrent connections for a minute against the real binary with auth on: half
//! subscribe (one key each, 5 subscribers per key), half write (a put every 100 ms each,
//! waiting for the ack). Prints replies and pushes lost, the server's memory, and latency
//! percentiles of acks and of pushes (put sent → push received).
//!
//! `cargo bench -p komoku-tests --bench load` (`-- --quick`: 10 s). Prints figures; asserts
//! nothing about speed. Needs ~2 100 file descriptors (`ulimit -n`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use komoku_tests::{Client, ServerProcess, now};
use serde_json::json;

const CONNECTIONS: usize = 1000;
const KEYS: usize = 100;
const PUT_EVERY: Duration = Duration::from_millis(100);
const SECRET: &str = "load-test-secret";

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn percentiles(name: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        println!("{name:>14}: no samples");
        return;
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q) as usize];
    println!(
        "{name:>14}: n = {:>8}  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        ms[ms.len() - 1]
    );
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    pushes: AtomicU64,
    failed_connections: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let duration = Duration::from_secs(if quick { 10 } else { 60 });

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("komoku.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"load\"\nhash = \"{}\"\n\
             read = [\"*\"]\nwrite = [\"*\"]\nsubscribe = [\"*\"]\n",
            komoku::auth::hash_token(SECRET)
        ),
    )?;
    let server = ServerProcess::start_with_args(
        env!("CARGO_BIN_EXE_komoku-e2e"),
        &dir.path().join("data"),
        &["--config", config.to_str().context("utf-8 path")?],
    )?;
    let pid = server.pid();
    let url = format!("{}?token={SECRET}", server.url());
    let rss_start = rss_mib(pid);

    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + duration;

    // Subscribers first, so that every put has its 5 subscribers.
    let mut subscribers = Vec::new();
    for i in 0..CONNECTIONS / 2 {
        let mut c = Client::connect(&url).await?;
        let reply = c
            .request(json!({"sub": {"key": format!("load.{}", i % KEYS)}}))
            .await?;
        anyhow::ensure!(reply == "ack", "sub refused: {reply}");
        let counts = counts.clone();
        subscribers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                // Keep reading until 2 s after the writers stopped and the pushes dried up.
                let wait = if Instant::now() > deadline {
                    Duration::from_secs(2)
                } else {
                    Duration::from_secs(5)
                };
                match c.maybe_push(wait).await {
                    Ok(Some(push)) => {
                        counts.pushes.fetch_add(1, Ordering::Relaxed);
                        let value = push["pub"]["value"].as_f64().unwrap_or(f64::NAN);
                        let sent = (value / 1e3).floor() / 1e3;
                        latencies.push((now() - sent) * 1e3);
                    }
                    Ok(None) if Instant::now() > deadline => break,
                    Ok(None) => {}
                    Err(_) => {
                        counts.failed_connections.fetch_add(1, Ordering::Relaxed);
                        return latencies;
                    }
                }
            }
            // Still connected and answering?
            if c.request(json!({"ping": 1})).await.is_err() {
                counts.failed_connections.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let connected_subs = started.elapsed();

    let mut writers = Vec::new();
    for w in 0..CONNECTIONS / 2 {
        let mut c = Client::connect(&url).await?;
        let counts = counts.clone();
        writers.push(tokio::spawn(async move {
            let key = format!("load.{}", w % KEYS);
            let mut latencies = Vec::new();
            // Spread the writers over the interval.
            tokio::time::sleep(PUT_EVERY.mul_f64(w as f64 / (CONNECTIONS / 2) as f64)).await;
            let mut tick = tokio::time::interval(PUT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                tick.tick().await;
                // The value is the send time in ms, times 1000, plus the writer's number:
                // unique per put, so every put is a change and is pushed; subscribers
                // compute push latency from it.
                let value = (now() * 1e3).floor() * 1e3 + w as f64;
                let sent = Instant::now();
                counts.sent.fetch_add(1, Ordering::Relaxed);
                match c
                    .request(json!({"put": {"key": key, "value": value}}))
                    .await
                {
                    Ok(reply) if reply == "ack" => {
                        counts.acked.fetch_add(1, Ordering::Relaxed);
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(_) => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts.failed_connections.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            latencies
        }));
    }
    println!(
        "{CONNECTIONS} connections open ({} subscribers in {:.1} s, all in {:.1} s); running {} s",
        CONNECTIONS / 2,
        connected_subs.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        duration.as_secs()
    );

    let mut rss_peak = rss_mib(pid);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(rss_mib(pid));
    }
    let mut ack_ms = Vec::new();
    for w in writers {
        ack_ms.extend(w.await?);
    }
    let mut push_ms = Vec::new();
    for s in subscribers {
        push_ms.extend(s.await?);
    }
    rss_peak = rss_peak.max(rss_mib(pid));

    let sent = counts.sent.load(Ordering::Relaxed);
    let acked = counts.acked.load(Ordering::Relaxed);
    let pushes = counts.pushes.load(Ordering::Relaxed);
    let expected_pushes = acked * (CONNECTIONS / 2 / KEYS) as u64;
    println!(
        "puts sent {sent}, acked {acked}, refused {}, replies lost: {}  ({:.0} puts/s)",
        counts.refused.load(Ordering::Relaxed),
        sent - acked - counts.refused.load(Ordering::Relaxed),
        acked as f64 / duration.as_secs_f64()
    );
    println!(
        "pushes expected {expected_pushes}, received {pushes}, lost {}",
        expected_pushes.saturating_sub(pushes)
    );
    println!(
        "connections failed or dropped: {}",
        counts.failed_connections.load(Ordering::Relaxed)
    );
    println!(
        "server RSS: start {rss_start:.0} MiB, peak {rss_peak:.0} MiB, end {:.0} MiB",
        rss_mib(pid)
    );
    percentiles("put → ack", ack_ms);
    percentiles("put → push", push_ms);
    Ok(())
}
