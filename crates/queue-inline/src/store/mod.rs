//! Job stores of the in-process backend: [`SqliteJobStore`], the durable embedded store with
//! group commit, and [`MemoryJobStore`], the ephemeral one for tests and benchmarks.

mod id_table;
mod memory;
mod sqlite;

pub use memory::MemoryJobStore;
pub use sqlite::{SqliteJobStore, SqliteStoreConfig};

use queue_core::{JobKind, JobStatus};

/// Position of `kind` in [`JobKind::ALL`], for per-kind arrays.
const fn kind_index(kind: JobKind) -> usize {
    match kind {
        JobKind::Upload => 0,
        JobKind::Exam => 1,
        JobKind::ProfileUpdate => 2,
        JobKind::Chat => 3,
    }
}

/// Position of `status` in [`JobStatus::ALL`], for per-state arrays.
const fn status_index(status: JobStatus) -> usize {
    match status {
        JobStatus::Queued => 0,
        JobStatus::Processing => 1,
        JobStatus::Done => 2,
        JobStatus::Failed => 3,
        JobStatus::Cancelled => 4,
    }
}
