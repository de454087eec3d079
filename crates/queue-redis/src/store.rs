//! The Redis [`JobStore`]: one HASH per job record, ZSET indexes of pending jobs (per kind, by
//! `seq`) and of finished jobs (per kind and final state, by finish time), and one counter per
//! kind of the jobs running. Every change of state is one Lua script over keys of one tenant (one
//! Cluster slot), with the time passed in from the [`SharedClock`] so that tests and every
//! process agree on it.
//!
//! Counts cost the hot path one counter: a kind's queued count is its pending index less its
//! running counter, and each finished state's count is the size of its index.
//!
//! Key layout (all under the tenant's hash tag, see [`TenantKeys`]):
//!
//! - `job:<id>` HASH: `state` (`<status>|<epoch>|<attempt>|<updated>`: what a claim and an end
//!   change, see [`LEGACY_STATE_FIELDS`]), `id`, `fixed` (`<seq>|<created>|<lane>|<request_id>`:
//!   what a job never changes but its payload, see [`LEGACY_FIXED_FIELDS`]; lane and request id
//!   empty when unset), `payload` (JSON), `kind`, `tenant`, `result` (JSON), `error` (absent when
//!   unset); written in that order, the hot path's most looked-up first. Records written before
//!   `state` or `fixed` hold their parts as fields of their own (`status`, `epoch`, `attempt`,
//!   `updated`; `seq`, `created`, `lane`, `request_id`); they are still read, and a script that
//!   reads such a record's state moves it to `state` first. A record finished
//!   by `transition` gets a TTL of the retention period; one finished by the backend's
//!   `complete_many` gets none (its retention loop purges it).
//! - `seq` STRING: the last sequence number handed out.
//! - `pending:<kind>` ZSET id -> seq: queued and processing jobs.
//! - `finished:<kind>:<status>` ZSET id -> finish time (ms): the jobs of `kind` that ended in
//!   `status` (done, failed, cancelled), for `purge_finished`, `list` and `counts`.
//! - `stats` HASH: `count:<kind>:processing`, the running jobs of each kind (and the backend's
//!   own figures, e.g. `fenced`).

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use lane_store::redis::{self, Script, ScriptInvocation, Value};
use lane_store::{RedisConn, RedisPool, TenantKeys, redis_error};
use queue_core::{
    JobId, JobKind, JobRecord, JobStatus, JobStore, JobUpdate, LaneId, NewJob, QueueError, QueueResult,
    RequestId, SharedClock, StatusCounts, TenantId,
};

/// `write_job`, `add_job` and `create_job`: `job_create.lua` and the backend's `submit_one.lua` and
/// `hand_new` run `create_job`; `submit_chat.lua` and its `hand_new_chat` run `add_job` (the script
/// checks the id first itself); the backend's batched `submit_plain.lua` writes records with
/// `write_job`.
pub(crate) const CREATE_FN: &str = include_str!("lua/job_create_fn.lua");
/// `job_state`, `kind_and_state`, `legacy_state`, `state_parts`, `state_status` and `state_of`: a
/// record's `state` field (see [`LEGACY_STATE_FIELDS`]), for every script that reads or writes it.
pub(crate) const STATE_FN: &str = include_str!("lua/state_fn.lua");
static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{CREATE_FN}\n{}", include_str!("lua/job_create.lua"))));
static TRANSITION: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{STATE_FN}\n{}", include_str!("lua/job_transition.lua"))));
static DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{STATE_FN}\n{}", include_str!("lua/job_delete.lua"))));
static PURGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{STATE_FN}\n{}", include_str!("lua/job_purge.lua"))));
static COUNTS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/job_counts.lua")));

/// Finished entries one purge script examines; a batch bounds how long the script blocks Redis.
const PURGE_BATCH: usize = 500;
/// Index entries one round trip of `list` or `scan_pending` reads.
const READ_PAGE: usize = 256;
/// Most index entries `list` examines per index before it returns what it found: the bound on
/// its work when few entries match the asked state.
const LIST_SCAN_BUDGET: usize = 10_000;

/// One tenant's job records in Redis, on one node or a Cluster.
///
/// Records finished by [`JobStore::transition`] expire `retention` after they finish (a zero
/// retention sets no TTL: they stay until [`JobStore::purge_finished`] removes them); records the
/// Redis backend's workers finish have no TTL, and only `purge_finished` removes them. Their
/// index entries and counters are settled by `purge_finished`, so call it periodically with a
/// cut-off of `now - retention` (the Redis backend does, in every process); until then
/// [`JobStore::counts`] still counts finished records whose hash has expired.
pub struct RedisJobStore {
    pool: RedisPool,
    tenant: TenantId,
    keys: TenantKeys,
    clock: SharedClock,
    retention_ms: u64,
}

impl fmt::Debug for RedisJobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisJobStore")
            .field("tenant", &self.tenant)
            .field("target", self.pool.target())
            .field("retention_ms", &self.retention_ms)
            .finish_non_exhaustive()
    }
}

impl RedisJobStore {
    /// The job store of `tenant` on `pool`, reading time from `clock`; finished records expire
    /// after `retention` (zero: never by TTL).
    #[must_use]
    pub fn new(pool: RedisPool, tenant: TenantId, clock: SharedClock, retention: Duration) -> Self {
        let keys = TenantKeys::new(&tenant);
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        Self { pool, tenant, keys, clock, retention_ms }
    }

    /// The tenant's key layout.
    #[must_use]
    pub const fn keys(&self) -> &TenantKeys {
        &self.keys
    }

    /// Builds a record from the fields of its job HASH, as `HGETALL` returns them (the same as
    /// the module's [`parse_record`], for users outside the crate).
    ///
    /// # Errors
    /// [`QueueError::Storage`] naming the job and the field when a field is missing or malformed.
    pub fn parse_record(fields: HashMap<String, String>) -> QueueResult<JobRecord> {
        parse_record(fields)
    }

    async fn conn(&self) -> QueueResult<RedisConn> {
        self.pool.get().await
    }

    /// Reads the records of `ids` in one pipeline, in that order, skipping ids whose hash is gone.
    async fn read_records(&self, conn: &mut RedisConn, ids: &[String]) -> QueueResult<Vec<JobRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            let job = JobId::new(id.as_str()).map_err(|e| corrupt(id, &e))?;
            pipe.cmd("HGETALL").arg(self.keys.job(&job));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(conn).await.map_err(|e| redis_error(&e))?;
        hashes.into_iter().filter(|h| !h.is_empty()).map(parse_record).collect()
    }

    /// Newest-first records of `status` from the ZSET at `index` (highest score first), examining
    /// at most [`LIST_SCAN_BUDGET`] entries and keeping those that pass `keep`.
    async fn list_from(
        &self,
        conn: &mut RedisConn,
        index: &str,
        limit: usize,
        keep: impl Fn(&JobRecord) -> bool + Send,
    ) -> QueueResult<Vec<JobRecord>> {
        let mut found = Vec::new();
        let mut start = 0;
        while found.len() < limit && start < LIST_SCAN_BUDGET {
            let stop = start + READ_PAGE - 1;
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(index)
                .arg(start)
                .arg(stop)
                .arg("REV")
                .query_async(conn)
                .await
                .map_err(|e| redis_error(&e))?;
            let page_len = ids.len();
            found.extend(self.read_records(conn, &ids).await?.into_iter().filter(|r| keep(r)));
            if page_len < READ_PAGE {
                break;
            }
            start += READ_PAGE;
        }
        found.truncate(limit);
        Ok(found)
    }

    fn pending_keys(&self) -> [String; JobKind::ALL.len()] {
        JobKind::ALL.map(|kind| self.keys.pending(kind))
    }
}

/// Adds the keys and arguments of `create_job` (lua/job_create_fn.lua) for `job` to `call`: the
/// first three keys and seven arguments of `job_create` (`submit_chat.lua` builds the same per
/// job from its own arguments).
///
/// # Errors
/// `QueueError::Storage` when the payload cannot be written as JSON.
fn create_args(
    call: &mut ScriptInvocation<'_>,
    keys: &TenantKeys,
    tenant: &TenantId,
    job: &NewJob,
    now: u64,
) -> QueueResult<()> {
    let payload = serde_json::to_string(&job.payload).map_err(QueueError::storage)?;
    call.key(keys.job(&job.id))
        .key(keys.seq())
        .key(keys.pending(job.kind))
        .arg(job.id.as_str())
        .arg(job.kind.as_str())
        .arg(tenant.as_str())
        .arg(job.lane.as_ref().map_or("", LaneId::as_str))
        .arg(job.request_id.as_ref().map_or("", RequestId::as_str))
        .arg(now)
        .arg(payload);
    Ok(())
}

#[async_trait]
impl JobStore for RedisJobStore {
    async fn create(&self, job: NewJob) -> QueueResult<JobRecord> {
        let now = self.clock.now_ms();
        let mut call = CREATE.prepare_invoke();
        create_args(&mut call, &self.keys, &self.tenant, &job, now)?;
        let mut conn = self.conn().await?;
        let seq: u64 = call.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        if seq == 0 {
            return Err(QueueError::AlreadyExists { job: job.id });
        }
        tracing::debug!(tenant = %self.tenant, job = %job.id, seq, "created a job record");
        Ok(JobRecord::from_new(self.tenant.clone(), job, seq, now))
    }

    async fn get(&self, id: &JobId) -> QueueResult<Option<JobRecord>> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.job(id))
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        if fields.is_empty() { Ok(None) } else { parse_record(fields).map(Some) }
    }

    async fn transition(&self, id: &JobId, update: JobUpdate) -> QueueResult<JobRecord> {
        let now = self.clock.now_ms();
        let result =
            update.result.as_ref().map(serde_json::to_string).transpose().map_err(QueueError::storage)?;
        let mut conn = self.conn().await?;
        let mut call = TRANSITION.prepare_invoke();
        call.key(self.keys.job(id))
            .key(self.keys.stats())
            .key(&self.pending_keys()[..])
            .arg(id.as_str())
            .arg(now)
            .arg(update.to.map_or("", JobStatus::as_str))
            .arg(update.expect_epoch.map_or_else(String::new, |e| e.to_string()))
            .arg(update.set_epoch.map_or_else(String::new, |e| e.to_string()))
            .arg(flag(update.bump_attempt))
            .arg(flag(result.is_some()))
            .arg(result.unwrap_or_default())
            .arg(flag(update.error.is_some()))
            .arg(update.error.as_deref().unwrap_or_default())
            .arg(self.retention_ms)
            .arg(&JobKind::ALL.map(JobKind::as_str)[..])
            .arg(self.keys.prefix());
        let reply: Value = call.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        let outcome = match reply {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::SimpleString(s) => s,
            fields => {
                let fields: HashMap<String, String> =
                    redis::from_redis_value(fields).map_err(QueueError::storage)?;
                return parse_record(fields);
            }
        };
        Err(refusal(id, &update, &outcome))
    }

    async fn delete(&self, id: &JobId) -> QueueResult<bool> {
        let mut conn = self.conn().await?;
        let deleted: u64 = DELETE
            .key(self.keys.job(id))
            .key(self.keys.stats())
            .key(&self.pending_keys()[..])
            .arg(id.as_str())
            .arg(&JobKind::ALL.map(JobKind::as_str)[..])
            .arg(self.keys.prefix())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(deleted > 0)
    }

    async fn scan_pending(&self, kind: JobKind) -> QueueResult<Vec<JobRecord>> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.pending(kind))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        let mut records = Vec::with_capacity(ids.len());
        for page in ids.chunks(READ_PAGE) {
            records.extend(
                self.read_records(&mut conn, page).await?.into_iter().filter(|r| r.status.is_pending()),
            );
        }
        Ok(records)
    }

    async fn list(
        &self,
        kind: Option<JobKind>,
        status: JobStatus,
        limit: usize,
    ) -> QueueResult<Vec<JobRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        // Each kind's index of `status`, newest first, merged: pending jobs by highest seq,
        // finished ones by latest finish.
        let kinds = kind.map_or_else(|| JobKind::ALL.to_vec(), |k| vec![k]);
        let mut found = Vec::new();
        for k in kinds {
            let index =
                if status.is_pending() { self.keys.pending(k) } else { self.keys.finished(k, status) };
            found.extend(
                self.list_from(&mut conn, &index, limit, |r| r.status == status && r.kind == k).await?,
            );
        }
        if status.is_pending() {
            found.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
        } else {
            found.sort_unstable_by_key(|r| std::cmp::Reverse((r.updated_at_ms, r.seq)));
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn counts(&self, kind: JobKind) -> QueueResult<StatusCounts> {
        let mut conn = self.conn().await?;
        let (processing, pending, done, failed, cancelled): (i64, u64, u64, u64, u64) = COUNTS
            .key(self.keys.stats())
            .key(self.keys.pending(kind))
            .key(&JobStatus::TERMINAL.map(|s| self.keys.finished(kind, s))[..])
            .arg(format!("count:{}:processing", kind.as_str()))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        let processing = u64::try_from(processing).unwrap_or(0);
        Ok(StatusCounts { queued: pending.saturating_sub(processing), processing, done, failed, cancelled })
    }

    async fn purge_finished(&self, before_ms: u64) -> QueueResult<usize> {
        let mut conn = self.conn().await?;
        let job_prefix = format!("{}job:", self.keys.prefix());
        let mut total = 0;
        for kind in JobKind::ALL {
            for status in JobStatus::TERMINAL {
                loop {
                    let (purged, examined): (usize, usize) = PURGE
                        .key(self.keys.finished(kind, status))
                        .arg(before_ms)
                        .arg(PURGE_BATCH)
                        .arg(&job_prefix)
                        .arg(kind.as_str())
                        .arg(status.as_str())
                        .invoke_async(&mut conn)
                        .await
                        .map_err(|e| redis_error(&e))?;
                    total += purged;
                    if examined < PURGE_BATCH {
                        break;
                    }
                }
            }
        }
        if total > 0 {
            tracing::debug!(tenant = %self.tenant, purged = total, before_ms, "purged finished job records");
        }
        Ok(total)
    }
}

const fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// The error for a script's refusal: `notfound`, `stale:<epoch>` or `invalid:<status>`.
fn refusal(id: &JobId, update: &JobUpdate, outcome: &str) -> QueueError {
    if outcome == "notfound" {
        return QueueError::NotFound { job: id.clone() };
    }
    if let Some(current) = outcome.strip_prefix("stale:")
        && let (Some(epoch), Ok(current)) = (update.expect_epoch, current.parse())
    {
        return QueueError::StaleLease { job: id.clone(), epoch, current };
    }
    if let Some(from) = outcome.strip_prefix("invalid:")
        && let (Some(to), Ok(from)) = (update.to, JobStatus::parse(from))
    {
        return QueueError::InvalidTransition { from, to };
    }
    QueueError::Storage(format!("redis: job {id}: unexpected answer {outcome:?} from the transition script"))
}

fn corrupt(job: &str, what: &dyn fmt::Display) -> QueueError {
    QueueError::Storage(format!("redis: job record {job}: {what}"))
}

/// The fields of a job record a claim reads (`HMGET`, in this order) and answers with, values
/// only: what the worker's [`JobRecord`] holds, less what the caller already knows (the tenant,
/// the backend's own; the kind, the one it claimed) and the `result`, which a job that can be
/// claimed has not got (only `done` sets it, and `done` is final). `state` holds the four fields
/// a claim checks and changes, `fixed` four a job never changes (see [`LEGACY_STATE_FIELDS`] and
/// [`LEGACY_FIXED_FIELDS`]), and the `id`, last, is the claim's own (the scripts do not read it
/// back): a claim reads four fields where it read eleven, and only `error` is usually absent (an
/// absent field costs `HMGET` a scan of the whole record). The one list both sides use: the
/// scripts' `HMGET` is generated from it (`scripts.rs`, [`claim_field`] gives the positions), and
/// [`parse_claimed`] reads an answer by it.
pub(crate) const CLAIM_FIELDS: [&str; 5] = ["state", "fixed", "payload", "error", "id"];

/// The parts of a record's `state` field, in its order, joined by `|`: what a job's claims and
/// ends change, one field of its hash (`state_fn.lua`): its status, lease epoch, attempt and
/// last update (ms). Records written before the field hold these as fields of their own, under
/// these names: the scripts move such a record to the field at their first read of it
/// (`legacy_state`), and [`build_record`] reads either.
pub(crate) const LEGACY_STATE_FIELDS: [&str; 4] = ["status", "epoch", "attempt", "updated"];

/// The parts of a record's `fixed` field, in its order, joined by `|`: what a job never changes
/// after it is created but its payload, one field of its hash (`write_job`, job_create_fn.lua).
/// `lane` and `request_id` are empty when unset; no id holds a `|`. The payload keeps a field of
/// its own: a hash whose values are all at most `hash-max-listpack-value` (64 bytes by default)
/// is a compact listpack, and a payload that fits alone would not always fit with these. Records
/// written before the field hold these as fields of their own, under these names; both the
/// claim's `read_claim` (scripts.rs) and [`build_record`] still read them.
pub(crate) const LEGACY_FIXED_FIELDS: [&str; 4] = ["seq", "created", "lane", "request_id"];

/// Where `name` sits in [`CLAIM_FIELDS`] (0-based). In a `const`, a name that is not there fails
/// the build.
pub(crate) const fn claim_field(name: &str) -> usize {
    let mut i = 0;
    while i < CLAIM_FIELDS.len() {
        if same(CLAIM_FIELDS[i].as_bytes(), name.as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("not a field of CLAIM_FIELDS");
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Builds a record from the fields of its job HASH, as `HGETALL` returns them.
///
/// # Errors
/// [`QueueError::Storage`] naming the job and the field when a field is missing or malformed.
pub fn parse_record(mut fields: HashMap<String, String>) -> QueueResult<JobRecord> {
    build_record(|name| fields.remove(name), None)
}

/// A job handed to an idle worker (`hand_off`, handoff_fn.lua): the JSON array of the claimed
/// record's [`CLAIM_FIELDS`] values (null for a field the hash lacks), then when its short lease
/// runs out (ms, as text). Returns the record and that time.
pub(crate) fn parse_handed(text: &str, tenant: &TenantId, kind: JobKind) -> QueueResult<(JobRecord, u64)> {
    let bad = |why: &str| QueueError::Storage(format!("redis: a job handed over {why}"));
    let mut values: Vec<Option<String>> =
        serde_json::from_str(text).map_err(|e| bad(&format!("is not an array of strings: {e}")))?;
    let until = values
        .pop()
        .flatten()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("ends without its lease's deadline"))?;
    Ok((parse_claimed(values, tenant, kind)?, until))
}

/// Builds a claimed record from a claim's answer: the values of [`CLAIM_FIELDS`] in that order
/// (`None` for a field the hash lacks), of a job of `tenant` and `kind`.
///
/// # Errors
/// [`QueueError::Storage`] naming the job and the field when a field is missing or malformed, or
/// when the answer does not hold one value per field.
pub(crate) fn parse_claimed(
    mut values: Vec<Option<String>>,
    tenant: &TenantId,
    kind: JobKind,
) -> QueueResult<JobRecord> {
    if values.len() != CLAIM_FIELDS.len() {
        return Err(QueueError::Storage(format!(
            "redis: a claimed record came as {} values, not one per claimed field ({})",
            values.len(),
            CLAIM_FIELDS.len()
        )));
    }
    build_record(
        |name| CLAIM_FIELDS.iter().position(|f| *f == name).and_then(|i| values[i].take()),
        Some((tenant, kind)),
    )
}

/// Builds a record from its fields, each handed over by name once by `take` (`None`: absent);
/// `known`, the tenant and kind when the caller knows them, is used instead of those fields.
fn build_record(
    mut take: impl FnMut(&str) -> Option<String>,
    known: Option<(&TenantId, JobKind)>,
) -> QueueResult<JobRecord> {
    let id = take("id");
    let shown = id.clone().unwrap_or_else(|| "<no id>".to_owned());
    let required = |value: Option<String>, name: &str| {
        value.ok_or_else(|| corrupt(&shown, &format_args!("the field {name} is missing")))
    };
    let number = |value: Option<String>, name: &str| -> QueueResult<u64> {
        let value = required(value, name)?;
        value
            .parse()
            .map_err(|_| corrupt(&shown, &format_args!("the field {name} is not a number: {value:?}")))
    };
    let json = |text: String, name: &str| {
        serde_json::from_str(&text)
            .map_err(|e| corrupt(&shown, &format_args!("the field {name} is not JSON: {e}")))
    };

    let id = JobId::new(required(id, "id")?).map_err(|e| corrupt(&shown, &e))?;
    let (tenant, kind) = match known {
        Some((tenant, kind)) => (tenant.clone(), kind),
        None => (
            TenantId::new(required(take("tenant"), "tenant")?).map_err(|e| corrupt(&shown, &e))?,
            JobKind::parse(&required(take("kind"), "kind")?).map_err(|e| corrupt(&shown, &e))?,
        ),
    };
    // What a job's claims and ends change: one `state` field, or, in a record written before
    // it, four.
    let [status, epoch, attempt, updated] = match take("state") {
        Some(state) => split_parts(&shown, "state", &state, &LEGACY_STATE_FIELDS)?,
        None => LEGACY_STATE_FIELDS.map(&mut take),
    };
    let status = JobStatus::parse(&required(status, "status")?).map_err(|e| corrupt(&shown, &e))?;
    // What a job never changes but its payload: one `fixed` field, or, in a record written
    // before it, four.
    let [seq, created, lane, request_id] = match take("fixed") {
        Some(fixed) => split_parts(&shown, "fixed", &fixed, &LEGACY_FIXED_FIELDS)?,
        None => LEGACY_FIXED_FIELDS.map(&mut take),
    };
    let lane = lane.map(LaneId::new).transpose().map_err(|e| corrupt(&shown, &e))?;
    let request_id = request_id.map(RequestId::new).transpose().map_err(|e| corrupt(&shown, &e))?;
    let attempt = number(attempt, "attempt")?;
    let attempt = u32::try_from(attempt).map_err(|e| corrupt(&shown, &e))?;
    let lease_epoch = number(epoch, "epoch")?;
    let seq = number(seq, "seq")?;
    let created_at_ms = number(created, "created")?;
    let updated_at_ms = number(updated, "updated")?;
    let payload = json(required(take("payload"), "payload")?, "payload")?;
    let result = take("result").map(|r| json(r, "result")).transpose()?;
    let error = take("error");
    Ok(JobRecord {
        id,
        kind,
        tenant,
        lane,
        request_id,
        status,
        attempt,
        lease_epoch,
        seq,
        created_at_ms,
        updated_at_ms,
        payload,
        result,
        error,
    })
}

/// The `N` parts of the field `name` of job `shown`, joined by `|` (`names` gives them, in that
/// order); an empty part is `None` (absent). The last part takes the rest of the text.
///
/// # Errors
/// [`QueueError::Storage`] naming the job and the field when `value` has fewer parts.
fn split_parts<const N: usize>(
    shown: &str,
    name: &str,
    value: &str,
    names: &[&str; N],
) -> QueueResult<[Option<String>; N]> {
    let mut parts = value.splitn(N, '|').map(str::to_owned);
    let parts: [Option<String>; N] = std::array::from_fn(|_| parts.next());
    if parts[N - 1].is_none() {
        return Err(corrupt(shown, &format_args!("the field {name} is not {}: {value:?}", names.join("|"))));
    }
    Ok(parts.map(|p| p.filter(|p| !p.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim's answer for a queued upload `u1` just started: every field a new record has, and
    /// none of the optional ones.
    fn answer() -> Vec<Option<String>> {
        CLAIM_FIELDS
            .iter()
            .map(|f| match *f {
                "id" => Some("u1".to_owned()),
                "state" => Some("processing|1|1|2000".to_owned()),
                "fixed" => Some("7|1000||".to_owned()),
                "payload" => Some(r#"{"k":1}"#.to_owned()),
                _ => None,
            })
            .collect()
    }

    fn set(values: &mut [Option<String>], name: &str, value: &str) {
        values[claim_field(name)] = Some(value.to_owned());
    }

    fn tenant() -> TenantId {
        TenantId::new("acme").expect("tenant")
    }

    #[test]
    fn a_claimed_record_is_read_by_position_with_its_absent_optional_fields_none() {
        let record = parse_claimed(answer(), &tenant(), JobKind::Upload).expect("parses");
        assert_eq!(
            record,
            JobRecord {
                id: JobId::new("u1").expect("id"),
                kind: JobKind::Upload,
                tenant: tenant(),
                lane: None,
                request_id: None,
                status: JobStatus::Processing,
                attempt: 1,
                lease_epoch: 1,
                seq: 7,
                created_at_ms: 1000,
                updated_at_ms: 2000,
                payload: serde_json::json!({"k": 1}),
                result: None,
                error: None,
            }
        );
    }

    #[test]
    fn a_claimed_record_reads_its_optional_fields_when_present() {
        let mut values = answer();
        set(&mut values, "fixed", "7|1000|l1|req-1");
        set(&mut values, "error", "planned failure 1");
        let record = parse_claimed(values, &tenant(), JobKind::Chat).expect("parses");
        assert_eq!(record.kind, JobKind::Chat);
        assert_eq!(record.lane, Some(LaneId::new("l1").expect("lane")));
        assert_eq!(record.request_id, Some(RequestId::new("req-1").expect("request id")));
        assert_eq!(record.error.as_deref(), Some("planned failure 1"));
        assert_eq!(record.result, None, "a claim does not read the result: a claimable job has none");
    }

    #[test]
    fn a_fixed_field_short_of_a_part_or_with_an_empty_one_is_named_with_its_job() {
        let short = r#"job record u1: the field fixed is not seq|created|lane|request_id: "7|1000|""#;
        for (fixed, expected) in [
            ("7|1000|", short),
            ("7|1000|||", "job record u1: request_id: contains the forbidden character '|'"),
            ("|1000||", "job record u1: the field seq is missing"),
            ("7|||", "job record u1: the field created is missing"),
        ] {
            let mut values = answer();
            set(&mut values, "fixed", fixed);
            let err = parse_claimed(values, &tenant(), JobKind::Upload).expect_err("a bad fixed field");
            assert!(err.to_string().contains(expected), "{fixed}: {err}");
        }
    }

    #[test]
    fn a_handed_job_is_its_claimed_values_then_its_lease_deadline() {
        let mut values = answer();
        values.push(Some("123456".to_owned()));
        let text = serde_json::to_string(&values).expect("json");
        let (record, until) = parse_handed(&text, &tenant(), JobKind::Upload).expect("parses");
        assert_eq!(
            (record, until),
            (parse_claimed(answer(), &tenant(), JobKind::Upload).expect("parses"), 123_456)
        );

        let without = serde_json::to_string(&answer()).expect("json");
        let err =
            parse_handed(&without, &tenant(), JobKind::Upload).expect_err("the last value is no deadline");
        assert!(err.to_string().contains("ends without its lease's deadline"), "{err}");
        let err = parse_handed("{}", &tenant(), JobKind::Upload).expect_err("not an array");
        assert!(err.to_string().contains("a job handed over is not an array of strings"), "{err}");
    }

    #[test]
    fn a_corrupt_claimed_field_is_named_with_its_job() {
        let mut values = answer();
        set(&mut values, "state", "processing|1|two|2000");
        let err = parse_claimed(values, &tenant(), JobKind::Upload).expect_err("attempt is not a number");
        assert!(
            matches!(&err, QueueError::Storage(m) if m == r#"redis: job record u1: the field attempt is not a number: "two""#),
            "{err:?}"
        );
        let mut values = answer();
        set(&mut values, "payload", "not json");
        let err = parse_claimed(values, &tenant(), JobKind::Upload).expect_err("a payload that is no JSON");
        assert!(err.to_string().contains("job record u1: the field payload is not JSON"), "{err}");
        let mut values = answer();
        values[claim_field("fixed")] = None;
        let err = parse_claimed(values, &tenant(), JobKind::Upload).expect_err("no fixed field");
        assert!(err.to_string().contains("job record u1: the field seq is missing"), "{err}");
    }

    #[test]
    fn a_state_field_short_of_a_part_or_with_an_empty_one_is_named_with_its_job() {
        let short = r#"job record u1: the field state is not status|epoch|attempt|updated: "processing|1|1""#;
        for (state, expected) in [
            ("processing|1|1", short),
            ("|1|1|2000", "job record u1: the field status is missing"),
            ("processing||1|2000", "job record u1: the field epoch is missing"),
            ("processing|1|1|", "job record u1: the field updated is missing"),
            ("running|1|1|2000", r#"job record u1: status: unknown job status "running""#),
        ] {
            let mut values = answer();
            set(&mut values, "state", state);
            let err = parse_claimed(values, &tenant(), JobKind::Upload).expect_err("a bad state field");
            assert!(err.to_string().contains(expected), "{state}: {err}");
        }
    }

    #[test]
    fn a_claim_answer_of_the_wrong_length_is_refused() {
        let mut values = answer();
        values.pop();
        let err = parse_claimed(values, &tenant(), JobKind::Upload).expect_err("one value short");
        let short = format!("{} values", CLAIM_FIELDS.len() - 1);
        assert!(err.to_string().contains(&short), "{err}");
    }

    /// [`answer`]'s record as `HGETALL` gives it: its fields by name, with the tenant and kind a
    /// claim leaves out.
    fn hgetall_of_answer() -> HashMap<String, String> {
        let mut fields: HashMap<String, String> =
            CLAIM_FIELDS.iter().zip(answer()).filter_map(|(f, v)| Some(((*f).to_owned(), v?))).collect();
        fields.insert("tenant".into(), "acme".into());
        fields.insert("kind".into(), "upload".into());
        fields
    }

    #[test]
    fn parse_record_still_reads_an_hgetall_reply_and_names_a_bad_field() {
        let mut fields = hgetall_of_answer();
        let claimed = parse_claimed(answer(), &tenant(), JobKind::Upload).expect("parses");
        assert_eq!(parse_record(fields.clone()).expect("parses"), claimed);
        fields.insert("fixed".into(), "-1|1000||".into());
        let err = parse_record(fields).expect_err("seq is not a number");
        assert!(err.to_string().contains(r#"job record u1: the field seq is not a number: "-1""#), "{err}");
    }

    /// A record written before the `fixed` field holds its parts as fields of their own: it is
    /// read as the same record.
    #[test]
    fn a_record_of_the_fields_apart_is_read_as_one_with_a_fixed_field() {
        let mut fields = hgetall_of_answer();
        let joined = parse_record(fields.clone()).expect("parses");
        fields.remove("fixed");
        for (name, value) in [("seq", "7"), ("created", "1000")] {
            fields.insert(name.into(), value.into());
        }
        assert_eq!(parse_record(fields.clone()).expect("parses"), joined);
        fields.insert("lane".into(), "l1".into());
        let record = parse_record(fields.clone()).expect("parses");
        assert_eq!(record.lane, Some(LaneId::new("l1").expect("lane")));
        fields.remove("created");
        let err = parse_record(fields).expect_err("no created");
        assert!(err.to_string().contains("job record u1: the field created is missing"), "{err}");
    }

    /// A record written before the `state` field holds its parts as fields of their own: it is
    /// read as the same record.
    #[test]
    fn a_record_of_the_state_fields_apart_is_read_as_one_with_a_state_field() {
        let mut fields = hgetall_of_answer();
        let joined = parse_record(fields.clone()).expect("parses");
        fields.remove("state");
        for (name, value) in [("status", "processing"), ("epoch", "1"), ("attempt", "1"), ("updated", "2000")]
        {
            fields.insert(name.into(), value.into());
        }
        assert_eq!(parse_record(fields.clone()).expect("parses"), joined);
        fields.remove("epoch");
        let err = parse_record(fields).expect_err("no epoch");
        assert!(err.to_string().contains("job record u1: the field epoch is missing"), "{err}");
    }
}
