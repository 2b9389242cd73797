//! The local API's side in the daemon: one connection served at a time per task, and
//! the dispatch of each request to the part that does it (one arm per call), plus the
//! read-only answers (`Id`, `Status`, `Peers`).
//!
//! Owns: the request-to-behaviour map and the status report. Does not own: framing
//! (`rdht-api`) or what resolving, storing and fetching do (the sibling modules).

use super::*;

pub(super) fn blocked_list(p: &Policy) -> Vec<BlockedBuilder> {
    p.blocked()
        .iter()
        .map(|(b, r)| BlockedBuilder {
            builder: *b,
            reason: r.clone(),
        })
        .collect()
}

pub(super) async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let mut conn = ServerConn::new(stream);
    loop {
        let Incoming { id, request } = match conn.next().await {
            Ok(Some(i)) => i,
            Ok(None) => return,
            Err(e) => {
                debug!("dropping an API connection: {e}");
                return;
            }
        };
        debug!(id, ?request, "request");
        let answer = shared.handle(&mut conn, id, request).await;
        if let Err(e) = &answer {
            debug!(id, "request failed: {e}");
        }
        if let Err(e) = conn.reply(id, answer).await {
            debug!("API client went away: {e}");
            return;
        }
    }
}

impl Shared {
    pub(super) async fn listen_addrs(&self) -> Vec<String> {
        let Some(net) = &self.net else {
            return Vec::new();
        };
        match net.listen_addrs().await {
            Ok(per_swarm) => per_swarm
                .into_iter()
                .flat_map(|(_, addrs)| addrs)
                .map(|a| format!("{a}/p2p/{}", self.peer_id))
                .collect(),
            Err(e) => {
                warn!("listing listen addresses: {e}");
                Vec::new()
            }
        }
    }

    pub(super) async fn handle(
        self: &Arc<Self>,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        request: Request,
    ) -> Result<Response, ApiError> {
        match request {
            Request::Id => Ok(Response::Id {
                peer_id: self.peer_id.to_string(),
                builder: self.identity.builder_key(),
                listen_addrs: self.listen_addrs().await,
            }),
            Request::Status => self.status().await,
            Request::Peers => self.peers().await,
            Request::Put { files, labels, pin } => self.put(conn, id, files, labels, pin).await,
            Request::Export { root, dest } => self.export(conn, id, root, dest, false).await,
            Request::ExportLinked { root, dest } => self.export(conn, id, root, dest, true).await,
            Request::Resolve { key, scope } => {
                Ok(Response::Resolved(self.resolve_counted(key, scope).await?))
            }
            Request::ResolveExport { key, scope, dest } => {
                let resolution = self.resolve_counted(key, scope).await?;
                let entries = match &resolution {
                    Resolution::Hit { root, .. } => {
                        match self.export(conn, id, *root, dest, true).await? {
                            Response::Exported { entries, .. } => entries,
                            _ => Vec::new(),
                        }
                    }
                    Resolution::Miss { .. } => Vec::new(),
                };
                Ok(Response::ResolvedExported {
                    resolution,
                    entries,
                })
            }
            Request::Publish {
                key,
                root,
                labels,
                scope,
                build_ms,
                needs,
            } => {
                self.publish(key, root, labels, scope, build_ms, needs)
                    .await
            }
            Request::Records { key } => self.records(key).await,
            Request::Gc => {
                let report = blocking(&self.store, |s| s.gc()).await?;
                Ok(Response::Gc {
                    evicted_artifacts: report.evicted.len() as u64,
                    freed_bytes: report.bytes_freed,
                })
            }
            Request::TrustAdd { builder } => {
                let mut t = self.trust();
                t.add(builder)
                    .map_err(|e| api_err(ErrorKind::Internal, e))?;
                Ok(Response::Trust(t.trusted()))
            }
            Request::TrustRemove { builder } => {
                let mut t = self.trust();
                t.remove(builder)
                    .map_err(|e| api_err(ErrorKind::BadRequest, e))?;
                Ok(Response::Trust(t.trusted()))
            }
            Request::TrustList => Ok(Response::Trust(self.trust().trusted())),
            Request::TrustBlock { builder, reason } => {
                let mut t = self.trust();
                t.block(builder, &reason)
                    .map_err(|e| api_err(ErrorKind::Internal, e))?;
                warn!(%builder, %reason, "builder blocklisted");
                Ok(Response::Blocked(blocked_list(&t)))
            }
            Request::TrustUnblock { builder } => {
                let mut t = self.trust();
                t.unblock(builder)
                    .map_err(|e| api_err(ErrorKind::Internal, e))?;
                Ok(Response::Blocked(blocked_list(&t)))
            }
            Request::BlockList => Ok(Response::Blocked(blocked_list(&self.trust()))),
            Request::Shutdown => {
                self.stop.notify_one();
                Ok(Response::ShuttingDown)
            }
            Request::Submit(job) => Ok(Response::Submitted {
                pending: self.jobs.submit(job).await?,
            }),
            Request::Prefetch { key, scope } => {
                self.prefetch(key, scope);
                Ok(Response::Prefetching)
            }
            Request::Drain { session } => Ok(Response::Drained(
                self.jobs.tally.drain(session.as_deref()).await,
            )),
            Request::Jobs => {
                let (pending, published, failed) = self.jobs.tally.status();
                Ok(Response::Jobs(JobsStatus {
                    pending,
                    published,
                    failed,
                }))
            }
        }
    }

    pub(super) async fn status(&self) -> Result<Response, ApiError> {
        let s = blocking(&self.store, |s| s.stats()).await?;
        let swarms: Vec<SwarmStatus> = match &self.net {
            Some(net) => {
                let peers = net.peers().await.unwrap_or_default();
                let reach = net.reach().await.unwrap_or_default();
                net.lookups()
                    .into_iter()
                    .map(|(name, lookups)| {
                        let r = reach.iter().find(|r| r.swarm == name);
                        SwarmStatus {
                            peers: peers
                                .iter()
                                .find(|(n, _)| *n == name)
                                .map_or(0, |(_, p)| p.len() as u32),
                            lookups,
                            reachability: r.map_or_else(
                                || "unknown".to_string(),
                                |r| r.reachability.to_string(),
                            ),
                            kad_server: r.is_some_and(|r| r.kad_server),
                            confirmed: r.map_or_else(Vec::new, |r| {
                                r.confirmed.iter().map(ToString::to_string).collect()
                            }),
                            name,
                        }
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let peers = swarms.iter().map(|s| s.peers).sum();
        let ((dials, dials_skipped, reach_failures), unreachable) = match &self.net {
            Some(net) => (
                net.reachability_totals(),
                net.unreachable_peers()
                    .into_iter()
                    .map(|u| UnreachableStatus {
                        peer_id: u.peer.to_string(),
                        failures: u.failures,
                        unreachable_ms: u.unreachable_for.as_millis() as u64,
                        retry_in_ms: u.retry_in.as_millis() as u64,
                        forgotten: u.forgotten,
                        dials: u.dials,
                        skipped: u.skipped,
                    })
                    .collect(),
            ),
            None => ((0, 0, 0), Vec::new()),
        };
        // One guard: a second lock in the same expression would deadlock.
        let (blocklisted, trusted_builders, required_signatures) = {
            let t = self.trust();
            (
                t.blocked().len() as u32,
                t.trusted().len() as u32,
                t.required() as u32,
            )
        };
        let disk = blocking(&self.store, |s| Ok(disk_status(s))).await?;
        Ok(Response::Status(Box::new(NodeStatus {
            peer_id: self.peer_id.to_string(),
            listen_addrs: self.listen_addrs().await,
            peers,
            store: StoreStatus {
                blocks: s.blocks,
                logical_bytes: s.logical_bytes,
                disk_bytes: s.disk_bytes,
                pinned_bytes: s.pinned_bytes,
                max_bytes: self.config.store_max_bytes,
                reads: s.reads,
                hits: s.hits,
                misses: s.misses,
                evictions: s.evictions,
            },
            resolve_hits: self.resolve_hits.load(Ordering::Relaxed),
            resolve_misses: self.resolve_misses.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            blocklisted,
            trusted_builders,
            required_signatures,
            verify_sample_ppm: (self.config.verify_sample_rate * 1e6).round() as u32,
            swarms,
            dials,
            dials_skipped,
            reach_failures,
            unreachable,
            bound_waits: self.bound_waits.load(Ordering::Relaxed),
            prefetches: self.lock_prefetches().list(),
            disk,
        })))
    }

    pub(super) async fn peers(&self) -> Result<Response, ApiError> {
        let Some(net) = &self.net else {
            return Ok(Response::Peers(Vec::new()));
        };
        let per_swarm = net
            .connections()
            .await
            .map_err(|e| api_err(ErrorKind::Unavailable, e))?;
        Ok(Response::Peers(
            per_swarm
                .into_iter()
                .flat_map(|(swarm, conns)| {
                    conns.into_iter().map(move |c| PeerInfo {
                        peer_id: c.peer.to_string(),
                        swarm: swarm.clone(),
                        addr: c.addr.to_string(),
                        relayed: c.relayed,
                    })
                })
                .collect(),
        ))
    }

    /// Resolves `key` (the prefetch's source and bytes added to a hit it fetched) and
    /// counts the outcome.
    async fn resolve_counted(&self, key: BuildKey, scope: Scope) -> Result<Resolution, ApiError> {
        let mut r = self.resolve(key, scope).await?;
        if let Resolution::Hit {
            source,
            bytes_fetched,
            ..
        } = &mut r
            && let Some((swarm, bytes)) = self.lock_prefetched().remove(&key)
        {
            *source = swarm;
            *bytes_fetched += bytes;
        }
        let counter = match r {
            Resolution::Hit { .. } => &self.resolve_hits,
            Resolution::Miss { .. } => &self.resolve_misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(r)
    }
}

/// Below this much free space, a status writes a probe into the store, so that a full
/// filesystem is reported before one of the store's own writes fails on it.
const PROBE_BELOW: u64 = 8 << 20;

/// The store's filesystem and its write failure, if any (specs/store.md §7.1).
fn disk_status(store: &Store) -> DiskStatus {
    let dir = store.path().parent().unwrap_or(store.path());
    let (free_bytes, total_bytes) = match store.disk_space() {
        Some(Ok(space)) => space,
        Some(Err(e)) => {
            debug!(path = %dir.display(), "statvfs: {e}");
            (0, 0)
        }
        None => (0, 0),
    };
    if total_bytes > 0
        && free_bytes < PROBE_BELOW
        && let Err(e) = store.probe_writes()
    {
        debug!("the store cannot write: {e}");
    }
    let ago = |t: SystemTime| {
        SystemTime::now()
            .duration_since(t)
            .map_or(0, |d| d.as_millis() as u64)
    };
    DiskStatus {
        path: dir.display().to_string(),
        free_bytes,
        total_bytes,
        failure: store.write_failure().map(|f| WriteFailureStatus {
            error: f.errno,
            message: f.message,
            path: f.path.display().to_string(),
            failures: f.failures,
            since_ms: ago(f.first),
            last_ms: ago(f.last),
        }),
    }
}
