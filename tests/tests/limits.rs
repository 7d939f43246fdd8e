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
    // A close frame saying why (1009 "message too big"), not a TCP reset.
    assert_eq!(
        big.close_frame().await?,
        (1009, "message too big".to_string())
    );
    assert_eq!(
        other
            .request(json!({"put": {"key": "k", "value": "small"}}))
            .await?,
        json!("ack")
    );
    Ok(())
}

#[tokio::test]
async fn a_message_of_several_mebibytes_gets_a_close_frame_not_a_reset() -> Result<()> {
    let s = TestServer::start().await?;
    let mut big = s.client().await?;
    // Twice the default 1 MiB: the server stops reading at the frame's header, so the rest
    // must be drained for the close frame to arrive.
    let value = "x".repeat(2 << 20);
    big.send_text(&json!({"put": {"key": "k", "value": value}}).to_string())
        .await?;
    assert_eq!(big.close_frame().await?.0, 1009);
    Ok(())
}

#[tokio::test]
async fn pushes_queued_for_a_reader_are_bounded_in_bytes() -> Result<()> {
    // 400 pushes fit the count (10 000) but not 4 MiB of bytes.
    let s = TestServer::start_with(|cfg| cfg.push_queue_bytes = 4 << 20).await?;
    let mut slow = s.client().await?;
    assert_eq!(
        slow.request(json!({"sub": {"key": "big"}})).await?,
        json!("ack")
    );
    let mut writer = s.client().await?;
    let value = "v".repeat(900 << 10);
    const PUTS: usize = 400;
    for i in 0..PUTS {
        let reply = writer
            .request(json!({"put": {"key": "big", "value": format!("{i}{value}")}}))
            .await?;
        assert_eq!(reply, json!("ack"));
    }
    // The slow reader now reads: what the socket and queue held, then the end.
    let mut pushes = 0;
    let ended = loop {
        match slow.next_message().await {
            Ok(_) => pushes += 1,
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        pushes < PUTS,
        "all {pushes} pushes of 900 KB were queued for a client that did not read ({ended})"
    );
    Ok(())
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() -> Result<()> {
    let s = TestServer::start_with(|cfg| cfg.max_connections = 3).await?;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(s.client().await?);
    }
    assert!(
        s.client().await.is_err(),
        "a fourth connection was served with max_connections = 3"
    );
    // Closing one makes room.
    let first = open.remove(0);
    first.close().await?;
    let mut again = None;
    for _ in 0..100 {
        if let Ok(c) = s.client().await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut again = again.ok_or_else(|| anyhow::anyhow!("no room after a close"))?;
    assert_eq!(again.request(json!({"ping": 1})).await?, json!({"pong": 1}));
    Ok(())
}
