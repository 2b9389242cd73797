//! How the CLI shows daemon answers: aligned text for people, JSON (`--json`) for scripts.
//!
//! Owns: both renderings of every response the CLI prints. Does not own: fetching them.
//! Invariant: JSON field names are stable; ids and keys are lowercase hex strings.

use indicatif::HumanBytes;
use std::collections::BTreeMap;

use rdht_api::proto::{
    DiskStatus, DrainReport, JobsStatus, NodeStatus, PeerInfo, PrefetchState, PrefetchStatus,
    RecordView,
};
use rdht_core::{BuildRecord, BuilderKey};
use serde_json::{Value, json};

/// `rdht id`.
pub fn id(peer_id: &str, builder: &BuilderKey, listen: &[String]) -> (String, Value) {
    let mut text = format!("peer id:     {peer_id}\nbuilder key: {builder}\n");
    if listen.is_empty() {
        text.push_str("listening:   (nothing: no swarm is configured)\n");
    }
    for (i, a) in listen.iter().enumerate() {
        let label = if i == 0 {
            "listening:  "
        } else {
            "            "
        };
        text.push_str(&format!("{label} {a}\n"));
    }
    let v =
        json!({ "peer_id": peer_id, "builder_key": builder.to_string(), "listen_addrs": listen });
    (text, v)
}

/// `rdht status`: the node's counters and its sharing backlog.
pub fn status(s: &NodeStatus, jobs: &JobsStatus) -> (String, Value) {
    let st = &s.store;
    let cap = if st.max_bytes == 0 {
        "no cap".to_string()
    } else {
        format!("cap {}", HumanBytes(st.max_bytes))
    };
    let text = format!(
        "peer id:   {}\npeers:     {}\nstore:     {} blocks, {} ({} on disk), {} pinned, {cap}\n\
         reads:     {} hits, {} misses, {} evictions\nresolves:  {} hits, {} misses\n\
         transfer:  {} in, {} out\n\
         policy:    {} trusted builder(s), {} required per artifact, {} of other builders' hits rebuilt and compared\n\
         trust:     {} conflicts seen, {} builders blocklisted\n\
         sharing:   {} jobs queued or running; since start {} published, {} failed\n",
        s.peer_id,
        s.peers,
        st.blocks,
        HumanBytes(st.logical_bytes),
        HumanBytes(st.disk_bytes),
        HumanBytes(st.pinned_bytes),
        st.hits,
        st.misses,
        st.evictions,
        s.resolve_hits,
        s.resolve_misses,
        HumanBytes(s.bytes_in),
        HumanBytes(s.bytes_out),
        s.trusted_builders,
        s.required_signatures,
        percent(s.verify_sample_ppm),
        s.conflicts,
        s.blocklisted,
        jobs.pending,
        jobs.published,
        jobs.failed,
    );
    let mut text = text;
    text.push_str(&disk_text(&s.disk));
    for sw in &s.swarms {
        text.push_str(&format!(
            "swarm:     {}: {} peers, {} lookups; reachability {}, DHT {}{}\n",
            sw.name,
            sw.peers,
            sw.lookups,
            sw.reachability,
            if sw.kad_server { "server" } else { "client" },
            if sw.confirmed.is_empty() {
                String::new()
            } else {
                format!(" at {}", sw.confirmed.join(" "))
            }
        ));
    }
    text.push_str(&format!(
        "reach:     {} dials, {} skipped for back-off, {} failures, {} resolves waited the bound; {} peer(s) unreachable\n",
        s.dials,
        s.dials_skipped,
        s.reach_failures,
        s.bound_waits,
        s.unreachable.len()
    ));
    for u in &s.unreachable {
        text.push_str(&format!(
            "           {}: {} failure(s), unreachable {:.1} s, retry in {:.1} s{}\n",
            u.peer_id,
            u.failures,
            u.unreachable_ms as f64 / 1000.0,
            u.retry_in_ms as f64 / 1000.0,
            if u.forgotten { ", forgotten" } else { "" }
        ));
    }
    for p in &s.prefetches {
        text.push_str(&format!(
            "prefetch:  plan {}: {}\n",
            p.plan,
            prefetch_text(&p.state)
        ));
    }
    let prefetches: Vec<Value> = s.prefetches.iter().map(prefetch_json).collect();
    let swarms: Vec<Value> = s
        .swarms
        .iter()
        .map(|sw| {
            json!({
                "name": sw.name,
                "peers": sw.peers,
                "lookups": sw.lookups,
                "reachability": sw.reachability,
                "kad_server": sw.kad_server,
                "confirmed": sw.confirmed,
            })
        })
        .collect();
    let unreachable: Vec<Value> = s
        .unreachable
        .iter()
        .map(|u| {
            json!({
                "peer_id": u.peer_id,
                "failures": u.failures,
                "unreachable_ms": u.unreachable_ms,
                "retry_in_ms": u.retry_in_ms,
                "forgotten": u.forgotten,
                "dials": u.dials,
                "skipped": u.skipped,
            })
        })
        .collect();
    let v = json!({
        "peer_id": s.peer_id,
        "listen_addrs": s.listen_addrs,
        "peers": s.peers,
        "swarms": swarms,
        "policy": {
            "trusted_builders": s.trusted_builders,
            "required_signatures": s.required_signatures,
            "verify_sample_rate": f64::from(s.verify_sample_ppm) / 1e6,
        },
        "store": {
            "blocks": st.blocks,
            "logical_bytes": st.logical_bytes,
            "disk_bytes": st.disk_bytes,
            "pinned_bytes": st.pinned_bytes,
            "max_bytes": st.max_bytes,
            "reads": st.reads,
            "hits": st.hits,
            "misses": st.misses,
            "evictions": st.evictions,
        },
        "resolve_hits": s.resolve_hits,
        "resolve_misses": s.resolve_misses,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "conflicts": s.conflicts,
        "blocklisted": s.blocklisted,
        "reach": {
            "dials": s.dials,
            "dials_skipped": s.dials_skipped,
            "failures": s.reach_failures,
            "bound_waits": s.bound_waits,
            "unreachable": unreachable,
        },
        "jobs": {
            "pending": jobs.pending,
            "published": jobs.published,
            "failed": jobs.failed,
        },
        "prefetches": prefetches,
        "disk": disk_json(&s.disk),
    });
    (text, v)
}

/// The `disk:` line of `rdht status`, and a second one while store writes fail.
fn disk_text(d: &DiskStatus) -> String {
    let mut t = if d.total_bytes > 0 {
        format!(
            "disk:      {} free of {} at {}\n",
            HumanBytes(d.free_bytes),
            HumanBytes(d.total_bytes),
            d.path
        )
    } else if d.path.is_empty() {
        "disk:      unknown\n".to_string()
    } else {
        format!("disk:      {} (space unknown)\n", d.path)
    };
    if let Some(f) = &d.failure {
        t.push_str(&format!(
            "           store writes failing: {} at {} ({} failure(s) since {:.1} s ago, last {:.1} s ago): {}; builds go on, nothing new is stored or shared until writes succeed\n",
            f.error,
            f.path,
            f.failures,
            f.since_ms as f64 / 1000.0,
            f.last_ms as f64 / 1000.0,
            f.message
        ));
    }
    t
}

fn disk_json(d: &DiskStatus) -> Value {
    json!({
        "path": d.path,
        "free_bytes": d.free_bytes,
        "total_bytes": d.total_bytes,
        "write_failure": d.failure.as_ref().map(|f| json!({
            "error": f.error,
            "message": f.message,
            "path": f.path,
            "failures": f.failures,
            "since_ms": f.since_ms,
            "last_ms": f.last_ms,
        })),
    })
}

fn prefetch_text(state: &PrefetchState) -> String {
    match state {
        PrefetchState::Running => "running".into(),
        PrefetchState::Done {
            keys,
            fetched,
            bytes,
            ms,
        } => format!("{keys} keys, {fetched} fetched ({bytes} bytes) in {ms} ms"),
        PrefetchState::Failed { reason } => format!("failed: {reason}"),
    }
}

fn prefetch_json(p: &PrefetchStatus) -> Value {
    let mut v = match &p.state {
        PrefetchState::Running => json!({ "state": "running" }),
        PrefetchState::Done {
            keys,
            fetched,
            bytes,
            ms,
        } => json!({ "state": "done", "keys": keys, "fetched": fetched, "bytes": bytes, "ms": ms }),
        PrefetchState::Failed { reason } => json!({ "state": "failed", "reason": reason }),
    };
    v["plan"] = json!(p.plan.to_string());
    v
}

/// Parts per million as a percentage, without trailing zeros (`2%`, `0.5%`).
fn percent(ppm: u32) -> String {
    let text = format!("{:.4}", f64::from(ppm) / 1e4);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Counts by reason, largest first (then by name): `2 changed after the compile, 1 store
/// error`.
pub fn counted(by_reason: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = by_reason.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rdht sync`: the summary line (stdout) and one line per listed failure (stderr).
pub fn sync(r: &DrainReport) -> (String, Vec<String>, Value) {
    let failed = r.failed_count();
    let mut text = format!("{} published, {failed} failed", r.published);
    if failed > 0 {
        text.push_str(&format!(" ({})", counted(&r.failed_by_reason)));
    }
    text.push('\n');
    let lines = r
        .failed
        .iter()
        .map(|f| format!("not shared: {}: {}", f.crate_name, f.detail))
        .collect();
    let v = json!({
        "published": r.published,
        "failed": failed,
        "failed_by_reason": r.failed_by_reason,
        "failures": r.failed.iter().map(|f| json!({
            "crate": f.crate_name,
            "reason": f.reason,
            "detail": f.detail,
        })).collect::<Vec<_>>(),
    });
    (text, lines, v)
}

/// `rdht peers`.
pub fn peers(peers: &[PeerInfo]) -> (String, Value) {
    let text: String = peers
        .iter()
        .map(|p| {
            let how = if p.relayed { "relayed" } else { "direct" };
            format!("{}  {}  {how}  {}\n", p.peer_id, p.swarm, p.addr)
        })
        .collect();
    let v = peers
        .iter()
        .map(|p| {
            json!({
                "peer_id": p.peer_id,
                "swarm": p.swarm,
                "addr": p.addr,
                "connection": if p.relayed { "relayed" } else { "direct" },
            })
        })
        .collect();
    (text, Value::Array(v))
}

/// `rdht records KEY`. Records that fail to decode are shown as such, not hidden.
pub fn records(views: &[RecordView]) -> (String, Value) {
    let mut text = String::new();
    let mut out = Vec::new();
    for view in views {
        let decision = if view.trusted {
            "trusted"
        } else {
            "not trusted"
        };
        match BuildRecord::decode(&view.record) {
            Ok(r) => {
                let b = r.body();
                text.push_str(&format!(
                    "builder {}\n  root    {}\n  size    {}\n  built   {} (unix)\n  unit    {} {} {} [{}]\n  {decision}: {}\n",
                    b.builder,
                    b.root,
                    b.size,
                    b.time,
                    b.labels.crate_name,
                    b.labels.crate_version,
                    b.labels.target,
                    b.labels.crate_types.join(","),
                    view.reason
                ));
                out.push(json!({
                    "builder": b.builder.to_string(),
                    "key": b.key.to_string(),
                    "root": b.root.to_string(),
                    "size": b.size,
                    "time": b.time,
                    "crate_name": b.labels.crate_name,
                    "crate_version": b.labels.crate_version,
                    "target": b.labels.target,
                    "rustc": b.labels.rustc,
                    "crate_types": b.labels.crate_types,
                    "trusted": view.trusted,
                    "reason": view.reason,
                }));
            }
            Err(e) => {
                text.push_str(&format!("invalid record: {e}\n"));
                out.push(json!({ "error": e.to_string(), "trusted": false }));
            }
        }
    }
    (text, Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdht_api::proto::StoreStatus;

    #[test]
    fn id_and_status_text() {
        let b = BuilderKey::from_bytes([0xab; 32]);
        let (text, v) = id(
            "12D3KooWx",
            &b,
            &["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWx".into()],
        );
        assert_eq!(
            text,
            format!(
                "peer id:     12D3KooWx\nbuilder key: {}\nlistening:   /ip4/127.0.0.1/tcp/1/p2p/12D3KooWx\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(v["builder_key"], "ab".repeat(32));
        let s = NodeStatus {
            peer_id: "p".into(),
            peers: 2,
            trusted_builders: 3,
            required_signatures: 2,
            verify_sample_ppm: 20_000,
            swarms: vec![rdht_api::proto::SwarmStatus {
                name: "private".into(),
                peers: 2,
                lookups: 7,
                reachability: "private".into(),
                kad_server: false,
                confirmed: Vec::new(),
            }],
            store: StoreStatus {
                blocks: 3,
                logical_bytes: 2048,
                max_bytes: 0,
                ..Default::default()
            },
            disk: rdht_api::proto::DiskStatus {
                path: "/d/store".into(),
                free_bytes: 0,
                total_bytes: 16 << 20,
                failure: Some(rdht_api::proto::WriteFailureStatus {
                    error: "ENOSPC".into(),
                    message: "store write failed at /d/store/packs: No space left on device (os error 28)".into(),
                    path: "/d/store/packs".into(),
                    failures: 3,
                    since_ms: 12_500,
                    last_ms: 400,
                }),
            },
            ..Default::default()
        };
        let jobs = JobsStatus {
            pending: 2,
            published: 5,
            failed: 1,
        };
        let (text, v) = status(&s, &jobs);
        assert!(
            text.contains(
                "disk:      0 B free of 16.00 MiB at /d/store\n           store writes failing: ENOSPC at /d/store/packs (3 failure(s) since 12.5 s ago, last 0.4 s ago): store write failed at /d/store/packs: No space left on device (os error 28); builds go on, nothing new is stored or shared until writes succeed\n"
            ),
            "{text}"
        );
        assert_eq!(v["disk"]["write_failure"]["error"], "ENOSPC");
        assert_eq!(v["disk"]["write_failure"]["path"], "/d/store/packs");
        assert_eq!(v["disk"]["free_bytes"], 0);
        assert!(
            text.contains("store:     3 blocks, 2.00 KiB (0 B on disk), 0 B pinned, no cap\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "policy:    3 trusted builder(s), 2 required per artifact, 2% of other builders' hits rebuilt and compared\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "sharing:   2 jobs queued or running; since start 5 published, 1 failed\n\
                 disk:      0 B free of 16.00 MiB at /d/store\n\
                 \x20          store writes failing: ENOSPC at /d/store/packs (3 failure(s) since 12.5 s ago, last 0.4 s ago): store write failed at /d/store/packs: No space left on device (os error 28); builds go on, nothing new is stored or shared until writes succeed\n\
                 swarm:     private: 2 peers, 7 lookups; reachability private, DHT client\n\
                 reach:     0 dials, 0 skipped for back-off, 0 failures, 0 resolves waited the bound; 0 peer(s) unreachable\n"
            ),
            "{text}"
        );
        assert_eq!(
            v["policy"],
            json!({"trusted_builders": 3, "required_signatures": 2, "verify_sample_rate": 0.02})
        );
        assert_eq!(v["swarms"][0]["lookups"], 7);
        assert_eq!(v["swarms"][0]["reachability"], "private");
        assert_eq!(v["swarms"][0]["kad_server"], false);
        let (peers_text, pv) = peers(&[
            PeerInfo {
                peer_id: "a".into(),
                swarm: "private".into(),
                addr: "/ip4/10.0.0.1/tcp/1".into(),
                relayed: false,
            },
            PeerInfo {
                peer_id: "b".into(),
                swarm: "public".into(),
                addr: "/ip4/10.0.0.2/tcp/1/p2p/r/p2p-circuit".into(),
                relayed: true,
            },
        ]);
        assert_eq!(
            peers_text,
            "a  private  direct  /ip4/10.0.0.1/tcp/1\nb  public  relayed  /ip4/10.0.0.2/tcp/1/p2p/r/p2p-circuit\n"
        );
        assert_eq!(pv[1]["connection"], "relayed");
        assert_eq!(pv[0]["addr"], "/ip4/10.0.0.1/tcp/1");
        assert_eq!(
            (percent(5_000), percent(1_000_000), percent(0)),
            ("0.5%".into(), "100%".into(), "0%".into())
        );
        assert_eq!(v["store"]["logical_bytes"], 2048);
        assert_eq!(v["peers"], 2);
        assert_eq!(
            v["jobs"],
            json!({"pending": 2, "published": 5, "failed": 1})
        );
    }
}
