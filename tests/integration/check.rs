//! Tests: check.
