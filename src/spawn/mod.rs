//! Spawning children.
