use eddy_core::changeset::*;
use eddy_core::transform::transform;
use eddy_core::value::*;

fn cs(v: u64, t: u64, id: u64, i: Vec<Instruction>) -> Changeset {
    Changeset { meta: ChangesetMeta { version: v, last_integrated_remote_version: 0, origin_timestamp: t, origin_file_ident: id }, instructions: i }
}
fn tags() -> Path { Path::field("Item", PrimaryKey::Int(4), "tags") }

#[test]
fn repro() {
    let mut pending = vec![cs(4, 109, 2, vec![
        Instruction::Set { path: Path::field("Item", PrimaryKey::Int(4), "sub"), value: Value::Null },
        Instruction::ListInsert { list: tags(), index: 0, value: Value::Int(67), prior_size: 0 }])];
    let mut r1 = vec![cs(2, 129, 7, vec![Instruction::ListInsert { list: tags(), index: 0, value: Value::Int(64), prior_size: 0 }])];
    transform(&mut pending, &mut r1, None).unwrap();
    println!("pending after r1: {:?}\nr1': {:?}", pending[0].instructions, r1[0].instructions);
    let mut r2 = vec![cs(4, 173, 7, vec![Instruction::ListSet { list: tags(), index: 0, value: Value::Int(7), prior_size: 1 }])];
    transform(&mut pending, &mut r2, None).unwrap();
    println!("pending after r2: {:?}\nr2': {:?}", pending[0].instructions, r2[0].instructions);
}
