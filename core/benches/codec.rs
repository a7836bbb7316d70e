//! Criterion benchmark of the changeset codec: encode and decode throughput, in bytes of
//! encoded body, for a realistic changeset of about 1,000 mixed instructions (compressed, above
//! the compression threshold) and for a small one below the threshold (stored plain).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use eddy_core::changeset::{
    decode_changeset, encode_changeset, DecodeLimits, Instruction, Path, PathElement,
    COMPRESSION_THRESHOLD,
};
use eddy_core::value::{PrimaryKey, Value};

/// The header bit that marks a compressed body (`docs/changeset-format.md`).
const COMPRESSED_FLAG: u8 = 0x80;
/// Objects in the large changeset; six instructions each make 1,002.
const LARGE_OBJECTS: i64 = 167;
/// Objects in the small changeset.
const SMALL_OBJECTS: i64 = 2;

/// A fixture whose encoding is not on the side of the compression threshold it is meant for.
#[derive(Debug)]
struct WrongSide {
    name: &'static str,
    bytes: usize,
}

impl fmt::Display for WrongSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "changeset \"{}\" encodes to {} bytes on the wrong side of the {} byte compression \
             threshold: resize the fixture",
            self.name, self.bytes, COMPRESSION_THRESHOLD
        )
    }
}

impl Error for WrongSide {}

/// Six instructions per object: a creation, a string, an int and a double field set, a list
/// insert, and a set through a nested path (a dictionary key inside an embedded object).
fn changeset(objects: i64) -> Vec<Instruction> {
    let mut out = Vec::new();
    for id in 0..objects {
        let key = PrimaryKey::Int(id);
        let field = |name: &str| Path::field("Task", key.clone(), name);
        out.push(Instruction::CreateObject {
            collection: "Task".to_owned(),
            key: key.clone(),
        });
        out.push(Instruction::Set {
            path: field("title"),
            value: Value::String(format!("write the release notes, part {id}")),
        });
        out.push(Instruction::Set {
            path: field("priority"),
            value: Value::Int(id % 5),
        });
        out.push(Instruction::Set {
            path: field("estimate"),
            value: Value::Double(id as f64 * 0.25),
        });
        let prior = u32::try_from(id % 7).unwrap_or_default();
        out.push(Instruction::ListInsert {
            list: field("tags"),
            index: prior / 2,
            value: Value::String(format!("tag-{}", id % 13)),
            prior_size: prior,
        });
        out.push(Instruction::Set {
            path: field("details")
                .child(PathElement::Field("labels".to_owned()))
                .child(PathElement::Key(format!("k{}", id % 3))),
            value: Value::Int(id),
        });
    }
    out
}

/// Encode and decode benchmarks for one changeset, after checking which side of the threshold
/// its body falls on.
fn bench_changeset(
    c: &mut Criterion,
    name: &'static str,
    instructions: &[Instruction],
    compressed: bool,
) -> Result<(), Box<dyn Error>> {
    let body = encode_changeset(instructions);
    let flagged = body.first().is_some_and(|h| h & COMPRESSED_FLAG != 0);
    if flagged != compressed {
        return Err(WrongSide {
            name,
            bytes: body.len(),
        }
        .into());
    }
    let limits = DecodeLimits::default();
    if decode_changeset(&body, &limits)?.as_slice() != instructions {
        return Err(format!("changeset \"{name}\" does not round-trip").into());
    }
    let bytes = u64::try_from(body.len())?;
    let mut group = c.benchmark_group(format!("codec/{name}"));
    group
        .throughput(Throughput::Bytes(bytes))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("encode", |b| {
        b.iter_with_large_drop(|| encode_changeset(instructions))
    });
    group.bench_function("decode", |b| {
        b.iter_with_large_drop(|| decode_changeset(&body, &limits))
    });
    group.finish();
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut c = Criterion::default().configure_from_args();
    let large = changeset(LARGE_OBJECTS);
    bench_changeset(&mut c, "large", &large, true)?;
    let small = changeset(SMALL_OBJECTS);
    bench_changeset(&mut c, "small", &small, false)?;
    c.final_summary();
    Ok(())
}
