//! Pausing the VM for a snapshot: a consistent cut of every actor, taken while no slice runs.
//!
//! Every actor's interpreter state lives in its own task, so a snapshot asks each actor for it.
//! The protocol (one snapshot at a time: [`Vm::pause_all`], then [`Vm::resume_after_pause`]):
//! 1. *Request.* The snapshotter sets the pause's epoch and sends every actor the control signal
//!    `Signal::Pause` (the mailbox's wake protocol: a parked actor is woken, a running one sees
//!    it at its next safe point).
//! 2. *Waits give way.* Every wait already races the control port and is cancel-safe (that is
//!    what interrupts rely on): a receive takes nothing, a channel select either cancels with
//!    nothing transferred or returns the case that committed first, which the actor applies.
//!    A pause signal changes nothing else (`exit::on_signal` ignores it), so the actor's program
//!    counter stays on its blocking instruction, which runs again after the pause — a timed wait
//!    with the time it had left ([`Vm::timed_wait_ms`]), so the pause does not lengthen it.
//! 3. *Gate.* At its safe point (the top of its driver loop, before a slice: [`gate`]) the actor
//!    publishes a clone of its state and waits for the end of the pause. From the request on, no
//!    actor starts a slice.
//! 4. *Natives in flight are not disturbed.* An awaited I/O operation may have half happened (a
//!    write), and a blocking call cannot be stopped, so their waits ignore the pause signal and
//!    are wrapped in [`Pausable`] instead: polled during a pause, it polls the wait once (one
//!    that completed completes, and the actor publishes at its gate), else publishes the state
//!    with the native in flight and leaves the wait unpolled until the pause ends. The snapshot
//!    never waits for such a call.
//! 5. *Release.* Once every live actor has published, nothing runs: the snapshotter reads what it
//!    needs (values are shared: this copies references), ends the pause, opens the gates and
//!    wakes the frozen waits that were polled meanwhile. Encoding and writing come after, off the
//!    actor threads.
//!
//! An actor that ends during a pause is counted live until its exit is complete (links and
//! monitors notified), and the snapshotter waits for it, so its exit signals and `DOWN`
//! messages are in the others' mailboxes. A mode-0 interrupt sent during a pause finds no
//! soft-blocked actor and is dropped, as for a running actor.

use crate::cell::ActorCell;
use crate::mailbox::Signal;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use crate::vm::Vm;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
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

/// The actors' published states, by pid, taken by the snapshotter under a pause.
pub(crate) type Cut = HashMap<u64, Published>;

/// The pause state of one VM.
#[derive(Default)]
pub(crate) struct Pause {
    /// Non-zero while a snapshot is being taken.
    epoch: AtomicU64,
    next_epoch: AtomicU64,
    published: Mutex<Cut>,
    /// Frozen native waits polled during the pause (woken at its end).
    poked: Mutex<Vec<u64>>,
    /// The snapshotter waits here for publications.
    changed: tokio::sync::Notify,
    /// Gates wait here for the end of the pause.
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

    fn publish(&self, pid: u64, state: ActorState, waiting: Waiting) {
        lock(&self.published).insert(pid, Published { state, waiting });
        self.changed.notify_waiters();
    }
}

/// Whether a pause is in progress (one load: actors ask at every safe point).
#[inline]
pub(crate) fn requested(vm: &Vm) -> bool {
    vm.shared.pause.epoch() != 0
}

/// Step 3: at a safe point, publishes the state and waits out the pause in progress. Returns a
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
    if pause.epoch() == 0 {
        return;
    }
    let waiting = match lock(&pause.deadlines).get(&cell.pid.0) {
        Some(&deadline) => Waiting::Until(deadline),
        None => Waiting::Nothing,
    };
    pause.publish(cell.pid.0, st.clone(), waiting);
    released.await;
}

/// Step 2 for a timed wait that a pause cut short: it runs again with the deadline it had.
pub(crate) fn cut_short(vm: &Vm, pid: Pid, deadline: Instant) {
    vm.set_deadline(pid, deadline);
}

/// Step 4: the wait of a native call in flight, which a pause leaves alone (see the module
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
            pause.publish(pid, self.st.clone(), Waiting::Native(Atom::new(self.native)));
        }
        out
    }
}

impl Vm {
    /// Steps 1 to 4: pauses every actor and returns what each published, the actors still
    /// paused. [`Vm::resume_after_pause`] ends the pause.
    pub(crate) async fn pause_all(&self) -> Cut {
        let pause = &self.shared.pause;
        let epoch = pause.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        pause.epoch.store(epoch, Ordering::Release);
        for cell in self.cells() {
            self.signal_cell(&cell, Signal::Pause);
        }
        loop {
            let changed = pause.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Counting first: the full check walks every actor, and publications keep waking
            // this loop until they are all in.
            if lock(&pause.published).len() >= self.live() {
                let cells = self.cells();
                let published = lock(&pause.published);
                if cells.iter().all(|c| published.contains_key(&c.pid.0)) {
                    break;
                }
            }
            // Exits, which also end the wait, do not notify: look again now and then.
            let _ = tokio::time::timeout(Duration::from_millis(2), changed).await;
        }
        std::mem::take(&mut *lock(&pause.published))
    }

    /// Step 5: ends the pause; gates open and frozen native waits carry on.
    pub(crate) fn resume_after_pause(&self) {
        let pause = &self.shared.pause;
        pause.epoch.store(0, Ordering::Release);
        lock(&pause.published).clear();
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
