//! Each built-in type's semantics, end to end over real websockets (all rules live in the
//! plugins; these tests only talk to the server).

use std::time::Duration;

use anyhow::Result;
use komoku_tests::{Client, TestServer, now, num};
use serde_json::json;

#[tokio::test]
async fn a_true_within_max_time_re_arms_the_expiry() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // Four refreshes 400 ms apart span longer than max_time: only re-arming keeps it true.
    c.request(json!({"define": {"up": {"type": "uptime", "max_time": 1.5}}}))
        .await?;
    for _ in 0..4 {
        c.request(json!({"put": {"key": "up", "value": true}}))
            .await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        c.request(json!({"get": {"key": "up"}})).await?,
        json!(true),
        "refreshed every 400 ms"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        c.request(json!({"get": {"key": "up"}})).await?,
        json!(false)
    );
    Ok(())
}

#[tokio::test]
async fn uptime_expiry_that_fell_due_while_down_is_stored_at_its_past_time() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"up": {"type": "uptime", "max_time": 0.3}}}))
        .await?;
    c.request(json!({"put": {"key": "up", "value": true, "time": now()}}))
        .await?;
    let t_true = num(&c.request(json!({"last": {"key": "up"}})).await?["time"]);
    c.close().await?;
    // Stop before the expiry fires (the window is 300 ms)...
    let data = s.stop().await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // ...and start after it.
    let s = TestServer::start_with(|cfg| cfg.data_dir = data.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    let mut last = json!(null);
    for _ in 0..50 {
        last = c.request(json!({"last": {"key": "up"}})).await?;
        if last["value"] == json!(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last["value"], json!(false));
    assert!(
        (num(&last["time"]) - (t_true + 0.3)).abs() < 1e-6,
        "stored at {}, expected {}",
        last["time"],
        t_true + 0.3
    );
    let history = c.request(json!({"fetch": {"key": "up"}})).await?;
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    drop(data);
    Ok(())
}

#[tokio::test]
async fn changing_max_time_re_arms() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"up": {"type": "uptime", "max_time": 60}}}))
        .await?;
    c.request(json!({"put": {"key": "up", "value": true}}))
        .await?;
    c.request(json!({"define": {"up": {"type": "uptime", "max_time": 0.2}}}))
        .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        c.request(json!({"get": {"key": "up"}})).await?,
        json!(false)
    );
    Ok(())
}

#[tokio::test]
async fn thirty_two_clients_incrementing_one_counter_lose_nothing() -> Result<()> {
    let s = TestServer::start().await?;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let url = s.url_v2();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await?;
            for _ in 0..1000 {
                anyhow::ensure!(
                    c.request(json!({"increment": {"key": "hits"}})).await?
                        == json!({"result": "ok"})
                );
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"get": {"key": "hits"}})).await?,
        json!(32000)
    );
    Ok(())
}

#[tokio::test]
async fn numeric_refuses_nan_and_infinities_given_as_text() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"put": {"key": "n", "value": 1}})).await?;
    for bad in ["NaN", "inf", "-Infinity", "1e5", "0x10", " 1"] {
        assert_eq!(
            c.request(json!({"put": {"key": "n", "value": bad}}))
                .await?,
            json!({"error": "invalid_value"}),
            "{bad}"
        );
    }
    assert_eq!(
        c.request(json!({"put": {"key": "n", "value": "42"}}))
            .await?,
        json!("ack")
    );
    assert_eq!(c.request(json!({"get": {"key": "n"}})).await?, json!(42));
    Ok(())
}

#[tokio::test]
async fn string_allowed_set_refuses_other_values_and_keeps_old_history_readable() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"put": {"key": "alarm", "value": "off", "time": 10}}))
        .await?;
    assert_eq!(
        c.request(json!({"define": {"alarm": {"type": "string", "allowed": ["armed", "disabled", "waiting"]}}})).await?,
        json!("ack"),
        "setting allowed over history holding other values is accepted"
    );
    assert_eq!(
        c.request(json!({"put": {"key": "alarm", "value": "armed", "time": 20}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "alarm", "value": "party"}}))
            .await?,
        json!({"error": "value_not_allowed"})
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "alarm"}})).await?,
        json!([[10, "off"], [20, "armed"]])
    );

    // v2 adds the plugin's explanation.
    let mut v2 = s.client_v2().await?;
    assert_eq!(
        v2.request(json!({"put": {"key": "alarm", "value": "party"}}))
            .await?,
        json!({"error": "value_not_allowed",
               "message": "text \"party\" is not allowed; allowed values: \"armed\", \"disabled\", \"waiting\""})
    );
    Ok(())
}

#[tokio::test]
async fn string_log_mode_keeps_repeats_and_state_mode_honours_same_value_resolution() -> Result<()>
{
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(
        json!({"define": {"log": {"type": "string", "mode": "log", "same_value_resolution": 100}}}),
    )
    .await?;
    c.request(json!({"define": {"state": {"type": "string", "same_value_resolution": 100}}}))
        .await?;
    for t in [1, 2, 3] {
        for key in ["log", "state"] {
            assert_eq!(
                c.request(json!({"put": {"key": key, "value": "same", "time": t}}))
                    .await?,
                json!("ack")
            );
        }
    }
    assert_eq!(
        c.request(json!({"fetch": {"key": "log"}})).await?,
        json!([[1, "same"], [2, "same"], [3, "same"]])
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "state"}})).await?,
        json!([[1, "same"]])
    );
    Ok(())
}

#[tokio::test]
async fn same_value_and_min_resolution_skip_storing_but_still_acknowledge() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"svr": {"type": "numeric", "same_value_resolution": 10}}}))
        .await?;
    c.request(json!({"define": {"mr": {"type": "numeric", "min_resolution": 10}}}))
        .await?;
    for (t, v) in [(100, 1), (105, 1), (106, 2), (111, 1), (120, 1)] {
        assert_eq!(
            c.request(json!({"put": {"key": "svr", "value": v, "time": t}}))
                .await?,
            json!("ack")
        );
        assert_eq!(
            c.request(json!({"put": {"key": "mr", "value": v, "time": t}}))
                .await?,
            json!("ack")
        );
    }
    assert_eq!(
        c.request(json!({"fetch": {"key": "svr"}})).await?,
        json!([[100, 1], [106, 2], [111, 1]])
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "mr"}})).await?,
        json!([[100, 1], [111, 1]])
    );
    Ok(())
}

#[tokio::test]
async fn a_skipped_put_still_refreshes_an_uptime_key() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(
        json!({"define": {"up": {"type": "uptime", "max_time": 1.5, "same_value_resolution": 60}}}),
    )
    .await?;
    for _ in 0..4 {
        c.request(json!({"put": {"key": "up", "value": true}}))
            .await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        c.request(json!({"fetch": {"key": "up"}}))
            .await?
            .as_array()
            .map(Vec::len),
        Some(1),
        "repeats not stored"
    );
    assert_eq!(
        c.request(json!({"get": {"key": "up"}})).await?,
        json!(true),
        "but they refreshed the key"
    );
    Ok(())
}

#[tokio::test]
async fn define_refuses_unknown_options_and_wrong_types() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for bad in [
        json!({"n": {"type": "numeric", "max_tme": 5}}),
        json!({"u": {"type": "uptime", "max_time": "soon"}}),
        json!({"u": {"type": "uptime", "max_time": -1}}),
        json!({"s": {"type": "string", "allowed": "armed"}}),
        json!({"s": {"type": "string", "mode": "diary"}}),
        json!({"b": {"type": "boolean", "same_value_resolution": "x"}}),
    ] {
        assert_eq!(
            c.request(json!({"define": bad})).await?,
            json!({"error": "invalid_option"}),
            "{bad}"
        );
    }
    assert_eq!(
        c.request(json!({"keys": {}})).await?,
        json!({}),
        "nothing was created"
    );
    Ok(())
}

#[tokio::test]
async fn numeric_keys_count_like_the_original_booleans_refuse_and_counters_accept_puts()
-> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client_v2().await?;
    // The original's sequence: a key first put 1 (so numeric), +2.4, -1, -1.2.
    c.request(json!({"put": {"key": "n", "value": 1}})).await?;
    c.request(json!({"increment": {"key": "n", "step": 2.4}}))
        .await?;
    c.request(json!({"decrement": {"key": "n"}})).await?;
    c.request(json!({"decrement": {"key": "n", "step": 1.2}}))
        .await?;
    assert_eq!(
        c.request(json!({"get": {"key": "n"}})).await?,
        json!({"result": 1.2})
    );
    c.request(json!({"put": {"key": "b", "value": true}}))
        .await?;
    assert_eq!(
        c.request(json!({"increment": {"key": "b"}})).await?,
        json!({"error": "unsupported_operation",
               "message": "boolean keys do not support increment or decrement"})
    );
    c.request(json!({"define": {"c": {"type": "counter"}}}))
        .await?;
    c.request(json!({"put": {"key": "c", "value": 10}})).await?;
    c.request(json!({"increment": {"key": "c", "step": 5}}))
        .await?;
    assert_eq!(
        c.request(json!({"get": {"key": "c"}})).await?,
        json!({"result": 15})
    );
    Ok(())
}

#[tokio::test]
async fn delete_removes_a_key_and_its_history_and_subscribers_see_it_again_when_re_created()
-> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client_v2().await?;
    let mut sub = s.client().await?;
    sub.request(json!({"sub": {"key": "k"}})).await?;
    c.request(json!({"put": {"key": "k", "value": 1, "time": 5}}))
        .await?;
    sub.push().await?;
    assert_eq!(
        c.request(json!({"delete": {"key": "k"}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        c.request(json!({"get": {"key": "k"}})).await?,
        json!({"result": null})
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "k"}})).await?,
        json!({"result": []})
    );
    assert_eq!(c.request(json!({"keys": {}})).await?, json!({"result": {}}));
    // Re-created with another type: the subscriber is still subscribed.
    c.request(json!({"put": {"key": "k", "value": "back"}}))
        .await?;
    let push = sub.push().await?;
    assert_eq!(push["pub"]["value"], json!("back"));
    assert_eq!(push["pub"]["previous"], json!(null));
    // v1 has the same request.
    assert_eq!(
        sub.request(json!({"delete": {"key": "k"}})).await?,
        json!("ack")
    );
    assert_eq!(
        sub.request(json!({"get": {"key": "k"}})).await?,
        json!(null)
    );
    Ok(())
}

#[tokio::test]
async fn a_refresh_that_was_not_stored_still_counts_after_a_restart() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(
        json!({"define": {"up": {"type": "uptime", "max_time": 3, "same_value_resolution": 60}}}),
    )
    .await?;
    let t0 = now();
    c.request(json!({"put": {"key": "up", "value": true, "time": t0 - 2.5}}))
        .await?;
    c.request(json!({"put": {"key": "up", "value": true, "time": t0}}))
        .await?; // skipped, but a refresh
    c.close().await?;
    let data = s.stop().await?;
    let s = TestServer::start_with(|cfg| cfg.data_dir = data.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    c.request(json!({"sub": {"key": "up"}})).await?;
    // Counted from the stored point the key would expire at t0 + 0.5; from the refresh, t0 + 3.
    tokio::time::sleep(Duration::from_secs_f64((t0 + 1.0 - now()).max(0.0))).await;
    assert_eq!(c.request(json!({"get": {"key": "up"}})).await?, json!(true));
    let off = c.push().await?;
    assert!(
        (num(&off["pub"]["time"]) - (t0 + 3.0)).abs() < 1e-6,
        "{off}"
    );
    drop(data);
    Ok(())
}

#[tokio::test]
async fn an_expiry_centuries_away_does_not_stall_the_others() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"far": {"type": "uptime", "max_time": 1e300}}}))
        .await?;
    c.request(json!({"define": {"near": {"type": "uptime", "max_time": 0.3}}}))
        .await?;
    assert_eq!(
        c.request(json!({"put": {"key": "far", "value": true}}))
            .await?,
        json!("ack")
    );
    c.request(json!({"put": {"key": "near", "value": true}}))
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        c.request(json!({"get": {"key": "near"}})).await?,
        json!(false)
    );
    assert_eq!(
        c.request(json!({"get": {"key": "far"}})).await?,
        json!(true)
    );
    Ok(())
}
