//! The command line: flags, config file, logging, signals. The `komoku` binary is a call to
//! [`main`]; the end-to-end tests build the same call into their own binary to kill it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{DurabilityConfig, DurabilityName};
use crate::{Config, Server};
use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Komoku: a key-value database for typed home and server data.
///
/// With no arguments it serves ws://127.0.0.1:7373 (v1 at `/`, v2 at `/v2`) with its data in
/// ./data and the built-in key types plus any plugins in ./plugins.
#[derive(Debug, Clone, Parser)]
#[command(disable_version_flag = true)]
struct Args {
    #[command(subcommand)]
    tool: Option<Tool>,
    /// Prints the version, the git commit, the WIT package plugins must target and the
    /// built-in types with their versions (loading them takes a moment), then exits.
    #[arg(long, short = 'V')]
    version: bool,
    /// TOML config file; flags given here override it. SIGHUP (or `komoku reload`) reads it
    /// again and applies what can change live.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7373].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Extra listener speaking v2 on every path.
    #[arg(long)]
    v2_listen: Option<SocketAddr>,
    /// Listener for the binary protocol (protobuf frames; clients use tcp://ADDR).
    #[arg(long)]
    tcp_listen: Option<SocketAddr>,
    /// Database folder [default: ./data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Plugins folder [default: ./plugins].
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Durability: "sync" or a number of milliseconds between fsyncs.
    #[arg(long)]
    durability: Option<String>,
}

/// Helpers that do not start the server.
#[derive(Debug, Clone, clap::Subcommand)]
enum Tool {
    /// Prints the config line `hash = "sha256:..."` for a token. Reads the token from
    /// standard input when not given (keeps it out of the shell history).
    HashToken { token: Option<String> },
    /// Makes a new random token and prints it with its config line.
    NewToken,
    /// Asks the server on this machine to read its config file again and apply it, and
    /// prints what was applied and what needs a restart (or why the file was refused).
    /// Same as sending the server SIGHUP, but with the answer. Plain ws:// only: with [tls]
    /// on, send SIGHUP instead.
    Reload {
        /// The server [default: $KOMOKU_URL, else ws://<listen of --config>/v2, else
        /// ws://127.0.0.1:7373/v2].
        #[arg(long)]
        url: Option<String>,
        /// A file holding a token with define on "*" [default: $KOMOKU_TOKEN] (with auth on).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Checks a config file as a start would (TOML, every setting, tokens, retention, the
    /// TLS certificate and key) without starting: prints "ok", or the first error with its
    /// line, and exits with status 1.
    CheckConfig {
        /// The file [default: --config].
        file: Option<PathBuf>,
    },
    #[command(flatten)]
    Remote(crate::remote::Remote),
}

/// Runs the server as the command line says, until SIGINT/SIGTERM; SIGHUP reloads the
/// config.
pub fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.version {
        return version();
    }
    if let Some(tool) = args.tool.take() {
        return run_tool(tool, &args, &runtime);
    }
    runtime.block_on(run(args))
}

/// The config the command line says: the file (defaults without one), then the flags.
fn load(args: &Args) -> anyhow::Result<(Config, Option<String>)> {
    let (mut config, text) = match &args.config {
        Some(path) => {
            let (config, text) = Config::read(path)?;
            (config, Some(text))
        }
        None => (Config::default(), None),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.v2_listen.is_some() {
        config.v2_listen = args.v2_listen;
    }
    if args.tcp_listen.is_some() {
        config.tcp_listen = args.tcp_listen;
    }
    if let Some(data) = &args.data {
        config.data_dir = data.clone();
    }
    if let Some(plugins) = &args.plugins {
        config.plugins_dir = plugins.clone();
    }
    if let Some(d) = &args.durability {
        config.durability = match d.as_str() {
            "sync" => DurabilityConfig::Named(DurabilityName::Sync),
            ms => DurabilityConfig::IntervalMs(
                ms.parse()
                    .context("--durability takes \"sync\" or a number of milliseconds")?,
            ),
        };
    }
    Ok((config, text))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (config, text) = load(&args)?;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(from_env) => from_env,
        Err(_) => EnvFilter::try_new(&config.log)
            .map_err(|e| anyhow::anyhow!("log = {:?}: {e}", config.log))?,
    };
    let logging = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in the journal, a pipe or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_filter_reloading();
    let log_filter = logging.reload_handle();
    logging.init();

    let server = Server::start_from(&config, text.as_deref()).await?;
    let source_args = args.clone();
    server
        .control()
        .set_source(Arc::new(move || load(&source_args)));
    server.control().set_log(Arc::new(move |level: &str| {
        log_filter
            .reload(EnvFilter::try_new(level)?)
            .map_err(anyhow::Error::from)
    }));
    // Tests and scripts read this line to learn the port.
    println!("komoku listening on {}", server.local_addr);
    if let Some(tcp) = server.tcp_addr {
        // Informational: a reader that took the first line and went away is no error.
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "komoku tcp listening on {tcp}");
    }
    let stopped = server.shutdown_token();
    let mut hangups = hangup_signals();
    loop {
        tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!("signal received; shutting down");
                break;
            }
            _ = stopped.cancelled() => {
                tracing::error!("server stopped itself");
                break;
            }
            Some(()) = hangups.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // The outcome is logged by the reload itself.
                let _ = server.control().reload().await;
            }
        }
    }
    let fatal = stopped.is_cancelled();
    server.shutdown().await?;
    if fatal {
        anyhow::bail!("stopped after a storage failure");
    }
    Ok(())
}

/// SIGHUP, as a stream (never yields where there are no signals).
fn hangup_signals() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already waiting covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// `komoku reload`: the `reload` request to the local server, its answer printed.
async fn reload(
    args: &Args,
    url: Option<String>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let url = match url.or_else(|| std::env::var("KOMOKU_URL").ok()) {
        Some(url) => url,
        None => {
            let (config, _) = load(args)?;
            let mut listen = config.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("ws://{listen}/v2")
        }
    };
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("KOMOKU_TOKEN").ok(),
    };
    let mut request = url.as_str().into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("cannot reach the server at {url}"))?;
    ws.send(Message::text(r#"{"reload": {}}"#)).await?;
    let answer = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let json: serde_json::Value = serde_json::from_str(text.as_str())?;
                if json.get("pub").is_none() {
                    break json;
                }
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("the server closed the connection without an answer"),
        }
    };
    let _ = ws.close(None).await;
    // v2 answers {"result": ...} or {"error": ..., "message": ...}; /v1 URLs answer bare.
    if let Some(error) = answer.get("error") {
        let message = answer.get("message").and_then(|m| m.as_str()).unwrap_or("");
        anyhow::bail!("reload refused: {error} {message}");
    }
    let result = answer.get("result").unwrap_or(&answer);
    say(&format!("{}\n", serde_json::to_string_pretty(result)?))
}

fn run_tool(tool: Tool, args: &Args, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    match tool {
        Tool::Remote(command) => {
            // The message alone on stderr (the server's code first), status 1: no backtrace
            // for a refused value.
            if let Err(e) = runtime.block_on(crate::remote::run(command)) {
                eprintln!("komoku: {e:#}");
                std::process::exit(1);
            }
        }
        Tool::Reload { url, token_file } => {
            runtime.block_on(reload(args, url, token_file))?;
        }
        Tool::HashToken { token } => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!token.is_empty(), "empty token");
            say(&format!("hash = \"{}\"\n", crate::auth::hash_token(&token)))?;
        }
        Tool::NewToken => {
            let token = crate::auth::new_token()?;
            say(&format!(
                "token: {token}\nhash = \"{}\"\n",
                crate::auth::hash_token(&token)
            ))?;
        }
        Tool::CheckConfig { file } => {
            let Some(path) = file.or_else(|| args.config.clone()) else {
                anyhow::bail!("check-config needs a file: komoku check-config FILE");
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            check_config(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            say("ok\n")?;
        }
    }
    Ok(())
}

/// `komoku --version`: what this binary is, and what it serves. The built-in types are
/// loaded (compiled) to ask each its name and version, as the server would.
fn version() -> anyhow::Result<()> {
    // Only the built-in types: the plugins directory is not read.
    crate::plugins::cache::set_dir(crate::Config::default().cache_dir());
    let registry = crate::plugins::Registry::new(
        Path::new("plugins"),
        None,
        crate::plugins::Limits::default(),
    );
    registry.load_builtin()?;
    let types: Vec<String> = registry
        .all()
        .iter()
        .map(|p| format!("{} {}", p.info.name, p.info.version))
        .collect();
    // One write, once everything is known (a reader like `head -1` may go away early).
    say(&format!(
        "komoku {}\ncommit {}\nwit komoku:types@{}\nbuilt-in types: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("KOMOKU_GIT_COMMIT"),
        env!("KOMOKU_WIT_VERSION"),
        types.join(", ")
    ))
}

/// Writes `text` to stdout in one write. A reader that went away (`komoku new-token | head
/// -1`) is not an error: what it wanted was written, and `println!` would panic instead.
fn say(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The checks a start makes on a config, in its order, without opening anything but the
/// TLS files: TOML into [`Config`] (syntax, unknown keys, types), [`Config::check`], the
/// tokens and TLS acceptor ([`crate::live::Live::from_config`]), the default retention
/// policy. An error names the line: TOML errors carry it; for the checks after parsing,
/// the line of the offending key is looked up in `text`.
pub fn check_config(text: &str) -> anyhow::Result<Config> {
    let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let at = |path: &[Seg], e: anyhow::Error| match line_of(text, path) {
        Some(line) => anyhow::anyhow!("line {line}: {}: {e:#}", path_name(path)),
        None => anyhow::anyhow!("{}: {e:#}", path_name(path)),
    };
    if let Err(e) = config.check() {
        let key = if !config.listen.ip().is_loopback() {
            "listen"
        } else if config.v2_listen.is_some_and(|a| !a.ip().is_loopback()) {
            "v2_listen"
        } else {
            "tcp_listen"
        };
        let key = if e.to_string().starts_with("log =") {
            "log"
        } else {
            key
        };
        return Err(at(&[Seg::Key(key)], e));
    }
    if let Err(e) = crate::live::Live::from_config(&config) {
        return Err(match crate::auth::Auth::from_config(&config.auth) {
            Err(_) => at(&auth_culprit(&config.auth), e),
            Ok(_) if e.to_string().starts_with("tls key") => {
                at(&[Seg::Key("tls"), Seg::Key("key")], e)
            }
            Ok(_) => at(&[Seg::Key("tls"), Seg::Key("cert")], e),
        });
    }
    if let Err(e) = config.retention.policy() {
        let raw_alone = crate::retention::PolicySpec {
            raw: config.retention.raw.clone(),
            tiers: Vec::new(),
        };
        let key = if raw_alone.policy().is_ok() {
            "tiers"
        } else {
            "raw"
        };
        return Err(at(&[Seg::Key("retention"), Seg::Key(key)], e.into()));
    }
    Ok(config)
}

/// The key of `[auth]` that [`crate::auth::Auth::from_config`] refuses: the hash of the
/// first token whose hash is malformed, else the name of the first token named twice (its
/// second use).
fn auth_culprit(auth: &crate::auth::AuthConfig) -> Vec<Seg<'static>> {
    let alone = |t: &crate::auth::TokenConfig| crate::auth::AuthConfig {
        enabled: false,
        tokens: vec![t.clone()],
    };
    if let Some(i) = auth
        .tokens
        .iter()
        .position(|t| crate::auth::Auth::from_config(&alone(t)).is_err())
    {
        return vec![
            Seg::Key("auth"),
            Seg::Key("tokens"),
            Seg::Index(i),
            Seg::Key("hash"),
        ];
    }
    let twice = auth
        .tokens
        .iter()
        .enumerate()
        .position(|(i, t)| auth.tokens[..i].iter().any(|o| o.name == t.name));
    match twice {
        Some(i) => vec![
            Seg::Key("auth"),
            Seg::Key("tokens"),
            Seg::Index(i),
            Seg::Key("name"),
        ],
        None => vec![Seg::Key("auth")],
    }
}

/// One step of a path into a TOML document.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `auth.tokens[1].hash`.
fn path_name(path: &[Seg]) -> String {
    let mut name = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if name.is_empty() => name.push_str(k),
            Seg::Key(k) => {
                name.push('.');
                name.push_str(k);
            }
            Seg::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// The line (from 1) where the last key of `path` is written in `text`, if it is.
fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut value: Option<&DeValue> = None;
    let mut start = None;
    for seg in path {
        match (seg, value) {
            (Seg::Key(k), None | Some(DeValue::Table(_))) => {
                if let Some(DeValue::Table(t)) = value {
                    table = t;
                }
                let (key, v) = table.iter().find(|(key, _)| key.get_ref().as_ref() == *k)?;
                start = Some(key.span().start);
                value = Some(v.get_ref());
            }
            (Seg::Index(i), Some(DeValue::Array(items))) => {
                value = Some(items.get(*i)?.get_ref());
            }
            _ => return None,
        }
    }
    Some(text.get(..start?)?.matches('\n').count() + 1)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    ctrl_c.await.ok();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `check_config` gives for `text` (empty when it passes).
    fn refusal(text: &str) -> String {
        check_config(text)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    }

    const HASH: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn check_config_passes_the_example_and_the_packaged_config() -> anyhow::Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["komoku.example.toml", "packaging/komoku.toml"] {
            check_config(&std::fs::read_to_string(root.join(file))?)?;
        }
        Ok(())
    }

    #[test]
    fn the_packaged_config_is_the_example_with_system_paths() -> anyhow::Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = std::fs::read_to_string(root.join("komoku.example.toml"))?;
        let packaged = std::fs::read_to_string(root.join("packaging/komoku.toml"))?;
        let expected = example
            .replace(
                "# Run with: komoku --config komoku.example.toml",
                "# Installed by the komoku package; the service runs\n# komoku --config /etc/komoku/komoku.toml. Check edits with\n# `komoku check-config /etc/komoku/komoku.toml`, apply them with\n# `systemctl reload komoku` (or restart, for settings a reload cannot change).",
            )
            .replace("data_dir = \"data\"", "data_dir = \"/var/lib/komoku\"")
            .replace(
                "plugins_dir = \"plugins\"",
                "plugins_dir = \"/var/lib/komoku/plugins\"",
            )
            .replace(
                "# cache_dir = \"/home/me/.cache/komoku\"",
                "cache_dir = \"/var/cache/komoku\"",
            );
        assert_eq!(
            packaged, expected,
            "packaging/komoku.toml drifted from komoku.example.toml: copy the example and change only the header and the three paths"
        );
        let config = check_config(&packaged)?;
        assert!(config.listen.ip().is_loopback());
        assert!(!config.auth.enabled);
        Ok(())
    }

    #[test]
    fn check_config_names_the_line_of_a_toml_syntax_error() {
        let message = refusal("log = \"info\"\nlisten = \"127.0.0.1:7373\n");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn check_config_refuses_an_unknown_key() {
        let message = refusal("log = \"info\"\n\nlistn = \"127.0.0.1:7373\"\n");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("unknown field `listn`"), "{message}");
    }

    #[test]
    fn check_config_refuses_a_wrong_type() {
        let message = refusal("max_connections = \"many\"\n");
        assert!(message.contains("line 1"), "{message}");
        let message = refusal("\n\nlisten = \"localhost\"\n");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn check_config_refuses_a_bad_token_hash() {
        let text = format!(
            "[auth]\nenabled = true\n\n[[auth.tokens]]\nname = \"a\"\nhash = \"{HASH}\"\n\n[[auth.tokens]]\nname = \"b\"\nhash = \"sha256:1234\"\n"
        );
        let message = refusal(&text);
        assert!(
            message.starts_with("line 10: auth.tokens[1].hash:"),
            "{message}"
        );
        assert!(message.contains("\"b\""), "{message}");
    }

    #[test]
    fn check_config_refuses_a_token_name_used_twice() {
        let text = format!(
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"phone\"\nhash = \"{HASH}\"\n[[auth.tokens]]\nname = \"phone\"\nhash = \"{HASH}\"\n"
        );
        let message = refusal(&text);
        assert!(
            message.starts_with("line 7: auth.tokens[1].name:"),
            "{message}"
        );
        assert!(message.contains("used twice"), "{message}");
    }

    #[test]
    fn check_config_refuses_an_open_listener_without_auth() {
        let message = refusal("log = \"info\"\nlisten = \"0.0.0.0:7373\"\n");
        assert!(message.starts_with("line 2: listen:"), "{message}");
        assert!(message.contains("without authentication"), "{message}");
        let message = refusal("\nv2_listen = \"192.168.1.2:7274\"\n");
        assert!(message.starts_with("line 2: v2_listen:"), "{message}");
    }

    #[test]
    fn check_config_refuses_a_bad_retention_policy() {
        let message = refusal("[retention]\nraw = \"7d\"\ntiers = [[\"1H\", \"2y\"], [\"7M\"]]\n");
        assert!(message.starts_with("line 3: retention.tiers:"), "{message}");
        let message = refusal("[retention]\nraw = \"seven days\"\n");
        assert!(message.starts_with("line 2: retention.raw:"), "{message}");
    }

    #[test]
    fn check_config_refuses_a_missing_tls_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("cert.pem");
        let text = format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            dir.path().join("key.pem").display().to_string()
        );
        let message = refusal(&text);
        assert!(message.starts_with("line 2: tls.cert:"), "{message}");
        assert!(message.contains("cert.pem"), "{message}");
        Ok(())
    }

    #[test]
    fn check_config_passes_a_good_file_with_auth() -> anyhow::Result<()> {
        let text = format!(
            "listen = \"0.0.0.0:7373\"\n[auth]\nenabled = true\n[[auth.tokens]]\nname = \"a\"\nhash = \"{HASH}\"\nread = [\"*\"]\n"
        );
        check_config(&text)?;
        Ok(())
    }
}
