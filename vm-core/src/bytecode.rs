//! The `.vbc` binary module format: [`encode`] writes a [`Module`], [`decode`] reads one back.
//!
//! A `.vbc` file is what `vm asm` writes and what `vm run` loads without re-assembling. It is
//! decoded here and then verified (`crate::verify`); [`crate::load`] does both, and only a
//! verified module may run.
//!
//! # Layout
//!
//! All integers are little endian. All counts and lengths are `u32`. A *string* is a `u32` byte
//! length followed by that many bytes of UTF-8 (validated on decode).
//!
//! ```text
//! file      = magic version section*
//! magic     = 00 76 62 63                       ("\0vbc")
//! version   = major:u16 minor:u16               (this VM writes 1.0 and reads 1.x)
//! section   = id:u8 length:u32 body[length]
//! ```
//!
//! Section ids:
//!
//! | id | section | required |
//! |---|---|---|
//! | 1 | constants | yes |
//! | 2 | functions | yes |
//! | 3 | debug | no |
//! | `0x80..=0xff` | custom: skipped by this VM, free for tools | no |
//!
//! Known sections appear at most once each and in increasing id order; custom sections may appear
//! anywhere, any number of times. Any other id is an error, as is a body that is not consumed
//! exactly by its contents (trailing bytes inside a section), and so is anything after the last
//! section that is not itself a whole section.
//!
//! A newer *minor* version may only add things an older reader can skip (custom sections), so a
//! reader of 1.0 accepts 1.x; a different *major* version is refused with
//! `unsupported format version X.Y (this VM reads 1.x)`.
//!
//! ## Constants (id 1)
//!
//! ```text
//! constants = count:u32 constant[count]
//! constant  = tag:u8 payload
//! ```
//!
//! | tag | kind | payload |
//! |---|---|---|
//! | 0 | nil | none |
//! | 1 | false | none |
//! | 2 | true | none |
//! | 3 | int | `i64` |
//! | 4 | float | `u64`: the IEEE 754 bits, so every NaN payload and `-0.0` survive |
//! | 5 | atom | string (its name) |
//! | 6 | str | string |
//! | 7 | bytes | `u32` length, then the raw bytes |
//! | 8 | tuple | `u32` n, then n constants |
//! | 9 | list | `u32` n, then n constants |
//! | 10 | map | `u32` n, then n pairs of constants (key, value); [`encode`] writes keys in term order and a key may not repeat |
//!
//! Tuples, lists and maps nest at most [`MAX_CONST_DEPTH`] (64) containers deep, so that a hostile
//! file cannot make the recursive decoder overflow the Rust stack.
//!
//! Only literal kinds exist in the pool: pids, channels, resources and function values are made at
//! run time and have no encoding. The assembler never pools them and the verifier rejects a module
//! that contains one; should [`encode`] be handed one anyway it writes `nil` in its place (and
//! fails a `debug_assert!`), because an encoder that cannot fail keeps every caller simple.
//!
//! ## Functions (id 2)
//!
//! ```text
//! functions   = count:u32 function[count]
//! function    = name:string arity:u16 nregs:u16 ninstr:u32 instruction[ninstr]
//! instruction = opcode:u8 operand*
//! ```
//!
//! The opcode byte is [`Opcode::byte`], the position of the instruction in the op list
//! (`crate::ops::for_each_op!`). Its operands follow in op-list order, each
//! [`OperandKind::width`] bytes wide: registers (`Dst`, `Reg`) and `Count` are `u16`; `Const`,
//! `Label` and `Func` indices are `u32`; `Imm` is `i32`. The decoder builds instructions with
//! [`Instr::from_operands`], so the op list is the only instruction table there is.
//!
//! Because an opcode is a position in the op list, the list's order is part of the format:
//! inserting or removing an op renumbers the ones after it, and `.vbc` files written before the
//! change decode as different instructions (or fail to verify). While no `.vbc` files are kept
//! across builds that is harmless; once they are, new ops go at the end of the list, and any
//! other change bumps [`VERSION_MAJOR`].
//!
//! ## Debug (id 3)
//!
//! ```text
//! debug     = nfiles:u32 string[nfiles] nfuncs:u32 funcdebug[nfuncs]
//! funcdebug = file:u32 nlines:u32 line:u32[nlines]
//! ```
//!
//! `nfuncs` must equal the number of functions, `file` must index `files`, and `nlines` must be 0
//! or the function's instruction count. These cross-references are checked by the verifier, not
//! by [`decode`]: a module built in memory (by the assembler, or by a test) is then held to exactly
//! the same rules as one read from a file.
//!
//! # Hostile input
//!
//! [`decode`] never panics, and never allocates more than a small multiple of its input: every
//! count is checked against the bytes that remain before anything is reserved for it. Each error
//! names what was wrong and the byte offset where it was found, e.g.
//! `truncated constant at offset 37` or `bad magic: not a .vbc file`.

use crate::atom::Atom;
use crate::module::{DebugInfo, FuncDebug, Function, Module};
use crate::ops::{Instr, Opcode, OperandKind};
use crate::value::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The four bytes every `.vbc` file starts with.
pub const MAGIC: [u8; 4] = *b"\0vbc";
/// The major format version this VM reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// The minor format version this VM writes (it reads any minor version of its major).
pub const VERSION_MINOR: u16 = 0;
/// How many tuples, lists and maps may nest inside each other in one constant.
pub const MAX_CONST_DEPTH: usize = 64;

/// Section ids.
pub mod section {
    /// The constant pool.
    pub const CONSTANTS: u8 = 1;
    /// The functions.
    pub const FUNCTIONS: u8 = 2;
    /// Source positions.
    pub const DEBUG: u8 = 3;
    /// Ids with this bit set are custom sections, which readers skip.
    pub const CUSTOM: u8 = 0x80;

    /// A known section's name, for messages.
    pub fn name(id: u8) -> &'static str {
        match id {
            CONSTANTS => "constants",
            FUNCTIONS => "functions",
            DEBUG => "debug",
            _ => "unknown",
        }
    }
}

/// Constant tags. vm-dist's network envelope writes values with the same tags, and adds its own
/// (pids, functions) after the last of these.
pub mod tag {
    /// `nil`.
    pub const NIL: u8 = 0;
    /// `false`.
    pub const FALSE: u8 = 1;
    /// `true`.
    pub const TRUE: u8 = 2;
    /// An `i64`.
    pub const INT: u8 = 3;
    /// An `f64`.
    pub const FLOAT: u8 = 4;
    /// An atom, by name.
    pub const ATOM: u8 = 5;
    /// A UTF-8 string.
    pub const STR: u8 = 6;
    /// A byte string.
    pub const BYTES: u8 = 7;
    /// A tuple: a count, then the items.
    pub const TUPLE: u8 = 8;
    /// A list: a count, then the items.
    pub const LIST: u8 = 9;
    /// A map: a count, then key and value pairs.
    pub const MAP: u8 = 10;
}

/// Why bytes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a well-formed module; the message names what and the byte offset.
    #[error("malformed module: {0}")]
    Malformed(String),
    /// The module is well-formed but failed verification.
    #[error("module failed verification: {}", join_errors(.0))]
    Verify(Vec<crate::verify::VerifyError>),
}

fn join_errors(errors: &[crate::verify::VerifyError]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

fn malformed(message: String) -> LoadError {
    LoadError::Malformed(message)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Serialises a module in the current format version (see the module docs for the layout).
///
/// # Panics
///
/// Only if a count or length does not fit in `u32` (a string of 4 GiB, say), which no module the
/// assembler or decoder can produce comes near.
pub fn encode(module: &Module) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION_MAJOR.to_le_bytes());
    out.extend_from_slice(&VERSION_MINOR.to_le_bytes());

    let mut body = Vec::new();
    put_len(&mut body, module.consts.len());
    for c in &module.consts {
        put_const(&mut body, c);
    }
    put_section(&mut out, section::CONSTANTS, &body);

    body.clear();
    put_len(&mut body, module.funcs.len());
    for f in &module.funcs {
        put_str(&mut body, &f.name);
        body.extend_from_slice(&f.arity.to_le_bytes());
        body.extend_from_slice(&f.nregs.to_le_bytes());
        put_len(&mut body, f.code.len());
        for instr in &f.code {
            put_instr(&mut body, instr);
        }
    }
    put_section(&mut out, section::FUNCTIONS, &body);

    if let Some(debug) = &module.debug {
        body.clear();
        put_len(&mut body, debug.files.len());
        for file in &debug.files {
            put_str(&mut body, file);
        }
        put_len(&mut body, debug.funcs.len());
        for fd in &debug.funcs {
            body.extend_from_slice(&fd.file.to_le_bytes());
            put_len(&mut body, fd.lines.len());
            for line in &fd.lines {
                body.extend_from_slice(&line.to_le_bytes());
            }
        }
        put_section(&mut out, section::DEBUG, &body);
    }
    out
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("a count or length in a module exceeds u32::MAX");
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    put_len(out, body.len());
    out.extend_from_slice(body);
}

fn put_instr(out: &mut Vec<u8>, instr: &Instr) {
    let op = instr.opcode();
    out.push(op.byte());
    for (&v, &kind) in instr.operands().as_slice().iter().zip(op.operands()) {
        // The casts cannot lose information: each field of `Instr` has exactly the range of its
        // kind (see `OperandKind::range`), and `operands` only widened it to i64.
        match kind {
            OperandKind::Dst | OperandKind::Reg | OperandKind::Count => {
                out.extend_from_slice(&(v as u16).to_le_bytes())
            }
            OperandKind::Imm => out.extend_from_slice(&(v as i32).to_le_bytes()),
            OperandKind::Const | OperandKind::Label | OperandKind::Func => {
                out.extend_from_slice(&(v as u32).to_le_bytes())
            }
        }
    }
}

fn put_const(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Nil => out.push(tag::NIL),
        Value::Bool(false) => out.push(tag::FALSE),
        Value::Bool(true) => out.push(tag::TRUE),
        Value::Int(i) => {
            out.push(tag::INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(x) => {
            out.push(tag::FLOAT);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::Atom(a) => {
            out.push(tag::ATOM);
            put_str(out, &a.name());
        }
        Value::Str(s) => {
            out.push(tag::STR);
            put_str(out, s);
        }
        Value::Bytes(b) => {
            out.push(tag::BYTES);
            put_len(out, b.len());
            out.extend_from_slice(b);
        }
        Value::Tuple(items) | Value::List(items) => {
            out.push(if matches!(v, Value::Tuple(_)) { tag::TUPLE } else { tag::LIST });
            put_len(out, items.len());
            for item in items.iter() {
                put_const(out, item);
            }
        }
        Value::Map(m) => {
            out.push(tag::MAP);
            put_len(out, m.len());
            for (k, v) in m.iter() {
                put_const(out, k);
                put_const(out, v);
            }
        }
        Value::Pid(_) | Value::Chan(_) | Value::Res(_) | Value::Fun(_) => {
            // Run-time values have no encoding (see the module docs): the assembler never pools
            // them and the verifier rejects them, so reaching this is a bug in the caller.
            debug_assert!(false, "constant {v:?} has no encoding in the .vbc format");
            out.push(tag::NIL);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A cursor over part of the input that reports errors with absolute file offsets.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The file offset of `bytes[0]`.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Reader<'a> {
        Reader { bytes, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], LoadError> {
        if self.remaining() < n {
            return Err(malformed(format!("truncated {what} at offset {}", self.offset())));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LoadError> {
        let s = self.take(N, what)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, LoadError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, LoadError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, LoadError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a `u32` count of items that take at least `min_size` bytes each, and refuses it if
    /// the rest of the input could not hold that many. This is what makes it safe to reserve
    /// memory for the items: a count is never trusted beyond what the bytes can back.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize, LoadError> {
        let at = self.offset();
        let n = self.u32(what)? as usize;
        let left = self.remaining();
        if n.saturating_mul(min_size) > left {
            return Err(malformed(format!(
                "{what} {n} at offset {at} is impossible: only {left} bytes follow in the section"
            )));
        }
        Ok(n)
    }

    /// Reads a `u32` length and that many bytes.
    fn blob(&mut self, what: &str) -> Result<&'a [u8], LoadError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    fn string(&mut self, what: &str) -> Result<String, LoadError> {
        let at = self.offset();
        let raw = self.blob(what)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(malformed(format!(
                "invalid UTF-8 in {what} at offset {} (the string starts at offset {at})",
                at + 4 + e.valid_up_to()
            ))),
        }
    }
}

/// Parses a module without verifying it (see [`crate::load`] for both).
///
/// Never panics; every error names the problem and its byte offset.
pub fn decode(bytes: &[u8]) -> Result<Module, LoadError> {
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
        return Err(malformed(format!("truncated header at offset 0: the file has {} bytes", bytes.len())));
    }
    if !bytes.starts_with(&MAGIC) {
        return Err(malformed("bad magic: not a .vbc file".into()));
    }
    let mut r = Reader::new(bytes, 0);
    r.take(MAGIC.len(), "magic")?;
    let major = r.u16("format version")?;
    let minor = r.u16("format version")?;
    if major != VERSION_MAJOR {
        return Err(malformed(format!(
            "unsupported format version {major}.{minor} (this VM reads {VERSION_MAJOR}.x)"
        )));
    }

    let mut consts = None;
    let mut funcs = None;
    let mut debug = None;
    let mut last_known = 0u8;
    while !r.at_end() {
        let at = r.offset();
        let id = r.u8("section id")?;
        let len = r.u32("section length")? as usize;
        let body_at = r.offset();
        if len > r.remaining() {
            return Err(malformed(format!(
                "truncated section at offset {at}: its body is {len} bytes but only {} remain",
                r.remaining()
            )));
        }
        let body = r.take(len, "section body")?;
        if id & section::CUSTOM != 0 {
            continue;
        }
        let name = section::name(id);
        if !matches!(id, section::CONSTANTS | section::FUNCTIONS | section::DEBUG) {
            return Err(malformed(format!("unknown section id {id} at offset {at}")));
        }
        if id == last_known {
            return Err(malformed(format!("duplicate {name} section at offset {at}")));
        }
        if id < last_known {
            return Err(malformed(format!(
                "{name} section at offset {at} comes after the {} section (sections must be in \
                 increasing id order)",
                section::name(last_known)
            )));
        }
        last_known = id;
        let mut s = Reader::new(body, body_at);
        match id {
            section::CONSTANTS => consts = Some(read_consts(&mut s)?),
            section::FUNCTIONS => funcs = Some(read_funcs(&mut s)?),
            _ => debug = Some(read_debug(&mut s)?),
        }
        if !s.at_end() {
            return Err(malformed(format!(
                "{} trailing bytes at offset {} inside the {name} section",
                s.remaining(),
                s.offset()
            )));
        }
    }
    let consts = consts.ok_or_else(|| malformed("missing constants section".into()))?;
    let funcs = funcs.ok_or_else(|| malformed("missing functions section".into()))?;
    Ok(Module { consts, funcs, debug })
}

fn read_consts(r: &mut Reader<'_>) -> Result<Vec<Value>, LoadError> {
    let n = r.count("constant count", 1)?;
    let mut consts = Vec::with_capacity(n);
    for _ in 0..n {
        consts.push(read_const(r, 0)?);
    }
    Ok(consts)
}

/// Reads one constant that sits inside `depth` containers.
fn read_const(r: &mut Reader<'_>, depth: usize) -> Result<Value, LoadError> {
    let at = r.offset();
    let t = r.u8("constant")?;
    Ok(match t {
        tag::NIL => Value::Nil,
        tag::FALSE => Value::Bool(false),
        tag::TRUE => Value::Bool(true),
        tag::INT => Value::Int(r.u64("int constant")? as i64),
        tag::FLOAT => Value::Float(f64::from_bits(r.u64("float constant")?)),
        tag::ATOM => Value::Atom(Atom::new(&r.string("atom constant")?)),
        tag::STR => Value::str(r.string("string constant")?),
        tag::BYTES => Value::bytes(r.blob("bytes constant")?.to_vec()),
        tag::TUPLE | tag::LIST | tag::MAP => {
            if depth >= MAX_CONST_DEPTH {
                return Err(malformed(format!(
                    "constant at offset {at} nests containers more than {MAX_CONST_DEPTH} deep"
                )));
            }
            if t == tag::MAP {
                let n = r.count("map size", 2)?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let key_at = r.offset();
                    let k = read_const(r, depth + 1)?;
                    let v = read_const(r, depth + 1)?;
                    if m.insert(k, v).is_some() {
                        return Err(malformed(format!("duplicate key at offset {key_at} in map constant")));
                    }
                }
                Value::Map(Arc::new(m))
            } else {
                let n = r.count(if t == tag::TUPLE { "tuple size" } else { "list length" }, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(read_const(r, depth + 1)?);
                }
                if t == tag::TUPLE { Value::tuple(items) } else { Value::list(items) }
            }
        }
        _ => return Err(malformed(format!("unknown constant tag {t} at offset {at}"))),
    })
}

/// The fewest bytes one encoded function can take: an empty name, arity, nregs, no code.
const MIN_FUNCTION_SIZE: usize = 4 + 2 + 2 + 4;

fn read_funcs(r: &mut Reader<'_>) -> Result<Vec<Function>, LoadError> {
    let n = r.count("function count", MIN_FUNCTION_SIZE)?;
    let mut funcs = Vec::with_capacity(n);
    for index in 0..n {
        let name = r.string("function name")?;
        let arity = r.u16("function arity")?;
        let nregs = r.u16("function register count")?;
        let ninstr = r.count("instruction count", 1)?;
        let mut code = Vec::with_capacity(ninstr);
        for pc in 0..ninstr {
            code.push(read_instr(r, index, &name, pc)?);
        }
        funcs.push(Function { name, arity, nregs, code });
    }
    Ok(funcs)
}

fn read_instr(r: &mut Reader<'_>, func: usize, name: &str, pc: usize) -> Result<Instr, LoadError> {
    let at = r.offset();
    let whence = || format!("(function {func} `{name}`, instruction {pc})");
    let byte = r.u8("instruction")?;
    let op = Opcode::from_byte(byte)
        .ok_or_else(|| malformed(format!("unknown opcode 0x{byte:02x} at offset {at} {}", whence())))?;
    let kinds = op.operands();
    let mut vals = [0i64; 4];
    for (slot, &kind) in vals.iter_mut().zip(kinds) {
        *slot = match kind {
            OperandKind::Dst | OperandKind::Reg | OperandKind::Count => i64::from(r.u16("operand")?),
            OperandKind::Imm => i64::from(r.u32("operand")? as i32),
            OperandKind::Const | OperandKind::Label | OperandKind::Func => i64::from(r.u32("operand")?),
        };
    }
    // `from_operands` checks the count and ranges again; the widths above already guarantee
    // them, so an error here would mean the op list grew an instruction with five operands.
    Instr::from_operands(op, &vals[..kinds.len().min(vals.len())]).map_err(|e| {
        malformed(format!("bad operands for `{}` at offset {at} {}: {e}", op.mnemonic(), whence()))
    })
}

fn read_debug(r: &mut Reader<'_>) -> Result<DebugInfo, LoadError> {
    let nfiles = r.count("debug file count", 4)?;
    let mut files = Vec::with_capacity(nfiles);
    for _ in 0..nfiles {
        files.push(r.string("debug file name")?);
    }
    let nfuncs = r.count("debug function count", 8)?;
    let mut funcs = Vec::with_capacity(nfuncs);
    for _ in 0..nfuncs {
        let file = r.u32("debug file index")?;
        let nlines = r.count("debug line count", 4)?;
        let mut lines = Vec::with_capacity(nlines);
        for _ in 0..nlines {
            lines.push(r.u32("debug line")?);
        }
        funcs.push(FuncDebug { file, lines });
    }
    Ok(DebugInfo { files, funcs })
}

/// Modules for tests: a hand-built sample and proptest strategies for random *canonical* modules
/// (valid, constants pooled in order of first use, debug files in order of first function), used
/// by the tests of this module, the verifier and the disassembler.
#[cfg(test)]
pub(crate) mod testgen {
    use crate::module::{DebugInfo, FuncDebug, Function, Module};
    use crate::ops::{Instr, Opcode, OperandKind};
    use crate::value::Value;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// `fuzz/<sub>` in the repository.
    pub fn fuzz_dir(sub: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(sub)
    }

    /// Checks that the generated file `rel` (relative to the repository root) holds `want`.
    /// With `UPDATE_EXPECT=1`, the workspace's one switch for regenerating expected files (see
    /// vm-sched's `testing` module), it writes the file first. `test` names the test to run.
    pub fn expect_file(rel: &str, want: &[u8], test: &str) {
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
    pub fn files_in(sub: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
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
    pub fn sample() -> Module {
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
    pub fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-3i64..3).prop_map(Value::Int),
            any::<f64>().prop_map(|x| Value::Float(if x.is_nan() { f64::NAN } else { x })),
            prop_oneof!["[a-z_][a-zA-Z0-9_]{0,6}", "\\PC{0,6}", any::<String>()]
                .prop_map(|s| Value::atom(&s)),
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
    pub fn canonical_module() -> impl Strategy<Value = Module> {
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
                            let room =
                                if count == 0 { i64::from(nregs) } else { i64::from(nregs) - count + 1 };
                            vals[j + 1] = count;
                            r % room
                        }
                        OperandKind::Reg => r % i64::from(nregs),
                        OperandKind::Count => vals[j],
                        OperandKind::Const => {
                            let c = &candidates[raw[j] as usize % candidates.len()];
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
}

#[cfg(test)]
mod tests {
    use super::testgen::{canonical_module, expect_file, files_in, sample};
    use super::*;
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
        let custom = file(&[
            (0x80, b"tool data".to_vec()),
            c.clone(),
            (0xff, vec![1, 2, 3]),
            f.clone(),
            (0x9a, vec![]),
        ]);
        assert_eq!(decode(&custom).unwrap(), plain);
    }

    #[test]
    fn trailing_bytes_are_errors() {
        let mut consts = no_consts();
        consts.push(0);
        let bytes = file(&[(section::CONSTANTS, consts), (section::FUNCTIONS, one_function())]);
        assert_eq!(
            err(&bytes),
            "malformed module: 1 trailing bytes at offset 17 inside the constants section"
        );

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
        let ok = file(&[
            (section::CONSTANTS, nested_lists(MAX_CONST_DEPTH)),
            (section::FUNCTIONS, one_function()),
        ]);
        let m = decode(&ok).unwrap();
        assert_eq!(encode(&m), ok);
        let deep = file(&[
            (section::CONSTANTS, nested_lists(MAX_CONST_DEPTH + 1)),
            (section::FUNCTIONS, one_function()),
        ]);
        assert_eq!(err(&deep), "malformed module: constant at offset 337 nests containers more than 64 deep");
        // A bomb far deeper than the Rust stack could follow is refused just the same.
        let bomb =
            file(&[(section::CONSTANTS, nested_lists(1_000_000)), (section::FUNCTIONS, one_function())]);
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
        let bytes =
            file(&[(section::CONSTANTS, no_consts()), (section::FUNCTIONS, one_function()), (3, debug)]);
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
}
