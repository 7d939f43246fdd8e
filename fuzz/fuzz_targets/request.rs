//! Fuzzes the whole request path a websocket frame takes: JSON parsing, `Command::parse`,
//! the connection's session (auth, permissions, limits) and the command applied to a real
//! database (temp dir, the built-in wasm key types), in both dialects.
//!
//! Input: one byte choosing the dialect and the connection's access, then frames separated
//! by `\n`, answered in order on one connection (so `auth`, then commands, is reachable).
//! Oracles: no panic, no hang (libFuzzer's -timeout), and an array frame within the batch
//! limit is answered by an array of as many replies.

#![no_main]

use std::sync::{Arc, OnceLock};

use komoku::auth::{Access, Auth, AuthConfig, TokenConfig, hash_token};
use komoku::protocol::{self, Dialect};
use komoku::pubsub::Subscriber;
use komoku::session::{ConnectionLimits, Session};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use tokio::sync::mpsc;

struct World {
    rt: tokio::runtime::Runtime,
    server: komoku::Server,
    auth: Arc<Auth>,
    _data: tempfile::TempDir,
}

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_frame_bytes: 1 << 20,
    push_queue: 64,
    push_queue_bytes: 1 << 20,
    auth_timeout: std::time::Duration::from_secs(10),
    max_batch: 64,
    max_subscriptions: 8,
};

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let data = tempfile::tempdir().expect("a temp dir");
        let mut config = komoku::Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: data.path().join("data"),
            plugins_dir: data.path().join("no-plugins"),
            hot_reload: false,
            // Acknowledge on handing to the OS: an fsync per put would make runs crawl.
            durability: komoku::config::DurabilityConfig::IntervalMs(1000),
            ..komoku::Config::default()
        };
        config.auth = AuthConfig {
            enabled: true,
            tokens: vec![TokenConfig {
                name: "fuzz".into(),
                hash: hash_token("fuzz-token"),
                revoked: false,
                read: vec!["sensor.*".into(), "shared".into()],
                write: vec!["sensor.*".into()],
                subscribe: vec!["*".into()],
                define: vec!["sensor.d*".into()],
            }],
        };
        let server = rt
            .block_on(komoku::Server::start(&config))
            .expect("the server starts");
        let auth = Arc::new(Auth::from_config(&config.auth).expect("valid auth config"));
        World {
            rt,
            server,
            auth,
            _data: data,
        }
    })
}

fuzz_target!(
    // Start the server (compiling the built-in wasm types) before the first input, so that
    // its start is not counted against the per-input timeout.
    init: {
        world();
    },
    |input: &[u8]| {
    let Some((&mode, frames)) = input.split_first() else {
        return;
    };
    let w = world();
    let db = w.server.db();
    let dialect = if mode & 1 == 0 { Dialect::V1 } else { Dialect::V2 };
    let access = match (mode >> 1) % 3 {
        0 => Access::Open,
        1 => Access::Anonymous,
        _ => w
            .auth
            .access_of(&["fuzz-token".to_string()])
            .expect("the fuzz token is valid"),
    };
    let mut session = Session::new(w.auth.clone(), access, LIMITS);
    let (tx, _pushes) = mpsc::channel(LIMITS.push_queue);
    let me = Subscriber::new(db.pubsub().next_conn_id(), tx, 1 << 20);
    w.rt.block_on(async {
        for frame in frames.split(|b| *b == b'\n') {
            let reply = protocol::answer(db, &me, &mut session, dialect, frame).await;
            if let Ok(Json::Array(requests)) = serde_json::from_slice::<Json>(frame)
                && requests.len() <= LIMITS.max_batch
            {
                assert_eq!(
                    reply.as_array().map(Vec::len),
                    Some(requests.len()),
                    "an array of {} requests got {reply}",
                    requests.len()
                );
            }
            let _ = reply.to_string();
        }
    });
    db.pubsub().drop_connection(me.conn);
    }
);
