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
    /// Where the last version of each plugin file that loaded is kept (see [`Registry::reload`]).
    good_dir: Option<PathBuf>,
    limits: Limits,
    types: RwLock<HashMap<String, Arc<Plugin>>>,
    /// The built-in version of each built-in type, restored when a plugin file replacing it
    /// is removed.
    builtin: RwLock<HashMap<String, Arc<Plugin>>>,
    /// What each file of the plugins directory last did.
    files: RwLock<HashMap<PathBuf, FileStatus>>,
}

/// The state of one file of the plugins directory, for operators.
#[derive(Debug, Clone, Default)]
pub struct FileStatus {
    /// The type it serves, if it loaded.
    pub type_name: Option<String>,
    /// Why its latest version did not load (the previous version, if any, still serves).
    pub last_error: Option<String>,
}

impl Registry {
    /// An empty registry for plugins in `dir`, keeping last-known-good copies in `good_dir`.
    pub fn new(dir: &Path, good_dir: Option<&Path>, limits: Limits) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
            good_dir: good_dir.map(Path::to_path_buf),
            limits,
            types: RwLock::new(HashMap::new()),
            builtin: RwLock::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
        }
    }

    /// The directory plugins are loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the built-in types compiled into this binary.
    pub fn load_builtin(&self) -> Result<usize> {
        for (file, bytes) in BUILTIN {
            let plugin = Arc::new(Plugin::load(
                &Path::new("builtin").join(file),
                bytes,
                self.limits,
            )?);
            let name = plugin.info.name.clone();
            self.builtin
                .write()
                .map_err(|_| poisoned())?
                .insert(name.clone(), plugin.clone());
            self.types
                .write()
                .map_err(|_| poisoned())?
                .insert(name, plugin);
        }
        Ok(BUILTIN.len())
    }

    /// Loads every `*.wasm` in the plugins directory, in file-name order. A file that fails
    /// to load is logged and its last-known-good copy (from an earlier run) serves instead,
    /// if there is one; the other files still load. A missing directory holds no plugins.
    /// Returns how many loaded.
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
            if self.reload(&file).is_ok() {
                loaded += 1;
                continue;
            }
            let Some(copy) = self.good_copy(&file).filter(|c| c.exists()) else {
                continue;
            };
            match std::fs::read(&copy)
                .map_err(|e| e.to_string())
                .and_then(|b| self.load_bytes(&copy, &b).map_err(|e| e.to_string()))
            {
                Ok(name) => {
                    tracing::warn!(type_name = %name, file = %file.display(), copy = %copy.display(), "serving the last-known-good copy of a plugin that no longer loads");
                    if let Ok(mut files) = self.files.write() {
                        files.entry(file.clone()).or_default().type_name = Some(name);
                    }
                    loaded += 1;
                }
                Err(e) => {
                    tracing::error!(copy = %copy.display(), error = %e, "the last-known-good copy does not load either")
                }
            }
        }
        Ok(loaded)
    }

    /// Brings the registry in line with one file of the plugins directory: loads it if it
    /// exists (replacing the type it served before only once the new version has compiled,
    /// linked and answered a smoke call), retires its type if it is gone. On failure the
    /// previous version keeps serving and the error is kept for [`Registry::files`].
    pub fn reload(&self, file: &Path) -> Result<Option<String>> {
        if !file.exists() {
            let old = self.files.write().map_err(|_| poisoned())?.remove(file);
            if let Some(name) = old.and_then(|s| s.type_name) {
                self.retire(&name, file, true)?;
                tracing::info!(type_name = %name, file = %file.display(), "plugin file removed; type retired");
            }
            return Ok(None);
        }
        match self.load_file(file) {
            Ok(name) => {
                let previous = self.files.write().map_err(|_| poisoned())?.insert(
                    file.to_path_buf(),
                    FileStatus {
                        type_name: Some(name.clone()),
                        last_error: None,
                    },
                );
                // The file used to serve another type: that one is gone now.
                if let Some(old) = previous
                    .and_then(|s| s.type_name)
                    .filter(|old| *old != name)
                {
                    self.retire(&old, file, false)?;
                }
                Ok(Some(name))
            }
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "plugin not loaded; the previous version (if any) keeps serving");
                self.files
                    .write()
                    .map_err(|_| poisoned())?
                    .entry(file.to_path_buf())
                    .or_default()
                    .last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Stops serving `name` from `file` (or its last-known-good copy): the built-in version
    /// comes back if there is one. `removed`: the file is gone, so is its copy.
    fn retire(&self, name: &str, file: &Path, removed: bool) -> Result<()> {
        let copy = self.good_copy(file);
        if let Some(copy) = copy.as_ref().filter(|_| removed) {
            let _ = std::fs::remove_file(copy);
        }
        let mut types = self.types.write().map_err(|_| poisoned())?;
        if types
            .get(name)
            .is_some_and(|p| p.source == file || Some(&p.source) == copy.as_ref())
        {
            match self.builtin.read().map_err(|_| poisoned())?.get(name) {
                Some(builtin) => types.insert(name.to_string(), builtin.clone()),
                None => types.remove(name),
            };
        }
        Ok(())
    }

    /// Each file of the plugins directory seen so far and what it did.
    pub fn files(&self) -> Vec<(PathBuf, FileStatus)> {
        let mut all: Vec<_> = self
            .files
            .read()
            .map(|f| f.iter().map(|(p, s)| (p.clone(), s.clone())).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Loads (or replaces) the plugin in one file and returns its type name.
    pub fn load_file(&self, file: &Path) -> Result<String> {
        let bytes = std::fs::read(file).map_err(|e| Error::PluginFailed {
            plugin: file.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let name = self.load_bytes(file, &bytes)?;
        self.keep_good_copy(file, &bytes);
        Ok(name)
    }

    fn good_copy(&self, file: &Path) -> Option<PathBuf> {
        Some(self.good_dir.as_ref()?.join(file.file_name()?))
    }

    /// Saves the bytes of a file that loaded, so a restart after a broken upload still
    /// serves its type. Failing to save is logged, never fatal.
    fn keep_good_copy(&self, file: &Path, bytes: &[u8]) {
        let Some(copy) = self.good_copy(file) else {
            return;
        };
        if std::fs::read(&copy).is_ok_and(|old| old == bytes) {
            return;
        }
        let tmp = copy.with_extension("wasm.tmp");
        let saved = copy
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &copy));
        if let Err(e) = saved {
            tracing::warn!(file = %copy.display(), error = %e, "cannot keep a last-known-good plugin copy");
        }
    }

    /// Loads (or replaces) a plugin from memory; `source` names it for operators.
    pub fn load_bytes(&self, source: &Path, bytes: &[u8]) -> Result<String> {
        let plugin = Arc::new(Plugin::load(source, bytes, self.limits)?);
        let name = plugin.info.name.clone();
        let mut types = self.types.write().map_err(|_| poisoned())?;
        if let Some(old) = types.get(&name)
            && old.source != plugin.source
        {
            let builtin = self
                .builtin
                .read()
                .map_err(|_| poisoned())?
                .get(&name)
                .is_some_and(|b| Arc::ptr_eq(b, old));
            if builtin {
                tracing::info!(type_name = %name, file = %source.display(), "plugin replaces the built-in type");
            } else {
                tracing::warn!(
                    type_name = %name,
                    kept = %source.display(),
                    replaced = %old.source.display(),
                    "two plugin files define the same type; the later one wins"
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
        let mut all: Vec<_> = self
            .types
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
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
