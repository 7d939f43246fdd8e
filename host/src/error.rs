//! The host's one error type. Every variant has a stable wire code (`Error::code`), which is
//! what clients see in `{"error": "<code>"}`; the `Display` text is for logs and humans.

use std::fmt;

/// A failure of a Komoku operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The frame was not JSON (or not UTF-8).
    #[error("request is not valid JSON: {0}")]
    InvalidJson(String),

    /// A binary (TCP) frame was not a protobuf `Request`, or held a value that is not JSON.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),

    /// The JSON was well formed but is no request Komoku knows, or its arguments have the
    /// wrong shape.
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// A key name that Komoku refuses (empty or too long).
    #[error("invalid key name: {0}")]
    InvalidKey(String),

    /// A write carried a time outside the accepted window (before the earliest accepted
    /// time, or too far ahead of the server's clock).
    #[error("invalid time: {0}")]
    InvalidTime(String),

    /// The key does not exist (for requests that need it to).
    #[error("unknown key {0:?}")]
    UnknownKey(String),

    /// No loaded plugin provides this type.
    #[error("unknown key type {0:?}")]
    UnknownType(String),

    /// `define` asked for a different type than the key already has.
    #[error("key {key:?} has type {existing:?}, not {requested:?}")]
    TypeMismatch {
        key: String,
        existing: String,
        requested: String,
    },

    /// A key type refused a value, an option or an operation. `code` comes from the plugin.
    #[error("{code}: {message}")]
    Refused { code: String, message: String },

    /// A plugin trapped, ran past its deadline, exceeded its memory or returned garbage.
    #[error("plugin {plugin} failed: {message}")]
    PluginFailed { plugin: String, message: String },

    /// An answer would exceed a documented limit.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    /// The storage engine failed. Writes stop being acknowledged.
    #[error("storage failure: {0}")]
    Storage(String),

    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,

    /// Auth is enabled and the connection has no valid token (none yet, wrong or revoked).
    #[error("unauthorized: {0}")]
    Unauthorized(String),

    /// A config reload was refused (the file does not parse or validate); the config in
    /// force stays.
    #[error("config refused: {0}")]
    ConfigRefused(String),

    /// No such HTTP route (path).
    #[error("no such route: {0}")]
    UnknownRoute(String),

    /// The HTTP route exists, but not for this method.
    #[error("method {0} not allowed here")]
    MethodNotAllowed(String),

    /// The connection's token lacks a permission on a key. The reply names the permission.
    #[error("forbidden: no {permission} permission on key {key:?}")]
    Forbidden {
        permission: &'static str,
        key: String,
    },
}

impl Error {
    /// The stable word sent to clients. Listed in the README; never change one.
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidFrame(_) => "invalid_frame",
            Error::InvalidQuery(_) => "invalid_query",
            Error::InvalidKey(_) => "invalid_key",
            Error::InvalidTime(_) => "invalid_time",
            Error::UnknownKey(_) => "unknown_key",
            Error::UnknownType(_) => "unknown_type",
            Error::TypeMismatch { .. } => "type_mismatch",
            Error::Refused { code, .. } => code,
            Error::PluginFailed { .. } => "plugin_failed",
            Error::LimitExceeded(_) => "limit_exceeded",
            Error::Storage(_) => "storage_failed",
            Error::ShuttingDown => "shutting_down",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden { .. } => "forbidden",
            Error::ConfigRefused(_) => "config_refused",
            Error::UnknownRoute(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
        }
    }

    /// Shorthand for an `invalid_query` error.
    pub fn query(what: impl fmt::Display) -> Self {
        Error::InvalidQuery(what.to_string())
    }
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// Result with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
