//! Human-readable one-line renderings of protocol messages (with decoded changesets) for
//! simulation traces.

use crate::changeset::{decode_changeset, DecodeLimits};
use crate::protocol::{ClientMessage, ServerMessage};

fn body(bytes: &[u8]) -> String {
    match decode_changeset(bytes, &DecodeLimits::default()) {
        Ok(instructions) => format!("{instructions:?}"),
        Err(e) => format!("<undecodable: {e}>"),
    }
}

/// A client message on one line.
pub fn client_message(msg: &ClientMessage) -> String {
    match msg {
        ClientMessage::Upload { changesets, .. } => {
            let parts: Vec<String> = changesets
                .iter()
                .map(|c| {
                    format!(
                        "[cv {} base {} t {} from {}] {}",
                        c.client_version,
                        c.last_integrated_server_version,
                        c.origin_timestamp,
                        c.origin_file_ident,
                        body(&c.body)
                    )
                })
                .collect();
            format!("UPLOAD {}", parts.join(" "))
        }
        ClientMessage::Release { objects, .. } => format!("RELEASE {}", body(objects)),
        ClientMessage::IngestStatus { collections, .. } => format!(
            "INGEST_STATUS {}",
            collections
                .iter()
                .map(|e| format!("{}:{}/{}B", e.collection, e.objects, e.bytes))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => format!("{other:?}"),
    }
}

/// A server message on one line.
pub fn server_message(msg: &ServerMessage) -> String {
    match msg {
        ServerMessage::Download {
            progress,
            changesets,
            resets,
            leaving,
            batch_state,
            query_version,
            ..
        } => {
            let parts: Vec<String> = changesets
                .iter()
                .map(|c| {
                    format!(
                        "[sv {} lirv {} t {} from {}] {}",
                        c.server_version,
                        c.last_integrated_client_version,
                        c.origin_timestamp,
                        c.origin_file_ident,
                        body(&c.body)
                    )
                })
                .collect();
            let mut line = format!(
                "DOWNLOAD {progress:?} {batch_state:?} query {query_version} {}",
                parts.join(" ")
            );
            if !resets.is_empty() {
                line.push_str(&format!(" resets {}", body(resets)));
            }
            if !leaving.is_empty() {
                line.push_str(&format!(" leaving {}", body(leaving)));
            }
            line
        }
        other => format!("{other:?}"),
    }
}
