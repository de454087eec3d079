//! One server (or cluster) shared by the tests of a binary that run at the same time. A `static`
//! would never be dropped, leaving `redis-server` running after the binary exits; a `Weak` lets
//! the last test holding it drop it, which kills the process.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::{RedisCluster, RedisServer};

static SERVER: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
static CLUSTER: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());

fn shared<T>(slot: &Mutex<Weak<T>>, start: impl FnOnce() -> T) -> Arc<T> {
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(running) = slot.upgrade() {
        return running;
    }
    let fresh = Arc::new(start());
    *slot = Arc::downgrade(&fresh);
    fresh
}

/// The single-node server a running test of this binary holds, or a fresh one. Give each test a
/// tenant (key prefix) of its own.
#[must_use]
pub fn shared_server() -> Arc<RedisServer> {
    shared(&SERVER, RedisServer::start)
}

/// The 3-node cluster a running test of this binary holds, or a fresh one.
#[must_use]
pub fn shared_cluster() -> Arc<RedisCluster> {
    shared(&CLUSTER, RedisCluster::start)
}
