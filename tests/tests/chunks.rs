//! Raw history in chunks, against `kill -9`: during ingest (heads sealed into chunks and
//! late points merged into sealed chunks as it runs) and during the in-place migration of a
//! format-1 folder. Every acknowledged point is there after a restart, once.
//! (Kills during compaction: `compaction.rs`.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use komoku_tests::{Client, ServerProcess, fixtures_dir, format1, num};
use serde_json::{Value as Json, json};

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");
const T0: f64 = 1_600_000_000.0;

/// Every point of a key as time → value, read in windows under `fetch`'s cap.
async fn history(
    c: &mut Client,
    key: &str,
    from: f64,
    to: f64,
    window: f64,
) -> Result<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut since = from;
    while since < to {
        let until = (since + window).min(to);
        let rows = c
            .request(json!({"fetch": {"key": key, "opts": {"since": since, "until": until}}}))
            .await?;
        let rows = rows.as_array().cloned().unwrap_or_default();
        for r in rows {
            let t = num(&r[0]);
            // `until` is inclusive: the next window starts after it.
            if t < until || until == to {
                out.push((t, num(&r[1])));
            }
        }
        since = until;
    }
    Ok(out)
}

/// The value written at a time: recomputable, so a stray point is caught too.
fn value_at(w: usize, t: f64) -> f64 {
    ((t - T0) * 10.0).round() / 10.0 + w as f64 * 1000.0
}

#[tokio::test]
async fn acknowledged_points_survive_sigkill_while_heads_are_sealed_and_chunks_rewritten()
-> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start(BIN, data.path())?;
    let writers = 4;
    let mut tasks = Vec::new();
    let counts: Vec<Arc<AtomicUsize>> = (0..writers).map(|_| Arc::default()).collect();
    for (w, count) in counts.iter().cloned().enumerate() {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await?;
            let mut acked: Vec<f64> = Vec::new();
            for f in 0.. {
                // Arrays of 500 points a second apart (a head seals every ~8 arrays); every
                // third array also goes back half a second into what is already sealed.
                let base = T0 + (f as f64) * 500.0;
                let mut times: Vec<f64> = (0..500).map(|i| base + i as f64).collect();
                if f % 3 == 2 {
                    times.extend((0..50).map(|i| T0 + (f as f64) * 100.0 + i as f64 + 0.5));
                }
                let frame: Vec<Json> = times
                    .iter()
                    .map(|t| json!({"put": {"key": format!("w{w}"), "value": value_at(w, *t), "time": t}}))
                    .collect();
                let Ok(reply) = c.request(Json::Array(frame)).await else {
                    break; // killed
                };
                if reply.to_string().contains("error") {
                    anyhow::bail!("refused: {reply}");
                }
                acked.extend(times);
                count.store(acked.len(), Ordering::Relaxed);
            }
            anyhow::Ok(acked)
        }));
    }
    // Kill once every key sealed a few chunks, while all still write.
    let began = Instant::now();
    while counts.iter().any(|c| c.load(Ordering::Relaxed) < 13_000) {
        ensure!(
            began.elapsed() < Duration::from_secs(120),
            "ingest too slow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(u64::from(
        began.elapsed().subsec_millis() % 200,
    )))
    .await;
    server.kill9()?;
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await??);
    }

    let server = ServerProcess::start(BIN, data.path())?;
    let mut c = Client::connect(&server.url()).await?;
    for (w, acked) in acked.iter().enumerate() {
        let top = acked.iter().cloned().fold(T0, f64::max) + 1e6;
        let stored = history(&mut c, &format!("w{w}"), T0, top, 4000.0).await?;
        let by_time: BTreeMap<u64, f64> = stored.iter().map(|(t, v)| (t.to_bits(), *v)).collect();
        ensure!(
            by_time.len() == stored.len(),
            "writer {w}: a point is doubled"
        );
        for pair in stored.windows(2) {
            ensure!(pair[0].0 < pair[1].0, "writer {w}: out of order {pair:?}");
        }
        for (t, v) in &stored {
            ensure!(*v == value_at(w, *t), "writer {w}: {t} holds {v}");
        }
        for t in acked {
            ensure!(
                by_time.contains_key(&t.to_bits()),
                "writer {w}: acknowledged {t} is gone"
            );
        }
    }
    Ok(())
}

/// The format-1 folder the migration test starts from, and the points it holds by key.
fn format1_folder(dir: &Path) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let mut keys = Vec::new();
    let mut expect = BTreeMap::new();
    for k in 0..20 {
        let name = format!("m{k}");
        // Seven decimals: read back to the microsecond.
        let points: Vec<(f64, f64)> = (0..20_000)
            .map(|i| {
                (
                    T0 + 5.0 * i as f64 + 0.1234567,
                    (i % 977) as f64 / 10.0 + k as f64,
                )
            })
            .collect();
        keys.push((
            name.clone(),
            "numeric",
            points
                .iter()
                .map(|(t, v)| (*t, format1::Value::Number(*v)))
                .collect(),
        ));
        expect.insert(name, points);
    }
    // Format 1 stepped a repeated time by one float ulp: three points in one microsecond.
    let close = [
        (T0, 1.0),
        (T0.next_up(), 2.0),
        (T0.next_up().next_up(), 3.0),
    ];
    keys.push((
        "close".into(),
        "numeric",
        close
            .iter()
            .map(|(t, v)| (*t, format1::Value::Number(*v)))
            .collect(),
    ));
    expect.insert("close".into(), close.to_vec());
    format1::write(dir, &keys)?;
    Ok(expect)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Starts the server on `data` with info logs, and a thread that reports each stderr line
/// with the moment it came.
fn start_watched(data: &Path) -> Result<(Child, Receiver<(Instant, String)>)> {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--plugins")
        .arg(fixtures_dir())
        .env("RUST_LOG", "komoku=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(err) = stderr {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                let _ = tx.send((Instant::now(), line));
            }
        }
    });
    Ok((child, rx))
}

const MIGRATING: &str = "migrating it in place";
const MIGRATED: &str = "migrated the data folder";

/// Runs one uninterrupted migration: how long after the start its first and last log lines
/// came.
fn time_migration(data: &Path) -> Result<(Duration, Duration)> {
    let began = Instant::now();
    let (mut child, rx) = start_watched(data)?;
    let (mut from, mut to) = (None, None);
    while to.is_none() {
        let (at, line) = rx.recv_timeout(Duration::from_secs(120))?;
        if line.contains(MIGRATING) {
            from = Some(at - began);
        }
        if line.contains(MIGRATED) {
            to = Some(at - began);
        }
    }
    child.kill()?;
    child.wait()?;
    Ok((from.unwrap_or_default(), to.unwrap_or_default()))
}

/// Starts the server on `data` and SIGKILLs it `after` its migration began (so a loaded
/// machine's slow start does not move the kill out of the migration). Returns whether the
/// kill landed inside the migration (begun, not finished).
fn kill_during_migration(data: &Path, after: Duration) -> Result<bool> {
    let (mut child, rx) = start_watched(data)?;
    let mut begun = false;
    while !begun {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok((_, line)) => begun = line.contains(MIGRATING),
            Err(_) => break,
        }
    }
    std::thread::sleep(after);
    child.kill()?; // SIGKILL
    child.wait()?;
    let lines: Vec<String> = rx.try_iter().map(|(_, l)| l).collect();
    Ok(begun && !lines.iter().any(|l| l.contains(MIGRATED)))
}

#[tokio::test]
async fn a_format1_folder_is_migrated_in_place_and_a_kill_during_migration_loses_nothing()
-> Result<()> {
    let pristine = tempfile::tempdir()?;
    let expect = format1_folder(pristine.path())?;

    // An uninterrupted migration, timed; then kills spread over it.
    let whole = tempfile::tempdir()?;
    copy_dir(pristine.path(), whole.path())?;
    let (from, to) = time_migration(whole.path())?;
    let took = to - from;

    let mut interrupted = 0;
    for k in 1..=5u32 {
        let data = tempfile::tempdir()?;
        copy_dir(pristine.path(), data.path())?;
        let after = took.mul_f64(f64::from(k) / 6.0);
        if kill_during_migration(data.path(), after)? {
            interrupted += 1;
        }
        let server = ServerProcess::start(BIN, data.path())?;
        let mut c = Client::connect(&server.url()).await?;
        for (key, points) in &expect {
            let stored = history(&mut c, key, T0 - 1.0, T0 + 200_000.0, 40_000.0).await?;
            ensure!(
                stored.len() == points.len(),
                "{key}: {} points after a kill at {after:?} of {took:?}, {} written",
                stored.len(),
                points.len()
            );
            for ((t, v), (et, ev)) in stored.iter().zip(points) {
                ensure!(v == ev, "{key}: {v} at {t}, {ev} written at {et}");
                ensure!((t - et).abs() <= 2.5e-6, "{key}: time {t}, {et} written");
            }
        }
        server.kill9()?;
    }
    println!("{interrupted} of 5 kills landed during a migration of {took:?}");
    ensure!(
        interrupted >= 3,
        "only {interrupted} kills landed during the migration"
    );
    Ok(())
}
