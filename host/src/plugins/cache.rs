//! Compiled components, kept so that loading a plugin does not compile it again.
//!
//! Compiling a component with cranelift is by far the most expensive part of loading a
//! plugin (the built-in types take seconds together on a small machine); instantiating a
//! compiled one takes microseconds. Two levels:
//!
//! - in memory, for this process: a restart of the server in the same process, many servers
//!   in one test binary, a reload of an unchanged file;
//! - on disk, in the cache directory (`cache_dir` in the config): across starts. An entry is
//!   named by the component's SHA-256 and the engine's compatibility hash (wasmtime version,
//!   compiler settings, CPU features), so a new binary, a new plugin or another machine
//!   never picks up a stale compilation: they miss and compile.
//!
//! A disk entry is `MAGIC ‖ SHA-256 of the payload ‖ payload` (the payload is wasmtime's
//! serialised component) and is written to a temporary file that is renamed into place, so
//! a crash leaves a whole entry or none. An entry whose checksum does not match, or that
//! wasmtime refuses, is ignored and replaced; a cache directory that cannot be written is
//! logged once and the compilation is used all the same. Nothing in the cache is ever
//! needed: deleting the directory only costs the next start its compile time.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first bytes of a disk entry (format version 1).
const MAGIC: &[u8; 16] = b"komoku-cwasm-v1\n";

/// Most entries kept on disk; beyond it the least recently used ones are removed. A few
/// plugin files and the built-in types, across a few upgrades.
const MAX_DISK_ENTRIES: usize = 64;

/// Most compilations kept in memory (each is the component's machine code).
const MAX_MEMORY_ENTRIES: usize = 64;

/// The cache directory, set once at start ([`set_dir`]); `None` = memory only.
static DIR: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Whether a failure to write the cache directory was already logged.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Keeps compiled components in `dir` from now on (`None`: in memory only).
pub fn set_dir(dir: Option<&Path>) {
    *DIR.write().unwrap_or_else(PoisonError::into_inner) = dir.map(Path::to_path_buf);
}

/// The compilation of `bytes`: from memory, from the cache directory, or compiled now (and
/// then kept in both).
pub(super) fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    if let Some(component) = memory_get(&digest, bytes) {
        return Ok(component);
    }
    let dir = DIR.read().unwrap_or_else(PoisonError::into_inner).clone();
    let file = dir.map(|dir| dir.join(entry_name(engine, &digest)));
    if let Some(component) = file.as_deref().and_then(|f| disk_get(engine, f)) {
        memory_put(digest, bytes, &component);
        return Ok(component);
    }
    let component = Component::new(engine, bytes)?;
    memory_put(digest, bytes, &component);
    if let Some(file) = file {
        match component.serialize() {
            Ok(payload) => {
                if let Err(e) = disk_put(&file, &payload)
                    && !WARNED.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(file = %file.display(), error = %e, "cannot keep the compiled plugin; the next start compiles it again");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialise a compiled plugin"),
        }
    }
    Ok(component)
}

/// `<component SHA-256>-<engine hash>.cwasm`, both in hex.
fn entry_name(engine: &Engine, digest: &[u8; 32]) -> String {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    MAGIC.hash(&mut h);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}.cwasm", h.finish())
}

type Memory = HashMap<[u8; 32], Vec<(Vec<u8>, Component)>>;

fn memory() -> &'static Mutex<Memory> {
    static MEMORY: OnceLock<Mutex<Memory>> = OnceLock::new();
    MEMORY.get_or_init(Default::default)
}

fn memory_get(digest: &[u8; 32], bytes: &[u8]) -> Option<Component> {
    let memory = memory().lock().unwrap_or_else(PoisonError::into_inner);
    // The bytes are compared too: the digest names them, it does not prove them.
    memory
        .get(digest)?
        .iter()
        .find(|(b, _)| b.as_slice() == bytes)
        .map(|(_, c)| c.clone())
}

fn memory_put(digest: [u8; 32], bytes: &[u8], component: &Component) {
    let mut memory = memory().lock().unwrap_or_else(PoisonError::into_inner);
    if memory.len() >= MAX_MEMORY_ENTRIES {
        memory.clear();
    }
    memory
        .entry(digest)
        .or_default()
        .push((bytes.to_vec(), component.clone()));
}

/// The entry in `file`, if there is a whole one that this engine can run.
fn disk_get(engine: &Engine, file: &Path) -> Option<Component> {
    let data = std::fs::read(file).ok()?;
    let payload = data
        .strip_prefix(MAGIC.as_slice())
        .filter(|rest| rest.len() > 32)
        .filter(|rest| Sha256::digest(&rest[32..]).as_slice() == &rest[..32])
        .map(|rest| &rest[32..]);
    let Some(payload) = payload else {
        tracing::warn!(file = %file.display(), "ignoring a damaged compiled plugin in the cache");
        return None;
    };
    // SAFETY: `Component::deserialize` trusts its input to be wasmtime's own serialisation
    // for a compatible engine. The payload is what `Component::serialize` wrote into a
    // directory this server owns, checked whole against its SHA-256 just above (a torn or
    // damaged file never gets here), and wasmtime itself refuses a payload made by another
    // version or configuration (the entry's name already keys it by both). Whoever can
    // write this directory can also replace the binary or the plugins, so the cache adds no
    // way in.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, payload) };
    match component {
        Ok(component) => {
            // Marks it recently used, for the pruning in `disk_put`.
            if let Ok(f) = std::fs::File::options().write(true).open(file) {
                let _ = f.set_modified(SystemTime::now());
            }
            Some(component)
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "ignoring a compiled plugin this engine cannot run");
            None
        }
    }
}

/// Writes an entry whole (temporary file, then rename), then prunes the directory.
fn disk_put(file: &Path, payload: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(MAGIC)?;
    tmp.write_all(&Sha256::digest(payload))?;
    tmp.write_all(payload)?;
    tmp.persist(file).map_err(|e| e.error)?;
    prune(dir);
    Ok(())
}

/// Removes the least recently used entries beyond [`MAX_DISK_ENTRIES`].
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    if entries.len() <= MAX_DISK_ENTRIES {
        return;
    }
    entries.sort();
    let excess = entries.len() - MAX_DISK_ENTRIES;
    for (_, path) in entries.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real component: the first built-in type.
    fn component_bytes() -> &'static [u8] {
        super::super::registry::BUILTIN[0].1
    }

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("engine")
    }

    #[test]
    fn a_disk_entry_is_written_whole_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let bytes = component_bytes();
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let file = dir.path().join(entry_name(&engine, &digest));
        let component = Component::new(&engine, bytes).expect("compile");
        disk_put(&file, &component.serialize().expect("serialize")).expect("write");
        assert!(disk_get(&engine, &file).is_some(), "a whole entry is used");

        // One flipped byte in the payload: the checksum catches it before wasmtime sees it.
        let mut data = std::fs::read(&file).expect("read");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&file, &data).expect("write");
        assert!(
            disk_get(&engine, &file).is_none(),
            "a damaged entry is ignored"
        );

        // A truncated one (no payload) too.
        std::fs::write(&file, MAGIC).expect("write");
        assert!(disk_get(&engine, &file).is_none());
    }

    #[test]
    fn entries_are_named_by_the_component_and_the_engine() {
        let engine = engine();
        let a = entry_name(&engine, &[1; 32]);
        assert_ne!(a, entry_name(&engine, &[2; 32]));
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let other = Engine::new(&config).expect("engine");
        assert_ne!(
            a,
            entry_name(&other, &[1; 32]),
            "another engine config misses"
        );
    }

    #[test]
    fn pruning_keeps_the_most_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..MAX_DISK_ENTRIES + 3 {
            let f = dir.path().join(format!("{i:03}.cwasm"));
            std::fs::write(&f, b"x").expect("write");
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&f)
                .and_then(|f| f.set_modified(t))
                .expect("mtime");
        }
        prune(dir.path());
        let left = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(left, MAX_DISK_ENTRIES);
        assert!(!dir.path().join("000.cwasm").exists(), "the oldest went");
        assert!(
            dir.path()
                .join(format!("{:03}.cwasm", MAX_DISK_ENTRIES + 2))
                .exists()
        );
    }
}
