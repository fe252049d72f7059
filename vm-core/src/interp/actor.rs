//! Actor and channel operations for `slow`: spawning, receiving, channel sends, receives and
//! selects, pid and atom operands, and actor control through [`Host::control`].
//!
//! 1. The fast path never leaves the stepper: a message already in the mailbox, a channel
//!    partner already waiting or a ready select case is committed through the [`Host`] at once.
//! 2. Otherwise the operation returns [`Flow::Block`] with an [`Effect`] that carries everything
//!    the runtime needs (cloned out of the registers only then), and writes no register: the
//!    instruction stays where it is and runs again on resume (rewind before suspend).
//! 3. A zero timeout never blocks: it jumps to the instruction's label at once.

use super::Flow;
use super::frame::store;
use super::value_ops::type_err;
use crate::atom::{Atom, atoms};
use crate::exception::Exception;
use crate::step::{
    ActorOp, Begun, ChanArg, ChanTried, Effect, Host, OneCase, Received, Resume, SelectCase, SelectShape,
    SpawnOpts, send_closed,
};
use crate::value::{Handle, Pid, Value};

/// Starts an actor from a function value.
pub(super) fn spawn<H: Host + ?Sized>(
    host: &mut H,
    f: &Value,
    args: Vec<Value>,
    mut opts: SpawnOpts,
    rng: &mut u64,
) -> Result<Value, Exception> {
    let Value::Fun(c) = f else {
        return Err(type_err("spawn", "a function value", f));
    };
    // The child's generator is seeded from this actor's, so a seeded run is reproducible.
    opts.seed = Some(crate::rng::next(rng));
    let (pid, monitor) = host.spawn(c.clone(), args, opts)?;
    Ok(match monitor {
        Some(r) => Value::tuple(vec![Value::Pid(pid), Value::Int(r)]),
        None => Value::Pid(pid),
    })
}

/// The receive instructions: the fast path takes a message already in the mailbox; otherwise a
/// zero timeout jumps at once and anything else blocks. A selective receive (with `pattern`)
/// looks at no more queued messages than `budget` allows, spending one unit of it per message
/// (see [`Host::try_receive_matching`]); [`Flow::Yield`] if it stopped there.
#[allow(clippy::too_many_arguments)]
pub(super) fn receive<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    dst: u16,
    pattern: Option<Value>,
    timeout_ms: Option<u64>,
    target: u32,
    meter: &mut crate::mem::Meter,
    budget: &mut u32,
) -> Flow {
    let got = match (&pattern, timeout_ms) {
        (Some(p), _) => match host.try_receive_matching(p, timeout_ms.is_none(), budget) {
            Some(got) => got,
            None => return Flow::Yield,
        },
        (None, None) => host.try_receive_or_park(None),
        (None, Some(_)) => match host.try_receive(None) {
            Some(msg) => Received::Message(msg),
            None => Received::Empty,
        },
    };
    match got {
        Received::Message(msg) => {
            meter.add(crate::mem::message_size(&msg));
            store(&mut regs[dst as usize], msg);
            Flow::Next
        }
        Received::Parked => Flow::Block(Effect::Begun(Begun::Receive)),
        Received::Empty if timeout_ms == Some(0) => Flow::Jump(target),
        Received::Empty => Flow::Block(Effect::Receive { pattern, timeout_ms }),
    }
}

/// `recvp` (no `ms`) and `recvpt`: [`receive`] with the pattern in register `pat`, looking at
/// no more queued messages than `budget` (`run` passes the fuel left, and charges what was
/// spent).
#[allow(clippy::too_many_arguments)]
pub(super) fn selective<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    dst: u16,
    pat: u16,
    ms: Option<u16>,
    target: u32,
    meter: &mut crate::mem::Meter,
    budget: &mut u32,
) -> Flow {
    let timeout_ms = match ms.map(|r| millis("recvpt", &regs[r as usize])).transpose() {
        Ok(t) => t,
        Err(e) => return Flow::Throw(e),
    };
    let pattern = regs[pat as usize].clone();
    receive(host, regs, dst, Some(pattern), timeout_ms, target, meter, budget)
}

/// A channel operand.
pub(super) fn chan_of(op: &str, v: &Value) -> Result<Handle, Exception> {
    chan_ref(op, v).cloned()
}

pub(super) fn chan_ref<'v>(op: &str, v: &'v Value) -> Result<&'v Handle, Exception> {
    match v {
        Value::Chan(h) => Ok(h),
        x => Err(type_err(op, "a channel", x)),
    }
}

/// What `csend` or `crecv` asks of `run`: the common outcomes in two words, which come back
/// in registers, and the rare ones (a raise, a wait begun as a select, a closed channel's
/// jump) as a boxed [`Flow`]. A `Flow` holds an [`Effect`] and comes back through memory, and
/// `run` copying a parked one's effect out of it stalled on store forwarding at every park
/// (`docs/BENCHMARKS.md`, "chan5"); `run` builds the parked effect itself, as for `recv`.
pub(super) enum ChanFlow {
    /// Done: the next instruction.
    Next,
    /// The host parked the actor on the channel ([`Begun::Chan`]).
    Parked,
    /// Anything else.
    Other(Box<Flow>),
}

impl ChanFlow {
    fn other(f: Flow) -> ChanFlow {
        ChanFlow::Other(Box::new(f))
    }

    /// The same as a [`Flow`] (for `slow`).
    pub(super) fn into_flow(self) -> Flow {
        match self {
            ChanFlow::Next => Flow::Next,
            ChanFlow::Parked => Flow::Block(Effect::Begun(Begun::Chan)),
            ChanFlow::Other(f) => *f,
        }
    }
}

/// `csend ch, v`: [`chan_one`] for a send, in a copy of its own.
#[inline(never)]
pub(super) fn csend<H: Host + ?Sized>(host: &mut H, regs: &mut [Value], ch: u16, v: u16) -> ChanFlow {
    chan_one::<H, true>(host, regs, ch, v, 0)
}

/// `crecv dst, ch, closed`: [`chan_one`] for a receive, in a copy of its own.
#[inline(never)]
pub(super) fn crecv<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    dst: u16,
    ch: u16,
    closed: u32,
) -> ChanFlow {
    chan_one::<H, false>(host, regs, ch, dst, closed)
}

/// `csend` (`SEND`, with `reg` the value's register) and `crecv` (with `reg` the destination
/// and the `closed` label): [`select`] over one case, tried with the channel and value
/// borrowed from the registers. The host may park the actor on the channel in the same call
/// ([`Begun::Chan`]); otherwise the case is only built (cloning them) when the actor has to
/// wait. A parked one runs again once woken and then takes its outcome here, as one that
/// completes at once does ([`one_case`](crate::step::one_case)). Inlined into [`csend`] and
/// [`crecv`], so that each is a copy without the other's branches whose arguments all
/// travel in registers (one function for both took two on the stack and tested them).
#[inline(always)]
fn chan_one<H: Host + ?Sized, const SEND: bool>(
    host: &mut H,
    regs: &mut [Value],
    ch: u16,
    reg: u16,
    closed: u32,
) -> ChanFlow {
    let op = if SEND { "csend" } else { "crecv" };
    let tried = if SEND {
        let h = match chan_ref(op, &regs[ch as usize]) {
            Ok(h) => h,
            Err(e) => return ChanFlow::other(Flow::Throw(e)),
        };
        host.chan_try_or_park(h, ChanArg::Send(&regs[reg as usize]))
    } else {
        // The channel's register and the destination, borrowed apart.
        let (ch, dst) = (ch as usize, reg as usize);
        let (chan, into) = match ch.cmp(&dst) {
            std::cmp::Ordering::Less => {
                let (lo, hi) = regs.split_at_mut(dst);
                (&lo[ch], &mut hi[0])
            }
            std::cmp::Ordering::Greater => {
                let (lo, hi) = regs.split_at_mut(ch);
                (&hi[0], &mut lo[dst])
            }
            std::cmp::Ordering::Equal => return crecv_into_own(host, regs, dst, closed),
        };
        match chan_ref(op, chan) {
            Ok(h) => host.chan_try_or_park(h, ChanArg::Recv(into)),
            Err(e) => return ChanFlow::other(Flow::Throw(e)),
        }
    };
    chan_flow::<SEND>(tried, regs, ch, reg, closed)
}

/// What a `csend` (`SEND`) or `crecv` does with the host's answer. The channel is still in
/// register `ch` whenever it is needed again (nothing was received into it).
#[inline(always)]
fn chan_flow<const SEND: bool>(
    tried: ChanTried,
    regs: &mut [Value],
    ch: u16,
    reg: u16,
    closed: u32,
) -> ChanFlow {
    match tried {
        ChanTried::Done(c) => one_done::<SEND>(regs, reg, closed, c),
        ChanTried::Stored => ChanFlow::Next,
        ChanTried::Parked => ChanFlow::Parked,
        ChanTried::Empty => wait_as_select::<SEND>(regs, ch, reg),
        ChanTried::Raise(e) => ChanFlow::other(Flow::Throw(*e)),
    }
}

/// `crecv r, r`: a receive into its own channel's register, with the handle cloned so that the
/// register can be written. Out of line: an unusual program.
#[cold]
#[inline(never)]
fn crecv_into_own<H: Host + ?Sized>(host: &mut H, regs: &mut [Value], reg: usize, closed: u32) -> ChanFlow {
    let tried = match chan_of("crecv", &regs[reg]) {
        Ok(h) => host.chan_try_or_park(&h, ChanArg::Recv(&mut regs[reg])),
        Err(e) => return ChanFlow::other(Flow::Throw(e)),
    };
    chan_flow::<false>(tried, regs, reg as u16, reg as u16, closed)
}

/// A `csend` (`SEND`) or `crecv` on the channel in register `ch` that the host tried but did
/// not park: it waits as a one-case select, with the case built now (cloning the handle and
/// the value).
#[cold]
#[inline(never)]
fn wait_as_select<const SEND: bool>(regs: &[Value], ch: u16, reg: u16) -> ChanFlow {
    let op = if SEND { "csend" } else { "crecv" };
    let h = match chan_of(op, &regs[ch as usize]) {
        Ok(h) => h,
        Err(e) => return ChanFlow::other(Flow::Throw(e)),
    };
    let (shape, case) = if SEND {
        (SelectShape::Send, SelectCase::Send(h, regs[reg as usize].clone()))
    } else {
        (SelectShape::Recv, SelectCase::Recv(h))
    };
    ChanFlow::other(Flow::Block(Effect::Select { shape, cases: vec![case], timeout_ms: None }))
}

/// A completed `csend` (`SEND`) or `crecv`'s result, as the instruction applies it.
#[inline(always)]
fn one_done<const SEND: bool>(regs: &mut [Value], reg: u16, closed: u32, done: OneCase) -> ChanFlow {
    match done {
        OneCase::Value(v) if SEND => {
            // A send's result is always `nil` (`one_case`), which owns nothing: no drop call.
            debug_assert!(matches!(v, Value::Nil));
            std::mem::forget(v);
            ChanFlow::Next
        }
        OneCase::Value(v) => {
            store(&mut regs[reg as usize], v);
            ChanFlow::Next
        }
        OneCase::Closed => ChanFlow::other(Flow::Jump(closed)),
        OneCase::SendClosed => ChanFlow::other(Flow::Throw(send_closed())),
    }
}

/// Reads the case list of `select`: `{:send, ch, v}`, `{:recv, ch}` or `{:msg, pattern}`.
pub(super) fn select_cases(v: &Value) -> Result<Vec<SelectCase>, Exception> {
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

/// `select dst, cases, ms, target`: reads its operands and runs [`select`], whose mailbox cases
/// look at no more queued messages than `budget` (`run` passes the fuel left, as for `recvp`).
/// Out of line, so that `run`'s loop stays small.
#[inline(never)]
pub(super) fn select_instr<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    dst: u16,
    cases: u16,
    ms: u16,
    target: u32,
    budget: &mut u32,
) -> Flow {
    let timeout = match &regs[ms as usize] {
        Value::Int(ms) if *ms < 0 => Ok(None),
        Value::Int(ms) => Ok(Some(*ms as u64)),
        x => Err(type_err("select", "milliseconds as an int", x)),
    };
    match (select_cases(&regs[cases as usize]), timeout) {
        (Ok(cases), Ok(timeout)) => {
            select(host, regs, Some(dst), target, SelectShape::Select, cases, timeout, budget)
        }
        (Err(e), _) | (_, Err(e)) => Flow::Throw(e),
    }
}

/// The channel instructions: commit a ready case now (the fast path never leaves the stepper),
/// jump at once for a zero timeout, or block on the whole select. Mailbox cases look at no more
/// queued messages than `budget`, one unit each ([`Host::chan_try_within`]); [`Flow::Yield`] if
/// the scan stopped there. (`csend` and `crecv` take [`chan_one`].)
#[allow(clippy::too_many_arguments)]
pub(super) fn select<H: Host + ?Sized>(
    host: &mut H,
    regs: &mut [Value],
    dst: Option<u16>,
    label: u32,
    shape: SelectShape,
    cases: Vec<SelectCase>,
    timeout_ms: Option<u64>,
    budget: &mut u32,
) -> Flow {
    let Some(tried) = host.chan_try_within(&cases, budget) else { return Flow::Yield };
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
pub(super) fn pid_of<H: Host + ?Sized>(host: &mut H, op: &str, v: &Value) -> Result<Pid, Exception> {
    match v {
        Value::Pid(p) => Ok(*p),
        Value::Atom(name) => match host.control(ActorOp::Whereis(*name))? {
            Value::Pid(p) => Ok(p),
            _ => Err(Exception::new(atoms::NOPROC, format!("{op}: no actor registered as {}", v.repr()))),
        },
        x => Err(type_err(op, "a pid or registered name", x)),
    }
}

pub(super) fn atom_of(op: &str, v: &Value) -> Result<Atom, Exception> {
    match v {
        Value::Atom(a) => Ok(*a),
        x => Err(type_err(op, "an atom", x)),
    }
}

/// Runs an actor operation whose result is not kept.
pub(super) fn control<H: Host + ?Sized>(host: &mut H, op: Result<ActorOp, Exception>) -> Flow {
    match op.and_then(|op| host.control(op)) {
        Ok(_) => Flow::Next,
        Err(e) => Flow::Throw(e),
    }
}

#[inline(never)]
pub(super) fn millis(op: &str, v: &Value) -> Result<u64, Exception> {
    match v {
        Value::Int(ms) if *ms >= 0 => Ok(*ms as u64),
        Value::Int(ms) => Err(Exception::badarg(format!("{op}: negative time {ms}"))),
        x => Err(type_err(op, "milliseconds as an int", x)),
    }
}
