//! Property tests of history summaries ("History queries"): for random change sequences of
//! every built-in type, each bucket figure equals a brute-force evaluation over the same
//! sequence.
//!
//! Each case writes random points through the real store's writer, one batch per put, in a
//! random order, into a store that seals a key's head into a chunk every 3 points (so the
//! history spans many chunks and a head, and late writes rewrite sealed chunks): times on a coarse 10 s grid (so many land exactly on bucket edges), some
//! off the grid, some written twice (the later write wins), many with a `time` before points
//! already written. The stored history is checked against the last-write-wins sequence, then
//! summarised the way `query` does it (`point_before` the first edge as the carried point, a
//! `scan` of the window) by [`summarize`] with chunk sizes 2, 3, 7 and 20 000, so buckets are
//! cut at point times and their sub-summaries merged. The buckets start before, inside or
//! after the points, may be empty, and may extend past the last point.
//!
//! Every bucket's figures, and those of the merge of all buckets (the window's total), are
//! rendered by the plugin and compared with a brute force written from the issue's
//! semantics alone: a value holds from its time until the next point; before a key's first
//! point nothing is known (no coverage); buckets are half-open `[start, end)`. Concretely:
//!
//! - time-weighted figures (`mean`, `integral`, `coverage_seconds`, `time_*`, `fraction_true`,
//!   `time_per_state`, `longest_*`) add up the pieces `[t_i, t_{i+1})` of constant value
//!   clipped to the bucket; a run of equal values is one run;
//! - `min`/`max` are over the values held for some time inside the bucket;
//! - `count`, `first`, `last` are over the points inside the bucket;
//! - a change (`rises`, `falls`, `transitions`) is a point inside the bucket whose value
//!   differs from the point before it (whenever that one is, even in an earlier bucket); a
//!   repeat of the same value is no change, and the first point ever is none;
//! - `increase` is the value in force at the end minus the value in force just before the
//!   start (the first point's value when there was none), `rate` is it per known second.
//!
//! The same buckets are also summarised from the store as `query` does it
//! ([`summarize_stored`]): the store is given the type plugin as its chunk summariser, so
//! every sealed chunk carries its summary and a chunk wholly inside a bucket is answered by
//! it rather than by its points; late writes rewrite chunks and their summaries. Each type's
//! run checks that some chunks were indeed answered so.
//!
//! Floats are compared with a relative tolerance of 1e-9 (plus 1e-6 absolute), counts exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use komoku::plugins::{Limits, Plugin, Registry};
use komoku::query::summarize::{identity, summarize, summarize_stored};
use komoku::store::{ChunkSummarizer, Durability, Store, Write, WriteBatch, Writer};
use komoku::value::micros_to_time;
use komoku::value::{Point, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value as Json, json};
use tempfile::TempDir;

/// Cases per type.
const CASES: u32 = 64;
/// The time of grid slot 0: a realistic epoch, so float rounding is realistic too.
const T0: f64 = 1_700_000_000.0;
/// The coarse grid most times (and bucket edges) lie on, in seconds.
const GRID: f64 = 10.0;
/// Grid slots points are written at.
const SLOTS: u32 = 40;
/// Offsets that put a time off the grid (binary fractions: the figures stay exact).
const OFF_GRID: [f64; 5] = [0.25, 0.5, 2.5, 3.75, 7.125];
/// Bucket widths: sub-multiples and multiples of the grid, and widths across it.
const STEPS: [f64; 8] = [5.0, 7.5, 10.0, 20.0, 25.0, 30.0, 60.0, 100.0];
/// Points per plugin call: tiny ones cut buckets at point times, the big one never does.
const CHUNKS: [usize; 4] = [2, 3, 7, 20_000];

/// A built-in type under test, with the options it is summarised with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Numeric,
    Counter,
    Boolean,
    Uptime,
    StringState,
    StringLog,
    Decimal,
    Meter,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Kind::Numeric => "numeric",
            Kind::Counter => "counter",
            Kind::Boolean => "boolean",
            Kind::Uptime => "uptime",
            Kind::Decimal => "decimal",
            Kind::Meter => "meter",
            Kind::StringState | Kind::StringLog => "string",
        }
    }

    fn options(self) -> &'static str {
        match self {
            Kind::StringLog => r#"{"mode": "log"}"#,
            // Drops of 0.5 are noise, larger ones resets.
            Kind::Meter => r#"{"min_drop": 0.6}"#,
            _ => "{}",
        }
    }

    /// The figures asked for (a log's `transitions` and `coverage_seconds` must be null).
    fn figures(self) -> &'static [&'static str] {
        match self {
            Kind::Numeric => &[
                "mean",
                "min",
                "max",
                "first",
                "last",
                "count",
                "integral",
                "coverage_seconds",
            ],
            Kind::Counter => &[
                "mean",
                "min",
                "max",
                "first",
                "last",
                "count",
                "integral",
                "coverage_seconds",
                "increase",
                "rate",
            ],
            Kind::Boolean | Kind::Uptime => &[
                "time_true",
                "time_false",
                "fraction_true",
                "rises",
                "falls",
                "longest_true",
                "longest_false",
                "coverage_seconds",
            ],
            Kind::StringState => &[
                "time_per_state",
                "transitions",
                "count",
                "first",
                "last",
                "coverage_seconds",
            ],
            Kind::StringLog => &["count", "first", "last", "transitions", "coverage_seconds"],
            Kind::Decimal => &[
                "mean",
                "min",
                "max",
                "first",
                "last",
                "count",
                "integral",
                "coverage_seconds",
                "sum",
                "increase",
            ],
            Kind::Meter => &[
                "increase",
                "rate",
                "resets",
                "first",
                "last",
                "count",
                "coverage_seconds",
            ],
        }
    }

    /// Whether a rendered figure matches the brute force's: [`same`], but a decimal's mean is
    /// rendered at its scale of 2 digits, so it may be half a hundredth off the exact mean.
    fn same_as(self, figure: &str, got: &Json, want: &Json) -> bool {
        match (self, figure, got.as_f64(), want.as_f64()) {
            (Kind::Decimal, "mean", Some(a), Some(b)) => (a - b).abs() <= 0.005 + 1e-9,
            _ => same(got, want),
        }
    }

    /// The value a put of `seed` at `time` writes.
    fn value(self, case: &Case, time: f64, seed: u8) -> Value {
        match self {
            // Halves from -3 to 4.5: repeats are common.
            Kind::Numeric | Kind::Counter => Value::Number((f64::from(seed % 16) - 6.0) * 0.5),
            // Runs of `run` seconds alternating, with the odd value against the run.
            Kind::Boolean | Kind::Uptime => {
                let phase = ((time - T0) / case.run).floor().rem_euclid(2.0) == 0.0;
                Value::Bool(phase ^ seed.is_multiple_of(6))
            }
            Kind::StringState | Kind::StringLog => Value::Text(format!("s{}", seed % case.states)),
            // Quarters from -1.5 to 2.25: exact at the default scale of 2.
            Kind::Decimal => Value::Number((f64::from(seed % 16) - 6.0) * 0.25),
            // Readings from 0 to 7.5 in halves: rises, noise (-0.5) and resets.
            Kind::Meter => Value::Number(f64::from(seed % 16) * 0.5),
        }
    }
}

/// One random history and bucketing.
#[derive(Clone, Debug)]
struct Case {
    /// `(time, value seed)`, in the order they are written.
    writes: Vec<(f64, u8)>,
    /// The first bucket edge.
    start: f64,
    /// The bucket width.
    step: f64,
    /// How many buckets.
    buckets: usize,
    /// Booleans: the length of a run of equal values, in seconds.
    run: f64,
    /// Strings: how many distinct states (1 to 5).
    states: u8,
}

impl Case {
    fn edges(&self) -> Vec<f64> {
        (0..=self.buckets)
            .map(|i| self.start + self.step * i as f64)
            .collect()
    }
}

/// A time: a grid slot, a quarter of the time off the grid.
fn time() -> impl Strategy<Value = f64> {
    (
        0..SLOTS,
        prop::option::weighted(0.25, prop::sample::select(&OFF_GRID[..])),
    )
        .prop_map(|(slot, off)| T0 + f64::from(slot) * GRID + off.unwrap_or(0.0))
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((time(), any::<u8>()), 0..30),
        // From a minute before the first grid slot to well inside the points.
        (
            -6i32..=30,
            prop::option::weighted(0.2, prop::sample::select(&OFF_GRID[..])),
        ),
        prop::sample::select(&STEPS[..]),
        1usize..=12,
        prop::sample::select(&[15.0, 35.0, 60.0][..]),
        1u8..=5,
    )
        .prop_map(|(writes, (slot, off), step, buckets, run, states)| Case {
            writes,
            start: T0 + f64::from(slot) * GRID + off.unwrap_or(0.0),
            step,
            buckets,
            run,
            states,
        })
}

/// The built-in plugins, compiled once for all tests.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // A generous deadline: the machine running the tests may be busy.
        let limits = Limits {
            deadline: Duration::from_secs(30),
            ..Limits::default()
        };
        let registry = Registry::new(Path::new("no-plugin-dir"), None, limits);
        registry.load_builtin().expect("the built-in plugins load");
        registry
    })
}

/// The store's chunk summariser in these tests: the type under test, as the server's is.
struct TypeSummarizer {
    plugin: Arc<Plugin>,
    options: String,
}

impl ChunkSummarizer for TypeSummarizer {
    fn summarize(
        &self,
        _name: &str,
        carried: &Point,
        points: &[Point],
        span: (f64, f64),
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let summaries = self
            .plugin
            .summarize(&self.options, &[span.0, span.1], Some(carried), points)
            .expect("the plugin summarises a chunk");
        Some((
            identity(&self.plugin, &self.options),
            summaries.into_iter().next()?,
        ))
    }
}

/// A store of its own for one test, each case writing a key of its own.
struct Fixture {
    _dir: TempDir,
    store: Store,
    writer: Writer,
    keys: AtomicUsize,
    /// Chunks wholly inside a bucket, answered by their stored summary.
    whole_chunks: AtomicUsize,
}

impl Fixture {
    fn new(plugin: &Arc<Plugin>, options: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("a temp dir");
        // Heads sealed at 3 points: every case's history spans many chunks and a head, and
        // its late writes rewrite sealed chunks, so scans and buckets cross chunk edges.
        let store = Store::open(dir.path())
            .expect("the store opens")
            .with_seal_points(3);
        store.set_summarizer(Arc::new(TypeSummarizer {
            plugin: plugin.clone(),
            options: options.to_string(),
        }));
        let writer = store.writer(Durability::Sync, |e| panic!("fatal store error: {e}"));
        Fixture {
            _dir: dir,
            store,
            writer,
            keys: AtomicUsize::new(0),
            whole_chunks: AtomicUsize::new(0),
        }
    }

    fn fresh_key(&self) -> String {
        format!("k{}", self.keys.fetch_add(1, Ordering::Relaxed))
    }
}

fn fail(e: impl Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Runs the property for one type.
fn check_type(kind: Kind) {
    let plugin = registry().get(kind.type_name()).expect("a built-in type");
    let options = plugin.check_options(kind.options()).expect("valid options");
    let fixture = Fixture::new(&plugin, &options);
    // PROPTEST_CASES, when set, asks for more (or fewer) cases.
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => Config::default().cases,
        None => CASES,
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        check_case(&fixture, &plugin, &options, kind, &case)
    });
    fixture.writer.close();
    if let Err(e) = result {
        panic!("{kind:?}: {e}");
    }
    assert!(
        fixture.whole_chunks.load(Ordering::Relaxed) > 0,
        "{kind:?}: no bucket held a whole chunk: stored chunk summaries went untested"
    );
}

fn check_case(
    fixture: &Fixture,
    plugin: &Plugin,
    options: &str,
    kind: Kind,
    case: &Case,
) -> Result<(), TestCaseError> {
    // Write in the generated order, one batch per put (the writer may group them).
    let key = fixture.fresh_key();
    let puts: Vec<Point> = case
        .writes
        .iter()
        .map(|&(time, seed)| Point {
            time,
            value: kind.value(case, time, seed),
        })
        .collect();
    let pending: Vec<_> = puts
        .iter()
        .map(|point| {
            fixture.writer.submit(WriteBatch {
                writes: vec![Write::Point {
                    key: key.clone(),
                    point: point.clone(),
                }],
                after: None,
            })
        })
        .collect();
    for done in pending {
        done.blocking_recv().map_err(fail)?.map_err(fail)?;
    }

    // The stored history: one point per time, the last written, in time order.
    let mut latest: HashMap<u64, Value> = HashMap::new();
    for p in &puts {
        latest.insert(p.time.to_bits(), p.value.clone());
    }
    let mut history: Vec<Point> = latest
        .into_iter()
        .map(|(bits, value)| Point {
            time: f64::from_bits(bits),
            value,
        })
        .collect();
    history.sort_by(|a, b| a.time.total_cmp(&b.time));
    let stored: Vec<Point> = fixture
        .store
        .scan(&key, T0 - 1e6, T0 + 1e6)
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    prop_assert_eq!(&stored, &history, "the store keeps the last write per time");

    let edges = case.edges();
    let (first, last) = (edges[0], edges[edges.len() - 1]);
    let n = edges.len() - 1;
    let figures: Vec<String> = kind.figures().iter().map(|f| f.to_string()).collect();
    // Chunks wholly inside a bucket (their stored summaries answer for them).
    let view = fixture.store.view();
    let whole = view
        .chunk_summaries(&key, first, last)
        .map_err(fail)?
        .iter()
        .filter(|s| {
            let b = edges.partition_point(|e| *e <= s.first.time) - 1;
            b < n && micros_to_time(s.last_us + 1) <= edges[b + 1]
        })
        .count();
    fixture.whole_chunks.fetch_add(whole, Ordering::Relaxed);
    // `None`: from the store, as `query` does.
    for chunk in CHUNKS.into_iter().map(Some).chain([None]) {
        let mut summaries = match chunk {
            Some(chunk) => {
                let carried = fixture.store.point_before(&key, first).map_err(fail)?;
                let points = fixture.store.scan(&key, first, last);
                summarize(plugin, options, &edges, carried, points, chunk).map_err(fail)?
            }
            None => summarize_stored(&view, &key, plugin, options, &edges).map_err(fail)?,
        };
        prop_assert_eq!(summaries.len(), n);
        let total = plugin.merge(options, &summaries).map_err(fail)?;
        summaries.push(total);
        let rendered = plugin.render(options, &summaries, &figures).map_err(fail)?;
        let defaults = plugin.render(options, &summaries, &[]).map_err(fail)?;
        for i in 0..=n {
            // Row n is the whole window (the merge of every bucket).
            let (start, end) = if i < n {
                (edges[i], edges[i + 1])
            } else {
                (first, last)
            };
            let (want, want_default) = brute_force(kind, &history, start, end);
            let got = &rendered[i];
            for name in kind.figures() {
                let expected = want.get(*name).cloned().unwrap_or(Json::Null);
                prop_assert!(
                    kind.same_as(name, &got[*name], &expected),
                    "{} of [{}, {}) (row {} of {}, chunk {:?}): got {}, brute force says {}",
                    name,
                    start - T0,
                    end - T0,
                    i,
                    n,
                    chunk,
                    got[*name],
                    expected
                );
            }
            prop_assert!(
                kind.same_as("mean", &defaults[i], &want_default),
                "default figure of [{}, {}) (row {}, chunk {:?}): got {}, brute force says {}",
                start - T0,
                end - T0,
                i,
                chunk,
                defaults[i],
                want_default
            );
        }
    }
    Ok(())
}

/// A piece of history of constant value: `[from, to)`, `to` infinite for the latest.
struct Piece<'a> {
    from: f64,
    to: f64,
    value: &'a Value,
}

impl Piece<'_> {
    /// Seconds of the piece inside `[start, end)`.
    fn inside(&self, start: f64, end: f64) -> f64 {
        (self.to.min(end) - self.from.max(start)).max(0.0)
    }
}

/// The pieces between consecutive points; with `join`, equal neighbours are one piece (a run).
fn pieces(history: &[Point], join: bool) -> Vec<Piece<'_>> {
    let mut out: Vec<Piece<'_>> = Vec::new();
    for (i, p) in history.iter().enumerate() {
        let to = history.get(i + 1).map_or(f64::INFINITY, |next| next.time);
        match out.last_mut() {
            Some(prev) if join && prev.value == &p.value => prev.to = to,
            _ => out.push(Piece {
                from: p.time,
                to,
                value: &p.value,
            }),
        }
    }
    out
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => *n,
        other => panic!("not a number: {other:?}"),
    }
}

fn point_json(p: &Point) -> Json {
    json!({"time": p.time, "value": p.value.to_json()})
}

fn ratio(a: f64, b: f64) -> Json {
    if b > 0.0 { json!(a / b) } else { Json::Null }
}

/// The figures of `[start, end)` over `history` (sorted, one point per time), and the
/// default figure.
fn brute_force(
    kind: Kind,
    history: &[Point],
    start: f64,
    end: f64,
) -> (BTreeMap<&'static str, Json>, Json) {
    let inside: Vec<&Point> = history
        .iter()
        .filter(|p| p.time >= start && p.time < end)
        .collect();
    let count = json!(inside.len());
    let first = inside.first().map_or(Json::Null, |p| point_json(p));
    let last = inside.last().map_or(Json::Null, |p| point_json(p));
    // Time held by each value inside the bucket (zero-length pieces left out).
    let held: Vec<(&Value, f64)> = pieces(history, false)
        .iter()
        .map(|piece| (piece.value, piece.inside(start, end)))
        .filter(|(_, seconds)| *seconds > 0.0)
        .collect();
    let known: f64 = held.iter().map(|(_, s)| s).sum();
    // Changes: points inside whose value differs from the point before them.
    let changes: Vec<(&Value, &Value)> = history
        .windows(2)
        .filter(|w| w[1].time >= start && w[1].time < end && w[0].value != w[1].value)
        .map(|w| (&w[0].value, &w[1].value))
        .collect();
    let mut f = BTreeMap::new();
    let default = match kind {
        Kind::Numeric | Kind::Counter => {
            let integral: f64 = held.iter().map(|(v, s)| number(v) * s).sum();
            let values = held.iter().map(|(v, _)| number(v));
            let min = values.clone().reduce(f64::min);
            let max = values.reduce(f64::max);
            f.insert("mean", ratio(integral, known));
            f.insert("min", json!(min));
            f.insert("max", json!(max));
            f.insert("first", first);
            f.insert("last", last);
            f.insert("count", count);
            f.insert("integral", json!(integral));
            f.insert("coverage_seconds", json!(known));
            let before = history.iter().rev().find(|p| p.time < start);
            let at_end = history.iter().rev().find(|p| p.time < end);
            let base = before.or(inside.first().copied());
            let increase = base
                .zip(at_end)
                .map(|(b, e)| number(&e.value) - number(&b.value));
            f.insert("increase", json!(increase));
            f.insert(
                "rate",
                match increase {
                    Some(i) => ratio(i, known),
                    None => Json::Null,
                },
            );
            ratio(integral, known)
        }
        Kind::Boolean | Kind::Uptime => {
            let time = |state: bool| -> f64 {
                held.iter()
                    .filter(|(v, _)| **v == Value::Bool(state))
                    .map(|(_, s)| s)
                    .sum()
            };
            let longest = |state: bool| -> f64 {
                pieces(history, true)
                    .iter()
                    .filter(|run| *run.value == Value::Bool(state))
                    .map(|run| run.inside(start, end))
                    .fold(0.0, f64::max)
            };
            let into = |state: bool| {
                changes
                    .iter()
                    .filter(|(_, to)| **to == Value::Bool(state))
                    .count()
            };
            f.insert("time_true", json!(time(true)));
            f.insert("time_false", json!(time(false)));
            f.insert("fraction_true", ratio(time(true), known));
            f.insert("rises", json!(into(true)));
            f.insert("falls", json!(into(false)));
            f.insert("longest_true", json!(longest(true)));
            f.insert("longest_false", json!(longest(false)));
            f.insert("coverage_seconds", json!(known));
            ratio(time(true), known)
        }
        Kind::StringState => {
            let mut per_state: BTreeMap<String, f64> = BTreeMap::new();
            for (v, s) in &held {
                if let Value::Text(t) = v {
                    *per_state.entry(t.clone()).or_default() += s;
                }
            }
            // The state with the most time, ties to the least.
            let dominant = per_state
                .iter()
                .fold(None::<(&String, f64)>, |best, (state, &t)| match best {
                    Some((_, bt)) if bt >= t => best,
                    _ => Some((state, t)),
                })
                .map_or(Json::Null, |(state, _)| json!(state));
            let map: Map<String, Json> = per_state
                .iter()
                .map(|(state, t)| (state.clone(), json!(t)))
                .collect();
            f.insert("time_per_state", Json::Object(map));
            f.insert("transitions", json!(changes.len()));
            f.insert("count", count);
            f.insert("first", first);
            f.insert("last", last);
            f.insert("coverage_seconds", json!(known));
            dominant
        }
        Kind::Decimal => {
            let integral: f64 = held.iter().map(|(v, s)| number(v) * s).sum();
            let values = held.iter().map(|(v, _)| number(v));
            let before = history.iter().rev().find(|p| p.time < start);
            let at_end = history.iter().rev().find(|p| p.time < end);
            let base = before.or(inside.first().copied());
            let increase = base
                .zip(at_end)
                .map(|(b, e)| number(&e.value) - number(&b.value));
            // The exact mean: the plugin renders it at the key's scale (2 digits), so the
            // two are compared within half a hundredth (see `same_as`).
            let mean = (known > 0.0).then(|| integral / known);
            f.insert("mean", json!(mean));
            f.insert("min", json!(values.clone().reduce(f64::min)));
            f.insert("max", json!(values.reduce(f64::max)));
            f.insert("first", first);
            f.insert("last", last);
            f.insert("count", count);
            f.insert("integral", json!(integral));
            f.insert("coverage_seconds", json!(known));
            f.insert(
                "sum",
                json!(inside.iter().map(|p| number(&p.value)).sum::<f64>()),
            );
            f.insert("increase", json!(increase));
            json!(mean)
        }
        Kind::Meter => {
            // Consecutive readings: a rise, noise (a drop under 0.6, counted as it is) or a
            // reset (the new reading is all new usage).
            let (mut increase, mut resets) = (0.0, 0);
            for w in history.windows(2) {
                if w[1].time >= start && w[1].time < end {
                    let (a, b) = (number(&w[0].value), number(&w[1].value));
                    if b >= a || a - b < 0.6 {
                        increase += b - a;
                    } else {
                        increase += b;
                        resets += 1;
                    }
                }
            }
            let known_at_all = history.iter().any(|p| p.time < end);
            let increase = known_at_all.then_some(increase);
            f.insert("increase", json!(increase));
            f.insert(
                "rate",
                match increase {
                    Some(i) => ratio(i, known),
                    None => Json::Null,
                },
            );
            f.insert("resets", json!(resets));
            f.insert("first", first);
            f.insert("last", last);
            f.insert("count", count);
            f.insert("coverage_seconds", json!(known));
            json!(increase)
        }
        Kind::StringLog => {
            let default = inside.last().map_or(Json::Null, |p| p.value.to_json());
            f.insert("count", count);
            f.insert("first", first);
            f.insert("last", last);
            default
        }
    };
    (f, default)
}

/// Equal JSON, numbers within tolerance; in objects a missing entry counts as 0 (a state
/// that held no time may be listed or not).
fn same(got: &Json, want: &Json) -> bool {
    match (got, want) {
        (Json::Number(a), Json::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            (a - b).abs() <= 1e-6 + 1e-9 * a.abs().max(b.abs())
        }
        (Json::Object(a), Json::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let zero = json!(0);
            keys.into_iter()
                .all(|k| same(a.get(k).unwrap_or(&zero), b.get(k).unwrap_or(&zero)))
        }
        _ => got == want,
    }
}

#[test]
fn numeric_buckets_match_brute_force() {
    check_type(Kind::Numeric);
}

#[test]
fn counter_buckets_match_brute_force() {
    check_type(Kind::Counter);
}

#[test]
fn boolean_buckets_match_brute_force() {
    check_type(Kind::Boolean);
}

#[test]
fn uptime_buckets_match_brute_force() {
    check_type(Kind::Uptime);
}

#[test]
fn string_state_buckets_match_brute_force() {
    check_type(Kind::StringState);
}

#[test]
fn string_log_buckets_match_brute_force() {
    check_type(Kind::StringLog);
}

#[test]
fn decimal_buckets_match_brute_force() {
    check_type(Kind::Decimal);
}

#[test]
fn meter_buckets_match_brute_force() {
    check_type(Kind::Meter);
}
