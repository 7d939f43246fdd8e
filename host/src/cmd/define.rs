//! `define`: keys' types and options, `{"foo": {"type": "uptime", "max_time": 77}}`, options
//! flat or nested under `opts`; redefining with the same type merges options. Needs define
//! on each key.

use serde_json::{Map, Value as Json};

use super::{Command, Definition, Reply};
use crate::auth::Permission;
use crate::db::{Db, Durable};
use crate::error::{Error, Result};

pub(super) fn parse(args: &Json) -> Result<Command> {
    Ok(Command::Define {
        keys: definitions(args)?,
    })
}

pub(super) fn needs(keys: &[Definition], require: super::Require) -> Result<()> {
    keys.iter()
        .try_for_each(|d| require(Permission::Define, &d.key))
}

pub(super) async fn start(db: &Db, keys: Vec<Definition>) -> Result<(Reply, Durable)> {
    let mut last = Durable::done();
    for d in keys {
        // Writes are durable in queue order: waiting for the last covers all.
        last = db.define(&d.key, d.type_name.as_deref(), d.opts).await?;
    }
    Ok((Reply::Ack, last))
}

/// `{"foo": {"type": "uptime", "max_time": 77}}`, options flat or nested under `opts`.
fn definitions(args: &Json) -> Result<Vec<Definition>> {
    let Json::Object(keys) = args else {
        return Err(Error::query("define takes an object of key definitions"));
    };
    keys.iter()
        .map(|(key, spec)| {
            let Json::Object(spec) = spec else {
                return Err(Error::query(format!(
                    "definition of {key:?} must be an object"
                )));
            };
            let mut opts = Map::new();
            let mut type_name = None;
            for (name, v) in spec {
                match (name.as_str(), v) {
                    ("type", Json::String(t)) => type_name = Some(t.clone()),
                    ("type", _) => return Err(Error::query("type must be a string")),
                    ("opts", Json::Object(nested)) => opts.extend(nested.clone()),
                    ("opts", Json::Null) => {}
                    ("opts", _) => return Err(Error::query("opts must be an object")),
                    _ => {
                        opts.insert(name.clone(), v.clone());
                    }
                }
            }
            Ok(Definition {
                key: key.clone(),
                type_name,
                opts,
            })
        })
        .collect()
}
