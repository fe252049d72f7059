//! How the driver waits for a native call that could not complete inside the step: awaiting
//! an I/O operation the host began (the actor soft-blocked), or running a native on tokio's
//! blocking pool (the actor real-blocked); and how a native's result or panic becomes the
//! blocked instruction's outcome.

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
        if let (Poll::Ready(Some(Woken::Signal(sig))), _) =
            this.cell.mailbox.poll_wait(cx, &spec, false, describe, &this.vm.shared.active)
        {
            this.cell.mailbox.cancel_wait(&this.vm.shared.active);
            this.done = true;
            return Poll::Ready(Err(sig));
        }
        match this.fut.as_mut().poll(cx) {
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
            match cell.mailbox.poll_wait(cx, &spec, false, describe, &vm.shared.active).0 {
                Poll::Ready(Some(Woken::Signal(sig))) => Poll::Ready(Err(sig)),
                _ => Poll::Pending,
            }
        })
        .await;
        match next {
            Ok(Ok(result)) => break Ok(result),
            Ok(Err(join)) => {
                break Err(join.try_into_panic().map_or_else(|e| e.to_string(), natives::panic_text));
            }
            Err(sig) => match on_signal(sig, Doing::RealBlocked) {
                OnSignal::End(reason) => return Err(reason),
                OnSignal::Raise(exc) => interrupt = Some(exc),
                OnSignal::Ignore => {}
            },
        }
    };
    cell.mailbox.cancel_wait(&vm.shared.active);
    Ok((outcome, interrupt))
}
