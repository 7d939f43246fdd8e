//! Hot reload: watches the plugins directory and reloads what changed.
//!
//! File events are debounced (a burst of writes becomes one reload), and only `*.wasm`
//! names count, so writing `x.wasm.tmp` and renaming it to `x.wasm` loads once, complete.
//! A plain overwrite may be read half-written: it then fails validation, the old version
//! keeps serving, and the write's last event triggers another attempt.
//!
//! Only events that can change a file count: reading one (ours included) raises access
//! events, which are ignored (but for a close after writing), and [`Registry::reload`]
//! reads a file again only when it was written or replaced since. Reloads run on the
//! watcher's own thread, never on the async runtime's blocking pool, so a slow or stuck file
//! system delays only later reloads, never a request or the server's shutdown.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio_util::sync::CancellationToken;

use super::Registry;

/// Quiet time after the last event before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the OS watch alive; dropping it stops watching (and ends the reload thread once it
/// has finished the reload under way, if any).
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// What the reload thread receives.
enum Message {
    Changed(PathBuf),
    Stop,
}

/// Starts watching the registry's directory. Returns `None` (and logs why) when the
/// directory does not exist or cannot be watched: the server then runs without reload.
pub fn watch(registry: Arc<Registry>, shutdown: CancellationToken) -> Option<PluginWatcher> {
    let dir = registry.dir().to_path_buf();
    let (tx, rx) = mpsc::channel::<Message>();
    let events = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Reads (ours included) change nothing; a close after writing may be the last
            // event of a write.
            Ok(event) if matches!(event.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) =>
                {}
            Ok(event) => {
                for path in event.paths {
                    if path.extension().is_some_and(|x| x == "wasm") {
                        let _ = events.send(Message::Changed(path));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "plugin directory watch error"),
        }
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
    let spawned = std::thread::Builder::new()
        .name("komoku-plugins".into())
        .spawn(move || reload_loop(&registry, &rx));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the plugin reload thread; hot reload is off");
        return None;
    }
    // The thread is detached: shutdown never waits for it. This only wakes it to end.
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            shutdown.cancelled().await;
            let _ = tx.send(Message::Stop);
        });
    }
    Some(PluginWatcher { _watcher: watcher })
}

/// Collects changed files until [`DEBOUNCE`] passes without an event, then reloads them.
fn reload_loop(registry: &Registry, rx: &mpsc::Receiver<Message>) {
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut last_event = Instant::now();
    loop {
        let next = if pending.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(DEBOUNCE.saturating_sub(last_event.elapsed()))
        };
        match next {
            Ok(Message::Changed(path)) => {
                // Named as the registry names it, whatever form the event gave.
                if let Some(file) = registry.file_name(&path) {
                    pending.insert(file);
                }
                last_event = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => {
                for file in std::mem::take(&mut pending) {
                    let _ = registry.reload(&file);
                }
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
