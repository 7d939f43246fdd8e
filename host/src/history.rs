//! `fetch`: a key's history as the v1 clients read it.
//!
//! Raw points, single points (`last`, `previous`), per-step buckets summarised and rendered
//! by the key's plugin, and boolean timespans. A value holds from its time until the next
//! point; buckets are half-open `[start, start + step)` aligned to the epoch.

use serde_json::{Map, Value as Json, json};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::query::tiers;
use crate::units::parse_step;
use crate::value::{Point, Time, now, number_json};

/// Most raw points one `fetch` returns, and the largest `limit` it takes.
pub const MAX_POINTS: usize = 10_000;
/// Most buckets one stepped `fetch` returns.
pub const MAX_BUCKETS: usize = 10_000;

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

/// Answers a v1 `fetch`.
pub async fn fetch(db: &Db, key: &str, opts: FetchOpts) -> Result<Json> {
    let Some((effective, plugin)) = db.describe(key).await else {
        // A key that does not exist has no history.
        return Ok(if opts.single.is_some() {
            Json::Null
        } else {
            json!([])
        });
    };
    // Reads below go to the store: let writes already queued (an expiry, a pipelined put)
    // land first, so history agrees with `get` and `last`.
    db.settled().await?;
    let store = db.store().clone();
    let key = key.to_string();
    let current = db.latest(&key).await;

    if let Some(single) = opts.single {
        let Some(current) = current else {
            return Ok(Json::Null);
        };
        return match single {
            Single::Last => Ok(point_row(&current)),
            Single::Previous => {
                let found = blocking(move || {
                    // Walk back from the newest point to the first that differs.
                    let mut until = current.time;
                    loop {
                        let page = store.range_rev(&key, f64::NEG_INFINITY, until, 1024)?;
                        let Some(last) = page.last() else {
                            return Ok(None);
                        };
                        let next_until = last.time.next_down();
                        if let Some(p) = page.into_iter().find(|p| p.value != current.value) {
                            return Ok(Some(p));
                        }
                        until = next_until;
                    }
                })
                .await?;
                Ok(found.as_ref().map_or(Json::Null, point_row))
            }
        };
    }

    let until = opts.until.unwrap_or_else(now);
    if opts.timespans {
        let wanted = opts.span_value.unwrap_or(Json::Bool(true));
        let (since, until) = (opts.since, opts.until);
        return blocking(move || crate::query::spans(&store, &key, &wanted, since, until)).await;
    }

    let Some(step) = opts.step else {
        let since = opts.since.unwrap_or(f64::NEG_INFINITY);
        let cap = opts.limit.unwrap_or(MAX_POINTS);
        let mut newest = blocking(move || store.range_rev(&key, since, until, cap + 1)).await?;
        if newest.len() > cap {
            if opts.limit.is_none() {
                return Err(Error::LimitExceeded(format!(
                    "more than {MAX_POINTS} points in range: narrow since/until or set limit"
                )));
            }
            newest.truncate(cap);
        }
        newest.reverse();
        return Ok(Json::Array(newest.iter().map(point_row).collect()));
    };

    // Stepped: buckets from `since` (default: the key's first point) to `until`. Summaries
    // need the key's type; the raw answers above did not.
    let plugin = plugin?;
    let since = match opts.since {
        Some(s) => s,
        None => {
            let store = store.clone();
            let key = key.clone();
            match blocking(move || tiers::history_start(&store.view(), &key)).await? {
                Some(first) => first,
                None => return Ok(json!([])),
            }
        }
    };
    let first = (since / step).floor() * step;
    let buckets = ((until - first) / step).ceil().max(1.0);
    if buckets > MAX_BUCKETS as f64 {
        return Err(Error::LimitExceeded(format!(
            "{buckets} buckets requested, at most {MAX_BUCKETS}: use a larger step or a shorter range"
        )));
    }
    let mut edges: Vec<Time> = (0..=buckets as usize)
        .map(|i| first + i as f64 * step)
        .collect();
    // The last bucket ends now at the latest: the future is not known yet.
    if let Some(last) = edges.last_mut() {
        *last = last.min(now().max(until));
    }
    let summaries = {
        let (plugin, effective, edges) = (plugin.clone(), effective.clone(), edges.clone());
        blocking(move || {
            tiers::bucket_summaries(&store.view(), &key, &plugin, &effective, &edges)
                .map(|(summaries, _)| summaries)
        })
        .await?
    };
    let rendered = plugin.render(&effective, &summaries, &[])?;
    let values = rendered.as_array().cloned().unwrap_or_default();
    // A bucket without data renders `null` and is left out. So does one whose figure is
    // beyond a double (the mean of values near 1.8e308: their integral overflows): it is
    // kept as `[start, null]`, told apart by its known time where the type reports one.
    let known: Vec<bool> = if values.iter().any(Json::is_null) {
        plugin
            .render(&effective, &summaries, &["coverage_seconds".to_string()])
            .ok()
            .and_then(|r| r.as_array().cloned())
            .map(|figures| {
                figures
                    .iter()
                    .map(|f| f["coverage_seconds"].as_f64().is_some_and(|c| c > 0.0))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let rows = values
        .iter()
        .zip(&edges)
        .enumerate()
        .filter(|(i, (v, _))| !v.is_null() || known.get(*i).copied().unwrap_or(false))
        .map(|(_, (v, start))| json!([number_json(*start), v]))
        .collect();
    Ok(Json::Array(rows))
}

fn point_row(p: &Point) -> Json {
    json!([number_json(p.time), p.value.to_json()])
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("storage task failed: {e}")))?
}
