//! The runtime: a set of actors on tokio's multi-thread executor.
//!
//! A [`Vm`] is a cheap handle on shared state: the actor registry (sharded by pid), the name
//! registry, counters, configuration, and the output sink. Every actor is one tokio task running
//! the driver loop in `actor` (step → on `Blocked`, await the effect raced against signals →
//! resume). This module does everything that involves more than one actor: spawning, routing
//! messages and signals, exit propagation over links and monitors, deadlock detection, and the
//! introspection API that `vm repl` uses.
//!
//! **Starting an actor** is [`Vm::spawn`]: the bookkeeping (limits, links, monitors, resources
//! handed over, the actor table), then [`spawn_actor`], the one place an actor's task is
//! spawned. The task runs the driver, which this module does not name: the VM keeps a pointer
//! to the function that starts it ([`StartActor`]), set by [`Vm::new`] in `actor`, so that the
//! driver and the host it builds (whose `spawn` calls back here) sit above this module, with
//! no import cycle.
//!
//! **Deadlock detection.** `active` counts the actors that are not parked indefinitely (running,
//! runnable, sleeping, waiting with a timeout, waiting on I/O), plus external holders such as a
//! REPL session. The mailbox wake protocol keeps it exact: an actor counts itself out when it
//! parks with no deadline, and whoever wakes it counts it back in *before* it could itself park
//! (see `mailbox`). So `active == 0` is stable: nobody is left who could wake anyone. The last
//! party to bring it to zero notifies `idle`; [`Vm::run_main`] then reports every actor with what
//! it waits on and where.
//!
//! **Exit propagation.** When an actor ends, its mailbox is closed (later sends are dropped), its
//! name is released, each linked actor gets an exit signal with the reason, and each monitor a
//! `{:DOWN, ref, pid, reason}` message. The exiting actor stays counted as active until all of
//! that is delivered, so the receivers are counted back in first.

// Re-exported: the cell is part of the VM's vocabulary (`Vm::lookup` returns one).
pub use crate::cell::{ActorCell, RunState};
use crate::container::{Container, ContainerEnd, ContainerSpec};
use crate::exit::ExitReason;
use crate::heartbeat::Heartbeat;
use crate::mailbox::{Delivery, Signal, Wait};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use crate::trace;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;
use vm_core::module::Location;
use vm_core::{ActorState, Atom, Closure, Exception, Fault, Module, Pid, SpawnOpts, Value, atoms};

/// Starts the task of a new actor (its driver, with its tracing span when there is one); see
/// the module docs.
pub(crate) type StartActor = fn(Vm, Arc<ActorCell>, ActorState, Option<tracing::Span>);

/// Spawns an actor's task, instrumented with its span when there is one: the one place actor
/// tasks are spawned.
pub(crate) fn spawn_actor(task: impl Future<Output = ()> + Send + 'static, span: Option<tracing::Span>) {
    match span {
        Some(span) => drop(tokio::spawn(task.instrument(span))),
        None => drop(tokio::spawn(task)),
    }
}

/// How actors' `print` output leaves the VM (stdout for `vm run`, above the prompt for the REPL).
pub trait Output: Send + Sync {
    /// Writes one line (the text has no trailing newline).
    fn line(&self, text: &str);
    /// Flushes buffered output.
    fn flush(&self) {}
    /// Writes bytes as they are (`stdout_write`), in order with the lines. The default writes
    /// them as one line with a trailing newline removed; sinks that can do better override it.
    fn write(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        self.line(text.strip_suffix('\n').unwrap_or(&text));
    }
}

/// The [`vm_io::Console`] of a VM: standard output through its [`Output`] (so `stdout_write`
/// and `print` stay in order), standard error straight to vm-io.
struct ConsoleOf(Arc<dyn Output>);

impl vm_io::Console for ConsoleOf {
    fn stdout(&self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    fn stderr(&self, bytes: &[u8]) {
        vm_io::stdio::write_stderr(bytes);
    }
}

/// Runtime settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Fuel per slice: an actor yields to tokio after this many calls and backward jumps. The
    /// default, 10,000, was chosen with `benches/programs/fairness.vasm` and `loop.vasm`
    /// (docs/BENCHMARKS.md): 2,000 made a busy loop pay ~25% for yields (each wakes an idle
    /// worker), while 50,000 let a 1 ms ticker beside four spinning actors fall late.
    pub fuel: u32,
    /// Default maximum frame depth of an actor.
    pub max_frames: u32,
    /// Maximum number of live actors; spawning past it raises `:limit`.
    pub max_actors: usize,
    /// The heartbeat reports (through tracing) an actor that holds a worker longer than this.
    pub hog_threshold_ms: u64,
    /// What programs may do (network, files); nothing by default.
    pub perms: vm_io::Permissions,
    /// The VM-wide memory budget in bytes (`vm run --max-memory`; see `budget`): past it, the
    /// actor holding the most is ended with `{:limit, :memory}`. Enforced only in a process
    /// that counts its allocations (`budget::install_memory_probe`).
    pub max_memory: Option<u64>,
    /// Where the random generators of the actors the runtime starts itself come from (the
    /// main actor first): the same seed gives the same seeds (see `vm_core::rng`). `None`:
    /// from the process's own randomness.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            fuel: 10_000,
            max_frames: vm_core::step::DEFAULT_MAX_FRAMES,
            max_actors: 4_000_000,
            hog_threshold_ms: 100,
            perms: vm_io::Permissions::default(),
            max_memory: None,
            seed: None,
        }
    }
}

const SHARDS: usize = 64;

/// Pids are sequential integers, so a multiplicative hash spreads them well; SipHash (the
/// default) showed up at 5% of a message-passing benchmark.
#[derive(Default)]
pub(crate) struct PidHasher(u64);

impl std::hash::Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PidMap = HashMap<u64, Arc<ActorCell>, std::hash::BuildHasherDefault<PidHasher>>;

pub(crate) struct Shared {
    pub(crate) config: Config,
    shards: Vec<Mutex<PidMap>>,
    names: Mutex<HashMap<Atom, Pid>>,
    next_pid: AtomicU64,
    next_ref: AtomicU64,
    next_chan: AtomicU64,
    /// The generator the runtime seeds actors from when no spawner does (see [`Vm::fresh_seed`]).
    seeds: Mutex<u64>,
    live: AtomicUsize,
    /// See the module docs: actors not parked indefinitely, plus external holders.
    pub(crate) active: AtomicUsize,
    pub(crate) idle: tokio::sync::Notify,
    /// An actor that asked (through `yieldto`) to run next, as `pid + 1`; 0 for none.
    pub(crate) boost: AtomicU64,
    pub(crate) output: Arc<dyn Output>,
    /// Where actors started with `spawn_reporting` (main, `eval` snippets) send their outcome.
    reporters: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Outcome>>>,
    /// How many `reporters` there are, so that other actors' exits skip the lock.
    reporting: AtomicUsize,
    /// Sockets, files, permissions: the state the natives share.
    pub(crate) io: Arc<vm_io::Io>,
    pub(crate) heartbeat: Arc<Heartbeat>,
    /// The threads of the affine natives.
    pub(crate) executors: crate::affine::Executors,
    /// Orphaned-channel detection's shared state (`chan::reach`; the detector is
    /// `chan::orphans`).
    pub(crate) orphans: Arc<crate::chan::reach::Orphans>,
    /// Starts an actor's driver task.
    start_actor: StartActor,
    start: Instant,
    /// Added to the clock: a restored VM's clock goes on from the snapshot's.
    clock_offset_ms: AtomicU64,
    /// The main actor's pid (0: none), which a snapshot records.
    main: AtomicU64,
    /// Snapshots pause the VM through this (see `pause`).
    pub(crate) pause: crate::pause::Pause,
    /// The VM-wide memory budget's state (see `budget`).
    pub(crate) budget: crate::budget::Budget,
    /// Wakeup priorities (see `prio`).
    pub(crate) prio: crate::prio::Prio,
    /// The container of actors started from outside (see `container`, rule 1).
    default_container: Arc<Container>,
    /// The containers started by name, the newest of each name (ended ones stay until replaced).
    containers: Mutex<Vec<Arc<Container>>>,
    /// Where container ends are reported (`Vm::container_ends`), once someone asked.
    ends: Mutex<Option<tokio::sync::mpsc::UnboundedSender<ContainerEnd>>>,
    /// The VM's membership in a cluster, once it joined one (see `cluster`).
    pub(crate) cluster: std::sync::OnceLock<Arc<crate::cluster::Membership>>,
}

/// The detector task holds the VM weakly and parks while disarmed: tell it the VM is gone.
impl Drop for Shared {
    fn drop(&mut self) {
        self.orphans.close();
    }
}

/// A handle on the runtime; clones share it.
#[derive(Clone)]
pub struct Vm {
    pub(crate) shared: Arc<Shared>,
}

/// How the main actor (and so `vm run`) ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `main` returned this value.
    Exited(Value),
    /// `main` raised an exception it did not catch.
    Failed {
        /// The exception and where.
        fault: Fault,
        /// The source location.
        location: Location,
    },
    /// `main` was ended by a signal, a kill or `stop` with a reason other than `:normal`.
    Stopped(Value),
    /// No actor could ever run again; the report names each actor and what it waits on.
    Deadlock(String),
}

/// One actor as the introspection API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<Atom>,
    /// Running, runnable, waiting, real-blocked or exited.
    pub state: RunState,
    /// What it waits on, when waiting.
    pub waiting: Option<Wait>,
    /// Queued messages.
    pub mailbox_len: usize,
    /// Fuel spent so far.
    pub reductions: u64,
    /// Current function and source position.
    pub location: Location,
    /// Linked actors.
    pub links: Vec<Pid>,
    /// Actors monitoring this one.
    pub monitored_by: Vec<Pid>,
    /// Actors this one monitors.
    pub monitoring: Vec<Pid>,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// The open resources it owns: id and description (`tcp connection 127.0.0.1:5000`).
    pub resources: Vec<(u64, String)>,
    /// The name of its container (`main` for the default one).
    pub container: String,
}

impl Vm {
    /// A runtime with `config`, printing through `output`, whose actors' tasks `start_actor`
    /// starts. Must be used inside a tokio runtime. (`Vm::new`, in `actor`, passes the driver.)
    pub(crate) fn with_driver(config: Config, output: Arc<dyn Output>, start_actor: StartActor) -> Vm {
        let shards = (0..SHARDS).map(|_| Mutex::new(PidMap::default())).collect();
        let config_hog = config.hog_threshold_ms;
        let seed = config.seed.unwrap_or_else(entropy);
        let io = vm_io::Io::new(config.perms.clone(), Arc::new(ConsoleOf(output.clone())));
        let io_grants = io.grants.clone();
        let heartbeat = Arc::new(Heartbeat::new(config_hog));
        let executors = crate::affine::Executors::new(&heartbeat);
        let vm = Vm {
            shared: Arc::new(Shared {
                config,
                shards,
                names: Mutex::new(HashMap::new()),
                next_pid: AtomicU64::new(1),
                next_ref: AtomicU64::new(1),
                next_chan: AtomicU64::new(1),
                seeds: Mutex::new(seed),
                live: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                boost: AtomicU64::new(0),
                output,
                reporters: Mutex::new(HashMap::new()),
                reporting: AtomicUsize::new(0),
                io,
                heartbeat,
                executors,
                orphans: Arc::default(),
                start_actor,
                start: Instant::now(),
                clock_offset_ms: AtomicU64::new(0),
                main: AtomicU64::new(0),
                pause: Default::default(),
                budget: Default::default(),
                cluster: std::sync::OnceLock::new(),
                prio: Default::default(),
                default_container: Arc::new(Container::new(
                    ContainerSpec {
                        name: "main".into(),
                        module: Arc::new(Module::default()),
                        source: String::new(),
                        args: vec![],
                        grants: (*io_grants).clone(),
                        allow_lookup: vec![],
                        limits: Default::default(),
                        restart: Default::default(),
                        intensity: Default::default(),
                        priority: Default::default(),
                    },
                    false,
                )),
                containers: Mutex::new(Vec::new()),
                ends: Mutex::new(None),
            }),
        };
        vm.shared.io.set_service_hook(Arc::new(Services(Arc::downgrade(&vm.shared))));
        let weak = Arc::downgrade(&vm.shared);
        let locate = move |pid: u64| match weak.upgrade().and_then(|s| (Vm { shared: s }).lookup(Pid(pid))) {
            Some(cell) => format!("{} at {}", cell.pid, cell.location()),
            None => format!("<{pid}>"),
        };
        tokio::spawn(Heartbeat::watch(Arc::downgrade(&vm.shared.heartbeat), locate));
        vm
    }

    /// The affine executors and what each is doing (`executors` in the REPL).
    pub fn executors(&self) -> Vec<crate::affine::ExecutorInfo> {
        self.shared.executors.list()
    }

    /// How many times the heartbeat has seen an actor (or an affine job) hold its thread too
    /// long.
    pub fn hog_reports(&self) -> u64 {
        self.shared.heartbeat.hogs()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Milliseconds since the VM started.
    pub fn now_ms(&self) -> i64 {
        (self.shared.start.elapsed().as_millis() as u64 + self.shared.clock_offset_ms.load(Ordering::Relaxed))
            as i64
    }

    /// How many actors are alive.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    pub(crate) fn next_chan_id(&self) -> u64 {
        self.shared.next_chan.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_ref(&self) -> i64 {
        self.shared.next_ref.fetch_add(1, Ordering::Relaxed) as i64
    }

    /// A seed for an actor whose spawner gave none (the main actor, the REPL's, a remote
    /// spawn's, a restored one's): the next output of the VM's own generator.
    pub(crate) fn fresh_seed(&self) -> u64 {
        vm_core::rng::next(&mut lock(&self.shared.seeds))
    }

    fn shard(&self, pid: Pid) -> &Mutex<PidMap> {
        &self.shared.shards[(pid.0 as usize) % SHARDS]
    }

    /// The live actor with this pid.
    pub fn lookup(&self, pid: Pid) -> Option<Arc<ActorCell>> {
        lock(self.shard(pid)).get(&pid.0).cloned()
    }

    /// The pid registered as `name`.
    pub fn whereis(&self, name: Atom) -> Option<Pid> {
        lock(&self.shared.names).get(&name).copied()
    }

    /// Starts an actor running `fun(args)` from `module`. `parent` is needed to link or monitor.
    pub fn spawn(
        &self,
        module: Arc<Module>,
        fun: &Closure,
        args: Vec<Value>,
        opts: SpawnOpts,
        parent: Option<Pid>,
    ) -> Result<(Pid, Option<i64>), Exception> {
        // A child joins its parent's container; an actor started from outside, the default one.
        let container = match parent.and_then(|p| self.lookup(p)) {
            Some(p) => p.container.clone(),
            None => self.shared.default_container.clone(),
        };
        self.spawn_reporting(&container, module, fun, args, opts, parent, None)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn_reporting(
        &self,
        container: &Arc<Container>,
        module: Arc<Module>,
        fun: &Closure,
        args: Vec<Value>,
        opts: SpawnOpts,
        parent: Option<Pid>,
        report: Option<tokio::sync::oneshot::Sender<Outcome>>,
    ) -> Result<(Pid, Option<i64>), Exception> {
        self.spawn_full(container, module, fun, args, opts, parent, report, None)
    }

    /// [`Vm::spawn`], calling `before_start` with the new actor's cell once it is in the actor
    /// table and before its task starts (a remote spawn records the spawner's link or monitor
    /// and queues its answer there, so nothing the actor does can overtake them).
    pub(crate) fn spawn_with(
        &self,
        module: Arc<Module>,
        fun: &Closure,
        args: Vec<Value>,
        opts: SpawnOpts,
        parent: Option<Pid>,
        before_start: Option<&mut dyn FnMut(&ActorCell)>,
    ) -> Result<(Pid, Option<i64>), Exception> {
        // A remote spawn runs in the node's default container, as `vm node` serves one module.
        let container = self.shared.default_container.clone();
        self.spawn_full(&container, module, fun, args, opts, parent, None, before_start)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_full(
        &self,
        container: &Arc<Container>,
        module: Arc<Module>,
        fun: &Closure,
        args: Vec<Value>,
        opts: SpawnOpts,
        parent: Option<Pid>,
        report: Option<tokio::sync::oneshot::Sender<Outcome>>,
        before_start: Option<&mut dyn FnMut(&ActorCell)>,
    ) -> Result<(Pid, Option<i64>), Exception> {
        let max = self.shared.config.max_actors;
        if self.past_budget() {
            return Err(Exception::new(atoms::LIMIT, "the VM is past its memory budget (--max-memory)"));
        }
        if self.shared.live.fetch_add(1, Ordering::SeqCst) >= max {
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
            return Err(Exception::new(
                atoms::LIMIT,
                format!("the VM already runs its maximum of {max} actors"),
            ));
        }
        let counted = container.actors.fetch_add(1, Ordering::SeqCst);
        if let Some(cmax) = container.spec.limits.max_actors
            && counted >= cmax
        {
            container.actors.fetch_sub(1, Ordering::SeqCst);
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
            return Err(Exception::new(
                atoms::LIMIT,
                format!("container {} already runs its maximum of {cmax} actors", container.name()),
            ));
        }
        let mut state = match vm_core::ActorState::from_closure(&module, fun, args) {
            Ok(s) => s,
            Err(e) => {
                container.actors.fetch_sub(1, Ordering::SeqCst);
                self.shared.live.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        state.max_frames = opts.max_frames.unwrap_or(self.shared.config.max_frames);
        state.rng = opts.seed.unwrap_or_else(|| self.fresh_seed());
        let pid = Pid(self.shared.next_pid.fetch_add(1, Ordering::Relaxed));
        let max_mailbox = opts.max_mailbox.or(container.spec.limits.max_mailbox);
        let mut cell = ActorCell::new(pid, module.clone(), max_mailbox, container.clone());
        if let Some(p) = opts.priority {
            cell = cell.with_priority(p);
        }
        let cell = Arc::new(cell);
        if let Some(max) = opts.max_heap {
            cell.mailbox.with(|i| i.ext().max_heap = Some(max));
            state.meter.counted(0, Some(max));
        }
        let mut monitor = None;
        if let Some(parent) = parent {
            if opts.link {
                cell.mailbox.with(|i| i.ext().links.push(parent));
                if let Some(p) = self.lookup(parent) {
                    p.mailbox.with(|i| i.ext().links.push(pid));
                }
            }
            if opts.monitor {
                let r = self.next_ref();
                cell.mailbox.with(|i| i.ext().monitors.push((r, parent)));
                monitor = Some(r);
            }
        }
        // Resources among the arguments (or captured by the function) become the new actor's
        // before it can run.
        if let Some(parent) = parent {
            for v in state.regs.iter() {
                self.shared.io.transfer(v, parent.0, pid.0);
            }
        }
        if parent.is_none() && container.tag.is_some() {
            // The first actor of a named container is its root (see `Vm::start_container`).
            let _ = container.root.compare_exchange(0, pid.0, Ordering::SeqCst, Ordering::SeqCst);
        }
        lock(self.shard(pid)).insert(pid.0, cell.clone());
        // Counted in before it exists; the spawner is active, so the count cannot touch zero.
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        let span = trace::actor_span(pid, &module, fun.func);
        if let Some(tx) = report {
            // Kept here rather than in the actor's task, which every actor would pay for.
            lock(&self.shared.reporters).insert(pid.0, tx);
            self.shared.reporting.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(f) = before_start {
            f(&cell);
        }
        (self.shared.start_actor)(self.clone(), cell, state, span);
        Ok((pid, monitor))
    }

    /// The outcome channel of `pid` if it was started with `spawn_reporting`.
    pub(crate) fn take_reporter(&self, pid: Pid) -> Option<tokio::sync::oneshot::Sender<Outcome>> {
        if self.shared.reporting.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let tx = lock(&self.shared.reporters).remove(&pid.0)?;
        self.shared.reporting.fetch_sub(1, Ordering::SeqCst);
        Some(tx)
    }

    /// Delivers a message to `to`; a message to an actor that has exited is dropped.
    pub fn send(&self, to: Pid, msg: Value) {
        if let Some(cell) = self.lookup(to) {
            self.deliver(&cell, msg);
        }
    }

    pub(crate) fn deliver(&self, cell: &ActorCell, msg: Value) {
        trace::trace_deliver(cell.pid, &msg);
        match cell.mailbox.deliver(msg, &self.shared.active) {
            Delivery::Wake(w) => {
                self.shared.prio.woken(cell);
                w.wake()
            }
            Delivery::Overflow(w) => {
                cell.has_signals.store(true, Ordering::SeqCst);
                if let Some(w) = w {
                    w.wake();
                }
            }
            Delivery::Queued | Delivery::Dropped => {}
        }
        self.check_budget_after_delivery();
    }

    /// Delivers a control signal to `to` (dropped if it has exited).
    pub fn signal(&self, to: Pid, sig: Signal) {
        if let Some(cell) = self.lookup(to) {
            self.signal_cell(&cell, sig);
        }
    }

    pub(crate) fn signal_cell(&self, cell: &ActorCell, sig: Signal) {
        let is_message = matches!(sig, Signal::Exit { .. });
        match cell.mailbox.signal(sig, &self.shared.active) {
            Delivery::Wake(w) => {
                cell.has_signals.store(true, Ordering::SeqCst);
                self.shared.prio.woken(cell);
                w.wake();
            }
            Delivery::Queued => {
                // An exit signal to a trapping actor became a message; anything else is a signal.
                if !is_message || cell.mailbox.with(|i| i.ext_ref().is_some_and(|e| !e.signals.is_empty())) {
                    cell.has_signals.store(true, Ordering::SeqCst);
                }
            }
            Delivery::Overflow(_) | Delivery::Dropped => {}
        }
    }

    /// Registers `name` for `pid`.
    pub fn register(&self, name: Atom, pid: Pid) -> Result<(), Exception> {
        let mut names = lock(&self.shared.names);
        if let Some(other) = names.get(&name) {
            return Err(Exception::badarg(format!(
                "{} is already registered to {other}",
                Value::Atom(name).repr()
            )));
        }
        let cell = self.lookup(pid).ok_or_else(|| Exception::badarg(format!("{pid} is not alive")))?;
        cell.mailbox.with(|i| match i.ext_ref().and_then(|e| e.name) {
            _ if i.closed => Err(Exception::badarg(format!("{pid} is not alive"))),
            Some(old) => {
                Err(Exception::badarg(format!("{pid} is already registered as {}", Value::Atom(old).repr())))
            }
            None => {
                i.ext().name = Some(name);
                Ok(())
            }
        })?;
        names.insert(name, pid);
        Ok(())
    }

    /// Removes a registered name.
    pub fn unregister(&self, name: Atom) {
        if let Some(pid) = lock(&self.shared.names).remove(&name)
            && let Some(cell) = self.lookup(pid)
        {
            cell.mailbox.with(|i| i.ext().name = None);
        }
    }

    /// Called by an actor's driver when it ends: closes its mailbox and notifies links and
    /// monitors, then counts it out of the VM.
    pub(crate) fn finish(&self, cell: &ActorCell, reason: &ExitReason) {
        trace::trace_exit(cell, reason);
        cell.set_state(RunState::Exited);
        self.shared.prio.running(cell);
        let (links, monitors, name) = cell.mailbox.close();
        if let Some(name) = name {
            let mut names = lock(&self.shared.names);
            if names.get(&name) == Some(&cell.pid) {
                names.remove(&name);
            }
        }
        lock(self.shard(cell.pid)).remove(&cell.pid.0);
        // Its sockets and files close with it (those it handed to others stay open).
        self.shared.io.release(cell.pid.0);
        let reason_value = reason.value();
        for l in links {
            if let Some(other) = self.lookup(l) {
                other.mailbox.with(|i| i.ext().links.retain(|p| *p != cell.pid));
                self.signal_cell(&other, Signal::Exit { from: cell.pid, reason: reason_value.clone() });
            }
        }
        for (r, watcher) in monitors {
            if let Some(w) = self.lookup(watcher) {
                w.mailbox.with(|i| i.ext().monitoring.retain(|(x, _)| *x != r));
            }
            let down = Value::tuple(vec![
                Value::Atom(atoms::DOWN),
                Value::Int(r),
                Value::Pid(cell.pid),
                reason_value.clone(),
            ]);
            self.send(watcher, down);
        }
        if let Some(cluster) = self.shared.cluster.get() {
            cluster.actor_exited(cell.pid, &reason_value);
        }
        cell.container.actors.fetch_sub(1, Ordering::SeqCst);
        if cell.container.root.load(Ordering::Relaxed) == cell.pid.0 {
            self.end_container(&cell.container, reason);
        }
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
        // The exit may have let go of the last other copy of some waiter's channel.
        self.shared.orphans.exits.fetch_add(1, Ordering::SeqCst);
        if self.shared.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.idle.notify_one();
        }
    }

    /// Counts an external source of messages (a REPL session, a listener): while held, the VM is
    /// never considered deadlocked.
    pub fn hold(&self) -> Hold {
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        Hold { vm: self.clone() }
    }

    /// Every live actor, in pid order.
    pub fn actors(&self) -> Vec<ActorInfo> {
        self.cells().iter().map(|c| self.info_of(c)).collect()
    }

    /// Every live actor's cell, in pid order.
    pub(crate) fn cells(&self) -> Vec<Arc<ActorCell>> {
        let mut cells: Vec<Arc<ActorCell>> = Vec::with_capacity(self.live());
        for shard in self.shared.shards.iter() {
            cells.extend(lock(shard).values().cloned());
        }
        // Pids are unique, so an unstable sort gives the same order, faster (a snapshot's pause
        // sorts every actor).
        cells.sort_unstable_by_key(|c| c.pid);
        cells
    }

    /// One actor's details.
    pub fn info(&self, pid: Pid) -> Option<ActorInfo> {
        self.lookup(pid).map(|c| self.info_of(&c))
    }

    fn info_of(&self, c: &ActorCell) -> ActorInfo {
        let (name, waiting, mailbox_len, links, monitored_by, monitoring, trap_exit) = c.mailbox.with(|i| {
            (
                i.ext_ref().and_then(|e| e.name),
                i.waiting.clone(),
                i.messages.len(),
                i.ext_ref().map(|e| e.links.clone()).unwrap_or_default(),
                i.ext_ref().map(|e| e.monitors.iter().map(|(_, p)| *p).collect()).unwrap_or_default(),
                i.ext_ref().map(|e| e.monitoring.iter().map(|(_, p)| *p).collect()).unwrap_or_default(),
                i.trap_exit(),
            )
        });
        // A call running on an affine executor makes its caller real-blocked (the cell says
        // waiting: it waits the same way whether the call is queued or running).
        let state = match &waiting {
            Some(Wait::Affine(call)) if call.running() => RunState::RealBlocked,
            _ => c.state(),
        };
        ActorInfo {
            pid: c.pid,
            name,
            state,
            waiting,
            mailbox_len,
            reductions: c.reductions(),
            location: c.location(),
            links,
            monitored_by,
            monitoring,
            trap_exit,
            resources: self.shared.io.owned_by(c.pid.0),
            container: c.container.name().to_string(),
        }
    }

    /// The deadlock report: every actor and what it waits on, where; then each channel waited
    /// on, with the actors parked on it and those that hold it (can reach it, as the last
    /// orphan census found), so that a cycle of channel waits is visible.
    pub fn deadlock_report(&self) -> String {
        let mut out = String::from("deadlock: every actor is waiting and nothing can wake any of them\n");
        // Channel id -> the actors parked on it, in pid order.
        let mut parked: std::collections::BTreeMap<u64, Vec<Pid>> = Default::default();
        for a in self.actors() {
            let name = a.name.map(|n| format!(" ({n})")).unwrap_or_default();
            if let Some(Wait::Chan { chans, .. }) = &a.waiting {
                for id in chans.as_slice() {
                    parked.entry(*id).or_default().push(a.pid);
                }
            }
            let what =
                a.waiting.map(|w| w.to_string()).unwrap_or_else(|| format!("{:?}", a.state).to_lowercase());
            out.push_str(&format!("  {}{name}: waiting in {what} at {}\n", a.pid, a.location));
        }
        let pids = |ps: &mut dyn Iterator<Item = String>| ps.collect::<Vec<_>>().join(", ");
        for (id, on) in parked {
            let on = pids(&mut on.iter().map(|p| p.to_string()));
            let held = match self.shared.orphans.holders(id) {
                Some(h) if h.is_empty() => "; held by no one".to_string(),
                Some(h) => format!("; held by {}", pids(&mut h.iter().map(|p| Pid(*p).to_string()))),
                None => String::new(),
            };
            out.push_str(&format!("  #chan<{id}>: parked on it: {on}{held}\n"));
        }
        out
    }

    /// Runs `main` (arity 0, or 1 taking `args` as a list of strings) as the first actor and
    /// waits until it ends or the VM deadlocks.
    pub async fn run_main(&self, module: Arc<Module>, args: Vec<String>) -> Result<Outcome, String> {
        let (_, rx) = self.start_main(module, args)?;
        Ok(self.wait_for_main(rx).await)
    }

    /// Spawns `main` as [`Vm::run_main`] does: its pid, and where its outcome will arrive.
    pub(crate) fn start_main(
        &self,
        module: Arc<Module>,
        args: Vec<String>,
    ) -> Result<(Pid, tokio::sync::oneshot::Receiver<Outcome>), String> {
        let main = module.func_index("main").ok_or("the program has no `main` function")?;
        let arity = module.funcs[main as usize].arity;
        let args = match arity {
            0 => vec![],
            1 => vec![Value::list(args.into_iter().map(Value::str).collect())],
            n => return Err(format!("`main` must take 0 or 1 arguments (the argument list), not {n}")),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fun = Closure { func: main, env: vec![] };
        let (pid, _) = self
            .spawn_reporting(
                &self.shared.default_container.clone(),
                module,
                &fun,
                args,
                SpawnOpts::default(),
                None,
                Some(tx),
            )
            .map_err(|e| e.to_string())?;
        self.set_main(pid);
        Ok((pid, rx))
    }

    /// Waits until the main actor (which reports to `rx`) ends or the VM deadlocks.
    pub(crate) async fn wait_for_main(&self, mut rx: tokio::sync::oneshot::Receiver<Outcome>) -> Outcome {
        // Set while the orphan detector has been asked to judge the waits of a quiet VM: look
        // again when it has (or in a while, should it not get to it).
        let mut retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            tokio::select! {
                biased;
                done = &mut rx => return done.unwrap_or_else(|_| Outcome::Stopped(Value::atom("lost"))),
                () = self.shared.idle.notified() => {}
                () = async { match retry.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {}
            }
            retry = None;
            if self.stuck().await {
                // Main reports its outcome before it counts itself out, so an outcome
                // present now means main ended; otherwise nothing can run again.
                if let Ok(done) = rx.try_recv() {
                    return done;
                }
                // Unless some waits are orphaned: those the orphan detector has not judged
                // yet are judged now (`chan::orphans`, step 3), and the VM wakes if any is.
                let waits = crate::chan::reach::orphanable_waits(&self.cells());
                if !self.shared.orphans.judged(&waits) {
                    self.shared.orphans.poke();
                    retry = Some(Box::pin(tokio::time::sleep(std::time::Duration::from_millis(100))));
                    continue;
                }
                return Outcome::Deadlock(self.deadlock_report());
            }
        }
    }

    /// Called when `idle` was notified: whether the VM really is stuck (no actor can ever run
    /// again).
    pub(crate) async fn stuck(&self) -> bool {
        // Every wake path counts the woken actor back in before the waker can park itself, so
        // zero is stable. But a select (channel or mailbox) counts itself out before it
        // re-checks for work, so a runnable actor can pass through zero for an instant on its
        // way back in, and a busy program does so over and over (chan_pingpong: every round
        // trip); two readings of zero can both land in such instants. So the detector waits a
        // short grace and also asks whether any slice ran meanwhile: a real deadlock runs none.
        let slices = self.shared.heartbeat.slices();
        if self.shared.active.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.shared.active.load(Ordering::SeqCst) == 0 && self.shared.heartbeat.slices() == slices
    }
}

/// An external hold on the VM; see [`Vm::hold`].
pub struct Hold {
    vm: Vm,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.vm.shared.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.vm.shared.idle.notify_one();
        }
    }
}

/// What a snapshot reads and a restore sets of the VM itself (see `snapshot`).
impl Vm {
    /// The next pid, monitor reference and channel id.
    pub(crate) fn counters(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (
            s.next_pid.load(Ordering::SeqCst),
            s.next_ref.load(Ordering::SeqCst),
            s.next_chan.load(Ordering::SeqCst),
        )
    }

    /// Sets the counters and the clock of a VM being restored.
    pub(crate) fn restore_counters(&self, (pid, r, chan): (u64, u64, u64), clock_ms: u64) {
        let s = &self.shared;
        s.next_pid.store(pid, Ordering::SeqCst);
        s.next_ref.store(r, Ordering::SeqCst);
        s.next_chan.store(chan, Ordering::SeqCst);
        let elapsed = s.start.elapsed().as_millis() as u64;
        s.clock_offset_ms.store(clock_ms.saturating_sub(elapsed), Ordering::Relaxed);
    }

    /// Adds a restored actor's cell (its mailbox already filled) to the registry, counted live
    /// and active, reporting its outcome to `report` if given. [`Vm::start_restored`] starts it
    /// once every cell is in place.
    pub(crate) fn install_restored(
        &self,
        cell: Arc<ActorCell>,
        report: Option<tokio::sync::oneshot::Sender<Outcome>>,
    ) {
        let pid = cell.pid;
        if let Some(name) = cell.mailbox.with(|i| i.ext_ref().and_then(|e| e.name)) {
            lock(&self.shared.names).insert(name, pid);
        }
        lock(self.shard(pid)).insert(pid.0, cell);
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = report {
            lock(&self.shared.reporters).insert(pid.0, tx);
            self.shared.reporting.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Starts a restored actor's task with its state.
    pub(crate) fn start_restored(&self, cell: Arc<ActorCell>, mut st: ActorState) {
        // A snapshot does not hold the generators' states: each restored actor starts a new
        // stream (docs/snapshots.md).
        st.rng = self.fresh_seed();
        let func = st.frames.first().map_or(0, |f| f.func);
        let span = trace::actor_span(cell.pid, &cell.module, func);
        (self.shared.start_actor)(self.clone(), cell, st, span);
    }

    /// Records the main actor, whose end ends `vm run` (a snapshot records it).
    pub(crate) fn set_main(&self, pid: Pid) {
        self.shared.main.store(pid.0, Ordering::Relaxed);
    }

    /// The main actor, if the VM has one.
    pub(crate) fn main(&self) -> Option<Pid> {
        Some(Pid(self.shared.main.load(Ordering::Relaxed))).filter(|p| p.0 != 0)
    }

    /// The sink of `print` (flushed before a snapshot, so no line prints twice after a resume).
    pub(crate) fn flush_output(&self) {
        self.shared.output.flush();
    }
}

/// Containers (see `container`): starting and ending them, finding them, their services.
impl Vm {
    /// The container of actors started from outside (`vm run`'s `main`, the REPL).
    pub fn default_container(&self) -> &Arc<Container> {
        &self.shared.default_container
    }

    /// The container named `name` (the newest of that name), or the default one for `main`.
    pub fn container(&self, name: &str) -> Option<Arc<Container>> {
        if name == self.shared.default_container.name() {
            return Some(self.shared.default_container.clone());
        }
        lock(&self.shared.containers).iter().find(|c| c.name() == name).cloned()
    }

    /// The containers started by name, in the order they were first started.
    pub fn containers(&self) -> Vec<Arc<Container>> {
        lock(&self.shared.containers).clone()
    }

    /// Starts a container: its root actor runs `main` of the spec's module with the spec's
    /// arguments. A running container of the same name is an error; an ended one is replaced.
    pub fn start_container(&self, spec: ContainerSpec) -> Result<Arc<Container>, String> {
        if spec.name.is_empty()
            || spec.name.contains('/')
            || spec.name == self.shared.default_container.name()
        {
            return Err(format!("{:?} cannot name a container (non-empty, no '/', not \"main\")", spec.name));
        }
        crate::run::check_main(&spec.module).map_err(|e| format!("container {}: {e}", spec.name))?;
        let container = Arc::new(Container::new(spec, true));
        {
            let mut all = lock(&self.shared.containers);
            match all.iter().position(|c| c.name() == container.name()) {
                Some(i) if all[i].status() == crate::container::Status::Running => {
                    return Err(format!("container {} is already running", container.name()));
                }
                Some(i) => all[i] = container.clone(),
                None => all.push(container.clone()),
            }
        }
        let spec = &container.spec;
        let main = spec.module.func_index("main").ok_or("no main")?;
        let args = match spec.module.funcs[main as usize].arity {
            0 => vec![],
            _ => vec![Value::list(spec.args.iter().map(|a| Value::str(a.as_str())).collect())],
        };
        let fun = Closure { func: main, env: vec![] };
        // `spawn_reporting` records the root before the task starts, so even an instant exit
        // ends the container.
        match self.spawn_reporting(
            &container,
            spec.module.clone(),
            &fun,
            args,
            SpawnOpts::default(),
            None,
            None,
        ) {
            Ok(_) => Ok(container),
            Err(e) => {
                container.end();
                Err(format!("container {}: {e}", container.name()))
            }
        }
    }

    /// Ends a container as if its root had been killed with `reason` (the REPL's `stop`).
    pub fn stop_container(&self, name: &str, reason: Value) -> Result<(), String> {
        let c = self.container(name).ok_or_else(|| format!("no container named {name}"))?;
        match c.root() {
            Some(root) if c.status() == crate::container::Status::Running => {
                self.signal(root, Signal::Kill(reason));
                Ok(())
            }
            _ => Err(format!("container {name} is not running")),
        }
    }

    /// Where each container's end is reported from now on (see [`ContainerEnd`]); a second
    /// call replaces the first receiver.
    pub fn container_ends(&self) -> tokio::sync::mpsc::UnboundedReceiver<ContainerEnd> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&self.shared.ends) = Some(tx);
        rx
    }

    /// Ends `container` (its root ended with `reason`): withdraws its names, kills its other
    /// actors and reports the end (see `container`, rule 6).
    pub(crate) fn end_container(&self, container: &Arc<Container>, reason: &ExitReason) {
        if !container.end() {
            return;
        }
        let root = container.root.load(Ordering::SeqCst);
        for cell in self.cells() {
            if Arc::ptr_eq(&cell.container, container) && cell.pid.0 != root {
                self.signal_cell(&cell, Signal::Kill(Value::atom("shutdown")));
            }
        }
        let value = reason.value();
        let abnormal = !matches!(&value, Value::Atom(a) if *a == atoms::NORMAL);
        tracing::debug!(container = container.name(), reason = %value.repr(), "container ended");
        if let Some(tx) = lock(&self.shared.ends).as_ref() {
            let _ = tx.send(ContainerEnd { container: container.clone(), reason: value, abnormal });
        }
    }

    /// A message from `from` to `to` may not carry what rule 4 of `container` refuses: the
    /// exception to raise, if it does.
    pub(crate) fn check_crossing(from: &ActorCell, to: &ActorCell, msg: &Value) -> Result<(), Exception> {
        if Arc::ptr_eq(&from.container, &to.container) {
            return Ok(());
        }
        match crate::container::crossing_refusal(msg) {
            None => Ok(()),
            Some(what) => Err(Exception::badarg(format!(
                "send: {what} cannot cross from container {} to container {} (only data, pids and \
                 channels cross; nothing was sent)",
                from.container.name(),
                to.container.name()
            ))),
        }
    }
}

/// `publish` and `lookup` (vm-io's `services`), answered from the containers.
struct Services(std::sync::Weak<Shared>);

impl vm_io::services::ServiceHook for Services {
    fn publish(&self, caller: u64, name: &str, value: Value) -> vm_io::natives::NativeResult {
        let vm = Vm { shared: self.0.upgrade().ok_or_else(|| Exception::badarg("the VM has ended"))? };
        let cell =
            vm.lookup(Pid(caller)).ok_or_else(|| Exception::badarg("publish: the caller has ended"))?;
        cell.container.publish(name, value);
        Ok(Value::Nil)
    }

    fn lookup(&self, caller: u64, container: &str, name: &str) -> vm_io::natives::NativeResult {
        let vm = Vm { shared: self.0.upgrade().ok_or_else(|| Exception::badarg("the VM has ended"))? };
        let cell = vm.lookup(Pid(caller)).ok_or_else(|| Exception::badarg("lookup: the caller has ended"))?;
        if !cell.container.may_look_up(container) {
            return Err(Exception::new(
                vm_io::perms::permission_atom(),
                format!(
                    "lookup of {container}/{name} denied: container {} needs \"allow_lookup\": [\"{container}\"]",
                    cell.container.name()
                ),
            ));
        }
        Ok(vm.container(container).and_then(|c| c.published(name)).unwrap_or(Value::Nil))
    }
}

/// A seed from the process's own randomness: std's per-process random hash keys, mixed with
/// the clock.
fn entropy() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::hash::RandomState::new().hash_one(now.as_nanos())
}
