//! What `laneway-bench peers` produces: the `peers.json` model and the Markdown table that goes
//! between `<!-- peers:begin -->` and `<!-- peers:end -->` in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::report::{Machine, format_figure, format_value};
use crate::stats::Figure;

/// Bumped when the shape of `peers.json` changes.
pub const SCHEMA: u32 = 1;

/// Where the peers' table starts in BENCHMARKS.md.
pub const BEGIN_MARKER: &str = "<!-- peers:begin -->";
/// Where it ends.
pub const END_MARKER: &str = "<!-- peers:end -->";

/// The column of Laneway itself.
pub const LANEWAY: &str = "laneway";

/// The sizes a peers run used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerParams {
    /// Rounds; each figure is the median of this many runs.
    pub runs: usize,
    /// W1: jobs per measurement (a measurement also stops after `w1_time_cap_s`).
    pub w1_jobs: u64,
    /// W1: longest a measurement may take.
    pub w1_time_cap_s: u64,
    /// W1 batch API: jobs per batch.
    pub w1_batch: u64,
    /// W2: jobs enqueued before the worker starts.
    pub w2_jobs: u64,
    /// W2 again with a small backlog: what a queue whose cost grows with its backlog (or that
    /// cannot take a big one) does with a few thousand jobs.
    pub w2_small_jobs: u64,
    /// W2: longest a drain may take from its first start; slower workers report the jobs done
    /// by then.
    pub w2_time_cap_s: u64,
    /// W3: jobs sent at `w3_rate` per second.
    pub w3_jobs: u64,
    /// W3: the steady send rate.
    pub w3_rate: u64,
    /// Worker concurrency in W2 and W3.
    pub concurrency: usize,
    /// Producers in "50 producers".
    pub producers: usize,
}

/// One column: a queue, what was installed of it, and how it was set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// `laneway`, `bullmq`, `apalis`, `rq`.
    pub id: String,
    /// Its heading.
    pub heading: String,
    /// The version measured, as its driver reported it.
    pub version: Option<String>,
    /// The runtime and client under it.
    pub runtime: Option<String>,
    /// How it was configured for the workloads.
    pub setup: String,
    /// Why it was not measured, when it was not.
    pub missing: Option<String>,
}

/// Everything `peers.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerResults {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The command that reproduces the run.
    pub command: String,
    /// Whether it was `--quick`.
    pub quick: bool,
    /// When it finished (seconds since the Unix epoch).
    pub finished_unix_s: u64,
    /// How long it took (installs not included).
    pub duration_s: f64,
    /// Where it ran.
    pub machine: Machine,
    /// The sizes it used.
    pub params: PeerParams,
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// Every figure by id: `<row>.<column>` (`w2.bullmq`), ratios as `ratio_<row>.<peer>`.
    pub figures: BTreeMap<String, Figure>,
    /// Measurements that failed, with why (their figures are left out).
    pub failures: Vec<String>,
}

/// The rows of the table: row id, label, unit.
#[must_use]
pub fn rows(p: &PeerParams) -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("w1_single", "W1 enqueue, 1 producer, awaited one at a time".to_owned(), "jobs/s"),
        (
            "w1_single_ct",
            "W1 enqueue, 1 producer, on a current-thread runtime (the Rust producers)".to_owned(),
            "jobs/s",
        ),
        ("w1_p50", format!("W1 enqueue, {} concurrent producers", p.producers), "jobs/s"),
        (
            "w1_batch",
            format!("W1 enqueue, batch API, batches of {}", format_value(p.w1_batch as f64, "jobs/s")),
            "jobs/s",
        ),
        ("w2", format!("W2 drain, 1 worker process, concurrency {}", p.concurrency), "jobs/s"),
        ("w2_rss", "W2 worker peak RSS".to_owned(), "MiB"),
        (
            "w2_small",
            format!("W2 drain with {} queued instead", format_value(p.w2_small_jobs as f64, "jobs/s")),
            "jobs/s",
        ),
        ("w3_p50", format!("W3 enqueue→start p50 ({}/s onto an idle worker)", p.w3_rate), "ms"),
        ("w3_p99", "W3 enqueue→start p99".to_owned(), "ms"),
    ]
}

/// The ratio rows: id prefix, the row compared, label.
pub const RATIOS: [(&str, &str, &str); 6] = [
    ("ratio_w2", "w2", "Laneway / this peer: W2 drain"),
    ("ratio_w2_small", "w2_small", "Laneway / this peer: W2 drain, small backlog"),
    ("ratio_w1_single", "w1_single", "Laneway / this peer: W1, 1 producer"),
    ("ratio_w1_single_ct", "w1_single_ct", "Laneway / this peer: W1, 1 producer, current-thread"),
    ("ratio_w1_p50", "w1_p50", "Laneway / this peer: W1, 50 producers"),
    ("ratio_w1_batch", "w1_batch", "Laneway / this peer: W1, batch API"),
];

fn cell(r: &PeerResults, row: &str, col: &Column) -> String {
    if col.missing.is_some() {
        return "not installed".to_owned();
    }
    if let Some(f) = r.figures.get(&format!("{row}.{}", col.id)) {
        return format_figure(f);
    }
    // A measurement that failed in every run has no figure; its failure is listed below.
    let measured = match row {
        "w2_rss" => "w2",
        "w3_p50" | "w3_p99" => "w3",
        other => other,
    };
    if r.failures.iter().any(|f| f.starts_with(&format!("{}, {measured}:", col.id))) {
        return "failed (see below)".to_owned();
    }
    "—".to_owned()
}

/// Adds the Laneway / peer ratios of [`RATIOS`] to `figures`.
pub fn add_ratios(figures: &mut BTreeMap<String, Figure>, peers: &[&str]) {
    for (prefix, row, _) in RATIOS {
        let Some(ours) = figures.get(&format!("{row}.{LANEWAY}")).cloned() else { continue };
        for peer in peers {
            if let Some(ratio) =
                figures.get(&format!("{row}.{peer}")).and_then(|theirs| ours.ratio_to(theirs))
            {
                figures.insert(format!("{prefix}.{peer}"), ratio);
            }
        }
    }
}

/// The Markdown that goes between the peers' markers of BENCHMARKS.md.
#[must_use]
pub fn render_markdown(r: &PeerResults) -> String {
    let m = &r.machine;
    let p = &r.params;
    let mut out = String::new();
    let runs = if p.runs == 1 {
        "one run".to_owned()
    } else {
        format!("the median of {} runs with min–max", p.runs)
    };
    let _ =
        writeln!(out, "Reproduce with `{}`{}.", r.command, if r.quick { " (the quick sizes)" } else { "" });
    let _ = writeln!(
        out,
        "Measured on {} logical CPUs ({}), {} MiB RAM, Linux {}, CPU idle: {}; Redis {} on loopback \
         (`--save \"\" --appendonly no`), a fresh server started by the runner for each column in \
         each round, `FLUSHALL` between workloads. Each figure is {runs}; the columns take turns \
         round by round. The whole run took {:.0} s (load average at its start: {}; at its end: {}).",
        m.nproc,
        m.cpu_model,
        m.mem_total_mib,
        m.kernel,
        m.cpu_idle,
        m.redis_server,
        r.duration_s,
        m.load_at_start,
        m.load_at_end
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Sizes: W1 {} jobs (or {} s, whichever ends first); W2 {} jobs queued beforehand, and again {} (each \
         drain stops {} s after its first start at the latest); W3 {} jobs at {}/s; worker concurrency {}; \
         {} producers.",
        format_value(p.w1_jobs as f64, "jobs/s"),
        p.w1_time_cap_s,
        format_value(p.w2_jobs as f64, "jobs/s"),
        format_value(p.w2_small_jobs as f64, "jobs/s"),
        p.w2_time_cap_s,
        format_value(p.w3_jobs as f64, "jobs/s"),
        p.w3_rate,
        p.concurrency,
        p.producers,
    );
    let _ = writeln!(out);

    let _ = write!(out, "| workload | unit |");
    for c in &r.columns {
        let _ = write!(out, " {} |", c.heading);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(r.columns.len()));
    for (row, label, unit) in rows(p) {
        let _ = write!(out, "| {label} | {unit} |");
        for c in &r.columns {
            let _ = write!(out, " {} |", cell(r, row, c));
        }
        let _ = writeln!(out);
    }
    for (prefix, _, label) in RATIOS {
        let _ = write!(out, "| {label} | ratio |");
        for c in &r.columns {
            let shown = if c.id == LANEWAY { "".to_owned() } else { cell(r, prefix, c) };
            let _ = write!(out, " {shown} |");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "What ran:");
    let _ = writeln!(out);
    for c in &r.columns {
        match (&c.missing, &c.version) {
            (Some(why), _) => {
                let _ = writeln!(out, "- **{}**: not measured: {why}", c.heading);
            }
            (None, version) => {
                let version = version.as_deref().unwrap_or("version unknown");
                let runtime = c.runtime.as_deref().map_or(String::new(), |rt| format!(" ({rt})"));
                let _ = writeln!(out, "- **{} {version}**{runtime}: {}", c.heading, c.setup);
            }
        }
    }
    let mut notes = Vec::new();
    for (row, label, _) in rows(p) {
        for c in &r.columns {
            if let Some(note) = r.figures.get(&format!("{row}.{}", c.id)).and_then(|f| f.note.as_deref()) {
                notes.push(format!("- {label}, {}: {note}.", c.heading));
            }
        }
    }
    for f in &r.failures {
        notes.push(format!("- Failed: {f}"));
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(unit: &str, samples: &[f64]) -> Figure {
        Figure::of(unit, samples.to_vec()).expect("samples")
    }

    fn column(id: &str, heading: &str, missing: Option<&str>) -> Column {
        Column {
            id: id.to_owned(),
            heading: heading.to_owned(),
            version: missing.is_none().then(|| "1.2.3".to_owned()),
            runtime: missing.is_none().then(|| "Node v20".to_owned()),
            setup: format!("{heading} as configured"),
            missing: missing.map(str::to_owned),
        }
    }

    fn sample() -> PeerResults {
        let mut figures = BTreeMap::new();
        figures.insert("w2.laneway".to_owned(), fig("jobs/s", &[16_000.0, 17_000.0, 15_000.0]));
        figures.insert("w2.bullmq".to_owned(), fig("jobs/s", &[4_000.0, 4_000.0, 4_000.0]));
        figures.insert(
            "w2.rq".to_owned(),
            fig("jobs/s", &[100.0, 110.0, 120.0])
                .noted("the 20 s cap ended 3 of 3 runs, at 2000, 2200, 2400 jobs"),
        );
        figures.insert("w1_single.laneway".to_owned(), fig("jobs/s", &[2_500.0]));
        figures.insert("w1_single.bullmq".to_owned(), fig("jobs/s", &[2_000.0]));
        figures.insert("w1_batch.bullmq".to_owned(), fig("jobs/s", &[30_000.0]));
        figures.insert("w1_single_ct.laneway".to_owned(), fig("jobs/s", &[3_600.0]));
        figures.insert("w1_single_ct.apalis".to_owned(), fig("jobs/s", &[3_000.0]));
        figures.insert("w3_p50.bullmq".to_owned(), fig("ms", &[2.1]));
        add_ratios(&mut figures, &["bullmq", "apalis", "rq"]);
        PeerResults {
            schema: SCHEMA,
            command: "cargo xtask bench-peers --quick".to_owned(),
            quick: true,
            finished_unix_s: 1_700_000_000,
            duration_s: 80.0,
            machine: Machine {
                nproc: 2,
                cpu_model: "AMD EPYC".to_owned(),
                mem_total_mib: 24_105,
                kernel: "6.1".to_owned(),
                rustc: "rustc 1.95.0".to_owned(),
                redis_server: "7.0.15".to_owned(),
                cpu_idle: "haltpoll, guest halt polling 0 ns".to_owned(),
                load_at_start: "1.00 1.00 1.00".to_owned(),
                load_at_end: "2.00 2.00 2.00".to_owned(),
            },
            params: PeerParams {
                runs: 3,
                w1_jobs: 5_000,
                w1_time_cap_s: 5,
                w1_batch: 1_000,
                w2_jobs: 5_000,
                w2_small_jobs: 1_000,
                w2_time_cap_s: 20,
                w3_jobs: 500,
                w3_rate: 200,
                concurrency: 50,
                producers: 50,
            },
            columns: vec![
                column(LANEWAY, "Laneway (Redis)", None),
                column("bullmq", "BullMQ", None),
                column("apalis", "apalis-redis", Some("`cargo build` of the scratch project failed")),
                column("rq", "RQ", None),
            ],
            figures,
            failures: vec![
                "rq, w3: the rq driver (work) timed out (round 2 of 3)".to_owned(),
                "bullmq, w2: the worker stopped (all 3 rounds)".to_owned(),
            ],
        }
    }

    #[test]
    fn ratios_compare_laneway_with_each_measured_peer() {
        let r = sample();
        let w2 = &r.figures["ratio_w2.bullmq"];
        assert!((w2.median - 4.0).abs() < 1e-9);
        assert!((w2.min - 15_000.0 / 4_000.0).abs() < 1e-9);
        assert!((r.figures["ratio_w2.rq"].median - 16_000.0 / 110.0).abs() < 1e-9);
        assert!((r.figures["ratio_w1_single.bullmq"].median - 1.25).abs() < 1e-9);
        assert!((r.figures["ratio_w1_single_ct.apalis"].median - 1.2).abs() < 1e-9);
        assert!(!r.figures.contains_key("ratio_w1_single_ct.bullmq"), "one runtime in Node.js: no row");
        assert!(!r.figures.contains_key("ratio_w2.apalis"), "no figure, no ratio");
        assert!(!r.figures.contains_key("ratio_w1_p50.bullmq"), "Laneway's W1 50 is missing");
    }

    #[test]
    fn the_table_has_a_column_per_queue_and_says_what_is_missing() {
        let md = render_markdown(&sample());
        assert!(md.contains("`cargo xtask bench-peers --quick` (the quick sizes)"));
        assert!(md.contains("Linux 6.1, CPU idle: haltpoll, guest halt polling 0 ns;"));
        assert!(md.contains("| workload | unit | Laneway (Redis) | BullMQ | apalis-redis | RQ |"));
        assert!(md.contains("|---|---|---:|---:|---:|---:|"));
        assert!(md.contains(
            "| W2 drain, 1 worker process, concurrency 50 | jobs/s | 16,000 (15,000–17,000) | 4,000 | not installed | 110 (100–120) |"
        ));
        assert!(md.contains(
            "| W1 enqueue, batch API, batches of 1,000 | jobs/s | — | 30,000 | not installed | — |"
        ));
        assert!(md.contains(
            "| W3 enqueue→start p50 (200/s onto an idle worker) | ms | — | 2.10 | not installed | failed (see below) |"
        ));
        assert!(md.contains("| Laneway / this peer: W2 drain | ratio |  | 4.00 (3.75–4.25) | not installed | 145.45 (125.00–170.00) |"));
        assert!(md.contains("- **apalis-redis**: not measured: `cargo build` of the scratch project failed"));
        assert!(md.contains("- **BullMQ 1.2.3** (Node v20): BullMQ as configured"));
        assert!(
            md.contains("- W2 drain, 1 worker process, concurrency 50, RQ: the 20 s cap ended 3 of 3 runs")
        );
        assert!(md.contains("- Failed: rq, w3: the rq driver (work) timed out (round 2 of 3)"));
        assert!(md.contains("| W2 worker peak RSS | MiB | — | failed (see below) | not installed | — |"));
        assert!(md.contains("Each figure is the median of 3 runs with min–max"));
    }

    #[test]
    fn peers_json_reads_back_as_written() {
        let r = sample();
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["columns"][2]["missing"], "`cargo build` of the scratch project failed");
        assert_eq!(json["figures"]["w2.bullmq"]["median"], 4_000.0);
        let back: PeerResults = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, r);
    }

    #[test]
    fn the_peers_table_goes_between_its_own_markers() {
        let doc = format!(
            "intro\n<!-- bench:begin -->\nbench\n<!-- bench:end -->\n## Peers\n{BEGIN_MARKER}\nold\n{END_MARKER}\nafter\n"
        );
        let new =
            crate::report::replace_between(&doc, BEGIN_MARKER, END_MARKER, "new table\n").expect("replaced");
        assert_eq!(
            new,
            format!(
                "intro\n<!-- bench:begin -->\nbench\n<!-- bench:end -->\n## Peers\n{BEGIN_MARKER}\nnew table\n{END_MARKER}\nafter\n"
            )
        );
    }
}
