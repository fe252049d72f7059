//! Templates for the `format` instruction: `"transfers=~p total=~p name=~s"`.
//!
//! 1. A template is a string or a bytes value; `~p` is replaced by the next value's literal
//!    form ([`Value::repr`]: strings quoted, atoms with their colon), `~s` by its print form
//!    with strings and atoms bare (the text of a string, the name of an atom; anything else as
//!    `print` shows it), `~~` by one `~`. Any other character after `~`, or a `~` at the end,
//!    is an error.
//! 2. A string template makes a string. A bytes template makes bytes, and there `~s` writes a
//!    bytes value as its bytes (in a string it is written as its literal, `b"..."`, so that the
//!    result stays UTF-8): a line made of a client's bytes is one instruction.
//! 3. The values come in order, exactly one per `~p` or `~s`. The verifier checks rules 1 and 3
//!    for every `format` instruction ([`directives`]), so a bad template or a wrong count is
//!    found when the program is assembled, not when the line is first printed.

use crate::exception::Exception;
use crate::value::Value;
use std::io::Write as _;

/// Stands in for a missing value (a verified module never lacks one).
static NIL: Value = Value::Nil;

/// How many values `template` (a string's or a bytes value's bytes) takes, or why it is not a
/// template.
pub fn directives(template: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    let mut at = 0;
    while let Some(k) = template[at..].iter().position(|&b| b == b'~') {
        at += k;
        match template.get(at + 1) {
            Some(b'p' | b's') => n += 1,
            Some(b'~') => {}
            Some(_) => {
                // The character after the `~`, whole (a template is mostly text).
                let next = String::from_utf8_lossy(&template[at + 1..(at + 5).min(template.len())]);
                let other = next.chars().next().unwrap_or('?');
                return Err(format!("unknown directive `~{other}` at byte {at} (use ~p, ~s or ~~)"));
            }
            None => {
                return Err(format!("the template ends in a lone `~` at byte {at} (write ~~ for a tilde)"));
            }
        }
        at += 2;
    }
    Ok(n)
}

/// The string a string `template` makes with `args`; `:badarg` if the template is bad or takes
/// another number of values (a verified module never does).
pub fn format(template: &str, args: &[Value]) -> Result<String, Exception> {
    let out = render(template.as_bytes(), args, false)?;
    // Every piece written is UTF-8 (rule 2 of the module docs), so this never fails.
    String::from_utf8(out).map_err(|_| Exception::badarg("format: the result is not UTF-8"))
}

/// The bytes a bytes `template` makes with `args` (`~s` writes a bytes value as its bytes);
/// errors as [`format`].
pub fn format_bytes(template: &[u8], args: &[Value]) -> Result<Vec<u8>, Exception> {
    render(template, args, true)
}

/// Rule 1 of the module docs; `raw` is rule 2's bytes template.
fn render(template: &[u8], args: &[Value], raw: bool) -> Result<Vec<u8>, Exception> {
    match directives(template) {
        Ok(n) if n == args.len() => {}
        Ok(n) => {
            return Err(Exception::badarg(format!(
                "format: the template takes {n} values, got {}",
                args.len()
            )));
        }
        Err(e) => return Err(Exception::badarg(format!("format: {e}"))),
    }
    let mut out = Vec::with_capacity(template.len() + 8 * args.len());
    let mut args = args.iter();
    let mut at = 0;
    while let Some(k) = template[at..].iter().position(|&b| b == b'~') {
        out.extend_from_slice(&template[at..at + k]);
        at += k;
        // Checked above: every `~` starts a known directive with a value left for it.
        match template.get(at + 1) {
            Some(b'p') => {
                let _ = write!(out, "{:?}", args.next().unwrap_or(&NIL));
            }
            Some(b's') => match args.next().unwrap_or(&NIL) {
                Value::Str(s) => out.extend_from_slice(s.as_bytes()),
                Value::Atom(a) => out.extend_from_slice(a.name().as_bytes()),
                Value::Bytes(b) if raw => out.extend_from_slice(b),
                other => {
                    let _ = write!(out, "{other}");
                }
            },
            _ => out.push(b'~'),
        }
        at += 2;
    }
    out.extend_from_slice(&template[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_counted_and_checked() {
        assert_eq!(directives(b"plain"), Ok(0));
        assert_eq!(directives(b"a=~p b=~s ~~ c"), Ok(2));
        assert!(directives(b"x=~d").unwrap_err().contains("~d"));
        assert!(directives("x=~\u{e9}".as_bytes()).unwrap_err().contains("~\u{e9}"));
        assert!(directives(b"x~").unwrap_err().contains("lone"));
    }

    #[test]
    fn values_are_written_in_their_forms() {
        let args = [
            Value::Int(50_000),
            Value::str("a \"b\""),
            Value::atom("ok"),
            Value::str("bare"),
            Value::tuple(vec![Value::atom("x"), Value::str("y")]),
        ];
        let s = format("n=~p q=~p a=~s s=~s t=~s ~~", &args).unwrap();
        assert_eq!(s, "n=50000 q=\"a \\\"b\\\"\" a=ok s=bare t={:x, \"y\"} ~");
        assert_eq!(format("~p", &[Value::atom("ok")]).unwrap(), ":ok");
        assert_eq!(format("é~sé", &[Value::str("ü")]).unwrap(), "éüé");
        assert_eq!(format("~p", &[]).unwrap_err().kind, crate::atoms::BADARG);
    }

    #[test]
    fn a_bytes_template_makes_bytes_with_bytes_written_raw() {
        let args = [Value::str("1.2.3.4:5"), Value::bytes(&b"hi\xff\n"[..]), Value::atom("ok")];
        let b = format_bytes(b"[~s] ~s ~p ~~\xfe", &args).unwrap();
        assert_eq!(b, b"[1.2.3.4:5] hi\xff\n :ok ~\xfe");
        // In a string template, bytes are written as their literal: the result stays text.
        let s = format("~s", &args[1..2]).unwrap();
        assert_eq!(s, "b\"hi\\xff\\n\"");
        assert_eq!(format_bytes(b"~s", &[]).unwrap_err().kind, crate::atoms::BADARG);
    }
}
