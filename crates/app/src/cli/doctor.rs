//! `laneway doctor`: checks what `laneway serve` needs before it runs, without a server: the
//! settings, the data directory, the master-key policy, Redis (when selected), the LLM provider
//! (when set) and the listening port. One line per check (`ok`, `warn`, `FAIL`), each problem in
//! plain words with what to do about it; exits non-zero when a check fails.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use app_core::diagnose::{self, HttpProbe, MasterKeyStatus};
use app_core::{Mode, Settings};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// The checks' results, printed as they come.
#[derive(Debug, Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn line(&mut self, verdict: Verdict, check: &str, message: &str) {
        if verdict == Verdict::Fail {
            self.failed += 1;
        }
        let mut lines = message.lines();
        println!("{verdict:<4}  {check:<10}  {}", lines.next().unwrap_or_default());
        for more in lines {
            println!("{:<18}{more}", "");
        }
    }
}

/// What the remaining checks need, from valid settings or, when they are not, from the raw
/// variables (so one bad value does not hide the other problems).
struct Facts {
    data_dir: PathBuf,
    redis_url: Option<String>,
    redis: bool,
    llm_base_url: Option<String>,
    addr: Option<SocketAddr>,
}

/// Runs `laneway doctor`.
pub async fn run(getenv: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let mut report = Report::default();
    let raw = |k: &str| getenv(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let facts = match Settings::from_env(getenv) {
        Ok(settings) => {
            report.line(
                Verdict::Ok,
                "settings",
                &format!(
                    "valid ({} backend, tenants {}, app env {})",
                    settings.backend.as_str(),
                    settings.tenants().iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>().join(","),
                    settings.app_env
                ),
            );
            for warning in &settings.warnings {
                report.line(Verdict::Warn, "settings", warning);
            }
            Facts {
                data_dir: settings.data_dir.clone(),
                redis_url: settings.redis_url.clone(),
                redis: settings.backend == Mode::Redis,
                llm_base_url: settings.llm_base_url.clone(),
                addr: Some(settings.addr),
            }
        }
        Err(e) => {
            let mut message = format!(
                "{} bad setting{}; fix each and run `laneway doctor` again:",
                e.problems.len(),
                if e.problems.len() == 1 { "" } else { "s" }
            );
            for p in &e.problems {
                message.push_str(&format!("\n{p}"));
            }
            report.line(Verdict::Fail, "settings", &message);
            let backend = raw("JOB_QUEUE_BACKEND").unwrap_or_default().to_ascii_lowercase();
            Facts {
                data_dir: raw("DATA_DIR").map_or_else(|| PathBuf::from("./data"), PathBuf::from),
                redis_url: raw("REDIS_URL"),
                redis: matches!(backend.as_str(), "redis" | "rq" | "redis-rq"),
                llm_base_url: raw("LLM_BASE_URL"),
                addr: match raw("LANEWAY_ADDR") {
                    None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
                    Some(a) => a.parse().ok(),
                },
            }
        }
    };

    check_data_dir(&mut report, &facts.data_dir);
    check_master_key(&mut report, getenv);
    check_redis(&mut report, &facts).await;
    check_llm(&mut report, facts.llm_base_url.as_deref()).await;
    check_port(&mut report, facts.addr);

    if report.failed > 0 {
        anyhow::bail!("{} check{} failed", report.failed, if report.failed == 1 { "" } else { "s" });
    }
    println!("all checks passed");
    Ok(())
}

fn check_data_dir(report: &mut Report, dir: &Path) {
    let shown = dir.display();
    if let Err(e) = std::fs::create_dir_all(dir) {
        report.line(
            Verdict::Fail,
            "data dir",
            &format!("DATA_DIR {shown} does not exist and cannot be created ({e});\ncreate it or point DATA_DIR at a writable directory"),
        );
        return;
    }
    let probe = dir.join(format!(".laneway-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"laneway doctor") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            report.line(Verdict::Ok, "data dir", &format!("{shown} exists and is writable"));
        }
        Err(e) => report.line(
            Verdict::Fail,
            "data dir",
            &format!("cannot write in DATA_DIR {shown} ({e});\ngive this user write access or point DATA_DIR elsewhere"),
        ),
    }
}

fn check_master_key(report: &mut Report, getenv: &dyn Fn(&str) -> Option<String>) {
    match diagnose::master_key_policy(getenv) {
        Ok(MasterKeyStatus::Configured) => report.line(Verdict::Ok, "master key", "MASTER_KEY is set and acceptable"),
        Ok(MasterKeyStatus::DevDefault) => report.line(
            Verdict::Warn,
            "master key",
            "MASTER_KEY is not set: the development default is used;\nfine for development, refused when APP_ENV=production",
        ),
        Err(e) => report.line(Verdict::Fail, "master key", &format!("{e}\n(laneway serve refuses to start)")),
    }
}

/// `scheme://user:pass@host` → `scheme://***@host`.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &part[..s + 3], &part[at..]),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn check_redis(report: &mut Report, facts: &Facts) {
    if !facts.redis {
        report.line(Verdict::Ok, "redis", "not used (JOB_QUEUE_BACKEND is inline: queues run in process)");
        return;
    }
    let Some(url) = facts.redis_url.as_deref() else {
        report.line(
            Verdict::Fail,
            "redis",
            "JOB_QUEUE_BACKEND=redis but REDIS_URL is not set; set REDIS_URL=redis://host:6379",
        );
        return;
    };
    let shown = redact(url);
    match diagnose::probe_redis(url).await {
        Ok(info) => report.line(
            Verdict::Ok,
            "redis",
            &format!(
                "Redis {} reachable at {shown}{}",
                info.version,
                info.mode.map(|m| format!(" ({m})")).unwrap_or_default()
            ),
        ),
        Err(diagnose::RedisProbeError::Unreachable(why)) => report.line(
            Verdict::Fail,
            "redis",
            &format!("Redis unreachable at {shown}: {why};\nstart Redis there or fix REDIS_URL"),
        ),
        Err(e) => report.line(
            Verdict::Fail,
            "redis",
            &format!("{e} (at {shown}); check REDIS_URL and its password"),
        ),
    }
}

async fn check_llm(report: &mut Report, base_url: Option<&str>) {
    let Some(url) = base_url else {
        report.line(
            Verdict::Ok,
            "llm",
            "LLM_BASE_URL not set: chats are answered by the built-in deterministic responder",
        );
        return;
    };
    let shown = redact(url);
    match diagnose::probe_http(url).await {
        HttpProbe::Status(s) if s < 400 => report.line(Verdict::Ok, "llm", &format!("{shown} answered {s}")),
        HttpProbe::Status(s) if s < 500 => report.line(
            Verdict::Warn,
            "llm",
            &format!("{shown} is reachable but answered {s} to a plain GET (often normal for an API base URL)"),
        ),
        HttpProbe::Status(s) => {
            report.line(Verdict::Warn, "llm", &format!("{shown} answered {s}: the provider reports an error"));
        }
        HttpProbe::Unreachable(why) => report.line(
            Verdict::Fail,
            "llm",
            &format!("LLM_BASE_URL {shown} is unreachable: {why};\nfix LLM_BASE_URL or unset it to use the deterministic responder"),
        ),
    }
}

fn check_port(report: &mut Report, addr: Option<SocketAddr>) {
    let Some(addr) = addr else {
        report.line(Verdict::Fail, "port", "LANEWAY_ADDR is not an address (see settings above)");
        return;
    };
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            report.line(Verdict::Ok, "port", &format!("{addr} is free"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => report.line(
            Verdict::Warn,
            "port",
            &format!("{addr} is in use: fine if laneway already runs there, otherwise stop what holds it or set LANEWAY_ADDR"),
        ),
        Err(e) => report.line(
            Verdict::Fail,
            "port",
            &format!("cannot listen on {addr} ({e}); set LANEWAY_ADDR to an address of this machine"),
        ),
    }
}
