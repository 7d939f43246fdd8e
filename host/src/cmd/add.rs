//! `increment` and `decrement`: adds a step (default 1) to a counter, creating it at 0.
//! Needs write (and define to create, as for `put`).

use serde_json::Value as Json;

use super::{Command, Reply, key_arg, optional_number};
use crate::auth::Permission;
use crate::db::{Db, Durable};
use crate::error::Result;

pub(super) fn parse(name: &str, args: &Json) -> Result<Command> {
    let step = optional_number(args, "step")?.unwrap_or(1.0);
    let decrement = name == "decrement";
    Ok(Command::Add {
        key: key_arg(args)?,
        step: if decrement { -step } else { step },
        decrement,
        create: true,
    })
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Write, key)
}

pub(super) async fn start(db: &Db, key: &str, step: f64, create: bool) -> Result<(Reply, Durable)> {
    Ok((Reply::Ack, db.add(key, step, create).await?))
}
