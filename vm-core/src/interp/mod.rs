//! The stepper: runs one actor for a budget of fuel.
//!
//! [`step`] implements the contract of [`crate::step`]: it never blocks and never awaits, and it
//! returns as soon as the fuel is spent, an instruction would wait (rewinding onto it), the
//! actor's first function returns, or an exception escapes every handler.
//!
//! **Safety of indexing.** The interpreter indexes registers, constants, functions and code
//! without re-checking operands, relying on the verifier's guarantees (see `verify`): operands in
//! bounds, windows in bounds, call counts equal to callee arities, every function ending in a
//! terminator. Indexing is still bounds-checked by Rust (no `unsafe`), so a bug or an unverified
//! module panics instead of corrupting memory; but verified code never panics. Values that did not
//! come from verified code (function values received in messages or restored from a snapshot, a
//! deserialised `ActorState`) are checked where they are used.
//!
//! **Frames.** Calls use the VM-managed frame stack in [`ActorState::frames`], never Rust
//! recursion. The register stack is not shrunk, and every slot above the running frame holds nil
//! (see [`ActorState`]). So a call only copies the arguments to the register stack after the
//! caller's window (its other registers are nil already) and pushes a [`Frame`]; the deepest call
//! yet first grows the stack out of line and then runs the call instruction again. A return moves
//! the result down and resets every register of the returning frame to nil (so its heap values
//! stop keeping channels or messages alive at once, and the invariant holds again). Every other
//! way a frame is left keeps the invariant too: a tail call resets the registers it does not pass
//! on, raising to a handler resets the frames it leaves, and an actor that exits clears its stack.
//! A caller's `pc` stays on its call instruction while the callee runs; the return continues after
//! it.
//!
//! **Fast and slow paths.** The interpreter loop (`run`) holds only the fast path of the common
//! instructions: ints, int results written over scalars, jumps, calls and returns. Every other
//! case runs out of line in full generality (`slow`), and so does every value operation that
//! would need reference counting or drop glue. The loop's own state is then small enough for the
//! compiler to keep in machine registers. (After an instruction run out of line the loop derives
//! the register window again from the frame stack rather than keeping it across the call, which
//! is what lets the compiler keep it in a register; the unusual returns run in `ret_slow`.)
//!
//! **Fuel** is charged one unit per call and per backward jump (and [`SPAWN_FUEL`] per spawn),
//! never per instruction, so straight line code pays nothing and every loop pays once per
//! iteration; each op's fuel column in the op list says which it is. A call with no fuel left
//! yields *before* it happens (the actor resumes by running the call); a backward jump with no fuel left
//! yields after it. `callv` checks its function value first, so calling a non-function raises
//! even with no fuel left.
//!
//! **Exceptions.** `try` pushes a [`Handler`](crate::step::Handler) naming its frame. Raising
//! pops the innermost handler, truncates the frame stack to its frame, stores `{kind, msg}` in its
//! register and jumps to its target. Returning from (or tail-calling out of) a frame discards the handlers it installed. An
//! exception with no handler leaves the frames in place (so the location is known) and ends the
//! step with [`Step::Failed`].
//!
//! **Layout.** This file holds [`step`], the dispatch loop (`run`) with the fast arms of the
//! common instructions (the message-passing arms, `send` and `recv`, sit together at the end of
//! the `match`; the loop's single exit for a blocking instruction is after it), and `Flow`, what
//! an out-of-line instruction asks the loop to do. The rest is split by concern:
//! 1. `slow`: every instruction run out of line (`slow`), in full generality.
//! 2. `frame`: register and frame helpers (writing registers without drop glue, entering and
//!    leaving frames, tail-call arguments, unwinding to a handler).
//! 3. `actor`: actor and channel operations (spawn, receive, channel sends and selects, pid
//!    operands, actor control).
//! 4. `value_ops`: operations on values (arithmetic off the int fast path, collections, text).
//! 5. `tests`: the stepper's unit tests; `columns_tests`: the op list's columns (terminator, may
//!    block, fuel) checked against what the stepper does with every op.
//!
//! Every file keeps the two invariants the loop relies on: **every register slot above the
//! running frame holds nil**, and **an instruction that blocks leaves the frame's `pc` on itself
//! with its operands still in registers** (rewind before suspend: it simply runs again on resume).

mod actor;
#[cfg(test)]
mod columns_tests;
mod frame;
mod slow;
#[cfg(test)]
mod tests;
mod value_ops;

use crate::exception::Exception;
use crate::mem::Meter;
use crate::module::{Function, Module};
use crate::ops::{Instr, SPAWN_FUEL};
use crate::step::{ActorState, Begun, Effect, Fault, Frame, Host, PROGRESS_EVERY, Received, Step};
use crate::value::Value;
use actor::ChanFlow;
use frame::{
    closure_for_call, drop_frame_handlers, enter, enter_closure, grow, move_value, place_args, put_int,
    recount, reset, ret_slow, stack_overflow, store, tail_args, take_tail_args, unwind,
};
use slow::{Cx, slow};

/// Runs `st` for at most `fuel` units (see the module docs).
#[inline]
pub fn step<H: Host + ?Sized>(st: &mut ActorState, m: &Module, host: &mut H, fuel: u32) -> Step {
    let (mut result, left) = run(st, m, host, fuel);
    st.reductions += u64::from(fuel - left);
    // A count that came due in the fast paths (a receive, a deep call) is made at the latest
    // when the slice ends (see `crate::mem`, rule 3). Here rather than where it came due: a
    // count site inside `run` is one more exit from its loop, and the register allocator then
    // kept the program counter in memory (fib 25: +4 %). The step is passed by reference, so
    // it is not copied out and back when no count is due.
    if st.meter.due() {
        count_at_slice_end(st, host, &mut result);
    }
    result
}

/// The count [`step`] makes when one came due during the slice: a step that would go on
/// (yielded or blocked) becomes a stop if the host refuses.
#[cold]
#[inline(never)]
fn count_at_slice_end<H: Host + ?Sized>(st: &mut ActorState, host: &mut H, result: &mut Step) {
    if matches!(result, Step::Yielded | Step::Blocked(_))
        && let Err(reason) = recount(&st.regs, &st.frames, &st.handlers, &mut st.meter, host)
    {
        *result = Step::Blocked(Effect::Stop(reason));
    }
}

/// The interpreter loop; returns the step and the fuel left.
///
/// The loop keeps the running frame in locals: `func` (its function), `pc` (the instruction
/// being run) and `regs` (the register stack from the frame's `r0` to the end). The
/// frame's base is read back from the frame stack when a call needs it.
///
/// Each instruction in the `match` is only its fast path: ints, in-place int results, calls and
/// returns. Anything else (another operand type, an int result that overflows or lands on a
/// register holding a heap value, every other instruction) leaves the `match` and runs in full
/// out of line in [`slow`]. So the arms are small and share one exit, and the compiler can keep
/// the loop state in machine registers; this is most of the interpreter's speed.
///
/// Never inlined, so that the loop compiles the same whatever the caller looks like.
#[inline(never)]
fn run<H: Host + ?Sized>(st: &mut ActorState, m: &Module, host: &mut H, mut fuel: u32) -> (Step, u32) {
    let max_frames = st.max_frames as usize;
    let ActorState { regs: stack, frames, handlers, rare, rng, meter, .. } = st;
    // What `slow` needs of the actor beyond the registers, built once (see `Cx`); the loop uses
    // the handlers and the meter through it too.
    let mut cx = Cx { m, handlers, rng, meter, depth: 0 };
    // An exception left by `resume` is raised at the blocked instruction before anything runs.
    if let Some(e) = rare.as_mut().and_then(|r| r.pending.take())
        && let Err(fault) = unwind(stack, frames, cx.handlers, rare, m, e)
    {
        return (Step::Failed(fault), fuel);
    }
    let Some(&cur) = frames.last() else {
        return (
            Step::Failed(Fault {
                exception: Exception::badarg("the actor has already exited"),
                func: 0,
                pc: 0,
            }),
            fuel,
        );
    };
    let Some(cur_fn) = m.funcs.get(cur.func as usize) else {
        let msg = format!("actor state names function #{} not in the module", cur.func);
        return (Step::Failed(Fault { exception: Exception::badarg(msg), func: cur.func, pc: cur.pc }), fuel);
    };
    let mut func: &Function = cur_fn;
    let mut pc = cur.pc as usize;
    if cur.base as usize + func.nregs as usize > stack.len() || pc >= func.code.len() {
        let msg = "actor state's registers or program counter do not match its frame";
        return (Step::Failed(Fault { exception: Exception::badarg(msg), func: cur.func, pc: cur.pc }), fuel);
    }
    // The running frame's registers, from its base to the end of the stack (see `ActorState`:
    // slots above the frame's `nregs` hold nil). A register access is one bounds check
    // and one load.
    let mut regs: &mut [Value] = &mut stack[cur.base as usize..];

    // Moves past the instruction that ran and runs the next one.
    macro_rules! next {
        () => {{
            pc += 1;
            continue;
        }};
    }
    // Stores the running frame's program counter: `save!()` stores the instruction being run (the
    // frame's `pc` names the blocked or raising instruction) and `save!(at)` an explicit position.
    macro_rules! save {
        () => {
            save!(pc)
        };
        ($at:expr) => {
            if let Some(f) = frames.last_mut() {
                f.pc = $at as u32;
            }
        };
    }
    // Raises at the running instruction: unwinds to the innermost handler and continues there
    // (`unwind` checked that the handler's frame is consistent with the module and the stack),
    // or ends the step with the fault.
    macro_rules! throw {
        ($e:expr) => {{
            let e: Exception = $e;
            save!();
            match unwind(stack, frames, cx.handlers, rare, m, e) {
                Ok(()) => {
                    let f = *frames.last().expect("unwind keeps the handler's frame");
                    func = &m.funcs[f.func as usize];
                    pc = f.pc as usize;
                    regs = &mut stack[f.base as usize..];
                    continue;
                }
                Err(fault) => return (Step::Failed(fault), fuel),
            }
        }};
    }
    macro_rules! reg {
        ($r:expr) => {
            regs[$r as usize]
        };
    }
    // Charges one unit of fuel; with none left, yields with the frame's `pc` at `$at`. Every
    // `PROGRESS_EVERY` units the host is told where the actor is (`Host::progress`), instead of
    // a store at every instruction. No fuel left is a multiple of `PROGRESS_EVERY` too, so one
    // test of the fuel's low bits covers both, and a charge with fuel to spare is one test.
    macro_rules! charge {
        ($at:expr) => {
            if fuel % PROGRESS_EVERY == 0 {
                if fuel == 0 {
                    save!($at);
                    return (Step::Yielded, fuel);
                }
                progress(host, frames, $at);
            }
            fuel -= 1;
        };
    }
    // Makes the count of the actor's memory that its allocations have made due (see
    // `crate::mem`, rule 3) after an instruction run out of line, ending the step if the host
    // refuses (the loop's only count site: the fast paths' counts wait for the slice's end,
    // see `step`); then
    // derives the register window again (it is not kept across the call, so that the loop need
    // not hold it in a register the call preserves, or spill it).
    macro_rules! recount {
        () => {
            if cx.meter.due()
                && let Err(reason) = recount(stack, frames, cx.handlers, cx.meter, host)
            {
                break Effect::Stop(reason);
            }
            let base = frames.last().map_or(0, |f| f.base as usize);
            regs = &mut stack[base..];
        };
    }
    // Does what an instruction run out of line asks for.
    macro_rules! flow {
        ($flow:expr) => {
            match $flow {
                Flow::Next => next!(),
                Flow::Jump(target) => jump!(target),
                Flow::Throw(e) => throw!(e),
                Flow::Block(effect) => break effect,
                Flow::Yield => {
                    save!();
                    return (Step::Yielded, fuel);
                }
            }
        };
    }
    // Does what `csend` or `crecv` asks for (`actor::ChanFlow`): a park leaves the loop with
    // the parked effect built here, as `recv`'s is.
    macro_rules! chan_flow {
        ($chan_flow:expr) => {
            match $chan_flow {
                ChanFlow::Next => next!(),
                ChanFlow::Parked => break Effect::Begun(Begun::Chan),
                ChanFlow::Other(f) => flow!(*f),
            }
        };
    }
    // Jumps to `$target`, charging fuel when the jump goes backward.
    macro_rules! jump {
        ($target:expr) => {{
            let t = $target as usize;
            if t <= pc {
                charge!(t);
            }
            pc = t;
            continue;
        }};
    }
    // The int fast path of a binary operation: with two int operands whose checked result exists
    // and an int in the destination, only the destination's payload is written.
    macro_rules! int_op {
        ($dst:expr, $x:expr, $y:expr, $checked:ident) => {
            if let (Value::Int(x), Value::Int(y)) = (&reg!($x), &reg!($y))
                && let Some(z) = x.$checked(*y)
                && put_int(&mut reg!($dst), z)
            {
                next!();
            }
        };
    }
    // The int fast path of a compare-and-branch.
    macro_rules! int_branch {
        ($a:expr, $b:expr, $target:expr, $op:tt) => {
            if let (Value::Int(x), Value::Int(y)) = (&reg!($a), &reg!($b)) {
                if *x $op *y {
                    jump!($target);
                }
                next!();
            }
        };
    }
    macro_rules! imm_branch {
        ($a:expr, $imm:expr, $target:expr, $op:tt) => {
            if let Value::Int(x) = reg!($a) {
                if x $op $imm as i64 {
                    jump!($target);
                }
                next!();
            }
        };
    }
    // Pushes a frame for `callee` after the running frame's registers, with `env` and then the
    // `n` registers from `args` as its arguments, and makes it the running frame. The callee's
    // other registers are already nil (every slot above the running frame is; see `ActorState`),
    // so only the arguments are written. The caller has charged the fuel and checked the depth.
    macro_rules! call {
        ($dst:expr, $f:expr, $callee:expr, $args:expr, $n:expr, $env:expr) => {{
            let callee: &Function = $callee;
            let nregs = func.nregs as usize;
            let Some(caller) = frames.last_mut() else { unreachable!("a running actor has a frame") };
            caller.pc = pc as u32;
            let base = caller.base + nregs as u32;
            frames.push(Frame { func: $f, pc: 0, base, ret: $dst });
            let env: &[Value] = $env;
            if env.is_empty() {
                enter(regs, nregs, $args as usize, $n as usize);
            } else {
                enter_closure(regs, nregs, $args as usize, $n as usize, env);
            }
            regs = &mut std::mem::take(&mut regs)[nregs..];
            func = callee;
            pc = 0;
            continue;
        }};
    }
    // Before a call: when the callee's registers would reach past the end of the register stack
    // (the deepest call yet), grows the stack out of line and runs the call instruction again,
    // so the call itself has no growing to do. Nothing has been charged or written yet.
    macro_rules! ensure_room {
        ($callee:expr) => {
            if regs.len() < func.nregs as usize + $callee.nregs as usize {
                let base = frames.last().map_or(0, |f| f.base as usize);
                if let Err(reason) =
                    grow(stack, base + func.nregs as usize + $callee.nregs as usize, host, cx.meter)
                {
                    break Effect::Stop(reason);
                }
                // (The growth's count, if due, waits for the slice's end: see `step`.)
                regs = &mut stack[base..];
                // (`pc` is still on the call.)
                continue;
            }
        };
    }

    let blocked = loop {
        // `pc` stays on the instruction while it runs: `next!()` moves past it.
        let instr = &func.code[pc];
        match *instr {
            Instr::Nop {} => next!(),
            Instr::Move { dst, src } => {
                if let Value::Int(x) = reg!(src)
                    && put_int(&mut reg!(dst), x)
                {
                    next!();
                }
            }
            Instr::Int { dst, imm } => {
                if put_int(&mut reg!(dst), imm as i64) {
                    next!();
                }
            }
            Instr::Add { dst, a, b } => int_op!(dst, a, b, checked_add),
            Instr::Sub { dst, a, b } => int_op!(dst, a, b, checked_sub),
            Instr::Mul { dst, a, b } => int_op!(dst, a, b, checked_mul),
            Instr::Div { dst, a, b } => int_op!(dst, a, b, checked_div),
            Instr::Rem { dst, a, b } => int_op!(dst, a, b, checked_rem),
            Instr::Addi { dst, a, imm } => {
                if let Value::Int(x) = reg!(a)
                    && let Some(z) = x.checked_add(imm as i64)
                    && put_int(&mut reg!(dst), z)
                {
                    next!();
                }
            }
            Instr::Remi { dst, a, imm } => {
                if let Value::Int(x) = reg!(a)
                    && let Some(z) = x.checked_rem(imm as i64)
                    && put_int(&mut reg!(dst), z)
                {
                    next!();
                }
            }

            Instr::Jmp { target } => jump!(target),
            Instr::Jt { a, target } => {
                if reg!(a).truthy() {
                    jump!(target);
                }
                next!();
            }
            Instr::Jf { a, target } => {
                if !reg!(a).truthy() {
                    jump!(target);
                }
                next!();
            }
            Instr::Jeq { a, b, target } => int_branch!(a, b, target, ==),
            Instr::Jne { a, b, target } => int_branch!(a, b, target, !=),
            Instr::Jlt { a, b, target } => int_branch!(a, b, target, <),
            Instr::Jle { a, b, target } => int_branch!(a, b, target, <=),
            Instr::Jgt { a, b, target } => int_branch!(a, b, target, >),
            Instr::Jge { a, b, target } => int_branch!(a, b, target, >=),
            Instr::Jeqi { a, imm, target } => imm_branch!(a, imm, target, ==),
            Instr::Jnei { a, imm, target } => imm_branch!(a, imm, target, !=),
            Instr::Jlti { a, imm, target } => imm_branch!(a, imm, target, <),
            Instr::Jlei { a, imm, target } => imm_branch!(a, imm, target, <=),
            Instr::Jgti { a, imm, target } => imm_branch!(a, imm, target, >),
            Instr::Jgei { a, imm, target } => imm_branch!(a, imm, target, >=),
            Instr::Incjle { a, limit, target } => {
                if let Value::Int(l) = reg!(limit)
                    && let Value::Int(x) = &mut reg!(a)
                    && let Some(z) = x.checked_add(1)
                {
                    *x = z;
                    if z <= l {
                        jump!(target);
                    }
                    next!();
                }
            }

            Instr::Call { dst, f, args, n } => {
                let callee = &m.funcs[f as usize];
                ensure_room!(callee);
                charge!(pc);
                if frames.len() >= max_frames {
                    throw!(stack_overflow(max_frames));
                }
                call!(dst, f, callee, args, n, &[]);
            }
            Instr::Callv { dst, f, args, n } => {
                // The function value is checked first: calling something that is not a function
                // (of the right arity) raises even with no fuel left or at the depth limit.
                let clo = match closure_for_call(m, &reg!(f), n) {
                    Ok(c) => c,
                    Err(e) => throw!(e),
                };
                let callee = &m.funcs[clo.func as usize];
                ensure_room!(callee);
                charge!(pc);
                if frames.len() >= max_frames {
                    throw!(stack_overflow(max_frames));
                }
                call!(dst, clo.func, callee, args, n, &clo.env);
            }
            Instr::Tcall { f, args, n } => {
                charge!(pc);
                drop_frame_handlers(cx.handlers, frames.len());
                let callee = &m.funcs[f as usize];
                tail_args(regs, args as usize, n as usize, func.nregs as usize);
                let cn = callee.nregs as usize;
                if regs.len() < cn {
                    let base = frames.last().map_or(0, |f| f.base as usize);
                    if let Err(reason) = grow(stack, base + cn, host, cx.meter) {
                        break Effect::Stop(reason);
                    }
                    regs = &mut stack[base..];
                }
                let Some(frame) = frames.last_mut() else { unreachable!("a running actor has a frame") };
                // As with `call`, the callee's registers other than its arguments are nil already:
                // `tail_args` reset the frame's, and every slot above the frame is nil.
                frame.func = f;
                frame.pc = 0;
                func = callee;
                pc = 0;
                continue;
            }
            Instr::Tcallv { f, args, n } => {
                charge!(pc);
                let clo = match closure_for_call(m, &reg!(f), n) {
                    Ok(c) => c,
                    Err(e) => throw!(e),
                };
                drop_frame_handlers(cx.handlers, frames.len());
                let callee = &m.funcs[clo.func as usize];
                let new = take_tail_args(regs, &clo.env, args as usize, n as usize, func.nregs as usize);
                let cn = callee.nregs as usize;
                if regs.len() < cn {
                    let base = frames.last().map_or(0, |f| f.base as usize);
                    if let Err(reason) = grow(stack, base + cn, host, cx.meter) {
                        break Effect::Stop(reason);
                    }
                    regs = &mut stack[base..];
                }
                let Some(frame) = frames.last_mut() else { unreachable!("a running actor has a frame") };
                place_args(regs, new);
                frame.func = clo.func;
                frame.pc = 0;
                func = callee;
                pc = 0;
                continue;
            }
            Instr::Ret { a } => {
                // The fast path: a frame with a caller and no handlers of its own. Everything else
                // (the actor's first function returning, handlers to discard) is `ret_slow`.
                let depth = frames.len();
                if depth >= 2 && cx.handlers.last().is_none_or(|h| (h.frame as usize) < depth - 1) {
                    let done = frames[depth - 1];
                    let caller = frames[depth - 2];
                    frames.truncate(depth - 1);
                    // The returning frame's registers, relative to the caller's base: the result
                    // moves down into the caller's register, then the frame is reset to nil.
                    let off = done.base.wrapping_sub(caller.base) as usize;
                    regs = &mut stack[caller.base as usize..];
                    move_value(regs, done.ret as usize, off + a as usize);
                    reset(&mut regs[off..off + func.nregs as usize]);
                    func = &m.funcs[caller.func as usize];
                    pc = caller.pc as usize + 1;
                    continue;
                }
                if let Some(v) = ret_slow(stack, frames, cx.handlers, func.nregs, a) {
                    return (Step::Exited(v), fuel);
                }
                let f = *frames.last().expect("ret_slow keeps the caller's frame");
                func = &m.funcs[f.func as usize];
                pc = f.pc as usize + 1;
                regs = &mut stack[f.base as usize..];
                continue;
            }
            // Message passing is what actors do most: a send to a pid and a plain receive call
            // the host directly (one small out-of-line call each, rather than `slow`'s general
            // operand and result passing); a receive that finds nothing blocks right here.
            Instr::Send { to, msg } => {
                if send_now(host, &reg!(to), &reg!(msg)) {
                    next!();
                }
            }
            Instr::Recv { dst } => match receive_now(host, &mut reg!(dst), cx.meter) {
                Took::Message => next!(),
                Took::Parked => break Effect::Begun(Begun::Receive),
                Took::Nothing => break Effect::Receive { pattern: None, timeout_ms: None },
            },
            // A channel program's `csend` and `crecv` take the same short way (a parked one runs
            // again when woken, so each wait passes here twice).
            Instr::Csend { ch, v } => chan_flow!(actor::csend(host, regs, ch, v)),
            Instr::Crecv { dst, ch, closed } => chan_flow!(actor::crecv(host, regs, dst, ch, closed)),
            // A selective receive is charged one unit of fuel per message it looks at, so that a
            // long scan yields like any other work: it gets the fuel left as its budget (a copy,
            // so that `fuel` itself stays in a machine register) and may yield (`Flow::Yield`).
            // A count its message makes due is made when the slice ends, as for `recv`.
            Instr::Recvp { dst, pat } => {
                let mut left = fuel;
                let flow = actor::selective(host, regs, dst, pat, None, 0, cx.meter, &mut left);
                fuel = left;
                flow!(flow);
            }
            Instr::Recvpt { dst, pat, ms, target } => {
                let mut left = fuel;
                let flow = actor::selective(host, regs, dst, pat, Some(ms), target, cx.meter, &mut left);
                fuel = left;
                flow!(flow);
            }
            // A select's mailbox cases (`{:msg, pattern}`) scan the queue as `recvp` does, and
            // are charged the same way.
            Instr::Select { dst, cases, ms, target } => {
                let mut left = fuel;
                let flow = actor::select_instr(host, regs, dst, cases, ms, target, &mut left);
                fuel = left;
                flow!(flow);
            }
            // Every other instruction is listed (rather than matched by `_`) so that the compiler
            // knows the jump table covers every opcode and needs no range check.
            Instr::Const { .. }
            | Instr::Nil { .. }
            | Instr::Typeof { .. }
            | Instr::Neg { .. }
            | Instr::Band { .. }
            | Instr::Bor { .. }
            | Instr::Bxor { .. }
            | Instr::Shl { .. }
            | Instr::Shr { .. }
            | Instr::Tofloat { .. }
            | Instr::Toint { .. }
            | Instr::Eq { .. }
            | Instr::Ne { .. }
            | Instr::Lt { .. }
            | Instr::Le { .. }
            | Instr::Gt { .. }
            | Instr::Ge { .. }
            | Instr::Cmp { .. }
            | Instr::Not { .. }
            | Instr::And { .. }
            | Instr::Or { .. }
            | Instr::Fun { .. }
            | Instr::Closure { .. }
            | Instr::Tuple { .. }
            | Instr::List { .. }
            | Instr::Tget { .. }
            | Instr::Index { .. }
            | Instr::Lset { .. }
            | Instr::Len { .. }
            | Instr::Append { .. }
            | Instr::Map { .. }
            | Instr::Mput { .. }
            | Instr::Mget { .. }
            | Instr::Mhas { .. }
            | Instr::Mdel { .. }
            | Instr::Mkeys { .. }
            | Instr::Concat { .. }
            | Instr::Slice { .. }
            | Instr::Find { .. }
            | Instr::Split { .. }
            | Instr::Trim { .. }
            | Instr::Upper { .. }
            | Instr::Lower { .. }
            | Instr::Byte { .. }
            | Instr::Tostr { .. }
            | Instr::Btos { .. }
            | Instr::Stob { .. }
            | Instr::Raise { .. }
            | Instr::Rethrow { .. }
            | Instr::Try { .. }
            | Instr::Endtry { .. }
            | Instr::Print { .. }
            | Instr::Self_ { .. }
            | Instr::Spawn { .. }
            | Instr::Spawnl { .. }
            | Instr::Spawnm { .. }
            | Instr::Spawnx { .. }
            | Instr::Recvt { .. }
            | Instr::Sleep { .. }
            | Instr::Now { .. }
            | Instr::Yield { .. }
            | Instr::Yieldto { .. }
            | Instr::Register { .. }
            | Instr::Unregister { .. }
            | Instr::Whereis { .. }
            | Instr::Link { .. }
            | Instr::Unlink { .. }
            | Instr::Monitor { .. }
            | Instr::Demonitor { .. }
            | Instr::Trapexit { .. }
            | Instr::Exit { .. }
            | Instr::Kill { .. }
            | Instr::Stop { .. }
            | Instr::Native { .. }
            | Instr::Interrupt { .. }
            | Instr::Chan { .. }
            | Instr::Ctrysend { .. }
            | Instr::Ctryrecv { .. }
            | Instr::Cclose { .. }
            | Instr::Addw { .. }
            | Instr::Subw { .. }
            | Instr::Mulw { .. }
            | Instr::Lsr { .. }
            | Instr::Jeqk { .. }
            | Instr::Jnek { .. }
            | Instr::Format { .. }
            | Instr::Rand { .. }
            | Instr::Randf { .. }
            | Instr::Randb { .. }
            | Instr::MakeRef { .. } => {}
        }
        // The spawn instructions' fuel column (see `SPAWN_FUEL`): charged here, before the
        // spawn; the next call or backward jump yields once the fuel is spent.
        if instr.charges_spawn_fuel() {
            fuel = fuel.saturating_sub(SPAWN_FUEL);
        }
        // The instruction's slow path, or an instruction with no fast path.
        cx.depth = (frames.len() - 1) as u32;
        let flow = slow(instr, regs, host, &mut cx);
        // What it allocated may make a count of the actor's memory due.
        recount!();
        flow!(flow);
    };
    // Every blocking instruction leaves the loop here, with the frame's `pc` on it.
    save!();
    (Step::Blocked(blocked), fuel)
}

/// `send` to a pid, for `run`'s fast path (out of line, so the loop stays small). False when
/// nothing was sent (not a pid, or the host refused): `slow` then runs the instruction in full.
#[inline(never)]
fn send_now<H: Host + ?Sized>(host: &mut H, to: &Value, msg: &Value) -> bool {
    match to {
        Value::Pid(p) => host.send(*p, msg.clone()).is_ok(),
        _ => false,
    }
}

/// Tells the host where the running frame is (see `charge!`); out of line, as it is rare.
#[cold]
#[inline(never)]
fn progress<H: Host + ?Sized>(host: &mut H, frames: &[Frame], pc: usize) {
    if let Some(f) = frames.last() {
        host.progress(f.func, pc as u32);
    }
}

/// What a plain `recv`'s attempt did ([`Received`] without the message, which is in `dst`).
enum Took {
    /// The message is in `dst`.
    Message,
    /// None; the host parked the actor (block with [`Begun::Receive`]).
    Parked,
    /// None; wait the ordinary way (block with [`Effect::Receive`]).
    Nothing,
}

/// A plain `recv`'s attempt, for `run`'s fast path: takes the oldest message into `dst`, or
/// else the actor waits; the host may have begun that wait already (see
/// [`Host::try_receive_or_park`]).
#[inline(never)]
fn receive_now<H: Host + ?Sized>(host: &mut H, dst: &mut Value, meter: &mut Meter) -> Took {
    match host.try_receive_or_park(None) {
        Received::Message(msg) => {
            store(dst, msg);
            // Sized where it now lies: a scalar is one test of the tag in memory. A count this
            // makes due is made when the slice ends (`step`).
            meter.add(crate::mem::message_size(dst));
            Took::Message
        }
        Received::Parked => Took::Parked,
        Received::Empty => Took::Nothing,
    }
}

/// What an instruction run out of line asks the interpreter loop to do next.
enum Flow {
    /// Continue with the next instruction.
    Next,
    /// Continue at this instruction index (charging fuel if it is a backward jump).
    Jump(u32),
    /// Raise this exception at the instruction.
    Throw(Exception),
    /// Suspend on this effect, leaving the program counter on the instruction.
    Block(Effect),
    /// Yield, leaving the program counter on the instruction: it runs again in the next slice
    /// (a selective receive whose scan spent the fuel).
    Yield,
}
