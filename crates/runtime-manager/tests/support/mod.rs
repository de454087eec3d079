//! Shared test support: an inline runtime over real in-memory stores, job creation, and polling
//! with a deadline (never a bare sleep).

use std::sync::Arc;
use std::time::Duration;

use queue_core::conformance::{Behavior, RecordingHandler};
use queue_core::{
    ChatLaneStore, HandlerSet, JobId, JobKind, JobStore, LimitCaps, NewJob, SharedClock, SystemClock,
};
use queue_inline::{InlineDeps, InlineRuntime, InlineRuntimeConfig, LocalLimiter};

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The real clock, shared.
pub fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// One worker per pool, and a short stop deadline so a job blocked on a gate is handed back
/// quickly instead of holding `stop` for the default ten seconds.
pub fn single_worker_config() -> InlineRuntimeConfig {
    InlineRuntimeConfig {
        chat_workers: 1,
        upload_workers: 1,
        exam_workers: 1,
        profile_workers: 1,
        stop_deadline: Duration::from_millis(100),
        ..InlineRuntimeConfig::default()
    }
}

/// A stopped inline runtime over `store` and `lanes`, every kind run by `handler`.
pub fn inline_runtime(
    config: InlineRuntimeConfig,
    store: Arc<dyn JobStore>,
    lanes: Arc<dyn ChatLaneStore>,
    handler: &RecordingHandler,
) -> InlineRuntime {
    InlineRuntime::new(
        config,
        InlineDeps {
            store,
            lanes,
            limiter: Arc::new(LocalLimiter::new(LimitCaps::default())),
            handlers: HandlerSet::uniform(Arc::new(handler.clone())),
            clock: clock(),
        },
    )
}

/// Records a queued upload job that behaves as `behavior` says; returns its id.
pub async fn create_upload(store: &dyn JobStore, behavior: &Behavior) -> JobId {
    let job = NewJob {
        id: JobId::generate(),
        kind: JobKind::Upload,
        lane: None,
        request_id: None,
        payload: behavior.payload(),
    };
    store.create(job).await.expect("create upload job").id
}

/// Polls `condition` until it holds, failing the test with `what` after [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    queue_core::conformance::eventually(what, DEADLINE, condition).await;
}
