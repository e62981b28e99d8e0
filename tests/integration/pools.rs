//! Tests: pools.
