//! v1 `fetch`: a key's history in the shapes the Ruby client reads, answered by translating
//! it into a [`Query`] and reshaping the answer. Nothing here reads the store: raw points
//! are `last` (with a `since`), `single: "previous"` is the engine's bounded `previous`,
//! `as: "timespans"` is `spans`, and a `step` is a summary of epoch-aligned fixed buckets
//! (v1's `d`, `w`, `m`, `y` are 1, 7, 31 and 365 days) rendering the type's default figure.
//! So `fetch` refuses exactly where `query` does: points of compacted history are gone.

use serde_json::{Map, Value as Json, json};

use super::buckets::Step;
use super::{History, MAX_POINTS, Query, Shape, SummaryQuery};
use crate::error::{Error, Result};
use crate::units::parse_step;
use crate::value::{Time, now, number_json};

/// What `fetch` was asked for.
#[derive(Debug, Default, Clone)]
pub struct FetchOpts {
    pub since: Option<Time>,
    pub until: Option<Time>,
    /// Bucket length in seconds.
    pub step: Option<f64>,
    pub single: Option<Single>,
    pub timespans: bool,
    /// With `timespans`: the value whose periods are listed. Default = `true`.
    pub span_value: Option<Json>,
    /// The newest this many points (at most [`MAX_POINTS`]).
    pub limit: Option<usize>,
}

/// `single` fetches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Single {
    Last,
    Previous,
}

impl FetchOpts {
    /// Reads the `opts` object of a v1 `fetch`.
    pub fn parse(opts: &Map<String, Json>) -> Result<FetchOpts> {
        let mut out = FetchOpts::default();
        for (name, v) in opts {
            match name.as_str() {
                "since" => out.since = Some(time_arg(name, v)?),
                "until" => out.until = Some(time_arg(name, v)?),
                "step" => out.step = Some(parse_step(v)?),
                "single" => {
                    out.single = Some(match v.as_str() {
                        Some("last") => Single::Last,
                        Some("previous") => Single::Previous,
                        _ => return Err(Error::query("single must be \"last\" or \"previous\"")),
                    })
                }
                "value" => out.span_value = Some(v.clone()),
                "as" => match v.as_str() {
                    Some("timespans") => out.timespans = true,
                    _ => return Err(Error::query("as must be \"timespans\"")),
                },
                "limit" => {
                    let n = v
                        .as_u64()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| Error::query("limit must be a positive integer"))?;
                    if n > MAX_POINTS as u64 {
                        return Err(Error::LimitExceeded(format!(
                            "limit is at most {MAX_POINTS}: page with until"
                        )));
                    }
                    out.limit = Some(n as usize);
                }
                other => return Err(Error::query(format!("unknown fetch option {other:?}"))),
            }
        }
        Ok(out)
    }
}

fn time_arg(name: &str, v: &Json) -> Result<Time> {
    v.as_f64()
        .filter(|t| t.is_finite())
        .ok_or_else(|| Error::query(format!("{name} must be a time in seconds since the epoch")))
}

/// Answers a v1 `fetch`. A key that does not exist has no history: `[]` (`null` for
/// `single`).
pub async fn fetch(db: &impl History, key: &str, opts: FetchOpts) -> Result<Json> {
    let missing = || {
        if opts.single.is_some() {
            Json::Null
        } else {
            json!([])
        }
    };
    if let Some(Single::Last) = opts.single {
        return Ok(db.latest(key).await.map_or(Json::Null, |p| {
            json!([number_json(p.time), p.value.to_json()])
        }));
    }
    let shape = if opts.single == Some(Single::Previous) {
        Shape::Previous
    } else if opts.timespans {
        Shape::Spans {
            value: opts.span_value.clone().unwrap_or(Json::Bool(true)),
            since: opts.since,
            until: opts.until,
        }
    } else if let Some(step) = opts.step {
        Shape::Summary(SummaryQuery {
            since: opts.since,
            until: opts.until,
            step: Some(Step::Fixed(step)),
            figures: Some(Vec::new()),
            default_figure: true,
            ..SummaryQuery::default()
        })
    } else {
        // One more than the cap tells "more in range" from "exactly the cap"; with a `limit`
        // the newest `limit` points are the answer.
        Shape::Last {
            count: opts.limit.unwrap_or(MAX_POINTS + 1),
            since: opts.since,
            until: Some(opts.until.unwrap_or_else(now)),
        }
    };
    let query = Query {
        key: key.to_string(),
        shape,
    };
    let Some(answer) = query.answer(db).await? else {
        return Ok(missing());
    };
    match query.shape {
        Shape::Last { .. } => {
            if opts.limit.is_none() && answer.as_array().is_some_and(|a| a.len() > MAX_POINTS) {
                return Err(Error::LimitExceeded(format!(
                    "more than {MAX_POINTS} points in range: narrow since/until or set limit"
                )));
            }
            Ok(answer)
        }
        Shape::Summary(_) => Ok(stepped_rows(&answer)),
        _ => Ok(answer),
    }
}

/// `[[start, value], ...]` from a summary's buckets. A bucket without data (its figure
/// `null`, nothing covered) is left out; one whose figure is beyond a double (the mean of
/// values near 1.8e308) but which has data is kept as `[start, null]`.
fn stepped_rows(summary: &Json) -> Json {
    let rows = summary["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| !b["value"].is_null() || b["coverage"].as_f64().is_some_and(|c| c > 0.0))
        .map(|b| json!([b["start"], b["value"]]))
        .collect();
    Json::Array(rows)
}
