//! The stepper contract: what the interpreter returns and what it needs from its host.
//!
//! [`crate::interp::step`] runs one actor for a budget of fuel and returns a [`Step`]; it never
//! blocks and never awaits. Things that complete at once (spawn, send, a message already in the
//! mailbox, the clock) go through the synchronous [`Host`] trait. Anything that would wait is
//! returned as [`Step::Blocked`] with an [`Effect`] describing it, as plain data.
//!
//! **Rewind before suspend.** When an instruction blocks, the actor's program counter stays *on*
//! that instruction and its operands stay in their registers. The runtime completes the effect and
//! calls [`ActorState::resume`]:
//! - [`Resume::Value`]: the result is written to the instruction's `dst` register (if it has one)
//!   and execution continues after it;
//! - [`Resume::Raise`]: the exception is raised *at* the instruction, so a surrounding `try`
//!   catches it exactly as if the instruction had failed by itself;
//! - [`Resume::Timeout`]: execution continues at the instruction's label operand (`recvt`);
//! - [`Resume::Retry`]: nothing changes and the instruction runs again on the next step.
//!
//! A blocked actor is therefore plain data: it can be serialised (serde), restored, interrupted
//! or timed out without any Rust future being involved, and after a restore the runtime may simply
//! step it again, which re-issues the effect.
//!
//! **Every path an instruction can take.** A step runs instructions until one of these happens;
//! nothing else passes between the interpreter and the runtime:
//! 1. The instruction completes inside the step, through [`Host`] calls that never wait (a
//!    message already in the mailbox, a channel partner already parked, an inline native, I/O
//!    whose data is ready), and the next one runs.
//! 2. The fuel runs out: [`Step::Yielded`], the actor is runnable. A selective receive's scan
//!    of the mailbox is charged too, one unit per message looked at
//!    ([`Host::try_receive_matching`]): a scan that spends the fuel stops where it is and
//!    yields, and the receive runs again, going on from there.
//! 3. The instruction must wait and the runtime begins the wait: [`Step::Blocked`] with a plain
//!    [`Effect`] ([`Effect::Print`], [`Effect::Sleep`], [`Effect::Receive`], [`Effect::Yield`],
//!    [`Effect::Select`], [`Effect::Native`], [`Effect::Stop`]). The runtime waits and calls
//!    [`ActorState::resume`].
//! 4. The instruction must wait and the *host* has already begun the wait inside the step
//!    ([`Effect::Begun`]), which saves the runtime doing it again: [`Begun::Receive`] (the host
//!    parked the actor on its mailbox: once woken, the runtime steps the actor again *without*
//!    resuming, so the receive runs again and takes the message, or steps aside to
//!    [`Effect::Receive`]), [`Begun::Chan`] (the host parked the actor on the channel of its
//!    `csend` or `crecv` and holds the wait: the runtime awaits it and resumes with its outcome)
//!    or [`Begun::Native`] (the host started the native's I/O operation and
//!    holds it in flight: the runtime awaits that operation and resumes with its result). A
//!    native's arguments stay in their registers; only [`Effect::Native`], a native the host did
//!    not start (one that may block its thread), carries a copy of them.
//! 5. The actor's first function returns ([`Step::Exited`]) or an exception escapes every
//!    handler ([`Step::Failed`]).
//!
//! **A begun wait may be abandoned.** The host's in-flight state (a parked mailbox, an I/O
//! operation) is never part of the actor: dropping it — cancelling the operation, which loses no
//! input (bytes read stay in the connection's buffer), or unparking the mailbox — and stepping the
//! actor again re-runs the instruction, which begins its wait afresh. So an actor blocked on a
//! begun wait is still plain data: a snapshot of it is its [`ActorState`] alone. (A channel wait
//! is the one that cannot simply be dropped: it is cancelled as a select is, and if its case
//! committed first, that outcome is the instruction's result and the actor resumes with it; the
//! runtime does this before it lets a snapshot see the actor. Whether a
//! native's *side effects*, a write half done, may be repeated is the native's own property.)

use crate::exception::Exception;
use crate::module::Module;
use crate::ops::Reg;
use crate::value::{Closure, Pid, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Default maximum frame-stack depth; deeper recursion raises `:stack_overflow`.
pub const DEFAULT_MAX_FRAMES: u32 = 100_000;

/// One activation record on the VM-managed frame stack (no Rust recursion is involved in calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Function index.
    pub func: u32,
    /// Program counter: the next instruction to run, or the blocked instruction.
    pub pc: u32,
    /// Index of this frame's `r0` in [`ActorState::regs`].
    pub base: u32,
    /// The caller's register that receives this frame's return value.
    pub ret: Reg,
}

/// An exception handler installed by `try`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handler {
    /// Index in [`ActorState::frames`] of the frame that installed it.
    pub frame: u32,
    /// Where to continue in that frame.
    pub target: u32,
    /// The register that receives the exception value.
    pub dst: Reg,
}

/// Everything the interpreter knows about one actor. Serialisable: a snapshot of a blocked or
/// yielded actor is this value plus the module it runs.
///
/// Invariants: each frame's registers are `regs[base .. base + nregs]` and the running frame's
/// top (`base + nregs`) is at most `regs.len()`. The register stack is kept at its high-water mark
/// rather than shrunk on every return (shrinking costs a drop loop per call), and every slot above
/// the running frame's top holds nil: a frame being left (by a return, a tail call, an exception
/// caught further down) resets its registers to nil. So those slots keep no message, channel or
/// resource alive, and a call writes only its arguments: the callee's other registers are nil
/// already. A state built by hand (or edited after deserialising) must keep this invariant, or
/// a callee may start with stale values in its registers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActorState {
    /// The register stack.
    pub regs: Vec<Value>,
    /// The frame stack; the last frame is running. Empty once the actor has exited.
    pub frames: Vec<Frame>,
    /// Installed exception handlers, innermost last.
    pub handlers: Vec<Handler>,
    /// What few actors ever have: a pending exception, the exceptions caught. Boxed on first
    /// use, so an actor without them pays one word (every idle actor carries this state, and
    /// the runtime's task holding it must stay within a tokio size class).
    #[serde(default)]
    pub rare: Option<Box<Rare>>,
    /// Fuel spent so far (BEAM's "reductions").
    pub reductions: u64,
    /// The state of the actor's random generator ([`crate::rng`]); the runtime seeds it when
    /// it starts the actor.
    #[serde(default)]
    pub rng: u64,
    /// Maximum frame-stack depth.
    pub max_frames: u32,
    /// The allocation meter that decides when memory is counted again (see [`crate::mem`]).
    #[serde(skip)]
    pub meter: crate::mem::Meter,
}

/// The rarely used part of an [`ActorState`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rare {
    /// An exception to raise at the current instruction on the next step (set by `resume`).
    pub pending: Option<Exception>,
    /// Exceptions this actor raised and caught itself (for introspection: `vm repl`'s `info`).
    pub caught: Option<Caught>,
}

/// The exceptions an actor has caught with `try`: how many, and the latest with where it was
/// raised (function index, instruction index).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Caught {
    /// How many have been caught.
    pub count: u64,
    /// The latest: the exception, and the function and instruction that raised it.
    pub last: Option<(Exception, u32, u32)>,
}

/// What the actor waits for. Plain data; the runtime decides how to wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Write a line to standard output (the text has no trailing newline).
    Print(String),
    /// Wait for a message; resume with [`Resume::Value`] carrying it (already taken from the
    /// mailbox), or [`Resume::Timeout`] when `timeout_ms` passes first.
    Receive {
        /// Only a message matching this pattern is taken (see [`crate::value::matches`]);
        /// `None` takes the oldest message.
        pattern: Option<Value>,
        /// How long to wait, from when the effect was first issued; `None` waits forever.
        timeout_ms: Option<u64>,
    },
    /// Sleep; resume with [`Resume::Value`] (the value is ignored).
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
    /// Let other actors run, then resume with [`Resume::Value`] (ignored). With a pid, ask that
    /// actor to run next if it is runnable.
    Yield(Option<Pid>),
    /// End this actor with the reason (the `stop` instruction). The runtime does not resume it.
    Stop(Value),
    /// Wait for the first of a set of channel (or mailbox) cases; resume with
    /// [`select_resume`] of the case that fired, or [`Resume::Timeout`] when `timeout_ms` passes.
    Select {
        /// Which instruction waits (how its result is delivered).
        shape: SelectShape,
        /// The cases, in the program's order.
        cases: Vec<SelectCase>,
        /// `None` waits forever.
        timeout_ms: Option<u64>,
    },
    /// Run a native function the host did not start ([`NativeCall::Deferred`]: one that may
    /// block its thread); resume with its result, or raise its exception.
    Native {
        /// Which native (the host's index).
        id: NativeId,
        /// A copy of the arguments, for a runtime that runs the native on another thread.
        args: Vec<Value>,
    },
    /// The host began this wait inside the step; see the module docs (path 4).
    Begun(Begun),
}

/// A wait the host began inside the step ([`Effect::Begun`]); see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Begun {
    /// [`Host::try_receive_or_park`] parked the actor on its mailbox ([`Received::Parked`]):
    /// when woken, step the actor again without resuming; the receive runs again.
    Receive,
    /// [`Host::native`] started this native's operation and holds it in flight
    /// ([`NativeCall::Begun`]): await it, then resume with its result.
    Native(NativeId),
    /// [`Host::send`] found the receiver's node far behind and holds the send, waiting for
    /// room ([`Host::send_waits`]): await it; the instruction then moves on (nothing was
    /// delivered before, so a cancelled wait raises with nothing sent).
    Send,
    /// [`Host::chan_try_or_park`] parked the actor on the channel of its `csend` or `crecv`
    /// ([`ChanTried::Parked`]) and holds that wait: await it, then resume with its outcome as
    /// for [`Effect::Select`] (were it gone, the instruction runs again).
    Chan,
}

/// A native function's identity: its index in the host's table of natives. It means something
/// only to the host that gave it, during one run; a restored actor re-runs its `native`
/// instruction and gets it afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NativeId(pub u32);

/// What [`Host::native`] did with a call.
#[derive(Debug, PartialEq)]
pub enum NativeCall {
    /// It completed (an inline native, or an I/O operation whose data was ready).
    Done(Result<Value, Exception>),
    /// The host began the native's operation, which must wait, and holds it in flight: the
    /// instruction blocks with [`Begun::Native`].
    Begun(NativeId),
    /// The host did not start it (it may block its thread): the instruction blocks with
    /// [`Effect::Native`], and the runtime runs it.
    Deferred(NativeId),
}

impl NativeCall {
    /// The answer for a name that is no native: `:badarg`.
    pub fn unknown(name: crate::atom::Atom) -> NativeCall {
        NativeCall::Done(Err(Exception::badarg(format!(
            "no native function named {}",
            Value::Atom(name).repr()
        ))))
    }
}

/// What [`Host::try_receive_or_park`] found.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// A message, taken from the mailbox.
    Message(Value),
    /// No message, and the host parked the actor on its mailbox: the instruction blocks with
    /// [`Begun::Receive`].
    Parked,
    /// No message, and nothing begun: the instruction blocks with [`Effect::Receive`].
    Empty,
}

/// What [`Host::chan_try_or_park`] is asked to do: a `csend`'s value, or a `crecv`'s destination
/// register, borrowed from the registers.
#[derive(Debug)]
pub enum ChanArg<'a> {
    /// Send this value.
    Send(&'a Value),
    /// Receive into this register (what it held is dropped when a value arrives).
    Recv(&'a mut Value),
}

impl ChanArg<'_> {
    /// The value to send, if this is a send.
    pub fn send(&self) -> Option<&Value> {
        match self {
            ChanArg::Send(v) => Some(v),
            ChanArg::Recv(_) => None,
        }
    }
}

/// What [`Host::chan_try_or_park`] did.
#[derive(Debug, PartialEq)]
pub enum ChanTried {
    /// The case completed now (as [`Host::chan_try_one`]'s `Some`), with this result
    /// ([`one_case`]); never a received value, which is in the register ([`ChanTried::Stored`]).
    Done(OneCase),
    /// A receive completed now, and its value is in the destination register
    /// ([`ChanArg::Recv`]). A received value goes straight there rather than through this
    /// result: each copy of a value through a result in memory is a store of two words and a
    /// load of sixteen bytes, which cannot be forwarded from them (`docs/BENCHMARKS.md`,
    /// "chan5").
    Stored,
    /// Nothing was ready, and the host parked the actor on the channel and holds the wait: the
    /// instruction blocks with [`Begun::Chan`].
    Parked,
    /// Nothing was ready, and nothing begun: the instruction blocks with [`Effect::Select`].
    Empty,
    /// The try failed (not a live channel, a value refused at a container boundary): raise it.
    Raise(Box<Exception>),
}

/// One case of a channel select.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SelectCase {
    /// Send the value on the channel.
    Send(crate::value::Handle, Value),
    /// Receive from the channel.
    Recv(crate::value::Handle),
    /// Take a message matching the pattern from the actor's own mailbox.
    Message(Value),
    /// Fire when the socket resource has input (or has reached its end), so a read will not
    /// wait for the peer.
    Readable(Value),
    /// Accept a connection on the listener resource.
    Accept(Value),
}

/// Which instruction issued a select, which decides how its result reaches the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectShape {
    /// `csend`: nothing on success; `:closed` raised on a closed channel.
    Send,
    /// `crecv`: the value, or a jump to the instruction's label once closed and drained.
    Recv,
    /// `select`: a tuple naming the case.
    Select,
}

/// The case of a select that committed.
#[derive(Clone, Debug, PartialEq)]
pub enum Fired {
    /// Case `i` sent its value.
    Sent(usize),
    /// Case `i` received a value (from a channel or, for a message case, the mailbox).
    Received(usize, Value),
    /// Case `i` is a receive on a closed, drained channel.
    Closed(usize),
    /// Case `i` is a send on a closed channel (an error).
    SendClosed(usize),
    /// Case `i` (a socket) is readable.
    Readable(usize),
}

/// How the result of a committed select reaches the program (see [`SelectShape`]). Used by the
/// interpreter's fast path and by the runtime alike, so both give the same results.
pub fn select_resume(shape: SelectShape, fired: Fired) -> Resume {
    match (shape, fired) {
        (SelectShape::Send, f) => match one_case(true, f) {
            OneCase::Value(v) => Resume::Value(v),
            OneCase::Closed => Resume::Timeout,
            OneCase::SendClosed => Resume::Raise(send_closed()),
        },
        (SelectShape::Recv, f) => match one_case(false, f) {
            OneCase::Value(v) => Resume::Value(v),
            OneCase::Closed => Resume::Timeout,
            OneCase::SendClosed => Resume::Raise(send_closed()),
        },
        (_, Fired::SendClosed(_)) => Resume::Raise(send_closed()),
        (SelectShape::Select, Fired::Sent(i)) => {
            Resume::Value(Value::tuple(vec![Value::Int(i as i64), Value::atom("sent")]))
        }
        (SelectShape::Select, Fired::Received(i, v)) => {
            Resume::Value(Value::tuple(vec![Value::Int(i as i64), Value::Atom(crate::atom::atoms::OK), v]))
        }
        (SelectShape::Select, Fired::Closed(i)) => {
            Resume::Value(Value::tuple(vec![Value::Int(i as i64), Value::atom("closed")]))
        }
        (SelectShape::Select, Fired::Readable(i)) => {
            Resume::Value(Value::tuple(vec![Value::Int(i as i64), Value::atom("readable")]))
        }
    }
}

/// How a `csend` or `crecv` completes ([`one_case`]): the interpreter's own form of
/// [`select_resume`] for one channel case, which builds no [`Resume`].
#[derive(Debug, PartialEq)]
pub enum OneCase {
    /// The instruction's result (`nil` for a send).
    Value(Value),
    /// A receive on a closed, drained channel: continue at its label.
    Closed,
    /// A send on a closed channel: raise [`send_closed`].
    SendClosed,
}

/// The result of a `csend` (`send`) or `crecv` whose case fired: the one mapping of channel
/// outcomes to results, shared by the interpreter and [`select_resume`].
#[inline]
pub fn one_case(send: bool, fired: Fired) -> OneCase {
    match fired {
        Fired::SendClosed(_) => OneCase::SendClosed,
        _ if send => OneCase::Value(Value::Nil),
        Fired::Received(_, v) => OneCase::Value(v),
        _ => OneCase::Closed,
    }
}

/// The exception a send on a closed channel raises.
pub fn send_closed() -> Exception {
    Exception::new(crate::atom::Atom::new("closed"), "send on a closed channel")
}

/// How the runtime completes a blocked instruction. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Resume {
    /// The instruction completed with this result.
    Value(Value),
    /// The instruction failed with this exception.
    Raise(Exception),
    /// The instruction's deadline passed: continue at its label.
    Timeout,
    /// Run the instruction again.
    Retry,
}

/// An uncaught exception and where it was raised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// The exception.
    pub exception: Exception,
    /// Function index where it was raised.
    pub func: u32,
    /// Instruction index where it was raised.
    pub pc: u32,
}

/// What one call of `step` did.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The fuel ran out; the actor is runnable and should be stepped again after yielding.
    Yielded,
    /// The actor waits for an effect; complete it and call [`ActorState::resume`].
    Blocked(Effect),
    /// The actor's first function returned this value.
    Exited(Value),
    /// An exception was not caught.
    Failed(Fault),
}

/// Options for starting an actor (BEAM's spawn options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpawnOpts {
    /// Link the new actor to the spawner.
    pub link: bool,
    /// Monitor the new actor from the spawner.
    pub monitor: bool,
    /// Maximum queued messages; past it the actor is killed with `{:limit, :max_mailbox}`.
    pub max_mailbox: Option<usize>,
    /// Maximum frame depth; deeper calls raise `:stack_overflow`.
    pub max_frames: Option<u32>,
    /// Maximum bytes the actor may hold (see [`crate::mem`]); past it the actor is killed with
    /// `{:limit, :max_heap}`.
    pub max_heap: Option<u64>,
    /// Wakeup priority (`:priority`, `:high`, `:normal` or `:low`); `None`: the container's.
    pub priority: Option<Priority>,
    /// The seed of the new actor's random generator: the spawn instructions draw it from the
    /// spawner's generator (see [`crate::rng`]); `None` lets the runtime choose one.
    pub seed: Option<u64>,
}

/// An actor's wakeup priority (the runtime's scheduling docs say what each level gets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// Runs ahead of the others: running lower-priority actors step aside for it.
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Runs shorter slices; still progresses.
    Low = 2,
}

impl Priority {
    /// `high`, `normal` or `low`.
    pub fn parse(name: &str) -> Option<Priority> {
        match name {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The level from its `repr(u8)` value (anything past `Low` is `Low`).
    pub fn from_u8(v: u8) -> Priority {
        match v {
            0 => Priority::High,
            1 => Priority::Normal,
            _ => Priority::Low,
        }
    }
}

impl SpawnOpts {
    /// Reads options from a map such as `%{:link => true, :max_mailbox => 100}`. Unknown keys
    /// and values of the wrong type raise `:badarg`.
    pub fn from_map(v: &Value) -> Result<SpawnOpts, Exception> {
        let Value::Map(m) = v else {
            return Err(Exception::badarg(format!("spawn options must be a map, got {}", v.type_atom())));
        };
        let mut o = SpawnOpts::default();
        for (k, val) in m.iter() {
            let key = match k {
                Value::Atom(a) => a.name(),
                other => {
                    return Err(Exception::badarg(format!(
                        "spawn option keys are atoms, got {}",
                        other.repr()
                    )));
                }
            };
            let limit = |v: &Value| match v {
                Value::Int(n) if *n > 0 => Ok(*n),
                other => Err(Exception::badarg(format!(
                    "spawn option :{key} must be a positive int, got {}",
                    other.repr()
                ))),
            };
            match &*key {
                "link" => o.link = val.truthy(),
                "monitor" => o.monitor = val.truthy(),
                "max_mailbox" => o.max_mailbox = Some(limit(val)? as usize),
                "max_frames" => o.max_frames = Some(limit(val)?.min(u32::MAX as i64) as u32),
                "max_heap" => o.max_heap = Some(limit(val)? as u64),
                "priority" => {
                    o.priority = Some(
                        match val {
                            Value::Atom(a) => Priority::parse(&a.name()),
                            _ => None,
                        }
                        .ok_or_else(|| {
                            Exception::badarg(format!(
                                "spawn option :priority must be :high, :normal or :low, got {}",
                                val.repr()
                            ))
                        })?,
                    )
                }
                _ => return Err(Exception::badarg(format!("unknown spawn option :{key}"))),
            }
        }
        Ok(o)
    }
}

/// Actor operations that complete at once, routed through [`Host::control`]. Each returns a value
/// (often `nil`) or raises.
#[derive(Clone, Debug, PartialEq)]
pub enum ActorOp {
    /// Register a name; returns nil.
    Register(crate::atom::Atom, Pid),
    /// Remove a name; returns nil.
    Unregister(crate::atom::Atom),
    /// Look a name up; returns a pid or nil.
    Whereis(crate::atom::Atom),
    /// Link to an actor.
    Link(Pid),
    /// Remove a link.
    Unlink(Pid),
    /// Monitor an actor; returns the reference (an int).
    Monitor(Pid),
    /// A new reference (`make_ref`), unique across the VM: a `Value::Ref` of this node.
    MakeRef,
    /// Cancel a monitor by reference.
    Demonitor(i64),
    /// Set exit trapping; returns the previous setting.
    TrapExit(bool),
    /// Send an exit signal with a reason.
    Exit(Pid, Value),
    /// End an actor untrappably.
    Kill(Pid),
    /// Raise an exception in an actor, in mode 0, 1 or 2.
    Interrupt(Pid, Exception, u8),
}

/// Services that never wait, provided by the runtime.
pub trait Host {
    /// The running actor's pid.
    fn self_pid(&self) -> Pid;
    /// Starts an actor running `fun` with `args`; returns its pid and, when monitoring, the
    /// monitor reference.
    fn spawn(
        &mut self,
        fun: Arc<Closure>,
        args: Vec<Value>,
        opts: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception>;
    /// Delivers `msg` to `to`'s mailbox. Never blocks. An `Err` must mean nothing was
    /// delivered: the interpreter's fast path then runs the instruction again on its general
    /// path, which raises the error.
    fn send(&mut self, to: Pid, msg: Value) -> Result<(), Exception>;
    /// Takes the oldest message (matching `pattern`, if given) from the running actor's mailbox,
    /// leaving the others in order.
    fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value>;
    /// As [`Host::try_receive`], for a receive that will otherwise wait with no deadline: the
    /// host may also begin that wait here, in the same step ([`Received::Parked`]; the
    /// instruction then blocks with [`Begun::Receive`]). The default only tries.
    fn try_receive_or_park(&mut self, pattern: Option<&Value>) -> Received {
        match self.try_receive(pattern) {
            Some(m) => Received::Message(m),
            None => Received::Empty,
        }
    }
    /// A selective receive's attempt (`recvp`, `recvpt`): as [`Host::try_receive_or_park`]
    /// (with `park`) or [`Host::try_receive`] for `pattern`, looking at no more than `*budget`
    /// queued messages and taking one unit from `*budget` for each one it looks at (the stepper
    /// charges them as fuel). `None`: none of those matched and more are queued; the host
    /// remembers how far it looked, the instruction yields, and when it runs again the scan
    /// goes on from there. The default does not bound its scan and charges nothing. (This
    /// charge depends on the mailbox, so it is no column of the op list: `recvp`'s is free.)
    fn try_receive_matching(&mut self, pattern: &Value, park: bool, budget: &mut u32) -> Option<Received> {
        let _ = budget;
        Some(if park {
            self.try_receive_or_park(Some(pattern))
        } else {
            match self.try_receive(Some(pattern)) {
                Some(m) => Received::Message(m),
                None => Received::Empty,
            }
        })
    }
    /// Whether the `send` (or `send_to_node`) that just returned `Err` holds a wait instead:
    /// the receiver's node is far behind and the host suspends the sender until there is room
    /// ([`Begun::Send`]) rather than raising. The default host never does.
    fn send_waits(&mut self) -> bool {
        false
    }
    /// Delivers `msg` to the actor registered as `name` on node `node` (`send` to the tuple
    /// `{name, node}`). The default host is no node of a cluster: it raises `:badarg`.
    fn send_to_node(
        &mut self,
        name: crate::atom::Atom,
        node: crate::atom::Atom,
        msg: Value,
    ) -> Result<(), Exception> {
        let _ = msg;
        Err(Exception::badarg(format!(
            "send: {{{}, {}}} names a node, and this VM is not in a cluster",
            Value::Atom(name).repr(),
            Value::Atom(node).repr()
        )))
    }
    /// Monotonic milliseconds since the VM started.
    fn now_ms(&self) -> i64;
    /// Registry, links, monitors, signals and interrupts.
    fn control(&mut self, op: ActorOp) -> Result<Value, Exception>;
    /// A new channel of capacity `cap` (a `Value::Chan`).
    fn chan_new(&mut self, cap: usize) -> Result<Value, Exception>;
    /// Commits the first ready case of a select, if any is ready now, without waiting.
    fn chan_try(&mut self, cases: &[SelectCase]) -> Result<Option<Fired>, Exception>;
    /// [`Host::chan_try`] for `select`, whose mailbox cases (`{:msg, pattern}`) scan the queue
    /// as a selective receive does ([`Host::try_receive_matching`]): looking at no more than
    /// `*budget` queued messages and taking one unit from `*budget` for each (the stepper
    /// charges them as fuel). `None`: nothing was committed and the scan stopped there with
    /// more to look at; the instruction yields and, run again, goes on from there. The default
    /// does not bound its scan and charges nothing.
    fn chan_try_within(
        &mut self,
        cases: &[SelectCase],
        budget: &mut u32,
    ) -> Option<Result<Option<Fired>, Exception>> {
        let _ = budget;
        Some(self.chan_try(cases))
    }
    /// [`Host::chan_try`] for one case on one channel, borrowed (a send of `send`, or a receive
    /// if `None`): what `csend`, `crecv`, `ctrysend` and `ctryrecv` try first, so that the fast
    /// path builds no case. The default builds one.
    fn chan_try_one(
        &mut self,
        chan: &crate::value::Handle,
        send: Option<&Value>,
    ) -> Result<Option<Fired>, Exception> {
        let case = match send {
            Some(v) => SelectCase::Send(chan.clone(), v.clone()),
            None => SelectCase::Recv(chan.clone()),
        };
        self.chan_try(std::slice::from_ref(&case))
    }
    /// [`Host::chan_try_one`] for `csend` and `crecv`, which otherwise wait with no deadline:
    /// the host may also begin that wait here, in the same step ([`ChanTried::Parked`]; the
    /// instruction then blocks with [`Begun::Chan`]). A value received is stored in `arg`'s
    /// register ([`ChanTried::Stored`]). The default only tries.
    fn chan_try_or_park(&mut self, chan: &crate::value::Handle, arg: ChanArg<'_>) -> ChanTried {
        let send = arg.send().is_some();
        match self.chan_try_one(chan, arg.send()) {
            Ok(Some(f)) => match (one_case(send, f), arg) {
                (OneCase::Value(v), ChanArg::Recv(dst)) => {
                    *dst = v;
                    ChanTried::Stored
                }
                (c, _) => ChanTried::Done(c),
            },
            Ok(None) => ChanTried::Empty,
            Err(e) => ChanTried::Raise(Box::new(e)),
        }
    }
    /// Closes a channel; closing twice raises `:closed`.
    fn chan_close(&mut self, chan: &crate::value::Handle) -> Result<(), Exception>;
    /// Calls native function `name` with `args` (borrowed from the registers): it completes
    /// ([`NativeCall::Done`]: an inline native, I/O whose data is ready, or an unknown name's
    /// `:badarg`), or the host begins its operation and holds it ([`NativeCall::Begun`]), or
    /// leaves it to the runtime ([`NativeCall::Deferred`]). The default host has no natives.
    fn native(&mut self, name: crate::atom::Atom, args: &[Value]) -> NativeCall {
        let _ = args;
        NativeCall::unknown(name)
    }
    /// Memory accounting (see [`crate::mem`]): what the running actor holds and is about to
    /// allocate. `Ok` lets it go on, with the actor's own limit (`:max_heap`) if it has one, so
    /// that the interpreter counts often enough not to pass it by much; `Err(reason)` ends the
    /// actor with that exit reason (`{:limit, :max_heap}`, `{:limit, :memory}`) before the
    /// allocation happens. The default host sets no limits.
    fn memory(&mut self, usage: crate::mem::MemUse) -> Result<Option<u64>, Value> {
        let _ = usage;
        Ok(None)
    }
    /// Where the running actor is (function index and instruction), told at a fuel check every
    /// [`PROGRESS_EVERY`] units of fuel, so that a watchdog on another thread can say where a
    /// long slice is without the stepper storing its position at every instruction. The default
    /// host ignores it.
    fn progress(&mut self, func: u32, pc: u32) {
        let _ = (func, pc);
    }
}

/// How often (in units of fuel, a power of two) the stepper tells [`Host::progress`] where the
/// actor is: a fuel check is a backward jump or a call, so a slice that runs long reports its
/// position within this many loop iterations or calls.
pub const PROGRESS_EVERY: u32 = 4096;

impl ActorState {
    /// An actor about to run function `func` of `module` with `args`. Fails with `:badarity` if
    /// the count is wrong and `:badarg` if there is no such function.
    pub fn new(module: &Module, func: u32, args: Vec<Value>) -> Result<ActorState, Exception> {
        let f = module
            .funcs
            .get(func as usize)
            .ok_or_else(|| Exception::badarg(format!("no function #{func}")))?;
        if args.len() != f.arity as usize {
            return Err(Exception::new(
                crate::atom::atoms::BADARITY,
                format!("{} takes {} arguments, got {}", f.name, f.arity, args.len()),
            ));
        }
        let mut regs = args;
        regs.resize(f.nregs as usize, Value::Nil);
        Ok(ActorState {
            regs,
            frames: vec![Frame { func, pc: 0, base: 0, ret: 0 }],
            handlers: Vec::new(),
            rare: None,
            reductions: 0,
            rng: 0,
            max_frames: DEFAULT_MAX_FRAMES,
            meter: crate::mem::Meter::default(),
        })
    }

    /// An actor about to call the function value `fun` with `args` (captured values first).
    pub fn from_closure(module: &Module, fun: &Closure, args: Vec<Value>) -> Result<ActorState, Exception> {
        let mut all = fun.env.clone();
        all.extend(args);
        ActorState::new(module, fun.func, all)
    }

    /// Completes the blocked instruction at the current program counter. See the module docs.
    pub fn resume(&mut self, module: &Module, how: Resume) {
        let Some(frame) = self.frames.last_mut() else { return };
        let Some(instr) = module.funcs.get(frame.func as usize).and_then(|f| f.code.get(frame.pc as usize))
        else {
            return;
        };
        match how {
            Resume::Value(v) => {
                if let Some(dst) = instr.dst() {
                    let i = frame.base as usize + dst as usize;
                    if let Some(slot) = self.regs.get_mut(i) {
                        *slot = v;
                    }
                }
                frame.pc += 1;
            }
            Resume::Raise(e) => self.set_pending(Some(e)),
            Resume::Timeout => match instr.label() {
                Some(target) => frame.pc = target,
                None => frame.pc += 1,
            },
            Resume::Retry => {}
        }
    }

    /// The exception to raise at the current instruction on the next step, if any.
    pub fn pending(&self) -> Option<&Exception> {
        self.rare.as_ref().and_then(|r| r.pending.as_ref())
    }

    /// Sets (or clears) the exception to raise at the current instruction on the next step.
    pub fn set_pending(&mut self, e: Option<Exception>) {
        match (e, &mut self.rare) {
            (None, None) => {}
            (e, rare) => rare.get_or_insert_with(Default::default).pending = e,
        }
    }

    /// The exceptions this actor has caught, if any.
    pub fn caught(&self) -> Option<&Caught> {
        self.rare.as_ref().and_then(|r| r.caught.as_ref())
    }

    /// Where the actor is now: function index and program counter of the running frame.
    pub fn position(&self) -> Option<(u32, u32)> {
        self.frames.last().map(|f| (f.func, f.pc))
    }
}
