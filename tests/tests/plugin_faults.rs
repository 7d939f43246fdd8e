//! A plugin that traps costs one error reply, never the server or another key.

use anyhow::Result;
use komoku_tests::TestServer;
use serde_json::json;

#[tokio::test]
async fn a_trapping_plugin_gets_an_error_reply_and_the_server_keeps_serving() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let mut other = s.client().await?;
    assert_eq!(
        c.request(json!({"define": {"t": {"type": "trap_fixture"}}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "t", "value": 1}})).await?,
        json!("ack")
    );
    assert_eq!(
        other
            .request(json!({"put": {"key": "n", "value": 1}}))
            .await?,
        json!("ack")
    );

    // 666 makes the fixture panic inside wasm: a trap.
    assert_eq!(
        c.request(json!({"put": {"key": "t", "value": 666}}))
            .await?,
        json!({"error": "plugin_failed"})
    );
    // The same connection, the same key and other keys all carry on.
    assert_eq!(c.request(json!({"get": {"key": "t"}})).await?, json!(1));
    assert_eq!(
        c.request(json!({"put": {"key": "t", "value": 2}})).await?,
        json!("ack")
    );
    assert_eq!(c.request(json!({"get": {"key": "t"}})).await?, json!(2));
    assert_eq!(
        other
            .request(json!({"put": {"key": "n", "value": 2}}))
            .await?,
        json!("ack")
    );
    assert_eq!(other.request(json!({"get": {"key": "n"}})).await?, json!(2));

    // Many traps in a row do not exhaust anything.
    for _ in 0..50 {
        assert_eq!(
            c.request(json!({"put": {"key": "t", "value": "trap"}}))
                .await?,
            json!({"error": "plugin_failed"})
        );
    }
    assert_eq!(
        c.request(json!({"put": {"key": "t", "value": 3}})).await?,
        json!("ack")
    );
    Ok(())
}
