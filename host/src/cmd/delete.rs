//! `delete`: removes a key, its history and its definition. Needs write and define (it
//! frees the name for another type).

use serde_json::Value as Json;

use super::{Command, Reply, key_arg};
use crate::auth::Permission;
use crate::db::Db;
use crate::error::Result;

pub(super) fn parse(args: &Json) -> Result<Command> {
    Ok(Command::Delete {
        key: key_arg(args)?,
    })
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Write, key)?;
    require(Permission::Define, key)
}

pub(super) async fn apply(db: &Db, key: &str) -> Result<Reply> {
    db.delete(key).await.map(|_| Reply::Ack)
}
