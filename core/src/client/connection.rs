//! The client side of one connection: connect and reconnect with jittered backoff, keepalive
//! PING/PONG with round-trip times, and routing of messages to the sessions it carries.
//!
//! # Drive loop
//! ```text
//! loop {
//!     while let Some(action) = conn.poll_action() { /* Connect: open a socket; Close: close it */ }
//!     while let Some(msg) = conn.poll_transmit(now) { /* encode and send */ }
//!     for each session: while let Some(event) = session.poll_event() { /* persist, notify */ }
//!     wait until conn.poll_timeout() or socket input, then call
//!     conn.handle_timeout(now) / handle_connected(now) / handle_message(now, msg) / handle_disconnected(now)
//! }
//! ```

use std::collections::VecDeque;

use crate::client::backoff::Backoff;
use crate::client::session::ClientSession;
use crate::protocol::{ClientMessage, ErrorAction, ServerMessage, SessionIdent};

/// Timing of a connection.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Time between PINGs while connected (must be under the server's 10-minute limit).
    pub ping_interval_ms: u64,
    /// How long to wait for a PONG before declaring the connection dead.
    pub pong_timeout_ms: u64,
    /// How long a connect attempt may take.
    pub connect_timeout_ms: u64,
    /// The first reconnect delay.
    pub backoff_base_ms: u64,
    /// The longest reconnect delay.
    pub backoff_max_ms: u64,
    /// Seed for reconnect jitter.
    pub seed: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            ping_interval_ms: 60_000,
            pong_timeout_ms: 30_000,
            connect_timeout_ms: 30_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            seed: 0,
        }
    }
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not connected; the next attempt is at `retry_at` (ms).
    Disconnected {
        /// When the next attempt starts.
        retry_at: u64,
    },
    /// A socket is being opened.
    Connecting,
    /// Connected.
    Connected,
    /// Paused by the application; no attempts until resumed.
    Paused,
}

/// What the driver must do with the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionAction {
    /// Open a socket and call `handle_connected` (or `handle_disconnected` on failure).
    Connect,
    /// Close the socket.
    Close,
}

/// The client side of one connection.
#[derive(Debug)]
pub struct ClientConnection {
    config: ConnectionConfig,
    state: ConnectionState,
    backoff: Backoff,
    /// Ordered by ident (a list: a connection carries few sessions, and the browser build stays
    /// free of a B-tree of sessions).
    sessions: Vec<ClientSession>,
    next_ping_at: u64,
    ping_sent_at: Option<u64>,
    connecting_since: u64,
    rtt_ms: u64,
    actions: VecDeque<ConnectionAction>,
    outbox: VecDeque<ClientMessage>,
}

impl ClientConnection {
    /// A connection that will try to connect at once.
    pub fn new(config: ConnectionConfig, now_ms: u64) -> Self {
        let backoff = Backoff::new(config.backoff_base_ms, config.backoff_max_ms, config.seed);
        ClientConnection {
            config,
            state: ConnectionState::Disconnected { retry_at: now_ms },
            backoff,
            sessions: Vec::new(),
            next_ping_at: 0,
            ping_sent_at: None,
            connecting_since: 0,
            rtt_ms: 0,
            actions: VecDeque::new(),
            outbox: VecDeque::new(),
        }
    }

    /// Adds a session; it binds as soon as the connection is up.
    pub fn add_session(&mut self, mut session: ClientSession) {
        if self.state == ConnectionState::Connected {
            session.handle_connected();
        }
        match self
            .sessions
            .binary_search_by_key(&session.ident(), ClientSession::ident)
        {
            Ok(at) => self.sessions[at] = session,
            Err(at) => self.sessions.insert(at, session),
        }
    }

    /// A session by ident.
    pub fn session(&self, ident: SessionIdent) -> Option<&ClientSession> {
        self.sessions.iter().find(|s| s.ident() == ident)
    }

    /// A session by ident, mutably (for writes and subscription changes).
    pub fn session_mut(&mut self, ident: SessionIdent) -> Option<&mut ClientSession> {
        self.sessions.iter_mut().find(|s| s.ident() == ident)
    }

    /// All sessions.
    pub fn sessions_mut(&mut self) -> impl Iterator<Item = &mut ClientSession> {
        self.sessions.iter_mut()
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The last measured round-trip time in milliseconds.
    pub fn rtt_ms(&self) -> u64 {
        self.rtt_ms
    }

    /// Stops connecting (and closes a live connection) until [`ClientConnection::resume`].
    pub fn pause(&mut self) {
        if matches!(
            self.state,
            ConnectionState::Connected | ConnectionState::Connecting
        ) {
            self.actions.push_back(ConnectionAction::Close);
            self.drop_sessions_connection();
        }
        self.state = ConnectionState::Paused;
    }

    /// Resumes after [`ClientConnection::pause`], or retries at once after the network came back.
    pub fn resume(&mut self, now_ms: u64) {
        if matches!(
            self.state,
            ConnectionState::Paused | ConnectionState::Disconnected { .. }
        ) {
            self.backoff.reset();
            self.state = ConnectionState::Disconnected { retry_at: now_ms };
        }
    }

    /// The socket is open.
    pub fn handle_connected(&mut self, now_ms: u64) {
        if self.state != ConnectionState::Connecting {
            return;
        }
        self.state = ConnectionState::Connected;
        self.next_ping_at = now_ms + self.config.ping_interval_ms;
        self.ping_sent_at = None;
        for session in self.sessions.iter_mut() {
            session.handle_connected();
        }
    }

    /// The socket closed or failed; schedule a reconnect.
    pub fn handle_disconnected(&mut self, now_ms: u64) {
        if matches!(
            self.state,
            ConnectionState::Paused | ConnectionState::Disconnected { .. }
        ) {
            return;
        }
        self.drop_sessions_connection();
        let delay = self.backoff.next_delay();
        self.state = ConnectionState::Disconnected {
            retry_at: now_ms + delay,
        };
    }

    fn drop_sessions_connection(&mut self) {
        self.outbox.clear();
        self.ping_sent_at = None;
        for session in self.sessions.iter_mut() {
            session.handle_disconnected();
        }
    }

    /// A message arrived.
    pub fn handle_message(&mut self, now_ms: u64, msg: ServerMessage) {
        if self.state != ConnectionState::Connected {
            return;
        }
        match (&msg, msg.session()) {
            (ServerMessage::Pong { timestamp }, _) => {
                if self.ping_sent_at == Some(*timestamp) {
                    self.rtt_ms = now_ms.saturating_sub(*timestamp);
                    self.ping_sent_at = None;
                    // A round trip worked: the connection is healthy.
                    self.backoff.reset();
                }
            }
            (ServerMessage::Error { code, .. }, None) => {
                // Connection-level error: the server closes the connection.
                let fatal = !matches!(code.action(), ErrorAction::Transient | ErrorAction::Warning);
                self.actions.push_back(ConnectionAction::Close);
                self.handle_disconnected(now_ms);
                if fatal {
                    self.state = ConnectionState::Paused;
                }
            }
            (_, Some(ident)) => {
                if let Some(session) = self.sessions.iter_mut().find(|s| s.ident() == ident) {
                    session.handle_message(now_ms, msg);
                    if session.is_active() {
                        self.backoff.reset();
                    }
                }
            }
            (_, None) => {}
        }
    }

    /// Time passed: reconnect, ping, or give up on a silent server.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.state {
            ConnectionState::Disconnected { retry_at } if now_ms >= retry_at => {
                self.state = ConnectionState::Connecting;
                self.connecting_since = now_ms;
                self.actions.push_back(ConnectionAction::Connect);
            }
            ConnectionState::Connecting
                if now_ms >= self.connecting_since + self.config.connect_timeout_ms =>
            {
                self.actions.push_back(ConnectionAction::Close);
                self.handle_disconnected(now_ms);
            }
            ConnectionState::Connected => {
                if let Some(sent) = self.ping_sent_at {
                    if now_ms >= sent + self.config.pong_timeout_ms {
                        self.actions.push_back(ConnectionAction::Close);
                        self.handle_disconnected(now_ms);
                    }
                } else if now_ms >= self.next_ping_at {
                    self.ping_sent_at = Some(now_ms);
                    self.next_ping_at = now_ms + self.config.ping_interval_ms;
                    self.outbox.push_back(ClientMessage::Ping {
                        timestamp: now_ms,
                        rtt: self.rtt_ms,
                    });
                }
                if self.state == ConnectionState::Connected {
                    for session in self.sessions.iter_mut() {
                        session.handle_timeout(now_ms);
                    }
                }
            }
            _ => {}
        }
    }

    /// When [`ClientConnection::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            ConnectionState::Disconnected { retry_at } => Some(retry_at),
            ConnectionState::Connecting => {
                Some(self.connecting_since + self.config.connect_timeout_ms)
            }
            ConnectionState::Connected => {
                let own = match self.ping_sent_at {
                    Some(sent) => sent + self.config.pong_timeout_ms,
                    None => self.next_ping_at,
                };
                let sessions = self.sessions.iter().filter_map(ClientSession::poll_timeout);
                sessions.chain([own]).min()
            }
            ConnectionState::Paused => None,
        }
    }

    /// The next socket action, if any.
    pub fn poll_action(&mut self) -> Option<ConnectionAction> {
        self.actions.pop_front()
    }

    /// The next message to send, if any (connection-level first, then each session's).
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        if self.state != ConnectionState::Connected {
            return None;
        }
        if let Some(msg) = self.outbox.pop_front() {
            return Some(msg);
        }
        self.sessions
            .iter_mut()
            .find_map(ClientSession::poll_transmit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn reconnects_with_growing_delays_and_pings_when_idle() {
        let config = ConnectionConfig {
            ping_interval_ms: 1_000,
            pong_timeout_ms: 500,
            ..Default::default()
        };
        let mut conn = ClientConnection::new(config, 0);
        conn.handle_timeout(0);
        assert_eq!(conn.poll_action(), Some(ConnectionAction::Connect));
        conn.handle_disconnected(10);
        let ConnectionState::Disconnected { retry_at } = conn.state() else {
            panic!("not disconnected")
        };
        assert!((510..=1_010).contains(&retry_at));
        conn.handle_timeout(retry_at);
        assert_eq!(conn.poll_action(), Some(ConnectionAction::Connect));
        conn.handle_connected(retry_at);
        conn.handle_timeout(retry_at + 1_000);
        assert_eq!(
            conn.poll_transmit(),
            Some(ClientMessage::Ping {
                timestamp: retry_at + 1_000,
                rtt: 0
            })
        );
        conn.handle_message(
            retry_at + 1_040,
            ServerMessage::Pong {
                timestamp: retry_at + 1_000,
            },
        );
        assert_eq!(conn.rtt_ms(), 40);
        // A missing PONG closes the connection.
        conn.handle_timeout(retry_at + 2_000);
        assert!(conn.poll_transmit().is_some());
        conn.handle_timeout(retry_at + 2_500);
        assert_eq!(conn.poll_action(), Some(ConnectionAction::Close));
        assert!(matches!(conn.state(), ConnectionState::Disconnected { .. }));
    }

    #[test]
    fn connection_level_protocol_violation_stops_reconnecting() {
        let mut conn = ClientConnection::new(ConnectionConfig::default(), 0);
        conn.handle_timeout(0);
        conn.handle_connected(1);
        conn.handle_message(
            2,
            ServerMessage::Error {
                session: 0,
                code: ErrorCode::WrongProtocolVersion,
                message: "v".into(),
                compensating: None,
            },
        );
        assert_eq!(conn.state(), ConnectionState::Paused);
    }
}
