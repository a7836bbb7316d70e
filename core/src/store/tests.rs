//! Placeholder for store tests.
