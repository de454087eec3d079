//! The stores and the limiter of the in-process backend: `queue-core`'s job-store and
//! idempotency-store batteries on the memory and SQLite stores, SQLite's durability and group
//! commit, key expiry on both idempotency stores, and the local limiter.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use queue_core::conformance::{BuiltJobStore, IdempotencyStoreFactory, JobStoreFactory};
use queue_core::{
    IdempotencyClaim, IdempotencyStore, JobId, JobKind, JobStore, JobUpdate, LimitCaps, LimitClass, Limiter,
    ManualClock, NewJob, QueueError, RequestId, TenantId,
};
use queue_inline::{LocalLimiter, MemoryIdempotencyStore, MemoryJobStore, SqliteJobStore, SqliteStoreConfig};
use serde_json::json;
use tempfile::TempDir;

const START_MS: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 1_000;

fn tenant() -> TenantId {
    TenantId::new("t1").unwrap()
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

fn open_sqlite(dir: &Path, clock: &ManualClock) -> SqliteJobStore {
    let config = SqliteStoreConfig { idempotency_ttl_ms: TTL_MS, ..SqliteStoreConfig::default() };
    SqliteJobStore::open(&dir.join("jobs.sqlite"), tenant(), Arc::new(clock.clone()), config).unwrap()
}

/// Memory stores of tenant `t1`; each build is a new, empty one.
struct MemoryStores;

#[async_trait]
impl JobStoreFactory for MemoryStores {
    async fn build(&self, clock: ManualClock) -> BuiltJobStore {
        BuiltJobStore { store: Arc::new(MemoryJobStore::new(tenant(), Arc::new(clock))), tenant: tenant() }
    }
}

#[async_trait]
impl IdempotencyStoreFactory for MemoryStores {
    async fn build(&self, clock: ManualClock) -> Arc<dyn IdempotencyStore> {
        Arc::new(MemoryIdempotencyStore::new(Arc::new(clock), TTL_MS))
    }
}

/// SQLite stores of tenant `t1`; each build is a new file in a directory that lives as long as
/// the factory.
struct SqliteStores {
    dir: TempDir,
    files: AtomicUsize,
}

impl SqliteStores {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), files: AtomicUsize::new(0) }
    }

    fn open_fresh(&self, clock: &ManualClock) -> Arc<SqliteJobStore> {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        Arc::new(open_sqlite(&self.dir.path().join(format!("store-{n}")), clock))
    }
}

#[async_trait]
impl JobStoreFactory for SqliteStores {
    async fn build(&self, clock: ManualClock) -> BuiltJobStore {
        BuiltJobStore { store: self.open_fresh(&clock), tenant: tenant() }
    }
}

#[async_trait]
impl IdempotencyStoreFactory for SqliteStores {
    async fn build(&self, clock: ManualClock) -> Arc<dyn IdempotencyStore> {
        self.open_fresh(&clock)
    }
}

mod memory_job_store {
    queue_core::job_store_conformance_tests!(crate::MemoryStores);
}

mod sqlite_job_store {
    queue_core::job_store_conformance_tests!(crate::SqliteStores::new());
}

mod sqlite_job_store_only {
    use super::*;

    #[tokio::test]
    async fn reopening_the_file_keeps_records_sequence_and_pending_scan() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        let (a, b, last_seq) = {
            let store = open_sqlite(dir.path(), &clock);
            let a = store.create(new_job("a", JobKind::Upload)).await.unwrap();
            store.create(new_job("b", JobKind::Upload)).await.unwrap();
            let b = store.transition(&id("b"), JobUpdate::start(4)).await.unwrap();
            let c = store.create(new_job("c", JobKind::Upload)).await.unwrap();
            // The newest job is gone before the restart: its seq must still never be reused.
            assert!(store.delete(&id("c")).await.unwrap());
            (a, b, c.seq)
        };

        let store = open_sqlite(dir.path(), &clock);
        assert_eq!(store.get(&id("a")).await.unwrap(), Some(a.clone()));
        assert_eq!(store.scan_pending(JobKind::Upload).await.unwrap(), [a, b]);
        let d = store.create(new_job("d", JobKind::Upload)).await.unwrap();
        assert!(d.seq > last_seq, "seq {} after a restart must exceed {last_seq}", d.seq);
        assert_eq!(ids_of(&store.scan_pending(JobKind::Upload).await.unwrap()), ["a", "b", "d"]);
    }

    fn ids_of(records: &[queue_core::JobRecord]) -> Vec<String> {
        records.iter().map(|r| r.id.to_string()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_are_all_durable_distinct_and_share_commits() {
        const TASKS: usize = 50;
        const PER_TASK: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        let store = Arc::new(open_sqlite(dir.path(), &clock));
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    seqs.push(
                        store.create(new_job(&format!("t{t}-{i}"), JobKind::Upload)).await.unwrap().seq,
                    );
                }
                seqs
            }));
        }
        let mut seqs = HashSet::new();
        for task in tasks {
            for seq in task.await.unwrap() {
                assert!(seqs.insert(seq), "seq {seq} handed out twice");
            }
        }
        assert_eq!(seqs.len(), TASKS * PER_TASK);
        let (batches, ops) = (store.batches_committed(), store.ops_committed());
        assert_eq!(ops, (TASKS * PER_TASK) as u64);
        assert!(batches < ops, "group commit should share transactions: {batches} batches for {ops} ops");

        drop(Arc::into_inner(store).expect("every task is done with the store"));
        let store = open_sqlite(dir.path(), &clock);
        let pending = store.scan_pending(JobKind::Upload).await.unwrap();
        assert_eq!(pending.len(), TASKS * PER_TASK);
        assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.counts(JobKind::Upload).await.unwrap().queued, (TASKS * PER_TASK) as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn refused_creates_among_concurrent_ones_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        let store = Arc::new(open_sqlite(dir.path(), &clock));
        for i in (0..200).step_by(10) {
            store.create(new_job(&format!("j{i}"), JobKind::Exam)).await.unwrap();
        }
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { (i, store.create(new_job(&format!("j{i}"), JobKind::Exam)).await) })
            })
            .collect();
        for task in tasks {
            let (i, result) = task.await.unwrap();
            if i % 10 == 0 {
                assert_eq!(result.unwrap_err(), QueueError::AlreadyExists { job: id(&format!("j{i}")) });
            } else {
                let record = result.unwrap();
                assert_eq!(store.get(&record.id).await.unwrap(), Some(record));
            }
        }
        assert_eq!(store.counts(JobKind::Exam).await.unwrap().queued, 200);
        assert_eq!(store.ops_committed(), 200, "20 up front and 180 concurrent creates took effect");
    }

    #[tokio::test]
    async fn create_many_commits_a_whole_batch_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        let store = open_sqlite(dir.path(), &clock);
        store.create(new_job("j7", JobKind::Upload)).await.unwrap();
        let (batches, ops) = (store.batches_committed(), store.ops_committed());
        let batch: Vec<NewJob> = (0..300).map(|i| new_job(&format!("j{i}"), JobKind::Upload)).collect();

        let results = store.create_many(batch).await.unwrap();

        assert_eq!(store.batches_committed() - batches, 1, "one transaction for the whole batch");
        assert_eq!(store.ops_committed() - ops, 299, "every job but the taken one was created");
        assert_eq!(results[7], Err(QueueError::AlreadyExists { job: id("j7") }));
        let seqs: Vec<u64> = results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "one transaction hands out consecutive seqs");

        // Durable: every created job is in the file after a reopen.
        drop(store);
        let store = open_sqlite(dir.path(), &clock);
        assert_eq!(store.counts(JobKind::Upload).await.unwrap().queued, 300);
        let next = store.create(new_job("after", JobKind::Upload)).await.unwrap();
        assert_eq!(next.seq, seqs[seqs.len() - 1] + 1);
    }

    #[tokio::test]
    async fn open_creates_missing_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants").join("t1").join("jobs.sqlite");
        let clock = ManualClock::new(START_MS);
        let store =
            SqliteJobStore::open(&path, tenant(), Arc::new(clock), SqliteStoreConfig::default()).unwrap();
        store.create(new_job("a", JobKind::Upload)).await.unwrap();
        assert_eq!(store.path(), path);
        assert!(path.is_file());
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_a_storage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"a file").unwrap();
        let path = blocker.join("jobs.sqlite");
        let clock = Arc::new(ManualClock::new(START_MS));
        let err =
            SqliteJobStore::open(&path, tenant(), clock.clone(), SqliteStoreConfig::default()).unwrap_err();
        assert!(
            matches!(&err, QueueError::Storage(msg) if msg.contains(&path.display().to_string())),
            "{err}"
        );

        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
        let err = SqliteJobStore::open(&garbage, tenant(), clock, SqliteStoreConfig::default()).unwrap_err();
        assert!(
            matches!(&err, QueueError::Storage(msg) if msg.contains(&garbage.display().to_string())),
            "{err}"
        );
    }

    #[test]
    fn a_file_of_another_tenant_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        let clock = Arc::new(ManualClock::new(START_MS));
        drop(SqliteJobStore::open(&path, tenant(), clock.clone(), SqliteStoreConfig::default()).unwrap());
        let other = TenantId::new("t2").unwrap();
        let err = SqliteJobStore::open(&path, other, clock, SqliteStoreConfig::default()).unwrap_err();
        assert!(matches!(&err, QueueError::Config(msg) if msg.contains("\"t1\"")), "{err}");
    }
}

/// Set in the child process of [`a_created_job_survives_the_process_being_killed`] to the
/// directory of its store.
const KILL_CHILD_DIR: &str = "LANEWAY_STORES_KILL_CHILD_DIR";
const CREATED_MARK: &str = "@@created@@ ";

/// Runs twice: as the test, it starts this test binary again as a child that creates jobs in a
/// loop and reports each one once `create` has returned, kills it with SIGKILL mid-stream, and
/// checks every reported job is in the file.
#[test]
fn a_created_job_survives_the_process_being_killed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    if let Ok(dir) = std::env::var(KILL_CHILD_DIR) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open_sqlite(Path::new(&dir), &ManualClock::new(START_MS));
            // Bounded so that an orphaned child ends on its own.
            for i in 0..1_000_000 {
                let job = format!("k{i}");
                store.create(new_job(&job, JobKind::Chat)).await.unwrap();
                println!("{CREATED_MARK}{job}");
            }
        });
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_created_job_survives_the_process_being_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reported = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some((_, job)) = line.rsplit_once(CREATED_MARK) {
            reported.push(job.to_owned());
            if reported.len() == 200 {
                break;
            }
        }
    }
    assert_eq!(reported.len(), 200, "the child stopped before creating 200 jobs");
    child.kill().unwrap(); // SIGKILL: no destructor, no final checkpoint.
    child.wait().unwrap();
    // Jobs reported between the 200th line and the kill were created too.
    for line in lines {
        if let Some((_, job)) = line.unwrap().rsplit_once(CREATED_MARK) {
            reported.push(job.to_owned());
        }
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open_sqlite(dir.path(), &ManualClock::new(START_MS));
        for job in &reported {
            assert!(
                store.get(&id(job)).await.unwrap().is_some(),
                "job {job} was reported created but is gone"
            );
        }
        let pending = store.scan_pending(JobKind::Chat).await.unwrap();
        assert!(pending.len() >= reported.len());
    });
}

/// Idempotency keys on both stores that keep them: the battery, expiry by the store's clock, and
/// what only one of them promises.
mod idempotency {
    use super::*;

    async fn an_expired_key_is_taken_over_by_the_next_claim(stores: &dyn IdempotencyStoreFactory) {
        let clock = ManualClock::new(START_MS);
        let k = stores.build(clock.clone()).await;
        k.claim(&request("r1"), &id("j1")).await.unwrap();
        clock.advance(TTL_MS - 1);
        assert_eq!(k.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Existing(id("j1")));
        clock.advance(1);
        assert_eq!(k.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Claimed);
        assert_eq!(k.claim(&request("r1"), &id("j3")).await.unwrap(), IdempotencyClaim::Existing(id("j2")));
    }

    mod memory_idempotency_store {
        queue_core::idempotency_store_conformance_tests!(crate::MemoryStores);

        #[tokio::test]
        async fn an_expired_key_is_taken_over_by_the_next_claim() {
            super::an_expired_key_is_taken_over_by_the_next_claim(&crate::MemoryStores).await;
        }
    }

    mod sqlite_idempotency_store {
        queue_core::idempotency_store_conformance_tests!(crate::SqliteStores::new());

        #[tokio::test]
        async fn an_expired_key_is_taken_over_by_the_next_claim() {
            super::an_expired_key_is_taken_over_by_the_next_claim(&crate::SqliteStores::new()).await;
        }
    }

    #[tokio::test]
    async fn expired_keys_are_pruned_so_memory_stays_bounded() {
        let clock = ManualClock::new(START_MS);
        let store = MemoryIdempotencyStore::new(Arc::new(clock.clone()), TTL_MS);
        for i in 0..100 {
            store.claim(&request(&format!("r{i}")), &id(&format!("j{i}"))).await.unwrap();
        }
        assert_eq!(store.len(), 100);
        clock.advance(TTL_MS);
        store.claim(&request("fresh"), &id("j-fresh")).await.unwrap();
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn sqlite_keys_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        open_sqlite(dir.path(), &clock).claim(&request("r1"), &id("j1")).await.unwrap();
        let store = open_sqlite(dir.path(), &clock);
        assert_eq!(
            store.claim(&request("r1"), &id("j2")).await.unwrap(),
            IdempotencyClaim::Existing(id("j1"))
        );
    }
}

mod local_limiter {
    use super::*;

    fn caps(llm: usize) -> LimitCaps {
        LimitCaps { ocr: 2, llm, llm_student: 2, llm_teacher: 2 }
    }

    async fn in_use(limiter: &LocalLimiter, class: LimitClass) -> usize {
        let usage = limiter.usage().await.unwrap();
        usage.iter().find(|u| u.class == class).unwrap().in_use
    }

    /// Polls `acquire` once: `None` when it would have to wait. The future is dropped either way.
    async fn try_acquire(limiter: &LocalLimiter, classes: &[LimitClass]) -> Option<queue_core::PermitSet> {
        // A zero timeout polls the inner future once before looking at the clock.
        tokio::time::timeout(Duration::ZERO, limiter.acquire(classes)).await.ok().map(Result::unwrap)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_holders_than_the_cap_at_once() {
        let limiter = Arc::new(LocalLimiter::new(caps(3)));
        let holders = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (limiter, holders, peak) =
                    (Arc::clone(&limiter), Arc::clone(&holders), Arc::clone(&peak));
                tokio::spawn(async move {
                    let permits = limiter.acquire(&[LimitClass::Llm]).await.unwrap();
                    let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..5 {
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
        assert_eq!(in_use(&limiter, LimitClass::Llm).await, 0);
    }

    #[tokio::test]
    async fn at_the_cap_the_next_acquire_waits_until_a_release() {
        let limiter = LocalLimiter::new(caps(2));
        let first = limiter.acquire(&[LimitClass::Llm]).await.unwrap();
        let _second = limiter.acquire(&[LimitClass::Llm]).await.unwrap();
        assert!(try_acquire(&limiter, &[LimitClass::Llm]).await.is_none());
        limiter.release(first).await.unwrap();
        assert!(try_acquire(&limiter, &[LimitClass::Llm]).await.is_some());
    }

    #[tokio::test]
    async fn classes_are_taken_in_acquisition_order_whatever_order_they_come_in() {
        let limiter = LocalLimiter::new(caps(4));
        let permits =
            limiter.acquire(&[LimitClass::LlmStudent, LimitClass::Llm, LimitClass::Llm]).await.unwrap();
        assert_eq!(permits.classes, [LimitClass::Llm, LimitClass::LlmStudent]);
        let usage = limiter.usage().await.unwrap();
        assert_eq!(usage.iter().map(|u| u.class).collect::<Vec<_>>(), LimitClass::ALL);
        assert_eq!(
            usage.iter().map(|u| (u.in_use, u.capacity)).collect::<Vec<_>>(),
            [(0, 2), (1, 4), (1, 2), (0, 2)]
        );
    }

    #[tokio::test]
    async fn release_gives_every_class_back() {
        let limiter = LocalLimiter::new(caps(1));
        let permits = limiter.acquire(&[LimitClass::Ocr, LimitClass::Llm]).await.unwrap();
        assert_eq!(
            (in_use(&limiter, LimitClass::Ocr).await, in_use(&limiter, LimitClass::Llm).await),
            (1, 1)
        );
        limiter.release(permits).await.unwrap();
        let usage = limiter.usage().await.unwrap();
        assert!(usage.iter().all(|u| u.in_use == 0), "{usage:?}");
    }

    #[tokio::test]
    async fn a_dropped_acquire_gives_back_the_permits_it_had_taken() {
        let limiter = LocalLimiter::new(LimitCaps { ocr: 1, llm: 1, llm_student: 1, llm_teacher: 1 });
        // Someone holds the only llm_student permit: a student chat takes `llm`, then waits.
        let _student = limiter.acquire(&[LimitClass::LlmStudent]).await.unwrap();
        assert!(try_acquire(&limiter, &[LimitClass::Llm, LimitClass::LlmStudent]).await.is_none());
        assert_eq!(in_use(&limiter, LimitClass::Llm).await, 0, "the llm permit went back with the future");
        assert!(try_acquire(&limiter, &[LimitClass::Llm]).await.is_some());
    }

    #[tokio::test]
    async fn a_zero_capacity_is_treated_as_one() {
        let limiter = LocalLimiter::new(LimitCaps { ocr: 0, llm: 0, llm_student: 0, llm_teacher: 0 });
        assert!(limiter.usage().await.unwrap().iter().all(|u| u.capacity == 1));
        let held = try_acquire(&limiter, &[LimitClass::Ocr]).await.expect("one ocr permit");
        assert!(try_acquire(&limiter, &[LimitClass::Ocr]).await.is_none());
        limiter.release(held).await.unwrap();
    }

    #[tokio::test]
    async fn releasing_a_token_twice_never_frees_someone_elses_permits() {
        let limiter = LocalLimiter::new(caps(1));
        let first = limiter.acquire(&[LimitClass::Llm]).await.unwrap();
        limiter.release(first.clone()).await.unwrap();
        let second = limiter.acquire(&[LimitClass::Llm]).await.unwrap();
        assert_ne!(first.token, second.token);
        limiter.release(first).await.unwrap();
        assert_eq!(in_use(&limiter, LimitClass::Llm).await, 1, "the second holder keeps its permit");
        limiter.release(second).await.unwrap();
        assert_eq!(in_use(&limiter, LimitClass::Llm).await, 0);
    }
}
