//! `laneway-bench`: the benchmark runner behind `cargo xtask bench` (issue 5). It starts its own
//! Redis, runs the workloads W1–W5 on the inline backend (memory and SQLite stores) and on the
//! Redis backend next to same-run baselines, writes `results.json` and replaces the tables of
//! BENCHMARKS.md. See this crate's README.
//!
//! `laneway-bench run [--quick] [--command CMD] [--results PATH] [--markdown PATH] [--tmp DIR]
//! [--only w1,w2,…]`;
//! `laneway-bench child '<task JSON>'` is how the runner starts a worker process of its own;
//! `laneway-bench peers [--quick] …` measures W1–W3 next to BullMQ, apalis-redis and RQ
//! (`cargo xtask bench-peers`, see `peers.rs`).

mod baseline;
mod child;
mod machine;
mod peers;
mod probe;
mod progress;
mod redis_stats;
mod report;
mod runner;
mod stats;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;

/// Any failure of a run: benchmarks stop at the first one and say what it was.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
/// A result of the runner.
pub type BenchResult<T> = Result<T, BenchError>;

const USAGE: &str = "\
Usage: laneway-bench run [--quick] [--command CMD] [--results PATH] [--markdown PATH] [--tmp DIR]
                         [--only base,w1,w2,w3,w4,w5]
       laneway-bench render [--results PATH] [--markdown PATH]   (tables from a results.json)
       laneway-bench peers [--quick] [--results PATH] [--markdown PATH] [--peers-dir DIR] [--drivers DIR]
       laneway-bench peers-render [--results PATH] [--markdown PATH]   (the peers' table)
       (normally through `cargo xtask bench [--quick]`; --only is for development and leaves
       BENCHMARKS.md alone)";

fn parse_run(args: &[String]) -> BenchResult<runner::Options> {
    let mut opts = runner::Options {
        quick: false,
        command: "laneway-bench run".to_owned(),
        results: PathBuf::from("target/bench/results.json"),
        markdown: PathBuf::from("BENCHMARKS.md"),
        tmp: PathBuf::from("target/bench/tmp"),
        only: None,
    };
    parse_flags(args, USAGE, |flag, value| {
        match flag {
            "--quick" => opts.quick = true,
            "--command" => opts.command = value()?,
            "--results" => opts.results = value()?.into(),
            "--markdown" => opts.markdown = value()?.into(),
            "--tmp" => opts.tmp = value()?.into(),
            "--only" => opts.only = Some(value()?.split(',').map(str::to_owned).collect()),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(opts)
}

/// Walks `args` for a subcommand's flags: `take(flag, value)` applies one flag (calling
/// `value()` for the argument after it) and answers whether it knows the flag. An unknown
/// flag or a missing value is an error that quotes `usage`.
///
/// # Errors
/// As described.
pub fn parse_flags(
    args: &[String],
    usage: &str,
    mut take: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String>,
) -> BenchResult<()> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        if !take(arg, &mut value)? {
            return Err(format!("unknown argument `{arg}`\n{usage}").into());
        }
    }
    Ok(())
}

/// Re-renders the tables of BENCHMARKS.md from a results.json, without measuring anything.
fn render(args: &[String]) -> BenchResult<()> {
    let opts = parse_run(args)?;
    let results: report::Results = serde_json::from_str(&std::fs::read_to_string(&opts.results)?)?;
    runner::write_markdown(&opts, &results)
}

async fn dispatch(args: Vec<String>) -> BenchResult<()> {
    match args.first().map(String::as_str) {
        Some("run") => on_a_worker(runner::run(parse_run(&args[1..])?)).await,
        Some("render") => render(&args[1..]),
        Some("peers") => on_a_worker(peers::run(peers::parse_args(&args[1..])?)).await,
        Some("peers-render") => peers::render(&peers::parse_args(&args[1..])?),
        Some("child") => {
            let spec = args.get(1).ok_or("child needs a task")?;
            child::run_child(serde_json::from_str(spec)?).await
        }
        _ => Err(USAGE.into()),
    }
}

/// Runs the runner's work in a spawned task, on the runtime's worker threads, as a server's
/// request handlers and the peers' drivers run theirs; not in `block_on` on the main thread. A
/// loop there that awaits one Redis call at a time crosses threads at every call (its
/// connection's driver task runs on a worker): a third of one producer's awaited submits on this
/// VM. A child stays in `block_on`: its loop that waits for a drain's or a probe's end must not
/// take a worker from the tasks it times.
async fn on_a_worker(work: impl Future<Output = BenchResult<()>> + Send + 'static) -> BenchResult<()> {
    tokio::spawn(work).await.unwrap_or_else(|e| Err(format!("the bench's task failed: {e}").into()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "help") || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("laneway-bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laneway-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
