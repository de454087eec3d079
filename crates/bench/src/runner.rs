//! The run: starts its own Redis, measures W1–W5 on the inline backend (memory and SQLite
//! stores) and the Redis backend plus the baselines, each figure over several runs, then writes
//! `results.json` and the tables of BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use queue_core::LaneId;
use redis_harness::RedisServer;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::baseline;
use crate::child::{
    ChildProcess, ChildReport, ChildTask, RecordKind, ScalePoint, Shape, probe_claim, probe_enqueue,
};
use crate::machine::{self, cpu_seconds};
use crate::probe::{Probe, Record, wall_ns};
use crate::progress::{Plan, Progress, Stage};
use crate::redis_stats::{Counters, used_memory};
use crate::report::{self, Params, Results, RoundTrips};
use crate::stats::{Figure, percentile, us_per_job};
use crate::targets::{self, IDLE_POLL, StoreKind, Target, wait_until};
use crate::{BenchError, BenchResult};

/// What `laneway-bench run` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The quick sizes.
    pub quick: bool,
    /// The command that reproduces the run, for the report.
    pub command: String,
    /// Where results.json goes.
    pub results: PathBuf,
    /// The BENCHMARKS.md whose tables are replaced.
    pub markdown: PathBuf,
    /// Scratch space (SQLite files).
    pub tmp: PathBuf,
    /// Only these workloads (`base`, `w1` … `w5`), for development: results.json is written,
    /// BENCHMARKS.md is left alone.
    pub only: Option<Vec<String>>,
}

impl Options {
    fn wants(&self, workload: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|w| w == workload))
    }
}

fn params(quick: bool) -> BenchResult<Params> {
    let (w1_jobs, w2_jobs, w3_jobs, w4_lanes, w5_big, w5_probe) = if quick {
        (5_000, 10_000, 300, 1_000, 100_000, 2_000)
    } else {
        (50_000, 50_000, 2_000, 10_000, 1_000_000, 5_000)
    };
    Ok(Params {
        runs: 3,
        w1_jobs,
        w1_time_cap_s: 5,
        w2_jobs,
        w3_jobs,
        w3_rate: 200,
        w4_lanes,
        w4_per_lane: 5,
        w5_small: 1_000,
        w5_big,
        w5_probe,
        w5_runs: if quick { 3 } else { 5 },
        concurrency: 50,
        producers: 50,
        pipeline_batch: 32,
        pad_bytes: targets::pad_bytes()?,
        redis_config: redis_config()?,
    })
}

/// `LANEWAY_BENCH_REDIS_CONFIG`: settings for the runner's Redis, `name value` pairs separated
/// by `;` (e.g. `hash-max-listpack-value 1024`), each applied by `CONFIG SET` after it starts.
const REDIS_CONFIG_VAR: &str = "LANEWAY_BENCH_REDIS_CONFIG";

fn redis_config() -> BenchResult<Vec<String>> {
    std::env::var(REDIS_CONFIG_VAR).map_or_else(|_| Ok(Vec::new()), |text| parse_redis_config(&text))
}

/// The settings of [`REDIS_CONFIG_VAR`]'s value, each `name value`.
fn parse_redis_config(text: &str) -> BenchResult<Vec<String>> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once(char::is_whitespace) {
            Some((name, value)) if !value.trim().is_empty() => Ok(format!("{name} {}", value.trim())),
            _ => {
                Err(format!("{REDIS_CONFIG_VAR}: expected `name value` pairs separated by `;`, got {s:?}")
                    .into())
            }
        })
        .collect()
}

const CHILD_TIMEOUT: Duration = Duration::from_secs(900);
/// For profiling Redis phase by phase: a command the runner calls as `<hook> begin <pid>` when a
/// phase of the Redis table starts, `<hook> end <pid>` when it ends, and `<hook> phase <pid>
/// <id>` when that phase is recorded as `id` (pid: the runner's `redis-server`). Unset, nothing
/// runs. `crates/bench/scripts/redis-instructions.sh` sets it to count the instructions
/// `redis-server` runs per job, with callgrind.
const PHASE_HOOK: &str = "LANEWAY_BENCH_PHASE_HOOK";

/// The inline columns: id and store.
const INLINE: [(&str, StoreKind); 2] = [("mem", StoreKind::Memory), ("sqlite", StoreKind::Sqlite)];

/// Counters at the start of a phase.
struct Phase {
    counters: Counters,
    redis_cpu: f64,
    own_cpu: f64,
}

struct Bench {
    opts: Options,
    p: Params,
    redis: RedisServer,
    started: Instant,
    figures: BTreeMap<String, Figure>,
    round_trips: Vec<RoundTrips>,
    progress: Arc<Progress>,
}

impl Bench {
    fn say(&self, msg: &str) {
        self.print(msg, false);
    }

    fn print(&self, msg: &str, step: bool) {
        let elapsed = self.started.elapsed();
        self.progress.print(&format!("[bench {:>5.1}s] {msg}", elapsed.as_secs_f64()), elapsed, step);
    }

    /// A step of the run begins (one run of a measurement, a W5 fill or probe): counted for the
    /// progress bar, and logged.
    fn step(&self, stage: Stage, msg: &str) {
        self.progress.begin(stage);
        self.print(msg, true);
    }

    fn put(&mut self, id: &str, figure: Option<Figure>) {
        if let Some(f) = figure {
            self.say(&format!("  = {id}: {} {}", report::format_figure(&f), f.unit));
            self.figures.insert(id.to_owned(), f);
        }
    }

    fn fig(&self, id: &str) -> Option<&Figure> {
        self.figures.get(id)
    }

    /// Figure `a` over figure `b` as `id`, their runs apart ([`Figure::ratio_to`]).
    fn ratio(&mut self, id: &str, a: &str, b: &str) {
        let r = match (self.fig(a), self.fig(b)) {
            (Some(a), Some(b)) => a.ratio_to(b),
            _ => None,
        };
        self.put(id, r);
    }

    /// Figure `a` over figure `b` as `id`, their runs made in pairs ([`Figure::paired_ratio_to`]).
    fn paired_ratio(&mut self, id: &str, a: &str, b: &str) {
        let r = match (self.fig(a), self.fig(b)) {
            (Some(a), Some(b)) => a.paired_ratio_to(b),
            _ => None,
        };
        self.put(id, r);
    }

    /// The workloads asked for, in order, and the ratios between them and the baselines.
    async fn measure(&mut self) -> BenchResult<()> {
        if self.opts.wants("base") {
            self.baselines().await?;
        }
        if self.opts.wants("w1") {
            self.w1().await?;
            self.w1_single_current_thread().await?;
        }
        if self.opts.wants("w2") || self.opts.wants("w4") {
            self.drains().await?;
        }
        self.ratio("ratio.mem_w2_vs_tokio", "w2.mem", "base.tokio_w2");
        self.ratio("ratio.redis_w1_single_vs_lpush", "w1_single.redis", "base.redis_lpush_serial");
        self.ratio(
            "ratio.redis_w1_single_ct_vs_lpush_ct",
            "w1_single_ct.redis",
            "base.redis_lpush_serial_ct",
        );
        self.ratio("ratio.redis_w1_p50_vs_lpush", "w1_p50.redis", "base.redis_lpush_50");
        self.ratio("ratio.redis_w2_vs_pipe", "w2.redis", "base.redis_drain_pipe");
        if self.opts.wants("w3") {
            self.w3().await?;
        }
        self.ratio("ratio.redis_w3_p50_vs_ping", "w3_p50.redis", "base.redis_ping_paced_p50");
        if self.opts.wants("w5") {
            self.w5().await?;
        }
        Ok(())
    }

    fn url(&self) -> String {
        self.redis.url()
    }

    fn flush(&self) {
        self.redis.command(&["FLUSHALL"]);
    }

    fn runs(&self) -> usize {
        self.p.runs
    }

    fn progress(&self, stage: Stage, what: &str, run: usize) {
        self.step(stage, &format!("{what} · run {}/{}", run + 1, self.runs()));
    }

    fn begin(&self) -> Phase {
        self.hook(&["begin"]);
        self.counters()
    }

    /// The counters at the end of a phase.
    fn end(&self) -> Phase {
        let phase = self.counters();
        self.hook(&["end"]);
        phase
    }

    fn counters(&self) -> Phase {
        Phase {
            counters: Counters::read(&self.redis),
            redis_cpu: cpu_seconds(Some(self.redis.pid())),
            own_cpu: cpu_seconds(None),
        }
    }

    /// Runs the [`PHASE_HOOK`] command, if set, as `<hook> <event> <redis-server pid> [args]`.
    /// It runs outside the timed windows (before a phase's clock starts, after it stops).
    fn hook(&self, event: &[&str]) {
        let Some(hook) = std::env::var_os(PHASE_HOOK) else { return };
        let status = std::process::Command::new(&hook)
            .arg(event[0])
            .arg(self.redis.pid().to_string())
            .args(&event[1..])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            self.say(&format!("{PHASE_HOOK} {event:?} failed: {status:?}"));
        }
    }

    /// Records Redis calls and CPU per job between `before` and `after`; `child_cpu_s` is what
    /// a worker process of the phase reported.
    fn track(
        &mut self,
        before: &Phase,
        after: &Phase,
        phase: &str,
        label: &str,
        jobs: u64,
        child_cpu_s: f64,
    ) {
        self.hook(&["phase", phase]);
        let mut t = before.counters.per_job(&after.counters, phase, label, jobs);
        t.redis_cpu_us_per_job = redis_cpu_per_job(before, after, jobs);
        t.client_cpu_us_per_job = us_per_job(after.own_cpu - before.own_cpu + child_cpu_s, jobs);
        self.say(&format!(
            "  {label}: {:.2} round trips/job ({:.2} scripts, {:.2} PINGs, {:.1} commands); CPU µs/job: redis {:.0}, client {:.0}",
            t.reads_per_job,
            t.scripts_per_job,
            t.pings_per_job,
            t.commands_per_job,
            t.redis_cpu_us_per_job,
            t.client_cpu_us_per_job
        ));
        self.round_trips.retain(|r| r.phase != phase);
        self.round_trips.push(t);
    }

    async fn inline_target(&self, store: StoreKind, probe: &Arc<Probe>) -> BenchResult<Arc<Target>> {
        Ok(Arc::new(Target::inline(store, &self.opts.tmp, self.p.concurrency, probe.handler()).await?))
    }

    async fn producer(&self) -> BenchResult<Arc<Target>> {
        Ok(Arc::new(targets::redis_producer(&self.url(), self.p.concurrency).await?))
    }

    // ----- W1 -----

    /// `f` with a note of the runs that W1's time cap ended, at `capped` jobs each.
    fn capped(&self, f: Option<Figure>, capped: &[u64]) -> Option<Figure> {
        if capped.is_empty() {
            return f;
        }
        let shown: Vec<String> = capped.iter().map(u64::to_string).collect();
        let note = format!(
            "the {} s cap ended {} of {} runs, at {} jobs",
            self.p.w1_time_cap_s,
            shown.len(),
            self.p.runs,
            shown.join(", ")
        );
        f.map(|f| f.noted(note))
    }

    async fn w1(&mut self) -> BenchResult<()> {
        let cap = Duration::from_secs(self.p.w1_time_cap_s);
        for (row, shape) in
            [("w1_single", ", 1 producer"), ("w1_p50", ", 50 producers"), ("w1_batch", ", batch API")]
        {
            for col in ["mem", "sqlite", "redis"] {
                let mut samples = Vec::new();
                let mut capped = Vec::new();
                for run in 0..self.runs() {
                    self.progress(Stage::W1, &format!("W1 enqueue{shape} · {col}"), run);
                    let (target, _gate) = if col == "redis" {
                        self.flush();
                        (self.producer().await?, None)
                    } else {
                        let store = if col == "mem" { StoreKind::Memory } else { StoreKind::Sqlite };
                        // The workers wait at a closed gate: W1 measures the enqueue alone.
                        let gate = Arc::new(Semaphore::new(0));
                        let probe = Probe::new(Record::Counts, Some(gate.clone()));
                        (self.inline_target(store, &probe).await?, Some(gate))
                    };
                    let before = (col == "redis").then(|| self.begin());
                    let started = Instant::now();
                    let deadline = Some(started + cap);
                    let n = match row {
                        "w1_p50" => {
                            targets::enqueue_concurrent(&target, self.p.w1_jobs, self.p.producers, deadline)
                                .await?
                        }
                        "w1_batch" => targets::enqueue_batches(&target, self.p.w1_jobs, deadline).await?,
                        _ => targets::enqueue_serial(&target, self.p.w1_jobs, deadline).await?,
                    };
                    #[allow(clippy::cast_precision_loss)]
                    samples.push(n as f64 / started.elapsed().as_secs_f64());
                    if n < self.p.w1_jobs {
                        capped.push(n);
                    }
                    if let Some(before) = before
                        && run == 0
                    {
                        let label = format!("W1 enqueue{shape}");
                        let after = self.end();
                        self.track(&before, &after, &format!("{row}.redis"), &label, n, 0.0);
                    }
                    target.kill().await;
                }
                let f = self.capped(Figure::of("jobs/s", samples), &capped);
                self.put(&format!("{row}.{col}"), f);
            }
        }
        Ok(())
    }

    /// W1 from one producer, awaited one at a time, on a current-thread runtime in a thread of
    /// its own: the producer's task and its connection's driver on one thread, without the
    /// multi-thread runtime's hand-offs between its workers (the shape of
    /// `base.redis_lpush_serial_ct`). Redis only: the inline backends run their workers in the
    /// producer's runtime.
    async fn w1_single_current_thread(&mut self) -> BenchResult<()> {
        let cap = Duration::from_secs(self.p.w1_time_cap_s);
        let mut samples = Vec::new();
        let mut capped = Vec::new();
        for run in 0..self.runs() {
            self.progress(Stage::W1, "W1 enqueue, 1 producer, current-thread runtime · redis", run);
            self.flush();
            let before = self.begin();
            let (url, concurrency, total) = (self.url(), self.p.concurrency, self.p.w1_jobs);
            let (n, secs) =
                targets::on_current_thread("the current-thread W1 producer", move || async move {
                    let target = targets::redis_producer(&url, concurrency).await?;
                    let started = Instant::now();
                    let n = targets::enqueue_serial(&target, total, Some(started + cap)).await?;
                    let secs = started.elapsed().as_secs_f64();
                    target.kill().await;
                    Ok((n, secs))
                })?;
            #[allow(clippy::cast_precision_loss)]
            samples.push(n as f64 / secs);
            if n < total {
                capped.push(n);
            }
            if run == 0 {
                let after = self.end();
                let label = "W1 enqueue, 1 producer, current-thread runtime";
                self.track(&before, &after, "w1_single_ct.redis", label, n, 0.0);
            }
        }
        let f = self.capped(Figure::of("jobs/s", samples), &capped);
        self.put("w1_single_ct.redis", f);
        Ok(())
    }

    // ----- W2 -----

    fn put_drain(&mut self, row: &str, col: &str, reports: &[ChildReport]) {
        for r in reports {
            self.say(&format!(
                "  worker: {} jobs in {:.3} s, {:.2} s CPU, peak RSS {} KiB",
                r.completed, r.elapsed_s, r.cpu_s, r.vm_hwm_kib
            ));
        }
        #[allow(clippy::cast_precision_loss)]
        let rss = reports.iter().map(|r| r.vm_hwm_kib as f64 / 1024.0).collect();
        #[allow(clippy::cast_precision_loss)]
        let cpu = reports.iter().map(|r| r.cpu_s * 1e6 / r.completed.max(1) as f64).collect();
        self.put_rate(&format!("{row}.{col}"), reports);
        if row == "w2" {
            self.put(&format!("w2_rss.{col}"), Figure::of("MiB", rss));
        }
        self.put(&format!("{row}_cpu.{col}"), Figure::of("µs", cpu));
    }

    /// One drain of `shape` on the embedded backend: a child process (`what`) that enqueues
    /// behind a closed gate, then drains.
    async fn inline_drain(&self, store: StoreKind, shape: Shape, what: &str) -> BenchResult<ChildReport> {
        let task = ChildTask::InlineDrain {
            store,
            shape,
            concurrency: self.p.concurrency,
            producers: self.p.producers,
            tmp: self.opts.tmp.clone(),
        };
        ChildProcess::spawn(&task, what)?.result(CHILD_TIMEOUT).await
    }

    /// One W2 drain on the embedded backend.
    async fn w2_inline(&self, col: &str, store: StoreKind, run: usize) -> BenchResult<ChildReport> {
        self.progress(Stage::Drains, &format!("W2 drain · {col} ({} jobs)", self.p.w2_jobs), run);
        self.inline_drain(store, Shape::Plain { jobs: self.p.w2_jobs }, "inline W2 worker").await
    }

    /// One W2 drain on Redis: the runner enqueues, a worker process drains. `ahead` false runs
    /// the slots that wait for each outcome call (`claim_ahead_below: 0`). Returns the worker's
    /// report and Redis's CPU per drained job (µs).
    async fn w2_redis(&mut self, run: usize, ahead: bool) -> BenchResult<(ChildReport, f64)> {
        let jobs = self.p.w2_jobs;
        let shape = if ahead { "" } else { ", claiming ahead off" };
        self.progress(Stage::Drains, &format!("W2 drain · redis ({jobs} jobs{shape})"), run);
        self.flush();
        let producer = self.producer().await?;
        targets::enqueue_concurrent(&producer, jobs, self.p.producers, None).await?;
        producer.kill().await;
        let before = self.begin();
        let mut worker = self.redis_worker(jobs, RecordKind::Counts, None, ahead)?;
        worker.expect("done", CHILD_TIMEOUT).await?;
        let after = self.end();
        let report = worker.result(CHILD_TIMEOUT).await?;
        if run == 0 && ahead {
            self.track(&before, &after, "w2.redis", "W2 drain", jobs, report.cpu_s);
        }
        Ok((report, redis_cpu_per_job(&before, &after, jobs)))
    }

    /// Jobs/s of each drain in `reports`.
    fn put_rate(&mut self, id: &str, reports: &[ChildReport]) {
        #[allow(clippy::cast_precision_loss)]
        let rates = reports.iter().map(|r| r.completed as f64 / r.elapsed_s).collect();
        self.put(id, Figure::of("jobs/s", rates));
    }

    /// A Redis worker process; `claim_ahead` false runs the slots of the
    /// `claim_ahead_below: 0` rows, which wait for each outcome call.
    fn redis_worker(
        &self,
        expect: u64,
        record: RecordKind,
        lanes: Option<(u64, u64)>,
        claim_ahead: bool,
    ) -> BenchResult<ChildProcess> {
        let task = ChildTask::RedisWorker {
            url: self.url(),
            concurrency: self.p.concurrency,
            expect,
            record,
            lanes,
            claim_ahead,
            timeout_s: CHILD_TIMEOUT.as_secs(),
        };
        ChildProcess::spawn(&task, "Redis worker")
    }

    // ----- W3 -----

    /// W3's steady submits: upload jobs, or with `chat`, chat jobs each into a lane of its own
    /// (named after `chat` and the job's number), so that each claims an idle lane.
    async fn paced(&self, target: &Target, chat: Option<&str>) -> BenchResult<()> {
        let period = Duration::from_secs_f64(1.0 / self.p.w3_rate as f64);
        let mut tick = tokio::time::interval(period);
        for i in 0..self.p.w3_jobs {
            tick.tick().await;
            match chat {
                None => target.submit_upload(json!({ "i": i, "t": wall_ns() })).await?,
                Some(lanes) => {
                    let lane = LaneId::new(format!("{lanes}-{i}"))?;
                    target.submit_chat(&lane, json!({ "i": i, "t": wall_ns() })).await?;
                }
            }
        }
        Ok(())
    }

    /// The p50 and p99 of `runs` as `<row>_p50.<col>` and `<row>_p99.<col>`.
    fn put_latency(&mut self, row: &str, col: &str, runs: &[Vec<f64>]) {
        self.put(&format!("{row}_p50.{col}"), Figure::of("ms", percentile_ms(runs, 50.0)));
        self.put(&format!("{row}_p99.{col}"), Figure::of("ms", percentile_ms(runs, 99.0)));
    }

    async fn w3(&mut self) -> BenchResult<()> {
        let jobs = self.p.w3_jobs;
        for (col, store) in INLINE {
            let mut runs = Vec::new();
            for run in 0..self.runs() {
                self.progress(
                    Stage::W3,
                    &format!("W3 latency · {col} ({jobs} jobs at {}/s)", self.p.w3_rate),
                    run,
                );
                let probe = Probe::new(Record::Latency, None);
                let target = self.inline_target(store, &probe).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.paced(&target, None).await?;
                let deadline = Instant::now() + Duration::from_secs(60);
                wait_until("W3 starts", deadline, IDLE_POLL, || probe.latency_count() as u64 >= jobs).await?;
                runs.push(probe.latencies_us());
                target.kill().await;
            }
            self.put_latency("w3", col, &runs);
        }
        // On Redis, with upload jobs, then with chat messages each into an idle lane: what a
        // conversation's next message waits for before its handler starts.
        for (chat, row, what, label) in [
            (None, "w3", "W3 latency", "W3 enqueue + run, idle worker"),
            (Some("w3c"), "w3c", "W3 chat latency", "W3 chat job into an idle lane + run, idle worker"),
        ] {
            let (mut runs, mut rss) = (Vec::new(), Vec::new());
            for run in 0..self.runs() {
                self.progress(
                    Stage::W3,
                    &format!("{what} · redis ({jobs} jobs at {}/s)", self.p.w3_rate),
                    run,
                );
                self.flush();
                let mut worker = self.redis_worker(jobs, RecordKind::Latency, None, true)?;
                worker.expect("ready", Duration::from_secs(30)).await?;
                let producer = self.producer().await?;
                let before = self.begin();
                self.paced(&producer, chat.map(|lanes| format!("{lanes}-{run}")).as_deref()).await?;
                worker.expect("done", CHILD_TIMEOUT).await?;
                let after = self.end();
                let report = worker.result(CHILD_TIMEOUT).await?;
                if run == 0 {
                    self.track(&before, &after, &format!("{row}.redis"), label, jobs, report.cpu_s);
                }
                producer.kill().await;
                rss.push(report.vm_hwm_kib as f64 / 1024.0);
                runs.push(report.latencies_us);
            }
            self.put_latency(row, "redis", &runs);
            if chat.is_none() {
                self.put("w3_rss.redis", Figure::of("MiB", rss));
            }
        }
        Ok(())
    }

    // ----- W4 -----

    /// One W4 drain on the embedded backend; fails when a lane broke its order.
    async fn w4_inline(&self, col: &str, store: StoreKind, run: usize) -> BenchResult<ChildReport> {
        let (lanes, per_lane) = (self.p.w4_lanes, self.p.w4_per_lane);
        self.progress(Stage::Drains, &format!("W4 lanes · {col} ({lanes} lanes × {per_lane})"), run);
        let report = self.inline_drain(store, Shape::Lanes { lanes, per_lane }, "inline W4 worker").await?;
        lanes_in_order(col, &report)?;
        Ok(report)
    }

    /// One W4 drain on Redis (as [`Self::w2_redis`], with chat jobs in lanes); fails when a lane
    /// broke its order.
    async fn w4_redis(&mut self, run: usize, ahead: bool) -> BenchResult<(ChildReport, f64)> {
        let (lanes, per_lane) = (self.p.w4_lanes, self.p.w4_per_lane);
        let jobs = lanes * per_lane;
        let shape = if ahead { "" } else { ", claiming ahead off" };
        self.progress(Stage::Drains, &format!("W4 lanes · redis ({lanes} lanes × {per_lane}{shape})"), run);
        self.flush();
        let producer = self.producer().await?;
        let before = self.begin();
        targets::enqueue_lanes(&producer, lanes, per_lane, self.p.producers).await?;
        if run == 0 && ahead {
            let after = self.end();
            self.track(
                &before,
                &after,
                "w4_enqueue.redis",
                "W4 enqueue of chat jobs, 50 producers",
                jobs,
                0.0,
            );
        }
        producer.kill().await;
        let before = self.begin();
        let mut worker = self.redis_worker(jobs, RecordKind::Lanes, Some((lanes, per_lane)), ahead)?;
        worker.expect("done", CHILD_TIMEOUT).await?;
        let after = self.end();
        let report = worker.result(CHILD_TIMEOUT).await?;
        if run == 0 && ahead {
            self.track(&before, &after, "w4.redis", "W4 drain of chat jobs in lanes", jobs, report.cpu_s);
        }
        lanes_in_order("redis", &report)?;
        Ok((report, redis_cpu_per_job(&before, &after, jobs)))
    }

    /// W2 and W4, each wanted one, per column: with both, each W4 drain runs right after a W2
    /// drain on the same backend, and W4 / W2 is the median of these pairs' ratios, so that a
    /// shared machine's drift between the two workloads does not enter the ratio (run apart,
    /// minutes lay between a column's W2 and W4 drains).
    async fn drains(&mut self) -> BenchResult<()> {
        let (w2, w4) = (self.opts.wants("w2"), self.opts.wants("w4"));
        let lanes = self.p.w4_lanes;
        let mut columns = Vec::new();
        for (col, store) in INLINE {
            let (mut r2, mut r4) = (Vec::new(), Vec::new());
            for run in 0..self.runs() {
                if w2 {
                    r2.push(self.w2_inline(col, store, run).await?);
                }
                if w4 {
                    r4.push(self.w4_inline(col, store, run).await?);
                }
            }
            columns.push((col, r2, r4));
        }
        // The backend's default (quick slots claim ahead), then slots that wait for each outcome
        // call, as they all did before claiming ahead (`claim_ahead_below: 0`).
        for ahead in [true, false] {
            let (mut r2, mut r4) = (Vec::new(), Vec::new());
            let (mut c2, mut c4) = (Vec::new(), Vec::new());
            for run in 0..self.runs() {
                if w2 {
                    let (report, cpu) = self.w2_redis(run, ahead).await?;
                    r2.push(report);
                    c2.push(cpu);
                }
                if w4 {
                    let (report, cpu) = self.w4_redis(run, ahead).await?;
                    r4.push(report);
                    c4.push(cpu);
                }
            }
            if ahead {
                // Redis's CPU per job, drain by drain: a drain that keeps Redis busy runs at about
                // its inverse, which the machine's load moves too, if less than the rate.
                self.put("w2_redis_cpu.redis", Figure::of("µs", c2));
                self.put("w4_redis_cpu.redis", Figure::of("µs", c4));
                self.paired_ratio("w4_cpu_ratio.redis", "w2_redis_cpu.redis", "w4_redis_cpu.redis");
                columns.push(("redis", r2, r4));
            } else {
                self.put_rate("w2_wait.redis", &r2);
                self.put_rate("w4_wait.redis", &r4);
            }
        }
        for (col, r2, r4) in columns {
            if w2 {
                self.put_drain("w2", col, &r2);
            }
            if w4 {
                self.put_drain("w4", col, &r4);
                self.say(&format!(
                    "  every one of {lanes} lanes ran in order without overlap, in every run ({col})"
                ));
            }
            self.paired_ratio(&format!("w4_ratio.{col}"), &format!("w4.{col}"), &format!("w2.{col}"));
        }
        Ok(())
    }

    // ----- W5 -----

    fn put_scale(&mut self, col: &str, points: &[ScalePoint], memory_note: &str) {
        let [small, big] = points else { return };
        let paired =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(big, small)| big / small).collect::<Vec<_>>();
        let note = format!(
            "µs/job at {} queued: enqueue {:.1}, claim {:.1}; at {}: enqueue {:.1}, claim {:.1} (medians)",
            small.queued,
            crate::stats::median(&small.enqueue_us).unwrap_or(0.0),
            crate::stats::median(&small.claim_us).unwrap_or(0.0),
            big.queued,
            crate::stats::median(&big.enqueue_us).unwrap_or(0.0),
            crate::stats::median(&big.claim_us).unwrap_or(0.0),
        );
        self.put(
            &format!("w5_enqueue_ratio.{col}"),
            Figure::of("ratio", paired(&big.enqueue_us, &small.enqueue_us)).map(|f| f.noted(note.clone())),
        );
        self.put(
            &format!("w5_claim_ratio.{col}"),
            Figure::of("ratio", paired(&big.claim_us, &small.claim_us)).map(|f| f.noted(note)),
        );
        self.put(
            &format!("w5_mem.{col}"),
            Figure::of("bytes", vec![big.bytes_per_job])
                .map(|f| f.noted(format!("{memory_note}, {} jobs queued, one fill", big.queued))),
        );
    }

    async fn w5(&mut self) -> BenchResult<()> {
        let (small, big, probe_jobs) = (self.p.w5_small, self.p.w5_big, self.p.w5_probe);
        for (col, store) in INLINE {
            self.step(
                Stage::W5,
                &format!(
                    "W5 scale · {col}: {small} then {big} queued, {} probes of {probe_jobs}",
                    self.p.w5_runs
                ),
            );
            let task = ChildTask::InlineScale {
                store,
                small,
                big,
                probe: probe_jobs,
                runs: self.p.w5_runs,
                concurrency: self.p.concurrency,
                producers: self.p.producers,
                tmp: self.opts.tmp.clone(),
            };
            let report = ChildProcess::spawn(&task, "inline W5")?.result(CHILD_TIMEOUT).await?;
            self.put_scale(col, &report.scale, "RSS delta of the process");
        }
        let mut points = Vec::new();
        let mut starts = Vec::new();
        for queued in [small, big] {
            self.step(Stage::W5, &format!("W5 scale · redis: filling {queued} jobs"));
            self.flush();
            let memory_before = used_memory(&self.redis);
            let producer = self.producer().await?;
            targets::enqueue_concurrent(&producer, queued, self.p.producers, None).await?;
            let memory_after = used_memory(&self.redis);
            #[allow(clippy::cast_precision_loss)]
            let bytes_per_job = memory_after.saturating_sub(memory_before) as f64 / queued as f64;
            let gate = Arc::new(Semaphore::new(0));
            let probe = Probe::new(Record::Counts, Some(gate.clone()));
            let worker = Target::redis(&self.url(), true, self.p.concurrency, true, probe.handler())?;
            let starting = Instant::now();
            worker.start().await?;
            starts.push((queued, starting.elapsed().as_secs_f64()));
            // Let the worker take its first jobs (they wait at the gate) and go idle.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut point = ScalePoint { queued, bytes_per_job, ..ScalePoint::default() };
            #[allow(clippy::cast_precision_loss)] // sizes far below 2^53
            let shown = report::thousands(queued as f64);
            for run in 0..self.p.w5_runs {
                self.step(
                    Stage::W5,
                    &format!("W5 probe · redis at {queued} queued · run {}/{}", run + 1, self.p.w5_runs),
                );
                // The first probe at each backlog is also counted in the calls table (round trips,
                // commands and Redis's CPU per job), which an O(n) step would show where the wall
                // time of one producer's awaited calls is mostly round trips.
                let counted = (run == 0).then(|| self.begin());
                let enqueue_us = probe_enqueue(&producer, probe_jobs).await?;
                if let Some(before) = counted {
                    let after = self.end();
                    let label = format!("W5 enqueue probe, {shown} queued: awaited submits");
                    self.track(
                        &before,
                        &after,
                        &format!("w5_enqueue_{queued}.redis"),
                        &label,
                        probe_jobs,
                        0.0,
                    );
                }
                let counted = (run == 0).then(|| self.begin());
                let claim_us = probe_claim(&probe, &gate, probe_jobs).await?;
                if let Some(before) = counted {
                    let after = self.end();
                    let label = format!("W5 claim probe, {shown} queued: claims and ends");
                    self.track(&before, &after, &format!("w5_claim_{queued}.redis"), &label, probe_jobs, 0.0);
                }
                point.enqueue_us.push(enqueue_us);
                point.claim_us.push(claim_us);
            }
            worker.kill().await;
            producer.kill().await;
            points.push(point);
        }
        self.put_scale("redis", &points, "Redis used_memory delta");
        if let [(small, small_s), (big, big_s)] = starts[..] {
            let note = format!(
                "`start` of a worker process (it sweeps every pending job for orphans before it returns): \
                 {small_s:.3} s with {small} queued, {big_s:.3} s with {big}; one start each"
            );
            self.put("w5_worker_start.redis", Figure::of("s", vec![big_s]).map(|f| f.noted(note)));
        }
        self.flush();
        Ok(())
    }

    // ----- baselines -----

    async fn baselines(&mut self) -> BenchResult<()> {
        let jobs = self.p.w2_jobs;
        let mut samples = Vec::new();
        for run in 0..self.runs() {
            self.progress(Stage::Baselines, "baseline · bare tokio drain", run);
            let task = ChildTask::TokioDrain { jobs, concurrency: self.p.concurrency };
            let r = ChildProcess::spawn(&task, "tokio baseline")?.result(CHILD_TIMEOUT).await?;
            #[allow(clippy::cast_precision_loss)]
            samples.push(r.completed as f64 / r.elapsed_s);
        }
        self.put("base.tokio_w2", Figure::of("jobs/s", samples));

        let url = self.url();
        let cap = Duration::from_secs(self.p.w1_time_cap_s);
        let (mut serial, mut serial_ct, mut fifty, mut enqueue, mut drain) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..self.runs() {
            self.progress(Stage::Baselines, "baseline · redis-rs LPUSH / LMOVE / LREM", run);
            self.flush();
            serial.push(baseline::lpush_serial(&url, self.p.w1_jobs, Instant::now() + cap).await?);
            self.flush();
            // The same on a current-thread runtime: what the multi-thread runtime's hand-offs cost.
            let (url_ct, total) = (url.clone(), self.p.w1_jobs);
            serial_ct.push(targets::on_current_thread("the current-thread baseline", move || async move {
                baseline::lpush_serial(&url_ct, total, Instant::now() + cap).await
            })?);
            self.flush();
            fifty.push(
                baseline::lpush_concurrent(&url, self.p.w1_jobs, self.p.producers, Instant::now() + cap)
                    .await?,
            );
            self.flush();
            enqueue.push(baseline::enqueue_pipelined(&url, jobs, self.p.pipeline_batch).await?);
            let before = self.begin();
            let (n, rate) = baseline::drain_pipelined(&url, self.p.pipeline_batch, 2).await?;
            if n != jobs {
                return Err(format!("the pipelined baseline drained {n} of {jobs} jobs").into());
            }
            if run == 0 {
                let after = self.end();
                self.track(
                    &before,
                    &after,
                    "base.redis_drain_pipe",
                    "baseline drain: LMOVE + LREM, pipelines of 32",
                    jobs,
                    0.0,
                );
            }
            drain.push(rate);
        }
        self.put("base.redis_lpush_serial", Figure::of("ops/s", serial));
        self.put("base.redis_lpush_serial_ct", Figure::of("ops/s", serial_ct));
        self.put("base.redis_lpush_50", Figure::of("ops/s", fifty));
        self.put("base.redis_enqueue_pipe", Figure::of("jobs/s", enqueue));
        self.put("base.redis_drain_pipe", Figure::of("jobs/s", drain));

        // An idle client's round trip at W3's pace: half the W3 jobs' count, per run.
        let pings = (self.p.w3_jobs / 2).max(1);
        let mut paced = Vec::new();
        for run in 0..self.runs() {
            self.progress(Stage::Baselines, &format!("baseline · PING at {}/s", self.p.w3_rate), run);
            paced.push(baseline::ping_paced(&url, pings, self.p.w3_rate).await?);
        }
        self.put("base.redis_ping_paced_p50", Figure::of("ms", percentile_ms(&paced, 50.0)));
        self.put("base.redis_ping_paced_p99", Figure::of("ms", percentile_ms(&paced, 99.0)));

        let port = self.redis.port();
        let script = "return redis.call('LPUSH', KEYS[1], ARGV[1])";
        let sha = self.redis.command(&["SCRIPT", "LOAD", script]);
        let requests = if self.opts.quick { 200_000 } else { 1_000_000 };
        let (mut ping1, mut p1, mut p16, mut eval16) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..self.runs() {
            self.progress(Stage::Baselines, "baseline · redis-benchmark", run);
            ping1.push(baseline::redis_benchmark(port, 1, requests / 10, 1, &["-t", "ping_mbulk"])?);
            self.flush();
            p1.push(baseline::redis_benchmark(port, 50, requests / 4, 1, &["-t", "lpush"])?);
            self.flush();
            p16.push(baseline::redis_benchmark(port, 50, requests, 16, &["-t", "lpush"])?);
            self.flush();
            eval16.push(baseline::redis_benchmark(
                port,
                50,
                requests,
                16,
                &["EVALSHA", &sha, "1", "bench:rb", "x"],
            )?);
        }
        self.flush();
        self.put("base.rb_ping_c1", Figure::of("ops/s", ping1));
        self.put("base.rb_lpush_p1", Figure::of("ops/s", p1));
        self.put("base.rb_lpush_p16", Figure::of("ops/s", p16));
        self.put("base.rb_evalsha_p16", Figure::of("ops/s", eval16));
        Ok(())
    }
}

/// The `p`th percentile of each run's µs samples, in ms.
/// Redis's CPU per job (µs) between two phase readings.
fn redis_cpu_per_job(before: &Phase, after: &Phase, jobs: u64) -> f64 {
    us_per_job(after.redis_cpu - before.redis_cpu, jobs)
}

/// Fails the run when a W4 drain's lanes broke their order.
fn lanes_in_order(col: &str, report: &ChildReport) -> BenchResult<()> {
    if report.lane_problems.is_empty() {
        Ok(())
    } else {
        Err(format!("W4 on {col}: lanes broke their order: {}", report.lane_problems.join("; ")).into())
    }
}

fn percentile_ms(runs: &[Vec<f64>], p: f64) -> Vec<f64> {
    runs.iter().filter_map(|l| percentile(l, p)).map(|us| us / 1_000.0).collect()
}

/// Runs every workload and writes the results.
///
/// # Errors
/// When a workload fails (a refused submit, a child that dies, lanes out of order) or the files
/// cannot be written.
pub async fn run(opts: Options) -> BenchResult<()> {
    let started = Instant::now();
    let p = params(opts.quick)?;
    let machine = machine::describe();
    eprintln!(
        "[bench] {} on {} × {} · {} · redis {}",
        if opts.quick { "quick run" } else { "full run" },
        machine.nproc,
        machine.cpu_model,
        machine.rustc,
        machine.redis_server
    );
    std::fs::create_dir_all(&opts.tmp)?;
    let redis = RedisServer::start();
    for setting in &p.redis_config {
        let (name, value) = setting.split_once(' ').unwrap_or((setting, ""));
        let answer = redis.command(&["CONFIG", "SET", name, value]);
        if answer != "OK" {
            return Err(format!("{REDIS_CONFIG_VAR}: CONFIG SET {setting} answered {answer}").into());
        }
    }
    let plan = Plan::new(
        u32::try_from(p.runs).unwrap_or(u32::MAX),
        u32::try_from(p.w5_runs).unwrap_or(u32::MAX),
        |w| opts.wants(w),
    );
    let progress = Arc::new(Progress::new(plan));
    // On a terminal, the bar's clock moves once a second, also through a step that prints
    // nothing for a while (a W3 run, a W5 fill). Nothing of the sort runs for a log.
    let ticker = progress.on_terminal().then(|| {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                progress.redraw(started.elapsed());
            }
        })
    });
    let mut bench =
        Bench { opts, p, redis, started, figures: BTreeMap::new(), round_trips: Vec::new(), progress };
    bench.say(&format!("redis-server on {}", bench.redis.addr()));
    let measured = bench.measure().await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if measured.is_ok()
        && let Some((planned, taken)) = bench.progress.mismatch()
    {
        bench.say(&format!(
            "progress: {planned} steps were planned and {taken} taken (progress.rs's Plan is out of date)"
        ));
    }
    // Off the screen before the tables, or before the error that ended the run.
    bench.progress.finish();
    measured?;
    let Bench { opts, p, figures, round_trips, .. } = bench;
    let machine = crate::report::Machine { load_at_end: machine::load_average(), ..machine };
    let bars = report::evaluate_bars(&figures, p.w5_big);
    let results = Results {
        schema: report::SCHEMA,
        command: opts.command.clone(),
        quick: opts.quick,
        finished_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        duration_s: started.elapsed().as_secs_f64(),
        machine,
        params: p,
        figures,
        round_trips,
        bars,
        not_measured: vec![
            "Peers (BullMQ, RQ, apalis): `cargo xtask bench-peers` measures them with Laneway's Redis W1–W3 in \
             a run of their own (see Peers below)."
                .to_owned(),
        ],
    };
    write_outputs(&opts, &results)?;
    Ok(())
}

fn write_outputs(opts: &Options, results: &Results) -> BenchResult<()> {
    if let Some(dir) = opts.results.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.results, serde_json::to_string_pretty(results)? + "\n")?;
    if opts.only.is_some() {
        println!("{}", report::render_markdown(results));
        eprintln!("[bench] partial run (--only): wrote {}; BENCHMARKS.md left alone", opts.results.display());
        return Ok(());
    }
    write_markdown(opts, results)?;
    eprintln!(
        "[bench] done in {:.0} s: wrote {} and the tables of {}",
        results.duration_s,
        opts.results.display(),
        opts.markdown.display()
    );
    Ok(())
}

/// Replaces the tables of `opts.markdown` with those of `results` (creating the file, with its
/// markers, if there is none) and prints them.
///
/// # Errors
/// When the file cannot be read or written, or its markers are broken.
pub fn write_markdown(opts: &Options, results: &Results) -> BenchResult<()> {
    let markdown = report::render_markdown(results);
    let doc = match std::fs::read_to_string(&opts.markdown) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("# Benchmarks\n\n{}\n{}\n", report::BEGIN_MARKER, report::END_MARKER)
        }
        Err(e) => return Err(e.into()),
    };
    let updated = report::replace_between_markers(&doc, &markdown)
        .map_err(|e| -> BenchError { format!("{}: {e}", opts.markdown.display()).into() })?;
    std::fs::write(&opts.markdown, updated)?;
    println!("{markdown}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_settings_are_name_value_pairs_separated_by_semicolons() {
        let read = parse_redis_config(" hash-max-listpack-value  1024 ;; maxmemory-policy noeviction ")
            .expect("read");
        assert_eq!(read, ["hash-max-listpack-value 1024", "maxmemory-policy noeviction"]);
        assert!(parse_redis_config("").expect("empty").is_empty());
        let e = parse_redis_config("hash-max-listpack-value").expect_err("no value").to_string();
        assert!(e.starts_with("LANEWAY_BENCH_REDIS_CONFIG: expected `name value` pairs"), "{e}");
    }
}
