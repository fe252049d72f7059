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
//! **Fuel** is charged one unit per call and per backward jump (and [`SPAWN_FUEL`] per spawn), never per instruction, so straight
//! line code pays nothing and every loop pays once per iteration. A call with no fuel left yields
//! *before* it happens (the actor resumes by running the call); a backward jump with no fuel left
//! yields after it. `callv` checks its function value first, so calling a non-function raises
//! even with no fuel left.
//!
//! **Exceptions.** `try` pushes a [`Handler`] naming its frame. Raising pops the innermost handler,
//! truncates the frame stack to its frame, stores `{kind, msg}` in its register and jumps to its
//! target. Returning from (or tail-calling out of) a frame discards the handlers it installed. An
//! exception with no handler leaves the frames in place (so the location is known) and ends the
//! step with [`Step::Failed`].

use crate::atom::Atom;
use crate::atom::atoms;
use crate::exception::Exception;
use crate::module::{Function, Module};
use crate::ops::Instr;
use crate::step::{
    ActorOp, ActorState, Caught, Effect, Fault, Fired, Frame, Handler, Host, Resume, SelectCase, SelectShape,
    SpawnOpts, Step,
};
use crate::value::{Closure, Pid, Value};
use std::sync::Arc;

/// Runs `st` for at most `fuel` units (see the module docs).
pub fn step<H: Host + ?Sized>(st: &mut ActorState, m: &Module, host: &mut H, fuel: u32) -> Step {
    let (result, left) = run(st, m, host, fuel);
    st.reductions += u64::from(fuel - left);
    result
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
    let ActorState { regs: stack, frames, handlers, pending, caught, .. } = st;
    // An exception left by `resume` is raised at the blocked instruction before anything runs.
    if let Some(e) = pending.take()
        && let Err(fault) = unwind(stack, frames, handlers, caught, m, *e)
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
            match unwind(stack, frames, handlers, caught, m, e) {
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
    // Charges one unit of fuel; with none left, yields with the frame's `pc` at `$at`.
    macro_rules! charge {
        ($at:expr) => {
            if fuel == 0 {
                save!($at);
                return (Step::Yielded, fuel);
            }
            fuel -= 1;
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
                grow(stack, base + func.nregs as usize + $callee.nregs as usize);
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
                drop_frame_handlers(handlers, frames.len());
                let callee = &m.funcs[f as usize];
                tail_args(regs, args as usize, n as usize, func.nregs as usize);
                let Some(frame) = frames.last_mut() else { unreachable!("a running actor has a frame") };
                let cn = callee.nregs as usize;
                if regs.len() < cn {
                    let base = frame.base as usize;
                    grow(stack, base + cn);
                    regs = &mut stack[base..];
                }
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
                drop_frame_handlers(handlers, frames.len());
                let callee = &m.funcs[clo.func as usize];
                let new = take_tail_args(regs, &clo.env, args as usize, n as usize, func.nregs as usize);
                let Some(frame) = frames.last_mut() else { unreachable!("a running actor has a frame") };
                let cn = callee.nregs as usize;
                if regs.len() < cn {
                    let base = frame.base as usize;
                    grow(stack, base + cn);
                    regs = &mut stack[base..];
                }
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
                if depth >= 2 && handlers.last().is_none_or(|h| (h.frame as usize) < depth - 1) {
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
                if let Some(v) = ret_slow(stack, frames, handlers, func.nregs, a) {
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
            Instr::Recv { dst } => {
                if receive_now(host, &mut reg!(dst)) {
                    next!();
                }
                break Effect::Receive { pattern: None, timeout_ms: None };
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
            | Instr::Recvp { .. }
            | Instr::Recvpt { .. }
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
            | Instr::Csend { .. }
            | Instr::Crecv { .. }
            | Instr::Ctrysend { .. }
            | Instr::Ctryrecv { .. }
            | Instr::Cclose { .. }
            | Instr::Select { .. } => {}
        }
        // Starting an actor costs far more than a bytecode instruction (a task, a registry
        // entry), so it is charged like many calls: a spawning loop's slices stay as short as a
        // computing loop's. The next call or backward jump yields once the fuel is spent.
        if matches!(
            instr,
            Instr::Spawn { .. } | Instr::Spawnl { .. } | Instr::Spawnm { .. } | Instr::Spawnx { .. }
        ) {
            fuel = fuel.saturating_sub(SPAWN_FUEL);
        }
        // The instruction's slow path, or an instruction with no fast path.
        let flow = slow(*instr, regs, m, host, handlers, (frames.len() - 1) as u32);
        // The register window is derived again rather than kept across the call, so that the
        // loop need not hold it in a register the call preserves (or spill it).
        let base = frames.last().map_or(0, |f| f.base as usize);
        regs = &mut stack[base..];
        match flow {
            Flow::Next => next!(),
            Flow::Jump(target) => jump!(target),
            Flow::Throw(e) => throw!(e),
            Flow::Block(effect) => break effect,
        }
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

/// A plain `recv`'s attempt, for `run`'s fast path: takes the oldest message into `dst`, or
/// else (false) the actor waits; the host may have parked it already (see
/// [`Host::try_receive_or_park`]).
#[inline(never)]
fn receive_now<H: Host + ?Sized>(host: &mut H, dst: &mut Value) -> bool {
    match host.try_receive_or_park(None) {
        Some(msg) => {
            store(dst, msg);
            true
        }
        None => false,
    }
}

/// Fuel charged for starting an actor (see `run`).
pub const SPAWN_FUEL: u32 = 100;

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
}

/// Runs one instruction in full generality, out of line: the instructions with no fast path in
/// [`run`] (data structures, text, exceptions, actor operations) and the slow paths of those that
/// have one (other operand types, errors, a heap value in the destination). Keeping them out of
/// `run` keeps the interpreter loop small enough for the compiler to hold its state in registers.
#[inline(never)]
fn slow<H: Host + ?Sized>(
    instr: Instr,
    regs: &mut [Value],
    m: &Module,
    host: &mut H,
    handlers: &mut Vec<Handler>,
    depth: u32,
) -> Flow {
    let consts = &m.consts;
    macro_rules! reg {
        ($r:expr) => {
            regs[$r as usize]
        };
    }
    macro_rules! put {
        ($dst:expr, $v:expr) => {{
            let v: Result<Value, Exception> = $v;
            match v {
                Ok(v) => {
                    store(&mut reg!($dst), v);
                    Flow::Next
                }
                Err(e) => Flow::Throw(e),
            }
        }};
    }
    macro_rules! set {
        ($dst:expr, $v:expr) => {{
            let v: Value = $v;
            store(&mut reg!($dst), v);
            Flow::Next
        }};
    }
    macro_rules! branch {
        ($cond:expr, $target:expr) => {
            if $cond { Flow::Jump($target) } else { Flow::Next }
        };
    }
    let imm = |i: i32| Value::Int(i as i64);
    match instr {
        Instr::Move { dst, src } => set!(dst, reg!(src).clone()),
        Instr::Const { dst, k } => set!(dst, consts[k as usize].clone()),
        Instr::Int { dst, imm } => set!(dst, Value::Int(imm as i64)),
        Instr::Nil { dst } => set!(dst, Value::Nil),
        Instr::Typeof { dst, a } => set!(dst, Value::Atom(reg!(a).type_atom())),

        Instr::Add { dst, a, b } => put!(dst, arith(Arith::Add, &reg!(a), &reg!(b))),
        Instr::Sub { dst, a, b } => put!(dst, arith(Arith::Sub, &reg!(a), &reg!(b))),
        Instr::Mul { dst, a, b } => put!(dst, arith(Arith::Mul, &reg!(a), &reg!(b))),
        Instr::Div { dst, a, b } => put!(dst, arith(Arith::Div, &reg!(a), &reg!(b))),
        Instr::Rem { dst, a, b } => put!(dst, arith(Arith::Rem, &reg!(a), &reg!(b))),
        Instr::Addi { dst, a, imm: i } => put!(dst, arith(Arith::Add, &reg!(a), &imm(i))),
        Instr::Remi { dst, a, imm: i } => put!(dst, arith(Arith::Rem, &reg!(a), &imm(i))),
        Instr::Neg { dst, a } => {
            let v = match &reg!(a) {
                Value::Int(x) => x
                    .checked_neg()
                    .map(Value::Int)
                    .ok_or_else(|| Exception::new(atoms::OVERFLOW, "neg overflows")),
                Value::Float(x) => Ok(Value::Float(-x)),
                x => Err(type_err("neg", "a number", x)),
            };
            put!(dst, v)
        }
        Instr::Band { dst, a, b } => put!(dst, bitop("band", &reg!(a), &reg!(b), |x, y| Ok(x & y))),
        Instr::Bor { dst, a, b } => put!(dst, bitop("bor", &reg!(a), &reg!(b), |x, y| Ok(x | y))),
        Instr::Bxor { dst, a, b } => put!(dst, bitop("bxor", &reg!(a), &reg!(b), |x, y| Ok(x ^ y))),
        Instr::Shl { dst, a, b } => {
            put!(dst, bitop("shl", &reg!(a), &reg!(b), |x, y| shift_amount(y).map(|s| x.wrapping_shl(s))))
        }
        Instr::Shr { dst, a, b } => {
            put!(dst, bitop("shr", &reg!(a), &reg!(b), |x, y| shift_amount(y).map(|s| x >> s)))
        }
        Instr::Tofloat { dst, a } => put!(dst, to_float(&reg!(a))),
        Instr::Toint { dst, a } => put!(dst, to_int(&reg!(a))),

        Instr::Eq { dst, a, b } => set!(dst, Value::Bool(reg!(a) == reg!(b))),
        Instr::Ne { dst, a, b } => set!(dst, Value::Bool(reg!(a) != reg!(b))),
        Instr::Lt { dst, a, b } => set!(dst, Value::Bool(reg!(a) < reg!(b))),
        Instr::Le { dst, a, b } => set!(dst, Value::Bool(reg!(a) <= reg!(b))),
        Instr::Gt { dst, a, b } => set!(dst, Value::Bool(reg!(a) > reg!(b))),
        Instr::Ge { dst, a, b } => set!(dst, Value::Bool(reg!(a) >= reg!(b))),
        Instr::Cmp { dst, a, b } => set!(dst, Value::Int(reg!(a).cmp(&reg!(b)) as i64)),
        Instr::Not { dst, a } => set!(dst, Value::Bool(!reg!(a).truthy())),
        Instr::And { dst, a, b } => set!(dst, Value::Bool(reg!(a).truthy() && reg!(b).truthy())),
        Instr::Or { dst, a, b } => set!(dst, Value::Bool(reg!(a).truthy() || reg!(b).truthy())),

        Instr::Jeq { a, b, target } => branch!(reg!(a) == reg!(b), target),
        Instr::Jne { a, b, target } => branch!(reg!(a) != reg!(b), target),
        Instr::Jlt { a, b, target } => branch!(reg!(a) < reg!(b), target),
        Instr::Jle { a, b, target } => branch!(reg!(a) <= reg!(b), target),
        Instr::Jgt { a, b, target } => branch!(reg!(a) > reg!(b), target),
        Instr::Jge { a, b, target } => branch!(reg!(a) >= reg!(b), target),
        Instr::Jeqi { a, imm, target } => {
            branch!(matches!(reg!(a), Value::Int(x) if x == imm as i64), target)
        }
        Instr::Jnei { a, imm, target } => {
            branch!(!matches!(reg!(a), Value::Int(x) if x == imm as i64), target)
        }
        Instr::Jlti { a, imm: i, target } => branch!(reg!(a) < imm(i), target),
        Instr::Jlei { a, imm: i, target } => branch!(reg!(a) <= imm(i), target),
        Instr::Jgti { a, imm: i, target } => branch!(reg!(a) > imm(i), target),
        Instr::Jgei { a, imm: i, target } => branch!(reg!(a) >= imm(i), target),
        Instr::Tget { dst, t, i } => put!(dst, element(&reg!(t), i as i64, false)),
        Instr::Incjle { a, limit, target } => match arith(Arith::Add, &reg!(a), &Value::Int(1)) {
            Ok(v) => {
                store(&mut reg!(a), v);
                branch!(reg!(a) <= reg!(limit), target)
            }
            Err(e) => Flow::Throw(e),
        },

        Instr::Fun { dst, f } => {
            let v = Value::Fun(Arc::new(Closure { func: f, env: Vec::new() }));
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Closure { dst, f, env, n } => {
            let env = window(regs, env as usize, n);
            let v = Value::Fun(Arc::new(Closure { func: f, env }));
            store(&mut reg!(dst), v);
            Flow::Next
        }

        Instr::Tuple { dst, items, n } => {
            let v = Value::tuple(window(regs, items as usize, n));
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::List { dst, items, n } => {
            let v = Value::list(window(regs, items as usize, n));
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Index { dst, c, i } => {
            let v = match &reg!(i) {
                Value::Int(i) => element(&reg!(c), *i, true),
                x => Err(type_err("index", "an int index", x)),
            };
            put!(dst, v)
        }
        Instr::Lset { dst, c, i, v } => {
            let item = reg!(v).clone();
            let idx = reg!(i).clone();
            let coll = take_or_clone(regs, dst, c);
            put!(dst, set_element(coll, &idx, item))
        }
        Instr::Len { dst, a } => put!(dst, length(&reg!(a))),
        Instr::Append { dst, l, v } => {
            let item = reg!(v).clone();
            let list = take_or_clone(regs, dst, l);
            let r = match list {
                Value::List(mut items) => {
                    Arc::make_mut(&mut items).push(item);
                    Ok(Value::List(items))
                }
                x => Err(type_err("append", "a list", &x)),
            };
            put!(dst, r)
        }
        Instr::Map { dst } => {
            let v = Value::Map(Arc::default());
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Mput { dst, m: mr, k, v } => {
            let key = reg!(k).clone();
            let val = reg!(v).clone();
            let map = take_or_clone(regs, dst, mr);
            let r = match map {
                Value::Map(mut map) => {
                    Arc::make_mut(&mut map).insert(key, val);
                    Ok(Value::Map(map))
                }
                x => Err(type_err("mput", "a map", &x)),
            };
            put!(dst, r)
        }
        Instr::Mget { dst, m: mr, k } => {
            let r = match &reg!(mr) {
                Value::Map(map) => Ok(map.get(&reg!(k)).cloned().unwrap_or_default()),
                x => Err(type_err("mget", "a map", x)),
            };
            put!(dst, r)
        }
        Instr::Mhas { dst, m: mr, k } => {
            let r = match &reg!(mr) {
                Value::Map(map) => Ok(Value::Bool(map.contains_key(&reg!(k)))),
                x => Err(type_err("mhas", "a map", x)),
            };
            put!(dst, r)
        }
        Instr::Mdel { dst, m: mr, k } => {
            let key = reg!(k).clone();
            let map = take_or_clone(regs, dst, mr);
            let r = match map {
                Value::Map(mut map) => {
                    if map.contains_key(&key) {
                        Arc::make_mut(&mut map).remove(&key);
                    }
                    Ok(Value::Map(map))
                }
                x => Err(type_err("mdel", "a map", &x)),
            };
            put!(dst, r)
        }
        Instr::Mkeys { dst, m: mr } => {
            let r = match &reg!(mr) {
                Value::Map(map) => Ok(Value::list(map.keys().cloned().collect())),
                x => Err(type_err("mkeys", "a map", x)),
            };
            put!(dst, r)
        }

        Instr::Concat { dst, a, b } => {
            let right = reg!(b).clone();
            let left = take_or_clone(regs, dst, a);
            put!(dst, concat(left, &right))
        }
        Instr::Slice { dst, s, from, to } => put!(dst, slice(&reg!(s), &reg!(from), &reg!(to))),
        Instr::Find { dst, hay, needle } => put!(dst, find(&reg!(hay), &reg!(needle))),
        Instr::Split { dst, s, sep } => put!(dst, split(&reg!(s), &reg!(sep))),
        Instr::Trim { dst, s } => put!(dst, map_text("trim", &reg!(s), |t| t.trim_ascii().to_vec())),
        Instr::Upper { dst, s } => put!(dst, map_text("upper", &reg!(s), |t| t.to_ascii_uppercase())),
        Instr::Lower { dst, s } => put!(dst, map_text("lower", &reg!(s), |t| t.to_ascii_lowercase())),
        Instr::Byte { dst, s, i } => put!(dst, byte_at(&reg!(s), &reg!(i))),
        Instr::Tostr { dst, a } => {
            let v = match &reg!(a) {
                s @ Value::Str(_) => s.clone(),
                x => Value::str(x.to_string()),
            };
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Btos { dst, b } => {
            let r = match &reg!(b) {
                Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
                    Ok(s) => Ok(Value::str(s)),
                    Err(e) => Err(Exception::badarg(format!("btos: invalid UTF-8: {e}"))),
                },
                s @ Value::Str(_) => Ok(s.clone()),
                x => Err(type_err("btos", "bytes", x)),
            };
            put!(dst, r)
        }
        Instr::Stob { dst, s } => {
            let r = match &reg!(s) {
                Value::Str(s) => Ok(Value::bytes(s.as_bytes().to_vec())),
                b @ Value::Bytes(_) => Ok(b.clone()),
                x => Err(type_err("stob", "a string", x)),
            };
            put!(dst, r)
        }

        Instr::Raise { kind, msg } => {
            let e = match &reg!(kind) {
                Value::Atom(k) => Exception { kind: *k, msg: reg!(msg).clone() },
                x => type_err("raise", "an atom kind", x),
            };
            Flow::Throw(e)
        }
        Instr::Rethrow { e } => {
            let e = Exception::from_value(&reg!(e))
                .unwrap_or_else(|| type_err("rethrow", "an exception {kind, msg}", &reg!(e)));
            Flow::Throw(e)
        }
        Instr::Try { dst, target } => {
            handlers.push(Handler { frame: depth, target, dst });
            Flow::Next
        }
        Instr::Endtry {} => {
            if handlers.last().is_some_and(|h| h.frame == depth) {
                handlers.pop();
            }
            Flow::Next
        }

        Instr::Print { a } => Flow::Block(Effect::Print(reg!(a).to_string())),
        Instr::Self_ { dst } => {
            let v = Value::Pid(host.self_pid());
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Spawn { dst, f, args, n } => {
            put!(dst, spawn(host, &reg!(f), window(regs, args as usize, n), SpawnOpts::default()))
        }
        Instr::Spawnl { dst, f, args, n } => {
            let opts = SpawnOpts { link: true, ..SpawnOpts::default() };
            put!(dst, spawn(host, &reg!(f), window(regs, args as usize, n), opts))
        }
        Instr::Spawnm { dst, f, args, n } => {
            let opts = SpawnOpts { monitor: true, ..SpawnOpts::default() };
            put!(dst, spawn(host, &reg!(f), window(regs, args as usize, n), opts))
        }
        Instr::Spawnx { dst, f, args, opts } => {
            let r = match (&reg!(args), SpawnOpts::from_map(&reg!(opts))) {
                (Value::List(a), Ok(o)) => spawn(host, &reg!(f), a.to_vec(), o),
                (_, Err(e)) => Err(e),
                (x, _) => Err(type_err("spawnx", "a list of arguments", x)),
            };
            put!(dst, r)
        }
        Instr::Send { to, msg } => {
            let r = match pid_of(host, "send", &reg!(to)) {
                Ok(pid) => host.send(pid, reg!(msg).clone()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => Flow::Next,
                Err(e) => Flow::Throw(e),
            }
        }
        Instr::Recv { dst } => receive(host, regs, dst, None, None, 0),
        Instr::Recvt { dst, ms, target } => match millis("recvt", &reg!(ms)) {
            Ok(ms) => receive(host, regs, dst, None, Some(ms), target),
            Err(e) => Flow::Throw(e),
        },
        Instr::Recvp { dst, pat } => {
            let pat = reg!(pat).clone();
            receive(host, regs, dst, Some(pat), None, 0)
        }
        Instr::Recvpt { dst, pat, ms, target } => match millis("recvpt", &reg!(ms)) {
            Ok(ms) => {
                let pat = reg!(pat).clone();
                receive(host, regs, dst, Some(pat), Some(ms), target)
            }
            Err(e) => Flow::Throw(e),
        },
        Instr::Yield {} => Flow::Block(Effect::Yield(None)),
        Instr::Yieldto { pid } => match pid_of(host, "yieldto", &reg!(pid)) {
            Ok(p) => Flow::Block(Effect::Yield(Some(p))),
            Err(e) => Flow::Throw(e),
        },
        Instr::Register { name, pid } => {
            let op = match (&reg!(name), &reg!(pid)) {
                (Value::Atom(a), Value::Pid(p)) => Ok(ActorOp::Register(*a, *p)),
                (n, p) => Err(Exception::type_error(format!(
                    "register: expected an atom and a pid, got {} and {}",
                    n.type_atom(),
                    p.type_atom()
                ))),
            };
            control(host, op)
        }
        Instr::Unregister { name } => {
            let op = atom_of("unregister", &reg!(name)).map(ActorOp::Unregister);
            control(host, op)
        }
        Instr::Whereis { dst, name } => {
            put!(dst, atom_of("whereis", &reg!(name)).and_then(|a| host.control(ActorOp::Whereis(a))))
        }
        Instr::Link { pid } => {
            let op = pid_of(host, "link", &reg!(pid)).map(ActorOp::Link);
            control(host, op)
        }
        Instr::Unlink { pid } => {
            let op = pid_of(host, "unlink", &reg!(pid)).map(ActorOp::Unlink);
            control(host, op)
        }
        Instr::Monitor { dst, pid } => {
            put!(dst, pid_of(host, "monitor", &reg!(pid)).and_then(|p| host.control(ActorOp::Monitor(p))))
        }
        Instr::Demonitor { r } => {
            let op = match &reg!(r) {
                Value::Int(r) => Ok(ActorOp::Demonitor(*r)),
                x => Err(type_err("demonitor", "a monitor reference", x)),
            };
            control(host, op)
        }
        Instr::Trapexit { dst, on } => {
            let on = reg!(on).truthy();
            put!(dst, host.control(ActorOp::TrapExit(on)))
        }
        Instr::Exit { pid, reason } => {
            let reason = reg!(reason).clone();
            {
                let op = pid_of(host, "exit", &reg!(pid)).map(|p| ActorOp::Exit(p, reason));
                control(host, op)
            }
        }
        Instr::Kill { pid } => {
            let op = pid_of(host, "kill", &reg!(pid)).map(ActorOp::Kill);
            control(host, op)
        }
        Instr::Stop { reason } => Flow::Block(Effect::Stop(reg!(reason).clone())),
        Instr::Native { dst, name, args, n } => {
            let name = match &consts[name as usize] {
                Value::Atom(a) => *a,
                Value::Str(s) => Atom::new(s),
                other => return Flow::Throw(type_err("native", "a name (an atom)", other)),
            };
            // The host completes what it can at once (inline natives, I/O whose data is ready);
            // only a native that must wait leaves the interpreter.
            let (from, n) = (args as usize, n as usize);
            match host.native(name, &regs[from..from + n]) {
                Some(result) => put!(dst, result),
                None => Flow::Block(Effect::Native { name, args: window(regs, args as usize, n as u16) }),
            }
        }
        Instr::Chan { dst, cap } => match &reg!(cap) {
            Value::Int(c) if *c >= 0 => put!(dst, host.chan_new(*c as usize)),
            x => Flow::Throw(type_err("chan", "a capacity (an int >= 0)", x)),
        },
        Instr::Csend { ch, v } => chan_one(host, regs, "csend", ch, Some(v), None, 0),
        Instr::Crecv { dst, ch, closed } => chan_one(host, regs, "crecv", ch, None, Some(dst), closed),
        Instr::Ctrysend { dst, ch, v } => {
            let r =
                chan_ref("ctrysend", &reg!(ch)).and_then(|h| match host.chan_try_one(h, Some(&reg!(v)))? {
                    Some(Fired::SendClosed(_)) => {
                        Err(Exception::new(Atom::new("closed"), "send on a closed channel"))
                    }
                    Some(_) => Ok(Value::Bool(true)),
                    None => Ok(Value::Bool(false)),
                });
            put!(dst, r)
        }
        Instr::Ctryrecv { dst, ch } => {
            let r = chan_ref("ctryrecv", &reg!(ch)).and_then(|h| {
                Ok(match host.chan_try_one(h, None)? {
                    Some(Fired::Received(_, v)) => Value::tuple(vec![Value::Atom(atoms::OK), v]),
                    Some(_) => Value::atom("closed"),
                    None => Value::atom("empty"),
                })
            });
            put!(dst, r)
        }
        Instr::Cclose { ch } => match chan_ref("cclose", &reg!(ch)).and_then(|h| host.chan_close(h)) {
            Ok(()) => Flow::Next,
            Err(e) => Flow::Throw(e),
        },
        Instr::Select { dst, cases, ms, target } => {
            let timeout = match &reg!(ms) {
                Value::Int(ms) if *ms < 0 => Ok(None),
                Value::Int(ms) => Ok(Some(*ms as u64)),
                x => Err(type_err("select", "milliseconds as an int", x)),
            };
            match (select_cases(&reg!(cases)), timeout) {
                (Ok(cases), Ok(timeout)) => {
                    select(host, regs, Some(dst), target, SelectShape::Select, cases, timeout)
                }
                (Err(e), _) | (_, Err(e)) => Flow::Throw(e),
            }
        }
        Instr::Interrupt { pid, exc, mode } => {
            let op =
                match (pid_of(host, "interrupt", &reg!(pid)), Exception::from_value(&reg!(exc)), &reg!(mode))
                {
                    (Ok(p), Some(e), Value::Int(m @ 0..=2)) => Ok(ActorOp::Interrupt(p, e, *m as u8)),
                    (Err(e), _, _) => Err(e),
                    (_, None, _) => Err(type_err("interrupt", "an exception {kind, msg}", &reg!(exc))),
                    (_, _, m) => {
                        Err(Exception::badarg(format!("interrupt: mode must be 0, 1 or 2, got {}", m.repr())))
                    }
                };
            control(host, op)
        }
        Instr::Sleep { ms } => {
            let ms = match millis("sleep", &reg!(ms)) {
                Ok(ms) => ms,
                Err(e) => return Flow::Throw(e),
            };
            if ms == 0 { Flow::Next } else { Flow::Block(Effect::Sleep { ms }) }
        }
        Instr::Now { dst } => {
            let v = Value::Int(host.now_ms());
            store(&mut reg!(dst), v);
            Flow::Next
        }
        hot => Flow::Throw(Exception::badarg(format!(
            "internal error: {:?} reached the cold path",
            hot.opcode()
        ))),
    }
}

/// Starts an actor from a function value.
fn spawn<H: Host + ?Sized>(
    host: &mut H,
    f: &Value,
    args: Vec<Value>,
    opts: SpawnOpts,
) -> Result<Value, Exception> {
    let Value::Fun(c) = f else {
        return Err(type_err("spawn", "a function value", f));
    };
    let (pid, monitor) = host.spawn(c.clone(), args, opts)?;
    Ok(match monitor {
        Some(r) => Value::tuple(vec![Value::Pid(pid), Value::Int(r)]),
        None => Value::Pid(pid),
    })
}

/// The receive instructions: the fast path takes a message already in the mailbox; otherwise a
/// zero timeout jumps at once and anything else blocks.
fn receive<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    dst: u16,
    pattern: Option<Value>,
    timeout_ms: Option<u64>,
    target: u32,
) -> Flow {
    let got = match timeout_ms {
        None => host.try_receive_or_park(pattern.as_ref()),
        Some(_) => host.try_receive(pattern.as_ref()),
    };
    match got {
        Some(msg) => {
            store(&mut regs[dst as usize], msg);
            Flow::Next
        }
        None if timeout_ms == Some(0) => Flow::Jump(target),
        None => Flow::Block(Effect::Receive { pattern, timeout_ms }),
    }
}

/// A channel operand.
fn chan_of(op: &str, v: &Value) -> Result<crate::value::Handle, Exception> {
    chan_ref(op, v).cloned()
}

fn chan_ref<'v>(op: &str, v: &'v Value) -> Result<&'v crate::value::Handle, Exception> {
    match v {
        Value::Chan(h) => Ok(h),
        x => Err(type_err(op, "a channel", x)),
    }
}

/// `csend` (with `send`, the value's register) and `crecv` (with `dst` and the `closed` label):
/// [`select`] over one case, tried with the channel and value borrowed from the registers; the
/// case is only built (cloning them) when the actor has to wait.
fn chan_one<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    op: &str,
    ch: u16,
    send: Option<u16>,
    dst: Option<u16>,
    closed: u32,
) -> Flow {
    let shape = if send.is_some() { SelectShape::Send } else { SelectShape::Recv };
    let tried = match chan_ref(op, &regs[ch as usize]) {
        Ok(h) => host.chan_try_one(h, send.map(|v| &regs[v as usize])),
        Err(e) => return Flow::Throw(e),
    };
    let block = |regs: &[Value]| {
        let Value::Chan(h) = &regs[ch as usize] else { unreachable!("checked above") };
        let case = match send {
            Some(v) => SelectCase::Send(h.clone(), regs[v as usize].clone()),
            None => SelectCase::Recv(h.clone()),
        };
        Flow::Block(Effect::Select { shape, cases: vec![case], timeout_ms: None })
    };
    match tried {
        Ok(Some(fired)) => match crate::step::select_resume(shape, fired) {
            Resume::Value(v) => {
                if let Some(d) = dst {
                    store(&mut regs[d as usize], v);
                }
                Flow::Next
            }
            Resume::Raise(e) => Flow::Throw(e),
            Resume::Timeout => Flow::Jump(closed),
            Resume::Retry => block(regs),
        },
        Ok(None) => block(regs),
        Err(e) => Flow::Throw(e),
    }
}

/// Reads the case list of `select`: `{:send, ch, v}`, `{:recv, ch}` or `{:msg, pattern}`.
fn select_cases(v: &Value) -> Result<Vec<SelectCase>, Exception> {
    let Value::List(items) = v else {
        return Err(type_err("select", "a list of cases", v));
    };
    let bad = |c: &Value| {
        Exception::badarg(format!(
            "select: {} is not {{:send, ch, v}}, {{:recv, ch}}, {{:msg, pattern}}, {{:readable, socket}} or {{:accept, listener}}",
            c.repr()
        ))
    };
    items
        .iter()
        .map(|c| {
            let Value::Tuple(t) = c else { return Err(bad(c)) };
            let tag = match t.first() {
                Some(Value::Atom(a)) => a.name(),
                _ => return Err(bad(c)),
            };
            match (&*tag, t.len()) {
                ("send", 3) => Ok(SelectCase::Send(chan_of("select", &t[1])?, t[2].clone())),
                ("recv", 2) => Ok(SelectCase::Recv(chan_of("select", &t[1])?)),
                ("msg", 2) => Ok(SelectCase::Message(t[1].clone())),
                ("readable", 2) => Ok(SelectCase::Readable(t[1].clone())),
                ("accept", 2) => Ok(SelectCase::Accept(t[1].clone())),
                _ => Err(bad(c)),
            }
        })
        .collect()
}

/// The channel instructions: commit a ready case now (the fast path never leaves the stepper),
/// jump at once for a zero timeout, or block on the whole select.
/// (`csend` and `crecv` take [`chan_one`].)
fn select<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    dst: Option<u16>,
    label: u32,
    shape: SelectShape,
    cases: Vec<SelectCase>,
    timeout_ms: Option<u64>,
) -> Flow {
    let tried = host.chan_try(&cases);
    let block = move || Flow::Block(Effect::Select { shape, cases, timeout_ms });
    match tried {
        Ok(Some(fired)) => match crate::step::select_resume(shape, fired) {
            Resume::Value(v) => {
                if let Some(d) = dst {
                    store(&mut regs[d as usize], v);
                }
                Flow::Next
            }
            Resume::Raise(e) => Flow::Throw(e),
            Resume::Timeout => Flow::Jump(label),
            Resume::Retry => block(),
        },
        Ok(None) if timeout_ms == Some(0) => Flow::Jump(label),
        Ok(None) => block(),
        Err(e) => Flow::Throw(e),
    }
}

/// A pid operand: a pid, or an atom naming a registered actor.
fn pid_of<H: Host + ?Sized>(host: &mut H, op: &str, v: &Value) -> Result<Pid, Exception> {
    match v {
        Value::Pid(p) => Ok(*p),
        Value::Atom(name) => match host.control(ActorOp::Whereis(*name))? {
            Value::Pid(p) => Ok(p),
            _ => Err(Exception::new(atoms::NOPROC, format!("{op}: no actor registered as {}", v.repr()))),
        },
        x => Err(type_err(op, "a pid or registered name", x)),
    }
}

fn atom_of(op: &str, v: &Value) -> Result<Atom, Exception> {
    match v {
        Value::Atom(a) => Ok(*a),
        x => Err(type_err(op, "an atom", x)),
    }
}

/// Runs an actor operation whose result is not kept.
fn control<H: Host + ?Sized>(host: &mut H, op: Result<ActorOp, Exception>) -> Flow {
    match op.and_then(|op| host.control(op)) {
        Ok(_) => Flow::Next,
        Err(e) => Flow::Throw(e),
    }
}

/// Writes an int to a register that holds nil, a bool, an int, a float or an atom, and returns
/// true; returns false (writing nothing) for anything else, which the caller's slow path then
/// handles. One tag comparison covers the common cases.
#[inline(always)]
fn put_int(slot: &mut Value, z: i64) -> bool {
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
fn store(slot: &mut Value, v: Value) {
    if owns_nothing(slot) {
        // Forgetting a value that owns no heap memory leaks nothing.
        std::mem::forget(std::mem::replace(slot, v));
    } else {
        *slot = v;
    }
}

/// True for values with no heap part: dropping them does nothing.
#[inline(always)]
fn owns_nothing(v: &Value) -> bool {
    matches!(
        v,
        Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Atom(_) | Value::Pid(_)
    )
}

/// Transfers control to the innermost handler, or reports the exception as uncaught.
#[inline(never)]
fn unwind(
    stack: &mut [Value],
    frames: &mut Vec<Frame>,
    handlers: &mut Vec<Handler>,
    caught: &mut Option<Box<Caught>>,
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
    let log = caught.get_or_insert_with(Default::default);
    log.count += 1;
    log.last = Some((e, func, pc));
    if let Some(last) = frames.last_mut() {
        last.pc = h.target;
    }
    Ok(())
}

/// Grows the register stack to `len` slots (rare: only when calls go deeper than ever before).
#[cold]
#[inline(never)]
fn grow(stack: &mut Vec<Value>, len: usize) {
    stack.resize(len, Value::Nil);
}

/// Sets up a callee's arguments: `regs` is the caller's registers and beyond, `at` the callee's
/// base relative to them. The `n` registers from `args` are copied to the callee's first
/// registers; its other registers are nil already (see `ActorState`).
///
/// The windows are split apart first so that the copies need no per-register bounds checks.
/// (Verified code passes a window inside the caller's registers and no more arguments than the
/// callee has registers, so the copies always copy all `n`.)
#[inline(always)]
fn enter(regs: &mut [Value], at: usize, args: usize, n: usize) {
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
fn enter_closure(regs: &mut [Value], at: usize, args: usize, n: usize, env: &[Value]) {
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
fn move_value(regs: &mut [Value], dst: usize, src: usize) {
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
fn move_slow(regs: &mut [Value], dst: usize, src: usize) {
    let v = std::mem::take(&mut regs[src]);
    store(&mut regs[dst], v);
}

/// Copies a value into a register, with a fast path for ints (which need no reference count).
#[inline(always)]
fn copy_value(slot: &mut Value, v: &Value) {
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
fn copy_slow(slot: &mut Value, v: &Value) {
    store(slot, v.clone());
}

/// Sets a register to nil.
#[inline(always)]
fn clear(slot: &mut Value) {
    if is_small(slot) {
        // Forgetting a value that owns no heap memory leaks nothing.
        std::mem::forget(std::mem::replace(slot, Value::Nil));
    } else {
        clear_slow(slot);
    }
}

/// [`clear`] for a register that may own heap memory.
#[inline(never)]
fn clear_slow(slot: &mut Value) {
    *slot = Value::Nil;
}

/// True for nil, bools, ints, floats and atoms: scalars that one tag comparison recognises. (Pids
/// are scalars too but take the slow paths, which handle every value.)
#[inline(always)]
fn is_small(v: &Value) -> bool {
    matches!(v, Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Atom(_))
}

/// Resets the registers of a frame that is being left to nil, so that its heap values stop
/// keeping memory, messages or channels alive, and so that every slot above the running frame
/// holds nil (a call then writes only its arguments; see `ActorState`).
#[inline(always)]
fn reset(window: &mut [Value]) {
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
fn ret_slow(
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
fn tail_args(regs: &mut [Value], args: usize, n: usize, nregs: usize) {
    for i in 0..n {
        let v = std::mem::take(&mut regs[args + i]);
        regs[i] = v;
    }
    reset(&mut regs[n..nregs]);
}

/// Takes the arguments of a tail call through a function value (its captured values, then the
/// `n` registers from `args`) and resets the frame's `nregs` registers to nil.
#[inline(never)]
fn take_tail_args(regs: &mut [Value], env: &[Value], args: usize, n: usize, nregs: usize) -> Vec<Value> {
    let mut new: Vec<Value> = env.to_vec();
    for i in 0..n {
        new.push(std::mem::take(&mut regs[args + i]));
    }
    reset(&mut regs[..nregs]);
    new
}

/// Writes the arguments taken by [`take_tail_args`] to the bottom of the frame.
#[inline(never)]
fn place_args(regs: &mut [Value], new: Vec<Value>) {
    for (slot, v) in regs.iter_mut().zip(new) {
        *slot = v;
    }
}

/// Discards the handlers installed by the running frame (it is returning or being replaced).
#[inline]
fn drop_frame_handlers(handlers: &mut Vec<Handler>, frames: usize) {
    let depth = (frames - 1) as u32;
    while handlers.last().is_some_and(|h| h.frame >= depth) {
        handlers.pop();
    }
}

fn stack_overflow(max: usize) -> Exception {
    Exception::new(atoms::STACK_OVERFLOW, format!("more than {max} nested calls"))
}

/// Checks a function value before `callv`/`tcallv`: it must be a function of this module whose
/// arity equals its captured values plus `n`.
#[inline(never)]
fn closure_for_call(m: &Module, f: &Value, n: u16) -> Result<Arc<Closure>, Exception> {
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
fn window(regs: &[Value], start: usize, n: u16) -> Vec<Value> {
    regs[start..start + n as usize].to_vec()
}

/// Takes the value of register `src` for an instruction that produces a modified copy into `dst`.
/// When `dst == src` the register is emptied first so that an unshared collection is updated in
/// place (`append r1, r1, r2` in a loop is amortised O(1)); otherwise the value is cloned and the
/// update copies it.
fn take_or_clone(regs: &mut [Value], dst: u16, src: u16) -> Value {
    if dst == src { std::mem::take(&mut regs[src as usize]) } else { regs[src as usize].clone() }
}

#[derive(Clone, Copy, Debug)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Arith {
    fn name(self) -> &'static str {
        match self {
            Arith::Add => "add",
            Arith::Sub => "sub",
            Arith::Mul => "mul",
            Arith::Div => "div",
            Arith::Rem => "rem",
        }
    }
}

/// The exception for a failed checked int operation: a zero divisor, or overflow.
#[cold]
fn int_failure(op: Arith, divisor: i64) -> Exception {
    match op {
        Arith::Div | Arith::Rem if divisor == 0 => {
            Exception::new(atoms::DIV_BY_ZERO, format!("{}: division by zero", op.name()))
        }
        _ => Exception::new(atoms::OVERFLOW, format!("{}: integer overflow", op.name())),
    }
}

/// Arithmetic on anything but two ints.
#[cold]
fn arith(op: Arith, a: &Value, b: &Value) -> Result<Value, Exception> {
    let (x, y) = match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let r = match op {
                Arith::Add => x.checked_add(*y),
                Arith::Sub => x.checked_sub(*y),
                Arith::Mul => x.checked_mul(*y),
                Arith::Div => x.checked_div(*y),
                Arith::Rem => x.checked_rem(*y),
            };
            return r.map(Value::Int).ok_or_else(|| int_failure(op, *y));
        }
        (Value::Float(x), Value::Float(y)) => (*x, *y),
        (Value::Int(x), Value::Float(y)) => (*x as f64, *y),
        (Value::Float(x), Value::Int(y)) => (*x, *y as f64),
        _ => {
            return Err(Exception::type_error(format!(
                "{}: expected numbers, got {} and {}",
                op.name(),
                a.type_atom(),
                b.type_atom()
            )));
        }
    };
    Ok(Value::Float(match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div => x / y,
        Arith::Rem => x % y,
    }))
}

#[inline(never)]
fn bitop(
    name: &str,
    a: &Value,
    b: &Value,
    f: impl Fn(i64, i64) -> Result<i64, Exception>,
) -> Result<Value, Exception> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => f(*x, *y).map(Value::Int),
        _ => Err(Exception::type_error(format!(
            "{name}: expected ints, got {} and {}",
            a.type_atom(),
            b.type_atom()
        ))),
    }
}

fn shift_amount(y: i64) -> Result<u32, Exception> {
    if (0..64).contains(&y) {
        Ok(y as u32)
    } else {
        Err(Exception::badarg(format!("shift amount {y} is not in 0..64")))
    }
}

#[cold]
fn type_err(op: &str, expected: &str, got: &Value) -> Exception {
    Exception::type_error(format!("{op}: expected {expected}, got {}", got.type_atom()))
}

#[inline(never)]
fn to_float(a: &Value) -> Result<Value, Exception> {
    match a {
        Value::Int(x) => Ok(Value::Float(*x as f64)),
        Value::Float(x) => Ok(Value::Float(*x)),
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| Exception::badarg(format!("tofloat: {:?} is not a number", s.as_str()))),
        x => Err(type_err("tofloat", "a number or string", x)),
    }
}

#[inline(never)]
fn to_int(a: &Value) -> Result<Value, Exception> {
    let parse = |s: &str| {
        s.parse::<i64>()
            .map(Value::Int)
            .map_err(|_| Exception::badarg(format!("toint: {s:?} is not an integer")))
    };
    match a {
        Value::Int(x) => Ok(Value::Int(*x)),
        // 2^63 is exactly representable, so the range check is exact.
        Value::Float(x)
            if x.is_finite() && *x >= -9_223_372_036_854_775_808.0 && *x < 9_223_372_036_854_775_808.0 =>
        {
            Ok(Value::Int(*x as i64))
        }
        Value::Float(x) => Err(Exception::badarg(format!("toint: {x} has no int value"))),
        Value::Str(s) => parse(s),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => parse(s),
            Err(_) => Err(Exception::badarg("toint: bytes are not UTF-8 digits")),
        },
        x => Err(type_err("toint", "a number, string or bytes", x)),
    }
}

fn index_err(i: i64, len: usize) -> Exception {
    Exception::new(atoms::INDEX, format!("index {i} out of range for length {len}"))
}

/// Element `i` of a tuple or list; negative indices count from the end when `negative` allows.
#[inline(never)]
fn element(c: &Value, i: i64, negative: bool) -> Result<Value, Exception> {
    let items = match c {
        Value::Tuple(t) | Value::List(t) => t,
        x => return Err(type_err("index", "a tuple or list", x)),
    };
    let len = items.len();
    let j = if i < 0 && negative { i + len as i64 } else { i };
    if j < 0 || j as usize >= len {
        return Err(index_err(i, len));
    }
    Ok(items[j as usize].clone())
}

#[inline(never)]
fn set_element(c: Value, i: &Value, v: Value) -> Result<Value, Exception> {
    let Value::Int(i) = *i else {
        return Err(type_err("lset", "an int index", i));
    };
    let (mut items, is_tuple) = match c {
        Value::Tuple(t) => (t, true),
        Value::List(l) => (l, false),
        x => return Err(type_err("lset", "a tuple or list", &x)),
    };
    let len = items.len();
    let j = if i < 0 { i + len as i64 } else { i };
    if j < 0 || j as usize >= len {
        return Err(index_err(i, len));
    }
    Arc::make_mut(&mut items)[j as usize] = v;
    Ok(if is_tuple { Value::Tuple(items) } else { Value::List(items) })
}

#[inline(never)]
fn length(a: &Value) -> Result<Value, Exception> {
    let n = match a {
        Value::Tuple(t) | Value::List(t) => t.len(),
        Value::Map(m) => m.len(),
        Value::Str(s) => s.len(),
        Value::Bytes(b) => b.len(),
        x => return Err(type_err("len", "a collection, string or bytes", x)),
    };
    Ok(Value::Int(n as i64))
}

#[inline(never)]
fn concat(a: Value, b: &Value) -> Result<Value, Exception> {
    match (a, b) {
        (Value::Str(mut x), Value::Str(y)) => {
            Arc::make_mut(&mut x).push_str(y);
            Ok(Value::Str(x))
        }
        (Value::Bytes(x), Value::Bytes(y)) => {
            let mut out = Vec::with_capacity(x.len() + y.len());
            out.extend_from_slice(&x);
            out.extend_from_slice(y);
            Ok(Value::bytes(out))
        }
        (Value::List(mut x), Value::List(y)) => {
            Arc::make_mut(&mut x).extend(y.iter().cloned());
            Ok(Value::List(x))
        }
        (x, y) => Err(Exception::type_error(format!(
            "concat: expected two strings, two bytes or two lists, got {} and {}",
            x.type_atom(),
            y.type_atom()
        ))),
    }
}

#[inline(never)]
fn slice(s: &Value, from: &Value, to: &Value) -> Result<Value, Exception> {
    let (Value::Int(from), Value::Int(to)) = (from, to) else {
        return Err(Exception::type_error("slice: bounds must be ints"));
    };
    let (from, to) = (*from, *to);
    let bounds = |len: usize| -> Result<(usize, usize), Exception> {
        if from < 0 || to < from || to as u64 > len as u64 {
            Err(Exception::new(atoms::INDEX, format!("slice {from}..{to} out of range for length {len}")))
        } else {
            Ok((from as usize, to as usize))
        }
    };
    match s {
        Value::Str(st) => {
            let (a, b) = bounds(st.len())?;
            st.get(a..b).map(Value::str).ok_or_else(|| {
                Exception::new(atoms::INDEX, format!("slice {a}..{b} splits a UTF-8 character"))
            })
        }
        Value::Bytes(bs) => {
            let (a, b) = bounds(bs.len())?;
            Ok(Value::Bytes(Arc::new(bs.slice(a..b))))
        }
        Value::List(l) => {
            let (a, b) = bounds(l.len())?;
            Ok(Value::list(l[a..b].to_vec()))
        }
        x => Err(type_err("slice", "a string, bytes or list", x)),
    }
}

/// The bytes of a string or bytes value, for text operations that work on both.
fn text_bytes<'a>(op: &str, v: &'a Value) -> Result<&'a [u8], Exception> {
    match v {
        Value::Str(s) => Ok(s.as_bytes()),
        Value::Bytes(b) => Ok(b),
        x => Err(type_err(op, "a string or bytes", x)),
    }
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > hay.len() {
        return None;
    }
    let first = needle[0];
    (0..=hay.len() - needle.len()).find(|&i| hay[i] == first && &hay[i..i + needle.len()] == needle)
}

#[inline(never)]
fn find(hay: &Value, needle: &Value) -> Result<Value, Exception> {
    let h = text_bytes("find", hay)?;
    let n = text_bytes("find", needle)?;
    Ok(Value::Int(find_bytes(h, n).map_or(-1, |i| i as i64)))
}

#[inline(never)]
fn split(s: &Value, sep: &Value) -> Result<Value, Exception> {
    let sep_b = text_bytes("split", sep)?;
    if sep_b.is_empty() {
        return Err(Exception::badarg("split: empty separator"));
    }
    match s {
        Value::Str(st) => {
            let sep =
                std::str::from_utf8(sep_b).map_err(|_| Exception::badarg("split: separator is not UTF-8"))?;
            Ok(Value::list(st.split(sep).map(Value::str).collect()))
        }
        Value::Bytes(bs) => {
            let mut parts = Vec::new();
            let mut rest = 0;
            while let Some(i) = find_bytes(&bs[rest..], sep_b) {
                parts.push(Value::Bytes(Arc::new(bs.slice(rest..rest + i))));
                rest += i + sep_b.len();
            }
            parts.push(Value::Bytes(Arc::new(bs.slice(rest..))));
            Ok(Value::list(parts))
        }
        x => Err(type_err("split", "a string or bytes", x)),
    }
}

/// Applies an ASCII-preserving byte transformation to a string or bytes value. The result of
/// trimming or changing the case of ASCII letters in valid UTF-8 is still valid UTF-8.
#[inline(never)]
fn map_text(op: &str, v: &Value, f: impl Fn(&[u8]) -> Vec<u8>) -> Result<Value, Exception> {
    match v {
        Value::Str(s) => Ok(Value::str(String::from_utf8(f(s.as_bytes())).unwrap_or_default())),
        Value::Bytes(b) => Ok(Value::bytes(f(b))),
        x => Err(type_err(op, "a string or bytes", x)),
    }
}

#[inline(never)]
fn byte_at(s: &Value, i: &Value) -> Result<Value, Exception> {
    let b = text_bytes("byte", s)?;
    let Value::Int(i) = *i else {
        return Err(type_err("byte", "an int index", i));
    };
    if i < 0 || i as u64 >= b.len() as u64 {
        return Err(index_err(i, b.len()));
    }
    Ok(Value::Int(b[i as usize] as i64))
}

#[inline(never)]
fn millis(op: &str, v: &Value) -> Result<u64, Exception> {
    match v {
        Value::Int(ms) if *ms >= 0 => Ok(*ms as u64),
        Value::Int(ms) => Err(Exception::badarg(format!("{op}: negative time {ms}"))),
        x => Err(type_err(op, "milliseconds as an int", x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Function;
    use crate::step::{DEFAULT_MAX_FRAMES, Resume};
    use std::collections::VecDeque;

    /// A host for one actor whose mailbox is filled by the test.
    #[derive(Default)]
    struct TestHost {
        mailbox: VecDeque<Value>,
        sent: Vec<(Pid, Value)>,
        /// Sends to this pid are refused (nothing is delivered).
        refuse: Option<Pid>,
    }

    impl Host for TestHost {
        fn self_pid(&self) -> Pid {
            Pid(1)
        }
        fn spawn(
            &mut self,
            _: Arc<Closure>,
            _: Vec<Value>,
            _: SpawnOpts,
        ) -> Result<(Pid, Option<i64>), Exception> {
            Ok((Pid(2), None))
        }
        fn send(&mut self, to: Pid, msg: Value) -> Result<(), Exception> {
            if self.refuse == Some(to) {
                return Err(Exception::new(atoms::NOPROC, "refused"));
            }
            self.sent.push((to, msg));
            Ok(())
        }
        fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value> {
            let i = self.mailbox.iter().position(|m| pattern.is_none_or(|p| crate::value::matches(p, m)))?;
            self.mailbox.remove(i)
        }
        fn now_ms(&self) -> i64 {
            7
        }
        fn control(&mut self, _: ActorOp) -> Result<Value, Exception> {
            Ok(Value::Nil)
        }
        fn chan_new(&mut self, _: usize) -> Result<Value, Exception> {
            Err(Exception::new(atoms::UNSUPPORTED, "no channels in this test host"))
        }
        fn chan_try(&mut self, _: &[SelectCase]) -> Result<Option<Fired>, Exception> {
            Ok(None)
        }
        fn chan_close(&mut self, _: &crate::value::Handle) -> Result<(), Exception> {
            Ok(())
        }
    }

    fn func(name: &str, arity: u16, nregs: u16, code: Vec<Instr>) -> Function {
        Function { name: name.into(), arity, nregs, code }
    }

    fn run_to_end(m: &Module, func: u32, args: Vec<Value>) -> Step {
        let mut st = ActorState::new(m, func, args).unwrap();
        let mut host = TestHost::default();
        loop {
            match step(&mut st, m, &mut host, 1000) {
                Step::Yielded => continue,
                other => return other,
            }
        }
    }

    fn fib_module() -> Module {
        use Instr::*;
        Module {
            funcs: vec![func(
                "fib",
                1,
                3,
                vec![
                    Jlti { a: 0, imm: 2, target: 6 },
                    Addi { dst: 1, a: 0, imm: -1 },
                    Call { dst: 1, f: 0, args: 1, n: 1 },
                    Addi { dst: 2, a: 0, imm: -2 },
                    Call { dst: 2, f: 0, args: 2, n: 1 },
                    Add { dst: 0, a: 1, b: 2 },
                    Ret { a: 0 },
                ],
            )],
            ..Module::default()
        }
    }

    #[test]
    fn a_tail_call_starts_the_callee_with_nil_registers() {
        use Instr::*;
        // first(x): r1 = 99; tail-call second(x), which returns its (unset) r1.
        let m = Module {
            funcs: vec![
                func("first", 1, 2, vec![Int { dst: 1, imm: 99 }, Tcall { f: 1, args: 0, n: 1 }]),
                func("second", 1, 2, vec![Ret { a: 1 }]),
            ],
            ..Module::default()
        };
        assert_eq!(run_to_end(&m, 0, vec![Value::Int(1)]), Step::Exited(Value::Nil));
    }

    #[test]
    fn caught_exceptions_are_counted_with_the_latest_and_where_it_was_raised() {
        let src = ".func main 0\n    try r0, c1\n    int r1, 0\n    div r1, r1, r1\n    endtry\nc1:\n    try r0, c2\n    const r1, :oops\n    const r2, \"bad\"\n    raise r1, r2\nc2:\n    ret r0\n.end\n";
        let m = crate::asm::assemble_str("t.vasm", src).unwrap();
        let mut st = ActorState::new(&m, 0, vec![]).unwrap();
        let mut host = TestHost::default();
        assert!(matches!(step(&mut st, &m, &mut host, 1000), Step::Exited(_)));
        let c = st.caught.as_deref().expect("two exceptions were caught");
        assert_eq!(c.count, 2);
        let (e, func, pc) = c.last.clone().unwrap();
        assert_eq!((e.kind.name().to_string(), func, pc), ("oops".to_string(), 0, 7));
    }

    /// `send` and `recv` have a fast path in the loop; what it cannot do (a refused send, a
    /// send to a name, an empty mailbox) behaves exactly as the general path: one raise, one
    /// delivery each, and a receive that blocks on the instruction.
    #[test]
    fn send_and_receive_fast_paths_fall_back_without_repeating_anything() {
        let src = "
.func main 2
    send r0, r1            ; delivered
    try r2, refused
    send r1, r0            ; refused by the host: raised once, delivered never
    endtry
    int r3, 0
    ret r3
refused:
    send r0, r2            ; sends the exception on
    const r4, :name
    send r4, r1            ; a name goes the general way
    recv r5
    ret r5
.end
";
        let m = crate::asm::assemble_str("t.vasm", src).unwrap();
        let mut st = ActorState::new(&m, 0, vec![Value::Pid(Pid(5)), Value::Pid(Pid(6))]).unwrap();
        let mut host = TestHost { refuse: Some(Pid(6)), ..TestHost::default() };
        // The registered-name lookup of the test host answers nil, so that send raises `noproc`
        // too, uncaught: the actor fails there, after two deliveries.
        let r = step(&mut st, &m, &mut host, 1000);
        let Step::Failed(f) = r else { panic!("expected the send to a name to fail: {r:?}") };
        assert_eq!(f.exception.kind, atoms::NOPROC);
        let to: Vec<Pid> = host.sent.iter().map(|(p, _)| *p).collect();
        assert_eq!(to, vec![Pid(5), Pid(5)], "each delivered once, the refused one never");
        assert!(matches!(&host.sent[1].1, Value::Tuple(t) if t[0] == Value::Atom(atoms::NOPROC)));

        // An empty mailbox blocks the receive on its instruction; a message then completes it.
        let src = ".func main 0
    recv r0
    ret r0
.end
";
        let m = crate::asm::assemble_str("t.vasm", src).unwrap();
        let mut st = ActorState::new(&m, 0, vec![]).unwrap();
        let mut host = TestHost::default();
        let r = step(&mut st, &m, &mut host, 1000);
        assert!(matches!(r, Step::Blocked(Effect::Receive { pattern: None, timeout_ms: None })), "{r:?}");
        assert_eq!(st.position(), Some((0, 0)));
        host.mailbox.push_back(Value::Int(7));
        assert_eq!(step(&mut st, &m, &mut host, 1000), Step::Exited(Value::Int(7)));
    }

    #[test]
    fn spawning_costs_fuel() {
        use Instr::*;
        // 20 spawns in a loop: with 1,000 fuel per step the loop must yield at least once,
        // although it makes only 20 backward jumps.
        let m = Module {
            funcs: vec![
                func(
                    "main",
                    0,
                    4,
                    vec![
                        Fun { dst: 0, f: 1 },
                        Int { dst: 1, imm: 0 },
                        Spawn { dst: 2, f: 0, args: 0, n: 0 },
                        Addi { dst: 1, a: 1, imm: 1 },
                        Jlti { a: 1, imm: 20, target: 2 },
                        Ret { a: 1 },
                    ],
                ),
                func("child", 0, 1, vec![Ret { a: 0 }]),
            ],
            ..Module::default()
        };
        let mut st = ActorState::new(&m, 0, vec![]).unwrap();
        let mut host = TestHost::default();
        let mut yields = 0;
        let r = loop {
            match step(&mut st, &m, &mut host, 1000) {
                Step::Yielded => yields += 1,
                other => break other,
            }
        };
        assert_eq!(r, Step::Exited(Value::Int(20)));
        assert!(yields >= 1, "20 spawns cost {} fuel", 20 * SPAWN_FUEL);
    }

    #[test]
    fn recursive_fib() {
        assert_eq!(run_to_end(&fib_module(), 0, vec![Value::Int(20)]), Step::Exited(Value::Int(6765)));
    }

    #[test]
    fn fuel_bounds_each_step_and_counts_reductions() {
        let m = fib_module();
        let mut st = ActorState::new(&m, 0, vec![Value::Int(15)]).unwrap();
        let mut host = TestHost::default();
        let mut yields = 0;
        let result = loop {
            match step(&mut st, &m, &mut host, 100) {
                Step::Yielded => yields += 1,
                other => break other,
            }
        };
        assert_eq!(result, Step::Exited(Value::Int(610)));
        // fib(15) makes 1972 calls, one unit each.
        assert_eq!(st.reductions, 1972);
        assert_eq!(yields, 19);
    }

    #[test]
    fn division_by_zero_is_caught_by_try() {
        use Instr::*;
        let m = Module {
            consts: vec![],
            funcs: vec![func(
                "main",
                2,
                4,
                vec![
                    Try { dst: 3, target: 4 },
                    Div { dst: 2, a: 0, b: 1 },
                    Endtry {},
                    Ret { a: 2 },
                    Tget { dst: 2, t: 3, i: 0 },
                    Ret { a: 2 },
                ],
            )],
            debug: None,
        };
        let r = run_to_end(&m, 0, vec![Value::Int(1), Value::Int(0)]);
        assert_eq!(r, Step::Exited(Value::Atom(atoms::DIV_BY_ZERO)));
        let r = run_to_end(&m, 0, vec![Value::Int(7), Value::Int(2)]);
        assert_eq!(r, Step::Exited(Value::Int(3)));
    }

    #[test]
    fn uncaught_exception_reports_where() {
        use Instr::*;
        let m = Module {
            funcs: vec![
                func("main", 0, 1, vec![Call { dst: 0, f: 1, args: 0, n: 0 }, Ret { a: 0 }]),
                func(
                    "bad",
                    0,
                    2,
                    vec![
                        Int { dst: 0, imm: i32::MAX },
                        Mul { dst: 0, a: 0, b: 0 },
                        Mul { dst: 0, a: 0, b: 0 },
                        Ret { a: 0 },
                    ],
                ),
            ],
            ..Module::default()
        };
        match run_to_end(&m, 0, vec![]) {
            Step::Failed(f) => {
                assert_eq!(f.exception.kind, atoms::OVERFLOW);
                assert_eq!((f.func, f.pc), (1, 2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_recursion_raises_a_catchable_stack_overflow() {
        use Instr::*;
        let m = Module {
            funcs: vec![
                func(
                    "main",
                    0,
                    2,
                    vec![
                        Try { dst: 1, target: 3 },
                        Call { dst: 0, f: 1, args: 0, n: 0 },
                        Ret { a: 0 },
                        Tget { dst: 0, t: 1, i: 0 },
                        Ret { a: 0 },
                    ],
                ),
                func("down", 0, 1, vec![Call { dst: 0, f: 1, args: 0, n: 0 }, Ret { a: 0 }]),
            ],
            ..Module::default()
        };
        let mut st = ActorState::new(&m, 0, vec![]).unwrap();
        st.max_frames = 500;
        let mut host = TestHost::default();
        let r = loop {
            match step(&mut st, &m, &mut host, 1000) {
                Step::Yielded => continue,
                other => break other,
            }
        };
        assert_eq!(r, Step::Exited(Value::Atom(atoms::STACK_OVERFLOW)));
        assert!(st.frames.is_empty());
    }

    /// Recursion to exactly the frame limit runs; one frame more raises `:stack_overflow`, through
    /// `call` and `callv` alike, and a caught overflow leaves nil registers behind it.
    #[test]
    fn recursion_at_the_frame_limit() {
        use Instr::*;
        let m = Module {
            funcs: vec![
                // main(k) = down(k)
                func("main", 1, 2, vec![Call { dst: 1, f: 1, args: 0, n: 1 }, Ret { a: 1 }]),
                // down(n) = n == 0 ? 0 : down(n - 1)
                func(
                    "down",
                    1,
                    2,
                    vec![
                        Jeqi { a: 0, imm: 0, target: 4 },
                        Addi { dst: 1, a: 0, imm: -1 },
                        Call { dst: 1, f: 1, args: 1, n: 1 },
                        Ret { a: 1 },
                        Ret { a: 0 },
                    ],
                ),
                // mainv(k) = downv(k, &downv)
                func(
                    "mainv",
                    1,
                    3,
                    vec![Fun { dst: 1, f: 3 }, Callv { dst: 2, f: 1, args: 0, n: 2 }, Ret { a: 2 }],
                ),
                // downv(n, f) = n == 0 ? 0 : f(n - 1, f)
                func(
                    "downv",
                    2,
                    4,
                    vec![
                        Jeqi { a: 0, imm: 0, target: 5 },
                        Addi { dst: 2, a: 0, imm: -1 },
                        Move { dst: 3, src: 1 },
                        Callv { dst: 2, f: 1, args: 2, n: 2 },
                        Ret { a: 2 },
                        Ret { a: 0 },
                    ],
                ),
            ],
            ..Module::default()
        };
        let run = |main: u32, k: i64, limit: u32| {
            let mut st = ActorState::new(&m, main, vec![Value::Int(k)]).unwrap();
            st.max_frames = limit;
            let mut host = TestHost::default();
            loop {
                match step(&mut st, &m, &mut host, 1000) {
                    Step::Yielded => continue,
                    other => break other,
                }
            }
        };
        for main in [0, 2] {
            // main and down(k) .. down(0): k + 2 frames.
            assert_eq!(run(main, 48, 50), Step::Exited(Value::Int(0)));
            match run(main, 49, 50) {
                Step::Failed(f) => {
                    assert_eq!(f.exception.kind, atoms::STACK_OVERFLOW);
                    assert_eq!(f.pc, if main == 0 { 2 } else { 3 }, "raised at the call");
                }
                other => panic!("{other:?}"),
            }
            // The default limit: the stack grows to it call by call.
            let deepest = i64::from(DEFAULT_MAX_FRAMES) - 2;
            assert_eq!(run(main, deepest, DEFAULT_MAX_FRAMES), Step::Exited(Value::Int(0)));
            match run(main, deepest + 1, DEFAULT_MAX_FRAMES) {
                Step::Failed(f) => assert_eq!(f.exception.kind, atoms::STACK_OVERFLOW),
                other => panic!("{other:?}"),
            }
        }
    }

    /// `callv` checks its function value before charging fuel or checking the depth: calling a
    /// non-function raises even with no fuel left.
    #[test]
    fn callv_of_a_non_function_raises_before_charging() {
        use Instr::*;
        let m = Module {
            funcs: vec![func(
                "main",
                0,
                2,
                vec![Int { dst: 0, imm: 3 }, Callv { dst: 1, f: 0, args: 0, n: 0 }],
            )],
            ..Module::default()
        };
        let mut st = ActorState::new(&m, 0, vec![]).unwrap();
        match step(&mut st, &m, &mut TestHost::default(), 0) {
            Step::Failed(f) => assert_eq!((f.exception.kind, f.pc), (atoms::TYPE_ERROR, 1)),
            other => panic!("{other:?}"),
        }
    }

    /// Every way of leaving a frame (return, tail call, an exception caught further down) resets
    /// its registers, so every slot above the running frame holds nil.
    #[test]
    fn slots_above_the_running_frame_hold_nil() {
        use Instr::*;
        let m = Module {
            consts: vec![Value::str("s"), Value::atom("oops")],
            funcs: vec![
                func(
                    "main",
                    0,
                    3,
                    vec![
                        Call { dst: 0, f: 1, args: 0, n: 0 },
                        Call { dst: 1, f: 3, args: 0, n: 0 },
                        Try { dst: 2, target: 5 },
                        Call { dst: 2, f: 2, args: 0, n: 0 },
                        Endtry {},
                        Recv { dst: 2 },
                        Ret { a: 2 },
                    ],
                ),
                // fill(): heap values and ints in all its registers; returns one of them.
                func(
                    "fill",
                    0,
                    4,
                    vec![
                        Const { dst: 0, k: 0 },
                        Tuple { dst: 1, items: 0, n: 1 },
                        Int { dst: 2, imm: 7 },
                        Const { dst: 3, k: 0 },
                        Ret { a: 1 },
                    ],
                ),
                // thrower(): fills its registers, calls fill, raises.
                func(
                    "thrower",
                    0,
                    6,
                    vec![
                        Const { dst: 0, k: 0 },
                        Tuple { dst: 1, items: 0, n: 1 },
                        Call { dst: 2, f: 1, args: 0, n: 0 },
                        Const { dst: 3, k: 1 },
                        Const { dst: 4, k: 0 },
                        Raise { kind: 3, msg: 4 },
                    ],
                ),
                // big(): fills six registers and tail-calls small(x), which returns its unset r1.
                func(
                    "big",
                    0,
                    6,
                    vec![
                        Const { dst: 5, k: 0 },
                        Tuple { dst: 4, items: 5, n: 1 },
                        Int { dst: 3, imm: 1 },
                        Const { dst: 2, k: 0 },
                        Tuple { dst: 1, items: 4, n: 2 },
                        Tcall { f: 4, args: 1, n: 1 },
                    ],
                ),
                func("small", 1, 2, vec![Ret { a: 1 }]),
            ],
            debug: None,
        };
        let mut st = ActorState::new(&m, 0, vec![]).unwrap();
        let r = step(&mut st, &m, &mut TestHost::default(), 1000);
        assert_eq!(r, Step::Blocked(Effect::Receive { pattern: None, timeout_ms: None }));
        assert_eq!(st.regs[0], Value::tuple(vec![Value::str("s")]));
        assert_eq!(st.regs[1], Value::Nil, "small's unset register");
        assert_eq!(st.regs[2], Value::tuple(vec![Value::atom("oops"), Value::str("s")]));
        assert!(st.regs.len() > 3 + 6, "the stack grew past main's frame");
        assert!(st.regs[3..].iter().all(|v| matches!(v, Value::Nil)), "{:?}", &st.regs[3..]);
    }

    #[test]
    fn tail_calls_run_in_constant_space() {
        use Instr::*;
        // count(n, acc): if n == 0 return acc else count(n - 1, acc + 1)
        let m = Module {
            funcs: vec![func(
                "count",
                2,
                3,
                vec![
                    Jeqi { a: 0, imm: 0, target: 4 },
                    Addi { dst: 0, a: 0, imm: -1 },
                    Addi { dst: 1, a: 1, imm: 1 },
                    Tcall { f: 0, args: 0, n: 2 },
                    Ret { a: 1 },
                ],
            )],
            ..Module::default()
        };
        let mut st = ActorState::new(&m, 0, vec![Value::Int(1_000_000), Value::Int(0)]).unwrap();
        st.max_frames = 4;
        let mut host = TestHost::default();
        let r = loop {
            match step(&mut st, &m, &mut host, 10_000) {
                Step::Yielded => assert!(st.frames.len() == 1 && st.regs.len() == 3),
                other => break other,
            }
        };
        assert_eq!(r, Step::Exited(Value::Int(1_000_000)));
    }

    #[test]
    fn closures_pass_captured_values_first() {
        use Instr::*;
        let m = Module {
            consts: vec![],
            funcs: vec![
                func(
                    "main",
                    0,
                    4,
                    vec![
                        Int { dst: 0, imm: 10 },
                        Closure { dst: 1, f: 1, env: 0, n: 1 },
                        Int { dst: 2, imm: 3 },
                        Callv { dst: 3, f: 1, args: 2, n: 1 },
                        Ret { a: 3 },
                    ],
                ),
                func("sub", 2, 2, vec![Sub { dst: 0, a: 0, b: 1 }, Ret { a: 0 }]),
            ],
            debug: None,
        };
        assert_eq!(run_to_end(&m, 0, vec![]), Step::Exited(Value::Int(7)));
    }

    /// The issue's requirement: suspend at an effect, round-trip the state through serde, resume,
    /// and get the same result as without the round trip.
    #[test]
    fn blocked_state_survives_a_serde_round_trip() {
        use Instr::*;
        let m = Module {
            consts: vec![Value::str("got one")],
            funcs: vec![func(
                "main",
                1,
                4,
                vec![
                    Const { dst: 3, k: 0 },
                    Print { a: 3 },
                    Recv { dst: 1 },
                    Add { dst: 2, a: 1, b: 0 },
                    Ret { a: 2 },
                ],
            )],
            debug: None,
        };
        let mut st = ActorState::new(&m, 0, vec![Value::Int(40)]).unwrap();
        let mut host = TestHost::default();
        assert_eq!(step(&mut st, &m, &mut host, 100), Step::Blocked(Effect::Print("got one".into())));
        st.resume(&m, Resume::Value(Value::Nil));
        assert_eq!(
            step(&mut st, &m, &mut host, 100),
            Step::Blocked(Effect::Receive { pattern: None, timeout_ms: None })
        );
        assert_eq!(st.position(), Some((0, 2)), "rewound onto the recv");

        let json = serde_json::to_string(&st).unwrap();
        let mut restored: ActorState = serde_json::from_str(&json).unwrap();

        // Path 1: the runtime completes the receive with a value.
        restored.resume(&m, Resume::Value(Value::Int(2)));
        assert_eq!(step(&mut restored, &m, &mut host, 100), Step::Exited(Value::Int(42)));

        // Path 2: after a restore the instruction simply runs again and finds the message.
        let mut again: ActorState = serde_json::from_str(&json).unwrap();
        host.mailbox.push_back(Value::Int(2));
        assert_eq!(step(&mut again, &m, &mut host, 100), Step::Exited(Value::Int(42)));
    }

    #[test]
    fn resume_can_raise_at_the_blocked_instruction_or_time_out() {
        use Instr::*;
        let m = Module {
            consts: vec![Value::atom("late")],
            funcs: vec![func(
                "main",
                0,
                4,
                vec![
                    Try { dst: 3, target: 6 },
                    Int { dst: 1, imm: 50 },
                    Recvt { dst: 0, ms: 1, target: 4 },
                    Ret { a: 0 },
                    Const { dst: 0, k: 0 },
                    Ret { a: 0 },
                    Ret { a: 3 },
                ],
            )],
            debug: None,
        };
        let mut host = TestHost::default();
        let mut st = ActorState::new(&m, 0, vec![]).unwrap();
        assert_eq!(
            step(&mut st, &m, &mut host, 100),
            Step::Blocked(Effect::Receive { pattern: None, timeout_ms: Some(50) })
        );
        let mut interrupted = st.clone();
        st.resume(&m, Resume::Timeout);
        assert_eq!(step(&mut st, &m, &mut host, 100), Step::Exited(Value::atom("late")));

        let exc = Exception::new(atoms::INTERRUPT, "stop");
        interrupted.resume(&m, Resume::Raise(exc.clone()));
        assert_eq!(step(&mut interrupted, &m, &mut host, 100), Step::Exited(exc.to_value()));
    }

    #[test]
    fn append_builds_a_list_in_a_loop() {
        use Instr::*;
        // l = []; for i in 0..1000: l = append(l, i); return {len(l), l[999]}
        let m = Module {
            funcs: vec![func(
                "main",
                0,
                5,
                vec![
                    List { dst: 0, items: 0, n: 0 },
                    Int { dst: 1, imm: 0 },
                    Jgei { a: 1, imm: 1000, target: 6 },
                    Append { dst: 0, l: 0, v: 1 },
                    Addi { dst: 1, a: 1, imm: 1 },
                    Jmp { target: 2 },
                    Len { dst: 2, a: 0 },
                    Tget { dst: 3, t: 0, i: 999 },
                    Tuple { dst: 4, items: 2, n: 2 },
                    Ret { a: 4 },
                ],
            )],
            ..Module::default()
        };
        let want = Value::tuple(vec![Value::Int(1000), Value::Int(999)]);
        assert_eq!(run_to_end(&m, 0, vec![]), Step::Exited(want));
    }

    #[test]
    fn updating_a_shared_collection_leaves_the_original_alone() {
        let original = Value::list(vec![Value::Int(1)]);
        let mut regs = vec![original.clone(), Value::Nil];
        let copy = take_or_clone(&mut regs, 1, 0);
        let updated = set_element(copy, &Value::Int(0), Value::Int(2)).unwrap();
        assert_eq!(regs[0], original);
        assert_eq!(updated, Value::list(vec![Value::Int(2)]));
    }

    #[test]
    fn strings_and_bytes_for_protocol_parsing() {
        assert_eq!(find(&Value::str("GET / HTTP/1.1\r\n"), &Value::str("\r\n")).unwrap(), Value::Int(14));
        assert_eq!(
            split(&Value::str("a,b,,c"), &Value::str(",")).unwrap(),
            Value::list(vec![Value::str("a"), Value::str("b"), Value::str(""), Value::str("c")])
        );
        assert_eq!(
            split(&Value::bytes(&b"x\r\ny"[..]), &Value::str("\r\n")).unwrap(),
            Value::list(vec![Value::bytes(&b"x"[..]), Value::bytes(&b"y"[..])])
        );
        assert_eq!(
            map_text("trim", &Value::str("  hi \r\n"), |t| t.trim_ascii().to_vec()).unwrap(),
            Value::str("hi")
        );
        assert_eq!(to_int(&Value::str("-42")).unwrap(), Value::Int(-42));
        assert!(to_int(&Value::str("4x")).is_err());
        assert!(to_int(&Value::Float(f64::NAN)).is_err());
        assert_eq!(slice(&Value::str("héllo"), &Value::Int(0), &Value::Int(1)).unwrap(), Value::str("h"));
        assert!(slice(&Value::str("héllo"), &Value::Int(0), &Value::Int(2)).is_err());
        assert!(slice(&Value::str("abc"), &Value::Int(2), &Value::Int(9)).is_err());
        assert_eq!(byte_at(&Value::str("A"), &Value::Int(0)).unwrap(), Value::Int(65));
        assert_eq!(concat(Value::str("ab"), &Value::str("cd")).unwrap(), Value::str("abcd"));
    }

    /// Runs `main` with `args` in one step and returns what it did, with the reductions charged.
    fn run_once(m: &Module, args: Vec<Value>) -> (Step, u64) {
        let mut st = ActorState::new(m, 0, args).unwrap();
        let r = step(&mut st, m, &mut TestHost::default(), 1_000_000);
        (r, st.reductions)
    }

    #[test]
    fn incjle_counts_up_to_the_limit_and_charges_each_backward_jump() {
        use Instr::*;
        // s = 0; i = 1; do { s += i } while (++i <= n); return s
        let m = Module {
            funcs: vec![func(
                "main",
                1,
                3,
                vec![
                    Int { dst: 1, imm: 0 },
                    Int { dst: 2, imm: 1 },
                    Add { dst: 1, a: 1, b: 2 },
                    Incjle { a: 2, limit: 0, target: 2 },
                    Ret { a: 1 },
                ],
            )],
            ..Module::default()
        };
        assert_eq!(run_once(&m, vec![Value::Int(10)]), (Step::Exited(Value::Int(55)), 9));
        // The body runs once even when the limit is below the start, like `addi` then `jle`.
        assert_eq!(run_once(&m, vec![Value::Int(-5)]), (Step::Exited(Value::Int(1)), 0));
        // A float limit compares numerically.
        assert_eq!(run_once(&m, vec![Value::Float(3.5)]), (Step::Exited(Value::Int(6)), 2));
    }

    #[test]
    fn incjle_is_typed_as_addi_then_jle() {
        use Instr::*;
        let m = Module {
            funcs: vec![func(
                "main",
                2,
                3,
                vec![
                    Try { dst: 2, target: 4 },
                    Incjle { a: 0, limit: 1, target: 1 },
                    Endtry {},
                    Ret { a: 0 },
                    Tget { dst: 2, t: 2, i: 0 },
                    Ret { a: 2 },
                ],
            )],
            ..Module::default()
        };
        // A float counter steps by 1.0 until it passes the limit; each jump back onto the
        // `incjle` itself costs fuel.
        let r = run_once(&m, vec![Value::Float(0.5), Value::Int(3)]);
        assert_eq!(r, (Step::Exited(Value::Float(3.5)), 2));
        // Overflow raises at the instruction, like `addi`.
        let r = run_once(&m, vec![Value::Int(i64::MAX), Value::Int(0)]);
        assert_eq!(r.0, Step::Exited(Value::Atom(atoms::OVERFLOW)));
        // A counter that is not a number is a type error.
        let r = run_once(&m, vec![Value::str("x"), Value::Int(0)]);
        assert_eq!(r.0, Step::Exited(Value::Atom(atoms::TYPE_ERROR)));
    }

    #[test]
    fn remi_is_typed_as_rem() {
        use Instr::*;
        let remi = |imm| Module {
            funcs: vec![func(
                "main",
                1,
                3,
                vec![
                    Try { dst: 2, target: 4 },
                    Remi { dst: 1, a: 0, imm },
                    Endtry {},
                    Ret { a: 1 },
                    Tget { dst: 2, t: 2, i: 0 },
                    Ret { a: 2 },
                ],
            )],
            ..Module::default()
        };
        let exited = |m: &Module, a: Value| run_once(m, vec![a]).0;
        assert_eq!(exited(&remi(7), Value::Int(30)), Step::Exited(Value::Int(2)));
        assert_eq!(exited(&remi(7), Value::Int(-30)), Step::Exited(Value::Int(-2)));
        assert_eq!(exited(&remi(-7), Value::Int(30)), Step::Exited(Value::Int(2)));
        assert_eq!(exited(&remi(2), Value::Float(7.5)), Step::Exited(Value::Float(1.5)));
        assert_eq!(exited(&remi(0), Value::Int(1)), Step::Exited(Value::Atom(atoms::DIV_BY_ZERO)));
        assert_eq!(exited(&remi(-1), Value::Int(i64::MIN)), Step::Exited(Value::Atom(atoms::OVERFLOW)));
        assert_eq!(exited(&remi(3), Value::Nil), Step::Exited(Value::Atom(atoms::TYPE_ERROR)));
    }

    /// The int fast paths write in place only over scalars; over a heap value (here a string, a
    /// tuple and a pid) they fall back to the full path, which drops the old value.
    #[test]
    fn int_results_replace_heap_values_and_pids() {
        use Instr::*;
        let m = Module {
            consts: vec![Value::str("old"), Value::tuple(vec![Value::str("t")])],
            funcs: vec![func(
                "main",
                1,
                8,
                vec![
                    Const { dst: 1, k: 0 },
                    Const { dst: 2, k: 1 },
                    Self_ { dst: 3 },
                    Const { dst: 4, k: 0 },
                    Const { dst: 5, k: 1 },
                    Add { dst: 1, a: 0, b: 0 },    // 2n
                    Addi { dst: 2, a: 0, imm: 1 }, // n + 1
                    Move { dst: 3, src: 0 },       // n
                    Int { dst: 4, imm: 5 },        // 5
                    Remi { dst: 5, a: 0, imm: 4 }, // n rem 4
                    Add { dst: 1, a: 1, b: 2 },
                    Add { dst: 1, a: 1, b: 3 },
                    Add { dst: 1, a: 1, b: 4 },
                    Add { dst: 1, a: 1, b: 5 },
                    Ret { a: 1 },
                ],
            )],
            debug: None,
        };
        // 2n + (n + 1) + n + 5 + n rem 4 with n = 7: 14 + 8 + 7 + 5 + 3.
        assert_eq!(run_once(&m, vec![Value::Int(7)]).0, Step::Exited(Value::Int(37)));
    }

    /// A call passes heap values and ints alike, its other registers start as nil even when the
    /// register stack above the caller holds old scalars, and a return moves a heap value down.
    #[test]
    fn calls_start_with_nil_registers_and_return_any_value() {
        use Instr::*;
        let m = Module {
            consts: vec![Value::str("s")],
            funcs: vec![
                func(
                    "main",
                    0,
                    3,
                    vec![
                        // The first call leaves ints in the callee's registers above main's.
                        Int { dst: 0, imm: 1 },
                        Call { dst: 1, f: 1, args: 0, n: 1 },
                        Const { dst: 0, k: 0 },
                        Call { dst: 1, f: 1, args: 0, n: 1 },
                        Tuple { dst: 2, items: 0, n: 2 },
                        Ret { a: 2 },
                    ],
                ),
                // probe(x): fills r1 and r2 with ints the first time; returns {x, r1, r2}.
                func(
                    "probe",
                    1,
                    4,
                    vec![
                        Tuple { dst: 3, items: 0, n: 3 },
                        Int { dst: 1, imm: 8 },
                        Int { dst: 2, imm: 9 },
                        Ret { a: 3 },
                    ],
                ),
            ],
            debug: None,
        };
        let probe = |x: Value| Value::tuple(vec![x, Value::Nil, Value::Nil]);
        let want = Value::tuple(vec![Value::str("s"), probe(Value::str("s"))]);
        assert_eq!(run_once(&m, vec![]).0, Step::Exited(want));
    }

    /// A tail call through a closure into a function with more registers than the register stack
    /// holds grows the stack before placing the arguments; its other registers are nil there.
    #[test]
    fn tail_call_of_a_closure_into_a_larger_frame() {
        use Instr::*;
        // main has 3 registers; f receives 2 captured values and 2 arguments in 6 registers.
        let m = Module {
            funcs: vec![
                func(
                    "main",
                    0,
                    3,
                    vec![
                        Int { dst: 0, imm: 1 },
                        Int { dst: 1, imm: 2 },
                        Closure { dst: 2, f: 1, env: 0, n: 2 },
                        Int { dst: 0, imm: 3 },
                        Int { dst: 1, imm: 4 },
                        Tcallv { f: 2, args: 0, n: 2 },
                    ],
                ),
                func("f", 4, 6, vec![Tuple { dst: 5, items: 0, n: 5 }, Ret { a: 5 }]),
            ],
            ..Module::default()
        };
        let want = Value::tuple(vec![1, 2, 3, 4].into_iter().map(Value::Int).chain([Value::Nil]).collect());
        assert_eq!(run_once(&m, vec![]).0, Step::Exited(want));
    }

    #[test]
    fn arithmetic_edge_cases() {
        assert_eq!(arith(Arith::Add, &Value::Int(1), &Value::Float(0.5)).unwrap(), Value::Float(1.5));
        assert_eq!(
            arith(Arith::Div, &Value::Int(i64::MIN), &Value::Int(-1)).unwrap_err().kind,
            atoms::OVERFLOW
        );
        assert_eq!(arith(Arith::Rem, &Value::Int(1), &Value::Int(0)).unwrap_err().kind, atoms::DIV_BY_ZERO);
        assert_eq!(arith(Arith::Div, &Value::Int(-7), &Value::Int(2)).unwrap(), Value::Int(-3));
        assert_eq!(arith(Arith::Add, &Value::str("a"), &Value::Int(1)).unwrap_err().kind, atoms::TYPE_ERROR);
        assert!(shift_amount(64).is_err());
    }
}
