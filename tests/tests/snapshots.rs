//! Snapshots through the real binary: `vm run --snapshot PATH ...`, SIGTERM or `kill -9`, then
//! `vm resume PATH` (docs/snapshots.md). The programs are in `tests/snapshot/`.
//!
//! Every test works in a directory of its own under the system's temporary directory, bounds each
//! process with a deadline and kills what it started when it ends (the [`Proc`] guard), so a
//! failing test leaves no process behind. Tests run one at a time: they measure time (timers
//! across a resume) on a machine of two cores.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};
use vm_tests::{XorShift, repo_root, run_with_timeout};

/// The `vm` binary under test.
const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// The longest a process may take to print what a test waits for.
const LIMIT: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vm-snapshots-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn program(name: &str) -> String {
    repo_root().join("tests/snapshot").join(format!("{name}.vasm")).to_string_lossy().into_owned()
}

/// A running `vm` process whose output lines arrive, timestamped, on a channel; killed when
/// dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: std::sync::Arc<Mutex<String>>,
    seen: Vec<String>,
}

impl Proc {
    fn start(args: &[&str], dir: &Path) -> Proc {
        let mut child = Command::new(VM)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {VM}: {e}"));
        let out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc { child, lines, stderr, seen: Vec::new() }
    }

    /// Waits for the next line of output and when it came.
    fn line(&mut self) -> (Instant, String) {
        match self.lines.recv_timeout(LIMIT) {
            Ok((at, line)) => {
                self.seen.push(line.clone());
                (at, line)
            }
            Err(_) => {
                panic!("no output within {LIMIT:?}; so far {:?}; stderr:\n{}", self.seen, self.stderr())
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(self) -> (Option<i32>, Vec<String>, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success());
        self.finish()
    }

    /// Waits (bounded) for the process to end; its status, every line it printed, its stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < LIMIT, "the process did not end; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(5));
        };
        // Let the readers drain what is left.
        std::thread::sleep(Duration::from_millis(50));
        while let Ok((_, line)) = self.lines.try_recv() {
            self.seen.push(line);
        }
        (status.code(), std::mem::take(&mut self.seen), self.stderr())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli -p PORT` with `commands` on its standard input, one per line: its output lines.
fn redis(port: u16, commands: &str) -> Vec<String> {
    let mut child = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed (apt-get install redis-tools)");
    child.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < LIMIT, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kv_keeps_its_data_and_port_across_sigterm_and_resume() {
    let _s = serial();
    let dir = scratch("kv");
    let kv = repo_root().join("examples/kv.vasm").to_string_lossy().into_owned();
    let mut p =
        Proc::start(&["run", "--allow-net", "--snapshot", "kv.snap", "--snapshot-on-term", &kv, "0"], &dir);
    let (_, first) = p.line();
    let port: u16 =
        first.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{first}"));
    let replies = redis(port, &"INCR hits\n".repeat(100));
    assert_eq!(replies.last().map(String::as_str), Some("100"));
    let (code, _, err) = p.terminate();
    assert_eq!(code, Some(0), "SIGTERM with --snapshot-on-term exits 0; stderr:\n{err}");
    assert!(dir.join("kv.snap").exists());
    // The resumed VM has the grants of its own command line, binds the same port again, and
    // the table still holds the count.
    let p = Proc::start(&["resume", "--allow-net", "kv.snap"], &dir);
    wait_listening(port);
    assert_eq!(redis(port, "GET hits\nINCR hits\n"), ["100", "101"]);
    let (code, _, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    // Without the grant the listener cannot be bound again: it is lost, and nothing listens.
    let p = Proc::start(&["resume", "kv.snap"], &dir);
    std::thread::sleep(Duration::from_millis(500));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "a resume without --allow-net must not listen");
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_sleep_keeps_its_remaining_time_or_counts_the_downtime() {
    let _s = serial();
    let dir = scratch("sleep");
    let sleeper = program("sleeper");
    // Frozen timers: snapshotted about 1 s into a 3 s sleep, the resumed actor wakes about 2 s
    // after the resume.
    let mut p = Proc::start(&["run", "--snapshot", "s", "--snapshot-on-term", &sleeper], &dir);
    let (started, line) = p.line();
    assert_eq!(line, "sleeping");
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    let (code, _, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    let slept = started.elapsed();
    let resumed = Instant::now();
    let mut p = Proc::start(&["resume", "s"], &dir);
    let (woke, line) = p.line();
    assert_eq!(line, "woke");
    let left = woke - resumed;
    let want = Duration::from_millis(3000).saturating_sub(slept);
    assert!(
        left + Duration::from_millis(150) >= want && left <= want + Duration::from_millis(900),
        "woke {left:?} after the resume; {want:?} were left"
    );
    let _ = p.finish();
    // Wall timers: after a downtime longer than what was left, it wakes at once.
    let mut p = Proc::start(&["run", "--snapshot", "w", "--snapshot-on-term", &sleeper], &dir);
    let _ = p.line();
    std::thread::sleep(Duration::from_millis(300));
    let _ = p.terminate();
    std::thread::sleep(Duration::from_millis(3000));
    let resumed = Instant::now();
    let mut p = Proc::start(&["resume", "--timers=wall", "w"], &dir);
    let (woke, line) = p.line();
    assert_eq!(line, "woke");
    assert!(woke - resumed < Duration::from_millis(700), "woke {:?} after the resume", woke - resumed);
    let _ = p.finish();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn kill_9_at_random_moments_while_snapshotting_loses_nothing() {
    let _s = serial();
    let dir = scratch("kill9");
    let counter = program("counter");
    let whole = run_with_timeout(Command::new(VM).args(["run", &counter]), LIMIT).unwrap();
    assert_eq!(whole.code, Some(0), "{}", whole.stderr);
    let want_last = whole.stdout.lines().last().unwrap().to_string();
    assert_eq!(want_last, "{\"sum\", 79800}");
    let mut rng = XorShift::new(14);
    let mut kills = 0;
    let mut last = None;
    for round in 0..60 {
        let snap = dir.join("c.snap");
        let resume = vm_io::durable::generations(&snap).map(|g| !g.is_empty()).unwrap_or(false);
        let args: Vec<&str> = if resume {
            vec!["resume", "c.snap"]
        } else {
            vec!["run", "--snapshot", "c.snap", "--snapshot-every", "20ms", &counter]
        };
        let mut child = Command::new(VM)
            .args(&args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(20 + rng.next_u64() % 250);
        let start = Instant::now();
        let mut done = None;
        while start.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                done = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match done {
            Some(status) => {
                let mut out = String::new();
                child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                // Every resume loads: a failed load would exit 2 with a message.
                assert_eq!(status.code(), Some(0), "round {round} ({args:?}) failed:\n{err}");
                last = out.lines().last().map(str::to_string);
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    assert!(kills >= 3, "only {kills} kills: the program ended too soon to test anything");
    assert_eq!(last.as_deref(), Some(want_last.as_str()), "after {kills} kills");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_buffered_channel_and_a_blocked_producer_deliver_every_item_once_in_order() {
    let _s = serial();
    let dir = scratch("chan");
    let mut p = Proc::start(&["run", "--snapshot", "ch", "--snapshot-on-term", &program("channel")], &dir);
    assert_eq!(p.line().1, "ready");
    let (code, out, err) = p.terminate();
    assert_eq!((code, out), (Some(0), vec!["ready".to_string()]), "{err}");
    let (code, out, err) = Proc::start(&["resume", "ch"], &dir).finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, ["1", "2", "3"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_read_on_a_lost_connection_raises_lost_and_a_write_in_flight_unknown_outcome() {
    let _s = serial();
    let dir = scratch("peer");
    // A peer that accepts and never reads or writes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(2) {
            conns.push(c);
        }
        std::thread::sleep(LIMIT);
    });
    let grant = "--allow-net=127.0.0.1";
    let mut p =
        Proc::start(&["run", grant, "--snapshot", "p", "--snapshot-on-term", &program("peer"), &addr], &dir);
    assert_eq!(p.line().1, "started");
    // Both are blocked by now: the read waits for bytes that never come, the write for buffer
    // room that never frees.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, _, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    let (code, mut out, err) = Proc::start(&["resume", grant, "p"], &dir).finish();
    assert_eq!(code, Some(0), "{err}");
    out.sort();
    assert_eq!(
        out,
        ["both done", "{\"reader caught\", :lost}", "{\"writer caught\", :unknown_outcome}"],
        "stderr:\n{err}"
    );
    drop(held);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn damaged_truncated_foreign_and_random_files_are_refused_with_exit_2() {
    let _s = serial();
    let dir = scratch("damaged");
    let good = |name: &str, prog: &str| {
        let mut p = Proc::start(
            &["run", "--snapshot", name, "--snapshot-on-term", "--snapshot-keep", "1", prog],
            &dir,
        );
        let _ = p.line();
        let (code, _, err) = p.terminate();
        assert_eq!(code, Some(0), "{err}");
        std::fs::read(dir.join(name)).unwrap()
    };
    let a = good("a", &program("sleeper"));
    let b = good("b", &program("channel"));
    let resume = |bytes: &[u8]| {
        std::fs::write(dir.join("x"), bytes).unwrap();
        let out = run_with_timeout(Command::new(VM).args(["resume", "x"]).current_dir(&dir), LIMIT).unwrap();
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        (out.code, out.stderr)
    };
    let mut flipped = a.clone();
    flipped[a.len() / 2] ^= 0x10;
    let (code, err) = resume(&flipped);
    assert_eq!(code, Some(2));
    assert!(err.contains("damaged snapshot: checksum mismatch"), "{err}");
    let (code, err) = resume(&a[..a.len() - 7]);
    assert_eq!(code, Some(2));
    assert!(err.contains("was a write interrupted?"), "{err}");
    // The module section of another program's snapshot, checksums made right.
    let module_of = |bytes: &[u8]| {
        let at = vm_core::snapshot::MAGIC.len() + 4;
        let meta_len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        let m = at + 9 + meta_len;
        let len = u32::from_le_bytes(bytes[m + 1..m + 5].try_into().unwrap()) as usize;
        (m, m + 9 + len)
    };
    let ((a0, a1), (b0, b1)) = (module_of(&a), module_of(&b));
    let spliced = vm_core::snapshot::reseal(&[&a[..a0], &b[b0..b1], &a[a1..]].concat());
    let (code, err) = resume(&spliced);
    assert_eq!(code, Some(2));
    assert!(err.contains("mixes parts of different snapshots"), "{err}");
    let mut rng = XorShift::new(7);
    for n in [0, 3, 20, 500] {
        let (code, err) = resume(&rng.bytes(n));
        assert_eq!(code, Some(2), "{n} random bytes: {err}");
        assert!(err.starts_with("error: no generation of x loads:"), "{err}");
    }
    let (code, err) = resume(b"VMSNAP\r\n\x1a\n");
    assert_eq!(code, Some(2), "{err}");
    let out =
        run_with_timeout(Command::new(VM).args(["resume", "missing"]).current_dir(&dir), LIMIT).unwrap();
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("error: no snapshot at missing"), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_program_snapshots_itself_with_the_write_grant() {
    let _s = serial();
    let dir = scratch("self");
    let prog = program("selfsnap");
    let run = |args: &[&str]| run_with_timeout(Command::new(VM).args(args).current_dir(&dir), LIMIT).unwrap();
    let denied = run(&["run", &prog, "me.snap"]);
    assert_eq!(denied.code, Some(1));
    assert!(
        denied.stderr.contains("write access to me.snap denied: run with --allow-write"),
        "{}",
        denied.stderr
    );
    assert!(!dir.join("me.snap").exists());
    let first = run(&["run", "--allow-write", &prog, "me.snap"]);
    assert_eq!((first.code, first.stdout.as_str()), (Some(0), ":ok\n42\n"), "{}", first.stderr);
    // The resumed VM carries on after the call, which now says it was resumed.
    let again = run(&["resume", "me.snap"]);
    assert_eq!((again.code, again.stdout.as_str()), (Some(0), ":resumed\n42\n"), "{}", again.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn references_survive_a_resume_and_the_resumed_vm_makes_new_ones() {
    let _s = serial();
    let dir = scratch("refs");
    let prog = program("refsnap");
    let run = |args: &[&str]| run_with_timeout(Command::new(VM).args(args).current_dir(&dir), LIMIT).unwrap();
    let first = run(&["run", "--allow-write", &prog, "refs.snap"]);
    let want = ":ok\n#Ref<0.1>\n#Ref<0.2>\nfalse\n";
    assert_eq!((first.code, first.stdout.as_str()), (Some(0), want), "{}", first.stderr);
    // Resumed at the snapshot, the program makes its second reference again: the same number
    // as in the first run (the counter came back), and not the first reference's.
    let again = run(&["resume", "refs.snap"]);
    let want = ":resumed\n#Ref<0.1>\n#Ref<0.2>\nfalse\n";
    assert_eq!((again.code, again.stdout.as_str()), (Some(0), want), "{}", again.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_seeded_program_resumed_from_a_snapshot_continues_its_random_streams() {
    let _s = serial();
    let dir = scratch("rand");
    let prog = program("randsnap");
    let run = |args: &[&str]| run_with_timeout(Command::new(VM).args(args).current_dir(&dir), LIMIT).unwrap();
    let first = run(&["run", "--seed", "7", "--allow-write", &prog, "rand.snap"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!((lines.len(), lines[1]), (5, ":ok"), "{}", first.stdout);
    // The same seed draws the same numbers; another seed draws others.
    let same = run(&["run", "--seed", "7", "--allow-write", &prog, "same.snap"]);
    assert_eq!(same.stdout, first.stdout);
    let other = run(&["run", "--seed", "8", "--allow-write", &prog, "other.snap"]);
    assert_ne!(other.stdout.lines().skip(2).collect::<Vec<_>>(), lines[2..]);
    // Resumed at the snapshot, the main actor and the child it spawned before the snapshot
    // draw what they drew after it in the first run: their generators came back.
    for _ in 0..3 {
        let again = run(&["resume", "rand.snap"]);
        let want = format!(":resumed\n{}\n", lines[2..].join("\n"));
        assert_eq!((again.code, again.stdout.as_str()), (Some(0), want.as_str()), "{}", again.stderr);
    }
    let _ = std::fs::remove_dir_all(dir);
}
