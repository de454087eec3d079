//! Direct hand-off of chat jobs: a chat worker whose claim found too few dispatches registers as
//! idle, and a chat submit that claims an idle lane for its job, finding it registered and no
//! other lane's job waiting, starts the claim for it and pushes it onto the worker's hand-off
//! list (handoff_chat_fn.lua) instead of dispatching it. These tests check that lanes keep their
//! order, that the job runs once, and that none is lost when the worker it was handed to is
//! dead, busy or stopping. Each runs on a server of its own.

use std::sync::Arc;
use std::time::Duration;

use lane_store::TenantKeys;
use queue_core::conformance::{Behavior, eventually, new_job};
use queue_core::{
    Clock, JobKind, JobStatus, LaneId, LaneStoreConfig, ManualClock, QueueBackend, SystemClock,
};
use queue_redis::{RedisBackendConfig, RedisQueueBackend};
use redis_harness::RedisServer;

mod support;
use support::{Rig, handed_to, id, status, wait_registered};

const PATIENCE: Duration = Duration::from_secs(20);

fn lane(name: &str) -> LaneId {
    LaneId::new(name).expect("lane")
}

/// A started worker of `rig` with one chat slot (and no other), registered as idle for chat.
async fn idle_chat_worker(rig: &Rig, server: &RedisServer, config: RedisBackendConfig) -> RedisQueueBackend {
    let worker = rig.backend(RedisBackendConfig {
        chat_concurrency: 1,
        upload_concurrency: 0,
        exam_concurrency: 0,
        profile_concurrency: 0,
        ..config
    });
    worker.start().await.expect("start");
    wait_registered(rig, server, &worker, JobKind::Chat).await;
    worker
}

async fn submit(rig: &Rig, producer: &RedisQueueBackend, job: &str, lane_name: &str, behavior: &Behavior) {
    producer
        .submit(rig.store.clone(), new_job(job, JobKind::Chat, Some(lane_name), behavior))
        .await
        .expect("submit");
}

/// A chat submit that claims an idle lane hands its job to the idle chat worker: no dispatch, no
/// wake-up token. A second job of the same lane waits in the lane while the first runs, and
/// runs after it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_submit_into_an_idle_lane_hands_its_job_to_an_idle_chat_worker() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-handoff");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.producer().await;
    let worker = idle_chat_worker(&rig, &server, RedisBackendConfig::default()).await;
    submit(&rig, &producer, "c1", "l1", &Behavior::GateFirst("g1".into())).await;
    eventually("c1 runs", PATIENCE, || async { rig.handler.in_flight() == [id("c1")] }).await;
    assert_eq!(worker.stats().handed_over, 1, "c1 was handed over");
    assert_eq!(server.command(&["LLEN", &keys.chat_ready()]), "0", "c1 was not dispatched");
    assert_eq!(server.command(&["LLEN", &keys.signal(JobKind::Chat)]), "0", "no wake-up token");
    // Created started: processing under its lane's claim, first attempt, counted as processing.
    let record = rig.store.get(&id("c1")).await.expect("get").expect("the record");
    let claim_epoch = server.command(&["HGET", &keys.lane_active(&lane("l1")), "epoch"]);
    assert_eq!(
        (record.status, record.attempt, record.lease_epoch.to_string()),
        (JobStatus::Processing, 1, claim_epoch),
        "c1 runs under its lane's claim"
    );
    let counts = rig.store.counts(JobKind::Chat).await.expect("counts");
    assert_eq!((counts.queued, counts.processing), (0, 1), "c1 counts as processing");

    submit(&rig, &producer, "c2", "l1", &Behavior::Ok).await;
    assert_eq!(
        server.command(&["LRANGE", &keys.lane_waiting(&lane("l1")), "0", "-1"]),
        "c2",
        "c2 waits in its lane while c1 runs"
    );
    rig.handler.open("g1");
    eventually("c2 is done", PATIENCE, || async { status(&rig.store, "c2").await == JobStatus::Done }).await;
    assert_eq!(status(&rig.store, "c1").await, JobStatus::Done);
    let events = rig.handler.events();
    let end_c1 = events.iter().position(|e| e.job == id("c1") && !e.start).expect("c1 ended");
    let start_c2 = events.iter().position(|e| e.job == id("c2") && e.start).expect("c2 started");
    assert!(end_c1 < start_c2, "the lane ran c1, then c2: {events:?}");
    assert_eq!((rig.handler.invocations(&id("c1")), rig.handler.invocations(&id("c2"))), (1, 1));
    worker.stop().await.expect("stop");
    assert_eq!(
        server.command(&["ZSCORE", &keys.idle(JobKind::Chat), worker.worker_id()]),
        "(nil)",
        "a stop withdraws the registration"
    );
    producer.stop().await.expect("stop producer");
}

/// A submit into an idle lane while another lane's job waits in ready:chat dispatches its job
/// behind it, as before: lanes are served first come, first served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_job_is_not_handed_over_ahead_of_another_lanes_waiting_dispatch() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-handoff-fifo");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.producer().await;
    submit(&rig, &producer, "x1", "lx", &Behavior::Ok).await;
    let far = (SystemClock.now_ms() + 60_000).to_string();
    server.command(&["ZADD", &keys.idle(JobKind::Chat), &far, "w"]);
    submit(&rig, &producer, "y1", "ly", &Behavior::Ok).await;
    assert_eq!(handed_to(&server, &rig, JobKind::Chat, "w"), "0");
    let ready = server.command(&["LRANGE", &keys.chat_ready(), "0", "-1"]);
    assert!(ready.contains("|x1|lx") && ready.contains("|y1|ly"), "both dispatched, x1 first: {ready}");
    assert!(ready.find("x1") < ready.find("y1"));
    assert_eq!(server.command(&["ZCARD", &keys.idle(JobKind::Chat)]), "1", "the registration is kept");
    producer.stop().await.expect("stop producer");
}

/// A chat job handed to a worker that died while registered runs elsewhere once its lane's short
/// hand-off lease runs out (not the claim TTL of ten minutes), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_job_handed_to_a_worker_that_died_runs_elsewhere_once_its_short_lease_runs_out() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let rig = Rig::with(&server, "chat-handoff-dead", Arc::new(clock.clone()), LaneStoreConfig::default());
    let keys = TenantKeys::new(&rig.tenant);
    server.command(&["ZADD", &keys.idle(JobKind::Chat), "1010000", "dead"]);
    let producer = rig.producer().await;
    submit(&rig, &producer, "d1", "ld", &Behavior::Ok).await;
    let short_lease = u64::try_from(RedisBackendConfig::default().short_lease.as_millis()).expect("ms");
    assert_eq!(handed_to(&server, &rig, JobKind::Chat, "dead"), "1");
    assert_eq!(
        server.command(&["ZSCORE", &keys.leases(), "ld"]),
        (1_000_000 + short_lease).to_string(),
        "the lane's claim is cut to the short lease"
    );
    assert_eq!(status(&rig.store, "d1").await, JobStatus::Processing, "started for the dead worker");

    let rescuer =
        rig.backend(RedisBackendConfig { reaper_interval: Duration::from_millis(50), ..Default::default() });
    rescuer.start().await.expect("start");
    clock.advance(short_lease + 1);
    eventually("d1 runs elsewhere", PATIENCE, || async { status(&rig.store, "d1").await == JobStatus::Done })
        .await;
    assert_eq!(rig.handler.invocations(&id("d1")), 1, "d1 ran once");
    rescuer.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// Runs `running` (lane `la`) on `worker` (one chat slot), then registers the busy worker as a
/// stale registration would and submits `waiting` (lane `lb`), which is handed to it and waits
/// in its hand-off list.
async fn hand_to_busy_chat_worker(
    rig: &Rig,
    server: &RedisServer,
    producer: &RedisQueueBackend,
    worker: &RedisQueueBackend,
    running: (&str, Behavior),
    waiting: (&str, Behavior),
) {
    let keys = TenantKeys::new(&rig.tenant);
    submit(rig, producer, running.0, "la", &running.1).await;
    eventually("the first job runs", PATIENCE, || async { rig.handler.in_flight() == [id(running.0)] }).await;
    let idle = keys.idle(JobKind::Chat);
    assert_eq!(
        server.command(&["ZSCORE", &idle, worker.worker_id()]),
        "(nil)",
        "a busy worker is not registered"
    );
    let far = (SystemClock.now_ms() + 60_000).to_string();
    server.command(&["ZADD", &idle, &far, worker.worker_id()]);
    submit(rig, producer, waiting.0, "lb", &waiting.1).await;
    assert_eq!(handed_to(server, rig, JobKind::Chat, worker.worker_id()), "1", "{} waits", waiting.0);
}

/// A chat job handed to a busy worker waits in its list and is taken by the worker's next claim,
/// its lane's lease restarted at the full claim TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_job_handed_to_a_busy_worker_is_taken_by_its_next_claim_with_a_full_lease() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-handoff-busy");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.producer().await;
    let worker = idle_chat_worker(&rig, &server, RedisBackendConfig::default()).await;
    let gate = |name: &str| Behavior::GateFirst(name.into());
    hand_to_busy_chat_worker(&rig, &server, &producer, &worker, ("b1", gate("g1")), ("b2", gate("g2"))).await;

    rig.handler.open("g1");
    eventually("b2 runs", PATIENCE, || async { rig.handler.in_flight() == [id("b2")] }).await;
    let lease: u64 = server.command(&["ZSCORE", &keys.leases(), "lb"]).parse().expect("a lease");
    let full = LaneStoreConfig::default().claim_ttl_ms;
    assert!(lease > SystemClock.now_ms() + full / 2, "b2's lane lease ({lease}) is a full one");
    assert_eq!(handed_to(&server, &rig, JobKind::Chat, worker.worker_id()), "0");
    rig.handler.open("g2");
    eventually("b2 is done", PATIENCE, || async { status(&rig.store, "b2").await == JobStatus::Done }).await;
    assert_eq!((rig.handler.invocations(&id("b1")), rig.handler.invocations(&id("b2"))), (1, 1));
    assert_eq!(worker.stats().handed_over, 2, "b1 came through the block, b2 through the claim");
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A chat job handed to a worker and not yet read when it stops is handed back with its running
/// job, and another worker runs it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_hands_back_a_chat_job_handed_over_and_not_yet_read() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-handoff-stop");
    let producer = rig.producer().await;
    let config = RedisBackendConfig { stop_deadline: Duration::from_millis(100), ..Default::default() };
    let worker = idle_chat_worker(&rig, &server, config).await;
    let never = Behavior::GateFirst("never".into());
    hand_to_busy_chat_worker(&rig, &server, &producer, &worker, ("s1", never), ("s2", Behavior::Ok)).await;

    worker.stop().await.expect("stop");
    assert_eq!(worker.stats().handed_back, 2, "s1 (running) and s2 (handed over)");
    assert_eq!(status(&rig.store, "s2").await, JobStatus::Queued);
    assert_eq!(handed_to(&server, &rig, JobKind::Chat, worker.worker_id()), "0");
    let other = rig.backend(RedisBackendConfig::default());
    other.start().await.expect("start");
    eventually("s2 runs elsewhere", PATIENCE, || async { status(&rig.store, "s2").await == JobStatus::Done })
        .await;
    assert_eq!(rig.handler.invocations(&id("s2")), 1, "s2 ran once");
    other.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A handed-over chat job that runs longer than a third of its short lease gets its lane's full
/// claim TTL while it runs, so its lease does not run out under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chat_job_handed_over_gets_a_full_lease_while_it_runs() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-handoff-long");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.backend(RedisBackendConfig {
        run_workers: false,
        short_lease: Duration::from_millis(600),
        ..Default::default()
    });
    producer.start().await.expect("start producer");
    let worker = idle_chat_worker(&rig, &server, RedisBackendConfig::default()).await;
    submit(&rig, &producer, "long", "ll", &Behavior::GateFirst("g".into())).await;
    let lease = || server.command(&["ZSCORE", &keys.leases(), "ll"]).parse::<u64>().ok();
    assert!(lease().is_some_and(|l| l <= SystemClock.now_ms() + 600), "handed over under the short lease");
    eventually("the lane's lease is lengthened", PATIENCE, || async {
        lease().is_some_and(|l| l > SystemClock.now_ms() + 60_000)
    })
    .await;
    rig.handler.open("g");
    eventually("long is done", PATIENCE, || async { status(&rig.store, "long").await == JobStatus::Done })
        .await;
    assert_eq!(rig.handler.invocations(&id("long")), 1, "ran once");
    assert_eq!(worker.stats().lease_expiries, 0);
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}
