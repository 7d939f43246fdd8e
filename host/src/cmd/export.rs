//! `export`: a consistent dump of the keys a reader may read, page by page from one store
//! snapshot (see [`crate::db::ExportPage`]); what `komoku export` writes, line for line.
//! Needs nothing up front: a page holds only the keys the token may read (like `keys`).
//!
//! ```text
//! {"export": {"pattern": P, "limit": N}}                       the first page opens a snapshot
//! {"export": {"pattern": P, "snapshot": S, "after": C, "limit": N}}      each later page
//!   → {"snapshot": S, "until": T, "lines": [record, ...], "next": C | null}
//! ```
//!
//! `limit` (default 1000, at most 10 000) bounds the rows of a page: a definition, a point
//! and a summary row count one each. The records are those of the dump format
//! (`{"retention": ...}` on the first page, then per key `{"define": ...}`, `{"points":
//! ...}`, `{"tiers": ...}`). A cursor `C` is `{"key": K}` (the keys after K),
//! `{"key": K, "points_after": t}` or `{"key": K, "tiers_after": [step, start]}`; pass it
//! back as it came (`null` there: from the key's first point or summary). A snapshot ends with its last page, or two minutes after its last one.

use serde_json::{Map, Value as Json, json};

use super::{Command, Reply, key_arg, optional_string, page_limit};
use crate::auth::{Access, Permission};
use crate::db::{Db, ExportCursor, ExportItem};
use crate::error::{Error, Result};
use crate::value::number_json;

/// Rows of one page when the request gives no limit.
const DEFAULT_LIMIT: usize = 1000;
/// Most rows one page may hold.
pub const MAX_EXPORT_ROWS: usize = 10_000;

pub(super) fn parse(args: &Json) -> Result<Command> {
    if !args.is_object() && !args.is_null() {
        return Err(Error::query("export takes an object"));
    }
    let snapshot = match args.get("snapshot") {
        None | Some(Json::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| Error::query("export.snapshot must be the number a page gave"))?,
        ),
    };
    let after = match args.get("after") {
        None | Some(Json::Null) => None,
        Some(c) => Some(cursor(c)?),
    };
    if after.is_some() && snapshot.is_none() {
        return Err(Error::query(
            "export.after goes with the snapshot of the page that gave it",
        ));
    }
    let limit = page_limit(args, "export", MAX_EXPORT_ROWS)?.unwrap_or(DEFAULT_LIMIT);
    Ok(Command::Export {
        pattern: optional_string(args, "pattern")?,
        snapshot,
        after,
        limit,
        reader: Access::Open,
    })
}

fn cursor(c: &Json) -> Result<ExportCursor> {
    let key = key_arg(c).map_err(|_| Error::query("export.after must be a cursor a page gave"))?;
    match (c.get("points_after"), c.get("tiers_after")) {
        (None, None) => Ok(ExportCursor::KeyAfter(key)),
        // `null`: from the key's first point or first summary row.
        (Some(Json::Null), None) => Ok(ExportCursor::Points {
            key,
            after: f64::NEG_INFINITY,
        }),
        (None, Some(Json::Null)) => Ok(ExportCursor::Tiers {
            key,
            after: (f64::NEG_INFINITY, f64::NEG_INFINITY),
        }),
        (Some(t), None) => Ok(ExportCursor::Points {
            key,
            after: super::tiers::number(t, "export.after.points_after")?,
        }),
        (None, Some(p)) => Ok(ExportCursor::Tiers {
            key,
            after: super::tiers::pair(p, "export.after.tiers_after")?,
        }),
        (Some(_), Some(_)) => Err(Error::query("export.after must be a cursor a page gave")),
    }
}

/// A cursor as a page gives it; the start of a key's points or summaries (no time yet) is
/// `null`, since JSON has no infinity.
fn render_cursor(c: ExportCursor) -> Json {
    match c {
        ExportCursor::KeyAfter(key) => json!({ "key": key }),
        ExportCursor::Points { key, after } if after.is_finite() => {
            json!({"key": key, "points_after": number_json(after)})
        }
        ExportCursor::Points { key, .. } => json!({"key": key, "points_after": null}),
        ExportCursor::Tiers { key, after } if after.0.is_finite() && after.1.is_finite() => {
            json!({"key": key, "tiers_after": [number_json(after.0), number_json(after.1)]})
        }
        ExportCursor::Tiers { key, .. } => json!({"key": key, "tiers_after": null}),
    }
}

pub(super) async fn apply(
    db: &Db,
    pattern: Option<String>,
    snapshot: Option<u64>,
    after: Option<ExportCursor>,
    limit: usize,
    reader: Access,
) -> Result<Reply> {
    let policy_pattern = pattern.clone();
    let page = db
        .export(
            snapshot,
            after,
            limit,
            move |name| {
                pattern
                    .as_deref()
                    .is_none_or(|p| crate::pattern::glob(p, name))
                    && reader.may(Permission::Read, name)
            },
            move |name| {
                policy_pattern
                    .as_deref()
                    .is_none_or(|p| crate::pattern::glob(p, name))
            },
        )
        .await?;
    let lines: Vec<Json> = page
        .items
        .into_iter()
        .map(|item| match item {
            ExportItem::Policy(pattern, spec) => {
                let mut line = match spec.to_json() {
                    Json::Object(o) => o,
                    _ => Map::new(),
                };
                line.insert("key".into(), json!(pattern));
                json!({ "retention": line })
            }
            ExportItem::Define(key, def) => {
                json!({"define": {"key": key, "type": def.type_name, "opts": def.opts}})
            }
            ExportItem::Points(key, points) => {
                let rows: Vec<Json> = points
                    .iter()
                    .map(|p| json!([number_json(p.time), p.value.to_json()]))
                    .collect();
                json!({"points": {"key": key, "rows": rows}})
            }
            ExportItem::Tiers(key, tiers) => {
                let mut line = match super::tiers::render(*tiers) {
                    Json::Object(o) => o,
                    _ => Map::new(),
                };
                line.remove("next");
                line.insert("key".into(), json!(key));
                json!({ "tiers": line })
            }
        })
        .collect();
    Ok(Reply::Value(json!({
        "snapshot": page.snapshot,
        "until": number_json(page.until),
        "lines": lines,
        "next": page.next.map(render_cursor),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cursor_round_trips_through_json() {
        let key = || "room.temp".to_string();
        for c in [
            ExportCursor::KeyAfter(key()),
            ExportCursor::Points {
                key: key(),
                after: f64::NEG_INFINITY,
            },
            ExportCursor::Points {
                key: key(),
                after: 1_700_000_000.25,
            },
            ExportCursor::Tiers {
                key: key(),
                after: (f64::NEG_INFINITY, f64::NEG_INFINITY),
            },
            ExportCursor::Tiers {
                key: key(),
                after: (60.0, 1_700_000_040.0),
            },
        ] {
            let json = render_cursor(c.clone());
            let text = json.to_string();
            let back = cursor(&serde_json::from_str(&text).expect("JSON")).expect("a cursor");
            assert_eq!(back, c, "{text}");
        }
    }
}
