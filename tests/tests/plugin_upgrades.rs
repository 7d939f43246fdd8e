//! New versions of a type that has keys: a version that cannot take the keys' stored options
//! is refused (hot or at start-up) and never stops the server, one that migrates them takes
//! them, and a key's options follow the version serving it the same way at a hot load and at
//! start-up.
//!
//! The fixture type `options_fixture`: version 1.0.0 has the options `deadband` and `scale`
//! (default 1) and stores values times `scale`; version 2.0.0 (`options_v2.wasm`) drops
//! `deadband` and cannot migrate it; version 2.1.0 (`options_v2_migrates.wasm`) renames it
//! `hysteresis` and migrates it. Both versions 2 change the default `scale` to 10.

use std::path::{Path, PathBuf};

use anyhow::Result;
use komoku_tests::{Client, TestServer, extra_fixture, wait_for_types};
use serde_json::{Value as Json, json};
use tempfile::TempDir;

/// A plugins dir holding `fixture` as `options_fixture.wasm`.
fn plugins_with(fixture: &str) -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().canonicalize()?.join("options_fixture.wasm");
    std::fs::copy(extra_fixture(fixture), &file)?;
    Ok((dir, file))
}

/// Replaces `file` the safe way: write a temp name, then rename over it.
fn replace_atomically(file: &Path, with: &Path) -> Result<()> {
    let tmp = file.with_extension("wasm.part");
    std::fs::copy(with, &tmp)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

async fn start(data: Option<&Path>, plugins: &Path) -> Result<TestServer> {
    TestServer::start_with(|cfg| {
        if let Some(data) = data {
            cfg.data_dir = data.to_path_buf();
        }
        cfg.plugins_dir = plugins.to_path_buf();
    })
    .await
}

fn version(types: &Json) -> &Json {
    &types["types"]["options_fixture"]["version"]
}

fn file_error<'a>(types: &'a Json, file: &Path) -> &'a str {
    types["files"][file.display().to_string()]["last_error"]
        .as_str()
        .unwrap_or_default()
}

async fn put(c: &mut Client, key: &str, value: f64) -> Result<Json> {
    c.request(json!({"put": {"key": key, "value": value}}))
        .await
}

async fn stored_options(c: &mut Client, key: &str) -> Result<Json> {
    Ok(c.request(json!({"keys": {}})).await?[key]["opts"].clone())
}

#[tokio::test]
async fn a_version_that_cannot_take_the_keys_options_is_refused_and_never_stops_the_server()
-> Result<()> {
    let (dir, file) = plugins_with("options_v1.wasm")?;
    let s = start(None, dir.path()).await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {
        "room.temp": {"type": "options_fixture", "deadband": 0.5},
        "room.plain": {"type": "options_fixture"},
    }}))
    .await?;

    // Hot: refused, with the reason and the key; version 1 keeps serving both keys.
    replace_atomically(&file, &extra_fixture("options_v2.wasm"))?;
    let types = wait_for_types(&mut c, "the refusal of version 2", |t| {
        !file_error(t, &file).is_empty()
    })
    .await?;
    let error = file_error(&types, &file);
    println!("hot load refused: {error}");
    assert!(error.contains("deadband"), "{error}");
    assert!(error.contains("room.temp"), "{error}");
    assert!(!error.contains("room.plain"), "it fits: {error}");
    assert_eq!(version(&types), "1.0.0");
    assert_eq!(put(&mut c, "room.temp", 3.0).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"get": {"key": "room.temp"}})).await?,
        json!(3)
    );
    c.close().await?;
    let data = s.stop().await?;

    // At start-up: the server starts; the file is refused again and the last version that
    // loaded from it (its last-known-good copy) serves.
    let s = start(Some(data.path()), dir.path()).await?;
    let mut c = s.client().await?;
    let types = c.request(json!({"types": {}})).await?;
    println!(
        "restart: version {}, file error: {}",
        version(&types),
        file_error(&types, &file)
    );
    assert_eq!(version(&types), "1.0.0");
    assert!(file_error(&types, &file).contains("deadband"));
    assert_eq!(put(&mut c, "room.temp", 4.0).await?, json!("ack"));
    c.close().await?;
    s.stop().await?;

    // At start-up with no version that fits: the server starts, the type is unavailable
    // (why is in `types`) and its keys answer unknown_type, their data kept...
    std::fs::remove_dir_all(data.path().join("plugins.good"))?;
    let s = start(Some(data.path()), dir.path()).await?;
    let mut c = s.client().await?;
    let types = c.request(json!({"types": {}})).await?;
    let why = types["unavailable"]["options_fixture"]
        .as_str()
        .unwrap_or_default();
    println!("restart without a fitting version: unavailable: {why}");
    assert!(
        why.contains("deadband") && why.contains("room.temp"),
        "{types}"
    );
    assert_eq!(version(&types), &Json::Null);
    assert_eq!(
        put(&mut c, "room.temp", 5.0).await?,
        json!({"error": "unknown_type"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "room.temp"}})).await?,
        json!(4)
    );

    // ... until a version that fits appears.
    replace_atomically(&file, &extra_fixture("options_v2_migrates.wasm"))?;
    let types = wait_for_types(&mut c, "version 2.1.0", |t| version(t) == "2.1.0").await?;
    assert_eq!(types["unavailable"], json!({}));
    assert_eq!(put(&mut c, "room.temp", 5.0).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"get": {"key": "room.temp"}})).await?,
        json!(50),
        "version 2's default scale"
    );
    assert_eq!(
        stored_options(&mut c, "room.temp").await?,
        json!({"hysteresis": 0.5})
    );
    drop(data);
    Ok(())
}

#[tokio::test]
async fn a_version_that_migrates_options_takes_the_keys_and_stores_their_new_options() -> Result<()>
{
    let (dir, file) = plugins_with("options_v1.wasm")?;
    let s = start(None, dir.path()).await?;
    let mut c = s.client().await?;
    c.request(
        json!({"define": {"room.temp": {"type": "options_fixture", "deadband": 0.5, "scale": 2}}}),
    )
    .await?;
    assert_eq!(put(&mut c, "room.temp", 3.0).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"get": {"key": "room.temp"}})).await?,
        json!(6)
    );

    replace_atomically(&file, &extra_fixture("options_v2_migrates.wasm"))?;
    let types = wait_for_types(&mut c, "version 2.1.0", |t| version(t) == "2.1.0").await?;
    assert_eq!(file_error(&types, &file), "");
    let migrated = stored_options(&mut c, "room.temp").await?;
    println!("hot: migrated options {migrated}");
    assert_eq!(migrated, json!({"hysteresis": 0.5, "scale": 2}));
    assert_eq!(put(&mut c, "room.temp", 4.0).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"get": {"key": "room.temp"}})).await?,
        json!(8)
    );
    c.close().await?;
    let data = s.stop().await?;

    let s = start(Some(data.path()), dir.path()).await?;
    let mut c = s.client().await?;
    let migrated = stored_options(&mut c, "room.temp").await?;
    println!("after a restart: stored options {migrated}");
    assert_eq!(migrated, json!({"hysteresis": 0.5, "scale": 2}));
    assert_eq!(put(&mut c, "room.temp", 5.0).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"get": {"key": "room.temp"}})).await?,
        json!(10)
    );
    drop(data);
    Ok(())
}

#[tokio::test]
async fn a_hot_swap_that_changes_a_default_applies_to_existing_keys_at_once() -> Result<()> {
    let (dir, file) = plugins_with("options_v1.wasm")?;
    let s = start(None, dir.path()).await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"plain": {"type": "options_fixture"}}}))
        .await?;
    assert_eq!(put(&mut c, "plain", 3.0).await?, json!("ack"));
    assert_eq!(c.request(json!({"get": {"key": "plain"}})).await?, json!(3));

    // Version 2 drops an option this key was not given, and its default scale is 10.
    replace_atomically(&file, &extra_fixture("options_v2.wasm"))?;
    wait_for_types(&mut c, "version 2.0.0", |t| version(t) == "2.0.0").await?;
    let hot = put(&mut c, "plain", 3.0).await?;
    let hot_value = c.request(json!({"get": {"key": "plain"}})).await?;
    println!("after the hot swap: put {hot}, value {hot_value}");
    assert_eq!(hot, json!("ack"));
    assert_eq!(hot_value, json!(30));
    c.close().await?;
    let data = s.stop().await?;

    // A restart changes nothing.
    let s = start(Some(data.path()), dir.path()).await?;
    let mut c = s.client().await?;
    assert_eq!(put(&mut c, "plain", 4.0).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"get": {"key": "plain"}})).await?,
        json!(40)
    );
    drop(data);
    Ok(())
}

#[tokio::test]
async fn a_key_whose_type_appears_after_start_up_takes_writes() -> Result<()> {
    let (dir, file) = plugins_with("options_v1.wasm")?;
    let s = start(None, dir.path()).await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"scaled": {"type": "options_fixture", "scale": 2}}}))
        .await?;
    assert_eq!(put(&mut c, "scaled", 1.0).await?, json!("ack"));
    c.close().await?;
    let data = s.stop().await?;

    // Restarted without the plugin: the key waits for its type.
    let empty = tempfile::tempdir()?;
    let s = start(Some(data.path()), empty.path()).await?;
    let mut c = s.client().await?;
    assert_eq!(
        put(&mut c, "scaled", 2.0).await?,
        json!({"error": "unknown_type"})
    );
    let late = empty.path().canonicalize()?.join("options_fixture.wasm");
    std::fs::copy(&file, &late)?;
    wait_for_types(&mut c, "version 1.0.0", |t| version(t) == "1.0.0").await?;
    let reply = put(&mut c, "scaled", 3.0).await?;
    let value = c.request(json!({"get": {"key": "scaled"}})).await?;
    println!("after its type appeared: put {reply}, value {value}");
    assert_eq!(reply, json!("ack"));
    assert_eq!(value, json!(6), "its own scale");
    drop((data, dir));
    Ok(())
}
