//! The per-connection limits: frame size, requests per array, subscriptions. Each is hit on
//! one connection while another keeps working.

use anyhow::Result;
use komoku_tests::TestServer;
use serde_json::{Value as Json, json};

#[tokio::test]
async fn an_array_over_max_batch_is_refused_whole() -> Result<()> {
    let s = TestServer::start_with(|cfg| cfg.max_batch = 5).await?;
    let mut c = s.client().await?;
    let puts = |n: usize| {
        Json::Array(
            (0..n)
                .map(|i| json!({"put": {"key": "k", "value": i}}))
                .collect(),
        )
    };
    assert_eq!(
        c.request(puts(6)).await?,
        json!({"error": "limit_exceeded"})
    );
    // Nothing of the refused frame was applied.
    assert_eq!(c.request(json!({"get": {"key": "k"}})).await?, Json::Null);
    assert_eq!(
        c.request(puts(5)).await?,
        json!(["ack", "ack", "ack", "ack", "ack"])
    );
    let mut v2 = s.client_v2().await?;
    assert_eq!(
        v2.request(puts(6)).await?,
        json!({"error": "limit_exceeded"})
    );
    Ok(())
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() -> Result<()> {
    let s = TestServer::start_with(|cfg| cfg.max_subscriptions = 3).await?;
    let mut c = s.client().await?;
    for key in ["a", "b", "c"] {
        assert_eq!(c.request(json!({"sub": {"key": key}})).await?, json!("ack"));
    }
    assert_eq!(
        c.request(json!({"sub": {"key": "d"}})).await?,
        json!({"error": "limit_exceeded"})
    );
    // Subscribing again to a key already held costs nothing; an unsub frees a place.
    assert_eq!(c.request(json!({"sub": {"key": "a"}})).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"unsub": {"key": "b"}})).await?,
        json!("ack")
    );
    assert_eq!(c.request(json!({"sub": {"key": "d"}})).await?, json!("ack"));
    // A refused subscription (an invalid key) takes no place either.
    assert_eq!(
        c.request(json!({"unsub": {"key": "d"}})).await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"sub": {"key": ""}})).await?,
        json!({"error": "invalid_key"})
    );
    assert_eq!(c.request(json!({"sub": {"key": "e"}})).await?, json!("ack"));
    assert_eq!(
        c.request(json!({"stats": {}})).await?["change_notifications_count"],
        json!(3)
    );
    // The limit is per connection.
    let mut other = s.client().await?;
    assert_eq!(
        other.request(json!({"sub": {"key": "z"}})).await?,
        json!("ack")
    );
    Ok(())
}

#[tokio::test]
async fn a_frame_over_max_frame_bytes_closes_only_that_connection() -> Result<()> {
    let s = TestServer::start_with(|cfg| cfg.max_frame_bytes = 1024).await?;
    let mut big = s.client().await?;
    let mut other = s.client().await?;
    let value = "x".repeat(2000);
    big.send_text(&json!({"put": {"key": "k", "value": value}}).to_string())
        .await?;
    assert!(
        big.reply().await.is_err(),
        "an oversized frame was answered instead of closing the connection"
    );
    assert_eq!(
        other
            .request(json!({"put": {"key": "k", "value": "small"}}))
            .await?,
        json!("ack")
    );
    Ok(())
}
