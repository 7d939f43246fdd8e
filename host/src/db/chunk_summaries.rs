//! What summarises a chunk as the store writes it: the key's type plugin, under the key's
//! effective options (see "Chunk summaries" in [`crate::store`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::plugins::Registry;
use crate::store::ChunkSummarizer;
use crate::summary::summarize::identity;
use crate::value::{Point, Time};

/// Each key's type and effective options, as the writer thread needs them (it cannot wait
/// for a key's lock: the key's operations wait for the writer).
pub(super) struct ChunkKeys {
    registry: Arc<Registry>,
    keys: RwLock<HashMap<String, (String, String)>>,
}

impl ChunkKeys {
    pub(super) fn new(registry: Arc<Registry>) -> ChunkKeys {
        ChunkKeys {
            registry,
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// Records that `name` is of type `type_name` with options `effective`.
    pub(super) fn set(&self, name: &str, type_name: &str, effective: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(
                name.to_string(),
                (type_name.to_string(), effective.to_string()),
            );
        }
    }

    pub(super) fn remove(&self, name: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(name);
        }
    }
}

impl ChunkSummarizer for ChunkKeys {
    fn summarize(
        &self,
        name: &str,
        carried: &Point,
        points: &[Point],
        span: (Time, Time),
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let (type_name, options) = self.keys.read().ok()?.get(name).cloned()?;
        if options.is_empty() {
            return None; // no version of its type has taken the key yet
        }
        let plugin = self.registry.get(&type_name).ok()?;
        match plugin.summarize(&options, &[span.0, span.1], Some(carried), points) {
            Ok(summaries) => Some((identity(&plugin, &options), summaries.into_iter().next()?)),
            Err(e) => {
                tracing::debug!(key = %name, error = %e, "a chunk is stored without its summary");
                None
            }
        }
    }
}
