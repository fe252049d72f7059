//! Modules for tests: a hand-built sample and proptest strategies for random *canonical* modules
//! (valid, constants pooled in order of first use, debug files in order of first function), and
//! the fuzz corpus directories; shared by the tests of the `.vbc` format, the verifier and the
//! disassembler. Compiled for tests only.

use crate::module::{DebugInfo, FuncDebug, Function, Module};
use crate::ops::{Instr, Opcode, OperandKind};
use crate::value::Value;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `fuzz/<sub>` in the repository.
pub(crate) fn fuzz_dir(sub: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(sub)
}

/// Checks that the generated file `rel` (relative to the repository root) holds `want`.
/// With `UPDATE_EXPECT=1`, the workspace's one switch for regenerating expected files (see
/// vm-sched's `testing` module), it writes the file first. `test` names the test to run.
pub(crate) fn expect_file(rel: &str, want: &[u8], test: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, want).unwrap();
    }
    let have = std::fs::read(&path).unwrap_or_default();
    assert!(have == want, "{rel} is out of date: run UPDATE_EXPECT=1 cargo test -p vm-core {test}");
}

/// The files of `fuzz/<sub>`, sorted, or none if the directory does not exist.
pub(crate) fn files_in(sub: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir(sub)) else { return Vec::new() };
    let mut files: Vec<_> = dir
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A small program touching every constant kind, labels, calls, closures and debug info.
pub(crate) fn sample() -> Module {
    let mut map = BTreeMap::new();
    map.insert(Value::atom("a"), Value::Nil);
    map.insert(Value::str("k"), Value::Bool(true));
    let tuple = Value::tuple(vec![
        Value::atom("ok"),
        Value::list(vec![Value::Int(1), Value::Float(2.5), Value::Float(-0.0)]),
        Value::bytes(&b"\x00A\xff"[..]),
        Value::Map(Arc::new(map)),
        Value::atom("with space"),
        Value::Float(f64::NAN),
        Value::Float(f64::NEG_INFINITY),
        Value::Bool(false),
        Value::Int(i64::MIN),
    ]);
    let main = Function {
        name: "main".into(),
        arity: 1,
        nregs: 3,
        code: vec![
            Instr::Const { dst: 1, k: 0 },
            Instr::Print { a: 1 },
            Instr::Int { dst: 2, imm: 20 },
            Instr::Call { dst: 1, f: 1, args: 2, n: 1 },
            Instr::Print { a: 1 },
            Instr::Const { dst: 2, k: 1 },
            Instr::Closure { dst: 2, f: 1, env: 1, n: 1 },
            Instr::Ret { a: 1 },
        ],
    };
    let fib = Function {
        name: "fib".into(),
        arity: 1,
        nregs: 4,
        code: vec![
            Instr::Jlti { a: 0, imm: 2, target: 7 },
            Instr::Addi { dst: 1, a: 0, imm: -1 },
            Instr::Call { dst: 1, f: 1, args: 1, n: 1 },
            Instr::Addi { dst: 2, a: 0, imm: -2 },
            Instr::Call { dst: 2, f: 1, args: 2, n: 1 },
            Instr::Add { dst: 3, a: 1, b: 2 },
            Instr::Ret { a: 3 },
            Instr::Ret { a: 0 },
        ],
    };
    let spin = Function {
        name: "spin".into(),
        arity: 0,
        nregs: 1,
        code: vec![Instr::Now { dst: 0 }, Instr::Jmp { target: 0 }],
    };
    Module {
        consts: vec![Value::str("hello\n"), tuple],
        funcs: vec![main, fib, spin],
        debug: Some(DebugInfo {
            files: vec!["main.vasm".into(), "lib/fib.vasm".into()],
            funcs: vec![
                FuncDebug { file: 0, lines: vec![3, 4, 5, 5, 6, 7, 8, 9] },
                FuncDebug { file: 1, lines: vec![10, 11, 11, 12, 12, 13, 13, 15] },
                FuncDebug { file: 0, lines: vec![20, 21] },
            ],
        }),
    }
}

/// Any constant value (literal kinds only), nested a few levels. NaNs are the standard NaN,
/// the only one the text form can express.
pub(crate) fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-3i64..3).prop_map(Value::Int),
        any::<f64>().prop_map(|x| Value::Float(if x.is_nan() { f64::NAN } else { x })),
        prop_oneof!["[a-z_][a-zA-Z0-9_]{0,6}", "\\PC{0,6}", any::<String>()].prop_map(|s| Value::atom(&s)),
        prop_oneof!["[a-z \"\\\\]{0,6}", any::<String>()].prop_map(Value::str),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::tuple),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::list),
            prop::collection::btree_map(inner.clone(), inner, 0..3).prop_map(|m| Value::Map(Arc::new(m))),
        ]
    })
}

/// The raw material of one function: name stem, arity, spare registers, instructions as
/// (opcode choice, operand choices), file choice, first line and line increments.
type FuncSpec = (String, u16, u16, Vec<(u8, [u32; 4])>, usize, u32, Vec<u32>);

fn func_spec() -> impl Strategy<Value = FuncSpec> {
    (
        "[a-zA-Z_][a-zA-Z0-9_.]{0,6}",
        0u16..4,
        0u16..5,
        prop::collection::vec((any::<u8>(), any::<[u32; 4]>()), 1..24),
        any::<usize>(),
        prop_oneof![1u32..200, 1u32..=u32::MAX - 100_000],
        prop::collection::vec(prop_oneof![Just(0u32), Just(1), 0u32..4], 24),
    )
}

/// A random canonical module: it verifies, its pool holds exactly the used constants in order
/// of first use, and its debug info (if any) is what the assembler would record.
pub(crate) fn canonical_module() -> impl Strategy<Value = Module> {
    (
        prop::collection::vec(value(), 1..6),
        prop::collection::vec(func_spec(), 1..5),
        any::<bool>(),
        prop::collection::vec(prop_oneof!["[a-z/_]{1,8}\\.vasm", "[a-zA-Z0-9 é\"\\\\\n]{0,8}"], 1..4),
    )
        .prop_map(|(candidates, specs, with_debug, file_names)| {
            build(&candidates, &specs, with_debug, &file_names)
        })
}

fn build(candidates: &[Value], specs: &[FuncSpec], with_debug: bool, file_names: &[String]) -> Module {
    let nfuncs = specs.len() as u32;
    // Every frame can hold the arguments of a call to any function, so any callee fits.
    let max_arity = specs.iter().map(|s| s.1).max().unwrap_or(0);
    let arities: Vec<u16> = specs.iter().map(|s| s.1).collect();
    let terminators: Vec<Opcode> = Opcode::ALL.iter().copied().filter(|op| op.is_terminator()).collect();
    let mut consts: Vec<Value> = Vec::new();
    let mut funcs = Vec::new();
    for (i, (stem, arity, spare, code_spec, ..)) in specs.iter().enumerate() {
        let nregs = max_arity.max(1) + spare;
        let len = code_spec.len();
        let mut code = Vec::with_capacity(len);
        for (pc, &(choice, raw)) in code_spec.iter().enumerate() {
            let mut op = Opcode::ALL[choice as usize % Opcode::ALL.len()];
            if pc == len - 1 && !op.is_terminator() {
                op = terminators[choice as usize % terminators.len()];
            }
            let kinds = op.operands();
            let mut vals = vec![0i64; kinds.len()];
            let mut callee = 0usize;
            for j in 0..kinds.len() {
                let r = raw[j] as i64;
                vals[j] = match kinds[j] {
                    OperandKind::Dst => r % i64::from(nregs),
                    OperandKind::Reg if kinds.get(j + 1) == Some(&OperandKind::Count) => {
                        let count = match op {
                            Opcode::Call | Opcode::Tcall => i64::from(arities[callee]),
                            Opcode::Closure => raw[j + 1] as i64 % (i64::from(arities[callee]) + 1),
                            _ => raw[j + 1] as i64 % (i64::from(nregs) + 1),
                        };
                        let room = if count == 0 { i64::from(nregs) } else { i64::from(nregs) - count + 1 };
                        vals[j + 1] = count;
                        r % room
                    }
                    OperandKind::Reg => r % i64::from(nregs),
                    OperandKind::Count => vals[j],
                    OperandKind::Const => {
                        // A `format` template must take exactly the values of the window that
                        // follows (its count is drawn from `raw[j + 2]`, as for any window).
                        let template = (op == Opcode::Format).then(|| {
                            Value::str("~p ".repeat((raw[j + 2] as i64 % (i64::from(nregs) + 1)) as usize))
                        });
                        let c = template.as_ref().unwrap_or(&candidates[raw[j] as usize % candidates.len()]);
                        match consts.iter().position(|k| k == c) {
                            Some(k) => k as i64,
                            None => {
                                consts.push(c.clone());
                                consts.len() as i64 - 1
                            }
                        }
                    }
                    OperandKind::Label => r % len as i64,
                    OperandKind::Func => {
                        callee = raw[j] as usize % nfuncs as usize;
                        callee as i64
                    }
                    OperandKind::Imm => i64::from(raw[j] as i32),
                };
            }
            code.push(Instr::from_operands(op, &vals).expect("generated operands are in range"));
        }
        funcs.push(Function { name: format!("{stem}_{i}"), arity: *arity, nregs, code });
    }
    let debug = with_debug.then(|| {
        let mut files: Vec<String> = Vec::new();
        let mut fds = Vec::new();
        for (f, spec) in funcs.iter().zip(specs) {
            let name = &file_names[spec.4 % file_names.len()];
            let file = match files.iter().position(|x| x == name) {
                Some(k) => k,
                None => {
                    files.push(name.clone());
                    files.len() - 1
                }
            };
            let mut line = spec.5;
            let lines = (0..f.code.len())
                .map(|pc| {
                    line += spec.6[pc % spec.6.len()];
                    line
                })
                .collect();
            fds.push(FuncDebug { file: file as u32, lines });
        }
        DebugInfo { files, funcs: fds }
    });
    Module { consts, funcs, debug }
}
