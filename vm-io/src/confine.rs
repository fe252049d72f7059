//! File access confined beneath the granted paths: what makes `--allow-read=DIR` and
//! `--allow-write=DIR` hold against symbolic links.
//!
//! Checking a path's name is not enough: with `DIR/root -> /`, the name `DIR/root/etc/passwd`
//! lies under `DIR`, yet opening it reads `/etc/passwd`. Checking the real path first
//! (`realpath`, then `open`) is not enough either: a link can be swapped between the check and
//! the open. So the file natives never open a granted path by name. They go through
//! [`with_path`], which keeps this protocol:
//!
//! 1. The path is made absolute against the current directory and normalised lexically (`.`
//!    and `dir/..` removed, as [`crate::perms`] does); it must lie under a granted path of each
//!    kind of access the operation needs (read, write, or both), or it is denied as before.
//! 2. For each kind, the *outermost* granted path containing it is chosen (it allows most; the
//!    real path must stay inside it). With every needed kind granted everywhere, the operation
//!    runs on the path as the program wrote it, with no confinement (step 6 does not apply).
//! 3. The chosen grant directories are opened, shortest first: the first by its name (a granted
//!    path is taken as it resolves at that moment, links included: the user named it), each
//!    further one *beneath* the one before, so a grant for writing inside a grant for reading
//!    cannot lead out of the latter.
//! 4. The rest of the path is resolved beneath the innermost directory with `cap-std`, which
//!    uses `openat2(RESOLVE_BENEATH)` where the kernel has it and otherwise walks the path one
//!    component at a time with `O_NOFOLLOW`, expanding each link itself. Every link, the last
//!    component's included (an `O_CREAT` through a dangling link), must stay beneath that
//!    directory; `..` may not climb out of it; an absolute link counts as leaving it. The check
//!    and the open are one operation, so nothing can change in between.
//! 5. An operation on a link itself (removing it) does not follow the last component.
//! 6. If step 4 refuses a path (`PermissionDenied`), the path may still be legitimate: an
//!    absolute link pointing back inside the grant, or a link from one granted directory into
//!    another. Its real path is then computed (`canonicalize`; for a file about to be created,
//!    its parent's) and steps 1 to 4 run once more with that path and the grants' real paths.
//!    Only if the real path lies under no grant is it denied, as `:permission` naming the path
//!    and the flag. A link swapped during this second round still cannot escape: step 4 runs
//!    again. A refusal that is a real OS permission error stays that error.

use crate::natives::io_error;
use crate::perms::{Grant, Permissions};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use vm_core::Exception;

/// A kind of file access, each granted by its own flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading files and listing directories (`--allow-read`).
    Read,
    /// Creating, writing and removing files (`--allow-write`).
    Write,
}

impl Access {
    fn flag(self) -> &'static str {
        match self {
            Access::Read => "--allow-read",
            Access::Write => "--allow-write",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    fn grant(self, perms: &Permissions) -> &Grant<PathBuf> {
        match self {
            Access::Read => &perms.read,
            Access::Write => &perms.write,
        }
    }
}

/// Where an operation acts: the path as written (no confinement), or a path beneath an open
/// grant directory.
pub enum Place<'a> {
    /// Anywhere: every kind of access the operation needs is granted everywhere.
    Anywhere(&'a Path),
    /// `rel` (never empty, never absolute, no `..`) resolved beneath `dir` (step 4).
    Beneath(&'a Dir, &'a Path),
}

impl Place<'_> {
    /// Opens a file.
    pub fn open(&self, opts: &OpenOptions) -> io::Result<std::fs::File> {
        let file = match self {
            Place::Anywhere(p) => cap_std::fs::File::open_ambient_with(p, opts, ambient_authority())?,
            Place::Beneath(dir, rel) => dir.open_with(rel, opts)?,
        };
        Ok(file.into_std())
    }

    /// Opens a directory (to list it).
    pub fn open_dir(&self) -> io::Result<Dir> {
        match self {
            Place::Anywhere(p) => Dir::open_ambient_dir(p, ambient_authority()),
            Place::Beneath(dir, rel) => dir.open_dir(rel),
        }
    }

    /// Removes a file, a link (not what it points to) or an empty directory (step 5).
    pub fn remove(&self) -> io::Result<()> {
        match self {
            Place::Anywhere(p) => {
                if std::fs::symlink_metadata(p)?.is_dir() {
                    std::fs::remove_dir(p)
                } else {
                    std::fs::remove_file(p)
                }
            }
            Place::Beneath(dir, rel) => {
                if dir.symlink_metadata(rel)?.is_dir() {
                    dir.remove_dir(rel)
                } else {
                    dir.remove_file(rel)
                }
            }
        }
    }
}

/// Runs `op` on `path` confined beneath the grants of every kind in `needs` (the module's
/// protocol). `what` prefixes OS errors (`file_open data/x`). A path outside the grants, by name
/// or by where its links lead, is a `:permission` exception naming the flag.
pub fn with_path<R>(
    perms: &Permissions,
    path: &str,
    needs: &[Access],
    what: &str,
    op: impl Fn(Place<'_>) -> io::Result<R>,
) -> Result<R, Exception> {
    let lexical = crate::perms::absolute(path);
    // Steps 1 and 2.
    let mut roots = Vec::new();
    for &access in needs {
        match access.grant(perms) {
            Grant::All => {}
            Grant::Denied => return Err(denied(access, path, false)),
            Grant::Only(dirs) => match outermost(dirs.iter().map(PathBuf::as_path), &lexical) {
                Some(dir) => roots.push(dir.to_path_buf()),
                None => return Err(denied(access, path, false)),
            },
        }
    }
    if roots.is_empty() {
        return op(Place::Anywhere(Path::new(path))).map_err(|e| io_error(what, &e));
    }
    // Steps 3 and 4.
    let refused = match beneath(&roots, &lexical, &op) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => e,
        other => return other.map_err(|e| io_error(what, &e)),
    };
    // Step 6: where does the path really lead?
    let Some(real) = real_path(&lexical) else { return Err(io_error(what, &refused)) };
    let mut real_roots = Vec::new();
    for &access in needs {
        let Grant::Only(dirs) = access.grant(perms) else { continue };
        let real_dirs: Vec<PathBuf> = dirs.iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect();
        match outermost(real_dirs.iter().map(PathBuf::as_path), &real) {
            Some(dir) => real_roots.push(dir.to_path_buf()),
            None => return Err(denied(access, path, true)),
        }
    }
    beneath(&real_roots, &real, &op).map_err(|e| io_error(what, &e))
}

/// Steps 3 and 4: opens `roots` (sorted here, shortest first) each beneath the one before, then
/// runs `op` on `target` beneath the innermost.
fn beneath<R>(roots: &[PathBuf], target: &Path, op: &impl Fn(Place<'_>) -> io::Result<R>) -> io::Result<R> {
    let mut roots: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
    roots.sort_by_key(|r| r.as_os_str().len());
    roots.dedup();
    let mut dir = Dir::open_ambient_dir(roots[0], ambient_authority())?;
    for pair in roots.windows(2) {
        dir = dir.open_dir(relative(pair[1], pair[0]))?;
    }
    let last = roots[roots.len() - 1];
    op(Place::Beneath(&dir, &relative(target, last)))
}

/// `path` below `base` (which contains it), or `.` for `base` itself.
fn relative(path: &Path, base: &Path) -> PathBuf {
    match path.strip_prefix(base) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The shortest of `dirs` that contains `path` (compared by whole components).
fn outermost<'d>(dirs: impl Iterator<Item = &'d Path>, path: &Path) -> Option<&'d Path> {
    dirs.filter(|d| path.starts_with(d)).min_by_key(|d| d.as_os_str().len())
}

/// The real path of `path` with every link followed; for a path that does not exist yet (a file
/// about to be created), its parent's real path and its own name.
fn real_path(path: &Path) -> Option<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Some(p),
        Err(_) => {
            let parent = std::fs::canonicalize(path.parent()?).ok()?;
            Some(parent.join(path.file_name()?))
        }
    }
}

/// The `:permission` exception for `path`; `through_link` when its name was granted but a
/// link leads outside.
fn denied(access: Access, path: &str, through_link: bool) -> Exception {
    let (what, flag) = (access.what(), access.flag());
    if through_link {
        Exception::new(
            crate::perms::permission_atom(),
            format!(
                "{what} access to {path} denied: a symbolic link leads outside the paths granted by \
                 {flag}; grant the place it leads to"
            ),
        )
    } else {
        crate::perms::denial(what, path, flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fresh directory `grant` with a file inside, and `outside` beside it holding a secret.
    fn setup(test: &str) -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("vm-io-confine-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (grant, outside) = (base.join("grant"), base.join("outside"));
        std::fs::create_dir_all(grant.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(grant.join("sub/inside.txt"), "inside").unwrap();
        std::fs::write(outside.join("secret.txt"), "secret").unwrap();
        (grant, outside)
    }

    fn perms(read: &Path, write: &Path) -> Permissions {
        Permissions {
            read: Permissions::parse_paths(Some(read.to_str().unwrap()), "--allow-read").unwrap(),
            write: Permissions::parse_paths(Some(write.to_str().unwrap()), "--allow-write").unwrap(),
            ..Default::default()
        }
    }

    fn read(p: &Permissions, path: &Path) -> Result<String, Exception> {
        with_path(p, path.to_str().unwrap(), &[Access::Read], "read", |place| {
            let mut s = String::new();
            io::Read::read_to_string(&mut place.open(OpenOptions::new().read(true))?, &mut s)?;
            Ok(s)
        })
    }

    fn create(p: &Permissions, path: &Path) -> Result<(), Exception> {
        with_path(p, path.to_str().unwrap(), &[Access::Write], "create", |place| {
            io::Write::write_all(&mut place.open(OpenOptions::new().write(true).create(true))?, b"x")
        })
    }

    #[test]
    fn links_inside_the_grant_work_and_links_out_of_it_are_denied() {
        let (grant, outside) = setup("links");
        let p = perms(&grant, &grant);
        symlink("sub", grant.join("rel")).unwrap();
        symlink(grant.join("sub"), grant.join("abs")).unwrap();
        symlink("/", grant.join("root")).unwrap();
        symlink(&outside, grant.join("out")).unwrap();
        symlink(outside.join("new.txt"), grant.join("dangling")).unwrap();
        assert_eq!(read(&p, &grant.join("rel/inside.txt")).unwrap(), "inside");
        // An absolute link back inside is refused beneath the grant, then allowed by its real path.
        assert_eq!(read(&p, &grant.join("abs/inside.txt")).unwrap(), "inside");
        for escape in ["root/etc/passwd", "out/secret.txt"] {
            let e = read(&p, &grant.join(escape)).unwrap_err();
            assert_eq!(e.kind, crate::perms::permission_atom(), "{escape}: {}", e.msg);
            assert!(e.msg.to_string().contains("symbolic link leads outside"), "{}", e.msg);
        }
        // Creating through a link, or through a dangling last component, creates nothing outside.
        assert!(create(&p, &grant.join("out/made.txt")).is_err());
        assert!(create(&p, &grant.join("dangling")).is_err());
        assert!(!outside.join("made.txt").exists() && !outside.join("new.txt").exists());
        create(&p, &grant.join("rel/made.txt")).unwrap();
        assert!(grant.join("sub/made.txt").exists());
        // `..` is taken by name first: it cannot climb out of the grant either.
        assert!(read(&p, &grant.join("sub/../../outside/secret.txt")).is_err());
        std::fs::remove_dir_all(grant.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_link_from_one_grant_into_another_is_allowed() {
        let (grant, outside) = setup("two");
        symlink(&outside, grant.join("out")).unwrap();
        let both = format!("{},{}", grant.display(), outside.display());
        let p = Permissions {
            read: Permissions::parse_paths(Some(&both), "--allow-read").unwrap(),
            ..Default::default()
        };
        assert_eq!(read(&p, &grant.join("out/secret.txt")).unwrap(), "secret");
        std::fs::remove_dir_all(grant.parent().unwrap()).unwrap();
    }

    #[test]
    fn read_write_stays_inside_the_write_grant() {
        let (grant, _) = setup("rw");
        // Reading is granted on the whole tree, writing only in `sub`; a link in `sub` to a file
        // elsewhere in the tree may not be opened for both.
        std::fs::write(grant.join("top.txt"), "top").unwrap();
        symlink(grant.join("top.txt"), grant.join("sub/top")).unwrap();
        let p = perms(&grant, &grant.join("sub"));
        let rw = |path: &Path| {
            with_path(&p, path.to_str().unwrap(), &[Access::Read, Access::Write], "rw", |place| {
                place.open(OpenOptions::new().read(true).write(true)).map(drop)
            })
        };
        assert!(rw(&grant.join("sub/inside.txt")).is_ok());
        let e = rw(&grant.join("sub/top")).unwrap_err();
        assert!(e.msg.to_string().contains("--allow-write"), "{}", e.msg);
        std::fs::remove_dir_all(grant.parent().unwrap()).unwrap();
    }

    /// The check and the open are one step: a link flipped between a directory inside the grant
    /// and one outside, as fast as a thread can, never lets a read through to the outside.
    #[test]
    fn a_link_swapped_during_the_open_never_leads_outside() {
        let (grant, outside) = setup("race");
        std::fs::write(grant.join("sub/secret.txt"), "inside").unwrap();
        symlink("sub", grant.join("flip")).unwrap();
        let p = perms(&grant, &grant);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (grant, outside, stop) = (grant.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut flips = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Built aside, then renamed over the link: `flip` always exists.
                    let target = if flips.is_multiple_of(2) { outside.clone() } else { PathBuf::from("sub") };
                    let _ = std::fs::remove_file(grant.join("next"));
                    symlink(&target, grant.join("next")).unwrap();
                    std::fs::rename(grant.join("next"), grant.join("flip")).unwrap();
                    flips += 1;
                }
                flips
            })
        };
        let (mut inside, mut refused) = (0, 0);
        for _ in 0..5_000 {
            match read(&p, &grant.join("flip/secret.txt")) {
                Ok(text) => {
                    assert_eq!(text, "inside", "a read went through the link to the outside");
                    inside += 1;
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        assert!(
            flips > 100 && inside > 0 && refused > 0,
            "flips {flips}, inside {inside}, refused {refused}"
        );
        std::fs::remove_dir_all(grant.parent().unwrap()).unwrap();
    }

    #[test]
    fn removing_a_link_removes_the_link_only() {
        let (grant, outside) = setup("rm");
        symlink(outside.join("secret.txt"), grant.join("link")).unwrap();
        let p = perms(&grant, &grant);
        with_path(&p, grant.join("link").to_str().unwrap(), &[Access::Write], "rm", |pl| pl.remove())
            .unwrap();
        assert!(!grant.join("link").exists() && outside.join("secret.txt").exists());
        std::fs::remove_dir_all(grant.parent().unwrap()).unwrap();
    }

    #[test]
    fn names_are_checked_by_whole_components_after_normalisation() {
        let (grant, _) = setup("names");
        let p = perms(&grant, &grant.join("sub"));
        assert_eq!(read(&p, &grant.join("./sub/x/../inside.txt")).unwrap(), "inside");
        let sibling = PathBuf::from(format!("{}x/f", grant.display()));
        let e = read(&p, &sibling).unwrap_err();
        assert!(e.msg.to_string().contains("run with --allow-read"), "{}", e.msg);
        let e = create(&p, &grant.join("top.txt")).unwrap_err();
        assert!(e.msg.to_string().contains("run with --allow-write"), "{}", e.msg);
        // The granted directory itself can be listed.
        let list = |path: &Path| {
            with_path(&p, path.to_str().unwrap(), &[Access::Read], "list", |pl| {
                Ok(pl.open_dir()?.entries()?.count())
            })
        };
        assert_eq!(list(&grant).unwrap(), 1);
        std::fs::remove_dir_all(grant.parent().unwrap()).unwrap();
    }

    #[test]
    fn without_a_list_the_path_is_used_as_written() {
        let (grant, outside) = setup("all");
        symlink(&outside, grant.join("out")).unwrap();
        let p = Permissions::all();
        assert_eq!(read(&p, &grant.join("out/secret.txt")).unwrap(), "secret");
        let e = read(&Permissions::default(), &grant.join("sub/inside.txt")).unwrap_err();
        assert!(e.msg.to_string().contains("run with --allow-read"), "{}", e.msg);
        std::fs::remove_dir_all(grant.parent().unwrap()).unwrap();
    }
}
