//! The noop handler every workload runs, recording only what its workload measures: the first
//! start, starts and ends counted, enqueue→start latencies (W3), per-lane start/end events (W4).
//! An optional gate holds jobs before they start, so a backlog can be built on a running
//! inline runtime and released in measured portions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use queue_core::{HandlerError, JobHandler, JobRecord, LimitClass};
use serde_json::Value;
use tokio::sync::Semaphore;

/// Nanoseconds since the Unix epoch: comparable across the processes of one machine (W3 sends
/// the producer's submit time to the worker in the payload).
#[must_use]
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What the probe records besides counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Counts and the first start only.
    Counts,
    /// Also `wall_ns() - payload.t` at each start, in µs (W3).
    Latency,
    /// Also a [`LaneEvent`] per job, from `payload.l` and `payload.p` (W4).
    Lanes,
}

/// One chat job's run, for the lane-order check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneEvent {
    /// The lane's index.
    pub lane: u32,
    /// The job's place in its lane's submission order.
    pub pos: u32,
    /// When the handler started (ns since the probe was made).
    pub start_ns: u64,
    /// When it returned.
    pub end_ns: u64,
}

/// Shared state of the probe handler.
#[derive(Debug)]
pub struct Probe {
    base: Instant,
    record: Record,
    gate: Option<Arc<Semaphore>>,
    /// `u64::MAX` until the first job starts.
    first_start_ns: AtomicU64,
    ended: AtomicU64,
    latencies_us: Mutex<Vec<f64>>,
    lane_events: Mutex<Vec<LaneEvent>>,
}

impl Probe {
    /// A probe recording `record`; with a gate, each job waits for one of its permits first.
    #[must_use]
    pub fn new(record: Record, gate: Option<Arc<Semaphore>>) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            record,
            gate,
            first_start_ns: AtomicU64::new(u64::MAX),
            ended: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::new()),
            lane_events: Mutex::new(Vec::new()),
        })
    }

    /// The handler to register for every kind.
    #[must_use]
    pub fn handler(self: &Arc<Self>) -> Arc<dyn JobHandler> {
        Arc::new(ProbeHandler(self.clone()))
    }

    fn since_base_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the first job started, if one has.
    #[must_use]
    pub fn first_start(&self) -> Option<Instant> {
        let ns = self.first_start_ns.load(Ordering::SeqCst);
        (ns != u64::MAX).then(|| self.base + std::time::Duration::from_nanos(ns))
    }

    /// Jobs whose handler returned.
    #[must_use]
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }

    /// What the handler does for a job in `Record::Counts` mode, for the bare-tokio baseline:
    /// note the start and count the end.
    pub fn run_noop(&self) {
        let start = self.since_base_ns();
        self.first_start_ns.fetch_min(start, Ordering::SeqCst);
        self.ended.fetch_add(1, Ordering::SeqCst);
    }

    /// The latencies recorded so far (µs).
    #[must_use]
    pub fn latencies_us(&self) -> Vec<f64> {
        self.latencies_us.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many latencies were recorded.
    #[must_use]
    pub fn latency_count(&self) -> usize {
        self.latencies_us.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The lane events recorded so far.
    #[must_use]
    pub fn lane_events(&self) -> Vec<LaneEvent> {
        self.lane_events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn payload_u64(job: &JobRecord, field: &str) -> Option<u64> {
    job.payload.get(field).and_then(Value::as_u64)
}

/// The noop [`JobHandler`] over a [`Probe`].
#[derive(Debug)]
pub struct ProbeHandler(Arc<Probe>);

#[async_trait]
impl JobHandler for ProbeHandler {
    fn permits(&self, _job: &JobRecord) -> Vec<LimitClass> {
        Vec::new()
    }

    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError> {
        let p = &self.0;
        if let Some(gate) = &p.gate {
            // A closed gate lets everything through.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
        }
        let start = p.since_base_ns();
        p.first_start_ns.fetch_min(start, Ordering::SeqCst);
        if p.record == Record::Latency
            && let Some(sent) = payload_u64(job, "t")
        {
            #[allow(clippy::cast_precision_loss)] // µs of a latency: far below 2^53
            let us = wall_ns().saturating_sub(sent) as f64 / 1_000.0;
            p.latencies_us.lock().unwrap_or_else(PoisonError::into_inner).push(us);
        }
        let end = p.since_base_ns();
        if p.record == Record::Lanes {
            let lane = payload_u64(job, "l").and_then(|v| u32::try_from(v).ok()).unwrap_or(u32::MAX);
            let pos = payload_u64(job, "p").and_then(|v| u32::try_from(v).ok()).unwrap_or(u32::MAX);
            p.lane_events.lock().unwrap_or_else(PoisonError::into_inner).push(LaneEvent {
                lane,
                pos,
                start_ns: start,
                end_ns: end,
            });
        }
        p.ended.fetch_add(1, Ordering::SeqCst);
        Ok(Value::Null)
    }
}

/// Checks W4: every lane of `lanes` ran each of its `per_lane` jobs exactly once, in
/// submission order, none starting before the previous one of its lane ended. Returns the first
/// few problems found.
#[must_use]
pub fn check_lanes(events: &[LaneEvent], lanes: u32, per_lane: u32) -> Vec<String> {
    const SHOWN: usize = 10;
    let mut by_lane: Vec<Vec<LaneEvent>> = vec![Vec::new(); lanes as usize];
    let mut problems = Vec::new();
    for e in events {
        match by_lane.get_mut(e.lane as usize) {
            Some(v) => v.push(*e),
            None => problems.push(format!("a job of unknown lane {} ran", e.lane)),
        }
    }
    for (lane, runs) in by_lane.iter_mut().enumerate() {
        runs.sort_by_key(|e| (e.start_ns, e.pos));
        let order: Vec<u32> = runs.iter().map(|e| e.pos).collect();
        let expected: Vec<u32> = (0..per_lane).collect();
        if order != expected {
            problems.push(format!("lane {lane} ran its jobs in the order {order:?}, not {expected:?}"));
        }
        for pair in runs.windows(2) {
            if pair[1].start_ns < pair[0].end_ns {
                problems.push(format!(
                    "lane {lane}: job {} started before job {} ended (overlap)",
                    pair[1].pos, pair[0].pos
                ));
            }
        }
    }
    problems.truncate(SHOWN);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(lane: u32, pos: u32, start_ns: u64, end_ns: u64) -> LaneEvent {
        LaneEvent { lane, pos, start_ns, end_ns }
    }

    #[test]
    fn lanes_run_in_order_without_overlap_pass_the_check() {
        let events = [ev(0, 0, 0, 5), ev(1, 0, 1, 2), ev(0, 1, 5, 9), ev(1, 1, 3, 4)];
        assert!(check_lanes(&events, 2, 2).is_empty());
    }

    #[test]
    fn the_lane_check_reports_disorder_overlap_duplicates_and_gaps() {
        let disorder = [ev(0, 1, 0, 1), ev(0, 0, 2, 3)];
        assert!(check_lanes(&disorder, 1, 2)[0].contains("order [1, 0]"));
        let overlap = [ev(0, 0, 0, 10), ev(0, 1, 5, 12)];
        assert!(check_lanes(&overlap, 1, 2)[0].contains("overlap"));
        let twice = [ev(0, 0, 0, 1), ev(0, 0, 2, 3), ev(0, 1, 4, 5)];
        assert!(!check_lanes(&twice, 1, 2).is_empty());
        let missing = [ev(0, 0, 0, 1)];
        assert!(check_lanes(&missing, 1, 2)[0].contains("order [0]"));
        let stranger = [ev(7, 0, 0, 1)];
        assert!(check_lanes(&stranger, 1, 1).iter().any(|p| p.contains("unknown lane 7")));
    }
}
