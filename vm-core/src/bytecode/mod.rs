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
use crate::module::{DebugInfo, FuncDebug, Function, MAX_CONST_DEPTH, Module};
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
        Value::Pid(_) | Value::Ref(_) | Value::Chan(_) | Value::Res(_) | Value::Fun(_) => {
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

#[cfg(test)]
mod tests;
