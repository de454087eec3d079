//! Workspace scenarios.
