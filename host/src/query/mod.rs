//! `query`: every question about a key's past, in both dialects.
//!
//! One request, four shapes, chosen by which field is present:
//! - `at`: the point in force at a time (`{"time", "value"}` or `null`);
//! - `last`: the newest N points, oldest first;
//! - `spans`: the periods during which the key held a value;
//! - otherwise a summary of `[since, until)`: per-bucket figures (with `step`, epoch- or
//!   calendar-aligned in a time zone), the whole window's figures (`total`), and optionally
//!   the buckets averaged by local hour of day or by weekday (`group`).
//!
//! Figures are computed by the key's plugin from its mergeable summaries ([`summarize`]);
//! the host only cuts time into buckets, streams points to the plugin and averages groups.
//! A value holds from its time until the next point; time before a key's first point is
//! unknown and does not count as coverage.
//!
//! v1 `fetch` is a translation into these shapes ([`fetch`]): one engine answers both, so
//! both refuse the same way where history was compacted. The engine reads the database
//! through [`History`] only.

pub mod buckets;
pub mod fetch;

pub use crate::summary::{summarize, tiers};

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::plugins::Plugin;
use crate::store::{Store, View};
use crate::value::{Point, Time, now, number_json};

use buckets::Step;

pub use crate::db::MAX_POINTS;
/// Most buckets one summary answers.
pub const MAX_BUCKETS: usize = 10_000;

/// A parsed `query` request.
#[derive(Debug, Clone)]
pub struct Query {
    pub key: String,
    pub shape: Shape,
}

/// What a `query` asks.
#[derive(Debug, Clone)]
pub enum Shape {
    /// The point in force at a time.
    At(Time),
    /// The newest `count` points from `since` (default: the first) up to `until` (default:
    /// now). The wire's `last` has no `since`; v1's raw `fetch` sets it.
    Last {
        count: usize,
        since: Option<Time>,
        until: Option<Time>,
    },
    /// The newest point before the latest one whose value differs from the latest one's
    /// (v1's `single: "previous"`), looked for among the newest [`MAX_POINTS`] points.
    Previous,
    /// The periods during which the key held `value`.
    Spans {
        value: Json,
        since: Option<Time>,
        until: Option<Time>,
    },
    /// Figures per bucket and for the whole window.
    Summary(SummaryQuery),
}

/// The summary shape's parameters.
#[derive(Debug, Clone, Default)]
pub struct SummaryQuery {
    /// Default: the key's first point.
    pub since: Option<Time>,
    /// Default: now.
    pub until: Option<Time>,
    /// Default: one bucket for the whole window.
    pub step: Option<Step>,
    /// IANA zone for calendar steps and grouping. Default UTC.
    pub tz: Option<String>,
    /// Default: every figure the type knows.
    pub figures: Option<Vec<String>>,
    pub group: Option<Group>,
    /// Only buckets starting on these local ISO weekdays (1 = Monday … 7 = Sunday).
    pub weekdays: Option<Vec<u8>>,
    /// Adds `value` to each bucket: the type's default figure (what a stepped v1 `fetch`
    /// gives). Not on the wire.
    pub default_figure: bool,
}

/// How buckets are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// By the local hour (0–23) the bucket starts in.
    Hour,
    /// By the local ISO weekday (1–7) the bucket starts on.
    Weekday,
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::Hour => "hour",
            Group::Weekday => "weekday",
        }
    }
}

impl Query {
    /// Reads `{"key": ..., ...}`, the argument of a `query` request.
    pub fn parse(args: &Json) -> Result<Query> {
        let Json::Object(args) = args else {
            return Err(Error::query("query takes an object"));
        };
        let mut key = None;
        let mut at = None;
        let mut last = None;
        let mut spans = None;
        let mut s = SummaryQuery::default();
        for (name, v) in args {
            match name.as_str() {
                "key" => {
                    key = Some(
                        v.as_str()
                            .ok_or_else(|| Error::query("key must be a string"))?,
                    )
                }
                "at" => at = Some(time_arg(name, v)?),
                "last" => last = Some(count_arg(name, v, MAX_POINTS)?),
                "spans" => spans = Some(v.clone()),
                "since" => s.since = Some(time_arg(name, v)?),
                "until" => s.until = Some(time_arg(name, v)?),
                "step" => s.step = Some(Step::parse(v)?),
                "tz" => {
                    s.tz = Some(
                        v.as_str()
                            .ok_or_else(|| Error::query("tz must be a time zone name"))?
                            .to_string(),
                    )
                }
                "figures" => {
                    let list = v
                        .as_array()
                        .and_then(|a| a.iter().map(|f| f.as_str().map(String::from)).collect())
                        .ok_or_else(|| Error::query("figures must be a list of names"))?;
                    s.figures = Some(list);
                }
                "group" => {
                    s.group = Some(match v.as_str() {
                        Some("hour") => Group::Hour,
                        Some("weekday") => Group::Weekday,
                        _ => return Err(Error::query("group must be \"hour\" or \"weekday\"")),
                    })
                }
                "weekdays" => {
                    let days: Option<Vec<u8>> = v.as_array().and_then(|a| {
                        a.iter()
                            .map(|d| d.as_u64().filter(|d| (1..=7).contains(d)).map(|d| d as u8))
                            .collect()
                    });
                    s.weekdays = Some(days.ok_or_else(|| {
                        Error::query("weekdays must be a list of 1 (Monday) … 7 (Sunday)")
                    })?);
                }
                other => return Err(Error::query(format!("unknown query field {other:?}"))),
            }
        }
        let key = key.ok_or_else(|| Error::query("missing key"))?.to_string();
        if s.weekdays.is_some() && s.group.is_none() {
            return Err(Error::query("weekdays filters groups: use it with group"));
        }
        let summary_only = s.step.is_some()
            || s.tz.is_some()
            || s.figures.is_some()
            || s.group.is_some()
            || s.weekdays.is_some();
        let shape = match (at, last, spans) {
            (Some(t), None, None) if !summary_only && s.since.is_none() && s.until.is_none() => {
                Shape::At(t)
            }
            (None, Some(count), None) if !summary_only && s.since.is_none() => Shape::Last {
                count,
                since: None,
                until: s.until,
            },
            (None, None, Some(value)) if !summary_only => Shape::Spans {
                value,
                since: s.since,
                until: s.until,
            },
            (None, None, None) => Shape::Summary(s),
            _ => {
                return Err(Error::query(
                    "a query asks one thing: at, last, spans, or a summary (since/until/step/\
                     figures/group); see the README for which fields go together",
                ));
            }
        };
        Ok(Query { key, shape })
    }

    /// Answers the query; a key that does not exist is `unknown_key`.
    pub async fn run(self, db: &impl History) -> Result<Json> {
        match self.answer(db).await? {
            Some(answer) => Ok(answer),
            None => Err(Error::UnknownKey(self.key)),
        }
    }

    /// Answers the query, or `None` when the key does not exist.
    pub async fn answer(&self, db: &impl History) -> Result<Option<Json>> {
        let Some((effective, plugin)) = db.describe(&self.key).await else {
            return Ok(None);
        };
        // History agrees with `get`: writes already queued land first.
        let store = db.settled_store().await?;
        let key = self.key.clone();
        let answer = match self.shape.clone() {
            Shape::At(t) => {
                blocking(move || {
                    let view = store.view();
                    let found = view.point_before(&key, t.next_up())?;
                    // Before the raw watermark only the point carried into it is left: exact
                    // when it is at or before `t`; otherwise the answer is in summaries.
                    if found.is_none()
                        && let Some(raw_from) = compacted_within(&view, &key, t, t)?
                    {
                        return Err(compacted(raw_from));
                    }
                    Ok(found.map_or(
                        Json::Null,
                        |p| json!({"time": number_json(p.time), "value": p.value.to_json()}),
                    ))
                })
                .await
            }
            Shape::Last {
                count,
                since,
                until,
            } => {
                blocking(move || {
                    let since = since.unwrap_or(f64::NEG_INFINITY);
                    let until = until.unwrap_or(f64::INFINITY);
                    let view = store.view();
                    // Points with since <= time <= until, newest first, from the snapshot the
                    // check below reads too.
                    let mut newest = view
                        .scan(&key, since, until.next_up())
                        .rev()
                        .take(count)
                        .collect::<Result<Vec<_>>>()?;
                    // Fewer points than asked, and older ones were compacted: not all of them.
                    if newest.len() < count
                        && let Some(raw_from) = compacted_within(&view, &key, since, until)?
                    {
                        return Err(compacted(raw_from));
                    }
                    newest.reverse();
                    Ok(Json::Array(newest.iter().map(point_row).collect()))
                })
                .await
            }
            Shape::Previous => {
                let Some(latest) = db.latest(&key).await else {
                    return Ok(Some(Json::Null));
                };
                blocking(move || previous(&store.view(), &key, &latest)).await
            }
            Shape::Spans {
                value,
                since,
                until,
            } => blocking(move || spans(&store, &key, &value, since, until)).await,
            Shape::Summary(s) => {
                let plugin = plugin?;
                blocking(move || summary(&store, &key, &plugin, &effective, s)).await
            }
        };
        answer.map(Some)
    }
}

/// What the engine needs of the database, and nothing more. [`Db`] is the one
/// implementation; the engine never sees keys' state, locks or the writer.
pub trait History: Sync {
    /// A key's effective options and its plugin (an error if its type is not loaded: raw
    /// points stay readable); `None` when the key does not exist.
    fn describe(
        &self,
        key: &str,
    ) -> impl Future<Output = Option<(String, Result<Arc<Plugin>>)>> + Send;
    /// The key's latest point.
    fn latest(&self, key: &str) -> impl Future<Output = Option<Point>> + Send;
    /// The store, once every write queued so far is in it.
    fn settled_store(&self) -> impl Future<Output = Result<Store>> + Send;
}

impl History for Db {
    async fn describe(&self, key: &str) -> Option<(String, Result<Arc<Plugin>>)> {
        Db::describe(self, key).await
    }

    async fn latest(&self, key: &str) -> Option<Point> {
        Db::latest(self, key).await
    }

    async fn settled_store(&self) -> Result<Store> {
        self.settled().await?;
        Ok(self.store().clone())
    }
}

/// The newest point before `latest` whose value differs from it: `null` when every point
/// differs from none. The walk is bounded: among the newest [`MAX_POINTS`] points, else
/// `limit_exceeded`; when it reaches compacted history first, `compacted` (the answer would
/// be a point that is gone).
fn previous(view: &View, key: &str, latest: &Point) -> Result<Json> {
    let mut seen = 0;
    for p in view
        .scan(key, f64::NEG_INFINITY, latest.time.next_up())
        .rev()
    {
        let p = p?;
        if p.value != latest.value {
            return Ok(point_row(&p));
        }
        seen += 1;
        if seen == MAX_POINTS {
            return Err(Error::LimitExceeded(format!(
                "no other value among the newest {MAX_POINTS} points: ask spans or a summary \
                 (since, until, step) for when the value changed"
            )));
        }
    }
    if let Some(raw_from) = compacted_within(view, key, f64::NEG_INFINITY, latest.time)? {
        return Err(compacted(raw_from));
    }
    Ok(Json::Null)
}

/// The key's raw watermark when `[since, until]` reaches into history compacted before it
/// (from the oldest summary to the watermark).
fn compacted_within(view: &View, key: &str, since: Time, until: Time) -> Result<Option<Time>> {
    let Some(state) = view.compaction_state(key)? else {
        return Ok(None);
    };
    let start = tiers::history_start(view, key)?.unwrap_or(state.raw_from);
    let reaches = since < state.raw_from && start <= until && start < state.raw_from;
    Ok(reaches.then_some(state.raw_from))
}

/// The answer for points asked of compacted history: they are gone, summaries remain.
fn compacted(raw_from: Time) -> Error {
    Error::Refused {
        code: "compacted".into(),
        message: format!(
            "points before {raw_from} are compacted into summaries; ask a summary (since, \
             until, step) for that period"
        ),
    }
}

/// `[[start, duration], ...]`: the periods within `[since, until]` (default: the last 24
/// hours) during which the key held `wanted`. A period that began before `since` starts at
/// `since`; one still going on at `until` has duration `null` when `until` is now or later
/// (it is open), and is cut at `until` otherwise.
pub fn spans(
    store: &Store,
    key: &str,
    wanted: &Json,
    since: Option<Time>,
    until: Option<Time>,
) -> Result<Json> {
    let open_ended = until.is_none_or(|u| u >= now());
    let until = until.unwrap_or_else(now);
    let since = since.unwrap_or(until - 86_400.0);
    let view = store.view();
    if let Some(raw_from) = compacted_within(&view, key, since, until)? {
        return Err(compacted(raw_from));
    }
    let holds = |p: &Point| p.value.to_json() == *wanted;
    let mut out = Vec::new();
    let mut open = view
        .point_before(key, since)?
        .filter(|p| holds(p))
        .map(|_| since);
    // The same snapshot as the check above: a compaction step between them cannot take
    // points the check said were there. `until` is inclusive.
    for p in view.scan(key, since, until.next_up()) {
        let p = p?;
        match (open, holds(&p)) {
            (None, true) => open = Some(p.time),
            (Some(start), false) => {
                if out.len() == MAX_POINTS {
                    return Err(Error::LimitExceeded(format!(
                        "more than {MAX_POINTS} spans: narrow since/until"
                    )));
                }
                out.push(json!([number_json(start), number_json(p.time - start)]));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        let duration = if open_ended {
            Json::Null
        } else {
            number_json(until - start)
        };
        out.push(json!([number_json(start), duration]));
    }
    Ok(Json::Array(out))
}

/// The summary shape: buckets, total, groups.
fn summary(
    store: &Store,
    key: &str,
    plugin: &Arc<Plugin>,
    options: &str,
    q: SummaryQuery,
) -> Result<Json> {
    let tz = buckets::zone(q.tz.as_deref())?;
    let tz_name = q.tz.clone().unwrap_or_else(|| "UTC".into());
    let until = q.until.unwrap_or_else(now);
    let view = store.view();
    let since = match q.since {
        Some(s) => s,
        // No history: nothing to summarise.
        None => tiers::history_start(&view, key)?.unwrap_or(until),
    };
    let edges = match q.step {
        _ if since >= until => vec![since, since],
        Some(step) => buckets::edges(step, &tz, since, until, MAX_BUCKETS)?,
        None => vec![since, until],
    };
    // Time after now is not known yet: summaries stop there; buckets keep their length.
    let horizon = now();
    let clipped: Vec<Time> = edges.iter().map(|e| e.min(horizon)).collect();
    let (bucket_summaries, resolution) =
        tiers::bucket_summaries(&view, key, plugin, options, &clipped)?;
    let total = plugin.merge(options, &bucket_summaries)?;

    // Which figures: the caller's, or every one the type knows; coverage needs
    // `coverage_seconds` when the type has it.
    // An old plugin that could not list its figures answers named figures only.
    let known = &plugin.figures;
    let asked = match &q.figures {
        Some(asked) => asked.clone(),
        None if !known.is_empty() => known.clone(),
        None => {
            return Err(Error::query(
                "name the figures: the type cannot list its own (a komoku:types@0.1.0 plugin that refuses rendering \"*\")",
            ));
        }
    };
    let want_coverage = known.iter().any(|f| f == "coverage_seconds");
    let mut render_names = asked.clone();
    if want_coverage && !render_names.iter().any(|f| f == "coverage_seconds") {
        render_names.push("coverage_seconds".to_string());
    }
    let mut all = bucket_summaries;
    all.push(total);
    let rendered = plugin.render(options, &all, &render_names)?;
    let rendered = rendered.as_array().cloned().unwrap_or_default();
    let row = |start: Time, end: Time, figures: &Json| -> Map<String, Json> {
        let mut out = Map::new();
        out.insert("start".into(), number_json(start));
        out.insert("end".into(), number_json(end));
        let covered = figures.get("coverage_seconds").and_then(Json::as_f64);
        out.insert(
            "coverage".into(),
            match covered {
                Some(c) if end > start => number_json(c / (end - start)),
                _ => Json::Null,
            },
        );
        for name in &asked {
            out.insert(
                name.clone(),
                figures.get(name).cloned().unwrap_or(Json::Null),
            );
        }
        out
    };
    let n = edges.len() - 1;
    let mut rows: Vec<Map<String, Json>> = (0..n)
        .map(|i| row(edges[i], edges[i + 1], &rendered[i]))
        .collect();
    if q.default_figure {
        let defaults = plugin.render(options, &all[..n], &[])?;
        for (r, v) in rows
            .iter_mut()
            .zip(defaults.as_array().into_iter().flatten())
        {
            r.insert("value".into(), v.clone());
        }
    }
    let total = row(edges[0], edges[n], &rendered[n]);

    let mut answer = Map::new();
    answer.insert("key".into(), Json::String(key.to_string()));
    answer.insert("type".into(), Json::String(plugin.info.name.clone()));
    answer.insert("since".into(), number_json(since));
    answer.insert("until".into(), number_json(until));
    answer.insert("tz".into(), Json::String(tz_name));
    answer.insert("resolution".into(), Json::String(resolution));
    answer.insert("total".into(), Json::Object(total));
    match q.group {
        None => {
            answer.insert(
                "buckets".into(),
                Json::Array(rows.into_iter().map(Json::Object).collect()),
            );
        }
        Some(group) => {
            let mut groups: BTreeMap<u8, Vec<Map<String, Json>>> = BTreeMap::new();
            for r in rows {
                let start = r.get("start").and_then(Json::as_f64).unwrap_or(0.0);
                if let Some(days) = &q.weekdays
                    && !days.contains(&buckets::local_weekday(start, &tz)?)
                {
                    continue;
                }
                let slot = match group {
                    Group::Hour => buckets::local_hour(start, &tz)?,
                    Group::Weekday => buckets::local_weekday(start, &tz)?,
                };
                groups.entry(slot).or_default().push(r);
            }
            let mut figure_names = vec!["coverage".to_string()];
            figure_names.extend(asked.iter().cloned());
            let out: Vec<Json> = groups
                .into_iter()
                .map(|(slot, members)| {
                    let mut g = Map::new();
                    g.insert(group.name().into(), Json::from(slot));
                    g.insert("buckets".into(), Json::from(members.len()));
                    for name in &figure_names {
                        let values: Vec<&Json> =
                            members.iter().filter_map(|m| m.get(name)).collect();
                        g.insert(name.clone(), average(&values));
                    }
                    Json::Object(g)
                })
                .collect();
            answer.insert("groups".into(), Json::Array(out));
        }
    }
    Ok(Json::Object(answer))
}

/// The mean of a figure over a group's buckets: numbers average over the buckets where the
/// figure is known; objects of numbers (time per state) average per member, a missing member
/// counting as 0; anything else (points) has no mean. Means of finite numbers are finite.
fn average(values: &[&Json]) -> Json {
    let numbers: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
    if !numbers.is_empty() {
        let n = numbers.len() as f64;
        let sum = numbers.iter().sum::<f64>();
        // Near the largest doubles the sum overflows where the mean does not: scale first.
        let mean = if sum.is_finite() {
            sum / n
        } else {
            numbers.iter().map(|x| x / n).sum()
        };
        return number_json(mean);
    }
    let objects: Vec<&Map<String, Json>> = values.iter().filter_map(|v| v.as_object()).collect();
    if objects.is_empty() {
        return Json::Null;
    }
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for o in &objects {
        for (k, v) in o.iter() {
            *sums.entry(k.as_str()).or_default() += v.as_f64().unwrap_or(0.0);
        }
    }
    Json::Object(
        sums.into_iter()
            .map(|(k, sum)| (k.to_string(), number_json(sum / objects.len() as f64)))
            .collect(),
    )
}

fn point_row(p: &Point) -> Json {
    json!([number_json(p.time), p.value.to_json()])
}

fn time_arg(name: &str, v: &Json) -> Result<Time> {
    v.as_f64()
        .filter(|t| t.is_finite())
        .ok_or_else(|| Error::query(format!("{name} must be a time in seconds since the epoch")))
}

fn count_arg(name: &str, v: &Json, max: usize) -> Result<usize> {
    let n = v
        .as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::query(format!("{name} must be a positive integer")))?;
    if n > max as u64 {
        return Err(Error::LimitExceeded(format!("{name} is at most {max}")));
    }
    Ok(n as usize)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("query task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_averages_of_the_largest_doubles_do_not_overflow() {
        let big = json!(1.7e308);
        assert_eq!(average(&[&big, &big]), json!(1.7e308));
        assert_eq!(average(&[&json!(1), &json!(2)]), json!(1.5));
        assert_eq!(average(&[&Json::Null]), Json::Null);
    }
}
