//! [`Laneway`]: the application — its tenants, and the submit and status flows of the original
//! service, over the queue layers.

use std::sync::Arc;

use queue_core::{
    ChatEnqueueReceipt, ChatLaneStore, IdempotencyClaim, JobId, JobKind, JobRecord, JobStatus, LaneLoad,
    Mode, NewJob, QueueError, QueueResult, RequestId, SharedClock, SystemClock, TenantId,
};
use runtime_manager::{
    RuntimeState, TenantBuilder, TenantRegistry, TenantRuntime, validate_master_key_policy,
};
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, error, info, warn};

use crate::api::{
    ChatStartRequest, ChatStartResponse, ChatStatusResponse, ExamRequest, JobAccepted, JobView,
    ProfileUpdateRequest, UploadRequest, ValidChat,
};
use crate::error::AppError;
use crate::metrics::TenantMetrics;
use crate::responder::ChatResponder;
use crate::settings::Settings;
use crate::tenants::{
    DEFAULT_PAGE_LIMIT, IssuedKey, KeyCheck, KeyView, MAX_PAGE_LIMIT, TenantDirectory, TenantEntry,
    TenantPage, TenantRequest, TenantSource, TenantView,
};
use crate::wiring::build_planned_tenant_runtime;

/// Health of the service.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok` when every enabled tenant runs.
    pub status: &'static str,
    /// The backend in use.
    pub backend: &'static str,
    /// Tenants whose runtime runs.
    pub tenants: Vec<String>,
}

/// The running application.
#[derive(Debug)]
pub struct Laneway {
    settings: Arc<Settings>,
    mode: Mode,
    state: Arc<RuntimeState>,
    registry: TenantRegistry,
    directory: Arc<TenantDirectory>,
    clock: SharedClock,
}

impl Laneway {
    /// Checks the master-key policy, opens the tenant registry (`DATA_DIR/_system/tenants.db`),
    /// then builds and starts every configured tenant (`TENANT_ID` and `LANEWAY_TENANTS`) and
    /// every enabled registry tenant, recovering their pending jobs. `run_workers` false makes an
    /// API-only process (Redis only: the embedded backend always runs its workers).
    ///
    /// # Errors
    /// A refused master key, a registry that cannot be opened, or an env tenant whose runtime
    /// cannot start (e.g. an unwritable `DATA_DIR`). A registry tenant that cannot start is
    /// logged and left stopped (health reports it).
    pub async fn start(
        settings: Settings,
        mode: Mode,
        run_workers: bool,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, AppError> {
        validate_master_key_policy(getenv).map_err(|e| AppError::Internal(e.to_string()))?;
        let responder = settings.chat_responder().map_err(|e| AppError::Internal(e.to_string()))?;
        Self::start_inner(settings, mode, run_workers, responder, Arc::new(SystemClock)).await
    }

    /// As [`Laneway::start`] without the policy check, with an explicit responder and clock
    /// (tests).
    ///
    /// # Errors
    /// A tenant whose runtime cannot start.
    pub async fn start_with(
        settings: Settings,
        mode: Mode,
        responder: Arc<dyn ChatResponder>,
        clock: SharedClock,
    ) -> Result<Self, AppError> {
        Self::start_inner(settings, mode, true, responder, clock).await
    }

    async fn start_inner(
        settings: Settings,
        mode: Mode,
        run_workers: bool,
        responder: Arc<dyn ChatResponder>,
        clock: SharedClock,
    ) -> Result<Self, AppError> {
        for w in &settings.warnings {
            warn!("{w}");
        }
        let settings = Arc::new(settings);
        let state = Arc::new(RuntimeState::new(Arc::new(queue_inline::MemoryIdempotencyStore::new(
            clock.clone(),
            0,
        ))));
        let directory = {
            let settings = settings.clone();
            blocking(move || TenantDirectory::open(&settings, mode)).await?
        };
        let directory = Arc::new(directory);
        let builder: TenantBuilder = {
            let settings = settings.clone();
            let state = state.clone();
            let directory = directory.clone();
            let clock = clock.clone();
            Arc::new(move |tenant: TenantId| {
                let settings = settings.clone();
                let state = state.clone();
                let directory = directory.clone();
                let responder = responder.clone();
                let clock = clock.clone();
                Box::pin(async move {
                    // Opening a database blocks: keep it off the async workers.
                    tokio::task::spawn_blocking(move || {
                        let plan = directory
                            .plan(&tenant, settings.limit_caps())
                            .map_err(|e| queue_core::QueueError::Config(e.to_string()))?;
                        build_planned_tenant_runtime(
                            &settings,
                            mode,
                            run_workers,
                            &state,
                            responder,
                            clock,
                            &tenant,
                            &plan,
                        )
                    })
                    .await
                    .map_err(|e| queue_core::QueueError::Storage(format!("tenant build task failed: {e}")))?
                })
            })
        };
        let app = Self { settings, mode, state, registry: TenantRegistry::new(builder), directory, clock };
        for tenant in app.directory.enabled_ids(TenantSource::Env) {
            app.registry
                .start(&tenant)
                .await
                .map_err(|e| AppError::Internal(format!("tenant {tenant}: {e}")))?;
        }
        for tenant in app.directory.enabled_ids(TenantSource::Registry) {
            // One broken registry tenant must not keep the others (or the process) down.
            if let Err(e) = app.registry.start(&tenant).await {
                error!(tenant = %tenant, error = %e, "registry tenant did not start");
            }
        }
        info!(tenants = app.registry.tenants().len(), mode = %mode, "laneway started");
        Ok(app)
    }

    /// The settings it runs with.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The runtime state (caches) it owns.
    #[must_use]
    pub fn state(&self) -> &RuntimeState {
        &self.state
    }

    /// The tenant named in a request (`None` = the default tenant, `TENANT_ID`).
    ///
    /// # Errors
    /// `BadRequest` for a malformed id, `NotFound` for a tenant that is not configured or is
    /// disabled, `NotReady` for one that is not running (e.g. while it restarts).
    pub fn tenant(&self, tenant: Option<&str>) -> Result<Arc<TenantRuntime>, AppError> {
        let id = match tenant {
            None => self.settings.tenant_id.clone(),
            Some(t) => TenantId::new(t)?,
        };
        match self.directory.enabled(&id) {
            None => return Err(AppError::NotFound(format!("unknown tenant {id}"))),
            Some(false) => return Err(AppError::NotFound(format!("unknown tenant {id} (disabled)"))),
            Some(true) => {}
        }
        self.registry.get(&id).ok_or_else(|| AppError::NotReady(format!("tenant {id} is not running")))
    }

    /// The tenant directory (env and registry tenants, and their keys).
    #[must_use]
    pub fn tenants(&self) -> &TenantDirectory {
        &self.directory
    }

    /// Health: every enabled tenant running.
    #[must_use]
    pub fn health(&self) -> Health {
        let running = self.registry.tenants();
        let all = self
            .directory
            .entries()
            .iter()
            .filter(|e| e.record.enabled)
            .all(|e| running.contains(&e.record.id));
        Health {
            status: if all { "ok" } else { "degraded" },
            backend: match self.mode {
                Mode::Test => "inline-test",
                Mode::Inline => "inline",
                Mode::Redis => "redis",
            },
            tenants: running.iter().map(ToString::to_string).collect(),
        }
    }

    /// Every running tenant's job metrics and queue depths, by tenant id, for `GET /metrics`.
    pub async fn metrics(&self) -> Vec<TenantMetrics> {
        let mut out = Vec::new();
        for id in self.registry.tenants() {
            let Some(runtime) = self.registry.get(&id) else { continue };
            let mut depths = Vec::with_capacity(JobKind::ALL.len());
            for kind in JobKind::ALL {
                match runtime.store.counts(kind).await {
                    Ok(counts) => depths.push((kind, counts)),
                    Err(e) => {
                        // Counters still report; only this tenant's depths are left out.
                        warn!(tenant = %id, error = %e, "metrics: cannot read queue depths");
                        depths.clear();
                        break;
                    }
                }
            }
            out.push(TenantMetrics { tenant: id, jobs: runtime.metrics.snapshot(), depths });
        }
        out
    }

    /// Stops every tenant gracefully.
    pub async fn shutdown(&self) {
        self.registry.stop_all().await;
    }

    fn view(&self, entry: &TenantEntry) -> TenantView {
        let running = self.registry.get(&entry.record.id).is_some();
        TenantView::new(entry, running, self.settings.limit_caps())
    }

    /// `PUT /admin/tenants/{id}`: creates or replaces a registry tenant, then starts, restarts
    /// or stops only its runtime (other tenants keep serving). A replace with the same content
    /// changes nothing. When the new configuration cannot start, the previous one is put back
    /// (and restarted) and the error returned. Returns the tenant and whether it was created.
    ///
    /// # Errors
    /// `BadRequest` naming the field (`id`, `data_dir`, `limits.*`), `Conflict` for a tenant of
    /// the environment, `Internal` when the registry cannot be written or the runtime cannot
    /// start.
    pub async fn put_tenant(&self, id: &str, req: TenantRequest) -> Result<(TenantView, bool), AppError> {
        let id = tenant_id_field(id)?;
        let gate = self.directory.gate(&id);
        let _held = gate.lock().await;
        let now = self.clock.now_ms();
        let outcome = {
            let directory = self.directory.clone();
            let id = id.clone();
            blocking(move || directory.put(&id, &req, now)).await?
        };
        let created = outcome.previous.is_none();
        if !outcome.changed {
            return Ok((self.view(&outcome.entry), created));
        }
        let was_running = self.registry.get(&id).is_some();
        if let Err(e) = self.apply_runtime(&id, outcome.entry.record.enabled).await {
            warn!(tenant = %id, error = %e, "the new tenant configuration did not start: restoring the previous one");
            let previous = outcome.previous.clone();
            let restored = {
                let directory = self.directory.clone();
                let id = id.clone();
                blocking(move || directory.restore(&id, previous)).await
            };
            if let Err(re) = restored {
                error!(tenant = %id, error = %re, "could not restore the previous tenant configuration");
            } else if was_running && let Err(re) = self.apply_runtime(&id, true).await {
                error!(tenant = %id, error = %re, "the previous tenant configuration did not start again");
            }
            return Err(AppError::Internal(format!("tenant {id} could not start, nothing changed: {e}")));
        }
        info!(tenant = %id, enabled = outcome.entry.record.enabled, created, "tenant configured");
        Ok((self.view(&outcome.entry), created))
    }

    /// Stops the tenant's runtime if it runs, then starts it again when `enabled`.
    async fn apply_runtime(&self, id: &TenantId, enabled: bool) -> Result<(), AppError> {
        if let Err(e) = self.registry.stop(id).await {
            // It is unregistered all the same; the new runtime starts from the store.
            warn!(tenant = %id, error = %e, "tenant did not stop cleanly");
        }
        if enabled {
            self.registry.start(id).await.map_err(AppError::from)?;
        }
        Ok(())
    }

    /// `GET /admin/tenants`: env and registry tenants by id, `limit` per page (default
    /// [`DEFAULT_PAGE_LIMIT`], at most [`MAX_PAGE_LIMIT`]), after the tenant `after`.
    ///
    /// # Errors
    /// `BadRequest` naming `limit` or `after`.
    pub fn list_tenants(&self, limit: Option<&str>, after: Option<&str>) -> Result<TenantPage, AppError> {
        let limit = match limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
                _ => {
                    return Err(AppError::bad(
                        "limit",
                        format!("must be an integer from 1 to {MAX_PAGE_LIMIT}, got {raw:?}"),
                    ));
                }
            },
        };
        let after =
            after.map(|a| TenantId::new(a).map_err(|e| AppError::bad("after", e.rule))).transpose()?;
        let (entries, next) = self.directory.page(limit, after.as_ref());
        Ok(TenantPage {
            tenants: entries.iter().map(|e| self.view(e)).collect(),
            next_after: next.map(|t| t.to_string()),
        })
    }

    /// `DELETE /admin/tenants/{id}`: disables a registry tenant and stops its runtime; its data
    /// stays, and a `PUT` with `enabled: true` brings it back.
    ///
    /// # Errors
    /// `BadRequest` (`id`), `NotFound`, `Conflict` for a tenant of the environment.
    pub async fn disable_tenant(&self, id: &str) -> Result<TenantView, AppError> {
        let id = tenant_id_field(id)?;
        let gate = self.directory.gate(&id);
        let _held = gate.lock().await;
        let now = self.clock.now_ms();
        let (entry, changed) = {
            let directory = self.directory.clone();
            let id = id.clone();
            blocking(move || directory.disable(&id, now)).await?
        };
        if let Err(e) = self.registry.stop(&id).await {
            warn!(tenant = %id, error = %e, "tenant did not stop cleanly");
        }
        if changed {
            info!(tenant = %id, "tenant disabled");
        }
        Ok(self.view(&entry))
    }

    /// `POST /admin/tenants/{id}/keys`: a new API key for the tenant, shown once.
    ///
    /// # Errors
    /// `BadRequest` (`id`), `NotFound`.
    pub async fn issue_api_key(&self, id: &str) -> Result<IssuedKey, AppError> {
        let id = tenant_id_field(id)?;
        let now = self.clock.now_ms();
        let directory = self.directory.clone();
        let issued = blocking(move || directory.issue_key(&id, now)).await?;
        info!(tenant = %issued.tenant, key_id = %issued.key_id, "api key issued");
        Ok(issued)
    }

    /// `DELETE /admin/tenants/{id}/keys/{key_id}`: revokes the key; it stops working at once.
    ///
    /// # Errors
    /// `BadRequest` (`id`, `key_id`), `NotFound`.
    pub async fn revoke_api_key(&self, id: &str, key_id: &str) -> Result<KeyView, AppError> {
        let id = tenant_id_field(id)?;
        let now = self.clock.now_ms();
        let directory = self.directory.clone();
        let key_id = key_id.to_owned();
        let view = blocking(move || directory.revoke_key(&id, &key_id, now)).await?;
        info!(tenant = %view.tenant, key_id = %view.key_id, "api key revoked");
        Ok(view)
    }

    /// Whether `key` is a live key of `tenant` (the raw `{tenant}` of a request path). Answers
    /// from memory when it can, else reads the registry off the async workers.
    ///
    /// # Errors
    /// `Internal` when the registry cannot be read.
    pub async fn check_tenant_key(&self, tenant: &str, key: &str) -> Result<KeyCheck, AppError> {
        if let Some(verdict) = self.directory.check_key_cached(tenant, key) {
            return Ok(verdict);
        }
        let directory = self.directory.clone();
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        blocking(move || directory.check_key(&tenant, &key)).await
    }

    /// The chat start flow of the original: idempotency by `request_id`, then coalescing by
    /// fingerprint within the debounce window, then the lane cap, then the job is created and
    /// enqueued. A refused submit leaves nothing behind, and a request that fails before its job
    /// is accepted leaves its `request_id` free for the client's retry.
    ///
    /// # Errors
    /// `BadRequest` naming the field, `LaneFull`, `NotReady`, `NotFound` (tenant).
    pub async fn chat_start(
        &self,
        tenant: Option<&str>,
        req: ChatStartRequest,
    ) -> Result<ChatStartResponse, AppError> {
        let chat = req.validate()?;
        let rt = self.tenant(tenant)?;
        let job_id = JobId::generate();
        // The two reads of the lane go with the claim: none of the three needs another's answer,
        // and on Redis they take one round trip's time instead of three. A request that turns
        // out to be a repeat has read them for nothing: two reads, no write.
        let (claim, recent, load) = tokio::join!(
            rt.idempotency.claim(&chat.request_id, &job_id),
            rt.lanes.recent_job(&chat.lane, &chat.fingerprint),
            rt.lanes.lane_load(&chat.lane),
        );
        if let IdempotencyClaim::Existing(existing) =
            unclaimed_on_error(&rt, &chat.request_id, &job_id, claim).await?
        {
            return chat_receipt(&rt, &existing, false).await;
        }
        // The request id is this job's now. Whatever refuses or fails before the job is accepted
        // frees it again: a key left behind would answer the client's retry with a job that was
        // never made (404) until the key expired.
        let receipt = match self.chat_accept(&rt, &chat, &job_id, recent, load).await {
            Ok(ChatAccept::Accepted(Some(receipt))) => receipt,
            // Accepted (the request id stays the job's), but not as a chat job should be.
            Ok(ChatAccept::Accepted(None)) => {
                return Err(AppError::Internal(format!("chat job {job_id} was accepted without a lane")));
            }
            Ok(ChatAccept::Coalesced(earlier)) => return Ok(earlier),
            // Accepted, though the submit's answer was lost: the live receipt.
            Ok(ChatAccept::Unanswered) => {
                remember_message(&rt, &chat, &job_id).await;
                return chat_receipt(&rt, &job_id, false).await;
            }
            Err(e) => {
                release_request(&rt, &chat.request_id, &job_id).await;
                return Err(e);
            }
        };
        remember_message(&rt, &chat, &job_id).await;
        info!(tenant = %rt.tenant, lane = %chat.lane, job = %job_id, position = receipt.lane_queue_position, "chat job accepted");
        Ok(ChatStartResponse {
            job_id,
            status: JobStatus::Queued.as_str().to_owned(),
            lane_id: receipt.lane_id,
            lane_queue_position: receipt.lane_queue_position,
            lane_queue_size: receipt.lane_queue_size,
            lane_active: receipt.lane_active,
            debounced: false,
        })
    }

    /// The part of [`Laneway::chat_start`] between the request id's claim and the job's
    /// acceptance, given the lane's two reads: coalescing onto an earlier pending job, the lane
    /// cap, then the submit (one step, all or nothing: on a refusal, a lane that filled meanwhile
    /// or Redis down, no record is left). The caller frees the request id on an error.
    async fn chat_accept(
        &self,
        rt: &Arc<TenantRuntime>,
        chat: &ValidChat,
        job_id: &JobId,
        recent: QueueResult<Option<JobId>>,
        load: QueueResult<LaneLoad>,
    ) -> Result<ChatAccept, AppError> {
        if let Some(earlier) = recent? {
            let pending = rt.store.get(&earlier).await?.is_some_and(|r| r.status.is_pending());
            if pending {
                // The same message again within the window: answer with the earlier job, and
                // make this request id point at it too.
                release_request(rt, &chat.request_id, job_id).await;
                let _ = rt.idempotency.claim(&chat.request_id, &earlier).await?;
                return Ok(ChatAccept::Coalesced(chat_receipt(rt, &earlier, true).await?));
            }
        }
        let max = self.settings.chat_lane_max_queue;
        if load?.queued >= max {
            return Err(AppError::LaneFull(format!(
                "lane full: lane {} already has {max} waiting jobs (CHAT_LANE_MAX_QUEUE={max})",
                chat.lane
            )));
        }
        let payload = serde_json::to_value(&chat.payload).map_err(|e| AppError::Internal(e.to_string()))?;
        let new_job = NewJob {
            id: job_id.clone(),
            kind: JobKind::Chat,
            lane: Some(chat.lane.clone()),
            request_id: Some(chat.request_id.clone()),
            payload,
        };
        match rt.backend.submit(rt.store.clone(), new_job).await {
            Ok(submitted) => Ok(ChatAccept::Accepted(submitted.lane)),
            Err(e) if accepted_after_all(rt, &e, job_id).await.is_some() => Ok(ChatAccept::Unanswered),
            Err(e) => Err(e.into()),
        }
    }

    /// A chat job's status, live lane position and, once done, its reply.
    ///
    /// # Errors
    /// `BadRequest` for a malformed id, `NotFound` for an unknown (or non-chat) job.
    pub async fn chat_status(
        &self,
        tenant: Option<&str>,
        job_id: &str,
    ) -> Result<ChatStatusResponse, AppError> {
        let rt = self.tenant(tenant)?;
        let job = JobId::new(job_id)?;
        let record = rt
            .store
            .get(&job)
            .await?
            .filter(|r| r.kind == JobKind::Chat)
            .ok_or_else(|| AppError::NotFound(format!("chat job {job} not found")))?;
        let position = match (&record.lane, record.status) {
            (Some(lane), JobStatus::Queued) => rt.lanes.find_position(lane, &job).await?,
            _ => 0,
        };
        let reply = record
            .result
            .as_ref()
            .and_then(|r| r.get("reply"))
            .and_then(Value::as_str)
            .map(ToOwned::to_owned);
        Ok(ChatStatusResponse {
            job_id: record.id,
            status: record.status.as_str().to_owned(),
            lane_id: record.lane,
            lane_queue_position: position,
            reply,
            error: if record.status == JobStatus::Failed { record.error } else { None },
        })
    }

    /// Accepts an assignment upload.
    ///
    /// # Errors
    /// `BadRequest` naming the field, `NotReady` when the queue is full.
    pub async fn submit_upload(
        &self,
        tenant: Option<&str>,
        req: UploadRequest,
    ) -> Result<JobAccepted, AppError> {
        let (request_id, payload) = req.validate()?;
        self.submit_plain(tenant, JobKind::Upload, request_id, serde_json::to_value(payload)).await
    }

    /// Accepts an exam score sheet.
    ///
    /// # Errors
    /// As [`Laneway::submit_upload`].
    pub async fn submit_exam(&self, tenant: Option<&str>, req: ExamRequest) -> Result<JobAccepted, AppError> {
        let (request_id, payload) = req.validate()?;
        self.submit_plain(tenant, JobKind::Exam, request_id, serde_json::to_value(payload)).await
    }

    /// Accepts a profile update.
    ///
    /// # Errors
    /// As [`Laneway::submit_upload`].
    pub async fn submit_profile_update(
        &self,
        tenant: Option<&str>,
        req: ProfileUpdateRequest,
    ) -> Result<JobAccepted, AppError> {
        let (request_id, payload) = req.validate()?;
        self.submit_plain(tenant, JobKind::ProfileUpdate, request_id, serde_json::to_value(payload)).await
    }

    async fn submit_plain(
        &self,
        tenant: Option<&str>,
        kind: JobKind,
        request_id: Option<RequestId>,
        payload: Result<Value, serde_json::Error>,
    ) -> Result<JobAccepted, AppError> {
        let payload = payload.map_err(|e| AppError::Internal(e.to_string()))?;
        let rt = self.tenant(tenant)?;
        let job_id = JobId::generate();
        if let Some(req) = &request_id
            && let IdempotencyClaim::Existing(existing) =
                unclaimed_on_error(&rt, req, &job_id, rt.idempotency.claim(req, &job_id).await).await?
        {
            let record = rt
                .store
                .get(&existing)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("job {existing} not found")))?;
            return Ok(accepted(&record));
        }
        let new_job =
            NewJob { id: job_id.clone(), kind, lane: None, request_id: request_id.clone(), payload };
        // One step, all or nothing (see `QueueBackend::submit`); a refused job frees its request id.
        let record = match rt.backend.submit(rt.store.clone(), new_job).await {
            Ok(submitted) => submitted.record,
            Err(e) => match accepted_after_all(&rt, &e, &job_id).await {
                Some(record) => record,
                None => {
                    if let Some(req) = request_id {
                        release_request(&rt, &req, &job_id).await;
                    }
                    return Err(e.into());
                }
            },
        };
        info!(tenant = %rt.tenant, job = %job_id, kind = kind.as_str(), "job accepted");
        Ok(accepted(&record))
    }

    /// Any job, by id.
    ///
    /// # Errors
    /// `BadRequest` for a malformed id, `NotFound`.
    pub async fn job(&self, tenant: Option<&str>, job_id: &str) -> Result<JobView, AppError> {
        let rt = self.tenant(tenant)?;
        let job = JobId::new(job_id)?;
        let record =
            rt.store.get(&job).await?.ok_or_else(|| AppError::NotFound(format!("job {job} not found")))?;
        Ok(record.into())
    }
}

/// A tenant id from an admin path, refused naming `id`.
fn tenant_id_field(raw: &str) -> Result<TenantId, AppError> {
    TenantId::new(raw).map_err(|e| AppError::bad("id", e.rule))
}

/// Runs blocking work (SQLite, the file system) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(format!("blocking task failed: {e}")))?
}

fn accepted(record: &JobRecord) -> JobAccepted {
    JobAccepted {
        job_id: record.id.clone(),
        status: record.status.as_str().to_owned(),
        kind: record.kind.as_str().to_owned(),
    }
}

/// The record of `job` when a submit that failed with `err` made it after all. A submit that
/// fails for want of an answer (a lost connection, no answer in time: `Unavailable`,
/// `Storage`) may have run: the job is then accepted, and freeing its request id would let the
/// client's retry make a second job. So the store is asked, three times at most (0, 100 and
/// 300 ms) while it cannot answer either. `None` when the job is not there, when `err` says the
/// submit did not run, or when the store could not tell: the caller then refuses the request and
/// frees its id (a job made all the same may then run beside the retry's, at least once).
async fn accepted_after_all(rt: &TenantRuntime, err: &QueueError, job: &JobId) -> Option<JobRecord> {
    if !matches!(err, QueueError::Unavailable(_) | QueueError::Storage(_)) {
        return None;
    }
    for wait in [0, 100, 200] {
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        match rt.store.get(job).await {
            Ok(Some(record)) => {
                warn!(tenant = %rt.tenant, job = %job, error = %err, "the submit's answer was lost, but the job was made: accepted");
                return Some(record);
            }
            Ok(None) => return None,
            Err(e) => debug!(error = %e, "cannot tell yet whether the failed submit made its job"),
        }
    }
    None
}

/// `claim`, the answer to claiming `request` for `job`; when it is an error, first frees the key
/// if it names `job`. The claim may have been made with its answer lost (a lost connection, no
/// answer in time): a key left naming a job that is never made would answer the client's retry
/// with "not found" until it expired. The release deletes the key only while it names `job`, so
/// it is harmless when the claim was not made; its own failure is logged at debug (Redis is
/// likely down, and every refused request would log it).
async fn unclaimed_on_error(
    rt: &TenantRuntime,
    request: &RequestId,
    job: &JobId,
    claim: QueueResult<IdempotencyClaim>,
) -> QueueResult<IdempotencyClaim> {
    if claim.is_err()
        && let Err(e) = rt.idempotency.release(request, job).await
    {
        debug!(error = %e, "could not free the request id of a failed claim");
    }
    claim
}

/// Registers a chat job's message for coalescing; a failure is logged (the job is accepted, only
/// the coalescing of a repeat is lost).
async fn remember_message(rt: &TenantRuntime, chat: &ValidChat, job: &JobId) {
    if let Err(e) = rt.lanes.register_recent(&chat.lane, &chat.fingerprint, job).await {
        warn!(error = %e, "could not register the message for coalescing");
    }
}

/// Frees `request` if it still maps to `job`; a failure is logged (the key then expires).
async fn release_request(rt: &TenantRuntime, request: &RequestId, job: &JobId) {
    if let Err(e) = rt.idempotency.release(request, job).await {
        warn!(error = %e, "could not release an idempotency key");
    }
}

/// What [`Laneway::chat_accept`] made of a chat start.
enum ChatAccept {
    /// A new job, accepted: its lane's receipt (none would be a backend's bug).
    Accepted(Option<ChatEnqueueReceipt>),
    /// The same message as a pending job of the lane, within the debounce window: that job's
    /// receipt.
    Coalesced(ChatStartResponse),
    /// A new job, accepted, though the submit's answer was lost (see [`accepted_after_all`]).
    Unanswered,
}

async fn chat_receipt(
    rt: &TenantRuntime,
    job: &JobId,
    debounced: bool,
) -> Result<ChatStartResponse, AppError> {
    let record =
        rt.store.get(job).await?.ok_or_else(|| AppError::NotFound(format!("job {job} not found")))?;
    let lane =
        record.lane.clone().ok_or_else(|| AppError::Internal(format!("chat job {job} has no lane")))?;
    let lanes: &dyn ChatLaneStore = &*rt.lanes;
    let load = lanes.lane_load(&lane).await?;
    let position =
        if record.status == JobStatus::Queued { lanes.find_position(&lane, job).await? } else { 0 };
    Ok(ChatStartResponse {
        job_id: record.id,
        status: record.status.as_str().to_owned(),
        lane_id: lane,
        lane_queue_position: position,
        lane_queue_size: load.total,
        lane_active: load.active > 0,
        debounced,
    })
}
