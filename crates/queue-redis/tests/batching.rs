//! Outcomes that finish at about the same time share one `complete_many` call, and every job
//! still runs exactly once. Counted with `INFO commandstats` on a server of this test's own (the
//! shared one serves other tests at the same time).

use std::sync::Arc;
use std::time::Duration;

use lane_store::{RedisLaneStore, RedisPool};
use queue_core::conformance::{Behavior, RecordingHandler, eventually};
use queue_core::{
    HandlerSet, JobId, JobKind, JobStore, LaneStoreConfig, LimitCaps, NewJob, QueueBackend, SharedClock,
    SystemClock, TenantId,
};
use queue_redis::{RedisBackendConfig, RedisBackendDeps, RedisJobStore, RedisLimiter, RedisQueueBackend};
use redis_harness::RedisServer;

/// `calls` of `cmdstat_<command>` in `INFO commandstats`.
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server.command(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_sends_many_outcomes_per_call_and_runs_each_job_once() {
    let server = RedisServer::start();
    let tenant = TenantId::new("batching").expect("tenant");
    let clock: SharedClock = Arc::new(SystemClock);
    let pool = RedisPool::from_url(&server.url()).expect("pool");
    let store: Arc<dyn JobStore> =
        Arc::new(RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), Duration::from_secs(3600)));
    let handler = RecordingHandler::new();
    let deps = || RedisBackendDeps {
        pool: pool.clone(),
        tenant: tenant.clone(),
        store: store.clone(),
        lanes: Arc::new(
            RedisLaneStore::new(pool.clone(), &tenant, LaneStoreConfig::default(), clock.clone())
                .with_dispatch(true),
        ),
        limiter: Arc::new(RedisLimiter::new(
            pool.clone(),
            &tenant,
            LimitCaps::default(),
            Duration::from_secs(30),
        )),
        handlers: HandlerSet::uniform(Arc::new(handler.clone())),
        clock: clock.clone(),
    };
    let backend = RedisQueueBackend::new(
        RedisBackendConfig {
            upload_concurrency: 50,
            block: Duration::from_millis(200),
            ..RedisBackendConfig::default()
        },
        deps(),
    );
    // A producer that runs no workers queues the backlog: the worker then drains it at full speed.
    let producer = RedisQueueBackend::new(
        RedisBackendConfig { run_workers: false, ..RedisBackendConfig::default() },
        deps(),
    );
    let jobs = 3_000;
    let ids: Vec<JobId> = (0..jobs).map(|i| JobId::new(format!("b{i}")).expect("id")).collect();
    producer.start().await.expect("start producer");
    for chunk in ids.chunks(500) {
        let batch = chunk
            .iter()
            .map(|id| NewJob {
                id: id.clone(),
                kind: JobKind::Upload,
                lane: None,
                request_id: None,
                payload: Behavior::Ok.payload(),
            })
            .collect();
        for r in producer.submit_many(store.clone(), batch).await.expect("submit_many") {
            r.expect("accepted");
        }
    }
    let scripts_before = calls(&server, "evalsha");
    backend.start().await.expect("start");
    eventually("every job is done", Duration::from_secs(60), || async {
        store.counts(JobKind::Upload).await.expect("counts").done == jobs as u64
    })
    .await;
    let scripts = calls(&server, "evalsha") - scripts_before;
    for id in &ids {
        assert_eq!(handler.invocations(id), 1, "{id} ran once");
    }
    // Without batching a drain takes one script call per job (finish-and-claim-next).
    assert!(scripts < jobs as u64 / 2, "{scripts} script calls for {jobs} jobs: outcomes were not batched");
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}
