//! Pausing the VM for a snapshot: a consistent cut of every actor, taken while no slice runs.
//!
//! Every actor's interpreter state lives in its own task, except while it is parked in a plain
//! receive: then it lies in the actor's [`Slot`], where the snapshotter reads it without waking
//! the actor. The protocol (one snapshot at a time: [`Vm::pause_all`], then
//! [`Vm::resume_after_pause`]):
//! 1. *Request.* The snapshotter sets the pause's epoch, then sweeps the actors once. For each
//!    it locks the slot: a state lying there is *reserved* for this epoch (the actor is parked in
//!    a receive whose message, if one comes, stays in the mailbox until the receive runs again,
//!    so the state and the mailbox agree); a publication of this epoch already there counts;
//!    otherwise the actor is *expected*, counted in `outstanding`, and sent the control signal
//!    `Signal::Pause` after the lock is released (the mailbox's wake protocol: a parked actor is
//!    woken, a running one sees it at its next safe point).
//! 2. *Parked states stay put.* Once the VM is *armed* (its first pause armed it, before setting
//!    the epoch; a run that snapshots on a schedule arms it at its start: [`Vm::arm_pauses`]),
//!    an actor that parks in a receive (the one parked inside the step) moves its boxed state
//!    into its slot first and takes it back when woken, before it runs anything
//!    ([`Slot::take`], which reads the epoch under the slot's lock). A state reserved for the
//!    pause in progress is left there: the actor waits for the end of the pause without
//!    publishing, then takes it back and runs the receive again. Before that, a parked actor
//!    keeps its state in its task (no slot lock on the hot path of a VM that never pauses): the
//!    sweep finds its slot empty and expects it, and the pause signal wakes it to publish at its
//!    gate (step 4), as for a running actor. Whether an actor used its slot is its own choice,
//!    made with a plain load: the sweep is correct either way.
//! 3. *Waits give way.* Every other wait already races the control port and is cancel-safe
//!    (that is what interrupts rely on): a receive takes nothing, a channel select either
//!    cancels with nothing transferred or returns the case that committed first, which the
//!    actor applies. A pause signal changes nothing else (`exit::on_signal` ignores it), so the
//!    actor's program counter stays on its blocking instruction, which runs again after the
//!    pause — a timed wait with the time it had left ([`Vm::timed_wait_ms`]), so the pause does
//!    not lengthen it.
//! 4. *Gate.* At its safe point (the top of its driver loop, before a slice: [`gate`]) an actor
//!    publishes a clone of its state into its slot and waits for the end of the pause. If the
//!    snapshotter expected it, it decrements `outstanding`; the one that brings it to zero
//!    notifies the snapshotter (once per pause). From the request on, no actor starts a slice.
//! 5. *Natives in flight are not disturbed.* An awaited I/O operation may have half happened (a
//!    write), and a blocking call cannot be stopped, so their waits ignore the pause signal and
//!    are wrapped in [`Pausable`] instead: polled during a pause, it polls the wait once (one
//!    that completed completes, and the actor publishes at its gate), else publishes the state
//!    with the native in flight and leaves the wait unpolled until the pause ends. The snapshot
//!    never waits for such a call.
//! 6. *Release.* Once every live actor is reserved or has published, nothing runs: the
//!    snapshotter reads what it needs (a reserved state in its slot, under the slot's lock;
//!    values are shared: this copies references), ends the pause, opens the gates, and wakes
//!    the frozen waits that were polled meanwhile. Encoding and writing come after, off the
//!    actor threads.
//!
//! An actor that ends during a pause is counted live until its exit is complete (links and
//! monitors notified), and the snapshotter waits for it (it never publishes, so the
//! snapshotter also looks every 2 ms, as it does for actors spawned during the pause), so its
//! exit signals and `DOWN` messages are in the others' mailboxes. A mode-0 interrupt sent
//! during a pause reaches an actor whose state is reserved (it is parked in a receive, as the
//! snapshot records it) and is dropped for the others, as for a running actor.
//!
//! The slot protocol (steps 1, 2 and 4) is model-checked with loom (`loom_tests` below).

use crate::cell::ActorCell;
use crate::mailbox::Signal;
use crate::prio::Attention;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use crate::vm::Vm;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use vm_core::{ActorState, Atom, Pid};

/// What a published actor was waiting for, as a restore needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Waiting {
    /// Runnable, or waiting with no deadline: the restore just runs it.
    Nothing,
    /// A wait with a deadline.
    Until(Instant),
    /// A native call in flight.
    Native(Atom),
}

/// One actor's contribution to a snapshot.
pub(crate) struct Published {
    pub(crate) state: ActorState,
    pub(crate) waiting: Waiting,
}

/// The actors a pause caught, in pid order, each reserved or published for `epoch` (read them
/// with [`Slot::read`] before the pause ends).
pub(crate) struct Cut {
    pub(crate) epoch: u64,
    pub(crate) cells: Vec<Arc<ActorCell>>,
}

/// An actor's state while it is parked in a receive, and its publications (see the module
/// docs). A lock of its own, taken twice per park by the actor and once per pause by the
/// snapshotter.
#[derive(Default)]
pub(crate) struct Slot {
    inner: Mutex<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    /// The actor's state while it is parked in a receive.
    state: Option<Box<ActorState>>,
    /// What pauses noted here, allocated at the first one so that an idle actor stays small.
    marks: Option<Box<Marks>>,
}

#[derive(Default)]
struct Marks {
    /// The epoch of the pause that reserved `state` (0: none): the actor leaves it there until
    /// that pause ends.
    reserved: u64,
    /// The epoch of the pause that waits for this actor's publication (0: none).
    expected: u64,
    /// The latest publication, with its epoch.
    published: Option<(u64, Published)>,
}

impl SlotInner {
    fn marks(&mut self) -> &mut Marks {
        self.marks.get_or_insert_with(Box::default)
    }

    fn reserved(&self) -> u64 {
        self.marks.as_ref().map_or(0, |m| m.reserved)
    }

    fn published(&self, epoch: u64) -> bool {
        self.marks.as_ref().is_some_and(|m| m.published.as_ref().is_some_and(|(e, _)| *e == epoch))
    }
}

/// What the sweep (step 1) found in a slot.
#[derive(Debug, PartialEq)]
pub(crate) enum Swept {
    /// A parked state, now reserved.
    Reserved,
    /// A publication of this epoch (the actor reached its gate first).
    Published,
    /// Neither: the actor is expected to publish (and was counted in `outstanding`).
    Expected,
}

/// What the actor found when it came to take its state back (step 2).
#[derive(Debug)]
pub(crate) enum Taken {
    /// Its state.
    State(Box<ActorState>),
    /// Reserved for the pause in progress: wait for its end ([`reclaim`]).
    Reserved,
    /// Nothing there (a bug; the actor cannot go on).
    Missing,
}

impl Slot {
    /// Step 2: the actor parks with its state here.
    #[inline]
    pub(crate) fn put(&self, st: Box<ActorState>) {
        lock(&self.inner).state = Some(st);
    }

    /// Step 2: the actor takes its state back, unless the pause in progress reserved it. The
    /// epoch is read under the lock, so it is at least the one that reserved the state.
    #[inline]
    pub(crate) fn take(&self, epoch: &AtomicU64) -> Taken {
        let mut g = lock(&self.inner);
        if let Some(m) = &mut g.marks
            && m.reserved != 0
        {
            if m.reserved == epoch.load(Ordering::Acquire) {
                return Taken::Reserved;
            }
            m.reserved = 0;
        }
        match g.state.take() {
            Some(st) => Taken::State(st),
            None => Taken::Missing,
        }
    }

    /// Step 1: reserves a parked state for `epoch`, or counts the actor in `outstanding` (under
    /// the lock, so that its publication, which decrements, comes after).
    pub(crate) fn sweep(&self, epoch: u64, outstanding: &AtomicUsize) -> Swept {
        let mut g = lock(&self.inner);
        if g.state.is_some() {
            g.marks().reserved = epoch;
            Swept::Reserved
        } else if g.published(epoch) {
            Swept::Published
        } else {
            g.marks().expected = epoch;
            outstanding.fetch_add(1, Ordering::AcqRel);
            Swept::Expected
        }
    }

    /// Step 4: publishes for `epoch`. True if the snapshotter expected it.
    pub(crate) fn publish(&self, epoch: u64, p: Published) -> bool {
        let mut g = lock(&self.inner);
        let m = g.marks();
        m.published = Some((epoch, p));
        std::mem::replace(&mut m.expected, 0) == epoch
    }

    /// Whether the actor is caught by the pause `epoch` (reserved or published).
    fn settled(&self, epoch: u64) -> bool {
        let g = lock(&self.inner);
        (g.reserved() == epoch && g.state.is_some()) || g.published(epoch)
    }

    /// Step 6, under the pause `epoch`: calls `f` with the reserved state (and `None`) or with
    /// the published one and what it waits for (the publication is taken). `None` if neither
    /// is there.
    pub(crate) fn read<R>(&self, epoch: u64, f: impl FnOnce(&ActorState, Option<Waiting>) -> R) -> Option<R> {
        let mut g = lock(&self.inner);
        if g.reserved() == epoch
            && let Some(st) = &g.state
        {
            return Some(f(st, None));
        }
        match g.marks.as_mut().and_then(|m| m.published.take()) {
            Some((e, p)) if e == epoch => Some(f(&p.state, Some(p.waiting))),
            _ => None,
        }
    }
}

/// The pause state of one VM.
#[derive(Default)]
pub(crate) struct Pause {
    /// Non-zero while a snapshot is being taken.
    epoch: AtomicU64,
    /// Parked receives leave their state in their slot (step 2): set by the first pause (or
    /// [`Vm::arm_pauses`]) and never cleared.
    armed: AtomicBool,
    next_epoch: AtomicU64,
    /// Publications the snapshotter still waits for, plus one it holds during the sweep.
    outstanding: AtomicUsize,
    /// Publications in this pause, expected or not (an actor spawned during the pause, or one
    /// that reached its gate before the sweep).
    got: AtomicUsize,
    /// Frozen native waits polled during the pause (woken at its end).
    poked: Mutex<Vec<u64>>,
    /// The snapshotter waits here for the last expected publication.
    changed: tokio::sync::Notify,
    /// Gates and reserved actors wait here for the end of the pause.
    released: tokio::sync::Notify,
    /// Timed waits to run again with their own deadline (a wait a pause cut short, or a
    /// restored one): by pid.
    deadlines: Mutex<HashMap<u64, Instant>>,
    /// How many `deadlines` there are, so that other timed waits skip the lock.
    deadlines_left: AtomicUsize,
    /// Held by whoever pauses the VM (a snapshot, an orphan census): one pause at a time.
    pub(crate) exclusive: tokio::sync::Mutex<()>,
}

impl Pause {
    /// The epoch of the pause in progress, or 0.
    #[inline]
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Step 4; the publication that completes the expected ones notifies the snapshotter (a
    /// stored permit if it is not waiting yet).
    fn publish(&self, cell: &ActorCell, epoch: u64, state: ActorState, waiting: Waiting) {
        self.got.fetch_add(1, Ordering::AcqRel);
        if cell.slot.publish(epoch, Published { state, waiting })
            && self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.changed.notify_one();
        }
    }
}

/// Whether a pause is in progress (one load; a driver asks only when the slice start's word
/// says one may be: `prio`, rule 6).
#[inline]
pub(crate) fn requested(vm: &Vm) -> bool {
    vm.shared.pause.epoch() != 0
}

/// Step 2: whether an actor parking in a receive leaves its state in its slot (one relaxed
/// load: the sweep is correct whatever the actor decided, see the module docs).
#[inline]
pub(crate) fn armed(vm: &Vm) -> bool {
    vm.shared.pause.armed.load(Ordering::Relaxed)
}

/// Step 2: the actor woken from a parked receive takes its state back ([`Taken::Reserved`]:
/// await [`reclaim`]).
#[inline]
pub(crate) fn take_back(vm: &Vm, cell: &ActorCell) -> Taken {
    cell.slot.take(&vm.shared.pause.epoch)
}

/// Step 2 when the state is reserved: waits for the end of the pause, then takes it back.
/// `None` if it is missing. Boxed: it is rare, and every actor's task would otherwise carry it.
pub(crate) fn reclaim<'a>(
    vm: &'a Vm,
    cell: &'a ActorCell,
) -> Pin<Box<dyn Future<Output = Option<Box<ActorState>>> + Send + 'a>> {
    Box::pin(async move {
        let pause = &vm.shared.pause;
        loop {
            let released = pause.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match cell.slot.take(&pause.epoch) {
                Taken::State(st) => return Some(st),
                Taken::Missing => return None,
                Taken::Reserved => released.await,
            }
        }
    })
}

/// Step 4: at a safe point, publishes the state and waits out the pause in progress. Returns a
/// boxed future: it is rare, and every actor's task would otherwise carry its state.
pub(crate) fn gate<'a>(
    vm: &'a Vm,
    cell: &'a ActorCell,
    st: &'a ActorState,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(wait_at_gate(vm, cell, st))
}

async fn wait_at_gate(vm: &Vm, cell: &ActorCell, st: &ActorState) {
    let pause = &vm.shared.pause;
    let released = pause.released.notified();
    tokio::pin!(released);
    released.as_mut().enable();
    let epoch = pause.epoch();
    if epoch == 0 {
        return;
    }
    pause.publish(cell, epoch, st.clone(), vm.waiting_of(cell.pid));
    released.await;
}

/// Step 3 for a timed wait that a pause cut short: it runs again with the deadline it had.
pub(crate) fn cut_short(vm: &Vm, pid: Pid, deadline: Instant) {
    vm.set_deadline(pid, deadline);
}

/// Step 5: the wait of a native call in flight, which a pause leaves alone (see the module
/// docs). Awaited boxed, as native waits are.
pub(crate) struct Pausable<'a, F> {
    inner: F,
    vm: &'a Vm,
    cell: &'a ActorCell,
    st: &'a ActorState,
    native: &'static str,
    /// The epoch this wait froze in (0: not frozen).
    frozen: u64,
}

impl<'a, F> Pausable<'a, F> {
    /// Wraps the wait `inner` of an actor whose state is `st`, calling `native`.
    pub(crate) fn new(
        vm: &'a Vm,
        cell: &'a ActorCell,
        st: &'a ActorState,
        native: &'static str,
        inner: F,
    ) -> Self {
        Pausable { inner, vm, cell, st, native, frozen: 0 }
    }
}

impl<F: Future + Unpin> Future for Pausable<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let pause = &self.vm.shared.pause;
        let epoch = pause.epoch();
        if epoch == 0 {
            return Pin::new(&mut self.inner).poll(cx);
        }
        let pid = self.cell.pid.0;
        if self.frozen == epoch {
            // Leave the wait alone, but wake this task when the pause ends.
            lock(&pause.poked).push(pid);
            return Poll::Pending;
        }
        let out = Pin::new(&mut self.inner).poll(cx);
        if out.is_pending() {
            self.frozen = epoch;
            pause.publish(self.cell, epoch, self.st.clone(), Waiting::Native(Atom::new(self.native)));
        }
        out
    }
}

impl Vm {
    /// Steps 1 to 5: pauses every actor and returns the cut, the actors still paused.
    /// [`Vm::resume_after_pause`] ends the pause.
    pub(crate) async fn pause_all(&self) -> Cut {
        let pause = &self.shared.pause;
        self.arm_pauses();
        let epoch = pause.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        pause.got.store(0, Ordering::SeqCst);
        pause.outstanding.store(1, Ordering::SeqCst);
        // The slice start's word first (`prio`, rule 6): a driver that sees the epoch has seen
        // the bit that sends it to look.
        self.shared.prio.attention.set(Attention::PAUSE);
        pause.epoch.store(epoch, Ordering::SeqCst);
        let cells = self.cells();
        let mut published = 0;
        let mut expected = Vec::new();
        for cell in &cells {
            match cell.slot.sweep(epoch, &pause.outstanding) {
                Swept::Reserved => {}
                Swept::Published => published += 1,
                Swept::Expected => expected.push(cell.clone()),
            }
        }
        // Every publication this pause should see: those found and those asked for.
        let publications = published + expected.len();
        for cell in expected {
            self.signal_cell(&cell, Signal::Pause);
        }
        // The sweep's own count goes: whoever brings `outstanding` to zero saw the last one in.
        let mut all_in = pause.outstanding.fetch_sub(1, Ordering::AcqRel) == 1;
        loop {
            if !all_in {
                // Exits, which also end the wait, do not notify: look again now and then.
                let _ = tokio::time::timeout(Duration::from_millis(2), pause.changed.notified()).await;
                all_in = pause.outstanding.load(Ordering::Acquire) == 0;
            }
            // The sweep's actors are the cut when every expected one published, nobody else did
            // (no actor came) and none is still ending.
            if all_in && pause.got.load(Ordering::Acquire) == publications && cells.len() == self.live() {
                return Cut { epoch, cells };
            }
            // Actors came or went: check each one.
            let now = self.cells();
            if now.len() >= self.live() && now.iter().all(|c| c.slot.settled(epoch)) {
                return Cut { epoch, cells: now };
            }
            all_in = false;
        }
    }

    /// Step 2: from now on, actors parking in a receive leave their state in their slot, where
    /// a pause reads it without waking them. The first pause does this itself (and wakes the
    /// actors parked before it); a run that will pause often (`--snapshot-every`) does it at
    /// its start.
    pub(crate) fn arm_pauses(&self) {
        self.shared.pause.armed.store(true, Ordering::SeqCst);
    }

    /// What `pid` waits for, as its publication records it: a deadline a pause cut short or a
    /// restore gave it, or nothing.
    pub(crate) fn waiting_of(&self, pid: Pid) -> Waiting {
        let pause = &self.shared.pause;
        if pause.deadlines_left.load(Ordering::Relaxed) == 0 {
            return Waiting::Nothing;
        }
        match lock(&pause.deadlines).get(&pid.0) {
            Some(&deadline) => Waiting::Until(deadline),
            None => Waiting::Nothing,
        }
    }

    /// Step 6: ends the pause; gates open, reserved states go back, frozen native waits carry
    /// on.
    pub(crate) fn resume_after_pause(&self) {
        let pause = &self.shared.pause;
        pause.epoch.store(0, Ordering::SeqCst);
        self.shared.prio.attention.clear(Attention::PAUSE);
        pause.released.notify_waiters();
        let poked = std::mem::take(&mut *lock(&pause.poked));
        for pid in poked {
            if let Some(cell) = self.lookup(Pid(pid)) {
                cell.mailbox.wake_task();
            }
        }
    }

    /// Records that `pid`'s next timed wait ends at `deadline` (a wait a pause cut short, or a
    /// restored one), whatever its instruction's timeout.
    pub(crate) fn set_deadline(&self, pid: Pid, deadline: Instant) {
        let pause = &self.shared.pause;
        if lock(&pause.deadlines).insert(pid.0, deadline).is_none() {
            pause.deadlines_left.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The timeout of a timed wait that `pid` starts with `ms`: what is left until its recorded
    /// deadline, if a pause cut it short or it was restored.
    #[inline]
    pub(crate) fn timed_wait_ms(&self, pid: Pid, ms: u64) -> u64 {
        let pause = &self.shared.pause;
        if pause.deadlines_left.load(Ordering::Relaxed) == 0 {
            return ms;
        }
        self.take_deadline(pid).map_or(ms, |d| d.saturating_duration_since(Instant::now()).as_millis() as u64)
    }

    #[cold]
    fn take_deadline(&self, pid: Pid) -> Option<Instant> {
        let pause = &self.shared.pause;
        let d = lock(&pause.deadlines).remove(&pid.0)?;
        pause.deadlines_left.fetch_sub(1, Ordering::SeqCst);
        Some(d)
    }
}

/// Model checks of the slot protocol (steps 1, 2, 4 and 6): the snapshotter and an actor that
/// wakes, takes its state back (or has it in hand, when it parked before the VM was armed) and
/// runs a receive race, and whatever the interleaving the snapshot sees the state and the mailbox
/// agree (the message is in exactly one of them), and nobody waits forever. The ends of a pause
/// are modelled as spins on the epoch (tokio's `Notify` is not loom's), a receive as taking one
/// from a count of queued messages, and the pause signal as the mailbox delivers it: set under
/// the mailbox's lock, which a parked actor waits on (a condition variable standing for its
/// waker).
///
/// Why the parked actor does not spin: an earlier model waited for the signal by spinning on a
/// `swap` of a flag. Loom orders the stores to one atomic only as far as the threads have
/// synchronised, and a read-modify-write may read any store that is newest in that partial
/// order, so a spinning `swap` could read its own earlier `false` forever, never the
/// snapshotter's `true` (a plain load after a yield may not, which is why the spins on the epoch
/// end): an endless path, which loom reports as "exceeded maximum number of branches". The
/// runtime never spins there: the signal is queued under the mailbox's lock and wakes the task.
#[cfg(all(test, vm_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::{Arc as LArc, Condvar};
    use loom::thread;

    fn state(received: u64) -> Box<ActorState> {
        Box::new(ActorState {
            regs: Vec::new(),
            frames: Vec::new(),
            handlers: Vec::new(),
            rare: None,
            reductions: received,
            rng: 1,
            max_frames: 1,
            meter: Default::default(),
        })
    }

    /// The actor's mailbox, as far as the model needs it.
    #[derive(Default)]
    struct Mb {
        /// Messages queued.
        queued: u64,
        /// The pause signal, queued for an expected actor.
        signal: bool,
        /// The snapshot is done (the model's end; it wakes the actor too).
        finished: bool,
    }

    struct World {
        epoch: AtomicU64,
        /// `Pause::armed`.
        armed: AtomicBool,
        outstanding: AtomicUsize,
        slot: Slot,
        mailbox: Mutex<Mb>,
        /// Wakes the parked actor (its waker).
        woken: Condvar,
    }

    impl World {
        fn new(queued: u64, armed: bool) -> LArc<World> {
            LArc::new(World {
                epoch: AtomicU64::new(0),
                armed: AtomicBool::new(armed),
                outstanding: AtomicUsize::new(0),
                slot: Slot::default(),
                mailbox: Mutex::new(Mb { queued, ..Mb::default() }),
                woken: Condvar::new(),
            })
        }

        /// Parks, with the state in the slot if the VM is armed (the driver's choice, a
        /// relaxed load) or else in hand, until the pause signal or the end; woken by the
        /// signal, it takes the state back, publishes at its gate and parks again. Returns the
        /// state if it ends parked with it in hand.
        fn park(&self, mut st: Box<ActorState>) -> Option<Box<ActorState>> {
            loop {
                let kept = if self.armed.load(Ordering::Relaxed) {
                    self.slot.put(st);
                    None
                } else {
                    Some(st)
                };
                {
                    let mut mb = lock(&self.mailbox);
                    while !mb.signal && !mb.finished {
                        mb = self.woken.wait(mb).unwrap_or_else(|p| p.into_inner());
                    }
                    if !std::mem::take(&mut mb.signal) {
                        return kept;
                    }
                }
                st = match kept {
                    Some(st) => st,
                    None => self.take_back(),
                };
                self.gate(&st);
            }
        }

        /// Queues the pause signal and wakes the actor.
        fn signal(&self) {
            lock(&self.mailbox).signal = true;
            self.woken.notify_one();
        }

        /// The actor's safe point: publish and wait out a pause in progress.
        fn gate(&self, st: &ActorState) {
            let e = self.epoch.load(Ordering::Acquire);
            if e == 0 {
                return;
            }
            let p = Published { state: st.clone(), waiting: Waiting::Nothing };
            if self.slot.publish(e, p) {
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
            }
            while self.epoch.load(Ordering::Acquire) == e {
                thread::yield_now();
            }
        }

        /// Step 2 after a wake: take the state back, or wait out the pause that reserved it.
        fn take_back(&self) -> Box<ActorState> {
            loop {
                match self.slot.take(&self.epoch) {
                    Taken::State(st) => return st,
                    Taken::Reserved => thread::yield_now(),
                    Taken::Missing => panic!("the parked state is missing"),
                }
            }
        }

        /// The receive instruction run again: takes a queued message into the state.
        fn receive(&self, st: &mut ActorState) {
            let mut mb = lock(&self.mailbox);
            if mb.queued > 0 {
                mb.queued -= 1;
                st.reductions += 1;
            }
        }

        /// A woken actor's round with its state: the safe point, the receive run again, the
        /// safe point after it, and the park.
        fn receive_and_park(&self, mut st: Box<ActorState>) -> Option<Box<ActorState>> {
            self.gate(&st);
            self.receive(&mut st);
            self.gate(&st);
            self.park(st)
        }

        /// The snapshotter: arm, sweep, signal the expected actor, wait for it, read the cut,
        /// end the pause. Returns what the cut holds: messages received plus queued.
        fn snapshot(&self) -> u64 {
            self.armed.store(true, Ordering::SeqCst);
            self.outstanding.store(1, Ordering::SeqCst);
            self.epoch.store(1, Ordering::SeqCst);
            if self.slot.sweep(1, &self.outstanding) == Swept::Expected {
                self.signal();
            }
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            while self.outstanding.load(Ordering::Acquire) != 0 {
                thread::yield_now();
            }
            let received = self.slot.read(1, |st, _| st.reductions).expect("the actor is in the cut");
            let queued = lock(&self.mailbox).queued;
            self.epoch.store(0, Ordering::SeqCst);
            lock(&self.mailbox).finished = true;
            self.woken.notify_one();
            received + queued
        }

        /// Where the actor's state ended: in hand (returned by `park`) or in the slot.
        fn final_state(&self, kept: Option<Box<ActorState>>) -> Box<ActorState> {
            match kept {
                Some(st) => st,
                None => match self.slot.take(&self.epoch) {
                    Taken::State(st) => st,
                    other => panic!("the actor's state is not back in its slot: {other:?}"),
                },
            }
        }
    }

    /// The spins that model the pause's ends need a bound on preemptions to keep the search finite.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut m = loom::model::Builder::new();
        m.preemption_bound = Some(2);
        m.check(f);
    }

    #[test]
    fn loom_a_parked_state_is_read_in_place_or_published_and_agrees_with_the_mailbox() {
        model(|| {
            // Armed by an earlier pause, parked with one message just delivered: the actor is
            // waking.
            let w = World::new(1, true);
            w.slot.put(state(0));
            let actor = {
                let w = w.clone();
                thread::spawn(move || w.receive_and_park(w.take_back()))
            };
            assert_eq!(w.snapshot(), 1, "the message is in exactly one of state and mailbox");
            let kept = actor.join().unwrap();
            assert!(kept.is_none(), "an armed VM's parked actor keeps its state in its slot");
            assert_eq!(w.final_state(kept).reductions, 1);
        });
    }

    #[test]
    fn loom_a_state_parked_before_the_first_pause_is_published_and_agrees_with_the_mailbox() {
        model(|| {
            // Not armed yet, the state in hand and one message just delivered: the actor is
            // waking (and then parks) as the first pause arms the VM and sweeps.
            let w = World::new(1, false);
            let actor = {
                let w = w.clone();
                thread::spawn(move || w.receive_and_park(state(0)))
            };
            assert_eq!(w.snapshot(), 1, "the message is in exactly one of state and mailbox");
            let kept = actor.join().unwrap();
            assert_eq!(w.final_state(kept).reductions, 1);
        });
    }

    #[test]
    fn loom_an_idle_actor_parked_before_the_first_pause_is_woken_to_publish() {
        model(|| {
            // Not armed, idle in its receive with the state in hand: only the pause signal wakes
            // it; it publishes and parks again, now in its slot.
            let w = World::new(0, false);
            let actor = {
                let w = w.clone();
                thread::spawn(move || w.park(state(0)))
            };
            assert_eq!(w.snapshot(), 0);
            let kept = actor.join().unwrap();
            assert!(kept.is_none(), "woken by the first pause, it parks again in its slot");
            assert_eq!(w.final_state(kept).reductions, 0);
        });
    }
}
