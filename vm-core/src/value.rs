//! VM values.
//!
//! A [`Value`] is immutable and at most 16 bytes: scalars inline, everything else behind one `Arc`
//! so that cloning a value (a register move, a message send) is a reference-count bump. Messages
//! are therefore shared between actors, never copied.
//!
//! Two renderings exist and both are used by users:
//! - [`Value::repr`] (also `Debug`) is the *literal* form. For every value that has a literal
//!   (everything except pids, channels, resources and functions) the assembler's constant syntax
//!   parses it back to an equal value; the disassembler and the REPL rely on this.
//! - `Display` is the *print* form used by `print`: a string prints its characters, everything
//!   else prints its literal form (so strings nested in a tuple are quoted).
//!
//! Equality is structural and strict: `1 == 1.0` is false (they are different keys in a map), but
//! the ordering compares numbers numerically. Floats are ordered with `total_cmp`, so every value
//! has a place in the total order used by maps and `cmp`: nil < bool < numbers < atom < str <
//! bytes < tuple < list < map < pid < chan < resource < fun.

use crate::atom::{Atom, atoms};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// An actor identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid(pub u64);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

/// A reference to a runtime-owned object (a channel or an OS resource).
///
/// The runtime keeps the object in its own table under `id`; the handle is what actors hold.
/// Because a handle is an `Arc`, the runtime can tell when the last reference is gone: an optional
/// drop hook runs then (channels use it to be freed when unreachable). A handle serialises as its
/// id; a restored handle has no hook until the runtime attaches one.
#[derive(Clone, Serialize, Deserialize)]
pub struct Handle(Arc<HandleInner>);

/// Called with the handle's id when the last reference to it is dropped.
pub type DropHook = Box<dyn Fn(u64) + Send + Sync>;

/// The runtime object behind a handle, opaque to vm-core.
pub type Payload = Arc<dyn std::any::Any + Send + Sync>;

/// Called with the watch's owner and the handle's id when a watched handle's reference count
/// falls to the watch's threshold. Shared (an `Arc`), so that setting a watch, which the runtime
/// does every time an actor blocks on a channel, allocates nothing.
pub type WatchHook = Arc<dyn Fn(u64, u64) + Send + Sync>;

#[derive(Serialize, Deserialize)]
struct HandleInner {
    id: u64,
    #[serde(skip)]
    payload: Option<Payload>,
    #[serde(skip)]
    on_drop: Option<DropHook>,
    /// Set while `watches` is non-empty, so unwatched handles pay one relaxed load per drop.
    #[serde(skip)]
    watched: std::sync::atomic::AtomicBool,
    /// `(owner, threshold, hook)`: call `hook` when the count of handles falls to `threshold`.
    #[serde(skip)]
    watches: std::sync::Mutex<Vec<(u64, usize, WatchHook)>>,
}

/// Watches fire from here: a clone of a handle going away may leave only the references its
/// watchers hold themselves (the runtime uses this to find channels no one else can reach).
impl Drop for Handle {
    fn drop(&mut self) {
        if !self.0.watched.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let remaining = Arc::strong_count(&self.0) - 1;
        let watches = self.0.watches.lock().unwrap_or_else(|p| p.into_inner());
        for (owner, threshold, hook) in watches.iter() {
            if remaining == *threshold {
                hook(*owner, self.0.id);
            }
        }
    }
}

impl HandleInner {
    fn new(id: u64, payload: Option<Payload>, on_drop: Option<DropHook>) -> HandleInner {
        HandleInner { id, payload, on_drop, watched: Default::default(), watches: Default::default() }
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        if let Some(hook) = &self.on_drop {
            hook(self.id);
        }
    }
}

impl Handle {
    /// A handle with no drop hook.
    pub fn new(id: u64) -> Handle {
        Handle(Arc::new(HandleInner::new(id, None, None)))
    }

    /// A handle that calls `hook(id)` when its last clone is dropped.
    pub fn with_drop_hook(id: u64, hook: DropHook) -> Handle {
        Handle(Arc::new(HandleInner::new(id, None, Some(hook))))
    }

    /// A handle carrying the runtime's object itself, so using it needs no table lookup. The
    /// object lives as long as some handle (or the runtime) holds it.
    pub fn with_payload(id: u64, payload: Payload) -> Handle {
        Handle(Arc::new(HandleInner::new(id, Some(payload), None)))
    }

    /// The runtime object, if this handle carries one (a handle restored from a snapshot does
    /// not until the runtime re-attaches it).
    pub fn payload(&self) -> Option<&Payload> {
        self.0.payload.as_ref()
    }

    /// The runtime's id for the object.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// How many clones of this handle exist.
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Calls `hook(owner, id)` when dropping a clone leaves exactly `threshold` clones. `owner`
    /// identifies the watch for [`Handle::unwatch`]. Returns the count at the moment the watch was set, so
    /// the caller can check whether the threshold was already reached (set first, then check:
    /// a drop in between cannot be missed).
    pub fn watch(&self, owner: u64, threshold: usize, hook: WatchHook) -> usize {
        let mut w = self.0.watches.lock().unwrap_or_else(|p| p.into_inner());
        w.push((owner, threshold, hook));
        self.0.watched.store(true, std::sync::atomic::Ordering::Release);
        Arc::strong_count(&self.0)
    }

    /// Removes the watches set by `owner`.
    pub fn unwatch(&self, owner: u64) {
        let mut w = self.0.watches.lock().unwrap_or_else(|p| p.into_inner());
        w.retain(|(o, _, _)| *o != owner);
        if w.is_empty() {
            self.0.watched.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Handles are equal when they name the same runtime object.
impl PartialEq for Handle {
    fn eq(&self, other: &Handle) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Handle {}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.id)
    }
}

/// A function value: a function of the loaded module plus captured values that are passed before
/// the call's own arguments (so a closure of `f/3` capturing one value is called with two).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Closure {
    /// Index of the function in the module.
    pub func: u32,
    /// Captured values, prepended to the arguments of each call.
    pub env: Vec<Value>,
}

/// A VM value. See the module docs for equality, ordering and rendering.
#[derive(Clone, Default, Serialize, Deserialize)]
pub enum Value {
    /// The absent value; falsy.
    #[default]
    Nil,
    /// `true` or `false`; `false` is falsy.
    Bool(bool),
    /// A 64-bit signed integer; arithmetic overflow raises.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// An interned name.
    Atom(Atom),
    /// A UTF-8 string.
    Str(Arc<String>),
    /// A byte string.
    Bytes(Arc<bytes::Bytes>),
    /// A fixed-size tuple.
    Tuple(Arc<Vec<Value>>),
    /// A list (an immutable vector; appending to an unshared list is in place).
    List(Arc<Vec<Value>>),
    /// An ordered map (serialised as a sequence of pairs, so any format can hold it).
    Map(#[serde(with = "map_as_pairs")] Arc<BTreeMap<Value, Value>>),
    /// An actor.
    Pid(Pid),
    /// A channel.
    Chan(Handle),
    /// An OS resource (socket, file, listener).
    Res(Handle),
    /// A function value.
    Fun(Arc<Closure>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(Arc::new(s.into()))
    }

    /// A bytes value.
    pub fn bytes(b: impl Into<bytes::Bytes>) -> Value {
        Value::Bytes(Arc::new(b.into()))
    }

    /// A tuple value.
    pub fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Arc::new(items))
    }

    /// A list value.
    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::new(items))
    }

    /// An atom value.
    pub fn atom(name: &str) -> Value {
        Value::Atom(Atom::new(name))
    }

    /// `false` and `nil` are falsy; everything else is truthy.
    #[inline]
    pub fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// The type name `typeof` returns.
    pub fn type_atom(&self) -> Atom {
        match self {
            Value::Nil => atoms::NIL,
            Value::Bool(_) => atoms::BOOL,
            Value::Int(_) => atoms::INT,
            Value::Float(_) => atoms::FLOAT,
            Value::Atom(_) => atoms::ATOM,
            Value::Str(_) => atoms::STR,
            Value::Bytes(_) => atoms::BYTES,
            Value::Tuple(_) => atoms::TUPLE,
            Value::List(_) => atoms::LIST,
            Value::Map(_) => atoms::MAP,
            Value::Pid(_) => atoms::PID,
            Value::Chan(_) => atoms::CHAN,
            Value::Res(_) => atoms::RESOURCE,
            Value::Fun(_) => atoms::FUN,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Nil => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Atom(_) => 3,
            Value::Str(_) => 4,
            Value::Bytes(_) => 5,
            Value::Tuple(_) => 6,
            Value::List(_) => 7,
            Value::Map(_) => 8,
            Value::Pid(_) => 9,
            Value::Chan(_) => 10,
            Value::Res(_) => 11,
            Value::Fun(_) => 12,
        }
    }

    /// The literal form (see the module docs).
    pub fn repr(&self) -> String {
        let mut s = String::new();
        write_repr(&mut s, self).expect("writing to a String cannot fail");
        s
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b) == Ordering::Equal,
            (Value::Atom(a), Value::Atom(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Tuple(a), Value::Tuple(b)) | (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Pid(a), Value::Pid(b)) => a == b,
            (Value::Chan(a), Value::Chan(b)) | (Value::Res(a), Value::Res(b)) => a.id() == b.id(),
            (Value::Fun(a), Value::Fun(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Nil, Value::Nil) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            // Mixed numbers compare numerically; an int sorts before an equal float so that the
            // order stays consistent with strict equality.
            (Value::Int(a), Value::Float(b)) => (*a as f64).total_cmp(b).then(Ordering::Less),
            (Value::Float(a), Value::Int(b)) => a.total_cmp(&(*b as f64)).then(Ordering::Greater),
            (Value::Atom(a), Value::Atom(b)) => a.cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Tuple(a), Value::Tuple(b)) | (Value::List(a), Value::List(b)) => a.cmp(b),
            (Value::Map(a), Value::Map(b)) => a.cmp(b),
            (Value::Pid(a), Value::Pid(b)) => a.cmp(b),
            (Value::Chan(a), Value::Chan(b)) | (Value::Res(a), Value::Res(b)) => a.id().cmp(&b.id()),
            (Value::Fun(a), Value::Fun(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Hashes a string's or bytes value's data as one write: a word holding the kind (`rank`) and
/// the length (so the encoding stays prefix-free, as `[u8]`'s own hash is) followed by the data,
/// copied together when short. Shared tables and maps hash mostly such keys, and with SipHash
/// every `write` call has a fixed cost: the kind, the length and the data as three writes took
/// about 370 instructions for a 16-byte key.
fn hash_data<H: Hasher>(h: &mut H, rank: u8, data: &[u8]) {
    const SHORT: usize = 56;
    let head = ((data.len() as u64) << 8 | u64::from(rank)).to_le_bytes();
    if data.len() <= SHORT {
        let mut buf = [0u8; 8 + SHORT];
        buf[..8].copy_from_slice(&head);
        buf[8..8 + data.len()].copy_from_slice(data);
        h.write(&buf[..8 + data.len()]);
    } else {
        h.write(&head);
        h.write(data);
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Str(s) => return hash_data(h, self.rank(), s.as_bytes()),
            Value::Bytes(b) => return hash_data(h, self.rank(), b),
            _ => {}
        }
        self.rank().hash(h);
        match self {
            Value::Nil | Value::Str(_) | Value::Bytes(_) => {}
            Value::Bool(b) => b.hash(h),
            Value::Int(i) => i.hash(h),
            Value::Float(f) => f.to_bits().hash(h),
            Value::Atom(a) => a.hash(h),
            Value::Tuple(t) | Value::List(t) => t.hash(h),
            Value::Map(m) => m.hash(h),
            Value::Pid(p) => p.hash(h),
            Value::Chan(c) | Value::Res(c) => c.id().hash(h),
            Value::Fun(f) => f.hash(h),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_repr(f, self)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            other => write_repr(f, other),
        }
    }
}

mod map_as_pairs {
    use super::Value;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    pub(super) fn serialize<S: Serializer>(m: &Arc<BTreeMap<Value, Value>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<BTreeMap<Value, Value>>, D::Error> {
        let pairs: Vec<(Value, Value)> = Vec::deserialize(d)?;
        Ok(Arc::new(pairs.into_iter().collect()))
    }
}

/// Selective-receive pattern matching: a pattern matches a value equal to it; the atom `:_`
/// matches anything; a tuple (or list) pattern matches a tuple (or list) of the same length whose
/// elements match element by element. So `{:reply, :_, :_}` matches any three-element tuple
/// tagged `:reply`.
pub fn matches(pattern: &Value, v: &Value) -> bool {
    match (pattern, v) {
        (Value::Atom(a), _) if *a == atoms::WILDCARD => true,
        (Value::Tuple(p), Value::Tuple(t)) | (Value::List(p), Value::List(t)) => {
            p.len() == t.len() && p.iter().zip(t.iter()).all(|(p, x)| matches(p, x))
        }
        _ => pattern == v,
    }
}

/// True when `name` can be written as a bare atom (`:name`) rather than a quoted one.
pub fn is_bare_atom(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Writes `s` as a double-quoted string literal with the assembler's escapes.
pub fn write_str_literal(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\0' => out.write_str("\\0")?,
            c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Writes `b` as a bytes literal `b"..."`.
pub fn write_bytes_literal(out: &mut impl fmt::Write, b: &[u8]) -> fmt::Result {
    out.write_str("b\"")?;
    for &c in b {
        match c {
            b'"' => out.write_str("\\\"")?,
            b'\\' => out.write_str("\\\\")?,
            b'\n' => out.write_str("\\n")?,
            b'\r' => out.write_str("\\r")?,
            b'\t' => out.write_str("\\t")?,
            0x20..=0x7e => out.write_char(c as char)?,
            _ => write!(out, "\\x{c:02x}")?,
        }
    }
    out.write_char('"')
}

/// Writes a float so that it reads back as a float (always with `.`, `e`, or a keyword).
pub fn write_float(out: &mut impl fmt::Write, x: f64) -> fmt::Result {
    if x.is_nan() {
        out.write_str("nan")
    } else if x.is_infinite() {
        out.write_str(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        let s = format!("{x:?}");
        if s.contains(['.', 'e', 'E']) { out.write_str(&s) } else { write!(out, "{s}.0") }
    }
}

fn write_seq(out: &mut impl fmt::Write, items: &[Value], open: char, close: char) -> fmt::Result {
    out.write_char(open)?;
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        write_repr(out, v)?;
    }
    out.write_char(close)
}

fn write_repr(out: &mut impl fmt::Write, v: &Value) -> fmt::Result {
    match v {
        Value::Nil => out.write_str("nil"),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(x) => write_float(out, *x),
        Value::Atom(a) => {
            let name = a.name();
            if is_bare_atom(&name) {
                write!(out, ":{name}")
            } else {
                out.write_char(':')?;
                write_str_literal(out, &name)
            }
        }
        Value::Str(s) => write_str_literal(out, s),
        Value::Bytes(b) => write_bytes_literal(out, b),
        Value::Tuple(t) => write_seq(out, t, '{', '}'),
        Value::List(l) => write_seq(out, l, '[', ']'),
        Value::Map(m) => {
            out.write_str("%{")?;
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write_repr(out, k)?;
                out.write_str(" => ")?;
                write_repr(out, v)?;
            }
            out.write_char('}')
        }
        Value::Pid(p) => write!(out, "{p}"),
        Value::Chan(h) => write!(out, "#chan<{}>", h.id()),
        Value::Res(h) => write!(out, "#res<{}>", h.id()),
        Value::Fun(c) => write!(out, "#fun<{}/{}>", c.func, c.env.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_at_most_16_bytes() {
        assert!(std::mem::size_of::<Value>() <= 16, "{}", std::mem::size_of::<Value>());
    }

    #[test]
    fn strings_and_bytes_hash_by_content_kind_and_length() {
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        let h = |v: &Value| state.hash_one(v);
        for n in [0, 1, 7, 8, 16, 55, 56, 57, 200] {
            let data = vec![b'k'; n];
            // Equal values hash equally (separately allocated, short and long alike)...
            assert_eq!(h(&Value::bytes(data.clone())), h(&Value::bytes(data.clone())), "{n}");
            let text = String::from_utf8(data.clone()).unwrap();
            assert_eq!(h(&Value::str(text.clone())), h(&Value::str(text.clone())), "{n}");
            // ... and a string and bytes with the same content are different keys.
            assert_ne!(h(&Value::str(text)), h(&Value::bytes(data)), "{n}");
        }
        // The length is part of the hash, so splitting data differently changes it.
        let pair = |a: &str, b: &str| Value::tuple(vec![Value::str(a), Value::str(b)]);
        assert_ne!(h(&pair("ab", "c")), h(&pair("a", "bc")));
        assert_eq!(h(&pair("ab", "c")), h(&pair("ab", "c")));
    }

    #[test]
    fn print_and_literal_forms() {
        let v = Value::tuple(vec![
            Value::atom("ok"),
            Value::str("a\"b\n"),
            Value::Float(2.0),
            Value::list(vec![Value::Int(-1), Value::Nil]),
            Value::bytes(&b"\x00A"[..]),
            Value::atom("with space"),
        ]);
        assert_eq!(v.repr(), r#"{:ok, "a\"b\n", 2.0, [-1, nil], b"\x00A", :"with space"}"#);
        assert_eq!(Value::str("plain").to_string(), "plain");
    }

    #[test]
    fn equality_is_strict_but_order_is_numeric() {
        assert_ne!(Value::Int(1), Value::Float(1.0));
        assert!(Value::Int(1) < Value::Float(1.5));
        assert!(Value::Float(0.5) < Value::Int(1));
        assert!(Value::Int(1) < Value::Float(1.0));
        assert!(Value::Nil < Value::Bool(false));
        assert!(Value::atom("zzz") < Value::str("a"));
    }

    #[test]
    fn serde_round_trip_keeps_structure() {
        let mut m = BTreeMap::new();
        m.insert(Value::atom("k"), Value::list(vec![Value::Int(7), Value::str("s")]));
        let v = Value::tuple(vec![Value::Map(Arc::new(m)), Value::Pid(Pid(3)), Value::Float(1.5)]);
        let json = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn patterns_match_by_shape_with_wildcards() {
        let msg = Value::tuple(vec![Value::atom("reply"), Value::Int(7), Value::str("x")]);
        let any = Value::atom("_");
        assert!(matches(&any, &msg));
        assert!(matches(&Value::tuple(vec![Value::atom("reply"), any.clone(), any.clone()]), &msg));
        assert!(!matches(&Value::tuple(vec![Value::atom("other"), any.clone(), any.clone()]), &msg));
        assert!(!matches(&Value::tuple(vec![Value::atom("reply"), any.clone()]), &msg));
        assert!(matches(&Value::Int(7), &Value::Int(7)));
        assert!(!matches(&Value::Int(7), &Value::Float(7.0)));
    }

    #[test]
    fn a_watch_fires_when_only_the_watchers_references_remain() {
        use std::sync::atomic::{AtomicUsize, Ordering as O};
        let fired = Arc::new(AtomicUsize::new(0));
        let f2 = fired.clone();
        let mine = Handle::new(5);
        let theirs = mine.clone();
        let nested = Value::list(vec![Value::tuple(vec![Value::Chan(theirs.clone())])]);
        assert_eq!(
            mine.watch(
                1,
                1,
                Arc::new(move |owner, id| {
                    assert_eq!((owner, id), (1, 5));
                    f2.fetch_add(1, O::SeqCst);
                })
            ),
            3
        );
        drop(nested);
        assert_eq!(fired.load(O::SeqCst), 0, "two clones left");
        drop(theirs);
        assert_eq!(fired.load(O::SeqCst), 1, "only the watcher's own clone is left");
        mine.unwatch(1);
    }

    #[test]
    fn drop_hook_runs_when_last_handle_goes() {
        use std::sync::atomic::{AtomicU64, Ordering as O};
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let h = Handle::with_drop_hook(42, Box::new(move |id| s2.store(id, O::SeqCst)));
        let v1 = Value::Chan(h.clone());
        drop(h);
        assert_eq!(seen.load(O::SeqCst), 0);
        drop(v1);
        assert_eq!(seen.load(O::SeqCst), 42);
    }
}
