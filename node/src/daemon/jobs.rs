//! The queue of `Submit` jobs: one worker task that stores and publishes each job in
//! turn, and [`Jobs`], its handle (enqueue, tallies, close).
//!
//! Owns: the channel, the worker, its lifecycle and the tallies' updates. Does not own:
//! what a job's files must satisfy (`crate::submit`) or publishing (`artifacts`).

use super::*;

/// A queued job and the files the daemon opened for it when it was submitted.
type Queued = (Job, submit::Held);

/// Files the queue holds open at most (half the open-file limit, which the daemon
/// raises at start): past it, files are read by path, as they were before.
fn held_budget() -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    usize::try_from(soft / 2).unwrap_or(usize::MAX).min(1 << 16)
}

/// The job queue's handle, held by `Shared`.
pub(super) struct Jobs {
    /// `None` once the daemon stops accepting jobs.
    tx: Mutex<Option<tokio::sync::mpsc::Sender<Queued>>>,
    /// Submitted files held open now, and the most that may be.
    held: Arc<AtomicUsize>,
    max_held: usize,
    /// The worker, taken by [`Jobs::close`].
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Per-session counts of queued, published and failed jobs.
    pub(super) tally: Tally,
}

/// The receiving end, until [`Jobs::start`] hands it to the worker.
pub(super) struct JobsRx(tokio::sync::mpsc::Receiver<Queued>);

impl Jobs {
    /// A queue with no worker yet (it needs the `Shared` that will hold this handle).
    pub(super) fn new() -> (Jobs, JobsRx) {
        let (tx, rx) = tokio::sync::mpsc::channel(submit::QUEUE_LEN);
        let jobs = Jobs {
            tx: Mutex::new(Some(tx)),
            held: Arc::new(AtomicUsize::new(0)),
            max_held: held_budget(),
            worker: Mutex::new(None),
            tally: Tally::default(),
        };
        (jobs, JobsRx(rx))
    }

    /// Starts the worker: jobs run one at a time (they read, hash and write whole
    /// artifacts; one at a time leaves the cores to the compiles still running).
    pub(super) fn start(shared: &Arc<Shared>, rx: JobsRx) {
        let me = shared.clone();
        let mut rx = rx.0;
        let worker = tokio::spawn(async move {
            while let Some((job, held)) = rx.recv().await {
                let session = job.session.clone();
                let name = job.labels.crate_name.clone();
                let key = job.key;
                let n = held.count();
                let outcome = me.run_job(job, held).await;
                me.jobs.held.fetch_sub(n, Ordering::Relaxed);
                if let Err(e) = &outcome {
                    warn!(%key, crate_name = %name, reason = e.reason(), "not shared: {e}");
                }
                me.jobs.tally.finished(&session, &name, outcome);
            }
        });
        *lock(&shared.jobs.worker) = Some(worker);
    }

    /// Opens the job's files (before answering: the client may delete them as soon
    /// as it has its answer) and queues it; returns how many of its session's jobs are
    /// pending.
    pub(super) async fn submit(&self, job: Job) -> Result<u32, ApiError> {
        submit::check_request(&job.files).map_err(|e| api_err(ErrorKind::BadRequest, e))?;
        let stopping = || api_err(ErrorKind::Unavailable, "the daemon is stopping");
        let tx = lock(&self.tx).clone().ok_or_else(stopping)?;
        let budget = self
            .max_held
            .saturating_sub(self.held.load(Ordering::Relaxed));
        let (job, held) = tokio::task::spawn_blocking(move || {
            let held = submit::Held::open(&job.files, budget);
            (job, held)
        })
        .await
        .map_err(|e| api_err(ErrorKind::Internal, format!("opening submitted files: {e}")))?;
        self.held.fetch_add(held.count(), Ordering::Relaxed);
        let session = job.session.clone();
        let pending = self.tally.queued(&session);
        let name = job.labels.crate_name.clone();
        if let Err(e) = tx.send((job, held)).await {
            self.held.fetch_sub(e.0.1.count(), Ordering::Relaxed);
            self.tally
                .finished(&session, &name, Err(submit::JobError::Stopping));
            return Err(stopping());
        }
        Ok(pending)
    }

    /// Stops taking jobs and lets the queued ones finish (their wrappers already
    /// returned to cargo) within `limit`; the rest are dropped.
    pub(super) async fn close(&self, limit: Duration) {
        lock(&self.tx).take();
        let Some(worker) = lock(&self.worker).take() else {
            return;
        };
        let abort = worker.abort_handle();
        if tokio::time::timeout(limit, worker).await.is_err() {
            warn!("submitted jobs still running after {limit:?}; dropping them");
            abort.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Stores a job's files (unpinned until the record is published), checks they did
    /// not change while being read, then publishes.
    async fn run_job(&self, job: Job, held: submit::Held) -> Result<(), submit::JobError> {
        let scratch = self.scratch_dir("job");
        let files = job.files;
        let labels = job.labels.clone();
        let dir = scratch.clone();
        let stored = blocking(&self.store, move |s| {
            let prepared = match submit::prepare(&files, &dir, &held) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let info = s.ingest_outputs(labels, prepared.files.clone(), false)?;
            Ok(prepared.recheck().map(|()| info.root))
        })
        .await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let root = stored.map_err(|e| submit::JobError::Store(e.message))??;
        self.publish(
            job.key,
            root,
            job.labels,
            job.scope,
            job.build_ms,
            job.needs,
        )
        .await
        .map_err(|e| submit::JobError::Publish(e.message))?;
        Ok(())
    }
}
