//! The Redis protocol (RESP): `tcp_read_resp` reads one whole command per call, `resp_encode`
//! turns a value into a reply.
//!
//! A command is an array of bulk strings, `*<count>\r\n` then `$<length>\r\n<bytes>\r\n` for each
//! argument; a line that does not start with `*` is an *inline* command (words separated by
//! spaces, as typed into `nc`). The parser works on the connection's read buffer and consumes
//! each argument as soon as it is complete, keeping what it has of an unfinished command in the
//! connection's [`Partial`]. So a call that waits (or is cancelled by a timeout or an interrupt)
//! loses no input, the buffer never holds more than one argument plus a read chunk, and a
//! command arriving in many pieces is parsed once, not once per piece.
//!
//! Each argument is copied out of the buffer into its own allocation: a 10-byte key kept in a
//! table must not pin the 16 KiB read chunk it arrived in.
//!
//! Limits (a hostile peer costs at most its connection): the command's size on the wire is at
//! most the caller's `max` (Redis's `client-query-buffer-limit`; one argument declared longer
//! is refused at its length line as `invalid bulk length`, as past Redis's
//! `proto-max-bulk-len`, before any of its bytes are read); at most [`MAX_ARGS`] arguments; an inline command or a length line
//! is at most [`MAX_INLINE`] / [`MAX_LENGTH_LINE`] bytes. Breaking a limit or the framing raises
//! `:protocol`; the connection's input is then out of step, so the caller should close it.

use crate::natives::{Ctx, NativeResult};
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use vm_core::{Atom, Exception, Value, atoms};

/// The most arguments one command may have (Redis's own limit).
pub const MAX_ARGS: i64 = 1024 * 1024;
/// The longest inline command, in bytes (Redis's own limit).
pub const MAX_INLINE: usize = 64 * 1024;
/// The longest `*<count>` or `$<length>` line: a sign, 19 digits, `\r\n`, with room to spare.
pub const MAX_LENGTH_LINE: usize = 32;
/// How deeply `resp_encode` follows nested lists and tuples.
const MAX_DEPTH: usize = 256;

/// What `tcp_read_resp` has consumed of a command that has not arrived whole.
#[derive(Default)]
pub struct Partial {
    /// Arguments still to come; 0 when no command is in progress.
    remaining: usize,
    /// The arguments so far.
    args: Vec<Value>,
    /// The wire bytes consumed for the command so far.
    size: usize,
    /// The protocol error met, raised again by every later call: the input is out of step.
    error: Option<Exception>,
    /// The last command's name: a client mostly repeats a few commands, and the next name
    /// that equals it is shared rather than allocated again.
    last_name: Option<Value>,
    /// The lists returned for the last two commands, to be refilled (see [`Partial::finish`]).
    kept: [Option<Arc<Vec<Value>>>; 2],
    /// Which of `kept` the next command goes into.
    next: usize,
}

/// Lists (and the argument buffer) with room for more arguments than this are not kept for
/// the next commands: a connection that sent one huge command does not hold its room forever.
const KEEP_ARGS: usize = 64;

impl Partial {
    /// The parsed arguments, moved out of `args`, as a list value.
    ///
    /// A server reads a command, handles it and reads the next into the same register, so by
    /// the time a command is parsed the list returned two commands ago is usually referenced
    /// by nothing but `kept`: it is then refilled instead of allocating a vector and an `Arc`
    /// anew (values are immutable, so a list is reused only when nobody else can see it). A
    /// list the program still holds is left alone and a new one made.
    fn finish(&mut self) -> Value {
        let slot = &mut self.kept[self.next];
        self.next ^= 1;
        let reusable = slot.as_mut().and_then(Arc::get_mut).filter(|v| v.capacity() <= KEEP_ARGS);
        let list = match reusable {
            Some(v) => {
                v.clear();
                v.append(&mut self.args);
                slot.clone().expect("the slot held the list just refilled")
            }
            None => {
                let list = Arc::new(self.args.drain(..).collect::<Vec<_>>());
                *slot = (list.capacity() <= KEEP_ARGS).then(|| list.clone());
                list
            }
        };
        if self.args.capacity() > KEEP_ARGS {
            self.args = Vec::new();
        }
        Value::List(list)
    }
}

/// Command names at most this long are remembered in [`Partial::last_name`].
const NAME_CACHE: usize = 32;

/// What the parser made of the buffer.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A whole command: a list of its arguments (an empty list for `*0`, `*-1` or an empty
    /// line).
    Command(Value),
    /// The end of input; an unfinished last command is dropped.
    End,
    /// The buffer holds no whole command yet: read more and call again.
    More,
}

fn protocol(msg: impl Into<String>) -> Exception {
    Exception::new(Atom::new("protocol"), msg)
}

/// The number in a `*<n>\r\n` or `$<n>\r\n` line at the start of `buf`, and the line's length;
/// `None` if the line has not arrived whole.
#[inline]
fn length_line(buf: &[u8], what: &str) -> Result<Option<(i64, usize)>, Exception> {
    // The usual line, 1 to 18 digits then "\r\n" (no overflow possible), in one pass, inlined
    // into the parser; anything else (a sign, a bare "\n", more digits, an error, a line not yet
    // whole) takes the general path, out of line.
    let mut n: i64 = 0;
    let mut i = 1;
    while let Some(&d) = buf.get(i)
        && d.is_ascii_digit()
        && i <= 18
    {
        n = n * 10 + i64::from(d - b'0');
        i += 1;
    }
    if i > 1 && buf.get(i..i + 2) == Some(b"\r\n") {
        return Ok(Some((n, i + 2)));
    }
    length_line_general(buf, what)
}

/// [`length_line`] for any line: a sign, a bare `\n`, overflow, errors, a line not yet whole.
#[cold]
#[inline(never)]
fn length_line_general(buf: &[u8], what: &str) -> Result<Option<(i64, usize)>, Exception> {
    let window = &buf[..buf.len().min(MAX_LENGTH_LINE)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LENGTH_LINE {
            Err(protocol(format!("invalid {what} length: no line end within {MAX_LENGTH_LINE} bytes")))
        } else {
            Ok(None)
        };
    };
    let digits = &buf[1..nl];
    let digits = digits.strip_suffix(b"\r").unwrap_or(digits);
    match parse_int(digits) {
        Some(n) => Ok(Some((n, nl + 1))),
        None => Err(protocol(format!("invalid {what} length {:?}", String::from_utf8_lossy(digits)))),
    }
}

/// A decimal integer with an optional `-`, nothing else; `None` if it is not one or overflows.
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

/// Parses the next command out of `buf` (see the module docs), consuming what it uses; `eof`
/// says no more bytes will come. `max` bounds the command's size on the wire.
pub fn parse(buf: &mut BytesMut, st: &mut Partial, eof: bool, max: usize) -> Result<Parsed, Exception> {
    if let Some(e) = &st.error {
        return Err(e.clone());
    }
    let r = parse_inner(buf, st, eof, max);
    if !matches!(r, Ok(Parsed::More)) {
        // A command, the end, or an error: no command carries over to the next call.
        st.remaining = 0;
        st.size = 0;
    }
    if let Err(e) = &r {
        st.error = Some(e.clone());
    }
    r
}

fn parse_inner(buf: &mut BytesMut, st: &mut Partial, eof: bool, max: usize) -> Result<Parsed, Exception> {
    let more = |buf: &mut BytesMut| {
        if eof {
            buf.clear();
            Parsed::End
        } else {
            Parsed::More
        }
    };
    // How much of `buf` is consumed: the buffer is advanced once, at the end (moving a
    // `BytesMut`'s start is ~40 instructions, and a SET has a header and three arguments).
    let mut pos = 0;
    if st.remaining == 0 {
        st.args.clear();
        match buf.first() {
            None => return Ok(more(buf)),
            Some(b'*') => {}
            Some(_) => return inline(buf, st, eof),
        }
        let Some((n, used)) = length_line(buf, "multibulk")? else { return Ok(more(buf)) };
        if used > max {
            return Err(protocol(format!("command larger than {max} bytes")));
        }
        if n <= 0 || n > MAX_ARGS {
            buf.advance(used);
            if n > MAX_ARGS {
                return Err(protocol(format!("too many arguments ({n}; at most {MAX_ARGS})")));
            }
            return Ok(Parsed::Command(st.finish()));
        }
        pos = used;
        st.remaining = n as usize;
        st.size = used;
        st.args.reserve(st.remaining.min(KEEP_ARGS));
    }
    let r = bulk_strings(&buf[..], &mut pos, st, max);
    buf.advance(pos);
    match r {
        Ok(true) => Ok(Parsed::Command(st.finish())),
        Ok(false) => Ok(more(buf)),
        Err(e) => Err(e),
    }
}

/// Reads the arguments still due of a command from `buf[*pos..]`, moving `*pos` past each one
/// taken; `Ok(true)` once the command is whole, `Ok(false)` if `buf` ends first.
fn bulk_strings(buf: &[u8], pos: &mut usize, st: &mut Partial, max: usize) -> Result<bool, Exception> {
    while st.remaining > 0 {
        let buf = &buf[*pos..];
        match buf.first() {
            None => return Ok(false),
            Some(b'$') => {}
            Some(&b) => {
                return Err(protocol(format!("expected '$', got {:?}", char::from(b))));
            }
        }
        let Some((len, used)) = length_line(buf, "bulk")? else { return Ok(false) };
        if len < 0 {
            return Err(protocol(format!("invalid bulk length {len}")));
        }
        let len = len as usize;
        // One argument longer than the whole command may be is refused as Redis refuses one
        // past `proto-max-bulk-len`, before any of its bytes are read.
        if len > max {
            return Err(protocol("invalid bulk length"));
        }
        let whole = used.saturating_add(len).saturating_add(2);
        let size = st.size.saturating_add(whole);
        if size > max {
            return Err(protocol(format!("command larger than {max} bytes")));
        }
        if buf.len() < whole {
            return Ok(false);
        }
        if &buf[used + len..whole] != b"\r\n" {
            return Err(protocol("expected \"\\r\\n\" after a bulk string"));
        }
        let data = &buf[used..used + len];
        let arg = match &st.last_name {
            Some(Value::Bytes(name)) if st.args.is_empty() && **name == data => st.last_name.clone(),
            _ => None,
        };
        let arg = arg.unwrap_or_else(|| {
            let arg = own_bytes(data);
            if st.args.is_empty() && len <= NAME_CACHE {
                st.last_name = Some(arg.clone());
            }
            arg
        });
        st.args.push(arg);
        *pos += whole;
        st.size = size;
        st.remaining -= 1;
    }
    Ok(true)
}

/// An argument's bytes as a value in an allocation of their own (see the module docs). Made
/// from a boxed slice: `Bytes::copy_from_slice` goes through a `Vec`, whose conversion (the
/// capacity test, then the boxed slice's) the compiler left out of line, ~29 instructions an
/// argument.
#[inline]
fn own_bytes(data: &[u8]) -> Value {
    Value::bytes(Bytes::from(Box::<[u8]>::from(data)))
}

/// An inline command: words separated by spaces or tabs, ended by `\n` (a `\r` before it is
/// dropped). A line cut short by the end of input is dropped.
fn inline(buf: &mut BytesMut, st: &mut Partial, eof: bool) -> Result<Parsed, Exception> {
    let window = &buf[..buf.len().min(MAX_INLINE)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= MAX_INLINE {
            return Err(protocol(format!("inline command longer than {MAX_INLINE} bytes")));
        }
        if eof {
            buf.clear();
            return Ok(Parsed::End);
        }
        return Ok(Parsed::More);
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let words = line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()).map(own_bytes);
    st.args.extend(words);
    buf.advance(nl + 1);
    Ok(Parsed::Command(st.finish()))
}

/// The digits of `n` (no allocation).
#[inline]
fn push_int(out: &mut Vec<u8>, n: i64) {
    // Most lengths and counts in replies have one or two digits.
    match n {
        0..=9 => out.push(b'0' + n as u8),
        10..=99 => out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]),
        _ => push_int_general(out, n),
    }
}

fn push_int_general(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + 24);
    out.push(b'$');
    push_int(out, data.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A simple string or an error line: one line of text, so no `\r` or `\n` inside.
fn push_line(out: &mut Vec<u8>, tag: u8, text: &[u8]) -> Result<(), Exception> {
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(Exception::badarg(format!(
            "resp_encode: a simple string or error cannot hold a line break: {:?}",
            String::from_utf8_lossy(text)
        )));
    }
    out.push(tag);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fn push_array(out: &mut Vec<u8>, items: &[Value], depth: usize) -> Result<(), Exception> {
    out.push(b'*');
    push_int(out, items.len() as i64);
    out.extend_from_slice(b"\r\n");
    items.iter().try_for_each(|x| encode_into(out, x, depth + 1))
}

/// `:OK`, the most common reply, encoded without looking up the atom's name.
fn ok_atom() -> Atom {
    static OK: std::sync::OnceLock<Atom> = std::sync::OnceLock::new();
    *OK.get_or_init(|| Atom::new("OK"))
}

/// Appends the RESP form of `v` to `out` (the mapping is in `docs/io.md`).
pub fn encode_into(out: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), Exception> {
    if depth > MAX_DEPTH {
        return Err(Exception::badarg(format!("resp_encode: nested more than {MAX_DEPTH} deep")));
    }
    match v {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Bool(b) => out.extend_from_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
        Value::Int(n) => {
            out.push(b':');
            push_int(out, *n);
            out.extend_from_slice(b"\r\n");
        }
        Value::Float(f) => push_bulk(out, Value::Float(*f).to_string().as_bytes()),
        Value::Str(s) => push_bulk(out, s.as_bytes()),
        Value::Bytes(b) => push_bulk(out, b),
        Value::Atom(a) if *a == ok_atom() => out.extend_from_slice(b"+OK\r\n"),
        Value::Atom(a) => push_line(out, b'+', a.name().as_bytes())?,
        Value::Tuple(t) => match t.as_slice() {
            [Value::Atom(tag), msg] if *tag == atoms::ERROR => match msg {
                Value::Str(s) => push_line(out, b'-', s.as_bytes())?,
                Value::Bytes(b) => push_line(out, b'-', b)?,
                Value::Atom(a) => push_line(out, b'-', a.name().as_bytes())?,
                other => {
                    return Err(Exception::type_error(format!(
                        "resp_encode: an {{:error, msg}} needs a string message, got {}",
                        other.type_atom()
                    )));
                }
            },
            items => push_array(out, items, depth)?,
        },
        Value::List(items) => push_array(out, items, depth)?,
        Value::Map(m) => {
            out.push(b'*');
            push_int(out, 2 * m.len() as i64);
            out.extend_from_slice(b"\r\n");
            for (k, x) in m.iter() {
                encode_into(out, k, depth + 1)?;
                encode_into(out, x, depth + 1)?;
            }
        }
        other => {
            return Err(Exception::type_error(format!(
                "resp_encode: a {} has no RESP form",
                other.type_atom().name()
            )));
        }
    }
    Ok(())
}

/// The RESP form of `v`, as bytes.
pub fn encode(v: &Value) -> Result<Bytes, Exception> {
    let mut out = match v {
        // A bulk string, the usual reply, is sized exactly: `Bytes` then takes the vector over
        // without another allocation.
        Value::Bytes(b) => Vec::with_capacity(bulk_size(b.len())),
        Value::Str(s) => Vec::with_capacity(bulk_size(s.len())),
        _ => Vec::with_capacity(32),
    };
    encode_into(&mut out, v, 0)?;
    Ok(Bytes::from(out))
}

/// The size of a bulk string of `n` bytes: `$<n>\r\n<bytes>\r\n`.
fn bulk_size(n: usize) -> usize {
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    1 + digits + 2 + n + 2
}

pub(crate) fn resp_encode(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    Ok(Value::bytes(encode(&args[0])?))
}

/// The replies in the list `replies`, each encoded, one after another (for `tcp_write_resp`).
pub fn encode_replies(replies: &Value) -> Result<Vec<u8>, Exception> {
    let Value::List(items) = replies else {
        return Err(Exception::type_error(format!(
            "tcp_write_resp: expected a list of replies, got {}",
            replies.type_atom()
        )));
    };
    let mut out = Vec::with_capacity(items.len() * 16);
    for r in items.iter() {
        encode_into(&mut out, r, 0)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Value {
        Value::bytes(Bytes::copy_from_slice(s))
    }

    fn cmd(words: &[&[u8]]) -> Parsed {
        Parsed::Command(Value::list(words.iter().map(|w| b(w)).collect::<Vec<_>>()))
    }

    /// Parses `input` whole, commands until the buffer needs more.
    fn parse_all(input: &[u8], eof: bool, max: usize) -> (Vec<Result<Parsed, String>>, BytesMut) {
        let mut buf = BytesMut::from(input);
        let mut st = Partial::default();
        let mut out = Vec::new();
        loop {
            let r = parse(&mut buf, &mut st, eof, max);
            let stop = !matches!(r, Ok(Parsed::Command(_)));
            out.push(r.map_err(|e| {
                assert_eq!(e.kind, Atom::new("protocol"));
                e.msg.to_string()
            }));
            if stop {
                return (out, buf);
            }
        }
    }

    #[test]
    fn whole_commands_pipelined_and_inline() {
        let (got, rest) = parse_all(
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n*1\r\n$4\r\nPING\r\nGET  a\tb \r\n*0\r\n\r\n*-1\r\n",
            false,
            1 << 20,
        );
        assert_eq!(
            got,
            vec![
                Ok(cmd(&[b"SET", b"key", b"va\r\nl"])),
                Ok(cmd(&[b"PING"])),
                Ok(cmd(&[b"GET", b"a", b"b"])),
                Ok(cmd(&[])),
                Ok(cmd(&[])),
                Ok(cmd(&[])),
                Ok(Parsed::More),
            ]
        );
        assert!(rest.is_empty());
        // Empty and binary arguments.
        let (got, _) = parse_all(b"*2\r\n$0\r\n\r\n$3\r\n\0\r\n\r\n", false, 100);
        assert_eq!(got[0], Ok(cmd(&[b"", b"\0\r\n"])));
    }

    #[test]
    fn partial_reads_resume_where_they_stopped() {
        let input: &[u8] = b"*3\r\n$3\r\nSET\r\n$10\r\n0123456789\r\n$2\r\nhi\r\n*1\r\n$4\r\nPING\r\n";
        // Every way of cutting the input into two pieces, and one byte at a time.
        for cut in 0..=input.len() {
            let (mut buf, mut st, mut got) = (BytesMut::new(), Partial::default(), Vec::new());
            for piece in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(piece);
                while let Parsed::Command(c) = parse(&mut buf, &mut st, false, 1000).unwrap() {
                    got.push(c);
                }
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(Parsed::Command(got[0].clone()), cmd(&[b"SET", b"0123456789", b"hi"]));
            assert_eq!(Parsed::Command(got[1].clone()), cmd(&[b"PING"]));
        }
        let (mut buf, mut st, mut n) = (BytesMut::new(), Partial::default(), 0);
        for &byte in input {
            buf.extend_from_slice(&[byte]);
            while let Parsed::Command(_) = parse(&mut buf, &mut st, false, 1000).unwrap() {
                n += 1;
            }
            // Consumed pieces leave the buffer: it never holds more than one argument.
            assert!(buf.len() <= 16, "{buf:?}");
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn a_repeated_command_name_is_shared() {
        let (mut buf, mut st) =
            (BytesMut::from(&b"*1\r\n$4\r\nPING\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]), Partial::default());
        let mut names = Vec::new();
        while let Ok(Parsed::Command(Value::List(c))) = &parse(&mut buf, &mut st, false, 100) {
            names.push(c[0].clone());
        }
        let [Value::Bytes(a), Value::Bytes(_), Value::Bytes(c)] = names.as_slice() else {
            panic!("{names:?}")
        };
        assert!(std::sync::Arc::ptr_eq(a, c), "the second RESP PING has its own copy");
    }

    #[test]
    fn a_list_nobody_holds_is_refilled_and_one_still_held_is_not() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n";
        let mut st = Partial::default();
        let mut next = || {
            let mut buf = BytesMut::from(&input[..]);
            match &parse(&mut buf, &mut st, false, 100) {
                Ok(Parsed::Command(Value::List(l))) => l.clone(),
                other => panic!("{other:?}"),
            }
        };
        let (first, second) = (next(), next());
        let first_ptr = Arc::as_ptr(&first);
        // The program still holds the first list: the third command gets a list of its own.
        let third = next();
        assert!(!std::ptr::eq(Arc::as_ptr(&third), first_ptr));
        assert_eq!(*first, *third);
        // Once dropped, the second command's list is refilled for the fourth.
        let second_ptr = Arc::as_ptr(&second);
        drop(second);
        let fourth = next();
        assert!(std::ptr::eq(Arc::as_ptr(&fourth), second_ptr));
        assert_eq!(*fourth, *first);
        // A command of many arguments is not kept.
        let mut big = b"*100\r\n".to_vec();
        for _ in 0..100 {
            big.extend_from_slice(b"$1\r\nx\r\n");
        }
        let mut buf = BytesMut::from(&big[..]);
        let parsed = parse(&mut buf, &mut st, false, 10_000);
        let Ok(Parsed::Command(Value::List(l))) = &parsed else { panic!() };
        assert_eq!(l.len(), 100);
        assert!(st.kept.iter().flatten().all(|k| k.capacity() <= KEEP_ARGS));
        assert!(st.args.capacity() <= KEEP_ARGS);
    }

    #[test]
    fn end_of_input_drops_an_unfinished_command() {
        for input in [&b""[..], b"*2\r\n$3\r\nGET\r\n$1", b"*2\r\n$3\r\nGET\r\n", b"*2", b"GET a"] {
            let (got, rest) = parse_all(input, true, 100);
            assert_eq!(got, vec![Ok(Parsed::End)], "{input:?}");
            assert!(rest.is_empty());
        }
        let (got, _) = parse_all(b"PING\r\n*1\r\n$4\r\nPI", true, 100);
        assert_eq!(got, vec![Ok(cmd(&[b"PING"])), Ok(Parsed::End)]);
    }

    #[test]
    fn length_lines() {
        let ok = |line: &[u8]| length_line(line, "bulk").unwrap();
        assert_eq!(ok(b"$3\r\nabc"), Some((3, 4)));
        assert_eq!(ok(b"*0\r\n"), Some((0, 4)));
        assert_eq!(ok(b"$-1\r\n"), Some((-1, 5)));
        assert_eq!(ok(b"$12\n"), Some((12, 4)));
        assert_eq!(ok(b"$999999999999999999\r\n"), Some((999_999_999_999_999_999, 21)));
        assert_eq!(ok(b"$9223372036854775807\r\n"), Some((i64::MAX, 22)));
        assert_eq!(ok(b"$12\r"), None);
        assert_eq!(ok(b"$12"), None);
        assert!(length_line(b"$\r\n", "bulk").is_err());
        assert!(length_line(b"$9223372036854775808\r\n", "bulk").is_err());
        assert!(length_line(b"$1x\r\n", "bulk").is_err());
    }

    #[test]
    fn malformed_input_is_a_protocol_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
            (b"*1\r\n$-5\r\n", "invalid bulk length -5"),
            (b"*x\r\n", "invalid multibulk length \"x\""),
            (b"*+1\r\n", "invalid multibulk length"),
            (b"*1\r\n$\r\n", "invalid bulk length \"\""),
            (b"*1\r\n$3\r\nabcde\r\n", "expected \"\\r\\n\" after a bulk string"),
            (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$00000000000000000000000000000000000000003\r\n", "no line end within 32 bytes"),
            (b"*2000000\r\n", "too many arguments (2000000; at most 1048576)"),
        ];
        for (input, want) in cases {
            let (got, _) = parse_all(input, false, 1 << 20);
            match got.last() {
                Some(Err(msg)) => assert!(msg.contains(want), "{input:?}: {msg}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn sizes_are_bounded_by_max() {
        // 4 + 4+3+2 + 4+5+2 = 24 wire bytes.
        let input = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        assert_eq!(parse_all(input, false, 24).0[0], Ok(cmd(&[b"GET", b"hello"])));
        let (got, _) = parse_all(input, false, 23);
        assert_eq!(got, vec![Err("command larger than 23 bytes".to_string())]);
        // A huge declared length fails at once, before any of its bytes arrive.
        let (got, rest) = parse_all(b"*1\r\n$1000000000\r\nabc", false, 1 << 20);
        assert_eq!(got, vec![Err("invalid bulk length".to_string())]);
        assert!(rest.len() < 32);
        // An overlong inline line.
        let long = vec![b'a'; MAX_INLINE + 1];
        let (got, _) = parse_all(&long, false, usize::MAX);
        assert!(matches!(&got[0], Err(m) if m.contains("inline command longer")), "{got:?}");
        let (got, _) = parse_all(&long[..100], false, usize::MAX);
        assert_eq!(got, vec![Ok(Parsed::More)]);
    }

    #[test]
    fn after_an_error_every_call_raises_it() {
        let mut st = Partial::default();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n"[..]);
        assert_eq!(parse(&mut buf, &mut st, false, 100), Ok(Parsed::More));
        buf.extend_from_slice(b"+oops\r\n");
        let e = parse(&mut buf, &mut st, false, 100).unwrap_err();
        // "+oops" is not taken for an inline command: the input is out of step.
        assert_eq!(parse(&mut buf, &mut st, false, 100), Err(e));
    }

    #[test]
    fn a_value_nested_past_the_limit_is_refused_whatever_its_depth() {
        let nested = |n: usize| (0..n).fold(Value::Int(1), |v, _| Value::list(vec![v]));
        assert!(encode(&nested(MAX_DEPTH)).is_ok());
        for n in [MAX_DEPTH + 1, 100_000] {
            let e = encode(&nested(n)).unwrap_err();
            assert_eq!(
                (e.kind, e.msg.to_string()),
                (atoms::BADARG, "resp_encode: nested more than 256 deep".into())
            );
        }
    }

    #[test]
    fn encodes_values() {
        let enc = |v: &Value| encode(v).map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(enc(&Value::Nil).unwrap(), "$-1\r\n");
        assert_eq!(enc(&Value::Int(-42)).unwrap(), ":-42\r\n");
        assert_eq!(enc(&Value::Int(i64::MIN)).unwrap(), ":-9223372036854775808\r\n");
        assert_eq!(enc(&Value::Bool(true)).unwrap(), ":1\r\n");
        assert_eq!(enc(&b(b"a\r\nb")).unwrap(), "$4\r\na\r\nb\r\n");
        assert_eq!(enc(&Value::str("")).unwrap(), "$0\r\n\r\n");
        assert_eq!(enc(&Value::atom("OK")).unwrap(), "+OK\r\n");
        assert_eq!(enc(&Value::Float(1.5)).unwrap(), "$3\r\n1.5\r\n");
        let err = Value::tuple(vec![Value::atom("error"), Value::str("ERR no")]);
        assert_eq!(enc(&err).unwrap(), "-ERR no\r\n");
        let list = Value::list(vec![Value::Int(1), Value::Nil, Value::list(vec![]), Value::str("x")]);
        assert_eq!(enc(&list).unwrap(), "*4\r\n:1\r\n$-1\r\n*0\r\n$1\r\nx\r\n");
        let bad = Value::tuple(vec![Value::atom("error"), Value::str("two\nlines")]);
        assert_eq!(enc(&bad).unwrap_err().kind, atoms::BADARG);
        let fun = Value::Fun(std::sync::Arc::new(vm_core::value::Closure { func: 0, env: vec![] }));
        assert_eq!(enc(&fun).unwrap_err().kind, atoms::TYPE_ERROR);
        let replies = Value::list(vec![Value::atom("OK"), Value::Int(2), b(b"v"), Value::Nil]);
        assert_eq!(encode_replies(&replies).unwrap(), b"+OK\r\n:2\r\n$1\r\nv\r\n$-1\r\n");
        assert_eq!(encode_replies(&Value::Int(1)).unwrap_err().kind, atoms::TYPE_ERROR);
        for n in [0, 1, 9, 10, 99, 100, 12345] {
            let v = Value::bytes(vec![b'x'; n]);
            assert_eq!(encode(&v).unwrap().len(), bulk_size(n), "{n}");
            assert!(encode(&v).unwrap().starts_with(format!("${n}\r\n").as_bytes()), "{n}");
        }
        for n in [0, 7, 9, 10, 42, 99, 100, 101, 999, 1000, -1, -9, -10, -100, i64::MAX] {
            assert_eq!(enc(&Value::Int(n)).unwrap(), format!(":{n}\r\n"));
        }
        let mut deep = Value::Nil;
        for _ in 0..1000 {
            deep = Value::list(vec![deep]);
        }
        assert_eq!(enc(&deep).unwrap_err().kind, atoms::BADARG);
    }
}
