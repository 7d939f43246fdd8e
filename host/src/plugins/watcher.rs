//! Hot reload: watches the plugins directory and reloads what changed.
//!
//! File events are debounced (a burst of writes becomes one reload), and only `*.wasm`
//! names count, so writing `x.wasm.tmp` and renaming it to `x.wasm` loads once, complete.
//! A plain overwrite may be read half-written: it then fails validation, the old version
//! keeps serving, and the write's last event triggers another attempt.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Registry;

/// Quiet time after the last event before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the OS watch alive; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching the registry's directory. Returns `None` (and logs why) when the
/// directory does not exist or cannot be watched: the server then runs without reload.
pub fn watch(registry: Arc<Registry>, shutdown: CancellationToken) -> Option<PluginWatcher> {
    let dir = registry.dir().to_path_buf();
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                for path in event.paths {
                    if path.extension().is_some_and(|x| x == "wasm") {
                        let _ = tx.send(path);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "plugin directory watch error"),
        });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch plugins; hot reload is off");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::info!(dir = %dir.display(), error = %e, "plugins directory not watched; hot reload is off");
        return None;
    }
    tokio::spawn(async move {
        let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
        loop {
            let next = if pending.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    p = rx.recv() => p,
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    p = rx.recv() => p,
                    _ = tokio::time::sleep(DEBOUNCE) => {
                        let batch = std::mem::take(&mut pending);
                        let registry = registry.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            for file in batch {
                                let _ = registry.reload(&file);
                            }
                        })
                        .await;
                        continue;
                    }
                }
            };
            match next {
                Some(path) => {
                    pending.insert(path);
                }
                None => return,
            }
        }
    });
    Some(PluginWatcher { _watcher: watcher })
}
