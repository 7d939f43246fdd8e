//! `last`: a key's latest point, `{"value", "time"}` (`null` when it has none). Needs read.

use serde_json::{Value as Json, json};

use super::{Command, Reply, key_arg};
use crate::auth::Permission;
use crate::db::Db;
use crate::error::Result;
use crate::value::number_json;

pub(super) fn parse(args: &Json) -> Result<Command> {
    Ok(Command::Last {
        key: key_arg(args)?,
    })
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Read, key)
}

pub(super) async fn apply(db: &Db, key: &str) -> Result<Reply> {
    Ok(Reply::Value(db.latest(key).await.map_or(
        Json::Null,
        |p| json!({"value": p.value.to_json(), "time": number_json(p.time)}),
    )))
}
