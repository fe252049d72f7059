//! Orphaned channels: an actor waiting on channels that no other live actor can reach gets
//! `:orphaned` instead of hanging. Found by reachability (`reach`), not by counting handles, so
//! it does not matter how many copies of a handle the waiter itself holds, and parking costs
//! nothing but a description of the wait.
//!
//! **The protocol:**
//! 1. *Orphanable waits.* A channel wait with no deadline and no mailbox or socket case (only
//!    its channels can end it) describes itself in the mailbox's `waiting` as `Wait::Chan` with
//!    `orphanable` set, naming its channels, and arms the detector (`Orphans::arm`: one load
//!    while it is armed already). The actor's [`WaitId`] (position and fuel spent, recorded
//!    after the slice that blocked) names the wait.
//! 2. *The detector* is one task per VM. While armed it looks every [`TICK`] at every actor's
//!    `waiting` and notes when it first saw each orphanable wait; when it sees none it disarms
//!    (and looks once more, so a wait that armed meanwhile is not missed). While every wait it
//!    sees is one it saw last time and a census has judged, the interval doubles up to
//!    [`MAX_TICK`] (an idle server with a parked worker pool costs a look ten times a second);
//!    any change brings it back to [`TICK`].
//! 3. *When to take a census.* When a wait has been seen for [`SUSPECT_AFTER`] and the last
//!    census did not judge it, nor find each of its channels reached by some other actor (a
//!    pool's workers park again after every job, each time in a new wait on a channel the last
//!    census found held: only the holders letting go could make those hopeless, and the next
//!    two triggers catch that; see `Orphans::settled`); or an actor has exited since the last census while any wait is
//!    that old (an exit is how the last other holder usually lets go); or the last census is
//!    older than the re-check interval, which doubles from [`SUSPECT_AFTER`] up to
//!    [`MAX_RECHECK`] while censuses find nothing (a holder that overwrote its last copy and
//!    went on running is noticed then); or at once when the VM has gone quiet with waits not
//!    judged yet (`Vm::wait_for_main` pokes the detector before it reports a deadlock). A
//!    census starts no sooner than [`MIN_GAP`], or twenty times the last census's duration,
//!    after the last: checking costs at most about 5 % of the VM's time.
//! 4. *The census* pauses every actor at a safe point (`pause`: a consistent cut; one pause at
//!    a time, shared with snapshots). Each orphanable wait is judged only if its actor's
//!    published state is still in the same wait (same `WaitId`). Every live actor's roots are
//!    walked (`reach`: registers, exceptions, mailbox messages and signals, nested values,
//!    buffered channel contents), and so is every container's table of published services,
//!    as a holder of its own ([`reach::PUBLISHED`]): what is published can be looked up again. A judged wait is *hopeless* when each of its channels is
//!    reached by no actor but the waiter and is neither closed nor holding a value.
//! 5. *Raising.* Before the pause ends, each hopeless waiter is sent `Signal::Orphaned` naming
//!    its `WaitId`. The actor takes it at the top of its driver loop, where it was about to run
//!    the blocked instruction again, and raises `:orphaned` there; a signal for a wait the actor
//!    is no longer in is dropped (`exit`). The pause then ends.
//!
//! Waiters reached only by one another (two receivers on a channel nobody else holds) are not
//! hopeless: each reaches the channel. When every actor waits, that is a deadlock, and its
//! report names the channel and who holds it (the last census's `holders`).
//!
//! **What this promises** (docs/language.md): an orphaned wait raises within 300 ms of the
//! moment the last other holder exits or of the moment the waiter parks on a channel nobody
//! else holds ([`MAX_TICK`] + [`SUSPECT_AFTER`] + [`TICK`], and a census), while censuses are
//! cheap (a census pauses every actor, about a microsecond or two each); within
//! [`MAX_RECHECK`] plus that when the last other holder drops its copy and goes on running.

use super::reach::{self, ChanWaiter, Reach};
use crate::cell::ActorCell;
use crate::exit::orphaned;
use crate::mailbox::{Signal, WaitId};
use crate::sync::{Ordering, lock};
use crate::vm::{Shared, Vm};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the armed detector looks at the waits while they change.
pub(crate) const TICK: Duration = Duration::from_millis(25);
/// How often it looks while they stay as judged.
pub(crate) const MAX_TICK: Duration = Duration::from_millis(100);
/// How long a wait is seen before a census judges it.
pub(crate) const SUSPECT_AFTER: Duration = Duration::from_millis(50);
/// The shortest time between two censuses.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(50);
/// The longest re-check interval while censuses find nothing new.
pub(crate) const MAX_RECHECK: Duration = Duration::from_secs(2);

/// Starts the VM's detector task (from `Vm::new`).
pub(crate) fn start(vm: &Vm) {
    let orphans = vm.shared.orphans.clone();
    tokio::spawn(detector(Arc::downgrade(&vm.shared), orphans));
}

/// Step 2 and 3: the detector loop.
async fn detector(weak: Weak<Shared>, orphans: Arc<reach::Orphans>) {
    // Orphanable waits seen, and when first seen, by pid.
    let mut seen: HashMap<u64, (WaitId, Instant)> = HashMap::new();
    let mut last: Option<(Instant, Duration)> = None;
    let mut exits_then = 0;
    let mut recheck = SUSPECT_AFTER;
    let mut tick = TICK;
    loop {
        if orphans.is_closed() {
            return;
        }
        if orphans.armed() {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = orphans.wake.notified() => {}
            }
        } else {
            orphans.wake.notified().await;
            continue;
        }
        let looked = Instant::now();
        let Some(shared) = weak.upgrade() else { return };
        let vm = Vm { shared };
        let cells = vm.cells();
        let mut waits = reach::orphanable_waits(&cells);
        if waits.is_empty() {
            orphans.disarm();
            waits = reach::orphanable_waits(&vm.cells());
            if waits.is_empty() {
                seen.clear();
                orphans.take_poke();
                continue;
            }
            orphans.arm();
        }
        let now = Instant::now();
        let before = seen.len();
        // By pid, so that a look costs time linear in the waits (ten thousand parked workers).
        let current: HashMap<u64, WaitId> = waits.iter().map(|w| (w.pid, w.wait)).collect();
        seen.retain(|pid, (id, _)| current.get(pid) == Some(id));
        let changed = seen.len() != before || seen.len() != waits.len();
        for w in &waits {
            seen.entry(w.pid).or_insert((w.wait, now));
        }
        tick = if changed || !orphans.settled(&waits) { TICK } else { (tick * 2).min(MAX_TICK) };
        let old: Vec<&ChanWaiter> =
            waits.iter().filter(|w| now.duration_since(seen[&w.pid].1) >= SUSPECT_AFTER).collect();
        tracing::trace!(waits = waits.len(), took_us = looked.elapsed().as_micros() as u64, "orphan look");
        let poked = orphans.take_poke();
        let exits = orphans.exits.load(Ordering::SeqCst);
        let unjudged = !orphans.settled(old.iter().copied());
        let due = match last {
            None => !old.is_empty(),
            Some((at, cost)) => {
                let gap = MIN_GAP.max(cost * 20);
                !old.is_empty()
                    && now.duration_since(at) >= gap
                    && (unjudged || exits != exits_then || now.duration_since(at) >= recheck)
            }
        };
        if !(poked || due) {
            continue;
        }
        exits_then = exits;
        let started = Instant::now();
        let raised = census(&vm, &waits).await;
        let took = started.elapsed();
        last = Some((Instant::now(), took));
        orphans.censuses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(waits = waits.len(), raised, took_us = took.as_micros() as u64, "orphan census");
        recheck = if raised > 0 || unjudged { SUSPECT_AFTER } else { (recheck * 2).min(MAX_RECHECK) };
    }
}

/// Steps 4 and 5: pauses every actor, judges `waits` and raises `:orphaned` in the hopeless
/// ones. Returns how many it raised. Does nothing while a snapshot holds the pause.
pub(crate) async fn census(vm: &Vm, waits: &[ChanWaiter]) -> usize {
    let _one_pause = vm.shared.pause.exclusive.lock().await;
    if crate::pause::requested(vm) {
        // A last snapshot left the VM paused: it is ending.
        return 0;
    }
    let cut = vm.pause_all().await;
    // Every actor is paused: exits counted by now are those this census sees.
    let exits = vm.shared.orphans.exits.load(Ordering::SeqCst);
    // Each actor's state, read once (reading takes a publication): the census is rare and
    // looks at a state twice, to judge the waits and to walk what it reaches.
    let states: HashMap<u64, vm_core::ActorState> = cut
        .cells
        .iter()
        .filter_map(|c| Some((c.pid.0, c.slot.read(cut.epoch, |st, _| st.clone())?)))
        .collect();
    let cells: Vec<Arc<ActorCell>> = vm.cells();
    // Judge only the waits their actors are still in.
    let judged: Vec<&ChanWaiter> =
        waits.iter().filter(|w| states.get(&w.pid).is_some_and(|st| WaitId::of(st) == w.wait)).collect();
    let targets: HashSet<u64> = judged.iter().flat_map(|w| w.chans.as_slice().iter().copied()).collect();
    let mut reach = Reach::default();
    if !targets.is_empty() {
        for cell in &cells {
            let Some(st) = states.get(&cell.pid.0) else { continue };
            // The mailbox is still: every actor is paused (a sender from outside, such as a
            // REPL, only adds values it already had).
            let queued: Vec<vm_core::Value> = cell.mailbox.with(|i| {
                let signals =
                    i.ext_ref().into_iter().flat_map(|e| e.signals.iter()).filter_map(reach::signal_roots);
                i.messages.iter().chain(signals).cloned().collect()
            });
            reach.walk(cell.pid.0, reach::state_roots(st).chain(queued.iter()), &targets);
        }
        // A published service can be looked up again by any actor allowed to, at any time: it
        // holds what it names, as an actor would.
        let published: Vec<vm_core::Value> = std::iter::once(vm.default_container().clone())
            .chain(vm.containers())
            .flat_map(|c| c.published_values())
            .collect();
        reach.walk(reach::PUBLISHED, published.iter(), &targets);
    }
    let mut raised = 0;
    let mut book = reach::Book { exits, ..reach::Book::default() };
    for w in judged {
        if reach.hopeless(w) {
            if let Some(cell) = cells.iter().find(|c| c.pid.0 == w.pid) {
                vm.signal_cell(cell, Signal::Orphaned { exc: orphaned(w.chans.as_slice()), at: w.wait });
                raised += 1;
            }
        } else {
            book.judged.insert(w.pid, w.wait);
            for id in w.chans.as_slice() {
                book.holders.insert(*id, reach.holders.get(id).cloned().unwrap_or_default());
            }
        }
    }
    *lock(&vm.shared.orphans.book) = book;
    vm.resume_after_pause();
    raised
}
