//! Round trips of every record kind, group-commit merging, a whole session persisted and restored,
//! write-ahead commits restored by replay before and after their checkpoint, and damaged records
//! giving errors instead of panics.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use super::*;
use crate::changeset::arbitrary::{
    instruction, name, primary_key, primary_key_type, property, value,
};
use crate::changeset::Instruction;
use crate::client::{ClientSession, ResetMode, SessionConfig, SessionEvent};
use crate::protocol::{BatchState, ClientMessage, DownloadChangeset, ServerMessage, SyncProgress};
use crate::schema::{CollectionKind, Container, PrimaryKeyType, Property, ScalarType};
use crate::value::Value;

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

fn subscription() -> impl Strategy<Value = Subscription> {
    (name(), name(), "\\PC{0,24}").prop_map(|(name, collection, query)| Subscription {
        name,
        collection,
        query,
    })
}

fn file_meta() -> impl Strategy<Value = FileMeta> {
    let transaction = prop::option::of(
        (any::<u64>(), any::<u64>(), vec(instruction(), 0..6)).prop_map(
            |(client_version, origin_timestamp, instructions)| OutstandingTransaction {
                client_version,
                origin_timestamp,
                instructions,
            },
        ),
    );
    (any::<[u64; 8]>(), vec(subscription(), 0..5), transaction).prop_map(
        |(n, subscriptions, transaction)| FileMeta {
            client_file_ident: n[0],
            client_file_ident_salt: n[1],
            download: DownloadCursor {
                server_version: n[2],
                last_integrated_client_version: n[3],
            },
            latest_server_version: n[4],
            latest_server_version_salt: n[5],
            last_client_version: n[6],
            subscriptions: SubscriptionSet {
                version: n[7],
                subscriptions,
            },
            transaction,
        },
    )
}

fn changeset() -> impl Strategy<Value = Changeset> {
    (any::<[u64; 4]>(), vec(instruction(), 0..8)).prop_map(|(n, instructions)| Changeset {
        meta: ChangesetMeta {
            version: n[0],
            last_integrated_remote_version: n[1],
            origin_timestamp: n[2],
            origin_file_ident: n[3],
        },
        instructions,
    })
}

fn document() -> impl Strategy<Value = Document> {
    btree_map(name(), value(), 0..6).prop_map(|mut doc| {
        doc.remove(PRIMARY_KEY);
        doc.into_iter().collect()
    })
}

fn schema() -> impl Strategy<Value = Schema> {
    let kind = prop::sample::select(vec![
        CollectionKind::TopLevel,
        CollectionKind::Embedded,
        CollectionKind::Asymmetric,
    ]);
    let collection = (
        name(),
        kind,
        prop::option::of(primary_key_type()),
        vec(property(), 0..5),
    )
        .prop_map(|(name, kind, primary_key, properties)| CollectionSchema {
            name,
            kind,
            primary_key,
            properties: properties
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
        });
    vec(collection, 0..5).prop_map(|collections| {
        let mut schema = Schema::default();
        for c in collections {
            schema.insert(c);
        }
        schema
    })
}

/// Every record kind, encoded.
fn any_record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        file_meta().prop_map(|m| encode_file_meta(&m)),
        changeset().prop_map(|c| encode_pending(&c)),
        (name(), primary_key(), document()).prop_map(|(c, k, d)| encode_object(&c, &k, &d)),
        schema().prop_map(|s| encode_schema(&s)),
    ]
}

/// Decodes `bytes` as every record kind; none may panic.
fn decode_all(bytes: &[u8]) -> [bool; 4] {
    [
        decode_file_meta(bytes, &limits()).is_ok(),
        decode_pending(bytes, &limits()).is_ok(),
        decode_object(bytes, &limits()).is_ok(),
        decode_schema(bytes, &limits()).is_ok(),
    ]
}

proptest! {
    #[test]
    fn file_meta_round_trips(meta in file_meta()) {
        prop_assert_eq!(decode_file_meta(&encode_file_meta(&meta), &limits())?, meta);
    }

    #[test]
    fn checkpoint_markers_round_trip(meta in file_meta(), back in 0u64..3) {
        let checkpointed = meta.last_client_version.saturating_sub(back);
        let record = encode_file_meta_checkpointed(&meta, checkpointed);
        prop_assert_eq!(
            decode_file_meta_checkpointed(&record, &limits())?,
            (meta.clone(), Some(checkpointed))
        );
        prop_assert_eq!(
            decode_file_meta_checkpointed(&encode_file_meta(&meta), &limits())?,
            (meta, None)
        );
    }

    #[test]
    fn pending_changesets_round_trip(changeset in changeset()) {
        prop_assert_eq!(decode_pending(&encode_pending(&changeset), &limits())?, changeset);
    }

    #[test]
    fn objects_round_trip(collection in name(), key in primary_key(), document in document()) {
        let stored = decode_object(&encode_object(&collection, &key, &document), &limits())?;
        prop_assert_eq!(stored, StoredObject { collection, key, document });
    }

    #[test]
    fn schemas_round_trip(schema in schema()) {
        prop_assert_eq!(decode_schema(&encode_schema(&schema), &limits())?, schema);
    }

    #[test]
    fn object_record_keys_are_unambiguous(
        a in (name(), primary_key()),
        b in (name(), primary_key()),
    ) {
        prop_assert_eq!(object_record_key(&a.0, &a.1) == object_record_key(&b.0, &b.1), a == b);
    }

    #[test]
    fn every_truncation_is_an_error(record in any_record(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(record.len());
        prop_assert_eq!(decode_all(&record[..cut]), [false; 4]);
    }

    #[test]
    fn corrupted_records_never_panic(
        record in any_record(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = record;
        for (at, byte) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= byte | 1;
        }
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        decode_all(&bytes);
        let mut headed = vec![FORMAT_VERSION, 1];
        headed.extend_from_slice(&bytes);
        decode_all(&headed);
    }
}

#[test]
fn each_record_is_read_only_as_its_own_kind() {
    let records = [
        encode_file_meta(&FileMeta::default()),
        encode_schema(&Schema::default()),
        encode_object("Item", &PrimaryKey::Int(1), &Document::new()),
        encode_pending(&Changeset {
            meta: ChangesetMeta::default(),
            instructions: Vec::new(),
        }),
    ];
    let expected = [
        [true, false, false, false],
        [false, false, false, true],
        [false, false, true, false],
        [false, true, false, false],
    ];
    for (record, expected) in records.iter().zip(expected) {
        assert_eq!(decode_all(record), expected);
    }
    let err = decode_pending(&records[0], &limits()).unwrap_err();
    assert!(matches!(err, PersistError::WrongKind { .. }), "{err:?}");
}

#[test]
fn another_format_version_is_refused_with_advice() {
    let mut record = encode_file_meta(&FileMeta::default());
    record[0] = FORMAT_VERSION + 1;
    let err = decode_file_meta(&record, &limits()).unwrap_err();
    assert_eq!(
        err,
        PersistError::UnsupportedVersion {
            record: "file metadata",
            version: FORMAT_VERSION + 1
        }
    );
    let text = err.to_string();
    assert!(text.contains("format version 2"), "{text}");
    assert!(text.contains("delete it"), "{text}");
}

#[test]
fn trailing_bytes_and_bad_flags_are_errors() {
    let mut record = encode_file_meta(&FileMeta::default());
    record.push(0);
    assert!(matches!(
        decode_file_meta(&record, &limits()),
        Err(PersistError::Invalid { .. })
    ));
    let mut record = encode_file_meta(&FileMeta::default());
    if let Some(flag) = record.last_mut() {
        *flag = 7;
    }
    let err = decode_file_meta(&record, &limits()).unwrap_err();
    assert!(err.to_string().contains("transaction flag 7"), "{err}");
}

#[test]
fn oversized_records_are_refused_before_decoding() {
    let small = DecodeLimits {
        max_body_bytes: 16,
        ..DecodeLimits::default()
    };
    let mut doc = Document::new();
    doc.insert("text".into(), Value::String("x".repeat(200)));
    let record = encode_object("Item", &PrimaryKey::Int(1), &doc);
    assert!(matches!(
        decode_object(&record, &small),
        Err(PersistError::Wire { .. })
    ));
}

#[test]
fn an_object_record_holding_another_objects_field_is_refused() {
    let instructions = vec![
        Instruction::CreateObject {
            collection: "Item".into(),
            key: PrimaryKey::Int(1),
        },
        Instruction::Set {
            path: Path::field("Item", PrimaryKey::Int(2), "n"),
            value: Value::Int(1),
        },
    ];
    let mut record = vec![FORMAT_VERSION, kind::OBJECT];
    record.extend_from_slice(&encode_changeset(&instructions));
    let err = decode_object(&record, &limits()).unwrap_err();
    assert!(err.to_string().contains("more than one object"), "{err}");
}

fn item_schema() -> Schema {
    let mut schema = Schema::default();
    schema.insert(
        CollectionSchema::top_level("Item", PrimaryKeyType::Int)
            .with(Property::new("n", ScalarType::Int))
            .with(Property {
                container: Container::List,
                ..Property::new("tags", ScalarType::String)
            }),
    );
    schema.insert(CollectionSchema {
        name: "Reading".into(),
        kind: CollectionKind::Asymmetric,
        primary_key: Some(PrimaryKeyType::Int),
        properties: [("v".to_string(), Property::new("v", ScalarType::Int))].into(),
    });
    schema
}

fn session(schema: Schema, state: Option<PersistedState>) -> ClientSession {
    let config = SessionConfig {
        path: "flx".into(),
        access_token: "t".into(),
        schema,
        reset_mode: ResetMode::Recover,
        async_open: false,
    };
    ClientSession::new(1, config, state)
}

/// A storage medium as simple as possible: the records in maps, as IndexedDB or SQLite hold them.
#[derive(Default)]
struct Medium {
    meta: Option<Vec<u8>>,
    schema: Option<Vec<u8>>,
    objects: BTreeMap<String, Vec<u8>>,
    pending: BTreeMap<u64, Vec<u8>>,
}

impl Medium {
    fn commit(&mut self, batch: PersistBatch) {
        for (key, record) in batch.objects {
            match record {
                Some(r) => self.objects.insert(key, r),
                None => self.objects.remove(&key),
            };
        }
        if batch.clear_pending {
            self.pending.clear();
        } else if batch.acknowledged > 0 {
            self.pending = self.pending.split_off(&(batch.acknowledged + 1));
        }
        self.pending.extend(batch.pending);
        if batch.meta.is_some() {
            self.meta = batch.meta;
        }
        if batch.schema.is_some() {
            self.schema = batch.schema;
        }
    }

    /// Commits every storage write the session emitted so far, in one batch.
    fn flush(&mut self, s: &mut ClientSession) {
        self.commit(PersistBatch::from_writes(writes(s)));
    }

    /// Commits every storage write the session emitted so far through `ahead`, without
    /// checkpointing; returns the batch that was committed.
    fn flush_ahead(&mut self, s: &mut ClientSession, ahead: &mut WriteAhead) -> PersistBatch {
        let batch = ahead.commit(writes(s));
        self.commit(batch.clone());
        batch
    }

    /// Restores the whole file, with what the driver continues from.
    fn restored(&self, declared: &Schema) -> Restored {
        restore(
            self.meta.as_deref().unwrap(),
            self.schema.as_deref(),
            self.objects.values(),
            self.pending.values(),
            declared,
            &limits(),
        )
        .unwrap()
    }

    fn restore(&self, declared: &Schema) -> Result<PersistedState, PersistError> {
        restore(
            self.meta.as_deref().unwrap(),
            self.schema.as_deref(),
            self.objects.values(),
            self.pending.values().rev(),
            declared,
            &limits(),
        )
        .map(|restored| restored.state)
    }
}

#[test]
fn a_session_restored_from_its_records_has_its_objects_queue_and_subscriptions() {
    let schema = item_schema();
    let mut s = session(schema.clone(), None);
    let mut medium = Medium::default();
    s.update_subscriptions(SubscriptionSet {
        version: 0,
        subscriptions: vec![Subscription {
            name: "all".into(),
            collection: "Item".into(),
            query: "TRUEPREDICATE".into(),
        }],
    });
    for i in 0..5 {
        s.write(10 + i as u64, |tx| {
            tx.create("Item", PrimaryKey::Int(i))?;
            tx.set(
                Path::field("Item", PrimaryKey::Int(i), "n"),
                Value::Int(i * 10),
            )?;
            tx.list_push(
                Path::field("Item", PrimaryKey::Int(i), "tags"),
                Value::String(format!("t{i}")),
            )?;
            let mut reading = Document::new();
            reading.insert("v".into(), Value::Int(i));
            tx.ingest("Reading", PrimaryKey::Int(i), reading)
        })
        .unwrap();
        if i % 2 == 0 {
            medium.flush(&mut s);
        }
    }
    s.write(20, |tx| tx.erase("Item", PrimaryKey::Int(3)))
        .unwrap();
    medium.flush(&mut s);

    let restored = medium.restore(&schema).unwrap();
    assert_eq!(restored.meta, *s.meta());
    assert_eq!(restored.pending, s.pending());
    assert_eq!(restored.store.digest(), s.store().digest());
    assert_eq!(restored.store.len("Item"), 4);
    let again = session(schema, Some(restored));
    assert_eq!(again.ingest_queue(), s.ingest_queue());
    assert_eq!(again.ingest_queue().objects, 5);
    assert_eq!(again.meta().subscriptions.subscriptions.len(), 1);
}

/// The storage writes the session emitted so far.
fn writes(s: &mut ClientSession) -> Vec<StorageWrite> {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            SessionEvent::Persist(w) => Some(w),
            _ => None,
        })
        .collect()
}

fn all_items() -> SubscriptionSet {
    SubscriptionSet {
        version: 0,
        subscriptions: vec![Subscription {
            name: "all".into(),
            collection: "Item".into(),
            query: "TRUEPREDICATE".into(),
        }],
    }
}

fn item(
    tx: &mut crate::store::WriteTransaction<'_>,
    i: i64,
) -> Result<(), crate::store::ApplyError> {
    tx.create("Item", PrimaryKey::Int(i))?;
    tx.set(Path::field("Item", PrimaryKey::Int(i), "n"), Value::Int(i))?;
    tx.list_push(
        Path::field("Item", PrimaryKey::Int(i), "tags"),
        Value::String(format!("t{i}")),
    )
}

/// A session whose items 0..3 are committed and checkpointed, with its medium and write-ahead.
fn checkpointed_items() -> (ClientSession, Medium, WriteAhead) {
    let mut s = session(item_schema(), None);
    let mut medium = Medium::default();
    let mut ahead = WriteAhead::new();
    s.update_subscriptions(all_items());
    medium.flush_ahead(&mut s, &mut ahead);
    s.write(1, |tx| (0..3).try_for_each(|i| item(tx, i)))
        .unwrap();
    assert!(medium.flush_ahead(&mut s, &mut ahead).objects.is_empty());
    medium.commit(ahead.checkpoint().unwrap());
    assert!(ahead.is_checkpointed());
    assert_eq!(medium.objects.len(), 3);
    (s, medium, ahead)
}

/// Local writes of every kind after the checkpoint: creates, field writes, integer adds, list
/// edits, an erase, and a Data Ingest object, which replay must not store.
fn local_writes(s: &mut ClientSession) {
    s.write(2, |tx| {
        item(tx, 3)?;
        tx.set(
            Path::field("Item", PrimaryKey::Int(0), "n"),
            Value::Int(100),
        )?;
        tx.list_push(
            Path::field("Item", PrimaryKey::Int(1), "tags"),
            Value::String("more".into()),
        )?;
        let mut reading = Document::new();
        reading.insert("v".into(), Value::Int(7));
        tx.ingest("Reading", PrimaryKey::Int(1), reading)
    })
    .unwrap();
    s.write(3, |tx| {
        tx.add_integer(Path::field("Item", PrimaryKey::Int(3), "n"), 5)?;
        tx.erase("Item", PrimaryKey::Int(2))
    })
    .unwrap();
}

#[test]
fn a_local_write_commits_only_its_changeset_and_is_restored_by_replay() {
    let schema = item_schema();
    let (mut s, mut medium, mut ahead) = checkpointed_items();
    let objects_before = medium.objects.clone();
    local_writes(&mut s);
    let batch = medium.flush_ahead(&mut s, &mut ahead);
    assert!(
        batch.objects.is_empty(),
        "the commit writes no object record"
    );
    assert_eq!(batch.pending.len(), 2);
    assert_eq!(medium.objects, objects_before);
    assert!(!ahead.is_checkpointed());

    // A reload between the commit and its checkpoint: the objects are replayed, exactly once
    // however often the file is restored.
    for _ in 0..2 {
        let restored = medium.restored(&schema);
        assert_eq!(restored.state.store.digest(), s.store().digest());
        assert_eq!(restored.state.meta, *s.meta());
        assert_eq!(restored.state.pending, s.pending());
        assert_eq!(restored.state.store.len("Reading"), 0);
        assert!(!restored.write_ahead.is_checkpointed());
    }
    let again = session(schema.clone(), Some(medium.restored(&schema).state));
    assert_eq!(again.ingest_queue(), s.ingest_queue());

    // After the checkpoint the records hold the objects and nothing is replayed.
    let checkpoint = ahead.checkpoint().unwrap();
    assert_eq!(
        checkpoint.objects.len(),
        4,
        "items 0, 1 and 3 put, item 2 deleted"
    );
    assert!(checkpoint.pending.is_empty());
    medium.commit(checkpoint);
    assert!(ahead.checkpoint().is_none());
    assert_eq!(medium.objects.len(), 3);
    let restored = medium.restored(&schema);
    assert_eq!(restored.state.store.digest(), s.store().digest());
    assert!(restored.write_ahead.is_checkpointed());
    assert_eq!(
        restored.state.pending,
        s.pending(),
        "the upload queue stays"
    );
}

#[test]
fn any_other_write_commits_the_kept_objects_with_it() {
    let schema = item_schema();
    let (mut s, mut medium, mut ahead) = checkpointed_items();
    local_writes(&mut s);
    // A subscription change is not a local commit: its batch writes the kept objects too.
    s.update_subscriptions(SubscriptionSet {
        version: 1,
        subscriptions: Vec::new(),
    });
    let batch = medium.flush_ahead(&mut s, &mut ahead);
    assert_eq!(batch.objects.len(), 4);
    assert!(ahead.is_checkpointed());
    assert!(ahead.checkpoint().is_none());
    let restored = medium.restored(&schema);
    assert_eq!(restored.state.store.digest(), s.store().digest());
    assert!(
        restored.write_ahead.is_checkpointed(),
        "nothing is replayed"
    );
}

#[test]
fn objects_replayed_at_restore_are_written_by_the_next_commit() {
    let schema = item_schema();
    let (mut s, mut medium, mut ahead) = checkpointed_items();
    local_writes(&mut s);
    medium.flush_ahead(&mut s, &mut ahead);
    let expected = s.store().digest();

    // Reloaded before the checkpoint: the replayed objects are kept by the restored write-ahead,
    // so a later commit that moves the marker past them writes them first.
    let restored = medium.restored(&schema);
    let mut ahead = restored.write_ahead;
    let mut s = session(schema.clone(), Some(restored.state));
    s.update_subscriptions(all_items());
    let batch = medium.flush_ahead(&mut s, &mut ahead);
    assert_eq!(batch.objects.len(), 4);
    let restored = medium.restored(&schema);
    assert!(restored.write_ahead.is_checkpointed());
    assert_eq!(restored.state.store.digest(), expected);
}

#[test]
fn a_changeset_that_does_not_replay_or_a_marker_past_the_last_version_is_an_error() {
    let schema = item_schema();
    let (mut s, mut medium, mut ahead) = checkpointed_items();
    s.write(2, |tx| {
        tx.set(Path::field("Item", PrimaryKey::Int(2), "n"), Value::Int(5))
    })
    .unwrap();
    medium.flush_ahead(&mut s, &mut ahead);
    // The object the replayed changeset writes is not in the records.
    medium
        .objects
        .retain(|_, record| decode_object(record, &limits()).unwrap().key != PrimaryKey::Int(2));
    let err = restore(
        medium.meta.as_deref().unwrap(),
        None,
        medium.objects.values(),
        medium.pending.values(),
        &schema,
        &limits(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not apply to the checkpointed objects"),
        "{err}"
    );

    let mut meta = s.meta().clone();
    meta.last_client_version = 1;
    let err = decode_file_meta_checkpointed(&encode_file_meta_checkpointed(&meta, 2), &limits())
        .unwrap_err();
    assert!(
        err.to_string().contains("past the last client version"),
        "{err}"
    );
}

#[test]
fn a_changed_schema_is_stored_and_restored_instead_of_the_declared_one() {
    let mut s = session(Schema::default(), None);
    let mut medium = Medium::default();
    s.write(1, |tx| {
        tx.add_collection("Item", CollectionKind::TopLevel, Some(PrimaryKeyType::Int))?;
        tx.add_property("Item", Property::new("n", ScalarType::Int))?;
        tx.create("Item", PrimaryKey::Int(1))
    })
    .unwrap();
    medium.flush(&mut s);
    assert!(medium.schema.is_some());
    let restored = medium.restore(&Schema::default()).unwrap();
    assert_eq!(restored.store.schema(), s.store().schema());
    assert_eq!(restored.store.len("Item"), 1);
}

fn appended(changeset: Changeset) -> PendingUpdate {
    PendingUpdate::Appended {
        body: encode_changeset(&changeset.instructions).into(),
        changeset,
    }
}

#[test]
fn a_replaced_pending_list_drops_what_was_appended_before_it() {
    let changeset = |version| Changeset {
        meta: ChangesetMeta {
            version,
            ..ChangesetMeta::default()
        },
        instructions: Vec::new(),
    };
    let write = |pending| StorageWrite {
        meta: FileMeta::default(),
        objects: Vec::new(),
        pending,
        schema: None,
    };
    let batch = PersistBatch::from_writes([
        write(appended(changeset(1))),
        write(PendingUpdate::Replaced(vec![changeset(2)])),
        write(appended(changeset(3))),
        write(PendingUpdate::Unchanged),
    ]);
    assert!(batch.clear_pending);
    assert_eq!(batch.pending.keys().copied().collect::<Vec<_>>(), [2, 3]);
    assert!(!batch.is_empty());
    assert!(PersistBatch::new().is_empty());
}

#[test]
fn an_acknowledgement_after_a_replaced_list_or_appends_in_one_batch_merges_in_order() {
    let changeset = |version| Changeset {
        meta: ChangesetMeta {
            version,
            ..ChangesetMeta::default()
        },
        instructions: Vec::new(),
    };
    let write = |pending| StorageWrite {
        meta: FileMeta::default(),
        objects: Vec::new(),
        pending,
        schema: None,
    };
    let acknowledged = |through, rewritten| PendingUpdate::Delta {
        acknowledged: through,
        rewritten,
    };
    let batch = PersistBatch::from_writes([
        write(appended(changeset(4))),
        write(appended(changeset(5))),
        write(acknowledged(4, vec![changeset(5)])),
        write(appended(changeset(6))),
    ]);
    assert!(!batch.clear_pending);
    assert_eq!(batch.acknowledged, 4, "stored records up to 4 are deleted");
    assert_eq!(batch.pending.keys().copied().collect::<Vec<_>>(), [5, 6]);
    assert!(!batch.is_empty());

    let batch = PersistBatch::from_writes([
        write(PendingUpdate::Replaced(vec![changeset(2), changeset(3)])),
        write(acknowledged(2, Vec::new())),
    ]);
    assert!(batch.clear_pending);
    assert_eq!(
        batch.acknowledged, 0,
        "the clear deletes everything already"
    );
    assert_eq!(batch.pending.keys().copied().collect::<Vec<_>>(), [3]);
    let batch = PersistBatch::from_writes([write(acknowledged(9, Vec::new()))]);
    assert!(!batch.is_empty());
}

fn download(version: u64, lirv: u64, changesets: Vec<DownloadChangeset>) -> ServerMessage {
    ServerMessage::Download {
        session: 1,
        progress: SyncProgress {
            download: DownloadCursor {
                server_version: version,
                last_integrated_client_version: lirv,
            },
            latest_server_version: version,
            ..SyncProgress::default()
        },
        downloadable_bytes: 0,
        batch_state: BatchState::SteadyState,
        query_version: 0,
        changesets,
        resets: Vec::new(),
        leaving: Vec::new(),
    }
}

/// An active session whose items 0..5 are pending as client versions 1..=5, each a commit of its
/// own, all on `medium`; and the medium.
fn five_pending_items() -> (ClientSession, Medium) {
    let mut s = session(item_schema(), None);
    let mut medium = Medium::default();
    s.handle_connected();
    s.handle_message(
        0,
        ServerMessage::Ident {
            session: 1,
            client_file_ident: 5,
            client_file_ident_salt: 6,
        },
    );
    s.handle_message(0, download(0, 0, Vec::new()));
    assert!(s.is_active());
    for i in 0..5 {
        s.write(i as u64 + 1, |tx| item(tx, i)).unwrap();
    }
    medium.flush(&mut s);
    while s.poll_transmit().is_some() {}
    assert_eq!(medium.pending.len(), 5);
    (s, medium)
}

fn versions(pending: &[Changeset]) -> Vec<u64> {
    pending.iter().map(|c| c.meta.version).collect()
}

#[test]
fn a_partial_acknowledgement_deletes_only_the_acknowledged_changesets() {
    let schema = item_schema();
    let (mut s, mut medium) = five_pending_items();
    s.handle_message(0, download(1, 2, Vec::new()));
    let emitted = writes(&mut s);
    assert!(
        emitted.iter().all(|w| matches!(
            &w.pending,
            PendingUpdate::Delta { acknowledged: 2, rewritten } if rewritten.is_empty()
        )),
        "an acknowledgement is a delta, not the whole list: {:?}",
        emitted.iter().map(|w| &w.pending).collect::<Vec<_>>()
    );
    let batch = PersistBatch::from_writes(emitted);
    assert!(!batch.clear_pending);
    assert!(batch.pending.is_empty(), "no changeset is written again");
    medium.commit(batch);

    // Reopened after the partial acknowledgement: exactly the unacknowledged changesets remain.
    let restored = medium.restore(&schema).unwrap();
    assert_eq!(versions(&restored.pending), [3, 4, 5]);
    assert_eq!(restored.pending, s.pending());
    assert_eq!(restored.store.digest(), s.store().digest());

    // An acknowledgement of nothing new writes nothing to the list.
    s.handle_message(0, download(1, 2, Vec::new()));
    assert!(writes(&mut s)
        .iter()
        .all(|w| matches!(w.pending, PendingUpdate::Unchanged)));
}

#[test]
fn a_download_rewrites_only_the_pending_changesets_it_transforms() {
    let schema = item_schema();
    let (mut s, mut medium) = five_pending_items();
    // Another client erased item 4 after the server integrated versions 1 and 2: version 5, which
    // sets its fields, loses them; versions 3 and 4 are untouched.
    let erase = [Instruction::EraseObject {
        collection: "Item".into(),
        key: PrimaryKey::Int(4),
    }];
    let body = encode_changeset(&erase);
    let remote = DownloadChangeset {
        server_version: 2,
        last_integrated_client_version: 2,
        origin_timestamp: 100,
        origin_file_ident: 9,
        original_size: body.len() as u64,
        body,
    };
    let before = s.pending()[2].clone();
    s.handle_message(0, download(2, 2, vec![remote]));
    assert!(s.is_active(), "{:?}", s.poll_event());
    assert_ne!(
        s.pending()[2],
        before,
        "the transformation rewrote version 5"
    );
    let writes = writes(&mut s);
    let rewritten: Vec<u64> = writes
        .iter()
        .flat_map(|w| match &w.pending {
            PendingUpdate::Delta {
                acknowledged: 2,
                rewritten,
            } => versions(rewritten),
            other => panic!("expected a delta acknowledging 2, got {other:?}"),
        })
        .collect();
    assert_eq!(rewritten, [5]);
    medium.commit(PersistBatch::from_writes(writes));
    let restored = medium.restore(&schema).unwrap();
    assert_eq!(versions(&restored.pending), [3, 4, 5]);
    assert_eq!(
        restored.pending,
        s.pending(),
        "the stored version 5 is the rewritten one"
    );
    assert_eq!(restored.store.digest(), s.store().digest());

    // The UPLOAD carries the rewritten version 5, not the body encoded when it was committed.
    let uploads: Vec<(u64, Vec<u8>)> = std::iter::from_fn(|| s.poll_transmit())
        .flat_map(|m| match m {
            ClientMessage::Upload { changesets, .. } => changesets,
            _ => Vec::new(),
        })
        .map(|c| (c.client_version, c.body))
        .collect();
    let expected: Vec<(u64, Vec<u8>)> = s
        .pending()
        .iter()
        .map(|c| (c.meta.version, encode_changeset(&c.instructions)))
        .collect();
    assert_eq!(uploads, expected);
}

#[test]
fn restoring_damaged_files_gives_errors() {
    let schema = item_schema();
    let mut s = session(schema.clone(), None);
    let mut medium = Medium::default();
    s.write(1, |tx| {
        tx.create("Item", PrimaryKey::Int(1))?;
        tx.set(Path::field("Item", PrimaryKey::Int(1), "n"), Value::Int(1))
    })
    .unwrap();
    medium.flush(&mut s);

    let mut twice = medium.pending.clone();
    let first = twice.values().next().cloned().unwrap();
    twice.insert(99, first);
    let err = restore(
        medium.meta.as_deref().unwrap(),
        None,
        medium.objects.values(),
        twice.values(),
        &schema,
        &limits(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("stored twice"), "{err}");

    let err = medium.restore(&Schema::default()).unwrap_err();
    assert!(err.to_string().contains("does not fit the schema"), "{err}");

    let mut doc = Document::new();
    doc.insert("n".into(), Value::String("not a number".into()));
    let misfit = encode_object("Item", &PrimaryKey::Int(2), &doc);
    let err = restore(
        medium.meta.as_deref().unwrap(),
        None,
        [misfit],
        medium.pending.values(),
        &schema,
        &limits(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PersistError::Invalid {
                record: "object",
                ..
            }
        ),
        "{err:?}"
    );
}
