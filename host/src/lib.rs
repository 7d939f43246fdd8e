//! Komoku: a key-value database for typed home and server data that keeps every change and
//! pushes changes to subscribers. Key types are WebAssembly component plugins.
//!
//! Map of the modules, from the wire inwards:
//!
//! - [`server`]: the listeners, one task per connection, shutdown in order;
//! - [`http`]: each connection's HTTP: websocket upgrades (to [`ws`]), the JSON API under
//!   `/api/v1/`, Server-Sent Events, `/metrics`;
//! - [`ws`]: one websocket connection: frames answered in its dialect, pushes between replies;
//! - [`tcp`]: the binary protocol (`tcp_listen`): length-prefixed protobuf frames
//!   ([`komoku_proto`]) translated into the same commands as the websocket's;
//! - [`tls`]: wss:// with rustls, from the certificate and key in the config;
//! - [`mqtt`]: the MQTT bridge, another transport: topics into keys, keys out to topics;
//! - [`session`]: one connection's access and limits, asked before every command;
//! - [`limits`]: the per-connection limits every transport and session reads;
//! - [`live`]: what a config reload (SIGHUP, `reload`) changes while clients stay connected;
//! - [`auth`]: tokens (kept as hashes) and the key patterns each may read, write,
//!   subscribe to and define;
//! - [`protocol`]: frames to requests and replies, in the v1 (Ruby) and v2 dialects;
//! - [`cmd`]: the command set every transport shares, one file per command: parse, the
//!   permissions it needs (checked by [`auth`] through [`auth::Needs`]), apply;
//! - [`query`]: `query`, every question about a key's past (buckets in a time zone,
//!   figures per type, value at a time, spans, averages by hour of day or weekday); v1
//!   `fetch` is a translation into it;
//! - [`summary`]: the summarising engine, stored points and tier summaries folded
//!   through a key's plugin into bucket summaries;
//! - [`db`]: keys, their latest values, per-key ordering, automatic values (scheduler),
//!   background compaction;
//! - [`retention`]: which policy governs a key, and how stored tiers are restructured when
//!   a policy changes; [`policy`]: policies and compaction watermarks as plain data;
//! - [`pubsub`]: who is subscribed to what, bounded push queues;
//! - [`plugins`]: the wasmtime runtime and the registry of key types (all type semantics);
//! - [`store`]: fjall on disk, the group-commit writer thread;
//! - [`value`]: values, times and their encodings; [`units`]: durations such as `"5M"`;
//!   [`pattern`]: key patterns (`room.*`);
//! - [`config`], [`stats`], [`error`]: settings, counters and the error codes clients see;
//! - [`cli`]: the command line (`main.rs` only calls it);
//! - [`remote`]: the command line's client subcommands (`komoku put`, `get`, `watch`,
//!   `query`, ...), through the `komoku-client` crate; [`dump`]: its `export` and `import`.

pub mod auth;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod db;
pub mod dump;
pub mod error;
pub mod http;
pub mod limits;
pub mod live;
pub mod mqtt;
pub mod pattern;
pub mod plugins;
pub mod policy;
pub mod protocol;
pub mod pubsub;
pub mod query;
pub mod remote;
pub mod retention;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod summary;
pub mod tcp;
pub mod tls;
pub mod units;
pub mod value;
pub mod ws;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;
