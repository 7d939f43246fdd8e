//! `fetch` (v1) and `query`: a key's past, both answered by the query engine
//! ([`crate::query`]; `fetch` is a translation into it). Need read.

use serde_json::Value as Json;

use super::{Command, Reply, key_arg};
use crate::auth::Permission;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::query::Query;
use crate::query::fetch::{self, FetchOpts};

pub(super) fn parse_fetch(args: &Json) -> Result<Command> {
    Ok(Command::Fetch {
        key: key_arg(args)?,
        opts: match args.get("opts") {
            None | Some(Json::Null) => FetchOpts::default(),
            Some(Json::Object(o)) => FetchOpts::parse(o)?,
            Some(_) => return Err(Error::query("fetch.opts must be an object")),
        },
    })
}

pub(super) fn parse_query(args: &Json) -> Result<Command> {
    Ok(Command::Query(Query::parse(args)?))
}

pub(super) fn needs(key: &str, require: super::Require) -> Result<()> {
    require(Permission::Read, key)
}

pub(super) async fn fetch(db: &Db, key: &str, opts: FetchOpts) -> Result<Reply> {
    fetch::fetch(db, key, opts).await.map(Reply::Value)
}

pub(super) async fn query(db: &Db, query: Query) -> Result<Reply> {
    query.run(db).await.map(Reply::Value)
}
