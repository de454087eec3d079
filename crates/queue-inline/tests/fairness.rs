//! A worker draining a backlog of jobs whose handler never waits still lets the other tasks of
//! its thread run: the memory stores answer at once, so without a yield of its own a worker
//! would hold its thread (the HTTP server's, the heartbeat's, the timers') until the backlog is
//! gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use lane_store::MemoryLaneStore;
use queue_core::{
    HandlerError, HandlerSet, JobHandler, JobId, JobKind, JobRecord, JobStore, LaneStoreConfig, LimitCaps,
    LimitClass, ManualClock, NewJob, SharedClock, TenantId,
};
use queue_inline::{InlineDeps, InlineRuntime, InlineRuntimeConfig, LocalLimiter, MemoryJobStore};
use serde_json::{Value, json};

/// Counts its jobs and returns at once: no await inside.
#[derive(Debug, Default)]
struct Immediate {
    done: AtomicU64,
}

#[async_trait]
impl JobHandler for Immediate {
    fn permits(&self, _job: &JobRecord) -> Vec<LimitClass> {
        Vec::new()
    }

    async fn handle(&self, _job: &JobRecord) -> Result<Value, HandlerError> {
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(Value::Null)
    }
}

// Within the profile queue's default capacity (500).
const BACKLOG: u64 = 400;

// One thread: a task spawned while a worker drains runs only when that worker yields.
#[tokio::test]
async fn a_worker_draining_a_backlog_of_instant_jobs_lets_other_tasks_run() {
    drain_lets_other_tasks_run(JobKind::Upload).await;
}

// Profile workers take their jobs in batches (of 64 by default), through a loop of their own.
#[tokio::test]
async fn a_batch_worker_draining_a_backlog_lets_other_tasks_run() {
    drain_lets_other_tasks_run(JobKind::ProfileUpdate).await;
}

async fn drain_lets_other_tasks_run(kind: JobKind) {
    let clock: SharedClock = Arc::new(ManualClock::default());
    let store = Arc::new(MemoryJobStore::new(TenantId::new("t").expect("tenant"), clock.clone()));
    let handler = Arc::new(Immediate::default());
    let runtime = InlineRuntime::new(
        InlineRuntimeConfig { upload_workers: 1, profile_workers: 1, ..InlineRuntimeConfig::default() },
        InlineDeps {
            store: store.clone(),
            lanes: Arc::new(MemoryLaneStore::new(
                LaneStoreConfig { debounce_ms: 0, claim_ttl_ms: 60_000, max_queue: 100 },
                clock.clone(),
            )),
            limiter: Arc::new(LocalLimiter::new(LimitCaps::default())),
            handlers: HandlerSet::uniform(handler.clone()),
            clock,
        },
    );
    runtime.start().await.expect("start");
    for i in 0..BACKLOG {
        let job = NewJob {
            id: JobId::new(format!("j{i}")).expect("id"),
            kind,
            lane: None,
            request_id: None,
            payload: json!({}),
        };
        let id = store.create(job).await.expect("create").id;
        runtime.enqueue(kind, id).await.expect("enqueue");
    }
    // The worker was woken by the first enqueue and runs before this task, which is queued
    // behind it: it sees how far the drain got when the worker first let go of the thread.
    let handler_seen = handler.clone();
    let seen = tokio::spawn(async move { handler_seen.done.load(Ordering::Relaxed) }).await.expect("probe");
    assert!(seen < BACKLOG, "the worker held the thread for the whole backlog ({seen} of {BACKLOG} jobs)");
    // Nothing here waits on time: the rest of the backlog drains within a bounded number of turns.
    for _ in 0..BACKLOG * 10 {
        if handler.done.load(Ordering::Relaxed) == BACKLOG {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(handler.done.load(Ordering::Relaxed), BACKLOG, "the backlog did not drain");
    runtime.stop().await.expect("stop");
}
