//! Developer commands for the Laneway workspace: `cargo xtask ci`, `cargo xtask test`,
//! `cargo xtask bench`, `cargo xtask bench-peers`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

// The peers' versions live in one place, in the benchmark runner's crate; xtask installs them.
#[path = "../../crates/bench/src/peers/pins.rs"]
mod pins;

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
  bench-peers [--quick]
                  install BullMQ (npm), RQ (PyPI, in a venv) and apalis + apalis-redis
                  (crates.io, a scratch cargo project) into target/peers/ at the versions pinned
                  in crates/bench/src/peers/pins.rs (skipped when already there), then run W1-W3
                  on Laneway's Redis backend and on each peer, each driven by a script of ours in
                  crates/bench/peers/; writes target/bench/peers.json and the peers' table of
                  BENCHMARKS.md (--quick: smaller sizes, one run). Needs node + npm and python3.
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
        Some("bench-peers") => bench_peers(&rest),
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
    let target = target_dir(&root);
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

fn target_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    if target.is_absolute() { target } else { root.join(target) }
}

fn bench_peers(extra: &[OsString]) -> Result<()> {
    let quick = match extra {
        [] => false,
        [flag] if flag == "--quick" => true,
        _ => bail!("`bench-peers` takes only `--quick` (got {extra:?})"),
    };
    let root = workspace_root()?;
    // Issue 5 puts the peers under the workspace's target/, whatever CARGO_TARGET_DIR says.
    let peers = root.join("target").join("peers");
    let drivers = root.join("crates").join("bench").join("peers");
    for (tool, why) in [
        ("node", "Node.js (18 or later) runs BullMQ; Debian/Ubuntu: apt-get install nodejs npm"),
        ("npm", "npm installs BullMQ; Debian/Ubuntu: apt-get install npm"),
        ("python3", "Python 3 (with venv) runs RQ; Debian/Ubuntu: apt-get install python3 python3-venv"),
    ] {
        require_tool(tool, why)?;
    }
    std::fs::create_dir_all(&peers).with_context(|| format!("cannot create {}", peers.display()))?;
    let installs: [(&str, Install); 3] =
        [("bullmq", install_bullmq), ("rq", install_rq), ("apalis", install_apalis)];
    for (id, install) in installs {
        let failed = peers.join(format!("{id}.failed"));
        match install(&peers, &drivers) {
            Ok(()) => {
                if failed.exists() {
                    std::fs::remove_file(&failed)?;
                }
            }
            Err(err) => {
                // The table says so for this column; the other columns are still measured.
                eprintln!("xtask: could not install {id}: {err:#}");
                std::fs::write(&failed, format!("{err:#}\n"))?;
            }
        }
    }
    run_cargo(&root, ["build", "--release", "-p", "laneway-bench"].map(OsString::from))?;
    let target = target_dir(&root);
    // Run a private copy: the runner re-executes itself for its worker processes, and a
    // `cargo build` of someone else replacing target/release/laneway-bench during the run would
    // leave it nothing to execute.
    let built = target.join("release").join("laneway-bench");
    let runner = peers.join("laneway-bench");
    if runner.exists() {
        std::fs::remove_file(&runner)?;
    }
    std::fs::copy(&built, &runner)
        .with_context(|| format!("cannot copy {} to {}", built.display(), runner.display()))?;
    let command = if quick { "cargo xtask bench-peers --quick" } else { "cargo xtask bench-peers" };
    let mut cmd = Command::new(&runner);
    cmd.arg("peers");
    if quick {
        cmd.arg("--quick");
    }
    cmd.arg("--command")
        .arg(command)
        .arg("--results")
        .arg(target.join("bench").join("peers.json"))
        .arg("--markdown")
        .arg(root.join("BENCHMARKS.md"))
        .arg("--peers-dir")
        .arg(&peers)
        .arg("--drivers")
        .arg(&drivers)
        .current_dir(&root);
    let status = cmd.status().with_context(|| format!("could not start {}", runner.display()))?;
    if !status.success() {
        bail!("{} exited with {status}", runner.display());
    }
    Ok(())
}

/// Installs one peer into the peers directory, given where our driver scripts are.
type Install = fn(&Path, &Path) -> Result<()>;

/// Fails, naming `tool` and what it is for, when it is not on PATH.
fn require_tool(tool: &str, why: &str) -> Result<()> {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!("`{tool} --version` failed ({}): {why}", out.status),
        Err(e) => bail!("`{tool}` is not on PATH ({e}); bench-peers needs it: {why}"),
    }
}

/// Runs `program args` in `dir`, failing with its command line on a non-zero exit.
fn run_tool(program: &Path, args: &[&str], dir: &Path) -> Result<()> {
    let shown = format!("{} {}", program.display(), args.join(" "));
    println!("==> {shown}");
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

/// Writes `contents` to `path` unless it already holds exactly that (keeps cargo from
/// rebuilding, and mtimes still).
fn write_if_changed(path: &Path, contents: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// The `"version"` of an npm `package.json`.
fn package_json_version(json: &str) -> Option<&str> {
    let at = json.find("\"version\"")?;
    let rest = json[at + "\"version\"".len()..].trim_start().strip_prefix(':')?.trim_start();
    rest.strip_prefix('"')?.split('"').next()
}

fn install_bullmq(peers: &Path, drivers: &Path) -> Result<()> {
    let dir = peers.join("bullmq");
    let installed = |pin: pins::Pin| {
        let manifest = dir.join("node_modules").join(pin.package).join("package.json");
        std::fs::read_to_string(manifest)
            .ok()
            .is_some_and(|json| package_json_version(&json) == Some(pin.version))
    };
    if installed(pins::BULLMQ) && installed(pins::IOREDIS) {
        println!(
            "bench-peers: bullmq {} and ioredis {} already installed",
            pins::BULLMQ.version,
            pins::IOREDIS.version
        );
    } else {
        std::fs::create_dir_all(&dir)?;
        let bullmq = format!("{}@{}", pins::BULLMQ.package, pins::BULLMQ.version);
        let ioredis = format!("{}@{}", pins::IOREDIS.package, pins::IOREDIS.version);
        let prefix = dir.to_string_lossy().into_owned();
        run_tool(
            Path::new("npm"),
            &["install", "--prefix", &prefix, "--save-exact", "--no-audit", "--no-fund", &bullmq, &ioredis],
            peers,
        )?;
    }
    // The driver must sit next to node_modules for `import 'bullmq'` to resolve.
    let script = std::fs::read_to_string(drivers.join("bullmq").join("bench.mjs"))?;
    write_if_changed(&dir.join("bench.mjs"), &script)
}

fn install_rq(peers: &Path, _drivers: &Path) -> Result<()> {
    let venv = peers.join("rq-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let dest = venv.to_string_lossy().into_owned();
        run_tool(Path::new("python3"), &["-m", "venv", &dest], peers)?;
    }
    let probe = "import importlib.metadata as m; print(m.version('rq'))";
    let installed = Command::new(&python)
        .args(["-c", probe])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if installed.as_deref() == Some(pins::RQ.version) {
        println!("bench-peers: rq {} already installed", pins::RQ.version);
        return Ok(());
    }
    let rq = format!("{}=={}", pins::RQ.package, pins::RQ.version);
    run_tool(&python, &["-m", "pip", "install", "--disable-pip-version-check", "--quiet", &rq], peers)
}

/// The scratch project's manifest: the pinned apalis crates and what the driver uses. The empty
/// `[workspace]` table makes it a workspace of its own, not a stray member of ours.
fn apalis_manifest() -> String {
    format!(
        r#"# Written by `cargo xtask bench-peers` from crates/bench/src/peers/pins.rs; not committed.
[package]
name = "laneway-peer-apalis"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
{} = "={}"
{} = "={}"
redis = {{ version = "1", default-features = false, features = ["aio", "tokio-comp", "connection-manager"] }}
tokio = {{ version = "1", features = ["rt-multi-thread", "macros", "time"] }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
"#,
        pins::APALIS.package,
        pins::APALIS.version,
        pins::APALIS_REDIS.package,
        pins::APALIS_REDIS.version,
    )
}

fn install_apalis(peers: &Path, drivers: &Path) -> Result<()> {
    let dir = peers.join("apalis");
    write_if_changed(&dir.join("Cargo.toml"), &apalis_manifest())?;
    let main = std::fs::read_to_string(drivers.join("apalis").join("main.rs"))?;
    write_if_changed(&dir.join("src").join("main.rs"), &main)?;
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let manifest = dir.join("Cargo.toml").to_string_lossy().into_owned();
    let target = dir.join("target").to_string_lossy().into_owned();
    println!(
        "bench-peers: building apalis {} + apalis-redis {} (release; a no-op when up to date)",
        pins::APALIS.version,
        pins::APALIS_REDIS.version
    );
    run_tool(&cargo, &["build", "--release", "--manifest-path", &manifest, "--target-dir", &target], &dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_of_a_package_json_is_read_without_a_json_parser() {
        let json = "{\n  \"name\": \"bullmq\",\n  \"version\": \"6.7.0\",\n  \"main\": \"x\"\n}";
        assert_eq!(package_json_version(json), Some("6.7.0"));
        assert_eq!(package_json_version("{\"version\":\"1.2.3\"}"), Some("1.2.3"));
        assert_eq!(package_json_version("{\"name\": \"x\"}"), None);
    }

    #[test]
    fn the_apalis_scratch_project_pins_its_crates_and_is_a_workspace_of_its_own() {
        let manifest = apalis_manifest();
        assert!(manifest.contains("\n[workspace]\n"));
        assert!(manifest.contains(&format!("apalis = \"={}\"", pins::APALIS.version)));
        assert!(manifest.contains(&format!("apalis-redis = \"={}\"", pins::APALIS_REDIS.version)));
        assert!(manifest.contains("name = \"laneway-peer-apalis\""), "the runner looks for this binary");
    }
}
