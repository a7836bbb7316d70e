//! The `eddy` binary: `eddy serve --listen 127.0.0.1:8080 --data-dir ./eddy-data`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy_server::{run, AppState, Config};
use tracing_subscriber::EnvFilter;

/// Eddy: offline-first sync.
#[derive(Debug, Parser)]
#[command(name = "eddy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves sync, auth and health over HTTP until SIGINT or SIGTERM.
    Serve {
        /// The address to listen on (port 0 picks a free port; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the database and the JWT secret live.
        #[arg(long, default_value = "./eddy-data")]
        data_dir: PathBuf,
        /// A schema JSON file to enforce; without it the server runs in development mode.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// The lifetime of access tokens, in seconds.
        #[arg(long, default_value_t = 1800)]
        access_token_ttl_secs: u64,
        /// The key for /api/admin/* (generated and printed when absent).
        #[arg(long, env = "EDDY_ADMIN_KEY")]
        admin_key: Option<String>,
    },
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve {
        listen,
        data_dir,
        schema,
        access_token_ttl_secs,
        admin_key,
    } = Cli::parse().command;
    let mut config = Config::new(data_dir);
    config.access_token_ttl_ms = access_token_ttl_secs.saturating_mul(1000);
    config.admin_key = admin_key;
    if let Some(path) = schema {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the schema \"{}\"", path.display()))?;
        let schema = eddy_core::schema_json::schema_from_json(&text)
            .map_err(|e| anyhow::anyhow!("the schema \"{}\" is not valid: {e}", path.display()))?;
        config.schema = Some(schema);
    }
    let state = AppState::open(config).context("cannot open the data directory")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "eddy listening on http://{address}")?;
        writeln!(out, "admin key: {}", state.admin_key())?;
        out.flush()?;
    }
    run(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
