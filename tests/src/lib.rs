//! Shared helpers for the integration tests: running the real `vm` binary as a subprocess with a
//! time limit, and the golden-program format.
//!
//! # Golden programs
//!
//! `tests/programs/NAME.vasm` is a program; beside it:
//! - `NAME.out` (required): the exact expected standard output;
//! - `NAME.code` (optional): the expected exit status, a decimal number; default `0`;
//! - `NAME.err` (optional): lines that must each appear, as substrings, in standard error;
//!   without the file, standard error must be empty;
//! - `NAME.args` (optional): command-line arguments for the program, one per line.
//!
//! Only `*.vasm` files directly in the directory are programs; subdirectories hold files that
//! programs `.include`. Whatever the files say, a Rust panic message on standard error is always a
//! failure: bad input must never crash the VM.
//!
//! `.out` and `.err` mean what they mean for the runtime's in-process programs
//! (`vm-sched/tests/programs/`): both runners read and compare them with
//! [`vm_sched::testing::Expected`], and regenerate `.out` files under `UPDATE_EXPECT=1`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use vm_sched::testing::read_sibling;
pub use vm_sched::testing::{Expected, first_difference, indent, line_diff, update_requested};

/// The workspace root: golden programs run with it as their working directory, so the paths in
/// messages read `tests/programs/NAME.vasm`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// What a finished (or killed) subprocess did.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// The exit status; `None` when the process was ended by a signal (including our kill on
    /// timeout).
    pub code: Option<i32>,
    /// Standard output, decoded lossily.
    pub stdout: String,
    /// Standard error, decoded lossily.
    pub stderr: String,
    /// True when the process outlived its time limit and was killed.
    pub timed_out: bool,
    /// Wall-clock time until it exited or was killed.
    pub elapsed: Duration,
}

/// Runs `cmd` with standard input closed and both output streams captured, killing it once
/// `limit` has passed.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> io::Result<RunOutput> {
    run_with_input(cmd, None, limit)
}

/// Runs `cmd` with `stdin` as its standard input (closed when `None`) and both output streams
/// captured, killing it once `limit` has passed.
///
/// The input is written and the streams are drained on threads of their own while this one
/// polls for exit, so a child that stops reading, or writes more than a pipe buffer holds, can
/// neither block itself nor us.
pub fn run_with_input(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> io::Result<RunOutput> {
    let start = Instant::now();
    let input = if stdin.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = cmd.stdin(input).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        // Dropping the pipe at the end closes the child's input.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let mut out_pipe = child.stdout.take().expect("stdout was piped");
    let mut err_pipe = child.stderr.take().expect("stderr was piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= limit {
            timed_out = true;
            // The child may exit between try_wait and kill; either way wait() reaps it.
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(RunOutput {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        timed_out,
        elapsed,
    })
}

/// One golden program and what it must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Golden {
    /// The file name without `.vasm`.
    pub name: String,
    /// The program's path relative to the repository root (`tests/programs/NAME.vasm`).
    pub rel_path: String,
    /// Command-line arguments for the program.
    pub args: Vec<String>,
    /// Expected standard output (`NAME.out`) and substrings of standard error (`NAME.err`).
    pub expected: Expected,
    /// Expected exit status.
    pub code: i32,
}

impl Golden {
    /// The path of a sibling file (`NAME.out`, ...) relative to the repository root.
    pub fn sibling(&self, ext: &str) -> String {
        format!("{}.{ext}", self.rel_path.strip_suffix(".vasm").unwrap_or(&self.rel_path))
    }
}

/// Reads every golden program in `root/dir` (a path relative to `root`), sorted by name.
pub fn load_goldens(root: &Path, dir: &str) -> Result<Vec<Golden>, String> {
    let abs = root.join(dir);
    let entries = std::fs::read_dir(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".vasm")).map(str::to_string))
        .collect();
    names.sort();
    let mut goldens = Vec::with_capacity(names.len());
    for name in names {
        let base = abs.join(&name);
        let code = match read_sibling(&base, "code")? {
            Some(s) => s.trim().parse().map_err(|_| format!("{dir}/{name}.code: not a number: {s:?}"))?,
            None => 0,
        };
        let args =
            read_sibling(&base, "args")?.map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default();
        goldens.push(Golden {
            rel_path: format!("{dir}/{name}.vasm"),
            expected: Expected::load(&base)?,
            name,
            args,
            code,
        });
    }
    Ok(goldens)
}

/// Compares what a program did against its golden files; returns one message per mismatch
/// (empty when everything matches).
pub fn check_golden(g: &Golden, run: &RunOutput) -> Vec<String> {
    let mut problems = Vec::new();
    if run.timed_out {
        problems.push(format!("timed out after {:.1} s and was killed", run.elapsed.as_secs_f64()));
    }
    match run.code {
        Some(c) if c == g.code => {}
        Some(c) => problems.push(format!("exit status {c}, expected {}", g.code)),
        None if !run.timed_out => {
            problems.push(format!("killed by a signal, expected exit status {}", g.code))
        }
        None => {}
    }
    problems.extend(g.expected.check(&g.sibling("out"), &run.stdout, &run.stderr));
    problems
}

/// A small deterministic pseudo-random generator (xorshift64*), for making garbage inputs that
/// are the same on every run without a dependency.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a seed (0 is replaced, since xorshift would stay at 0 forever).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_each_kind_of_mismatch() {
        let g = Golden {
            name: "p".into(),
            rel_path: "tests/programs/p.vasm".into(),
            args: vec![],
            expected: Expected { out: Some("1\n".into()), err: vec!["boom".into()] },
            code: 1,
        };
        let good = RunOutput {
            code: Some(1),
            stdout: "1\n".into(),
            stderr: "error: boom at p.vasm:3\n".into(),
            timed_out: false,
            elapsed: Duration::ZERO,
        };
        assert!(check_golden(&g, &good).is_empty());
        let bad = RunOutput {
            code: Some(0),
            stdout: "2\n".into(),
            stderr: "thread 'main' panicked at x\n".into(),
            ..good.clone()
        };
        let problems = check_golden(&g, &bad);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let quiet = Golden { expected: Expected { err: vec![], ..g.expected.clone() }, code: 0, ..g };
        let noisy = RunOutput { code: Some(0), stderr: "warning\n".into(), ..good };
        assert_eq!(check_golden(&quiet, &noisy).len(), 1);
    }

    #[test]
    fn timeout_kills_a_slow_process() {
        let run = run_with_timeout(Command::new("sleep").arg("10"), Duration::from_millis(200)).unwrap();
        assert!(run.timed_out);
        assert!(run.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn input_reaches_the_child_and_is_closed() {
        let run =
            run_with_input(Command::new("wc").arg("-l"), Some(b"a\nb\n"), Duration::from_secs(10)).unwrap();
        assert_eq!((run.code, run.stdout.trim()), (Some(0), "2"));
    }

    #[test]
    fn run_captures_both_streams_and_the_status() {
        let run = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((run.code, run.stdout.as_str(), run.stderr.as_str()), (Some(3), "out\n", "err\n"));
        assert!(!run.timed_out);
    }

    #[test]
    fn goldens_load_with_their_defaults() {
        let goldens = load_goldens(&repo_root(), "tests/programs").unwrap();
        assert!(goldens.len() >= 35, "only {} golden programs", goldens.len());
        let hello = goldens.iter().find(|g| g.name == "hello").unwrap();
        assert_eq!((hello.code, hello.expected.err.is_empty(), hello.args.is_empty()), (0, true, true));
        assert_eq!(hello.sibling("out"), "tests/programs/hello.out");
        let args = goldens.iter().find(|g| g.name == "args").unwrap();
        assert_eq!(args.args, ["3", "4", "hello world"]);
        assert!(goldens.iter().all(|g| g.expected.out.is_some()), "every program needs a .out file");
    }

    #[test]
    fn xorshift_is_deterministic() {
        assert_eq!(XorShift::new(7).bytes(16), XorShift::new(7).bytes(16));
        assert_ne!(XorShift::new(7).bytes(16), XorShift::new(8).bytes(16));
    }
}
