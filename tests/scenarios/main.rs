//! Workspace scenarios.

mod admin;
mod cli;
mod crash_recovery;
mod dashboard;
mod http_bad_input;
mod layering;
mod metrics;
mod openapi;
mod ops_http;
mod redis_bad_input;
mod redis_limiter;
mod redis_lost_answer;
mod redis_restart;
mod redis_support;
mod redis_tls;
mod redis_workers;
