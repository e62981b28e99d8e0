//! One integration test binary: the real `stackctl`, real processes, temp dirs.
//! One module per area of SPEC; `harness` is the shared fixture.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod harness;

mod autoscale;
mod check;
mod core;
mod docs;
mod export;
mod keeper;
mod lock;
mod logs;
mod operator;
mod pools;
