//! Workloads that run in a process of their own, so that its peak RSS is the worker's alone:
//! the runner re-executes itself as `laneway-bench child '<task JSON>'`. A Redis worker child
//! prints `ready` once it has started and gone idle and `done` at its last completion (in
//! either order); every child ends with one `result <report JSON>` line.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{Semaphore, mpsc};

use crate::BenchResult;
use crate::machine::{cpu_seconds, status_kib};
use crate::probe::{Probe, Record, check_lanes};
use crate::stats::us_per_job;
use crate::targets::{self, DRAIN_POLL, IDLE_POLL, StoreKind, Target, wait_until};

/// The jobs of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// `jobs` upload jobs.
    Plain {
        /// How many.
        jobs: u64,
    },
    /// `per_lane` chat jobs in each of `lanes` lanes.
    Lanes {
        /// How many lanes.
        lanes: u64,
        /// Jobs per lane.
        per_lane: u64,
    },
}

impl Shape {
    /// All the jobs.
    #[must_use]
    pub const fn jobs(&self) -> u64 {
        match *self {
            Self::Plain { jobs } => jobs,
            Self::Lanes { lanes, per_lane } => lanes * per_lane,
        }
    }
}

/// What a child does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChildTask {
    /// W2/W4 inline: enqueue `shape` through a running runtime whose handlers wait at a gate,
    /// then open the gate and time the drain.
    InlineDrain {
        /// The job store.
        store: StoreKind,
        /// The jobs.
        shape: Shape,
        /// Workers.
        concurrency: usize,
        /// Producers enqueueing the backlog.
        producers: usize,
        /// Where an SQLite file may go.
        tmp: PathBuf,
    },
    /// The inline baseline: `jobs` items in a tokio mpsc channel, each run as a spawned noop
    /// task, `concurrency` at a time.
    TokioDrain {
        /// How many.
        jobs: u64,
        /// Tasks at once.
        concurrency: usize,
    },
    /// W2/W3/W4 on Redis: a worker process of the Redis backend that waits for `expect`
    /// completions.
    RedisWorker {
        /// The server.
        url: String,
        /// Slots (upload and chat).
        concurrency: usize,
        /// Completions to wait for.
        expect: u64,
        /// What the handler records.
        record: RecordKind,
        /// For `Lanes`: the lanes and jobs per lane to check.
        lanes: Option<(u64, u64)>,
        /// Whether quick slots claim ahead (the backend's default) or wait for each outcome call.
        claim_ahead: bool,
        /// How long to wait at most.
        timeout_s: u64,
    },
    /// W5 inline: enqueue and claim cost with `small` and then `big` jobs queued.
    InlineScale {
        /// The job store.
        store: StoreKind,
        /// The small backlog.
        small: u64,
        /// The big backlog.
        big: u64,
        /// Jobs per probe.
        probe: u64,
        /// Probe runs per backlog.
        runs: usize,
        /// Workers.
        concurrency: usize,
        /// Producers filling the backlog.
        producers: usize,
        /// Where an SQLite file may go.
        tmp: PathBuf,
    },
}

/// [`Record`] as a task names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// Counts only.
    Counts,
    /// Enqueue→start latencies.
    Latency,
    /// Lane events.
    Lanes,
}

impl From<RecordKind> for Record {
    fn from(k: RecordKind) -> Self {
        match k {
            RecordKind::Counts => Self::Counts,
            RecordKind::Latency => Self::Latency,
            RecordKind::Lanes => Self::Lanes,
        }
    }
}

/// W5 at one backlog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalePoint {
    /// Jobs queued.
    pub queued: u64,
    /// Memory the backlog took, per job (bytes): RSS delta (inline) or `used_memory` delta (Redis).
    pub bytes_per_job: f64,
    /// µs per job of a single producer's awaited submits, per run.
    pub enqueue_us: Vec<f64>,
    /// µs per job of the worker draining from the backlog, per run.
    pub claim_us: Vec<f64>,
}

/// What a child reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChildReport {
    /// Jobs completed.
    pub completed: u64,
    /// From the first job's start to the last completion (s).
    pub elapsed_s: f64,
    /// Peak resident set of the child (KiB).
    pub vm_hwm_kib: u64,
    /// CPU time the child spent on the measured part (s).
    pub cpu_s: f64,
    /// Enqueue→start latencies (µs), for W3.
    pub latencies_us: Vec<f64>,
    /// What the W4 lane check found wrong (empty: every lane ran in order, without overlap).
    pub lane_problems: Vec<String>,
    /// W5 points.
    pub scale: Vec<ScalePoint>,
}

/// Runs `task` in this process (the child side) and prints its report.
///
/// # Errors
/// When the workload fails.
pub async fn run_child(task: ChildTask) -> BenchResult<()> {
    let report = match task {
        ChildTask::InlineDrain { store, shape, concurrency, producers, tmp } => {
            inline_drain(store, shape, concurrency, producers, &tmp).await?
        }
        ChildTask::TokioDrain { jobs, concurrency } => tokio_drain(jobs, concurrency).await?,
        ChildTask::RedisWorker { url, concurrency, expect, record, lanes, claim_ahead, timeout_s } => {
            redis_worker(&url, concurrency, claim_ahead, expect, record.into(), lanes, timeout_s).await?
        }
        ChildTask::InlineScale { store, small, big, probe, runs, concurrency, producers, tmp } => {
            inline_scale(store, [small, big], probe, runs, concurrency, producers, &tmp).await?
        }
    };
    println!("result {}", serde_json::to_string(&report)?);
    Ok(())
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

async fn inline_drain(
    store: StoreKind,
    shape: Shape,
    concurrency: usize,
    producers: usize,
    tmp: &std::path::Path,
) -> BenchResult<ChildReport> {
    let gate = Arc::new(Semaphore::new(0));
    let record = if matches!(shape, Shape::Lanes { .. }) { Record::Lanes } else { Record::Counts };
    let probe = Probe::new(record, Some(gate.clone()));
    let target = Arc::new(Target::inline(store, tmp, concurrency, probe.handler()).await?);
    match shape {
        Shape::Plain { jobs } => {
            targets::enqueue_concurrent(&target, jobs, producers, None).await?;
        }
        Shape::Lanes { lanes, per_lane } => {
            targets::enqueue_lanes(&target, lanes, per_lane, producers).await?
        }
    }
    let total = shape.jobs();
    // Opening the gate: every job waiting at it, and every later one, runs at once.
    let cpu = cpu_seconds(None);
    gate.close();
    let done = wait_until("the inline drain", Instant::now() + DRAIN_TIMEOUT, DRAIN_POLL, || {
        target.completed() >= total
    })
    .await?;
    let first = probe.first_start().ok_or("no job started")?;
    let lane_problems = match shape {
        Shape::Lanes { lanes, per_lane } => check_lanes(
            &probe.lane_events(),
            u32::try_from(lanes).unwrap_or(u32::MAX),
            u32::try_from(per_lane).unwrap_or(u32::MAX),
        ),
        Shape::Plain { .. } => Vec::new(),
    };
    let report = ChildReport {
        completed: target.completed(),
        elapsed_s: secs(first, done),
        vm_hwm_kib: status_kib("VmHWM"),
        cpu_s: cpu_seconds(None) - cpu,
        lane_problems,
        ..ChildReport::default()
    };
    target.kill().await;
    Ok(report)
}

async fn tokio_drain(jobs: u64, concurrency: usize) -> BenchResult<ChildReport> {
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    for i in 0..jobs {
        tx.send(i)?;
    }
    drop(tx);
    let probe = Probe::new(Record::Counts, None);
    let cpu = cpu_seconds(None);
    let slots = Arc::new(Semaphore::new(concurrency));
    let runner = probe.clone();
    let dispatcher = tokio::spawn(async move {
        while let Some(_item) = rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let probe = runner.clone();
            tokio::spawn(async move {
                probe.run_noop();
                drop(slot);
            });
        }
    });
    let done =
        wait_until("the tokio drain", Instant::now() + DRAIN_TIMEOUT, DRAIN_POLL, || probe.ended() >= jobs)
            .await?;
    dispatcher.await?;
    let first = probe.first_start().ok_or("no task started")?;
    Ok(ChildReport {
        completed: probe.ended(),
        elapsed_s: secs(first, done),
        vm_hwm_kib: status_kib("VmHWM"),
        cpu_s: cpu_seconds(None) - cpu,
        ..ChildReport::default()
    })
}

async fn redis_worker(
    url: &str,
    concurrency: usize,
    claim_ahead: bool,
    expect: u64,
    record: Record,
    lanes: Option<(u64, u64)>,
    timeout_s: u64,
) -> BenchResult<ChildReport> {
    let probe = Probe::new(record, None);
    let target = Arc::new(Target::redis(url, true, concurrency, claim_ahead, probe.handler())?);
    let cpu = cpu_seconds(None);
    // Watch for the last completion from before the start: jobs queued beforehand (W2, W4) are
    // claimed as soon as the fetch loops run, while `start` is still busy.
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let watched = target.clone();
    let every = if record == Record::Latency { IDLE_POLL } else { DRAIN_POLL };
    let watcher = tokio::spawn(async move {
        let done = wait_until("the Redis worker", deadline, every, || watched.completed() >= expect).await?;
        // CPU at the last completion: `start` may still be busy (its orphan sweep) after it.
        let cpu_done = cpu_seconds(None);
        println!("done");
        Ok::<_, crate::BenchError>((done, cpu_done))
    });
    target.start().await?;
    // Let the fetch loops reach their blocking wait: W3 wants an idle worker.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("ready");
    let (done, cpu_done) = watcher.await??;
    let first = probe.first_start().ok_or("no job started")?;
    let lane_problems = lanes.map_or_else(Vec::new, |(lanes, per_lane)| {
        check_lanes(
            &probe.lane_events(),
            u32::try_from(lanes).unwrap_or(u32::MAX),
            u32::try_from(per_lane).unwrap_or(u32::MAX),
        )
    });
    let report = ChildReport {
        completed: target.completed(),
        elapsed_s: secs(first, done),
        vm_hwm_kib: status_kib("VmHWM"),
        cpu_s: cpu_done - cpu,
        latencies_us: probe.latencies_us(),
        lane_problems,
        scale: Vec::new(),
    };
    target.kill().await;
    Ok(report)
}

// One argument per knob of the task; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn inline_scale(
    store: StoreKind,
    sizes: [u64; 2],
    probe_jobs: u64,
    runs: usize,
    concurrency: usize,
    producers: usize,
    tmp: &std::path::Path,
) -> BenchResult<ChildReport> {
    let mut scale = Vec::new();
    for queued in sizes {
        let gate = Arc::new(Semaphore::new(0));
        let probe = Probe::new(Record::Counts, Some(gate.clone()));
        let target = Arc::new(Target::inline(store, tmp, concurrency, probe.handler()).await?);
        let rss_before = status_kib("VmRSS");
        targets::enqueue_concurrent(&target, queued, producers, None).await?;
        let rss_after = status_kib("VmRSS");
        #[allow(clippy::cast_precision_loss)] // sizes far below 2^53
        let bytes_per_job = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / queued as f64;
        let mut point = ScalePoint { queued, bytes_per_job, ..ScalePoint::default() };
        for _ in 0..runs {
            let (enqueue_us, claim_us) = scale_probe(&target, &probe, &gate, probe_jobs).await?;
            point.enqueue_us.push(enqueue_us);
            point.claim_us.push(claim_us);
        }
        target.kill().await;
        scale.push(point);
    }
    Ok(ChildReport { vm_hwm_kib: status_kib("VmHWM"), scale, ..ChildReport::default() })
}

/// One W5 probe on a target whose handlers wait at `gate`: `jobs` awaited submits, then `jobs`
/// permits and the time until that many more handlers have returned. Both in µs per job.
///
/// # Errors
/// A refused submit, or the drain not finishing in time.
pub async fn scale_probe(
    target: &Target,
    probe: &Probe,
    gate: &Semaphore,
    jobs: u64,
) -> BenchResult<(f64, f64)> {
    let enqueue = probe_enqueue(target, jobs).await?;
    Ok((enqueue, probe_claim(probe, gate, jobs).await?))
}

/// A W5 probe's first half: `jobs` awaited submits, in µs per job.
///
/// # Errors
/// A refused submit.
pub async fn probe_enqueue(target: &Target, jobs: u64) -> BenchResult<f64> {
    let started = Instant::now();
    targets::enqueue_serial(target, jobs, None).await?;
    Ok(us_per_job(started.elapsed().as_secs_f64(), jobs))
}

/// A W5 probe's second half: `jobs` permits of `gate` and the time until that many more handlers
/// have returned, in µs per job.
///
/// # Errors
/// The handlers not returning in time.
pub async fn probe_claim(probe: &Probe, gate: &Semaphore, jobs: u64) -> BenchResult<f64> {
    let ended = probe.ended();
    let opened = Instant::now();
    gate.add_permits(usize::try_from(jobs)?);
    let done =
        wait_until("a W5 claim probe", opened + DRAIN_TIMEOUT, DRAIN_POLL, || probe.ended() >= ended + jobs)
            .await?;
    Ok(us_per_job(done.saturating_duration_since(opened).as_secs_f64(), jobs))
}

/// The status lines a child may print before its result.
const STATUS: &[&str] = &["ready", "done"];

/// A child started by the runner, read line by line.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    what: String,
}

impl ChildProcess {
    /// Starts this executable as a child running `task`.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn spawn(task: &ChildTask, what: &str) -> BenchResult<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("child")
            .arg(serde_json::to_string(task)?)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child without stdout")?;
        Ok(Self { child, lines: BufReader::new(stdout).lines(), what: what.to_owned() })
    }

    async fn next_line(&mut self, deadline: Instant) -> BenchResult<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => {
                let status = self.child.wait().await?;
                Err(format!("{} exited ({status}) without a result", self.what).into())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(format!("{} timed out", self.what).into()),
        }
    }

    /// Waits for the status line `wanted` (`ready` or `done`), skipping the other.
    ///
    /// # Errors
    /// When the child ends, times out, or says something else first.
    pub async fn expect(&mut self, wanted: &str, timeout: Duration) -> BenchResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next_line(deadline).await?;
            if line == wanted {
                return Ok(());
            }
            if !STATUS.contains(&line.as_str()) {
                return Err(format!("{}: expected `{wanted}`, got {line:?}", self.what).into());
            }
        }
    }

    /// Waits for the result (skipping status lines) and for the child to exit.
    ///
    /// # Errors
    /// When the child fails, times out, or prints something else.
    pub async fn result(mut self, timeout: Duration) -> BenchResult<ChildReport> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next_line(deadline).await?;
            if STATUS.contains(&line.as_str()) {
                continue;
            }
            let Some(json) = line.strip_prefix("result ") else {
                return Err(format!("{}: unexpected output {line:?}", self.what).into());
            };
            let report: ChildReport = serde_json::from_str(json)?;
            let status = self.child.wait().await?;
            if !status.success() {
                return Err(format!("{} exited with {status}", self.what).into());
            }
            return Ok(report);
        }
    }
}
