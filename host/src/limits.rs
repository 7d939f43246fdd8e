//! Per-connection limits: plain settings every transport and session reads (their values
//! come from the config, see [`crate::Config::connection_limits`]).

use std::time::Duration;

/// Per-connection limits (each a config setting; defaults in [`crate::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Largest websocket message accepted.
    pub max_frame_bytes: usize,
    /// Pushes queued before the connection is closed as too slow.
    pub push_queue: usize,
    /// Bytes of pushes queued before the connection is closed as too slow.
    pub push_queue_bytes: usize,
    /// How long a connection may stay unauthenticated (with auth on).
    pub auth_timeout: Duration,
    /// Most requests in one array frame.
    pub max_batch: usize,
    /// Most keys one connection may be subscribed to at once.
    pub max_subscriptions: usize,
}
