//! Background jobs for `Request::Submit`: a build's outputs are stored and published
//! after the wrapper that built them has returned to cargo.
//!
//! Owns: the job type, why a job failed ([`JobError`], counted by its fixed reason),
//! per-session tallies (what `Request::Drain` waits for and reports), and turning
//! a job's files into ingestible files: writing inline contents to a private directory
//! and checking that each on-disk file is still the one the client described (size,
//! modification time, inode) before and after it is read. Does not own: storing,
//! signing or announcing (the daemon), or the queue and its worker (`daemon::jobs`).
//!
//! Invariant: a job publishes a record only for bytes read from files whose identity
//! matched the client's description both before and after reading, so a file rewritten
//! by a later compile is never published under the earlier compile's key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rdht_api::proto::{
    DrainReport, FileSource, MAX_INLINE_BYTES, ShareFailure, SubmitFile, file_identity,
};
use rdht_store::IngestFile;
use tokio::sync::Notify;

/// Jobs that may wait in the queue; a full queue makes `Submit` wait (backpressure).
pub const QUEUE_LEN: usize = 1024;
/// Failures listed per session (all are counted).
const MAX_FAILURES_KEPT: usize = 100;
/// Sessions tracked at once; finished ones beyond this are forgotten.
const MAX_SESSIONS: usize = 1024;

/// One submitted build output.
pub type Job = rdht_api::proto::Submission;

/// Why a job published nothing. [`JobError::reason`] is the phrase failures are counted
/// by (specs/local-api.md §3.1); the message says which file and what differed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// An on-disk output no longer had the described identity when the job began: it was
    /// rewritten after the compile, e.g. by a later compile of the same unit.
    #[error("{} changed after the compile that produced it ({differs} differs)", path.display())]
    Changed {
        /// The output.
        path: PathBuf,
        /// What differs: `size`, `modification time`, `inode`, joined by `, `.
        differs: String,
    },
    /// An on-disk output's identity changed while the job was reading it.
    #[error("{} changed while it was being stored ({differs} differs)", path.display())]
    ChangedWhileStoring {
        /// The output.
        path: PathBuf,
        /// What differs, as for [`JobError::Changed`].
        differs: String,
    },
    /// An on-disk output could not be examined (removed, or unreadable).
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The output.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The daemon could not write inline contents into its scratch directory.
    #[error("{}: {source}", path.display())]
    Scratch {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not ingest the files.
    #[error("storing: {0}")]
    Store(String),
    /// Signing, storing or announcing the record failed.
    #[error("publishing: {0}")]
    Publish(String),
    /// The daemon stopped before running the job.
    #[error("the daemon is stopping")]
    Stopping,
}

impl JobError {
    /// The fixed phrase this failure is counted by.
    pub fn reason(&self) -> &'static str {
        match self {
            JobError::Changed { .. } => "changed after the compile",
            JobError::ChangedWhileStoring { .. } => "changed while being stored",
            JobError::Unreadable { .. } => "output missing or unreadable",
            JobError::Scratch { .. } => "daemon scratch space",
            JobError::Store(_) => "store error",
            JobError::Publish(_) => "publish error",
            JobError::Stopping => "daemon stopping",
        }
    }
}

/// Why a submitted request is refused at once.
pub fn check_request(files: &[SubmitFile]) -> Result<(), String> {
    let mut inline = 0usize;
    for f in files {
        match &f.source {
            FileSource::Disk { path, .. } if !Path::new(path).is_absolute() => {
                return Err(format!("source path {path:?} is not absolute"));
            }
            FileSource::Disk { .. } => {}
            FileSource::Inline(bytes) => inline += bytes.len(),
        }
    }
    if inline > MAX_INLINE_BYTES {
        return Err(format!(
            "inline contents total {inline} bytes, over the limit of {MAX_INLINE_BYTES}"
        ));
    }
    Ok(())
}

/// A file's identity: (size, modification time in ns, inode).
type Identity = (u64, i128, u64);

/// Submitted files the daemon opened while answering `Submit`, by their index in the
/// job's files: an open descriptor keeps a file readable after its directory entry is
/// removed (`cargo install` deletes its target dir as soon as cargo exits). `None` for
/// inline files and for files that could not be opened (they are read by path later,
/// and a missing one fails the job as it always did).
#[derive(Debug, Default)]
pub struct Held(Vec<Option<std::fs::File>>);

impl Held {
    /// Opens each on-disk file of `files`, at most `budget` of them.
    pub fn open(files: &[SubmitFile], budget: usize) -> Held {
        let mut left = budget;
        Held(
            files
                .iter()
                .map(|f| match &f.source {
                    FileSource::Disk { path, .. } if left > 0 => {
                        let file = std::fs::File::open(path).ok();
                        left -= usize::from(file.is_some());
                        file
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// How many files are held.
    pub fn count(&self) -> usize {
        self.0.iter().filter(|f| f.is_some()).count()
    }

    /// The path through which file `n` is read: its descriptor's, when held.
    fn path(&self, n: usize, given: &Path) -> PathBuf {
        match self.0.get(n).and_then(Option::as_ref) {
            Some(file) => PathBuf::from(format!("/proc/self/fd/{}", fd(file))),
            None => given.to_path_buf(),
        }
    }
}

fn fd(file: &std::fs::File) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(file)
}

/// A job's files, ready to ingest; inline ones written under `scratch`.
pub struct Prepared {
    /// What to ingest.
    pub files: Vec<IngestFile>,
    /// On-disk files with the identity the client gave, to check again after reading:
    /// (the path named in errors, the path read, the identity).
    checks: Vec<(PathBuf, PathBuf, Identity)>,
}

/// Writes inline contents under `scratch` (created) and checks on-disk files against
/// the client's description; `held` files are read through their descriptors.
pub fn prepare(files: &[SubmitFile], scratch: &Path, held: &Held) -> Result<Prepared, JobError> {
    std::fs::create_dir_all(scratch).map_err(|source| JobError::Scratch {
        path: scratch.to_path_buf(),
        source,
    })?;
    let mut out = Prepared {
        files: Vec::with_capacity(files.len()),
        checks: Vec::new(),
    };
    for (n, f) in files.iter().enumerate() {
        match &f.source {
            FileSource::Inline(bytes) => {
                let p = scratch.join(n.to_string());
                std::fs::write(&p, bytes).map_err(|source| JobError::Scratch {
                    path: p.clone(),
                    source,
                })?;
                out.files.push(IngestFile {
                    path: f.path.clone(),
                    source: p,
                    executable: false,
                });
            }
            FileSource::Disk {
                path,
                len,
                mtime_ns,
                ino,
                executable,
            } => {
                let p = PathBuf::from(path);
                let read = held.path(n, &p);
                let want = (*len, *mtime_ns, *ino);
                if let Some(differs) = differs(&p, &read, want)? {
                    return Err(JobError::Changed { path: p, differs });
                }
                out.files.push(IngestFile {
                    path: f.path.clone(),
                    source: read.clone(),
                    executable: *executable,
                });
                out.checks.push((p, read, want));
            }
        }
    }
    Ok(out)
}

impl Prepared {
    /// Checks, after reading, that no on-disk file changed.
    pub fn recheck(&self) -> Result<(), JobError> {
        for (p, read, want) in &self.checks {
            if let Some(differs) = differs(p, read, *want)? {
                return Err(JobError::ChangedWhileStoring {
                    path: p.clone(),
                    differs,
                });
            }
        }
        Ok(())
    }
}

/// What of the identity of `p`, read through `read`, differs from `want`, if anything.
fn differs(p: &Path, read: &Path, want: Identity) -> Result<Option<String>, JobError> {
    let have = file_identity(read).map_err(|source| JobError::Unreadable {
        path: p.to_path_buf(),
        source,
    })?;
    let what: Vec<&str> = [
        (have.0 != want.0, "size"),
        (have.1 != want.1, "modification time"),
        (have.2 != want.2, "inode"),
    ]
    .into_iter()
    .filter_map(|(d, name)| d.then_some(name))
    .collect();
    Ok((!what.is_empty()).then(|| what.join(", ")))
}

#[derive(Debug, Default)]
struct SessionTally {
    pending: u32,
    report: DrainReport,
}

impl SessionTally {
    fn record(&mut self, crate_name: &str, outcome: &Result<(), JobError>) {
        match outcome {
            Ok(()) => self.report.published += 1,
            Err(e) => {
                *self
                    .report
                    .failed_by_reason
                    .entry(e.reason().to_string())
                    .or_default() += 1;
                if self.report.failed.len() < MAX_FAILURES_KEPT {
                    self.report.failed.push(ShareFailure {
                        crate_name: crate_name.to_string(),
                        reason: e.reason().to_string(),
                        detail: e.to_string(),
                    });
                }
            }
        }
    }
}

/// Jobs per session, for `Drain`.
#[derive(Debug, Default)]
pub struct Tally {
    sessions: Mutex<HashMap<String, SessionTally>>,
    changed: Notify,
    /// Finished jobs since start: (published, failed); never forgotten by a drain.
    totals: Mutex<(u64, u64)>,
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionTally>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a queued job; returns the jobs pending in every session.
    pub fn queued(&self, session: &str) -> u32 {
        let mut s = self.lock();
        if s.len() >= MAX_SESSIONS && !s.contains_key(session) {
            s.retain(|_, t| t.pending > 0);
        }
        s.entry(session.to_string()).or_default().pending += 1;
        s.values().map(|t| t.pending).sum()
    }

    /// Jobs queued or running, and finished jobs since start (published, failed).
    pub fn status(&self) -> (u32, u64, u64) {
        let pending = self.lock().values().map(|t| t.pending).sum();
        let (published, failed) = *self.totals.lock().unwrap_or_else(|e| e.into_inner());
        (pending, published, failed)
    }

    /// Records a finished job of `crate_name`.
    pub fn finished(&self, session: &str, crate_name: &str, outcome: Result<(), JobError>) {
        {
            let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
            match &outcome {
                Ok(()) => totals.0 += 1,
                Err(_) => totals.1 += 1,
            }
        }
        {
            let mut s = self.lock();
            let t = s.entry(session.to_string()).or_default();
            t.pending = t.pending.saturating_sub(1);
            t.record(crate_name, &outcome);
        }
        self.changed.notify_waiters();
    }

    /// Waits until `session` has no pending job, then forgets it and returns what its
    /// jobs did. With `None`, waits until no job is pending anywhere and reports every
    /// session without forgetting any.
    pub async fn drain(&self, session: Option<&str>) -> DrainReport {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                match session {
                    Some(session) => match s.get(session) {
                        None => return DrainReport::default(),
                        Some(t) if t.pending == 0 => {
                            return s.remove(session).unwrap_or_default().report;
                        }
                        Some(_) => {}
                    },
                    None if s.values().all(|t| t.pending == 0) => {
                        let mut all = DrainReport::default();
                        for t in s.values() {
                            all.published += t.report.published;
                            for (r, n) in &t.report.failed_by_reason {
                                *all.failed_by_reason.entry(r.clone()).or_default() += n;
                            }
                            all.failed.extend(t.report.failed.iter().cloned());
                        }
                        return all;
                    }
                    None => {}
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    fn disk(path: &Path) -> SubmitFile {
        SubmitFile {
            path: "out/f".into(),
            source: FileSource::from_disk(path).unwrap(),
        }
    }

    #[test]
    fn a_rewritten_file_is_refused_before_and_after_reading() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("lib.rlib");
        std::fs::write(&f, b"first").unwrap();
        let job = vec![disk(&f)];
        let p = prepare(&job, &d.path().join("s1"), &Held::default()).unwrap();
        assert_eq!(p.files[0].source, f);
        p.recheck().unwrap();
        // Rewritten by a later compile: a new file, another size.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, b"second build").unwrap();
        let err = p.recheck().unwrap_err();
        assert_eq!(err.reason(), "changed while being stored");
        assert!(
            matches!(&err, JobError::ChangedWhileStoring { differs, .. } if differs.starts_with("size")),
            "{err}"
        );
        let err = prepare(&job, &d.path().join("s2"), &Held::default())
            .err()
            .unwrap();
        assert_eq!(err.reason(), "changed after the compile");
        assert!(
            err.to_string().starts_with(&format!(
                "{} changed after the compile that produced it (size",
                f.display()
            )),
            "{err}"
        );
        // Only its time moved: named as such.
        let job = vec![disk(&f)];
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::open(&f)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(later))
            .unwrap();
        let err = prepare(&job, &d.path().join("s3"), &Held::default())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "{} changed after the compile that produced it (modification time differs)",
                f.display()
            )
        );
        std::fs::remove_file(&f).unwrap();
        let err = prepare(&job, &d.path().join("s4"), &Held::default())
            .err()
            .unwrap();
        assert_eq!(err.reason(), "output missing or unreadable");
        assert!(err.to_string().contains("No such file"), "{err}");
    }

    /// Regression (issue 16): `cargo install` removes its target dir as soon as cargo
    /// exits, before the job runs. A file held open since `Submit` is still read, and
    /// still checked: rewritten in place, it is refused.
    #[test]
    fn a_held_file_is_read_after_it_is_deleted_and_still_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("rg");
        std::fs::write(&f, b"the binary").unwrap();
        let job = vec![disk(&f)];
        let held = Held::open(&job, 8);
        assert_eq!(held.count(), 1);
        assert_eq!(
            Held::open(&job, 0).count(),
            0,
            "the budget bounds descriptors"
        );
        std::fs::remove_file(&f).unwrap();
        let p = prepare(&job, &d.path().join("s1"), &held).unwrap();
        assert_eq!(std::fs::read(&p.files[0].source).unwrap(), b"the binary");
        p.recheck().unwrap();
        // Unheld, the same job fails as it always did.
        let err = prepare(&job, &d.path().join("s2"), &Held::default())
            .err()
            .unwrap();
        assert_eq!(err.reason(), "output missing or unreadable");
        // A held file rewritten in place (same inode, other size) is refused.
        std::fs::write(&f, b"v1").unwrap();
        let job = vec![disk(&f)];
        let held = Held::open(&job, 8);
        std::fs::write(&f, b"version two").unwrap();
        let err = prepare(&job, &d.path().join("s3"), &held).err().unwrap();
        assert_eq!(err.reason(), "changed after the compile");
    }

    #[test]
    fn inline_contents_are_written_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![SubmitFile {
            path: "rdht/stderr".into(),
            source: FileSource::Inline(b"warning: x\n".to_vec()),
        }];
        check_request(&files).unwrap();
        let p = prepare(&files, &d.path().join("s"), &Held::default()).unwrap();
        assert_eq!(std::fs::read(&p.files[0].source).unwrap(), b"warning: x\n");
        let big = vec![SubmitFile {
            path: "rdht/stderr".into(),
            source: FileSource::Inline(vec![b'x'; MAX_INLINE_BYTES + 1]),
        }];
        let err = check_request(&big).unwrap_err();
        assert_eq!(
            err,
            format!(
                "inline contents total {} bytes, over the limit of {MAX_INLINE_BYTES}",
                MAX_INLINE_BYTES + 1
            )
        );
        let rel = vec![SubmitFile {
            path: "out/a".into(),
            source: FileSource::Disk {
                path: "rel/a".into(),
                len: 0,
                mtime_ns: 0,
                ino: 0,
                executable: false,
            },
        }];
        assert_eq!(
            check_request(&rel).unwrap_err(),
            "source path \"rel/a\" is not absolute"
        );
    }

    fn report(published: u64) -> DrainReport {
        DrainReport {
            published,
            ..DrainReport::default()
        }
    }

    #[tokio::test]
    async fn drain_waits_for_the_sessions_jobs_only() {
        let t = std::sync::Arc::new(Tally::default());
        assert_eq!(t.queued("a"), 1);
        assert_eq!(t.queued("a"), 2);
        assert_eq!(t.queued("b"), 3);
        t.finished("b", "x", Ok(()));
        assert_eq!(t.drain(Some("b")).await, report(1));
        let all = {
            let t = t.clone();
            tokio::spawn(async move { t.drain(None).await })
        };
        t.finished("a", "x", Ok(()));
        tokio::task::yield_now().await;
        assert!(!all.is_finished());
        t.finished("a", "serde", Err(JobError::Store("disk full".into())));
        let got = all.await.unwrap();
        assert_eq!(
            got.failed_by_reason,
            BTreeMap::from([("store error".to_string(), 1)])
        );
        assert_eq!(got.failed[0].crate_name, "serde");
        assert_eq!(got.failed[0].detail, "storing: disk full");
        // Draining everything forgets nothing; draining the session does.
        assert_eq!(t.drain(Some("a")).await, got);
        t.queued("c");
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.drain(Some("c")).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        t.finished("c", "x", Ok(()));
        assert_eq!(waiter.await.unwrap(), report(1));
        // Forgotten once drained.
        assert_eq!(t.drain(Some("a")).await, DrainReport::default());
        assert_eq!(t.drain(None).await, DrainReport::default());
    }

    #[test]
    fn every_failure_is_counted_by_reason_but_only_the_first_are_listed() {
        let mut t = SessionTally::default();
        for i in 0..MAX_FAILURES_KEPT + 5 {
            let e = if i % 2 == 0 {
                JobError::Stopping
            } else {
                JobError::Publish("no swarm".into())
            };
            t.record(&format!("c{i}"), &Err(e));
        }
        t.record("ok", &Ok(()));
        let r = t.report;
        assert_eq!(r.published, 1);
        assert_eq!(r.failed_count(), MAX_FAILURES_KEPT as u64 + 5);
        assert_eq!(
            r.failed_by_reason,
            BTreeMap::from([
                ("daemon stopping".to_string(), 53),
                ("publish error".to_string(), 52)
            ])
        );
        assert_eq!(r.failed.len(), MAX_FAILURES_KEPT);
        assert_eq!(
            r.failed[1],
            ShareFailure {
                crate_name: "c1".into(),
                reason: "publish error".into(),
                detail: "publishing: no swarm".into()
            }
        );
    }
}
