//! Data Ingest benchmark: one native client sends small (~100-byte) sensor readings to a real
//! `eddy serve` until the server has made them durable, first into an asymmetric collection
//! (Data Ingest), then the same readings into an ordinary synced collection, in the same run.
//! Prints objects per second for both and their ratio.
//!
//! `cargo run --release -p eddy-server --example ingest -- --objects 100000`

// A benchmark reads the monotonic clock and prints its results; the clippy bans are for eddy-core.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use eddy_core::changeset::Path as FieldPath;
use eddy_core::schema::{
    CollectionKind, CollectionSchema, PrimaryKeyType, Property, ScalarType, Schema,
};
use eddy_core::value::{Document, PrimaryKey, Value};
use eddy_server::client::Client;
use support::{eddy_binary, Server};

/// Compares Data Ingest with the bidirectional path for the same objects.
#[derive(Debug, Parser)]
struct Args {
    /// How many readings each path sends.
    #[arg(long, default_value_t = 100_000)]
    objects: i64,
    /// How many readings one local commit holds.
    #[arg(long, default_value_t = 100)]
    batch: i64,
    /// Runs only one path (`ingest` or `synced`), for profiling it on its own.
    #[arg(long, value_parser = ["ingest", "synced"])]
    only: Option<String>,
}

const INGESTED: &str = "Reading";
const SYNCED: &str = "SyncedReading";

fn schema() -> Schema {
    let collection = |name: &str, kind| CollectionSchema {
        kind,
        ..CollectionSchema::top_level(name, PrimaryKeyType::Int)
            .with(Property::new("sensor", ScalarType::String))
            .with(Property::new("celsius", ScalarType::Double))
            .with(Property::new("humidity", ScalarType::Double))
            .with(Property::new("at", ScalarType::Int))
    };
    let mut schema = Schema::default();
    schema.insert(collection(INGESTED, CollectionKind::Asymmetric));
    schema.insert(collection(SYNCED, CollectionKind::TopLevel));
    schema
}

fn reading(n: i64) -> Document {
    let mut doc = Document::new();
    doc.insert(
        "sensor".into(),
        Value::String(format!("greenhouse-{:03}", n % 97)),
    );
    doc.insert(
        "celsius".into(),
        Value::Double(18.0 + (n % 100) as f64 / 10.0),
    );
    doc.insert(
        "humidity".into(),
        Value::Double(0.4 + (n % 50) as f64 / 100.0),
    );
    doc.insert("at".into(), Value::Int(1_800_000_000_000 + n));
    doc
}

/// Sends `args.objects` readings through `write_one` and returns objects per second until the
/// server acknowledged (made durable) the last of them.
async fn run(
    client: &Client,
    args: &Args,
    write_one: impl Fn(
        &mut eddy_core::store::WriteTransaction<'_>,
        i64,
    ) -> Result<(), eddy_core::store::ApplyError>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut key = 0;
    while key < args.objects {
        let end = (key + args.batch).min(args.objects);
        client.write(|tx| (key..end).try_for_each(|k| write_one(tx, k)))?;
        key = end;
        tokio::task::yield_now().await;
    }
    client.wait_for_upload(Duration::from_secs(600)).await?;
    Ok(args.objects as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = eddy_binary()?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let server = Server::start_with(&binary, dir.path(), &schema())?;
    let token = server.anonymous_token().await?;
    let client = Client::connect(&server.sync_url(), &token, schema())?;
    client.wait_for_download(Duration::from_secs(30)).await?;

    let only = args.only.as_deref();
    if only == Some("synced") {
        return synced_path(&client, &args).await.map(drop);
    }
    let ingest = run(&client, &args, |tx, k| {
        tx.ingest(INGESTED, PrimaryKey::Int(k), reading(k))
    })
    .await?;
    println!(
        "ingest: {} readings into asymmetric {INGESTED:?} in commits of {}: {ingest:.0} objects/s until durable",
        args.objects, args.batch
    );
    if only == Some("ingest") {
        return Ok(());
    }
    let synced = synced_path(&client, &args).await?;
    println!(
        "ingest: Data Ingest is {:.2}x the bidirectional path",
        ingest / synced
    );
    Ok(())
}

/// The same readings through the synced collection; returns objects per second.
async fn synced_path(client: &Client, args: &Args) -> anyhow::Result<f64> {
    let synced = run(client, args, |tx, k| {
        let key = PrimaryKey::Int(k);
        tx.create(SYNCED, key.clone())?;
        for (field, value) in reading(k) {
            tx.set(FieldPath::field(SYNCED, key.clone(), field), value)?;
        }
        Ok(())
    })
    .await?;
    println!(
        "ingest: the same readings into synced {SYNCED:?}: {synced:.0} objects/s until durable"
    );
    Ok(synced)
}
