//! `ping`: `{"pong": payload}`, the payload as sent. Needs nothing.

use serde_json::{Value as Json, json};

use super::{Command, Reply};

pub(super) fn parse(args: &Json) -> Command {
    Command::Ping(args.clone())
}

pub(super) fn apply(payload: Json) -> Reply {
    Reply::Value(json!({ "pong": payload }))
}
