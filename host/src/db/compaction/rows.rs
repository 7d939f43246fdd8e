//! What one compaction step reads and writes: raw points and finer summaries into the
//! buckets of a coarser tier, the stretches without data into gaps, and the row counts.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::Result;
use crate::plugins::Plugin;
use crate::retention::CompactionState;
use crate::store::{Gap, View, Write};
use crate::summary::summarize::summarize_stored;
use crate::value::Time;

/// One compaction batch's writes, and how they change the key's row counts.
pub(super) struct Rows {
    pub(super) key: String,
    pub(super) writes: Vec<Write>,
    /// Summary rows added less those removed.
    pub(super) summaries: i64,
    /// Gap rows added less those removed.
    pub(super) gaps: i64,
    /// Summaries stored (new or replacing one).
    pub(super) written: u64,
    pub(super) removed_points: u64,
    pub(super) removed_summaries: u64,
}

impl Rows {
    pub(super) fn new(key: &str) -> Rows {
        Rows {
            key: key.to_string(),
            writes: Vec::new(),
            summaries: 0,
            gaps: 0,
            written: 0,
            removed_points: 0,
            removed_summaries: 0,
        }
    }

    pub(super) fn put_summary(&mut self, step: f64, start: Time, summary: Vec<u8>, replaces: bool) {
        self.summaries += i64::from(!replaces);
        // A replaced summary counts as removed: written less removed stays the row count.
        self.removed_summaries += u64::from(replaces);
        self.written += 1;
        self.writes.push(Write::Summary {
            key: self.key.clone(),
            step,
            start,
            summary,
        });
    }

    pub(super) fn delete_summary(&mut self, step: f64, start: Time) {
        self.summaries -= 1;
        self.removed_summaries += 1;
        self.writes.push(Write::DeleteSummary {
            key: self.key.clone(),
            step,
            start,
        });
    }

    pub(super) fn put_gap(&mut self, gap: Gap, replaces: bool) {
        self.gaps += i64::from(!replaces);
        self.writes.push(Write::Gap {
            key: self.key.clone(),
            gap,
        });
    }

    pub(super) fn delete_gap(&mut self, start: Time) {
        self.gaps -= 1;
        self.writes.push(Write::DeleteGap {
            key: self.key.clone(),
            start,
        });
    }

    /// Deletes the `n` raw points with `from <= time < until`.
    pub(super) fn delete_raw(&mut self, from: Time, until: Time, n: usize) {
        self.removed_points += n as u64;
        self.writes.push(Write::DeleteRaw {
            key: self.key.clone(),
            from,
            until,
        });
    }
}

/// A bucket of a target tier that a batch stores.
pub(super) struct Target {
    pub(super) step: f64,
    /// The start it is stored under.
    pub(super) start: Time,
    /// The part of the bucket this batch builds: pieces of gaps inside it join the bucket.
    pub(super) span: (Time, Time),
    /// `(time, summary)` parts of the bucket; merged in time order.
    pub(super) parts: Vec<(Time, Vec<u8>)>,
    /// Whether a summary is stored under `start` already (it is replaced).
    pub(super) existed: bool,
}

/// The raw part of a step over `[a, b)`: a target for each bucket of the first tier that
/// holds points (its summary, the value carried in included), a gap for each stretch between
/// such buckets (and after the last, up to `b`) during which a known value held, and the
/// deletion of every point before `b` but the newest (it carries its value into the raw
/// period that now starts at `b`). Without a tier (raw points are dropped), only deletions.
#[allow(clippy::too_many_arguments)]
pub(super) fn raw_into(
    view: &View,
    key: &str,
    plugin: &Plugin,
    options: &str,
    target: &CompactionState,
    (a, b): (Time, Time),
    targets: &mut Vec<Target>,
    rows: &mut Rows,
) -> Result<()> {
    let before = view.point_before(key, a)?;
    // Scanning from the kept point, not from the start: the deleted ones before it may still
    // lie on disk as tombstones.
    let from = before.as_ref().map_or(a, |p| p.time);
    let step = target.tiers.first().map(|t| t.step);
    let mut old = Vec::new();
    // Edges of the stretches to summarise: buckets with points, and the gaps between them.
    let mut edges = vec![a];
    let mut bucket_starts = Vec::new();
    let mut gaps = Vec::new();
    let mut last = before.clone();
    for p in view.scan(key, from, b) {
        let p = p?;
        old.push(p.time);
        if let Some(step) = step
            && p.time >= a
        {
            let aligned = (p.time / step).floor() * step;
            let lo = aligned.max(a);
            let end = *edges.last().expect("edges start with a");
            if lo >= end {
                if lo > end {
                    if let Some(carried) = &last {
                        gaps.push(Gap {
                            start: end,
                            end: lo,
                            carried: carried.clone(),
                        });
                    }
                    edges.push(lo);
                }
                bucket_starts.push(lo);
                edges.push((aligned + step).min(b));
            }
        }
        last = Some(p);
    }
    if let Some(step) = step {
        let end = *edges.last().expect("edges start with a");
        if end < b
            && let Some(carried) = &last
        {
            gaps.push(Gap {
                start: end,
                end: b,
                carried: carried.clone(),
            });
        }
        if !bucket_starts.is_empty() {
            let summaries = summarize_stored(view, key, plugin, options, &edges)?;
            let mut starts = bucket_starts.iter().peekable();
            for (k, summary) in summaries.into_iter().enumerate() {
                // The stretches between buckets are gaps: their summaries are not kept.
                if starts.next_if(|s| **s == edges[k]).is_some() {
                    targets.push(Target {
                        step,
                        start: target.bucket_start(0, edges[k]),
                        span: (edges[k], edges[k + 1]),
                        parts: vec![(edges[k], summary)],
                        existed: false,
                    });
                }
            }
        }
    }
    // A silence that goes on from the previous step: one gap, extended.
    if let Some(first) = gaps.first_mut()
        && first.start == a
        && let Some(previous) = view.gaps(key, f64::NEG_INFINITY, a).next_back()
    {
        let previous = previous?;
        if previous.end == a && previous.carried == first.carried {
            first.start = previous.start;
            rows.put_gap(gaps.remove(0), true);
        }
    }
    for gap in gaps {
        rows.put_gap(gap, false);
    }
    // Every raw point of the step but the newest (kept: it carries the value on) goes, as
    // one range: whole chunks are dropped.
    if let Some(kept) = old.pop()
        && let Some(&first) = old.first()
    {
        rows.delete_raw(first, kept, old.len());
    }
    Ok(())
}

/// Stores each target as the merge, in time order, of its parts and of the pieces of `gaps`
/// (in time order) inside its span (summarised through the plugin as a value held with no point), then cuts
/// those spans and `also_cut` out of the gaps. A merge that is the empty summary is not
/// stored. Returns the (step, start) bits of the summaries stored.
pub(super) fn store_targets(
    plugin: &Plugin,
    options: &str,
    empty: &[u8],
    targets: Vec<Target>,
    gaps: &[Gap],
    also_cut: &[(Time, Time)],
    rows: &mut Rows,
) -> Result<HashSet<(u64, u64)>> {
    let mut spans = also_cut.to_vec();
    let mut stored = HashSet::new();
    for mut t in targets {
        // Gaps are disjoint and in time order: those ending after the span's start, until
        // one starts after its end.
        let first = gaps.partition_point(|g| g.end <= t.span.0);
        for g in gaps[first..].iter().take_while(|g| g.start < t.span.1) {
            let (lo, hi) = (g.start.max(t.span.0), g.end.min(t.span.1));
            if lo < hi {
                let piece = plugin.summarize(options, &[lo, hi], Some(&g.carried), &[])?;
                t.parts.extend(piece.into_iter().next().map(|s| (lo, s)));
            }
        }
        spans.push(t.span);
        t.parts.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut parts: Vec<Vec<u8>> = t.parts.into_iter().map(|(_, s)| s).collect();
        let merged = match parts.len() {
            0 => continue,
            1 => parts.pop().expect("one part"),
            _ => plugin.merge(options, &parts)?,
        };
        if merged != empty {
            stored.insert((t.step.to_bits(), t.start.to_bits()));
            rows.put_summary(t.step, t.start, merged, t.existed);
        }
    }
    cut_gaps(gaps, &spans, rows);
    Ok(stored)
}

/// Removes the time of `spans` from `gaps`: what is left of a gap is stored again (under its
/// old start when that is left, replacing it), what is covered goes.
pub(super) fn cut_gaps(gaps: &[Gap], spans: &[(Time, Time)], rows: &mut Rows) {
    let mut spans: Vec<(Time, Time)> = spans.iter().copied().filter(|(lo, hi)| lo < hi).collect();
    spans.sort_by(|x, y| x.0.total_cmp(&y.0));
    for g in gaps {
        let mut left = Vec::new();
        let mut from = g.start;
        for &(lo, hi) in &spans {
            if hi <= from || lo >= g.end {
                continue;
            }
            if lo > from {
                left.push((from, lo));
            }
            from = from.max(hi);
        }
        if from < g.end {
            left.push((from, g.end));
        }
        if left == [(g.start, g.end)] {
            continue; // untouched
        }
        if left.first().is_none_or(|(lo, _)| *lo != g.start) {
            rows.delete_gap(g.start);
        }
        for (lo, hi) in left {
            let piece = Gap {
                start: lo,
                end: hi,
                carried: g.carried.clone(),
            };
            rows.put_gap(piece, lo == g.start);
        }
    }
}

/// What every step of one key's compaction shares.
pub(super) struct Ctx<'a> {
    pub(super) name: &'a str,
    pub(super) plugin: &'a Arc<Plugin>,
    pub(super) options: &'a str,
    /// The summary of nothing: such buckets are not stored.
    pub(super) empty: &'a [u8],
}

impl Ctx<'_> {
    /// (name, plugin, options, empty summary), owned, for a blocking task.
    pub(super) fn owned(&self) -> (String, Arc<Plugin>, String, Vec<u8>) {
        (
            self.name.to_string(),
            self.plugin.clone(),
            self.options.to_string(),
            self.empty.to_vec(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Point, Value};

    fn gap(start: Time, end: Time) -> Gap {
        Gap {
            start,
            end,
            carried: Point {
                time: start - 1.0,
                value: Value::Number(7.0),
            },
        }
    }

    /// (start, end) of every gap written, and the starts deleted.
    fn cut(gaps: &[Gap], spans: &[(Time, Time)]) -> (Vec<(Time, Time)>, Vec<Time>, i64) {
        let mut rows = Rows::new("k");
        cut_gaps(gaps, spans, &mut rows);
        let mut put = Vec::new();
        let mut deleted = Vec::new();
        for w in rows.writes {
            match w {
                Write::Gap { gap, .. } => put.push((gap.start, gap.end)),
                Write::DeleteGap { start, .. } => deleted.push(start),
                other => panic!("unexpected {other:?}"),
            }
        }
        (put, deleted, rows.gaps)
    }

    #[test]
    fn cutting_spans_out_of_gaps_keeps_the_rest_and_counts_rows() {
        // Untouched: nothing written.
        assert_eq!(
            cut(&[gap(10.0, 20.0)], &[(30.0, 40.0)]),
            (vec![], vec![], 0)
        );
        // The middle cut out: the head replaces the gap, the tail is a new row.
        assert_eq!(
            cut(&[gap(10.0, 50.0)], &[(20.0, 30.0)]),
            (vec![(10.0, 20.0), (30.0, 50.0)], vec![], 1)
        );
        // The head cut out: the old row goes, the tail is a new one.
        assert_eq!(
            cut(&[gap(10.0, 50.0)], &[(0.0, 20.0), (20.0, 25.0)]),
            (vec![(25.0, 50.0)], vec![10.0], 0)
        );
        // All of it: deleted.
        assert_eq!(
            cut(&[gap(10.0, 50.0)], &[(0.0, 60.0)]),
            (vec![], vec![10.0], -1)
        );
        // Spans in any order, several gaps.
        assert_eq!(
            cut(
                &[gap(0.0, 10.0), gap(20.0, 40.0)],
                &[(30.0, 35.0), (5.0, 25.0)]
            ),
            (vec![(0.0, 5.0), (25.0, 30.0), (35.0, 40.0)], vec![20.0], 1)
        );
    }
}
