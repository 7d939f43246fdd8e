//! Custom key types end to end: the `temperature_celsius` examples, one written in Rust
//! (`examples/temperature-rust`) and one in AssemblyScript (`examples/temperature-as`), and
//! the `percent` examples (`examples/percent-rust`, `examples/percent-as`: options of their
//! own and a figure that depends on one), each loaded from a plugins directory of its own and
//! put through the same test as its twin.
//!
//! The components are built by `scripts/build-examples.sh` into `target/examples/`; a
//! missing one fails the test (it is not skipped).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use komoku_tests::TestServer;
use serde_json::json;

/// Where `scripts/build-examples.sh` puts the example components: `examples/` of
/// `$CARGO_TARGET_DIR`, or of the workspace's `target/` (the script's own rule).
fn examples_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"))
        .join("examples")
}

/// A server whose plugins directory holds only `component` (next to the built-in types).
async fn server_with(component: &str) -> Result<(TestServer, tempfile::TempDir)> {
    let built = examples_dir().join(component);
    ensure!(
        built.is_file(),
        "{} is missing: run scripts/build-examples.sh to build the example components",
        built.display()
    );
    let plugins = tempfile::tempdir()?;
    std::fs::copy(&built, plugins.path().join(component))
        .with_context(|| format!("copying {}", built.display()))?;
    let dir = plugins.path().to_path_buf();
    let server = TestServer::start_with(|cfg| cfg.plugins_dir = dir).await?;
    Ok((server, plugins))
}

/// The behaviour both implementations of `temperature_celsius` must share.
async fn temperature_celsius_behaves(component: &str) -> Result<()> {
    let (s, _plugins) = server_with(component).await?;
    let mut c = s.client().await?;

    let types = c.request(json!({"types": {}})).await?;
    let info = &types["types"]["temperature_celsius"];
    ensure!(
        info.is_object(),
        "{component} did not load as temperature_celsius: {types:#}"
    );
    assert_eq!(
        info["default_options"],
        json!({"min_resolution": 0, "same_value_resolution": 0}),
        "{component}"
    );

    let define = json!({"define": {"room": {"type": "temperature_celsius"}}});
    assert_eq!(c.request(define).await?, json!("ack"), "{component}");
    let put = |value| json!({"put": {"key": "room", "value": value}});
    assert_eq!(
        c.request(put(json!(21.5))).await?,
        json!("ack"),
        "{component}"
    );
    assert_eq!(
        c.request(json!({"get": {"key": "room"}})).await?,
        json!(21.5),
        "{component}"
    );
    assert_eq!(
        c.request(put(json!(-300))).await?,
        json!({"error": "below_absolute_zero"}),
        "{component}"
    );
    assert_eq!(
        c.request(put(json!("abc"))).await?,
        json!({"error": "invalid_value"}),
        "{component}"
    );
    assert_eq!(
        c.request(json!({"get": {"key": "room"}})).await?,
        json!(21.5),
        "refusals change nothing ({component})"
    );
    assert_eq!(
        c.request(put(json!("-3.5"))).await?,
        json!("ack"),
        "{component}"
    );
    assert_eq!(
        c.request(json!({"get": {"key": "room"}})).await?,
        json!(-3.5),
        "{component}"
    );

    // 0..60: 10 for 30 s, then 20 for 30 s: a time-weighted mean of 15.
    let define = json!({"define": {"hall": {"type": "temperature_celsius"}}});
    assert_eq!(c.request(define).await?, json!("ack"), "{component}");
    for (time, value) in [(0, 10), (30, 20)] {
        let put = json!({"put": {"key": "hall", "value": value, "time": time}});
        assert_eq!(c.request(put).await?, json!("ack"), "{component}");
    }
    let fetch = json!({"fetch": {"key": "hall", "opts": {"since": 0, "until": 60, "step": "1M"}}});
    assert_eq!(c.request(fetch).await?, json!([[0, 15]]), "{component}");

    // Options are the SDK's resolution options, checked and completed by the plugin.
    let define =
        json!({"define": {"hall": {"type": "temperature_celsius", "min_resolution": "soon"}}});
    assert_eq!(
        c.request(define).await?,
        json!({"error": "invalid_option"}),
        "{component}"
    );

    // The example chooses no retention policy (the SDK's default): the configured one
    // applies, and only the built-in types are listed with one of their own.
    let retention = c.request(json!({"retention": {}})).await?;
    ensure!(
        retention["types"].get("temperature_celsius").is_none()
            && retention["types"].get("numeric").is_some(),
        "{component}: {retention}"
    );
    c.close().await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn temperature_celsius_in_rust_loads_and_behaves() -> Result<()> {
    temperature_celsius_behaves("temperature-rust.wasm").await
}

#[tokio::test]
async fn temperature_celsius_in_assemblyscript_loads_and_behaves() -> Result<()> {
    temperature_celsius_behaves("temperature-as.wasm").await
}

/// The behaviour both implementations of `percent` must share: its own options (checked,
/// completed, driving the store decision) and a figure that depends on one.
async fn percent_behaves(component: &str) -> Result<()> {
    let (s, _plugins) = server_with(component).await?;
    let mut c = s.client().await?;

    let types = c.request(json!({"types": {}})).await?;
    assert_eq!(
        types["types"]["percent"]["default_options"],
        json!({"deadband": 0, "min_resolution": 0, "same_value_resolution": 0, "threshold": 80}),
        "{component}: {types:#}"
    );
    let define = json!({"define": {"cpu": {"type": "percent", "deadband": 2, "threshold": 50}}});
    assert_eq!(c.request(define).await?, json!("ack"), "{component}");

    // 41 is within the deadband of 40: acknowledged, not stored. Stored: 40 (0..20),
    // 60 (20..40), 20 (40..60): 20 s above the threshold of 50, a mean of 40.
    for (time, value) in [(0, 40), (10, 41), (20, 60), (40, 20)] {
        let put = json!({"put": {"key": "cpu", "value": value, "time": time}});
        assert_eq!(c.request(put).await?, json!("ack"), "{component}");
    }
    let query = json!({"query": {"key": "cpu", "since": 0, "until": 60,
                                  "figures": ["time_above", "count", "mean", "max"]}});
    let answer = c.request(query).await?;
    assert_eq!(
        figures(&answer["total"]),
        json!({"time_above": 20, "count": 3, "mean": 40, "max": 60}),
        "{component}: {answer}"
    );
    let query = json!({"query": {"key": "cpu", "since": 0, "until": 60, "step": "30S",
                                  "figures": ["time_above"]}});
    let answer = c.request(query).await?;
    let buckets: Vec<_> = answer["buckets"]
        .as_array()
        .map(|b| b.iter().map(figures).collect())
        .unwrap_or_default();
    assert_eq!(
        serde_json::Value::Array(buckets),
        json!([{"time_above": 10}, {"time_above": 10}]),
        "{component}: {answer}"
    );

    // Another threshold, another figure: the option reaches the summary.
    let define = json!({"define": {"disk": {"type": "percent", "threshold": 10}}});
    assert_eq!(c.request(define).await?, json!("ack"), "{component}");
    for (time, value) in [(0, 40), (20, 60), (40, 20)] {
        let put = json!({"put": {"key": "disk", "value": value, "time": time}});
        assert_eq!(c.request(put).await?, json!("ack"), "{component}");
    }
    let query =
        json!({"query": {"key": "disk", "since": 0, "until": 60, "figures": ["time_above"]}});
    let answer = c.request(query).await?;
    assert_eq!(
        figures(&answer["total"]),
        json!({"time_above": 60}),
        "{component}: {answer}"
    );

    let refused = c
        .request(json!({"put": {"key": "cpu", "value": 120}}))
        .await?;
    assert_eq!(refused, json!({"error": "out_of_range"}), "{component}");
    let define = json!({"define": {"cpu": {"type": "percent", "threshold": "high"}}});
    assert_eq!(
        c.request(define).await?,
        json!({"error": "invalid_option"}),
        "{component}"
    );
    c.close().await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn percent_in_rust_loads_and_behaves() -> Result<()> {
    percent_behaves("percent-rust.wasm").await
}

#[tokio::test]
async fn percent_in_assemblyscript_loads_and_behaves() -> Result<()> {
    percent_behaves("percent-as.wasm").await
}

/// A bucket or total of a `query` answer without its span (`start`, `end`, `coverage`): the
/// figures alone.
fn figures(bucket: &serde_json::Value) -> serde_json::Value {
    let mut figures = bucket.as_object().cloned().unwrap_or_default();
    for span in ["start", "end", "coverage"] {
        figures.remove(span);
    }
    serde_json::Value::Object(figures)
}
