//! The queue-core conformance battery on the inline backend: memory lanes over the ephemeral
//! memory store, and over the durable SQLite store.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lane_store::MemoryLaneStore;
use queue_core::conformance::{Rig, RigFactory, RigOptions};
use queue_core::{
    HandlerSet, IdempotencyStore, JobStore, LimitCaps, ManualClock, QueueBackend, SharedClock, TenantId,
};
use queue_inline::{
    InlineDeps, InlineQueueBackend, InlineRuntime, InlineRuntimeConfig, LocalLimiter, MemoryIdempotencyStore,
    MemoryJobStore, SqliteJobStore, SqliteStoreConfig,
};

/// Which job store the rigs use.
enum Durability {
    Memory,
    Sqlite(tempfile::TempDir),
}

struct InlineRigs {
    durability: Durability,
    /// The runtime of the rig built last (one rig per test), so a crash can kill it.
    current: Mutex<Option<InlineRuntime>>,
}

impl InlineRigs {
    fn memory() -> Self {
        Self { durability: Durability::Memory, current: Mutex::new(None) }
    }

    fn sqlite() -> Self {
        Self {
            durability: Durability::Sqlite(tempfile::tempdir().expect("tempdir")),
            current: Mutex::new(None),
        }
    }

    fn db_path(&self) -> Option<PathBuf> {
        match &self.durability {
            Durability::Memory => None,
            Durability::Sqlite(dir) => Some(dir.path().join("jobs.db")),
        }
    }

    fn open_store(&self, clock: &SharedClock) -> (Arc<dyn JobStore>, Arc<dyn IdempotencyStore>) {
        let tenant = TenantId::new("conformance").expect("tenant");
        match self.db_path() {
            None => (
                Arc::new(MemoryJobStore::new(tenant, clock.clone())),
                Arc::new(MemoryIdempotencyStore::new(clock.clone(), 86_400_000)),
            ),
            Some(path) => {
                let store = Arc::new(
                    SqliteJobStore::open(&path, tenant, clock.clone(), SqliteStoreConfig::default())
                        .expect("open sqlite"),
                );
                (store.clone(), store)
            }
        }
    }

    async fn start(
        &self,
        store: Arc<dyn JobStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        clock: ManualClock,
        handlers: HandlerSet,
        options: &RigOptions,
    ) -> Rig {
        let shared: SharedClock = Arc::new(clock.clone());
        let lanes = Arc::new(MemoryLaneStore::new(options.lanes, shared.clone()));
        let config = InlineRuntimeConfig {
            chat_workers: options.chat_workers,
            max_attempts: options.max_attempts,
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(20),
            heartbeat_interval: if options.heartbeats {
                Duration::from_millis(10)
            } else {
                Duration::from_secs(3600)
            },
            reaper_interval: Duration::from_millis(5),
            stop_deadline: options.stop_deadline,
            ..InlineRuntimeConfig::default()
        };
        let runtime = InlineRuntime::new(
            config,
            InlineDeps {
                store: store.clone(),
                lanes: lanes.clone(),
                limiter: Arc::new(LocalLimiter::new(LimitCaps::default())),
                handlers,
                clock: shared,
            },
        );
        *self.current.lock().expect("current runtime") = Some(runtime.clone());
        let backend = Arc::new(InlineQueueBackend::over_runtime(InlineQueueBackend::TEST_NAME, runtime));
        backend.start().await.expect("start");
        Rig { backend, store, lanes, idempotency, clock }
    }
}

#[async_trait]
impl RigFactory for InlineRigs {
    async fn build(&self, handlers: HandlerSet, options: RigOptions) -> Rig {
        let clock = ManualClock::default();
        let shared: SharedClock = Arc::new(clock.clone());
        let (store, idempotency) = self.open_store(&shared);
        self.start(store, idempotency, clock, handlers, &options).await
    }

    async fn crash_and_restart(&self, rig: Rig, handlers: HandlerSet, options: RigOptions) -> Rig {
        let runtime = self.current.lock().expect("current runtime").take().expect("a rig was built");
        runtime.kill().await;
        // Memory lanes die with the process; the job store is what survives (the same memory
        // store, standing in for a durable one, or the SQLite file reopened).
        let (store, idempotency) = match self.db_path() {
            None => (rig.store.clone(), rig.idempotency.clone()),
            Some(_) => {
                let shared: SharedClock = Arc::new(rig.clock.clone());
                self.open_store(&shared)
            }
        };
        self.start(store, idempotency, rig.clock.clone(), handlers, &options).await
    }
}

mod memory {
    use super::InlineRigs;
    queue_core::conformance_tests!(InlineRigs::memory());
}

mod sqlite {
    use super::InlineRigs;
    queue_core::conformance_tests!(InlineRigs::sqlite());
}
