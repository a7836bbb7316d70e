//! The console's pages, one per file.

pub mod changesets;
pub mod data;
pub mod ingest;
pub mod login;
pub mod overview;
pub mod schema;
pub mod sessions;
