//! Outcomes that finish at about the same time share one `complete_many` call, and every job
//! still runs exactly once. Counted with `INFO commandstats` on a server of this test's own (the
//! shared one serves other tests at the same time).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lane_store::{RedisPool, TenantKeys};
use queue_core::conformance::{Behavior, RecordingHandler, eventually, new_job};
use queue_core::{
    Clock, HandlerError, JobHandler, JobId, JobKind, JobRecord, JobStatus, LaneId, LaneStoreConfig,
    LimitClass, ManualClock, NewJob, QueueBackend, QueueError, RequestId, SystemClock,
};
use queue_redis::{RedisBackendConfig, RedisQueueBackend};
use redis_harness::{LossyProxy, RedisServer};
use serde_json::Value;

mod support;
use support::{Rig, calls, id, queue_uploads, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_sends_many_outcomes_per_call_and_runs_each_job_once() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "batching");
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let backend = rig.backend(RedisBackendConfig { upload_concurrency: 50, ..RedisBackendConfig::default() });
    // A producer that runs no workers queues the backlog: the worker then drains it at full speed.
    let producer = rig.producer().await;
    let jobs = 3_000;
    let ids: Vec<JobId> = (0..jobs).map(|i| JobId::new(format!("b{i}")).expect("id")).collect();
    for chunk in ids.chunks(500) {
        let batch =
            chunk.iter().map(|id| new_job(id.as_str(), JobKind::Upload, None, &Behavior::Ok)).collect();
        for r in producer.submit_many(store.clone(), batch).await.expect("submit_many") {
            r.expect("accepted");
        }
    }
    let scripts_before = calls(&server, "evalsha");
    let (hincrby_before, hmget_before) = (calls(&server, "hincrby"), calls(&server, "hmget"));
    let hget_before = calls(&server, "hget");
    let sets_before = calls(&server, "zadd") + calls(&server, "zrem");
    backend.start().await.expect("start");
    // Polled with ZCARD of the done index, not the store's counts (an HGET of the running
    // counter each), so that the HGETs counted below are the drain's own.
    let done = TenantKeys::new(&rig.tenant).finished(JobKind::Upload, JobStatus::Done);
    eventually("every job is done", Duration::from_secs(60), || async {
        server.command(&["ZCARD", &done]) == jobs.to_string()
    })
    .await;
    let scripts = calls(&server, "evalsha") - scripts_before;
    let hincrby = calls(&server, "hincrby") - hincrby_before;
    let hmget = calls(&server, "hmget") - hmget_before;
    let hget = calls(&server, "hget") - hget_before;
    let sets = calls(&server, "zadd") + calls(&server, "zrem") - sets_before;
    for id in &ids {
        assert_eq!(handler.invocations(id), 1, "{id} ran once");
    }
    // Without batching a drain takes one script call per job (finish-and-claim-next).
    assert!(scripts < jobs as u64 / 2, "{scripts} script calls for {jobs} jobs: outcomes were not batched");
    // The hot path keeps one counter (running jobs: up at the claim, down at the outcome) and
    // reads a job's fields once per step (the claim's HMGET of the claimed fields is also its
    // answer; the outcome's fence is one HGET of the record's state): queued and finished
    // counts are index sizes.
    assert!(hincrby <= 2 * jobs as u64, "{hincrby} HINCRBY for {jobs} jobs: more than one counter per step");
    assert!(hmget <= jobs as u64, "{hmget} HMGET for {jobs} jobs: more than one claim read per job");
    assert!(hget <= jobs as u64, "{hget} HGET for {jobs} jobs: more than one fence read per job");
    // Writes to a set-wide key (the counter; the lease, pending and finished indexes) are
    // gathered per call: at most one per key and call, not one per job. A claim writes the
    // counter and the lease index; an outcome call writes the counter and three indexes, and
    // its claims the counter and the lease index again.
    assert!(hincrby <= 2 * scripts, "{hincrby} HINCRBY in {scripts} script calls: one per job, not per call");
    assert!(sets <= 4 * scripts, "{sets} ZADD + ZREM in {scripts} script calls: one per job, not per call");
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lane_does_not_keep_its_slot_while_another_lane_waits() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "fairness");
    let (store, handler) = (rig.store.clone(), &rig.handler);
    // One chat slot: the order in which it takes jobs is the order they start.
    let backend = rig.backend(RedisBackendConfig { chat_concurrency: 1, ..RedisBackendConfig::default() });
    backend.start().await.expect("start");
    let chat = |id: &str, lane: &str, behavior: &Behavior| new_job(id, JobKind::Chat, Some(lane), behavior);
    let submit = |job: NewJob| {
        let (backend, store) = (backend.clone(), store.clone());
        async move { backend.submit(store, job).await.expect("submit") }
    };
    submit(chat("a1", "student:a:main", &Behavior::GateFirst("a1".into()))).await;
    eventually("a1 started", Duration::from_secs(20), || async {
        handler.invocations(&JobId::new("a1").expect("id")) == 1
    })
    .await;
    submit(chat("a2", "student:a:main", &Behavior::Ok)).await;
    submit(chat("a3", "student:a:main", &Behavior::Ok)).await;
    submit(chat("b1", "student:b:main", &Behavior::Ok)).await;
    handler.open("a1");
    let b1 = JobId::new("b1").expect("id");
    let a3 = JobId::new("a3").expect("id");
    eventually("every job ran", Duration::from_secs(20), || async {
        handler.invocations(&b1) == 1 && handler.invocations(&a3) == 1
    })
    .await;
    let starts: Vec<String> =
        handler.events().into_iter().filter(|e| e.start).map(|e| e.job.to_string()).collect();
    // b1 was waiting for a worker when a1 finished: it goes before lane a's next job.
    assert_eq!(starts, vec!["a1", "b1", "a2", "a3"]);
    backend.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_jobs_lease_is_the_lane_stores_claim_ttl_not_the_non_chat_lease() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let ttl = 5_000;
    let lanes = LaneStoreConfig { claim_ttl_ms: ttl, ..LaneStoreConfig::default() };
    let rig = Rig::with(&server, "chat-lease", Arc::new(clock.clone()), lanes);
    let (store, handler, keys) = (rig.store.clone(), &rig.handler, TenantKeys::new(&rig.tenant));
    // The non-chat lease is twelve times the claim TTL: a chat claim made under it would show.
    let backend = rig.backend(RedisBackendConfig {
        chat_concurrency: 1,
        lease: Duration::from_millis(12 * ttl),
        ..RedisBackendConfig::default()
    });
    backend.start().await.expect("start");
    let held = |id: &str| new_job(id, JobKind::Chat, Some("student:a:main"), &Behavior::GateFirst(id.into()));
    let lease_of_lane = || server.command(&["ZSCORE", &keys.leases(), "student:a:main"]);
    backend.submit(store.clone(), held("first")).await.expect("submit first");
    backend.submit(store.clone(), held("second")).await.expect("submit second");
    let started = |id: &'static str| {
        let id = JobId::new(id).expect("id");
        move || {
            let id = id.clone();
            async move { handler.invocations(&id) == 1 }
        }
    };
    // `first` was claimed by the submit (the lane was idle) and started by `claim_chat`.
    eventually("first started", Duration::from_secs(20), started("first")).await;
    assert_eq!(lease_of_lane(), (1_000_000 + ttl).to_string(), "first's claim, as claim_chat left it");
    clock.advance(1_000);
    handler.open("first");
    // `second` is claimed by `complete_many` when `first` ends, under a lease from now.
    eventually("second started", Duration::from_secs(20), started("second")).await;
    assert_eq!(lease_of_lane(), (1_001_000 + ttl).to_string(), "second's claim, made by complete_many");
    handler.open("second");
    backend.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_share_script_calls_and_each_gets_its_own_answer() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "submits");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let upload = |id: String| new_job(&id, JobKind::Upload, None, &Behavior::Ok);
    let producers = 50;
    let per_producer = 40;
    let scripts_before = calls(&server, "evalsha");
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let (producer, store) = (producer.clone(), store.clone());
        tasks.spawn(async move {
            let mut answers = Vec::new();
            for i in 0..per_producer {
                // Every producer also submits one id that producer 0 takes: exactly one wins.
                let id = if i == 0 { "shared".to_owned() } else { format!("p{p}-{i}") };
                let answer = producer.submit(store.clone(), upload(id.clone())).await;
                answers.push((id, answer.map(|s| s.record.id.to_string())));
            }
            answers
        });
    }
    let mut accepted = 0;
    let mut shared_accepted = 0;
    while let Some(answers) = tasks.join_next().await {
        for (id, answer) in answers.expect("a producer") {
            match answer {
                Ok(got) => {
                    assert_eq!(got, id, "each submit gets the answer for its own job");
                    accepted += 1;
                    shared_accepted += usize::from(id == "shared");
                }
                Err(QueueError::AlreadyExists { job }) => assert_eq!(job.as_str(), "shared"),
                Err(e) => panic!("{id}: {e}"),
            }
        }
    }
    let scripts = calls(&server, "evalsha") - scripts_before;
    let submits = producers * per_producer;
    assert_eq!(shared_accepted, 1, "one of the {producers} submits of the same id is accepted");
    assert_eq!(accepted, submits - producers + 1);
    assert_eq!(store.counts(JobKind::Upload).await.expect("counts").queued, accepted as u64);
    // One call per submit without combining; 50 producers at once share calls.
    assert!(scripts < submits as u64 / 2, "{scripts} script calls for {submits} concurrent submits");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_writes_one_command_per_job_and_keeps_its_order() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "batch");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let plain = |id: &str, kind: JobKind| new_job(id, kind, None, &Behavior::Ok);
    producer.submit(store.clone(), plain("old", JobKind::Upload)).await.expect("an earlier job");
    // Taken ids: one by an existing record, one by an earlier job of the same batch.
    let batch = [
        ("u1", JobKind::Upload),
        ("old", JobKind::Upload),
        ("e1", JobKind::Exam),
        ("u2", JobKind::Upload),
        ("u1", JobKind::Exam),
        ("u3", JobKind::Upload),
        ("e2", JobKind::Exam),
    ];
    let commands = ["exists", "hset", "incr", "incrby", "zadd", "rpush", "lpush"];
    let before: Vec<u64> = commands.iter().map(|c| calls(&server, c)).collect();
    let answers = producer
        .submit_many(store.clone(), batch.iter().map(|(id, kind)| plain(id, *kind)).collect())
        .await
        .expect("the batch");
    let spent: Vec<u64> = commands.iter().zip(&before).map(|(c, b)| calls(&server, c) - b).collect();

    let mut seqs = Vec::new();
    for ((id, _), answer) in batch.iter().zip(&answers) {
        match answer {
            Ok(s) => {
                assert_eq!(s.record.id.as_str(), *id);
                let stored = store.get(&s.record.id).await.expect("get").expect("a record");
                assert_eq!(stored.seq, s.record.seq, "{id}: the answer names the stored seq");
                seqs.push(s.record.seq);
            }
            Err(QueueError::AlreadyExists { job }) => assert!(["old", "u1"].contains(&job.as_str()), "{job}"),
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert!(matches!(&answers[1], Err(QueueError::AlreadyExists { .. })), "an existing id is refused");
    assert!(matches!(&answers[4], Err(QueueError::AlreadyExists { .. })), "an id taken earlier in the batch");
    assert_eq!(
        store.get(&JobId::new("u1").expect("id")).await.expect("get").expect("u1").kind,
        JobKind::Upload
    );
    // Five new jobs, numbered one after another in the batch's order.
    let first = seqs[0];
    assert_eq!(seqs, (first..first + 5).collect::<Vec<_>>());
    // One EXISTS for the whole batch, and since an id is taken, one per distinct id; one HSET per
    // new job; per batch one INCRBY; per kind one ZADD, one RPUSH and one wake-up.
    assert_eq!(spent, vec![1 + 6, 5, 0, 1, 2, 2, 2], "calls of {commands:?}");
    let keys = TenantKeys::new(&rig.tenant);
    assert_eq!(server.command(&["LRANGE", &keys.ready(JobKind::Upload), "0", "-1"]), "old\nu1\nu2\nu3");
    assert_eq!(server.command(&["LRANGE", &keys.ready(JobKind::Exam), "0", "-1"]), "e1\ne2");
    let uploads = store.counts(JobKind::Upload).await.expect("counts");
    assert_eq!(uploads.queued, 4);
    assert_eq!(store.counts(JobKind::Exam).await.expect("counts").queued, 2);
    // A batch whose ids are all free (the usual case): one EXISTS in all, one HSET per job.
    let before: Vec<u64> = commands.iter().map(|c| calls(&server, c)).collect();
    let free = [("f1", JobKind::Upload), ("f2", JobKind::Exam), ("f3", JobKind::Upload)];
    for answer in producer
        .submit_many(store.clone(), free.iter().map(|(id, kind)| plain(id, *kind)).collect())
        .await
        .expect("the batch")
    {
        answer.expect("a free id is accepted");
    }
    let spent: Vec<u64> = commands.iter().zip(&before).map(|(c, b)| calls(&server, c) - b).collect();
    assert_eq!(spent, vec![1, 3, 0, 1, 2, 2, 2], "calls of {commands:?}");
    assert_eq!(store.counts(JobKind::Upload).await.expect("counts").queued, 6);
    producer.stop().await.expect("stop producer");
}

/// The record's hash as `HGETALL` gives it, sorted by field, without what differs between two
/// jobs of one test (id, seq, times: the last part of `state`, and the first two parts of
/// `fixed`).
fn record_fields(server: &RedisServer, key: &str) -> Vec<(String, String)> {
    let reply = server.command(&["HGETALL", key]);
    let lines: Vec<&str> = reply.lines().collect();
    let mut fields: Vec<(String, String)> = lines
        .chunks(2)
        .map(|pair| (pair[0].to_owned(), pair.get(1).copied().unwrap_or_default().to_owned()))
        .filter(|(f, _)| f != "id")
        .map(|(f, v)| match f.as_str() {
            "fixed" => (f, v.splitn(3, '|').nth(2).expect("seq|created|rest").to_owned()),
            "state" => (f, v.rsplit_once('|').expect("status|epoch|attempt|updated").0.to_owned()),
            _ => (f, v),
        })
        .collect();
    fields.sort();
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_submit_writes_what_a_batch_writes_with_one_command_each() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "lone");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let plain = |id: &str| new_job(id, JobKind::Upload, None, &Behavior::Ok);
    let commands = ["exists", "incr", "incrby", "hset", "zadd", "rpush", "lpush"];
    let before: Vec<u64> = commands.iter().map(|c| calls(&server, c)).collect();
    let lone = producer.submit(store.clone(), plain("lone")).await.expect("a lone submit");
    let spent: Vec<u64> = commands.iter().zip(&before).map(|(c, b)| calls(&server, c) - b).collect();
    // A job alone takes the one-job path: INCR, not a batch's INCRBY, and one of each write.
    assert_eq!(spent, vec![1, 1, 0, 1, 1, 1, 1], "calls of {commands:?}");
    let batch = producer.submit_many(store.clone(), vec![plain("b1"), plain("b2")]).await.expect("a batch");
    let b1 = batch[0].as_ref().expect("b1");
    assert_eq!(b1.record.seq, lone.record.seq + 1, "both paths number from one counter");
    let err = producer.submit(store.clone(), plain("lone")).await.expect_err("a taken id");
    assert!(matches!(err, QueueError::AlreadyExists { .. }), "{err}");

    let keys = TenantKeys::new(&rig.tenant);
    let (lone_key, b1_key) = (keys.job(&lone.record.id), keys.job(&b1.record.id));
    let fields = record_fields(&server, &lone_key);
    assert!(fields.contains(&("state".into(), "queued|0|0".into())), "{fields:?}");
    assert_eq!(fields, record_fields(&server, &b1_key), "the same record either way");
    for (key, id, seq) in [(&lone_key, "lone", lone.record.seq), (&b1_key, "b1", b1.record.seq)] {
        // Numbers are stored as integer text, in the record and as the pending index's score.
        let fixed = server.command(&["HGET", key, "fixed"]);
        assert_eq!(fixed.split('|').next(), Some(seq.to_string().as_str()), "{fixed}");
        assert_eq!(server.command(&["ZSCORE", &keys.pending(JobKind::Upload), id]), seq.to_string());
    }
    assert_eq!(server.command(&["LRANGE", &keys.ready(JobKind::Upload), "0", "-1"]), "lone\nb1\nb2");
    assert_eq!(server.command(&["LLEN", &keys.signal(JobKind::Upload)]), "3", "a wake-up token per job");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_up_tokens_nobody_takes_are_cut_back_to_64_once_they_pass_128() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "tokens");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let signal = TenantKeys::new(&rig.tenant).signal(JobKind::Upload);
    let trims = calls(&server, "ltrim");
    // No worker takes the tokens: each lone submit leaves one, and the list is not trimmed
    // while it holds at most 128 (one command per submit, not two).
    for i in 1..=129 {
        producer
            .submit(store.clone(), new_job(&format!("t{i}"), JobKind::Upload, None, &Behavior::Ok))
            .await
            .expect("a lone submit");
        let len: u64 = server.command(&["LLEN", &signal]).parse().expect("a length");
        if i <= 128 {
            assert_eq!(len, i, "submit {i}: every token kept so far");
            assert_eq!(calls(&server, "ltrim"), trims, "submit {i}: no trim yet");
        } else {
            assert_eq!(len, 64, "the push past 128 cuts the list back to 64");
            assert_eq!(calls(&server, "ltrim"), trims + 1, "one trim");
        }
    }
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_chat_worker_pushes_its_dispatches_once_per_call_and_keeps_every_lane_in_order() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-batching");
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let producer = rig.producer().await;
    let (lanes, per_lane) = (100, 5);
    for i in 0..per_lane {
        for l in 0..lanes {
            let chat = new_job(
                &format!("l{l}-{i}"),
                JobKind::Chat,
                Some(&format!("student:{l}:main")),
                &Behavior::Ok,
            );
            producer.submit(store.clone(), chat).await.expect("submit");
        }
    }
    let jobs = lanes * per_lane;
    let counted = ["evalsha", "rpush", "lpush", "hincrby", "zadd"];
    let before: Vec<u64> = counted.iter().map(|c| calls(&server, c)).collect();
    let backend = rig.backend(RedisBackendConfig { chat_concurrency: 50, ..RedisBackendConfig::default() });
    backend.start().await.expect("start");
    eventually("every chat job is done", Duration::from_secs(60), || async {
        store.counts(JobKind::Chat).await.expect("counts").done == jobs as u64
    })
    .await;
    let spent: Vec<u64> = counted.iter().zip(&before).map(|(c, b)| calls(&server, c) - b).collect();
    let (scripts, rpush, lpush, hincrby, zadd) = (spent[0], spent[1], spent[2], spent[3], spent[4]);

    // Each lane ran its jobs once each, in order, one at a time.
    let events = handler.events();
    for l in 0..lanes {
        let lane = format!("student:{l}:main");
        let seen: Vec<(String, bool)> = events
            .iter()
            .filter(|e| e.lane.as_deref() == Some(lane.as_str()))
            .map(|e| (e.job.to_string(), e.start))
            .collect();
        let expected: Vec<(String, bool)> =
            (0..per_lane).flat_map(|i| [(format!("l{l}-{i}"), true), (format!("l{l}-{i}"), false)]).collect();
        assert_eq!(seen, expected, "{lane}: in order, one at a time, each once");
    }
    // With 100 lanes waiting for 50 slots, a finished job's successor goes to the back of
    // ready:chat: one dispatch per job after each lane's first. One by one, each would take an
    // RPUSH and a wake-up (LPUSH); they are pushed once per outcome call instead, and the
    // running counter is written once per call too.
    let dispatches = (jobs - lanes) as u64;
    assert!(rpush + lpush < dispatches, "{rpush} RPUSH and {lpush} LPUSH for {dispatches} dispatches");
    assert!(hincrby < jobs as u64, "{hincrby} HINCRBY for {jobs} jobs: one per job, not per call");
    // The lease index too: a lane's next claim and a dispatch's start add their entries with the
    // call's other writes (one ZADD per job before), and a start leaves a fresh lease alone.
    assert!(zadd < dispatches / 2, "{zadd} ZADD for {dispatches} dispatches: one per job, not per call");
    // The slot whose job made a dispatch takes the front of ready:chat in the same call: every
    // dispatch has a taker there, so no idle worker is woken (and no claim round trip is spent).
    // The old script pushed a wake-up per call with a dispatch (43 here). On a loaded machine a
    // few were still seen (3, once; not traced), hence a bound rather than none.
    assert!(
        lpush <= 10,
        "{lpush} wake-ups pushed in a drain where every finishing slot claims ({scripts} script calls)"
    );
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_listed_twice_in_one_claim_is_taken_once() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "duplicates");
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let producer = rig.producer().await;
    let id = JobId::new("dup").expect("id");
    producer
        .submit(store.clone(), new_job("dup", JobKind::Upload, None, &Behavior::Ok))
        .await
        .expect("submit");
    // Two more entries of the same job, as a reaper's re-queue can leave: one claim pops all three,
    // and the leases it takes are written only at its end.
    let ready = TenantKeys::new(&rig.tenant).ready(JobKind::Upload);
    server.command(&["RPUSH", &ready, "dup", "dup"]);
    let backend = rig.backend(RedisBackendConfig { upload_concurrency: 5, ..RedisBackendConfig::default() });
    backend.start().await.expect("start");
    eventually("the job is done and its entries are gone", Duration::from_secs(20), || async {
        store.get(&id).await.expect("get").is_some_and(|r| r.status == queue_core::JobStatus::Done)
            && server.command(&["LLEN", &ready]) == "0"
    })
    .await;
    assert_eq!(handler.invocations(&id), 1, "the job ran once");
    assert_eq!(store.get(&id).await.expect("get").expect("dup").attempt, 1, "one attempt");
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_start_restarts_a_lease_that_ran_down_and_leaves_a_fresh_one_alone() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    // The lane store claims for 10 s (the non-chat lease of the worker, 20 s, plays no part).
    let lanes = LaneStoreConfig { claim_ttl_ms: 10_000, ..LaneStoreConfig::default() };
    let rig = Rig::with(&server, "lease-restart", Arc::new(clock.clone()), lanes);
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let producer = rig.producer().await;
    let chat =
        |id: &str, lane: &str| new_job(id, JobKind::Chat, Some(lane), &Behavior::GateFirst(id.to_owned()));
    // Lane a is claimed at t0 and waits 5.5 s, more than half its claim, for a worker; lane b is
    // claimed 0.5 s before the worker starts.
    producer.submit(store.clone(), chat("a1", "student:a:main")).await.expect("submit a1");
    clock.advance(5_000);
    producer.submit(store.clone(), chat("b1", "student:b:main")).await.expect("submit b1");
    let b_claimed_at = 1_005_000;
    clock.advance(500);
    let started_at = 1_005_500;
    let backend = rig.backend(RedisBackendConfig {
        chat_concurrency: 2,
        lease: Duration::from_millis(20_000),
        ..RedisBackendConfig::default()
    });
    backend.start().await.expect("start");
    let (a1, b1) = (JobId::new("a1").expect("id"), JobId::new("b1").expect("id"));
    eventually("both chat jobs started", Duration::from_secs(20), || async {
        handler.invocations(&a1) == 1 && handler.invocations(&b1) == 1
    })
    .await;
    let keys = TenantKeys::new(&rig.tenant);
    let lease_of = |lane: &str| {
        let lane = LaneId::new(lane).expect("lane");
        let active = server.command(&["HGET", &keys.lane_active(&lane), "deadline"]);
        let index = server.command(&["ZSCORE", &keys.leases(), lane.as_str()]);
        (active, index)
    };
    // More than half of a's claim was gone: its start gave it a whole claim TTL from the start.
    let restarted = (started_at + 10_000).to_string();
    assert_eq!(lease_of("student:a:main"), (restarted.clone(), restarted));
    // b's claim was whole (nine tenths of the TTL or more left): left as it was, no write.
    let claimed = (b_claimed_at + 10_000).to_string();
    assert_eq!(lease_of("student:b:main"), (claimed.clone(), claimed));
    handler.open("a1");
    handler.open("b1");
    eventually("both chat jobs done", Duration::from_secs(20), || async {
        store.counts(JobKind::Chat).await.expect("counts").done == 2
    })
    .await;
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A dispatch is pushed as `epoch:deadline|job|lane`, and a worker claims it without reading the
/// lane's claim (the record's epoch fences it). One pushed by a version before the deadline was
/// in the entry (`epoch|job|lane`) is still claimed, checked against the lane's claim: a current
/// one runs, a stale one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_in_the_format_before_its_deadline_was_in_it_is_still_claimed_and_checked() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let lanes = LaneStoreConfig { claim_ttl_ms: 10_000, ..LaneStoreConfig::default() };
    let rig = Rig::with(&server, "old-dispatch", Arc::new(clock.clone()), lanes);
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let producer = rig.producer().await;
    producer.submit(store.clone(), chat("a1", "student:a:main")).await.expect("submit a1");
    producer.submit(store.clone(), chat("b1", "student:b:main")).await.expect("submit b1");
    let keys = TenantKeys::new(&rig.tenant);
    let epoch_of =
        |lane: &str| server.command(&["HGET", &keys.lane_active(&LaneId::new(lane).expect("lane")), "epoch"]);
    let (a, b) = (epoch_of("student:a:main"), epoch_of("student:b:main"));
    assert_eq!(
        server.command(&["LRANGE", &keys.chat_ready(), "0", "-1"]),
        format!("{a}:1010000|a1|student:a:main\n{b}:1010000|b1|student:b:main")
    );
    // a1's dispatch as the version before wrote it, and a stale one of b1's in that format.
    server.command(&["LSET", &keys.chat_ready(), "0", &format!("{a}|a1|student:a:main")]);
    server.command(&["LPUSH", &keys.chat_ready(), &format!("{a}|b1|student:b:main")]);

    // Slots for all three entries: the worker's first claim takes them in one call.
    let backend = rig.backend(RedisBackendConfig { chat_concurrency: 4, ..RedisBackendConfig::default() });
    backend.start().await.expect("start");
    eventually("both chat jobs done", Duration::from_secs(20), || async {
        store.counts(JobKind::Chat).await.expect("counts").done == 2
    })
    .await;
    for id in ["a1", "b1"] {
        assert_eq!(handler.invocations(&JobId::new(id).expect("id")), 1, "{id} ran more than once");
    }
    assert_eq!(server.command(&["LLEN", &keys.chat_ready()]), "0");
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A chat job of `lane` for the chat-submit tests.
fn chat(id: &str, lane: &str) -> NewJob {
    new_job(id, JobKind::Chat, Some(lane), &Behavior::Ok)
}

/// What a chat submit may write, read straight from the server: the tenant's seq counter, its
/// pending chat index, the lane set, the lease index, the chat ready list, and `lane`'s active
/// claim and waiting jobs.
fn chat_state(server: &RedisServer, keys: &TenantKeys, lane: &str) -> Vec<String> {
    let lane = LaneId::new(lane).expect("lane");
    [
        vec!["GET", &keys.seq()],
        vec!["ZRANGE", &keys.pending(JobKind::Chat), "0", "-1", "WITHSCORES"],
        vec!["ZRANGE", &keys.lanes(), "0", "-1", "WITHSCORES"],
        vec!["ZRANGE", &keys.leases(), "0", "-1", "WITHSCORES"],
        vec!["LRANGE", &keys.chat_ready(), "0", "-1"],
        vec!["HGETALL", &keys.lane_active(&lane)],
        vec!["LRANGE", &keys.lane_waiting(&lane), "0", "-1"],
    ]
    .iter()
    .map(|args| server.command(args))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_submit_is_one_script_call_that_writes_the_record_create_writes() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-one-call");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let lane = "student:s1:main";
    // The first submit loads the script (EVALSHA, NOSCRIPT, SCRIPT LOAD): count the second.
    producer.submit(store.clone(), chat("c1", lane)).await.expect("submit c1");
    let commands = ["evalsha", "eval", "hgetall", "del", "exists", "hmget", "incr", "hset", "zadd", "rpush"];
    let before: Vec<u64> = commands.iter().map(|c| calls(&server, c)).collect();
    let c2 = producer.submit(store.clone(), chat("c2", lane)).await.expect("submit c2");
    let spent: Vec<u64> = commands.iter().zip(&before).map(|(c, b)| calls(&server, c) - b).collect();
    // One script, nothing read back or taken back; inside it one EXISTS (the id checked free
    // before the lane, which then need not read the record's state), the seq, the record, its
    // pending-index entry and its place among the lane's waiting jobs.
    assert_eq!(spent, vec![1, 0, 0, 0, 1, 0, 1, 1, 1, 1], "calls of {commands:?}");
    assert_eq!(c2.record.seq, 2);
    let receipt = c2.lane.expect("a lane receipt");
    assert_eq!((receipt.lane_queue_position, receipt.lane_queue_size), (1, 2));
    assert!(receipt.lane_active && !receipt.dispatched);
    assert_eq!(producer.stats().enqueued, 2, "each submit counts as enqueued");
    // The record is the one the job store's own create writes (id, seq and times aside).
    let keys = TenantKeys::new(&rig.tenant);
    let created = store.create(chat("made", lane)).await.expect("create");
    assert_eq!(
        record_fields(&server, &keys.job(&c2.record.id)),
        record_fields(&server, &keys.job(&created.id)),
        "the same record either way"
    );
    assert_eq!(store.get(&c2.record.id).await.expect("get").expect("c2"), c2.record, "the answer is stored");
    assert_eq!(server.command(&["ZSCORE", &keys.pending(JobKind::Chat), "c2"]), "2");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_submit_into_a_full_lane_is_refused_and_writes_nothing() {
    let server = RedisServer::start();
    let lanes = LaneStoreConfig { max_queue: 1, ..LaneStoreConfig::default() };
    let rig = Rig::with(&server, "chat-full", Arc::new(SystemClock), lanes);
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let lane = "student:s1:main";
    // c1 runs (claimed), c2 waits: the lane holds max_queue waiting jobs.
    producer.submit(store.clone(), chat("c1", lane)).await.expect("submit c1");
    producer.submit(store.clone(), chat("c2", lane)).await.expect("submit c2");
    let keys = TenantKeys::new(&rig.tenant);
    let state = chat_state(&server, &keys, lane);
    let scripts = calls(&server, "evalsha");
    let err = producer.submit(store.clone(), chat("c3", lane)).await.expect_err("a full lane");
    let lane_id = LaneId::new(lane).expect("lane");
    assert_eq!(err, QueueError::LaneFull { lane: lane_id.clone(), max: 1 }, "the lane store's error");
    assert_eq!(calls(&server, "evalsha") - scripts, 1, "one script call");
    // No record, no pending-index entry, no seq taken, nothing in the lane.
    assert_eq!(store.get(&JobId::new("c3").expect("id")).await.expect("get"), None);
    assert_eq!(server.command(&["EXISTS", &keys.job(&JobId::new("c3").expect("id"))]), "0");
    assert_eq!(chat_state(&server, &keys, lane), state, "nothing written");
    // The same through a batch, whose other jobs are still accepted.
    let batch = vec![chat("c4", lane), new_job("u1", JobKind::Upload, None, &Behavior::Ok)];
    let answers = producer.submit_many(store.clone(), batch).await.expect("the batch");
    assert_eq!(
        answers[0].as_ref().expect_err("a full lane"),
        &QueueError::LaneFull { lane: lane_id, max: 1 }
    );
    assert!(answers[1].is_ok(), "the upload is accepted");
    assert_eq!(store.get(&JobId::new("c4").expect("id")).await.expect("get"), None);
    assert_eq!(producer.stats().enqueued, 3, "c1, c2 and the upload");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_submit_with_a_taken_id_is_refused_and_leaves_every_lane_alone() {
    let server = RedisServer::start();
    let lanes = LaneStoreConfig { max_queue: 1, ..LaneStoreConfig::default() };
    let rig = Rig::with(&server, "chat-taken", Arc::new(SystemClock), lanes);
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let keys = TenantKeys::new(&rig.tenant);
    let (busy, idle) = ("student:s1:main", "student:s2:main");
    producer.submit(store.clone(), chat("c1", busy)).await.expect("submit c1");
    producer.submit(store.clone(), chat("c2", busy)).await.expect("submit c2");
    let upload = new_job("u0", JobKind::Upload, None, &Behavior::Ok);
    producer.submit(store.clone(), upload).await.expect("submit u0");
    let (busy_state, idle_state) = (chat_state(&server, &keys, busy), chat_state(&server, &keys, idle));
    let c1 = store.get(&JobId::new("c1").expect("id")).await.expect("get").expect("c1");
    // A taken id is refused as taken, wherever it is sent: into an idle lane (which would claim
    // it), into the lane where it runs or waits, or into a full lane (the id is judged first,
    // here one an upload took): nothing written anywhere.
    for (id, lane) in [("c1", idle), ("c1", busy), ("c2", busy), ("u0", busy)] {
        let err = producer.submit(store.clone(), chat(id, lane)).await.expect_err("a taken id");
        assert_eq!(err, QueueError::AlreadyExists { job: JobId::new(id).expect("id") }, "{id} into {lane}");
    }
    assert_eq!(chat_state(&server, &keys, busy), busy_state, "the busy lane, seq and indexes as they were");
    assert_eq!(chat_state(&server, &keys, idle), idle_state, "the idle lane still has no key");
    assert_eq!(store.get(&c1.id).await.expect("get").expect("c1"), c1, "the record is untouched");
    // In a batch, a taken id is refused on its own and the next job still takes the idle lane.
    let answers = producer
        .submit_many(store.clone(), vec![chat("c2", idle), chat("c3", idle)])
        .await
        .expect("the batch");
    assert_eq!(
        answers[0].as_ref().expect_err("a taken id"),
        &QueueError::AlreadyExists { job: JobId::new("c2").expect("id") }
    );
    let c3 = answers[1].as_ref().expect("c3 is accepted");
    assert_eq!(c3.record.seq, c1.seq + 3, "c1, c2, u0, then c3: the refusals took no seq");
    let idle_lane = LaneId::new(idle).expect("lane");
    assert_eq!(server.command(&["HGET", &keys.lane_active(&idle_lane), "job"]), "c3", "c3 claimed it");
    assert_eq!(server.command(&["LLEN", &keys.lane_waiting(&idle_lane)]), "0", "c2 is not behind it");
    assert_eq!(chat_state(&server, &keys, busy)[5..], busy_state[5..], "the busy lane as it was");
    assert_eq!(server.command(&["ZRANGE", &keys.pending(JobKind::Chat), "0", "-1"]), "c1\nc2\nc3");
    assert_eq!(producer.stats().enqueued, 4, "c1, c2, u0 and c3");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_job_whose_lane_redis_cannot_read_fails_alone_and_the_rest_of_its_call_is_accepted() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-error");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let keys = TenantKeys::new(&rig.tenant);
    let broken = LaneId::new("student:broken:main").expect("lane");
    // The lane's waiting list holds a string: reading the lane fails with WRONGTYPE.
    server.command(&["SET", &keys.lane_waiting(&broken), "not a list"]);
    let batch = vec![
        chat("c1", "student:s1:main"),
        chat("bad", broken.as_str()),
        chat("c2", "student:s2:main"),
        new_job("u1", JobKind::Upload, None, &Behavior::Ok),
    ];
    let answers = producer.submit_many(store.clone(), batch).await.expect("the batch is answered per job");
    let ids: Vec<_> = answers.iter().map(|a| a.as_ref().map(|s| s.record.id.to_string())).collect();
    assert_eq!(ids[0].as_deref(), Ok("c1"));
    assert_eq!(ids[2].as_deref(), Ok("c2"), "the job after the failed one goes on");
    assert_eq!(ids[3].as_deref(), Ok("u1"));
    match &answers[1] {
        Err(QueueError::Storage(message)) => assert!(message.contains("WRONGTYPE"), "{message}"),
        other => panic!("the broken lane's job: {other:?}"),
    }
    // Accepted as answered: both records and their lanes; the failed job wrote nothing.
    assert_eq!(server.command(&["ZRANGE", &keys.pending(JobKind::Chat), "0", "-1"]), "c1\nc2");
    for (lane, job) in [("student:s1:main", "c1"), ("student:s2:main", "c2")] {
        let lane = LaneId::new(lane).expect("lane");
        assert_eq!(server.command(&["HGET", &keys.lane_active(&lane), "job"]), job);
    }
    assert_eq!(server.command(&["EXISTS", &keys.job(&JobId::new("bad").expect("id"))]), "0");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_submits_keep_their_lane_order_and_an_idle_lane_claims_its_first() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let lanes = LaneStoreConfig { claim_ttl_ms: 10_000, ..LaneStoreConfig::default() };
    let rig = Rig::with(&server, "chat-order", Arc::new(clock.clone()), lanes);
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let keys = TenantKeys::new(&rig.tenant);
    let lane = "student:s1:main";
    let lane_id = LaneId::new(lane).expect("lane");
    // Load the scripts first, so that each submit below counts one call.
    producer.submit(store.clone(), chat("warm", "student:warm:main")).await.expect("warm up");
    let upload = new_job("u0", JobKind::Upload, None, &Behavior::Ok);
    producer.submit(store.clone(), upload).await.expect("warm up");
    let scripts = calls(&server, "evalsha");
    let first = producer.submit(store.clone(), chat("c1", lane)).await.expect("submit c1");
    let second = producer.submit(store.clone(), chat("c2", lane)).await.expect("submit c2");
    let batch = vec![chat("c3", lane), new_job("u1", JobKind::Upload, None, &Behavior::Ok), chat("c4", lane)];
    let answers = producer.submit_many(store.clone(), batch).await.expect("the batch");
    // c1 and c2 one call each; the batch's two chat jobs one call, its upload another.
    assert_eq!(
        calls(&server, "evalsha") - scripts,
        4,
        "one script call per lone chat job, one for a batch's"
    );
    let receipts: Vec<_> = [Ok(first), Ok(second), answers[0].clone(), answers[2].clone()]
        .into_iter()
        .map(|s| {
            let r = s.expect("accepted").lane.expect("a lane receipt");
            (r.job_id.to_string(), r.lane_queue_position, r.lane_queue_size, r.dispatched)
        })
        .collect();
    assert_eq!(
        receipts,
        vec![
            ("c1".to_owned(), 0, 1, true),
            ("c2".to_owned(), 1, 2, false),
            ("c3".to_owned(), 2, 3, false),
            ("c4".to_owned(), 3, 4, false),
        ]
    );
    // c1 claimed the idle lane under the lane store's claim TTL, and was handed to the chat
    // workers; the others wait behind it in submission order.
    let epoch = server.command(&["HGET", &keys.lane_active(&lane_id), "epoch"]);
    assert_eq!(server.command(&["HGET", &keys.lane_active(&lane_id), "job"]), "c1");
    assert_eq!(server.command(&["HGET", &keys.lane_active(&lane_id), "deadline"]), "1010000");
    assert_eq!(server.command(&["ZSCORE", &keys.leases(), lane]), "1010000");
    assert_eq!(server.command(&["ZSCORE", &keys.lanes(), lane]), "0");
    assert_eq!(server.command(&["LRANGE", &keys.lane_waiting(&lane_id), "0", "-1"]), "c2\nc3\nc4");
    let ready = server.command(&["LRANGE", &keys.chat_ready(), "0", "-1"]);
    assert_eq!(ready.lines().last(), Some(format!("{epoch}:1010000|c1|{lane}").as_str()), "dispatched");
    assert_eq!(ready.lines().count(), 2, "one dispatch per claimed lane (warm, then c1)");
    assert_eq!(server.command(&["LLEN", &keys.signal(JobKind::Chat)]), "2", "a wake-up per dispatch");
    // Sequence numbers follow submission order.
    assert_eq!(server.command(&["ZRANGE", &keys.pending(JobKind::Chat), "0", "-1"]), "warm\nc1\nc2\nc3\nc4");
    assert_eq!(producer.stats().enqueued, 7, "warm, u0, c1 to c4 and u1");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chat_submits_share_script_calls_and_each_lane_keeps_its_order_and_its_cap() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "chat-submits");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let keys = TenantKeys::new(&rig.tenant);
    let max_queue = LaneStoreConfig::default().max_queue;
    // Each producer fills a lane of its own and submits two more than it takes (its active job
    // and `max_queue` waiting); its first submit is an id every producer submits.
    let (producers, per_producer) = (50, max_queue + 3);
    producer.submit(store.clone(), chat("warm", "student:warm:main")).await.expect("warm up");
    let scripts_before = calls(&server, "evalsha");
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let (producer, store) = (producer.clone(), store.clone());
        tasks.spawn(async move {
            let lane = format!("student:p{p}:main");
            let mut answers = Vec::new();
            for i in 0..per_producer {
                let id = if i == 0 { "shared".to_owned() } else { format!("p{p}-{i}") };
                let answer = producer.submit(store.clone(), chat(&id, &lane)).await;
                answers.push((id, answer));
            }
            (lane, answers)
        });
    }
    let (mut accepted, mut shared_accepted, mut full) = (0, 0, 0);
    while let Some(done) = tasks.join_next().await {
        let (lane, answers) = done.expect("a producer");
        let mut in_lane = Vec::new();
        for (id, answer) in answers {
            match answer {
                Ok(submitted) => {
                    assert_eq!(
                        submitted.record.id.as_str(),
                        id,
                        "each submit gets the answer for its own job"
                    );
                    let receipt = submitted.lane.expect("a lane receipt");
                    assert_eq!(receipt.lane_queue_position, in_lane.len(), "{id}: its place in {lane}");
                    in_lane.push(id.clone());
                    accepted += 1;
                    shared_accepted += usize::from(id == "shared");
                }
                Err(QueueError::AlreadyExists { job }) => assert_eq!(job.as_str(), "shared"),
                Err(QueueError::LaneFull { lane: got, max }) => {
                    assert_eq!((got.as_str(), max), (lane.as_str(), max_queue), "{id}");
                    assert_eq!(in_lane.len(), max_queue + 1, "{id}: refused only once the lane is full");
                    full += 1;
                }
                Err(e) => panic!("{id}: {e}"),
            }
        }
        // The lane holds what it accepted, in the order each was submitted.
        let lane_id = LaneId::new(&lane).expect("lane");
        assert_eq!(server.command(&["HGET", &keys.lane_active(&lane_id), "job"]), in_lane[0], "{lane}");
        assert_eq!(
            server.command(&["LRANGE", &keys.lane_waiting(&lane_id), "0", "-1"]),
            in_lane[1..].join("\n")
        );
    }
    let scripts = calls(&server, "evalsha") - scripts_before;
    let submits = producers * per_producer;
    assert_eq!(shared_accepted, 1, "one of the {producers} submits of the same id is accepted");
    assert_eq!(accepted, producers * (max_queue + 1), "every lane filled to its cap");
    assert_eq!(full, submits - accepted - (producers - 1), "the rest refused as full");
    assert_eq!(store.counts(JobKind::Chat).await.expect("counts").queued, accepted as u64 + 1, "and warm");
    // One call per submit without combining; 50 producers at once share calls.
    assert!(scripts < submits as u64 / 2, "{scripts} script calls for {submits} concurrent chat submits");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_a_worker_finished_has_no_ttl_and_the_retention_loop_deletes_it_after_the_retention_period()
{
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let rig = Rig::with(&server, "retention", Arc::new(clock.clone()), LaneStoreConfig::default());
    let (store, keys) = (rig.store.clone(), TenantKeys::new(&rig.tenant));
    let producer = rig.producer().await;
    let jobs = [
        new_job("up", JobKind::Upload, None, &Behavior::Ok),
        new_job("bad", JobKind::Exam, None, &Behavior::FailAlways),
        chat("talk", "student:a:main"),
    ];
    for job in jobs {
        producer.submit(store.clone(), job).await.expect("submit");
    }
    let retention = Duration::from_secs(3600);
    let backend = rig.backend(RedisBackendConfig {
        max_attempts: 1,
        retention,
        purge_interval: Duration::from_millis(20),
        ..RedisBackendConfig::default()
    });
    backend.start().await.expect("start");
    let finished = || async {
        let (up, exam, chat) = (
            store.counts(JobKind::Upload).await.expect("counts"),
            store.counts(JobKind::Exam).await.expect("counts"),
            store.counts(JobKind::Chat).await.expect("counts"),
        );
        (up.done, exam.failed, chat.done)
    };
    eventually("every job finished", Duration::from_secs(20), || async { finished().await == (1, 1, 1) })
        .await;
    // No TTL: the records stay, whatever Redis's own clock says, until the purge of a later tick
    // finds them older than the retention period by the backend's clock.
    for id in ["up", "bad", "talk"] {
        let pttl = server.command(&["PTTL", &keys.job(&JobId::new(id).expect("id"))]);
        assert_eq!(pttl, "-1", "PTTL of the finished record {id}");
    }
    clock.advance(u64::try_from(retention.as_millis()).expect("ms") + 1);
    eventually(
        "the retention loop deleted the records and their index entries",
        Duration::from_secs(20),
        || async { finished().await == (0, 0, 0) },
    )
    .await;
    for id in ["up", "bad", "talk"] {
        assert!(store.get(&JobId::new(id).expect("id")).await.expect("get").is_none(), "{id} is gone");
    }
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_only_process_purges_what_the_workers_finished_once_they_are_gone() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let rig = Rig::with(&server, "retention-producers", Arc::new(clock.clone()), LaneStoreConfig::default());
    let store = rig.store.clone();
    let retention = Duration::from_secs(3600);
    let config = |run_workers| RedisBackendConfig {
        run_workers,
        retention,
        purge_interval: Duration::from_millis(20),
        ..RedisBackendConfig::default()
    };
    let workers = rig.backend(config(true));
    workers.start().await.expect("start workers");
    workers.submit(store.clone(), new_job("up", JobKind::Upload, None, &Behavior::Ok)).await.expect("submit");
    eventually("the job finished", Duration::from_secs(20), || async {
        store.counts(JobKind::Upload).await.expect("counts").done == 1
    })
    .await;
    workers.stop().await.expect("stop workers");
    // Only a producer-only process of the tenant runs from now on.
    let producer = rig.backend(config(false));
    producer.start().await.expect("start producer");
    clock.advance(u64::try_from(retention.as_millis()).expect("ms") + 1);
    eventually("the producer-only process purged the record", Duration::from_secs(20), || async {
        store.counts(JobKind::Upload).await.expect("counts").done == 0
    })
    .await;
    assert!(store.get(&JobId::new("up").expect("id")).await.expect("get").is_none());
    producer.stop().await.expect("stop producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_index_stays_a_skiplist_with_few_jobs_running_and_its_keeper_never_expires() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "keeper");
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let producer = rig.producer().await;
    producer
        .submit(store.clone(), new_job("held", JobKind::Upload, None, &Behavior::GateFirst("held".into())))
        .await
        .expect("submit");
    let backend = rig.backend(RedisBackendConfig { upload_concurrency: 2, ..RedisBackendConfig::default() });
    backend.start().await.expect("start");
    let held = JobId::new("held").expect("id");
    eventually("the job runs", Duration::from_secs(20), || async { handler.invocations(&held) == 1 }).await;
    let inflight = TenantKeys::new(&rig.tenant).inflight();
    // One lease: a listpack, were it not for the keeper (a member longer than 64 bytes).
    assert_eq!(server.command(&["OBJECT", "ENCODING", &inflight]), "skiplist");
    let members = server.command(&["ZRANGE", &inflight, "0", "-1", "WITHSCORES"]);
    let members: Vec<&str> = members.lines().collect();
    assert_eq!(members.len(), 4, "the lease and the keeper: {members:?}");
    assert_eq!(members[0], "held");
    assert!(members[2].len() > 64 && members[3] == "inf", "the keeper never expires: {members:?}");
    handler.open("held");
    eventually("the job is done", Duration::from_secs(20), || async {
        store.counts(JobKind::Upload).await.expect("counts").done == 1
    })
    .await;
    assert_eq!(server.command(&["ZCOUNT", &inflight, "-inf", "(+inf"]), "0", "no lease is left");
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// Runs jobs as [`RecordingHandler`] does, and keeps every record it is given.
#[derive(Debug, Default)]
struct KeepingHandler {
    inner: RecordingHandler,
    seen: Mutex<Vec<JobRecord>>,
}

impl KeepingHandler {
    /// The records given for `job`, one per attempt, in order.
    fn seen(&self, job: &str) -> Vec<JobRecord> {
        let seen = self.seen.lock().expect("seen");
        seen.iter().filter(|r| r.id.as_str() == job).cloned().collect()
    }
}

#[async_trait]
impl JobHandler for KeepingHandler {
    fn permits(&self, job: &JobRecord) -> Vec<LimitClass> {
        self.inner.permits(job)
    }

    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError> {
        self.seen.lock().expect("seen").push(job.clone());
        self.inner.handle(job).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_record_reaches_the_handler_as_the_store_holds_it_on_every_claim_path() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "claimed");
    let store = rig.store.clone();
    let producer = rig.producer().await;
    let job = |id: &str, kind, lane: Option<&str>, request: Option<&str>, behavior: &Behavior| NewJob {
        request_id: request.map(|r| RequestId::new(r).expect("request id")),
        ..new_job(id, kind, lane, behavior)
    };
    // One slot per kind, jobs queued before the worker starts: u1 comes from `claim_plain`, fails
    // once and comes back with its error; u2 and u3 from `complete_many`'s next claims. c1 (lane
    // l1) from `claim_chat`; c3 (lane l2) and then c2 from `complete_many`'s claim of the front of
    // ready:chat (c1's successor c2 goes to the back while c3 waits there); c4 from
    // `complete_many`'s start of c2's successor on the same slot (nothing else waits by then).
    let jobs = [
        job("u1", JobKind::Upload, None, Some("req-u1"), &Behavior::FailTimes(1)),
        job("u2", JobKind::Upload, None, None, &Behavior::Ok),
        job("u3", JobKind::Upload, None, Some("req-u3"), &Behavior::Ok),
        job("c1", JobKind::Chat, Some("l1"), Some("req-c1"), &Behavior::Ok),
        job("c2", JobKind::Chat, Some("l1"), None, &Behavior::Ok),
        job("c3", JobKind::Chat, Some("l2"), Some("req-c3"), &Behavior::Ok),
        job("c4", JobKind::Chat, Some("l1"), Some("req-c4"), &Behavior::Ok),
    ];
    for j in &jobs {
        producer.submit(store.clone(), j.clone()).await.expect("submit");
    }
    let handler = Arc::new(KeepingHandler::default());
    let backend = rig.backend_running(
        RedisBackendConfig {
            upload_concurrency: 1,
            chat_concurrency: 1,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            reaper_interval: Duration::from_millis(5),
            ..RedisBackendConfig::default()
        },
        handler.clone(),
    );
    backend.start().await.expect("start");
    eventually("every job is done", Duration::from_secs(20), || async {
        let (uploads, chats) = (
            store.counts(JobKind::Upload).await.expect("counts"),
            store.counts(JobKind::Chat).await.expect("counts"),
        );
        uploads.done == 3 && chats.done == 4
    })
    .await;
    backend.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");

    for new in &jobs {
        let stored = store.get(&new.id).await.expect("get").expect("the record");
        let seen = handler.seen(new.id.as_str());
        let last = seen.last().expect("the job ran");
        // What the worker ran is the record as it stood after its claim: the stored record of
        // that attempt (the outcome changed only its status, result and time since).
        assert_eq!(
            *last,
            JobRecord {
                status: JobStatus::Processing,
                result: None,
                updated_at_ms: last.updated_at_ms,
                ..stored.clone()
            },
            "{}",
            new.id
        );
        assert!(
            (stored.created_at_ms..=stored.updated_at_ms).contains(&last.updated_at_ms),
            "{}: claimed at {}, created at {}, finished at {}",
            new.id,
            last.updated_at_ms,
            stored.created_at_ms,
            stored.updated_at_ms
        );
        assert_eq!((&last.lane, &last.request_id), (&new.lane, &new.request_id), "{}", new.id);
        assert_eq!((last.kind, &last.tenant, &last.payload), (new.kind, &rig.tenant, &new.payload));
    }
    // The retried job: its first attempt ran with no error, its second with the first's.
    let u1: Vec<(u32, u64, Option<String>)> =
        handler.seen("u1").into_iter().map(|r| (r.attempt, r.lease_epoch, r.error)).collect();
    assert_eq!(u1, [(1, 1, None), (2, 2, Some("planned failure 1".to_owned()))]);
}

/// A slot whose handler is quick claims its next job and one more with each outcome (it holds
/// the one after next while it runs the next); with claiming ahead off, it claims its next only.
/// Either way each job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_slot_claims_one_job_ahead_and_runs_each_job_once() {
    for (ahead_below, ahead) in [(Duration::from_secs(3600), true), (Duration::ZERO, false)] {
        let server = RedisServer::start();
        let rig = Rig::new(&server, "ahead");
        let (store, handler) = (rig.store.clone(), &rig.handler);
        let gate = Behavior::GateFirst("g".into());
        let producer = queue_uploads(
            &rig,
            &[("j1", Behavior::Ok), ("j2", gate), ("j3", Behavior::Ok), ("j4", Behavior::Ok)],
        )
        .await;
        let backend = rig.backend(RedisBackendConfig {
            upload_concurrency: 1,
            claim_ahead_below: ahead_below,
            ..RedisBackendConfig::default()
        });
        backend.start().await.expect("start");
        // j1 ran alone (the first claim of an idle slot takes one job); its outcome's call
        // brought j2, which now waits at its gate, and, when claiming ahead, j3 with it.
        eventually("j2 runs", Duration::from_secs(20), || async {
            handler.in_flight() == [JobId::new("j2").expect("id")]
        })
        .await;
        assert_eq!(status(&store, "j1").await, queue_core::JobStatus::Done);
        let j3 = if ahead { queue_core::JobStatus::Processing } else { queue_core::JobStatus::Queued };
        assert_eq!(status(&store, "j3").await, j3, "j3 claimed ahead: {ahead}");
        assert_eq!(handler.invocations(&JobId::new("j3").expect("id")), 0, "j3 has not started");
        assert_eq!(status(&store, "j4").await, queue_core::JobStatus::Queued, "one job ahead, not two");
        assert_eq!(backend.held(), if ahead { 2 } else { 1 }, "the jobs the slot holds");
        handler.open("g");
        eventually("every job is done", Duration::from_secs(20), || async {
            store.counts(JobKind::Upload).await.expect("counts").done == 4
        })
        .await;
        for id in ["j1", "j2", "j3", "j4"] {
            assert_eq!(handler.invocations(&JobId::new(id).expect("id")), 1, "{id} ran once");
        }
        backend.stop().await.expect("stop");
        producer.stop().await.expect("stop producer");
    }
}

/// The three uploads of the tests below queued, and a started worker of `config` (one slot
/// claiming ahead) running j2, which never ends its first attempt, with j3 claimed ahead.
async fn j2_stuck_with_j3_claimed_ahead(
    rig: &Rig,
    config: RedisBackendConfig,
) -> (RedisQueueBackend, RedisQueueBackend) {
    let never = Behavior::GateFirst("never".into());
    let producer = queue_uploads(rig, &[("j1", Behavior::Ok), ("j2", never), ("j3", Behavior::Ok)]).await;
    let config =
        RedisBackendConfig { upload_concurrency: 1, claim_ahead_below: Duration::from_secs(3600), ..config };
    let worker = rig.backend(config);
    worker.start().await.expect("start");
    eventually("j2 runs with j3 claimed ahead", Duration::from_secs(20), || async {
        rig.handler.in_flight() == [JobId::new("j2").expect("id")]
            && status(&rig.store, "j3").await == queue_core::JobStatus::Processing
    })
    .await;
    (producer, worker)
}

/// Starts a worker of `config` and waits until j2 and j3 are done; j3 ran once in all.
async fn j2_and_j3_finish_elsewhere(rig: &Rig, config: RedisBackendConfig) -> RedisQueueBackend {
    let worker = rig.backend(config);
    worker.start().await.expect("start");
    eventually("j2 and j3 are done", Duration::from_secs(20), || async {
        status(&rig.store, "j2").await == queue_core::JobStatus::Done
            && status(&rig.store, "j3").await == queue_core::JobStatus::Done
    })
    .await;
    assert_eq!(rig.handler.invocations(&JobId::new("j3").expect("id")), 1, "j3 ran once");
    worker
}

/// A job claimed ahead by a worker that dies before running it is not lost: once its short lease
/// runs out (the worker died before it lengthened it; its full lease is twice as long), another
/// worker runs it, once. (The clock is a manual one: leases run out when the test moves it, not
/// while a loaded machine delays a heartbeat. The worker would lengthen its leases 100 s after
/// it started, long after the test kills it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_ahead_by_a_worker_that_dies_runs_elsewhere_once_its_short_lease_runs_out() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let rig = Rig::with(&server, "ahead-crash", Arc::new(clock.clone()), LaneStoreConfig::default());
    let config = RedisBackendConfig {
        reaper_interval: Duration::from_millis(100),
        lease: Duration::from_secs(600),
        short_lease: Duration::from_secs(300),
        ..RedisBackendConfig::default()
    };
    let (producer, doomed) = j2_stuck_with_j3_claimed_ahead(&rig, config.clone()).await;
    doomed.kill().await;
    clock.advance(u64::try_from(config.short_lease.as_millis()).expect("lease") + 1_000);
    let rescuer = j2_and_j3_finish_elsewhere(&rig, config).await;
    assert_eq!(
        rig.handler.invocations(&JobId::new("j2").expect("id")),
        2,
        "j2 ran again after its worker died"
    );
    rescuer.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// What the lost-answer tests share: a tenant on a manual clock (at 1,000,000 ms) whose chat
/// claims last 600 s (the lane store's TTL), whose producer has queued `jobs`, and a stopped
/// worker with `config` (on top of the settings below) whose calls go through a [`LossyProxy`].
/// Non-chat claims are made under a 300 s short lease, half the full one.
struct LostAnswer {
    server: RedisServer,
    clock: ManualClock,
    rig: Rig,
    keys: TenantKeys,
    producer: RedisQueueBackend,
    proxy: LossyProxy,
    worker: RedisQueueBackend,
    short: u64,
}

impl LostAnswer {
    /// The claim TTL of the lanes' claims (ms).
    const CLAIM_TTL: u64 = 600_000;

    async fn new(tenant: &str, config: RedisBackendConfig, jobs: Vec<NewJob>) -> Self {
        let server = RedisServer::start();
        let clock = ManualClock::new(1_000_000);
        let lanes = LaneStoreConfig { claim_ttl_ms: Self::CLAIM_TTL, ..LaneStoreConfig::default() };
        let rig = Rig::with(&server, tenant, Arc::new(clock.clone()), lanes);
        let keys = TenantKeys::new(&rig.tenant);
        let config = RedisBackendConfig {
            reaper_interval: Duration::from_millis(100),
            lease: Duration::from_secs(600),
            short_lease: Duration::from_secs(300),
            ..config
        };
        // A worker of its own runs an upload and a chat job first, so that Redis has the claim
        // and outcome scripts: the answer lost must be that of a call Redis ran, not a `NOSCRIPT`
        // error.
        let warm = rig.backend(config.clone());
        warm.start().await.expect("start");
        let producer = rig.producer().await;
        for job in [
            new_job("warm-up", JobKind::Upload, None, &Behavior::Ok),
            new_job("warm-chat", JobKind::Chat, Some("student:warm:main"), &Behavior::Ok),
        ] {
            producer.submit(rig.store.clone(), job).await.expect("submit");
        }
        eventually("the warm-up jobs are done", Duration::from_secs(20), || async {
            status(&rig.store, "warm-up").await == JobStatus::Done
                && status(&rig.store, "warm-chat").await == JobStatus::Done
        })
        .await;
        warm.stop().await.expect("stop");
        for job in jobs {
            producer.submit(rig.store.clone(), job).await.expect("submit");
        }
        let proxy = LossyProxy::start(&server);
        let pool = RedisPool::from_url(&proxy.url()).expect("a pool through the proxy");
        let worker = rig.backend_on(&pool, config.clone(), Arc::new(rig.handler.clone()));
        let short = u64::try_from(config.short_lease.as_millis()).expect("ms");
        Self { server, clock, rig, keys, producer, proxy, worker, short }
    }

    /// Uploads that succeed.
    fn uploads(ids: &[&str]) -> Vec<NewJob> {
        ids.iter().map(|id| new_job(id, JobKind::Upload, None, &Behavior::Ok)).collect()
    }

    /// Asserts that `jobs` are leased under the short lease and have not run.
    fn assert_waiting(&self, jobs: &[&str]) {
        for job in jobs {
            let lease = self.server.command(&["ZSCORE", &self.keys.inflight(), job]);
            assert_eq!(lease, (1_000_000 + self.short).to_string(), "{job} claimed under the short lease");
            assert_eq!(self.rig.handler.invocations(&id(job)), 0, "{job} has not run");
        }
    }

    /// Moves the clock by `by` ms: the reaper queues again what waited for a lease (`expiries`
    /// of them), and then every one of `jobs` is done, each run once. Stops the worker and
    /// producer.
    async fn finish(self, by: u64, jobs: &[&str], expiries: u64) {
        self.clock.advance(by);
        eventually("every job is done", Duration::from_secs(20), || async {
            for job in jobs {
                if status(&self.rig.store, job).await != JobStatus::Done {
                    return false;
                }
            }
            true
        })
        .await;
        for job in jobs {
            assert_eq!(self.rig.handler.invocations(&id(job)), 1, "{job} ran once");
        }
        assert_eq!(self.worker.stats().lease_expiries, expiries, "leases that ran out");
        self.worker.stop().await.expect("stop");
        self.producer.stop().await.expect("stop producer");
    }
}

/// The answer to a claim is lost (the connection drops after Redis ran the claim, through a
/// proxy that does so on purpose): the jobs that call claimed are held by no one, as if their
/// worker had died. They are queued again once the short lease runs out, not the full one, and
/// each runs once. (A manual clock, moved past the short lease.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_whose_claim_answer_is_lost_run_once_after_the_short_lease() {
    let jobs = ["l1", "l2"];
    let config = RedisBackendConfig { upload_concurrency: 2, ..RedisBackendConfig::default() };
    let t = LostAnswer::new("lost-claim", config, LostAnswer::uploads(&jobs)).await;
    // The upload claim: the only call that names both the ready list and this worker's hand-off
    // list (the start's orphan check names the one, the blocking wait the other).
    t.proxy.arm(&[&t.keys.ready(JobKind::Upload), &t.keys.handoff(JobKind::Upload, t.worker.worker_id())]);
    t.worker.start().await.expect("start");
    eventually("a claim's answer is lost", Duration::from_secs(20), || async { t.proxy.lost() == 1 }).await;
    // Redis ran the claim (the fetch loop's first asks for a job per free slot: two): both jobs
    // are leased (with the lease index's keeper entry) and the ready list is empty.
    assert_eq!(t.server.command(&["ZCARD", &t.keys.inflight()]), "3", "both jobs and the keeper");
    assert_eq!(t.server.command(&["LLEN", &t.keys.ready(JobKind::Upload)]), "0");
    t.assert_waiting(&jobs);
    let past_short = t.short + 1_000;
    t.finish(past_short, &jobs, 2).await;
}

/// The answer to an outcome call is lost after Redis ran it (the proxy drops the connection): the
/// call is sent again, and its outcome, already recorded, is rejected as late (counted in
/// `fenced`), so the job is done once and runs once. The jobs the lost call claimed ahead are
/// held by no one; they run once after the short lease. (A manual clock, as above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_whose_answer_is_lost_is_recorded_once_and_its_claims_run_after_the_short_lease() {
    let jobs = ["o1", "o2", "o3"];
    let config = RedisBackendConfig { upload_concurrency: 1, ..RedisBackendConfig::default() };
    let t = LostAnswer::new("lost-outcome", config, LostAnswer::uploads(&jobs)).await;
    // o1's outcome call: `complete_many` is the call that names the delayed set and the lanes'
    // index (the reaper's names the one, the lane store's calls the other).
    t.proxy.arm(&[&t.keys.delayed(), &t.keys.lanes(), "o1"]);
    t.worker.start().await.expect("start");
    eventually("o1 is done", Duration::from_secs(20), || async {
        status(&t.rig.store, "o1").await == JobStatus::Done
    })
    .await;
    eventually("the resent outcome is rejected as late", Duration::from_secs(20), || async {
        t.worker.stats().fenced == 1
    })
    .await;
    assert_eq!(t.proxy.lost(), 1, "the outcome call's answer was lost");
    // The lost call claimed o2 and o3 for the slot, ahead; they wait for the short lease.
    t.assert_waiting(&["o2", "o3"]);
    let past_short = t.short + 1_000;
    t.finish(past_short, &jobs, 2).await;
}

/// The answer to a chat claim is lost after Redis ran it: the lane's head job is started in
/// Redis for no one, as if its worker had died. Its lease is its lane's claim: once the claim
/// TTL runs out, the reaper dispatches it again, and the lane's jobs run once each, in order,
/// one at a time. (A manual clock, moved past the claim TTL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_claim_answer_is_lost_runs_on_in_order_after_its_claim_ttl() {
    let jobs = ["c1", "c2"];
    let lane = Some("student:a:main");
    let config = RedisBackendConfig { chat_concurrency: 1, ..RedisBackendConfig::default() };
    let chats = jobs.iter().map(|j| new_job(j, JobKind::Chat, lane, &Behavior::Ok)).collect();
    let t = LostAnswer::new("lost-chat", config, chats).await;
    // The chat claim: the only call that names both `ready:chat` and this worker's chat hand-off
    // list.
    t.proxy.arm(&[&t.keys.chat_ready(), &t.keys.handoff(JobKind::Chat, t.worker.worker_id())]);
    t.worker.start().await.expect("start");
    eventually("a chat claim's answer is lost", Duration::from_secs(20), || async { t.proxy.lost() == 1 })
        .await;
    // Redis ran the claim: c1 is `processing` for no one; c2 waits behind it in the lane.
    assert_eq!(status(&t.rig.store, "c1").await, JobStatus::Processing);
    assert_eq!(status(&t.rig.store, "c2").await, JobStatus::Queued);
    assert_eq!(t.rig.handler.invocations(&id("c1")), 0, "c1 has not run");
    let handler = t.rig.handler.clone();
    t.finish(LostAnswer::CLAIM_TTL + 1_000, &jobs, 1).await;
    let events: Vec<(String, bool)> = handler
        .events()
        .into_iter()
        .filter(|e| jobs.contains(&e.job.as_str()))
        .map(|e| (e.job.to_string(), e.start))
        .collect();
    let expected = [("c1", true), ("c1", false), ("c2", true), ("c2", false)].map(|(j, s)| (j.to_owned(), s));
    assert_eq!(events, expected, "the lane's jobs ran in order, one at a time");
}

/// A lane whose head job was finished while its dispatch waited (as by a worker whose claim had
/// run out) is moved on by the worker that claims the dispatch (a `FinishLane` claim). When that
/// move's call never reaches Redis (the proxy drops it, and the connection with it), it is sent
/// again: the lane's next job runs at once, not after the claim TTL (600 s; the manual clock
/// never moves), and the finished head does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_move_that_never_reaches_redis_is_sent_again() {
    let lane = LaneId::new("student:a:main").expect("lane");
    let config = RedisBackendConfig { chat_concurrency: 1, ..RedisBackendConfig::default() };
    let chats =
        ["c1", "c2"].iter().map(|j| new_job(j, JobKind::Chat, Some(lane.as_str()), &Behavior::Ok)).collect();
    let t = LostAnswer::new("lost-finish", config, chats).await;
    // c1 claimed the idle lane at its submit and waits in `ready:chat`; its record is finished.
    let c1 = t.keys.job(&id("c1"));
    assert_eq!(t.server.command(&["HSET", &c1, "state", "done|0|0|1000000"]), "0");
    // The lane store's `finish` is the worker's only call that names the lane's waiting list.
    t.proxy.arm_request(&[&t.keys.lane_waiting(&lane)]);
    t.worker.start().await.expect("start");
    eventually("c2 is done", Duration::from_secs(20), || async {
        status(&t.rig.store, "c2").await == JobStatus::Done
    })
    .await;
    assert_eq!(t.proxy.lost(), 1, "the first move was lost");
    assert_eq!(t.rig.handler.invocations(&id("c1")), 0, "the finished head did not run");
    assert_eq!(t.rig.handler.invocations(&id("c2")), 1);
    assert_eq!(t.worker.stats().lease_expiries, 0, "no claim ran out");
    t.worker.stop().await.expect("stop");
    t.producer.stop().await.expect("stop producer");
}

/// A worker claims non-chat jobs under the short lease and lengthens it to a full one while it
/// holds them: a job that runs for longer than the short lease keeps its lease, runs once and is
/// not reaped. (The clock is a manual one: the test moves it past the short lease, and the lease
/// then still lies ahead of it, so the reaper, looking every 100 ms, cannot take the job.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_claimed_under_the_short_lease_gets_a_full_lease_while_it_runs() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let rig = Rig::with(&server, "short-lease", Arc::new(clock.clone()), LaneStoreConfig::default());
    let keys = TenantKeys::new(&rig.tenant);
    // Queued before the worker starts: its fetch loop claims it (no hand-off).
    let producer = queue_uploads(&rig, &[("long", Behavior::GateFirst("g".into()))]).await;
    let short = 3_000;
    let worker = rig.backend(RedisBackendConfig {
        upload_concurrency: 1,
        short_lease: Duration::from_millis(short),
        reaper_interval: Duration::from_millis(100),
        ..RedisBackendConfig::default()
    });
    worker.start().await.expect("start");
    let long = JobId::new("long").expect("id");
    eventually("the job runs", Duration::from_secs(20), || async {
        rig.handler.in_flight() == [long.clone()]
    })
    .await;
    let lease = || server.command(&["ZSCORE", &keys.inflight(), "long"]).parse::<u64>().expect("a lease");
    let full = u64::try_from(RedisBackendConfig::default().lease.as_millis()).expect("ms");
    // Claimed under the short lease: the worker lengthens it a third of the way (1 s of the
    // runtime's time) at the earliest.
    assert_eq!(lease(), 1_000_000 + short, "claimed under the short lease");
    eventually("the lease is lengthened to a full one", Duration::from_secs(20), || async {
        lease() == 1_000_000 + full
    })
    .await;
    clock.advance(short + 1);
    assert!(lease() > clock.now_ms(), "the lease lies past the short one's end");
    assert_eq!(rig.handler.in_flight(), std::slice::from_ref(&long), "still running");
    assert_eq!(worker.stats().lease_expiries, 0, "not reaped");
    rig.handler.open("g");
    eventually("the job is done", Duration::from_secs(20), || async {
        status(&rig.store, "long").await == JobStatus::Done
    })
    .await;
    assert_eq!(rig.handler.invocations(&long), 1, "ran once");
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// Holds every write on `server` for 3 s (`CLIENT PAUSE WRITE`: past the pool's 2 s wait for an
/// answer, so that a call sent meanwhile fails), does `during`, and returns once the pause is
/// over (a write of the test's own waits for it).
fn while_writes_are_held(server: &RedisServer, during: impl FnOnce()) {
    assert_eq!(server.command(&["CLIENT", "PAUSE", "3000", "WRITE"]), "OK");
    during();
    assert_eq!(server.command(&["SET", "probe-after-the-pause", "1"]), "OK");
}

/// An outcome call that fails (here: Redis holds every write for 3 s, `CLIENT PAUSE WRITE`, past
/// the pool's 2 s wait for an answer) is sent again, fenced as every outcome is: the job's
/// outcome is recorded once Redis answers, and the job does not wait out its lease (600 s,
/// lengthened while it ran) to run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_call_that_fails_is_sent_again_and_the_job_runs_once() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "outcome-again");
    let producer =
        queue_uploads(&rig, &[("first", Behavior::GateFirst("g".into())), ("next", Behavior::Ok)]).await;
    let worker = rig.backend(RedisBackendConfig {
        upload_concurrency: 1,
        reaper_interval: Duration::from_millis(100),
        ..RedisBackendConfig::default()
    });
    worker.start().await.expect("start");
    let (first, next) = (JobId::new("first").expect("id"), JobId::new("next").expect("id"));
    eventually("the first job runs", Duration::from_secs(20), || async {
        rig.handler.in_flight() == [first.clone()]
    })
    .await;
    while_writes_are_held(&server, || rig.handler.open("g"));
    eventually("both jobs are done", Duration::from_secs(20), || async {
        status(&rig.store, "first").await == JobStatus::Done
            && status(&rig.store, "next").await == JobStatus::Done
    })
    .await;
    assert_eq!((rig.handler.invocations(&first), rig.handler.invocations(&next)), (1, 1), "each ran once");
    assert_eq!(worker.stats().lease_expiries, 0, "no lease ran out");
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A chat job that failed is queued again at its lane's head once its backoff has passed (the
/// lane store's `reclaim`). When Redis does not answer that call (here: every write held for 3 s,
/// `CLIENT PAUSE WRITE`, past the pool's 2 s wait for an answer), it is sent again: the job's
/// second attempt runs once Redis answers, and its lane does not wait for its claim to run out
/// (60 s here, 10 minutes by default) before it, and the lane's next job, run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lanes_retry_call_that_fails_is_sent_again_and_the_lane_moves_on() {
    let server = RedisServer::start();
    let lanes = LaneStoreConfig { claim_ttl_ms: 60_000, ..LaneStoreConfig::default() };
    let rig = Rig::with(&server, "reclaim-again", Arc::new(SystemClock), lanes);
    let producer = rig.producer().await;
    let lane = Some("student:a:main");
    for job in [
        new_job("c1", JobKind::Chat, lane, &Behavior::FailTimes(1)),
        new_job("c2", JobKind::Chat, lane, &Behavior::Ok),
    ] {
        producer.submit(rig.store.clone(), job).await.expect("submit");
    }
    let worker = rig.backend(RedisBackendConfig {
        chat_concurrency: 1,
        backoff_base: Duration::from_millis(500),
        ..RedisBackendConfig::default()
    });
    worker.start().await.expect("start");
    let (c1, c2) = (id("c1"), id("c2"));
    // The failure is recorded (the job queued again) at once; its lane's reclaim follows 500 ms
    // later, into the pause.
    eventually("c1's first attempt has failed", Duration::from_secs(20), || async {
        rig.handler.invocations(&c1) == 1 && status(&rig.store, "c1").await == JobStatus::Queued
    })
    .await;
    while_writes_are_held(&server, || {});
    eventually("both jobs are done", Duration::from_secs(20), || async {
        status(&rig.store, "c1").await == JobStatus::Done && status(&rig.store, "c2").await == JobStatus::Done
    })
    .await;
    assert_eq!((rig.handler.invocations(&c1), rig.handler.invocations(&c2)), (2, 1), "c1 ran twice, c2 once");
    let starts: Vec<String> =
        rig.handler.events().into_iter().filter(|e| e.start).map(|e| e.job.to_string()).collect();
    assert_eq!(starts, ["c1", "c1", "c2"], "the lane kept its order");
    assert_eq!(worker.stats().lease_expiries, 0, "no claim ran out");
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A batch of profile updates records its outcomes together: they share `complete_many` calls
/// (they went one call per update), and each update runs once. Counted by `ZREM`, which every
/// outcome call sends once per key for all its jobs (`inflight`, `pending:profile_update`): one
/// call per update sent about 100 for 40 updates, with the claims' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_update_batch_shares_its_outcome_calls() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "profile-batch");
    let producer = rig.producer().await;
    let jobs = 40;
    let ids: Vec<JobId> = (0..jobs).map(|i| JobId::new(format!("p{i}")).expect("id")).collect();
    let batch =
        ids.iter().map(|id| new_job(id.as_str(), JobKind::ProfileUpdate, None, &Behavior::Ok)).collect();
    for r in producer.submit_many(rig.store.clone(), batch).await.expect("submit_many") {
        r.expect("accepted");
    }
    let zrem_before = calls(&server, "zrem");
    let worker = rig.backend(RedisBackendConfig {
        profile_concurrency: 1,
        profile_batch_max: 64,
        ..RedisBackendConfig::default()
    });
    worker.start().await.expect("start");
    eventually("every update is done", Duration::from_secs(20), || async {
        rig.store.counts(JobKind::ProfileUpdate).await.expect("counts").done == jobs
    })
    .await;
    let zrem = calls(&server, "zrem") - zrem_before;
    assert!(zrem < 40, "{zrem} ZREM for {jobs} profile updates' outcomes (one call each: about 100)");
    for id in &ids {
        assert_eq!(rig.handler.invocations(id), 1, "{id} ran once");
    }
    worker.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A chat slot claims ahead too: with its lane idle, a quick job's outcome call brings the next
/// two lanes' jobs from `ready:chat`; the slot runs one while it holds the other (its lane's
/// claim renewed like a running job's). With claiming ahead off it takes one. Each job runs
/// once, each lane's in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_chat_slot_claims_another_lanes_job_ahead() {
    for (ahead_below, ahead) in [(Duration::from_secs(3600), true), (Duration::ZERO, false)] {
        let server = RedisServer::start();
        let rig = Rig::new(&server, "chat-ahead");
        let (store, handler) = (rig.store.clone(), &rig.handler);
        let producer = rig.producer().await;
        let jobs = [
            new_job("a1", JobKind::Chat, Some("student:a:main"), &Behavior::Ok),
            new_job("b1", JobKind::Chat, Some("student:b:main"), &Behavior::GateFirst("g".into())),
            new_job("c1", JobKind::Chat, Some("student:c:main"), &Behavior::Ok),
            new_job("c2", JobKind::Chat, Some("student:c:main"), &Behavior::Ok),
        ];
        for job in jobs {
            producer.submit(store.clone(), job).await.expect("submit");
        }
        let backend = rig.backend(RedisBackendConfig {
            chat_concurrency: 1,
            claim_ahead_below: ahead_below,
            ..RedisBackendConfig::default()
        });
        backend.start().await.expect("start");
        eventually("b1 runs", Duration::from_secs(20), || async {
            handler.in_flight() == [JobId::new("b1").expect("id")]
        })
        .await;
        assert_eq!(status(&store, "a1").await, queue_core::JobStatus::Done);
        let c1 = if ahead { queue_core::JobStatus::Processing } else { queue_core::JobStatus::Queued };
        assert_eq!(status(&store, "c1").await, c1, "c1 claimed ahead: {ahead}");
        assert_eq!(handler.invocations(&JobId::new("c1").expect("id")), 0, "c1 has not started");
        assert_eq!(backend.held(), if ahead { 2 } else { 1 }, "the jobs the slot holds");
        handler.open("g");
        eventually("every chat job is done", Duration::from_secs(20), || async {
            store.counts(JobKind::Chat).await.expect("counts").done == 4
        })
        .await;
        for id in ["a1", "b1", "c1", "c2"] {
            assert_eq!(handler.invocations(&JobId::new(id).expect("id")), 1, "{id} ran once");
        }
        let starts: Vec<String> = handler
            .events()
            .into_iter()
            .filter(|e| e.start && e.job.as_str().starts_with('c'))
            .map(|e| e.job.as_str().to_owned())
            .collect();
        assert_eq!(starts, ["c1", "c2"], "lane c in its order");
        backend.stop().await.expect("stop");
        producer.stop().await.expect("stop producer");
    }
}

/// A stop that runs out of time hands back the job claimed ahead with the one running: another
/// worker runs both at once, not after their leases (ten minutes here) run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_hands_back_a_job_claimed_ahead_with_the_running_one() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "ahead-stop");
    let config =
        RedisBackendConfig { stop_deadline: Duration::from_millis(100), ..RedisBackendConfig::default() };
    let (producer, stopping) = j2_stuck_with_j3_claimed_ahead(&rig, config.clone()).await;
    stopping.stop().await.expect("stop");
    assert_eq!(status(&rig.store, "j3").await, queue_core::JobStatus::Queued, "j3 handed back at the stop");
    let next = j2_and_j3_finish_elsewhere(&rig, config).await;
    next.stop().await.expect("stop");
    producer.stop().await.expect("stop producer");
}

/// A chat job that failed and waits out its backoff keeps its lane's head, not its slot: another
/// lane's job runs on the only slot meanwhile, quick handler or slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_retry_waits_out_its_backoff_without_holding_its_slot() {
    for ahead_below in [Duration::from_secs(3600), Duration::ZERO] {
        let server = RedisServer::start();
        let rig = Rig::new(&server, "retry-slot");
        let (store, handler) = (rig.store.clone(), &rig.handler);
        let producer = rig.producer().await;
        for job in [
            new_job("a1", JobKind::Chat, Some("student:a:main"), &Behavior::FailTimes(1)),
            new_job("b1", JobKind::Chat, Some("student:b:main"), &Behavior::Ok),
        ] {
            producer.submit(store.clone(), job).await.expect("submit");
        }
        let backend = rig.backend(RedisBackendConfig {
            chat_concurrency: 1,
            claim_ahead_below: ahead_below,
            // Longer than the test waits: a slot that slept through it would never run b1.
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            stop_deadline: Duration::from_millis(100),
            ..RedisBackendConfig::default()
        });
        backend.start().await.expect("start");
        eventually("b1 runs while a1 waits out its backoff", Duration::from_secs(20), || async {
            status(&store, "b1").await == queue_core::JobStatus::Done
        })
        .await;
        assert_eq!(handler.invocations(&JobId::new("a1").expect("id")), 1, "a1 has not run again");
        assert_eq!(status(&store, "a1").await, queue_core::JobStatus::Queued, "a1 waits for its retry");
        backend.stop().await.expect("stop");
        producer.stop().await.expect("stop producer");
    }
}

/// Asserts that the record at `key` holds its state in the `state` field, beginning with `head`,
/// and none of the four fields an earlier build kept it in.
fn assert_moved_to_state(server: &RedisServer, key: &str, head: &str) {
    for field in ["status", "epoch", "attempt", "updated"] {
        assert_eq!(server.command(&["HEXISTS", key, field]), "0", "{field} is left apart in the record");
    }
    let state = server.command(&["HGET", key, "state"]);
    assert!(state.starts_with(head), "{state} does not begin with {head}");
}

/// A record written before the `state` field whose worker died while it ran (`processing`
/// under epoch 3, its lease run out): the reaper reads its state apart (and moves it to the
/// field), puts it back on its ready list, and a worker of this build runs it under the next
/// epoch and attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_running_in_the_record_format_before_the_state_field_is_reaped_and_run_again() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "legacy-running");
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let keys = TenantKeys::new(&rig.tenant);
    let job = new_job("old2", JobKind::Upload, None, &Behavior::Ok);
    let (id, payload) = (job.id.clone(), job.payload.to_string());
    #[rustfmt::skip]
    server.command(&[
        "HSET", &keys.job(&id), "status", "processing", "epoch", "3", "updated", "1000", "attempt", "1",
        "id", "old2", "fixed", "1|1000||", "payload", &payload, "kind", "upload", "tenant", rig.tenant.as_str(),
    ]);
    server.command(&["SET", &keys.seq(), "1"]);
    server.command(&["ZADD", &keys.pending(JobKind::Upload), "1", "old2"]);
    server.command(&["ZADD", &keys.inflight(), "1000", "old2"]);
    server.command(&["HSET", &keys.stats(), "count:upload:processing", "1"]);
    let running = store.get(&id).await.expect("get").expect("the old record");
    assert_eq!((running.status, running.lease_epoch, running.attempt), (JobStatus::Processing, 3, 1));

    let backend = rig.backend(RedisBackendConfig::default());
    backend.start().await.expect("start");
    eventually("the old job is done", Duration::from_secs(10), || async {
        status(&store, id.as_str()).await == JobStatus::Done
    })
    .await;
    assert_eq!(handler.invocations(&id), 1, "it ran once, here");
    let done = store.get(&id).await.expect("get").expect("the finished record");
    assert_eq!((done.lease_epoch, done.attempt, done.seq), (4, 2, 1), "the next epoch and attempt");
    assert_moved_to_state(&server, &keys.job(&id), "done|4|2|");
    assert_eq!(server.command(&["HGET", &keys.stats(), "count:upload:processing"]), "0");
    backend.stop().await.expect("stop");
}

/// A record written before the `state` and `fixed` fields, with their parts (status, epoch,
/// attempt, updated; seq, created, lane, request id) as fields of their own, as an earlier
/// build's submit left it: the store reads it, and a worker claims and runs it like any other,
/// so jobs a Redis holds across an upgrade are kept. The claim moves it to the `state` field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_in_the_record_format_before_the_state_and_fixed_fields_is_read_claimed_and_run() {
    let server = RedisServer::start();
    let rig = Rig::new(&server, "legacy");
    let (store, handler) = (rig.store.clone(), &rig.handler);
    let keys = TenantKeys::new(&rig.tenant);
    let job = new_job("old1", JobKind::Upload, None, &Behavior::Ok);
    let (id, payload) = (job.id.clone(), job.payload.to_string());
    #[rustfmt::skip]
    server.command(&[
        "HSET", &keys.job(&id), "id", "old1", "tenant", rig.tenant.as_str(), "kind", "upload",
        "status", "queued", "attempt", "0", "epoch", "0", "seq", "1", "created", "1000",
        "updated", "1000", "payload", &payload, "request_id", "req-old",
    ]);
    server.command(&["SET", &keys.seq(), "1"]);
    server.command(&["ZADD", &keys.pending(JobKind::Upload), "1", "old1"]);
    server.command(&["RPUSH", &keys.ready(JobKind::Upload), "old1"]);
    server.command(&["LPUSH", &keys.signal(JobKind::Upload), "1"]);
    let queued = store.get(&id).await.expect("get").expect("the old record");
    assert_eq!(
        (queued.status, queued.seq, queued.created_at_ms, queued.request_id.as_ref().map(RequestId::as_str)),
        (JobStatus::Queued, 1, 1000, Some("req-old"))
    );
    assert_eq!(queued.payload, job.payload);

    let backend = rig.backend(RedisBackendConfig::default());
    backend.start().await.expect("start");
    eventually("the old job is done", Duration::from_secs(10), || async {
        status(&store, id.as_str()).await == JobStatus::Done
    })
    .await;
    assert_eq!(handler.invocations(&id), 1, "it ran once");
    let done = store.get(&id).await.expect("get").expect("the finished record");
    assert_eq!((done.seq, done.created_at_ms, done.attempt), (1, 1000, 1));
    assert_eq!((done.payload, done.request_id), (job.payload, queued.request_id));
    assert_moved_to_state(&server, &keys.job(&id), "done|1|1|");
    // The next submit numbers on from the old record's seq.
    let next = store.create(new_job("new1", JobKind::Upload, None, &Behavior::Ok)).await.expect("create");
    assert_eq!(next.seq, 2);
    backend.stop().await.expect("stop");
}
