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

use crate::mailbox::{Signal, TakeOrPark, Wait, WaitSpec, Woken};
use crate::select::{self, SelectEnd, start_select};
use crate::sync::Ordering;
use crate::vm::{ActorCell, Outcome, RunState, Vm};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use vm_core::interp;
use vm_core::{
    ActorOp, ActorState, Atom, Closure, Effect, Exception, Fault, Fired, Handle, Host, Module, Pid, Resume,
    SelectCase, SpawnOpts, Step, Value, atoms, select_resume,
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
    // The last round ended in a receive parked in its fast path, now woken: see that arm.
    let mut resumed = false;
    loop {
        // Taken from `host` afresh in each round, and not used after the round's await: locals
        // that live across an await are stored in every actor's task.
        let vm = host.vm;
        let cell = host.cell;
        let fuel = vm.shared.config.fuel;
        // A plain load first: the read-modify-write is only paid when a signal is there.
        if !std::mem::take(&mut resumed)
            && cell.has_signals.load(Ordering::Relaxed)
            && cell.has_signals.swap(false, Ordering::SeqCst)
        {
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
        let hogged = vm.shared.heartbeat.end();
        crate::session::trace_step(cell.pid, &step);
        cell.record(st.position(), st.reductions);
        if let Some(ms) = hogged {
            report_hog(cell, &step, ms);
        }
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
                                natives::guarded(|| native.call(&natives::Ctx { io: &io, pid }, &args))
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
                    // Parked already by `try_receive_or_park`, in this step: once woken, run the
                    // receive again; its fast path takes the message, or steps aside for a
                    // signal (see "A parked receive is re-run" in `mailbox`). The signal check
                    // at the top of the loop is skipped then, as it would treat the actor as
                    // running and drop a mode-0 interrupt meant for the wait.
                    // (Only this actor touches the flag: a plain load and store, no RMW.)
                    if cell.parked_in_step.load(Ordering::Relaxed) {
                        cell.parked_in_step.store(false, Ordering::Relaxed);
                        ParkedReceive { vm, cell, polled: false, woken: false }.await;
                        resumed = true;
                        continue;
                    }
                    match WaitFor::new(vm, cell, pattern, true, timeout_ms).await {
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

/// The heartbeat's second report of a slice that held its worker too long (its step 4): where the
/// actor is now that the slice has ended (the position just recorded, or where it ended).
#[cold]
#[inline(never)]
fn report_hog(cell: &ActorCell, step: &Step, held_ms: u64) {
    let at = match step {
        Step::Exited(_) => "its end (it returned from its first function)".to_string(),
        Step::Failed(f) => cell.module.location(f.func, f.pc).to_string(),
        _ => cell.location().to_string(),
    };
    tracing::warn!(pid = cell.pid.0, held_ms, %at, "actor held a worker thread without yielding; it let go here");
}

type NativeOutcome = Result<Result<Value, Exception>, String>;

/// Calls an inline native on this thread; a panic in it becomes a `:panic` exception.
fn call_inline(native: &natives::Native, ctx: &natives::Ctx<'_>, args: &[Value]) -> Result<Value, Exception> {
    natives::guarded(|| native.call(ctx, args))
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
        Err(panic) => Resume::Raise(natives::panicked(&panic)),
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
            Ok(Err(join)) => {
                break Err(join.try_into_panic().map_or_else(|e| e.to_string(), natives::panic_text));
            }
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
        WaitFor { vm, cell, pattern, receive, timeout_ms, timer, done: false }
    }
}

impl Future for WaitFor<'_> {
    type Output = Option<Woken>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Woken>> {
        let this = self.get_mut();
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

/// The wait of a receive that parked in its fast path (`Mailbox::take_or_park`): pending until
/// the task is polled again, which only a wake does (the mailbox keeps the task's waker, so the
/// first poll need not register anything). It decides nothing: the driver then runs the receive
/// again, and a spurious wake merely parks it again.
struct ParkedReceive<'a> {
    vm: &'a Vm,
    cell: &'a ActorCell,
    /// Polled once (and so parked in tokio's eyes).
    polled: bool,
    woken: bool,
}

impl Future for ParkedReceive<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if std::mem::replace(&mut this.polled, true) {
            this.woken = true;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Abandoned while parked (runtime shutdown): unparks the mailbox, as `WaitFor` does, so the
/// accounting stays balanced.
impl Drop for ParkedReceive<'_> {
    fn drop(&mut self) {
        if !self.woken {
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
            // The common case, kept short: the arity check and the function pointer come from
            // the row just matched (`Native::call` would match the kind again), and a panic
            // still becomes a quiet `:panic` exception in this actor only (`natives::guarded`).
            natives::Imp::Inline(f) => Some(natives::guarded(|| native.call_sync(f, &ctx, args))),
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
        Ok(select::new_channel(self.vm, cap))
    }

    fn chan_try(&mut self, cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        select::try_now(self.vm, self.cell, cases)
    }

    fn chan_try_one(&mut self, chan: &Handle, send: Option<&Value>) -> Result<Option<Fired>, Exception> {
        select::try_one(self.vm, chan, send)
    }

    fn chan_close(&mut self, h: &Handle) -> Result<(), Exception> {
        select::close(self.vm, h)
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
