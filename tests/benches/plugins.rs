//! The plugin platform's costs: how long from writing a plugin file to the new version
//! serving, and what one plugin call adds to a put compared with the same type logic called
//! as a plain Rust function (the `numeric` type's crate, compiled natively).
//!
//! `cargo bench -p komoku-tests --bench plugins` (`-- --quick` for a short run).
//! Prints figures; asserts nothing about speed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use komoku::plugins::{KeyOps, Limits, Operation, Plugin};
use komoku::value::{Input, Point, Value};
use komoku_guest::world;
use komoku_tests::Client;
use komoku_type_numeric::Numeric;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

async fn reload_latency(rounds: usize) -> Result<Vec<f64>> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plugins-extra");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("reload_fixture.wasm");
    std::fs::copy(fixtures.join("reload_v1.wasm"), &file)?;
    let data = tempfile::tempdir()?;
    let server = komoku::Server::start(&komoku_tests::config(data.path(), dir.path())).await?;
    let mut c = Client::connect(&format!("ws://{}/", server.local_addr)).await?;
    let mut took = Vec::new();
    for round in 0..rounds {
        let (source, version) = if round % 2 == 0 {
            ("reload_v2.wasm", "2.0.0")
        } else {
            ("reload_v1.wasm", "1.0.0")
        };
        let tmp = file.with_extension("part");
        std::fs::copy(fixtures.join(source), &tmp)?;
        let started = Instant::now();
        std::fs::rename(&tmp, &file)?;
        loop {
            let types = c.request(json!({"types": {}})).await?;
            if types["types"]["reload_fixture"]["version"] == json!(version) {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("version {version} never served");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    server.shutdown().await?;
    took.sort_by(f64::total_cmp);
    Ok(took)
}

/// Nanoseconds per `apply` of the numeric type.
struct CallCosts {
    /// One operation per wasm call.
    single: f64,
    /// Per operation, `batch` operations per wasm call.
    batched: f64,
    /// Per operation, the same batches through the SDK's `apply` compiled natively.
    native: f64,
    batch: usize,
}

fn call_costs(calls: usize, batch: usize) -> Result<CallCosts> {
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/numeric.wasm"))?;
    let plugin = Plugin::load(Path::new("numeric.wasm"), &bytes, Limits::default())?;
    let options = plugin.check_options("{}")?;
    let encoded = plugin.encoded(&options)?;
    let previous = Point {
        time: 1.0,
        value: Value::Number(1.0),
    };
    let singles = (calls / 10).max(1);
    let started = Instant::now();
    for i in 0..singles {
        plugin.apply(
            &options,
            Some(&previous),
            &Operation::Set(Input::Number(i as f64)),
            2.0 + i as f64,
        )?;
    }
    let single = started.elapsed().as_nanos() as f64 / singles as f64;

    let ops: Vec<(Operation, f64)> = (0..batch)
        .map(|i| (Operation::Set(Input::Number(i as f64)), 2.0 + i as f64))
        .collect();
    let rounds = (calls / batch).max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        let results = plugin.apply_batch(&[KeyOps {
            options: &encoded,
            latest: Some(&previous),
            ops: &ops,
        }])?;
        std::hint::black_box(results);
    }
    let batched = started.elapsed().as_nanos() as f64 / (rounds * batch) as f64;

    let guest_ops: Vec<komoku_guest::TimedOperation> = (0..batch)
        .map(|i| komoku_guest::TimedOperation {
            op: komoku_guest::Operation::Set(komoku_guest::Input::Number(i as f64)),
            time: 2.0 + i as f64,
        })
        .collect();
    let guest_previous = komoku_guest::Point {
        time: 1.0,
        value: komoku_guest::Value::Number(1.0),
    };
    let started = Instant::now();
    for _ in 0..rounds {
        // What the export does once the canonical ABI has lifted the arguments.
        let results = world::apply::<Numeric>(vec![komoku_guest::KeyOperations {
            options: encoded.to_vec(),
            latest: Some(guest_previous.clone()),
            ops: guest_ops.clone(),
        }]);
        std::hint::black_box(results);
    }
    let native = started.elapsed().as_nanos() as f64 / (rounds * batch) as f64;
    Ok(CallCosts {
        single,
        batched,
        native,
        batch,
    })
}

async fn put_latency(puts: usize) -> Result<f64> {
    let data = tempfile::tempdir()?;
    let server = komoku::Server::start(&komoku_tests::config(
        data.path(),
        &komoku_tests::fixtures_dir(),
    ))
    .await?;
    let mut c = Client::connect(&format!("ws://{}/", server.local_addr)).await?;
    let started = Instant::now();
    for i in 0..puts {
        c.request(json!({"put": {"key": "n", "value": i}})).await?;
    }
    let each = started.elapsed().as_nanos() as f64 / puts as f64;
    server.shutdown().await?;
    Ok(each)
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let took = reload_latency(if quick { 4 } else { 20 }).await?;
    println!(
        "file write (temp name + rename) to the new version serving, {} swaps: p50 {:.0} ms, max {:.0} ms (debounce {} ms included)",
        took.len(),
        percentile(&took, 0.5),
        percentile(&took, 1.0),
        komoku::plugins::DEBOUNCE.as_millis()
    );
    let costs = call_costs(if quick { 200_000 } else { 2_000_000 }, 1000)?;
    let put = put_latency(if quick { 200 } else { 2000 }).await?;
    let wasm = costs.single;
    let native = costs.native;
    println!(
        "numeric apply, batches of {}: {:.3} µs per operation through the wasm plugin (target <= 0.2), {:.3} µs as the same crate's Rust called natively ({:.1}x)",
        costs.batch,
        costs.batched / 1000.0,
        native / 1000.0,
        costs.batched / native
    );
    println!(
        "numeric apply, one operation per call: {:.3} µs through the wasm plugin",
        wasm / 1000.0
    );
    println!(
        "one put, one client waiting for its ack (fsync included): {:.0} µs; the plugin call's overhead over native is {:.2}% of it",
        put / 1000.0,
        (wasm - native) / put * 100.0
    );
    Ok(())
}
