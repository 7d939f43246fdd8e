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
        // Fewer raw points than asked over compacted history: `compacted`, on both sides.
        let last = c
            .query(json!({"key": key, "last": 1000, "until": until}))
            .await
            .unwrap_or_else(|e| json!(e.to_string()));
        // A key with compacted history answers `compacted` here, on both sides alike.
        let all = c
            .request(json!({"fetch": {"key": key, "opts": {"limit": 10000}}}))
            .await
            .unwrap_or_else(|e| json!(e.to_string()));
        let since = until - 365.0 * 86_400.0;
        let year = c
            .query(json!({"key": key, "since": since, "until": until}))
            .await?;
        // Up to a past day's edge: a bucket open at `now` would grow while the test reads.
        let day_edge = (until / 86_400.0).floor() * 86_400.0;
        let days = c
            .query(json!({"key": key, "since": since, "until": day_edge, "step": "1d"}))
            .await?;
        out.insert(
            key,
            json!({"type": info.type_name, "opts": info.opts, "get": get, "last": last,
                   "all": all, "year": year, "days": days}),
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

/// A server whose background compaction never runs (only `compact` requests), so the
/// answers compared cannot move while the test reads them.
fn start_quiet(dir: &Path, name: &str) -> Result<ServerProcess> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, "compaction_interval = 0\n")?;
    let config = config.to_str().context("a UTF-8 temp path")?.to_string();
    ServerProcess::start_with_args(BIN, &dir.join(name), &["--config", &config])
}

/// Every `tiers` page of a key, joined.
async fn all_tiers(c: &Client, key: &str) -> Result<Vec<Json>> {
    let mut pages = vec![c.request(json!({"tiers": {"key": key}})).await?];
    while let Some(next) = pages.last().map(|p| p["next"].clone())
        && !next.is_null()
    {
        pages.push(
            c.request(json!({"tiers": {"key": key, "after": next}}))
                .await?,
        );
    }
    Ok(pages)
}

/// Every line of an `export` request paged `limit` rows at a time.
async fn export_lines(c: &Client, limit: u64) -> Result<Vec<Json>> {
    let mut args = json!({ "limit": limit });
    let mut lines = Vec::new();
    loop {
        let page = c.request(json!({ "export": args })).await?;
        lines.extend(page["lines"].as_array().context("lines")?.iter().cloned());
        if page["next"].is_null() {
            return Ok(lines);
        }
        args = json!({"limit": limit, "snapshot": page["snapshot"], "after": page["next"]});
    }
}

/// Export lines by what they say, whatever the paging: per key its definition, every point
/// row and every summary row in order, and the first summary page's state, gaps and carry.
fn by_key(lines: &[Json]) -> Map<String, Json> {
    let mut out = Map::new();
    let mut policies = Vec::new();
    for line in lines {
        let (kind, body) = line
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("one record per line");
        if kind == "retention" {
            policies.push(body.clone());
            continue;
        }
        let key = body["key"].as_str().expect("a key").to_string();
        let entry = out
            .entry(key)
            .or_insert_with(|| json!({"points": [], "tier_rows": []}));
        match kind.as_str() {
            "define" => entry["define"] = body.clone(),
            "points" => {
                let rows = body["rows"].as_array().expect("rows").clone();
                entry["points"].as_array_mut().expect("a list").extend(rows);
            }
            "tiers" => {
                let rows = body["rows"].as_array().expect("rows").clone();
                entry["tier_rows"]
                    .as_array_mut()
                    .expect("a list")
                    .extend(rows);
                if entry.get("tiers").is_none() {
                    let mut meta = body.clone();
                    meta.as_object_mut().expect("an object").remove("rows");
                    entry["tiers"] = meta;
                }
            }
            other => panic!("unexpected export record {other}"),
        }
    }
    out.insert("retention".into(), Json::Array(policies));
    out
}

/// A key with 20 days of 2-minute points (a six-hour hole on day 10), raw for 2 days, then
/// minute summaries for 5 days and hour summaries forever, compacted: most of its history
/// is summaries (several `tiers` pages) and gaps, the newest 2 days raw points.
async fn fill_compacted(url: &str) -> Result<f64> {
    let c = Client::connect(url, Options::default()).await?;
    c.request(json!({"retention": {"key": "hist.*", "raw": "2d",
                                   "tiers": [["1M", "5d"], ["1H", null]]}}))
        .await?;
    let start = now() - 20.0 * 86_400.0;
    let mut acks = Vec::new();
    for i in 0..14_400u32 {
        let t = start + f64::from(i) * 120.0 + 0.25;
        if (t - start - 10.0 * 86_400.0).abs() < 3.0 * 3600.0 {
            continue;
        }
        acks.push(c.put_at("hist.temp", 15.0 + f64::from(i % 97) / 8.0, t));
        if i % 50 == 0 {
            acks.push(c.put_at("hist.door", i % 100 == 0, t));
        }
    }
    for a in acks {
        a.await?;
    }
    let report = c.request(json!({"compact": {}})).await?;
    ensure!(report.to_string().contains("steps"), "{report}");
    Ok(now())
}

#[tokio::test]
async fn compacted_history_survives_export_and_import_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = start_quiet(dir.path(), "a")?;
    let until = fill_compacted(&source.url()).await?;
    let src = Client::connect(&source.url(), Options::default()).await?;
    let pages = all_tiers(&src, "hist.temp").await?;
    ensure!(
        pages.len() >= 3,
        "summaries span several pages: {}",
        pages.len()
    );
    ensure!(
        !pages[0]["gaps"].as_array().context("gaps")?.is_empty(),
        "the hole made a gap"
    );
    let raw_from = pages[0]["state"]["raw_from"]
        .as_f64()
        .context("compacted")?;
    ensure!(raw_from > until - 3.0 * 86_400.0, "raw_from {raw_from}");

    // Pages of a few rows cut inside definitions, points and summaries and say the same.
    let whole = by_key(&export_lines(&src, 10_000).await?);
    let paged = by_key(&export_lines(&src, 7).await?);
    assert_eq!(paged, whole);
    ensure!(
        whole["hist.temp"]["tier_rows"]
            .as_array()
            .is_some_and(|r| r.len() > 7)
            && whole["hist.temp"]["points"]
                .as_array()
                .is_some_and(|r| r.len() > 7),
        "hist.temp has points and summaries over several pages"
    );

    let dump = dir.path().join("dump.jsonl");
    export(&source.url(), &dump, None)?;
    let expected = answers(&source.url(), until).await?;
    assert_eq!(
        expected["hist.temp"]["last"].as_array().map(Vec::len),
        Some(1000)
    );
    let year = &expected["hist.temp"]["year"];
    ensure!(
        year.to_string().contains("1H") || year.to_string().contains("1M"),
        "the year summary reads tiers: {year}"
    );

    let target = start_quiet(dir.path(), "b")?;
    ensure!(import(&target.url(), &dump)?.success(), "import failed");
    let got = answers(&target.url(), until).await?;
    for (key, want) in &expected {
        assert_eq!(got.get(key), Some(want), "{key} differs after import");
    }
    assert_eq!(got.len(), expected.len());
    let dst = Client::connect(&target.url(), Options::default()).await?;
    assert_eq!(all_tiers(&dst, "hist.temp").await?, pages);

    // Twice: nothing changes, not even the row counts.
    ensure!(
        import(&target.url(), &dump)?.success(),
        "second import failed"
    );
    assert_eq!(answers(&target.url(), until).await?, got);
    assert_eq!(all_tiers(&dst, "hist.temp").await?, pages);

    // Summaries of another type (or options) are refused, with the reason.
    dst.define("other", "string", Map::new()).await?;
    let mut page = pages[0].clone();
    page["key"] = json!("other");
    let refused = dst
        .request(json!({ "load_tiers": page }))
        .await
        .err()
        .context("a numeric key's summaries loaded into a string key")?;
    ensure!(refused.to_string().contains("type_mismatch"), "{refused}");
    let mut opts = Map::new();
    opts.insert("same_value_resolution".into(), json!(30));
    dst.define("hist.temp", "numeric", opts).await?;
    page["key"] = json!("hist.temp");
    let refused = dst
        .request(json!({ "load_tiers": page }))
        .await
        .err()
        .context("summaries loaded under other options")?;
    ensure!(refused.to_string().contains("type_mismatch"), "{refused}");
    Ok(())
}

/// What a dump of a live server guarantees (see `host/src/dump.rs`): writes landing while
/// the export runs are in the file whole or not at all; none newer than the header's time
/// `T` is; a backfilled point in it carries exactly the value written; the file imports into
/// a server whose points are the file's.
#[tokio::test]
async fn an_export_of_a_live_server_holds_each_concurrent_write_whole_or_not_at_all() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let source = start_quiet(dir.path(), "a")?;
    let c = Client::connect(&source.url(), Options::default()).await?;
    let start = now() - 86_400.0;
    let mut acks = Vec::new();
    for i in 0..10_000u32 {
        acks.push(c.put_at("live", f64::from(i), start + f64::from(i) * 4.0));
    }
    for a in acks {
        a.await?;
    }
    let dump = dir.path().join("dump.jsonl");
    let url = source.url();
    let file = dump.clone();
    let exporting = tokio::task::spawn_blocking(move || export(&url, &file, None));
    // Meanwhile: backfills between the stored points (odd seconds, values ≥ 1e6) and
    // writes at the present time.
    let mut written = Vec::new();
    let mut j = 0u32;
    while !exporting.is_finished() && j < 2000 {
        let t = start + f64::from(j) * 16.0 + 1.0;
        let v = 1_000_000.0 + f64::from(j);
        let (a, b) = (c.put_at("live", v, t), c.put("live.now", f64::from(j)));
        a.await?;
        b.await?;
        written.push((t, v));
        j += 1;
    }
    exporting.await??;
    ensure!(j > 0, "the export ended before any concurrent write");

    let text = std::fs::read_to_string(&dump)?;
    let mut lines = text.lines();
    let header: Json = serde_json::from_str(lines.next().context("a header")?)?;
    let t_export = header["until"].as_f64().context("until")?;
    let mut rows: Vec<(f64, f64)> = Vec::new();
    for line in lines {
        let record: Json = serde_json::from_str(line)?;
        if let Some(p) = record.get("points") {
            for r in p["rows"].as_array().context("rows")? {
                let t = r[0].as_f64().context("time")?;
                ensure!(
                    t <= t_export,
                    "a point after T in the dump: {t} > {t_export}"
                );
                if p["key"] == "live" {
                    rows.push((t, r[1].as_f64().context("value")?));
                }
            }
        }
    }
    // Times are stored in whole microseconds.
    let us = |t: f64| (t * 1e6).round() as i64;
    let backfilled: std::collections::HashMap<i64, f64> =
        written.iter().map(|(t, v)| (us(*t), *v)).collect();
    let mut seen = 0;
    for (t, v) in &rows {
        if let Some(w) = backfilled.get(&us(*t)) {
            assert_eq!(v, w, "a backfilled point with another value");
            seen += 1;
        } else {
            ensure!(*v < 1_000_000.0, "a value at a time never written: {t} {v}");
        }
    }
    assert_eq!(rows.len(), 10_000 + seen, "every original point once");

    let target = start_quiet(dir.path(), "b")?;
    ensure!(import(&target.url(), &dump)?.success(), "import failed");
    let d = Client::connect(&target.url(), Options::default()).await?;
    // Pages of the newest 10 000 before the oldest seen (the most one fetch answers).
    let mut got: Vec<(f64, f64)> = Vec::new();
    let mut until = now() + 60.0;
    loop {
        let page = d
            .request(json!({"fetch": {"key": "live", "opts": {"until": until, "limit": 10_000}}}))
            .await?;
        let page: Vec<(f64, f64)> = page
            .as_array()
            .context("rows")?
            .iter()
            .filter_map(|r| Some((r[0].as_f64()?, r[1].as_f64()?)))
            .filter(|(t, _)| *t < until)
            .collect();
        let Some(oldest) = page.first().map(|p| p.0) else {
            break;
        };
        got.extend(page);
        until = oldest;
    }
    got.sort_by(|a, b| a.0.total_cmp(&b.0));
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(got, rows, "the imported key holds the dump's points");
    Ok(())
}

/// The dump of a live server is the server at one instant: a writer puts `i` to `seq.a`,
/// then (once acknowledged) `i` to `seq.b`, over and over, while `seq.a`'s older history
/// makes the export read it for many pages before it reaches `seq.b`. Any instant has `b`
/// at `a` or one behind; an export that read each key at another moment would find `b`
/// far ahead.
#[tokio::test]
async fn an_export_of_a_live_server_is_one_instant_across_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = start_quiet(dir.path(), "a")?;
    let c = Client::connect(&source.url(), Options::default()).await?;
    let start = now() - 86_400.0;
    let mut acks = Vec::new();
    for i in 0..30_000u32 {
        acks.push(c.put_at("seq.a", -1.0, start + f64::from(i)));
    }
    for a in acks {
        a.await?;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (writer, done) = (c.clone(), stop.clone());
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let writing = tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        let mut i = 0u32;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            writer.put("seq.a", f64::from(i)).await?;
            writer.put("seq.b", f64::from(i)).await?;
            i += 1;
            if i == 10
                && let Some(tx) = started_tx.take()
            {
                let _ = tx.send(());
            }
        }
        anyhow::Ok(i)
    });
    started.await?;
    let dump = dir.path().join("dump.jsonl");
    let (url, file) = (source.url(), dump.clone());
    tokio::task::spawn_blocking(move || export(&url, &file, Some("seq.*"))).await??;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writing.await??;

    let (mut a, mut b, mut a_points) = (f64::NEG_INFINITY, -1.0_f64, 0);
    for line in std::fs::read_to_string(&dump)?.lines().skip(1) {
        let record: Json = serde_json::from_str(line)?;
        let Some(p) = record.get("points") else {
            continue;
        };
        for r in p["rows"].as_array().context("rows")? {
            let v = r[1].as_f64().context("value")?;
            match p["key"].as_str() {
                Some("seq.a") => {
                    a_points += 1;
                    a = a.max(v);
                }
                Some("seq.b") => b = b.max(v),
                other => anyhow::bail!("a key outside the pattern: {other:?}"),
            }
        }
    }
    println!("{written} writes; in the dump: a = {a}, b = {b}, {a_points} points of a");
    ensure!(
        a >= 9.0,
        "the dump misses writes acknowledged before it began"
    );
    ensure!(
        b == a || b == a - 1.0,
        "the dump is not one instant: seq.a at {a}, seq.b at {b}"
    );
    ensure!(
        f64::from(written) > a + 1.0,
        "nothing was written while the export ran ({written} writes, a = {a})"
    );
    Ok(())
}
