//! The `eddy` binary: `eddy serve [--config app.toml] --listen 127.0.0.1:8080 --data-dir
//! ./eddy-data` runs the server; `eddy export --data-dir DIR` prints its documents as EJSON lines.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy_server::admin::export;
use eddy_server::config::FileConfig;
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
        /// An app config file (TOML; see app.example.toml); the flags below override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The address to listen on (port 0 picks a free port; the bound address is printed)
        /// [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where the database and the JWT secret live [default: ./eddy-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A schema JSON file to enforce; without one the server runs in development mode.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// The lifetime of access tokens, in seconds [default: 1800].
        #[arg(long)]
        access_token_ttl_secs: Option<u64>,
        /// The key for /api/admin/* (generated and printed when absent).
        #[arg(long, env = "EDDY_ADMIN_KEY")]
        admin_key: Option<String>,
        /// The built dev console, served at /console [default: console/dist].
        #[arg(long)]
        console_dir: Option<PathBuf>,
        /// Static files to serve at / (the demo page) [default: ./www when it exists].
        #[arg(long)]
        www_dir: Option<PathBuf>,
        /// The built eddy-sync package to serve at /pkg/ [default: ./wasm/pkg when it exists].
        #[arg(long)]
        pkg_dir: Option<PathBuf>,
    },
    /// Prints every document of a data directory as JSON lines ({"collection", "document"} in
    /// relaxed EJSON), reading the database directly; works while the server is stopped.
    Export {
        /// The data directory of `eddy serve`.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
    },
}

/// The flags of `eddy serve`.
struct ServeFlags {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    schema: Option<PathBuf>,
    access_token_ttl_secs: Option<u64>,
    admin_key: Option<String>,
    console_dir: Option<PathBuf>,
    www_dir: Option<PathBuf>,
    pkg_dir: Option<PathBuf>,
}

/// The directory given, or `default` when it exists.
fn static_dir(given: Option<PathBuf>, default: &str) -> Option<PathBuf> {
    given.or_else(|| Some(PathBuf::from(default)).filter(|p| p.is_dir()))
}

/// The server config and address from the config file (if any) overridden by the flags.
fn resolve(flags: ServeFlags) -> anyhow::Result<(Config, SocketAddr, Option<String>)> {
    let file = match &flags.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let schema_from_flag = match &flags.schema {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the schema \"{}\"", path.display()))?;
            Some(
                eddy_core::schema_json::schema_from_json(&text).map_err(|e| {
                    anyhow::anyhow!("the schema \"{}\" is not valid: {e}", path.display())
                })?,
            )
        }
        None => None,
    };
    let data_dir = flags
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./eddy-data"));
    let mut config = Config::new(data_dir);
    config.schema = schema_from_flag.or(file.schema);
    config.development_mode = file.development_mode.unwrap_or(config.schema.is_none());
    config.roles = file.roles;
    let ttl = flags
        .access_token_ttl_secs
        .or(file.access_token_ttl_secs)
        .unwrap_or(1800);
    if ttl == 0 {
        anyhow::bail!("--access-token-ttl-secs 0 makes every token expired; use at least 1");
    }
    config.access_token_ttl_ms = ttl.saturating_mul(1000);
    config.admin_key = flags.admin_key;
    if let Some(dir) = flags.console_dir {
        config.console_dir = dir;
    }
    config.auth = file.auth;
    config.limits = file.limits;
    config.www_dir = static_dir(flags.www_dir, "www");
    config.pkg_dir = static_dir(flags.pkg_dir, "wasm/pkg");
    let listen = flags
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    Ok((config, listen, file.app_id))
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
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            data_dir,
            schema,
            access_token_ttl_secs,
            admin_key,
            console_dir,
            www_dir,
            pkg_dir,
        } => {
            serve(ServeFlags {
                config,
                listen,
                data_dir,
                schema,
                access_token_ttl_secs,
                admin_key,
                console_dir,
                www_dir,
                pkg_dir,
            })
            .await
        }
        Command::Export {
            data_dir,
            collection,
        } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = export(&data_dir, collection.as_deref(), &mut out)?;
            out.flush()?;
            tracing::info!(documents = written, "exported");
            Ok(())
        }
    }
}

async fn serve(flags: ServeFlags) -> anyhow::Result<()> {
    let (config, listen, app_id) = resolve(flags)?;
    let state = AppState::open(config).context("cannot open the data directory")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    if let Some(app_id) = app_id {
        tracing::info!(%app_id, "serving app");
    }
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
