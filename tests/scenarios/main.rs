//! Workspace scenarios.

mod crash_recovery;
mod http_bad_input;
mod layering;
mod redis_bad_input;
mod redis_limiter;
mod redis_restart;
mod redis_support;
mod redis_workers;
