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
//! bytes < tuple < list < map < pid < ref < chan < resource < fun.
//!
//! # Nesting depth
//!
//! A program can nest values as deep as its memory allows (`list r1, r1, 1` in a loop), so no
//! operation here recurses on the Rust stack once per level of nesting:
//! 1. Dropping ([`Value`]'s `Drop`), equality, ordering, hashing, the literal and print forms and
//!    [`matches`] walk nested values with an explicit work list on the heap, so each works at
//!    any depth and its stack use is constant.
//! 2. A work list holds one entry per *unfinished* level (an iterator over what is left of
//!    that container), and a container whose last child is being visited is not kept, so
//!    walking a flat or right-nested value (`[1, [2, [3]]]`) allocates nothing.
//! 3. Dropping only unlinks what this reference owns alone: the children of a container whose
//!    last reference is going are moved onto the work list before the container is freed;
//!    a container still shared elsewhere is only released (its count decremented).
//! 4. [`Value::children`] is the one description of what a value holds directly; code outside
//!    this module that walks values (snapshots, tables, resources, the wire format) uses it
//!    with a work list of its own.

use crate::atom::{Atom, atoms};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// An actor identifier.
///
/// 1. The low [`Pid::SERIAL_BITS`] bits are the serial the owning node gave the actor; the
///    high 16 bits are a *node slot* in the VM's table of node incarnations (vm-dist's
///    `NodeTable`), 0 for this VM's own actors. Local pids are therefore plain serials and every
///    local path stays as it was.
/// 2. A local pid prints `<7>`; a pid of another node prints `<b.7>`, with the node's name from
///    the namer a clustered runtime installs ([`set_node_namer`]), or `<#slot.7>` without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid(pub u64);

impl Pid {
    /// Bits of a pid that hold the serial; the rest hold the node slot.
    pub const SERIAL_BITS: u32 = 48;
    /// The largest serial a pid can carry.
    pub const MAX_SERIAL: u64 = (1 << Pid::SERIAL_BITS) - 1;

    /// The node slot (0 for this VM's own actors).
    #[inline]
    pub fn slot(self) -> u16 {
        (self.0 >> Pid::SERIAL_BITS) as u16
    }

    /// The serial the owning node gave the actor.
    #[inline]
    pub fn serial(self) -> u64 {
        self.0 & Pid::MAX_SERIAL
    }

    /// Whether the actor is this VM's own.
    #[inline]
    pub fn is_local(self) -> bool {
        self.slot() == 0
    }

    /// The pid of actor `serial` in node slot `slot`.
    #[inline]
    pub fn remote(slot: u16, serial: u64) -> Pid {
        Pid((u64::from(slot) << Pid::SERIAL_BITS) | (serial & Pid::MAX_SERIAL))
    }
}

/// Names the node of a node slot, for printing pids (see [`Pid`]).
pub type NodeNamer = Arc<dyn Fn(u16) -> Option<Arc<str>> + Send + Sync>;

static NODE_NAMER: std::sync::RwLock<Option<NodeNamer>> = std::sync::RwLock::new(None);

/// Installs how pids of other nodes print their node's name (a clustered runtime does this
/// once it has joined; the last one installed wins, as a process runs one clustered VM).
pub fn set_node_namer(namer: NodeNamer) {
    *NODE_NAMER.write().unwrap_or_else(|p| p.into_inner()) = Some(namer);
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_local() {
            return write!(f, "<{}>", self.0);
        }
        let namer = NODE_NAMER.read().unwrap_or_else(|p| p.into_inner()).clone();
        match namer.and_then(|n| n(self.slot())) {
            Some(name) => write!(f, "<{name}.{}>", self.serial()),
            None => write!(f, "<#{}.{}>", self.slot(), self.serial()),
        }
    }
}

/// A reference made by `make_ref`: a value equal only to itself (and its copies), for tagging a
/// request so that its reply can be told apart.
///
/// The high 16 bits name the node that made it, as a pid's do (0: this VM; a cluster maps other
/// nodes' references to their node's slot as it maps pids), the low 48 bits are the serial that
/// node's runtime handed out. So a reference is unique across the VM and, naming its node's
/// incarnation on the wire, across a cluster. It prints as `#Ref<0.serial>` when made here and
/// `#Ref<b.serial>` when made on node `b` (`#Ref<#slot.serial>` without a node namer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ref(pub u64);

impl Ref {
    /// Bits of a reference that hold the serial; the rest name the node.
    pub const SERIAL_BITS: u32 = 48;

    /// The node part (0 for a reference made here).
    pub fn node(self) -> u16 {
        (self.0 >> Ref::SERIAL_BITS) as u16
    }

    /// The serial part.
    pub fn serial(self) -> u64 {
        self.0 & ((1 << Ref::SERIAL_BITS) - 1)
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.node() == 0 {
            return write!(f, "#Ref<0.{}>", self.serial());
        }
        // Another node's reference names that node as its pids do (`#Ref<b.7>`), so a person
        // can tell it from this node's `#Ref<0.7>`.
        let namer = NODE_NAMER.read().unwrap_or_else(|p| p.into_inner()).clone();
        match namer.and_then(|n| n(self.node())) {
            Some(name) => write!(f, "#Ref<{name}.{}>", self.serial()),
            None => write!(f, "#Ref<#{}.{}>", self.node(), self.serial()),
        }
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

#[derive(Serialize, Deserialize)]
struct HandleInner {
    id: u64,
    #[serde(skip)]
    payload: Option<Payload>,
    #[serde(skip)]
    on_drop: Option<DropHook>,
}

impl HandleInner {
    fn new(id: u64, payload: Option<Payload>, on_drop: Option<DropHook>) -> HandleInner {
        HandleInner { id, payload, on_drop }
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

    /// Whether `other` is a clone of this very handle (not merely one with the same id, which
    /// a handle restored from a snapshot also has).
    pub fn is(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How many clones of this handle exist.
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.0)
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
///
/// `repr(C, u64)`: a word of tag, then every payload in the second word. With the default
/// layout the tag was a byte and `Bool` and `Atom` lived in bytes 1 to 7, so the compiler moved
/// a value as a byte and fifteen more (two overlapping words at offsets 1 and 8), and the next
/// whole-value load of a value just moved that way waited for the stores to drain (a failed
/// store-to-load forward): on every message and channel hand-off, and at every copy into a
/// result enum whose tag lives in the value's spare tag values. Two aligned words move and
/// forward cleanly: ring and pingpong run 7–8 % faster in wall time and chan_pingpong more,
/// while fib runs 4–6 % slower (`docs/BENCHMARKS.md`, "chan5"). The size (16) and
/// `Option<Value>`'s niche are unchanged.
#[derive(Clone, Default, Serialize, Deserialize)]
#[repr(C, u64)]
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
    /// A unique reference (`make_ref`).
    Ref(Ref),
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
            Value::Ref(_) => atoms::REF,
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
            Value::Ref(_) => 10,
            Value::Chan(_) => 11,
            Value::Res(_) => 12,
            Value::Fun(_) => 13,
        }
    }

    /// The literal form (see the module docs).
    pub fn repr(&self) -> String {
        let mut s = String::new();
        write_repr(&mut s, self).expect("writing to a String cannot fail");
        s
    }

    /// True for the values that hold other values: tuples, lists, maps and function values.
    #[inline]
    pub fn is_container(&self) -> bool {
        matches!(self, Value::Tuple(_) | Value::List(_) | Value::Map(_) | Value::Fun(_))
    }

    /// The values this value holds directly, in order: a tuple's or list's items, a map's keys
    /// and values alternating (`k1, v1, k2, v2, ...`, keys in order), a function value's
    /// captured values. Empty for every other value.
    pub fn children(&self) -> Children<'_> {
        match self {
            Value::Tuple(items) | Value::List(items) => Children::Seq(items.iter()),
            Value::Map(m) => Children::Map(Box::new((m.iter(), None))),
            Value::Fun(c) => Children::Seq(c.env.iter()),
            _ => Children::Seq([].iter()),
        }
    }

    /// This value and every value nested in it, at any depth: depth first, each before what it
    /// holds, in [`Value::children`] order. A work list of open containers, so any depth is
    /// fine. A value reached twice through shared boxes is yielded twice.
    pub fn walk(&self) -> Walk<'_> {
        Walk { next: Some(self), open: Vec::new() }
    }
}

/// The values of [`Value::walk`].
pub struct Walk<'a> {
    /// The value to yield next, if known (the root, at first).
    next: Option<&'a Value>,
    /// The containers whose children are still to come, innermost last.
    open: Vec<Children<'a>>,
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a Value;

    fn next(&mut self) -> Option<&'a Value> {
        let v = match self.next.take() {
            Some(v) => v,
            None => loop {
                let top = self.open.last_mut()?;
                match top.next() {
                    Some(v) => break v,
                    None => {
                        self.open.pop();
                    }
                }
            },
        };
        if v.is_container() {
            self.open.push(v.children());
        }
        Some(v)
    }
}

/// The values a value holds directly: see [`Value::children`]. Two words: the walks move these
/// between their work lists at every level, and a map's iterator is nine, so it is boxed.
#[derive(Clone)]
pub enum Children<'a> {
    /// A tuple's or list's items, or a function value's captured values.
    Seq(std::slice::Iter<'a, Value>),
    /// A map's entries, and the value of the entry whose key was the last item.
    Map(Box<(std::collections::btree_map::Iter<'a, Value, Value>, Option<&'a Value>)>),
}

impl<'a> Iterator for Children<'a> {
    type Item = &'a Value;

    #[inline]
    fn next(&mut self) -> Option<&'a Value> {
        match self {
            Children::Seq(it) => it.next(),
            Children::Map(state) => match state.1.take() {
                Some(v) => Some(v),
                None => {
                    let (k, v) = state.0.next()?;
                    state.1 = Some(v);
                    Some(k)
                }
            },
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Children<'_> {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Children::Seq(it) => it.len(),
            Children::Map(state) => 2 * state.0.len() + usize::from(state.1.is_some()),
        }
    }
}

/// Dropping is iterative (see the module docs, protocol point 3): a nested value whose last
/// reference goes frees its levels one after another instead of one inside the other.
impl Drop for Value {
    #[inline]
    fn drop(&mut self) {
        // Only a container can hold others: a scalar, a string or bytes value pays one test of
        // the tag here and no call. The rest is out of line, so that this glue, run at every
        // drop, keeps nothing across a call (with the reference count read here too, every
        // drop saved and restored two more registers: ~4 instructions, 8 drops a kv request).
        if self.is_container() {
            drop_nested(self);
        }
    }
}

/// Frees what `v`, a container, owns alone, level by level. Only the last reference to it can
/// free what it holds, and a plain load tells: a shared container is left to its ordinary drop,
/// which only releases it. (A count that falls to one just after this load leaves the container
/// to its ordinary drop, one level deep: each child's own drop starts the walk again.)
///
/// Children that are containers are moved out of a container about to be freed, so the
/// container's own drop only frees its leaves; each of them is then dropped the same way from
/// the loop here. The first such child is kept aside rather than on the work list, so freeing a
/// chain (one container inside the next) allocates nothing.
#[inline(never)]
fn drop_nested(v: &mut Value) {
    let last = match v {
        Value::Tuple(items) | Value::List(items) => Arc::strong_count(items) == 1,
        Value::Map(m) => Arc::strong_count(m) == 1,
        Value::Fun(c) => Arc::strong_count(c) == 1,
        _ => false,
    };
    if last {
        drop_walk(v);
    }
}

/// [`drop_nested`] of the last reference to a container: the walk, apart so that the test
/// before it (a shared container, most of those dropped) keeps no registers and no frame.
#[inline(never)]
fn drop_walk(v: &mut Value) {
    let mut work: Vec<Value> = Vec::new();
    let mut next = detach_children(v, &mut work);
    loop {
        let Some(mut v) = next.take().or_else(|| work.pop()) else { return };
        next = detach_children(&mut v, &mut work);
    }
}

/// Moves the container children of `v` out of it if this is the last reference to `v` (a
/// shared container is only released by its drop, which never frees its children): the first
/// is returned, the others pushed on `work`.
fn detach_children(v: &mut Value, work: &mut Vec<Value>) -> Option<Value> {
    let mut first = None;
    let mut keep = |c: Value| match first {
        None => first = Some(c),
        Some(_) => work.push(c),
    };
    // Plain loads before `get_mut`: a shared container, and one holding no containers, pay no
    // atomic read-modify-write beyond their drop's own.
    match v {
        Value::Tuple(items) | Value::List(items) => {
            if Arc::strong_count(items) == 1
                && items.iter().any(Value::is_container)
                && let Some(items) = Arc::get_mut(items)
            {
                items.iter_mut().filter(|x| x.is_container()).for_each(|x| keep(std::mem::take(x)));
            }
        }
        Value::Fun(c) => {
            if Arc::strong_count(c) == 1
                && c.env.iter().any(Value::is_container)
                && let Some(c) = Arc::get_mut(c)
            {
                c.env.iter_mut().filter(|x| x.is_container()).for_each(|x| keep(std::mem::take(x)));
            }
        }
        Value::Map(m) => {
            if Arc::strong_count(m) == 1
                && m.iter().any(|(k, x)| k.is_container() || x.is_container())
                && let Some(m) = Arc::get_mut(m)
            {
                // Keys cannot be taken out of a map in place: take the whole map apart.
                for (k, x) in std::mem::take(m) {
                    [k, x].into_iter().filter(Value::is_container).for_each(&mut keep);
                }
            }
        }
        _ => {}
    }
    first
}

/// How far [`compare_nested`] looks into a pair of values.
enum Shallow<'a> {
    /// The pair is decided without looking further.
    Done(Ordering),
    /// Two containers with equal headers: their children decide.
    Descend(Children<'a>, Children<'a>),
}

/// Compares a pair as far as it can without visiting children. With `eq_only`, containers of
/// different sizes are unequal at once (the result then only says equal or not).
#[inline(always)]
fn shallow<'a>(a: &'a Value, b: &'a Value, eq_only: bool) -> Shallow<'a> {
    let (same, sizes_differ) = match (a, b) {
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            (Arc::ptr_eq(x, y), x.len() != y.len())
        }
        (Value::Map(x), Value::Map(y)) => (Arc::ptr_eq(x, y), x.len() != y.len()),
        (Value::Fun(x), Value::Fun(y)) => {
            if x.func != y.func {
                return Shallow::Done(x.func.cmp(&y.func));
            }
            (Arc::ptr_eq(x, y), x.env.len() != y.env.len())
        }
        _ => return Shallow::Done(a.cmp_leaf(b)),
    };
    if same {
        // One allocation: values are immutable, so it is equal to itself.
        Shallow::Done(Ordering::Equal)
    } else if eq_only && sizes_differ {
        Shallow::Done(Ordering::Less)
    } else {
        Shallow::Descend(a.children(), b.children())
    }
}

/// Structural comparison of two values, iterative (module docs, protocol points 1 and 2):
/// children in order, lexicographically, then the shorter first, which is the order of
/// `Vec`'s and `BTreeMap`'s own comparisons.
fn compare_nested(a: &Value, b: &Value, eq_only: bool) -> Ordering {
    let (mut x, mut y) = match shallow(a, b, eq_only) {
        Shallow::Done(o) => return o,
        Shallow::Descend(x, y) => (x, y),
    };
    let mut work: Vec<(Children<'_>, Children<'_>)> = Vec::new();
    loop {
        match (x.next(), y.next()) {
            // A pair that is not two containers is decided here, without a call.
            (Some(p), Some(q)) if !(p.is_container() && q.is_container()) => {
                let o = if eq_only {
                    if p == q { Ordering::Equal } else { Ordering::Less }
                } else {
                    p.cmp_leaf(q)
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            (Some(p), Some(q)) => match shallow(p, q, eq_only) {
                Shallow::Done(Ordering::Equal) => {}
                Shallow::Done(o) => return o,
                Shallow::Descend(cp, cq) => {
                    let parent = (std::mem::replace(&mut x, cp), std::mem::replace(&mut y, cq));
                    if parent.0.len() > 0 || parent.1.len() > 0 {
                        work.push(parent);
                    }
                }
            },
            (None, None) => match work.pop() {
                Some((px, py)) => (x, y) = (px, py),
                None => return Ordering::Equal,
            },
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
        }
    }
}

impl PartialEq for Value {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b) == Ordering::Equal,
            (Value::Atom(a), Value::Atom(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Tuple(_), Value::Tuple(_))
            | (Value::List(_), Value::List(_))
            | (Value::Map(_), Value::Map(_))
            | (Value::Fun(_), Value::Fun(_)) => compare_nested(self, other, true) == Ordering::Equal,
            (Value::Pid(a), Value::Pid(b)) => a == b,
            (Value::Ref(a), Value::Ref(b)) => a == b,
            (Value::Chan(a), Value::Chan(b)) | (Value::Res(a), Value::Res(b)) => a.id() == b.id(),
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
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        if self.is_container() && other.is_container() {
            compare_nested(self, other, false)
        } else {
            self.cmp_leaf(other)
        }
    }
}

impl Value {
    /// The order of a pair in which at least one side is not a container, or of containers
    /// of different kinds: decided without looking at children.
    #[inline]
    fn cmp_leaf(&self, other: &Self) -> Ordering {
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
            (Value::Pid(a), Value::Pid(b)) => a.cmp(b),
            (Value::Ref(a), Value::Ref(b)) => a.cmp(b),
            (Value::Chan(a), Value::Chan(b)) | (Value::Res(a), Value::Res(b)) => a.id().cmp(&b.id()),
            (Value::Tuple(_), Value::Tuple(_))
            | (Value::List(_), Value::List(_))
            | (Value::Map(_), Value::Map(_))
            | (Value::Fun(_), Value::Fun(_)) => compare_nested(self, other, false),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Hashes a string's or bytes value's data as one write: a word holding the kind (`rank`) and
/// the length (so the encoding stays prefix-free, as `[u8]`'s own hash is) followed by the data,
/// copied together when short. Shared tables and maps hash mostly such keys, and with SipHash
/// every `write` call has a fixed cost: the kind, the length and the data as three writes took
/// about 370 instructions for a 16-byte key.
#[inline(always)]
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
    /// A string or bytes value, the usual key of a table or map, is hashed right here (the
    /// same one write [`Value::hash_leaf`] makes), so hashing such a key is as short as it was
    /// before deep values: no call on the way to the hasher's write.
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Str(s) => hash_data(h, self.rank(), s.as_bytes()),
            Value::Bytes(b) => hash_data(h, self.rank(), b),
            _ if self.is_container() => hash_nested(self, h),
            _ => self.hash_leaf(h),
        }
    }
}

impl Value {
    /// Hashes a value that holds no other values.
    #[inline]
    fn hash_leaf<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Str(s) => return hash_data(h, self.rank(), s.as_bytes()),
            Value::Bytes(b) => return hash_data(h, self.rank(), b),
            _ => {}
        }
        self.rank().hash(h);
        match self {
            Value::Bool(b) => b.hash(h),
            Value::Int(i) => i.hash(h),
            Value::Float(f) => f.to_bits().hash(h),
            Value::Atom(a) => a.hash(h),
            Value::Pid(p) => p.hash(h),
            Value::Ref(r) => r.hash(h),
            Value::Chan(c) | Value::Res(c) => c.id().hash(h),
            _ => {}
        }
    }

    /// Hashes what identifies a container before its children: its kind, the function of a
    /// function value and the number of children (so that the encoding stays prefix-free).
    fn hash_head<H: Hasher>(&self, h: &mut H) -> Children<'_> {
        self.rank().hash(h);
        if let Value::Fun(c) = self {
            c.func.hash(h);
        }
        let children = self.children();
        h.write_usize(children.len());
        children
    }
}

/// Hashes a container and everything in it, iteratively (see the module docs).
fn hash_nested<H: Hasher>(v: &Value, h: &mut H) {
    let mut cur = v.hash_head(h);
    let mut work: Vec<Children<'_>> = Vec::new();
    loop {
        match cur.next() {
            Some(x) if x.is_container() => {
                let parent = std::mem::replace(&mut cur, x.hash_head(h));
                if parent.len() > 0 {
                    work.push(parent);
                }
            }
            Some(x) => x.hash_leaf(h),
            None => match work.pop() {
                Some(parent) => cur = parent,
                None => return,
            },
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

/// How much of a value a report for people shows (a crash log, an uncaught exception, an exit
/// reason): about 2 KB, as BEAM's logger bounds a term with `~P`.
pub const EXCERPT_BYTES: usize = 2048;

impl Value {
    /// The print form (`Display`), cut after about `max` bytes: see [`Excerpt`].
    pub fn excerpt(&self, max: usize) -> Excerpt<'_> {
        Excerpt { v: self, max, repr: false }
    }

    /// The literal form ([`Value::repr`]), cut after about `max` bytes: see [`Excerpt`].
    pub fn repr_excerpt(&self, max: usize) -> Excerpt<'_> {
        Excerpt { v: self, max, repr: true }
    }
}

/// A value for a report that must stay short whatever the value holds: its print or literal
/// form up to `max` bytes (cut on a character boundary); a longer one ends in `…` and the
/// size of the value, e.g. `"abc… (10485760 bytes)`. Writing stops at the cut, so a 10 MB value
/// costs no more to show than a short one.
pub struct Excerpt<'a> {
    v: &'a Value,
    max: usize,
    repr: bool,
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Capped { out: f, left: self.max, cut: false };
        let written = match (self.repr, self.v) {
            (false, Value::Str(s)) => fmt::Write::write_str(&mut out, s),
            _ => write_repr(&mut out, self.v),
        };
        match written {
            Err(_) if out.cut => {}
            other => return other,
        }
        let (n, what) = match self.v {
            Value::Str(s) => (s.len(), "bytes"),
            Value::Bytes(b) => (b.len(), "bytes"),
            Value::Tuple(t) => (t.len(), "elements"),
            Value::List(l) => (l.len(), "elements"),
            Value::Map(m) => (m.len(), "entries"),
            Value::Fun(c) => (c.env.len(), "captured values"),
            // A scalar's form is short; only a very small `max` cuts one.
            _ => return f.write_str("…"),
        };
        write!(f, "… ({n} {what})")
    }
}

/// A writer that passes on at most `left` bytes, then fails (ending the write early) with
/// `cut` set.
struct Capped<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    left: usize,
    cut: bool,
}

impl fmt::Write for Capped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() <= self.left {
            self.left -= s.len();
            return self.out.write_str(s);
        }
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.write_str(&s[..end])?;
        self.left = 0;
        self.cut = true;
        Err(fmt::Error)
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
/// tagged `:reply`. Iterative, so neither side's depth matters.
pub fn matches(pattern: &Value, v: &Value) -> bool {
    type Pair<'a> = (std::slice::Iter<'a, Value>, std::slice::Iter<'a, Value>);
    let mut cur: Pair<'_> = ([].iter(), [].iter());
    let mut work: Vec<Pair<'_>> = Vec::new();
    let (mut p, mut x) = (pattern, v);
    loop {
        match (p, x) {
            (Value::Atom(a), _) if *a == atoms::WILDCARD => {}
            (Value::Tuple(ps), Value::Tuple(xs)) | (Value::List(ps), Value::List(xs)) => {
                if ps.len() != xs.len() {
                    return false;
                }
                let parent = std::mem::replace(&mut cur, (ps.iter(), xs.iter()));
                if parent.0.len() > 0 {
                    work.push(parent);
                }
            }
            _ => {
                if p != x {
                    return false;
                }
            }
        }
        loop {
            if let (Some(a), Some(b)) = (cur.0.next(), cur.1.next()) {
                (p, x) = (a, b);
                break;
            }
            match work.pop() {
                Some(parent) => cur = parent,
                None => return true,
            }
        }
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

/// Writes a value that holds no other values (a function value's captures are not shown).
fn write_leaf(out: &mut impl fmt::Write, v: &Value) -> fmt::Result {
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
        Value::Pid(p) => write!(out, "{p}"),
        Value::Ref(r) => write!(out, "{r}"),
        Value::Chan(h) => write!(out, "#chan<{}>", h.id()),
        Value::Res(h) => write!(out, "#res<{}>", h.id()),
        Value::Fun(c) => write!(out, "#fun<{}/{}>", c.func, c.env.len()),
        Value::Tuple(_) | Value::List(_) | Value::Map(_) => {
            unreachable!("containers are written by write_repr")
        }
    }
}

/// A container being written: what is left of it, how many children are written, its kind.
struct Open<'a> {
    items: Children<'a>,
    written: usize,
    map: bool,
    close: &'static str,
}

/// Writes the literal form, iteratively (see the module docs).
fn write_repr(out: &mut impl fmt::Write, v: &Value) -> fmt::Result {
    let mut work: Vec<Open<'_>> = Vec::new();
    let mut item = v;
    loop {
        let (open, close, map) = match item {
            Value::Tuple(_) => ("{", "}", false),
            Value::List(_) => ("[", "]", false),
            Value::Map(_) => ("%{", "}", true),
            leaf => {
                write_leaf(out, leaf)?;
                ("", "", false)
            }
        };
        if !open.is_empty() {
            out.write_str(open)?;
            work.push(Open { items: item.children(), written: 0, map, close });
        }
        // The next item to write, closing the containers that are finished.
        loop {
            let Some(top) = work.last_mut() else { return Ok(()) };
            match top.items.next() {
                Some(x) => {
                    if top.written > 0 {
                        out.write_str(if top.map && top.written % 2 == 1 { " => " } else { ", " })?;
                    }
                    top.written += 1;
                    item = x;
                    break;
                }
                None => {
                    out.write_str(top.close)?;
                    work.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
