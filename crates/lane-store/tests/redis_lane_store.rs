//! `RedisLaneStore` against the lane-store battery, on one real `redis-server` and on a local
//! three-node Redis Cluster, plus what only the Redis store is asked: dispatch entries for the
//! chat workers, no key left behind by a drained lane, ids that cannot forge a key, tenant
//! isolation on one server, and an outage (refused promptly, recovered without a rebuild).
//!
//! The tests that run at the same time share one server and one cluster through
//! `redis_harness::shared_server` (`shared_cluster`), each store on a fresh tenant; the last test to
//! finish with them stops them. The outage test has its own server.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lane_store::{RedisLaneStore, RedisPool, TenantKeys, parse_dispatch};
use queue_core::conformance::{LaneStoreFactory, eventually};
use queue_core::{
    ChatLaneStore, Clock, JobId, JobKind, LaneClaim, LaneId, LaneLoad, LaneStoreConfig, ManualClock,
    QueueError, TenantId,
};
use redis_harness::{RedisCluster, RedisServer, shared_cluster, shared_server};

const TTL_MS: u64 = 1_000;

/// Makes every store's tenant new on its server.
static TENANTS: AtomicUsize = AtomicUsize::new(0);

fn fresh_tenant(label: &str) -> TenantId {
    let n = TENANTS.fetch_add(1, Ordering::Relaxed);
    TenantId::new(format!("{label}-{}-{n}", std::process::id())).unwrap()
}

fn lane(id: &str) -> LaneId {
    LaneId::new(id).unwrap()
}

fn job(id: &str) -> JobId {
    JobId::new(id).unwrap()
}

fn config() -> LaneStoreConfig {
    LaneStoreConfig { debounce_ms: 500, claim_ttl_ms: TTL_MS, max_queue: 3 }
}

fn store_on(url: &str, tenant: &TenantId, config: LaneStoreConfig, clock: &ManualClock) -> RedisLaneStore {
    let pool = RedisPool::from_url(url).unwrap();
    RedisLaneStore::new(pool, tenant, config, Arc::new(clock.clone()))
}

/// Builds each store on a fresh tenant of a shared server or cluster, which it keeps running.
struct RedisLaneStores<T> {
    url: String,
    _running: Arc<T>,
}

impl RedisLaneStores<RedisServer> {
    fn single_server() -> Self {
        let server = shared_server();
        Self { url: server.url(), _running: server }
    }
}

impl RedisLaneStores<RedisCluster> {
    fn cluster() -> Self {
        let cluster = shared_cluster();
        Self { url: cluster.url(), _running: cluster }
    }
}

#[async_trait]
impl<T: Send + Sync> LaneStoreFactory for RedisLaneStores<T> {
    async fn build(&self, config: LaneStoreConfig, clock: ManualClock) -> Arc<dyn ChatLaneStore> {
        Arc::new(store_on(&self.url, &fresh_tenant("battery"), config, &clock))
    }
}

mod single_server {
    queue_core::lane_store_conformance_tests!(super::RedisLaneStores::single_server());
}

mod cluster {
    queue_core::lane_store_conformance_tests!(super::RedisLaneStores::cluster());
}

/// The harness renders a list one element a line, and an empty one as the empty string.
fn lines(reply: &str) -> Vec<String> {
    reply.lines().map(ToOwned::to_owned).collect()
}

/// Every key of `keys`' tenant on `server`. KEYS is fine on a test server; product code never
/// uses it.
fn tenant_keys(server: &RedisServer, keys: &TenantKeys) -> BTreeSet<String> {
    lines(&server.command(&["KEYS", "*"])).into_iter().filter(|k| k.starts_with(keys.prefix())).collect()
}

fn ready_entries(server: &RedisServer, keys: &TenantKeys) -> Vec<String> {
    lines(&server.command(&["LRANGE", &keys.chat_ready(), "0", "-1"]))
}

fn dispatched(claim: &LaneClaim) -> String {
    format!("{}:{}|{}|{}", claim.epoch, claim.lease_deadline_ms, claim.job_id, claim.lane_id)
}

#[tokio::test]
async fn the_store_reports_its_kind_as_redis() {
    let server = shared_server();
    let store = store_on(&server.url(), &fresh_tenant("kind"), config(), &ManualClock::default());
    assert_eq!(store.kind(), "redis");
}

#[tokio::test]
async fn with_dispatch_every_claim_is_pushed_once_for_the_workers_and_a_no_op_pushes_nothing() {
    let server = shared_server();
    let clock = ManualClock::new(1_000_000);
    let store = store_on(&server.url(), &fresh_tenant("dispatch"), config(), &clock).with_dispatch(true);
    let keys = store.keys().clone();
    let l = lane("student:s1:main");
    let mut expected = Vec::new();

    // Enqueue into an idle lane: one entry.
    let a = store.enqueue(&job("a"), &l).await.unwrap().dispatch.unwrap();
    expected.push(dispatched(&a));
    assert_eq!(ready_entries(&server, &keys), expected);
    // Waiting jobs and re-enqueues of a running or waiting job: none.
    store.enqueue(&job("b"), &l).await.unwrap();
    store.enqueue(&job("a"), &l).await.unwrap();
    store.enqueue(&job("b"), &l).await.unwrap();
    assert_eq!(ready_entries(&server, &keys), expected, "a no-op enqueue pushed a claim");
    // Finish hands over to the next job: one entry.
    let b = store.finish(&a).await.unwrap().unwrap();
    expected.push(dispatched(&b));
    // Reclaim (a retry): one entry.
    let b = store.reclaim(&b).await.unwrap();
    expected.push(dispatched(&b));
    // Reap of an expired lease: one entry.
    clock.advance(TTL_MS);
    let reaped = store.reap_expired().await.unwrap();
    assert_eq!(reaped.len(), 1);
    expected.push(dispatched(&reaped[0]));
    assert!(store.reap_expired().await.unwrap().is_empty());
    // Renewals, refused calls and a finish that leaves the lane idle: none.
    store.renew(&reaped[0]).await.unwrap();
    assert!(store.finish(&b).await.is_err());
    assert!(store.finish(&reaped[0]).await.unwrap().is_none());

    let entries = ready_entries(&server, &keys);
    assert_eq!(entries, expected);
    let parsed: Vec<LaneClaim> = entries.iter().map(|e| parse_dispatch(e).unwrap()).collect();
    let claims = [&a, &b, &reaped[0]];
    for claim in claims {
        let from_list = parsed.iter().find(|p| p.epoch == claim.epoch).unwrap();
        assert_eq!(from_list, claim, "the entry carries the claim, its lease deadline too");
    }
    let tokens = server.command(&["LLEN", &keys.signal(JobKind::Chat)]);
    assert_eq!(tokens, "4", "one wake token per claim");
}

#[test]
fn a_dispatch_is_read_with_its_deadline_and_one_pushed_before_the_deadline_was_in_it_without() {
    let claim = |deadline| LaneClaim {
        job_id: job("j-1"),
        lane_id: lane("student:s1:main"),
        epoch: 42,
        lease_deadline_ms: deadline,
    };
    assert_eq!(parse_dispatch("42:1600000|j-1|student:s1:main"), Some(claim(1_600_000)));
    assert_eq!(parse_dispatch("42|j-1|student:s1:main"), Some(claim(0)));
    for bad in ["", "42", "42:|j-1|l", "x:1|j-1|l", "42:x|j-1|l", "42:1|j-1", "42:1||l"] {
        assert_eq!(parse_dispatch(bad), None, "{bad:?} was read");
    }
}

/// With dispatch on, the store is the Redis backend's: a reap writes the new epoch into the
/// re-claimed job's record, whose `state` is `<status>|<epoch>|<attempt>|<updated>`, when it is
/// queued or running (in a record written before that field, its `epoch` field), and leaves a
/// finished record and a missing one alone.
#[tokio::test]
async fn with_dispatch_a_reap_moves_the_epoch_of_a_queued_or_running_record_and_no_other() {
    let server = shared_server();
    let clock = ManualClock::new(1_000_000);
    let store = store_on(&server.url(), &fresh_tenant("stamp"), config(), &clock).with_dispatch(true);
    let keys = store.keys().clone();
    let states = [
        ("queued", "queued|0|0|900"),
        ("running", "processing|7|2|950"),
        ("finished", "done|7|1|990"),
        ("missing", ""),
        ("legacy-running", "legacy"),
        ("legacy-finished", "legacy"),
    ];
    let mut claims = Vec::new();
    for (name, state) in states {
        let id = job(name);
        claims.push(store.enqueue(&id, &lane(name)).await.unwrap().dispatch.unwrap());
        // Written after the enqueue, which refuses a job whose record is finished.
        if state == "legacy" {
            // A record of a build before the `state` field: status and epoch apart.
            let status = if name == "legacy-running" { "processing" } else { "done" };
            server.command(&["HSET", &keys.job(&id), "status", status, "epoch", "7", "attempt", "2"]);
        } else if !state.is_empty() {
            server.command(&["HSET", &keys.job(&id), "state", state, "kind", "chat"]);
        }
    }
    clock.advance(TTL_MS);
    let reaped = store.reap_expired().await.unwrap();
    assert_eq!(reaped.len(), 6);
    let epoch_of = |name: &str| reaped.iter().find(|c| c.job_id == job(name)).unwrap().epoch;
    let state_of = |name: &str| server.command(&["HGET", &keys.job(&job(name)), "state"]);
    assert_eq!(state_of("queued"), format!("queued|{}|0|900", epoch_of("queued")));
    assert_eq!(state_of("running"), format!("processing|{}|2|950", epoch_of("running")));
    assert_eq!(state_of("finished"), "done|7|1|990");
    assert_eq!(server.command(&["EXISTS", &keys.job(&job("missing"))]), "0", "a record was made");
    let legacy = |name: &str| server.command(&["HMGET", &keys.job(&job(name)), "epoch", "state"]);
    assert_eq!(legacy("legacy-running"), format!("{}\n(nil)", epoch_of("legacy-running")));
    assert_eq!(legacy("legacy-finished"), "7\n(nil)");
    for (claim, reclaimed) in claims.iter().zip(&reaped) {
        assert!(reclaimed.epoch > claim.epoch);
    }
}

#[tokio::test]
async fn without_dispatch_a_reap_leaves_job_records_alone() {
    let server = shared_server();
    let clock = ManualClock::new(1_000_000);
    let store = store_on(&server.url(), &fresh_tenant("nostamp"), config(), &clock);
    let keys = store.keys().clone();
    server.command(&["HSET", &keys.job(&job("a")), "state", "processing|7|2|950"]);
    store.enqueue(&job("a"), &lane("l")).await.unwrap();
    clock.advance(TTL_MS);
    assert_eq!(store.reap_expired().await.unwrap().len(), 1);
    assert_eq!(server.command(&["HGET", &keys.job(&job("a")), "state"]), "processing|7|2|950");
}

#[tokio::test]
async fn without_dispatch_no_claim_reaches_the_worker_list() {
    let server = shared_server();
    let clock = ManualClock::new(1_000_000);
    let store = store_on(&server.url(), &fresh_tenant("nodispatch"), config(), &clock);
    let a = store.enqueue(&job("a"), &lane("l")).await.unwrap().dispatch.unwrap();
    store.enqueue(&job("b"), &lane("l")).await.unwrap();
    store.finish(&a).await.unwrap().unwrap();
    clock.advance(TTL_MS);
    assert_eq!(store.reap_expired().await.unwrap().len(), 1);

    let keys = store.keys();
    assert_eq!(server.command(&["EXISTS", &keys.chat_ready(), &keys.signal(JobKind::Chat)]), "0");
}

#[tokio::test]
async fn wake_tokens_stay_bounded_however_many_claims_are_pushed() {
    let server = shared_server();
    let store = store_on(&server.url(), &fresh_tenant("tokens"), config(), &ManualClock::default())
        .with_dispatch(true);
    let keys = store.keys();
    let tokens = || -> u64 { server.command(&["LLEN", &keys.signal(JobKind::Chat)]).parse().unwrap() };
    for i in 1..=200 {
        store.enqueue(&job(&format!("j{i}")), &lane(&format!("l{i}"))).await.unwrap();
        // Cut back to 64 only when a push takes the list past 128: at the 129th and 194th.
        let expected = if i <= 128 {
            i
        } else if i < 194 {
            i - 65
        } else {
            i - 130
        };
        assert_eq!(tokens(), expected, "after claim {i}");
    }
    assert_eq!(server.command(&["LLEN", &keys.chat_ready()]), "200", "every claim is kept");
}

#[tokio::test]
async fn a_drained_lane_leaves_no_key_and_its_fingerprints_expire_with_their_window() {
    let server = shared_server();
    let clock = ManualClock::new(1_000_000);
    let debounce_ms = 200;
    let config = LaneStoreConfig { debounce_ms, ..config() };
    let store = store_on(&server.url(), &fresh_tenant("drain"), config, &clock);
    let keys = store.keys().clone();
    let l = lane("student:s1:main");
    let quiet = lane("student:s2:main");

    let a = store.enqueue(&job("a"), &l).await.unwrap().dispatch.unwrap();
    store.enqueue(&job("b"), &l).await.unwrap();
    store.enqueue(&job("c"), &l).await.unwrap();
    assert!(store.remove_waiting(&l, &job("c")).await.unwrap());
    let b = store.finish(&a).await.unwrap().unwrap();
    store.reclaim(&b).await.unwrap();
    clock.advance(TTL_MS);
    let b = store.reap_expired().await.unwrap().remove(0);
    assert!(store.finish(&b).await.unwrap().is_none());
    assert_eq!(tenant_keys(&server, &keys), BTreeSet::from([keys.epoch()]), "only the epoch counter stays");

    // Fingerprints stay for their debounce window only, then leave no key either.
    store.register_recent(&quiet, "hello", &job("d")).await.unwrap();
    let ttl: i64 = server.command(&["PTTL", &keys.lane_recent(&quiet)]).parse().unwrap();
    assert!(0 < ttl && ttl <= i64::try_from(debounce_ms).unwrap(), "fingerprint hash TTL {ttl} ms");
    let only_epoch = BTreeSet::from([keys.epoch()]);
    eventually("the fingerprint window's keys expire", Duration::from_secs(10), || {
        let expired = tenant_keys(&server, &keys) == only_epoch;
        async move { expired }
    })
    .await;
}

#[tokio::test]
async fn a_busy_lanes_fingerprint_hash_stays_bounded_by_its_live_window() {
    let server = shared_server();
    let clock = ManualClock::new(1_000_000);
    // A window long in real time (the hash never expires during the test) but short in
    // manual-clock time: 100 registrations live in it at once.
    let config = LaneStoreConfig { debounce_ms: 10_000, ..config() };
    let store = store_on(&server.url(), &fresh_tenant("sweep"), config, &clock);
    let l = lane("student:chatty:main");
    for i in 0..1_000 {
        store.register_recent(&l, &format!("message {i}"), &job(&format!("j{i}"))).await.unwrap();
        clock.advance(100);
    }
    let held: usize = server.command(&["HLEN", &store.keys().lane_recent(&l)]).parse().unwrap();
    assert!(held <= 100 + 64, "{held} fingerprints held for a live window of 100");
    clock.set(clock.now_ms() - 100);
    assert_eq!(store.recent_job(&l, "message 999").await.unwrap(), Some(job("j999")));
    assert_eq!(store.recent_job(&l, "message 900").await.unwrap(), Some(job("j900")));
    assert_eq!(store.recent_job(&l, "message 899").await.unwrap(), None);
}

#[tokio::test]
async fn an_id_that_could_forge_a_hash_tag_or_a_glob_never_reaches_a_key() {
    // The store takes only validated ids, so these cannot even be handed to it.
    for bad in ["{t2}", "x}", "a*", "b?", "c[0]", "with space", "new\nline", "tab\t"] {
        let lane_err = LaneId::new(format!("student:{bad}:main")).unwrap_err();
        assert_eq!(lane_err.field, "lane_id", "{lane_err}");
        assert!(lane_err.rule.contains("forbidden character"), "{lane_err}");
        assert_eq!(JobId::new(format!("j{bad}")).unwrap_err().field, "job_id");
        assert_eq!(TenantId::new(format!("t{bad}")).unwrap_err().field, "tenant_id");
    }
    assert_eq!(LaneId::new("").unwrap_err().field, "lane_id");

    // What does get through keeps every key of the tenant under its one hash tag, even the
    // longest lane id of every allowed character.
    let server = shared_server();
    let tenant = fresh_tenant("ids");
    let store = store_on(&server.url(), &tenant, config(), &ManualClock::default());
    let long = "a:b@c.d-e_F9".repeat(20);
    let long_lane = lane(&long[..200]);
    let claim = store.enqueue(&job("j.1@x:y-z_Q"), &long_lane).await.unwrap().dispatch.unwrap();
    store.enqueue(&job("j2"), &long_lane).await.unwrap();
    store.register_recent(&long_lane, "{t2}:*?[x] |", &job("j2")).await.unwrap();
    let written = tenant_keys(&server, store.keys());
    assert!(written.contains(&store.keys().lane_active(&long_lane)));
    for key in lines(&server.command(&["KEYS", "*"])).iter().filter(|k| k.contains(tenant.as_str())) {
        assert!(key.starts_with(&format!("lw:{{{tenant}}}:")), "{key}");
        assert_eq!(key.matches('{').count(), 1, "{key}");
        assert_eq!(key.matches('}').count(), 1, "{key}");
        assert!(!key.contains('*') && !key.contains('?') && !key.contains('['), "{key}");
    }
    assert_eq!(store.finish(&claim).await.unwrap().unwrap().job_id, job("j2"));
}

#[tokio::test]
async fn tenants_on_one_server_cannot_see_finish_or_reap_each_others_lanes() {
    let server = shared_server();
    let clock = ManualClock::new(1_000_000);
    // A debounce window that outlasts the lease, to see a's fingerprint survive b's reset.
    let config = LaneStoreConfig { debounce_ms: 10 * TTL_MS, ..config() };
    let a = store_on(&server.url(), &fresh_tenant("a"), config, &clock);
    let b = store_on(&server.url(), &fresh_tenant("b"), config, &clock);
    let l = lane("student:s1:main");
    let claim = a.enqueue(&job("a1"), &l).await.unwrap().dispatch.unwrap();
    a.enqueue(&job("a2"), &l).await.unwrap();
    a.register_recent(&l, "hello", &job("a1")).await.unwrap();

    assert_eq!(b.lane_load(&l).await.unwrap(), LaneLoad::default());
    assert!(b.snapshot(None, 10).await.unwrap().is_empty());
    assert_eq!(b.find_position(&l, &job("a2")).await.unwrap(), 0);
    assert_eq!(b.recent_job(&l, "hello").await.unwrap(), None);
    assert!(!b.remove_waiting(&l, &job("a2")).await.unwrap());
    let stale = QueueError::StaleLease { job: job("a1"), epoch: claim.epoch, current: 0 };
    assert_eq!(b.finish(&claim).await.unwrap_err(), stale);
    assert_eq!(b.renew(&claim).await.unwrap_err(), stale);
    assert_eq!(b.reclaim(&claim).await.unwrap_err(), stale);
    clock.advance(TTL_MS);
    assert!(b.reap_expired().await.unwrap().is_empty(), "b reaped a's lane");
    b.reset().await.unwrap();
    // b's lane of the same name is its own, and idle.
    assert!(b.enqueue(&job("b1"), &l).await.unwrap().receipt.dispatched);

    assert_eq!(a.lane_load(&l).await.unwrap(), LaneLoad { queued: 1, active: 1, total: 2 });
    assert_eq!(a.recent_job(&l, "hello").await.unwrap(), Some(job("a1")));
    let reaped = a.reap_expired().await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].job_id, job("a1"));
    assert_eq!(a.finish(&reaped[0]).await.unwrap().unwrap().job_id, job("a2"));
}

#[tokio::test]
async fn an_unreachable_redis_is_refused_promptly_as_unavailable_and_the_store_recovers_after_restart() {
    let mut server = RedisServer::start();
    let store = store_on(&server.url(), &fresh_tenant("outage"), config(), &ManualClock::default());
    let l = lane("student:s1:main");
    assert!(store.enqueue(&job("a"), &l).await.unwrap().receipt.dispatched);

    server.kill();
    for attempt in 0..3 {
        let started = Instant::now();
        let err = store.lane_load(&l).await.unwrap_err();
        assert!(matches!(err, QueueError::Unavailable(_)), "attempt {attempt}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "attempt {attempt} took {:?}", started.elapsed());
    }
    let refused = store.enqueue(&job("b"), &l).await.unwrap_err();
    assert!(matches!(refused, QueueError::Unavailable(_)), "a submit was not refused: {refused:?}");

    server.restart();
    // The same store, not rebuilt: its pool reconnects. The restarted server kept no data.
    eventually("the store reaches the restarted server", Duration::from_secs(10), || async {
        store.lane_load(&l).await.is_ok()
    })
    .await;
    let again = store.enqueue(&job("c"), &l).await.unwrap();
    assert!(again.receipt.dispatched);
    assert!(store.finish(&again.dispatch.unwrap()).await.unwrap().is_none());
}

#[tokio::test]
async fn lease_deadlines_follow_the_injected_clock_not_the_servers() {
    let server = shared_server();
    let clock = ManualClock::new(5_000);
    let store = store_on(&server.url(), &fresh_tenant("clock"), config(), &clock);
    let claim = store.enqueue(&job("a"), &lane("l")).await.unwrap().dispatch.unwrap();
    assert_eq!(claim.lease_deadline_ms, 5_000 + TTL_MS);
    let score = server.command(&["ZSCORE", &store.keys().leases(), "l"]);
    assert_eq!(score, (5_000 + TTL_MS).to_string());
    // Far behind the server's wall clock, yet nothing is expired until the manual clock says so.
    assert!(store.reap_expired().await.unwrap().is_empty());
    clock.set(clock.now_ms() + TTL_MS);
    assert_eq!(store.reap_expired().await.unwrap().len(), 1);
}
