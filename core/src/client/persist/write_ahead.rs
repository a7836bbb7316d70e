//! Write-ahead persistence: a local write is durable once its pending changeset record and the
//! file meta are committed; the object records it changed follow in a later checkpoint.
//!
//! Writing a record per changed object is most of the cost of a large local write in a browser,
//! and the pending changeset record, which has to be stored anyway (it is the upload queue),
//! already holds everything needed to redo the write. So [`WriteAhead::commit`] writes only that
//! (plus the meta record, whose checkpoint marker it leaves where it was) when every write in the
//! batch is a plain local commit, and keeps the changed objects; [`WriteAhead::checkpoint`] writes
//! their records and moves the marker to the last client version they include, in one
//! transaction. [`restore`](super::restore) reads the objects and replays the pending changesets
//! after the marker.
//!
//! Every other write (a download, an acknowledgement, a reset, a schema change, a subscription
//! change) may rewrite or shorten the pending list (it deletes the acknowledged records and puts
//! the rewritten ones, see [`PendingUpdate::Delta`]), so replaying from the marker would no
//! longer be exact: its commit writes every kept object record as well and moves the marker to
//! the file's last client version, which leaves nothing to replay.

use crate::client::{FileMeta, PendingUpdate, StorageWrite};
use crate::store::Store;
use crate::value::{Document, PrimaryKey};

use super::{
    encode_file_meta_checkpointed, encode_object, encode_schema, object_record_key, PersistBatch,
};

/// The state of a driver that persists through write-ahead: the objects whose records are not
/// written yet and the checkpoint marker.
#[derive(Clone, Debug, Default)]
pub struct WriteAhead {
    /// Objects changed since the last checkpoint, in the order they changed (an object may appear
    /// more than once; its last entry is current): the document, or `None` once gone.
    kept: Vec<(String, PrimaryKey, Option<Document>)>,
    /// The stored marker: the object records hold every local changeset up to this version.
    checkpointed: u64,
    /// The file meta of the latest commit, which a checkpoint writes again with its marker.
    meta: FileMeta,
}

impl WriteAhead {
    /// The state for a new, empty file.
    pub fn new() -> Self {
        WriteAhead::default()
    }

    /// The state after a restore that replayed the changesets after `checkpointed`, changing the
    /// objects `replayed` (which `store` now holds as they are).
    pub(super) fn restored(
        meta: &FileMeta,
        checkpointed: u64,
        store: &Store,
        replayed: Vec<(String, PrimaryKey)>,
    ) -> Self {
        let kept = replayed
            .into_iter()
            .map(|(collection, key)| {
                let document = store.get(&collection, &key).cloned();
                (collection, key, document)
            })
            .collect();
        WriteAhead {
            kept,
            checkpointed,
            meta: meta.clone(),
        }
    }

    /// Whether every object record is written (nothing waits for a checkpoint).
    pub fn is_checkpointed(&self) -> bool {
        self.kept.is_empty()
    }

    /// The records to commit for `writes` (in the order the session emitted them), in one storage
    /// transaction; once it is committed, every write in it survives a crash or reload. When all
    /// of them are plain local commits, the object records they changed are kept for
    /// [`checkpoint`](Self::checkpoint) instead.
    pub fn commit(&mut self, writes: Vec<StorageWrite>) -> PersistBatch {
        let deferrable = writes
            .iter()
            .all(|w| matches!(w.pending, PendingUpdate::Appended { .. }) && w.schema.is_none());
        let mut batch = PersistBatch::new();
        for write in writes {
            self.kept.extend(write.objects);
            batch.add_pending(write.pending);
            if let Some(schema) = &write.schema {
                batch.schema = Some(encode_schema(schema));
            }
            self.meta = write.meta;
        }
        if !deferrable {
            self.write_kept(&mut batch);
            self.checkpointed = self.meta.last_client_version;
        }
        batch.meta = Some(encode_file_meta_checkpointed(&self.meta, self.checkpointed));
        batch
    }

    /// The records of the objects kept since the last checkpoint and the meta record with the
    /// marker moved past them, to write in one storage transaction; `None` when nothing is kept.
    /// Restoring gives the same state before and after it is committed.
    pub fn checkpoint(&mut self) -> Option<PersistBatch> {
        if self.kept.is_empty() {
            return None;
        }
        let mut batch = PersistBatch::new();
        self.write_kept(&mut batch);
        self.checkpointed = self.meta.last_client_version;
        batch.meta = Some(encode_file_meta_checkpointed(&self.meta, self.checkpointed));
        Some(batch)
    }

    /// Moves the kept objects into `batch` as records to put or delete.
    fn write_kept(&mut self, batch: &mut PersistBatch) {
        let mut kept = std::mem::take(&mut self.kept);
        crate::sort::sort_by(&mut kept, |a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut kept = kept.into_iter().peekable();
        while let Some((collection, key, document)) = kept.next() {
            if kept
                .peek()
                .is_some_and(|(c, k, _)| *c == collection && *k == key)
            {
                // A later entry of the same object is current (the sort is stable).
                continue;
            }
            let record = document.map(|d| encode_object(&collection, &key, &d));
            batch
                .objects
                .insert(object_record_key(&collection, &key), record);
        }
    }
}
