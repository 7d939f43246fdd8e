//! History then live: `sub` with `since` answers the key's history, then pushes follow with
//! per-key sequence numbers, so that the history plus the pushes are exactly the changes
//! written, none lost and none repeated, while another client writes without pause.

use std::time::Duration;

use anyhow::{Result, ensure};
use komoku_tests::{TestServer, num};
use serde_json::json;

#[tokio::test]
async fn history_then_live_pushes_are_exactly_the_written_sequence() -> Result<()> {
    const N: i64 = 3000;
    let s = TestServer::start().await?;
    let mut writer = s.client().await?;
    let url = s.url();
    let writing = tokio::spawn(async move {
        for i in 1..=N {
            let reply = writer
                .request(json!({"put": {"key": "seq", "value": i}}))
                .await?;
            ensure!(reply == json!("ack"), "put {i}: {reply}");
        }
        anyhow::Ok(())
    });
    // Join in the middle of the stream.
    let mut reader = komoku_tests::Client::connect(&url).await?;
    loop {
        let v = reader.request(json!({"get": {"key": "seq"}})).await?;
        if v.as_i64().unwrap_or(0) >= 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = reader
        .request(json!({"sub": {"key": "seq", "since": 0}}))
        .await?;
    let history: Vec<i64> = reply["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|row| row[1].as_i64().expect("a number"))
        .collect();
    let mut seq = reply["seq"].as_u64().expect("seq");
    ensure!(
        history.len() >= 500,
        "joined after 500 puts: {}",
        history.len()
    );
    ensure!(
        seq == history.len() as u64,
        "every stored change was one push"
    );

    let mut seen = history;
    while seen.last().copied() != Some(N) {
        let push = reader.push().await?;
        let body = &push["pub"];
        seq += 1;
        ensure!(
            body["seq"] == json!(seq),
            "push {body} after seq {}",
            seq - 1
        );
        seen.push(num(&body["value"]) as i64);
    }
    writing.await??;
    let expected: Vec<i64> = (1..=N).collect();
    assert_eq!(
        seen, expected,
        "history + pushes = every change, in order, once"
    );
    assert!(
        reader
            .maybe_push(Duration::from_millis(200))
            .await?
            .is_none(),
        "nothing after the last change"
    );
    Ok(())
}

#[tokio::test]
async fn plain_subscriptions_keep_the_ruby_push_shape_and_seq_is_opt_in() -> Result<()> {
    let s = TestServer::start().await?;
    let mut plain = s.client().await?;
    let mut numbered = s.client().await?;
    assert_eq!(
        plain.request(json!({"sub": {"key": "k"}})).await?,
        json!("ack")
    );
    assert_eq!(
        numbered
            .request(json!({"sub": {"key": "k", "seq": true}}))
            .await?,
        json!("ack")
    );
    let mut w = s.client().await?;
    w.request(json!({"put": {"key": "k", "value": 1, "time": 10}}))
        .await?;
    w.request(json!({"put": {"key": "k", "value": 2, "time": 20}}))
        .await?;
    let p = plain.push().await?;
    assert_eq!(
        p,
        json!({"pub": {"key": "k", "value": 1, "time": 10, "previous": null, "previous_value": null}})
    );
    let n1 = numbered.push().await?;
    let n2 = numbered.push().await?;
    assert_eq!(n1["pub"]["seq"], json!(1));
    assert_eq!(n2["pub"]["seq"], json!(2));
    assert_eq!(n2["pub"]["previous"], json!(1));
    // A `since` that is not a time is refused.
    let mut h = s.client().await?;
    let r = h
        .request(json!({"sub": {"key": "k", "since": "yesterday"}}))
        .await?;
    assert_eq!(r, json!({"error": "invalid_query"}));
    Ok(())
}
