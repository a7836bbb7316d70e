//! `eddy-sync`: Eddy's browser client, built with wasm-pack into the npm package `eddy-sync`.
//!
//! The JavaScript API follows Realm JS: [`App`] signs in with [`Credentials`] and yields a
//! [`User`]; [`Eddy::open`] opens that user's local database (IndexedDB) and syncs it with the
//! server over a WebSocket; [`Results`] are live queries; [`SubscriptionSet`] and [`SyncSession`]
//! control sync. Every exported class has its own file. The sync protocol itself (binding,
//! uploads, integration of downloads, backoff) is the core's sans-IO client; `driver` only moves
//! bytes, time and storage writes between it and the browser.

#![deny(missing_docs)]

mod app;
mod convert;
mod credentials;
mod driver;
mod eddy;
mod errors;
mod http;
mod lock;
mod object;
mod results;
mod storage;
mod subscriptions;
mod sync_session;
mod user;

pub use app::{App, EmailPasswordAuth};
pub use credentials::Credentials;
pub use eddy::Eddy;
pub use results::Results;
pub use subscriptions::{MutableSubscriptionSet, SubscriptionSet};
pub use sync_session::SyncSession;
pub use user::User;
