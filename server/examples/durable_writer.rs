//! A native client on a durable client file, for the `kill -9` test of `server/tests/durable.rs`.
//!
//! `durable_writer --url URL --token TOKEN --file PATH --first F --items N` opens the client file
//! PATH, then for each K in F..F+N makes one write that sets `Item` K (`n` = K) and ingests
//! `Reading` K, and prints `written K` once that write returned (it is durable then). After the last it prints
//! `done` and keeps syncing until its standard input closes or it is killed.

// A test driver prints its progress; the clippy bans are for eddy-core.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use eddy_core::changeset::Path as FieldPath;
use eddy_core::sim::sim_schema;
use eddy_core::value::{Document, PrimaryKey, Value};
use eddy_server::client::Client;
use tokio::io::AsyncBufReadExt;

/// Writes to a durable client file, reporting each durable write.
#[derive(Debug, Parser)]
struct Args {
    /// The sync URL (`ws://host:port/api/sync`).
    #[arg(long)]
    url: String,
    /// An access token of the file's user.
    #[arg(long)]
    token: String,
    /// The client file.
    #[arg(long)]
    file: PathBuf,
    /// The first key.
    #[arg(long, default_value_t = 1)]
    first: i64,
    /// How many writes to make.
    #[arg(long, default_value_t = 100)]
    items: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::open(&args.file, &args.url, &args.token, sim_schema())?;
    let mut out = std::io::stdout();
    for key in args.first..args.first.saturating_add(args.items) {
        client.write(|tx| {
            let pk = PrimaryKey::Int(key);
            tx.create("Item", pk.clone())?;
            tx.set(FieldPath::field("Item", pk.clone(), "n"), Value::Int(key))?;
            let mut reading = Document::new();
            reading.insert("value".into(), Value::Int(key));
            reading.insert("samples".into(), Value::List(Default::default()));
            tx.ingest("Reading", pk, reading)
        })?;
        writeln!(out, "written {key}")?;
        out.flush()?;
    }
    writeln!(out, "done")?;
    out.flush()?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while stdin.next_line().await?.is_some() {}
    Ok(())
}
