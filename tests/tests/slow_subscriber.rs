//! A subscriber that never reads is cut off when its push queue fills, instead of growing the
//! server's memory; the writer carries on.

use std::time::{Duration, Instant};

use anyhow::Result;
use komoku_tests::TestServer;
use serde_json::{Value as Json, json};

#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_and_writers_are_unaffected() -> Result<()> {
    let s = TestServer::start_with(|cfg| cfg.push_queue = 100).await?;
    let mut slow = s.client().await?;
    slow.request(json!({"sub": {"key": "k"}})).await?;
    // From here on `slow` reads nothing.
    let mut writer = s.client().await?;
    assert_eq!(
        writer.request(json!({"stats": {}})).await?["change_notifications_count"],
        json!(1)
    );

    let started = Instant::now();
    let mut n = 0u64;
    for _ in 0..100 {
        let puts: Vec<Json> = (0..1000)
            .map(|_| {
                n += 1;
                json!({"put": {"key": "k", "value": n}})
            })
            .collect();
        let replies = writer.request(Json::Array(puts)).await?;
        assert!(
            replies
                .as_array()
                .is_some_and(|r| r.iter().all(|a| a == "ack")),
            "a put failed"
        );
    }
    assert_eq!(
        writer.request(json!({"get": {"key": "k"}})).await?,
        json!(100_000)
    );

    let mut dropped = false;
    while started.elapsed() < Duration::from_secs(20) {
        if writer.request(json!({"stats": {}})).await?["change_notifications_count"] == json!(0) {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped,
        "the subscriber that never reads is still subscribed"
    );
    drop(slow);
    Ok(())
}
