//! The store battery: the [`JobStore`] contract (round trip, unique ids, batch create, rising
//! `seq`, the transition table, lease fencing, settle as transition, pending scan, counts, listing,
//! purge, delete) and the
//! [`IdempotencyStore`] contract (set-if-absent, release by owner), checked through the traits
//! only, so that every store — memory, SQLite, Redis node and Cluster — must agree. Every store
//! crate runs it unchanged:
//!
//! ```text
//! queue_core::job_store_conformance_tests!(MyStoreFactory::default());
//! queue_core::idempotency_store_conformance_tests!(MyStoreFactory::default());
//! ```
//!
//! Time comes from the [`ManualClock`] a scenario hands to the factory, standing at
//! [`STORE_START_MS`]; nothing sleeps.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::{
    Clock, IdempotencyClaim, IdempotencyStore, JobId, JobKind, JobRecord, JobStatus, JobStore, JobUpdate,
    LaneId, ManualClock, NewJob, QueueError, RequestId, StatusCounts, TenantId,
};

/// Where the clock a scenario hands to a factory stands when the store is built.
pub const STORE_START_MS: u64 = 1_700_000_000_000;

/// A job store a [`JobStoreFactory`] built, with the tenant it stamps on its records.
#[derive(Debug, Clone)]
pub struct BuiltJobStore {
    /// The store under test.
    pub store: Arc<dyn JobStore>,
    /// The tenant every record it creates must carry.
    pub tenant: TenantId,
}

/// Builds job stores for one implementation.
#[async_trait]
pub trait JobStoreFactory: Send + Sync {
    /// A new, EMPTY job store (no record, as if for a tenant never seen before) reading time from
    /// `clock`. Stores on a shared server use a fresh tenant per build, file stores a fresh file.
    async fn build(&self, clock: ManualClock) -> BuiltJobStore;
}

/// Builds idempotency stores for one implementation.
#[async_trait]
pub trait IdempotencyStoreFactory: Send + Sync {
    /// A new, EMPTY idempotency store reading time from `clock`, whose keys live longer than a
    /// scenario (the scenarios never move the clock). Stores on a shared server use a fresh
    /// tenant per build, file stores a fresh file.
    async fn build(&self, clock: ManualClock) -> Arc<dyn IdempotencyStore>;
}

/// Generates one `#[tokio::test]` per job-store scenario for `$factory` (an expression building
/// a [`JobStoreFactory`]).
#[macro_export]
macro_rules! job_store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@each $factory;
            create_then_get_round_trips_every_field,
            a_duplicate_id_is_refused_and_the_first_record_kept,
            create_many_answers_per_job_in_order_and_refuses_taken_and_repeated_ids,
            sequence_numbers_strictly_increase_across_kinds,
            transitions_follow_the_table_and_a_refused_one_changes_nothing,
            a_stale_lease_cannot_finish_the_job,
            settle_leaves_the_record_as_transition_does,
            a_refused_settle_changes_nothing,
            scan_pending_returns_queued_and_processing_jobs_of_the_kind_in_seq_order,
            counts_count_each_state_of_the_kind,
            list_returns_the_newest_first_within_the_limit,
            purge_finished_respects_retention_and_leaves_pending_jobs,
            delete_removes_a_record_and_says_whether_it_existed,
        );
    };
}

/// Generates one `#[tokio::test]` per idempotency-store scenario for `$factory` (an expression
/// building an [`IdempotencyStoreFactory`]).
#[macro_export]
macro_rules! idempotency_store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@each $factory;
            a_free_key_is_claimed_and_then_maps_to_its_job,
            release_forgets_a_key_only_for_its_own_job,
        );
    };
}

/// The test generator behind [`job_store_conformance_tests!`] and
/// [`idempotency_store_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! store_conformance_tests {
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let factory = $factory;
                $crate::conformance::stores::$name(&factory).await;
            }
        )*
    };
}

fn id(s: &str) -> JobId {
    JobId::new(s).expect("valid job id")
}

fn request(s: &str) -> RequestId {
    RequestId::new(s).expect("valid request id")
}

fn new_job(job: &str, kind: JobKind) -> NewJob {
    NewJob { id: id(job), kind, lane: None, request_id: None, payload: json!({ "job": job }) }
}

fn ids(records: &[JobRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

/// A fresh job store, its tenant and the clock it reads.
async fn job_store(factory: &dyn JobStoreFactory) -> (Arc<dyn JobStore>, TenantId, ManualClock) {
    let clock = ManualClock::new(STORE_START_MS);
    let BuiltJobStore { store, tenant } = factory.build(clock.clone()).await;
    (store, tenant, clock)
}

/// Every field given at create comes back, on the returned record and on `get`.
pub async fn create_then_get_round_trips_every_field(factory: &dyn JobStoreFactory) {
    let (store, tenant, _) = job_store(factory).await;
    let job = NewJob {
        id: id("c1"),
        kind: JobKind::Chat,
        lane: Some(LaneId::new("student:s1:main").unwrap()),
        request_id: Some(request("req-1")),
        payload: json!({ "message": "hi", "attachments": [1, 2] }),
    };
    let created = store.create(job).await.unwrap();
    assert_eq!(created.id, id("c1"));
    assert_eq!(created.kind, JobKind::Chat);
    assert_eq!(created.tenant, tenant);
    assert_eq!(created.lane, Some(LaneId::new("student:s1:main").unwrap()));
    assert_eq!(created.request_id, Some(request("req-1")));
    assert_eq!((created.status, created.attempt, created.lease_epoch), (JobStatus::Queued, 0, 0));
    assert_eq!((created.created_at_ms, created.updated_at_ms), (STORE_START_MS, STORE_START_MS));
    assert_eq!(created.payload, json!({ "message": "hi", "attachments": [1, 2] }));
    assert_eq!((created.result.clone(), created.error.clone()), (None, None));
    assert!(created.seq >= 1);

    assert_eq!(store.get(&id("c1")).await.unwrap(), Some(created));
    assert_eq!(store.get(&id("nope")).await.unwrap(), None);
}

/// A second create of a taken id fails and leaves the first record (and the counters) alone.
pub async fn a_duplicate_id_is_refused_and_the_first_record_kept(factory: &dyn JobStoreFactory) {
    let (store, _, _) = job_store(factory).await;
    let first = store.create(new_job("a", JobKind::Upload)).await.unwrap();
    let again = NewJob { payload: json!("other"), ..new_job("a", JobKind::Exam) };
    let err = store.create(again).await.unwrap_err();
    assert_eq!(err, QueueError::AlreadyExists { job: id("a") });
    assert_eq!(store.get(&id("a")).await.unwrap(), Some(first));
    assert_eq!(store.counts(JobKind::Exam).await.unwrap(), StatusCounts::default());
}

/// `create_many` answers per job in the order given: a taken id and the second occurrence of an
/// id repeated within the batch are refused (`AlreadyExists`) and change nothing, the other jobs
/// are created as `create` would create them, with `seq` rising in the batch's order.
pub async fn create_many_answers_per_job_in_order_and_refuses_taken_and_repeated_ids(
    factory: &dyn JobStoreFactory,
) {
    let (store, tenant, _) = job_store(factory).await;
    let taken = store.create(new_job("taken", JobKind::Upload)).await.unwrap();
    assert!(store.create_many(Vec::new()).await.unwrap().is_empty(), "an empty batch answers nothing");

    let chat = NewJob {
        lane: Some(LaneId::new("student:s1:main").unwrap()),
        request_id: Some(request("req-m")),
        ..new_job("m-chat", JobKind::Chat)
    };
    let batch = vec![
        new_job("m1", JobKind::Upload),
        NewJob { payload: json!("other"), ..new_job("taken", JobKind::Exam) },
        chat,
        NewJob { payload: json!("second"), ..new_job("m1", JobKind::Exam) },
        new_job("m3", JobKind::ProfileUpdate),
    ];
    let results = store.create_many(batch).await.unwrap();
    assert_eq!(results.len(), 5, "one answer per job");
    assert_eq!(results[1], Err(QueueError::AlreadyExists { job: id("taken") }), "an id taken before");
    assert_eq!(results[3], Err(QueueError::AlreadyExists { job: id("m1") }), "an id repeated in the batch");
    let created: Vec<JobRecord> = [0, 2, 4].iter().map(|&at| results[at].clone().unwrap()).collect();
    assert_eq!(ids(&created), ["m1", "m-chat", "m3"], "answers come in the order of the batch");
    assert!(created[0].seq > taken.seq);
    assert!(created.windows(2).all(|w| w[0].seq < w[1].seq), "seq rises in the batch's order");
    for record in &created {
        assert_eq!(record.tenant, tenant);
        assert_eq!((record.status, record.attempt, record.lease_epoch), (JobStatus::Queued, 0, 0));
        assert_eq!((record.created_at_ms, record.updated_at_ms), (STORE_START_MS, STORE_START_MS));
        assert_eq!(store.get(&record.id).await.unwrap().as_ref(), Some(record), "{}", record.id);
    }
    assert_eq!(
        (created[0].kind, &created[0].payload),
        (JobKind::Upload, &json!({ "job": "m1" })),
        "the first occurrence of a repeated id is the one created"
    );
    assert_eq!(created[1].lane, Some(LaneId::new("student:s1:main").unwrap()));
    assert_eq!(created[1].request_id, Some(request("req-m")));
    assert_eq!(store.get(&id("taken")).await.unwrap(), Some(taken), "a refused job changes nothing");
    assert_eq!(store.counts(JobKind::Exam).await.unwrap(), StatusCounts::default());
    assert_eq!(store.counts(JobKind::Upload).await.unwrap().queued, 2);

    // A later job still comes after the whole batch.
    let after = store.create(new_job("after", JobKind::Upload)).await.unwrap();
    assert!(after.seq > created[2].seq);
}

/// `seq` is one rising counter for every kind.
pub async fn sequence_numbers_strictly_increase_across_kinds(factory: &dyn JobStoreFactory) {
    let (store, _, _) = job_store(factory).await;
    let mut seqs = Vec::new();
    for (i, kind) in JobKind::ALL.iter().cycle().take(12).enumerate() {
        seqs.push(store.create(new_job(&format!("j{i}"), *kind)).await.unwrap().seq);
        if i == 5 {
            // A refused create must not disturb the order of the ones around it.
            store.create(new_job("j0", JobKind::Upload)).await.unwrap_err();
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

/// Allowed transitions apply with their timestamps; a refused one writes nothing.
pub async fn transitions_follow_the_table_and_a_refused_one_changes_nothing(factory: &dyn JobStoreFactory) {
    let (store, _, clock) = job_store(factory).await;
    store.create(new_job("a", JobKind::Upload)).await.unwrap();
    clock.advance(10);
    let started = store.transition(&id("a"), JobUpdate::start(1)).await.unwrap();
    assert_eq!((started.status, started.attempt, started.lease_epoch), (JobStatus::Processing, 1, 1));
    assert_eq!(started.updated_at_ms, STORE_START_MS + 10);

    let requeued = store.transition(&id("a"), JobUpdate::requeue(1, Some("boom".into()))).await.unwrap();
    assert_eq!((requeued.status, requeued.error.as_deref()), (JobStatus::Queued, Some("boom")));
    store.transition(&id("a"), JobUpdate::start(2)).await.unwrap();
    clock.advance(10);
    let done = store.transition(&id("a"), JobUpdate::done(2, json!({ "ok": true }))).await.unwrap();
    assert_eq!(
        (done.status, done.attempt, done.result.clone()),
        (JobStatus::Done, 2, Some(json!({ "ok": true })))
    );
    assert_eq!(store.get(&id("a")).await.unwrap().as_ref(), Some(&done));

    clock.advance(10);
    let err = store.transition(&id("a"), JobUpdate::start(3)).await.unwrap_err();
    assert_eq!(err, QueueError::InvalidTransition { from: JobStatus::Done, to: JobStatus::Processing });
    assert_eq!(store.get(&id("a")).await.unwrap(), Some(done), "a refused transition writes nothing");

    let queued = store.create(new_job("b", JobKind::Upload)).await.unwrap();
    let err = store.transition(&id("b"), JobUpdate::done(0, json!(1))).await.unwrap_err();
    assert_eq!(err, QueueError::InvalidTransition { from: JobStatus::Queued, to: JobStatus::Done });
    assert_eq!(store.get(&id("b")).await.unwrap(), Some(queued));
    let cancel = JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() };
    assert_eq!(store.transition(&id("b"), cancel).await.unwrap().status, JobStatus::Cancelled);

    let err = store.transition(&id("ghost"), JobUpdate::start(1)).await.unwrap_err();
    assert_eq!(err, QueueError::NotFound { job: id("ghost") });
    assert_eq!(store.get(&id("ghost")).await.unwrap(), None, "a missing job is not created by a transition");
    assert_eq!(
        store.counts(JobKind::Upload).await.unwrap(),
        StatusCounts { done: 1, cancelled: 1, ..StatusCounts::default() },
        "refused transitions move no counter"
    );
}

/// Creates chat job `job` and claims it twice: the first claim's lease expired, the job went
/// back and was claimed again under epoch 2. Returns the record as the second claim left it.
async fn claimed_twice(store: &dyn JobStore, job: &str) -> JobRecord {
    store.create(new_job(job, JobKind::Chat)).await.unwrap();
    store.transition(&id(job), JobUpdate::start(1)).await.unwrap();
    store.transition(&id(job), JobUpdate::requeue(1, None)).await.unwrap();
    store.transition(&id(job), JobUpdate::start(2)).await.unwrap()
}

/// A result under an older lease epoch is refused; the current holder still finishes.
pub async fn a_stale_lease_cannot_finish_the_job(factory: &dyn JobStoreFactory) {
    let (store, _, clock) = job_store(factory).await;
    let current = claimed_twice(&*store, "a").await;

    clock.advance(5);
    let err = store.transition(&id("a"), JobUpdate::done(1, json!("late"))).await.unwrap_err();
    assert_eq!(err, QueueError::StaleLease { job: id("a"), epoch: 1, current: 2 });
    let err = store.transition(&id("a"), JobUpdate::failed(1, "late")).await.unwrap_err();
    assert!(matches!(err, QueueError::StaleLease { epoch: 1, current: 2, .. }), "{err}");
    assert_eq!(store.get(&id("a")).await.unwrap(), Some(current));

    let done = store.transition(&id("a"), JobUpdate::done(2, json!("on time"))).await.unwrap();
    assert_eq!((done.status, done.result), (JobStatus::Done, Some(json!("on time"))));
}

/// The record of `job` with the fields a create sets from its [`NewJob`] and its place in
/// the store (id, payload, seq) blanked, so that two jobs with the same history compare equal.
async fn history(store: &dyn JobStore, job: &str) -> JobRecord {
    let mut record = store.get(&id(job)).await.unwrap().expect("the job exists");
    record.id = id("same");
    record.payload = json!(null);
    record.seq = 0;
    record
}

/// `settle` moves a job through the same states as `transition`, with the same attempt, epoch,
/// timestamps, result and error: job `t` takes each update through `transition`, job `s`
/// through `settle`.
pub async fn settle_leaves_the_record_as_transition_does(factory: &dyn JobStoreFactory) {
    let (store, _, clock) = job_store(factory).await;
    let steps = [
        JobUpdate::start(1),
        JobUpdate::requeue(1, Some("boom".into())),
        JobUpdate::start(2),
        JobUpdate::done(2, json!({ "ok": [1, 2] })),
    ];
    for (t, s, updates) in [("t1", "s1", &steps[..]), ("t2", "s2", &steps[..2])] {
        store.create(new_job(t, JobKind::Upload)).await.unwrap();
        store.create(new_job(s, JobKind::Upload)).await.unwrap();
        for update in updates {
            clock.advance(7);
            let answered = store.transition(&id(t), update.clone()).await.unwrap();
            store.settle(&id(s), update.clone()).await.unwrap();
            assert_eq!(store.get(&id(t)).await.unwrap().as_ref(), Some(&answered));
            assert_eq!(history(&*store, s).await, history(&*store, t).await, "after {update:?}");
        }
    }
    // A failure keeps its error, and a move with no fence sets neither epoch nor attempt.
    clock.advance(7);
    store.transition(&id("t2"), JobUpdate::start(2)).await.unwrap();
    store.settle(&id("s2"), JobUpdate::start(2)).await.unwrap();
    store.transition(&id("t2"), JobUpdate::failed(2, "dead")).await.unwrap();
    store.settle(&id("s2"), JobUpdate::failed(2, "dead")).await.unwrap();
    let cancel = JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() };
    store.create(new_job("t3", JobKind::Upload)).await.unwrap();
    store.create(new_job("s3", JobKind::Upload)).await.unwrap();
    clock.advance(7);
    store.transition(&id("t3"), cancel.clone()).await.unwrap();
    store.settle(&id("s3"), cancel).await.unwrap();
    for (t, s) in [("t1", "s1"), ("t2", "s2"), ("t3", "s3")] {
        assert_eq!(history(&*store, s).await, history(&*store, t).await, "{s}");
    }
    let failed = store.get(&id("s2")).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.attempt, failed.error.as_deref()),
        (JobStatus::Failed, 2, Some("dead"))
    );
    assert_eq!(
        store.counts(JobKind::Upload).await.unwrap(),
        StatusCounts { done: 2, failed: 2, cancelled: 2, ..StatusCounts::default() }
    );
}

/// A settle under an older lease epoch, against the transition table, or of a missing job
/// fails as `transition` does and writes nothing.
pub async fn a_refused_settle_changes_nothing(factory: &dyn JobStoreFactory) {
    let (store, _, clock) = job_store(factory).await;
    let current = claimed_twice(&*store, "a").await;

    clock.advance(5);
    let err = store.settle(&id("a"), JobUpdate::done(1, json!("late"))).await.unwrap_err();
    assert_eq!(err, QueueError::StaleLease { job: id("a"), epoch: 1, current: 2 });
    let err = store.settle(&id("a"), JobUpdate::requeue(1, Some("late".into()))).await.unwrap_err();
    assert_eq!(err, QueueError::StaleLease { job: id("a"), epoch: 1, current: 2 });
    let err = store.settle(&id("a"), JobUpdate::start(3)).await.unwrap_err();
    assert_eq!(err, QueueError::InvalidTransition { from: JobStatus::Processing, to: JobStatus::Processing });
    assert_eq!(store.get(&id("a")).await.unwrap(), Some(current));

    let queued = store.create(new_job("b", JobKind::Upload)).await.unwrap();
    let err = store.settle(&id("b"), JobUpdate::done(0, json!(1))).await.unwrap_err();
    assert_eq!(err, QueueError::InvalidTransition { from: JobStatus::Queued, to: JobStatus::Done });
    assert_eq!(store.get(&id("b")).await.unwrap(), Some(queued));

    let done = store.transition(&id("a"), JobUpdate::done(2, json!("on time"))).await.unwrap();
    let err = store.settle(&id("a"), JobUpdate::failed(2, "again")).await.unwrap_err();
    assert_eq!(err, QueueError::InvalidTransition { from: JobStatus::Done, to: JobStatus::Failed });
    assert_eq!(store.get(&id("a")).await.unwrap(), Some(done), "a finished job stays as it finished");

    let err = store.settle(&id("ghost"), JobUpdate::requeue(0, None)).await.unwrap_err();
    assert_eq!(err, QueueError::NotFound { job: id("ghost") });
    assert_eq!(store.get(&id("ghost")).await.unwrap(), None, "a missing job is not created by a settle");
    assert_eq!(
        store.counts(JobKind::Upload).await.unwrap(),
        StatusCounts { queued: 1, ..StatusCounts::default() },
        "refused settles move no counter"
    );
}

/// A fresh store holding, created in this order: upload u1 (started, then handed back), u2
/// (processing), u3 (done), u4 (cancelled), chat c1, exam e1, u5 (queued), u6 (failed).
async fn populated(factory: &dyn JobStoreFactory) -> Arc<dyn JobStore> {
    let (store, _, _) = job_store(factory).await;
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
        store.create(new_job(job, kind)).await.unwrap();
    }
    let s = &store;
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
    store
}

/// Recovery's scan: pending jobs of one kind, in submission order.
pub async fn scan_pending_returns_queued_and_processing_jobs_of_the_kind_in_seq_order(
    factory: &dyn JobStoreFactory,
) {
    let store = populated(factory).await;
    let uploads = store.scan_pending(JobKind::Upload).await.unwrap();
    assert_eq!(ids(&uploads), ["u1", "u2", "u5"], "a handed-back job keeps its place");
    assert_eq!(
        uploads.iter().map(|r| r.status).collect::<Vec<_>>(),
        [JobStatus::Queued, JobStatus::Processing, JobStatus::Queued]
    );
    assert!(uploads.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(ids(&store.scan_pending(JobKind::Chat).await.unwrap()), ["c1"]);
    assert_eq!(ids(&store.scan_pending(JobKind::Exam).await.unwrap()), ["e1"]);
    assert!(store.scan_pending(JobKind::ProfileUpdate).await.unwrap().is_empty());
}

/// Counts per state follow every transition.
pub async fn counts_count_each_state_of_the_kind(factory: &dyn JobStoreFactory) {
    let store = populated(factory).await;
    let uploads = store.counts(JobKind::Upload).await.unwrap();
    assert_eq!(uploads, StatusCounts { queued: 2, processing: 1, done: 1, failed: 1, cancelled: 1 });
    let exams = store.counts(JobKind::Exam).await.unwrap();
    assert_eq!(exams, StatusCounts { queued: 1, ..StatusCounts::default() });
    assert_eq!(store.counts(JobKind::ProfileUpdate).await.unwrap(), StatusCounts::default());

    store.transition(&id("u2"), JobUpdate::done(1, json!(null))).await.unwrap();
    let uploads = store.counts(JobKind::Upload).await.unwrap();
    assert_eq!(uploads, StatusCounts { queued: 2, processing: 0, done: 2, failed: 1, cancelled: 1 });
}

/// Operators' listing: newest first, by kind or across kinds, cut at the limit.
pub async fn list_returns_the_newest_first_within_the_limit(factory: &dyn JobStoreFactory) {
    let store = populated(factory).await;
    let queued = store.list(Some(JobKind::Upload), JobStatus::Queued, 10).await.unwrap();
    assert_eq!(ids(&queued), ["u5", "u1"]);
    let one = store.list(Some(JobKind::Upload), JobStatus::Queued, 1).await.unwrap();
    assert_eq!(ids(&one), ["u5"]);
    let any_kind = store.list(None, JobStatus::Queued, 10).await.unwrap();
    assert_eq!(ids(&any_kind), ["u5", "e1", "c1", "u1"]);
    assert_eq!(ids(&store.list(None, JobStatus::Failed, 10).await.unwrap()), ["u6"]);
    assert!(store.list(Some(JobKind::Chat), JobStatus::Done, 10).await.unwrap().is_empty());
}

/// Purge drops finished records updated strictly before the cut-off, never pending ones.
pub async fn purge_finished_respects_retention_and_leaves_pending_jobs(factory: &dyn JobStoreFactory) {
    let (store, _, clock) = job_store(factory).await;
    for job in ["done-early", "failed-later", "cancelled-last", "queued", "running"] {
        store.create(new_job(job, JobKind::Upload)).await.unwrap();
    }
    store.transition(&id("running"), JobUpdate::start(1)).await.unwrap();
    store.transition(&id("done-early"), JobUpdate::start(1)).await.unwrap();
    clock.advance(100);
    store.transition(&id("done-early"), JobUpdate::done(1, json!(1))).await.unwrap();
    store.transition(&id("failed-later"), JobUpdate::start(1)).await.unwrap();
    clock.advance(100);
    store.transition(&id("failed-later"), JobUpdate::failed(1, "x")).await.unwrap();
    clock.advance(100);
    let cancel = JobUpdate { to: Some(JobStatus::Cancelled), ..JobUpdate::default() };
    store.transition(&id("cancelled-last"), cancel).await.unwrap();

    // Strictly before: a record updated exactly at the cut-off is kept.
    assert_eq!(store.purge_finished(STORE_START_MS + 100).await.unwrap(), 0);
    assert_eq!(store.purge_finished(STORE_START_MS + 101).await.unwrap(), 1);
    assert_eq!(store.get(&id("done-early")).await.unwrap(), None);
    assert!(store.get(&id("failed-later")).await.unwrap().is_some());

    clock.advance(1_000_000);
    assert_eq!(store.purge_finished(clock.now_ms()).await.unwrap(), 2);
    let pending = store.scan_pending(JobKind::Upload).await.unwrap();
    assert_eq!(ids(&pending), ["queued", "running"], "pending jobs are never purged, however old");
    assert_eq!(
        store.counts(JobKind::Upload).await.unwrap(),
        StatusCounts { queued: 1, processing: 1, ..StatusCounts::default() }
    );
}

/// Delete (a refused submit's rollback) frees the id; a new record under it comes last.
pub async fn delete_removes_a_record_and_says_whether_it_existed(factory: &dyn JobStoreFactory) {
    let (store, _, _) = job_store(factory).await;
    store.create(new_job("a", JobKind::Chat)).await.unwrap();
    store.create(new_job("b", JobKind::Chat)).await.unwrap();
    assert!(store.delete(&id("a")).await.unwrap());
    assert_eq!(store.get(&id("a")).await.unwrap(), None);
    assert!(!store.delete(&id("a")).await.unwrap());
    assert_eq!(ids(&store.scan_pending(JobKind::Chat).await.unwrap()), ["b"]);
    assert_eq!(store.counts(JobKind::Chat).await.unwrap().queued, 1);

    // The id is free again, and the new record comes after everything created so far.
    let b_seq = store.get(&id("b")).await.unwrap().unwrap().seq;
    let again = store.create(new_job("a", JobKind::Chat)).await.unwrap();
    assert!(again.seq > b_seq);
    assert_eq!(ids(&store.scan_pending(JobKind::Chat).await.unwrap()), ["b", "a"]);
}

async fn idempotency_store(factory: &dyn IdempotencyStoreFactory) -> Arc<dyn IdempotencyStore> {
    factory.build(ManualClock::new(STORE_START_MS)).await
}

/// The first claim of a key wins; every later one, for any job, gets the winner.
pub async fn a_free_key_is_claimed_and_then_maps_to_its_job(factory: &dyn IdempotencyStoreFactory) {
    let k = idempotency_store(factory).await;
    assert_eq!(k.claim(&request("r1"), &id("j1")).await.unwrap(), IdempotencyClaim::Claimed);
    assert_eq!(k.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Existing(id("j1")));
    assert_eq!(k.claim(&request("r1"), &id("j1")).await.unwrap(), IdempotencyClaim::Existing(id("j1")));
    assert_eq!(k.claim(&request("r2"), &id("j2")).await.unwrap(), IdempotencyClaim::Claimed);
}

/// Release frees a key only when it names the job the key maps to.
pub async fn release_forgets_a_key_only_for_its_own_job(factory: &dyn IdempotencyStoreFactory) {
    let k = idempotency_store(factory).await;
    k.claim(&request("r1"), &id("j1")).await.unwrap();
    k.release(&request("r1"), &id("other")).await.unwrap();
    assert_eq!(k.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Existing(id("j1")));
    k.release(&request("r1"), &id("j1")).await.unwrap();
    assert_eq!(k.claim(&request("r1"), &id("j2")).await.unwrap(), IdempotencyClaim::Claimed);
    assert_eq!(k.claim(&request("r1"), &id("j3")).await.unwrap(), IdempotencyClaim::Existing(id("j2")));
    k.release(&request("never-claimed"), &id("j1")).await.unwrap();
}
