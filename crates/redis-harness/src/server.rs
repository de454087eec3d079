//! One `redis-server` process on a free loopback port, in a temp dir it owns.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binaries::{REDIS_SERVER, REDIS_SERVER_HINT, require_redis_server};
use crate::ports::{self, PortUse};
use crate::resp::{self, Reply};
use crate::tls::ServerCert;

/// How long a start or restart may take until the server answers PING (AOF replay included).
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a graceful stop may take until the process has exited.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Between two readiness or exit checks.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// New ports to try when another process takes the chosen one before the server binds it.
const PORT_ATTEMPTS: usize = 5;
/// Log lines quoted in a panic message.
const PANIC_LOG_LINES: usize = 30;
/// The server's log file (its stdout and stderr too) in its temp dir.
const LOG_FILE: &str = "redis.log";

/// A `redis-server` started for a test: a free loopback port, a fresh temp dir, killed on drop.
///
/// By default it runs with `--save "" --appendonly no` (no persistence); extra arguments given to
/// [`start_with`](Self::start_with) come after the defaults, so they override or extend them.
/// [`kill`](Self::kill), [`stop`](Self::stop) and [`restart`](Self::restart) keep the port, the
/// directory and the arguments, so a test can crash a server and bring it back on the same data.
///
/// [`start_tls`](Self::start_tls) adds a TLS port beside the plain one: clients under test get
/// [`tls_url`](Self::tls_url), while the harness keeps the plain port for its own readiness
/// checks, [`command`](Self::command) and `SHUTDOWN` (its small RESP client speaks no TLS).
///
/// Every method panics (with the tail of the server's log) when the server misbehaves: this is
/// test support, and a failed test is the right outcome.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// The TLS port, when started with TLS (the same across restarts).
    tls_port: Option<u16>,
    /// Every argument after the program name, kept for `restart`.
    args: Vec<String>,
    log_path: PathBuf,
    /// The pid of the latest process started, running or not.
    pid: u32,
    /// The running process; `None` once killed or stopped. Behind a mutex so that `is_running`,
    /// which must reap an exited child, takes `&self` (nodes of a cluster are shared).
    child: Mutex<Option<Child>>,
    /// Kept alive as long as the server: its data, AOF, cluster config and log live here.
    dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` with the defaults and waits until it answers PING.
    ///
    /// # Panics
    /// When `redis-server` is not on `PATH` (with how to install it), or when the server exits
    /// early or does not answer PING within 10 s (with the tail of its log).
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `redis-server` with extra arguments after the defaults, e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`, and waits until it answers PING.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with(args: &[&str]) -> Self {
        let extra: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        Self::start_on(PortUse::Single, None, |_| extra.clone())
    }

    /// Starts `redis-server` serving TLS with `cert` on a second free loopback port
    /// ([`tls_url`](Self::tls_url)), clients not asked for a certificate
    /// (`--tls-auth-clients no`), and waits until it answers PING on its plain port.
    ///
    /// # Panics
    /// As [`start`](Self::start); also when the server cannot load the certificate (with its log
    /// tail), e.g. a `redis-server` built without TLS.
    #[must_use]
    pub fn start_tls(cert: &ServerCert) -> Self {
        Self::start_on(PortUse::Single, Some(cert), |_| Vec::new())
    }

    /// Starts a server on a port fit for `port_use` (and, with `tls`, a second one for TLS);
    /// `extra_args` gets the plain port (a cluster node names its config file after it).
    pub(crate) fn start_on(
        port_use: PortUse,
        tls: Option<&ServerCert>,
        extra_args: impl Fn(u16) -> Vec<String>,
    ) -> Self {
        require_redis_server();
        let dir = tempfile::Builder::new()
            .prefix("redis-harness-")
            .tempdir()
            .unwrap_or_else(|err| panic!("could not create a temp dir for redis-server: {err}"));
        let log_path = dir.path().join(LOG_FILE);
        let mut taken_ports = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = ports::free_port(port_use);
            let tls_port = tls.map(|_| ports::free_port(port_use));
            let args: Vec<String> = default_args(port, dir.path(), &log_path)
                .into_iter()
                .chain(tls.zip(tls_port).map(|(cert, tls_port)| tls_args(tls_port, cert)).unwrap_or_default())
                .chain(extra_args(port))
                .collect();
            let deadline = Instant::now() + START_DEADLINE;
            match launch(&args, &log_path, port, deadline) {
                Ok(child) => {
                    let pid = child.id();
                    return Self { port, tls_port, args, log_path, pid, child: Mutex::new(Some(child)), dir };
                }
                Err(LaunchError::PortTaken) => taken_ports.extend(std::iter::once(port).chain(tls_port)),
                Err(err) => panic!("{}", err.message(port, &args, &log_path)),
            }
        }
        panic!(
            "redis-server found ports {taken_ports:?} taken by another process when it tried to bind them; \
             log tail:\n{}",
            tail(&log_path, PANIC_LOG_LINES)
        );
    }

    /// The loopback port the server listens on (the same across restarts).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, for a Redis client.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The loopback port the server serves TLS on, when started with TLS.
    #[must_use]
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `rediss://127.0.0.1:<tls port>/`, for a Redis client that speaks TLS.
    ///
    /// # Panics
    /// When the server was not started with TLS.
    #[must_use]
    pub fn tls_url(&self) -> String {
        let port =
            self.tls_port.unwrap_or_else(|| panic!("redis-server on port {} has no TLS port", self.port));
        format!("rediss://127.0.0.1:{port}/")
    }

    /// `127.0.0.1:<port>`, as `redis-cli` and cluster replies name a node.
    #[must_use]
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The pid of the latest `redis-server` process started, even once killed or stopped.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory the server runs in (`--dir`): data, AOF, cluster config and log.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it. Nothing is flushed beyond
    /// what the server already wrote. Does nothing if it is not running.
    ///
    /// # Panics
    /// When the process cannot be reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child_mut().take() {
            // An error here means the process has already exited; `wait` reaps it either way.
            let _ = child.kill();
            if let Err(err) = child.wait() {
                panic!("could not reap redis-server (pid {}) on port {}: {err}", self.pid, self.port);
            }
        }
    }

    /// Stops the server gracefully and waits (up to 10 s) for it to exit: `SHUTDOWN` over TCP,
    /// which flushes the AOF when it is on, or SIGTERM (via the `kill` command) when `SHUTDOWN` is
    /// refused. Does nothing if it is not running.
    ///
    /// # Panics
    /// When the server has not exited by the deadline (it is then killed), with its log tail.
    pub fn stop(&mut self) {
        let port = self.port;
        let pid = self.pid;
        let Some(mut child) = self.child_mut().take() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let how = if resp::shutdown(port) {
            "SHUTDOWN"
        } else {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            "SHUTDOWN (refused), then SIGTERM"
        };
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                waited => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server (pid {pid}) on port {port} did not exit within {STOP_DEADLINE:?} of \
                         {how} ({waited:?}); killed it. Log tail:\n{}",
                        self.log_tail(PANIC_LOG_LINES)
                    );
                }
            }
        }
    }

    /// Starts the server again on the same port, directory and arguments, and waits until it
    /// answers PING (after replaying its AOF, if it has one). A running server is first stopped
    /// gracefully. While the port is briefly still in use, retries until the 10 s deadline.
    ///
    /// # Panics
    /// When the server exits early or does not answer PING by the deadline, with its log tail.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match launch(&self.args, &self.log_path, self.port, deadline) {
                Ok(child) => {
                    self.pid = child.id();
                    *self.child_mut() = Some(child);
                    return;
                }
                Err(LaunchError::PortTaken) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Err(err) => panic!("restart: {}", err.message(self.port, &self.args, &self.log_path)),
            }
        }
    }

    /// Whether the server process is still alive (a crashed one is reaped and reports `false`).
    #[must_use]
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The last `lines` lines of the server's log (its stdout and stderr included), across
    /// restarts.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    /// Sends one command and returns the reply as a test reads it: simple and bulk strings as
    /// they are (`OK`, `PONG`, a value, INFO text), errors as `(error) <message>` (e.g.
    /// `(error) MOVED 866 127.0.0.1:7001`), integers in decimal, nil as `(nil)`, arrays flattened
    /// one element a line (`KEYS`, `CONFIG GET`; an empty array is the empty string).
    ///
    /// # Panics
    /// When the server cannot be reached or its reply cannot be read, with its log tail.
    // No #[must_use]: a test may send SET for its effect alone.
    pub fn command(&self, args: &[&str]) -> String {
        self.request(args).render()
    }

    /// Sends one command and returns the parsed reply; panics like [`command`](Self::command).
    pub(crate) fn request(&self, args: &[&str]) -> Reply {
        self.try_request(args).unwrap_or_else(|err| {
            panic!(
                "redis command {args:?} to {} failed: {err}; log tail:\n{}",
                self.addr(),
                self.log_tail(PANIC_LOG_LINES)
            )
        })
    }

    /// Sends one command; an unreachable server is an error, not a panic (for poll loops).
    pub(crate) fn try_request(&self, args: &[&str]) -> io::Result<Reply> {
        resp::request(self.port, args)
    }

    fn child_mut(&mut self) -> &mut Option<Child> {
        self.child.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for RedisServer {
    /// Kills the process (SIGKILL) and reaps it; never panics.
    fn drop(&mut self) {
        if let Some(mut child) = self.child_mut().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `p` as a command-line argument.
pub(crate) fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The arguments every server gets; caller arguments follow and win.
fn default_args(port: u16, dir: &Path, log_path: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &path(dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        &path(log_path),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The arguments that serve TLS with `cert` on `tls_port`, without client certificates.
fn tls_args(tls_port: u16, cert: &ServerCert) -> Vec<String> {
    vec![
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--tls-cert-file".to_owned(),
        path(&cert.cert),
        "--tls-key-file".to_owned(),
        path(&cert.key),
        "--tls-ca-cert-file".to_owned(),
        path(&cert.ca_cert),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
    ]
}

/// Why a launch did not produce a server answering PING.
#[derive(Debug)]
enum LaunchError {
    NotFound,
    Spawn(io::Error),
    /// The port (or the cluster bus port) was bound by someone else.
    PortTaken,
    Exited(ExitStatus),
    NoAnswer,
}

impl LaunchError {
    fn message(&self, port: u16, args: &[String], log_path: &Path) -> String {
        let what = match self {
            Self::NotFound => return REDIS_SERVER_HINT.to_owned(),
            Self::Spawn(err) => format!("could not run redis-server: {err}"),
            Self::PortTaken => format!("redis-server found port {port} in use"),
            Self::Exited(status) => format!("redis-server on port {port} exited early ({status})"),
            Self::NoAnswer => {
                format!("redis-server on port {port} did not answer PING within {START_DEADLINE:?}")
            }
        };
        format!("{what}; args {args:?}; log tail:\n{}", tail(log_path, PANIC_LOG_LINES))
    }
}

/// Runs `redis-server args` and waits until it answers PING on `port`, or exits, or the deadline
/// passes (then it is killed).
fn launch(args: &[String], log_path: &Path, port: u16, deadline: Instant) -> Result<Child, LaunchError> {
    // Only the part of the log this attempt writes decides whether the port was taken.
    let log_start = fs::metadata(log_path).map_or(0, |meta| meta.len());
    let output = OpenOptions::new().create(true).append(true).open(log_path).map_err(LaunchError::Spawn)?;
    let stderr = output.try_clone().map_err(LaunchError::Spawn)?;
    let mut child = Command::new(REDIS_SERVER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(stderr)
        .spawn()
        .map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                LaunchError::NotFound
            } else {
                LaunchError::Spawn(err)
            }
        })?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = fs::read(log_path).unwrap_or_default();
                let this_attempt = log.get(usize::try_from(log_start).unwrap_or(0)..).unwrap_or_default();
                return Err(if String::from_utf8_lossy(this_attempt).contains("Address already in use") {
                    LaunchError::PortTaken
                } else {
                    LaunchError::Exited(status)
                });
            }
            Ok(None) => {}
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LaunchError::Spawn(err));
            }
        }
        // A PONG from another process that holds the port does not count: ours must say so.
        if resp::answers_ping(port) && serves_as(port, child.id()) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::NoAnswer);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Whether the server on `port` is process `pid` (`INFO server` names its `process_id`).
fn serves_as(port: u16, pid: u32) -> bool {
    resp::request(port, &["INFO", "server"])
        .is_ok_and(|info| info.render().lines().any(|line| line.trim() == format!("process_id:{pid}")))
}

/// The last `lines` lines of a file, or a note that it cannot be read.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}
