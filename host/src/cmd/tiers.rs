//! `tiers` and `load_tiers`: a key's compacted history (the tier summaries, the gaps and the
//! watermarks) handed out page by page and taken back, for `komoku export`/`import`.
//! `tiers` needs read on the key, `load_tiers` define.
//!
//! ```text
//! {"tiers": {"key": K, "after": [step, start], "limit": N}}      after optional, limit ≤ 10000 (default 1000)
//!   → {"type": T, "version": V, "opts": {...}, "state": {...} | null,
//!      "carried": [t, "hex"] | null, "gaps": [[start, "hex"], ...],
//!      "rows": [[step, start, "hex"], ...], "next": [step, start] | null}
//! {"load_tiers": {"key": K, ...that answer}}                      → ok
//! ```
//!
//! Summaries, gaps and the carried value travel as lowercase hex of their stored bytes (a
//! summary is the type plugin's own encoding); `carried` and `gaps` are on the first page
//! only. A load into a key of another type, version or options is refused (`type_mismatch`),
//! and into a key with other compacted history (`compacted`).

use serde_json::{Value as Json, json};

use super::{Command, Reply, key_arg, page_limit};
use crate::auth::Permission;
use crate::db::{Db, TierPage};
use crate::error::{Error, Result};
use crate::retention::CompactionState;
use crate::store::Gap;
use crate::value::{Point, Value};

/// Rows of one `tiers` answer when the request gives no limit.
const DEFAULT_LIMIT: usize = 1000;
/// Most rows one `tiers` answer may hold.
pub const MAX_TIER_ROWS: usize = 10_000;

pub(super) fn parse(args: &Json) -> Result<Command> {
    let after = match args.get("after") {
        None | Some(Json::Null) => None,
        Some(v) => Some(pair(v, "tiers.after")?),
    };
    let limit = page_limit(args, "tiers", MAX_TIER_ROWS)?.unwrap_or(DEFAULT_LIMIT);
    Ok(Command::Tiers {
        key: key_arg(args)?,
        after,
        limit,
    })
}

pub(super) fn parse_load(args: &Json) -> Result<Command> {
    let text = |name: &str| match args.get(name) {
        Some(Json::String(s)) => Ok(s.clone()),
        _ => Err(Error::query(format!("load_tiers.{name} must be a string"))),
    };
    let opts = match args.get("opts") {
        Some(o @ Json::Object(_)) => o.to_string(),
        _ => return Err(Error::query("load_tiers.opts must be an object")),
    };
    let state: Option<CompactionState> = match args.get("state") {
        None | Some(Json::Null) => None,
        Some(s) => Some(
            serde_json::from_value(s.clone())
                .map_err(|e| Error::query(format!("load_tiers.state: {e}")))?,
        ),
    };
    let carried = match args.get("carried") {
        None | Some(Json::Null) => None,
        Some(Json::Array(a)) if a.len() == 2 => Some(Point {
            time: number(&a[0], "load_tiers.carried")?,
            value: Value::decode(&hex(&a[1], "load_tiers.carried")?)
                .ok_or_else(|| Error::query("load_tiers.carried holds no value"))?,
        }),
        Some(_) => return Err(Error::query("load_tiers.carried must be [time, hex]")),
    };
    let mut gaps = Vec::new();
    for g in array(args, "gaps")? {
        let bad = || Error::query("load_tiers.gaps holds [start, hex] pairs");
        let Json::Array(a) = g else { return Err(bad()) };
        let [start, bytes] = a.as_slice() else {
            return Err(bad());
        };
        let start = number(start, "load_tiers.gaps")?;
        gaps.push(
            Gap::decode(start, &hex(bytes, "load_tiers.gaps")?)
                .map_err(|_| Error::query("load_tiers.gaps holds an unreadable gap"))?,
        );
    }
    let mut rows = Vec::new();
    for r in array(args, "rows")? {
        let bad = || Error::query("load_tiers.rows holds [step, start, hex] triples");
        let Json::Array(a) = r else { return Err(bad()) };
        let [step, start, bytes] = a.as_slice() else {
            return Err(bad());
        };
        rows.push((
            number(step, "load_tiers.rows")?,
            number(start, "load_tiers.rows")?,
            hex(bytes, "load_tiers.rows")?,
        ));
    }
    if rows.len() > MAX_TIER_ROWS {
        return Err(Error::LimitExceeded(format!(
            "load_tiers takes at most {MAX_TIER_ROWS} rows at once"
        )));
    }
    if let Some(state) = &state {
        if rows
            .iter()
            .any(|(step, _, _)| !state.tiers.iter().any(|t| t.step == *step))
        {
            return Err(Error::query(
                "load_tiers.rows holds a step the state has no tier of",
            ));
        }
    } else if !rows.is_empty() || !gaps.is_empty() || carried.is_some() {
        return Err(Error::query("load_tiers: rows without a state"));
    }
    Ok(Command::LoadTiers {
        key: key_arg(args)?,
        page: Box::new(TierPage {
            type_name: text("type")?,
            version: text("version")?,
            opts,
            state,
            carried,
            gaps,
            rows,
            next: None,
        }),
    })
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Read, key)
}

pub(super) fn needs_load(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Define, key)
}

pub(super) async fn apply(
    db: &Db,
    key: &str,
    after: Option<(f64, f64)>,
    limit: usize,
) -> Result<Reply> {
    Ok(Reply::Value(render(db.tiers(key, after, limit).await?)))
}

/// A page of compacted history as `tiers` answers it (and `export` carries it).
pub(super) fn render(page: TierPage) -> Json {
    let opts: Json = serde_json::from_str(&page.opts).unwrap_or_else(|_| json!({}));
    json!({
        "type": page.type_name,
        "version": page.version,
        "opts": opts,
        "state": page.state,
        "carried": page.carried.map(|p| json!([p.time, to_hex(&p.value.encode())])),
        "gaps": page.gaps.iter().map(|g| json!([g.start, to_hex(&g.encode())])).collect::<Vec<_>>(),
        "rows": page.rows.iter().map(|(s, t, b)| json!([s, t, to_hex(b)])).collect::<Vec<_>>(),
        "next": page.next.map(|(s, t)| json!([s, t])),
    })
}

pub(super) async fn apply_load(db: &Db, key: &str, page: TierPage) -> Result<Reply> {
    db.load_tiers(key, page).await.map(|()| Reply::Ack)
}

pub(super) fn pair(v: &Json, what: &str) -> Result<(f64, f64)> {
    match v.as_array().map(Vec::as_slice) {
        Some([a, b]) => Ok((number(a, what)?, number(b, what)?)),
        _ => Err(Error::query(format!("{what} must be [step, start]"))),
    }
}

pub(super) fn number(v: &Json, what: &str) -> Result<f64> {
    v.as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| Error::query(format!("{what}: a time or step must be a number")))
}

fn array<'a>(args: &'a Json, name: &str) -> Result<&'a [Json]> {
    match args.get(name) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(a)) => Ok(a),
        Some(_) => Err(Error::query(format!("load_tiers.{name} must be a list"))),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hex(v: &Json, what: &str) -> Result<Vec<u8>> {
    let bad = || Error::query(format!("{what}: bytes must be a lowercase hex string"));
    let s = v.as_str().ok_or_else(bad)?;
    if s.len() % 2 != 0 {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() -> Result<()> {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&json!(to_hex(&bytes)), "x")?, bytes);
        for bad in [json!("abc"), json!("zz"), json!(5), json!("é1")] {
            assert!(hex(&bad, "x").is_err(), "{bad}");
        }
        Ok(())
    }
}
