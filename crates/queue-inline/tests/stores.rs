//! The stores and the limiter of the in-process backend: one battery that both job stores must
//! pass with the same assertions, SQLite's durability and group commit, idempotency keys on both
//! stores, and the local limiter.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use queue_core::{
    Clock, IdempotencyClaim, IdempotencyStore, JobId, JobKind, JobStatus, JobStore, JobUpdate, LaneId,
    LimitCaps, LimitClass, Limiter, ManualClock, NewJob, QueueError, RequestId, StatusCounts, TenantId,
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

/// A job store under test with the clock it reads (and, for SQLite, the directory it lives in).
struct Fixture {
    store: Arc<dyn JobStore>,
    clock: ManualClock,
    _dir: Option<TempDir>,
}

fn memory_fixture() -> Fixture {
    let clock = ManualClock::new(START_MS);
    Fixture { store: Arc::new(MemoryJobStore::new(tenant(), Arc::new(clock.clone()))), clock, _dir: None }
}

fn sqlite_fixture() -> Fixture {
    let clock = ManualClock::new(START_MS);
    let dir = tempfile::tempdir().unwrap();
    Fixture { store: Arc::new(open_sqlite(dir.path(), &clock)), clock, _dir: Some(dir) }
}

/// The assertions every job store must pass.
mod battery {
    use super::*;

    pub async fn create_then_get_round_trips_every_field(f: &Fixture) {
        let job = NewJob {
            id: id("c1"),
            kind: JobKind::Chat,
            lane: Some(LaneId::new("student:s1:main").unwrap()),
            request_id: Some(request("req-1")),
            payload: json!({ "message": "hi", "attachments": [1, 2] }),
        };
        let created = f.store.create(job).await.unwrap();
        assert_eq!(created.id, id("c1"));
        assert_eq!(created.kind, JobKind::Chat);
        assert_eq!(created.tenant, tenant());
        assert_eq!(created.lane, Some(LaneId::new("student:s1:main").unwrap()));
        assert_eq!(created.request_id, Some(request("req-1")));
        assert_eq!((created.status, created.attempt, created.lease_epoch), (JobStatus::Queued, 0, 0));
        assert_eq!((created.created_at_ms, created.updated_at_ms), (START_MS, START_MS));
        assert_eq!(created.payload, json!({ "message": "hi", "attachments": [1, 2] }));
        assert_eq!((created.result.clone(), created.error.clone()), (None, None));
        assert!(created.seq >= 1);

        assert_eq!(f.store.get(&id("c1")).await.unwrap(), Some(created));
        assert_eq!(f.store.get(&id("nope")).await.unwrap(), None);
    }

    pub async fn a_duplicate_id_is_refused_and_the_first_record_kept(f: &Fixture) {
        let first = f.store.create(new_job("a", JobKind::Upload)).await.unwrap();
        let again = NewJob { payload: json!("other"), ..new_job("a", JobKind::Exam) };
        let err = f.store.create(again).await.unwrap_err();
        assert_eq!(err, QueueError::AlreadyExists { job: id("a") });
        assert_eq!(f.store.get(&id("a")).await.unwrap(), Some(first));
    }

    pub async fn sequence_numbers_strictly_increase_across_kinds(f: &Fixture) {
        let mut seqs = Vec::new();
        for (i, kind) in JobKind::ALL.iter().cycle().take(12).enumerate() {
            seqs.push(f.store.create(new_job(&format!("j{i}"), *kind)).await.unwrap().seq);
            if i == 5 {
                // A refused create must not disturb the order of the ones around it.
                f.store.create(new_job("j0", JobKind::Upload)).await.unwrap_err();
            }
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    pub async fn transitions_follow_the_table_and_a_refused_one_changes_nothing(f: &Fixture) {
        f.store.create(new_job("a", JobKind::Upload)).await.unwrap();
        f.clock.advance(10);
        let started = f.store.transition(&id("a"), JobUpdate::start(1)).await.unwrap();
        assert_eq!((started.status, started.attempt, started.lease_epoch), (JobStatus::Processing, 1, 1));
        assert_eq!(started.updated_at_ms, START_MS + 10);

        let requeued =
            f.store.transition(&id("a"), JobUpdate::requeue(1, Some("boom".into()))).await.unwrap();
        assert_eq!((requeued.status, requeued.error.as_deref()), (JobStatus::Queued, Some("boom")));
        f.store.transition(&id("a"), JobUpdate::start(2)).await.unwrap();
        f.clock.advance(10);
        let done = f.store.transition(&id("a"), JobUpdate::done(2, json!({ "ok": true }))).await.unwrap();
        assert_eq!(
            (done.status, done.attempt, done.result.clone()),
            (JobStatus::Done, 2, Some(json!({ "ok": true })))
        );
        assert_eq!(f.store.get(&id("a")).await.unwrap().as_ref(), Some(&done));

        f.clock.advance(10);
        let err = f.store.transition(&id("a"), JobUpdate::start(3)).await.unwrap_err();
        assert_eq!(err, QueueError::InvalidTransition { from: JobStatus::Done, to: JobStatus::Processing });
        assert_eq!(f.store.get(&id("a")).await.unwrap(), Some(done), "a refused transition writes nothing");

        let queued = f.store.create(new_job("b", JobKind::Upload)).await.unwrap();
        let err = f.store.transition(&id("b"), JobUpdate::done(0, json!(1))).await.unwrap_err();
        assert_eq!(err, QueueError::InvalidTransition { from: JobStatus::Queued, to: JobStatus::Done });
        assert_eq!(f.store.get(&id("b")).await.unwrap(), Some(queued));
        let cancel = JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() };
        assert_eq!(f.store.transition(&id("b"), cancel).await.unwrap().status, JobStatus::Cancelled);

        let err = f.store.transition(&id("ghost"), JobUpdate::start(1)).await.unwrap_err();
        assert_eq!(err, QueueError::NotFound { job: id("ghost") });
        assert_eq!(
            f.store.get(&id("ghost")).await.unwrap(),
            None,
            "a missing job is not created by a transition"
        );
    }

    pub async fn a_stale_lease_cannot_finish_the_job(f: &Fixture) {
        f.store.create(new_job("a", JobKind::Chat)).await.unwrap();
        f.store.transition(&id("a"), JobUpdate::start(1)).await.unwrap();
        // The first claim's lease expired: the job went back and was claimed again.
        f.store.transition(&id("a"), JobUpdate::requeue(1, None)).await.unwrap();
        let current = f.store.transition(&id("a"), JobUpdate::start(2)).await.unwrap();

        f.clock.advance(5);
        let err = f.store.transition(&id("a"), JobUpdate::done(1, json!("late"))).await.unwrap_err();
        assert_eq!(err, QueueError::StaleLease { job: id("a"), epoch: 1, current: 2 });
        let err = f.store.transition(&id("a"), JobUpdate::failed(1, "late")).await.unwrap_err();
        assert!(matches!(err, QueueError::StaleLease { epoch: 1, current: 2, .. }), "{err}");
        assert_eq!(f.store.get(&id("a")).await.unwrap(), Some(current));

        let done = f.store.transition(&id("a"), JobUpdate::done(2, json!("on time"))).await.unwrap();
        assert_eq!((done.status, done.result), (JobStatus::Done, Some(json!("on time"))));
    }

    /// Creates, in this order: upload u1 (started, then handed back), u2 (processing), u3
    /// (done), u4 (cancelled), chat c1, exam e1, u5 (queued), u6 (failed).
    async fn populate(f: &Fixture) {
        for (job, kind) in [
            ("u1", JobKind::Upload),
            ("u2", JobKind::Upload),
            ("u3", JobKind::Upload),
            ("u4", JobKind::Upload),
            ("c1", JobKind::Chat),
            ("e1", JobKind::Exam),
            ("u5", JobKind::Upload),
            ("u6", JobKind::Upload),
        ] {
            f.store.create(new_job(job, kind)).await.unwrap();
        }
        let s = &f.store;
        s.transition(&id("u1"), JobUpdate::start(1)).await.unwrap();
        s.transition(&id("u1"), JobUpdate::requeue(1, None)).await.unwrap();
        s.transition(&id("u2"), JobUpdate::start(1)).await.unwrap();
        s.transition(&id("u3"), JobUpdate::start(1)).await.unwrap();
        s.transition(&id("u3"), JobUpdate::done(1, json!(null))).await.unwrap();
        s.transition(&id("u4"), JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() })
            .await
            .unwrap();
        s.transition(&id("u6"), JobUpdate::start(1)).await.unwrap();
        s.transition(&id("u6"), JobUpdate::failed(1, "dead")).await.unwrap();
    }

    fn ids(records: &[queue_core::JobRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    pub async fn scan_pending_returns_queued_and_processing_jobs_of_the_kind_in_seq_order(f: &Fixture) {
        populate(f).await;
        let uploads = f.store.scan_pending(JobKind::Upload).await.unwrap();
        assert_eq!(ids(&uploads), ["u1", "u2", "u5"], "a handed-back job keeps its place");
        assert_eq!(
            uploads.iter().map(|r| r.status).collect::<Vec<_>>(),
            [JobStatus::Queued, JobStatus::Processing, JobStatus::Queued]
        );
        assert!(uploads.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(ids(&f.store.scan_pending(JobKind::Chat).await.unwrap()), ["c1"]);
        assert_eq!(ids(&f.store.scan_pending(JobKind::Exam).await.unwrap()), ["e1"]);
        assert!(f.store.scan_pending(JobKind::ProfileUpdate).await.unwrap().is_empty());
    }

    pub async fn counts_count_each_state_of_the_kind(f: &Fixture) {
        populate(f).await;
        let uploads = f.store.counts(JobKind::Upload).await.unwrap();
        assert_eq!(uploads, StatusCounts { queued: 2, processing: 1, done: 1, failed: 1, cancelled: 1 });
        let exams = f.store.counts(JobKind::Exam).await.unwrap();
        assert_eq!(exams, StatusCounts { queued: 1, ..StatusCounts::default() });
        assert_eq!(f.store.counts(JobKind::ProfileUpdate).await.unwrap(), StatusCounts::default());

        f.store.transition(&id("u2"), JobUpdate::done(1, json!(null))).await.unwrap();
        let uploads = f.store.counts(JobKind::Upload).await.unwrap();
        assert_eq!(uploads, StatusCounts { queued: 2, processing: 0, done: 2, failed: 1, cancelled: 1 });
    }

    pub async fn list_returns_the_newest_first_within_the_limit(f: &Fixture) {
        populate(f).await;
        let queued = f.store.list(Some(JobKind::Upload), JobStatus::Queued, 10).await.unwrap();
        assert_eq!(ids(&queued), ["u5", "u1"]);
        let one = f.store.list(Some(JobKind::Upload), JobStatus::Queued, 1).await.unwrap();
        assert_eq!(ids(&one), ["u5"]);
        let any_kind = f.store.list(None, JobStatus::Queued, 10).await.unwrap();
        assert_eq!(ids(&any_kind), ["u5", "e1", "c1", "u1"]);
        assert_eq!(ids(&f.store.list(None, JobStatus::Failed, 10).await.unwrap()), ["u6"]);
        assert!(f.store.list(Some(JobKind::Chat), JobStatus::Done, 10).await.unwrap().is_empty());
    }

    pub async fn purge_finished_respects_retention_and_leaves_pending_jobs(f: &Fixture) {
        for job in ["done-early", "failed-later", "cancelled-last", "queued", "running"] {
            f.store.create(new_job(job, JobKind::Upload)).await.unwrap();
        }
        f.store.transition(&id("running"), JobUpdate::start(1)).await.unwrap();
        f.store.transition(&id("done-early"), JobUpdate::start(1)).await.unwrap();
        f.clock.advance(100);
        f.store.transition(&id("done-early"), JobUpdate::done(1, json!(1))).await.unwrap();
        f.store.transition(&id("failed-later"), JobUpdate::start(1)).await.unwrap();
        f.clock.advance(100);
        f.store.transition(&id("failed-later"), JobUpdate::failed(1, "x")).await.unwrap();
        f.clock.advance(100);
        let cancel = JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() };
        f.store.transition(&id("cancelled-last"), cancel).await.unwrap();

        // Strictly before: a record updated exactly at the cut-off is kept.
        assert_eq!(f.store.purge_finished(START_MS + 100).await.unwrap(), 0);
        assert_eq!(f.store.purge_finished(START_MS + 101).await.unwrap(), 1);
        assert_eq!(f.store.get(&id("done-early")).await.unwrap(), None);
        assert!(f.store.get(&id("failed-later")).await.unwrap().is_some());

        f.clock.advance(1_000_000);
        assert_eq!(f.store.purge_finished(f.clock.now_ms()).await.unwrap(), 2);
        let pending = f.store.scan_pending(JobKind::Upload).await.unwrap();
        assert_eq!(ids(&pending), ["queued", "running"], "pending jobs are never purged, however old");
        assert_eq!(
            f.store.counts(JobKind::Upload).await.unwrap(),
            StatusCounts { queued: 1, processing: 1, ..StatusCounts::default() }
        );
    }

    pub async fn delete_removes_a_record_and_says_whether_it_existed(f: &Fixture) {
        f.store.create(new_job("a", JobKind::Chat)).await.unwrap();
        f.store.create(new_job("b", JobKind::Chat)).await.unwrap();
        assert!(f.store.delete(&id("a")).await.unwrap());
        assert_eq!(f.store.get(&id("a")).await.unwrap(), None);
        assert!(!f.store.delete(&id("a")).await.unwrap());
        assert_eq!(ids(&f.store.scan_pending(JobKind::Chat).await.unwrap()), ["b"]);
        assert_eq!(f.store.counts(JobKind::Chat).await.unwrap().queued, 1);

        // The id is free again, and the new record comes after everything created so far.
        let b_seq = f.store.get(&id("b")).await.unwrap().unwrap().seq;
        let again = f.store.create(new_job("a", JobKind::Chat)).await.unwrap();
        assert!(again.seq > b_seq);
        assert_eq!(ids(&f.store.scan_pending(JobKind::Chat).await.unwrap()), ["b", "a"]);
    }
}

macro_rules! job_store_battery {
    ($module:ident, $fixture:path; $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = $fixture();
                    crate::battery::$case(&fixture).await;
                }
            )*
        }
    };
}

macro_rules! both_job_stores {
    ($($case:ident),* $(,)?) => {
        job_store_battery!(memory_job_store, crate::memory_fixture; $($case),*);
        job_store_battery!(sqlite_job_store, crate::sqlite_fixture; $($case),*);
    };
}

both_job_stores!(
    create_then_get_round_trips_every_field,
    a_duplicate_id_is_refused_and_the_first_record_kept,
    sequence_numbers_strictly_increase_across_kinds,
    transitions_follow_the_table_and_a_refused_one_changes_nothing,
    a_stale_lease_cannot_finish_the_job,
    scan_pending_returns_queued_and_processing_jobs_of_the_kind_in_seq_order,
    counts_count_each_state_of_the_kind,
    list_returns_the_newest_first_within_the_limit,
    purge_finished_respects_retention_and_leaves_pending_jobs,
    delete_removes_a_record_and_says_whether_it_existed,
);

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

/// Idempotency keys on both stores that keep them.
mod idempotency {
    use super::*;

    struct Keys {
        store: Arc<dyn IdempotencyStore>,
        clock: ManualClock,
        _dir: Option<TempDir>,
    }

    fn memory() -> Keys {
        let clock = ManualClock::new(START_MS);
        Keys {
            store: Arc::new(MemoryIdempotencyStore::new(Arc::new(clock.clone()), TTL_MS)),
            clock,
            _dir: None,
        }
    }

    fn sqlite() -> Keys {
        let clock = ManualClock::new(START_MS);
        let dir = tempfile::tempdir().unwrap();
        Keys { store: Arc::new(open_sqlite(dir.path(), &clock)), clock, _dir: Some(dir) }
    }

    async fn a_free_key_is_claimed_and_then_maps_to_its_job(k: Keys) {
        assert_eq!(k.store.claim(&request("r1"), &id("j1")).await.unwrap(), IdempotencyClaim::Claimed);
        assert_eq!(
            k.store.claim(&request("r1"), &id("j2")).await.unwrap(),
            IdempotencyClaim::Existing(id("j1"))
        );
        assert_eq!(
            k.store.claim(&request("r1"), &id("j1")).await.unwrap(),
            IdempotencyClaim::Existing(id("j1"))
        );
        assert_eq!(k.store.claim(&request("r2"), &id("j2")).await.unwrap(), IdempotencyClaim::Claimed);
    }

    async fn release_forgets_a_key_only_for_its_own_job(k: Keys) {
        k.store.claim(&request("r1"), &id("j1")).await.unwrap();
        k.store.release(&request("r1"), &id("other")).await.unwrap();
        assert_eq!(
            k.store.claim(&request("r1"), &id("j2")).await.unwrap(),
            IdempotencyClaim::Existing(id("j1"))
        );
        k.store.release(&request("r1"), &id("j1")).await.unwrap();
        assert_eq!(k.store.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Claimed);
        assert_eq!(
            k.store.claim(&request("r1"), &id("j3")).await.unwrap(),
            IdempotencyClaim::Existing(id("j2"))
        );
        k.store.release(&request("never-claimed"), &id("j1")).await.unwrap();
    }

    async fn an_expired_key_is_taken_over_by_the_next_claim(k: Keys) {
        k.store.claim(&request("r1"), &id("j1")).await.unwrap();
        k.clock.advance(TTL_MS - 1);
        assert_eq!(
            k.store.claim(&request("r1"), &id("j2")).await.unwrap(),
            IdempotencyClaim::Existing(id("j1"))
        );
        k.clock.advance(1);
        assert_eq!(k.store.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Claimed);
        assert_eq!(
            k.store.claim(&request("r1"), &id("j3")).await.unwrap(),
            IdempotencyClaim::Existing(id("j2"))
        );
    }

    macro_rules! on_both {
        ($($case:ident),* $(,)?) => {
            mod memory_idempotency_store {
                $(#[tokio::test] async fn $case() { super::$case(super::memory()).await; })*
            }
            mod sqlite_idempotency_store {
                $(#[tokio::test] async fn $case() { super::$case(super::sqlite()).await; })*
            }
        };
    }

    on_both!(
        a_free_key_is_claimed_and_then_maps_to_its_job,
        release_forgets_a_key_only_for_its_own_job,
        an_expired_key_is_taken_over_by_the_next_claim,
    );

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
