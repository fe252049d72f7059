//! Taking a snapshot of a running VM, and restoring one into a fresh VM.
//!
//! **Taking** ([`take`]):
//! 1. Flush program output, so that no line is printed twice after a resume.
//! 2. Pause every actor (`pause`): each publishes a clone of its state at a safe point, or from
//!    a wait that has not completed, with what the wait needs on restore.
//! 3. Under the pause, convert the states, mailboxes (messages, signals, links, monitors, name),
//!    and every channel, table and resource reachable from them into the frozen snapshot types
//!    (`vm_core::snapshot::Writer`: a value shared by many actors is written once). A timed
//!    wait is written as its remaining time; a native call in flight as its name; a resource as
//!    its reopen recipe (`vm_io::reopen`). Grants are not written.
//! 4. The named containers (`vm up`): each one's settings but its grants, module, root,
//!    status, published names and members (with their priorities); the channels that have
//!    reached a second container. An actor of the default container runs the module section;
//!    those of a named container its module, so every container's actors must run one module.
//! 5. End the pause. The caller encodes and writes the file off the actor threads.
//!
//! **Restoring** ([`restore`], into a fresh [`Vm`] configured from the snapshot, with the grants
//! of the resuming command line; [`restore_containers`] for a snapshot of containers, with the
//! grants of a manifest, [`ContainerGrants`]):
//! 1. Set the counters and the clock: the VM's time goes on from the snapshot's
//!    ([`Timers::Frozen`]) or counts the downtime ([`Timers::Wall`]).
//! 2. Make the channels and tables (empty), open the resources again (under the new grants;
//!    what cannot be opened is `:lost` on use), then rebuild the values (`Reader`) and refill
//!    the channels and tables.
//! 3. Make the named containers again (each with the manifest's grants, never the snapshot's),
//!    ended ones ended, with their published names; mark the shared channels shared again.
//! 4. Make every actor's cell with its mailbox, in its container, then start them all. Each runs from its program
//!    counter: a blocked actor runs its blocking instruction again (a receive, a channel
//!    operation, a sleep — with its remaining time, less the downtime under `Wall`). A native
//!    call that was in flight runs again if it may (`vm_io::rerun`), else `:unknown_outcome` is
//!    raised at the instruction.
//! 5. A running container whose root is not among the actors (it was ending when the snapshot
//!    was taken) ends now, as its root's end would have ended it.

use crate::cell::ActorCell;
use crate::chan::Channel;
use crate::container::{Container, ContainerSpec, Intensity, Limits, Restart, Status};
use crate::mailbox::{Image, Mailbox, Signal};
use crate::pause::Waiting;
use crate::vm::{Outcome, Vm};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use vm_core::snapshot::{ContainerImage, Reader, Snapshot, Writer, v1};
use vm_core::{Atom, Exception, Handle, Pid, Resume, Value};
use vm_io::resource::resource_of;
use vm_io::table::Table;

/// How timers count the time the VM was not running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timers {
    /// The VM's time stood still: a timer has the time it had left (the default).
    #[default]
    Frozen,
    /// The downtime counts: a timer that would have fired meanwhile fires at once.
    Wall,
}

/// What a snapshot records about the process besides the VM (see [`take`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// The main actor, if any.
    pub main: Option<Pid>,
    /// How often, how many generations, on SIGTERM.
    pub schedule: v1::Schedule,
    /// `--workers`, if given.
    pub workers: Option<u32>,
    /// How many times this VM was resumed.
    pub incarnation: u64,
}

/// The grants of each named container a resume makes again, by name: from the manifest of
/// `vm resume --manifest`, never from the snapshot (a snapshot is not a capability).
pub type ContainerGrants = HashMap<String, Granted>;

/// What a manifest grants one container.
#[derive(Clone, Debug, Default)]
pub struct Granted {
    /// Network, file and environment access.
    pub perms: vm_io::Permissions,
    /// The containers whose published names it may look up.
    pub allow_lookup: Vec<String>,
}

/// The grants for resuming `s` from a manifest's entries: every container of the snapshot must
/// be in the manifest (else the error names those that are not). Containers of the manifest
/// that the snapshot lacks are returned apart, to be started fresh.
pub fn grants_from_manifest<M>(
    s: &Snapshot,
    manifest: Vec<crate::container::ContainerSpec<M>>,
) -> Result<(ContainerGrants, Vec<crate::container::ContainerSpec<M>>), String> {
    let missing: Vec<&str> = s
        .containers
        .iter()
        .map(|c| c.spec.name.as_str())
        .filter(|n| !manifest.iter().any(|e| e.name == *n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the snapshot has container{} {} but the manifest does not: a container is resumed only \
             with the grants a manifest gives it (add {} to the manifest)",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" },
        ));
    }
    let (known, fresh): (Vec<_>, Vec<_>) =
        manifest.into_iter().partition(|e| s.containers.iter().any(|c| c.spec.name == e.name));
    let grants = known
        .into_iter()
        .map(|e| (e.name, Granted { perms: e.grants.perms, allow_lookup: e.allow_lookup }))
        .collect();
    Ok((grants, fresh))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Takes a snapshot of the running VM (steps 1 to 5 of the module docs). Returns it and how
/// long the actors were paused. Fails if the actors of one container run more than one module
/// (a REPL session that loaded several programs): a snapshot holds one per container.
pub async fn take(vm: &Vm, settings: Settings) -> Result<(Snapshot, std::time::Duration), String> {
    let _one_pause = vm.shared.pause.exclusive.lock().await;
    let taken = pause_and_take(vm, settings).await;
    vm.resume_after_pause();
    // The cut's 100,000s of cell references are let go after the pause, not during it.
    taken.map(|(snapshot, paused, _cut)| (snapshot, paused))
}

/// Takes a last snapshot and leaves every actor paused (the VM is about to end: nothing may
/// happen after the snapshot that a resume would do again).
pub async fn take_and_stop(vm: &Vm, settings: Settings) -> Result<(Snapshot, std::time::Duration), String> {
    let _one_pause = vm.shared.pause.exclusive.lock().await;
    pause_and_take(vm, settings).await.map(|(snapshot, paused, _cut)| (snapshot, paused))
}

/// Pauses every actor and takes the snapshot, leaving them paused; the caller holds the pause
/// (and drops the cut once the pause is over).
async fn pause_and_take(
    vm: &Vm,
    settings: Settings,
) -> Result<(Snapshot, std::time::Duration, crate::pause::Cut), String> {
    vm.flush_output();
    let started = Instant::now();
    let cut = vm.pause_all().await;
    let modules = modules(vm, &cut.cells)?;
    let snapshot = capture(vm, modules, settings, &cut);
    Ok((snapshot, started.elapsed(), cut))
}

/// The module of each container: the default container's (`Module::default()` when it has no
/// actor, as under `vm up`), then each named container's, in [`Vm::containers`]'s order.
struct Modules {
    main: Arc<vm_core::Module>,
    named: Vec<(Arc<crate::container::Container>, Arc<vm_core::Module>)>,
}

/// The module the actors of each container run: one per container (step 4).
fn modules(vm: &Vm, cells: &[Arc<ActorCell>]) -> Result<Modules, String> {
    let named = vm.containers();
    if cells.is_empty() && named.is_empty() {
        return Err("there is no actor to snapshot".into());
    }
    fn one<'c>(
        name: &str,
        mut of: impl Iterator<Item = &'c Arc<ActorCell>>,
    ) -> Result<Option<Arc<vm_core::Module>>, String> {
        let Some(first) = of.next() else { return Ok(None) };
        if of.all(|c| Arc::ptr_eq(&c.module, &first.module)) {
            Ok(Some(first.module.clone()))
        } else {
            Err(format!(
                "the actors of container {name} run different programs (loaded separately); a snapshot \
                 holds one per container"
            ))
        }
    }
    let default = vm.default_container();
    let main =
        one(default.name(), cells.iter().filter(|c| Arc::ptr_eq(&c.container, default)))?.unwrap_or_default();
    // An actor of an ended container that a restart has replaced is still being killed; it
    // joins the container of its name (the same module: a restart starts the same spec).
    let mut out = Vec::with_capacity(named.len());
    for c in named {
        let members =
            cells.iter().filter(|x| !Arc::ptr_eq(&x.container, default) && x.container.name() == c.name());
        let module = one(c.name(), members)?.unwrap_or_else(|| c.spec.module.clone());
        out.push((c, module));
    }
    Ok(Modules { main, named: out })
}

/// Step 3, under the pause.
fn capture(vm: &Vm, modules: Modules, settings: Settings, cut: &crate::pause::Cut) -> Snapshot {
    let now = Instant::now();
    let mut w = Writer::new();
    // The members of each named container, by name.
    let mut members: HashMap<&str, Vec<v1::Member>> = HashMap::new();
    // Sized once: growing a vector of 100,000 actors copies it and faults in fresh pages
    // several times over, all under the pause.
    let mut actors = Vec::with_capacity(cut.cells.len());
    let mut limits = Vec::new();
    let mut rngs = Vec::with_capacity(cut.cells.len());
    for cell in &cut.cells {
        // A reserved state is read in its slot; a published one says what it waits for.
        let read = cell.slot.read(cut.epoch, |st, waiting| {
            let waiting = waiting.unwrap_or_else(|| vm.waiting_of(cell.pid));
            (w.state(st), st.rng, waiting)
        });
        let Some((state, rng, waiting)) = read else { continue };
        if !Arc::ptr_eq(&cell.container, vm.default_container()) {
            let member = v1::Member { pid: cell.pid.0, priority: priority_to(cell.priority()) };
            members.entry(cell.container.name()).or_default().push(member);
        }
        rngs.push(v1::ActorRng { pid: cell.pid.0, state: rng });
        let img = cell.mailbox.image();
        let wait = match waiting {
            Waiting::Nothing => v1::Wait::Runnable,
            Waiting::Until(deadline) => {
                v1::Wait::Timed { remaining_ms: deadline.saturating_duration_since(now).as_millis() as u64 }
            }
            Waiting::Native(name) => v1::Wait::Native { name: w.atom(name) },
        };
        let mailbox = img.messages.iter().map(|m| w.value(m)).collect();
        let signals = img.signals.iter().filter_map(|s| signal(&mut w, s)).collect();
        actors.push(v1::Actor {
            pid: cell.pid.0,
            state,
            wait,
            mailbox,
            signals,
            name: img.name.map(|n| w.atom(n)),
            links: img.links.iter().map(|p| p.0).collect(),
            monitors: img.monitors.iter().map(|&(r, p)| (r as u64, p.0)).collect(),
            monitoring: img.monitoring.iter().map(|&(r, p)| (r as u64, p.0)).collect(),
            trap_exit: img.trap_exit,
            max_mailbox: img.max_len.map(|n| n as u64),
        });
        if img.max_heap.is_some() {
            limits.push(v1::ActorLimits { pid: cell.pid.0, max_heap: img.max_heap });
        }
    }
    // Step 4; published values before the handles, whose loop collects their channels.
    let containers: Vec<ContainerImage> = modules
        .named
        .iter()
        .map(|(c, module)| ContainerImage {
            module: module.clone(),
            spec: container_image(&mut w, c, members.remove(c.name()).unwrap_or_default()),
        })
        .collect();
    let mut shared_channels = Vec::new();
    let (mut channels, mut tables, mut resources) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let (chans, res) = w.new_handles();
        if chans.is_empty() && res.is_empty() {
            break;
        }
        for h in chans {
            if let Some(ch) = h.payload().and_then(|p| (**p).downcast_ref::<Channel>()) {
                let (buffer, closed) = ch.image();
                let buffer = buffer.iter().map(|v| w.value(v)).collect();
                if ch.is_shared() {
                    shared_channels.push(h.id());
                }
                channels.push(v1::Channel { id: h.id(), cap: ch.cap() as u64, buffer, closed });
            }
        }
        for h in res {
            if let Some(t) = h.payload().and_then(|p| (**p).downcast_ref::<Table>()) {
                let entries = t.entries().iter().map(|(k, v)| (w.value(k), w.value(v))).collect();
                tables.push(v1::Table { id: h.id(), entries });
            } else if let Some(r) = resource_of(&h) {
                resources.push(v1::Resource {
                    id: h.id(),
                    owner: r.owner(),
                    label: r.label().to_string(),
                    recipe: r.recipe(),
                });
            } else {
                // Another kind of handle (a thread-affine object, a SQLite connection): it
                // cannot outlive the process; after a restore it is lost.
                let label = format!("#res<{}>", h.id());
                resources.push(v1::Resource { id: h.id(), owner: 0, label, recipe: v1::Recipe::Lost });
            }
        }
    }
    let (next_pid, next_ref, next_chan) = vm.counters();
    let config = vm.config();
    Snapshot {
        meta: v1::Meta {
            writer: format!("vm {}", env!("CARGO_PKG_VERSION")),
            module_hash: 0,
            taken_unix_ms: unix_ms(),
            vm_time_ms: vm.now_ms().max(0) as u64,
            incarnation: settings.incarnation,
            counters: v1::Counters {
                next_pid,
                next_ref,
                next_chan,
                next_handle: vm.shared.io.next_handle_id(),
            },
            config: v1::Config {
                fuel: config.fuel,
                max_frames: config.max_frames,
                max_actors: config.max_actors as u64,
                hog_threshold_ms: config.hog_threshold_ms,
                workers: settings.workers,
            },
            schedule: settings.schedule,
            main: settings.main.map(|p| p.0),
        },
        module: modules.main,
        values: w.finish(),
        actors,
        channels,
        tables,
        resources,
        limits,
        rngs,
        containers,
        shared_channels,
    }
}

/// A named container as the file holds it (everything but its grants and module).
fn container_image(w: &mut Writer, c: &Container, actors: Vec<v1::Member>) -> v1::Container {
    let spec = &c.spec;
    let limits = spec.limits;
    v1::Container {
        name: spec.name.clone(),
        module: v1::Blob::default(),
        source: spec.source.clone(),
        args: spec.args.clone(),
        env: spec.grants.env.clone(),
        limits: v1::ContainerLimits {
            max_actors: limits.max_actors.map(|n| n as u64),
            max_mailbox: limits.max_mailbox.map(|n| n as u64),
            max_heap: limits.max_heap,
        },
        restart: match spec.restart {
            Restart::Permanent => v1::Restart::Permanent,
            Restart::Transient => v1::Restart::Transient,
            Restart::Temporary => v1::Restart::Temporary,
        },
        max_restarts: spec.intensity.max_restarts,
        restart_period_ms: spec.intensity.period_ms,
        priority: priority_to(spec.priority),
        root: c.root().map_or(0, |p| p.0),
        status: match c.status() {
            Status::Running => v1::ContainerStatus::Running,
            Status::Ended if c.stopped.load(crate::sync::Ordering::SeqCst) => v1::ContainerStatus::Stopped,
            Status::Ended => v1::ContainerStatus::Ended,
        },
        actors,
        published: c.published_all().into_iter().map(|(name, v)| (name, w.value(&v))).collect(),
    }
}

/// The spec of a container a snapshot holds, with `granted` as its grants.
fn container_spec(c: &ContainerImage, granted: Granted) -> ContainerSpec {
    let s = &c.spec;
    ContainerSpec {
        name: s.name.clone(),
        module: c.module.clone(),
        source: s.source.clone(),
        args: s.args.clone(),
        grants: vm_io::Grants { perms: granted.perms, env: s.env.clone() },
        allow_lookup: granted.allow_lookup,
        limits: Limits {
            max_actors: s.limits.max_actors.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_mailbox: s.limits.max_mailbox.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_heap: s.limits.max_heap,
        },
        restart: match s.restart {
            v1::Restart::Permanent => Restart::Permanent,
            v1::Restart::Transient => Restart::Transient,
            v1::Restart::Temporary => Restart::Temporary,
        },
        intensity: Intensity { max_restarts: s.max_restarts, period_ms: s.restart_period_ms },
        priority: priority_from(s.priority),
    }
}

fn priority_to(p: vm_core::Priority) -> v1::Priority {
    match p {
        vm_core::Priority::High => v1::Priority::High,
        vm_core::Priority::Normal => v1::Priority::Normal,
        vm_core::Priority::Low => v1::Priority::Low,
    }
}

fn priority_from(p: v1::Priority) -> vm_core::Priority {
    match p {
        v1::Priority::High => vm_core::Priority::High,
        v1::Priority::Normal => vm_core::Priority::Normal,
        v1::Priority::Low => vm_core::Priority::Low,
    }
}

/// `vm_snapshot` (vm-io's `request`): a snapshot taken and written on a task of its own, since
/// the actor asking is paused with the others.
struct Hook(std::sync::Weak<crate::vm::Shared>);

impl vm_io::request::SnapshotHook for Hook {
    fn request(&self, path: std::path::PathBuf) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(shared) = self.0.upgrade() {
            let vm = Vm { shared };
            tokio::spawn(async move {
                let settings = Settings { main: vm.main(), ..Settings::default() };
                let r = match take(&vm, settings).await {
                    Ok((s, _)) => crate::persist::write_file(s, path, 1).await,
                    Err(e) => Err(e),
                };
                let _ = tx.send(r);
            });
        }
        rx
    }
}

/// Lets programs of `vm` call `vm_snapshot`.
pub(crate) fn install_hook(vm: &Vm) {
    vm.shared.io.set_snapshot_hook(Arc::new(Hook(Arc::downgrade(&vm.shared))));
}

/// A pending signal as the file holds it; an orphaned-channel signal is not kept (the wait it
/// was for runs again, and is checked again).
fn signal(w: &mut Writer, s: &Signal) -> Option<v1::Signal> {
    Some(match s {
        Signal::Exit { from, reason } => v1::Signal::Exit { from: from.0, reason: w.value(reason) },
        Signal::Kill(reason) => v1::Signal::Kill { reason: w.value(reason) },
        Signal::Interrupt { exc, mode } => v1::Signal::Interrupt { exc: w.exception(exc), mode: *mode },
        Signal::Orphaned { .. } | Signal::Pause => return None,
    })
}

/// The exception a native call in flight at the snapshot raises after the restore when it may
/// not simply run again.
fn unknown_outcome(name: Atom) -> Exception {
    Exception::new(
        Atom::new("unknown_outcome"),
        format!("{name} was in progress when the snapshot was taken; whether it completed is unknown"),
    )
}

/// Restores `s` into `vm`, a fresh VM configured from it (steps 1 to 5 of the module docs).
/// Returns the main actor's outcome channel, if the snapshot has a main actor. A named
/// container of `s` gets no grants at all: [`restore_containers`] gives them.
pub async fn restore(
    vm: &Vm,
    s: Snapshot,
    timers: Timers,
) -> Option<tokio::sync::oneshot::Receiver<Outcome>> {
    restore_containers(vm, s, timers, &ContainerGrants::new()).await
}

/// [`restore`], giving each named container the grants `grants` has for its name (none if it
/// has no entry; [`grants_from_manifest`] makes sure every one has).
pub async fn restore_containers(
    vm: &Vm,
    s: Snapshot,
    timers: Timers,
    grants: &ContainerGrants,
) -> Option<tokio::sync::oneshot::Receiver<Outcome>> {
    let downtime = match timers {
        Timers::Frozen => 0,
        Timers::Wall => unix_ms().saturating_sub(s.meta.taken_unix_ms),
    };
    let c = s.meta.counters;
    if let Some(main) = s.meta.main {
        vm.set_main(Pid(main));
    }
    vm.restore_counters((c.next_pid, c.next_ref, c.next_chan), s.meta.vm_time_ms + downtime);
    vm.shared.io.set_next_handle_id(c.next_handle);

    let mut chans = HashMap::new();
    let mut made = Vec::new();
    for ch in &s.channels {
        let chan = Channel::new(ch.id, ch.cap as usize);
        chans.insert(ch.id, Handle::with_payload(ch.id, chan.clone()));
        made.push(chan);
    }
    let mut res = HashMap::new();
    let mut made_tables = Vec::new();
    for t in &s.tables {
        let table = Arc::new(Table::default());
        res.insert(t.id, Handle::with_payload(t.id, table.clone()));
        made_tables.push(table);
    }
    // The named container of each of its actors, for the resources they own.
    let container_of: HashMap<u64, &ContainerImage> =
        s.containers.iter().flat_map(|c| c.spec.actors.iter().map(move |m| (m.pid, c))).collect();
    for r in &s.resources {
        // Under the grants of its owner's container: the manifest's for a named container.
        let reopened = match container_of.get(&r.owner) {
            Some(c) => {
                let perms = grants.get(&c.spec.name).map(|g| g.perms.clone()).unwrap_or_default();
                vm.shared.io.reopen_under(&perms, r.id, r.owner, &r.label, &r.recipe).await
            }
            None => vm.shared.io.reopen(r.id, r.owner, &r.label, &r.recipe).await,
        };
        if let Value::Res(h) = &reopened {
            res.insert(r.id, h.clone());
        }
    }
    let reader = Reader::new(s.values, chans, res);
    for (chan, ch) in made.iter().zip(&s.channels) {
        chan.refill(ch.buffer.iter().map(|&v| reader.value(v)).collect(), ch.closed);
        if s.shared_channels.contains(&ch.id) {
            // What it holds was checked when it first crossed.
            let _ = chan.share();
        }
    }
    // Step 3: the named containers, and the container and module of each of their actors.
    let mut member_of: HashMap<u64, (Arc<Container>, Arc<vm_core::Module>, vm_core::Priority)> =
        HashMap::new();
    let mut running = Vec::new();
    for c in &s.containers {
        let granted = grants.get(&c.spec.name).cloned().unwrap_or_default();
        let container = vm.install_container(container_spec(c, granted));
        container.root.store(c.spec.root, crate::sync::Ordering::SeqCst);
        match c.spec.status {
            v1::ContainerStatus::Running => running.push(container.clone()),
            v1::ContainerStatus::Stopped => {
                container.stopped.store(true, crate::sync::Ordering::SeqCst);
                container.end();
            }
            v1::ContainerStatus::Ended => {
                container.end();
            }
        }
        for (name, v) in &c.spec.published {
            container.publish(name, reader.value(*v));
        }
        for m in &c.spec.actors {
            member_of.insert(m.pid, (container.clone(), c.module.clone(), priority_from(m.priority)));
        }
    }
    for (table, t) in made_tables.iter().zip(&s.tables) {
        for &(k, v) in &t.entries {
            table.put(reader.value(k), reader.value(v));
        }
    }

    let mut report = None;
    let mut started = Vec::new();
    // Looked up per actor: a map, as every actor has an entry.
    let rngs: std::collections::HashMap<u64, u64> = s.rngs.iter().map(|g| (g.pid, g.state)).collect();
    for a in &s.actors {
        let mut st = reader.state(&a.state);
        let module = member_of.get(&a.pid).map_or(&s.module, |(_, m, _)| m);
        match a.wait {
            v1::Wait::Runnable => {}
            v1::Wait::Timed { remaining_ms } => vm.set_deadline(
                Pid(a.pid),
                Instant::now() + std::time::Duration::from_millis(remaining_ms.saturating_sub(downtime)),
            ),
            v1::Wait::Native { name } => {
                let name = reader.atom(name);
                if &*name.name() == "vm_snapshot" {
                    // The snapshot it was taking is this one (or a later one): say so.
                    st.resume(module, Resume::Value(Value::atom("resumed")));
                } else if !vm_io::rerun::may_rerun(&name.name()) {
                    st.resume(module, Resume::Raise(unknown_outcome(name)));
                }
            }
        }
        let img = Image {
            messages: a.mailbox.iter().map(|&m| reader.value(m)).collect(),
            signals: a.signals.iter().map(|sig| restored_signal(&reader, sig)).collect(),
            links: a.links.iter().map(|&p| Pid(p)).collect(),
            monitors: a.monitors.iter().map(|&(r, p)| (r as i64, Pid(p))).collect(),
            monitoring: a.monitoring.iter().map(|&(r, p)| (r as i64, Pid(p))).collect(),
            name: a.name.map(|n| reader.atom(n)),
            trap_exit: a.trap_exit,
            max_len: a.max_mailbox.map(|n| n as usize),
            max_heap: s.limits.iter().find(|l| l.pid == a.pid).and_then(|l| l.max_heap),
        };
        if img.max_heap.is_some() {
            st.meter.counted(0, img.max_heap);
        }
        let has_signals = !img.signals.is_empty();
        let cell = match member_of.get(&a.pid) {
            Some((container, module, priority)) => {
                ActorCell::restored(Pid(a.pid), module.clone(), Mailbox::from_image(img), container.clone())
                    .with_priority(*priority)
            }
            None => ActorCell::restored(
                Pid(a.pid),
                s.module.clone(),
                Mailbox::from_image(img),
                vm.default_container().clone(),
            ),
        };
        let cell = Arc::new(cell);
        if has_signals {
            cell.has_signals.store(true, crate::sync::Ordering::SeqCst);
        }
        let tx = if s.meta.main == Some(a.pid) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            report = Some(rx);
            Some(tx)
        } else {
            None
        };
        // A file from before format 1.2 has no generators: such an actor starts a new stream.
        let rng = rngs.get(&a.pid).copied();
        vm.install_restored(cell.clone(), tx);
        started.push((cell, st, rng));
    }
    for (cell, st, rng) in started {
        vm.start_restored(cell, st, rng);
    }
    // Step 5: a root that had ended before the cut ends its container now.
    for c in running {
        if c.root().is_none_or(|root| vm.lookup(root).is_none()) {
            vm.end_container(&c, &crate::exit::ExitReason::Killed(Value::atom("lost")));
        }
    }
    report
}

fn restored_signal(r: &Reader, s: &v1::Signal) -> Signal {
    match *s {
        v1::Signal::Exit { from, reason } => Signal::Exit { from: Pid(from), reason: r.value(reason) },
        v1::Signal::Kill { reason } => Signal::Kill(r.value(reason)),
        v1::Signal::Interrupt { exc, mode } => Signal::Interrupt { exc: r.exception(&exc), mode },
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
