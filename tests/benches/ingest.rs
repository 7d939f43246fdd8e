//! Bulk ingest: one client sending arrays of 1 000 puts with times (100 keys, time-major),
//! waiting for each reply; puts/s, median of 3 fresh servers. Uses only what main had too,
//! so the same file runs on a checkout of main for a side-by-side figure.
//!
//! `cargo bench -p komoku-tests --bench ingest` (`-- --quick`: a tenth of the points).
//! Prints figures; asserts nothing about speed.

use std::time::Instant;

use anyhow::{Result, ensure};
use komoku_tests::Client;
use serde_json::{Value as Json, json};

async fn run(points: usize) -> Result<f64> {
    let data = tempfile::tempdir()?;
    let config = komoku_tests::config(data.path(), &komoku_tests::fixtures_dir());
    let server = komoku::Server::start(&config).await?;
    let mut client = Client::connect(&format!("ws://{}/", server.local_addr)).await?;
    let frames: Vec<String> = (0..points / 1000)
        .map(|f| {
            let puts: Vec<Json> = (0..1000)
                .map(|j| {
                    let n = f * 1000 + j;
                    let (step, key) = (n / 100, n % 100);
                    let value = ((step * 7 + key) % 300) as f64 / 10.0;
                    json!({"put": {"key": format!("room.{key}"), "value": value, "time": 1_704_067_200.0 + 5.0 * step as f64}})
                })
                .collect();
            Json::Array(puts).to_string()
        })
        .collect();
    let began = Instant::now();
    for frame in &frames {
        client.send_text(frame).await?;
        let reply = client.reply().await?;
        ensure!(!reply.to_string().contains("error"), "refused: {reply}");
    }
    let rate = (frames.len() * 1000) as f64 / began.elapsed().as_secs_f64();
    server.shutdown().await?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let points = if quick { 100_000 } else { 1_000_000 };
    let mut rates = Vec::new();
    for _ in 0..3 {
        rates.push(run(points).await?);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "bulk ingest of {points} points, arrays of 1 000 puts with times: median {:.0} puts/s (runs: {:.0?})",
        rates[1], rates
    );
    Ok(())
}
