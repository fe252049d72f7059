//! Operations on values for `slow`: arithmetic off the int fast path, bit operations,
//! conversions, tuples, lists, strings and bytes.
//!
//! 1. Pure functions of their operands: they read values and return a new value or an
//!    [`Exception`] (a `:type_error`, `:badarg`, `:index`, `:overflow` or `:div_by_zero` that the
//!    program can catch); none touches the registers, the frames or the host.
//! 2. An update of a collection (`set_element`, `concat`) takes the value by ownership, so an
//!    unshared collection is updated in place (see `frame::take_or_clone`).
//! 3. Out of line or cold, so that none of their code or drop glue lands in the loop.

use crate::atom::atoms;
use crate::exception::Exception;
use crate::value::Value;
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Arith {
    fn name(self) -> &'static str {
        match self {
            Arith::Add => "add",
            Arith::Sub => "sub",
            Arith::Mul => "mul",
            Arith::Div => "div",
            Arith::Rem => "rem",
        }
    }
}

/// The exception for a failed checked int operation: a zero divisor, or overflow.
#[cold]
pub(super) fn int_failure(op: Arith, divisor: i64) -> Exception {
    match op {
        Arith::Div | Arith::Rem if divisor == 0 => {
            Exception::new(atoms::DIV_BY_ZERO, format!("{}: division by zero", op.name()))
        }
        _ => Exception::new(atoms::OVERFLOW, format!("{}: integer overflow", op.name())),
    }
}

/// Arithmetic on anything but two ints.
#[cold]
pub(super) fn arith(op: Arith, a: &Value, b: &Value) -> Result<Value, Exception> {
    let (x, y) = match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let r = match op {
                Arith::Add => x.checked_add(*y),
                Arith::Sub => x.checked_sub(*y),
                Arith::Mul => x.checked_mul(*y),
                Arith::Div => x.checked_div(*y),
                Arith::Rem => x.checked_rem(*y),
            };
            return r.map(Value::Int).ok_or_else(|| int_failure(op, *y));
        }
        (Value::Float(x), Value::Float(y)) => (*x, *y),
        (Value::Int(x), Value::Float(y)) => (*x as f64, *y),
        (Value::Float(x), Value::Int(y)) => (*x, *y as f64),
        _ => {
            return Err(Exception::type_error(format!(
                "{}: expected numbers, got {} and {}",
                op.name(),
                a.type_atom(),
                b.type_atom()
            )));
        }
    };
    Ok(Value::Float(match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div => x / y,
        Arith::Rem => x % y,
    }))
}

#[inline(never)]
pub(super) fn bitop(
    name: &str,
    a: &Value,
    b: &Value,
    f: impl Fn(i64, i64) -> Result<i64, Exception>,
) -> Result<Value, Exception> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => f(*x, *y).map(Value::Int),
        _ => Err(Exception::type_error(format!(
            "{name}: expected ints, got {} and {}",
            a.type_atom(),
            b.type_atom()
        ))),
    }
}

pub(super) fn shift_amount(y: i64) -> Result<u32, Exception> {
    if (0..64).contains(&y) {
        Ok(y as u32)
    } else {
        Err(Exception::badarg(format!("shift amount {y} is not in 0..64")))
    }
}

#[cold]
pub(super) fn type_err(op: &str, expected: &str, got: &Value) -> Exception {
    Exception::type_error(format!("{op}: expected {expected}, got {}", got.type_atom()))
}

#[inline(never)]
pub(super) fn to_float(a: &Value) -> Result<Value, Exception> {
    match a {
        Value::Int(x) => Ok(Value::Float(*x as f64)),
        Value::Float(x) => Ok(Value::Float(*x)),
        Value::Str(s) => s
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| Exception::badarg(format!("tofloat: {:?} is not a number", s.as_str()))),
        x => Err(type_err("tofloat", "a number or string", x)),
    }
}

#[inline(never)]
pub(super) fn to_int(a: &Value) -> Result<Value, Exception> {
    let parse = |s: &str| {
        s.parse::<i64>()
            .map(Value::Int)
            .map_err(|_| Exception::badarg(format!("toint: {s:?} is not an integer")))
    };
    match a {
        Value::Int(x) => Ok(Value::Int(*x)),
        // 2^63 is exactly representable, so the range check is exact.
        Value::Float(x)
            if x.is_finite() && *x >= -9_223_372_036_854_775_808.0 && *x < 9_223_372_036_854_775_808.0 =>
        {
            Ok(Value::Int(*x as i64))
        }
        Value::Float(x) => Err(Exception::badarg(format!("toint: {x} has no int value"))),
        Value::Str(s) => parse(s),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => parse(s),
            Err(_) => Err(Exception::badarg("toint: bytes are not UTF-8 digits")),
        },
        x => Err(type_err("toint", "a number, string or bytes", x)),
    }
}

pub(super) fn index_err(i: i64, len: usize) -> Exception {
    Exception::new(atoms::INDEX, format!("index {i} out of range for length {len}"))
}

/// Element `i` of a tuple or list; negative indices count from the end when `negative` allows.
#[inline(never)]
pub(super) fn element(c: &Value, i: i64, negative: bool) -> Result<Value, Exception> {
    let items = match c {
        Value::Tuple(t) | Value::List(t) => t,
        x => return Err(type_err("index", "a tuple or list", x)),
    };
    let len = items.len();
    let j = if i < 0 && negative { i + len as i64 } else { i };
    if j < 0 || j as usize >= len {
        return Err(index_err(i, len));
    }
    Ok(items[j as usize].clone())
}

#[inline(never)]
pub(super) fn set_element(mut c: Value, i: &Value, v: Value) -> Result<Value, Exception> {
    let Value::Int(i) = *i else {
        return Err(type_err("lset", "an int index", i));
    };
    let items = match &mut c {
        Value::Tuple(t) | Value::List(t) => t,
        x => return Err(type_err("lset", "a tuple or list", x)),
    };
    let len = items.len();
    let j = if i < 0 { i + len as i64 } else { i };
    if j < 0 || j as usize >= len {
        return Err(index_err(i, len));
    }
    Arc::make_mut(items)[j as usize] = v;
    Ok(c)
}

#[inline(never)]
pub(super) fn length(a: &Value) -> Result<Value, Exception> {
    let n = match a {
        Value::Tuple(t) | Value::List(t) => t.len(),
        Value::Map(m) => m.len(),
        Value::Str(s) => s.len(),
        Value::Bytes(b) => b.len(),
        x => return Err(type_err("len", "a collection, string or bytes", x)),
    };
    Ok(Value::Int(n as i64))
}

#[inline(never)]
pub(super) fn concat(mut a: Value, b: &Value) -> Result<Value, Exception> {
    match (&mut a, b) {
        (Value::Str(x), Value::Str(y)) => {
            Arc::make_mut(x).push_str(y);
            Ok(a)
        }
        (Value::Bytes(x), Value::Bytes(y)) => {
            let mut out = Vec::with_capacity(x.len() + y.len());
            out.extend_from_slice(x);
            out.extend_from_slice(y);
            Ok(Value::bytes(out))
        }
        (Value::List(x), Value::List(y)) => {
            Arc::make_mut(x).extend(y.iter().cloned());
            Ok(a)
        }
        (x, y) => Err(Exception::type_error(format!(
            "concat: expected two strings, two bytes or two lists, got {} and {}",
            x.type_atom(),
            y.type_atom()
        ))),
    }
}

#[inline(never)]
pub(super) fn slice(s: &Value, from: &Value, to: &Value) -> Result<Value, Exception> {
    let (Value::Int(from), Value::Int(to)) = (from, to) else {
        return Err(Exception::type_error("slice: bounds must be ints"));
    };
    let (from, to) = (*from, *to);
    let bounds = |len: usize| -> Result<(usize, usize), Exception> {
        if from < 0 || to < from || to as u64 > len as u64 {
            Err(Exception::new(atoms::INDEX, format!("slice {from}..{to} out of range for length {len}")))
        } else {
            Ok((from as usize, to as usize))
        }
    };
    match s {
        Value::Str(st) => {
            let (a, b) = bounds(st.len())?;
            st.get(a..b).map(Value::str).ok_or_else(|| {
                Exception::new(atoms::INDEX, format!("slice {a}..{b} splits a UTF-8 character"))
            })
        }
        Value::Bytes(bs) => {
            let (a, b) = bounds(bs.len())?;
            Ok(Value::Bytes(Arc::new(bs.slice(a..b))))
        }
        Value::List(l) => {
            let (a, b) = bounds(l.len())?;
            Ok(Value::list(l[a..b].to_vec()))
        }
        x => Err(type_err("slice", "a string, bytes or list", x)),
    }
}

/// The bytes of a string or bytes value, for text operations that work on both.
pub(super) fn text_bytes<'a>(op: &str, v: &'a Value) -> Result<&'a [u8], Exception> {
    match v {
        Value::Str(s) => Ok(s.as_bytes()),
        Value::Bytes(b) => Ok(b),
        x => Err(type_err(op, "a string or bytes", x)),
    }
}

pub(super) fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > hay.len() {
        return None;
    }
    let first = needle[0];
    (0..=hay.len() - needle.len()).find(|&i| hay[i] == first && &hay[i..i + needle.len()] == needle)
}

#[inline(never)]
pub(super) fn find(hay: &Value, needle: &Value) -> Result<Value, Exception> {
    let h = text_bytes("find", hay)?;
    let n = text_bytes("find", needle)?;
    Ok(Value::Int(find_bytes(h, n).map_or(-1, |i| i as i64)))
}

#[inline(never)]
pub(super) fn split(s: &Value, sep: &Value) -> Result<Value, Exception> {
    let sep_b = text_bytes("split", sep)?;
    if sep_b.is_empty() {
        return Err(Exception::badarg("split: empty separator"));
    }
    match s {
        Value::Str(st) => {
            let sep =
                std::str::from_utf8(sep_b).map_err(|_| Exception::badarg("split: separator is not UTF-8"))?;
            Ok(Value::list(st.split(sep).map(Value::str).collect()))
        }
        Value::Bytes(bs) => {
            let mut parts = Vec::new();
            let mut rest = 0;
            while let Some(i) = find_bytes(&bs[rest..], sep_b) {
                parts.push(Value::Bytes(Arc::new(bs.slice(rest..rest + i))));
                rest += i + sep_b.len();
            }
            parts.push(Value::Bytes(Arc::new(bs.slice(rest..))));
            Ok(Value::list(parts))
        }
        x => Err(type_err("split", "a string or bytes", x)),
    }
}

/// Applies an ASCII-preserving byte transformation to a string or bytes value. The result of
/// trimming or changing the case of ASCII letters in valid UTF-8 is still valid UTF-8.
#[inline(never)]
pub(super) fn map_text(op: &str, v: &Value, f: impl Fn(&[u8]) -> Vec<u8>) -> Result<Value, Exception> {
    match v {
        Value::Str(s) => Ok(Value::str(String::from_utf8(f(s.as_bytes())).unwrap_or_default())),
        Value::Bytes(b) => Ok(Value::bytes(f(b))),
        x => Err(type_err(op, "a string or bytes", x)),
    }
}

#[inline(never)]
pub(super) fn byte_at(s: &Value, i: &Value) -> Result<Value, Exception> {
    let b = text_bytes("byte", s)?;
    let Value::Int(i) = *i else {
        return Err(type_err("byte", "an int index", i));
    };
    if i < 0 || i as u64 >= b.len() as u64 {
        return Err(index_err(i, b.len()));
    }
    Ok(Value::Int(b[i as usize] as i64))
}
