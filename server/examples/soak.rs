//! Crash soak for the `eddy` server: each round starts the release binary on one data directory,
//! lets a client write continuously, `kill -9`s the server after a random number of
//! acknowledgements, restarts it and checks that every changeset ever acknowledged is still in
//! the history and reaches a fresh client. Exits non-zero on any loss.
//!
//! `cargo run --release -p eddy-server --example soak -- --rounds 100`

// A soak test prints its progress; the clippy bans are for eddy-core.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use eddy_core::sim::sim_schema;
use eddy_server::client::Client;
use rand::{Rng, SeedableRng};
use support::{eddy_binary, set_item, Server, WAIT};

/// Kills the server with SIGKILL under write load, over and over, and checks for lost writes.
#[derive(Debug, Parser)]
struct Args {
    /// How many kill-and-restart rounds to run.
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// The most acknowledgements a round waits for before killing the server.
    #[arg(long, default_value_t = 200)]
    max_acks: u64,
    /// Seed for the kill points (random when absent; printed so a run can be replayed).
    #[arg(long)]
    seed: Option<u64>,
}

/// Object keys of round `r` start at `r * KEYS_PER_ROUND`, so every write makes a new object.
const KEYS_PER_ROUND: i64 = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.max_acks == 0 {
        bail!("--max-acks 0 leaves nothing to check; use at least 1");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    println!("soak: seed {seed} (replay with --seed {seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let binary = eddy_binary()?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    // Every client file's highest acknowledged client version, over all rounds.
    let mut acknowledged = BTreeMap::<u64, u64>::new();
    let mut lost = 0u64;
    let mut passed = 0u64;
    for (round, first_key) in (1..=args.rounds).zip((1i64..).map(|r| r * KEYS_PER_ROUND)) {
        let kill_after = rng.random_range(1..=args.max_acks);
        let (ident, acked) = write_until_killed(&binary, dir.path(), first_key, kill_after).await?;
        acknowledged.insert(ident, acked);
        let missing = check(&binary, dir.path(), &acknowledged).await?;
        let total: u64 = acknowledged.values().sum();
        if missing == 0 {
            passed += 1;
        } else {
            lost = lost.saturating_add(missing);
        }
        println!(
            "soak: round {round}: killed after {acked} acknowledged changesets (target {kill_after}); {total} acknowledged in all, {missing} missing"
        );
    }
    println!(
        "soak: {passed}/{} rounds, {lost} acknowledged changesets lost",
        args.rounds
    );
    if lost > 0 || passed != args.rounds {
        bail!("acknowledged changesets were lost (seed {seed})");
    }
    Ok(())
}

/// Starts the server, writes a new object per changeset until at least `kill_after` changesets
/// are acknowledged, kills the server with SIGKILL and returns the client file ident and the
/// highest client version the server acknowledged.
async fn write_until_killed(
    binary: &Path,
    dir: &Path,
    first_key: i64,
    kill_after: u64,
) -> anyhow::Result<(u64, u64)> {
    let mut server = Server::start(binary, dir)?;
    let token = server.anonymous_token().await?;
    let client = Arc::new(Client::connect(&server.sync_url(), &token, sim_schema())?);
    client.wait_for_download(WAIT).await?;
    let writer = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            for key in first_key.. {
                if client.write(|tx| set_item(tx, key, key)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let mut progress = client.watch_progress();
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.uploaded >= kill_after))
        .await
        .with_context(|| format!("uploads stalled: {:?}", client.progress()))?
        .context("the client stopped")?;
    server.kill9()?;
    writer.abort();
    let ident = client.client_file_ident()?;
    let acked = client.progress().uploaded;
    if ident == 0 {
        bail!("the client acknowledged writes without a client file ident");
    }
    Ok((ident, acked))
}

/// Restarts the server and counts acknowledged changesets that are not in its history, or whose
/// objects a fresh client does not download.
async fn check(
    binary: &Path,
    dir: &Path,
    acknowledged: &BTreeMap<u64, u64>,
) -> anyhow::Result<u64> {
    let server = Server::start(binary, dir)?;
    let summary = server.history().await?;
    let mut missing = 0u64;
    for (ident, acked) in acknowledged {
        let stored = summary["latest_client_versions"][ident.to_string()]
            .as_u64()
            .unwrap_or_default();
        if stored < *acked {
            println!(
                "soak: client file {ident}: the server acknowledged client version {acked} but holds only {stored}"
            );
            missing = missing.saturating_add(acked - stored);
        }
    }
    // Every acknowledged changeset after a file's first (its declared schema) created one
    // object; a fresh client must download them all.
    let total: u64 = acknowledged
        .values()
        .map(|acked| acked.saturating_sub(1))
        .sum();
    let token = server.anonymous_token().await?;
    let fresh = Client::connect(&server.sync_url(), &token, sim_schema())?;
    fresh.wait_for_download(WAIT).await?;
    let objects = u64::try_from(fresh.read(|s| s.len("Item"))?)
        .map_err(|_| anyhow!("more objects than a u64 counts"))?;
    if objects < total {
        println!(
            "soak: a fresh client downloaded {objects} objects for {total} acknowledged changesets"
        );
        missing = missing.max(total - objects);
    }
    Ok(missing)
}
