//! `ExportLinked` and `ResolveExport` against a real daemon (issue 17): a hit's outputs
//! are hard links to (or reflinks of) the store's kept files, dep-info always gets its
//! own inode, one round trip answers a resolve and its export, and a kept file that
//! was rewritten in place through a link is never exported.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rdht_api::proto::{PutFile, Resolution, Scope};
use rdht_api::{Client, Request, Response};
use rdht_core::{BuildKey, Labels, Needs};
use rdht_testnet::{Node, content};

async fn call(sock: &Path, request: Request) -> Result<Response, String> {
    let mut c = Client::connect(sock).await.unwrap();
    c.call(request).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_hit_is_linked_from_the_store_in_one_round_trip_and_a_rewritten_copy_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("n"), &[]);
    let sock = node.dir.join("api.sock");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let rlib = content("rlib", 300_000);
    std::fs::write(src.join("libx.rlib"), &rlib).unwrap();
    std::fs::write(src.join("x.d"), b"x.d: src/lib.rs\n").unwrap();
    let files = ["libx.rlib", "x.d"]
        .map(|n| PutFile {
            source: src.join(n).to_str().unwrap().to_string(),
            path: format!("out/{n}"),
        })
        .to_vec();
    let labels = Labels::default();
    let root = match call(
        &sock,
        Request::Put {
            files,
            labels: labels.clone(),
            pin: true,
        },
    )
    .await
    .unwrap()
    {
        Response::Put { root, .. } => root,
        other => panic!("{other:?}"),
    };
    let key = BuildKey::from_bytes([7; 32]);
    let published = call(
        &sock,
        Request::Publish {
            key,
            root,
            labels,
            scope: Scope::Private,
            build_ms: 1,
            needs: Needs::default(),
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(published, Response::Published { .. }),
        "{published:?}"
    );

    // One round trip: the resolution and the files written.
    let dest = tmp.path().join("target/out-scratch");
    let request = |key| Request::ResolveExport {
        key,
        scope: Scope::Private,
        dest: dest.to_str().unwrap().to_string(),
    };
    let (resolution, entries) = match call(&sock, request(key)).await.unwrap() {
        Response::ResolvedExported {
            resolution,
            entries,
        } => (resolution, entries),
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(resolution, Resolution::Hit { root: r, .. } if r == root),
        "{resolution:?}"
    );
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["out/libx.rlib", "out/x.d"]);
    let placed = dest.join("out/libx.rlib");
    assert_eq!(std::fs::read(&placed).unwrap(), rlib);
    assert_eq!(
        std::fs::read(dest.join("out/x.d")).unwrap(),
        b"x.d: src/lib.rs\n"
    );
    // The rlib shares the store's inode (same filesystem, no reflinks here) or its
    // extents (a reflink); dep-info never shares an inode.
    let kept = std::fs::read_dir(node.dir.join("store/files"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == rlib)
        .expect("the store keeps the rlib whole");
    let store_ino = std::fs::metadata(&kept).unwrap().ino();
    let placed_meta = std::fs::metadata(&placed).unwrap();
    if placed_meta.ino() == store_ino {
        assert!(placed_meta.nlink() >= 2);
    }
    assert_eq!(std::fs::metadata(dest.join("out/x.d")).unwrap().nlink(), 1);

    // A miss: the resolution, no files.
    match call(&sock, request(BuildKey::from_bytes([8; 32])))
        .await
        .unwrap()
    {
        Response::ResolvedExported {
            resolution: Resolution::Miss { .. },
            entries,
        } => assert!(entries.is_empty()),
        other => panic!("{other:?}"),
    }

    // Rewriting a linked output in place changes the store's copy when they share an
    // inode: the next export detects it and fails (no swarm to fetch it from), and
    // writes nothing under the final name.
    let mut changed = std::fs::read(&kept).unwrap();
    changed[200_000] ^= 1;
    std::fs::write(&kept, &changed).unwrap();
    let again = tmp.path().join("again");
    let err = call(
        &sock,
        Request::ExportLinked {
            root,
            dest: again.to_str().unwrap().to_string(),
        },
    )
    .await
    .unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    assert!(!again.join("out/libx.rlib").exists());
    assert!(!kept.exists(), "the modified kept file is dropped");
    drop(node);
}
