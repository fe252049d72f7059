//! The tracing the runtime emits about each actor.
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

use crate::cell::ActorCell;
use crate::exit::ExitReason;
use std::fmt;
use vm_core::{ActorOp, Atom, Begun, Effect, Exception, Module, NativeId, Pid, SelectCase, Step, Value};

/// The target of per-actor activity records (`TRACE` level); see the module docs.
pub const TRACE_TARGET: &str = "vm_sched::trace";

/// The target of exit and exception records (`DEBUG` level); see the module docs.
pub const EVENT_TARGET: &str = "vm_sched::events";

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

/// A value written in the literal syntax, formatted only when a subscriber records it.
pub(crate) struct Repr<'a>(pub &'a Value);

impl fmt::Display for Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A log line shows a bounded excerpt of a value, however large the value is.
        self.0.repr_excerpt(vm_core::value::EXCERPT_BYTES).fmt(f)
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
            v.repr_excerpt(vm_core::value::EXCERPT_BYTES).fmt(f)?;
        }
        Ok(())
    }
}

/// A native's name, from its identity.
struct NativeName(NativeId);

impl fmt::Display for NativeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match vm_io::natives::get(self.0) {
            Some(n) => f.write_str(n.name),
            None => write!(f, "#{}", self.0.0),
        }
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
            Effect::Native { id, args } => write!(f, "native {}({})", NativeName(*id), ReprList(args)),
            Effect::Begun(Begun::Native(id)) => write!(f, "native {} (I/O in flight)", NativeName(*id)),
            Effect::Begun(Begun::Receive) => f.write_str("receive (parked)"),
            Effect::Begun(Begun::Chan) => f.write_str("channel send or receive (parked)"),
            Effect::Begun(Begun::Send) => f.write_str("send (the receiver's node is far behind)"),
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
/// of the actor itself that will succeed (`name_free` says the name is not taken, and the actor
/// has none) also names its span (which exists only when `DEBUG` is enabled).
#[inline(always)]
pub(crate) fn trace_control(cell: &ActorCell, op: &ActorOp, name_free: impl FnOnce(Atom) -> bool) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        trace_control_cold(cell, op, name_free);
    }
}

#[cold]
#[inline(never)]
fn trace_control_cold(cell: &ActorCell, op: &ActorOp, name_free: impl FnOnce(Atom) -> bool) {
    if let ActorOp::Register(name, who) = op
        && *who == cell.pid
    {
        let span = tracing::Span::current();
        if !span.is_disabled()
            && name_free(*name)
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
            ActorOp::MakeRef => write!(f, "make_ref"),
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
pub(crate) fn trace_caught(cell: &ActorCell, caught: Option<&vm_core::step::Caught>, before: u64) {
    if let Some(c) = caught
        && c.count != before
        && tracing::level_enabled!(tracing::Level::DEBUG)
    {
        trace_caught_cold(cell, c, before);
    }
}

#[cold]
#[inline(never)]
fn trace_caught_cold(cell: &ActorCell, c: &vm_core::step::Caught, before: u64) {
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
pub(crate) fn trace_exit(cell: &ActorCell, reason: &ExitReason) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        trace_exit_cold(cell, reason);
    }
}

#[cold]
#[inline(never)]
fn trace_exit_cold(cell: &ActorCell, reason: &ExitReason) {
    if tracing::enabled!(target: EVENT_TARGET, tracing::Level::DEBUG) {
        let value = reason.value();
        match reason {
            ExitReason::Failed(fault) => {
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
pub(crate) struct NameOf<'a>(pub &'a ActorCell);

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

    #[test]
    fn effects_are_described_in_literal_syntax() {
        let e = Effect::Receive { pattern: Some(Value::atom("ok")), timeout_ms: Some(5) };
        assert_eq!(DescribeEffect(&e).to_string(), "receive matching :ok (timeout 5 ms)");
        let e = Effect::Print("a\"b".into());
        assert_eq!(DescribeEffect(&e).to_string(), "print \"a\\\"b\"");
        let (resolve, _) = vm_io::natives::find(Atom::new("resolve")).unwrap();
        let e = Effect::Native { id: resolve, args: vec![Value::str("x"), Value::Int(1)] };
        assert_eq!(DescribeEffect(&e).to_string(), "native resolve(\"x\", 1)");
        let (read, _) = vm_io::natives::find(Atom::new("tcp_read")).unwrap();
        let e = Effect::Begun(Begun::Native(read));
        assert_eq!(DescribeEffect(&e).to_string(), "native tcp_read (I/O in flight)");
        assert_eq!(DescribeEffect(&Effect::Begun(Begun::Receive)).to_string(), "receive (parked)");
        let op = ActorOp::Interrupt(Pid(3), Exception::new(Atom::new("x"), "y"), 1);
        assert_eq!(DescribeOp(&op).to_string(), "interrupt <3> with {:x, \"y\"} (mode 1)");
    }
}
