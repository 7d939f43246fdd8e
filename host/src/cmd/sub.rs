//! `sub` and `unsub`: pushes of a key's changes to this connection. `sub` with `since`
//! answers the key's history from then first; with `since` or `seq`, pushes are numbered.
//! Subscribing needs subscribe and read (a push carries the value); `unsub` needs nothing.

use serde_json::{Value as Json, json};

use super::{Command, Reply, key_arg, optional_number};
use crate::auth::Permission;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::pubsub::Subscriber;
use crate::value::{Time, number_json};

pub(super) fn parse(args: &Json) -> Result<Command> {
    Ok(Command::Sub {
        key: key_arg(args)?,
        since: optional_number(args, "since")?,
        numbered: match args.get("seq") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(_) => return Err(Error::query("sub.seq must be true or false")),
        },
    })
}

pub(super) fn parse_unsub(args: &Json) -> Result<Command> {
    Ok(Command::Unsub {
        key: key_arg(args)?,
    })
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Subscribe, key)?;
    require(Permission::Read, key)
}

pub(super) async fn apply(
    db: &Db,
    me: &Subscriber,
    key: &str,
    since: Option<Time>,
    numbered: bool,
) -> Result<Reply> {
    let Some(since) = since else {
        crate::store::check_key_name(key)?;
        db.subscribe(key, me.clone(), numbered);
        return Ok(Reply::Ack);
    };
    let (seq, history) = db.subscribe_with_history(key, me.clone(), since).await?;
    Ok(Reply::Value(json!({
        "seq": seq,
        "history": history
            .iter()
            .map(|p| json!([number_json(p.time), p.value.to_json()]))
            .collect::<Vec<_>>(),
    })))
}

pub(super) fn unsub(db: &Db, me: &Subscriber, key: &str) -> Reply {
    db.pubsub().unsubscribe(key, me.conn);
    Reply::Ack
}
