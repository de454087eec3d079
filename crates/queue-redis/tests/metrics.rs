//! The Redis backend records job events into the `JobMetrics` of its config, at the same points
//! as the inline runtime: enqueue, start (lane wait on the first attempt), outcome (run time),
//! on a real `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use lane_store::{RedisLaneStore, RedisPool};
use queue_core::conformance::{Behavior, RecordingHandler, eventually};
use queue_core::{
    HandlerSet, JobId, JobKind, JobMetrics, JobStore, KindSnapshot, LaneId, LaneStoreConfig, LimitCaps,
    MetricsSnapshot, NewJob, QueueBackend, SharedClock, SystemClock, TenantId,
};
use queue_redis::{RedisBackendConfig, RedisBackendDeps, RedisJobStore, RedisLimiter, RedisQueueBackend};
use redis_harness::shared_server;

const PATIENCE: Duration = Duration::from_secs(20);

fn kind(s: &MetricsSnapshot, kind: JobKind) -> KindSnapshot {
    s.kinds.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v).expect("every kind is reported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_backend_counts_enqueues_starts_outcomes_and_durations() {
    let server = shared_server();
    let tenant = TenantId::new(format!("metrics{}", std::process::id())).expect("tenant");
    let clock: SharedClock = Arc::new(SystemClock);
    let pool = RedisPool::from_url(&server.url()).expect("pool");
    let store =
        Arc::new(RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), Duration::from_secs(3600)));
    let lanes = Arc::new(
        RedisLaneStore::new(pool.clone(), &tenant, LaneStoreConfig::default(), clock.clone())
            .with_dispatch(true),
    );
    let limiter =
        Arc::new(RedisLimiter::new(pool.clone(), &tenant, LimitCaps::default(), Duration::from_secs(30)));
    let metrics = Arc::new(JobMetrics::new());
    let backend = RedisQueueBackend::new(
        RedisBackendConfig {
            max_attempts: 2,
            backoff_base: Duration::from_millis(10),
            reaper_interval: Duration::from_millis(10),
            block: Duration::from_millis(100),
            metrics: metrics.clone(),
            ..RedisBackendConfig::default()
        },
        RedisBackendDeps {
            pool,
            tenant: tenant.clone(),
            store: store.clone(),
            lanes,
            limiter,
            handlers: HandlerSet::uniform(Arc::new(RecordingHandler::new())),
            clock,
        },
    );
    backend.start().await.expect("start");

    let create = |id: &str, kind: JobKind, lane: Option<&str>, behavior: Behavior| {
        let store = store.clone();
        let job = NewJob {
            id: JobId::new(id).expect("id"),
            kind,
            lane: lane.map(|l| LaneId::new(l).expect("lane")),
            request_id: None,
            payload: behavior.payload(),
        };
        async move { store.create(job).await.expect("create").id }
    };
    let ok = create("m-ok", JobKind::Upload, None, Behavior::Ok).await;
    let bad = create("m-bad", JobKind::Upload, None, Behavior::FailAlways).await;
    let chat = create("m-chat", JobKind::Chat, Some("student:s1:main"), Behavior::Ok).await;
    backend.enqueue_upload_job(ok).await.expect("enqueue ok");
    backend.enqueue_upload_job(bad).await.expect("enqueue bad");
    backend.enqueue_chat_job(chat, None).await.expect("enqueue chat");

    eventually("every outcome is counted", PATIENCE, || async {
        let s = metrics.snapshot();
        let up = kind(&s, JobKind::Upload);
        up.completed == 1 && up.dead_lettered == 1 && kind(&s, JobKind::Chat).completed == 1
    })
    .await;
    let s = metrics.snapshot();
    let up = kind(&s, JobKind::Upload);
    assert_eq!((up.enqueued, up.started, up.completed), (2, 3, 1), "{up:?}");
    assert_eq!((up.failed, up.retried, up.dead_lettered), (2, 1, 1), "{up:?}");
    assert_eq!((up.lane_wait.count, up.run.count), (2, 3), "a wait per job, a run per attempt");
    let chat = kind(&s, JobKind::Chat);
    assert_eq!((chat.enqueued, chat.started, chat.completed, chat.failed), (1, 1, 1, 0), "{chat:?}");
    assert_eq!((chat.lane_wait.count, chat.run.count), (1, 1));
    assert_eq!((s.fenced, s.lease_expiries), (0, 0));
    backend.stop().await.expect("stop");
}
