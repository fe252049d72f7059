//! `slow`: every instruction the dispatch loop does not finish itself, run out of line in full
//! generality.
//!
//! 1. It holds the instructions with no fast path in `run` (data structures, text, exceptions,
//!    actor and channel operations) and the slow paths of those that have one (other operand
//!    types, errors, a heap value in the destination), so the loop stays small.
//! 2. It sees only the running frame's registers (`regs`, from the frame's `r0`) and never
//!    touches the frame stack: calls, returns and tail calls are the loop's. It reports what
//!    should happen next as a [`Flow`]; the loop moves `pc`, charges fuel and unwinds.
//! 3. An instruction that must wait returns [`Flow::Block`] without having changed any register
//!    it reads, so the loop can leave `pc` on it (rewind before suspend) and it runs again,
//!    whole, on resume.
//! 4. A register write goes through [`store`], which keeps drop glue out of the common case.

use super::Flow;
use super::actor::{
    atom_of, chan_ref, control, crecv, csend, millis, pid_of, receive, select_instr, selective, spawn,
};
use super::frame::{store, take_or_clone, window};
use super::value_ops::{
    Arith, arith, bitop, byte_at, concat, element, find, length, map_text, set_element, shift_amount, slice,
    split, to_float, to_int, type_err,
};
use crate::atom::{Atom, atoms};
use crate::exception::Exception;
use crate::mem::{self, MemUse, Meter};
use crate::module::Module;
use crate::ops::Instr;
use crate::step::{ActorOp, Begun, Effect, Fired, Handler, Host, NativeCall, SpawnOpts};
use crate::value::{Closure, Value};
use std::sync::Arc;

/// What [`slow`] needs besides the instruction, the running frame's registers and the host: the
/// module and the parts of the actor state that `run` holds apart. `run` builds it once per step
/// and sets `depth` before each call, so that `slow` takes five arguments, all passed in machine
/// registers (with the parts passed one by one, five arguments went on the stack: stored before
/// every call and loaded at its entry, about 14 instructions a call).
pub(super) struct Cx<'a> {
    /// The module the actor runs.
    pub(super) m: &'a Module,
    /// The actor's exception handlers.
    pub(super) handlers: &'a mut Vec<Handler>,
    /// The actor's random generator's state.
    pub(super) rng: &'a mut u64,
    /// The actor's allocation meter.
    pub(super) meter: &'a mut Meter,
    /// The running frame's index in the frame stack (what `try` records); set by `run` before
    /// each call.
    pub(super) depth: u32,
}

/// Runs one instruction in full generality, out of line: the instructions with no fast path in
/// [`run`] (data structures, text, exceptions, actor operations) and the slow paths of those that
/// have one (other operand types, errors, a heap value in the destination). Keeping them out of
/// `run` keeps the interpreter loop small enough for the compiler to hold its state in registers.
/// The instruction comes by reference (a copy of it takes two argument registers) and the rest of
/// the actor in one [`Cx`], so every argument is in a register.
#[inline(never)]
pub(super) fn slow<H: Host + ?Sized>(
    instr: &Instr,
    regs: &mut [Value],
    host: &mut H,
    cx: &mut Cx<'_>,
) -> Flow {
    let consts = &cx.m.consts;
    // Counts an allocation of `n` bytes about to happen (see `crate::mem`): a large one is
    // shown to the host first, which may end the actor instead.
    macro_rules! alloc {
        ($n:expr) => {{
            let n: u64 = $n;
            if n >= mem::BIG
                && let Err(reason) = host.memory(MemUse { live: None, since: cx.meter.alloc(), more: n })
            {
                return Flow::Block(Effect::Stop(reason));
            }
            cx.meter.add(n);
        }};
    }
    // Counts the boxes of a result just made (operations whose result is no larger than their
    // operands, so it needs no check beforehand).
    macro_rules! made {
        ($v:expr) => {{
            let v: Result<Value, Exception> = $v;
            if let Ok(v) = &v {
                cx.meter.add(fresh(v));
            }
            v
        }};
    }
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
    match *instr {
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
        Instr::Addw { dst, a, b } => {
            put!(dst, bitop("addw", &reg!(a), &reg!(b), |x, y| Ok(x.wrapping_add(y))))
        }
        Instr::Subw { dst, a, b } => {
            put!(dst, bitop("subw", &reg!(a), &reg!(b), |x, y| Ok(x.wrapping_sub(y))))
        }
        Instr::Mulw { dst, a, b } => {
            put!(dst, bitop("mulw", &reg!(a), &reg!(b), |x, y| Ok(x.wrapping_mul(y))))
        }
        Instr::Lsr { dst, a, b } => {
            put!(
                dst,
                bitop("lsr", &reg!(a), &reg!(b), |x, y| shift_amount(y).map(|s| ((x as u64) >> s) as i64))
            )
        }
        Instr::Rand { dst, lo, hi } => {
            let r = match (&reg!(lo), &reg!(hi)) {
                (Value::Int(lo), Value::Int(hi)) => crate::rng::int_in(cx.rng, *lo, *hi).map(Value::Int),
                (lo, hi) => Err(Exception::type_error(format!(
                    "rand: expected ints, got {} and {}",
                    lo.type_atom(),
                    hi.type_atom()
                ))),
            };
            put!(dst, r)
        }
        Instr::Randf { dst } => set!(dst, Value::Float(crate::rng::float(cx.rng))),
        Instr::Randb { dst, n } => {
            let r = match &reg!(n) {
                Value::Int(n) => crate::rng::bytes(cx.rng, *n).map(Value::bytes),
                x => Err(type_err("randb", "an int count", x)),
            };
            put!(dst, r)
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
        Instr::Jeqk { a, k, target } => branch!(reg!(a) == consts[k as usize], target),
        Instr::Jnek { a, k, target } => branch!(reg!(a) != consts[k as usize], target),
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
            alloc!(48);
            let v = Value::Fun(Arc::new(Closure { func: f, env: Vec::new() }));
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Closure { dst, f, env, n } => {
            alloc!(48 + u64::from(n) * mem::SLOT);
            let env = window(regs, env as usize, n);
            let v = Value::Fun(Arc::new(Closure { func: f, env }));
            store(&mut reg!(dst), v);
            Flow::Next
        }

        Instr::Tuple { dst, items, n } => {
            alloc!(40 + u64::from(n) * mem::SLOT);
            let v = Value::tuple(window(regs, items as usize, n));
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::List { dst, items, n } => {
            alloc!(40 + u64::from(n) * mem::SLOT);
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
            alloc!(mem::copy_cost(&coll));
            put!(dst, set_element(coll, &idx, item))
        }
        Instr::Len { dst, a } => put!(dst, length(&reg!(a))),
        Instr::Append { dst, l, v } => {
            let item = reg!(v).clone();
            let mut list = take_or_clone(regs, dst, l);
            let r = match &mut list {
                Value::List(items) => {
                    // A copy of the box if it is shared (`mem::copy_cost`, written out for the
                    // list in hand), and the growth of its buffer.
                    let copy = if Arc::strong_count(items) > 1 { mem::seq_box(items.capacity()) } else { 0 };
                    alloc!(copy + mem::growth(items.len(), items.capacity(), 1, mem::SLOT));
                    Arc::make_mut(items).push(item);
                    Ok(list)
                }
                x => Err(type_err("append", "a list", x)),
            };
            put!(dst, r)
        }
        Instr::Map { dst } => {
            alloc!(40);
            let v = Value::Map(Arc::default());
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Mput { dst, m: mr, k, v } => {
            let key = reg!(k).clone();
            let val = reg!(v).clone();
            let mut map = take_or_clone(regs, dst, mr);
            alloc!(mem::copy_cost(&map) + mem::MAP_ENTRY);
            let r = match &mut map {
                Value::Map(m) => {
                    Arc::make_mut(m).insert(key, val);
                    Ok(map)
                }
                x => Err(type_err("mput", "a map", x)),
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
            let mut map = take_or_clone(regs, dst, mr);
            alloc!(mem::copy_cost(&map));
            let r = match &mut map {
                Value::Map(m) => {
                    if m.contains_key(&key) {
                        Arc::make_mut(m).remove(&key);
                    }
                    Ok(map)
                }
                x => Err(type_err("mdel", "a map", x)),
            };
            put!(dst, r)
        }
        Instr::Mkeys { dst, m: mr } => {
            let r = match &reg!(mr) {
                Value::Map(map) => Ok(Value::list(map.keys().cloned().collect())),
                x => Err(type_err("mkeys", "a map", x)),
            };
            put!(dst, made!(r))
        }

        Instr::Concat { dst, a, b } => {
            let right = reg!(b).clone();
            let left = take_or_clone(regs, dst, a);
            alloc!(concat_cost(&left, &right));
            put!(dst, concat(left, &right))
        }
        Instr::Slice { dst, s, from, to } => put!(dst, made!(slice(&reg!(s), &reg!(from), &reg!(to)))),
        Instr::Find { dst, hay, needle } => put!(dst, find(&reg!(hay), &reg!(needle))),
        Instr::Split { dst, s, sep } => put!(dst, made!(split(&reg!(s), &reg!(sep)))),
        Instr::Trim { dst, s } => put!(dst, made!(map_text("trim", &reg!(s), |t| t.trim_ascii().to_vec()))),
        Instr::Upper { dst, s } => put!(dst, made!(map_text("upper", &reg!(s), |t| t.to_ascii_uppercase()))),
        Instr::Lower { dst, s } => put!(dst, made!(map_text("lower", &reg!(s), |t| t.to_ascii_lowercase()))),
        Instr::Byte { dst, s, i } => put!(dst, byte_at(&reg!(s), &reg!(i))),
        Instr::Format { dst, template, args, n } => {
            let args = &regs[args as usize..args as usize + n as usize];
            let r = match &consts[template as usize] {
                Value::Str(t) => crate::format::format(t, args).map(Value::str),
                Value::Bytes(t) => crate::format::format_bytes(t, args).map(Value::bytes),
                x => Err(type_err("format", "a string or bytes template", x)),
            };
            put!(dst, made!(r))
        }
        Instr::Tostr { dst, a } => {
            let v = match &reg!(a) {
                s @ Value::Str(_) => s.clone(),
                x => Value::str(x.to_string()),
            };
            cx.meter.add(mem::node_size(&v));
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
            put!(dst, made!(r))
        }
        Instr::Stob { dst, s } => {
            let r = match &reg!(s) {
                Value::Str(s) => Ok(Value::bytes(s.as_bytes().to_vec())),
                b @ Value::Bytes(_) => Ok(b.clone()),
                x => Err(type_err("stob", "a string", x)),
            };
            put!(dst, made!(r))
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
            cx.handlers.push(Handler { frame: cx.depth, target, dst });
            Flow::Next
        }
        Instr::Endtry {} => {
            if cx.handlers.last().is_some_and(|h| h.frame == cx.depth) {
                cx.handlers.pop();
            }
            Flow::Next
        }

        Instr::Print { a } => Flow::Block(Effect::Print(reg!(a).to_string())),
        Instr::MakeRef { dst } => put!(dst, host.control(ActorOp::MakeRef)),
        Instr::Self_ { dst } => {
            let v = Value::Pid(host.self_pid());
            store(&mut reg!(dst), v);
            Flow::Next
        }
        Instr::Spawn { dst, f, args, n } => {
            put!(dst, spawn(host, &reg!(f), window(regs, args as usize, n), SpawnOpts::default(), cx.rng))
        }
        Instr::Spawnl { dst, f, args, n } => {
            let opts = SpawnOpts { link: true, ..SpawnOpts::default() };
            put!(dst, spawn(host, &reg!(f), window(regs, args as usize, n), opts, cx.rng))
        }
        Instr::Spawnm { dst, f, args, n } => {
            let opts = SpawnOpts { monitor: true, ..SpawnOpts::default() };
            put!(dst, spawn(host, &reg!(f), window(regs, args as usize, n), opts, cx.rng))
        }
        Instr::Spawnx { dst, f, args, opts } => {
            let r = match (&reg!(args), SpawnOpts::from_map(&reg!(opts))) {
                (Value::List(a), Ok(o)) => spawn(host, &reg!(f), a.to_vec(), o, cx.rng),
                (_, Err(e)) => Err(e),
                (x, _) => Err(type_err("spawnx", "a list of arguments", x)),
            };
            put!(dst, r)
        }
        Instr::Send { to, msg } => {
            let to = &reg!(to);
            let r = match name_on_node(to) {
                Some((name, node)) => host.send_to_node(name, node, reg!(msg).clone()),
                None => match pid_of(host, "send", to) {
                    Ok(pid) => host.send(pid, reg!(msg).clone()),
                    Err(e) => Err(e),
                },
            };
            match r {
                Ok(()) => Flow::Next,
                Err(_) if host.send_waits() => Flow::Block(Effect::Begun(Begun::Send)),
                Err(e) => Flow::Throw(e),
            }
        }
        // (A plain receive looks at one message, and is charged nothing for it.)
        Instr::Recv { dst } => receive(host, regs, dst, None, None, 0, cx.meter, &mut 0),
        Instr::Recvt { dst, ms, target } => match millis("recvt", &reg!(ms)) {
            Ok(ms) => receive(host, regs, dst, None, Some(ms), target, cx.meter, &mut 0),
            Err(e) => Flow::Throw(e),
        },
        // `run` runs these itself, with the fuel left as the budget; this is the same in full.
        Instr::Recvp { dst, pat } => {
            let mut unbounded = u32::MAX;
            selective(host, regs, dst, pat, None, 0, cx.meter, &mut unbounded)
        }
        Instr::Recvpt { dst, pat, ms, target } => {
            let mut unbounded = u32::MAX;
            selective(host, regs, dst, pat, Some(ms), target, cx.meter, &mut unbounded)
        }
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
            // only a native that must wait leaves the interpreter, and only one the host did
            // not start takes a copy of its arguments (see `step`'s docs, paths 3 and 4).
            let (from, n) = (args as usize, n as usize);
            match host.native(name, &regs[from..from + n]) {
                // The result is charged where it lies, matched once: no copy of it is kept
                // across the charge.
                NativeCall::Done(Ok(v)) => {
                    cx.meter.add(mem::message_size(&v));
                    set!(dst, v)
                }
                NativeCall::Done(Err(e)) => Flow::Throw(e),
                NativeCall::Begun(id) => Flow::Block(Effect::Begun(Begun::Native(id))),
                NativeCall::Deferred(id) => {
                    Flow::Block(Effect::Native { id, args: window(regs, args as usize, n as u16) })
                }
            }
        }
        Instr::Chan { dst, cap } => match &reg!(cap) {
            Value::Int(c) if *c >= 0 => put!(dst, host.chan_new(*c as usize)),
            x => Flow::Throw(type_err("chan", "a capacity (an int >= 0)", x)),
        },
        Instr::Csend { ch, v } => csend(host, regs, ch, v).into_flow(),
        Instr::Crecv { dst, ch, closed } => crecv(host, regs, dst, ch, closed).into_flow(),
        Instr::Ctrysend { dst, ch, v } => {
            let r =
                chan_ref("ctrysend", &reg!(ch)).and_then(|h| match host.chan_try_one(h, Some(&reg!(v)))? {
                    Some(Fired::SendClosed(_)) => Err(crate::step::send_closed()),
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
        // `run` runs this itself, with the fuel left as the budget; this is the same in full.
        Instr::Select { dst, cases, ms, target } => {
            let mut unbounded = u32::MAX;
            select_instr(host, regs, dst, cases, ms, target, &mut unbounded)
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

/// The boxes of a value just made: its own and those of its elements (the parts of a `split`).
fn fresh(v: &Value) -> u64 {
    let own = mem::node_size(v);
    match v {
        Value::List(items) => own + items.iter().map(mem::node_size).sum::<u64>(),
        _ => own,
    }
}

/// What `concat` allocates: a copy of a shared left operand, and the growth of its buffer (a
/// new buffer for bytes, which are not grown in place).
fn concat_cost(left: &Value, right: &Value) -> u64 {
    let copy = mem::copy_cost(left);
    match (left, right) {
        (Value::Str(x), Value::Str(y)) => {
            let cap = if copy > 0 { x.len() } else { x.capacity() };
            copy + mem::growth(x.len(), cap, y.len(), 1)
        }
        (Value::Bytes(x), Value::Bytes(y)) => 80 + (x.len() + y.len()) as u64,
        (Value::List(x), Value::List(y)) => {
            let cap = if copy > 0 { x.len() } else { x.capacity() };
            copy + mem::growth(x.len(), cap, y.len(), mem::SLOT)
        }
        _ => 0,
    }
}

/// `{name, node}`, the address of an actor registered on another node, if `to` is one.
fn name_on_node(to: &Value) -> Option<(Atom, Atom)> {
    match to {
        Value::Tuple(t) => match &t[..] {
            [Value::Atom(name), Value::Atom(node)] => Some((*name, *node)),
            _ => None,
        },
        _ => None,
    }
}
