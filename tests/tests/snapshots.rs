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

// ---- A VM of several containers: `vm up --snapshot`, `vm resume --manifest` ----

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// Writes a manifest into `dir`: the example's `store` and `front` (on `port`), and, if
/// `probe` is given, a container `probe` (`tests/snapshot/netprobe.vasm`) with `probe` as its
/// extra fields (`"allow_net": [...]`, or nothing).
fn containers_manifest(dir: &Path, file: &str, port: u16, probe: Option<&str>) {
    let ex = repo_root().join("examples/containers");
    let mut entries = vec![
        format!(r#"{{"name": "store", "module": {:?}, "restart": "transient"}}"#, ex.join("store.vasm")),
        format!(
            r#"{{"name": "front", "module": {:?}, "args": ["{port}"], "allow_net": ["127.0.0.1:{port}"],
                "allow_lookup": ["store"], "restart": "permanent"}}"#,
            ex.join("front.vasm")
        ),
    ];
    if let Some(extra) = probe {
        let sep = if extra.is_empty() { "" } else { ", " };
        entries.push(format!(r#"{{"name": "probe", "module": {:?}{sep}{extra}}}"#, program("netprobe")));
    }
    let text = format!("{{\"containers\": [\n  {}\n]}}\n", entries.join(",\n  "));
    std::fs::write(dir.join(file), text).unwrap();
}

/// A client of the example's line protocol (`SET k v`, `GET k`).
struct Kv {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Kv {
    fn connect(port: u16) -> std::io::Result<Kv> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(LIMIT))?;
        // Each request is one write, and leaves at once (no Nagle wait for the server's ACK).
        s.set_nodelay(true)?;
        Ok(Kv { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    /// Sends one request and reads its answer line.
    fn ask(&mut self, request: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{request}\n").as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }
}

/// Waits for a line of `p` that `want` accepts, and returns it.
fn line_where(p: &mut Proc, want: impl Fn(&str) -> bool) -> String {
    loop {
        let (_, line) = p.line();
        if want(&line) {
            return line;
        }
    }
}

/// The count of a `[probe] probe N: ...` line.
fn probe_count(line: &str) -> u64 {
    let n = line.strip_prefix("[probe] probe ").and_then(|r| r.split(':').next());
    n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a probe line: {line}"))
}

/// The example (`front` serving clients, `store` keeping the data, a channel published by one
/// and used by the other) under load with a snapshot every 50 ms, killed with `kill -9` while
/// clients are writing, then resumed with its manifest: every write acknowledged before the
/// last snapshot is there, a write in flight at the kill is there or absent (never wrong), and
/// `front` binds its port again and serves new clients through the same channel. A container
/// the resume's manifest adds starts fresh.
#[test]
fn containers_under_load_survive_kill_9_and_resume_with_their_manifest() {
    let _s = serial();
    let dir = scratch("up_kill9");
    let port = free_port();
    containers_manifest(&dir, "m.json", port, None);
    // The resume's manifest adds a container, which starts fresh beside those resumed.
    containers_manifest(&dir, "more.json", port, Some(""));
    let p = Proc::start(&["up", "--snapshot", "s.snap", "--snapshot-every", "50ms", "m.json"], &dir);
    wait_listening(port);
    let writers = |tag: &'static str, n: usize, stop: std::sync::Arc<std::sync::atomic::AtomicBool>| {
        (0..8)
            .map(|c| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let Ok(mut kv) = Kv::connect(port) else { return acked };
                    for i in 0..n {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let key = format!("{tag}{c}-{i}");
                        match kv.ask(&format!("SET {key} v{i}")) {
                            Ok(ok) if ok == "OK" => acked.push((key, format!("v{i}"))),
                            _ => break,
                        }
                    }
                    acked
                })
            })
            .collect::<Vec<_>>()
    };
    let calm = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before: Vec<(String, String)> =
        writers("a", 150, calm).into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(before.len(), 8 * 150, "every write of the first load is acknowledged");
    // Several periods pass: a snapshot taken after every acknowledged write is on disk.
    std::thread::sleep(Duration::from_millis(300));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writers that go on until the VM is killed under them.
    let during = writers("b", usize::MAX, stop.clone());
    std::thread::sleep(Duration::from_millis(150));
    drop(p); // kill -9, in the middle of the second load
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let in_flight: Vec<(String, String)> = during.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(!in_flight.is_empty(), "the VM was killed under load");

    let mut p = Proc::start(&["resume", "--manifest", "more.json", "s.snap"], &dir);
    line_where(&mut p, |l| l.starts_with("[probe] probe 1: {:permission, "));
    wait_listening(port);
    let mut kv = Kv::connect(port).unwrap();
    for (key, value) in &before {
        assert_eq!(&kv.ask(&format!("GET {key}")).unwrap(), value, "{key}; stderr:\n{}", p.stderr());
    }
    for (key, value) in &in_flight {
        let got = kv.ask(&format!("GET {key}")).unwrap();
        assert!(got == *value || got == "nil", "{key}: {got}");
    }
    // New clients, new data, through the published channel the snapshot kept.
    let mut other = Kv::connect(port).unwrap();
    assert_eq!(other.ask("SET after resume").unwrap(), "OK");
    assert_eq!(kv.ask("GET after").unwrap(), "resume");
    assert!(!p.stderr().contains("panicked"), "{}", p.stderr());
    let lines = p.seen.clone();
    assert!(lines.iter().all(|l| l.starts_with('[')), "every line is a container's: {lines:?}");
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

/// `vm up --snapshot-on-term`: SIGTERM writes a snapshot and exits 0. `vm resume --manifest`
/// gives each container the grants of its manifest entry and nothing else: a container whose
/// network grant the new manifest drops counts on from its snapshot but gets `:permission`,
/// and the other containers' data and port are back. Refused with exit status 2, each saying
/// why: a manifest without one of the snapshot's containers (named), no manifest at all, grant
/// flags beside a manifest, and a manifest for a snapshot of one program.
#[test]
fn a_resumed_container_has_only_the_grants_of_its_manifest() {
    let _s = serial();
    let dir = scratch("up_grants");
    let port = free_port();
    containers_manifest(&dir, "wide.json", port, Some(r#""allow_net": ["127.0.0.1"]"#));
    containers_manifest(&dir, "narrow.json", port, Some(""));
    containers_manifest(&dir, "no_probe.json", port, None);
    let mut p = Proc::start(&["up", "--snapshot", "s.snap", "--snapshot-on-term", "wide.json"], &dir);
    line_where(&mut p, |l| l == "[probe] probe 3: :ok");
    wait_listening(port);
    assert_eq!(Kv::connect(port).unwrap().ask("SET kept yes").unwrap(), "OK");
    let (code, lines, err) = p.terminate();
    assert_eq!(code, Some(0), "SIGTERM with --snapshot-on-term exits 0; stderr:\n{err}");
    let last = lines.iter().filter(|l| l.starts_with("[probe] ")).map(|l| probe_count(l)).max().unwrap();

    let refused = |args: &[&str], want: &[&str]| {
        let mut cmd = Command::new(VM);
        cmd.args(args).current_dir(&dir).env_remove("RUST_LOG");
        let run = run_with_timeout(&mut cmd, LIMIT).unwrap();
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: "), "{args:?}: {}", run.stderr);
        for w in want {
            assert!(run.stderr.contains(w), "{args:?}: want {w:?} in {}", run.stderr);
        }
    };
    refused(
        &["resume", "--manifest", "no_probe.json", "s.snap"],
        &["container probe but the manifest does not", "add it to the manifest"],
    );
    refused(&["resume", "s.snap"], &["several containers", "--manifest"]);
    refused(&["resume", "--allow-net", "--manifest", "wide.json", "s.snap"], &["--manifest"]);
    let mut one =
        Proc::start(&["run", "--snapshot", "one.snap", "--snapshot-on-term", &program("sleeper")], &dir);
    one.line();
    assert_eq!(one.terminate().0, Some(0));
    refused(&["resume", "--manifest", "wide.json", "one.snap"], &["of one program", "without --manifest"]);

    let mut p = Proc::start(&["resume", "--manifest", "narrow.json", "s.snap"], &dir);
    let line = line_where(&mut p, |l| l.starts_with("[probe] "));
    assert_eq!(probe_count(&line), last + 1, "the probe counts on from its snapshot: {line}");
    assert!(line.contains(":permission") && line.contains("--allow-net"), "{line}");
    wait_listening(port);
    assert_eq!(Kv::connect(port).unwrap().ask("GET kept").unwrap(), "yes");
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

/// A snapshot of containers damaged inside its containers section (checksums made right, so
/// the damage reaches the decoder and the checks), or cut short there, is refused with exit
/// status 2 and a message, never a panic.
#[test]
fn a_damaged_containers_section_is_refused_with_exit_2() {
    let _s = serial();
    let dir = scratch("up_damaged");
    containers_manifest(&dir, "m.json", free_port(), Some(""));
    let mut p = Proc::start(&["up", "--snapshot", "s.snap", "--snapshot-on-term", "m.json"], &dir);
    line_where(&mut p, |l| l.starts_with("[probe] probe 2"));
    assert_eq!(p.terminate().0, Some(0));
    let good = std::fs::read(dir.join("s.snap")).unwrap();
    // The containers section (id 0x82): its header's offset and its body's range.
    let mut at = 14;
    let (start, len) = loop {
        let len = u32::from_le_bytes(good[at + 1..at + 5].try_into().unwrap()) as usize;
        if good[at] == 0x82 {
            break (at + 9, len);
        }
        assert_ne!(good[at], 0, "no containers section");
        at += 9 + len;
    };
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    // Bits of the section's start (how many containers, the first one's name), checksums made
    // right again.
    for k in 0..6 {
        let mut b = good.clone();
        b[start + k] ^= 1 << (k % 8);
        damaged.push((format!("bit {} of byte {k} of the section", k % 8), vm_core::snapshot::reseal(&b)));
    }
    let mut garbage = good.clone();
    garbage[start..start + len].copy_from_slice(&XorShift::new(16).bytes(len));
    damaged.push(("garbage".into(), vm_core::snapshot::reseal(&garbage)));
    damaged.push(("cut short".into(), good[..start + len / 2].to_vec()));
    // Well-formed sections that do not agree with the rest of the file.
    let s = vm_core::snapshot::decode(&good).expect("the snapshot loads");
    type Edit = fn(&mut vm_core::snapshot::Snapshot);
    let edits: [(&str, Edit); 4] = [
        ("an actor that is not there", |s| {
            s.containers[0].spec.actors.push(vm_core::snapshot::v1::Member {
                pid: 1,
                priority: vm_core::snapshot::v1::Priority::Low,
            });
            s.actors.retain(|a| a.pid != 1);
        }),
        ("an actor in two containers", |s| {
            let m = s.containers[0].spec.actors[0];
            s.containers[1].spec.actors.push(m);
        }),
        ("actors that do not fit their module", |s| {
            let store = s.containers[0].module.clone();
            s.containers[0].module = s.containers[2].module.clone();
            s.containers[2].module = store;
        }),
        ("a container named main", |s| s.containers[1].spec.name = "main".into()),
    ];
    for (what, edit) in edits {
        let mut bad = s.clone();
        edit(&mut bad);
        damaged.push((what.into(), vm_core::snapshot::encode(&bad)));
    }
    for (what, bytes) in &damaged {
        // A file of its own, with no older generation to fall back on.
        std::fs::write(dir.join("bad.snap"), bytes).unwrap();
        let mut cmd = Command::new(VM);
        cmd.args(["resume", "--manifest", "m.json", "bad.snap"]).current_dir(&dir).env_remove("RUST_LOG");
        let run = run_with_timeout(&mut cmd, LIMIT).unwrap();
        assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
        assert_eq!(run.code, Some(2), "{what}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: "), "{what}: {}", run.stderr);
    }
    let _ = std::fs::remove_dir_all(dir);
}
