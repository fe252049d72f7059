//! The select algorithm (protocol steps 1 to 3, 5 and 6 of the module docs of `chan`) over a
//! list of cases: locking in the global order, the random poll order, [`try_select`] (pass 1
//! only) and the blocking [`Select`].

use super::{Case, CaseOp, Cases, ChanState, Channel, Fired, Parked, Waiter, Wakers, wake_all};
use crate::sync::{AtomicBool, AtomicUsize, CountedFlag, MutexGuard, Ordering, count_in, lock};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A select's channels locked in the global order (protocol step 1).
struct Locked<'a> {
    guards: SmallVec<[MutexGuard<'a, ChanState>; 2]>,
    /// For each case, the index of its channel's guard.
    guard_of: SmallVec<[usize; 4]>,
}

impl<'a> Locked<'a> {
    fn new(cases: &'a [Case]) -> Locked<'a> {
        if let [case] = cases {
            // A plain send or receive: nothing to order.
            return Locked {
                guards: smallvec::smallvec![lock(&case.chan.state)],
                guard_of: smallvec::smallvec![0],
            };
        }
        let mut idx: SmallVec<[usize; 4]> = (0..cases.len()).collect();
        idx.sort_unstable_by_key(|&i| (cases[i].chan.id, Arc::as_ptr(&cases[i].chan).addr()));
        let mut guards = SmallVec::with_capacity(idx.len());
        let mut guard_of = smallvec::smallvec![0; idx.len()];
        let mut prev: Option<&Arc<Channel>> = None;
        for i in idx {
            let chan = &cases[i].chan;
            if !prev.is_some_and(|p| Arc::ptr_eq(p, chan)) {
                guards.push(lock(&chan.state));
                prev = Some(chan);
            }
            guard_of[i] = guards.len() - 1;
        }
        Locked { guards, guard_of }
    }

    /// Pass 1 (protocol step 2) over `cases` in a random order.
    fn complete(&mut self, cases: &[Case], active: &AtomicUsize, wakers: &mut Wakers) -> Option<Fired> {
        for i in poll_order(cases.len()) {
            let st = &mut *self.guards[self.guard_of[i]];
            let cap = cases[i].chan.cap;
            let fired = match &cases[i].op {
                CaseOp::Recv => st.try_recv(i, None, active, wakers),
                CaseOp::Send(v, checked) => st.try_send(i, v, *checked, cap, active, wakers),
            };
            if fired.is_some() {
                return fired;
            }
        }
        None
    }

    /// Pass 2 (protocol step 3): enqueues `waiter` on every case's channel.
    fn park(&mut self, cases: &[Case], waiter: &Arc<Waiter>) {
        for (i, case) in cases.iter().enumerate() {
            let st = &mut *self.guards[self.guard_of[i]];
            let p = Parked { waiter: waiter.clone(), case: i };
            match &case.op {
                CaseOp::Recv => st.recvq.push_back(p),
                CaseOp::Send(v, _) => st.sendq.push_back((p, v.clone())),
            }
        }
    }

    fn remove(&mut self, waiter: &Arc<Waiter>) {
        for g in &mut self.guards {
            g.remove(waiter);
        }
    }
}

/// A fresh seed per select, so that poll orders are independent between calls. Under loom the
/// seed is fixed: a model must be deterministic, and the order does not affect the protocol.
#[cfg(not(vm_loom))]
fn next_seed() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // splitmix64 of a counter: consecutive counters give unrelated seeds.
    let mut z = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

#[cfg(vm_loom)]
fn next_seed() -> u64 {
    0x2545_F491_4F6C_DD1D
}

/// A uniformly random permutation of `0..n` (Go's poll order).
fn poll_order(n: usize) -> SmallVec<[usize; 4]> {
    let mut order: SmallVec<[usize; 4]> = (0..n).collect();
    if n > 1 {
        let mut x = next_seed();
        for i in (1..n).rev() {
            // xorshift64, then a multiply-high to map onto 0..=i without modulo bias to speak of.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let j = ((u128::from(x) * (i as u128 + 1)) >> 64) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// A non-blocking select (pass 1 only): the case that completed, or `None` if no case is ready
/// (nothing is enqueued and nothing transferred). This is `try_send`/`try_recv` over several
/// channels, a select with a `default`, and the fast path before blocking. `active` is needed
/// because completing against a parked counterpart counts it back in.
pub fn try_select(cases: &[Case], active: &AtomicUsize) -> Option<Fired> {
    let mut wakers = Wakers::new();
    let fired = Locked::new(cases).complete(cases, active, &mut wakers);
    wake_all(&mut wakers);
    fired
}

enum SelectState {
    /// Not polled yet.
    Fresh,
    /// Enqueued everywhere (pass 2 done); waiting for a claim.
    Parked(Arc<Waiter>),
    /// Completed, cancelled, or its outcome handed out.
    Done,
}

/// A blocking select (or a plain blocking send/receive, with one case); see the module docs.
///
/// Create it with the cases and poll it from the actor's task. The driver races it against the
/// actor's control port and its deadline; when an interrupt, kill or the deadline wins, the driver
/// MUST call [`Select::cancel`], which either confirms that nothing happened or returns the case
/// that committed first — that outcome must then be treated as the select's result, or a sent
/// value would be reported as unsent (or a received one lost). Dropping a parked `Select` without
/// `cancel` behaves as `cancel` for the queues (memory is freed, nothing stays enqueued) but any
/// committed outcome is lost and, having no `active` to hand, a self-claim leaves an indefinite
/// wait counted out; drop only on runtime shutdown.
pub struct Select {
    cases: Cases,
    indefinite: bool,
    counted: Arc<dyn CountedFlag>,
    state: SelectState,
}

impl fmt::Debug for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            SelectState::Fresh => "fresh",
            SelectState::Parked(_) => "parked",
            SelectState::Done => "done",
        };
        f.debug_struct("Select").field("cases", &self.cases).field("state", &state).finish()
    }
}

impl Select {
    /// A select over `cases`. `indefinite` (no deadline) makes the parked select count itself out
    /// of `active` (protocol step 7). A select with no cases and no deadline waits forever.
    pub fn new(cases: impl Into<Cases>, indefinite: bool) -> Select {
        Select::with_flag(cases, indefinite, Arc::new(AtomicBool::new(false)))
    }

    /// A select sharing its owner's "counted out" flag, so that its owner's other wake paths
    /// (the mailbox) and this select's claimers count the owner back in exactly once between
    /// them. An owner that waits on several things at once counts itself out itself and passes
    /// `indefinite = false` here.
    pub fn with_flag(cases: impl Into<Cases>, indefinite: bool, counted: Arc<dyn CountedFlag>) -> Select {
        Select { cases: cases.into(), indefinite, counted, state: SelectState::Fresh }
    }

    /// The cases, in the order `Fired::case` indexes.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// Whether the select is parked on its channels (polled, not yet completed or cancelled).
    pub fn is_parked(&self) -> bool {
        matches!(self.state, SelectState::Parked(_))
    }

    /// Polls the select: the first poll runs passes 1 and 2; later polls take a committed outcome
    /// or refresh the stored waker. The boolean is true when parking made `active` zero (the VM
    /// may be idle). After `Ready` the select is done and further polls stay `Pending`.
    pub fn poll(&mut self, cx: &mut Context<'_>, active: &AtomicUsize) -> (Poll<Fired>, bool) {
        match &self.state {
            SelectState::Fresh => {
                let mut wakers = Wakers::new();
                let mut idle = false;
                let fired = {
                    let mut locked = Locked::new(&self.cases);
                    let fired = locked.complete(&self.cases, active, &mut wakers);
                    if fired.is_none() {
                        if self.indefinite && !self.counted.counted().swap(true, Ordering::SeqCst) {
                            // Counted out before the entries are visible, so a claimer always
                            // sees the flag it must reset (step 7).
                            idle = active.fetch_sub(1, Ordering::SeqCst) == 1;
                        }
                        let waiter = Waiter::new(Some(cx.waker().clone()), self.counted.clone());
                        locked.park(&self.cases, &waiter);
                        self.state = SelectState::Parked(waiter);
                    }
                    fired
                };
                wake_all(&mut wakers);
                match fired {
                    Some(f) => {
                        self.state = SelectState::Done;
                        (Poll::Ready(f), false)
                    }
                    None => (Poll::Pending, idle),
                }
            }
            SelectState::Parked(waiter) => {
                let waiter = waiter.clone();
                let mut fired = waiter.take_fired();
                if fired.is_none() && !waiter.wakes(cx) {
                    // The waker is replaced only under every channel lock (see `Waiter`),
                    // where a claim that came meanwhile has finished recording.
                    let _locked = Locked::new(&self.cases);
                    fired = waiter.take_fired();
                    if fired.is_none() {
                        waiter.set_waker(cx);
                    }
                }
                match fired {
                    Some(f) => {
                        // The claimer counted us in; this only guards the invariant.
                        count_in(waiter.counted.counted(), active);
                        // Step 5. With a single case the claimer already popped the only entry.
                        if self.cases.len() > 1 {
                            Locked::new(&self.cases).remove(&waiter);
                        }
                        self.state = SelectState::Done;
                        (Poll::Ready(f), false)
                    }
                    None => (Poll::Pending, false),
                }
            }
            SelectState::Done => (Poll::Pending, false),
        }
    }

    /// Cancels the select (protocol step 6): `Ok(())` if no case fired — the select is removed
    /// from every queue, nothing was transferred, and it is counted back into `active` — or
    /// `Err(fired)` if a case committed first, which the caller must treat as the select's
    /// result. A select that was never polled, or already returned `Ready`, cancels with `Ok`.
    pub fn cancel(mut self, active: &AtomicUsize) -> Result<(), Fired> {
        self.cancel_inner(Some(active))
    }

    fn cancel_inner(&mut self, active: Option<&AtomicUsize>) -> Result<(), Fired> {
        let SelectState::Parked(waiter) = std::mem::replace(&mut self.state, SelectState::Done) else {
            return Ok(());
        };
        // Holding every channel lock means any counterpart that claimed the waiter has finished
        // recording its outcome: it does both under one of these locks.
        let mut locked = Locked::new(&self.cases);
        let won = waiter.claim_self();
        locked.remove(&waiter);
        waiter.finish_cancel(won, active)
    }
}

impl Drop for Select {
    fn drop(&mut self) {
        // Queue hygiene and memory: a dropped select must not stay enqueued.
        let _ = self.cancel_inner(None);
    }
}
