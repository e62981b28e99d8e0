//! The supervisor daemon.
