//! Messages per second from a publisher through Mosquitto into Komoku (every point durable
//! before the bridge acknowledges it), beside Mosquitto alone (publisher → subscriber, QoS
//! 1 both ways) on the same broker in the same run. Twice: live (the publisher sends while
//! the receiver takes), and a backlog (messages queued by the broker while the receiver was
//! away, then drained when it comes back: the receiver's own rate).
//!
//! `cargo bench -p komoku-tests --bench mqtt` (add `-- --quick` for a short run). Needs
//! Mosquitto (`scripts/install-test-deps.sh`). Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use komoku_tests::{Client, Mosquitto, TestServer};
use serde_json::json;

/// Keys (and topics) the messages are spread over.
const KEYS: u64 = 10;

/// Publishes `n` QoS 1 messages `<prefix>/<i % KEYS>` with a number each.
async fn publish(broker: &Mosquitto, id: &str, prefix: &str, n: u64) -> Result<()> {
    let publisher = broker.client(id).await?;
    for i in 0..n {
        publisher
            .publish(&format!("{prefix}/{}", i % KEYS), format!("{}", i % 1000))
            .await?;
    }
    publisher.wait_acked(n, Duration::from_secs(600)).await
}

/// Mosquitto alone: a QoS 1 subscriber receives `n` messages. Returns messages/s.
async fn broker_alone(broker: &Mosquitto, n: u64) -> Result<f64> {
    let mut subscriber = broker.client("bench-subscriber").await?;
    subscriber
        .client
        .subscribe("base/#", rumqttc::QoS::AtLeastOnce)
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await; // the SUBACK
    let started = Instant::now();
    let sending = { publish(broker, "bench-publisher-base", "base", n) };
    let receiving = async {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(60), subscriber.messages.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => bail!("the subscriber got {got} of {n} messages"),
            }
        }
        Ok(())
    };
    tokio::try_join!(sending, receiving)?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Through Komoku: the bridge takes `n` messages into keys, durably. Returns messages/s.
async fn through_komoku(broker: &Mosquitto, n: u64) -> Result<f64> {
    let section: komoku::mqtt::MqttConfig = serde_json::from_value(json!({
        "url": broker.url(),
        "client_id": "bench-komoku",
        "ingest": [{"topic": "k/+", "key": "bench.{1}", "type": "numeric"}],
    }))?;
    let server = TestServer::start_with(|c| c.mqtt = vec![section]).await?;
    let mut c = server.client().await?;
    komoku_tests::mqtt_connected(&mut c).await?;
    let started = Instant::now();
    publish(broker, "bench-publisher-komoku", "k", n).await?;
    wait_points(&mut c, n, started).await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    server.stop().await?;
    Ok(rate)
}

/// Mosquitto alone, backlog: `n` messages queued for an away subscriber, then drained.
async fn broker_backlog(broker: &Mosquitto, n: u64) -> Result<f64> {
    {
        let subscriber = broker.client_with("bench-away", false).await?;
        subscriber
            .client
            .subscribe("away/#", rumqttc::QoS::AtLeastOnce)
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await; // the SUBACK
    }
    publish(broker, "bench-publisher-away", "away", n).await?;
    let started = Instant::now();
    let mut subscriber = broker.client_with("bench-away", false).await?;
    for got in 0..n {
        if tokio::time::timeout(Duration::from_secs(60), subscriber.messages.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            bail!("the subscriber got {got} of {n} queued messages");
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Komoku, backlog: `n` messages queued while Komoku was stopped, then taken in (durably)
/// once it is started again.
async fn komoku_backlog(broker: &Mosquitto, n: u64) -> Result<f64> {
    let data = tempfile::tempdir()?;
    let mut config = komoku_tests::config(data.path(), &komoku_tests::fixtures_dir());
    config.mqtt = vec![serde_json::from_value(json!({
        "url": broker.url(),
        "client_id": "bench-komoku-away",
        "ingest": [{"topic": "kaway/+", "key": "bench.{1}", "type": "numeric"}],
    }))?];
    let server = komoku::Server::start(&config).await?;
    let mut c = Client::connect(&format!("ws://{}/", server.local_addr)).await?;
    komoku_tests::mqtt_connected(&mut c).await?;
    drop(c);
    server.shutdown().await?;
    publish(broker, "bench-publisher-kaway", "kaway", n).await?;
    // Timed from the end of the start (plugins loaded), as the bridge connects.
    let server = komoku::Server::start(&config).await?;
    let started = Instant::now();
    let mut c = Client::connect(&format!("ws://{}/", server.local_addr)).await?;
    wait_points(&mut c, n, started).await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(c);
    server.shutdown().await?;
    Ok(rate)
}

/// Waits until the bridge has taken `n` points in, then until they are durable.
async fn wait_points(c: &mut Client, n: u64, started: Instant) -> Result<()> {
    loop {
        let stats = c.request(json!({"stats": {}})).await?;
        if stats["mqtt"][0]["ingest"][0]["points"].as_u64() >= Some(n) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "Komoku took in {} of {n}",
                stats["mqtt"][0]["ingest"][0]["points"]
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Writes are durable in queue order: once this put is acknowledged, every point is.
    c.request(json!({"put": {"key": "bench.done", "value": 1}}))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: u64 = if quick { 5_000 } else { 50_000 };
    let broker = Mosquitto::start().await?;
    println!("mqtt: {n} QoS 1 messages over {KEYS} topics, one publisher, Mosquitto on loopback");
    let base = broker_alone(&broker, n).await?;
    println!("  Mosquitto alone (publisher -> subscriber):  {base:>9.0} msg/s");
    let komoku = through_komoku(&broker, n).await?;
    println!(
        "  through Komoku into keys (durable, sync):   {komoku:>9.0} msg/s  ({:.2} of Mosquitto alone)",
        komoku / base
    );
    println!("backlog: {n} messages queued while the receiver was away, then drained");
    let base = broker_backlog(&broker, n).await?;
    println!("  Mosquitto alone (queued -> subscriber):     {base:>9.0} msg/s");
    let komoku = komoku_backlog(&broker, n).await?;
    println!(
        "  queued -> Komoku from its start (durable):  {komoku:>9.0} msg/s  ({:.2} of Mosquitto alone)",
        komoku / base
    );
    Ok(())
}
