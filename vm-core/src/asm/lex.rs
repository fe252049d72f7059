//! Character-level scanning shared by the line parser and the literal parser.
//!
//! Everything works on byte offsets into one file's text (or into the string given to
//! `parse_value`), so an error found anywhere can be reported at its exact place. A [`Cursor`]
//! moves over a region `pos..end` of that text one `char` at a time, which keeps every position on
//! a character boundary: slicing at a cursor position can never panic.

/// An error at a byte span of the text being scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpanError {
    /// Byte offset where the offending text starts.
    pub at: usize,
    /// Byte length of the offending text (0 when it points at the end of a region).
    pub len: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl SpanError {
    pub(super) fn new(at: usize, len: usize, message: impl Into<String>) -> SpanError {
        SpanError { at, len, message: message.into(), hint: None }
    }

    pub(super) fn with_hint(mut self, hint: impl Into<String>) -> SpanError {
        self.hint = Some(hint.into());
        self
    }
}

pub(crate) type PResult<T> = Result<T, SpanError>;

/// True for the first character of an identifier (`[A-Za-z_]`).
pub(crate) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// True for the later characters of an identifier (`[A-Za-z0-9_.]`).
pub(crate) fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// A reading position in `src`, confined to `pos..end`.
#[derive(Clone, Debug)]
pub(crate) struct Cursor<'a> {
    src: &'a str,
    /// The current byte offset (always on a character boundary).
    pub pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `src[start..end]`; both must be character boundaries.
    pub(super) fn new(src: &'a str, start: usize, end: usize) -> Cursor<'a> {
        Cursor { src, pos: start, end }
    }

    /// The whole text the cursor works on (offsets are relative to it).
    pub(super) fn src(&self) -> &'a str {
        self.src
    }

    /// The end of the region.
    pub(super) fn end(&self) -> usize {
        self.end
    }

    /// The unread part of the region.
    pub(super) fn rest(&self) -> &'a str {
        self.src.get(self.pos..self.end).unwrap_or("")
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// The character `n` characters ahead of the current one.
    pub(super) fn peek_nth(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Consumes `c` if it is next.
    pub(super) fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// Consumes `s` if the unread text starts with it.
    pub(super) fn eat_str(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub(super) fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Consumes characters while `f` holds and returns them.
    pub(super) fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.src[start..self.pos]
    }

    /// Reads an identifier (`[A-Za-z_][A-Za-z0-9_.]*`), if one starts here.
    pub(super) fn ident(&mut self) -> Option<&'a str> {
        if self.peek().is_some_and(is_ident_start) { Some(self.take_while(is_ident_char)) } else { None }
    }

    /// The byte length of the token at the cursor, for error spans: a run of identifier
    /// characters, or else one character.
    pub(super) fn token_len(&self) -> usize {
        let rest = self.rest();
        let word = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
        if word > 0 { word } else { rest.chars().next().map_or(0, char::len_utf8) }
    }

    /// An "expected X" error at the cursor, naming what was found instead.
    pub(super) fn expected(&self, what: &str) -> SpanError {
        let len = self.token_len();
        if len == 0 {
            SpanError::new(self.pos, 0, format!("expected {what}"))
        } else if self.peek().is_some_and(char::is_whitespace) {
            SpanError::new(self.pos, len, format!("expected {what}"))
        } else {
            let found = &self.rest()[..len];
            SpanError::new(self.pos, len, format!("expected {what}, found `{found}`"))
        }
    }

    /// Fails unless only whitespace is left; `after` describes what was just read.
    pub(super) fn expect_end(&mut self, after: &str) -> PResult<()> {
        self.skip_ws();
        if self.at_end() {
            return Ok(());
        }
        let len = self.rest().trim_end().len();
        let found = &self.rest()[..len];
        Err(SpanError::new(self.pos, len, format!("unexpected `{found}` after {after}")))
    }
}

/// Returns the index just past the string literal whose opening quote is at `bytes[open]`, or
/// `bytes.len()` if it is unterminated. Scanning bytes is safe here: `"` and `\` are ASCII and
/// never occur inside a multi-byte UTF-8 sequence.
fn skip_string(bytes: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return i + 1,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The length of the code part of `line`: everything before the first `;` outside a string.
pub(crate) fn code_len(line: &str) -> usize {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' => return i,
            b'"' => i = skip_string(bytes, i),
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Splits `src[start..end]` at the commas that are outside brackets and strings, returning the
/// span of each operand with surrounding whitespace removed. Only whitespace means no operands;
/// an empty operand (`add r0,, r1` or a trailing comma) is an error.
pub(crate) fn split_operands(src: &str, start: usize, end: usize) -> PResult<Vec<(usize, usize)>> {
    let region = &src[start..end];
    if region.trim().is_empty() {
        return Ok(Vec::new());
    }
    let bytes = region.as_bytes();
    let mut pieces = Vec::new();
    let (mut depth, mut piece, mut i) = (0usize, 0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_string(bytes, i),
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b',' if depth == 0 => {
                pieces.push((piece, i));
                piece = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    pieces.push((piece, bytes.len()));
    let mut spans = Vec::with_capacity(pieces.len());
    for (k, (a, b)) in pieces.into_iter().enumerate() {
        let text = &region[a..b];
        let lead = text.len() - text.trim_start().len();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            // Point at the comma that has nothing before or after it.
            let comma = if k == 0 { start + b } else { start + a - 1 };
            return Err(SpanError::new(comma, 1, "missing operand"));
        }
        spans.push((start + a + lead, start + a + lead + trimmed.len()));
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_end_code_outside_strings_only() {
        assert_eq!(code_len("add r0, r1, r2 ; sum"), 15);
        assert_eq!(code_len(r#"const r0, "a;b" ; c"#), 16);
        assert_eq!(code_len(r#"const r0, "a\";b""#), 17);
        assert_eq!(code_len(r#"const r0, "open;"#), 16);
    }

    #[test]
    fn operands_split_at_top_level_commas() {
        let s = r#"op r0, {1, [2, 3]}, "a,b" , %{1 => 2}"#;
        let spans = split_operands(s, 2, s.len()).unwrap();
        let texts: Vec<&str> = spans.iter().map(|&(a, b)| &s[a..b]).collect();
        assert_eq!(texts, ["r0", "{1, [2, 3]}", r#""a,b""#, "%{1 => 2}"]);
        assert_eq!(split_operands(s, 2, 2).unwrap(), vec![]);
        let bad = "op r0,, r1";
        assert_eq!(split_operands(bad, 2, bad.len()).unwrap_err().at, 5);
        let trailing = "op r0,";
        assert_eq!(split_operands(trailing, 2, trailing.len()).unwrap_err().at, 5);
    }

    #[test]
    fn cursor_reads_identifiers_and_reports_tokens() {
        let s = "  fib.go: x";
        let mut c = Cursor::new(s, 0, s.len());
        c.skip_ws();
        assert_eq!(c.ident(), Some("fib.go"));
        assert!(c.eat(':'));
        c.skip_ws();
        let e = c.expected("a number");
        assert_eq!((e.at, e.len, e.message.as_str()), (10, 1, "expected a number, found `x`"));
    }
}
