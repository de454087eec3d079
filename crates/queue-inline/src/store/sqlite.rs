//! The durable embedded job store: one SQLite file per tenant, written by one thread that commits
//! every operation waiting, and every one that arrives while it writes them, in one transaction
//! (group commit), read through a separate connection.
//!
//! Why this shape: an accepted job must survive the process being killed, which costs a
//! durable commit; one writer draining a queue pays that cost once per batch instead of once per
//! job, and a WAL database lets the read connection run beside it without blocking.

mod queue;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use async_trait::async_trait;
use queue_core::{
    IdempotencyClaim, IdempotencyStore, JobId, JobKind, JobRecord, JobStatus, JobStore, JobUpdate, LaneId,
    NewJob, QueueError, QueueResult, RequestId, SharedClock, StatusCounts, TenantId,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, PrepFlags, Row, Statement, params};
use tokio::sync::oneshot;

use self::queue::OpQueue;

/// Settings of a [`SqliteJobStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteStoreConfig {
    /// Most operations committed in one transaction (clamped to at least 1); a batch create
    /// counts one per job, though it is never split. Larger batches spread one fsync over more
    /// jobs; the bound keeps one transaction, and the wait of the first caller in it, short.
    pub max_batch: usize,
    /// How long a `request_id` keeps mapping to the job it created. Keep it no longer than the
    /// retention of finished jobs, or a retried submit may be sent to a purged job.
    pub idempotency_ttl_ms: u64,
    /// Page cache of each of the store's two connections, in KiB (SQLite's own default is
    /// 2,000). Job ids are time-ordered, so inserts and the start and end of jobs touch the
    /// newest pages of each index: a small cache holds them, and the OS page cache serves the
    /// rest without a disk read. A cache fills up to its size as the file grows, whatever the
    /// workload, so this is memory the process keeps.
    pub page_cache_kib: u32,
}

impl Default for SqliteStoreConfig {
    fn default() -> Self {
        Self { max_batch: 512, idempotency_ttl_ms: 24 * 60 * 60 * 1000, page_cache_kib: 512 }
    }
}

/// Bumped when the schema changes incompatibly; a file written by a newer version is refused.
const SCHEMA_VERSION: i64 = 1;

/// The condition of a finished job, word for word as the partial indexes of finished jobs have
/// it: a query uses such an index only when its WHERE clause contains the condition (a bound
/// `status = ?` does not imply it). A macro, as `columns!`, so the schema and the queries share it.
///
/// Two inequalities rather than `status NOT IN ('queued', 'processing')`: SQLite compiles that
/// `NOT IN` with a bitwise AND of the state with itself (its test for `NULL`), which parses the
/// text as a number at every evaluation, and each transition evaluates the condition of both
/// finished indexes on the old row and on the new one: about 2,400 instructions per job (the
/// writer's callgrind count in a W2 drain).
macro_rules! finished {
    () => {
        "status <> 'queued' AND status <> 'processing'"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    lane          TEXT,
    request_id    TEXT,
    status        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    lease_epoch   INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    payload       TEXT NOT NULL,
    result        TEXT,
    error         TEXT
);
-- Two partial indexes split the jobs by state, so that the claim path (a start and an end per
-- job) seeks in keys that begin with an integer, which SQLite compares on its fast path.
-- They replace jobs_by_kind_status_seq (kind, status, seq), which held every job: its keys all
-- began with the same kind, so every comparison in its B-tree took SQLite's slow path through
-- kind and status, four seeks per job, and a million queued jobs added about a third to the
-- claim's instructions (BENCHMARKS.md, W5). A file that has the old index loses it at its next
-- open, which builds these two (a one-off pass over the table).
-- The pending jobs in submission order: scan_pending, and list and counts of pending states.
-- Starting a job rewrites its entry in place (same seq).
CREATE INDEX IF NOT EXISTS jobs_pending_by_seq ON jobs (seq, kind, status)
    WHERE status IN ('queued', 'processing');
DROP INDEX IF EXISTS jobs_by_kind_status_seq;
-- The two indexes of finished jobs. Their condition names the two pending states rather than the
-- three final ones (an IN list of more than two values is compiled to a temporary b-tree built
-- at every row change), as two inequalities (see `finished!`). They replace jobs_finished_by_kind
-- and jobs_finished_by_updated, which had the same keys under `status NOT IN ('queued',
-- 'processing')`: a file that has those loses them at its next open, which builds these two (a
-- one-off pass over the finished jobs). An older build that opens the file again builds its
-- own beside them and works as before.
-- The finished jobs by kind: list and counts of final states. A job enters it once, at its end.
DROP INDEX IF EXISTS jobs_finished_by_kind;
CREATE INDEX IF NOT EXISTS jobs_final_by_kind ON jobs (kind, status, seq)
    WHERE ",
    finished!(),
    ";
-- purge_finished is a range scan of this one. Only finished jobs are in it, so starting a job
-- (which changes its updated_at_ms) does not touch it. It replaced jobs_by_status_updated, which
-- held every job; a file that has that one loses it at its next open.
DROP INDEX IF EXISTS jobs_finished_by_updated;
CREATE INDEX IF NOT EXISTS jobs_final_by_updated ON jobs (updated_at_ms)
    WHERE ",
    finished!(),
    ";
DROP INDEX IF EXISTS jobs_by_status_updated;
CREATE TABLE IF NOT EXISTS idempotency (
    request_id    TEXT PRIMARY KEY NOT NULL,
    job_id        TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value NOT NULL
);
"
);

/// The `jobs` columns in the order [`RawJob::from_row`] reads them. A macro so that the SQL built
/// from it is a `&'static str` and each statement is found in the cache without formatting.
macro_rules! columns {
    () => {
        "id, kind, lane, request_id, status, attempt, lease_epoch, seq, created_at_ms, updated_at_ms, payload, \
         result, error"
    };
}

const GET_SQL: &str = concat!("SELECT ", columns!(), " FROM jobs WHERE id = ?1");
/// As [`GET_SQL`], plus the row's `rowid` (column 13), so that the update that follows finds
/// the row without searching the id index again.
const GET_FOR_UPDATE_SQL: &str = concat!("SELECT ", columns!(), ", rowid FROM jobs WHERE id = ?1");
/// The row a `transition` changed, written back whole but for the columns no update touches,
/// for a row left in `status`: one statement per state, prepared at start, with the state in the
/// text (binding a text copies it). Without `result_and_error`, for an update that sets neither
/// (a start), the statement leaves those two columns as they are and takes no `?5`, `?6`.
fn transition_write_sql(status: JobStatus, result_and_error: bool) -> String {
    let rest = if result_and_error { ", result = ?5, error = ?6" } else { "" };
    format!(
        "UPDATE jobs SET status = '{}', attempt = ?2, lease_epoch = ?3, updated_at_ms = ?4{rest} WHERE rowid = ?1",
        status.as_str()
    )
}
/// As [`GET_FOR_UPDATE_SQL`], found by a [`RowHints`] `rowid` (`?1`): a seek of the table alone.
/// The caller checks that the row's id (column 0) is the one it asked for.
const GET_AT_ROWID_SQL: &str = concat!("SELECT ", columns!(), " FROM jobs WHERE rowid = ?1");
/// What [`JobUpdate::check`] needs of a row, and the row's `rowid` for the update that follows.
const SETTLE_READ_SQL: &str = "SELECT status, lease_epoch, rowid FROM jobs WHERE id = ?1";
/// A checked update written without the record in hand: each column as [`JobRecord::apply`] sets
/// it, a field the update leaves alone (`NULL` for the epoch, the result, the error) keeping
/// its stored value. A macro, as `columns!`, for the two statements that share it.
macro_rules! settle_set {
    () => {
        "UPDATE jobs SET status = ?2, lease_epoch = COALESCE(?3, lease_epoch), attempt = attempt + ?4, \
         updated_at_ms = ?5, result = COALESCE(?6, result), error = COALESCE(?7, error) "
    };
}
const SETTLE_WRITE_SQL: &str = concat!(settle_set!(), "WHERE rowid = ?1");
/// A settle in one statement, for an update that moves a job to the state `guard.to`: the row
/// of id `?1` is written only if its state is one of `guard.from` (the states the transition
/// table lets reach the new one, see [`Guard`]) and, with a fence, its lease epoch is `?7`. One
/// seek of the id index and one statement instead of a read and a write; a row it leaves alone
/// is read by [`SETTLE_READ_SQL`] for the reason. The states are written into the text rather
/// than bound at each use: binding a text copies it, about 280 instructions each (callgrind).
///
/// The statement writes and checks only the parts `shape` says the update has (the new epoch
/// `?2`, one more attempt, the result `?5`, the error `?6`, the fence `?7`; `?4` is the time):
/// one statement per target and shape, prepared at first use. The single statement per target
/// it replaced, with `COALESCE(?, column)` keeping a column the update leaves alone, bound three
/// `NULL`s and an attempt of 0 for an outcome (a bound value costs 80 to 280 instructions) and
/// ran their bytecode. With [`SettleShape::at_rowid`], the row is found by its `rowid` (`?8`, from
/// [`RowHints`]) and its id is compared, instead of a seek of the id index. The numbers of the
/// parameters stay put whichever are present (SQLite lets them skip numbers).
fn settle_guarded_sql(guard: Guard, shape: SettleShape) -> String {
    let [first, second] = guard.from;
    let mut set = format!("status = '{}'", guard.to.as_str());
    for (present, column) in [
        (shape.set_epoch, ", lease_epoch = ?2"),
        (shape.bump_attempt, ", attempt = attempt + 1"),
        (true, ", updated_at_ms = ?4"),
        (shape.result, ", result = ?5"),
        (shape.error, ", error = ?6"),
    ] {
        if present {
            set.push_str(column);
        }
    }
    let row = if shape.at_rowid { "rowid = ?8 AND id = ?1" } else { "id = ?1" };
    let fence = if shape.fence { " AND lease_epoch = ?7" } else { "" };
    format!("UPDATE jobs SET {set} WHERE {row} AND status IN ('{first}', '{second}'){fence}")
}

/// Which parts of an update a guarded settle writes or checks ([`settle_guarded_sql`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SettleShape {
    set_epoch: bool,
    bump_attempt: bool,
    result: bool,
    error: bool,
    fence: bool,
    /// The row is found by a [`RowHints`] `rowid`.
    at_rowid: bool,
}

impl SettleShape {
    fn of(update: &JobUpdate, result: Option<&str>, at_rowid: bool) -> Self {
        Self {
            set_epoch: update.set_epoch.is_some(),
            bump_attempt: update.bump_attempt,
            result: result.is_some(),
            error: update.error.is_some(),
            fence: update.expect_epoch.is_some(),
            at_rowid,
        }
    }
}
const PURGE_SQL: &str = concat!("DELETE FROM jobs WHERE ", finished!(), " AND updated_at_ms < ?1");
/// A create, which writes nothing when the id is taken: the insert's own seek of the id index is
/// the check, so a create seeks that index once. The columns every new record has the same value
/// in (as [`JobRecord::from_new`] makes it: `queued`, no attempt, epoch 0, no result, no error)
/// are written in the text rather than bound at each create; `?5` is both timestamps.
const INSERT_SQL: &str = concat!(
    "INSERT INTO jobs (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, 'queued', 0, 0, ?6, ?5, ?5, ?7, NULL, NULL) ON CONFLICT (id) DO NOTHING"
);
// Each query on a state names the condition of the partial index it needs, word for word: SQLite
// uses a partial index only for a query whose WHERE clause contains that condition, and a bound
// `status = ?` does not imply it.
/// The newest jobs of one kind in one pending state: a backward scan of `jobs_pending_by_seq`.
const LIST_PENDING_BY_KIND_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM jobs WHERE status IN ('queued', 'processing') AND kind = ?1 AND status = ?2 ORDER BY seq DESC LIMIT ?3"
);
/// The newest jobs of one kind in one final state: a range of `jobs_final_by_kind`.
const LIST_FINISHED_BY_KIND_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM jobs WHERE ",
    finished!(),
    " AND kind = ?1 AND status = ?2 ORDER BY seq DESC LIMIT ?3"
);
const LIST_PENDING_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM jobs WHERE status IN ('queued', 'processing') AND status = ?1 ORDER BY seq DESC LIMIT ?2"
);
const LIST_FINISHED_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM jobs WHERE ",
    finished!(),
    " AND status = ?1 ORDER BY seq DESC LIMIT ?2"
);
/// The pending jobs of one kind in submission order: a scan of `jobs_pending_by_seq`, whose
/// entries carry the kind, so rows of other kinds are skipped without being read.
const SCAN_PENDING_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM jobs WHERE status IN ('queued', 'processing') AND kind = ?1 ORDER BY seq"
);
/// A kind's jobs per state, from the two partial indexes alone (no row is read).
const COUNTS_SQL: &str = concat!(
    "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'processing') AND kind = ?1 GROUP BY status \
     UNION ALL SELECT status, COUNT(*) FROM jobs WHERE ",
    finished!(),
    " AND kind = ?1 GROUP BY status"
);

/// How long a connection waits for a lock held by another connection (a checkpoint, or a second
/// process opening the same file) before giving up with an error.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// One tenant's job records (and idempotency keys) in one SQLite file.
///
/// Writes go to a dedicated writer thread and are durable when they return; reads run on a
/// blocking thread through a second connection and see every write that has returned. Dropping
/// the store lets the writer finish its current batch, then joins it.
pub struct SqliteJobStore {
    tenant: TenantId,
    clock: SharedClock,
    path: PathBuf,
    /// `path` as text, for error messages.
    shown: Arc<str>,
    /// The writer's operations; closing it is what stops the writer.
    ops: Arc<OpQueue<Envelope>>,
    writer: Option<JoinHandle<()>>,
    reader: Arc<Mutex<Connection>>,
    stats: Arc<WriterStats>,
}

#[derive(Debug, Default)]
struct WriterStats {
    batches: AtomicU64,
    ops: AtomicU64,
}

impl SqliteJobStore {
    /// Opens (creating it and its parent directories if needed) the store at `path` for
    /// `tenant`, and starts its writer thread. It does blocking file I/O: call it at startup or
    /// from `spawn_blocking`.
    ///
    /// # Errors
    /// [`QueueError::Storage`] naming `path` when it cannot be created or opened, is not a job
    /// store, or was written by a newer schema; [`QueueError::Config`] when it belongs to another
    /// tenant.
    pub fn open(
        path: &Path,
        tenant: TenantId,
        clock: SharedClock,
        config: SqliteStoreConfig,
    ) -> QueueResult<Self> {
        let shown: Arc<str> = path.display().to_string().into();
        let fail =
            |what: &str, e: &dyn fmt::Display| QueueError::Storage(format!("job store {shown}: {what}: {e}"));

        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| fail(&format!("cannot create the directory {}", parent.display()), &e))?;
        }
        // No URI flag: a path is a path, even one that contains `?`.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| fail("cannot open", &e))?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))
            .map_err(|e| fail("cannot configure", &e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| fail("cannot switch to WAL (is it a SQLite database?)", &e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail("cannot switch to WAL", &format!("journal mode stayed {mode}")));
        }
        // Durability. In WAL mode a commit appends to the -wal file. With synchronous=NORMAL that
        // append reaches the OS at commit but is fsynced only at checkpoints: it survives a
        // process crash (SIGKILL — the kernel still holds the pages) but not power loss or a
        // kernel panic. FULL fsyncs the WAL at every commit, so an accepted job survives those
        // too; group commit is what makes that affordable (one fsync per batch, not per job).
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| fail("cannot configure", &e))?;
        // A negative cache_size is in KiB.
        let cache_size = -i64::from(config.page_cache_kib);
        conn.pragma_update(None, "cache_size", cache_size).map_err(|e| fail("cannot configure", &e))?;
        let next_seq =
            prepare_schema(&mut conn, &tenant).map_err(|e| e.into_queue(&shown, "cannot prepare"))?;

        // The reader opens after the writer made the file a WAL database with its schema.
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail("cannot open the read connection", &e))?;
        reader
            .busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))
            .and_then(|()| reader.pragma_update(None, "query_only", true))
            .and_then(|()| reader.pragma_update(None, "cache_size", cache_size))
            .map_err(|e| fail("cannot configure the read connection", &e))?;

        let stats = Arc::new(WriterStats::default());
        let ops = Arc::new(OpQueue::new());
        let queue = Arc::clone(&ops);
        // The writer's statements borrow its connection, so the thread that owns the connection
        // prepares them, and says whether it could before `open` returns.
        let (ready, prepared) = mpsc::sync_channel(1);
        let (writer_tenant, writer_shown, writer_stats) =
            (tenant.clone(), Arc::clone(&shown), Arc::clone(&stats));
        let handle = std::thread::Builder::new()
            .name(format!("laneway-sqlite-{tenant}"))
            .spawn(move || {
                // However the thread ends, the callers waiting on it hear that it has stopped.
                let _stop = StopTaking(&queue);
                let hot = match HotStatements::prepare(&conn) {
                    Ok(hot) => hot,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let writer = Writer {
                    conn: &conn,
                    hot,
                    rows: RowHints::default(),
                    tenant: writer_tenant,
                    shown: writer_shown,
                    next_seq,
                    idempotency_ttl_ms: config.idempotency_ttl_ms,
                    max_batch: config.max_batch.max(1),
                    stats: writer_stats,
                };
                writer.run(&queue);
            })
            .map_err(|e| fail("cannot start the writer thread", &e))?;
        let started = prepared.recv();
        if !matches!(started, Ok(Ok(()))) {
            let _ = handle.join();
            return Err(match started {
                Ok(Err(e)) => fail("cannot prepare the writer's statements", &e),
                _ => fail("cannot start the writer thread", &"it stopped before it was ready"),
            });
        }
        tracing::debug!(tenant = %tenant, path = %shown, next_seq, "opened the SQLite job store");

        Ok(Self {
            tenant,
            clock,
            path: path.to_path_buf(),
            shown,
            ops,
            writer: Some(handle),
            reader: Arc::new(Mutex::new(reader)),
            stats,
        })
    }

    /// The file this store lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions the writer has committed (each holds one or more operations).
    #[must_use]
    pub fn batches_committed(&self) -> u64 {
        self.stats.batches.load(Ordering::Acquire)
    }

    /// How many write operations have taken effect; each job a batch create created counts as
    /// one. Refused ones (an existing id, a stale lease) are not counted. Fewer batches than
    /// operations means group commit shared fsyncs.
    #[must_use]
    pub fn ops_committed(&self) -> u64 {
        self.stats.ops.load(Ordering::Acquire)
    }

    fn writer_gone(&self) -> QueueError {
        QueueError::Storage(format!("job store {}: the writer thread has stopped", self.shown))
    }

    /// Hands `op` to the writer and waits until its batch is committed.
    async fn write(&self, op: WriteOp) -> QueueResult<Outcome> {
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope { op, now_ms: self.clock.now_ms(), reply };
        self.ops.push(envelope).map_err(|_| self.writer_gone())?;
        answer.await.map_err(|_| self.writer_gone())?
    }

    /// A new result encoded for the writer, which handles JSON as text only.
    fn result_json(&self, result: Option<&serde_json::Value>, what: &str) -> QueueResult<Option<String>> {
        result.map(|r| to_json(r, "result")).transpose().map_err(|e| e.into_queue(&self.shown, what))
    }

    /// Runs `f` on the read connection on a blocking thread.
    async fn read<T, F>(&self, what: &'static str, f: F) -> QueueResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &TenantId) -> Result<T, Failure> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        let tenant = self.tenant.clone();
        let shown = Arc::clone(&self.shown);
        let task = tokio::task::spawn_blocking(move || {
            // A panic in an earlier read leaves the connection itself usable.
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn, &tenant).map_err(|e| e.into_queue(&shown, what))
        });
        task.await.map_err(|e| {
            QueueError::Storage(format!("job store {}: {what} did not finish: {e}", self.shown))
        })?
    }
}

impl fmt::Debug for SqliteJobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteJobStore")
            .field("tenant", &self.tenant)
            .field("path", &self.path)
            .field("batches_committed", &self.batches_committed())
            .field("ops_committed", &self.ops_committed())
            .finish_non_exhaustive()
    }
}

impl Drop for SqliteJobStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has answered what it holds.
        self.ops.close();
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(tenant = %self.tenant, path = %self.shown, "the SQLite writer thread panicked");
        }
    }
}

fn unexpected(outcome: &Outcome) -> QueueError {
    QueueError::Storage(format!("job store: the writer answered with an unexpected {outcome:?}"))
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn create(&self, job: NewJob) -> QueueResult<JobRecord> {
        // JSON is encoded here, on the caller's thread, to keep the single writer thread short.
        let payload = to_json(&job.payload, "payload").map_err(|e| e.into_queue(&self.shown, "create"))?;
        match self.write(WriteOp::Create { job, payload }).await? {
            Outcome::Record(record) => Ok(*record),
            other => Err(unexpected(&other)),
        }
    }

    /// The whole batch is one operation of the writer, so it commits in one transaction (one
    /// fsync), with whatever else is waiting at the time. Refused jobs (a taken id, an id
    /// repeated in the batch) write nothing and the others still commit; a failed commit fails
    /// the call, and then no job of the batch was created.
    async fn create_many(&self, jobs: Vec<NewJob>) -> QueueResult<Vec<QueueResult<JobRecord>>> {
        // As in `create`, JSON is encoded on the caller's thread. A payload that cannot be
        // encoded fails its own job, which is not sent.
        let mut answers: Vec<Option<QueueResult<JobRecord>>> = Vec::with_capacity(jobs.len());
        let mut sent = Vec::with_capacity(jobs.len());
        for job in jobs {
            match to_json(&job.payload, "payload") {
                Ok(payload) => {
                    answers.push(None);
                    sent.push((job, payload));
                }
                Err(e) => answers.push(Some(Err(e.into_queue(&self.shown, "create")))),
            }
        }
        if sent.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
        }
        let mut created = match self.write(WriteOp::CreateMany(sent)).await? {
            Outcome::Records(created) => created.into_iter(),
            other => return Err(unexpected(&other)),
        };
        let missing = || Err(QueueError::Storage(format!("job store {}: a job got no answer", self.shown)));
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| created.next().unwrap_or_else(missing)))
            .collect())
    }

    async fn get(&self, id: &JobId) -> QueueResult<Option<JobRecord>> {
        let id = id.clone();
        self.read("get", move |conn, tenant| {
            let raw = conn.prepare_cached(GET_SQL)?.query_row([id.as_str()], RawJob::from_row).optional()?;
            raw.map(|raw| raw.decode(tenant)).transpose()
        })
        .await
    }

    async fn transition(&self, id: &JobId, mut update: JobUpdate) -> QueueResult<JobRecord> {
        // The writer thread neither encodes nor decodes JSON: the new result travels as text,
        // and the payload comes back as text that is decoded here, off the writer.
        let result = update.result.take();
        let result_json = self.result_json(result.as_ref(), "transition")?;
        let op = WriteOp::Transition { id: id.clone(), update: SentUpdate::new(update), result: result_json };
        let changed = match self.write(op).await? {
            Outcome::Transitioned(changed) => changed,
            other => return Err(unexpected(&other)),
        };
        let Transitioned { mut record, payload, result: stored_result } = *changed;
        let decode = || -> Result<JobRecord, Failure> {
            record.payload = json_of(&record.id, &payload, "payload")?;
            record.result = match result {
                Some(new) => Some(new),
                None => stored_result.as_deref().map(|r| json_of(&record.id, r, "result")).transpose()?,
            };
            Ok(record)
        };
        decode().map_err(|e| e.into_queue(&self.shown, "transition"))
    }

    /// The writer reads the row's state and lease epoch alone, checks them as `transition`
    /// does, and writes the columns the update sets: the payload is neither read nor decoded.
    async fn settle(&self, id: &JobId, mut update: JobUpdate) -> QueueResult<()> {
        let result = self.result_json(update.result.take().as_ref(), "settle")?;
        match self.write(WriteOp::Settle { id: id.clone(), update: SentUpdate::new(update), result }).await? {
            Outcome::Settled => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn delete(&self, id: &JobId) -> QueueResult<bool> {
        match self.write(WriteOp::Delete(id.clone())).await? {
            Outcome::Flag(deleted) => Ok(deleted),
            other => Err(unexpected(&other)),
        }
    }

    async fn scan_pending(&self, kind: JobKind) -> QueueResult<Vec<JobRecord>> {
        self.read("scan_pending", move |conn, tenant| {
            let mut stmt = conn.prepare_cached(SCAN_PENDING_SQL)?;
            let raws = stmt.query_map([kind.as_str()], RawJob::from_row)?.collect::<Result<Vec<_>, _>>()?;
            raws.into_iter().map(|raw| raw.decode(tenant)).collect()
        })
        .await
    }

    async fn list(
        &self,
        kind: Option<JobKind>,
        status: JobStatus,
        limit: usize,
    ) -> QueueResult<Vec<JobRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("list", move |conn, tenant| {
            let pending = status.is_pending();
            let raws = if let Some(kind) = kind {
                let sql = if pending { LIST_PENDING_BY_KIND_SQL } else { LIST_FINISHED_BY_KIND_SQL };
                let mut stmt = conn.prepare_cached(sql)?;
                stmt.query_map(params![kind.as_str(), status.as_str(), limit], RawJob::from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                let mut stmt =
                    conn.prepare_cached(if pending { LIST_PENDING_SQL } else { LIST_FINISHED_SQL })?;
                stmt.query_map(params![status.as_str(), limit], RawJob::from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            raws.into_iter().map(|raw| raw.decode(tenant)).collect()
        })
        .await
    }

    async fn counts(&self, kind: JobKind) -> QueueResult<StatusCounts> {
        self.read("counts", move |conn, _| {
            let mut stmt = conn.prepare_cached(COUNTS_SQL)?;
            let rows = stmt
                .query_map([kind.as_str()], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut counts = StatusCounts::default();
            for (status, n) in rows {
                let status = JobStatus::parse(&status).map_err(|e| Failure::Corrupt(e.to_string()))?;
                counts.add(status, u64::try_from(n).unwrap_or(0));
            }
            Ok(counts)
        })
        .await
    }

    async fn purge_finished(&self, before_ms: u64) -> QueueResult<usize> {
        match self.write(WriteOp::Purge { before_ms }).await? {
            Outcome::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }
}

#[async_trait]
impl IdempotencyStore for SqliteJobStore {
    async fn claim(&self, request: &RequestId, job: &JobId) -> QueueResult<IdempotencyClaim> {
        match self.write(WriteOp::Claim { request: request.clone(), job: job.clone() }).await? {
            Outcome::Claim(claim) => Ok(claim),
            other => Err(unexpected(&other)),
        }
    }

    async fn release(&self, request: &RequestId, job: &JobId) -> QueueResult<()> {
        match self.write(WriteOp::Release { request: request.clone(), job: job.clone() }).await? {
            Outcome::Flag(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// Creates the schema if needed, checks the file belongs to `tenant`, and returns the next
/// sequence number.
fn prepare_schema(conn: &mut Connection, tenant: &TenantId) -> Result<u64, Failure> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION])?;
    let version: i64 =
        tx.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Failure::Corrupt(format!(
            "schema version {version} is newer than this build understands ({SCHEMA_VERSION})"
        )));
    }
    // A file is one tenant's: opening it for another tenant is a wiring bug that would mix data.
    tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('tenant', ?1)", [tenant.as_str()])?;
    let owner: String = tx.query_row("SELECT value FROM meta WHERE key = 'tenant'", [], |r| r.get(0))?;
    if owner != tenant.as_str() {
        return Err(Failure::Queue(QueueError::Config(format!(
            "the job store belongs to tenant {owner:?}, not {:?}",
            tenant.as_str()
        ))));
    }
    // The persisted counter covers jobs that were created and then purged or deleted; max(seq)
    // covers a file whose counter was never written. The larger of the two never goes back.
    let stored: Option<i64> =
        tx.query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| r.get(0)).optional()?;
    let max_seq: Option<i64> = tx.query_row("SELECT MAX(seq) FROM jobs", [], |r| r.get(0))?;
    let next = stored.unwrap_or(1).max(max_seq.map_or(1, |m| m.saturating_add(1))).max(1);
    tx.commit()?;
    Ok(u64::try_from(next).unwrap_or(1))
}

/// Why an operation failed, before it is turned into a [`QueueError`] that names the file.
#[derive(Debug)]
enum Failure {
    Sql(rusqlite::Error),
    Corrupt(String),
    Queue(QueueError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<QueueError> for Failure {
    fn from(e: QueueError) -> Self {
        Self::Queue(e)
    }
}

impl Failure {
    fn into_queue(self, shown: &str, what: &str) -> QueueError {
        match self {
            Self::Sql(e) => QueueError::Storage(format!("job store {shown}: {what}: {e}")),
            Self::Corrupt(e) => QueueError::Storage(format!("job store {shown}: {what}: corrupt data: {e}")),
            Self::Queue(e) => e,
        }
    }
}

fn to_sql_int(value: u64, field: &str) -> Result<i64, Failure> {
    i64::try_from(value).map_err(|_| Failure::Corrupt(format!("{field} {value} does not fit in SQLite")))
}

fn json_of(id: &JobId, text: &str, field: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::Corrupt(format!("job {id}: {field} is not JSON: {e}")))
}

fn to_json(value: &serde_json::Value, field: &str) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::Corrupt(format!("{field} cannot be encoded: {e}")))
}

/// A `jobs` row as SQLite returns it, before validation. The kind and the state are parsed
/// where SQLite holds them rather than copied out first.
struct RawJob {
    id: RawId,
    kind: QueueResult<JobKind>,
    lane: Option<String>,
    request_id: Option<String>,
    status: QueueResult<JobStatus>,
    attempt: i64,
    lease_epoch: i64,
    seq: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    payload: String,
    result: Option<String>,
    error: Option<String>,
}

/// A row's id: read from the row, or the one it was looked up by.
enum RawId {
    Read(String),
    Known(JobId),
}

impl RawJob {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Self::read(row, RawId::Read(row.get(0)?))
    }

    /// The row of `id`, found by it: the id is not read back.
    fn from_row_of(row: &Row<'_>, id: &JobId) -> rusqlite::Result<Self> {
        Self::read(row, RawId::Known(id.clone()))
    }

    fn read(row: &Row<'_>, id: RawId) -> rusqlite::Result<Self> {
        let text = |i: usize| row.get_ref(i).and_then(|v| Ok(v.as_str()?));
        let kind = text(1)?;
        let status = text(4)?;
        Ok(Self {
            id,
            kind: JobKind::parse(kind),
            lane: row.get(2)?,
            request_id: row.get(3)?,
            status: JobStatus::parse(status),
            attempt: row.get(5)?,
            lease_epoch: row.get(6)?,
            seq: row.get(7)?,
            created_at_ms: row.get(8)?,
            updated_at_ms: row.get(9)?,
            payload: row.get(10)?,
            result: row.get(11)?,
            error: row.get(12)?,
        })
    }

    /// Validates the row back into a record; a row this store did not write is reported, not
    /// guessed at.
    fn decode(self, tenant: &TenantId) -> Result<JobRecord, Failure> {
        let (mut record, payload, result) = self.split(tenant)?;
        record.payload = json_of(&record.id, &payload, "payload")?;
        record.result = result.as_deref().map(|r| json_of(&record.id, r, "result")).transpose()?;
        Ok(record)
    }

    /// Validates every column but the JSON ones, which are returned as text; the record holds
    /// `null` and no result in their place.
    fn split(self, tenant: &TenantId) -> Result<(JobRecord, String, Option<String>), Failure> {
        let id = match self.id {
            RawId::Known(id) => id,
            RawId::Read(text) => {
                JobId::new(text.as_str()).map_err(|e| Failure::Corrupt(format!("job {text}: {e}")))?
            }
        };
        let bad = |what: String| Failure::Corrupt(format!("job {id}: {what}"));
        let int = |value: i64, field: &str| {
            u64::try_from(value).map_err(|_| Failure::Corrupt(format!("job {id}: negative {field} {value}")))
        };
        let record = JobRecord {
            kind: self.kind.map_err(|e| bad(e.to_string()))?,
            tenant: tenant.clone(),
            lane: self.lane.map(LaneId::new).transpose().map_err(|e| bad(e.to_string()))?,
            request_id: self.request_id.map(RequestId::new).transpose().map_err(|e| bad(e.to_string()))?,
            status: self.status.map_err(|e| bad(e.to_string()))?,
            attempt: u32::try_from(self.attempt)
                .map_err(|_| bad(format!("attempt {} out of range", self.attempt)))?,
            lease_epoch: int(self.lease_epoch, "lease_epoch")?,
            seq: int(self.seq, "seq")?,
            created_at_ms: int(self.created_at_ms, "created_at_ms")?,
            updated_at_ms: int(self.updated_at_ms, "updated_at_ms")?,
            payload: serde_json::Value::Null,
            result: None,
            error: self.error,
            id,
        };
        Ok((record, self.payload, self.result))
    }
}

/// A write, as the writer thread receives it.
#[derive(Debug)]
enum WriteOp {
    /// `payload` is the job's payload, already encoded.
    Create {
        job: NewJob,
        payload: String,
    },
    /// Several creates in one operation, each job with its encoded payload: they share the
    /// operation's savepoint, and each answers on its own.
    CreateMany(Vec<(NewJob, String)>),
    /// `result` is the new result, already encoded.
    Transition {
        id: JobId,
        update: SentUpdate,
        result: Option<String>,
    },
    /// As `Transition`, answering no record.
    Settle {
        id: JobId,
        update: SentUpdate,
        result: Option<String>,
    },
    Delete(JobId),
    Purge {
        before_ms: u64,
    },
    Claim {
        request: RequestId,
        job: JobId,
    },
    Release {
        request: RequestId,
        job: JobId,
    },
}

/// A [`JobUpdate`] without its result, which travels encoded beside it: a `JobUpdate` is 96
/// bytes, 32 of them the result's `Value`, always `None` here, and the writer's envelope moves
/// several times between the caller and the writer (into the queue, out of it, into the
/// writer's match); at 160 bytes each move was a `memcpy` call, at 128 or less it is a few
/// register moves.
#[derive(Debug)]
struct SentUpdate {
    to: Option<JobStatus>,
    expect_epoch: Option<u64>,
    set_epoch: Option<u64>,
    bump_attempt: bool,
    error: Option<String>,
}

impl SentUpdate {
    /// `update`, whose result the caller has taken out (and encoded).
    fn new(update: JobUpdate) -> Self {
        let JobUpdate { to, expect_epoch, set_epoch, bump_attempt, result, error } = update;
        debug_assert!(result.is_none(), "the result travels encoded");
        Self { to, expect_epoch, set_epoch, bump_attempt, error }
    }

    /// The update again, for the checks and the record that `queue-core` defines on it.
    fn into_update(self) -> JobUpdate {
        let Self { to, expect_epoch, set_epoch, bump_attempt, error } = self;
        JobUpdate { to, expect_epoch, set_epoch, bump_attempt, result: None, error }
    }
}

impl WriteOp {
    const fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } | Self::CreateMany(_) => "create",
            Self::Transition { .. } => "transition",
            Self::Settle { .. } => "settle",
            Self::Delete(_) => "delete",
            Self::Purge { .. } => "purge_finished",
            Self::Claim { .. } => "claim",
            Self::Release { .. } => "release",
        }
    }

    /// How much of a batch the operation takes up: a batch create counts its jobs, so that
    /// `max_batch` also bounds the jobs one transaction writes.
    fn weight(&self) -> usize {
        match self {
            Self::CreateMany(jobs) => jobs.len().max(1),
            _ => 1,
        }
    }

    /// Whether the operation makes at most one write statement that changes anything (a guarded
    /// update that leaves its row alone changes nothing). SQLite undoes a failed statement by
    /// itself, so such an operation needs no savepoint of its own to fail alone.
    const fn writes_once(&self) -> bool {
        matches!(
            self,
            Self::Create { .. }
                | Self::Transition { .. }
                | Self::Settle { .. }
                | Self::Delete(_)
                | Self::Release { .. }
        )
    }
}

/// A transitioned record whose JSON columns are still text, for the caller to decode.
#[derive(Debug)]
struct Transitioned {
    /// The record with `null` as payload and no result.
    record: JobRecord,
    payload: String,
    /// The stored result: the new one if the update set one, else the one the row had.
    result: Option<String>,
}

/// What a write produced.
#[derive(Debug)]
enum Outcome {
    /// Boxed, as `Transitioned`: every answer of the writer moves an `Outcome` several times
    /// (into the batch's answers, through the reply channel, back to the caller), and a record
    /// inline made it 192 bytes, copied by `memcpy` at each move, for a start or an end as well.
    Record(Box<JobRecord>),
    /// One answer per job of a batch create, in its order.
    Records(Vec<QueueResult<JobRecord>>),
    Transitioned(Box<Transitioned>),
    Settled,
    Flag(bool),
    Count(usize),
    Claim(IdempotencyClaim),
}

impl Outcome {
    /// How many writes took effect: every job a batch create created, else one.
    fn applied(&self) -> u64 {
        match self {
            Self::Records(created) => created.iter().filter(|r| r.is_ok()).count() as u64,
            _ => 1,
        }
    }
}

struct Envelope {
    op: WriteOp,
    /// The caller's time when it asked: timestamps mean "when submitted", not "when batched".
    now_ms: u64,
    reply: oneshot::Sender<QueueResult<Outcome>>,
}

/// The statements every job's create, start and end run, prepared once: the statement cache
/// would hash their SQL text and move them in and out of its LRU list at each use.
struct HotStatements<'c> {
    begin: Statement<'c>,
    commit: Statement<'c>,
    insert: Statement<'c>,
    get_for_update: Statement<'c>,
    get_at_rowid: Statement<'c>,
    /// [`transition_write_sql`] of every state, in the order of [`JobStatus::ALL`]: the one that
    /// writes the result and the error, and the one that leaves them.
    transition_write: Vec<(Statement<'c>, Statement<'c>)>,
    settle_read: Statement<'c>,
    settle_write: Statement<'c>,
    /// The [`Guard`] of each state that has one.
    guards: Vec<Guard>,
    /// [`settle_guarded_sql`] of each target and shape used so far, prepared at first use.
    settle_guarded: Vec<(JobStatus, SettleShape, Statement<'c>)>,
}

impl<'c> HotStatements<'c> {
    fn prepare(conn: &'c Connection) -> rusqlite::Result<Self> {
        // Persistent, as the cache prepares them: SQLite then keeps them out of the connection's
        // small lookaside allocator, which every statement's run draws on.
        let prepare = |sql| conn.prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT);
        Ok(Self {
            begin: prepare("BEGIN IMMEDIATE")?,
            commit: prepare("COMMIT")?,
            insert: prepare(INSERT_SQL)?,
            get_for_update: prepare(GET_FOR_UPDATE_SQL)?,
            get_at_rowid: prepare(GET_AT_ROWID_SQL)?,
            transition_write: JobStatus::ALL
                .into_iter()
                .map(|status| {
                    Ok((
                        prepare_persistent(conn, &transition_write_sql(status, true))?,
                        prepare_persistent(conn, &transition_write_sql(status, false))?,
                    ))
                })
                .collect::<rusqlite::Result<_>>()?,
            settle_read: prepare(SETTLE_READ_SQL)?,
            settle_write: prepare(SETTLE_WRITE_SQL)?,
            guards: JobStatus::ALL
                .into_iter()
                .filter_map(|to| Guard::of(&JobUpdate { to: Some(to), ..JobUpdate::default() }))
                .collect(),
            settle_guarded: Vec::new(),
        })
    }

    /// The guarded settle that moves a row to `to` with an update of `shape`, if that state has
    /// a guard; prepared on `conn` at its first use.
    fn settle_guarded(
        &mut self,
        conn: &'c Connection,
        to: JobStatus,
        shape: SettleShape,
    ) -> rusqlite::Result<Option<&mut Statement<'c>>> {
        let Some(&guard) = self.guards.iter().find(|guard| guard.to == to) else { return Ok(None) };
        let found = self.settle_guarded.iter().position(|&(target, s, _)| target == to && s == shape);
        let at = match found {
            Some(at) => at,
            None => {
                let statement = prepare_persistent(conn, &settle_guarded_sql(guard, shape))?;
                self.settle_guarded.push((to, shape, statement));
                self.settle_guarded.len() - 1
            }
        };
        Ok(self.settle_guarded.get_mut(at).map(|(_, _, statement)| statement))
    }
}

fn prepare_persistent<'c>(conn: &'c Connection, sql: &str) -> rusqlite::Result<Statement<'c>> {
    conn.prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)
}

/// The `rowid` of the rows the writer created, until their job is finished: a start and an end
/// then find the row by a seek of the table alone rather than one of the id index first (two
/// fewer seeks of that index per job). A hint is only that: the row found must have the id asked
/// for, and one that does not (or none) is looked up by id as before.
///
/// Keyed by the address of the id's text, not by the text: the runtime hands the store back the
/// id it got from `create` (clones of one `Arc`), and hashing an address costs a multiplication
/// where hashing the text with `RandomState` cost about 300 instructions, several times a job
/// (callgrind). The entry keeps its id alive, so no other id's text can sit at that address
/// while it exists: an address found is the same id. An id passed as another copy of the text
/// just misses (it is found by id), and an entry it leaves behind goes when the map is full,
/// which empties it ([`RowHints::MAX`]); jobs created before the store was opened have none.
/// The rows of a batch or a savepoint that rolled back take all hints with them.
#[derive(Debug, Default)]
struct RowHints {
    rows: HashMap<usize, (JobId, i64), BuildHasherDefault<AddressHasher>>,
}

/// Where an id's text is, the key of [`RowHints`].
fn address(id: &JobId) -> usize {
    id.as_str().as_ptr().addr()
}

impl RowHints {
    /// At about 60 bytes an entry (the map's slot and the id it keeps alive), 4 MiB at most.
    const MAX: usize = 1 << 16;

    fn note(&mut self, id: &JobId, rowid: i64) {
        if self.rows.len() >= Self::MAX {
            // A backlog larger than this, or entries left by jobs that ended through another
            // copy of their id: all go, and a job without a hint is found by id.
            self.rows.clear();
        }
        self.rows.insert(address(id), (id.clone(), rowid));
    }

    fn get(&self, id: &JobId) -> Option<i64> {
        self.rows.get(&address(id)).map(|&(_, rowid)| rowid)
    }

    fn forget(&mut self, id: &JobId) {
        self.rows.remove(&address(id));
    }

    fn clear(&mut self) {
        self.rows.clear();
    }

    /// The hint for an update that moves the job to `to`, taken out of the map when `to` is
    /// final (one lookup instead of two). Should the update be refused, the job is found by id
    /// from then on.
    fn take_for(&mut self, id: &JobId, to: Option<JobStatus>) -> Option<i64> {
        if to.is_some_and(JobStatus::is_terminal) {
            self.rows.remove(&address(id)).map(|(_, rowid)| rowid)
        } else {
            self.get(id)
        }
    }

    /// After an update that left the job in `status`: a finished job is not started or ended
    /// again (a requeued one is).
    fn after(&mut self, id: &JobId, status: JobStatus) {
        if status.is_terminal() {
            self.forget(id);
        }
    }
}

/// Hashes an address (a `usize`) by one multiplication (Fibonacci hashing) and a rotation:
/// addresses are not chosen by callers, so nobody can aim ids at one bucket. The rotation puts
/// the product's well-mixed high half in the low bits, which pick the bucket (an address's own
/// low bits are alignment, always 0).
#[derive(Debug, Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32);
    }
}

/// The states a guarded statement lets an update leave: those from which
/// [`JobStatus::can_transition_to`] allows the update's target, the second repeating the first
/// when there is one. The table stays in `queue-core`; the writer writes what it says into the
/// text of its statements when it prepares them ([`settle_guarded_sql`]), and SQL only compares
/// the row's state with it. The guard is a fast path: a row it refuses is read and checked as before, so a
/// guard narrower than the table would cost a read, never a wrong answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Guard {
    to: JobStatus,
    from: [&'static str; 2],
}

impl Guard {
    /// `None` when the update keeps the state, or when no state or more than two lead to its
    /// target: such an update is read and checked first.
    fn of(update: &JobUpdate) -> Option<Self> {
        let to = update.to?;
        let mut from = JobStatus::ALL.into_iter().filter(|s| s.can_transition_to(to)).map(JobStatus::as_str);
        let first = from.next()?;
        let second = from.next().unwrap_or(first);
        from.next().is_none().then_some(Self { to, from: [first, second] })
    }
}

/// Marks the writer's queue as no longer taken when the writer thread ends, by returning or by a
/// panic: a later write is refused, and a waiting one is dropped, so its caller hears that the
/// writer has stopped (as when a channel's receiver goes).
struct StopTaking<'q>(&'q OpQueue<Envelope>);

impl Drop for StopTaking<'_> {
    fn drop(&mut self) {
        self.0.stop_taking();
    }
}

/// The writer thread's state: the only connection that writes.
struct Writer<'c> {
    conn: &'c Connection,
    hot: HotStatements<'c>,
    rows: RowHints,
    tenant: TenantId,
    shown: Arc<str>,
    next_seq: u64,
    idempotency_ttl_ms: u64,
    max_batch: usize,
    stats: Arc<WriterStats>,
}

impl Writer<'_> {
    /// Commits batches until the queue is closed and empty.
    fn run(mut self, queue: &OpQueue<Envelope>) {
        let mut replies = Vec::with_capacity(self.max_batch.min(1024));
        let mut outcomes = Vec::with_capacity(self.max_batch.min(1024));
        // Taken from the queue and not yet in a batch (a batch stops at `max_batch`).
        let mut taken = VecDeque::new();
        loop {
            if taken.is_empty() && !queue.take_blocking(&mut taken) {
                return;
            }
            // Whatever arrived while the previous batch was being fsynced rides in this one, and so
            // does whatever arrives while this one is being written, until the queue is empty.
            let ops = std::iter::from_fn(|| {
                if taken.is_empty() {
                    queue.take_waiting(&mut taken);
                }
                taken.pop_front()
            });
            self.commit_batch(ops, &mut replies, &mut outcomes);
        }
    }

    /// Applies the operations `ops` yields in one transaction, then answers each caller. The next
    /// operation is taken only once the previous one is written, and only while the batch
    /// weighs less than `max_batch`: a caller that arrives while the batch is being written rides
    /// in it instead of waiting for its commit and then one more (the writer's CPU per batch is of
    /// the order of its fsync). An operation that fails is rolled back to its own savepoint and
    /// only its caller hears of it; a transaction that fails to commit fails every operation in
    /// it (none of them took effect). `replies` and `outcomes` are scratch space, left empty.
    fn commit_batch(
        &mut self,
        ops: impl Iterator<Item = Envelope>,
        replies: &mut Vec<oneshot::Sender<QueueResult<Outcome>>>,
        outcomes: &mut Vec<QueueResult<Outcome>>,
    ) {
        let seq_before = self.next_seq;
        match self.apply_batch(ops, replies, outcomes, seq_before) {
            Ok(()) if replies.is_empty() => {}
            Ok(()) => {
                let applied: u64 = outcomes.iter().flatten().map(Outcome::applied).sum();
                self.stats.ops.fetch_add(applied, Ordering::AcqRel);
                self.stats.batches.fetch_add(1, Ordering::AcqRel);
                tracing::trace!(tenant = %self.tenant, ops = replies.len(), applied, "committed a batch");
                for (reply, outcome) in replies.drain(..).zip(outcomes.drain(..)) {
                    // A caller that stopped waiting (its future was dropped) needs no answer.
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                self.next_seq = seq_before;
                // The rows the batch created are gone: their hints would only cost a failed seek.
                self.rows.clear();
                let error = QueueError::Storage(format!("job store {}: commit failed: {e}", self.shown));
                tracing::error!(
                    tenant = %self.tenant, path = %self.shown, error = %e, ops = replies.len(),
                    "a job store batch failed"
                );
                outcomes.clear();
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// The transaction of [`Writer::commit_batch`]: every operation taken from `ops` has its
    /// reply in `replies`, even when this fails, and on success its outcome in `outcomes`.
    fn apply_batch(
        &mut self,
        mut ops: impl Iterator<Item = Envelope>,
        replies: &mut Vec<oneshot::Sender<QueueResult<Outcome>>>,
        outcomes: &mut Vec<QueueResult<Outcome>>,
        seq_before: u64,
    ) -> rusqlite::Result<()> {
        let mut weight = 0;
        while weight < self.max_batch {
            let Some(Envelope { op, now_ms, reply }) = ops.next() else { break };
            weight += op.weight();
            replies.push(reply);
            if replies.len() == 1 {
                self.hot.begin.execute([])?;
            }
            let what = op.name();
            let seq = self.next_seq;
            let savepoint = !op.writes_once();
            if savepoint {
                self.conn.prepare_cached("SAVEPOINT op")?.execute([])?;
            }
            let outcome = self.apply(op, now_ms).map_err(|e| e.into_queue(&self.shown, what));
            if outcome.is_err() {
                // Undo this operation only: its batch-mates before and after keep their effects.
                self.next_seq = seq;
                if savepoint {
                    self.conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
                    self.rows.clear();
                } else if self.conn.is_autocommit() {
                    // Some errors (I/O, a full disk) make SQLite roll back the whole transaction:
                    // then the batch fails as one, as a failed commit does.
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some(format!("the transaction was rolled back by a failed {what}")),
                    ));
                }
            }
            if savepoint {
                self.conn.prepare_cached("RELEASE op")?.execute([])?;
            }
            outcomes.push(outcome);
        }
        if replies.is_empty() {
            return Ok(());
        }
        if self.next_seq != seq_before {
            let next = i64::try_from(self.next_seq).unwrap_or(i64::MAX);
            self.conn
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('next_seq', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([next])?;
        }
        self.hot.commit.execute([])?;
        Ok(())
    }

    fn apply(&mut self, op: WriteOp, now_ms: u64) -> Result<Outcome, Failure> {
        match op {
            WriteOp::Create { job, payload } => {
                self.create(job, &payload, now_ms).map(|r| Outcome::Record(Box::new(r)))
            }
            WriteOp::CreateMany(jobs) => {
                let mut created = Vec::with_capacity(jobs.len());
                for (job, payload) in jobs {
                    match self.create(job, &payload, now_ms) {
                        Ok(record) => created.push(Ok(record)),
                        // SQLite failed (a full disk, an I/O error): the whole operation fails
                        // and its savepoint takes back the jobs it had created.
                        Err(e @ Failure::Sql(_)) => return Err(e),
                        // Refused before anything was written: this job alone.
                        Err(e) => created.push(Err(e.into_queue(&self.shown, "create"))),
                    }
                }
                Ok(Outcome::Records(created))
            }
            WriteOp::Transition { id, update, result } => self
                .transition(&id, &update.into_update(), result, now_ms)
                .map(|changed| Outcome::Transitioned(Box::new(changed))),
            WriteOp::Settle { id, update, result } => {
                self.settle(&id, &update.into_update(), result.as_deref(), now_ms).map(|()| Outcome::Settled)
            }
            WriteOp::Delete(id) => {
                self.rows.forget(&id);
                let n = self.conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")?.execute([id.as_str()])?;
                Ok(Outcome::Flag(n > 0))
            }
            WriteOp::Purge { before_ms } => {
                let before = to_sql_int(before_ms, "before_ms")?;
                let n = self.conn.prepare_cached(PURGE_SQL)?.execute([before])?;
                // Retention is also when expired idempotency keys go, so the table stays bounded.
                self.conn
                    .prepare_cached("DELETE FROM idempotency WHERE expires_at_ms <= ?1")?
                    .execute([to_sql_int(now_ms, "now")?])?;
                Ok(Outcome::Count(n))
            }
            WriteOp::Claim { request, job } => self.claim(&request, &job, now_ms).map(Outcome::Claim),
            WriteOp::Release { request, job } => {
                let n = self
                    .conn
                    .prepare_cached("DELETE FROM idempotency WHERE request_id = ?1 AND job_id = ?2")?
                    .execute([request.as_str(), job.as_str()])?;
                Ok(Outcome::Flag(n > 0))
            }
        }
    }

    fn create(&mut self, job: NewJob, payload: &str, now_ms: u64) -> Result<JobRecord, Failure> {
        let record = JobRecord::from_new(self.tenant.clone(), job, self.next_seq, now_ms);
        // INSERT_SQL writes these as literals, and one timestamp for both.
        debug_assert_eq!(
            (record.status, record.attempt, record.lease_epoch, &record.result, &record.error),
            (JobStatus::Queued, 0, 0, &None, &None),
        );
        debug_assert_eq!(record.created_at_ms, record.updated_at_ms);
        let inserted = self.hot.insert.execute(params![
            record.id.as_str(),
            record.kind.as_str(),
            record.lane.as_ref().map(LaneId::as_str),
            record.request_id.as_ref().map(RequestId::as_str),
            to_sql_int(record.created_at_ms, "created_at_ms")?,
            to_sql_int(record.seq, "seq")?,
            payload,
        ])?;
        if inserted == 0 {
            return Err(QueueError::AlreadyExists { job: record.id }.into());
        }
        self.rows.note(&record.id, self.conn.last_insert_rowid());
        self.next_seq += 1;
        Ok(record)
    }

    fn transition(
        &mut self,
        id: &JobId,
        update: &JobUpdate,
        result: Option<String>,
        now_ms: u64,
    ) -> Result<Transitioned, Failure> {
        let hinted = match self.rows.get(id) {
            Some(rowid) => self
                .hot
                .get_at_rowid
                .query_row([rowid], |row| {
                    // Another row, or none: the hint is stale (the row was deleted behind the
                    // writer's back), and the row is looked up by id.
                    let same = row.get_ref(0)?.as_str().is_ok_and(|text| text == id.as_str());
                    Ok(same.then(|| RawJob::from_row_of(row, id)).transpose()?.map(|raw| (raw, rowid)))
                })
                .optional()?
                .flatten(),
            None => None,
        };
        let row = match hinted {
            Some(found) => Some(found),
            None => {
                self.rows.forget(id);
                self.hot
                    .get_for_update
                    .query_row([id.as_str()], |row| {
                        Ok((RawJob::from_row_of(row, id)?, row.get::<_, i64>(13)?))
                    })
                    .optional()?
            }
        };
        let Some((raw, rowid)) = row else {
            return Err(QueueError::NotFound { job: id.clone() }.into());
        };
        let (mut record, payload, stored_result) = raw.split(&self.tenant)?;
        // The same fence and table as every other store; on error nothing was written. The
        // update carries no result (it comes as text), so `apply` leaves the result alone.
        record.apply(update, now_ms)?;
        // An update that sets neither a result nor an error (a start) leaves both as stored.
        let keeps_result_and_error = result.is_none() && update.error.is_none();
        let result = result.or(stored_result);
        let (all, keep) = JobStatus::ALL
            .iter()
            .position(|s| *s == record.status)
            .and_then(|i| self.hot.transition_write.get_mut(i))
            .ok_or_else(|| Failure::Corrupt(format!("job {id}: no statement writes {}", record.status)))?;
        let (attempt, epoch) = (i64::from(record.attempt), to_sql_int(record.lease_epoch, "lease_epoch")?);
        let updated = to_sql_int(record.updated_at_ms, "updated_at_ms")?;
        if keeps_result_and_error {
            keep.execute(params![rowid, attempt, epoch, updated])?;
        } else {
            all.execute(params![rowid, attempt, epoch, updated, result.as_deref(), record.error.as_deref()])?;
        }
        self.rows.after(id, record.status);
        Ok(Transitioned { record, payload, result })
    }

    /// `transition` without the record: writes the columns the update sets if the row's state
    /// and epoch let it ([`settle_guarded_sql`]), and otherwise reads the two columns the checks
    /// need, so that the refusal is the one every store gives.
    fn settle(
        &mut self,
        id: &JobId,
        update: &JobUpdate,
        result: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Failure> {
        let set_epoch = update.set_epoch.map(|e| to_sql_int(e, "lease_epoch")).transpose()?;
        let now = to_sql_int(now_ms, "updated_at_ms")?;
        let hint = self.rows.take_for(id, update.to);
        let shape = SettleShape::of(update, result, hint.is_some());
        if let Some(to) = update.to
            && let Some(guarded) = self.hot.settle_guarded(self.conn, to, shape)?
        {
            // The parameters the statement of this shape has, at their fixed numbers.
            guarded.raw_bind_parameter(1, id.as_str())?;
            if let Some(epoch) = set_epoch {
                guarded.raw_bind_parameter(2, epoch)?;
            }
            guarded.raw_bind_parameter(4, now)?;
            if let Some(result) = result {
                guarded.raw_bind_parameter(5, result)?;
            }
            if let Some(error) = &update.error {
                guarded.raw_bind_parameter(6, error.as_str())?;
            }
            if let Some(fence) = update.expect_epoch {
                guarded.raw_bind_parameter(7, to_sql_int(fence, "lease_epoch")?)?;
            }
            if let Some(rowid) = hint {
                guarded.raw_bind_parameter(8, rowid)?;
            }
            if guarded.raw_execute()? > 0 {
                return Ok(());
            }
            // Refused, absent, or a row this store did not write: the checks below say which.
        }
        let row = self
            .hot
            .settle_read
            .query_row([id.as_str()], |row| {
                // Parsed in place: the state is compared, never kept as text.
                let status = JobStatus::parse(row.get_ref(0)?.as_str()?).map_err(|e| e.to_string());
                Ok((status, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
            .optional()?;
        let Some((status, lease_epoch, rowid)) = row else {
            return Err(QueueError::NotFound { job: id.clone() }.into());
        };
        let status = status.map_err(|e| Failure::Corrupt(format!("job {id}: {e}")))?;
        let lease_epoch = u64::try_from(lease_epoch)
            .map_err(|_| Failure::Corrupt(format!("job {id}: negative lease_epoch {lease_epoch}")))?;
        // The same fence and table as `transition`; on error nothing was written.
        update.check(id, status, lease_epoch)?;
        let to = update.to.unwrap_or(status);
        self.hot.settle_write.execute(params![
            rowid,
            to.as_str(),
            set_epoch,
            i64::from(update.bump_attempt),
            now,
            result,
            update.error.as_deref(),
        ])?;
        self.rows.after(id, to);
        Ok(())
    }

    fn claim(&self, request: &RequestId, job: &JobId, now_ms: u64) -> Result<IdempotencyClaim, Failure> {
        let now = to_sql_int(now_ms, "now")?;
        // An expired key is as good as absent: clear it so the insert below can take it.
        self.conn
            .prepare_cached("DELETE FROM idempotency WHERE request_id = ?1 AND expires_at_ms <= ?2")?
            .execute(params![request.as_str(), now])?;
        let expires = now.saturating_add(i64::try_from(self.idempotency_ttl_ms).unwrap_or(i64::MAX));
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO idempotency (request_id, job_id, expires_at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![request.as_str(), job.as_str(), expires])?;
        if inserted > 0 {
            return Ok(IdempotencyClaim::Claimed);
        }
        let owner: String = self
            .conn
            .prepare_cached("SELECT job_id FROM idempotency WHERE request_id = ?1")?
            .query_row([request.as_str()], |r| r.get(0))?;
        let owner =
            JobId::new(owner).map_err(|e| Failure::Corrupt(format!("idempotency key {request}: {e}")))?;
        Ok(IdempotencyClaim::Existing(owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_core::ManualClock;

    fn store(dir: &tempfile::TempDir) -> SqliteJobStore {
        SqliteJobStore::open(
            &dir.path().join("jobs.sqlite"),
            TenantId::default_tenant(),
            Arc::new(ManualClock::new(1_000)),
            SqliteStoreConfig::default(),
        )
        .unwrap()
    }

    fn new_job(id: &str) -> NewJob {
        NewJob {
            id: JobId::new(id).unwrap(),
            kind: JobKind::Upload,
            lane: None,
            request_id: None,
            payload: serde_json::json!({ "id": id }),
        }
    }

    fn create_op(id: &str) -> WriteOp {
        let job = new_job(id);
        let payload = serde_json::to_string(&job.payload).unwrap();
        WriteOp::Create { job, payload }
    }

    fn query_plan(store: &SqliteJobStore, sql: &str, params: &[&str]) -> Vec<String> {
        let conn = store.reader.lock().unwrap();
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// No step reads the whole table or sorts it, and every step uses one of `indexes`.
    fn assert_indexed(plan: &[String], indexes: &[&str]) {
        assert!(!plan.iter().any(|step| step == "SCAN jobs"), "{plan:?}");
        for index in indexes {
            assert!(plan.iter().any(|step| step.contains(&format!("INDEX {index}"))), "{index}: {plan:?}");
        }
    }

    #[test]
    fn purge_is_a_range_scan_of_the_finished_jobs_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let plan = query_plan(&store, PURGE_SQL, &["0"]);
        assert!(plan.iter().any(|step| step.contains("USING INDEX jobs_final_by_updated")), "{plan:?}");
        assert!(!plan.iter().any(|step| step.starts_with("SCAN jobs")), "{plan:?}");
    }

    #[test]
    fn scan_pending_reads_the_pending_jobs_index_in_submission_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let plan = query_plan(&store, SCAN_PENDING_SQL, &["upload"]);
        assert_indexed(&plan, &["jobs_pending_by_seq"]);
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
    }

    #[test]
    fn counts_read_the_two_partial_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let plan = query_plan(&store, COUNTS_SQL, &["upload"]);
        assert_indexed(&plan, &["jobs_pending_by_seq", "jobs_final_by_kind"]);
        assert!(plan.iter().filter(|step| step.contains("USING COVERING INDEX")).count() == 2, "{plan:?}");
    }

    #[test]
    fn lists_by_kind_read_the_index_of_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let plan = query_plan(&store, LIST_PENDING_BY_KIND_SQL, &["upload", "queued", "10"]);
        assert_indexed(&plan, &["jobs_pending_by_seq"]);
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
        let plan = query_plan(&store, LIST_FINISHED_BY_KIND_SQL, &["upload", "done", "10"]);
        assert_indexed(&plan, &["jobs_final_by_kind"]);
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// An outcome finds its row by the id index alone, in the statement that writes it.
    #[test]
    fn a_guarded_settle_is_one_seek_of_the_id_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let guard = Guard::of(&JobUpdate { to: Some(JobStatus::Done), ..JobUpdate::default() }).unwrap();
        let shape = SettleShape::of(&JobUpdate::done(1, serde_json::Value::Null), Some("null"), false);
        let args = ["a", "", "", "5", "null", "", "1"];
        let plan = query_plan(&store, &settle_guarded_sql(guard, shape), &args);
        assert_eq!(plan, ["SEARCH jobs USING INDEX sqlite_autoindex_jobs_1 (id=?)"]);
        // With the writer's hint, the table alone.
        let hinted = SettleShape { at_rowid: true, ..shape };
        let plan = query_plan(&store, &settle_guarded_sql(guard, hinted), &[&args[..], &["1"]].concat());
        assert_eq!(plan, ["SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)"]);
        let plan = query_plan(&store, GET_AT_ROWID_SQL, &["1"]);
        assert_eq!(plan, ["SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)"]);
    }

    /// A guard admits exactly the states the transition table lets reach its target, and an
    /// update that keeps the state has none (it is read and checked first).
    #[test]
    fn a_guard_admits_the_states_the_transition_table_allows() {
        for to in JobStatus::ALL {
            let guard = Guard::of(&JobUpdate { to: Some(to), ..JobUpdate::default() }).unwrap();
            for from in JobStatus::ALL {
                assert_eq!(guard.from.contains(&from.as_str()), from.can_transition_to(to), "{from} -> {to}");
            }
        }
        assert_eq!(Guard::of(&JobUpdate::default()), None);
    }

    /// A job's start and end must not maintain an index whose keys all begin with the same kind
    /// (W5: its comparisons grew a third of the claim's cost with a million jobs queued).
    #[test]
    fn a_file_with_the_index_of_every_job_by_kind_loses_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(store(&dir));
        let path = dir.path().join("jobs.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE INDEX jobs_by_kind_status_seq ON jobs (kind, status, seq)")
            .unwrap();
        drop(store(&dir));
        assert_eq!(
            index_names(&path),
            ["jobs_final_by_kind", "jobs_final_by_updated", "jobs_pending_by_seq", "sqlite_autoindex_jobs_1"]
        );
    }

    /// The schema as the build before `jobs_final_by_*` created it (SCHEMA_VERSION 1 as well):
    /// its indexes of finished jobs have the same keys under `status NOT IN (…)`.
    const SCHEMA_WITH_NOT_IN_INDEXES: &str = "
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, lane TEXT, request_id TEXT,
            status TEXT NOT NULL, attempt INTEGER NOT NULL, lease_epoch INTEGER NOT NULL,
            seq INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL,
            payload TEXT NOT NULL, result TEXT, error TEXT
        );
        CREATE INDEX jobs_pending_by_seq ON jobs (seq, kind, status)
            WHERE status IN ('queued', 'processing');
        CREATE INDEX jobs_finished_by_kind ON jobs (kind, status, seq)
            WHERE status NOT IN ('queued', 'processing');
        CREATE INDEX jobs_finished_by_updated ON jobs (updated_at_ms)
            WHERE status NOT IN ('queued', 'processing');
        CREATE TABLE idempotency (
            request_id TEXT PRIMARY KEY NOT NULL, job_id TEXT NOT NULL, expires_at_ms INTEGER NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL);
        INSERT INTO meta (key, value) VALUES ('schema_version', 1), ('tenant', 'default'), ('next_seq', 6);
        INSERT INTO jobs VALUES
            ('q', 'upload', NULL, NULL, 'queued', 0, 0, 1, 100, 100, '{\"n\":1}', NULL, NULL),
            ('p', 'upload', NULL, 'r-p', 'processing', 1, 7, 2, 100, 200, '{\"n\":2}', NULL, NULL),
            ('d', 'upload', NULL, NULL, 'done', 1, 3, 3, 100, 300, '{\"n\":3}', '{\"ok\":true}', NULL),
            ('f', 'upload', NULL, NULL, 'failed', 3, 4, 4, 100, 400, '{\"n\":4}', NULL, 'boom'),
            ('c', 'chat', 'student:s1:main', NULL, 'cancelled', 0, 0, 5, 100, 500, '{\"n\":5}', NULL, NULL);
    ";

    fn index_names(path: &Path) -> Vec<String> {
        Connection::open(path)
            .unwrap()
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A file written before the indexes of finished jobs took two inequalities, with a job in
    /// every state, opens with its old indexes replaced, every job as it was, every query on a
    /// state served by an index, and its jobs going on from there.
    #[tokio::test]
    async fn a_file_with_the_not_in_indexes_of_finished_jobs_keeps_every_job_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        Connection::open(&path).unwrap().execute_batch(SCHEMA_WITH_NOT_IN_INDEXES).unwrap();
        let store = store(&dir);
        assert_eq!(
            index_names(&path),
            ["jobs_final_by_kind", "jobs_final_by_updated", "jobs_pending_by_seq", "sqlite_autoindex_jobs_1"]
        );
        let id = |s: &str| JobId::new(s).unwrap();
        let expected = [
            ("q", JobStatus::Queued, 0, 0, 1, 100, None, None),
            ("p", JobStatus::Processing, 1, 7, 2, 200, None, None),
            ("d", JobStatus::Done, 1, 3, 3, 300, Some(serde_json::json!({ "ok": true })), None),
            ("f", JobStatus::Failed, 3, 4, 4, 400, None, Some("boom")),
            ("c", JobStatus::Cancelled, 0, 0, 5, 500, None, None),
        ];
        for (n, (job, status, attempt, epoch, seq, updated, result, error)) in
            expected.into_iter().enumerate()
        {
            let record = store.get(&id(job)).await.unwrap().unwrap();
            assert_eq!(
                (record.status, record.attempt, record.lease_epoch, record.seq, record.updated_at_ms),
                (status, attempt, epoch, seq, updated),
                "{job}"
            );
            assert_eq!((record.result, record.error.as_deref()), (result, error), "{job}");
            assert_eq!(record.payload, serde_json::json!({ "n": n + 1 }), "{job}");
            let kind = if job == "c" { JobKind::Chat } else { JobKind::Upload };
            let listed = |records: Vec<JobRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
            assert_eq!(listed(store.list(Some(kind), status, 10).await.unwrap()), [id(job)], "{job}");
            assert_eq!(listed(store.list(None, status, 10).await.unwrap()), [id(job)], "{job}");
        }
        let counts = |queued, processing, done, failed| StatusCounts {
            queued,
            processing,
            done,
            failed,
            cancelled: 0,
        };
        assert_eq!(store.counts(JobKind::Upload).await.unwrap(), counts(1, 1, 1, 1));
        assert_eq!(store.counts(JobKind::Chat).await.unwrap().cancelled, 1);
        let pending: Vec<JobId> =
            store.scan_pending(JobKind::Upload).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(pending, [id("q"), id("p")]);
        for (sql, params, index) in [
            (LIST_FINISHED_BY_KIND_SQL, &["upload", "done", "10"][..], "jobs_final_by_kind"),
            (COUNTS_SQL, &["upload"][..], "jobs_final_by_kind"),
            (PURGE_SQL, &["0"][..], "jobs_final_by_updated"),
        ] {
            assert_indexed(&query_plan(&store, sql, params), &[index]);
        }

        store.settle(&id("p"), JobUpdate::done(7, serde_json::json!(2))).await.unwrap();
        store.transition(&id("q"), JobUpdate::start(8)).await.unwrap();
        assert_eq!(store.counts(JobKind::Upload).await.unwrap(), counts(0, 1, 2, 1));
        assert_eq!(store.create(new_job("n")).await.unwrap().seq, 6);
        // The three finished before 600 go; the one that ended at open time (1,000) stays.
        assert_eq!(store.purge_finished(600).await.unwrap(), 3);
        assert_eq!(store.counts(JobKind::Upload).await.unwrap(), counts(1, 1, 1, 0));
    }

    /// A row with a kind or a state this store never writes fails the calls that read it, naming
    /// the job and the text, whether the call reads the whole row (`get`, `transition`) or only
    /// the state (`settle`); nothing is written.
    #[tokio::test]
    async fn a_row_this_store_did_not_write_is_reported_not_guessed_at() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        for job in ["k", "s"] {
            store.create(new_job(job)).await.unwrap();
        }
        let other = Connection::open(store.path()).unwrap();
        other.execute("UPDATE jobs SET kind = 'fax' WHERE id = 'k'", []).unwrap();
        other.execute("UPDATE jobs SET status = 'limbo' WHERE id = 's'", []).unwrap();
        let k = JobId::new("k").unwrap();
        let s = JobId::new("s").unwrap();
        let corrupt = |e: QueueError, job: &str, text: &str| match e {
            QueueError::Storage(m) => {
                assert!(m.contains("corrupt data") && m.contains(&format!("job {job}:")), "{m}");
                assert!(m.contains(text), "{m}");
            }
            other => panic!("{other:?}"),
        };
        corrupt(store.get(&k).await.unwrap_err(), "k", "\"fax\"");
        corrupt(store.transition(&k, JobUpdate::start(1)).await.unwrap_err(), "k", "\"fax\"");
        corrupt(store.get(&s).await.unwrap_err(), "s", "\"limbo\"");
        corrupt(store.transition(&s, JobUpdate::start(1)).await.unwrap_err(), "s", "\"limbo\"");
        corrupt(store.settle(&s, JobUpdate::start(1)).await.unwrap_err(), "s", "\"limbo\"");
        let untouched: (String, i64) = other
            .query_row("SELECT status, attempt FROM jobs WHERE id = 's'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(untouched, ("limbo".into(), 0));
    }

    /// A hint is found through clones of the id it was noted for, not through another copy of
    /// the same text, and an end that finishes the job takes it out.
    #[test]
    fn a_row_hint_belongs_to_the_id_it_was_noted_for() {
        let mut hints = RowHints::default();
        let id = JobId::new("a").unwrap();
        hints.note(&id, 7);
        assert_eq!(hints.get(&id.clone()), Some(7));
        assert_eq!(hints.get(&JobId::new("a").unwrap()), None);
        assert_eq!(hints.take_for(&id, Some(JobStatus::Processing)), Some(7));
        assert_eq!(hints.take_for(&id, Some(JobStatus::Done)), Some(7));
        assert_eq!(hints.get(&id), None);
    }

    /// The writer's `rowid` of a job it created is a hint: a row deleted behind its back, whose
    /// `rowid` a new job then takes, is reported absent, and the new job is left alone. The calls
    /// pass the very id the job was created with (the hint's key), so they find the hint and the
    /// other job's row at its `rowid`; with another copy of the text they would not use the hint.
    #[tokio::test]
    async fn a_row_taken_over_by_another_job_is_not_mistaken_for_the_one_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let mut created = Vec::new();
        for job in ["a", "b"] {
            let job = new_job(job);
            created.push(job.id.clone());
            store.create(job).await.unwrap();
        }
        let b = created.pop().unwrap();
        let other = Connection::open(store.path()).unwrap();
        other.execute("DELETE FROM jobs WHERE id = 'b'", []).unwrap();
        store.create(new_job("c")).await.unwrap();
        let rowid = |job: &str| -> i64 {
            other.query_row("SELECT rowid FROM jobs WHERE id = ?1", [job], |r| r.get(0)).unwrap()
        };
        assert_eq!(rowid("c"), 2, "the new job took the deleted one's rowid");
        let absent =
            |e: QueueError| assert!(matches!(e, QueueError::NotFound { ref job } if *job == b), "{e:?}");
        absent(store.transition(&b, JobUpdate::start(1)).await.unwrap_err());
        absent(store.settle(&b, JobUpdate::start(1)).await.unwrap_err());
        absent(store.settle(&b, JobUpdate::requeue(0, None)).await.unwrap_err());
        absent(store.settle(&b, JobUpdate::done(0, serde_json::json!(1))).await.unwrap_err());
        let c = store.get(&JobId::new("c").unwrap()).await.unwrap().unwrap();
        assert_eq!((c.status, c.attempt, c.lease_epoch), (JobStatus::Queued, 0, 0));
        let started = store.transition(&c.id, JobUpdate::start(3)).await.unwrap();
        assert_eq!((started.status, started.attempt, started.lease_epoch), (JobStatus::Processing, 1, 3));
        store.settle(&c.id, JobUpdate::done(3, serde_json::json!(7))).await.unwrap();
        let done = store.get(&c.id).await.unwrap().unwrap();
        assert_eq!((done.status, done.result), (JobStatus::Done, Some(serde_json::json!(7))));
    }

    /// Once the writer has stopped taking operations (its thread ended), a write is refused at
    /// once with an error that says so, rather than waiting for an answer that cannot come.
    #[tokio::test]
    async fn a_write_after_the_writer_stopped_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        store.create(new_job("before")).await.unwrap();
        // What the guard of the writer thread does when the thread ends.
        store.ops.stop_taking();
        match store.create(new_job("after")).await {
            Err(QueueError::Storage(m)) => assert!(m.contains("the writer thread has stopped"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// A connection to a prepared store file in `dir` whose writer is stopped, so that a test can
    /// own the writing, and the next `seq`.
    fn writer_connection(dir: &tempfile::TempDir) -> (Connection, u64) {
        drop(store(dir));
        let mut conn = Connection::open(dir.path().join("jobs.sqlite")).unwrap();
        let next_seq = prepare_schema(&mut conn, &TenantId::default_tenant()).unwrap();
        (conn, next_seq)
    }

    fn writer(conn: &Connection, next_seq: u64, max_batch: usize) -> Writer<'_> {
        Writer {
            conn,
            hot: HotStatements::prepare(conn).unwrap(),
            rows: RowHints::default(),
            tenant: TenantId::default_tenant(),
            shown: "test".into(),
            next_seq,
            idempotency_ttl_ms: 1_000,
            max_batch,
            stats: Arc::new(WriterStats::default()),
        }
    }

    fn envelope(op: WriteOp) -> (Envelope, oneshot::Receiver<QueueResult<Outcome>>) {
        let (reply, answer) = oneshot::channel();
        (Envelope { op, now_ms: 5, reply }, answer)
    }

    /// An operation that arrives while a batch is being written rides in that batch's commit
    /// (instead of waiting for it and then for one more), up to `max_batch`: the batch takes its
    /// next operation only after writing the previous one, as long as one is waiting.
    #[test]
    fn an_operation_that_arrives_while_a_batch_is_written_rides_in_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, next_seq) = writer_connection(&dir);
        let mut writer = writer(&conn, next_seq, 3);
        let (first, first_answer) = envelope(create_op("a"));
        let mut answers = vec![first_answer];
        let mut arrivals = 0;
        let late = std::iter::from_fn(|| {
            // What the batch has written when it asks for the next operation.
            let written: i64 = conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0)).unwrap();
            assert_eq!(written, arrivals + 1, "each operation is written before the next is taken");
            arrivals += 1;
            let (late, answer) = envelope(create_op(&format!("late-{arrivals}")));
            answers.push(answer);
            Some(late)
        });
        writer.commit_batch(std::iter::once(first).chain(late), &mut Vec::new(), &mut Vec::new());
        // `max_batch` 3: the first and two that arrived while it was written.
        assert_eq!(answers.len(), 3);
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(Outcome::Record(_)))));
        }
        assert_eq!(writer.stats.batches.load(Ordering::Acquire), 1);
        assert_eq!(writer.stats.ops.load(Ordering::Acquire), 3);
    }

    /// Builds one batch by hand so the refused operations are certain to share a transaction
    /// with the good ones.
    #[test]
    fn a_refused_operation_does_not_fail_the_rest_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, next_seq) = writer_connection(&dir);
        let mut writer = writer(&conn, next_seq, 16);
        let stats = Arc::clone(&writer.stats);
        let mut answers = Vec::new();
        let batch: Vec<Envelope> = [
            create_op("a"),
            create_op("a"),
            WriteOp::Transition {
                id: JobId::new("missing").unwrap(),
                update: SentUpdate::new(JobUpdate::start(1)),
                result: None,
            },
            WriteOp::Transition {
                id: JobId::new("a").unwrap(),
                update: SentUpdate::new(JobUpdate {
                    result: None,
                    ..JobUpdate::done(0, serde_json::Value::Null)
                }),
                result: Some("null".into()),
            },
            create_op("b"),
            WriteOp::Settle {
                id: JobId::new("b").unwrap(),
                update: SentUpdate::new(JobUpdate::requeue(1, None)),
                result: None,
            },
            WriteOp::Settle {
                id: JobId::new("b").unwrap(),
                update: SentUpdate::new(JobUpdate::start(4)),
                result: None,
            },
        ]
        .into_iter()
        .map(|op| {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            Envelope { op, now_ms: 5, reply }
        })
        .collect();

        writer.commit_batch(batch.into_iter(), &mut Vec::new(), &mut Vec::new());

        let results: Vec<QueueResult<Outcome>> =
            answers.into_iter().map(|mut a| a.try_recv().unwrap()).collect();
        assert!(matches!(&results[0], Ok(Outcome::Record(r)) if r.seq == 1));
        assert!(matches!(&results[1], Err(QueueError::AlreadyExists { .. })));
        assert!(matches!(&results[2], Err(QueueError::NotFound { .. })));
        assert!(matches!(&results[3], Err(QueueError::InvalidTransition { .. })));
        assert!(
            matches!(&results[4], Ok(Outcome::Record(r)) if r.seq == 2),
            "a refused create spends no seq"
        );
        assert!(matches!(&results[5], Err(QueueError::StaleLease { epoch: 1, current: 0, .. })));
        assert!(matches!(&results[6], Ok(Outcome::Settled)));
        assert_eq!(stats.batches.load(Ordering::Acquire), 1);
        assert_eq!(stats.ops.load(Ordering::Acquire), 3);
        let rows: i64 = writer.conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0)).unwrap();
        let status = |id: &str| -> (String, i64, i64) {
            writer
                .conn
                .query_row("SELECT status, attempt, lease_epoch FROM jobs WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap()
        };
        assert_eq!((rows, status("a")), (2, ("queued".into(), 0, 0)));
        assert_eq!(status("b"), ("processing".into(), 1, 4));
    }
}
