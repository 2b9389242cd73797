//! Hard faults at start (issue 19, part 2): a data directory on a read-only file
//! system is refused with one clear error that names the path, whether the directory
//! still has to be made or already exists. Needs root (it mounts a tmpfs), as the other
//! root-only tests, run through `testnet/test.sh`.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

/// A small tmpfs at `at`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(at: &'a Path, options: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount needs root");
        Tmpfs(at)
    }

    fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn start(data: &Path) -> (i32, String) {
    let out = Command::new(rdht_testnet::bin("rdht-node"))
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_read_only_data_dir_is_refused_at_start_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    // Not there yet, on a read-only file system.
    let ro = tmp.path().join("ro");
    let _fs = Tmpfs::mount(&ro, "ro,size=1m");
    let (code, err) = start(&ro.join("data"));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "rdht-node: creating {}: Read-only file system (os error 30)",
            ro.join("data").display()
        )
    );
    // There already, and then the file system became read-only.
    let was = tmp.path().join("was");
    let fs = Tmpfs::mount(&was, "size=1m");
    std::fs::create_dir(was.join("data")).unwrap();
    fs.remount("ro");
    let (code, err) = start(&was.join("data"));
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(
        lines[0].starts_with(&format!("rdht-node: {}", was.join("data").display()))
            && lines[0].ends_with("Read-only file system (os error 30)")
            && lines[0].matches("Read-only file system").count() == 1,
        "{err}"
    );
}
