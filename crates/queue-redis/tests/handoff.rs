//! Direct hand-off: a worker whose claim found too few jobs registers as idle, and a submit that
//! finds it registered claims its job for it and pushes the claimed record onto the worker's
//! hand-off list, which its blocked `BLPOP` returns (handoff_fn.lua). These tests check that the
//! job runs once and that none is lost when the worker it was handed to is dead, busy or
//! stopping. Each runs on a server of its own.

use std::sync::Arc;
use std::time::Duration;

use lane_store::TenantKeys;
use queue_core::conformance::{Behavior, eventually, new_job};
use queue_core::{Clock, JobKind, JobStatus, LaneStoreConfig, ManualClock, QueueBackend, SystemClock};
use queue_redis::{RedisBackendConfig, RedisQueueBackend};
use redis_harness::RedisServer;

mod support;
use support::{Rig, handed_to, id, status, wait_registered};

const PATIENCE: Duration = Duration::from_secs(20);

/// A started worker of `rig` with one upload slot, waiting until its first claim (which finds
/// nothing) has registered it as idle.
async fn idle_worker(rig: &Rig, server: &RedisServer, config: RedisBackendConfig) -> RedisQueueBackend {
    let worker = rig.backend(RedisBackendConfig { upload_concurrency: 1, ..config });
    worker.start().await.expect("start");
    wait_registered(rig, server, &worker, JobKind::Upload).await;
    worker
}

/// Each submit finds the worker idle, hands it its job and pushes no wake-up token; the worker
/// runs each job once and registers again after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_hands_its_job_to_an_idle_worker_instead_of_waking_it() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "handoff");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.producer().await;
    let worker = idle_worker(&rig, &server, RedisBackendConfig::default()).await;
    for (i, job) in ["h1", "h2", "h3"].into_iter().enumerate() {
        wait_registered(&rig, &server, &worker, JobKind::Upload).await;
        producer
            .submit(rig.store.clone(), new_job(job, JobKind::Upload, None, &Behavior::Ok))
            .await
            .expect("submit");
        eventually("the job is done", PATIENCE, || async {
            status(&rig.store, job).await == JobStatus::Done
        })
        .await;
        assert_eq!(worker.stats().handed_over, i as u64 + 1, "{job} was handed over");
        assert_eq!(rig.handler.invocations(&id(job)), 1, "{job} ran once");
    }
    assert_eq!(server.command(&["LLEN", &keys.signal(JobKind::Upload)]), "0", "no wake-up token was pushed");
    assert_eq!(handed_to(&server, &rig, JobKind::Upload, worker.worker_id()), "0");
    worker.stop().await.expect("stop");
    assert_eq!(
        server.command(&["ZSCORE", &keys.idle(JobKind::Upload), worker.worker_id()]),
        "(nil)",
        "a stop withdraws the registration"
    );
    producer.stop().await.expect("stop producer");
}

/// A batch hands one job to each idle worker registered, oldest registration first, and wakes
/// others for the rest; every job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_hands_one_job_to_each_idle_worker_and_wakes_others_for_the_rest() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "handoff-batch");
    let producer = rig.producer().await;
    let first = idle_worker(&rig, &server, RedisBackendConfig::default()).await;
    let second = idle_worker(&rig, &server, RedisBackendConfig::default()).await;
    wait_registered(&rig, &server, &first, JobKind::Upload).await;
    let batch = ["m1", "m2", "m3"].map(|job| new_job(job, JobKind::Upload, None, &Behavior::Ok)).to_vec();
    for r in producer.submit_many(rig.store.clone(), batch).await.expect("submit_many") {
        r.expect("accepted");
    }
    eventually("every job is done", PATIENCE, || async {
        rig.store.counts(JobKind::Upload).await.expect("counts").done == 3
    })
    .await;
    for job in ["m1", "m2", "m3"] {
        assert_eq!(rig.handler.invocations(&id(job)), 1, "{job} ran once");
    }
    assert_eq!(
        (first.stats().handed_over, second.stats().handed_over),
        (1, 1),
        "one job handed to each registered worker; the third woke one"
    );
    for worker in [&first, &second] {
        worker.stop().await.expect("stop");
        assert_eq!(handed_to(&server, &rig, JobKind::Upload, worker.worker_id()), "0");
    }
    producer.stop().await.expect("stop producer");
}

/// A worker that died while registered as idle is handed one job (its registration has not run
/// out yet), under the short hand-off lease: the job runs elsewhere once that lease runs out, not
/// a full lease later. A registration past its deadline is passed over. (A manual clock: leases
/// run out when the test moves it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_to_a_worker_that_died_runs_elsewhere_once_its_short_lease_runs_out() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let rig = Rig::with(&server, "handoff-dead", Arc::new(clock.clone()), LaneStoreConfig::default());
    let keys = TenantKeys::new(&rig.tenant);
    let idle = keys.idle(JobKind::Upload);
    // "gone" stopped registering before the clock's now; "dead" is registered for 10 s more.
    server.command(&["ZADD", &idle, "999999", "gone", "1010000", "dead"]);
    let producer = rig.producer().await;
    producer
        .submit(rig.store.clone(), new_job("d1", JobKind::Upload, None, &Behavior::Ok))
        .await
        .expect("submit");
    let short_lease = RedisBackendConfig::default().short_lease.as_millis();
    assert_eq!(
        server.command(&["ZSCORE", &keys.inflight(), "d1"]),
        (1_000_000 + short_lease).to_string(),
        "claimed for the dead worker under the short lease"
    );
    assert_eq!(handed_to(&server, &rig, JobKind::Upload, "dead"), "1");
    assert_eq!(handed_to(&server, &rig, JobKind::Upload, "gone"), "0");
    assert_eq!(server.command(&["ZRANGE", &idle, "0", "-1"]), "gone", "one registration, one job");

    let rescuer =
        rig.backend(RedisBackendConfig { reaper_interval: Duration::from_millis(50), ..Default::default() });
    rescuer.start().await.expect("start");
    assert_eq!(status(&rig.store, "d1").await, JobStatus::Processing, "d1 waits for its lease");
    clock.advance(u64::try_from(short_lease).expect("ms") + 1);
    eventually("d1 runs elsewhere", PATIENCE, || async { status(&rig.store, "d1").await == JobStatus::Done })
        .await;
    assert_eq!(rig.handler.invocations(&id("d1")), 1, "d1 ran once");
    assert_eq!(rescuer.stats().lease_expiries, 1, "the rescuer's reaper queued d1 again");
    rescuer.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// Submits `running` to `worker` (idle, one slot) and waits until it runs; then, the worker being
/// busy and so not registered, registers it as a stale registration would, and submits `waiting`,
/// which is handed to it and waits in its hand-off list, claimed for it.
async fn hand_to_busy_worker(
    rig: &Rig,
    server: &RedisServer,
    producer: &RedisQueueBackend,
    worker: &RedisQueueBackend,
    running: (&str, Behavior),
    waiting: (&str, Behavior),
) {
    let keys = TenantKeys::new(&rig.tenant);
    let submit = |(job, behavior): &(&str, Behavior)| {
        producer.submit(rig.store.clone(), new_job(job, JobKind::Upload, None, behavior))
    };
    let (first, second) = (running.0, waiting.0);
    submit(&running).await.expect("submit");
    eventually("the first job runs", PATIENCE, || async { rig.handler.in_flight() == [id(first)] }).await;
    let idle = keys.idle(JobKind::Upload);
    assert_eq!(
        server.command(&["ZSCORE", &idle, worker.worker_id()]),
        "(nil)",
        "a busy worker is not registered"
    );
    let far = (SystemClock.now_ms() + 60_000).to_string();
    server.command(&["ZADD", &idle, &far, worker.worker_id()]);
    submit(&waiting).await.expect("submit");
    assert_eq!(handed_to(server, rig, JobKind::Upload, worker.worker_id()), "1", "{second} waits");
    assert_eq!(status(&rig.store, second).await, JobStatus::Processing, "{second} is claimed for the worker");
}

/// A worker all of whose slots are busy is not registered, but a registration can outlive the
/// moment its slots fill (this test writes one): a job handed to it then waits in its hand-off
/// list, and the worker's next claim takes it, before any ready job, under the short lease of
/// the worker's claims, which the worker then lengthens to a full lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_to_a_busy_worker_is_taken_by_its_next_claim_and_gets_a_full_lease() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "handoff-busy");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.producer().await;
    // A short lease of 600 ms: the worker lengthens what it claimed every 200 ms.
    let config = RedisBackendConfig { short_lease: Duration::from_millis(600), ..Default::default() };
    let worker = idle_worker(&rig, &server, config).await;
    let gate = |name: &str| Behavior::GateFirst(name.into());
    hand_to_busy_worker(&rig, &server, &producer, &worker, ("b1", gate("g1")), ("b2", gate("g2"))).await;

    rig.handler.open("g1");
    eventually("b2 runs", PATIENCE, || async { rig.handler.in_flight() == [id("b2")] }).await;
    let full = RedisBackendConfig::default().lease.as_millis();
    let lease = || server.command(&["ZSCORE", &keys.inflight(), "b2"]).parse::<u64>().expect("a lease");
    eventually("b2's lease is lengthened to a full one", PATIENCE, || async {
        u128::from(lease()) > u128::from(SystemClock.now_ms()) + full / 2
    })
    .await;
    assert_eq!(handed_to(&server, &rig, JobKind::Upload, worker.worker_id()), "0");
    rig.handler.open("g2");
    eventually("b2 is done", PATIENCE, || async { status(&rig.store, "b2").await == JobStatus::Done }).await;
    assert_eq!((rig.handler.invocations(&id("b1")), rig.handler.invocations(&id("b2"))), (1, 1));
    assert_eq!(worker.stats().handed_over, 2, "b1 came through the block, b2 through the claim");
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A job handed to a worker and not yet read when it stops is handed back with its running
/// jobs, and another worker runs it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_hands_back_a_job_handed_over_and_not_yet_read() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "handoff-stop");
    let producer = rig.producer().await;
    let config = RedisBackendConfig { stop_deadline: Duration::from_millis(100), ..Default::default() };
    let worker = idle_worker(&rig, &server, config).await;
    let never = Behavior::GateFirst("never".into());
    hand_to_busy_worker(&rig, &server, &producer, &worker, ("s1", never), ("s2", Behavior::Ok)).await;

    worker.stop().await.expect("stop");
    assert_eq!(worker.stats().handed_back, 2, "s1 (running) and s2 (handed over)");
    assert_eq!(status(&rig.store, "s2").await, JobStatus::Queued);
    assert_eq!(handed_to(&server, &rig, JobKind::Upload, worker.worker_id()), "0");
    let other = rig.backend(RedisBackendConfig::default());
    other.start().await.expect("start");
    eventually("s2 runs elsewhere", PATIENCE, || async { status(&rig.store, "s2").await == JobStatus::Done })
        .await;
    assert_eq!(rig.handler.invocations(&id("s2")), 1, "s2 ran once");
    other.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A handed-over job that runs longer than a third of its short lease gets a full lease while it
/// runs, so its lease does not run out under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_handed_over_gets_a_full_lease_while_it_runs() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "handoff-long");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.backend(RedisBackendConfig {
        run_workers: false,
        short_lease: Duration::from_millis(600),
        ..Default::default()
    });
    producer.start().await.expect("start producer");
    let worker = idle_worker(&rig, &server, RedisBackendConfig::default()).await;
    let gate = Behavior::GateFirst("g".into());
    producer.submit(rig.store.clone(), new_job("l1", JobKind::Upload, None, &gate)).await.expect("submit");
    // The lease's deadline: none once the lease ran out and the reaper took the job back.
    let lease = || server.command(&["ZSCORE", &keys.inflight(), "l1"]).parse::<u64>().ok();
    assert!(lease().is_some_and(|l| l <= SystemClock.now_ms() + 600), "handed over under the short lease");
    eventually("l1's lease is lengthened", PATIENCE, || async {
        lease().is_some_and(|l| l > SystemClock.now_ms() + 60_000)
    })
    .await;
    assert_eq!(rig.handler.in_flight(), [id("l1")], "still running");
    rig.handler.open("g");
    eventually("l1 is done", PATIENCE, || async { status(&rig.store, "l1").await == JobStatus::Done }).await;
    assert_eq!(rig.handler.invocations(&id("l1")), 1);
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// The values a handed-over job's JSON array holds, in its order (store.rs's `CLAIM_FIELDS`,
/// which the claim scripts read with `HMGET`), then the short lease's end.
const HANDED_FIELDS: [&str; 5] = ["state", "fixed", "payload", "error", "id"];

/// The job `worker`'s hand-off list holds first, as `HMGET` renders its values (`(nil)` for
/// null), and the lease's end it was handed with.
fn first_handed(server: &RedisServer, rig: &Rig, worker: &str) -> (Vec<String>, String) {
    let list = TenantKeys::new(&rig.tenant).handoff(JobKind::Upload, worker);
    let text = server.command(&["LINDEX", &list, "0"]);
    let mut values: Vec<Option<String>> = serde_json::from_str(&text).expect("a JSON array of strings");
    let until = values.pop().flatten().expect("the lease's end");
    (values.into_iter().map(|v| v.unwrap_or_else(|| "(nil)".into())).collect(), until)
}

/// A lone submit that finds a worker idle and no job of its kind ready creates its job already
/// claimed for that worker (`hand_new`): nothing goes through the ready list, and the worker is
/// handed the very record the store holds, under the short lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_to_an_idle_worker_with_none_ready_is_created_claimed_for_it() {
    let server = RedisServer::start();
    let clock = ManualClock::new(2_000_000);
    let rig = Rig::with(&server, "handoff-new", Arc::new(clock.clone()), LaneStoreConfig::default());
    let keys = TenantKeys::new(&rig.tenant);
    server.command(&["ZADD", &keys.idle(JobKind::Upload), "2060000", "w"]);
    let producer = rig.producer().await;
    let lpops = support::calls(&server, "lpop");
    // With both optional fields, so that each is checked in the record handed over.
    let mut job = new_job("n1", JobKind::Upload, Some("lane-n1"), &Behavior::Ok);
    job.request_id = Some(queue_core::RequestId::new("req-n1").expect("request id"));
    producer.submit(rig.store.clone(), job).await.expect("submit");

    assert_eq!(support::calls(&server, "lpop"), lpops, "no job was popped from the ready list");
    assert_eq!(server.command(&["LLEN", &keys.ready(JobKind::Upload)]), "0");
    assert_eq!(handed_to(&server, &rig, JobKind::Upload, "w"), "1");
    assert_eq!(server.command(&["ZCARD", &keys.idle(JobKind::Upload)]), "0", "the registration served once");
    let lease = RedisBackendConfig::default().short_lease.as_millis();
    let until = (2_000_000 + lease).to_string();
    assert_eq!(server.command(&["ZSCORE", &keys.inflight(), "n1"]), until, "the short lease");
    let (values, handed_until) = first_handed(&server, &rig, "w");
    assert_eq!(handed_until, until);
    let mut hmget = vec!["HMGET".to_string(), format!("{}job:n1", keys.prefix())];
    hmget.extend(HANDED_FIELDS.iter().map(|f| (*f).to_string()));
    let stored = server.command(&hmget.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(values.join("\n"), stored, "the worker is handed the record the store holds");
    let record = rig.store.get(&id("n1")).await.expect("get").expect("record");
    assert_eq!(
        (record.status, record.lease_epoch, record.attempt, record.created_at_ms, record.seq),
        (JobStatus::Processing, 1, 1, 2_000_000, 1),
        "claimed as a first claim leaves a job"
    );
    assert_eq!(record.request_id.map(|r| r.to_string()), Some("req-n1".into()));
    assert_eq!(record.lane.map(|l| l.to_string()), Some("lane-n1".into()));
    let counts = rig.store.counts(JobKind::Upload).await.expect("counts");
    assert_eq!((counts.queued, counts.processing), (0, 1));

    // The same id again: refused, nothing handed, the registration (made again) left alone.
    server.command(&["ZADD", &keys.idle(JobKind::Upload), "2060000", "w"]);
    let again = producer.submit(rig.store.clone(), new_job("n1", JobKind::Upload, None, &Behavior::Ok)).await;
    assert!(matches!(again, Err(queue_core::QueueError::AlreadyExists { .. })), "{again:?}");
    assert_eq!(handed_to(&server, &rig, JobKind::Upload, "w"), "1");
    assert_eq!(server.command(&["ZCARD", &keys.idle(JobKind::Upload)]), "1");
    producer.stop().await.expect("stop producer");
}

/// A submit that finds a worker idle but a job of its kind ready hands the worker that older job
/// and leaves its own in the ready list: first come, first served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_handed_the_oldest_ready_job_not_the_one_just_submitted() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "handoff-fifo");
    let keys = TenantKeys::new(&rig.tenant);
    let producer = rig.producer().await;
    producer
        .submit(rig.store.clone(), new_job("old", JobKind::Upload, None, &Behavior::Ok))
        .await
        .expect("submit");
    let far = (SystemClock.now_ms() + 60_000).to_string();
    server.command(&["ZADD", &keys.idle(JobKind::Upload), &far, "w"]);
    producer
        .submit(rig.store.clone(), new_job("new", JobKind::Upload, None, &Behavior::Ok))
        .await
        .expect("submit");

    let (values, _) = first_handed(&server, &rig, "w");
    let id_at = HANDED_FIELDS.iter().position(|f| *f == "id").expect("the id is handed");
    assert_eq!(values[id_at], "old", "the older job is handed over");
    assert_eq!(server.command(&["LRANGE", &keys.ready(JobKind::Upload), "0", "-1"]), "new");
    assert_eq!(status(&rig.store, "old").await, JobStatus::Processing);
    assert_eq!(status(&rig.store, "new").await, JobStatus::Queued);
    producer.stop().await.expect("stop producer");
}
