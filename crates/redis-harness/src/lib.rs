//! Dev-only test support: real `redis-server` processes for the Redis tests of other crates.
//!
//! [`RedisServer`] runs one `redis-server` in a fresh temp dir on a free loopback port and kills
//! it on drop; [`RedisCluster`] runs three of them as a local Redis Cluster. Both are synchronous
//! (std only), so sync and async tests alike can hold one for their whole body. Nothing assumes a
//! server on 6379.
//!
//! For fault tests, [`LossyProxy`] stands between a client and a server and loses the answer to
//! a chosen request after Redis has run it.
//!
//! For TLS tests, [`TestCa`] makes a throwaway certificate authority with the `openssl` command
//! and signs server certificates; [`RedisServer::start_tls`] serves TLS with one of them on a
//! second port, beside the plain port the harness itself uses.
//!
//! Redis tests never skip: when `redis-server` (or, for a cluster, `redis-cli`) is not on `PATH`,
//! starting panics with a message saying how to install it; [`require_redis_server`] does the
//! same check up front.
//!
//! This crate is a dev-dependency only; the layering tidy test (`tests/scenarios/layering.rs`)
//! says which crates may use it.

mod binaries;
mod cluster;
mod ports;
mod proxy;
mod resp;
mod server;
mod shared;
mod tls;

pub use binaries::require_redis_server;
pub use cluster::RedisCluster;
pub use proxy::LossyProxy;
pub use server::RedisServer;
pub use shared::{shared_cluster, shared_server};
pub use tls::{ServerCert, TestCa};
