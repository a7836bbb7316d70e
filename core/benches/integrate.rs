//! Criterion benchmark of the figure: integrating 10,000 concurrent remote changesets
//! (field updates, or list inserts) into a store of 100,000 objects with 10 pending local
//! changesets, against automerge doing the same in the same run.
//!
//! Each workload is one group with an `eddy` and an `automerge` member. Inputs are built once
//! and cloned per iteration outside the timed section; only the integration is timed.

mod fixture;

use std::error::Error;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use fixture::{AutomergeInput, EddyInput, Size, Workload};

fn bench_workload(c: &mut Criterion, workload: Workload, size: Size) -> Result<(), Box<dyn Error>> {
    fixture::check(workload, size)?;
    let eddy = EddyInput::build(workload, size)?;
    let automerge = AutomergeInput::build(workload, size)?;
    let mut group = c.benchmark_group(workload.name());
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("eddy", |b| {
        b.iter_batched(|| eddy.clone(), EddyInput::integrate, BatchSize::LargeInput)
    });
    group.bench_function("automerge", |b| {
        b.iter_batched(
            || automerge.clone(),
            AutomergeInput::integrate,
            BatchSize::LargeInput,
        )
    });
    group.finish();
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut c = Criterion::default().configure_from_args();
    let size = Size::from_args();
    for workload in Workload::ALL {
        bench_workload(&mut c, workload, size)?;
    }
    c.final_summary();
    Ok(())
}
