//! Compaction: disk use before and after, bytes per raw point and per key-year, and put
//! throughput while a compaction runs.
//!
//! Each "key set" is a numeric sensor at 5 s, a door boolean changing 50 times a day and a
//! string state changing 6 times a day, simulated up to now under each type's default
//! policy (numeric: raw 7 days → 1 minute for 30 days → 1 hour for 2 years → 1 day forever;
//! boolean and string: raw 90 days → 1 hour for 2 years → 1 day forever).
//!
//! `cargo bench -p komoku-tests --bench compaction -- --quick` runs 4 key sets × 30 days
//! (about 2 million points). The full size, 1 000 key sets × 365 days, is 6.3
//! billion points (`-- --keys 1000 --days 365`): hours of ingest and hundreds of GB, meant
//! for a big machine. Prints figures; asserts nothing about speed.
//!
//! `-- --keys 1 --years 3` shows where disk use stops growing: three simulated years one
//! after the other, each compacted as of its end, with the history's size after each.

use std::time::Instant;

use anyhow::{Result, ensure};
use komoku_tests::Client;
use serde_json::{Value as Json, json};

const DAY: f64 = 86_400.0;
const CLIENTS: usize = 4;

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// The puts of key set `k` for `[from, to)`, in time order.
fn day_puts(k: usize, from: f64, to: f64) -> Vec<Json> {
    let mut out = Vec::new();
    let mut seed = (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (from as u64);
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut t = from;
    let mut i = 0u64;
    while t < to {
        let temp = 20.0 + (rnd(100) as f64) / 10.0;
        out.push(json!({"put": {"key": format!("temp.{k}"), "value": temp, "time": t}}));
        // 86 400 / 1 728 = 50 door changes a day; 6 state changes a day.
        if i.is_multiple_of(345) {
            let open = (t / 1728.0) as u64 % 2 == 1;
            out.push(json!({"put": {"key": format!("door.{k}"), "value": open, "time": t}}));
        }
        if i.is_multiple_of(2880) {
            let mode = ["home", "away", "sleep"][rnd(3) as usize];
            out.push(json!({"put": {"key": format!("mode.{k}"), "value": mode, "time": t}}));
        }
        t += 5.0;
        i += 1;
    }
    out
}

/// Ingests `[from, to)` for every key set with `CLIENTS` connections in frames of 1 000;
/// the (key set, day) pairs are dealt round-robin, so one key set uses every client too.
/// Returns (puts, seconds).
async fn ingest(url: &str, keys: usize, from: f64, to: f64) -> Result<(usize, f64)> {
    let started = Instant::now();
    let days = ((to - from) / DAY).ceil().max(0.0) as usize;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await?;
            let mut puts = 0;
            for n in (c..keys * days).step_by(CLIENTS) {
                let (k, day) = (n % keys, from + (n / keys) as f64 * DAY);
                let all = day_puts(k, day, (day + DAY).min(to));
                for frame in all.chunks(1000) {
                    let reply = client.request(Json::Array(frame.to_vec())).await?;
                    ensure!(!reply.to_string().contains("error"), "refused: {reply}");
                }
                puts += all.len();
            }
            anyhow::Ok(puts)
        }));
    }
    let mut puts = 0;
    for t in tasks {
        puts += t.await??;
    }
    Ok((puts, started.elapsed().as_secs_f64()))
}

/// A server on `data` with the test fixtures, its URL, database and store.
async fn start_server(
    data: &tempfile::TempDir,
) -> Result<(
    komoku::Server,
    String,
    std::sync::Arc<komoku::db::Db>,
    komoku::store::Store,
)> {
    let config = komoku_tests::config(data.path(), &komoku_tests::fixtures_dir());
    let server = komoku::Server::start(&config).await?;
    let url = format!("ws://{}/", server.local_addr);
    let db = server.db().clone();
    let store = db.store().clone();
    Ok((server, url, db, store))
}

/// `--years N`: N simulated years, one after the other, each followed by a compaction "at"
/// the end of that year (`Db::compact` takes the time to compact as of); prints the
/// history's size per key set after each, so the growth per year shows where it stops.
async fn growth(keys: usize, years: usize) -> Result<()> {
    let data = tempfile::tempdir()?;
    let (server, url, db, store) = start_server(&data).await?;
    let year = 365.0 * DAY;
    let start = (komoku_tests::now() / DAY).floor() * DAY - years as f64 * year;
    println!(
        "{keys} key sets (numeric at 5 s, door boolean 50 changes/day, string state), {years} \
         simulated years, each compacted at its end with the default policies\n"
    );
    println!(
        "| after year | puts/s | compaction s | raw points | summaries | history bytes per key set | growth in the year |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut previous = 0.0;
    for y in 0..years {
        let (from, to) = (start + y as f64 * year, start + (y + 1) as f64 * year);
        let (puts, secs) = ingest(&url, keys, from, to).await?;
        let began = Instant::now();
        db.compact(None, to).await?;
        let compaction = began.elapsed().as_secs_f64();
        db.settled().await?;
        store.flush()?;
        store.major_compact()?;
        let (summaries, summaries_bytes) = store.summaries_size();
        let per_set = (store.points_disk_space() + summaries_bytes) as f64 / keys as f64;
        println!(
            "| {} | {:.0} | {compaction:.1} | {} | {summaries} | {per_set:.0} | {:+.0} |",
            y + 1,
            puts as f64 / secs,
            store.approximate_points(),
            per_set - previous
        );
        previous = per_set;
    }
    server.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let keys = arg("--keys").unwrap_or(if quick { 4 } else { 1000 });
    if let Some(years) = arg("--years") {
        return growth(keys, years).await;
    }
    let days = arg("--days").unwrap_or(if quick { 30 } else { 365 }) as f64;
    let data = tempfile::tempdir()?;
    let (server, url, db, store) = start_server(&data).await?;

    let end = (komoku_tests::now() / DAY).floor() * DAY;
    let start = end - days * DAY;
    println!(
        "{keys} key sets (numeric at 5 s, door boolean 50 changes/day, string state), {days} days, \
         each type's default policy, durability sync, {CLIENTS} clients, frames of 1 000 puts\n"
    );
    let (puts, secs) = ingest(&url, keys, start, end - DAY).await?;
    let rate_alone = puts as f64 / secs;
    println!("ingest, no compaction:    {puts} puts in {secs:.1} s = {rate_alone:.0} puts/s");

    db.settled().await?;
    store.flush()?;
    let points = store.approximate_points();
    let points_bytes = store.points_disk_space();
    let before = points_bytes + store.summaries_size().1;
    println!(
        "before compaction:        {before} bytes of history tables; {points} raw points, {:.1} bytes per raw point; fjall in all (journal included): {} bytes",
        points_bytes as f64 / points as f64,
        store.disk_space()?
    );

    // The last day goes in while everything older is compacted.
    let compacting = {
        let db = db.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let report = db.compact(None, komoku::value::now()).await?;
            anyhow::Ok((report, started.elapsed().as_secs_f64()))
        })
    };
    let (puts, secs) = ingest(&url, keys, end - DAY, end).await?;
    let compaction_running = !compacting.is_finished();
    let (report, compaction_secs) = compacting.await??;
    println!(
        "ingest during compaction: {puts} puts in {secs:.1} s = {:.0} puts/s ({:.2} of the rate alone; compaction {} for the whole ingest)",
        puts as f64 / secs,
        puts as f64 / secs / rate_alone,
        if compaction_running {
            "ran"
        } else {
            "did not run"
        }
    );
    println!(
        "compaction:               {compaction_secs:.1} s, {} steps, {} raw points → {} summaries",
        report.steps, report.points_compacted, report.summaries_written
    );

    db.settled().await?;
    store.flush()?;
    store.major_compact()?;
    let (summaries, summaries_bytes) = store.summaries_size();
    let after = store.points_disk_space() + summaries_bytes;
    let points_after = store.approximate_points();
    println!(
        "after compaction:         {after} bytes of history tables ({:.1}× smaller); {points_after} raw points left ({} bytes), {summaries} summaries ({summaries_bytes} bytes, {:.1} bytes each); fjall in all: {} bytes",
        before as f64 / after as f64,
        store.points_disk_space(),
        summaries_bytes as f64 / summaries.max(1) as f64,
        store.disk_space()?
    );
    println!(
        "per key set:              {:.0} bytes now, {:.0} bytes per key-year at this size",
        after as f64 / keys as f64,
        after as f64 / keys as f64 * 365.0 / days
    );
    let folder = |when: &str| {
        let mut parts: Vec<(String, u64)> = std::fs::read_dir(data.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, dir_bytes(&e.path()))
            })
            .collect();
        parts.sort();
        let total: u64 = parts.iter().map(|(_, b)| b).sum();
        // The journal is one preallocated 64 MiB file.
        println!("folder {when:<18} {total} bytes: {parts:?}");
    };
    folder("after compaction:");
    ingest(&url, keys, end, end + 3600.0).await?;
    db.settled().await?;
    store.flush()?;
    store.major_compact()?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    folder("after more writes:");
    drop((db, store));
    server.shutdown().await?;
    folder("after shutdown:");
    let (server, ..) = start_server(&data).await?;
    folder("after a restart:");
    server.shutdown().await?;
    Ok(())
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| dir_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
