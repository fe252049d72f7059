//! The assembler proper: reads files line by line, builds functions, resolves names, and
//! collects diagnostics.
//!
//! Each line is handled on its own: a label, then a directive or an instruction, then an optional
//! comment. An error ends the handling of its line only, so one run reports every mistake in every
//! file. Labels are resolved when their function ends; function names once every file has been
//! read. To avoid cascades of follow-on errors, a line with a bad instruction still occupies its
//! instruction slot (so later label positions stay right), and a `.func` with a bad header still
//! opens a function (so its body is not reported as "outside a function").

mod instr;

use super::lex::{self, Cursor, PResult, SpanError, is_ident_char};
use super::{AsmErrors, Diagnostic, LoadError, SourceLoader, literal, nearest};
use crate::module::{DebugInfo, FuncDebug, Function, Module};
use crate::ops::{Instr, Opcode, OperandKind};
use crate::value::Value;
use std::collections::HashMap;

/// Directive names, for "did you mean" hints.
const DIRECTIVES: &[&str] = &["func", "end", "include", "const", "file", "line", "nodebug"];

/// How deeply `.include`s may nest (a guard against runaway recursion, not a design limit).
const MAX_INCLUDE_DEPTH: usize = 64;

/// The highest register number: a frame holds at most `u16::MAX` registers, `r0 .. r65534`.
const MAX_REG: i64 = u16::MAX as i64 - 1;

/// One loaded file.
struct Source {
    name: String,
    text: String,
    /// Byte offset of the start of each line, for turning offsets into line and column.
    line_starts: Vec<usize>,
}

impl Source {
    fn new(name: String, text: String) -> Source {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source { name, text, line_starts }
    }

    /// Line and column (both from 1; the column in characters) of byte offset `at`.
    fn position(&self, at: usize) -> (u32, u32) {
        let at = at.min(self.text.len());
        let line = match self.line_starts.binary_search(&at) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self.text.get(start..at).map_or(at - start, |s| s.chars().count()) + 1;
        (to_u32(line + 1), to_u32(col))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An instruction whose label and function operands may still be placeholders.
struct Pending {
    op: Opcode,
    vals: Vec<i64>,
    /// Span of the instruction text, for diagnostics about the whole instruction.
    at: usize,
    len: usize,
    /// Stands in for a line that failed to parse; only exists when there are diagnostics.
    bad: bool,
}

/// Scratch register slots of operand lists are written as `SCRATCH + k` until `.end` places them
/// above every register the function names itself (so a list never overwrites one of them).
const SCRATCH: i64 = -(1 << 40);

/// A use of a label or function name, patched once the name's index is known.
struct NameRef {
    instr: usize,
    operand: usize,
    name: String,
    at: usize,
    len: usize,
}

/// The function being assembled.
struct FuncBuild {
    name: String,
    src: usize,
    /// Span of the function's name (or of `.func` if the name is missing).
    at: usize,
    len: usize,
    arity: u16,
    regs: Option<u16>,
    code: Vec<Pending>,
    lines: Vec<u32>,
    /// Label name → (instruction index, span of its definition).
    labels: HashMap<String, (u32, usize, usize)>,
    label_refs: Vec<NameRef>,
    func_refs: Vec<NameRef>,
    /// The highest register the function uses (windows included, scratch registers not).
    max_reg: Option<i64>,
    /// How many scratch registers its operand lists need (see [`SCRATCH`]).
    scratch: i64,
    line_override: Option<u32>,
    debug_file: String,
}

/// A function whose labels are resolved; its function operands may still be placeholders.
struct FuncDone {
    name: String,
    src: usize,
    arity: u16,
    nregs: u16,
    code: Vec<Pending>,
    debug_file: u32,
    lines: Vec<u32>,
}

/// A `.const` definition.
struct NamedConst {
    value: Value,
    src: usize,
    at: usize,
}

/// Per-file parsing state.
struct FileState {
    src: usize,
    file_override: Option<String>,
    cur: Option<FuncBuild>,
    /// Set after reporting an instruction outside a function, so that a missing `.func` gives
    /// one error instead of one per line.
    outside_reported: bool,
}

struct Asm<'l> {
    loader: &'l mut dyn SourceLoader,
    sources: Vec<Source>,
    include_stack: Vec<usize>,
    /// Diagnostics with the index of their source, for sorting.
    diags: Vec<(usize, Diagnostic)>,
    consts: Vec<Value>,
    const_index: HashMap<Value, u32>,
    /// Visible `.const` names: one scope per file on the include stack.
    scopes: Vec<HashMap<String, NamedConst>>,
    funcs: Vec<FuncDone>,
    /// Function name → (index, source, span of its name).
    func_names: HashMap<String, (usize, usize, usize)>,
    /// Function-name uses: (index of the using function, its source, the use).
    func_refs: Vec<(usize, usize, NameRef)>,
    debug_files: Vec<String>,
    nodebug: bool,
}

pub(super) fn assemble(name: &str, loader: &mut dyn SourceLoader) -> Result<Module, AsmErrors> {
    let mut asm = Asm {
        loader,
        sources: Vec::new(),
        include_stack: Vec::new(),
        diags: Vec::new(),
        consts: Vec::new(),
        const_index: HashMap::new(),
        scopes: vec![HashMap::new()],
        funcs: Vec::new(),
        func_names: HashMap::new(),
        func_refs: Vec::new(),
        debug_files: Vec::new(),
        nodebug: false,
    };
    match asm.loader.load(name, None) {
        Ok((name, text)) => {
            asm.sources.push(Source::new(name, text));
            asm.include_stack.push(0);
            asm.assemble_file(0);
        }
        Err(LoadError::Unreadable(msg)) => {
            // Record the file with empty text so that every diagnostic names a known source.
            asm.sources.push(Source::new(name.to_string(), String::new()));
            asm.error(0, SpanError::new(0, 0, format!("cannot read `{name}`: {msg}")));
        }
        Err(e @ LoadError::NotUtf8 { .. }) => asm.not_utf8(e),
    }
    asm.into_module()
}

impl Asm<'_> {
    fn error(&mut self, src: usize, e: SpanError) {
        let source = &self.sources[src];
        let (line, col) = source.position(e.at);
        let d = Diagnostic {
            file: source.name.clone(),
            line,
            col,
            offset: e.at,
            len: e.len,
            message: e.message,
            hint: e.hint,
        };
        self.diags.push((src, d));
    }

    fn line_of(&self, src: usize, at: usize) -> String {
        let (line, _) = self.sources[src].position(at);
        if src == self.include_stack.last().copied().unwrap_or(0) {
            format!("line {line}")
        } else {
            format!("{}:{line}", self.sources[src].name)
        }
    }

    fn assemble_file(&mut self, src: usize) {
        let text = self.sources[src].text.clone();
        let mut st = FileState { src, file_override: None, cur: None, outside_reported: false };
        let mut start = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let end = start + lex::code_len(line);
            if let Err(e) = self.line(&mut st, &text, start, end, to_u32(i + 1)) {
                self.error(src, e);
            }
            start += raw.len() + 1;
        }
        if let Some(f) = st.cur.take() {
            self.missing_end(&f);
            self.finish(f, None);
        }
    }

    fn missing_end(&mut self, f: &FuncBuild) {
        let e = SpanError::new(f.at, f.len, format!("function `{}` has no `.end`", f.name))
            .with_hint("end every function with `.end` after its last instruction");
        self.error(f.src, e);
    }

    /// Handles the code part `text[start..end]` of one line.
    fn line(
        &mut self,
        st: &mut FileState,
        text: &str,
        start: usize,
        end: usize,
        line_no: u32,
    ) -> PResult<()> {
        let mut c = Cursor::new(text, start, end);
        c.skip_ws();
        if c.at_end() {
            return Ok(());
        }
        let label_at = c.pos;
        let mut labelled = false;
        if let Some(name) = c.ident() {
            if c.eat(':') {
                labelled = true;
                self.define_label(st, name, label_at)?;
                c.skip_ws();
                if c.at_end() {
                    return Ok(());
                }
            } else {
                c.pos = label_at;
            }
        }
        if c.peek() == Some('.') {
            if labelled {
                return Err(SpanError::new(
                    c.pos,
                    c.token_len(),
                    "a label cannot be followed by a directive",
                )
                .with_hint("put the directive on its own line"));
            }
            return self.directive(st, &mut c);
        }
        if !c.peek().is_some_and(lex::is_ident_start) {
            return Err(c.expected("an instruction, a directive or a label"));
        }
        let Some(f) = st.cur.as_mut() else {
            if st.outside_reported {
                return Ok(());
            }
            st.outside_reported = true;
            return Err(SpanError::new(c.pos, c.token_len(), "instruction outside a function")
                .with_hint("put instructions between `.func NAME ARITY` and `.end`"));
        };
        let result = self.instruction(f, &mut c);
        let line = f.line_override.unwrap_or(line_no);
        match result {
            Ok(ps) => {
                for p in ps {
                    f.code.push(p);
                    f.lines.push(line);
                }
                Ok(())
            }
            Err(e) => {
                f.code.push(Pending { op: Opcode::Nop, vals: Vec::new(), at: e.at, len: e.len, bad: true });
                f.lines.push(line);
                Err(e)
            }
        }
    }

    fn define_label(&mut self, st: &mut FileState, name: &str, at: usize) -> PResult<()> {
        let Some(f) = st.cur.as_mut() else {
            return Err(SpanError::new(at, name.len(), format!("label `{name}` outside a function"))
                .with_hint("labels mark instructions inside `.func` ... `.end`"));
        };
        if let Some(&(_, prev, _)) = f.labels.get(name) {
            // Reported without abandoning the line: the instruction after it is still checked.
            let e = SpanError::new(at, name.len(), format!("duplicate label `{name}`"))
                .with_hint(format!("it is first defined on {}", self.line_of(st.src, prev)));
            self.error(st.src, e);
        } else {
            f.labels.insert(name.to_string(), (to_u32(f.code.len()), at, name.len()));
        }
        Ok(())
    }

    // ---- directives

    fn directive(&mut self, st: &mut FileState, c: &mut Cursor) -> PResult<()> {
        let at = c.pos;
        c.bump();
        let name = c.take_while(is_ident_char);
        let len = c.pos - at;
        match name {
            "func" => self.func_directive(st, c, at, len),
            "end" => {
                let Some(f) = st.cur.take() else {
                    return Err(SpanError::new(at, len, "`.end` without a `.func`"));
                };
                self.finish(f, Some((at, len)));
                c.expect_end("`.end`")
            }
            "include" => {
                let (path, path_at, path_len) = quoted(c, "a quoted path")?;
                c.expect_end("the path")?;
                if st.cur.is_some() {
                    return Err(SpanError::new(at, len, "`.include` inside a function")
                        .with_hint("put `.include` between functions"));
                }
                self.include(st.src, &path, path_at, path_len)
            }
            "const" => self.const_directive(st, c),
            "file" => {
                let (file, ..) = quoted(c, "a quoted file name")?;
                c.expect_end("the file name")?;
                if st.cur.is_some() {
                    return Err(SpanError::new(at, len, "`.file` inside a function")
                        .with_hint("`.file` applies to the functions after it; put it before `.func`"));
                }
                st.file_override = Some(file);
                Ok(())
            }
            "line" => {
                c.skip_ws();
                let n_at = c.pos;
                let n = decimal(c, "a line number")?;
                let n = u32::try_from(n)
                    .map_err(|_| SpanError::new(n_at, c.pos - n_at, "line number out of range"))?;
                c.expect_end("the line number")?;
                let Some(f) = st.cur.as_mut() else {
                    return Err(SpanError::new(at, len, "`.line` outside a function")
                        .with_hint("`.line` applies to the instructions after it, inside a function"));
                };
                f.line_override = Some(n);
                Ok(())
            }
            "nodebug" => {
                c.expect_end("`.nodebug`")?;
                if st.src != 0 {
                    Err(SpanError::new(at, len, "`.nodebug` is only allowed in the main file"))
                } else if st.cur.is_some() {
                    Err(SpanError::new(at, len, "`.nodebug` inside a function"))
                } else {
                    self.nodebug = true;
                    Ok(())
                }
            }
            _ => {
                let e = SpanError::new(at, len, format!("unknown directive `.{name}`"));
                Err(match nearest(name, DIRECTIVES.iter().copied()) {
                    Some(near) => e.with_hint(format!("did you mean `.{near}`?")),
                    None => e.with_hint("the directives are .func .end .include .const .file .line .nodebug"),
                })
            }
        }
    }

    fn func_directive(&mut self, st: &mut FileState, c: &mut Cursor, at: usize, len: usize) -> PResult<()> {
        if let Some(open) = st.cur.take() {
            self.missing_end(&open);
            self.finish(open, None);
        }
        st.outside_reported = false;
        let debug_file = st.file_override.clone().unwrap_or_else(|| self.sources[st.src].name.clone());
        let mut f = FuncBuild {
            name: String::new(),
            src: st.src,
            at,
            len,
            arity: 0,
            regs: None,
            code: Vec::new(),
            lines: Vec::new(),
            labels: HashMap::new(),
            label_refs: Vec::new(),
            func_refs: Vec::new(),
            max_reg: None,
            scratch: 0,
            line_override: None,
            debug_file,
        };
        // A function is opened even when its header is bad, so that its body is still checked.
        let header = func_header(c);
        if let Ok((name, name_at, arity, regs)) = &header {
            (f.name, f.at, f.len, f.arity, f.regs) = (name.clone(), *name_at, name.len(), *arity, *regs);
            if let Some(&(_, prev_src, prev_at)) = self.func_names.get(name) {
                let e = SpanError::new(f.at, f.len, format!("duplicate function `{name}`"))
                    .with_hint(format!("it is first defined at {}", self.line_of(prev_src, prev_at)));
                self.error(st.src, e);
            } else {
                self.func_names.insert(name.clone(), (self.funcs.len(), st.src, f.at));
            }
        }
        st.cur = Some(f);
        header.map(|_| ())
    }

    fn const_directive(&mut self, st: &FileState, c: &mut Cursor) -> PResult<()> {
        c.skip_ws();
        let at = c.pos;
        let Some(name) = c.ident() else {
            let e = c.expected("a constant name");
            return Err(if c.peek() == Some('$') {
                e.with_hint("name it without `$`: `.const NAME VALUE`")
            } else {
                e
            });
        };
        if !c.peek().is_some_and(char::is_whitespace) {
            return Err(c.expected("a space and a value after the name"));
        }
        c.skip_ws();
        let value = self.constant(c)?;
        c.expect_end("the value")?;
        if let Some(prev) = self.lookup(name) {
            return Err(SpanError::new(at, name.len(), format!("constant `{name}` is already defined"))
                .with_hint(format!("it is first defined at {}", self.line_of(prev.src, prev.at))));
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), NamedConst { value, src: st.src, at });
        }
        Ok(())
    }

    fn include(&mut self, from: usize, path: &str, at: usize, len: usize) -> PResult<()> {
        let span = |msg: String| SpanError::new(at, len, msg);
        if self.include_stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(span(format!("includes nest more than {MAX_INCLUDE_DEPTH} deep")));
        }
        let from_name = self.sources[from].name.clone();
        let loaded = if super::stdlib::reserved(path) {
            match super::stdlib::file(path) {
                Some(text) => Ok((path.to_string(), text.to_string())),
                None => {
                    let names: Vec<&str> = super::stdlib::names().collect();
                    return Err(span(format!("there is no `{path}` in the standard library"))
                        .with_hint(format!("it has {}", names.join(", "))));
                }
            }
        } else {
            self.loader.load(path, Some(&from_name))
        };
        let (name, text) = match loaded {
            Ok(loaded) => loaded,
            Err(LoadError::Unreadable(msg)) => return Err(span(format!("cannot include `{path}`: {msg}"))),
            Err(e @ LoadError::NotUtf8 { .. }) => {
                self.not_utf8(e);
                return Ok(());
            }
        };
        if let Some(i) = self.sources.iter().position(|s| s.name == name) {
            if let Some(depth) = self.include_stack.iter().position(|&s| s == i) {
                let chain: Vec<&str> = self.include_stack[depth..]
                    .iter()
                    .map(|&s| self.sources[s].name.as_str())
                    .chain([name.as_str()])
                    .collect();
                return Err(span(format!("include cycle: {}", chain.join(" -> ")))
                    .with_hint("a file cannot include itself, directly or through other files"));
            }
            // Included before: its functions and constants are already in the module.
            return Ok(());
        }
        let i = self.sources.len();
        self.sources.push(Source::new(name, text));
        self.include_stack.push(i);
        self.scopes.push(HashMap::new());
        self.assemble_file(i);
        self.scopes.pop();
        self.include_stack.pop();
        Ok(())
    }

    /// A file that is not UTF-8: one diagnostic at its first invalid byte, in that file (kept as
    /// a source, with its text made valid, so the snippet can be drawn), and nothing assembled.
    /// A later include of it is skipped as "included before".
    fn not_utf8(&mut self, e: LoadError) {
        let LoadError::NotUtf8 { name, text, at, bad } = e else { return };
        let bytes: Vec<String> = bad.iter().map(|b| format!("0x{b:02X}")).collect();
        let i = self.sources.len();
        self.sources.push(Source::new(name, text));
        let e = SpanError::new(
            at,
            '\u{FFFD}'.len_utf8(),
            format!("invalid UTF-8: {} {}", if bad.len() == 1 { "byte" } else { "bytes" }, bytes.join(" ")),
        )
        .with_hint("source files must be UTF-8 text; is this a binary file, or text in another encoding?");
        self.error(i, e);
    }

    // ---- functions

    /// Ends a function: checks its last instruction (when it ended with `.end` at `end`),
    /// resolves its labels, and fixes its register count.
    fn finish(&mut self, f: FuncBuild, end: Option<(usize, usize)>) {
        let src = f.src;
        if let Some((at, len)) = end {
            match f.code.last() {
                None => {
                    let e = SpanError::new(at, len, format!("function `{}` has no instructions", f.name))
                        .with_hint(terminator_hint());
                    self.error(src, e);
                }
                Some(last) if !last.bad && !last.op.is_terminator() => {
                    let msg = format!(
                        "function `{}` can fall through its end after `{}`",
                        f.name,
                        last.op.mnemonic()
                    );
                    self.error(src, SpanError::new(last.at, last.len, msg).with_hint(terminator_hint()));
                }
                Some(_) => {}
            }
        }
        if !f.code.is_empty() {
            let mut dangling: Vec<_> =
                f.labels.iter().filter(|(_, (i, ..))| *i as usize == f.code.len()).collect();
            dangling.sort_by_key(|(_, (_, at, _))| *at);
            for (name, &(_, at, len)) in dangling {
                let e = SpanError::new(at, len, format!("label `{name}` has no instruction after it"))
                    .with_hint("a label marks the instruction that follows it in the same function");
                self.error(src, e);
            }
        }
        let mut code = f.code;
        for r in f.label_refs {
            match f.labels.get(&r.name) {
                Some(&(index, ..)) => {
                    if let Some(slot) = code.get_mut(r.instr).and_then(|p| p.vals.get_mut(r.operand)) {
                        *slot = i64::from(index);
                    }
                }
                None => {
                    let e =
                        SpanError::new(r.at, r.len, format!("unknown label `{}` in `{}`", r.name, f.name));
                    let hint = match nearest(&r.name, f.labels.keys().map(String::as_str)) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None => "labels are local to their function".to_string(),
                    };
                    self.error(src, e.with_hint(hint));
                }
            }
        }
        let used = f.max_reg.map_or(0, |r| r + 1).max(i64::from(f.arity)).max(1);
        // Scratch registers go above every register the function names, or at the top of an
        // explicit register count.
        let base = match f.regs {
            Some(regs) if f.scratch > 0 => i64::from(regs) - f.scratch,
            _ => used,
        };
        if f.scratch > 0 && (base < used || base + f.scratch - 1 > MAX_REG) {
            let e = SpanError::new(
                f.at,
                f.len,
                format!(
                    "`{}` has no room for the {} scratch registers its operand lists need",
                    f.name, f.scratch
                ),
            )
            .with_hint(format!(
                "raise REGS in its `.func` to at least {}, or leave it out",
                used + f.scratch
            ));
            self.error(src, e);
        }
        for p in code.iter_mut() {
            for (v, k) in p.vals.iter_mut().zip(p.op.operands()) {
                if matches!(k, OperandKind::Dst | OperandKind::Reg) && *v < 0 {
                    *v = (*v - SCRATCH + base).clamp(0, MAX_REG);
                }
            }
        }
        let used = if f.scratch > 0 { base + f.scratch } else { used };
        let nregs = f.regs.unwrap_or_else(|| u16::try_from(used).unwrap_or(u16::MAX));
        let debug_file = match self.debug_files.iter().position(|n| *n == f.debug_file) {
            Some(i) => to_u32(i),
            None => {
                self.debug_files.push(f.debug_file);
                to_u32(self.debug_files.len() - 1)
            }
        };
        let index = self.funcs.len();
        self.func_refs.extend(f.func_refs.into_iter().map(|r| (index, src, r)));
        self.funcs.push(FuncDone {
            name: f.name,
            src,
            arity: f.arity,
            nregs,
            code,
            debug_file,
            lines: f.lines,
        });
    }

    /// Resolves function names and builds the module, or returns every diagnostic.
    fn into_module(mut self) -> Result<Module, AsmErrors> {
        for (func, src, r) in std::mem::take(&mut self.func_refs) {
            match self.func_names.get(&r.name) {
                Some(&(index, ..)) => {
                    let slot = self.funcs.get_mut(func).and_then(|f| f.code.get_mut(r.instr));
                    if let Some(slot) = slot.and_then(|p| p.vals.get_mut(r.operand)) {
                        *slot = index as i64;
                    }
                }
                None => {
                    let hint = match nearest(&r.name, self.func_names.keys().map(String::as_str)) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None => "define it with `.func` in this file or an included one".to_string(),
                    };
                    let e = SpanError::new(r.at, r.len, format!("unknown function `{}`", r.name));
                    self.error(src, e.with_hint(hint));
                }
            }
        }
        let mut funcs = Vec::with_capacity(self.funcs.len());
        let mut debug = Vec::with_capacity(self.funcs.len());
        if self.diags.is_empty() {
            for f in std::mem::take(&mut self.funcs) {
                let mut code = Vec::with_capacity(f.code.len());
                for p in &f.code {
                    match Instr::from_operands(p.op, &p.vals) {
                        Ok(instr) => code.push(instr),
                        Err(err) => {
                            let msg = format!("cannot encode `{}`: {err}", p.op.mnemonic());
                            self.error(f.src, SpanError::new(p.at, p.len, msg));
                        }
                    }
                }
                funcs.push(Function { name: f.name, arity: f.arity, nregs: f.nregs, code });
                debug.push(FuncDebug { file: f.debug_file, lines: f.lines });
            }
        }
        if !self.diags.is_empty() {
            self.diags.sort_by_key(|(src, d)| (*src, d.offset));
            return Err(AsmErrors {
                diagnostics: self.diags.into_iter().map(|(_, d)| d).collect(),
                sources: self.sources.into_iter().map(|s| (s.name, s.text)).collect(),
            });
        }
        let debug = (!self.nodebug).then_some(DebugInfo { files: self.debug_files, funcs: debug });
        Ok(Module { consts: self.consts, funcs, debug })
    }
}

/// `.func NAME ARITY [REGS]` after the directive name: (name, its offset, arity, regs).
fn func_header(c: &mut Cursor) -> PResult<(String, usize, u16, Option<u16>)> {
    c.skip_ws();
    let name_at = c.pos;
    let Some(name) = c.ident() else {
        return Err(c.expected("a function name").with_hint("expected: .func NAME ARITY [REGS]"));
    };
    c.skip_ws();
    let arity = small_count(c, "the arity (the number of arguments)")?;
    c.skip_ws();
    let regs = if c.at_end() {
        None
    } else {
        let regs_at = c.pos;
        let regs = small_count(c, "the register count")?;
        if regs < arity {
            return Err(SpanError::new(
                regs_at,
                c.pos - regs_at,
                format!("REGS ({regs}) is less than ARITY ({arity})"),
            )
            .with_hint("the register file must hold at least the arguments"));
        }
        Some(regs)
    };
    c.expect_end("`.func NAME ARITY REGS`")?;
    Ok((name.to_string(), name_at, arity, regs))
}

/// A decimal count that fits in 16 bits.
fn small_count(c: &mut Cursor, what: &str) -> PResult<u16> {
    let at = c.pos;
    let n = decimal(c, what)?;
    u16::try_from(n)
        .map_err(|_| SpanError::new(at, c.pos - at, format!("{n} is too large for {what} (at most 65535)")))
}

/// A non-negative decimal integer.
fn decimal(c: &mut Cursor, what: &str) -> PResult<u64> {
    let at = c.pos;
    let digits = c.take_while(|ch| ch.is_ascii_digit());
    if digits.is_empty() || c.peek().is_some_and(is_ident_char) {
        c.pos = at;
        return Err(c.expected(what));
    }
    digits.parse().map_err(|_| SpanError::new(at, digits.len(), format!("{digits} is too large for {what}")))
}

/// A string literal, with its span.
fn quoted(c: &mut Cursor, what: &str) -> PResult<(String, usize, usize)> {
    c.skip_ws();
    let at = c.pos;
    if c.peek() != Some('"') {
        return Err(c.expected(what));
    }
    let s = literal::string(c)?;
    Ok((s, at, c.pos - at))
}

fn terminator_hint() -> String {
    let ends: Vec<&str> =
        Opcode::ALL.iter().filter(|op| op.is_terminator()).map(|op| op.mnemonic()).collect();
    format!("end the function with an instruction that does not fall through: {}", ends.join(", "))
}
