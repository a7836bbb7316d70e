//! Placeholder for transform tests.
