//! Resolving a build key: the local store first, then the swarms the key's scope
//! allows, under the trust policy; one resolve per key at a time (the in-flight gate).
//! Also `Records` (every record for a key, with the policy's decision on each).
//!
//! Owns: record lookups and their bound, choosing the root, fetching and registering
//! it, sampling, and why a resolve missed. Does not own: the policy itself
//! (`crate::trust`) or the swarms (`rdht-net`).

use super::announce::{self, Places};
use super::*;

pub(super) fn only_disconnects<'a>(mut reasons: impl Iterator<Item = &'a DropReason>) -> bool {
    reasons.all(|r| matches!(r, DropReason::Disconnected(_)))
}

/// Touches `activity` again when dropped: a resolve is activity until it ends.
fn scopeguard_touch(activity: &announce::Activity) -> impl Drop + '_ {
    struct Touch<'a>(&'a announce::Activity);
    impl Drop for Touch<'_> {
        fn drop(&mut self) {
            self.0.touch();
        }
    }
    Touch(activity)
}

/// A peer to ask for records first, and the swarm to ask it in.
pub(super) type Hint = (String, PeerId);

/// One key's turn to resolve: the resolves waiting for it, and the miss the last one
/// answered, which those waiting take as their own (it is as fresh as an answer of
/// their own, and asking again would hold them past their bound).
pub(super) type Gate = Arc<tokio::sync::Mutex<Option<Resolution>>>;

/// One resolve's place at its key's gate. Dropped — when the resolve ends, fails, or
/// its request is cancelled — it removes the key's entry if nobody else waits there.
struct Inflight<'a> {
    map: &'a Mutex<HashMap<BuildKey, Gate>>,
    key: BuildKey,
    gate: Gate,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are taken under this lock, so the count is exact: the map's reference
        // and ours mean nobody else waits for this key.
        if Arc::strong_count(&self.gate) == 2 {
            map.remove(&self.key);
        }
    }
}

/// [`NodeHandle::fetch_records_hinted`] (`hints` first, then the DHT; stop once
/// `enough`, or at `deadline` with what arrived), retried while nothing came back and
/// every failure is a lost connection.
pub(super) async fn fetch_records(
    net: &NodeHandle,
    key: BuildKey,
    deadline: tokio::time::Instant,
    hints: &[Hint],
    enough: &(dyn Fn(&[rdht_net::FetchedRecord]) -> bool + Send + Sync),
) -> Result<rdht_net::RecordsReport, NetError> {
    let mut attempt = 1;
    loop {
        let report = net
            .fetch_records_hinted(key, Some(deadline), hints, enough)
            .await?;
        let transient = report.records.is_empty()
            && !report.failures.is_empty()
            && only_disconnects(report.failures.iter().map(|f| &f.reason));
        if !transient || attempt >= NET_ATTEMPTS {
            return Ok(report);
        }
        debug!(%key, attempt, "every record provider's connection failed; asking again");
        attempt += 1;
    }
}

impl Shared {
    /// The records whose artifact can load on this machine (specs/records.md §2.1): a
    /// version-1 record does not say, and is kept (its files are checked on arrival).
    /// Also the misfit of the first record left out.
    pub(super) fn fitting(&self, records: &[BuildRecord]) -> (Vec<BuildRecord>, Option<String>) {
        let mut machine = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        let mut misfit = None;
        let kept = records
            .iter()
            .filter(|r| match r.needs().map(|n| machine.fits(n)) {
                Some(Err(m)) => {
                    misfit.get_or_insert_with(|| m.to_string());
                    false
                }
                _ => true,
            })
            .cloned()
            .collect();
        (kept, misfit)
    }

    /// The root the policy accepts for `key` among those of `records` that can load
    /// here, with its supporting records: a root that fits is preferred to one that
    /// does not, which is never fetched. Disagreement is logged and counted.
    pub(super) fn choose(
        &self,
        key: BuildKey,
        records: &[BuildRecord],
    ) -> Option<(BlockId, Vec<BuildRecord>)> {
        let (records, _) = self.fitting(records);
        let e = self.trust().evaluate(key, &records);
        if e.conflict {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            let roots: std::collections::BTreeSet<String> = e
                .decisions
                .iter()
                .map(|d| d.record.root().to_string())
                .collect();
            warn!(%key, ?roots, accepted = ?e.root, "builders disagree on this build key");
        }
        e.root.map(|r| (r, e.supporting))
    }

    /// Whether this hit, supported by `records`, is one of the sampled ones to rebuild
    /// and compare. What this node built itself is never sampled.
    pub(super) fn sample(&self, records: &[BuildRecord]) -> bool {
        let rate = self.config.verify_sample_rate;
        let own = self.identity.builder_key();
        rate > 0.0 && !records.iter().any(|r| r.builder() == own) && rand::random::<f64>() < rate
    }

    /// Why `records`, which exist for `key`, gave no usable root, and the reason to
    /// give: the policy accepts a root, but none that can load here; or the records
    /// are not from (enough) trusted builders.
    pub(super) fn unusable(&self, key: BuildKey, records: &[BuildRecord]) -> (String, MissCause) {
        let accepted = self.trust().evaluate(key, records).root.is_some();
        if accepted && let (_, Some(misfit)) = self.fitting(records) {
            return (misfit, MissCause::DoesNotFit);
        }
        let found = records.len();
        let reason = match self.trust().required() {
            1 => format!("{found} record(s) found, none from a trusted builder"),
            n => format!(
                "{found} record(s) found, but no artifact is claimed by {n} of the trusted builders"
            ),
        };
        let cause = if self.trust().evaluate(key, records).untrusted {
            MissCause::Untrusted
        } else {
            MissCause::NoRecord
        };
        (reason, cause)
    }

    /// A hit from the local store (a trusted root whose artifact is held), or else the
    /// local records to go on with.
    pub(super) async fn resolve_local(
        &self,
        key: BuildKey,
    ) -> Result<Result<Resolution, Vec<BuildRecord>>, ApiError> {
        // One trip to the blocking pool: the records, and which of their roots are held.
        let (local, held) = blocking(&self.store, move |s| {
            let records = s.records(&key)?;
            let mut held = HashSet::new();
            for r in &records {
                if !held.contains(&r.root()) && s.artifact(&r.root())?.is_some() {
                    held.insert(r.root());
                }
            }
            Ok((records, held))
        })
        .await?;
        if let Some((root, records)) = self.choose(key, &local)
            && held.contains(&root)
        {
            return Ok(Ok(Resolution::Hit {
                root,
                records: records.iter().map(BuildRecord::encode).collect(),
                source: "local".into(),
                bytes_fetched: 0,
                verify: self.sample(&records),
            }));
        }
        Ok(Err(local))
    }

    /// Resolves `key`: the local store, then the swarms `scope` allows. One resolve
    /// per key runs at a time; a concurrent one waits, then usually finds the artifact
    /// locally.
    pub(super) async fn resolve(
        &self,
        key: BuildKey,
        scope: Scope,
    ) -> Result<Resolution, ApiError> {
        Ok(self.resolve_hinted(key, scope, &[]).await?.0)
    }

    /// [`Self::resolve`] that asks `hints` for records before looking providers up in
    /// the DHT. Also returns the peers (with their swarm) whose records named the root
    /// chosen from the swarm, which a plan's resolve passes on as hints for its keys.
    pub(super) async fn resolve_hinted(
        &self,
        key: BuildKey,
        scope: Scope,
        hints: &[Hint],
    ) -> Result<(Resolution, Vec<Hint>), ApiError> {
        // Fetched keys are announced only once resolves pause (`announce::Announcer`).
        self.announcer.activity.touch();
        let _touch = scopeguard_touch(&self.announcer.activity);
        // The bound runs from the request, so time spent waiting for another resolve
        // of the key counts against it.
        let deadline = tokio::time::Instant::now() + self.config.lookup_timeout;
        let entry = Inflight {
            map: &self.inflight,
            key,
            gate: self.lock_inflight().entry(key).or_default().clone(),
        };
        // Dropped in reverse order: the gate's lock, then our place at it.
        let mut turn = entry.gate.lock().await;
        match turn.clone() {
            // The resolve we waited for missed just now: so do we.
            Some(miss) => Ok((miss, Vec::new())),
            None => {
                let r = match self.resolve_local(key).await {
                    Ok(Ok(hit)) => Ok((hit, Vec::new())),
                    Ok(Err(local)) => {
                        self.resolve_remote(key, scope, local, hints, deadline)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Ok((m @ Resolution::Miss { .. }, _)) = &r {
                    *turn = Some(m.clone());
                }
                r
            }
        }
    }

    pub(super) fn lock_inflight(&self) -> MutexGuard<'_, HashMap<BuildKey, Gate>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the swarms for records of `key` (none of the `local` ones gave a hit) and
    /// fetches the accepted root.
    pub(super) async fn resolve_remote(
        &self,
        key: BuildKey,
        scope: Scope,
        local: Vec<BuildRecord>,
        hints: &[Hint],
        deadline: tokio::time::Instant,
    ) -> Result<(Resolution, Vec<Hint>), ApiError> {
        let mut unreachable: Vec<String> = Vec::new();
        let miss = |reason: String, cause: MissCause, unreachable: &[String]| {
            Ok((
                Resolution::Miss {
                    reason,
                    cause,
                    unreachable: unreachable.to_vec(),
                },
                Vec::new(),
            ))
        };
        let Some(net) = &self.net else {
            let (reason, cause) = match self.unusable(key, &local) {
                (r, c @ MissCause::DoesNotFit) => (r, c),
                (_, c) => (
                    "no trusted record in the local store and no swarm is configured".into(),
                    c,
                ),
            };
            return miss(reason, cause, &unreachable);
        };
        // A private key is never asked for where it must not be revealed.
        let net = &net.within(reach(scope));
        let started = std::time::Instant::now();
        let limit = self.config.lookup_timeout;
        // Stop asking once the policy accepts a root among the local and received
        // records; at the deadline, go on with whatever arrived.
        let enough = |received: &[rdht_net::FetchedRecord]| {
            let mut all = local.clone();
            all.extend(received.iter().map(|f| f.record.clone()));
            let (fit, _) = self.fitting(&all);
            self.trust().evaluate(key, &fit).root.is_some()
        };
        // The deadline bounds the lookup and the answers; this guard only catches a
        // retry pause running past it.
        let guard = tokio::time::Instant::now().max(deadline) + NET_RETRY_SLACK;
        let report =
            match tokio::time::timeout_at(guard, fetch_records(net, key, deadline, hints, &enough))
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return miss(
                        format!("record lookup failed: {e}"),
                        MissCause::LookupFailed,
                        &unreachable,
                    );
                }
                Err(_) => {
                    return miss(
                        format!("record lookup took longer than {} ms", limit.as_millis()),
                        MissCause::LookupFailed,
                        &unreachable,
                    );
                }
            };
        let records_ms = started.elapsed().as_millis();
        if report.waited_out {
            self.bound_waits.fetch_add(1, Ordering::Relaxed);
        }
        unreachable = report.unreachable.iter().map(PeerId::to_string).collect();
        let fetched: Vec<BuildRecord> = report.records.iter().map(|f| f.record.clone()).collect();
        if fetched.is_empty() {
            let answered_not = report
                .failures
                .iter()
                .filter(|f| !matches!(f.reason, DropReason::Unreachable | DropReason::Unanswered))
                .count();
            if !unreachable.is_empty() && answered_not == 0 {
                return miss(
                    format!(
                        "{} provider(s) unreachable ({})",
                        unreachable.len(),
                        unreachable.join(", ")
                    ),
                    MissCause::Unreachable,
                    &unreachable,
                );
            }
            return match report.failures.first() {
                Some(f) => miss(
                    format!(
                        "{} provider(s) failed to answer (first: {}: {})",
                        report.failures.len(),
                        f.peer,
                        f.reason
                    ),
                    MissCause::LookupFailed,
                    &unreachable,
                ),
                None if !local.is_empty() => {
                    let (reason, cause) = self.unusable(key, &local);
                    miss(reason, cause, &unreachable)
                }
                None => miss(
                    "no provider has a record for this key".into(),
                    MissCause::NoRecord,
                    &unreachable,
                ),
            };
        }
        let keep = fetched.clone();
        blocking(&self.store, move |s| {
            for r in &keep {
                s.put_record(r)?;
            }
            Ok(())
        })
        .await?;
        let mut all = local;
        for r in &fetched {
            if !all.contains(r) {
                all.push(r.clone());
            }
        }
        let Some((root, records)) = self.choose(key, &all) else {
            self.announce_later(vec![ProviderKey::Build(key)], Places::NOWHERE);
            let (reason, cause) = match self.unusable(key, &all) {
                (r, c @ MissCause::DoesNotFit) => (r, c),
                (r, _) => (r, MissCause::Untrusted),
            };
            return miss(reason, cause, &unreachable);
        };
        let holders: Vec<Hint> = report
            .records
            .iter()
            .filter(|f| f.record.root() == root)
            .map(|f| (f.swarm.clone(), f.peer))
            .collect();
        let (swarm, bytes_fetched) = match blocking(&self.store, move |s| s.artifact(&root)).await?
        {
            Some(_) => ("local".to_string(), 0),
            None => {
                let hint = report
                    .records
                    .iter()
                    .find(|f| f.record.root() == root)
                    .map(|f| f.swarm.clone());
                let peers: Vec<PeerId> = report
                    .records
                    .iter()
                    .filter(|f| f.record.root() == root && Some(&f.swarm) == hint.as_ref())
                    .map(|f| f.peer)
                    .collect();
                let hint = hint.as_deref().map(|s| (s, peers.as_slice()));
                match self.fetch_and_register(net, root, hint, None).await? {
                    Ok(r) => (r.swarm, r.bytes_fetched),
                    Err(e) => {
                        return miss(
                            format!("fetching artifact {root} failed: {e}"),
                            MissCause::FetchFailed,
                            &unreachable,
                        );
                    }
                }
            }
        };
        // The key's accepted records are held now: announced where they came from.
        if let Some((origin, _)) = holders.first() {
            self.announce_later(vec![ProviderKey::Build(key)], Places::origin(origin));
        }
        debug!(%key, %root, records_ms, total_ms = started.elapsed().as_millis(), bytes_fetched, "resolved from the swarm");
        let hit = Resolution::Hit {
            root,
            records: records.iter().map(BuildRecord::encode).collect(),
            source: swarm,
            bytes_fetched,
            verify: self.sample(&records),
        };
        Ok((hit, holders))
    }

    pub(super) async fn records(&self, key: BuildKey) -> Result<Response, ApiError> {
        let mut all = blocking(&self.store, move |s| s.records(&key)).await?;
        if let Some(net) = &self.net {
            // Every record is wanted here (nothing is enough), within the lookup limit.
            let deadline = tokio::time::Instant::now() + self.config.lookup_timeout;
            match fetch_records(
                net,
                key,
                deadline,
                &[],
                &|_: &[rdht_net::FetchedRecord]| false,
            )
            .await
            {
                Ok(report) => {
                    for f in report.records {
                        if !all.contains(&f.record) {
                            all.push(f.record);
                        }
                    }
                }
                Err(e) => warn!(%key, "asking the swarm for records: {e}"),
            }
        }
        let e = self.trust().evaluate(key, &all);
        Ok(Response::Records(
            e.decisions
                .into_iter()
                .map(|d| RecordView {
                    record: d.record.encode(),
                    trusted: d.accepted,
                    reason: d.reason,
                })
                .collect(),
        ))
    }
}
