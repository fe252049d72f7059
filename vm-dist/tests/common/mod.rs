//! Test support: a stand-in for the runtime (`FakeVm`, implementing `Local`), and real
//! nats-server processes on free loopback ports.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use vm_core::{Atom, Pid, Value};
use vm_dist::id::{serial_of, slot_of};
use vm_dist::node::{Config, Local, Node};
use vm_dist::wire::SpawnOptions;
use vm_dist::{MemBus, MemTransport, NodeId, Transport};

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
    /// While set, this VM's deliveries stall (a receiver far behind): set only through
    /// [`FakeVm::stall`], whose guard clears it.
    stall: std::sync::atomic::AtomicBool,
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

    /// Stalls this VM's deliveries until the returned guard is dropped. A test that fails
    /// while the VM is stalled unwinds through the guard, so it fails instead of hanging: the
    /// runtime's shutdown waits for every task, and the stalled delivery would never end.
    #[must_use = "the stall ends when the guard is dropped"]
    pub(crate) fn stall(&self) -> Stall<'_> {
        self.stall.store(true, std::sync::atomic::Ordering::SeqCst);
        Stall(self)
    }
}

/// A stalled [`FakeVm`]'s deliveries resume when this is dropped ([`FakeVm::stall`]).
pub(crate) struct Stall<'a>(&'a FakeVm);

impl Drop for Stall<'_> {
    fn drop(&mut self) {
        self.0.stall.store(false, std::sync::atomic::Ordering::SeqCst);
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

/// As [`fast`], with a failure detector that would take a minute: for tests of what a session
/// carries, which a stall of a loaded machine (the test process descheduled for longer than
/// `fast`'s 400 ms) must not end.
pub(crate) fn steady(cluster: &str, name: &str) -> Config {
    Config { down_after: Duration::from_secs(60), ..fast(cluster, name) }
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
    let task = tokio::spawn(driver.run(|t| drop(tokio::spawn(t))));
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
    let task = tokio::spawn(driver.run(|t| drop(tokio::spawn(t))));
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

/// `local` (an actor of `on`) as `from` writes its pid.
pub(crate) fn remote_pid(from: &FakeVm, on: &FakeVm, local: Pid) -> Pid {
    from.node().pid_of(on.node().me(), serial(local)).unwrap()
}

/// `n` actors on `a`, each watching a fresh actor on `b`: the even ones linked to it, the odd
/// ones monitoring it (reference = their index).
pub(crate) fn watch_remote_actors(a: &FakeVm, b: &FakeVm, n: i64) {
    for i in 0..n {
        let w = a.actor();
        let t = remote_pid(a, b, b.actor());
        if i % 2 == 0 {
            a.node().link(w, t).unwrap();
        } else {
            a.node().monitor(w, t, i).unwrap();
        }
    }
}

/// Cuts NATS between `a` and `b` (on transports `ta`, `tb`, with `b`'s actor `wb` linked to
/// `a`'s `wa`): both sides see nodedown within `within`, and the link fires once on each side.
pub(crate) async fn partition_until_down(
    bus: &MemBus,
    (a, b, ta, tb): (&FakeVm, &FakeVm, &MemTransport, &MemTransport),
    (wa, wb): (Pid, Pid),
    within: Duration,
) {
    bus.partition(ta, tb, true);
    until(within, || a.node_events("b") == [true, false] && b.node_events("a") == [true, false])
        .await
        .expect("both sides see nodedown");
    assert_eq!(a.exits_to(wa).len(), 1);
    assert_eq!(b.exits_to(wb).len(), 1);
}

/// Heals the cut of [`partition_until_down`]: both sides see nodeup within `within`.
pub(crate) async fn heal_until_up(
    bus: &MemBus,
    (a, b, ta, tb): (&FakeVm, &FakeVm, &MemTransport, &MemTransport),
    within: Duration,
) {
    bus.partition(ta, tb, false);
    until(within, || a.node_events("b").len() == 3 && b.node_events("a").len() == 3)
        .await
        .expect("nodeup after healing");
}

/// After healing: a linked spawn from `a` on `b` works, and `wa`'s link that fired at the
/// partition does not fire a second time.
pub(crate) async fn spawn_works_and_no_second_firing(a: &FakeVm, wa: Pid) {
    let p = a.actor();
    a.node()
        .spawn(p, "b", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .expect("spawn works");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.exits_to(wa).len(), 1, "no second firing");
}

pub(crate) fn is_remote(pid: Pid) -> bool {
    slot_of(pid) != 0
}

pub(crate) fn serial(pid: Pid) -> u64 {
    serial_of(pid)
}

// ---------------------------------------------------------------------------------------------
// nats-server processes

mod servers;
// (Each test binary compiles this module; the memory-bus tests use no server.)
#[allow(unused_imports)]
pub(crate) use servers::*;

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
