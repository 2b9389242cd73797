//! The announce rule (specs/swarm.md §6.2): where each key this node holds is announced,
//! kept in the store's marks so that a restart announces it in the same places again.
//!
//! Owns: [`Places`], announcing in the background within [`ANNOUNCE_TIMEOUT`], and
//! re-announcing after a restart. Does not own: the swarms' own policies (`rdht-net`)
//! or what is held (`rdht-store`).
//!
//! Invariant: every announcement goes through [`Shared::announce`] or
//! [`Shared::announce_later`], which mark the key where it is announced, so a restart
//! never announces a key anywhere the running daemon did not.

use super::*;

/// Where keys are announced: the bits of their store mark (specs/store.md §4.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Places(u8);

impl Places {
    /// Set in every mark this daemon writes; a held key with no mark predates marks
    /// and is announced in the automatic swarms, as before them.
    const DECIDED: u8 = 0x80;
    /// The automatic swarms (the private swarm).
    pub(super) const AUTOMATIC: Places = Places(0x01);
    /// The public swarm, when this node is in it.
    pub(super) const PUBLIC: Places = Places(0x02);
    /// Held but announced nowhere: records fetched and not accepted.
    pub(super) const NOWHERE: Places = Places(0);

    /// Where something fetched from `swarm` is announced: there and nowhere else (the
    /// private swarm is the only automatic one).
    pub(super) fn origin(swarm: &str) -> Places {
        if swarm == PUBLIC_SWARM {
            Places::PUBLIC
        } else {
            Places::AUTOMATIC
        }
    }

    /// Both `self` and `other`.
    pub(super) fn and(self, other: Places) -> Places {
        Places(self.0 | other.0)
    }

    fn has(self, other: Places) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    fn of_mark(bits: Option<u8>) -> Places {
        match bits {
            Some(b) if b & Self::DECIDED != 0 => Places(b & !Self::DECIDED),
            _ => Places::AUTOMATIC,
        }
    }
}

/// Mark kinds: the provider key tags (specs/swarm.md §6.1).
const KINDS: [u8; 2] = [0x01, 0x02];

/// The mark kind of a provider key, and its id.
fn mark_of(key: &ProviderKey) -> (u8, &[u8; 32]) {
    match key {
        ProviderKey::Build(k) => (KINDS[0], k.as_bytes()),
        ProviderKey::Artifact(r) => (KINDS[1], r.as_bytes()),
    }
}

/// Announces `keys` in `places`; failures only cost findability, so they are logged.
async fn announce_now(net: NodeHandle, keys: Vec<ProviderKey>, places: Places, public: bool) {
    for key in keys {
        let work = async {
            let mut swarms = Vec::new();
            if places.has(Places::AUTOMATIC) {
                swarms.extend(net.provide(key).await?);
            }
            if places.has(Places::PUBLIC) && public {
                net.provide_in(PUBLIC_SWARM, key).await?;
                swarms.push(PUBLIC_SWARM.to_string());
            }
            Ok::<Vec<String>, NetError>(swarms)
        };
        match tokio::time::timeout(ANNOUNCE_TIMEOUT, work).await {
            Ok(Ok(swarms)) if swarms.is_empty() => {
                debug!(%key, ?places, "not announced: no swarm of this node takes it")
            }
            Ok(Ok(swarms)) => debug!(%key, ?swarms, "announced"),
            Ok(Err(e)) => warn!(%key, "announcing failed: {e}"),
            Err(_) => warn!(%key, "announcing timed out after {ANNOUNCE_TIMEOUT:?}"),
        }
    }
}

/// What the store holds, by where it is announced after a restart: (the automatic
/// swarms, the public swarm), each key where its mark says. Drops the marks of what is
/// no longer held (evicted, or its records gone).
fn held_by_place(s: &Store) -> Result<(Vec<ProviderKey>, Vec<ProviderKey>), StoreError> {
    let mut automatic = Vec::new();
    let mut public = Vec::new();
    let roots = s.artifact_roots()?.into_iter().map(ProviderKey::Artifact);
    let keys = s.build_keys()?.into_iter().map(ProviderKey::Build);
    let mut marks: HashMap<(u8, [u8; 32]), u8> = HashMap::new();
    for kind in KINDS {
        marks.extend(s.marks(kind)?.into_iter().map(|(id, b)| ((kind, id), b)));
    }
    for key in roots.chain(keys) {
        let (kind, id) = mark_of(&key);
        let places = Places::of_mark(marks.remove(&(kind, *id)));
        if places.has(Places::AUTOMATIC) {
            automatic.push(key);
        }
        if places.has(Places::PUBLIC) {
            public.push(key);
        }
    }
    for kind in KINDS {
        let gone: Vec<[u8; 32]> = marks
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| *id)
            .collect();
        s.remove_marks(kind, &gone)?;
    }
    Ok((automatic, public))
}

/// Announcements of what this node fetched, waiting for their turn.
const LATER_QUEUE: usize = 4096;
/// How long no key may have been resolved before a fetched key is announced.
const QUIET: Duration = Duration::from_secs(2);

/// When this node last resolved a key: the announcer waits for a pause in builds.
pub(super) struct Activity {
    base: std::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// A key is being resolved now.
    pub(super) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long no key has been resolved.
    fn quiet_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The task that announces fetched keys one at a time, once builds pause, and the
/// queue that feeds it. Fetched keys are many (two per unit of a build served from the
/// swarm) and help other nodes only later, while each announcement is a DHT query that
/// competes with the build's own lookups and their 300 ms bound.
pub(super) struct Announcer {
    tx: tokio::sync::mpsc::Sender<(Vec<ProviderKey>, Places)>,
    /// When keys were last resolved.
    pub(super) activity: Arc<Activity>,
}

impl Announcer {
    /// Starts the task (it ends when the queue's sender is dropped).
    pub(super) fn start(net: Option<NodeHandle>, public: bool) -> Announcer {
        let (tx, mut rx) = tokio::sync::mpsc::channel(LATER_QUEUE);
        let activity = Arc::new(Activity::new());
        let busy = activity.clone();
        tokio::spawn(async move {
            while let Some((keys, places)) = rx.recv().await {
                let Some(net) = &net else { continue };
                loop {
                    let quiet = busy.quiet_for();
                    if quiet >= QUIET {
                        break;
                    }
                    tokio::time::sleep(QUIET - quiet).await;
                }
                announce_now(net.clone(), keys, places, public).await;
            }
        });
        Announcer { tx, activity }
    }
}

impl Shared {
    /// Marks `keys` as announced in `places` and announces them there. Returns once
    /// every key is in the local provider store of each of those swarms (a peer that
    /// asks this node finds it from then on, so a `Publish` answered is findable), at
    /// most [`ANNOUNCE_TIMEOUT`] later; the DHT queries that spread the announcements
    /// finish in the background. For what this node built or put.
    pub(super) async fn announce(&self, keys: Vec<ProviderKey>, places: Places) {
        self.mark(&keys, places);
        let Some(net) = self.net.clone() else { return };
        let mut swarms: Vec<Option<&'static str>> = Vec::new();
        if places.has(Places::AUTOMATIC) {
            swarms.push(None);
        }
        if places.has(Places::PUBLIC) && self.config.public {
            swarms.push(Some(PUBLIC_SWARM));
        }
        let start = async {
            let mut running = Vec::new();
            for key in &keys {
                for swarm in &swarms {
                    match net.start_providing(*key, *swarm).await {
                        Ok(a) => running.extend(a),
                        Err(e) => warn!(%key, "announcing failed: {e}"),
                    }
                }
            }
            running
        };
        let running = match tokio::time::timeout(ANNOUNCE_TIMEOUT, start).await {
            Ok(r) => r,
            Err(_) => {
                warn!("starting announcements took over {ANNOUNCE_TIMEOUT:?}");
                return;
            }
        };
        if running.is_empty() {
            debug!(
                ?places,
                keys = keys.len(),
                "not announced: no swarm of this node takes these keys"
            );
            return;
        }
        tokio::spawn(async move {
            for a in running {
                match tokio::time::timeout(ANNOUNCE_TIMEOUT, a.done()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!("announcing failed: {e}"),
                    Err(_) => warn!("announcing timed out after {ANNOUNCE_TIMEOUT:?}"),
                }
            }
        });
    }

    /// [`Self::announce`] for what this node fetched: marked at once, announced in
    /// turn by the [`Announcer`]. A full queue drops the announcement (it costs
    /// findability until the next restart).
    pub(super) fn announce_later(&self, keys: Vec<ProviderKey>, places: Places) {
        self.mark(&keys, places);
        if places != Places::NOWHERE
            && self.net.is_some()
            && let Err(e) = self.announcer.tx.try_send((keys, places))
        {
            debug!("not announcing fetched keys: {e}");
        }
    }

    /// Remembers where `keys` are announced, in the background.
    fn mark(&self, keys: &[ProviderKey], places: Places) {
        let store = self.store.clone();
        let keys = keys.to_vec();
        tokio::spawn(async move {
            let marking = tokio::task::spawn_blocking(move || {
                for k in &keys {
                    let (kind, id) = mark_of(k);
                    store.add_mark(kind, id, Places::DECIDED | places.0)?;
                }
                Ok::<(), StoreError>(())
            });
            match marking.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("remembering where keys are announced: {e}"),
                Err(e) => warn!("remembering where keys are announced: {e}"),
            }
        });
    }

    /// Announces everything the store holds after a (re)start, each key where its mark
    /// says, and drops the marks of what is no longer held.
    pub(super) async fn reannounce(&self) {
        let Some(net) = &self.net else { return };
        let held = blocking(&self.store, held_by_place).await;
        let (automatic, public) = match held {
            Ok(v) => v,
            Err(e) => {
                warn!("listing what to re-announce: {e}");
                return;
            }
        };
        match net.reannounce(None, automatic).await {
            Ok(0) => debug!("nothing re-announced: no automatic swarm, or nothing held for one"),
            Ok(n) => info!(keys = n, "re-announced the store's contents"),
            Err(e) => warn!("re-announcing: {e}"),
        }
        if self.config.public && !public.is_empty() {
            match net.reannounce(Some(PUBLIC_SWARM), public).await {
                Ok(n) => info!(
                    keys = n,
                    swarm = PUBLIC_SWARM,
                    "re-announced the store's contents"
                ),
                Err(e) => warn!(swarm = PUBLIC_SWARM, "re-announcing: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(s: &Store, key: ProviderKey, places: Places) {
        let (kind, id) = mark_of(&key);
        s.add_mark(kind, id, Places::DECIDED | places.0).unwrap();
    }

    /// Each held key goes where its marks put it; unmarked keys (older stores) go to
    /// the automatic swarms; marks of what is gone are dropped.
    #[test]
    fn a_restart_announces_each_held_key_where_its_marks_say() {
        let s = Store::memory(rdht_store::Config::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let held = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, name).unwrap();
            let file = IngestFile::from_disk(name, path).unwrap();
            s.ingest(Labels::default(), vec![file], true).unwrap().root
        };
        let (own, fetched_public, legacy) = (held("own"), held("public"), held("legacy"));
        let (own, fetched_public, legacy) = (
            ProviderKey::Artifact(own),
            ProviderKey::Artifact(fetched_public),
            ProviderKey::Artifact(legacy),
        );
        mark(&s, own, Places::AUTOMATIC.and(Places::PUBLIC));
        mark(&s, fetched_public, Places::PUBLIC);
        // A later fetch from the private swarm adds a place; it takes none away.
        mark(&s, fetched_public, Places::NOWHERE);
        let gone = ProviderKey::Artifact(BlockId::from_bytes([7; 32]));
        mark(&s, gone, Places::AUTOMATIC);
        let (automatic, public) = held_by_place(&s).unwrap();
        let mut want_automatic = vec![own, legacy];
        let mut want_public = vec![own, fetched_public];
        let order = |k: &ProviderKey| k.to_bytes();
        want_automatic.sort_by_key(order);
        want_public.sort_by_key(order);
        assert_eq!((automatic, public), (want_automatic, want_public));
        assert_eq!(
            s.marks(KINDS[1]).unwrap().len(),
            2,
            "the gone root's mark is dropped"
        );
    }
}
