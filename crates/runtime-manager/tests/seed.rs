//! The seed's tests, ported: the per-tenant backend cache (task 1), the lane-store cache as
//! `RuntimeState` holds it (task 2), tenant runtime start and stop over a mocked backend
//! (task 3), and `reset_runtime_state` over a real inline runtime.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use queue_core::conformance::{Behavior, RecordingHandler};
use queue_core::{
    ChatLaneStore, IdempotencyClaim, IdempotencyStore, JobId, JobKind, JobStatus, JobStore, LaneId,
    LaneStoreConfig, MockQueueBackend, Mode, QueueBackend, QueueError, QueueResult, RequestId, TenantId,
};
use queue_inline::{InlineQueueBackend, InlineRuntime, MemoryIdempotencyStore, MemoryJobStore, QueueDepths};
use runtime_manager::{
    BackendRequest, DEV_MASTER_KEY, GetBackendFn, Getenv, InlineBackendFactory, QueueBackendCache,
    RuntimeManagerDeps, RuntimeState, StartRuntimeFn, StopRuntimeFn, ValidateMasterKeyFn,
    start_tenant_runtime, stop_tenant_runtime, validate_master_key_policy,
};
use support::{clock, create_upload, inline_runtime, single_worker_config, wait_until};

/// Never dialled: test and inline modes keep lanes in memory.
const REDIS_URL: &str = "redis://127.0.0.1:1/0";

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant id")
}

/// A fresh backend whose only behaviour is its name: anything else called on it fails the test.
fn labelled(name: &'static str) -> Arc<dyn QueueBackend> {
    let mut backend = MockQueueBackend::new();
    backend.expect_name().return_const(name);
    Arc::new(backend)
}

/// Counts calls; clones share the count.
#[derive(Debug, Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// An inline backend factory building a new `inline-test` backend per call, and its call count.
fn counting_inline_factory() -> (Calls, impl Fn() -> Arc<dyn QueueBackend> + Send + Sync + 'static) {
    let calls = Calls::default();
    let counted = calls.clone();
    (calls, move || {
        counted.bump();
        labelled(InlineQueueBackend::TEST_NAME)
    })
}

type Requests = Arc<Mutex<Vec<(Option<TenantId>, Mode)>>>;

/// A `get_backend` building a new `redis` backend per call, and the requests it saw.
fn recording_get_backend()
-> (Requests, impl Fn(BackendRequest<'_>) -> QueueResult<Arc<dyn QueueBackend>> + Send + Sync + 'static) {
    let requests = Requests::default();
    let seen = requests.clone();
    (requests, move |req: BackendRequest<'_>| {
        seen.lock().expect("requests").push((req.tenant_id.cloned(), req.mode));
        Ok(labelled("redis"))
    })
}

// ---- Task 1: the backend cache ----

#[test]
fn test_mode_builds_the_inline_backend_and_never_calls_get_backend() {
    let cache = QueueBackendCache::new();
    let built = Arc::new(Mutex::new(Vec::<Arc<dyn QueueBackend>>::new()));
    let inline = {
        let built = built.clone();
        move || {
            let backend = labelled(InlineQueueBackend::TEST_NAME);
            built.lock().expect("built").push(backend.clone());
            backend
        }
    };
    let (requests, get_backend) = recording_get_backend();

    let backend =
        cache.get_app_queue_backend(Some(&tenant("t1")), Mode::Test, &inline, &get_backend).expect("backend");

    let built = built.lock().expect("built");
    assert_eq!(built.len(), 1, "the inline factory builds exactly one backend");
    assert!(Arc::ptr_eq(&backend, &built[0]), "the backend handed out is the one the factory built");
    assert_eq!(backend.name(), "inline-test");
    assert!(requests.lock().expect("requests").is_empty(), "get_backend is never called in test mode");
}

#[test]
fn the_cached_backend_is_handed_out_until_reset_queue_backend() {
    let cache = QueueBackendCache::new();
    let (inline_calls, inline) = counting_inline_factory();
    let (requests, get_backend) = recording_get_backend();

    let first = cache.get_app_queue_backend(None, Mode::Test, &inline, &get_backend).expect("first");
    let second = cache.get_app_queue_backend(None, Mode::Test, &inline, &get_backend).expect("second");
    assert!(Arc::ptr_eq(&first, &second), "the second call returns the cached instance");
    assert_eq!(inline_calls.count(), 1, "the factory is not called again for a cached tenant");
    assert!(Arc::ptr_eq(&cache.cached(None).expect("cached"), &first));

    cache.reset_queue_backend();
    assert!(cache.cached(None).is_none(), "reset forgets the backend");
    assert!(cache.all().is_empty());

    let third = cache.get_app_queue_backend(None, Mode::Test, &inline, &get_backend).expect("third");
    assert!(!Arc::ptr_eq(&third, &first), "after a reset a new instance is built");
    assert_eq!(inline_calls.count(), 2);
    assert!(requests.lock().expect("requests").is_empty());
}

#[test]
fn outside_test_mode_get_backend_builds_the_backend_for_the_tenant_and_mode() {
    let t1 = tenant("t1");
    for mode in [Mode::Inline, Mode::Redis] {
        let cache = QueueBackendCache::new();
        let (inline_calls, inline) = counting_inline_factory();
        let (requests, get_backend) = recording_get_backend();

        let backend = cache.get_app_queue_backend(Some(&t1), mode, &inline, &get_backend).expect("backend");
        assert_eq!(backend.name(), "redis", "{mode}: the backend comes from get_backend");
        assert_eq!(
            *requests.lock().expect("requests"),
            [(Some(t1.clone()), mode)],
            "{mode}: asked for t1 once"
        );
        assert_eq!(inline_calls.count(), 0, "{mode}: the inline factory is not used outside test mode");

        let again = cache.get_app_queue_backend(Some(&t1), mode, &inline, &get_backend).expect("again");
        assert!(Arc::ptr_eq(&again, &backend), "{mode}: cached");
        assert_eq!(requests.lock().expect("requests").len(), 1, "{mode}: get_backend is not asked twice");
    }
}

#[test]
fn a_get_backend_error_is_returned_and_nothing_is_cached() {
    let t1 = tenant("t1");
    let cache = QueueBackendCache::new();
    let (_, inline) = counting_inline_factory();
    let calls = Calls::default();
    let get_backend = {
        let calls = calls.clone();
        move |_req: BackendRequest<'_>| -> QueueResult<Arc<dyn QueueBackend>> {
            if calls.bump() == 1 {
                Err(QueueError::Unavailable("redis is down".to_owned()))
            } else {
                Ok(labelled("redis"))
            }
        }
    };

    let err = cache
        .get_app_queue_backend(Some(&t1), Mode::Redis, &inline, &get_backend)
        .expect_err("first call fails");
    assert_eq!(err, QueueError::Unavailable("redis is down".to_owned()));
    assert!(cache.cached(Some(&t1)).is_none(), "a failed build is not cached");
    assert!(cache.all().is_empty());

    let backend =
        cache.get_app_queue_backend(Some(&t1), Mode::Redis, &inline, &get_backend).expect("retry works");
    assert_eq!(calls.count(), 2, "the next call asks get_backend again");
    assert!(Arc::ptr_eq(&cache.cached(Some(&t1)).expect("cached now"), &backend));
}

#[test]
fn each_tenant_gets_its_own_cached_backend() {
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    let cache = QueueBackendCache::new();
    let (inline_calls, inline) = counting_inline_factory();
    let (_, get_backend) = recording_get_backend();
    let get = |t: Option<&TenantId>| {
        cache.get_app_queue_backend(t, Mode::Test, &inline, &get_backend).expect("backend")
    };

    let b1 = get(Some(&t1));
    let b2 = get(Some(&t2));
    let unnamed = get(None);
    assert!(!Arc::ptr_eq(&b1, &b2), "t1 and t2 have different backends");
    assert!(!Arc::ptr_eq(&b1, &unnamed) && !Arc::ptr_eq(&b2, &unnamed));
    assert!(
        Arc::ptr_eq(&get(Some(&TenantId::default_tenant())), &unnamed),
        "no tenant is the default tenant"
    );
    assert!(Arc::ptr_eq(&get(Some(&t1)), &b1) && Arc::ptr_eq(&get(Some(&t2)), &b2));
    assert_eq!(inline_calls.count(), 3, "one build per tenant");
    assert_eq!(cache.all().len(), 3);
}

// ---- Task 2: the lane-store cache of RuntimeState ----

#[tokio::test]
async fn lane_stores_are_cached_per_tenant_and_reset_by_reset_runtime_state() {
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    let state = RuntimeState::new(Arc::new(MemoryIdempotencyStore::new(clock(), 60_000)));
    let get = |t: &TenantId| {
        state
            .lane_stores
            .get_chat_lane_store(Some(t), Mode::Test, REDIS_URL, LaneStoreConfig::default(), clock())
            .expect("lane store")
    };

    let t1_first = get(&t1);
    let t1_second = get(&t1);
    let t2_store = get(&t2);
    assert!(Arc::ptr_eq(&t1_first, &t1_second), "one store per tenant");
    assert!(!Arc::ptr_eq(&t1_first, &t2_store), "tenants do not share a store");
    assert_eq!(t1_first.kind(), "memory");

    let lane = LaneId::new("student:s1:main").expect("lane id");
    let job = JobId::new("j-1").expect("job id");
    t1_first.enqueue(&job, &lane).await.expect("enqueue");
    assert_eq!(
        t1_second.lane_load(&lane).await.expect("load").total,
        1,
        "the cached store is the same store"
    );
    assert_eq!(t2_store.lane_load(&lane).await.expect("load").total, 0, "t2's lanes are its own");

    state
        .reset_runtime_state(|| Arc::new(MemoryIdempotencyStore::new(clock(), 60_000)))
        .await
        .expect("reset");

    let t1_after = get(&t1);
    assert!(!Arc::ptr_eq(&t1_after, &t1_first), "reset_runtime_state drops the cached lane stores");
    assert_eq!(t1_after.lane_load(&lane).await.expect("load").total, 0, "the new store starts empty");
    assert!(!Arc::ptr_eq(&get(&t2), &t2_store));
}

// ---- Task 3: start_tenant_runtime / stop_tenant_runtime ----

type Log = Arc<Mutex<Vec<&'static str>>>;
/// Every backend `start_runtime` was given, with the mode.
type Started = Arc<Mutex<Vec<(Arc<dyn QueueBackend>, Mode)>>>;
/// Every backend `stop_runtime` was given.
type Stopped = Arc<Mutex<Vec<Arc<dyn QueueBackend>>>>;

fn push(log: &Log, what: &'static str) {
    log.lock().expect("log").push(what);
}

fn entries(log: &Log) -> Vec<&'static str> {
    log.lock().expect("log").clone()
}

fn getenv_from(pairs: &[(&str, &str)]) -> Getenv {
    let env: HashMap<String, String> =
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Arc::new(move |key: &str| env.get(key).cloned())
}

/// A mocked backend that must be started exactly once and stopped exactly once (checked when it
/// is dropped), logging both.
fn backend_started_and_stopped_once(log: &Log) -> Arc<dyn QueueBackend> {
    let mut backend = MockQueueBackend::new();
    let on_start = log.clone();
    backend.expect_start().times(1).returning(move || {
        push(&on_start, "backend.start");
        Ok(())
    });
    let on_stop = log.clone();
    backend.expect_stop().times(1).returning(move || {
        push(&on_stop, "backend.stop");
        Ok(())
    });
    Arc::new(backend)
}

/// `RuntimeManagerDeps` whose every step logs, with `get_backend` going through one cache.
struct Harness {
    log: Log,
    cache: Arc<QueueBackendCache>,
    requests: Requests,
    started: Started,
    stopped: Stopped,
    deps: RuntimeManagerDeps,
}

fn harness(mode: Mode) -> Harness {
    let log = Log::default();
    let cache = Arc::new(QueueBackendCache::new());
    let requests = Requests::default();
    let started = Started::default();
    let stopped = Stopped::default();

    let validate: ValidateMasterKeyFn = {
        let log = log.clone();
        Arc::new(move |getenv| {
            push(&log, "validate");
            validate_master_key_policy(getenv)
        })
    };
    let inline_backend_factory: Arc<InlineBackendFactory> = {
        let log = log.clone();
        Arc::new(move || {
            push(&log, "inline_backend_factory");
            backend_started_and_stopped_once(&log)
        })
    };
    // What the cache builds with outside test mode.
    let build: Arc<GetBackendFn> = {
        let log = log.clone();
        Arc::new(move |_req| {
            push(&log, "build");
            Ok(backend_started_and_stopped_once(&log))
        })
    };
    let get_backend: Arc<GetBackendFn> = {
        let (log, cache, requests) = (log.clone(), cache.clone(), requests.clone());
        Arc::new(move |req: BackendRequest<'_>| {
            push(&log, "get_backend");
            requests.lock().expect("requests").push((req.tenant_id.cloned(), req.mode));
            cache.get_app_queue_backend(req.tenant_id, req.mode, req.inline_backend_factory, &*build)
        })
    };
    let start_runtime: StartRuntimeFn = {
        let (log, started) = (log.clone(), started.clone());
        let default = RuntimeManagerDeps::default_start_runtime();
        Arc::new(move |backend, mode| {
            push(&log, "start_runtime");
            started.lock().expect("started").push((backend.clone(), mode));
            default(backend, mode)
        })
    };
    let stop_runtime: StopRuntimeFn = {
        let (log, stopped) = (log.clone(), stopped.clone());
        let default = RuntimeManagerDeps::default_stop_runtime();
        Arc::new(move |backend| {
            push(&log, "stop_runtime");
            stopped.lock().expect("stopped").push(backend.clone());
            default(backend)
        })
    };
    let deps = RuntimeManagerDeps {
        tenant_id: Some(tenant("t1")),
        mode,
        validate_master_key_policy: validate,
        inline_backend_factory,
        get_backend,
        start_runtime,
        stop_runtime,
        getenv: getenv_from(&[]),
    };
    Harness { log, cache, requests, started, stopped, deps }
}

/// Starts and stops t1 in `mode`; checks that one backend is built, started and stopped, that
/// `get_backend` saw t1 and `mode` both times, and returns the log.
async fn start_and_stop_one_backend(mode: Mode) -> Vec<&'static str> {
    let h = harness(mode);
    let t1 = tenant("t1");

    let backend = start_tenant_runtime(&h.deps).await.expect("start");
    stop_tenant_runtime(&h.deps).await.expect("stop");

    assert_eq!(*h.requests.lock().expect("requests"), [(Some(t1.clone()), mode), (Some(t1.clone()), mode)]);
    let started = h.started.lock().expect("started");
    assert_eq!(started.len(), 1);
    assert!(
        Arc::ptr_eq(&started[0].0, &backend),
        "start_runtime gets the backend start_tenant_runtime returns"
    );
    assert_eq!(started[0].1, mode, "start_runtime gets the mode");
    let stopped = h.stopped.lock().expect("stopped");
    assert_eq!(stopped.len(), 1);
    assert!(Arc::ptr_eq(&stopped[0], &backend), "stop_tenant_runtime stops the backend that was started");
    assert!(Arc::ptr_eq(&h.cache.cached(Some(&t1)).expect("cached"), &backend));
    entries(&h.log)
}

#[tokio::test]
async fn start_validates_the_policy_before_building_and_starting_and_stop_stops_the_same_backend() {
    let log = start_and_stop_one_backend(Mode::Test).await;
    assert_eq!(
        log,
        [
            "validate",
            "get_backend",
            "inline_backend_factory",
            "start_runtime",
            "backend.start",
            "get_backend",
            "stop_runtime",
            "backend.stop",
        ]
    );
}

#[tokio::test]
async fn outside_test_mode_start_builds_through_get_backend_after_validating() {
    let log = start_and_stop_one_backend(Mode::Inline).await;
    assert_eq!(
        log,
        [
            "validate",
            "get_backend",
            "build",
            "start_runtime",
            "backend.start",
            "get_backend",
            "stop_runtime",
            "backend.stop"
        ]
    );
}

#[tokio::test]
async fn a_refused_master_key_policy_stops_start_before_any_backend_is_built() {
    let refusals: [&[(&str, &str)]; 3] = [
        &[("APP_ENV", "production")],
        &[("APP_ENV", "production"), ("MASTER_KEY", "too-short")],
        &[("ENV", "prod"), ("MASTER_KEY", DEV_MASTER_KEY)],
    ];
    for env in refusals {
        let log = Log::default();
        let mut mock = MockQueueBackend::new();
        mock.expect_start().times(0);
        mock.expect_stop().times(0);
        let backend: Arc<dyn QueueBackend> = Arc::new(mock);
        let validate: ValidateMasterKeyFn = Arc::new(validate_master_key_policy);
        let deps = RuntimeManagerDeps {
            tenant_id: Some(tenant("t1")),
            mode: Mode::Inline,
            validate_master_key_policy: validate,
            inline_backend_factory: {
                let (log, backend) = (log.clone(), backend.clone());
                Arc::new(move || {
                    push(&log, "inline_backend_factory");
                    backend.clone()
                })
            },
            get_backend: {
                let (log, backend) = (log.clone(), backend.clone());
                Arc::new(move |_req| {
                    push(&log, "get_backend");
                    Ok(backend.clone())
                })
            },
            start_runtime: RuntimeManagerDeps::default_start_runtime(),
            stop_runtime: RuntimeManagerDeps::default_stop_runtime(),
            getenv: getenv_from(env),
        };

        let err = start_tenant_runtime(&deps).await.expect_err("the policy refuses");
        let QueueError::Config(message) = err else {
            panic!("{env:?}: expected a config error, got {err:?}")
        };
        assert!(message.contains("MASTER_KEY"), "{env:?}: the error names MASTER_KEY: {message}");
        assert!(entries(&log).is_empty(), "{env:?}: nothing was built: {:?}", entries(&log));
    }
}

// ---- reset_runtime_state over a real inline runtime ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_runtime_state_empties_the_queues_and_hands_out_fresh_caches_without_losing_jobs() {
    let t1 = tenant("t1");
    let fresh_idempotency =
        || -> Arc<dyn IdempotencyStore> { Arc::new(MemoryIdempotencyStore::new(clock(), 86_400_000)) };
    let state = Arc::new(RuntimeState::new(fresh_idempotency()));
    // Stands in for the durable job store: it outlives every runtime built over it.
    let store = Arc::new(MemoryJobStore::new(t1.clone(), clock()));
    let handler = RecordingHandler::new();
    let runtimes: Arc<Mutex<Vec<InlineRuntime>>> = Arc::default();
    let lane_store = |state: &RuntimeState| -> Arc<dyn ChatLaneStore> {
        state
            .lane_stores
            .get_chat_lane_store(
                Some(&tenant("t1")),
                Mode::Test,
                REDIS_URL,
                LaneStoreConfig::default(),
                clock(),
            )
            .expect("lane store")
    };
    let inline_factory = {
        let (state, store, handler, runtimes) =
            (state.clone(), store.clone(), handler.clone(), runtimes.clone());
        move || -> Arc<dyn QueueBackend> {
            let runtime = inline_runtime(single_worker_config(), store.clone(), lane_store(&state), &handler);
            runtimes.lock().expect("runtimes").push(runtime.clone());
            Arc::new(InlineQueueBackend::over_runtime(InlineQueueBackend::TEST_NAME, runtime))
        }
    };
    let never = |_req: BackendRequest<'_>| -> QueueResult<Arc<dyn QueueBackend>> {
        Err(QueueError::Config("get_backend is not used in test mode".to_owned()))
    };
    let backend = |state: &RuntimeState| {
        state.backends.get_app_queue_backend(Some(&t1), Mode::Test, &inline_factory, &never).expect("backend")
    };

    let before = backend(&state);
    assert_eq!(before.name(), "inline-test");
    let runtime = runtimes.lock().expect("runtimes")[0].clone();
    let lanes_before = lane_store(&state);
    assert!(
        Arc::ptr_eq(&runtime.deps().lanes, &lanes_before),
        "the runtime works on the tenant's cached lanes"
    );
    before.start().await.expect("start");

    let gate = Behavior::GateFirst("reset".to_owned());
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let id = create_upload(&*store, &gate).await;
        before.enqueue_upload_job(id.clone()).await.expect("enqueue");
        jobs.push(id);
    }
    // `running` counts a job from the moment a worker takes it, a little before the handler is
    // entered: wait for both.
    wait_until("the first upload runs and the other three wait in the queue", async || {
        let depths = runtime.depths();
        depths.running == 1 && depths.upload == 3 && !handler.in_flight().is_empty()
    })
    .await;
    assert_eq!(
        handler.in_flight(),
        [jobs[0].clone()],
        "the one worker holds the first job, blocked on its gate"
    );

    let idempotency_before = state.idempotency();
    let request = RequestId::new("r-1").expect("request id");
    assert_eq!(idempotency_before.claim(&request, &jobs[0]).await.expect("claim"), IdempotencyClaim::Claimed);
    assert_eq!(
        idempotency_before.claim(&request, &jobs[1]).await.expect("claim"),
        IdempotencyClaim::Existing(jobs[0].clone()),
        "the key is taken before the reset"
    );

    state.reset_runtime_state(fresh_idempotency).await.expect("reset");

    assert_eq!(runtime.depths(), QueueDepths::default(), "the in-process queues are empty");
    assert!(!runtime.is_running(), "the old runtime is stopped");
    let after = backend(&state);
    assert!(!Arc::ptr_eq(&after, &before), "the backend cache builds a new backend");
    assert_eq!(runtimes.lock().expect("runtimes").len(), 2);
    assert!(!Arc::ptr_eq(&lane_store(&state), &lanes_before), "the lane-store cache builds a new store");
    let idempotency_after = state.idempotency();
    assert!(!Arc::ptr_eq(&idempotency_after, &idempotency_before), "a fresh idempotency store is installed");
    assert_eq!(
        idempotency_after.claim(&request, &jobs[1]).await.expect("claim"),
        IdempotencyClaim::Claimed,
        "a request id claimed before the reset is free again"
    );

    // Nothing lost: every job is still pending in the store (the running one handed back)...
    for id in &jobs {
        let record = store.get(id).await.expect("get").expect("record kept");
        assert_eq!(record.status, JobStatus::Queued, "job {id} is queued again");
    }
    assert_eq!(store.scan_pending(JobKind::Upload).await.expect("scan").len(), jobs.len());
    // ...and the new runtime over the same store recovers and runs them all.
    after.start().await.expect("start the new backend");
    handler.open("reset");
    wait_until("every upload is done on the new runtime", async || {
        store.counts(JobKind::Upload).await.expect("counts").done == 4
    })
    .await;
    after.stop().await.expect("stop");
}
