//! Messages of the local API, version [`API_VERSION`] (specs/local-api.md §3–§4).
//!
//! A client frame is `version, id, Request`; the server answers the same `id` with any
//! number of `Progress` frames and then exactly one `Done(Response)` or `Failed(ApiError)`.
//! Encoding is postcard. Adding a variant at the end of an enum is compatible; anything
//! else bumps [`API_VERSION`].
//!
//! Owns: message types and their encode/decode. Does not own: framing ([`crate::frame`])
//! or behaviour (the daemon).

use std::collections::BTreeMap;

use rdht_core::{BlockId, BuildKey, BuilderKey, Labels, Needs};
use serde::{Deserialize, Serialize};

/// The API version this build speaks.
pub const API_VERSION: u16 = 5;

/// One file to put into an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutFile {
    /// Absolute path of the file to read, on the daemon's machine.
    pub source: String,
    /// Relative path inside the artifact (specs/blocks.md §6 rules).
    pub path: String,
}

/// Largest total of inline file contents in one [`Request::Submit`]; larger files go by
/// path. Keeps the request well under the frame limit.
pub const MAX_INLINE_BYTES: usize = 512 << 10;

/// One file of a [`Request::Submit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitFile {
    /// Relative path inside the artifact (specs/blocks.md §6 rules).
    pub path: String,
    /// Its contents.
    pub source: FileSource,
}

/// A build's outputs handed over by [`Request::Submit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The build key.
    pub key: BuildKey,
    /// The files.
    pub files: Vec<SubmitFile>,
    /// The unit's labels.
    pub labels: Labels,
    /// Where it may be announced.
    pub scope: Scope,
    /// How long the build took, in milliseconds (signed into the record).
    pub build_ms: u64,
    /// Groups jobs for [`Request::Drain`] (e.g. one `cargo dht-build` run).
    pub session: String,
    /// What the outputs need of the C runtime (signed into the record).
    pub needs: Needs,
}

/// Where a submitted file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileSource {
    /// A file the daemon reads later. The identity fields are what the client saw; the
    /// daemon refuses the job if the file no longer matches them before or after reading.
    Disk {
        /// Absolute path.
        path: String,
        /// Size in bytes.
        len: u64,
        /// Modification time, nanoseconds since the Unix epoch.
        mtime_ns: i128,
        /// Inode number.
        ino: u64,
        /// Whether it is exported executable.
        executable: bool,
    },
    /// Small contents carried in the request.
    Inline(Vec<u8>),
}

impl FileSource {
    /// `path` on disk, described by its current size, modification time, inode and
    /// execute bit.
    pub fn from_disk(path: &std::path::Path) -> std::io::Result<FileSource> {
        use std::os::unix::fs::PermissionsExt;
        let (len, mtime_ns, ino) = file_identity(path)?;
        let executable = std::fs::metadata(path)?.permissions().mode() & 0o111 != 0;
        let path = path.to_str().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("path {} is not UTF-8", path.display()),
            )
        })?;
        Ok(FileSource::Disk {
            path: path.to_string(),
            len,
            mtime_ns,
            ino,
            executable,
        })
    }
}

/// A file's identity as [`FileSource::Disk`] records it: (size, modification time in
/// nanoseconds since the Unix epoch, inode).
pub fn file_identity(path: &std::path::Path) -> std::io::Result<(u64, i128, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    Ok((m.len(), mtime, m.ino()))
}

/// Where a published record may be announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Private swarms only: path, git and private-registry crates.
    Private,
    /// Every swarm, the public one included: crates.io crates.
    Everywhere,
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The node's identity.
    Id,
    /// Counters and sizes.
    Status,
    /// Connected peers.
    Peers,
    /// Ingest files into an artifact.
    Put {
        /// The files.
        files: Vec<PutFile>,
        /// The artifact's labels.
        labels: Labels,
        /// Pin it so GC never evicts it.
        pin: bool,
    },
    /// Write an artifact's files under a directory, verifying everything.
    Export {
        /// The artifact root.
        root: BlockId,
        /// Absolute path of the directory to write into.
        dest: String,
    },
    /// Find a trusted artifact for a build key: local store, then the swarms `scope`
    /// allows, in order.
    Resolve {
        /// The build key.
        key: BuildKey,
        /// The unit's scope: a `Private` key is never looked up in the public swarm.
        scope: Scope,
    },
    /// Sign, store and announce a record that `key` built into `root`.
    Publish {
        /// The build key.
        key: BuildKey,
        /// The artifact root (must be in the store).
        root: BlockId,
        /// The unit's labels.
        labels: Labels,
        /// Where it may be announced.
        scope: Scope,
        /// How long the build took, in milliseconds (signed into the record).
        build_ms: u64,
        /// What the outputs need of the C runtime (signed into the record).
        needs: Needs,
    },
    /// Every known record for a key, with the trust decision for each.
    Records {
        /// The build key.
        key: BuildKey,
    },
    /// Run garbage collection now.
    Gc,
    /// Trust a builder's records.
    TrustAdd {
        /// The builder.
        builder: BuilderKey,
    },
    /// Stop trusting a builder.
    TrustRemove {
        /// The builder.
        builder: BuilderKey,
    },
    /// List trusted builders.
    TrustList,
    /// Blocklist a builder caught lying: its records are ignored.
    TrustBlock {
        /// The builder.
        builder: BuilderKey,
        /// Why, kept with the entry.
        reason: String,
    },
    /// Remove a builder from the blocklist.
    TrustUnblock {
        /// The builder.
        builder: BuilderKey,
    },
    /// List blocklisted builders.
    BlockList,
    /// Stop the daemon cleanly.
    Shutdown,
    /// Store files as a pinned artifact and publish a record that `key` built into it,
    /// in the background: the daemon answers once the job is queued, so the caller need
    /// not wait for the store or the swarm.
    Submit(Submission),
    /// Wait until every job submitted under `session` (every job, with `None`) has
    /// finished; report them.
    Drain {
        /// The session; `None` for all.
        session: Option<String>,
    },
    /// Start fetching, in the background, every unit of the build plan `key`
    /// (specs/build-key.md §8); answered at once.
    Prefetch {
        /// The plan key.
        key: BuildKey,
        /// The plan's scope, which its keys are looked up in too (plans are `Private`).
        scope: Scope,
    },
    /// The sharing backlog: submitted jobs queued or running, and what finished jobs
    /// did since the daemon started; answered at once.
    Jobs,
    /// [`Request::Export`] into a build's output directory: every file whose name does
    /// not end in `.d` may be a hard link to the store's kept copy (its bytes verified
    /// as for `Export`), because the compiler replaces its outputs rather than rewriting
    /// them in place; dep-info, which the caller rewrites, always gets its own inode.
    /// Answered with [`Response::Exported`].
    ExportLinked {
        /// The artifact root.
        root: BlockId,
        /// Absolute path of the directory to write into.
        dest: String,
    },
    /// [`Request::Resolve`] and, on a hit, [`Request::ExportLinked`] of the chosen root
    /// into `dest`, in one round trip: what a cache hit asks of the daemon. Answered
    /// with [`Response::ResolvedExported`].
    ResolveExport {
        /// The build key.
        key: BuildKey,
        /// The unit's scope, as for `Resolve`.
        scope: Scope,
        /// Absolute path of the directory to write a hit into.
        dest: String,
    },
}

/// Submitted jobs, for [`Request::Jobs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsStatus {
    /// Jobs queued or running.
    pub pending: u32,
    /// Jobs that stored and published their artifact since the daemon started.
    pub published: u64,
    /// Jobs that failed since the daemon started.
    pub failed: u64,
}

/// What the jobs a [`Request::Drain`] waited for did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Jobs that stored and published their artifact.
    pub published: u64,
    /// Every failed job, counted by [`ShareFailure::reason`].
    pub failed_by_reason: BTreeMap<String, u64>,
    /// The failed jobs themselves, the first 100 of each session.
    pub failed: Vec<ShareFailure>,
}

impl DrainReport {
    /// How many jobs failed (all of them, not only those listed).
    pub fn failed_count(&self) -> u64 {
        self.failed_by_reason.values().sum()
    }
}

/// A submitted job that published nothing (specs/local-api.md §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareFailure {
    /// The unit's crate name.
    pub crate_name: String,
    /// Why, as a short fixed phrase that failures are counted by (e.g. `changed after
    /// the compile`).
    pub reason: String,
    /// The whole message: which file, what differed, the error.
    pub detail: String,
}

/// Counters of the node's store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Blocks held.
    pub blocks: u64,
    /// Bytes of block data held.
    pub logical_bytes: u64,
    /// Bytes the store occupies on disk.
    pub disk_bytes: u64,
    /// Bytes of pinned artifacts.
    pub pinned_bytes: u64,
    /// The size cap GC keeps the store under (0: none).
    pub max_bytes: u64,
    /// Block reads.
    pub reads: u64,
    /// Reads that found the block.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Artifacts evicted by GC.
    pub evictions: u64,
}

/// The node's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// libp2p peer id.
    pub peer_id: String,
    /// Addresses the node listens on.
    pub listen_addrs: Vec<String>,
    /// Connected peers, over all swarms.
    pub peers: u32,
    /// The store.
    pub store: StoreStatus,
    /// Resolves answered with an artifact.
    pub resolve_hits: u64,
    /// Resolves answered with a miss.
    pub resolve_misses: u64,
    /// Block bytes received from peers, as sent (LZ4 blocks count compressed).
    pub bytes_in: u64,
    /// Block bytes sent to peers, as sent (LZ4 blocks count compressed).
    pub bytes_out: u64,
    /// Resolves where builders disagreed on the root.
    pub conflicts: u64,
    /// Blocklisted builders.
    pub blocklisted: u32,
    /// Trusted builders (this node included).
    pub trusted_builders: u32,
    /// Distinct trusted builders that must claim an artifact before it is used.
    pub required_signatures: u32,
    /// Share of other builders' hits rebuilt and compared, in parts per million.
    pub verify_sample_ppm: u32,
    /// Each swarm, in lookup order.
    pub swarms: Vec<SwarmStatus>,
    /// Outbound dials since the daemon started, all swarms and peers.
    pub dials: u64,
    /// Dials and record requests skipped because the peer was in back-off.
    pub dials_skipped: u64,
    /// Failures to reach a peer recorded (failed dials, record requests unanswered
    /// within the bound).
    pub reach_failures: u64,
    /// Peers remembered as unreachable now, sorted by peer id (specs/swarm.md §6.4).
    pub unreachable: Vec<UnreachableStatus>,
    /// Resolves whose record phase lasted the whole bound (`lookup_timeout_ms`): a
    /// provider was silent until it, or the deadline passed.
    pub bound_waits: u64,
    /// The latest build plans prefetched (at most [`MAX_PREFETCHES_SHOWN`]), oldest
    /// first.
    pub prefetches: Vec<PrefetchStatus>,
    /// The filesystem of the store, and whether its writes fail (version 5).
    pub disk: DiskStatus,
}

/// The store's filesystem, for [`NodeStatus`] (specs/local-api.md §3, specs/store.md
/// §7.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// The store's directory.
    pub path: String,
    /// Bytes free for the daemon on its filesystem (0 when unknown).
    pub free_bytes: u64,
    /// Size of that filesystem (0 when unknown).
    pub total_bytes: u64,
    /// The last write of the store that failed for a reason of the filesystem, while
    /// none has succeeded since; `None` when writes succeed.
    pub failure: Option<WriteFailureStatus>,
}

/// A write of the store that failed for a reason of its filesystem, for
/// [`DiskStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFailureStatus {
    /// The error's `errno` name: `ENOSPC` (disk full), `EDQUOT`, `EROFS`, `EIO`…
    pub error: String,
    /// The whole error message.
    pub message: String,
    /// The directory written to.
    pub path: String,
    /// Writes that failed since one last succeeded.
    pub failures: u64,
    /// Milliseconds since the first of them failed.
    pub since_ms: u64,
    /// Milliseconds since the last one failed.
    pub last_ms: u64,
}

/// Build plans a status lists at most.
pub const MAX_PREFETCHES_SHOWN: usize = 16;

/// A build plan's prefetch, for [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchStatus {
    /// The plan's build key.
    pub plan: BuildKey,
    /// Where it stands.
    pub state: PrefetchState,
}

/// Where a prefetch stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrefetchState {
    /// Its units are being resolved.
    Running,
    /// Every key of the plan was resolved (hit or miss).
    Done {
        /// Keys in the plan.
        keys: u32,
        /// Artifacts fetched for them (the others were held, or missed).
        fetched: u32,
        /// Bytes fetched.
        bytes: u64,
        /// How long it took.
        ms: u64,
    },
    /// The plan itself could not be had or read.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A peer remembered as unreachable, for [`NodeStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableStatus {
    /// libp2p peer id.
    pub peer_id: String,
    /// Failures in a row.
    pub failures: u32,
    /// Milliseconds since its first failure in a row.
    pub unreachable_ms: u64,
    /// Milliseconds until it may be dialled again (0: the next need tries it).
    pub retry_in_ms: u64,
    /// Dropped from the local view (unreachable for longer than the threshold).
    pub forgotten: bool,
    /// Outbound dials to it since the daemon started.
    pub dials: u64,
    /// Dials and requests skipped because of its back-off.
    pub skipped: u64,
}

/// One swarm's counters, for [`NodeStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmStatus {
    /// The swarm's name (`private`, `public`).
    pub name: String,
    /// Connected peers.
    pub peers: u32,
    /// Provider lookups this node started in it (for records and for artifacts).
    pub lookups: u64,
    /// Whether peers outside this node's network can dial it: `public` (an address is
    /// confirmed), `private` (tested, none reachable: behind NAT) or `unknown`.
    pub reachability: String,
    /// Whether its Kademlia runs in server mode (only with a confirmed, non-relayed
    /// address, or on an anchor).
    pub kad_server: bool,
    /// The addresses confirmed reachable (AutoNAT v2, UPnP, configured, loopback).
    pub confirmed: Vec<String>,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// The swarm it is connected in.
    pub swarm: String,
    /// Its address on the connection (one entry per connection).
    pub addr: String,
    /// Whether the connection runs through a relay (`/p2p-circuit`) rather than
    /// directly.
    pub relayed: bool,
}

/// A file written by an export, as the verified manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedFile {
    /// Relative path inside the destination.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Root of the file's DAG (its content hash).
    pub root: BlockId,
    /// Written with the executable bit.
    pub executable: bool,
}

/// A blocklisted builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedBuilder {
    /// The builder.
    pub builder: BuilderKey,
    /// Why it was blocklisted.
    pub reason: String,
}

/// A record with the trust policy's decision on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    /// The encoded, signature-verified record (`rdht_core::BuildRecord::decode`).
    pub record: Vec<u8>,
    /// Whether the policy accepts it.
    pub trusted: bool,
    /// Why (or why not).
    pub reason: String,
}

/// The outcome of a resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// A trusted artifact is now in the local store.
    Hit {
        /// Its root.
        root: BlockId,
        /// The records that made it trusted.
        records: Vec<Vec<u8>>,
        /// `local` or the name of the swarm it came from.
        source: String,
        /// Bytes fetched from peers to resolve it (0 when it was already local).
        bytes_fetched: u64,
        /// Chosen by sampling (`verify_sample_rate`): rebuild locally and compare.
        verify: bool,
    },
    /// No trusted artifact was found.
    Miss {
        /// Why, for the shim's one-line warning.
        reason: String,
        /// The kind of reason, for counting.
        cause: MissCause,
        /// Providers of the key (peer ids) that could not be reached: in back-off, or
        /// silent past the bound. Lets a build's summary count distinct ones.
        unreachable: Vec<String>,
    },
}

/// Why a resolve missed, for counting (the summary's miss reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissCause {
    /// Nobody has a record for the key.
    NoRecord,
    /// Records exist, but not from (enough) builders this node trusts.
    Untrusted,
    /// Providers were found but did not answer in time, or the lookup failed.
    LookupFailed,
    /// A trusted artifact was found but could not be fetched.
    FetchFailed,
    /// Providers were found, but every one is unreachable (in back-off, or silent past
    /// the bound).
    Unreachable,
    /// Every trusted artifact needs more of the C runtime than this machine has
    /// (specs/records.md §2.1); the reason names what.
    DoesNotFit,
}

impl MissCause {
    /// A short stable label (`no record`, `untrusted`, `lookup failed`, `fetch failed`,
    /// `unreachable`).
    pub fn label(self) -> &'static str {
        match self {
            MissCause::NoRecord => "no record",
            MissCause::Untrusted => "untrusted",
            MissCause::LookupFailed => "lookup failed",
            MissCause::FetchFailed => "fetch failed",
            MissCause::Unreachable => "unreachable",
            MissCause::DoesNotFit => "does not fit",
        }
    }
}

/// A successful answer; the variant matches the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Id`].
    Id {
        /// libp2p peer id.
        peer_id: String,
        /// The node's builder key (signs its records).
        builder: BuilderKey,
        /// Listen addresses, each with `/p2p/<peer id>`.
        listen_addrs: Vec<String>,
    },
    /// To [`Request::Status`]. Boxed: it is by far the largest answer (the encoding is
    /// the same as unboxed).
    Status(Box<NodeStatus>),
    /// To [`Request::Peers`].
    Peers(Vec<PeerInfo>),
    /// To [`Request::Put`].
    Put {
        /// The artifact root.
        root: BlockId,
        /// Files ingested.
        files: u32,
        /// Their total size.
        bytes: u64,
    },
    /// To [`Request::Export`].
    Exported {
        /// Files written.
        files: u32,
        /// Their total size.
        bytes: u64,
        /// Each file written, from the verified manifest.
        entries: Vec<ExportedFile>,
    },
    /// To [`Request::Resolve`].
    Resolved(Resolution),
    /// To [`Request::Publish`]: the encoded signed record.
    Published {
        /// The record.
        record: Vec<u8>,
    },
    /// To [`Request::Records`].
    Records(Vec<RecordView>),
    /// To [`Request::Gc`].
    Gc {
        /// Artifacts evicted.
        evicted_artifacts: u64,
        /// Bytes freed.
        freed_bytes: u64,
    },
    /// To the trust requests: the trusted builders after the change.
    Trust(Vec<BuilderKey>),
    /// To the blocklist requests: the blocklisted builders after the change.
    Blocked(Vec<BlockedBuilder>),
    /// To [`Request::Shutdown`].
    ShuttingDown,
    /// To [`Request::Submit`]: the job is queued.
    Submitted {
        /// Jobs queued or running, this one included.
        pending: u32,
    },
    /// To [`Request::Prefetch`]: the background work started (or was already running).
    Prefetching,
    /// To [`Request::Drain`]: the jobs waited for, all finished (for `None`: every job
    /// since the daemon started, less sessions already drained).
    Drained(DrainReport),
    /// To [`Request::Jobs`].
    Jobs(JobsStatus),
    /// To [`Request::ResolveExport`]: the resolution and, for a hit, the files written
    /// (empty for a miss).
    ResolvedExported {
        /// As [`Response::Resolved`].
        resolution: Resolution,
        /// As [`Response::Exported`]'s entries.
        entries: Vec<ExportedFile>,
    },
}

/// Progress of a long request, sent before its final answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    /// Bytes moved so far.
    Bytes {
        /// Done so far.
        done: u64,
        /// Total, when known.
        total: Option<u64>,
    },
    /// A human-readable step.
    Step(String),
}

/// What kind of failure an [`ApiError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The frame could not be decoded.
    BadFrame,
    /// The frame was over the size limit; the server closes the connection.
    TooLarge,
    /// The client speaks another API version.
    UnsupportedVersion,
    /// The request is well-formed but its arguments are not valid.
    BadRequest,
    /// The artifact, record or path does not exist.
    NotFound,
    /// The daemon is shutting down or a needed part is unavailable.
    Unavailable,
    /// The daemon failed; see the message.
    Internal,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The kind.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

/// A frame from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// [`API_VERSION`].
    pub version: u16,
    /// Chosen by the client, echoed in every answer.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// The body of a server frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Progress; more frames follow.
    Progress(Progress),
    /// The answer; the request is over.
    Done(Response),
    /// The failure; the request is over.
    Failed(ApiError),
}

/// A frame from server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// [`API_VERSION`].
    pub version: u16,
    /// The request's id (0 when the request could not be decoded).
    pub id: u64,
    /// The body.
    pub reply: Reply,
}

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Invariant: these plain enums and structs always serialize into a Vec.
    postcard::to_stdvec(msg).expect("postcard serializes API messages into a Vec")
}

/// The leading version of a frame, if it has one.
pub fn peek_version(payload: &[u8]) -> Option<u16> {
    postcard::take_from_bytes::<u16>(payload)
        .ok()
        .map(|(v, _)| v)
}

/// Decodes a whole frame payload, rejecting trailing bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}
