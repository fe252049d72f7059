//! Wakeup priorities: `:high`, `:normal` (the default) and `:low` actors (`spawnx`'s
//! `:priority`, or their container's `priority`).
//!
//! tokio has one run queue per worker and no priorities, and it looks at its timers only when a
//! worker parks or every 61 tasks it runs, so a timer due while every worker is busy can wait
//! for dozens of slices. What this module adds, and the rules the driver (`actor`) follows:
//! 1. **Precise timers for `:high`.** A `:high` actor's timed wait (sleep, receive with a
//!    timeout, select with a timeout) also registers its deadline and waker here. At every
//!    safe point (the start of a slice) the driver of *any* actor checks, with one relaxed load
//!    when no such timer exists, whether one is due, and wakes it. A wake from a worker thread
//!    goes to that worker's next-task slot, so the high actor runs right after the current one
//!    steps aside. tokio's own timer stays as the backstop (when every worker is idle).
//! 2. **Stepping aside.** A `:high` actor woken by a message or a signal is counted in
//!    `high_runnable` (once: its cell's `prio_pending` flag) until its next slice starts. While
//!    the count is non-zero, a `:normal` or `:low` actor reaching a safe point yields instead of
//!    running; so does one that has just fired a `:high` actor's timer (which then waits in that
//!    worker's next-task slot). A lower actor steps aside at most 8 times in a row, as
//!    `yieldto`'s deferrals, so a high actor that cannot get a worker does not stop everyone. A running
//!    lower-priority actor therefore steps aside at the end of its current slice (its next fuel
//!    check): the high actor waits at most one slice, not behind every queued one.
//! 3. **`:low` runs quarter slices.** A `:low` actor gets `fuel / 4` per slice in the same
//!    round-robin as everyone else, so beside busy `:normal` actors it progresses at about a
//!    quarter of a `:normal` actor's rate: less, and never nothing (it is never skipped).
//! 4. `yieldto` keeps its meaning (a hint naming who runs next, whatever the priorities).
//! 5. The counters only steer yields, never correctness: a decrement may come an instant before
//!    its increment (an actor starts its slice while its waker is still counting it), which at
//!    worst makes some actor step aside once more than it needed to.
//! 6. **One word for the slice start.** What a driver looks at before every slice besides its
//!    own signals — this module's pending work, a `yieldto` boost, a pause (`pause`, step 1) —
//!    is summed up in one word, [`Attention`]: one bit each says a pause is requested or a boost
//!    is set, and the bits above them count the pending work (the registered timers plus
//!    `high_runnable`). A slice start with nothing to do is one load and one test of it. The boost's
//!    bit is a hint, as the boost is (a race of two `yieldto`s may leave it set with no boost,
//!    which the next driver to see it clears, or clear with one, which is then not taken); the
//!    pause's bit is set before the pause's epoch and cleared after it, by the one snapshotter.

use crate::cell::ActorCell;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use std::task::Waker;
use std::time::Instant;
use vm_core::Priority;

/// The VM's priority state; see the module docs.
pub(crate) struct Prio {
    start: Instant,
    /// The earliest registered deadline, in microseconds since `start`; `u64::MAX` for none.
    next_us: AtomicU64,
    /// Registered deadlines (microseconds since `start`) and the waker of each waiting actor.
    timers: Mutex<Vec<(u64, Waker)>>,
    /// `:high` actors woken and not yet running (rule 2).
    pub(crate) high_runnable: AtomicUsize,
    /// The slice start's word (rule 6), whose count is the registered timers plus
    /// `high_runnable`: zero means a safe point has nothing to do, which one relaxed load tells
    /// (the common case, on every round of every driver).
    pub(crate) attention: Attention,
}

/// The slice start's word (rule 6 of the module docs).
#[derive(Default)]
pub(crate) struct Attention(AtomicU64);

impl Attention {
    /// A pause is requested (`pause`).
    pub(crate) const PAUSE: u64 = 1;
    /// A `yieldto` boost is set (`Shared::boost`).
    pub(crate) const BOOST: u64 = 2;
    /// The count of `prio`'s pending work, in units of [`Attention::ONE`] above the bits: a
    /// decrement that comes before its increment (rule 5) wraps the count around without
    /// touching the bits.
    pub(crate) const PRIO: u64 = !3;
    /// One piece of pending work.
    const ONE: u64 = 4;

    /// The word (relaxed: it only says where to look; what is found there decides).
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets `bit`.
    pub(crate) fn set(&self, bit: u64) {
        self.0.fetch_or(bit, Ordering::SeqCst);
    }

    /// Clears `bit`.
    pub(crate) fn clear(&self, bit: u64) {
        self.0.fetch_and(!bit, Ordering::SeqCst);
    }

    /// Counts `n` more pieces of pending work.
    fn add(&self, n: usize) {
        self.0.fetch_add((n as u64).wrapping_mul(Self::ONE), Ordering::SeqCst);
    }

    /// Counts `n` fewer.
    fn sub(&self, n: usize) {
        self.0.fetch_sub((n as u64).wrapping_mul(Self::ONE), Ordering::SeqCst);
    }
}

impl Default for Prio {
    fn default() -> Prio {
        Prio {
            start: Instant::now(),
            next_us: AtomicU64::new(u64::MAX),
            timers: Mutex::new(Vec::new()),
            high_runnable: AtomicUsize::new(0),
            attention: Attention::default(),
        }
    }
}

impl Prio {
    fn us(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Registers a `:high` actor's deadline (rule 1).
    pub(crate) fn add(&self, deadline: Instant, waker: &Waker) {
        let at = self.us(deadline);
        let mut timers = lock(&self.timers);
        timers.push((at, waker.clone()));
        self.attention.add(1);
        if at < self.next_us.load(Ordering::Relaxed) {
            self.next_us.store(at, Ordering::Relaxed);
        }
    }

    /// Wakes the actors whose deadline has passed (rule 1); whether it woke any.
    pub(crate) fn fire_due(&self) -> bool {
        let next = self.next_us.load(Ordering::Relaxed);
        next != u64::MAX && self.fire(next)
    }

    #[cold]
    fn fire(&self, next: u64) -> bool {
        let now = self.us(Instant::now());
        if now < next {
            return false;
        }
        let due: Vec<Waker> = {
            let mut timers = lock(&self.timers);
            let mut due = Vec::new();
            let mut earliest = u64::MAX;
            timers.retain(|(at, w)| {
                if *at <= now {
                    due.push(w.clone());
                    false
                } else {
                    earliest = earliest.min(*at);
                    true
                }
            });
            self.next_us.store(earliest, Ordering::Relaxed);
            self.attention.sub(due.len());
            due
        };
        let woke = !due.is_empty();
        for w in due {
            w.wake();
        }
        woke
    }

    /// Counts `cell` as a runnable `:high` actor if it is one and not counted yet (rule 2).
    #[inline]
    pub(crate) fn woken(&self, cell: &ActorCell) {
        if cell.priority() == Priority::High && !cell.prio_pending.swap(true, Ordering::SeqCst) {
            self.high_runnable.fetch_add(1, Ordering::SeqCst);
            self.attention.add(1);
        }
    }

    /// `cell` starts a slice (or ends): it no longer waits for a worker.
    #[inline]
    pub(crate) fn running(&self, cell: &ActorCell) {
        if cell.prio_pending.load(Ordering::Relaxed) && cell.prio_pending.swap(false, Ordering::SeqCst) {
            self.high_runnable.fetch_sub(1, Ordering::SeqCst);
            self.attention.sub(1);
        }
    }

    /// Whether a lower-priority actor should step aside now (rule 2); `fired`: it has just
    /// woken a `:high` actor's timer, which then waits in this worker's next-task slot.
    #[inline]
    pub(crate) fn should_step_aside(&self, cell: &ActorCell, fired: bool) -> bool {
        (fired || self.high_runnable.load(Ordering::Relaxed) != 0) && cell.priority() != Priority::High
    }
}

#[cfg(all(test, not(vm_loom)))]
mod tests {
    use super::Attention;

    /// Rule 5's early decrement wraps the count without touching the bits, and the count and
    /// the bits each read back as set.
    #[test]
    fn the_slice_start_word_keeps_its_bits_through_an_early_decrement() {
        let a = Attention::default();
        assert_eq!(a.get(), 0);
        a.set(Attention::PAUSE);
        a.sub(1);
        assert_eq!(a.get() & !Attention::PRIO, Attention::PAUSE);
        assert_ne!(a.get() & Attention::PRIO, 0);
        a.clear(Attention::PAUSE);
        a.add(1);
        assert_eq!(a.get(), 0, "the pause's clearing survives the count's wrap");
        a.set(Attention::BOOST);
        a.add(2);
        assert_eq!(a.get() & !Attention::PRIO, Attention::BOOST);
        a.sub(2);
        assert_eq!(a.get(), Attention::BOOST);
        a.clear(Attention::BOOST);
        assert_eq!(a.get(), 0);
    }
}
