//! The assembler: `.vasm` text → [`Module`].
//!
//! The language is specified in `docs/language.md`; mnemonics and operand kinds come from the op
//! list (`ops.rs`), never from a table here. The assembler reads files through a
//! [`SourceLoader`] (vm-core does no I/O), parses them line by line, and reports *every* error it
//! finds as a [`Diagnostic`] rather than stopping at the first.
//!
//! The output is deterministic, and the disassembler depends on these rules to reproduce a module
//! byte for byte:
//! 1. **Constant pool**: each distinct constant (by `Value` equality) is pooled once, in order of
//!    first use, walking functions in definition order and their instructions in order. Constants
//!    named by `.const` but never used are not pooled.
//! 2. **Function order**: definition order, with `.include` inlining the included file at the
//!    directive. A file included a second time is skipped; an include cycle is an error.
//! 3. **Debug info**: `files` lists the files that define at least one function, in order of their
//!    first function; each instruction records its source line. `.file "NAME"` changes the file
//!    recorded for the following functions of the current file; `.line N` makes every following
//!    instruction of the current function record `N` (until the next `.line`). `.nodebug` in the
//!    main file drops the debug section.
//! 4. **Register count**: `.func NAME ARITY REGS` sets it; without `REGS` it is
//!    `max(ARITY, highest register used + 1)`, or 1 if that is 0. A register window (`args, n`)
//!    uses its registers `args .. args+n-1`.

mod assembler;
mod lex;
mod literal;
pub mod stdlib;
#[cfg(test)]
mod tests;

use crate::module::Module;
use crate::value::Value;
use std::collections::HashMap;
use std::fmt;

/// Supplies source text for the main file and for `.include`s. vm-core does no I/O itself.
pub trait SourceLoader {
    /// Loads `path` as named in an `.include` of file `from` (or the top-level file when `from`
    /// is `None`); returns the name diagnostics should use for it and its text.
    fn load(&mut self, path: &str, from: Option<&str>) -> Result<(String, String), LoadError>;
}

/// Why a [`SourceLoader`] could not supply a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// It could not be read; the reason, for people.
    Unreadable(String),
    /// It was read, but is not UTF-8 text. The assembler reports where (a diagnostic in that
    /// file, with its snippet) and assembles nothing of it.
    NotUtf8 {
        /// The name diagnostics should use for it.
        name: String,
        /// Its text with each invalid sequence replaced by U+FFFD (so the bytes before the first
        /// one are unchanged and `at` is an offset in both).
        text: String,
        /// The byte offset of the first invalid sequence.
        at: usize,
        /// The bytes of that sequence.
        bad: Vec<u8>,
    },
}

impl From<String> for LoadError {
    fn from(reason: String) -> LoadError {
        LoadError::Unreadable(reason)
    }
}

/// A file's bytes as text for a [`SourceLoader`]: `(name, text)`, or [`LoadError::NotUtf8`]
/// locating the first byte that is not UTF-8.
pub fn source_text(name: String, bytes: Vec<u8>) -> Result<(String, String), LoadError> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok((name, text)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let bad_len = std::str::from_utf8(&bytes[at..])
                .err()
                .and_then(|e| e.error_len())
                .unwrap_or(bytes.len() - at);
            let bad = bytes[at..at + bad_len].to_vec();
            Err(LoadError::NotUtf8 { name, text: String::from_utf8_lossy(&bytes).into_owned(), at, bad })
        }
    }
}

/// One located error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as returned by the loader.
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub col: u32,
    /// Byte offset of the error in the file's text.
    pub offset: usize,
    /// Byte length of the span (at least 1 where the text allows).
    pub len: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, if there is a suggestion.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)?;
        match &self.hint {
            Some(hint) => write!(f, " ({hint})"),
            None => Ok(()),
        }
    }
}

/// Every error found in a program, with the text of each file involved (for rendering).
#[derive(Clone, Debug, Default)]
pub struct AsmErrors {
    /// The errors, in file and line order.
    pub diagnostics: Vec<Diagnostic>,
    /// `(file name, text)` of every file loaded.
    pub sources: Vec<(String, String)>,
}

impl fmt::Display for AsmErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AsmErrors {}

/// Assembles the program whose top-level file is `name`.
pub fn assemble(name: &str, loader: &mut dyn SourceLoader) -> Result<Module, AsmErrors> {
    assembler::assemble(name, loader)
}

/// Assembles a single file given as text (an `.include` in it fails: there is nothing to load).
pub fn assemble_str(name: &str, text: &str) -> Result<Module, AsmErrors> {
    assemble(name, &mut MemLoader::new().with(name, text))
}

/// The byte range of the code on line `line` (from 1) of `text`: from its first non-blank
/// character to the end of its instruction, before any comment; `None` for a line that is not
/// there or holds no code. For pointing at an instruction known only by its line, as verifier
/// errors are (they name a function and an instruction index, and the debug section its line).
pub fn code_span(text: &str, line: u32) -> Option<(usize, usize)> {
    let start =
        if line <= 1 { 0 } else { text.match_indices('\n').nth(usize::try_from(line).ok()? - 2)?.0 + 1 };
    let rest = &text[start..];
    let code = &rest[..lex::code_len(&rest[..rest.find('\n').unwrap_or(rest.len())])];
    let lead = code.len() - code.trim_start().len();
    let code = code.trim();
    (!code.is_empty()).then(|| (start + lead, start + lead + code.len()))
}

/// Parses one constant literal (`{:ok, [1, "two"]}`), as used by `const` and by the REPL.
///
/// Surrounding whitespace is allowed; anything else after the value is an error. The error
/// message names the column (in characters, from 1) where parsing failed.
pub fn parse_value(text: &str) -> Result<Value, String> {
    let mut c = lex::Cursor::new(text, 0, text.len());
    c.skip_ws();
    let result = literal::literal(&mut c, 0).and_then(|v| c.expect_end("the value").map(|()| v));
    result.map_err(|e| {
        let col = text.get(..e.at).map_or(1, |s| s.chars().count() + 1);
        match e.hint {
            Some(hint) => format!("{} at column {col} ({hint})", e.message),
            None => format!("{} at column {col}", e.message),
        }
    })
}

/// An in-memory [`SourceLoader`]: a map from file name to text.
///
/// An `.include` path is resolved relative to the directory of the including file by plain string
/// joining (`lib/a.vasm` including `../b.vasm` loads `b.vasm`), with `.` and `..` segments
/// normalised; a path starting with `/` is used as is. Keys are compared after the same
/// normalisation, and the normalised path is the name reported in diagnostics.
#[derive(Clone, Debug, Default)]
pub struct MemLoader(pub HashMap<String, String>);

impl MemLoader {
    /// An empty loader.
    pub fn new() -> MemLoader {
        MemLoader::default()
    }

    /// The loader with one more file.
    pub fn with(mut self, name: &str, text: &str) -> MemLoader {
        self.insert(name, text);
        self
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, name: &str, text: &str) {
        self.0.insert(name.to_string(), text.to_string());
    }
}

impl SourceLoader for MemLoader {
    fn load(&mut self, path: &str, from: Option<&str>) -> Result<(String, String), LoadError> {
        let joined = match from {
            Some(from) if !path.starts_with('/') => match from.rfind('/') {
                Some(slash) => format!("{}/{path}", &from[..slash]),
                None => path.to_string(),
            },
            _ => path.to_string(),
        };
        let name = normalize_path(&joined);
        let text = match self.0.get(&name) {
            Some(text) => Some(text),
            None => self.0.iter().find(|(k, _)| normalize_path(k) == name).map(|(_, t)| t),
        };
        match text {
            Some(text) => Ok((name, text.clone())),
            None => Err(format!("no file named `{name}`").into()),
        }
    }
}

/// Removes empty and `.` segments and resolves `..` against the previous segment; `..` segments
/// that climb above the start of a relative path are kept.
fn normalize_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            seg => parts.push(seg),
        }
    }
    let joined = parts.join("/");
    if absolute { format!("/{joined}") } else { joined }
}

/// The edit distance between two strings, in characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let replace = prev[j] + usize::from(ca != cb);
            cur.push(replace.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if one is close enough to be a plausible typo. Ties go to the
/// alphabetically first candidate so that hints do not depend on hash-map order.
fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let len = name.chars().count();
    // Very long names are not typos of anything; skipping them also keeps this cheap.
    if len > 64 {
        return None;
    }
    let limit = len.div_ceil(3);
    candidates
        .into_iter()
        .filter(|c| c.chars().count().abs_diff(len) <= limit)
        .map(|c| (levenshtein(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, c)| c)
}
