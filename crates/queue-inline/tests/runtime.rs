//! Inline-runtime behaviour beyond the shared battery: fairness across lanes, bounded queues,
//! idempotent rescans, retention.

use std::sync::Arc;
use std::time::Duration;

use lane_store::MemoryLaneStore;
use queue_core::conformance::{Behavior, RecordingHandler, eventually, new_job};
use queue_core::{
    Clock, HandlerSet, JobId, JobKind, JobStatus, JobStore, JobUpdate, LaneId, LaneStoreConfig, LimitCaps,
    ManualClock, NewJob, QueueError, SharedClock, TenantId,
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
async fn an_id_submitted_again_while_its_cancelled_jobs_item_still_waits_runs_once() {
    let s = setup(InlineRuntimeConfig { upload_workers: 2, ..InlineRuntimeConfig::default() });
    s.runtime.start().await.expect("start");
    // Both upload workers busy: what is enqueued now waits in the queue.
    for id in ["busy-0", "busy-1"] {
        let id = create(&s.store, id, JobKind::Upload, None, &Behavior::GateFirst("busy".into())).await;
        s.runtime.enqueue(JobKind::Upload, id).await.expect("enqueue");
    }
    eventually("both workers busy", PATIENCE, || async { s.runtime.depths().running == 2 }).await;
    let x = create(&s.store, "x", JobKind::Upload, None, &Behavior::GateFirst("x".into())).await;
    s.runtime.enqueue(JobKind::Upload, x.clone()).await.expect("enqueue");
    // Cancelled and purged while its item waits; then the same id is submitted again.
    s.store
        .transition(&x, JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() })
        .await
        .expect("cancel");
    s.clock.advance(1);
    assert_eq!(s.store.purge_finished(s.clock.now_ms()).await.expect("purge"), 1);
    create(&s.store, "x", JobKind::Upload, None, &Behavior::GateFirst("x".into())).await;
    s.runtime.enqueue(JobKind::Upload, x.clone()).await.expect("enqueue again");
    assert_eq!(s.runtime.depths().upload, 2, "the old item and the new one");
    s.handler.open("busy");
    // One worker starts x from the first item and waits at x's gate; the other takes the second.
    eventually("both items taken", PATIENCE, || async { s.runtime.depths().upload == 0 }).await;
    eventually("x started", PATIENCE, || async { s.handler.invocations(&x) >= 1 }).await;
    s.handler.open("x");
    eventually("x done and every worker idle", PATIENCE, || async {
        status(&s.store, &x).await == JobStatus::Done && s.runtime.depths().running == 0
    })
    .await;
    assert_eq!(s.handler.invocations(&x), 1, "x ran twice");
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

/// `InlineQueueBackend::submit_many` over a runtime: one batch create, queued from the records
/// it returned, each job all or nothing.
mod submit_many {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use queue_core::{JobRecord, JobUpdate, QueueBackend, QueueResult, StatusCounts, Submitted};
    use queue_inline::InlineQueueBackend;

    use super::*;

    /// A memory store that counts the calls a submit makes.
    #[derive(Debug)]
    struct CountingStore {
        inner: MemoryJobStore,
        creates: AtomicUsize,
        batch_creates: AtomicUsize,
        gets: AtomicUsize,
    }

    #[async_trait]
    impl JobStore for CountingStore {
        async fn create(&self, job: NewJob) -> QueueResult<JobRecord> {
            self.creates.fetch_add(1, Ordering::SeqCst);
            self.inner.create(job).await
        }

        async fn create_many(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<QueueResult<JobRecord>>> {
            self.batch_creates.fetch_add(1, Ordering::SeqCst);
            self.inner.create_many(jobs).await
        }

        async fn get(&self, id: &JobId) -> QueueResult<Option<JobRecord>> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(id).await
        }

        async fn transition(&self, id: &JobId, update: JobUpdate) -> QueueResult<JobRecord> {
            self.inner.transition(id, update).await
        }

        async fn delete(&self, id: &JobId) -> QueueResult<bool> {
            self.inner.delete(id).await
        }

        async fn scan_pending(&self, kind: JobKind) -> QueueResult<Vec<JobRecord>> {
            self.inner.scan_pending(kind).await
        }

        async fn list(
            &self,
            kind: Option<JobKind>,
            status: JobStatus,
            limit: usize,
        ) -> QueueResult<Vec<JobRecord>> {
            self.inner.list(kind, status, limit).await
        }

        async fn counts(&self, kind: JobKind) -> QueueResult<StatusCounts> {
            self.inner.counts(kind).await
        }

        async fn purge_finished(&self, before_ms: u64) -> QueueResult<usize> {
            self.inner.purge_finished(before_ms).await
        }
    }

    fn accepted(results: &[QueueResult<Submitted>]) -> Vec<String> {
        results.iter().filter_map(|r| r.as_ref().ok()).map(|s| s.record.id.to_string()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_created_in_one_store_call_and_queued_without_reading_it_back() {
        let clock: SharedClock = Arc::new(ManualClock::default());
        let store = Arc::new(CountingStore {
            inner: MemoryJobStore::new(TenantId::new("t").expect("tenant"), clock.clone()),
            creates: AtomicUsize::new(0),
            batch_creates: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
        });
        let handler = RecordingHandler::new();
        let runtime = InlineRuntime::new(
            InlineRuntimeConfig::default(),
            InlineDeps {
                store: store.clone(),
                lanes: Arc::new(MemoryLaneStore::new(LaneStoreConfig::default(), clock.clone())),
                limiter: Arc::new(LocalLimiter::new(LimitCaps::default())),
                handlers: HandlerSet::uniform(Arc::new(handler.clone())),
                clock,
            },
        );
        let backend = InlineQueueBackend::over_runtime(InlineQueueBackend::TEST_NAME, runtime.clone());
        backend.start().await.expect("start");
        let lane = "student:batch:main";
        let mut batch: Vec<NewJob> =
            (0..30).map(|i| new_job(&format!("u{i}"), JobKind::Upload, None, &Behavior::Ok)).collect();
        batch.extend((0..3).map(|i| new_job(&format!("c{i}"), JobKind::Chat, Some(lane), &Behavior::Ok)));
        let expected: Vec<String> = batch.iter().map(|j| j.id.to_string()).collect();

        let results = backend.submit_many(store.clone(), batch).await.expect("submit_many");

        assert_eq!(accepted(&results), expected, "every job accepted, in the batch's order");
        assert_eq!(store.batch_creates.load(Ordering::SeqCst), 1, "one batch create");
        assert_eq!(store.creates.load(Ordering::SeqCst), 0, "no job created on its own");
        assert_eq!(store.gets.load(Ordering::SeqCst), 0, "no record read back to queue it");
        let receipt = results[30].as_ref().expect("c0").lane.clone().expect("a chat job has a lane receipt");
        assert_eq!(receipt.lane_queue_size, 1, "{receipt:?}");
        for id in &expected {
            let id = JobId::new(id.as_str()).expect("id");
            eventually(&format!("{id} is done"), PATIENCE, || async {
                store.inner.get(&id).await.expect("get").expect("record").status == JobStatus::Done
            })
            .await;
        }
        backend.stop().await.expect("stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_its_lane_refuses_leaves_no_record_and_the_rest_of_the_batch_goes_on() {
        let s = setup(InlineRuntimeConfig::default());
        let backend = InlineQueueBackend::over_runtime(InlineQueueBackend::TEST_NAME, s.runtime.clone());
        backend.start().await.expect("start");
        let lane = "student:full:main";
        let head = new_job("c0", JobKind::Chat, Some(lane), &Behavior::GateFirst("c0".into()));
        backend.submit(s.store.clone(), head).await.expect("submit");
        eventually("c0 runs", PATIENCE, || async {
            s.handler.invocations(&JobId::new("c0").expect("id")) == 1
        })
        .await;
        // The setup's lanes hold 100 waiting jobs: c101 is one too many.
        let mut batch: Vec<NewJob> =
            (1..=101).map(|i| new_job(&format!("c{i}"), JobKind::Chat, Some(lane), &Behavior::Ok)).collect();
        batch.push(new_job("u1", JobKind::Upload, None, &Behavior::Ok));

        let results = backend.submit_many(s.store.clone(), batch).await.expect("submit_many");

        assert!(matches!(&results[100], Err(QueueError::LaneFull { max: 100, .. })), "{:?}", results[100]);
        let c101 = JobId::new("c101").expect("id");
        assert_eq!(s.store.get(&c101).await.expect("get"), None, "the refused job's record was deleted");
        let mut expected: Vec<String> = (1..=100).map(|i| format!("c{i}")).collect();
        expected.push("u1".into());
        assert_eq!(accepted(&results), expected);
        s.handler.open("c0");
        let u1 = JobId::new("u1").expect("id");
        eventually("u1 is done", PATIENCE, || async { status(&s.store, &u1).await == JobStatus::Done }).await;
        backend.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_stopped_runtime_refuses_the_whole_batch_and_creates_nothing() {
        let s = setup(InlineRuntimeConfig::default());
        let backend = InlineQueueBackend::over_runtime(InlineQueueBackend::TEST_NAME, s.runtime.clone());
        let batch = vec![new_job("u1", JobKind::Upload, None, &Behavior::Ok)];

        let err = backend.submit_many(s.store.clone(), batch).await.expect_err("not running");

        assert_eq!(err, QueueError::NotRunning);
        assert!(s.store.is_empty(), "a refused batch created a record");
    }
}
