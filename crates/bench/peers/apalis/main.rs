//! Laneway's driver for apalis with apalis-redis (issue 5, `cargo xtask bench-peers`).
//!
//! Not a member of the workspace: xtask copies this file to `target/peers/apalis/src/main.rs`,
//! writes a Cargo.toml next to it with the versions pinned in
//! `crates/bench/src/peers/pins.rs`, and builds it in release. One mode per process; it prints
//! `ready` (a worker that has started and gone idle) and ends with one `result {json}` line
//! (or `error <why>`), which `laneway-bench peers` parses.
//!
//! ```text
//! laneway-peer-apalis REDIS_URL version
//! laneway-peer-apalis REDIS_URL produce-single N CAP_S
//! laneway-peer-apalis REDIS_URL produce-concurrent N PRODUCERS CAP_S
//! laneway-peer-apalis REDIS_URL produce-batch N BATCH CAP_S
//! laneway-peer-apalis REDIS_URL fill N
//! laneway-peer-apalis REDIS_URL latency N RATE
//! laneway-peer-apalis REDIS_URL work EXPECT CONCURRENCY CAP_S
//! ```
//!
//! The worker is a `RedisStorage` on one `ConnectionManager`, polled every 10 ms when idle
//! ([`POLL_INTERVAL`] says why it polls), with every other setting at apalis-redis's default
//! (fetch batch 10, task locks on, results persisted, events emitted), and
//! `.concurrency(CONCURRENCY)`. Producers push through clones of one `RedisStorage` (one
//! multiplexed connection); the batch mode uses `push_bulk`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apalis::prelude::*;
use apalis_redis::{Config, RedisStorage};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The queue every mode uses. No `:` in it: apalis-redis reads the queue name out of the
/// pub/sub channel name split at `:`.
const QUEUE: &str = "bench";

/// How often an idle worker asks Redis for tasks. apalis-redis 1.0.0 has a pub/sub wake-up
/// (`RedisStorageFactory`), but its push script files every task, even one due now, under the
/// scheduled set, where no `available` event is published: a pub/sub-woken worker sleeps
/// through plain pushes. Polling is what works; 10 ms is the interval issue 5 measured with.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

type DynError = Box<dyn std::error::Error + Send + Sync>;

/// The payload: its index, and for W3 the producer's wall-clock time in µs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    i: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<u64>,
}

fn wall_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0))
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn emit(value: &serde_json::Value) {
    println!("result {value}");
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, DynError> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]).into())
}

async fn producer(url: &str) -> Result<RedisStorage<Job>, DynError> {
    let conn = apalis_redis::connect(url).await?;
    Ok(RedisStorage::new(conn).with_config(Config::default().queue(QUEUE)))
}

async fn produce(
    url: &str,
    n: u64,
    producers: u64,
    batch: Option<u64>,
    cap: Duration,
) -> Result<(), DynError> {
    let storage = producer(url).await?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + cap;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers {
        let (mut storage, next, done) = (storage.clone(), next.clone(), done.clone());
        tasks.spawn(async move {
            let step = batch.unwrap_or(1);
            while Instant::now() < deadline {
                let from = next.fetch_add(step, Ordering::Relaxed);
                if from >= n {
                    break;
                }
                let to = (from + step).min(n);
                if batch.is_some() {
                    let jobs = (from..to).map(|i| Job { i, t: None }).collect();
                    storage.push_bulk(jobs).await.map_err(|e| e.to_string())?;
                } else {
                    storage.push(Job { i: from, t: None }).await.map_err(|e| e.to_string())?;
                }
                done.fetch_add(to - from, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    emit(&json!({ "jobs": done.load(Ordering::SeqCst), "elapsed_s": elapsed }));
    Ok(())
}

async fn paced(url: &str, n: u64, rate: u64) -> Result<(), DynError> {
    let mut storage = producer(url).await?;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    for i in 0..n {
        tokio::time::sleep_until((started + period * u32::try_from(i)?).into()).await;
        storage.push(Job { i, t: Some(wall_us()) }).await?;
    }
    emit(&json!({ "jobs": n, "elapsed_s": started.elapsed().as_secs_f64() }));
    Ok(())
}

/// What the worker's handler records.
struct Probe {
    base: Instant,
    /// ns after `base` of the first start; `u64::MAX` until then.
    first_ns: AtomicU64,
    latencies_us: Mutex<Vec<f64>>,
}

static PROBE: OnceLock<Probe> = OnceLock::new();

fn probe() -> &'static Probe {
    PROBE.get_or_init(|| Probe {
        base: Instant::now(),
        first_ns: AtomicU64::new(u64::MAX),
        latencies_us: Mutex::new(Vec::new()),
    })
}

/// The noop handler.
async fn handle(job: Job) -> Result<(), BoxDynError> {
    let p = probe();
    if let Some(t) = job.t {
        let now = wall_us();
        p.latencies_us.lock().map_err(|_| "poisoned")?.push(now.saturating_sub(t) as f64);
    }
    let ns = u64::try_from(p.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    p.first_ns.fetch_min(ns, Ordering::SeqCst);
    Ok(())
}

async fn work(url: &str, expect: u64, concurrency: usize, cap: Duration) -> Result<(), DynError> {
    let p = probe();
    let config = Config::default().queue(QUEUE);
    let done_set = config.done_jobs_set();
    let backend = RedisStorage::<Job>::new(apalis_redis::connect(url).await?)
        .with_config(config)
        .poll_with_interval(POLL_INTERVAL);
    let worker = WorkerBuilder::new("laneway-bench").backend(backend).concurrency(concurrency).build(handle);
    let running = tokio::spawn(worker.run());
    // Completion is the task's id in the done set, written by the worker's batched acks: poll
    // it every millisecond, as the Laneway runner polls its completed counter.
    let mut conn = apalis_redis::connect(url).await?;
    let ready_at = Instant::now() + Duration::from_millis(200);
    let mut ready = false;
    let (completed, end) = loop {
        let completed: u64 = redis::cmd("SCARD").arg(&done_set).query_async(&mut conn).await?;
        let now = Instant::now();
        if !ready && now >= ready_at {
            println!("ready");
            ready = true;
        }
        let first = p.first_ns.load(Ordering::SeqCst);
        let capped = first != u64::MAX && p.base + Duration::from_nanos(first) + cap <= now;
        if completed >= expect || capped {
            break (completed, now);
        }
        if running.is_finished() {
            let outcome = match running.await {
                Ok(Ok(())) => "without an error".to_owned(),
                Ok(Err(e)) => format!("with `{e}`"),
                Err(e) => format!("with a panic: {e}"),
            };
            return Err(format!("the apalis worker stopped after {completed} tasks, {outcome}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let first = p.first_ns.load(Ordering::SeqCst);
    let first = p.base + Duration::from_nanos(if first == u64::MAX { 0 } else { first });
    let latencies = p.latencies_us.lock().map_err(|_| "poisoned")?.clone();
    emit(&json!({
        "completed": completed,
        "elapsed_s": end.saturating_duration_since(first).as_secs_f64(),
        "vm_hwm_kib": vm_hwm_kib(),
        "latencies_us": latencies,
    }));
    running.abort();
    Ok(())
}

/// `name = "…"` followed by `version = "…"` in Cargo.lock.
fn locked(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|at| lock[at + needle.len()..].split('"').next())
        .unwrap_or("unknown")
        .to_owned()
}

fn version() {
    let lock = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));
    emit(&json!({
        "peer": "apalis-redis",
        "version": locked(lock, "apalis-redis"),
        "runtime": format!(
            "apalis {}, redis-rs {}, tokio {}; release build",
            locked(lock, "apalis"),
            locked(lock, "redis"),
            locked(lock, "tokio")
        ),
    }));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `produce-single-ct`: the one-producer W1 on a current-thread runtime, as Laneway's row of
    // the same name; everything else on tokio's default, the multi-thread runtime.
    let current_thread = args.get(1).map(String::as_str) == Some("produce-single-ct");
    let mut builder = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            println!("error cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(&args)) {
        // The runner reads why from this line.
        println!("error {}", e.to_string().replace('\n', " "));
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<(), DynError> {
    let url = args.first().ok_or("usage: laneway-peer-apalis REDIS_URL MODE ARGS…")?.clone();
    let mode = args.get(1).map_or("", String::as_str);
    let a = &args[2.min(args.len())..];
    let secs = |i: usize, what: &str| arg::<f64>(a, i, what).map(Duration::from_secs_f64);
    match mode {
        "version" => version(),
        "produce-single" | "produce-single-ct" => {
            produce(&url, arg(a, 0, "N")?, 1, None, secs(1, "CAP_S")?).await?
        }
        "produce-concurrent" => {
            produce(&url, arg(a, 0, "N")?, arg(a, 1, "PRODUCERS")?, None, secs(2, "CAP_S")?).await?;
        }
        "produce-batch" => {
            produce(&url, arg(a, 0, "N")?, 1, Some(arg(a, 1, "BATCH")?), secs(2, "CAP_S")?).await?;
        }
        "fill" => produce(&url, arg(a, 0, "N")?, 1, Some(1_000), Duration::from_secs(3_600)).await?,
        "latency" => paced(&url, arg(a, 0, "N")?, arg(a, 1, "RATE")?).await?,
        "work" => work(&url, arg(a, 0, "EXPECT")?, arg(a, 1, "CONCURRENCY")?, secs(2, "CAP_S")?).await?,
        other => return Err(format!("unknown mode {other:?}").into()),
    }
    Ok(())
}
