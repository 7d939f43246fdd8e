//! Bytes on disk per raw point, and bulk-ingest speed, in the same run as two baselines:
//! the same points written in format 1 (one fjall row per point, today's layout before
//! chunks) and that folder after its in-place migration; and Gorilla's 1.37 B/point.
//!
//! `cargo bench -p komoku-tests --bench density` (add `-- --quick` for a short run).
//! Prints figures; asserts nothing about size or speed.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use komoku_tests::Client;
use komoku_tests::format1;
use serde_json::{Value as Json, json};

/// A small deterministic generator (xorshift), so every run stores the same points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Bytes of the data folder, without the plugin cache (`plugins.good/`).
fn folder_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, top: bool) -> u64 {
        let mut total = 0;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if top && e.file_name() == "plugins.good" {
                    continue;
                }
                match e.metadata() {
                    Ok(m) if m.is_dir() => total += walk(&e.path(), false),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
        total
    }
    walk(dir, true)
}

/// One key's history as `(time, JSON value)`.
type History = Vec<(f64, Json)>;

/// Sends every point through a real server in arrays of 1 000 puts (time-major: each
/// array holds consecutive instants of all keys), then stops it gracefully, starts and
/// stops it again. Returns the ingest rate in puts/s and the data folder.
async fn through_server(keys: &[(String, History)]) -> Result<(f64, tempfile::TempDir)> {
    let data = tempfile::tempdir()?;
    let config = komoku_tests::config(data.path(), &komoku_tests::fixtures_dir());
    let server = komoku::Server::start(&config).await?;
    let mut client = Client::connect(&format!("ws://{}/", server.local_addr)).await?;
    let mut puts: Vec<Json> = Vec::new();
    let longest = keys.iter().map(|k| k.1.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (name, history) in keys {
            if let Some((t, v)) = history.get(i) {
                puts.push(json!({"put": {"key": name, "value": v, "time": t}}));
            }
        }
    }
    let frames: Vec<String> = puts
        .chunks(1000)
        .map(|c| Json::Array(c.to_vec()).to_string())
        .collect();
    let started = Instant::now();
    for frame in &frames {
        client.send_text(frame).await?;
        let reply = client.reply().await?;
        ensure!(!reply.to_string().contains("error"), "refused: {reply}");
    }
    let rate = puts.len() as f64 / started.elapsed().as_secs_f64();
    client.close().await?;
    server.shutdown().await?;
    let server = komoku::Server::start(&config).await?;
    server.shutdown().await?;
    Ok((rate, data))
}

fn to_format1(v: &Json) -> format1::Value {
    match v {
        Json::Bool(b) => format1::Value::Bool(*b),
        Json::String(s) => format1::Value::Text(s.clone()),
        other => format1::Value::Number(other.as_f64().unwrap_or(f64::NAN)),
    }
}

const T0: f64 = 1_704_067_200.0; // 2024-01-01

fn gauges(rng: &mut Rng, keys: usize, points: usize) -> Vec<(String, History)> {
    (0..keys)
        .map(|k| {
            let mut tenths: i64 = 200 + (k as i64 % 50);
            let history = (0..points)
                .map(|i| {
                    let r = rng.unit();
                    tenths += if r < 0.25 {
                        -1
                    } else if r > 0.75 {
                        1
                    } else {
                        0
                    };
                    (T0 + 5.0 * i as f64, json!(tenths as f64 / 10.0))
                })
                .collect();
            (format!("room.{k}.temperature"), history)
        })
        .collect()
}

/// Bytes of the journal files (`*.jnl` at the folder's top).
fn journal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// One result row: the whole folder, and without the journal (fjall keeps its active journal
/// file until it reaches 64 MB, even when all of it is flushed).
fn report(what: &str, dir: &Path, points: usize, extra: &str) {
    let bytes = folder_bytes(dir);
    let journal = journal_bytes(dir);
    println!(
        "{what:<56} {bytes:>11} {:>8.3} {:>8.3} {journal:>10} {extra}",
        bytes as f64 / points as f64,
        (bytes - journal) as f64 / points as f64,
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    println!("Raw history on disk: bytes per point (whole data folder after a graceful stop,");
    println!("start and stop; plugins.good/ not counted), baselines measured in the same run\n");
    println!(
        "{:<56} {:>11} {:>8} {:>8} {:>10}",
        "workload", "bytes", "B/point", "tables", "journal"
    );

    // (1) 100 room thermometers × 10 000 points at 5 s, 0.1 °C resolution.
    let points_per_key = 10_000 / scale;
    let rooms = gauges(&mut rng, 100, points_per_key);
    let n = 100 * points_per_key;
    let (rate, kept) = through_server(&rooms).await?;
    report(
        "100 gauges × 10 000 at 5 s, 0.1 resolution (chunks)",
        kept.path(),
        n,
        "",
    );

    let old = tempfile::tempdir()?;
    let f1: Vec<_> = rooms
        .iter()
        .map(|(name, h)| {
            let h = h.iter().map(|(t, v)| (*t, to_format1(v))).collect();
            (name.clone(), "numeric", h)
        })
        .collect();
    format1::write(old.path(), &f1)?;
    report(
        "  baseline: the same points in format 1 (row per point)",
        old.path(),
        n,
        "",
    );
    let started = Instant::now();
    let store = komoku::store::Store::open(old.path())?;
    let migrated_in = started.elapsed();
    store.flush()?;
    drop(store);
    report(
        "  that format-1 folder after its in-place migration",
        old.path(),
        n,
        &format!("(migrated in {:.2} s)", migrated_in.as_secs_f64()),
    );
    println!(
        "{:<56} {:>11} {:>8.3}",
        "  baseline: Gorilla (Facebook, 2015)", "", 1.37
    );

    // (2) An uptime-like boolean refreshed every 10 s, flipping now and then.
    let per_key = 100_000 / scale;
    let mut changes = 0usize;
    let flags: Vec<(String, History)> = (0..10)
        .map(|k| {
            let mut up = true;
            let history = (0..per_key)
                .map(|i| {
                    if rng.unit() < 0.002 {
                        up = !up;
                        changes += 1;
                    }
                    (T0 + 10.0 * i as f64, json!(up))
                })
                .collect();
            (format!("host.{k}.up"), history)
        })
        .collect();
    let (_, dir) = through_server(&flags).await?;
    let n = 10 * per_key;
    let tables = folder_bytes(dir.path()) - journal_bytes(dir.path());
    report(
        "10 booleans refreshed every 10 s (~1 change in 500)",
        dir.path(),
        n,
        &format!(
            "tables {:.1} B/change",
            tables as f64 / changes.max(1) as f64
        ),
    );

    // (3) A string state changing 50 times a day, for a year.
    let states = ["idle", "heating", "cooling", "defrost", "off"];
    let per_key = 50 * 365 / scale;
    let modes: Vec<(String, History)> = (0..10)
        .map(|k| {
            let history = (0..per_key)
                .map(|i| {
                    let jitter = (rng.unit() * 600.0).round();
                    let s = states[(rng.next() % states.len() as u64) as usize];
                    (T0 + 1728.0 * i as f64 + jitter, json!(s))
                })
                .collect();
            (format!("hvac.{k}.mode"), history)
        })
        .collect();
    let (_, dir) = through_server(&modes).await?;
    report(
        "10 string states changing 50 times a day, a year",
        dir.path(),
        10 * per_key,
        "",
    );

    // (4) A random walk at full float precision: XOR encoding.
    let walks: Vec<(String, History)> = (0..100)
        .map(|k| {
            let mut x = 1000.0 + k as f64;
            let history = (0..points_per_key)
                .map(|i| {
                    x += rng.unit() - 0.5;
                    (T0 + 5.0 * i as f64, json!(x))
                })
                .collect();
            (format!("walk.{k}"), history)
        })
        .collect();
    let (_, dir) = through_server(&walks).await?;
    report(
        "100 random walks, full-precision floats (XOR)",
        dir.path(),
        100 * points_per_key,
        "(Gorilla: 1.37)",
    );

    println!(
        "\nbulk ingest, arrays of 1 000 puts with times, one client: {rate:.0} puts/s \
         (compare: `cargo bench --bench throughput` scenario (c) on main)"
    );

    // Bare decode: a year of 10-s points of one key, written through the store's writer,
    // then read back by a plain scan (one core).
    let year = 3_153_600 / scale;
    let dir = tempfile::tempdir()?;
    let store = komoku::store::Store::open(dir.path())?;
    let writer = store.writer(komoku::store::Durability::Sync, |e| eprintln!("fatal: {e}"));
    let mut tenths: i64 = 200;
    for block in 0..year.div_ceil(10_000) {
        let writes = (block * 10_000..((block + 1) * 10_000).min(year))
            .map(|i| {
                let r = rng.unit();
                tenths += if r < 0.25 {
                    -1
                } else if r > 0.75 {
                    1
                } else {
                    0
                };
                komoku::store::Write::Point {
                    key: "year".into(),
                    point: komoku::value::Point {
                        time: T0 + 10.0 * i as f64,
                        value: komoku::value::Value::Number(tenths as f64 / 10.0),
                    },
                }
            })
            .collect();
        writer
            .submit(komoku::store::WriteBatch {
                writes,
                after: None,
            })
            .await??;
    }
    writer.close();
    let mut best = f64::INFINITY;
    let mut seen = 0;
    for _ in 0..5 {
        let began = Instant::now();
        seen = store.scan("year", f64::NEG_INFINITY, f64::INFINITY).count();
        best = best.min(began.elapsed().as_secs_f64());
    }
    ensure!(seen == year, "decoded {seen} of {year} points");
    println!(
        "bare decode of a year of 10-s points ({year}, {} chunk bytes): best of 5 {:.1} ms, \
         {:.1} M points/s on one core",
        store.points_disk_space(),
        best * 1e3,
        year as f64 / best / 1e6
    );
    Ok(())
}
