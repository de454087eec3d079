//! The chat start/status flow and the submits, end to end over the in-test wiring (memory stores,
//! real inline runtime), with a responder the test controls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use app_core::api::{ChatStartRequest, ProfileUpdateRequest, UploadRequest};
use app_core::payloads::{ChatMessage, ChatPayload};
use app_core::responder::ChatResponder;
use app_core::{AppError, Laneway, Mode, Settings};
use async_trait::async_trait;
use queue_core::conformance::eventually;
use queue_core::{HandlerError, JobId, ManualClock, RequestId};
use tokio::sync::Semaphore;

/// Replies after the test lets it: each reply takes one permit of the gate.
#[derive(Debug)]
struct GatedResponder {
    gate: Arc<Semaphore>,
}

#[async_trait]
impl ChatResponder for GatedResponder {
    async fn reply(&self, chat: &ChatPayload) -> Result<String, HandlerError> {
        self.gate.acquire().await.expect("gate open").forget();
        Ok(format!("re: {}", chat.messages.last().map_or("", |m| m.content.as_str())))
    }
}

struct Fixture {
    app: Laneway,
    gate: Arc<Semaphore>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATA_DIR".into(), dir.path().display().to_string()),
        ("LANEWAY_TENANTS".into(), "t1,t2".into()),
        ("CHAT_LANE_MAX_QUEUE".into(), "2".into()),
        ("CHAT_LANE_DEBOUNCE_MS".into(), "500".into()),
    ]);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let settings = Settings::from_env(&|k| env.get(k).cloned()).expect("settings");
    let gate = Arc::new(Semaphore::new(0));
    let clock = ManualClock::default();
    let app = Laneway::start_with(
        settings,
        Mode::Test,
        Arc::new(GatedResponder { gate: gate.clone() }),
        Arc::new(clock.clone()),
    )
    .await
    .expect("start");
    Fixture { app, gate, clock, _dir: dir }
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

async fn wait_done(app: &Laneway, tenant: Option<&str>, job: &JobId) -> app_core::api::ChatStatusResponse {
    eventually(&format!("chat job {job} finishes"), PATIENCE, || async {
        let s = app.chat_status(tenant, job.as_str()).await.expect("status");
        s.status == "done" || s.status == "failed"
    })
    .await;
    app.chat_status(tenant, job.as_str()).await.expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_answered_and_its_status_carries_the_reply() {
    let f = fixture(&[]).await;
    let r = f.app.chat_start(None, chat("r1", "s42", "What is a lane?")).await.expect("start");
    assert_eq!(r.lane_id.as_str(), "student:s42:main");
    assert_eq!((r.lane_queue_position, r.lane_active, r.debounced), (0, true, false));
    f.gate.add_permits(1);
    let s = wait_done(&f.app, None, &r.job_id).await;
    assert_eq!(s.reply.as_deref(), Some("re: What is a lane?"));
    assert_eq!(s.error, None);
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_returns_the_same_job() {
    let f = fixture(&[]).await;
    let a = f.app.chat_start(None, chat("same", "s1", "hello")).await.expect("start");
    let b = f.app.chat_start(None, chat("same", "s1", "something else entirely")).await.expect("repeat");
    assert_eq!(a.job_id, b.job_id);
    assert!(!b.debounced);
    f.gate.add_permits(10);
    wait_done(&f.app, None, &a.job_id).await;
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_message_within_the_window_coalesces_and_a_later_one_does_not() {
    let f = fixture(&[]).await;
    let first = f.app.chat_start(None, chat("c1", "s1", "Hello   There")).await.expect("first");
    let again = f.app.chat_start(None, chat("c2", "s1", "hello there")).await.expect("again");
    assert!(again.debounced, "same fingerprint within the window");
    assert_eq!(again.job_id, first.job_id);
    // The coalesced request id now points at the earlier job.
    let repeat = f.app.chat_start(None, chat("c2", "s1", "hello there")).await.expect("repeat");
    assert_eq!(repeat.job_id, first.job_id);
    let different =
        f.app.chat_start(None, chat("c3", "s1", "a different question")).await.expect("different");
    assert!(!different.debounced);
    assert_ne!(different.job_id, first.job_id);
    assert_eq!(different.lane_queue_position, 1);
    f.clock.advance(501);
    let late = f.app.chat_start(None, chat("c4", "s1", "hello there")).await.expect("late");
    assert!(!late.debounced, "outside the window a repeat is a new job");
    assert_ne!(late.job_id, first.job_id);
    f.gate.add_permits(10);
    wait_done(&f.app, None, &late.job_id).await;
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_refuses_and_leaves_no_job_or_key_behind() {
    let f = fixture(&[]).await;
    let running = f.app.chat_start(None, chat("f0", "s9", "one")).await.expect("running");
    let w1 = f.app.chat_start(None, chat("f1", "s9", "two")).await.expect("waiting 1");
    let w2 = f.app.chat_start(None, chat("f2", "s9", "three")).await.expect("waiting 2");
    assert_eq!((w1.lane_queue_position, w2.lane_queue_position, w2.lane_queue_size), (1, 2, 3));
    let err = f.app.chat_start(None, chat("f3", "s9", "four")).await.expect_err("lane full");
    assert!(matches!(err, AppError::LaneFull(_)), "{err}");
    assert!(err.to_string().contains("CHAT_LANE_MAX_QUEUE=2"), "{err}");
    // The refused request id is free: its key was released.
    let rt = f.app.tenant(None).expect("tenant");
    let probe = JobId::new("probe").expect("id");
    let claim = rt.idempotency.claim(&RequestId::new("f3").expect("id"), &probe).await.expect("claim");
    assert_eq!(claim, queue_core::IdempotencyClaim::Claimed);
    // The live position moves as the lane drains.
    assert_eq!(f.app.chat_status(None, w2.job_id.as_str()).await.expect("status").lane_queue_position, 2);
    f.gate.add_permits(1);
    wait_done(&f.app, None, &running.job_id).await;
    eventually("the last waiting job moves up to position 1", PATIENCE, || async {
        f.app.chat_status(None, w2.job_id.as_str()).await.expect("status").lane_queue_position == 1
    })
    .await;
    f.gate.add_permits(10);
    wait_done(&f.app, None, &w2.job_id).await;
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enqueue_rolls_back_the_record_and_the_key() {
    let f = fixture(&[]).await;
    let rt = f.app.tenant(None).expect("tenant");
    rt.backend.stop().await.expect("stop");
    let err = f.app.chat_start(None, chat("gone", "s1", "hello")).await.expect_err("not running");
    assert!(matches!(err, AppError::NotReady(_)), "{err}");
    let counts = rt.store.counts(queue_core::JobKind::Chat).await.expect("counts");
    assert_eq!(counts.queued + counts.processing + counts.done, 0, "a refused submit left a record");
    let err = f
        .app
        .submit_upload(
            None,
            UploadRequest { request_id: Some("u1".into()), filename: "a.md".into(), content: "1. Q".into() },
        )
        .await
        .expect_err("not running");
    assert!(matches!(err, AppError::NotReady(_)), "{err}");
    let counts = rt.store.counts(queue_core::JobKind::Upload).await.expect("counts");
    assert_eq!(counts.queued, 0);
    let probe = JobId::new("probe").expect("id");
    for key in ["gone", "u1"] {
        let claim = rt.idempotency.claim(&RequestId::new(key).expect("id"), &probe).await.expect("claim");
        assert_eq!(claim, queue_core::IdempotencyClaim::Claimed, "key {key} was left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_do_not_see_each_others_jobs() {
    let f = fixture(&[]).await;
    let a = f.app.chat_start(Some("t1"), chat("x", "s1", "hi")).await.expect("t1");
    let err = f.app.chat_status(Some("t2"), a.job_id.as_str()).await.expect_err("t2 cannot see t1's job");
    assert!(matches!(err, AppError::NotFound(_)), "{err}");
    assert!(matches!(f.app.job(None, a.job_id.as_str()).await, Err(AppError::NotFound(_))));
    // The same request id in another tenant is another job.
    let b = f.app.chat_start(Some("t2"), chat("x", "s1", "hi")).await.expect("t2");
    assert_ne!(a.job_id, b.job_id);
    let err = f.app.chat_start(Some("nope"), chat("y", "s1", "hi")).await.expect_err("unknown tenant");
    assert!(matches!(err, AppError::NotFound(_)), "{err}");
    let err = f.app.chat_start(Some("{bad}"), chat("y", "s1", "hi")).await.expect_err("bad tenant");
    assert!(matches!(err, AppError::BadRequest { ref field, .. } if field == "tenant_id"), "{err}");
    f.gate.add_permits(10);
    wait_done(&f.app, Some("t1"), &a.job_id).await;
    wait_done(&f.app, Some("t2"), &b.job_id).await;
    f.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_profile_updates_run_to_done_with_their_results() {
    let f = fixture(&[]).await;
    let up = f
        .app
        .submit_upload(
            None,
            UploadRequest {
                request_id: None,
                filename: "hw.md".into(),
                content: "Intro\n1. First?\n2) Second?".into(),
            },
        )
        .await
        .expect("upload");
    let pu = f
        .app
        .submit_profile_update(
            None,
            ProfileUpdateRequest {
                request_id: Some("p1".into()),
                student_id: "s1".into(),
                notes: vec!["likes fractions".into()],
                fields: serde_json::Map::new(),
            },
        )
        .await
        .expect("profile");
    let again = f
        .app
        .submit_profile_update(
            None,
            ProfileUpdateRequest {
                request_id: Some("p1".into()),
                student_id: "s1".into(),
                notes: vec!["ignored: same request id".into()],
                fields: serde_json::Map::new(),
            },
        )
        .await
        .expect("profile again");
    assert_eq!(pu.job_id, again.job_id);
    for id in [&up.job_id, &pu.job_id] {
        eventually(&format!("job {id} is done"), PATIENCE, || async {
            f.app.job(None, id.as_str()).await.expect("job").status == "done"
        })
        .await;
    }
    let upload = f.app.job(None, up.job_id.as_str()).await.expect("job");
    assert_eq!(upload.result.as_ref().and_then(|r| r["question_count"].as_u64()), Some(2));
    let profile = f.app.job(None, pu.job_id.as_str()).await.expect("job");
    assert_eq!(profile.result.as_ref().and_then(|r| r["notes_total"].as_u64()), Some(1));
    f.app.shutdown().await;
}
