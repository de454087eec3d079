//! The scenarios, one public async fn per guarantee, each taking a [`RigFactory`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::handler::{Behavior, Event, RecordingHandler};
use super::{Rig, RigFactory, RigOptions};
use crate::{
    Clock, HandlerSet, IdempotencyClaim, JobId, JobKind, JobRecord, JobStatus, LaneId, NewJob, ProfileUpdate,
    QueueError, RequestId,
};

/// How long a scenario waits for a condition before failing.
const PATIENCE: Duration = Duration::from_secs(30);

async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, PATIENCE, check).await;
}

/// Polls `check` every few milliseconds until it holds; panics naming `what` after `patience`.
/// The one place tests wait for a condition: a deadline, never a fixed sleep.
///
/// # Panics
/// When `check` does not hold within `patience`.
pub async fn eventually<F, Fut>(what: &str, patience: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {patience:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn handlers(h: &RecordingHandler) -> HandlerSet {
    HandlerSet::uniform(Arc::new(h.clone()))
}

fn job(name: &str) -> JobId {
    JobId::new(name).expect("valid job id")
}

fn lane(name: &str) -> LaneId {
    LaneId::new(name).expect("valid lane id")
}

/// A job `id` of `kind`, in `lane_name` (chat jobs) or none, whose payload asks the
/// [`RecordingHandler`] for `behavior`.
#[must_use]
pub fn new_job(id: &str, kind: JobKind, lane_name: Option<&str>, behavior: &Behavior) -> NewJob {
    NewJob { id: job(id), kind, lane: lane_name.map(lane), request_id: None, payload: behavior.payload() }
}

/// Creates the record of a chat job and enqueues it.
async fn submit_chat(rig: &Rig, id: &str, lane_name: &str, behavior: &Behavior) -> Result<(), QueueError> {
    let id = job(id);
    let lane_id = lane(lane_name);
    rig.store
        .create(NewJob {
            id: id.clone(),
            kind: JobKind::Chat,
            lane: Some(lane_id.clone()),
            request_id: None,
            payload: behavior.payload(),
        })
        .await?;
    rig.backend.enqueue_chat_job(id, Some(lane_id)).await.map(drop)
}

async fn submit_plain(rig: &Rig, id: &str, kind: JobKind, behavior: &Behavior) {
    let id = job(id);
    rig.store
        .create(NewJob { id: id.clone(), kind, lane: None, request_id: None, payload: behavior.payload() })
        .await
        .expect("create job");
    match kind {
        JobKind::Upload => rig.backend.enqueue_upload_job(id).await,
        JobKind::Exam => rig.backend.enqueue_exam_job(id).await,
        JobKind::ProfileUpdate => {
            rig.backend.enqueue_profile_update(ProfileUpdate { job_id: id, student_id: "s1".into() }).await
        }
        JobKind::Chat => unreachable!("chat jobs go through submit_chat"),
    }
    .expect("enqueue job");
}

async fn record(rig: &Rig, id: &str) -> JobRecord {
    rig.store.get(&job(id)).await.expect("store get").unwrap_or_else(|| panic!("job {id} missing"))
}

/// A negative cannot be awaited: runs `check`, which asserts, every 10 ms for 300 ms, so that
/// what it rules out has had the time to happen.
async fn keep_checking(mut check: impl AsyncFnMut()) {
    let watch_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < watch_until {
        check().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_status(rig: &Rig, id: &str, status: JobStatus) {
    let what = format!("job {id} is {status}");
    wait_until(&what, || async { record(rig, id).await.status == status }).await;
}

async fn wait_started(h: &RecordingHandler, id: &str, invocation: u32) {
    let id = job(id);
    let what = format!("job {id} started {invocation} time(s)");
    wait_until(&what, || {
        let n = h.invocations(&id);
        async move { n >= invocation }
    })
    .await;
}

/// The start events of `lane_name`'s jobs, in order.
fn starts_in_lane(events: &[Event], lane_name: &str) -> Vec<(String, u32)> {
    events
        .iter()
        .filter(|e| e.start && e.lane.as_deref() == Some(lane_name))
        .map(|e| (e.job.to_string(), e.invocation))
        .collect()
}

/// Asserts that in every lane no two invocations overlap.
fn assert_no_overlap(events: &[Event]) {
    let mut open: HashMap<String, (JobId, u32)> = HashMap::new();
    for e in events {
        let Some(lane) = &e.lane else { continue };
        if e.start {
            if let Some(other) = open.get(lane) {
                panic!("lane {lane}: {} started while {:?} was running", e.job, other);
            }
            open.insert(lane.clone(), (e.job.clone(), e.invocation));
        } else if open.get(lane) == Some(&(e.job.clone(), e.invocation)) {
            open.remove(lane);
        }
    }
}

/// G1: every accepted job of every kind reaches `done`, each run once.
pub async fn every_accepted_job_completes(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let rig = factory.build(handlers(&h), RigOptions::default()).await;
    let mut ids = Vec::new();
    for l in 0..3 {
        for i in 0..4 {
            let id = format!("c{l}-{i}");
            submit_chat(&rig, &id, &format!("student:s{l}:main"), &Behavior::Ok).await.expect("submit");
            ids.push(id);
        }
    }
    for (kind, prefix) in [(JobKind::Upload, "u"), (JobKind::Exam, "e"), (JobKind::ProfileUpdate, "p")] {
        for i in 0..3 {
            let id = format!("{prefix}{i}");
            submit_plain(&rig, &id, kind, &Behavior::Ok).await;
            ids.push(id);
        }
    }
    for id in &ids {
        wait_status(&rig, id, JobStatus::Done).await;
        assert_eq!(h.invocations(&job(id)), 1, "job {id} ran more than once");
        let r = record(&rig, id).await;
        assert_eq!(r.result, Some(json!({"job": id, "invocation": 1})));
    }
    rig.backend.stop().await.expect("stop");
}

/// G1: a crash while jobs run or wait loses none of them; after the restart each lane runs in
/// its original order.
pub async fn a_crash_mid_job_loses_nothing(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions::default();
    let rig = factory.build(handlers(&h), options.clone()).await;
    submit_chat(&rig, "a1", "student:a:main", &Behavior::GateFirst("never".into())).await.expect("submit");
    submit_chat(&rig, "a2", "student:a:main", &Behavior::Ok).await.expect("submit");
    submit_chat(&rig, "a3", "student:a:main", &Behavior::Ok).await.expect("submit");
    submit_chat(&rig, "b1", "student:b:main", &Behavior::GateFirst("never".into())).await.expect("submit");
    submit_plain(&rig, "u1", JobKind::Upload, &Behavior::GateFirst("never".into())).await;
    wait_started(&h, "a1", 1).await;
    wait_started(&h, "b1", 1).await;
    wait_started(&h, "u1", 1).await;
    assert_eq!(record(&rig, "a1").await.status, JobStatus::Processing);

    let h2 = RecordingHandler::new();
    let rig = factory.crash_and_restart(rig, handlers(&h2), options).await;
    for id in ["a1", "a2", "a3", "b1", "u1"] {
        wait_status(&rig, id, JobStatus::Done).await;
    }
    let events = h2.events();
    let order: Vec<String> = starts_in_lane(&events, "student:a:main").into_iter().map(|(j, _)| j).collect();
    assert_eq!(order, ["a1", "a2", "a3"], "lane order after restart");
    assert!(record(&rig, "a1").await.attempt >= 2, "the interrupted job ran again");
    assert_no_overlap(&events);
    rig.backend.stop().await.expect("stop");
}

/// G4: a job whose worker is lost on every attempt (it hangs, then the process dies) is
/// dead-lettered once its budget is spent, and its lane moves on.
pub async fn a_job_that_keeps_losing_its_worker_is_dead_lettered(factory: &dyn RigFactory) {
    let options = RigOptions { max_attempts: 2, ..RigOptions::default() };
    let mut rig = factory.build(handlers(&RecordingHandler::new()), options.clone()).await;
    submit_chat(&rig, "doomed", "student:doomed:main", &Behavior::Hang).await.expect("submit");
    submit_chat(&rig, "behind", "student:doomed:main", &Behavior::Ok).await.expect("submit");
    submit_plain(&rig, "doomed-upload", JobKind::Upload, &Behavior::Hang).await;
    for attempt in 1..=options.max_attempts {
        for id in ["doomed", "doomed-upload"] {
            let what = format!("job {id} runs its attempt {attempt}");
            wait_until(&what, || async {
                let r = record(&rig, id).await;
                r.status == JobStatus::Processing && r.attempt == attempt
            })
            .await;
        }
        rig = factory.crash_and_restart(rig, handlers(&RecordingHandler::new()), options.clone()).await;
    }
    for id in ["doomed", "doomed-upload"] {
        wait_status(&rig, id, JobStatus::Failed).await;
        let r = record(&rig, id).await;
        let error = r.error.unwrap_or_default();
        assert!(error.contains("worker running it was lost"), "{id}: {error}");
    }
    wait_status(&rig, "behind", JobStatus::Done).await;
    rig.backend.stop().await.expect("stop");
}

/// G2: many lanes in parallel; in each, jobs start in submission order and never overlap.
pub async fn lanes_run_in_order_one_job_at_a_time(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let rig = factory.build(handlers(&h), RigOptions::default()).await;
    let lanes = 8;
    let per_lane = 6;
    // Interleave lanes, as concurrent conversations would.
    for i in 0..per_lane {
        for l in 0..lanes {
            let behavior = if i % 3 == 1 { Behavior::FailTimes(1) } else { Behavior::Ok };
            submit_chat(&rig, &format!("l{l}-{i}"), &format!("teacher:t{l}:main"), &behavior)
                .await
                .expect("submit");
        }
    }
    for l in 0..lanes {
        for i in 0..per_lane {
            wait_status(&rig, &format!("l{l}-{i}"), JobStatus::Done).await;
        }
    }
    let events = h.events();
    assert_no_overlap(&events);
    for l in 0..lanes {
        let mut firsts: Vec<String> = starts_in_lane(&events, &format!("teacher:t{l}:main"))
            .into_iter()
            .filter(|(_, inv)| *inv == 1)
            .map(|(j, _)| j)
            .collect();
        let expected: Vec<String> = (0..per_lane).map(|i| format!("l{l}-{i}")).collect();
        assert_eq!(firsts, expected, "lane {l} order");
        firsts.clear();
    }
    rig.backend.stop().await.expect("stop");
}

/// G2: a job running three times longer than its lease keeps renewing it; nobody else runs it
/// and the next job of its lane waits.
pub async fn a_long_job_renews_its_lease_and_keeps_its_lane(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions::default();
    let ttl = options.lanes.claim_ttl_ms;
    let rig = factory.build(handlers(&h), options).await;
    let l = "student:long:main";
    submit_chat(&rig, "long", l, &Behavior::GateFirst("long".into())).await.expect("submit");
    submit_chat(&rig, "next", l, &Behavior::Ok).await.expect("submit");
    wait_started(&h, "long", 1).await;
    // Six half-leases = three lease lengths, each step waiting for a renewal past the new time.
    for _ in 0..6 {
        rig.clock.advance(ttl / 2);
        let now = rig.clock.now_ms();
        wait_until("the lease is renewed past the clock", || async {
            let snap = rig.lanes.snapshot(None, 100).await.expect("snapshot");
            snap.iter().any(|s| {
                s.active
                    .as_ref()
                    .is_some_and(|c| c.job_id.as_str() == "long" && c.lease_deadline_ms > now + ttl / 2)
            })
        })
        .await;
        assert_eq!(h.invocations(&job("long")), 1, "the long job was run twice");
        assert_eq!(h.invocations(&job("next")), 0, "the next job started while the long one ran");
    }
    h.open("long");
    wait_status(&rig, "next", JobStatus::Done).await;
    assert_eq!(record(&rig, "long").await.status, JobStatus::Done);
    assert_eq!(h.invocations(&job("long")), 1);
    assert_no_overlap(&h.events());
    rig.backend.stop().await.expect("stop");
}

/// G3 + G4: a stalled worker's lease expires; the reaper (not a new enqueue) re-dispatches the
/// same head job; the stalled worker's late result is rejected and the lane order holds.
pub async fn an_expired_lease_is_reaped_and_the_late_result_is_rejected(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions { heartbeats: false, ..RigOptions::default() };
    let ttl = options.lanes.claim_ttl_ms;
    let rig = factory.build(handlers(&h), options).await;
    let l = "student:stall:main";
    submit_chat(&rig, "stall", l, &Behavior::GateFirst("stall".into())).await.expect("submit");
    submit_chat(&rig, "after", l, &Behavior::Ok).await.expect("submit");
    wait_started(&h, "stall", 1).await;
    let first_claim =
        rig.lanes.snapshot(None, 10).await.expect("snapshot")[0].active.clone().expect("active claim");

    rig.clock.advance(ttl + 1);
    // No enqueue happens here: only the reaper can repair the lane.
    wait_status(&rig, "after", JobStatus::Done).await;
    let stalled = record(&rig, "stall").await;
    assert_eq!(stalled.status, JobStatus::Done);
    assert_eq!(
        stalled.result,
        Some(json!({"job": "stall", "invocation": 2})),
        "the re-dispatched run's result"
    );
    assert_eq!(h.invocations(&job("stall")), 2);

    // The old claim is fenced off in the lane store...
    let err = rig.lanes.finish(&first_claim).await.expect_err("a stale claim must not finish");
    assert!(matches!(err, QueueError::StaleLease { .. }), "{err}");
    // ...and the stalled worker's late result changes nothing.
    h.open("stall");
    wait_until("the stalled invocation ends", || {
        let done = h.events().iter().any(|e| !e.start && e.job.as_str() == "stall" && e.invocation == 1);
        async move { done }
    })
    .await;
    // Watch the record for a while to see the late result is never written (the stalled worker
    // settles right after its handler returns).
    keep_checking(async || {
        let after = record(&rig, "stall").await;
        assert_eq!(after.result, Some(json!({"job": "stall", "invocation": 2})), "late result was written");
        assert_eq!(after.status, JobStatus::Done);
    })
    .await;
    assert_eq!(h.invocations(&job("after")), 1, "the next job ran twice");
    let order: Vec<String> = starts_in_lane(&h.events(), l).into_iter().map(|(j, _)| j).collect();
    assert_eq!(order, ["stall", "stall", "after"]);
    rig.backend.stop().await.expect("stop");
}

/// The epoch of `lane`'s active claim (`None` when it has none).
async fn lane_epoch(rig: &Rig, lane: &str) -> Option<u64> {
    let snapshot = rig.lanes.snapshot(None, 10).await.expect("snapshot");
    snapshot.iter().find(|s| s.lane_id.as_str() == lane).and_then(|s| s.active.as_ref()).map(|c| c.epoch)
}

/// Moves the manual clock past `lane`'s claim TTL (`ttl`, ms) and waits until the reaper has
/// re-claimed the lane under a new epoch.
async fn let_the_reaper_reclaim(rig: &Rig, lane: &str, ttl: u64) {
    let first = lane_epoch(rig, lane).await.expect("an active claim");
    rig.clock.advance(ttl + 1);
    wait_until(&format!("the reaper re-claims {lane}"), || async {
        lane_epoch(rig, lane).await.is_some_and(|epoch| epoch > first)
    })
    .await;
}

/// G3 + G4: the late result comes after the reaper re-claimed the lane but before anyone has
/// started the re-dispatched job (the only chat slot is the stalled one's): it is rejected all
/// the same, and the job then runs under the new claim, once.
pub async fn a_late_result_before_the_reclaimed_job_restarts_is_rejected(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions { heartbeats: false, chat_workers: 1, ..RigOptions::default() };
    let ttl = options.lanes.claim_ttl_ms;
    let rig = factory.build(handlers(&h), options).await;
    let l = "student:late:main";
    submit_chat(&rig, "stall", l, &Behavior::GateFirst("stall".into())).await.expect("submit");
    submit_chat(&rig, "after", l, &Behavior::Ok).await.expect("submit");
    wait_started(&h, "stall", 1).await;
    let_the_reaper_reclaim(&rig, l, ttl).await;
    assert_eq!(h.invocations(&job("stall")), 1, "the re-claimed job started beside the stalled one");
    // The stalled worker ends its job now, with its lease gone and the new claim not yet started.
    h.open("stall");
    wait_status(&rig, "after", JobStatus::Done).await;
    let stalled = record(&rig, "stall").await;
    assert_eq!(stalled.status, JobStatus::Done);
    assert_eq!(stalled.result, Some(json!({"job": "stall", "invocation": 2})), "the late result was written");
    assert_eq!(h.invocations(&job("stall")), 2);
    assert_eq!(h.invocations(&job("after")), 1);
    assert_no_overlap(&h.events());
    let order: Vec<String> = starts_in_lane(&h.events(), l).into_iter().map(|(j, _)| j).collect();
    assert_eq!(order, ["stall", "stall", "after"]);
    rig.backend.stop().await.expect("stop");
}

/// G2 + G3: a dispatch waits for a free worker past its whole lease, so the reaper re-claims its
/// lane and dispatches the job again while the first dispatch still waits. Only one of the two
/// may start the job: it runs once, never beside itself.
pub async fn a_dispatch_that_waited_past_its_lease_runs_once_after_the_reaper_dispatched_it_again(
    factory: &dyn RigFactory,
) {
    let h = RecordingHandler::new();
    let options = RigOptions { heartbeats: false, chat_workers: 2, ..RigOptions::default() };
    let ttl = options.lanes.claim_ttl_ms;
    let rig = factory.build(handlers(&h), options).await;
    // Both chat slots are busy, so b's dispatch waits.
    for id in ["a1", "a2"] {
        submit_chat(&rig, id, &format!("student:{id}:main"), &Behavior::GateFirst(id.into()))
            .await
            .expect("submit");
        wait_started(&h, id, 1).await;
    }
    let b_lane = "student:b:main";
    submit_chat(&rig, "b", b_lane, &Behavior::GateFirst("b".into())).await.expect("submit");
    let_the_reaper_reclaim(&rig, b_lane, ttl).await;
    assert_eq!(h.invocations(&job("b")), 0, "b started while both slots were busy");
    // The slots come free (the stalled results are refused) and take what waits, both of b's
    // dispatches among it.
    h.open("a1");
    h.open("a2");
    wait_started(&h, "b", 1).await;
    wait_status(&rig, "a1", JobStatus::Done).await;
    wait_status(&rig, "a2", JobStatus::Done).await;
    // Watch b for a while (it blocks at its first run, so a second start would run beside it).
    keep_checking(async || {
        assert_eq!(h.invocations(&job("b")), 1, "b was started by both of its dispatches")
    })
    .await;
    h.open("b");
    wait_status(&rig, "b", JobStatus::Done).await;
    assert_eq!(h.invocations(&job("b")), 1);
    // Only b's lane: a1's and a2's leases ran out while they stalled, so their second runs may
    // start beside their first (the stalled worker counts as gone), as the reaper means them to.
    let b_events: Vec<Event> = h.events().into_iter().filter(|e| e.lane.as_deref() == Some(b_lane)).collect();
    assert_no_overlap(&b_events);
    rig.backend.stop().await.expect("stop");
}

/// G2 + G3: a dispatch can wait for a free worker for most of its lease; the worker that takes
/// it starts a fresh lease, so the reaper does not hand the running job out a second time.
pub async fn a_dispatch_that_waited_for_a_worker_starts_with_a_fresh_lease(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions { heartbeats: false, chat_workers: 1, ..RigOptions::default() };
    let ttl = options.lanes.claim_ttl_ms;
    let rig = factory.build(handlers(&h), options).await;
    submit_chat(&rig, "first", "student:first:main", &Behavior::GateFirst("first".into()))
        .await
        .expect("submit");
    wait_started(&h, "first", 1).await;
    // The only worker is busy: this dispatch waits in the ready queue while its lease runs down.
    submit_chat(&rig, "waited", "student:waited:main", &Behavior::GateFirst("waited".into()))
        .await
        .expect("submit");
    rig.clock.advance(ttl - 1);
    h.open("first");
    wait_started(&h, "waited", 1).await;
    // Past the lease the dispatch was created with, well within one taken at the start.
    rig.clock.advance(2);
    keep_checking(async || {
        assert_eq!(h.invocations(&job("waited")), 1, "the running job was handed out again")
    })
    .await;
    h.open("waited");
    wait_status(&rig, "waited", JobStatus::Done).await;
    assert_eq!(record(&rig, "waited").await.result, Some(json!({"job": "waited", "invocation": 1})));
    assert_eq!(h.invocations(&job("waited")), 1);
    rig.backend.stop().await.expect("stop");
}

/// G4: a head that keeps failing is retried up to the budget, dead-lettered with its error, and
/// the lane moves on.
pub async fn a_failing_head_is_dead_lettered_and_the_lane_moves_on(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions::default();
    let budget = options.max_attempts;
    let rig = factory.build(handlers(&h), options).await;
    let l = "student:fail:main";
    submit_chat(&rig, "bad", l, &Behavior::FailAlways).await.expect("submit");
    submit_chat(&rig, "good", l, &Behavior::Ok).await.expect("submit");
    wait_status(&rig, "good", JobStatus::Done).await;
    let bad = record(&rig, "bad").await;
    assert_eq!(bad.status, JobStatus::Failed);
    assert_eq!(bad.attempt, budget);
    assert_eq!(bad.error.as_deref(), Some(format!("always fails ({budget})").as_str()));
    assert_eq!(h.invocations(&job("bad")), budget);
    let order: Vec<String> = starts_in_lane(&h.events(), l).into_iter().map(|(j, _)| j).collect();
    let mut expected = vec!["bad".to_owned(); budget as usize];
    expected.push("good".into());
    assert_eq!(order, expected);
    rig.backend.stop().await.expect("stop");
}

/// G2: a retried job keeps the head of its lane; jobs behind it wait.
pub async fn a_retried_job_keeps_its_place_at_the_head(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let rig = factory.build(handlers(&h), RigOptions::default()).await;
    let l = "student:retry:main";
    submit_chat(&rig, "r1", l, &Behavior::FailTimes(2)).await.expect("submit");
    submit_chat(&rig, "r2", l, &Behavior::Ok).await.expect("submit");
    submit_chat(&rig, "r3", l, &Behavior::Ok).await.expect("submit");
    wait_status(&rig, "r3", JobStatus::Done).await;
    let r1 = record(&rig, "r1").await;
    assert_eq!((r1.status, r1.attempt), (JobStatus::Done, 3));
    let order: Vec<String> = starts_in_lane(&h.events(), l).into_iter().map(|(j, _)| j).collect();
    assert_eq!(order, ["r1", "r1", "r1", "r2", "r3"]);
    rig.backend.stop().await.expect("stop");
}

/// G5: the same job enqueued again (running or waiting) never runs twice; the same request id
/// maps to one job; a repeated fingerprint coalesces only within the debounce window.
pub async fn resubmitting_never_runs_a_job_twice(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions::default();
    let debounce = options.lanes.debounce_ms;
    let rig = factory.build(handlers(&h), options).await;
    let l = "student:dup:main";
    submit_chat(&rig, "d1", l, &Behavior::GateFirst("d1".into())).await.expect("submit");
    submit_chat(&rig, "d2", l, &Behavior::Ok).await.expect("submit");
    wait_started(&h, "d1", 1).await;
    for id in ["d1", "d2", "d1"] {
        let receipt = rig.backend.enqueue_chat_job(job(id), Some(lane(l))).await.expect("re-enqueue");
        assert!(!receipt.dispatched, "a re-enqueue dispatched {id} again");
    }
    let load = rig.lanes.lane_load(&lane(l)).await.expect("load");
    assert_eq!((load.active, load.queued), (1, 1));
    h.open("d1");
    wait_status(&rig, "d2", JobStatus::Done).await;
    assert_eq!(h.invocations(&job("d1")), 1);
    assert_eq!(h.invocations(&job("d2")), 1);

    let req = RequestId::new("req-1").expect("request id");
    assert_eq!(rig.idempotency.claim(&req, &job("d1")).await.expect("claim"), IdempotencyClaim::Claimed);
    assert_eq!(
        rig.idempotency.claim(&req, &job("other")).await.expect("claim"),
        IdempotencyClaim::Existing(job("d1"))
    );

    rig.lanes.register_recent(&lane(l), "hello", &job("d2")).await.expect("register");
    rig.clock.advance(debounce / 2);
    assert_eq!(rig.lanes.recent_job(&lane(l), "hello").await.expect("recent"), Some(job("d2")));
    assert_eq!(rig.lanes.recent_job(&lane(l), "other text").await.expect("recent"), None);
    rig.clock.advance(debounce);
    assert_eq!(rig.lanes.recent_job(&lane(l), "hello").await.expect("recent"), None);
    rig.backend.stop().await.expect("stop");
}

/// G6: past `max_queue` waiting jobs a submit fails with `LaneFull` and the lane is unchanged.
pub async fn a_full_lane_refuses_and_changes_nothing(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let mut options = RigOptions::default();
    options.lanes.max_queue = 2;
    let rig = factory.build(handlers(&h), options).await;
    let l = "student:full:main";
    submit_chat(&rig, "f0", l, &Behavior::GateFirst("f0".into())).await.expect("submit");
    wait_started(&h, "f0", 1).await;
    submit_chat(&rig, "f1", l, &Behavior::Ok).await.expect("submit");
    submit_chat(&rig, "f2", l, &Behavior::Ok).await.expect("submit");
    let before = rig.lanes.lane_load(&lane(l)).await.expect("load");
    let err = submit_chat(&rig, "f3", l, &Behavior::Ok).await.expect_err("the lane is full");
    assert!(matches!(err, QueueError::LaneFull { max: 2, .. }), "{err}");
    assert!(err.to_string().contains("lane full"), "{err}");
    assert_eq!(rig.lanes.lane_load(&lane(l)).await.expect("load"), before);
    assert_eq!(rig.lanes.find_position(&lane(l), &job("f3")).await.expect("position"), 0);
    h.open("f0");
    wait_status(&rig, "f2", JobStatus::Done).await;
    assert_eq!(h.invocations(&job("f3")), 0, "a refused job ran");
    rig.backend.stop().await.expect("stop");
}

/// `submit` creates and queues in one step, for every kind; a chat submit reports the job's place
/// in its lane.
pub async fn submit_creates_and_queues_every_kind(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let rig = factory.build(handlers(&h), RigOptions::default()).await;
    let l = "student:submit:main";
    let first = rig
        .backend
        .submit(
            rig.store.clone(),
            new_job("s-c0", JobKind::Chat, Some(l), &Behavior::GateFirst("s-c0".into())),
        )
        .await
        .expect("submit chat");
    assert_eq!(first.record.status, JobStatus::Queued);
    let receipt = first.lane.expect("a chat submit has a lane receipt");
    assert_eq!((receipt.lane_queue_position, receipt.lane_queue_size), (0, 1), "{receipt:?}");
    wait_started(&h, "s-c0", 1).await;
    let second = rig
        .backend
        .submit(rig.store.clone(), new_job("s-c1", JobKind::Chat, Some(l), &Behavior::Ok))
        .await
        .expect("submit chat");
    let receipt = second.lane.expect("receipt");
    assert_eq!((receipt.lane_queue_position, receipt.lane_queue_size), (1, 2), "{receipt:?}");
    for (i, kind) in [JobKind::Upload, JobKind::Exam, JobKind::ProfileUpdate].into_iter().enumerate() {
        let id = format!("s-p{i}");
        let done = rig
            .backend
            .submit(rig.store.clone(), new_job(&id, kind, None, &Behavior::Ok))
            .await
            .expect("submit");
        assert_eq!((done.record.kind, done.record.status, done.lane), (kind, JobStatus::Queued, None));
        assert!(done.record.seq > 0, "the record has its sequence number");
    }
    h.open("s-c0");
    for id in ["s-c0", "s-c1", "s-p0", "s-p1", "s-p2"] {
        wait_status(&rig, id, JobStatus::Done).await;
        assert_eq!(h.invocations(&job(id)), 1, "job {id} ran once");
    }
    assert_eq!(starts_in_lane(&h.events(), l), vec![("s-c0".into(), 1), ("s-c1".into(), 1)]);
    rig.backend.stop().await.expect("stop");
}

/// A refused submit leaves nothing behind: a taken id keeps its record untouched; a chat job
/// refused by a full lane has no record afterwards.
pub async fn a_refused_submit_leaves_no_record(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let mut options = RigOptions::default();
    options.lanes.max_queue = 1;
    let rig = factory.build(handlers(&h), options).await;
    let l = "student:refused:main";
    rig.backend
        .submit(rig.store.clone(), new_job("r0", JobKind::Chat, Some(l), &Behavior::GateFirst("r0".into())))
        .await
        .expect("submit");
    wait_started(&h, "r0", 1).await;
    rig.backend
        .submit(rig.store.clone(), new_job("r1", JobKind::Chat, Some(l), &Behavior::Ok))
        .await
        .expect("submit");
    let err = rig
        .backend
        .submit(rig.store.clone(), new_job("r2", JobKind::Chat, Some(l), &Behavior::Ok))
        .await
        .expect_err("the lane is full");
    assert!(matches!(err, QueueError::LaneFull { max: 1, .. }), "{err}");
    assert!(rig.store.get(&job("r2")).await.expect("get").is_none(), "a refused chat job left a record");
    let err = rig
        .backend
        .submit(rig.store.clone(), new_job("r1", JobKind::Upload, None, &Behavior::Ok))
        .await
        .expect_err("the id is taken");
    assert!(matches!(err, QueueError::AlreadyExists { .. }), "{err}");
    let kept = record(&rig, "r1").await;
    assert_eq!((kept.kind, kept.status), (JobKind::Chat, JobStatus::Queued), "the taken id's record changed");
    h.open("r0");
    wait_status(&rig, "r1", JobStatus::Done).await;
    assert_eq!(h.invocations(&job("r2")), 0, "a refused job ran");
    rig.backend.stop().await.expect("stop");
}

/// `submit_many` answers per job, in the order given: accepted jobs run once, a taken id is
/// refused alone; a batch over the limit is refused whole, naming `jobs`, and creates nothing.
pub async fn submit_many_answers_each_job_in_order(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let rig = factory.build(handlers(&h), RigOptions::default()).await;
    let l = "student:batch:main";
    let mut batch: Vec<NewJob> =
        (0..20).map(|i| new_job(&format!("b{i}"), JobKind::Upload, None, &Behavior::Ok)).collect();
    batch.insert(5, new_job("b3", JobKind::Exam, None, &Behavior::Ok));
    batch.extend((0..3).map(|i| new_job(&format!("bc{i}"), JobKind::Chat, Some(l), &Behavior::Ok)));
    let results = rig.backend.submit_many(rig.store.clone(), batch).await.expect("submit_many");
    assert_eq!(results.len(), 24);
    for (at, result) in results.iter().enumerate() {
        if at == 5 {
            assert!(matches!(result, Err(QueueError::AlreadyExists { .. })), "{result:?}");
        } else {
            assert!(result.is_ok(), "job {at}: {result:?}");
        }
    }
    let ids: Vec<String> =
        results.iter().filter_map(|r| r.as_ref().ok()).map(|s| s.record.id.to_string()).collect();
    let mut expected: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    expected.extend((0..3).map(|i| format!("bc{i}")));
    assert_eq!(ids, expected, "results come back in the order of the batch");
    for id in &expected {
        wait_status(&rig, id, JobStatus::Done).await;
        assert_eq!(h.invocations(&job(id)), 1, "job {id} ran once");
    }
    assert_eq!(record(&rig, "b3").await.kind, JobKind::Upload, "the refused duplicate changed nothing");
    let starts: Vec<String> = starts_in_lane(&h.events(), l).into_iter().map(|(j, _)| j).collect();
    assert_eq!(starts, vec!["bc0", "bc1", "bc2"], "a batch's chat jobs keep their order in the lane");

    let too_many: Vec<NewJob> = (0..=crate::MAX_SUBMIT_BATCH)
        .map(|i| new_job(&format!("x{i}"), JobKind::Upload, None, &Behavior::Ok))
        .collect();
    let err = rig.backend.submit_many(rig.store.clone(), too_many).await.expect_err("over the limit");
    assert!(matches!(&err, QueueError::InvalidInput { field, .. } if field == "jobs"), "{err}");
    assert!(rig.store.get(&job("x0")).await.expect("get").is_none(), "a refused batch created a record");
    rig.backend.stop().await.expect("stop");
}

/// G8: stop lets a running job finish within the deadline and hands back one that cannot; the
/// next start runs what was handed back.
pub async fn stop_finishes_running_jobs_and_hands_back_the_rest(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let options = RigOptions { stop_deadline: Duration::from_millis(500), ..RigOptions::default() };
    let rig = factory.build(handlers(&h), options).await;
    submit_chat(&rig, "quick", "student:q:main", &Behavior::GateFirst("quick".into())).await.expect("submit");
    submit_chat(&rig, "stuck", "student:s:main", &Behavior::GateFirst("stuck".into())).await.expect("submit");
    submit_chat(&rig, "waiting", "student:s:main", &Behavior::Ok).await.expect("submit");
    wait_started(&h, "quick", 1).await;
    wait_started(&h, "stuck", 1).await;
    let backend = rig.backend.clone();
    let stopping = tokio::spawn(async move { backend.stop().await });
    h.open("quick");
    stopping.await.expect("stop task").expect("stop");
    assert_eq!(
        record(&rig, "quick").await.status,
        JobStatus::Done,
        "a job that could finish in time was cut"
    );
    assert_eq!(
        record(&rig, "stuck").await.status,
        JobStatus::Queued,
        "an unfinished job was not handed back"
    );
    assert_eq!(record(&rig, "waiting").await.status, JobStatus::Queued);
    let err = submit_chat(&rig, "late", "student:l:main", &Behavior::Ok)
        .await
        .expect_err("a stopped backend takes no work");
    assert!(matches!(err, QueueError::NotRunning | QueueError::Unavailable(_)), "{err}");

    rig.backend.start().await.expect("start again");
    wait_status(&rig, "waiting", JobStatus::Done).await;
    assert_eq!(record(&rig, "stuck").await.status, JobStatus::Done);
    let order: Vec<String> =
        starts_in_lane(&h.events(), "student:s:main").into_iter().map(|(j, _)| j).collect();
    assert_eq!(order, ["stuck", "stuck", "waiting"]);
    rig.backend.stop().await.expect("stop");
}

/// G8: start and stop may be called twice in a row.
pub async fn start_and_stop_are_idempotent(factory: &dyn RigFactory) {
    let h = RecordingHandler::new();
    let rig = factory.build(handlers(&h), RigOptions::default()).await;
    rig.backend.start().await.expect("second start");
    submit_chat(&rig, "once", "student:i:main", &Behavior::Ok).await.expect("submit");
    wait_status(&rig, "once", JobStatus::Done).await;
    assert_eq!(h.invocations(&job("once")), 1, "a double start ran a job twice");
    rig.backend.stop().await.expect("stop");
    rig.backend.stop().await.expect("second stop");
    rig.backend.start().await.expect("start after stop");
    submit_chat(&rig, "again", "student:i:main", &Behavior::Ok).await.expect("submit");
    wait_status(&rig, "again", JobStatus::Done).await;
    rig.backend.stop().await.expect("stop");
}
