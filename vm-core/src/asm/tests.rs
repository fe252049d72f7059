//! Tests of the assembler and the literal parser.

use super::*;
use crate::module::{DebugInfo, FuncDebug, Function};
use crate::ops::{Instr, Opcode, OperandKind};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

fn asm(text: &str) -> Module {
    match assemble_str("t.vasm", text) {
        Ok(m) => m,
        Err(e) => panic!("assembly failed:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match assemble_str("t.vasm", text) {
        Ok(m) => panic!("expected errors, got {m:?}"),
        Err(e) => e.diagnostics,
    }
}

/// The single diagnostic of `text`.
fn error(text: &str) -> Diagnostic {
    let d = errors(text);
    assert_eq!(d.len(), 1, "{d:#?}");
    d.into_iter().next().expect("one diagnostic")
}

fn map(pairs: Vec<(Value, Value)>) -> Value {
    Value::Map(Arc::new(pairs.into_iter().collect()))
}

// ---- whole programs

#[test]
fn every_operand_kind_assembles_to_the_expected_module() {
    let m = asm(r#"
.const LIMIT 10
.func main 1
    const r1, {:ok, [1, 2.5]}   ; const
    int r2, -7                  ; imm
    call r3, helper, r1, 2      ; dst, func, reg, count
    jlti r3, $LIMIT, done       ; imm from .const, forward label
    const r4, "x"
    const r1, {:ok, [1, 2.5]}   ; pooled once
done:
    ret r3
.end

.func helper 2
    add r0, r0, r1
    ret r0
.end
"#);
    let want = Module {
        consts: vec![
            Value::tuple(vec![Value::atom("ok"), Value::list(vec![Value::Int(1), Value::Float(2.5)])]),
            Value::str("x"),
        ],
        funcs: vec![
            Function {
                name: "main".into(),
                arity: 1,
                nregs: 5,
                code: vec![
                    Instr::Const { dst: 1, k: 0 },
                    Instr::Int { dst: 2, imm: -7 },
                    Instr::Call { dst: 3, f: 1, args: 1, n: 2 },
                    Instr::Jlti { a: 3, imm: 10, target: 6 },
                    Instr::Const { dst: 4, k: 1 },
                    Instr::Const { dst: 1, k: 0 },
                    Instr::Ret { a: 3 },
                ],
            },
            Function {
                name: "helper".into(),
                arity: 2,
                nregs: 2,
                code: vec![Instr::Add { dst: 0, a: 0, b: 1 }, Instr::Ret { a: 0 }],
            },
        ],
        debug: Some(DebugInfo {
            files: vec!["t.vasm".into()],
            funcs: vec![
                FuncDebug { file: 0, lines: vec![4, 5, 6, 7, 8, 9, 11] },
                FuncDebug { file: 0, lines: vec![15, 16] },
            ],
        }),
    };
    assert_eq!(m, want);
}

#[test]
fn every_opcode_assembles_from_its_op_list_syntax() {
    for &op in Opcode::ALL {
        let mut want = Vec::new();
        let mut text = op.mnemonic().to_string();
        for (i, kind) in op.operands().iter().enumerate() {
            let (src, val) = match kind {
                OperandKind::Dst | OperandKind::Reg => (format!("r{}", i + 1), i as i64 + 1),
                OperandKind::Count => ("2".to_string(), 2),
                OperandKind::Const => ("\"k\"".to_string(), 0),
                OperandKind::Imm => ("-5".to_string(), -5),
                OperandKind::Label => ("here".to_string(), 0),
                OperandKind::Func => ("main".to_string(), 0),
            };
            text.push_str(if i == 0 { " " } else { ", " });
            text.push_str(&src);
            want.push(val);
        }
        let m = asm(&format!(".func main 0\nhere:\n    {text}\n    ret r0\n.end\n"));
        let instr = m.funcs[0].code[0];
        assert_eq!(instr.opcode(), op, "{text}");
        assert_eq!(instr.operands().as_slice(), &want[..], "{text}");
    }
}

#[test]
fn an_operand_list_expands_to_the_moves_a_person_would_write() {
    // Scratch registers go above every register the function names (r0..r5 here), so the
    // list overwrites none of them; the module is exactly the hand-written one.
    let sugar = asm(r#"
.func main 1
    int r1, 7
    const r5, "x"
again:
    tuple r2, [:meet, r1, r0, 3000000000]
    call r3, pair, [r5, r1]
    call r4, pair, [r1, r2]
    jeq r2, nil, again
    ret r2
.end

.func pair 2
    tuple r2, [r1, r0]
    ret r2
.end
"#);
    let by_hand = asm(r#"
.func main 1
    int r1, 7
    const r5, "x"
again:
    const r6, :meet
    move r7, r1
    move r8, r0
    const r9, 3000000000
    tuple r2, r6, 4
    move r6, r5
    move r7, r1
    call r3, pair, r6, 2
    call r4, pair, r1, 2
    jeq r2, nil, again
    ret r2
.end

.func pair 2
    move r3, r1
    move r4, r0
    tuple r2, r3, 2
    ret r2
.end
"#);
    assert_eq!(sugar.funcs, by_hand.funcs);
    assert_eq!(sugar.consts, by_hand.consts);
    // The label marks the first move, so a jump back builds the tuple again.
    assert_eq!(sugar.funcs[0].code[11], Instr::Jeqk { a: 2, k: 3, target: 2 });
}

#[test]
fn a_tuple_in_place_of_a_register_is_built_in_scratch_registers() {
    let sugar = asm(
        ".func main 1\n    self r1\n    send r1, {:meet, r1, r0}\n    recvp r2, {:meet, r1, :_}\n    ret r2\n.end\n",
    );
    let by_hand = asm(
        ".func main 1\n    self r1\n    const r3, :meet\n    move r4, r1\n    move r5, r0\n    tuple r6, r3, 3\n    send r1, r6\n    const r3, :meet\n    move r4, r1\n    const r5, :_\n    tuple r6, r3, 3\n    recvp r2, r6\n    ret r2\n.end\n",
    );
    assert_eq!(sugar.funcs, by_hand.funcs);
}

#[test]
fn a_binding_pattern_is_a_wildcard_and_a_tget_after_the_receive() {
    let sugar = asm(
        ".func main 1\n    self r1\n    recvp r2, {:reply, r1, ?r7, ?r0}\n    recvpt r3, {?r4, :x}, r1, out\nout:\n    ret r2\n.end\n",
    );
    let by_hand = asm(
        ".func main 1\n    self r1\n    const r8, :reply\n    move r9, r1\n    const r10, :_\n    const r11, :_\n    tuple r12, r8, 4\n    recvp r2, r12\n    tget r7, r2, 2\n    tget r0, r2, 3\n    const r8, :_\n    const r9, :x\n    tuple r10, r8, 2\n    recvpt r3, r10, r1, out\n    tget r4, r3, 0\nout:\n    ret r2\n.end\n",
    );
    assert_eq!(sugar.funcs, by_hand.funcs);
    // A pattern without bindings assembles exactly as before: binding costs nothing elsewhere.
    let plain = asm(".func main 1\n    recvp r2, {:reply, r0, :_}\n    ret r2\n.end\n");
    assert_eq!(plain.funcs[0].code.len(), 6);
}

#[test]
fn a_constant_where_a_register_is_read_is_loaded_into_a_scratch_register() {
    // Each constant operand is one load into a scratch register above r0..r2, then the
    // instruction reads it; `move` of a constant is the load itself, into its destination.
    let sugar = asm(r#"
.const PAUSE 10
.func main 1
    split r1, r0, b" "
again:
    find r2, r0, "="
    sleep $PAUSE
    concat r2, "[", r0
    jlt r2, 5, again
    move r2, :done
    send r1, {:x, r2}
    ret nil
.end
"#);
    let by_hand = asm(r#"
.func main 1
    const r3, b" "
    split r1, r0, r3
again:
    const r3, "="
    find r2, r0, r3
    int r3, 10
    sleep r3
    const r3, "["
    concat r2, r3, r0
    int r3, 5
    jlt r2, r3, again
    const r2, :done
    const r3, :x
    move r4, r2
    tuple r5, r3, 2
    send r1, r5
    nil r3
    ret r3
.end
"#);
    assert_eq!(sugar.funcs, by_hand.funcs);
    assert_eq!(sugar.funcs[0].nregs, 6);
    // Two constants in one instruction take two scratch registers, in operand order, and the
    // label marks the first load, so the jump back loads them again. (A function that names
    // no register still has r0, so they are r1 and r2.)
    let m = asm(".func main 0\nagain:\n    jlt 1, 2.5, again\n    ret 0\n.end\n");
    assert_eq!(
        m.funcs[0].code[..3],
        [Instr::Int { dst: 1, imm: 1 }, Instr::Const { dst: 2, k: 0 }, Instr::Jlt { a: 1, b: 2, target: 0 }]
    );
}

#[test]
fn a_tuple_or_list_holding_registers_nests_in_an_operand_list() {
    // A list holding registers is also built where one register is read. The outer items take the first scratch registers (r3, r4, r5 here); each nested one is
    // built in registers of its own after them, before the outer item it is.
    let sugar = asm(r#"
.func main 2
    call r2, main, [r0, {:join, r1}]
    list r2, [{:msg, {:line, :_}}, {:readable, r0}, [r1, 5]]
    send r0, {:say, [r1], r0}
    concat r2, [r0], r2
    concat r2, [1, 2], r2
    ret r2
.end
"#);
    let by_hand = asm(r#"
.func main 2
    move r3, r0
    const r5, :join
    move r6, r1
    tuple r4, r5, 2
    call r2, main, r3, 2
    const r3, {:msg, {:line, :_}}
    const r6, :readable
    move r7, r0
    tuple r4, r6, 2
    move r8, r1
    int r9, 5
    list r5, r8, 2
    list r2, r3, 3
    const r3, :say
    move r7, r1
    list r4, r7, 1
    move r5, r0
    tuple r6, r3, 3
    send r0, r6
    move r3, r0
    list r4, r3, 1
    concat r2, r4, r2
    const r3, [1, 2]
    concat r2, r3, r2
    ret r2
.end
"#);
    assert_eq!(sugar.funcs, by_hand.funcs);
    assert_eq!(sugar.funcs[0].nregs, by_hand.funcs[0].nregs);
    // A binding nested in a pattern's tuple is refused at the binding.
    let e = error(".func main 1\n    recvp r1, {:a, {?r2}}\n    ret r0\n.end\n");
    assert!(e.message.contains("not a pattern"), "{e:?}");
    assert!(e.hint.as_deref().unwrap_or("").contains("nested"), "{e:?}");
    assert_eq!((e.line, e.col), (2, 21), "{e:?}");
    // A bad item inside is located there.
    let e = error(".func main 1\n    send r0, {:a, [r1, nope]}\n    ret r0\n.end\n");
    assert_eq!((e.line, e.col), (2, 24), "{e:?}");
    let e = error(".func main 1\n    send r0, {:a, {r1}\n    ret r0\n.end\n");
    assert_eq!(e.line, 2, "{e:?}");
}

#[test]
fn constant_operand_misuse_is_located_with_a_hint() {
    let cases: [(&str, u32, &str, &str); 7] = [
        // A word that is not a literal reads as a misspelt register.
        ("add r1, x1, r0", 13, "expected a register (`r0`, `r1`, ...), found `x1`", "a constant also works"),
        // A destination is written: no constant there.
        ("int 5, 3", 9, "expected a register (`r0`, `r1`, ...), found `5`", "must be a register"),
        ("find r1, r0, \"ab", 18, "unterminated string", ""),
        ("print $NOPE", 11, "undefined constant `$NOPE`", ""),
        ("move r1, r0 r2", 17, "unexpected `r2` after the operand", ""),
        // A register window starts at a register; a list takes constants.
        ("call r1, main, 5, 1", 20, "expected a register (`r0`, `r1`, ...), found `5`", ""),
        // A destination out of range keeps its own hint.
        ("int r70000, 3", 9, "register `r70000` is out of range", "registers are r0 to"),
    ];
    for (line, col, message, hint) in cases {
        let e = error(&format!(".func main 0\n    {line}\n    ret r0\n.end\n"));
        assert_eq!((e.line, e.col, e.message.as_str()), (2, col, message), "{line}: {e:?}");
        assert!(e.hint.as_deref().unwrap_or("").contains(hint), "{line}: {e:?}");
    }
}

#[test]
fn binding_misuse_is_an_error_at_the_binding_with_a_hint() {
    let cases: [(&str, &str, &str); 5] = [
        ("    send r0, {:a, ?r1}\n", "not a pattern", "recvp"),
        ("    spawn r1, r0, [?r2]\n", "not a pattern", "recvp"),
        ("    recvp r1, {:a, ?r1}\n", "binds the register the message is received into", "another register"),
        ("    recvp r1, {?r2, ?r2}\n", "bound twice", "its own register"),
        ("    recvp r1, {:a, ?x}\n", "binds no register", "before a register"),
    ];
    for (line, message, hint) in cases {
        let e = error(&format!(".func main 1\n{line}    ret r0\n.end\n"));
        assert!(e.message.contains(message), "{line}: {e:?}");
        assert!(e.hint.as_deref().unwrap_or("").contains(hint), "{line}: {e:?}");
        let col = line.rfind('?').unwrap() as u32 + 1; // the second of two bindings
        assert_eq!((e.line, e.col), (2, col), "{line}: {e:?}");
    }
    let e = error(".func main 1 4\n    recvp r1, {:a, ?r9}\n    ret r0\n.end\n");
    assert!(e.message.contains("out of range"), "{e:?}");
}

#[test]
fn operand_lists_take_small_ints_nil_and_empty_lists_and_are_checked() {
    let m = asm(".func main 0\n    list r0, [1, nil]\n    spawn r1, r0, []\n    ret r0\n.end\n");
    assert_eq!(
        m.funcs[0].code[..4],
        [
            Instr::Int { dst: 2, imm: 1 },
            Instr::Nil { dst: 3 },
            Instr::List { dst: 0, items: 2, n: 2 },
            Instr::Spawn { dst: 1, f: 0, args: 0, n: 0 },
        ]
    );
    assert_eq!(m.funcs[0].nregs, 4);
    // An explicit register count must leave room for the scratch registers, at its top.
    let m = asm(".func main 0 8\n    tuple r0, [r1, :a]\n    ret r0\n.end\n");
    assert_eq!(m.funcs[0].code[2], Instr::Tuple { dst: 0, items: 6, n: 2 });
    let e = error(".func main 0 3\n    int r2, 1\n    tuple r0, [r1, :a]\n    ret r0\n.end\n");
    assert!(e.message.contains("no room for the 2 scratch registers"), "{e:?}");
    assert!(e.hint.as_deref().unwrap_or("").contains("at least 5"), "{e:?}");
    let e = error(".func main 0\n    tuple r0, [r1, nope]\n    ret r0\n.end\n");
    assert!(e.message.contains("nope") || e.message.contains("expected"), "{e:?}");
}

#[test]
fn labels_resolve_forward_and_backward() {
    let m = asm("
.func count 1
    int r1, 0
loop:
    jgei r1, 10, done   ; forward
    addi r1, r1, 1
    jmp loop            ; backward
done: ret r1
.end
");
    let code = &m.funcs[0].code;
    assert_eq!(code[1], Instr::Jgei { a: 1, imm: 10, target: 4 });
    assert_eq!(code[3], Instr::Jmp { target: 1 });
    assert_eq!(code[4], Instr::Ret { a: 1 });
}

#[test]
fn labels_are_local_to_their_function() {
    let d = error(".func a 0\nx: nil r0\n ret r0\n.end\n.func b 0\n jmp x\n.end\n");
    assert_eq!((d.line, d.col), (6, 6));
    assert_eq!(d.message, "unknown label `x` in `b`");
}

#[test]
fn functions_resolve_forward_and_by_value() {
    let m = asm(".func main 0\n fun r0, later\n tcall later, r0, 0\n.end\n.func later 0\n ret r0\n.end\n");
    assert_eq!(m.funcs[0].code, vec![Instr::Fun { dst: 0, f: 1 }, Instr::Tcall { f: 1, args: 0, n: 0 }]);
}

#[test]
fn register_count_is_inferred() {
    let m = asm("
.func none 0
    jmp none_loop
none_loop:
    jmp none_loop
.end
.func args_only 3
    ret r0
.end
.func highest 2
    nil r5
    ret r5
.end
.func window 0
    tuple r0, r3, 4
    ret r0
.end
.func empty_window 0
    list r0, r2, 0
    ret r0
.end
.func explicit 1 9
    ret r0
.end
");
    let nregs: Vec<(&str, u16)> = m.funcs.iter().map(|f| (f.name.as_str(), f.nregs)).collect();
    assert_eq!(
        nregs,
        [("none", 1), ("args_only", 3), ("highest", 6), ("window", 7), ("empty_window", 3), ("explicit", 9)]
    );
}

#[test]
fn explicit_register_count_is_enforced() {
    let d = error(".func f 1 4\n    move r4, r0\n    ret r0\n.end\n");
    assert_eq!((d.line, d.col, d.len), (2, 10, 2));
    assert_eq!(d.message, "register r4 is out of range");
    let d = error(".func f 1 4\n    tuple r0, r2, 3\n    ret r0\n.end\n");
    assert_eq!((d.line, d.col), (2, 19));
    assert!(d.message.contains("r2..r4"), "{}", d.message);
    let d = error(".func f 3 2\n    ret r0\n.end\n");
    assert_eq!(d.message, "REGS (2) is less than ARITY (3)");
}

#[test]
fn constants_are_pooled_in_order_of_first_use() {
    let m = asm(r#"
.const UNUSED "never"
.const GREETING "hi"
.func a 0
    const r0, 2
    const r0, $GREETING
    const r0, 1
    jmp b_start
b_start:
    tcall b, r0, 0
.end
.func b 0
    const r0, "hi"
    const r0, 3
    const r0, 2
    const r0, 2.0
    ret r0
.end
"#);
    let want = [Value::Int(2), Value::str("hi"), Value::Int(1), Value::Int(3), Value::Float(2.0)];
    assert_eq!(m.consts, want);
    assert_eq!(m.funcs[1].code[0], Instr::Const { dst: 0, k: 1 });
}

#[test]
fn named_constants_work_as_immediates_and_are_checked() {
    let m = asm(".const N -3\n.func f 0\n int r0, $N\n addi r0, r0, $N\n ret r0\n.end\n");
    assert_eq!(m.funcs[0].code[1], Instr::Addi { dst: 0, a: 0, imm: -3 });
    assert!(m.consts.is_empty());
    let d = error(".const S \"s\"\n.func f 0\n int r0, $S\n ret r0\n.end\n");
    assert_eq!(d.message, "expected an integer, found \"s\"");
    let d = error(".const BIG 0x1_0000_0000\n.func f 0\n int r0, $BIG\n ret r0\n.end\n");
    assert_eq!(d.message, "immediate 4294967296 does not fit in 32 bits");
    let d = error(".func f 0\n int r0, 2147483648\n ret r0\n.end\n");
    assert_eq!((d.line, d.col, d.len), (2, 10, 10));
    let d = error(".const A 1\n.const A 2\n");
    assert_eq!((d.line, d.message.as_str()), (2, "constant `A` is already defined"));
    let d = error(".const LIMIT 1\n.func f 0\n int r0, $LIMT\n ret r0\n.end\n");
    assert_eq!(d.message, "undefined constant `$LIMT`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `$LIMIT`?"));
}

#[test]
fn constants_in_scope_follow_includes() {
    let mut files = MemLoader::new()
        .with("main.vasm", ".const A 1\n.include \"lib.vasm\"\n.func main 0\n int r0, $B\n ret r0\n.end\n")
        .with("lib.vasm", ".const B 2\n.func lib 0\n int r0, $A\n ret r0\n.end\n");
    let e = assemble("main.vasm", &mut files).unwrap_err();
    // `A` is visible in the included file; `B` is not visible back in the includer.
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    assert_eq!((e.diagnostics[0].file.as_str(), e.diagnostics[0].line), ("main.vasm", 4));
}

#[test]
fn includes_resolve_relative_paths_and_skip_repeats() {
    let mut files = MemLoader::new()
        .with(
            "app/main.vasm",
            ".include \"lib/a.vasm\"\n.func main 0\n call r0, a, r0, 0\n call r0, b, r0, 0\n ret r0\n.end\n\
             .include \"./util/b.vasm\"\n",
        )
        .with("app/lib/a.vasm", ".include \"../util/b.vasm\"\n.func a 0\n tcall b, r0, 0\n.end\n")
        .with("app/util/b.vasm", ".include \"./../util/./c.vasm\"\n.func b 0\n tcall c, r0, 0\n.end\n")
        .with("app/util/c.vasm", ".func c 0\n nil r0\n ret r0\n.end\n");
    let m = assemble("app/main.vasm", &mut files).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = m.funcs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["c", "b", "a", "main"]);
    let debug = m.debug.expect("debug info");
    assert_eq!(debug.files, ["app/util/c.vasm", "app/util/b.vasm", "app/lib/a.vasm", "app/main.vasm"]);
    assert_eq!(debug.funcs[3], FuncDebug { file: 3, lines: vec![3, 4, 5] });
    assert_eq!(m.funcs[3].code[1], Instr::Call { dst: 0, f: 1, args: 0, n: 0 });
}

#[test]
fn include_cycles_and_missing_files_are_errors() {
    let mut files = MemLoader::new()
        .with("a.vasm", "\n.include \"b.vasm\"\n")
        .with("b.vasm", ".func f 0\n ret r0\n.end\n  .include \"a.vasm\" ; back\n.include \"nope.vasm\"\n");
    let e = assemble("a.vasm", &mut files).unwrap_err();
    let got: Vec<(&str, u32, u32, &str)> =
        e.diagnostics.iter().map(|d| (d.file.as_str(), d.line, d.col, d.message.as_str())).collect();
    assert_eq!(
        got,
        [
            ("b.vasm", 4, 12, "include cycle: a.vasm -> b.vasm -> a.vasm"),
            ("b.vasm", 5, 10, "cannot include `nope.vasm`: no file named `nope.vasm`"),
        ]
    );
    let names: Vec<&str> = e.sources.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a.vasm", "b.vasm"]);
    let e = assemble("missing.vasm", &mut MemLoader::new()).unwrap_err();
    assert_eq!(e.diagnostics[0].message, "cannot read `missing.vasm`: no file named `missing.vasm`");
    assert_eq!(e.sources, [("missing.vasm".to_string(), String::new())]);
}

#[test]
fn diagnostics_are_sorted_by_file_then_line() {
    let mut files = MemLoader::new()
        .with(
            "main.vasm",
            ".func main 0\n call r0, nowhere, r0, 0\n ret r0\n.end\n.include \"lib.vasm\"\n bogus\n",
        )
        .with("lib.vasm", ".func lib 0\n ret r99999\n.end\n");
    let e = assemble("main.vasm", &mut files).unwrap_err();
    let got: Vec<(&str, u32)> = e.diagnostics.iter().map(|d| (d.file.as_str(), d.line)).collect();
    assert_eq!(got, [("main.vasm", 2), ("main.vasm", 6), ("lib.vasm", 2)]);
}

#[test]
fn debug_directives_override_positions() {
    let m = asm("
.file \"orig.vasm\"
.func f 0
.line 40
    nil r0
    nil r0
.line 7
    ret r0
.end
.func g 0
    ret r0
.end
");
    let debug = m.debug.expect("debug info");
    assert_eq!(debug.files, ["orig.vasm"]);
    assert_eq!(
        debug.funcs,
        [FuncDebug { file: 0, lines: vec![40, 40, 7] }, FuncDebug { file: 0, lines: vec![11] }]
    );
    assert_eq!(asm(".nodebug\n.func f 0\n ret r0\n.end\n").debug, None);
    let mut files = MemLoader::new()
        .with("main.vasm", ".include \"lib.vasm\"\n")
        .with("lib.vasm", ".nodebug\n.func f 0\n ret r0\n.end\n");
    let e = assemble("main.vasm", &mut files).unwrap_err();
    assert_eq!(e.diagnostics[0].message, "`.nodebug` is only allowed in the main file");
}

#[test]
fn files_without_functions_are_not_in_the_debug_section() {
    let mut files = MemLoader::new()
        .with("main.vasm", ".include \"consts.vasm\"\n.func main 0\n int r0, 1\n ret r0\n.end\n")
        .with("consts.vasm", ".const X 5\n");
    let m = assemble("main.vasm", &mut files).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.debug.expect("debug").files, ["main.vasm"]);
}

// ---- diagnostics

#[test]
fn three_mistakes_give_three_diagnostics() {
    let d = errors(
        ".func main 0
    ad r0, r1, r2
    move r0, r70000
    jmp nowhere
.end
",
    );
    let got: Vec<(u32, u32, &str)> = d.iter().map(|d| (d.line, d.col, d.message.as_str())).collect();
    assert_eq!(
        got,
        [
            (2, 5, "unknown instruction `ad`"),
            (3, 14, "register `r70000` is out of range"),
            (4, 9, "unknown label `nowhere` in `main`"),
        ]
    );
    assert_eq!(d[0].offset, 17);
    assert_eq!(d[0].len, 2);
}

#[test]
fn unknown_mnemonics_suggest_the_nearest() {
    let d = error(".func main 0\n    ad r0, r1, r2\n    ret r0\n.end\n");
    assert_eq!(d.hint.as_deref(), Some("did you mean `add`?"));
    let d = error(".func main 0\n    RET r0\n.end\n");
    assert_eq!(d.hint.as_deref(), Some("mnemonics are lower case: `ret`"));
    assert_eq!(levenshtein("kitten", "sitting"), 3);
    assert_eq!(levenshtein("", "abc"), 3);
    assert_eq!(nearest("fib", ["fob", "fix", "main"]), Some("fix"));
    assert_eq!(nearest("zzzz", ["add", "sub"]), None);
}

#[test]
fn wrong_operand_count_shows_the_syntax() {
    let d = error(".func main 0\n    add r0, r1\n    ret r0\n.end\n");
    assert_eq!(d.message, "`add` takes 3 operands, found 2");
    assert_eq!(d.hint.as_deref(), Some("expected: add dst, a, b"));
    assert_eq!((d.line, d.col, d.len), (2, 5, 10));
    let d = error(".func main 0\n    endtry r0\n    ret r0\n.end\n");
    assert_eq!(d.hint.as_deref(), Some("expected: endtry"));
}

#[test]
fn operand_errors_point_at_the_operand() {
    let cases: &[(&str, u32, &str)] = &[
        ("move r0, x1", 14, "expected a register (`r0`, `r1`, ...), found `x1`"),
        ("const r0, \"abc", 15, "unterminated string"),
        ("const r0, \"a\\qb\"", 17, "unknown escape `\\q`"),
        ("const r0, \"\\xff\"", 16, "`\\xff` is not ASCII"),
        ("const r0, b\"\\xzz\"", 17, "`\\x` needs two hex digits"),
        ("const r0, {1, 2", 20, "expected `,` or `}`"),
        ("const r0, foo", 15, "`foo` is not a value"),
        ("const r0, 12abc", 15, "invalid number `12abc`"),
        ("const r0, $NOPE", 15, "undefined constant `$NOPE`"),
        ("int r0, 1.5", 13, "expected an integer, found 1.5"),
        ("int r0, 3000000000", 13, "immediate 3000000000 does not fit in 32 bits"),
        ("tuple r0, r1, -1", 19, "expected a count (a non-negative integer), found `-`"),
        ("move r0 r1", 5, "`move` takes 2 operands, found 1"),
        ("move r0, r1 r2", 17, "unexpected `r2` after the operand"),
        ("move r0,, r1", 12, "missing operand"),
        ("call r0, r1, r2, 0", 14, "expected a function name, found `r1`"),
    ];
    for &(line, col, msg) in cases {
        let d = error(&format!(".func main 0\n    {line}\n    ret r0\n.end\n"));
        assert_eq!((d.line, d.col, d.message.as_str()), (2, col, msg), "{line}");
    }
}

#[test]
fn structural_errors_are_reported() {
    let d = error(".func f 0\n    nil r0\n.end\n");
    assert_eq!((d.line, d.col), (2, 5));
    assert_eq!(d.message, "function `f` can fall through its end after `nil`");
    assert!(d.hint.as_deref().is_some_and(|h| h.contains("ret") && h.contains("rethrow")), "{:?}", d.hint);
    let d = error(".func f 0\n.end\n");
    assert_eq!(d.message, "function `f` has no instructions");
    let d = error(".func f 0\n    ret r0\n");
    assert_eq!((d.line, d.col, d.message.as_str()), (1, 7, "function `f` has no `.end`"));
    let d = errors(".func f 0\n    ret r0\n.func g 0\n    ret r0\n.end\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "function `f` has no `.end`");
    let d = error(".func f 0\n ret r0\n.end\n.func f 1\n ret r0\n.end\n");
    assert_eq!((d.line, d.message.as_str()), (4, "duplicate function `f`"));
    assert_eq!(d.hint.as_deref(), Some("it is first defined at line 1"));
    let d = error(".func f 0\nx: nil r0\nx: ret r0\n.end\n");
    assert_eq!((d.line, d.col, d.message.as_str()), (3, 1, "duplicate label `x`"));
    let d = error("    nil r0\n    ret r0\n.func f 0\n ret r0\n.end\n");
    assert_eq!((d.line, d.message.as_str()), (1, "instruction outside a function"));
    let d = error(".func f 0\n ret r0\nafter:\n.end\n");
    assert_eq!(d.message, "label `after` has no instruction after it");
    let d = error(".end\n");
    assert_eq!(d.message, "`.end` without a `.func`");
    let d = error(".fnuc f 0\n");
    assert_eq!(d.hint.as_deref(), Some("did you mean `.func`?"));
    let d = error(".func main 0\n call r0, mian, r0, 0\n ret r0\n.end\n");
    assert_eq!(
        (d.message.as_str(), d.hint.as_deref()),
        ("unknown function `mian`", Some("did you mean `main`?"))
    );
}

#[test]
fn columns_count_characters_and_offsets_count_bytes() {
    let d = error(".func f 0\n    const r0, \"é\" ; ünïcode\n    nop x\n    ret r0\n.end\n");
    assert_eq!((d.line, d.col), (3, 5));
    let d = error(".func f 0\n    const r0, {\"é\", bad}\n    ret r0\n.end\n");
    assert_eq!((d.line, d.col), (2, 21));
    assert_eq!(d.offset, ".func f 0\n    const r0, {\"é\", ".len());
}

#[test]
fn comments_blank_lines_and_crlf_are_fine() {
    let m = asm(
        "; header\r\n\r\n.func main 0 ; the entry\r\n  start:   ; a label alone\r\n  const r0, \";\" ; semicolon\r\n  ret r0\r\n.end\r\n",
    );
    assert_eq!(m.consts, [Value::str(";")]);
    assert_eq!(m.debug.expect("debug").funcs[0].lines, [5, 6]);
}

// ---- literals

#[test]
fn literals_parse() {
    let cases: Vec<(&str, Value)> = vec![
        ("nil", Value::Nil),
        ("  true ", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("42", Value::Int(42)),
        ("-7", Value::Int(-7)),
        ("0x1F", Value::Int(31)),
        ("-0x10", Value::Int(-16)),
        ("1_000_000", Value::Int(1_000_000)),
        ("-9223372036854775808", Value::Int(i64::MIN)),
        ("0x7fff_ffff_ffff_ffff", Value::Int(i64::MAX)),
        ("1.5", Value::Float(1.5)),
        ("-2.0e3", Value::Float(-2000.0)),
        ("1e9", Value::Float(1e9)),
        ("2.5E-3", Value::Float(0.0025)),
        ("-0.0", Value::Float(-0.0)),
        ("nan", Value::Float(f64::NAN)),
        ("inf", Value::Float(f64::INFINITY)),
        ("-inf", Value::Float(f64::NEG_INFINITY)),
        (":ok", Value::atom("ok")),
        (":\"with spaces\"", Value::atom("with spaces")),
        ("\"a\\n\\t\\\\\\\"\\0\\x41\\u{e9}\\u{1F600}\"", Value::str("a\n\t\\\"\0Aé😀")),
        ("b\"\\xff\\x00z\"", Value::bytes(&b"\xff\x00z"[..])),
        ("b\"\\u{e9}\"", Value::bytes(&b"\xc3\xa9"[..])),
        ("{}", Value::tuple(vec![])),
        ("{1, :two, \"three\"}", Value::tuple(vec![Value::Int(1), Value::atom("two"), Value::str("three")])),
        (
            "[ 1 ,[2, [] ] ]",
            Value::list(vec![Value::Int(1), Value::list(vec![Value::Int(2), Value::list(vec![])])]),
        ),
        ("%{}", map(vec![])),
        (
            "%{:a => 1, \"b\" => [2]}",
            map(vec![(Value::atom("a"), Value::Int(1)), (Value::str("b"), Value::list(vec![Value::Int(2)]))]),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_value(text), Ok(want), "{text}");
    }
}

#[test]
fn bad_literals_are_errors() {
    let cases = [
        ("", "expected a value at column 1"),
        ("1 2", "unexpected `2` after the value at column 3"),
        ("[1,]", "expected a value, found `]` at column 4"),
        ("{1 2}", "expected `,` or `}`, found `2` at column 4"),
        ("%{1 => 2, 1 => 3}", "duplicate key in map literal at column 11"),
        ("%{1: 2}", "expected `=>`, found `:` at column 4"),
        ("9223372036854775808", "integer literal out of range (ints are 64-bit) at column 1"),
        ("1e999", "float literal out of range at column 1 (write `inf` or `-inf`)"),
        ("1.", "invalid number `1.` at column 1"),
        ("0x", "expected hex digits after `0x` at column 1"),
        ("- 1", "expected a digit after `-` at column 2"),
        (
            ": ok",
            "expected an atom name after `:` at column 2 (atoms are written `:name` or `:\"any text\"`, with no space after `:`)",
        ),
        (
            ":a.b",
            "`:a.b` is not an atom at column 1 (an atom name containing `.` must be quoted: `:\"a.b\"`)",
        ),
        (
            "\"\\u{d800}\"",
            "`\\u{d800}` is not a Unicode scalar value at column 2 (valid escapes are \\n \\r \\t \\0 \\\\ \\\" \\xHH and \\u{HEX})",
        ),
        (
            "\"\\u{1234567}\"",
            "`\\u{...}` needs 1 to 6 hex digits at column 2 (valid escapes are \\n \\r \\t \\0 \\\\ \\\" \\xHH and \\u{HEX})",
        ),
        ("\"abc", "unterminated string at column 1 (close it with `\"` on the same line)"),
    ];
    for (text, want) in cases {
        assert_eq!(parse_value(text), Err(want.to_string()), "{text}");
    }
}

#[test]
fn nesting_is_limited_instead_of_overflowing_the_stack() {
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(parse_value(&ok).is_ok());
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(
        parse_value(&deep),
        Err("literal nested too deeply (the limit is 64 levels) at column 65".into())
    );
    let hostile = "{[%{".repeat(100_000);
    assert!(parse_value(&hostile).is_err());
    let program = format!(".func f 0\n const r0, {}\n ret r0\n.end\n", "[".repeat(100_000));
    assert_eq!(errors(&program).len(), 1);
}

#[test]
fn mem_loader_normalises_paths() {
    let mut l = MemLoader::new().with("./a/b.vasm", "B").with("c.vasm", "C");
    assert_eq!(l.load("a/./b.vasm", None), Ok(("a/b.vasm".into(), "B".into())));
    assert_eq!(l.load("../c.vasm", Some("a/b.vasm")), Ok(("c.vasm".into(), "C".into())));
    assert_eq!(l.load("b.vasm", Some("a/x.vasm")), Ok(("a/b.vasm".into(), "B".into())));
    assert!(l.load("b.vasm", Some("c.vasm")).is_err());
    assert_eq!(normalize_path("../x/../../y"), "../../y");
    assert_eq!(normalize_path("/a/../../b"), "/b");
}

#[test]
fn complete_programs_in_the_language_guide_assemble() {
    let guide = include_str!("../../../docs/language.md");
    let mut blocks = 0;
    let mut rest = guide;
    while let Some(start) = rest.find("```vasm\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        if let Err(e) = assemble_str("guide.vasm", &body[..end]) {
            panic!("a program in docs/language.md does not assemble:\n{e}\n{}", &body[..end]);
        }
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(blocks >= 5, "only {blocks} complete programs found");
}

#[test]
fn complete_programs_in_the_std_guide_assemble() {
    let guide = include_str!("../../../docs/std.md");
    let mut blocks = 0;
    for block in guide.split("```vasm\n").skip(1) {
        let body = &block[..block.find("```").expect("closed code block")];
        if let Err(e) = assemble_str("std_guide.vasm", body) {
            panic!("a program in docs/std.md does not assemble:\n{e}\n{body}");
        }
        blocks += 1;
    }
    assert!(blocks >= 3, "only {blocks} complete programs found in docs/std.md");
}

#[test]
fn the_standard_library_is_included_from_the_binary_not_the_loader() {
    // The loader holds only the main file: `std/` paths never reach it.
    let mut files = MemLoader::new();
    files.insert("deep/dir/main.vasm", ".include \"std/list.vasm\"\n.func main 1\n    ret r0\n.end\n");
    let m = assemble("deep/dir/main.vasm", &mut files).unwrap_or_else(|e| panic!("{e}"));
    for f in ["list_map", "list_fold", "list_filter", "list_each"] {
        assert!(m.func_index(f).is_some(), "{f}");
    }
    assert!(m.debug.expect("debug").files.contains(&"std/list.vasm".to_string()));
    let e = error(".include \"std/nope.vasm\"\n.func main 1\n    ret r0\n.end\n");
    assert!(e.message.contains("no `std/nope.vasm` in the standard library"), "{e:?}");
    assert!(e.hint.as_deref().unwrap_or("").contains("std/list.vasm"), "{e:?}");
}

#[test]
fn the_several_files_example_in_the_language_guide_assembles() {
    // Plain code blocks that start with `; NAME.vasm` are the files of one program.
    let guide = include_str!("../../../docs/language.md");
    let mut files = MemLoader::new();
    for block in guide.split("```\n; ").skip(1) {
        let (name, rest) = block.split_once('\n').expect("a file name line");
        let body = &rest[..rest.find("```").expect("closed code block")];
        files.insert(name.trim(), body);
    }
    assert_eq!(files.0.len(), 2);
    let m = assemble("main.vasm", &mut files).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.consts, [Value::str("hello")]);
    assert_eq!(m.debug.expect("debug").files, ["lib/greet.vasm", "main.vasm"]);
}

// ---- properties

/// Any float, with NaN only in its canonical form (the literal `nan` has no sign or payload).
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_map(|x| if x.is_nan() { f64::NAN } else { x }),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(1e300),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z_][a-z0-9_]{0,6}", "[\\x00-\\x1f\"\\\\\u{7f}\u{80}-\u{9f} a]{0,8}"]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        float().prop_map(Value::Float),
        text().prop_map(|s| Value::atom(&s)),
        text().prop_map(Value::str),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::bytes),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::tuple),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::list),
            proptest::collection::btree_map(inner.clone(), inner, 0..4)
                .prop_map(|m: BTreeMap<Value, Value>| Value::Map(Arc::new(m))),
        ]
    })
}

proptest! {
    #[test]
    fn repr_round_trips_through_parse_value(v in value()) {
        prop_assert_eq!(parse_value(&v.repr()), Ok(v));
    }

    #[test]
    fn const_operands_round_trip_through_the_assembler(v in value()) {
        let m = assemble_str("p.vasm", &format!(".func f 0\n const r0, {}\n ret r0\n.end\n", v.repr()));
        prop_assert_eq!(m.map(|m| m.consts).map_err(|e| e.to_string()), Ok(vec![v]));
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = parse_value(&s);
        let _ = assemble_str("p.vasm", &s);
    }

    #[test]
    fn assembly_like_text_never_panics(
        s in "([ \t]|\\.func|\\.end|\\.const|\\.line|\\.file|\\.include|r[0-9]{1,6}|[a-z]{1,5}|:|,|\\$|\"|\\\\|[{}\\[\\]%]|=>|-|[0-9]{1,3}|;|\n|é){0,60}"
    ) {
        let _ = parse_value(&s);
        if let Err(e) = assemble_str("p.vasm", &s) {
            for d in &e.diagnostics {
                prop_assert!(d.offset + d.len <= s.len(), "{:?}", d);
                prop_assert!(s.is_char_boundary(d.offset), "{:?}", d);
                prop_assert!(d.line >= 1 && d.col >= 1);
            }
        }
    }
}

/// A loader over byte files, so files that are not UTF-8 can be given.
struct Bytes(Vec<(&'static str, &'static [u8])>);

impl SourceLoader for Bytes {
    fn load(&mut self, path: &str, _: Option<&str>) -> Result<(String, String), LoadError> {
        match self.0.iter().find(|(n, _)| *n == path) {
            Some((n, b)) => source_text(n.to_string(), b.to_vec()),
            None => Err(format!("no file named `{path}`").into()),
        }
    }
}

#[test]
fn text_that_is_not_utf8_is_located_in_its_own_file() {
    let lib: &[u8] = b"; lib\n.func f 0\n    const r0, \"caf\xe9\"\n    ret r0\n.end\n";
    let main: &[u8] = b".include \"lib.vasm\"\n.func main 0\n    ret r0\n.end\n";
    let e = assemble("main.vasm", &mut Bytes(vec![("main.vasm", main), ("lib.vasm", lib)])).unwrap_err();
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    let d = &e.diagnostics[0];
    assert_eq!((d.file.as_str(), d.line, d.col, d.len), ("lib.vasm", 3, 19, 3));
    assert_eq!(d.message, "invalid UTF-8: byte 0xE9");
    // The snippet is drawable: the file's text is kept, its bad byte replaced.
    let (_, text) = e.sources.iter().find(|(n, _)| n == "lib.vasm").unwrap();
    assert_eq!(&text[d.offset..d.offset + d.len], "\u{FFFD}");
    // The top-level file itself, with a two-byte sequence cut short.
    let e = assemble("bad.vasm", &mut Bytes(vec![("bad.vasm", b"\n\n  x\xc3")])).unwrap_err();
    assert_eq!((e.diagnostics[0].line, e.diagnostics[0].col), (3, 4));
}

#[test]
fn code_spans_skip_indentation_and_comments() {
    let text = ".func main 0\n    call r0, f, r0, 2   ; \"a;b\"\n  const r1, \"x;y\" ; c\n\n; only\n";
    let span = |line| code_span(text, line).map(|(a, b)| &text[a..b]);
    assert_eq!(span(1), Some(".func main 0"));
    assert_eq!(span(2), Some("call r0, f, r0, 2"));
    assert_eq!(span(3), Some("const r1, \"x;y\""));
    assert_eq!((span(4), span(5), span(9), span(0)), (None, None, None, Some(".func main 0")));
}
