//! `komoku export` and `komoku import`: a server's keys as JSON lines, through the client.
//!
//! The format (version 2), one JSON object per line:
//!
//! ```text
//! {"komoku_export": 2, "until": T}                          the header; T is the snapshot's time
//! {"retention": {"key": "sensor.*", "raw": "1d", "tiers": [...]}}   a policy, as set
//! {"define": {"key": "k", "type": "numeric", "opts": {...}}}        a key
//! {"points": {"key": "k", "rows": [[t, v], ...]}}                   up to 1000 raw points
//! {"tiers": {"key": "k", "type": .., "version": .., "opts": {..}, "state": {..}, ...}}
//!                                                  up to 1000 summary rows (a `tiers` answer)
//! {"end": {"keys": N, "points": M}}                                  the last line
//! ```
//!
//! Export reads the server's `export` pages: every line comes from one store snapshot the
//! first page opened, so a dump of a live server is the server at one instant (a write is
//! wholly in it or wholly absent, and so is every write acknowledged before it). Memory
//! stays bounded by a page (1000 rows) on both sides. Per key: its definition, its raw
//! points from the compacted watermark on, oldest first, then (for a key with compacted
//! history) its `tiers` pages: summaries, gaps, watermarks and the value carried into the
//! raw period, with the type, plugin version and effective options that made them.
//! Import defines each key with its type, puts every point at its own time, then sets the
//! key's late options, then loads its compacted history (`load_tiers`, refused when the
//! type, version or options differ). A put at a time the key already has overwrites that
//! point and a page of summaries loads over itself, so importing twice changes nothing, and
//! a killed import run again finishes without doubling anything.
//! Version-1 files (raw points only) are still imported.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context as _, anyhow, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use komoku_client::{Ack, Client};
use serde_json::{Map, Value as Json, json};

/// Points per `fetch` page and per `points` line.
const PAGE: usize = 1000;
/// Puts in flight at once during an import.
const IN_FLIGHT: usize = 1000;

/// Options whose effect depends on the order and spacing of writes: set after the points,
/// so the import stores every exported point.
const LATE_OPTIONS: &[&str] = &["same_value_resolution", "min_resolution"];

fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} keys, {prefix} points {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Writes the keys matching `pattern` (every key without one) to `out`, from one server
/// snapshot (the server's `export` pages).
pub async fn export(
    client: &Client,
    pattern: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let progress = bar(0, "export");
    let (mut keys, mut points) = (0u64, 0u64);
    let mut args = json!({"pattern": pattern, "limit": PAGE});
    let mut header = false;
    loop {
        let page = client
            .request(json!({ "export": args }))
            .await
            .map_err(|e| anyhow!("export: {e}"))?;
        if !header {
            writeln!(
                out,
                "{}",
                json!({"komoku_export": 2, "until": page["until"]})
            )?;
            header = true;
        }
        let lines = page["lines"]
            .as_array()
            .with_context(|| format!("export answered {page}"))?;
        for line in lines {
            if line.get("define").is_some() {
                keys += 1;
                progress.inc_length(1);
                progress.inc(1);
            }
            if let Some(rows) = line["points"]["rows"].as_array() {
                points += rows.len() as u64;
                progress.set_prefix(points.to_string());
            }
            writeln!(out, "{line}")?;
        }
        if page["next"].is_null() {
            break;
        }
        args["snapshot"] = page["snapshot"].clone();
        args["after"] = page["next"].clone();
    }
    writeln!(out, "{}", json!({"end": {"keys": keys, "points": points}}))?;
    out.flush()?;
    progress.finish_and_clear();
    Ok(())
}

/// Reads a dump from `input` into the server.
pub async fn import(client: &Client, input: impl BufRead) -> anyhow::Result<()> {
    let progress = bar(0, "import");
    let mut pending: std::collections::VecDeque<(Ack, usize)> = Default::default();
    let mut late: Vec<(String, String, Map<String, Json>)> = Vec::new();
    let mut header = false;
    let mut ended = false;
    let mut points = 0u64;
    for (n, line) in input.lines().enumerate() {
        let number = n + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        ensure!(!ended, "line {number}: data after the end line");
        let record: Json =
            serde_json::from_str(&line).with_context(|| format!("line {number}: not JSON"))?;
        let Some((kind, body)) = record.as_object().and_then(|o| o.iter().next()) else {
            bail!("line {number}: not an object");
        };
        if !header {
            ensure!(
                kind == "komoku_export" && (body == &json!(1) || body == &json!(2)),
                "line {number}: not a komoku export (version 1 or 2) header"
            );
            header = true;
            continue;
        }
        match kind.as_str() {
            "retention" => {
                client
                    .request(json!({ "retention": body }))
                    .await
                    .map_err(|e| anyhow!("line {number}: retention: {e}"))?;
            }
            "define" => {
                let key = body["key"].as_str().context("define without a key")?;
                let type_name = body["type"].as_str().context("define without a type")?;
                let opts = body["opts"].as_object().cloned().unwrap_or_default();
                let (mut now, later): (Map<_, _>, Map<_, _>) = opts
                    .into_iter()
                    .partition(|(k, _)| !LATE_OPTIONS.contains(&k.as_str()));
                // Options already in force on an existing key stay (define merges).
                now.retain(|_, v| !v.is_null());
                client
                    .define(key, type_name, now)
                    .await
                    .map_err(|e| anyhow!("line {number}: define {key}: {e}"))?;
                if !later.is_empty() {
                    late.push((key.to_string(), type_name.to_string(), later));
                }
                progress.inc_length(1);
                progress.inc(1);
            }
            "points" => {
                let key = body["key"].as_str().context("points without a key")?;
                let rows = body["rows"].as_array().context("points without rows")?;
                for row in rows {
                    let time = row[0].as_f64().context("a point without a time")?;
                    pending.push_back((client.put_at(key, row[1].clone(), time), number));
                    points += 1;
                    if pending.len() >= IN_FLIGHT
                        && let Some((ack, line)) = pending.pop_front()
                    {
                        ack.await
                            .map_err(|e| anyhow!("line {line}: put {key}: {e}"))?;
                    }
                }
                progress.set_prefix(points.to_string());
            }
            "tiers" => {
                let key = body["key"].as_str().context("tiers without a key")?;
                // Its points first (a load moves the key's watermark), then the options
                // set late (the summaries were made under all of them).
                while let Some((ack, line)) = pending.pop_front() {
                    ack.await
                        .map_err(|e| anyhow!("line {line}: put {key}: {e}"))?;
                }
                if let Some(i) = late.iter().position(|(k, _, _)| k == key) {
                    let (key, type_name, opts) = late.remove(i);
                    client
                        .define(&key, &type_name, opts)
                        .await
                        .map_err(|e| anyhow!("line {number}: define {key}: {e}"))?;
                }
                client
                    .request(json!({ "load_tiers": body }))
                    .await
                    .map_err(|e| anyhow!("line {number}: load_tiers {key}: {e}"))?;
            }
            "end" => {
                let expected = body["points"].as_u64().unwrap_or(points);
                ensure!(
                    expected == points,
                    "line {number}: the file says {expected} points, it holds {points}"
                );
                ended = true;
            }
            other => bail!("line {number}: unknown record {other:?}"),
        }
    }
    for (ack, line) in pending {
        ack.await.map_err(|e| anyhow!("line {line}: put: {e}"))?;
    }
    for (key, type_name, opts) in late {
        client
            .define(&key, &type_name, opts)
            .await
            .map_err(|e| anyhow!("define {key}: {e}"))?;
    }
    progress.finish_and_clear();
    ensure!(header, "empty input: not a komoku export");
    ensure!(
        ended,
        "the file ends before its end line (cut short?): what it held was imported"
    );
    Ok(())
}
