//! Every v2 row of protocol.md: wrapped replies, query_id, ping, increment/decrement.

use anyhow::Result;
use komoku_tests::TestServer;
use serde_json::json;

#[tokio::test]
async fn v2_wraps_every_reply_and_echoes_query_id() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client_v2().await?;
    assert_eq!(
        c.request(json!({"put": {"key": "k", "value": 7}, "query_id": "bzium"}))
            .await?,
        json!({"result": "ok", "query_id": "bzium"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "k"}})).await?,
        json!({"result": 7})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "k"}, "query_id": 5}))
            .await?,
        json!({"result": 7, "query_id": 5})
    );
    c.request(json!({"put": {"key": "k2", "value": 8, "time": 1473007432}}))
        .await?;
    assert_eq!(
        c.request(json!({"last": {"key": "k2"}})).await?,
        json!({"result": {"value": 8, "time": 1473007432}})
    );
    assert_eq!(
        c.request(json!({"keys": {}})).await?,
        json!({"result": {"k": {"type": "numeric"}, "k2": {"type": "numeric"}}})
    );
    assert_eq!(
        c.request(json!({"define": {"u": {"type": "uptime"}}}))
            .await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"sub": {"key": "k"}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"unsub": {"key": "k"}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"ping": "foo"})).await?,
        json!({"result": {"pong": "foo"}})
    );
    assert_eq!(
        c.request(json!({"nope": {}})).await?,
        json!({"error": "invalid_query"})
    );
    // A type's refusal carries the plugin's own words as `message` in v2.
    let refused = c
        .request(json!({"put": {"key": "k", "value": "x"}}))
        .await?;
    assert_eq!(refused["error"], json!("invalid_value"), "{refused}");
    assert!(
        refused["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message with the refusal: {refused}"
    );
    assert_eq!(c.raw("{oops").await?, json!({"error": "invalid_json"}));
    Ok(())
}

#[tokio::test]
async fn counters_start_at_zero_and_step_by_one_or_the_given_step() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client_v2().await?;
    assert_eq!(
        c.request(json!({"increment": {"key": "c"}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "c"}})).await?,
        json!({"result": 1})
    );
    assert_eq!(
        c.request(json!({"increment": {"key": "c", "step": 2.4}}))
            .await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "c"}})).await?,
        json!({"result": 3.4})
    );
    assert_eq!(
        c.request(json!({"decrement": {"key": "c"}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "c"}})).await?,
        json!({"result": 2.4})
    );
    assert_eq!(
        c.request(json!({"decrement": {"key": "c", "step": 0.5}}))
            .await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "c"}})).await?,
        json!({"result": 1.9})
    );
    assert_eq!(
        c.request(json!({"keys": {}})).await?,
        json!({"result": {"c": {"type": "counter"}}})
    );
    Ok(())
}

#[tokio::test]
async fn v2_pushes_are_the_same_pub_objects() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client_v2().await?;
    c.request(json!({"sub": {"key": "k"}})).await?;
    c.send_text(&json!({"put": {"key": "k", "value": 1, "time": 5}}).to_string())
        .await?;
    assert_eq!(c.next_message().await?, json!({"result": "ok"}));
    assert_eq!(
        c.next_message().await?,
        json!({"pub": {"key": "k", "value": 1, "time": 5, "previous": null, "previous_value": null}})
    );
    Ok(())
}

#[tokio::test]
async fn a_separate_v2_port_speaks_v2_on_every_path() -> Result<()> {
    let s = TestServer::start_with(|cfg| {
        cfg.v2_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await?;
    let addr = s
        .server
        .v2_addr
        .ok_or_else(|| anyhow::anyhow!("no v2 listener"))?;
    let mut c = komoku_tests::Client::connect(&format!("ws://{addr}/")).await?;
    assert_eq!(
        c.request(json!({"put": {"key": "k", "value": 1}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"nope": {}})).await?,
        json!({"error": "invalid_query"})
    );
    // The main port still speaks v1 at `/`.
    let mut v1 = s.client().await?;
    assert_eq!(v1.request(json!({"get": {"key": "k"}})).await?, json!(1));
    Ok(())
}
