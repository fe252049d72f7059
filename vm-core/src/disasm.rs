//! The disassembler: renders a [`Module`] as assembly text (`docs/language.md`).
//!
//! # The round-trip guarantee
//!
//! For a *canonical* module, re-assembling the output gives a module that encodes to identical
//! bytes: `encode(assemble(disassemble(m))) == encode(m)`. A module is canonical when it is one
//! the assembler could have produced ([`is_canonical`]); every module the assembler produces is,
//! and so is every `.vbc` file written by `vm asm`.
//!
//! The output mirrors the assembler's rules so that nothing is renumbered on the way back:
//! - functions are written in index order, and the assembler numbers them in definition order;
//! - constants are written as literals ([`Value::repr`]) where they are used, and the assembler
//!   pools them once each in order of first use, walking the functions in order — which is the
//!   order a canonical pool is already in;
//! - every `.func` names its register count explicitly (`.func NAME ARITY REGS`);
//! - registers are `rN`, functions are named, jump targets get labels `L<index>:`;
//! - with debug information, `.file "NAME"` precedes a function whenever its file differs from
//!   the previous function's (and always before the first), and `.line N` precedes an instruction
//!   whenever its line differs from the previous instruction's (and always before a function's
//!   first instruction), so every instruction records exactly its original line and the file list
//!   comes out in order of first function; without debug information the text starts with
//!   `.nodebug`.
//!
//! A non-canonical module (say a hand-made `.vbc` whose constant pool has unused entries or is
//! out of first-use order) still disassembles faithfully, but the text starts with `;` comments
//! saying why it will not re-assemble to the same bytes (listing the pool as stored, if that is
//! the reason). Operands that point nowhere (in a module that failed verification) are printed as
//! `#const<N>`, `#label<N>` and `#func<N>`, which do not assemble, rather than being guessed at.

use crate::module::{DebugInfo, Module};
use crate::ops::{Instr, OperandKind};
use crate::value::{Value, write_str_literal};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Renders a module as assembly that re-assembles to the same bytes when the module is canonical
/// (see the module docs).
pub fn disassemble(module: &Module) -> String {
    let mut out = String::new();
    // `.nodebug` must come first: the assembler only honours it at the top of a file.
    if module.debug.is_none() {
        out.push_str(".nodebug\n");
    }
    let problems = canonical_problems(module);
    if !problems.is_empty() {
        out.push_str(
            "; This module is not canonical, so this text will not re-assemble to identical bytes:\n",
        );
        for p in &problems {
            let _ = writeln!(out, ";   - {p}");
        }
        if first_use_pool(module) != module.consts {
            out.push_str("; The constant pool as stored:\n");
            for (i, c) in module.consts.iter().enumerate() {
                let _ = writeln!(out, ";   {i}: {}", c.repr());
            }
        }
    }

    let mut current_file: Option<&str> = None;
    for (index, f) in module.funcs.iter().enumerate() {
        if index > 0 || !out.is_empty() {
            out.push('\n');
        }
        let fd = module.debug.as_ref().and_then(|d| d.funcs.get(index));
        if let (Some(d), Some(fd)) = (&module.debug, fd) {
            match d.files.get(fd.file as usize) {
                Some(file) if current_file != Some(file.as_str()) => {
                    out.push_str(".file ");
                    let _ = write_str_literal(&mut out, file);
                    out.push('\n');
                    current_file = Some(file);
                }
                Some(_) => {}
                None => {
                    let _ = writeln!(out, "; debug file index {} out of range", fd.file);
                }
            }
        }
        let _ = writeln!(out, ".func {} {} {}", func_name(&f.name), f.arity, f.nregs);

        let targets: HashSet<u32> = f.code.iter().flat_map(label_operands).collect();
        let lines = fd.map(|fd| fd.lines.as_slice()).unwrap_or(&[]);
        let mut prev_line = None;
        for (pc, instr) in f.code.iter().enumerate() {
            if let Some(&line) = lines.get(pc)
                && prev_line != Some(line)
            {
                let _ = writeln!(out, ".line {line}");
                prev_line = Some(line);
            }
            if targets.contains(&(pc as u32)) {
                let _ = writeln!(out, "L{pc}:");
            }
            out.push_str("    ");
            write_instr(&mut out, module, f.code.len(), instr);
            out.push('\n');
        }
        out.push_str(".end\n");
    }
    out
}

/// True when the module is one the assembler could have produced, so that
/// [`disassemble`] followed by assembling gives identical bytes (see the module docs).
pub fn is_canonical(module: &Module) -> bool {
    canonical_problems(module).is_empty()
}

/// Every reason the module is not canonical, as sentences; empty when it is.
pub fn canonical_problems(module: &Module) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(errors) = crate::verify::verify(module) {
        problems.push(format!("it fails verification ({} errors, the first: {})", errors.len(), errors[0]));
        // Positions and indices may point anywhere, so the checks below would only add noise.
        return problems;
    }
    if first_use_pool(module) != module.consts {
        problems
            .push("its constant pool is not exactly the used constants in order of first use".to_string());
    }
    for (i, c) in module.consts.iter().enumerate() {
        if !literal_round_trips(c) {
            problems.push(format!(
                "constant {i} contains a NaN whose bits differ from the `nan` literal's, which the \
                 text cannot express"
            ));
        }
    }
    for f in &module.funcs {
        if !is_identifier(&f.name) {
            problems.push(format!("function name {:?} is not an assembler identifier", f.name));
        }
    }
    if let Some(d) = &module.debug {
        problems.extend(debug_problems(module, d));
    }
    problems
}

/// Checks the debug information against what the assembler records: one file entry per distinct
/// source file in order of first function, and a line for every instruction.
fn debug_problems(module: &Module, d: &DebugInfo) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected_files: Vec<&str> = Vec::new();
    for (f, fd) in module.funcs.iter().zip(&d.funcs) {
        // The verifier has checked the index.
        let name = d.files[fd.file as usize].as_str();
        if !expected_files.contains(&name) {
            expected_files.push(name);
        }
        if fd.lines.len() != f.code.len() {
            problems
                .push(format!("function {} has no line numbers although the module has debug info", f.name));
        }
    }
    if d.files.iter().map(String::as_str).ne(expected_files.iter().copied()) {
        problems.push("the debug file list is not the functions' files in order of first function".into());
    }
    problems
}

/// The constant pool the assembler would build from this module's code: each constant used by a
/// `Const` operand, once, in order of first use walking the functions in order.
fn first_use_pool(module: &Module) -> Vec<crate::Value> {
    let mut seen: HashSet<&Value> = HashSet::new();
    let mut pool = Vec::new();
    for f in &module.funcs {
        for instr in &f.code {
            let operands = instr.operands();
            for (&v, &kind) in operands.as_slice().iter().zip(instr.opcode().operands()) {
                if kind == OperandKind::Const
                    && let Some(c) = module.consts.get(v as usize)
                    && seen.insert(c)
                {
                    pool.push(c.clone());
                }
            }
        }
    }
    pool
}

/// False if the value contains a float that `Value::repr` cannot render exactly: the literal
/// `nan` reads back as the one standard NaN, so any other NaN bit pattern would change.
fn literal_round_trips(v: &Value) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Float(x) if x.is_nan() && x.to_bits() != f64::NAN.to_bits() => return false,
            Value::Tuple(items) | Value::List(items) => stack.extend(items.iter()),
            Value::Map(m) => stack.extend(m.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    true
}

/// The assembler's identifier syntax: `[A-Za-z_][A-Za-z0-9_.]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A function name as written in the text: bare when it is an identifier, else quoted so that
/// the output stays unambiguous (it will not assemble, and the header comment says why).
fn func_name(name: &str) -> String {
    if is_identifier(name) {
        name.to_string()
    } else {
        let mut s = String::new();
        let _ = write_str_literal(&mut s, name);
        s
    }
}

fn label_operands(instr: &Instr) -> impl Iterator<Item = u32> {
    let operands = instr.operands();
    let kinds = instr.opcode().operands();
    (0..kinds.len())
        .filter(move |&i| kinds[i] == OperandKind::Label)
        .map(move |i| operands.as_slice()[i] as u32)
}

fn write_instr(out: &mut String, module: &Module, code_len: usize, instr: &Instr) {
    let op = instr.opcode();
    out.push_str(op.mnemonic());
    let operands = instr.operands();
    for (i, (&v, &kind)) in operands.as_slice().iter().zip(op.operands()).enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        let _ = match kind {
            OperandKind::Dst | OperandKind::Reg => write!(out, "r{v}"),
            OperandKind::Count | OperandKind::Imm => write!(out, "{v}"),
            OperandKind::Const => match module.consts.get(v as usize) {
                Some(c) => write!(out, "{}", c.repr()),
                None => write!(out, "#const<{v}>"),
            },
            OperandKind::Label if (v as u64) < code_len as u64 => write!(out, "L{v}"),
            OperandKind::Label => write!(out, "#label<{v}>"),
            OperandKind::Func => match module.funcs.get(v as usize) {
                Some(g) => write!(out, "{}", func_name(&g.name)),
                None => write!(out, "#func<{v}>"),
            },
        };
    }
}
