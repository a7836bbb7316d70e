//! The native client the console's end-to-end browser test drives (tests/browser/).
//!
//! `console_writer schema PATH` writes the schema the test server enforces (the simulation's).
//! `console_writer write --addr HOST:PORT --items N` signs in anonymously, connects a native
//! client, prints `ident <client file ident>` once bound, writes `Item` 1..=N (`n` = key), prints
//! `acknowledged <ms since the epoch>` when the server has integrated all of it, then keeps the
//! session open until its standard input closes. A line `ingest` on standard input starts a
//! steady Data Ingest of `Reading`s (20 every 50 ms), so the console's ingest figures move.
//! `console_writer ingest --addr HOST:PORT --objects N --file PATH` ingests N `Reading`s (keys
//! from 1,000,000,000 up, apart from the steady ones) into a new client file at PATH while
//! offline, so that the device reports a queue when it connects; then opens the file against the
//! server as a new user, prints `ident <client file ident>`, prints `stored <ms since the epoch>`
//! once the server has acknowledged them, and keeps the session open until its standard input
//! closes.

// A test driver prints its progress; the clippy bans are for eddy-core.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use eddy_core::changeset::Path as FieldPath;
use eddy_core::sim::sim_schema;
use eddy_core::value::{PrimaryKey, Value};
use eddy_server::client::Client;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// How long any one step may take.
const WAIT: Duration = Duration::from_secs(30);

/// Drives a native client for the console's browser test.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes the schema JSON the test server enforces.
    Schema {
        /// Where to write it.
        path: PathBuf,
    },
    /// Connects, writes and waits for the acknowledgement.
    Write {
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// How many objects to write.
        #[arg(long, default_value_t = 1)]
        items: i64,
    },
    /// Connects, ingests and waits for the acknowledgement.
    Ingest {
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// How many readings to ingest.
        #[arg(long, default_value_t = 100)]
        objects: i64,
        /// The client file to create (it must not exist).
        #[arg(long)]
        file: PathBuf,
    },
}

/// Where the readings of `console_writer ingest` start, clear of the steady ingest's keys.
const FIRST_INGEST_KEY: i64 = 1_000_000_000;
/// A server address nothing listens on: the client stays offline.
const NOWHERE: &str = "ws://127.0.0.1:1/api/sync";

/// `POST /api/auth/anonymous` over a minimal HTTP/1.1 exchange: a fresh user's access token.
async fn anonymous_token(addr: SocketAddr) -> anyhow::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "POST /api/auth/anonymous HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .context("anonymous sign-in did not answer in time")?
        .context("anonymous sign-in failed")?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value = serde_json::from_str(body)
        .with_context(|| format!("anonymous sign-in answered \"{text}\""))?;
    json["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no access token in {json}"))
}

async fn write(addr: SocketAddr, items: i64) -> anyhow::Result<()> {
    if items < 1 {
        bail!("--items {items} writes nothing; use at least 1");
    }
    let token = anonymous_token(addr).await?;
    let client = Client::connect(&format!("ws://{addr}/api/sync"), &token, sim_schema())?;
    client.wait_for_download(WAIT).await?;
    let mut out = std::io::stdout();
    writeln!(out, "ident {}", client.client_file_ident()?)?;
    out.flush()?;
    for key in 1..=items {
        client.write(|tx| {
            let pk = PrimaryKey::Int(key);
            tx.create("Item", pk.clone())?;
            tx.set(FieldPath::field("Item", pk, "n"), Value::Int(key))
        })?;
    }
    client.wait_for_upload(WAIT).await?;
    writeln!(out, "acknowledged {}", eddy_server::now_ms())?;
    out.flush()?;
    let client = std::sync::Arc::new(client);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut ingesting = None;
    while let Some(line) = stdin.next_line().await? {
        if line.trim() == "ingest" && ingesting.is_none() {
            ingesting = Some(tokio::spawn(ingest_steadily(std::sync::Arc::clone(
                &client,
            ))));
        }
    }
    if let Some(task) = ingesting {
        task.abort();
    }
    Ok(())
}

async fn ingest(addr: SocketAddr, objects: i64, file: PathBuf) -> anyhow::Result<()> {
    if objects < 1 {
        bail!("--objects {objects} ingests nothing; use at least 1");
    }
    if file.exists() {
        bail!("\"{}\" exists; name a new client file", file.display());
    }
    // Offline first: the queue is there when the device connects, so it reports it.
    let offline = Client::open(&file, NOWHERE, "offline", sim_schema())?;
    offline.write(|tx| {
        (FIRST_INGEST_KEY..FIRST_INGEST_KEY + objects).try_for_each(|k| {
            let mut doc = eddy_core::value::Document::new();
            doc.insert("value".into(), Value::Int(k));
            tx.ingest("Reading", PrimaryKey::Int(k), doc)
        })
    })?;
    drop(offline);
    let token = anonymous_token(addr).await?;
    let client = Client::open(
        &file,
        &format!("ws://{addr}/api/sync"),
        &token,
        sim_schema(),
    )?;
    client.wait_for_download(WAIT).await?;
    let mut out = std::io::stdout();
    writeln!(out, "ident {}", client.client_file_ident()?)?;
    out.flush()?;
    client.wait_for_upload(WAIT).await?;
    writeln!(out, "stored {}", eddy_server::now_ms())?;
    out.flush()?;
    // Open until told to stop, so the device stays connected while the page is checked.
    tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await?;
    Ok(())
}

/// Ingests 20 readings every 50 ms until stopped.
async fn ingest_steadily(client: std::sync::Arc<Client>) -> anyhow::Result<()> {
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    let mut key = 0;
    loop {
        interval.tick().await;
        client.write(|tx| {
            (key..key + 20).try_for_each(|k| {
                let mut doc = eddy_core::value::Document::new();
                doc.insert("value".into(), Value::Int(k));
                tx.ingest("Reading", PrimaryKey::Int(k), doc)
            })
        })?;
        key += 20;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Schema { path } => std::fs::write(
            &path,
            eddy_core::schema_json::schema_to_json(&sim_schema()).to_string(),
        )
        .with_context(|| format!("cannot write \"{}\"", path.display())),
        Command::Write { addr, items } => write(addr, items).await,
        Command::Ingest {
            addr,
            objects,
            file,
        } => ingest(addr, objects, file).await,
    }
}
