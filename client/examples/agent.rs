//! An agent: puts this machine's 1-minute load average every 10 seconds under `host.load`,
//! whether or not the server is up (puts queue while it is away), and prints the changes of
//! the key as the server pushes them.
//!
//! `cargo run -p komoku-client --example agent -- ws://127.0.0.1:7373`

use std::time::Duration;

use futures_util::StreamExt;
use komoku_client::{Client, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:7373".into());
    let options = Options {
        token: std::env::var("KOMOKU_TOKEN").ok(),
        ..Options::default()
    };
    let client = Client::start(&url, options)?;
    let mut changes = client.subscribe("host.load").await?;
    tokio::spawn(async move {
        while let Some(c) = changes.next().await {
            println!("{} = {} at {:.3}", c.key, c.value, c.time);
        }
    });
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or_default();
        // Not awaited: the put waits in the queue while the server is away.
        drop(client.put("host.load", load));
        if client.dropped() > 0 {
            eprintln!("{} puts dropped from the full queue", client.dropped());
        }
    }
}
