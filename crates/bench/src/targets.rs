//! The systems under test, assembled as the service assembles them (`app-core/src/wiring.rs`),
//! and the producers that load them through the same calls a submit makes: `JobStore::create`,
//! then `QueueBackend::enqueue_*`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lane_store::{MemoryLaneStore, RedisLaneStore, RedisPool};
use queue_core::{
    JobHandler, JobId, JobKind, JobStore, LaneId, LaneStoreConfig, LimitCaps, NewJob, QueueBackend,
    QueueResult, SharedClock, SystemClock, TenantId,
};
use queue_inline::{
    InlineDeps, InlineQueueBackend, InlineRuntime, InlineRuntimeConfig, LocalLimiter, MemoryJobStore,
    SqliteJobStore, SqliteStoreConfig,
};
use queue_redis::{RedisBackendConfig, RedisBackendDeps, RedisJobStore, RedisLimiter, RedisQueueBackend};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::probe::{Probe, Record};
use crate::{BenchError, BenchResult};

/// The inline job stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreKind {
    /// `MemoryJobStore`: ephemeral.
    Memory,
    /// `SqliteJobStore`: durable (WAL, `synchronous=FULL`, group commit).
    Sqlite,
}

/// The lanes' settings: the service's defaults but no debounce (every job is distinct anyway).
const LANES: LaneStoreConfig = LaneStoreConfig { debounce_ms: 0, claim_ttl_ms: 600_000, max_queue: 6 };

fn tenant() -> TenantId {
    TenantId::new("bench").expect("a valid tenant id")
}

#[derive(Debug)]
enum Engine {
    Inline(InlineRuntime),
    Redis(RedisQueueBackend),
}

/// `LANEWAY_BENCH_PAD_BYTES`: bytes of padding every job's payload carries (see [`pad_bytes`]).
const PAD_VAR: &str = "LANEWAY_BENCH_PAD_BYTES";

/// The padding of every job's payload, from `LANEWAY_BENCH_PAD_BYTES`: a string field `pad` of
/// that many bytes added to each payload, so that a run can measure payloads of a realistic
/// size (the standard run's, `{"i": n}`, are about 10 bytes). Unset or 0: none. Read by the
/// runner and by each child process, which inherits it.
///
/// # Errors
/// When it is set to anything but a whole number of at most 1,000,000.
pub fn pad_bytes() -> BenchResult<usize> {
    std::env::var(PAD_VAR).map_or(Ok(0), |text| parse_pad_bytes(&text))
}

fn parse_pad_bytes(text: &str) -> BenchResult<usize> {
    match text.trim().parse::<usize>() {
        Ok(n) if n <= 1_000_000 => Ok(n),
        _ => {
            Err(format!("{PAD_VAR}: expected a whole number of bytes from 0 to 1000000, got {text:?}").into())
        }
    }
}

/// One backend with its job store, started.
#[derive(Debug)]
pub struct Target {
    store: Arc<dyn JobStore>,
    backend: Arc<dyn QueueBackend>,
    engine: Engine,
    /// The `pad` field every payload gets ([`pad_bytes`]), if any.
    pad: Option<Value>,
    /// The SQLite file's directory, removed on drop.
    _dir: Option<TempDir>,
}

impl Target {
    /// An inline runtime over `kind`, with `concurrency` upload and chat workers, started. An
    /// SQLite file goes to a fresh directory under `tmp`.
    ///
    /// # Errors
    /// When the store cannot be opened or the runtime cannot start.
    pub async fn inline(
        kind: StoreKind,
        tmp: &Path,
        concurrency: usize,
        handler: Arc<dyn JobHandler>,
    ) -> BenchResult<Self> {
        let clock: SharedClock = Arc::new(SystemClock);
        let (store, dir): (Arc<dyn JobStore>, _) = match kind {
            StoreKind::Memory => (Arc::new(MemoryJobStore::new(tenant(), clock.clone())), None),
            StoreKind::Sqlite => {
                std::fs::create_dir_all(tmp)?;
                let dir = tempfile::tempdir_in(tmp)?;
                let path = dir.path().join("jobs.sqlite3");
                let store =
                    SqliteJobStore::open(&path, tenant(), clock.clone(), SqliteStoreConfig::default())?;
                (Arc::new(store), Some(dir))
            }
        };
        let config = InlineRuntimeConfig {
            chat_workers: concurrency,
            upload_workers: concurrency,
            // The benchmarks hold whole backlogs in the queue; the service's cap is 10,000.
            queue_capacity: 10_000_000,
            ..InlineRuntimeConfig::default()
        };
        let deps = InlineDeps {
            store: store.clone(),
            lanes: Arc::new(MemoryLaneStore::new(LANES, clock.clone())),
            limiter: Arc::new(LocalLimiter::new(LimitCaps::default())),
            handlers: queue_core::HandlerSet::uniform(handler),
            clock,
        };
        let runtime = InlineRuntime::new(config, deps);
        runtime.start().await?;
        let backend: Arc<dyn QueueBackend> =
            Arc::new(InlineQueueBackend::over_runtime("inline", runtime.clone()));
        Ok(Self { store, backend, engine: Engine::Inline(runtime), pad: pad()?, _dir: dir })
    }

    /// The Redis backend of tenant `bench` at `url`: a worker process with `concurrency` upload
    /// and chat slots when `run_workers`, else a producer. Not started yet ([`Target::start`]).
    ///
    /// # Errors
    /// When the URL is unusable.
    pub fn redis(
        url: &str,
        run_workers: bool,
        concurrency: usize,
        claim_ahead: bool,
        handler: Arc<dyn JobHandler>,
    ) -> BenchResult<Self> {
        let clock: SharedClock = Arc::new(SystemClock);
        let tenant = tenant();
        let pool = RedisPool::from_url(url)?;
        let week = Duration::from_secs(7 * 24 * 3600);
        let store: Arc<dyn JobStore> =
            Arc::new(RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), week));
        let lanes =
            Arc::new(RedisLaneStore::new(pool.clone(), &tenant, LANES, clock.clone()).with_dispatch(true));
        let limiter =
            Arc::new(RedisLimiter::new(pool.clone(), &tenant, LimitCaps::default(), Duration::from_secs(30)));
        let ttl = Duration::from_millis(LANES.claim_ttl_ms);
        let config = RedisBackendConfig {
            run_workers,
            chat_concurrency: concurrency,
            upload_concurrency: concurrency,
            lease: ttl,
            heartbeat_interval: InlineRuntimeConfig::heartbeat_for_ttl(ttl),
            retention: week,
            claim_ahead_below: if claim_ahead {
                RedisBackendConfig::default().claim_ahead_below
            } else {
                Duration::ZERO
            },
            ..RedisBackendConfig::default()
        };
        let backend = RedisQueueBackend::new(
            config,
            RedisBackendDeps {
                pool,
                tenant,
                store: store.clone(),
                lanes,
                limiter,
                handlers: queue_core::HandlerSet::uniform(handler),
                clock,
            },
        );
        Ok(Self {
            store,
            backend: Arc::new(backend.clone()),
            engine: Engine::Redis(backend),
            pad: pad()?,
            _dir: None,
        })
    }

    /// Starts the backend (an inline target is started when built).
    ///
    /// # Errors
    /// When it cannot start.
    pub async fn start(&self) -> BenchResult<()> {
        Ok(self.backend.start().await?)
    }

    /// Jobs this process finished `done`.
    #[must_use]
    pub fn completed(&self) -> u64 {
        match &self.engine {
            Engine::Inline(r) => r.stats().completed,
            Engine::Redis(b) => b.stats().completed,
        }
    }

    /// Ends every task at once (nothing handed back): a benchmark's leftovers are thrown away.
    pub async fn kill(&self) {
        match &self.engine {
            Engine::Inline(r) => r.kill().await,
            Engine::Redis(b) => b.kill().await,
        }
    }

    /// Submits one upload job, as the service does: create the record, then enqueue it.
    ///
    /// # Errors
    /// What the store or the backend refuse.
    pub async fn submit_upload(&self, payload: Value) -> QueueResult<()> {
        self.backend.submit(self.store.clone(), upload(self.padded(payload))).await.map(drop)
    }

    /// Submits upload jobs in one `submit_many` call.
    ///
    /// # Errors
    /// The call's error, or the first job refused.
    pub async fn submit_uploads(&self, payloads: Vec<Value>) -> QueueResult<()> {
        let jobs = payloads.into_iter().map(|p| upload(self.padded(p))).collect();
        for result in self.backend.submit_many(self.store.clone(), jobs).await? {
            result?;
        }
        Ok(())
    }

    /// Submits one chat job into `lane`.
    ///
    /// # Errors
    /// What the store, the lane or the backend refuse.
    pub async fn submit_chat(&self, lane: &LaneId, payload: Value) -> QueueResult<()> {
        let job = NewJob {
            id: JobId::generate(),
            kind: JobKind::Chat,
            lane: Some(lane.clone()),
            request_id: None,
            payload: self.padded(payload),
        };
        self.backend.submit(self.store.clone(), job).await.map(drop)
    }

    /// `payload` (an object) with this target's `pad` field, if it has one.
    fn padded(&self, mut payload: Value) -> Value {
        if let (Some(pad), Value::Object(fields)) = (&self.pad, &mut payload) {
            fields.insert("pad".to_owned(), pad.clone());
        }
        payload
    }
}

/// The `pad` field of [`pad_bytes`] bytes, or `None`.
fn pad() -> BenchResult<Option<Value>> {
    Ok(match pad_bytes()? {
        0 => None,
        n => Some(Value::String("x".repeat(n))),
    })
}

fn upload(payload: Value) -> NewJob {
    NewJob { id: JobId::generate(), kind: JobKind::Upload, lane: None, request_id: None, payload }
}

/// Jobs per `submit_many` call in W1's batch row.
pub const SUBMIT_BATCH: u64 = 100;

/// Submits up to `total` upload jobs in `submit_many` calls of [`SUBMIT_BATCH`], each awaited,
/// stopping early at `deadline`. Returns how many were submitted.
///
/// # Errors
/// The first refused submit.
pub async fn enqueue_batches(target: &Target, total: u64, deadline: Option<Instant>) -> BenchResult<u64> {
    let mut sent = 0;
    while sent < total {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = SUBMIT_BATCH.min(total - sent);
        target.submit_uploads((sent..sent + n).map(|i| json!({ "i": i })).collect()).await?;
        sent += n;
    }
    Ok(sent)
}

/// A producer-only Redis target (no workers), started: W1's submits, in the run and in the
/// peers' table.
///
/// # Errors
/// When the backend cannot be built or started.
pub async fn redis_producer(url: &str, concurrency: usize) -> BenchResult<Target> {
    let noop = Probe::new(Record::Counts, None);
    let target = Target::redis(url, false, concurrency, true, noop.handler())?;
    target.start().await?;
    Ok(target)
}

/// Runs the future `make` builds on a tokio current-thread runtime in a thread of its own: the
/// task, its connections' drivers and its awaits on one thread, without the multi-thread
/// runtime's hand-offs between its workers. `what` names it if it panics.
///
/// # Errors
/// The future's error, a runtime that cannot be built, or a panic.
pub fn on_current_thread<T, Fut>(what: &str, make: impl FnOnce() -> Fut + Send + 'static) -> BenchResult<T>
where
    T: Send + 'static,
    Fut: Future<Output = BenchResult<T>>,
{
    let thread = std::thread::spawn(move || -> BenchResult<T> {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(make())
    });
    thread.join().map_err(|_| BenchError::from(format!("{what} panicked")))?
}

/// Submits up to `total` upload jobs one at a time, each awaited, stopping early at `deadline`.
/// Returns how many were submitted.
///
/// # Errors
/// The first refused submit.
pub async fn enqueue_serial(target: &Target, total: u64, deadline: Option<Instant>) -> BenchResult<u64> {
    for i in 0..total {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(i);
        }
        target.submit_upload(json!({ "i": i })).await?;
    }
    Ok(total)
}

/// Submits up to `total` upload jobs from `producers` concurrent tasks, stopping early at
/// `deadline`. Returns how many were submitted.
///
/// # Errors
/// The first refused submit.
pub async fn enqueue_concurrent(
    target: &Arc<Target>,
    total: u64,
    producers: usize,
    deadline: Option<Instant>,
) -> BenchResult<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers {
        let (target, next, done) = (target.clone(), next.clone(), done.clone());
        tasks.spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(());
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok(());
                }
                target.submit_upload(json!({ "i": i })).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    join_all(tasks).await?;
    Ok(done.load(Ordering::SeqCst))
}

/// The id of lane `index`.
#[must_use]
pub fn lane_id(index: u64) -> LaneId {
    LaneId::new(format!("bench:lane{index}")).expect("a valid lane id")
}

/// Submits `per_lane` chat jobs into each of `lanes` lanes from `producers` tasks. Each producer
/// owns the lanes `l ≡ k (mod producers)` and submits round by round, awaiting each submit, so a
/// lane's jobs arrive in the order of their `p` (what W4 checks).
///
/// # Errors
/// The first refused submit.
pub async fn enqueue_lanes(
    target: &Arc<Target>,
    lanes: u64,
    per_lane: u64,
    producers: usize,
) -> BenchResult<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..producers as u64 {
        let target = target.clone();
        tasks.spawn(async move {
            let mine: Vec<(u64, LaneId)> = (k..lanes).step_by(producers).map(|l| (l, lane_id(l))).collect();
            for p in 0..per_lane {
                for (l, lane) in &mine {
                    target.submit_chat(lane, json!({ "l": l, "p": p })).await?;
                }
            }
            Ok(())
        });
    }
    join_all(tasks).await
}

async fn join_all(mut tasks: tokio::task::JoinSet<QueueResult<()>>) -> BenchResult<()> {
    let mut first: Option<crate::BenchError> = None;
    while let Some(joined) = tasks.join_next().await {
        let outcome: BenchResult<()> = match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = outcome
            && first.is_none()
        {
            first = Some(e);
            tasks.abort_all();
        }
    }
    first.map_or(Ok(()), Err)
}

/// How often [`wait_until`] looks while a drain runs: the instant a drain's last completion is
/// seen is its end, so within a millisecond.
pub const DRAIN_POLL: Duration = Duration::from_millis(1);

/// How often [`wait_until`] looks while W3 runs. W3 measures an idle worker: a look every
/// millisecond would keep its process (and its CPU) awake between jobs, which an idle worker in
/// service is not, and would compete with the job it measures. Only the end of the run waits
/// for it.
pub const IDLE_POLL: Duration = Duration::from_millis(100);

/// Waits until `done()` holds, looking `every` so often; the instant it was seen to hold.
///
/// # Errors
/// When `deadline` passes first, naming `what`.
pub async fn wait_until(
    what: &str,
    deadline: Instant,
    every: Duration,
    done: impl Fn() -> bool,
) -> BenchResult<Instant> {
    loop {
        if done() {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_padding_is_a_whole_number_of_bytes_and_anything_else_is_refused_by_name() {
        assert_eq!(parse_pad_bytes("0").expect("zero"), 0);
        assert_eq!(parse_pad_bytes(" 200 ").expect("200"), 200);
        for bad in ["", "-1", "2k", "1000001"] {
            let e = parse_pad_bytes(bad).expect_err(bad).to_string();
            assert!(e.starts_with("LANEWAY_BENCH_PAD_BYTES: expected a whole number"), "{bad}: {e}");
        }
    }
}
