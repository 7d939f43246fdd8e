//! The plugin platform end to end: hot reload under load, broken uploads refused, removal and
//! restore, restart after a broken upload, and the sandbox (deadline, memory cap, garbage).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use komoku_tests::{Client, TestServer};
use serde_json::json;
use tempfile::TempDir;

fn extra(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/plugins-extra")
        .join(name)
}

/// A plugins dir holding `reload_v1.wasm` as `reload_fixture.wasm`.
fn plugins_with_v1() -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("reload_fixture.wasm");
    std::fs::copy(extra("reload_v1.wasm"), &file)?;
    Ok((dir, file))
}

/// Replaces `file` the safe way: write a temp name, then rename over it.
fn replace_atomically(file: &Path, with: &Path) -> Result<()> {
    let tmp = file.with_extension("wasm.part");
    std::fs::copy(with, &tmp)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

async fn type_version(c: &mut Client, name: &str) -> Result<Option<String>> {
    let types = c.request(json!({"types": {}})).await?;
    Ok(types["types"][name]["version"].as_str().map(str::to_string))
}

async fn wait_for_version(c: &mut Client, name: &str, version: &str) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if type_version(c, name).await?.as_deref() == Some(version) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{name} never reached version {version}")
}

async fn file_error(c: &mut Client, file: &Path) -> Result<Option<String>> {
    let types = c.request(json!({"types": {}})).await?;
    Ok(types["files"][file.display().to_string()]["last_error"]
        .as_str()
        .map(str::to_string))
}

#[tokio::test]
async fn replacing_a_plugin_under_load_fails_no_request_and_the_new_behaviour_follows() -> Result<()>
{
    let (dir, file) = plugins_with_v1()?;
    let s = TestServer::start_with(|cfg| cfg.plugins_dir = dir.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    assert_eq!(
        type_version(&mut c, "reload_fixture").await?.as_deref(),
        Some("1.0.0")
    );
    for k in 0..16 {
        c.request(json!({"define": {format!("k{k}"): {"type": "reload_fixture"}}}))
            .await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for k in 0..16 {
        let (url, stop, done) = (s.url(), stop.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await?;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reply = c
                    .request(json!({"put": {"key": format!("k{k}"), "value": i}}))
                    .await?;
                anyhow::ensure!(reply == json!("ack"), "put failed during the swap: {reply}");
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace_atomically(&file, &extra("reload_v2.wasm"))?;
    wait_for_version(&mut c, "reload_fixture", "2.0.0").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    assert!(done.load(Ordering::Relaxed) > 100, "the load was real");

    // v2 multiplies what it stores by 10.
    c.request(json!({"put": {"key": "k0", "value": 3}})).await?;
    assert_eq!(c.request(json!({"get": {"key": "k0"}})).await?, json!(30));
    Ok(())
}

#[tokio::test]
async fn a_plain_overwrite_is_picked_up_too() -> Result<()> {
    let (dir, file) = plugins_with_v1()?;
    let s = TestServer::start_with(|cfg| cfg.plugins_dir = dir.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    std::fs::write(&file, std::fs::read(extra("reload_v2.wasm"))?)?;
    wait_for_version(&mut c, "reload_fixture", "2.0.0").await?;
    Ok(())
}

#[tokio::test]
async fn broken_uploads_are_refused_and_the_old_version_keeps_serving() -> Result<()> {
    let (dir, file) = plugins_with_v1()?;
    let s = TestServer::start_with(|cfg| cfg.plugins_dir = dir.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"r": {"type": "reload_fixture"}}}))
        .await?;
    for (broken, says) in [
        ("garbage.wasm", "not a valid component"),
        ("wrong_version.wasm", "rebuild"),
        ("trap_on_load.wasm", "info"),
        ("wrong_world.wasm", "key-type world"),
    ] {
        if broken == "wrong_world.wasm" {
            // A valid component that exports nothing of the key-type world.
            std::fs::write(
                dir.path().join("wrong_world.src"),
                wat::parse_str("(component)")?,
            )?;
            replace_atomically(&file, &dir.path().join("wrong_world.src"))?;
        } else {
            replace_atomically(&file, &extra(broken))?;
        }
        let started = Instant::now();
        let error = loop {
            if let Some(e) = file_error(&mut c, &file).await? {
                break e;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "{broken} was never reported"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(error.contains(says), "{broken}: {error}");
        assert_eq!(
            type_version(&mut c, "reload_fixture").await?.as_deref(),
            Some("1.0.0"),
            "{broken}"
        );
        assert_eq!(
            c.request(json!({"put": {"key": "r", "value": 2}})).await?,
            json!("ack")
        );
        assert_eq!(
            c.request(json!({"get": {"key": "r"}})).await?,
            json!(2),
            "v1 still serves after {broken}"
        );
        // Back to a good file before the next broken one, so each error is fresh.
        replace_atomically(&file, &extra("reload_v1.wasm"))?;
        let started = Instant::now();
        while file_error(&mut c, &file).await?.is_some() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the good file was not reloaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn removing_a_plugin_makes_its_keys_refuse_writes_and_putting_it_back_restores_them()
-> Result<()> {
    let (dir, file) = plugins_with_v1()?;
    let s = TestServer::start_with(|cfg| cfg.plugins_dir = dir.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"r": {"type": "reload_fixture"}}}))
        .await?;
    c.request(json!({"put": {"key": "r", "value": 1, "time": 100}}))
        .await?;
    std::fs::remove_file(&file)?;
    let started = Instant::now();
    while type_version(&mut c, "reload_fixture").await?.is_some() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the removal was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        c.request(json!({"put": {"key": "r", "value": 2}})).await?,
        json!({"error": "unknown_type"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "r"}})).await?,
        json!(1),
        "its data stays"
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "r"}})).await?,
        json!([[100, 1]]),
        "raw history needs no plugin"
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "r", "opts": {"since": 0, "until": 200, "step": "1M"}}}))
            .await?,
        json!({"error": "unknown_type"}),
        "summaries do"
    );
    assert_eq!(
        c.request(json!({"keys": {}})).await?["r"]["type"],
        json!("reload_fixture")
    );

    std::fs::copy(extra("reload_v1.wasm"), &file)?;
    wait_for_version(&mut c, "reload_fixture", "1.0.0").await?;
    assert_eq!(
        c.request(json!({"put": {"key": "r", "value": 2, "time": 200}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "r"}})).await?,
        json!([[100, 1], [200, 2]])
    );
    Ok(())
}

#[tokio::test]
async fn a_restart_after_a_broken_upload_serves_the_last_known_good_version() -> Result<()> {
    let (dir, file) = plugins_with_v1()?;
    let s = TestServer::start_with(|cfg| cfg.plugins_dir = dir.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"r": {"type": "reload_fixture"}}}))
        .await?;
    replace_atomically(&file, &extra("garbage.wasm"))?;
    let started = Instant::now();
    while file_error(&mut c, &file).await?.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the broken upload was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.close().await?;
    let data = s.stop().await?;

    let s = TestServer::start_with(|cfg| {
        cfg.data_dir = data.path().to_path_buf();
        cfg.plugins_dir = dir.path().to_path_buf();
    })
    .await?;
    let mut c = s.client().await?;
    assert_eq!(
        type_version(&mut c, "reload_fixture").await?.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "r", "value": 5}})).await?,
        json!("ack")
    );
    drop(data);
    Ok(())
}

/// A server with one extra fixture loaded, a short deadline and a small memory cap.
async fn sandboxed(fixture: &str) -> Result<(TestServer, TempDir)> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(extra(fixture), dir.path().join(fixture))?;
    let s = TestServer::start_with(|cfg| {
        cfg.plugins_dir = dir.path().to_path_buf();
        cfg.plugin_deadline_ms = 200;
        cfg.plugin_memory_mib = 32;
    })
    .await?;
    Ok((s, dir))
}

fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * 4096)
}

#[tokio::test]
async fn an_endless_loop_costs_one_error_reply_within_the_deadline() -> Result<()> {
    let (s, _dir) = sandboxed("loop_fixture.wasm").await?;
    let mut c = s.client().await?;
    let mut other = s.client().await?;
    c.request(json!({"define": {"l": {"type": "loop_fixture"}}}))
        .await?;
    assert_eq!(
        c.request(json!({"put": {"key": "l", "value": 1}})).await?,
        json!("ack")
    );
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(
            c.request(json!({"put": {"key": "l", "value": 666}}))
                .await?,
            json!({"error": "plugin_failed"})
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "the 200 ms deadline took {took:?}"
        );
        assert_eq!(
            other
                .request(json!({"put": {"key": "n", "value": 1}}))
                .await?,
            json!("ack")
        );
    }
    assert_eq!(
        c.request(json!({"put": {"key": "l", "value": 2}})).await?,
        json!("ack")
    );
    Ok(())
}

#[tokio::test]
async fn a_memory_hog_hits_its_cap_and_the_server_stays_bounded() -> Result<()> {
    let (s, _dir) = sandboxed("hog_fixture.wasm").await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"h": {"type": "hog_fixture"}}}))
        .await?;
    c.request(json!({"put": {"key": "h", "value": 1}})).await?;
    let before = rss_bytes()?;
    for _ in 0..20 {
        assert_eq!(
            c.request(json!({"put": {"key": "h", "value": 666}}))
                .await?,
            json!({"error": "plugin_failed"})
        );
    }
    let grown = rss_bytes()?.saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "20 hogs under a 32 MiB cap grew the process by {} MiB",
        grown >> 20
    );
    assert_eq!(
        c.request(json!({"put": {"key": "h", "value": 2}})).await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "n", "value": 2}})).await?,
        json!("ack")
    );
    Ok(())
}

#[tokio::test]
async fn garbage_output_from_a_plugin_is_an_error_reply_not_stored_data() -> Result<()> {
    let (s, _dir) = sandboxed("garbage_fixture.wasm").await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"g": {"type": "garbage_fixture"}}}))
        .await?;
    c.request(json!({"put": {"key": "g", "value": 1, "time": 10}}))
        .await?;
    assert_eq!(
        c.request(json!({"put": {"key": "g", "value": 666}}))
            .await?,
        json!({"error": "plugin_failed"}),
        "a NaN value"
    );
    assert_eq!(c.request(json!({"get": {"key": "g"}})).await?, json!(1));
    let stepped = c
        .request(json!({"fetch": {"key": "g", "opts": {"since": 0, "until": 60, "step": "1M"}}}))
        .await?;
    assert_eq!(
        stepped,
        json!({"error": "plugin_failed"}),
        "wrong summary count / non-JSON render"
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "g"}})).await?,
        json!([[10, 1]]),
        "raw history is unaffected"
    );
    Ok(())
}

/// The puts and the day's summary a numeric key answers with, on `s`.
async fn numeric_answers(s: &TestServer) -> Result<(Vec<serde_json::Value>, serde_json::Value)> {
    let mut c = s.client().await?;
    c.request(json!({"define": {"t": {"type": "numeric", "same_value_resolution": 5}}}))
        .await?;
    let mut replies = Vec::new();
    for (time, value) in [
        (100.0, json!(1)),
        (102.0, json!(1)),
        (110.0, json!("2.5")),
        (120.0, json!(4)),
    ] {
        replies.push(
            c.request(json!({"put": {"key": "t", "value": value, "time": time}}))
                .await?,
        );
    }
    replies.push(
        c.request(json!({"put": {"key": "t", "value": "x", "time": 130.0}}))
            .await?,
    );
    let summary = c
        .request(json!({"query": {"key": "t", "since": 100, "until": 140}}))
        .await?;
    Ok((replies, summary))
}

/// A plugin built for komoku:types@0.1.0 (the numeric plugin as committed before 0.2.0)
/// loads through the adapter, serves its type, and answers exactly as today's numeric.
#[tokio::test]
async fn a_plugin_built_for_the_previous_contract_answers_like_the_new_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let old = dir.path().join("numeric-0.1.0.wasm");
    std::fs::copy(extra("numeric-0.1.0.wasm"), &old)?;
    let s = TestServer::start_with(|cfg| cfg.plugins_dir = dir.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    let types = c.request(json!({"types": {}})).await?;
    assert_eq!(
        types["types"]["numeric"]["source"],
        json!(old.display().to_string()),
        "the 0.1.0 file serves numeric: {types}"
    );
    let through_adapter = numeric_answers(&s).await?;
    let fresh = TestServer::start().await?;
    let native = numeric_answers(&fresh).await?;
    assert_eq!(through_adapter, native);
    assert_eq!(
        through_adapter.0[1],
        json!("ack"),
        "a close repeat is acked"
    );
    assert_eq!(
        through_adapter.0[4]["error"],
        json!("invalid_value"),
        "{:?}",
        through_adapter.0
    );
    assert!(
        through_adapter.1["total"]["mean"].is_number(),
        "{}",
        through_adapter.1
    );
    Ok(())
}

/// While one connection's plugin call runs for its whole deadline, another connection is
/// answered: plugin calls do not hold the runtime's only worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_long_plugin_call_does_not_keep_other_connections_waiting() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        extra("loop_fixture.wasm"),
        dir.path().join("loop_fixture.wasm"),
    )?;
    let s = TestServer::start_with(|cfg| {
        cfg.plugins_dir = dir.path().to_path_buf();
        cfg.plugin_deadline_ms = 3000;
    })
    .await?;
    let mut c = s.client().await?;
    let mut other = s.client().await?;
    c.request(json!({"define": {"l": {"type": "loop_fixture"}}}))
        .await?;
    let finished = Arc::new(AtomicBool::new(false));
    let spinning = {
        let finished = finished.clone();
        tokio::spawn(async move {
            let reply = c.request(json!({"put": {"key": "l", "value": 666}})).await;
            finished.store(true, Ordering::SeqCst);
            reply
        })
    };
    // Let the spinning put reach the plugin (a head start, not a measurement).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        other
            .request(json!({"put": {"key": "n", "value": 1}}))
            .await?,
        json!("ack")
    );
    assert!(
        !finished.load(Ordering::SeqCst),
        "the other connection was answered only after the spinning call ended"
    );
    assert_eq!(spinning.await??, json!({"error": "plugin_failed"}));
    Ok(())
}
