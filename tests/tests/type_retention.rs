//! Per-type default retention, end to end: each key type's plugin names the policy of its
//! keys (`default-retention`), which ranks below a key's own policy and patterns and above
//! the configured `[retention]`; a plugin built before that export existed still loads and
//! its keys follow the configured default; a plugin naming an invalid policy is refused.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use komoku_tests::{Client, TestServer, now};
use serde_json::{Value as Json, json};

const DAY: f64 = 86_400.0;
const HOUR: f64 = 3_600.0;

fn extra(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/plugins-extra")
        .join(name)
}

/// The fixture kept as built before the WIT gained `default-retention`.
const OLD_PLUGIN: &str = "reload_v1-before-default-retention.wasm";

/// Whether a component's bytes name the `default-retention` export.
fn names_default_retention(bytes: &[u8]) -> bool {
    let name = b"default-retention";
    bytes.windows(name.len()).any(|w| w == name)
}

/// A server whose plugins directory holds `files` (fixtures of plugins-extra), next to the
/// built-in types, with a configured default unlike every built-in type's:
/// raw 3 days, then 1-day summaries forever.
async fn server_with(files: &[&str]) -> Result<(TestServer, tempfile::TempDir)> {
    let plugins = tempfile::tempdir()?;
    for file in files {
        std::fs::copy(extra(file), plugins.path().join(file))?;
    }
    let dir = plugins.path().to_path_buf();
    let configured =
        komoku::retention::PolicySpec::from_json(&json!({"raw": "3d", "tiers": [["1d", null]]}))?;
    let server = TestServer::start_with(|cfg| {
        cfg.plugins_dir = dir;
        cfg.retention = configured;
    })
    .await?;
    Ok((server, plugins))
}

/// Puts a point every hour over the 20 days before now.
async fn fill(c: &mut Client, key: &str, value: impl Fn(u64) -> Json) -> Result<()> {
    let start = now() - 20.0 * DAY;
    let puts: Vec<Json> = (0..20 * 24)
        .map(|k| json!({"put": {"key": key, "value": value(k), "time": start + k as f64 * HOUR}}))
        .collect();
    let replies = c.request(Json::Array(puts)).await?;
    ensure!(
        replies
            .as_array()
            .is_some_and(|r| r.iter().all(|a| *a == json!("ack"))),
        "puts refused: {replies}"
    );
    Ok(())
}

/// The `resolution` of daily buckets over days 18 to 8 before now.
async fn resolution(c: &mut Client, key: &str) -> Result<Json> {
    let today = (now() / DAY).floor() * DAY;
    let answer = c
        .request(json!({"query": {"key": key, "since": today - 18.0 * DAY,
                                  "until": today - 8.0 * DAY, "step": "1d"}}))
        .await?;
    ensure!(answer.get("resolution").is_some(), "{key}: {answer}");
    Ok(answer["resolution"].clone())
}

#[tokio::test]
async fn each_key_follows_its_types_default_below_patterns_and_above_the_config() -> Result<()> {
    let old = std::fs::read(extra(OLD_PLUGIN))?;
    ensure!(
        !names_default_retention(&old),
        "{OLD_PLUGIN} must stay as built before default-retention existed"
    );
    ensure!(
        names_default_retention(&std::fs::read(extra("reload_v1.wasm"))?),
        "the rebuilt reload_v1.wasm exports default-retention (else the check above means nothing)"
    );
    let (s, _plugins) = server_with(&[OLD_PLUGIN]).await?;
    let mut c = s.client().await?;
    let defs = json!({"define": {
        "temp": {"type": "numeric"},
        "door": {"type": "boolean"},
        "pinned.door": {"type": "boolean"},
        "old": {"type": "reload_fixture"},
    }});
    assert_eq!(c.request(defs).await?, json!("ack"));
    let pattern = json!({"retention": {"key": "pinned.*", "raw": "2d", "tiers": [["1H", null]]}});
    assert_eq!(c.request(pattern).await?, json!("ack"));
    fill(&mut c, "temp", |k| json!(k % 17)).await?;
    fill(&mut c, "door", |k| json!(k % 5 == 0)).await?;
    fill(&mut c, "pinned.door", |k| json!(k % 5 == 0)).await?;
    fill(&mut c, "old", |k| json!(k % 17)).await?;

    let report = c.request(json!({"compact": {}})).await?;
    assert_eq!(
        report["keys"],
        json!(3),
        "temp, pinned.door and old compact: {report}"
    );

    // numeric's own default: raw 7 days, then 1-minute summaries for 30 days.
    assert_eq!(resolution(&mut c, "temp").await?, json!("1M"));
    // boolean's: raw 90 days, so nothing of 20 days is compacted...
    assert_eq!(resolution(&mut c, "door").await?, json!("raw"));
    let late = |key: &str| json!({"put": {"key": key, "value": true, "time": now() - 10.0 * DAY}});
    assert_eq!(c.request(late("door")).await?, json!("ack"));
    // ...unless a pattern says otherwise (raw 2 days, then hours).
    assert_eq!(resolution(&mut c, "pinned.door").await?, json!("1H"));
    assert_eq!(
        c.request(late("pinned.door")).await?,
        json!({"error": "compacted"})
    );
    // A plugin without the export: the configured default (raw 3 days, then days).
    assert_eq!(resolution(&mut c, "old").await?, json!("1d"));

    // The listing: the configured default, and the types that chose one (not the old one).
    let listed = c.request(json!({"retention": {}})).await?;
    assert_eq!(
        listed["default"],
        json!({"raw": "3d", "tiers": [["1d", null]]})
    );
    let gauge = json!({"raw": "7d", "tiers": [["1M", "30d"], ["1H", "2y"], ["1d", null]]});
    assert_eq!(
        listed["types"],
        json!({
            "numeric": gauge,
            "counter": gauge,
            "decimal": gauge,
            "meter": gauge,
            "boolean": {"raw": "90d", "tiers": [["1H", "2y"], ["1d", null]]},
            "uptime": {"raw": "30d", "tiers": [["1H", "2y"], ["1d", null]]},
            "string": {"raw": "90d", "tiers": [["1H", "2y"], ["1d", null]]},
        }),
        "{listed}"
    );
    assert_eq!(
        listed["policies"],
        json!({"pinned.*": {"raw": "2d", "tiers": [["1H", null]]}})
    );
    Ok(())
}

#[tokio::test]
async fn a_plugin_naming_an_invalid_default_policy_is_refused_at_load() -> Result<()> {
    let (s, plugins) = server_with(&["bad_retention.wasm"]).await?;
    let mut c = s.client().await?;
    let types = c.request(json!({"types": {}})).await?;
    let file = plugins.path().join("bad_retention.wasm");
    let error = types["files"][file.display().to_string()]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(
        error.contains("default-retention returned an invalid policy")
            && error.contains("multiple of the one before"),
        "{types:#}"
    );
    ensure!(types["types"].get("bad_retention").is_none(), "{types:#}");
    let define = json!({"define": {"k": {"type": "bad_retention"}}});
    assert_eq!(c.request(define).await?, json!({"error": "unknown_type"}));
    Ok(())
}
