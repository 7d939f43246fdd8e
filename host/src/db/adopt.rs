//! Moving a type's keys to a version of the type that is loading (at start-up or hot).
//!
//! A key stores the options `define` gave it; what its plugin works with is those options
//! completed by the serving version's `check-options` (its effective options). Whenever a
//! version of a type loads, every key of the type gets its effective options (and pending
//! automatic value) anew from that version, the same way at start-up and at a hot load, so a
//! default the new version changed applies at once. A version that refuses some key's stored
//! options, and cannot migrate them (`migrate-options`), does not serve: the version serving
//! the keys stays, and the registry reports why.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};

use serde_json::{Map, Value as Json};
use tokio::sync::OwnedMutexGuard;

use super::{Db, KeyState, Slot, opts_json};
use crate::error::{Error, Result};
use crate::plugins::{FitOptions, Keys, Plugin, Scheduled};
use crate::store::{Write, WriteBatch};

/// How many of the keys that do not fit a refusal names.
const NAMED: usize = 3;

/// The database's keys, as the registry sees them.
pub(super) struct KeyBook(pub(super) Weak<Db>);

impl Keys for KeyBook {
    fn adopt(&self, plugin: &Arc<Plugin>, serve: &mut dyn FnMut()) -> Result<()> {
        match self.0.upgrade() {
            Some(db) => db.adopt(plugin, serve),
            None => {
                serve();
                Ok(())
            }
        }
    }
}

/// One key's state under the new version.
struct Move {
    name: String,
    state: OwnedMutexGuard<KeyState>,
    fit: FitOptions,
    schedule: Option<Scheduled>,
}

impl Db {
    /// See [`Keys::adopt`]. Holds every key of the type (no operation on them runs) from the
    /// check until they follow the new version.
    fn adopt(&self, plugin: &Arc<Plugin>, serve: &mut dyn FnMut()) -> Result<()> {
        let type_name = plugin.info.name.as_str();
        let mut moves = Vec::new();
        let mut misfits = Vec::new();
        for (name, slot) in self.all_slots() {
            let state = slot.blocking_lock_owned();
            if !is_of(&state, type_name) {
                continue;
            }
            match fit(plugin, &state) {
                Ok((fit, schedule)) => moves.push(Move {
                    name,
                    state,
                    fit,
                    schedule,
                }),
                Err(e) => misfits.push((name, e)),
            }
        }
        if !misfits.is_empty() {
            return Err(refusal(plugin, &misfits));
        }

        // Migrated options are on disk before the version serves.
        let writes: Vec<Write> = moves
            .iter()
            .filter_map(|m| {
                let migrated = m.fit.migrated.as_deref()?;
                let mut def = m.state.def.clone()?;
                def.opts = options_map(migrated);
                Some(Write::Def {
                    key: m.name.clone(),
                    def,
                })
            })
            .collect();
        if !writes.is_empty() {
            let migrated = writes.len();
            self.writer
                .submit(WriteBatch {
                    writes,
                    after: None,
                })
                .blocking_recv()
                .unwrap_or(Err(Error::ShuttingDown))?;
            tracing::info!(type_name, version = %plugin.info.version, keys = migrated, "migrated the options of existing keys");
        }

        serve();
        let mut moved = HashSet::with_capacity(moves.len());
        for Move {
            name,
            mut state,
            fit,
            schedule,
        } in moves
        {
            self.follow(&name, &mut state, fit, schedule);
            moved.insert(name);
        }
        // Keys created with the previous version while the others were checked.
        for (name, slot) in self.all_slots() {
            if moved.contains(&name) {
                continue;
            }
            let mut state = slot.blocking_lock_owned();
            if !is_of(&state, type_name) {
                continue;
            }
            match fit(plugin, &state) {
                Ok((fit, schedule)) => self.follow(&name, &mut state, fit, schedule),
                Err(e) => {
                    tracing::warn!(key = %name, type_name, error = %e, "a key created during a type's reload does not fit its new version")
                }
            }
        }
        Ok(())
    }

    /// Switches one key to its options and automatic value under a new version.
    fn follow(
        &self,
        name: &str,
        state: &mut KeyState,
        fit: FitOptions,
        schedule: Option<Scheduled>,
    ) {
        if let (Some(migrated), Some(def)) = (&fit.migrated, state.def.as_mut()) {
            def.opts = options_map(migrated);
        }
        if let Some(def) = &state.def {
            self.chunk_keys.set(name, &def.type_name, &fit.effective);
        }
        state.effective = fit.effective;
        self.set_schedule(name, state, schedule);
    }

    /// Logs each type that has keys but no version serving it (once the plugins have loaded
    /// at start-up): its keys answer `unknown_type` to writes, their data kept.
    pub async fn warn_unserved_types(&self) {
        let mut unserved: BTreeMap<String, usize> = BTreeMap::new();
        for (_, slot) in self.all_slots() {
            let state = slot.lock().await;
            if let Some(def) = &state.def
                && self.registry.get(&def.type_name).is_err()
            {
                *unserved.entry(def.type_name.clone()).or_default() += 1;
            }
        }
        for (type_name, keys) in unserved {
            tracing::warn!(%type_name, keys, "no version of this type is loaded; its keys refuse writes (their data is kept) until one that can take them loads");
        }
    }

    fn all_slots(&self) -> Vec<(String, Slot)> {
        // In name order; a slot that holds no key is skipped by the callers.
        self.keys
            .all()
            .into_iter()
            .map(|(name, slot)| (name.into(), slot))
            .collect()
    }
}

fn is_of(state: &KeyState, type_name: &str) -> bool {
    state.def.as_ref().is_some_and(|d| d.type_name == type_name)
}

/// A key's options and pending automatic value under `plugin`.
fn fit(plugin: &Plugin, state: &KeyState) -> Result<(FitOptions, Option<Scheduled>)> {
    let fit = plugin.fit_options(&opts_json(state))?;
    let schedule = match state.reference() {
        Some(reference) => plugin.reschedule(&fit.effective, reference)?,
        None => None,
    };
    Ok((fit, schedule))
}

/// Options text the plugin returned (checked to be a JSON object) as a map.
fn options_map(json: &str) -> Map<String, Json> {
    match serde_json::from_str(json) {
        Ok(Json::Object(map)) => map,
        _ => Map::new(),
    }
}

fn refusal(plugin: &Plugin, misfits: &[(String, Error)]) -> Error {
    let mut names: Vec<&str> = misfits
        .iter()
        .take(NAMED)
        .map(|(n, _)| n.as_str())
        .collect();
    if misfits.len() > NAMED {
        names.push("...");
    }
    let (first, why) = &misfits[0];
    Error::PluginFailed {
        plugin: format!("{} {}", plugin.info.name, plugin.info.version),
        message: format!(
            "cannot take the stored options of {} existing key{} ({}); {first}: {why}. The version serving them (if any) stays; a version exporting migrate-options can migrate them",
            misfits.len(),
            if misfits.len() == 1 { "" } else { "s" },
            names.join(", ")
        ),
    }
}
