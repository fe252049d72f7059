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
            if targets.contains(&(pc as u32)) {
                let _ = writeln!(out, "L{pc}:");
            }
            if let Some(&line) = lines.get(pc)
                && prev_line != Some(line)
            {
                let _ = writeln!(out, ".line {line}");
                prev_line = Some(line);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytecode::encode;
    use crate::module::{FuncDebug, Function};
    use crate::testgen::{canonical_module, expect_file, files_in, sample};
    use proptest::prelude::*;

    const SAMPLE_TEXT: &str = r#".file "main.vasm"
.func main 1 3
.line 3
    const r1, "hello\n"
.line 4
    print r1
.line 5
    int r2, 20
    call r1, fib, r2, 1
.line 6
    print r1
.line 7
    const r2, {:ok, [1, 2.5, -0.0], b"\x00A\xff", %{:a => nil, "k" => true}, :"with space", nan, -inf, false, -9223372036854775808}
.line 8
    closure r2, fib, r1, 1
.line 9
    ret r1
.end

.file "lib/fib.vasm"
.func fib 1 4
.line 10
    jlti r0, 2, L7
.line 11
    addi r1, r0, -1
    call r1, fib, r1, 1
.line 12
    addi r2, r0, -2
    call r2, fib, r2, 1
.line 13
    add r3, r1, r2
    ret r3
L7:
.line 15
    ret r0
.end

.file "main.vasm"
.func spin 0 1
L0:
.line 20
    now r0
.line 21
    jmp L0
.end
"#;

    #[test]
    fn sample_disassembles_as_expected() {
        assert!(is_canonical(&sample()), "{:?}", canonical_problems(&sample()));
        assert_eq!(disassemble(&sample()), SAMPLE_TEXT);
    }

    #[test]
    fn without_debug_info_the_text_starts_with_nodebug() {
        let m = Module { debug: None, ..sample() };
        assert!(is_canonical(&m));
        let text = disassemble(&m);
        assert!(text.starts_with(".nodebug\n\n.func main 1 3\n    const r1, \"hello\\n\"\n"), "{text}");
        assert!(!text.contains(".line") && !text.contains(".file"));
    }

    #[test]
    fn a_pool_out_of_first_use_order_is_flagged_and_listed() {
        let mut m = sample();
        m.consts.swap(0, 1);
        for f in &mut m.funcs {
            for instr in &mut f.code {
                if let Instr::Const { k, .. } = instr {
                    *k = 1 - *k;
                }
            }
        }
        assert_eq!(crate::verify::verify(&m), Ok(()));
        assert!(!is_canonical(&m));
        let text = disassemble(&m);
        assert!(
            text.starts_with(
                "; This module is not canonical, so this text will not re-assemble to identical bytes:\n\
             ;   - its constant pool is not exactly the used constants in order of first use\n\
             ; The constant pool as stored:\n\
             ;   0: {:ok,"
            ),
            "{text}"
        );
        assert!(text.contains(";   1: \"hello\\n\"\n"), "{text}");
        // The instructions still show the right constants.
        assert!(text.contains("    const r1, \"hello\\n\"\n"), "{text}");

        let mut unused = sample();
        unused.consts.push(crate::Value::Int(99));
        assert!(!is_canonical(&unused));
        assert!(disassemble(&unused).contains(";   2: 99\n"));
    }

    #[test]
    fn other_non_canonical_modules() {
        let mut m = sample();
        m.consts[1] = crate::Value::Float(f64::from_bits(f64::NAN.to_bits() | 1));
        assert_eq!(
            canonical_problems(&m),
            ["constant 1 contains a NaN whose bits differ from the `nan` literal's, which the text cannot \
              express"]
        );

        let mut m = sample();
        m.funcs[2].name = "spin me".into();
        assert_eq!(canonical_problems(&m), ["function name \"spin me\" is not an assembler identifier"]);
        assert!(disassemble(&m).contains("\n.func \"spin me\" 0 1\n"));

        let mut m = sample();
        m.debug.as_mut().unwrap().files.swap(0, 1);
        for fd in &mut m.debug.as_mut().unwrap().funcs {
            fd.file = 1 - fd.file;
        }
        assert_eq!(
            canonical_problems(&m),
            ["the debug file list is not the functions' files in order of first function"]
        );

        let mut m = sample();
        m.debug.as_mut().unwrap().funcs[0].lines.clear();
        assert_eq!(
            canonical_problems(&m),
            ["function main has no line numbers although the module has debug info"]
        );
    }

    #[test]
    fn unverified_modules_still_disassemble() {
        let m = Module {
            consts: vec![],
            funcs: vec![Function {
                name: "bad".into(),
                arity: 0,
                nregs: 0,
                code: vec![
                    Instr::Const { dst: 5, k: 3 },
                    Instr::Fun { dst: 0, f: 9 },
                    Instr::Jt { a: 0, target: 40 },
                ],
            }],
            debug: Some(crate::module::DebugInfo {
                files: vec![],
                funcs: vec![FuncDebug { file: 4, lines: vec![1] }],
            }),
        };
        assert!(!is_canonical(&m));
        let text = disassemble(&m);
        assert!(text.starts_with("; This module is not canonical"), "{text}");
        assert!(text.contains("fails verification (9 errors, the first: in function bad, instruction 2: the last instruction `jt` falls"), "{text}");
        assert!(text.contains("; debug file index 4 out of range\n.func bad 0 0\n"), "{text}");
        assert!(
            text.contains("    const r5, #const<3>\n    fun r0, #func<9>\n    jt r0, #label<40>\n"),
            "{text}"
        );
        assert_eq!(disassemble(&Module::default()), ".nodebug\n");
    }

    /// Assembles `text` and checks that the result encodes to the same bytes as `m`.
    fn reassembles_identically(m: &Module, text: &str) -> Result<(), TestCaseError> {
        let back = crate::asm::assemble_str("x.vasm", text)
            .map_err(|e| TestCaseError::fail(format!("the disassembly does not assemble: {e}\n{text}")))?;
        if encode(&back) != encode(m) {
            return Err(TestCaseError::fail(format!(
                "re-assembled module differs:\n{text}\nwanted {m:#?}\ngot {back:#?}"
            )));
        }
        Ok(())
    }

    #[test]
    fn names_that_look_like_other_tokens_round_trip() {
        // Function operands are parsed as names by position, so these are ordinary names.
        for name in ["r1", "nil", "true", "nan", "inf", "L0", "a.b", "_", "func", "end", "ret", "r65536"] {
            let m = Module {
                consts: vec![],
                funcs: vec![Function {
                    name: name.into(),
                    arity: 0,
                    nregs: 1,
                    code: vec![Instr::Fun { dst: 0, f: 0 }, Instr::Tcall { f: 0, args: 0, n: 0 }],
                }],
                debug: None,
            };
            assert!(is_canonical(&m));
            reassembles_identically(&m, &disassemble(&m)).unwrap();
        }
    }

    #[test]
    fn the_sample_reassembles_to_identical_bytes() {
        reassembles_identically(&sample(), SAMPLE_TEXT).unwrap();
        let m = Module { debug: None, ..sample() };
        reassembles_identically(&m, &disassemble(&m)).unwrap();
    }

    #[test]
    fn sample_disassembly_seed_is_up_to_date() {
        expect_file(
            "fuzz/seeds/assemble/sample_disasm.vasm",
            SAMPLE_TEXT.as_bytes(),
            "sample_disassembly_seed",
        );
    }

    /// The libFuzzer dictionary of the `assemble` target: every mnemonic and directive, and the
    /// punctuation of literals, so the fuzzer reaches valid programs quickly.
    fn assemble_dict() -> String {
        let mut tokens: Vec<String> =
            crate::ops::Opcode::ALL.iter().map(|op| format!("{} ", op.mnemonic())).collect();
        for t in [
            ".func ",
            ".end",
            ".include ",
            ".const ",
            ".file ",
            ".line ",
            ".nodebug",
            "r0",
            "r1",
            ", ",
            ":ok",
            "%{",
            " => ",
            "b\"",
            "\\u{",
            "nan",
            "-inf",
            "0x",
            "1_000",
            "2.5e3",
            "$",
            ";",
            "\n",
        ] {
            tokens.push(t.to_string());
        }
        let mut out =
            String::from("# Generated by the vm-core test `assemble_dict_is_up_to_date`; do not edit.\n");
        for t in tokens {
            let mut lit = String::new();
            for b in t.bytes() {
                match b {
                    b'"' | b'\\' => lit.push_str(&format!("\\{}", b as char)),
                    0x20..=0x7e => lit.push(b as char),
                    _ => lit.push_str(&format!("\\x{b:02X}")),
                }
            }
            out.push_str(&format!("\"{lit}\"\n"));
        }
        out
    }

    #[test]
    fn assemble_dict_is_up_to_date() {
        expect_file("fuzz/assemble.dict", assemble_dict().as_bytes(), "assemble_dict");
    }

    /// Every seed of the `assemble` fuzz target assembles, verifies and survives the round trip
    /// the target checks; every regression input (a fixed crash) merely returns.
    #[test]
    fn replay_assemble_seeds_and_regressions() {
        let seeds = files_in("seeds/assemble");
        assert!(seeds.len() >= 4, "the seed corpus is missing");
        for (path, bytes) in seeds {
            let text = String::from_utf8(bytes).expect("seeds are UTF-8");
            let m = crate::asm::assemble_str("seed.vasm", &text)
                .unwrap_or_else(|e| panic!("seed {} does not assemble: {e}", path.display()));
            assert_eq!(crate::verify::verify(&m), Ok(()), "{}", path.display());
            assert!(is_canonical(&m), "{}: {:?}", path.display(), canonical_problems(&m));
            reassembles_identically(&m, &disassemble(&m)).unwrap();
        }
        for (_, bytes) in files_in("regressions/assemble") {
            if let Ok(text) = std::str::from_utf8(&bytes)
                && let Ok(m) = crate::asm::assemble_str("regression.vasm", text)
            {
                let _ = crate::verify::verify(&m);
                let _ = disassemble(&m);
            }
        }
    }

    proptest! {
        #[test]
        fn disassembly_reassembles_to_identical_bytes(m in canonical_module()) {
            reassembles_identically(&m, &disassemble(&m))?;
        }

        #[test]
        fn canonical_modules_disassemble_with_one_func_per_function(m in canonical_module()) {
            prop_assert!(is_canonical(&m), "{:?}", canonical_problems(&m));
            let text = disassemble(&m);
            prop_assert!(!text.contains("; This module is not canonical"));
            prop_assert_eq!(text.matches("\n.func ").count() + usize::from(text.starts_with(".func ")), m.funcs.len());
            prop_assert_eq!(text.matches(".end\n").count(), m.funcs.len());
        }
    }
}
