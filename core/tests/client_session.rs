//! The client session against a misbehaving server: out-of-order messages, cursors that go
//! backwards, undecodable changesets. Each becomes an error event with the right code; local
//! data is never lost.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::panic)]

use eddy_core::changeset::{decode_changeset, encode_changeset, DecodeLimits, Instruction, Path};
use eddy_core::client::{ClientSession, ResetMode, SessionConfig, SessionEvent};
use eddy_core::protocol::{
    BatchState, ClientMessage, DownloadChangeset, DownloadCursor, ErrorCode, ServerMessage,
    SubscriptionSet, SyncProgress, UploadCursor,
};
use eddy_core::server::view::{encode_object_keys, object_keys};
use eddy_core::sim::sim_schema;
use eddy_core::value::{PrimaryKey, Value};

fn session() -> ClientSession {
    let config = SessionConfig {
        path: "flx".into(),
        access_token: "t".into(),
        schema: sim_schema(),
        reset_mode: ResetMode::Recover,
        async_open: false,
    };
    ClientSession::new(1, config, None)
}

/// A session that is bound, identified and active at server version 0.
fn active() -> ClientSession {
    let mut s = session();
    s.handle_connected();
    s.handle_message(
        0,
        ServerMessage::Ident {
            session: 1,
            client_file_ident: 5,
            client_file_ident_salt: 6,
        },
    );
    s.handle_message(0, download(0, 0, vec![]));
    assert!(s.is_active());
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    s
}

fn download(version: u64, lirv: u64, changesets: Vec<DownloadChangeset>) -> ServerMessage {
    download_acknowledging(version, lirv, UploadCursor::default(), changesets)
}

fn download_acknowledging(
    version: u64,
    lirv: u64,
    upload: UploadCursor,
    changesets: Vec<DownloadChangeset>,
) -> ServerMessage {
    ServerMessage::Download {
        session: 1,
        progress: SyncProgress {
            download: DownloadCursor {
                server_version: version,
                last_integrated_client_version: lirv,
            },
            upload,
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

fn errors(s: &mut ClientSession) -> Vec<ErrorCode> {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            SessionEvent::Error(error) => Some(error.code),
            _ => None,
        })
        .collect()
}

fn write_one(s: &mut ClientSession) {
    s.write(1, |tx| {
        tx.create("Item", PrimaryKey::Int(1))?;
        tx.set(Path::field("Item", PrimaryKey::Int(1), "n"), Value::Int(3))
    })
    .unwrap();
}

#[test]
fn a_session_that_discards_storage_writes_still_syncs_and_persists_nothing() {
    let mut s = active();
    s.discard_storage_writes();
    write_one(&mut s);
    let sent: Vec<ClientMessage> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(matches!(&sent[..], [ClientMessage::Upload { .. }]));
    s.handle_message(0, download(2, 1, vec![remote_item(1, 2)]));
    let events: Vec<SessionEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, SessionEvent::Changes(_))));
    assert!(
        !events.iter().any(|e| matches!(e, SessionEvent::Persist(_))),
        "{events:?}"
    );
    assert!(s.pending().is_empty());
    assert!(s.store().get("Item", &PrimaryKey::Int(2)).is_some());
}

/// The download cursors of the UPLOADs `s` sends, with how many changesets each carries.
fn uploads(s: &mut ClientSession) -> Vec<(u64, usize)> {
    std::iter::from_fn(|| s.poll_transmit())
        .filter_map(|m| match m {
            ClientMessage::Upload {
                download_server_version,
                changesets,
                ..
            } => Some((download_server_version, changesets.len())),
            _ => None,
        })
        .collect()
}

/// A changeset of another client at `version`, creating item `key`.
fn remote_item(version: u64, key: i64) -> DownloadChangeset {
    DownloadChangeset {
        server_version: version,
        last_integrated_client_version: 0,
        origin_timestamp: 5,
        origin_file_ident: 9,
        original_size: 0,
        body: encode_changeset(&[Instruction::CreateObject {
            collection: "Item".into(),
            key: PrimaryKey::Int(key),
        }]),
    }
}

#[test]
fn a_reader_reports_its_download_cursor_at_most_once_a_second() {
    let mut s = active();
    // The queue report after IDENT (an empty queue) is the only timer.
    s.handle_timeout(s.poll_timeout().unwrap());
    assert_eq!(
        uploads(&mut s),
        vec![],
        "the server knows cursor 0 from IDENT"
    );
    assert_eq!(s.poll_timeout(), None);
    s.handle_message(10_000, download(1, 0, vec![remote_item(1, 1)]));
    assert!(s.poll_timeout().is_some_and(|t| t <= 10_000));
    s.handle_timeout(10_000);
    assert_eq!(uploads(&mut s), vec![(1, 0)], "reported at once");
    assert_eq!(s.poll_timeout(), None);

    s.handle_message(10_100, download(2, 0, vec![remote_item(2, 2)]));
    s.handle_message(10_200, download(3, 0, vec![remote_item(3, 3)]));
    let due = s.poll_timeout().unwrap();
    assert_eq!(due, 11_000);
    s.handle_timeout(due - 1);
    assert_eq!(uploads(&mut s), vec![], "a second after the last report");
    s.handle_timeout(due);
    assert_eq!(uploads(&mut s), vec![(3, 0)]);

    // A write's UPLOAD carries the cursor instead, and none is reported while it is in flight.
    s.handle_message(11_100, download(4, 0, vec![remote_item(4, 4)]));
    write_one(&mut s);
    assert_eq!(uploads(&mut s), vec![(4, 1)]);
    s.handle_message(11_200, download(5, 0, vec![remote_item(5, 5)]));
    // (The write wants the ingest queue checked: that is the timer left.)
    s.handle_timeout(s.poll_timeout().unwrap().max(12_200));
    assert_eq!(uploads(&mut s), vec![], "an UPLOAD is in flight");
    s.handle_message(11_300, download(6, 1, vec![]));
    s.handle_timeout(s.poll_timeout().unwrap().max(11_300));
    assert_eq!(
        uploads(&mut s),
        vec![(6, 0)],
        "acknowledged: the cursor is reported"
    );

    // After a reconnect, IDENT tells the server the cursor.
    s.handle_disconnected();
    s.handle_connected();
    s.handle_message(20_000, download(6, 1, vec![]));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_download_before_ident_is_an_error() {
    let mut s = session();
    s.handle_connected();
    s.handle_message(0, download(1, 0, vec![]));
    assert_eq!(errors(&mut s), vec![ErrorCode::BadMessageOrder]);
    assert!(s.is_closed());
}

#[test]
fn a_cursor_that_goes_backwards_is_bad_progress_and_keeps_local_writes() {
    let mut s = active();
    s.handle_message(0, download(3, 0, vec![]));
    write_one(&mut s);
    s.handle_message(0, download(2, 0, vec![]));
    assert_eq!(errors(&mut s), vec![ErrorCode::BadProgress]);
    assert_eq!(s.pending().len(), 1, "the local write is still pending");
    assert!(s.store().get("Item", &PrimaryKey::Int(1)).is_some());
    // The session asks the server to end it.
    assert!(
        std::iter::from_fn(|| s.poll_transmit()).any(|m| matches!(m, ClientMessage::Unbind { .. }))
    );
}

#[test]
fn an_undecodable_changeset_is_bad_changeset() {
    let mut s = active();
    let garbage = DownloadChangeset {
        server_version: 1,
        last_integrated_client_version: 0,
        origin_timestamp: 0,
        origin_file_ident: 9,
        original_size: 3,
        body: vec![0x01, 0x7f, 0x7f],
    };
    s.handle_message(0, download(1, 0, vec![garbage]));
    assert_eq!(errors(&mut s), vec![ErrorCode::BadChangeset]);
}

#[test]
fn claims_about_versions_never_made_are_refused() {
    let mut s = active();
    s.handle_message(0, download(1, 7, vec![]));
    assert_eq!(errors(&mut s), vec![ErrorCode::BadProgress]);
}

#[test]
fn uploads_wait_for_the_previous_acknowledgement() {
    let mut s = active();
    write_one(&mut s);
    let sent: Vec<ClientMessage> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(
        matches!(&sent[..], [ClientMessage::Upload { changesets, .. }] if changesets.len() == 1)
    );
    s.write(2, |tx| {
        tx.add_integer(Path::field("Item", PrimaryKey::Int(1), "c"), 1)
    })
    .unwrap();
    assert!(s.poll_transmit().is_none(), "one UPLOAD at a time");
    s.handle_message(0, download(1, 1, vec![]));
    let sent: Vec<ClientMessage> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(
        matches!(&sent[..], [ClientMessage::Upload { changesets, .. }]
        if changesets.len() == 1 && changesets[0].client_version == 2 && changesets[0].last_integrated_server_version == 1)
    );
    assert_eq!(s.pending().len(), 1);
}

#[test]
fn an_expired_token_waits_for_refresh_then_binds_again_keeping_local_writes() {
    let mut s = active();
    write_one(&mut s);
    while s.poll_transmit().is_some() {}
    s.handle_message(
        0,
        ServerMessage::Error {
            session: 1,
            code: ErrorCode::TokenExpired,
            message: "expired".into(),
            compensating: None,
        },
    );
    assert_eq!(errors(&mut s), vec![ErrorCode::TokenExpired]);
    assert!(matches!(
        s.poll_transmit(),
        Some(ClientMessage::Unbind { .. })
    ));
    // Reconnecting does not bind with the expired token.
    s.handle_disconnected();
    s.handle_connected();
    assert!(s.poll_transmit().is_none());
    s.refresh("fresh".into());
    let sent: Vec<ClientMessage> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(
        matches!(&sent[0], ClientMessage::Bind { access_token, .. } if access_token == "fresh")
    );
    assert!(matches!(&sent[1], ClientMessage::Ident { .. }));
    assert_eq!(s.pending().len(), 1, "the local write survived");
}

#[test]
fn ingested_objects_wait_in_the_queue_until_acknowledged_and_are_never_readable() {
    let mut s = active();
    let mut doc = eddy_core::value::Document::new();
    doc.insert("value".into(), Value::Int(7));
    for key in 0..3 {
        s.write(100 + key as u64, |tx| {
            tx.ingest("Reading", PrimaryKey::Int(key), doc.clone())
        })
        .unwrap();
    }
    // Inside a write, next to ordinary changes.
    s.write(200, |tx| {
        tx.ingest("Reading", PrimaryKey::Int(9), doc.clone())?;
        tx.create("Item", PrimaryKey::Int(1))
    })
    .unwrap();
    let queue = s.ingest_queue();
    assert_eq!(queue.objects, 4);
    assert!(queue.bytes > 0);
    assert_eq!(queue.oldest_timestamp, Some(100));
    assert_eq!(s.store().len("Reading"), 0);
    assert_eq!(s.store().len("Item"), 1);
    let query = eddy_core::query::parse("TRUEPREDICATE").unwrap();
    let err = query.validate(s.store().schema(), "Reading").unwrap_err();
    assert!(err.to_string().contains("asymmetric"), "{err}");
    let err = s
        .write(300, |tx| tx.create("Reading", PrimaryKey::Int(1)))
        .unwrap_err();
    assert!(err.to_string().contains("ingest"), "{err}");

    // Uploads go one at a time; each acknowledgement shortens the queue.
    let mut server_version = 0;
    let mut uploaded = 0;
    while let Some(ClientMessage::Upload { changesets, .. }) = s.poll_transmit() {
        uploaded += changesets.len();
        server_version += 1;
        let last = changesets.last().unwrap().client_version;
        s.handle_message(0, download(server_version, last, vec![]));
        assert_eq!(
            s.ingest_queue().objects,
            4 - last.min(4),
            "after acknowledging {last}"
        );
    }
    assert_eq!(uploaded, 4);
    assert!(s.pending().is_empty());
}

#[test]
fn a_leaving_object_erased_and_recreated_locally_is_still_released() {
    let item = || ("Item".to_owned(), PrimaryKey::Int(1));
    let mut s = active();
    write_one(&mut s);
    while s.poll_transmit().is_some() {}
    s.handle_message(0, download(1, 1, vec![]));
    s.write(2, |tx| {
        tx.add_integer(Path::field("Item", PrimaryKey::Int(1), "c"), 1)
    })
    .unwrap();
    while s.poll_transmit().is_some() {}
    // The object leaves the view while a pending write touches it: it is not released yet.
    let mut leaving = download(2, 1, vec![]);
    if let ServerMessage::Download { leaving: l, .. } = &mut leaving {
        *l = encode_object_keys(&[item()]);
    }
    s.handle_message(0, leaving);
    s.write(3, |tx| tx.erase("Item", PrimaryKey::Int(1)))
        .unwrap();
    // A DOWNLOAD arrives while the object is erased locally: it must stay leaving, because the
    // server hints it only once per session and never saw it erased.
    s.handle_message(0, download(3, 2, vec![]));
    s.write(4, |tx| {
        tx.create("Item", PrimaryKey::Int(1))?;
        tx.set(Path::field("Item", PrimaryKey::Int(1), "n"), Value::Int(4))
    })
    .unwrap();
    let mut sent: Vec<ClientMessage> = std::iter::from_fn(|| s.poll_transmit()).collect();
    s.handle_message(0, download(4, 3, vec![]));
    sent.extend(std::iter::from_fn(|| s.poll_transmit()));
    s.handle_message(0, download(5, 4, vec![]));
    sent.extend(std::iter::from_fn(|| s.poll_transmit()));
    let released: Vec<_> = sent
        .iter()
        .filter_map(|m| match m {
            ClientMessage::Release { objects, .. } => Some(object_keys(
                &decode_changeset(objects, &DecodeLimits::default()).unwrap(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        released,
        vec![vec![item()]],
        "released once its writes were acknowledged"
    );
    assert!(!s.view_settled(), "waiting for the server's reset");
}

/// The (objects, oldest age) of each INGEST_STATUS sent, with the names of all messages sent.
fn sent(s: &mut ClientSession) -> (Vec<&'static str>, Vec<(u64, u64)>) {
    let mut names = Vec::new();
    let mut reports = Vec::new();
    while let Some(msg) = s.poll_transmit() {
        names.push(msg.name());
        if let ClientMessage::IngestStatus { collections, .. } = msg {
            assert_eq!(collections.len(), 1, "one entry per asymmetric collection");
            assert_eq!(collections[0].collection, "Reading");
            reports.push((collections[0].objects, collections[0].oldest_age_ms));
        }
    }
    (names, reports)
}

#[test]
fn the_ingest_queue_is_reported_after_ident_and_on_change_at_most_once_a_second() {
    let mut s = session();
    let mut doc = eddy_core::value::Document::new();
    doc.insert("value".into(), Value::Int(7));
    let reading = |key: i64| {
        let doc = doc.clone();
        move |tx: &mut eddy_core::store::WriteTransaction<'_>| {
            tx.ingest("Reading", PrimaryKey::Int(key), doc)
        }
    };
    // Offline: nothing is reported, and no timer is wanted.
    s.write(1_000, reading(1)).unwrap();
    assert_eq!(s.poll_timeout(), None);
    s.handle_connected();
    s.handle_message(
        2_000,
        ServerMessage::Ident {
            session: 1,
            client_file_ident: 5,
            client_file_ident_salt: 6,
        },
    );
    // Right after IDENT, whatever the queue holds.
    assert_eq!(
        sent(&mut s),
        (vec!["BIND", "IDENT", "INGEST_STATUS"], vec![(1, 1_000)])
    );

    // The first DOWNLOAD starts the upload; the queue did not change, so nothing more is said.
    s.handle_message(2_100, download(0, 0, vec![]));
    assert_eq!(sent(&mut s), (vec!["UPLOAD"], vec![]));
    assert_eq!(s.poll_timeout(), Some(3_000));
    s.handle_timeout(3_000);
    assert_eq!(sent(&mut s), (vec![], vec![]));
    assert_eq!(s.poll_timeout(), None);

    // That check counts against the throttle too (checking scans the whole queue): a change
    // right after it waits for the second to pass.
    s.write(3_100, reading(2)).unwrap();
    assert_eq!(sent(&mut s).1, vec![]);
    assert_eq!(s.poll_timeout(), Some(4_000));
    s.handle_timeout(4_000);
    assert_eq!(sent(&mut s).1, vec![(2, 3_000)]);
    // Changes within the second wait for it, and go out as one report.
    s.write(4_500, reading(3)).unwrap();
    s.write(4_600, reading(4)).unwrap();
    assert_eq!(sent(&mut s).1, vec![]);
    assert_eq!(s.poll_timeout(), Some(5_000));
    s.handle_timeout(4_900);
    assert_eq!(sent(&mut s).1, vec![]);
    s.handle_timeout(5_000);
    assert_eq!(sent(&mut s).1, vec![(4, 4_000)]);

    // Acknowledged: the emptied queue is reported with no age.
    s.handle_message(5_200, download(1, 1, vec![]));
    let (names, _) = sent(&mut s);
    assert_eq!(names, vec!["UPLOAD"]);
    s.handle_message(5_300, download(2, 4, vec![]));
    assert_eq!(s.ingest_queue().objects, 0);
    // The new download cursor goes out at once, in an UPLOAD of its own (no other UPLOAD can
    // carry it); the queue's report waits for its throttle.
    s.handle_timeout(5_300);
    assert_eq!(sent(&mut s), (vec!["UPLOAD"], vec![]));
    s.handle_timeout(s.poll_timeout().unwrap());
    assert_eq!(sent(&mut s).1, vec![(0, 0)]);

    // A reconnect reports again, even though nothing changed.
    s.handle_disconnected();
    assert_eq!(s.poll_timeout(), None);
    s.handle_connected();
    s.handle_timeout(s.poll_timeout().unwrap().max(5_400));
    assert_eq!(
        sent(&mut s),
        (vec!["BIND", "IDENT", "INGEST_STATUS"], vec![(0, 0)])
    );
}

/// One part of a bootstrap at server version `version`: resets that create `Item`s with the
/// given keys.
fn bootstrap_part(version: u64, batch_state: BatchState, keys: &[i64]) -> ServerMessage {
    let mut resets = Vec::new();
    for &k in keys {
        let key = PrimaryKey::Int(k);
        resets.push(Instruction::EraseObject {
            collection: "Item".into(),
            key: key.clone(),
        });
        resets.push(Instruction::CreateObject {
            collection: "Item".into(),
            key: key.clone(),
        });
        resets.push(Instruction::Set {
            path: Path::field("Item", key, "n"),
            value: Value::Int(k),
        });
    }
    let mut msg = download(version, 0, vec![]);
    if let ServerMessage::Download {
        resets: r,
        batch_state: b,
        query_version,
        ..
    } = &mut msg
    {
        *r = encode_changeset(&resets);
        *b = batch_state;
        *query_version = 1;
    }
    msg
}

/// An active session that asked for subscription set 1, which is bootstrapping.
fn subscribed() -> ClientSession {
    let mut s = active();
    s.update_subscriptions(SubscriptionSet::default());
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    s
}

fn items(s: &ClientSession) -> usize {
    s.store().len("Item")
}

#[test]
fn a_split_bootstrap_is_held_back_then_applied_at_once_on_last_in_batch() {
    let mut s = subscribed();
    s.handle_message(0, bootstrap_part(2, BatchState::MoreToCome, &[1, 2]));
    s.handle_message(0, bootstrap_part(3, BatchState::MoreToCome, &[3]));
    assert!(s.bootstrap_in_progress());
    assert_eq!(items(&s), 0, "nothing of the bootstrap is visible yet");
    assert_eq!(
        s.meta().download.server_version,
        0,
        "the cursor has not moved"
    );
    assert!(
        s.poll_event().is_none(),
        "no storage write and no change yet"
    );
    // Local writes keep working meanwhile, on the state before the bootstrap.
    write_one(&mut s);
    let events: Vec<SessionEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.iter().all(|e| matches!(
        e,
        SessionEvent::Persist(w) if w.meta.download.server_version == 0
    )));
    s.handle_message(0, bootstrap_part(4, BatchState::LastInBatch, &[4]));
    assert!(!s.bootstrap_in_progress());
    assert_eq!(items(&s), 4, "every part applied");
    assert_eq!(s.meta().download.server_version, 4);
    let events: Vec<SessionEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    let persists: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Persist(w) => Some(w.meta.download.server_version),
            _ => None,
        })
        .collect();
    assert_eq!(
        persists,
        vec![4],
        "one storage write for the whole bootstrap"
    );
    let inserted: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Changes(c) => {
                Some(c.collection("Item").map_or(0, |c| c.insertions().len()))
            }
            _ => None,
        })
        .collect();
    // Item 1 was written locally before: its reset replaces it, the other three are new.
    assert_eq!(
        inserted,
        vec![3],
        "one change notification for the whole bootstrap"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::Subscription {
            version: 1,
            state: eddy_core::client::SubscriptionState::Complete
        }
    )));
}

#[test]
fn a_disconnect_mid_bootstrap_keeps_the_previous_state_and_the_bootstrap_restarts() {
    let mut s = subscribed();
    s.handle_message(0, bootstrap_part(2, BatchState::MoreToCome, &[1, 2]));
    s.handle_disconnected();
    assert!(!s.bootstrap_in_progress(), "the held-back part is dropped");
    assert_eq!(items(&s), 0);
    s.handle_connected();
    let ident = std::iter::from_fn(|| s.poll_transmit()).find_map(|m| match m {
        ClientMessage::Ident { download, .. } => Some(download),
        _ => None,
    });
    assert_eq!(
        ident.map(|d| d.server_version),
        Some(0),
        "IDENT asks again from before the bootstrap"
    );
    s.handle_message(0, bootstrap_part(2, BatchState::MoreToCome, &[1, 2]));
    s.handle_message(0, bootstrap_part(3, BatchState::LastInBatch, &[3]));
    assert_eq!(items(&s), 3);
    assert!(errors(&mut s).is_empty());
}

#[test]
fn a_bootstrap_over_the_limit_is_refused_and_nothing_of_it_applied() {
    let mut s = subscribed();
    s.set_max_bootstrap_bytes(200);
    s.handle_message(0, bootstrap_part(2, BatchState::MoreToCome, &[1]));
    assert!(errors(&mut s).is_empty(), "the first part fits");
    s.handle_message(
        0,
        bootstrap_part(3, BatchState::MoreToCome, &[2, 3, 4, 5, 6, 7, 8]),
    );
    let events: Vec<SessionEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    let message = events.iter().find_map(|e| match e {
        SessionEvent::Error(e) if e.code == ErrorCode::LimitsExceeded => Some(e.message.clone()),
        _ => None,
    });
    assert!(
        message.is_some_and(|m| m.contains("200 bytes")),
        "a clear error: {events:?}"
    );
    assert!(!s.bootstrap_in_progress(), "the buffer is freed");
    assert_eq!(items(&s), 0);
    assert_eq!(s.meta().download.server_version, 0);
}

#[test]
fn a_bootstrap_whose_last_part_is_broken_leaves_nothing_applied() {
    let mut s = subscribed();
    write_one(&mut s);
    while s.poll_event().is_some() {}
    s.handle_message(0, bootstrap_part(2, BatchState::MoreToCome, &[7, 8]));
    let mut last = bootstrap_part(3, BatchState::LastInBatch, &[9]);
    if let ServerMessage::Download { resets, .. } = &mut last {
        resets.truncate(resets.len() / 2);
    }
    s.handle_message(0, last);
    assert_eq!(errors(&mut s), vec![ErrorCode::BadChangeset]);
    assert_eq!(
        items(&s),
        1,
        "only the local object; no part of the bootstrap"
    );
    assert!(s.store().get("Item", &PrimaryKey::Int(7)).is_none());
    assert_eq!(s.meta().download.server_version, 0);
    assert_eq!(s.pending().len(), 1, "the local write is still pending");
}

#[test]
fn a_mark_answered_during_a_bootstrap_completes_only_after_it() {
    let mut s = subscribed();
    let request = s.request_download_completion();
    s.handle_message(0, bootstrap_part(2, BatchState::MoreToCome, &[1]));
    s.handle_message(
        0,
        ServerMessage::Mark {
            session: 1,
            request,
        },
    );
    assert!(
        s.poll_event().is_none(),
        "not complete while the bootstrap is held back"
    );
    s.handle_message(0, bootstrap_part(3, BatchState::LastInBatch, &[2]));
    let events: Vec<SessionEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    let persist = events
        .iter()
        .position(|e| matches!(e, SessionEvent::Persist(_)));
    let complete = events
        .iter()
        .position(|e| matches!(e, SessionEvent::DownloadComplete { .. }));
    assert!(persist.is_some() && complete > persist, "{events:?}");
}

#[test]
fn a_download_that_fails_halfway_leaves_nothing_applied() {
    let mut s = active();
    write_one(&mut s);
    let tags = Path::field("Item", PrimaryKey::Int(1), "tags");
    s.write(2, |tx| tx.list_insert(tags.clone(), 0, Value::Int(1)))
        .unwrap();
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    let (store, pending, cursor) = (s.store().clone(), s.pending().to_vec(), s.meta().download);
    assert_eq!(pending.len(), 2);

    // The server integrated our first changeset, then made two: the first drops it from the
    // pending list, rewrites our concurrent insert and applies; the second cannot apply.
    let changeset = |server_version, instructions: &[Instruction]| DownloadChangeset {
        server_version,
        last_integrated_client_version: 1,
        origin_timestamp: 5,
        origin_file_ident: 9,
        original_size: 0,
        body: encode_changeset(instructions),
    };
    let good = changeset(
        1,
        &[
            Instruction::ListInsert {
                list: tags.clone(),
                index: 0,
                value: Value::Int(7),
                prior_size: 0,
            },
            Instruction::CreateObject {
                collection: "Item".into(),
                key: PrimaryKey::Int(2),
            },
        ],
    );
    let bad = changeset(
        2,
        &[Instruction::Set {
            path: Path::field("Item", PrimaryKey::Int(1), "n"),
            value: Value::String("not a number".into()),
        }],
    );
    s.handle_message(0, download(2, 1, vec![good, bad]));
    assert_eq!(errors(&mut s), vec![ErrorCode::BadChangeset]);
    assert!(s.store() == &store, "the first changeset stayed applied");
    assert_eq!(s.pending(), &pending[..]);
    assert_eq!(s.meta().download, cursor);
}

/// A DOWNLOAD at server version 1 whose upload cursor names client version `client_version`
/// made at `made`.
fn acknowledging(client_version: u64, made: u64) -> ServerMessage {
    let upload = UploadCursor {
        client_version,
        last_integrated_server_version: 1,
        origin_timestamp: made,
    };
    download_acknowledging(1, 0, upload, vec![])
}

#[test]
fn an_upload_cursor_naming_another_changeset_resets_the_file_keeping_the_local_one() {
    // The file's write (version 1, made at 1 ms) is not the changeset the server integrated
    // under version 1 (made at 99 ms): the file lost that one and reused its version.
    let mut s = active();
    write_one(&mut s);
    while s.poll_transmit().is_some() {}
    s.handle_message(2, acknowledging(1, 99));
    assert_eq!(errors(&mut s), vec![ErrorCode::DivergingHistories]);
    assert_eq!(s.pending().len(), 1, "the local write is not dropped");
    let sent: Vec<ClientMessage> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(
        sent.iter().any(|m| matches!(
            m,
            ClientMessage::ClientVersionRequest {
                client_file_ident: 5,
                from_client_version: 1,
                ..
            }
        )),
        "{sent:?}"
    );
    // What the server sent before it saw the UNBIND belongs to the old binding.
    s.handle_message(2, acknowledging(1, 99));
    s.handle_message(2, ServerMessage::Unbound { session: 1 });
    assert_eq!(errors(&mut s), Vec::new());
    assert_eq!(s.pending().len(), 1);

    // The same version made at the same time is this file's own changeset: acknowledged.
    let mut s = active();
    write_one(&mut s);
    s.handle_message(2, acknowledging(1, 1));
    assert_eq!(errors(&mut s), Vec::new());
    assert!(s.is_active());

    // A version the file never made: it lost changes too.
    let mut s = active();
    s.handle_message(2, acknowledging(3, 5));
    assert_eq!(errors(&mut s), vec![ErrorCode::DivergingHistories]);
    assert!(!s.is_closed(), "the session resets rather than ends");
}
