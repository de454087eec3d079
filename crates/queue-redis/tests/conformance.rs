//! The queue-core conformance battery on the Redis backend, against a real single-node Redis and
//! a real 3-node Redis Cluster started by the tests themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lane_store::{RedisLaneStore, RedisPool};
use queue_core::conformance::{Rig, RigFactory, RigOptions};
use queue_core::{HandlerSet, LimitCaps, ManualClock, QueueBackend, SharedClock, TenantId};
use queue_redis::{
    RedisBackendConfig, RedisBackendDeps, RedisIdempotencyStore, RedisJobStore, RedisLimiter,
    RedisQueueBackend,
};
use redis_harness::{RedisCluster, RedisServer, shared_cluster, shared_server};

static NEXT_TENANT: AtomicU64 = AtomicU64::new(0);

/// Keeps the test's Redis alive while the rig lives.
#[allow(dead_code)] // held only for its Drop
enum Held {
    Single(Arc<RedisServer>),
    Cluster(Arc<RedisCluster>),
}

struct RedisRigs {
    _redis: Held,
    url: String,
    tenant: TenantId,
    current: Mutex<Option<RedisQueueBackend>>,
}

impl RedisRigs {
    fn on(redis: Held, url: String) -> Self {
        // One server per test binary; a fresh tenant per test keeps their keys apart.
        let n = NEXT_TENANT.fetch_add(1, Ordering::SeqCst);
        let tenant = TenantId::new(format!("conf{}-{n}", std::process::id())).expect("tenant");
        Self { _redis: redis, url, tenant, current: Mutex::new(None) }
    }

    fn single() -> Self {
        let server = shared_server();
        let url = server.url();
        Self::on(Held::Single(server), url)
    }

    fn cluster() -> Self {
        let cluster = shared_cluster();
        let url = cluster.url();
        Self::on(Held::Cluster(cluster), url)
    }

    async fn start(&self, handlers: HandlerSet, options: &RigOptions, clock: ManualClock) -> Rig {
        let shared: SharedClock = Arc::new(clock.clone());
        let pool = RedisPool::from_url(&self.url).expect("pool");
        let store = Arc::new(RedisJobStore::new(
            pool.clone(),
            self.tenant.clone(),
            shared.clone(),
            Duration::from_secs(3600),
        ));
        let idempotency =
            Arc::new(RedisIdempotencyStore::new(pool.clone(), &self.tenant, Duration::from_secs(3600)));
        let lanes = Arc::new(
            RedisLaneStore::new(pool.clone(), &self.tenant, options.lanes, shared.clone())
                .with_dispatch(true),
        );
        let limiter = Arc::new(RedisLimiter::new(
            pool.clone(),
            &self.tenant,
            LimitCaps::default(),
            Duration::from_secs(30),
        ));
        let config = RedisBackendConfig {
            chat_concurrency: options.chat_workers,
            max_attempts: options.max_attempts,
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(20),
            lease: Duration::from_millis(options.lanes.claim_ttl_ms),
            heartbeat_interval: if options.heartbeats {
                Duration::from_millis(10)
            } else {
                Duration::from_secs(3600)
            },
            reaper_interval: Duration::from_millis(5),
            block: Duration::from_millis(200),
            stop_deadline: options.stop_deadline,
            ..RedisBackendConfig::default()
        };
        let backend = RedisQueueBackend::new(
            config,
            RedisBackendDeps {
                pool,
                tenant: self.tenant.clone(),
                store: store.clone(),
                lanes: lanes.clone(),
                limiter,
                handlers,
                clock: shared,
            },
        );
        backend.start().await.expect("start");
        *self.current.lock().expect("current") = Some(backend.clone());
        Rig { backend: Arc::new(backend), store, lanes, idempotency, clock }
    }
}

#[async_trait]
impl RigFactory for RedisRigs {
    async fn build(&self, handlers: HandlerSet, options: RigOptions) -> Rig {
        self.start(handlers, &options, ManualClock::default()).await
    }

    async fn crash_and_restart(&self, rig: Rig, handlers: HandlerSet, options: RigOptions) -> Rig {
        let dead = self.current.lock().expect("current").take().expect("a rig was built");
        dead.kill().await;
        // The dead worker renews nothing any more: once its leases lapse, the reaper of the new
        // process hands its jobs out again.
        rig.clock.advance(options.lanes.claim_ttl_ms + 1);
        self.start(handlers, &options, rig.clock.clone()).await
    }
}

mod single {
    use super::RedisRigs;
    queue_core::conformance_tests!(RedisRigs::single());
}

mod cluster {
    use super::RedisRigs;
    queue_core::conformance_tests!(RedisRigs::cluster());
}
