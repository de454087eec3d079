//! The peers' driver scripts (`crates/bench/peers/`), seen from the runner: where each one is
//! installed, how it is started, and the lines it prints. A driver runs one mode per process
//! (`version`, `produce-single`, `produce-concurrent`, `produce-batch`, `fill`, `latency`,
//! `work`); it may print `ready` (a worker that has started and gone idle) and ends with one
//! `result {json}` line, or with `error <why>` when it fails.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::BenchResult;

/// A peer's column: its id in `results.json`, its heading, and how its driver is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The column id: `bullmq`, `apalis`, `rq`.
    pub id: &'static str,
    /// The heading of its column.
    pub heading: &'static str,
}

/// The peers, in the order of their columns.
pub const PEERS: [Peer; 3] = [
    Peer { id: "bullmq", heading: "BullMQ" },
    Peer { id: "apalis", heading: "apalis-redis" },
    Peer { id: "rq", heading: "RQ" },
];

/// How to start a peer's driver: the program and the arguments before the Redis URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// The peer's column id.
    pub id: &'static str,
    /// The program.
    pub program: PathBuf,
    /// Its first arguments (the script).
    pub prefix: Vec<PathBuf>,
}

impl Driver {
    /// Where `cargo xtask bench-peers` installs the driver of `id`: the BullMQ script is copied
    /// next to its `node_modules` in `peers_dir/bullmq`; RQ's runs from `drivers/rq` on the
    /// venv's python; apalis's is a release binary of the scratch project `peers_dir/apalis`.
    #[must_use]
    pub fn locate(id: &'static str, peers_dir: &Path, drivers: &Path) -> Option<Self> {
        let (program, prefix) = match id {
            "bullmq" => (PathBuf::from("node"), vec![peers_dir.join("bullmq").join("bench.mjs")]),
            "apalis" => (
                peers_dir.join("apalis").join("target").join("release").join("laneway-peer-apalis"),
                Vec::new(),
            ),
            "rq" => (
                peers_dir.join("rq-venv").join("bin").join("python"),
                vec![drivers.join("rq").join("bench.py")],
            ),
            _ => return None,
        };
        Some(Self { id, program, prefix })
    }

    /// The files that must exist for the driver to run.
    #[must_use]
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = self.prefix.iter().map(PathBuf::as_path).collect();
        if self.program.is_absolute() {
            files.push(&self.program);
        }
        files
    }

    /// Starts the driver in `mode` against `url`.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn spawn(&self, url: &str, mode: &[String]) -> BenchResult<DriverProcess> {
        let mut args: Vec<OsString> = self.prefix.iter().map(|p| p.clone().into_os_string()).collect();
        args.push(url.into());
        args.extend(mode.iter().map(OsString::from));
        let mut child = Command::new(&self.program)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{} driver: cannot start {}: {e}", self.id, self.program.display()))?;
        let stdout = child.stdout.take().ok_or("driver without stdout")?;
        let what = format!("{} driver ({})", self.id, mode.first().map_or("", String::as_str));
        Ok(DriverProcess { child, lines: BufReader::new(stdout).lines(), what, id: self.id })
    }
}

/// One line a driver printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// `ready`: the worker has started and gone idle.
    Ready,
    /// `result {json}`: the JSON.
    Result(&'a str),
    /// `error <why>`: the driver failed, and why.
    Error(&'a str),
    /// Anything else (a library's own output), passed on to stderr.
    Other(&'a str),
}

/// Classifies one line of a driver's stdout.
#[must_use]
pub fn classify(line: &str) -> Line<'_> {
    let line = line.trim_end();
    if line == "ready" {
        Line::Ready
    } else if let Some(json) = line.strip_prefix("result ") {
        Line::Result(json)
    } else if let Some(why) = line.strip_prefix("error ") {
        Line::Error(why)
    } else {
        Line::Other(line)
    }
}

/// What a producing mode reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Produced {
    /// Jobs enqueued (fewer than asked when the cap ended the run).
    pub jobs: u64,
    /// From the first enqueue to the last one's return (s).
    pub elapsed_s: f64,
}

/// What the `work` mode reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Worked {
    /// Jobs completed (fewer than expected when the cap ended the run).
    pub completed: u64,
    /// From the first job's start to the last completion seen (s).
    pub elapsed_s: f64,
    /// `VmHWM` of the worker process (KiB).
    pub vm_hwm_kib: u64,
    /// Enqueue→start latencies (µs) of the jobs that carried a `t`.
    #[serde(default)]
    pub latencies_us: Vec<f64>,
}

/// What the `version` mode reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    /// The package measured.
    pub peer: String,
    /// Its installed version.
    pub version: String,
    /// The runtime and client library under it.
    pub runtime: String,
}

/// Parses the JSON of a `result` line.
///
/// # Errors
/// When it is not the JSON of `T`.
pub fn parse_result<T: DeserializeOwned>(json: &str) -> BenchResult<T> {
    serde_json::from_str(json).map_err(|e| format!("a driver's result line {json:?}: {e}").into())
}

/// A running driver, read line by line.
#[derive(Debug)]
pub struct DriverProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    what: String,
    id: &'static str,
}

impl DriverProcess {
    /// The next line that is `ready` or a result, passing others on to stderr.
    async fn next(&mut self, deadline: Instant) -> BenchResult<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => {
                    let status = self.child.wait().await?;
                    return Err(format!("{} exited ({status}) without a result", self.what).into());
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(format!("{} timed out", self.what).into()),
            };
            match classify(&line) {
                Line::Other(text) => eprintln!("  [{}] {text}", self.id),
                Line::Error(why) => return Err(format!("{}: {why}", self.what).into()),
                Line::Ready | Line::Result(_) => return Ok(line),
            }
        }
    }

    /// Waits for `ready`.
    ///
    /// # Errors
    /// When the driver ends, times out, or reports a result first.
    pub async fn ready(&mut self, timeout: Duration) -> BenchResult<()> {
        let line = self.next(Instant::now() + timeout).await?;
        match classify(&line) {
            Line::Ready => Ok(()),
            _ => Err(format!("{}: expected `ready`, got {line:?}", self.what).into()),
        }
    }

    /// Waits for the result (skipping `ready`) and for the driver to exit successfully.
    ///
    /// # Errors
    /// When the driver fails, times out, or its result does not parse as `T`.
    pub async fn result<T: DeserializeOwned>(mut self, timeout: Duration) -> BenchResult<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next(deadline).await?;
            if let Line::Result(json) = classify(&line) {
                let value = parse_result(json)?;
                let left = deadline.saturating_duration_since(Instant::now());
                let status = tokio::time::timeout(left.max(Duration::from_secs(5)), self.child.wait())
                    .await
                    .map_err(|_| format!("{} did not exit after its result", self.what))??;
                if !status.success() {
                    return Err(format!("{} exited with {status}", self.what).into());
                }
                return Ok(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_lines_are_ready_a_result_or_noise() {
        assert_eq!(classify("ready"), Line::Ready);
        assert_eq!(classify("ready\r"), Line::Ready);
        assert_eq!(classify("result {\"jobs\":1}"), Line::Result("{\"jobs\":1}"));
        assert_eq!(classify("npm warn something"), Line::Other("npm warn something"));
        assert_eq!(classify("results are in"), Line::Other("results are in"));
        assert_eq!(classify("error the worker stopped"), Line::Error("the worker stopped"));
    }

    #[test]
    fn the_drivers_result_lines_parse_as_their_modes_report() {
        // As printed by bench.mjs, bench.py (spaces after separators) and the apalis driver.
        let produced: Produced = parse_result("{\"jobs\":5000,\"elapsed_s\":2.10136764}").expect("node");
        assert_eq!(produced, Produced { jobs: 5000, elapsed_s: 2.101_367_64 });
        let worked: Worked = parse_result(
            "{\"completed\": 1170, \"elapsed_s\": 10.0, \"vm_hwm_kib\": 34412, \"latencies_us\": [12.5, 7]}",
        )
        .expect("python");
        assert_eq!(worked.completed, 1170);
        assert_eq!(worked.vm_hwm_kib, 34_412);
        assert_eq!(worked.latencies_us, vec![12.5, 7.0]);
        let no_latencies: Worked =
            parse_result("{\"completed\":3,\"elapsed_s\":0.5,\"vm_hwm_kib\":4300}").expect("apalis");
        assert!(no_latencies.latencies_us.is_empty());
        let version: Version = parse_result(
            "{\"peer\":\"apalis-redis\",\"runtime\":\"apalis 1.0.0, redis-rs 1.8.1\",\"version\":\"1.0.0\"}",
        )
        .expect("version");
        assert_eq!(version.version, "1.0.0");
        assert!(parse_result::<Produced>("{\"jobs\":\"many\"}").is_err());
        assert!(parse_result::<Worked>("not json").is_err());
    }

    #[test]
    fn drivers_are_found_where_xtask_installs_them() {
        let (peers, drivers) = (Path::new("/w/target/peers"), Path::new("/w/crates/bench/peers"));
        let node = Driver::locate("bullmq", peers, drivers).expect("bullmq");
        assert_eq!(node.program, PathBuf::from("node"));
        assert_eq!(node.files(), vec![Path::new("/w/target/peers/bullmq/bench.mjs")]);
        let rq = Driver::locate("rq", peers, drivers).expect("rq");
        assert_eq!(
            rq.files(),
            vec![
                Path::new("/w/crates/bench/peers/rq/bench.py"),
                Path::new("/w/target/peers/rq-venv/bin/python")
            ]
        );
        let apalis = Driver::locate("apalis", peers, drivers).expect("apalis");
        assert_eq!(apalis.program, peers.join("apalis/target/release/laneway-peer-apalis"));
        assert!(Driver::locate("sidekiq", peers, drivers).is_none());
    }
}
