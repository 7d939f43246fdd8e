//! How long the real `komoku` binary takes from exec to listening, with the built-in types
//! and an empty data folder: compiling every component (no cache, as before the component
//! cache), filling an empty cache, and from a warm cache (what every start after the first
//! one costs).
//!
//! `cargo bench -p komoku-tests --bench startup` (`-- --quick`: fewer runs).
//! Prints figures; asserts nothing about speed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use komoku_tests::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");

/// Starts the server on a fresh empty data folder with `cache_dir` (`""`: no cache) and
/// returns the milliseconds until its "listening" line; then stops it.
fn start_once(work: &Path, run: usize, cache_dir: &str) -> Result<f64> {
    let dir = work.join(format!("run-{run}"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("komoku.toml");
    std::fs::write(
        &config,
        format!("cache_dir = {cache_dir:?}\nhot_reload = false\ncompaction_interval = 0\n"),
    )?;
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("data"))
        .arg("--plugins")
        .arg(dir.join("no-plugins"));
    let started = Instant::now();
    let server = ServerProcess::spawn(command)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    server.terminate(Duration::from_secs(10))?;
    Ok(ms)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 3 } else { 7 };
    let work = tempfile::tempdir()?;
    let cache = work.path().join("cache");
    let cache = cache.to_str().unwrap_or_default();
    let mut run = 0;
    let mut next = || {
        run += 1;
        run
    };

    let mut uncached = Vec::new();
    for _ in 0..runs {
        uncached.push(start_once(work.path(), next(), "")?);
    }
    let filling = start_once(work.path(), next(), cache)?;
    let mut warm = Vec::new();
    for _ in 0..runs {
        warm.push(start_once(work.path(), next(), cache)?);
    }
    let entries = std::fs::read_dir(work.path().join("cache"))?.count();
    let cached_bytes: u64 = std::fs::read_dir(work.path().join("cache"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();

    println!(
        "start-up to listening, built-in types, empty data folder ({runs} runs each, median):"
    );
    println!(
        "  no component cache (compiles every start): {:>8.1} ms   (min {:.1}, max {:.1})",
        median(uncached.clone()),
        uncached.iter().copied().fold(f64::INFINITY, f64::min),
        uncached.iter().copied().fold(0.0, f64::max)
    );
    println!("  first start, empty cache (compiles, keeps): {filling:>6.1} ms");
    println!(
        "  warm cache:                                {:>8.1} ms   (min {:.1}, max {:.1})",
        median(warm.clone()),
        warm.iter().copied().fold(f64::INFINITY, f64::min),
        warm.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "  cache: {entries} compiled components, {:.1} MiB",
        cached_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}
