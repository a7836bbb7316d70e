//! Turns raw protocol frames and changeset bodies into readable fields and instructions, using
//! eddy-core's own decoders (compiled to wasm): the console has no decoder of its own.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use eddy_core::changeset::{
    body_sizes, decode_changeset, DecodeLimits, Instruction, Path, PathElement,
};
use eddy_core::protocol::{
    decode_client_message, decode_server_message, ClientMessage, DownloadChangeset, MessageLimits,
    ServerMessage, SubscriptionSet, TransactResult, UploadChangeset,
};
use eddy_core::value::{EjsonMode, Value};

/// One decoded changeset body: a heading and its instructions, one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesetView {
    /// What identifies it (`client version 3, base 7`).
    pub heading: String,
    /// Its instructions, or the reason they could not be decoded.
    pub instructions: Vec<String>,
}

/// A decoded protocol message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageView {
    /// The message's fields as (name, value), changesets excluded.
    pub fields: Vec<(String, String)>,
    /// The changesets it carries.
    pub changesets: Vec<ChangesetView>,
}

impl MessageView {
    fn field(&mut self, name: &str, value: impl ToString) {
        self.fields.push((name.to_owned(), value.to_string()));
    }
}

/// Decodes base64 text; `None` when it is not base64.
pub fn base64_bytes(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

fn value_text(value: &Value) -> String {
    value.to_ejson(EjsonMode::Relaxed).to_string()
}

/// A path as `Collection[key].field.sub[3]["k"]`.
pub fn path_text(path: &Path) -> String {
    let mut out = format!(
        "{}[{}].{}",
        path.collection,
        value_text(&Value::from(path.key.clone())),
        path.field
    );
    for step in &path.nested {
        match step {
            PathElement::Field(name) => out.push_str(&format!(".{name}")),
            PathElement::Index(index) => out.push_str(&format!("[{index}]")),
            PathElement::Key(key) => out.push_str(&format!("[{key:?}]")),
        }
    }
    out
}

/// One instruction as one line.
pub fn instruction_text(instruction: &Instruction) -> String {
    match instruction {
        Instruction::AddCollection {
            name,
            kind,
            primary_key,
        } => format!("AddCollection {name} ({kind:?}, primary key {primary_key:?})"),
        Instruction::AddProperty {
            collection,
            property,
        } => format!(
            "AddProperty {collection}.{} ({:?} {:?}{}{})",
            property.name,
            property.container,
            property.ty,
            if property.optional { ", optional" } else { "" },
            if property.indexed { ", indexed" } else { "" }
        ),
        Instruction::CreateObject { collection, key } => format!(
            "CreateObject {collection}[{}]",
            value_text(&Value::from(key.clone()))
        ),
        Instruction::EraseObject { collection, key } => format!(
            "EraseObject {collection}[{}]",
            value_text(&Value::from(key.clone()))
        ),
        Instruction::Set { path, value } => {
            format!("Set {} = {}", path_text(path), value_text(value))
        }
        Instruction::AddInteger { path, delta } => {
            format!("AddInteger {} += {delta}", path_text(path))
        }
        Instruction::ListInsert {
            list,
            index,
            value,
            prior_size,
        } => format!(
            "ListInsert {}[{index}] = {} (size was {prior_size})",
            path_text(list),
            value_text(value)
        ),
        Instruction::ListSet {
            list,
            index,
            value,
            prior_size,
        } => format!(
            "ListSet {}[{index}] = {} (size {prior_size})",
            path_text(list),
            value_text(value)
        ),
        Instruction::ListMove {
            list,
            from,
            to,
            prior_size,
        } => format!(
            "ListMove {} {from} -> {to} (size {prior_size})",
            path_text(list)
        ),
        Instruction::ListErase {
            list,
            index,
            prior_size,
        } => format!(
            "ListErase {}[{index}] (size was {prior_size})",
            path_text(list)
        ),
        Instruction::Clear { path } => format!("Clear {}", path_text(path)),
        Instruction::SetInsert { set, value } => {
            format!("SetInsert {} += {}", path_text(set), value_text(value))
        }
        Instruction::SetErase { set, value } => {
            format!("SetErase {} -= {}", path_text(set), value_text(value))
        }
        Instruction::DictErase { dict, key } => {
            format!("DictErase {}[{key:?}]", path_text(dict))
        }
        other => format!("{other:?}"),
    }
}

/// A changeset body's instructions, one line each, or one line saying why it does not decode.
pub fn changeset_lines(body: &[u8]) -> Vec<String> {
    match decode_changeset(body, &DecodeLimits::default()) {
        Ok(instructions) => instructions.iter().map(instruction_text).collect(),
        Err(e) => vec![format!("(the changeset does not decode: {e})")],
    }
}

/// A base64 changeset body's instructions (see [`changeset_lines`]).
pub fn changeset_lines_base64(text: &str) -> Vec<String> {
    match base64_bytes(text) {
        Some(body) => changeset_lines(&body),
        None => vec!["(the feed sent a changeset that is not base64)".to_owned()],
    }
}

/// A body's size: `420 bytes`, or `1500 bytes (40200 uncompressed)` for a compressed one.
pub fn body_size_text(body: &[u8]) -> String {
    let sizes = body_sizes(body);
    if sizes.compressed {
        format!(
            "{} bytes ({} uncompressed)",
            sizes.encoded, sizes.uncompressed
        )
    } else {
        format!("{} bytes", sizes.encoded)
    }
}

fn upload_view(c: &UploadChangeset) -> ChangesetView {
    ChangesetView {
        heading: format!(
            "client version {}, based on server version {}, origin {}, {}",
            c.client_version,
            c.last_integrated_server_version,
            c.origin_file_ident,
            body_size_text(&c.body)
        ),
        instructions: changeset_lines(&c.body),
    }
}

fn download_view(c: &DownloadChangeset) -> ChangesetView {
    ChangesetView {
        heading: format!(
            "server version {}, origin {}, after client version {}, {} (uploaded as {} bytes)",
            c.server_version,
            c.origin_file_ident,
            c.last_integrated_client_version,
            body_size_text(&c.body),
            c.original_size
        ),
        instructions: changeset_lines(&c.body),
    }
}

fn subscriptions_text(set: &SubscriptionSet) -> String {
    let list: Vec<String> = set
        .subscriptions
        .iter()
        .map(|s| format!("{}: {} where {}", s.name, s.collection, s.query))
        .collect();
    format!("version {}: [{}]", set.version, list.join("; "))
}

/// Decodes a frame a client sent.
pub fn client_message(frame: &[u8]) -> Result<MessageView, String> {
    let msg = decode_client_message(frame, &MessageLimits::default())
        .map_err(|e| format!("the frame does not decode: {e}"))?;
    let mut view = MessageView::default();
    view.field("type", msg.name());
    if let Some(session) = msg.session() {
        view.field("session", session);
    }
    match &msg {
        ClientMessage::Bind {
            path,
            access_token,
            need_client_file_ident,
            ..
        } => {
            view.field("path", path);
            view.field(
                "access_token",
                format!("({} bytes, not shown)", access_token.len()),
            );
            view.field("need_client_file_ident", need_client_file_ident);
        }
        ClientMessage::Ident {
            client_file_ident,
            client_file_ident_salt,
            download,
            latest_server_version,
            latest_server_version_salt,
            subscriptions,
            ..
        } => {
            view.field("client_file_ident", client_file_ident);
            view.field("client_file_ident_salt", client_file_ident_salt);
            view.field(
                "download",
                format!(
                    "server version {}, client version {}",
                    download.server_version, download.last_integrated_client_version
                ),
            );
            view.field("latest_server_version", latest_server_version);
            view.field("latest_server_version_salt", latest_server_version_salt);
            view.field("subscriptions", subscriptions_text(subscriptions));
        }
        ClientMessage::Upload {
            download_server_version,
            changesets,
            ..
        } => {
            view.field("download_server_version", download_server_version);
            view.field("changesets", changesets.len());
            view.changesets = changesets.iter().map(upload_view).collect();
        }
        ClientMessage::Transact { changeset, .. } => {
            view.changesets = vec![upload_view(changeset)];
        }
        ClientMessage::Mark { request, .. } => view.field("request", request),
        ClientMessage::Refresh { access_token, .. } => view.field(
            "access_token",
            format!("({} bytes, not shown)", access_token.len()),
        ),
        ClientMessage::StateRequest {
            server_version,
            server_version_salt,
            offset,
            ..
        } => {
            view.field("server_version", server_version);
            view.field("server_version_salt", server_version_salt);
            view.field("offset", offset);
        }
        ClientMessage::ClientVersionRequest {
            client_file_ident,
            client_file_ident_salt,
            from_client_version,
            ..
        } => {
            view.field("client_file_ident", client_file_ident);
            view.field("client_file_ident_salt", client_file_ident_salt);
            view.field("from_client_version", from_client_version);
        }
        ClientMessage::Ping { timestamp, rtt } => {
            view.field("timestamp", timestamp);
            view.field("rtt", format!("{rtt} ms"));
        }
        ClientMessage::Query { subscriptions, .. } => {
            view.field("subscriptions", subscriptions_text(subscriptions));
        }
        ClientMessage::IngestStatus { collections, .. } => {
            for e in collections {
                view.field(
                    &format!("queue {}", e.collection),
                    format!(
                        "{} objects, {} bytes, oldest {} ms",
                        e.objects, e.bytes, e.oldest_age_ms
                    ),
                );
            }
        }
        _ => {}
    }
    Ok(view)
}

/// Decodes a frame the server sent.
pub fn server_message(frame: &[u8]) -> Result<MessageView, String> {
    let msg = decode_server_message(frame, &MessageLimits::default())
        .map_err(|e| format!("the frame does not decode: {e}"))?;
    let mut view = MessageView::default();
    view.field("type", msg.name());
    if let Some(session) = msg.session() {
        view.field("session", session);
    }
    match &msg {
        ServerMessage::Ident {
            client_file_ident,
            client_file_ident_salt,
            ..
        } => {
            view.field("client_file_ident", client_file_ident);
            view.field("client_file_ident_salt", client_file_ident_salt);
        }
        ServerMessage::Download {
            progress,
            downloadable_bytes,
            batch_state,
            query_version,
            changesets,
            ..
        } => {
            view.field(
                "download cursor",
                format!(
                    "server version {}, client version {}",
                    progress.download.server_version,
                    progress.download.last_integrated_client_version
                ),
            );
            view.field(
                "upload acknowledged",
                format!(
                    "client version {} (made at {}) at server version {}",
                    progress.upload.client_version,
                    progress.upload.origin_timestamp,
                    progress.upload.last_integrated_server_version
                ),
            );
            view.field("latest_server_version", progress.latest_server_version);
            view.field("downloadable_bytes", downloadable_bytes);
            view.field("batch_state", format!("{batch_state:?}"));
            view.field("query_version", query_version);
            view.field("changesets", changesets.len());
            view.changesets = changesets.iter().map(download_view).collect();
        }
        ServerMessage::Transact {
            client_version,
            result,
            ..
        } => {
            view.field("client_version", client_version);
            let result = match result {
                TransactResult::Accepted { server_version } => {
                    format!("accepted at server version {server_version}")
                }
                TransactResult::Rejected { code, reason } => {
                    format!("rejected: {code}: {reason}")
                }
                other => format!("{other:?}"),
            };
            view.field("result", result);
        }
        ServerMessage::Mark { request, .. } => view.field("request", request),
        ServerMessage::State {
            server_version,
            begin_offset,
            total_size,
            segment,
            ..
        } => {
            view.field("server_version", server_version);
            view.field(
                "segment",
                format!("{} bytes at {begin_offset} of {total_size}", segment.len()),
            );
        }
        ServerMessage::ClientVersion {
            client_file_ident,
            client_version,
            integrated,
            ..
        } => {
            view.field("client_file_ident", client_file_ident);
            view.field("client_version", client_version);
            view.field("integrated changesets listed", integrated.len());
        }
        ServerMessage::Error {
            code,
            message,
            compensating,
            ..
        } => {
            view.field("code", code);
            view.field("message", message);
            if let Some(c) = compensating {
                view.field(
                    "compensating write",
                    format!(
                        "server version {}: {}",
                        c.server_version,
                        c.rejected
                            .iter()
                            .map(|r| format!("{}[{}]: {}", r.collection, r.key, r.reason))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                );
            }
        }
        ServerMessage::Pong { timestamp } => view.field("timestamp", timestamp),
        ServerMessage::QueryError {
            query_version,
            code,
            message,
            ..
        } => {
            view.field("query_version", query_version);
            view.field("code", code);
            view.field("message", message);
        }
        _ => {}
    }
    Ok(view)
}

/// Decodes a feed message's raw base64 frame, by its direction (`in` is client to server).
pub fn message(direction: &str, raw: &str) -> Result<MessageView, String> {
    let bytes = base64_bytes(raw).ok_or("the feed sent a frame that is not base64")?;
    if direction == "in" {
        client_message(&bytes)
    } else {
        server_message(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::changeset::encode_changeset;
    use eddy_core::protocol::{encode_client_message, encode_server_message, ErrorCode};
    use eddy_core::value::PrimaryKey;

    fn set_n(key: i64, n: i64) -> Instruction {
        Instruction::Set {
            path: Path::field("Item", PrimaryKey::Int(key), "n"),
            value: Value::Int(n),
        }
    }

    #[test]
    fn instructions_read_as_one_line_each() {
        assert_eq!(instruction_text(&set_n(1, 3)), "Set Item[1].n = 3");
        let nested = Path::field("Item", PrimaryKey::String("a".into()), "tags")
            .child(PathElement::Index(2));
        assert_eq!(
            instruction_text(&Instruction::Clear { path: nested }),
            "Clear Item[\"a\"].tags[2]"
        );
    }

    #[test]
    fn an_upload_shows_its_changesets_instructions() {
        let frame = encode_client_message(&ClientMessage::Upload {
            session: 1,
            download_server_version: 2,
            changesets: vec![UploadChangeset {
                client_version: 4,
                last_integrated_server_version: 2,
                origin_timestamp: 0,
                origin_file_ident: 9,
                body: encode_changeset(&[set_n(1, 3)]),
            }],
        });
        let view = message("in", &BASE64.encode(&frame)).unwrap();
        assert!(view.fields.contains(&("type".into(), "UPLOAD".into())));
        assert!(view
            .fields
            .contains(&("download_server_version".into(), "2".into())));
        assert_eq!(view.changesets.len(), 1);
        assert!(view.changesets[0].heading.contains("client version 4"));
        assert_eq!(view.changesets[0].instructions, ["Set Item[1].n = 3"]);
    }

    #[test]
    fn compressed_bodies_show_both_sizes() {
        let plain = encode_changeset(&[set_n(1, 3)]);
        assert_eq!(body_size_text(&plain), format!("{} bytes", plain.len()));
        let many: Vec<Instruction> = (0..200).map(|k| set_n(k, k)).collect();
        let compressed = encode_changeset(&many);
        let text = body_size_text(&compressed);
        assert!(
            text.starts_with(&format!("{} bytes (", compressed.len()))
                && text.ends_with(" uncompressed)"),
            "{text}"
        );
    }

    #[test]
    fn tokens_are_not_shown_and_errors_are() {
        let frame = encode_client_message(&ClientMessage::Bind {
            session: 1,
            path: "flx".into(),
            access_token: "secret.token.value".into(),
            need_client_file_ident: true,
        });
        let view = client_message(&frame).unwrap();
        assert!(!format!("{view:?}").contains("secret"));
        let frame = encode_server_message(&ServerMessage::Error {
            session: 1,
            code: ErrorCode::BadChangeset,
            message: "nope".into(),
            compensating: None,
        });
        let view = server_message(&frame).unwrap();
        assert!(view.fields.contains(&("message".into(), "nope".into())));
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        assert!(message("in", "not base64!").is_err());
        assert!(message("out", &BASE64.encode([0xff, 0x00])).is_err());
        assert_eq!(changeset_lines(&[1, 2, 3]).len(), 1);
    }
}
