//! Tests of the `.vbc` format: round trips, canonical encodings, and malformed input refused
//! with a clear error (never a panic), including the fuzz corpus replayed.

use super::*;
use crate::testgen::{canonical_module, expect_file, files_in, sample};
use proptest::prelude::*;

/// Builds a file from raw section bodies, for malformed-input tests.
fn file(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    for (id, body) in sections {
        put_section(&mut out, *id, body);
    }
    out
}

fn u32s(vals: &[u32]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A functions section holding `main/0` with one `ret r0`.
fn one_function() -> Vec<u8> {
    let mut b = u32s(&[1, 4]);
    b.extend_from_slice(b"main");
    b.extend_from_slice(&[0, 0, 1, 0]);
    b.extend_from_slice(&u32s(&[1]));
    b.extend_from_slice(&[Opcode::Ret.byte(), 0, 0]);
    b
}

fn no_consts() -> Vec<u8> {
    u32s(&[0])
}

fn err(bytes: &[u8]) -> String {
    match decode(bytes) {
        Ok(m) => panic!("decoded {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn sample_round_trips() {
    let m = sample();
    assert_eq!(crate::verify::verify(&m), Ok(()));
    let bytes = encode(&m);
    assert_eq!(&bytes[..8], b"\0vbc\x01\x00\x00\x00");
    let back = decode(&bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(encode(&back), bytes);
    assert_eq!(crate::load(&bytes).unwrap(), m);
    let no_debug = Module { debug: None, ..m };
    assert_eq!(decode(&encode(&no_debug)).unwrap(), no_debug);
}

#[test]
fn minimal_file_layout_is_as_documented() {
    let bytes = file(&[(section::CONSTANTS, no_consts()), (section::FUNCTIONS, one_function())]);
    let m = crate::load(&bytes).unwrap();
    assert_eq!(m.funcs[0].name, "main");
    assert_eq!(m.funcs[0].code, vec![Instr::Ret { a: 0 }]);
    assert_eq!(encode(&m), bytes);
}

#[test]
fn every_operand_width_is_little_endian() {
    let m = Module {
        consts: vec![],
        funcs: vec![Function {
            name: "f".into(),
            arity: 0,
            nregs: 0x0102,
            code: vec![Instr::Jlti { a: 0x0304, imm: -2, target: 0x05060708 }],
        }],
        debug: None,
    };
    let bytes = encode(&m);
    let code_at = bytes.len() - 11;
    assert_eq!(
        &bytes[code_at..],
        &[Opcode::Jlti.byte(), 0x04, 0x03, 0xfe, 0xff, 0xff, 0xff, 0x08, 0x07, 0x06, 0x05]
    );
    assert_eq!(decode(&bytes).unwrap(), m);
}

#[test]
fn bad_magic_and_versions() {
    assert_eq!(err(b"PK\x03\x04rest"), "malformed module: bad magic: not a .vbc file");
    assert_eq!(err(b""), "malformed module: truncated header at offset 0: the file has 0 bytes");
    assert_eq!(err(b"\0vb"), "malformed module: truncated header at offset 0: the file has 3 bytes");
    let mut bytes = encode(&sample());
    bytes[4] = 2;
    assert_eq!(err(&bytes), "malformed module: unsupported format version 2.0 (this VM reads 1.x)");
    bytes[4] = 1;
    bytes[6] = 7;
    assert_eq!(decode(&bytes).unwrap(), sample(), "any minor version of major 1 is read");
    assert_eq!(err(b"\0vbc\x01\x00"), "malformed module: truncated format version at offset 6");
}

#[test]
fn every_truncation_is_an_error_except_at_a_section_boundary() {
    let m = sample();
    let bytes = encode(&m);
    let without_debug = encode(&Module { debug: None, ..m.clone() });
    for n in 0..bytes.len() {
        match decode(&bytes[..n]) {
            // Dropping the optional last section whole leaves a valid file.
            Ok(back) => {
                assert_eq!(n, without_debug.len(), "prefix of {n} bytes decoded");
                assert_eq!(back.debug, None);
            }
            Err(LoadError::Malformed(msg)) => assert!(!msg.is_empty()),
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn truncation_messages_name_the_offset() {
    // A constants section that claims one constant but whose body ends after the tag.
    let bytes = file(&[(section::CONSTANTS, vec![1, 0, 0, 0, tag::INT, 1, 2])]);
    assert_eq!(err(&bytes), "malformed module: truncated int constant at offset 18");
    let bytes = file(&[(section::CONSTANTS, u32s(&[1]))]);
    assert_eq!(
        err(&bytes),
        "malformed module: constant count 1 at offset 13 is impossible: only 0 bytes follow in the section"
    );
    let mut bytes = file(&[(section::CONSTANTS, no_consts())]);
    bytes.truncate(bytes.len() - 1);
    assert_eq!(
        err(&bytes),
        "malformed module: truncated section at offset 8: its body is 4 bytes but only 3 remain"
    );
}

#[test]
fn bad_opcode_is_reported_with_its_position() {
    let mut body = one_function();
    let last = body.len() - 3;
    body[last] = 0xee;
    let bytes = file(&[(section::CONSTANTS, no_consts()), (section::FUNCTIONS, body)]);
    let msg = err(&bytes);
    assert!(msg.contains("unknown opcode 0xee at offset"), "{msg}");
    assert!(msg.contains("(function 0 `main`, instruction 0)"), "{msg}");
}

#[test]
fn section_rules() {
    let c = (section::CONSTANTS, no_consts());
    let f = (section::FUNCTIONS, one_function());
    let out_of_order = file(&[f.clone(), c.clone()]);
    assert_eq!(
        err(&out_of_order),
        "malformed module: constants section at offset 36 comes after the functions section \
             (sections must be in increasing id order)"
    );
    let dup = file(&[c.clone(), c.clone(), f.clone()]);
    assert_eq!(err(&dup), "malformed module: duplicate constants section at offset 17");
    assert_eq!(err(&file(std::slice::from_ref(&c))), "malformed module: missing functions section");
    assert_eq!(err(&file(std::slice::from_ref(&f))), "malformed module: missing constants section");
    let unknown = file(&[c.clone(), (4, vec![]), f.clone()]);
    assert_eq!(err(&unknown), "malformed module: unknown section id 4 at offset 17");
    let zero = file(&[c.clone(), f.clone(), (0, vec![])]);
    assert!(err(&zero).contains("unknown section id 0 at offset"));

    // Custom sections are skipped wherever they are.
    let plain = decode(&file(&[c.clone(), f.clone()])).unwrap();
    let custom =
        file(&[(0x80, b"tool data".to_vec()), c.clone(), (0xff, vec![1, 2, 3]), f.clone(), (0x9a, vec![])]);
    assert_eq!(decode(&custom).unwrap(), plain);
}

#[test]
fn trailing_bytes_are_errors() {
    let mut consts = no_consts();
    consts.push(0);
    let bytes = file(&[(section::CONSTANTS, consts), (section::FUNCTIONS, one_function())]);
    assert_eq!(err(&bytes), "malformed module: 1 trailing bytes at offset 17 inside the constants section");

    let mut bytes = encode(&sample());
    bytes.push(1);
    assert!(err(&bytes).contains("truncated section length at offset"), "{}", err(&bytes));
}

#[test]
fn bad_utf8_is_an_error() {
    let mut consts = u32s(&[1]);
    consts.push(tag::STR);
    consts.extend_from_slice(&u32s(&[3]));
    consts.extend_from_slice(b"a\xffb");
    let bytes = file(&[(section::CONSTANTS, consts), (section::FUNCTIONS, one_function())]);
    assert_eq!(
        err(&bytes),
        "malformed module: invalid UTF-8 in string constant at offset 23 (the string starts at offset 18)"
    );
    let mut funcs = one_function();
    funcs[8] = 0xc0; // first byte of the name "main"
    let bytes = file(&[(section::CONSTANTS, no_consts()), (section::FUNCTIONS, funcs)]);
    assert!(err(&bytes).contains("invalid UTF-8 in function name"));
}

fn nested_lists(depth: usize) -> Vec<u8> {
    let mut body = u32s(&[1]);
    for _ in 0..depth {
        body.push(tag::LIST);
        body.extend_from_slice(&u32s(&[1]));
    }
    body.push(tag::NIL);
    body
}

#[test]
fn depth_limit() {
    let ok =
        file(&[(section::CONSTANTS, nested_lists(MAX_CONST_DEPTH)), (section::FUNCTIONS, one_function())]);
    let m = decode(&ok).unwrap();
    assert_eq!(encode(&m), ok);
    let deep = file(&[
        (section::CONSTANTS, nested_lists(MAX_CONST_DEPTH + 1)),
        (section::FUNCTIONS, one_function()),
    ]);
    assert_eq!(err(&deep), "malformed module: constant at offset 337 nests containers more than 64 deep");
    // A bomb far deeper than the Rust stack could follow is refused just the same.
    let bomb = file(&[(section::CONSTANTS, nested_lists(1_000_000)), (section::FUNCTIONS, one_function())]);
    assert!(err(&bomb).contains("nests containers more than 64 deep"));
}

#[test]
fn hostile_counts_do_not_allocate() {
    for (what, body) in [
        ("constant count", u32s(&[u32::MAX])),
        ("list length", [u32s(&[1]), vec![tag::LIST], u32s(&[u32::MAX])].concat()),
        ("map size", [u32s(&[1]), vec![tag::MAP], u32s(&[u32::MAX / 2])].concat()),
    ] {
        let bytes = file(&[(section::CONSTANTS, body)]);
        assert!(err(&bytes).contains(&format!("{what} ")), "{what}: {}", err(&bytes));
    }
    let funcs = u32s(&[u32::MAX]);
    let bytes = file(&[(section::CONSTANTS, no_consts()), (section::FUNCTIONS, funcs)]);
    assert!(err(&bytes).contains("function count 4294967295 at offset 22 is impossible"));
    let mut funcs = one_function();
    let n = funcs.len();
    funcs[n - 7..n - 3].copy_from_slice(&u32::MAX.to_le_bytes());
    let bytes = file(&[(section::CONSTANTS, no_consts()), (section::FUNCTIONS, funcs)]);
    assert!(err(&bytes).contains("instruction count 4294967295"), "{}", err(&bytes));
    let debug = u32s(&[0, u32::MAX]);
    let bytes = file(&[(section::CONSTANTS, no_consts()), (section::FUNCTIONS, one_function()), (3, debug)]);
    assert!(err(&bytes).contains("debug function count 4294967295"));
}

#[test]
fn constant_errors() {
    let bytes = file(&[(section::CONSTANTS, [u32s(&[1]), vec![11]].concat())]);
    assert_eq!(err(&bytes), "malformed module: unknown constant tag 11 at offset 17");
    let mut body = u32s(&[1]);
    body.push(tag::MAP);
    body.extend_from_slice(&u32s(&[2]));
    body.extend_from_slice(&[tag::NIL, tag::TRUE, tag::NIL, tag::FALSE]);
    let bytes = file(&[(section::CONSTANTS, body)]);
    assert_eq!(err(&bytes), "malformed module: duplicate key at offset 24 in map constant");
}

#[test]
fn load_reports_verification_errors() {
    let mut m = sample();
    m.funcs[1].code[1] = Instr::Addi { dst: 9, a: 0, imm: -1 };
    let e = crate::load(&encode(&m)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "module failed verification: in function fib, instruction 1: register r9 out of range \
             (function has 4 registers)"
    );
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "has no encoding")]
fn encoding_a_runtime_value_is_a_caller_bug() {
    let m = Module { consts: vec![Value::Pid(crate::Pid(1))], ..sample() };
    encode(&m);
}

/// The valid modules the committed seed corpus of the `load` fuzz target is made from.
fn seed_modules() -> Vec<(&'static str, Module)> {
    let s = sample();
    vec![
        ("sample.vbc", s.clone()),
        ("sample_nodebug.vbc", Module { debug: None, ..s.clone() }),
        ("spin.vbc", Module { consts: vec![], funcs: vec![s.funcs[2].clone()], debug: None }),
    ]
}

#[test]
fn seed_corpus_is_up_to_date() {
    for (name, m) in seed_modules() {
        expect_file(&format!("fuzz/seeds/load/{name}"), &encode(&m), "seed_corpus");
    }
}

#[test]
fn replay_fuzz_seeds_and_regressions() {
    let seeds = files_in("seeds/load");
    assert!(seeds.len() >= 3, "the seed corpus is missing");
    for (path, bytes) in seeds {
        if let Err(e) = crate::load(&bytes) {
            panic!("seed {} does not load: {e}", path.display());
        }
    }
    // Reproducers of fixed crashes: any outcome but a panic is a pass.
    for (_, bytes) in files_in("regressions/load") {
        let _ = crate::load(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn canonical_modules_round_trip(m in canonical_module()) {
        prop_assert_eq!(crate::verify::verify(&m), Ok(()));
        prop_assert!(crate::disasm::is_canonical(&m), "{:?}", crate::disasm::canonical_problems(&m));
        let bytes = encode(&m);
        let back = decode(&bytes).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::load(&bytes);
        let mut with_header = MAGIC.to_vec();
        with_header.extend_from_slice(&[1, 0, 0, 0]);
        with_header.extend_from_slice(&bytes);
        let _ = crate::load(&with_header);
    }

    #[test]
    fn mutated_files_never_panic(
        m in canonical_module(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut bytes = encode(&m);
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes[i] ^= 1 << (byte % 8),
                2 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        let _ = crate::load(&bytes);
    }
}
