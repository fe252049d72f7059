//! The assembler (placeholder signatures; being written).
use crate::module::Module;
use crate::value::Value;

/// Supplies source text for the main file and for `.include`s. vm-core does no I/O itself.
pub trait SourceLoader {
    /// Loads `path` as named in an `.include` of file `from` (or the top-level file when `from`
    /// is `None`); returns the name diagnostics should use for it and its text.
    fn load(&mut self, path: &str, from: Option<&str>) -> Result<(String, String), String>;
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

/// Every error found in a program, with the text of each file involved (for rendering).
#[derive(Clone, Debug, Default)]
pub struct AsmErrors {
    /// The errors, in file and line order.
    pub diagnostics: Vec<Diagnostic>,
    /// `(file name, text)` of every file loaded.
    pub sources: Vec<(String, String)>,
}

/// Assembles the program whose top-level file is `name`.
pub fn assemble(name: &str, loader: &mut dyn SourceLoader) -> Result<Module, AsmErrors> {
    let _ = (name, loader);
    Err(AsmErrors::default())
}

/// Parses one constant literal (`{:ok, [1, "two"]}`), as used by `const` and by the REPL.
pub fn parse_value(text: &str) -> Result<Value, String> {
    Err(format!("cannot parse {text}"))
}
