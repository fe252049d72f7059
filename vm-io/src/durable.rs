//! Files that survive a crash at any moment of their writing, kept in generations: what snapshot
//! files are written with (`vm run --snapshot PATH`), and where `vm resume` finds the newest one
//! that loads.
//!
//! A file `PATH` has generations `PATH` (the newest), `PATH.1`, `PATH.2`, ... [`write`] keeps
//! `keep` of them:
//! 1. Write the new bytes to `.NAME.tmp` beside `PATH` (same directory, so same file system)
//!    and fsync it: from here on the bytes are on disk.
//! 2. Shift the older generations up by one (`PATH.k-2` → `PATH.k-1`, ..., `PATH.1` →
//!    `PATH.2`); each rename is atomic and replaces its target.
//! 3. Hard-link `PATH` as `PATH.1` (where the file system cannot link, rename it instead).
//! 4. Rename `.NAME.tmp` to `PATH`, atomically replacing it.
//! 5. Fsync the directory, so that the renames themselves are on disk, then remove
//!    generations beyond `keep` (left by an earlier, larger `keep`).
//!
//! Invariant: every generation file, at every moment, is complete: bytes reach a generation's
//! name only by a rename or a link of a file already fsynced in step 1. A crash (`kill -9`, a
//! power cut) leaves the previous generations intact, at worst one shifted or missing a name
//! (between steps 2 and 4), and possibly a stale `.NAME.tmp`, which readers ignore and the
//! next write replaces. So [`load_newest`], which tries the generations newest first and takes
//! the first that the caller's check accepts, always finds the last complete write or the one
//! before it.
//!
//! Only one writer may write a given `PATH` at a time (the runtime serialises its own writes).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The points of [`write`] a test can stop at, to leave the files as a crash there would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    /// Part of the temporary file is written.
    TempHalf,
    /// The temporary file is complete and synced.
    TempSynced,
    /// Generation `n` was shifted to `n + 1`.
    Shifted(usize),
    /// The newest generation was linked (or renamed) as generation 1.
    Linked,
    /// The new file has its name.
    Renamed,
}

/// Writes `bytes` as the newest generation of `path`, keeping `keep` generations (at least
/// one). See the module docs for the steps and what a crash during them leaves.
pub fn write(path: &Path, bytes: &[u8], keep: usize) -> io::Result<()> {
    write_until(path, bytes, keep, &mut |_| false)
}

/// [`write`], returning early (as a crash would leave the files) when `stop` says so.
fn write_until(
    path: &Path,
    bytes: &[u8],
    keep: usize,
    stop: &mut dyn FnMut(Point) -> bool,
) -> io::Result<()> {
    let keep = keep.max(1);
    let (dir, name) = split(path)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half])?;
    if stop(Point::TempHalf) {
        return Ok(());
    }
    f.write_all(&bytes[half..])?;
    f.sync_all()?;
    drop(f);
    if stop(Point::TempSynced) {
        return Ok(());
    }
    if keep > 1 && path.exists() {
        for n in (1..keep - 1).rev() {
            match fs::rename(generation(path, n), generation(path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if stop(Point::Shifted(n)) {
                return Ok(());
            }
        }
        let first = generation(path, 1);
        // Gone after the shift, unless `keep` is 2 (nothing shifted): replace it.
        if keep == 2 {
            remove_if_present(&first)?;
        }
        // A link keeps `path` naming a complete file throughout; a rename leaves it missing
        // until step 4, which readers survive by taking generation 1.
        if fs::hard_link(path, &first).is_err() {
            fs::rename(path, &first)?;
        }
        if stop(Point::Linked) {
            return Ok(());
        }
    }
    fs::rename(&tmp, path)?;
    if stop(Point::Renamed) {
        return Ok(());
    }
    File::open(dir)?.sync_all()?;
    for old in generations(path)? {
        if number(path, &old).is_some_and(|n| n >= keep) {
            remove_if_present(&old)?;
        }
    }
    Ok(())
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The directory and file name of `path` (the directory is `.` for a bare name).
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file name", path.display()))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_string()))
}

/// `PATH.n`.
fn generation(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The generation number of `file` (0 for `path` itself), if it is one of `path`'s.
fn number(path: &Path, file: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    let other = file.file_name()?.to_str()?;
    if other == name {
        return Some(0);
    }
    let digits = other.strip_prefix(name)?.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The generations of `path` that exist, newest first (`PATH`, then `PATH.1`, `PATH.2`, ...,
/// skipping missing numbers).
pub fn generations(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (dir, _) = split(path)?;
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let candidate = dir.join(entry.file_name());
        if let Some(n) = number(path, &candidate)
            && entry.file_type()?.is_file()
        {
            found.push((n, generation_path(path, n)));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

fn generation_path(path: &Path, n: usize) -> PathBuf {
    if n == 0 { path.to_path_buf() } else { generation(path, n) }
}

/// What [`load_newest`] found.
#[derive(Debug)]
pub struct Loaded<T> {
    /// What the check made of the newest generation it accepted.
    pub value: T,
    /// That generation's file.
    pub path: PathBuf,
    /// The newer generations it refused, each with the reason.
    pub refused: Vec<(PathBuf, String)>,
}

/// Why no generation could be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// There is no generation of the file at all (or its directory cannot be read).
    Missing(PathBuf, io::Error),
    /// Every generation was refused; each with the reason, newest first.
    Refused(PathBuf, Vec<(PathBuf, String)>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Missing(p, e) => write!(f, "no snapshot at {}: {e}", p.display()),
            LoadError::Refused(p, why) => {
                write!(f, "no generation of {} loads:", p.display())?;
                for (file, reason) in why {
                    write!(f, "\n  {}: {reason}", file.display())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads the generations of `path` newest first and returns the first that `check` accepts;
/// see the module docs.
pub fn load_newest<T, E: fmt::Display>(
    path: &Path,
    mut check: impl FnMut(&[u8]) -> Result<T, E>,
) -> Result<Loaded<T>, LoadError> {
    let all = generations(path).map_err(|e| LoadError::Missing(path.to_path_buf(), e))?;
    if all.is_empty() {
        let e = io::Error::new(io::ErrorKind::NotFound, "no such file");
        return Err(LoadError::Missing(path.to_path_buf(), e));
    }
    let mut refused = Vec::new();
    for file in all {
        match fs::read(&file) {
            Ok(bytes) => match check(&bytes) {
                Ok(value) => return Ok(Loaded { value, path: file, refused }),
                Err(e) => refused.push((file, e.to_string())),
            },
            Err(e) => refused.push((file, e.to_string())),
        }
    }
    Err(LoadError::Refused(path.to_path_buf(), refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vm-io-durable-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file content that says which write made it and checks itself, as a snapshot does.
    fn content(n: u32) -> Vec<u8> {
        let mut b = format!("write {n} ").into_bytes();
        b.resize(4096 + n as usize, b'x');
        b.extend_from_slice(&crc(&b).to_le_bytes());
        b
    }

    fn crc(b: &[u8]) -> u32 {
        b.iter().fold(7u32, |h, &x| h.rotate_left(5) ^ u32::from(x))
    }

    /// The check a reader makes: the bytes are whole, and which write made them.
    fn which(b: &[u8]) -> Result<u32, String> {
        let (body, sum) = b.split_at(b.len().checked_sub(4).ok_or("too short")?);
        if crc(body) != u32::from_le_bytes(sum.try_into().unwrap()) {
            return Err("damaged".into());
        }
        let text = std::str::from_utf8(&body[6..body.iter().position(|&c| c == b'x').unwrap()]).unwrap();
        text.trim().parse().map_err(|e| format!("{e}"))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn keeps_the_newest_generations_in_order() {
        let dir = scratch("keep");
        let path = dir.join("s");
        for n in 1..=5 {
            write(&path, &content(n), 3).unwrap();
        }
        assert_eq!(names(&dir), ["s", "s.1", "s.2"]);
        let got: Vec<u32> =
            generations(&path).unwrap().iter().map(|p| which(&fs::read(p).unwrap()).unwrap()).collect();
        assert_eq!(got, [5, 4, 3]);
        // Fewer generations from now on: the extra ones go.
        write(&path, &content(6), 1).unwrap();
        assert_eq!(names(&dir), ["s"]);
        write(&path, &content(7), 2).unwrap();
        write(&path, &content(8), 2).unwrap();
        assert_eq!(names(&dir), ["s", "s.1"]);
        assert_eq!(which(&fs::read(dir.join("s.1")).unwrap()), Ok(7));
        // Other files beside it are not generations.
        for other in ["s.01", "s.x", "s.1.bak", "sx", ".s.tmp"] {
            fs::write(dir.join(other), b"?").unwrap();
        }
        assert_eq!(generations(&path).unwrap(), [dir.join("s"), dir.join("s.1")]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn loads_the_newest_generation_that_checks_out() {
        let dir = scratch("newest");
        let path = dir.join("snap");
        let e = load_newest(&path, which).unwrap_err().to_string();
        assert!(e.starts_with(&format!("no snapshot at {}", path.display())), "{e}");
        for n in 1..=3 {
            write(&path, &content(n), 3).unwrap();
        }
        let got = load_newest(&path, which).unwrap();
        assert_eq!((got.value, got.path.clone(), got.refused.len()), (3, path.clone(), 0));
        // The newest is damaged: the one before it loads, and the reason is kept.
        let mut bad = fs::read(&path).unwrap();
        bad[10] ^= 1;
        fs::write(&path, bad).unwrap();
        let got = load_newest(&path, which).unwrap();
        assert_eq!((got.value, got.path), (2, generation(&path, 1)));
        assert_eq!(got.refused, [(path.clone(), "damaged".to_string())]);
        // All damaged: every reason, newest first.
        for p in generations(&path).unwrap() {
            fs::write(p, b"junk").unwrap();
        }
        let e = load_newest(&path, which).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 4, "{e}");
        assert!(e.contains(&format!("{}: damaged", generation(&path, 2).display())), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// A crash at every point of a write, with 1 to 4 generations kept and 0 to 4 written
    /// before: the files left always load, as the last complete write or the new one.
    #[test]
    fn a_crash_at_any_point_of_a_write_leaves_a_loadable_file() {
        let dir = scratch("crash");
        let path = dir.join("vm.snap");
        for keep in 1..=4 {
            for before in 0..=4u32 {
                // Every stopping point this write passes, then one run that does not stop.
                let mut points = Vec::new();
                write_until(&dir.join("probe"), b"p", keep, &mut |p| {
                    points.push(p);
                    false
                })
                .unwrap();
                let _ = fs::remove_file(dir.join("probe"));
                for at in points.iter().copied().map(Some).chain([None]) {
                    for p in generations(&path).unwrap() {
                        fs::remove_file(p).unwrap();
                    }
                    for n in 1..=before {
                        write(&path, &content(n), keep).unwrap();
                    }
                    write_until(&path, &content(99), keep, &mut |p| Some(p) == at).unwrap();
                    let got = load_newest(&path, which);
                    let case = format!("keep {keep}, {before} written before, stopped at {at:?}");
                    match (before, got) {
                        (0, Err(_)) if at.is_some() => {}
                        (_, Ok(got)) => {
                            let want: &[u32] = match at {
                                None | Some(Point::Renamed) => &[99],
                                _ => &[before],
                            };
                            assert!(want.contains(&got.value), "{case}: loaded write {}", got.value);
                            assert!(got.refused.is_empty(), "{case}: {:?}", got.refused);
                        }
                        (_, Err(e)) => panic!("{case}: {e}"),
                    }
                    // The next write after a crash completes and cleans up.
                    write(&path, &content(100), keep).unwrap();
                    assert_eq!(load_newest(&path, which).unwrap().value, 100, "{case}");
                    assert!(generations(&path).unwrap().len() <= keep, "{case}");
                }
            }
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
