//! The heartbeat: notices an actor that holds a worker thread too long without yielding.
//!
//! Fuel-based preemption bounds how long a slice of *bytecode* runs, but one instruction can
//! still take long (a huge `split`, a configuration with enormous fuel) and a blocking native call
//! could be misclassified. The heartbeat makes that visible.
//!
//! Protocol:
//! 1. Each worker thread owns one slot (assigned on first use, per VM). When a driver starts a
//!    slice it writes its pid and the current *epoch* into its thread's slot; when the slice
//!    ends it clears the pid. No clock is read on this path: the epoch is a counter.
//! 2. The watchdog advances the epoch every tick (a quarter of the threshold) and reports,
//!    through `tracing`, a slot whose pid has not changed for at least the threshold — once per
//!    slice — and counts it in [`Heartbeat::hogs`].
//! 3. When no slot is busy the watchdog parks instead of ticking; a driver starting a slice wakes
//!    it if it is parked. So an idle VM has no timer firing at all (hibernation).
//! 4. The watchdog cannot read a running actor's state (it belongs to the worker thread running
//!    it), so the stepper publishes where the actor is at a fuel check every
//!    `vm_core::PROGRESS_EVERY` units of fuel ([`Heartbeat::progress`], into the thread's slot;
//!    cleared when a slice begins). The report names that position (`at`: where a loop spins, in
//!    whatever function), or, when none was published yet (one long instruction), where the
//!    slice *began*. When a reported slice ends, [`Heartbeat::end`] says so, and the driver
//!    reports again, naming the instruction the actor stopped at (the one after the long
//!    operation, or where it blocked), and for how long it held the thread.
//! 5. An affine executor's thread (see `affine`) takes a slot the same way, named after its
//!    executor ([`Heartbeat::begin_job`]); each job is a "slice" begun for its calling
//!    actor, so a job that holds its thread too long is reported, naming the executor and the
//!    job. An executor thread that ends gives its slot back ([`Heartbeat::leave`]) for the next
//!    one to take.
//! 6. The watchdog is a thread of its own (`vm-heartbeat`), not a tokio task: a task woken by a
//!    driver that starts a slice lands in that worker's LIFO slot, which no other worker may
//!    steal, so it could not run until the very slice it was to watch had ended (the long slice
//!    went unreported). It waits on [`Wake`], which it holds apart from the heartbeat so that a
//!    parked watchdog does not keep a dropped VM's heartbeat alive; the heartbeat's drop wakes
//!    it, and it ends.

// Plain std atomics: the heartbeat is diagnostics, not part of the loom-checked protocols.
use std::cell::Cell;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Worker threads and executor threads together; a thread beyond this is not watched.
const SLOTS: usize = 256;

/// A slot's `at` when no position has been published in its slice.
const NOWHERE: u64 = u64::MAX;

struct Slot {
    /// `pid + 1` of the actor running on this thread, or 0.
    pid: AtomicU64,
    /// The epoch when that slice started.
    since: AtomicU64,
    /// Where the slice's actor was at its latest fuel check (`func << 32 | pc`), or [`NOWHERE`]
    /// (step 4; written by this thread only).
    at: AtomicU64,
    /// Set once this slice has been reported.
    reported: AtomicBool,
    /// How many slices have started on this thread (written by this thread only).
    slices: AtomicU64,
    /// The executor this thread serves, if it is an executor thread (step 5), and what its
    /// current job runs.
    executor: parking_lot::Mutex<Option<(std::sync::Arc<str>, &'static str)>>,
}

/// Shared state of the heartbeat (one per VM).
pub struct Heartbeat {
    id: usize,
    epoch: AtomicU64,
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
    /// Slots given back by executor threads that ended (step 5).
    free_slots: parking_lot::Mutex<Vec<usize>>,
    parked: AtomicBool,
    wake: std::sync::Arc<Wake>,
    hogs: AtomicU64,
    tick: Duration,
    threshold_ticks: u64,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// (heartbeat id, slot index) of the current thread.
    static SLOT: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

impl Heartbeat {
    /// A heartbeat that reports slices longer than `threshold_ms`.
    pub fn new(threshold_ms: u64) -> Heartbeat {
        let tick_ms = (threshold_ms / 4).max(1);
        Heartbeat {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
            slots: (0..SLOTS)
                .map(|_| Slot {
                    pid: AtomicU64::new(0),
                    since: AtomicU64::new(0),
                    at: AtomicU64::new(NOWHERE),
                    reported: AtomicBool::new(false),
                    slices: AtomicU64::new(0),
                    executor: parking_lot::Mutex::new(None),
                })
                .collect(),
            next_slot: AtomicUsize::new(0),
            free_slots: parking_lot::Mutex::new(Vec::new()),
            parked: AtomicBool::new(false),
            wake: std::sync::Arc::new(Wake::default()),
            hogs: AtomicU64::new(0),
            tick: Duration::from_millis(tick_ms),
            threshold_ticks: threshold_ms.div_ceil(tick_ms).max(1),
        }
    }

    fn slot(&self) -> Option<&Slot> {
        let (id, i) = SLOT.with(|s| s.get());
        let i = if id == self.id {
            i
        } else {
            let i = self
                .free_slots
                .lock()
                .pop()
                .unwrap_or_else(|| self.next_slot.fetch_add(1, Ordering::Relaxed));
            SLOT.with(|s| s.set((self.id, i)));
            i
        };
        self.slots.get(i)
    }

    /// Step 5: a job of `executor` (served by this thread) begins, running `what` for actor
    /// `caller` (0 for the runtime's own jobs); end it with [`Heartbeat::end`].
    pub fn begin_job(&self, caller: u64, executor: &std::sync::Arc<str>, what: &'static str) {
        if let Some(s) = self.slot() {
            *s.executor.lock() = Some((executor.clone(), what));
        }
        self.begin(caller);
    }

    /// Step 5: this (executor) thread ends: its slot is free for another thread.
    pub fn leave(&self) {
        let (id, i) = SLOT.with(|s| s.get());
        if id != self.id || i >= SLOTS {
            return;
        }
        let s = &self.slots[i];
        *s.executor.lock() = None;
        s.pid.store(0, Ordering::SeqCst);
        SLOT.with(|s| s.set((0, 0)));
        self.free_slots.lock().push(i);
    }

    /// Step 1: a slice of `pid` starts on this thread.
    pub fn begin(&self, pid: u64) {
        if let Some(s) = self.slot() {
            // One writer per slot: a load and a store, no read-modify-write.
            s.slices.store(s.slices.load(Ordering::Relaxed) + 1, Ordering::Release);
            s.since.store(self.epoch.load(Ordering::Relaxed), Ordering::Relaxed);
            s.reported.store(false, Ordering::Relaxed);
            s.at.store(NOWHERE, Ordering::Relaxed);
            // Sequentially consistent with the watchdog's `parked` store and slot check, so that
            // either it sees this slice or this sees it parked (a Dekker-style handshake).
            s.pid.store(pid + 1, Ordering::SeqCst);
        }
        if self.parked.load(Ordering::SeqCst) {
            self.wake.notify();
        }
    }

    /// Step 4: the running actor (of this thread's slice) is at instruction `pc` of function
    /// `func`.
    #[cold]
    pub fn progress(&self, func: u32, pc: u32) {
        if let Some(s) = self.slot() {
            s.at.store((u64::from(func) << 32) | u64::from(pc), Ordering::Relaxed);
        }
    }

    /// Step 1: the slice has ended. Step 4: if the watchdog reported it, how long it held the
    /// thread, in milliseconds (to the watchdog's tick).
    #[inline]
    pub fn end(&self) -> Option<u64> {
        let s = self.slot()?;
        s.pid.store(0, Ordering::Release);
        if s.reported.load(Ordering::Relaxed) { Some(self.held_ms(s)) } else { None }
    }

    #[cold]
    fn held_ms(&self, s: &Slot) -> u64 {
        let held = self.epoch.load(Ordering::Relaxed).saturating_sub(s.since.load(Ordering::Relaxed));
        held * self.tick.as_millis() as u64
    }

    /// How many slices have started, all threads together: the deadlock detector's evidence
    /// that actors are still running although the `active` count read zero.
    pub fn slices(&self) -> u64 {
        self.slots.iter().map(|s| s.slices.load(Ordering::Acquire)).sum()
    }

    /// How many over-long slices have been reported.
    pub fn hogs(&self) -> u64 {
        self.hogs.load(Ordering::Relaxed)
    }

    /// Steps 2 and 3: the watchdog loop. `locate` says where an actor (by pid number) is, for the
    /// report, given its published position (function, instruction) or else where it was last
    /// seen; the pid itself is a field of its own.
    pub fn watch(this: Weak<Heartbeat>, locate: impl Fn(u64, Option<(u32, u32)>) -> String) {
        let Some(wake) = this.upgrade().map(|hb| hb.wake.clone()) else { return };
        loop {
            let Some(hb) = this.upgrade() else { return };
            let tick = hb.tick;
            drop(hb);
            std::thread::sleep(tick);
            let Some(hb) = this.upgrade() else { return };
            let now = hb.epoch.fetch_add(1, Ordering::Relaxed) + 1;
            let mut busy = false;
            for s in &hb.slots {
                let pid = s.pid.load(Ordering::Acquire);
                if pid == 0 {
                    continue;
                }
                busy = true;
                let held = now.saturating_sub(s.since.load(Ordering::Relaxed));
                if held >= hb.threshold_ticks && !s.reported.swap(true, Ordering::Relaxed) {
                    hb.hogs.fetch_add(1, Ordering::Relaxed);
                    let ms = held * hb.tick.as_millis() as u64;
                    if let Some((executor, job)) = s.executor.lock().clone() {
                        // Step 5: a job holding its executor's thread; its callers queue behind it.
                        tracing::warn!(executor = %executor, job, caller = pid - 1, caller_at = %locate(pid - 1, None), held_ms = ms, "an affine job has held its executor thread (calls queued behind it wait)");
                        continue;
                    }
                    // Step 4: where it is, as of its latest fuel check; else where the slice
                    // began. Where it lets go is reported when the slice ends.
                    match s.at.load(Ordering::Relaxed) {
                        NOWHERE => {
                            tracing::warn!(pid = pid - 1, held_ms = ms, slice_began_at = %locate(pid - 1, None), "actor has held a worker thread without yielding (where it is follows when it yields)")
                        }
                        at => {
                            tracing::warn!(pid = pid - 1, held_ms = ms, at = %locate(pid - 1, Some(((at >> 32) as u32, at as u32))), "actor has held a worker thread without yielding (where it lets go follows when it yields)")
                        }
                    }
                }
            }
            if !busy {
                hb.parked.store(true, Ordering::SeqCst);
                // Re-check after announcing: a slice that began in between has already notified.
                let idle = hb.slots.iter().all(|s| s.pid.load(Ordering::SeqCst) == 0);
                // Not kept while parked: the VM may end meanwhile (its heartbeat's drop wakes us).
                drop(hb);
                if idle {
                    wake.wait();
                }
                let Some(hb) = this.upgrade() else { return };
                hb.parked.store(false, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // Step 6: a parked watchdog wakes, finds the heartbeat gone and ends.
        self.wake.notify();
    }
}

/// How the watchdog thread is woken from its idle park (steps 3 and 6): a flag under a lock and
/// a condition variable, so that a wake sent before the watchdog waits is not lost.
#[derive(Default)]
pub(crate) struct Wake {
    woken: parking_lot::Mutex<bool>,
    cv: parking_lot::Condvar,
}

impl Wake {
    fn notify(&self) {
        *self.woken.lock() = true;
        self.cv.notify_one();
    }

    /// Waits for a wake (one sent since the last wait counts), and consumes it.
    fn wait(&self) {
        let mut woken = self.woken.lock();
        while !*woken {
            self.cv.wait(&mut woken);
        }
        *woken = false;
    }
}
