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
mod containers;
mod introspect;
mod restore;

pub use crate::cell::{ActorCell, RunState};
use crate::container::{Container, ContainerEnd, ContainerSpec};
use crate::exit::ExitReason;
use crate::heartbeat::Heartbeat;
use crate::mailbox::{Delivery, Signal};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use crate::trace;
use containers::Services;
pub use introspect::ActorInfo;
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
    /// Where actors started with a `report` hook (see [`SpawnHooks`]) (main, `eval` snippets) send their outcome.
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

impl Vm {
    /// A runtime with `config`, printing through `output`, whose actors' tasks `start_actor`
    /// starts. Must be used inside a tokio runtime. (`Vm::new`, in `actor`, passes the driver.)
    pub(crate) fn with_driver(config: Config, output: Arc<dyn Output>, start_actor: StartActor) -> Vm {
        let shards = (0..SHARDS).map(|_| Mutex::new(PidMap::default())).collect();
        let config_hog = config.hog_threshold_ms;
        let seed = config.seed.unwrap_or_else(entropy);
        let console: Arc<dyn vm_io::Console> = Arc::new(ConsoleOf(output.clone()));
        let io = vm_io::Io::new(config.perms.clone(), console.clone());
        let io_grants = io.grants.clone();
        let heartbeat = Arc::new(Heartbeat::new(config_hog));
        let executors = crate::affine::Executors::new(&heartbeat);
        let vm = Vm {
            shared: Arc::new(Shared {
                config,
                shards,
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
                    None,
                    console,
                )),
                containers: Mutex::new(Vec::new()),
                ends: Mutex::new(None),
            }),
        };
        vm.shared.io.set_service_hook(Arc::new(Services(Arc::downgrade(&vm.shared))));
        let weak = Arc::downgrade(&vm.shared);
        let locate = move |pid: u64, at: Option<(u32, u32)>| match weak
            .upgrade()
            .and_then(|s| (Vm { shared: s }).lookup(Pid(pid)))
        {
            // The warnings name the pid in a field of its own; this is only where the actor is:
            // its published position, or else where its slice began.
            Some(cell) => match at {
                Some((func, pc)) => cell.module.location(func, pc).to_string(),
                None => cell.location().to_string(),
            },
            None => "nowhere (it has ended)".to_string(),
        };
        // A thread, not a task (heartbeat step 6): a task could wait behind the slice it watches.
        let heartbeat = Arc::downgrade(&vm.shared.heartbeat);
        if let Err(e) = std::thread::Builder::new()
            .name("vm-heartbeat".into())
            .spawn(move || Heartbeat::watch(heartbeat, locate))
        {
            tracing::warn!(error = %e, "no heartbeat thread: over-long slices will not be reported");
        }
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

    /// How many orphan censuses (each pausing every actor) the VM has taken.
    pub fn orphan_censuses(&self) -> u64 {
        self.shared.orphans.censuses.load(Ordering::Relaxed)
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

    /// The pid registered as `name` in the default container (the REPL's, remote sends').
    pub fn whereis(&self, name: Atom) -> Option<Pid> {
        self.whereis_in(&self.shared.default_container, name)
    }

    /// The pid registered as `name` in `container` (see `container`, rule 5).
    pub fn whereis_in(&self, container: &Container, name: Atom) -> Option<Pid> {
        lock(&container.names).get(&name).copied()
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
        self.spawn_in(&container, module, fun, args, opts, parent, SpawnHooks::default())
    }

    /// [`Vm::spawn`] into `container`, with what the runtime's own spawns add (see
    /// [`SpawnHooks`]). Every actor is started here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn_in(
        &self,
        container: &Arc<Container>,
        module: Arc<Module>,
        fun: &Closure,
        args: Vec<Value>,
        opts: SpawnOpts,
        parent: Option<Pid>,
        hooks: SpawnHooks<'_>,
    ) -> Result<(Pid, Option<i64>), Exception> {
        let SpawnHooks { report, before_start } = hooks;
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
        if let Some(max) = opts.max_heap.or(container.spec.limits.max_heap) {
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

    /// The outcome channel of `pid` if it was started with a `report` hook (see [`SpawnHooks`]).
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
        let (delivery, grows) = cell.mailbox.deliver_grows(msg, &self.shared.active);
        // Only a delivery that may have made the process's memory grow checks the budget: a
        // scalar into a queue with room allocates nothing (and the ring and pingpong
        // benchmarks' messages are such). Checked before the wake, so that the wake is the
        // last call (a jump).
        if grows {
            self.check_budget_after_delivery();
        }
        match delivery {
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

    /// Registers `name` for `pid` in the default container's registry.
    pub fn register(&self, name: Atom, pid: Pid) -> Result<(), Exception> {
        self.register_in(&self.shared.default_container.clone(), name, pid)
    }

    /// Registers `name` for `pid` in `container`'s registry; `pid` must be an actor of that
    /// container (see `container`, rule 5).
    pub fn register_in(&self, container: &Arc<Container>, name: Atom, pid: Pid) -> Result<(), Exception> {
        let mut names = lock(&container.names);
        if let Some(other) = names.get(&name) {
            return Err(Exception::badarg(format!(
                "{} is already registered to {other}",
                Value::Atom(name).repr()
            )));
        }
        let cell = self.lookup(pid).ok_or_else(|| Exception::badarg(format!("{pid} is not alive")))?;
        if !Arc::ptr_eq(&cell.container, container) {
            return Err(Exception::badarg(format!(
                "{pid} belongs to container {}: a container registers only its own actors",
                cell.container.name()
            )));
        }
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

    /// Removes a name from `container`'s registry.
    pub fn unregister_in(&self, container: &Container, name: Atom) {
        if let Some(pid) = lock(&container.names).remove(&name)
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
            let mut names = lock(&cell.container.names);
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
            .spawn_in(
                &self.shared.default_container.clone(),
                module,
                &fun,
                args,
                SpawnOpts::default(),
                None,
                SpawnHooks { report: Some(tx), ..SpawnHooks::default() },
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

/// What a spawn from inside the runtime may add to [`Vm::spawn`] (see [`Vm::spawn_in`]).
#[derive(Default)]
pub(crate) struct SpawnHooks<'a> {
    /// Where the actor's outcome is sent when it ends (`main`, REPL snippets, container roots);
    /// recorded before its task starts, so even an instant exit is reported.
    pub(crate) report: Option<tokio::sync::oneshot::Sender<Outcome>>,
    /// Called with the new actor's cell once it is in the actor table and before its task
    /// starts (a remote spawn records the spawner's link or monitor and queues its answer
    /// there, so nothing the actor does can overtake them).
    pub(crate) before_start: Option<&'a mut dyn FnMut(&ActorCell)>,
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

/// A seed from the process's own randomness: std's per-process random hash keys, mixed with
/// the clock.
fn entropy() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::hash::RandomState::new().hash_one(now.as_nanos())
}
