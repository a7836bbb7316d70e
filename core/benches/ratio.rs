//! Prints, for each `integrate` workload, the median integration time of Eddy and of automerge
//! over a few repetitions and their ratio, so the "at least 5x faster than automerge"
//! goal can be read off one line per workload.
//!
//! Benches are drivers, not core logic: reading the clock and printing are their job here.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

mod fixture;

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use fixture::{AutomergeInput, EddyInput, Size, Workload};

/// Timed runs per engine and workload (each on a fresh copy of the input).
const REPETITIONS: usize = 5;

/// The median of `REPETITIONS` timed runs of `run` on fresh clones of `input`.
fn median<I: Clone, O, E>(input: &I, run: impl Fn(I) -> Result<O, E>) -> Result<Duration, E> {
    let mut times = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let fresh = input.clone();
        let start = Instant::now();
        let output = run(fresh)?;
        times.push(start.elapsed());
        drop(black_box(output));
    }
    times.sort_unstable();
    Ok(times.get(times.len() / 2).copied().unwrap_or_default())
}

fn main() -> Result<(), Box<dyn Error>> {
    // Like criterion: `cargo bench` passes `--bench` and gets the full workloads; any other run
    // (such as `cargo test --benches`) times small ones, just to show the driver works.
    let size = Size::from_args();
    for workload in Workload::ALL {
        fixture::check(workload, size)?;
        let eddy = median(&EddyInput::build(workload, size)?, EddyInput::integrate)?;
        let automerge = median(
            &AutomergeInput::build(workload, size)?,
            AutomergeInput::integrate,
        )?;
        let ratio = automerge.as_secs_f64() / eddy.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{}: eddy {:.1} ms, automerge {:.1} ms, ratio {ratio:.1}x{}",
            workload.name(),
            eddy.as_secs_f64() * 1e3,
            automerge.as_secs_f64() * 1e3,
            if size == Size::FULL {
                ""
            } else {
                " (smoke size)"
            },
        );
    }
    Ok(())
}
