//! Synchronisation primitives, swapped for loom's under `--cfg vm_loom` so the hand-made wake
//! protocol in `mailbox` can be model-checked (`RUSTFLAGS="--cfg vm_loom" cargo test -p vm-sched
//! --release --lib loom`). tokio uses `cfg(loom)` internally, hence a name of our own.

/// loom's cell checks that no access overlaps a write, which is what a hand-made protocol
/// around an `UnsafeCell` (the channel waiter's outcome and waker) must guarantee.
#[cfg(vm_loom)]
pub(crate) use loom::cell::UnsafeCell;
/// (The models share state between loom's threads with loom's `Arc`.)
#[cfg(all(test, vm_loom))]
pub(crate) use loom::sync::Arc;
#[cfg(vm_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
#[cfg(vm_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// parking_lot's mutex rather than std's: an actor's mailbox lock is taken two or three times per
/// message, and std's poisoning (a panic-count check on every lock and unlock) was ~45 of a ring
/// hop's instructions. There is nothing to poison anyway: a panic while holding an actor's lock
/// is a VM bug, and the data (queues and flags) stays structurally valid, so other actors carry
/// on.
#[cfg(not(vm_loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};
#[cfg(not(vm_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// `std`'s `UnsafeCell` behind loom's interface (`with`, `with_mut`), so that one protocol's
/// code runs unchanged under the model checker, which checks every access.
#[cfg(not(vm_loom))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(vm_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(v: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }

    /// Reads through the pointer; the caller's protocol rules out a concurrent write.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Writes through the pointer; the caller's protocol rules out any concurrent access.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks a mutex.
#[cfg(not(vm_loom))]
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
}

/// Locks a mutex, ignoring (loom's) poisoning, as the parking_lot one does.
#[cfg(vm_loom)]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Something that holds an actor's "counted out" flag (the actor's cell; a bare flag in tests),
/// so a channel waiter can reach it without a separate allocation per actor.
pub trait CountedFlag: Send + Sync {
    /// The flag.
    fn counted(&self) -> &AtomicBool;
}

impl CountedFlag for AtomicBool {
    fn counted(&self) -> &AtomicBool {
        self
    }
}

/// Counts an actor back into the VM's `active` count if it was counted out. The flag is the one
/// per-actor "counted out" bit shared by every way an actor can be woken (its mailbox, a
/// channel select): whichever waker swaps it from true to false does the increment, so it
/// happens exactly once however many parties race to wake the actor.
pub(crate) fn count_in(counted: &AtomicBool, active: &AtomicUsize) {
    if counted.swap(false, Ordering::SeqCst) {
        active.fetch_add(1, Ordering::SeqCst);
    }
}
