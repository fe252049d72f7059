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
//! 4. The last instruction of `f` is a terminator ([`Opcode::is_terminator`](crate::ops::Opcode::is_terminator): `jmp`, `ret`,
//!    `tcall`, `tcallv`, `raise`, `rethrow`), so execution never runs off the end: together with
//!    (8) every pc the interpreter reaches is `< f.code.len()`.
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
//! 12. Every constant has a binary encoding: no pid, channel, resource or function value (those
//!     exist only at run time), and containers nest at most
//!     [`MAX_CONST_DEPTH`](crate::bytecode::MAX_CONST_DEPTH) deep. This one is for the file
//!     format rather than the interpreter: a verified module encodes to bytes that load again.
//!
//! Things the verifier deliberately does **not** check, because the interpreter checks them at
//! run time and raises an exception: the types of register contents, the arity of calls through
//! function values (`callv`, `spawn`), and the existence of `main` (a module may be a library).
//!
//! [`verify`] reports every error it finds, not just the first, so `vm check` can list them all.

use crate::bytecode::MAX_CONST_DEPTH;
use crate::module::{Function, Module};
use crate::ops::{Instr, OperandKind};
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
                "the last instruction `{}` falls through the end of the function (it must be ret, \
                 jmp, tcall, tcallv, raise or rethrow)",
                last.opcode().mnemonic()
            ),
        );
    }
    for (pc, instr) in f.code.iter().enumerate() {
        check_instr(errors, module, f, pc, instr);
    }
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
