//! Put throughput of a real Komoku server against a bare tokio-tungstenite echo server in
//! the same run, the same over the binary protocol (protobuf frames on TCP) against a bare
//! protobuf echo server, and bytes on disk per stored point.
//!
//! `cargo bench -p komoku-tests --bench throughput` (add `-- --quick` for a short run).
//! Prints figures; asserts nothing about speed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use komoku_proto::{self as proto, Frames, Request, ServerFrame, request, response, server_frame};
use komoku_tests::Client;
use prost::Message as _;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A websocket server that parses every frame as JSON and answers what Komoku answers to a
/// put, `"ack"` (an array of them for an array of puts), storing nothing: the floor any
/// websocket JSON server on this machine pays per round trip, with the client doing the
/// same work against it as against Komoku.
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
                    let Ok(text) = msg.to_text() else { continue };
                    let reply = match serde_json::from_str::<Json>(text) {
                        Ok(Json::Array(puts)) => {
                            Json::Array(vec![Json::from("ack"); puts.len()]).to_string()
                        }
                        Ok(_) => "\"ack\"".to_string(),
                        Err(_) => "{\"error\":\"invalid_json\"}".to_string(),
                    };
                    if ws.send(reply.into()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A TCP server that reads length-prefixed protobuf `Request`s and answers each with what
/// Komoku answers to a put, `Response{id, ok}`, storing nothing: the floor of the binary
/// protocol on this machine. Like Komoku, it answers the frames that arrived together in one
/// write.
async fn tcp_echo_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut frames = Frames::new(1 << 20);
                let mut input = BytesMut::with_capacity(4 << 10);
                let mut output = BytesMut::new();
                loop {
                    while let Ok(Some(frame)) = frames.split(&mut input) {
                        let result = match Request::decode(frame) {
                            Ok(r) => (r.id, response::Result::Ok(proto::Ok {})),
                            Err(e) => (
                                0,
                                response::Result::Error(proto::Error {
                                    code: "invalid_frame".into(),
                                    message: e.to_string(),
                                    ..Default::default()
                                }),
                            ),
                        };
                        let answer = ServerFrame {
                            frame: Some(server_frame::Frame::Response(proto::Response {
                                id: result.0,
                                result: Some(result.1),
                            })),
                        };
                        proto::encode_frame(&answer, &mut output);
                    }
                    if !output.is_empty() {
                        if stream.write_all(&output).await.is_err() {
                            return;
                        }
                        output.clear();
                    }
                    match stream.read_buf(&mut input).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// [`load`] over the binary protocol: each client writes `per_frame` put requests at once
/// (pipelined, one write) and waits for their `per_frame` responses.
async fn load_tcp(
    addr: SocketAddr,
    clients: usize,
    frames: usize,
    per_frame: usize,
    key_space: usize,
    t0: u64,
) -> Result<Measured> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let keys_each = (key_space / clients).max(1);
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut decoder = Frames::new(1 << 20);
            let mut input = BytesMut::with_capacity(4 << 10);
            let mut output = BytesMut::new();
            let mut latencies = Vec::with_capacity(frames);
            for f in 0..frames {
                output.clear();
                for i in 0..per_frame {
                    let n = (f * per_frame + i) as u64;
                    let put = proto::Put {
                        key: format!("sensor.{c}.{}", n as usize % keys_each),
                        value: Some(proto::Value {
                            kind: Some(proto::value::Kind::Number((n % 1000) as f64 / 10.0)),
                        }),
                        time: Some((t0 + (c as u64) * 10_000_000 + n) as f64),
                    };
                    let request = Request {
                        id: n,
                        command: Some(request::Command::Put(put)),
                    };
                    proto::encode_frame(&request, &mut output);
                }
                let sent = Instant::now();
                stream.write_all(&output).await?;
                let mut answered = 0;
                while answered < per_frame {
                    while let Some(frame) = decoder.split(&mut input)? {
                        let reply = ServerFrame::decode(frame)?;
                        if let Some(server_frame::Frame::Response(r)) = reply.frame {
                            ensure!(
                                matches!(r.result, Some(response::Result::Ok(_))),
                                "refused: {r:?}"
                            );
                            answered += 1;
                        }
                    }
                    if answered < per_frame {
                        let n = stream.read_buf(&mut input).await?;
                        ensure!(n > 0, "the server closed the connection");
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Measured {
        puts_per_s: (clients * frames * per_frame) as f64 / started.elapsed().as_secs_f64(),
        p50_us: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
    })
}

/// What one load run measured.
struct Measured {
    puts_per_s: f64,
    /// Median time from sending a frame to its reply, in µs.
    p50_us: f64,
}

/// `clients` connections each sending `frames` frames of `per_frame` puts (a bare put when
/// `per_frame` is 1), waiting for each reply. Each client writes its own share of the
/// `key_space` keys, in time order, as a sensor does (a key written by several writers far
/// apart in time is a backfill: each late point then lands in a sealed chunk, which the
/// storage issue's follow-up has to make cheap).
async fn load(
    url: &str,
    clients: usize,
    frames: usize,
    per_frame: usize,
    key_space: usize,
    t0: u64,
) -> Result<Measured> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let keys_each = (key_space / clients).max(1);
    for c in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await?;
            let mut latencies = Vec::with_capacity(frames);
            for f in 0..frames {
                let put = |i: usize| {
                    let n = (f * per_frame + i) as u64;
                    json!({"put": {"key": format!("sensor.{c}.{}", n as usize % keys_each), "value": (n % 1000) as f64 / 10.0, "time": (t0 + (c as u64) * 10_000_000 + n) as f64}})
                };
                let frame = if per_frame == 1 { put(0) } else { Json::Array((0..per_frame).map(put).collect()) };
                let text = frame.to_string();
                let sent = Instant::now();
                client.send_text(&text).await?;
                let reply = client.reply().await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                ensure!(!reply.to_string().contains("error"), "refused: {reply}");
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Measured {
        puts_per_s: (clients * frames * per_frame) as f64 / started.elapsed().as_secs_f64(),
        p50_us: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
    })
}

/// The median time of writing 4 KiB into a file that already has its size, and fsyncing
/// it (`fdatasync`, as a journal does), in the folder `dir` (on the disk the data folder is
/// on): what a durable ack cannot beat.
fn fsync_us(dir: &Path, samples: usize) -> Result<f64> {
    use std::io::{Seek, Write};
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [7u8; 4096];
    for _ in 0..samples {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    file.rewind()?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    std::fs::remove_file(path)?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
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
    let tcp_echo = tcp_echo_server().await?;
    let data = tempfile::tempdir()?;
    let mut config = komoku_tests::config(data.path(), &komoku_tests::fixtures_dir());
    config.tcp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = komoku::Server::start(&config).await?;
    let url = format!("ws://{}/", server.local_addr);
    let tcp = server.tcp_addr.context("tcp_listen is set")?;

    println!(
        "Komoku put throughput vs a bare tokio-tungstenite echo server (same machine, same run)"
    );
    println!("durability: fsync before every ack (group commit)\n");
    println!(
        "(the echo server parses each frame and answers \"ack\" per put, as Komoku does, storing nothing)"
    );
    println!(
        "fsync of 4 KiB on the data folder's disk: {:.0} µs (median of 200)\n",
        fsync_us(data.path(), 200)?
    );
    println!(
        "{:<44} {:>14} {:>14} {:>8} {:>12} {:>12}",
        "load", "komoku puts/s", "echo puts/s", "ratio", "komoku p50", "echo p50"
    );
    let scenarios: [(&str, usize, usize, usize); 4] = [
        ("(a) 1 client, wait for each ack", 1, 2000 / scale, 1),
        ("(b) 32 clients, wait for each ack", 32, 300 / scale, 1),
        (
            "(c) 8 clients, arrays of 100 puts/frame",
            8,
            100 / scale,
            100,
        ),
        (
            "(d) 32 clients, arrays of 100 puts/frame",
            32,
            100 / scale,
            100,
        ),
    ];
    // Every client writes its own range of past times (the server refuses times more than a
    // day ahead): 32 clients × 10 000 000 s from 2001 stay before 2012.
    let mut t0 = 1_000_000_000;
    let mut websocket = Vec::new();
    for (name, clients, frames, per_frame) in scenarios {
        let k = load(&url, clients, frames, per_frame, 100, t0).await?;
        t0 += 100_000;
        let e = load(&echo, clients, frames, per_frame, 100, t0).await?;
        println!(
            "{name:<44} {:>14.0} {:>14.0} {:>8.3} {:>9.0} µs {:>9.0} µs",
            k.puts_per_s,
            e.puts_per_s,
            k.puts_per_s / e.puts_per_s,
            k.p50_us,
            e.p50_us
        );
        websocket.push(k.puts_per_s);
    }

    println!(
        "\nThe binary protocol (protobuf frames on TCP, tcp_listen) vs a bare protobuf echo server, same server, same run"
    );
    println!(
        "(the echo server decodes each request frame and answers Response{{ok}} per put, storing nothing; \
         \"arrays of 100\" are 100 request frames pipelined in one write)"
    );
    println!(
        "{:<44} {:>14} {:>14} {:>8} {:>12} {:>12} {:>10}",
        "load", "komoku puts/s", "echo puts/s", "ratio", "komoku p50", "echo p50", "vs ws/JSON"
    );
    for ((name, clients, frames, per_frame), ws_rate) in scenarios.into_iter().zip(websocket) {
        t0 += 100_000;
        let k = load_tcp(tcp, clients, frames, per_frame, 100, t0).await?;
        let e = load_tcp(tcp_echo, clients, frames, per_frame, 100, t0).await?;
        println!(
            "{name:<44} {:>14.0} {:>14.0} {:>8.3} {:>9.0} µs {:>9.0} µs {:>9.2}x",
            k.puts_per_s,
            e.puts_per_s,
            k.puts_per_s / e.puts_per_s,
            k.p50_us,
            e.p50_us,
            k.puts_per_s / ws_rate
        );
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
    let rate = load(&url, 32, points / 32 / 100, 100, 1000, 1_000_000_000)
        .await?
        .puts_per_s;
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
