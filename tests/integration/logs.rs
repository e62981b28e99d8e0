//! Tests: logs.
