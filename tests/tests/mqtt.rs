//! The MQTT bridge against a real Mosquitto: topics into typed keys with history, keys out
//! to retained topics, bad payloads counted while everything else goes on.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use komoku_tests::{Client, Mosquitto, TestServer, WAIT, mqtt_connected};
use serde_json::{Value as Json, json};

/// A `[[mqtt]]` section from JSON (as the TOML would give it).
fn section(broker: &Mosquitto, client_id: &str, rest: Json) -> Result<komoku::mqtt::MqttConfig> {
    let mut value = json!({"url": broker.url(), "client_id": client_id});
    if let (Json::Object(v), Json::Object(r)) = (&mut value, rest) {
        v.extend(r);
    }
    Ok(serde_json::from_value(value)?)
}

/// Waits until `fetch` of `key` returns `n` points, and returns them.
async fn history(c: &mut Client, key: &str, n: usize) -> Result<Vec<Json>> {
    let started = Instant::now();
    loop {
        let reply = c.request(json!({"fetch": {"key": key}})).await?;
        if let Json::Array(points) = &reply
            && points.len() >= n
        {
            return Ok(points.clone());
        }
        if started.elapsed() > WAIT {
            bail!("waited {WAIT:?} for {n} points of {key}; fetch answered {reply}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The values of a history, oldest first.
fn values(points: &[Json]) -> Vec<Json> {
    points.iter().map(|p| p[1].clone()).collect()
}

/// The type of each key.
async fn types(c: &mut Client) -> Result<Json> {
    let keys = c.request(json!({"keys": {}})).await?;
    let Json::Object(keys) = keys else {
        bail!("keys answered {keys}")
    };
    Ok(Json::Object(
        keys.into_iter()
            .map(|(k, v)| (k, v["type"].clone()))
            .collect(),
    ))
}

#[tokio::test]
async fn bare_boolean_and_json_payloads_become_typed_keys_with_history() -> Result<()> {
    typed_keys(4).await
}

#[tokio::test]
async fn bare_boolean_and_json_payloads_become_typed_keys_with_history_in_mqtt_5() -> Result<()> {
    typed_keys(5).await
}

/// The typed keys test, in MQTT 3.1.1 (`protocol` 4) or 5.
async fn typed_keys(protocol: u8) -> Result<()> {
    let broker = Mosquitto::start().await?;
    let bridge = section(
        &broker,
        "komoku-typed",
        json!({"protocol": protocol, "ingest": [
            {"topic": "power/+", "key": "power.{1}"},
            {"topic": "cmnd/+/POWER", "key": "switch.{1}"},
            {"topic": "zigbee2mqtt/+", "key": "zigbee.{1}.{field}",
             "fields": ["temperature", "humidity", "battery"]},
            {"topic": "tele/+/SENSOR", "key": "tasmota.{1}.energy", "fields": ["ENERGY.Power"],
             "time_field": "Time", "type": "numeric"},
            {"topic": "note/#", "key": "note.{1}"},
        ]}),
    )?;
    let server = TestServer::start_with(|c| c.mqtt = vec![bridge]).await?;
    let mut c = server.client().await?;
    mqtt_connected(&mut c).await?;
    let sensor = broker.client("sensor").await?;

    for (topic, payload) in [
        ("power/plug", "12.5"),
        ("power/plug", "13"),
        ("cmnd/lamp/POWER", "ON"),
        ("cmnd/lamp/POWER", "OFF"),
        (
            "zigbee2mqtt/kitchen",
            r#"{"temperature": 21.3, "humidity": 40, "battery": 97, "linkquality": 120}"#,
        ),
        (
            "zigbee2mqtt/kitchen",
            r#"{"temperature": 21.8, "humidity": 41, "battery": 97}"#,
        ),
        (
            "tele/dryer/SENSOR",
            r#"{"Time": "2026-01-02T03:04:05Z", "ENERGY": {"Power": 240}}"#,
        ),
        (
            "tele/dryer/SENSOR",
            r#"{"Time": "2026-01-02T03:05:05Z", "ENERGY": {"Power": 0}}"#,
        ),
        ("note/hall/door", "left open"),
    ] {
        sensor.publish(topic, payload).await?;
    }
    sensor.wait_acked(9, WAIT).await?;

    assert_eq!(
        values(&history(&mut c, "power.plug", 2).await?),
        [json!(12.5), json!(13)]
    );
    assert_eq!(
        values(&history(&mut c, "switch.lamp", 2).await?),
        [json!(true), json!(false)]
    );
    assert_eq!(
        values(&history(&mut c, "zigbee.kitchen.temperature", 2).await?),
        [json!(21.3), json!(21.8)]
    );
    assert_eq!(
        values(&history(&mut c, "zigbee.kitchen.humidity", 2).await?),
        [json!(40), json!(41)]
    );
    assert!(
        !history(&mut c, "zigbee.kitchen.battery", 1)
            .await?
            .is_empty()
    );
    // The times came from the payload.
    assert_eq!(
        history(&mut c, "tasmota.dryer.energy", 2).await?,
        [json!([1_767_323_045, 240]), json!([1_767_323_105, 0])]
    );
    assert_eq!(
        values(&history(&mut c, "note.hall.door", 1).await?),
        [json!("left open")]
    );

    let types = types(&mut c).await?;
    assert_eq!(types["power.plug"], "numeric");
    assert_eq!(types["switch.lamp"], "boolean");
    assert_eq!(types["zigbee.kitchen.temperature"], "numeric");
    assert_eq!(types["tasmota.dryer.energy"], "numeric");
    assert_eq!(types["note.hall.door"], "string");
    // A field no mapping names makes no key: three fields, three keys.
    let zigbee: Vec<&String> = types
        .as_object()
        .map(|o| o.keys().filter(|k| k.starts_with("zigbee.")).collect())
        .unwrap_or_default();
    assert_eq!(zigbee.len(), 3, "{types}");

    let stats = c.request(json!({"stats": {}})).await?;
    let zigbee = &stats["mqtt"][0]["ingest"][2];
    assert_eq!(zigbee["messages"], 2, "{stats}");
    assert_eq!(zigbee["points"], 6, "{stats}");
    assert_eq!(stats["mqtt"][0]["connected"], true);
    server.stop().await?;
    Ok(())
}

/// A message delivered twice whose time is finer than a microsecond (the store keeps times to
/// the microsecond) is recognised as the point already stored, not taken as a new one.
#[tokio::test]
async fn a_redelivered_message_with_a_sub_microsecond_time_is_a_duplicate() -> Result<()> {
    let broker = Mosquitto::start().await?;
    let bridge = section(
        &broker,
        "komoku-dup",
        json!({"ingest": [{"topic": "dup/+", "key": "dup.{1}", "fields": ["v"],
                           "time_field": "t", "type": "numeric"}]}),
    )?;
    let server = TestServer::start_with(|c| c.mqtt = vec![bridge]).await?;
    let mut c = server.client().await?;
    mqtt_connected(&mut c).await?;
    let sensor = broker.client("dup-sensor").await?;
    let message = r#"{"t": 1767225600.1234567, "v": 5}"#;
    sensor.publish("dup/a", message).await?;
    sensor.publish("dup/a", message).await?;
    sensor.wait_acked(2, WAIT).await?;

    assert_eq!(
        history(&mut c, "dup.a", 1).await?,
        [json!([1_767_225_600.123_457, 5])]
    );
    let stats = c.request(json!({"stats": {}})).await?;
    let ingest = &stats["mqtt"][0]["ingest"][0];
    assert_eq!(ingest["messages"], 2, "{stats}");
    assert_eq!(ingest["points"], 1, "{stats}");
    assert_eq!(ingest["duplicates"], 1, "{stats}");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn key_changes_are_published_retained_for_a_fresh_subscriber() -> Result<()> {
    let broker = Mosquitto::start().await?;
    let bridge = section(
        &broker,
        "komoku-out",
        json!({"publish": [
            {"keys": "house.*", "topic": "komoku/{path}"},
            {"keys": "house.temp", "topic": "komoku-json/{key}", "format": "json",
             "ha_discovery": true},
        ]}),
    )?;
    let server = TestServer::start_with(|c| c.mqtt = vec![bridge]).await?;
    let mut c = server.client().await?;
    assert_eq!(
        c.request(json!({"put": {"key": "house.temp", "value": 20.5, "time": 1000}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "house.temp", "value": 21.5, "time": 1001}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "house.door", "value": "open"}}))
            .await?,
        json!("ack")
    );
    assert_eq!(
        c.request(json!({"put": {"key": "garden.temp", "value": 3}}))
            .await?,
        json!("ack")
    );

    // A subscriber that comes later gets the latest values, retained, and nothing else.
    let expected = [
        ("komoku/house/temp", "21.5".to_string()),
        ("komoku/house/door", "open".to_string()),
        (
            "komoku-json/house.temp",
            json!({"value": 21.5, "time": 1001, "previous": 20.5}).to_string(),
        ),
    ];
    let started = Instant::now();
    loop {
        let seen = mosquitto_sub(&broker, &["komoku/#", "komoku-json/#"], 3)?;
        if expected
            .iter()
            .all(|(t, p)| seen.contains(&(t.to_string(), p.clone())))
        {
            assert!(seen.iter().all(|(t, _)| !t.contains("garden")), "{seen:?}");
            break;
        }
        if started.elapsed() > WAIT {
            bail!("retained messages seen: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Home Assistant discovery: one retained config for the key.
    let config = mosquitto_sub(&broker, &["homeassistant/#"], 1)?;
    let (topic, body) = config.first().cloned().unwrap_or_default();
    assert_eq!(topic, "homeassistant/sensor/komoku/house_temp/config");
    let body: Json = serde_json::from_str(&body)?;
    assert_eq!(body["state_topic"], "komoku-json/house.temp");
    assert_eq!(body["unique_id"], "komoku_house_temp");
    server.stop().await?;
    Ok(())
}

/// `mosquitto_sub` as a fresh client: the first `count` messages on `topics`, as
/// (topic, payload), waiting at most 5 s.
fn mosquitto_sub(
    broker: &Mosquitto,
    topics: &[&str],
    count: usize,
) -> Result<Vec<(String, String)>> {
    let mut command = std::process::Command::new("mosquitto_sub");
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port.to_string(),
        "-v",
        "-W",
        "5",
    ]);
    command.args(["-C", &count.to_string()]);
    for t in topics {
        command.args(["-t", t]);
    }
    let out = command.output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect())
}

#[tokio::test]
async fn bad_payloads_are_counted_and_the_bridge_goes_on() -> Result<()> {
    let broker = Mosquitto::start().await?;
    let bridge = section(
        &broker,
        "komoku-bad",
        json!({"ingest": [
            {"topic": "z/+", "key": "z.{1}.{field}", "fields": ["temperature", "humidity"],
             "time_field": "time"},
            {"topic": "n/+", "key": "n.{1}", "type": "numeric"},
            {"topic": "ok/+", "key": "ok.{1}"},
        ]}),
    )?;
    let server = TestServer::start_with(|c| c.mqtt = vec![bridge]).await?;
    let mut c = server.client().await?;
    mqtt_connected(&mut c).await?;
    let sensor = broker.client("bad-sensor").await?;
    let t = komoku_tests::now() as i64;
    for (topic, payload) in [
        ("z/a", "not json".to_string()), // not_json
        ("z/a", "[1, 2]".to_string()),   // not_json
        ("z/a", json!({"temperature": 20, "time": t}).to_string()), // missing_field (1 of 2)
        ("z/a", json!({"temperature": 21, "humidity": 5}).to_string()), // missing_field (time)
        (
            "z/a",
            json!({"temperature": 22, "humidity": 6, "time": "soon"}).to_string(),
        ), // bad_time
        ("n/a", "warm".to_string()),     // refused by numeric
        ("n/a", "7".to_string()),
        ("ok/a", "1".to_string()),
        ("ok/a", "2".to_string()),
    ] {
        sensor.publish(topic, payload).await?;
    }
    sensor
        .client
        .publish("ok/b", rumqttc::QoS::AtLeastOnce, false, vec![0xff, 0xfe])
        .await?; // not_text
    sensor.wait_acked(10, WAIT).await?;

    // The good messages of every mapping are in, the bad ones counted per kind.
    assert_eq!(
        values(&history(&mut c, "ok.a", 2).await?),
        [json!(1), json!(2)]
    );
    assert_eq!(values(&history(&mut c, "n.a", 1).await?), [json!(7)]);
    // A missing field leaves the other fields of the message in.
    assert_eq!(
        history(&mut c, "z.a.temperature", 1).await?,
        [json!([t, 20])]
    );
    let started = Instant::now();
    let stats = loop {
        let stats = c.request(json!({"stats": {}})).await?;
        if stats["mqtt"][0]["ingest"][2]["bad"]["not_text"] == 1 || started.elapsed() > WAIT {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ingest = &stats["mqtt"][0]["ingest"];
    assert_eq!(
        ingest[0]["bad"],
        json!({"not_json": 2, "missing_field": 2, "bad_time": 1, "not_text": 0, "refused": 0}),
        "{stats}"
    );
    assert_eq!(ingest[0]["points"], 1);
    assert_eq!(ingest[1]["bad"]["refused"], 1, "{stats}");
    assert_eq!(ingest[1]["points"], 1);
    assert_eq!(ingest[2]["bad"]["not_text"], 1, "{stats}");
    assert_eq!(ingest[2]["points"], 2);
    assert_eq!(stats["mqtt"][0]["connected"], true);

    // The same counts in /metrics, as a scraper reads them.
    let metrics = komoku_tests::http::HttpRequest::get("/metrics")
        .send(server.addr())
        .await?;
    let scrape = prometheus_parse::Scrape::parse(metrics.body.lines().map(|l| Ok(l.to_string())))?;
    let bad = |topic: &str, kind: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "komoku_mqtt_bad_payloads_total"
                    && s.labels.get("topic") == Some(topic)
                    && s.labels.get("kind") == Some(kind)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    let first = ingest[0]["topic"].as_str().unwrap_or_default();
    assert_eq!(bad(first, "not_json"), Some(2.0), "{}", metrics.body);
    assert_eq!(bad(first, "missing_field"), Some(2.0));
    let third = ingest[2]["topic"].as_str().unwrap_or_default();
    assert_eq!(bad(third, "not_text"), Some(1.0));

    // Still taking messages after all that.
    sensor.publish("ok/a", "3").await?;
    assert_eq!(
        values(&history(&mut c, "ok.a", 3).await?),
        [json!(1), json!(2), json!(3)]
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn with_auth_on_the_bridge_has_its_tokens_grants() -> Result<()> {
    let broker = Mosquitto::start().await?;
    let bridge = section(
        &broker,
        "komoku-auth",
        json!({
            "token": "bridge-secret",
            "ingest": [
                {"topic": "sensor/+", "key": "sensor.{1}"},
                {"topic": "other/+", "key": "other.{1}"},
            ],
            "publish": [{"keys": "*", "topic": "out/{key}"}],
        }),
    )?;
    let server = TestServer::start_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![
            komoku_tests::token(
                "bridge",
                "bridge-secret",
                [&["sensor.*"], &["sensor.*"], &[], &["sensor.*"]],
            ),
            komoku_tests::token("admin", "admin-secret", [&["*"], &["*"], &["*"], &["*"]]),
        ];
        c.mqtt = vec![bridge];
    })
    .await?;
    let mut c = Client::connect(&format!("{}?token=admin-secret", server.url())).await?;
    assert_eq!(
        c.request(json!({"put": {"key": "secret.pin", "value": 1234}}))
            .await?,
        json!("ack")
    );
    mqtt_connected(&mut c).await?;
    let sensor = broker.client("auth-sensor").await?;
    sensor.publish("other/x", "1").await?;
    sensor.publish("sensor/x", "2").await?;
    sensor.wait_acked(2, WAIT).await?;
    assert_eq!(values(&history(&mut c, "sensor.x", 1).await?), [json!(2)]);
    let stats = c.request(json!({"stats": {}})).await?;
    assert_eq!(
        stats["mqtt"][0]["ingest"][1]["bad"]["refused"], 1,
        "{stats}"
    );
    assert_eq!(
        c.request(json!({"get": {"key": "other.x"}})).await?,
        Json::Null
    );
    // It publishes only what its token may read (asked for two, one comes in 5 s).
    let seen = mosquitto_sub(&broker, &["out/#"], 2)?;
    assert_eq!(seen, [("out/sensor.x".to_string(), "2".to_string())]);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_bridge_without_a_working_token_stops_the_start() -> Result<()> {
    let broker = Mosquitto::start().await?;
    let bridge = section(
        &broker,
        "komoku-no-token",
        json!({"ingest": [{"topic": "a/+", "key": "a.{1}"}]}),
    )?;
    let started = TestServer::start_with(|c| {
        c.auth.enabled = true;
        c.mqtt = vec![bridge];
    })
    .await;
    let Err(e) = started else {
        bail!("a server with auth on and a bridge without a token started")
    };
    assert!(format!("{e:#}").contains("needs a token"), "{e:#}");
    Ok(())
}

#[tokio::test]
async fn mqtts_with_a_client_certificate_works() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let client_cert = rcgen::generate_simple_self_signed(vec!["komoku".to_string()])?;
    let file = |name: &str, text: String| -> Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let cert = file("server.pem", server_cert.cert.pem())?;
    let key = file("server.key", server_cert.signing_key.serialize_pem())?;
    let client = file("client.pem", client_cert.cert.pem())?;
    let client_key = file("client.key", client_cert.signing_key.serialize_pem())?;
    let tls_port = komoku_tests::free_port()?;
    // A TLS listener that wants a client certificate signed by (here: equal to) `client`.
    let broker = Mosquitto::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\n",
        cert.display(),
        key.display(),
        client.display()
    ))
    .await?;
    let bridge: komoku::mqtt::MqttConfig = serde_json::from_value(json!({
        "url": format!("mqtts://localhost:{tls_port}"),
        "client_id": "komoku-tls",
        "ca_file": cert,
        "client_cert": client,
        "client_key": client_key,
        "ingest": [{"topic": "tls/+", "key": "tls.{1}"}],
    }))?;
    let server = TestServer::start_with(|c| c.mqtt = vec![bridge]).await?;
    let mut c = server.client().await?;
    mqtt_connected(&mut c).await?; // over TLS
    // Published on the broker's plain listener, taken in over TLS.
    let sensor = broker.client("tls-sensor").await?;
    sensor.publish("tls/a", "5").await?;
    assert_eq!(values(&history(&mut c, "tls.a", 1).await?), [json!(5)]);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_reload_reports_mqtt_as_needing_a_restart_and_the_bridge_runs_on() -> Result<()> {
    let broker = Mosquitto::start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("komoku.toml");
    let text = |client_id: &str| {
        format!(
            "[[mqtt]]\nurl = \"{}\"\nclient_id = \"{client_id}\"\n[[mqtt.ingest]]\n\
             topic = \"r/+\"\nkey = \"r.{{1}}\"\n",
            broker.url()
        )
    };
    std::fs::write(&path, text("komoku-before"))?;
    let server = komoku_tests::ServerProcess::start_with_args(
        env!("CARGO_BIN_EXE_komoku-e2e"),
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap_or_default()],
    )?;
    let mut c = Client::connect(&format!("{}v2", server.url())).await?;
    std::fs::write(&path, text("komoku-after"))?;
    let report = c.request(json!({"reload": {}})).await?;
    assert_eq!(
        report["result"]["needs_restart"],
        json!(["mqtt"]),
        "{report}"
    );
    // The bridge in force is the one the server started with, and it still takes messages.
    let started = Instant::now();
    while c.request(json!({"stats": {}})).await?["result"]["mqtt"][0]["connected"] != true {
        if started.elapsed() > WAIT {
            bail!("the bridge did not connect");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sensor = broker.client("reload-sensor").await?;
    sensor.publish("r/a", "1").await?;
    let started = Instant::now();
    loop {
        let stats = c.request(json!({"stats": {}})).await?;
        let mqtt = &stats["result"]["mqtt"][0];
        if mqtt["ingest"][0]["points"] == 1 {
            assert_eq!(mqtt["client_id"], "komoku-before");
            break;
        }
        if started.elapsed() > WAIT {
            bail!("the bridge took nothing after the reload: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
