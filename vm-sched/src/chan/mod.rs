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
//!    waiter has no lock of its own (its state's steps keep its cells apart: see [`Waiter`]).
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
//!    records which case fired (and the value received, if any), counts the waiter back into
//!    `active` if it was counted out, clones its waker, which it wakes after releasing the
//!    channel lock, and sets the state to `DONE`, which publishes the outcome. A counterpart
//!    that loses the swap drops the stale entry and tries the next one. A claimed waiter is
//!    never reset while it waits, so "claimed" stays set while its entries are being removed
//!    from the other queues.
//! 5. *Completion.* When polled again, the select takes the recorded outcome once the state
//!    reads `DONE` (if there is none yet it only refreshes its waker, under all its channel
//!    locks, should the poll bring one that would not wake the same task), removes its
//!    remaining entries from all its channels (locked as in step 1) and returns `Ready`.
//! 6. *Cancellation* (an interrupt, a deadline, a kill). The owner locks all its channels (step 1)
//!    and tries to claim its OWN waiter (`WAITING` to `CANCELLED`). If it wins, no case fired
//!    and none ever will: it removes its entries everywhere, counts itself back in, and
//!    reports "cancelled" — nothing was
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
//! The runtime usually parks a `csend`/`crecv` inside the interpreter's step
//! ([`Channel::complete_or_park_counted`]): the owner counts itself out under the channel lock
//! just before its entry becomes visible (step 7, as an indefinite select does). Its waiter is
//! the owner's one waiter, reused from wait to wait, and holds the owner task's waker from
//! the start (the task is the same at every wait), so the claimer of step 4 clones the waker
//! rather than taking it and the owner gives it nothing when it parks. A claimer that comes
//! while the owner is still finishing its step wakes the running task, which tokio polls
//! again once the step has parked it.
//!
//! This protocol is model-checked with loom (the `loom_tests` submodule); unit tests are in `tests`.

use crate::sync::{
    AtomicBool, AtomicU8, AtomicUsize, CountedFlag, Mutex, Ordering, UnsafeCell, count_in, lock,
};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Waker};
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
    /// Set once the channel has reached a second container (`container`, rule 4): from then on
    /// only plain data, pids and channels may be sent on it. Never reset.
    shared: AtomicBool,
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
    /// [`Channel::shared`] as seen under the lock: set in the same critical section as the
    /// crossing reads what the channel holds ([`Channel::share`]), so a send enqueues either
    /// before that read (and is seen by it) or after, finding this set ([`ChanState::try_send`]).
    shared: bool,
}

/// The waiter's states (protocol steps 4 to 6): claimed by nobody yet; claimed by a
/// counterpart, which is recording its outcome; that outcome recorded; claimed by its owner
/// (cancelled). Only `WAITING` ever changes but for a counterpart's `CLAIMED` → `DONE`, and a
/// reused one-case waiter is reset to `WAITING` when nothing else holds it.
const WAITING: u8 = 0;
const CLAIMED: u8 = 1;
const DONE: u8 = 2;
const CANCELLED: u8 = 3;

/// The one waiter a parked select shares among all of its channel queues (protocol step 3).
///
/// **Its two cells** (`fired` and `waker`) have no lock of their own; the protocol keeps
/// every access apart:
/// 1. `fired` is written only by the counterpart that won the claim (`WAITING` → `CLAIMED`),
///    once, before it stores `DONE` (release). The owner reads it only after it has seen
///    `DONE` (acquire): by a load ([`OneWait::take_fired`], `Select::poll`), or by a cancel,
///    which locks every channel of the waiter, one of which the claimer held from its claim
///    to `DONE` (so a cancel that loses the claim finds `DONE`).
/// 2. `waker` is written by the owner only while no counterpart can read it: before the
///    waiter is published (a new waiter, or one reset for reuse once its strong count is one), or
///    holding every channel lock of the waiter (a select's poll that must replace it). A
///    counterpart reads it only after winning the claim, holding one of those locks.
struct Waiter {
    state: AtomicU8,
    /// The case a counterpart committed; taken by the owner.
    fired: UnsafeCell<Option<Fired>>,
    /// The owner's waker; cloned by the claimer.
    waker: UnsafeCell<Option<Waker>>,
    /// The owner's "counted out of `active`" flag, shared with the owner's other wake paths
    /// (its mailbox): whoever swaps it from true to false counts the owner back in (step 7).
    counted: Arc<dyn CountedFlag>,
}

// SAFETY: the cells are only reached as "Its two cells" above says, which keeps every write
// apart from any other access (checked by the loom models in `loom_tests`); the rest of the
// waiter is atomics and an `Arc` of a `Sync` flag.
#[allow(unsafe_code, reason = "the waiter's cells, kept apart by the protocol (see `Waiter`)")]
unsafe impl Sync for Waiter {}

#[allow(unsafe_code, reason = "the waiter's cells, kept apart by the protocol (see `Waiter`)")]
impl Waiter {
    fn new(waker: Option<Waker>, counted: Arc<dyn CountedFlag>) -> Arc<Waiter> {
        Arc::new(Waiter {
            state: AtomicU8::new(WAITING),
            fired: UnsafeCell::new(None),
            waker: UnsafeCell::new(waker),
            counted,
        })
    }

    /// Step 4: claims the waiter for a counterpart and records `fired()`. Returns false (and
    /// records nothing) if someone else claimed it first. Must be called with the lock of one of
    /// the waiter's channels held; the waker to wake after unlocking is pushed onto `wakers`.
    fn commit(
        &self,
        fired: impl FnOnce() -> Fired,
        active: &AtomicUsize,
        wakers: &mut impl WakeSink,
    ) -> bool {
        if self.state.compare_exchange(WAITING, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return false;
        }
        // SAFETY: the claim is won, so nobody else writes `fired`, and the owner reads it only
        // after `DONE` below ("Its two cells", 1).
        self.fired.with_mut(|f| unsafe { *f = Some(fired()) });
        // Counted in before `DONE`: an owner that sees `DONE` may run on and park again, and
        // a late count-in would then count it in while it waits.
        count_in(self.counted.counted(), active);
        // Cloned, not taken: a one-case waiter is reused with its owner's waker in it (see
        // `Waiter::fresh`), and the owner's task is the same at every wait.
        // SAFETY: the owner writes `waker` only holding every channel lock of the waiter, and
        // one of them is held here ("Its two cells", 2).
        if let Some(w) = self.waker.with(|w| unsafe { (*w).clone() }) {
            wakers.add(w);
        }
        self.state.store(DONE, Ordering::Release);
        true
    }

    /// A waiter for a new one-case wait: `reuse`'s, reset, when nothing else holds it (no
    /// queue entry, no claimer: its strong count is one), keeping the waker it has; else a new one with
    /// `waker` (or the waker of `reuse`, which a claimer still holds) and the flag `counted()`.
    fn fresh(
        reuse: Option<OneWait>,
        waker: Option<&Waker>,
        counted: impl FnOnce() -> Arc<dyn CountedFlag>,
    ) -> Arc<Waiter> {
        let (waker, counted) = match reuse {
            Some(OneWait(w)) => {
                // Nobody else can see it once the claimer has dropped its queue entry (no
                // `Weak` of a waiter is ever made, so the strong count alone says so): a plain
                // reset, published with the queue entry under the channel lock as a new
                // waiter's fields are. Its outcome was taken when its last wait ended
                // (`OneWait::take_fired`, which acquired the claimer's `DONE`; the claimer
                // touches nothing of the waiter after it but its count), and its waker is
                // still the owner's. A load, where `Arc::get_mut` would pay a
                // compare-and-swap and a store on the weak count at every park.
                if Arc::strong_count(&w) == 1 {
                    w.state.store(WAITING, Ordering::Relaxed);
                    return w;
                }
                // SAFETY: a claimer that still holds it only reads the waker.
                (w.waker.with(|k| unsafe { (*k).clone() }), w.counted.clone())
            }
            None => (waker.cloned(), counted()),
        };
        Waiter::new(waker, counted)
    }

    /// Step 6: the owner claims its own waiter. True if it won (no case fired).
    fn claim_self(&self) -> bool {
        self.state.compare_exchange(WAITING, CANCELLED, Ordering::Acquire, Ordering::Acquire).is_ok()
    }

    /// The owner takes the recorded outcome if a counterpart has finished recording it
    /// (step 5). The owner must not share the waiter's ownership with another thread (`&mut`
    /// on `OneWait` and `Select` sees to it).
    fn take_fired(&self) -> Option<Fired> {
        if self.state.load(Ordering::Acquire) != DONE {
            return None;
        }
        // SAFETY: `DONE` was stored after the only write ("Its two cells", 1), and only the
        // owner, which is here, touches it from now on.
        self.fired.with_mut(|f| unsafe { (*f).take() })
    }

    /// Whether the owner's waker is `cx`'s already; else it is replaced, which the caller may
    /// do only holding every channel lock of the waiter ([`Waiter::set_waker`]).
    fn wakes(&self, cx: &Context<'_>) -> bool {
        // SAFETY: the owner is the only writer, and it is here; claimers only read.
        self.waker.with(|w| unsafe { (*w).as_ref().is_some_and(|w| w.will_wake(cx.waker())) })
    }

    /// Replaces the owner's waker. The caller holds every channel lock of the waiter and has
    /// seen it not claimed under them ("Its two cells", 2).
    fn set_waker(&self, cx: &Context<'_>) {
        // SAFETY: as the docs say, no claimer can be reading it.
        self.waker.with_mut(|w| unsafe { *w = Some(cx.waker().clone()) });
    }

    /// The end of a cancel (step 6), once the owner has claimed (`won`) or found the waiter
    /// claimed, holding (or having held) every channel lock of the waiter with its queue
    /// entries removed: counts the owner back in and returns the outcome a counterpart
    /// recorded, if it won instead.
    fn finish_cancel(&self, won: bool, active: Option<&AtomicUsize>) -> Result<(), Fired> {
        if let Some(active) = active {
            count_in(self.counted.counted(), active);
        }
        if won {
            // Winning means nobody recorded anything.
            return Ok(());
        }
        // The claimer held one of the locks the cancel took, from its claim to `DONE`.
        debug_assert_eq!(self.state.load(Ordering::Acquire), DONE);
        self.take_fired().map_or(Ok(()), Err)
    }
}

impl ChanState {
    /// Pass 1 for a receive case: completes it if a value is available or the channel is closed.
    /// With `into` (a `crecv`'s register), the value goes straight there, and the `value` of
    /// the `Received` reported is what `into` held, for the caller to drop after unlocking
    /// (a value moved into its place once is not copied again through the result).
    ///
    /// Inlined: its result is three words, and returned through memory from a call it was
    /// written a word at a time and read back two at once, which stalled on store forwarding
    /// in every `crecv` (a fifth of its time).
    #[inline(always)]
    fn try_recv(
        &mut self,
        case: usize,
        into: Option<&mut Value>,
        active: &AtomicUsize,
        wakers: &mut impl WakeSink,
    ) -> Option<Fired> {
        let value = 'found: {
            while let Some((p, v)) = self.sendq.pop_front() {
                if p.waiter.commit(|| Fired::Sent { case: p.case }, active, wakers) {
                    // On a buffered channel a parked sender means the buffer is full: the
                    // receiver takes the oldest value and the sender's value joins the back,
                    // keeping FIFO.
                    break 'found match self.buf.pop_front() {
                        Some(head) => {
                            self.buf.push_back(v);
                            head
                        }
                        None => v,
                    };
                }
                // A stale entry of a waiter claimed elsewhere; dropping it is its removal.
            }
            match self.buf.pop_front() {
                Some(v) => v,
                None => return self.closed.then_some(Fired::RecvClosed { case }),
            }
        };
        let value = match into {
            Some(dst) => std::mem::replace(dst, value),
            None => value,
        };
        Some(Fired::Received { case, value })
    }

    /// Pass 1 for a send case: completes it if a receiver is parked, there is room, or the
    /// channel is closed (with the error). `checked`: the sender checked `value` against the
    /// boundary rule with the channel already shared, or it needs no check (see
    /// [`Fired::Unchecked`], the answer when it did not and the channel is shared by now).
    /// Inlined, as `try_recv` is.
    #[inline(always)]
    fn try_send(
        &mut self,
        case: usize,
        value: &Value,
        checked: bool,
        cap: usize,
        active: &AtomicUsize,
        wakers: &mut impl WakeSink,
    ) -> Option<Fired> {
        if self.closed {
            return Some(Fired::SendClosed { case });
        }
        if self.shared && !checked {
            return Some(Fired::Unchecked { case });
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
        Arc::new(Channel { id, cap, state: Mutex::new(ChanState::default()), shared: AtomicBool::new(false) })
    }

    /// The runtime's id for the channel.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the channel has reached more than one container (see `container`, rule 4).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    /// Records that the channel is reaching another container than its creator's, and returns
    /// what it holds now — its buffered values and its parked senders' values — for the crossing
    /// check (`container::crossing_refusal`): those were put in while no other container could
    /// reach the channel, so no send checked them. Sends after this are checked as they come:
    /// one that was not (it saw the channel unshared) finds the flag set under this same lock
    /// and is sent back to be checked ([`Fired::Unchecked`]), so nothing enqueues unseen.
    pub(crate) fn share(&self) -> Vec<Value> {
        let mut g = lock(&self.state);
        g.shared = true;
        self.shared.store(true, Ordering::Relaxed);
        g.buf.iter().cloned().chain(g.sendq.iter().map(|(_, v)| v.clone())).collect()
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

    /// A non-blocking send: completes against a parked receiver or the buffer, or gives the
    /// value back. The value counts as unchecked ([`Channel::try_send_checked`]).
    pub fn try_send(&self, value: Value, active: &AtomicUsize) -> Result<(), TrySendError> {
        self.try_send_checked(value, false, active)
    }

    /// [`Channel::try_send`] (the stepper's fast path) for a value the sender has `checked`
    /// against the boundary rule with the channel shared, or that needs no check.
    pub fn try_send_checked(
        &self,
        value: Value,
        checked: bool,
        active: &AtomicUsize,
    ) -> Result<(), TrySendError> {
        let mut waker = None;
        let out = lock(&self.state).try_send(0, &value, checked, self.cap, active, &mut waker);
        if let Some(w) = waker {
            w.wake();
        }
        match out {
            Some(Fired::Sent { .. }) => Ok(()),
            Some(Fired::Unchecked { .. }) => Err(TrySendError::Unchecked(value)),
            Some(_) => Err(TrySendError::Closed(value)),
            None => Err(TrySendError::Full(value)),
        }
    }

    /// A non-blocking receive (the stepper's fast path).
    pub fn try_recv(&self, active: &AtomicUsize) -> TryRecv {
        let mut waker = None;
        let out = lock(&self.state).try_recv(0, None, active, &mut waker);
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
    /// `checked` is as for [`Channel::try_send_checked`].
    pub fn complete_or_park(
        &self,
        send: Option<&Value>,
        checked: bool,
        waker: &Waker,
        counted: Arc<dyn CountedFlag>,
        active: &AtomicUsize,
    ) -> Result<Fired, OneWait> {
        self.complete_or_park_as(send, None, checked, Some(waker), &mut None, || counted, active, false)
            .map_err(|(w, _)| w)
    }

    /// [`Channel::complete_or_park`] for an owner that waits on nothing else (a `csend` or
    /// `crecv` the host parks inside the step): if it parks, it counts itself out of `active`
    /// under the channel lock, before its entry becomes visible (protocol step 7, as an
    /// indefinite [`Select`] does), so a `csend`/`crecv` that completes at once never touches
    /// the count. The boolean is true when that made `active` zero (the VM may be idle).
    ///
    /// `reuse` is a wait of the same owner that has ended ([`OneWait::take_fired`] returned its
    /// outcome), taken only if the wait parks: if no queue holds its waiter any more, which
    /// its strong count of one proves (the claimer popped the only entry and dropped it under
    /// the channel lock), the waiter is reset and used again instead of allocating one, keeping its
    /// `counted` flag and its waker. A new waiter (none to reuse) gets `waker`, the owner
    /// task's, and the flag `counted()`; a wait without a waker must be polled
    /// ([`OneWait::poll`]) before anyone can wake it.
    ///
    /// A receive with `into` (its register) completes as [`ChanState::try_recv`] does with it:
    /// the value is stored there, and the `Received` reported holds what `into` held.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn complete_or_park_counted(
        &self,
        send: Option<&Value>,
        into: Option<&mut Value>,
        checked: bool,
        reuse: &mut Option<OneWait>,
        waker: Option<&Waker>,
        counted: impl FnOnce() -> Arc<dyn CountedFlag>,
        active: &AtomicUsize,
    ) -> Result<Fired, (OneWait, bool)> {
        self.complete_or_park_as(send, into, checked, waker, reuse, counted, active, true)
    }

    // The two public forms' arguments plus how they differ (a waker now, counting out).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn complete_or_park_as(
        &self,
        send: Option<&Value>,
        into: Option<&mut Value>,
        checked: bool,
        waker: Option<&Waker>,
        reuse: &mut Option<OneWait>,
        counted: impl FnOnce() -> Arc<dyn CountedFlag>,
        active: &AtomicUsize,
        count_out: bool,
    ) -> Result<Fired, (OneWait, bool)> {
        let mut to_wake = None;
        let mut g = lock(&self.state);
        let fired = match send {
            Some(v) => g.try_send(0, v, checked, self.cap, active, &mut to_wake),
            None => g.try_recv(0, into, active, &mut to_wake),
        };
        // Each arm returns its own result, after unlocking: a park claims nobody, so it has
        // nothing to wake, and its result is not held across a call (a result kept across
        // the wake went through memory, where copying it stalled on store forwarding).
        let Some(f) = fired else {
            let waiter = Waiter::fresh(reuse.take(), waker, counted);
            let idle = count_out
                && !waiter.counted.counted().swap(true, Ordering::SeqCst)
                && active.fetch_sub(1, Ordering::SeqCst) == 1;
            match send {
                Some(v) => push_send(&mut g.sendq, Parked { waiter: waiter.clone(), case: 0 }, v),
                None => g.recvq.push_back(Parked { waiter: waiter.clone(), case: 0 }),
            }
            drop(g);
            debug_assert!(to_wake.is_none(), "a park claims nobody");
            return Err((OneWait(waiter), idle));
        };
        drop(g);
        if let Some(w) = to_wake {
            w.wake();
        }
        Ok(f)
    }
}

/// Queues a parked sender's entry. Room is made first, out of line, and the push is then
/// known not to grow: an entry built before a push that might grow (a call) was kept on the
/// stack, written a word at a time and read back two words at once, which stalled on store
/// forwarding in every parked `csend`.
#[inline(always)]
fn push_send(q: &mut VecDeque<(Parked, Value)>, p: Parked, v: &Value) {
    let v = v.clone();
    if q.len() == q.capacity() {
        grow(q);
    }
    // SAFETY: `grow` reserved room for one more entry if there was none.
    #[allow(unsafe_code, reason = "tells the push that it need not grow the queue")]
    unsafe {
        std::hint::assert_unchecked(q.len() < q.capacity())
    };
    q.push_back((p, v));
}

/// Makes room for one more entry (out of line: queues seldom grow).
#[cold]
#[inline(never)]
fn grow<T>(q: &mut VecDeque<T>) {
    q.reserve(1);
}

impl OneWait {
    /// Step 5 for one case, polled as a future whose owner counts itself out (the runtime's
    /// `ChanWait`, which another wake source, its mailbox, may count back in meanwhile):
    /// the committed outcome (the claimer already popped the only entry, so there is nothing
    /// to remove; it also counted the owner in), or else, under the channel's lock, the owner
    /// counted out again and its waker refreshed: `Err`, true if that made `active` zero.
    /// `chan` must be the channel it parked on.
    ///
    /// The count-out and the look for a claim are one step under that lock, which every
    /// claimer holds from its claim to its count-in: a claim is either seen here or counts
    /// the owner in after this count-out. (Looking first and counting out after, without the
    /// lock, would let a claim that came between leave the owner counted out though woken,
    /// `active` short by one until its next poll.)
    pub fn poll(&mut self, chan: &Channel, cx: &Context<'_>, active: &AtomicUsize) -> Result<Fired, bool> {
        let w = &*self.0;
        if let Some(f) = w.take_fired() {
            // The claimer counted the owner in; this only guards the invariant.
            count_in(w.counted.counted(), active);
            return Ok(f);
        }
        let g = lock(&chan.state);
        // A claim finishes under this lock, so the state is `WAITING` or `DONE` now.
        if let Some(f) = w.take_fired() {
            drop(g);
            count_in(w.counted.counted(), active);
            return Ok(f);
        }
        if !w.wakes(cx) {
            w.set_waker(cx);
        }
        let idle =
            !w.counted.counted().swap(true, Ordering::SeqCst) && active.fetch_sub(1, Ordering::SeqCst) == 1;
        drop(g);
        Err(idle)
    }

    /// Step 5 for a wait whose owner was woken and runs its instruction again (the runtime's
    /// `csend`/`crecv`): the committed outcome, if any, without touching the waker. With
    /// `Some` the wait is over (nothing to cancel) and may be reused
    /// ([`Channel::complete_or_park_counted`]); with `None` it is still parked.
    #[inline]
    pub fn take_fired(&mut self) -> Option<Fired> {
        self.0.take_fired()
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
        waiter.finish_cancel(won, active)
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
    /// As [`Fired::Unchecked`]: check the value and try again.
    Unchecked(Value),
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
    /// Send this value; the flag says whether it was checked as for
    /// [`Channel::try_send_checked`].
    Send(Value, bool),
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
    /// A send case (its value counts as unchecked: [`Case::send_checked`]).
    pub fn send(chan: &Arc<Channel>, value: Value) -> Case {
        Case::send_checked(chan, value, false)
    }

    /// A send case whose value was `checked` as for [`Channel::try_send_checked`].
    pub fn send_checked(chan: &Arc<Channel>, value: Value, checked: bool) -> Case {
        Case { chan: chan.clone(), op: CaseOp::Send(value, checked) }
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
    /// Send case `case` was not checked against the boundary rule (`container`, rule 4) with
    /// the channel shared, and found it shared under its lock (it crossed to another container
    /// since the sender looked): nothing was sent; check the value and try again.
    Unchecked {
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
            | Fired::SendClosed { case }
            | Fired::Unchecked { case } => *case,
        }
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

pub(crate) mod orphans;
pub(crate) mod reach;
mod select;
pub(crate) mod waits;

pub use select::{Select, try_select};

#[cfg(all(test, not(vm_loom)))]
mod tests;

#[cfg(all(test, vm_loom))]
mod loom_tests;
