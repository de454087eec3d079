//! Job kinds, job states with their transition table, and the job record every store keeps.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::QueueError;
use crate::ids::{JobId, LaneId, RequestId, TenantId};

/// What a job does. Each kind has its own worker pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// An assignment upload: OCR, then parse into questions.
    Upload,
    /// An exam upload: parse a score sheet.
    Exam,
    /// Merge notes into a student profile; several updates of one student are batched.
    ProfileUpdate,
    /// An LLM reply in a chat lane.
    Chat,
}

impl JobKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 4] = [Self::Upload, Self::Exam, Self::ProfileUpdate, Self::Chat];

    /// The wire name (`upload`, `exam`, `profile_update`, `chat`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Exam => "exam",
            Self::ProfileUpdate => "profile_update",
            Self::Chat => "chat",
        }
    }

    /// Parses a wire name.
    ///
    /// # Errors
    /// [`QueueError::InvalidInput`] for an unknown name.
    pub fn parse(s: &str) -> Result<Self, QueueError> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| QueueError::InvalidInput {
            field: "kind".into(),
            rule: format!("unknown job kind {s:?}; expected upload, exam, profile_update or chat"),
        })
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life. `Done`, `Failed` and `Cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted, waiting for a worker (or for its lane).
    Queued,
    /// A worker holds it under a lease.
    Processing,
    /// Finished with a result.
    Done,
    /// Out of retries; the last error is kept (dead-lettered).
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobStatus {
    /// Every state.
    pub const ALL: [Self; 5] = [Self::Queued, Self::Processing, Self::Done, Self::Failed, Self::Cancelled];
    /// The terminal states, in the order of [`JobStatus::ALL`].
    pub const TERMINAL: [Self; 3] = [Self::Done, Self::Failed, Self::Cancelled];

    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    ///
    /// # Errors
    /// [`QueueError::InvalidInput`] for an unknown name.
    pub fn parse(s: &str) -> Result<Self, QueueError> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| QueueError::InvalidInput {
            field: "status".into(),
            rule: format!("unknown job status {s:?}"),
        })
    }

    /// Whether no transition leaves this state.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }

    /// Whether the job still needs a worker (queued, or processing under a lease that may die).
    #[must_use]
    pub const fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Processing)
    }

    /// The transition table (SPEC §2):
    ///
    /// | from \ to  | queued | processing | done | failed | cancelled |
    /// |------------|--------|------------|------|--------|-----------|
    /// | queued     |        | yes        |      | yes¹   | yes       |
    /// | processing | yes²   |            | yes  | yes    |           |
    /// | terminal   |        |            |      |        |           |
    ///
    /// ¹ a queued job is dead-lettered without running when it can never run (e.g. its payload
    /// was lost). ² only by lease expiry, a retry, or a graceful stop handing it back.
    #[must_use]
    pub const fn can_transition_to(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::Queued, Self::Processing | Self::Failed | Self::Cancelled)
                | (Self::Processing, Self::Queued | Self::Done | Self::Failed)
        )
    }

    /// Checks one transition.
    ///
    /// # Errors
    /// [`QueueError::InvalidTransition`] when the table forbids it.
    pub fn check_transition(self, to: Self) -> Result<(), QueueError> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(QueueError::InvalidTransition { from: self, to })
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as the job store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// The tenant that owns it.
    pub tenant: TenantId,
    /// The chat lane it runs in (chat jobs only).
    pub lane: Option<LaneId>,
    /// The client's idempotency key, if it gave one.
    pub request_id: Option<RequestId>,
    /// Where it is in its life.
    pub status: JobStatus,
    /// How many times a worker has started it.
    pub attempt: u32,
    /// The lane epoch of the claim that last started it (fencing token).
    pub lease_epoch: u64,
    /// Per-tenant submission sequence number: rebuilds lane order after a restart.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
    /// What the handler needs (JSON).
    pub payload: Value,
    /// What the handler produced, once done.
    pub result: Option<Value>,
    /// The last error, once failed (or from the last failed attempt).
    pub error: Option<String>,
}

/// A job about to be created; the store assigns `seq` and the timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The job's id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// The chat lane (chat jobs only).
    pub lane: Option<LaneId>,
    /// The client's idempotency key.
    pub request_id: Option<RequestId>,
    /// What the handler needs.
    pub payload: Value,
}

/// A change of state, applied by [`crate::JobStore::transition`] after checking the table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobUpdate {
    /// The state to move to.
    pub to: Option<JobStatus>,
    /// Fence: the update is refused unless the record's `lease_epoch` equals this.
    pub expect_epoch: Option<u64>,
    /// New lease epoch (set when a worker claims the job).
    pub set_epoch: Option<u64>,
    /// Count one more attempt.
    pub bump_attempt: bool,
    /// The handler's result.
    pub result: Option<Value>,
    /// The error to keep.
    pub error: Option<String>,
}

impl JobUpdate {
    /// A claim by a worker: `queued -> processing` under `epoch`, one more attempt.
    #[must_use]
    pub fn start(epoch: u64) -> Self {
        Self {
            to: Some(JobStatus::Processing),
            set_epoch: Some(epoch),
            bump_attempt: true,
            ..Self::default()
        }
    }

    /// Success under the claim `epoch`.
    #[must_use]
    pub fn done(epoch: u64, result: Value) -> Self {
        Self { to: Some(JobStatus::Done), expect_epoch: Some(epoch), result: Some(result), ..Self::default() }
    }

    /// Final failure under the claim `epoch`; the error is kept.
    #[must_use]
    pub fn failed(epoch: u64, error: impl Into<String>) -> Self {
        Self {
            to: Some(JobStatus::Failed),
            expect_epoch: Some(epoch),
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// Back to the queue under the claim `epoch` (retry, or a graceful stop handing it back).
    #[must_use]
    pub fn requeue(epoch: u64, error: Option<String>) -> Self {
        Self { to: Some(JobStatus::Queued), expect_epoch: Some(epoch), error, ..Self::default() }
    }

    /// Checks the fence and the transition table against a record of `job` in `status` under
    /// `lease_epoch`: all that [`JobRecord::apply`] checks, for a store that reads only these
    /// two fields of the record before it writes.
    ///
    /// # Errors
    /// [`QueueError::StaleLease`] when the fence does not match, [`QueueError::InvalidTransition`]
    /// when the table forbids the move.
    pub fn check(&self, job: &JobId, status: JobStatus, lease_epoch: u64) -> Result<(), QueueError> {
        if let Some(epoch) = self.expect_epoch
            && epoch != lease_epoch
        {
            return Err(QueueError::StaleLease { job: job.clone(), epoch, current: lease_epoch });
        }
        if let Some(to) = self.to {
            status.check_transition(to)?;
        }
        Ok(())
    }

    /// Moves a record's status, lease epoch and attempt as this update says, once
    /// [`JobUpdate::check`] has passed: [`JobRecord::apply`]'s part for these three fields, for a
    /// store that keeps its records in a shape of its own.
    pub const fn move_state(&self, status: &mut JobStatus, lease_epoch: &mut u64, attempt: &mut u32) {
        if let Some(to) = self.to {
            *status = to;
        }
        if let Some(epoch) = self.set_epoch {
            *lease_epoch = epoch;
        }
        if self.bump_attempt {
            *attempt += 1;
        }
    }
}

impl JobRecord {
    /// Builds a fresh queued record.
    #[must_use]
    pub fn from_new(tenant: TenantId, job: NewJob, seq: u64, now_ms: u64) -> Self {
        Self {
            id: job.id,
            kind: job.kind,
            tenant,
            lane: job.lane,
            request_id: job.request_id,
            status: JobStatus::Queued,
            attempt: 0,
            lease_epoch: 0,
            seq,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            payload: job.payload,
            result: None,
            error: None,
        }
    }

    /// Applies `update` after checking the fence and the transition table; on error the record
    /// is unchanged.
    ///
    /// # Errors
    /// [`QueueError::StaleLease`] when the fence does not match, [`QueueError::InvalidTransition`]
    /// when the table forbids the move.
    pub fn apply(&mut self, update: &JobUpdate, now_ms: u64) -> Result<(), QueueError> {
        update.check(&self.id, self.status, self.lease_epoch)?;
        update.move_state(&mut self.status, &mut self.lease_epoch, &mut self.attempt);
        if let Some(result) = &update.result {
            self.result = Some(result.clone());
        }
        if let Some(error) = &update.error {
            self.error = Some(error.clone());
        }
        self.updated_at_ms = now_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JobRecord {
        JobRecord::from_new(
            TenantId::default_tenant(),
            NewJob {
                id: JobId::new("j1").unwrap(),
                kind: JobKind::Chat,
                lane: Some(LaneId::new("student:s1:main").unwrap()),
                request_id: None,
                payload: Value::Null,
            },
            1,
            10,
        )
    }

    #[test]
    fn transition_table_matches_the_spec() {
        use JobStatus::*;
        let allowed = [
            (Queued, Processing),
            (Queued, Failed),
            (Queued, Cancelled),
            (Processing, Queued),
            (Processing, Done),
            (Processing, Failed),
        ];
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                assert_eq!(from.can_transition_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn invalid_transition_is_an_error_that_names_both_states() {
        let err = JobStatus::Done.check_transition(JobStatus::Processing).unwrap_err();
        assert_eq!(err.to_string(), "invalid transition done -> processing");
    }

    #[test]
    fn apply_refuses_a_stale_epoch_and_leaves_the_record_unchanged() {
        let mut r = record();
        r.apply(&JobUpdate::start(3), 20).unwrap();
        assert_eq!((r.status, r.attempt, r.lease_epoch), (JobStatus::Processing, 1, 3));
        let before = r.clone();
        let err = r.apply(&JobUpdate::done(2, Value::Bool(true)), 30).unwrap_err();
        assert!(matches!(err, QueueError::StaleLease { epoch: 2, current: 3, .. }));
        assert_eq!(r, before);
        r.apply(&JobUpdate::done(3, Value::Bool(true)), 30).unwrap();
        assert_eq!(r.status, JobStatus::Done);
        assert_eq!(r.updated_at_ms, 30);
        let err = r.apply(&JobUpdate::start(4), 40).unwrap_err();
        assert!(matches!(err, QueueError::InvalidTransition { .. }));
    }

    #[test]
    fn kinds_round_trip_their_wire_names() {
        for k in JobKind::ALL {
            assert_eq!(JobKind::parse(k.as_str()).unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), Value::String(k.as_str().into()));
        }
        assert!(JobKind::parse("nope").is_err());
    }
}
