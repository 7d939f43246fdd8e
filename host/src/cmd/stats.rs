//! `stats`: counters since start, subscriptions, disk use by keyspace, compaction progress
//! and the effective config. Needs nothing.

use serde_json::{Map, Value as Json, json};

use super::Reply;
use crate::db::Db;
use crate::value::number_json;

pub(super) fn apply(db: &Db) -> Reply {
    Reply::Value(stats(db))
}

fn stats(db: &Db) -> Json {
    let ops: Map<String, Json> = db
        .stats()
        .ops()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Json::from(v)))
        .collect();
    let mut out = json!({
        "keys_count": db.key_count(),
        "key_slots": db.key_slots(),
        "uptime": db.stats().uptime_secs(),
        "ops_count": ops,
        "change_notifications_count": db.pubsub().count(),
        "data_points_count": db.store().approximate_points(),
        "pushes_sent": db.pubsub().pushes_sent(),
        "disk_bytes": db.store().disk_space().unwrap_or(0),
        "compaction": db.compaction_stats(),
        "storage": storage_stats(db.store()),
        "config": db.stats().config_json(),
    });
    for (name, section) in db.stats().sections() {
        out[name] = section;
    }
    out
}

/// Disk use by keyspace, and per raw point (see the README's "On disk").
fn storage_stats(store: &crate::store::Store) -> Json {
    let points = store.approximate_points();
    let per_point = |bytes: u64| {
        if points == 0 {
            Json::Null
        } else {
            number_json(bytes as f64 / points as f64)
        }
    };
    let keyspaces: Map<String, Json> = store
        .keyspace_sizes()
        .into_iter()
        .map(|(name, bytes)| {
            (
                name.to_string(),
                json!({"bytes": bytes, "bytes_per_point": per_point(bytes)}),
            )
        })
        .collect();
    let journal = store.journal_disk_space().unwrap_or(0);
    json!({
        "format": crate::store::FORMAT_VERSION,
        "raw_points": points,
        "keyspaces": keyspaces,
        "journal_bytes": journal,
        "bytes_per_point": per_point(store.disk_space().unwrap_or(0)),
    })
}
