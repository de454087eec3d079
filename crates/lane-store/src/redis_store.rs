//! `RedisLaneStore`: one tenant's chat lanes in Redis, single node or Cluster, with exactly the
//! semantics of `MemoryLaneStore` (the crate docs list them).
//!
//! Every state change is one Lua script (`src/lua/*.lua`), so each trait method is atomic with
//! respect to the others even across processes. Scripts get every key they can name up front in
//! `KEYS`; keys that depend on data found inside a script (the lanes a reap or a snapshot finds)
//! are built there from the tenant's key prefix, which carries the tenant's hash tag, so every key
//! a script touches lies in one Cluster slot. Time comes from the injected clock as `ARGV`, never
//! from Redis `TIME`, so leases and debounce windows follow a `ManualClock` in tests.
//!
//! Layout (see [`TenantKeys`]): a lane's active claim is the HASH `lane_active(lane)`
//! `{job, epoch, deadline}` plus its deadline in the `leases` ZSET; its waiting jobs are the LIST
//! `lane_waiting(lane)`; lanes holding any job are members of the `lanes` ZSET (score 0, paged by
//! name); epochs come from `INCR epoch`, never reset. Fingerprints are fields of the HASH
//! `lane_recent(lane)`, which expires with its newest debounce window. An idle lane has no key.

use std::sync::LazyLock;

use async_trait::async_trait;
use queue_core::{
    ChatEnqueueReceipt, ChatLaneStore, JobId, JobKind, LaneClaim, LaneEnqueue, LaneId, LaneLoad,
    LaneSnapshot, LaneStoreConfig, QueueError, QueueResult, SharedClock, TenantId,
};
use redis::{self, FromRedisValue, Script, ScriptInvocation};

use crate::keys::TenantKeys;
use crate::redis_conn::{RedisPool, redis_error};

/// Helpers prepended to every script that hands out or checks a claim.
const COMMON: &str = include_str!("lua/common.lua");

/// Builds a claim-handling script: the shared helpers, then its body.
/// Lua shared by every lane script that changes a claim (`claim`, `push_dispatch`, `stale`).
pub const LANE_COMMON_LUA: &str = COMMON;
/// Lua of `finish_lane` (needs [`LANE_COMMON_LUA`]): the Redis backend's `complete_many` script
/// calls it to advance a chat lane in the same round trip as the job's outcome.
pub const FINISH_FN: &str = include_str!("lua/finish_fn.lua");
/// Lua of `lane_admit` and `lane_append`, the two halves of `enqueue` (needs
/// [`LANE_COMMON_LUA`]): the Redis backend's `submit_chat` script creates a chat job's record
/// between them, so that a chat submit is one atomic script (see
/// [`RedisLaneStore::enqueue_terms`] and [`RedisLaneStore::enqueue_answered`]).
pub const ENQUEUE_FN: &str = include_str!("lua/enqueue_fn.lua");

fn claim_script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

// Each script is hashed once per process; the server loads it on first use (EVALSHA, falling back
// to SCRIPT LOAD on NOSCRIPT, which on a Cluster goes to every node), and again after a restart.
static ENQUEUE: LazyLock<Script> =
    LazyLock::new(|| claim_script(&format!("{ENQUEUE_FN}\n{}", include_str!("lua/enqueue.lua"))));
static RENEW: LazyLock<Script> = LazyLock::new(|| claim_script(include_str!("lua/renew.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| claim_script(&format!("{FINISH_FN}\n{}", include_str!("lua/finish.lua"))));
static RECLAIM: LazyLock<Script> = LazyLock::new(|| claim_script(include_str!("lua/reclaim.lua")));
static REAP: LazyLock<Script> = LazyLock::new(|| claim_script(include_str!("lua/reap.lua")));
static REMOVE_WAITING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/remove_waiting.lua")));
static LANE_LOAD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lane_load.lua")));
static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/snapshot.lua")));
static REGISTER_RECENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/register_recent.lua")));
static RESET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/reset.lua")));

/// Most expired lanes one reap script re-claims; `reap_expired` calls it until fewer come back,
/// so no single script blocks Redis for long.
const REAP_BATCH: usize = 100;
/// Most lanes one reset script drops; `reset` calls it until none is left.
const RESET_BATCH: usize = 100;

/// The `(lane, job, epoch, deadline, waiting)` row a snapshot script returns per lane.
type SnapshotRow = (String, String, String, String, Vec<String>);

/// Reads a claim handed to the chat workers (`"{epoch}:{deadline}|{job}|{lane}"`, as pushed to
/// [`TenantKeys::chat_ready`] by a store built [`with_dispatch`](RedisLaneStore::with_dispatch)).
///
/// The deadline is the claim's lease deadline when it was pushed (the claim is renewed only
/// once a worker runs it). An entry pushed by a version before the deadline was part of it,
/// `"{epoch}|{job}|{lane}"`, is read too, with `lease_deadline_ms` 0.
///
/// Returns `None` for anything else, including ids that break their rule.
#[must_use]
pub fn parse_dispatch(s: &str) -> Option<LaneClaim> {
    let mut parts = s.splitn(3, '|');
    let head = parts.next()?;
    let (epoch, deadline) = match head.split_once(':') {
        Some((epoch, deadline)) => (epoch, deadline.parse().ok()?),
        None => (head, 0),
    };
    let epoch = epoch.parse().ok()?;
    let job_id = JobId::new(parts.next()?).ok()?;
    let lane_id = LaneId::new(parts.next()?).ok()?;
    Some(LaneClaim { job_id, lane_id, epoch, lease_deadline_ms: deadline })
}

/// What an enqueue made now passes to the Lua of [`ENQUEUE_FN`], from the store's configuration
/// and clock ([`RedisLaneStore::enqueue_terms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueTerms {
    /// The lease deadline (ms) of the claim an idle lane makes: now plus the claim TTL
    /// ([`LaneStoreConfig::claim_ttl_ms`], at least 1 ms).
    pub lease_deadline_ms: u64,
    /// Most jobs that may wait in the lane ([`LaneStoreConfig::max_queue`]).
    pub max_queue: usize,
    /// `"1"` when the store hands its claims to the chat workers
    /// ([`with_dispatch`](RedisLaneStore::with_dispatch)), else `"0"`.
    pub dispatch: &'static str,
}

/// One tenant's chat lanes in Redis. See the module and crate docs for the semantics.
#[derive(Debug)]
pub struct RedisLaneStore {
    pool: RedisPool,
    tenant: TenantId,
    keys: TenantKeys,
    /// `lw:{tenant}:lane:`: what scripts prefix to a lane id they find, to build its keys.
    lane_key_prefix: String,
    /// `lw:{tenant}:job:`: what the reap script prefixes to a job id to find its record (with
    /// dispatch on, see `reap.lua`).
    job_key_prefix: String,
    /// Fingerprint windows of lanes that may hold no job (so are not in `lanes`), for `reset`.
    recent_lanes_key: String,
    config: LaneStoreConfig,
    clock: SharedClock,
    dispatch: bool,
}

impl RedisLaneStore {
    /// The lanes of `tenant` on the Redis behind `pool`, reading time from `clock`. Connects
    /// lazily; dispatch to the chat workers is off (see [`with_dispatch`](Self::with_dispatch)).
    #[must_use]
    pub fn new(pool: RedisPool, tenant: &TenantId, config: LaneStoreConfig, clock: SharedClock) -> Self {
        let keys = TenantKeys::new(tenant);
        let lane_key_prefix = format!("{}lane:", keys.prefix());
        let job_key_prefix = format!("{}job:", keys.prefix());
        // Not a lane key and not in `TenantKeys`: only this store reads it. Same hash tag.
        let recent_lanes_key = format!("{}recent_lanes", keys.prefix());
        Self {
            pool,
            tenant: tenant.clone(),
            keys,
            lane_key_prefix,
            job_key_prefix,
            recent_lanes_key,
            config,
            clock,
            dispatch: false,
        }
    }

    /// With `on`, every claim the store creates (enqueue into an idle lane, finish handing over to
    /// the next job, reclaim, reap) is also pushed, in the same script, onto
    /// [`TenantKeys::chat_ready`] as `"{epoch}:{deadline}|{job}|{lane}"` (see [`parse_dispatch`])
    /// with a wake token on [`TenantKeys::signal`]`(Chat)` (kept to 64): the Redis backend's chat
    /// workers consume that list, so a claim cannot be lost between the lane store and the queue.
    ///
    /// The store is then the Redis backend's, and a reap also writes the new epoch into the
    /// re-claimed job's record ([`TenantKeys::job`], its `state` field, when `queued` or
    /// `processing`): the backend fences outcomes and dispatches on the record's epoch.
    #[must_use]
    pub fn with_dispatch(mut self, on: bool) -> Self {
        self.dispatch = on;
        self
    }

    /// The tenant's key layout.
    #[must_use]
    pub const fn keys(&self) -> &TenantKeys {
        &self.keys
    }

    /// The configuration the store was built with.
    #[must_use]
    pub const fn config(&self) -> &LaneStoreConfig {
        &self.config
    }

    /// The deadline of a lease taken at `now_ms`. As in `MemoryLaneStore`, a zero TTL still yields
    /// a deadline in the future, so a claim just made by the reaper is not expired at once.
    fn lease_deadline(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.claim_ttl_ms())
    }

    /// How long a lane's claim lasts unless renewed ([`LaneStoreConfig::claim_ttl_ms`], at
    /// least 1 ms): the lease of the claims the Redis backend's own scripts make for this store's
    /// lanes too.
    #[must_use]
    pub const fn claim_ttl_ms(&self) -> u64 {
        if self.config.claim_ttl_ms > 1 { self.config.claim_ttl_ms } else { 1 }
    }

    const fn dispatch_arg(&self) -> &'static str {
        if self.dispatch { "1" } else { "0" }
    }

    async fn run<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> QueueResult<T> {
        let mut conn = self.pool.get().await?;
        invocation.invoke_async(&mut conn).await.map_err(|e| redis_error(&e))
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> QueueResult<T> {
        let mut conn = self.pool.get().await?;
        cmd.query_async(&mut conn).await.map_err(|e| redis_error(&e))
    }

    fn stale(claim: &LaneClaim, current: Option<&str>) -> QueueResult<QueueError> {
        Ok(QueueError::StaleLease {
            job: claim.job_id.clone(),
            epoch: claim.epoch,
            current: number("current epoch", current)?,
        })
    }

    /// The terms of an enqueue made now; `capped` is false for `restore`, which puts back jobs
    /// already accepted: no cap applies to them.
    fn terms(&self, capped: bool) -> EnqueueTerms {
        EnqueueTerms {
            lease_deadline_ms: self.lease_deadline(self.clock.now_ms()),
            max_queue: if capped { self.config.max_queue } else { usize::MAX / 2 },
            dispatch: self.dispatch_arg(),
        }
    }

    /// The terms of an enqueue (capped, as [`ChatLaneStore::enqueue`]) made now, from this
    /// store's configuration and clock: what a script that runs [`ENQUEUE_FN`] passes to
    /// `lane_admit` (`max_queue`) and `lane_append` (the lease deadline and the dispatch flag).
    #[must_use]
    pub fn enqueue_terms(&self) -> EnqueueTerms {
        self.terms(true)
    }

    /// Reads, as [`ChatLaneStore::enqueue`] does (and logs it as that does), the answer that
    /// [`ENQUEUE_FN`] gave a script for `job` in `lane` under `terms`: `lane_admit`'s answer
    /// when it gave one, else `lane_append`'s.
    ///
    /// # Errors
    /// `QueueError::LaneFull` for a `full` answer (nothing was changed);
    /// `QueueError::Storage` for an answer the enqueue never gives.
    pub fn enqueue_answered(
        &self,
        out: &[String],
        job: &JobId,
        lane: &LaneId,
        terms: &EnqueueTerms,
    ) -> QueueResult<LaneEnqueue> {
        let outcome = self.read_enqueue(out, job, lane, terms.lease_deadline_ms);
        crate::log_enqueue(Some(&self.tenant), job, lane, &outcome);
        outcome
    }

    async fn enqueue_now(&self, job: &JobId, lane: &LaneId, capped: bool) -> QueueResult<LaneEnqueue> {
        let terms = self.terms(capped);
        let out: Vec<String> = self
            .run(
                ENQUEUE
                    .key(self.keys.lanes())
                    .key(self.keys.leases())
                    .key(self.keys.epoch())
                    .key(self.keys.lane_active(lane))
                    .key(self.keys.lane_waiting(lane))
                    .key(self.keys.chat_ready())
                    .key(self.keys.signal(JobKind::Chat))
                    .key(self.keys.job(job))
                    .arg(job.as_str())
                    .arg(lane.as_str())
                    .arg(terms.lease_deadline_ms)
                    .arg(terms.max_queue)
                    .arg(terms.dispatch),
            )
            .await?;
        self.read_enqueue(&out, job, lane, terms.lease_deadline_ms)
    }

    /// The outcome of an enqueue whose script answered `out`; a claim it made runs until
    /// `deadline`.
    fn read_enqueue(
        &self,
        out: &[String],
        job: &JobId,
        lane: &LaneId,
        deadline: u64,
    ) -> QueueResult<LaneEnqueue> {
        let outcome = field(out, 0);
        if outcome == Some("full") {
            return Err(QueueError::LaneFull { lane: lane.clone(), max: self.config.max_queue });
        }
        let position = number("position", field(out, 1))?;
        let size = number("lane size", field(out, 2))?;
        let receipt = |dispatched| ChatEnqueueReceipt {
            job_id: job.clone(),
            lane_id: lane.clone(),
            lane_queue_position: position,
            lane_queue_size: size,
            lane_active: true,
            dispatched,
        };
        match outcome {
            Some("running" | "waiting" | "finished") => {
                Ok(LaneEnqueue { receipt: receipt(false), dispatch: None, added: false })
            }
            Some("queued") => Ok(LaneEnqueue { receipt: receipt(false), dispatch: None, added: true }),
            Some("claimed") => {
                let claim = LaneClaim {
                    job_id: job.clone(),
                    lane_id: lane.clone(),
                    epoch: number("epoch", field(out, 3))?,
                    lease_deadline_ms: deadline,
                };
                Ok(LaneEnqueue { receipt: receipt(true), dispatch: Some(claim), added: true })
            }
            _ => Err(unexpected("enqueue", out)),
        }
    }

    /// Renews `claims` in one pipeline. A pipeline's EVALSHA does not load a missing script, so
    /// the script is loaded first.
    async fn renew_many_now(&self, claims: &[LaneClaim]) -> QueueResult<Vec<QueueResult<u64>>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = self.lease_deadline(self.clock.now_ms());
        let mut conn = self.pool.get().await?;
        RENEW.prepare_invoke().load_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        let mut pipe = redis::pipe();
        for held in claims {
            pipe.invoke_script(
                RENEW
                    .key(self.keys.leases())
                    .key(self.keys.lane_active(&held.lane_id))
                    .arg(held.job_id.as_str())
                    .arg(held.epoch)
                    .arg(held.lane_id.as_str())
                    .arg(deadline),
            );
        }
        let outs: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(|e| redis_error(&e))?;
        Ok(claims
            .iter()
            .zip(outs)
            .map(|(held, out)| match field(&out, 0) {
                Some("ok") => Ok(deadline),
                Some("stale") => Err(Self::stale(held, field(&out, 1))?),
                _ => Err(unexpected("renew", &out)),
            })
            .collect())
    }

    async fn renew_now(&self, held: &LaneClaim) -> QueueResult<u64> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let out: Vec<String> = self
            .run(
                RENEW
                    .key(self.keys.leases())
                    .key(self.keys.lane_active(&held.lane_id))
                    .arg(held.job_id.as_str())
                    .arg(held.epoch)
                    .arg(held.lane_id.as_str())
                    .arg(deadline),
            )
            .await?;
        match field(&out, 0) {
            Some("ok") => Ok(deadline),
            Some("stale") => Err(Self::stale(held, field(&out, 1))?),
            _ => Err(unexpected("renew", &out)),
        }
    }

    async fn finish_now(&self, held: &LaneClaim) -> QueueResult<Option<LaneClaim>> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let lane = &held.lane_id;
        let out: Vec<String> = self
            .run(
                FINISH
                    .key(self.keys.lanes())
                    .key(self.keys.leases())
                    .key(self.keys.epoch())
                    .key(self.keys.lane_active(lane))
                    .key(self.keys.lane_waiting(lane))
                    .key(self.keys.chat_ready())
                    .key(self.keys.signal(JobKind::Chat))
                    .arg(held.job_id.as_str())
                    .arg(held.epoch)
                    .arg(lane.as_str())
                    .arg(deadline)
                    .arg(self.dispatch_arg()),
            )
            .await?;
        match field(&out, 0) {
            Some("idle") => Ok(None),
            Some("next") => Ok(Some(LaneClaim {
                job_id: stored_job(field(&out, 1))?,
                lane_id: lane.clone(),
                epoch: number("epoch", field(&out, 2))?,
                lease_deadline_ms: deadline,
            })),
            Some("stale") => Err(Self::stale(held, field(&out, 1))?),
            _ => Err(unexpected("finish", &out)),
        }
    }

    async fn reclaim_now(&self, held: &LaneClaim) -> QueueResult<LaneClaim> {
        let deadline = self.lease_deadline(self.clock.now_ms());
        let out: Vec<String> = self
            .run(
                RECLAIM
                    .key(self.keys.leases())
                    .key(self.keys.epoch())
                    .key(self.keys.lane_active(&held.lane_id))
                    .key(self.keys.chat_ready())
                    .key(self.keys.signal(JobKind::Chat))
                    .arg(held.job_id.as_str())
                    .arg(held.epoch)
                    .arg(held.lane_id.as_str())
                    .arg(deadline)
                    .arg(self.dispatch_arg()),
            )
            .await?;
        match field(&out, 0) {
            Some("ok") => Ok(LaneClaim {
                job_id: held.job_id.clone(),
                lane_id: held.lane_id.clone(),
                epoch: number("epoch", field(&out, 1))?,
                lease_deadline_ms: deadline,
            }),
            Some("stale") => Err(Self::stale(held, field(&out, 1))?),
            _ => Err(unexpected("reclaim", &out)),
        }
    }

    async fn reap_now(&self) -> QueueResult<Vec<LaneClaim>> {
        // One instant for every batch: a lane re-claimed by an earlier batch has a deadline after
        // it, so it is not found again, and the loop ends.
        let now = self.clock.now_ms();
        let deadline = self.lease_deadline(now);
        let mut reclaimed = Vec::new();
        loop {
            let out: Vec<String> = self
                .run(
                    REAP.key(self.keys.leases())
                        .key(self.keys.epoch())
                        .key(self.keys.chat_ready())
                        .key(self.keys.signal(JobKind::Chat))
                        .arg(now)
                        .arg(deadline)
                        .arg(&self.lane_key_prefix)
                        .arg(REAP_BATCH)
                        .arg(self.dispatch_arg())
                        .arg(&self.job_key_prefix),
                )
                .await?;
            let scanned: usize = number("reaped lanes", field(&out, 0))?;
            let rows = out.get(1..).unwrap_or_default();
            if rows.len() % 3 != 0 {
                return Err(unexpected("reap", &out));
            }
            for row in rows.chunks_exact(3) {
                reclaimed.push(LaneClaim {
                    lane_id: stored_lane(&row[0])?,
                    job_id: stored_job(Some(row[1].as_str()))?,
                    epoch: number("epoch", Some(row[2].as_str()))?,
                    lease_deadline_ms: deadline,
                });
            }
            if scanned < REAP_BATCH {
                return Ok(reclaimed);
            }
        }
    }

    async fn register_recent_now(&self, lane: &LaneId, fingerprint: &str, job: &JobId) -> QueueResult<()> {
        let debounce_ms = self.config.debounce_ms;
        if debounce_ms == 0 {
            // Nothing could ever coalesce onto the entry: store nothing.
            return Ok(());
        }
        let now = self.clock.now_ms();
        let _: i64 = self
            .run(
                REGISTER_RECENT
                    .key(self.keys.lane_recent(lane))
                    .key(&self.recent_lanes_key)
                    .arg(fingerprint)
                    .arg(job.as_str())
                    .arg(now)
                    .arg(debounce_ms)
                    .arg(lane.as_str())
                    .arg(now.saturating_add(debounce_ms)),
            )
            .await?;
        Ok(())
    }

    async fn recent_job_now(&self, lane: &LaneId, fingerprint: &str) -> QueueResult<Option<JobId>> {
        let debounce_ms = self.config.debounce_ms;
        if debounce_ms == 0 {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        let entry: Option<String> =
            self.query(redis::cmd("HGET").arg(self.keys.lane_recent(lane)).arg(fingerprint)).await?;
        let Some(entry) = entry else { return Ok(None) };
        let (job, registered_at) = entry
            .rsplit_once('|')
            .ok_or_else(|| QueueError::storage(format!("redis: bad fingerprint entry {entry:?}")))?;
        let registered_at: u64 = number("fingerprint time", Some(registered_at))?;
        // The window is judged by the injected clock; the hash's PEXPIRE only collects garbage.
        if now.saturating_sub(registered_at) < debounce_ms {
            Ok(Some(stored_job(Some(job))?))
        } else {
            Ok(None)
        }
    }

    async fn snapshot_now(&self, after: Option<&LaneId>, limit: usize) -> QueueResult<Vec<LaneSnapshot>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lower = after.map_or_else(|| "-".to_owned(), |lane| format!("({lane}"));
        let rows: Vec<SnapshotRow> = self
            .run(
                SNAPSHOT
                    .key(self.keys.lanes())
                    .arg(lower)
                    .arg(i64::try_from(limit).unwrap_or(i64::MAX))
                    .arg(&self.lane_key_prefix),
            )
            .await?;
        rows.into_iter()
            .map(|(lane, job, epoch, deadline, waiting)| {
                let lane_id = stored_lane(&lane)?;
                let active = if job.is_empty() {
                    None
                } else {
                    Some(LaneClaim {
                        job_id: stored_job(Some(job.as_str()))?,
                        lane_id: lane_id.clone(),
                        epoch: number("epoch", Some(epoch.as_str()))?,
                        lease_deadline_ms: number("lease deadline", Some(deadline.as_str()))?,
                    })
                };
                let waiting = waiting
                    .iter()
                    .map(|job| stored_job(Some(job.as_str())))
                    .collect::<QueueResult<Vec<_>>>()?;
                Ok(LaneSnapshot { lane_id, active, waiting })
            })
            .collect()
    }

    async fn reset_now(&self) -> QueueResult<()> {
        // Bounded batches over the tenant's own lane sets: never KEYS or SCAN. The chat-ready list
        // belongs to the queue, not to a lane, and is left alone: a claim still in it is fenced by
        // its epoch, which no later claim reuses.
        loop {
            let dropped: usize = self
                .run(
                    RESET
                        .key(self.keys.lanes())
                        .key(self.keys.leases())
                        .key(&self.recent_lanes_key)
                        .arg(&self.lane_key_prefix)
                        .arg(RESET_BATCH),
                )
                .await?;
            if dropped == 0 {
                return Ok(());
            }
        }
    }
}

/// A number a script returned.
fn number<T: std::str::FromStr>(what: &str, value: Option<&str>) -> QueueResult<T> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| QueueError::storage(format!("redis: lane script returned {value:?} as the {what}")))
}

/// A job id read back from Redis. Only validated ids are ever written, so a failure means the
/// data was changed behind the store's back.
fn stored_job(value: Option<&str>) -> QueueResult<JobId> {
    let value = value.ok_or_else(|| QueueError::storage("redis: lane script returned no job id"))?;
    JobId::new(value).map_err(|e| QueueError::storage(format!("redis: stored job id: {e}")))
}

/// Element `index` of a script's reply.
fn field(out: &[String], index: usize) -> Option<&str> {
    out.get(index).map(String::as_str)
}

/// A lane id read back from Redis (see [`stored_job`]).
fn stored_lane(value: &str) -> QueueResult<LaneId> {
    LaneId::new(value).map_err(|e| QueueError::storage(format!("redis: stored lane id: {e}")))
}

fn unexpected(script: &str, out: &[String]) -> QueueError {
    QueueError::storage(format!("redis: the {script} script returned {out:?}"))
}

#[async_trait]
impl ChatLaneStore for RedisLaneStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn lane_load(&self, lane: &LaneId) -> QueueResult<LaneLoad> {
        let (active, queued): (usize, usize) =
            self.run(LANE_LOAD.key(self.keys.lane_active(lane)).key(self.keys.lane_waiting(lane))).await?;
        Ok(LaneLoad { queued, active, total: queued + active })
    }

    async fn find_position(&self, lane: &LaneId, job: &JobId) -> QueueResult<usize> {
        let index: Option<usize> =
            self.query(redis::cmd("LPOS").arg(self.keys.lane_waiting(lane)).arg(job.as_str())).await?;
        Ok(index.map_or(0, |index| index + 1))
    }

    async fn restore(&self, job: &JobId, lane: &LaneId) -> QueueResult<LaneEnqueue> {
        self.enqueue_now(job, lane, false).await
    }

    async fn enqueue(&self, job: &JobId, lane: &LaneId) -> QueueResult<LaneEnqueue> {
        let outcome = self.enqueue_now(job, lane, true).await;
        crate::log_enqueue(Some(&self.tenant), job, lane, &outcome);
        outcome
    }

    async fn renew(&self, claim: &LaneClaim) -> QueueResult<u64> {
        let outcome = self.renew_now(claim).await;
        if let Err(err) = &outcome {
            tracing::warn!(
                tenant = %self.tenant, lane = %claim.lane_id, job = %claim.job_id, error = %err,
                "lease renewal rejected",
            );
        }
        outcome
    }

    async fn renew_many(&self, claims: &[LaneClaim]) -> QueueResult<Vec<QueueResult<u64>>> {
        self.renew_many_now(claims).await
    }

    async fn finish(&self, claim: &LaneClaim) -> QueueResult<Option<LaneClaim>> {
        let outcome = self.finish_now(claim).await;
        match &outcome {
            Ok(next) => tracing::debug!(
                tenant = %self.tenant,
                lane = %claim.lane_id,
                job = %claim.job_id,
                next = next.as_ref().map(|c| c.job_id.as_str()),
                "lane head finished",
            ),
            Err(err) => tracing::warn!(
                tenant = %self.tenant, lane = %claim.lane_id, job = %claim.job_id, error = %err,
                "late finish rejected",
            ),
        }
        outcome
    }

    async fn reclaim(&self, claim: &LaneClaim) -> QueueResult<LaneClaim> {
        let outcome = self.reclaim_now(claim).await;
        if let Err(err) = &outcome {
            tracing::warn!(
                tenant = %self.tenant, lane = %claim.lane_id, job = %claim.job_id, error = %err,
                "reclaim rejected",
            );
        }
        outcome
    }

    async fn reap_expired(&self) -> QueueResult<Vec<LaneClaim>> {
        let reclaimed = self.reap_now().await?;
        for claim in &reclaimed {
            tracing::info!(
                tenant = %self.tenant, lane = %claim.lane_id, job = %claim.job_id, epoch = claim.epoch,
                "expired lease reaped",
            );
        }
        Ok(reclaimed)
    }

    async fn remove_waiting(&self, lane: &LaneId, job: &JobId) -> QueueResult<bool> {
        let removed: i64 = self
            .run(
                REMOVE_WAITING
                    .key(self.keys.lanes())
                    .key(self.keys.leases())
                    .key(self.keys.lane_active(lane))
                    .key(self.keys.lane_waiting(lane))
                    .arg(job.as_str())
                    .arg(lane.as_str()),
            )
            .await?;
        Ok(removed == 1)
    }

    async fn register_recent(&self, lane: &LaneId, fingerprint: &str, job: &JobId) -> QueueResult<()> {
        self.register_recent_now(lane, fingerprint, job).await
    }

    async fn recent_job(&self, lane: &LaneId, fingerprint: &str) -> QueueResult<Option<JobId>> {
        self.recent_job_now(lane, fingerprint).await
    }

    async fn snapshot(&self, after: Option<LaneId>, limit: usize) -> QueueResult<Vec<LaneSnapshot>> {
        self.snapshot_now(after.as_ref(), limit).await
    }

    async fn reset(&self) -> QueueResult<()> {
        self.reset_now().await?;
        tracing::info!(tenant = %self.tenant, "chat lanes reset");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_build_lane_keys_exactly_as_tenant_keys_does() {
        let keys = TenantKeys::new(&TenantId::new("t1").unwrap());
        let prefix = format!("{}lane:", keys.prefix());
        let lane = LaneId::new("student:s1:main").unwrap();
        // The suffixes the Lua scripts append (reap, snapshot, reset).
        assert_eq!(format!("{prefix}{lane}:active"), keys.lane_active(&lane));
        assert_eq!(format!("{prefix}{lane}:q"), keys.lane_waiting(&lane));
        assert_eq!(format!("{prefix}{lane}:recent"), keys.lane_recent(&lane));
    }

    #[test]
    fn a_dispatch_string_parses_back_to_its_claim_with_no_deadline() {
        let claim = parse_dispatch("42|job-1|student:s1:main").unwrap();
        assert_eq!(claim.epoch, 42);
        assert_eq!(claim.job_id.as_str(), "job-1");
        assert_eq!(claim.lane_id.as_str(), "student:s1:main");
        assert_eq!(claim.lease_deadline_ms, 0);
    }

    #[test]
    fn malformed_dispatch_strings_are_refused() {
        for bad in ["", "x|j|l", "1|j", "1||l", "1|j|", "1|j|l{x}", "-1|j|l"] {
            assert_eq!(parse_dispatch(bad), None, "{bad:?}");
        }
    }
}
