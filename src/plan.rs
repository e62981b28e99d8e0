//! A validated stack plus a request → what to start and stop, in which order.
//!
//! Owns: dependency closure, pool instances (`worker.1..N`), levels for
//! start and the reverse for stop. Pure. Must not touch: I/O.
