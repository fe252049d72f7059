//! A loaded program: constants, functions, and optional debug information.
//!
//! A [`Module`] is what the assembler produces, what the binary format stores, and what the
//! verifier checks. Only a verified module may be given to the stepper: verification is what
//! guarantees that every register, constant, function and jump index is in bounds and that every
//! function ends in an instruction that does not fall through (see `verify`).

use crate::ops::Instr;
use serde::{Deserialize, Serialize};

/// How many tuples, lists and maps may nest inside each other in one constant: a property of
/// every module, so that the recursive decoder and encoder cannot overflow the Rust stack. The
/// decoder refuses deeper constants, the verifier rejects them, and the assembler's literals
/// have the same limit.
pub const MAX_CONST_DEPTH: usize = 64;

/// One function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// Its name (unique within the module).
    pub name: String,
    /// Number of arguments; they arrive in registers `r0 .. r(arity-1)`.
    pub arity: u16,
    /// Number of registers in its frame (at least `arity`).
    pub nregs: u16,
    /// The code.
    pub code: Vec<Instr>,
}

/// Source positions of one function's instructions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuncDebug {
    /// Index into [`DebugInfo::files`] of the file the function was written in.
    pub file: u32,
    /// Line (from 1) of each instruction; the same length as the function's code, or empty.
    pub lines: Vec<u32>,
}

/// Source positions for error messages and deadlock reports. Optional: a module without it
/// runs the same, only its messages name instruction indices instead of lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugInfo {
    /// Source file names.
    pub files: Vec<String>,
    /// One entry per function, in function order.
    pub funcs: Vec<FuncDebug>,
}

/// A whole program.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Module {
    /// The constant pool.
    pub consts: Vec<crate::Value>,
    /// The functions.
    pub funcs: Vec<Function>,
    /// Source positions, if kept.
    pub debug: Option<DebugInfo>,
}

/// A source location for messages: `file:line` when debug information exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The function's name.
    pub func: String,
    /// The instruction index.
    pub pc: u32,
    /// The source file, if known.
    pub file: Option<String>,
    /// The source line, if known.
    pub line: Option<u32>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => {
                write!(f, "{}:{} (in {}, instruction {})", file, line, self.func, self.pc)
            }
            _ => write!(f, "{} instruction {}", self.func, self.pc),
        }
    }
}

impl Module {
    /// The index of the function called `name`.
    pub fn func_index(&self, name: &str) -> Option<u32> {
        self.funcs.iter().position(|f| f.name == name).map(|i| i as u32)
    }

    /// Where instruction `pc` of function `func` came from.
    pub fn location(&self, func: u32, pc: u32) -> Location {
        let name =
            self.funcs.get(func as usize).map(|f| f.name.clone()).unwrap_or_else(|| format!("#{func}"));
        let (file, line) = match &self.debug {
            Some(d) => match d.funcs.get(func as usize) {
                Some(fd) => (d.files.get(fd.file as usize).cloned(), fd.lines.get(pc as usize).copied()),
                None => (None, None),
            },
            None => (None, None),
        };
        Location { func: name, pc, file, line }
    }
}
