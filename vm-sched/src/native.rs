//! How the driver waits for a native call that could not complete inside the step: awaiting
//! an I/O operation the host began (the actor soft-blocked), running a native on tokio's
//! blocking pool (the actor real-blocked), or queueing it to an affine executor's thread
//! (soft-blocked while queued, real-blocked once it runs; see `affine`); and how a native's
//! result or panic becomes the blocked instruction's outcome.

use crate::affine::Call;
use crate::cell::ActorCell;
use crate::exit::{Doing, ExitReason, OnSignal, on_signal};
use crate::mailbox::{Signal, Wait, WaitSpec, Woken};
use crate::vm::Vm;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use vm_core::{Exception, Resume, Value};
use vm_io::natives;

pub(crate) type NativeOutcome = Result<Result<Value, Exception>, String>;

/// Waits for an async native's future while the actor is soft-blocked: a signal that arrives
/// first drops the future (cancelling the operation; the natives lose no input when dropped)
/// and is returned. The actor stays counted as active: I/O can always still complete, so a
/// server waiting in accept is never mistaken for a deadlock.
pub(crate) struct IoWait<'a> {
    pub(crate) vm: &'a Vm,
    pub(crate) cell: &'a ActorCell,
    pub(crate) fut: natives::IoFuture,
    pub(crate) name: &'static str,
    /// Set once the wait has ended (and unparked the mailbox).
    pub(crate) done: bool,
}

impl Future for IoWait<'_> {
    type Output = Result<Result<Value, Exception>, Signal>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: true };
        let name = this.name;
        let describe = || Wait::Io(name);
        // A snapshot's pause never cancels an operation in flight (a write may have half
        // happened): the pause signal is passed by, and `pause::Pausable` around this wait
        // publishes the actor instead.
        while let (Poll::Ready(Some(Woken::Signal(sig))), _) =
            this.cell.mailbox.poll_wait(cx, &spec, false, describe, &this.vm.shared.active)
        {
            if sig == Signal::Pause {
                continue;
            }
            this.cell.mailbox.cancel_wait(&this.vm.shared.active);
            this.done = true;
            return Poll::Ready(Err(sig));
        }
        // A panic in the native's future is the caller's `:panic`, as on every other path.
        match natives::guarded_poll(|| this.fut.as_mut().poll(cx)) {
            Poll::Ready(r) => {
                this.cell.mailbox.cancel_wait(&this.vm.shared.active);
                this.done = true;
                Poll::Ready(Ok(r))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for IoWait<'_> {
    fn drop(&mut self) {
        // Abandoned mid-wait (the runtime shutting down): leave the mailbox unparked.
        if !self.done {
            self.cell.mailbox.cancel_wait(&self.vm.shared.active);
        }
    }
}

pub(crate) fn native_result(r: NativeOutcome) -> Resume {
    match r {
        Ok(Ok(v)) => Resume::Value(v),
        Ok(Err(e)) => Resume::Raise(e),
        Err(panic) => Resume::Raise(natives::panicked(&panic)),
    }
}

/// Waits for a blocking native call while watching the control port. A kill, an exit signal or
/// a mode-2 interrupt ends the actor at once, abandoning the call (its thread finishes on its own
/// and the result is dropped); a mode-1 interrupt is kept and raised when the call returns; mode 0
/// never arrives, because a real-blocked actor is not soft-blocked.
pub(crate) async fn real_block(
    vm: &Vm,
    cell: &ActorCell,
    mut job: tokio::task::JoinHandle<Result<Value, Exception>>,
) -> Result<(NativeOutcome, Option<Exception>), ExitReason> {
    let mut interrupt = None;
    let outcome = loop {
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut job).poll(cx) {
                return Poll::Ready(Ok(r));
            }
            let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: false };
            let describe = || Wait::Other("native call");
            loop {
                match cell.mailbox.poll_wait(cx, &spec, false, describe, &vm.shared.active).0 {
                    // Not stopped by a snapshot's pause (see `IoWait`).
                    Poll::Ready(Some(Woken::Signal(Signal::Pause))) => continue,
                    Poll::Ready(Some(Woken::Signal(sig))) => return Poll::Ready(Err(sig)),
                    _ => return Poll::Pending,
                }
            }
        })
        .await;
        match next {
            Ok(Ok(result)) => break Ok(result),
            Ok(Err(join)) => {
                break Err(join.try_into_panic().map_or_else(|e| e.to_string(), natives::panic_text));
            }
            Err(sig) => match on_signal(sig, Doing::RealBlocked, None) {
                OnSignal::End(reason) => return Err(reason),
                OnSignal::Raise(exc) => interrupt = Some(exc),
                OnSignal::Ignore => {}
            },
        }
    };
    cell.mailbox.cancel_wait(&vm.shared.active);
    Ok((outcome, interrupt))
}

/// Waits for an affine call (see `affine`'s steps): soft-blocked while it is queued, so the
/// actor's mailbox records the wait and a mode-0 interrupt is delivered; a signal that arrives
/// then cancels the call if it is still queued (it never runs) and acts as on a soft-blocked
/// actor, or, if the executor claimed the call first, as on a real-blocked one: a mode-0
/// interrupt is dropped, a mode-1 interrupt kept and raised when the call returns, and an end
/// abandons the call (its result is dropped). The actor stays counted active, as for I/O: the
/// executor will answer.
pub(crate) async fn affine_wait(
    vm: &Vm,
    cell: &ActorCell,
    call: std::sync::Arc<Call>,
    mut reply: tokio::sync::oneshot::Receiver<Result<Value, Exception>>,
) -> Result<Resume, ExitReason> {
    struct Unpark<'a>(&'a Vm, &'a ActorCell, &'a Call);
    impl Drop for Unpark<'_> {
        fn drop(&mut self) {
            // However the wait ends (or is abandoned with the runtime): a queued call will not
            // be wanted, and the mailbox is no longer parked.
            self.2.cancel();
            self.1.mailbox.cancel_wait(&self.0.shared.active);
        }
    }
    let _unpark = Unpark(vm, cell, &call);
    let mut interrupt = None;
    loop {
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut reply).poll(cx) {
                return Poll::Ready(Ok(r));
            }
            let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: true };
            let describe = || Wait::Affine(call.clone());
            match cell.mailbox.poll_wait(cx, &spec, false, describe, &vm.shared.active).0 {
                Poll::Ready(Some(Woken::Signal(sig))) => Poll::Ready(Err(sig)),
                _ => Poll::Pending,
            }
        })
        .await;
        match next {
            Ok(Ok(result)) => {
                return Ok(match interrupt {
                    Some(exc) => Resume::Raise(exc),
                    None => native_result(Ok(result)),
                });
            }
            // The job was dropped unrun: its executor stopped.
            Ok(Err(_)) => {
                let exc =
                    Exception::new(vm_core::Atom::new("closed"), format!("{call}: the executor has stopped"));
                return Ok(Resume::Raise(interrupt.unwrap_or(exc)));
            }
            // A snapshot's pause neither cancels a queued call nor stops a running one: the
            // wait is left alone (`pause::Pausable` around it publishes the actor).
            Err(Signal::Pause) => {}
            Err(sig) => {
                let doing = if call.cancel() { Doing::SoftBlocked } else { Doing::RealBlocked };
                match on_signal(sig, doing, None) {
                    OnSignal::End(reason) => return Err(reason),
                    OnSignal::Raise(exc) if doing == Doing::SoftBlocked => return Ok(Resume::Raise(exc)),
                    OnSignal::Raise(exc) => interrupt = Some(exc),
                    OnSignal::Ignore => {}
                }
            }
        }
    }
}
