//! A subscriber that never reads is cut off when its push queue fills, instead of growing the
//! server's memory; the writer and a subscriber that does read carry on.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use komoku_tests::{Client, ServerProcess};
use serde_json::{Value as Json, json};

const CHANGES: usize = 100_000;
const PER_FRAME: usize = 1_000;
/// Each value is ~1 KiB, so 100 000 unsent pushes would hold ~100 MiB; the default push queue
/// (10 000) holds ~10 MiB.
const VALUE_BYTES: usize = 1_000;

/// The resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_and_memory_stays_bounded() -> Result<()> {
    // The same writes without the slow subscriber tell what the storage itself takes.
    let baseline = workload(false).await?;
    let with_slow = workload(true).await?;
    let extra_mib = with_slow.saturating_sub(baseline) / 1024;
    println!(
        "server RSS growth: {} MiB without a slow subscriber, {} MiB with one (+{extra_mib} MiB)",
        baseline / 1024,
        with_slow / 1024
    );
    // Unbounded, the never-read pushes (value and previous value, ~2 KiB each) would hold
    // ~200 MiB; the bounded queue holds ~20 MiB.
    assert!(
        extra_mib < 64,
        "a subscriber that does not read grew the server's memory by {extra_mib} MiB"
    );
    Ok(())
}

/// 100 000 changes to a key with a reading subscriber, and (if `with_slow`) one that never
/// reads. Returns the growth of the server's resident memory (peak minus start) in KiB.
async fn workload(with_slow: bool) -> Result<u64> {
    let data = tempfile::tempdir()?;
    // The real binary with the default limits (push_queue = 10 000).
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_komoku-e2e"), data.path())?;
    let pid = server.pid();

    let mut slow = Client::connect(&server.url()).await?;
    if with_slow {
        slow.request(json!({"sub": {"key": "k"}})).await?;
        // From here on `slow` reads nothing.
    }
    let subscribers = 1 + usize::from(with_slow);

    // A subscriber that reads everything, counting pushes in the background.
    let mut reader = Client::connect(&server.url()).await?;
    reader.request(json!({"sub": {"key": "k"}})).await?;
    let counting = tokio::spawn(async move {
        let mut n = 0usize;
        while n < CHANGES {
            let push = reader.push().await?;
            anyhow::ensure!(push["pub"]["key"] == "k", "unexpected push {push}");
            n += 1;
        }
        anyhow::Ok((n, reader))
    });

    let mut writer = Client::connect(&server.url()).await?;
    assert_eq!(
        writer.request(json!({"stats": {}})).await?["change_notifications_count"],
        json!(subscribers)
    );
    let rss_before = rss_kib(pid)?;
    let pad = "x".repeat(VALUE_BYTES);
    let mut peak = rss_before;
    let mut n = 0usize;
    let started = Instant::now();
    while n < CHANGES {
        let puts: Vec<Json> = (0..PER_FRAME)
            .map(|_| {
                n += 1;
                json!({"put": {"key": "k", "value": format!("{n} {pad}")}})
            })
            .collect();
        let replies = writer.request(Json::Array(puts)).await?;
        assert!(
            replies
                .as_array()
                .is_some_and(|r| r.len() == PER_FRAME && r.iter().all(|a| a == "ack")),
            "a put failed"
        );
        peak = peak.max(rss_kib(pid)?);
    }
    let write_secs = started.elapsed().as_secs_f64();

    // The slow subscriber was dropped: only the reader is still subscribed.
    let mut dropped = false;
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(20) {
        if writer.request(json!({"stats": {}})).await?["change_notifications_count"] == json!(1) {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped,
        "the subscriber that never reads is still subscribed"
    );

    // The reading subscriber got every change and is still connected; the writer works.
    let (received, mut reader) = tokio::time::timeout(Duration::from_secs(60), counting)
        .await
        .context("the reading subscriber did not get every push in time")???;
    assert_eq!(received, CHANGES);
    assert_eq!(
        reader.request(json!({"ping": 1})).await?,
        json!({"pong": 1})
    );
    let last = writer.request(json!({"get": {"key": "k"}})).await?;
    assert!(
        last.as_str()
            .is_some_and(|v| v.starts_with(&format!("{CHANGES} "))),
        "the last value is not the last put"
    );

    println!(
        "{CHANGES} changes of {VALUE_BYTES} B in {write_secs:.1} s, slow subscriber: \
         {with_slow}; server RSS {} MiB -> peak {} MiB",
        rss_before / 1024,
        peak / 1024
    );
    drop(slow);
    Ok(peak.saturating_sub(rss_before))
}
