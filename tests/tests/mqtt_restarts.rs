//! Nothing lost across restarts: 10 000 numbered QoS 1 messages that carry their own time,
//! with Komoku killed (SIGKILL) or the broker restarted while they flow, each end up in
//! history exactly once.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use komoku_tests::{Client, Mosquitto, ServerProcess, TestServer, mqtt_connected};
use serde_json::{Value as Json, json};

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");

/// Messages sent; they alternate between two keys.
const MESSAGES: u64 = 10_000;

/// How long the whole stream may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(120);

/// The time message `n` carries (in the past, well inside the accepted window).
fn time_of(t0: u64, n: u64) -> u64 {
    t0 + n
}

fn payload(t0: u64, n: u64) -> (String, String) {
    let key = if n.is_multiple_of(2) { "even" } else { "odd" };
    (
        format!("seq/{key}"),
        json!({"n": n, "time": time_of(t0, n)}).to_string(),
    )
}

fn config_file(
    dir: &Path,
    broker: &Mosquitto,
    client_id: &str,
    protocol: u8,
) -> Result<std::path::PathBuf> {
    let path = dir.join("komoku.toml");
    std::fs::write(
        &path,
        format!(
            "[[mqtt]]\nurl = \"{}\"\nclient_id = \"{client_id}\"\nprotocol = {protocol}\n\n\
             [[mqtt.ingest]]\n\
             topic = \"seq/+\"\nkey = \"seq.{{1}}\"\nfields = [\"n\"]\ntime_field = \"time\"\n",
            broker.url()
        ),
    )?;
    Ok(path)
}

/// Points stored so far, both keys.
async fn stored(c: &mut Client) -> Result<usize> {
    let mut n = 0;
    for key in ["seq.even", "seq.odd"] {
        if let Json::Array(points) = c.request(json!({"fetch": {"key": key}})).await? {
            n += points.len();
        }
    }
    Ok(n)
}

/// Waits for every message, then checks each is in history exactly once, with its time.
async fn every_message_once(c: &mut Client, t0: u64) -> Result<()> {
    let started = Instant::now();
    while stored(c).await? < MESSAGES as usize {
        if started.elapsed() > ARRIVAL {
            bail!("only {} of {MESSAGES} messages arrived", stored(c).await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything still coming would be a duplicate: give it a moment to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (key, first) in [("seq.even", 0), ("seq.odd", 1)] {
        let points = c.request(json!({"fetch": {"key": key}})).await?;
        let expected: Vec<Json> = (first..MESSAGES)
            .step_by(2)
            .map(|n| json!([time_of(t0, n), n]))
            .collect();
        let Json::Array(points) = points else {
            bail!("fetch {key} answered {points}")
        };
        assert_eq!(points.len(), expected.len(), "{key}: points stored");
        assert!(
            points == expected,
            "{key}: a message is missing, repeated or changed"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn komoku_killed_while_messages_flow_loses_and_repeats_nothing() -> Result<()> {
    killed_while_messages_flow(4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn komoku_killed_while_messages_flow_loses_and_repeats_nothing_in_mqtt_5() -> Result<()> {
    killed_while_messages_flow(5).await
}

/// The SIGKILL test, in MQTT 3.1.1 (`protocol` 4) or 5 (whose session must not end when
/// the connection does).
async fn killed_while_messages_flow(protocol: u8) -> Result<()> {
    let broker = Mosquitto::start().await?;
    let dir = tempfile::tempdir()?;
    let config = config_file(dir.path(), &broker, "komoku-sigkill", protocol)?;
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap_or_default()];
    let server = ServerProcess::start_with_args(BIN, &data, &args)?;
    let mut c = Client::connect(&server.url()).await?;
    mqtt_connected(&mut c).await?;

    let t0 = komoku_tests::now() as u64 - 2 * MESSAGES;
    let publisher = broker.client("publisher-sigkill").await?;
    let sending = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let (topic, body) = payload(t0, n);
            publisher.publish(&topic, body).await?;
        }
        publisher.wait_acked(MESSAGES, ARRIVAL).await?;
        anyhow::Ok(publisher)
    });
    // Killed while the stream is being taken in.
    let started = Instant::now();
    while stored(&mut c).await? < 1_000 {
        if started.elapsed() > ARRIVAL {
            bail!("the first messages did not arrive");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(c);
    server.kill9()?;
    let _publisher = sending.await??;

    let server = ServerProcess::start_with_args(BIN, &data, &args)?;
    let mut c = Client::connect(&server.url()).await?;
    every_message_once(&mut c, t0).await?;
    let stats = c.request(json!({"stats": {}})).await?;
    eprintln!("after the restart: {}", stats["mqtt"][0]["ingest"][0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_while_messages_flow_loses_and_repeats_nothing() -> Result<()> {
    let mut broker = Mosquitto::start().await?;
    let section: komoku::mqtt::MqttConfig = serde_json::from_value(json!({
        "url": broker.url(),
        "client_id": "komoku-broker-restart",
        "ingest": [{"topic": "seq/+", "key": "seq.{1}", "fields": ["n"], "time_field": "time"}],
    }))?;
    let server = TestServer::start_with(|c| c.mqtt = vec![section]).await?;
    let mut c = server.client().await?;
    mqtt_connected(&mut c).await?;

    let t0 = komoku_tests::now() as u64 - 2 * MESSAGES;
    let half = MESSAGES / 2;
    {
        let publisher = broker.client("publisher-1").await?;
        for n in 0..half {
            let (topic, body) = payload(t0, n);
            publisher.publish(&topic, body).await?;
        }
        publisher.wait_acked(half, ARRIVAL).await?;
    }
    // Restarted while the bridge is still taking the first half in.
    let before = stored(&mut c).await?;
    broker.restart().await?;
    eprintln!("broker restarted with {before} of {half} messages stored");
    let publisher = broker.client("publisher-2").await?;
    for n in half..MESSAGES {
        let (topic, body) = payload(t0, n);
        publisher.publish(&topic, body).await?;
    }
    publisher.wait_acked(MESSAGES - half, ARRIVAL).await?;
    every_message_once(&mut c, t0).await?;
    let stats = c.request(json!({"stats": {}})).await?;
    assert!(stats["mqtt"][0]["connects"].as_u64() >= Some(2), "{stats}");
    eprintln!("after the broker restart: {}", stats["mqtt"][0]);
    server.stop().await?;
    Ok(())
}
