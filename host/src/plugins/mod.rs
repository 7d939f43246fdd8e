//! Key-type plugins: WebAssembly components implementing `wit/key-type.wit`.
//!
//! - [`bindings`]: the generated WIT bindings (private to this module);
//! - [`runtime`]: the engine, sandbox limits and one loaded plugin ([`Plugin`]) with its pool
//!   of instances;
//! - [`registry`]: which plugin serves which type name, loaded from the plugins directory.
//!
//! Everything a key type means lives in its plugin; the host only calls these functions.

mod bindings;
mod runtime;
mod registry;

pub use registry::Registry;
pub use runtime::{Limits, Operation, Outcome, Plugin, PluginInfo, Scheduled};
