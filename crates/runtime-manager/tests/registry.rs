//! `TenantRegistry`: many tenants' runtimes in one process, each an ephemeral inline runtime over
//! its own stores, built once, started and stopped on its own.

mod support;

use std::sync::{Arc, Mutex};

use queue_core::conformance::{Behavior, RecordingHandler};
use queue_core::{JobKind, JobStatus, LaneStoreConfig, QueueError, TenantId};
use queue_inline::{InlineQueueBackend, InlineRuntime, MemoryIdempotencyStore, MemoryJobStore};
use runtime_manager::{MemoryLaneStore, TenantBuilder, TenantRegistry, TenantRuntime};
use support::{clock, create_upload, inline_runtime, single_worker_config, wait_until};

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("valid tenant id")
}

/// Every tenant the builder was asked for, in order (refused ones included).
#[derive(Debug, Clone, Default)]
struct Builds(Arc<Mutex<Vec<TenantId>>>);

impl Builds {
    fn of(&self, tenant: &TenantId) -> usize {
        self.0.lock().expect("builds").iter().filter(|t| *t == tenant).count()
    }
}

/// A registry whose builder gives each tenant a fresh ephemeral inline runtime (own job store,
/// lanes, limiter, idempotency store) and refuses tenants named `broken-*`.
fn registry(handler: &RecordingHandler) -> (Arc<TenantRegistry>, Builds) {
    let builds = Builds::default();
    let builder: TenantBuilder = {
        let (builds, handler) = (builds.clone(), handler.clone());
        Arc::new(move |tenant: TenantId| {
            let (builds, handler) = (builds.clone(), handler.clone());
            Box::pin(async move {
                builds.0.lock().expect("builds").push(tenant.clone());
                // Let concurrent starters interleave here: a missing guard would build twice.
                tokio::task::yield_now().await;
                if tenant.as_str().starts_with("broken") {
                    return Err(QueueError::Config(format!("tenant {tenant} has no configuration")));
                }
                let store = Arc::new(MemoryJobStore::new(tenant.clone(), clock()));
                let lanes = Arc::new(MemoryLaneStore::new(LaneStoreConfig::default(), clock()));
                let runtime = inline_runtime(single_worker_config(), store.clone(), lanes.clone(), &handler);
                Ok(TenantRuntime {
                    tenant,
                    data_dir: None,
                    backend: Arc::new(InlineQueueBackend::over_runtime(
                        InlineQueueBackend::NAME,
                        runtime.clone(),
                    )),
                    store,
                    lanes,
                    idempotency: Arc::new(MemoryIdempotencyStore::new(clock(), 86_400_000)),
                    limiter: runtime.deps().limiter.clone(),
                    metrics: runtime.metrics().clone(),
                    inline: Some(runtime),
                })
            })
        })
    };
    (Arc::new(TenantRegistry::new(builder)), builds)
}

fn inline(rt: &TenantRuntime) -> &InlineRuntime {
    rt.inline.as_ref().expect("the builder makes inline runtimes")
}

#[tokio::test]
async fn starting_a_running_tenant_again_returns_it_without_building_twice() {
    let (registry, builds) = registry(&RecordingHandler::new());
    let t1 = tenant("t1");

    let first = registry.start(&t1).await.expect("start");
    let second = registry.start(&t1).await.expect("start again");

    assert!(Arc::ptr_eq(&first, &second), "the running runtime is returned");
    assert_eq!(builds.of(&t1), 1, "built once");
    assert!(inline(&first).is_running(), "start starts the backend");
    assert!(Arc::ptr_eq(&registry.get(&t1).expect("registered"), &first));
    assert_eq!(registry.tenants(), [t1]);
    registry.stop_all().await;
}

#[tokio::test]
async fn each_tenant_has_its_own_stores_and_sees_only_its_own_jobs() {
    let (registry, _) = registry(&RecordingHandler::new());
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    let rt1 = registry.start(&t1).await.expect("start t1");
    let rt2 = registry.start(&t2).await.expect("start t2");

    assert!(!Arc::ptr_eq(&rt1.store, &rt2.store), "job stores differ");
    assert!(!Arc::ptr_eq(&rt1.lanes, &rt2.lanes), "lane stores differ");
    assert!(!Arc::ptr_eq(&rt1.idempotency, &rt2.idempotency), "idempotency stores differ");
    assert!(!Arc::ptr_eq(&rt1.backend, &rt2.backend), "backends differ");

    let job = create_upload(&*rt1.store, &Behavior::GateFirst("never-opened".to_owned())).await;
    let record = rt1.store.get(&job).await.expect("get").expect("t1 sees its job");
    assert_eq!(record.tenant, t1);
    assert!(rt2.store.get(&job).await.expect("get").is_none(), "t2 cannot see t1's job");
    assert_eq!(rt2.store.counts(JobKind::Upload).await.expect("counts").queued, 0);
    assert!(rt2.store.scan_pending(JobKind::Upload).await.expect("scan").is_empty());
    registry.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_tenant_leaves_the_others_running() {
    let (registry, _) = registry(&RecordingHandler::new());
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    let rt1 = registry.start(&t1).await.expect("start t1");
    let rt2 = registry.start(&t2).await.expect("start t2");

    assert!(registry.stop(&t1).await.expect("stop t1"), "t1 was running");

    assert!(registry.get(&t1).is_none(), "t1 is unregistered");
    assert!(!inline(&rt1).is_running(), "t1's runtime is stopped");
    let refused = create_upload(&*rt1.store, &Behavior::Ok).await;
    assert_eq!(rt1.backend.enqueue_upload_job(refused).await, Err(QueueError::NotRunning));

    assert_eq!(registry.tenants(), std::slice::from_ref(&t2));
    assert!(inline(&rt2).is_running(), "t2 still runs");
    let job = create_upload(&*rt2.store, &Behavior::Ok).await;
    rt2.backend.enqueue_upload_job(job.clone()).await.expect("t2 still takes work");
    wait_until("t2's job is done", async || {
        rt2.store.get(&job).await.expect("get").is_some_and(|r| r.status == JobStatus::Done)
    })
    .await;
    registry.stop_all().await;
}

#[tokio::test]
async fn stopping_a_tenant_that_does_not_run_reports_false() {
    let (registry, builds) = registry(&RecordingHandler::new());
    let t1 = tenant("t1");

    assert!(!registry.stop(&tenant("unknown")).await.expect("stop unknown"), "never started");

    registry.start(&t1).await.expect("start");
    assert!(registry.stop(&t1).await.expect("stop"), "running");
    assert!(!registry.stop(&t1).await.expect("stop again"), "already stopped");
    assert!(registry.tenants().is_empty());
    assert_eq!(builds.of(&tenant("unknown")), 0, "stop never builds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_of_one_tenant_build_it_once() {
    let (registry, builds) = registry(&RecordingHandler::new());
    let t1 = tenant("t1");

    let starts: Vec<_> = (0..10)
        .map(|_| {
            let (registry, t1) = (registry.clone(), t1.clone());
            tokio::spawn(async move { registry.start(&t1).await })
        })
        .collect();
    let mut runtimes = Vec::new();
    for start in starts {
        runtimes.push(start.await.expect("task").expect("start"));
    }

    assert_eq!(builds.of(&t1), 1, "ten concurrent starts build once");
    assert!(runtimes.iter().all(|rt| Arc::ptr_eq(rt, &runtimes[0])), "every caller gets the one runtime");
    assert_eq!(registry.tenants(), [t1]);
    registry.stop_all().await;
}

#[tokio::test]
async fn a_builder_error_leaves_the_tenant_unregistered() {
    let (registry, builds) = registry(&RecordingHandler::new());
    let broken = tenant("broken-1");

    let err = registry.start(&broken).await.expect_err("the builder refuses");
    assert!(matches!(&err, QueueError::Config(m) if m.contains("broken-1")), "the builder's error: {err:?}");
    assert!(registry.get(&broken).is_none());
    assert!(registry.tenants().is_empty());
    assert!(!registry.stop(&broken).await.expect("stop"), "a tenant that failed to build is not running");

    registry.start(&broken).await.expect_err("still refused");
    assert_eq!(builds.of(&broken), 2, "nothing half-built is cached: the next start builds again");

    let t1 = tenant("t1");
    registry.start(&t1).await.expect("other tenants are unaffected");
    assert_eq!(registry.tenants(), [t1]);
    registry.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_all_stops_every_tenant() {
    let (registry, _) = registry(&RecordingHandler::new());
    let tenants = [tenant("t1"), tenant("t2"), tenant("t3")];
    let mut runtimes = Vec::new();
    for t in &tenants {
        runtimes.push(registry.start(t).await.expect("start"));
    }
    assert_eq!(registry.tenants(), tenants);

    registry.stop_all().await;

    assert!(registry.tenants().is_empty(), "no tenant is registered");
    for rt in &runtimes {
        assert!(!inline(rt).is_running(), "{} is stopped", rt.tenant);
        assert!(registry.get(&rt.tenant).is_none());
    }
}
