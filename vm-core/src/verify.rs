//! The verifier: checks a [`Module`] once, so that the interpreter never has to.
//!
//! The interpreter indexes registers, constants, functions and instructions without bounds checks
//! that could fail (it may still use checked indexing, but a failure there is a VM bug, never a
//! program error). It relies **only** on the following facts, each of which [`verify`] establishes
//! for every function `f` of a module it accepts:
//!
//! 1. Function names are non-empty and unique, so lookups by name (`main`, the REPL, `spawn` by
//!    name) are unambiguous.
//! 2. `f.nregs >= f.arity`: the arguments of a call always fit in the callee's frame.
//! 3. `f.code` is non-empty, so a new frame always has an instruction at pc 0.
//! 4. The last instruction of `f` is a terminator
//!    ([`Opcode::is_terminator`](crate::ops::Opcode::is_terminator): an unconditional jump, a
//!    return, a tail call or a raise), so execution never runs off the end: together with (8)
//!    every pc the interpreter reaches is `< f.code.len()`.
//! 5. Every `Dst` and `Reg` operand is `< f.nregs`.
//! 6. For every `Reg` operand followed by a `Count` operand, `reg + count <= f.nregs`: the whole
//!    register window (call arguments, tuple items, captured values) is inside the frame.
//! 7. Every `Const` operand is `< consts.len()`.
//! 8. Every `Label` operand is `< f.code.len()`.
//! 9. Every `Func` operand is `< funcs.len()`.
//! 10. `call` and `tcall` pass exactly the callee's arity (`count == arity`), so a direct call
//!     never needs an arity check at run time; `closure` captures at most the callee's arity
//!     (`count <= arity`), so calling the closure with the remaining arguments can be correct.
//! 11. If debug information is present: it has one entry per function, each file index is
//!     `< files.len()`, and each entry's lines are empty or exactly one per instruction; so
//!     [`Module::location`] finds what it looks for.
//! 12. Every `format` template is a string constant whose directives are valid and number
//!     exactly the instruction's count ([`crate::format::directives`]).
//! 13. Every constant has a binary encoding: no pid, channel, resource or function value (those
//!     exist only at run time), and containers nest at most [`MAX_CONST_DEPTH`] deep. This one
//!     is for the file format rather than the interpreter: a verified module encodes to bytes
//!     that load again.
//!
//! Things the verifier deliberately does **not** check, because the interpreter checks them at
//! run time and raises an exception: the types of register contents, the arity of calls through
//! function values (`callv`, `spawn`), and the existence of `main` (a module may be a library).
//!
//! [`verify`] reports every error it finds, not just the first, so `vm check` can list them all.

use crate::module::{Function, MAX_CONST_DEPTH, Module};
use crate::ops::{Instr, Opcode, OperandKind};
use crate::value::Value;
use std::collections::HashMap;
use std::fmt;

/// One verification failure.
///
/// Displays as `in function fib, instruction 3: register r9 out of range (function has 4
/// registers)`; the prefix names as much of the position as is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The function it is in, if any.
    pub func: Option<String>,
    /// The instruction index, if any.
    pub pc: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.func, self.pc) {
            (Some(func), Some(pc)) => write!(f, "in function {func}, instruction {pc}: {}", self.message),
            (Some(func), None) => write!(f, "in function {func}: {}", self.message),
            (None, Some(pc)) => write!(f, "instruction {pc}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Collects errors with their position.
struct Errors(Vec<VerifyError>);

impl Errors {
    fn module(&mut self, message: String) {
        self.0.push(VerifyError { func: None, pc: None, message });
    }

    fn func(&mut self, f: &Function, message: String) {
        self.0.push(VerifyError { func: Some(f.name.clone()), pc: None, message });
    }

    fn instr(&mut self, f: &Function, pc: usize, message: String) {
        self.0.push(VerifyError { func: Some(f.name.clone()), pc: Some(pc as u32), message });
    }
}

/// Checks everything the interpreter relies on (the numbered guarantees in the module docs) and
/// returns every violation found.
pub fn verify(module: &Module) -> Result<(), Vec<VerifyError>> {
    let mut errors = Errors(Vec::new());

    for (i, c) in module.consts.iter().enumerate() {
        check_const(&mut errors, i, c);
    }

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, f) in module.funcs.iter().enumerate() {
        if f.name.is_empty() {
            errors.module(format!("function {index} has an empty name"));
        } else if let Some(first) = seen.insert(&f.name, index) {
            // Keep the first index in the map so that a third copy also names the first one.
            seen.insert(&f.name, first);
            errors.func(
                f,
                format!("duplicate function name (function {index} has the name of function {first})"),
            );
        }
        check_function(&mut errors, module, f);
    }

    if let Some(debug) = &module.debug {
        if debug.funcs.len() != module.funcs.len() {
            errors.module(format!(
                "debug info has {} function entries but the module has {} functions",
                debug.funcs.len(),
                module.funcs.len()
            ));
        }
        for (f, fd) in module.funcs.iter().zip(&debug.funcs) {
            if fd.file as usize >= debug.files.len() {
                errors.func(
                    f,
                    format!(
                        "debug file index {} out of range (debug info has {} files)",
                        fd.file,
                        debug.files.len()
                    ),
                );
            }
            if !fd.lines.is_empty() && fd.lines.len() != f.code.len() {
                errors.func(
                    f,
                    format!(
                        "debug info has {} line numbers for {} instructions (it must have none or \
                         one per instruction)",
                        fd.lines.len(),
                        f.code.len()
                    ),
                );
            }
        }
    }

    if errors.0.is_empty() { Ok(()) } else { Err(errors.0) }
}

fn check_const(errors: &mut Errors, index: usize, c: &Value) {
    // An explicit stack rather than recursion: an in-memory module may hold a value nested far
    // deeper than any file could, and checking it must not overflow the Rust stack.
    let mut stack: Vec<(&Value, usize)> = vec![(c, 0)];
    while let Some((v, depth)) = stack.pop() {
        let kind = match v {
            Value::Pid(_) => "a pid",
            Value::Ref(_) => "a reference",
            Value::Chan(_) => "a channel",
            Value::Res(_) => "a resource",
            Value::Fun(_) => "a function value",
            Value::Tuple(items) | Value::List(items) => {
                if depth >= MAX_CONST_DEPTH {
                    errors.module(format!(
                        "constant {index} nests containers more than {MAX_CONST_DEPTH} deep"
                    ));
                    return;
                }
                stack.extend(items.iter().map(|item| (item, depth + 1)));
                continue;
            }
            Value::Map(m) => {
                if depth >= MAX_CONST_DEPTH {
                    errors.module(format!(
                        "constant {index} nests containers more than {MAX_CONST_DEPTH} deep"
                    ));
                    return;
                }
                stack.extend(m.iter().flat_map(|(k, v)| [(k, depth + 1), (v, depth + 1)]));
                continue;
            }
            _ => continue,
        };
        errors.module(format!(
            "constant {index} contains {kind}, which exists only at run time and cannot be a constant"
        ));
        return;
    }
}

fn check_function(errors: &mut Errors, module: &Module, f: &Function) {
    if f.nregs < f.arity {
        errors.func(f, format!("{} registers is fewer than the arity {}", f.nregs, f.arity));
    }
    let Some(last) = f.code.last() else {
        errors.func(f, "function has no instructions".into());
        return;
    };
    if !last.opcode().is_terminator() {
        errors.instr(
            f,
            f.code.len() - 1,
            format!(
                "the last instruction `{}` falls through the end of the function (it must be one of {})",
                last.opcode().mnemonic(),
                terminators()
            ),
        );
    }
    for (pc, instr) in f.code.iter().enumerate() {
        check_instr(errors, module, f, pc, instr);
    }
}

/// The mnemonics of the instructions that do not fall through, from the op list.
fn terminators() -> String {
    let names: Vec<&str> =
        Opcode::ALL.iter().filter(|op| op.is_terminator()).map(|op| op.mnemonic()).collect();
    names.join(", ")
}

fn check_instr(errors: &mut Errors, module: &Module, f: &Function, pc: usize, instr: &Instr) {
    let op = instr.opcode();
    let kinds = op.operands();
    let operands = instr.operands();
    let vals = operands.as_slice();
    let nregs = i64::from(f.nregs);
    for (i, (&v, &kind)) in vals.iter().zip(kinds).enumerate() {
        match kind {
            OperandKind::Dst | OperandKind::Reg => {
                if v >= nregs {
                    errors.instr(
                        f,
                        pc,
                        format!("register r{v} out of range (function has {} registers)", f.nregs),
                    );
                }
            }
            OperandKind::Count => {
                // The op list guarantees a Count follows a Reg (tested in `ops`); `checked_sub`
                // keeps this from panicking should that ever change.
                let Some(start) = i.checked_sub(1).map(|j| vals[j]) else { continue };
                // A start register already out of range has been reported above; reporting its
                // window too would only repeat the same fact.
                if start < nregs && start + v > nregs {
                    errors.instr(
                        f,
                        pc,
                        format!(
                            "register window r{start}..r{} ({v} registers from r{start}) out of range \
                             (function has {} registers)",
                            start + v - 1,
                            f.nregs
                        ),
                    );
                }
            }
            OperandKind::Const => {
                if v as u64 >= module.consts.len() as u64 {
                    errors.instr(
                        f,
                        pc,
                        format!("constant {v} out of range (module has {} constants)", module.consts.len()),
                    );
                }
            }
            OperandKind::Label => {
                if v as u64 >= f.code.len() as u64 {
                    errors.instr(
                        f,
                        pc,
                        format!("jump target {v} out of range (function has {} instructions)", f.code.len()),
                    );
                }
            }
            OperandKind::Func => {
                if v as u64 >= module.funcs.len() as u64 {
                    errors.instr(
                        f,
                        pc,
                        format!("function {v} out of range (module has {} functions)", module.funcs.len()),
                    );
                }
            }
            OperandKind::Imm => {}
        }
    }
    match *instr {
        Instr::Call { f: callee, n, .. } | Instr::Tcall { f: callee, n, .. } => {
            if let Some(g) = module.funcs.get(callee as usize)
                && n != g.arity
            {
                errors.instr(
                    f,
                    pc,
                    format!(
                        "`{}` of {} passes {n} arguments but {} takes {}",
                        op.mnemonic(),
                        g.name,
                        g.name,
                        g.arity
                    ),
                );
            }
        }
        Instr::Format { template, n, .. } => {
            let text = match module.consts.get(template as usize) {
                Some(Value::Str(t)) => Some(t.as_bytes()),
                Some(Value::Bytes(b)) => Some(&b[..]),
                Some(other) => {
                    let msg = format!("`format` template must be a string or bytes, found {}", other.repr());
                    errors.instr(f, pc, msg);
                    None
                }
                None => None,
            };
            if let Some(t) = text {
                let shown = || module.consts[template as usize].repr();
                match crate::format::directives(t) {
                    Ok(want) if want == usize::from(n) => {}
                    Ok(want) => errors.instr(
                        f,
                        pc,
                        format!("`format` passes {n} values but its template {} takes {want}", shown()),
                    ),
                    Err(e) => errors.instr(f, pc, format!("`format` template {}: {e}", shown())),
                }
            }
        }
        Instr::Closure { f: callee, n, .. } => {
            if let Some(g) = module.funcs.get(callee as usize)
                && n > g.arity
            {
                errors.instr(
                    f,
                    pc,
                    format!(
                        "`closure` of {} captures {n} values but {} takes only {} arguments",
                        g.name, g.name, g.arity
                    ),
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{DebugInfo, FuncDebug};
    use crate::testgen::{canonical_module, sample};
    use proptest::prelude::*;

    /// The messages of `verify(m)`, as displayed.
    fn errors(m: &Module) -> Vec<String> {
        match verify(m) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// The sample with instruction `pc` of function `func` replaced.
    fn with_instr(func: usize, pc: usize, instr: Instr) -> Module {
        let mut m = sample();
        m.funcs[func].code[pc] = instr;
        m
    }

    #[test]
    fn the_sample_verifies() {
        assert_eq!(verify(&sample()), Ok(()));
    }

    #[test]
    fn display_names_the_position() {
        let e = VerifyError { func: Some("fib".into()), pc: Some(3), message: "m".into() };
        assert_eq!(e.to_string(), "in function fib, instruction 3: m");
        let e = VerifyError { func: Some("fib".into()), pc: None, message: "m".into() };
        assert_eq!(e.to_string(), "in function fib: m");
        let e = VerifyError { func: None, pc: None, message: "m".into() };
        assert_eq!(e.to_string(), "m");
    }

    #[test]
    fn names_must_be_non_empty_and_unique() {
        let mut m = sample();
        m.funcs[2].name = "main".into();
        assert_eq!(
            errors(&m),
            ["in function main: duplicate function name (function 2 has the name of function 0)"]
        );
        m.funcs[2].name = String::new();
        assert_eq!(errors(&m), ["function 2 has an empty name"]);
    }

    #[test]
    fn registers_must_cover_the_arguments() {
        let mut m = sample();
        m.funcs[2].arity = 2;
        m.funcs[2].nregs = 1;
        assert_eq!(errors(&m), ["in function spin: 1 registers is fewer than the arity 2"]);
    }

    #[test]
    fn code_must_be_non_empty_and_end_in_a_terminator() {
        let mut m = Module { debug: None, ..sample() };
        m.funcs[2].code.clear();
        assert_eq!(errors(&m), ["in function spin: function has no instructions"]);
        let m = with_instr(2, 1, Instr::Nop {});
        assert_eq!(
            errors(&m),
            [format!(
                "in function spin, instruction 1: the last instruction `nop` falls through the end of the \
                 function (it must be one of {})",
                terminators()
            )]
        );
        assert!(terminators().starts_with("jmp, tcall, tcallv, ret, raise, rethrow"), "{}", terminators());
        for last in [
            Instr::Ret { a: 0 },
            Instr::Jmp { target: 0 },
            Instr::Tcall { f: 2, args: 0, n: 0 },
            Instr::Tcallv { f: 0, args: 0, n: 0 },
            Instr::Raise { kind: 0, msg: 0 },
            Instr::Rethrow { e: 0 },
            Instr::Stop { reason: 0 },
        ] {
            assert_eq!(errors(&with_instr(2, 1, last)), Vec::<String>::new(), "{last:?}");
        }
    }

    #[test]
    fn registers_must_be_in_range() {
        let m = with_instr(1, 3, Instr::Addi { dst: 9, a: 0, imm: -2 });
        assert_eq!(
            errors(&m),
            ["in function fib, instruction 3: register r9 out of range (function has 4 registers)"]
        );
        let m = with_instr(1, 5, Instr::Add { dst: 3, a: 4, b: 70 });
        assert_eq!(
            errors(&m),
            [
                "in function fib, instruction 5: register r4 out of range (function has 4 registers)",
                "in function fib, instruction 5: register r70 out of range (function has 4 registers)",
            ]
        );
    }

    #[test]
    fn register_windows_must_be_in_range() {
        let m = with_instr(1, 5, Instr::Tuple { dst: 0, items: 2, n: 3 });
        assert_eq!(
            errors(&m),
            ["in function fib, instruction 5: register window r2..r4 (3 registers from r2) out of range \
              (function has 4 registers)"]
        );
        // A window may end exactly at the frame's end, and may be empty.
        assert_eq!(errors(&with_instr(1, 5, Instr::Tuple { dst: 0, items: 2, n: 2 })), Vec::<String>::new());
        assert_eq!(errors(&with_instr(1, 5, Instr::List { dst: 0, items: 3, n: 0 })), Vec::<String>::new());
        // The largest window cannot overflow the arithmetic.
        let m = with_instr(1, 5, Instr::List { dst: 0, items: 3, n: u16::MAX });
        assert_eq!(errors(&m).len(), 1);
    }

    #[test]
    fn indices_must_be_in_range() {
        let m = with_instr(0, 0, Instr::Const { dst: 1, k: 2 });
        assert_eq!(
            errors(&m),
            ["in function main, instruction 0: constant 2 out of range (module has 2 constants)"]
        );
        let m = with_instr(1, 0, Instr::Jlti { a: 0, imm: 2, target: 8 });
        assert_eq!(
            errors(&m),
            ["in function fib, instruction 0: jump target 8 out of range (function has 8 instructions)"]
        );
        let m = with_instr(2, 0, Instr::Fun { dst: 0, f: 3 });
        assert_eq!(
            errors(&m),
            ["in function spin, instruction 0: function 3 out of range (module has 3 functions)"]
        );
    }

    #[test]
    fn direct_calls_must_match_the_arity() {
        let m = with_instr(1, 2, Instr::Call { dst: 1, f: 1, args: 1, n: 2 });
        assert_eq!(
            errors(&m),
            ["in function fib, instruction 2: `call` of fib passes 2 arguments but fib takes 1"]
        );
        let m = with_instr(1, 7, Instr::Tcall { f: 2, args: 0, n: 1 });
        assert_eq!(
            errors(&m),
            ["in function fib, instruction 7: `tcall` of spin passes 1 arguments but spin takes 0"]
        );
        let m = with_instr(0, 6, Instr::Closure { dst: 2, f: 1, env: 1, n: 2 });
        assert_eq!(
            errors(&m),
            [
                "in function main, instruction 6: `closure` of fib captures 2 values but fib takes only 1 arguments"
            ]
        );
        assert_eq!(
            errors(&with_instr(0, 6, Instr::Closure { dst: 2, f: 1, env: 1, n: 0 })),
            Vec::<String>::new()
        );
    }

    #[test]
    fn debug_info_must_match_the_functions() {
        let mut m = sample();
        m.debug.as_mut().unwrap().funcs.pop();
        assert_eq!(errors(&m), ["debug info has 2 function entries but the module has 3 functions"]);
        let mut m = sample();
        m.debug.as_mut().unwrap().funcs[1].file = 2;
        assert_eq!(errors(&m), ["in function fib: debug file index 2 out of range (debug info has 2 files)"]);
        let mut m = sample();
        m.debug.as_mut().unwrap().funcs[2].lines.push(22);
        assert_eq!(
            errors(&m),
            ["in function spin: debug info has 3 line numbers for 2 instructions (it must have none or one \
              per instruction)"]
        );
        let mut m = sample();
        m.debug =
            Some(DebugInfo { files: vec!["x".into()], funcs: vec![FuncDebug { file: 0, lines: vec![] }; 3] });
        assert_eq!(verify(&m), Ok(()), "lines may be absent");
    }

    #[test]
    fn constants_must_be_encodable() {
        let mut m = sample();
        m.consts[1] = Value::list(vec![Value::tuple(vec![Value::Pid(crate::Pid(4))])]);
        assert_eq!(
            errors(&m),
            ["constant 1 contains a pid, which exists only at run time and cannot be a constant"]
        );
        let mut deep = Value::Nil;
        for _ in 0..=MAX_CONST_DEPTH {
            deep = Value::list(vec![deep]);
        }
        m.consts[1] = deep.clone();
        assert_eq!(errors(&m), ["constant 1 nests containers more than 64 deep"]);
        let Value::List(inner) = &deep else { unreachable!() };
        m.consts[1] = inner[0].clone();
        assert_eq!(verify(&m), Ok(()));
    }

    #[test]
    fn every_error_is_reported() {
        let mut m = sample();
        m.funcs[0].code[0] = Instr::Const { dst: 7, k: 9 };
        m.funcs[1].name = "main".into();
        m.funcs[2].code.pop();
        assert_eq!(
            errors(&m),
            [
                "in function main, instruction 0: register r7 out of range (function has 3 registers)",
                "in function main, instruction 0: constant 9 out of range (module has 2 constants)",
                "in function main: duplicate function name (function 1 has the name of function 0)",
                &format!(
                    "in function spin, instruction 0: the last instruction `now` falls through the end of \
                     the function (it must be one of {})",
                    terminators()
                ),
                "in function spin: debug info has 2 line numbers for 1 instructions (it must have none or one \
                 per instruction)",
            ]
        );
    }

    proptest! {
        /// Breaking one operand of a valid module is always caught (when the new value is out
        /// of the range the verifier allows for that operand).
        #[test]
        fn out_of_range_operands_are_caught(
            m in canonical_module(),
            pick in any::<prop::sample::Index>(),
            excess in 0u32..3,
        ) {
            let mut m = m;
            let total: usize = m.funcs.iter().map(|f| f.code.len()).sum();
            let mut k = pick.index(total);
            let fi = m.funcs.iter().position(|f| {
                if k < f.code.len() { true } else { k -= f.code.len(); false }
            }).unwrap();
            let instr = m.funcs[fi].code[k];
            let mut vals = instr.operands().as_slice().to_vec();
            let kinds = instr.opcode().operands();
            let Some(j) = kinds.iter().position(|k| !matches!(k, OperandKind::Imm | OperandKind::Count)) else {
                return Ok(());
            };
            vals[j] = i64::from(excess) + match kinds[j] {
                OperandKind::Dst | OperandKind::Reg => i64::from(m.funcs[fi].nregs),
                OperandKind::Const => m.consts.len() as i64,
                OperandKind::Label => m.funcs[fi].code.len() as i64,
                _ => m.funcs.len() as i64,
            };
            m.funcs[fi].code[k] = Instr::from_operands(instr.opcode(), &vals).unwrap();
            let errs = verify(&m).unwrap_err();
            prop_assert!(errs.iter().any(|e| e.pc == Some(k as u32)), "{:?}", errs);
        }
    }
}
