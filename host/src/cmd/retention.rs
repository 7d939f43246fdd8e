//! `retention`: lists the policies, sets one for a key or pattern, or removes one. Setting
//! or removing needs define on the pattern (a policy decides how long history is kept);
//! listing needs nothing.

use serde_json::Value as Json;

use super::{Command, Reply, key_arg};
use crate::auth::Permission;
use crate::db::{Db, Durable};
use crate::error::{Error, Result};
use crate::retention::PolicySpec;

pub(super) fn parse(args: &Json) -> Result<Command> {
    let pattern = match args.get("key") {
        None | Some(Json::Null) => None,
        Some(_) => Some(key_arg(args)?),
    };
    let remove = args.get("remove") == Some(&Json::Bool(true));
    let sets = args.get("raw").is_some() || args.get("tiers").is_some();
    if let Json::Object(fields) = args
        && let Some(other) = fields
            .keys()
            .find(|k| !["key", "raw", "tiers", "remove"].contains(&k.as_str()))
    {
        return Err(Error::query(format!("unknown retention field {other:?}")));
    }
    if (sets || remove) && pattern.is_none() {
        return Err(Error::query("retention needs the key (name or pattern)"));
    }
    if sets && remove {
        return Err(Error::query(
            "retention sets a policy or removes it, not both",
        ));
    }
    let spec = if sets {
        let spec = PolicySpec::from_json(args)?;
        spec.policy()?; // refused here, before anything is applied
        Some(spec)
    } else {
        None
    };
    Ok(Command::Retention {
        pattern,
        spec,
        remove,
    })
}

pub(super) fn needs(pattern: Option<&str>, changes: bool, require: super::Require) -> Result<()> {
    match pattern {
        Some(pattern) if changes => require(Permission::Define, pattern),
        _ => Ok(()),
    }
}

pub(super) async fn start(
    db: &Db,
    pattern: Option<String>,
    spec: Option<PolicySpec>,
    remove: bool,
) -> Result<(Reply, Durable)> {
    match pattern {
        Some(pattern) if spec.is_some() || remove => {
            Ok((Reply::Ack, db.set_policy(&pattern, spec).await?))
        }
        _ => Ok((Reply::Value(db.policies_json()), Durable::done())),
    }
}
