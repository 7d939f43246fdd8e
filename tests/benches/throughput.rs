//! Put throughput of a real Komoku server against a bare tokio-tungstenite echo server in
//! the same run, and bytes on disk per stored point.
//!
//! `cargo bench -p komoku-tests --bench throughput` (add `-- --quick` for a short run).
//! Prints figures; asserts nothing about speed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use futures_util::{SinkExt, StreamExt};
use komoku_tests::Client;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

/// A websocket server that answers every frame with the same frame: the floor any
/// websocket server on this machine pays per round trip.
async fn echo_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// `clients` connections each sending `frames` frames of `per_frame` puts (a bare put when
/// `per_frame` is 1), waiting for each reply. Returns puts per second.
async fn load(
    url: &str,
    clients: usize,
    frames: usize,
    per_frame: usize,
    key_space: usize,
    t0: u64,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await?;
            for f in 0..frames {
                let put = |i: usize| {
                    let n = (f * per_frame + i) as u64;
                    json!({"put": {"key": format!("sensor.{}", (c + n as usize) % key_space), "value": (n % 1000) as f64 / 10.0, "time": (t0 + (c as u64) * 10_000_000 + n) as f64}})
                };
                let frame = if per_frame == 1 { put(0) } else { Json::Array((0..per_frame).map(put).collect()) };
                let text = frame.to_string();
                client.send_text(&text).await?;
                let reply = client.reply().await?;
                ensure!(!reply.to_string().contains("error"), "refused: {reply}");
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((clients * frames * per_frame) as f64 / started.elapsed().as_secs_f64())
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let echo = format!("ws://{}/", echo_server().await?);
    let data = tempfile::tempdir()?;
    let config = komoku_tests::config(data.path(), &komoku_tests::fixtures_dir());
    let server = komoku::Server::start(&config).await?;
    let url = format!("ws://{}/", server.local_addr);

    println!(
        "Komoku put throughput vs a bare tokio-tungstenite echo server (same machine, same run)"
    );
    println!("durability: fsync before every ack (group commit)\n");
    println!(
        "(the echo server answers each frame with itself; its rate counts the puts those frames carry)\n"
    );
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "load", "komoku puts/s", "echo puts/s", "ratio"
    );
    let scenarios: [(&str, usize, usize, usize); 3] = [
        ("(a) 1 client, wait for each ack", 1, 2000 / scale, 1),
        ("(b) 32 clients, wait for each ack", 32, 300 / scale, 1),
        (
            "(c) 8 clients, arrays of 100 puts/frame",
            8,
            100 / scale,
            100,
        ),
    ];
    // Every client writes its own range of past times (the server refuses times more than a
    // day ahead): 32 clients × 10 000 000 s from 2001 stay before 2012.
    let mut t0 = 1_000_000_000;
    for (name, clients, frames, per_frame) in scenarios {
        let k = load(&url, clients, frames, per_frame, 100, t0).await?;
        t0 += 100_000;
        let e = load(&echo, clients, frames, per_frame, 100, t0).await?;
        println!("{name:<44} {k:>14.0} {e:>14.0} {:>8.3}", k / e);
    }

    server.shutdown().await?;

    // Disk use: a fresh database holding only the bulk load.
    let points: usize = 1_000_000 / scale;
    let bulk = tempfile::tempdir()?;
    let server = komoku::Server::start(&komoku_tests::config(
        bulk.path(),
        &komoku_tests::fixtures_dir(),
    ))
    .await?;
    let url = format!("ws://{}/", server.local_addr);
    let started = Instant::now();
    let rate = load(&url, 32, points / 32 / 100, 100, 1000, 1_000_000_000).await?;
    println!(
        "\nstored {points} numeric points into 1000 keys at {rate:.0} puts/s ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    server.shutdown().await?;
    // Reopen and flush the memtables into tables, as a long-running server would have.
    let store = komoku::store::Store::open(bulk.path())?;
    store.flush()?;
    let in_tables = store.points_disk_space();
    drop(store);
    let total = dir_bytes(bulk.path());
    println!(
        "on disk: {:.1} bytes/point in the points keyspace ({in_tables} bytes); the whole folder, journal included: {total} bytes",
        in_tables as f64 / points as f64
    );
    Ok(())
}
