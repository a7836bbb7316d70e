//! The server's state as one changeset: what STATE messages carry for async open and client reset.

use crate::changeset::{object_instructions, schema_instructions, Instruction};
use crate::store::Store;

/// Instructions that build `store`'s schema and every object from nothing, in a deterministic order.
pub fn snapshot_instructions(store: &Store) -> Vec<Instruction> {
    let schema = store.schema();
    let mut out = Vec::new();
    schema_instructions(schema, &mut out);
    for name in schema.collections.keys() {
        for (key, doc) in store.objects(name) {
            object_instructions(name, key, doc, &mut out);
        }
    }
    out
}
