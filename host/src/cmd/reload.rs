//! `reload`: the server reads its config again and applies it. Answered by the connection's
//! session, which holds the server's live configuration (see [`crate::live`]); it needs
//! define on every key (it changes every token's access), and the session also checks it
//! comes from the server's machine.

use super::Reply;
use crate::auth::Permission;
use crate::error::{Error, Result};

pub(super) fn needs(require: super::Require) -> Result<()> {
    require(Permission::Define, "*")
}

pub(super) fn apply() -> Result<Reply> {
    Err(Error::ConfigRefused(
        "a reload is answered by the connection's session".into(),
    ))
}
