//! `compact`: runs compaction now, for every key (`{}`) or one (`{"key": K}`), and answers
//! when done. Needs write (compaction only does what the policies say, but costs work).

use serde_json::Value as Json;

use super::{Command, Reply, key_arg};
use crate::auth::Permission;
use crate::db::Db;
use crate::error::{Error, Result};

pub(super) fn parse(args: &Json) -> Result<Command> {
    // `{}` compacts every key, `{"key": K}` one; anything else is a mistake, not a request
    // to compact the whole database.
    let Json::Object(fields) = args else {
        return Err(Error::query("compact takes {} or {\"key\": K}"));
    };
    if let Some(other) = fields.keys().find(|k| k.as_str() != "key") {
        return Err(Error::query(format!("unknown compact field {other:?}")));
    }
    Ok(Command::Compact {
        key: match args.get("key") {
            None | Some(Json::Null) => None,
            Some(_) => Some(key_arg(args)?),
        },
    })
}

pub(super) fn needs(key: Option<&str>, require: super::Require) -> Result<()> {
    require(Permission::Write, key.unwrap_or("*"))
}

pub(super) async fn apply(db: &Db, key: Option<&str>) -> Result<Reply> {
    db.compact(key, crate::value::now())
        .await
        .map(|r| Reply::Value(r.to_json()))
}
