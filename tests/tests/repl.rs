//! `vm repl` through a pseudo-terminal, as a person uses it: the real binary (`vm-under-test`)
//! runs on a pty with its line editor, and the test types commands, waits for the prompt and
//! reads what the terminal shows (escape sequences stripped).
//!
//! - `examples/echo.vasm` is loaded and its server spawned; the test connects to it and gets its
//!   line back, sees the server in `ps`, kills it and sees the next connection refused.
//! - The same with the test's own server (`tests/programs/repl/server.vasm`), plus `info` on a
//!   live and a dead actor, `send` to a counter whose output appears above the prompt, `trace`,
//!   Tab completion, and `eval` arithmetic.
//! - Malformed commands print an error and leave the REPL usable; Ctrl-C stops a running `eval`
//!   but not the session; history is kept across sessions in `$VM_HISTORY`; `quit` and Ctrl-D
//!   end the session with status 0.
//!
//! Every wait has a time limit, so a REPL that stops answering fails the test instead of hanging
//! it.

use rexpect::process::WaitStatus;
use rexpect::session::{Options, PtySession, spawn_with_options};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vm_tests::repo_root;

/// The `vm` binary under test.
const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// How long any one expected output may take to appear.
const WAIT_MS: u64 = 20_000;

/// The prompt.
const PROMPT: &str = "vm> ";

/// Where a new prompt starts in `text`, and where it ends: the prompt after a newline (and
/// perhaps a carriage return), not the line editor redrawing the line being typed (which starts
/// with a carriage return alone).
fn new_prompt(text: &str) -> Option<(usize, usize)> {
    ["\n\r", "\n"]
        .iter()
        .filter_map(|nl| {
            let p = format!("{nl}{PROMPT}");
            text.find(&p).map(|i| (i, i + p.len()))
        })
        .min()
}

/// A fresh scratch directory for one test, under Cargo's per-target temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("repl-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A REPL session on a pty, with everything the terminal has shown so far.
struct Repl {
    pty: PtySession,
    /// The whole transcript, escape sequences stripped.
    seen: String,
    /// How far [`Repl::wait_for`] has consumed the transcript.
    pos: usize,
    /// Numbers the markers of [`Repl::sync`].
    syncs: u32,
}

impl Repl {
    /// Starts `vm repl ARGS...` from the repository root, keeping its history in `history`, and
    /// waits for the first prompt; returns the session and what it printed before the prompt.
    fn start(args: &[&str], history: &Path) -> (Repl, String) {
        Repl::start_in(&repo_root(), args, history)
    }

    /// As [`Repl::start`], in `dir` (short file names keep a command within the terminal's 80
    /// columns, which the line editor would otherwise wrap).
    fn start_in(dir: &Path, args: &[&str], history: &Path) -> (Repl, String) {
        let mut cmd = Command::new(VM);
        cmd.arg("repl")
            .args(args)
            .current_dir(dir)
            .env("VM_HISTORY", history)
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            // The heartbeat's warnings would land between a command and its output on a loaded
            // machine (a count of what an actor holds, which walks every box it reaches, is a
            // pause a debug build can take 100 ms for): the golden harness raises the threshold
            // for the same reason, and no REPL test is about the heartbeat.
            .env("VM_HOG_THRESHOLD_MS", "600000")
            .env_remove("RUST_LOG");
        let options = Options::default().timeout_ms(Some(WAIT_MS)).strip_ansi_escape_codes(true);
        let pty = spawn_with_options(cmd, options).unwrap_or_else(|e| panic!("cannot start {VM} repl: {e}"));
        let mut repl = Repl { pty, seen: String::new(), pos: 0, syncs: 0 };
        let banner = repl.prompt();
        (repl, banner)
    }

    /// Reads what the terminal shows until `found` says the transcript from `from` on has what
    /// is awaited; fails after [`WAIT_MS`].
    fn read_until(&mut self, from: usize, what: &str, found: impl Fn(&str) -> Option<usize>) -> usize {
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        loop {
            if let Some(i) = found(&self.seen[from..]) {
                return from + i;
            }
            let mut got = false;
            while let Some(c) = self.pty.try_read() {
                self.seen.push(c);
                got = true;
            }
            if !got {
                if Instant::now() > deadline {
                    let tail: String = self.seen[from..]
                        .chars()
                        .rev()
                        .take(2000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    panic!(
                        "waited {WAIT_MS} ms for {what}; the terminal showed since:\n{tail}\n(as a string: {tail:?})"
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Consumes the transcript up to and including `needle`; returns what came before it.
    fn wait_for(&mut self, needle: &str) -> String {
        let from = self.pos;
        let at = self.read_until(from, &format!("{needle:?}"), |t| t.find(needle));
        self.pos = at + needle.len();
        self.seen[from..at].to_string()
    }

    /// Consumes the transcript up to and including the next new prompt; returns what came
    /// before it.
    fn prompt(&mut self) -> String {
        let from = self.pos;
        let start = self.read_until(from, "a new prompt", |t| new_prompt(t).map(|(start, _)| start));
        let (_, end) = new_prompt(&self.seen[start..]).expect("the prompt found just now");
        self.pos = start + end;
        self.seen[from..start].to_string()
    }

    /// Waits until `needle` has been shown anywhere after transcript position `mark`, without
    /// consuming anything (for output that comes whenever an actor prints); returns where it ends.
    fn shown_since(&mut self, mark: usize, needle: &str) -> usize {
        self.read_until(mark, &format!("{needle:?}"), |t| t.find(needle)) + needle.len()
    }

    /// Types `keys` without Enter.
    fn keys(&mut self, keys: &str) {
        self.pty.send(keys).expect("typing into the pty");
        self.pty.flush().expect("typing into the pty");
    }

    /// Waits until a line equal to `want` has been shown anywhere after transcript position
    /// `mark` (a line drawn over the prompt counts too), without consuming anything.
    fn line_since(&mut self, mark: usize, want: &str) {
        let what = format!("a line {want:?}");
        self.read_until(mark, &what, |t| {
            let mut at = 0;
            for piece in t.split_inclusive(['\r', '\n']) {
                let line = piece.trim_end_matches(['\r', '\n']);
                // Only a finished line: the last piece may still be growing.
                if piece.len() > line.len() && line.trim_start_matches(PROMPT).trim() == want {
                    return Some(at);
                }
                at += piece.len();
            }
            None
        });
    }

    /// The transcript position to search later output from.
    fn mark(&self) -> usize {
        self.seen.len()
    }

    /// Types `line` and Enter, waits for its echo and the next prompt, and returns the lines shown
    /// in between, trimmed, without empty ones.
    fn run(&mut self, line: &str) -> Vec<String> {
        self.pty.send_line(line).expect("typing into the pty");
        self.wait_for(line);
        lines(&self.prompt())
    }

    /// Like [`Repl::run`], and the output must be exactly `want`.
    fn expect(&mut self, line: &str, want: &[&str]) {
        let shown = self.run(line);
        assert_eq!(shown, want, "`{line}`");
    }

    /// Catches up with the terminal: types a comment (which does nothing) and waits for it and
    /// the prompt after it, so output that came at any time before is behind us.
    fn sync(&mut self) {
        self.syncs += 1;
        let marker = format!("; sync {}", self.syncs);
        self.run(&marker);
    }

    /// Ends the session with `quit` and checks its exit status.
    fn quit(mut self) {
        self.pty.send_line("quit").expect("typing");
        self.pty.exp_eof().expect("the REPL ends after quit");
        assert_exited_ok(&self.pty);
    }
}

fn assert_exited_ok(pty: &PtySession) {
    let status = pty.process().wait().expect("exit status");
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

/// Non-empty trimmed lines.
fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local address").port()
}

/// Connects to 127.0.0.1:`port`, retrying while the server is starting.
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_millis(WAIT_MS))).expect("read timeout");
                return s;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot connect to 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Sends `line` and returns the line that comes back.
fn echo(conn: &mut TcpStream, line: &str) -> String {
    conn.write_all(format!("{line}\n").as_bytes()).expect("writing to the server");
    let mut reader = BufReader::new(conn.try_clone().expect("cloning the connection"));
    let mut back = String::new();
    reader.read_line(&mut back).expect("reading the echo");
    back
}

/// Connecting must now be refused: nothing listens on the port any more.
fn assert_refused(port: u16) {
    // The listener is closed as its owner exits, which `kill` waited for; allow the OS a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            other if Instant::now() >= deadline => panic!("connecting after kill: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The `ps` line of the actor `pid`.
fn ps_line(repl: &mut Repl, pid: &str) -> Option<String> {
    let table = repl.run("ps");
    assert!(table.first().is_some_and(|h| h.starts_with("PID")), "ps showed {table:#?}");
    table.into_iter().find(|l| l.starts_with(&format!("{pid} ")))
}

#[test]
fn the_shipped_echo_server_is_spawned_used_and_killed() {
    let dir = scratch("echo");
    let (mut repl, banner) = Repl::start(&["--allow-net=127.0.0.1"], &dir.join("history"));
    assert!(banner.contains("type `help`"), "{banner}");
    let loaded = repl.run("load examples/echo.vasm");
    assert!(loaded.first().is_some_and(|l| l.starts_with("loaded examples/echo.vasm: ")), "{loaded:#?}");
    let port = free_port();
    let mark = repl.mark();
    // The pid, and maybe already the server's first line: they are printed by two threads.
    let spawned = repl.run(&format!("spawn main {port}"));
    let pid = spawned.iter().find(|l| l.starts_with('<') && l.ends_with('>')).cloned();
    let pid = pid.unwrap_or_else(|| panic!("spawn prints the pid: {spawned:#?}"));
    // The server's own output appears (above the prompt, whenever it comes).
    repl.shown_since(mark, &format!("listening on 127.0.0.1:{port}"));
    repl.sync();

    let mut conn = connect(port);
    assert_eq!(echo(&mut conn, "hello through the repl"), "hello through the repl\n");
    let line = ps_line(&mut repl, &pid).unwrap_or_else(|| panic!("{pid} is not in ps"));
    assert!(line.contains("accept_loop:"), "{line}");

    repl.expect(&format!("kill {pid}"), &[]);
    assert!(ps_line(&mut repl, &pid).is_none(), "{pid} is still listed after kill");
    assert_refused(port);
    repl.expect("eval int r0, 2; int r1, 3; add r0, r0, r1; ret r0", &["5"]);
    repl.quit();
}

#[test]
fn a_session_with_servers_counters_and_mistakes() {
    let dir = scratch("session");
    let (mut repl, banner) =
        Repl::start(&["--allow-net=127.0.0.1", "tests/programs/repl/server.vasm"], &dir.join("history"));
    assert!(
        banner.contains("loaded tests/programs/repl/server.vasm: 3 functions (serve, echo, count)"),
        "{banner}"
    );

    // Arithmetic, and the result of a snippet that falls through is r0.
    repl.expect("eval int r0, 2; int r1, 3; add r0, r0, r1; ret r0", &["5"]);
    repl.expect("eval int r0, 40; addi r0, r0, 2", &["42"]);

    // A server: spawned, used, seen, inspected, killed. (The two snippets were <1> and <2>.)
    let port = free_port();
    let mark = repl.mark();
    // The pid, and maybe already the server's first line: they are printed by two threads.
    let spawned = repl.run(&format!("spawn serve {port}"));
    assert!(spawned.iter().any(|l| l == "<3>"), "{spawned:#?}");
    repl.shown_since(mark, &format!("listening on 127.0.0.1:{port}"));
    repl.sync();
    let mut conn = connect(port);
    assert_eq!(echo(&mut conn, "ping"), "ping\n");
    let line = ps_line(&mut repl, "<3>").expect("the server is in ps");
    assert!(line.contains(":server") && line.contains("serve:"), "{line}");
    let handler = ps_line(&mut repl, "<4>").expect("the connection's actor is in ps");
    assert!(handler.contains("echo:"), "{handler}");
    let info = repl.run("info :server");
    assert_eq!(info.first().map(String::as_str), Some("<3>"), "{info:#?}");
    assert!(info.iter().any(|l| l == "name:          :server"), "{info:#?}");
    assert!(info.iter().any(|l| l.starts_with("#res<")), "the listener is listed: {info:#?}");
    repl.expect("kill :server", &[]);
    assert!(ps_line(&mut repl, "<3>").is_none(), "the server is still listed after kill");
    assert_refused(port);
    // The connection already made is still served by its own actor.
    assert_eq!(echo(&mut conn, "still here"), "still here\n");
    repl.expect("info 3", &["<3> is not alive; its last records:", "exited with reason :killed"]);

    // A counter whose output appears above the prompt, traced.
    repl.expect("spawn count 0", &["<5>"]);
    repl.expect("trace <5> on", &["tracing <5>"]);
    let mark = repl.mark();
    repl.pty.send_line("send <5> 40").expect("typing");
    let printed = repl.shown_since(mark, "[trace <5>] effect: print \"40\"");
    repl.shown_since(printed, "[trace <5>] effect: receive");
    repl.sync();
    repl.expect("trace 5 off", &["stopped tracing <5>"]);
    let mark = repl.mark();
    repl.pty.send_line("send 5 2").expect("typing");
    repl.line_since(mark, "42");
    repl.sync();
    // A message it cannot add raises inside it and is caught there; `info` lists it.
    repl.expect("send 5 :x", &[]);
    // Messages are taken in order: once 3 is added, :x has been dealt with.
    let mark = repl.mark();
    repl.pty.send_line("send 5 3").expect("typing");
    repl.line_since(mark, "45");
    repl.sync();
    let info = repl.run("info 5");
    assert!(
        info.iter().any(|l| l.contains("exception type_error") && l.contains("and caught")),
        "the caught exception is listed: {info:#?}"
    );

    // Mistakes print an error and the REPL goes on.
    repl.expect("frobnicate", &["error: unknown command `frobnicate` (type `help` for the list)"]);
    let bad_value = repl.run("send <5> {1,");
    assert!(bad_value.len() == 1 && bad_value[0].starts_with("error: malformed value: "), "{bad_value:#?}");
    repl.expect("kill <999>", &["error: no live actor <999>"]);
    let bad_eval = repl.run("eval ad r0, r0, r0");
    assert!(bad_eval[0].starts_with("error: in instruction 1 (`ad r0, r0, r0`): "), "{bad_eval:#?}");
    repl.expect("eval int r0, 7", &["7"]);

    // Tab completes commands and function names. (`eval int r0, 7` was <6>.)
    // The line is redrawn in pieces, so only the outcome tells: a pid, which `sp` or `count`
    // without its argument would not give.
    repl.keys("sp\t cou\t 1\r");
    let shown = lines(&repl.prompt());
    assert_eq!(shown.last().map(String::as_str), Some("<7>"), "{shown:#?}");

    // Ctrl-C stops a running eval, not the session.
    let spin = "eval const r1, :spin; print r1; loop: jmp loop";
    repl.pty.send_line(spin).expect("typing");
    repl.wait_for(spin);
    repl.wait_for(":spin");
    std::thread::sleep(Duration::from_millis(100));
    repl.pty.send_control('c').expect("Ctrl-C");
    repl.wait_for("error: interrupted (Ctrl-C)");
    repl.prompt();
    repl.expect("eval int r0, 1", &["1"]);
    assert!(ps_line(&mut repl, "<8>").is_none(), "the snippet's actor is gone");
    assert!(ps_line(&mut repl, "<5>").is_some(), "the other actors still run");

    // Ctrl-D quits with status 0.
    repl.pty.send_control('d').expect("Ctrl-D");
    repl.pty.exp_eof().expect("the REPL ends on Ctrl-D");
    assert_exited_ok(&repl.pty);
}

#[test]
fn history_is_kept_across_sessions() {
    let dir = scratch("history");
    let history = dir.join("history");
    let (mut first, _) = Repl::start(&[], &history);
    first.expect("eval int r0, 41; addi r0, r0, 1", &["42"]);
    first.quit();
    let saved = std::fs::read_to_string(&history).expect("the history file was written");
    assert!(saved.contains("eval int r0, 41; addi r0, r0, 1"), "{saved}");

    let (mut second, _) = Repl::start(&[], &history);
    // Up recalls the commands of the previous session, the last (`quit`) first; Enter runs the
    // one before it again.
    second.keys("\x1b[A");
    second.wait_for("quit");
    second.keys("\x1b[A");
    second.wait_for("eval int r0, 41; addi r0, r0, 1");
    second.pty.send_line("").expect("typing");
    assert_eq!(lines(&second.prompt()), ["42"]);
    second.quit();
}

/// Values nested 100,000 deep in a session (issue 20): `tests/programs/deep_values.vasm`'s
/// `main` spawned from the prompt builds one in a monitored child that dies with it and prints
/// after the DOWN; an `eval` returns one and the REPL prints it; the session goes on.
#[test]
fn values_nested_100_000_deep_leave_the_session_alive() {
    let dir = scratch("deep");
    let (mut repl, banner) = Repl::start(&["tests/programs/deep_values.vasm"], &dir.join("history"));
    assert!(banner.contains("loaded tests/programs/deep_values.vasm"), "{banner}");
    let mark = repl.mark();
    let spawned = repl.run("spawn main");
    assert!(spawned.iter().any(|l| l == "<1>"), "{spawned:#?}");
    repl.line_since(mark, "down");
    repl.line_since(mark, "alive");
    repl.sync();
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    repl.expect("eval int r1, 100000; call r0, build, r1, 1; ret r0", &[deep.as_str()]);
    repl.expect("eval int r0, 1", &["1"]);
    repl.quit();
}

/// `checkpoint`, three messages that change a counter's total, `rewind 1`: the counter is back
/// at its old total (`info` shows the actor at its receive, with no record of the kill), and
/// `snapshot FILE` writes a file that loads.
#[test]
fn checkpoint_and_rewind_travel_back_in_time() {
    let dir = scratch("rewind");
    let (mut repl, _) = Repl::start(&["tests/programs/repl/server.vasm"], &dir.join("history"));
    repl.expect("spawn count 0", &["<1>"]);
    let mark = repl.mark();
    repl.pty.send_line("send <1> 1").expect("typing");
    repl.line_since(mark, "1");
    repl.sync();
    repl.expect("checkpoint", &["checkpoint 1 (1 actors)"]);
    for (n, total) in [(10, "11"), (100, "111"), (1000, "1111")] {
        let mark = repl.mark();
        repl.pty.send_line(&format!("send <1> {n}")).expect("typing");
        repl.line_since(mark, total);
        repl.sync();
    }
    repl.expect("rewind 1", &["rewound to checkpoint 1 (1 actors)"]);
    let info = repl.run("info <1>");
    assert!(info.iter().any(|l| l == "state:         waiting: receive"), "{info:#?}");
    assert!(info.iter().any(|l| l == "exceptions:    none seen"), "{info:#?}");
    // The old total: 1 + 5.
    let mark = repl.mark();
    repl.pty.send_line("send <1> 5").expect("typing");
    repl.line_since(mark, "6");
    repl.sync();
    let file = dir.join("repl.snap");
    let shown = repl.run(&format!("snapshot {}", file.display()));
    assert_eq!(shown, [format!("1 actors written to {}", file.display())]);
    let bytes = std::fs::read(&file).expect("the snapshot file");
    let s = vm_core::snapshot::decode(&bytes).expect("the REPL's snapshot loads");
    assert_eq!(s.actors.len(), 1);
    repl.expect("rewind 2", &["error: there are 1 checkpoints"]);
    repl.quit();
}

/// Containers from the REPL: `start` two (the example's store without grants, its front with
/// one port), use them, `containers`, `ps --in`, `enter store` then `eval` in its module and with
/// its grants, `stop front` frees its port (binding it again succeeds), `restart front` serves
/// again.
#[test]
fn containers_are_started_entered_stopped_and_restarted() {
    let dir = scratch("containers");
    let (mut repl, _) = Repl::start_in(&repo_root().join("examples/containers"), &[], &dir.join("history"));
    let port = free_port();
    let mark = repl.mark();
    let started = repl.run("start store store.vasm");
    assert!(started.iter().any(|l| l == "started container store: root <1>"), "{started:#?}");
    repl.shown_since(mark, "[store] store ready");
    let mark = repl.mark();
    let started =
        repl.run(&format!("start front front.vasm --allow-net=127.0.0.1 --allow-lookup=store {port}"));
    assert!(started.iter().any(|l| l.starts_with("started container front: root <")), "{started:#?}");
    repl.shown_since(mark, &format!("[front] front listening on 127.0.0.1:{port}"));
    repl.sync();
    let mut conn = connect(port);
    assert_eq!(echo(&mut conn, "SET a 1"), "OK\n");
    assert_eq!(echo(&mut conn, "GET a"), "1\n");

    let table = repl.run("containers");
    assert!(table[0].starts_with("NAME") && table[0].ends_with("GRANTS"), "{table:#?}");
    let row = |name: &str| table.iter().find(|l| l.starts_with(&format!("{name} "))).cloned();
    let store = row("store").expect("store is listed");
    assert!(store.contains(" store.vasm ") && store.contains("running"), "{store}");
    assert!(store.ends_with("none"), "store has no grants: {store}");
    let front = row("front").expect("front is listed");
    assert!(front.ends_with("--allow-net=127.0.0.1 --allow-lookup=store"), "{front}");
    let ps = repl.run("ps --in store");
    assert_eq!(ps.len(), 2, "the header and store's root: {ps:#?}");
    assert!(ps[1].starts_with("<1> "), "{ps:#?}");

    // Outside any container no program is loaded; inside store, its module and its grants.
    let outside = repl.run("eval map r1; const r2, \"k\"; call r0, get, r1, 2");
    assert!(outside.iter().any(|l| l.contains("get")), "{outside:#?}");
    repl.expect("enter store", &["entered container store: spawn and eval run there"]);
    repl.expect("eval map r1; int r2, 7; mput r1, r1, r2, r2; call r0, get, r1, 2", &["7"]);
    let denied = repl.run("eval const r1, \"127.0.0.1:0\"; native r0, :tcp_listen, r1, 1");
    assert!(
        denied.iter().any(|l| l.contains("exception permission") && l.contains("--allow-net")),
        "{denied:#?}"
    );
    repl.expect("enter", &["left container store"]);

    repl.expect("stop front", &["stopped container front"]);
    TcpListener::bind(("127.0.0.1", port)).expect("front's port is free again after stop");
    let table = repl.run("containers");
    assert!(table.iter().any(|l| l.starts_with("front ") && l.contains(" ended ")), "{table:#?}");
    let mark = repl.mark();
    let restarted = repl.run("restart front");
    assert!(restarted.iter().any(|l| l.starts_with("restarted container front: root <")), "{restarted:#?}");
    repl.shown_since(mark, &format!("[front] front listening on 127.0.0.1:{port}"));
    repl.sync();
    let mut conn = connect(port);
    assert_eq!(echo(&mut conn, "GET a"), "1\n", "the store kept its data");
    repl.quit();
}

/// Containers started in the REPL are supervised by their restart types, as `vm up`'s: a
/// transient one that crashes is restarted until the restart intensity stops the loop (three
/// restarts by default); a transient one stopped with `stop` is not restarted.
#[test]
fn repl_containers_are_supervised_by_their_restart_types() {
    let dir = scratch("supervised");
    let (mut repl, _) =
        Repl::start_in(&repo_root().join("tests/programs/containers"), &[], &dir.join("history"));
    let mark = repl.mark();
    let started = repl.run("start flaky crash.vasm --restart=transient");
    assert!(started.iter().any(|l| l.starts_with("started container flaky: root <")), "{started:#?}");
    let end = repl.shown_since(mark, "restart intensity reached");
    let shown = &repl.seen[mark..end];
    assert_eq!(shown.matches("container flaky (transient) crashed with reason").count(), 4, "{shown}");
    assert_eq!(shown.matches("; restarting it").count(), 3, "{shown}");
    repl.sync();

    repl.run("start steady forever.vasm --restart=transient");
    repl.expect("stop steady", &["stopped container steady"]);
    // A restart would come at once; give it time to show.
    std::thread::sleep(Duration::from_millis(300));
    repl.sync();
    let table = repl.run("containers");
    assert!(table.iter().any(|l| l.starts_with("steady ") && l.contains(" ended ")), "{table:#?}");
    let bad = repl.run("start x crash.vasm --restart=sometimes");
    assert!(bad.iter().any(|l| l.contains("--restart=permanent, transient or temporary")), "{bad:#?}");
    repl.quit();
}

/// A snapshot of a session where a container still has actors is refused, naming the container
/// and what to do, and writes no file.
#[test]
fn a_snapshot_with_containers_running_is_refused_precisely() {
    let dir = scratch("snapshot_containers");
    let (mut repl, _) =
        Repl::start_in(&repo_root().join("tests/programs/containers"), &[], &dir.join("history"));
    let mark = repl.mark();
    repl.run("start steady forever.vasm");
    repl.shown_since(mark, "[steady] up");
    let file = dir.join("s.snap");
    let refused = repl.run(&format!("snapshot {}", file.display()));
    assert!(
        refused.iter().any(|l| l.contains("a VM of several containers cannot be snapshotted")
            && l.contains("container steady still has actors (stop it first")),
        "{refused:#?}"
    );
    assert!(!file.exists(), "nothing is written");
    repl.quit();
}
