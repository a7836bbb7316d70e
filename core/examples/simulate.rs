//! Runs the deterministic sync simulation over many seeds and reports convergence.
//!
//! `cargo run -p eddy-core --release --example simulate -- --seeds 2000 --clients 5`
//! A failure prints the seed and the command that replays it alone (`--seed N`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use eddy_core::sim::{SimConfig, SimFailure, SimReport, Simulation};

struct Args {
    first: u64,
    seeds: u64,
    clients: usize,
    verbose: bool,
    trace: bool,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        first: 0,
        seeds: 100,
        clients: 5,
        verbose: false,
        trace: false,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seeds" => args.seeds = value("--seeds")?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--seed" => {
                args.first = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?;
                args.seeds = 1;
            }
            "--first-seed" => args.first = value("--first-seed")?.parse().map_err(|e| format!("--first-seed: {e}"))?,
            "--clients" => args.clients = value("--clients")?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--threads" => args.threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--verbose" | "-v" => args.verbose = true,
            "--trace" => args.trace = true,
            "--help" | "-h" => {
                return Err("usage: simulate [--seeds N] [--first-seed S] [--seed S] [--clients C] [--threads T] [--verbose] [--trace]".into())
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    Ok(args)
}

// A driver, not core logic: it may read the clock to report wall time.
#[allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]
fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let next = AtomicU64::new(args.first);
    let end = args.first + args.seeds;
    let done = AtomicU64::new(0);
    let failures: Mutex<Vec<SimFailure>> = Mutex::new(Vec::new());
    let totals: Mutex<SimReport> = Mutex::new(SimReport::default());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let mut config = SimConfig::new(seed, args.clients);
                config.trace = args.trace;
                match Simulation::new(config).and_then(Simulation::run) {
                    Ok(report) => {
                        if args.verbose {
                            println!(
                                "seed {seed}: converged; {} writes, {} server versions, {} objects, {} disconnects, {} server crashes, {} client restarts, {} messages, {} virtual s",
                                report.writes,
                                report.server_versions,
                                report.objects,
                                report.disconnects,
                                report.server_crashes,
                                report.client_restarts,
                                report.messages,
                                report.virtual_ms / 1000
                            );
                        }
                        if let Ok(mut t) = totals.lock() {
                            t.writes += report.writes;
                            t.ingested += report.ingested;
                            t.ingested_stored += report.ingested_stored;
                            t.server_versions += report.server_versions;
                            t.server_crashes += report.server_crashes;
                            t.client_restarts += report.client_restarts;
                            t.client_rollbacks += report.client_rollbacks;
                            t.disconnects += report.disconnects;
                            t.messages += report.messages;
                            t.backup_restores += report.backup_restores;
                            t.client_resets += report.client_resets;
                            t.transacts.0 += report.transacts.0;
                            t.transacts.1 += report.transacts.1;
                            t.marks += report.marks;
                            t.bootstrap_parts += report.bootstrap_parts;
                            t.subscriptions.0 += report.subscriptions.0;
                            t.subscriptions.1 += report.subscriptions.1;
                            t.compensated.0 += report.compensated.0;
                            t.compensated.1 += report.compensated.1;
                        }
                    }
                    Err(failure) => {
                        eprintln!("{failure}");
                        eprintln!(
                            "replay with: cargo run -p eddy-core --release --example simulate -- --seed {seed} --clients {} --trace",
                            args.clients
                        );
                        if let Ok(mut f) = failures.lock() {
                            f.push(failure);
                        }
                    }
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if !args.verbose && n % 250 == 0 {
                    println!("... {n}/{} seeds in {:.0?}", args.seeds, started.elapsed());
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    let totals = totals.into_inner().unwrap_or_default();
    let converged = args.seeds - failures.len() as u64;
    println!(
        "{} writes ({} readings ingested, {} stored), {} integrated changesets, {} messages; faults: {} disconnects, {} server crashes, {} backup restores, {} client restarts, {} client rollbacks; {} client resets, {} transactions accepted / {} rejected, {} marks, {} bootstrap DOWNLOADs held back until their last, {} subscription sets completed / {} refused, {} writes compensated (outside the view) / {} (refused by a role); in {:.1?}",
        totals.writes,
        totals.ingested,
        totals.ingested_stored,
        totals.server_versions,
        totals.messages,
        totals.disconnects,
        totals.server_crashes,
        totals.backup_restores,
        totals.client_restarts,
        totals.client_rollbacks,
        totals.client_resets,
        totals.transacts.0,
        totals.transacts.1,
        totals.marks,
        totals.bootstrap_parts,
        totals.subscriptions.0,
        totals.subscriptions.1,
        totals.compensated.0,
        totals.compensated.1,
        started.elapsed()
    );
    println!("converged {converged}/{} seeds", args.seeds);
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
