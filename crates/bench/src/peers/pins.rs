//! The peers' versions, pinned in this one place. `cargo xtask bench-peers` installs exactly
//! these into `target/peers/` (xtask compiles this file too, through `#[path]`, so it must not
//! use anything of the crate), and `laneway-bench peers` reports the versions its drivers find
//! installed. Each is the newest release on its registry when the peers were first measured
//! (2026-11-28), except ioredis, pinned to the version BullMQ 6.7.0 is tested with.

/// One package of a peer, at one exact version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The registry it comes from: `npm`, `PyPI` or `crates.io`.
    pub registry: &'static str,
    /// The package's name there.
    pub package: &'static str,
    /// The exact version installed.
    pub version: &'static str,
}

/// BullMQ (Node), the queue of the `bullmq` column.
pub const BULLMQ: Pin = Pin { registry: "npm", package: "bullmq", version: "6.7.0" };
/// ioredis: BullMQ 6's optional peer dependency, its Redis client.
pub const IOREDIS: Pin = Pin { registry: "npm", package: "ioredis", version: "5.11.1" };
/// RQ (Python), the queue of the `rq` column, run with its `SimpleWorker`.
pub const RQ: Pin = Pin { registry: "PyPI", package: "rq", version: "3.0.0" };
/// apalis (Rust), the worker framework of the `apalis` column.
pub const APALIS: Pin = Pin { registry: "crates.io", package: "apalis", version: "1.0.0" };
/// apalis-redis, apalis's Redis backend.
pub const APALIS_REDIS: Pin = Pin { registry: "crates.io", package: "apalis-redis", version: "1.0.0" };
