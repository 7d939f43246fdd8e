//! `komoku export` and `komoku import`: a server's keys as JSON lines, through the client.
//!
//! The format (version 2), one JSON object per line:
//!
//! ```text
//! {"komoku_export": 2, "until": T}                          the header; T is the snapshot time
//! {"retention": {"key": "sensor.*", "raw": "1d", "tiers": [...]}}   a policy, as set
//! {"define": {"key": "k", "type": "numeric", "opts": {...}}}        a key
//! {"points": {"key": "k", "rows": [[t, v], ...]}}                   up to 1000 raw points
//! {"tiers": {"key": "k", "type": .., "version": .., "opts": {..}, "state": {..}, ...}}
//!                                                  up to 1000 summary rows (a `tiers` answer)
//! {"end": {"keys": N, "points": M}}                                  the last line
//! ```
//!
//! Export asks for every key's points up to the header's time `T`, in pages of 1000 newest
//! first (memory stays bounded by a page), and for a key with compacted history, its
//! `tiers` pages (summaries, gaps, watermarks, the value carried into the raw period, with
//! the type, plugin version and effective options that made them), after its points.
//! Import defines each key with its type, puts every point at its own time, then sets the
//! key's late options, then loads its compacted history (`load_tiers`, refused when the
//! type, version or options differ). A put at a time the key already has overwrites that
//! point and a page of summaries loads over itself, so importing twice changes nothing, and
//! a killed import run again finishes without doubling anything.
//!
//! What a dump of a live server holds: each `tiers` page is read from one store snapshot
//! and each `points` page from another, so the dump is not one instant for the whole server.
//! It guarantees: points written after `T` are not in the file; a write at or before `T`
//! that lands during the export (a backfill) is in the file exactly when the page covering
//! its time is read after it is durable, so it is wholly in or wholly absent, never torn; a
//! compaction that moves a key's watermark while that key is exported fails the export
//! with `compacted` (run it again) rather than writing a dump with a hole.
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

/// Writes the keys matching `pattern` (every key without one) to `out`.
pub async fn export(
    client: &Client,
    pattern: Option<&str>,
    out: &mut impl Write,
    matches: impl Fn(&str, &str) -> bool,
) -> anyhow::Result<()> {
    let until = client
        .request(json!({"ping": "export"}))
        .await
        .map(|_| crate::value::now())
        .map_err(|e| anyhow!("{e}"))?;
    writeln!(out, "{}", json!({"komoku_export": 2, "until": until}))?;
    let retention = client
        .request(json!({"retention": {}}))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(Json::Object(policies)) = retention.get("policies") {
        for (key, spec) in policies {
            if pattern.is_some_and(|p| !matches(p, key)) {
                continue;
            }
            let mut line = spec.as_object().cloned().unwrap_or_default();
            line.insert("key".into(), json!(key));
            writeln!(out, "{}", json!({ "retention": line }))?;
        }
    }
    let keys = client.keys().await.map_err(|e| anyhow!("{e}"))?;
    let names: Vec<&String> = keys
        .keys()
        .filter(|k| pattern.is_none_or(|p| matches(p, k)))
        .collect();
    let progress = bar(names.len() as u64, "export");
    let mut total = 0u64;
    for name in &names {
        let info = &keys[*name];
        writeln!(
            out,
            "{}",
            json!({"define": {"key": name, "type": info.type_name, "opts": info.opts}})
        )?;
        // Compacted history first read, so the points are asked from its watermark on.
        let first_tiers = client
            .request(json!({"tiers": {"key": name, "limit": PAGE}}))
            .await
            .map_err(|e| anyhow!("{name}: tiers: {e}"))?;
        let raw_from = first_tiers["state"]["raw_from"].as_f64();
        let mut page_until = until;
        let mut oldest_seen: Option<f64> = None;
        loop {
            let mut opts = json!({"until": page_until, "limit": PAGE});
            if let Some(from) = raw_from {
                opts["since"] = json!(from);
            }
            let rows = client
                .request(json!({"fetch": {"key": name, "opts": opts}}))
                .await
                .map_err(|e| anyhow!("{name}: {e}"))?;
            let Json::Array(mut rows) = rows else {
                bail!("{name}: fetch answered {rows}");
            };
            // `until` may be inclusive: drop what the previous page already had.
            if let Some(oldest) = oldest_seen {
                rows.retain(|r| r[0].as_f64().is_some_and(|t| t < oldest));
            }
            if rows.is_empty() {
                break;
            }
            let full = rows.len() >= PAGE - 1;
            let first = rows[0][0].as_f64().context("a point without a time")?;
            total += rows.len() as u64;
            writeln!(out, "{}", json!({"points": {"key": name, "rows": rows}}))?;
            oldest_seen = Some(first);
            page_until = first;
            progress.set_prefix(total.to_string());
            if !full {
                break;
            }
        }
        if raw_from.is_some() {
            let mut page = first_tiers;
            loop {
                let next = page.get("next").cloned().unwrap_or(Json::Null);
                let Json::Object(mut line) = page else {
                    bail!("{name}: tiers answered {page}");
                };
                line.remove("next");
                line.insert("key".into(), json!(name));
                writeln!(out, "{}", json!({ "tiers": line }))?;
                if next.is_null() {
                    break;
                }
                page = client
                    .request(json!({"tiers": {"key": name, "after": next, "limit": PAGE}}))
                    .await
                    .map_err(|e| anyhow!("{name}: tiers: {e}"))?;
                if page["state"]["raw_from"].as_f64() != raw_from {
                    bail!("{name}: compacted while it was exported; export again");
                }
            }
        }
        progress.inc(1);
    }
    writeln!(
        out,
        "{}",
        json!({"end": {"keys": names.len(), "points": total}})
    )?;
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
