//! The per-tenant lane-store cache, ported from the seed's `test_chat_lane_store_factory.py`.

use std::sync::Arc;

use lane_store::ChatLaneStoreFactory;
use queue_core::{JobId, LaneId, LaneStoreConfig, ManualClock, Mode, QueueError, SharedClock, TenantId};

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

#[test]
fn redis_mode_is_refused_until_the_redis_backend_arrives() {
    let factory = ChatLaneStoreFactory::new();

    let err = factory
        .get_chat_lane_store(Some(&tenant("t1")), Mode::Redis, REDIS_URL, config(10, 5_000), clock())
        .unwrap_err();

    assert!(matches!(err, QueueError::Unsupported(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("Redis backend (issue #3)"), "{message}");
    assert!(message.contains("JOB_QUEUE_BACKEND=inline"), "{message}");
    assert!(factory.is_empty(), "a refused store is not cached");
}
