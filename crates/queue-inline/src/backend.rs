//! `InlineQueueBackend`: the seed's backend assembled from one function per method, and its
//! standard assembly over an [`InlineRuntime`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use queue_core::{
    ChatEnqueueReceipt, JobId, JobKind, JobStore, LaneId, NewJob, ProfileUpdate, QueueBackend, QueueError,
    QueueResult, Submitted, check_batch, create_then_enqueue, submit_each, submitted_or_deleted,
};

use crate::runtime::InlineRuntime;

/// A boxed, sendable future (the return type of every backend function).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A backend function of one argument.
pub type Fn1<A, R> = Arc<dyn Fn(A) -> BoxFuture<R> + Send + Sync>;
/// A backend function of no argument.
pub type Fn0<R> = Arc<dyn Fn() -> BoxFuture<R> + Send + Sync>;
/// The chat enqueue function.
pub type ChatFn =
    Arc<dyn Fn(JobId, Option<LaneId>) -> BoxFuture<QueueResult<ChatEnqueueReceipt>> + Send + Sync>;

/// One function per [`QueueBackend`] method (the seed's `InlineQueueBackend` fields).
#[derive(Clone)]
pub struct InlineBackendFns {
    /// `enqueue_upload_job`.
    pub enqueue_upload_job: Fn1<JobId, QueueResult<()>>,
    /// `enqueue_exam_job`.
    pub enqueue_exam_job: Fn1<JobId, QueueResult<()>>,
    /// `enqueue_profile_update`.
    pub enqueue_profile_update: Fn1<ProfileUpdate, QueueResult<()>>,
    /// `enqueue_chat_job`.
    pub enqueue_chat_job: ChatFn,
    /// `scan_pending_upload_jobs`.
    pub scan_pending_upload_jobs: Fn0<QueueResult<usize>>,
    /// `scan_pending_exam_jobs`.
    pub scan_pending_exam_jobs: Fn0<QueueResult<usize>>,
    /// `scan_pending_chat_jobs`.
    pub scan_pending_chat_jobs: Fn0<QueueResult<usize>>,
    /// `start`.
    pub start: Fn0<QueueResult<()>>,
    /// `stop`.
    pub stop: Fn0<QueueResult<()>>,
}

impl fmt::Debug for InlineBackendFns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InlineBackendFns { .. }")
    }
}

impl InlineBackendFns {
    /// Every function calling into `runtime`.
    #[must_use]
    pub fn over_runtime(runtime: &InlineRuntime) -> Self {
        fn f0<R, Fut>(rt: &InlineRuntime, f: fn(InlineRuntime) -> Fut) -> Fn0<R>
        where
            Fut: Future<Output = R> + Send + 'static,
        {
            let rt = rt.clone();
            Arc::new(move || Box::pin(f(rt.clone())))
        }
        let rt = runtime.clone();
        let upload = rt.clone();
        let exam = rt.clone();
        let profile = rt.clone();
        let chat = rt.clone();
        Self {
            enqueue_upload_job: Arc::new(move |id| {
                let rt = upload.clone();
                Box::pin(async move { rt.enqueue(JobKind::Upload, id).await })
            }),
            enqueue_exam_job: Arc::new(move |id| {
                let rt = exam.clone();
                Box::pin(async move { rt.enqueue(JobKind::Exam, id).await })
            }),
            enqueue_profile_update: Arc::new(move |p| {
                let rt = profile.clone();
                Box::pin(async move { rt.enqueue_profile_update(p).await })
            }),
            enqueue_chat_job: Arc::new(move |id, lane| {
                let rt = chat.clone();
                Box::pin(async move { rt.enqueue_chat(id, lane).await })
            }),
            scan_pending_upload_jobs: f0(&rt, |rt| async move { rt.scan_pending(JobKind::Upload).await }),
            scan_pending_exam_jobs: f0(&rt, |rt| async move { rt.scan_pending(JobKind::Exam).await }),
            scan_pending_chat_jobs: f0(&rt, |rt| async move { rt.scan_pending_chat_jobs().await }),
            start: f0(&rt, |rt| async move { rt.start().await }),
            stop: f0(&rt, |rt| async move { rt.stop().await }),
        }
    }
}

/// The in-process backend: `inline-test` in tests, `inline` otherwise.
#[derive(Debug, Clone)]
pub struct InlineQueueBackend {
    name: &'static str,
    fns: InlineBackendFns,
    runtime: Option<InlineRuntime>,
}

impl InlineQueueBackend {
    /// The name in tests.
    pub const TEST_NAME: &'static str = "inline-test";
    /// The name otherwise.
    pub const NAME: &'static str = "inline";

    /// A backend from explicit functions (the seed's shape; tests use it to observe calls).
    #[must_use]
    pub fn new(name: &'static str, fns: InlineBackendFns) -> Self {
        Self { name, fns, runtime: None }
    }

    /// The standard backend over an in-process runtime.
    #[must_use]
    pub fn over_runtime(name: &'static str, runtime: InlineRuntime) -> Self {
        Self { name, fns: InlineBackendFns::over_runtime(&runtime), runtime: Some(runtime) }
    }

    /// The runtime behind it, when built over one (for stats and depths).
    #[must_use]
    pub fn runtime(&self) -> Option<&InlineRuntime> {
        self.runtime.as_ref()
    }
}

#[async_trait]
impl QueueBackend for InlineQueueBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn enqueue_upload_job(&self, job_id: JobId) -> QueueResult<()> {
        (self.fns.enqueue_upload_job)(job_id).await
    }

    async fn enqueue_exam_job(&self, job_id: JobId) -> QueueResult<()> {
        (self.fns.enqueue_exam_job)(job_id).await
    }

    async fn enqueue_profile_update(&self, payload: ProfileUpdate) -> QueueResult<()> {
        (self.fns.enqueue_profile_update)(payload).await
    }

    async fn enqueue_chat_job(
        &self,
        job_id: JobId,
        lane_id: Option<LaneId>,
    ) -> QueueResult<ChatEnqueueReceipt> {
        (self.fns.enqueue_chat_job)(job_id, lane_id).await
    }

    /// Over a runtime, with `store` the runtime's own job store: creates the job, then queues it
    /// straight from the record it got back, as `submit_many` does, where the default would read
    /// the record back from the store to queue it by id. A refused enqueue deletes the record
    /// again, as in the default. Otherwise, the default ([`create_then_enqueue`]).
    async fn submit(&self, store: Arc<dyn JobStore>, job: NewJob) -> QueueResult<Submitted> {
        let runtime = self.runtime.as_ref().filter(|rt| same_store(&store, &rt.deps().store));
        let Some(runtime) = runtime else {
            return create_then_enqueue(self, store, job).await;
        };
        let record = store.create(job).await?;
        let queued = runtime.enqueue_created(&record).await;
        submitted_or_deleted(&*store, record, queued).await
    }

    /// Over a runtime, with `store` the runtime's own job store: creates the whole batch with one
    /// [`JobStore::create_many`] (one transaction in the SQLite store, instead of one per job),
    /// then queues each created job in the batch's order straight from the record it got back
    /// (no read of it), and deletes the record of a job whose enqueue is refused: each job is
    /// still all or nothing, as in `submit`. A stopped runtime refuses the whole call
    /// (`NotRunning`) before anything is created, and so does a store that could create none of
    /// the batch (with its error).
    ///
    /// Otherwise (built from explicit functions, or handed another store, whose records the
    /// runtime's workers would not find) it submits one job after the other, as the default does.
    async fn submit_many(
        &self,
        store: Arc<dyn JobStore>,
        jobs: Vec<NewJob>,
    ) -> QueueResult<Vec<QueueResult<Submitted>>> {
        check_batch(jobs.len())?;
        let runtime = self.runtime.as_ref().filter(|rt| same_store(&store, &rt.deps().store));
        let Some(runtime) = runtime else {
            return Ok(submit_each(self, store, jobs).await);
        };
        if !runtime.is_running() {
            return Err(QueueError::NotRunning);
        }
        let mut out = Vec::with_capacity(jobs.len());
        for created in store.create_many(jobs).await? {
            let submitted = match created {
                Ok(record) => {
                    let queued = runtime.enqueue_created(&record).await;
                    submitted_or_deleted(&*store, record, queued).await
                }
                Err(e) => Err(e),
            };
            out.push(submitted);
        }
        Ok(out)
    }

    async fn scan_pending_upload_jobs(&self) -> QueueResult<usize> {
        (self.fns.scan_pending_upload_jobs)().await
    }

    async fn scan_pending_exam_jobs(&self) -> QueueResult<usize> {
        (self.fns.scan_pending_exam_jobs)().await
    }

    async fn scan_pending_chat_jobs(&self) -> QueueResult<usize> {
        (self.fns.scan_pending_chat_jobs)().await
    }

    async fn start(&self) -> QueueResult<()> {
        (self.fns.start)().await
    }

    async fn stop(&self) -> QueueResult<()> {
        (self.fns.stop)().await
    }
}

/// Whether `a` and `b` are the same store (the same allocation; vtables are not compared).
fn same_store(a: &Arc<dyn JobStore>, b: &Arc<dyn JobStore>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}
