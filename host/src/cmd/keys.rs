//! `keys`: the keys in name order with their type and options, optionally only those
//! matching a pattern, after a name, at most `limit` of them; `include` adds each key's
//! latest value or time. Needs nothing: a page holds only the keys the reader may read.

use serde_json::{Map, Value as Json};

use super::{Command, MAX_KEYS, Reply, optional_string, page_limit};
use crate::auth::{Access, Permission};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::value::number_json;

pub(super) fn parse(args: &Json) -> Result<Command> {
    let include = match args.get("include") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items.clone(),
        Some(_) => return Err(Error::query("keys.include must be a list")),
    };
    let limit = page_limit(args, "keys", MAX_KEYS)?;
    Ok(Command::Keys {
        include_value: include.iter().any(|i| i == "value"),
        include_time: include.iter().any(|i| i == "time"),
        pattern: optional_string(args, "pattern")?,
        after: optional_string(args, "after")?,
        limit,
        reader: Access::Open,
    })
}

pub(super) async fn apply(
    db: &Db,
    include_value: bool,
    include_time: bool,
    pattern: Option<&str>,
    after: Option<&str>,
    limit: Option<usize>,
    reader: &Access,
) -> Result<Reply> {
    let mut out = Map::new();
    let chosen = db
        .page(
            |name| {
                pattern.is_none_or(|p| crate::pattern::glob(p, name))
                    && reader.may(Permission::Read, name)
            },
            after,
            limit.unwrap_or(MAX_KEYS + 1),
        )
        .await;
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
