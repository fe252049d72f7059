//! Channels: rendezvous (capacity 0) and buffered FIFO channels of [`Value`]s, with a select over
//! a runtime-built list of cases that commits to exactly one case, cancel-safely.
//!
//! The semantics are Go's. A send on a rendezvous channel completes only when a receiver takes
//! the value; on a buffered channel when there is room. A receive completes when a value is
//! available, or with "closed" once the channel is closed *and* drained (buffered values stay
//! receivable after close). Sending on a closed channel, and closing twice, are errors. Closing
//! completes every parked receiver with "closed" and every parked sender with the send error.
//!
//! A plain send or receive is a select with one case; there is one algorithm (Go's `selectgo`).
//!
//! **The select protocol** (exactly one case commits; exactly one party wakes a parked select):
//! 1. *Lock order.* A select locks all of its channels at once, in one global order — by channel
//!    id, then by address so that even duplicate ids cannot deadlock — and locks a channel that
//!    appears in several cases only once. Every other operation locks a single channel. A
//!    waiter's own small lock (`Waiter::slot`) is a leaf: it is taken under channel locks, never
//!    the other way round.
//! 2. *Pass 1 (complete now).* With every channel locked, the cases are tried in a fresh random
//!    order (a Fisher–Yates shuffle driven by a xorshift generator seeded per call from an atomic
//!    counter), so that when several cases are ready each is equally likely and none starves.
//!    A receive is ready if a sender is parked (take its value; on a buffered channel take the
//!    oldest buffered value and move the sender's value to the back), the buffer is non-empty, or
//!    the channel is closed (complete with "closed"). A send is ready if the channel is closed
//!    (complete with the error), a receiver is parked (hand the value over), or the buffer has
//!    room. Handing over to or taking from a parked party means *claiming* it (step 4). The first
//!    ready case in the order commits and the select is done. [`try_select`] (and a select with a
//!    `default`) stops here with "nothing ready".
//! 3. *Pass 2 (park).* Otherwise, still holding every lock, the select creates ONE shared
//!    [`Waiter`] holding its task's waker and enqueues an entry `(waiter, case index)` on every
//!    case's channel — on the receive queue, or on the send queue together with (a clone of) the
//!    value to send. If the wait has no deadline the waiter counts itself out of `active` *before*
//!    the entries become visible (so whoever finds it can count it back in); if that made
//!    `active` zero, `poll` reports idle. Then it unlocks and returns `Pending`.
//! 4. *Claiming.* A counterpart (a send, receive, select or close that holds the lock of one of
//!    the waiter's channels) pops an entry and claims its waiter with a compare-and-swap of the
//!    waiter's state from `WAITING` to `CLAIMED`. The winner, still holding that channel lock,
//!    records under the waiter's slot lock which case fired (and the value received, if any),
//!    counts the waiter back into `active` if it was counted out, and takes its waker, which it
//!    wakes after releasing the channel lock. A counterpart that loses the swap drops the stale
//!    entry and tries the next one. `CLAIMED` is never reset: a waiter is used once, so "claimed"
//!    stays set while its entries are being removed from the other queues.
//! 5. *Completion.* When polled again, the select takes the recorded outcome from its slot (if
//!    there is none yet it only refreshes its waker — the actor task's waker changes between
//!    polls), removes its remaining entries from all its channels (locked as in step 1) and
//!    returns `Ready`.
//! 6. *Cancellation* (an interrupt, a deadline, a kill). The owner locks all its channels (step 1)
//!    and tries to claim its OWN waiter. If it wins, no case fired and none ever will: it removes
//!    its entries everywhere, counts itself back in, and reports "cancelled" — nothing was
//!    transferred, so an unsent value is still the caller's. If it loses, some counterpart
//!    committed a case; because that counterpart did so while holding one of the channel locks
//!    now held, the outcome is already recorded, and it is returned exactly as if the select had
//!    completed. So a cancelled send is never lost and never duplicated, and a deadline is simply
//!    one more party racing in the same claim.
//! 7. *Accounting.* `active` counts the actors that are not parked indefinitely. A select with no
//!    deadline counts itself out in step 3; it is counted back in exactly once: by the claimer in
//!    step 4 (before releasing the channel lock, so `active` cannot reach zero while a wake is in
//!    flight), or by itself when it cancels (step 6).
//!
//! A parked send keeps a clone of its value in the channel's send queue; the clone is removed
//! (and dropped) with the entry, and the caller's own copy is what the select reports on.
//!
//! A blocking `csend`/`crecv` is a select with one case, run without the case list
//! ([`Channel::complete_or_park`] and [`OneWait`]): steps 2 and 3 under the one channel lock
//! (no shuffle), step 5 with nothing to remove (the claimer popped the only entry), step 6
//! locking that one channel. The steps and the waiter are the same, so are the guarantees.
//!
//! This protocol is model-checked with loom (`loom_tests` below).

use crate::sync::{
    AtomicBool, AtomicU8, AtomicUsize, CountedFlag, Mutex, MutexGuard, Ordering, count_in, lock,
};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use vm_core::Value;

/// The wakers a channel operation collects under its locks, to wake after unlocking: usually
/// none or one, so they live inline (no allocation on the hot path).
type Wakers = SmallVec<[Waker; 2]>;

/// Where a claimer puts the waker to wake after unlocking: a small vector for operations that
/// may claim several waiters (close, a select over several channels), or one slot for an
/// operation on one channel, which claims at most one.
trait WakeSink {
    fn add(&mut self, w: Waker);
}

impl WakeSink for Wakers {
    fn add(&mut self, w: Waker) {
        self.push(w);
    }
}

impl WakeSink for Option<Waker> {
    fn add(&mut self, w: Waker) {
        debug_assert!(self.is_none(), "an operation on one channel claims at most one waiter");
        *self = Some(w);
    }
}

/// Wakes what a channel operation collected, after unlocking (popping: cheaper than consuming
/// the small vector, and the order of wakes means nothing).
fn wake_all(wakers: &mut Wakers) {
    while let Some(w) = wakers.pop() {
        w.wake();
    }
}

/// A select's cases. Most selects are a plain send or receive, or choose between two channels,
/// so up to two live inline in the (boxed) select instead of in an allocation of their own.
pub type Cases = SmallVec<[Case; 2]>;

/// An error from a channel operation that is not a case outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanError {
    /// `close` on a channel that is already closed.
    AlreadyClosed,
}

impl fmt::Display for ChanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChanError::AlreadyClosed => f.write_str("close of a closed channel"),
        }
    }
}

impl std::error::Error for ChanError {}

/// A channel: a buffer of at most `cap` values (none for a rendezvous channel), the parked
/// receivers and senders, and the closed flag, all behind one lock.
pub struct Channel {
    id: u64,
    cap: usize,
    state: Mutex<ChanState>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel {{ id: {}, cap: {} }}", self.id, self.cap)
    }
}

/// One parked party on a channel queue: which select, and which of its cases.
struct Parked {
    waiter: Arc<Waiter>,
    case: usize,
}

#[derive(Default)]
struct ChanState {
    /// Buffered values, oldest first; never longer than `cap`.
    buf: VecDeque<Value>,
    closed: bool,
    /// Parked receivers, oldest first. Holds live (unclaimed) entries only while `buf` is empty;
    /// stale entries of selects claimed elsewhere are skipped and dropped by whoever meets them.
    recvq: VecDeque<Parked>,
    /// Parked senders with their values, oldest first. Holds live entries only while `buf` is
    /// full (always, for a rendezvous channel).
    sendq: VecDeque<(Parked, Value)>,
}

const WAITING: u8 = 0;
const CLAIMED: u8 = 1;

/// The one waiter a parked select shares among all of its channel queues (protocol step 3).
struct Waiter {
    /// `WAITING` until a counterpart or the owner claims it (step 4 / step 6); never reset.
    state: AtomicU8,
    slot: Mutex<Slot>,
    /// The owner's "counted out of `active`" flag, shared with the owner's other wake paths
    /// (its mailbox): whoever swaps it from true to false counts the owner back in (step 7).
    counted: Arc<dyn CountedFlag>,
}

struct Slot {
    /// The owner's waker; taken by the claimer.
    waker: Option<Waker>,
    /// The case a counterpart committed; taken by the owner.
    fired: Option<Fired>,
}

impl Waiter {
    /// Step 4: claims the waiter for a counterpart and records `fired()`. Returns false (and
    /// records nothing) if someone else claimed it first. Must be called with the lock of one of
    /// the waiter's channels held; the waker to wake after unlocking is pushed onto `wakers`.
    fn commit(
        &self,
        fired: impl FnOnce() -> Fired,
        active: &AtomicUsize,
        wakers: &mut impl WakeSink,
    ) -> bool {
        if self.state.compare_exchange(WAITING, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        let mut s = lock(&self.slot);
        s.fired = Some(fired());
        count_in(self.counted.counted(), active);
        if let Some(w) = s.waker.take() {
            wakers.add(w);
        }
        true
    }

    /// Step 6: the owner claims its own waiter. True if it won (no case fired).
    fn claim_self(&self) -> bool {
        self.state.compare_exchange(WAITING, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

impl ChanState {
    /// Pass 1 for a receive case: completes it if a value is available or the channel is closed.
    fn try_recv(&mut self, case: usize, active: &AtomicUsize, wakers: &mut impl WakeSink) -> Option<Fired> {
        while let Some((p, v)) = self.sendq.pop_front() {
            if p.waiter.commit(|| Fired::Sent { case: p.case }, active, wakers) {
                // On a buffered channel a parked sender means the buffer is full: the receiver
                // takes the oldest value and the sender's value joins the back, keeping FIFO.
                let value = match self.buf.pop_front() {
                    Some(head) => {
                        self.buf.push_back(v);
                        head
                    }
                    None => v,
                };
                return Some(Fired::Received { case, value });
            }
            // A stale entry of a waiter claimed elsewhere; dropping it is its removal.
        }
        if let Some(value) = self.buf.pop_front() {
            return Some(Fired::Received { case, value });
        }
        self.closed.then_some(Fired::RecvClosed { case })
    }

    /// Pass 1 for a send case: completes it if a receiver is parked, there is room, or the
    /// channel is closed (with the error).
    fn try_send(
        &mut self,
        case: usize,
        value: &Value,
        cap: usize,
        active: &AtomicUsize,
        wakers: &mut impl WakeSink,
    ) -> Option<Fired> {
        if self.closed {
            return Some(Fired::SendClosed { case });
        }
        while let Some(p) = self.recvq.pop_front() {
            if p.waiter.commit(|| Fired::Received { case: p.case, value: value.clone() }, active, wakers) {
                return Some(Fired::Sent { case });
            }
        }
        if self.buf.len() < cap {
            self.buf.push_back(value.clone());
            return Some(Fired::Sent { case });
        }
        None
    }

    /// Removes every entry of `w` (steps 5 and 6), dropping the queued clones of its values.
    fn remove(&mut self, w: &Arc<Waiter>) {
        self.recvq.retain(|p| !Arc::ptr_eq(&p.waiter, w));
        self.sendq.retain(|(p, _)| !Arc::ptr_eq(&p.waiter, w));
    }
}

impl Channel {
    /// A new open channel; `cap` 0 is a rendezvous channel. `id` orders channel locks (protocol
    /// step 1), so the runtime should give every channel its own.
    pub fn new(id: u64, cap: usize) -> Arc<Channel> {
        Arc::new(Channel { id, cap, state: Mutex::new(ChanState::default()) })
    }

    /// The runtime's id for the channel.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The buffer capacity (0 for a rendezvous channel).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// How many values are buffered now.
    pub fn len(&self) -> usize {
        lock(&self.state).buf.len()
    }

    /// Whether no values are buffered now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the channel has been closed.
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// How many receivers and senders are parked on the channel now (for introspection; a
    /// claimed select whose entry has not been removed yet is still counted).
    pub fn parked(&self) -> (usize, usize) {
        let g = lock(&self.state);
        (g.recvq.len(), g.sendq.len())
    }

    /// Closes the channel: every parked receiver completes with [`Fired::RecvClosed`] and every
    /// parked sender with [`Fired::SendClosed`] (claimed, counted back in and woken as in
    /// protocol step 4). Buffered values stay receivable.
    pub fn close(&self, active: &AtomicUsize) -> Result<(), ChanError> {
        let mut wakers = Wakers::new();
        {
            let mut g = lock(&self.state);
            if g.closed {
                return Err(ChanError::AlreadyClosed);
            }
            g.closed = true;
            for p in std::mem::take(&mut g.recvq) {
                p.waiter.commit(|| Fired::RecvClosed { case: p.case }, active, &mut wakers);
            }
            for (p, _) in std::mem::take(&mut g.sendq) {
                p.waiter.commit(|| Fired::SendClosed { case: p.case }, active, &mut wakers);
            }
        }
        wake_all(&mut wakers);
        Ok(())
    }

    /// A non-blocking send (the stepper's fast path): completes against a parked receiver or the
    /// buffer, or gives the value back.
    pub fn try_send(&self, value: Value, active: &AtomicUsize) -> Result<(), TrySendError> {
        let mut waker = None;
        let out = lock(&self.state).try_send(0, &value, self.cap, active, &mut waker);
        if let Some(w) = waker {
            w.wake();
        }
        match out {
            Some(Fired::Sent { .. }) => Ok(()),
            Some(_) => Err(TrySendError::Closed(value)),
            None => Err(TrySendError::Full(value)),
        }
    }

    /// A non-blocking receive (the stepper's fast path).
    pub fn try_recv(&self, active: &AtomicUsize) -> TryRecv {
        let mut waker = None;
        let out = lock(&self.state).try_recv(0, active, &mut waker);
        if let Some(w) = waker {
            w.wake();
        }
        match out {
            Some(Fired::Received { value, .. }) => TryRecv::Value(value),
            Some(_) => TryRecv::Closed,
            None => TryRecv::Empty,
        }
    }
}

/// A one-case select parked on a channel (a blocking `csend`/`crecv`): the same protocol as a
/// [`Select`] with one case, without a case list or a shuffle. Made by
/// [`Channel::complete_or_park`]; the owner then polls it with [`OneWait::poll`] and, if it
/// stops waiting for any other reason, MUST [`OneWait::cancel`] it on the same channel (the
/// rules of [`Select::cancel`] apply).
pub struct OneWait(Arc<Waiter>);

impl fmt::Debug for OneWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneWait")
    }
}

impl Channel {
    /// Passes 1 and 2 (protocol steps 2 and 3) of a one-case select under this channel's lock:
    /// a send of `send`, or a receive if `None`. Returns the outcome, or the parked wait. The
    /// caller counts itself out of `active` before calling, if it is to (as a select spanning
    /// the mailbox does), so `counted` is only the flag its claimer resets.
    pub fn complete_or_park(
        &self,
        send: Option<&Value>,
        waker: &Waker,
        counted: Arc<dyn CountedFlag>,
        active: &AtomicUsize,
    ) -> Result<Fired, OneWait> {
        let mut to_wake = None;
        let out = {
            let mut g = lock(&self.state);
            let fired = match send {
                Some(v) => g.try_send(0, v, self.cap, active, &mut to_wake),
                None => g.try_recv(0, active, &mut to_wake),
            };
            match fired {
                Some(f) => Ok(f),
                None => {
                    let slot = Slot { waker: Some(waker.clone()), fired: None };
                    let waiter =
                        Arc::new(Waiter { state: AtomicU8::new(WAITING), slot: Mutex::new(slot), counted });
                    let p = Parked { waiter: waiter.clone(), case: 0 };
                    match send {
                        Some(v) => g.sendq.push_back((p, v.clone())),
                        None => g.recvq.push_back(p),
                    }
                    Err(OneWait(waiter))
                }
            }
        };
        if let Some(w) = to_wake {
            w.wake();
        }
        out
    }
}

impl OneWait {
    /// Step 5 for one case: the committed outcome (the claimer already popped the only entry,
    /// so there is nothing to remove), or `None` after refreshing the stored waker.
    pub fn poll(&self, cx: &mut Context<'_>, active: &AtomicUsize) -> Option<Fired> {
        let mut s = lock(&self.0.slot);
        match s.fired.take() {
            Some(f) => {
                // The claimer counted us in; this only guards the invariant.
                count_in(self.0.counted.counted(), active);
                Some(f)
            }
            None => {
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waker = Some(cx.waker().clone());
                }
                None
            }
        }
    }

    /// Step 6 for one case; `chan` must be the channel it parked on. `Ok(())` if nothing was
    /// transferred (the entry is gone and, given `active`, the owner is counted back in), or
    /// the case that committed first.
    pub fn cancel(self, chan: &Channel, active: Option<&AtomicUsize>) -> Result<(), Fired> {
        let waiter = self.0;
        // Holding the channel lock means a claimer has finished recording its outcome.
        let mut g = lock(&chan.state);
        let won = waiter.claim_self();
        if won {
            g.remove(&waiter);
        }
        drop(g);
        let mut s = lock(&waiter.slot);
        s.waker = None;
        if let Some(active) = active {
            count_in(waiter.counted.counted(), active);
        }
        match (won, s.fired.take()) {
            (false, Some(f)) => Err(f),
            _ => Ok(()),
        }
    }
}

/// Why [`Channel::try_send`] did not send; the value is handed back.
#[derive(Clone, Debug, PartialEq)]
pub enum TrySendError {
    /// No receiver is parked and the buffer is full (always, for a rendezvous channel without a
    /// parked receiver).
    Full(Value),
    /// The channel is closed (an error for the sender).
    Closed(Value),
}

/// The result of [`Channel::try_recv`].
#[derive(Clone, Debug, PartialEq)]
pub enum TryRecv {
    /// A value was received.
    Value(Value),
    /// Nothing is available yet.
    Empty,
    /// The channel is closed and drained.
    Closed,
}

/// What a select case does.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseOp {
    /// Send this value.
    Send(Value),
    /// Receive a value.
    Recv,
}

/// One case of a select.
#[derive(Clone, Debug)]
pub struct Case {
    /// The channel.
    pub chan: Arc<Channel>,
    /// Send or receive.
    pub op: CaseOp,
}

impl Case {
    /// A send case.
    pub fn send(chan: &Arc<Channel>, value: Value) -> Case {
        Case { chan: chan.clone(), op: CaseOp::Send(value) }
    }

    /// A receive case.
    pub fn recv(chan: &Arc<Channel>) -> Case {
        Case { chan: chan.clone(), op: CaseOp::Recv }
    }
}

/// The case a select committed to (`case` indexes the select's case list).
#[derive(Clone, Debug, PartialEq)]
pub enum Fired {
    /// The value of send case `case` was taken by a receiver or buffered.
    Sent {
        /// The case.
        case: usize,
    },
    /// Receive case `case` received `value`.
    Received {
        /// The case.
        case: usize,
        /// The value.
        value: Value,
    },
    /// Receive case `case` found its channel closed and drained.
    RecvClosed {
        /// The case.
        case: usize,
    },
    /// Send case `case` found its channel closed: an error (the value was not sent).
    SendClosed {
        /// The case.
        case: usize,
    },
}

impl Fired {
    /// The index of the case that fired.
    pub fn case(&self) -> usize {
        match self {
            Fired::Sent { case }
            | Fired::Received { case, .. }
            | Fired::RecvClosed { case }
            | Fired::SendClosed { case } => *case,
        }
    }
}

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
                CaseOp::Recv => st.try_recv(i, active, wakers),
                CaseOp::Send(v) => st.try_send(i, v, cap, active, wakers),
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
                CaseOp::Send(v) => st.sendq.push_back((p, v.clone())),
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
                        let slot = Slot { waker: Some(cx.waker().clone()), fired: None };
                        let waiter = Arc::new(Waiter {
                            state: AtomicU8::new(WAITING),
                            slot: Mutex::new(slot),
                            counted: self.counted.clone(),
                        });
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
                let fired = {
                    let mut s = lock(&waiter.slot);
                    match s.fired.take() {
                        Some(f) => {
                            // The claimer counted us in; this only guards the invariant.
                            count_in(waiter.counted.counted(), active);
                            Some(f)
                        }
                        None => {
                            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                                s.waker = Some(cx.waker().clone());
                            }
                            None
                        }
                    }
                };
                match fired {
                    Some(f) => {
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
        let mut s = lock(&waiter.slot);
        s.waker = None;
        if let Some(active) = active {
            count_in(waiter.counted.counted(), active);
        }
        match (won, s.fired.take()) {
            (false, Some(f)) => Err(f),
            // Winning means nobody recorded anything; losing always comes with an outcome.
            _ => Ok(()),
        }
    }
}

impl Drop for Select {
    fn drop(&mut self) {
        // Queue hygiene and memory: a dropped select must not stay enqueued.
        let _ = self.cancel_inner(None);
    }
}

/// Snapshots (see `snapshot`): a channel's contents, and a channel made from them. Parked
/// senders and receivers are not part of it: each runs its blocking instruction again after a
/// restore.
impl Channel {
    /// The buffered values, oldest first, and whether the channel is closed.
    pub(crate) fn image(&self) -> (Vec<Value>, bool) {
        let g = lock(&self.state);
        (g.buf.iter().cloned().collect(), g.closed)
    }

    /// Fills a channel made for a restore (no party has used it yet) with its contents.
    pub(crate) fn refill(&self, buffer: Vec<Value>, closed: bool) {
        let mut g = lock(&self.state);
        g.buf = buffer.into();
        g.closed = closed;
    }
}

#[cfg(all(test, not(vm_loom)))]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;
    use std::time::Duration;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    impl Flag {
        fn woken(&self) -> bool {
            self.0.swap(false, Ordering::SeqCst)
        }
    }

    /// Polls once with a flag waker.
    fn poll(s: &mut Select, active: &AtomicUsize) -> (Poll<Fired>, bool, Arc<Flag>) {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let (p, idle) = s.poll(&mut Context::from_waker(&waker), active);
        (p, idle, flag)
    }

    fn ready(p: Poll<Fired>) -> Fired {
        match p {
            Poll::Ready(f) => f,
            Poll::Pending => panic!("expected the select to be ready"),
        }
    }

    /// Runs a select to completion on the current thread.
    fn block(cases: Vec<Case>, active: &AtomicUsize) -> Fired {
        let mut s = Select::new(cases, true);
        futures::executor::block_on(poll_fn(|cx| s.poll(cx, active).0))
    }

    #[test]
    fn rendezvous_send_completes_only_when_a_receiver_takes_the_value() {
        let c = Channel::new(1, 0);
        let active = AtomicUsize::new(2);
        let mut s = Select::new(vec![Case::send(&c, Value::Int(7))], true);
        let (p, idle, flag) = poll(&mut s, &active);
        assert!(p.is_pending() && !idle);
        assert_eq!(active.load(Ordering::SeqCst), 1, "a parked indefinite send counts out");
        assert_eq!((c.len(), c.parked()), (0, (0, 1)), "nothing is buffered on a rendezvous channel");
        // A second sender does not complete either: there is no receiver and no room.
        assert_eq!(c.try_send(Value::Int(8), &active), Err(TrySendError::Full(Value::Int(8))));
        assert!(!flag.woken());
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(7)));
        assert!(flag.woken(), "the receiver wakes the parked sender");
        assert_eq!(active.load(Ordering::SeqCst), 2, "and counts it back in");
        assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
        assert_eq!(c.try_recv(&active), TryRecv::Empty);
        assert_eq!(s.cancel(&active), Ok(()), "cancelling a completed select is a no-op");
        assert_eq!(active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_one_case_wait_parks_commits_cancels_and_closes_like_a_select() {
        let c = Channel::new(1, 0);
        let active = AtomicUsize::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let counted = || -> Arc<dyn CountedFlag> { Arc::new(crate::sync::AtomicBool::new(false)) };
        // A receive parks, a sender hands over directly and wakes it.
        let w = c.complete_or_park(None, &waker, counted(), &active).unwrap_err();
        assert_eq!(c.parked(), (1, 0));
        assert_eq!(w.poll(&mut cx, &active), None);
        assert_eq!(c.try_send(Value::Int(3), &active), Ok(()));
        assert!(flag.woken());
        assert_eq!(w.poll(&mut cx, &active), Some(Fired::Received { case: 0, value: Value::Int(3) }));
        assert_eq!(c.parked(), (0, 0), "the claimer removed the only entry");
        // A parked send that is cancelled leaves nothing behind and sent nothing.
        let w = c.complete_or_park(Some(&Value::Int(4)), &waker, counted(), &active).unwrap_err();
        assert_eq!(w.cancel(&c, Some(&active)), Ok(()));
        assert_eq!((c.parked(), c.try_recv(&active)), ((0, 0), TryRecv::Empty));
        // Cancelled after a receiver took the value: the cancel reports the send.
        let w = c.complete_or_park(Some(&Value::Int(5)), &waker, counted(), &active).unwrap_err();
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(5)));
        assert_eq!(w.cancel(&c, Some(&active)), Err(Fired::Sent { case: 0 }));
        // A sender already parked completes a receive at once.
        let mut s = Select::new(vec![Case::send(&c, Value::Int(6))], false);
        assert!(poll(&mut s, &active).0.is_pending());
        assert_eq!(
            c.complete_or_park(None, &waker, counted(), &active).unwrap(),
            Fired::Received { case: 0, value: Value::Int(6) }
        );
        assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
        // Close completes a parked receive with "closed".
        let w = c.complete_or_park(None, &waker, counted(), &active).unwrap_err();
        c.close(&active).unwrap();
        assert_eq!(w.poll(&mut cx, &active), Some(Fired::RecvClosed { case: 0 }));
        assert_eq!(active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn rendezvous_across_threads_orders_send_after_receive() {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (c, active, done) = (c.clone(), active.clone(), done.clone());
            std::thread::spawn(move || {
                let f = block(vec![Case::send(&c, Value::Int(1))], &active);
                done.store(true, Ordering::SeqCst);
                f
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!done.load(Ordering::SeqCst), "the send must wait for a receiver");
        assert_eq!(block(vec![Case::recv(&c)], &active), Fired::Received { case: 0, value: Value::Int(1) });
        assert_eq!(t.join().unwrap(), Fired::Sent { case: 0 });
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn buffered_channel_takes_cap_sends_then_parks_and_keeps_fifo_order() {
        let c = Channel::new(1, 3);
        let active = AtomicUsize::new(1);
        for i in 0..3 {
            assert_eq!(c.try_send(Value::Int(i), &active), Ok(()));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.try_send(Value::Int(99), &active), Err(TrySendError::Full(Value::Int(99))));
        let mut s = Select::new(vec![Case::send(&c, Value::Int(3))], true);
        let (p, idle, flag) = poll(&mut s, &active);
        assert!(p.is_pending() && idle, "the only actor parking makes the VM idle");
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(0)));
        assert!(flag.woken());
        assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
        assert_eq!(c.len(), 3, "the parked sender's value moved into the buffer");
        for i in 1..4 {
            assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(i)));
        }
        assert_eq!(c.try_recv(&active), TryRecv::Empty);
        assert_eq!(active.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_send_hands_over_directly_to_a_parked_receiver() {
        let c = Channel::new(1, 2);
        let active = AtomicUsize::new(2);
        let mut r = Select::new(vec![Case::recv(&c)], true);
        let (p, _, flag) = poll(&mut r, &active);
        assert!(p.is_pending());
        assert_eq!(c.try_send(Value::str("x"), &active), Ok(()));
        assert!(flag.woken());
        assert_eq!(c.len(), 0, "handed over, not buffered");
        assert_eq!(ready(poll(&mut r, &active).0), Fired::Received { case: 0, value: Value::str("x") });
        assert_eq!(active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn close_drains_buffered_values_then_reports_closed_and_rejects_sends() {
        let c = Channel::new(1, 2);
        let active = AtomicUsize::new(1);
        c.try_send(Value::Int(1), &active).unwrap();
        c.try_send(Value::Int(2), &active).unwrap();
        assert_eq!(c.close(&active), Ok(()));
        assert!(c.is_closed());
        assert_eq!(c.try_send(Value::Int(3), &active), Err(TrySendError::Closed(Value::Int(3))));
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(1)));
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(2)));
        assert_eq!(c.try_recv(&active), TryRecv::Closed);
        assert_eq!(c.try_recv(&active), TryRecv::Closed, "closed stays closed");
        assert_eq!(c.close(&active), Err(ChanError::AlreadyClosed));
        assert_eq!(try_select(&[Case::send(&c, Value::Nil)], &active), Some(Fired::SendClosed { case: 0 }));
        assert_eq!(try_select(&[Case::recv(&c)], &active), Some(Fired::RecvClosed { case: 0 }));
    }

    #[test]
    fn close_wakes_parked_receivers_and_senders() {
        let c = Channel::new(1, 0);
        let d = Channel::new(2, 0);
        let active = AtomicUsize::new(3);
        let mut r1 = Select::new(vec![Case::recv(&c)], true);
        let mut r2 = Select::new(vec![Case::recv(&d), Case::recv(&c)], true);
        let mut s = Select::new(vec![Case::send(&d, Value::Int(1))], true);
        let (p1, _, f1) = poll(&mut r1, &active);
        let (p2, _, f2) = poll(&mut r2, &active);
        assert!(p1.is_pending() && p2.is_pending());
        // r2 parked on d as a receiver, so the sender finds it.
        assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
        assert!(f2.woken());
        assert_eq!(ready(poll(&mut r2, &active).0), Fired::Received { case: 0, value: Value::Int(1) });
        assert_eq!(c.parked(), (1, 0), "r2's entry on c was removed on completion");
        let mut s2 = Select::new(vec![Case::send(&d, Value::Int(2))], true);
        let (p3, _, f3) = poll(&mut s2, &active);
        assert!(p3.is_pending());
        assert_eq!(active.load(Ordering::SeqCst), 1, "r1 and s2 are counted out");
        c.close(&active).unwrap();
        d.close(&active).unwrap();
        assert!(f1.woken() && f3.woken());
        assert_eq!(active.load(Ordering::SeqCst), 3, "close counts both back in");
        assert_eq!(ready(poll(&mut r1, &active).0), Fired::RecvClosed { case: 0 });
        assert_eq!(ready(poll(&mut s2, &active).0), Fired::SendClosed { case: 0 });
        assert_eq!((c.parked(), d.parked()), ((0, 0), (0, 0)));
    }

    #[test]
    fn close_wakes_a_receiver_blocked_on_another_thread() {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let t = {
            let (c, active) = (c.clone(), active.clone());
            std::thread::spawn(move || block(vec![Case::recv(&c)], &active))
        };
        let start = std::time::Instant::now();
        while c.parked() != (1, 0) {
            assert!(start.elapsed() < Duration::from_secs(10), "the receiver never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        c.close(&active).unwrap();
        assert_eq!(t.join().unwrap(), Fired::RecvClosed { case: 0 });
        assert_eq!(active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_parked_select_commits_exactly_one_case() {
        let a = Channel::new(1, 0);
        let b = Channel::new(2, 0);
        let active = AtomicUsize::new(2);
        let mut s = Select::new(vec![Case::recv(&a), Case::recv(&b)], true);
        let (p, _, flag) = poll(&mut s, &active);
        assert!(p.is_pending());
        assert_eq!((a.parked(), b.parked()), ((1, 0), (1, 0)), "one waiter on both channels");
        assert_eq!(a.try_send(Value::Int(1), &active), Ok(()));
        assert!(flag.woken());
        // The waiter is claimed: b's sender skips (and removes) the stale entry.
        assert_eq!(b.try_send(Value::Int(2), &active), Err(TrySendError::Full(Value::Int(2))));
        assert_eq!(b.parked(), (0, 0));
        assert_eq!(ready(poll(&mut s, &active).0), Fired::Received { case: 0, value: Value::Int(1) });
        assert_eq!(a.parked(), (0, 0));
        assert_eq!(active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_select_may_name_one_channel_twice() {
        let c = Channel::new(1, 0);
        let active = AtomicUsize::new(2);
        // Locked once (no self-deadlock), and the select never matches itself.
        let mut s = Select::new(vec![Case::send(&c, Value::Int(5)), Case::recv(&c)], true);
        let (p, _, _) = poll(&mut s, &active);
        assert!(p.is_pending());
        assert_eq!(c.parked(), (1, 1));
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(5)));
        assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
        assert_eq!(c.parked(), (0, 0), "the other entry is removed on completion");
    }

    #[test]
    fn select_with_default_enqueues_nothing() {
        let a = Channel::new(1, 0);
        let b = Channel::new(2, 1);
        let active = AtomicUsize::new(1);
        let cases = [Case::recv(&a), Case::send(&a, Value::Int(1)), Case::recv(&b)];
        assert_eq!(try_select(&cases, &active), None);
        assert_eq!((a.parked(), b.parked()), ((0, 0), (0, 0)));
        assert_eq!(try_select(&[], &active), None);
        b.try_send(Value::Int(4), &active).unwrap();
        assert_eq!(try_select(&cases, &active), Some(Fired::Received { case: 2, value: Value::Int(4) }));
    }

    #[test]
    fn cancelling_a_parked_send_leaves_nothing_behind() {
        let c = Channel::new(1, 0);
        let active = AtomicUsize::new(1);
        let mut s = Select::new(vec![Case::send(&c, Value::Int(1))], true);
        let (p, idle, _) = poll(&mut s, &active);
        assert!(p.is_pending() && idle);
        assert_eq!(s.cancel(&active), Ok(()));
        assert_eq!(active.load(Ordering::SeqCst), 1, "cancel counts the actor back in");
        assert_eq!(c.parked(), (0, 0));
        assert_eq!(c.try_recv(&active), TryRecv::Empty, "nothing was transferred");
    }

    #[test]
    fn cancel_after_a_commit_reports_the_committed_case() {
        let c = Channel::new(1, 0);
        let active = AtomicUsize::new(2);
        let mut s = Select::new(vec![Case::send(&c, Value::Int(1))], true);
        assert!(poll(&mut s, &active).0.is_pending());
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(1)));
        assert_eq!(s.cancel(&active), Err(Fired::Sent { case: 0 }), "the value went: report it");
        let a = Channel::new(2, 0);
        let b = Channel::new(3, 0);
        let mut r = Select::new(vec![Case::recv(&a), Case::recv(&b)], false);
        assert!(poll(&mut r, &active).0.is_pending());
        assert_eq!(active.load(Ordering::SeqCst), 2, "a wait with a deadline stays counted in");
        b.try_send(Value::Int(9), &active).unwrap();
        assert_eq!(r.cancel(&active), Err(Fired::Received { case: 1, value: Value::Int(9) }));
        assert_eq!((a.parked(), b.parked()), ((0, 0), (0, 0)));
        assert_eq!(active.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn dropping_a_parked_select_dequeues_it() {
        let c = Channel::new(1, 0);
        let active = AtomicUsize::new(1);
        let mut s = Select::new(vec![Case::recv(&c), Case::send(&c, Value::Int(3))], false);
        assert!(poll(&mut s, &active).0.is_pending());
        drop(s);
        assert_eq!(c.parked(), (0, 0));
        assert_eq!(c.try_send(Value::Int(1), &active), Err(TrySendError::Full(Value::Int(1))));
    }

    #[test]
    fn a_select_without_cases_waits_until_cancelled() {
        let active = AtomicUsize::new(1);
        let mut s = Select::new(vec![], true);
        let (p, idle, _) = poll(&mut s, &active);
        assert!(p.is_pending() && idle);
        assert_eq!(s.cancel(&active), Ok(()));
        assert_eq!(active.load(Ordering::SeqCst), 1);
    }

    fn share(cases: &[Case], active: &AtomicUsize, refill: impl Fn(usize)) -> Vec<usize> {
        let mut hits = vec![0; cases.len()];
        for _ in 0..10_000 {
            let f = try_select(cases, active).expect("a case is always ready");
            hits[f.case()] += 1;
            refill(f.case());
        }
        hits
    }

    #[test]
    fn select_is_fair_between_ready_cases() {
        let active = AtomicUsize::new(1);
        let a = Channel::new(1, 1);
        let b = Channel::new(2, 1);
        a.try_send(Value::Int(0), &active).unwrap();
        b.try_send(Value::Int(1), &active).unwrap();
        let chans = [a.clone(), b.clone()];
        let hits = share(&[Case::recv(&a), Case::recv(&b)], &active, |i| {
            chans[i].try_send(Value::Int(i as i64), &active).unwrap();
        });
        assert!(hits.iter().all(|&h| (4_000..=6_000).contains(&h)), "{hits:?}");
        // Two ready cases out of three: a rotation from a random start would favour the case
        // after the idle one (2/3); a shuffle gives each half.
        assert_eq!(a.try_recv(&active), TryRecv::Value(Value::Int(0)), "make room on a");
        let idle = Channel::new(3, 0);
        let hits = share(&[Case::send(&a, Value::Nil), Case::recv(&idle), Case::recv(&b)], &active, |i| {
            if i == 0 {
                assert_eq!(a.try_recv(&active), TryRecv::Value(Value::Nil));
            } else {
                b.try_send(Value::Int(1), &active).unwrap();
            }
        });
        assert_eq!(hits[1], 0);
        assert!((4_000..=6_000).contains(&hits[0]) && (4_000..=6_000).contains(&hits[2]), "{hits:?}");
    }

    /// How a stress-test wait ends if nothing fires.
    #[derive(Clone, Copy)]
    enum Until {
        /// No deadline: counts out of `active`.
        Forever,
        /// A timer, raced inside the claim protocol by cancelling when it fires.
        Deadline(Duration),
        /// An "interrupt" right after parking (cancel on the next poll).
        Interrupt,
    }

    /// How many cancels found that a case had committed first (the race the protocol resolves).
    static CANCEL_LOST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Runs a select as the driver will: `None` if it was cancelled with nothing transferred.
    async fn run_select(cases: Vec<Case>, active: &AtomicUsize, until: Until) -> Option<Fired> {
        let mut sel = Some(Select::new(cases, matches!(until, Until::Forever)));
        let mut timer = match until {
            Until::Deadline(d) => Some(Box::pin(tokio::time::sleep(d))),
            _ => None,
        };
        let mut polls = 0;
        poll_fn(move |cx| {
            let Some(s) = sel.as_mut() else { return Poll::Pending };
            let (p, idle) = s.poll(cx, active);
            assert!(!idle, "the test's main thread stays active");
            if let Poll::Ready(f) = p {
                return Poll::Ready(Some(f));
            }
            polls += 1;
            let cancel = match (&mut timer, until) {
                (Some(t), _) => t.as_mut().poll(cx).is_ready(),
                (None, Until::Interrupt) if polls == 1 => {
                    cx.waker().wake_by_ref();
                    false
                }
                (None, Until::Interrupt) => true,
                _ => false,
            };
            if cancel && let Some(s) = sel.take() {
                let out = s.cancel(active).err();
                if out.is_some() {
                    CANCEL_LOST.fetch_add(1, Ordering::Relaxed);
                }
                return Poll::Ready(out);
            }
            Poll::Pending
        })
        .await
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn until(&mut self) -> Until {
            match self.below(10) {
                0 => Until::Deadline(Duration::from_micros(self.below(1500))),
                1 | 2 => Until::Interrupt,
                _ => Until::Forever,
            }
        }
    }

    #[allow(clippy::print_stderr, reason = "a test harness: it reports how many waits it cancelled")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stress_every_value_is_received_exactly_once_despite_cancellations() {
        const SENDERS: i64 = 8;
        const PER: i64 = 10_000;
        const RECEIVERS: usize = 4;
        let chans: Arc<Vec<Arc<Channel>>> =
            Arc::new([0, 0, 1, 4].iter().enumerate().map(|(i, &cap)| Channel::new(i as u64, cap)).collect());
        // Main plus every task.
        let active = Arc::new(AtomicUsize::new(1 + SENDERS as usize + RECEIVERS));
        let work = async {
            let mut senders = Vec::new();
            for s in 0..SENDERS {
                let (chans, active) = (chans.clone(), active.clone());
                senders.push(tokio::spawn(async move {
                    let mut rng = Rng(0x1234_5678 + s as u64 * 7919);
                    let mut cancelled = 0u32;
                    for k in 0..PER {
                        let v = Value::Int(s * PER + k);
                        loop {
                            let i = rng.below(4) as usize;
                            let cases = if rng.below(2) == 0 {
                                vec![Case::send(&chans[i], v.clone())]
                            } else {
                                // The same value offered on two channels: at most one may take it.
                                let j = (i + 1 + rng.below(3) as usize) % 4;
                                vec![Case::send(&chans[i], v.clone()), Case::send(&chans[j], v.clone())]
                            };
                            match run_select(cases, &active, rng.until()).await {
                                Some(Fired::Sent { .. }) => break,
                                None => cancelled += 1,
                                Some(other) => panic!("unexpected {other:?}"),
                            }
                        }
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                    cancelled
                }));
            }
            let mut receivers = Vec::new();
            for r in 0..RECEIVERS {
                let (chans, active) = (chans.clone(), active.clone());
                receivers.push(tokio::spawn(async move {
                    let mut rng = Rng(0x9876_5432 + r as u64 * 104_729);
                    let mut open: Vec<Arc<Channel>> = chans.to_vec();
                    let mut got = Vec::new();
                    let mut cancelled = 0u32;
                    while !open.is_empty() {
                        let until = rng.until();
                        // A receiver waiting forever on one channel while every sender waits on
                        // another would be a real deadlock, so only bounded waits pick one.
                        let cases: Vec<Case> = if !matches!(until, Until::Forever) && rng.below(2) == 0 {
                            vec![Case::recv(&open[rng.below(open.len() as u64) as usize])]
                        } else {
                            open.iter().map(Case::recv).collect()
                        };
                        match run_select(cases.clone(), &active, until).await {
                            Some(Fired::Received { value: Value::Int(v), .. }) => got.push(v),
                            Some(Fired::RecvClosed { case }) => {
                                open.retain(|c| !Arc::ptr_eq(c, &cases[case].chan))
                            }
                            None => cancelled += 1,
                            Some(other) => panic!("unexpected {other:?}"),
                        }
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                    (got, cancelled)
                }));
            }
            let mut cancels = 0;
            for s in senders {
                cancels += s.await.unwrap();
            }
            for c in chans.iter() {
                c.close(&active).unwrap();
            }
            let mut all = Vec::new();
            for r in receivers {
                let (got, c) = r.await.unwrap();
                all.extend(got);
                cancels += c;
            }
            (all, cancels)
        };
        let (mut all, cancels) =
            tokio::time::timeout(Duration::from_secs(60), work).await.expect("stress test finished in time");
        let n = SENDERS * PER;
        assert_eq!(all.len() as i64, n, "every value received, none twice");
        assert_eq!(all.iter().sum::<i64>(), n * (n - 1) / 2);
        all.sort_unstable();
        assert!(all.iter().enumerate().all(|(i, &v)| v == i as i64), "each value exactly once");
        let lost = CANCEL_LOST.load(Ordering::Relaxed);
        eprintln!("stress: {cancels} waits cancelled, {lost} cancels lost to a committed case");
        assert!(cancels > 100, "the test must really cancel waits (cancelled {cancels})");
        assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances");
        assert!(chans.iter().all(|c| c.parked() == (0, 0)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_of_rendezvous_channels_passes_every_value_in_order() {
        const STAGES: usize = 50;
        const VALUES: i64 = 500;
        let chans: Vec<Arc<Channel>> = (0..=STAGES).map(|i| Channel::new(i as u64, 0)).collect();
        let active = Arc::new(AtomicUsize::new(1 + STAGES + 1));
        let work = async {
            for i in 0..STAGES {
                let (from, to, active) = (chans[i].clone(), chans[i + 1].clone(), active.clone());
                tokio::spawn(async move {
                    loop {
                        match run_select(vec![Case::recv(&from)], &active, Until::Forever).await {
                            Some(Fired::Received { value: Value::Int(v), .. }) => {
                                let sent = run_select(
                                    vec![Case::send(&to, Value::Int(v + 1))],
                                    &active,
                                    Until::Forever,
                                );
                                assert_eq!(sent.await, Some(Fired::Sent { case: 0 }));
                            }
                            Some(Fired::RecvClosed { .. }) => break,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    to.close(&active).unwrap();
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            let feeder = {
                let (first, active) = (chans[0].clone(), active.clone());
                tokio::spawn(async move {
                    for v in 0..VALUES {
                        let sent =
                            run_select(vec![Case::send(&first, Value::Int(v))], &active, Until::Forever);
                        assert_eq!(sent.await, Some(Fired::Sent { case: 0 }));
                    }
                    first.close(&active).unwrap();
                    active.fetch_sub(1, Ordering::SeqCst);
                })
            };
            let last = &chans[STAGES];
            let mut got = Vec::new();
            loop {
                match run_select(vec![Case::recv(last)], &active, Until::Forever).await {
                    Some(Fired::Received { value: Value::Int(v), .. }) => got.push(v),
                    Some(Fired::RecvClosed { .. }) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            feeder.await.unwrap();
            got
        };
        let got = tokio::time::timeout(Duration::from_secs(60), work).await.expect("chain finished in time");
        assert_eq!(got, (0..VALUES).map(|v| v + STAGES as i64).collect::<Vec<_>>());
        // Every stage has closed its output, so all stage tasks have counted themselves out.
        let start = std::time::Instant::now();
        while active.load(Ordering::SeqCst) != 1 {
            assert!(start.elapsed() < Duration::from_secs(10), "stages did not finish");
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(all(test, vm_loom))]
mod loom_tests {
    //! Model checks of the select protocol: every interleaving (up to a preemption bound) of
    //! parking, claiming, cancelling and closing.
    use super::*;
    use std::future::poll_fn;

    /// Explores every interleaving of the model (loom's DPOR), or those with at most `bound`
    /// preemptions. Only the largest model is bounded: exhaustively it explores 2.1 million
    /// interleavings in about two minutes (and passes); with a bound of 4, 120 thousand in
    /// seconds.
    #[allow(clippy::print_stderr, reason = "a test harness: it reports how many interleavings it explored")]
    fn model(bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = runs.clone();
        let mut b = loom::model::Builder::new();
        // `LOOM_MAX_PREEMPTIONS` overrides the bound.
        if b.preemption_bound.is_none() {
            b.preemption_bound = bound;
        }
        b.check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
        let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("explored {runs} interleavings");
        assert!(runs > 1, "a model with one interleaving checks nothing");
    }

    /// Runs a select to completion, parking the loom thread while it is pending. No model here
    /// ever has every actor parked at once, so parking must never report idle.
    fn block(cases: Vec<Case>, active: &AtomicUsize) -> Fired {
        let mut sel = Select::new(cases, true);
        loom::future::block_on(poll_fn(|cx| {
            let (p, idle) = sel.poll(cx, active);
            assert!(!idle, "an actor that could wake this one is still active");
            p
        }))
    }

    /// An actor thread exits. In the models that use this, someone else is always active when
    /// an actor exits (the main thread, or a parked party the exiting one has woken and so
    /// counted back in), so the exit must not bring `active` to zero.
    fn exit(active: &AtomicUsize) {
        assert!(active.fetch_sub(1, Ordering::SeqCst) > 1, "a woken actor was left counted out");
    }

    /// Polls once (the driver's first poll), without blocking.
    fn poll_once(sel: &mut Select, active: &AtomicUsize) -> Poll<Fired> {
        sel.poll(&mut Context::from_waker(Waker::noop()), active).0
    }

    /// A rendezvous send and receive meet exactly once, whoever parks first.
    #[test]
    fn loom_rendezvous_send_meets_recv() {
        model(None, || {
            let c = Channel::new(1, 0);
            let active = Arc::new(AtomicUsize::new(2));
            let t = {
                let (c, active) = (c.clone(), active.clone());
                loom::thread::spawn(move || {
                    let f = block(vec![Case::send(&c, Value::Int(7))], &active);
                    exit(&active);
                    f
                })
            };
            let got = block(vec![Case::recv(&c)], &active);
            assert_eq!(got, Fired::Received { case: 0, value: Value::Int(7) });
            assert_eq!(t.join().unwrap(), Fired::Sent { case: 0 });
            assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances");
            assert_eq!(c.parked(), (0, 0));
        });
    }

    /// A select receiving from two channels against a sender on each: exactly one case commits,
    /// and the other sender's value is still there for a later receive (on a rendezvous channel
    /// its sender is still parked; on a buffered one the value is in the buffer).
    #[test]
    fn loom_select_over_two_channels_commits_one_case() {
        model(Some(4), || {
            let a = Channel::new(1, 0);
            let b = Channel::new(2, 1);
            let active = Arc::new(AtomicUsize::new(3));
            let sender = |c: &Arc<Channel>, v: i64| {
                let (c, active) = (c.clone(), active.clone());
                loom::thread::spawn(move || {
                    let f = block(vec![Case::send(&c, Value::Int(v))], &active);
                    exit(&active);
                    f
                })
            };
            let (t1, t2) = (sender(&a, 1), sender(&b, 2));
            let (first, other) = match block(vec![Case::recv(&a), Case::recv(&b)], &active) {
                Fired::Received { case: 0, value } => (value, &b),
                Fired::Received { case: 1, value } => (value, &a),
                f => panic!("unexpected {f:?}"),
            };
            let second = match block(vec![Case::recv(other)], &active) {
                Fired::Received { value, .. } => value,
                f => panic!("unexpected {f:?}"),
            };
            let mut got = [first, second];
            got.sort();
            assert_eq!(got, [Value::Int(1), Value::Int(2)], "each value exactly once");
            assert_eq!(t1.join().unwrap(), Fired::Sent { case: 0 });
            assert_eq!(t2.join().unwrap(), Fired::Sent { case: 0 });
            assert_eq!(active.load(Ordering::SeqCst), 1);
            assert_eq!((a.parked(), b.parked(), b.len()), ((0, 0), (0, 0), 0));
        });
    }

    /// A parked send of 5 on a rendezvous channel, cancelled (by `park_and_cancel`) while a
    /// receiver tries to take it: either the cancel wins and nothing was transferred, or the
    /// receiver got the value and the cancel reports the send as done. Never both, never neither.
    fn cancel_races_a_committing_receiver(
        park_and_cancel: impl Fn(&Arc<Channel>, &AtomicUsize) -> Result<(), Fired> + Sync + Send + 'static,
    ) {
        model(None, move || {
            let c = Channel::new(1, 0);
            let active = Arc::new(AtomicUsize::new(2));
            let t = {
                let (c, active) = (c.clone(), active.clone());
                loom::thread::spawn(move || {
                    let r = c.try_recv(&active);
                    active.fetch_sub(1, Ordering::SeqCst);
                    r
                })
            };
            let out = park_and_cancel(&c, &active);
            match (out, t.join().unwrap()) {
                (Ok(()), TryRecv::Empty) | (Err(Fired::Sent { case: 0 }), TryRecv::Value(Value::Int(5))) => {}
                other => panic!("inconsistent outcome {other:?}"),
            }
            assert_eq!(active.load(Ordering::SeqCst), 1);
            assert_eq!(c.parked(), (0, 0));
        });
    }

    /// The race above for a select.
    #[test]
    fn loom_cancel_races_a_committing_receiver() {
        cancel_races_a_committing_receiver(|c, active| {
            let mut s = Select::new(vec![Case::send(c, Value::Int(5))], true);
            match poll_once(&mut s, active) {
                Poll::Pending => s.cancel(active),
                Poll::Ready(f) => panic!("no receiver ever parks, yet {f:?}"),
            }
        });
    }

    /// Runs a one-case wait to completion as the actor's `ChanWait` does: count out, then park
    /// (or complete at once, counting back in), then wait for the claim. Counting out before
    /// looking can take `active` through zero for an instant while a counterpart is parked (as
    /// a select spanning the mailbox does; the deadlock detector's grace covers it), so unlike
    /// `block` this does not assert that it never idles.
    fn block_one(c: &Channel, send: Option<Value>, active: &AtomicUsize) -> Fired {
        let counted = Arc::new(AtomicBool::new(false));
        let mut parked: Option<OneWait> = None;
        loom::future::block_on(poll_fn(|cx| {
            if let Some(w) = &parked {
                return w.poll(cx, active).map_or(Poll::Pending, Poll::Ready);
            }
            if !counted.swap(true, Ordering::SeqCst) {
                active.fetch_sub(1, Ordering::SeqCst);
            }
            match c.complete_or_park(send.as_ref(), cx.waker(), counted.clone(), active) {
                Ok(f) => {
                    count_in(&counted, active);
                    Poll::Ready(f)
                }
                Err(w) => {
                    parked = Some(w);
                    Poll::Pending
                }
            }
        }))
    }

    /// A one-case wait (`csend`/`crecv`) meets a select sender on another thread exactly once,
    /// whoever parks first, and the accounting balances.
    #[test]
    fn loom_one_wait_meets_a_sender() {
        model(None, || {
            let c = Channel::new(1, 0);
            let active = Arc::new(AtomicUsize::new(2));
            let t = {
                let (c, active) = (c.clone(), active.clone());
                loom::thread::spawn(move || {
                    let mut sel = Select::new(vec![Case::send(&c, Value::Int(7))], true);
                    let f = loom::future::block_on(poll_fn(|cx| sel.poll(cx, &active).0));
                    active.fetch_sub(1, Ordering::SeqCst);
                    f
                })
            };
            assert_eq!(block_one(&c, None, &active), Fired::Received { case: 0, value: Value::Int(7) });
            assert_eq!(t.join().unwrap(), Fired::Sent { case: 0 });
            assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances: each counted in once");
            assert_eq!(c.parked(), (0, 0));
        });
    }

    /// The race above for a one-case wait (`OneWait`).
    #[test]
    fn loom_one_wait_cancel_races_a_committing_receiver() {
        cancel_races_a_committing_receiver(|c, active| {
            let counted: Arc<dyn CountedFlag> = Arc::new(AtomicBool::new(false));
            match c.complete_or_park(Some(&Value::Int(5)), Waker::noop(), counted, active) {
                Err(w) => w.cancel(c, Some(active)),
                Ok(f) => panic!("no receiver ever parks, yet {f:?}"),
            }
        });
    }

    /// Cancelling a select parked on two channels while a sender tries each: at most one sender
    /// succeeds, and it succeeds exactly when the cancel reports its value.
    #[test]
    fn loom_cancel_races_two_senders_on_a_select() {
        model(None, || {
            let a = Channel::new(1, 0);
            let b = Channel::new(2, 0);
            let active = Arc::new(AtomicUsize::new(3));
            let sender = |c: &Arc<Channel>, v: i64| {
                let (c, active) = (c.clone(), active.clone());
                loom::thread::spawn(move || {
                    let r = c.try_send(Value::Int(v), &active);
                    active.fetch_sub(1, Ordering::SeqCst);
                    r.is_ok()
                })
            };
            let (t1, t2) = (sender(&a, 1), sender(&b, 2));
            let mut s = Select::new(vec![Case::recv(&a), Case::recv(&b)], true);
            assert!(poll_once(&mut s, &active).is_pending(), "no sender ever parks");
            let out = s.cancel(&active);
            let sent = [t1.join().unwrap(), t2.join().unwrap()];
            match out {
                Ok(()) => assert_eq!(sent, [false, false], "cancelled, so nothing may have been taken"),
                Err(Fired::Received { case, value }) => {
                    assert_eq!(value, Value::Int(case as i64 + 1));
                    let mut expect = [false, false];
                    expect[case] = true;
                    assert_eq!(sent, expect, "exactly the reported sender succeeded");
                }
                Err(f) => panic!("unexpected {f:?}"),
            }
            assert_eq!(active.load(Ordering::SeqCst), 1);
            assert_eq!((a.parked(), b.parked()), ((0, 0), (0, 0)));
        });
    }

    /// Close racing a receiver and a sender on one rendezvous channel: either they met before the
    /// close, or both see the close (the receiver "closed", the sender the error); every party
    /// finishes and is counted back in.
    #[test]
    fn loom_close_races_a_parked_receiver_and_sender() {
        model(None, || {
            let c = Channel::new(1, 0);
            let active = Arc::new(AtomicUsize::new(3));
            let party = |case: Case| {
                let active = active.clone();
                loom::thread::spawn(move || {
                    let f = block(vec![case], &active);
                    exit(&active);
                    f
                })
            };
            let r = party(Case::recv(&c));
            let s = party(Case::send(&c, Value::Int(5)));
            c.close(&active).unwrap();
            match (r.join().unwrap(), s.join().unwrap()) {
                (Fired::Received { value: Value::Int(5), .. }, Fired::Sent { .. })
                | (Fired::RecvClosed { .. }, Fired::SendClosed { .. }) => {}
                other => panic!("inconsistent outcome {other:?}"),
            }
            assert_eq!(active.load(Ordering::SeqCst), 1);
            assert_eq!(c.parked(), (0, 0));
        });
    }
}
