//! `get`: a key's latest value, bare (`null` when it has none). Needs read.

use serde_json::Value as Json;

use super::{Command, Reply, key_arg};
use crate::auth::Permission;
use crate::db::Db;
use crate::error::Result;

pub(super) fn parse(args: &Json) -> Result<Command> {
    Ok(Command::Get {
        key: key_arg(args)?,
    })
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Read, key)
}

pub(super) async fn apply(db: &Db, key: &str) -> Result<Reply> {
    Ok(Reply::Value(
        db.latest(key)
            .await
            .map_or(Json::Null, |p| p.value.to_json()),
    ))
}
