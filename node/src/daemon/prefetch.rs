//! Prefetching a build plan (specs/build-key.md §8): resolve the plan like a unit, read
//! it, and resolve its keys a few at a time in the background, asking the plan's
//! builders first.
//!
//! Owns: the latest prefetches and where each stands (shown by `Status`), and the
//! units fetched ahead of their resolves. Does not own: resolving one key (`resolve.rs`).

use super::*;

/// The latest prefetches and where each stands, newest last (what `Status` shows).
#[derive(Default)]
pub(super) struct Prefetches(std::collections::VecDeque<PrefetchStatus>);

impl Prefetches {
    /// Enters `plan` as running, unless it already is.
    fn start(&mut self, plan: BuildKey) -> bool {
        if self
            .0
            .iter()
            .any(|p| p.plan == plan && p.state == PrefetchState::Running)
        {
            return false;
        }
        self.0.retain(|p| p.plan != plan);
        self.0.push_back(PrefetchStatus {
            plan,
            state: PrefetchState::Running,
        });
        // Only finished entries are let go: a running one is how `start` knows.
        while self.0.len() > MAX_PREFETCHES_SHOWN {
            match self
                .0
                .iter()
                .position(|p| p.state != PrefetchState::Running)
            {
                Some(i) => {
                    self.0.remove(i);
                }
                None => break,
            }
        }
        true
    }

    fn end(&mut self, plan: BuildKey, state: PrefetchState) {
        if let Some(p) = self.0.iter_mut().find(|p| p.plan == plan) {
            p.state = state;
        }
    }

    /// Every entry, oldest first.
    pub(super) fn list(&self) -> Vec<PrefetchStatus> {
        self.0.iter().cloned().collect()
    }
}

/// A running plan's entry. Dropped without an outcome (the task panicked), it ends the
/// entry as failed, so the plan can be prefetched again.
struct Running {
    shared: Arc<Shared>,
    key: BuildKey,
    state: Option<PrefetchState>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let state = self.state.take().unwrap_or_else(|| PrefetchState::Failed {
            reason: "the prefetch task ended early".into(),
        });
        self.shared.lock_prefetches().end(self.key, state);
    }
}

impl Shared {
    /// Starts prefetching plan `key` in the background, unless it is already running.
    /// The plan's keys are looked up within the plan's `scope`.
    pub(super) fn prefetch(self: &Arc<Self>, key: BuildKey, scope: Scope) {
        if self.net.is_none() || !self.lock_prefetches().start(key) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut running = Running {
                shared: me.clone(),
                key,
                state: None,
            };
            let started = std::time::Instant::now();
            let state = match me.run_prefetch(key, scope).await {
                Ok((n, fetched, bytes)) => {
                    let ms = started.elapsed().as_millis() as u64;
                    info!(plan = %key, keys = n, fetched, bytes, ms, "prefetched a build plan");
                    PrefetchState::Done {
                        keys: n as u32,
                        fetched: fetched as u32,
                        bytes,
                        ms,
                    }
                }
                Err(reason) => {
                    info!(plan = %key, "no build plan prefetched: {reason}");
                    PrefetchState::Failed { reason }
                }
            };
            running.state = Some(state);
        });
    }

    pub(super) fn lock_prefetched(&self) -> MutexGuard<'_, HashMap<BuildKey, (String, u64)>> {
        self.prefetched.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_prefetches(&self) -> MutexGuard<'_, Prefetches> {
        self.prefetches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves plan `key`, reads the plan, and resolves its keys in order, a few at a
    /// time, asking the peers whose records named the plan first (the builder of a plan
    /// usually holds its units), so a key costs no DHT lookup when they have it. Returns
    /// (keys, artifacts fetched, bytes fetched).
    pub(super) async fn run_prefetch(
        &self,
        key: BuildKey,
        scope: Scope,
    ) -> Result<(usize, usize, u64), String> {
        let (root, hints) = match self
            .resolve_hinted(key, scope, &[])
            .await
            .map_err(|e| e.message)?
        {
            (Resolution::Hit { root, .. }, hints) => (root, hints),
            (Resolution::Miss { reason, .. }, _) => return Err(reason),
        };
        let dir = self.scratch_dir("plan");
        let d = dir.clone();
        let text = blocking(&self.store, move |s| {
            let manifest = s.export(&root, &d)?;
            match manifest.files() {
                [f] if f.path == PLAN_FILE && f.size <= plan::MAX_PLAN_LEN as u64 => {
                    Ok(std::fs::read(d.join(PLAN_FILE)).ok())
                }
                _ => Ok(None),
            }
        })
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let text = text
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("artifact {root} is not a build plan"))?;
        let keys = plan::decode(&text).map_err(|e| e.to_string())?;
        let fetched = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        futures::stream::iter(keys.iter().copied())
            .for_each_concurrent(PREFETCH_CONCURRENCY, |k| {
                let (fetched, bytes, hints) = (&fetched, &bytes, &hints);
                async move {
                    if let Ok((
                        Resolution::Hit {
                            bytes_fetched,
                            source,
                            ..
                        },
                        _,
                    )) = self.resolve_hinted(k, scope, hints).await
                        && bytes_fetched > 0
                    {
                        fetched.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(bytes_fetched, Ordering::Relaxed);
                        let mut p = self.lock_prefetched();
                        if p.len() >= MAX_PREFETCHED_KEPT {
                            p.clear();
                        }
                        p.insert(k, (source, bytes_fetched));
                    }
                }
            })
            .await;
        Ok((
            keys.len(),
            fetched.into_inner() as usize,
            bytes.into_inner(),
        ))
    }
}
