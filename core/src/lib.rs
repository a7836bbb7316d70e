//! `eddy-core`: everything Eddy's clients and server share, with no I/O.
//!
//! - [`value`] and [`schema`]: the data model, with EJSON in and out.
//! - [`changeset`]: instructions, changeset metadata and the binary changeset codec.
//! - [`store`]: the in-memory object store that applies changesets and reports changes.
//! - [`transform`]: operational transformation, the one merge algorithm of clients and server.
//! - [`query`]: the RQL subset used by queries, subscriptions and permission filters.
//! - [`protocol`]: the wire messages, their codec and the error table.
//! - [`client`] and [`server`]: sans-IO sync state machines, driven by `handle_*`/`poll_*`.
//! - [`sim`]: a deterministic simulation of a server and many clients over a faulty network.
//! - [`sort`]: the one stable sort every part of the crate shares (it keeps the browser build small).
//!
//! **Architecture invariant:** this crate does no I/O, reads no clock, draws no randomness except
//! from a seed it is given, and spawns nothing. Drivers feed it time and bytes.

#![deny(missing_docs)]

pub mod changeset;
pub mod client;
pub mod ingest;
pub mod protocol;
pub mod query;
pub mod quote;
pub mod schema;
pub mod schema_json;
pub mod server;
pub mod sim;
pub mod sort;
pub mod sorted_map;
pub mod store;
pub mod transform;
pub mod value;
pub mod wire;
