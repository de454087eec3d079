//! The Redis key layout of one tenant. Every key of a tenant carries the same hash tag
//! (`lw:{<tenant>}:...`), so every multi-key script touches one Cluster slot. Tenant, lane and job
//! ids are validated (no `{`, `}`, `*`, `?`, `[`, whitespace), so no id can forge another tag or
//! glob. Fingerprints, which are free text, are only ever hash *fields*, never key names.

use queue_core::{JobId, JobKind, JobStatus, LaneId, LimitClass, RequestId, TenantId};

/// Builds the keys of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeys {
    prefix: String,
}

impl TenantKeys {
    /// The keys of `tenant`.
    #[must_use]
    pub fn new(tenant: &TenantId) -> Self {
        Self { prefix: format!("lw:{{{tenant}}}:") }
    }

    /// The common prefix, hash tag included (`lw:{t1}:`).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn k(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// STRING counter: the last lane epoch handed out.
    #[must_use]
    pub fn epoch(&self) -> String {
        self.k("epoch")
    }

    /// ZSET of lanes that hold any job (score 0; ordered by name for paging).
    #[must_use]
    pub fn lanes(&self) -> String {
        self.k("lanes")
    }

    /// ZSET lane -> lease deadline (ms) of its active claim; the reaper reads it.
    #[must_use]
    pub fn leases(&self) -> String {
        self.k("leases")
    }

    /// LIST of a lane's waiting job ids, head first.
    #[must_use]
    pub fn lane_waiting(&self, lane: &LaneId) -> String {
        self.k(&format!("lane:{lane}:q"))
    }

    /// HASH of a lane's active claim: `job`, `epoch`, `deadline`.
    #[must_use]
    pub fn lane_active(&self, lane: &LaneId) -> String {
        self.k(&format!("lane:{lane}:active"))
    }

    /// HASH fingerprint -> `job|registered_ms` for the debounce window; expires with it.
    #[must_use]
    pub fn lane_recent(&self, lane: &LaneId) -> String {
        self.k(&format!("lane:{lane}:recent"))
    }

    /// LIST of chat claims ready for a worker (`epoch:deadline|job|lane`); lane scripts push to it.
    #[must_use]
    pub fn chat_ready(&self) -> String {
        self.ready(JobKind::Chat)
    }

    /// LIST of job ids of `kind` ready for a worker.
    #[must_use]
    pub fn ready(&self, kind: JobKind) -> String {
        self.k(&format!("ready:{}", kind.as_str()))
    }

    /// LIST of wake-up tokens for idle workers of `kind` (bounded).
    #[must_use]
    pub fn signal(&self, kind: JobKind) -> String {
        self.k(&format!("signal:{}", kind.as_str()))
    }

    /// ZSET worker id -> registration deadline (ms) of idle workers of `kind` waiting for a job
    /// handed to them directly (a registration serves one hand-off).
    #[must_use]
    pub fn idle(&self, kind: JobKind) -> String {
        self.k(&format!("idle:{}", kind.as_str()))
    }

    /// LIST of jobs of `kind` claimed for worker `worker` by a submit and handed to it (each the
    /// claimed record as JSON); the worker blocks on it while registered in [`Self::idle`].
    #[must_use]
    pub fn handoff(&self, kind: JobKind, worker: &str) -> String {
        self.k(&format!("handoff:{}:{worker}", kind.as_str()))
    }

    /// HASH: one job record.
    #[must_use]
    pub fn job(&self, job: &JobId) -> String {
        self.k(&format!("job:{job}"))
    }

    /// STRING counter: the last submission sequence number.
    #[must_use]
    pub fn seq(&self) -> String {
        self.k("seq")
    }

    /// ZSET job -> seq of pending (queued or processing) jobs of `kind`.
    #[must_use]
    pub fn pending(&self, kind: JobKind) -> String {
        self.k(&format!("pending:{}", kind.as_str()))
    }

    /// ZSET job -> finish time (ms) of the finished jobs of `kind` that ended in `status` (a
    /// terminal state): for retention, listing, and their count (`ZCARD`), so that finishing a
    /// job costs one index write and no counter.
    #[must_use]
    pub fn finished(&self, kind: JobKind, status: JobStatus) -> String {
        self.k(&format!("finished:{}:{}", kind.as_str(), status.as_str()))
    }

    /// ZSET job -> lease deadline (ms) of non-chat jobs held by workers.
    #[must_use]
    pub fn inflight(&self) -> String {
        self.k("inflight")
    }

    /// ZSET `kind|job` (or a chat claim) -> due time (ms) of retries waiting out their backoff.
    #[must_use]
    pub fn delayed(&self) -> String {
        self.k("delayed")
    }

    /// STRING request id -> job id, with a TTL.
    #[must_use]
    pub fn idempotency(&self, request: &RequestId) -> String {
        self.k(&format!("idem:{request}"))
    }

    /// ZSET permit token -> lease deadline (ms) for one capacity class.
    #[must_use]
    pub fn permits(&self, class: LimitClass) -> String {
        self.k(&format!("permits:{}", class.as_str()))
    }

    /// HASH of counters (fenced completions, lease expiries, ...).
    #[must_use]
    pub fn stats(&self) -> String {
        self.k("stats")
    }

    /// HASH worker id -> JSON `{host, pid, started_ms, last_heartbeat_ms, heartbeat_ms,
    /// in_flight}`: the worker processes of this tenant, written by their heartbeats.
    #[must_use]
    pub fn workers(&self) -> String {
        self.k("workers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_tenants_hash_tag() {
        let keys = TenantKeys::new(&TenantId::new("t1").unwrap());
        let lane = LaneId::new("student:s1:main").unwrap();
        let job = JobId::new("j1").unwrap();
        for key in [
            keys.epoch(),
            keys.lanes(),
            keys.leases(),
            keys.lane_waiting(&lane),
            keys.lane_active(&lane),
            keys.lane_recent(&lane),
            keys.chat_ready(),
            keys.job(&job),
            keys.pending(JobKind::Upload),
            keys.permits(LimitClass::LlmStudent),
            keys.idempotency(&RequestId::new("r").unwrap()),
            keys.workers(),
        ] {
            assert!(key.starts_with("lw:{t1}:"), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}");
            assert_eq!(key.matches('}').count(), 1, "{key}");
        }
    }

    #[test]
    fn different_tenants_never_share_a_key() {
        let a = TenantKeys::new(&TenantId::new("a").unwrap());
        let ab = TenantKeys::new(&TenantId::new("ab").unwrap());
        assert_ne!(a.epoch(), ab.epoch());
        assert!(!ab.prefix().starts_with(a.prefix()));
    }
}
