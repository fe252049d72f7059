//! vm-io: the I/O drivers. **This is the only crate that touches the OS**: sockets, files,
//! standard streams, the environment, clocks, name resolution and signals (Ctrl-C). Every other crate reaches the
//! outside world through it: vm-sched runs the [`natives`] and completes `print` effects with
//! [`Output`], and vm-cli reads and writes program files with [`fs`] and [`FsLoader`].
//!
//! - [`natives`]: the registry of native functions callable from bytecode, each inline, async
//!   (a future awaited while the actor is soft-blocked) or blocking (run on the blocking pool);
//!   `docs/io.md` is the reference for programs.
//! - [`net`] (TCP, UDP), [`files`], [`stdio`]: the natives themselves; [`resp`] reads and
//!   writes the Redis protocol.
//! - [`table`]: shared tables, mutable state any actor holding the handle may use.
//! - [`resource`]: sockets, listeners and files as owned resources ([`Io`] holds the ownership
//!   table, the permissions and the console of one VM).
//! - [`perms`]: `--allow-net`, `--allow-read`, `--allow-write`, `--allow-env`; [`confine`]: file
//!   access opened beneath the granted directories, so symbolic links cannot lead out of them.
//! - [`ctrl_c`]: SIGINT caught instead of ending the process (`vm repl`'s session).
//! - [`Output`]: the sink for the `print` effect (standard output), buffered for speed;
//! - [`FsLoader`]: the assembler's [`SourceLoader`] backed by the file system;
//! - [`fs`]: whole-file reads and writes for `.vbc` modules.
//! - [`durable`]: files written to survive a crash at any moment, in generations (snapshots).
//! - [`reopen`]: resources across a snapshot: reopen recipes, and opening them again.
//! - [`request`]: `vm_snapshot`, a program asking the runtime for a snapshot of its VM.
//! - [`cluster`]: the cluster natives (`spawn_on`, `node`, `nodes`, global names), answered
//!   by the membership the runtime installs.
//! - [`services`]: `publish` and `lookup`, the names containers offer each other.
//! - [`rerun`]: which natives in flight when a snapshot was taken may run again after a restore.

pub mod affine;
pub mod cluster;
pub mod confine;
pub mod ctrl_c;
pub mod durable;
pub mod files;
pub mod natives;
pub mod net;
pub mod output;
pub mod perms;
#[cfg(any(test, feature = "test-natives"))]
pub mod probes;
pub mod reopen;
pub mod request;
pub mod rerun;
pub mod resource;
pub mod resp;
pub mod services;
pub mod sqlite;
pub mod stdio;
pub mod sysmem;
pub mod table;

pub use output::Output;
pub use perms::{Grants, Permissions};
pub use resource::{Console, Io};

use std::path::{Component, Path, PathBuf};
use vm_core::asm::{LoadError, SourceLoader};

/// Whole-file reads and writes, so that callers outside vm-io never call `std::fs` themselves.
pub mod fs {
    use std::io;
    use std::path::Path;

    /// Reads a whole file as bytes.
    pub fn read_bytes(path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    /// Writes `bytes` to `path`, replacing any existing file.
    pub fn write_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
        std::fs::write(path, bytes)
    }
}

/// Loads assembly sources from the file system.
///
/// The top-level file is opened as named (relative to the current directory); an `.include`
/// path is resolved relative to the directory of the file that includes it (an absolute include
/// path is used as is). The name returned for diagnostics is that path, normalised lexically
/// (`.` components dropped, `dir/..` collapsed) so that one file reached by two spellings, such
/// as `lib/a.vasm` and `lib/../lib/a.vasm`, gets one name and the assembler's "a file included
/// twice is assembled once" rule sees it as the same file. Normalisation is lexical, not
/// `canonicalize`, so names stay as short as the user wrote them and symbolic links are not
/// resolved.
#[derive(Clone, Debug, Default)]
pub struct FsLoader;

impl FsLoader {
    /// A loader reading from the file system.
    pub fn new() -> FsLoader {
        FsLoader
    }

    /// The path an include of `path` from file `from` refers to (see the type docs).
    pub fn resolve(path: &str, from: Option<&str>) -> PathBuf {
        let joined = match from.and_then(|f| Path::new(f).parent()) {
            Some(dir) => dir.join(path),
            None => PathBuf::from(path),
        };
        normalize(&joined)
    }
}

impl SourceLoader for FsLoader {
    fn load(&mut self, path: &str, from: Option<&str>) -> Result<(String, String), LoadError> {
        let resolved = FsLoader::resolve(path, from);
        let name = resolved.to_string_lossy().into_owned();
        match std::fs::read(&resolved) {
            // Text that is not UTF-8 is located for the assembler to report.
            Ok(bytes) => vm_core::asm::source_text(name, bytes),
            // The assembler puts the file name in front of the reason.
            Err(e) => Err(LoadError::Unreadable(e.to_string())),
        }
    }
}

/// Lexical normalisation: drops `.` components and collapses `dir/..` pairs. A leading `..`
/// (or one that would climb above the root) is kept, because without the file system we cannot
/// know what it refers to.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_to_the_including_file() {
        assert_eq!(FsLoader::resolve("main.vasm", None), PathBuf::from("main.vasm"));
        assert_eq!(FsLoader::resolve("lib.vasm", Some("main.vasm")), PathBuf::from("lib.vasm"));
        assert_eq!(FsLoader::resolve("lib.vasm", Some("src/main.vasm")), PathBuf::from("src/lib.vasm"));
        assert_eq!(FsLoader::resolve("../x/y.vasm", Some("a/b/c.vasm")), PathBuf::from("a/x/y.vasm"));
        assert_eq!(FsLoader::resolve("./y.vasm", Some("./a/c.vasm")), PathBuf::from("a/y.vasm"));
        assert_eq!(FsLoader::resolve("/abs/y.vasm", Some("a/c.vasm")), PathBuf::from("/abs/y.vasm"));
        assert_eq!(FsLoader::resolve("../y.vasm", Some("c.vasm")), PathBuf::from("../y.vasm"));
        assert_eq!(FsLoader::resolve("/../y.vasm", None), PathBuf::from("/y.vasm"));
    }

    #[test]
    fn loads_files_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("vm-io-loader-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::write(dir.join("main.vasm"), "; main\n").unwrap();
        std::fs::write(dir.join("lib/util.vasm"), "; util\n").unwrap();
        let main = dir.join("main.vasm").to_string_lossy().into_owned();

        let mut loader = FsLoader::new();
        let (name, text) = loader.load(&main, None).unwrap();
        assert_eq!(name, main);
        assert_eq!(text, "; main\n");
        let (name, text) = loader.load("lib/util.vasm", Some(&main)).unwrap();
        assert_eq!(PathBuf::from(&name), dir.join("lib/util.vasm"));
        assert_eq!(text, "; util\n");

        let Err(LoadError::Unreadable(err)) = loader.load("missing.vasm", Some(&main)) else { panic!() };
        assert!(!err.is_empty() && !err.contains("missing.vasm"), "{err}");
        // Text that is not UTF-8 is located: line 2, after `; ab`, in both texts' offsets.
        std::fs::write(dir.join("latin1.vasm"), b"; ok\n; ab\xe9c\n").unwrap();
        let Err(LoadError::NotUtf8 { text, at, bad, .. }) = loader.load("latin1.vasm", Some(&main)) else {
            panic!()
        };
        assert_eq!((at, bad, &text[at..]), (9, vec![0xe9], "\u{FFFD}c\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn whole_file_reads_and_writes_round_trip() {
        let path = std::env::temp_dir().join(format!("vm-io-fs-{}.vbc", std::process::id()));
        fs::write_bytes(&path, &[1, 2, 3]).unwrap();
        assert_eq!(fs::read_bytes(&path).unwrap(), vec![1, 2, 3]);
        std::fs::remove_file(&path).unwrap();
        assert!(fs::read_bytes(&path).is_err());
    }
}
