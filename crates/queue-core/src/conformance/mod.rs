//! The conformance battery: SPEC §4 guarantees 1–6 and 8, checked against any backend + lane
//! store pair through the public traits only. Every backend crate runs it unchanged:
//!
//! ```text
//! queue_core::conformance_tests!(MyRigFactory::default());
//! ```
//!
//! Time that leases and debounce windows read comes from a [`ManualClock`] the test moves; the
//! runtime's own intervals (heartbeat, reaper, backoff) are real but short, chosen by the rig.
//!
//! The stores below a backend have batteries of their own: [`lanes`] for every lane store,
//! [`stores`] for every job store and idempotency store.

mod handler;
pub mod lanes;
mod scenarios;
pub mod stores;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use handler::{Behavior, Event, RecordingHandler};
pub use lanes::LaneStoreFactory;
pub use scenarios::*;
pub use stores::{BuiltJobStore, IdempotencyStoreFactory, JobStoreFactory, STORE_START_MS};

use crate::{
    ChatLaneStore, HandlerSet, IdempotencyStore, JobStore, LaneStoreConfig, ManualClock, QueueBackend,
};

/// What a scenario asks of the backend it gets.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Lane settings (lease length in manual-clock ms, debounce, cap).
    pub lanes: LaneStoreConfig,
    /// Attempts before a failing job is dead-lettered.
    pub max_attempts: u32,
    /// Whether running jobs renew their lease (off to simulate a stalled worker).
    pub heartbeats: bool,
    /// How long a stop waits for running jobs.
    pub stop_deadline: Duration,
    /// Chat workers (at least 4 so that lanes really run in parallel).
    pub chat_workers: usize,
}

impl Default for RigOptions {
    fn default() -> Self {
        Self {
            lanes: LaneStoreConfig { debounce_ms: 500, claim_ttl_ms: 10_000, max_queue: 100 },
            max_attempts: 3,
            heartbeats: true,
            stop_deadline: Duration::from_secs(5),
            chat_workers: 4,
        }
    }
}

/// A started backend over one fresh tenant, with its stores and the clock that drives them.
#[derive(Debug, Clone)]
pub struct Rig {
    /// The backend under test, started.
    pub backend: Arc<dyn QueueBackend>,
    /// Its job store.
    pub store: Arc<dyn JobStore>,
    /// Its lane store.
    pub lanes: Arc<dyn ChatLaneStore>,
    /// Its idempotency store.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The clock every store and the runtime read.
    pub clock: ManualClock,
}

/// Builds rigs for one backend. Real-time intervals are the rig's choice but must be short:
/// heartbeat well under a second when enabled, reaper every few ms, retry backoff a few ms.
#[async_trait]
pub trait RigFactory: Send + Sync {
    /// A fresh, empty tenant with the backend built over `handlers` and started.
    async fn build(&self, handlers: HandlerSet, options: RigOptions) -> Rig;

    /// Ends `rig`'s workers the way a crash would (no graceful stop, nothing handed back) and
    /// starts a new backend over the same durable state (job store; shared lanes where the
    /// backend keeps them outside the process), started, so that it recovers.
    async fn crash_and_restart(&self, rig: Rig, handlers: HandlerSet, options: RigOptions) -> Rig;
}

/// Generates one `#[tokio::test]` per scenario for `$factory` (an expression building a
/// [`RigFactory`]).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            every_accepted_job_completes,
            a_crash_mid_job_loses_nothing,
            a_job_that_keeps_losing_its_worker_is_dead_lettered,
            lanes_run_in_order_one_job_at_a_time,
            a_long_job_renews_its_lease_and_keeps_its_lane,
            an_expired_lease_is_reaped_and_the_late_result_is_rejected,
            a_late_result_before_the_reclaimed_job_restarts_is_rejected,
            a_dispatch_that_waited_for_a_worker_starts_with_a_fresh_lease,
            a_dispatch_that_waited_past_its_lease_runs_once_after_the_reaper_dispatched_it_again,
            a_failing_head_is_dead_lettered_and_the_lane_moves_on,
            a_retried_job_keeps_its_place_at_the_head,
            resubmitting_never_runs_a_job_twice,
            a_full_lane_refuses_and_changes_nothing,
            submit_creates_and_queues_every_kind,
            a_refused_submit_leaves_no_record,
            submit_many_answers_each_job_in_order,
            stop_finishes_running_jobs_and_hands_back_the_rest,
            start_and_stop_are_idempotent,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory = $factory;
                $crate::conformance::$name(&factory).await;
            }
        )*
    };
}
