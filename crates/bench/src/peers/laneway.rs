//! Laneway's own column of the peers table: the Redis backend measured with the same workloads,
//! sizes and kind of fresh Redis as the peers, through the pieces `laneway-bench run` uses
//! (`targets`: a producer-only `RedisQueueBackend`, its submits and batches; `child`: a worker process
//! of its own that reports its peak RSS). It reports in the drivers' shapes, so the runner
//! treats every column alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Produce;
use super::driver::{Produced, Worked};
use crate::BenchResult;
use crate::child::{ChildProcess, ChildReport, ChildTask, RecordKind};
use crate::probe::wall_ns;
use crate::targets;

const CHILD_TIMEOUT: Duration = Duration::from_secs(900);

/// W1: up to `jobs` submits, one at a time, from `producers` concurrent tasks, or in
/// `submit_many` batches of [`targets::SUBMIT_BATCH`], stopping at `cap`.
pub(super) async fn produce(
    url: &str,
    jobs: u64,
    how: Produce,
    producers: usize,
    cap: Option<Duration>,
    concurrency: usize,
) -> BenchResult<Produced> {
    if matches!(how, Produce::SingleCurrentThread) {
        // The producer, its connection's driver and its awaits on one thread of their own.
        let url = url.to_owned();
        return targets::on_current_thread("the current-thread Laneway producer", move || async move {
            produce(&url, jobs, Produce::Single, producers, cap, concurrency).await
        });
    }
    let target = Arc::new(targets::redis_producer(url, concurrency).await?);
    let started = Instant::now();
    let deadline = cap.map(|c| started + c);
    let done = match how {
        Produce::Single | Produce::SingleCurrentThread => {
            targets::enqueue_serial(&target, jobs, deadline).await?
        }
        Produce::Concurrent => targets::enqueue_concurrent(&target, jobs, producers, deadline).await?,
        Produce::Batch => targets::enqueue_batches(&target, jobs, deadline).await?,
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    target.kill().await;
    Ok(Produced { jobs: done, elapsed_s })
}

fn worked(report: ChildReport) -> Worked {
    Worked {
        completed: report.completed,
        elapsed_s: report.elapsed_s,
        vm_hwm_kib: report.vm_hwm_kib,
        latencies_us: report.latencies_us,
    }
}

fn worker(url: &str, expect: u64, record: RecordKind, concurrency: usize) -> BenchResult<ChildProcess> {
    let task = ChildTask::RedisWorker {
        url: url.to_owned(),
        concurrency,
        expect,
        record,
        lanes: None,
        claim_ahead: true,
        timeout_s: CHILD_TIMEOUT.as_secs(),
    };
    ChildProcess::spawn(&task, "Laneway worker")
}

/// W2: `jobs` jobs already queued (see [`produce`]), drained by a worker process.
pub(super) async fn drain(url: &str, jobs: u64, concurrency: usize) -> BenchResult<Worked> {
    let report = worker(url, jobs, RecordKind::Counts, concurrency)?.result(CHILD_TIMEOUT).await?;
    Ok(worked(report))
}

/// W3: a worker process that has gone idle, then `jobs` submits at `rate` per second carrying
/// the producer's `wall_ns` as `t`.
pub(super) async fn latency(url: &str, jobs: u64, rate: u64, concurrency: usize) -> BenchResult<Worked> {
    let mut child = worker(url, jobs, RecordKind::Latency, concurrency)?;
    child.expect("ready", Duration::from_secs(30)).await?;
    let target = Arc::new(targets::redis_producer(url, concurrency).await?);
    #[allow(clippy::cast_precision_loss)] // a rate of a few hundred per second
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(period);
    for i in 0..jobs {
        tick.tick().await;
        target.submit_upload(json!({ "i": i, "t": wall_ns() })).await?;
    }
    let report = child.result(CHILD_TIMEOUT).await?;
    target.kill().await;
    Ok(worked(report))
}
