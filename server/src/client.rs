//! The native client (next commit).
