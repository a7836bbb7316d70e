//! The numbered error table: every code the server sends in ERROR, TRANSACT and QUERY_ERROR,
//! with its meaning and the action a client takes. Codes 100–199 concern the whole connection,
//! 200–299 one session. Where a code means what the same number means in Realm's protocol it
//! keeps that number.

use std::fmt;

/// What a client does on receiving an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorAction {
    /// Temporary: reconnect with backoff and carry on.
    Transient,
    /// The local file cannot continue from where it is: reset it from the server's state,
    /// re-applying unacknowledged local changes where possible.
    ClientReset,
    /// The access token expired or was revoked: get a new one and send REFRESH.
    RefreshToken,
    /// The user can no longer sync: log them out.
    LogOut,
    /// The application did something the protocol forbids; fix the code, retrying will not help.
    ApplicationBug,
    /// Informational; the session continues.
    Warning,
}

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $name:ident = $num:literal, $action:ident, $text:literal; )*) => {
        /// A protocol error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The number sent on the wire.
            pub fn number(self) -> u16 {
                match self { $(ErrorCode::$name => $num,)* }
            }

            /// The code for a number, if it is one.
            pub fn from_number(n: u16) -> Option<ErrorCode> {
                match n { $($num => Some(ErrorCode::$name),)* _ => None }
            }

            /// What a client does about it.
            pub fn action(self) -> ErrorAction {
                match self { $(ErrorCode::$name => ErrorAction::$action,)* }
            }

            /// A short human description.
            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$name => $text,)* }
            }
        }
    };
}

error_codes! {
    /// The connection was closed normally.
    ConnectionClosed = 100, Transient, "connection closed";
    /// An unexpected condition on the server.
    OtherError = 101, Transient, "unexpected server error";
    /// A message type the server does not know.
    UnknownMessage = 102, ApplicationBug, "unknown type of message";
    /// A message that does not decode.
    BadSyntax = 103, ApplicationBug, "message does not follow the protocol syntax";
    /// A message or a buffer over a configured limit.
    LimitsExceeded = 104, ApplicationBug, "a size or count limit was exceeded";
    /// The client speaks a protocol version the server does not.
    WrongProtocolVersion = 105, ApplicationBug, "unsupported protocol version";
    /// A session ident that is 0 or not bound.
    BadSessionIdent = 106, ApplicationBug, "bad session identifier";
    /// A BIND reused an ident that is still bound on this connection.
    ReuseOfSessionIdent = 107, ApplicationBug, "session identifier reused";
    /// The client file is already bound in another session.
    BoundInOtherSession = 108, Transient, "client file bound in other session";
    /// A message sent in a state where it is not allowed (e.g. UPLOAD before IDENT).
    BadMessageOrder = 109, ApplicationBug, "message sent out of order";
    /// A compressed body that does not inflate.
    BadDecompression = 110, ApplicationBug, "changeset body failed to decompress";
    /// A changeset whose header fields are malformed.
    BadChangesetHeaderSyntax = 111, ApplicationBug, "bad changeset header";
    /// A changeset whose stated size is wrong.
    BadChangesetSize = 112, ApplicationBug, "bad changeset size";
    /// The session ended normally.
    SessionClosed = 200, Transient, "session closed";
    /// An unexpected condition affecting one session.
    OtherSessionError = 201, Transient, "unexpected session error";
    /// The access token expired: refresh it and send REFRESH.
    TokenExpired = 202, RefreshToken, "access token expired";
    /// The access token is invalid (bad signature, wrong app, revoked).
    BadAuthentication = 203, LogOut, "access token is not valid";
    /// The requested server file path is not allowed.
    IllegalRealmPath = 204, ApplicationBug, "illegal server file path";
    /// The requested server file does not exist.
    NoSuchRealm = 205, ApplicationBug, "no such server file";
    /// The user may not access this server file.
    PermissionDenied = 206, LogOut, "permission denied";
    /// The client file ident or its salt is wrong (forged or from another server).
    BadClientFileIdent = 208, ClientReset, "unknown client file identifier or wrong salt";
    /// A server version the server does not have, or whose salt does not match.
    BadServerVersion = 209, ClientReset, "bad server version";
    /// A client version that goes backwards or skips.
    BadClientVersion = 210, ClientReset, "bad client version";
    /// The client's history and the server's no longer share a base.
    DivergingHistories = 211, ClientReset, "client and server histories diverged";
    /// A changeset that does not decode or does not apply.
    BadChangeset = 212, ApplicationBug, "bad changeset";
    /// A newer session for the same client file replaced this one.
    Superseded = 213, Transient, "superseded by a newer session";
    /// Sync was disabled for this app or user.
    DisabledSession = 214, LogOut, "sync is disabled for this session";
    /// The client asked for a feature the server does not offer.
    UnsupportedSessionFeature = 216, ApplicationBug, "unsupported session feature";
    /// An upload named an origin file ident other than the session's.
    BadOriginFileIdent = 217, ApplicationBug, "bad origin file identifier";
    /// The client file is unusable (for example its history was trimmed away).
    BadClientFile = 218, ClientReset, "client file is unusable";
    /// The server file was deleted.
    ServerFileDeleted = 219, ClientReset, "server file was deleted";
    /// This client file is blocked.
    ClientFileBlacklisted = 220, ClientReset, "client file is blocked";
    /// This user is blocked.
    UserBlacklisted = 221, LogOut, "user is blocked";
    /// A TRANSACT sent before earlier uploads were acknowledged.
    TransactBeforeUpload = 222, ApplicationBug, "transact sent before uploads were acknowledged";
    /// The client file was last seen too long ago; its history is gone.
    ClientFileExpired = 223, ClientReset, "client file expired";
    /// The token belongs to a different user than the bound session.
    UserMismatch = 224, LogOut, "token belongs to a different user";
    /// Too many sessions on one connection.
    TooManySessions = 225, Transient, "too many sessions on this connection";
    /// A schema change the server refuses (not additive, or not in development mode).
    InvalidSchemaChange = 226, ApplicationBug, "invalid schema change";
    /// A subscription query that does not parse or names unknown fields.
    BadQuery = 227, ApplicationBug, "invalid subscription query";
    /// A create that conflicts with an existing object of another type.
    ObjectAlreadyExists = 228, Warning, "object already exists";
    /// Permissions changed on the server; the file must be reset.
    ServerPermissionsChanged = 229, ClientReset, "server permissions changed";
    /// The server is still building its initial state.
    InitialSyncNotCompleted = 230, Transient, "initial sync not completed";
    /// A write the user's role does not allow, or to an object outside the subscriptions.
    WriteNotAllowed = 231, Warning, "write not allowed";
    /// Writes were refused and undone by a compensating write.
    CompensatingWrite = 232, Warning, "writes were refused and reverted";
    /// Progress numbers that go backwards or are inconsistent.
    BadProgress = 234, ClientReset, "bad progress information";
    /// An update or erase of an insert-only (asymmetric) object.
    AsymmetricWriteRefused = 240, ApplicationBug, "asymmetric objects are insert-only";
    /// A TRANSACT touched objects changed concurrently; nothing was integrated.
    TransactConflict = 241, Warning, "transaction conflicts with concurrent changes";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description(), self.number())
    }
}

impl ErrorCode {
    /// Whether the code concerns the whole connection (100–199) rather than one session.
    pub fn is_connection_level(self) -> bool {
        self.number() < 200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_are_unique_and_sorted() {
        let numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.number()).collect();
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(numbers, sorted);
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_number(code.number()), Some(*code));
        }
        assert_eq!(ErrorCode::from_number(999), None);
    }
}
