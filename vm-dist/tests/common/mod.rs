//! Test support: a stand-in for the runtime (`FakeVm`, implementing `Local`), and real
//! nats-server processes on free loopback ports.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use vm_core::{Atom, Pid, Value};
use vm_dist::id::{serial_of, slot_of};
use vm_dist::node::{Config, Local, Node};
use vm_dist::wire::SpawnOptions;
use vm_dist::{NodeId, Transport};

/// What the fake runtime saw.
#[derive(Default)]
pub(crate) struct Seen {
    next: u64,
    pub alive: HashSet<Pid>,
    pub mail: HashMap<Pid, VecDeque<Value>>,
    /// (to, from, reason, linked)
    pub exits: Vec<(Pid, Pid, Value, bool)>,
    /// (watcher, ref, target, reason)
    pub downs: Vec<(Pid, i64, Pid, Value)>,
    /// (node name, up)
    pub node_events: Vec<(String, bool)>,
    pub interrupts: Vec<(Pid, Atom, Value, u8)>,
    pub kills: Vec<(Pid, Pid)>,
    pub spawned: Vec<(Pid, String, Vec<Value>)>,
    pub names: HashMap<Atom, Pid>,
}

/// A stand-in for vm-sched: actors are entries in a set, mailboxes are queues.
pub(crate) struct FakeVm {
    pub seen: Mutex<Seen>,
    /// Set by a test to make this VM's deliveries stall (a receiver far behind).
    pub stall: std::sync::atomic::AtomicBool,
    pub node: OnceLock<Node>,
    /// When set, messages go here instead of into mailboxes (for tests that await them).
    pub tap: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(Pid, Value)>>>,
}

impl FakeVm {
    pub(crate) fn new() -> Arc<FakeVm> {
        Arc::new(FakeVm {
            seen: Mutex::default(),
            stall: Default::default(),
            node: OnceLock::new(),
            tap: Mutex::new(None),
        })
    }

    pub(crate) fn node(&self) -> &Node {
        self.node.get().expect("started")
    }

    /// A new local actor.
    pub(crate) fn actor(&self) -> Pid {
        let mut s = self.seen.lock();
        s.next += 1;
        let pid = Pid(s.next);
        s.alive.insert(pid);
        pid
    }

    /// Ends local actor `pid` with `reason`, as the runtime would (mark dead, then tell the node).
    pub(crate) fn exit(&self, pid: Pid, reason: Value) {
        self.seen.lock().alive.remove(&pid);
        self.node().actor_exited(pid, &reason);
    }

    pub(crate) fn mail(&self, pid: Pid) -> Vec<Value> {
        self.seen.lock().mail.get(&pid).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn exits_to(&self, pid: Pid) -> Vec<(Pid, Value)> {
        self.seen.lock().exits.iter().filter(|e| e.0 == pid).map(|e| (e.1, e.2.clone())).collect()
    }

    pub(crate) fn node_events(&self, name: &str) -> Vec<bool> {
        self.seen.lock().node_events.iter().filter(|e| e.0 == name).map(|e| e.1).collect()
    }
}

impl FakeVm {
    /// A stalled VM blocks the node's driver, as a runtime far behind would. `block_in_place`
    /// tells tokio so: the worker's other duties (the timers, the sockets' readiness) move to
    /// another thread, which a test's two-thread runtime needs once a node's own connection
    /// woke the stalled driver.
    fn wait_while_stalled(&self) {
        if self.stall.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::block_in_place(|| {
                while self.stall.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
    }
}

impl Local for FakeVm {
    fn send(&self, to: Pid, msg: Value) {
        self.wait_while_stalled();
        if let Some(tap) = &*self.tap.lock() {
            let _ = tap.send((to, msg));
            return;
        }
        let mut s = self.seen.lock();
        if s.alive.contains(&to) {
            s.mail.entry(to).or_default().push_back(msg);
        }
    }

    fn send_named(&self, name: Atom, msg: Value) {
        let to = self.seen.lock().names.get(&name).copied();
        if let Some(to) = to {
            self.send(to, msg);
        }
    }

    fn spawn(
        &self,
        func: &str,
        args: Vec<Value>,
        _opts: &SpawnOptions,
        parent: Pid,
        started: &mut dyn FnMut(Pid),
    ) -> Result<Pid, Atom> {
        self.wait_while_stalled();
        if !matches!(func, "worker" | "crash") {
            return Err(Atom::new("undef"));
        }
        let pid = {
            let mut s = self.seen.lock();
            s.next += 1;
            Pid(s.next)
        };
        started(pid);
        {
            let mut s = self.seen.lock();
            s.alive.insert(pid);
            s.spawned.push((pid, func.to_string(), args.clone()));
        }
        if func == "crash" {
            // The function raises at once: the actor ends with the reason a local crash has.
            let reason =
                Value::tuple(vec![Value::atom("exception"), Value::atom("badarith"), Value::str("boom")]);
            self.seen.lock().alive.remove(&pid);
            self.node().actor_exited(pid, &reason);
        }
        let _ = parent;
        Ok(pid)
    }

    fn is_alive(&self, pid: Pid) -> bool {
        self.seen.lock().alive.contains(&pid)
    }

    fn exit_signal(&self, to: Pid, from: Pid, reason: Value, linked: bool) {
        self.seen.lock().exits.push((to, from, reason, linked));
    }

    fn down(&self, watcher: Pid, r: i64, target: Pid, reason: Value) {
        self.seen.lock().downs.push((watcher, r, target, reason));
    }

    fn interrupt(&self, to: Pid, kind: Atom, msg: Value, mode: u8) {
        self.seen.lock().interrupts.push((to, kind, msg, mode));
    }

    fn kill(&self, to: Pid, from: Pid) {
        self.seen.lock().kills.push((to, from));
    }

    fn node_event(&self, node: &NodeId, up: bool) {
        self.seen.lock().node_events.push((node.name.to_string(), up));
    }

    fn actor_count(&self) -> u64 {
        self.seen.lock().alive.len() as u64
    }
}

/// Fast failure detection for tests.
pub(crate) fn fast(cluster: &str, name: &str) -> Config {
    Config {
        heartbeat: Duration::from_millis(50),
        down_after: Duration::from_millis(400),
        spawn_timeout: Duration::from_secs(3),
        ..Config::new(cluster, name)
    }
}

/// The direct path's listener for test nodes: `VM_CLUSTER_DIRECT` (e.g. `127.0.0.1:0`) runs
/// every test with the direct path on; unset, it is off (the default), except in the tests of
/// the direct path itself ([`direct`]).
pub(crate) fn direct_from_env() -> Option<std::net::SocketAddr> {
    let v = std::env::var("VM_CLUSTER_DIRECT").ok().filter(|v| !v.is_empty())?;
    Some(v.parse().expect("VM_CLUSTER_DIRECT is an address such as 127.0.0.1:0"))
}

/// `cfg` with the direct path on, on a free loopback port.
pub(crate) fn direct(cfg: Config) -> Config {
    Config { direct: Some("127.0.0.1:0".parse().unwrap()), ..cfg }
}

/// Starts a node on `transport` with a fresh fake VM; the driver runs on a tokio task.
pub(crate) async fn start(
    mut cfg: Config,
    transport: Arc<dyn Transport>,
) -> (Arc<FakeVm>, tokio::task::JoinHandle<()>) {
    if cfg.direct.is_none() {
        cfg.direct = direct_from_env();
    }
    let vm = FakeVm::new();
    let (node, driver) = Node::start(cfg, transport, vm.clone()).await.expect("node starts");
    vm.node.set(node).expect("once");
    let task = tokio::spawn(driver.run());
    (vm, task)
}

/// Starts a node that sends through NATS only, whatever `VM_CLUSTER_DIRECT` says: for tests
/// of what NATS itself does (a message it drops).
pub(crate) async fn start_nats_only(
    cfg: Config,
    transport: Arc<dyn Transport>,
) -> (Arc<FakeVm>, tokio::task::JoinHandle<()>) {
    let vm = FakeVm::new();
    let (node, driver) =
        Node::start(Config { direct: None, ..cfg }, transport, vm.clone()).await.expect("node starts");
    vm.node.set(node).expect("once");
    let task = tokio::spawn(driver.run());
    (vm, task)
}

/// Sends, waiting while the peer is congested (as a runtime suspends the sending actor).
pub(crate) async fn send(node: &Node, from: Pid, to: Pid, msg: &Value) {
    loop {
        match node.send(from, to, msg) {
            Ok(()) => return,
            Err(vm_dist::SendError::Busy(c)) => c.wait().await,
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

/// Polls `cond` every 2 ms until it holds or `within` passes; returns how long it took.
pub(crate) async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if cond() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cond().then(|| t.elapsed())
}

pub(crate) fn is_remote(pid: Pid) -> bool {
    slot_of(pid) != 0
}

pub(crate) fn serial(pid: Pid) -> u64 {
    serial_of(pid)
}

// ---------------------------------------------------------------------------------------------
// nats-server processes

/// A free TCP port on 127.0.0.1 (bound and released: another process may take it in between,
/// which the server start then reports).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A nats-server child process, killed with SIGKILL when dropped.
pub(crate) struct NatsServer {
    pub port: u16,
    pub cluster_port: u16,
    child: Option<Child>,
    dir: PathBuf,
    config: String,
}

pub(crate) fn nats_server_binary() -> &'static str {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("nats-server is not installed (apt-get install -y nats-server; .ci/run does this)")
}

impl NatsServer {
    /// A server with `extra` configuration (NATS config syntax) appended; pings every second so
    /// that dead routes and clients are noticed quickly.
    pub(crate) fn start(extra: &str) -> NatsServer {
        Self::start_on(free_port(), free_port(), extra)
    }

    pub(crate) fn start_on(port: u16, cluster_port: u16, extra: &str) -> NatsServer {
        let dir = std::env::temp_dir().join(format!("vm-dist-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "listen: 127.0.0.1:{port}\nping_interval: \"1s\"\nping_max: 2\nserver_name: s{port}\n{extra}\n"
        );
        let mut s = NatsServer { port, cluster_port, child: None, dir, config };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let conf = self.dir.join("nats.conf");
        std::fs::write(&conf, &self.config).unwrap();
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "nats-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL, as `kill -9` does.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again with the same configuration.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy on a free loopback port that forwards to `target` and can be paused: while
/// paused, bytes in both directions are held back (a partition that leaves the connections
/// open, as a dropped network does).
pub(crate) struct Proxy {
    pub port: u16,
    paused: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub(crate) fn start(target: u16) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (paused.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (from, to) in [
                            (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                            (outbound, inbound),
                        ] {
                            let (p, s) = (p.clone(), s.clone());
                            std::thread::spawn(move || pump(from, to, p, s));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, paused, stop }
    }

    pub(crate) fn pause(&self, on: bool) {
        self.paused.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    paused: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// Connects to NATS at `urls` as a node of cluster `cl`.
pub(crate) async fn nats(urls: &[String], cl: &str) -> Arc<vm_dist::NatsTransport> {
    let opts = vm_dist::NatsOptions { urls: urls.to_vec(), ..Default::default() };
    Arc::new(vm_dist::NatsTransport::connect(&opts, cl).await.expect("connects to nats-server"))
}

/// A node process (`vm-dist-node`), killed with SIGKILL when dropped.
pub(crate) struct NodeProcess {
    pub child: Child,
}

impl NodeProcess {
    pub(crate) fn start(urls: &str, cluster: &str, name: &str, busy: bool) -> NodeProcess {
        use std::io::BufRead;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-dist-node"));
        cmd.args([urls, cluster, name]);
        if busy {
            cmd.arg("busy");
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the node process did not start");
        NodeProcess { child }
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A graceful leave.
    pub(crate) fn leave(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        let _ = writeln!(stdin, "leave");
        let _ = stdin.flush();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
