//! Data folders in format 1, the layout before key ids and chunks (one fjall row per point,
//! keyed by the key's name and its f64 time), written directly with fjall: what a folder
//! of a Komoku before format 2 holds, for the migration's tests and the density baseline.

use std::path::Path;

use anyhow::Result;
use fjall::{Database, KeyspaceCreateOptions};

/// One value as format 1 encoded it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

fn encode(v: &Value) -> Vec<u8> {
    match v {
        Value::Bool(b) => vec![u8::from(*b)],
        Value::Number(n) => [&[2u8][..], &n.to_be_bytes()].concat(),
        Value::Text(s) => [&[3u8][..], s.as_bytes()].concat(),
    }
}

fn sortable(t: f64) -> [u8; 8] {
    let bits = t.to_bits();
    let ordered = if bits >> 63 == 0 {
        bits | (1 << 63)
    } else {
        !bits
    };
    ordered.to_be_bytes()
}

/// A key to write: its name, its type's name and its points.
pub type Key<'a> = (String, &'a str, Vec<(f64, Value)>);

/// Writes keys of `type_name` and their points into a new format-1 folder at `dir`, then
/// flushes its memtables (as a long-running server would have).
pub fn write(dir: &Path, keys: &[Key]) -> Result<()> {
    let db = Database::builder(dir).open()?;
    let defs = db.keyspace("defs", KeyspaceCreateOptions::default)?;
    let points = db.keyspace("points", KeyspaceCreateOptions::default)?;
    for (name, type_name, history) in keys {
        defs.insert(
            name.as_bytes(),
            format!(r#"{{"type":"{type_name}"}}"#).into_bytes(),
        )?;
        let mut batch = db.batch();
        for (t, v) in history {
            let mut k = (name.len() as u16).to_be_bytes().to_vec();
            k.extend_from_slice(name.as_bytes());
            k.extend_from_slice(&sortable(*t));
            batch.insert(&points, k, encode(v));
        }
        batch.commit()?;
    }
    defs.rotate_memtable_and_wait()?;
    points.rotate_memtable_and_wait()?;
    db.persist(fjall::PersistMode::SyncAll)?;
    Ok(())
}
