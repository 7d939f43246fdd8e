//! `types`: the loaded key types, the state of each plugin file, and the types that could
//! not be loaded. Needs nothing.

use serde_json::{Map, Value as Json, json};

use super::Reply;
use crate::db::Db;
use crate::value::number_json;

pub(super) fn apply(db: &Db) -> Reply {
    Reply::Value(types(db))
}

fn types(db: &Db) -> Json {
    let loaded: Map<String, Json> = db
        .registry()
        .all()
        .iter()
        .map(|p| {
            let loaded_at = p.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            (
                p.info.name.clone(),
                json!({
                    "version": p.info.version,
                    "description": p.info.description,
                    "source": p.source.display().to_string(),
                    "loaded_at": number_json(loaded_at),
                    "default_options": serde_json::from_str::<Json>(&p.info.default_options).unwrap_or(Json::Null),
                }),
            )
        })
        .collect();
    let files: Map<String, Json> = db
        .registry()
        .files()
        .into_iter()
        .map(|(path, status)| {
            (
                path.display().to_string(),
                json!({"type": status.type_name, "last_error": status.last_error, "loads": status.loads}),
            )
        })
        .collect();
    let unavailable: Map<String, Json> = db
        .registry()
        .unavailable()
        .into_iter()
        .map(|(name, why)| (name, Json::String(why)))
        .collect();
    json!({"types": loaded, "files": files, "unavailable": unavailable})
}
