//! Register and frame helpers for the dispatch loop and `slow`.
//!
//! 1. **Nil above the running frame.** Every slot of the register stack above the running
//!    frame's registers holds nil. Entering a frame ([`enter`], [`enter_closure`]) therefore
//!    writes only the arguments; every way of leaving one ([`reset`] after a return,
//!    [`tail_args`]/[`take_tail_args`] for a tail call, [`unwind`] to a handler, [`ret_slow`]
//!    from the first frame) resets what it leaves to nil.
//! 2. **No drop glue on the hot path.** [`put_int`], [`store`], [`copy_value`], [`move_value`]
//!    and [`clear`] write without dropping when the old value owns no heap memory; the
//!    general cases run out of line (`*_slow`), so the loop holds no clone or drop temporaries.
//! 3. The stack only grows, out of line ([`grow`]), when a call goes deeper than ever before.
//! 4. [`unwind`] checks the handler's frame against the module and the stack, so state that did
//!    not come from verified code fails the actor instead of panicking.

use super::value_ops::type_err;
use crate::atom::atoms;
use crate::exception::Exception;
use crate::mem::{self, MemUse, Meter};
use crate::module::Module;
use crate::step::{Caught, Fault, Frame, Handler, Host, Rare};
use crate::value::{Closure, Value};
use std::sync::Arc;

/// Writes an int to a register that holds nil, a bool, an int, a float or an atom, and returns
/// true; returns false (writing nothing) for anything else, which the caller's slow path then
/// handles. One tag comparison covers the common cases.
#[inline(always)]
pub(super) fn put_int(slot: &mut Value, z: i64) -> bool {
    if is_small(slot) {
        // Forgetting a value that owns no heap memory leaks nothing.
        std::mem::forget(std::mem::replace(slot, Value::Int(z)));
        true
    } else {
        false
    }
}

/// Writes a value to a register, skipping the drop glue when the old value owns nothing.
#[inline(always)]
pub(super) fn store(slot: &mut Value, v: Value) {
    if owns_nothing(slot) {
        // Forgetting a value that owns no heap memory leaks nothing.
        std::mem::forget(std::mem::replace(slot, v));
    } else {
        *slot = v;
    }
}

/// True for values with no heap part: dropping them does nothing.
#[inline(always)]
pub(super) fn owns_nothing(v: &Value) -> bool {
    matches!(
        v,
        Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Atom(_) | Value::Pid(_)
    )
}

/// Transfers control to the innermost handler, or reports the exception as uncaught.
#[inline(never)]
pub(super) fn unwind(
    stack: &mut [Value],
    frames: &mut Vec<Frame>,
    handlers: &mut Vec<Handler>,
    rare: &mut Option<Box<Rare>>,
    m: &Module,
    e: Exception,
) -> Result<(), Fault> {
    let (func, pc) = frames.last().map_or((0, 0), |f| (f.func, f.pc));
    let Some(h) = handlers.pop() else {
        return Err(Fault { exception: e, func, pc });
    };
    let keep = h.frame as usize + 1;
    let frame = match frames.get(h.frame as usize) {
        Some(f) if keep <= frames.len() => *f,
        _ => return Err(Fault { exception: e, func, pc }),
    };
    let Some(f) = m.funcs.get(frame.func as usize) else {
        return Err(Fault { exception: e, func, pc });
    };
    // The frames being left are reset to nil, from the handler's frame's top to the running
    // frame's top (everything above that is nil already; see `ActorState`).
    let top = frame.base as usize + f.nregs as usize;
    let running_top = frames
        .last()
        .map_or(top, |r| r.base as usize + m.funcs.get(r.func as usize).map_or(0, |rf| rf.nregs as usize));
    frames.truncate(keep);
    if top > stack.len() {
        return Err(Fault { exception: e, func, pc });
    }
    let end = running_top.clamp(top, stack.len());
    reset(&mut stack[top..end]);
    stack[frame.base as usize + h.dst as usize] = e.to_value();
    let log = rare.get_or_insert_with(Default::default).caught.get_or_insert_with(Caught::default);
    log.count += 1;
    log.last = Some((e, func, pc));
    if let Some(last) = frames.last_mut() {
        last.pc = h.target;
    }
    Ok(())
}

/// Grows the register stack to `len` slots (rare: only when calls go deeper than ever before).
/// The growth counts as the actor's allocation (see `crate::mem`): a large one is shown to the
/// host first, and one the allocator cannot satisfy ends the actor with `{:limit, :memory}`
/// rather than aborting the process. `Err` is the reason to stop the actor with.
#[cold]
#[inline(never)]
pub(super) fn grow<H: Host + ?Sized>(
    stack: &mut Vec<Value>,
    len: usize,
    host: &mut H,
    meter: &mut Meter,
) -> Result<(), Value> {
    let add = len.saturating_sub(stack.len());
    let more = mem::growth(stack.len(), stack.capacity(), add, mem::SLOT);
    if more >= mem::BIG {
        host.memory(MemUse { live: None, since: meter.alloc(), more })?;
    }
    meter.add(more);
    if stack.try_reserve(add).is_err() {
        return Err(mem::limit_reason("memory"));
    }
    stack.resize(len, Value::Nil);
    Ok(())
}

/// Counts what the actor holds and reports it to the host (see `crate::mem`, rule 3); `Err` is
/// the reason to stop the actor with.
#[cold]
#[inline(never)]
pub(super) fn recount<H: Host + ?Sized>(
    stack: &[Value],
    frames: &[Frame],
    handlers: &[Handler],
    meter: &mut Meter,
    host: &mut H,
) -> Result<(), Value> {
    let live = mem::measure_parts(stack, frames, handlers);
    let max = host.memory(MemUse { live: Some(live), since: 0, more: 0 })?;
    meter.counted(live, max);
    Ok(())
}

/// Sets up a callee's arguments: `regs` is the caller's registers and beyond, `at` the callee's
/// base relative to them. The `n` registers from `args` are copied to the callee's first
/// registers; its other registers are nil already (see `ActorState`).
///
/// The windows are split apart first so that the copies need no per-register bounds checks.
/// (Verified code passes a window inside the caller's registers and no more arguments than the
/// callee has registers, so the copies always copy all `n`.)
#[inline(always)]
pub(super) fn enter(regs: &mut [Value], at: usize, args: usize, n: usize) {
    let (caller, callee) = regs.split_at_mut(at);
    if n == 1 {
        // One argument is the most common call; copying it directly skips the loop set-up.
        if let (Some(slot), Some(v)) = (callee.first_mut(), caller.get(args)) {
            copy_value(slot, v);
        }
    } else {
        for (slot, v) in callee.iter_mut().take(n).zip(&caller[args..]) {
            copy_value(slot, v);
        }
    }
}

/// [`enter`] for a closure: its captured values `env` go before the arguments.
#[inline(never)]
pub(super) fn enter_closure(regs: &mut [Value], at: usize, args: usize, n: usize, env: &[Value]) {
    let (caller, callee) = regs.split_at_mut(at);
    let (captured, rest) = callee.split_at_mut(env.len());
    for (slot, v) in captured.iter_mut().zip(env) {
        copy_value(slot, v);
    }
    for (slot, v) in rest.iter_mut().take(n).zip(&caller[args..]) {
        copy_value(slot, v);
    }
}

/// Moves the value of register `src` to register `dst`, leaving `src` nil (or, for an int, as it
/// was: an int owns nothing).
#[inline(always)]
pub(super) fn move_value(regs: &mut [Value], dst: usize, src: usize) {
    if let Value::Int(x) = regs[src]
        && put_int(&mut regs[dst], x)
    {
        return;
    }
    move_slow(regs, dst, src);
}

/// [`move_value`] for anything but an int landing on a scalar. Out of line, like the other slow
/// paths of value handling: inlined clone or drop glue would add temporaries to the interpreter
/// loop that the compiler then carries around it.
#[inline(never)]
pub(super) fn move_slow(regs: &mut [Value], dst: usize, src: usize) {
    let v = std::mem::take(&mut regs[src]);
    store(&mut regs[dst], v);
}

/// Copies a value into a register, with a fast path for ints (which need no reference count).
#[inline(always)]
pub(super) fn copy_value(slot: &mut Value, v: &Value) {
    // An int needs no clone and its destination (nil, for a call's arguments) no drop glue. The
    // compiler may still copy it as one 16-byte move, whose load a fresh tag-and-payload write
    // of the source cannot forward; hiding the payload from it (`black_box`) to force two stores
    // cost 4 instructions per fib call and gained no measurable time, so it is left alone.
    if let Value::Int(x) = *v
        && put_int(slot, x)
    {
        return;
    }
    copy_slow(slot, v);
}

/// [`copy_value`] for anything but an int landing on a scalar.
#[inline(never)]
pub(super) fn copy_slow(slot: &mut Value, v: &Value) {
    store(slot, v.clone());
}

/// Sets a register to nil.
#[inline(always)]
pub(super) fn clear(slot: &mut Value) {
    if is_small(slot) {
        // Forgetting a value that owns no heap memory leaks nothing.
        std::mem::forget(std::mem::replace(slot, Value::Nil));
    } else {
        clear_slow(slot);
    }
}

/// [`clear`] for a register that may own heap memory.
#[inline(never)]
pub(super) fn clear_slow(slot: &mut Value) {
    *slot = Value::Nil;
}

/// True for nil, bools, ints, floats and atoms: scalars that one tag comparison recognises. (Pids
/// are scalars too but take the slow paths, which handle every value.)
#[inline(always)]
pub(super) fn is_small(v: &Value) -> bool {
    matches!(v, Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Atom(_))
}

/// Resets the registers of a frame that is being left to nil, so that its heap values stop
/// keeping memory, messages or channels alive, and so that every slot above the running frame
/// holds nil (a call then writes only its arguments; see `ActorState`).
#[inline(always)]
pub(super) fn reset(window: &mut [Value]) {
    // Small frames are the common case: reset their few registers without a loop.
    match window {
        [] => {}
        [a] => clear(a),
        [a, b] => {
            clear(a);
            clear(b);
        }
        [a, b, c] => {
            clear(a);
            clear(b);
            clear(c);
        }
        [a, b, c, d] => {
            clear(a);
            clear(b);
            clear(c);
            clear(d);
        }
        window => {
            for slot in window {
                clear(slot);
            }
        }
    }
}

/// The unusual returns, out of line: from the actor's first function (returns the result: the
/// actor has exited) or from a frame that installed handlers (discarded first). Otherwise the
/// result moves to the caller's register, the frame is reset to nil and the caller runs next.
#[cold]
#[inline(never)]
pub(super) fn ret_slow(
    stack: &mut Vec<Value>,
    frames: &mut Vec<Frame>,
    handlers: &mut Vec<Handler>,
    nregs: u16,
    a: u16,
) -> Option<Value> {
    drop_frame_handlers(handlers, frames.len());
    let done = frames.pop().expect("a running actor has a frame");
    let base = done.base as usize;
    let window = &mut stack[base..base + nregs as usize];
    let v = std::mem::take(&mut window[a as usize]);
    let Some(caller) = frames.last() else {
        stack.clear();
        return Some(v);
    };
    reset(window);
    store(&mut stack[caller.base as usize + done.ret as usize], v);
    None
}

/// Moves the `n` arguments of a tail call from `args` to the bottom of the frame and resets
/// the rest of the frame's `nregs` registers to nil. Moving forward is safe: the source index is never
/// below the destination.
#[inline(never)]
pub(super) fn tail_args(regs: &mut [Value], args: usize, n: usize, nregs: usize) {
    for i in 0..n {
        let v = std::mem::take(&mut regs[args + i]);
        regs[i] = v;
    }
    reset(&mut regs[n..nregs]);
}

/// Takes the arguments of a tail call through a function value (its captured values, then the
/// `n` registers from `args`) and resets the frame's `nregs` registers to nil.
#[inline(never)]
pub(super) fn take_tail_args(
    regs: &mut [Value],
    env: &[Value],
    args: usize,
    n: usize,
    nregs: usize,
) -> Vec<Value> {
    let mut new: Vec<Value> = env.to_vec();
    for i in 0..n {
        new.push(std::mem::take(&mut regs[args + i]));
    }
    reset(&mut regs[..nregs]);
    new
}

/// Writes the arguments taken by [`take_tail_args`] to the bottom of the frame.
#[inline(never)]
pub(super) fn place_args(regs: &mut [Value], new: Vec<Value>) {
    for (slot, v) in regs.iter_mut().zip(new) {
        *slot = v;
    }
}

/// Discards the handlers installed by the running frame (it is returning or being replaced).
#[inline]
pub(super) fn drop_frame_handlers(handlers: &mut Vec<Handler>, frames: usize) {
    let depth = (frames - 1) as u32;
    while handlers.last().is_some_and(|h| h.frame >= depth) {
        handlers.pop();
    }
}

pub(super) fn stack_overflow(max: usize) -> Exception {
    Exception::new(atoms::STACK_OVERFLOW, format!("more than {max} nested calls"))
}

/// Checks a function value before `callv`/`tcallv`: it must be a function of this module whose
/// arity equals its captured values plus `n`.
#[inline(never)]
pub(super) fn closure_for_call(m: &Module, f: &Value, n: u16) -> Result<Arc<Closure>, Exception> {
    let Value::Fun(c) = f else {
        return Err(type_err("callv", "a function value", f));
    };
    let Some(callee) = m.funcs.get(c.func as usize) else {
        return Err(Exception::badarg(format!("function #{} is not in this module", c.func)));
    };
    if c.env.len() + n as usize != callee.arity as usize {
        return Err(Exception::new(
            atoms::BADARITY,
            format!(
                "{} takes {} arguments, called with {}",
                callee.name,
                callee.arity,
                c.env.len() + n as usize
            ),
        ));
    }
    Ok(c.clone())
}

#[inline(never)]
pub(super) fn window(regs: &[Value], start: usize, n: u16) -> Vec<Value> {
    regs[start..start + n as usize].to_vec()
}

/// Takes the value of register `src` for an instruction that produces a modified copy into `dst`.
/// When `dst == src` the register is emptied first so that an unshared collection is updated in
/// place (`append r1, r1, r2` in a loop is amortised O(1)); otherwise the value is cloned and the
/// update copies it.
#[inline(always)]
pub(super) fn take_or_clone(regs: &mut [Value], dst: u16, src: u16) -> Value {
    if dst == src { std::mem::take(&mut regs[src as usize]) } else { regs[src as usize].clone() }
}
