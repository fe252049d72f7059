//! The binary's global allocator: mimalloc, counted, so that the VM-wide memory budget
//! (`vm run --max-memory`, `vm_sched::budget`) knows how many bytes the process has allocated.
//!
//! 1. Every allocation adds its size to a per-thread tally and every free subtracts it; a
//!    tally that has moved by [`BATCH`] bytes either way is added to the process-wide
//!    [`in_use`] counter and reset. So an allocation costs a thread-local add and compare, and
//!    the shared counter's cache line is written once per [`BATCH`] bytes, not per call.
//! 2. [`in_use`] is therefore exact to within [`BATCH`] bytes per thread (a thread that ends
//!    with a tally leaves it unreported; threads are few and long-lived), which is far finer
//!    than any budget.
//! 3. The tally is a `const`-initialised thread-local with no destructor, which Rust can
//!    reach at any time in a thread's life, allocation-free, so the allocator never recurses.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

/// How far a thread's tally moves before it is published.
pub const BATCH: i64 = 256 * 1024;

static IN_USE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static TALLY: Cell<i64> = const { Cell::new(0) };
}

/// Bytes the process has allocated through [`Counting`] (0 if it is not the global allocator).
pub fn in_use() -> u64 {
    IN_USE.load(Ordering::Relaxed).max(0) as u64
}

#[inline(always)]
fn tally(delta: i64) {
    // `try_with` cannot fail for a const thread-local without a destructor; should it ever,
    // the change is published at once.
    // `|v| >= BATCH` as one unsigned comparison (`v + BATCH - 1` outside `0..=2 * BATCH - 2`),
    // and the tally stored before the test: every allocation and free of the process passes
    // here, and the absolute value and the two stores behind a select took ten instructions.
    let publish = TALLY
        .try_with(|t| {
            let v = t.get() + delta;
            t.set(v);
            if (v + (BATCH - 1)) as u64 > (2 * BATCH - 2) as u64 {
                t.set(0);
                v
            } else {
                0
            }
        })
        .unwrap_or(delta);
    if publish != 0 {
        IN_USE.fetch_add(publish, Ordering::Relaxed);
    }
}

/// A global allocator that counts what `A` hands out (see the module docs).
pub struct Counting<A>(pub A);

/// The allocator of the `vm` binaries: mimalloc, counted. mimalloc rather than glibc's malloc:
/// message passing, channel waits and the socket natives allocate and free small blocks on every
/// worker thread, and mimalloc's thread-local free lists made those paths measurably cheaper
/// (docs/BENCHMARKS.md).
pub type VmAllocator = Counting<mimalloc::MiMalloc>;

/// The allocator of the `vm` binaries, for their `#[global_allocator]` static.
pub const fn vm_allocator() -> VmAllocator {
    Counting(mimalloc::MiMalloc)
}

// The one `unsafe` here is `GlobalAlloc`'s own contract: every method passes its arguments to
// the wrapped allocator unchanged and only counts sizes, so the caller's guarantees carry over.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are passed on unchanged.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            tally(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            tally(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, as the caller guarantees.
        unsafe { self.0.dealloc(ptr, layout) };
        tally(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` as the caller guarantees.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            tally(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's tally reaches the shared counter exactly when it has moved by `BATCH` bytes
    /// either way, and starts again from zero. (Only this test calls `tally` in the test binary,
    /// which does not install the allocator, and it runs on a thread of its own: a fresh tally.)
    #[test]
    fn a_tally_is_published_once_it_has_moved_a_batch_either_way() {
        std::thread::spawn(|| {
            let shared = || IN_USE.load(Ordering::Relaxed);
            let start = shared();
            tally(BATCH - 1);
            assert_eq!(shared(), start);
            tally(1);
            assert_eq!(shared(), start + BATCH);
            tally(-(BATCH - 1));
            assert_eq!(shared(), start + BATCH);
            tally(-1);
            assert_eq!(shared(), start);
            tally(-3 * BATCH);
            assert_eq!(shared(), start - 3 * BATCH);
            tally(BATCH - 1);
            tally(-(BATCH - 1));
            tally(3 * BATCH);
            assert_eq!(shared(), start);
        })
        .join()
        .unwrap();
    }
}
