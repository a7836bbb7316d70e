//! The server engine against bad input and the less common protocol paths: malformed and
//! out-of-order messages, bad tokens, forged client files, bad queries, transactions, state
//! transfer, marks, keepalive, token expiry and view changes in a catch-up split over several
//! DOWNLOADs. Each error must carry the right code and must not disturb other sessions.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::panic)]

use eddy_core::changeset::{decode_changeset, encode_changeset, DecodeLimits, Instruction, Path};
use eddy_core::protocol::{
    encode_client_message, ClientMessage, DownloadCursor, ErrorAction, ErrorCode,
    IngestStatusEntry, IntegratedChangeset, ServerMessage, Subscription, SubscriptionSet,
    TransactResult, UploadChangeset,
};
use eddy_core::server::view::{decode_object, encode_object_keys, object_keys, ObjectKey};
use eddy_core::server::{
    AuthError, AuthenticatedUser, Authenticator, ConnectionId, MemoryStorage, ServerConfig,
    ServerEngine, ServerEvent, ServerStorage,
};
use eddy_core::sim::sim_schema;
use eddy_core::value::{Link, PrimaryKey, Value};

/// Tokens: `good:<user>` (expires at 1,000,000 ms), `expired:<user>`, anything else is invalid.
struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, token: &str, now_ms: u64) -> Result<AuthenticatedUser, AuthError> {
        if let Some(user) = token.strip_prefix("good:") {
            return Ok(AuthenticatedUser {
                id: user.into(),
                expires_at_ms: 1_000_000,
            });
        }
        if token.starts_with("expired:") || now_ms >= 1_000_000 {
            return Err(AuthError::Expired);
        }
        Err(AuthError::Invalid("unknown token format".into()))
    }
}

struct Harness {
    engine: ServerEngine<MemoryStorage, TestAuth>,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        Harness::with_config(ServerConfig::new(sim_schema(), 42))
    }

    fn with_config(config: ServerConfig) -> Self {
        Harness {
            engine: ServerEngine::new(config, MemoryStorage::new(), TestAuth).unwrap(),
            now: 1,
        }
    }

    fn connect(&mut self, conn: ConnectionId) {
        self.engine.handle_connect(conn, self.now);
    }

    fn send(
        &mut self,
        conn: ConnectionId,
        msg: ClientMessage,
    ) -> Vec<(ConnectionId, ServerMessage)> {
        self.engine
            .handle_frame(conn, self.now, &encode_client_message(&msg));
        self.drain()
    }

    fn drain(&mut self) -> Vec<(ConnectionId, ServerMessage)> {
        std::iter::from_fn(|| self.engine.poll_transmit().unwrap()).collect()
    }

    fn closed(&mut self) -> Vec<ConnectionId> {
        std::iter::from_fn(|| self.engine.poll_event())
            .filter_map(|e| match e {
                ServerEvent::CloseConnection { connection } => Some(connection),
                _ => None,
            })
            .collect()
    }

    /// Replaces session 1's subscriptions on `conn` with one `Item` query (set version 1) and
    /// checks the server took it.
    fn subscribe_items(&mut self, conn: ConnectionId, query: &str) {
        let set = SubscriptionSet {
            version: 1,
            subscriptions: vec![Subscription {
                name: query.into(),
                collection: "Item".into(),
                query: query.into(),
            }],
        };
        let out = self.send(
            conn,
            ClientMessage::Query {
                session: 1,
                subscriptions: set,
            },
        );
        assert!(error_code(&out).is_none(), "{out:?}");
    }

    /// Binds and identifies session 1 on `conn` for `user`; returns (file ident, salt).
    fn open(&mut self, conn: ConnectionId, user: &str) -> (u64, u64) {
        self.connect(conn);
        let out = self.send(conn, bind(1, &format!("good:{user}"), true));
        let (ident, salt) = match &out[..] {
            [(
                _,
                ServerMessage::Ident {
                    client_file_ident,
                    client_file_ident_salt,
                    ..
                },
            )] => (*client_file_ident, *client_file_ident_salt),
            other => panic!("expected IDENT, got {other:?}"),
        };
        let out = self.send(conn, ident_msg(1, ident, salt, DownloadCursor::default()));
        assert!(
            matches!(out[..], [(_, ServerMessage::Download { .. })]),
            "expected the first DOWNLOAD, got {out:?}"
        );
        (ident, salt)
    }
}

fn bind(session: u64, token: &str, need_ident: bool) -> ClientMessage {
    ClientMessage::Bind {
        session,
        path: "flx".into(),
        access_token: token.into(),
        need_client_file_ident: need_ident,
    }
}

fn ident_msg(session: u64, ident: u64, salt: u64, download: DownloadCursor) -> ClientMessage {
    ClientMessage::Ident {
        session,
        client_file_ident: ident,
        client_file_ident_salt: salt,
        download,
        latest_server_version: 0,
        latest_server_version_salt: 0,
        subscriptions: SubscriptionSet::default(),
    }
}

fn create_item(key: i64, n: i64) -> Vec<Instruction> {
    vec![
        Instruction::CreateObject {
            collection: "Item".into(),
            key: PrimaryKey::Int(key),
        },
        Instruction::Set {
            path: Path::field("Item", PrimaryKey::Int(key), "n"),
            value: Value::Int(n),
        },
    ]
}

fn upload(
    session: u64,
    ident: u64,
    version: u64,
    base: u64,
    instructions: &[Instruction],
) -> ClientMessage {
    ClientMessage::Upload {
        session,
        download_server_version: base,
        changesets: vec![UploadChangeset {
            client_version: version,
            last_integrated_server_version: base,
            origin_timestamp: 10 * version,
            origin_file_ident: ident,
            body: encode_changeset(instructions),
        }],
    }
}

fn error_code(out: &[(ConnectionId, ServerMessage)]) -> Option<(u64, ErrorCode)> {
    out.iter().find_map(|(_, m)| match m {
        ServerMessage::Error { session, code, .. } => Some((*session, *code)),
        _ => None,
    })
}

#[test]
fn malformed_frames_close_only_that_connection() {
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    h.connect(2);
    h.engine.handle_frame(2, h.now, &[0xff, 0x00, 0x01]);
    let out = h.drain();
    assert_eq!(error_code(&out), Some((0, ErrorCode::UnknownMessage)));
    assert_eq!(h.closed(), vec![2]);
    h.connect(3);
    h.engine.handle_frame(3, h.now, &[0x01, 0x01]);
    assert_eq!(error_code(&h.drain()), Some((0, ErrorCode::BadSyntax)));
    h.connect(4);
    h.engine.handle_frame(4, h.now, &[]);
    assert!(error_code(&h.drain()).is_some());
    // The first connection keeps syncing.
    let out = h.send(1, upload(1, ident, 1, 0, &create_item(1, 5)));
    assert!(
        matches!(&out[..], [(1, ServerMessage::Download { progress, .. })] if progress.upload.client_version == 1)
    );
    assert_eq!(h.engine.latest_version(), 1);
}

#[test]
fn oversized_frames_are_refused_with_limits_exceeded() {
    let mut config = ServerConfig::new(sim_schema(), 1);
    config.message_limits.max_message_bytes = 64;
    let mut engine = ServerEngine::new(config, MemoryStorage::new(), TestAuth).unwrap();
    engine.handle_connect(1, 0);
    engine.handle_frame(
        1,
        0,
        &encode_client_message(&bind(1, &format!("good:{}", "x".repeat(100)), true)),
    );
    let out: Vec<_> = std::iter::from_fn(|| engine.poll_transmit().unwrap()).collect();
    assert_eq!(error_code(&out), Some((0, ErrorCode::LimitsExceeded)));
}

#[test]
fn messages_out_of_order_get_the_right_codes() {
    let mut h = Harness::new();
    h.connect(1);
    // UPLOAD on a session that was never bound: connection-level, the connection closes.
    let out = h.send(1, upload(9, 1, 1, 0, &create_item(1, 1)));
    assert_eq!(error_code(&out), Some((0, ErrorCode::BadSessionIdent)));
    assert_eq!(h.closed(), vec![1]);
    // UPLOAD after BIND but before IDENT breaks the protocol (109, connection-level).
    h.connect(2);
    h.send(2, bind(1, "good:bob", true));
    let out = h.send(2, upload(1, 1, 1, 0, &create_item(1, 1)));
    assert_eq!(error_code(&out), Some((0, ErrorCode::BadMessageOrder)));
    assert_eq!(h.closed(), vec![2]);
    // A session-level error (a forged client file) ends only the session, which then ignores
    // everything until UNBIND.
    h.connect(3);
    h.send(3, bind(1, "good:bob", false));
    let out = h.send(3, ident_msg(1, 12345, 678, DownloadCursor::default()));
    assert_eq!(error_code(&out), Some((1, ErrorCode::BadClientFileIdent)));
    assert!(
        h.send(3, upload(1, 12345, 2, 0, &create_item(1, 1)))
            .is_empty(),
        "a failed session ignores messages"
    );
    assert!(matches!(
        &h.send(3, ClientMessage::Unbind { session: 1 })[..],
        [(3, ServerMessage::Unbound { session: 1 })]
    ));
    // Binding the same ident twice on one connection.
    h.send(3, bind(3, "good:bob", true));
    let out = h.send(3, bind(3, "good:bob", true));
    assert_eq!(error_code(&out), Some((0, ErrorCode::ReuseOfSessionIdent)));
}

#[test]
fn cursors_and_versions_that_go_wrong_are_refused() {
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    h.send(1, upload(1, ident, 1, 0, &create_item(1, 5)));
    // A base version from the future.
    let out = h.send(1, upload(1, ident, 2, 7, &create_item(2, 5)));
    assert_eq!(error_code(&out), Some((1, ErrorCode::BadProgress)));
    // Another session for the same file with the wrong salt.
    h.connect(2);
    h.send(2, bind(1, "good:alice", false));
    let out = h.send(
        2,
        ident_msg(
            1,
            ident,
            0,
            DownloadCursor {
                server_version: 0,
                last_integrated_client_version: 0,
            },
        ),
    );
    assert_eq!(
        error_code(&out),
        Some((1, ErrorCode::BadClientFileIdent)),
        "wrong salt"
    );
}

#[test]
fn origin_and_versions_in_uploads_are_checked() {
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    let out = h.send(1, upload(1, ident + 1, 1, 0, &create_item(1, 5)));
    assert_eq!(error_code(&out), Some((1, ErrorCode::BadOriginFileIdent)));

    let (ident, _) = h.open(2, "bob");
    let body = vec![0x01, 0xff, 0xff];
    let out = h.send(
        2,
        ClientMessage::Upload {
            session: 1,
            download_server_version: 0,
            changesets: vec![UploadChangeset {
                client_version: 1,
                last_integrated_server_version: 0,
                origin_timestamp: 1,
                origin_file_ident: ident,
                body,
            }],
        },
    );
    assert_eq!(error_code(&out), Some((1, ErrorCode::BadChangeset)));

    // A changeset that does not apply (writes to an object that does not exist).
    let (ident, _) = h.open(3, "carol");
    let set = vec![Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(77), "n"),
        value: Value::Int(1),
    }];
    let out = h.send(3, upload(1, ident, 1, 0, &set));
    assert_eq!(error_code(&out), Some((1, ErrorCode::BadChangeset)));
    assert_eq!(h.engine.latest_version(), 0, "nothing was integrated");
}

#[test]
fn re_uploads_are_idempotent() {
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    h.send(1, upload(1, ident, 1, 0, &create_item(1, 5)));
    let out = h.send(1, upload(1, ident, 1, 0, &create_item(1, 5)));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(h.engine.latest_version(), 1);
}

#[test]
fn a_client_version_reused_for_another_changeset_needs_a_client_reset() {
    // A client file whose storage lost an uploaded changeset (a browser commit that did not
    // survive a power loss, a file restored from a copy) makes another with the same version.
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    h.send(1, upload(1, ident, 1, 0, &create_item(1, 5)));
    let ClientMessage::Upload {
        session,
        download_server_version,
        mut changesets,
    } = upload(1, ident, 1, 0, &create_item(2, 6))
    else {
        unreachable!()
    };
    changesets[0].origin_timestamp += 1;
    let out = h.send(
        1,
        ClientMessage::Upload {
            session,
            download_server_version,
            changesets,
        },
    );
    assert_eq!(
        error_code(&out),
        Some((1, ErrorCode::DivergingHistories)),
        "{out:?}"
    );
    assert_eq!(
        ErrorCode::DivergingHistories.action(),
        ErrorAction::ClientReset
    );
    assert_eq!(h.engine.latest_version(), 1, "nothing of it was integrated");
}

#[test]
fn tokens_bad_expired_forged_and_refreshed() {
    let mut h = Harness::new();
    h.connect(1);
    assert_eq!(
        error_code(&h.send(1, bind(1, "forged", true))),
        Some((1, ErrorCode::BadAuthentication))
    );
    assert_eq!(
        error_code(&h.send(1, bind(2, "expired:alice", true))),
        Some((2, ErrorCode::TokenExpired))
    );
    // A failed bind is answered like any ended session: UNBIND, then BIND again.
    assert!(matches!(
        &h.send(1, ClientMessage::Unbind { session: 2 })[..],
        [(_, ServerMessage::Unbound { .. })]
    ));
    let out = h.send(1, bind(2, "good:alice", true));
    assert!(matches!(&out[..], [(_, ServerMessage::Ident { .. })]));
    // REFRESH for another user is refused.
    let (_, _) = h.open(2, "bob");
    let out = h.send(
        2,
        ClientMessage::Refresh {
            session: 1,
            access_token: "good:mallory".into(),
        },
    );
    assert_eq!(error_code(&out), Some((1, ErrorCode::UserMismatch)));
    // Token expiry mid-session ends the session with TokenExpired.
    let (_, _) = h.open(3, "carol");
    h.now = 999_000;
    h.send(
        3,
        ClientMessage::Ping {
            timestamp: 1,
            rtt: 0,
        },
    );
    h.now = 1_000_000;
    h.engine.handle_timeout(h.now);
    let out = h.drain();
    assert!(out.iter().any(|(c, m)| *c == 3
        && matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::TokenExpired,
                ..
            }
        )));
}

#[test]
fn a_client_file_of_another_user_is_refused() {
    let mut h = Harness::new();
    let (ident, salt) = h.open(1, "alice");
    h.connect(2);
    h.send(2, bind(1, "good:mallory", false));
    let out = h.send(2, ident_msg(1, ident, salt, DownloadCursor::default()));
    assert_eq!(error_code(&out), Some((1, ErrorCode::UserMismatch)));
}

#[test]
fn a_newer_session_for_the_same_file_supersedes_the_older() {
    let mut h = Harness::new();
    let (ident, salt) = h.open(1, "alice");
    h.connect(2);
    h.send(2, bind(1, "good:alice", false));
    let out = h.send(2, ident_msg(1, ident, salt, DownloadCursor::default()));
    assert!(out.iter().any(|(c, m)| *c == 1
        && matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Superseded,
                ..
            }
        )));
    assert!(out
        .iter()
        .any(|(c, m)| *c == 2 && matches!(m, ServerMessage::Download { .. })));
}

#[test]
fn invalid_subscriptions_get_query_error_and_the_session_goes_on() {
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    let bad = SubscriptionSet {
        version: 1,
        subscriptions: vec![Subscription {
            name: "s".into(),
            collection: "Item".into(),
            query: "n == ".into(),
        }],
    };
    let out = h.send(
        1,
        ClientMessage::Query {
            session: 1,
            subscriptions: bad,
        },
    );
    match &out[..] {
        [(
            _,
            ServerMessage::QueryError {
                query_version: 1,
                code: ErrorCode::BadQuery,
                message,
                ..
            },
        )] => {
            assert!(message.contains("offset"), "{message}");
        }
        other => panic!("expected QUERY_ERROR, got {other:?}"),
    }
    let unknown = SubscriptionSet {
        version: 2,
        subscriptions: vec![Subscription {
            name: "s".into(),
            collection: "Item".into(),
            query: "nope == 1".into(),
        }],
    };
    let out = h.send(
        1,
        ClientMessage::Query {
            session: 1,
            subscriptions: unknown,
        },
    );
    assert!(matches!(
        &out[..],
        [(
            _,
            ServerMessage::QueryError {
                query_version: 2,
                ..
            }
        )]
    ));
    let good = SubscriptionSet {
        version: 3,
        subscriptions: vec![Subscription {
            name: "s".into(),
            collection: "Item".into(),
            query: "n > 3".into(),
        }],
    };
    let out = h.send(
        1,
        ClientMessage::Query {
            session: 1,
            subscriptions: good,
        },
    );
    assert!(
        matches!(
            &out[..],
            [(
                _,
                ServerMessage::Download {
                    query_version: 3,
                    ..
                }
            )]
        ),
        "{out:?}"
    );
    let out = h.send(1, upload(1, ident, 1, 0, &create_item(1, 5)));
    assert!(error_code(&out).is_none());
}

#[test]
fn transactions_are_accepted_or_rejected_on_conflict() {
    let mut h = Harness::new();
    let (alice, _) = h.open(1, "alice");
    let (bob, _) = h.open(2, "bob");
    h.send(1, upload(1, alice, 1, 0, &create_item(1, 1)));
    h.drain();
    // Bob's transaction is based on version 0 and touches item 1, which changed at version 1.
    let tx = |version: u64, base: u64, key: i64| ClientMessage::Transact {
        session: 1,
        changeset: UploadChangeset {
            client_version: version,
            last_integrated_server_version: base,
            origin_timestamp: 5,
            origin_file_ident: bob,
            body: encode_changeset(&create_item(key, 9)),
        },
    };
    let out = h.send(2, tx(1, 0, 1));
    assert!(out.iter().any(|(_, m)| matches!(
        m,
        ServerMessage::Transact {
            result: TransactResult::Rejected {
                code: ErrorCode::TransactConflict,
                ..
            },
            ..
        }
    )));
    let out = h.send(2, tx(2, 1, 2));
    assert!(out.iter().any(|(_, m)| matches!(
        m,
        ServerMessage::Transact {
            result: TransactResult::Accepted { server_version: 2 },
            ..
        }
    )));
    assert_eq!(h.engine.latest_version(), 2);
}

#[test]
fn state_is_sent_in_segments_and_marks_follow_downloads() {
    let mut config = ServerConfig::new(sim_schema(), 3);
    config.state_segment_bytes = 16;
    let mut h = Harness {
        engine: ServerEngine::new(config, MemoryStorage::new(), TestAuth).unwrap(),
        now: 1,
    };
    let (ident, _) = h.open(1, "alice");
    let many: Vec<Instruction> = (0..20).flat_map(|k| create_item(k, k)).collect();
    h.send(1, upload(1, ident, 1, 0, &many));
    h.connect(2);
    h.send(2, bind(1, "good:bob", true));
    let mut offset = 0;
    let mut bytes = Vec::new();
    loop {
        let out = h.send(
            2,
            ClientMessage::StateRequest {
                session: 1,
                server_version: 0,
                server_version_salt: 0,
                offset,
            },
        );
        let [(
            _,
            ServerMessage::State {
                begin_offset,
                total_size,
                segment,
                ..
            },
        )] = &out[..]
        else {
            panic!("expected STATE, got {out:?}")
        };
        assert_eq!(*begin_offset, offset);
        assert!(segment.len() <= 16);
        bytes.extend_from_slice(segment);
        offset += segment.len() as u64;
        if offset >= *total_size {
            break;
        }
    }
    let instructions = eddy_core::changeset::decode_changeset(&bytes, &Default::default()).unwrap();
    assert_eq!(
        instructions
            .iter()
            .filter(|i| matches!(i, Instruction::CreateObject { .. }))
            .count(),
        20
    );
    // A MARK when already caught up is answered at once.
    let out = h.send(
        1,
        ClientMessage::Mark {
            session: 1,
            request: 7,
        },
    );
    assert!(matches!(
        &out[..],
        [(_, ServerMessage::Mark { request: 7, .. })]
    ));
}

#[test]
fn client_version_requests_reveal_nothing_about_foreign_files() {
    let mut h = Harness::new();
    let (ident, salt) = h.open(1, "alice");
    h.send(1, upload(1, ident, 1, 0, &create_item(1, 1)));
    h.send(1, upload(1, ident, 2, 1, &create_item(2, 2)));
    let ask = |ident, salt, from| ClientMessage::ClientVersionRequest {
        session: 1,
        client_file_ident: ident,
        client_file_ident_salt: salt,
        from_client_version: from,
    };
    // The integrated changesets from the asked version on, each with when it was made.
    let out = h.send(1, ask(ident, salt, 2));
    let [(
        _,
        ServerMessage::ClientVersion {
            client_version: 2,
            integrated,
            ..
        },
    )] = &out[..]
    else {
        panic!("expected CLIENT_VERSION, got {out:?}");
    };
    assert_eq!(
        integrated,
        &[IntegratedChangeset {
            client_version: 2,
            origin_timestamp: 20,
        }]
    );
    h.connect(2);
    h.send(2, bind(1, "good:mallory", true));
    let out = h.send(2, ask(ident, salt, 1));
    assert!(matches!(
        &out[..],
        [(
            _,
            ServerMessage::ClientVersion {
                client_version: 0,
                integrated,
                ..
            }
        )] if integrated.is_empty()
    ));
}

#[test]
fn idle_connections_are_closed() {
    let mut h = Harness::new();
    h.open(1, "alice");
    h.now += 10 * 60 * 1000 + 2;
    h.engine.handle_timeout(h.now);
    let out = h.drain();
    assert_eq!(error_code(&out), Some((0, ErrorCode::ConnectionClosed)));
    assert_eq!(h.closed(), vec![1]);
}

#[test]
fn schema_changes_need_development_mode() {
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    let add = vec![Instruction::AddCollection {
        name: "Other".into(),
        kind: eddy_core::schema::CollectionKind::TopLevel,
        primary_key: Some(eddy_core::schema::PrimaryKeyType::Int),
    }];
    let out = h.send(1, upload(1, ident, 1, 0, &add));
    assert_eq!(error_code(&out), Some((1, ErrorCode::InvalidSchemaChange)));

    let mut config = ServerConfig::new(sim_schema(), 5);
    config.development_mode = true;
    let mut dev = Harness {
        engine: ServerEngine::new(config, MemoryStorage::new(), TestAuth).unwrap(),
        now: 1,
    };
    let (ident, _) = dev.open(1, "alice");
    let out = dev.send(1, upload(1, ident, 1, 0, &add));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert!(dev.engine.store().schema().collection("Other").is_some());
}

#[test]
fn acknowledgements_wait_for_a_flush() {
    let mut h = Harness::new();
    let (ident, _) = h.open(1, "alice");
    let before = h.engine.storage().flushes;
    h.engine.handle_frame(
        1,
        h.now,
        &encode_client_message(&upload(1, ident, 1, 0, &create_item(1, 1))),
    );
    assert!(
        h.engine.storage().durable_history().is_empty(),
        "nothing is durable before poll_transmit"
    );
    let first = h.engine.poll_transmit().unwrap();
    assert!(first.is_some());
    assert_eq!(
        h.engine.storage().durable_history().len(),
        1,
        "the ack went out only after the flush"
    );
    assert_eq!(h.engine.storage().flushes, before + 1);
}

/// A harness with a writer on connection 1 and readers on connections 2 to 4, all of alice's,
/// the readers subscribed to `query` when there is one; returns it with the writer's file.
fn writer_and_readers(query: Option<&str>) -> (Harness, u64) {
    let mut h = Harness::new();
    let (writer, _) = h.open(1, "alice");
    for conn in 2..=4 {
        h.open(conn, "alice");
        if let Some(query) = query {
            h.subscribe_items(conn, query);
        }
    }
    (h, writer)
}

#[test]
fn a_fan_out_costs_one_flush_and_each_download_is_built_as_it_goes_out() {
    let (mut h, writer) = writer_and_readers(None);
    let before = h.engine.storage().flushes;
    let before_version = h.engine.latest_version();
    // Each upload is based on what the writer has seen: the version before its own.
    let frame = |version: u64| {
        encode_client_message(&upload(
            1,
            writer,
            version,
            before_version + version - 1,
            &create_item(i64::try_from(version).unwrap_or_default(), 1),
        ))
    };
    h.engine.handle_frame(1, h.now, &frame(1));
    let first = h.engine.poll_transmit().unwrap();
    assert!(
        matches!(first, Some((1, ServerMessage::Download { .. }))),
        "the writer's acknowledgement goes first: {first:?}"
    );
    assert_eq!(h.engine.storage().flushes, before + 1);
    // The receivers' DOWNLOADs were not built with the first one, so the changeset integrated
    // meanwhile reaches them in the same message.
    h.engine.handle_frame(1, h.now, &frame(2));
    let rest = h.drain();
    for receiver in 2..=4 {
        let versions: Vec<Vec<u64>> = rest
            .iter()
            .filter_map(|(c, m)| match m {
                ServerMessage::Download { changesets, .. } if *c == receiver => {
                    Some(changesets.iter().map(|c| c.server_version).collect())
                }
                _ => None,
            })
            .collect();
        assert_eq!(versions.len(), 1, "receiver {receiver}: {rest:?}");
        assert_eq!(versions[0].len(), 2, "receiver {receiver}: {rest:?}");
    }
    assert_eq!(h.engine.storage().flushes, before + 2);
}

#[test]
fn a_changeset_entering_many_views_takes_one_download_each() {
    let (mut h, writer) = writer_and_readers(Some("n == 1"));
    let before = h.engine.storage().flushes;
    let base = h.engine.latest_version();
    let out = h.send(1, upload(1, writer, 1, base, &create_item(1, 1)));
    // The object enters each view through a reset, all at one reset version.
    for receiver in 2..=4 {
        let downloads: Vec<_> = out
            .iter()
            .filter_map(|(c, m)| match m {
                ServerMessage::Download {
                    progress, resets, ..
                } if *c == receiver => Some((progress.download.server_version, resets.len())),
                _ => None,
            })
            .collect();
        assert!(
            matches!(downloads[..], [(version, resets)] if version == base + 2 && resets > 0),
            "receiver {receiver}: {out:?}"
        );
    }
    assert_eq!(h.engine.latest_version(), base + 2);
    // One flush before the writer's acknowledgement, one for the views.
    assert_eq!(h.engine.storage().flushes, before + 2);
}

fn reading(key: i64, value: i64) -> Vec<Instruction> {
    let mut doc = eddy_core::value::Document::new();
    doc.insert("value".into(), Value::Int(value));
    eddy_core::ingest::insert_instructions("Reading", &PrimaryKey::Int(key), &doc)
}

fn downloaded_instructions(out: &[(ConnectionId, ServerMessage)], to: ConnectionId) -> usize {
    out.iter()
        .filter(|(c, _)| *c == to)
        .map(|(_, m)| match m {
            ServerMessage::Download { changesets, .. } => changesets
                .iter()
                .map(|c| {
                    eddy_core::changeset::decode_changeset(&c.body, &Default::default())
                        .unwrap()
                        .len()
                })
                .sum(),
            _ => 0,
        })
        .sum()
}

#[test]
fn ingested_objects_are_stored_once_and_never_downloaded() {
    let mut h = Harness::new();
    let (alice, _) = h.open(1, "alice");
    h.open(2, "bob");
    let mut both = reading(1, 10);
    both.extend(create_item(5, 1));
    let out = h.send(1, upload(1, alice, 1, 0, &both));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(h.engine.take_upload_collections(), None, "a mixed upload");
    // Bob gets the item, not the reading; the server's state holds no reading either.
    assert_eq!(downloaded_instructions(&out, 2), 2);
    assert_eq!(h.engine.store().len("Reading"), 0);
    assert_eq!(h.engine.store().len("Item"), 1);
    // A re-upload of the same client version stores nothing twice.
    h.send(1, upload(1, alice, 1, 0, &both));
    let stored = h.engine.storage().ingested();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].origin_file_ident, alice);
    assert_eq!(
        stored[0].object.document().unwrap().get("value"),
        Some(&Value::Int(10))
    );
    let ingested: Vec<_> = std::iter::from_fn(|| h.engine.poll_event())
        .filter_map(|e| match e {
            ServerEvent::Ingested {
                collection,
                objects,
                ..
            } => Some((collection, objects)),
            _ => None,
        })
        .collect();
    assert_eq!(ingested, vec![("Reading".to_owned(), 1)]);
    // Nor does a re-upload name its collections for the driver; an upload of ingested objects
    // only does, once.
    assert_eq!(h.engine.take_upload_collections(), None);
    let out = h.send(1, upload(1, alice, 2, 1, &reading(2, 20)));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(
        h.engine.take_upload_collections(),
        Some(vec!["Reading".to_owned()])
    );
    assert_eq!(h.engine.take_upload_collections(), None);
}

#[test]
fn updates_erases_and_transactions_on_asymmetric_objects_are_refused() {
    let mut h = Harness::new();
    let (alice, _) = h.open(1, "alice");
    h.send(1, upload(1, alice, 1, 0, &reading(1, 10)));
    let update = [Instruction::Set {
        path: Path::field("Reading", PrimaryKey::Int(1), "value"),
        value: Value::Int(11),
    }];
    let out = h.send(1, upload(1, alice, 2, 1, &update));
    assert_eq!(
        error_code(&out),
        Some((1, ErrorCode::AsymmetricWriteRefused))
    );

    let (alice, _) = h.open(2, "alice2");
    let erase = [Instruction::EraseObject {
        collection: "Reading".into(),
        key: PrimaryKey::Int(1),
    }];
    let out = h.send(2, upload(1, alice, 1, 1, &erase));
    assert_eq!(
        error_code(&out),
        Some((1, ErrorCode::AsymmetricWriteRefused))
    );

    let (carol, _) = h.open(3, "carol");
    let out = h.send(
        3,
        ClientMessage::Transact {
            session: 1,
            changeset: UploadChangeset {
                client_version: 1,
                last_integrated_server_version: 1,
                origin_timestamp: 5,
                origin_file_ident: carol,
                body: encode_changeset(&reading(2, 1)),
            },
        },
    );
    assert!(
        out.iter().any(|(_, m)| matches!(
            m,
            ServerMessage::Transact {
                result: TransactResult::Rejected {
                    code: ErrorCode::AsymmetricWriteRefused,
                    ..
                },
                ..
            }
        )),
        "{out:?}"
    );
    assert_eq!(h.engine.storage().ingested().len(), 1);
}

#[test]
fn subscriptions_on_asymmetric_collections_are_refused() {
    let mut h = Harness::new();
    h.open(1, "alice");
    let set = SubscriptionSet {
        version: 1,
        subscriptions: vec![Subscription {
            name: "readings".into(),
            collection: "Reading".into(),
            query: "TRUEPREDICATE".into(),
        }],
    };
    let out = h.send(
        1,
        ClientMessage::Query {
            session: 1,
            subscriptions: set,
        },
    );
    match &out[..] {
        [(_, ServerMessage::QueryError { message, .. })] => {
            assert!(message.contains("asymmetric"), "{message}");
        }
        other => panic!("expected QUERY_ERROR, got {other:?}"),
    }
}

fn status(collection: &str, objects: u64, bytes: u64, oldest_age_ms: u64) -> ClientMessage {
    ClientMessage::IngestStatus {
        session: 1,
        collections: vec![IngestStatusEntry {
            collection: collection.into(),
            objects,
            bytes,
            oldest_age_ms,
        }],
    }
}

#[test]
fn ingest_status_reports_are_kept_per_client_file_and_bad_ones_refused() {
    let mut h = Harness::new();
    h.connect(1);
    h.send(1, bind(1, "good:alice", true));
    // Before IDENT the session has no client file to report for.
    let out = h.send(1, status("Reading", 1, 10, 0));
    assert_eq!(error_code(&out), Some((0, ErrorCode::BadMessageOrder)));

    let (alice, _) = h.open(2, "alice");
    std::iter::from_fn(|| h.engine.poll_event()).for_each(drop);
    assert!(h.send(2, status("Reading", 3, 150, 1_200)).is_empty());
    assert_eq!(
        h.engine.ingest_status(alice).unwrap(),
        [IngestStatusEntry {
            collection: "Reading".into(),
            objects: 3,
            bytes: 150,
            oldest_age_ms: 1_200,
        }]
    );
    let reported: Vec<(u64, String, u64)> = std::iter::from_fn(|| h.engine.poll_event())
        .filter_map(|e| match e {
            ServerEvent::IngestStatus {
                client_file_ident,
                user,
                collections,
                ..
            } => Some((client_file_ident, user, collections[0].objects)),
            _ => None,
        })
        .collect();
    assert_eq!(reported, vec![(alice, "alice".to_owned(), 3)]);
    // The latest report replaces the previous one.
    assert!(h.send(2, status("Reading", 0, 0, 0)).is_empty());
    assert!(
        h.engine.ingest_status(alice).is_none(),
        "an empty queue is not kept"
    );

    let bad = [
        (status("Nope", 1, 10, 0), "no collection named"),
        (status("Item", 1, 10, 0), "not an asymmetric collection"),
        (status("Reading", 5, 4, 0), "fewer bytes than objects"),
        (status("Reading", 0, 4, 0), "with no objects"),
        (
            status("Reading", 1 << 41, 1 << 45, 0),
            "more than 2^40 objects",
        ),
        (status("Reading", 1, 1 << 51, 0), "more than 2^50 bytes"),
        (status("Reading", 1, 10, u64::MAX), "over ten years"),
        (
            ClientMessage::IngestStatus {
                session: 1,
                collections: vec![
                    IngestStatusEntry {
                        collection: "Reading".into(),
                        objects: 0,
                        bytes: 0,
                        oldest_age_ms: 0,
                    };
                    2
                ],
            },
            "reported twice",
        ),
    ];
    for (conn, (msg, why)) in (10..).zip(bad) {
        let (file, _) = h.open(conn, "bob");
        let out = h.send(conn, msg);
        let message = out
            .iter()
            .find_map(|(_, m)| match m {
                ServerMessage::Error { code, message, .. } => {
                    assert_eq!(*code, ErrorCode::BadChangeset, "{message}");
                    Some(message.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no error for a report with {why}: {out:?}"));
        assert!(message.starts_with("bad ingest status: "), "{message}");
        assert!(message.contains(why), "{message} should say {why}");
        assert!(h.engine.ingest_status(file).is_none());
        // Only that session ended; the engine goes on.
        assert!(h.closed().is_empty());
    }
    assert!(h.engine.ingest_status(alice).is_none());
}

#[test]
fn queue_reports_are_stored_shrink_as_objects_arrive_survive_a_restart_and_go_on_reset() {
    let mut h = Harness::new();
    let (alice, salt) = h.open(1, "alice");
    h.now = 5_000;
    h.send(1, status("Reading", 4, 400, 900));
    let mut storage = h.engine.storage().clone();
    // An unflushed report would be lost with the process; this one was flushed.
    storage.crash();
    let restart = |storage: MemoryStorage| {
        ServerEngine::new(ServerConfig::new(sim_schema(), 42), storage, TestAuth).unwrap()
    };
    let engine = restart(storage);
    let restored: Vec<_> = engine
        .ingest_statuses()
        .map(|(file, s)| (file, s.reported_ms, s.collections[0].objects))
        .collect();
    assert_eq!(restored, vec![(alice, 5_000, 4)]);

    // Stored objects come off the report, durably, until the device reports again.
    let mut both = reading(1, 10);
    both.extend(reading(2, 20));
    h.send(1, upload(1, alice, 1, 0, &both));
    let left = h.engine.ingest_status(alice).unwrap()[0].clone();
    assert_eq!(
        (left.objects, left.bytes, left.oldest_age_ms),
        (2, 200, 900)
    );
    let engine = restart(h.engine.storage().clone());
    assert_eq!(engine.ingest_status(alice).unwrap()[0], left);
    let mut rest = reading(3, 30);
    rest.extend(reading(4, 40));
    h.send(1, upload(1, alice, 2, 1, &rest));
    assert!(h.engine.ingest_status(alice).is_none());
    assert!(restart(h.engine.storage().clone())
        .ingest_status(alice)
        .is_none());

    // A reset of the file (CLIENT_VERSION_REQUEST for it) drops its report for good; a request
    // naming the file with a wrong salt changes nothing.
    h.send(1, status("Reading", 1, 100, 0));
    h.open(2, "alice");
    let request = |salt| ClientMessage::ClientVersionRequest {
        session: 1,
        client_file_ident: alice,
        client_file_ident_salt: salt,
        from_client_version: 1,
    };
    h.send(2, request(salt ^ 1));
    assert!(h.engine.ingest_status(alice).is_some());
    std::iter::from_fn(|| h.engine.poll_event()).for_each(drop);
    h.send(2, request(salt));
    assert!(h.engine.ingest_status(alice).is_none());
    let dropped: Vec<u64> = std::iter::from_fn(|| h.engine.poll_event())
        .filter_map(|e| match e {
            ServerEvent::IngestStatusDropped { client_file_ident } => Some(client_file_ident),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, vec![alice]);
    assert!(restart(h.engine.storage().clone())
        .ingest_status(alice)
        .is_none());
}

#[test]
fn in_development_mode_a_report_may_name_a_collection_an_upload_has_yet_to_add() {
    let mut config = ServerConfig::new(sim_schema(), 42);
    config.development_mode = true;
    let mut h = Harness {
        engine: ServerEngine::new(config, MemoryStorage::new(), TestAuth).unwrap(),
        now: 1,
    };
    let (alice, _) = h.open(1, "alice");
    assert!(h.send(1, status("NotYet", 2, 20, 5)).is_empty());
    assert_eq!(
        h.engine.ingest_status(alice).unwrap()[0].collection,
        "NotYet"
    );
    // A collection the server has as an ordinary one is still refused.
    let out = h.send(1, status("Item", 2, 20, 5));
    assert_eq!(error_code(&out), Some((1, ErrorCode::BadChangeset)));
}

#[test]
fn a_catch_up_split_over_downloads_hints_objects_that_left_the_view_in_an_early_part() {
    let mut config = ServerConfig::new(sim_schema(), 42);
    config.max_download_bytes = 64;
    let mut h = Harness::with_config(config);
    let (writer, _) = h.open(1, "alice");
    let out = h.send(1, upload(1, writer, 1, 0, &create_item(1, 1)));
    assert!(error_code(&out).is_none(), "{out:?}");
    h.open(2, "bob");
    h.subscribe_items(2, "n < 50");
    // One UPLOAD: item 1 leaves bob's view, then a second item large enough that bob's
    // catch-up needs a DOWNLOAD of its own.
    let leaves = vec![Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(1), "n"),
        value: Value::Int(90),
    }];
    let mut large = create_item(2, 2);
    large.push(Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(2), "s"),
        value: Value::String("x".repeat(100)),
    });
    let changesets = [(2, leaves), (3, large)]
        .into_iter()
        .map(|(version, instructions)| UploadChangeset {
            client_version: version,
            last_integrated_server_version: 1,
            origin_timestamp: 10 * version,
            origin_file_ident: writer,
            body: encode_changeset(&instructions),
        })
        .collect();
    let out = h.send(
        1,
        ClientMessage::Upload {
            session: 1,
            download_server_version: 1,
            changesets,
        },
    );
    assert!(error_code(&out).is_none(), "{out:?}");
    let to_bob: Vec<_> = out
        .iter()
        .filter_map(|(c, m)| match m {
            ServerMessage::Download {
                progress, leaving, ..
            } if *c == 2 => Some((progress.download.server_version, leaving)),
            _ => None,
        })
        .collect();
    assert!(
        to_bob.first().is_some_and(|(version, _)| *version == 2),
        "expected a first DOWNLOAD that stops at item 1's change: {out:?}"
    );
    let leaving: Vec<_> = to_bob
        .iter()
        .filter(|(_, leaving)| !leaving.is_empty())
        .flat_map(|(_, leaving)| {
            object_keys(&decode_changeset(leaving, &DecodeLimits::default()).unwrap())
        })
        .collect();
    assert_eq!(leaving, vec![("Item".to_owned(), PrimaryKey::Int(1))]);
}

/// The objects named in the `resets` and `leaving` bodies of the DOWNLOADs to `to`.
fn view_changes(
    out: &[(ConnectionId, ServerMessage)],
    to: ConnectionId,
) -> (Vec<ObjectKey>, Vec<ObjectKey>) {
    let keys = |body: &[u8]| {
        if body.is_empty() {
            return Vec::new();
        }
        let mut keys = object_keys(&decode_changeset(body, &DecodeLimits::default()).unwrap());
        keys.dedup();
        keys
    };
    let mut entering = Vec::new();
    let mut leaving = Vec::new();
    for (c, m) in out {
        if let (
            true,
            ServerMessage::Download {
                resets, leaving: l, ..
            },
        ) = (*c == to, m)
        {
            entering.extend(keys(resets));
            leaving.extend(keys(l));
        }
    }
    (entering, leaving)
}

#[test]
fn a_subscription_through_a_link_follows_changes_to_the_linked_object() {
    let mut h = Harness::new();
    let (writer, _) = h.open(1, "alice");
    h.open(2, "bob");
    h.subscribe_items(2, "link.n == 5");
    let item = |key| ("Item".to_owned(), PrimaryKey::Int(key));

    let mut items = create_item(1, 1);
    items.extend(create_item(2, 2));
    items.push(Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(2), "link"),
        value: Value::Link(Link {
            collection: "Item".into(),
            key: PrimaryKey::Int(1),
        }),
    });
    let out = h.send(1, upload(1, writer, 1, 0, &items));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(
        downloaded_instructions(&out, 2),
        0,
        "nothing matches yet: {out:?}"
    );

    // Only item 1 changes, yet item 2, which links to it, now matches.
    let to_five = [Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(1), "n"),
        value: Value::Int(5),
    }];
    let out = h.send(1, upload(1, writer, 2, 1, &to_five));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(view_changes(&out, 2), (vec![item(2)], vec![]), "{out:?}");

    // And stops matching when item 1 changes again.
    let to_six = [Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(1), "n"),
        value: Value::Int(6),
    }];
    let out = h.send(1, upload(1, writer, 3, 2, &to_six));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(view_changes(&out, 2), (vec![], vec![item(2)]), "{out:?}");
}

/// The rows of `file`'s stored view, by object, and its stored header.
fn stored_view(h: &Harness, file: u64) -> (Vec<ObjectKey>, Vec<u8>) {
    let stored = h.engine.storage().clone().load().unwrap();
    let view = stored.views.get(&file).cloned().unwrap_or_default();
    let objects = view
        .objects
        .keys()
        .map(|bytes| decode_object(bytes).unwrap())
        .collect();
    (objects, view.header)
}

#[test]
fn a_view_forgets_an_erased_object_once_the_file_confirms_the_erase() {
    let mut h = Harness::new();
    let (writer, _) = h.open(1, "alice");
    let (reader, reader_salt) = h.open(2, "bob");
    h.subscribe_items(2, "n < 50");
    let item = |key| ("Item".to_owned(), PrimaryKey::Int(key));
    let out = h.send(1, upload(1, writer, 1, 0, &create_item(1, 1)));
    assert!(error_code(&out).is_none(), "{out:?}");
    let erase = [Instruction::EraseObject {
        collection: "Item".into(),
        key: PrimaryKey::Int(1),
    }];
    let out = h.send(1, upload(1, writer, 2, 1, &erase));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(downloaded_instructions(&out, 2), 1, "the erase reaches bob");
    let erased_at = h.engine.latest_version();
    // Bob has not confirmed the erase: a write of his based before it must still merge.
    assert_eq!(stored_view(&h, reader).0, vec![item(1)]);

    // Bob's upload based on the erase confirms it: the view forgets item 1 and holds item 2.
    let out = h.send(2, upload(1, reader, 1, erased_at, &create_item(2, 2)));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(stored_view(&h, reader).0, vec![item(2)]);

    // A copy of bob's file from before the erase can no longer be served exactly: it resets,
    // after a restart too; the file as it is binds as before.
    let storage = h.engine.storage().clone();
    let mut h = Harness {
        engine: ServerEngine::new(ServerConfig::new(sim_schema(), 42), storage, TestAuth).unwrap(),
        now: 1,
    };
    for (conn, cursor, refused) in [(3, 1, true), (4, erased_at + 1, false)] {
        h.connect(conn);
        h.send(conn, bind(1, "good:bob", false));
        let out = h.send(
            conn,
            ident_msg(
                1,
                reader,
                reader_salt,
                DownloadCursor {
                    server_version: cursor,
                    last_integrated_client_version: u64::from(cursor > erased_at),
                },
            ),
        );
        let to_this: Vec<_> = out.into_iter().filter(|(c, _)| *c == conn).collect();
        let (code, out) = (error_code(&to_this), to_this);
        if refused {
            assert_eq!(code, Some((1, ErrorCode::BadClientFile)), "{out:?}");
            let message = out.iter().find_map(|(_, m)| match m {
                ServerMessage::Error { message, .. } => Some(message.as_str()),
                _ => None,
            });
            assert!(
                message.is_some_and(|m| m.contains("confirmed version") && !m.contains("  ")),
                "{message:?}"
            );
            assert_eq!(ErrorCode::BadClientFile.action(), ErrorAction::ClientReset);
        } else {
            assert!(code.is_none(), "{out:?}");
        }
    }
}

#[test]
fn a_write_based_before_an_unconfirmed_erase_still_merges_with_it() {
    let mut h = Harness::new();
    let (writer, _) = h.open(1, "alice");
    let (reader, _) = h.open(2, "bob");
    h.subscribe_items(2, "n < 50");
    h.send(1, upload(1, writer, 1, 0, &create_item(1, 1)));
    // Item 1 entered bob's view with a reset at this version.
    let seen = h.engine.latest_version();
    let erase = [Instruction::EraseObject {
        collection: "Item".into(),
        key: PrimaryKey::Int(1),
    }];
    h.send(1, upload(1, writer, 2, 1, &erase));
    // Bob wrote to item 1 before he saw the erase: the write merges (the erase wins), so no
    // compensating write and no reset.
    let set = [Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(1), "n"),
        value: Value::Int(3),
    }];
    let out = h.send(2, upload(1, reader, 1, seen, &set));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(view_changes(&out, 2), (vec![], vec![]), "{out:?}");
    assert!(h.engine.store().get("Item", &PrimaryKey::Int(1)).is_none());
}

#[test]
fn a_reader_s_progress_report_confirms_its_cursor_and_is_checked() {
    let mut h = Harness::new();
    let (writer, _) = h.open(1, "alice");
    let (reader, _) = h.open(2, "bob");
    h.subscribe_items(2, "n < 50");
    h.send(1, upload(1, writer, 1, 0, &create_item(1, 1)));
    let erase = [Instruction::EraseObject {
        collection: "Item".into(),
        key: PrimaryKey::Int(1),
    }];
    h.send(1, upload(1, writer, 2, 1, &erase));
    let latest = h.engine.latest_version();
    let report = |version| ClientMessage::Upload {
        session: 1,
        download_server_version: version,
        changesets: Vec::new(),
    };
    assert_eq!(
        stored_view(&h, reader).0,
        vec![("Item".to_owned(), PrimaryKey::Int(1))]
    );
    // Bob has read everything: his report alone (he never writes) lets his view forget item 1,
    // and it needs no answer.
    let out = h.send(2, report(latest));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(stored_view(&h, reader).0, Vec::<ObjectKey>::new());

    // Every changeset must be based on the UPLOAD's cursor.
    let ClientMessage::Upload { changesets, .. } =
        upload(1, reader, 1, latest - 1, &create_item(3, 3))
    else {
        unreachable!()
    };
    let out = h.send(
        2,
        ClientMessage::Upload {
            session: 1,
            download_server_version: latest,
            changesets,
        },
    );
    assert_eq!(
        error_code(&out),
        Some((1, ErrorCode::BadProgress)),
        "{out:?}"
    );

    // A cursor past what the session was sent.
    h.open(3, "carol");
    let out = h.send(3, report(latest + 1));
    assert_eq!(
        error_code(&out),
        Some((1, ErrorCode::BadProgress)),
        "{out:?}"
    );
}

#[test]
fn a_subscription_two_links_deep_follows_changes_at_the_far_end() {
    let mut h = Harness::new();
    let (writer, _) = h.open(1, "alice");
    h.open(2, "bob");
    h.subscribe_items(2, "link.link.n == 5");
    let item = |key| ("Item".to_owned(), PrimaryKey::Int(key));
    let link = |from: i64, to: i64| Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(from), "link"),
        value: Value::Link(Link {
            collection: "Item".into(),
            key: PrimaryKey::Int(to),
        }),
    };
    // 3 -> 2 -> 1, and 4 on its own; items 5 to 9 link nowhere near.
    let mut items = Vec::new();
    for key in 1..=9 {
        items.extend(create_item(key, 0));
    }
    items.extend([link(3, 2), link(2, 1), link(6, 5)]);
    let out = h.send(1, upload(1, writer, 1, 0, &items));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(view_changes(&out, 2), (vec![], vec![]), "{out:?}");

    let set_n = |key: i64, n: i64| Instruction::Set {
        path: Path::field("Item", PrimaryKey::Int(key), "n"),
        value: Value::Int(n),
    };
    let latest = h.engine.latest_version();
    let out = h.send(1, upload(1, writer, 2, latest, &[set_n(1, 5)]));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(view_changes(&out, 2), (vec![item(3)], vec![]), "{out:?}");

    // Item 2 now links to item 4: item 3 no longer reaches an n of 5.
    let latest = h.engine.latest_version();
    let out = h.send(1, upload(1, writer, 3, latest, &[link(2, 4)]));
    assert!(error_code(&out).is_none(), "{out:?}");
    assert_eq!(view_changes(&out, 2), (vec![], vec![item(3)]), "{out:?}");

    // Bob releases it (a reset removes it), and it comes back through the far end again: item
    // 4 gets an n of 5.
    let out = h.send(
        2,
        ClientMessage::Release {
            session: 1,
            objects: encode_object_keys(&[item(3)]),
        },
    );
    assert_eq!(view_changes(&out, 2), (vec![item(3)], vec![]), "{out:?}");
    let latest = h.engine.latest_version();
    let out = h.send(1, upload(1, writer, 4, latest, &[set_n(4, 5)]));
    assert!(error_code(&out).is_none(), "{out:?}");
    let (entering, _) = view_changes(&out, 2);
    assert_eq!(entering, vec![item(3)], "{out:?}");
}

/// Everything the engine sends in a scenario that reaches far back into the history: a fresh
/// client downloading all of it in several DOWNLOADs, an upload and a transaction based on
/// version 0, and after a restart a client catching up from an old cursor. Returns the messages
/// and how many entries the engine held in memory at the end.
fn far_back_scenario(history_cache_bytes: usize) -> (Vec<(ConnectionId, ServerMessage)>, usize) {
    let config = || {
        let mut config = ServerConfig::new(sim_schema(), 7);
        config.history_cache_bytes = history_cache_bytes;
        config.max_download_bytes = 300;
        config
    };
    let mut h = Harness::with_config(config());
    let mut out = Vec::new();
    let (alice, _) = h.open(1, "alice");
    for key in 1..=40 {
        out.extend(h.send(
            1,
            upload(1, alice, key as u64, key as u64 - 1, &create_item(key, key)),
        ));
    }
    // A fresh file downloads all 40 changesets.
    h.connect(2);
    let (bob, bob_salt) = match &h.send(2, bind(1, "good:bob", true))[..] {
        [(
            _,
            ServerMessage::Ident {
                client_file_ident,
                client_file_ident_salt,
                ..
            },
        )] => (*client_file_ident, *client_file_ident_salt),
        other => panic!("expected IDENT, got {other:?}"),
    };
    out.extend(h.send(2, ident_msg(1, bob, bob_salt, DownloadCursor::default())));
    // Bob's transaction based on version 0 conflicts with version 5's item.
    out.extend(h.send(
        2,
        ClientMessage::Transact {
            session: 1,
            changeset: UploadChangeset {
                client_version: 1,
                last_integrated_server_version: 0,
                origin_timestamp: 5,
                origin_file_ident: bob,
                body: encode_changeset(&create_item(5, 9)),
            },
        },
    ));
    // Bob's write based on version 0 creates item 3 too: transformed against all of it.
    out.extend(h.send(2, upload(1, bob, 2, 0, &create_item(3, 300))));
    // After a restart, Bob's file catches up from version 10.
    let mut storage = h.engine.storage().clone();
    storage.crash();
    let mut h = Harness {
        engine: ServerEngine::new(config(), storage, TestAuth).unwrap(),
        now: 2,
    };
    h.connect(3);
    out.extend(h.send(3, bind(1, "good:bob", false)));
    let cursor = DownloadCursor {
        server_version: 10,
        last_integrated_client_version: 0,
    };
    out.extend(h.send(3, ident_msg(1, bob, bob_salt, cursor)));
    out.extend(h.drain());
    (out, h.engine.held_history_entries())
}

#[test]
fn history_beyond_the_memory_budget_is_read_back_from_storage() {
    let (everything, held_all) = far_back_scenario(usize::MAX);
    assert!(held_all > 40, "{held_all}");
    assert!(error_code(&everything).is_none(), "{everything:?}");
    let downloads = everything
        .iter()
        .filter(|(c, m)| *c == 2 && matches!(m, ServerMessage::Download { .. }))
        .count();
    assert!(downloads > 2, "the catch-up should take several DOWNLOADs");
    assert!(everything.iter().any(|(_, m)| matches!(
        m,
        ServerMessage::Transact {
            result: TransactResult::Rejected {
                code: ErrorCode::TransactConflict,
                ..
            },
            ..
        }
    )));
    // Holding none or a few of the entries changes nothing the clients see.
    for budget in [0, 2_000] {
        let (out, held) = far_back_scenario(budget);
        assert!(held < 10, "budget {budget} held {held} entries");
        assert_eq!(out, everything, "budget {budget}");
    }
}
