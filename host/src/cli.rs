//! The command line: flags, config file, logging, signals. The `komoku` binary is a call to
//! [`main`]; the end-to-end tests build the same call into their own binary to kill it.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{DurabilityConfig, DurabilityName};
use crate::{Config, Server};
use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Komoku: a key-value database for typed home and server data.
///
/// With no arguments it serves ws://127.0.0.1:7373 (v1 at `/`, v2 at `/v2`) with its data in
/// ./data and the built-in key types plus any plugins in ./plugins.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    tool: Option<Tool>,
    /// TOML config file; flags given here override it.
    #[arg(long, short)]
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
#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// Prints the config line `hash = "sha256:..."` for a token. Reads the token from
    /// standard input when not given (keeps it out of the shell history).
    HashToken { token: Option<String> },
    /// Makes a new random token and prints it with its config line.
    NewToken,
}

/// Runs the server as the command line says, until SIGINT/SIGTERM.
pub fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(tool) = args.tool.take() {
        return run_tool(tool);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.v2_listen.is_some() {
        config.v2_listen = args.v2_listen;
    }
    if let Some(data) = args.data {
        config.data_dir = data;
    }
    if let Some(plugins) = args.plugins {
        config.plugins_dir = plugins;
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

    let server = Server::start(&config).await?;
    // Tests and scripts read this line to learn the port.
    println!("komoku listening on {}", server.local_addr);
    let stopped = server.shutdown_token();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("signal received; shutting down"),
        _ = stopped.cancelled() => tracing::error!("server stopped itself"),
    }
    let fatal = stopped.is_cancelled();
    server.shutdown().await?;
    if fatal {
        anyhow::bail!("stopped after a storage failure");
    }
    Ok(())
}

fn run_tool(tool: Tool) -> anyhow::Result<()> {
    match tool {
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
