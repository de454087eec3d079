//! Shared helpers for the workspace scenarios.
