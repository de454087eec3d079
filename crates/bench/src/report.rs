//! What a bench run produces: the `results.json` model, the bars of issue 5 judged against it,
//! the Markdown tables, and their replacement between the markers of BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Figure;

/// Bumped when the shape of `results.json` changes.
pub const SCHEMA: u32 = 1;

/// Where the generated tables start in BENCHMARKS.md.
pub const BEGIN_MARKER: &str = "<!-- bench:begin -->";
/// Where they end.
pub const END_MARKER: &str = "<!-- bench:end -->";

/// The machine and the versions a run was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the run.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory (MiB) from /proc/meminfo.
    pub mem_total_mib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `redis-server --version`.
    pub redis_server: String,
    /// How an idle CPU waits for work (the cpuidle driver and governor, and a guest's halt
    /// polling window): on a VM, a CPU that halts when idle costs every awaited round trip a
    /// wake-up through the host, which can double it ([`crate::machine::cpu_idle`]).
    #[serde(default)]
    pub cpu_idle: String,
    /// /proc/loadavg (1, 5, 15 min) when the run began: other work on the machine skews every
    /// figure.
    pub load_at_start: String,
    /// /proc/loadavg when it ended.
    pub load_at_end: String,
}

/// The sizes a run used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Runs per figure.
    pub runs: usize,
    /// W1: jobs per measurement (a measurement also stops after `w1_time_cap_s`).
    pub w1_jobs: u64,
    /// W1: longest a measurement may take; slower targets report the jobs done by then.
    pub w1_time_cap_s: u64,
    /// W2: jobs enqueued before the worker starts.
    pub w2_jobs: u64,
    /// W3: jobs sent at `w3_rate` per second.
    pub w3_jobs: u64,
    /// W3: the steady send rate.
    pub w3_rate: u64,
    /// W4: lanes.
    pub w4_lanes: u64,
    /// W4: chat jobs per lane.
    pub w4_per_lane: u64,
    /// W5: the small backlog.
    pub w5_small: u64,
    /// W5: the big backlog.
    pub w5_big: u64,
    /// W5: jobs enqueued (and claimed) per probe.
    pub w5_probe: u64,
    /// W5: probes per backlog (its figures are the median of these).
    pub w5_runs: usize,
    /// Worker concurrency in W2, W4 and W5.
    pub concurrency: usize,
    /// Producers in "50 producers".
    pub producers: usize,
    /// Jobs per pipeline in the Redis baseline (the backend's claim batch).
    pub pipeline_batch: usize,
    /// Bytes of padding in every job's payload, a string field `pad`
    /// (`LANEWAY_BENCH_PAD_BYTES`); 0, the standard run: none (payloads of about 10 bytes).
    #[serde(default)]
    pub pad_bytes: usize,
    /// Settings the runner gave its Redis by `CONFIG SET` (`LANEWAY_BENCH_REDIS_CONFIG`), each
    /// `name value`; empty, the standard run: Redis's defaults.
    #[serde(default)]
    pub redis_config: Vec<String>,
}

/// Redis calls per job during one phase, from `INFO stats` and `INFO commandstats` deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundTrips {
    /// Which phase, e.g. `w2.redis` (the drain).
    pub phase: String,
    /// What the phase did.
    pub label: String,
    /// Jobs the phase handled.
    pub jobs: u64,
    /// `total_reads_processed` per job: requests read from client sockets, i.e. round trips
    /// (a pipeline counts once).
    pub reads_per_job: f64,
    /// `EVALSHA` + `EVAL` per job: script calls.
    pub scripts_per_job: f64,
    /// `PING` per job: the pool's check of every connection it hands out (one extra round trip
    /// per checkout, pipelined with `UNWATCH`).
    pub pings_per_job: f64,
    /// Every command Redis ran per job, the ones inside scripts included.
    pub commands_per_job: f64,
    /// CPU time of `redis-server` per job (µs).
    pub redis_cpu_us_per_job: f64,
    /// CPU time of the client processes of the phase (producer, worker) per job (µs).
    pub client_cpu_us_per_job: f64,
    /// The commands that ran most, per job.
    pub top: Vec<(String, f64)>,
}

/// One bar of issue 5, judged on the medians.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    /// What must hold.
    pub bar: String,
    /// The measured value, formatted.
    pub measured: String,
    /// Whether it holds; `None` when the figure is missing.
    pub met: Option<bool>,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The command that reproduces the run.
    pub command: String,
    /// Whether it was `--quick`.
    pub quick: bool,
    /// When it finished (seconds since the Unix epoch).
    pub finished_unix_s: u64,
    /// How long it took.
    pub duration_s: f64,
    /// Where it ran.
    pub machine: Machine,
    /// The sizes it used.
    pub params: Params,
    /// Every figure by id: `<row>.<column>` (`w2.redis`), `base.<name>`, `ratio.<name>`.
    pub figures: BTreeMap<String, Figure>,
    /// Redis calls per job, per phase.
    pub round_trips: Vec<RoundTrips>,
    /// The bars of issue 5.
    pub bars: Vec<Bar>,
    /// What was asked for and not measured, with why.
    pub not_measured: Vec<String>,
}

/// The backends of the main table: column id and heading.
pub const COLUMNS: &[(&str, &str)] =
    &[("mem", "inline, memory store"), ("sqlite", "inline, SQLite store"), ("redis", "Redis")];

/// The rows of the main table: row id, label, unit.
pub const ROWS: &[(&str, &str, &str)] = &[
    ("w1_single", "W1 enqueue, 1 producer, awaited one at a time", "jobs/s"),
    ("w1_single_ct", "W1 enqueue, 1 producer, awaited one at a time, on a current-thread runtime", "jobs/s"),
    ("w1_p50", "W1 enqueue, 50 concurrent producers", "jobs/s"),
    ("w1_batch", "W1 enqueue, batch API (`submit_many`, 100 jobs a call, 1 producer)", "jobs/s"),
    ("w2", "W2 drain, 1 worker, concurrency 50", "jobs/s"),
    ("w2_rss", "W2 worker peak RSS", "MiB"),
    ("w2_cpu", "W2 worker CPU per job (the worker process alone)", "µs"),
    ("w2_redis_cpu", "W2 Redis's CPU per job (`redis-server`)", "µs"),
    ("w2_wait", "W2 drain with claiming ahead off (each slot waits for its outcome call)", "jobs/s"),
    ("w3_p50", "W3 enqueue→start p50 (steady rate, idle worker)", "ms"),
    ("w3_p99", "W3 enqueue→start p99", "ms"),
    ("w3_rss", "W3 worker peak RSS (an idle worker, no backlog)", "MiB"),
    ("w3c_p50", "W3 with chat jobs, each into an idle lane: enqueue→start p50", "ms"),
    ("w3c_p99", "W3 with chat jobs: enqueue→start p99", "ms"),
    ("w4", "W4 lanes × 5 chat jobs, concurrency 50", "jobs/s"),
    ("w4_cpu", "W4 worker CPU per job (the worker process alone)", "µs"),
    ("w4_redis_cpu", "W4 Redis's CPU per job (`redis-server`)", "µs"),
    ("w4_wait", "W4 lanes with claiming ahead off", "jobs/s"),
    ("w4_ratio", "W4 / W2 (what lanes cost; each W4 drain over the W2 drain run just before it)", "ratio"),
    (
        "w4_cpu_ratio",
        "W4 / W2 by Redis's CPU per job (each W2 drain's over the W4 drain's after it)",
        "ratio",
    ),
    ("w5_enqueue_ratio", "W5 enqueue cost, big / small backlog", "ratio"),
    ("w5_claim_ratio", "W5 claim cost, big / small backlog", "ratio"),
    ("w5_mem", "W5 memory per queued job", "bytes"),
    ("w5_worker_start", "W5 worker process start with the big backlog", "s"),
];

/// A figure compared with a baseline: its ratio's id and what it says.
pub type Compared = Option<(&'static str, &'static str)>;

/// The baselines: id, label, and the figure compared with it (`ratio.<name>`, label).
pub const BASELINES: &[(&str, &str, Compared)] = &[
    (
        "base.tokio_w2",
        "bare tokio: mpsc channel + a spawned noop task per job, 50 at a time (W2 shape)",
        Some(("ratio.mem_w2_vs_tokio", "inline memory W2 / this")),
    ),
    (
        "base.redis_lpush_serial",
        "redis-rs: LPUSH, 1 connection, awaited one at a time",
        Some(("ratio.redis_w1_single_vs_lpush", "Redis W1 1 producer / this")),
    ),
    (
        "base.redis_lpush_50",
        "redis-rs: LPUSH, 50 connections, unpipelined",
        Some(("ratio.redis_w1_p50_vs_lpush", "Redis W1 50 producers / this")),
    ),
    (
        "base.redis_lpush_serial_ct",
        "redis-rs: LPUSH, 1 connection, awaited one at a time, on a current-thread runtime",
        Some(("ratio.redis_w1_single_ct_vs_lpush_ct", "Redis W1 1 producer, current-thread / this")),
    ),
    ("base.redis_enqueue_pipe", "redis-rs: LPUSH, pipelines of 32, 1 connection", None),
    (
        "base.redis_drain_pipe",
        "redis-rs: LMOVE to an in-flight list, then LREM; pipelines of 32, 2 connections",
        Some(("ratio.redis_w2_vs_pipe", "Redis W2 / this")),
    ),
    (
        "base.redis_ping_paced_p50",
        "redis-rs: PING round trip p50, 1 connection, at W3's pace (client and server idle between)",
        Some((
            "ratio.redis_w3_p50_vs_ping",
            "Redis W3 p50 / this (a submit handed to the blocked worker: about one round trip)",
        )),
    ),
    ("base.redis_ping_paced_p99", "redis-rs: the same, p99", None),
    ("base.rb_ping_c1", "redis-benchmark PING, 1 client: the loopback round trip", None),
    ("base.rb_lpush_p1", "redis-benchmark LPUSH, 50 clients, no pipelining", None),
    ("base.rb_lpush_p16", "redis-benchmark LPUSH, 50 clients, -P 16", None),
    ("base.rb_evalsha_p16", "redis-benchmark EVALSHA (a script of one LPUSH), 50 clients, -P 16", None),
];

/// Formats `value` for `unit`: integers with thousands separators for rates and bytes.
#[must_use]
pub fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "jobs/s" | "ops/s" | "bytes" => thousands(value),
        "MiB" | "µs" => format!("{value:.1}"),
        "s" => format!("{value:.2}"),
        "ms" if value < 10.0 => format!("{value:.2}"),
        "ms" => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

pub(crate) fn thousands(value: f64) -> String {
    // Rates and sizes here are far below 2^53; rounding to an integer is the point.
    #[allow(clippy::cast_possible_truncation)]
    let n = value.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `median (min–max)`, or the median alone when there is one run or no spread.
#[must_use]
pub fn format_figure(f: &Figure) -> String {
    let median = format_value(f.median, &f.unit);
    let (min, max) = (format_value(f.min, &f.unit), format_value(f.max, &f.unit));
    if f.samples.len() == 1 || min == max { median } else { format!("{median} ({min}–{max})") }
}

fn cell(figures: &BTreeMap<String, Figure>, id: &str) -> String {
    figures.get(id).map_or_else(|| "—".to_owned(), format_figure)
}

/// The bars of issue 5, judged on the medians of `figures`. `big` names the big W5 backlog.
#[must_use]
pub fn evaluate_bars(figures: &BTreeMap<String, Figure>, big: u64) -> Vec<Bar> {
    let mut bars = Vec::new();
    let mut judge = |bar: String, id: &str, ok: &dyn Fn(f64) -> bool| {
        let (measured, met) = match figures.get(id) {
            Some(f) => (format!("{} {}", format_figure(f), f.unit), Some(ok(f.median))),
            None => ("not measured".to_owned(), None),
        };
        bars.push(Bar { bar, measured, met });
    };
    judge("Redis W2 ≥ 75,000 jobs/s".into(), "w2.redis", &|v| v >= 75_000.0);
    judge("Redis W1, 1 producer ≥ 18,000 jobs/s".into(), "w1_single.redis", &|v| v >= 18_000.0);
    judge(
        "Redis W1, 1 producer on a current-thread runtime ≥ 18,000 jobs/s".into(),
        "w1_single_ct.redis",
        &|v| v >= 18_000.0,
    );
    judge("Redis W1, 50 producers ≥ 100,000 jobs/s".into(), "w1_p50.redis", &|v| v >= 100_000.0);
    judge("Redis W3 p50 ≤ 0.3 ms".into(), "w3_p50.redis", &|v| v <= 0.3);
    judge("Redis W3 p99 ≤ 1 ms".into(), "w3_p99.redis", &|v| v <= 1.0);
    for (col, name) in [("mem", "inline memory"), ("sqlite", "inline SQLite"), ("redis", "Redis")] {
        judge(format!("W4 ≥ 0.6 × W2 ({name})"), &format!("w4_ratio.{col}"), &|v| v >= 0.6);
    }
    judge("Inline W2, memory store ≥ 0.3 × bare tokio".into(), "ratio.mem_w2_vs_tokio", &|v| v >= 0.3);
    judge("Inline W2, SQLite store ≥ 50,000 jobs/s".into(), "w2.sqlite", &|v| v >= 50_000.0);
    for (col, name) in [("mem", "inline memory"), ("sqlite", "inline SQLite"), ("redis", "Redis")] {
        judge(format!("W2 worker peak RSS ≤ 20 MiB ({name})"), &format!("w2_rss.{col}"), &|v| v <= 20.0);
    }
    let big = thousands(big as f64);
    for (col, name) in [("mem", "inline memory"), ("sqlite", "inline SQLite"), ("redis", "Redis")] {
        for (what, row) in [("enqueue", "w5_enqueue_ratio"), ("claim", "w5_claim_ratio")] {
            judge(
                format!("W5 {what} cost, {big} / 1,000 queued ≤ 1.2 ({name})"),
                &format!("{row}.{col}"),
                &|v| v <= 1.2,
            );
        }
    }
    bars
}

/// The Markdown that goes between the markers of BENCHMARKS.md.
#[must_use]
pub fn render_markdown(r: &Results) -> String {
    let m = &r.machine;
    let p = &r.params;
    let mut out = String::new();
    let _ =
        writeln!(out, "Reproduce with `{}`{}.", r.command, if r.quick { " (the quick sizes)" } else { "" });
    let _ = writeln!(
        out,
        "Measured on {} logical CPUs ({}), {} MiB RAM, Linux {}, CPU idle: {}; {}; Redis {} on loopback \
         (`--save \"\" --appendonly no`), started by the runner. Each figure is the median of {} runs \
         (W5: {} probes) with min–max; the whole run took {:.0} s (load average at its start: {}; \
         at its end: {}).",
        m.nproc,
        m.cpu_model,
        m.mem_total_mib,
        m.kernel,
        m.cpu_idle,
        m.rustc,
        m.redis_server,
        p.runs,
        p.w5_runs,
        r.duration_s,
        m.load_at_start,
        m.load_at_end
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Sizes: W1 {} jobs (or {} s, whichever ends first); W2 {} jobs; W3 {} jobs at {}/s; W4 {} lanes × {}; \
         W5 {} vs {} queued, {} probes of {} jobs each; concurrency {}, {} producers.",
        thousands(p.w1_jobs as f64),
        p.w1_time_cap_s,
        thousands(p.w2_jobs as f64),
        thousands(p.w3_jobs as f64),
        p.w3_rate,
        thousands(p.w4_lanes as f64),
        p.w4_per_lane,
        thousands(p.w5_small as f64),
        thousands(p.w5_big as f64),
        p.w5_runs,
        thousands(p.w5_probe as f64),
        p.concurrency,
        p.producers,
    );
    if p.pad_bytes > 0 {
        let _ = writeln!(
            out,
            "\n**Not the standard run:** every payload carries a field `pad` of {} bytes \
             (`LANEWAY_BENCH_PAD_BYTES`).",
            thousands(p.pad_bytes as f64)
        );
    }
    if !p.redis_config.is_empty() {
        let _ = writeln!(
            out,
            "\n**Not the standard run:** the runner's Redis was given `CONFIG SET {}` \
             (`LANEWAY_BENCH_REDIS_CONFIG`).",
            p.redis_config.join("`, `CONFIG SET ")
        );
    }
    let _ = writeln!(out);

    let _ = write!(out, "| workload | unit |");
    for (_, heading) in COLUMNS {
        let _ = write!(out, " {heading} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(COLUMNS.len()));
    for (row, label, unit) in ROWS {
        let _ = write!(out, "| {label} | {unit} |");
        for (col, _) in COLUMNS {
            let _ = write!(out, " {} |", cell(&r.figures, &format!("{row}.{col}")));
        }
        let _ = writeln!(out);
    }
    let mut notes = Vec::new();
    for (row, label, _) in ROWS {
        for (col, heading) in COLUMNS {
            if let Some(note) = r.figures.get(&format!("{row}.{col}")).and_then(|f| f.note.as_deref())
                && !notes.iter().any(|n: &String| n.ends_with(&format!(": {note}.")))
            {
                notes.push(format!("- {label}, {heading}: {note}."));
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "Baselines, same run, same machine:");
    let _ = writeln!(out);
    let _ = writeln!(out, "| baseline | rate | compared | ratio |");
    let _ = writeln!(out, "|---|---:|---|---:|");
    for (id, label, compared) in BASELINES {
        let unit = r.figures.get(*id).map_or("", |f| f.unit.as_str());
        let rate = format!("{} {unit}", cell(&r.figures, id));
        let (what, ratio) = compared.map_or(("", "".to_owned()), |(rid, what)| (what, cell(&r.figures, rid)));
        let _ = writeln!(out, "| {label} | {} | {what} | {ratio} |", rate.trim_end());
    }
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "Redis calls per job (deltas of `INFO stats` and `INFO commandstats` around each phase):"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| phase | jobs | round trips | script calls | PINGs | commands incl. inside scripts | \
         redis-server CPU µs | client CPU µs | most run |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for t in &r.round_trips {
        let top: Vec<String> = t.top.iter().map(|(c, n)| format!("{c} {n:.2}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {} |",
            t.label,
            thousands(t.jobs as f64),
            t.reads_per_job,
            t.scripts_per_job,
            t.pings_per_job,
            t.commands_per_job,
            t.redis_cpu_us_per_job,
            t.client_cpu_us_per_job,
            top.join(", ")
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "The bars of issue 5, on the medians above:");
    let _ = writeln!(out);
    let _ = writeln!(out, "| bar | measured | met |");
    let _ = writeln!(out, "|---|---:|:---:|");
    for b in &r.bars {
        let met = match b.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(out, "| {} | {} | {met} |", b.bar, b.measured);
    }
    if !r.not_measured.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Not measured:");
        let _ = writeln!(out);
        for n in &r.not_measured {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// Replaces what lies between [`BEGIN_MARKER`] and [`END_MARKER`] in `doc` with `body`, keeping
/// everything else byte for byte.
///
/// # Errors
/// When a marker is missing, repeated, or the end comes before the begin.
pub fn replace_between_markers(doc: &str, body: &str) -> Result<String, String> {
    replace_between(doc, BEGIN_MARKER, END_MARKER, body)
}

/// Replaces what lies between the markers `begin` and `end` in `doc` with `body`, keeping
/// everything else byte for byte (the peers' table has markers of its own).
///
/// # Errors
/// When a marker is missing, repeated, or the end comes before the begin.
pub fn replace_between(doc: &str, begin: &str, end: &str, body: &str) -> Result<String, String> {
    let once = |marker: &str| -> Result<usize, String> {
        let mut found = doc.match_indices(marker);
        let Some((at, _)) = found.next() else { return Err(format!("marker `{marker}` not found")) };
        if found.next().is_some() {
            return Err(format!("marker `{marker}` appears more than once"));
        }
        Ok(at)
    };
    let begin_at = once(begin)?;
    let end_at = once(end)?;
    if end_at < begin_at {
        return Err(format!("`{end}` comes before `{begin}`"));
    }
    let head = &doc[..begin_at + begin.len()];
    let tail = &doc[end_at..];
    let body = body.trim_matches('\n');
    Ok(format!("{head}\n{body}\n{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_results() -> Results {
        let mut figures = BTreeMap::new();
        let fig = |unit: &str, v: &[f64]| Figure::of(unit, v.to_vec()).expect("samples");
        figures.insert("w2.redis".to_owned(), fig("jobs/s", &[20_000.0, 21_500.0, 19_000.0]));
        figures.insert("w3_p50.redis".to_owned(), fig("ms", &[0.25, 0.3, 0.28]));
        figures.insert("w2_rss.mem".to_owned(), fig("MiB", &[12.5]));
        figures.insert("w5_mem.redis".to_owned(), fig("bytes", &[480.0]).noted("one fill"));
        figures.insert("base.tokio_w2".to_owned(), fig("jobs/s", &[1_000_000.0]));
        let mut results = Results {
            schema: SCHEMA,
            command: "cargo xtask bench --quick".to_owned(),
            quick: true,
            finished_unix_s: 1_700_000_000,
            duration_s: 95.0,
            machine: Machine {
                nproc: 2,
                cpu_model: "AMD EPYC".to_owned(),
                mem_total_mib: 24_105,
                kernel: "6.1".to_owned(),
                rustc: "rustc 1.95.0".to_owned(),
                redis_server: "7.0.15".to_owned(),
                cpu_idle: "haltpoll, guest halt polling 0 ns".to_owned(),
                load_at_start: "0.10 0.20 0.30".to_owned(),
                load_at_end: "1.10 1.20 1.30".to_owned(),
            },
            params: Params {
                runs: 3,
                w1_jobs: 5_000,
                w1_time_cap_s: 5,
                w2_jobs: 10_000,
                w3_jobs: 400,
                w3_rate: 200,
                w4_lanes: 1_000,
                w4_per_lane: 5,
                w5_small: 1_000,
                w5_big: 100_000,
                w5_probe: 2_000,
                w5_runs: 3,
                concurrency: 50,
                producers: 50,
                pipeline_batch: 32,
                pad_bytes: 0,
                redis_config: Vec::new(),
            },
            figures,
            round_trips: vec![RoundTrips {
                phase: "w2.redis".to_owned(),
                label: "W2 drain (Redis)".to_owned(),
                jobs: 10_000,
                reads_per_job: 2.01,
                scripts_per_job: 1.03,
                pings_per_job: 1.0,
                commands_per_job: 19.5,
                redis_cpu_us_per_job: 41.0,
                client_cpu_us_per_job: 88.4,
                top: vec![("hset".to_owned(), 3.0)],
            }],
            bars: Vec::new(),
            not_measured: vec!["peers: not run".to_owned()],
        };
        results.bars = evaluate_bars(&results.figures, results.params.w5_big);
        results
    }

    #[test]
    fn results_json_has_the_documented_shape_and_reads_back() {
        let results = sample_results();
        let json = serde_json::to_value(&results).expect("serializes");
        for key in [
            "schema",
            "command",
            "quick",
            "finished_unix_s",
            "duration_s",
            "machine",
            "params",
            "figures",
            "round_trips",
            "bars",
            "not_measured",
        ] {
            assert!(json.get(key).is_some(), "results.json lacks `{key}`");
        }
        assert_eq!(json["schema"], SCHEMA);
        let w2 = &json["figures"]["w2.redis"];
        assert_eq!(w2["unit"], "jobs/s");
        assert_eq!(w2["median"], 20_000.0);
        assert_eq!(w2["min"], 19_000.0);
        assert_eq!(w2["max"], 21_500.0);
        assert_eq!(w2["samples"].as_array().map(Vec::len), Some(3));
        assert!(w2.get("note").is_none(), "an absent note is left out");
        assert_eq!(json["machine"]["nproc"], 2);
        let back: Results = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, results);
    }

    #[test]
    fn bars_are_judged_on_medians_and_missing_figures_stay_open() {
        let bars = sample_results().bars;
        let find = |name: &str| bars.iter().find(|b| b.bar.starts_with(name)).expect(name);
        assert_eq!(find("Redis W2").met, Some(false));
        assert_eq!(find("Redis W2").measured, "20,000 (19,000–21,500) jobs/s");
        assert_eq!(find("Redis W3 p50").met, Some(true));
        assert_eq!(find("W2 worker peak RSS ≤ 20 MiB (inline memory)").met, Some(true));
        assert_eq!(find("Inline W2, SQLite").met, None);
        assert_eq!(find("Inline W2, SQLite").measured, "not measured");
        assert!(bars.iter().any(|b| b.bar.contains("100,000 / 1,000 queued")));
    }

    #[test]
    fn the_one_producer_bar_is_judged_on_each_runtime_apart() {
        let mut figures = BTreeMap::new();
        figures
            .insert("w1_single.redis".to_owned(), Figure::of("jobs/s", vec![12_000.0]).expect("one sample"));
        figures.insert(
            "w1_single_ct.redis".to_owned(),
            Figure::of("jobs/s", vec![19_000.0]).expect("one sample"),
        );
        let bars = evaluate_bars(&figures, 1_000_000);
        let find = |name: &str| bars.iter().find(|b| b.bar == name).expect(name);
        assert_eq!(find("Redis W1, 1 producer ≥ 18,000 jobs/s").met, Some(false));
        let ct = find("Redis W1, 1 producer on a current-thread runtime ≥ 18,000 jobs/s");
        assert_eq!((ct.met, ct.measured.as_str()), (Some(true), "19,000 jobs/s"));
    }

    #[test]
    fn the_markdown_names_the_command_the_machine_and_every_row() {
        let md = render_markdown(&sample_results());
        assert!(md.contains("`cargo xtask bench --quick`"));
        assert!(md.contains("AMD EPYC"));
        assert!(md.contains("Linux 6.1, CPU idle: haltpoll, guest halt polling 0 ns;"));
        assert!(
            md.contains("| W2 drain, 1 worker, concurrency 50 | jobs/s | — | — | 20,000 (19,000–21,500) |")
        );
        assert!(md.contains("| W2 worker peak RSS | MiB | 12.5 | — | — |"));
        assert!(
            md.contains("| W1 enqueue, batch API (`submit_many`, 100 jobs a call, 1 producer) | jobs/s |")
        );
        assert!(md.contains("- W5 memory per queued job, Redis: one fill."));
        assert!(
            md.contains("| W2 drain (Redis) | 10,000 | 2.01 | 1.03 | 1.00 | 19.5 | 41 | 88 | hset 3.00 |")
        );
        assert!(md.contains("- peers: not run"));
        for (_, label, _) in ROWS {
            assert!(md.contains(label), "row `{label}` missing");
        }
    }

    #[test]
    fn a_run_with_padded_payloads_or_a_tuned_redis_says_so_and_the_standard_run_does_not() {
        let standard = render_markdown(&sample_results());
        assert!(!standard.contains("Not the standard run"), "{standard}");
        let mut r = sample_results();
        r.params.pad_bytes = 1_000;
        r.params.redis_config = vec!["hash-max-listpack-value 1024".to_owned(), "maxmemory 0".to_owned()];
        let md = render_markdown(&r);
        assert!(md.contains("every payload carries a field `pad` of 1,000 bytes"), "{md}");
        assert!(md.contains("`CONFIG SET hash-max-listpack-value 1024`, `CONFIG SET maxmemory 0`"), "{md}");
        // A results.json written before these fields existed still reads, as a standard run.
        let mut old = serde_json::to_value(sample_results()).expect("to JSON");
        let params = old["params"].as_object_mut().expect("params");
        params.remove("pad_bytes");
        params.remove("redis_config");
        let read: Results = serde_json::from_value(old).expect("an older results.json reads");
        assert_eq!((read.params.pad_bytes, read.params.redis_config.len()), (0, 0));
    }

    #[test]
    fn numbers_are_formatted_for_their_unit() {
        assert_eq!(format_value(1_234_567.4, "jobs/s"), "1,234,567");
        assert_eq!(format_value(999.0, "bytes"), "999");
        assert_eq!(format_value(0.123, "ms"), "0.12");
        assert_eq!(format_value(12.34, "ms"), "12.3");
        assert_eq!(format_value(0.8449, "ratio"), "0.84");
        assert_eq!(format_value(-1_000.0, "jobs/s"), "-1,000");
    }

    #[test]
    fn marker_replacement_keeps_the_rest_of_the_document() {
        let doc = format!(
            "# Benchmarks\n\nintro\n\n{BEGIN_MARKER}\nold table\n{END_MARKER}\n\n## Analysis\nkept\n"
        );
        let new = replace_between_markers(&doc, "\nnew table\n").expect("replaced");
        assert_eq!(
            new,
            format!(
                "# Benchmarks\n\nintro\n\n{BEGIN_MARKER}\nnew table\n{END_MARKER}\n\n## Analysis\nkept\n"
            )
        );
        assert_eq!(replace_between_markers(&new, "new table").expect("again"), new, "idempotent");
    }

    #[test]
    fn marker_replacement_refuses_missing_repeated_or_reversed_markers() {
        assert!(replace_between_markers("no markers", "x").unwrap_err().contains("not found"));
        let twice = format!("{BEGIN_MARKER}{BEGIN_MARKER}{END_MARKER}");
        assert!(replace_between_markers(&twice, "x").unwrap_err().contains("more than once"));
        let reversed = format!("{END_MARKER} {BEGIN_MARKER}");
        assert!(replace_between_markers(&reversed, "x").unwrap_err().contains("comes before"));
    }
}
