//! The durability promise: an acknowledged put survives `kill -9` of the server.

use anyhow::Result;
use komoku_tests::{Client, ServerProcess};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");

#[tokio::test]
async fn acknowledged_puts_and_definitions_survive_sigkill() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start(BIN, data.path())?;

    // Several writers at once, so acknowledgements come from shared (group) commits.
    let mut writers = Vec::new();
    for w in 0..8 {
        let url = server.url();
        writers.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await?;
            let mut acked = Vec::new();
            for i in 0..100 {
                let key = format!("w{w}");
                let reply = c
                    .request(json!({"put": {"key": key, "value": i, "time": 1000 + i}}))
                    .await?;
                anyhow::ensure!(reply == json!("ack"), "put not acknowledged: {reply}");
                acked.push(i);
            }
            anyhow::Ok(acked)
        }));
    }
    let mut c = Client::connect(&server.url()).await?;
    assert_eq!(
        c.request(json!({"define": {"up": {"type": "uptime", "max_time": 3600}}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"define": {"s": {"type": "string", "mode": "log"}}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "s", "value": "last words"}}))
            .await?,
        json!("ack")
    );
    for w in writers {
        assert_eq!(w.await??.len(), 100);
    }

    server.kill9()?;

    let server = ServerProcess::start(BIN, data.path())?;
    let mut c = Client::connect(&server.url()).await?;
    for w in 0..8 {
        let points = c
            .request(json!({"fetch": {"key": format!("w{w}")}}))
            .await?;
        let expected: Vec<_> = (0..100).map(|i| json!([1000 + i, i])).collect();
        assert_eq!(points, json!(expected), "writer {w}'s acknowledged points");
    }
    let keys = c.request(json!({"keys": {}})).await?;
    assert_eq!(
        keys["up"],
        json!({"type": "uptime", "opts": {"max_time": 3600}})
    );
    assert_eq!(
        keys["s"],
        json!({"type": "string", "opts": {"mode": "log"}})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "s"}})).await?,
        json!("last words")
    );
    Ok(())
}

#[tokio::test]
async fn an_orderly_restart_keeps_everything_too() -> Result<()> {
    let s = komoku_tests::TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"put": {"key": "n", "value": 1, "time": 10}}))
        .await?;
    c.request(json!({"put": {"key": "n", "value": 2, "time": 20}}))
        .await?;
    c.close().await?;
    let data = s.stop().await?;
    let s = komoku_tests::TestServer::start_with(|cfg| cfg.data_dir = data.path().to_path_buf())
        .await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"fetch": {"key": "n"}})).await?,
        json!([[10, 1], [20, 2]])
    );
    assert_eq!(
        c.request(json!({"last": {"key": "n"}})).await?,
        json!({"value": 2, "time": 20})
    );
    drop(data);
    Ok(())
}

#[tokio::test]
async fn with_interval_durability_a_killed_server_still_loses_nothing_acknowledged() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start_with_args(BIN, data.path(), &["--durability", "200"])?;
    let mut c = Client::connect(&server.url()).await?;
    for i in 0..200 {
        assert_eq!(
            c.request(json!({"put": {"key": "n", "value": i, "time": i}}))
                .await?,
            json!("ack")
        );
    }
    // Well inside the 200 ms fsync window: only the OS holds the journal's tail.
    server.kill9()?;
    let server = ServerProcess::start(BIN, data.path())?;
    let mut c = Client::connect(&server.url()).await?;
    let expected: Vec<_> = (0..200).map(|i| json!([i, i])).collect();
    assert_eq!(
        c.request(json!({"fetch": {"key": "n"}})).await?,
        json!(expected)
    );
    Ok(())
}
