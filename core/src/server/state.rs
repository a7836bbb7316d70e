//! The server's state as one changeset: what STATE messages carry for async open and client reset.

use crate::changeset::{Instruction, Path};
use crate::schema::PRIMARY_KEY;
use crate::store::Store;

/// Instructions that build `store`'s schema and every object from nothing, in a deterministic order.
pub fn snapshot_instructions(store: &Store) -> Vec<Instruction> {
    let schema = store.schema();
    let mut out = Vec::new();
    for collection in schema.collections.values() {
        out.push(Instruction::AddCollection {
            name: collection.name.clone(),
            kind: collection.kind,
            primary_key: collection.primary_key,
        });
        for property in collection.properties.values() {
            out.push(Instruction::AddProperty {
                collection: collection.name.clone(),
                property: property.clone(),
            });
        }
    }
    for name in schema.collections.keys() {
        for (key, doc) in store.objects(name) {
            out.push(Instruction::CreateObject {
                collection: name.clone(),
                key: key.clone(),
            });
            for (field, value) in doc.iter().filter(|(f, _)| f.as_str() != PRIMARY_KEY) {
                out.push(Instruction::Set {
                    path: Path::field(name.clone(), key.clone(), field.clone()),
                    value: value.clone(),
                });
            }
        }
    }
    out
}
