//! Builds one tenant's runtime from the settings: its data directory, job store, lanes,
//! limiter, handlers and backend (through the runtime-manager's caches).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lane_store::RedisPool;
use queue_core::{
    ChatLaneStore, IdempotencyStore, JobMetrics, JobStore, LimitCaps, Limiter, Mode, QueueBackend,
    QueueError, QueueResult, SharedClock, TenantId,
};
use queue_inline::{
    InlineDeps, InlineQueueBackend, InlineRuntime, InlineRuntimeConfig, LocalLimiter, MemoryIdempotencyStore,
    MemoryJobStore, SqliteJobStore, SqliteStoreConfig,
};
use queue_redis::{
    RedisBackendConfig, RedisBackendDeps, RedisIdempotencyStore, RedisJobStore, RedisLimiter,
    RedisQueueBackend,
};
use runtime_manager::{BackendRequest, RuntimeState, TenantRuntime};

use crate::handlers::handler_set;
use crate::responder::ChatResponder;
use crate::settings::Settings;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a request id is remembered: a day, but never longer than finished jobs are kept, so
/// a repeated request id never points at a purged job.
#[must_use]
pub fn idempotency_ttl_ms(settings: &Settings) -> u64 {
    let retention = settings.job_retention_hours.saturating_mul(3_600_000);
    u64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(u64::MAX).min(retention)
}

/// The data directory of `tenant`: one directory per tenant under `DATA_DIR/tenants/`.
#[must_use]
pub fn tenant_data_dir(settings: &Settings, tenant: &TenantId) -> PathBuf {
    // A validated TenantId is one plain path component: no separators, no dots.
    settings.data_dir.join("tenants").join(tenant.as_str())
}

/// Where one tenant lives and what it may use: what the tenant registry decides per tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPlan {
    /// Its data directory (`jobs.db`, `profiles/`).
    pub data_dir: PathBuf,
    /// Its limiter's capacities.
    pub caps: LimitCaps,
}

impl TenantPlan {
    /// The plan of a tenant configured by the environment: `DATA_DIR/tenants/{tenant}` and the
    /// settings' caps.
    #[must_use]
    pub fn defaults(settings: &Settings, tenant: &TenantId) -> Self {
        Self { data_dir: tenant_data_dir(settings, tenant), caps: settings.limit_caps() }
    }
}

/// The in-process runtime configuration the settings call for.
#[must_use]
pub fn runtime_config(settings: &Settings) -> InlineRuntimeConfig {
    let ttl = Duration::from_secs(settings.chat_job_claim_ttl_sec);
    InlineRuntimeConfig {
        chat_workers: settings.chat_worker_pool_size,
        profile_queue_capacity: settings.profile_update_queue_max,
        max_attempts: settings.job_max_attempts,
        heartbeat_interval: InlineRuntimeConfig::heartbeat_for_ttl(ttl),
        retention: Duration::from_secs(settings.job_retention_hours.saturating_mul(3600)),
        ..InlineRuntimeConfig::default()
    }
}

/// Builds (does not start) `tenant`'s runtime with the default plan ([`TenantPlan::defaults`]).
///
/// # Errors
/// As [`build_planned_tenant_runtime`].
pub fn build_tenant_runtime(
    settings: &Settings,
    mode: Mode,
    run_workers: bool,
    state: &RuntimeState,
    responder: Arc<dyn ChatResponder>,
    clock: SharedClock,
    tenant: &TenantId,
) -> QueueResult<TenantRuntime> {
    let plan = TenantPlan::defaults(settings, tenant);
    build_planned_tenant_runtime(settings, mode, run_workers, state, responder, clock, tenant, &plan)
}

/// Builds (does not start) `tenant`'s runtime in `plan.data_dir` with `plan.caps`. `Mode::Test`
/// keeps everything in memory; `Mode::Inline` opens `{data_dir}/jobs.db`; `Mode::Redis` keeps
/// jobs, lanes and permits in Redis. Profiles are files in `{data_dir}/profiles` in every mode
/// but `Mode::Test`'s.
///
/// # Errors
/// `QueueError::Storage` when the data directory or database cannot be opened;
/// `QueueError::Config` for Redis without `REDIS_URL`.
#[allow(clippy::too_many_arguments)] // reason: each is one independent input of the wiring
pub fn build_planned_tenant_runtime(
    settings: &Settings,
    mode: Mode,
    run_workers: bool,
    state: &RuntimeState,
    responder: Arc<dyn ChatResponder>,
    clock: SharedClock,
    tenant: &TenantId,
    plan: &TenantPlan,
) -> QueueResult<TenantRuntime> {
    if mode == Mode::Redis {
        return build_redis_tenant_runtime(settings, run_workers, state, responder, clock, tenant, plan);
    }
    let data_dir = plan.data_dir.clone();
    let lanes: Arc<dyn ChatLaneStore> = state.lane_stores.get_chat_lane_store(
        Some(tenant),
        mode,
        settings.redis_url.as_deref().unwrap_or_default(),
        settings.lane_store_config(),
        clock.clone(),
    )?;
    let (store, idempotency, data_dir): (Arc<dyn JobStore>, Arc<dyn IdempotencyStore>, Option<PathBuf>) =
        match mode {
            Mode::Test => {
                let store = Arc::new(MemoryJobStore::new(tenant.clone(), clock.clone()));
                let ttl = u64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(u64::MAX);
                (store, Arc::new(MemoryIdempotencyStore::new(clock.clone(), ttl)), None)
            }
            Mode::Inline => {
                std::fs::create_dir_all(&data_dir).map_err(|e| {
                    QueueError::Storage(format!("cannot create data directory {}: {e}", data_dir.display()))
                })?;
                let config = SqliteStoreConfig {
                    idempotency_ttl_ms: idempotency_ttl_ms(settings),
                    ..SqliteStoreConfig::default()
                };
                let store = Arc::new(SqliteJobStore::open(
                    &data_dir.join("jobs.db"),
                    tenant.clone(),
                    clock.clone(),
                    config,
                )?);
                (store.clone(), store, Some(data_dir))
            }
            Mode::Redis => {
                return Err(QueueError::Unsupported(
                "JOB_QUEUE_BACKEND=redis: the Redis backend arrives with issue #3; use JOB_QUEUE_BACKEND=inline".into(),
            ));
            }
        };
    let limiter = Arc::new(LocalLimiter::new(plan.caps));
    let handlers = handler_set(responder, plan.data_dir.join("profiles"));
    // One set of metrics per tenant runtime, read by `GET /metrics`.
    let metrics = Arc::new(JobMetrics::new());
    let runtime = InlineRuntime::new(
        InlineRuntimeConfig { tenant: tenant.clone(), metrics: metrics.clone(), ..runtime_config(settings) },
        InlineDeps { store: store.clone(), lanes: lanes.clone(), limiter: limiter.clone(), handlers, clock },
    );
    // A tenant restarted after a stop gets a new runtime: drop any backend cached for it.
    state.backends.remove(Some(tenant));
    let test_runtime = runtime.clone();
    let inline_factory = move || -> Arc<dyn QueueBackend> {
        Arc::new(InlineQueueBackend::over_runtime(InlineQueueBackend::TEST_NAME, test_runtime.clone()))
    };
    let service_runtime = runtime.clone();
    let get_backend = move |_req: BackendRequest<'_>| -> QueueResult<Arc<dyn QueueBackend>> {
        Ok(Arc::new(InlineQueueBackend::over_runtime(InlineQueueBackend::NAME, service_runtime.clone())))
    };
    let backend = state.backends.get_app_queue_backend(Some(tenant), mode, &inline_factory, &get_backend)?;
    Ok(TenantRuntime {
        tenant: tenant.clone(),
        data_dir,
        backend,
        store,
        lanes,
        idempotency,
        limiter,
        inline: Some(runtime),
        metrics,
    })
}

/// The Redis backend's configuration the settings call for.
#[must_use]
pub fn redis_backend_config(settings: &Settings, run_workers: bool) -> RedisBackendConfig {
    let ttl = Duration::from_secs(settings.chat_job_claim_ttl_sec);
    let defaults = RedisBackendConfig::default();
    RedisBackendConfig {
        run_workers,
        chat_concurrency: settings.chat_worker_pool_size,
        max_attempts: settings.job_max_attempts,
        lease: ttl,
        heartbeat_interval: InlineRuntimeConfig::heartbeat_for_ttl(ttl),
        // Never longer than the lease it stands in for.
        short_lease: defaults.short_lease.min(ttl),
        retention: Duration::from_secs(settings.job_retention_hours.saturating_mul(3600)),
        ..defaults
    }
}

/// Builds `tenant`'s runtime on Redis: job store, idempotency keys, lanes and limiter all in the
/// tenant's keyspace, so any number of processes share them.
fn build_redis_tenant_runtime(
    settings: &Settings,
    run_workers: bool,
    state: &RuntimeState,
    responder: Arc<dyn ChatResponder>,
    clock: SharedClock,
    tenant: &TenantId,
    plan: &TenantPlan,
) -> QueueResult<TenantRuntime> {
    let url = settings
        .redis_url
        .as_deref()
        .ok_or_else(|| QueueError::Config("REDIS_URL: required when JOB_QUEUE_BACKEND=redis".into()))?;
    let pool = RedisPool::from_url(url)?;
    let retention = Duration::from_secs(settings.job_retention_hours.saturating_mul(3600));
    let redis_lanes = state.lane_stores.get_redis_lane_store(
        Some(tenant),
        url,
        settings.lane_store_config(),
        clock.clone(),
    )?;
    let lanes: Arc<dyn ChatLaneStore> = redis_lanes.clone();
    let store: Arc<dyn JobStore> =
        Arc::new(RedisJobStore::new(pool.clone(), tenant.clone(), clock.clone(), retention));
    let idempotency: Arc<dyn IdempotencyStore> = Arc::new(RedisIdempotencyStore::new(
        pool.clone(),
        tenant,
        Duration::from_millis(idempotency_ttl_ms(settings)),
    ));
    let limiter: Arc<dyn Limiter> = Arc::new(RedisLimiter::new(
        pool.clone(),
        tenant,
        plan.caps,
        Duration::from_secs(settings.limiter_lease_sec),
    ));
    let handlers = handler_set(responder, plan.data_dir.join("profiles"));
    let metrics = Arc::new(JobMetrics::new());
    let backend = RedisQueueBackend::new(
        RedisBackendConfig { metrics: metrics.clone(), ..redis_backend_config(settings, run_workers) },
        RedisBackendDeps {
            pool,
            tenant: tenant.clone(),
            store: store.clone(),
            lanes: redis_lanes,
            limiter: limiter.clone(),
            handlers,
            clock,
        },
    );
    state.backends.remove(Some(tenant));
    let backend_for_cache = backend.clone();
    let unused_inline =
        || -> Arc<dyn QueueBackend> { unreachable!("Mode::Redis never builds the in-test backend") };
    let get_backend = move |_req: BackendRequest<'_>| -> QueueResult<Arc<dyn QueueBackend>> {
        Ok(Arc::new(backend_for_cache.clone()))
    };
    let backend =
        state.backends.get_app_queue_backend(Some(tenant), Mode::Redis, &unused_inline, &get_backend)?;
    Ok(TenantRuntime {
        tenant: tenant.clone(),
        data_dir: None,
        backend,
        store,
        lanes,
        idempotency,
        limiter,
        inline: None,
        metrics,
    })
}
