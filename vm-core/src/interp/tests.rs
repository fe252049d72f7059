//! The stepper's unit tests: fast and slow paths agree, fuel, frames (nil above the running
//! frame, the depth limit, tail calls), exceptions, blocking and resuming on the instruction.

use super::frame::take_or_clone;
use super::value_ops::{
    Arith, arith, byte_at, concat, find, map_text, set_element, shift_amount, slice, split, to_int,
};
use super::*;
use crate::atom::{Atom, atoms};
use crate::module::Function;
use crate::step::{ActorOp, DEFAULT_MAX_FRAMES, Fired, Resume, SelectCase, SpawnOpts};
use crate::value::{Closure, Pid};
use std::collections::VecDeque;
use std::sync::Arc;

/// Channel ids [`TestHost`] knows: channels it makes are open and never ready; a channel with
/// id `CLOSED_CHAN` is closed.
pub(super) const OPEN_CHAN: u64 = 1;
pub(super) const CLOSED_CHAN: u64 = 2;

/// A host for one actor whose mailbox is filled by the test. No channel partner is ever ready,
/// and it has no natives.
#[derive(Default)]
pub(super) struct TestHost {
    pub(super) mailbox: VecDeque<Value>,
    sent: Vec<(Pid, Value)>,
    /// Sends to this pid are refused (nothing is delivered).
    refuse: Option<Pid>,
    /// A memory limit (bytes), as `:max_heap`, and the last count reported.
    limit: Option<u64>,
    live: u64,
    /// The most the actor was seen to hold or be about to hold.
    peak: u64,
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
        Ok(Value::Chan(crate::value::Handle::new(OPEN_CHAN)))
    }
    fn chan_try(&mut self, cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        Ok(match cases.first() {
            Some(SelectCase::Send(h, _)) if h.id() == CLOSED_CHAN => Some(Fired::SendClosed(0)),
            Some(SelectCase::Recv(h)) if h.id() == CLOSED_CHAN => Some(Fired::Closed(0)),
            _ => None,
        })
    }
    fn chan_close(&mut self, _: &crate::value::Handle) -> Result<(), Exception> {
        Ok(())
    }
    fn memory(&mut self, u: crate::mem::MemUse) -> Result<Option<u64>, Value> {
        if let Some(live) = u.live {
            self.live = live;
        }
        let total = self.live + u.since + u.more;
        self.peak = self.peak.max(total);
        match self.limit {
            Some(max) if total > max => Err(crate::mem::limit_reason("max_heap")),
            limit => Ok(limit),
        }
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
    let c = st.caught().expect("two exceptions were caught");
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
        funcs: vec![func("main", 0, 2, vec![Int { dst: 0, imm: 3 }, Callv { dst: 1, f: 0, args: 0, n: 0 }])],
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

/// The requirement: suspend at an effect, round-trip the state through serde, resume,
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
    assert_eq!(arith(Arith::Div, &Value::Int(i64::MIN), &Value::Int(-1)).unwrap_err().kind, atoms::OVERFLOW);
    assert_eq!(arith(Arith::Rem, &Value::Int(1), &Value::Int(0)).unwrap_err().kind, atoms::DIV_BY_ZERO);
    assert_eq!(arith(Arith::Div, &Value::Int(-7), &Value::Int(2)).unwrap(), Value::Int(-3));
    assert_eq!(arith(Arith::Add, &Value::str("a"), &Value::Int(1)).unwrap_err().kind, atoms::TYPE_ERROR);
    assert!(shift_amount(64).is_err());
}

/// A host whose sends to pid 99 are held (a node far behind) and which delivers `{name, node}`
/// sends; it counts both.
#[derive(Default)]
struct HoldingHost {
    inner: TestHost,
    held: u32,
    holding: bool,
    to_node: Vec<(Atom, Atom, Value)>,
}

impl Host for HoldingHost {
    fn self_pid(&self) -> Pid {
        self.inner.self_pid()
    }
    fn spawn(
        &mut self,
        f: Arc<Closure>,
        a: Vec<Value>,
        o: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception> {
        self.inner.spawn(f, a, o)
    }
    fn send(&mut self, to: Pid, msg: Value) -> Result<(), Exception> {
        self.holding = to == Pid(99);
        if self.holding {
            self.held += 1;
            return Err(Exception::new(atoms::LIMIT, "held"));
        }
        self.inner.send(to, msg)
    }
    fn send_waits(&mut self) -> bool {
        self.holding
    }
    fn send_to_node(&mut self, name: Atom, node: Atom, msg: Value) -> Result<(), Exception> {
        self.to_node.push((name, node, msg));
        Ok(())
    }
    fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value> {
        self.inner.try_receive(pattern)
    }
    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }
    fn control(&mut self, op: ActorOp) -> Result<Value, Exception> {
        self.inner.control(op)
    }
    fn chan_new(&mut self, cap: usize) -> Result<Value, Exception> {
        self.inner.chan_new(cap)
    }
    fn chan_try(&mut self, cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        self.inner.chan_try(cases)
    }
    fn chan_close(&mut self, chan: &crate::value::Handle) -> Result<(), Exception> {
        self.inner.chan_close(chan)
    }
}

#[test]
fn a_held_send_blocks_on_its_instruction_and_moves_on_once_resumed() {
    use crate::step::Begun;
    let src = ".func main 2
    send r0, r1            ; held: the sender waits
    const r2, {:svc, :b}
    send r2, r1            ; to the actor registered as svc on node b
    ret r1
.end
";
    let m = crate::asm::assemble_str("t.vasm", src).unwrap();
    let mut st = ActorState::new(&m, 0, vec![Value::Pid(Pid(99)), Value::Int(7)]).unwrap();
    let mut host = HoldingHost::default();
    assert_eq!(step(&mut st, &m, &mut host, 1000), Step::Blocked(Effect::Begun(Begun::Send)));
    assert!(host.inner.sent.is_empty() && host.to_node.is_empty(), "nothing sent while held");
    // The runtime awaited the held send (which sent the message) and resumes past it.
    st.resume(&m, Resume::Value(Value::Nil));
    assert_eq!(step(&mut st, &m, &mut host, 1000), Step::Exited(Value::Int(7)));
    assert_eq!(host.to_node, vec![(Atom::new("svc"), Atom::new("b"), Value::Int(7))]);
    // The default host is no node of a cluster: a send to {name, node} raises.
    let mut st = ActorState::new(&m, 0, vec![Value::Pid(Pid(5)), Value::Int(7)]).unwrap();
    let Step::Failed(f) = step(&mut st, &m, &mut TestHost::default(), 1000) else { panic!() };
    assert_eq!(f.exception.kind, atoms::BADARG);
}

/// A host that begins waits inside the step, as the runtime's does: a receive that finds nothing
/// parks, native `io` begins an operation it then holds, `pool` is left to the runtime, `ready`
/// completes at once; it counts what it began.
#[derive(Default)]
pub(super) struct BeginningHost {
    pub(super) inner: TestHost,
    parked: u32,
    begun: u32,
}

impl Host for BeginningHost {
    fn self_pid(&self) -> Pid {
        self.inner.self_pid()
    }
    fn spawn(
        &mut self,
        f: Arc<Closure>,
        a: Vec<Value>,
        o: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception> {
        self.inner.spawn(f, a, o)
    }
    fn send(&mut self, to: Pid, msg: Value) -> Result<(), Exception> {
        self.inner.send(to, msg)
    }
    fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value> {
        self.inner.try_receive(pattern)
    }
    fn try_receive_or_park(&mut self, pattern: Option<&Value>) -> crate::step::Received {
        match self.inner.try_receive(pattern) {
            Some(m) => crate::step::Received::Message(m),
            None => {
                self.parked += 1;
                crate::step::Received::Parked
            }
        }
    }
    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }
    fn control(&mut self, op: ActorOp) -> Result<Value, Exception> {
        self.inner.control(op)
    }
    fn chan_new(&mut self, cap: usize) -> Result<Value, Exception> {
        self.inner.chan_new(cap)
    }
    fn chan_try(&mut self, cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        self.inner.chan_try(cases)
    }
    fn chan_close(&mut self, chan: &crate::value::Handle) -> Result<(), Exception> {
        self.inner.chan_close(chan)
    }
    fn native(&mut self, name: crate::atom::Atom, args: &[Value]) -> crate::step::NativeCall {
        use crate::step::{NativeCall, NativeId};
        match &*name.name() {
            "ready" => NativeCall::Done(Ok(Value::Int(args.len() as i64))),
            "io" => {
                self.begun += 1;
                NativeCall::Begun(NativeId(1))
            }
            "pool" => NativeCall::Deferred(NativeId(2)),
            _ => NativeCall::unknown(name),
        }
    }
}

#[test]
fn begun_waits_are_named_by_the_effect_and_may_be_abandoned_and_run_again() {
    use crate::step::{Begun, NativeId};
    use Instr::*;
    let m = Module {
        consts: vec![
            Value::atom("io"),
            Value::atom("pool"),
            Value::atom("ready"),
            Value::atom("nope"),
            Value::atom("_"),
        ],
        funcs: vec![func(
            "main",
            0,
            6,
            vec![
                Recv { dst: 0 },
                Int { dst: 1, imm: 5 },
                Native { dst: 2, name: 2, args: 0, n: 2 },
                Native { dst: 2, name: 0, args: 0, n: 2 },
                Native { dst: 3, name: 1, args: 0, n: 2 },
                Const { dst: 5, k: 4 },
                Recvp { dst: 4, pat: 5 },
                Try { dst: 4, target: 9 },
                Native { dst: 4, name: 3, args: 0, n: 0 },
                Ret { a: 4 },
            ],
        )],
        debug: None,
    };
    let mut host = BeginningHost::default();
    let mut st = ActorState::new(&m, 0, vec![]).unwrap();
    // A plain receive that finds nothing: the host parked the actor, and the effect says so.
    assert_eq!(step(&mut st, &m, &mut host, 100), Step::Blocked(Effect::Begun(Begun::Receive)));
    assert_eq!((st.position(), host.parked), (Some((0, 0)), 1));
    // Woken: stepped again without a resume, the receive runs again and takes the message.
    host.inner.mailbox.push_back(Value::Int(7));
    // `ready` completes inside the step; `io` is begun by the host, nothing copied.
    assert_eq!(step(&mut st, &m, &mut host, 100), Step::Blocked(Effect::Begun(Begun::Native(NativeId(1)))));
    assert_eq!((st.position(), host.begun), (Some((0, 3)), 1));
    assert_eq!(st.regs[2], Value::Int(2), "`ready` ran inside the step");
    // The host's operation is dropped (a snapshot, an interrupt): the state alone, stepped
    // again, runs the instruction again and the host begins afresh.
    let saved = serde_json::to_string(&st).unwrap();
    let mut restored: ActorState = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        step(&mut restored, &m, &mut host, 100),
        Step::Blocked(Effect::Begun(Begun::Native(NativeId(1))))
    );
    assert_eq!((restored.position(), host.begun), (Some((0, 3)), 2));
    // The operation completes: resumed with its result.
    restored.resume(&m, Resume::Value(Value::atom("read")));
    // `pool` is left to the runtime, with a copy of its arguments.
    assert_eq!(
        step(&mut restored, &m, &mut host, 100),
        Step::Blocked(Effect::Native { id: NativeId(2), args: vec![Value::Int(7), Value::Int(5)] })
    );
    assert_eq!(restored.regs[2], Value::atom("read"));
    restored.resume(&m, Resume::Value(Value::Nil));
    // A selective receive parks the same way.
    assert_eq!(step(&mut restored, &m, &mut host, 100), Step::Blocked(Effect::Begun(Begun::Receive)));
    assert_eq!((restored.position(), host.parked), (Some((0, 6)), 2));
    host.inner.mailbox.push_back(Value::Int(8));
    // An unknown native raises `:badarg`, catchable where it was called.
    match step(&mut restored, &m, &mut host, 100) {
        Step::Exited(Value::Tuple(ref t)) => assert_eq!(t[0], Value::Atom(atoms::BADARG)),
        other => panic!("{other:?}"),
    }
}

/// Runs `m`'s first function under a memory limit; the step that ended it and the host.
fn run_limited(m: &Module, limit: u64) -> (Step, TestHost) {
    let mut st = ActorState::new(m, 0, vec![]).unwrap();
    let mut host = TestHost { limit: Some(limit), ..TestHost::default() };
    st.meter.counted(0, Some(limit));
    loop {
        match step(&mut st, m, &mut host, 1000) {
            Step::Yielded => continue,
            other => return (other, host),
        }
    }
}

fn max_heap_stop() -> Step {
    Step::Blocked(Effect::Stop(crate::mem::limit_reason("max_heap")))
}

#[test]
fn a_list_growing_forever_is_stopped_near_the_limit() {
    use Instr::*;
    // l = []; loop { l = append(l, "some text") }
    let m = Module {
        funcs: vec![func(
            "main",
            0,
            2,
            vec![
                List { dst: 0, items: 0, n: 0 },
                Const { dst: 1, k: 0 },
                Append { dst: 0, l: 0, v: 1 },
                Jmp { target: 2 },
            ],
        )],
        consts: vec![Value::str("some text")],
        ..Module::default()
    };
    let (end, host) = run_limited(&m, 1 << 20);
    assert_eq!(end, max_heap_stop());
    // Stopped before the list's buffer passed the limit by more than one doubling.
    assert!(host.peak <= 3 << 20, "peak {}", host.peak);
}

#[test]
fn garbage_does_not_count_against_the_limit() {
    use Instr::*;
    // for i in 0..200000: t = {i, i, i, i}  -- 200,000 tuples made and dropped: 14 MB in all.
    let m = Module {
        funcs: vec![func(
            "main",
            0,
            6,
            vec![
                Int { dst: 0, imm: 0 },
                Tuple { dst: 5, items: 0, n: 4 },
                Addi { dst: 0, a: 0, imm: 1 },
                Jlti { a: 0, imm: 200_000, target: 1 },
                Ret { a: 0 },
            ],
        )],
        ..Module::default()
    };
    let (end, _) = run_limited(&m, 256 * 1024);
    assert_eq!(end, Step::Exited(Value::Int(200_000)));
}

#[test]
fn one_large_allocation_is_refused_before_it_happens() {
    use Instr::*;
    // s = "x"; loop { s = concat(s, s) }: doubling, so one step would allocate past the limit.
    let m = Module {
        funcs: vec![func(
            "main",
            0,
            1,
            vec![Const { dst: 0, k: 0 }, Concat { dst: 0, a: 0, b: 0 }, Jmp { target: 1 }],
        )],
        consts: vec![Value::str("x")],
        ..Module::default()
    };
    let (end, host) = run_limited(&m, 8 << 20);
    assert_eq!(end, max_heap_stop());
    assert!(host.peak <= 24 << 20, "peak {}", host.peak);
}

#[test]
fn register_stack_growth_counts() {
    use Instr::*;
    // A function of 65,535 registers calling itself forever: 1 MB per frame.
    let m = Module {
        funcs: vec![func("down", 0, 65_535, vec![Call { dst: 0, f: 0, args: 0, n: 0 }, Ret { a: 0 }])],
        ..Module::default()
    };
    let (end, host) = run_limited(&m, 64 << 20);
    assert_eq!(end, max_heap_stop());
    assert!(host.peak <= 200 << 20, "peak {}", host.peak);
}

/// `csend`'s and `crecv`'s try comes back in two registers: the result `Value` with the
/// variant in its niche, the rare exception boxed (see `ChanTried`).
#[test]
fn a_channel_try_is_two_words() {
    assert_eq!(std::mem::size_of::<crate::step::ChanTried>(), 16);
}
