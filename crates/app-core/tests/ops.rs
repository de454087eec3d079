//! The operations API over the in-test wiring (memory stores, the real inline runtime), with a
//! responder the test gates and that fails for good on the message `boom` while told to: depths,
//! lanes, workers, permits and dead letters as jobs move, and the retry, cancel and drain actions
//! with their refusals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app_core::api::{ChatStartRequest, UploadRequest};
use app_core::ops::{DeadQuery, LanesQuery, LanesView, QueuesView};
use app_core::payloads::{ChatMessage, ChatPayload};
use app_core::responder::ChatResponder;
use app_core::{AppError, JobId, JobKind, JobStatus, Laneway, Mode, ProcessIdentity, Settings};
use async_trait::async_trait;
use queue_core::conformance::eventually;
use queue_core::{HandlerError, LimitClass, ManualClock, StatusCounts};
use tokio::sync::Semaphore;

/// Replies once the test lets it (one gate permit per reply) and records what it answered;
/// `boom` fails permanently while `fail_boom` is set.
#[derive(Debug)]
struct TestResponder {
    gate: Arc<Semaphore>,
    fail_boom: AtomicBool,
    answered: Mutex<Vec<String>>,
}

#[async_trait]
impl ChatResponder for TestResponder {
    async fn reply(&self, chat: &ChatPayload) -> Result<String, HandlerError> {
        let text = chat.messages.last().map_or("", |m| m.content.as_str()).to_owned();
        if text == "boom" && self.fail_boom.load(Ordering::SeqCst) {
            return Err(HandlerError::permanent("the model refused to answer boom"));
        }
        self.gate.acquire().await.expect("gate open").forget();
        self.answered.lock().expect("answered").push(text.clone());
        Ok(format!("re: {text}"))
    }
}

struct Fixture {
    app: Laneway,
    responder: Arc<TestResponder>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn open_gate(&self, n: usize) {
        self.responder.gate.add_permits(n);
    }

    fn answered(&self) -> Vec<String> {
        self.responder.answered.lock().expect("answered").clone()
    }

    async fn chat(&self, request_id: &str, student: &str, text: &str) -> JobId {
        self.app.chat_start(None, chat(request_id, student, text)).await.expect("chat start").job_id
    }

    async fn status(&self, job: &JobId) -> String {
        self.app.job(None, job.as_str()).await.expect("job").status
    }

    async fn wait_status(&self, job: &JobId, status: &str) {
        eventually(&format!("job {job} is {status}"), PATIENCE, || async {
            self.status(job).await == status
        })
        .await;
    }

    async fn lanes(&self, after: Option<&str>, limit: Option<&str>) -> LanesView {
        let query = LanesQuery { after: after.map(Into::into), limit: limit.map(Into::into) };
        self.app.ops().lanes(None, &query).await.expect("lanes")
    }

    async fn chat_counts(&self) -> StatusCounts {
        counts_of(&self.app.ops().queues(None).await.expect("queues"), JobKind::Chat)
    }
}

fn counts_of(view: &QueuesView, kind: JobKind) -> StatusCounts {
    view.kinds.iter().find(|k| k.kind == kind).map(|k| k.counts).expect("every kind is listed")
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: HashMap<String, String> = HashMap::from([
        ("DATA_DIR".into(), dir.path().display().to_string()),
        ("LANEWAY_TENANTS".into(), "t1".into()),
        ("CHAT_LANE_MAX_QUEUE".into(), "6".into()),
        ("CHAT_LANE_DEBOUNCE_MS".into(), "0".into()),
    ]);
    let settings = Settings::from_env(&|k| env.get(k).cloned()).expect("settings");
    let responder = Arc::new(TestResponder {
        gate: Arc::new(Semaphore::new(0)),
        fail_boom: AtomicBool::new(true),
        answered: Mutex::new(Vec::new()),
    });
    let app = Laneway::start_with(settings, Mode::Test, responder.clone(), Arc::new(ManualClock::default()))
        .await
        .expect("start");
    Fixture { app, responder, _dir: dir }
}

fn chat(request_id: &str, student: &str, text: &str) -> ChatStartRequest {
    ChatStartRequest {
        request_id: request_id.into(),
        role: "student".into(),
        student_id: Some(student.into()),
        teacher_id: None,
        session_id: None,
        lane_id: None,
        messages: vec![ChatMessage::new("user", text)],
        attachments: vec![],
    }
}

const PATIENCE: Duration = Duration::from_secs(20);

fn lane_of(student: &str) -> String {
    format!("student:{student}:main")
}

fn assert_bad(result: Result<impl std::fmt::Debug, AppError>, field: &str) {
    match result {
        Err(AppError::BadRequest { field: f, message }) => {
            assert_eq!(f, field, "wrong field named ({message})");
            assert!(!message.is_empty());
        }
        other => panic!("expected a bad request naming {field}, got {other:?}"),
    }
}

fn assert_conflict(result: Result<impl std::fmt::Debug, AppError>, words: &str) {
    match result {
        Err(AppError::Conflict(detail)) => assert!(detail.contains(words), "{detail:?} lacks {words:?}"),
        other => panic!("expected a conflict saying {words:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depths_move_as_jobs_run() {
    let f = fixture().await;
    let before = f.app.ops().queues(None).await.expect("queues");
    assert_eq!(before.kinds.iter().map(|k| k.kind).collect::<Vec<_>>(), JobKind::ALL.to_vec());
    assert_eq!(before.backend, "inline-test");
    assert_eq!(before.memory.expect("inline depths").running, 0);
    let first = f.chat("d1", "s1", "one").await;
    f.chat("d2", "s1", "two").await;
    f.chat("d3", "s1", "three").await;
    f.wait_status(&first, "processing").await;
    assert_eq!(
        f.chat_counts().await,
        StatusCounts { queued: 2, processing: 1, ..StatusCounts::default() },
        "one runs, two wait in the lane"
    );
    eventually("the in-memory depths show the running job", PATIENCE, || async {
        f.app.ops().queues(None).await.expect("queues").memory.expect("inline depths").running == 1
    })
    .await;
    f.open_gate(3);
    eventually("every chat job is done", PATIENCE, || async { f.chat_counts().await.done == 3 }).await;
    assert_eq!(f.chat_counts().await, StatusCounts { done: 3, ..StatusCounts::default() });
    // Other kinds are counted too.
    let upload = f
        .app
        .submit_upload(
            None,
            UploadRequest { request_id: None, filename: "a.md".into(), content: "1. Why?".into() },
        )
        .await
        .expect("upload");
    f.wait_status(&upload.job_id, "done").await;
    let view = f.app.ops().queues(None).await.expect("queues");
    assert_eq!(counts_of(&view, JobKind::Upload).done, 1);
    assert_eq!(view.memory.expect("inline depths").running, 0);
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_show_the_active_job_and_the_waiting_jobs_with_their_positions() {
    let f = fixture().await;
    let a = f.chat("l1", "s1", "first").await;
    let b = f.chat("l2", "s1", "second").await;
    let c = f.chat("l3", "s1", "third").await;
    let other = f.chat("l4", "s2", "elsewhere").await;
    let view = f.lanes(None, None).await;
    assert_eq!(view.tenant, "default");
    assert_eq!(view.next_after, None, "everything fits in one page");
    let lanes: Vec<&str> = view.lanes.iter().map(|l| l.lane_id.as_str()).collect();
    assert_eq!(lanes, [lane_of("s1"), lane_of("s2")]);
    let s1 = &view.lanes[0];
    let active = s1.active.as_ref().expect("s1 has a running job");
    assert_eq!(active.job_id, a);
    assert!(active.lease_deadline_ms > 0, "the lease has a deadline");
    let waiting: Vec<(JobId, usize)> = s1.waiting.iter().map(|w| (w.job_id.clone(), w.position)).collect();
    assert_eq!(waiting, [(b.clone(), 1), (c.clone(), 2)]);
    // The positions are the ones a client polling its job sees.
    for (job, position) in &waiting {
        assert_eq!(
            f.app.chat_status(None, job.as_str()).await.expect("status").lane_queue_position,
            *position
        );
    }
    let s2 = &view.lanes[1];
    assert_eq!(s2.active.as_ref().map(|a| &a.job_id), Some(&other));
    assert!(s2.waiting.is_empty());
    f.open_gate(10);
    f.wait_status(&c, "done").await;
    f.wait_status(&other, "done").await;
    eventually("finished lanes leave the listing", PATIENCE, || async {
        f.lanes(None, None).await.lanes.is_empty()
    })
    .await;
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_are_paginated_by_after_and_limit() {
    let f = fixture().await;
    for (i, student) in ["s1", "s2", "s3"].iter().enumerate() {
        f.chat(&format!("p{i}"), student, "hello").await;
    }
    let first = f.lanes(None, Some("2")).await;
    let names: Vec<&str> = first.lanes.iter().map(|l| l.lane_id.as_str()).collect();
    assert_eq!(names, [lane_of("s1"), lane_of("s2")]);
    let after = first.next_after.expect("a full page says where the next one starts");
    assert_eq!(after.as_str(), lane_of("s2"));
    let second = f.lanes(Some(after.as_str()), Some("2")).await;
    let names: Vec<&str> = second.lanes.iter().map(|l| l.lane_id.as_str()).collect();
    assert_eq!(names, [lane_of("s3")]);
    assert_eq!(second.next_after, None, "the last page");
    // An empty limit is the default.
    assert_eq!(f.lanes(None, Some("")).await.lanes.len(), 3);
    f.open_gate(10);
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_chat_job_takes_it_out_of_its_lane_and_it_never_runs() {
    let f = fixture().await;
    let running = f.chat("c1", "s1", "keep me").await;
    let doomed = f.chat("c2", "s1", "cancel me").await;
    let behind = f.chat("c3", "s1", "after the cancelled one").await;
    assert_eq!(f.app.chat_status(None, behind.as_str()).await.expect("status").lane_queue_position, 2);
    let cancelled = f.app.ops().cancel(None, doomed.as_str()).await.expect("cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.lane_id.as_ref().map(|l| l.as_str().to_owned()), Some(lane_of("s1")));
    assert_eq!(f.status(&doomed).await, "cancelled");
    // Its place is gone: the job behind it moved up.
    let lane = &f.lanes(None, None).await.lanes[0];
    let waiting: Vec<(JobId, usize)> = lane.waiting.iter().map(|w| (w.job_id.clone(), w.position)).collect();
    assert_eq!(waiting, [(behind.clone(), 1)]);
    assert_eq!(f.app.chat_status(None, behind.as_str()).await.expect("status").lane_queue_position, 1);
    // Cancelling it again is a conflict that names its status.
    assert_conflict(f.app.ops().cancel(None, doomed.as_str()).await, "cancelled");
    f.open_gate(10);
    f.wait_status(&running, "done").await;
    f.wait_status(&behind, "done").await;
    assert_eq!(f.status(&doomed).await, "cancelled", "a cancelled job never runs");
    assert_eq!(f.answered(), ["keep me", "after the cancelled one"]);
    let counts = f.chat_counts().await;
    assert_eq!((counts.done, counts.cancelled), (2, 1));
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_or_finished_job_is_a_conflict_naming_its_status() {
    let f = fixture().await;
    let running = f.chat("r1", "s1", "busy").await;
    f.wait_status(&running, "processing").await;
    assert_conflict(f.app.ops().cancel(None, running.as_str()).await, "processing");
    assert_eq!(f.status(&running).await, "processing", "a refused cancel changes nothing");
    assert_eq!(f.lanes(None, None).await.lanes[0].active.as_ref().map(|a| &a.job_id), Some(&running));
    f.open_gate(1);
    f.wait_status(&running, "done").await;
    assert_conflict(f.app.ops().cancel(None, running.as_str()).await, "done");
    let err = f.app.ops().cancel(None, "no-such-job").await.expect_err("unknown job");
    assert!(matches!(err, AppError::NotFound(_)), "{err}");
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_lane_cancels_its_waiting_jobs_and_lets_the_running_one_finish() {
    let f = fixture().await;
    let running = f.chat("n1", "s1", "the running one").await;
    let waiting =
        [f.chat("n2", "s1", "w1").await, f.chat("n3", "s1", "w2").await, f.chat("n4", "s1", "w3").await];
    let elsewhere = f.chat("n5", "s2", "another lane").await;
    let drained = f.app.ops().drain(None, &lane_of("s1")).await.expect("drain");
    assert_eq!(drained.lane_id.as_str(), lane_of("s1"));
    assert_eq!(drained.cancelled, 3);
    assert_eq!(drained.job_ids, waiting.to_vec(), "the waiting jobs, in lane order");
    for job in &waiting {
        assert_eq!(f.status(job).await, "cancelled");
    }
    let view = f.lanes(None, None).await;
    let s1 = view.lanes.iter().find(|l| l.lane_id.as_str() == lane_of("s1")).expect("s1 still runs its job");
    assert_eq!(s1.active.as_ref().map(|a| &a.job_id), Some(&running));
    assert!(s1.waiting.is_empty());
    // Draining again, or an idle lane, cancels nothing.
    assert_eq!(f.app.ops().drain(None, &lane_of("s1")).await.expect("drain").cancelled, 0);
    assert_eq!(f.app.ops().drain(None, "student:nobody:main").await.expect("drain").cancelled, 0);
    f.open_gate(10);
    f.wait_status(&running, "done").await;
    f.wait_status(&elsewhere, "done").await;
    let mut answered = f.answered();
    answered.sort();
    assert_eq!(answered, ["another lane", "the running one"]);
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_job_is_retried_as_a_new_job_that_runs_while_the_old_one_stays_failed() {
    let f = fixture().await;
    let dead = f.chat("b1", "s1", "boom").await;
    f.wait_status(&dead, "failed").await;
    let letters = f.app.ops().dead(None, &DeadQuery::default()).await.expect("dead");
    assert_eq!(letters.total, 1);
    assert_eq!(letters.jobs.len(), 1);
    assert_eq!(letters.jobs[0].job_id, dead);
    assert_eq!(letters.jobs[0].kind, JobKind::Chat);
    assert_eq!(letters.jobs[0].error.as_deref(), Some("the model refused to answer boom"));
    // The model is fixed; the dead job is retried.
    f.responder.fail_boom.store(false, Ordering::SeqCst);
    let retry = f.app.ops().retry(None, dead.as_str()).await.expect("retry");
    assert_eq!(retry.retry_of, dead);
    assert_ne!(retry.job_id, dead);
    assert_eq!(
        (retry.kind, retry.lane_id.as_ref().map(|l| l.as_str().to_owned())),
        (JobKind::Chat, Some(lane_of("s1")))
    );
    // A second click retries nothing more: the same new job comes back.
    let again = f.app.ops().retry(None, dead.as_str()).await.expect("retry again");
    assert_eq!(again.job_id, retry.job_id);
    f.open_gate(1);
    f.wait_status(&retry.job_id, "done").await;
    let reply = f.app.chat_status(None, retry.job_id.as_str()).await.expect("status").reply;
    assert_eq!(reply.as_deref(), Some("re: boom"), "the new job has the same payload");
    assert_eq!(f.status(&dead).await, "failed", "terminal states are final");
    assert_eq!(f.answered(), ["boom"], "the retry ran once");
    let counts = f.chat_counts().await;
    assert_eq!((counts.failed, counts.done), (1, 1));
    // Only a dead job can be retried.
    assert_conflict(f.app.ops().retry(None, retry.job_id.as_str()).await, "done");
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upload_is_retried_with_its_payload_through_the_upload_queue() {
    let f = fixture().await;
    let submit = UploadRequest {
        request_id: Some("u1".into()),
        filename: "x.md".into(),
        content: "no questions".into(),
    };
    let dead = f.app.submit_upload(None, submit).await.expect("upload").job_id;
    f.wait_status(&dead, "failed").await;
    let retry = f.app.ops().retry(None, dead.as_str()).await.expect("retry");
    assert_eq!((retry.kind, retry.lane_id.clone()), (JobKind::Upload, None));
    // The same document fails the same way: the new job ran with the dead one's payload.
    f.wait_status(&retry.job_id, "failed").await;
    let new = f.app.job(None, retry.job_id.as_str()).await.expect("job");
    assert_eq!(new.error.as_deref(), Some("no numbered questions found in x.md"));
    let uploads = DeadQuery { kind: Some("upload".into()), ..DeadQuery::default() };
    let letters = f.app.ops().dead(None, &uploads).await.expect("dead");
    assert_eq!(letters.total, 2);
    assert_eq!(
        letters.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(),
        [retry.job_id.clone(), dead]
    );
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_newest_first_a_page_at_a_time() {
    let f = fixture().await;
    let mut dead = Vec::new();
    for (i, student) in ["s1", "s2", "s3"].iter().enumerate() {
        let job = f.chat(&format!("x{i}"), student, "boom").await;
        f.wait_status(&job, "failed").await;
        dead.push(job);
    }
    let page = |kind: Option<&str>, limit: Option<&str>, offset: Option<&str>| DeadQuery {
        kind: kind.map(Into::into),
        limit: limit.map(Into::into),
        offset: offset.map(Into::into),
    };
    let first = f.app.ops().dead(None, &page(Some("chat"), Some("2"), None)).await.expect("page 1");
    assert_eq!(first.total, 3);
    assert_eq!(
        first.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(),
        [dead[2].clone(), dead[1].clone()]
    );
    assert_eq!(first.next_offset, Some(2));
    let second = f.app.ops().dead(None, &page(Some("chat"), Some("2"), Some("2"))).await.expect("page 2");
    assert_eq!(second.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(), [dead[0].clone()]);
    assert_eq!(second.next_offset, None);
    let uploads = f.app.ops().dead(None, &page(Some("upload"), None, None)).await.expect("uploads");
    assert_eq!((uploads.total, uploads.jobs.len(), uploads.kind), (0, 0, Some(JobKind::Upload)));
    // An empty kind means every kind.
    let all = f.app.ops().dead(None, &page(Some(""), None, None)).await.expect("all kinds");
    assert_eq!((all.total, all.jobs.len(), all.kind), (3, 3, None));
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_and_workers_show_what_runs_now() {
    let f = fixture().await;
    let idle = f.app.ops().permits(None).await.expect("permits");
    assert_eq!(idle.permits.iter().map(|p| p.class).collect::<Vec<_>>(), LimitClass::ALL.to_vec());
    assert!(idle.permits.iter().all(|p| p.in_use == 0 && p.capacity >= 1));
    let job = f.chat("w1", "s1", "hold the permits").await;
    f.wait_status(&job, "processing").await;
    eventually("the running chat holds llm and llm_student", PATIENCE, || async {
        let view = f.app.ops().permits(None).await.expect("permits");
        let used = |c: LimitClass| view.permits.iter().find(|p| p.class == c).map_or(0, |p| p.in_use);
        (used(LimitClass::Llm), used(LimitClass::LlmStudent), used(LimitClass::Ocr)) == (1, 1, 0)
    })
    .await;
    let me = ProcessIdentity { host: "test-host".into(), pid: 4242, started_ms: 7 };
    let workers = f.app.ops().workers(None, &me).await.expect("workers");
    assert_eq!(workers.workers.len(), 1, "an inline tenant's workers are this process");
    let w = &workers.workers[0];
    assert_eq!(
        (w.worker_id.as_str(), w.host.as_str(), w.pid, w.started_ms),
        ("test-host:4242", "test-host", 4242, 7)
    );
    assert_eq!((w.in_flight, w.state), (1, "alive"));
    assert!(w.last_heartbeat_ms >= w.started_ms);
    f.open_gate(1);
    f.wait_status(&job, "done").await;
    eventually("the permits come back", PATIENCE, || async {
        f.app.ops().permits(None).await.expect("permits").permits.iter().all(|p| p.in_use == 0)
    })
    .await;
    assert_eq!(f.app.ops().workers(None, &me).await.expect("workers").workers[0].in_flight, 0);
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_writes_nothing() {
    let f = fixture().await;
    let running = f.chat("v1", "s1", "running").await;
    let waiting = f.chat("v2", "s1", "waiting").await;
    f.wait_status(&running, "processing").await;
    let ops = f.app.ops();
    for limit in ["0", "1000", "501", "-1", "ten"] {
        assert_bad(ops.lanes(None, &LanesQuery { after: None, limit: Some(limit.into()) }).await, "limit");
        assert_bad(
            ops.dead(None, &DeadQuery { limit: Some(limit.into()), ..DeadQuery::default() }).await,
            "limit",
        );
    }
    assert_eq!(f.lanes(None, Some("500")).await.lanes.len(), 1, "500 is the largest page");
    assert_bad(ops.lanes(None, &LanesQuery { after: Some("{s1}".into()), limit: None }).await, "after");
    assert_bad(
        ops.dead(None, &DeadQuery { kind: Some("email".into()), ..DeadQuery::default() }).await,
        "kind",
    );
    assert_bad(
        ops.dead(None, &DeadQuery { offset: Some("-3".into()), ..DeadQuery::default() }).await,
        "offset",
    );
    assert_bad(
        ops.dead(None, &DeadQuery { offset: Some("10001".into()), ..DeadQuery::default() }).await,
        "offset",
    );
    for bad in ["", "has space", "{tag}", "a*b", &"j".repeat(201)] {
        assert_bad(ops.retry(None, bad).await, "job_id");
        assert_bad(ops.cancel(None, bad).await, "job_id");
        assert_bad(ops.drain(None, bad).await, "lane_id");
    }
    assert_bad(ops.queues(Some("{t}")).await, "tenant_id");
    let err = ops.queues(Some("nobody")).await.expect_err("unknown tenant");
    assert!(matches!(err, AppError::NotFound(_)), "{err}");
    let err = ops.retry(None, "j-unknown").await.expect_err("unknown job");
    assert!(matches!(err, AppError::NotFound(_)), "{err}");
    // Nothing changed: the same two jobs, where they were.
    assert_eq!(f.chat_counts().await, StatusCounts { queued: 1, processing: 1, ..StatusCounts::default() });
    let lane = &f.lanes(None, None).await.lanes[0];
    assert_eq!(lane.waiting.iter().map(|w| w.job_id.clone()).collect::<Vec<_>>(), [waiting]);
    assert_conflict(ops.retry(None, running.as_str()).await, "processing");
    f.open_gate(10);
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_and_acts_on_its_own_jobs_only() {
    let f = fixture().await;
    let mine = f.chat("i1", "s1", "default tenant").await;
    let waiting = f.chat("i2", "s1", "waits").await;
    let theirs = f.app.ops().lanes(Some("t1"), &LanesQuery::default()).await.expect("t1 lanes");
    assert!(theirs.lanes.is_empty(), "t1 sees no lane of the default tenant");
    assert_eq!(theirs.tenant, "t1");
    let err = f.app.ops().cancel(Some("t1"), waiting.as_str()).await.expect_err("another tenant's job");
    assert!(matches!(err, AppError::NotFound(_)), "{err}");
    assert_eq!(f.app.ops().drain(Some("t1"), &lane_of("s1")).await.expect("drain").cancelled, 0);
    assert_eq!(f.status(&waiting).await, "queued");
    f.open_gate(10);
    f.wait_status(&mine, "done").await;
    f.wait_status(&waiting, "done").await;
    f.app.shutdown().await;
}
