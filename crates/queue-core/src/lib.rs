//! Laneway's foundation: validated ids, job kinds, job records and their state machine, errors,
//! the [`Clock`], and the traits every layer above implements or uses: [`QueueBackend`],
//! [`ChatLaneStore`], [`JobStore`], [`IdempotencyStore`], [`Limiter`], [`JobHandler`].
//!
//! With the `test-util` feature: mockall mocks of each trait (`MockQueueBackend`, ...) and the
//! [`conformance`] battery that every backend and lane store must pass.

mod backend;
mod clock;
mod error;
mod handler;
mod ids;
mod job;
mod lane;
mod limiter;
mod metrics;
mod mode;
mod store;

#[cfg(feature = "test-util")]
pub mod conformance;

pub use backend::{
    MAX_SUBMIT_BATCH, ProfileUpdate, QueueBackend, Submitted, check_batch, create_then_enqueue, submit_each,
    submitted_or_deleted,
};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{QueueError, QueueResult};
pub use handler::{HandlerError, HandlerSet, JobHandler, lost_too_often};
pub use ids::{IdError, JobId, LaneId, MAX_ID_LEN, MAX_TENANT_LEN, RequestId, TenantId};
pub use job::{JobKind, JobRecord, JobStatus, JobUpdate, NewJob};
pub use lane::{
    ChatEnqueueReceipt, ChatLaneStore, LaneClaim, LaneEnqueue, LaneLoad, LaneSnapshot, LaneStoreConfig,
};
pub use limiter::{LimitCaps, LimitClass, Limiter, PermitSet, PermitUsage, acquisition_order};
pub use metrics::{
    DURATION_BUCKETS_MS, DurationHistogram, HistogramSnapshot, JobMetrics, KindSnapshot, MetricsSnapshot,
    duration_ms,
};
pub use mode::Mode;
pub use store::{IdempotencyClaim, IdempotencyStore, JobStore, StatusCounts};

#[cfg(feature = "test-util")]
pub use backend::MockQueueBackend;
#[cfg(feature = "test-util")]
pub use handler::MockJobHandler;
#[cfg(feature = "test-util")]
pub use lane::MockChatLaneStore;
#[cfg(feature = "test-util")]
pub use limiter::MockLimiter;
#[cfg(feature = "test-util")]
pub use store::{MockIdempotencyStore, MockJobStore};
