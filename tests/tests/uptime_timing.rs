//! Uptime expiries measured against the clock. Kept apart from the other end-to-end tests,
//! and run one at a time, so that the lateness they assert is the server's, not that of a
//! 2-core machine running a dozen other servers' tests at once.

use anyhow::Result;
use komoku_tests::{TestServer, now, num};
use serde_json::json;
use tokio::sync::Mutex;

/// Held by each test: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

#[tokio::test]
async fn uptime_turns_false_at_last_true_plus_max_time_and_pushes_it() -> Result<()> {
    let _one_at_a_time = SERIAL.lock().await;
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"up": {"type": "uptime", "max_time": 0.6}}}))
        .await?;
    c.request(json!({"sub": {"key": "up"}})).await?;
    c.request(json!({"put": {"key": "up", "value": true}}))
        .await?;
    let on = c.push().await?;
    assert_eq!(on["pub"]["value"], json!(true));
    let t_true = num(&on["pub"]["time"]);

    let off = c.push().await?;
    let arrived = now();
    assert_eq!(off["pub"]["value"], json!(false));
    assert_eq!(off["pub"]["previous"], json!(true));
    let t_false = num(&off["pub"]["time"]);
    assert!(
        (t_false - (t_true + 0.6)).abs() < 1e-6,
        "stored at {t_false}, expected {}",
        t_true + 0.6
    );
    assert!(
        arrived - t_false < 0.05 + 0.02,
        "pushed {:.0} ms late",
        (arrived - t_false) * 1000.0
    );
    assert_eq!(
        c.request(json!({"last": {"key": "up"}})).await?["value"],
        json!(false)
    );
    Ok(())
}

#[tokio::test]
async fn uptime_expiry_survives_a_restart_inside_the_window() -> Result<()> {
    let _one_at_a_time = SERIAL.lock().await;
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    c.request(json!({"define": {"up": {"type": "uptime", "max_time": 1.5}}}))
        .await?;
    c.request(json!({"put": {"key": "up", "value": true}}))
        .await?;
    let t_true = num(&c.request(json!({"last": {"key": "up"}})).await?["time"]);
    c.close().await?;
    let data = s.stop().await?;

    let s = TestServer::start_with(|cfg| cfg.data_dir = data.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    c.request(json!({"sub": {"key": "up"}})).await?;
    assert_eq!(
        c.request(json!({"get": {"key": "up"}})).await?,
        json!(true),
        "still inside the window"
    );
    let off = c.push().await?;
    let arrived = now();
    assert_eq!(off["pub"]["value"], json!(false));
    assert!((num(&off["pub"]["time"]) - (t_true + 1.5)).abs() < 1e-6);
    assert!(
        arrived - (t_true + 1.5) < 0.07,
        "re-armed timer fired {:.0} ms late",
        (arrived - t_true - 1.5) * 1000.0
    );
    drop(data);
    Ok(())
}
