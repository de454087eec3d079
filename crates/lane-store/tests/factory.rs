//! The per-tenant lane-store cache, ported from the seed's `test_chat_lane_store_factory.py`;
//! the Redis mode against a real `redis-server`.

use std::sync::Arc;

use lane_store::ChatLaneStoreFactory;
use queue_core::{JobId, LaneId, LaneStoreConfig, ManualClock, Mode, QueueError, SharedClock, TenantId};
use redis_harness::RedisServer;

const REDIS_URL: &str = "redis://localhost:6379/0";

fn config(debounce_ms: u64, claim_ttl_ms: u64) -> LaneStoreConfig {
    LaneStoreConfig { debounce_ms, claim_ttl_ms, ..LaneStoreConfig::default() }
}

fn clock() -> SharedClock {
    Arc::new(ManualClock::default())
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

#[test]
fn the_factory_caches_one_store_per_tenant() {
    let factory = ChatLaneStoreFactory::new();
    let t1 = tenant("t1");
    let t2 = tenant("t2");

    let store_1 =
        factory.get_chat_lane_store(Some(&t1), Mode::Test, REDIS_URL, config(10, 5_000), clock()).unwrap();
    let store_2 =
        factory.get_chat_lane_store(Some(&t1), Mode::Test, REDIS_URL, config(10, 5_000), clock()).unwrap();
    let store_3 =
        factory.get_chat_lane_store(Some(&t2), Mode::Test, REDIS_URL, config(10, 5_000), clock()).unwrap();

    assert!(Arc::ptr_eq(&store_1, &store_2));
    assert!(!Arc::ptr_eq(&store_1, &store_3));
    assert_eq!(store_1.kind(), "memory");
    assert_eq!(store_3.kind(), "memory");
    assert_eq!(factory.len(), 2);
}

#[test]
fn resetting_the_factory_hands_out_new_stores() {
    let factory = ChatLaneStoreFactory::default();
    let t1 = tenant("t1");

    let store_1 =
        factory.get_chat_lane_store(Some(&t1), Mode::Test, REDIS_URL, config(0, 1_000), clock()).unwrap();
    factory.reset_chat_lane_stores();
    assert!(factory.is_empty());
    let store_2 =
        factory.get_chat_lane_store(Some(&t1), Mode::Test, REDIS_URL, config(0, 1_000), clock()).unwrap();

    assert!(!Arc::ptr_eq(&store_1, &store_2));
}

#[test]
fn no_tenant_shares_the_default_tenants_store() {
    let factory = ChatLaneStoreFactory::new();
    let none =
        factory.get_chat_lane_store(None, Mode::Inline, REDIS_URL, config(10, 5_000), clock()).unwrap();
    let default = factory
        .get_chat_lane_store(
            Some(&TenantId::default_tenant()),
            Mode::Inline,
            REDIS_URL,
            config(10, 5_000),
            clock(),
        )
        .unwrap();
    assert!(Arc::ptr_eq(&none, &default));
    assert_eq!(none.kind(), "memory");
}

#[tokio::test]
async fn stores_of_different_tenants_do_not_share_lanes() {
    let factory = ChatLaneStoreFactory::new();
    let a = factory
        .get_chat_lane_store(Some(&tenant("a")), Mode::Inline, REDIS_URL, config(10, 5_000), clock())
        .unwrap();
    let b = factory
        .get_chat_lane_store(Some(&tenant("b")), Mode::Inline, REDIS_URL, config(10, 5_000), clock())
        .unwrap();
    let lane = LaneId::new("student:s1:main").unwrap();

    let in_a = a.enqueue(&JobId::new("j1").unwrap(), &lane).await.unwrap();
    let in_b = b.enqueue(&JobId::new("j2").unwrap(), &lane).await.unwrap();

    assert!(in_a.receipt.dispatched);
    assert!(in_b.receipt.dispatched, "tenant b's lane of the same name is its own, and idle");
}

#[tokio::test]
async fn redis_mode_builds_a_redis_lane_store_per_tenant_on_the_given_server() {
    let server = RedisServer::start();
    let factory = ChatLaneStoreFactory::new();
    let t1 = tenant("t1");

    let store = factory
        .get_chat_lane_store(Some(&t1), Mode::Redis, &server.url(), config(10, 5_000), clock())
        .unwrap();
    let again = factory
        .get_chat_lane_store(Some(&t1), Mode::Redis, &server.url(), config(10, 5_000), clock())
        .unwrap();
    let other =
        factory.get_chat_lane_store(None, Mode::Redis, &server.url(), config(10, 5_000), clock()).unwrap();

    assert_eq!(store.kind(), "redis");
    assert!(Arc::ptr_eq(&store, &again));
    assert!(!Arc::ptr_eq(&store, &other));
    let lane = LaneId::new("student:s1:main").unwrap();
    assert!(store.enqueue(&JobId::new("j1").unwrap(), &lane).await.unwrap().receipt.dispatched);
    assert!(other.enqueue(&JobId::new("j2").unwrap(), &lane).await.unwrap().receipt.dispatched);
    assert_eq!(
        store.lane_load(&lane).await.unwrap().total,
        1,
        "tenant t1 and the default tenant share no lane"
    );
    let keys = server.command(&["KEYS", "*"]);
    assert!(keys.lines().any(|k| k.starts_with("lw:{t1}:")), "{keys}");
    assert!(keys.lines().any(|k| k.starts_with("lw:{default}:")), "{keys}");
}

#[test]
fn an_unusable_redis_url_is_a_config_error_naming_redis_url() {
    let factory = ChatLaneStoreFactory::new();

    let err = factory
        .get_chat_lane_store(
            Some(&tenant("t1")),
            Mode::Redis,
            "http://localhost:6379",
            config(10, 5_000),
            clock(),
        )
        .unwrap_err();

    assert!(matches!(err, QueueError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("REDIS_URL"), "{err}");
    assert!(factory.is_empty(), "a refused store is not cached");
}

#[tokio::test]
async fn the_typed_redis_store_is_the_cached_one_and_a_memory_one_is_refused() {
    // Stores connect lazily (on the runtime), so no server is needed to build them.
    let url = "redis://127.0.0.1:1/0";
    let factory = ChatLaneStoreFactory::new();
    let t1 = tenant("t1");

    let typed = factory.get_redis_lane_store(Some(&t1), url, config(10, 5_000), clock()).unwrap();
    let shared =
        factory.get_chat_lane_store(Some(&t1), Mode::Redis, url, config(10, 5_000), clock()).unwrap();
    let typed_as_shared: Arc<dyn queue_core::ChatLaneStore> = typed.clone();
    assert!(Arc::ptr_eq(&typed_as_shared, &shared), "one cached store, handed out twice");
    assert_eq!(factory.len(), 1);

    let t2 = tenant("t2");
    factory.get_chat_lane_store(Some(&t2), Mode::Inline, url, config(10, 5_000), clock()).unwrap();
    let err = factory.get_redis_lane_store(Some(&t2), url, config(10, 5_000), clock()).unwrap_err();
    assert!(matches!(err, QueueError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("t2") && err.to_string().contains("memory"), "{err}");
}
