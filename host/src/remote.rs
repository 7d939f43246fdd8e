//! The client subcommands of the command line (`komoku put`, `get`, `inc`, `dec`, `define`,
//! `delete`, `keys`, `watch`, `query`): each is one or a few requests through
//! [`komoku_client`] to a running server, the answer printed for a shell. Human times and
//! durations (`7d`, `2026-01-01`, `yesterday`) are read with jiff.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use komoku_client::{Client, Options};
use serde_json::{Map, Value as Json, json};

/// `println!` that ends the process quietly when the reader went away (`komoku keys | head
/// -1`) instead of panicking on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(e.into());
        }
    }};
}

/// Where the server is and which token to present.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The server: ws://, wss://, or tcp:// and tcps:// for the binary protocol [default:
    /// $KOMOKU_URL, else ws://127.0.0.1:7373].
    #[arg(long)]
    url: Option<String>,
    /// A file holding the token [default: $KOMOKU_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// For wss:// and tcps://: a PEM file of the certificates to trust, such as a self-signed server's
    /// cert.pem [default: $KOMOKU_CA_FILE, else the system's trusted roots].
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// How `query` prints its answer.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

/// Subcommands that talk to a running server.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Remote {
    /// Stores VALUE under KEY (a number, true/false, JSON, or else the text itself); creates
    /// the key with a type guessed from the value when it does not exist.
    Put {
        key: String,
        value: String,
        /// When the value was true: seconds since the epoch, a date or time (`2026-01-01`,
        /// `2026-01-01T08:30`, in --tz), `now`, `yesterday`, or an age (`5m`, `2h`) [default:
        /// now].
        #[arg(long)]
        time: Option<String>,
        /// Time zone for dates without one [default: $TZ, else UTC].
        #[arg(long)]
        tz: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Prints KEY's latest value.
    Get {
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Adds N (default 1) to a counter.
    Inc {
        key: String,
        #[arg(default_value_t = 1.0, allow_negative_numbers = true)]
        n: f64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Takes N (default 1) from a counter.
    Dec {
        key: String,
        #[arg(default_value_t = 1.0, allow_negative_numbers = true)]
        n: f64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Defines KEY with TYPE and options (`max_time=60`), or updates the options of a key of
    /// that type.
    Define {
        key: String,
        #[arg(value_name = "TYPE")]
        type_name: String,
        /// Options as name=value (value read as JSON when it parses, else as text).
        #[arg(value_name = "OPT=VALUE")]
        opts: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deletes KEY and its history.
    Delete {
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lists keys (name, type, value, age), those matching PATTERN (`*` any run of
    /// characters, `?` one) when given.
    Keys {
        pattern: Option<String>,
        /// One JSON object per key name instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Prints one line per change of the keys (a pattern is matched against the keys that
    /// exist when the watch starts), until interrupted.
    Watch {
        #[arg(required = true, value_name = "PATTERN|KEY")]
        keys: Vec<String>,
        /// One JSON object per change instead of `time key value`.
        #[arg(long)]
        json: bool,
        /// Time zone for the printed times [default: $TZ, else UTC].
        #[arg(long)]
        tz: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Writes the keys matching PATTERN (every key without one) to stdout as JSON lines:
    /// retention policies, definitions with options, raw points and compacted history (tier
    /// summaries; see `komoku import`).
    Export {
        pattern: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Reads an export from stdin into the server. Importing twice changes nothing; an
    /// interrupted import run again finishes without doubling anything.
    Import {
        #[command(flatten)]
        conn: Conn,
    },
    /// Summarises KEY's past in buckets: `--since 7d --step 1h --figures mean,max`.
    Query {
        key: String,
        /// Start: an age (`7d`, `12h`), a date or time (`2026-01-01`), `today`,
        /// `yesterday`, or seconds since the epoch [default: the key's first point].
        #[arg(long)]
        since: Option<String>,
        /// End, as --since [default: now].
        #[arg(long)]
        until: Option<String>,
        /// Bucket size: a count and a unit, s (seconds), m (minutes), h (hours), d (days),
        /// w (weeks), mo (months), y (years): `15m`, `1h`, `1d` [default: one bucket].
        #[arg(long)]
        step: Option<String>,
        /// Figures, comma separated (`mean,max`) [default: every figure of the type].
        #[arg(long, value_delimiter = ',')]
        figures: Vec<String>,
        /// Time zone for calendar steps, dates and printed times [default: $TZ, else UTC].
        #[arg(long)]
        tz: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs a client subcommand; an error's message names the server's code.
pub async fn run(command: Remote) -> anyhow::Result<()> {
    match command {
        Remote::Put {
            key,
            value,
            time,
            tz,
            conn,
        } => {
            let tz = zone(tz.as_deref())?;
            let client = connect(&conn).await?;
            let value = read_value(&value);
            let ack = match time {
                Some(t) => client.put_at(&key, value, parse_time(&t, &tz)?),
                None => client.put(&key, value),
            };
            ack.await.map_err(server_error)?;
        }
        Remote::Get { key, conn } => {
            let client = connect(&conn).await?;
            match client.get(&key).await.map_err(server_error)? {
                Some(v) => say!("{}", plain(&v)),
                None => {
                    // Tell "no such key" from "no value yet": a query knows the difference.
                    client
                        .query(json!({"key": key, "last": 1}))
                        .await
                        .map_err(server_error)?;
                    eprintln!("{key} has no value yet");
                }
            }
        }
        Remote::Inc { key, n, conn } => {
            let client = connect(&conn).await?;
            client.increment(&key, n).await.map_err(server_error)?;
        }
        Remote::Dec { key, n, conn } => {
            let client = connect(&conn).await?;
            client.decrement(&key, n).await.map_err(server_error)?;
        }
        Remote::Define {
            key,
            type_name,
            opts,
            conn,
        } => {
            let mut options = Map::new();
            for opt in opts {
                let (name, value) = opt
                    .split_once('=')
                    .ok_or_else(|| anyhow!("option {opt:?} is not name=value"))?;
                options.insert(name.to_string(), read_value(value));
            }
            let client = connect(&conn).await?;
            client
                .define(&key, &type_name, options)
                .await
                .map_err(server_error)?;
        }
        Remote::Delete { key, conn } => {
            let client = connect(&conn).await?;
            client.delete(&key).await.map_err(server_error)?;
        }
        Remote::Keys {
            pattern,
            json,
            conn,
        } => keys(&connect(&conn).await?, pattern.as_deref(), json).await?,
        Remote::Watch {
            keys,
            json,
            tz,
            conn,
        } => {
            let tz = zone(tz.as_deref())?;
            watch(&connect(&conn).await?, &keys, json, &tz).await?;
        }
        Remote::Export { pattern, conn } => {
            let client = connect(&conn).await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            crate::dump::export(&client, pattern.as_deref(), &mut out).await?;
        }
        Remote::Import { conn } => {
            let client = connect(&conn).await?;
            crate::dump::import(&client, std::io::stdin().lock()).await?;
        }
        Remote::Query {
            key,
            since,
            until,
            step,
            figures,
            tz,
            format,
            conn,
        } => {
            let tz_name = tz.clone().or_else(|| std::env::var("TZ").ok());
            let zone = zone(tz.as_deref())?;
            let mut args = Map::new();
            args.insert("key".into(), json!(key));
            if let Some(s) = since {
                args.insert("since".into(), json!(parse_time(&s, &zone)?));
            }
            if let Some(u) = until {
                args.insert("until".into(), json!(parse_time(&u, &zone)?));
            }
            if let Some(s) = step {
                args.insert("step".into(), json!(parse_step(&s)?));
            }
            if !figures.is_empty() {
                args.insert("figures".into(), json!(figures));
            }
            if let Some(tz) = tz_name.filter(|t| !t.is_empty()) {
                args.insert("tz".into(), json!(tz));
            }
            let client = connect(&conn).await?;
            let answer = client
                .query(Json::Object(args))
                .await
                .map_err(server_error)?;
            print_summary(&answer, &figures, format, &zone)?;
        }
    }
    Ok(())
}

async fn connect(conn: &Conn) -> anyhow::Result<Client> {
    let url = conn
        .url
        .clone()
        .or_else(|| std::env::var("KOMOKU_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:7373".into());
    let token = match &conn.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("KOMOKU_TOKEN").ok(),
    };
    let options = Options {
        token,
        ca_file: conn
            .ca_file
            .clone()
            .or_else(|| std::env::var_os("KOMOKU_CA_FILE").map(PathBuf::from)),
        connect_timeout: Duration::from_secs(5),
        ..Options::default()
    };
    Client::connect(&url, options).await.map_err(server_error)
}

/// The client's error as the message printed: the server's code first.
fn server_error(e: komoku_client::Error) -> anyhow::Error {
    match &e {
        komoku_client::Error::Server { code, detail, .. } if code == "forbidden" => anyhow!(
            "forbidden: the token lacks {} on {}",
            detail["permission"].as_str().unwrap_or("a permission"),
            detail["key"].as_str().unwrap_or("the key")
        ),
        _ => anyhow!("{e}"),
    }
}

/// A command-line value as JSON: a number, `true`/`false`, JSON, or else the text.
fn read_value(s: &str) -> Json {
    match serde_json::from_str::<Json>(s) {
        Ok(v) => v,
        Err(_) => Json::String(s.to_string()),
    }
}

/// A value for a shell: text without quotes, everything else as JSON.
fn plain(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn zone(name: Option<&str>) -> anyhow::Result<TimeZone> {
    let name = name
        .map(str::to_string)
        .or_else(|| std::env::var("TZ").ok())
        .filter(|n| !n.is_empty());
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(&n).with_context(|| format!("unknown time zone {n:?}")),
    }
}

fn seconds(ts: Timestamp) -> f64 {
    ts.as_duration().as_secs_f64()
}

/// A human time as seconds since the epoch: `now`, `today`, `yesterday`, an age (`7d`,
/// `1h30m`, `2 days`, also with a leading `-` or a trailing `ago`), a date (`2026-01-01`,
/// midnight in `tz`), a civil time (`2026-01-01T08:30`), an instant with an offset
/// (`2026-01-01T08:30:00Z`), or a number of seconds since the epoch.
pub fn parse_time(s: &str, tz: &TimeZone) -> anyhow::Result<f64> {
    let s = s.trim();
    let now = Zoned::now().with_time_zone(tz.clone());
    match s {
        "now" => return Ok(seconds(now.timestamp())),
        "today" => return Ok(seconds(now.start_of_day()?.timestamp())),
        "yesterday" => {
            return Ok(seconds(
                now.checked_sub(Span::new().days(1))?
                    .start_of_day()?
                    .timestamp(),
            ));
        }
        _ => {}
    }
    if let Ok(n) = s.parse::<f64>() {
        return Ok(n);
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(seconds(ts));
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return Ok(seconds(dt.to_zoned(tz.clone())?.timestamp()));
    }
    if let Ok(date) = s.parse::<jiff::civil::Date>() {
        return Ok(seconds(date.to_zoned(tz.clone())?.timestamp()));
    }
    let age = s.trim_start_matches('-');
    let age = age.strip_suffix("ago").unwrap_or(age).trim();
    if let Ok(span) = age.parse::<Span>() {
        return Ok(seconds(now.checked_sub(span.abs())?.timestamp()));
    }
    bail!(
        "cannot read the time {s:?}: give an age (7d, 2h), a date (2026-01-01), \
         a time (2026-01-01T08:30), now, today, yesterday, or seconds since the epoch"
    )
}

/// A human step (`15m`, `1h`, `1d`, `2w`, `1mo`, `1y`, `30s`) as the server's (`15M`, `1H`,
/// ...: upper case for fixed lengths, lower case for calendar ones).
pub fn parse_step(s: &str) -> anyhow::Result<String> {
    let s = s.trim();
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let (count, unit) = s.split_at(digits);
    let count: u64 = count
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| anyhow!("a step is a count and a unit (15m, 1h, 1d): got {s:?}"))?;
    let letter = match unit.trim() {
        "s" | "sec" | "second" | "seconds" => "S",
        "m" | "min" | "minute" | "minutes" => "M",
        "h" | "hour" | "hours" => "H",
        "d" | "day" | "days" => "d",
        "w" | "week" | "weeks" => "w",
        "mo" | "month" | "months" => "m",
        "y" | "year" | "years" => "y",
        other => bail!("unknown step unit {other:?}: s, m (minutes), h, d, w, mo (months) or y"),
    };
    Ok(format!("{count}{letter}"))
}

/// `*` matches any run of characters, `?` one.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 86_400.0 {
        format!("{:.1}h", s / 3600.0)
    } else {
        format!("{:.1}d", s / 86_400.0)
    }
}

async fn keys(client: &Client, pattern: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let all = client.keys_with_values().await.map_err(server_error)?;
    let names: Vec<&String> = all
        .keys()
        .filter(|k| pattern.is_none_or(|p| glob(p, k)))
        .collect();
    // The latest point of each, asked all at once on the one connection.
    let lasts = futures_util::future::join_all(names.iter().map(|k| client.last(k))).await;
    let now = seconds(Timestamp::now());
    if as_json {
        let mut out = Map::new();
        for (name, last) in names.iter().zip(lasts) {
            let info = &all[*name];
            let last = last.map_err(server_error)?;
            out.insert(
                (*name).clone(),
                json!({
                    "type": info.type_name,
                    "opts": info.opts,
                    "value": last.as_ref().map(|p| p.value.clone()),
                    "time": last.as_ref().map(|p| p.time),
                }),
            );
        }
        say!("{}", Json::Object(out));
        return Ok(());
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "TYPE".into(),
        "VALUE".into(),
        "AGE".into(),
    ]];
    for (name, last) in names.iter().zip(lasts) {
        let info = &all[*name];
        let last = last.map_err(server_error)?;
        rows.push([
            (*name).clone(),
            info.type_name.clone(),
            last.as_ref().map_or("-".into(), |p| plain(&p.value)),
            last.as_ref().map_or("-".into(), |p| age(now - p.time)),
        ]);
    }
    print_table(&rows)?;
    Ok(())
}

fn print_table<const N: usize>(rows: &[[String; N]]) -> anyhow::Result<()> {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        say!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

fn local(t: f64, tz: &TimeZone) -> String {
    match Timestamp::from_nanosecond((t * 1e9) as i128) {
        Ok(ts) => ts
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

async fn watch(
    client: &Client,
    args: &[String],
    as_json: bool,
    tz: &TimeZone,
) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    let patterns: Vec<&String> = args.iter().filter(|a| a.contains(['*', '?'])).collect();
    if !patterns.is_empty() {
        let all = client.keys().await.map_err(server_error)?;
        keys.extend(
            all.into_keys()
                .filter(|k| patterns.iter().any(|p| glob(p, k))),
        );
        if keys.is_empty() {
            bail!("no key matches {patterns:?}");
        }
    }
    keys.extend(args.iter().filter(|a| !a.contains(['*', '?'])).cloned());
    let mut streams = Vec::new();
    for key in &keys {
        streams.push(client.subscribe(key).await.map_err(server_error)?);
    }
    let mut changes = futures_util::stream::select_all(streams);
    use std::io::Write as _;
    while let Some(c) = changes.next().await {
        let line = if as_json {
            json!({"key": c.key, "value": c.value, "time": c.time}).to_string()
        } else {
            format!("{} {} {}", local(c.time, tz), c.key, plain(&c.value))
        };
        let mut out = std::io::stdout().lock();
        // A reader that went away (`| head`) ends the watch.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    bail!("the connection to the server ended")
}

/// A figure's cell: numbers as they are, `{"time", "value"}` as the value, the rest as JSON.
fn cell(v: Option<&Json>) -> String {
    match v {
        None | Some(Json::Null) => String::new(),
        Some(Json::Object(o)) if o.contains_key("value") && o.contains_key("time") => {
            plain(&o["value"])
        }
        Some(other) => plain(other),
    }
}

fn print_summary(
    answer: &Json,
    figures: &[String],
    format: Format,
    tz: &TimeZone,
) -> anyhow::Result<()> {
    if let Format::Json = format {
        say!("{answer}");
        return Ok(());
    }
    let buckets = answer
        .get("buckets")
        .and_then(Json::as_array)
        .ok_or_else(|| anyhow!("the server answered no buckets: {answer}"))?;
    // Columns: the figures asked for, else those of the first bucket, in its order.
    let names: Vec<String> = if figures.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for b in buckets.iter().chain(answer.get("total")) {
            if let Some(o) = b.as_object() {
                for k in o.keys() {
                    if !["start", "end"].contains(&k.as_str()) && !names.contains(k) {
                        names.push(k.clone());
                    }
                }
            }
        }
        names
    } else {
        let mut names = vec!["coverage".to_string()];
        names.extend(figures.iter().cloned());
        names
    };
    let header: Vec<String> = std::iter::once("start".to_string())
        .chain(names.iter().cloned())
        .collect();
    let rows: Vec<Vec<String>> = buckets
        .iter()
        .map(|b| {
            let start = b.get("start").and_then(Json::as_f64).unwrap_or(f64::NAN);
            std::iter::once(local(start, tz))
                .chain(names.iter().map(|n| cell(b.get(n))))
                .collect()
        })
        .collect();
    match format {
        Format::Csv => {
            let csv_cell = |c: &str| {
                if c.contains([',', '"', '\n']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.to_string()
                }
            };
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
                say!("{}", line.join(","));
            }
        }
        _ => {
            let mut widths = vec![0; header.len()];
            for row in std::iter::once(&header).chain(&rows) {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                say!("{}", line.join("  ").trim_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_as_the_server_spells_them() -> anyhow::Result<()> {
        assert_eq!(parse_step("15m")?, "15M");
        assert_eq!(parse_step("1h")?, "1H");
        assert_eq!(parse_step("1d")?, "1d");
        assert_eq!(parse_step("1mo")?, "1m");
        assert!(parse_step("h").is_err());
        assert!(parse_step("3 fortnights").is_err());
        Ok(())
    }

    #[test]
    fn human_times() -> anyhow::Result<()> {
        let utc = TimeZone::UTC;
        assert_eq!(parse_time("2026-01-01", &utc)?, 1_767_225_600.0);
        let warsaw = TimeZone::get("Europe/Warsaw")?;
        assert_eq!(parse_time("2026-01-01", &warsaw)?, 1_767_225_600.0 - 3600.0);
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z", &warsaw)?,
            1_767_225_600.0
        );
        assert_eq!(parse_time("1767225600.5", &utc)?, 1_767_225_600.5);
        let now = seconds(Timestamp::now());
        let week = parse_time("7d", &utc)?;
        assert!((now - week - 7.0 * 86_400.0).abs() < 5.0, "{week}");
        assert!((now - parse_time("2h ago", &utc)? - 7200.0).abs() < 5.0);
        assert!(parse_time("yesterday", &utc)? < parse_time("today", &utc)?);
        assert!(parse_time("next blue moon", &utc).is_err());
        Ok(())
    }

    #[test]
    fn globs() {
        assert!(glob("room.*", "room.temp"));
        assert!(glob("*", "x"));
        assert!(glob("r?om", "room"));
        assert!(!glob("room.*", "hall.temp"));
    }
}
