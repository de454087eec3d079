//! Shared helpers for the workspace scenarios: start the real `laneway serve` binary as a child
//! process on a free loopback port (or `laneway worker`, which has no HTTP), talk to it over HTTP,
//! and stop it (SIGKILL or SIGTERM).
//!
//! Every failure message carries the tail of the process's log: a scenario that fails against a
//! separate process is hard to debug without it.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long a fresh process may take to answer `GET /healthz` with 200.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM.
pub const TERMINATE_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of the log shown in a failure message.
const LOG_TAIL_LINES: usize = 60;
/// Attempts at starting when the picked port was taken in between (the binary cannot listen).
const PORT_ATTEMPTS: usize = 3;
/// What `laneway worker` logs once its workers run.
pub const WORKER_READY_LINE: &str = "laneway worker running";

/// Milliseconds since the Unix epoch, by the same clock the server stamps job records with.
#[must_use]
pub fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// A loopback address with a port nobody listens on right now (bound to port 0, then released).
///
/// # Panics
/// When no loopback socket can be bound.
#[must_use]
pub fn free_loopback_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("local address of the port-picking socket")
}

/// Calls `probe` every [`POLL_INTERVAL`] until it returns `Some`, for at most `deadline`; `None`
/// when the deadline passed first (the caller fails with its own context).
pub async fn poll_until<T, F, Fut>(deadline: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The `laneway` binary of the profile these tests were built with, built (or found up to date)
/// once per test process.
///
/// # Panics
/// When `cargo build --bin laneway` fails or does not produce it.
#[must_use]
pub fn laneway_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(locate_or_build_binary) {
        Ok(path) => path.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn locate_or_build_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    // The test runs as target/<profile>/deps/scenarios-<hash>; the binary is target/<profile>/laneway.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable location {}", exe.display()))?
        .to_path_buf();
    let binary = profile_dir.join(format!("laneway{}", std::env::consts::EXE_SUFFIX));
    // Built every time the tests start, not only when missing: `cargo test` builds the binary's
    // unit tests but not the binary itself, so a binary left from an earlier build would be
    // tested instead of the code under test. When it is up to date this costs a second.
    // Cargo sets CARGO_MANIFEST_DIR when it runs the tests; the compile-time value is the fallback.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let workspace = manifest_dir.parent().ok_or("the tests package has no parent directory")?.to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(&workspace).args(["build", "--bin", "laneway"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
    }
    // Build into the target directory these tests run from (it may differ from the default).
    if let Some(target_dir) = profile_dir.parent().filter(|t| t.join("CACHEDIR.TAG").is_file()) {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let shown = format!("{command:?}");
    let output = command.output().map_err(|e| {
        format!(
            "the laneway binary at {} must be built and `{shown}` could not run ({e}); \
             run `cargo build --bin laneway` in {} first",
            binary.display(),
            workspace.display()
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "the laneway binary at {} must be built and `{shown}` failed ({}):\n{}",
            binary.display(),
            output.status,
            tail(&stderr, 40)
        ));
    }
    if !binary.is_file() {
        return Err(format!(
            "`{shown}` succeeded but {} still does not exist; build it with `cargo build --bin laneway`",
            binary.display()
        ));
    }
    Ok(binary)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Environment variables of the binary that a developer's shell may set: cleared for the child so
/// that only what a scenario passes applies (e.g. no real LLM behind `LLM_BASE_URL`).
const SCRUBBED_ENV: &[&str] = &[
    "JOB_QUEUE_BACKEND",
    "RQ_BACKEND_ENABLED",
    "REDIS_URL",
    "TENANT_ID",
    "DATA_DIR",
    "LANEWAY_TENANTS",
    "UPLOADS_DIR",
    "CHAT_WORKER_POOL_SIZE",
    "CHAT_LANE_MAX_QUEUE",
    "CHAT_LANE_DEBOUNCE_MS",
    "CHAT_JOB_CLAIM_TTL_SEC",
    "OCR_MAX_CONCURRENCY",
    "LLM_MAX_CONCURRENCY",
    "LLM_MAX_CONCURRENCY_STUDENT",
    "LLM_MAX_CONCURRENCY_TEACHER",
    "PROFILE_UPDATE_QUEUE_MAX",
    "APP_ENV",
    "ENV",
    "MASTER_KEY",
    "TENANT_ADMIN_KEY",
    "TENANT_DATA_BASE_DIR",
    "AUTH_REQUIRED",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "LLM_MODEL",
    "LLM_TIMEOUT_SEC",
    "CHAT_RESPONDER_DELAY_MS",
    "JOB_MAX_ATTEMPTS",
    "JOB_RETENTION_HOURS",
    "LIMITER_LEASE_SEC",
    "LANEWAY_ADDR",
    "LOG_FORMAT",
    "RUST_LOG",
    // rustls-native-certs's roots for rediss://: a scenario that needs a CA passes SSL_CERT_FILE itself.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// A running `laneway serve` or `laneway worker` child process, killed (SIGKILL) when dropped.
///
/// A worker has no HTTP API: its [`LanewayProcess::base_url`] names no server, and the HTTP
/// methods fail on it.
#[derive(Debug)]
pub struct LanewayProcess {
    child: Child,
    base_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    api: Api,
}

impl LanewayProcess {
    /// Starts `laneway serve` with `DATA_DIR=data_dir`, `LANEWAY_ADDR` on a free loopback port
    /// and the extra `env`, its output going to `data_dir/logs/laneway-<test pid>-<n>.log`, and
    /// waits until `GET /healthz` answers 200.
    ///
    /// # Panics
    /// When the binary cannot be found or built, cannot be spawned, exits, or is not healthy
    /// within [`STARTUP_DEADLINE`]; the message carries the log's tail.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(data_dir, &[], env).await
    }

    /// As [`LanewayProcess::start`], with extra arguments after `serve` (e.g. `--no-workers`).
    ///
    /// # Panics
    /// As [`LanewayProcess::start`].
    pub async fn start_with_args(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let binary = laneway_binary();
        let logs = log_dir(data_dir);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log_path = logs.join(format!("laneway-{}-{}.log", std::process::id(), next_start()));
            let addr = free_loopback_addr();
            let command: Vec<&str> = std::iter::once("serve").chain(args.iter().copied()).collect();
            let child = spawn(&binary, &command, data_dir, Some(addr), env, &log_path);
            let base_url = format!("http://{addr}");
            let mut process = Self {
                child,
                api: Api::new(base_url.clone()),
                base_url,
                data_dir: data_dir.to_path_buf(),
                log_path,
            };
            match process.wait_healthy().await {
                Ok(()) => return process,
                Err(exited) => {
                    let log = process.log_text();
                    if exited && log.contains("cannot listen on") && attempt < PORT_ATTEMPTS {
                        // Someone took the port between picking and binding it: pick another.
                        continue;
                    }
                    panic!("laneway did not become healthy\n{}", process.context());
                }
            }
        }
    }

    /// Starts `laneway worker` (workers only, no HTTP) with `DATA_DIR=data_dir` and the extra
    /// `env` (which must select Redis: `JOB_QUEUE_BACKEND=redis`, `REDIS_URL`), its output going
    /// to `data_dir/logs/worker-<test pid>-<n>.log`, and waits until it logs
    /// [`WORKER_READY_LINE`].
    ///
    /// # Panics
    /// When the binary cannot be found or built, cannot be spawned, exits, or does not log that
    /// it runs within [`STARTUP_DEADLINE`]; the message carries the log's tail.
    pub async fn worker(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let binary = laneway_binary();
        let log_path = log_dir(data_dir).join(format!("worker-{}-{}.log", std::process::id(), next_start()));
        let child = spawn(&binary, &["worker"], data_dir, None, env, &log_path);
        let base_url = "(none: laneway worker has no HTTP API)".to_owned();
        let mut process = Self {
            child,
            api: Api::new(base_url.clone()),
            base_url,
            data_dir: data_dir.to_path_buf(),
            log_path,
        };
        let end = Instant::now() + STARTUP_DEADLINE;
        loop {
            if process.log_text().contains(WORKER_READY_LINE) {
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("laneway worker exited ({status}) before it ran\n{}", process.context());
            }
            if Instant::now() >= end {
                panic!(
                    "laneway worker did not log {WORKER_READY_LINE:?} within {STARTUP_DEADLINE:?}\n{}",
                    process.context()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls `GET /healthz` until 200. `Err(true)` when the process exited, `Err(false)` when the
    /// deadline passed.
    async fn wait_healthy(&mut self) -> Result<(), bool> {
        let url = format!("{}/healthz", self.base_url);
        let end = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(true);
            }
            let probe = self.api.client.get(&url).timeout(Duration::from_secs(2)).send().await;
            if probe.is_ok_and(|r| r.status().as_u16() == 200) {
                // Still ours: a child that lost its port exits, and another server answered.
                return match self.child.try_wait() {
                    Ok(None) => Ok(()),
                    _ => Err(true),
                };
            }
            if Instant::now() >= end {
                return Err(false);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `http://127.0.0.1:<port>` (for a worker, a note that it has none).
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `DATA_DIR` it runs on.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where its stdout and stderr go.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything it logged so far (at most the last MiB).
    #[must_use]
    pub fn log_text(&self) -> String {
        const MAX: u64 = 1024 * 1024;
        let Ok(mut file) = File::open(&self.log_path) else {
            return format!("(no log at {})", self.log_path.display());
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last lines of its log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), LOG_TAIL_LINES)
    }

    /// What to append to a failure message: which process, and the tail of its log.
    #[must_use]
    pub fn context(&self) -> String {
        format!(
            "laneway pid {} at {} (DATA_DIR {}); last {LOG_TAIL_LINES} lines of {}:\n{}",
            self.child.id(),
            self.base_url,
            self.data_dir.display(),
            self.log_path.display(),
            self.log_tail()
        )
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    ///
    /// # Panics
    /// When the process cannot be signalled or reaped.
    pub fn kill(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        // std's Child::kill sends SIGKILL on Unix.
        self.child.kill().unwrap_or_else(|e| panic!("cannot SIGKILL laneway: {e}\n{}", self.context()));
        self.child.wait().unwrap_or_else(|e| panic!("cannot reap laneway: {e}\n{}", self.context()))
    }

    /// Sends SIGTERM (a graceful stop) and waits for the exit, at most [`TERMINATE_DEADLINE`].
    ///
    /// # Panics
    /// When `kill -TERM` fails or the process is still running after the deadline (it is then
    /// killed); the message carries the log's tail.
    pub async fn terminate(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.as_ref().is_ok_and(ExitStatus::success) {
            panic!("`kill -TERM {pid}` failed ({sent:?})\n{}", self.context());
        }
        let end = Instant::now() + TERMINATE_DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < end => tokio::time::sleep(POLL_INTERVAL).await,
                Ok(None) => {
                    let context = self.context();
                    self.kill();
                    panic!("laneway still running {TERMINATE_DEADLINE:?} after SIGTERM\n{context}");
                }
                Err(e) => panic!("cannot wait for laneway: {e}\n{}", self.context()),
            }
        }
    }

    /// A cloneable HTTP client for this process, for requests sent from spawned tasks.
    #[must_use]
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// `GET path`: the status and the body as JSON (a non-JSON body comes back as a string).
    ///
    /// # Panics
    /// When the request fails at the transport level; the message carries the log's tail.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.api.get(path).await.unwrap_or_else(|e| panic!("{e}\n{}", self.context()))
    }

    /// `POST path` with `body` as JSON.
    ///
    /// # Panics
    /// As [`LanewayProcess::get`].
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.api.post_json(path, body).await.unwrap_or_else(|e| panic!("{e}\n{}", self.context()))
    }

    /// `POST path` with raw bytes and the given `Content-Type`.
    ///
    /// # Panics
    /// As [`LanewayProcess::get`].
    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        self.api
            .post_raw(path, content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.context()))
    }
}

/// A small JSON-over-HTTP client for one laneway process. Each call answers the status and the
/// body as JSON (a body that is not JSON comes back as a JSON string), or the transport error.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base_url: String,
}

impl Api {
    /// A client for the server at `base_url` (`http://host:port`).
    ///
    /// # Panics
    /// When the HTTP client cannot be built.
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build the HTTP client");
        Self { client, base_url: base_url.into() }
    }

    /// `GET path`.
    ///
    /// # Errors
    /// The transport error, with the path.
    pub async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        send(path, self.client.get(self.url(path))).await
    }

    /// `POST path` with `body` as JSON.
    ///
    /// # Errors
    /// As [`Api::get`].
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        send(path, self.client.post(self.url(path)).json(body)).await
    }

    /// `POST path` with raw bytes and the given `Content-Type`.
    ///
    /// # Errors
    /// As [`Api::get`].
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<(u16, Value), String> {
        let request = self.client.post(self.url(path)).header("content-type", content_type).body(body.into());
        send(path, request).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

async fn send(path: &str, request: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let response = request.send().await.map_err(|e| format!("request to {path} failed: {e:?}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("reading the answer to {path} failed: {e:?}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

impl Drop for LanewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `data_dir/logs`, created when missing.
fn log_dir(data_dir: &Path) -> PathBuf {
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .unwrap_or_else(|e| panic!("cannot create the log directory {}: {e}", logs.display()));
    logs
}

/// A number no other start of this test process used, for log file names.
fn next_start() -> usize {
    static STARTS: AtomicUsize = AtomicUsize::new(0);
    STARTS.fetch_add(1, Ordering::Relaxed)
}

/// Runs `binary args...` with a scrubbed environment plus `env`; `LANEWAY_ADDR` is set when
/// `addr` is given.
fn spawn(
    binary: &Path,
    args: &[&str],
    data_dir: &Path,
    addr: Option<SocketAddr>,
    env: &[(&str, &str)],
    log_path: &Path,
) -> Child {
    let log = File::create(log_path)
        .unwrap_or_else(|e| panic!("cannot create the log file {}: {e}", log_path.display()));
    let log_err = log.try_clone().unwrap_or_else(|e| panic!("cannot share the log file: {e}"));
    let mut command = Command::new(binary);
    command.args(args);
    for var in SCRUBBED_ENV {
        command.env_remove(var);
    }
    command.env("DATA_DIR", data_dir).env("RUST_LOG", "info").env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
    if let Some(addr) = addr {
        command.env("LANEWAY_ADDR", addr.to_string());
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
    command.spawn().unwrap_or_else(|e| panic!("cannot start {} {}: {e}", binary.display(), args.join(" ")))
}

/// A valid `POST /chat/start` body: a student's one-message chat, in the student's default lane
/// (`student:{student_id}:main`).
#[must_use]
pub fn student_chat(request_id: &str, student_id: &str, message: &str) -> Value {
    serde_json::json!({
        "request_id": request_id,
        "role": "student",
        "student_id": student_id,
        "messages": [{"role": "user", "content": message}],
    })
}
