//! The VM as a node of a cluster: vm-dist's [`vm_dist::Node`] wired into the runtime.
//!
//! [`join`] starts the node (its driver is a task spawned here) and installs it in the VM;
//! from then on the runtime routes what names another node's pid through it. The rules:
//! 1. **Local paths are unchanged.** A pid's high bits name its node slot (`Pid::slot`, 0 for
//!    this VM's own actors). The host reaches this module only where a local lookup fails (a
//!    send to a pid not in the actor table) or where the operand is a remote pid (links,
//!    monitors, exit signals, kills, interrupts); a VM that never joined pays nothing more.
//! 2. **Remote operations keep local semantics.** A link to a remote pid is recorded in both
//!    actors' link lists (so `info` shows it) and in vm-dist's bonds; a link or monitor to a
//!    node that is not up fires at once with `:noconnection`; a monitor of a remote pid that is
//!    gone answers `{:DOWN, ref, pid, :noproc}` (the other node checks). Exit signals, kills and
//!    interrupts arriving from other nodes take the same paths as local ones (`Vm::signal`).
//! 3. **A send to a node far behind suspends the sender** (`Begun::Send`): the host holds a
//!    future that waits for the peer to catch up, then sends; a message that cannot cross
//!    (a channel, a resource, a table; over the size limit) raises and nothing is sent.
//! 4. **Remote spawns** start a function of the module this VM runs, by name (`:undef` when
//!    there is none); the link or monitor the spawner asked for is recorded before the actor
//!    runs.
//! 5. **Deadlock.** A joined VM holds a [`Hold`] for as long as it is a node: input from
//!    another node can always arrive, so it is never reported deadlocked.
//! 6. **Ending.** When a local actor ends, its remote links and monitors hear of it, its monitors
//!    of remote actors are cancelled and its global names are freed (`Vm::finish` calls
//!    [`Membership::actor_exited`]).
//! 7. **The pulse runs on a thread of its own** (`vm-pulse`, a single-threaded runtime), with
//!    the NATS connection's task ([`join_nats`] connects there): announcing this node and
//!    judging the peers' silence (vm-dist's `node::pulse`) never waits behind actors on the
//!    workers, so a node whose actors keep every worker busy is not declared down, and does
//!    not declare its peers down for what it has not read yet (issue 15). The signals
//!    themselves (the driver, direct connections) stay on the workers, next to the actors
//!    they deliver to. The thread ends when the node leaves or is gone.

use crate::cell::ActorCell;
use crate::mailbox::Signal;
use crate::vm::{Hold, Shared, Vm};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use vm_core::{Atom, Closure, Exception, Handle, Module, Pid, SpawnOpts, Value, atoms};
use vm_dist::node::SendError;
use vm_dist::wire::EncodeError;
use vm_dist::{Config as NodeConfig, Local, Node, NodeId, SpawnError, SpawnOptions, Transport};
use vm_io::natives::{IoFuture, Started};

/// How to join a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The cluster's name (the subject prefix `vm.<cluster>`; nodes of one cluster share it).
    pub cluster: String,
    /// This node's name, unique among the cluster's live nodes.
    pub node: String,
    /// How often this node announces itself and checks its peers.
    pub heartbeat: Duration,
    /// Silence after which a peer is declared down.
    pub down_after: Duration,
    /// The NATS servers and how to log in.
    pub nats: vm_dist::NatsOptions,
    /// Where to take direct connections from peers (`None`: every signal goes through NATS).
    pub direct: Option<std::net::SocketAddr>,
}

impl ClusterOptions {
    /// Defaults (vm-dist's) for node `node` of cluster `cluster`, through the servers `urls`.
    pub fn new(cluster: &str, node: &str, urls: Vec<String>) -> ClusterOptions {
        let d = NodeConfig::new(cluster, node);
        ClusterOptions {
            cluster: cluster.into(),
            node: node.into(),
            heartbeat: d.heartbeat,
            down_after: d.down_after,
            nats: vm_dist::NatsOptions { urls, ..Default::default() },
            direct: d.direct,
        }
    }
}

/// The VM's membership in a cluster (in `Shared`, set once by [`join`]).
pub(crate) struct Membership {
    pub(crate) node: Node,
    /// Actors subscribed to each node's `{:nodeup, n}` / `{:nodedown, n}` (`monitor_node`).
    watchers: Mutex<HashMap<Atom, Vec<Pid>>>,
    /// The module whose functions remote spawns start (rule 4).
    serving: Arc<Mutex<Arc<Module>>>,
    /// Keeps the VM from being reported deadlocked while it is a node (rule 5).
    _hold: Hold,
}

impl Membership {
    /// Rule 6: local actor `pid` ended.
    pub(crate) fn actor_exited(&self, pid: Pid, reason: &Value) {
        self.node.actor_exited(pid, reason);
    }
}

/// Why a VM could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The NATS servers could not be reached, or refused the login.
    #[error("{0}")]
    Transport(#[from] vm_dist::transport::TransportError),
    /// A bad name, or the name is taken.
    #[error("{0}")]
    Start(#[from] vm_dist::StartError),
    /// The VM is a node already.
    #[error("this VM is already a node of a cluster")]
    Already,
    /// The pulse's thread could not be started.
    #[error("cannot start the cluster's pulse thread: {0}")]
    Thread(String),
}

/// The thread a node's pulse runs on, with its NATS connection (rule 7): a single-threaded
/// runtime that runs the pulse once it is given, and ends with it.
pub struct PulseThread {
    /// Where `join_nats` connects (not in loom builds, which have no NATS transport).
    #[cfg_attr(vm_loom, allow(dead_code, reason = "join_nats is not built under loom"))]
    handle: tokio::runtime::Handle,
    give: tokio::sync::oneshot::Sender<vm_dist::Pulse>,
}

impl PulseThread {
    /// Starts the thread; it waits for its pulse (and ends, dropping whatever was spawned on
    /// it, if none comes).
    pub fn start() -> std::io::Result<PulseThread> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (give, take) = tokio::sync::oneshot::channel::<vm_dist::Pulse>();
        std::thread::Builder::new().name("vm-pulse".into()).spawn(move || {
            rt.block_on(async move {
                if let Ok(pulse) = take.await {
                    pulse.run().await;
                }
            });
        })?;
        Ok(PulseThread { handle, give })
    }

    /// Runs `pulse` on the thread until it ends.
    fn run(self, pulse: vm_dist::Pulse) {
        let _ = self.give.send(pulse);
    }
}

/// Connects to the NATS servers of `opts` for node `opts.node` (the connection's client name
/// names the node, so the servers' disconnect notices do too).
#[cfg(not(vm_loom))]
pub async fn connect(opts: &ClusterOptions, incarnation: u64) -> Result<Arc<dyn Transport>, JoinError> {
    let mut nats = opts.nats.clone();
    nats.client_name = Some(vm_dist::node::client_name(&opts.cluster, &opts.node, incarnation));
    if nats.system.is_some() {
        // The system login's own name must not look like a node's.
        if let Some(sys) = nats.system.as_mut() {
            sys.client_name = Some(format!("vm-watch.{}.{}", opts.cluster, opts.node));
        }
    }
    Ok(Arc::new(vm_dist::NatsTransport::connect(&nats, &opts.cluster).await?))
}

/// A hash of what `module` does, announced to peers: function values cross only between nodes
/// whose hashes are equal.
fn module_hash(module: &Module) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    vm_core::bytecode::encode(module).hash(&mut h);
    h.finish()
}

/// Makes `vm` node `opts.node` of the cluster reached through `transport`, serving remote
/// spawns of `module`'s functions. Returns the node's incarnation.
/// With `pulse`, the node's pulse runs on that thread (rule 7); without, inside its driver.
pub async fn join(
    vm: &Vm,
    module: Arc<Module>,
    opts: &ClusterOptions,
    transport: Arc<dyn Transport>,
    incarnation: u64,
    pulse: Option<PulseThread>,
) -> Result<NodeId, JoinError> {
    if vm.shared.cluster.get().is_some() {
        return Err(JoinError::Already);
    }
    let mut cfg = NodeConfig::new(&opts.cluster, &opts.node);
    cfg.incarnation = Some(incarnation);
    cfg.heartbeat = opts.heartbeat;
    cfg.down_after = opts.down_after;
    cfg.direct = opts.direct;
    cfg.module_hash = module_hash(&module);
    let serving = Arc::new(Mutex::new(module));
    let local = Arc::new(VmLocal { shared: Arc::downgrade(&vm.shared), serving: serving.clone() });
    let (node, mut driver) = Node::start(cfg, transport, local).await?;
    if let (Some(thread), Some(p)) = (pulse, driver.take_pulse()) {
        thread.run(p);
    }
    let me = node.me().clone();
    let membership = Arc::new(Membership {
        node: node.clone(),
        watchers: Mutex::new(HashMap::new()),
        serving,
        _hold: vm.hold(),
    });
    if vm.shared.cluster.set(membership.clone()).is_err() {
        return Err(JoinError::Already);
    }
    tokio::spawn(driver.run(|t| drop(tokio::spawn(t))));
    vm.shared.io.set_cluster(Arc::new(Natives { shared: Arc::downgrade(&vm.shared), membership }));
    let namer = node.clone();
    vm_core::set_node_namer(Arc::new(move |slot| {
        namer.node_of(Pid::remote(slot, 0)).map(|id| id.name.clone())
    }));
    Ok(me)
}

/// Connects to the NATS servers and joins (see [`join`]), then waits until its own
/// announcement has come back through NATS and one heartbeat more, in which every live peer
/// announces itself: a program that starts after this sees the nodes that were up when it
/// started (`nodes()`, `spawn_on`).
#[cfg(not(vm_loom))]
pub async fn join_nats(vm: &Vm, module: Arc<Module>, opts: &ClusterOptions) -> Result<NodeId, JoinError> {
    let inc = NodeId::fresh_incarnation();
    let pulse = PulseThread::start().map_err(|e| JoinError::Thread(e.to_string()))?;
    // The NATS connection's task is spawned where `connect` runs: on the pulse's thread.
    let transport = {
        let opts = opts.clone();
        pulse.handle.spawn(async move { connect(&opts, inc).await })
    }
    .await
    .map_err(|e| JoinError::Thread(e.to_string()))??;
    let me = join(vm, module, opts, transport, inc, Some(pulse)).await?;
    // On a busy machine the peers' answers take longer than a heartbeat: they come once this
    // node's own announcement has been through NATS, so wait for that too.
    if let Some(node) = vm.node() {
        node.wait_echo(opts.down_after).await;
    }
    tokio::time::sleep(opts.heartbeat + Duration::from_millis(50)).await;
    Ok(me)
}

/// The live nodes of the cluster `opts` names, seen from outside it (`vm nodes`).
#[cfg(not(vm_loom))]
pub async fn census(opts: &ClusterOptions) -> Result<Vec<vm_dist::NodeInfo>, JoinError> {
    let mut nats = opts.nats.clone();
    nats.client_name = Some(format!("vm-census.{}", opts.cluster));
    nats.system = None;
    let transport = vm_dist::NatsTransport::connect(&nats, &opts.cluster).await?;
    let wait = opts.heartbeat * 2 + Duration::from_millis(100);
    Ok(vm_dist::census::census(&transport, &opts.cluster, wait).await?)
}

impl Vm {
    /// The VM's node, if it joined a cluster.
    pub fn node(&self) -> Option<&Node> {
        self.shared.cluster.get().map(|m| &m.node)
    }

    /// Serves remote spawns of `module`'s functions from now on (the REPL's newest program).
    pub fn serve_module(&self, module: Arc<Module>) {
        if let Some(m) = self.shared.cluster.get() {
            *m.serving.lock().unwrap_or_else(|p| p.into_inner()) = module;
        }
    }

    /// Leaves the cluster gracefully (peers see it at once); the VM stays a node no more.
    pub async fn leave_cluster(&self) {
        if let Some(m) = self.shared.cluster.get() {
            m.node.leave().await;
        }
    }
}

/// The exception an [`EncodeError`] raises in the sender.
fn encode_exception(e: &EncodeError) -> Exception {
    match e {
        EncodeError::NotDistributable(kind) => {
            Exception { kind: Atom::new("not_distributable"), msg: Value::atom(kind) }
        }
        EncodeError::TooLarge { .. } => Exception::new(Atom::new("too_large"), e.to_string()),
        EncodeError::TooDeep(_) => Exception::new(Atom::new("too_deep"), e.to_string()),
        EncodeError::BadPid => Exception::new(atoms::BADARG, e.to_string()),
    }
}

fn noconnection() -> Value {
    Value::atom("noconnection")
}

/// What a send to another node did (rule 3).
pub(crate) enum Remote {
    /// Sent (or dropped as a send to a node that is down is).
    Sent,
    /// Held: the sender waits on this, which sends when the peer has room.
    Wait(IoFuture),
    /// Refused: nothing was sent.
    Refused(Exception),
}

fn remote_result(
    r: Result<(), SendError>,
    retry: impl Fn() -> Result<(), SendError> + Send + 'static,
) -> Remote {
    match r {
        Ok(()) | Err(SendError::NoConnection(_)) => Remote::Sent,
        Err(SendError::Encode(e)) => Remote::Refused(encode_exception(&e)),
        Err(SendError::Busy(mut congestion)) => Remote::Wait(Box::pin(async move {
            loop {
                congestion.wait().await;
                match retry() {
                    Ok(()) | Err(SendError::NoConnection(_)) => return Ok(Value::Nil),
                    Err(SendError::Encode(e)) => return Err(encode_exception(&e)),
                    Err(SendError::Busy(c)) => congestion = c,
                }
            }
        })),
    }
}

/// `send` from local `from` to `to`, a pid of another node.
pub(crate) fn send(vm: &Vm, from: Pid, to: Pid, msg: Value) -> Remote {
    let Some(m) = vm.shared.cluster.get() else {
        // A pid of a node slot this VM never gave out: like a dead pid, the message is dropped.
        return Remote::Sent;
    };
    let node = m.node.clone();
    let first = node.send(from, to, &msg);
    remote_result(first, move || node.send(from, to, &msg))
}

/// `send` to `{name, node}`.
pub(crate) fn send_named(
    vm: &Vm,
    from: Pid,
    name: Atom,
    node_name: Atom,
    msg: Value,
) -> Result<Remote, Exception> {
    let Some(m) = vm.shared.cluster.get() else {
        return Err(Exception::badarg(format!(
            "send: {{{}, {}}} names a node, and this VM is not a node of a cluster",
            Value::Atom(name).repr(),
            Value::Atom(node_name).repr()
        )));
    };
    if *m.node.me().name == *node_name.name() {
        // This node: the local registry, where an unknown name drops the message as a remote
        // node would.
        if let Some(pid) = vm.whereis(name) {
            vm.shared.io.transfer(&msg, from.0, pid.0);
            vm.send(pid, msg);
        }
        return Ok(Remote::Sent);
    }
    let node = m.node.clone();
    let peer = node_name.name();
    let first = node.send_named(&peer, name, &msg);
    Ok(remote_result(first, move || node.send_named(&peer, name, &msg)))
}

/// Whether `op` names a pid of another node (rule 1: the host's one check per operation).
pub(crate) fn is_remote(op: &vm_core::ActorOp) -> bool {
    use vm_core::ActorOp::*;
    match op {
        Link(p) | Unlink(p) | Monitor(p) | Exit(p, _) | Kill(p) | Interrupt(p, _, _) => !p.is_local(),
        Register(..) | Unregister(_) | Whereis(_) | Demonitor(_) | TrapExit(_) | MakeRef => false,
    }
}

/// An actor operation on a pid of another node (rule 2), by local actor `cell`.
pub(crate) fn control(vm: &Vm, cell: &ActorCell, op: vm_core::ActorOp) -> Result<Value, Exception> {
    use vm_core::ActorOp::*;
    let me = cell.pid;
    let node = vm.shared.cluster.get().map(|m| &m.node);
    match op {
        Link(pid) => {
            match node.map(|n| n.link(me, pid)) {
                Some(Ok(())) => cell.mailbox.with(|i| {
                    if !i.ext().links.contains(&pid) {
                        i.ext().links.push(pid);
                    }
                }),
                _ => vm.signal_cell(cell, Signal::Exit { from: pid, reason: noconnection() }),
            }
            Ok(Value::Nil)
        }
        Unlink(pid) => {
            cell.mailbox.with(|i| i.ext().links.retain(|p| *p != pid));
            if let Some(n) = node {
                n.unlink(me, pid);
            }
            Ok(Value::Nil)
        }
        Monitor(pid) => {
            let r = vm.next_ref();
            match node.map(|n| n.monitor(me, pid, r)) {
                Some(Ok(())) => cell.mailbox.with(|i| i.ext().monitoring.push((r, pid))),
                _ => vm.deliver(cell, down_message(r, pid, noconnection())),
            }
            Ok(Value::Int(r))
        }
        Exit(pid, reason) => {
            if let Some(n) = node {
                if reason == Value::Atom(atoms::KILL) {
                    n.kill(me, pid);
                } else {
                    n.exit(me, pid, &reason).map_err(|e| send_exception(&e))?;
                }
            }
            Ok(Value::Nil)
        }
        Kill(pid) => {
            if let Some(n) = node {
                n.kill(me, pid);
            }
            Ok(Value::Nil)
        }
        Interrupt(pid, exc, mode) => {
            if let Some(n) = node {
                n.interrupt(me, pid, exc.kind, &exc.msg, mode).map_err(|e| send_exception(&e))?;
            }
            Ok(Value::Nil)
        }
        Register(..) | Unregister(_) | Whereis(_) | Demonitor(_) | TrapExit(_) | MakeRef => {
            Err(Exception::badarg("not an operation on another node's actor"))
        }
    }
}

/// A kill or an interrupt of another node's actor from outside any actor (the REPL).
pub(crate) fn control_from_outside(vm: &Vm, op: vm_core::ActorOp) -> Result<(), Exception> {
    let node =
        &vm.shared.cluster.get().ok_or_else(|| Exception::badarg("this VM is not a node of a cluster"))?.node;
    let unreachable =
        |pid: Pid| Exception::new(Atom::new("noconnection"), format!("the node of {pid} is not up"));
    match op {
        vm_core::ActorOp::Kill(pid) => {
            node.live(&node.node_of(pid).ok_or_else(|| unreachable(pid))?.name)
                .ok_or_else(|| unreachable(pid))?;
            node.kill(Pid(0), pid);
            Ok(())
        }
        vm_core::ActorOp::Interrupt(pid, exc, mode) => {
            node.interrupt(Pid(0), pid, exc.kind, &exc.msg, mode).map_err(|e| send_exception(&e))
        }
        _ => Err(Exception::badarg("not an operation the REPL makes")),
    }
}

/// `demonitor` of monitor `r` on `target`, a pid of another node.
pub(crate) fn demonitor(vm: &Vm, watcher: Pid, target: Pid, r: i64) {
    if let Some(m) = vm.shared.cluster.get() {
        m.node.demonitor(watcher, target, r);
    }
}

fn send_exception(e: &SendError) -> Exception {
    match e {
        SendError::Encode(e) => encode_exception(e),
        other => Exception::new(Atom::new("noconnection"), other.to_string()),
    }
}

fn down_message(r: i64, pid: Pid, reason: Value) -> Value {
    Value::tuple(vec![Value::Atom(atoms::DOWN), Value::Int(r), Value::Pid(pid), reason])
}

/// What vm-dist asks of this VM (its [`Local`]); it holds the VM weakly, as the VM holds it.
struct VmLocal {
    shared: Weak<Shared>,
    serving: Arc<Mutex<Arc<Module>>>,
}

impl VmLocal {
    fn vm(&self) -> Option<Vm> {
        self.shared.upgrade().map(|shared| Vm { shared })
    }
}

impl Local for VmLocal {
    fn send(&self, to: Pid, msg: Value) {
        if let Some(vm) = self.vm() {
            vm.send(to, msg);
        }
    }

    fn send_named(&self, name: Atom, msg: Value) {
        if let Some(vm) = self.vm()
            && let Some(pid) = vm.whereis(name)
        {
            vm.send(pid, msg);
        }
    }

    fn spawn(
        &self,
        func: &str,
        args: Vec<Value>,
        opts: &SpawnOptions,
        parent: Pid,
        started: &mut dyn FnMut(Pid),
    ) -> Result<Pid, Atom> {
        let Some(vm) = self.vm() else { return Err(Atom::new("noproc")) };
        let module = self.serving.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(index) = module.func_index(func) else { return Err(Atom::new("undef")) };
        let fun = Closure { func: index, env: vec![] };
        let spawn_opts = SpawnOpts {
            link: opts.link,
            // The monitor's reference is the spawner's; it is recorded below, not made here.
            monitor: false,
            max_mailbox: opts.max_mailbox.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_frames: opts.max_frames,
            max_heap: opts.max_heap,
            // A remote spawn has no generator of the spawner's to draw from: the VM seeds it.
            seed: None,
            priority: None,
        };
        let mut before_start = |cell: &ActorCell| {
            if let Some(r) = opts.monitor {
                cell.mailbox.with(|i| i.ext().monitors.push((r, parent)));
            }
            started(cell.pid);
        };
        // A remote spawn runs in the node's default container, as `vm node` serves one module.
        let hooks = crate::vm::SpawnHooks { report: None, before_start: Some(&mut before_start) };
        vm.spawn_in(vm.default_container(), module, &fun, args, spawn_opts, Some(parent), hooks)
            .map(|(pid, _)| pid)
            .map_err(|e| e.kind)
    }

    fn is_alive(&self, pid: Pid) -> bool {
        self.vm().is_some_and(|vm| vm.lookup(pid).is_some())
    }

    fn exit_signal(&self, to: Pid, from: Pid, reason: Value, linked: bool) {
        let Some(vm) = self.vm() else { return };
        let Some(cell) = vm.lookup(to) else { return };
        if linked {
            cell.mailbox.with(|i| i.ext().links.retain(|p| *p != from));
        }
        let sig = match &reason {
            Value::Atom(a) if *a == atoms::KILL && !linked => Signal::Kill(Value::Atom(atoms::KILLED)),
            _ => Signal::Exit { from, reason },
        };
        vm.signal_cell(&cell, sig);
    }

    fn down(&self, watcher: Pid, r: i64, target: Pid, reason: Value) {
        let Some(vm) = self.vm() else { return };
        let Some(cell) = vm.lookup(watcher) else { return };
        cell.mailbox.with(|i| i.ext().monitoring.retain(|(x, _)| *x != r));
        vm.deliver(&cell, down_message(r, target, reason));
    }

    fn interrupt(&self, to: Pid, kind: Atom, msg: Value, mode: u8) {
        if let Some(vm) = self.vm() {
            vm.signal(to, Signal::Interrupt { exc: Exception { kind, msg }, mode });
        }
    }

    fn kill(&self, to: Pid, _from: Pid) {
        if let Some(vm) = self.vm() {
            vm.signal(to, Signal::Kill(Value::Atom(atoms::KILLED)));
        }
    }

    fn node_event(&self, node: &NodeId, up: bool) {
        let Some(vm) = self.vm() else { return };
        let Some(m) = vm.shared.cluster.get() else { return };
        let name = Atom::new(&node.name);
        let watchers = lock_watchers(&m.watchers).get(&name).cloned().unwrap_or_default();
        let tag = Value::atom(if up { "nodeup" } else { "nodedown" });
        for w in watchers {
            vm.send(w, Value::tuple(vec![tag.clone(), Value::Atom(name)]));
        }
    }

    fn actor_count(&self) -> u64 {
        self.vm().map_or(0, |vm| vm.live() as u64)
    }

    fn res_kind(&self, h: &Handle) -> &'static str {
        match h.payload() {
            Some(p) if p.is::<vm_io::table::Table>() => "table",
            _ => "resource",
        }
    }
}

fn lock_watchers(m: &Mutex<HashMap<Atom, Vec<Pid>>>) -> std::sync::MutexGuard<'_, HashMap<Atom, Vec<Pid>>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster natives' view of the membership (`vm_io::cluster`).
struct Natives {
    shared: Weak<Shared>,
    membership: Arc<Membership>,
}

impl Natives {
    fn node(&self) -> &Node {
        &self.membership.node
    }
}

fn global_exception(e: vm_dist::GlobalError) -> Exception {
    match e {
        vm_dist::GlobalError::AlreadyRegistered => {
            Exception::new(Atom::new("already_registered"), e.to_string())
        }
        vm_dist::GlobalError::Unsupported => Exception::new(atoms::UNSUPPORTED, e.to_string()),
        vm_dist::GlobalError::Store(msg) => Exception::new(Atom::new("store"), msg),
    }
}

impl vm_io::cluster::ClusterHook for Natives {
    fn node(&self) -> Atom {
        Atom::new(&self.node().me().name)
    }

    fn nodes(&self) -> Vec<Atom> {
        self.node().nodes().iter().map(|n| Atom::new(&n.id.name)).collect()
    }

    fn node_of(&self, pid: Pid) -> Option<Atom> {
        self.node().node_of(pid).map(|id| Atom::new(&id.name))
    }

    fn spawn_on(
        &self,
        caller: Pid,
        node: Atom,
        func: Atom,
        args: Vec<Value>,
        opts: Option<&Value>,
    ) -> Started {
        let opts = match opts.map(SpawnOpts::from_map).transpose() {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => return Started::Done(Err(e)),
        };
        let Some(vm) = self.shared.upgrade().map(|shared| Vm { shared }) else {
            return Started::Done(Err(Exception::new(Atom::new("noconnection"), "the VM is ending")));
        };
        let name = node.name();
        if *name == *self.node().me().name {
            // This node: a local spawn by name, with the same answers as a remote one.
            return Started::Done(spawn_here(&vm, caller, &func.name(), args, opts));
        }
        let r = opts.monitor.then(|| vm.next_ref());
        let wire = SpawnOptions {
            link: opts.link,
            monitor: r,
            max_mailbox: opts.max_mailbox.map(|n| n as u64),
            max_frames: opts.max_frames,
            max_heap: opts.max_heap,
        };
        if self.node().live(&name).is_none() {
            // Answered at once: nobody is there to ask.
            return Started::Done(Err(Exception::new(
                Atom::new("noconnection"),
                format!("spawn_on: node {name} is not up"),
            )));
        }
        let node = self.node().clone();
        let func = func.name();
        Started::Pending(Box::pin(async move {
            match node.spawn(caller, &name, &func, args, wire).await {
                Ok(pid) => {
                    if let Some(cell) = vm.lookup(caller) {
                        cell.mailbox.with(|i| {
                            if opts.link {
                                i.ext().links.push(pid);
                            }
                            if let Some(r) = r {
                                i.ext().monitoring.push((r, pid));
                            }
                        });
                    }
                    Ok(match r {
                        Some(r) => Value::tuple(vec![Value::Pid(pid), Value::Int(r)]),
                        None => Value::Pid(pid),
                    })
                }
                Err(SpawnError::NoConnection(n)) => {
                    Err(Exception::new(Atom::new("noconnection"), format!("spawn_on: node {n} is not up")))
                }
                Err(SpawnError::Timeout(n)) => {
                    Err(Exception::new(atoms::TIMEOUT, format!("spawn_on: node {n} did not answer")))
                }
                Err(SpawnError::Refused(kind)) => Err(Exception::new(
                    kind,
                    format!("spawn_on: node {name} cannot start {func}: {}", Value::Atom(kind).repr()),
                )),
                Err(SpawnError::Encode(e)) => Err(encode_exception(&e)),
            }
        }))
    }

    fn monitor_node(&self, caller: Pid, node: Atom, on: bool) {
        let mut w = lock_watchers(&self.membership.watchers);
        let list = w.entry(node).or_default();
        list.retain(|p| *p != caller);
        if on {
            list.push(caller);
        }
        drop(w);
        // A node that is not up now is reported down at once, as Erlang's `monitor_node` does.
        let is_me = *node.name() == *self.node().me().name;
        if on
            && !is_me
            && self.node().live(&node.name()).is_none()
            && let Some(vm) = self.shared.upgrade().map(|shared| Vm { shared })
        {
            vm.send(caller, Value::tuple(vec![Value::atom("nodedown"), Value::Atom(node)]));
        }
    }

    fn global_register(&self, name: Atom, pid: Pid) -> IoFuture {
        let node = self.node().clone();
        Box::pin(async move {
            node.global_register(name, pid).await.map_err(global_exception)?;
            Ok(Value::Nil)
        })
    }

    fn global_whereis(&self, name: Atom) -> IoFuture {
        let node = self.node().clone();
        Box::pin(async move {
            Ok(node.global_whereis(name).await.map_err(global_exception)?.map_or(Value::Nil, Value::Pid))
        })
    }

    fn global_unregister(&self, name: Atom) -> IoFuture {
        let node = self.node().clone();
        Box::pin(async move {
            node.global_unregister(name).await.map_err(global_exception)?;
            Ok(Value::Nil)
        })
    }
}

/// `spawn_on` naming this very node: a spawn of the function by name, `:undef` if there is none.
fn spawn_here(
    vm: &Vm,
    caller: Pid,
    func: &str,
    args: Vec<Value>,
    opts: SpawnOpts,
) -> Result<Value, Exception> {
    let cell = vm.lookup(caller).ok_or_else(|| Exception::new(atoms::NOPROC, "the caller has ended"))?;
    let module = cell.module.clone();
    let index = module
        .func_index(func)
        .ok_or_else(|| Exception::new(Atom::new("undef"), format!("spawn_on: no function {func}")))?;
    let fun = Closure { func: index, env: vec![] };
    let (pid, r) = vm.spawn(module, &fun, args, opts, Some(caller))?;
    if let Some(r) = r {
        cell.mailbox.with(|i| i.ext().monitoring.push((r, pid)));
    }
    Ok(match r {
        Some(r) => Value::tuple(vec![Value::Pid(pid), Value::Int(r)]),
        None => Value::Pid(pid),
    })
}
