//! The key table at scale (issue 15): slots of keys that do not exist are freed, `stats`
//! counts keys without visiting them, and `keys` pages list every key once.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use komoku_tests::TestServer;
use serde_json::{Value as Json, json};

async fn counts(c: &mut komoku_tests::Client) -> Result<(u64, u64)> {
    let s = c.request(json!({"stats": {}})).await?;
    Ok((
        s["keys_count"].as_u64().unwrap_or(u64::MAX),
        s["key_slots"].as_u64().unwrap_or(u64::MAX),
    ))
}

#[tokio::test]
async fn names_that_hold_no_key_leave_no_slot() -> Result<()> {
    let s = TestServer::start_with(|cfg| cfg.increment_creates = None).await?;
    let mut c = s.client().await?;
    for key in ["a", "b"] {
        assert_eq!(
            c.request(json!({"put": {"key": key, "value": 1}})).await?,
            json!("ack")
        );
    }
    assert_eq!(counts(&mut c).await?, (2, 2));

    // A refused first operation creates nothing and keeps nothing.
    let refused = c.request(json!({"increment": {"key": "nope"}})).await?;
    assert_eq!(refused["error"], json!("unknown_key"), "{refused}");
    // A subscription with history on a name without a key: nothing to keep either.
    let sub = c
        .request(json!({"sub": {"key": "ghost", "since": 0}}))
        .await?;
    assert_eq!(sub["seq"], json!(0), "{sub}");
    assert_eq!(counts(&mut c).await?, (2, 2));

    // A deleted key nobody is subscribed to leaves no slot.
    assert_eq!(
        c.request(json!({"delete": {"key": "a"}})).await?,
        json!("ack")
    );
    assert_eq!(counts(&mut c).await?, (1, 1));
    assert_eq!(c.request(json!({"get": {"key": "a"}})).await?, Json::Null);
    Ok(())
}

#[tokio::test]
async fn a_deleted_key_with_a_numbered_subscriber_keeps_its_numbers() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"put": {"key": "b", "value": 1}})).await?,
        json!("ack")
    );
    let mut watcher = s.client().await?;
    let sub = watcher
        .request(json!({"sub": {"key": "b", "since": 0}}))
        .await?;
    assert_eq!(sub["seq"], json!(1), "{sub}");
    assert_eq!(
        c.request(json!({"delete": {"key": "b"}})).await?,
        json!("ack")
    );
    assert_eq!(
        counts(&mut c).await?,
        (0, 1),
        "the subscriber counts on seq 1"
    );
    assert_eq!(
        c.request(json!({"put": {"key": "b", "value": 2}})).await?,
        json!("ack")
    );
    let push = watcher.push().await?;
    assert_eq!(push["pub"]["seq"], json!(2), "numbers go on: {push}");
    assert_eq!(push["pub"]["value"], json!(2));
    assert_eq!(counts(&mut c).await?, (1, 1));
    Ok(())
}

#[tokio::test]
async fn keys_pages_list_every_matching_key_once() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let puts: Vec<Json> = (0..120)
        .map(|i| json!({"put": {"key": format!("room{}.t{i:03}", i % 3), "value": i}}))
        .collect();
    c.request(Json::Array(puts)).await?;
    // Deleted keys in the middle of a page are skipped.
    for i in [3, 30, 60] {
        let name = format!("room0.t{i:03}");
        assert_eq!(
            c.request(json!({"delete": {"key": name}})).await?,
            json!("ack")
        );
    }
    let mut seen = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = json!({"pattern": "room0.*", "limit": 7});
        if let Some(a) = &after {
            args["after"] = json!(a);
        }
        let page = c.request(json!({"keys": args})).await?;
        let Json::Object(page) = page else {
            anyhow::bail!("keys answered {page}");
        };
        ensure!(page.len() <= 7, "a page over its limit: {}", page.len());
        if page.is_empty() {
            break;
        }
        for name in page.keys() {
            ensure!(name.starts_with("room0."), "{name} does not match");
            ensure!(seen.insert(name.clone()), "{name} listed twice");
        }
        after = page.keys().max().cloned();
    }
    assert_eq!(seen.len(), 40 - 3);
    assert!(!seen.contains("room0.t030"));
    Ok(())
}
