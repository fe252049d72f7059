//! Clusters through the real `vm` binary: nodes (`vm run --node`, `vm node`) on real
//! nats-server processes on free loopback ports. The programs are in `tests/cluster/`; node `b`
//! serves `serve.vasm`'s functions. What each test shows:
//! - 10,000 request/reply round trips, then 4 senders × 100,000 messages with each sender's
//!   order kept and nothing lost, or else a node-down reported on both sides first, never a
//!   silent gap (`roundtrip.vasm`, the sink in `serve.vasm`; the direct path too);
//! - operations on another node's actors keep their local semantics: the exception reason of a
//!   linked crash, `:undef`, `:noconnection` at once, `:noproc`, kill/exit/interrupt, the
//!   refusals of what cannot cross, `:too_large`, `{name, node}` sends (`remote.vasm`);
//! - a node whose only worker is held by a slice that does not end is not declared down
//!   (`busy.vasm`);
//! - `kill -9` of a node: 1,000 links and monitors each fire `:noconnection` exactly once,
//!   within 3.5 s (`watch.vasm`);
//! - references: unique across nodes and incarnations, intact across the wire (`refs.vasm`);
//! - global names: two nodes racing for 100 names, exactly one winner each (`global.vasm`);
//! - `kill -9` of the server a node is connected to (three routed servers): every message
//!   arrives in order after the reconnect, or both sides see the session end and a new one
//!   starts; never a silent gap (`stream.vasm`);
//! - a partition between two routed servers: both sides see node-down within 5 s, then node-up
//!   and a working `spawn_on` after healing (`partition.vasm`);
//! - `vm nodes` lists the live nodes; a name in use is refused;
//! - `vm repl --node`: `nodes`, remote pids in `info`, `kill` of another node's actor.
#![allow(clippy::print_stderr, reason = "a test harness: it reports the timings it measured")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vm_tests::{repo_root, run_with_timeout};

// nats-server processes and the partition proxy, shared with vm-dist's own cluster tests.
#[path = "../../vm-dist/tests/common/servers.rs"]
mod servers;
use servers::{NatsServer, Proxy, free_port, monitor_get};

const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

fn program(name: &str) -> String {
    repo_root().join("tests/cluster").join(name).to_string_lossy().into_owned()
}

/// A `vm` process whose standard output is read line by line as it comes, each line with the
/// time it arrived; killed with SIGKILL when dropped.
struct VmProcess {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl VmProcess {
    fn start(args: &[&str]) -> VmProcess {
        let mut child = Command::new(VM)
            .args(args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vm starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        VmProcess { child, lines, stderr }
    }

    /// `vm node --node NAME --cluster URL serve.vasm`, once it says it is up.
    fn node(name: &str, url: &str, extra: &[&str]) -> VmProcess {
        VmProcess::node_serving(name, url, &program("serve.vasm"), extra)
    }

    /// `vm node --node NAME --cluster URL FILE`, once it says it is up.
    fn node_serving(name: &str, url: &str, file: &str, extra: &[&str]) -> VmProcess {
        let mut args = vec!["node", "--node", name, "--cluster", url, "--heartbeat", "200ms"];
        args.extend_from_slice(extra);
        args.push(file);
        let p = VmProcess::start(&args);
        p.wait_stderr(&format!("node {name} is up"), Duration::from_secs(20));
        p
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_stderr(&self, text: &str, limit: Duration) {
        let t = Instant::now();
        while !self.stderr().contains(text) {
            assert!(t.elapsed() < limit, "no {text:?} on stderr within {limit:?}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next line of standard output, and when it arrived.
    fn line(&self, limit: Duration) -> (Instant, String) {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no output line within {limit:?}; stderr:\n{}", self.stderr()))
    }

    /// Waits for the process to exit; its status.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(t.elapsed() < limit, "vm did not exit within {limit:?}; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful leave.
    fn term(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `vm ARGS` to its end (at most `limit`); its status, stdout and stderr.
fn vm(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let out = run_with_timeout(Command::new(VM).args(args).current_dir(repo_root()), limit).unwrap();
    assert!(!out.timed_out, "vm {args:?} timed out; stderr:\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "vm {args:?} panicked:\n{}", out.stderr);
    (out.code, out.stdout, out.stderr)
}

/// What `roundtrip.vasm` on node `a` with node `b` must show: every round trip and every message
/// of the four streams in order, or a node-down reported before anything went missing (the
/// session ended: by design, messages in flight may then be lost). A gap with no node-down
/// before it (`{:bad, ...}`), or anything else, is a failure. Both nodes' logs (each node-down
/// with its cause) are printed when the run did not complete.
fn assert_ordered_or_node_down(code: Option<i32>, out: &str, a_err: &str, b: &VmProcess) {
    if (code, out) == (Some(0), "10000\n{:ok, 400000}\n") {
        return;
    }
    let logs = format!("stdout of a:\n{out}\nstderr of a:\n{a_err}\nstderr of b:\n{}", b.stderr());
    let down = out.lines().any(|l| l == "{:nodedown, :b}");
    assert!(
        code == Some(0) && down && !out.contains(":bad"),
        "neither every message in order nor a node-down first:\n{logs}"
    );
    eprintln!("the stream ended with a node-down (reported, so no silent gap):\n{logs}");
}

#[test]
fn round_trips_and_four_ordered_streams() {
    let s = NatsServer::start("");
    let b = VmProcess::node("b", &s.url(), &[]);
    let prog = program("roundtrip.vasm");
    let t = Instant::now();
    let (code, out, err) = vm(
        &["run", "--node", "a", "--cluster", &s.url(), "--heartbeat", "200ms", &prog, "10000", "100000"],
        Duration::from_secs(240),
    );
    eprintln!("10,000 round trips and 4 x 100,000 messages in {:?} (debug build)", t.elapsed());
    assert_ordered_or_node_down(code, &out, &err, &b);
}

/// A node whose actors keep every worker busy (here its one worker runs a slice that does not
/// end, as a long run of remote sends or a long instruction would) still announces itself, so
/// its peers do not declare it down (issue 15: the pulse runs on a thread of its own).
#[test]
fn a_node_whose_workers_are_all_busy_is_not_declared_down() {
    let s = NatsServer::start("");
    let b = VmProcess::node("b", &s.url(), &["--workers", "1", "--fuel", "4000000000"]);
    let prog = program("busy.vasm");
    let (code, out, err) = vm(
        &["run", "--node", "a", "--cluster", &s.url(), "--heartbeat", "200ms", &prog, "400000000", "6000"],
        Duration::from_secs(60),
    );
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "steady\n"),
        "stderr of a:\n{err}\nstderr of b:\n{}",
        b.stderr()
    );
}

#[test]
fn remote_operations_keep_local_semantics() {
    // A small max_payload, so that a 128 KiB message is too large.
    let s = NatsServer::start("max_payload: 65536");
    let _b = VmProcess::node("b", &s.url(), &[]);
    let prog = program("remote.vasm");
    let (code, out, err) = vm(
        &["run", "--allow-net", "--node", "a", "--cluster", &s.url(), "--heartbeat", "200ms", &prog],
        Duration::from_secs(60),
    );
    let want = [
        ":a",
        "[:b]",
        "{:exception, :boom, \"bang\"}",
        "true",
        ":b",
        "0",
        ":undef",
        ":noconnection",
        ":noproc",
        ":noproc",
        ":killed",
        ":shutdown",
        "{:exception, :poke, \"from a\"}",
        "quiet",
        "{:not_distributable, :chan}",
        "{:not_distributable, :table}",
        "{:not_distributable, :resource}",
        ":too_large",
        ":after",
        ":hello",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "stderr:\n{err}");
    assert_eq!(code, Some(0), "stderr:\n{err}");
}

#[test]
fn kill_9_of_a_node_fires_each_link_and_monitor_once_within_3_5_s() {
    let s = NatsServer::start("");
    let mut b = VmProcess::node("b", &s.url(), &[]);
    let prog = program("watch.vasm");
    let mut a = VmProcess::start(&["run", "--node", "a", "--cluster", &s.url(), &prog, "1000"]);
    let (_, ready) = a.line(Duration::from_secs(60));
    assert_eq!(ready, ":ready");
    let killed = Instant::now();
    b.kill();
    let (at, fired) = a.line(Duration::from_secs(10));
    assert_eq!(fired, ":fired");
    let took = at - killed;
    eprintln!("1,000 links and monitors fired {took:?} after kill -9");
    assert!(took <= Duration::from_millis(3500), "took {took:?}");
    assert_eq!(a.line(Duration::from_secs(10)).1, "dups 0", "a link or monitor fired twice");
    assert_eq!(a.line(Duration::from_secs(5)).1, "{:nodedown, :b}");
    assert_eq!(a.wait(Duration::from_secs(10)), Some(0), "stderr:\n{}", a.stderr());
}

#[test]
fn references_are_unique_across_nodes_and_incarnations_and_cross_intact() {
    let s = NatsServer::start("");
    let _b = VmProcess::node("b", &s.url(), &[]);
    let prog = program("refs.vasm");
    let run = |mode: &str| {
        let (code, out, err) = vm(
            &["run", "--node", "a", "--cluster", &s.url(), "--heartbeat", "200ms", &prog, mode],
            Duration::from_secs(60),
        );
        assert_eq!(code, Some(0), "stderr:\n{err}");
        out
    };
    // The first run's reference goes to b and comes home equal to itself; b's own differs.
    assert_eq!(run("start"), "#Ref<0.1>\ntrue\ntrue\n#Ref<0.1>\nfalse\n0\n");
    // The next incarnation of a makes a reference with the same serial: b tells it apart from
    // the one it kept, which comes back to the new a as the old incarnation's, printed so.
    assert_eq!(run("again"), "#Ref<0.1>\nfalse\nfalse\n#Ref<a.1>\nfalse\n0\n");
}

#[test]
fn global_names_race_with_exactly_one_winner_each_time() {
    let s = NatsServer::start("jetstream { store_dir: \"$DIR/js\" }");
    let prog = program("global.vasm");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let start = (now_ms + 4000).to_string();
    let url = s.url();
    let run =
        |name: &str| VmProcess::start(&["run", "--node", name, "--cluster", &url, &prog, "100", &start]);
    let (mut a, mut b) = (run("a"), run("b"));
    let won = |p: &VmProcess| -> u32 {
        let (_, line) = p.line(Duration::from_secs(60));
        line.parse().unwrap_or_else(|_| panic!("{line:?}; stderr:\n{}", p.stderr()))
    };
    let (wa, wb) = (won(&a), won(&b));
    eprintln!("a won {wa}, b won {wb}");
    assert_eq!(wa + wb, 100, "two winners, or none, for some name");
    assert_eq!(a.wait(Duration::from_secs(10)), Some(0));
    assert_eq!(b.wait(Duration::from_secs(10)), Some(0));
}

#[test]
fn vm_nodes_lists_the_live_nodes_and_a_taken_name_is_refused() {
    let s = NatsServer::start("");
    let mut b = VmProcess::node("b", &s.url(), &[]);
    let _c = VmProcess::node("c", &s.url(), &[]);
    let (code, out, err) = vm(&["nodes", "--cluster", &s.url()], Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows[0], ["NODE", "INCARNATION", "ACTORS", "UPTIME"]);
    assert_eq!(rows.iter().skip(1).map(|r| r[0]).collect::<Vec<_>>(), ["b", "c"], "{out}");
    for r in &rows[1..] {
        assert!(r[1].parse::<u64>().unwrap() > 0 && r[2] == "0" && r[3].ends_with('s'), "{out}");
    }
    // A second node b does not start, and does not disturb the first.
    let serve = program("serve.vasm");
    let (code, _, err) = vm(&["node", "--node", "b", "--cluster", &s.url(), &serve], Duration::from_secs(20));
    assert_eq!(code, Some(2));
    assert!(err.contains("node name b is already in use in this cluster"), "{err}");
    // SIGTERM: b leaves gracefully and is gone from the list.
    b.term();
    assert_eq!(b.wait(Duration::from_secs(10)), Some(0), "{}", b.stderr());
    let (_, out, _) = vm(&["nodes", "--cluster", &s.url()], Duration::from_secs(20));
    assert_eq!(out.lines().skip(1).map(|l| l.split('\t').next().unwrap()).collect::<Vec<_>>(), ["c"]);
}

#[test]
fn a_partition_is_node_down_on_both_sides_and_healing_brings_them_back() {
    // s1 <- proxy <- s2: the only route between the servers goes through the proxy.
    let (route1, mon1, mon2) = (free_port(), free_port(), free_port());
    let s1 = NatsServer::start(&format!(
        "http_port: {mon1}\ncluster {{ name: vmtest, listen: 127.0.0.1:{route1} }}"
    ));
    let proxy = Proxy::start(route1);
    let s2 = NatsServer::start(&format!(
        "http_port: {mon2}\ncluster {{ name: vmtest, listen: 127.0.0.1:{}, routes: [\"nats-route://127.0.0.1:{}\"] }}",
        free_port(),
        proxy.port
    ));
    s1.wait_routes(mon1, 1);
    s2.wait_routes(mon2, 1);
    // Interest needs a moment to cross the route.
    std::thread::sleep(Duration::from_millis(300));
    let prog = program("partition.vasm");
    let mut a = VmProcess::start(&["run", "--node", "a", "--cluster", &s1.url(), &prog, "b"]);
    let mut b = VmProcess::start(&["run", "--node", "b", "--cluster", &s2.url(), &prog, "a"]);
    for p in [&a, &b] {
        assert_eq!(p.line(Duration::from_secs(30)).1, "up", "stderr:\n{}", p.stderr());
    }
    let cut = Instant::now();
    proxy.pause(true);
    for p in [&a, &b] {
        let (at, line) = p.line(Duration::from_secs(10));
        assert_eq!(line, "down", "stderr:\n{}", p.stderr());
        let took = at - cut;
        eprintln!("node-down seen {took:?} after the partition");
        assert!(took <= Duration::from_secs(5), "took {took:?}");
    }
    proxy.pause(false);
    for p in [&a, &b] {
        assert_eq!(p.line(Duration::from_secs(20)).1, "up again", "stderr:\n{}", p.stderr());
        assert_eq!(p.line(Duration::from_secs(20)).1, "spawn ok", "stderr:\n{}", p.stderr());
    }
    assert_eq!(a.wait(Duration::from_secs(20)), Some(0), "{}", a.stderr());
    assert_eq!(b.wait(Duration::from_secs(20)), Some(0), "{}", b.stderr());
}

#[test]
fn a_repl_node_lists_nodes_and_shows_remote_pids_as_such() {
    let s = NatsServer::start("");
    let _b = VmProcess::node("b", &s.url(), &[]);
    let serve = program("serve.vasm");
    let script = "nodes\nspawn link_b\neval int r0, 500; sleep r0\ninfo <1>\ninfo <b.1>\nkill <b.1>\n\
                  eval int r0, 300; sleep r0\ninfo <1>\nquit\n";
    let out = vm_tests::run_with_input(
        Command::new(VM)
            .args(["repl", "--node", "c", "--cluster", &s.url(), &serve])
            .current_dir(repo_root()),
        Some(script.as_bytes()),
        Duration::from_secs(60),
    )
    .unwrap();
    let text = out.stdout;
    assert_eq!(out.code, Some(0), "{text}\n{}", out.stderr);
    assert!(text.contains("node c is up"), "{text}");
    let b_row = text.lines().find(|l| l.starts_with("b ")).unwrap_or_else(|| panic!("no row for b: {text}"));
    assert!(b_row.contains("ms ago"), "{b_row}");
    assert!(text.contains("(this node: c)"), "{text}");
    // The local actor's link to b's actor shows that actor as b's.
    assert!(text.lines().any(|l| l.trim() == "links:         <b.1>"), "{text}");
    assert!(text.contains("<b.1>\n  node:          b (incarnation"), "{text}");
    // Killing b's actor from here ends the local actor linked to it.
    assert!(text.contains("<1> is not alive") && text.contains("exited with reason :killed"), "{text}");
}

/// With `--cluster-direct` on both nodes, round trips and four ordered streams go over their
/// TCP connection (the REPL's `nodes` shows the path), with the same results as through NATS.
#[test]
fn the_direct_path_carries_round_trips_and_ordered_streams() {
    let s = NatsServer::start("");
    let direct = ["--cluster-direct", "127.0.0.1:0"];
    let b = VmProcess::node("b", &s.url(), &direct);
    let prog = program("roundtrip.vasm");
    let t = Instant::now();
    let (code, out, err) = vm(
        &[
            "run",
            "--node",
            "a",
            "--cluster",
            &s.url(),
            "--heartbeat",
            "200ms",
            "--cluster-direct",
            "127.0.0.1:0",
            &prog,
            "10000",
            "100000",
        ],
        Duration::from_secs(240),
    );
    eprintln!("direct: 10,000 round trips and 4 x 100,000 messages in {:?} (debug build)", t.elapsed());
    assert_ordered_or_node_down(code, &out, &err, &b);
    // b (the smaller name) dials c once it hears of it; c's `nodes` then shows the path.
    let serve = program("serve.vasm");
    let out = vm_tests::run_with_input(
        Command::new(VM)
            .args(["repl", "--node", "c", "--cluster", &s.url(), "--cluster-direct", "127.0.0.1:0", &serve])
            .current_dir(repo_root()),
        Some(b"eval int r0, 1000; sleep r0\nnodes\nquit\n".as_slice()),
        Duration::from_secs(60),
    )
    .unwrap();
    let text = out.stdout;
    assert_eq!(out.code, Some(0), "{text}\n{}", out.stderr);
    let b_row = text.lines().find(|l| l.starts_with("b ")).unwrap_or_else(|| panic!("no row for b: {text}"));
    assert!(b_row.trim_end().ends_with("direct"), "{b_row}");
}

#[test]
fn kill_9_of_a_nodes_server_is_never_a_silent_gap() {
    // Three servers in a full mesh of routes; b stays on s3, a may be on s1 or s2 and fails over.
    let routes = [free_port(), free_port(), free_port()];
    let monitors = [free_port(), free_port(), free_port()];
    let mut servers: Vec<NatsServer> = (0..3)
        .map(|i| {
            let others: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("\"nats-route://127.0.0.1:{}\"", routes[j]))
                .collect();
            NatsServer::start(&format!(
                "http_port: {}\ncluster {{ name: vmtest, listen: 127.0.0.1:{}, routes: [{}] }}",
                monitors[i],
                routes[i],
                others.join(", ")
            ))
        })
        .collect();
    for (s, m) in servers.iter().zip(monitors) {
        s.wait_routes(m, 2);
    }
    std::thread::sleep(Duration::from_millis(300));
    let _b = VmProcess::node("b", &servers[2].url(), &[]);
    let both = format!("{},{}", servers[0].url(), servers[1].url());
    let prog = program("stream.vasm");
    let a =
        VmProcess::start(&["run", "--node", "a", "--cluster", &both, "--heartbeat", "200ms", &prog, "20000"]);
    assert_eq!(a.line(Duration::from_secs(60)).1, "started", "stderr:\n{}", a.stderr());
    // The server a is connected to (its connection is named after the node).
    let on = (0..2)
        .find(|i| monitor_get(monitors[*i], "/connz").contains("\"vm.vm.a."))
        .expect("a is on s1 or s2");
    servers[on].kill();
    let (_, outcome) = a.line(Duration::from_secs(30));
    eprintln!("after kill -9 of a's server: {outcome}");
    match outcome.as_str() {
        "ok" => {}
        ":noconnection" => assert_eq!(a.line(Duration::from_secs(30)).1, "new session ok", "{}", a.stderr()),
        other => panic!("a silent gap or worse: {other}; stderr:\n{}", a.stderr()),
    }
}

/// The README's cluster example (`examples/cluster/pool.vasm`) as a user runs it: jobs on two
/// `vm node`s; then again with one of them killed (`kill -9`) while it works, when every job is
/// still answered, rightly, by the node left, and the lost one is reported once.
#[test]
fn the_pool_example_spreads_its_jobs_and_survives_a_lost_node() {
    let s = NatsServer::start("");
    let pool = repo_root().join("examples/cluster/pool.vasm").to_string_lossy().into_owned();
    let _b = VmProcess::node_serving("b", &s.url(), &pool, &[]);
    let mut c = VmProcess::node_serving("c", &s.url(), &pool, &[]);
    let fib = |k: u64| (1..k).fold((0u64, 1u64), |(a, b), _| (b, a + b)).1;
    let answers = |n: u64, node: &dyn Fn(u64) -> &'static str| -> Vec<String> {
        (1..=n).map(|k| format!("fib({k}) = {} on {}", fib(k), node(k))).collect()
    };

    let (code, out, err) = vm(
        &["run", "--node", "a", "--cluster", &s.url(), "--heartbeat", "200ms", &pool, "12"],
        Duration::from_secs(60),
    );
    let mut want = vec!["pool: 12 jobs on 2 workers".to_owned()];
    want.extend(answers(12, &|k| if k % 2 == 0 { "b" } else { "c" }));
    want.extend(["the worker on b ended :normal".to_owned(), "the worker on c ended :normal".to_owned()]);
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "stderr:\n{err}");
    assert_eq!(code, Some(0), "stderr:\n{err}");

    // Node c's share of 30 jobs takes seconds in a debug build: it is killed in the middle.
    let mut a =
        VmProcess::start(&["run", "--node", "a", "--cluster", &s.url(), "--heartbeat", "200ms", &pool, "30"]);
    assert_eq!(a.line(Duration::from_secs(30)).1, "pool: 30 jobs on 2 workers");
    c.kill();
    assert_eq!(
        a.line(Duration::from_secs(10)).1,
        "lost the worker on c (:noconnection); its jobs go to the others"
    );
    for k in 1..=30 {
        let (_, line) = a.line(Duration::from_secs(120));
        let (head, node) = line.rsplit_once(" on ").unwrap_or_else(|| panic!("not an answer: {line}"));
        assert_eq!(head, format!("fib({k}) = {}", fib(k)), "stderr:\n{}", a.stderr());
        assert!(node == "b" || (node == "c" && k % 2 == 1), "job {k} answered by {node}");
    }
    assert_eq!(a.line(Duration::from_secs(10)).1, "the worker on b ended :normal");
    assert_eq!(a.wait(Duration::from_secs(10)), Some(0), "stderr:\n{}", a.stderr());
}
