//! Many keys on one small machine (issue 15), against the real binary as a separate process:
//!
//! 1. server memory per key after creating 10 K / 100 K / 1 M keys (one put each) and again
//!    after a graceful restart, above the same server empty, so the slope shows;
//! 2. restart time with the largest key set plus armed uptime keys that all fall due while
//!    the server is down (killed with SIGKILL), and a check that each due expiry was stored
//!    once, at its exact time;
//! 3. `keys` paging (pattern, limit 1 000, cursor) over the largest key set: every key once,
//!    the time of each page;
//! 4. put→ack latency with puts spread over 100 K keys beside 1 K keys, while background
//!    compaction runs every 5 s, and the compaction runs' cost from `stats`;
//! 5. uptime expiry lateness (p50/p99/max) with 100 K armed keys refreshed every max_time/2;
//! 6. put latency on one key while another key with 1 000 000 points is deleted.
//!
//! `cargo bench -p komoku-tests --bench scale` (`-- --quick`: 10 K / 100 K keys, 10 K armed
//! keys, shorter loads). Prints figures; asserts nothing about speed (it does check that no
//! key is missed or repeated and no expiry is lost or doubled).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use komoku_tests::{Client, ServerProcess, now};
use serde_json::{Value as Json, json};

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");
const CLIENTS: usize = 4;
const PER_FRAME: usize = 1000;

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

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "n {:>7}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
        ms.len(),
        pct(&ms, 0.5),
        pct(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    )
}

/// Writes the config and starts the binary on `data`; returns it and the ms to listening.
fn start(work: &Path, data: &Path, compaction_every: u64) -> Result<(ServerProcess, f64)> {
    let config = work.join("komoku.toml");
    let cache = work.join("cache");
    std::fs::write(
        &config,
        format!(
            "cache_dir = {:?}\nhot_reload = false\ncompaction_interval = {compaction_every}\n",
            cache.to_str().context("utf-8 path")?
        ),
    )?;
    let config = config.to_str().context("utf-8 path")?.to_string();
    let started = Instant::now();
    let server = ServerProcess::start_with_args(BIN, data, &["--config", &config])?;
    Ok((server, started.elapsed().as_secs_f64() * 1e3))
}

/// Sends `make(i)` for `i` in `0..n`, in arrays of [`PER_FRAME`] over [`CLIENTS`]
/// connections; fails on any error reply. Returns seconds.
async fn for_each(
    url: &str,
    n: usize,
    make: impl Fn(usize) -> Json + Clone + Send + 'static,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (url, make) = (url.to_string(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await?;
            let mine: Vec<usize> = (c..n).step_by(CLIENTS).collect();
            for chunk in mine.chunks(PER_FRAME) {
                let reply = client
                    .request(Json::Array(chunk.iter().map(|&i| make(i)).collect()))
                    .await?;
                ensure!(!reply.to_string().contains("\"error\""), "refused: {reply}");
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn key(i: usize) -> String {
    format!("k.{i:07}")
}

async fn stats(url: &str) -> Result<Json> {
    Client::connect(url)
        .await?
        .request(json!({"stats": {}}))
        .await
}

/// Part 1 for one key count: memory after creation and after a graceful restart. Leaves
/// the data folder in `work/data-<n>`.
async fn memory(work: &Path, n: usize) -> Result<()> {
    let data = work.join(format!("data-{n}"));
    // The first start fills the component cache (compiling takes memory a warm start
    // does not): the baseline is a second, warm start, as every restart below is.
    start(work, &data, 0)?
        .0
        .terminate(Duration::from_secs(60))?;
    let (server, _) = start(work, &data, 0)?;
    let url = server.url();
    // A client that connected and asked once: the empty server's baseline.
    stats(&url).await?;
    let empty = rss_mib(server.pid());
    let took = for_each(
        &url,
        n,
        |i| json!({"put": {"key": key(i), "value": i as f64}}),
    )
    .await?;
    let count = stats(&url).await?["keys_count"].as_u64().unwrap_or(0);
    ensure!(count == n as u64, "keys_count {count}, expected {n}");
    let created = rss_mib(server.pid());
    server.terminate(Duration::from_secs(120))?;
    let (server, ms) = start(work, &data, 0)?;
    let url = server.url();
    stats(&url).await?;
    let restarted = rss_mib(server.pid());
    let per = |mib: f64| (mib - empty) * (1 << 20) as f64 / n as f64;
    println!(
        "{n:>9} keys: created in {took:5.1} s ({:>7.0}/s); RSS empty {empty:6.1} MiB, after creation {created:6.1} MiB = {:5.0} B/key; restart {ms:6.0} ms to listening, then {restarted:6.1} MiB = {:5.0} B/key",
        n as f64 / took,
        per(created),
        per(restarted)
    );
    server.terminate(Duration::from_secs(120))?;
    Ok(())
}

/// Part 3: pages through every key matching `k.*`, limit 1 000.
async fn paging(url: &str, n: usize) -> Result<()> {
    let mut client = Client::connect(url).await?;
    let mut seen = HashSet::with_capacity(n);
    let mut after: Option<String> = None;
    let mut ms = Vec::new();
    loop {
        let mut args = json!({"pattern": "k.*", "limit": 1000});
        if let Some(a) = &after {
            args["after"] = json!(a);
        }
        let sent = Instant::now();
        let page = client.request(json!({"keys": args})).await?;
        ms.push(sent.elapsed().as_secs_f64() * 1e3);
        let Json::Object(page) = page else {
            bail!("keys answered {page}");
        };
        if page.is_empty() {
            break;
        }
        for name in page.keys() {
            ensure!(seen.insert(name.clone()), "{name} listed twice");
        }
        after = page.keys().max().cloned();
    }
    ensure!(seen.len() == n, "{} keys listed, expected {n}", seen.len());
    println!(
        "keys paging over {n} keys (pattern k.*, limit 1000): every key once; per page {}",
        summary(ms)
    );
    Ok(())
}

/// Part 2: arms `armed` uptime keys (max_time `max_time`), kills the server, waits until
/// they are all due, restarts, and checks each sampled key's expiry.
async fn restart_with_armed(work: &Path, data: &Path, n: usize, armed: usize) -> Result<()> {
    const MAX_TIME: f64 = 5.0;
    let (server, _) = start(work, data, 0)?;
    let url = server.url();
    for_each(
        &url,
        armed,
        |i| json!({"define": {format!("up.{i:07}"): {"type": "uptime", "max_time": MAX_TIME}}}),
    )
    .await?;
    let armed_at = now();
    for_each(
        &url,
        armed,
        |i| json!({"put": {"key": format!("up.{i:07}"), "value": true}}),
    )
    .await?;
    // Every `true` is acknowledged (durable): kill before any falls due.
    let since_arming = now() - armed_at;
    server.kill9()?;
    println!(
        "armed {armed} uptime keys (max_time {MAX_TIME} s) in {since_arming:.1} s, then SIGKILL"
    );
    tokio::time::sleep(Duration::from_secs_f64(MAX_TIME + 1.0)).await;
    let (server, ms) = start(work, data, 0)?;
    println!(
        "restart with {} keys ({armed} armed uptime keys all due while down): listening in {ms:.0} ms",
        n + armed
    );
    let url = server.url();
    // Each key's history: one `true`, then one `false` exactly max_time later.
    let mut client = Client::connect(&url).await?;
    let step = (armed / 1000).max(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut checked = 0;
    for i in (0..armed).step_by(step) {
        loop {
            let h = client
                .request(json!({"fetch": {"key": format!("up.{i:07}"), "opts": {"since": 0}}}))
                .await?;
            let points = h.as_array().cloned().unwrap_or_default();
            if points.len() < 2 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            ensure!(points.len() == 2, "up.{i:07}: history {h}");
            let t = |p: &Json| p[0].as_f64().unwrap_or(f64::NAN);
            ensure!(
                points[0][1] == json!(true) && points[1][1] == json!(false),
                "up.{i:07}: history {h}"
            );
            ensure!(
                (t(&points[1]) - t(&points[0]) - MAX_TIME).abs() < 1e-5,
                "up.{i:07}: expiry at {} after true at {}",
                t(&points[1]),
                t(&points[0])
            );
            checked += 1;
            break;
        }
    }
    println!("  {checked} sampled keys: each expiry stored once, at its exact time");
    server.terminate(Duration::from_secs(120))?;
    Ok(())
}

/// Part 4: puts spread over `keys` keys at `rate` puts/s for `secs`, each waiting for its
/// ack, with compaction every 5 s. Returns the ack latencies (ms).
async fn put_load(url: &str, keys: usize, rate: f64, secs: f64) -> Result<Vec<f64>> {
    const WRITERS: usize = 16;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await?;
            let every = Duration::from_secs_f64(WRITERS as f64 / rate);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let started = Instant::now();
            let mut i = w;
            let mut ms = Vec::new();
            while started.elapsed().as_secs_f64() < secs {
                tick.tick().await;
                let sent = Instant::now();
                let reply = client
                    .request(json!({"put": {"key": key(i % keys), "value": i as f64}}))
                    .await?;
                ms.push(sent.elapsed().as_secs_f64() * 1e3);
                ensure!(!reply.to_string().contains("\"error\""), "refused: {reply}");
                i += WRITERS * 7919;
            }
            anyhow::Ok(ms)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// Part 5: `armed` uptime keys refreshed every max_time/2 for three rounds, then left to
/// expire; the lateness of the sampled expiry pushes.
async fn lateness(work: &Path, armed: usize) -> Result<()> {
    const MAX_TIME: f64 = 6.0;
    const SAMPLED: usize = 2000;
    let data = work.join("data-timers");
    let (server, _) = start(work, &data, 0)?;
    let url = server.url();
    for_each(
        &url,
        armed,
        |i| json!({"define": {format!("up.{i:07}"): {"type": "uptime", "max_time": MAX_TIME}}}),
    )
    .await?;
    let mut sub = Client::connect(&url).await?;
    let sampled: Vec<usize> = (0..armed).step_by((armed / SAMPLED).max(1)).collect();
    sub.request(Json::Array(
        sampled
            .iter()
            .map(|i| json!({"sub": {"key": format!("up.{i:07}")}}))
            .collect(),
    ))
    .await?;
    for round in 0..3 {
        let round_start = Instant::now();
        for_each(
            &url,
            armed,
            |i| json!({"put": {"key": format!("up.{i:07}"), "value": true}}),
        )
        .await?;
        while sub.maybe_push(Duration::from_millis(1)).await?.is_some() {}
        if round < 2 {
            let left =
                Duration::from_secs_f64(MAX_TIME / 2.0).saturating_sub(round_start.elapsed());
            tokio::time::sleep(left).await;
        }
    }
    let mut late = Vec::with_capacity(sampled.len());
    let deadline = Instant::now() + Duration::from_secs_f64(MAX_TIME * 4.0);
    while late.len() < sampled.len() && Instant::now() < deadline {
        if let Some(push) = sub.maybe_push(Duration::from_millis(500)).await?
            && push["pub"]["value"] == json!(false)
        {
            late.push((now() - push["pub"]["time"].as_f64().unwrap_or(f64::NAN)) * 1e3);
        }
    }
    ensure!(
        late.len() == sampled.len(),
        "{} of {} expiries pushed",
        late.len(),
        sampled.len()
    );
    println!(
        "uptime expiry lateness, {armed} armed keys refreshed every {} s (sample of {}): {}",
        MAX_TIME / 2.0,
        late.len(),
        summary(late)
    );
    server.terminate(Duration::from_secs(60))?;
    Ok(())
}

/// Part 6: a key with `points` points, then put latency on another key before and while it
/// is deleted.
async fn delete_under_load(work: &Path, points: usize) -> Result<()> {
    let data = work.join("data-delete");
    let (server, _) = start(work, &data, 0)?;
    let url = server.url();
    let t0 = now() - points as f64 - 10.0;
    let mut client = Client::connect(&url).await?;
    // One connection, times ascending: appends, not backfill.
    for start in (0..points).step_by(PER_FRAME) {
        let frame: Vec<Json> = (start..(start + PER_FRAME).min(points))
            .map(|i| json!({"put": {"key": "big", "value": (i % 1000) as f64, "time": t0 + i as f64}}))
            .collect();
        let reply = client.request(Json::Array(frame)).await?;
        ensure!(!reply.to_string().contains("\"error\""), "refused: {reply}");
    }
    client
        .request(json!({"put": {"key": "small", "value": 0}}))
        .await?;
    let probe = |url: String, secs: f64| async move {
        let mut c = Client::connect(&url).await?;
        let started = Instant::now();
        let mut ms = Vec::new();
        let mut i = 0;
        while started.elapsed().as_secs_f64() < secs {
            let sent = Instant::now();
            c.request(json!({"put": {"key": "small", "value": i}}))
                .await?;
            ms.push(sent.elapsed().as_secs_f64() * 1e3);
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        anyhow::Ok(ms)
    };
    let before = probe(url.clone(), 2.0).await?;
    let during = tokio::spawn(probe(url.clone(), 3.0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let reply = client.request(json!({"delete": {"key": "big"}})).await?;
    let delete_ms = sent.elapsed().as_secs_f64() * 1e3;
    ensure!(!reply.to_string().contains("\"error\""), "delete: {reply}");
    let during = during.await??;
    println!(
        "put→ack on another key, before the delete: {}",
        summary(before)
    );
    println!(
        "  while a key with {points} points is deleted ({delete_ms:.1} ms to ack the delete): {}",
        summary(during)
    );
    server.terminate(Duration::from_secs(60))?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let work = tempfile::tempdir()?;
    let work = work.path();
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let armed = if quick { 10_000 } else { 100_000 };
    let load_secs = if quick { 20.0 } else { 300.0 };
    println!(
        "scale bench ({} mode)",
        if quick { "quick" } else { "full" }
    );

    // `--part N` runs only part N of the list above (2 and 3 run part 1 first: its data).
    let args: Vec<String> = std::env::args().collect();
    let only: Option<u32> = args
        .iter()
        .position(|a| a == "--part")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let run = |part: u32| only.is_none_or(|p| p == part || (part == 1 && p <= 3));
    let largest = *sizes.last().context("sizes")?;
    let data = work.join(format!("data-{largest}"));
    if run(1) {
        println!("\n1. memory per key (one put each; RSS above the same server empty)");
        for &n in sizes {
            memory(work, n).await?;
        }
    }
    if run(3) {
        println!("\n3. keys paging");
        let (server, _) = start(work, &data, 0)?;
        paging(&server.url(), largest).await?;
        server.terminate(Duration::from_secs(120))?;
    }
    if run(2) {
        println!("\n2. restart");
        restart_with_armed(work, &data, largest, armed).await?;
    }
    if run(4) {
        println!("\n4. put→ack while compaction runs every 5 s ({load_secs} s each)");
    }
    for keys in [1_000, 100_000].into_iter().filter(|_| run(4)) {
        let data = work.join(format!("data-load-{keys}"));
        let (server, _) = start(work, &data, 5)?;
        let url = server.url();
        for_each(&url, keys, |i| json!({"put": {"key": key(i), "value": 0}})).await?;
        // 100 000 keys each written every 10 s = 10 000 puts/s; the same rate on 1 000 keys.
        let ms = put_load(&url, keys, 10_000.0, load_secs).await?;
        let s = stats(&url).await?;
        println!(
            "{keys:>7} keys, 10 000 puts/s offered: put→ack {}; compaction runs {} (last one {} s, interval 5 s)",
            summary(ms),
            s["compaction"]["runs"],
            s["compaction"]["last_run_seconds"]
        );
        server.terminate(Duration::from_secs(120))?;
    }

    if run(5) {
        println!("\n5. timers");
        lateness(work, armed).await?;
    }
    if run(6) {
        println!("\n6. delete");
        delete_under_load(work, if quick { 200_000 } else { 1_000_000 }).await?;
    }
    Ok(())
}
