//! The deploy keeper: lock → prereqs → fetch → deploy → restart → verify → release.
//!
//! Owns: the tick loop and its one log line per tick. Must not touch:
//! spawning stack processes itself; it always goes through the supervisor.
//!
//! NOT BUILT YET (issue 4).
