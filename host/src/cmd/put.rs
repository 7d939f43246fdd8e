//! `put`: sets a key's value (creating the key, typed by its value, when the connection may
//! define it). Needs write; creating also needs define, which the session decides
//! (`create`).

use serde_json::Value as Json;

use super::{Command, Reply, key_arg, optional_number};
use crate::auth::Permission;
use crate::db::{Db, Durable};
use crate::error::{Error, Result};
use crate::value::Time;

pub(super) fn parse(args: &Json) -> Result<Command> {
    Ok(Command::Put {
        key: key_arg(args)?,
        value: args
            .get("value")
            .cloned()
            .ok_or_else(|| Error::query("put needs a value"))?,
        time: optional_number(args, "time")?,
        create: true,
    })
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Write, key)
}

pub(super) async fn start(
    db: &Db,
    key: &str,
    value: &Json,
    time: Option<Time>,
    create: bool,
) -> Result<(Reply, Durable)> {
    Ok((Reply::Ack, db.put(key, value, time, create).await?))
}
