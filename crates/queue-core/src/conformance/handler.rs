//! The battery's job handler: records every start and end with a global sequence number, and
//! behaves as each job's payload says (block on a gate, fail, succeed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{HandlerError, JobHandler, JobId, JobRecord, LimitClass};

/// What a test job does, read from its payload (`{"behavior": ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Succeeds at once.
    Ok,
    /// The first attempt waits until the gate opens; later ones succeed at once.
    GateFirst(String),
    /// Fails (retryably) in its first this-many attempts, then succeeds.
    FailTimes(u32),
    /// Always fails (retryably).
    FailAlways,
    /// Never finishes: every attempt waits forever (a worker that hangs or dies with it).
    Hang,
}

impl Behavior {
    /// The payload that asks for this behaviour.
    #[must_use]
    pub fn payload(&self) -> Value {
        match self {
            Self::Ok => json!({"behavior": "ok"}),
            Self::GateFirst(g) => json!({"behavior": "gate_first", "gate": g}),
            Self::FailTimes(n) => json!({"behavior": "fail_times", "times": n}),
            Self::FailAlways => json!({"behavior": "fail_always"}),
            Self::Hang => json!({"behavior": "hang"}),
        }
    }

    fn from_payload(v: &Value) -> Self {
        match v.get("behavior").and_then(Value::as_str) {
            Some("gate_first") => Self::GateFirst(v["gate"].as_str().unwrap_or_default().to_owned()),
            Some("fail_times") => {
                Self::FailTimes(u32::try_from(v["times"].as_u64().unwrap_or(0)).unwrap_or(0))
            }
            Some("fail_always") => Self::FailAlways,
            Some("hang") => Self::Hang,
            _ => Self::Ok,
        }
    }
}

/// One start or end of a handler invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Global order of events.
    pub seq: u64,
    /// The job.
    pub job: JobId,
    /// Its lane, for chat jobs.
    pub lane: Option<String>,
    /// 1-based invocation count of this job in this handler.
    pub invocation: u32,
    /// `true` for a start, `false` for an end.
    pub start: bool,
}

/// Records and obeys. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct RecordingHandler {
    seq: Arc<AtomicU64>,
    events: Arc<Mutex<Vec<Event>>>,
    invocations: Arc<Mutex<HashMap<JobId, u32>>>,
    gates: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    permits: Vec<LimitClass>,
}

impl RecordingHandler {
    /// A handler that needs no permits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn gate(&self, name: &str) -> Arc<Semaphore> {
        self.gates
            .lock()
            .expect("gates")
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(0)))
            .clone()
    }

    /// Lets every invocation waiting on `name` (now or later) through.
    pub fn open(&self, name: &str) {
        self.gate(name).add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Every event so far.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }

    /// How many times `job` was started.
    #[must_use]
    pub fn invocations(&self, job: &JobId) -> u32 {
        self.invocations.lock().expect("invocations").get(job).copied().unwrap_or(0)
    }

    /// Jobs started but not ended, now.
    #[must_use]
    pub fn in_flight(&self) -> Vec<JobId> {
        let events = self.events();
        let mut open: HashMap<(JobId, u32), bool> = HashMap::new();
        for e in events {
            open.insert((e.job, e.invocation), e.start);
        }
        open.into_iter().filter(|(_, started)| *started).map(|((j, _), _)| j).collect()
    }

    fn record(&self, job: &JobRecord, invocation: u32, start: bool) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        self.events.lock().expect("events").push(Event {
            seq,
            job: job.id.clone(),
            lane: job.lane.as_ref().map(ToString::to_string),
            invocation,
            start,
        });
    }
}

#[async_trait]
impl JobHandler for RecordingHandler {
    fn permits(&self, _job: &JobRecord) -> Vec<LimitClass> {
        self.permits.clone()
    }

    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError> {
        let invocation = {
            let mut inv = self.invocations.lock().expect("invocations");
            let n = inv.entry(job.id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.record(job, invocation, true);
        let behavior = Behavior::from_payload(&job.payload);
        // Behaviour follows the record's attempt (counted by the runtime across restarts), not
        // this handler's own count, so a restarted process sees a re-run as a re-run.
        let attempt = job.attempt;
        if let Behavior::GateFirst(g) = &behavior
            && attempt <= 1
        {
            let gate = self.gate(g);
            // The permit is not returned, so one opening serves every waiter.
            gate.acquire().await.expect("gate semaphore is never closed").forget();
        }
        if behavior == Behavior::Hang {
            std::future::pending::<()>().await;
        }
        // Give other workers a chance to interleave, so overlap would show if it could happen.
        tokio::task::yield_now().await;
        let outcome = match behavior {
            Behavior::FailTimes(n) if attempt <= n => {
                Err(HandlerError::retryable(format!("planned failure {attempt}")))
            }
            Behavior::FailAlways => Err(HandlerError::retryable(format!("always fails ({attempt})"))),
            _ => Ok(json!({"job": job.id.as_str(), "invocation": invocation})),
        };
        self.record(job, invocation, false);
        outcome
    }
}
