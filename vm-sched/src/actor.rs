//! The per-actor driver loop and the [`Host`] the interpreter sees.
//!
//! One tokio task per actor runs [`drive`]:
//! 1. At a safe point (before each slice), if the control port has signals, handle them: a kill,
//!    an exit signal or a mode-2 interrupt ends the actor; a mode-1 interrupt is raised at the
//!    current instruction; a stale mode-0 interrupt is dropped (it only applies to a waiting
//!    actor, and this one is running).
//! 2. Step the interpreter for one slice of fuel.
//! 3. `Yielded` → yield to tokio so other actors run (preemption); `Blocked(effect)` → await the
//!    effect, raced against the control port, and resume the actor with the result, an exception
//!    or a timeout; `Exited`/`Failed` → end.
//!
//! Every wait goes through the mailbox's wake protocol (see `mailbox`), so a waiting actor is one
//! parked task with a stored waker: no polling, no CPU.

use crate::chan::{self, Channel};
use crate::mailbox::{Signal, TakeOrPark, Wait, WaitSpec, Woken};
use crate::sync::Ordering;
use crate::vm::{ActorCell, Outcome, RunState, Vm};
use smallvec::SmallVec;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use vm_core::interp;
use vm_core::{
    ActorOp, ActorState, Atom, Closure, Effect, Exception, Fault, Fired, Handle, Host, Module, Pid, Resume,
    SelectCase, SelectShape, SpawnOpts, Step, Value, atoms, select_resume,
};
use vm_io::natives;

/// Why an actor ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ExitReason {
    /// Its first function returned this value (reason `:normal`).
    Returned(Value),
    /// It raised an exception nobody caught (reason `{:exception, kind, msg}`).
    Failed(Fault),
    /// `stop`, an exit signal, or a mode-2 interrupt ended it with this reason.
    Stopped(Value),
    /// It was killed (untrappable) with this reason.
    Killed(Value),
}

impl ExitReason {
    /// The reason value links and monitors see.
    pub fn value(&self) -> Value {
        match self {
            ExitReason::Returned(_) => Value::Atom(atoms::NORMAL),
            ExitReason::Failed(f) => exception_reason(&f.exception),
            ExitReason::Stopped(v) | ExitReason::Killed(v) => v.clone(),
        }
    }
}

fn exception_reason(e: &Exception) -> Value {
    Value::tuple(vec![Value::Atom(atoms::EXCEPTION), Value::Atom(e.kind), e.msg.clone()])
}

/// Runs one actor to completion; see the module docs.
///
/// A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// moves each argument into a body local and keeps both copies in the task (152 bytes here, the
/// interpreter state among them), which made every actor's task a 128-byte allocation step
/// larger. (Hence clippy's `manual_async_fn` is allowed here.)
#[allow(clippy::manual_async_fn)]
pub(crate) fn drive(
    vm: Vm,
    cell: Arc<ActorCell>,
    mut st: ActorState,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let reason = {
            let mut host = ActorHost { vm: &vm, cell: &cell, last_target: None, pending_io: None };
            run(&mut host, &cell.module, &mut st).await
        };
        let report = vm.take_reporter(cell.pid);
        // The main actor's failure is reported by `vm run` itself; others are logged here.
        if let (ExitReason::Failed(f), None) = (&reason, &report) {
            let loc = cell.module.location(f.func, f.pc);
            tracing::error!(pid = %cell.pid, name = %crate::session::NameOf(&cell), exception = %f.exception, location = %loc, "actor crashed");
        }
        // Main's outcome goes out before the exit bookkeeping: once main has ended, `vm run` is done,
        // and reporting first keeps the deadlock detector from mistaking that moment for a deadlock.
        if let Some(tx) = report {
            let outcome = match reason.clone() {
                ExitReason::Returned(v) => Outcome::Exited(v),
                ExitReason::Failed(fault) => {
                    let location = cell.module.location(fault.func, fault.pc);
                    Outcome::Failed { fault, location }
                }
                ExitReason::Stopped(Value::Atom(a)) if a == atoms::NORMAL => Outcome::Exited(Value::Nil),
                ExitReason::Stopped(v) | ExitReason::Killed(v) => Outcome::Stopped(v),
            };
            let _ = tx.send(outcome);
        }
        vm.finish(&cell, &reason);
    }
}

async fn run(host: &mut ActorHost<'_>, module: &Module, st: &mut ActorState) -> ExitReason {
    let mut deferrals = 0u32;
    let mut slices = 0u32;
    loop {
        // Taken from `host` afresh in each round, and not used after the round's await: locals
        // that live across an await are stored in every actor's task.
        let vm = host.vm;
        let cell = host.cell;
        let fuel = vm.shared.config.fuel;
        // A plain load first: the read-modify-write is only paid when a signal is there.
        if cell.has_signals.load(Ordering::Relaxed) && cell.has_signals.swap(false, Ordering::SeqCst) {
            while let Some(sig) = cell.mailbox.take_signal() {
                match sig {
                    Signal::Kill(reason) => return ExitReason::Killed(reason),
                    Signal::Exit { reason, .. } => return ExitReason::Stopped(reason),
                    Signal::Interrupt { exc, mode: 2 } => return ExitReason::Stopped(exception_reason(&exc)),
                    Signal::Interrupt { exc, mode: 1 } => st.pending = Some(Box::new(exc)),
                    Signal::Interrupt { .. } | Signal::Orphaned(_) => {}
                }
            }
        }
        // `yieldto`: step aside (a bounded number of times) while another actor asked to run next.
        let boost = vm.shared.boost.load(Ordering::Relaxed);
        if boost != 0 {
            if boost == cell.pid.0 + 1 {
                vm.shared.boost.store(0, Ordering::Relaxed);
            } else if deferrals < 8
                && vm.lookup(Pid(boost - 1)).is_some_and(|c| c.state() == RunState::Runnable)
            {
                deferrals += 1;
                tokio::task::yield_now().await;
                continue;
            } else {
                vm.shared.boost.store(0, Ordering::Relaxed);
            }
        }
        deferrals = 0;

        cell.set_state(RunState::Running);
        vm.shared.heartbeat.begin(cell.pid.0);
        crate::session::trace_raise(cell.pid, st.pending.as_deref());
        let caught_before = st.caught.as_ref().map_or(0, |c| c.count);
        let step = interp::step(st, module, host, fuel);
        crate::session::trace_caught(cell, st.caught.as_deref(), caught_before);
        vm.shared.heartbeat.end();
        crate::session::trace_step(cell.pid, &step);
        cell.record(st.position(), st.reductions);
        match step {
            Step::Yielded => {
                // Yielding costs a trip through tokio's queues (and wakes an idle worker that
                // then steals the actor). With no other live actor there is nobody to yield to,
                // so only every 16th slice yields, which keeps tokio's own tasks (timers, the
                // output flusher) served.
                slices = slices.wrapping_add(1);
                if vm.live() > 1 || slices.is_multiple_of(16) {
                    cell.set_state(RunState::Runnable);
                    tokio::task::yield_now().await;
                }
            }
            Step::Exited(v) => return ExitReason::Returned(v),
            Step::Failed(f) => return ExitReason::Failed(f),
            Step::Blocked(effect) => match effect {
                Effect::Print(text) => {
                    vm.shared.output.line(&text);
                    st.resume(module, Resume::Value(Value::Nil));
                }
                Effect::Stop(reason) => return ExitReason::Stopped(reason),
                Effect::Select { shape, cases, timeout_ms } => {
                    cell.set_state(RunState::Waiting);
                    let wait = match start_select(vm, cell, st, shape, cases, timeout_ms) {
                        Ok(w) => w,
                        Err(e) => {
                            st.resume(module, Resume::Raise(e));
                            continue;
                        }
                    };
                    match wait.await {
                        SelectEnd::Fired(f) => st.resume(module, select_resume(shape, f)),
                        SelectEnd::TimedOut => st.resume(module, Resume::Timeout),
                        SelectEnd::Failed(e) => st.resume(module, Resume::Raise(e)),
                        SelectEnd::Signal(sig, committed) => {
                            if let Some(f) = committed {
                                // The select completed first; the signal then meets a running
                                // actor: mode 0 no longer applies, mode 1 is raised next.
                                st.resume(module, select_resume(shape, f));
                                match sig {
                                    Signal::Interrupt { mode: 0, .. } | Signal::Orphaned(_) => {}
                                    Signal::Interrupt { exc, mode: 1 } => st.pending = Some(Box::new(exc)),
                                    other => {
                                        if let Some(end) = blocked_signal(module, st, other) {
                                            return end;
                                        }
                                    }
                                }
                            } else if let Some(end) = blocked_signal(module, st, sig) {
                                return end;
                            }
                        }
                    }
                }
                Effect::Native { name, args } => {
                    let Some(native) = natives::lookup(name) else {
                        let e = Exception::badarg(format!(
                            "no native function named {}",
                            Value::Atom(name).repr()
                        ));
                        st.resume(module, Resume::Raise(e));
                        continue;
                    };
                    let pid = cell.pid.0;
                    match native.kind() {
                        natives::Kind::Inline => {
                            let ctx = natives::Ctx { io: &vm.shared.io, pid };
                            st.resume(module, native_result(Ok(call_inline(native, &ctx, &args))));
                        }
                        natives::Kind::Async => {
                            let ctx = natives::Ctx { io: &vm.shared.io, pid };
                            // Started by `Host::native` inside the step, or (after a restore, or
                            // under another host) started now.
                            let fut = match host.pending_io.take() {
                                Some(f) => f,
                                None => match native.start(&ctx, &args) {
                                    natives::Started::Done(r) => {
                                        st.resume(module, native_result(Ok(r)));
                                        continue;
                                    }
                                    natives::Started::Pending(f) => f,
                                },
                            };
                            cell.set_state(RunState::Waiting);
                            // Boxed, as `real_block` is, to keep every actor's task small.
                            match Box::pin(IoWait { vm, cell, fut, name: native.name, done: false }).await {
                                Ok(result) => st.resume(module, native_result(Ok(result))),
                                Err(sig) => {
                                    if let Some(end) = blocked_signal(module, st, sig) {
                                        return end;
                                    }
                                }
                            }
                        }
                        natives::Kind::Blocking => {
                            cell.set_state(RunState::RealBlocked);
                            let io = vm.shared.io.clone();
                            let job = tokio::task::spawn_blocking(move || {
                                native.call(&natives::Ctx { io: &io, pid }, &args)
                            });
                            // Boxed: native calls are rare, and this keeps every task small.
                            match Box::pin(real_block(vm, cell, job)).await {
                                Ok((_, Some(interrupt))) => st.resume(module, Resume::Raise(interrupt)),
                                Ok((result, None)) => st.resume(module, native_result(result)),
                                Err(end) => return end,
                            }
                        }
                    }
                }
                Effect::Yield(target) => {
                    if let Some(t) = target {
                        vm.shared.boost.store(t.0 + 1, Ordering::Relaxed);
                    }
                    cell.set_state(RunState::Runnable);
                    tokio::task::yield_now().await;
                    st.resume(module, Resume::Value(Value::Nil));
                }
                Effect::Sleep { ms } => {
                    cell.set_state(RunState::Waiting);
                    match WaitFor::new(vm, cell, None, false, Some(ms)).await {
                        None | Some(Woken::Message(_)) => st.resume(module, Resume::Value(Value::Nil)),
                        Some(Woken::Signal(sig)) => {
                            if let Some(end) = blocked_signal(module, st, sig) {
                                return end;
                            }
                        }
                    }
                }
                Effect::Receive { pattern, timeout_ms } => {
                    cell.set_state(RunState::Waiting);
                    let mut wait = WaitFor::new(vm, cell, pattern, true, timeout_ms);
                    // Parked already by `try_receive_or_park`, in this step.
                    // (Only this actor touches the flag: a plain load and store, no RMW.)
                    if cell.parked_in_step.load(Ordering::Relaxed) {
                        cell.parked_in_step.store(false, Ordering::Relaxed);
                        wait.parked = true;
                    }
                    match wait.await {
                        Some(Woken::Message(m)) => st.resume(module, Resume::Value(m)),
                        None => st.resume(module, Resume::Timeout),
                        Some(Woken::Signal(sig)) => {
                            if let Some(end) = blocked_signal(module, st, sig) {
                                return end;
                            }
                        }
                    }
                }
            },
        }
    }
}

type NativeOutcome = Result<Result<Value, Exception>, String>;

/// Calls an inline native on this thread; a panic in it becomes a `:panic` exception.
fn call_inline(native: &natives::Native, ctx: &natives::Ctx<'_>, args: &[Value]) -> Result<Value, Exception> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| native.call(ctx, args))) {
        Ok(r) => r,
        Err(p) => Err(Exception::new(atoms::PANIC, format!("native call panicked: {}", panic_text(p)))),
    }
}

/// Waits for an async native's future while the actor is soft-blocked: a signal that arrives
/// first drops the future (cancelling the operation; the natives lose no input when dropped)
/// and is returned. The actor stays counted as active: I/O can always still complete, so a
/// server waiting in accept is never mistaken for a deadlock.
struct IoWait<'a> {
    vm: &'a Vm,
    cell: &'a ActorCell,
    fut: natives::IoFuture,
    name: &'static str,
    /// Set once the wait has ended (and unparked the mailbox).
    done: bool,
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

fn native_result(r: NativeOutcome) -> Resume {
    match r {
        Ok(Ok(v)) => Resume::Value(v),
        Ok(Err(e)) => Resume::Raise(e),
        Err(panic) => Resume::Raise(Exception::new(atoms::PANIC, format!("native call panicked: {panic}"))),
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast_ref::<&str>().map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
    }
}

/// Waits for a blocking native call while watching the control port. A kill, an exit signal or
/// a mode-2 interrupt ends the actor at once, abandoning the call (its thread finishes on its own
/// and the result is dropped); a mode-1 interrupt is kept and raised when the call returns; mode 0
/// never arrives, because a real-blocked actor is not soft-blocked.
async fn real_block(
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
            Ok(Err(join)) => break Err(join.try_into_panic().map_or_else(|e| e.to_string(), panic_text)),
            Err(Signal::Interrupt { exc, mode: 1 }) => interrupt = Some(exc),
            Err(Signal::Interrupt { mode: 0, .. }) | Err(Signal::Orphaned(_)) => {}
            Err(Signal::Kill(reason)) => return Err(ExitReason::Killed(reason)),
            Err(Signal::Exit { reason, .. }) => return Err(ExitReason::Stopped(reason)),
            Err(Signal::Interrupt { exc, .. }) => return Err(ExitReason::Stopped(exception_reason(&exc))),
        }
    };
    cell.mailbox.cancel_wait(&vm.shared.active);
    Ok((outcome, interrupt))
}

/// A signal that arrived while the actor was waiting: interrupts of mode 0 and 1 are raised at
/// the blocked instruction (catchable); anything else ends the actor.
fn blocked_signal(module: &Module, st: &mut ActorState, sig: Signal) -> Option<ExitReason> {
    match sig {
        Signal::Kill(reason) => Some(ExitReason::Killed(reason)),
        Signal::Exit { reason, .. } => Some(ExitReason::Stopped(reason)),
        Signal::Interrupt { exc, mode: 2 } => Some(ExitReason::Stopped(exception_reason(&exc))),
        Signal::Interrupt { exc, .. } | Signal::Orphaned(exc) => {
            st.resume(module, Resume::Raise(exc));
            None
        }
    }
}

/// Waits for a signal, a matching message (when `receive`), or the timeout; `None` means the
/// timeout passed with nothing delivered. A hand-written future rather than an `async fn`, to keep
/// every actor's task small (an idle actor is mostly this and its interpreter state).
struct WaitFor<'a> {
    vm: &'a Vm,
    cell: &'a ActorCell,
    pattern: Option<Value>,
    receive: bool,
    timeout_ms: Option<u64>,
    /// Boxed so the future stays small when there is no deadline.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
    /// The actor parked before this future existed (an indefinite receive whose fast path
    /// parked, see `Mailbox::take_or_park`): the first poll need not look, since a delivery
    /// wakes the task.
    parked: bool,
}

impl<'a> WaitFor<'a> {
    fn new(
        vm: &'a Vm,
        cell: &'a ActorCell,
        pattern: Option<Value>,
        receive: bool,
        timeout_ms: Option<u64>,
    ) -> Self {
        let timer = timeout_ms.map(|ms| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
        WaitFor { vm, cell, pattern, receive, timeout_ms, timer, done: false, parked: false }
    }
}

impl Future for WaitFor<'_> {
    type Output = Option<Woken>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Woken>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.parked) {
            return Poll::Pending;
        }
        let passed = this.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
        let spec = WaitSpec {
            receive: this.receive,
            pattern: this.pattern.as_ref(),
            indefinite: this.timeout_ms.is_none(),
            soft: true,
        };
        let describe = || match (this.receive, this.timeout_ms) {
            (true, t) => Wait::Receive { pattern: this.pattern.clone(), timeout_ms: t },
            (false, t) => Wait::Sleep(t.unwrap_or(0)),
        };
        let (p, idle) = this.cell.mailbox.poll_wait(cx, &spec, passed, describe, &this.vm.shared.active);
        if idle {
            this.vm.shared.idle.notify_one();
        }
        if p.is_ready() {
            this.done = true;
        }
        p
    }
}

/// Undoes a wait's bookkeeping if the future is dropped before it completes (runtime shutdown),
/// so the accounting stays balanced.
impl Drop for WaitFor<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.cell.mailbox.cancel_wait(&self.vm.shared.active);
        }
    }
}

/// The interpreter's view of the runtime, for one actor.
pub(crate) struct ActorHost<'a> {
    vm: &'a Vm,
    cell: &'a Arc<ActorCell>,
    /// The actor this one sent to last. Actors mostly talk to the same peer, and this saves the
    /// registry lookup; a cached actor that has exited just drops the message, as the registry
    /// would.
    last_target: Option<Arc<ActorCell>>,
    /// An I/O operation `native` started but could not finish at once: the driver awaits it
    /// when the instruction blocks, right after (see `Host::native`).
    pending_io: Option<natives::IoFuture>,
}

/// The channel behind a `Value::Chan` handle.
fn channel_of(h: &Handle) -> Result<Arc<Channel>, Exception> {
    h.payload().and_then(|p| p.clone().downcast::<Channel>().ok()).ok_or_else(|| not_a_channel(h))
}

fn not_a_channel(h: &Handle) -> Exception {
    Exception::badarg(format!("#chan<{}> is not a live channel of this VM", h.id()))
}

/// Prepares a blocking select: splits its cases, sets up orphan detection (an indefinite wait
/// on channels only — a mailbox case could still complete it — watches each channel for the
/// moment no one but this actor holds it) and returns the boxed wait. A plain function, so that
/// none of this setup's locals take room in every actor's task.
fn start_select<'a>(
    vm: &'a Vm,
    cell: &'a Arc<ActorCell>,
    st: &ActorState,
    shape: SelectShape,
    cases: Vec<SelectCase>,
    timeout_ms: Option<u64>,
) -> Result<Pin<Box<SelectWait<'a>>>, Exception> {
    let split = split_cases(&cases, vm, cell.pid)?;
    let watched = if timeout_ms.is_none() && split.messages.is_empty() && split.io.is_empty() {
        channel_handles(&cases)
    } else {
        Watched::new()
    };
    drop(cases);
    if let Some(e) = watch_orphans(vm, cell, st, &watched) {
        unwatch(cell, &watched);
        return Err(e);
    }
    let what = match shape {
        SelectShape::Send => "channel send",
        SelectShape::Recv => "channel receive",
        SelectShape::Select => "select",
    };
    Ok(Box::pin(SelectWait::new(vm, cell, split, what, timeout_ms, watched)))
}

/// The channels a wait watches for being orphaned (usually one).
type Watched = SmallVec<[Handle; 2]>;

/// The distinct channel handles of a select's cases.
fn channel_handles(cases: &[SelectCase]) -> Watched {
    let mut out = Watched::new();
    for c in cases {
        if let SelectCase::Send(h, _) | SelectCase::Recv(h) = c
            && !out.iter().any(|o| o.id() == h.id())
        {
            out.push(h.clone());
        }
    }
    out
}

pub(crate) fn orphaned(id: u64) -> Exception {
    Exception::new(Atom::new("orphaned"), format!("orphaned channel: no other live actor holds #chan<{id}>"))
}

/// Watches each channel for the moment only this actor's own references remain (its registers,
/// its mailbox, and the clone in `watched`); returns the exception at once if that is already
/// so. See `Handle::watch`.
fn watch_orphans(vm: &Vm, cell: &ActorCell, st: &ActorState, watched: &[Handle]) -> Option<Exception> {
    let mut now = None;
    for h in watched {
        let id = h.id();
        let in_regs: usize = st.regs.iter().map(|v| vm_core::value::count_handle_refs(v, id)).sum();
        let in_mail: usize =
            cell.mailbox.with(|i| i.messages.iter().map(|v| vm_core::value::count_handle_refs(v, id)).sum());
        let own = in_regs + in_mail + 1;
        let count = h.watch(cell.pid.0, own, vm.shared.orphan_hook.clone());
        if count == own && now.is_none() {
            now = Some(orphaned(id));
        }
    }
    now
}

fn unwatch(cell: &ActorCell, watched: &[Handle]) {
    for h in watched {
        h.unwatch(cell.pid.0);
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
    messages: Vec<(usize, Value)>,
    /// Socket cases: index, whether it accepts (else waits for input), the socket.
    io: Vec<(usize, bool, Arc<vm_io::resource::Obj>)>,
}

/// Splits a select's cases; socket cases are checked for ownership here, as `native` would.
fn split_cases(cases: &[SelectCase], vm: &Vm, pid: Pid) -> Result<SplitCases, Exception> {
    let mut out = SplitCases {
        chans: SmallVec::new(),
        chan_index: SmallVec::new(),
        messages: Vec::new(),
        io: Vec::new(),
    };
    for (i, c) in cases.iter().enumerate() {
        match c {
            SelectCase::Send(h, v) => {
                out.chans.push(chan::Case::send(&channel_of(h)?, v.clone()));
                out.chan_index.push(i);
            }
            SelectCase::Recv(h) => {
                out.chans.push(chan::Case::recv(&channel_of(h)?));
                out.chan_index.push(i);
            }
            SelectCase::Message(p) => out.messages.push((i, p.clone())),
            SelectCase::Readable(r) | SelectCase::Accept(r) => {
                let ctx = natives::Ctx { io: &vm.shared.io, pid: pid.0 };
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
        }
    }

    /// The first mailbox case with a matching message, taking the message.
    fn take_message(&self, cell: &ActorCell) -> Option<Fired> {
        self.messages.iter().find_map(|(i, p)| cell.mailbox.try_take(Some(p)).map(|m| Fired::Received(*i, m)))
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
        let ctx = natives::Ctx { io: &vm.shared.io, pid: pid.0 };
        vm_io::net::take_accepted(&ctx, obj).map(|conn| Fired::Received(i, conn))
    } else {
        Ok(Fired::Readable(i))
    }
}

/// What a parked select ended with.
enum SelectEnd {
    Fired(Fired),
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
struct SelectWait<'a> {
    vm: &'a Vm,
    cell: &'a ActorCell,
    split: SplitCases,
    sel: Option<chan::Select>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    what: &'static str,
    /// Channels watched for being orphaned; unwatched when the wait ends.
    watched: Watched,
    /// No deadline: the actor counts out of `active` while parked.
    indefinite: bool,
}

impl<'a> SelectWait<'a> {
    fn new(
        vm: &'a Vm,
        cell: &'a Arc<ActorCell>,
        mut split: SplitCases,
        what: &'static str,
        timeout_ms: Option<u64>,
        watched: Watched,
    ) -> Self {
        // The channel core owns the cases from here; `split` keeps only the index mapping.
        // The select shares the actor's "counted out" flag with the mailbox, and this wait (not
        // the channel core) counts the actor out: first, before any waker is published.
        let sel = Some(chan::Select::with_flag(std::mem::take(&mut split.chans), false, cell.clone()));
        let timer = timeout_ms.map(|ms| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
        // Waiting on a socket is waiting on the outside world: the actor stays counted in, so
        // such a select is never taken for a deadlock.
        let indefinite = timeout_ms.is_none() && split.io.is_empty();
        SelectWait { vm, cell, split, sel, timer, what, watched, indefinite }
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
            return Poll::Ready(SelectEnd::Fired(this.split.fired(f)));
        }
        // The control port, and the waker registration that mailbox cases rely on.
        let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: true };
        let what = this.what;
        let describe = || Wait::Other(what);
        let end = if let (Poll::Ready(Some(Woken::Signal(sig))), _) =
            this.cell.mailbox.poll_wait(cx, &spec, false, describe, active)
        {
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
        unwatch(self.cell, &self.watched);
        if self.sel.is_some() {
            self.cancel();
            self.cell.mailbox.cancel_wait(&self.vm.shared.active);
        }
    }
}

impl Host for ActorHost<'_> {
    fn self_pid(&self) -> Pid {
        self.cell.pid
    }

    fn spawn(
        &mut self,
        fun: Arc<Closure>,
        args: Vec<Value>,
        opts: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception> {
        let module = self.cell.module.clone();
        let (pid, r) = self.vm.spawn(module, &fun, args, opts, Some(self.cell.pid))?;
        crate::session::trace_spawned(self.cell.pid, pid);
        if let Some(r) = r {
            self.cell.mailbox.with(|i| i.ext().monitoring.push((r, pid)));
        }
        Ok((pid, r))
    }

    fn send(&mut self, to: Pid, msg: Value) -> Result<(), Exception> {
        let me = self.cell.pid;
        crate::session::trace_send(me, to, &msg);
        let io = &self.vm.shared.io;
        // Resources in the message become the receiver's before it can see them (and only when
        // there is a receiver: a message to an exited actor is dropped, closing them).
        if to == me {
            self.vm.deliver(self.cell, msg);
            return Ok(());
        }
        match &self.last_target {
            Some(c) if c.pid == to && c.state() != RunState::Exited => {
                io.transfer(&msg, me.0, to.0);
                self.vm.deliver(c, msg);
            }
            _ => {
                if let Some(c) = self.vm.lookup(to) {
                    io.transfer(&msg, me.0, to.0);
                    self.vm.deliver(&c, msg);
                    self.last_target = Some(c);
                }
            }
        }
        Ok(())
    }

    fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value> {
        self.cell.mailbox.try_take(pattern)
    }

    fn try_receive_or_park(&mut self, pattern: Option<&Value>) -> Option<Value> {
        match self.cell.mailbox.take_or_park(pattern, &self.vm.shared.active) {
            TakeOrPark::Taken(m) => Some(m),
            TakeOrPark::Parked { idle } => {
                if idle {
                    self.vm.shared.idle.notify_one();
                }
                self.cell.parked_in_step.store(true, Ordering::Relaxed);
                None
            }
            TakeOrPark::Empty => None,
        }
    }

    fn now_ms(&self) -> i64 {
        self.vm.now_ms()
    }

    fn native(&mut self, name: Atom, args: &[Value]) -> Option<Result<Value, Exception>> {
        let native = natives::lookup(name)?;
        let ctx = natives::Ctx { io: &self.vm.shared.io, pid: self.cell.pid.0 };
        match native.imp {
            natives::Imp::Blocking(_) => None,
            natives::Imp::Inline(_) => Some(call_inline(native, &ctx, args)),
            natives::Imp::Async(_) => match native.start(&ctx, args) {
                natives::Started::Done(r) => Some(r),
                natives::Started::Pending(fut) => {
                    self.pending_io = Some(fut);
                    None
                }
            },
        }
    }

    fn chan_new(&mut self, cap: usize) -> Result<Value, Exception> {
        let id = self.vm.next_chan_id();
        let chan: Arc<Channel> = Channel::new(id, cap);
        Ok(Value::Chan(Handle::with_payload(id, chan)))
    }

    fn chan_try(&mut self, cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        let active = &self.vm.shared.active;
        // A plain send or receive: the channel's own single-case fast path, with no allocation.
        match cases {
            [SelectCase::Send(h, v)] => {
                return match channel_ref(h)?.try_send(v.clone(), active) {
                    Ok(()) => Ok(Some(Fired::Sent(0))),
                    Err(chan::TrySendError::Closed(_)) => Ok(Some(Fired::SendClosed(0))),
                    Err(chan::TrySendError::Full(_)) => Ok(None),
                };
            }
            [SelectCase::Recv(h)] => {
                return Ok(match channel_ref(h)?.try_recv(active) {
                    chan::TryRecv::Value(v) => Some(Fired::Received(0, v)),
                    chan::TryRecv::Closed => Some(Fired::Closed(0)),
                    chan::TryRecv::Empty => None,
                });
            }
            _ => {}
        }
        let split = split_cases(cases, self.vm, self.cell.pid)?;
        if let Some(f) = chan::try_select(&split.chans, &self.vm.shared.active) {
            return Ok(Some(split.fired(f)));
        }
        if let Some(m) = split.take_message(self.cell) {
            return Ok(Some(m));
        }
        // Sockets ready now; the no-op waker only asks, the blocking select registers for real.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match split.ready_io(&mut cx) {
            Some((i, accept, obj)) => fire_io(self.vm, self.cell.pid, i, accept, &obj).map(Some),
            None => Ok(None),
        }
    }

    fn chan_close(&mut self, h: &Handle) -> Result<(), Exception> {
        channel_ref(h)?
            .close(&self.vm.shared.active)
            .map_err(|_| Exception::new(Atom::new("closed"), format!("#chan<{}> is already closed", h.id())))
    }

    fn control(&mut self, op: ActorOp) -> Result<Value, Exception> {
        crate::session::trace_control(self.vm, self.cell, &op);
        let me = self.cell.pid;
        let vm = self.vm;
        match op {
            ActorOp::Register(name, pid) => vm.register(name, pid).map(|()| Value::Nil),
            ActorOp::Unregister(name) => {
                vm.unregister(name);
                Ok(Value::Nil)
            }
            ActorOp::Whereis(name) => Ok(vm.whereis(name).map_or(Value::Nil, Value::Pid)),
            ActorOp::Link(pid) if pid == me => Ok(Value::Nil),
            ActorOp::Link(pid) => {
                let alive = vm.lookup(pid).is_some_and(|c| {
                    c.mailbox.with(|i| {
                        if !i.closed && !i.ext().links.contains(&me) {
                            i.ext().links.push(me);
                        }
                        !i.closed
                    })
                });
                if alive {
                    self.cell.mailbox.with(|i| {
                        if !i.ext().links.contains(&pid) {
                            i.ext().links.push(pid);
                        }
                    });
                } else {
                    vm.signal_cell(self.cell, Signal::Exit { from: pid, reason: Value::Atom(atoms::NOPROC) });
                }
                Ok(Value::Nil)
            }
            ActorOp::Unlink(pid) => {
                self.cell.mailbox.with(|i| i.ext().links.retain(|p| *p != pid));
                if let Some(c) = vm.lookup(pid) {
                    c.mailbox.with(|i| i.ext().links.retain(|p| *p != me));
                }
                Ok(Value::Nil)
            }
            ActorOp::Monitor(pid) => {
                let r = vm.next_ref();
                let alive = vm.lookup(pid).is_some_and(|c| {
                    c.mailbox.with(|i| {
                        if !i.closed {
                            i.ext().monitors.push((r, me));
                        }
                        !i.closed
                    })
                });
                if alive {
                    self.cell.mailbox.with(|i| i.ext().monitoring.push((r, pid)));
                } else {
                    let down = Value::tuple(vec![
                        Value::Atom(atoms::DOWN),
                        Value::Int(r),
                        Value::Pid(pid),
                        Value::Atom(atoms::NOPROC),
                    ]);
                    vm.deliver(self.cell, down);
                }
                Ok(Value::Int(r))
            }
            ActorOp::Demonitor(r) => {
                let held = self.cell.mailbox.with(|i| {
                    let m = &mut i.ext().monitoring;
                    m.iter().position(|(x, _)| *x == r).map(|k| m.swap_remove(k).1)
                });
                if let Some(pid) = held
                    && let Some(c) = vm.lookup(pid)
                {
                    c.mailbox.with(|i| i.ext().monitors.retain(|(x, _)| *x != r));
                }
                Ok(Value::Nil)
            }
            ActorOp::TrapExit(on) => {
                Ok(Value::Bool(self.cell.mailbox.with(|i| std::mem::replace(&mut i.ext().trap_exit, on))))
            }
            ActorOp::Exit(pid, reason) => {
                let sig = match &reason {
                    Value::Atom(a) if *a == atoms::KILL => Signal::Kill(Value::Atom(atoms::KILLED)),
                    _ => Signal::Exit { from: me, reason },
                };
                vm.signal(pid, sig);
                Ok(Value::Nil)
            }
            ActorOp::Kill(pid) => {
                vm.signal(pid, Signal::Kill(Value::Atom(atoms::KILLED)));
                Ok(Value::Nil)
            }
            ActorOp::Interrupt(pid, exc, mode) => {
                vm.signal(pid, Signal::Interrupt { exc, mode });
                Ok(Value::Nil)
            }
        }
    }
}
