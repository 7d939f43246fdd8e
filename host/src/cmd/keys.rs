//! `keys`: the keys in name order with their type and options, optionally only those
//! matching a pattern, after a name, at most `limit` of them; `include` adds each key's
//! latest value or time. Needs nothing: the session filters the answer by read.

use serde_json::{Map, Value as Json};

use super::{Command, MAX_KEYS, Reply, optional_string};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::value::number_json;

pub(super) fn parse(args: &Json) -> Result<Command> {
    let include = match args.get("include") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items.clone(),
        Some(_) => return Err(Error::query("keys.include must be a list")),
    };
    let limit = match args.get("limit") {
        None | Some(Json::Null) => None,
        Some(v) => {
            let n = v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::query("keys.limit must be a positive integer"))?;
            if n > MAX_KEYS as u64 {
                return Err(Error::LimitExceeded(format!(
                    "keys.limit is at most {MAX_KEYS}: page with after"
                )));
            }
            Some(n as usize)
        }
    };
    Ok(Command::Keys {
        include_value: include.iter().any(|i| i == "value"),
        include_time: include.iter().any(|i| i == "time"),
        pattern: optional_string(args, "pattern")?,
        after: optional_string(args, "after")?,
        limit,
    })
}

pub(super) async fn apply(
    db: &Db,
    include_value: bool,
    include_time: bool,
    pattern: Option<&str>,
    after: Option<&str>,
    limit: Option<usize>,
) -> Result<Reply> {
    let mut out = Map::new();
    let chosen = db.page(pattern, after, limit.unwrap_or(MAX_KEYS + 1)).await;
    if limit.is_none() && chosen.len() > MAX_KEYS {
        return Err(Error::LimitExceeded(format!(
            "more than {MAX_KEYS} keys: page with limit and after"
        )));
    }
    for (name, listing) in chosen {
        let mut entry = Map::new();
        entry.insert("type".into(), Json::String(listing.def.type_name));
        if !listing.def.opts.is_empty() {
            entry.insert("opts".into(), Json::Object(listing.def.opts));
        }
        if include_value {
            entry.insert(
                "value".into(),
                listing
                    .latest
                    .as_ref()
                    .map_or(Json::Null, |p| p.value.to_json()),
            );
        }
        if include_time {
            entry.insert(
                "time".into(),
                listing
                    .latest
                    .as_ref()
                    .map_or(Json::Null, |p| number_json(p.time)),
            );
        }
        out.insert(name, Json::Object(entry));
    }
    Ok(Reply::Value(Json::Object(out)))
}
