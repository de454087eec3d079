//! Workspace scenarios.

mod crash_recovery;
mod http_bad_input;
mod layering;
