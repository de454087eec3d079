//! The worker registry on a real `redis-server`: every backend that runs workers registers
//! itself (`lw:{t}:workers`), its heartbeat keeps the entry fresh (jobs in flight included), a
//! stop removes it, and a crashed worker's entry turns stale and is pruned by a live reaper.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lane_store::{RedisLaneStore, RedisPool};
use queue_core::conformance::{Behavior, RecordingHandler, eventually};
use queue_core::{
    Clock, HandlerSet, JobId, JobKind, JobStore, LaneStoreConfig, LimitCaps, ManualClock, NewJob,
    QueueBackend, SharedClock, TenantId,
};
use queue_redis::{
    RedisBackendConfig, RedisBackendDeps, RedisJobStore, RedisLimiter, RedisQueueBackend,
    RedisWorkerRegistry, WorkerEntry,
};
use redis_harness::{RedisServer, shared_server};

static NEXT_TENANT: AtomicU64 = AtomicU64::new(0);

const PATIENCE: Duration = Duration::from_secs(20);
const HEARTBEAT: Duration = Duration::from_millis(20);

/// One tenant on the shared server, with a manual clock its backends share.
struct Rig {
    _server: Arc<RedisServer>,
    url: String,
    tenant: TenantId,
    clock: ManualClock,
    handler: Arc<RecordingHandler>,
}

impl Rig {
    fn new() -> Self {
        let server = shared_server();
        let url = server.url();
        let n = NEXT_TENANT.fetch_add(1, Ordering::SeqCst);
        let tenant = TenantId::new(format!("workers{}-{n}", std::process::id())).expect("tenant");
        Self {
            _server: server,
            url,
            tenant,
            clock: ManualClock::new(1_700_000_000_000),
            handler: Arc::new(RecordingHandler::new()),
        }
    }

    fn pool(&self) -> RedisPool {
        RedisPool::from_url(&self.url).expect("pool")
    }

    fn store(&self) -> Arc<RedisJobStore> {
        let clock: SharedClock = Arc::new(self.clock.clone());
        Arc::new(RedisJobStore::new(self.pool(), self.tenant.clone(), clock, Duration::from_secs(3600)))
    }

    fn registry(&self) -> RedisWorkerRegistry {
        RedisWorkerRegistry::new(self.pool(), &self.tenant)
    }

    /// A started backend whose workers run and register as `host`.
    async fn backend(&self, host: &str) -> RedisQueueBackend {
        let clock: SharedClock = Arc::new(self.clock.clone());
        let pool = self.pool();
        let lanes = Arc::new(
            RedisLaneStore::new(pool.clone(), &self.tenant, LaneStoreConfig::default(), clock.clone())
                .with_dispatch(true),
        );
        let limiter = Arc::new(RedisLimiter::new(
            pool.clone(),
            &self.tenant,
            LimitCaps::default(),
            Duration::from_secs(30),
        ));
        let config = RedisBackendConfig {
            run_workers: true,
            heartbeat_interval: HEARTBEAT,
            reaper_interval: Duration::from_millis(5),
            block: Duration::from_millis(200),
            stop_deadline: Duration::from_secs(5),
            worker_host: Some(host.to_owned()),
            ..RedisBackendConfig::default()
        };
        let backend = RedisQueueBackend::new(
            config,
            RedisBackendDeps {
                pool,
                tenant: self.tenant.clone(),
                store: self.store(),
                lanes,
                limiter,
                handlers: HandlerSet::uniform(self.handler.clone()),
                clock,
            },
        );
        backend.start().await.expect("start");
        backend
    }

    async fn workers(&self) -> Vec<WorkerEntry> {
        self.registry().list(self.clock.now_ms()).await.expect("list workers")
    }
}

fn ids(entries: &[WorkerEntry]) -> Vec<String> {
    entries.iter().map(|e| e.worker_id.clone()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_register_and_a_stop_removes_only_its_own_entry() {
    let rig = Rig::new();
    let a = rig.backend("host-a").await;
    let b = rig.backend("host-b").await;
    assert_ne!(a.worker_id(), b.worker_id(), "two backends of one process are two workers");
    assert!(a.worker_id().starts_with(&format!("host-a:{}:", std::process::id())), "{}", a.worker_id());
    let workers = rig.workers().await;
    assert_eq!(ids(&workers), sorted(vec![a.worker_id().to_owned(), b.worker_id().to_owned()]));
    for w in &workers {
        assert_eq!(w.record.pid, std::process::id());
        assert_eq!(w.record.started_ms, rig.clock.now_ms());
        assert_eq!(w.record.heartbeat_ms, 20);
        assert!(!w.stale, "{w:?}");
        let host = if w.worker_id == a.worker_id() { "host-a" } else { "host-b" };
        assert_eq!(w.record.host, host);
    }
    b.stop().await.expect("stop b");
    assert_eq!(ids(&rig.workers().await), [a.worker_id().to_owned()], "the stop removed b's entry only");
    // Heartbeats go on for a while: b never comes back, a stays.
    rig.clock.advance(1);
    eventually("a heartbeat refreshes a's entry", PATIENCE, || async {
        rig.workers().await.first().is_some_and(|w| w.record.last_heartbeat_ms == rig.clock.now_ms())
    })
    .await;
    assert_eq!(ids(&rig.workers().await), [a.worker_id().to_owned()]);
    a.stop().await.expect("stop a");
    assert!(rig.workers().await.is_empty(), "no worker left registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_reports_the_jobs_a_worker_holds() {
    let rig = Rig::new();
    let a = rig.backend("host-a").await;
    let store = rig.store();
    let job = JobId::new("held-1").expect("id");
    store
        .create(NewJob {
            id: job.clone(),
            kind: JobKind::Upload,
            lane: None,
            request_id: None,
            payload: Behavior::GateFirst("hold".into()).payload(),
        })
        .await
        .expect("create");
    a.enqueue_upload_job(job.clone()).await.expect("enqueue");
    eventually("the worker's entry counts the job it holds", PATIENCE, || async {
        rig.workers().await.first().is_some_and(|w| w.record.in_flight == 1)
    })
    .await;
    rig.handler.open("hold");
    eventually("the entry counts nothing once the job is done", PATIENCE, || async {
        rig.workers().await.first().is_some_and(|w| w.record.in_flight == 0)
    })
    .await;
    a.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_turns_stale_and_a_live_reaper_prunes_it() {
    let rig = Rig::new();
    let live = rig.backend("host-live").await;
    let dead = rig.backend("host-dead").await;
    dead.kill().await;
    // A crash removes nothing: the entry is still there, alive until three heartbeats pass.
    let registry = rig.registry();
    let now = rig.clock.now_ms();
    let entries = registry.list(now).await.expect("list");
    assert!(ids(&entries).contains(&dead.worker_id().to_owned()));
    let later = registry.list(now + 3 * 20 + 1).await.expect("list");
    let dead_entry = later.iter().find(|w| w.worker_id == dead.worker_id()).expect("still listed");
    assert!(dead_entry.stale, "three heartbeats without a beat make it stale");
    // Time passes: the live worker beats again, the dead one cannot; the live reaper prunes it.
    rig.clock.advance(3 * 20 + 1);
    eventually("only the live worker is left, alive", PATIENCE, || async {
        let workers = rig.workers().await;
        ids(&workers) == [live.worker_id().to_owned()] && !workers[0].stale
    })
    .await;
    live.stop().await.expect("stop");
    assert!(rig.workers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_only_process_registers_no_worker() {
    let rig = Rig::new();
    let clock: SharedClock = Arc::new(rig.clock.clone());
    let pool = rig.pool();
    let lanes = Arc::new(
        RedisLaneStore::new(pool.clone(), &rig.tenant, LaneStoreConfig::default(), clock.clone())
            .with_dispatch(true),
    );
    let limiter =
        Arc::new(RedisLimiter::new(pool.clone(), &rig.tenant, LimitCaps::default(), Duration::from_secs(30)));
    let api_only = RedisQueueBackend::new(
        RedisBackendConfig { run_workers: false, ..RedisBackendConfig::default() },
        RedisBackendDeps {
            pool,
            tenant: rig.tenant.clone(),
            store: rig.store(),
            lanes,
            limiter,
            handlers: HandlerSet::uniform(rig.handler.clone()),
            clock,
        },
    );
    api_only.start().await.expect("start");
    assert!(rig.workers().await.is_empty());
    api_only.stop().await.expect("stop");
}
