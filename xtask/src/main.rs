//! Developer commands for the Laneway workspace: `cargo xtask ci`, `cargo xtask test`,
//! `cargo xtask bench`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
Usage: cargo xtask <command> [args...]

Commands:
  ci              run every CI check in order, stopping at the first failure:
                    1. fmt     cargo fmt --all -- --check
                    2. clippy  cargo clippy --workspace --all-targets -- -D warnings
                    3. test    cargo test --workspace
  test [args...]  cargo test --workspace [args...] (args are passed through)
  bench [--quick] build the benchmark runner in release (cargo build --release -p laneway-bench)
                  and run it: W1-W5 on the inline and Redis backends plus same-run baselines,
                  against a redis-server it starts itself; writes target/bench/results.json and
                  the tables of BENCHMARKS.md (--quick: smaller sizes, under 2 minutes)
  help            print this text";

/// One CI step: a name for the log and the cargo arguments that run it.
#[derive(Debug)]
struct Step {
    name: &'static str,
    args: &'static [&'static str],
}

const TEST_ARGS: &[&str] = &["test", "--workspace"];

const CI_STEPS: &[Step] = &[
    Step { name: "fmt", args: &["fmt", "--all", "--", "--check"] },
    Step { name: "clippy", args: &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"] },
    Step { name: "test", args: TEST_ARGS },
];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    let command = command.map(|c| c.to_string_lossy().into_owned());
    let outcome = match command.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("ci") => ci(&rest),
        Some("test") => test(&rest),
        Some("bench") => bench(&rest),
        Some(unknown) => {
            eprintln!("xtask: unknown command `{unknown}`\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn ci(extra: &[OsString]) -> Result<()> {
    if !extra.is_empty() {
        bail!("`ci` takes no arguments (got {extra:?}); use `cargo xtask test ...` to pass test arguments");
    }
    let root = workspace_root()?;
    let total = Instant::now();
    for (index, step) in CI_STEPS.iter().enumerate() {
        let shown = format!("cargo {}", step.args.join(" "));
        println!("==> [{}/{}] {}: {shown}", index + 1, CI_STEPS.len(), step.name);
        let started = Instant::now();
        let result = run_cargo(&root, step.args.iter().map(OsString::from));
        let elapsed = started.elapsed().as_secs_f64();
        if let Err(err) = result {
            return Err(err.context(format!("ci step `{}` failed after {elapsed:.1}s", step.name)));
        }
        println!("<== {}: ok in {elapsed:.1}s", step.name);
    }
    println!("ci: all {} steps passed in {:.1}s", CI_STEPS.len(), total.elapsed().as_secs_f64());
    Ok(())
}

fn test(extra: &[OsString]) -> Result<()> {
    let root = workspace_root()?;
    let args = TEST_ARGS.iter().map(OsString::from).chain(extra.iter().cloned());
    run_cargo(&root, args)
}

fn bench(extra: &[OsString]) -> Result<()> {
    let quick = match extra {
        [] => false,
        [flag] if flag == "--quick" => true,
        _ => bail!("`bench` takes only `--quick` (got {extra:?})"),
    };
    let root = workspace_root()?;
    run_cargo(&root, ["build", "--release", "-p", "laneway-bench"].map(OsString::from))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { root.join(target) };
    let runner = target.join("release").join("laneway-bench");
    let command = if quick { "cargo xtask bench --quick" } else { "cargo xtask bench" };
    let mut cmd = Command::new(&runner);
    cmd.arg("run");
    if quick {
        cmd.arg("--quick");
    }
    cmd.arg("--command")
        .arg(command)
        .arg("--results")
        .arg(target.join("bench").join("results.json"))
        .arg("--markdown")
        .arg(root.join("BENCHMARKS.md"))
        .arg("--tmp")
        .arg(target.join("bench").join("tmp"))
        .current_dir(&root);
    let status = cmd.status().with_context(|| format!("could not start {}", runner.display()))?;
    if !status.success() {
        bail!("{} exited with {status}", runner.display());
    }
    Ok(())
}

/// Runs cargo (the one that launched us, via `CARGO`) in `root`, failing on a non-zero exit.
fn run_cargo(root: &Path, args: impl IntoIterator<Item = OsString>) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let args: Vec<OsString> = args.into_iter().collect();
    let shown = format!(
        "{} {}",
        cargo.to_string_lossy(),
        args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    let status = Command::new(&cargo)
        .args(&args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("xtask manifest dir {} has no parent", manifest_dir.display()))
}
