//! The command line: flags, config file, logging, signals. The `komoku` binary is a call to
//! [`main`]; the end-to-end tests build the same call into their own binary to kill it.

use std::net::SocketAddr;
use std::path::PathBuf;
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
#[command(version)]
struct Args {
    #[command(subcommand)]
    tool: Option<Tool>,
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
}

/// Runs the server as the command line says, until SIGINT/SIGTERM; SIGHUP reloads the
/// config.
pub fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
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
    println!("{}", serde_json::to_string_pretty(result)?);
    Ok(())
}

fn run_tool(tool: Tool, args: &Args, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    match tool {
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
            println!("hash = \"{}\"", crate::auth::hash_token(&token));
        }
        Tool::NewToken => {
            let token = crate::auth::new_token()?;
            println!("token: {token}");
            println!("hash = \"{}\"", crate::auth::hash_token(&token));
        }
    }
    Ok(())
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
