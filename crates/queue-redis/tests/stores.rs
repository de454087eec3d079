//! The Redis stores and the distributed limiter against real `redis-server` processes:
//! `queue-core`'s job-store and idempotency-store batteries on one node and on a 3-node Cluster,
//! record retention by TTL, tenant isolation, idempotency keys, limiter caps across processes,
//! lease reclaim and renewal, and errors when Redis is down.
//!
//! Tests running at the same time share one server (and one cluster) through
//! `redis_harness::shared_server` (`shared_cluster`), each under a tenant of its own; the last
//! test holding a server drops it, which kills the process, so no server outlives the test binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lane_store::RedisPool;
use queue_core::conformance::{BuiltJobStore, IdempotencyStoreFactory, JobStoreFactory};
use queue_core::{
    Clock, IdempotencyClaim, IdempotencyStore, JobId, JobKind, JobStatus, JobStore, JobUpdate, LimitCaps,
    LimitClass, Limiter, ManualClock, NewJob, PermitSet, QueueError, RequestId, StatusCounts, TenantId,
};
use queue_redis::{RedisIdempotencyStore, RedisJobStore, RedisLimiter};
use redis_harness::{RedisCluster, RedisServer, shared_cluster, shared_server};
use serde_json::json;

const START_MS: u64 = 1_700_000_000_000;
const RETENTION: Duration = Duration::from_secs(3600);
/// How long a poll for something Redis does on its own (a TTL, a lease) may take before failing.
const POLL_DEADLINE: Duration = Duration::from_secs(10);
/// Between two checks of a poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

static TENANTS: AtomicUsize = AtomicUsize::new(0);

/// A Redis the test runs against, kept alive by the test.
#[derive(Clone)]
enum Target {
    Single(Arc<RedisServer>),
    Cluster(Arc<RedisCluster>),
}

impl Target {
    fn single() -> Self {
        Self::Single(shared_server())
    }

    fn cluster() -> Self {
        Self::Cluster(shared_cluster())
    }

    fn pool(&self) -> RedisPool {
        let url = match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        };
        RedisPool::from_url(&url).unwrap()
    }

    /// Runs one command on the node that serves `key`'s slot.
    fn command_on_key(&self, args: &[&str]) -> String {
        match self {
            Self::Single(server) => server.command(args),
            Self::Cluster(cluster) => cluster
                .nodes()
                .iter()
                .map(|node| node.command(args))
                .find(|reply| !reply.starts_with("(error) MOVED"))
                .expect("some node serves the slot"),
        }
    }
}

/// A tenant no other test uses.
fn unique_tenant(label: &str) -> TenantId {
    let n = TENANTS.fetch_add(1, Ordering::Relaxed);
    TenantId::new(format!("{label}-{}-{n}", std::process::id())).unwrap()
}

fn id(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

fn request(s: &str) -> RequestId {
    RequestId::new(s).unwrap()
}

fn new_job(job: &str, kind: JobKind) -> NewJob {
    NewJob { id: id(job), kind, lane: None, request_id: None, payload: json!({ "job": job }) }
}

/// Polls `check` until it holds, failing the test after [`POLL_DEADLINE`].
async fn poll_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + POLL_DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {POLL_DEADLINE:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A Redis job store under test with the clock it reads and the Redis it lives on.
struct Fixture {
    store: Arc<RedisJobStore>,
    clock: ManualClock,
    target: Target,
}

fn fixture_on(target: Target, retention: Duration) -> Fixture {
    let clock = ManualClock::new(START_MS);
    let tenant = unique_tenant("store");
    let store = RedisJobStore::new(target.pool(), tenant, Arc::new(clock.clone()), retention);
    Fixture { store: Arc::new(store), clock, target }
}

fn single_node_fixture() -> Fixture {
    fixture_on(Target::single(), RETENTION)
}

/// Redis stores on one target, each build under a fresh tenant.
struct RedisStores {
    target: Target,
}

#[async_trait]
impl JobStoreFactory for RedisStores {
    async fn build(&self, clock: ManualClock) -> BuiltJobStore {
        let tenant = unique_tenant("store");
        let store = RedisJobStore::new(self.target.pool(), tenant.clone(), Arc::new(clock), RETENTION);
        BuiltJobStore { store: Arc::new(store), tenant }
    }
}

#[async_trait]
impl IdempotencyStoreFactory for RedisStores {
    async fn build(&self, _clock: ManualClock) -> Arc<dyn IdempotencyStore> {
        // Redis expires keys by its own clock; the retention outlives every scenario.
        Arc::new(RedisIdempotencyStore::new(self.target.pool(), &unique_tenant("idem"), RETENTION))
    }
}

/// What only a Redis job store does, on top of the battery: purge in batches, expiry by TTL.
mod redis_only {
    use super::*;

    pub async fn purge_finished_works_through_more_than_one_batch(f: &Fixture) {
        // The purge script takes 500 finished entries at a time.
        for i in 0..620 {
            let job = format!("p{i}");
            f.store.create(new_job(&job, JobKind::ProfileUpdate)).await.unwrap();
            let cancel = JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() };
            f.store.transition(&id(&job), cancel).await.unwrap();
        }
        f.clock.advance(1);
        assert_eq!(f.store.purge_finished(f.clock.now_ms()).await.unwrap(), 620);
        assert_eq!(f.store.counts(JobKind::ProfileUpdate).await.unwrap(), StatusCounts::default());
    }

    pub async fn finished_records_expire_after_the_retention_period(f: &Fixture) {
        f.store.create(new_job("finished", JobKind::Upload)).await.unwrap();
        f.store.create(new_job("waiting", JobKind::Upload)).await.unwrap();
        f.store.transition(&id("finished"), JobUpdate::start(1)).await.unwrap();
        f.store.transition(&id("finished"), JobUpdate::done(1, json!(1))).await.unwrap();

        let keys = f.store.keys();
        let pttl: i64 = f.target.command_on_key(&["PTTL", &keys.job(&id("finished"))]).parse().unwrap();
        let retention_ms = i64::try_from(RETENTION.as_millis()).unwrap();
        assert!(pttl > 0 && pttl <= retention_ms, "PTTL {pttl} of a finished record");
        let pttl = f.target.command_on_key(&["PTTL", &keys.job(&id("waiting"))]);
        assert_eq!(pttl, "-1", "a pending record never expires");
    }
}

/// `queue-core`'s job-store battery and the Redis-only scenarios on one target.
macro_rules! job_store_tests_on {
    ($module:ident, $target:expr; $($redis_only:ident),* $(,)?) => {
        mod $module {
            queue_core::job_store_conformance_tests!(crate::RedisStores { target: $target });

            $(
                #[tokio::test]
                async fn $redis_only() {
                    let fixture = crate::fixture_on($target, crate::RETENTION);
                    crate::redis_only::$redis_only(&fixture).await;
                }
            )*
        }
    };
}

macro_rules! on_single_node_and_cluster {
    ($($redis_only:ident),* $(,)?) => {
        job_store_tests_on!(single_node_job_store, crate::Target::single(); $($redis_only),*);
        job_store_tests_on!(cluster_job_store, crate::Target::cluster(); $($redis_only),*);
    };
}

on_single_node_and_cluster!(
    purge_finished_works_through_more_than_one_batch,
    finished_records_expire_after_the_retention_period,
);

mod redis_job_store {
    use super::*;

    #[tokio::test]
    async fn a_record_expired_by_ttl_leaves_its_counter_until_purge_settles_it() {
        let f = fixture_on(Target::single(), Duration::from_millis(200));
        f.store.create(new_job("a", JobKind::Exam)).await.unwrap();
        f.store.transition(&id("a"), JobUpdate::start(1)).await.unwrap();
        f.store.transition(&id("a"), JobUpdate::done(1, json!(1))).await.unwrap();
        poll_until("the finished record expires", || async {
            f.store.get(&id("a")).await.unwrap().is_none()
        })
        .await;
        assert_eq!(f.store.counts(JobKind::Exam).await.unwrap().done, 1);

        f.clock.advance(1);
        assert_eq!(f.store.purge_finished(f.clock.now_ms()).await.unwrap(), 0, "nothing left to delete");
        assert_eq!(f.store.counts(JobKind::Exam).await.unwrap(), StatusCounts::default());
        assert!(f.store.list(None, JobStatus::Done, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_id_reused_after_its_record_expired_is_a_new_record_that_purge_leaves_alone() {
        let f = fixture_on(Target::single(), Duration::from_millis(200));
        f.store.create(new_job("a", JobKind::Exam)).await.unwrap();
        f.store
            .transition(&id("a"), JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() })
            .await
            .unwrap();
        poll_until("the finished record expires", || async {
            f.store.get(&id("a")).await.unwrap().is_none()
        })
        .await;
        f.store.create(new_job("a", JobKind::Exam)).await.unwrap();
        // The expired record is still counted until purge settles it, like any expired record.
        assert_eq!(
            f.store.counts(JobKind::Exam).await.unwrap(),
            StatusCounts { queued: 1, cancelled: 1, ..StatusCounts::default() }
        );

        f.clock.advance(1);
        assert_eq!(f.store.purge_finished(f.clock.now_ms()).await.unwrap(), 0, "the new record is pending");
        assert_eq!(f.store.get(&id("a")).await.unwrap().map(|r| r.status), Some(JobStatus::Queued));
        assert_eq!(
            f.store.counts(JobKind::Exam).await.unwrap(),
            StatusCounts { queued: 1, ..StatusCounts::default() }
        );
    }

    #[tokio::test]
    async fn a_zero_retention_keeps_finished_records_until_purge() {
        let f = fixture_on(Target::single(), Duration::ZERO);
        f.store.create(new_job("a", JobKind::Upload)).await.unwrap();
        f.store
            .transition(&id("a"), JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() })
            .await
            .unwrap();
        assert_eq!(f.target.command_on_key(&["PTTL", &f.store.keys().job(&id("a"))]), "-1");
        assert_eq!(f.store.purge_finished(START_MS + 1).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn parse_record_reads_back_what_the_store_wrote() {
        let f = single_node_fixture();
        let created = f.store.create(new_job("a", JobKind::Chat)).await.unwrap();
        let mut fields = std::collections::HashMap::new();
        let flat = f.target.command_on_key(&["HGETALL", &f.store.keys().job(&id("a"))]);
        let lines: Vec<&str> = flat.lines().collect();
        for pair in lines.chunks(2) {
            fields.insert(pair[0].to_owned(), pair[1].to_owned());
        }
        assert_eq!(RedisJobStore::parse_record(fields.clone()).unwrap(), created);
        fields.remove("fixed");
        let err = RedisJobStore::parse_record(fields).unwrap_err();
        assert!(matches!(&err, QueueError::Storage(m) if m.contains("the field seq is missing")), "{err}");
    }

    /// A hash whose values are all at most `hash-max-listpack-value` (64 bytes by default) is a
    /// compact listpack, about a third of a hashtable's memory: packing what a job never changes
    /// into one field must not push a record that fitted before over it. A payload of 64 bytes
    /// with a lane and a request id of everyday lengths keeps its record a listpack.
    #[tokio::test]
    async fn a_record_whose_values_fit_the_listpack_limit_alone_stays_a_listpack() {
        let f = single_node_fixture();
        let text = "x".repeat(64 - r#"{"m":""}"#.len());
        let job = NewJob {
            lane: Some(queue_core::LaneId::new("student:s42:main").unwrap()),
            request_id: Some(request("req-0123456789abcdef")),
            payload: json!({ "m": text }),
            ..new_job("c1", JobKind::Chat)
        };
        assert_eq!(job.payload.to_string().len(), 64);
        f.store.create(job).await.unwrap();
        let key = f.store.keys().job(&id("c1"));
        assert_eq!(f.target.command_on_key(&["OBJECT", "ENCODING", &key]), "listpack");
    }
}

mod tenant_isolation {
    use super::*;

    #[tokio::test]
    async fn another_tenant_cannot_read_change_or_delete_a_tenants_job() {
        let target = Target::single();
        let clock = ManualClock::new(START_MS);
        let a = unique_tenant("iso");
        // b's name extends a's, so a prefix match without the hash tag's braces would mix them.
        let b = TenantId::new(format!("{a}-b")).unwrap();
        let store_a = RedisJobStore::new(target.pool(), a.clone(), Arc::new(clock.clone()), RETENTION);
        let store_b = RedisJobStore::new(target.pool(), b.clone(), Arc::new(clock.clone()), RETENTION);
        let idem_a = RedisIdempotencyStore::new(target.pool(), &a, RETENTION);
        let idem_b = RedisIdempotencyStore::new(target.pool(), &b, RETENTION);

        let job = store_a.create(new_job("shared-id", JobKind::Chat)).await.unwrap();
        idem_a.claim(&request("r1"), &id("shared-id")).await.unwrap();

        assert_eq!(store_b.get(&id("shared-id")).await.unwrap(), None);
        let err = store_b.transition(&id("shared-id"), JobUpdate::start(1)).await.unwrap_err();
        assert_eq!(err, QueueError::NotFound { job: id("shared-id") });
        assert!(!store_b.delete(&id("shared-id")).await.unwrap());
        assert!(store_b.scan_pending(JobKind::Chat).await.unwrap().is_empty());
        assert_eq!(store_b.counts(JobKind::Chat).await.unwrap(), StatusCounts::default());
        assert_eq!(idem_b.claim(&request("r1"), &id("other")).await.unwrap(), IdempotencyClaim::Claimed);
        assert_eq!(store_a.get(&id("shared-id")).await.unwrap(), Some(job));

        // b's own job of the same id lives beside a's.
        store_b.create(new_job("shared-id", JobKind::Chat)).await.unwrap();
        assert_eq!(store_a.counts(JobKind::Chat).await.unwrap().queued, 1);

        let Target::Single(server) = &target else { unreachable!() };
        let keys_a = server.command(&["KEYS", &format!("lw:{{{a}}}:*")]);
        let keys_b = server.command(&["KEYS", &format!("lw:{{{b}}}:*")]);
        assert!(!keys_a.is_empty() && !keys_b.is_empty());
        let prefix_a = format!("lw:{{{a}}}:");
        let prefix_b = format!("lw:{{{b}}}:");
        assert!(keys_a.lines().all(|k| k.starts_with(&prefix_a) && !k.starts_with(&prefix_b)), "{keys_a}");
        assert!(keys_b.lines().all(|k| k.starts_with(&prefix_b) && !k.starts_with(&prefix_a)), "{keys_b}");
        let all = server.command(&["KEYS", "*"]);
        let of_a_or_b: Vec<&str> = all.lines().filter(|k| k.contains(a.as_str())).collect();
        assert_eq!(of_a_or_b.len(), keys_a.lines().count() + keys_b.lines().count(), "{all}");
    }
}

mod idempotency {
    use super::*;

    /// A store under a fresh tenant, with the target that must outlive it.
    fn store(target: Target, ttl: Duration) -> (RedisIdempotencyStore, TenantId, Target) {
        let tenant = unique_tenant("idem");
        (RedisIdempotencyStore::new(target.pool(), &tenant, ttl), tenant, target)
    }

    mod single_node_idempotency_store {
        queue_core::idempotency_store_conformance_tests!(crate::RedisStores {
            target: crate::Target::single()
        });
    }

    mod cluster_idempotency_store {
        queue_core::idempotency_store_conformance_tests!(crate::RedisStores {
            target: crate::Target::cluster()
        });
    }

    #[tokio::test]
    async fn an_expired_key_is_taken_over_by_the_next_claim() {
        let ttl = Duration::from_millis(300);
        let (k, tenant, target) = store(Target::single(), ttl);
        k.claim(&request("r1"), &id("j1")).await.unwrap();
        let key = lane_store::TenantKeys::new(&tenant).idempotency(&request("r1"));
        let pttl: i64 = target.command_on_key(&["PTTL", &key]).parse().unwrap();
        assert!(pttl > 0 && pttl <= 300, "PTTL {pttl} of a key claimed for 300 ms");

        poll_until("the key expires and the next claim takes it", || async {
            match k.claim(&request("r1"), &id("j2")).await.unwrap() {
                IdempotencyClaim::Claimed => true,
                IdempotencyClaim::Existing(job) => {
                    assert_eq!(job, id("j1"));
                    false
                }
            }
        })
        .await;
        assert_eq!(k.claim(&request("r1"), &id("j3")).await.unwrap(), IdempotencyClaim::Existing(id("j2")));
    }

    #[tokio::test]
    async fn a_zero_ttl_remembers_nothing() {
        let (k, _, _target) = store(Target::single(), Duration::ZERO);
        assert_eq!(k.claim(&request("r1"), &id("j1")).await.unwrap(), IdempotencyClaim::Claimed);
        assert_eq!(k.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Claimed);
        k.release(&request("r1"), &id("j2")).await.unwrap();
    }
}

mod redis_limiter {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);
    const SHORT_LEASE: Duration = Duration::from_millis(300);
    /// Renewed every third of it: 330 ms of slack for a busy machine.
    const RENEWED_LEASE: Duration = Duration::from_millis(500);

    fn caps(llm: usize) -> LimitCaps {
        LimitCaps { ocr: 2, llm, llm_student: 2, llm_teacher: 2 }
    }

    /// `n` limiters of one tenant, as `n` processes would have, with the target that must outlive
    /// them.
    fn limiters(
        target: Target,
        n: usize,
        caps: LimitCaps,
        lease: Duration,
    ) -> (Vec<Arc<RedisLimiter>>, Target) {
        let tenant = unique_tenant("limit");
        ((0..n).map(|_| Arc::new(RedisLimiter::new(target.pool(), &tenant, caps, lease))).collect(), target)
    }

    async fn in_use(limiter: &RedisLimiter, class: LimitClass) -> usize {
        let usage = limiter.usage().await.unwrap();
        usage.iter().find(|u| u.class == class).unwrap().in_use
    }

    /// Tries to acquire for 100 ms: `None` when every try found a class full. The future is
    /// dropped either way.
    async fn try_acquire(limiter: &RedisLimiter, classes: &[LimitClass]) -> Option<PermitSet> {
        tokio::time::timeout(Duration::from_millis(100), limiter.acquire(classes))
            .await
            .ok()
            .map(Result::unwrap)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_holders_than_the_cap_across_three_processes() {
        let (limiters, _target) = limiters(Target::single(), 3, caps(3), LEASE);
        let holders = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let limiter = Arc::clone(&limiters[i % limiters.len()]);
                let (holders, peak) = (Arc::clone(&holders), Arc::clone(&peak));
                tokio::spawn(async move {
                    let permits = limiter.acquire(&[LimitClass::Llm]).await.unwrap();
                    let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..20 {
                        tokio::task::yield_now().await;
                    }
                    holders.fetch_sub(1, Ordering::SeqCst);
                    limiter.release(permits).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=3).contains(&peak), "peak holders {peak} with a cap of 3");
        assert!(limiters.iter().map(|l| l.waits()).sum::<u64>() > 0, "48 acquires at a cap of 3 must wait");
        assert_eq!(in_use(&limiters[0], LimitClass::Llm).await, 0);
    }

    #[tokio::test]
    async fn classes_are_taken_all_or_nothing() {
        let caps = LimitCaps { ocr: 1, llm: 2, llm_student: 1, llm_teacher: 1 };
        let (limiters, _target) = limiters(Target::single(), 2, caps, LEASE);
        let (first, second) = (&limiters[0], &limiters[1]);
        let student = first.acquire(&[LimitClass::LlmStudent, LimitClass::Llm]).await.unwrap();
        assert_eq!(student.classes, [LimitClass::Llm, LimitClass::LlmStudent]);

        assert!(try_acquire(second, &[LimitClass::Llm, LimitClass::LlmStudent]).await.is_none());
        assert_eq!(in_use(second, LimitClass::Llm).await, 1, "the waiting student took no llm permit");
        assert!(second.waits() >= 1);

        let teacher = try_acquire(second, &[LimitClass::LlmTeacher, LimitClass::Llm]).await;
        let teacher = teacher.expect("a teacher acquire finds llm and llm_teacher free");
        let usage = second.usage().await.unwrap();
        assert_eq!(usage.iter().map(|u| u.class).collect::<Vec<_>>(), LimitClass::ALL);
        assert_eq!(
            usage.iter().map(|u| (u.in_use, u.capacity)).collect::<Vec<_>>(),
            [(0, 1), (2, 2), (1, 1), (1, 1)]
        );

        first.release(student).await.unwrap();
        second.release(teacher).await.unwrap();
        assert!(second.usage().await.unwrap().iter().all(|u| u.in_use == 0));
    }

    #[tokio::test]
    async fn a_dropped_acquire_holds_nothing() {
        let (limiters, _target) = limiters(Target::single(), 1, caps(1), LEASE);
        let limiter = &limiters[0];
        let held = limiter.acquire(&[LimitClass::Llm]).await.unwrap();
        for _ in 0..20 {
            // Dropped at every point of its life, including while a try is in flight.
            let dropped = tokio::time::timeout(
                Duration::from_millis(3),
                limiter.acquire(&[LimitClass::Ocr, LimitClass::Llm]),
            );
            assert!(dropped.await.is_err());
        }
        limiter.release(held).await.unwrap();
        poll_until("every dropped try is undone", || async {
            limiter.usage().await.unwrap().iter().all(|u| u.in_use == 0)
        })
        .await;
    }

    #[tokio::test]
    async fn releasing_a_token_twice_never_frees_someone_elses_permits() {
        let (limiters, _target) = limiters(Target::single(), 2, caps(1), LEASE);
        let first = limiters[0].acquire(&[LimitClass::Llm]).await.unwrap();
        limiters[0].release(first.clone()).await.unwrap();
        let second = limiters[1].acquire(&[LimitClass::Llm]).await.unwrap();
        assert_ne!(first.token, second.token);
        limiters[0].release(first).await.unwrap();
        assert_eq!(in_use(&limiters[0], LimitClass::Llm).await, 1, "the second holder keeps its permit");
        let unknown = PermitSet { classes: vec![LimitClass::Llm], token: "never-issued".into() };
        limiters[0].release(unknown).await.unwrap();
        assert_eq!(in_use(&limiters[0], LimitClass::Llm).await, 1);
        limiters[1].release(second).await.unwrap();
        assert_eq!(in_use(&limiters[0], LimitClass::Llm).await, 0);
    }

    #[tokio::test]
    async fn a_killed_processs_permit_is_reclaimed_after_its_lease() {
        let (mut limiters, _target) = limiters(Target::single(), 2, caps(1), SHORT_LEASE);
        let survivor = limiters.pop().unwrap();
        let doomed = limiters.pop().unwrap();
        let _leaked = doomed.acquire(&[LimitClass::Llm]).await.unwrap();
        // The process dies: no release, and its renewals stop.
        drop(doomed);
        assert!(try_acquire(&survivor, &[LimitClass::Llm]).await.is_none(), "the lease still runs");

        let started = Instant::now();
        let permits = tokio::time::timeout(POLL_DEADLINE, survivor.acquire(&[LimitClass::Llm]))
            .await
            .expect("the leaked permit is reclaimed within the deadline")
            .unwrap();
        assert!(started.elapsed() < POLL_DEADLINE);
        survivor.release(permits).await.unwrap();
    }

    #[tokio::test]
    async fn renewal_keeps_a_long_held_permit_alive_past_several_leases() {
        let (limiters, _target) = limiters(Target::single(), 2, caps(1), RENEWED_LEASE);
        let (holder, rival) = (&limiters[0], &limiters[1]);
        let permits = holder.acquire(&[LimitClass::Llm]).await.unwrap();
        let held_since = Instant::now();
        // Each check waits 100 ms for the permit; together they span four leases.
        while held_since.elapsed() < RENEWED_LEASE * 4 {
            assert!(
                try_acquire(rival, &[LimitClass::Llm]).await.is_none(),
                "the permit was lost after {:?} although its holder is alive",
                held_since.elapsed()
            );
            assert_eq!(in_use(rival, LimitClass::Llm).await, 1);
        }
        holder.release(permits).await.unwrap();
        assert!(try_acquire(rival, &[LimitClass::Llm]).await.is_some());
    }

    #[tokio::test]
    async fn caps_hold_across_processes_on_the_cluster_too() {
        let (limiters, _target) = limiters(Target::cluster(), 2, caps(1), LEASE);
        let student = limiters[0].acquire(&[LimitClass::Llm, LimitClass::LlmStudent]).await.unwrap();
        assert!(try_acquire(&limiters[1], &[LimitClass::Llm]).await.is_none());
        limiters[0].release(student).await.unwrap();
        let next = try_acquire(&limiters[1], &[LimitClass::Llm]).await.expect("free again");
        assert_eq!(in_use(&limiters[0], LimitClass::Llm).await, 1);
        limiters[1].release(next).await.unwrap();
    }
}

mod redis_down {
    use super::*;

    /// Runs `op`, which must fail as unavailable within a few seconds.
    async fn fails_as_unavailable<T: std::fmt::Debug>(
        what: &str,
        op: impl Future<Output = queue_core::QueueResult<T>>,
    ) {
        let outcome = tokio::time::timeout(Duration::from_secs(10), op).await;
        let outcome = outcome.unwrap_or_else(|_| panic!("{what} hung with Redis down"));
        assert!(matches!(outcome, Err(QueueError::Unavailable(_))), "{what}: {outcome:?}");
    }

    #[tokio::test]
    async fn acquire_claim_and_create_fail_as_unavailable_when_redis_is_down() {
        let mut server = RedisServer::start();
        let pool = RedisPool::from_url(&server.url()).unwrap();
        let tenant = unique_tenant("down");
        let clock = Arc::new(ManualClock::new(START_MS));
        let store = RedisJobStore::new(pool.clone(), tenant.clone(), clock, RETENTION);
        let idem = RedisIdempotencyStore::new(pool.clone(), &tenant, RETENTION);
        let limiter = RedisLimiter::new(pool, &tenant, caps_of_one(), Duration::from_secs(30));
        // Every path has a live connection in the pool before the server dies.
        store.create(new_job("before", JobKind::Upload)).await.unwrap();
        idem.claim(&request("before"), &id("before")).await.unwrap();
        let held = limiter.acquire(&[LimitClass::Ocr]).await.unwrap();

        server.kill();
        fails_as_unavailable("create", store.create(new_job("after", JobKind::Upload))).await;
        fails_as_unavailable("claim", idem.claim(&request("after"), &id("after"))).await;
        fails_as_unavailable("acquire", limiter.acquire(&[LimitClass::Llm])).await;
        fails_as_unavailable("release", limiter.release(held)).await;
        fails_as_unavailable("get", store.get(&id("before"))).await;
    }

    fn caps_of_one() -> LimitCaps {
        LimitCaps { ocr: 1, llm: 1, llm_student: 1, llm_teacher: 1 }
    }
}
