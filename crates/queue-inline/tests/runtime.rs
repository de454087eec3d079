//! Inline-runtime behaviour beyond the shared battery: fairness across lanes, bounded queues,
//! idempotent rescans, retention.

use std::sync::Arc;
use std::time::Duration;

use lane_store::MemoryLaneStore;
use queue_core::conformance::{Behavior, RecordingHandler, eventually};
use queue_core::{
    HandlerSet, JobId, JobKind, JobStatus, JobStore, LaneId, LaneStoreConfig, LimitCaps, ManualClock, NewJob,
    QueueError, SharedClock, TenantId,
};
use queue_inline::{InlineDeps, InlineRuntime, InlineRuntimeConfig, LocalLimiter, MemoryJobStore};

const PATIENCE: Duration = Duration::from_secs(20);

struct Setup {
    runtime: InlineRuntime,
    store: Arc<MemoryJobStore>,
    handler: RecordingHandler,
    clock: ManualClock,
}

fn setup(config: InlineRuntimeConfig) -> Setup {
    let clock = ManualClock::default();
    let shared: SharedClock = Arc::new(clock.clone());
    let store = Arc::new(MemoryJobStore::new(TenantId::new("t").expect("tenant"), shared.clone()));
    let handler = RecordingHandler::new();
    let lanes = Arc::new(MemoryLaneStore::new(
        LaneStoreConfig { debounce_ms: 0, claim_ttl_ms: 60_000, max_queue: 100 },
        shared.clone(),
    ));
    let runtime = InlineRuntime::new(
        config,
        InlineDeps {
            store: store.clone(),
            lanes,
            limiter: Arc::new(LocalLimiter::new(LimitCaps::default())),
            handlers: HandlerSet::uniform(Arc::new(handler.clone())),
            clock: shared,
        },
    );
    Setup { runtime, store, handler, clock }
}

async fn create(
    store: &MemoryJobStore,
    id: &str,
    kind: JobKind,
    lane: Option<&str>,
    behavior: &Behavior,
) -> JobId {
    let job = NewJob {
        id: JobId::new(id).expect("id"),
        kind,
        lane: lane.map(|l| LaneId::new(l).expect("lane")),
        request_id: None,
        payload: behavior.payload(),
    };
    store.create(job).await.expect("create").id
}

async fn status(store: &MemoryJobStore, id: &JobId) -> JobStatus {
    store.get(id).await.expect("get").expect("record").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lane_does_not_starve_a_quiet_one() {
    let s = setup(InlineRuntimeConfig { chat_workers: 1, ..InlineRuntimeConfig::default() });
    s.runtime.start().await.expect("start");
    let busy = "student:busy:main";
    let first = create(&s.store, "busy-0", JobKind::Chat, Some(busy), &Behavior::GateFirst("g".into())).await;
    s.runtime.enqueue_chat(first.clone(), None).await.expect("enqueue");
    for i in 1..10 {
        let id = create(&s.store, &format!("busy-{i}"), JobKind::Chat, Some(busy), &Behavior::Ok).await;
        s.runtime.enqueue_chat(id, None).await.expect("enqueue");
    }
    let quiet = create(&s.store, "quiet", JobKind::Chat, Some("student:quiet:main"), &Behavior::Ok).await;
    s.runtime.enqueue_chat(quiet.clone(), None).await.expect("enqueue");
    s.handler.open("g");
    eventually("the quiet lane's job is done", PATIENCE, || async {
        status(&s.store, &quiet).await == JobStatus::Done
    })
    .await;
    eventually("the busy lane drains", PATIENCE, || async {
        status(&s.store, &JobId::new("busy-9").expect("id")).await == JobStatus::Done
    })
    .await;
    // With one worker, lanes take turns: the quiet job ran right after the busy lane's first job,
    // not after all ten of them.
    let starts: Vec<String> =
        s.handler.events().iter().filter(|e| e.start).map(|e| e.job.to_string()).collect();
    let quiet_at = starts.iter().position(|j| j == "quiet").expect("quiet started");
    assert!(quiet_at <= 2, "the quiet lane waited behind the busy one: {starts:?}");
    s.runtime.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_an_error_and_keeps_what_it_holds() {
    let s =
        setup(InlineRuntimeConfig { upload_workers: 1, queue_capacity: 2, ..InlineRuntimeConfig::default() });
    s.runtime.start().await.expect("start");
    let running = create(&s.store, "u0", JobKind::Upload, None, &Behavior::GateFirst("u".into())).await;
    s.runtime.enqueue(JobKind::Upload, running.clone()).await.expect("enqueue");
    eventually("the first upload runs", PATIENCE, || async { s.handler.invocations(&running) == 1 }).await;
    for id in ["u1", "u2"] {
        let id = create(&s.store, id, JobKind::Upload, None, &Behavior::Ok).await;
        s.runtime.enqueue(JobKind::Upload, id).await.expect("enqueue");
    }
    let over = create(&s.store, "u3", JobKind::Upload, None, &Behavior::Ok).await;
    let err = s.runtime.enqueue(JobKind::Upload, over.clone()).await.expect_err("queue full");
    assert!(matches!(err, QueueError::QueueFull { kind: JobKind::Upload, capacity: 2 }), "{err}");
    assert_eq!(s.runtime.depths().upload, 2);
    s.handler.open("u");
    for id in ["u0", "u1", "u2"] {
        let id = JobId::new(id).expect("id");
        eventually(&format!("{id} is done"), PATIENCE, || async {
            status(&s.store, &id).await == JobStatus::Done
        })
        .await;
    }
    // The refused job was never run; its record is still queued for the caller to retry or drop.
    assert_eq!(s.handler.invocations(&over), 0);
    assert_eq!(status(&s.store, &over).await, JobStatus::Queued);
    s.runtime.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rescan_re_enqueues_nothing() {
    let s =
        setup(InlineRuntimeConfig { chat_workers: 1, upload_workers: 1, ..InlineRuntimeConfig::default() });
    // Jobs accepted before the runtime starts (as after a restart) are found by the start scan.
    let head =
        create(&s.store, "c0", JobKind::Chat, Some("student:s:main"), &Behavior::GateFirst("c".into())).await;
    create(&s.store, "c1", JobKind::Chat, Some("student:s:main"), &Behavior::Ok).await;
    create(&s.store, "u0", JobKind::Upload, None, &Behavior::GateFirst("u".into())).await;
    create(&s.store, "u1", JobKind::Upload, None, &Behavior::Ok).await;
    s.runtime.start().await.expect("start");
    assert_eq!(s.runtime.stats().recovered, 4);
    eventually("the head chat job runs", PATIENCE, || async { s.handler.invocations(&head) == 1 }).await;
    assert_eq!(s.runtime.scan_pending_chat_jobs().await.expect("scan"), 0);
    assert_eq!(s.runtime.scan_pending(JobKind::Upload).await.expect("scan"), 0);
    s.handler.open("c");
    s.handler.open("u");
    for id in ["c0", "c1", "u0", "u1"] {
        let id = JobId::new(id).expect("id");
        eventually(&format!("{id} is done"), PATIENCE, || async {
            status(&s.store, &id).await == JobStatus::Done
        })
        .await;
        assert_eq!(s.handler.invocations(&id), 1, "{id} ran twice");
    }
    s.runtime.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_records_are_deleted_after_the_retention_period() {
    let s = setup(InlineRuntimeConfig {
        retention: Duration::from_secs(3600),
        purge_interval: Duration::from_millis(10),
        ..InlineRuntimeConfig::default()
    });
    s.runtime.start().await.expect("start");
    let done = create(&s.store, "old", JobKind::Exam, None, &Behavior::Ok).await;
    s.runtime.enqueue(JobKind::Exam, done.clone()).await.expect("enqueue");
    eventually("the exam job is done", PATIENCE, || async {
        status(&s.store, &done).await == JobStatus::Done
    })
    .await;
    let pending = create(&s.store, "pending", JobKind::Exam, None, &Behavior::Ok).await;
    s.clock.advance(3_600_001);
    eventually("the finished record is purged", PATIENCE, || async {
        s.store.get(&done).await.expect("get").is_none()
    })
    .await;
    assert!(s.store.get(&pending).await.expect("get").is_some(), "a pending job was purged");
    s.runtime.stop().await.expect("stop");
}
