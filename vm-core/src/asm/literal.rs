//! The literal parser: the one grammar for constants, used by `const` operands, `.const`, and
//! [`super::parse_value`].
//!
//! ```text
//! value  := "nil" | "true" | "false" | "nan" | "inf" | "-inf" | number
//!         | ":" NAME | ":" string | string | "b" string
//!         | "{" values "}" | "[" values "]" | "%{" pairs "}"
//! values := ( value ( "," value )* )?          pairs := ( value "=>" value ( "," ... )* )?
//! number := "-"? ( "0x" HEX | DIGITS ( "." DIGITS )? ( [eE] [+-]? DIGITS )? )
//! ```
//!
//! `NAME` is `[A-Za-z_][A-Za-z0-9_]*`; `DIGITS` and `HEX` may contain `_` after their first digit.
//! A number with a fraction or an exponent is a float, anything else an int. Whitespace may
//! surround the items of a container. Invariant: for every value that has a literal,
//! `literal(v.repr()) == v` (checked by a property test in `asm::tests`). Containers nest at most
//! [`MAX_DEPTH`] deep, so hostile input cannot exhaust the stack.

use super::lex::{Cursor, PResult, SpanError, is_ident_char, is_ident_start};
use crate::value::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How deeply tuples, lists and maps may nest in one literal: as deep as a module's constants may
/// nest, so that every literal can be pooled.
pub(crate) const MAX_DEPTH: usize = crate::module::MAX_CONST_DEPTH;

/// The escapes a string literal accepts, for hints.
const ESCAPES: &str = r#"valid escapes are \n \r \t \0 \\ \" \xHH and \u{HEX}"#;

/// Parses one literal at the cursor. `depth` is the number of containers around it.
pub(crate) fn literal(c: &mut Cursor, depth: usize) -> PResult<Value> {
    let start = c.pos;
    match c.peek() {
        Some('{') => Ok(Value::tuple(items(c, depth, '}')?)),
        Some('[') => Ok(Value::list(items(c, depth, ']')?)),
        Some('%') => map(c, depth),
        Some('"') => Ok(Value::str(string(c)?)),
        Some(':') => atom(c),
        Some(ch) if ch == '-' || ch.is_ascii_digit() => number(c),
        Some('b') if c.peek_nth(1) == Some('"') => {
            c.bump();
            Ok(Value::bytes(string_body(c, true)?))
        }
        Some(ch) if is_ident_start(ch) => {
            let word = c.take_while(is_ident_char);
            match word {
                "nil" => Ok(Value::Nil),
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "nan" => Ok(Value::Float(f64::NAN)),
                "inf" => Ok(Value::Float(f64::INFINITY)),
                _ => Err(SpanError::new(start, word.len(), format!("`{word}` is not a value"))
                    .with_hint(format!("an atom is written `:{word}`, a string `\"{word}\"`"))),
            }
        }
        _ => Err(c.expected("a value")),
    }
}

/// Parses a string literal at the cursor (which is on its opening quote).
pub(crate) fn string(c: &mut Cursor) -> PResult<String> {
    let start = c.pos;
    let bytes = string_body(c, false)?;
    // Cannot fail: string mode only produces UTF-8, but never trust that enough to panic.
    String::from_utf8(bytes).map_err(|_| SpanError::new(start, c.pos - start, "string is not valid UTF-8"))
}

fn guard_depth(c: &Cursor, depth: usize) -> PResult<()> {
    if depth >= MAX_DEPTH {
        Err(SpanError::new(c.pos, 1, format!("literal nested too deeply (the limit is {MAX_DEPTH} levels)")))
    } else {
        Ok(())
    }
}

/// Parses `{...}` or `[...]`; the cursor is on the opening bracket.
fn items(c: &mut Cursor, depth: usize, close: char) -> PResult<Vec<Value>> {
    guard_depth(c, depth)?;
    c.bump();
    let mut out = Vec::new();
    c.skip_ws();
    if c.eat(close) {
        return Ok(out);
    }
    loop {
        out.push(literal(c, depth + 1)?);
        c.skip_ws();
        if c.eat(close) {
            return Ok(out);
        }
        if !c.eat(',') {
            return Err(c.expected(&format!("`,` or `{close}`")));
        }
        c.skip_ws();
    }
}

/// Parses `%{k => v, ...}`; the cursor is on the `%`.
fn map(c: &mut Cursor, depth: usize) -> PResult<Value> {
    guard_depth(c, depth)?;
    if !c.eat_str("%{") {
        return Err(SpanError::new(c.pos, 1, "expected `%{` to start a map"));
    }
    let mut out = BTreeMap::new();
    c.skip_ws();
    if c.eat('}') {
        return Ok(Value::Map(Arc::new(out)));
    }
    loop {
        let key_at = c.pos;
        let key = literal(c, depth + 1)?;
        let key_len = c.pos - key_at;
        c.skip_ws();
        if !c.eat_str("=>") {
            return Err(c.expected("`=>`"));
        }
        c.skip_ws();
        let value = literal(c, depth + 1)?;
        if out.insert(key, value).is_some() {
            return Err(SpanError::new(key_at, key_len, "duplicate key in map literal"));
        }
        c.skip_ws();
        if c.eat('}') {
            return Ok(Value::Map(Arc::new(out)));
        }
        if !c.eat(',') {
            return Err(c.expected("`,` or `}`"));
        }
        c.skip_ws();
    }
}

/// Parses `:name` or `:"any name"`; the cursor is on the colon.
fn atom(c: &mut Cursor) -> PResult<Value> {
    let start = c.pos;
    c.bump();
    if c.peek() == Some('"') {
        return Ok(Value::atom(&string(c)?));
    }
    match c.ident() {
        Some(name) if name.contains('.') => {
            Err(SpanError::new(start, c.pos - start, format!("`:{name}` is not an atom"))
                .with_hint(format!("an atom name containing `.` must be quoted: `:\"{name}\"`")))
        }
        Some(name) => Ok(Value::atom(name)),
        None => Err(c
            .expected("an atom name after `:`")
            .with_hint("atoms are written `:name` or `:\"any text\"`, with no space after `:`")),
    }
}

/// Parses an int or float literal, or `-inf`; the cursor is on the sign or first digit.
fn number(c: &mut Cursor) -> PResult<Value> {
    let start = c.pos;
    let neg = c.eat('-');
    if neg && c.rest().starts_with("inf") && !c.peek_nth(3).is_some_and(is_ident_char) {
        c.eat_str("inf");
        return Ok(Value::Float(f64::NEG_INFINITY));
    }
    if !c.peek().is_some_and(|d| d.is_ascii_digit()) {
        return Err(c.expected("a digit after `-`"));
    }
    let digit_or_sep = |d: char| d.is_ascii_digit() || d == '_';
    let mut is_float = false;
    let mut radix = 10;
    if c.eat_str("0x") || c.eat_str("0X") {
        radix = 16;
        c.take_while(|d| d.is_ascii_hexdigit() || d == '_');
    } else {
        c.take_while(digit_or_sep);
        if c.peek() == Some('.') && c.peek_nth(1).is_some_and(|d| d.is_ascii_digit()) {
            is_float = true;
            c.bump();
            c.take_while(digit_or_sep);
        }
        let exp_digit_at = match c.peek_nth(1) {
            Some('+' | '-') => 2,
            _ => 1,
        };
        if matches!(c.peek(), Some('e' | 'E')) && c.peek_nth(exp_digit_at).is_some_and(|d| d.is_ascii_digit())
        {
            is_float = true;
            c.bump();
            c.eat('+');
            c.eat('-');
            c.take_while(digit_or_sep);
        }
    }
    if c.peek().is_some_and(is_ident_char) {
        c.take_while(is_ident_char);
        let text = &c.src()[start..c.pos];
        return Err(SpanError::new(start, c.pos - start, format!("invalid number `{text}`")));
    }
    let text = &c.src()[start..c.pos];
    let clean: String = text.chars().filter(|&ch| ch != '_').collect();
    let span = |msg: &str| SpanError::new(start, text.len(), msg.to_string());
    if radix == 16 {
        // `from_str_radix` takes the sign but not the prefix, so cut the `0x` out.
        let digits = clean.trim_start_matches('-')[2..].to_string();
        if digits.is_empty() {
            return Err(span("expected hex digits after `0x`"));
        }
        let signed = if neg { format!("-{digits}") } else { digits };
        return i64::from_str_radix(&signed, 16)
            .map(Value::Int)
            .map_err(|_| span("integer literal out of range (ints are 64-bit)"));
    }
    if is_float {
        match clean.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Float(x)),
            Ok(_) => Err(span("float literal out of range").with_hint("write `inf` or `-inf`")),
            Err(_) => Err(span("invalid float literal")),
        }
    } else {
        clean
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| span("integer literal out of range (ints are 64-bit)"))
    }
}

/// Parses the body of a string literal; the cursor is on the opening quote. In bytes mode
/// `\xHH` may be any byte; in string mode it must be ASCII, so the result is always UTF-8.
pub(crate) fn string_body(c: &mut Cursor, bytes_mode: bool) -> PResult<Vec<u8>> {
    let open = c.pos;
    c.bump();
    let mut out = Vec::new();
    loop {
        let here = c.pos;
        let Some(ch) = c.bump() else {
            return Err(SpanError::new(open, c.pos - open, "unterminated string")
                .with_hint("close it with `\"` on the same line"));
        };
        match ch {
            '"' => return Ok(out),
            '\\' => escape(c, here, bytes_mode, &mut out)?,
            ch => push_char(&mut out, ch),
        }
    }
}

fn push_char(out: &mut Vec<u8>, ch: char) {
    let mut buf = [0; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

/// Decodes one escape; `at` is the offset of its backslash.
fn escape(c: &mut Cursor, at: usize, bytes_mode: bool, out: &mut Vec<u8>) -> PResult<()> {
    let bad = |c: &Cursor, msg: String| SpanError::new(at, c.pos - at, msg).with_hint(ESCAPES);
    let Some(kind) = c.bump() else {
        return Err(bad(c, "unterminated string".into()));
    };
    match kind {
        'n' => out.push(b'\n'),
        'r' => out.push(b'\r'),
        't' => out.push(b'\t'),
        '0' => out.push(0),
        '\\' => out.push(b'\\'),
        '"' => out.push(b'"'),
        'x' => {
            let hex: String = [c.bump(), c.bump()].into_iter().flatten().collect();
            let byte = match u8::from_str_radix(&hex, 16) {
                Ok(b) if hex.len() == 2 => b,
                _ => return Err(bad(c, "`\\x` needs two hex digits".into())),
            };
            if byte >= 0x80 && !bytes_mode {
                return Err(SpanError::new(at, c.pos - at, format!("`\\x{hex}` is not ASCII"))
                    .with_hint("in a string `\\xHH` must be below 0x80; write the character or `\\u{HEX}`"));
            }
            out.push(byte);
        }
        'u' => {
            if !c.eat('{') {
                return Err(bad(c, "`\\u` must be followed by `{HEX}`".into()));
            }
            let hex = c.take_while(|d| d.is_ascii_hexdigit());
            if !c.eat('}') || hex.is_empty() || hex.len() > 6 {
                return Err(bad(c, "`\\u{...}` needs 1 to 6 hex digits".into()));
            }
            let ch = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
            match ch {
                Some(ch) => push_char(out, ch),
                None => return Err(bad(c, format!("`\\u{{{hex}}}` is not a Unicode scalar value"))),
            }
        }
        other => return Err(bad(c, format!("unknown escape `\\{other}`"))),
    }
    Ok(())
}
