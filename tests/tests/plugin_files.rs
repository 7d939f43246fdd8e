//! What the plugins directory may hold: files are read again only when they change, only
//! regular files under the size cap are read at all, nothing in it can hang the watcher or
//! the server's shutdown, and a relative `--plugins` names each file once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use komoku_tests::{Client, ServerProcess, TestServer, WAIT, extra_fixture, wait_for_types};
use serde_json::{Value as Json, json};

fn entry<'a>(types: &'a Json, path: &Path) -> &'a Json {
    &types["files"][path.display().to_string()]
}

fn loads(types: &Json, path: &Path) -> u64 {
    entry(types, path)["loads"].as_u64().unwrap_or(0)
}

fn error<'a>(types: &'a Json, path: &Path) -> &'a str {
    entry(types, path)["last_error"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_unchanged_plugin_file_is_not_read_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().canonicalize()?;
    let good = plugins.join("reload_fixture.wasm");
    let broken = plugins.join("broken.wasm");
    std::fs::copy(extra_fixture("reload_v1.wasm"), &good)?;
    std::fs::copy(extra_fixture("garbage.wasm"), &broken)?;
    let s = TestServer::start_with(|cfg| cfg.plugins_dir = plugins.clone()).await?;
    let mut c = s.client().await?;
    let types = c.request(json!({"types": {}})).await?;
    let first_error = error(&types, &broken).to_string();
    assert!(!first_error.is_empty(), "{types}");

    // Written again: the good file with the same bytes (nothing to reload), the broken one
    // with other garbage (read once more, refused once more, with another error).
    std::fs::copy(extra_fixture("reload_v1.wasm"), &good)?;
    std::fs::write(&broken, b"")?;
    let settled = wait_for_types(&mut c, "the broken file's new error", |t| {
        !error(t, &broken).is_empty() && error(t, &broken) != first_error
    })
    .await?;

    // Idle: nothing changes, so nothing is read, loaded or logged again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let types = c.request(json!({"types": {}})).await?;
    let loaded_at = |t: &Json| t["types"]["reload_fixture"]["loaded_at"].clone();
    println!(
        "after 2 s idle: loaded_at {} -> {}, loads good={} broken={}",
        loaded_at(&settled),
        loaded_at(&types),
        loads(&types, &good),
        loads(&types, &broken),
    );
    assert_eq!(
        loaded_at(&types),
        loaded_at(&settled),
        "reloaded while idle"
    );
    assert_eq!(loads(&types, &good), 1, "same bytes are not loaded again");
    assert_eq!(loads(&types, &broken), 2, "one read per change");
    Ok(())
}

#[tokio::test]
async fn a_plugin_file_over_the_size_cap_is_refused_unread() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().canonicalize()?;
    let big = plugins.join("big.wasm");
    std::fs::write(&big, vec![0u8; 2 << 20])?;
    let s = TestServer::start_with(|cfg| {
        cfg.plugins_dir = plugins.clone();
        cfg.plugin_file_mib = 1;
    })
    .await?;
    let mut c = s.client().await?;
    let types = c.request(json!({"types": {}})).await?;
    println!("big.wasm: {}", error(&types, &big));
    assert!(error(&types, &big).contains("limit"), "{types}");
    Ok(())
}

/// The peak resident memory of a process, from /proc.
fn peak_rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kib << 10)
}

#[tokio::test]
async fn devices_and_fifos_are_refused_and_neither_the_watcher_nor_shutdown_hang() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    let plugins = root.join("plugins");
    std::fs::create_dir(&plugins)?;
    let server = ServerProcess::start_in(
        env!("CARGO_BIN_EXE_komoku-e2e"),
        &root,
        &["--data", "data", "--plugins", "plugins"],
    )?;
    let mut c = Client::connect(&server.url()).await?;

    let zero = plugins.join("zero.wasm");
    let fifo = plugins.join("fifo.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero)?;
    let made = Command::new("mkfifo").arg(&fifo).status()?;
    ensure!(made.success(), "mkfifo failed");
    let types = wait_for_types(&mut c, "both refused", |t| {
        !error(t, &zero).is_empty() && !error(t, &fifo).is_empty()
    })
    .await?;
    println!("zero.wasm: {}", error(&types, &zero));
    println!("fifo.wasm: {}", error(&types, &fifo));
    assert!(error(&types, &zero).contains("not a regular file (a device)"));
    assert!(error(&types, &fifo).contains("not a regular file (a FIFO)"));
    let peak = peak_rss_bytes(server.pid())?;
    println!("server peak memory: {} MiB", peak >> 20);
    assert!(peak < 512 << 20, "peak {} MiB", peak >> 20);

    // Later changes are still picked up.
    std::fs::copy(extra_fixture("reload_v1.wasm"), plugins.join("late.wasm"))?;
    wait_for_types(&mut c, "a plugin added later", |t| {
        t["types"]["reload_fixture"]["version"] == "1.0.0"
    })
    .await?;
    c.close().await?;

    let status = server.terminate(WAIT)?;
    println!("stopped by SIGTERM: {status}");
    assert!(status.success(), "{status}");
    Ok(())
}

#[tokio::test]
async fn with_a_relative_plugins_dir_each_file_has_one_entry_and_removal_retires_its_type()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    let plugins = root.join("plugins");
    std::fs::create_dir(&plugins)?;
    let file = plugins.join("reload_fixture.wasm");
    std::fs::copy(extra_fixture("reload_v1.wasm"), &file)?;
    let server = ServerProcess::start_in(
        env!("CARGO_BIN_EXE_komoku-e2e"),
        &root,
        &["--data", "./data", "--plugins", "./plugins"],
    )?;
    let mut c = Client::connect(&server.url()).await?;

    let entries = |t: &Json| t["files"].as_object().map_or(0, |f| f.len());
    let types = c.request(json!({"types": {}})).await?;
    assert_eq!(entries(&types), 1, "{types}");

    let tmp = plugins.join("reload_fixture.wasm.part");
    std::fs::copy(extra_fixture("reload_v2.wasm"), &tmp)?;
    std::fs::rename(&tmp, &file)?;
    let types = wait_for_types(&mut c, "version 2.0.0", |t| {
        t["types"]["reload_fixture"]["version"] == "2.0.0"
    })
    .await?;
    println!("after a replace: files {}", types["files"]);
    assert_eq!(entries(&types), 1, "{types}");

    std::fs::remove_file(&file)?;
    let types = wait_for_types(&mut c, "the type retired", |t| {
        t["types"]["reload_fixture"].is_null()
    })
    .await?;
    println!("after removal: files {}", types["files"]);
    assert_eq!(entries(&types), 0, "{types}");
    Ok(())
}
