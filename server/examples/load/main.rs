//! Load benchmark for the `eddy` server: starts the release binary as a child process, connects
//! native clients and prints one summary line per figure — write→visible latency over every
//! (writer, reader) pair, durable integrated changesets per second, and server memory per idle
//! session; with `--floor`, the latency of a raw TCP relay beside it (see `floor.rs`).
//!
//! `cargo run --release -p eddy-server --example load -- --clients 100`

// A benchmark reads the monotonic clock and prints its results; the clippy bans are for eddy-core.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

mod floor;
#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use eddy_core::protocol::{Subscription, SubscriptionSet};
use eddy_core::sim::sim_schema;
use eddy_core::value::{PrimaryKey, Value};
use eddy_server::client::Client;
use support::{eddy_binary, set_item, Server, WAIT};
use tokio::sync::Notify;

/// Measures latency, throughput and idle-session memory of a real `eddy serve`.
#[derive(Debug, Parser)]
struct Args {
    /// How many clients sync at once in the latency and throughput runs.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// How many timestamped writes the latency run makes (writers take turns).
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// How long the throughput run writes, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// How many changesets each client writes before it waits for their acknowledgement.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Instead of batches: how many unacknowledged changesets each client keeps in flight,
    /// writing the next as soon as fewer are (0: write in batches).
    #[arg(long, default_value_t = 0)]
    window: u64,
    /// Idle-session counts to measure server memory at (comma-separated; 0 skips it).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    idle: Vec<usize>,
    /// Objects every client's flexible-sync view holds before the runs (0: the clients subscribe
    /// to everything, so the server keeps no per-object view). With N, a first client creates
    /// N objects and every client subscribes to a query that matches them and every object the
    /// runs write, so each write enters every receiver's view.
    #[arg(long, default_value_t = 0)]
    held: usize,
    /// The `Item` query of every client's subscription with `--held`; it must match the held
    /// objects and every object the runs write (their `n` is at least 0). A query that follows
    /// `link` makes each write recheck the objects that link to the written one.
    #[arg(long, default_value = "n >= 0")]
    query: String,
    /// Also run the latency measurement against the loopback floor: a relay of raw 16-byte
    /// frames over TCP that syncs a file before relaying each, and one that does not.
    #[arg(long)]
    floor: bool,
    /// Run as the floor's relay, appending to this file (how `--floor` starts its child).
    #[arg(long, hide = true)]
    relay_log: Option<PathBuf>,
    /// With `--relay-log`: relay without syncing the file.
    #[arg(long, hide = true)]
    relay_without_sync: bool,
}

/// Primary keys of the latency run's objects start here; throughput objects are the client
/// indices, so the two never collide.
const LATENCY_KEYS: i64 = 1_000_000;
/// How many idle clients connect at once.
const IDLE_WAVE: usize = 250;
/// Primary keys of the objects `--held` creates start here.
const HELD_KEYS: i64 = 2_000_000;
/// How many of those objects one write creates.
const HELD_BATCH: usize = 10_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(log) = &args.relay_log {
        return floor::serve(log, !args.relay_without_sync);
    }
    tokio::runtime::Runtime::new()
        .context("cannot start the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.clients < 2 {
        bail!(
            "--clients {} is too few; latency needs a writer and a reader",
            args.clients
        );
    }
    let binary = eddy_binary()?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut server = Server::start(&binary, dir.path())?;
    let token = server.anonymous_token().await?;
    let clients = connect(&server, &token, args.clients).await?;
    if args.held > 0 {
        hold(&clients, args.held, &args.query).await?;
    }
    latency(&server, &clients, args.writes).await?;
    if args.floor {
        for durable in [true, false] {
            floor_latency(dir.path(), args.clients, args.writes, durable).await?;
        }
    }
    throughput(&server, &clients, args.seconds, args.batch, args.window).await?;
    drop(clients);
    // Nothing is left to flush that the figures depend on.
    server.kill9()?;
    for count in args.idle.into_iter().filter(|c| *c > 0) {
        idle_memory(&binary, count).await?;
    }
    Ok(())
}

/// Connects `count` clients as the user of `token` and waits until each has downloaded
/// everything.
async fn connect(server: &Server, token: &str, count: usize) -> anyhow::Result<Vec<Arc<Client>>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(Arc::new(Client::connect(
            &server.sync_url(),
            token,
            sim_schema(),
        )?));
    }
    for client in &clients {
        client.wait_for_download(WAIT).await?;
    }
    Ok(clients)
}

/// The first client creates `count` objects; then every client subscribes to a query matching
/// them (and every object the runs write) and waits until its view holds them all.
async fn hold(clients: &[Arc<Client>], count: usize, query: &str) -> anyhow::Result<()> {
    let first = clients.first().ok_or_else(|| anyhow!("no clients"))?;
    let keys: Vec<i64> = (HELD_KEYS..).take(count).collect();
    for chunk in keys.chunks(HELD_BATCH) {
        first.write(|tx| chunk.iter().try_for_each(|key| set_item(tx, *key, 0)))?;
    }
    first.wait_for_upload(WAIT).await?;
    let set = SubscriptionSet {
        version: 1,
        subscriptions: vec![Subscription {
            name: "held items".into(),
            collection: "Item".into(),
            query: query.into(),
        }],
    };
    for client in clients {
        client.update_subscriptions(set.clone())?;
    }
    for client in clients {
        client.wait_for_download(WAIT).await?;
        let held = client.read(|s| s.objects("Item").count())?;
        if held < count {
            bail!("a client holds {held} of the {count} objects after subscribing");
        }
    }
    println!("views: {} clients each hold {count} objects", clients.len());
    Ok(())
}

/// Microseconds since `base`, saturating.
fn micros_since(base: Instant) -> i64 {
    i64::try_from(base.elapsed().as_micros()).unwrap_or(i64::MAX)
}

/// The value at quantile `q` of sorted `values`.
fn quantile(values: &[i64], q: f64) -> i64 {
    let last = values.len().saturating_sub(1);
    // Rounding a quantile index into a slice of at most a few million values.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((last as f64) * q).round() as usize;
    values.get(index.min(last)).copied().unwrap_or_default()
}

/// Microseconds as milliseconds with three decimals.
fn ms(us: i64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// The write every watcher is looking for: its key, who wrote it (that client does not report
/// it), and where the readers' samples go. The last reader to report wakes the writer's loop
/// once, instead of once per reader that finishes after it started waiting.
struct Round {
    key: i64,
    writer: usize,
    samples: Mutex<Vec<i64>>,
    left: AtomicUsize,
    done: Notify,
}

impl Round {
    fn report(&self, sample: i64) {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sample);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// The round in progress, shared by the writer's loop and every watcher.
type Current = Arc<Mutex<Option<Arc<Round>>>>;

/// Watches one client for as long as the latency run lasts, as an app's change listener would:
/// woken by each change the client reports (never polling), it looks for the current round's
/// object and, once the object is in the client's store, reports how long after its write
/// timestamp that was, in microseconds. One long-lived task per client, so the measurement adds
/// no task or subscription per write.
async fn watch(client: Arc<Client>, index: usize, current: Current, base: Instant) {
    let mut changes = client.watch_progress();
    let mut reported = None;
    loop {
        changes.borrow_and_update();
        let round = current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(round) = round.filter(|r| r.writer != index && reported != Some(r.key)) {
            let pk = PrimaryKey::Int(round.key);
            let written = client.read(|s| match s.get("Item", &pk).and_then(|d| d.get("n")) {
                Some(Value::Int(at)) => Some(*at),
                _ => None,
            });
            if let Ok(Some(at)) = written {
                reported = Some(round.key);
                round.report(micros_since(base).saturating_sub(at));
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Every reader's sample of the latency rounds, and each write's first and last.
#[derive(Debug)]
struct Latencies {
    readers: usize,
    samples: Vec<i64>,
    firsts: Vec<i64>,
    lasts: Vec<i64>,
}

impl Latencies {
    fn new(writes: usize, readers: usize) -> Self {
        Latencies {
            readers,
            samples: Vec::with_capacity(writes.saturating_mul(readers)),
            firsts: Vec::with_capacity(writes),
            lasts: Vec::with_capacity(writes),
        }
    }

    /// Makes the write of `key` by `writer` the one every reader looks for.
    fn begin(&self, current: &Current, key: i64, writer: usize) -> Arc<Round> {
        let round = Arc::new(Round {
            key,
            writer,
            samples: Mutex::new(Vec::with_capacity(self.readers)),
            left: AtomicUsize::new(self.readers),
            done: Notify::new(),
        });
        *current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&round));
        round
    }

    /// Waits until every reader has reported `round`, and keeps their samples.
    async fn finish(&mut self, round: &Round) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, round.done.notified())
            .await
            .with_context(|| format!("object {} never reached every reader", round.key))?;
        let mut samples = round
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.firsts.extend(samples.iter().min().copied());
        self.lasts.extend(samples.iter().max().copied());
        self.samples.append(&mut samples);
        Ok(())
    }

    /// Prints the quantiles, naming what was measured with `what`.
    fn print(mut self, what: &str) {
        self.samples.sort_unstable();
        self.firsts.sort_unstable();
        self.lasts.sort_unstable();
        println!(
            "{what}, {} clients, {} pairs: p50 {}, p99 {}, max {}",
            self.readers + 1,
            self.samples.len(),
            ms(quantile(&self.samples, 0.5)),
            ms(quantile(&self.samples, 0.99)),
            ms(self.samples.last().copied().unwrap_or_default()),
        );
        // When a write reaches its first and its last reader: the time to the fan-out and its
        // length.
        println!(
            "{what}: first reader p50 {}, last reader p50 {}",
            ms(quantile(&self.firsts, 0.5)),
            ms(quantile(&self.lasts, 0.5)),
        );
    }
}

/// Writers take turns writing one object stamped with the shared clock; every other client
/// records when it sees it.
async fn latency(server: &Server, clients: &[Arc<Client>], writes: usize) -> anyhow::Result<()> {
    let server_cpu = cpu_ms(server.child.id())?;
    let clients_cpu = cpu_ms(std::process::id())?;
    let base = Instant::now();
    let current: Current = Arc::default();
    let watchers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(index, client)| {
            tokio::spawn(watch(Arc::clone(client), index, Arc::clone(&current), base))
        })
        .collect();
    let mut latencies = Latencies::new(writes, clients.len().saturating_sub(1));
    for (round, key) in (0..writes).zip(LATENCY_KEYS..) {
        let writer = round % clients.len();
        let round = latencies.begin(&current, key, writer);
        let client = clients
            .get(writer)
            .ok_or_else(|| anyhow!("no client {writer}"))?;
        client.write(|tx| set_item(tx, key, micros_since(base)))?;
        latencies.finish(&round).await?;
    }
    for watcher in watchers {
        watcher.abort();
    }
    latencies.print("latency write->visible");
    // The latency depends on the machine's load; the CPU each write costs far less.
    print_cpu(
        &format!("cpu per latency write, {} clients", clients.len()),
        cpu_ms(server.child.id())?.saturating_sub(server_cpu),
        cpu_ms(std::process::id())?.saturating_sub(clients_cpu),
        writes,
    );
    Ok(())
}

/// Prints the server's and the clients' CPU milliseconds as microseconds per write.
fn print_cpu(what: &str, server_ms: u64, clients_ms: u64, writes: usize) {
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let per = |cpu: u64| cpu as f64 * 1000.0 / writes.max(1) as f64;
    println!(
        "{what}: server {:.1} us, clients {:.1} us",
        per(server_ms),
        per(clients_ms),
    );
}

/// The latency run against the loopback floor (see `floor.rs`): `clients` raw TCP clients of a
/// relay that syncs a file in `dir` before relaying each write when `durable`.
async fn floor_latency(
    dir: &std::path::Path,
    clients: usize,
    writes: usize,
    durable: bool,
) -> anyhow::Result<()> {
    let relay = floor::Relay::start(dir, durable)?;
    let base = Instant::now();
    let current: Current = Arc::default();
    let (mut writers, readers) = relay.connect(clients, &current, base).await?;
    let relay_cpu = cpu_ms(relay.id())?;
    let clients_cpu = cpu_ms(std::process::id())?;
    let mut latencies = Latencies::new(writes, clients.saturating_sub(1));
    for (round, key) in (0..writes).zip(LATENCY_KEYS..) {
        let writer = round % clients;
        let round = latencies.begin(&current, key, writer);
        let stream = writers
            .get_mut(writer)
            .ok_or_else(|| anyhow!("no client {writer}"))?;
        floor::write(stream, key, base).await?;
        latencies.finish(&round).await?;
    }
    for reader in readers {
        reader.abort();
    }
    let what = if durable {
        "floor write->visible (raw TCP relay, file synced per write)"
    } else {
        "floor write->visible (raw TCP relay, no sync)"
    };
    latencies.print(what);
    print_cpu(
        &format!("{what}, cpu per write, {clients} clients"),
        cpu_ms(relay.id())?.saturating_sub(relay_cpu),
        cpu_ms(std::process::id())?.saturating_sub(clients_cpu),
        writes,
    );
    Ok(())
}

/// Every client writes batches of changesets and waits for their acknowledgement (or, with a
/// `window`, keeps that many unacknowledged in flight), for `seconds`, then waits for the rest;
/// the server's committed history count gives the rate.
async fn throughput(
    server: &Server,
    clients: &[Arc<Client>],
    seconds: u64,
    batch: usize,
    window: u64,
) -> anyhow::Result<()> {
    let before = history_count(server).await?;
    let rss_before = rss_kib(server.child.id())?;
    let server_cpu = cpu_ms(server.child.id())?;
    let clients_cpu = cpu_ms(std::process::id())?;
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = clients
        .iter()
        .zip(0i64..)
        .map(|(client, key)| {
            let client = Arc::clone(client);
            tokio::spawn(async move {
                let mut n = 0i64;
                while Instant::now() < until {
                    if window > 0 {
                        n = n.saturating_add(1);
                        client.write(|tx| set_item(tx, key, n))?;
                        client.wait_for_upload_window(window, WAIT).await?;
                        continue;
                    }
                    for _ in 0..batch {
                        n = n.saturating_add(1);
                        client.write(|tx| set_item(tx, key, n))?;
                    }
                    client.wait_for_upload(WAIT).await?;
                }
                client.wait_for_upload(WAIT).await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_cpu = cpu_ms(server.child.id())?.saturating_sub(server_cpu);
    let clients_cpu = cpu_ms(std::process::id())?.saturating_sub(clients_cpu);
    let rss_after = rss_kib(server.child.id())?;
    let integrated = history_count(server).await?.saturating_sub(before);
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let (rate, per) = (integrated as f64 / elapsed, |cpu: u64| {
        cpu as f64 * 1000.0 / integrated.max(1) as f64
    });
    let pacing = if window > 0 {
        format!("window of {window} in flight")
    } else {
        format!("batches of {batch}")
    };
    println!(
        "throughput, {} clients, {pacing}: {integrated} changesets acknowledged durably in {elapsed:.2} s = {rate:.0} changesets/s",
        clients.len(),
    );
    // What the server keeps per integrated changeset (the history it holds in memory).
    #[allow(clippy::cast_precision_loss)]
    let grown = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / integrated.max(1) as f64;
    println!(
        "server memory over the throughput run: RSS {rss_before} KiB -> {rss_after} KiB = {grown:.0} bytes per changeset"
    );
    // CPU time per changeset depends far less on what else the machine runs than the rate does.
    println!(
        "cpu per changeset, {} clients: server {:.1} us, clients {:.1} us",
        clients.len(),
        per(server_cpu),
        per(clients_cpu),
    );
    Ok(())
}

/// How many changesets the server's history holds durably.
async fn history_count(server: &Server) -> anyhow::Result<u64> {
    let summary = server.history().await?;
    summary["count"]
        .as_u64()
        .ok_or_else(|| anyhow!("no count in {summary}"))
}

/// The CPU time (user and system) process `pid` has used, in milliseconds, from
/// `/proc/<pid>/stat` (whose tick is 1/100 s on Linux).
fn cpu_ms(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    // state, ppid, ... with utime and stime the 12th and 13th.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("no command name in {path}"))?;
    let mut fields = after.split_whitespace().skip(11);
    let mut tick = || -> anyhow::Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no CPU times in {path}"))
    };
    Ok((tick()? + tick()?) * 10)
}

/// The soft limit on open files of this process (the server inherits it).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The resident set of process `pid` in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS line in {path}"))
}

/// Opens `count` idle sessions on a fresh server and prints its resident memory per session.
async fn idle_memory(binary: &std::path::Path, count: usize) -> anyhow::Result<()> {
    let needed = count.saturating_add(200);
    if let Some(limit) = open_file_limit().filter(|l| *l < needed) {
        println!(
            "idle memory, {count} sessions: skipped; the open-file limit is {limit}, run `ulimit -n {needed}` first"
        );
        return Ok(());
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut server = Server::start(binary, dir.path())?;
    let token = server.anonymous_token().await?;
    // One session first, so the baseline includes what any first session warms up.
    let warm = connect(&server, &token, 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(server.child.id())?;
    let mut idle = Vec::with_capacity(count);
    while idle.len() < count {
        let wave = IDLE_WAVE.min(count.saturating_sub(idle.len()));
        idle.extend(connect(&server, &token, wave).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(server.child.id())?;
    let grown = after.saturating_sub(before);
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let per_session = grown as f64 / count.max(1) as f64;
    println!(
        "idle memory, {count} sessions: server RSS {before} KiB -> {after} KiB = {per_session:.1} KiB per session"
    );
    server.kill9()?;
    drop(idle);
    drop(warm);
    Ok(())
}
