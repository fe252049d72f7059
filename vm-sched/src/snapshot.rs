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
//! 4. End the pause. The caller encodes and writes the file off the actor threads.
//!
//! **Restoring** ([`restore`], into a fresh [`Vm`] configured from the snapshot, with the grants
//! of the resuming command line):
//! 1. Set the counters and the clock: the VM's time goes on from the snapshot's
//!    ([`Timers::Frozen`]) or counts the downtime ([`Timers::Wall`]).
//! 2. Make the channels and tables (empty), open the resources again (under the new grants;
//!    what cannot be opened is `:lost` on use), then rebuild the values (`Reader`) and refill
//!    the channels and tables.
//! 3. Make every actor's cell with its mailbox, then start them all. Each runs from its program
//!    counter: a blocked actor runs its blocking instruction again (a receive, a channel
//!    operation, a sleep — with its remaining time, less the downtime under `Wall`). A native
//!    call that was in flight runs again if it may (`vm_io::rerun`), else `:unknown_outcome` is
//!    raised at the instruction.

use crate::cell::ActorCell;
use crate::chan::Channel;
use crate::mailbox::{Image, Mailbox, Signal};
use crate::pause::Waiting;
use crate::vm::{Outcome, Vm};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use vm_core::snapshot::{Reader, Snapshot, Writer, v1};
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

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Takes a snapshot of the running VM (steps 1 to 4 of the module docs). Returns it and how
/// long the actors were paused. Fails if the actors run more than one module (a REPL session
/// that loaded several programs): a snapshot holds one.
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
    let module = one_module(vm, &cut.cells)?;
    let snapshot = capture(vm, &module, settings, &cut);
    Ok((snapshot, started.elapsed(), cut))
}

/// The module every live actor runs.
fn one_module(vm: &Vm, cells: &[Arc<ActorCell>]) -> Result<Arc<vm_core::Module>, String> {
    let Some(first) = cells.first() else { return Err("there is no actor to snapshot".into()) };
    // Container membership, names and restart types are not in snapshot format 1: a VM of
    // several containers is refused rather than resumed as one.
    if let Some(c) = cells.iter().find(|c| !Arc::ptr_eq(&c.container, vm.default_container())) {
        return Err(format!(
            "actor {} belongs to container {}: a VM of several containers cannot be snapshotted yet",
            c.pid,
            c.container.name()
        ));
    }
    if cells.iter().any(|c| !Arc::ptr_eq(&c.module, &first.module)) {
        return Err("the actors run different programs (loaded separately); a snapshot holds one".into());
    }
    Ok(first.module.clone())
}

/// Step 3, under the pause.
fn capture(vm: &Vm, module: &Arc<vm_core::Module>, settings: Settings, cut: &crate::pause::Cut) -> Snapshot {
    let now = Instant::now();
    let mut w = Writer::new();
    // Sized once: growing a vector of 100,000 actors copies it and faults in fresh pages
    // several times over, all under the pause.
    let mut actors = Vec::with_capacity(cut.cells.len());
    let mut limits = Vec::new();
    for cell in &cut.cells {
        // A reserved state is read in its slot; a published one says what it waits for.
        let read = cell.slot.read(cut.epoch, |st, waiting| {
            let waiting = waiting.unwrap_or_else(|| vm.waiting_of(cell.pid));
            (w.state(st), waiting)
        });
        let Some((state, waiting)) = read else { continue };
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
        module: module.clone(),
        values: w.finish(),
        actors,
        channels,
        tables,
        resources,
        limits,
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

/// Restores `s` into `vm`, a fresh VM configured from it (steps 1 to 3 of the module docs).
/// Returns the main actor's outcome channel, if the snapshot has a main actor.
pub async fn restore(
    vm: &Vm,
    s: Snapshot,
    timers: Timers,
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
    for r in &s.resources {
        if let Value::Res(h) = &vm.shared.io.reopen(r.id, r.owner, &r.label, &r.recipe).await {
            res.insert(r.id, h.clone());
        }
    }
    let reader = Reader::new(s.values, chans, res);
    for (chan, ch) in made.iter().zip(&s.channels) {
        chan.refill(ch.buffer.iter().map(|&v| reader.value(v)).collect(), ch.closed);
    }
    for (table, t) in made_tables.iter().zip(&s.tables) {
        for &(k, v) in &t.entries {
            table.put(reader.value(k), reader.value(v));
        }
    }

    let mut report = None;
    let mut started = Vec::new();
    for a in &s.actors {
        let mut st = reader.state(&a.state);
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
                    st.resume(&s.module, Resume::Value(Value::atom("resumed")));
                } else if !vm_io::rerun::may_rerun(&name.name()) {
                    st.resume(&s.module, Resume::Raise(unknown_outcome(name)));
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
        let cell = Arc::new(ActorCell::restored(
            Pid(a.pid),
            s.module.clone(),
            Mailbox::from_image(img),
            vm.default_container().clone(),
        ));
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
        vm.install_restored(cell.clone(), tx);
        started.push((cell, st));
    }
    for (cell, st) in started {
        vm.start_restored(cell, st);
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
