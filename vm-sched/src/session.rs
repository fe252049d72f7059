//! A long-lived runtime for `vm repl`, and the tracing the runtime emits about each actor.
//!
//! # Sessions
//!
//! [`Session`] owns a multi-thread tokio runtime and a [`Vm`] on it that lives until the session
//! is dropped, with no `main`: the caller spawns actors by function name ([`Session::spawn`]),
//! sends them messages, interrupts and kills them from outside, and runs snippets as temporary
//! actors whose result it waits for ([`Session::eval`], [`Session::wait`]). The calling thread is
//! not a runtime thread; it blocks on the runtime only inside [`Session::wait`] and
//! [`Session::wait_gone`], so actors keep running while the caller waits for input.
//!
//! **Ctrl-C.** After [`Session::catch_ctrl_c`] (an interactive caller), SIGINT no longer ends the
//! process. The listener is registered at once, so there is no moment where a Ctrl-C would kill
//! the process; a Ctrl-C during [`Session::wait`] stops the snippet with a mode-2 interrupt
//! carrying `{:interrupted, "interrupted by Ctrl-C"}`, and Ctrl-Cs at other times are dropped.
//!
//! A session holds a [`Hold`] on the VM for its whole life: the person at the prompt is an
//! external source of messages, so the VM is never idle in the sense of deadlock detection.
//! Dropping the session abandons every actor still running (as `vm run` does when `main` ends).
//!
//! # Tracing
//!
//! The runtime reports what actors do through `tracing`, never by printing; the subscriber (the
//! CLI's) decides what is shown. Three kinds of record exist:
//!
//! - **One span per actor**, named `actor`, with fields `pid`, `func` (the function it started
//!   in) and `name` (recorded when the actor registers itself). The span is created at `DEBUG`
//!   level and the actor's task is instrumented with it only when a subscriber wants it (for
//!   example `vm --trace run` or `RUST_LOG=vm_sched=debug`), so that an ordinary run pays for
//!   neither the span nor entering it on every poll.
//! - **Per-actor activity** at `TRACE` level, target [`TRACE_TARGET`]: every message delivered
//!   to the actor's mailbox, every message it sends, every effect it waits on (print, receive,
//!   sleep, select, native call, ...), actors it spawns, registry/link/monitor/signal operations,
//!   and how each slice ended when it returned or failed. `vm repl`'s `trace PID on` shows these
//!   for one actor.
//! - **Exits and exceptions** at `DEBUG` level, target [`EVENT_TARGET`]: an actor's exit with its
//!   reason (and the source location for an uncaught exception), and every exception the runtime
//!   raises at a blocked instruction (interrupts, timeouts and errors of effects, orphaned
//!   channels). `vm repl`'s `info PID` lists the recent ones.
//!
//! Every activity and event record has an integer field `pid` (the actor's number) and a
//! message; values in messages are written in the assembly's literal syntax. Values are
//! formatted only when a subscriber actually records the event.

use crate::mailbox::Signal;
use crate::run::{RunError, RunOptions};
use crate::vm::{Hold, Outcome, Output, Vm};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument as _;
use vm_core::{ActorOp, Atom, Closure, Effect, Exception, Module, Pid, SelectCase, SpawnOpts, Step, Value};

/// The target of per-actor activity records (`TRACE` level); see the module docs.
pub const TRACE_TARGET: &str = "vm_sched::trace";

/// The target of exit and exception records (`DEBUG` level); see the module docs.
pub const EVENT_TARGET: &str = "vm_sched::events";

/// A running VM with no `main`, driven from outside; see the module docs.
pub struct Session {
    /// `Some` until the session is dropped, when the runtime is shut down without waiting for
    /// the actors.
    runtime: Option<tokio::runtime::Runtime>,
    vm: Vm,
    _hold: Hold,
    /// Set by [`Session::catch_ctrl_c`].
    ctrl_c: Mutex<Option<CtrlC>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The listener has no invariant a panic could break.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A SIGINT listener, registered when created (so no Ctrl-C between two waits kills the
/// process).
struct CtrlC {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl CtrlC {
    #[cfg(unix)]
    fn new() -> std::io::Result<CtrlC> {
        Ok(CtrlC { signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())? })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<CtrlC> {
        Err(std::io::Error::other("catching Ctrl-C needs a Unix system"))
    }

    /// Drops Ctrl-Cs received before now.
    fn forget_earlier(&mut self) {
        #[cfg(unix)]
        while futures::FutureExt::now_or_never(self.signal.recv()).flatten().is_some() {}
    }

    /// Waits for the next Ctrl-C.
    async fn pressed(&mut self) {
        #[cfg(unix)]
        if self.signal.recv().await.is_some() {
            return;
        }
        // No way to listen any more: never fires.
        std::future::pending::<()>().await
    }
}

/// A snippet running as a temporary actor; see [`Session::eval`].
pub struct Eval {
    /// The temporary actor.
    pub pid: Pid,
    done: tokio::sync::oneshot::Receiver<Outcome>,
}

/// How waiting for an [`Eval`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalEnd {
    /// The actor ended by itself.
    Done(Outcome),
    /// Ctrl-C was pressed; the actor was stopped (mode-2 interrupt) and ended like this.
    Interrupted(Outcome),
}

/// The exception a Ctrl-C raises in a running `eval`.
pub fn ctrl_c_exception() -> Exception {
    Exception::new(Atom::new("interrupted"), "interrupted by Ctrl-C")
}

impl Session {
    /// Builds the runtime and the VM. `opts` gives the worker threads, fuel and frame limit, as
    /// for `vm run`; `print` output goes to `output`.
    pub fn new(opts: &RunOptions, output: Arc<dyn Output>) -> Result<Session, RunError> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = opts.workers {
            builder.worker_threads(n.get());
        }
        let runtime = builder.enable_all().thread_name("vm-worker").build().map_err(RunError::Runtime)?;
        // `Vm::new` starts the heartbeat task, so it must run inside the runtime.
        let vm = {
            let _in_runtime = runtime.enter();
            Vm::new(opts.config(), output)
        };
        let hold = vm.hold();
        Ok(Session { runtime: Some(runtime), vm, _hold: hold, ctrl_c: Mutex::new(None) })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the session")
    }

    /// The VM, for introspection ([`Vm::actors`], [`Vm::info`], [`Vm::whereis`]).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Starts an actor running `func(args)` from `module`, with no parent; returns its pid. Fails
    /// with a message for people when there is no such function, the argument count is wrong, or
    /// the VM refuses (its actor limit).
    pub fn spawn(&self, module: &Arc<Module>, func: &str, args: Vec<Value>) -> Result<Pid, String> {
        let f = function(module, func, args.len())?;
        let _in_runtime = self.runtime().enter();
        let fun = Closure { func: f, env: vec![] };
        self.vm
            .spawn(module.clone(), &fun, args, SpawnOpts::default(), None)
            .map(|(pid, _)| pid)
            .map_err(|e| format!("cannot spawn `{func}`: {e}"))
    }

    /// Starts `func` (taking no arguments) of `module` as a temporary actor whose outcome
    /// [`Session::wait`] returns.
    pub fn eval(&self, module: Arc<Module>, func: &str) -> Result<Eval, String> {
        let f = function(&module, func, 0)?;
        let _in_runtime = self.runtime().enter();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fun = Closure { func: f, env: vec![] };
        let (pid, _) = self
            .vm
            .spawn_reporting(module, &fun, vec![], SpawnOpts::default(), None, Some(tx))
            .map_err(|e| format!("cannot start the snippet: {e}"))?;
        Ok(Eval { pid, done: rx })
    }

    /// From now on, a Ctrl-C (SIGINT) no longer ends the process: it is caught, and while
    /// [`Session::wait`] waits it stops the snippet instead; at any other time it is ignored.
    /// The handler stays installed for the life of the process. Fails if the signal cannot be
    /// caught.
    pub fn catch_ctrl_c(&self) -> Result<(), String> {
        let _in_runtime = self.runtime().enter();
        let listener = CtrlC::new().map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
        *lock(&self.ctrl_c) = Some(listener);
        Ok(())
    }

    /// Blocks until the snippet's actor ends. After [`Session::catch_ctrl_c`], a Ctrl-C during
    /// the wait stops the actor with a mode-2 interrupt carrying [`ctrl_c_exception`]; a Ctrl-C
    /// pressed before the wait began does not count.
    pub fn wait(&self, eval: Eval) -> EvalEnd {
        let Eval { pid, mut done } = eval;
        let vm = self.vm.clone();
        let lost = |r: Result<Outcome, _>| r.unwrap_or_else(|_| Outcome::Stopped(Value::atom("lost")));
        let mut guard = lock(&self.ctrl_c);
        let ctrl_c = guard.as_mut();
        self.runtime().block_on(async move {
            let Some(ctrl_c) = ctrl_c else { return EvalEnd::Done(lost((&mut done).await)) };
            ctrl_c.forget_earlier();
            tokio::select! {
                biased;
                r = &mut done => return EvalEnd::Done(lost(r)),
                () = ctrl_c.pressed() => {}
            }
            vm.signal(pid, Signal::Interrupt { exc: ctrl_c_exception(), mode: 2 });
            EvalEnd::Interrupted(lost(done.await))
        })
    }

    /// Delivers `msg` to `pid`; fails if there is no live actor with that pid.
    pub fn send(&self, pid: Pid, msg: Value) -> Result<(), String> {
        let cell = self.vm.lookup(pid).ok_or_else(|| no_actor(pid))?;
        self.vm.deliver(&cell, msg);
        Ok(())
    }

    /// Raises `exc` in `pid` with interrupt `mode` (0: only if it is waiting; 1: also if it is
    /// running or in a native call; 2: stop it now). Fails if there is no live actor with that
    /// pid or the mode is not 0, 1 or 2.
    pub fn interrupt(&self, pid: Pid, exc: Exception, mode: u8) -> Result<(), String> {
        if mode > 2 {
            return Err(format!("interrupt mode {mode} does not exist (0, 1 or 2)"));
        }
        self.alive(pid)?;
        self.vm.signal(pid, Signal::Interrupt { exc, mode });
        Ok(())
    }

    /// Ends `pid` untrappably with reason `:killed`; fails if there is no live actor with that
    /// pid.
    pub fn kill(&self, pid: Pid) -> Result<(), String> {
        self.alive(pid)?;
        self.vm.signal(pid, Signal::Kill(Value::Atom(vm_core::atoms::KILLED)));
        Ok(())
    }

    /// Waits up to `limit` for `pid` to be gone from the actor table; true if it is.
    pub fn wait_gone(&self, pid: Pid, limit: Duration) -> bool {
        let vm = self.vm.clone();
        self.runtime().block_on(async move {
            let start = Instant::now();
            while vm.lookup(pid).is_some() {
                if start.elapsed() >= limit {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            true
        })
    }

    fn alive(&self, pid: Pid) -> Result<(), String> {
        self.vm.lookup(pid).map(drop).ok_or_else(|| no_actor(pid))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Actors still running are abandoned, as `vm run` abandons them when `main` ends.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn no_actor(pid: Pid) -> String {
    format!("no live actor {pid}")
}

/// The index of `func` in `module`, checking that it takes `n` arguments.
fn function(module: &Module, func: &str, n: usize) -> Result<u32, String> {
    let f = module.func_index(func).ok_or_else(|| format!("no function named `{func}`"))?;
    let arity = usize::from(module.funcs[f as usize].arity);
    if arity != n {
        let takes = if arity == 1 { "1 argument".to_string() } else { format!("{arity} arguments") };
        return Err(format!("`{func}` takes {takes}, not {n}"));
    }
    Ok(f)
}

// ---- Tracing hooks, called by the runtime (see the module docs). ----

/// The span of a new actor, if a subscriber wants `DEBUG` spans of this crate.
#[inline]
pub(crate) fn actor_span(pid: Pid, module: &Module, func: u32) -> Option<tracing::Span> {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let func = module.funcs.get(func as usize).map_or("?", |f| f.name.as_str());
    // A root span: an actor is not part of the actor that spawned it, and nesting would make
    // every line of a long chain of spawns name all its ancestors.
    let span =
        tracing::debug_span!(parent: None, "actor", pid = %pid, func = %func, name = tracing::field::Empty);
    (!span.is_disabled()).then_some(span)
}

/// Spawns an actor's task, instrumented with its span when there is one.
pub(crate) fn spawn_actor(task: impl Future<Output = ()> + Send + 'static, span: Option<tracing::Span>) {
    match span {
        Some(span) => drop(tokio::spawn(task.instrument(span))),
        None => drop(tokio::spawn(task)),
    }
}

/// A value written in the literal syntax, formatted only when a subscriber records it.
pub(crate) struct Repr<'a>(pub &'a Value);

impl fmt::Display for Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.repr())
    }
}

/// Values separated by commas, in the literal syntax.
struct ReprList<'a>(&'a [Value]);

impl fmt::Display for ReprList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&v.repr())?;
        }
        Ok(())
    }
}

/// An effect described for people.
pub(crate) struct DescribeEffect<'a>(pub &'a Effect);

impl fmt::Display for DescribeEffect<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timeout = |f: &mut fmt::Formatter<'_>, t: &Option<u64>| match t {
            Some(ms) => write!(f, " (timeout {ms} ms)"),
            None => Ok(()),
        };
        match self.0 {
            Effect::Print(text) => write!(f, "print {}", Value::str(text.as_str()).repr()),
            Effect::Receive { pattern: None, timeout_ms } => {
                f.write_str("receive")?;
                timeout(f, timeout_ms)
            }
            Effect::Receive { pattern: Some(p), timeout_ms } => {
                write!(f, "receive matching {}", p.repr())?;
                timeout(f, timeout_ms)
            }
            Effect::Sleep { ms } => write!(f, "sleep {ms} ms"),
            Effect::Yield(None) => f.write_str("yield"),
            Effect::Yield(Some(p)) => write!(f, "yield to {p}"),
            Effect::Stop(reason) => write!(f, "stop with reason {}", reason.repr()),
            Effect::Select { cases, timeout_ms, .. } => {
                f.write_str("select [")?;
                for (i, c) in cases.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match c {
                        SelectCase::Send(h, v) => write!(f, "send {} to #chan<{}>", v.repr(), h.id())?,
                        SelectCase::Recv(h) => write!(f, "receive from #chan<{}>", h.id())?,
                        SelectCase::Message(p) => write!(f, "message matching {}", p.repr())?,
                        SelectCase::Readable(r) => write!(f, "input on {}", r.repr())?,
                        SelectCase::Accept(l) => write!(f, "connection on {}", l.repr())?,
                        // Cases added to the runtime later are still shown, if less nicely.
                        #[allow(unreachable_patterns)]
                        other => write!(f, "{other:?}")?,
                    }
                }
                f.write_str("]")?;
                timeout(f, timeout_ms)
            }
            Effect::Native { name, args } => write!(f, "native {}({})", name, ReprList(args)),
            // Effects added to the runtime later are still shown, if less nicely.
            #[allow(unreachable_patterns)]
            other => write!(f, "{other:?}"),
        }
    }
}

// The hooks below sit on the message path. Each is an inlined level check (one relaxed load
// of tracing's global maximum level and a compare) in front of an out-of-line, cold body, so
// that with tracing off they add a few instructions and no code bloat to the driver.

/// A message was delivered to `pid`'s mailbox.
#[inline(always)]
pub(crate) fn trace_deliver(pid: Pid, msg: &Value) {
    if tracing::level_enabled!(tracing::Level::TRACE) {
        trace_deliver_cold(pid, msg);
    }
}

#[cold]
#[inline(never)]
fn trace_deliver_cold(pid: Pid, msg: &Value) {
    tracing::trace!(target: TRACE_TARGET, pid = pid.0, "message in: {}", Repr(msg));
}

/// `pid` sent `msg` to `to`.
#[inline(always)]
pub(crate) fn trace_send(pid: Pid, to: Pid, msg: &Value) {
    if tracing::level_enabled!(tracing::Level::TRACE) {
        trace_send_cold(pid, to, msg);
    }
}

#[cold]
#[inline(never)]
fn trace_send_cold(pid: Pid, to: Pid, msg: &Value) {
    tracing::trace!(target: TRACE_TARGET, pid = pid.0, "send to {to}: {}", Repr(msg));
}

/// `pid` spawned `child`.
#[inline(always)]
pub(crate) fn trace_spawned(pid: Pid, child: Pid) {
    if tracing::level_enabled!(tracing::Level::TRACE) {
        trace_spawned_cold(pid, child);
    }
}

#[cold]
#[inline(never)]
fn trace_spawned_cold(pid: Pid, child: Pid) {
    tracing::trace!(target: TRACE_TARGET, pid = pid.0, "spawned {child}");
}

/// The actor of `cell` performs a registry, link, monitor or signal operation. A registration
/// of the actor itself that will succeed (the name is free and the actor has none) also names
/// its span (which exists only when `DEBUG` is enabled).
#[inline(always)]
pub(crate) fn trace_control(vm: &Vm, cell: &crate::vm::ActorCell, op: &ActorOp) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        trace_control_cold(vm, cell, op);
    }
}

#[cold]
#[inline(never)]
fn trace_control_cold(vm: &Vm, cell: &crate::vm::ActorCell, op: &ActorOp) {
    if let ActorOp::Register(name, who) = op
        && *who == cell.pid
    {
        let span = tracing::Span::current();
        if !span.is_disabled()
            && vm.whereis(*name).is_none()
            && cell.mailbox.with(|i| i.ext_ref().and_then(|e| e.name)).is_none()
        {
            span.record("name", tracing::field::display(Value::Atom(*name).repr()));
        }
    }
    tracing::trace!(target: TRACE_TARGET, pid = cell.pid.0, "{}", DescribeOp(op));
}

struct DescribeOp<'a>(&'a ActorOp);

impl fmt::Display for DescribeOp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let atom = |a: &Atom| Value::Atom(*a).repr();
        match self.0 {
            ActorOp::Register(name, pid) => write!(f, "register {} as {}", pid, atom(name)),
            ActorOp::Unregister(name) => write!(f, "unregister {}", atom(name)),
            ActorOp::Whereis(name) => write!(f, "whereis {}", atom(name)),
            ActorOp::Link(pid) => write!(f, "link {pid}"),
            ActorOp::Unlink(pid) => write!(f, "unlink {pid}"),
            ActorOp::Monitor(pid) => write!(f, "monitor {pid}"),
            ActorOp::Demonitor(r) => write!(f, "demonitor {r}"),
            ActorOp::TrapExit(on) => write!(f, "trap_exit {on}"),
            ActorOp::Exit(pid, reason) => write!(f, "exit signal to {pid} with reason {}", reason.repr()),
            ActorOp::Kill(pid) => write!(f, "kill {pid}"),
            ActorOp::Interrupt(pid, exc, mode) => {
                write!(f, "interrupt {pid} with {} (mode {mode})", exc.to_value().repr())
            }
        }
    }
}

/// The slice `pid` just ran ended with `step`.
#[inline(always)]
pub(crate) fn trace_step(pid: Pid, step: &Step) {
    if tracing::level_enabled!(tracing::Level::TRACE) && !matches!(step, Step::Yielded) {
        trace_step_cold(pid, step);
    }
}

#[cold]
#[inline(never)]
fn trace_step_cold(pid: Pid, step: &Step) {
    match step {
        Step::Yielded => {}
        Step::Blocked(effect) => {
            tracing::trace!(target: TRACE_TARGET, pid = pid.0, "effect: {}", DescribeEffect(effect))
        }
        Step::Exited(v) => tracing::trace!(target: TRACE_TARGET, pid = pid.0, "returned {}", Repr(v)),
        Step::Failed(fault) => {
            tracing::trace!(target: TRACE_TARGET, pid = pid.0, "raised {} (uncaught)", fault.exception)
        }
    }
}

/// `pid` is about to be stepped with `pending` to raise at its current instruction: the
/// runtime completed its effect with an exception (or an interrupt reached it).
#[inline(always)]
pub(crate) fn trace_raise(pid: Pid, pending: Option<&Exception>) {
    if let Some(e) = pending
        && tracing::level_enabled!(tracing::Level::DEBUG)
    {
        trace_raise_cold(pid, e);
    }
}

#[cold]
#[inline(never)]
fn trace_raise_cold(pid: Pid, e: &Exception) {
    {
        tracing::debug!(target: EVENT_TARGET, pid = pid.0, "exception {} raised at a blocked instruction", e);
    }
}

/// The step just run caught exceptions (`try`) if the actor's caught count moved past `before`.
#[inline(always)]
pub(crate) fn trace_caught(cell: &crate::vm::ActorCell, caught: Option<&vm_core::step::Caught>, before: u64) {
    if let Some(c) = caught
        && c.count != before
        && tracing::level_enabled!(tracing::Level::DEBUG)
    {
        trace_caught_cold(cell, c, before);
    }
}

#[cold]
#[inline(never)]
fn trace_caught_cold(cell: &crate::vm::ActorCell, c: &vm_core::step::Caught, before: u64) {
    if let Some((e, func, pc)) = &c.last {
        let at = cell.module.location(*func, *pc);
        let more = c.count - before - 1;
        if more == 0 {
            tracing::debug!(target: EVENT_TARGET, pid = cell.pid.0, "exception {e} raised at {at} and caught");
        } else {
            tracing::debug!(
                target: EVENT_TARGET, pid = cell.pid.0,
                "exception {e} raised at {at} and caught ({more} more caught before it in this slice)"
            );
        }
    }
}

/// The actor of `cell` ended with `reason`.
#[inline(always)]
pub(crate) fn trace_exit(cell: &crate::vm::ActorCell, reason: &crate::actor::ExitReason) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        trace_exit_cold(cell, reason);
    }
}

#[cold]
#[inline(never)]
fn trace_exit_cold(cell: &crate::vm::ActorCell, reason: &crate::actor::ExitReason) {
    if tracing::enabled!(target: EVENT_TARGET, tracing::Level::DEBUG) {
        let value = reason.value();
        match reason {
            crate::actor::ExitReason::Failed(fault) => {
                let at = cell.module.location(fault.func, fault.pc);
                tracing::debug!(target: EVENT_TARGET, pid = cell.pid.0, "exited with reason {} at {at}", Repr(&value))
            }
            _ => {
                tracing::debug!(target: EVENT_TARGET, pid = cell.pid.0, "exited with reason {}", Repr(&value))
            }
        }
    }
}

/// An actor's registered name for logs: `:name`, or `-` when it has none.
pub(crate) struct NameOf<'a>(pub &'a crate::vm::ActorCell);

impl fmt::Display for NameOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.mailbox.with(|i| i.ext_ref().and_then(|e| e.name)) {
            Some(name) => f.write_str(&Value::Atom(name).repr()),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Capture, assemble as module};

    fn session() -> (Session, Arc<Capture>) {
        let out = Arc::new(Capture::default());
        let opts = RunOptions { workers: std::num::NonZeroUsize::new(2), ..RunOptions::default() };
        (Session::new(&opts, out.clone()).unwrap(), out)
    }

    const SERVER: &str = "
.func serve 1
    recv r1
    print r1
    add r0, r0, r1
    jmp again
again:
    tcall serve, r0, 1
.end
.func add3 0
    int r0, 1
    int r1, 2
    add r0, r0, r1
    addi r0, r0, 0
    ret r0
.end
.func spin 0
    int r0, 0
loop:
    addi r0, r0, 1
    jmp loop
.end
.func boom 0
    const r0, :boom
    raise r0, r0
.end
";

    #[test]
    fn spawned_actors_take_messages_from_outside() {
        let (s, out) = session();
        let m = module(SERVER);
        let pid = s.spawn(&m, "serve", vec![Value::Int(0)]).unwrap();
        s.send(pid, Value::Int(5)).unwrap();
        s.send(pid, Value::Int(6)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(out.lines(), ["5", "6"]);
        let info = s.vm().info(pid).unwrap();
        assert_eq!(info.location.func, "serve");
        s.kill(pid).unwrap();
        assert!(s.wait_gone(pid, Duration::from_secs(10)));
        assert_eq!(s.send(pid, Value::Nil), Err(format!("no live actor {pid}")));
        assert_eq!(s.kill(pid), Err(format!("no live actor {pid}")));
    }

    #[test]
    fn info_lists_the_monitors_an_actor_holds_until_they_fire() {
        let (s, _) = session();
        let m = module(
            "
.func watch 1
    monitor r1, r0
    recv r2
    recv r2
    ret r2
.end
.func idle 0
    recv r0
    ret r0
.end
",
        );
        let target = s.spawn(&m, "idle", vec![]).unwrap();
        let watcher = s.spawn(&m, "watch", vec![Value::Pid(target)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let monitoring = |p| s.vm().info(p).map(|i| (i.monitoring, i.monitored_by));
        while monitoring(watcher).is_some_and(|(m, _)| m.is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(monitoring(watcher), Some((vec![target], vec![])));
        assert_eq!(monitoring(target), Some((vec![], vec![watcher])));
        // The target ends: the monitor fires and is no longer held.
        s.send(target, Value::Nil).unwrap();
        assert!(s.wait_gone(target, Duration::from_secs(10)));
        while monitoring(watcher).is_some_and(|(m, _)| !m.is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(monitoring(watcher), Some((vec![], vec![])));
    }

    #[test]
    fn spawning_checks_the_function_and_its_arity() {
        let (s, _) = session();
        let m = module(SERVER);
        assert_eq!(s.spawn(&m, "nope", vec![]), Err("no function named `nope`".into()));
        assert_eq!(s.spawn(&m, "serve", vec![]), Err("`serve` takes 1 argument, not 0".into()));
        assert_eq!(s.spawn(&m, "add3", vec![Value::Nil]), Err("`add3` takes 0 arguments, not 1".into()));
        assert!(s.eval(m.clone(), "serve").is_err());
    }

    #[test]
    fn eval_returns_the_value_or_the_failure() {
        let (s, _) = session();
        let m = module(SERVER);
        let e = s.eval(m.clone(), "add3").unwrap();
        assert_eq!(s.wait(e), EvalEnd::Done(Outcome::Exited(Value::Int(3))));
        let e = s.eval(m, "boom").unwrap();
        match s.wait(e) {
            EvalEnd::Done(Outcome::Failed { fault, location }) => {
                assert_eq!(fault.exception.kind, Atom::new("boom"));
                assert_eq!(location.func, "boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interrupts_reach_a_spinning_actor() {
        let (s, _) = session();
        let m = module(SERVER);
        let e = s.eval(m, "spin").unwrap();
        let pid = e.pid;
        assert!(s.interrupt(pid, ctrl_c_exception(), 3).is_err());
        s.interrupt(pid, Exception::new(Atom::new("stop"), "enough"), 1).unwrap();
        match s.wait(e) {
            EvalEnd::Done(Outcome::Failed { fault, .. }) => {
                assert_eq!(fault.exception.kind, Atom::new("stop"))
            }
            other => panic!("{other:?}"),
        }
        assert!(s.interrupt(Pid(9999), ctrl_c_exception(), 0).is_err());
    }

    #[test]
    fn effects_are_described_in_literal_syntax() {
        let e = Effect::Receive { pattern: Some(Value::atom("ok")), timeout_ms: Some(5) };
        assert_eq!(DescribeEffect(&e).to_string(), "receive matching :ok (timeout 5 ms)");
        let e = Effect::Print("a\"b".into());
        assert_eq!(DescribeEffect(&e).to_string(), "print \"a\\\"b\"");
        let e = Effect::Native { name: Atom::new("resolve"), args: vec![Value::str("x"), Value::Int(1)] };
        assert_eq!(DescribeEffect(&e).to_string(), "native resolve(\"x\", 1)");
        let op = ActorOp::Interrupt(Pid(3), Exception::new(Atom::new("x"), "y"), 1);
        assert_eq!(DescribeOp(&op).to_string(), "interrupt <3> with {:x, \"y\"} (mode 1)");
    }
}
