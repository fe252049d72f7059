//! Interned atoms.
//!
//! An atom is a name compared by identity. Atoms are interned in one process-wide table so that an
//! [`Atom`] is a `u32` and comparing two atoms is an integer compare. The table only grows; that is
//! the same trade BEAM makes, and the assembler and runtime only intern names that appear in
//! programs or that programs build explicitly.
//!
//! Invariant: the well-known atoms listed in [`WELL_KNOWN`] are interned first, in that order, so
//! their indices are compile-time constants (`atoms::OK` and friends).
//!
//! Serialisation writes the atom's *name*, never its index, so a snapshot or a `.vbc` file is
//! independent of the order in which a process happened to intern atoms.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

/// An interned name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Atom(u32);

struct Table {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

fn table() -> &'static RwLock<Table> {
    static TABLE: OnceLock<RwLock<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table { names: Vec::new(), index: HashMap::new() };
        for name in WELL_KNOWN {
            let n: Arc<str> = Arc::from(*name);
            t.index.insert(n.clone(), t.names.len() as u32);
            t.names.push(n);
        }
        RwLock::new(t)
    })
}

impl Atom {
    /// Interns `name` and returns its atom.
    pub fn new(name: &str) -> Atom {
        if let Some(&i) = table().read().expect("atom table poisoned").index.get(name) {
            return Atom(i);
        }
        let mut t = table().write().expect("atom table poisoned");
        if let Some(&i) = t.index.get(name) {
            return Atom(i);
        }
        let n: Arc<str> = Arc::from(name);
        let i = t.names.len() as u32;
        t.index.insert(n.clone(), i);
        t.names.push(n);
        Atom(i)
    }

    /// The atom's name.
    pub fn name(self) -> Arc<str> {
        table().read().expect("atom table poisoned").names[self.0 as usize].clone()
    }

    /// The interned index (stable only within one process).
    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{}", self.name())
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Atoms order by name, so that maps keyed by atoms print in the same order in every process.
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.0 == other.0 {
            return std::cmp::Ordering::Equal;
        }
        self.name().cmp(&other.name())
    }
}

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Atom, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Atom::new(&s))
    }
}

macro_rules! well_known {
    ($($konst:ident = $name:literal),* $(,)?) => {
        /// Names interned at start-up, in index order.
        pub const WELL_KNOWN: &[&str] = &[$($name),*];
        /// Well-known atoms as constants.
        #[allow(missing_docs)]
        pub mod atoms {
            use super::Atom;
            well_known!(@consts 0u32; $($konst)*);
        }
    };
    (@consts $i:expr; $konst:ident $($rest:ident)*) => {
        pub const $konst: Atom = Atom($i);
        well_known!(@consts $i + 1; $($rest)*);
    };
    (@consts $i:expr;) => {};
}

well_known! {
    OK = "ok",
    ERROR = "error",
    TIMEOUT = "timeout",
    NORMAL = "normal",
    EXCEPTION = "exception",
    // Exception kinds raised by the VM itself.
    TYPE_ERROR = "type_error",
    BADARG = "badarg",
    OVERFLOW = "overflow",
    DIV_BY_ZERO = "div_by_zero",
    INDEX = "index",
    NOT_FOUND = "not_found",
    BADARITY = "badarity",
    STACK_OVERFLOW = "stack_overflow",
    LIMIT = "limit",
    NOPROC = "noproc",
    INTERRUPT = "interrupt",
    KILLED = "killed",
    // Type names returned by `typeof`.
    NIL = "nil",
    BOOL = "bool",
    INT = "int",
    FLOAT = "float",
    ATOM = "atom",
    STR = "str",
    BYTES = "bytes",
    TUPLE = "tuple",
    LIST = "list",
    MAP = "map",
    PID = "pid",
    CHAN = "chan",
    RESOURCE = "resource",
    FUN = "fun",
    // Actor signals and patterns.
    WILDCARD = "_",
    EXIT = "EXIT",
    DOWN = "DOWN",
    KILL = "kill",
    UNSUPPORTED = "unsupported",
    PANIC = "panic",
    REF = "ref",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_atoms_have_fixed_indices() {
        assert_eq!(Atom::new("ok"), atoms::OK);
        assert_eq!(Atom::new("fun"), atoms::FUN);
        assert_eq!(&*atoms::DIV_BY_ZERO.name(), "div_by_zero");
    }

    #[test]
    fn interning_is_idempotent_and_serialises_by_name() {
        let a = Atom::new("some_fresh_atom_name");
        assert_eq!(a, Atom::new("some_fresh_atom_name"));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"some_fresh_atom_name\"");
        let back: Atom = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}
