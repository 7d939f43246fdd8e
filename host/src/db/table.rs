//! The key table: one slot per key the server holds in memory, by name in name order.
//!
//! Names are stored once (the map's key; the slot holds no copy). The table counts the keys
//! that exist as they are created and deleted, so `stats` reads a number instead of visiting
//! every slot, and it is ordered, so `keys` with `after` starts where the page starts.
//!
//! A slot that holds no key (a deleted key, or a name that was only looked at: a refused
//! first put, a `sub` on an unknown name) is removed from the table as soon as its user
//! lets go of it ([`KeyTable::release`]), unless a subscriber of the name still counts on
//! its sequence numbers. Removal and locking race safely: whoever locks a slot checks that
//! it is still the name's slot in the table ([`KeyTable::lock`]) and otherwise starts over
//! with the current one, so two slots never serve one name.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::KeyState;
use crate::error::{Error, Result};

pub(super) type Slot = Arc<Mutex<KeyState>>;

/// A locked slot: the state of one key, exclusively.
pub(super) type Held = OwnedMutexGuard<KeyState>;

/// Named slots, and the name the next batch starts after (see [`KeyTable::batch_after`]).
pub(super) type Batch = (Vec<(Box<str>, Slot)>, Option<Box<str>>);

#[derive(Default)]
pub(super) struct KeyTable {
    slots: RwLock<BTreeMap<Box<str>, Slot>>,
    /// How many slots hold a key that exists.
    live: AtomicUsize,
}

impl KeyTable {
    fn read(&self) -> Result<RwLockReadGuard<'_, BTreeMap<Box<str>, Slot>>> {
        self.slots
            .read()
            .map_err(|_| Error::Storage("key table lock poisoned".into()))
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, BTreeMap<Box<str>, Slot>>> {
        self.slots
            .write()
            .map_err(|_| Error::Storage("key table lock poisoned".into()))
    }

    /// The slot of `name`, if the table has one (it may hold no key).
    pub(super) fn get(&self, name: &str) -> Option<Slot> {
        self.read().ok()?.get(name).cloned()
    }

    /// Adds the slot of a key read from the store (at start-up).
    pub(super) fn insert_loaded(&self, name: &str, state: KeyState) -> Result<()> {
        let exists = state.def.is_some();
        let previous = self
            .write()?
            .insert(name.into(), Arc::new(Mutex::new(state)));
        if exists && previous.is_none() {
            self.live.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Locks the slot of `name`; with `create`, one is made if the table has none (hand it
    /// back with [`KeyTable::release`] when it may be left empty). The slot returned is the
    /// name's slot in the table for as long as it is held.
    pub(super) async fn lock(&self, name: &str, create: bool) -> Result<Option<Held>> {
        loop {
            let slot = match self.get(name) {
                Some(slot) => slot,
                None if create => self
                    .write()?
                    .entry(name.into())
                    .or_insert_with(Slot::default)
                    .clone(),
                None => return Ok(None),
            };
            let held = slot.clone().lock_owned().await;
            // It may have been released while we waited for it.
            let current = self.get(name);
            if current.is_some_and(|c| Arc::ptr_eq(&c, &slot)) {
                return Ok(Some(held));
            }
        }
    }

    /// Hands a locked slot back: removed from the table if it holds no key and `keep_seq`
    /// (someone still counts on the name's push numbers) is false or its numbers never
    /// started.
    pub(super) fn release(&self, name: &str, held: Held, keep_seq: impl FnOnce() -> bool) {
        if held.def.is_some() || (held.seq > 0 && keep_seq()) {
            return;
        }
        if let Ok(mut slots) = self.write() {
            // Still locked by us: nobody can have put a key in it meanwhile.
            slots.remove(name);
        }
        drop(held);
    }

    /// A key came to exist in a slot.
    pub(super) fn created(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// A key stopped existing.
    pub(super) fn deleted(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// How many keys exist. O(1).
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// How many slots the table holds (keys and names still in use by someone).
    pub(super) fn slots(&self) -> usize {
        self.read().map_or(0, |s| s.len())
    }

    /// Up to `n` slots in name order after `after` (from the first with `None`) whose names
    /// `take` accepts, and the last name looked at (where the next batch starts), `None` at
    /// the end of the table. Looks at no more than `4 * n + 64` names per call, so a pattern
    /// matching few names costs several short calls, never one long hold of the table.
    pub(super) fn batch_after(
        &self,
        after: Option<&str>,
        n: usize,
        take: impl Fn(&str) -> bool,
    ) -> Batch {
        let Ok(slots) = self.read() else {
            return (Vec::new(), None);
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::with_capacity(n.min(1024));
        let budget = n.saturating_mul(4).saturating_add(64);
        let mut last = None;
        for (looked, (name, slot)) in slots.range::<str, _>((start, Bound::Unbounded)).enumerate() {
            if looked == budget || out.len() == n {
                return (out, last);
            }
            last = Some(name.clone());
            if take(name) {
                out.push((name.clone(), slot.clone()));
            }
        }
        (out, None)
    }

    /// The names `take` accepts, in name order.
    pub(super) fn names(&self, take: impl Fn(&str) -> bool) -> Vec<String> {
        self.read()
            .map(|s| {
                s.keys()
                    .filter(|n| take(n))
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every slot, in name order (a type's reload visits its keys).
    pub(super) fn all(&self) -> Vec<(Box<str>, Slot)> {
        self.read()
            .map(|s| s.iter().map(|(n, s)| (n.clone(), s.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyDef;

    fn def() -> KeyDef {
        KeyDef {
            type_name: "number".into(),
            opts: Default::default(),
        }
    }

    #[tokio::test]
    async fn an_empty_slot_is_removed_on_release_and_a_key_is_kept() -> Result<()> {
        let table = KeyTable::default();
        let held = table.lock("a", true).await?.expect("created");
        table.release("a", held, || true);
        assert_eq!(table.slots(), 0, "a name only looked at leaves no slot");

        let mut held = table.lock("b", true).await?.expect("created");
        held.def = Some(def());
        table.created();
        table.release("b", held, || false);
        assert_eq!((table.slots(), table.live()), (1, 1));
        assert!(table.lock("c", false).await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn a_deleted_key_keeps_its_slot_only_while_its_numbers_count() -> Result<()> {
        let table = KeyTable::default();
        let mut held = table.lock("k", true).await?.expect("created");
        held.seq = 3;
        table.release("k", held, || true);
        assert_eq!(table.slots(), 1, "a subscriber counts on seq 3");
        let held = table.lock("k", false).await?.expect("kept");
        assert_eq!(held.seq, 3);
        table.release("k", held, || false);
        assert_eq!(table.slots(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn a_slot_released_while_another_waits_is_not_used_by_it() -> Result<()> {
        let table = Arc::new(KeyTable::default());
        let held = table.lock("k", true).await?.expect("created");
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move {
                let mut held = table.lock("k", true).await?.expect("created");
                held.def = Some(def());
                table.created();
                Ok::<_, Error>(())
            })
        };
        tokio::task::yield_now().await;
        table.release("k", held, || false);
        waiter.await.map_err(|e| Error::Storage(e.to_string()))??;
        let held = table.lock("k", false).await?.expect("the waiter's slot");
        assert!(held.def.is_some(), "the key lives in the table's slot");
        assert_eq!(table.slots(), 1);
        Ok(())
    }

    #[test]
    fn batches_page_in_name_order_and_bound_their_work() {
        let table = KeyTable::default();
        for i in 0..1000 {
            let state = KeyState {
                def: Some(def()),
                ..KeyState::default()
            };
            table
                .insert_loaded(&format!("k{i:04}"), state)
                .expect("insert");
        }
        let (page, last) = table.batch_after(Some("k0009"), 3, |_| true);
        let names: Vec<&str> = page.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["k0010", "k0011", "k0012"]);
        assert_eq!(last.as_deref(), Some("k0012"));
        // Nothing matches: the call stops after its budget and says where to go on.
        let (page, last) = table.batch_after(None, 10, |n| n == "none");
        assert!(page.is_empty());
        assert_eq!(last.as_deref(), Some("k0103"));
        let (_, last) = table.batch_after(Some("k0990"), 100, |_| true);
        assert_eq!(last, None, "the end of the table");
        assert_eq!(table.live(), 1000);
    }
}
