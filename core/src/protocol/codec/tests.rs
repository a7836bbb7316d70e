//! Tests of the message codec: round trips and strictness for every message of both directions,
//! limits, never panicking on hostile input, and agreement with the vectors and the error table
//! in `docs/protocol.md`.

use super::*;
use crate::protocol::ErrorAction;
use proptest::collection::vec;
use proptest::prelude::*;

/// The wire specification, whose vectors and error table these tests check.
const SPEC: &str = include_str!("../../../../docs/protocol.md");

/// A message of either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    Client(ClientMessage),
    Server(ServerMessage),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Client(m) => encode_client_message(m),
            Msg::Server(m) => encode_server_message(m),
        }
    }

    fn decode_same_direction(
        &self,
        frame: &[u8],
        limits: &MessageLimits,
    ) -> Result<Msg, DecodeError> {
        match self {
            Msg::Client(_) => decode_client_message(frame, limits).map(Msg::Client),
            Msg::Server(_) => decode_server_message(frame, limits).map(Msg::Server),
        }
    }

    fn label(&self) -> String {
        match self {
            Msg::Client(m) => format!("client {}", m.name()),
            Msg::Server(m) => format!("server {}", m.name()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn num() -> impl Strategy<Value = u64> {
    prop_oneof![0..200u64, 0..100_000u64, any::<u64>()]
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..24)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL)
}

fn upload_changeset() -> impl Strategy<Value = UploadChangeset> {
    (num(), num(), num(), num(), body()).prop_map(
        |(
            client_version,
            last_integrated_server_version,
            origin_timestamp,
            origin_file_ident,
            body,
        )| {
            UploadChangeset {
                client_version,
                last_integrated_server_version,
                origin_timestamp,
                origin_file_ident,
                body,
            }
        },
    )
}

fn download_changeset() -> impl Strategy<Value = DownloadChangeset> {
    (num(), num(), num(), num(), num(), body()).prop_map(
        |(
            server_version,
            last_integrated_client_version,
            origin_timestamp,
            origin_file_ident,
            original_size,
            body,
        )| DownloadChangeset {
            server_version,
            last_integrated_client_version,
            origin_timestamp,
            origin_file_ident,
            original_size,
            body,
        },
    )
}

fn subscription_set() -> impl Strategy<Value = SubscriptionSet> {
    (
        num(),
        vec(
            (text(), text(), text()).prop_map(|(name, collection, query)| Subscription {
                name,
                collection,
                query,
            }),
            0..4,
        ),
    )
        .prop_map(|(version, subscriptions)| SubscriptionSet {
            version,
            subscriptions,
        })
}

fn download_cursor() -> impl Strategy<Value = DownloadCursor> {
    (num(), num()).prop_map(
        |(server_version, last_integrated_client_version)| DownloadCursor {
            server_version,
            last_integrated_client_version,
        },
    )
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (num(), text(), text(), any::<bool>()).prop_map(
            |(session, path, access_token, need_client_file_ident)| ClientMessage::Bind {
                session,
                path,
                access_token,
                need_client_file_ident,
            }
        ),
        (
            num(),
            num(),
            num(),
            download_cursor(),
            num(),
            num(),
            subscription_set()
        )
            .prop_map(
                |(
                    session,
                    client_file_ident,
                    client_file_ident_salt,
                    download,
                    latest_server_version,
                    latest_server_version_salt,
                    subscriptions,
                )| ClientMessage::Ident {
                    session,
                    client_file_ident,
                    client_file_ident_salt,
                    download,
                    latest_server_version,
                    latest_server_version_salt,
                    subscriptions,
                }
            ),
        (num(), num(), vec(upload_changeset(), 0..4)).prop_map(
            |(session, download_server_version, changesets)| ClientMessage::Upload {
                session,
                download_server_version,
                changesets,
            }
        ),
        (num(), upload_changeset())
            .prop_map(|(session, changeset)| ClientMessage::Transact { session, changeset }),
        num().prop_map(|session| ClientMessage::Unbind { session }),
        (num(), num()).prop_map(|(session, request)| ClientMessage::Mark { session, request }),
        (num(), text()).prop_map(|(session, access_token)| ClientMessage::Refresh {
            session,
            access_token
        }),
        (num(), num(), num(), num()).prop_map(
            |(session, server_version, server_version_salt, offset)| {
                ClientMessage::StateRequest {
                    session,
                    server_version,
                    server_version_salt,
                    offset,
                }
            }
        ),
        (num(), num(), num(), num()).prop_map(
            |(session, client_file_ident, client_file_ident_salt, from_client_version)| {
                ClientMessage::ClientVersionRequest {
                    session,
                    client_file_ident,
                    client_file_ident_salt,
                    from_client_version,
                }
            }
        ),
        (num(), num()).prop_map(|(timestamp, rtt)| ClientMessage::Ping { timestamp, rtt }),
        (num(), subscription_set()).prop_map(|(session, subscriptions)| ClientMessage::Query {
            session,
            subscriptions
        }),
        (num(), vec(any::<u8>(), 0..8))
            .prop_map(|(session, objects)| ClientMessage::Release { session, objects }),
        (num(), vec((text(), num(), num(), num()), 0..3)).prop_map(|(session, entries)| {
            ClientMessage::IngestStatus {
                session,
                collections: entries
                    .into_iter()
                    .map(
                        |(collection, objects, bytes, oldest_age_ms)| IngestStatusEntry {
                            collection,
                            objects,
                            bytes,
                            oldest_age_ms,
                        },
                    )
                    .collect(),
            }
        }),
    ]
}

fn sync_progress() -> impl Strategy<Value = SyncProgress> {
    (download_cursor(), (num(), num(), num()), num(), num()).prop_map(
        |(download, (client_version, last_integrated_server_version, made), latest, salt)| {
            SyncProgress {
                download,
                upload: UploadCursor {
                    client_version,
                    last_integrated_server_version,
                    origin_timestamp: made,
                },
                latest_server_version: latest,
                latest_server_version_salt: salt,
            }
        },
    )
}

fn batch_state() -> impl Strategy<Value = BatchState> {
    prop_oneof![
        Just(BatchState::SteadyState),
        Just(BatchState::MoreToCome),
        Just(BatchState::LastInBatch),
    ]
}

fn transact_result() -> impl Strategy<Value = TransactResult> {
    prop_oneof![
        num().prop_map(|server_version| TransactResult::Accepted { server_version }),
        (error_code(), text()).prop_map(|(code, reason)| TransactResult::Rejected { code, reason }),
    ]
}

fn compensating_write() -> impl Strategy<Value = Option<CompensatingWrite>> {
    proptest::option::of(
        (
            num(),
            vec(
                (text(), text(), text()).prop_map(|(collection, key, reason)| RejectedWrite {
                    collection,
                    key,
                    reason,
                }),
                0..4,
            ),
        )
            .prop_map(|(server_version, rejected)| CompensatingWrite {
                server_version,
                rejected,
            }),
    )
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (num(), num(), num()).prop_map(|(session, client_file_ident, client_file_ident_salt)| {
            ServerMessage::Ident {
                session,
                client_file_ident,
                client_file_ident_salt,
            }
        }),
        (
            num(),
            sync_progress(),
            num(),
            batch_state(),
            num(),
            vec(download_changeset(), 0..4),
            vec(any::<u8>(), 0..8),
            vec(any::<u8>(), 0..8),
        )
            .prop_map(
                |(
                    session,
                    progress,
                    downloadable_bytes,
                    batch_state,
                    query_version,
                    changesets,
                    resets,
                    leaving,
                )| {
                    ServerMessage::Download {
                        session,
                        progress,
                        downloadable_bytes,
                        batch_state,
                        query_version,
                        changesets,
                        resets,
                        leaving,
                    }
                }
            ),
        num().prop_map(|session| ServerMessage::Unbound { session }),
        (num(), num(), transact_result()).prop_map(|(session, client_version, result)| {
            ServerMessage::Transact {
                session,
                client_version,
                result,
            }
        }),
        (num(), num()).prop_map(|(session, request)| ServerMessage::Mark { session, request }),
        (num(), num(), num(), num(), num(), body()).prop_map(
            |(session, server_version, server_version_salt, begin_offset, total_size, segment)| {
                ServerMessage::State {
                    session,
                    server_version,
                    server_version_salt,
                    begin_offset,
                    total_size,
                    segment,
                }
            }
        ),
        (num(), num(), num(), vec((num(), num()), 0..4)).prop_map(
            |(session, client_file_ident, client_version, integrated)| {
                ServerMessage::ClientVersion {
                    session,
                    client_file_ident,
                    client_version,
                    integrated: integrated
                        .into_iter()
                        .map(|(client_version, origin_timestamp)| IntegratedChangeset {
                            client_version,
                            origin_timestamp,
                        })
                        .collect(),
                }
            }
        ),
        (num(), error_code(), text(), compensating_write()).prop_map(
            |(session, code, message, compensating)| ServerMessage::Error {
                session,
                code,
                message,
                compensating,
            }
        ),
        num().prop_map(|timestamp| ServerMessage::Pong { timestamp }),
        (num(), num(), error_code(), text()).prop_map(|(session, query_version, code, message)| {
            ServerMessage::QueryError {
                session,
                query_version,
                code,
                message,
            }
        }),
    ]
}

fn any_message() -> impl Strategy<Value = Msg> {
    // Boxed: the unions' value trees are large enough to overflow a test thread's stack in
    // debug builds when kept inline.
    prop_oneof![
        client_message().prop_map(Msg::Client).boxed(),
        server_message().prop_map(Msg::Server).boxed(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Limits: how much of each limit a message uses, to set limits exactly at and just under it

/// The largest length or count a message uses for each limit, by limit name.
fn usage(msg: &Msg) -> Vec<(&'static str, usize)> {
    let mut strings = Vec::new();
    let mut tokens = Vec::new();
    let mut bodies = Vec::new();
    let mut changesets = Vec::new();
    let mut subscriptions = Vec::new();
    let mut segments = Vec::new();
    let mut add_set = |set: &SubscriptionSet, strings: &mut Vec<usize>| {
        subscriptions.push(set.subscriptions.len());
        for s in &set.subscriptions {
            strings.extend([s.name.len(), s.collection.len(), s.query.len()]);
        }
    };
    match msg {
        Msg::Client(m) => match m {
            ClientMessage::Bind {
                path, access_token, ..
            } => {
                strings.push(path.len());
                tokens.push(access_token.len());
            }
            ClientMessage::Ident { subscriptions, .. }
            | ClientMessage::Query { subscriptions, .. } => add_set(subscriptions, &mut strings),
            ClientMessage::Upload { changesets: c, .. } => {
                changesets.push(c.len());
                bodies.extend(c.iter().map(|c| c.body.len()));
            }
            ClientMessage::Transact { changeset, .. } => bodies.push(changeset.body.len()),
            ClientMessage::Release { objects, .. } => bodies.push(objects.len()),
            ClientMessage::IngestStatus { collections, .. } => {
                strings.extend(collections.iter().map(|e| e.collection.len()));
            }
            ClientMessage::Refresh { access_token, .. } => tokens.push(access_token.len()),
            ClientMessage::Unbind { .. }
            | ClientMessage::Mark { .. }
            | ClientMessage::StateRequest { .. }
            | ClientMessage::ClientVersionRequest { .. }
            | ClientMessage::Ping { .. } => {}
        },
        Msg::Server(m) => match m {
            ServerMessage::Download {
                changesets: c,
                resets,
                leaving,
                ..
            } => {
                changesets.push(c.len());
                bodies.extend(c.iter().map(|c| c.body.len()));
                bodies.extend([resets.len(), leaving.len()]);
            }
            ServerMessage::Transact {
                result: TransactResult::Rejected { reason, .. },
                ..
            } => strings.push(reason.len()),
            ServerMessage::State { segment, .. } => segments.push(segment.len()),
            ServerMessage::Error {
                message,
                compensating,
                ..
            } => {
                strings.push(message.len());
                for r in compensating.iter().flat_map(|c| &c.rejected) {
                    strings.extend([r.collection.len(), r.key.len(), r.reason.len()]);
                }
            }
            ServerMessage::QueryError { message, .. } => strings.push(message.len()),
            ServerMessage::ClientVersion { integrated, .. } => changesets.push(integrated.len()),
            ServerMessage::Ident { .. }
            | ServerMessage::Transact { .. }
            | ServerMessage::Unbound { .. }
            | ServerMessage::Mark { .. }
            | ServerMessage::Pong { .. } => {}
        },
    }
    let max = |v: Vec<usize>| v.into_iter().max().unwrap_or(0);
    vec![
        ("max_message_bytes", msg.encode().len()),
        ("max_changesets", max(changesets)),
        ("max_changeset_bytes", max(bodies)),
        ("max_token_bytes", max(tokens)),
        ("max_string_bytes", max(strings)),
        ("max_subscriptions", max(subscriptions)),
        ("max_segment_bytes", max(segments)),
    ]
}

/// Limits with the named one set to `value` and all others at their defaults.
fn limits_with(limit: &str, value: usize) -> MessageLimits {
    let mut limits = MessageLimits::default();
    let field = match limit {
        "max_message_bytes" => &mut limits.max_message_bytes,
        "max_changesets" => &mut limits.max_changesets,
        "max_changeset_bytes" => &mut limits.max_changeset_bytes,
        "max_token_bytes" => &mut limits.max_token_bytes,
        "max_string_bytes" => &mut limits.max_string_bytes,
        "max_subscriptions" => &mut limits.max_subscriptions,
        "max_segment_bytes" => &mut limits.max_segment_bytes,
        other => unreachable!("no limit named {other}"),
    };
    *field = value;
    limits
}

/// Limits set exactly to what `msg` uses.
fn tight_limits(msg: &Msg) -> MessageLimits {
    let mut limits = MessageLimits::default();
    for (name, used) in usage(msg) {
        let tight = limits_with(name, used);
        match name {
            "max_message_bytes" => limits.max_message_bytes = tight.max_message_bytes,
            "max_changesets" => limits.max_changesets = tight.max_changesets,
            "max_changeset_bytes" => limits.max_changeset_bytes = tight.max_changeset_bytes,
            "max_token_bytes" => limits.max_token_bytes = tight.max_token_bytes,
            "max_string_bytes" => limits.max_string_bytes = tight.max_string_bytes,
            "max_subscriptions" => limits.max_subscriptions = tight.max_subscriptions,
            _ => limits.max_segment_bytes = tight.max_segment_bytes,
        }
    }
    limits
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn messages_round_trip_and_encode_deterministically(msg in any_message()) {
        let bytes = msg.encode();
        prop_assert_eq!(&msg.encode(), &bytes);
        prop_assert_eq!(msg.decode_same_direction(&bytes, &MessageLimits::default()), Ok(msg.clone()));
    }

    #[test]
    fn frames_only_decode_in_their_own_direction(msg in any_message()) {
        let bytes = msg.encode();
        let other = match msg {
            Msg::Client(_) => decode_server_message(&bytes, &MessageLimits::default()).map(|_| ()),
            Msg::Server(_) => decode_client_message(&bytes, &MessageLimits::default()).map(|_| ()),
        };
        let byte = bytes.first().copied().unwrap_or(0);
        prop_assert_eq!(other, Err(DecodeError::UnknownMessageType { byte }));
    }

    #[test]
    fn every_strict_prefix_is_an_error(msg in any_message()) {
        let bytes = msg.encode();
        for end in 0..bytes.len() {
            let prefix = bytes.get(..end).unwrap_or_default();
            let result = msg.decode_same_direction(prefix, &MessageLimits::default());
            prop_assert!(result.is_err(), "prefix of {} bytes decoded: {:?}", end, result);
        }
    }

    #[test]
    fn trailing_bytes_are_refused(msg in any_message(), extra in vec(any::<u8>(), 1..8)) {
        let mut bytes = msg.encode();
        let offset = bytes.len();
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(
            msg.decode_same_direction(&bytes, &MessageLimits::default()),
            Err(DecodeError::TrailingBytes { offset, count: extra.len() })
        );
    }

    #[test]
    fn every_limit_is_enforced(msg in any_message()) {
        let bytes = msg.encode();
        let tight = tight_limits(&msg);
        prop_assert_eq!(msg.decode_same_direction(&bytes, &tight), Ok(msg.clone()));
        for (name, used) in usage(&msg) {
            let Some(lower) = used.checked_sub(1) else { continue };
            let result = msg.decode_same_direction(&bytes, &limits_with(name, lower));
            let err = result.err();
            if name == "max_message_bytes" {
                prop_assert_eq!(err, Some(DecodeError::FrameTooLarge { size: used, max: lower }));
            } else {
                let ok = matches!(
                    err,
                    Some(DecodeError::LimitExceeded { limit, max, .. })
                        if limit == name && max == lower as u64
                );
                prop_assert!(ok, "{} lowered to {}: {:?}", name, lower, err);
                prop_assert_eq!(err.map(|e| e.error_code()), Some(ErrorCode::LimitsExceeded));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_frames_are_canonical(
        bytes in vec(any::<u8>(), 0..64),
    ) {
        check_hostile(&bytes);
    }

    #[test]
    fn bytes_after_a_valid_type_byte_never_panic(
        type_byte in prop_oneof![1..=0x0bu8, 0x81..=0x8au8],
        rest in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![type_byte];
        bytes.extend_from_slice(&rest);
        check_hostile(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(
        msg in any_message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = msg.encode();
        for (index, byte, kind) in edits {
            let at = index.index(bytes.len().max(1));
            match kind {
                0 => if let Some(b) = bytes.get_mut(at) { *b = byte },
                1 => bytes.insert(at.min(bytes.len()), byte),
                _ => if at < bytes.len() { bytes.remove(at); },
            }
        }
        check_hostile(&bytes);
    }
}

/// Decodes `bytes` both ways with default and tiny limits; whatever decodes must re-encode to
/// exactly `bytes` (the decoder accepts only canonical encodings).
fn check_hostile(bytes: &[u8]) {
    let tiny = MessageLimits {
        max_message_bytes: 48,
        max_changesets: 2,
        max_changeset_bytes: 4,
        max_token_bytes: 4,
        max_string_bytes: 4,
        max_subscriptions: 2,
        max_segment_bytes: 4,
    };
    for limits in [MessageLimits::default(), tiny] {
        match decode_client_message(bytes, &limits) {
            Ok(msg) => assert_eq!(encode_client_message(&msg), bytes),
            Err(err) => assert!(!err.to_string().is_empty()),
        }
        match decode_server_message(bytes, &limits) {
            Ok(msg) => assert_eq!(encode_server_message(&msg), bytes),
            Err(err) => assert!(!err.to_string().is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Specific errors

#[test]
fn specific_errors_and_their_codes() {
    let limits = MessageLimits::default();
    let cases: Vec<(Result<ClientMessage, DecodeError>, DecodeError, ErrorCode)> = vec![
        (
            decode_client_message(&[], &limits),
            DecodeError::EmptyFrame,
            ErrorCode::BadSyntax,
        ),
        (
            decode_client_message(&[0x00], &limits),
            DecodeError::UnknownMessageType { byte: 0 },
            ErrorCode::UnknownMessage,
        ),
        (
            decode_client_message(&[0x81, 0x01, 0x02, 0x03], &limits),
            DecodeError::UnknownMessageType { byte: 0x81 },
            ErrorCode::UnknownMessage,
        ),
        (
            // BIND with need_client_file_ident = 2.
            decode_client_message(&[0x01, 0x01, 0x00, 0x00, 0x02], &limits),
            DecodeError::BadTag {
                what: "need_client_file_ident",
                tag: 2,
            },
            ErrorCode::BadSyntax,
        ),
        (
            // UNBIND whose session 1 is written in two bytes.
            decode_client_message(&[0x05, 0x81, 0x00], &limits),
            DecodeError::NonCanonicalVarint {
                offset: 1,
                what: "session",
            },
            ErrorCode::BadSyntax,
        ),
        (
            // REFRESH whose token length 0 is written in two bytes.
            decode_client_message(&[0x07, 0x01, 0x80, 0x00], &limits),
            DecodeError::NonCanonicalVarint {
                offset: 2,
                what: "access_token",
            },
            ErrorCode::BadSyntax,
        ),
        (
            decode_client_message(&[0x05, 0x01, 0x00], &limits),
            DecodeError::TrailingBytes {
                offset: 2,
                count: 1,
            },
            ErrorCode::BadSyntax,
        ),
        (
            decode_client_message(&[0x05, 0x80], &limits),
            DecodeError::Wire(WireError::Truncated {
                offset: 1,
                what: "session",
            }),
            ErrorCode::BadSyntax,
        ),
        (
            // REFRESH with a token that is not UTF-8.
            decode_client_message(&[0x07, 0x01, 0x01, 0xff], &limits),
            DecodeError::Wire(WireError::InvalidUtf8 { offset: 2 }),
            ErrorCode::BadSyntax,
        ),
        (
            decode_client_message(
                &[
                    0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                &limits,
            ),
            DecodeError::Wire(WireError::VarintOverflow { offset: 1 }),
            ErrorCode::BadSyntax,
        ),
        (
            decode_client_message(&[0x05, 0x01], &limits_with("max_message_bytes", 1)),
            DecodeError::FrameTooLarge { size: 2, max: 1 },
            ErrorCode::LimitsExceeded,
        ),
        (
            // REFRESH with a 3-byte token over a 2-byte limit.
            decode_client_message(
                &[0x07, 0x01, 0x03, b'a', b'b', b'c'],
                &limits_with("max_token_bytes", 2),
            ),
            DecodeError::LimitExceeded {
                limit: "max_token_bytes",
                found: 3,
                max: 2,
            },
            ErrorCode::LimitsExceeded,
        ),
    ];
    for (result, expected, code) in cases {
        assert_eq!(result, Err(expected.clone()));
        assert_eq!(expected.error_code(), code, "{expected:?}");
    }
}

#[test]
fn server_specific_errors() {
    let limits = MessageLimits::default();
    // ERROR with code 999.
    let err = decode_server_message(&[0x88, 0x00, 0xe7, 0x07, 0x00, 0x00], &limits);
    assert_eq!(err, Err(DecodeError::UnknownErrorCode { number: 999 }));
    // ERROR with a code over u16.
    let err = decode_server_message(&[0x88, 0x00, 0x80, 0x80, 0x04, 0x00, 0x00], &limits);
    assert_eq!(err, Err(DecodeError::UnknownErrorCode { number: 65536 }));
    assert_eq!(
        DecodeError::UnknownErrorCode { number: 65536 }.error_code(),
        ErrorCode::BadSyntax
    );
    // ERROR whose option byte is 2.
    let err = decode_server_message(&[0x88, 0x00, 0x64, 0x00, 0x02], &limits);
    assert_eq!(
        err,
        Err(DecodeError::BadTag {
            what: "compensating",
            tag: 2
        })
    );
    // TRANSACT with result tag 2.
    let err = decode_server_message(&[0x84, 0x01, 0x01, 0x02], &limits);
    assert_eq!(
        err,
        Err(DecodeError::BadTag {
            what: "transact_result",
            tag: 2
        })
    );
    // DOWNLOAD with batch state 3.
    let err = decode_server_message(&[0x82, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0], &limits);
    assert_eq!(
        err,
        Err(DecodeError::BadTag {
            what: "batch_state",
            tag: 3
        })
    );
    // A DOWNLOAD announcing a billion changesets in a tiny frame fails cleanly, without
    // reserving memory for them.
    let err = decode_server_message(
        &[
            0x82, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03,
        ],
        &limits_with("max_changesets", usize::MAX),
    );
    assert!(
        matches!(err, Err(DecodeError::Wire(WireError::Truncated { .. }))),
        "{err:?}"
    );
}

#[test]
fn error_messages_are_lowercase_without_trailing_period() {
    let errors = [
        DecodeError::EmptyFrame,
        DecodeError::FrameTooLarge { size: 9, max: 8 },
        DecodeError::UnknownMessageType { byte: 0x42 },
        DecodeError::Wire(WireError::Truncated {
            offset: 3,
            what: "session",
        }),
        DecodeError::NonCanonicalVarint {
            offset: 1,
            what: "session",
        },
        DecodeError::LimitExceeded {
            limit: "max_changesets",
            found: 9,
            max: 8,
        },
        DecodeError::UnknownErrorCode { number: 7 },
        DecodeError::BadTag {
            what: "batch_state",
            tag: 9,
        },
        DecodeError::TrailingBytes {
            offset: 4,
            count: 2,
        },
    ];
    for err in errors {
        let text = err.to_string();
        let first = text.chars().next().unwrap_or('X');
        assert!(!first.is_uppercase(), "{text}");
        assert!(!text.ends_with('.'), "{text}");
    }
    assert!(DecodeError::UnknownMessageType { byte: 0x42 }
        .to_string()
        .contains("0x42"));
    let wire = DecodeError::Wire(WireError::VarintOverflow { offset: 0 });
    assert!(std::error::Error::source(&wire).is_some());
}

#[test]
fn varint_len_matches_the_writer() {
    for v in [
        0,
        1,
        127,
        128,
        16_383,
        16_384,
        u64::from(u32::MAX),
        u64::MAX,
    ] {
        let mut out = Vec::new();
        write_u64(&mut out, v);
        assert_eq!(varint_len(v), out.len(), "{v}");
    }
}

// ---------------------------------------------------------------------------------------------
// The specification's vectors and error table

fn body_bytes() -> Vec<u8> {
    vec![0xde, 0xad, 0xbe, 0xef]
}

/// The messages whose encodings `docs/protocol.md` lists, by vector label.
fn spec_vectors() -> Vec<(&'static str, Msg)> {
    use ClientMessage as C;
    use ServerMessage as S;
    let subscriptions = SubscriptionSet {
        version: 2,
        subscriptions: vec![Subscription {
            name: "mine".into(),
            collection: "Task".into(),
            query: "owner == \"ann\"".into(),
        }],
    };
    vec![
        (
            "client BIND",
            Msg::Client(C::Bind {
                session: 1,
                path: "flx".into(),
                access_token: "tok".into(),
                need_client_file_ident: true,
            }),
        ),
        (
            "client IDENT",
            Msg::Client(C::Ident {
                session: 1,
                client_file_ident: 5,
                client_file_ident_salt: 300,
                download: DownloadCursor {
                    server_version: 10,
                    last_integrated_client_version: 4,
                },
                latest_server_version: 12,
                latest_server_version_salt: 99,
                subscriptions: subscriptions.clone(),
            }),
        ),
        (
            "client UPLOAD",
            Msg::Client(C::Upload {
                session: 1,
                download_server_version: 10,
                changesets: vec![
                    UploadChangeset {
                        client_version: 5,
                        last_integrated_server_version: 10,
                        origin_timestamp: 1_700_000_000_000,
                        origin_file_ident: 5,
                        body: body_bytes(),
                    },
                    UploadChangeset {
                        client_version: 6,
                        last_integrated_server_version: 10,
                        origin_timestamp: 1_700_000_000_001,
                        origin_file_ident: 5,
                        body: vec![],
                    },
                ],
            }),
        ),
        (
            "client TRANSACT",
            Msg::Client(C::Transact {
                session: 1,
                changeset: UploadChangeset {
                    client_version: 7,
                    last_integrated_server_version: 11,
                    origin_timestamp: 1_700_000_000_002,
                    origin_file_ident: 5,
                    body: body_bytes(),
                },
            }),
        ),
        ("client UNBIND", Msg::Client(C::Unbind { session: 1 })),
        (
            "client MARK",
            Msg::Client(C::Mark {
                session: 1,
                request: 3,
            }),
        ),
        (
            "client REFRESH",
            Msg::Client(C::Refresh {
                session: 1,
                access_token: "new".into(),
            }),
        ),
        (
            "client STATE_REQUEST",
            Msg::Client(C::StateRequest {
                session: 2,
                server_version: 0,
                server_version_salt: 0,
                offset: 0,
            }),
        ),
        (
            "client CLIENT_VERSION_REQUEST",
            Msg::Client(C::ClientVersionRequest {
                session: 1,
                client_file_ident: 5,
                client_file_ident_salt: 300,
                from_client_version: 4,
            }),
        ),
        (
            "client PING",
            Msg::Client(C::Ping {
                timestamp: 1_700_000_000_000,
                rtt: 42,
            }),
        ),
        (
            "client QUERY",
            Msg::Client(C::Query {
                session: 1,
                subscriptions: SubscriptionSet {
                    version: 3,
                    subscriptions: vec![],
                },
            }),
        ),
        (
            "client RELEASE",
            Msg::Client(C::Release {
                session: 1,
                objects: body_bytes(),
            }),
        ),
        (
            "client INGEST_STATUS",
            Msg::Client(C::IngestStatus {
                session: 1,
                collections: vec![IngestStatusEntry {
                    collection: "Reading".into(),
                    objects: 3,
                    bytes: 150,
                    oldest_age_ms: 1200,
                }],
            }),
        ),
        (
            "server IDENT",
            Msg::Server(S::Ident {
                session: 1,
                client_file_ident: 5,
                client_file_ident_salt: 300,
            }),
        ),
        (
            "server DOWNLOAD",
            Msg::Server(S::Download {
                session: 1,
                progress: SyncProgress {
                    download: DownloadCursor {
                        server_version: 11,
                        last_integrated_client_version: 6,
                    },
                    upload: UploadCursor {
                        client_version: 6,
                        last_integrated_server_version: 11,
                        origin_timestamp: 1_700_000_000_002,
                    },
                    latest_server_version: 11,
                    latest_server_version_salt: 99,
                },
                downloadable_bytes: 0,
                batch_state: BatchState::SteadyState,
                query_version: 2,
                changesets: vec![DownloadChangeset {
                    server_version: 11,
                    last_integrated_client_version: 4,
                    origin_timestamp: 1_700_000_000_003,
                    origin_file_ident: 8,
                    original_size: 4,
                    body: body_bytes(),
                }],
                resets: vec![],
                leaving: vec![],
            }),
        ),
        (
            "server DOWNLOAD (bootstrap, more to come)",
            Msg::Server(S::Download {
                session: 1,
                progress: SyncProgress {
                    download: DownloadCursor {
                        server_version: 20,
                        last_integrated_client_version: 0,
                    },
                    upload: UploadCursor::default(),
                    latest_server_version: 20,
                    latest_server_version_salt: 7,
                },
                downloadable_bytes: 1024,
                batch_state: BatchState::MoreToCome,
                query_version: 1,
                changesets: vec![],
                resets: body_bytes(),
                leaving: vec![],
            }),
        ),
        (
            "server DOWNLOAD (bootstrap, last in batch)",
            Msg::Server(S::Download {
                session: 1,
                progress: SyncProgress {
                    download: DownloadCursor {
                        server_version: 20,
                        last_integrated_client_version: 0,
                    },
                    upload: UploadCursor::default(),
                    latest_server_version: 20,
                    latest_server_version_salt: 7,
                },
                downloadable_bytes: 0,
                batch_state: BatchState::LastInBatch,
                query_version: 1,
                changesets: vec![],
                resets: vec![],
                leaving: body_bytes(),
            }),
        ),
        ("server UNBOUND", Msg::Server(S::Unbound { session: 1 })),
        (
            "server TRANSACT (accepted)",
            Msg::Server(S::Transact {
                session: 1,
                client_version: 7,
                result: TransactResult::Accepted { server_version: 12 },
            }),
        ),
        (
            "server TRANSACT (rejected)",
            Msg::Server(S::Transact {
                session: 1,
                client_version: 7,
                result: TransactResult::Rejected {
                    code: ErrorCode::TransactConflict,
                    reason: "conflict".into(),
                },
            }),
        ),
        (
            "server MARK",
            Msg::Server(S::Mark {
                session: 1,
                request: 3,
            }),
        ),
        (
            "server STATE",
            Msg::Server(S::State {
                session: 2,
                server_version: 20,
                server_version_salt: 7,
                begin_offset: 0,
                total_size: 4,
                segment: body_bytes(),
            }),
        ),
        (
            "server CLIENT_VERSION",
            Msg::Server(S::ClientVersion {
                session: 1,
                client_file_ident: 5,
                client_version: 6,
                integrated: vec![
                    IntegratedChangeset {
                        client_version: 5,
                        origin_timestamp: 1_700_000_000_001,
                    },
                    IntegratedChangeset {
                        client_version: 6,
                        origin_timestamp: 1_700_000_000_002,
                    },
                ],
            }),
        ),
        (
            "server ERROR",
            Msg::Server(S::Error {
                session: 0,
                code: ErrorCode::BadSyntax,
                message: "bad".into(),
                compensating: None,
            }),
        ),
        (
            "server ERROR (compensating write)",
            Msg::Server(S::Error {
                session: 1,
                code: ErrorCode::CompensatingWrite,
                message: "denied".into(),
                compensating: Some(CompensatingWrite {
                    server_version: 13,
                    rejected: vec![RejectedWrite {
                        collection: "Task".into(),
                        key: "7".into(),
                        reason: "role".into(),
                    }],
                }),
            }),
        ),
        (
            "server PONG",
            Msg::Server(S::Pong {
                timestamp: 1_700_000_000_000,
            }),
        ),
        (
            "server QUERY_ERROR",
            Msg::Server(S::QueryError {
                session: 1,
                query_version: 3,
                code: ErrorCode::BadQuery,
                message: "no field".into(),
            }),
        ),
    ]
}

fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn from_hex(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).unwrap_or_else(|e| panic!("{pair:?}: {e}")))
        .collect()
}

/// One vector as written in the specification.
#[derive(Debug)]
struct SpecVector {
    label: String,
    debug: String,
    bytes: Vec<u8>,
}

/// Every `vector:` / description / `hex:` triple in the specification; every `hex:` line must
/// belong to one.
fn parse_spec_vectors() -> Vec<SpecVector> {
    let lines: Vec<&str> = SPEC.lines().collect();
    let mut vectors = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(hex) = line.strip_prefix("hex: ") else {
            assert!(!line.starts_with("hex:"), "malformed hex line {line:?}");
            continue;
        };
        let label = i
            .checked_sub(2)
            .and_then(|j| lines.get(j))
            .and_then(|l| l.strip_prefix("vector: "))
            .unwrap_or_else(|| panic!("hex line {} has no `vector:` line two lines above", i + 1));
        let debug = lines.get(i - 1).copied().unwrap_or_default();
        vectors.push(SpecVector {
            label: label.to_owned(),
            debug: debug.to_owned(),
            bytes: from_hex(hex),
        });
    }
    vectors
}

#[test]
fn spec_vectors_decode_and_re_encode() {
    let limits = MessageLimits::default();
    let vectors = parse_spec_vectors();
    assert!(!vectors.is_empty());
    for v in &vectors {
        let decoded = if v.label.starts_with("client ") {
            decode_client_message(&v.bytes, &limits).map(Msg::Client)
        } else {
            assert!(v.label.starts_with("server "), "label {:?}", v.label);
            decode_server_message(&v.bytes, &limits).map(Msg::Server)
        };
        let decoded = decoded.unwrap_or_else(|e| panic!("vector {:?}: {e}", v.label));
        assert_eq!(decoded.encode(), v.bytes, "vector {:?}", v.label);
        assert!(
            v.label.starts_with(&decoded.label()),
            "vector {:?} decodes to {}",
            v.label,
            decoded.label()
        );
        let debug = match &decoded {
            Msg::Client(m) => format!("{m:?}"),
            Msg::Server(m) => format!("{m:?}"),
        };
        assert_eq!(v.debug, debug, "description of vector {:?}", v.label);
    }
}

#[test]
fn spec_vectors_match_the_code_table() {
    let in_spec = parse_spec_vectors();
    let table = spec_vectors();
    let expected: Vec<String> = table
        .iter()
        .map(|(label, msg)| {
            let debug = match msg {
                Msg::Client(m) => format!("{m:?}"),
                Msg::Server(m) => format!("{m:?}"),
            };
            format!("vector: {label}\n{debug}\nhex: {}", to_hex(&msg.encode()))
        })
        .collect();
    let found: Vec<String> = in_spec
        .iter()
        .map(|v| {
            format!(
                "vector: {}\n{}\nhex: {}",
                v.label,
                v.debug,
                to_hex(&v.bytes)
            )
        })
        .collect();
    assert_eq!(
        found, expected,
        "docs/protocol.md vectors differ from the code's table"
    );
}

#[test]
fn spec_vectors_cover_every_message_type() {
    let mut labels: Vec<String> = spec_vectors().iter().map(|(_, m)| m.label()).collect();
    labels.sort();
    labels.dedup();
    let mut expected: Vec<String> = [
        "BIND",
        "IDENT",
        "UPLOAD",
        "TRANSACT",
        "UNBIND",
        "MARK",
        "REFRESH",
        "STATE_REQUEST",
        "CLIENT_VERSION_REQUEST",
        "PING",
        "QUERY",
        "RELEASE",
        "INGEST_STATUS",
    ]
    .iter()
    .map(|n| format!("client {n}"))
    .chain(
        [
            "IDENT",
            "DOWNLOAD",
            "UNBOUND",
            "TRANSACT",
            "MARK",
            "STATE",
            "CLIENT_VERSION",
            "ERROR",
            "PONG",
            "QUERY_ERROR",
        ]
        .iter()
        .map(|n| format!("server {n}")),
    )
    .collect();
    expected.sort();
    assert_eq!(labels, expected);
}

/// The error table as `docs/protocol.md` must show it, generated from [`ErrorCode::ALL`].
fn error_table() -> String {
    let mut table = String::from("| Code | Name | Action | Description |\n|---:|---|---|---|\n");
    for code in ErrorCode::ALL {
        let action = match code.action() {
            ErrorAction::Transient => "transient",
            ErrorAction::ClientReset => "client reset",
            ErrorAction::RefreshToken => "refresh token",
            ErrorAction::LogOut => "log out",
            ErrorAction::ApplicationBug => "application bug",
            ErrorAction::Warning => "warning",
        };
        table.push_str(&format!(
            "| {} | `{:?}` | {} | {} |\n",
            code.number(),
            code,
            action,
            code.description()
        ));
    }
    table
}

#[test]
fn spec_error_table_matches_error_codes() {
    const BEGIN: &str = "<!-- error-table: generated from ErrorCode::ALL, checked by a test -->\n";
    const END: &str = "<!-- end of error-table -->";
    let start = SPEC.find(BEGIN).map(|i| i + BEGIN.len());
    let start = start.unwrap_or_else(|| panic!("docs/protocol.md has no {BEGIN:?} marker"));
    let rest = SPEC.get(start..).unwrap_or_default();
    let end = rest
        .find(END)
        .unwrap_or_else(|| panic!("no {END:?} marker"));
    assert_eq!(
        rest.get(..end).unwrap_or_default(),
        error_table(),
        "docs/protocol.md's error table differs from ErrorCode::ALL"
    );
}
