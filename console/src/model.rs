//! What the console knows from the event feed: sessions, recent messages and changesets,
//! counters and per-second rates. Plain data, updated one feed event at a time.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;

/// The most messages kept (the oldest go first).
pub const MAX_MESSAGES: usize = 5000;
/// The most changesets kept.
pub const MAX_CHANGESETS: usize = 2000;
/// The most errors kept.
pub const MAX_ERRORS: usize = 200;
/// The most sessions kept (ended ones go first).
pub const MAX_SESSIONS: usize = 1000;
/// How many one-second samples the charts show.
pub const SAMPLES: usize = 60;

/// One merge decision side, as the feed sends it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct DecisionSide {
    /// The changeset's index in the transform.
    #[serde(default)]
    pub changeset: u64,
    /// The instruction's index in that changeset.
    #[serde(default)]
    pub instruction: u64,
    /// The instruction before the transform, as a one-instruction changeset (base64).
    #[serde(default)]
    pub original: String,
    /// `kept`, `rewritten` or `discarded`.
    #[serde(default)]
    pub outcome: String,
    /// The rewritten instruction (base64), when rewritten.
    pub rewritten: Option<String>,
    /// The concurrent changeset's server version (`theirs` only).
    pub server_version: Option<u64>,
    /// The client file the concurrent changeset came from (`theirs` only).
    pub client: Option<u64>,
}

/// One merge decision, as the feed sends it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Decision {
    /// The rule that decided.
    #[serde(default)]
    pub rule: String,
    /// The integrated changeset's instruction.
    #[serde(default)]
    pub ours: DecisionSide,
    /// The concurrent instruction it was transformed against.
    #[serde(default)]
    pub theirs: DecisionSide,
}

/// One subscription in a subscription event.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its collection.
    #[serde(default)]
    pub collection: String,
    /// Its query.
    #[serde(default)]
    pub query: String,
}

/// A durable Data Ingest batch, as an `ingest` event with `"event": "stored"` carries it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct IngestBatch {
    /// The asymmetric collection.
    #[serde(default)]
    pub collection: String,
    /// The server version of the changeset that carried it.
    #[serde(default)]
    pub server_version: u64,
    /// How many objects.
    #[serde(default)]
    pub objects: u64,
    /// Their share of the uploaded changeset body, in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// From the device's timestamp to durable, in milliseconds.
    #[serde(default)]
    pub lag_ms: u64,
}

/// One event of the feed (every kind in one flat shape; absent fields are `None`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Event {
    /// Its number in the feed.
    #[serde(default)]
    pub seq: u64,
    /// `hello`, `connection`, `session`, `message`, `changeset`, `subscription`, `error`,
    /// `ingest`, `gap`, `filter` or `refused`.
    #[serde(default)]
    pub kind: String,
    /// When, in milliseconds since the Unix epoch (server clock).
    #[serde(default)]
    pub at: u64,
    /// The sync connection.
    pub connection: Option<u64>,
    /// The session on it.
    pub session: Option<u64>,
    /// The client file.
    pub client: Option<u64>,
    /// The user.
    pub user: Option<String>,
    /// The collections it touches.
    #[serde(default)]
    pub collections: Vec<String>,
    /// `opened`, `closed`, `identified`, `ended`; for `ingest`, `stored`.
    pub event: Option<String>,
    /// The peer address.
    pub peer: Option<String>,
    /// The protocol version.
    pub protocol: Option<String>,
    /// `in` (client to server) or `out`.
    pub direction: Option<String>,
    /// The message type (`UPLOAD`).
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    /// The frame size in bytes.
    pub size: Option<u64>,
    /// The frame, base64.
    pub raw: Option<String>,
    /// Why the frame's bytes were left out (it was too large).
    pub raw_omitted: Option<String>,
    /// How many changeset bodies a message carries (absent when none); 1 for a changeset.
    pub body_count: Option<u64>,
    /// How many of those bodies are compressed.
    pub compressed_bodies: Option<u64>,
    /// Their bytes as encoded (compressed when compressed).
    pub body_bytes: Option<u64>,
    /// Their bytes uncompressed.
    pub body_uncompressed_bytes: Option<u64>,
    /// The changeset's server version.
    pub server_version: Option<u64>,
    /// The changeset's client version.
    pub client_version: Option<u64>,
    /// The objects a changeset touches, as `Collection/key`.
    #[serde(default)]
    pub objects: Vec<String>,
    /// The changeset's instructions as a changeset body (base64).
    pub instructions: Option<String>,
    /// The changeset's merge decisions.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// A subscription set's version.
    pub version: Option<u64>,
    /// A subscription set.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionInfo>,
    /// An error code.
    pub code: Option<String>,
    /// An error or refusal message.
    pub message: Option<String>,
    /// A durable ingest batch.
    pub batch: Option<IngestBatch>,
    /// How many events a gap lost.
    pub missed: Option<u64>,
    /// Why a gap happened.
    pub reason: Option<String>,
}

/// One session in the sessions table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// The sync connection.
    pub connection: u64,
    /// The session ident on it.
    pub session: u64,
    /// The user.
    pub user: String,
    /// The client file.
    pub client: u64,
    /// The peer address.
    pub peer: String,
    /// The protocol version.
    pub protocol: String,
    /// When it was identified.
    pub opened_at: u64,
    /// Whether it ended.
    pub ended: bool,
    /// Messages from the client.
    pub messages_in: u64,
    /// Messages to the client.
    pub messages_out: u64,
    /// Its latest subscription set, as text.
    pub subscriptions: String,
}

/// Running totals since the console connected (or the feed's backfill began).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Protocol messages, both directions.
    pub messages: u64,
    /// Integrated changesets.
    pub changesets: u64,
    /// Errors sent.
    pub errors: u64,
    /// Ingested objects that became durable.
    pub ingested: u64,
    /// Events the feed lost.
    pub missed: u64,
}

/// Per-second samples for the overview charts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    /// Messages per second.
    pub messages: VecDeque<u64>,
    /// Changesets per second.
    pub changesets: VecDeque<u64>,
    /// Connected sessions.
    pub sessions: VecDeque<u64>,
    /// Ingested objects that became durable per second.
    pub ingest: VecDeque<u64>,
    last: Totals,
}

fn push(series: &mut VecDeque<u64>, value: u64) {
    if series.len() == SAMPLES {
        series.pop_front();
    }
    series.push_back(value);
}

/// Everything the pages show from the feed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// Sessions, oldest first.
    pub sessions: Vec<SessionRow>,
    /// Recent messages, oldest first.
    pub messages: VecDeque<Event>,
    /// Recent changesets, oldest first.
    pub changesets: VecDeque<Event>,
    /// Recent errors, oldest first.
    pub errors: VecDeque<Event>,
    /// Totals.
    pub totals: Totals,
    /// The per-second samples.
    pub rates: Rates,
    /// The latest subscription set of each (connection, session), as text. A session's first
    /// set arrives in its IDENT, before the session is identified.
    pub subscriptions: HashMap<(u64, u64), String>,
}

fn bounded(list: &mut VecDeque<Event>, event: Event, max: usize) {
    if list.len() == max {
        list.pop_front();
    }
    list.push_back(event);
}

impl Model {
    /// Sessions not yet ended.
    pub fn open_sessions(&self) -> usize {
        self.sessions.iter().filter(|s| !s.ended).count()
    }

    fn session_mut(
        &mut self,
        connection: Option<u64>,
        session: Option<u64>,
    ) -> Option<&mut SessionRow> {
        let (connection, session) = (connection?, session?);
        self.sessions
            .iter_mut()
            .rev()
            .find(|s| s.connection == connection && s.session == session)
    }

    /// Takes in one feed event.
    pub fn apply(&mut self, event: Event) {
        match event.kind.as_str() {
            "session" => match event.event.as_deref() {
                Some("identified") => {
                    if self.sessions.len() >= MAX_SESSIONS {
                        let oldest = self.sessions.iter().position(|s| s.ended).unwrap_or(0);
                        self.sessions.remove(oldest);
                    }
                    self.sessions.push(SessionRow {
                        connection: event.connection.unwrap_or(0),
                        session: event.session.unwrap_or(0),
                        user: event.user.clone().unwrap_or_default(),
                        client: event.client.unwrap_or(0),
                        peer: event.peer.clone().unwrap_or_default(),
                        protocol: event.protocol.clone().unwrap_or_default(),
                        opened_at: event.at,
                        ended: false,
                        messages_in: 0,
                        messages_out: 0,
                        subscriptions: event
                            .connection
                            .zip(event.session)
                            .and_then(|id| self.subscriptions.get(&id).cloned())
                            .unwrap_or_default(),
                    });
                }
                Some("ended") => {
                    if let Some(row) = self.session_mut(event.connection, event.session) {
                        row.ended = true;
                    }
                    if let Some(id) = event.connection.zip(event.session) {
                        self.subscriptions.remove(&id);
                    }
                }
                _ => {}
            },
            "connection" if event.event.as_deref() == Some("closed") => {
                for row in &mut self.sessions {
                    if Some(row.connection) == event.connection {
                        row.ended = true;
                    }
                }
            }
            "message" => {
                self.totals.messages += 1;
                let incoming = event.direction.as_deref() == Some("in");
                if let Some(row) = self.session_mut(event.connection, event.session) {
                    if incoming {
                        row.messages_in += 1;
                    } else {
                        row.messages_out += 1;
                    }
                }
                bounded(&mut self.messages, event, MAX_MESSAGES);
            }
            "subscription" => {
                let text = event
                    .subscriptions
                    .iter()
                    .map(|s| format!("{}: {}", s.collection, s.query))
                    .collect::<Vec<_>>()
                    .join("; ");
                if let Some(row) = self.session_mut(event.connection, event.session) {
                    row.subscriptions.clone_from(&text);
                }
                if let Some(id) = event.connection.zip(event.session) {
                    self.subscriptions.insert(id, text);
                }
            }
            "changeset" => {
                self.totals.changesets += 1;
                bounded(&mut self.changesets, event, MAX_CHANGESETS);
            }
            "error" => {
                self.totals.errors += 1;
                bounded(&mut self.errors, event, MAX_ERRORS);
            }
            "ingest" => {
                if let Some(batch) = &event.batch {
                    self.totals.ingested += batch.objects;
                }
            }
            "gap" => self.totals.missed += event.missed.unwrap_or(0),
            _ => {}
        }
    }

    /// Records one second's sample for the charts.
    pub fn tick(&mut self) {
        let now = self.totals;
        let last = self.rates.last;
        push(
            &mut self.rates.messages,
            now.messages - last.messages.min(now.messages),
        );
        push(
            &mut self.rates.changesets,
            now.changesets - last.changesets.min(now.changesets),
        );
        let open = self.open_sessions() as u64;
        push(&mut self.rates.sessions, open);
        push(
            &mut self.rates.ingest,
            now.ingested - last.ingested.min(now.ingested),
        );
        self.rates.last = now;
    }

    /// The messages of one session, plus its connection's connection-level messages.
    pub fn session_messages(&self, connection: u64, session: u64) -> Vec<Event> {
        self.messages
            .iter()
            .filter(|m| m.connection == Some(connection) && m.session.is_none_or(|s| s == session))
            .cloned()
            .collect()
    }
}

impl Decision {
    /// One line a person reads first: what this changeset's instruction did to the concurrent
    /// one (or the other way round), naming the concurrent changeset and the rule:
    /// `overrode v12 (client 0x2a) by rule LastWriterWins`.
    pub fn headline(&self) -> String {
        let verb = match (self.ours.outcome.as_str(), self.theirs.outcome.as_str()) {
            (_, "discarded") => "overrode",
            ("discarded", _) => "was overridden by",
            ("rewritten", _) => "was transformed against",
            (_, "rewritten") => "transformed",
            _ => "was merged with",
        };
        let changeset = match self.theirs.server_version {
            Some(v) => format!("v{v}"),
            None => format!("concurrent changeset #{}", self.theirs.changeset),
        };
        let client = self
            .theirs
            .client
            .map(|c| format!(" (client {c:#x})"))
            .unwrap_or_default();
        format!("{verb} {changeset}{client} by rule {}", self.rule)
    }
}

/// Bytes as people read them: `900 B`, `1.5 KB`, `2.3 MB` (powers of 1,000).
pub fn bytes_text(bytes: u64) -> String {
    match bytes {
        0..=999 => format!("{bytes} B"),
        1_000..=999_999 => format!("{:.1} KB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

impl Event {
    /// A message's size: the frame, then its changeset bodies as encoded and uncompressed when
    /// any was compressed (`2.1 KB frame, changesets 1.9 KB compressed from 40.2 KB`).
    pub fn message_size_text(&self) -> String {
        let frame = format!("{} frame", bytes_text(self.size.unwrap_or(0)));
        match (
            self.compressed_bodies,
            self.body_bytes,
            self.body_uncompressed_bytes,
        ) {
            (Some(compressed), Some(encoded), Some(uncompressed)) if compressed > 0 => format!(
                "{frame}, changesets {} compressed from {}",
                bytes_text(encoded),
                bytes_text(uncompressed)
            ),
            _ => frame,
        }
    }

    /// A changeset's body size, encoded and uncompressed (`420 B encoded, 420 B uncompressed`).
    pub fn changeset_size_text(&self) -> String {
        match (self.body_bytes, self.body_uncompressed_bytes) {
            (Some(encoded), Some(uncompressed)) => format!(
                "{} encoded, {} uncompressed",
                bytes_text(encoded),
                bytes_text(uncompressed)
            ),
            _ => "size unknown".to_owned(),
        }
    }
}

/// Parses one feed text frame.
pub fn parse(text: &str) -> Result<Event, String> {
    serde_json::from_str(text).map_err(|e| format!("the feed sent something unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> Event {
        parse(&json.to_string()).unwrap()
    }

    #[test]
    fn sessions_count_their_messages_and_end() {
        let mut model = Model::default();
        model.apply(event(serde_json::json!({
            "seq": 1, "kind": "subscription", "connection": 1, "session": 2, "version": 1,
            "subscriptions": [{"name": "all", "collection": "Item", "query": "TRUEPREDICATE"}],
        })));
        model.apply(event(serde_json::json!({
            "seq": 1, "kind": "session", "event": "identified", "connection": 1, "session": 2,
            "user": "u", "client": 7, "peer": "127.0.0.1:5", "protocol": "eddy-sync/5", "at": 10,
        })));
        for direction in ["in", "out", "in"] {
            model.apply(event(serde_json::json!({
                "seq": 2, "kind": "message", "connection": 1, "session": 2, "direction": direction,
                "type": "UPLOAD", "size": 3, "raw": "AAA=",
            })));
        }
        model.apply(event(serde_json::json!({
            "seq": 3, "kind": "message", "connection": 1, "direction": "in", "type": "PING",
        })));
        assert_eq!(model.open_sessions(), 1);
        assert_eq!(model.sessions[0].subscriptions, "Item: TRUEPREDICATE");
        assert_eq!(model.sessions[0].messages_in, 2);
        assert_eq!(model.sessions[0].messages_out, 1);
        assert_eq!(model.session_messages(1, 2).len(), 4);
        assert_eq!(model.session_messages(1, 3).len(), 1);
        model.apply(event(serde_json::json!({
            "seq": 4, "kind": "connection", "event": "closed", "connection": 1,
        })));
        assert_eq!(model.open_sessions(), 0);
    }

    #[test]
    fn rates_are_per_tick_differences() {
        let mut model = Model::default();
        for _ in 0..3 {
            model.apply(event(serde_json::json!({"kind": "changeset", "seq": 1})));
        }
        model.tick();
        model.apply(event(serde_json::json!({"kind": "changeset", "seq": 2})));
        model.tick();
        assert_eq!(model.rates.changesets, [3, 1]);
        assert_eq!(model.rates.ingest, [0, 0]);
        for objects in [100, 50] {
            model.apply(event(serde_json::json!({
                "kind": "ingest", "seq": 3, "event": "stored", "client": 7,
                "batch": {"collection": "Reading", "server_version": 4, "objects": objects,
                          "bytes": objects * 90, "lag_ms": 12},
            })));
        }
        model.tick();
        model.tick();
        assert_eq!(model.rates.ingest, [0, 0, 150, 0]);
        assert_eq!(model.totals.ingested, 150);
        for _ in 0..SAMPLES {
            model.tick();
        }
        assert_eq!(model.rates.changesets.len(), SAMPLES);
        assert_eq!(model.rates.ingest.len(), SAMPLES);
    }

    #[test]
    fn decisions_name_the_concurrent_changeset_and_sizes_read_naturally() {
        let changeset = event(serde_json::json!({
            "kind": "changeset", "seq": 1, "server_version": 9, "body_count": 1,
            "compressed_bodies": 1, "body_bytes": 1500, "body_uncompressed_bytes": 40_200,
            "decisions": [{"rule": "LastWriterWins",
                "ours": {"changeset": 0, "instruction": 0, "original": "", "outcome": "kept"},
                "theirs": {"changeset": 1, "instruction": 2, "original": "", "outcome": "discarded",
                           "server_version": 7, "client": 42}}],
        }));
        assert_eq!(
            changeset.decisions[0].headline(),
            "overrode v7 (client 0x2a) by rule LastWriterWins"
        );
        assert_eq!(
            changeset.changeset_size_text(),
            "1.5 KB encoded, 40.2 KB uncompressed"
        );
        let mut lost = changeset.decisions[0].clone();
        lost.ours.outcome = "discarded".into();
        lost.theirs.outcome = "kept".into();
        lost.theirs.server_version = None;
        assert_eq!(
            lost.headline(),
            "was overridden by concurrent changeset #1 (client 0x2a) by rule LastWriterWins"
        );

        let message = event(serde_json::json!({
            "kind": "message", "seq": 2, "type": "UPLOAD", "size": 1600, "body_count": 2,
            "compressed_bodies": 1, "body_bytes": 1500, "body_uncompressed_bytes": 40_200,
        }));
        assert_eq!(
            message.message_size_text(),
            "1.6 KB frame, changesets 1.5 KB compressed from 40.2 KB"
        );
        let plain = event(serde_json::json!({
            "kind": "message", "seq": 3, "type": "UPLOAD", "size": 90, "body_count": 1,
            "compressed_bodies": 0, "body_bytes": 60, "body_uncompressed_bytes": 60,
        }));
        assert_eq!(plain.message_size_text(), "90 B frame");
        assert_eq!(bytes_text(2_300_000), "2.3 MB");
    }

    #[test]
    fn bounded_lists_drop_the_oldest() {
        let mut model = Model::default();
        for seq in 0..(MAX_CHANGESETS as u64 + 5) {
            model.apply(event(serde_json::json!({"kind": "changeset", "seq": seq})));
        }
        assert_eq!(model.changesets.len(), MAX_CHANGESETS);
        assert_eq!(model.changesets[0].seq, 5);
        assert!(parse("{").is_err());
    }
}
