//! Exceptions: a kind (an atom a program can test) and a message (any value, usually a string).
//!
//! In bytecode an exception is the tuple `{kind, msg}`: `try` stores that tuple in its register,
//! `tget` takes it apart, `rethrow` raises it again. In Rust it is [`Exception`].

use crate::atom::{Atom, atoms};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An exception raised by bytecode, by the VM, or by the runtime (I/O errors, interrupts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// What went wrong, testable by programs (`:div_by_zero`, `:timeout`, `:permission`, ...).
    pub kind: Atom,
    /// Details for people.
    pub msg: Value,
}

impl Exception {
    /// An exception with a string message.
    pub fn new(kind: Atom, msg: impl Into<String>) -> Exception {
        Exception { kind, msg: Value::str(msg) }
    }

    /// `:type_error` with a message.
    pub fn type_error(msg: impl Into<String>) -> Exception {
        Exception::new(atoms::TYPE_ERROR, msg)
    }

    /// `:badarg` with a message.
    pub fn badarg(msg: impl Into<String>) -> Exception {
        Exception::new(atoms::BADARG, msg)
    }

    /// The `{kind, msg}` tuple bytecode sees.
    pub fn to_value(&self) -> Value {
        Value::tuple(vec![Value::Atom(self.kind), self.msg.clone()])
    }

    /// Reads a `{kind, msg}` tuple back; `None` if `v` has another shape.
    pub fn from_value(v: &Value) -> Option<Exception> {
        match v {
            Value::Tuple(t) if t.len() == 2 => match &t[0] {
                Value::Atom(kind) => Some(Exception { kind: *kind, msg: t[1].clone() }),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A message can be any value a program raised, however large: a report shows an excerpt.
        write!(f, "{}: {}", self.kind, self.msg.excerpt(crate::value::EXCERPT_BYTES))
    }
}
