//! Per-tenant job metrics: counters and fixed-bucket histograms on relaxed atomics, cheap enough
//! for every job event on the hot path (no lock, no allocation). The runtimes record into a
//! shared [`JobMetrics`]; the binary reads a [`MetricsSnapshot`] and renders it (Prometheus text).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::job::JobKind;

/// Upper bounds (inclusive, milliseconds) of the duration histograms' buckets; a value above the
/// last falls only in the implicit `+Inf` bucket. From 5 ms to 10 min: queue waits and job runs
/// span that whole range.
pub const DURATION_BUCKETS_MS: [u64; 14] =
    [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 600_000];

const BUCKETS: usize = DURATION_BUCKETS_MS.len();

/// A histogram of durations over [`DURATION_BUCKETS_MS`].
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Per-bucket (not cumulative) counts; cumulated when read, so an observation is one add.
    buckets: [AtomicU64; BUCKETS],
    sum_ms: AtomicU64,
    count: AtomicU64,
}

impl DurationHistogram {
    /// Records one duration of `ms` milliseconds.
    pub fn observe(&self, ms: u64) {
        let i = DURATION_BUCKETS_MS.partition_point(|&upper| upper < ms);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy, with cumulative bucket counts as Prometheus wants them.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKETS];
        let mut running = 0;
        for (out, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            *out = running;
        }
        // Read after the buckets, so `count >= every bucket` even while others observe.
        let count = self.count.load(Ordering::Relaxed).max(running);
        HistogramSnapshot { cumulative, sum_ms: self.sum_ms.load(Ordering::Relaxed), count }
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Observations `<=` each bound of [`DURATION_BUCKETS_MS`], cumulative.
    pub cumulative: [u64; BUCKETS],
    /// Sum of the observations, in milliseconds.
    pub sum_ms: u64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
}

/// Counters and histograms of one job kind.
#[derive(Debug, Default)]
struct KindCells {
    enqueued: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    lane_wait: DurationHistogram,
    run: DurationHistogram,
}

/// One kind's figures read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSnapshot {
    /// Jobs accepted by an enqueue.
    pub enqueued: u64,
    /// Attempts started.
    pub started: u64,
    /// Jobs finished `done`.
    pub completed: u64,
    /// Attempts that ended in an error (each one then retried or dead-lettered).
    pub failed: u64,
    /// Failed attempts scheduled again.
    pub retried: u64,
    /// Jobs that failed for good (`failed` status).
    pub dead_lettered: u64,
    /// From the job's creation to its first start.
    pub lane_wait: HistogramSnapshot,
    /// From an attempt's start to its recorded outcome.
    pub run: HistogramSnapshot,
}

/// A tenant's job metrics. Share it as an `Arc<JobMetrics>`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct JobMetrics {
    kinds: [KindCells; 4],
    lease_expiries: AtomicU64,
    fenced: AtomicU64,
    limiter_waits: AtomicU64,
    limiter_wait: DurationHistogram,
}

/// [`JobMetrics`] read at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Per kind, in [`JobKind::ALL`] order.
    pub kinds: Vec<(JobKind, KindSnapshot)>,
    /// Leases that expired and whose job was dispatched again.
    pub lease_expiries: u64,
    /// Results (or starts) rejected because their lease was no longer current.
    pub fenced: u64,
    /// Limiter acquisitions (each a wait, possibly of 0 ms).
    pub limiter_waits: u64,
    /// Time spent in `Limiter::acquire`.
    pub limiter_wait: HistogramSnapshot,
}

const fn index(kind: JobKind) -> usize {
    match kind {
        JobKind::Upload => 0,
        JobKind::Exam => 1,
        JobKind::ProfileUpdate => 2,
        JobKind::Chat => 3,
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl JobMetrics {
    /// Fresh metrics, all zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn kind(&self, kind: JobKind) -> &KindCells {
        &self.kinds[index(kind)]
    }

    /// A job of `kind` was accepted.
    pub fn record_enqueued(&self, kind: JobKind) {
        bump(&self.kind(kind).enqueued);
    }

    /// An attempt started. `first_wait_ms` is the time since the job's creation, given only for
    /// its first attempt (a retry's wait includes its backoff and is not a lane wait).
    pub fn record_started(&self, kind: JobKind, first_wait_ms: Option<u64>) {
        let k = self.kind(kind);
        bump(&k.started);
        if let Some(ms) = first_wait_ms {
            k.lane_wait.observe(ms);
        }
    }

    /// An attempt finished well after `run_ms`.
    pub fn record_completed(&self, kind: JobKind, run_ms: u64) {
        let k = self.kind(kind);
        bump(&k.completed);
        k.run.observe(run_ms);
    }

    /// An attempt failed after `run_ms` and the job was scheduled again.
    pub fn record_retried(&self, kind: JobKind, run_ms: u64) {
        let k = self.kind(kind);
        bump(&k.failed);
        bump(&k.retried);
        k.run.observe(run_ms);
    }

    /// An attempt failed after `run_ms` and the job failed for good.
    pub fn record_dead_lettered(&self, kind: JobKind, run_ms: u64) {
        let k = self.kind(kind);
        bump(&k.failed);
        bump(&k.dead_lettered);
        k.run.observe(run_ms);
    }

    /// `n` expired leases were reaped and their jobs dispatched again.
    pub fn record_lease_expiries(&self, n: u64) {
        self.lease_expiries.fetch_add(n, Ordering::Relaxed);
    }

    /// A result or start was rejected by the fence (stale lease).
    pub fn record_fenced(&self) {
        bump(&self.fenced);
    }

    /// One limiter acquisition took `ms`.
    pub fn record_limiter_wait(&self, ms: u64) {
        bump(&self.limiter_waits);
        self.limiter_wait.observe(ms);
    }

    /// Everything, read now.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        let kinds = JobKind::ALL
            .iter()
            .map(|&kind| {
                let k = self.kind(kind);
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let snap = KindSnapshot {
                    enqueued: get(&k.enqueued),
                    started: get(&k.started),
                    completed: get(&k.completed),
                    failed: get(&k.failed),
                    retried: get(&k.retried),
                    dead_lettered: get(&k.dead_lettered),
                    lane_wait: k.lane_wait.snapshot(),
                    run: k.run.snapshot(),
                };
                (kind, snap)
            })
            .collect();
        MetricsSnapshot {
            kinds,
            lease_expiries: self.lease_expiries.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
            limiter_waits: self.limiter_waits.load(Ordering::Relaxed),
            limiter_wait: self.limiter_wait.snapshot(),
        }
    }
}

/// Milliseconds in `d`, saturating.
#[must_use]
pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_falls_in_the_first_bucket_whose_bound_is_at_least_it() {
        let h = DurationHistogram::default();
        for ms in [0, 5, 6, 10, 600_000, 600_001] {
            h.observe(ms);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2, "0 and 5 are <= 5");
        assert_eq!(s.cumulative[1], 4, "6 and 10 are <= 10");
        assert_eq!(s.cumulative[BUCKETS - 2], 4);
        assert_eq!(s.cumulative[BUCKETS - 1], 5, "600_000 is <= the last bound");
        assert_eq!(s.count, 6, "600_001 is only in +Inf");
        assert_eq!(s.sum_ms, 5 + 6 + 10 + 600_000 + 600_001);
    }

    #[test]
    fn cumulative_buckets_never_decrease_and_never_exceed_the_count() {
        let h = DurationHistogram::default();
        for ms in (0..2_000).step_by(7) {
            h.observe(ms);
        }
        let s = h.snapshot();
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.cumulative.iter().all(|&c| c <= s.count));
        assert_eq!(s.count, (0..2_000).step_by(7).count() as u64);
    }

    #[test]
    fn outcomes_count_per_kind_and_failures_include_retries_and_dead_letters() {
        let m = JobMetrics::new();
        m.record_enqueued(JobKind::Chat);
        m.record_started(JobKind::Chat, Some(12));
        m.record_retried(JobKind::Chat, 3);
        m.record_started(JobKind::Chat, None);
        m.record_dead_lettered(JobKind::Chat, 4);
        m.record_enqueued(JobKind::Upload);
        m.record_started(JobKind::Upload, Some(1));
        m.record_completed(JobKind::Upload, 2);
        m.record_fenced();
        m.record_lease_expiries(2);
        m.record_limiter_wait(7);
        let s = m.snapshot();
        let kind = |k: JobKind| s.kinds.iter().find(|(x, _)| *x == k).map(|(_, v)| *v).expect("kind");
        let chat = kind(JobKind::Chat);
        assert_eq!((chat.enqueued, chat.started, chat.completed), (1, 2, 0));
        assert_eq!((chat.failed, chat.retried, chat.dead_lettered), (2, 1, 1));
        assert_eq!((chat.lane_wait.count, chat.run.count), (1, 2));
        let upload = kind(JobKind::Upload);
        assert_eq!((upload.enqueued, upload.started, upload.completed, upload.failed), (1, 1, 1, 0));
        assert_eq!(kind(JobKind::Exam), KindSnapshot::default());
        assert_eq!((s.fenced, s.lease_expiries, s.limiter_waits, s.limiter_wait.sum_ms), (1, 2, 1, 7));
    }
}
