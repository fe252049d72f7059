//! Between live values and the frozen ones: [`Writer`] turns values, exceptions and actor states
//! into [`v1`] types, writing each shared value once; [`Reader`] turns them back.
//!
//! Both walk values with an explicit work list, never by recursion, so a value nested as deep
//! as a program can build neither overflows the stack on the way out nor on the way in.

use super::v1::{self, Boxed, VRef};
use crate::atom::Atom;
use crate::exception::Exception;
use crate::step::{ActorState, Caught, Frame, Handler, Rare};
use crate::value::{Closure, Handle, Pid, Ref, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Builds the values section while the rest of a snapshot is converted.
///
/// A boxed value is identified by its allocation (values are immutable and shared, so the same
/// allocation is the same value): one held by many actors, or many times by one, is written
/// once. The writer keeps a clone of every value it has written, so no allocation it has seen
/// can be freed and reused for another value while it works.
#[derive(Default)]
pub struct Writer {
    values: v1::Values,
    atoms: HashMap<Atom, u32>,
    seen: HashMap<usize, u32>,
    keep: Vec<Value>,
    chans: HashSet<u64>,
    res: HashSet<u64>,
    fresh_chans: Vec<Handle>,
    fresh_res: Vec<Handle>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The index of atom `a` in the atom list.
    pub fn atom(&mut self, a: Atom) -> u32 {
        if let Some(&i) = self.atoms.get(&a) {
            return i;
        }
        let i = self.values.atoms.len() as u32;
        self.values.atoms.push(a.name().to_string());
        self.atoms.insert(a, i);
        i
    }

    /// A reference to `v`, writing it (and whatever it holds) to the values section if it is
    /// boxed and not written yet. Channels and resources met on the way are remembered (see
    /// [`Writer::new_handles`]).
    pub fn value(&mut self, v: &Value) -> VRef {
        if let Some(r) = self.known(v) {
            return r;
        }
        // Post-order over the unwritten boxed values: a value is pushed once to list its
        // children and once more to be written after them.
        let mut work: Vec<(Value, bool)> = vec![(v.clone(), false)];
        while let Some((v, children_done)) = work.pop() {
            if self.known(&v).is_some() {
                continue;
            }
            if !children_done {
                work.push((v.clone(), true));
                for child in v.children() {
                    if self.known(child).is_none() {
                        work.push((child.clone(), false));
                    }
                }
                continue;
            }
            let mut r = |x: &Value| self.known(x).expect("children are written before their parent");
            let entry = match &v {
                Value::Str(s) => Boxed::Str(String::clone(s)),
                Value::Bytes(b) => Boxed::Bytes(v1::Blob(b.to_vec())),
                Value::Tuple(items) => Boxed::Tuple(items.iter().map(&mut r).collect()),
                Value::List(items) => Boxed::List(items.iter().map(&mut r).collect()),
                Value::Map(m) => Boxed::Map(m.iter().map(|(k, x)| (r(k), r(x))).collect()),
                Value::Fun(c) => Boxed::Fun { func: c.func, env: c.env.iter().map(&mut r).collect() },
                _ => unreachable!("only boxed values are pushed"),
            };
            let index = self.values.shared.len() as u32;
            self.values.shared.push(entry);
            self.seen.insert(address(&v).expect("a boxed value"), index);
            self.keep.push(v);
        }
        self.known(v).expect("the value was just written")
    }

    /// The reference of a scalar or an already written boxed value.
    fn known(&mut self, v: &Value) -> Option<VRef> {
        Some(match v {
            Value::Nil => VRef::Nil,
            Value::Bool(false) => VRef::False,
            Value::Bool(true) => VRef::True,
            Value::Int(i) => VRef::Int(*i),
            Value::Float(x) => VRef::Float(x.to_bits()),
            Value::Atom(a) => VRef::Atom(self.atom(*a)),
            Value::Pid(p) => VRef::Pid(p.0),
            Value::Ref(r) => VRef::Ref(r.0),
            Value::Chan(h) => {
                if self.chans.insert(h.id()) {
                    self.fresh_chans.push(h.clone());
                }
                VRef::Chan(h.id())
            }
            Value::Res(h) => {
                if self.res.insert(h.id()) {
                    self.fresh_res.push(h.clone());
                }
                VRef::Res(h.id())
            }
            _ => VRef::Shared(*self.seen.get(&address(v)?)?),
        })
    }

    /// The channels and resource handles met since the last call, so that the caller can write
    /// their contents too (which may hold more of them: call until both are empty).
    pub fn new_handles(&mut self) -> (Vec<Handle>, Vec<Handle>) {
        (std::mem::take(&mut self.fresh_chans), std::mem::take(&mut self.fresh_res))
    }

    /// An exception.
    pub fn exception(&mut self, e: &Exception) -> v1::Exception {
        v1::Exception { kind: self.atom(e.kind), msg: self.value(&e.msg) }
    }

    /// An actor's interpreter state.
    pub fn state(&mut self, st: &ActorState) -> v1::State {
        v1::State {
            regs: st.regs.iter().map(|v| self.value(v)).collect(),
            frames: st
                .frames
                .iter()
                .map(|f| v1::Frame { func: f.func, pc: f.pc, base: f.base, ret: f.ret })
                .collect(),
            handlers: st
                .handlers
                .iter()
                .map(|h| v1::Handler { frame: h.frame, target: h.target, dst: h.dst })
                .collect(),
            pending: st.pending().map(|e| self.exception(e)),
            reductions: st.reductions,
            max_frames: st.max_frames,
            caught: st.caught().map(|c| v1::Caught {
                count: c.count,
                last: c.last.as_ref().map(|(e, f, pc)| (self.exception(e), *f, *pc)),
            }),
        }
    }

    /// The values section.
    pub fn finish(self) -> v1::Values {
        self.values
    }
}

/// The allocation behind a boxed value (`None` for scalars and handles).
fn address(v: &Value) -> Option<usize> {
    Some(match v {
        Value::Str(s) => Arc::as_ptr(s) as *const () as usize,
        Value::Bytes(b) => Arc::as_ptr(b) as *const () as usize,
        Value::Tuple(t) | Value::List(t) => Arc::as_ptr(t) as *const () as usize,
        Value::Map(m) => Arc::as_ptr(m) as *const () as usize,
        Value::Fun(c) => Arc::as_ptr(c) as *const () as usize,
        _ => return None,
    })
}

/// Turns the frozen values of a checked snapshot back into live ones.
///
/// The runtime makes its channels, tables and resources first (empty) and hands their handles
/// in; values that refer to them then share those handles, and the runtime fills the objects
/// with [`Reader::value`] afterwards (a channel may hold values that hold channels).
pub struct Reader {
    atoms: Vec<Atom>,
    shared: Vec<Value>,
    chans: HashMap<u64, Handle>,
    res: HashMap<u64, Handle>,
}

impl Reader {
    /// Rebuilds every shared value, in one pass (children come first). `chans` and `res` map
    /// handle ids to the runtime's new handles.
    ///
    /// Meant for a snapshot that passed [`super::check`]: on one that did not, a dangling
    /// reference becomes `nil` (or a handle with no object) rather than a panic.
    pub fn new(values: v1::Values, chans: HashMap<u64, Handle>, res: HashMap<u64, Handle>) -> Reader {
        let atoms = values.atoms.iter().map(|n| Atom::new(n)).collect();
        let mut r = Reader { atoms, shared: Vec::with_capacity(values.shared.len()), chans, res };
        for entry in values.shared {
            let v = match entry {
                Boxed::Str(s) => Value::str(s),
                Boxed::Bytes(b) => Value::bytes(b.0),
                Boxed::Tuple(items) => Value::tuple(items.into_iter().map(|x| r.value(x)).collect()),
                Boxed::List(items) => Value::list(items.into_iter().map(|x| r.value(x)).collect()),
                Boxed::Map(pairs) => {
                    Value::Map(Arc::new(pairs.into_iter().map(|(k, x)| (r.value(k), r.value(x))).collect()))
                }
                Boxed::Fun { func, env } => {
                    Value::Fun(Arc::new(Closure { func, env: env.into_iter().map(|x| r.value(x)).collect() }))
                }
            };
            r.shared.push(v);
        }
        r
    }

    /// The atom at index `i` of the atom list (`nil`'s atom if out of range).
    pub fn atom(&self, i: u32) -> Atom {
        self.atoms.get(i as usize).copied().unwrap_or(crate::atom::atoms::NIL)
    }

    /// The live value of a reference.
    pub fn value(&self, r: VRef) -> Value {
        match r {
            VRef::Nil => Value::Nil,
            VRef::False => Value::Bool(false),
            VRef::True => Value::Bool(true),
            VRef::Int(i) => Value::Int(i),
            VRef::Float(bits) => Value::Float(f64::from_bits(bits)),
            VRef::Atom(i) => Value::Atom(self.atom(i)),
            VRef::Pid(p) => Value::Pid(Pid(p)),
            VRef::Ref(r) => Value::Ref(Ref(r)),
            VRef::Chan(id) => Value::Chan(self.chans.get(&id).cloned().unwrap_or_else(|| Handle::new(id))),
            VRef::Res(id) => Value::Res(self.res.get(&id).cloned().unwrap_or_else(|| Handle::new(id))),
            VRef::Shared(i) => self.shared.get(i as usize).cloned().unwrap_or(Value::Nil),
        }
    }

    /// A live exception.
    pub fn exception(&self, e: &v1::Exception) -> Exception {
        Exception { kind: self.atom(e.kind), msg: self.value(e.msg) }
    }

    /// A live interpreter state.
    pub fn state(&self, s: &v1::State) -> ActorState {
        ActorState {
            regs: s.regs.iter().map(|&r| self.value(r)).collect(),
            frames: s
                .frames
                .iter()
                .map(|f| Frame { func: f.func, pc: f.pc, base: f.base, ret: f.ret })
                .collect(),
            handlers: s
                .handlers
                .iter()
                .map(|h| Handler { frame: h.frame, target: h.target, dst: h.dst })
                .collect(),
            rare: (s.pending.is_some() || s.caught.is_some()).then(|| {
                Box::new(Rare {
                    pending: s.pending.as_ref().map(|e| self.exception(e)),
                    caught: s.caught.as_ref().map(|c| Caught {
                        count: c.count,
                        last: c.last.as_ref().map(|(e, f, pc)| (self.exception(e), *f, *pc)),
                    }),
                })
            }),
            reductions: s.reductions,
            max_frames: s.max_frames,
            rng: 0,
            meter: Default::default(),
        }
    }
}
