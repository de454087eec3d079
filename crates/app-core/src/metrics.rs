//! What `GET /metrics` reports: each running tenant's job metrics (counted by its runtime as
//! jobs move) and its queue depths (read from its job store at scrape time).

use queue_core::{JobKind, TenantId};

pub use queue_core::{
    DURATION_BUCKETS_MS, HistogramSnapshot, JobMetrics, KindSnapshot, MetricsSnapshot, StatusCounts,
};

/// One tenant's figures, read at one scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantMetrics {
    /// The tenant.
    pub tenant: TenantId,
    /// The counters and histograms of its runtime in this process.
    pub jobs: MetricsSnapshot,
    /// Jobs per kind and state in its store; empty when the store could not be read.
    pub depths: Vec<(JobKind, StatusCounts)>,
}
