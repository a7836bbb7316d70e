//! Measures what a client's object store holds per object: builds a `Store` of N objects of two
//! to five fields (as synced objects arrive: a creation and its field writes, 100 objects per
//! changeset) and prints the growth of the process's resident memory per object (Linux).
//!
//! `cargo run -p eddy-core --release --example store_memory -- --objects 100000`

use std::process::ExitCode;

use eddy_core::changeset::{Instruction, Path};
use eddy_core::schema::{CollectionSchema, PrimaryKeyType, Property, ScalarType, Schema};
use eddy_core::store::{Changes, Store};
use eddy_core::value::{ObjectId, PrimaryKey, Value};

/// Objects per applied changeset.
const BATCH: u64 = 100;

/// The resident set size of this process in bytes, from `/proc/self/status`.
fn resident_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS line in /proc/self/status".to_owned())
}

fn schema() -> Schema {
    let optional = |name: &str, ty: ScalarType| Property {
        optional: true,
        ..Property::new(name, ty)
    };
    let mut schema = Schema::default();
    schema.insert(
        CollectionSchema::top_level("Task", PrimaryKeyType::ObjectId)
            .with(optional("title", ScalarType::String))
            .with(optional("done", ScalarType::Bool))
            .with(optional("rank", ScalarType::Int))
            .with(optional("note", ScalarType::String)),
    );
    schema
}

/// Object `i`'s creation and writes: `_id` plus one to four fields.
fn object(i: u64, out: &mut Vec<Instruction>) {
    let mut id = [0u8; 12];
    id[4..].copy_from_slice(&i.to_be_bytes());
    let key = PrimaryKey::ObjectId(ObjectId(id));
    out.push(Instruction::CreateObject {
        collection: "Task".into(),
        key: key.clone(),
    });
    let fields: [(&str, Value); 4] = [
        ("title", Value::String(format!("task {i:08}"))),
        ("done", Value::Bool(i % 3 == 0)),
        ("rank", Value::Int(i as i64)),
        ("note", Value::String("see the thread".into())),
    ];
    let count = 1 + (i % 4) as usize;
    for (field, value) in fields.into_iter().take(count) {
        out.push(Instruction::Set {
            path: Path::field("Task", key.clone(), field),
            value,
        });
    }
}

fn run() -> Result<(), String> {
    let mut objects: u64 = 100_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--objects" => {
                objects = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--objects needs a number")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut store = Store::new(schema());
    let mut batch = Vec::new();
    let before = resident_bytes()?;
    for start in (0..objects).step_by(BATCH as usize) {
        batch.clear();
        for i in start..(start + BATCH).min(objects) {
            object(i, &mut batch);
        }
        store
            .apply(&batch, &mut Changes::new())
            .map_err(|e| format!("apply failed: {e}"))?;
    }
    drop(batch);
    let after = resident_bytes()?;
    let grown = after.saturating_sub(before);
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{} objects: resident memory grew {:.1} MiB, {} bytes per object",
            store.len("Task"),
            grown as f64 / (1024.0 * 1024.0),
            grown / objects.max(1)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("store_memory: {message}");
            }
            ExitCode::FAILURE
        }
    }
}
