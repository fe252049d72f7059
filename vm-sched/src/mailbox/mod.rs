//! An actor's mailbox, its control port, and the wake protocol.
//!
//! Each actor has one [`Mailbox`]: a mutex over its user messages, its pending control signals
//! (exit signals, kills, interrupts — always looked at before messages, as ractor does), its
//! stored waker, and the bookkeeping that links, monitors, names and deadlock detection need. One
//! lock per actor keeps every decision about that actor atomic.
//!
//! Selective receive scans `messages` from the front and removes the first match, so messages it
//! skips keep their order; a scan that finds nothing leaves a *save point* (BEAM's save
//! pointer), so the same receive woken by the next arrival looks only at messages after it; a message is removed only by the receiving actor itself, in the same
//! critical section that decides it has been received, so a receive cancelled by a timeout or an
//! interrupt can neither lose nor duplicate a message.
//!
//! **The wake protocol** (exactly one party wakes a parked actor):
//! 1. The actor, holding the lock, finds no signal and no deliverable message. It marks itself
//!    *parked* (storing its waker if the stored one would not wake it), records what it waits
//!    for (`waiting`), and — when the wait has no deadline — marks itself *counted out* and
//!    decrements the VM's `active` count. If that made `active` zero it reports that the VM may
//!    be idle. It releases the lock and returns `Pending`.
//! 2. A sender (or signaller), holding the lock, pushes its message (or signal) and, if the actor
//!    is parked, clears `parked` and takes a clone of the waker. If the actor was counted out,
//!    the sender counts it back in (increments `active`) before releasing the lock — so `active`
//!    can only reach zero when no one is left who could wake anyone. After releasing the lock the
//!    sender wakes the waker. Later senders find the actor unparked and only push.
//! 3. A timer deadline wakes the task through the timer's own waker; the actor then decides.
//! 4. When polled, the actor takes the lock and decides exactly one outcome, in priority order:
//!    a signal, then a matching message, then an expired deadline. It clears `waiting`, counts
//!    itself back in if it is still counted out, and applies the outcome itself.
//! 5. An interrupt of mode 0 is delivered only if `waiting` is set at the moment the signaller
//!    holds the lock (the actor is soft-blocked); otherwise it is dropped, as specified.
//!
//! **The waker is kept.** Only the actor's own driver parks on its mailbox, always from the one
//! tokio task that runs the actor, so the waker stored at the first wait stays valid for the
//! actor's life (it is replaced if a poll ever brings one that would not wake the same task).
//! Parking therefore clones nothing, and receive's fast path can park in the same critical
//! section that found the mailbox empty ([`Mailbox::take_or_park`]) instead of unlocking and
//! coming back to park: one lock round trip per blocking receive instead of two. The stored
//! waker holds a reference on the task, released when the mailbox is closed at exit.
//!
//! **A parked receive is re-run.** When [`Mailbox::take_or_park`] parked a receive (the host
//! answers `Received::Parked` and the step ends with `Effect::Begun(Begun::Receive)`), the driver
//! does not poll a wait future for the outcome: once woken it runs the receive instruction again,
//! whose `take_or_park` is then step 4 (a pending signal first — it sends the driver to the
//! ordinary wait, which takes it — then a matching message, clearing `waiting` and counting the
//! actor in). A spurious wake finds nothing and parks again, which changes nothing.
//!
//! **A quiet channel wait** (a `csend`/`crecv` parked on its channel inside the step, see
//! `chan::waits::try_or_park`) waits on its channel and on signals, never on messages, and
//! parks and ends without the lock, through two atomics beside it:
//! 1. The actor has counted itself out and parked on its channel with a waiter that holds its
//!    task's waker. It stores its description in `chan_wait` (the channel and the instruction,
//!    packed), then reads `signalled`. If a signal is pending it takes the description back and
//!    waits the ordinary way ([`Mailbox::poll_wait`] takes the signal).
//! 2. A signaller, holding the lock, queues its signal, sets `signalled` (kept under the lock
//!    with the signal queue: cleared when the queue empties), then swaps `chan_wait` to 0: if
//!    it held a wait, the signaller wakes the actor as step 2 above does (counting it in).
//!    The wait's store and read and the signaller's set and swap are all `SeqCst`, so they
//!    fall in one total order that agrees with each side's program order: if the wait's read
//!    of `signalled` comes before the signaller's set (it read false), its store of the wait
//!    came earlier still, and the signaller's swap, later, takes it; otherwise the wait reads
//!    true. At least one side sees the other, never neither. Both is a spurious wake, which
//!    costs the actor one more park. (The wait's read is a load, [`read_signalled`]. Loom
//!    models `SeqCst` loads and stores as acquire/release, so under loom the read is a
//!    `fetch_or` of false instead: every access to `signalled` is then a read-modify-write,
//!    the later of the two sides' reads from the earlier, and the argument holds under
//!    acquire/release alone, which loom checks.)
//! 3. A message does not look at `chan_wait`: it neither wakes nor counts in the actor.
//! 4. Woken, the actor runs its instruction again, which clears `chan_wait` with a store. If
//!    its channel's claimer woke it, that is the whole end of the wait; if a signaller did, the
//!    channel wait is cancelled and the instruction tries again, seeing the signal (step 1).
//! 5. What the actor waits for, as introspection, the orphan census and a mode-0 interrupt see
//!    it ([`Mailbox::waiting`]), is `waiting`, or else the wait in `chan_wait`. A mode-0
//!    interrupt that finds the wait there, racing the wait's end, is queued and meets a running
//!    actor, which drops it (as when it finds `waiting` set just before the wait ends).
//!
//! This protocol is model-checked with loom (the `loom_tests` submodule); unit tests are in `tests`.
//! The quiet wait's step 2 with the `SeqCst` load that loom cannot model is raced on real
//! threads by `tests/programs/race_chan_signal_at_park.vasm` (thousands of signals racing a
//! park: it fails if either side misses the other).
//!
//! **Memory.** Under the same lock the mailbox keeps what its queued messages are charged
//! (`Inner::bytes`, `vm_core::mem::message_size` of each, added when one is queued and taken off
//! when one leaves), and in its extras the actor's latest count and `:max_heap`; a delivery that
//! takes the actor past its `:max_heap` kills it as an overflow does (see `budget`).

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, count_in, lock};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use vm_core::mem::message_size;
use vm_core::{Atom, Exception, Pid, Value, atoms};

/// A control signal, handled before any message.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// An exit signal from a linked actor, or sent with `exit`. Only abnormal reasons arrive here
    /// (a normal one is ignored, or becomes a message when trapping exits).
    Exit {
        /// Who sent it.
        from: Pid,
        /// Why.
        reason: Value,
    },
    /// End the actor now with this reason; cannot be trapped or caught.
    Kill(Value),
    /// The channels the actor waits on can no longer be reached by any other actor (see
    /// `chan::orphans`): raise `exc` at the blocked instruction if the actor is still in the
    /// wait the census judged, `at` (its [`WaitId`]); stale and ignored otherwise.
    Orphaned {
        /// The exception to raise.
        exc: Exception,
        /// The wait it applies to.
        at: WaitId,
    },
    /// Raise an exception in the actor (modes 0 and 1), or end it with the exception (mode 2).
    Interrupt {
        /// The exception.
        exc: Exception,
        /// 0, 1 or 2.
        mode: u8,
    },
    /// A snapshot is being taken: a wait gives way (taking nothing) so that the actor reaches
    /// its safe point, where it publishes its state (see `pause`). Changes nothing else.
    Pause,
}

/// Which execution of a blocking instruction an actor is in: its position (function and
/// instruction, packed as `func << 32 | pc`) and the fuel it had spent. An actor comes back to
/// the same instruction only by a backward jump or a call, and both cost fuel, so the pair
/// names one wait; a wait that gave way to a pause and runs its instruction again keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WaitId {
    /// `func << 32 | pc`.
    pub position: u64,
    /// Fuel spent so far.
    pub reductions: u64,
}

impl WaitId {
    /// The wait an actor whose state is `st` is in (or would be, at its current instruction).
    pub fn of(st: &vm_core::ActorState) -> WaitId {
        let position = st.position().map_or(0, |(f, pc)| (u64::from(f) << 32) | u64::from(pc));
        WaitId { position, reductions: st.reductions }
    }
}

/// What a parked actor waits for (for `ps` and deadlock reports).
#[derive(Clone, Debug, PartialEq)]
pub enum Wait {
    /// A message, optionally matching a pattern, optionally with a timeout.
    Receive {
        /// The pattern, if selective.
        pattern: Option<Value>,
        /// The timeout in milliseconds, if any.
        timeout_ms: Option<u64>,
    },
    /// A timer.
    Sleep(u64),
    /// Waiting for an I/O operation: the native's name.
    Io(&'static str),
    /// Waiting for a call queued to (or running on) an affine executor's thread.
    Affine(std::sync::Arc<crate::affine::Call>),
    /// A channel wait (`csend`, `crecv` or `select`): which instruction, the channels of its
    /// channel cases, and whether it is *orphanable*: no deadline and no mailbox or socket case,
    /// so that only its channels can end it (`chan::orphans` looks for these).
    Chan {
        /// Which instruction: `csend`, `crecv` or `select` (see [`describe_shape`]).
        shape: vm_core::SelectShape,
        /// The ids of its channels.
        chans: ChanIds,
        /// No deadline, no mailbox or socket case.
        orphanable: bool,
    },
    /// Another effect, described in words (static, so that parking allocates nothing).
    Other(&'static str),
}

/// How introspection names a channel wait.
pub fn describe_shape(shape: vm_core::SelectShape) -> &'static str {
    match shape {
        vm_core::SelectShape::Send => "channel send",
        vm_core::SelectShape::Recv => "channel receive",
        vm_core::SelectShape::Select => "select",
    }
}

/// The channel ids of a [`Wait::Chan`]: one inline (a `csend` or `crecv`: parking allocates
/// nothing), several in a shared list (a `select`). Two words, so that `Wait` stays as small as
/// its largest other variant.
#[derive(Clone, Debug, PartialEq)]
pub enum ChanIds {
    /// One channel.
    One(u64),
    /// Several, distinct, in case order.
    Many(std::sync::Arc<Vec<u64>>),
}

impl ChanIds {
    /// The ids.
    pub fn as_slice(&self) -> &[u64] {
        match self {
            ChanIds::One(id) => std::slice::from_ref(id),
            ChanIds::Many(ids) => ids,
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::Receive { pattern: None, timeout_ms: None } => write!(f, "receive"),
            Wait::Receive { pattern: Some(p), timeout_ms: None } => {
                write!(f, "receive matching {}", p.repr())
            }
            Wait::Receive { pattern: None, timeout_ms: Some(t) } => write!(f, "receive (timeout {t} ms)"),
            Wait::Receive { pattern: Some(p), timeout_ms: Some(t) } => {
                write!(f, "receive matching {} (timeout {t} ms)", p.repr())
            }
            Wait::Sleep(ms) => write!(f, "sleep {ms} ms"),
            Wait::Io(name) => write!(f, "I/O ({name})"),
            Wait::Affine(call) => write!(f, "{call}"),
            Wait::Chan { shape, chans, .. } => {
                write!(f, "{} on ", describe_shape(*shape))?;
                for (i, id) in chans.as_slice().iter().enumerate() {
                    write!(f, "{}#chan<{id}>", if i == 0 { "" } else { ", " })?;
                }
                Ok(())
            }
            Wait::Other(s) => f.write_str(s),
        }
    }
}

/// The outcome a woken actor decided on.
#[derive(Debug, PartialEq)]
pub enum Woken {
    /// A control signal.
    Signal(Signal),
    /// A message (already removed from the mailbox).
    Message(Value),
}

/// What a wait accepts.
#[derive(Clone, Copy, Debug)]
pub struct WaitSpec<'a> {
    /// Take a message (matching `pattern`, if any); false for a plain sleep.
    pub receive: bool,
    /// The selective-receive pattern.
    pub pattern: Option<&'a Value>,
    /// No deadline: the actor counts out of `active` while parked.
    pub indefinite: bool,
    /// The actor is soft-blocked (receive, sleep, channel, I/O), so mode-0 interrupts reach it;
    /// false while it is real-blocked in a native call.
    pub soft: bool,
}

/// What [`Mailbox::take_or_park`] did.
#[derive(Debug, PartialEq)]
pub enum TakeOrPark {
    /// A matching message, removed from the mailbox.
    Taken(Value),
    /// Nothing matched and the actor is now parked (and counted out); `idle` as for
    /// [`Mailbox::poll_wait`].
    Parked {
        /// Parking made `active` zero.
        idle: bool,
    },
    /// Nothing matched and the actor could not park here (first wait, or a signal pending):
    /// wait the ordinary way.
    Empty,
    /// A scan for a pattern spent its budget with more messages to look at; the save point
    /// keeps its place (see [`Mailbox::take_or_park_within`]).
    Unfinished,
}

/// The result of delivering a message or signal.
#[derive(Debug)]
pub enum Delivery {
    /// Queued; the actor was not parked.
    Queued,
    /// Queued; wake this waker (after the lock is released, which it is by now).
    Wake(Waker),
    /// The actor has exited or the signal does not apply: dropped.
    Dropped,
    /// The mailbox was full: the message was dropped and the actor is being killed.
    Overflow(Option<Waker>),
}

/// The state behind the lock. Fields other than the protocol's are plain bookkeeping.
#[derive(Default)]
pub struct Inner {
    /// User messages, oldest first.
    pub messages: VecDeque<Value>,
    /// The actor task's waker, once it has waited (see "The waker is kept" above).
    waker: Option<Waker>,
    /// Whether the actor is parked: the next delivery must wake it.
    parked: bool,
    /// Set while the actor is parked: what it waits for.
    pub waiting: Option<Wait>,
    /// Set once the actor has exited; everything sent afterwards is dropped.
    pub closed: bool,
    /// What the queued messages are charged (`vm_core::mem::message_size` of each; their
    /// slots in the queue are counted apart, by its length).
    pub bytes: u64,
    /// What most actors never use, allocated on first use so an idle actor stays small.
    ext: Option<Box<Extras>>,
}

/// The rarely used part of an actor's bookkeeping.
#[derive(Default)]
pub struct Extras {
    /// Control signals, oldest first.
    pub signals: VecDeque<Signal>,
    /// Linked actors.
    pub links: Vec<Pid>,
    /// Monitors on this actor: (reference, watcher).
    pub monitors: Vec<(i64, Pid)>,
    /// Monitors this actor holds on others: (reference, monitored actor). An entry goes when the
    /// monitor fires (the monitored actor's exit removes it) or is cancelled.
    pub monitoring: Vec<(i64, Pid)>,
    /// The registered name, if any.
    pub name: Option<Atom>,
    /// Whether exit signals become messages.
    pub trap_exit: bool,
    /// Maximum queued messages (the spawn option `:max_mailbox`); past it the actor is killed.
    pub max_len: Option<usize>,
    /// The spawn option `:max_heap`.
    pub max_heap: Option<u64>,
    /// What the actor held at its latest count (`vm_core::mem`), for the `:max_heap` check on
    /// delivery and the VM-wide budget's choice of the largest actor. (Only an actor that has
    /// allocated enough to be counted has one: a smaller one is nobody's choice.)
    pub live: u64,
    /// The selective-receive save point (BEAM's save pointer): the first `.1` messages are
    /// known to match none of the patterns `.0` (one for `recvp`, a select's `{:msg, pattern}`
    /// cases in order), so a scan for those patterns woken by a new message looks only at the
    /// new ones. Set by a scan that found nothing; dropped whenever a message is removed or put
    /// back at the front (indexes shift). Inline for one pattern, so saving allocates nothing.
    save: Option<(SmallVec<[Value; 1]>, usize)>,
}

/// An actor's mailbox; see the module docs.
#[derive(Default)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// The actor's "counted out of `active`" flag, shared with its channel selects (see
    /// `crate::sync::count_in`; selects reach it through the actor's cell).
    counted: AtomicBool,
    /// A quiet channel wait (see the module docs): its channel and instruction packed
    /// ([`quiet_chan`]), or 0.
    chan_wait: AtomicU64,
    /// Whether control signals are queued: written under the lock with the queue, read
    /// without it by a quiet channel wait.
    signalled: AtomicBool,
}

/// A quiet channel wait's description in one word: the channel id and the instruction
/// (`csend` 1, `crecv` 2). `None` for an id too large to pack (such a wait is not quiet).
fn quiet_chan(shape: vm_core::SelectShape, id: u64) -> Option<u64> {
    let code = match shape {
        vm_core::SelectShape::Send => 1,
        vm_core::SelectShape::Recv => 2,
        vm_core::SelectShape::Select => return None,
    };
    (id < 1 << 62).then_some((id << 2) | code)
}

/// The wait a non-zero [`quiet_chan`] word describes.
fn quiet_wait(word: u64) -> Wait {
    let shape = if word & 3 == 1 { vm_core::SelectShape::Send } else { vm_core::SelectShape::Recv };
    Wait::Chan { shape, chans: ChanIds::One(word >> 2), orphanable: true }
}

/// Step 1's read of `signalled`, after the wait's `SeqCst` store (module docs, step 2): a
/// `SeqCst` load in the VM, which on x86 is a plain load where the read-modify-write is a
/// locked instruction that also drains the store buffer (a fifth of `csend`'s samples were at
/// it and the load after it). Under loom, which models `SeqCst` loads and stores as
/// acquire/release and so cannot check the store-then-load order, the read-modify-write that
/// it can check.
#[inline(always)]
fn read_signalled(signalled: &AtomicBool) -> bool {
    #[cfg(not(vm_loom))]
    return signalled.load(Ordering::SeqCst);
    #[cfg(vm_loom)]
    return signalled.fetch_or(false, Ordering::SeqCst);
}

/// The reason an actor is killed with when its mailbox overflows.
pub fn mailbox_overflow_reason() -> Value {
    Value::tuple(vec![Value::Atom(atoms::LIMIT), Value::atom("max_mailbox")])
}

impl Inner {
    /// The rarely used bookkeeping, allocated if this is its first use.
    pub fn ext(&mut self) -> &mut Extras {
        self.ext.get_or_insert_with(Box::default)
    }

    /// The rarely used bookkeeping, if it was ever used.
    pub fn ext_ref(&self) -> Option<&Extras> {
        self.ext.as_deref()
    }

    /// Takes the oldest signal; `signalled` is the mailbox's flag, cleared with the queue.
    fn pop_signal(&mut self, signalled: &AtomicBool) -> Option<Signal> {
        let e = self.ext.as_mut()?;
        let sig = e.signals.pop_front()?;
        if e.signals.is_empty() {
            // A swap, not a store: step 2 of "A quiet channel wait" needs every write of the
            // flag to continue the read-modify-write chain.
            signalled.swap(false, Ordering::SeqCst);
        }
        Some(sig)
    }

    /// Whether exit signals become messages.
    pub fn trap_exit(&self) -> bool {
        self.ext_ref().is_some_and(|e| e.trap_exit)
    }

    /// Queues a message at the back, counting its size. True if that may have made the
    /// process's memory grow: a boxed message (charged here for the first time) or a queue
    /// whose buffer was full (it grows); a scalar into a queue with room allocates nothing.
    #[inline(always)]
    fn push_back(&mut self, msg: Value) -> bool {
        let size = message_size(&msg);
        if size != 0 {
            self.bytes += size;
            self.messages.push_back(msg);
            return true;
        }
        let full = self.messages.len() == self.messages.capacity();
        self.messages.push_back(msg);
        full
    }

    /// A message has left the queue: stops counting its size.
    #[inline(always)]
    fn took(&mut self, msg: Option<Value>) -> Option<Value> {
        if let Some(m) = &msg {
            Self::uncharge(&mut self.bytes, m);
        }
        msg
    }

    /// Stops counting the size of `m`, which leaves the queue, in `bytes` (the queue's
    /// `Inner::bytes`; a field rather than `self`, so that `m` may still be in the queue). With
    /// nothing counted (only scalars queued, as in most mailboxes) there is nothing to stop
    /// counting, and `m` is not looked at: one test of `bytes`, which the lock brought in.
    #[inline(always)]
    fn uncharge(bytes: &mut u64, m: &Value) {
        if *bytes != 0 {
            *bytes = bytes.saturating_sub(message_size(m));
        }
    }

    /// What the actor holds by the latest count plus its queued messages (see `vm_core::mem`).
    pub fn held(&self) -> u64 {
        self.ext_ref().map_or(0, |e| e.live) + self.bytes + self.messages.len() as u64 * vm_core::mem::SLOT
    }

    /// Whether the actor holds more than its `:max_heap`.
    fn past_max_heap(&self) -> bool {
        self.ext_ref().and_then(|e| e.max_heap).is_some_and(|max| self.held() > max)
    }

    /// Drops every queued message (the actor is being killed: they would only be dropped later).
    pub fn clear_messages(&mut self) {
        // A new queue, so that a flooded queue's buffer is given back at once.
        self.messages = VecDeque::new();
        self.bytes = 0;
        self.forget_save();
    }

    /// Step 2 of the protocol: unparks the actor, counting it back in if needed, and returns the
    /// waker to wake once the lock is released.
    fn take_waker(&mut self, counted: &AtomicBool, active: &AtomicUsize) -> Option<Waker> {
        if !std::mem::take(&mut self.parked) {
            return None;
        }
        count_in(counted, active);
        self.waker.clone()
    }

    /// Step 1 of the protocol, with the lock held and nothing deliverable: parks the actor,
    /// storing `waker` unless the kept one wakes the same task (`None`: keep it as it is).
    /// True if counting out made `active` zero.
    fn park(
        &mut self,
        waker: Option<&Waker>,
        spec: &WaitSpec<'_>,
        wait: impl FnOnce() -> Wait,
        counted: &AtomicBool,
        active: &AtomicUsize,
    ) -> bool {
        if let Some(w) = waker
            && !self.waker.as_ref().is_some_and(|old| old.will_wake(w))
        {
            self.waker = Some(w.clone());
        }
        self.parked = true;
        if self.waiting.is_none() && spec.soft {
            self.waiting = Some(wait());
        }
        spec.indefinite && !counted.swap(true, Ordering::SeqCst) && active.fetch_sub(1, Ordering::SeqCst) == 1
    }

    fn wake_result(&mut self, counted: &AtomicBool, active: &AtomicUsize) -> Delivery {
        match self.take_waker(counted, active) {
            Some(w) => Delivery::Wake(w),
            None => Delivery::Queued,
        }
    }
}

impl Mailbox {
    /// A mailbox with a length limit.
    pub fn with_limit(max_len: Option<usize>) -> Mailbox {
        let ext = max_len.map(|n| Box::new(Extras { max_len: Some(n), ..Extras::default() }));
        Mailbox { inner: Mutex::new(Inner { ext, ..Inner::default() }), ..Mailbox::default() }
    }

    /// The actor's "counted out" flag, for a channel select that parks alongside the mailbox.
    pub fn counted(&self) -> &AtomicBool {
        &self.counted
    }

    /// Counts the actor out of `active` if it is not already (for a wait that spans several wake
    /// sources: count out first, then publish the wakers, then re-check). True if that made
    /// `active` zero.
    pub fn count_out(&self, active: &AtomicUsize) -> bool {
        !self.counted.swap(true, Ordering::SeqCst) && active.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Counts the actor back in if it is out.
    pub fn count_in(&self, active: &AtomicUsize) {
        count_in(&self.counted, active);
    }

    /// Runs `f` with the lock held (bookkeeping: links, monitors, names, introspection).
    pub fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut lock(&self.inner))
    }

    /// Delivers a user message.
    pub fn deliver(&self, msg: Value, active: &AtomicUsize) -> Delivery {
        self.deliver_grows(msg, active).0
    }

    /// [`Mailbox::deliver`], also saying whether the delivery may have made the process's memory
    /// grow (see `Inner::push_back`): only then is the VM-wide budget checked (`budget`).
    pub fn deliver_grows(&self, msg: Value, active: &AtomicUsize) -> (Delivery, bool) {
        let mut g = lock(&self.inner);
        if g.closed {
            return (Delivery::Dropped, false);
        }
        // The limits are in the extras: with none (most actors), one test and on.
        if g.ext.is_some() {
            return self.deliver_with_extras(&mut g, msg, active);
        }
        let grows = g.push_back(msg);
        (g.wake_result(&self.counted, active), grows)
    }

    /// Delivers a control signal, applying the trapping and mode-0 rules.
    pub fn signal(&self, sig: Signal, active: &AtomicUsize) -> Delivery {
        let mut g = lock(&self.inner);
        if g.closed {
            return Delivery::Dropped;
        }
        match sig {
            Signal::Exit { from, reason } if g.trap_exit() => {
                g.push_back(Value::tuple(vec![Value::Atom(atoms::EXIT), Value::Pid(from), reason]));
            }
            Signal::Exit { reason: Value::Atom(a), .. } if a == atoms::NORMAL => return Delivery::Dropped,
            Signal::Interrupt { mode: 0, .. }
                if g.waiting.is_none() && self.chan_wait.load(Ordering::SeqCst) == 0 =>
            {
                return Delivery::Dropped;
            }
            sig => {
                g.ext().signals.push_back(sig);
                return match self.signal_waker(&mut g, active) {
                    Some(w) => Delivery::Wake(w),
                    None => Delivery::Queued,
                };
            }
        }
        g.wake_result(&self.counted, active)
    }

    /// [`Mailbox::deliver_grows`] to an actor that has extras, which may hold its limits: past
    /// `:max_mailbox` the message is dropped, and past `:max_heap` once queued the queue is;
    /// either way the actor is killed, as an overflow.
    #[inline(never)]
    fn deliver_with_extras(&self, g: &mut Inner, msg: Value, active: &AtomicUsize) -> (Delivery, bool) {
        if let Some(max) = g.ext_ref().and_then(|e| e.max_len)
            && g.messages.len() >= max
        {
            g.ext().signals.push_back(Signal::Kill(mailbox_overflow_reason()));
            g.clear_messages();
            return (Delivery::Overflow(self.signal_waker(g, active)), false);
        }
        let grows = g.push_back(msg);
        if g.past_max_heap() {
            g.ext().signals.push_back(Signal::Kill(vm_core::mem::limit_reason("max_heap")));
            g.clear_messages();
            return (Delivery::Overflow(self.signal_waker(g, active)), false);
        }
        (g.wake_result(&self.counted, active), grows)
    }

    /// Step 2 of "A quiet channel wait" for a signal just queued (with the lock held):
    /// records that signals are pending, then unparks the actor if it waits on its mailbox
    /// or quietly on a channel, counting it in, and returns the waker to wake.
    fn signal_waker(&self, g: &mut Inner, active: &AtomicUsize) -> Option<Waker> {
        self.signalled.swap(true, Ordering::SeqCst);
        if let Some(w) = g.take_waker(&self.counted, active) {
            return Some(w);
        }
        if self.chan_wait.swap(0, Ordering::SeqCst) == 0 {
            return None;
        }
        count_in(&self.counted, active);
        g.waker.clone()
    }

    /// Takes the oldest pending signal, if any (a running actor's safe-point check).
    pub fn take_signal(&self) -> Option<Signal> {
        lock(&self.inner).pop_signal(&self.signalled)
    }

    /// Returns a message taken by a select whose channel case turned out to have committed
    /// first; it goes back to the front, where it was, so no message is lost or reordered.
    pub fn put_back(&self, msg: Value) {
        let mut g = lock(&self.inner);
        g.bytes += message_size(&msg);
        g.messages.push_front(msg);
        g.forget_save();
    }

    /// The fast path of receive: takes the oldest message matching `pattern` without waiting.
    pub fn try_take(&self, pattern: Option<&Value>) -> Option<Value> {
        lock(&self.inner).take_matching(pattern)
    }

    /// [`Mailbox::try_take`] looking at no more than `*budget` messages for a pattern, one unit
    /// each; `Err` when it stopped there with more to look at (the save point keeps its place,
    /// so the next scan for the same pattern goes on from it).
    pub fn try_take_within(
        &self,
        pattern: Option<&Value>,
        budget: &mut u32,
    ) -> Result<Option<Value>, Unfinished> {
        lock(&self.inner).take_matching_within(pattern, budget)
    }

    /// A select's mailbox cases (`{:msg, pattern}`): takes the oldest message that matches any
    /// of `patterns`, with the index of the first pattern it matches, looking at no more than
    /// `*budget` messages as [`Mailbox::try_take_within`] does (with a save point of its own
    /// for the list of patterns, so a select woken once per arriving message also costs time
    /// linear in the messages).
    pub fn try_take_any_within(
        &self,
        patterns: &[Value],
        budget: &mut u32,
    ) -> Result<Option<(usize, Value)>, Unfinished> {
        let mut g = lock(&self.inner);
        if patterns.is_empty() || g.messages.is_empty() {
            return Ok(None);
        }
        g.scan(patterns, budget)
    }

    /// The fast path of a receive with no deadline: takes the oldest message matching
    /// `pattern`, or else parks the actor in the same critical section (step 1 of the protocol)
    /// if it can — its waker is known from an earlier wait and no signal is pending. The caller
    /// must then wait with [`Mailbox::poll_wait`] as usual; its first poll may return `Pending`
    /// without looking, since any delivery from now on wakes the task.
    ///
    /// The driver wakes a receive parked here by running the instruction again (see "A parked
    /// receive is re-run" above), so this is also step 4 for it: a pending signal is the wait's
    /// outcome (`Empty`: the caller waits the ordinary way and `poll_wait` takes the signal),
    /// else a matching message ends the wait.
    pub fn take_or_park(&self, pattern: Option<&Value>, active: &AtomicUsize) -> TakeOrPark {
        let mut unbounded = u32::MAX;
        match pattern {
            // A plain receive (the common case) takes the front: its own copy of the protocol's
            // steps, with the take inlined, so that nothing is scanned or budgeted.
            None => self.take_or_park_by(None, active, |g| Ok(g.take_front())),
            Some(_) => self.take_or_park_within(pattern, &mut unbounded, active),
        }
    }

    /// [`Mailbox::take_or_park`] looking at no more than `*budget` messages for a pattern, one
    /// unit each ([`Mailbox::try_take_within`]): `Unfinished` if it stopped there.
    #[inline(always)]
    pub fn take_or_park_within(
        &self,
        pattern: Option<&Value>,
        budget: &mut u32,
        active: &AtomicUsize,
    ) -> TakeOrPark {
        self.take_or_park_by(pattern, active, |g| g.take_matching_within(pattern, budget))
    }

    /// The steps of [`Mailbox::take_or_park_within`], with `take` the take of the oldest
    /// matching message (`pattern` is what the park records).
    #[inline(always)]
    fn take_or_park_by(
        &self,
        pattern: Option<&Value>,
        active: &AtomicUsize,
        take: impl FnOnce(&mut Inner) -> Result<Option<Value>, Unfinished>,
    ) -> TakeOrPark {
        let mut g = lock(&self.inner);
        let signalled = g.ext_ref().is_some_and(|e| !e.signals.is_empty());
        let resumed = g.waiting.is_some();
        if resumed && signalled {
            return TakeOrPark::Empty;
        }
        let Ok(taken) = take(&mut g) else { return TakeOrPark::Unfinished };
        if let Some(m) = taken {
            if resumed {
                g.end_wait();
                g.parked = false;
                // Whoever delivered the message counted the actor back in already; only a
                // spurious wake can find it still out, and only the actor itself counts out,
                // so a plain load decides (no read-modify-write on the hot path).
                if self.counted.load(Ordering::Relaxed) {
                    count_in(&self.counted, active);
                }
            }
            return TakeOrPark::Taken(m);
        }
        if g.waker.is_none() || signalled {
            return TakeOrPark::Empty;
        }
        let spec = WaitSpec { receive: true, pattern, indefinite: true, soft: true };
        let wait = || Wait::Receive { pattern: pattern.cloned(), timeout_ms: None };
        TakeOrPark::Parked { idle: g.park(None, &spec, wait, &self.counted, active) }
    }

    /// Step 1 of "A quiet channel wait" (module docs), without the lock: a `csend` (`shape`
    /// `Send`) or `crecv` parked on channel `id`, which counted the actor out already and holds
    /// the task's waker, records itself so that a signal wakes it. False, recording nothing, if
    /// a signal is pending (or the id does not pack): the wait's first poll must then look at
    /// the mailbox as usual ([`Mailbox::poll_wait`]); if true it need not.
    pub(crate) fn park_chan(&self, shape: vm_core::SelectShape, id: u64) -> bool {
        let Some(word) = quiet_chan(shape, id) else { return false };
        self.chan_wait.store(word, Ordering::SeqCst);
        if read_signalled(&self.signalled) {
            // A signaller may have taken the wait already and woken the task: a spurious
            // wake, which the ordinary wait's poll absorbs.
            self.chan_wait.store(0, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Step 4 of "A quiet channel wait": the wait has ended (its channel's claimer woke the
    /// actor, which was counted in by it), and nothing in the mailbox recorded it.
    pub(crate) fn end_chan(&self) {
        self.chan_wait.store(0, Ordering::Relaxed);
    }

    /// What the actor waits for (step 5 of "A quiet channel wait"), given the state `i` behind
    /// this mailbox's lock, taken by the caller ([`Mailbox::with`]).
    pub fn waiting(&self, i: &Inner) -> Option<Wait> {
        match &i.waiting {
            Some(w) => Some(w.clone()),
            None => match self.chan_wait.load(Ordering::SeqCst) {
                0 => None,
                word => Some(quiet_wait(word)),
            },
        }
    }

    /// The task's waker the mailbox keeps (see "The waker is kept" above), for a channel
    /// waiter that keeps it too (`chan::waits::try_or_park`).
    pub(crate) fn kept_waker(&self) -> Option<Waker> {
        lock(&self.inner).waker.clone()
    }

    /// Steps 1 and 4 of the protocol. `deadline_passed` says whether the wait's timer (if any)
    /// has fired. Returns `Ready(None)` when the deadline passed with nothing delivered. The
    /// boolean is true when parking made `active` zero (the VM may be idle).
    pub fn poll_wait(
        &self,
        cx: &mut Context<'_>,
        spec: &WaitSpec<'_>,
        deadline_passed: bool,
        wait: impl FnOnce() -> Wait,
        active: &AtomicUsize,
    ) -> (Poll<Option<Woken>>, bool) {
        let (pattern, receive) = (spec.pattern, spec.receive);
        let mut g = lock(&self.inner);
        let outcome = if let Some(sig) = g.pop_signal(&self.signalled) {
            Some(Some(Woken::Signal(sig)))
        } else if let Some(m) = if receive { g.take_matching(pattern) } else { None } {
            Some(Some(Woken::Message(m)))
        } else if deadline_passed {
            Some(None)
        } else {
            None
        };
        match outcome {
            Some(o) => {
                g.waiting = None;
                g.parked = false;
                count_in(&self.counted, active);
                (Poll::Ready(o), false)
            }
            None => {
                let idle = g.park(Some(cx.waker()), spec, wait, &self.counted, active);
                (Poll::Pending, idle)
            }
        }
    }

    /// Abandons a wait without an outcome (the waiting future was dropped): clears the waker and
    /// counts the actor back in if it was counted out.
    pub fn cancel_wait(&self, active: &AtomicUsize) {
        let mut g = lock(&self.inner);
        g.parked = false;
        g.waiting = None;
        self.chan_wait.store(0, Ordering::Relaxed);
        count_in(&self.counted, active);
    }

    /// Marks the mailbox closed and returns what the exit must notify: links and monitors.
    /// Queued messages are dropped here, releasing what they hold.
    pub fn close(&self) -> (Vec<Pid>, Vec<(i64, Pid)>, Option<Atom>) {
        let mut g = lock(&self.inner);
        g.closed = true;
        g.clear_messages();
        g.waker = None;
        g.parked = false;
        self.chan_wait.store(0, Ordering::Relaxed);
        self.signalled.swap(false, Ordering::SeqCst);
        match g.ext.take() {
            Some(e) => (e.links, e.monitors, e.name),
            None => (Vec::new(), Vec::new(), None),
        }
    }
}

impl Inner {
    /// Takes the oldest message matching `pattern` (the oldest message, if `None`). A scan for
    /// a pattern starts at the save point left by the last scan for the same pattern, so a
    /// selective receive woken once per arriving message costs time linear in the messages, not
    /// quadratic (see `Extras::save`).
    ///
    /// Inlined: a plain receive (no pattern) takes the front, and a receive that finds the
    /// queue empty has nothing to scan; only a scan for a pattern is a call. (Every plain
    /// receive comes here twice per message, once to take it and once to find the queue empty
    /// before parking, so the call was ~100 of a ring hop's instructions; `#[inline]` alone
    /// left it out of line.)
    #[inline(always)]
    fn take_matching(&mut self, pattern: Option<&Value>) -> Option<Value> {
        match pattern {
            None => self.take_front(),
            Some(_) if self.messages.is_empty() => None,
            Some(p) => {
                let mut unbounded = u32::MAX;
                self.scan(std::slice::from_ref(p), &mut unbounded).unwrap_or(None).map(|(_, m)| m)
            }
        }
    }

    /// The oldest message (a plain receive's take). The bookkeeping looks at the front before
    /// it is popped, so that the popped message goes out as it is: looked at after the pop, it
    /// was split into its tag and payload and copied three times on its way out (~25
    /// instructions a receive).
    #[inline(always)]
    fn take_front(&mut self) -> Option<Value> {
        let front = self.messages.front()?;
        Self::uncharge(&mut self.bytes, front);
        self.forget_save();
        self.messages.pop_front()
    }

    /// A wait has ended: clears `waiting`. A plain receive's (what a parked `recv` left) holds
    /// nothing to drop, and is told apart by two tests rather than the ten of the drop's match.
    #[inline(always)]
    fn end_wait(&mut self) {
        match self.waiting {
            // Nothing in it needs dropping: overwriting it is the whole of the clearing.
            Some(Wait::Receive { pattern: None, .. }) => self.waiting = None,
            _ => self.waiting = None,
        }
    }

    /// [`Inner::take_matching`] looking at no more than `*budget` messages for a pattern, one
    /// unit each (taking the oldest message costs nothing): `Err` if it stopped there.
    #[inline]
    fn take_matching_within(
        &mut self,
        pattern: Option<&Value>,
        budget: &mut u32,
    ) -> Result<Option<Value>, Unfinished> {
        match pattern {
            Some(p) if !self.messages.is_empty() => {
                Ok(self.scan(std::slice::from_ref(p), budget)?.map(|(_, m)| m))
            }
            _ => Ok(self.take_matching(pattern)),
        }
    }

    /// [`Inner::take_matching_within`] with patterns and a queue that is not empty: the oldest
    /// message matching any of `patterns`, with the index of the first one it matches. A scan
    /// that stops at its budget leaves the save point where it stopped, so that the next one
    /// for the same patterns goes on from there.
    #[inline(never)]
    fn scan(&mut self, patterns: &[Value], budget: &mut u32) -> Result<Option<(usize, Value)>, Unfinished> {
        let saved = self.ext_ref().and_then(|e| e.save.as_ref());
        let n = self.messages.len();
        let start = saved.filter(|(sp, _)| sp.as_slice() == patterns).map_or(0, |(_, k)| *k).min(n);
        let end = start.saturating_add(*budget as usize).min(n);
        let mut case = 0;
        let found = self.messages.range(start..end).position(|m| match first_match(patterns, m) {
            Some(c) => {
                case = c;
                true
            }
            None => false,
        });
        match found {
            Some(i) => {
                // The messages up to the match were looked at.
                *budget -= (i + 1) as u32;
                self.forget_save();
                let m = self.messages.remove(start + i);
                Ok(self.took(m).map(|m| (case, m)))
            }
            None => {
                *budget -= (end - start) as u32;
                if end > 0 {
                    self.ext().save = Some((patterns.iter().cloned().collect(), end));
                }
                if end < n { Err(Unfinished) } else { Ok(None) }
            }
        }
    }

    /// Drops the save point: messages before it moved.
    #[inline]
    fn forget_save(&mut self) {
        if let Some(e) = self.ext.as_mut() {
            e.save = None;
        }
    }
}

/// The index of the first of `patterns` that `m` matches (one pattern, `recvp`'s, without a
/// loop).
#[inline(always)]
fn first_match(patterns: &[Value], m: &Value) -> Option<usize> {
    match patterns {
        [p] => vm_core::value::matches(p, m).then_some(0),
        _ => patterns.iter().position(|p| vm_core::value::matches(p, m)),
    }
}

/// A selective receive's scan spent its budget with more messages to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unfinished;

/// What a snapshot holds of a mailbox: everything but the waker and the wait in progress.
#[derive(Clone, Debug, Default)]
pub(crate) struct Image {
    pub(crate) messages: Vec<Value>,
    pub(crate) signals: Vec<Signal>,
    pub(crate) links: Vec<Pid>,
    pub(crate) monitors: Vec<(i64, Pid)>,
    pub(crate) monitoring: Vec<(i64, Pid)>,
    pub(crate) name: Option<Atom>,
    pub(crate) trap_exit: bool,
    pub(crate) max_len: Option<usize>,
    pub(crate) max_heap: Option<u64>,
}

/// Snapshots (see `snapshot` and `pause`): reading and refilling a mailbox, and waking its
/// actor's task without deciding anything for it.
impl Mailbox {
    /// A copy of the mailbox's contents (values are shared, so this copies references).
    pub(crate) fn image(&self) -> Image {
        let g = lock(&self.inner);
        let ext = g.ext_ref();
        Image {
            messages: g.messages.iter().cloned().collect(),
            signals: ext
                .map(|e| e.signals.iter().filter(|s| !matches!(s, Signal::Pause)).cloned().collect())
                .unwrap_or_default(),
            links: ext.map(|e| e.links.clone()).unwrap_or_default(),
            monitors: ext.map(|e| e.monitors.clone()).unwrap_or_default(),
            monitoring: ext.map(|e| e.monitoring.clone()).unwrap_or_default(),
            name: ext.and_then(|e| e.name),
            trap_exit: ext.is_some_and(|e| e.trap_exit),
            max_len: ext.and_then(|e| e.max_len),
            max_heap: ext.and_then(|e| e.max_heap),
        }
    }

    /// A mailbox holding a restored image (for an actor that has not started yet).
    pub(crate) fn from_image(img: Image) -> Mailbox {
        let mb = Mailbox::with_limit(img.max_len);
        {
            let mut g = lock(&mb.inner);
            g.bytes = img.messages.iter().map(message_size).sum();
            g.messages = img.messages.into();
            let rare = !img.signals.is_empty()
                || !img.links.is_empty()
                || !img.monitors.is_empty()
                || !img.monitoring.is_empty()
                || img.name.is_some()
                || img.trap_exit;
            if rare {
                mb.signalled.store(!img.signals.is_empty(), Ordering::SeqCst);
                let e = g.ext();
                e.signals = img.signals.into();
                e.links = img.links;
                e.monitors = img.monitors;
                e.monitoring = img.monitoring;
                e.name = img.name;
                e.trap_exit = img.trap_exit;
            }
            if img.max_heap.is_some() {
                g.ext().max_heap = img.max_heap;
            }
        }
        mb
    }

    /// Keeps the actor task's waker from its start, so that even its first plain receive can
    /// park in the fast path ([`Mailbox::take_or_park`]) and leave its state where a snapshot
    /// reads it (see `pause`).
    pub(crate) fn keep_waker(&self, w: &Waker) {
        let mut g = lock(&self.inner);
        if !g.waker.as_ref().is_some_and(|old| old.will_wake(w)) {
            g.waker = Some(w.clone());
        }
    }

    /// Wakes the actor's task if it has ever waited, deciding nothing: its wait, polled, finds
    /// what it found before (step 1 of `pause`).
    pub(crate) fn wake_task(&self) {
        let w = lock(&self.inner).waker.clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

#[cfg(all(test, not(vm_loom)))]
mod tests;

#[cfg(all(test, vm_loom))]
mod loom_tests;
