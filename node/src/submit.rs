//! Background jobs for `Request::Submit`: a build's outputs are stored and published
//! after the wrapper that built them has returned to cargo.
//!
//! Owns: the job type, per-session tallies (what `Request::Drain` waits for), and turning
//! a job's files into ingestible files: writing inline contents to a private directory
//! and checking that each on-disk file is still the one the client described (size,
//! modification time, inode) before and after it is read. Does not own: storing,
//! signing or announcing (the daemon), or the queue's worker loop (the daemon).
//!
//! Invariant: a job publishes a record only for bytes read from files whose identity
//! matched the client's description both before and after reading, so a file rewritten
//! by a later compile is never published under the earlier compile's key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rdht_api::proto::{FileSource, MAX_INLINE_BYTES, SubmitFile, file_identity};
use rdht_store::IngestFile;
use tokio::sync::Notify;

/// Jobs that may wait in the queue; a full queue makes `Submit` wait (backpressure).
pub const QUEUE_LEN: usize = 1024;
/// Failure lines kept per session.
const MAX_FAILURES_KEPT: usize = 100;
/// Sessions tracked at once; finished ones beyond this are forgotten.
const MAX_SESSIONS: usize = 1024;

/// One submitted build output.
pub type Job = rdht_api::proto::Submission;

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

/// A job's files, ready to ingest; inline ones written under `scratch`.
pub struct Prepared {
    /// What to ingest.
    pub files: Vec<IngestFile>,
    /// On-disk files with the identity the client gave, to check again after reading.
    checks: Vec<(PathBuf, (u64, i128, u64))>,
}

/// Writes inline contents under `scratch` (created) and checks on-disk files against
/// the client's description.
pub fn prepare(files: &[SubmitFile], scratch: &Path) -> Result<Prepared, String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let mut out = Prepared {
        files: Vec::with_capacity(files.len()),
        checks: Vec::new(),
    };
    for (n, f) in files.iter().enumerate() {
        match &f.source {
            FileSource::Inline(bytes) => {
                let p = scratch.join(n.to_string());
                std::fs::write(&p, bytes).map_err(|e| format!("writing {}: {e}", p.display()))?;
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
                let want = (*len, *mtime_ns, *ino);
                check_identity(&p, want)?;
                out.files.push(IngestFile {
                    path: f.path.clone(),
                    source: p.clone(),
                    executable: *executable,
                });
                out.checks.push((p, want));
            }
        }
    }
    Ok(out)
}

impl Prepared {
    /// Checks, after reading, that no on-disk file changed.
    pub fn recheck(&self) -> Result<(), String> {
        self.checks
            .iter()
            .try_for_each(|(p, want)| check_identity(p, *want))
    }
}

fn check_identity(p: &Path, want: (u64, i128, u64)) -> Result<(), String> {
    let have = file_identity(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if have != want {
        return Err(format!(
            "{} changed after the compile that produced it (size, time or inode differ)",
            p.display()
        ));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct SessionTally {
    pending: u32,
    published: u64,
    failed: Vec<String>,
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

    /// Records a finished job.
    pub fn finished(&self, session: &str, outcome: Result<(), String>) {
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
            match outcome {
                Ok(()) => t.published += 1,
                Err(e) if t.failed.len() < MAX_FAILURES_KEPT => t.failed.push(e),
                Err(_) => {}
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until `session` has no pending job, then forgets it and returns what its
    /// jobs did: (published, failure lines). With `None`, waits until no job is pending
    /// anywhere and reports every session without forgetting any.
    pub async fn drain(&self, session: Option<&str>) -> (u64, Vec<String>) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                match session {
                    Some(session) => match s.get(session) {
                        None => return (0, Vec::new()),
                        Some(t) if t.pending == 0 => {
                            let t = s.remove(session).unwrap_or_default();
                            return (t.published, t.failed);
                        }
                        Some(_) => {}
                    },
                    None if s.values().all(|t| t.pending == 0) => {
                        let published = s.values().map(|t| t.published).sum();
                        let failed = s.values().flat_map(|t| t.failed.clone()).collect();
                        return (published, failed);
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
        let p = prepare(&job, &d.path().join("s1")).unwrap();
        assert_eq!(p.files[0].source, f);
        p.recheck().unwrap();
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, b"second build").unwrap();
        let err = p.recheck().unwrap_err();
        assert!(err.contains("changed after the compile"), "{err}");
        let err = prepare(&job, &d.path().join("s2")).err().unwrap();
        assert!(err.contains("lib.rlib changed"), "{err}");
        std::fs::remove_file(&f).unwrap();
        let err = prepare(&job, &d.path().join("s3")).err().unwrap();
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn inline_contents_are_written_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![SubmitFile {
            path: "rdht/stderr".into(),
            source: FileSource::Inline(b"warning: x\n".to_vec()),
        }];
        check_request(&files).unwrap();
        let p = prepare(&files, &d.path().join("s")).unwrap();
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

    #[tokio::test]
    async fn drain_waits_for_the_sessions_jobs_only() {
        let t = std::sync::Arc::new(Tally::default());
        assert_eq!(t.queued("a"), 1);
        assert_eq!(t.queued("a"), 2);
        assert_eq!(t.queued("b"), 3);
        t.finished("b", Ok(()));
        assert_eq!(t.drain(Some("b")).await, (1, vec![]));
        let all = {
            let t = t.clone();
            tokio::spawn(async move { t.drain(None).await })
        };
        t.finished("a", Ok(()));
        tokio::task::yield_now().await;
        assert!(!all.is_finished());
        t.finished("a", Err("serde: disk full".into()));
        assert_eq!(all.await.unwrap(), (1, vec!["serde: disk full".into()]));
        // Draining everything forgets nothing; draining the session does.
        assert_eq!(
            t.drain(Some("a")).await,
            (1, vec!["serde: disk full".into()])
        );
        t.queued("c");
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.drain(Some("c")).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        t.finished("c", Ok(()));
        assert_eq!(waiter.await.unwrap(), (1, vec![]));
        // Forgotten once drained.
        assert_eq!(t.drain(Some("a")).await, (0, vec![]));
        assert_eq!(t.drain(None).await, (0, vec![]));
    }
}
