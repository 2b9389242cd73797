//! rdht-fit: whether an artifact's outputs can run on this machine (specs/build-key.md
//! §6.2): the dynamic requirements of an ELF file (`DT_NEEDED` and its `verneed`
//! entries) against the version definitions of this machine's C runtime libraries.
//! The shim uses it to check a hit's files and to say in a record what a miss's
//! outputs need; the daemon to skip, before fetching, a candidate that cannot load.
//!
//! A proc macro, build script, host binary or cdylib linked against a newer glibc (or
//! libstdc++, libgcc_s) than this machine has fails to load here; rustc or cargo then
//! fails the build. Keys do not name the C runtime (an artifact linked on an old machine
//! runs on newer ones, and keying by version would split the cache for nothing), so the
//! check runs on every hit, before its files are used.
//!
//! Owns: reading requirements ([`requirements`], [`file_requirements`]), finding and
//! reading this machine's runtime libraries ([`Machine`]), and the verdict
//! ([`Misfit`]). Does not own: which outputs are loaded here (the caller: not for a
//! `--target` this machine only cross-compiles), what a misfit leads to (a local build
//! or another candidate), or the record format (`rdht-core`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

/// The C runtime libraries whose presence and versions are checked. Other libraries an
/// output needs (for example one a `-sys` crate built) are not this check's business.
const RUNTIME_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libstdc++.so.6",
    "libgcc_s.so.1",
];

/// Largest file read to learn its requirements or definitions.
const MAX_ELF: u64 = 1 << 30;

/// What an ELF file needs of the runtime libraries: each library it names, with the
/// symbol versions it needs from it (empty when none are named). The type records
/// carry (specs/records.md §2.1).
pub use rdht_core::Needs;

/// Why an output cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misfit {
    /// A runtime library it needs does not define a version it needs.
    #[error("needs {version} from {lib}; this machine has {have}")]
    Version {
        /// The library, e.g. `libc.so.6`.
        lib: String,
        /// The version needed, e.g. `GLIBC_2.34`.
        version: String,
        /// The newest version of that family the library defines here, e.g.
        /// `GLIBC_2.31` (or `none`).
        have: String,
    },
    /// A runtime library it needs is not on this machine.
    #[error("needs {lib}, which this machine does not have")]
    Missing {
        /// The library.
        lib: String,
    },
}

/// The runtime requirements of the ELF file `bytes`; `None` when it is not a dynamic
/// ELF file (an rlib, an rmeta, a static archive, an object file).
pub fn requirements(bytes: &[u8]) -> Option<Needs> {
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let elf = Elf::parse(bytes).ok()?;
    elf.dynamic.as_ref()?;
    let mut needs = Needs::new();
    for lib in &elf.libraries {
        if RUNTIME_LIBS.contains(lib) {
            needs.entry((*lib).to_string()).or_default();
        }
    }
    if let Some(verneed) = &elf.verneed {
        for need in verneed.iter() {
            let Some(file) = elf.dynstrtab.get_at(need.vn_file) else {
                continue;
            };
            if !RUNTIME_LIBS.contains(&file) {
                continue;
            }
            let versions = needs.entry(file.to_string()).or_default();
            for aux in need.iter() {
                if let Some(v) = elf.dynstrtab.get_at(aux.vna_name) {
                    versions.insert(v.to_string());
                }
            }
        }
    }
    Some(needs)
}

/// The version names an ELF shared library defines.
fn definitions(bytes: &[u8]) -> Option<BTreeSet<String>> {
    let elf = Elf::parse(bytes).ok()?;
    let verdef = elf.verdef.as_ref()?;
    let mut defs = BTreeSet::new();
    for def in verdef.iter() {
        if let Some(aux) = def.iter().next()
            && let Some(name) = elf.dynstrtab.get_at(aux.vda_name)
        {
            defs.insert(name.to_string());
        }
    }
    Some(defs)
}

/// Compares two version names of one family numerically (`GLIBC_2.9` < `GLIBC_2.34`).
fn version_key(v: &str) -> (String, Vec<u64>) {
    let (family, number) = v.rsplit_once('_').unwrap_or((v, ""));
    let parts = number
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .collect();
    (family.to_string(), parts)
}

/// This machine's runtime libraries, found in the system library directories and read
/// once each.
#[derive(Debug)]
pub struct Machine {
    dirs: Vec<PathBuf>,
    defs: HashMap<String, Option<BTreeSet<String>>>,
}

impl Machine {
    /// The machine this process runs on; `host` is rustc's host triple, whose
    /// multiarch directories (`/lib/x86_64-linux-gnu`) are searched first.
    pub fn here(host: &str) -> Machine {
        let arch = host.split('-').next().unwrap_or_default();
        let multiarch = format!("{arch}-linux-gnu");
        let dirs = [
            format!("/lib/{multiarch}"),
            format!("/usr/lib/{multiarch}"),
            "/lib64".to_string(),
            "/usr/lib64".to_string(),
            "/lib".to_string(),
            "/usr/lib".to_string(),
        ];
        Machine::with_dirs(dirs.iter().map(PathBuf::from).collect())
    }

    /// A machine whose runtime libraries are in `dirs`, searched in order.
    pub fn with_dirs(dirs: Vec<PathBuf>) -> Machine {
        Machine {
            dirs,
            defs: HashMap::new(),
        }
    }

    /// The versions `lib` defines here; `None` when it is not found.
    fn provides(&mut self, lib: &str) -> Option<&BTreeSet<String>> {
        if !self.defs.contains_key(lib) {
            let found = self
                .dirs
                .iter()
                .map(|d| d.join(lib))
                .find(|p| p.is_file())
                .and_then(|p| read_bounded(&p))
                .map(|bytes| definitions(&bytes).unwrap_or_default());
            self.defs.insert(lib.to_string(), found);
        }
        self.defs.get(lib).and_then(Option::as_ref)
    }

    /// Whether something with `needs` can be loaded here; the first misfit otherwise.
    pub fn fits(&mut self, needs: &Needs) -> Result<(), Misfit> {
        for (lib, versions) in needs {
            let Some(defs) = self.provides(lib) else {
                return Err(Misfit::Missing { lib: lib.clone() });
            };
            // The newest version missing names what the library here lacks.
            let missing = versions
                .iter()
                .filter(|v| !defs.contains(*v))
                .max_by_key(|v| version_key(v));
            if let Some(v) = missing {
                let family = version_key(v).0;
                let have = defs
                    .iter()
                    .filter(|d| version_key(d).0 == family)
                    .max_by_key(|d| version_key(d).1)
                    .cloned()
                    .unwrap_or_else(|| "none".into());
                return Err(Misfit::Version {
                    lib: lib.clone(),
                    version: v.clone(),
                    have,
                });
            }
        }
        Ok(())
    }

    /// What this machine's verdicts depend on: each runtime library this machine would
    /// load (the first found in its directories), by path, size and modification time,
    /// or its absence. A verdict kept with this identity holds while it is unchanged.
    pub fn identity(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let mut id = String::new();
        for lib in RUNTIME_LIBS {
            let found = self.dirs.iter().map(|d| d.join(lib)).find_map(|p| {
                let m = std::fs::metadata(&p).ok().filter(|m| m.is_file())?;
                Some(format!(
                    "{}:{}:{}.{}",
                    p.display(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec()
                ))
            });
            id.push_str(&format!("{lib}={};", found.as_deref().unwrap_or("-")));
        }
        id
    }

    /// [`Machine::fits`] for the file at `path` (not an ELF file: it fits).
    pub fn file_fits(&mut self, path: &Path) -> Result<(), Misfit> {
        match file_requirements(path) {
            Some(needs) => self.fits(&needs),
            None => Ok(()),
        }
    }

    /// The machine this process runs on (its own architecture's library directories).
    pub fn this_process() -> Machine {
        Machine::here(&format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
    }
}

/// [`requirements`] of the file at `path`; `None` when it is not a dynamic ELF file or
/// cannot be read.
pub fn file_requirements(path: &Path) -> Option<Needs> {
    // Most outputs (rlibs, rmeta) are not ELF: four bytes tell, not the whole file.
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(path).ok()?, &mut magic).ok()?;
    if &magic != b"\x7fELF" {
        return None;
    }
    read_bounded(path).as_deref().and_then(requirements)
}

/// Adds `more` to `needs` (the union of what several files need).
pub fn add(needs: &mut Needs, more: Needs) {
    for (lib, versions) in more {
        needs.entry(lib).or_default().extend(versions);
    }
}

fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_ELF {
        return None;
    }
    std::fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_each_runtime_library_found_and_changes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::with_dirs(vec![dir.path().to_path_buf()]);
        let none = m.identity();
        assert_eq!(
            none,
            "libc.so.6=-;libm.so.6=-;libpthread.so.0=-;libdl.so.2=-;librt.so.1=-;\
             libutil.so.1=-;libstdc++.so.6=-;libgcc_s.so.1=-;"
        );
        let libc = dir.path().join("libc.so.6");
        std::fs::write(&libc, b"one").unwrap();
        let one = m.identity();
        assert!(
            one.starts_with(&format!("libc.so.6={}:3:", libc.display())),
            "{one}"
        );
        std::fs::write(&libc, b"other").unwrap();
        assert_ne!(m.identity(), one);
    }

    fn host() -> String {
        let out = std::process::Command::new("rustc")
            .arg("-vV")
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap()
            .to_string()
    }

    /// This test's own executable, built here, needs glibc versions this machine has.
    /// The same bytes with one needed version renamed to `GLIBC_9.99` do not fit, and
    /// the verdict names that version.
    #[test]
    fn an_elf_needing_a_newer_glibc_is_refused_by_name_and_one_built_here_fits() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let needs = requirements(&exe).unwrap();
        let glibc = &needs["libc.so.6"];
        assert!(!glibc.is_empty(), "{needs:?}");
        let mut machine = Machine::here(&host());
        assert_eq!(machine.fits(&needs), Ok(()));
        // Rename the newest needed version, keeping its length (GLIBC_2.NN -> 9.99).
        let newest = glibc
            .iter()
            .filter(|v| v.len() == "GLIBC_9.99".len())
            .max_by_key(|v| version_key(v).1)
            .unwrap_or_else(|| panic!("no GLIBC_X.YY version in {glibc:?}"))
            .clone();
        let at = exe
            .windows(newest.len() + 1)
            .position(|w| w == format!("{newest}\0").as_bytes())
            .unwrap();
        let mut patched = exe.clone();
        patched[at..at + newest.len()].copy_from_slice(b"GLIBC_9.99");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new-machine-binary");
        std::fs::write(&path, &patched).unwrap();
        let err = machine.file_fits(&path).unwrap_err();
        assert!(
            matches!(&err, Misfit::Version { version, lib, .. } if version == "GLIBC_9.99" && lib == "libc.so.6"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("needs GLIBC_9.99 from libc.so.6; this machine has GLIBC_2."),
            "{err}"
        );
        // A machine without the library at all.
        let mut bare = Machine::with_dirs(vec![dir.path().to_path_buf()]);
        assert_eq!(
            bare.fits(&needs),
            Err(Misfit::Missing {
                lib: "libc.so.6".into()
            })
        );
        // Not ELF, or not dynamic: nothing to check.
        assert_eq!(requirements(b"!<arch>\n"), None);
        let rlib = dir.path().join("libx.rlib");
        std::fs::write(&rlib, b"!<arch>\n").unwrap();
        assert_eq!(bare.file_fits(&rlib), Ok(()));
    }

    #[test]
    fn versions_compare_numerically_within_a_family() {
        assert!(version_key("GLIBC_2.9").1 < version_key("GLIBC_2.34").1);
        assert_eq!(version_key("GLIBCXX_3.4.30").0, "GLIBCXX");
    }
}
