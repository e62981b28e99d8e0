//! Tests: lock.
