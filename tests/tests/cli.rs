//! The `komoku` client subcommands, run as processes against the real server binary: every
//! subcommand's output, and bad input (unknown key, refused value, unreachable server, wrong
//! token, unreadable time) as a message with the server's code on stderr and status 1.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use komoku_tests::{ServerProcess, now};
use serde_json::{Value as Json, json};

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");

fn komoku(url: &str, args: &[&str]) -> Result<Output> {
    Ok(Command::new(BIN)
        .args(args)
        .env("KOMOKU_URL", url)
        .env_remove("KOMOKU_TOKEN")
        .env_remove("TZ")
        .output()?)
}

/// Runs a subcommand that must succeed; returns its stdout.
fn ok(url: &str, args: &[&str]) -> Result<String> {
    let out = komoku(url, args)?;
    ensure!(
        out.status.success(),
        "komoku {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs a subcommand that must fail with status 1; returns its stderr.
fn fails(url: &str, args: &[&str]) -> Result<String> {
    let out = komoku(url, args)?;
    ensure!(
        out.status.code() == Some(1),
        "komoku {args:?} gave {:?}, stdout {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(out.stdout.is_empty(), "a failure printed to stdout");
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        !stderr.contains("backtrace") && stderr.lines().count() == 1,
        "{stderr}"
    );
    Ok(stderr)
}

#[test]
fn every_subcommand_against_a_real_server() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start(BIN, data.path())?;
    let url = server.url();

    ok(&url, &["put", "room.temp", "21.5"])?;
    ok(&url, &["put", "room.temp", "23", "--time", "2h ago"])?;
    ok(&url, &["put", "room.temp", "19", "--time", "3h ago"])?;
    // Backfilled points do not change the latest value.
    assert_eq!(ok(&url, &["get", "room.temp"])?, "21.5\n");
    ok(&url, &["put", "status", "armed"])?;
    assert_eq!(ok(&url, &["get", "status"])?, "armed\n");
    ok(&url, &["put", "flag", "true"])?;
    assert_eq!(ok(&url, &["get", "flag"])?, "true\n");

    ok(&url, &["inc", "visits"])?;
    ok(&url, &["inc", "visits", "4"])?;
    ok(&url, &["dec", "visits", "1.5"])?;
    assert_eq!(ok(&url, &["get", "visits"])?, "3.5\n");

    ok(&url, &["define", "door", "uptime", "max_time=77"])?;
    // A defined key without a value: nothing on stdout, status 0.
    assert_eq!(ok(&url, &["get", "door"])?, "");

    let keys: Json = serde_json::from_str(&ok(&url, &["keys", "--json"])?)?;
    assert_eq!(keys["door"]["type"], "uptime");
    assert_eq!(keys["door"]["opts"]["max_time"], 77);
    assert_eq!(keys["room.temp"]["type"], "numeric");
    assert_eq!(keys["room.temp"]["value"], 21.5);
    assert_eq!(keys["visits"]["type"], "counter");
    assert_eq!(keys["status"]["value"], "armed");
    let table = ok(&url, &["keys", "room.*"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "VALUE", "AGE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..3], ["room.temp", "numeric", "21.5"]);

    // query: 19 for an hour, 23 for two, then 21.5: a 4-hour window from 4h ago in 1h steps.
    let json: Json = serde_json::from_str(&ok(
        &url,
        &[
            "query",
            "room.temp",
            "--since",
            "3h ago",
            "--figures",
            "min,max",
            "--format",
            "json",
        ],
    )?)?;
    assert_eq!(json["total"]["min"], 19.0);
    assert_eq!(json["total"]["max"], 23.0);
    let csv = ok(
        &url,
        &[
            "query",
            "room.temp",
            "--since",
            "4h",
            "--step",
            "1h",
            "--figures",
            "max",
            "--format",
            "csv",
            "--tz",
            "Europe/Warsaw",
        ],
    )?;
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("start,coverage,max"));
    let maxes: Vec<&str> = rows.map(|r| r.rsplit(',').next().unwrap_or("")).collect();
    assert!(maxes.contains(&"19") && maxes.contains(&"23"), "{csv}");
    let table = ok(
        &url,
        &[
            "query",
            "room.temp",
            "--since",
            "yesterday",
            "--figures",
            "mean",
        ],
    )?;
    assert!(table.starts_with("start"), "{table}");
    assert!(table.contains("mean"), "{table}");

    ok(&url, &["delete", "visits"])?;
    let err = fails(&url, &["get", "visits"])?;
    assert!(err.contains("unknown_key"), "{err}");
    Ok(())
}

#[test]
fn bad_input_is_a_clear_message_and_status_1() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start(BIN, data.path())?;
    let url = server.url();
    ok(&url, &["put", "n", "1"])?;

    let err = fails(&url, &["get", "nothing"])?;
    assert!(err.contains("unknown_key"), "{err}");
    let err = fails(&url, &["put", "n", "warm"])?;
    assert!(err.contains("invalid_value"), "{err}");
    let err = fails(&url, &["define", "n", "boolean"])?;
    assert!(err.contains("type_mismatch"), "{err}");
    ok(&url, &["put", "word", "hello"])?;
    let err = fails(&url, &["inc", "word"])?;
    assert!(err.contains("unsupported_operation"), "{err}");
    let err = fails(&url, &["query", "nothing", "--since", "1d"])?;
    assert!(err.contains("unknown_key"), "{err}");
    let err = fails(&url, &["query", "n", "--since", "next blue moon"])?;
    assert!(err.contains("cannot read the time"), "{err}");
    let err = fails(&url, &["query", "n", "--step", "3 fortnights"])?;
    assert!(err.contains("step"), "{err}");
    let err = fails(&url, &["put", "n", "2", "--time", "2999-01-01"])?;
    assert!(err.contains("invalid_time"), "{err}");
    let err = fails(&url, &["define", "k", "numeric", "novalue"])?;
    assert!(err.contains("name=value"), "{err}");

    // Nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let err = fails(&format!("ws://{free}"), &["get", "n"])?;
    assert!(err.contains("cannot connect"), "{err}");
    let err = fails(&url, &["get", "n", "--url", "http://x"])?;
    assert!(err.contains("bad url"), "{err}");

    // A usage error is clap's (status 2), and every subcommand has --help.
    let out = komoku(&url, &["put", "only-a-key"])?;
    assert_eq!(out.status.code(), Some(2));
    for sub in [
        "put", "get", "inc", "dec", "define", "delete", "keys", "watch", "query",
    ] {
        let help = ok(&url, &[sub, "--help"])?;
        assert!(
            help.contains("--url") && help.contains("--token-file"),
            "{help}"
        );
    }
    Ok(())
}

#[test]
fn tokens_from_a_file_or_the_environment_and_a_wrong_one() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = komoku_tests::start_with_one_token(BIN, data.path(), "right-token", "room.*")?;
    let url = server.url();
    let err = fails(&url, &["get", "room.t"])?;
    assert!(err.contains("unauthorized"), "{err}");

    let token_file = data.path().join("token");
    std::fs::write(&token_file, "right-token\n")?;
    let file = token_file.to_str().context("utf-8 path")?;
    ok(&url, &["put", "room.t", "5", "--token-file", file])?;
    let out = Command::new(BIN)
        .args(["get", "room.t"])
        .env("KOMOKU_URL", &url)
        .env("KOMOKU_TOKEN", "right-token")
        .output()?;
    assert_eq!(String::from_utf8(out.stdout)?, "5\n");
    let err = fails(&url, &["put", "hall.t", "5", "--token-file", file])?;
    assert!(
        err.contains("forbidden") && err.contains("write") && err.contains("hall.t"),
        "{err}"
    );
    std::fs::write(&token_file, "wrong-token\n")?;
    let err = fails(&url, &["get", "room.t", "--token-file", file])?;
    assert!(err.contains("unauthorized"), "{err}");
    Ok(())
}

#[test]
fn watch_prints_a_change_made_by_another_client() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start(BIN, data.path())?;
    let url = server.url();
    ok(&url, &["put", "room.temp", "20"])?;
    ok(&url, &["put", "room.hum", "40"])?;

    let mut watch = Command::new(BIN)
        .args(["watch", "room.*", "door", "--json"])
        .env("KOMOKU_URL", &url)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    // The watch prints nothing until a change: wait until the server counts its three
    // subscriptions.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    loop {
        let subs = runtime.block_on(async {
            let mut c = komoku_tests::Client::connect(&url).await?;
            let s = c.request(json!({"stats": {}})).await?;
            anyhow::Ok(s["change_notifications_count"].as_u64().unwrap_or(0))
        })?;
        if subs >= 3 {
            break;
        }
        ensure!(
            started.elapsed() < komoku_tests::WAIT,
            "watch never subscribed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = now();
    ok(&url, &["put", "room.temp", "21"])?;
    ok(&url, &["put", "door", "true"])?;
    let first: Json = serde_json::from_str(&lines.next().context("watch ended")??)?;
    let second: Json = serde_json::from_str(&lines.next().context("watch ended")??)?;
    assert_eq!(first["key"], "room.temp");
    assert_eq!(first["value"], 21);
    assert!(first["time"].as_f64().unwrap_or(0.0) >= before - 1.0);
    assert_eq!(second["key"], "door");
    assert_eq!(second["value"], true);
    watch.kill()?;
    watch.wait()?;
    Ok(())
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_listing_quietly() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = ServerProcess::start(BIN, data.path())?;
    let url = server.url();
    let c = komoku_client::Client::connect(&url, Default::default()).await?;
    // More than a pipe buffer of table.
    let acks: Vec<_> = (0..4000)
        .map(|i| c.put(&format!("sensor.number.{i:05}"), i))
        .collect();
    for a in acks {
        a.await?;
    }
    let mut child = Command::new(BIN)
        .arg("keys")
        .env("KOMOKU_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut first)?;
    assert!(first.starts_with("NAME"), "{first}");
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    Ok(())
}
