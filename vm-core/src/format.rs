//! Templates for the `format` instruction: `"transfers=~p total=~p name=~s"`.
//!
//! 1. A template is a string; `~p` is replaced by the next value's literal form
//!    ([`Value::repr`]: strings quoted, atoms with their colon), `~s` by its print form with
//!    strings and atoms bare (the text of a string, the name of an atom; anything else as
//!    `print` shows it), `~~` by one `~`. Any other character after `~`, or a `~` at the end,
//!    is an error.
//! 2. The values come in order, exactly one per `~p` or `~s`. The verifier checks both rules
//!    for every `format` instruction ([`directives`]), so a bad template or a wrong count is
//!    found when the program is assembled, not when the line is first printed.

use crate::exception::Exception;
use crate::value::Value;
use std::fmt::Write as _;

/// How many values `template` takes, or why it is not a template.
pub fn directives(template: &str) -> Result<usize, String> {
    let mut n = 0;
    let mut chars = template.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '~' {
            continue;
        }
        match chars.next() {
            Some((_, 'p' | 's')) => n += 1,
            Some((_, '~')) => {}
            Some((_, other)) => {
                return Err(format!("unknown directive `~{other}` at byte {at} (use ~p, ~s or ~~)"));
            }
            None => {
                return Err(format!("the template ends in a lone `~` at byte {at} (write ~~ for a tilde)"));
            }
        }
    }
    Ok(n)
}

/// The string `template` makes with `args`; `:badarg` if the template is bad or takes another
/// number of values (a verified module never does).
pub fn format(template: &str, args: &[Value]) -> Result<String, Exception> {
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
    let mut out = String::with_capacity(template.len() + 8 * args.len());
    let mut args = args.iter();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        // Checked above: every `~` starts a known directive with a value left for it.
        match chars.next() {
            Some('p') => {
                let _ = write!(out, "{:?}", args.next().unwrap_or(&Value::Nil));
            }
            Some('s') => write_bare(&mut out, args.next().unwrap_or(&Value::Nil)),
            _ => out.push('~'),
        }
    }
    Ok(out)
}

/// `~s`: a string's text, an atom's name, anything else in its print form.
fn write_bare(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Atom(a) => out.push_str(&a.name()),
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_counted_and_checked() {
        assert_eq!(directives("plain"), Ok(0));
        assert_eq!(directives("a=~p b=~s ~~ c"), Ok(2));
        assert!(directives("x=~d").unwrap_err().contains("~d"));
        assert!(directives("x~").unwrap_err().contains("lone"));
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
}
