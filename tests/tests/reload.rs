//! Live configuration reload against the real binary: SIGHUP and `komoku reload` re-read the
//! config file; a revoked token is cut off at once, shrunk grants drop the subscriptions they
//! no longer cover, other clients carry on, a broken file changes nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use komoku_tests::{Client, ServerProcess, WAIT, num};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite;

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");

/// One `[[auth.tokens]]`: name, secret, read (= subscribe) patterns, write (= define)
/// patterns, revoked.
type TokenSpec<'a> = (&'a str, &'a str, &'a [&'a str], &'a [&'a str], bool);

/// A config with auth on and these tokens, plus `extra` settings at the top.
fn config(extra: &str, tokens: &[TokenSpec]) -> String {
    let mut text = format!("{extra}\n[auth]\nenabled = true\n");
    for (name, secret, read, write, revoked) in tokens {
        text.push_str(&format!(
            "[[auth.tokens]]\nname = \"{name}\"\nhash = \"{}\"\nrevoked = {revoked}\n\
             read = {read:?}\nsubscribe = {read:?}\nwrite = {write:?}\ndefine = {write:?}\n",
            komoku::auth::hash_token(secret),
        ));
    }
    text
}

fn start(dir: &Path, text: &str) -> Result<ServerProcess> {
    let path = dir.join("komoku.toml");
    std::fs::write(&path, text)?;
    let data = dir.join("data");
    ServerProcess::start_with_args(BIN, &data, &["--config", path.to_str().unwrap_or("")])
}

async fn connect(server: &ServerProcess, path: &str, secret: &str) -> Result<Client> {
    Client::connect(&format!("{}{path}?token={secret}", server.url())).await
}

/// The next message that is not a push of `key`.
async fn next_other_than(c: &mut Client, key: &str) -> Result<Json> {
    loop {
        let m = c.next_message().await?;
        if m["pub"]["key"] != json!(key) {
            return Ok(m);
        }
    }
}

#[tokio::test]
async fn sighup_cuts_off_a_revoked_token_and_shrinks_grants_while_others_carry_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let all: &[&str] = &["*"];
    let both: &[&str] = &["sensor.*", "home.*"];
    let home: &[&str] = &["home.*"];
    let server = start(
        dir.path(),
        &config(
            "",
            &[
                ("admin", "admin-secret", all, all, false),
                ("phone", "phone-secret", all, &[], false),
                ("dash", "dash-secret", both, &[], false),
            ],
        ),
    )?;
    let mut admin = connect(&server, "v2", "admin-secret").await?;
    for key in ["sensor.t", "home.x"] {
        assert_eq!(
            admin
                .request(json!({"put": {"key": key, "value": 0}}))
                .await?,
            json!({"result": "ok"})
        );
    }
    let mut phone = connect(&server, "", "phone-secret").await?;
    assert_eq!(
        phone.request(json!({"sub": {"key": "sensor.t"}})).await?,
        json!("ack")
    );
    let mut dash = connect(&server, "v2", "dash-secret").await?;
    for key in ["sensor.t", "home.x"] {
        assert_eq!(
            dash.request(json!({"sub": {"key": key}})).await?,
            json!({"result": "ok"})
        );
    }

    // A writer puts every 10 ms across the reload.
    let mut writer = connect(&server, "v2", "admin-secret").await?;
    let writing = tokio::spawn(async move {
        let mut answers = Vec::new();
        for i in 1..=150 {
            answers.push(
                writer
                    .request(json!({"put": {"key": "sensor.t", "value": i}}))
                    .await?,
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(answers)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(
        dir.path().join("komoku.toml"),
        config(
            "",
            &[
                ("admin", "admin-secret", all, all, false),
                ("phone", "phone-secret", all, &[], true),
                ("dash", "dash-secret", home, &[], false),
            ],
        ),
    )?;
    server.signal("HUP")?;

    // The revoked token's connection is closed, saying why, and it cannot come back.
    assert_eq!(
        phone.close_frame().await?,
        (1008, "token revoked".to_string())
    );
    match tokio_tungstenite::connect_async(format!("{}?token=phone-secret", server.url())).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => bail!("a revoked token connected: {:?}", other.err()),
    }
    // The shrunk token is told which subscriptions it lost, and loses only those.
    assert_eq!(
        next_other_than(&mut dash, "sensor.t").await?,
        json!({"unsubscribed": {"keys": ["sensor.t"], "reason": "forbidden"}})
    );
    assert_eq!(
        admin
            .request(json!({"put": {"key": "home.x", "value": 7}}))
            .await?,
        json!({"result": "ok"})
    );
    // Pushes of sensor.t (still written every 10 ms) no longer come; home.x's does.
    let push = dash.push().await?;
    assert_eq!(push["pub"]["key"], json!("home.x"), "{push}");
    assert_eq!(push["pub"]["value"], json!(7));
    assert!(
        dash.maybe_push(Duration::from_millis(300)).await?.is_none(),
        "a push of a key the token may no longer read arrived"
    );
    assert_eq!(
        dash.request(json!({"get": {"key": "sensor.t"}})).await?,
        json!({"error": "forbidden", "permission": "read", "key": "sensor.t"})
    );

    // The writer never noticed: every put acknowledged, every one stored.
    let answers = tokio::time::timeout(WAIT * 3, writing).await???;
    assert!(
        answers.iter().all(|a| *a == json!({"result": "ok"})),
        "{answers:?}"
    );
    let history = admin
        .request(json!({"query": {"key": "sensor.t", "last": 1000}}))
        .await?;
    let values: Vec<f64> = history["result"]
        .as_array()
        .map(|points| points.iter().map(|p| num(&p[1])).collect())
        .unwrap_or_default();
    let expected: Vec<f64> = std::iter::once(0.0)
        .chain((1..=150).map(f64::from))
        .collect();
    assert_eq!(values, expected);
    Ok(())
}

#[tokio::test]
async fn a_broken_config_changes_nothing_and_restart_settings_are_reported() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let all: &[&str] = &["*"];
    let reader: &[&str] = &["sensor.*"];
    let tokens = [
        ("admin", "admin-secret", all, all, false),
        ("reader", "reader-secret", reader, reader, false),
    ];
    let server = start(dir.path(), &config("max_batch = 10000", &tokens))?;
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "admin-secret\n")?;
    let url = format!("{}v2", server.url());
    let reload = |token: &Path| {
        Command::new(BIN)
            .args(["reload", "--url", &url, "--token-file"])
            .arg(token)
            .output()
    };
    let mut admin = connect(&server, "v2", "admin-secret").await?;
    let hash_at_start =
        admin.request(json!({"stats": {}})).await?["result"]["config"]["hash"].clone();
    assert!(
        hash_at_start
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:"))
    );

    // A file that does not parse: refused whole, reported, the old config stays.
    std::fs::write(dir.path().join("komoku.toml"), "[auth\nenabled = false")?;
    let out = reload(&token_file)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a broken config was accepted");
    assert!(stderr.contains("config_refused"), "{stderr}");
    let mut still = connect(&server, "v2", "reader-secret").await?;
    assert_eq!(
        still.request(json!({"ping": 1})).await?,
        json!({"result": {"pong": 1}})
    );
    // A file that parses but does not validate (a malformed hash) is refused too.
    std::fs::write(
        dir.path().join("komoku.toml"),
        "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"x\"\nhash = \"nope\"\n",
    )?;
    assert!(!reload(&token_file)?.status.success());
    assert_eq!(
        admin.request(json!({"stats": {}})).await?["result"]["config"]["hash"],
        hash_at_start
    );

    // Only an admin token may reload.
    std::fs::write(
        dir.path().join("komoku.toml"),
        config("max_batch = 2\ndurability = 5", &tokens),
    )?;
    let reader_file = dir.path().join("reader.token");
    std::fs::write(&reader_file, "reader-secret")?;
    let out = reload(&reader_file)?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));

    // A good file: the limit applies (to new connections), durability needs a restart.
    let out = reload(&token_file)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Json = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["needs_restart"], json!(["durability"]), "{report}");
    assert!(
        report["applied"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("limits"))),
        "{report}"
    );
    let mut fresh = connect(&server, "v2", "admin-secret").await?;
    assert_eq!(
        fresh
            .request(json!([{"ping": 1}, {"ping": 2}, {"ping": 3}]))
            .await?,
        json!({"error": "limit_exceeded"})
    );
    assert_ne!(
        admin.request(json!({"stats": {}})).await?["result"]["config"]["hash"],
        hash_at_start
    );
    assert_eq!(
        admin
            .request(json!({"put": {"key": "k", "value": 1}}))
            .await?,
        json!({"result": "ok"})
    );
    Ok(())
}
