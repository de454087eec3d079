//! What the Redis backend's integration tests share: a tenant on a server of the test's own
//! (its job store, a recording handler, backends built on both), and small readers of its state.
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lane_store::TenantKeys;
use lane_store::{RedisLaneStore, RedisPool};
use queue_core::conformance::{Behavior, RecordingHandler, eventually, new_job};
use queue_core::{
    HandlerSet, JobHandler, JobId, JobKind, JobStore, LaneStoreConfig, LimitCaps, QueueBackend, SharedClock,
    SystemClock, TenantId,
};
use queue_redis::{RedisBackendConfig, RedisBackendDeps, RedisJobStore, RedisLimiter, RedisQueueBackend};
use redis_harness::RedisServer;

/// `calls` of `cmdstat_<command>` in `INFO commandstats`.
pub fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server.command(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// One tenant on `server`: its job store, a recording handler, and backends built on both.
pub struct Rig {
    pub pool: RedisPool,
    pub tenant: TenantId,
    pub clock: SharedClock,
    pub lanes: LaneStoreConfig,
    pub store: Arc<dyn JobStore>,
    pub handler: RecordingHandler,
}

impl Rig {
    pub fn new(server: &RedisServer, tenant: &str) -> Self {
        Self::with(server, tenant, Arc::new(SystemClock), LaneStoreConfig::default())
    }

    /// A rig on `clock`, whose lane stores use `lanes`.
    pub fn with(server: &RedisServer, tenant: &str, clock: SharedClock, lanes: LaneStoreConfig) -> Self {
        let tenant = TenantId::new(tenant).expect("tenant");
        let pool = RedisPool::from_url(&server.url()).expect("pool");
        let store: Arc<dyn JobStore> = Arc::new(RedisJobStore::new(
            pool.clone(),
            tenant.clone(),
            clock.clone(),
            Duration::from_secs(3600),
        ));
        Self { pool, tenant, clock, lanes, store, handler: RecordingHandler::new() }
    }

    /// A started backend that runs no workers: it only submits.
    pub async fn producer(&self) -> RedisQueueBackend {
        let producer =
            self.backend(RedisBackendConfig { run_workers: false, ..RedisBackendConfig::default() });
        producer.start().await.expect("start producer");
        producer
    }

    /// A stopped backend with `config`.
    pub fn backend(&self, config: RedisBackendConfig) -> RedisQueueBackend {
        self.backend_running(config, Arc::new(self.handler.clone()))
    }

    /// A stopped backend with `config` whose workers run `handler`.
    pub fn backend_running(
        &self,
        config: RedisBackendConfig,
        handler: Arc<dyn JobHandler>,
    ) -> RedisQueueBackend {
        self.backend_on(&self.pool.clone(), config, handler)
    }

    /// A stopped backend with `config` whose workers run `handler`, and whose calls (its own,
    /// its lane store's and its limiter's) go through `pool` (the job store stays the rig's).
    pub fn backend_on(
        &self,
        pool: &RedisPool,
        config: RedisBackendConfig,
        handler: Arc<dyn JobHandler>,
    ) -> RedisQueueBackend {
        let (tenant, clock) = (&self.tenant, &self.clock);
        RedisQueueBackend::new(
            RedisBackendConfig { block: Duration::from_millis(200), ..config },
            RedisBackendDeps {
                pool: pool.clone(),
                tenant: tenant.clone(),
                store: self.store.clone(),
                lanes: Arc::new(
                    RedisLaneStore::new(pool.clone(), tenant, self.lanes, clock.clone()).with_dispatch(true),
                ),
                limiter: Arc::new(RedisLimiter::new(
                    pool.clone(),
                    tenant,
                    LimitCaps::default(),
                    Duration::from_secs(30),
                )),
                handlers: HandlerSet::uniform(handler),
                clock: clock.clone(),
            },
        )
    }
}

/// Queues `jobs` (id, behaviour) as uploads through a producer of `rig`'s, in order.
pub async fn queue_uploads(rig: &Rig, jobs: &[(&str, Behavior)]) -> RedisQueueBackend {
    let producer = rig.producer().await;
    for (id, behavior) in jobs {
        producer
            .submit(rig.store.clone(), new_job(id, JobKind::Upload, None, behavior))
            .await
            .expect("submit");
    }
    producer
}

pub async fn status(store: &Arc<dyn JobStore>, id: &str) -> queue_core::JobStatus {
    store.get(&JobId::new(id).expect("id")).await.expect("get").expect("record").status
}

pub fn id(id: &str) -> JobId {
    JobId::new(id).expect("id")
}

/// Waits until `worker` is registered as idle for `kind` (its last claim found too few jobs).
pub async fn wait_registered(rig: &Rig, server: &RedisServer, worker: &RedisQueueBackend, kind: JobKind) {
    let idle = TenantKeys::new(&rig.tenant).idle(kind);
    eventually("the worker registers as idle", Duration::from_secs(20), || async {
        server.command(&["ZSCORE", &idle, worker.worker_id()]) != "(nil)"
    })
    .await;
}

/// How many jobs wait in `worker`'s hand-off list of `kind` (the key exists only while it holds
/// any).
pub fn handed_to(server: &RedisServer, rig: &Rig, kind: JobKind, worker: &str) -> String {
    server.command(&["LLEN", &TenantKeys::new(&rig.tenant).handoff(kind, worker)])
}
