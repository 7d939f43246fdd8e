//! Which plugin serves which key type.
//!
//! Loaded from the plugins directory: every `*.wasm` file is a component; the type's name
//! comes from the plugin's own `info()`. The host has no list of types of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::runtime::{Limits, Plugin};
use crate::error::{Error, Result};
use crate::value::Input;

// `BUILTIN: &[(&str, &[u8])]`: the components in the repository's plugins/ at build time.
include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The loaded key types, by name.
pub struct Registry {
    dir: PathBuf,
    limits: Limits,
    types: RwLock<HashMap<String, Arc<Plugin>>>,
}

impl Registry {
    /// An empty registry for plugins in `dir`.
    pub fn new(dir: &Path, limits: Limits) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
            limits,
            types: RwLock::new(HashMap::new()),
        }
    }

    /// The directory plugins are loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the built-in types compiled into this binary.
    pub fn load_builtin(&self) -> Result<usize> {
        for (file, bytes) in BUILTIN {
            self.load_bytes(&Path::new("builtin").join(file), bytes)?;
        }
        Ok(BUILTIN.len())
    }

    /// Loads every `*.wasm` in the plugins directory, in file-name order. A file that fails
    /// to load is logged and skipped; the others still load. A missing directory holds no
    /// plugins. Returns how many loaded.
    pub fn load_dir(&self) -> Result<usize> {
        if !self.dir.exists() {
            tracing::info!(dir = %self.dir.display(), "no plugins directory; built-in types only");
            return Ok(0);
        }
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::PluginFailed {
            plugin: self.dir.display().to_string(),
            message: format!("cannot read the plugins directory: {e}"),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        let mut loaded = 0;
        for file in files {
            match self.load_file(&file) {
                Ok(_) => loaded += 1,
                Err(e) => tracing::error!(file = %file.display(), error = %e, "plugin not loaded"),
            }
        }
        Ok(loaded)
    }

    /// Loads (or replaces) the plugin in one file and returns its type name.
    pub fn load_file(&self, file: &Path) -> Result<String> {
        let bytes = std::fs::read(file).map_err(|e| Error::PluginFailed {
            plugin: file.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        self.load_bytes(file, &bytes)
    }

    /// Loads (or replaces) a plugin from memory; `source` names it for operators.
    pub fn load_bytes(&self, source: &Path, bytes: &[u8]) -> Result<String> {
        let file = source;
        let plugin = Arc::new(Plugin::load(source, bytes, self.limits)?);
        let name = plugin.info.name.clone();
        let mut types = self.types.write().map_err(|_| poisoned())?;
        if let Some(old) = types.get(&name) {
            if old.source != plugin.source {
                tracing::warn!(
                    type_name = %name,
                    kept = %file.display(),
                    replaced = %old.source.display(),
                    "two plugin files define the same type; the later file wins"
                );
            }
        }
        types.insert(name.clone(), plugin);
        Ok(name)
    }

    /// The plugin serving `type_name`.
    pub fn get(&self, type_name: &str) -> Result<Arc<Plugin>> {
        self.types
            .read()
            .map_err(|_| poisoned())?
            .get(type_name)
            .cloned()
            .ok_or_else(|| Error::UnknownType(type_name.to_string()))
    }

    /// Every loaded plugin, by type name.
    pub fn all(&self) -> Vec<Arc<Plugin>> {
        let mut all: Vec<_> = self.types.read().map(|t| t.values().cloned().collect()).unwrap_or_default();
        all.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        all
    }

    /// The type that claims a new key first put with `sample` most strongly (ties go to the
    /// alphabetically first name), or `None` if no type claims it.
    pub fn guess(&self, sample: &Input) -> Result<Option<Arc<Plugin>>> {
        let mut best: Option<(u8, Arc<Plugin>)> = None;
        for plugin in self.all() {
            let score = match plugin.guess(sample) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(type_name = %plugin.info.name, error = %e, "guess failed");
                    0
                }
            };
            if score > 0 && best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, plugin));
            }
        }
        Ok(best.map(|(_, p)| p))
    }
}

fn poisoned() -> Error {
    Error::PluginFailed {
        plugin: "registry".into(),
        message: "a thread panicked while holding the plugin registry".into(),
    }
}
