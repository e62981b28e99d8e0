//! The outward-facing forms: the status table, SPEC's `status --json`
//! records, colour and `NO_COLOR`. Pure rendering to a writer.
//! Must not touch: exit codes; I/O beyond the writer.
