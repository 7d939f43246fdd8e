//! Bucket summaries straight from the store, in bounded memory.
//!
//! Points are read in time order and handed to the key's plugin at most [`CHUNK`] at a time,
//! however many a bucket holds: a bucket too full for one call is cut into sub-buckets at
//! point times, and their summaries are merged (summaries of adjacent spans merge exactly).
//! A year of points at 10 s is summarised without ever holding more than one chunk.
//!
//! [`summarize_stored`] reads a key's history from the store and uses the summaries its
//! sealed chunks carry (see "Chunk summaries" in [`crate::store`]): a chunk that lies wholly
//! inside one bucket is not decoded; its stored summary of `[first + 1 µs, last + 1 µs)`
//! stands for that piece of the bucket, and only its first and last points take part in
//! summarising the rest (the first point with the stretch before it, the last carried into
//! the stretch after it). The bucket's pieces are merged in time order, as sub-buckets are.

use std::collections::HashMap;

use crate::error::Result;
use crate::plugins::Plugin;
use crate::store::{ChunkSummary, View};
use crate::value::{Point, Time, micros_to_time};

/// Points handed to a plugin per `summarize` call.
pub const CHUNK: usize = 20_000;

/// Sub-bucket summaries of one bucket kept before they are merged down to one.
const MAX_PARTS: usize = 64;

/// What a chunk summary made by `plugin` under `options` is valid for: one made under
/// another version or other options is not used.
pub fn identity(plugin: &Plugin, options: &str) -> Vec<u8> {
    format!("{}@{}\n{options}", plugin.info.name, plugin.info.version).into_bytes()
}

/// A piece of the refined buckets [`summarize_stored`] summarises.
enum Piece {
    /// Summarised from points, part of this query bucket.
    Points(usize),
    /// The inside of the `usize`-th usable chunk, part of this query bucket.
    Stored(usize, usize),
}

/// One summary per bucket between consecutive `edges` (ascending), of key `key`'s raw
/// history in `view`, with the value in force at `edges[0]` carried in: what [`summarize`]
/// gives from `view.scan`, with every chunk wholly inside a bucket answered by its stored
/// summary instead of its points.
pub fn summarize_stored(
    view: &View,
    key: &str,
    plugin: &Plugin,
    options: &str,
    edges: &[Time],
) -> Result<Vec<Vec<u8>>> {
    let n = edges.len().saturating_sub(1);
    if n == 0 {
        return Ok(Vec::new());
    }
    let (since, until) = (edges[0], edges[n]);
    let carried = view.point_before(key, since)?;
    let me = identity(plugin, options);
    let mut usable: Vec<(usize, ChunkSummary)> = Vec::new();
    for s in view.chunk_summaries(key, since, until)? {
        if s.identity != me {
            continue;
        }
        // The bucket the chunk starts in (edges[b] <= its first time); used when its inside
        // ends within that bucket too.
        let b = edges
            .partition_point(|e| *e <= s.first.time)
            .saturating_sub(1);
        if b < n && micros_to_time(s.last_us.saturating_add(1)) <= edges[b + 1] {
            usable.push((b, s));
        }
    }
    if usable.is_empty() {
        return summarize(
            plugin,
            options,
            edges,
            carried,
            view.scan(key, since, until),
            CHUNK,
        );
    }
    // Each usable chunk's inside becomes a piece of its own between the query's edges.
    let mut refined = vec![since];
    let mut pieces = Vec::with_capacity(n + 2 * usable.len());
    let mut next = usable.iter().enumerate().peekable();
    for b in 0..n {
        pieces.push(Piece::Points(b));
        while let Some((i, (_, s))) = next.next_if(|(_, (ub, _))| *ub == b) {
            refined.push(micros_to_time(s.first_us + 1));
            pieces.push(Piece::Stored(b, i));
            let end = micros_to_time(s.last_us.saturating_add(1));
            if end < edges[b + 1] {
                refined.push(end);
                pieces.push(Piece::Points(b));
            }
        }
        refined.push(edges[b + 1]);
    }
    let skip: HashMap<_, _> = usable
        .iter()
        .map(|(_, s)| (s.first_us, [s.first.clone(), s.last.clone()]))
        .collect();
    let points = view.scan_skipping(key, since, until, skip);
    let summaries = summarize(plugin, options, &refined, carried, points, CHUNK)?;
    let mut stored: Vec<Option<Vec<u8>>> =
        usable.into_iter().map(|(_, s)| Some(s.summary)).collect();
    let mut parts: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    for (piece, summary) in pieces.into_iter().zip(summaries) {
        match piece {
            Piece::Points(b) => parts[b].push(summary),
            // Summarised from the first and last points only: replaced by the stored one.
            Piece::Stored(b, i) => parts[b].extend(stored[i].take()),
        }
    }
    parts
        .into_iter()
        .map(|mut p| {
            if p.len() == 1 {
                Ok(p.pop().expect("one part"))
            } else {
                plugin.merge(options, &p)
            }
        })
        .collect()
}

/// One summary per bucket between consecutive `edges` (ascending, at least two).
///
/// `carried` is the point in force at `edges[0]`; `points` yields the points from
/// `edges[0]` on, in time order (points at or after the last edge are ignored).
/// `chunk` bounds the points per plugin call (normally [`CHUNK`]; tests use tiny ones).
pub fn summarize(
    plugin: &Plugin,
    options: &str,
    edges: &[Time],
    carried: Option<Point>,
    points: impl Iterator<Item = Result<Point>>,
    chunk: usize,
) -> Result<Vec<Vec<u8>>> {
    let chunk = chunk.max(2);
    let n = edges.len().saturating_sub(1);
    let end = edges.last().copied().unwrap_or(f64::NEG_INFINITY);
    let mut run = Run {
        plugin,
        options,
        edges,
        out: Vec::with_capacity(n),
        bucket: 0,
        part_start: edges.first().copied().unwrap_or(end),
        parts: Vec::new(),
        carried,
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut points = points.filter(|p| p.as_ref().map_or(true, |p| p.time < end));
    let mut buffer: Vec<Point> = Vec::with_capacity(chunk);
    loop {
        while buffer.len() < chunk {
            match points.next() {
                Some(p) => buffer.push(p?),
                None => break,
            }
        }
        if buffer.len() < chunk {
            // The last of the points: everything up to the last edge is known.
            run.advance(&buffer, end)?;
            break;
        }
        // Summarise up to (not including) the newest point read; it opens the next round,
        // so a bucket cut here is cut at a point's time.
        let hold = buffer.pop();
        let cut = hold.as_ref().map_or(end, |p| p.time);
        run.advance(&buffer, cut)?;
        buffer.clear();
        buffer.extend(hold);
    }
    Ok(run.out)
}

/// The state of one `summarize`: buckets before `bucket` are done; bucket `bucket` is done
/// from its start to `part_start`, as `parts`.
struct Run<'a> {
    plugin: &'a Plugin,
    options: &'a str,
    edges: &'a [Time],
    out: Vec<Vec<u8>>,
    bucket: usize,
    part_start: Time,
    parts: Vec<Vec<u8>>,
    carried: Option<Point>,
}

impl Run<'_> {
    /// Summarises `[part_start, cut)`, given every point in it (sorted, all before `cut`).
    fn advance(&mut self, points: &[Point], cut: Time) -> Result<()> {
        let n = self.edges.len() - 1;
        // The bucket `cut` falls in (n when it is the last edge).
        let last = if cut >= self.edges[n] {
            n
        } else {
            self.edges.partition_point(|e| *e <= cut).saturating_sub(1)
        };
        let mut points = points;
        if last > self.bucket {
            // Buckets bucket..last end before `cut`: finish them in one call.
            let split = points.partition_point(|p| p.time < self.edges[last]);
            let mut edges = Vec::with_capacity(last - self.bucket + 1);
            edges.push(self.part_start);
            edges.extend_from_slice(&self.edges[self.bucket + 1..=last]);
            let done = self.call(&edges, &points[..split])?;
            let mut done = done.into_iter();
            if let Some(first) = done.next() {
                if self.parts.is_empty() {
                    self.out.push(first);
                } else {
                    self.parts.push(first);
                    let merged = self.plugin.merge(self.options, &self.parts)?;
                    self.parts.clear();
                    self.out.push(merged);
                }
            }
            self.out.extend(done);
            points = &points[split..];
            self.bucket = last;
            self.part_start = self.edges[last];
        }
        if self.bucket < n && cut > self.part_start {
            // Part of the bucket `cut` falls in.
            let part = self.call(&[self.part_start, cut], points)?;
            self.parts.extend(part);
            self.part_start = cut;
            if self.parts.len() >= MAX_PARTS {
                let merged = self.plugin.merge(self.options, &self.parts)?;
                self.parts = vec![merged];
            }
        }
        Ok(())
    }

    fn call(&mut self, edges: &[Time], points: &[Point]) -> Result<Vec<Vec<u8>>> {
        let out = self
            .plugin
            .summarize(self.options, edges, self.carried.as_ref(), points)?;
        if let Some(last) = points.last() {
            self.carried = Some(last.clone());
        }
        Ok(out)
    }
}
