//! Bucket summaries from whatever holds the history: raw points where they are kept, stored
//! tier summaries where they were compacted.
//!
//! The window is split by the key's watermarks. Raw periods are summarised from the points
//! and the summaries of the chunks that fit in a bucket ([`super::summarize::summarize_stored`]); each stored tier bucket goes to the query bucket that
//! holds its start, and each stored gap (a stretch without points, see [`crate::store::Gap`])
//! is summarised through the plugin per query bucket it crosses, as the raw stretch would
//! be. A query bucket's parts are merged oldest first (summaries of adjacent spans merge
//! exactly), so a figure over compacted history is exact at the tier's step.
//! Everything is read from one snapshot: a compaction step is seen whole or not at all.

use crate::error::Result;
use crate::plugins::Plugin;
use crate::policy::step_label;
use crate::store::View;
use crate::value::Time;

use super::summarize::summarize_stored;

/// Parts kept per bucket before they are merged down to one.
const MAX_PARTS: usize = 64;

/// Summaries for the buckets between consecutive `edges`, and the coarsest resolution that
/// answered (`"raw"` or a tier step such as `"1H"`).
pub fn bucket_summaries(
    view: &View,
    key: &str,
    plugin: &Plugin,
    options: &str,
    edges: &[Time],
) -> Result<(Vec<Vec<u8>>, String)> {
    let n = edges.len().saturating_sub(1);
    let (first, last) = (edges[0], edges[n]);
    let state = view.compaction_state(key)?;
    let raw_from = state.as_ref().map_or(f64::NEG_INFINITY, |s| s.raw_from);
    if n == 0 || first >= raw_from {
        let out = summarize_stored(view, key, plugin, options, edges)?;
        return Ok((out, "raw".into()));
    }
    let state = state.expect("raw_from is finite only with a state");
    let mut parts: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    let mut coarsest: Option<f64> = None;
    let push = |parts: &mut Vec<Vec<Vec<u8>>>, b: usize, summary: Vec<u8>| -> Result<()> {
        let bucket = &mut parts[b.min(n - 1)];
        bucket.push(summary);
        if bucket.len() >= MAX_PARTS {
            let merged = plugin.merge(options, bucket)?;
            *bucket = vec![merged];
        }
        Ok(())
    };
    // The stored summaries, oldest (coarsest) level first, and the gaps between them, as one
    // stream in time order, so each bucket's parts arrive in time order.
    let levels: Vec<(f64, Time, Time)> = (1..=state.tiers.len())
        .rev()
        .filter_map(|i| {
            let (lo, hi) = state.level_range(i);
            let (lo, hi) = (lo.max(first), hi.min(last));
            (lo < hi).then(|| (state.tiers[i - 1].step, lo, hi))
        })
        .collect();
    let mut summaries = levels
        .into_iter()
        .flat_map(|(step, lo, hi)| {
            view.summaries(key, step, lo, hi)
                .map(move |item| item.map(|(start, summary)| (step, start, summary)))
        })
        .peekable();
    let compacted_end = raw_from.min(last);
    let mut gaps = view.gaps_overlapping(key, first, compacted_end)?.peekable();
    loop {
        let gap_first = match (summaries.peek(), gaps.peek()) {
            (None, None) => break,
            (Some(Ok((_, start, _))), Some(Ok(g))) => g.start < *start,
            (Some(Err(_)), _) | (_, None) => false,
            (None, Some(_)) | (_, Some(Err(_))) => true,
        };
        if gap_first {
            let gap = gaps.next().expect("peeked")?;
            let (lo, hi) = (gap.start.max(first), gap.end.min(compacted_end));
            if lo >= hi {
                continue;
            }
            // The value held through the gap, summarised per query bucket it crosses.
            let b = edges.partition_point(|e| *e <= lo).saturating_sub(1);
            let mut cuts = vec![lo];
            cuts.extend(edges[b + 1..].iter().take_while(|e| **e < hi));
            cuts.push(hi);
            let pieces = plugin.summarize(options, &cuts, Some(&gap.carried), &[])?;
            for (k, piece) in pieces.into_iter().enumerate() {
                push(&mut parts, b + k, piece)?;
            }
            // It answers for the tier whose period it lies in (exactly, at any step).
            if let Some((j, _)) = state.home(lo) {
                let step = state.tiers[j].step;
                coarsest = Some(coarsest.map_or(step, |c: f64| c.max(step)));
            }
        } else {
            let (step, start, summary) = summaries.next().expect("peeked")?;
            let b = edges.partition_point(|e| *e <= start).saturating_sub(1);
            push(&mut parts, b, summary)?;
            coarsest = Some(coarsest.map_or(step, |c: f64| c.max(step)));
        }
    }
    if raw_from < last {
        // The bucket raw_from falls in, and the raw part of it onwards.
        let j = edges.partition_point(|e| *e <= raw_from).saturating_sub(1);
        let mut raw_edges = vec![edges[j].max(raw_from)];
        raw_edges.extend_from_slice(&edges[j + 1..]);
        let raw = summarize_stored(view, key, plugin, options, &raw_edges)?;
        for (b, s) in raw.into_iter().enumerate() {
            parts[j + b].push(s);
        }
    }
    let mut out = Vec::with_capacity(n);
    for p in parts {
        out.push(if p.len() == 1 {
            p.into_iter().next().expect("one part")
        } else {
            plugin.merge(options, &p)?
        });
    }
    let resolution = coarsest.map_or_else(|| "raw".to_string(), step_label);
    Ok((out, resolution))
}

/// Where a key's history starts: its oldest stored summary, or its first raw point.
pub fn history_start(view: &View, key: &str) -> Result<Option<Time>> {
    let Some(state) = view.compaction_state(key)? else {
        return Ok(view
            .first_point_from(key, f64::NEG_INFINITY)?
            .map(|p| p.time));
    };
    let mut start = None;
    for i in (1..=state.tiers.len()).rev() {
        let (lo, hi) = state.level_range(i);
        if let Some(first) = view.summaries(key, state.tiers[i - 1].step, lo, hi).next() {
            start = Some(first?.0);
            break;
        }
    }
    // A trim can leave a gap older than every summary.
    if let Some(gap) = view.gaps(key, f64::NEG_INFINITY, f64::INFINITY).next() {
        let gap = gap?.start;
        start = Some(start.map_or(gap, |s: Time| s.min(gap)));
    }
    // Only raw points are left, the oldest kept one carrying its value into raw_from.
    Ok(Some(start.unwrap_or(state.raw_from)))
}
