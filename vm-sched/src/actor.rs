//! The per-actor driver loop.
//!
//! One tokio task per actor runs [`drive`]:
//! 1. At a safe point (before each slice), if the control port has signals, handle them as
//!    `exit` says for a running actor: a kill, an exit signal or a mode-2 interrupt ends the
//!    actor; a mode-1 interrupt is raised at the current instruction; a stale mode-0 interrupt is
//!    dropped (it only applies to a waiting actor, and this one is running).
//! 2. Step the interpreter for one slice of fuel.
//! 3. `Yielded` → yield to tokio so other actors run (preemption); `Blocked(effect)` → await the
//!    effect, raced against the control port, and resume the actor with the result, an exception
//!    or a timeout; `Exited`/`Failed` → end. A wait the host began inside the step
//!    (`Effect::Begun`, see `vm_core::step`) is finished here, never begun again: a receive the
//!    host parked waits for its wake and is stepped again without a resume (the receive runs
//!    again, and no signal check comes first, which would drop a mode-0 interrupt meant for the
//!    wait); an I/O operation the host holds (`ActorHost::held`) is awaited, raced against
//!    the control port, and its result resumes the actor; a `csend`/`crecv` the host parked on
//!    its channel (also held) is, like a parked receive, stepped again once woken: the
//!    instruction runs again and takes the held wait's outcome (`chan::waits::try_or_park`),
//!    with no signal check first, and a snapshot requested meanwhile settles the wait before
//!    the state is published, so a case that committed is never run again. One parked while a
//!    signal was pending is awaited as a one-case select (`chan::waits::ChanWait`), whose
//!    outcome resumes the actor.
//!
//! Every wait goes through the mailbox's wake protocol (see `mailbox`), so a waiting actor is one
//! parked task with a stored waker: no polling, no CPU.

use crate::cell::{ActorCell, RunState};
use crate::chan::waits::{Held, SelectEnd, start_select};
use crate::exit::{Doing, ExitReason, OnSignal, on_signal};
use crate::host::ActorHost;
use crate::mailbox::{Signal, Wait, WaitId, WaitSpec, Woken};
use crate::native::{IoWait, affine_wait, native_result, real_block};
use crate::pause::{self, Pausable, Taken};
use crate::prio::Attention;
use crate::sync::Ordering;
use crate::trace;
use crate::vm::{Config, Outcome, Output, Vm, spawn_actor};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use vm_core::interp;
use vm_core::{ActorState, Begun, Effect, Exception, Module, Pid, Resume, Step, Value, atoms, select_resume};
use vm_io::natives;

impl Vm {
    /// A runtime with `config`, printing through `output`, whose actors run [`drive`]. Must be
    /// used inside a tokio runtime. (Defined here, beside the driver it passes in, so that `vm`
    /// does not depend on this module; see `vm`'s docs.)
    pub fn new(config: Config, output: Arc<dyn Output>) -> Vm {
        let vm = Vm::with_driver(config, output, start);
        crate::snapshot::install_hook(&vm);
        crate::chan::orphans::start(&vm);
        vm
    }
}

/// Starts an actor's task: its driver (the VM's [`crate::vm::StartActor`]).
fn start(vm: Vm, cell: Arc<ActorCell>, st: ActorState, span: Option<tracing::Span>) {
    spawn_actor(drive(vm, cell, st), span);
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
    st: ActorState,
) -> impl Future<Output = ()> + Send + 'static {
    // Boxed before the block captures it: a parked receive moves it into the cell's slot and
    // back (`pause`), and the task is the smaller for it.
    let st = Box::new(st);
    async move {
        // The mailbox keeps the task's waker from the start, so that the first plain receive
        // parks in its fast path too (with the state in the cell's slot: `pause`).
        std::future::poll_fn(|cx| {
            cell.mailbox.keep_waker(cx.waker());
            Poll::Ready(())
        })
        .await;
        let reason = {
            let mut host = ActorHost { vm: &vm, cell: &cell, last_target: None, held: Held::Nothing };
            run(&mut host, &cell.module, st).await
        };
        let report = vm.take_reporter(cell.pid);
        // The main actor's failure is reported by `vm run` itself; others are logged here.
        if let (ExitReason::Failed(f), None) = (&reason, &report) {
            let loc = cell.module.location(f.func, f.pc);
            tracing::error!(pid = %cell.pid, name = %trace::NameOf(&cell), exception = %f.exception, location = %loc, "actor crashed");
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

/// The state is boxed so that a parked receive can move it into the cell's slot and back
/// (`pause`), a pointer's move each way.
async fn run(host: &mut ActorHost<'_>, module: &Module, mut state: Box<ActorState>) -> ExitReason {
    let mut deferrals = 0u32;
    let mut slices = 0u32;
    // The last round ended in a receive or a `csend`/`crecv` parked in the step, now woken:
    // see those arms. Cleared when the next slice starts, not before, so that a round that
    // steps aside (priorities, `yieldto`) still skips the signal check.
    let mut resumed = false;
    // `:low` actors run quarter slices (`prio`, rule 3). An actor's priority is fixed before it
    // starts, so this is worked out once, not per slice.
    let fuel = match host.cell.priority() {
        vm_core::Priority::Low => (host.vm.shared.config.fuel / 4).max(1),
        _ => host.vm.shared.config.fuel,
    };
    loop {
        // Taken from `host` and `state` afresh in each round, and not used after any of the
        // round's awaits (the code after an await takes them again): a local used after an
        // await is stored in the task, and storing these three at the top of every round, and
        // loading them back from memory, cost ~10 instructions a slice.
        let vm = host.vm;
        let cell = host.cell;
        let st = &mut *state;
        // A plain load first: the read-modify-write is only paid when a signal is there.
        if !resumed
            && cell.has_signals.load(Ordering::Relaxed)
            && cell.has_signals.swap(false, Ordering::SeqCst)
        {
            while let Some(sig) = cell.mailbox.take_signal() {
                if let Some(end) = take_signal(module, st, sig, Doing::Running) {
                    return end;
                }
            }
        }
        // The slice start's word (`prio`, rule 6): with nothing pending, no boost and no pause,
        // one load and one test, rather than one for each.
        let attention = vm.shared.prio.attention.get();
        if attention != 0 {
            // Priorities (`prio`): wake `:high` actors whose precise timer is due; a `:high`
            // actor starting its slice is no longer waiting; others step aside while one is.
            if attention & Attention::PRIO != 0 {
                let fired = vm.shared.prio.fire_due();
                vm.shared.prio.running(cell);
                if deferrals < 8 && vm.shared.prio.should_step_aside(cell, fired) {
                    deferrals += 1;
                    cell.set_state(RunState::Runnable);
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            // `yieldto`: step aside (a bounded number of times) while another actor asked to
            // run next.
            if attention & Attention::BOOST != 0 {
                let boost = vm.shared.boost.load(Ordering::Relaxed);
                if boost == 0 {
                    // A bit left over by racing `yieldto`s (rule 6): cleared.
                    vm.shared.prio.attention.clear(Attention::BOOST);
                } else if boost == cell.pid.0 + 1 {
                    end_boost(vm);
                } else if deferrals < 8
                    && vm.lookup(Pid(boost - 1)).is_some_and(|c| c.state() == RunState::Runnable)
                {
                    deferrals += 1;
                    tokio::task::yield_now().await;
                    continue;
                } else {
                    end_boost(vm);
                }
            }
            deferrals = 0;
            // A snapshot in progress: publish this state and wait here, at a safe point
            // (`pause`), then look at the control port again.
            if attention & Attention::PAUSE != 0 && pause::requested(vm) {
                // A woken `csend`/`crecv` that has not run again yet settles its wait first, so
                // that the state published agrees with the channels (`pause`, step 3).
                if let Some((shape, f)) = host.held.settle_chan(vm, cell) {
                    st.resume(module, select_resume(shape, f));
                }
                resumed = false;
                pause::gate(vm, cell, st).await;
                continue;
            }
        } else {
            deferrals = 0;
        }
        resumed = false;

        cell.set_state(RunState::Running);
        vm.shared.heartbeat.begin(cell.pid.0);
        trace::trace_raise(cell.pid, st.pending());
        let caught_before = st.caught().map_or(0, |c| c.count);
        let step = interp::step(st, module, host, fuel);
        trace::trace_caught(cell, st.caught(), caught_before);
        let hogged = vm.shared.heartbeat.end();
        trace::trace_step(cell.pid, &step);
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
            Step::Blocked(Effect::Print(text)) => {
                print_line(vm, cell, &text);
                st.resume(module, Resume::Value(Value::Nil));
            }
            Step::Blocked(Effect::Stop(reason)) => return ExitReason::Stopped(reason),
            Step::Blocked(Effect::Select { shape, cases, timeout_ms }) => {
                cell.set_state(RunState::Waiting);
                // (The timeout is not bound to a name: a local lives across the await below and
                // would make every actor's task larger.)
                let wait = match start_select(
                    vm,
                    cell,
                    shape,
                    cases,
                    timeout_ms.map(|ms| vm.timed_wait_ms(cell.pid, ms)),
                ) {
                    Ok(w) => w,
                    Err(e) => {
                        st.resume(module, Resume::Raise(e));
                        continue;
                    }
                };
                let end = wait.await;
                if let Some(end) = select_ended(module, &mut state, shape, end) {
                    return end;
                }
            }
            Step::Blocked(Effect::Begun(Begun::Chan)) => {
                // A `csend`/`crecv` the host parked on its channel in the step: its wait is
                // held, so nothing is begun again (were it gone, the instruction runs again).
                cell.set_state(RunState::Waiting);
                if host.held.is_quiet_chan() {
                    // Every wake source holds the task's waker: once woken, run the
                    // instruction again, which takes the outcome or, woken by the mailbox,
                    // parks again (see `chan::waits::try_or_park`). As for a parked
                    // receive, the signal check is skipped: it would treat the actor as
                    // running while its wait may have committed.
                    ParkedChan { polled: false }.await;
                    resumed = true;
                    continue;
                }
                let Some(wait) = host.held.take_chan_wait(vm, cell) else { continue };
                let shape = wait.shape();
                let end = wait.await;
                if let Some(end) = select_ended(module, &mut state, shape, end) {
                    return end;
                }
            }
            Step::Blocked(Effect::Native { id, args }) => {
                // A native the host did not start (it may block its thread): it runs on the
                // blocking pool while the actor is real-blocked.
                let Some(native) = natives::get(id) else {
                    st.resume(
                        module,
                        Resume::Raise(Exception::badarg(format!("no native function #{}", id.0))),
                    );
                    continue;
                };
                if let natives::Imp::Affine(bind, _) = native.imp {
                    // Queued to its executor's thread (see `affine`).
                    let exec = match vm.shared.executors.for_call(bind, native.name, &args) {
                        Ok(e) => e,
                        Err(e) => {
                            st.resume(module, Resume::Raise(e));
                            continue;
                        }
                    };
                    cell.set_state(RunState::Waiting);
                    let (call, reply) =
                        exec.call(vm.shared.io.clone(), cell.container.clone(), cell.pid.0, native, args);
                    drop(exec);
                    // Boxed, as the other native waits are, to keep every actor's task small.
                    let name = native.name;
                    match Box::pin(Pausable::new(
                        vm,
                        cell,
                        st,
                        name,
                        Box::pin(affine_wait(vm, cell, call, reply)),
                    ))
                    .await
                    {
                        Ok(how) => state.resume(module, how),
                        Err(end) => return end,
                    }
                    continue;
                }
                cell.set_state(RunState::RealBlocked);
                let job = start_blocking(vm, cell, native, args);
                // Boxed: native calls are rare, and this keeps every task small. A snapshot
                // does not wait for it (`pause::Pausable`).
                let name = native.name;
                match Box::pin(Pausable::new(vm, cell, st, name, Box::pin(real_block(vm, cell, job)))).await {
                    Ok((_, Some(interrupt))) => state.resume(module, Resume::Raise(interrupt)),
                    Ok((result, None)) => state.resume(module, native_result(result)),
                    Err(end) => return end,
                }
            }
            Step::Blocked(Effect::Begun(begun @ (Begun::Native(_) | Begun::Send))) => {
                // The host began the operation in the step and holds it. (Were it gone, the
                // rule of begun waits applies: run the instruction again.) A held send (to a
                // node far behind, `cluster`'s rule 3) is waited for the same way.
                let Some(fut) = host.held.take_io() else { continue };
                let name = match begun {
                    Begun::Native(id) => natives::get(id).map_or("native", |n| n.name),
                    _ => "send",
                };
                cell.set_state(RunState::Waiting);
                // Boxed, as `real_block` is, to keep every actor's task small. A snapshot leaves
                // it alone (`pause::Pausable`): a write may have half happened.
                let io = IoWait { vm, cell, fut, name, done: false };
                match Box::pin(Pausable::new(vm, cell, st, name, io)).await {
                    Ok(result) => state.resume(module, native_result(Ok(result))),
                    Err(sig) => {
                        if let Some(end) = take_signal(module, &mut state, sig, Doing::SoftBlocked) {
                            return end;
                        }
                    }
                }
            }
            Step::Blocked(Effect::Begun(Begun::Receive)) => {
                // Parked already by `try_receive_or_park`, in this step: once woken, run the
                // receive again; its fast path takes the message, or steps aside for a
                // signal (see "A parked receive is re-run" in `mailbox`). The signal check
                // at the top of the loop is skipped then, as it would treat the actor as
                // running and drop a mode-0 interrupt meant for the wait.
                // Once the VM has paused (or will: `pause`, step 2) the state waits in the
                // cell's slot, where a snapshot reads it without waking the actor; one it
                // reserved stays there until that pause ends. Before, it stays here, and a
                // pause wakes the actor to publish it at its gate.
                cell.set_state(RunState::Waiting);
                if pause::armed(vm) {
                    cell.slot.put(state);
                    ParkedReceive { vm, cell, polled: false, woken: false }.await;
                    let (vm, cell) = (host.vm, host.cell);
                    state = match pause::take_back(vm, cell) {
                        Taken::State(st) => st,
                        Taken::Reserved => match pause::reclaim(vm, cell).await {
                            Some(st) => st,
                            None => return lost_state(),
                        },
                        Taken::Missing => return lost_state(),
                    };
                } else {
                    ParkedReceive { vm, cell, polled: false, woken: false }.await;
                }
                resumed = true;
            }
            Step::Blocked(Effect::Yield(target)) => {
                if let Some(t) = target {
                    vm.shared.boost.store(t.0 + 1, Ordering::Relaxed);
                    vm.shared.prio.attention.set(Attention::BOOST);
                }
                cell.set_state(RunState::Runnable);
                tokio::task::yield_now().await;
                state.resume(module, Resume::Value(Value::Nil));
            }
            Step::Blocked(Effect::Sleep { ms }) => {
                cell.set_state(RunState::Waiting);
                match WaitFor::new(vm, cell, None, false, Some(vm.timed_wait_ms(cell.pid, ms))).await {
                    None | Some(Woken::Message(_)) => state.resume(module, Resume::Value(Value::Nil)),
                    Some(Woken::Signal(sig)) => {
                        if let Some(end) = take_signal(module, &mut state, sig, Doing::SoftBlocked) {
                            return end;
                        }
                    }
                }
            }
            Step::Blocked(Effect::Receive { pattern, timeout_ms }) => {
                cell.set_state(RunState::Waiting);
                let receive = WaitFor::new(
                    vm,
                    cell,
                    pattern,
                    true,
                    timeout_ms.map(|ms| vm.timed_wait_ms(cell.pid, ms)),
                );
                match receive.await {
                    Some(Woken::Message(m)) => state.resume(module, Resume::Value(m)),
                    None => state.resume(module, Resume::Timeout),
                    Some(Woken::Signal(sig)) => {
                        if let Some(end) = take_signal(module, &mut state, sig, Doing::SoftBlocked) {
                            return end;
                        }
                    }
                }
            }
        }
    }
}

/// Clears the `yieldto` boost, and its bit in the slice start's word (`prio`, rule 6).
fn end_boost(vm: &Vm) {
    vm.shared.boost.store(0, Ordering::Relaxed);
    vm.shared.prio.attention.clear(Attention::BOOST);
}

/// Resumes an actor whose select (or `csend`/`crecv`) wait ended with `end`; `Some` if the
/// actor ends instead (a signal that stops it).
fn select_ended(
    module: &Module,
    st: &mut ActorState,
    shape: vm_core::SelectShape,
    end: SelectEnd,
) -> Option<ExitReason> {
    match end {
        SelectEnd::Fired(f) => st.resume(module, select_resume(shape, f)),
        SelectEnd::TimedOut => st.resume(module, Resume::Timeout),
        SelectEnd::Failed(e) => st.resume(module, Resume::Raise(e)),
        SelectEnd::Retry => st.resume(module, Resume::Retry),
        SelectEnd::Signal(sig, committed) => {
            if let Some(f) = committed {
                // The select completed first; the signal then meets a running actor: mode 0 no
                // longer applies, mode 1 is raised next.
                st.resume(module, select_resume(shape, f));
                return take_signal(module, st, sig, Doing::Running);
            }
            return take_signal(module, st, sig, Doing::SoftBlocked);
        }
    }
    None
}

/// The end of an actor whose parked state was not in its slot when it woke: a runtime bug,
/// reported, that ends this actor only.
#[cold]
fn lost_state() -> ExitReason {
    tracing::error!("an actor's parked state was missing from its slot; the actor ends");
    ExitReason::Stopped(Value::atom("lost_state"))
}

/// Starts a blocking native on the pool, with the caller's container's grants.
fn start_blocking(
    vm: &Vm,
    cell: &ActorCell,
    native: &'static natives::Native,
    args: Vec<Value>,
) -> tokio::task::JoinHandle<natives::NativeResult> {
    let io = vm.shared.io.clone();
    let container = cell.container.clone();
    let pid = cell.pid.0;
    tokio::task::spawn_blocking(move || {
        let ctx = natives::Ctx { io: &io, pid, grants: &container.grants, console: &container.console };
        natives::guarded(|| native.call(&ctx, &args))
    })
}

/// Prints a line of the actor's (out of the driver, whose future every actor's task holds).
fn print_line(vm: &Vm, cell: &ActorCell, text: &str) {
    match &cell.container.tag {
        None => vm.shared.output.line(text),
        // A container's lines carry its name, as a group leader's would.
        Some(tagged) => tagged.line(text),
    }
}

/// Applies a signal the actor took while `doing` this (see `exit`): raising sets the exception
/// to raise at the current (or blocked) instruction; an end is returned.
fn take_signal(module: &Module, st: &mut ActorState, sig: Signal, doing: Doing) -> Option<ExitReason> {
    match on_signal(sig, doing, Some(WaitId::of(st))) {
        OnSignal::End(reason) => Some(reason),
        OnSignal::Raise(exc) => {
            st.resume(module, Resume::Raise(exc));
            None
        }
        OnSignal::Ignore => None,
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
    /// A `:high` actor's deadline, also checked by every safe point (`prio`, rule 1).
    precise: bool,
    /// Its deadline is registered with `prio`.
    registered: bool,
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
        let precise = timer.is_some() && cell.priority() == vm_core::Priority::High;
        WaitFor { vm, cell, pattern, receive, timeout_ms, timer, done: false, precise, registered: false }
    }
}

impl Future for WaitFor<'_> {
    type Output = Option<Woken>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Woken>> {
        let this = self.get_mut();
        let mut passed = this.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if this.precise
            && !passed
            && let Some(t) = &this.timer
        {
            // Not waiting for tokio's timer, which busy workers look at only now and then.
            let deadline = t.deadline().into_std();
            if std::time::Instant::now() >= deadline {
                passed = true;
            } else if !std::mem::replace(&mut this.registered, true) {
                this.vm.shared.prio.add(deadline, cx.waker());
            }
        }
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
            // Cut short by a snapshot: the wait runs again afterwards, until the same deadline.
            if let (Poll::Ready(Some(Woken::Signal(Signal::Pause))), Some(t)) = (&p, &this.timer) {
                pause::cut_short(this.vm, this.cell.pid, t.deadline().into_std());
            }
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

/// A `csend`/`crecv` parked in the step (quietly: its channel and its mailbox hold the task's
/// waker), waiting to be woken: pending on its first poll, ready on the next. Abandoned while
/// parked (runtime shutdown), it leaves the wait to the host, which cancels it (`ActorHost`'s
/// `Drop`).
struct ParkedChan {
    polled: bool,
}

impl Future for ParkedChan {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.get_mut().polled, true) { Poll::Ready(()) } else { Poll::Pending }
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
