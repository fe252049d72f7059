//! Test support, compiled for this crate's tests and for other crates that enable the `testing`
//! feature (this crate's program runner `tests/programs.rs`, the workspace's `vm-tests`); never
//! part of the `vm` binary a release build makes.
//!
//! 1. **Output.** [`Lines`] is an [`Output`] that keeps the lines a program prints; [`Bytes`]
//!    is an in-memory byte stream (a stand-in standard output for [`vm_io::Output`]).
//! 2. **Running.** [`Setup`] says how to run a program: a [`Config`], worker threads, `main`'s
//!    arguments and a time limit. [`Setup::run`] runs a verified module's `main` on a fresh
//!    multi-thread tokio runtime and returns a [`Ran`]: the [`Outcome`] (`None` when the limit
//!    passed first), the printed lines and the [`Vm`], for what it counted. The runtime is shut
//!    down without waiting, as `vm run` does when `main` ends, so actors left spinning cost
//!    nothing after the call. [`run_with`] and [`run`] are the short forms for a program given
//!    as text ([`module`]); [`load`] assembles a program file with its `.include`s.
//! 3. **Expected files.** A program `NAME.vasm` is checked against files beside it: `NAME.out`
//!    holds the exact output, `NAME.err` lines that must each appear in the error text
//!    (without it, the error text must be empty). [`Expected`] reads them and lists every
//!    mismatch, with a line diff ([`line_diff`]) for the output. Both program runners use it:
//!    the golden tests of the binary (error text = standard error) and the in-process runner
//!    (error text = [`outcome_text`]).
//! 4. **Regenerating.** With [`UPDATE_ENV`] set to `1` (`UPDATE_EXPECT=1 cargo test ...`),
//!    every test that compares against a generated file rewrites it instead of failing: `.out`
//!    files, `docs/isa.md`, the fuzz seeds. `.err` files and exit statuses are written by hand.
//!    Check the diff before committing it.

use crate::vm::{Config, Outcome, Output, Vm};
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use vm_core::Module;

/// The environment variable that makes tests rewrite the files they compare against; see the
/// module docs.
pub const UPDATE_ENV: &str = "UPDATE_EXPECT";

/// True when [`UPDATE_ENV`] is `1`: tests rewrite their expected files instead of failing.
pub fn update_requested() -> bool {
    std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1")
}

/// An [`Output`] that keeps every line printed, in order.
#[derive(Debug, Default)]
pub struct Lines(Mutex<Vec<String>>);

impl Lines {
    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many lines have been printed.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing has been printed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Output for Lines {
    fn line(&self, text: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(text.to_string());
    }
}

/// An in-memory byte stream (for a [`vm_io::Output`] standing in for standard output); clones
/// share the bytes.
#[derive(Clone, Debug, Default)]
pub struct Bytes(Arc<Mutex<Vec<u8>>>);

impl Bytes {
    /// What was written, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl io::Write for Bytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Assembles and verifies `src` (named `t.vasm`, so no `.include`s), panicking with the errors
/// if it is not a valid program.
pub fn module(src: &str) -> Arc<Module> {
    let m = vm_core::asm::assemble_str("t.vasm", src).unwrap_or_else(|e| panic!("{e}"));
    vm_core::verify::verify(&m).unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(m)
}

/// Assembles (with its `.include`s, through [`vm_io::FsLoader`]) and verifies the program at
/// `path`, which names it in messages; on failure the diagnostics as text.
pub fn load(path: &str) -> Result<Arc<Module>, String> {
    let m = vm_core::asm::assemble(path, &mut vm_io::FsLoader::new()).map_err(|e| e.to_string())?;
    vm_core::verify::verify(&m).map_err(|errors| format!("{path} does not verify: {errors:?}"))?;
    Ok(Arc::new(m))
}

/// How to run a program in-process.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The VM's configuration (fuel, limits, permissions).
    pub config: Config,
    /// Worker threads of the runtime.
    pub workers: usize,
    /// `main`'s command-line arguments.
    pub args: Vec<String>,
    /// How long the program may run before the run gives up on it.
    pub limit: Duration,
}

impl Default for Setup {
    /// The default configuration, two workers, no arguments, 30 s.
    fn default() -> Setup {
        Setup { config: Config::default(), workers: 2, args: vec![], limit: Duration::from_secs(30) }
    }
}

/// What a run did; see [`Setup::run`].
pub struct Ran {
    /// How `main` ended; `None` if it had not ended within the limit.
    pub outcome: Option<Outcome>,
    /// Every line printed, in order.
    pub lines: Vec<String>,
    /// The VM, for what it counted ([`Vm::hog_reports`]).
    pub vm: Vm,
}

impl Setup {
    /// Runs `module`'s `main` on a new multi-thread runtime to its end or the limit; panics if
    /// `main` cannot start. Actors still running when `main` ends are abandoned with the
    /// runtime, as `vm run` abandons them.
    pub fn run(&self, module: Arc<Module>) -> Ran {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.workers.max(1))
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let out = Arc::new(Lines::default());
        // `Vm::new` starts the heartbeat task, so it is made inside the runtime.
        let vm = {
            let _in_runtime = rt.enter();
            Vm::new(self.config.clone(), out.clone())
        };
        let (limit, args, main_vm) = (self.limit, self.args.clone(), vm.clone());
        let outcome =
            rt.block_on(async move { tokio::time::timeout(limit, main_vm.run_main(module, args)).await });
        rt.shutdown_background();
        let outcome = outcome.ok().map(|o| o.unwrap_or_else(|e| panic!("main cannot start: {e}")));
        Ran { outcome, lines: out.lines(), vm }
    }
}

/// Runs `src`'s `main` (see [`module`]) as `setup` says; returns its outcome (`None` if it had
/// not ended within the limit) and the lines it printed.
pub fn run_with(src: &str, setup: Setup) -> (Option<Outcome>, Vec<String>) {
    let ran = setup.run(module(src));
    (ran.outcome, ran.lines)
}

/// Runs `src` with the default [`Setup`]; panics if it has not ended within the limit.
pub fn run(src: &str) -> (Outcome, Vec<String>) {
    let (outcome, lines) = run_with(src, Setup::default());
    (outcome.expect("the program did not finish within 30 s"), lines)
}

/// Owned lines, to compare with what a program printed.
pub fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The error text of a run, the in-process counterpart of what `vm run` writes on standard
/// error: empty when `main` returned (or stopped with `:normal`), otherwise one of
/// - `uncaught exception KIND: MESSAGE at LOCATION`,
/// - `main exited with reason REASON`,
/// - the deadlock report (which begins `deadlock:` and names every actor and its wait),
/// - `still running after N ms` when the limit passed first.
pub fn outcome_text(outcome: Option<&Outcome>, limit: Duration) -> String {
    match outcome {
        None => format!("still running after {} ms\n", limit.as_millis()),
        Some(Outcome::Exited(_)) => String::new(),
        Some(Outcome::Stopped(reason)) if *reason == vm_core::Value::Atom(vm_core::atoms::NORMAL) => {
            String::new()
        }
        Some(Outcome::Stopped(reason)) => format!("main exited with reason {}\n", reason.repr()),
        Some(Outcome::Failed { fault, location }) => {
            format!("uncaught exception {} at {location}\n", fault.exception)
        }
        Some(Outcome::Deadlock(report)) => report.clone(),
    }
}

/// A program's expected files; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The exact expected output (`NAME.out`); `None` when the file is missing, which is a
    /// failure unless the output is being regenerated.
    pub out: Option<String>,
    /// Lines that must each appear in the error text (`NAME.err`); empty means the error text
    /// must be empty.
    pub err: Vec<String>,
}

/// Reads `BASE.EXT` (for `BASE` a path without extension); `None` when there is no such file.
pub fn read_sibling(base: &Path, ext: &str) -> Result<Option<String>, String> {
    let path = base.with_extension(ext);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl Expected {
    /// Reads `BASE.out` and `BASE.err`.
    pub fn load(base: &Path) -> Result<Expected, String> {
        let err = read_sibling(base, "err")?
            .map(|s| s.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Expected { out: read_sibling(base, "out")?, err })
    }

    /// Every way `out` and `err` differ from what is expected (empty when they match). `name`
    /// names the `.out` file in the message when it is missing. A Rust panic in `err` is always
    /// a failure: bad input must never crash the VM.
    pub fn check(&self, name: &str, out: &str, err: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.out {
            Some(want) if want != out => {
                problems.push(format!("output differs (- expected, + actual):\n{}", line_diff(want, out)))
            }
            Some(_) => {}
            None => problems.push(format!("{name} is missing")),
        }
        if self.err.is_empty() {
            if !err.is_empty() {
                problems.push(format!("the error text should be empty but is:\n{}", indent(err)));
            }
        } else {
            for want in &self.err {
                if !err.contains(want.as_str()) {
                    problems.push(format!("the error text lacks {want:?}; it is:\n{}", indent(err)));
                }
            }
        }
        if err.contains("panicked") {
            problems.push(format!("the VM panicked:\n{}", indent(err)));
        }
        problems
    }
}

/// Indents every line by four spaces, for nesting output inside a failure report.
pub fn indent(s: &str) -> String {
    if s.is_empty() {
        return "    (empty)\n".to_string();
    }
    let mut out = String::new();
    for line in s.lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// Where `a` and `b` first differ: the index of the first unequal item, or the shorter length
/// when one is a prefix of the other (equal slices give their length).
pub fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

/// A line diff of `want` against `have`: common lines start with two spaces, lines only in
/// `want` with `- `, lines only in `have` with `+ `. A missing final newline is shown as a line
/// of its own so that it is never invisible.
///
/// It is a plain longest-common-subsequence diff, quadratic in the number of lines; outputs longer
/// than a couple of thousand lines are compared only up to their first differing line.
pub fn line_diff(want: &str, have: &str) -> String {
    let split = |s: &str| -> Vec<String> {
        let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
        if !s.is_empty() && !s.ends_with('\n') {
            lines.push("\\ no newline at end".to_string());
        }
        lines
    };
    let a = split(want);
    let b = split(have);
    let mut out = String::new();
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        let first = first_difference(&a, &b);
        let _ = writeln!(out, "  (long output: first difference at line {})", first + 1);
        if let Some(x) = a.get(first) {
            let _ = writeln!(out, "- {x}");
        }
        if let Some(y) = b.get(first) {
            let _ = writeln!(out, "+ {y}");
        }
        return out;
    }
    // lcs[i][j] = length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removals first, so a changed line reads as "- old" then "+ new".
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_added_and_removed_lines() {
        let d = line_diff("a\nb\nc\n", "a\nx\nc\nd\n");
        assert_eq!(d, "  a\n- b\n+ x\n  c\n+ d\n");
        assert_eq!(line_diff("same\n", "same\n"), "  same\n");
    }

    #[test]
    fn first_difference_finds_the_first_unequal_item_or_the_shorter_end() {
        assert_eq!(first_difference(b"abc", b"abd"), 2);
        assert_eq!(first_difference(b"ab", b"abc"), 2);
        assert_eq!(first_difference(b"abc", b"abc"), 3);
        assert_eq!(first_difference::<u8>(b"", b"x"), 0);
    }

    #[test]
    fn diff_shows_a_missing_final_newline() {
        let d = line_diff("a\n", "a");
        assert!(d.contains("+ \\ no newline at end"), "{d}");
    }

    #[test]
    fn check_reports_each_kind_of_mismatch() {
        let e = Expected { out: Some("1\n".into()), err: vec!["boom".into()] };
        assert!(e.check("p.out", "1\n", "error: boom at p.vasm:3\n").is_empty());
        let problems = e.check("p.out", "2\n", "thread 'main' panicked at x\n");
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let quiet = Expected { err: vec![], ..e };
        assert_eq!(quiet.check("p.out", "1\n", "warning\n").len(), 1);
        let missing = Expected::default().check("p.out", "", "");
        assert_eq!(missing, ["p.out is missing"]);
    }

    #[test]
    fn the_runner_reports_what_main_did_and_stops_at_its_limit() {
        let (o, out) = run(".func main 0\n    int r0, 7\n    print r0\n    ret r0\n.end\n");
        assert_eq!((o, out), (Outcome::Exited(vm_core::Value::Int(7)), lines(&["7"])));
        let forever = module(".func main 0\nloop:\n    jmp loop\n.end\n");
        let setup = Setup { limit: Duration::from_millis(50), ..Setup::default() };
        let ran = setup.run(forever);
        assert_eq!(ran.outcome, None);
        assert_eq!(outcome_text(None, setup.limit), "still running after 50 ms\n");
    }
}
