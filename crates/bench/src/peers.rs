//! `laneway-bench peers`: W1–W3 of issue 5 on Laneway's Redis backend and on its peers
//! (BullMQ, apalis-redis, RQ), same machine, same kind of fresh Redis, same run.
//!
//! The peers are installed by `cargo xtask bench-peers` into `target/peers/` at the versions of
//! [`pins`]; each is driven by a small script of ours (`crates/bench/peers/`, see [`driver`]).
//! Laneway's column goes through the pieces `laneway-bench run` uses ([`laneway`]). The
//! columns take turns round by round, each on a `redis-server` of its own started for the
//! round; the figures go to `peers.json` and to the table between `<!-- peers:begin -->` and
//! `<!-- peers:end -->` in BENCHMARKS.md ([`report`]).

mod driver;
mod laneway;
pub mod pins;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis_harness::RedisServer;

use self::driver::{Driver, PEERS, Produced, Version, Worked};
use self::pins::Pin;
use self::report::{Column, LANEWAY, PeerParams, PeerResults};
use crate::machine;
use crate::report::{format_figure, format_value};
use crate::stats::{Figure, percentile};
use crate::{BenchError, BenchResult};

const USAGE: &str = "\
Usage: laneway-bench peers [--quick] [--command CMD] [--results PATH] [--markdown PATH]
                           [--peers-dir DIR] [--drivers DIR] [--only laneway,bullmq,apalis,rq]
       laneway-bench peers-render [--results PATH] [--markdown PATH]   (the table from a peers.json)
       (normally through `cargo xtask bench-peers [--quick]`, which installs the peers first;
       --only is for development and leaves BENCHMARKS.md alone)";

/// What `laneway-bench peers` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The quick sizes.
    pub quick: bool,
    /// The command that reproduces the run, for the report.
    pub command: String,
    /// Where peers.json goes.
    pub results: PathBuf,
    /// The BENCHMARKS.md whose peers' table is replaced.
    pub markdown: PathBuf,
    /// Where xtask installed the peers.
    pub peers_dir: PathBuf,
    /// Where our driver scripts are (`crates/bench/peers`).
    pub drivers: PathBuf,
    /// Only these columns, for development: peers.json is written, BENCHMARKS.md left alone.
    pub only: Option<Vec<String>>,
}

/// Parses the arguments of `peers` and `peers-render`.
///
/// # Errors
/// An unknown argument or a missing value.
pub fn parse_args(args: &[String]) -> BenchResult<Options> {
    let mut opts = Options {
        quick: false,
        command: "laneway-bench peers".to_owned(),
        results: PathBuf::from("target/bench/peers.json"),
        markdown: PathBuf::from("BENCHMARKS.md"),
        peers_dir: PathBuf::from("target/peers"),
        drivers: PathBuf::from("crates/bench/peers"),
        only: None,
    };
    crate::parse_flags(args, USAGE, |flag, value| {
        match flag {
            "--quick" => opts.quick = true,
            "--command" => opts.command = value()?,
            "--results" => opts.results = value()?.into(),
            "--markdown" => opts.markdown = value()?.into(),
            "--peers-dir" => opts.peers_dir = value()?.into(),
            "--drivers" => opts.drivers = value()?.into(),
            "--only" => opts.only = Some(value()?.split(',').map(str::to_owned).collect()),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(opts)
}

fn params(quick: bool) -> PeerParams {
    let (runs, w1_jobs, w2_jobs, w2_small_jobs, w3_jobs) =
        if quick { (1, 5_000, 5_000, 1_000, 500) } else { (3, 50_000, 50_000, 5_000, 2_000) };
    PeerParams {
        runs,
        w1_jobs,
        w1_time_cap_s: 5,
        // As in `laneway-bench run`'s batch row.
        w1_batch: crate::targets::SUBMIT_BATCH,
        w2_jobs,
        w2_small_jobs,
        w2_time_cap_s: 20,
        w3_jobs,
        w3_rate: 200,
        concurrency: 50,
        producers: 50,
    }
}

/// How each column is set up: what the table says under "What ran".
fn setup(id: &str, p: &PeerParams) -> String {
    let c = p.concurrency;
    match id {
        LANEWAY => format!(
            "this tree's `RedisQueueBackend`, assembled as `laneway-bench run` does (`src/targets.rs`); \
             producers are a producer-only backend in the runner, each submit one \
             `QueueBackend::submit` of an upload job; the worker is a process of its own with \
             concurrency {c}, blocking when idle (no polling) on its hand-off list, onto which a submit \
             pushes the job it claimed for the idle worker, and on a wake-up list. Batches go through \
             `QueueBackend::submit_many`. The producers run on the runner's multi-thread tokio \
             runtime, and the current-thread row's on a current-thread runtime in a thread of its own."
        ),
        "bullmq" => format!(
            "defaults; one `Queue` (one ioredis connection) shared by the producers of the process, \
             `add` per job, `addBulk` per batch; one `Worker` with `concurrency: {c}`, blocking on \
             Redis when idle (no polling); completed jobs kept, as by default."
        ),
        "apalis" => format!(
            "a `RedisStorage` on one `ConnectionManager`, cloned for each producer, `push` per job, \
             `push_bulk` per batch; one worker with `.concurrency({c})`, polled every 10 ms when idle \
             (`poll_with_interval`: the pub/sub wake-up of `RedisStorageFactory` never fires in \
             1.0.0, whose push script files every task under the scheduled set); otherwise \
             apalis-redis's defaults (fetch batch 10, task locks, results kept, events published). \
             The driver runs on tokio's multi-thread runtime, and the current-thread row's producer \
             (mode `produce-single-ct`) on a current-thread runtime."
        ),
        "rq" => format!(
            "`Queue.enqueue` per job, `enqueue_many` per batch; the producers are threads sharing one \
             redis-py pool (RQ's client is synchronous); the worker is a `SimpleWorker`, which runs \
             one job at a time in its own process: concurrency 1, not {c}, as RQ has no concurrency \
             within a worker process. It blocks on Redis when idle (no polling). Per-job log lines \
             turned down to WARNING; otherwise RQ's defaults."
        ),
        _ => String::new(),
    }
}

/// A column being measured.
#[derive(Debug)]
enum Subject {
    Laneway,
    Peer(Driver),
}

/// How a W1 workload is produced.
#[derive(Debug, Clone, Copy)]
enum Produce {
    Single,
    /// One producer on a current-thread runtime: the Rust producers only (Laneway, apalis).
    SingleCurrentThread,
    Concurrent,
    Batch,
}

struct Bench {
    p: PeerParams,
    started: Instant,
    samples: BTreeMap<String, Vec<f64>>,
    /// Per figure id: the job counts of the runs a cap ended.
    capped: BTreeMap<String, Vec<u64>>,
    failures: Vec<String>,
    /// The round being measured (from 0).
    round: usize,
    /// Measurements that failed: what and why, and in which rounds.
    failed_runs: Vec<(String, Vec<usize>)>,
}

const PRODUCE_TIMEOUT_EXTRA: Duration = Duration::from_secs(120);
const FILL_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a W3 worker may take from its first start: a peer slower than the send rate drains
/// a backlog.
const W3_WORKER_CAP_S: u64 = 600;

impl Bench {
    fn say(&self, msg: &str) {
        eprintln!("[peers {:>6.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    fn push(&mut self, id: &str, value: f64) {
        self.samples.entry(id.to_owned()).or_default().push(value);
    }

    fn cap_note(&mut self, id: &str, done: u64) {
        self.capped.entry(id.to_owned()).or_default().push(done);
    }

    async fn produce(
        &self,
        subject: &Subject,
        url: &str,
        how: Produce,
        jobs: u64,
        cap: Duration,
    ) -> BenchResult<Produced> {
        let p = &self.p;
        match subject {
            Subject::Laneway => laneway::produce(url, jobs, how, p.producers, Some(cap), p.concurrency).await,
            Subject::Peer(driver) => {
                let cap_s = format!("{}", cap.as_secs_f64());
                let mode: Vec<String> = match how {
                    Produce::Single => vec!["produce-single".into(), jobs.to_string(), cap_s],
                    Produce::SingleCurrentThread => {
                        vec!["produce-single-ct".into(), jobs.to_string(), cap_s]
                    }
                    Produce::Concurrent => {
                        vec!["produce-concurrent".into(), jobs.to_string(), p.producers.to_string(), cap_s]
                    }
                    Produce::Batch => {
                        vec!["produce-batch".into(), jobs.to_string(), p.w1_batch.to_string(), cap_s]
                    }
                };
                driver.spawn(url, &mode)?.result(cap + PRODUCE_TIMEOUT_EXTRA).await
            }
        }
    }

    async fn w1(&mut self, subject: &Subject, col: &str, redis: &RedisServer) -> BenchResult<()> {
        let cap = Duration::from_secs(self.p.w1_time_cap_s);
        let shapes = [
            ("w1_single", Produce::Single),
            ("w1_single_ct", Produce::SingleCurrentThread),
            ("w1_p50", Produce::Concurrent),
            ("w1_batch", Produce::Batch),
        ];
        for (row, how) in shapes {
            // Node.js and Python have one runtime each: only the Rust producers choose theirs.
            let rust = matches!(subject, Subject::Laneway)
                || matches!(subject, Subject::Peer(driver) if driver.id == "apalis");
            if matches!(how, Produce::SingleCurrentThread) && !rust {
                continue;
            }
            redis.command(&["FLUSHALL"]);
            let id = format!("{row}.{col}");
            match self.produce(subject, &redis.url(), how, self.p.w1_jobs, cap).await {
                Ok(done) => {
                    #[allow(clippy::cast_precision_loss)]
                    let rate = done.jobs as f64 / done.elapsed_s;
                    self.say(&format!(
                        "  {row}: {} jobs/s ({} jobs in {:.2} s)",
                        format_value(rate, "jobs/s"),
                        done.jobs,
                        done.elapsed_s
                    ));
                    self.push(&id, rate);
                    if done.jobs < self.p.w1_jobs {
                        self.cap_note(&id, done.jobs);
                    }
                }
                Err(e) => self.failed(col, row, &e),
            }
        }
        Ok(())
    }

    fn failed(&mut self, col: &str, what: &str, e: &BenchError) {
        let round = self.round + 1;
        self.say(&format!("  FAILED {col}, {what}, round {round}: {e}"));
        let key = format!("{col}, {what}: {e}");
        match self.failed_runs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rounds)) => rounds.push(round),
            None => self.failed_runs.push((key, vec![round])),
        }
    }

    async fn fill(&self, subject: &Subject, url: &str, jobs: u64) -> BenchResult<()> {
        match subject {
            Subject::Laneway => {
                laneway::produce(url, jobs, Produce::Concurrent, self.p.producers, None, self.p.concurrency)
                    .await?;
            }
            Subject::Peer(driver) => {
                let filled: Produced =
                    driver.spawn(url, &["fill".into(), jobs.to_string()])?.result(FILL_TIMEOUT).await?;
                if filled.jobs != jobs {
                    return Err(format!("filled {} of {jobs} jobs", filled.jobs).into());
                }
            }
        }
        Ok(())
    }

    fn work_mode(&self, expect: u64, cap_s: u64) -> Vec<String> {
        vec!["work".into(), expect.to_string(), self.p.concurrency.to_string(), cap_s.to_string()]
    }

    /// W2 with `jobs` queued beforehand, as figure `row` (`w2`, with the worker's RSS, or
    /// `w2_small`).
    async fn w2(
        &mut self,
        subject: &Subject,
        col: &str,
        redis: &RedisServer,
        row: &str,
        jobs: u64,
    ) -> BenchResult<()> {
        redis.command(&["FLUSHALL"]);
        let url = redis.url();
        let outcome: BenchResult<Worked> = async {
            self.fill(subject, &url, jobs).await?;
            match subject {
                Subject::Laneway => laneway::drain(&url, jobs, self.p.concurrency).await,
                Subject::Peer(driver) => {
                    let cap = self.p.w2_time_cap_s;
                    let timeout = Duration::from_secs(cap) + FILL_TIMEOUT;
                    driver.spawn(&url, &self.work_mode(jobs, cap))?.result(timeout).await
                }
            }
        }
        .await;
        match outcome {
            Ok(w) => {
                #[allow(clippy::cast_precision_loss)]
                let rate = w.completed as f64 / w.elapsed_s;
                #[allow(clippy::cast_precision_loss)]
                let rss = w.vm_hwm_kib as f64 / 1024.0;
                self.say(&format!(
                    "  {row}: {} jobs/s ({} jobs in {:.2} s), worker peak RSS {rss:.1} MiB",
                    format_value(rate, "jobs/s"),
                    w.completed,
                    w.elapsed_s
                ));
                let id = format!("{row}.{col}");
                self.push(&id, rate);
                if row == "w2" {
                    self.push(&format!("w2_rss.{col}"), rss);
                }
                if w.completed < jobs {
                    self.cap_note(&id, w.completed);
                }
            }
            Err(e) => self.failed(col, row, &e),
        }
        Ok(())
    }

    async fn w3(&mut self, subject: &Subject, col: &str, redis: &RedisServer) -> BenchResult<()> {
        redis.command(&["FLUSHALL"]);
        let (url, jobs, rate) = (redis.url(), self.p.w3_jobs, self.p.w3_rate);
        let outcome: BenchResult<Worked> = async {
            match subject {
                Subject::Laneway => laneway::latency(&url, jobs, rate, self.p.concurrency).await,
                Subject::Peer(driver) => {
                    let mut worker = driver.spawn(&url, &self.work_mode(jobs, W3_WORKER_CAP_S))?;
                    worker.ready(Duration::from_secs(60)).await?;
                    let sending = Duration::from_secs(jobs / rate.max(1)) + PRODUCE_TIMEOUT_EXTRA;
                    let sent: Produced = driver
                        .spawn(&url, &["latency".into(), jobs.to_string(), rate.to_string()])?
                        .result(sending)
                        .await?;
                    if sent.jobs != jobs {
                        return Err(format!("sent {} of {jobs} jobs", sent.jobs).into());
                    }
                    worker.result(Duration::from_secs(W3_WORKER_CAP_S) + PRODUCE_TIMEOUT_EXTRA).await
                }
            }
        }
        .await;
        match outcome {
            Ok(w) if w.latencies_us.len() as u64 == jobs => {
                let pick = |q: f64| percentile(&w.latencies_us, q).map_or(f64::NAN, |us| us / 1_000.0);
                let (p50, p99) = (pick(50.0), pick(99.0));
                self.say(&format!("  w3: p50 {p50:.2} ms, p99 {p99:.2} ms ({} jobs)", w.latencies_us.len()));
                self.push(&format!("w3_p50.{col}"), p50);
                self.push(&format!("w3_p99.{col}"), p99);
            }
            Ok(w) => {
                let e: BenchError =
                    format!("the worker saw {} of {jobs} jobs start", w.latencies_us.len()).into();
                self.failed(col, "w3", &e);
            }
            Err(e) => self.failed(col, "w3", &e),
        }
        Ok(())
    }

    async fn column(&mut self, subject: &Subject, col: &str) -> BenchResult<()> {
        let redis = RedisServer::start();
        self.say(&format!("{col}: redis-server on {}", redis.addr()));
        self.w1(subject, col, &redis).await?;
        self.w2(subject, col, &redis, "w2", self.p.w2_jobs).await?;
        self.w2(subject, col, &redis, "w2_small", self.p.w2_small_jobs).await?;
        self.w3(subject, col, &redis).await?;
        Ok(())
    }

    /// The figures of the samples, with a note where a cap ended runs early.
    fn figures(&self) -> BTreeMap<String, Figure> {
        let mut figures = BTreeMap::new();
        for (id, samples) in &self.samples {
            let unit = if id.starts_with("w2_rss") {
                "MiB"
            } else if id.starts_with("w3_") {
                "ms"
            } else {
                "jobs/s"
            };
            let Some(mut f) = Figure::of(unit, samples.clone()) else { continue };
            if let Some(capped) = self.capped.get(id) {
                let (cap, of) = match id.split('.').next() {
                    Some("w2") => (self.p.w2_time_cap_s, self.p.w2_jobs),
                    Some("w2_small") => (self.p.w2_time_cap_s, self.p.w2_small_jobs),
                    _ => (self.p.w1_time_cap_s, self.p.w1_jobs),
                };
                let shown: Vec<String> = capped.iter().map(|n| format_value(*n as f64, "jobs/s")).collect();
                f = f.noted(format!(
                    "the {cap} s cap ended {} of {} runs, at {} of {} jobs",
                    capped.len(),
                    samples.len(),
                    shown.join(", "),
                    format_value(of as f64, "jobs/s")
                ));
            }
            figures.insert(id.clone(), f);
        }
        figures
    }
}

/// One line of the failures under the table: what failed, why, and in which rounds.
fn failure_line(what: &str, rounds: &[usize], runs: usize) -> String {
    let shown: Vec<String> = rounds.iter().map(ToString::to_string).collect();
    let which = if rounds.len() == runs && runs > 1 {
        format!("all {runs} rounds")
    } else {
        format!("round{} {} of {runs}", if rounds.len() == 1 { "" } else { "s" }, shown.join(", "))
    };
    format!("{what} ({which})")
}

/// A W3 note for a peer that drains slower than the W3 rate: its latencies are a backlog's.
fn note_slow_drains(figures: &mut BTreeMap<String, Figure>, cols: &[String], rate: u64) {
    for col in cols {
        let drained = figures.get(&format!("w2.{col}")).or_else(|| figures.get(&format!("w2_small.{col}")));
        let Some(drain) = drained.map(|f| f.median) else { continue };
        #[allow(clippy::cast_precision_loss)]
        let rate_f = rate as f64;
        if drain < rate_f
            && let Some(f) = figures.get_mut(&format!("w3_p50.{col}"))
        {
            let note = format!(
                "its worker drains {} jobs/s (W2), less than the {rate}/s sent, so its queue grows during \
                 W3 and these latencies are mostly waiting in that queue",
                format_value(drain, "jobs/s")
            );
            f.note = Some(note);
        }
    }
}

/// The columns to measure: Laneway, then each peer whose driver is installed and answers
/// `version`.
async fn columns(
    opts: &Options,
    p: &PeerParams,
    rustc: &str,
    warnings: &mut Vec<String>,
) -> (Vec<Column>, Vec<Option<Subject>>) {
    let wants = |id: &str| opts.only.as_ref().is_none_or(|only| only.iter().any(|c| c == id));
    let mut columns = Vec::new();
    let mut subjects = Vec::new();
    if wants(LANEWAY) {
        columns.push(Column {
            id: LANEWAY.to_owned(),
            heading: "Laneway (Redis)".to_owned(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            runtime: Some(format!("release build of this tree, {rustc}")),
            setup: setup(LANEWAY, p),
            missing: None,
        });
        subjects.push(Some(Subject::Laneway));
    }
    for peer in PEERS {
        if !wants(peer.id) {
            continue;
        }
        let mut column = Column {
            id: peer.id.to_owned(),
            heading: peer.heading.to_owned(),
            version: None,
            runtime: None,
            setup: setup(peer.id, p),
            missing: None,
        };
        let found = find_driver(opts, peer.id).await;
        match found {
            Ok((driver, version)) => {
                let off = unpinned(peer.id, &version);
                if !off.is_empty() {
                    let warning = format!(
                        "{}: the driver reports `{} {}` ({}), not the pinned {}",
                        peer.heading,
                        version.peer,
                        version.version,
                        version.runtime,
                        off.join(", ")
                    );
                    eprintln!("[peers] warning: {warning}");
                    warnings.push(warning);
                }
                column.version = Some(version.version);
                column.runtime = Some(version.runtime);
                subjects.push(Some(Subject::Peer(driver)));
            }
            Err(why) => {
                eprintln!("[peers] {}: not measured: {why}", peer.heading);
                column.missing = Some(why);
                subjects.push(None);
            }
        }
        columns.push(column);
    }
    (columns, subjects)
}

/// The pins of a column's packages.
fn pins_of(id: &str) -> &'static [Pin] {
    match id {
        "bullmq" => &[pins::BULLMQ, pins::IOREDIS],
        "apalis" => &[pins::APALIS_REDIS, pins::APALIS],
        "rq" => &[pins::RQ],
        _ => &[],
    }
}

/// The pins of `id` that its driver does not report as installed: `name version` must appear
/// in what `version` printed.
fn unpinned(id: &str, reported: &Version) -> Vec<String> {
    let said = format!("{} {} {}", reported.peer, reported.version, reported.runtime);
    pins_of(id)
        .iter()
        .filter(|pin| !said.contains(&format!("{} {}", pin.package, pin.version)))
        .map(|pin| format!("{} {} ({})", pin.package, pin.version, pin.registry))
        .collect()
}

/// The driver of `id` and the version it reports, or why there is none. xtask leaves
/// `<peers-dir>/<id>.failed` with the reason when an install failed.
async fn find_driver(opts: &Options, id: &'static str) -> Result<(Driver, Version), String> {
    if let Ok(why) = std::fs::read_to_string(opts.peers_dir.join(format!("{id}.failed"))) {
        return Err(format!("the install failed: {}", why.trim()));
    }
    let driver = Driver::locate(id, &opts.peers_dir, &opts.drivers).ok_or("no driver")?;
    if let Some(missing) = driver.files().into_iter().find(|f| !f.exists()) {
        return Err(format!(
            "{} is missing (run `cargo xtask bench-peers` to install it)",
            missing.display()
        ));
    }
    let process = driver.spawn("redis://127.0.0.1:1", &["version".into()]).map_err(|e| e.to_string())?;
    let version = process.result::<Version>(Duration::from_secs(60)).await.map_err(|e| e.to_string())?;
    Ok((driver, version))
}

/// Runs the peers' workloads and writes the results.
///
/// # Errors
/// When the results cannot be written; a failed measurement is reported in the table instead.
pub async fn run(opts: Options) -> BenchResult<()> {
    let started = Instant::now();
    let p = params(opts.quick);
    let machine = machine::describe();
    eprintln!(
        "[peers] {} on {} × {} · redis {}",
        if opts.quick { "quick run" } else { "full run" },
        machine.nproc,
        machine.cpu_model,
        machine.redis_server
    );
    let mut warnings = Vec::new();
    let (columns, subjects) = columns(&opts, &p, &machine.rustc, &mut warnings).await;
    let mut bench = Bench {
        p: p.clone(),
        started,
        samples: BTreeMap::new(),
        capped: BTreeMap::new(),
        failures: warnings,
        round: 0,
        failed_runs: Vec::new(),
    };
    for round in 0..p.runs {
        bench.round = round;
        for (column, subject) in columns.iter().zip(&subjects) {
            let Some(subject) = subject else { continue };
            bench.say(&format!("round {}/{} · {}", round + 1, p.runs, column.heading));
            bench.column(subject, &column.id).await?;
        }
    }
    let mut figures = bench.figures();
    let measured: Vec<String> =
        columns.iter().filter(|c| c.missing.is_none() && c.id != LANEWAY).map(|c| c.id.clone()).collect();
    let peers: Vec<&str> = measured.iter().map(String::as_str).collect();
    report::add_ratios(&mut figures, &peers);
    note_slow_drains(&mut figures, &measured, p.w3_rate);
    let machine = crate::report::Machine { load_at_end: machine::load_average(), ..machine };
    let p_runs = p.runs;
    let results = PeerResults {
        schema: report::SCHEMA,
        command: opts.command.clone(),
        quick: opts.quick,
        finished_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        duration_s: started.elapsed().as_secs_f64(),
        machine,
        params: p,
        columns,
        figures,
        failures: bench
            .failures
            .into_iter()
            .chain(bench.failed_runs.into_iter().map(|(what, rounds)| failure_line(&what, &rounds, p_runs)))
            .collect(),
    };
    for (id, f) in &results.figures {
        eprintln!("[peers] {id}: {} {}", format_figure(f), f.unit);
    }
    if let Some(dir) = opts.results.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.results, serde_json::to_string_pretty(&results)? + "\n")?;
    if opts.only.is_some() {
        println!("{}", report::render_markdown(&results));
        eprintln!("[peers] partial run (--only): wrote {}; BENCHMARKS.md left alone", opts.results.display());
        return Ok(());
    }
    write_markdown(&opts, &results)?;
    eprintln!(
        "[peers] done in {:.0} s: wrote {} and the peers' table of {}",
        results.duration_s,
        opts.results.display(),
        opts.markdown.display()
    );
    Ok(())
}

/// Redraws the peers' table of BENCHMARKS.md from a peers.json, without measuring anything.
///
/// # Errors
/// When the files cannot be read or written, or the markers are broken.
pub fn render(opts: &Options) -> BenchResult<()> {
    let results: PeerResults = serde_json::from_str(&std::fs::read_to_string(&opts.results)?)?;
    write_markdown(opts, &results)
}

fn write_markdown(opts: &Options, results: &PeerResults) -> BenchResult<()> {
    let markdown = report::render_markdown(results);
    let doc = std::fs::read_to_string(&opts.markdown)?;
    let updated = crate::report::replace_between(&doc, report::BEGIN_MARKER, report::END_MARKER, &markdown)
        .map_err(|e| -> BenchError { format!("{}: {e}", opts.markdown.display()).into() })?;
    std::fs::write(&opts.markdown, updated)?;
    println!("{markdown}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_sizes_are_smaller_and_say_so_in_their_runs() {
        let (full, quick) = (params(false), params(true));
        assert_eq!((full.runs, full.w1_jobs, full.w2_jobs, full.w3_jobs), (3, 50_000, 50_000, 2_000));
        assert_eq!((quick.runs, quick.w1_jobs, quick.w2_jobs, quick.w3_jobs), (1, 5_000, 5_000, 500));
        assert_eq!(full.w3_rate, 200);
    }

    #[test]
    fn a_peer_slower_than_the_w3_rate_gets_a_note_on_its_latency() {
        let mut figures = BTreeMap::new();
        let fig = |v: f64| Figure::of("x", vec![v]).expect("one sample");
        figures.insert("w2.rq".to_owned(), fig(120.0));
        figures.insert("w3_p50.rq".to_owned(), fig(900.0));
        figures.insert("w2.bullmq".to_owned(), fig(4_000.0));
        figures.insert("w3_p50.bullmq".to_owned(), fig(2.0));
        note_slow_drains(&mut figures, &["rq".to_owned(), "bullmq".to_owned()], 200);
        assert!(figures["w3_p50.rq"].note.as_deref().is_some_and(|n| n.contains("drains 120 jobs/s")));
        assert!(figures["w3_p50.bullmq"].note.is_none());
    }

    #[test]
    fn a_failure_in_several_rounds_is_one_line() {
        assert_eq!(failure_line("rq, w3: timed out", &[2], 3), "rq, w3: timed out (round 2 of 3)");
        assert_eq!(failure_line("rq, w3: timed out", &[1, 3], 3), "rq, w3: timed out (rounds 1, 3 of 3)");
        assert_eq!(failure_line("apalis, w2: stopped", &[1, 2, 3], 3), "apalis, w2: stopped (all 3 rounds)");
    }

    #[test]
    fn arguments_name_the_files_and_columns() {
        let args: Vec<String> =
            ["--quick", "--results", "r.json", "--peers-dir", "p", "--only", "laneway,rq"]
                .map(String::from)
                .into();
        let opts = parse_args(&args).expect("parses");
        assert!(opts.quick);
        assert_eq!(opts.results, PathBuf::from("r.json"));
        assert_eq!(opts.peers_dir, PathBuf::from("p"));
        assert_eq!(opts.only, Some(vec!["laneway".to_owned(), "rq".to_owned()]));
        assert!(parse_args(&["--bogus".to_owned()]).is_err());
        assert!(parse_args(&["--results".to_owned()]).is_err());
    }

    #[test]
    fn a_driver_reporting_other_versions_than_the_pins_is_flagged() {
        let version = |peer: &str, v: &str, runtime: &str| Version {
            peer: peer.to_owned(),
            version: v.to_owned(),
            runtime: runtime.to_owned(),
        };
        let bullmq =
            version("bullmq", pins::BULLMQ.version, &format!("Node v20, ioredis {}", pins::IOREDIS.version));
        assert!(unpinned("bullmq", &bullmq).is_empty());
        let old = version("bullmq", "5.0.0", "Node v20, ioredis 4.0.0");
        assert_eq!(unpinned("bullmq", &old).len(), 2);
        let apalis = version(
            "apalis-redis",
            pins::APALIS_REDIS.version,
            &format!("apalis {}, redis-rs 1.8.1", pins::APALIS.version),
        );
        assert!(unpinned("apalis", &apalis).is_empty());
        let rq = version("rq", "2.12.0", "Python 3.11.7");
        assert_eq!(unpinned("rq", &rq), vec![format!("rq {} (PyPI)", pins::RQ.version)]);
    }

    #[test]
    fn every_column_says_how_it_is_set_up() {
        let p = params(false);
        for id in [LANEWAY, "bullmq", "apalis", "rq"] {
            assert!(!setup(id, &p).is_empty(), "{id}");
        }
        assert!(setup("rq", &p).contains("concurrency 1"));
        assert!(setup("apalis", &p).contains("10 ms"));
    }
}
