//! The chat-lane contract: one conversation's jobs run one at a time, in arrival order.
//!
//! A lane holds at most one *active* job (claimed under a lease with an epoch) and a FIFO of
//! waiting jobs. The store hands out [`LaneClaim`]s; whoever holds the current claim may renew,
//! finish or fail it, and nobody else may (fencing).

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::QueueResult;
use crate::ids::{JobId, LaneId};

/// How a lane store behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneStoreConfig {
    /// Window within which a repeated fingerprint coalesces onto the earlier job.
    pub debounce_ms: u64,
    /// Lease length of a claim; renewed by heartbeat while the job runs.
    pub claim_ttl_ms: u64,
    /// Most jobs that may wait in one lane (the running one not counted).
    pub max_queue: usize,
}

impl Default for LaneStoreConfig {
    fn default() -> Self {
        Self { debounce_ms: 500, claim_ttl_ms: 600_000, max_queue: 6 }
    }
}

/// A lane's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LaneLoad {
    /// Jobs waiting.
    pub queued: usize,
    /// Jobs running: 0 or 1.
    pub active: usize,
    /// `queued + active`.
    pub total: usize,
}

/// The right to run a lane's head job, until `lease_deadline_ms` unless renewed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LaneClaim {
    /// The job to run.
    pub job_id: JobId,
    /// Its lane.
    pub lane_id: LaneId,
    /// Fencing token: strictly greater than every earlier claim's epoch in this store.
    pub epoch: u64,
    /// Wall-clock ms after which the reaper may hand the job to someone else.
    pub lease_deadline_ms: u64,
}

/// What a submitter learns about its chat job's place (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatEnqueueReceipt {
    /// The job.
    pub job_id: JobId,
    /// Its lane.
    pub lane_id: LaneId,
    /// 0 = running now; otherwise its 1-based place among waiting jobs.
    pub lane_queue_position: usize,
    /// Jobs in the lane, the running one included.
    pub lane_queue_size: usize,
    /// Whether a job of the lane is running.
    pub lane_active: bool,
    /// Whether this call handed the job to a worker.
    pub dispatched: bool,
}

/// The outcome of [`ChatLaneStore::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneEnqueue {
    /// The receipt for the submitter.
    pub receipt: ChatEnqueueReceipt,
    /// Set when the lane was idle: the job is claimed and must be run now.
    pub dispatch: Option<LaneClaim>,
    /// False when the job was already in the lane (waiting or running): nothing changed.
    pub added: bool,
}

/// One lane, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneSnapshot {
    /// The lane.
    pub lane_id: LaneId,
    /// The running job's claim.
    pub active: Option<LaneClaim>,
    /// Waiting jobs, head first.
    pub waiting: Vec<JobId>,
}

/// Per-tenant chat lanes. Implementations: `MemoryLaneStore`, `RedisLaneStore` (crate
/// `lane-store`). Every method is atomic with respect to the others.
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait ChatLaneStore: Send + Sync + fmt::Debug {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// How many jobs wait and run in `lane`.
    async fn lane_load(&self, lane: &LaneId) -> QueueResult<LaneLoad>;

    /// 1-based place of `job` among the lane's waiting jobs; 0 when it runs or is absent.
    async fn find_position(&self, lane: &LaneId, job: &JobId) -> QueueResult<usize>;

    /// Appends `job` to `lane`. An idle lane claims it at once (`dispatch` is set). A job that is
    /// already waiting or running is left where it is (`added == false`), never run twice.
    ///
    /// # Errors
    /// `QueueError::LaneFull` when `max_queue` jobs already wait; nothing is changed then.
    async fn enqueue(&self, job: &JobId, lane: &LaneId) -> QueueResult<LaneEnqueue>;

    /// As [`ChatLaneStore::enqueue`] but without the lane cap: puts back a job the store already
    /// accepted (recovery after a restart). The cap limits new submits only; an accepted job is
    /// never left outside its lane, where a newcomer could overtake it.
    async fn restore(&self, job: &JobId, lane: &LaneId) -> QueueResult<LaneEnqueue>;

    /// Extends the lease of `claim`; returns the new deadline.
    ///
    /// # Errors
    /// `QueueError::StaleLease` when `claim` is no longer the lane's current claim.
    async fn renew(&self, claim: &LaneClaim) -> QueueResult<u64>;

    /// Renews many claims at once (one pipelined round trip on Redis): one result per claim, in
    /// order. The default renews them one by one.
    async fn renew_many(&self, claims: &[LaneClaim]) -> QueueResult<Vec<QueueResult<u64>>> {
        let mut out = Vec::with_capacity(claims.len());
        for claim in claims {
            out.push(self.renew(claim).await);
        }
        Ok(out)
    }

    /// [`ChatLaneStore::renew`] done at once, by a store whose operations never wait (lanes held
    /// in process memory): a worker tries it first, and so skips the boxed future an `async`
    /// trait method costs (an allocation per call). `None`, the default, for a store that waits
    /// (a server); the caller then calls `renew`.
    fn renew_now(&self, _claim: &LaneClaim) -> Option<QueueResult<u64>> {
        None
    }

    /// [`ChatLaneStore::finish`] done at once, as [`ChatLaneStore::renew_now`] is `renew`.
    fn finish_now(&self, _claim: &LaneClaim) -> Option<QueueResult<Option<LaneClaim>>> {
        None
    }

    /// Ends `claim` (its job is finished, for good or ill) and claims the next waiting job, if any.
    ///
    /// # Errors
    /// `QueueError::StaleLease` when `claim` is no longer current: the lane is untouched.
    async fn finish(&self, claim: &LaneClaim) -> QueueResult<Option<LaneClaim>>;

    /// Re-claims the same head job under a new epoch (a retry after backoff): the job keeps its
    /// place, and any older claim is fenced off.
    ///
    /// # Errors
    /// `QueueError::StaleLease` when `claim` is no longer current.
    async fn reclaim(&self, claim: &LaneClaim) -> QueueResult<LaneClaim>;

    /// Finds every lane whose active lease has expired and re-claims its head job under a new
    /// epoch; returns the new claims to dispatch. Running it twice at one instant returns nothing
    /// the second time.
    async fn reap_expired(&self) -> QueueResult<Vec<LaneClaim>>;

    /// Removes a waiting (not running) job from its lane: a cancel. Returns whether it was there.
    async fn remove_waiting(&self, lane: &LaneId, job: &JobId) -> QueueResult<bool>;

    /// Remembers that `fingerprint` was last submitted to `lane` as `job`, for `debounce_ms`.
    async fn register_recent(&self, lane: &LaneId, fingerprint: &str, job: &JobId) -> QueueResult<()>;

    /// The job registered for `fingerprint` in `lane` within the debounce window, if any.
    async fn recent_job(&self, lane: &LaneId, fingerprint: &str) -> QueueResult<Option<JobId>>;

    /// Lanes with any job, for operators (at most `limit`, lane ids after `after`).
    async fn snapshot(&self, after: Option<LaneId>, limit: usize) -> QueueResult<Vec<LaneSnapshot>>;

    /// Drops every lane of this tenant. Single-process backends call it on stop: their lanes are
    /// an index rebuilt from the durable job store on the next start.
    async fn reset(&self) -> QueueResult<()>;
}
