//! Key-type plugins: WebAssembly components implementing `wit/key-type.wit`.
//!
//! - [`bindings`]: the generated WIT bindings (private to this module);
//! - [`cache`]: compiled components kept in memory and on disk, so a start does not
//!   compile them again;
//! - [`runtime`]: the engine, sandbox limits and one loaded plugin ([`Plugin`]) with its pool
//!   of instances;
//! - [`registry`]: which plugin serves which type name: the built-in ones, then the plugins
//!   directory;
//! - [`watcher`]: hot reload of the plugins directory.
//!
//! Everything a key type means lives in its plugin; the host only calls these functions.

mod bindings;
pub mod cache;
mod registry;
mod runtime;
mod watcher;

pub use registry::{FileStatus, Keys, Registry};
pub use runtime::{
    EncodedOptions, FitOptions, KeyOps, Limits, Operation, Outcome, Plugin, PluginInfo, Scheduled,
};
pub use watcher::{DEBOUNCE, PluginWatcher, watch};
