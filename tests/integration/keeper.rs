//! Tests: keeper.
