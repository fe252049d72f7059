//! Channel operations as an actor performs them: the non-blocking attempt (`try_now`), the
//! `csend`/`crecv` that parks inside the step (`try_or_park`, held as `Held::Chan` until the
//! driver awaits it as a `ChanWait`), and the blocking select (`start_select` and the
//! `SelectWait` future the driver awaits), which waits on channel cases, mailbox cases, socket
//! cases, a deadline and the control port at once.
//!
//! The channel core (`chan`) knows nothing of actors; this module maps a program's select cases
//! to it, counts the actor out of `active` while it waits (see `mailbox`), and describes each
//! wait in the mailbox's `waiting` ([`Wait::Chan`]: the channels, and whether the wait is
//! *orphanable*), which is all that orphan detection (`orphans`) needs from a waiting actor:
//! parking walks nothing.

use crate::chan::{self, Channel};
use crate::container;
use crate::mailbox::{self, ChanIds, Signal, Wait, WaitSpec, Woken, describe_shape};
use crate::sync::CountedFlag;
use crate::vm::{ActorCell, Vm};
use smallvec::SmallVec;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use vm_core::step::OneCase;
use vm_core::{Atom, ChanArg, ChanTried, Exception, Fired, Handle, Pid, SelectCase, SelectShape, Value};
use vm_io::natives;

/// A non-blocking attempt at a select's cases (the interpreter's first try): the fired case, or
/// `None` when none is ready now.
pub(crate) fn try_now(vm: &Vm, cell: &ActorCell, cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
    let mut unbounded = u32::MAX;
    // With no bound on the scan, it always finishes.
    try_now_within(vm, cell, cases, &mut unbounded).unwrap_or(Ok(None))
}

/// [`try_now`] whose mailbox cases look at no more than `*budget` queued messages, one unit
/// each (`vm_core::Host::chan_try_within`): `None`, with nothing committed, if the scan
/// stopped there with more to look at (the save point keeps its place).
pub(crate) fn try_now_within(
    vm: &Vm,
    cell: &ActorCell,
    cases: &[SelectCase],
    budget: &mut u32,
) -> Option<Result<Option<Fired>, Exception>> {
    let active = &vm.shared.active;
    // A plain send or receive: the channel's own single-case fast path, with no allocation.
    match cases {
        [SelectCase::Send(h, v)] => return Some(try_one(vm, "select", h, Some(v))),
        [SelectCase::Recv(h)] => return Some(try_one(vm, "select", h, None)),
        _ => {}
    }
    let split = loop {
        let split = match split_cases(cases, vm, cell.pid) {
            Ok(split) => split,
            Err(e) => return Some(Err(e)),
        };
        match chan::try_select(&split.chans, active) {
            // A channel crossed since its case was checked: check the cases again.
            Some(chan::Fired::Unchecked { .. }) => continue,
            Some(f) => return Some(Ok(Some(split.fired(f)))),
            None => break split,
        }
    };
    match split.take_message_within(cell, budget) {
        Ok(Some(m)) => return Some(Ok(Some(m))),
        Ok(None) => {}
        Err(mailbox::Unfinished) => return None,
    }
    // Sockets ready now; the no-op waker only asks, the blocking select registers for real.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Some(match split.ready_io(&mut cx) {
        Some((i, accept, obj)) => fire_io(vm, cell.pid, i, accept, &obj).map(Some),
        None => Ok(None),
    })
}

/// A non-blocking send of `send` (or receive, if `None`) on one channel: `csend`, `crecv`,
/// `ctrysend` and `ctryrecv` try this first, with the handle and value borrowed. `op` names
/// the instruction in a boundary refusal (`container`, rule 4).
pub(crate) fn try_one(
    vm: &Vm,
    op: &str,
    h: &Handle,
    send: Option<&Value>,
) -> Result<Option<Fired>, Exception> {
    let active = &vm.shared.active;
    let chan = channel_ref(h)?;
    Ok(match send {
        Some(v) => {
            let mut checked = container::check_chan_send(op, h, v)?;
            loop {
                match chan.try_send_checked(v.clone(), checked, active) {
                    Ok(()) => break Some(Fired::Sent(0)),
                    Err(chan::TrySendError::Closed(_)) => break Some(Fired::SendClosed(0)),
                    Err(chan::TrySendError::Full(_)) => break None,
                    Err(chan::TrySendError::Unchecked(_)) => checked = recheck(op, h, v)?,
                }
            }
        }
        None => match chan.try_recv(active) {
            chan::TryRecv::Value(v) => Some(Fired::Received(0, v)),
            chan::TryRecv::Closed => Some(Fired::Closed(0)),
            chan::TryRecv::Empty => None,
        },
    })
}

/// `csend`'s and `crecv`'s try ([`vm_core::Host::chan_try_or_park`]): completes now, or parks
/// the actor on the channel in the same lock and leaves the wait in `held` for the driver
/// (`Begun::Chan`). Parking this way counts the actor out under the channel lock, with the
/// actor's one reused waiter, which holds the task's waker (the mailbox's kept one), then
/// records the wait in the mailbox without its lock (`mailbox`'s "A quiet channel wait"), so
/// the wait's first poll has nothing left to do: no case list, no second lock of the channel
/// and no look at the mailbox (unless a signal was pending).
///
/// **A parked `csend`/`crecv` is re-run**, as a parked receive is (see `actor`): a quiet wait
/// (one that found no signal pending) is not awaited as a future; once woken, the driver steps
/// the actor again and the instruction comes back here with its wait still in `held`:
/// 1. If a counterpart committed, its outcome is the instruction's result: the wait is over
///    (the claimer popped its only entry and counted the actor in), the mailbox's record of it
///    is cleared with a store, and the waiter stays in `held` (`ChanHeld`) for the next park
///    ([`chan::Channel::complete_or_park_counted`] reuses it when its strong count proves nothing
///    else holds it).
/// 2. Otherwise a signal woke the actor (messages do not wake a channel wait), or a pause
///    did: the wait is cancelled (protocol step 6: a case that committed meanwhile is the
///    result, as in 1) and the instruction tries again from the start. A pending signal then
///    makes the new park not quiet, so the driver awaits it as a [`ChanWait`], whose first poll
///    takes the signal as any wait does.
#[inline(always)]
pub(crate) fn try_or_park(
    vm: &Vm,
    cell: &Arc<ActorCell>,
    h: &Handle,
    arg: ChanArg<'_>,
    held: &mut Held,
) -> ChanTried {
    let active = &vm.shared.active;
    let (send, mut into) = match arg {
        ChanArg::Send(v) => (Some(v), None),
        ChanArg::Recv(dst) => (None, Some(dst)),
    };
    let c = match held {
        Held::Chan(c) => {
            if let Some(on) = &c.on {
                // Step 1, in place: the hot path of a woken `csend`/`crecv`.
                if let Some(f) = c.wait.as_mut().and_then(chan::OneWait::take_fired) {
                    // The claimer counted the actor in; a quiet wait left nothing in the
                    // mailbox's lock to clear (its "A quiet channel wait", step 4).
                    if on.quiet {
                        cell.mailbox.end_chan();
                    } else {
                        cell.mailbox.cancel_wait(active);
                    }
                    // The handle stays, for the next park on the same channel.
                    c.last = c.on.take().map(|on| on.handle);
                    return done(into, f);
                }
                if let Some(f) = cancel_parked(vm, cell, c) {
                    return done(into, f);
                }
            }
            c
        }
        other => ChanHeld::start(other),
    };
    let chan = match channel_ref(h) {
        Ok(c) => c,
        Err(e) => return ChanTried::Raise(Box::new(e)),
    };
    // The boundary check (`container`, rule 4) comes after the re-run, which may find the
    // value already sent; a send that runs again after its wait was cancelled is checked afresh.
    let mut checked = match send.map(|v| container::check_chan_send("csend", h, v)) {
        None => true,
        Some(Ok(c)) => c,
        Some(Err(e)) => return ChanTried::Raise(Box::new(e)),
    };
    // A new waiter (the actor's first wait, or one whose last was cancelled) gets the task's
    // waker, which the mailbox keeps; a reused one has it already.
    let had_spare = c.wait.is_some();
    let kept = if had_spare { None } else { cell.mailbox.kept_waker() };
    let counted = || -> Arc<dyn CountedFlag> { cell.clone() };
    let idle = loop {
        let got = chan.complete_or_park_counted(
            send,
            into.as_deref_mut(),
            checked,
            &mut c.wait,
            kept.as_ref(),
            counted,
            active,
        );
        match got {
            Ok(chan::Fired::Unchecked { .. }) => {
                match recheck("csend", h, send.expect("only a send is unchecked")) {
                    Ok(ok) => checked = ok,
                    Err(e) => return ChanTried::Raise(Box::new(e)),
                }
            }
            // Stored already; what the register held is dropped here, after the unlock.
            Ok(chan::Fired::Received { .. }) if into.is_some() => return ChanTried::Stored,
            Ok(f) => return done(into, f),
            Err((w, idle)) => {
                c.wait = Some(w);
                break idle;
            }
        }
    };
    if idle {
        vm.shared.idle.notify_one();
    }
    let shape = if send.is_some() { SelectShape::Send } else { SelectShape::Recv };
    // Quiet (awaited as a bare wake) only if the waiter holds the task's waker and the
    // mailbox saw no signal pending (its "A quiet channel wait", step 1).
    let has_waker = kept.is_some() || had_spare;
    let quiet = has_waker && cell.mailbox.park_chan(shape, h.id());
    // Only its channel can end this wait: orphan detection looks at it.
    vm.shared.orphans.arm();
    // The handle of the last wait's channel, if it is this one (each side of a ping-pong or
    // a pool parks on the same channel every time): no reference count to raise, nor to drop
    // at the re-run.
    let handle = match c.last.take() {
        Some(last) if last.is(h) => last,
        _ => h.clone(),
    };
    c.on = Some(ParkedOn { handle, send: send.is_some(), quiet });
    ChanTried::Parked
}

/// The instruction's result for a `csend` or a `crecv` (`into`: its register) whose case
/// fired: as `vm_core::step::one_case(send, one_fired(f))`, mapped in one step on the hot path
/// (`one_outcome_agrees_with_one_case` checks that they agree), with a received value stored
/// in the register.
#[inline]
pub(super) fn done(into: Option<&mut Value>, f: chan::Fired) -> ChanTried {
    let send = into.is_none();
    ChanTried::Done(match f {
        chan::Fired::SendClosed { .. } => OneCase::SendClosed,
        _ if send => OneCase::Value(Value::Nil),
        chan::Fired::Received { value, .. } => {
            if let Some(dst) = into {
                *dst = value;
            }
            return ChanTried::Stored;
        }
        chan::Fired::RecvClosed { .. } | chan::Fired::Sent { .. } => OneCase::Closed,
        chan::Fired::Unchecked { .. } => unreachable!("an unchecked send is tried again, never a result"),
    })
}

/// A send the channel's lock sent back ([`chan::Fired::Unchecked`]: the channel crossed to
/// another container since the send was checked): checked now as on a shared channel, after
/// which it counts as checked (`container`, rule 4.5).
fn recheck(op: &str, h: &Handle, v: &Value) -> Result<bool, Exception> {
    container::check_shared_chan_send(op, h, v).map(|()| true)
}

/// Step 2 of the re-run of a `csend`/`crecv` whose wait in `c` found no outcome (see
/// [`try_or_park`]): cancels the wait, leaving `c` with neither wait nor waiter; `Some` if a
/// case committed meanwhile, which is then the result. Out of line: signals and pauses only.
#[cold]
#[inline(never)]
fn cancel_parked(vm: &Vm, cell: &ActorCell, c: &mut ChanHeld) -> Option<chan::Fired> {
    let active = &vm.shared.active;
    let (Some(wait), Some(on)) = (c.wait.take(), c.on.take()) else { return None };
    let chan = channel_ref(&on.handle).expect("a channel handle");
    let fired = wait.cancel(chan, Some(active)).err();
    // Ended either way; parking again records the wait afresh.
    cell.mailbox.cancel_wait(active);
    fired
}

/// A wait the host began inside the step and holds until the driver takes it, right after
/// the step (`Effect::Begun`), or the actor's channel waiter between waits. One field for
/// all, as an actor has at most one wait: every actor's task holds it.
pub(crate) enum Held {
    Nothing,
    /// An I/O operation `native` began ([`vm_core::NativeCall::Begun`]), or a send held for a
    /// node far behind (`cluster`'s rule 3). Dropping it abandons the operation, losing no
    /// input, and the instruction may simply run again (the rule in `vm_core::step`'s docs).
    Io(natives::IoFuture),
    /// The actor's `csend`/`crecv` side: its waiter, and the wait it is parked in, if any.
    Chan(ChanHeld),
}

/// The actor's `csend`/`crecv` side ([`try_or_park`]), kept in place from wait to wait so
/// that neither a park nor a re-run moves it.
pub(crate) struct ChanHeld {
    /// The actor's one waiter, reused from wait to wait
    /// ([`chan::Channel::complete_or_park_counted`]); `None` before the first park and after
    /// a cancel (its waiter is then dropped).
    wait: Option<chan::OneWait>,
    /// Set while the waiter is parked on a channel. Such a wait must be cancelled, not
    /// dropped (a case may have committed): [`Held::take_chan_wait`] makes the wait that
    /// does so.
    on: Option<ParkedOn>,
    /// The handle of the channel the last wait that ended parked on, kept (while `on` is
    /// `None`) so that the next park on that channel need not clone it again. It keeps that
    /// channel alive until the actor parks on another or ends, which only delays freeing it:
    /// orphan detection traces registers and mailboxes, not this, and channels have no drop
    /// hooks.
    last: Option<Handle>,
}

/// A `csend` (`send`) or `crecv` parked on the channel of `handle`; `quiet`: nothing was
/// pending when it parked.
struct ParkedOn {
    handle: Handle,
    send: bool,
    quiet: bool,
}

impl ChanHeld {
    /// Makes `held` (nothing, or an I/O operation the driver has taken by now) the actor's
    /// channel side, with no waiter yet.
    #[cold]
    #[inline(never)]
    fn start(held: &mut Held) -> &mut ChanHeld {
        debug_assert!(!matches!(held, Held::Io(_)), "nothing is in flight at a `csend`/`crecv`");
        *held = Held::Chan(ChanHeld { wait: None, on: None, last: None });
        match held {
            Held::Chan(c) => c,
            _ => unreachable!("just stored"),
        }
    }
}

impl Held {
    /// Takes the held I/O operation, if that is what is held.
    pub(crate) fn take_io(&mut self) -> Option<natives::IoFuture> {
        match std::mem::replace(self, Held::Nothing) {
            Held::Io(f) => Some(f),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Whether a `csend`/`crecv` parked quietly is held: the driver then waits for its wake
    /// and runs the instruction again ([`try_or_park`]) instead of awaiting a [`ChanWait`].
    pub(crate) fn is_quiet_chan(&self) -> bool {
        matches!(self, Held::Chan(ChanHeld { on: Some(ParkedOn { quiet: true, .. }), .. }))
    }

    /// Ends a held channel wait at once (a woken actor about to publish its state for a
    /// snapshot, `pause` step 3): cancels it and returns the instruction's shape and the case
    /// that committed first, if one did, which the caller must apply as the instruction's
    /// result.
    pub(crate) fn settle_chan(&mut self, vm: &Vm, cell: &Arc<ActorCell>) -> Option<(SelectShape, Fired)> {
        let mut w = self.take_chan_wait(vm, cell)?;
        let committed = w.cancel();
        cell.mailbox.cancel_wait(&vm.shared.active);
        committed.map(|f| (w.shape, f))
    }

    /// Takes the held channel wait, if a `csend`/`crecv` is parked, as the driver awaits it.
    /// Its waiter goes with it (the next park makes a new one).
    pub(crate) fn take_chan_wait<'a>(
        &mut self,
        vm: &'a Vm,
        cell: &'a Arc<ActorCell>,
    ) -> Option<ChanWait<'a>> {
        let Held::Chan(c) = self else { return None };
        let on = c.on.take()?;
        let wait = c.wait.take();
        debug_assert!(wait.is_some(), "a parked `csend`/`crecv` has its waiter");
        let shape = if on.send { SelectShape::Send } else { SelectShape::Recv };
        Some(ChanWait {
            vm,
            cell,
            handle: on.handle,
            value: None,
            checked: true,
            parked: wait,
            shape,
            quiet: on.quiet,
        })
    }
}

/// A new channel of capacity `cap` (0: rendezvous), as a program sees it.
pub(crate) fn new_channel(vm: &Vm, cap: usize) -> Value {
    let id = vm.next_chan_id();
    let chan: Arc<Channel> = Channel::new(id, cap);
    Value::Chan(Handle::with_payload(id, chan))
}

/// Closes a channel; closing it twice raises `:closed`.
pub(crate) fn close(vm: &Vm, h: &Handle) -> Result<(), Exception> {
    channel_ref(h)?
        .close(&vm.shared.active)
        .map_err(|_| Exception::new(Atom::new("closed"), format!("#chan<{}> is already closed", h.id())))
}

/// The channel behind a `Value::Chan` handle.
pub(crate) fn channel_of(h: &Handle) -> Result<Arc<Channel>, Exception> {
    h.payload().and_then(|p| p.clone().downcast::<Channel>().ok()).ok_or_else(|| not_a_channel(h))
}

fn not_a_channel(h: &Handle) -> Exception {
    Exception::badarg(format!("#chan<{}> is not a live channel of this VM", h.id()))
}

/// Prepares a blocking select: splits its cases and returns the wait (the lean one for one
/// channel case with no deadline). A plain function, so that none of this setup's locals take
/// room in every actor's task.
pub(crate) fn start_select<'a>(
    vm: &'a Vm,
    cell: &'a Arc<ActorCell>,
    shape: SelectShape,
    mut cases: Vec<SelectCase>,
    timeout_ms: Option<u64>,
) -> Result<Waiting<'a>, Exception> {
    // A blocking `csend`/`crecv` (or a one-case select) with no deadline: the lean wait.
    if timeout_ms.is_none()
        && let [SelectCase::Send(h, _) | SelectCase::Recv(h)] = &cases[..]
    {
        channel_ref(h)?;
        let (handle, value) = match cases.pop() {
            Some(SelectCase::Send(h, v)) => (h, Some(v)),
            Some(SelectCase::Recv(h)) => (h, None),
            _ => unreachable!("matched a channel case above"),
        };
        drop(cases);
        let op = if shape == SelectShape::Select { "select" } else { "csend" };
        let checked = match &value {
            Some(v) => container::check_chan_send(op, &handle, v)?,
            None => true,
        };
        return Ok(Waiting::One(ChanWait {
            vm,
            cell,
            handle,
            value,
            checked,
            parked: None,
            shape,
            quiet: false,
        }));
    }
    let split = split_cases(&cases, vm, cell.pid)?;
    let chans = channel_ids(&cases);
    drop(cases);
    Ok(Waiting::Many(Box::pin(SelectWait::new(vm, cell, split, shape, timeout_ms, chans))))
}

/// The distinct channel ids of a select's cases, in case order (none: `None`).
fn channel_ids(cases: &[SelectCase]) -> Option<ChanIds> {
    let mut out = Vec::new();
    for c in cases {
        if let SelectCase::Send(h, _) | SelectCase::Recv(h) = c
            && !out.contains(&h.id())
        {
            out.push(h.id());
        }
    }
    match out[..] {
        [] => None,
        [id] => Some(ChanIds::One(id)),
        _ => Some(ChanIds::Many(Arc::new(out))),
    }
}

/// A blocking select's wait: the lean one-channel wait, or the general one (boxed, so that its
/// size does not enlarge every actor's task).
pub(crate) enum Waiting<'a> {
    One(ChanWait<'a>),
    Many(Pin<Box<SelectWait<'a>>>),
}

impl Future for Waiting<'_> {
    type Output = SelectEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SelectEnd> {
        match self.get_mut() {
            Waiting::One(w) => Pin::new(w).poll(cx),
            Waiting::Many(w) => w.as_mut().poll(cx),
        }
    }
}

/// A blocking send or receive on one channel with no deadline (`csend`, `crecv`): the
/// [`SelectWait`] of a single channel case, without splitting a case list or boxing, and
/// parked with the channel core's one-case wait ([`chan::OneWait`]).
pub(crate) struct ChanWait<'a> {
    vm: &'a Vm,
    cell: &'a Arc<ActorCell>,
    /// The channel's handle.
    handle: Handle,
    /// The value to send; `None` for a receive.
    value: Option<Value>,
    /// Whether `value` counts as checked (`container`, rule 4.5).
    checked: bool,
    parked: Option<chan::OneWait>,
    /// Which instruction waits (for introspection; a byte where the description would take 16).
    shape: SelectShape,
    /// Parked inside the step with nothing pending (`try_or_park`): every wake source (the
    /// channel's claimer, the mailbox) already holds the task's waker, so the first poll, which
    /// follows the step at once, only returns `Pending`.
    quiet: bool,
}

impl ChanWait<'_> {
    /// Which instruction waits.
    pub(crate) fn shape(&self) -> SelectShape {
        self.shape
    }

    fn channel(&self) -> &Channel {
        // Checked when the wait was made, and a handle's payload never changes.
        channel_ref(&self.handle).expect("a channel handle")
    }

    /// Cancels the parked wait; `Some` if the case had committed first.
    fn cancel(&mut self) -> Option<Fired> {
        let w = self.parked.take()?;
        w.cancel(self.channel(), Some(&self.vm.shared.active)).err().map(one_fired)
    }
}

/// The program's view of a one-case outcome (case 0).
pub(super) fn one_fired(f: chan::Fired) -> Fired {
    match f {
        chan::Fired::Sent { .. } => Fired::Sent(0),
        chan::Fired::Received { value, .. } => Fired::Received(0, value),
        chan::Fired::RecvClosed { .. } => Fired::Closed(0),
        chan::Fired::SendClosed { .. } => Fired::SendClosed(0),
        chan::Fired::Unchecked { .. } => unreachable!("an unchecked send is tried again, never a result"),
    }
}

impl Future for ChanWait<'_> {
    type Output = SelectEnd;

    /// `SelectWait::poll` for one channel case: take a committed case, or else count out, in
    /// one step under the channel's lock (see below); then publish the waker to the control
    /// port, which a signal may have ended the wait through.
    ///
    /// The deadlock detector relies on `active` (see `Vm::stuck`): a woken actor must not stay
    /// counted out. Messages wake this wait too (the mailbox is parked with the task's waker)
    /// and count the actor in, so each poll counts it out again; done apart from the look for
    /// a claim (look, then count out), a claim coming between would leave the actor counted
    /// out though woken until its next poll, and with the claimer parking next, `active` would
    /// read zero over that time. So the look and the count-out are one step under the channel's
    /// lock, which every claimer holds until it has counted the actor in
    /// ([`chan::OneWait::poll`]; the first poll parks with [`chan::Channel::complete_or_park_counted`],
    /// which counts out under the same lock). Only a signal found afterwards, in the mailbox,
    /// meets an actor counted out, in the middle of this poll, which counts it in again at once
    /// (the instant the detector's grace covers, as for `SelectWait`).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SelectEnd> {
        let this = self.get_mut();
        if std::mem::take(&mut this.quiet) {
            return Poll::Pending;
        }
        let active = &this.vm.shared.active;
        let chan = channel_ref(&this.handle).expect("a channel handle");
        let idle = match &mut this.parked {
            Some(w) => match w.poll(chan, cx, active) {
                Ok(f) => {
                    this.parked = None;
                    this.cell.mailbox.cancel_wait(active);
                    return Poll::Ready(SelectEnd::Fired(one_fired(f)));
                }
                Err(idle) => idle,
            },
            None => {
                let cell = this.cell;
                let counted = || -> Arc<dyn CountedFlag> { cell.clone() };
                match chan.complete_or_park_counted(
                    this.value.as_ref(),
                    None,
                    this.checked,
                    &mut None,
                    Some(cx.waker()),
                    counted,
                    active,
                ) {
                    Ok(chan::Fired::Unchecked { .. }) => {
                        // The channel crossed since the value was checked: the instruction runs
                        // again and checks it.
                        this.cell.mailbox.cancel_wait(active);
                        return Poll::Ready(SelectEnd::Retry);
                    }
                    Ok(f) => {
                        this.cell.mailbox.cancel_wait(active);
                        return Poll::Ready(SelectEnd::Fired(one_fired(f)));
                    }
                    Err((w, idle)) => {
                        this.parked = Some(w);
                        // Only its channel can end this wait: orphan detection looks at it.
                        this.vm.shared.orphans.arm();
                        idle
                    }
                }
            }
        };
        let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: true };
        let (shape, id) = (this.shape, this.handle.id());
        let describe = || Wait::Chan { shape, chans: ChanIds::One(id), orphanable: true };
        if let (Poll::Ready(Some(Woken::Signal(sig))), _) =
            this.cell.mailbox.poll_wait(cx, &spec, false, describe, active)
        {
            let committed = this.cancel();
            this.cell.mailbox.cancel_wait(active);
            return Poll::Ready(SelectEnd::Signal(sig, committed));
        }
        if idle {
            this.vm.shared.idle.notify_one();
        }
        Poll::Pending
    }
}

/// As for `SelectWait`: a wait abandoned before it ended is cancelled.
impl Drop for ChanWait<'_> {
    fn drop(&mut self) {
        if self.parked.is_some() {
            self.cancel();
            self.cell.mailbox.cancel_wait(&self.vm.shared.active);
        }
    }
}

/// The channel behind a handle, borrowed (no reference-count traffic on the fast path).
fn channel_ref(h: &Handle) -> Result<&Channel, Exception> {
    h.payload().and_then(|p| p.downcast_ref::<Channel>()).ok_or_else(|| not_a_channel(h))
}

/// A select's cases split into channel cases (for the channel core) and mailbox cases, with the
/// program's case index of each.
struct SplitCases {
    chans: chan::Cases,
    chan_index: SmallVec<[usize; 2]>,
    /// The patterns of the mailbox cases, in case order, and each one's case index.
    patterns: SmallVec<[Value; 1]>,
    pattern_index: SmallVec<[usize; 1]>,
    /// Socket cases: index, whether it accepts (else waits for input), the socket.
    io: Vec<(usize, bool, Arc<vm_io::resource::Obj>)>,
}

/// Splits a select's cases; socket cases are checked for ownership here, as `native` would.
fn split_cases(cases: &[SelectCase], vm: &Vm, pid: Pid) -> Result<SplitCases, Exception> {
    let mut out = SplitCases {
        chans: SmallVec::new(),
        chan_index: SmallVec::new(),
        patterns: SmallVec::new(),
        pattern_index: SmallVec::new(),
        io: Vec::new(),
    };
    for (i, c) in cases.iter().enumerate() {
        match c {
            SelectCase::Send(h, v) => {
                let checked = container::check_chan_send("select", h, v)?;
                out.chans.push(chan::Case::send_checked(&channel_of(h)?, v.clone(), checked));
                out.chan_index.push(i);
            }
            SelectCase::Recv(h) => {
                out.chans.push(chan::Case::recv(&channel_of(h)?));
                out.chan_index.push(i);
            }
            SelectCase::Message(p) => {
                out.patterns.push(p.clone());
                out.pattern_index.push(i);
            }
            SelectCase::Readable(r) | SelectCase::Accept(r) => {
                let ctx = natives::Ctx::new(&vm.shared.io, pid.0);
                let accept = matches!(c, SelectCase::Accept(_));
                let obj = ctx.obj(if accept { "select accept" } else { "select readable" }, r)?;
                if accept && !matches!(*obj, vm_io::resource::Obj::Listener(_)) {
                    return Err(Exception::type_error("select: {:accept, l} needs a tcp listener"));
                }
                out.io.push((i, accept, obj));
            }
        }
    }
    Ok(out)
}

impl SplitCases {
    /// Translates the channel core's outcome to the program's case numbering.
    fn fired(&self, f: chan::Fired) -> Fired {
        match f {
            chan::Fired::Sent { case } => Fired::Sent(self.chan_index[case]),
            chan::Fired::Received { case, value } => Fired::Received(self.chan_index[case], value),
            chan::Fired::RecvClosed { case } => Fired::Closed(self.chan_index[case]),
            chan::Fired::SendClosed { case } => Fired::SendClosed(self.chan_index[case]),
            chan::Fired::Unchecked { .. } => unreachable!("an unchecked send is tried again, never a result"),
        }
    }

    /// The oldest message that a mailbox case matches, taken, as that case's outcome (the first
    /// case it matches). Woken once per arriving message, a parked select looks only at the
    /// new ones (the mailbox's save point).
    fn take_message(&self, cell: &ActorCell) -> Option<Fired> {
        let mut unbounded = u32::MAX;
        self.take_message_within(cell, &mut unbounded).unwrap_or(None)
    }

    /// [`SplitCases::take_message`] looking at no more than `*budget` queued messages.
    fn take_message_within(
        &self,
        cell: &ActorCell,
        budget: &mut u32,
    ) -> Result<Option<Fired>, mailbox::Unfinished> {
        let taken = cell.mailbox.try_take_any_within(&self.patterns, budget)?;
        Ok(taken.map(|(k, m)| Fired::Received(self.pattern_index[k], m)))
    }

    /// The first ready socket case (registering `cx` with the others): its index, whether it
    /// accepts, and the socket.
    fn ready_io(&self, cx: &mut Context<'_>) -> Option<(usize, bool, Arc<vm_io::resource::Obj>)> {
        self.io.iter().find_map(|(i, accept, obj)| {
            vm_io::net::poll_readable(obj, cx).is_ready().then(|| (*i, *accept, obj.clone()))
        })
    }
}

/// What a ready socket case gives the program: `{i, :readable}`, or the accepted connection
/// (owned by the caller).
fn fire_io(
    vm: &Vm,
    pid: Pid,
    i: usize,
    accept: bool,
    obj: &vm_io::resource::Obj,
) -> Result<Fired, Exception> {
    if accept {
        let ctx = natives::Ctx::new(&vm.shared.io, pid.0);
        vm_io::net::take_accepted(&ctx, obj).map(|conn| Fired::Received(i, conn))
    } else {
        Ok(Fired::Readable(i))
    }
}

/// What a parked select ended with.
pub(crate) enum SelectEnd {
    Fired(Fired),
    /// A send case's channel crossed to another container since the value was checked
    /// (`container`, rule 4.5): nothing happened, and the instruction runs again.
    Retry,
    /// A socket case failed (an accept error).
    Failed(Exception),
    TimedOut,
    Signal(Signal, Option<Fired>),
}

/// Waits on a select's channel cases, its mailbox cases, its deadline and the control port at
/// once. Whatever ends the wait other than a channel case cancels the channel select, and if a
/// channel case had committed in the meantime that case wins (a message taken for a mailbox case
/// is put back), so a value is never lost or duplicated. A hand-written future, awaited boxed, so
/// that its size does not enlarge every actor's task.
pub(crate) struct SelectWait<'a> {
    vm: &'a Vm,
    cell: &'a ActorCell,
    split: SplitCases,
    sel: Option<chan::Select>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    shape: SelectShape,
    /// The channels of its cases (for `waiting`), if it has channel cases.
    chans: Option<ChanIds>,
    /// No deadline: the actor counts out of `active` while parked.
    indefinite: bool,
    /// Only its channel cases can end it (no deadline, no mailbox or socket case): orphan
    /// detection looks at it.
    orphanable: bool,
}

impl<'a> SelectWait<'a> {
    fn new(
        vm: &'a Vm,
        cell: &'a Arc<ActorCell>,
        mut split: SplitCases,
        shape: SelectShape,
        timeout_ms: Option<u64>,
        chans: Option<ChanIds>,
    ) -> Self {
        // The channel core owns the cases from here; `split` keeps only the index mapping.
        // The select shares the actor's "counted out" flag with the mailbox, and this wait (not
        // the channel core) counts the actor out: first, before any waker is published.
        let sel = Some(chan::Select::with_flag(std::mem::take(&mut split.chans), false, cell.clone()));
        let timer = timeout_ms.map(|ms| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
        // Waiting on a socket is waiting on the outside world: the actor stays counted in, so
        // such a select is never taken for a deadlock.
        let indefinite = timeout_ms.is_none() && split.io.is_empty();
        let orphanable = indefinite && split.patterns.is_empty() && chans.is_some();
        SelectWait { vm, cell, split, sel, timer, shape, chans, indefinite, orphanable }
    }

    /// Cancels the channel select; `Some` if a channel case had committed first.
    fn cancel(&mut self) -> Option<Fired> {
        let active = &self.vm.shared.active;
        self.sel.take().and_then(|s| s.cancel(active).err()).map(|f| self.split.fired(f))
    }
}

impl Future for SelectWait<'_> {
    type Output = SelectEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SelectEnd> {
        let this = self.get_mut();
        let active = &this.vm.shared.active;
        let Some(sel) = this.sel.as_mut() else { return Poll::Ready(SelectEnd::TimedOut) };
        // Woken again after parking: a case that committed (or a message for a mailbox case)
        // is taken before anything else. Whoever made it ready counted this actor back in, and
        // counting out again first would drop it to zero for a moment while it is runnable; if
        // its thread is descheduled in that moment, the deadlock detector sees a VM with nothing
        // active and no slice starting, and reports a deadlock in a healthy program.
        if sel.is_parked() {
            if let (Poll::Ready(f), _) = sel.poll(cx, active) {
                this.sel = None;
                this.cell.mailbox.cancel_wait(active);
                return Poll::Ready(SelectEnd::Fired(this.split.fired(f)));
            }
            if let Some(m) = this.split.take_message(this.cell) {
                let end = match this.cancel() {
                    Some(f) => {
                        if let Fired::Received(_, msg) = m {
                            this.cell.mailbox.put_back(msg);
                        }
                        SelectEnd::Fired(f)
                    }
                    None => SelectEnd::Fired(m),
                };
                this.cell.mailbox.cancel_wait(active);
                return Poll::Ready(end);
            }
        }
        let Some(sel) = this.sel.as_mut() else { return Poll::Ready(SelectEnd::TimedOut) };
        // Count out first, then publish wakers (channel and mailbox), then re-check: a wake on
        // either path after this point counts the actor back in (`count_in` on the shared flag),
        // and anything that arrived before it is found by the re-check below.
        let idle = this.indefinite && this.cell.mailbox.count_out(active);
        let (p, _) = sel.poll(cx, active);
        if let Poll::Ready(f) = p {
            this.sel = None;
            this.cell.mailbox.cancel_wait(active);
            if let chan::Fired::Unchecked { .. } = f {
                // Pass 1 met a channel that crossed since its case was checked: nothing was
                // parked or sent, and the instruction runs again.
                return Poll::Ready(SelectEnd::Retry);
            }
            return Poll::Ready(SelectEnd::Fired(this.split.fired(f)));
        }
        // The control port, and the waker registration that mailbox cases rely on.
        let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: true };
        let (shape, orphanable) = (this.shape, this.orphanable);
        let describe = || match &this.chans {
            None => Wait::Other(describe_shape(shape)),
            Some(chans) => Wait::Chan { shape, chans: chans.clone(), orphanable },
        };
        let end = if let (Poll::Ready(Some(Woken::Signal(sig))), _) =
            this.cell.mailbox.poll_wait(cx, &spec, false, describe, active)
        {
            // Cut short by a snapshot: the select runs again afterwards, until the same deadline.
            if let (Signal::Pause, Some(t)) = (&sig, &this.timer) {
                crate::pause::cut_short(this.vm, this.cell.pid, t.deadline().into_std());
            }
            Some(SelectEnd::Signal(sig, this.cancel()))
        } else if let Some(m) = this.split.take_message(this.cell) {
            Some(match this.cancel() {
                Some(f) => {
                    if let Fired::Received(_, msg) = m {
                        this.cell.mailbox.put_back(msg);
                    }
                    SelectEnd::Fired(f)
                }
                None => SelectEnd::Fired(m),
            })
        } else if let Some((i, accept, obj)) = this.split.ready_io(cx) {
            // A channel case that committed meanwhile wins; an accepted connection then stays
            // in the listener's backlog for the next accept.
            Some(match this.cancel() {
                Some(f) => SelectEnd::Fired(f),
                None => match fire_io(this.vm, this.cell.pid, i, accept, &obj) {
                    Ok(f) => SelectEnd::Fired(f),
                    Err(e) => SelectEnd::Failed(e),
                },
            })
        } else if this.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
            Some(this.cancel().map_or(SelectEnd::TimedOut, SelectEnd::Fired))
        } else {
            None
        };
        match end {
            Some(e) => {
                this.cell.mailbox.cancel_wait(active);
                Poll::Ready(e)
            }
            None => {
                if this.orphanable {
                    this.vm.shared.orphans.arm();
                }
                if idle {
                    this.vm.shared.idle.notify_one();
                }
                Poll::Pending
            }
        }
    }
}

/// A select abandoned before it ended (runtime shutdown) is cancelled, so channels do not keep
/// entries for an actor that is gone.
impl Drop for SelectWait<'_> {
    fn drop(&mut self) {
        if self.sel.is_some() {
            self.cancel();
            self.cell.mailbox.cancel_wait(&self.vm.shared.active);
        }
    }
}
