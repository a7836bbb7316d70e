//! The local write builder: each call validates and applies one instruction right away (so later
//! reads see it) and records it, computing list sizes itself; commit hands back the changeset's
//! instructions, and dropping without commit restores the store exactly.

use crate::changeset::{Instruction, Path, PathElement};
use crate::schema::{CollectionKind, PrimaryKeyType, Property, SchemaError, PRIMARY_KEY};
use crate::value::{Document, PrimaryKey, Value, ValueKind};

use super::{walk, ApplyError, Changes, Store, Undo};

/// A local write transaction on a [`Store`].
///
/// Every method applies its instruction immediately or returns an error that leaves the
/// transaction (and the store) as it was before the call, so the transaction stays usable.
/// [`commit`](WriteTransaction::commit) returns the recorded instructions and the changes;
/// dropping the transaction (or calling [`rollback`](WriteTransaction::rollback)) undoes
/// everything it did.
///
/// ```
/// use eddy_core::schema::{CollectionSchema, PrimaryKeyType, Property, ScalarType, Schema};
/// use eddy_core::changeset::Path;
/// use eddy_core::store::Store;
/// use eddy_core::value::{PrimaryKey, Value};
///
/// let mut schema = Schema::default();
/// schema.insert(CollectionSchema::top_level("Task", PrimaryKeyType::Int)
///     .with(Property::new("title", ScalarType::String)));
/// let mut store = Store::new(schema);
/// let mut txn = store.write();
/// txn.create("Task", PrimaryKey::Int(1))?;
/// txn.set(Path::field("Task", PrimaryKey::Int(1), "title"), Value::from("write docs"))?;
/// let (instructions, changes) = txn.commit();
/// assert_eq!(instructions.len(), 2);
/// assert!(!changes.is_empty());
/// # Ok::<(), eddy_core::store::ApplyError>(())
/// ```
#[derive(Debug)]
pub struct WriteTransaction<'a> {
    store: &'a mut Store,
    undo: Vec<Undo>,
    instructions: Vec<Instruction>,
    changes: Changes,
}

/// A transaction's writes set aside by [`WriteTransaction::suspend`]: applied to the store,
/// neither committed nor undone yet.
#[derive(Debug, Default)]
pub struct SuspendedWrite {
    undo: Vec<Undo>,
    instructions: Vec<Instruction>,
    changes: Changes,
}

impl<'a> WriteTransaction<'a> {
    pub(crate) fn new(store: &'a mut Store) -> Self {
        WriteTransaction {
            store,
            undo: Vec::new(),
            instructions: Vec::new(),
            changes: Changes::new(),
        }
    }

    /// The store as this transaction has left it so far.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// An object as this transaction has left it so far.
    pub fn get(&self, collection: &str, key: &PrimaryKey) -> Option<&Document> {
        self.store.get(collection, key)
    }

    /// The value at a path as this transaction has left it so far.
    pub fn value_at(&self, path: &Path) -> Option<&Value> {
        self.store.value_at(path)
    }

    /// The instructions recorded so far.
    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }

    /// Ends the transaction, keeping its writes; returns its instructions and changes.
    pub fn commit(mut self) -> (Vec<Instruction>, Changes) {
        self.undo.clear();
        (
            std::mem::take(&mut self.instructions),
            std::mem::take(&mut self.changes),
        )
    }

    /// Ends the transaction, undoing its writes.
    pub fn rollback(self) {}

    /// Sets the writes made so far aside, still applied to the store, and leaves this
    /// transaction empty (dropping it then undoes nothing). For a driver that receives a
    /// transaction's writes one call at a time and cannot keep the store borrowed in between.
    ///
    /// Until the returned value is [resumed](WriteTransaction::resume) in a transaction on the
    /// same store, and that transaction is committed or dropped, the store holds uncommitted
    /// writes: nothing else may write to it in the meantime. Dropping the value keeps the writes
    /// without recording them.
    pub fn suspend(&mut self) -> SuspendedWrite {
        SuspendedWrite {
            undo: std::mem::take(&mut self.undo),
            instructions: std::mem::take(&mut self.instructions),
            changes: std::mem::take(&mut self.changes),
        }
    }

    /// Takes back writes set aside by [`suspend`](WriteTransaction::suspend) on this store, as
    /// if this transaction had made them before its own: committing records them, dropping
    /// undoes them.
    pub fn resume(&mut self, earlier: SuspendedWrite) {
        let SuspendedWrite {
            mut undo,
            mut instructions,
            mut changes,
        } = earlier;
        undo.append(&mut self.undo);
        instructions.append(&mut self.instructions);
        changes.merge(std::mem::take(&mut self.changes));
        self.undo = undo;
        self.instructions = instructions;
        self.changes = changes;
    }

    /// Applies and records one instruction; on error undoes whatever it did.
    pub fn push(&mut self, instruction: Instruction) -> Result<(), ApplyError> {
        let mark = self.undo.len();
        let mut changes = Changes::new();
        match self
            .store
            .apply_one(&instruction, &mut self.undo, &mut changes)
        {
            Ok(()) => {
                self.changes.merge(changes);
                self.instructions.push(instruction);
                Ok(())
            }
            Err(error) => {
                self.store.rollback(&mut self.undo, mark);
                Err(error)
            }
        }
    }

    /// Records the insertion of an asymmetric (Data Ingest) object: `document` is checked against
    /// the collection's schema and queued for upload with the transaction, but never stored here
    /// (the transaction reports no change for it).
    pub fn ingest(
        &mut self,
        collection: &str,
        key: PrimaryKey,
        document: Document,
    ) -> Result<(), ApplyError> {
        match self.store.schema().collection(collection) {
            Some(c) if c.kind == CollectionKind::Asymmetric => {}
            Some(_) => {
                return Err(ApplyError::NotAsymmetric {
                    collection: collection.to_owned(),
                })
            }
            None => {
                return Err(ApplyError::Schema(SchemaError::UnknownCollection {
                    collection: collection.to_owned(),
                }))
            }
        }
        let schema = self.store.schema();
        if let Some(coll) = schema.collection(collection) {
            super::validate::check_document(schema, coll, &key, &document)?;
        }
        // What `insert_instructions` records, with the document's values moved rather than
        // cloned.
        self.instructions.push(Instruction::CreateObject {
            collection: collection.to_owned(),
            key: key.clone(),
        });
        for (field, value) in document {
            if field != PRIMARY_KEY {
                self.instructions.push(Instruction::Set {
                    path: Path::field(collection, key.clone(), field),
                    value,
                });
            }
        }
        Ok(())
    }

    /// Records again an instruction of an earlier local changeset (client reset recovery): the
    /// insertion of an asymmetric object is queued again without being stored, anything else is
    /// applied as by [`push`](WriteTransaction::push).
    pub fn replay(&mut self, instruction: Instruction) -> Result<(), ApplyError> {
        let asymmetric = instruction.object().is_some_and(|(collection, _)| {
            self.store.schema().collection(collection).map(|c| c.kind)
                == Some(CollectionKind::Asymmetric)
        });
        if asymmetric {
            self.instructions.push(instruction);
            Ok(())
        } else {
            self.push(instruction)
        }
    }

    /// Adds a collection to the schema.
    pub fn add_collection(
        &mut self,
        name: &str,
        kind: CollectionKind,
        primary_key: Option<PrimaryKeyType>,
    ) -> Result<(), ApplyError> {
        self.push(Instruction::AddCollection {
            name: name.to_owned(),
            kind,
            primary_key,
        })
    }

    /// Adds a property to a collection.
    pub fn add_property(&mut self, collection: &str, property: Property) -> Result<(), ApplyError> {
        self.push(Instruction::AddProperty {
            collection: collection.to_owned(),
            property,
        })
    }

    /// Creates an object (a no-op if it exists).
    pub fn create(&mut self, collection: &str, key: PrimaryKey) -> Result<(), ApplyError> {
        self.push(Instruction::CreateObject {
            collection: collection.to_owned(),
            key,
        })
    }

    /// Erases an object (a no-op if it does not exist).
    pub fn erase(&mut self, collection: &str, key: PrimaryKey) -> Result<(), ApplyError> {
        self.push(Instruction::EraseObject {
            collection: collection.to_owned(),
            key,
        })
    }

    /// Sets the value at a path (a field, an embedded object's field or a dictionary key).
    pub fn set(&mut self, path: Path, value: Value) -> Result<(), ApplyError> {
        self.push(Instruction::Set { path, value })
    }

    /// Adds to the integer at a path (a no-op on null or absent values).
    pub fn add_integer(&mut self, path: Path, delta: i64) -> Result<(), ApplyError> {
        self.push(Instruction::AddInteger { path, delta })
    }

    /// Inserts a value into a list at `index`.
    pub fn list_insert(&mut self, list: Path, index: u32, value: Value) -> Result<(), ApplyError> {
        let prior_size = self.list_len(&list)?;
        self.push(Instruction::ListInsert {
            list,
            index,
            value,
            prior_size,
        })
    }

    /// Appends a value to a list.
    pub fn list_push(&mut self, list: Path, value: Value) -> Result<(), ApplyError> {
        let prior_size = self.list_len(&list)?;
        self.push(Instruction::ListInsert {
            list,
            index: prior_size,
            value,
            prior_size,
        })
    }

    /// Replaces the list element at `index`.
    pub fn list_set(&mut self, list: Path, index: u32, value: Value) -> Result<(), ApplyError> {
        let prior_size = self.list_len(&list)?;
        self.push(Instruction::ListSet {
            list,
            index,
            value,
            prior_size,
        })
    }

    /// Moves the list element at `from` so that it ends up at index `to`.
    pub fn list_move(&mut self, list: Path, from: u32, to: u32) -> Result<(), ApplyError> {
        let prior_size = self.list_len(&list)?;
        self.push(Instruction::ListMove {
            list,
            from,
            to,
            prior_size,
        })
    }

    /// Removes the list element at `index`.
    pub fn list_erase(&mut self, list: Path, index: u32) -> Result<(), ApplyError> {
        let prior_size = self.list_len(&list)?;
        self.push(Instruction::ListErase {
            list,
            index,
            prior_size,
        })
    }

    /// Empties the list, set or dictionary at a path.
    pub fn clear(&mut self, path: Path) -> Result<(), ApplyError> {
        self.push(Instruction::Clear { path })
    }

    /// Adds a value to a set.
    pub fn set_insert(&mut self, set: Path, value: Value) -> Result<(), ApplyError> {
        self.push(Instruction::SetInsert { set, value })
    }

    /// Removes a value from a set.
    pub fn set_erase(&mut self, set: Path, value: Value) -> Result<(), ApplyError> {
        self.push(Instruction::SetErase { set, value })
    }

    /// Sets a dictionary entry.
    pub fn dict_set(&mut self, dict: Path, key: &str, value: Value) -> Result<(), ApplyError> {
        self.push(Instruction::Set {
            path: dict.child(PathElement::Key(key.to_owned())),
            value,
        })
    }

    /// Removes a dictionary entry.
    pub fn dict_erase(&mut self, dict: Path, key: &str) -> Result<(), ApplyError> {
        self.push(Instruction::DictErase {
            dict,
            key: key.to_owned(),
        })
    }

    /// The current length of the list at a path (0 if absent).
    fn list_len(&self, list: &Path) -> Result<u32, ApplyError> {
        let Some(doc) = self.store.get(&list.collection, &list.key) else {
            return Err(ApplyError::MissingObject {
                collection: list.collection.clone(),
                key: list.key.clone(),
            });
        };
        match walk::value_at(doc, list) {
            None => Ok(0),
            Some(Value::List(items)) => u32::try_from(items.len())
                .map_err(|_| ApplyError::ListTooLong { path: list.clone() }),
            Some(other) => Err(ApplyError::WrongKind {
                path: list.clone(),
                expected: ValueKind::List,
                found: other.kind(),
            }),
        }
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        let mut undo = std::mem::take(&mut self.undo);
        self.store.rollback(&mut undo, 0);
    }
}
