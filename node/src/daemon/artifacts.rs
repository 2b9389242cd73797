//! Artifacts in and out of the store for the API: `Put`, `Export` (fetching from the
//! swarm when needed), `Publish`, and the background job queue of `Submit`.
//!
//! Owns: those requests and the job worker. Does not own: the checks a job makes of
//! its files (`crate::submit`) or the store's format (`rdht-store`).

use super::*;

/// Runs submitted jobs one at a time (they read, hash and write whole artifacts; one at a
/// time leaves the cores to the compiles that are still running).
pub(super) async fn run_jobs(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        let session = job.session.clone();
        let name = job.labels.crate_name.clone();
        let key = job.key;
        let outcome = shared.run_job(job).await;
        if let Err(e) = &outcome {
            warn!(%key, crate_name = %name, reason = e.reason(), "not shared: {e}");
        }
        shared.tally.finished(&session, &name, outcome);
    }
}

impl Shared {
    /// Queues a submitted build output.
    pub(super) async fn submit(&self, job: Job) -> Result<Response, ApiError> {
        submit::check_request(&job.files).map_err(|e| api_err(ErrorKind::BadRequest, e))?;
        let tx = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| api_err(ErrorKind::Unavailable, "the daemon is stopping"))?;
        let session = job.session.clone();
        let pending = self.tally.queued(&session);
        let name = job.labels.crate_name.clone();
        if tx.send(job).await.is_err() {
            self.tally
                .finished(&session, &name, Err(submit::JobError::Stopping));
            return Err(api_err(ErrorKind::Unavailable, "the daemon is stopping"));
        }
        Ok(Response::Submitted { pending })
    }

    /// A fresh path under the data directory's `tmp` for the daemon's own files.
    pub(super) fn scratch_dir(&self, what: &str) -> PathBuf {
        let n = self.job_seq.fetch_add(1, Ordering::Relaxed);
        self.config
            .data_dir
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Stores a job's files (unpinned until the record is published), checks they did
    /// not change while being read, then publishes.
    pub(super) async fn run_job(&self, job: Job) -> Result<(), submit::JobError> {
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
        self.publish(job.key, root, job.labels, job.scope, job.build_ms)
            .await
            .map_err(|e| submit::JobError::Publish(e.message))?;
        Ok(())
    }

    pub(super) async fn put(
        &self,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        files: Vec<rdht_api::proto::PutFile>,
        labels: Labels,
        pin: bool,
    ) -> Result<Response, ApiError> {
        for f in &files {
            if !Path::new(&f.source).is_absolute() {
                return Err(api_err(
                    ErrorKind::BadRequest,
                    format!("source path {:?} is not absolute", f.source),
                ));
            }
        }
        let n = files.len();
        let _ = conn
            .progress(id, Progress::Step(format!("storing {n} files")))
            .await;
        let info = blocking(&self.store, move |s| {
            let files = files
                .into_iter()
                .map(|f| IngestFile::from_disk(f.path, f.source))
                .collect::<Result<Vec<_>, _>>()?;
            s.ingest(labels, files, pin)
        })
        .await?;
        self.announce(vec![ProviderKey::Artifact(info.root)], None);
        Ok(Response::Put {
            root: info.root,
            files: info.files,
            bytes: info.file_bytes,
        })
    }

    /// Fetches artifact `root` from the swarms into the store, forwarding byte progress.
    pub(super) async fn fetch(
        &self,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        root: BlockId,
    ) -> Result<String, ApiError> {
        let Some(net) = &self.net else {
            return Err(api_err(
                ErrorKind::NotFound,
                format!("artifact {root} is not in the local store and no swarm is configured"),
            ));
        };
        let session = self.store.session();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let report = {
            let sink = FetchSink::new(&session, self.bytes_in.clone(), Some(tx));
            let fetch = fetch_artifact(net, root, &sink, None);
            tokio::pin!(fetch);
            loop {
                tokio::select! {
                    r = &mut fetch => break r,
                    Some(done) = rx.recv() => {
                        let _ = conn.progress(id, Progress::Bytes { done, total: None }).await;
                    }
                }
            }
        }
        .map_err(fetch_err)?;
        let swarm = report.swarm.clone();
        tokio::task::spawn_blocking(move || session.register(root, false))
            .await
            .map_err(|e| api_err(ErrorKind::Internal, format!("store task failed: {e}")))?
            .map_err(store_err)?;
        info!(%root, %swarm, blocks = report.blocks_fetched, bytes = report.bytes_fetched, wire_bytes = report.wire_bytes, "fetched artifact");
        // We hold it now: serve it in the swarm it came from, and only there.
        if let Err(e) = net.provide_in(&swarm, ProviderKey::Artifact(root)).await {
            warn!(%root, "announcing a fetched artifact: {e}");
        }
        Ok(swarm)
    }

    pub(super) async fn export(
        &self,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        root: BlockId,
        dest: String,
    ) -> Result<Response, ApiError> {
        if !Path::new(&dest).is_absolute() {
            return Err(api_err(
                ErrorKind::BadRequest,
                format!("destination {dest:?} is not absolute"),
            ));
        }
        let held = blocking(&self.store, move |s| s.artifact(&root)).await?;
        if held.is_none() {
            self.fetch(conn, id, root).await?;
        }
        let manifest = blocking(&self.store, move |s| s.export(&root, Path::new(&dest))).await?;
        Ok(Response::Exported {
            files: manifest.files().len() as u32,
            bytes: manifest.total_size(),
            entries: manifest
                .files()
                .iter()
                .map(|f| ExportedFile {
                    path: f.path.clone(),
                    size: f.size,
                    root: f.root,
                    executable: f.executable,
                })
                .collect(),
        })
    }

    pub(super) async fn publish(
        &self,
        key: BuildKey,
        root: BlockId,
        labels: Labels,
        scope: Scope,
        build_ms: u64,
    ) -> Result<Response, ApiError> {
        let info = blocking(&self.store, move |s| s.artifact(&root))
            .await?
            .ok_or_else(|| {
                api_err(
                    ErrorKind::NotFound,
                    format!("artifact {root} is not in the store; put it first"),
                )
            })?;
        let record = BuildRecord::sign_timed(
            key,
            root,
            info.file_bytes,
            now(),
            build_ms,
            labels,
            self.identity.signing_key(),
        )
        .map_err(|e| api_err(ErrorKind::BadRequest, e))?;
        let stored = record.clone();
        blocking(&self.store, move |s| {
            s.put_record(&stored)?;
            s.pin(&root)
        })
        .await?;
        let public = match scope {
            Scope::Everywhere if self.config.public => Some(PUBLIC_SWARM),
            _ => None,
        };
        self.announce(
            vec![ProviderKey::Build(key), ProviderKey::Artifact(root)],
            public,
        );
        Ok(Response::Published {
            record: record.encode(),
        })
    }
}
