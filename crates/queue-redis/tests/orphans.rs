//! A producer that dies between creating a record and enqueueing it leaves a pending job that no
//! list, lane or lease holds; a worker process that starts picks it up.

use std::sync::Arc;
use std::time::Duration;

use lane_store::{RedisLaneStore, RedisPool};
use queue_core::conformance::{Behavior, RecordingHandler, eventually};
use queue_core::{
    HandlerSet, JobId, JobKind, JobStatus, JobStore, LaneId, LaneStoreConfig, LimitCaps, ManualClock, NewJob,
    QueueBackend, SharedClock, TenantId,
};
use queue_redis::{RedisBackendConfig, RedisBackendDeps, RedisJobStore, RedisLimiter, RedisQueueBackend};
use redis_harness::shared_server;

fn backend(
    pool: &RedisPool,
    tenant: &TenantId,
    store: Arc<RedisJobStore>,
    clock: SharedClock,
    handler: &RecordingHandler,
) -> RedisQueueBackend {
    let lanes = Arc::new(
        RedisLaneStore::new(pool.clone(), tenant, LaneStoreConfig::default(), clock.clone())
            .with_dispatch(true),
    );
    RedisQueueBackend::new(
        RedisBackendConfig { block: Duration::from_millis(200), ..RedisBackendConfig::default() },
        RedisBackendDeps {
            pool: pool.clone(),
            tenant: tenant.clone(),
            store,
            lanes,
            limiter: Arc::new(RedisLimiter::new(
                pool.clone(),
                tenant,
                LimitCaps::default(),
                Duration::from_secs(30),
            )),
            handlers: HandlerSet::uniform(Arc::new(handler.clone())),
            clock,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_starts_runs_jobs_a_dead_producer_created_but_never_enqueued() {
    let server = shared_server();
    let tenant = TenantId::new(format!("orphans{}", std::process::id())).expect("tenant");
    let clock: SharedClock = Arc::new(ManualClock::default());
    let pool = RedisPool::from_url(&server.url()).expect("pool");
    let store =
        Arc::new(RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), Duration::from_secs(3600)));
    let lane = LaneId::new("student:o:main").expect("lane");
    for (id, kind, lane) in [("chat-1", JobKind::Chat, Some(lane.clone())), ("up-1", JobKind::Upload, None)] {
        let job = NewJob {
            id: JobId::new(id).expect("id"),
            kind,
            lane,
            request_id: None,
            payload: Behavior::Ok.payload(),
        };
        store.create(job).await.expect("create");
    }
    let handler = RecordingHandler::new();
    let backend = backend(&pool, &tenant, store.clone(), clock, &handler);
    backend.start().await.expect("start");
    for id in ["chat-1", "up-1"] {
        let id = JobId::new(id).expect("id");
        eventually(&format!("{id} is done"), Duration::from_secs(20), || async {
            store.get(&id).await.expect("get").is_some_and(|r| r.status == JobStatus::Done)
        })
        .await;
        assert_eq!(handler.invocations(&id), 1);
    }
    // Sweeping again finds nothing: it is idempotent.
    assert_eq!(backend.sweep_orphans().await.expect("sweep"), 0);
    backend.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_never_puts_a_job_that_finished_meanwhile_back_in_its_lane() {
    use queue_core::{ChatLaneStore, JobUpdate};
    let server = shared_server();
    let tenant = TenantId::new(format!("finished{}", std::process::id())).expect("tenant");
    let clock: SharedClock = Arc::new(ManualClock::default());
    let pool = RedisPool::from_url(&server.url()).expect("pool");
    let store = RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), Duration::from_secs(3600));
    let lanes = RedisLaneStore::new(pool, &tenant, LaneStoreConfig::default(), clock).with_dispatch(true);
    let lane = LaneId::new("student:f:main").expect("lane");
    let id = JobId::new("finished-1").expect("id");
    let job = NewJob {
        id: id.clone(),
        kind: JobKind::Chat,
        lane: Some(lane.clone()),
        request_id: None,
        payload: Behavior::Ok.payload(),
    };
    store.create(job).await.expect("create");
    // The sweep read it as pending; then a worker finished it.
    store.transition(&id, JobUpdate::start(1)).await.expect("start");
    store.transition(&id, JobUpdate::done(1, serde_json::json!({}))).await.expect("done");

    let outcome = lanes.restore(&id, &lane).await.expect("restore");

    assert!(!outcome.added, "a finished job was put back in its lane");
    assert!(outcome.dispatch.is_none());
    assert_eq!(lanes.lane_load(&lane).await.expect("load").total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_pages_through_many_orphans_and_runs_each_once() {
    let server = shared_server();
    let tenant = TenantId::new(format!("paged{}", std::process::id())).expect("tenant");
    let clock: SharedClock = Arc::new(ManualClock::default());
    let pool = RedisPool::from_url(&server.url()).expect("pool");
    let store =
        Arc::new(RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), Duration::from_secs(3600)));
    // More than two pages of the sweep (1,000 ids each), none of them on a list.
    let ids: Vec<JobId> = (0..2_345).map(|i| JobId::new(format!("orphan-{i}")).expect("id")).collect();
    for id in &ids {
        let job = NewJob {
            id: id.clone(),
            kind: JobKind::Upload,
            lane: None,
            request_id: None,
            payload: Behavior::Ok.payload(),
        };
        store.create(job).await.expect("create");
    }
    let handler = RecordingHandler::new();
    let backend = backend(&pool, &tenant, store.clone(), clock, &handler);
    backend.start().await.expect("start");
    eventually("every orphan is done", Duration::from_secs(60), || async {
        store.counts(JobKind::Upload).await.expect("counts").done == ids.len() as u64
    })
    .await;
    for id in &ids {
        assert_eq!(handler.invocations(id), 1, "{id} ran once");
    }
    assert_eq!(backend.sweep_orphans().await.expect("sweep"), 0, "nothing is left to sweep");
    backend.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finds_an_orphan_after_the_lease_index_got_its_keeper() {
    let server = shared_server();
    let tenant = TenantId::new(format!("kept{}", std::process::id())).expect("tenant");
    let clock: SharedClock = Arc::new(ManualClock::default());
    let pool = RedisPool::from_url(&server.url()).expect("pool");
    let store =
        Arc::new(RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), Duration::from_secs(3600)));
    let job = |id: &str| NewJob {
        id: JobId::new(id).expect("id"),
        kind: JobKind::Upload,
        lane: None,
        request_id: None,
        payload: Behavior::Ok.payload(),
    };
    let handler = RecordingHandler::new();
    let backend = backend(&pool, &tenant, store.clone(), clock, &handler);
    backend.start().await.expect("start");
    // A job claimed and run: the lease index now holds its keeper member, which is no lease.
    backend.submit(store.clone() as Arc<dyn JobStore>, job("run-1")).await.expect("submit");
    eventually("run-1 is done", Duration::from_secs(20), || async {
        store.counts(JobKind::Upload).await.expect("counts").done == 1
    })
    .await;
    // A producer died between the record and the enqueue.
    store.create(job("orphan-1")).await.expect("create");
    assert_eq!(backend.sweep_orphans().await.expect("sweep"), 1, "the keeper hid the orphan");
    let orphan = JobId::new("orphan-1").expect("id");
    eventually("the orphan is done", Duration::from_secs(20), || async {
        store.get(&orphan).await.expect("get").is_some_and(|r| r.status == JobStatus::Done)
    })
    .await;
    backend.stop().await.expect("stop");
}
