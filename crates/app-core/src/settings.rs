//! Settings from the environment (SPEC §6), typed and validated in one pass: every bad value is
//! reported at once, each with its variable name, so an operator fixes them all in one go.
//!
//! The library never reads `std::env` itself; the binary passes a lookup closure, which keeps
//! tests free of process-wide state.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use queue_core::{LaneStoreConfig, LimitCaps, Mode, TenantId};

use crate::responder::{
    ChatResponder, DeterministicResponder, OpenAiConfig, OpenAiResponder, ResponderError,
};

/// A secret value (a key). Its `Debug` prints `***`, and it has no `Display`, so it cannot end
/// up in a log line by accident; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One bad setting: the variable and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

/// Every bad setting found; the program must not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The problems, in the order the variables are read.
    pub problems: Vec<SettingsProblem>,
}

impl SettingsError {
    /// The problem reported for `var`, if any.
    #[must_use]
    pub fn problem(&self, var: &str) -> Option<&SettingsProblem> {
        self.problems.iter().find(|p| p.var == var)
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

/// `LOG_FORMAT`: how the binary writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the event and of its spans.
    Json,
}

impl LogFormat {
    /// `text` or `json`, any case, blanks trimmed; `None` for anything else.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The application's settings, one field per variable of SPEC §6 (plus the LLM, retry,
/// retention and HTTP settings of the service).
#[derive(Clone)]
pub struct Settings {
    /// `JOB_QUEUE_BACKEND` (or `RQ_BACKEND_ENABLED`): [`Mode::Inline`] or [`Mode::Redis`].
    pub backend: Mode,
    /// `REDIS_URL`: one URL, or a comma-separated list of Cluster seed nodes.
    pub redis_url: Option<String>,
    /// `TENANT_ID`.
    pub tenant_id: TenantId,
    /// `DATA_DIR`.
    pub data_dir: PathBuf,
    /// `LANEWAY_TENANTS`: more tenants served under `/t/{tenant}/`, comma-separated.
    pub extra_tenants: Vec<TenantId>,
    /// `UPLOADS_DIR` (default `DATA_DIR/uploads`).
    pub uploads_dir: PathBuf,
    /// `CHAT_WORKER_POOL_SIZE`.
    pub chat_worker_pool_size: usize,
    /// `CHAT_LANE_MAX_QUEUE`.
    pub chat_lane_max_queue: usize,
    /// `CHAT_LANE_DEBOUNCE_MS`.
    pub chat_lane_debounce_ms: u64,
    /// `CHAT_JOB_CLAIM_TTL_SEC`.
    pub chat_job_claim_ttl_sec: u64,
    /// `OCR_MAX_CONCURRENCY`.
    pub ocr_max_concurrency: usize,
    /// `LLM_MAX_CONCURRENCY`.
    pub llm_max_concurrency: usize,
    /// `LLM_MAX_CONCURRENCY_STUDENT` (default: the LLM total).
    pub llm_max_concurrency_student: usize,
    /// `LLM_MAX_CONCURRENCY_TEACHER` (default: the LLM total).
    pub llm_max_concurrency_teacher: usize,
    /// `PROFILE_UPDATE_QUEUE_MAX`.
    pub profile_update_queue_max: usize,
    /// `APP_ENV`, else `ENV`, else `development`.
    pub app_env: String,
    /// `MASTER_KEY`.
    pub master_key: Option<Secret>,
    /// `TENANT_ADMIN_KEY`.
    pub tenant_admin_key: Option<Secret>,
    /// `LLM_BASE_URL`: when unset, chats are answered by the deterministic responder.
    pub llm_base_url: Option<String>,
    /// `LLM_API_KEY`.
    pub llm_api_key: Option<Secret>,
    /// `LLM_MODEL`.
    pub llm_model: String,
    /// `LLM_TIMEOUT_SEC`.
    pub llm_timeout_sec: u64,
    /// `CHAT_RESPONDER_DELAY_MS`: makes the deterministic responder slow (crash tests).
    pub chat_responder_delay_ms: u64,
    /// `JOB_MAX_ATTEMPTS`: attempts before a job is dead-lettered.
    pub job_max_attempts: u32,
    /// `JOB_RETENTION_HOURS`: how long finished job records are kept.
    pub job_retention_hours: u64,
    /// `LIMITER_LEASE_SEC` (30, >= 1): lease of a Redis limiter permit; a killed process's
    /// permits come back after it.
    pub limiter_lease_sec: u64,
    /// `TENANT_DATA_BASE_DIR`: when set, the data directory of every tenant added through the
    /// admin API must lie under it.
    pub tenant_data_base_dir: Option<PathBuf>,
    /// `AUTH_REQUIRED`: every tenant request needs `Authorization: Bearer <key>` of its tenant.
    pub auth_required: bool,
    /// `LANEWAY_ADDR`: where the HTTP API listens.
    pub addr: SocketAddr,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// What was accepted but adjusted (values clamped to their minimum), for the binary to log.
    pub warnings: Vec<String>,
}

/// Hides credentials in a URL (`scheme://user:pass@host` → `scheme://***@host`), for `Debug`.
fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}***{}", &part[..scheme_end + 3], &part[at..])
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand, because URLs may carry passwords; the keys are `Secret`s already.
        f.debug_struct("Settings")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("tenant_id", &self.tenant_id)
            .field("data_dir", &self.data_dir)
            .field("extra_tenants", &self.extra_tenants)
            .field("uploads_dir", &self.uploads_dir)
            .field("chat_worker_pool_size", &self.chat_worker_pool_size)
            .field("chat_lane_max_queue", &self.chat_lane_max_queue)
            .field("chat_lane_debounce_ms", &self.chat_lane_debounce_ms)
            .field("chat_job_claim_ttl_sec", &self.chat_job_claim_ttl_sec)
            .field("ocr_max_concurrency", &self.ocr_max_concurrency)
            .field("llm_max_concurrency", &self.llm_max_concurrency)
            .field("llm_max_concurrency_student", &self.llm_max_concurrency_student)
            .field("llm_max_concurrency_teacher", &self.llm_max_concurrency_teacher)
            .field("profile_update_queue_max", &self.profile_update_queue_max)
            .field("app_env", &self.app_env)
            .field("master_key", &self.master_key)
            .field("tenant_admin_key", &self.tenant_admin_key)
            .field("llm_base_url", &self.llm_base_url.as_deref().map(redact_url))
            .field("llm_api_key", &self.llm_api_key)
            .field("llm_model", &self.llm_model)
            .field("llm_timeout_sec", &self.llm_timeout_sec)
            .field("chat_responder_delay_ms", &self.chat_responder_delay_ms)
            .field("job_max_attempts", &self.job_max_attempts)
            .field("job_retention_hours", &self.job_retention_hours)
            .field("limiter_lease_sec", &self.limiter_lease_sec)
            .field("tenant_data_base_dir", &self.tenant_data_base_dir)
            .field("auth_required", &self.auth_required)
            .field("addr", &self.addr)
            .field("log_format", &self.log_format)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Reads variables through the caller's lookup, collecting problems and warnings as it goes.
struct Reader<'a> {
    getenv: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<SettingsProblem>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    /// The variable's value; an empty (or all-blank) value counts as unset.
    fn get(&self, var: &str) -> Option<String> {
        (self.getenv)(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn problem(&mut self, var: &'static str, message: impl Into<String>) {
        self.problems.push(SettingsProblem { var, message: message.into() });
    }

    /// When set: a file that can be read and holds at least one PEM certificate.
    fn ca_file(&mut self, var: &'static str) {
        let Some(path) = self.get(var) else { return };
        const PEM: &[u8] = b"-----BEGIN CERTIFICATE-----";
        match std::fs::read(&path) {
            Err(e) => self.problem(var, format!("cannot read {path:?} ({e}); {CA_RULE}")),
            Ok(bytes) if !bytes.windows(PEM.len()).any(|w| w == PEM) => self.problem(
                var,
                format!("{path:?} holds no PEM certificate (no -----BEGIN CERTIFICATE----- line); {CA_RULE}"),
            ),
            Ok(_) => {}
        }
    }

    /// When set: a directory that can be listed.
    fn ca_dir(&mut self, var: &'static str) {
        let Some(path) = self.get(var) else { return };
        if let Err(e) = std::fs::read_dir(&path) {
            self.problem(var, format!("cannot read the directory {path:?} ({e}); {CA_RULE}"));
        }
    }

    /// An integer of at least `min`, `default` when unset. Values below `min` are clamped to it
    /// with a warning, as the original did; values that do not parse are problems.
    fn int(&mut self, var: &'static str, default: u64, min: u64) -> u64 {
        let Some(raw) = self.get(var) else { return default };
        match raw.parse::<i128>() {
            Ok(n) if n < i128::from(min) => {
                self.warnings.push(format!("{var}={raw} is below the minimum {min}; using {min}"));
                min
            }
            Ok(n) => u64::try_from(n).unwrap_or_else(|_| {
                self.problem(var, format!("{raw} is too large"));
                default
            }),
            Err(_) => {
                self.problem(var, format!("expected an integer, got {raw:?}"));
                default
            }
        }
    }

    fn usize(&mut self, var: &'static str, default: usize, min: usize) -> usize {
        let n = self.int(var, default as u64, min as u64);
        usize::try_from(n).unwrap_or_else(|_| {
            self.problem(var, format!("{n} is too large"));
            default
        })
    }

    fn u32(&mut self, var: &'static str, default: u32, min: u32) -> u32 {
        let n = self.int(var, u64::from(default), u64::from(min));
        u32::try_from(n).unwrap_or_else(|_| {
            self.problem(var, format!("{n} is too large (at most {})", u32::MAX));
            default
        })
    }

    /// A yes/no flag; `None` when unset or unreadable (a problem).
    fn flag(&mut self, var: &'static str) -> Option<bool> {
        let raw = self.get(var)?;
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => {
                self.problem(var, format!("expected 1/true/yes or 0/false/no, got {raw:?}"));
                None
            }
        }
    }

    /// A URL whose scheme is one of `schemes`. The value is not echoed in the problem: it may
    /// carry a password.
    fn check_url(&mut self, var: &'static str, url: &str, schemes: &[&str]) {
        let ok = schemes.iter().any(|s| url.len() > s.len() && url.starts_with(s));
        if !ok {
            let got = url.find("://").map_or_else(
                || "a value with no scheme".to_owned(),
                |end| format!("scheme {:?}", &url[..end + 3]),
            );
            self.problem(var, format!("must start with {}, got {got}", schemes.join(", ")));
        }
    }
}

const HTTP_SCHEMES: [&str; 2] = ["http://", "https://"];

/// What `SSL_CERT_FILE` and `SSL_CERT_DIR` are for, in their problems.
const CA_RULE: &str = "it must name the PEM CA certificates that rediss:// in REDIS_URL trusts \
                       (they replace the system CA store)";

impl Settings {
    /// Reads and validates every setting through `getenv`. Empty values count as unset; numbers
    /// below their minimum are clamped to it (see [`Settings::warnings`]).
    ///
    /// # Errors
    /// [`SettingsError`] listing every bad value at once, each with its variable name.
    pub fn from_env(getenv: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut r = Reader { getenv, problems: Vec::new(), warnings: Vec::new() };

        let rq_enabled = r.flag("RQ_BACKEND_ENABLED");
        let backend_var = r.get("JOB_QUEUE_BACKEND");
        let backend = match backend_var.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None if rq_enabled == Some(true) => Mode::Redis,
            None | Some("inline") => Mode::Inline,
            Some("redis" | "rq" | "redis-rq") => Mode::Redis,
            Some(_) => {
                let raw = backend_var.clone().unwrap_or_default();
                r.problem(
                    "JOB_QUEUE_BACKEND",
                    format!("expected inline, redis, rq or redis-rq, got {raw:?}"),
                );
                Mode::Inline
            }
        };

        let redis_url = r.get("REDIS_URL");
        let mut redis_tls = false;
        match &redis_url {
            Some(urls) => {
                // One parser for the accepted forms (single node, redis+cluster:// seed list, or a
                // list of redis:// seeds): the one the connection pool uses.
                match lane_store::RedisTarget::parse(urls) {
                    Ok(target) => redis_tls = target.uses_tls(),
                    Err(e) => r.problem(
                        "REDIS_URL",
                        e.to_string().trim_start_matches("configuration error: REDIS_URL: ").to_owned(),
                    ),
                }
            }
            None if backend == Mode::Redis => {
                let why = if backend_var.is_some() {
                    "required when JOB_QUEUE_BACKEND=redis"
                } else {
                    "required when JOB_QUEUE_BACKEND=redis (selected by RQ_BACKEND_ENABLED)"
                };
                r.problem("REDIS_URL", why);
            }
            None => {}
        }
        // rustls reads these itself, at the first `rediss://` connection, and fails every one if
        // they are wrong: refuse them here, where the message can name the variable.
        if backend == Mode::Redis && redis_tls {
            r.ca_file("SSL_CERT_FILE");
            r.ca_dir("SSL_CERT_DIR");
        }

        let tenant_id = match r.get("TENANT_ID") {
            None => TenantId::default_tenant(),
            Some(raw) => TenantId::new(raw).unwrap_or_else(|e| {
                r.problem("TENANT_ID", e.rule);
                TenantId::default_tenant()
            }),
        };
        let mut extra_tenants: Vec<TenantId> = Vec::new();
        for raw in
            r.get("LANEWAY_TENANTS").unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty())
        {
            match TenantId::new(raw) {
                Ok(t) if t != tenant_id && !extra_tenants.contains(&t) => extra_tenants.push(t),
                Ok(_) => {}
                Err(e) => r.problem("LANEWAY_TENANTS", format!("{raw:?}: {}", e.rule)),
            }
        }
        let data_dir = r.get("DATA_DIR").map_or_else(|| PathBuf::from("./data"), PathBuf::from);
        let uploads_dir = r.get("UPLOADS_DIR").map_or_else(|| data_dir.join("uploads"), PathBuf::from);

        let chat_worker_pool_size = r.usize("CHAT_WORKER_POOL_SIZE", 4, 1);
        let chat_lane_max_queue = r.usize("CHAT_LANE_MAX_QUEUE", 6, 1);
        let chat_lane_debounce_ms = r.int("CHAT_LANE_DEBOUNCE_MS", 500, 0);
        let chat_job_claim_ttl_sec = r.int("CHAT_JOB_CLAIM_TTL_SEC", 600, 10);
        let ocr_max_concurrency = r.usize("OCR_MAX_CONCURRENCY", 4, 1);
        let llm_max_concurrency = r.usize("LLM_MAX_CONCURRENCY", 8, 1);
        let llm_max_concurrency_student = r.usize("LLM_MAX_CONCURRENCY_STUDENT", llm_max_concurrency, 1);
        let llm_max_concurrency_teacher = r.usize("LLM_MAX_CONCURRENCY_TEACHER", llm_max_concurrency, 1);
        let profile_update_queue_max = r.usize("PROFILE_UPDATE_QUEUE_MAX", 500, 10);

        let app_env = r.get("APP_ENV").or_else(|| r.get("ENV")).unwrap_or_else(|| "development".to_owned());
        // Keys are taken verbatim (not trimmed): a secret's bytes are the operator's business.
        let secret = |var: &str| getenv(var).filter(|v| !v.is_empty()).map(Secret);
        let master_key = secret("MASTER_KEY");
        let tenant_admin_key = secret("TENANT_ADMIN_KEY");
        let llm_api_key = secret("LLM_API_KEY");

        let llm_base_url = r.get("LLM_BASE_URL");
        if let Some(url) = &llm_base_url {
            r.check_url("LLM_BASE_URL", url, &HTTP_SCHEMES);
        }
        let llm_model = r.get("LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".to_owned());
        let llm_timeout_sec = r.int("LLM_TIMEOUT_SEC", 60, 1);
        let chat_responder_delay_ms = r.int("CHAT_RESPONDER_DELAY_MS", 0, 0);
        let job_max_attempts = r.u32("JOB_MAX_ATTEMPTS", 3, 1);
        let job_retention_hours = r.int("JOB_RETENTION_HOURS", 168, 1);
        let limiter_lease_sec = r.int("LIMITER_LEASE_SEC", 30, 1);
        let tenant_data_base_dir = r.get("TENANT_DATA_BASE_DIR").map(PathBuf::from);
        if let Some(base) = &tenant_data_base_dir
            && base.components().any(|c| matches!(c, std::path::Component::ParentDir))
        {
            r.problem(
                "TENANT_DATA_BASE_DIR",
                format!("must not contain `..` components, got {:?}", base.display().to_string()),
            );
        }
        let auth_required = r.flag("AUTH_REQUIRED").unwrap_or(false);

        let default_addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let addr = match r.get("LANEWAY_ADDR") {
            None => default_addr,
            Some(raw) => raw.parse().unwrap_or_else(|_| {
                r.problem(
                    "LANEWAY_ADDR",
                    format!("expected a socket address like 127.0.0.1:8080, got {raw:?}"),
                );
                default_addr
            }),
        };

        let log_format = match r.get("LOG_FORMAT") {
            None => LogFormat::Text,
            Some(raw) => LogFormat::parse(&raw).unwrap_or_else(|| {
                r.problem("LOG_FORMAT", format!("expected text or json, got {raw:?}"));
                LogFormat::Text
            }),
        };

        if !r.problems.is_empty() {
            return Err(SettingsError { problems: r.problems });
        }
        Ok(Self {
            backend,
            redis_url,
            tenant_id,
            extra_tenants,
            data_dir,
            uploads_dir,
            chat_worker_pool_size,
            chat_lane_max_queue,
            chat_lane_debounce_ms,
            chat_job_claim_ttl_sec,
            ocr_max_concurrency,
            llm_max_concurrency,
            llm_max_concurrency_student,
            llm_max_concurrency_teacher,
            profile_update_queue_max,
            app_env,
            master_key,
            tenant_admin_key,
            llm_base_url,
            llm_api_key,
            llm_model,
            llm_timeout_sec,
            chat_responder_delay_ms,
            job_max_attempts,
            job_retention_hours,
            limiter_lease_sec,
            tenant_data_base_dir,
            auth_required,
            addr,
            log_format,
            warnings: r.warnings,
        })
    }

    /// Every tenant this process serves: `TENANT_ID` first, then `LANEWAY_TENANTS`.
    #[must_use]
    pub fn tenants(&self) -> Vec<TenantId> {
        std::iter::once(self.tenant_id.clone()).chain(self.extra_tenants.iter().cloned()).collect()
    }

    /// Whether `APP_ENV`/`ENV` names production (`prod` or `production`, any case).
    #[must_use]
    pub fn is_production(&self) -> bool {
        let env = self.app_env.trim().to_ascii_lowercase();
        env == "prod" || env == "production"
    }

    /// The chat lane store's configuration.
    #[must_use]
    pub fn lane_store_config(&self) -> LaneStoreConfig {
        LaneStoreConfig {
            debounce_ms: self.chat_lane_debounce_ms,
            claim_ttl_ms: self.chat_job_claim_ttl_sec.saturating_mul(1000),
            max_queue: self.chat_lane_max_queue,
        }
    }

    /// The capacity of each class of capped work.
    #[must_use]
    pub fn limit_caps(&self) -> LimitCaps {
        LimitCaps {
            ocr: self.ocr_max_concurrency,
            llm: self.llm_max_concurrency,
            llm_student: self.llm_max_concurrency_student,
            llm_teacher: self.llm_max_concurrency_teacher,
        }
    }

    /// The LLM provider's configuration, when `LLM_BASE_URL` is set.
    #[must_use]
    pub fn openai_config(&self) -> Option<OpenAiConfig> {
        self.llm_base_url.as_ref().map(|base_url| OpenAiConfig {
            base_url: base_url.clone(),
            api_key: self.llm_api_key.as_ref().map(|k| k.expose().to_owned()),
            model: self.llm_model.clone(),
            timeout: Duration::from_secs(self.llm_timeout_sec),
        })
    }

    /// The artificial delay of the deterministic responder.
    #[must_use]
    pub fn chat_responder_delay(&self) -> Duration {
        Duration::from_millis(self.chat_responder_delay_ms)
    }

    /// The responder chats are answered by: the LLM provider when `LLM_BASE_URL` is set, the
    /// deterministic responder (with `CHAT_RESPONDER_DELAY_MS`) otherwise.
    ///
    /// # Errors
    /// [`ResponderError`] when the provider's HTTP client cannot be built.
    pub fn chat_responder(&self) -> Result<Arc<dyn ChatResponder>, ResponderError> {
        Ok(match self.openai_config() {
            Some(config) => Arc::new(OpenAiResponder::new(config)?),
            None => Arc::new(DeterministicResponder::new(self.chat_responder_delay())),
        })
    }

    /// Where `tenant`'s student profiles live: under `DATA_DIR`, one directory per tenant, so a
    /// tenant can never reach another's files.
    #[must_use]
    pub fn profiles_dir(&self, tenant: &TenantId) -> PathBuf {
        // A validated TenantId has no separators or dots, so it is always one path component.
        self.data_dir.join("tenants").join(tenant.as_str()).join("profiles")
    }
}
