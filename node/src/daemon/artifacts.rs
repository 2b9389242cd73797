//! Artifacts in and out of the store for the API: `Put`, `Export` (fetching from the
//! swarm when needed) and `Publish`.
//!
//! Owns: those requests. Does not own: fetching (`fetch`), the `Submit` queue (`jobs`)
//! or the store's format (`rdht-store`).

use super::announce::Places;
use super::*;

impl Shared {
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
        self.announce(vec![ProviderKey::Artifact(info.root)], Places::AUTOMATIC)
            .await;
        Ok(Response::Put {
            root: info.root,
            files: info.files,
            bytes: info.file_bytes,
        })
    }

    /// Fetches artifact `root` from the swarms into the store, forwarding byte progress;
    /// returns the swarm it came from.
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
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let fetch = self.fetch_and_register(net, root, None, Some(tx));
        tokio::pin!(fetch);
        let report = loop {
            tokio::select! {
                r = &mut fetch => break r,
                Some(done) = rx.recv() => {
                    let _ = conn.progress(id, Progress::Bytes { done, total: None }).await;
                }
            }
        }?
        .map_err(fetch_err)?;
        Ok(report.swarm)
    }

    /// Writes artifact `root` under `dest`, fetching it first when it is not held, or
    /// again when a held copy turns out incomplete or modified (the store dropped the
    /// damaged file; the fetch brings back only what is missing). `linked`: files
    /// other than dep-info may be hard links to the store's copies.
    pub(super) async fn export(
        &self,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        root: BlockId,
        dest: String,
        linked: bool,
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
        let write = |dest: String| {
            blocking(&self.store, move |s| {
                Ok(
                    s.export_with(&root, Path::new(&dest), &|path| export_mode(linked, path))
                        .map(|(m, _)| m),
                )
            })
        };
        let manifest = match write(dest.clone()).await? {
            Err(e @ StoreError::Dag { .. }) if held.is_some() && self.net.is_some() => {
                warn!(%root, "held artifact is incomplete ({e}); fetching it again");
                self.fetch(conn, id, root).await?;
                write(dest).await?.map_err(store_err)?
            }
            other => other.map_err(store_err)?,
        };
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
        needs: Needs,
    ) -> Result<Response, ApiError> {
        let info = blocking(&self.store, move |s| s.artifact(&root))
            .await?
            .ok_or_else(|| {
                api_err(
                    ErrorKind::NotFound,
                    format!("artifact {root} is not in the store; put it first"),
                )
            })?;
        let record = BuildRecord::sign_body(
            RecordBody {
                version: rdht_core::record::RECORD_VERSION,
                key,
                root,
                size: info.file_bytes,
                time: now(),
                build_ms,
                labels,
                builder: self.identity.builder_key(),
                needs,
            },
            self.identity.signing_key(),
        )
        .map_err(|e| api_err(ErrorKind::BadRequest, e))?;
        let stored = record.clone();
        blocking(&self.store, move |s| {
            s.put_record(&stored)?;
            s.pin(&root)
        })
        .await?;
        let places = match scope {
            Scope::Everywhere => Places::AUTOMATIC.and(Places::PUBLIC),
            Scope::Private => Places::AUTOMATIC,
        };
        self.announce(
            vec![ProviderKey::Build(key), ProviderKey::Artifact(root)],
            places,
        )
        .await;
        Ok(Response::Published {
            record: record.encode(),
        })
    }
}

/// How a file at `path` in an artifact may be placed: a hard link to the store's copy
/// only for `ExportLinked` and never for dep-info (`.d`), which the shim rewrites in
/// place (its localised paths); rustc and its linkers replace every other output with
/// a new file (checked with strace: rlib, rmeta, bin, cdylib are renamed into place).
fn export_mode(linked: bool, path: &str) -> rdht_store::Mode {
    if linked && !path.ends_with(".d") {
        rdht_store::Mode::Link
    } else {
        rdht_store::Mode::OwnInode
    }
}
