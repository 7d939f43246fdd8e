//! Which plugin serves which key type.
//!
//! Loaded from the plugins directory: every `*.wasm` file is a component; the type's name
//! comes from the plugin's own `info()`. The host has no list of types of its own.
//!
//! A version serves its type only once the type's existing keys have moved over to it (see
//! [`Keys`]): a version that cannot take their stored options is refused like a broken file,
//! and the version serving them stays.
//!
//! Paths: the directory is made absolute (and canonical, when it exists) once, and every file
//! is named `<dir>/<file name>`, whether it came from listing the directory or from a watch
//! event, so a file has one name whatever way it was seen.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use super::runtime::{Limits, Plugin};
use crate::error::{Error, Result};
use crate::value::Input;

// `BUILTIN: &[(&str, &[u8])]`: the components in the repository's plugins/ at build time.
include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The keys of each type, as the registry needs them before a version may serve the type.
/// The database implements it.
pub trait Keys: Send + Sync {
    /// Moves every existing key of `plugin`'s type over to `plugin`: works out each key's
    /// options under it ([`Plugin::fit_options`]) and pending automatic value, and only if
    /// every key fits calls `serve` (which makes `plugin` serve the type) and switches the
    /// keys to it, with no operation on them in between. Otherwise refuses, naming a few of
    /// the keys that do not fit, and `serve` is not called.
    ///
    /// Called on a blocking thread (it may wait for keys' locks and for the disk).
    fn adopt(&self, plugin: &Arc<Plugin>, serve: &mut dyn FnMut()) -> Result<()>;
}

/// The loaded key types, by name.
pub struct Registry {
    /// Absolute; canonical when it existed at start.
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
    /// The existing keys, once the database is open.
    keys: RwLock<Option<Arc<dyn Keys>>>,
    /// Why a type that was offered is not served (its versions could not take its keys).
    unavailable: RwLock<HashMap<String, String>>,
}

/// The state of one file of the plugins directory, for operators.
#[derive(Debug, Clone, Default)]
pub struct FileStatus {
    /// The type it serves, if it loaded.
    pub type_name: Option<String>,
    /// Why its latest version did not load (the previous version, if any, still serves).
    pub last_error: Option<String>,
    /// How many times a new content of the file was read and loaded (or refused). An
    /// unchanged file is not read again.
    pub loads: u64,
    /// What the file looked like when it was last read.
    seen: Option<Seen>,
    /// A hash of the content that serves, if it loaded.
    serving: Option<u64>,
}

impl Registry {
    /// An empty registry for plugins in `dir`, keeping last-known-good copies in `good_dir`.
    pub fn new(dir: &Path, good_dir: Option<&Path>, limits: Limits) -> Registry {
        let dir = dir
            .canonicalize()
            .or_else(|_| std::path::absolute(dir))
            .unwrap_or_else(|_| dir.to_path_buf());
        Registry {
            dir,
            good_dir: good_dir.map(Path::to_path_buf),
            limits,
            types: RwLock::new(HashMap::new()),
            builtin: RwLock::new(HashMap::new()),
            files: RwLock::new(HashMap::new()),
            keys: RwLock::new(None),
            unavailable: RwLock::new(HashMap::new()),
        }
    }

    /// The directory plugins are loaded from (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From now on, a version serves its type only once the type's existing keys moved over
    /// to it (see [`Keys`]).
    pub fn set_keys(&self, keys: Arc<dyn Keys>) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(keys);
    }

    /// The name the registry knows a file of the plugins directory by: `<dir>/<file name>`.
    /// `None` for a path that names no file.
    pub fn file_name(&self, path: &Path) -> Option<PathBuf> {
        Some(self.dir.join(path.file_name()?))
    }

    /// Loads the built-in types compiled into this binary. A built-in type that cannot take
    /// the existing keys of its type is logged and not served (a plugin file may).
    pub fn load_builtin(&self) -> Result<usize> {
        for (file, bytes) in BUILTIN {
            let plugin = Arc::new(Plugin::load(
                &Path::new("builtin").join(file),
                bytes,
                self.limits,
            )?);
            self.builtin
                .write()
                .map_err(|_| poisoned())?
                .insert(plugin.info.name.clone(), plugin.clone());
            if let Err(e) = self.install(plugin) {
                tracing::error!(error = %e, "built-in type not served");
            }
        }
        Ok(BUILTIN.len())
    }

    /// Loads every `*.wasm` in the plugins directory, in file-name order. A file that fails
    /// to load is logged and its last-known-good copy (from an earlier run) serves instead,
    /// if there is one and it loads; the other files still load. A missing directory holds
    /// no plugins. Returns how many loaded.
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
            .filter_map(|e| e.ok().map(|e| self.dir.join(e.file_name())))
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
            match read_plugin(&copy, self.limits.file_bytes)
                .and_then(|b| self.load_bytes(&copy, &b))
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
    /// exists and changed since it was last read (replacing the type it served before only
    /// once the new version has compiled, linked, answered a smoke call and taken the type's
    /// keys), retires its type if it is gone. On failure the previous version keeps serving
    /// and the error is kept for [`Registry::files`], logged once per change of the file.
    ///
    /// Only regular files (or symbolic links to one) of at most [`Limits::file_bytes`] are
    /// read; anything else is refused unread.
    pub fn reload(&self, path: &Path) -> Result<Option<String>> {
        let Some(file) = self.file_name(path) else {
            return Ok(None);
        };
        let file = file.as_path();
        let meta = match std::fs::metadata(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let old = self.files.write().map_err(|_| poisoned())?.remove(file);
                if let Some(name) = old.and_then(|s| s.type_name) {
                    self.retire(&name, file, true)?;
                    tracing::info!(type_name = %name, file = %file.display(), "plugin file removed; type retired");
                }
                return Ok(None);
            }
            meta => meta,
        };
        let seen = meta.as_ref().ok().map(seen);
        let before = self
            .files
            .read()
            .map_err(|_| poisoned())?
            .get(file)
            .cloned()
            .unwrap_or_default();
        if seen.is_some() && before.seen == seen {
            // Unchanged since it was last read (e.g. the event of a read).
            return match before.last_error {
                None => Ok(before.type_name),
                Some(e) => Err(Error::PluginFailed {
                    plugin: file.display().to_string(),
                    message: e,
                }),
            };
        }
        let read = meta
            .map_err(|e| Error::PluginFailed {
                plugin: file.display().to_string(),
                message: format!("cannot read: {e}"),
            })
            .and_then(|_| read_plugin(file, self.limits.file_bytes));
        let hash = read.as_ref().ok().map(|bytes| content_hash(bytes));
        if hash.is_some() && hash == before.serving && before.last_error.is_none() {
            // Touched or copied over with the same content: what serves is what it holds.
            self.update(file, |s| s.seen = seen)?;
            return Ok(before.type_name);
        }
        let loaded = read.and_then(|bytes| {
            let name = self.load_bytes(file, &bytes)?;
            self.keep_good_copy(file, &bytes);
            Ok(name)
        });
        match loaded {
            Ok(name) => {
                let previous = before.type_name.clone();
                self.update(file, |s| {
                    s.type_name = Some(name.clone());
                    s.last_error = None;
                    s.loads += 1;
                    s.seen = seen;
                    s.serving = hash;
                })?;
                // The file used to serve another type: that one is gone now.
                if let Some(old) = previous.filter(|old| *old != name) {
                    self.retire(&old, file, false)?;
                }
                Ok(Some(name))
            }
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "plugin not loaded; the previous version (if any) keeps serving");
                self.update(file, |s| {
                    s.last_error = Some(e.to_string());
                    s.loads += 1;
                    s.seen = seen;
                })?;
                Err(e)
            }
        }
    }

    fn update(&self, file: &Path, f: impl FnOnce(&mut FileStatus)) -> Result<()> {
        f(self
            .files
            .write()
            .map_err(|_| poisoned())?
            .entry(file.to_path_buf())
            .or_default());
        Ok(())
    }

    /// Stops serving `name` from `file` (or its last-known-good copy): the built-in version
    /// comes back if there is one and it can take the type's keys. `removed`: the file is
    /// gone, so is its copy.
    fn retire(&self, name: &str, file: &Path, removed: bool) -> Result<()> {
        let copy = self.good_copy(file);
        if let Some(copy) = copy.as_ref().filter(|_| removed) {
            let _ = std::fs::remove_file(copy);
        }
        let from_file = |types: &HashMap<String, Arc<Plugin>>| {
            types
                .get(name)
                .is_some_and(|p| p.source == file || Some(&p.source) == copy.as_ref())
        };
        if !from_file(&*self.types.read().map_err(|_| poisoned())?) {
            return Ok(());
        }
        let builtin = self
            .builtin
            .read()
            .map_err(|_| poisoned())?
            .get(name)
            .cloned();
        if let Some(builtin) = builtin {
            match self.install(builtin) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::error!(type_name = %name, error = %e, "the built-in version cannot take the type's keys; the type is not served")
                }
            }
        }
        let mut types = self.types.write().map_err(|_| poisoned())?;
        if from_file(&types) {
            types.remove(name);
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

    /// Types that were offered but are not served, with why (no version could take their
    /// keys). Their keys answer `unknown_type` until a version that fits loads.
    pub fn unavailable(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = self
            .unavailable
            .read()
            .map(|u| u.iter().map(|(t, w)| (t.clone(), w.clone())).collect())
            .unwrap_or_default();
        all.sort();
        all
    }

    /// Loads (or replaces) the plugin in one file and returns its type name.
    pub fn load_file(&self, file: &Path) -> Result<String> {
        let bytes = read_plugin(file, self.limits.file_bytes)?;
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
        self.install(plugin)
    }

    /// Makes `plugin` serve its type once the type's keys moved over to it.
    fn install(&self, plugin: Arc<Plugin>) -> Result<String> {
        let name = plugin.info.name.clone();
        let mut serve = || {
            let mut types = self.types.write().unwrap_or_else(PoisonError::into_inner);
            self.log_replacement(&types, &plugin);
            types.insert(name.clone(), plugin.clone());
            self.unavailable
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        };
        let keys = self.keys.read().map_err(|_| poisoned())?.clone();
        let adopted = match keys {
            Some(keys) => keys.adopt(&plugin, &mut serve),
            None => {
                serve();
                Ok(())
            }
        };
        if let Err(e) = &adopted {
            let served = self
                .types
                .read()
                .map_err(|_| poisoned())?
                .contains_key(&name);
            if !served {
                self.unavailable
                    .write()
                    .map_err(|_| poisoned())?
                    .insert(name.clone(), e.to_string());
            }
        }
        adopted.map(|()| name)
    }

    fn log_replacement(&self, types: &HashMap<String, Arc<Plugin>>, plugin: &Arc<Plugin>) {
        let name = &plugin.info.name;
        let Some(old) = types.get(name).filter(|old| old.source != plugin.source) else {
            return;
        };
        let builtin = self
            .builtin
            .read()
            .is_ok_and(|b| b.get(name).is_some_and(|b| Arc::ptr_eq(b, old)));
        if builtin {
            tracing::info!(type_name = %name, file = %plugin.source.display(), "plugin replaces the built-in type");
        } else if !Arc::ptr_eq(old, plugin) {
            tracing::warn!(
                type_name = %name,
                kept = %plugin.source.display(),
                replaced = %old.source.display(),
                "two plugin files define the same type; the later one wins"
            );
        }
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

/// Reads a plugin file: only a regular file (a symbolic link is followed only to one), of at
/// most `cap` bytes. Never blocks on what is not a regular file: a FIFO is opened without
/// waiting for a writer and refused, a device is refused before it is read.
fn read_plugin(file: &Path, cap: u64) -> Result<Vec<u8>> {
    let refuse = |message: String| Error::PluginFailed {
        plugin: file.display().to_string(),
        message,
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(refuse(format!(
                "not a regular file ({}): only regular files (or links to one) are loaded",
                kind_of(&meta.file_type())
            )));
        }
        if meta.len() > cap {
            return Err(refuse(format!(
                "{} bytes, more than the {cap}-byte limit on plugin files (plugin_file_mib)",
                meta.len()
            )));
        }
        Ok(())
    };
    check(&std::fs::metadata(file).map_err(|e| refuse(format!("cannot read: {e}")))?)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Swapped for a FIFO since the check above: open returns at once instead of waiting
        // for a writer, and the check of the open file below refuses it.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let handle = options
        .open(file)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    check(
        &handle
            .metadata()
            .map_err(|e| refuse(format!("cannot read: {e}")))?,
    )?;
    let mut bytes = Vec::new();
    handle
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > cap {
        return Err(refuse(format!(
            "more than the {cap}-byte limit on plugin files (plugin_file_mib)"
        )));
    }
    Ok(bytes)
}

fn kind_of(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Size, modification time and (on Unix) inode and status-change time: a file replaced by a
/// rename has another inode, one rewritten in place another size or modification time.
type Seen = (u64, Option<SystemTime>, u64, i64, i64);

fn seen(meta: &std::fs::Metadata) -> Seen {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        (
            meta.len(),
            meta.modified().ok(),
            meta.ino(),
            meta.ctime(),
            meta.ctime_nsec(),
        )
    }
    #[cfg(not(unix))]
    (meta.len(), meta.modified().ok(), 0, 0, 0)
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn poisoned() -> Error {
    Error::PluginFailed {
        plugin: "registry".into(),
        message: "a thread panicked while holding the plugin registry".into(),
    }
}
