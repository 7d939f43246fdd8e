//! Every v1 row of protocol.md over a real websocket, against a real server on a temp data
//! dir, with the exact reply shapes the Ruby client reads.

use std::time::Duration;

use anyhow::Result;
use komoku_tests::TestServer;
use serde_json::json;

#[tokio::test]
async fn put_then_get_returns_the_bare_value_and_missing_keys_are_null() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"get": {"key": "nope"}})).await?,
        json!(null)
    );
    assert_eq!(
        c.request(json!({"put": {"key": "foo", "value": 123}}))
            .await?,
        json!("ack")
    );
    assert_eq!(c.request(json!({"get": {"key": "foo"}})).await?, json!(123));
    assert_eq!(
        c.request(json!({"put": {"key": "pig", "value": "oink"}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"get": {"key": "pig"}})).await?,
        json!("oink")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "door", "value": false}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"get": {"key": "door"}})).await?,
        json!(false)
    );
    assert_eq!(
        c.request(json!({"put": {"key": "t", "value": 21.5}}))
            .await?,
        json!("ack")
    );
    assert_eq!(c.request(json!({"get": {"key": "t"}})).await?, json!(21.5));
    Ok(())
}

#[tokio::test]
async fn put_creates_keys_with_the_guessed_type() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for (key, value) in [
        ("n", json!(1.5)),
        ("b1", json!(true)),
        ("b2", json!("false")),
        ("s", json!("armed")),
    ] {
        assert_eq!(
            c.request(json!({"put": {"key": key, "value": value}}))
                .await?,
            json!("ack")
        );
    }
    let keys = c.request(json!({"keys": {}})).await?;
    assert_eq!(
        keys,
        json!({
            "n": {"type": "numeric"},
            "b1": {"type": "boolean"},
            "b2": {"type": "boolean"},
            "s": {"type": "string"},
        })
    );
    assert_eq!(
        c.request(json!({"get": {"key": "b2"}})).await?,
        json!(false),
        "\"false\" is stored as a boolean"
    );
    Ok(())
}

#[tokio::test]
async fn existing_keys_cast_or_refuse_with_invalid_value() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"put": {"key": "n", "value": 1}})).await?;
    assert_eq!(
        c.request(json!({"put": {"key": "n", "value": "-3.5"}}))
            .await?,
        json!("ack")
    );
    assert_eq!(c.request(json!({"get": {"key": "n"}})).await?, json!(-3.5));
    for bad in [
        json!("3.5.1"),
        json!("abc"),
        json!(true),
        json!(".5"),
        json!(null),
    ] {
        assert_eq!(
            c.request(json!({"put": {"key": "n", "value": bad}}))
                .await?,
            json!({"error": "invalid_value"}),
            "{bad} to a numeric key"
        );
    }
    assert_eq!(
        c.request(json!({"get": {"key": "n"}})).await?,
        json!(-3.5),
        "refused puts change nothing"
    );

    c.request(json!({"put": {"key": "b", "value": true}}))
        .await?;
    assert_eq!(
        c.request(json!({"put": {"key": "b", "value": "false"}}))
            .await?,
        json!("ack")
    );
    assert_eq!(c.request(json!({"get": {"key": "b"}})).await?, json!(false));
    assert_eq!(
        c.request(json!({"put": {"key": "b", "value": 1}})).await?,
        json!({"error": "invalid_value"})
    );
    assert_eq!(
        c.request(json!({"put": {"key": "b", "value": "yes"}}))
            .await?,
        json!({"error": "invalid_value"})
    );

    c.request(json!({"put": {"key": "s", "value": "text"}}))
        .await?;
    assert_eq!(
        c.request(json!({"put": {"key": "s", "value": 3}})).await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"get": {"key": "s"}})).await?,
        json!("3"),
        "3 is stored as \"3\", not \"3.0\""
    );
    Ok(())
}

#[tokio::test]
async fn put_with_time_is_stored_at_that_time_and_last_reports_it() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"last": {"key": "foo"}})).await?,
        json!(null)
    );
    assert_eq!(
        c.request(json!({"put": {"key": "foo", "value": 8, "time": 1473007432}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"last": {"key": "foo"}})).await?,
        json!({"value": 8, "time": 1473007432})
    );
    c.request(json!({"put": {"key": "foo", "value": 9, "time": 1473007432.25}}))
        .await?;
    assert_eq!(
        c.request(json!({"last": {"key": "foo"}})).await?,
        json!({"value": 9, "time": 1473007432.25})
    );
    // A put without time is stored now.
    c.request(json!({"put": {"key": "foo", "value": 10}}))
        .await?;
    let last = c.request(json!({"last": {"key": "foo"}})).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let t = last["time"].as_f64().unwrap_or_default();
    assert!((now - t).abs() < 5.0, "time {t} is not now ({now})");
    Ok(())
}

#[tokio::test]
async fn keys_lists_opts_only_when_set_and_values_when_asked() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"put": {"key": "foo", "value": 1}}))
        .await?;
    assert_eq!(
        c.request(json!({"define": {"moo": {"type": "uptime", "max_time": 77}}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"keys": {}})).await?,
        json!({"foo": {"type": "numeric"}, "moo": {"type": "uptime", "opts": {"max_time": 77}}})
    );
    assert_eq!(
        c.request(json!({"keys": {"include": ["value"]}})).await?,
        json!({"foo": {"type": "numeric", "value": 1}, "moo": {"type": "uptime", "opts": {"max_time": 77}, "value": null}})
    );
    Ok(())
}

#[tokio::test]
async fn define_takes_flat_or_nested_options_merges_them_and_refuses_another_type() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"define": {"up": {"type": "uptime", "opts": {"max_time": 10}}}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"define": {"up": {"type": "uptime", "same_value_resolution": 5}}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"keys": {}})).await?,
        json!({"up": {"type": "uptime", "opts": {"max_time": 10, "same_value_resolution": 5}}})
    );
    assert_eq!(
        c.request(json!({"define": {"up": {"type": "uptime", "max_time": 20}}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"keys": {}})).await?["up"]["opts"]["max_time"],
        json!(20)
    );
    assert_eq!(
        c.request(json!({"define": {"up": {"type": "numeric"}}}))
            .await?,
        json!({"error": "type_mismatch"})
    );
    assert_eq!(
        c.request(json!({"define": {"x": {"type": "no_such_type"}}}))
            .await?,
        json!({"error": "unknown_type"})
    );
    Ok(())
}

#[tokio::test]
async fn subscribers_get_pushes_with_both_previous_fields_after_the_put_reply() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"sub": {"key": "foo"}})).await?,
        json!("ack"),
        "a key that does not exist yet"
    );
    c.send_text(&json!({"put": {"key": "foo", "value": 1}}).to_string())
        .await?;
    assert_eq!(
        c.next_message().await?,
        json!("ack"),
        "the reply comes before the push it causes"
    );
    let first = c.next_message().await?;
    assert_eq!(first["pub"]["key"], json!("foo"));
    assert_eq!(first["pub"]["value"], json!(1));
    assert_eq!(first["pub"]["previous"], json!(null));
    assert_eq!(first["pub"]["previous_value"], json!(null));
    assert!(first["pub"]["time"].as_f64().is_some());

    // Another connection's put reaches this subscriber.
    // An hour ahead (the window takes up to a day), with a fraction.
    let t = (komoku_tests::now() + 3600.0).floor() + 0.1;
    let mut other = s.client().await?;
    other
        .request(json!({"put": {"key": "foo", "value": 2, "time": t}}))
        .await?;
    let second = c.push().await?;
    assert_eq!(
        second,
        json!({"pub": {"key": "foo", "value": 2, "time": t, "previous": 1, "previous_value": 1}})
    );

    assert_eq!(
        c.request(json!({"unsub": {"key": "foo"}})).await?,
        json!("ack")
    );
    other
        .request(json!({"put": {"key": "foo", "value": 3, "time": t + 1.0}}))
        .await?;
    assert_eq!(
        c.maybe_push(Duration::from_millis(300)).await?,
        None,
        "no push after unsub"
    );
    Ok(())
}

#[tokio::test]
async fn fetch_returns_points_in_time_order_within_since_and_until() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for (t, v) in [(1000, 1), (1010, 2), (1020, 3), (1030, 4)] {
        c.request(json!({"put": {"key": "n", "value": v, "time": t}}))
            .await?;
    }
    // Out of order: a put with an old time lands in its place in history.
    c.request(json!({"put": {"key": "n", "value": 1.5, "time": 1005}}))
        .await?;
    assert_eq!(
        c.request(json!({"fetch": {"key": "n"}})).await?,
        json!([[1000, 1], [1005, 1.5], [1010, 2], [1020, 3], [1030, 4]])
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "n", "opts": {"since": 1006, "until": 1020}}}))
            .await?,
        json!([[1010, 2], [1020, 3]])
    );
    assert_eq!(
        c.request(json!({"get": {"key": "n"}})).await?,
        json!(4),
        "a backfill does not change the current value"
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "nope"}})).await?,
        json!([])
    );
    Ok(())
}

#[tokio::test]
async fn fetch_single_last_and_previous() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"fetch": {"key": "n", "opts": {"single": "last"}}}))
            .await?,
        json!(null)
    );
    for (t, v) in [(100, 1), (110, 2), (120, 2), (130, 2)] {
        c.request(json!({"put": {"key": "n", "value": v, "time": t}}))
            .await?;
    }
    assert_eq!(
        c.request(json!({"fetch": {"key": "n", "opts": {"single": "last"}}}))
            .await?,
        json!([130, 2])
    );
    assert_eq!(
        c.request(json!({"fetch": {"key": "n", "opts": {"single": "previous"}}}))
            .await?,
        json!([100, 1])
    );
    c.request(json!({"put": {"key": "m", "value": 5, "time": 100}}))
        .await?;
    assert_eq!(
        c.request(json!({"fetch": {"key": "m", "opts": {"single": "previous"}}}))
            .await?,
        json!(null)
    );
    Ok(())
}

#[tokio::test]
async fn fetch_with_step_averages_numbers_over_time_and_gives_booleans_true_fraction() -> Result<()>
{
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // 0..60: 10 for 30 s then 20 for 30 s → mean 15; 60..120: 20 throughout.
    c.request(json!({"put": {"key": "n", "value": 10, "time": 0}}))
        .await?;
    c.request(json!({"put": {"key": "n", "value": 20, "time": 30}}))
        .await?;
    c.request(json!({"put": {"key": "n", "value": 20, "time": 119}}))
        .await?;
    assert_eq!(
        c.request(
            json!({"fetch": {"key": "n", "opts": {"since": 0, "until": 119.5, "step": "1M"}}})
        )
        .await?,
        json!([[0, 15], [60, 20]])
    );
    c.request(json!({"put": {"key": "b", "value": true, "time": 0}}))
        .await?;
    c.request(json!({"put": {"key": "b", "value": false, "time": 15}}))
        .await?;
    c.request(json!({"put": {"key": "b", "value": true, "time": 105}}))
        .await?;
    assert_eq!(
        c.request(json!({"fetch": {"key": "b", "opts": {"since": 0, "until": 120, "step": "1M"}}}))
            .await?,
        json!([[0, 0.25], [60, 0.25]])
    );
    Ok(())
}

#[tokio::test]
async fn fetch_as_timespans_lists_true_periods_with_the_open_one_null() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for (t, v) in [
        (1000, true),
        (1010, false),
        (1020, true),
        (1025, false),
        (1030, true),
    ] {
        c.request(json!({"put": {"key": "light", "value": v, "time": t}}))
            .await?;
    }
    assert_eq!(
        c.request(json!({"fetch": {"key": "light", "opts": {"since": 1005, "as": "timespans"}}}))
            .await?,
        json!([[1005, 5], [1020, 5], [1030, null]])
    );
    Ok(())
}

#[tokio::test]
async fn stats_count_each_operation_once_and_subscriptions_end_with_the_connection() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"put": {"key": "a", "value": 1}})).await?;
    c.request(json!({"put": {"key": "b", "value": true}}))
        .await?;
    let before = c.request(json!({"stats": {}})).await?;
    assert_eq!(before["keys_count"], json!(2));
    assert!(before["uptime"].as_u64().is_some());
    let puts = before["ops_count"]["put"].as_u64().unwrap_or_default();
    let gets = before["ops_count"]["get"].as_u64().unwrap_or_default();
    c.request(json!({"get": {"key": "a"}})).await?;
    c.request(json!({"put": {"key": "a", "value": 2}})).await?;
    let after = c.request(json!({"stats": {}})).await?;
    assert_eq!(after["ops_count"]["put"].as_u64(), Some(puts + 1));
    assert_eq!(after["ops_count"]["get"].as_u64(), Some(gets + 1));

    let mut sub = s.client().await?;
    sub.request(json!({"sub": {"key": "a"}})).await?;
    assert_eq!(
        c.request(json!({"stats": {}})).await?["change_notifications_count"],
        json!(1)
    );
    sub.close().await?;
    let mut dropped = false;
    for _ in 0..100 {
        if c.request(json!({"stats": {}})).await?["change_notifications_count"] == json!(0) {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dropped, "the subscription outlived its connection");
    Ok(())
}

#[tokio::test]
async fn an_array_of_requests_gets_an_array_of_replies_in_order() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!([
            {"put": {"key": "a", "value": 1}},
            {"put": {"key": "a", "value": "x"}},
            {"get": {"key": "a"}},
            {"bogus": {}}
        ]))
        .await?,
        json!(["ack", {"error": "invalid_value"}, 1, "err"])
    );
    Ok(())
}

#[tokio::test]
async fn unknown_requests_and_bad_frames_get_error_replies_and_the_connection_lives_on()
-> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"frobnicate": {"key": "a"}})).await?,
        json!("err")
    );
    assert_eq!(c.raw("{not json").await?, json!({"error": "invalid_json"}));
    assert_eq!(c.raw("").await?, json!({"error": "invalid_json"}));
    assert_eq!(
        c.raw("1e999999").await?,
        json!({"error": "invalid_json"}),
        "a number too large for a double"
    );
    c.send_binary(vec![0xff, 0xfe, 0x00, 0x7b]).await?;
    assert_eq!(
        c.reply().await?,
        json!({"error": "invalid_json"}),
        "non-UTF-8 bytes"
    );
    assert_eq!(
        c.request(json!({"get": {"key": 42}})).await?,
        json!({"error": "invalid_query"})
    );
    assert_eq!(
        c.request(json!({"put": {"key": "a", "value": [1, 2]}}))
            .await?,
        json!({"error": "invalid_value"})
    );
    assert_eq!(
        c.request(json!({"put": {"key": "", "value": 1}})).await?,
        json!({"error": "invalid_key"})
    );
    assert_eq!(
        c.request(json!(17)).await?,
        json!({"error": "invalid_query"})
    );
    assert_eq!(
        c.request(json!({"put": {"key": "a", "value": 1}})).await?,
        json!("ack"),
        "still serving"
    );
    Ok(())
}
