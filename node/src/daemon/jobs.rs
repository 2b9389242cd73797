//! The queue of `Submit` jobs: one worker task that stores and publishes each job in
//! turn, and [`Jobs`], its handle (enqueue, tallies, close).
//!
//! Owns: the channel, the worker, its lifecycle and the tallies' updates. Does not own:
//! what a job's files must satisfy (`crate::submit`) or publishing (`artifacts`).

use super::*;

/// The job queue's handle, held by `Shared`.
pub(super) struct Jobs {
    /// `None` once the daemon stops accepting jobs.
    tx: Mutex<Option<tokio::sync::mpsc::Sender<Job>>>,
    /// The worker, taken by [`Jobs::close`].
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Per-session counts of queued, published and failed jobs.
    pub(super) tally: Tally,
}

/// The receiving end, until [`Jobs::start`] hands it to the worker.
pub(super) struct JobsRx(tokio::sync::mpsc::Receiver<Job>);

impl Jobs {
    /// A queue with no worker yet (it needs the `Shared` that will hold this handle).
    pub(super) fn new() -> (Jobs, JobsRx) {
        let (tx, rx) = tokio::sync::mpsc::channel(submit::QUEUE_LEN);
        let jobs = Jobs {
            tx: Mutex::new(Some(tx)),
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
            while let Some(job) = rx.recv().await {
                let session = job.session.clone();
                let name = job.labels.crate_name.clone();
                let key = job.key;
                let outcome = me.run_job(job).await;
                if let Err(e) = &outcome {
                    warn!(%key, crate_name = %name, reason = e.reason(), "not shared: {e}");
                }
                me.jobs.tally.finished(&session, &name, outcome);
            }
        });
        *lock(&shared.jobs.worker) = Some(worker);
    }

    /// Queues `job`; returns how many of its session's jobs are pending.
    pub(super) async fn submit(&self, job: Job) -> Result<u32, ApiError> {
        submit::check_request(&job.files).map_err(|e| api_err(ErrorKind::BadRequest, e))?;
        let stopping = || api_err(ErrorKind::Unavailable, "the daemon is stopping");
        let tx = lock(&self.tx).clone().ok_or_else(stopping)?;
        let session = job.session.clone();
        let pending = self.tally.queued(&session);
        let name = job.labels.crate_name.clone();
        if tx.send(job).await.is_err() {
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
    async fn run_job(&self, job: Job) -> Result<(), submit::JobError> {
        let scratch = self.scratch_dir("job");
        let files = job.files;
        let labels = job.labels.clone();
        let dir = scratch.clone();
        let stored = blocking(&self.store, move |s| {
            let prepared = match submit::prepare(&files, &dir) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let info = s.ingest(labels, prepared.files.clone(), false)?;
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
