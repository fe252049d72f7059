//! The op list's columns (`term`, `blocks`, `fuel_*`; see `crate::ops`) checked against what the
//! stepper does: every op runs on every combination of a palette of operand values, and each
//! column must describe exactly what was seen.
//!
//! The function under test is laid out so that each way of leaving the instruction is visible:
//! 1. `jmp 2` enters the instruction without charging fuel (a forward jump);
//! 2. `yield` at index 1 is every label's target, so a taken jump is a backward jump (it costs
//!    fuel when the op charges for jumps) and stops at a `yield` at index 1;
//! 3. the instruction itself at index 2 (a block there is the instruction blocking; the test
//!    then completes the wait as the runtime would: it resumes the instruction, or for a receive
//!    the host parked delivers a message and steps again, and it never resumes `stop`);
//! 4. `yield` at index 3: reaching it means the instruction fell through.

use super::step;
use super::tests::{BeginningHost, CLOSED_CHAN, OPEN_CHAN};
use crate::module::{Function, Module};
use crate::ops::{Fuel, Instr, Opcode, OperandKind, SPAWN_FUEL};
use crate::step::{ActorState, Begun, Effect, Resume, Step};
use crate::value::{Closure, Handle, Pid, Value};
use std::sync::Arc;

/// Where the instruction under test sits, and the two markers around it.
const LABEL: u32 = 1;
const AT: u32 = 2;
const AFTER: u32 = 3;

/// The registers every run starts with: one value of each shape an operand may need.
fn palette() -> Vec<Value> {
    let open = Value::Chan(Handle::new(OPEN_CHAN));
    vec![
        Value::Int(0),
        Value::Int(5),
        Value::Pid(Pid(2)),
        Value::atom("_"),
        open.clone(),
        Value::Chan(Handle::new(CLOSED_CHAN)),
        Value::list(vec![Value::tuple(vec![Value::atom("recv"), open])]),
        Value::Fun(Arc::new(Closure { func: 1, env: Vec::new() })),
        Value::str("a,b"),
        Value::Map(Arc::default()),
        Value::tuple(vec![Value::atom("boom"), Value::str("an exception")]),
        Value::Nil,
    ]
}

/// The constant pool starts with the names of [`BeginningHost`]'s natives (one it begins, one
/// it leaves to the runtime, one that completes at once) and a name that is no native.
const NATIVES: [&str; 4] = ["io", "pool", "ready", "nope"];

/// Then a `format` template taking one value (the windows here have one register)...
const TEMPLATE: i64 = NATIVES.len() as i64;

/// ... and a constant equal to a palette register (`5`), so a comparison with a constant can
/// hold.
const FIVE: i64 = TEMPLATE + 1;

/// The constant pool: see [`NATIVES`], [`TEMPLATE`] and [`FIVE`].
fn consts() -> Vec<Value> {
    let mut k: Vec<Value> = NATIVES.iter().map(|n| Value::atom(n)).collect();
    k.push(Value::str("v=~p"));
    k.push(Value::Int(5));
    k
}

/// The values tried for an operand of each kind, in an instruction of `op`.
fn choices(op: Opcode, kind: OperandKind, nregs: usize) -> Vec<i64> {
    match kind {
        OperandKind::Dst | OperandKind::Reg => (0..nregs as i64).collect(),
        OperandKind::Count => vec![1],
        // Only a template verifies as `format`'s constant.
        OperandKind::Const if op == Opcode::Format => vec![TEMPLATE],
        OperandKind::Const if matches!(op, Opcode::Jeqk | Opcode::Jnek) => vec![0, FIVE],
        OperandKind::Const => (0..NATIVES.len() as i64).collect(),
        OperandKind::Label => vec![LABEL as i64],
        OperandKind::Func => vec![1],
        OperandKind::Imm => vec![0, 5, -1],
    }
}

/// Every instruction of `op` the choices allow.
fn instances(op: Opcode, nregs: usize) -> Vec<Instr> {
    let mut combos: Vec<Vec<i64>> = vec![Vec::new()];
    for &kind in op.operands() {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                choices(op, kind, nregs).into_iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(v);
                    c
                })
            })
            .collect();
    }
    combos.iter().map(|vals| Instr::from_operands(op, vals).expect("choices are in range")).collect()
}

/// What one run of the instruction did.
#[derive(Debug, Default)]
struct Seen {
    /// The stepper returned `Blocked` with the instruction's own position.
    blocked: bool,
    /// Execution reached the instruction after it.
    fell_through: bool,
    /// Execution continued at the instruction's label.
    jumped: bool,
    /// Fuel charged over the whole run.
    reductions: u64,
}

fn run(m: &Module, host: &mut BeginningHost) -> Seen {
    let mut st = ActorState::new(m, 0, palette()).expect("main takes the palette");
    let mut seen = Seen::default();
    // A few rounds are enough: the instruction blocks at most once before the markers stop it.
    for _ in 0..4 {
        let Step::Blocked(effect) = step(&mut st, m, host, 1000) else { break };
        match st.position() {
            Some((0, AT)) => {
                seen.blocked = true;
                match effect {
                    Effect::Stop(_) => break,
                    // The host parked the actor: a message wakes it, and it runs the receive
                    // again without a resume.
                    Effect::Begun(Begun::Receive) => host.inner.mailbox.push_back(Value::Nil),
                    _ => st.resume(m, Resume::Value(Value::Nil)),
                }
            }
            Some((0, AFTER)) => {
                seen.fell_through = true;
                break;
            }
            Some((0, LABEL)) => {
                seen.jumped = true;
                break;
            }
            _ => break,
        }
    }
    seen.reductions = st.reductions;
    seen
}

#[test]
fn every_column_of_the_op_list_matches_what_the_stepper_does() {
    let nregs = palette().len();
    let mut module = Module {
        consts: consts(),
        funcs: vec![
            Function {
                name: "main".into(),
                arity: nregs as u16,
                nregs: nregs as u16,
                code: vec![
                    Instr::Jmp { target: AT },
                    Instr::Yield {},
                    Instr::Nop {},
                    Instr::Yield {},
                    Instr::Ret { a: 0 },
                ],
            },
            Function { name: "g".into(), arity: 1, nregs: 1, code: vec![Instr::Ret { a: 0 }] },
        ],
        ..Module::default()
    };
    let mut host = BeginningHost::default();
    for &op in Opcode::ALL {
        let (mut blocked, mut fell_through, mut charged) = (false, false, false);
        let full = match op.fuel() {
            Fuel::Free => 0,
            Fuel::Call | Fuel::BackwardJump => 1,
            Fuel::Spawn => u64::from(SPAWN_FUEL),
        };
        for instr in instances(op, nregs) {
            assert_eq!(instr.charges_spawn_fuel(), op.fuel() == Fuel::Spawn, "{instr:?}");
            module.funcs[0].code[AT as usize] = instr;
            assert_eq!(crate::verify::verify(&module), Ok(()), "{instr:?}");
            let seen = run(&module, &mut host);
            assert!(op.may_block() || !seen.blocked, "{instr:?} blocked but has no `blocks` column");
            assert!(
                !op.is_terminator() || !seen.fell_through,
                "{instr:?} fell through but has the `term` column"
            );
            assert!(
                seen.reductions == 0 || seen.reductions == full,
                "{instr:?} charged {} fuel; its column says {:?} ({full})",
                seen.reductions,
                op.fuel()
            );
            // A jump's fuel is charged exactly when it is taken (its label is behind it here);
            // A call's, by something that never continues at a label.
            match op.fuel() {
                Fuel::BackwardJump => assert_eq!(seen.reductions == 1, seen.jumped, "{instr:?}: {seen:?}"),
                Fuel::Call => assert!(!seen.jumped, "{instr:?} jumped: {seen:?}"),
                Fuel::Free | Fuel::Spawn => {}
            }
            blocked |= seen.blocked;
            fell_through |= seen.fell_through;
            charged |= seen.reductions == full;
        }
        assert!(!op.may_block() || blocked, "{op:?} has the `blocks` column but never blocked");
        assert!(op.is_terminator() || fell_through, "{op:?} is no terminator but never fell through");
        assert!(charged, "{op:?} never charged the {full} fuel of its column {:?}", op.fuel());
    }
}
