//! One integration test binary: the real `stackctl`, real processes, temp dirs.
//! One module per area of SPEC; `harness` is the shared fixture.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod harness;

mod autoscale;
mod cgroups;
mod check;
mod core;
mod dependents;
mod docs;
mod export;
mod fresh_env;
mod hooks;
mod keeper;
mod listen;
mod lock;
mod logs;
mod memory;
mod operator;
mod pools;
mod reload;
mod schedule;
mod spawning;
mod survival;
