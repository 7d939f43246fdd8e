//! `komoku export` and `komoku import` as processes against real servers: a dump imported
//! into an empty server answers `get`, `last 1000` and a year summary exactly as the source;
//! importing twice changes nothing; a killed import run again doubles nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use komoku_client::{Client, Options};
use komoku_tests::{ServerProcess, now};
use serde_json::{Map, Value as Json, json};

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");

fn export(url: &str, file: &Path, pattern: Option<&str>) -> Result<()> {
    let out = std::fs::File::create(file)?;
    let status = Command::new(BIN)
        .arg("export")
        .args(pattern)
        .env("KOMOKU_URL", url)
        .stdout(out)
        .status()?;
    ensure!(status.success(), "export failed: {status}");
    Ok(())
}

fn import(url: &str, file: &Path) -> Result<std::process::ExitStatus> {
    Ok(Command::new(BIN)
        .arg("import")
        .env("KOMOKU_URL", url)
        .stdin(std::fs::File::open(file)?)
        .status()?)
}

/// What the acceptance compares for every key: its definition, `get`, the newest 1000
/// points, every point, and a year's summary up to `until`.
async fn answers(url: &str, until: f64) -> Result<Map<String, Json>> {
    let c = Client::connect(url, Options::default()).await?;
    let mut out = Map::new();
    for (key, info) in c.keys().await? {
        let get = c.get(&key).await?;
        let last = c
            .query(json!({"key": key, "last": 1000, "until": until}))
            .await?;
        let all = c
            .request(json!({"fetch": {"key": key, "opts": {"limit": 10000}}}))
            .await?;
        let year = c
            .query(json!({"key": key, "since": until - 365.0 * 86_400.0, "until": until}))
            .await?;
        out.insert(
            key,
            json!({"type": info.type_name, "opts": info.opts, "get": get, "last": last,
                   "all": all, "year": year}),
        );
    }
    Ok(out)
}

/// A source server with keys of several types, a retention policy and 5000 points on one key
/// (several export pages), all within the last two days (raw, not compacted).
async fn fill(url: &str) -> Result<f64> {
    let c = Client::connect(url, Options::default()).await?;
    c.request(json!({"retention": {"key": "sensor.*", "raw": "30d", "tiers": [["1H", null]]}}))
        .await?;
    let start = now() - 86_400.0;
    let mut acks = Vec::new();
    for i in 0..5000 {
        let t = start + f64::from(i) * 10.0 + 0.123;
        acks.push(c.put_at("sensor.temp", 20.0 + f64::from(i % 37) / 4.0, t));
    }
    for (i, word) in ["armed", "disarmed", "armed", "away"].iter().enumerate() {
        acks.push(c.put_at("alarm", *word, start + i as f64 * 600.0));
    }
    for i in 0..20 {
        acks.push(c.put_at("door.open", i % 3 == 0, start + f64::from(i) * 300.0));
    }
    for a in acks {
        a.await?;
    }
    let mut opts = Map::new();
    opts.insert("same_value_resolution".into(), json!(60));
    c.define("power", "numeric", opts).await?;
    // Same value twice within the resolution: stored only once at the source.
    for (i, v) in [5, 5, 5, 7].iter().enumerate() {
        c.put_at("power", *v, start + i as f64 * 10.0).await?;
    }
    c.increment("visits", 3.0).await?;
    c.increment("visits", 2.0).await?;
    c.define("later", "string", Map::new()).await?;
    Ok(now())
}

#[tokio::test]
async fn export_then_import_reproduces_every_answer_idempotently() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = ServerProcess::start(BIN, &dir.path().join("a"))?;
    let until = fill(&source.url()).await?;
    let dump = dir.path().join("dump.jsonl");
    export(&source.url(), &dump, None)?;
    let text = std::fs::read_to_string(&dump)?;
    ensure!(text.lines().count() > 6, "{text}");
    let expected = answers(&source.url(), until).await?;
    assert_eq!(expected.len(), 6);
    assert_eq!(
        expected["sensor.temp"]["all"].as_array().map(Vec::len),
        Some(5000)
    );
    assert_eq!(expected["power"]["all"].as_array().map(Vec::len), Some(2));

    let target = ServerProcess::start(BIN, &dir.path().join("b"))?;
    ensure!(import(&target.url(), &dump)?.success(), "import failed");
    let got = answers(&target.url(), until).await?;
    for (key, want) in &expected {
        assert_eq!(got.get(key), Some(want), "{key} differs after import");
    }
    assert_eq!(got.len(), expected.len());
    let c = Client::connect(&target.url(), Options::default()).await?;
    let policies = c.request(json!({"retention": {}})).await?;
    assert_eq!(policies["policies"]["sensor.*"]["raw"], "30d", "{policies}");

    // Twice: nothing changes.
    ensure!(
        import(&target.url(), &dump)?.success(),
        "second import failed"
    );
    assert_eq!(answers(&target.url(), until).await?, got);

    // A dump of some keys only.
    let some = dir.path().join("some.jsonl");
    export(&source.url(), &some, Some("sensor.*"))?;
    let third = ServerProcess::start(BIN, &dir.path().join("c"))?;
    ensure!(import(&third.url(), &some)?.success());
    let only = answers(&third.url(), until).await?;
    assert_eq!(only.keys().collect::<Vec<_>>(), ["sensor.temp"]);
    assert_eq!(only["sensor.temp"], expected["sensor.temp"]);
    Ok(())
}

#[tokio::test]
async fn a_killed_or_cut_import_run_again_doubles_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = ServerProcess::start(BIN, &dir.path().join("a"))?;
    let until = fill(&source.url()).await?;
    let dump = dir.path().join("dump.jsonl");
    export(&source.url(), &dump, None)?;
    let expected = answers(&source.url(), until).await?;

    // A file cut in the middle: the import says so, status 1, and a full run completes it.
    let text = std::fs::read_to_string(&dump)?;
    let cut = dir.path().join("cut.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, lines[..lines.len() / 2].join("\n"))?;
    let target = ServerProcess::start(BIN, &dir.path().join("b"))?;
    let status = import(&target.url(), &cut)?;
    assert_eq!(status.code(), Some(1));
    ensure!(import(&target.url(), &dump)?.success());
    assert_eq!(answers(&target.url(), until).await?, expected);

    // Killed while it runs (SIGKILL after a moment), then run again.
    let other = ServerProcess::start(BIN, &dir.path().join("c"))?;
    let mut child = Command::new(BIN)
        .arg("import")
        .env("KOMOKU_URL", other.url())
        .stdin(std::fs::File::open(&dump)?)
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(150));
    child.kill().ok();
    child.wait()?;
    ensure!(import(&other.url(), &dump)?.success());
    let got = answers(&other.url(), until).await?;
    assert_eq!(got, expected);
    let stored = got["sensor.temp"]["all"].as_array().context("rows")?.len();
    assert_eq!(stored, 5000, "nothing doubled");
    Ok(())
}
