//! Workspace scenarios.

mod layering;
