//! The control protocol between the CLI and the supervisor.
