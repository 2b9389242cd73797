//! End-to-end tests with real processes: `rdht-node` daemons on loopback in temp dirs,
//! driven by the `rdht` CLI, through the `rdht-testnet` harness.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use rdht_testnet::{Node, Swarm, bin, content, snapshot};

/// A 100 MiB tree: two large files, many small ones, two executables.
fn make_tree(root: &Path) -> u64 {
    let mut total = 0;
    let mut write = |rel: &str, len: usize, exec: bool| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content(rel, len)).unwrap();
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        total += len as u64;
    };
    write("lib/libbig-0123456789abcdef.rlib", 60 << 20, false);
    write("lib/libmid-0123456789abcdef.rmeta", 25 << 20, false);
    for i in 0..150 {
        write(&format!("deps/small{i:03}.o"), 100 << 10, false);
    }
    write("bin/tool", (300 << 10) + 7, true);
    write("build/build-script-build", 1 << 20, true);
    write("empty", 0, false);
    total
}

#[test]
fn put_on_one_get_on_another_then_restart_and_fetch_again() {
    let swarm = Swarm::new();
    let tree = swarm.tmp.path().join("tree");
    let total = make_tree(&tree);
    assert_eq!(
        total,
        (60 << 20) + (25 << 20) + 150 * (100 << 10) + (300 << 10) + 7 + (1 << 20)
    );
    let mut n1 = swarm.node("n1");
    let _n2 = swarm.node("n2");
    let mut n3 = swarm.node("n3");

    let root = n1
        .stdout(&["put", tree.to_str().unwrap()])
        .trim()
        .to_string();
    assert_eq!(root.len(), 64, "{root}");
    let out3 = swarm.tmp.path().join("out3");
    let got: serde_json::Value =
        serde_json::from_str(&n3.stdout(&["--json", "get", &root, out3.to_str().unwrap()]))
            .unwrap();
    assert_eq!(got["files"], 155);
    assert_eq!(got["bytes"], total);
    let want = snapshot(&tree);
    assert_eq!(want.len(), 155);
    assert_eq!(snapshot(&out3), want, "byte-identical with executable bits");
    let st: serde_json::Value = serde_json::from_str(&n3.stdout(&["--json", "status"])).unwrap();
    assert_eq!(st["peers"], 2);
    assert!(st["bytes_in"].as_u64().unwrap() > total, "{st}");
    // n1 was the only holder: it sent every block (tags included, so more than the files).
    let st1: serde_json::Value = serde_json::from_str(&n1.stdout(&["--json", "status"])).unwrap();
    assert!(st1["bytes_out"].as_u64().unwrap() > total, "{st1}");
    assert_eq!(st1["bytes_in"], 0, "{st1}");

    // Restart n1: clean stop, same store; n3 forgets everything and fetches again, and
    // n1 is the only holder (n2 never fetched it).
    assert!(n1.stop().success(), "SIGTERM gives exit 0");
    n1.spawn();
    assert!(n3.stop().success());
    std::fs::remove_dir_all(&n3.dir).unwrap();
    n3.spawn();
    let out3b = swarm.tmp.path().join("out3b");
    n3.rdht(&["get", &root, out3b.to_str().unwrap()]);
    assert_eq!(snapshot(&out3b), want);
    let st: serde_json::Value = serde_json::from_str(&n1.stdout(&["--json", "status"])).unwrap();
    assert!(
        st["store"]["pinned_bytes"].as_u64().unwrap() >= total,
        "{st}"
    );
}

#[test]
fn garbage_and_oversized_frames_do_not_stop_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("n"), &[]);
    let socket = node.dir.join("api.sock");
    // Garbage inside a valid length prefix: an error frame comes back.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(&[0, 0, 0, 6, 0xde, 0xad, 0xbe, 0xef, 0xff, 0x00])
        .unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let frame: rdht_api::proto::ServerFrame = rdht_api::proto::decode(&body).unwrap();
    assert!(
        matches!(frame.reply, rdht_api::proto::Reply::Failed(ref e) if e.kind == rdht_api::ErrorKind::UnsupportedVersion || e.kind == rdht_api::ErrorKind::BadFrame),
        "{frame:?}"
    );
    // A 4 GiB length prefix: answered, then that connection is closed.
    let mut big = UnixStream::connect(&socket).unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).unwrap();
    big.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    big.read_exact(&mut body).unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        big.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the error"
    );
    // Half a frame, then hang up.
    let mut half = UnixStream::connect(&socket).unwrap();
    half.write_all(&[0, 0, 1, 0, 1, 2]).unwrap();
    drop(half);
    // A normal request is answered.
    let id = node.stdout(&["--json", "id"]);
    let v: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert!(
        v["peer_id"].as_str().unwrap().starts_with("12D3KooW"),
        "{v}"
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let _first = Node::start(&dir, &[]);
    let out = Command::new(bin("rdht-node"))
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "rdht-node: another rdht-node is already running with data directory {} (it holds {})",
            dir.display(),
            dir.join("lock").display()
        )),
        "{err}"
    );
    // The API socket and key are owner-only.
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.join("api.sock")), 0o600);
    assert_eq!(mode(dir.join("identity.key")), 0o600);
    assert_eq!(mode(dir.clone()), 0o700);
}

#[test]
fn submitted_outputs_are_stored_and_published_in_the_background_unless_they_really_changed() {
    use rdht_api::proto::{FileSource, Scope, Submission, SubmitFile};
    use rdht_api::{Client, Request, Response};
    use rdht_core::{BuildKey, Labels};

    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("n"), &[]);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let rlib = out.join("libdemo.rlib");
    std::fs::write(&rlib, content("rlib", 300_000)).unwrap();
    let good_key = BuildKey::from_bytes([1; 32]);
    let stale_key = BuildKey::from_bytes([2; 32]);
    let labels = Labels {
        crate_name: "demo".into(),
        ..Labels::default()
    };
    let submit = |key: BuildKey, name: &str, source: FileSource| {
        Request::Submit(Submission {
            key,
            files: vec![
                SubmitFile {
                    path: format!("out/{name}"),
                    source,
                },
                SubmitFile {
                    path: "rdht/stderr".into(),
                    source: FileSource::Inline(b"warning: unused\n".to_vec()),
                },
            ],
            labels: labels.clone(),
            scope: Scope::Private,
            build_ms: 1234,
            needs: Default::default(),
            session: "s1".into(),
        })
    };
    let fresh = FileSource::from_disk(&rlib).unwrap();
    // An output described once its compile finished, then really rewritten before the
    // job runs, as a later compile of the unit does: same size, new contents renamed
    // into place.
    let rmeta = out.join("libstale.rmeta");
    std::fs::write(&rmeta, content("first", 1000)).unwrap();
    let described = FileSource::from_disk(&rmeta).unwrap();
    let next = out.join("rmeta-next.tmp");
    std::fs::write(&next, content("second", 1000)).unwrap();
    std::fs::rename(&next, &rmeta).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(&node.dir))
            .await
            .unwrap();
        for (key, name, source) in [
            (good_key, "libdemo.rlib", fresh),
            (stale_key, "libstale.rmeta", described),
        ] {
            let r = c.call(submit(key, name, source)).await.unwrap();
            assert!(matches!(r, Response::Submitted { .. }), "{r:?}");
        }
    });
    // `rdht sync` waits for both jobs, counts the refusal by its reason, names the file,
    // and fails.
    let sync = Command::new(bin("rdht"))
        .arg("--data-dir")
        .arg(&node.dir)
        .arg("sync")
        .output()
        .unwrap();
    assert_eq!(sync.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&sync.stdout),
        "1 published, 1 failed (1 changed after the compile)\n"
    );
    let stderr = String::from_utf8_lossy(&sync.stderr);
    assert!(
        stderr.starts_with(&format!(
            "not shared: demo: {} changed after the compile that produced it (",
            rmeta.display()
        )) && stderr.contains("inode")
            && stderr.ends_with("differs)\nrdht: 1 build output(s) could not be shared\n"),
        "{stderr}"
    );
    let report = rt.block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(&node.dir))
            .await
            .unwrap();
        // The session's own drain reports the same (a sync forgets nothing).
        let report = match c
            .call(Request::Drain {
                session: Some("s1".into()),
            })
            .await
            .unwrap()
        {
            Response::Drained(r) => r,
            r => panic!("{r:?}"),
        };
        // The backlog is empty; the totals outlive the drained session.
        let jobs = c.call(Request::Jobs).await.unwrap();
        assert_eq!(
            jobs,
            Response::Jobs(rdht_api::proto::JobsStatus {
                pending: 0,
                published: 1,
                failed: 1
            })
        );
        report
    });
    assert_eq!(report.published, 1);
    assert_eq!(
        report.failed_by_reason,
        std::collections::BTreeMap::from([("changed after the compile".to_string(), 1)])
    );
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(
        (
            report.failed[0].crate_name.as_str(),
            report.failed[0].reason.as_str()
        ),
        ("demo", "changed after the compile")
    );
    assert!(stderr.contains(&report.failed[0].detail), "{report:?}");
    // The good job's record is there, signed by this node, and its artifact exports
    // the file and the inline messages byte for byte.
    let records = node.json(&["records", &good_key.to_string()]);
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let root = records[0]["root"].as_str().unwrap().to_string();
    let dest = tmp.path().join("export");
    node.stdout(&["get", &root, dest.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(dest.join("out/libdemo.rlib")).unwrap(),
        content("rlib", 300_000)
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("rdht/stderr")).unwrap(),
        "warning: unused\n"
    );
    // The stale job published nothing.
    let stale_records = node.json(&["records", &stale_key.to_string()]);
    assert_eq!(stale_records.as_array().unwrap().len(), 0);
    // Nothing is left in the daemon's scratch space.
    let tmp_dir = node.dir.join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp_dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Puts `data` as the one file `name` of an artifact and publishes `key → it`.
async fn put_and_publish(
    c: &mut rdht_api::Client,
    dir: &Path,
    key: rdht_core::BuildKey,
    name: &str,
    data: &[u8],
    labels: &rdht_core::Labels,
) {
    put_and_publish_needing(c, dir, key, name, data, labels, Default::default()).await;
}

/// [`put_and_publish`] with a record saying the artifact needs `needs` of the C
/// runtime; returns the root.
async fn put_and_publish_needing(
    c: &mut rdht_api::Client,
    dir: &Path,
    key: rdht_core::BuildKey,
    name: &str,
    data: &[u8],
    labels: &rdht_core::Labels,
    needs: rdht_core::Needs,
) -> rdht_core::BlockId {
    use rdht_api::proto::{PutFile, Scope};
    use rdht_api::{Request, Response};
    let file = dir.join(name);
    std::fs::write(&file, data).unwrap();
    let Response::Put { root, .. } = c
        .call(Request::Put {
            files: vec![PutFile {
                source: file.to_str().unwrap().into(),
                path: name.into(),
            }],
            labels: labels.clone(),
            pin: true,
        })
        .await
        .unwrap()
    else {
        panic!("put")
    };
    let r = c
        .call(Request::Publish {
            key,
            root,
            labels: labels.clone(),
            scope: Scope::Private,
            build_ms: 10,
            needs,
        })
        .await
        .unwrap();
    assert!(matches!(r, Response::Published { .. }), "{r:?}");
    root
}

/// Publishes the plan listing `keys` as `plan_key`.
async fn publish_plan(
    c: &mut rdht_api::Client,
    dir: &Path,
    plan_key: rdht_core::BuildKey,
    keys: &[rdht_core::BuildKey],
    labels: &rdht_core::Labels,
) {
    let plan = rdht_core::plan::encode(keys);
    put_and_publish(c, dir, plan_key, "plan", plan.as_bytes(), labels).await;
}

#[test]
fn a_build_plan_is_prefetched_from_a_trusted_builder_and_resolves_locally() {
    use rdht_api::proto::Resolution;
    use rdht_api::{Client, Request, Response};
    use rdht_core::{BuildKey, Labels};

    let swarm = Swarm::new();
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let labels = Labels {
        crate_name: "unit".into(),
        ..Labels::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A publishes three units and the plan naming them.
    let keys: Vec<BuildKey> = (1..=3u8).map(|i| BuildKey::from_bytes([i; 32])).collect();
    let plan_key = BuildKey::from_bytes([9; 32]);
    let mut unit_bytes = 0;
    rt.block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(&a.dir))
            .await
            .unwrap();
        for (i, k) in keys.iter().enumerate() {
            let data = content(&format!("unit{i}"), 200_000 * (i + 1));
            unit_bytes += data.len() as u64;
            put_and_publish(
                &mut c,
                swarm.tmp.path(),
                *k,
                &format!("u{i}"),
                &data,
                &labels,
            )
            .await;
        }
        publish_plan(&mut c, swarm.tmp.path(), plan_key, &keys, &labels).await;
    });
    // B is asked to prefetch the plan: the answer comes at once, the units follow.
    rt.block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(&b.dir))
            .await
            .unwrap();
        let r = c
            .call(Request::Prefetch {
                key: plan_key,
                scope: rdht_api::proto::Scope::Private,
            })
            .await
            .unwrap();
        assert_eq!(r, Response::Prefetching);
    });
    // The daemon's status shows the outcome; poll it rather than wait for time.
    let p = b.wait_for_prefetch();
    assert_eq!(
        (&p["plan"], &p["state"], &p["keys"], &p["fetched"]),
        (
            &serde_json::json!(plan_key.to_string()),
            &serde_json::json!("done"),
            &serde_json::json!(3),
            &serde_json::json!(3)
        ),
        "{p}"
    );
    let st = b.json(&["status"]);
    assert!(st["bytes_in"].as_u64().unwrap() > unit_bytes, "{st}");
    // Every unit now resolves from the local store, fetching nothing more. The first
    // resolve of each reports what the prefetch fetched for it; later ones, nothing.
    rt.block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(&b.dir))
            .await
            .unwrap();
        let mut reported = 0;
        for round in 0..2 {
            for k in &keys {
                let Response::Resolved(Resolution::Hit {
                    source,
                    bytes_fetched,
                    ..
                }) = c
                    .call(Request::Resolve {
                        key: *k,
                        scope: rdht_api::proto::Scope::Private,
                    })
                    .await
                    .unwrap()
                else {
                    panic!("not a hit")
                };
                if round == 0 {
                    assert_eq!(source, "private");
                    reported += bytes_fetched;
                } else {
                    assert_eq!((source.as_str(), bytes_fetched), ("local", 0));
                }
            }
        }
        assert!(reported > unit_bytes, "{reported}");
    });
    assert_eq!(b.json(&["status"])["bytes_in"], st["bytes_in"]);
}

#[test]
fn a_plan_from_an_untrusted_builder_is_not_prefetched() {
    use rdht_api::{Client, Request, Response};
    use rdht_core::{BuildKey, Labels};

    let swarm = Swarm::new();
    let a = swarm.node("a");
    let b = swarm.node("b");
    let unit = BuildKey::from_bytes([1; 32]);
    let plan_key = BuildKey::from_bytes([9; 32]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(&a.dir))
            .await
            .unwrap();
        publish_plan(
            &mut c,
            swarm.tmp.path(),
            plan_key,
            &[unit],
            &Labels::default(),
        )
        .await;
        let mut cb = Client::connect(&rdht_api::socket_path(&b.dir))
            .await
            .unwrap();
        assert_eq!(
            cb.call(Request::Prefetch {
                key: plan_key,
                scope: rdht_api::proto::Scope::Private
            })
            .await
            .unwrap(),
            Response::Prefetching
        );
    });
    // B does not trust A: the plan's record is fetched and refused, nothing is stored.
    let p = b.wait_for_prefetch();
    assert_eq!(p["state"], "failed", "{p}");
    assert_eq!(
        p["reason"], "1 record(s) found, none from a trusted builder",
        "{p}"
    );
    let st = b.json(&["status"]);
    assert_eq!(
        (st["bytes_in"].as_u64(), st["store"]["blocks"].as_u64()),
        (Some(0), Some(0)),
        "{st}"
    );
}

/// Records say what an artifact needs of the C runtime (specs/records.md §2.1): among
/// trusted roots the daemon takes one that can load here, even when more trusted
/// builders claim another; and when none can, it misses with the reason, fetching
/// nothing.
#[test]
fn a_root_that_cannot_load_here_is_skipped_before_fetching() {
    use rdht_api::proto::{MissCause, Resolution, Scope};
    use rdht_api::{Client, Request, Response};
    use rdht_core::{BuildKey, Labels, Needs};

    let swarm = Swarm::new();
    let a = swarm.node("a");
    let c = swarm.node("c");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    b.rdht(&["trust", "add", &c.builder_key()]);
    let labels = Labels {
        crate_name: "pm".into(),
        ..Labels::default()
    };
    let newer: Needs = [("libc.so.6".to_string(), ["GLIBC_9.99".to_string()].into())].into();
    let (key, only_newer) = (BuildKey::from_bytes([5; 32]), BuildKey::from_bytes([6; 32]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = swarm.tmp.path();
    let fits = rt.block_on(async {
        let mut ca = Client::connect(&rdht_api::socket_path(&a.dir))
            .await
            .unwrap();
        let mut cc = Client::connect(&rdht_api::socket_path(&c.dir))
            .await
            .unwrap();
        let new = content("built on a newer machine", 100_000);
        let old = content("built on an older machine", 100_000);
        // Two trusted builders claim the root that needs GLIBC_9.99, one the other.
        for client in [&mut ca, &mut cc] {
            put_and_publish_needing(client, dir, key, "libpm.so", &new, &labels, newer.clone())
                .await;
        }
        put_and_publish_needing(
            &mut ca,
            dir,
            only_newer,
            "libpm.so",
            &new,
            &labels,
            newer.clone(),
        )
        .await;
        put_and_publish_needing(&mut ca, dir, key, "libpm.so", &old, &labels, Needs::new()).await
    });
    rt.block_on(async {
        let mut cb = Client::connect(&rdht_api::socket_path(&b.dir))
            .await
            .unwrap();
        let resolve = |key| Request::Resolve {
            key,
            scope: Scope::Private,
        };
        match cb.call(resolve(key)).await.unwrap() {
            Response::Resolved(Resolution::Hit { root, .. }) => assert_eq!(root, fits),
            other => panic!("{other:?}"),
        }
        let fetched = b.json(&["status"])["bytes_in"].as_u64().unwrap();
        assert!(fetched >= 100_000, "{fetched}");
        match cb.call(resolve(only_newer)).await.unwrap() {
            Response::Resolved(Resolution::Miss { reason, cause, .. }) => {
                assert_eq!(cause, MissCause::DoesNotFit);
                assert!(
                    reason
                        .starts_with("needs GLIBC_9.99 from libc.so.6; this machine has GLIBC_2."),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            b.json(&["status"])["bytes_in"].as_u64().unwrap(),
            fetched,
            "nothing fetched for a root that cannot load here"
        );
    });
}
