//! Memory accounting: how much an actor holds, for the spawn option `:max_heap` and the VM-wide
//! budget (`vm run --max-memory`).
//!
//! Values are shared (`Arc`), not copied, so "an actor's memory" needs a rule. This is it:
//! 1. **An actor is charged for what it can reach**: its register stack and frames, and every
//!    boxed value reachable from its registers, each distinct box counted once per actor (a
//!    value two actors both hold is charged to both, as BEAM's copied messages would be; a
//!    box reached twice by one actor is charged once). [`measure`] is that count.
//! 2. **A queued message is charged to the receiver's mailbox** by [`message_size`], its size
//!    counted through at most [`MESSAGE_NODES`] boxes (so a send costs O(1) however deep the
//!    message; a scalar message costs nothing beyond its queue slot).
//! 3. Counting is amortised, as a garbage collector's is: the interpreter adds what each
//!    allocating instruction allocates to its [`Meter`] (a trigger, not a size: garbage counts
//!    too), and when that passes the meter's gap counts again ([`measure`]) and
//!    reports the count to the host ([`crate::step::Host::memory`]), which compares it with the
//!    limits. The next count comes after the actor has allocated half as much again as it holds
//!    (at least [`MIN_CHECK`]), so counting costs O(1) per byte allocated.
//! 4. An allocation of at least [`BIG`] bytes (a long `concat`, a list's buffer doubling, a deep
//!    call's registers) is shown to the host *before* it happens, so one instruction cannot jump
//!    far past a limit (or past the process's own limit, which would abort it).
//! 5. Sizes are estimates of the allocator's blocks: an `Arc` box is its two counts plus its
//!    contents; a map entry is charged [`MAP_ENTRY`]. Resource and channel payloads (socket
//!    buffers, a channel's queue, a shared table) are not any actor's: the VM-wide budget, which
//!    counts the process's allocations, covers them.

use crate::step::{ActorState, Frame, Handler};
use crate::value::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// One register or list slot.
pub const SLOT: u64 = std::mem::size_of::<Value>() as u64;
/// An `Arc`'s counts.
const COUNTS: u64 = 16;
/// A vector or string header (pointer, capacity, length).
const VEC: u64 = 24;
/// A map entry (key, value and the B-tree's share of node overhead).
pub const MAP_ENTRY: u64 = 48;
/// A channel or resource handle's box.
const HANDLE: u64 = 64;
/// How many boxes [`message_size`] looks at.
pub const MESSAGE_NODES: usize = 64;
/// The smallest gap between two counts.
pub const MIN_CHECK: u32 = 64 * 1024;
/// An allocation this large is shown to the host before it happens.
pub const BIG: u64 = 1 << 20;

/// The interpreter's allocation meter (rule 3 of the module docs), packed in one word because
/// every actor's state carries it: the low 5 bits are the base-2 logarithm of the gap to the next
/// count, the rest the bytes allocated since the last count in 32-byte units (rounded up, so
/// small allocations count a little high; saturating). Not part of a snapshot: a restored actor
/// counts afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meter(u32);

/// The largest count of 32-byte units a [`Meter`] holds.
const UNITS_MAX: u32 = u32::MAX >> 5;

impl Default for Meter {
    fn default() -> Meter {
        Meter(MIN_CHECK.trailing_zeros())
    }
}

impl Meter {
    /// Adds `bytes` to the allocation count, rounded up to whole 32-byte units.
    ///
    /// One add to the packed word: the bytes rounded up to a multiple of 32 are the units
    /// already shifted past the gap's five bits, which they leave alone. Only a count past
    /// [`UNITS_MAX`] units (4 GiB) takes the saturating path, out of line. (Every instruction
    /// that allocates and every native result is charged here, several times a kv request;
    /// the units computed apart and put back with two saturations were ~17 instructions.)
    #[inline(always)]
    pub fn add(&mut self, bytes: u64) {
        // Below 2^32 bytes nothing overflows: the sum fits a `u64`, and it fits the word unless
        // the units saturate. Both tests are one: a high bit set in either.
        let word = u64::from(self.0) + (bytes.wrapping_add(31) & !31);
        if (word | bytes) >> 32 == 0 {
            self.0 = word as u32;
        } else {
            self.add_large(bytes);
        }
    }

    /// [`Meter::add`] of a charge of 2^32 bytes or more, or one that saturates the units.
    #[cold]
    #[inline(never)]
    fn add_large(&mut self, bytes: u64) {
        let units = bytes.div_ceil(32).min(u64::from(UNITS_MAX));
        let total = (u64::from(self.0 >> 5) + units).min(u64::from(UNITS_MAX)) as u32;
        self.0 = (total << 5) | (self.0 & 31);
    }

    /// Bytes allocated since the last count (rounded up to 32-byte units).
    pub fn alloc(&self) -> u64 {
        u64::from(self.0 >> 5) * 32
    }

    /// The gap between the last count and the next.
    pub fn gap(&self) -> u64 {
        1 << (self.0 & 31)
    }

    /// Whether a count is due: `alloc() >= gap()`, as one comparison of the packed word. (The
    /// gap is a power of two of at least 1024, so a multiple of 32: the word, the units with the
    /// gap's logarithm in their low bits, reaches it exactly when the units alone do.) The
    /// interpreter asks after every instruction it runs out of line.
    #[inline(always)]
    pub fn due(&self) -> bool {
        self.0 >= 1 << (self.0 & 31)
    }

    /// Starts a new period after a count of `live` bytes: the next count comes after the actor
    /// has allocated about half of `live` (at least [`MIN_CHECK`], at most 1 GiB), or a quarter
    /// of its `:max_heap`, whichever is sooner, so a limit is never overshot by much. (The gap is
    /// a power of two, rounded down.)
    pub fn counted(&mut self, live: u64, max_heap: Option<u64>) {
        let mut gap = (live / 2).clamp(u64::from(MIN_CHECK), 1 << 30);
        if let Some(max) = max_heap {
            gap = gap.min((max / 4).max(1024));
        }
        self.0 = 63 - gap.leading_zeros();
    }
}

/// What a running actor reports to [`crate::step::Host::memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemUse {
    /// A fresh count ([`measure`]) of what the actor holds, or `None` if unchanged since the
    /// last report.
    pub live: Option<u64>,
    /// Bytes allocated since that count.
    pub since: u64,
    /// Bytes the instruction is about to allocate (rule 4), or 0.
    pub more: u64,
}

/// The bytes of a value's own box (not of the boxes it refers to); 0 for a scalar.
#[inline]
pub fn node_size(v: &Value) -> u64 {
    match v {
        Value::Nil
        | Value::Bool(_)
        | Value::Int(_)
        | Value::Float(_)
        | Value::Atom(_)
        | Value::Pid(_)
        | Value::Ref(_) => 0,
        Value::Str(s) => str_box(s.capacity()),
        Value::Bytes(b) => bytes_box(b.len()),
        Value::Tuple(t) | Value::List(t) => seq_box(t.capacity()),
        Value::Map(m) => COUNTS + VEC + m.len() as u64 * MAP_ENTRY,
        Value::Fun(c) => COUNTS + 8 + VEC + c.env.capacity() as u64 * SLOT,
        Value::Chan(_) | Value::Res(_) => HANDLE,
    }
}

/// The bytes an update in place of `v` copies first because the box is shared (`Arc::make_mut`
/// clones a shared box); 0 for an unshared box or a scalar.
pub fn copy_cost(v: &Value) -> u64 {
    let shared = match v {
        Value::Str(s) => Arc::strong_count(s) > 1,
        Value::Tuple(t) | Value::List(t) => Arc::strong_count(t) > 1,
        Value::Map(m) => Arc::strong_count(m) > 1,
        _ => false,
    };
    if shared { node_size(v) } else { 0 }
}

/// The bytes a buffer of `len` elements of `elem` bytes with room for `cap` allocates to take
/// `add` more (a vector doubles), or 0 if they fit.
pub fn growth(len: usize, cap: usize, add: usize, elem: u64) -> u64 {
    let need = len.saturating_add(add);
    if need <= cap { 0 } else { (need.max(cap.saturating_mul(2)) - cap) as u64 * elem }
}

/// The address of a value's box if other references to it exist (so it may be reached twice).
fn shared_box(v: &Value) -> Option<usize> {
    let (ptr, count) = match v {
        Value::Str(s) => (Arc::as_ptr(s) as *const () as usize, Arc::strong_count(s)),
        Value::Bytes(b) => (Arc::as_ptr(b) as *const () as usize, Arc::strong_count(b)),
        Value::Tuple(t) | Value::List(t) => (Arc::as_ptr(t) as *const () as usize, Arc::strong_count(t)),
        Value::Map(m) => (Arc::as_ptr(m) as *const () as usize, Arc::strong_count(m)),
        Value::Fun(c) => (Arc::as_ptr(c) as *const () as usize, Arc::strong_count(c)),
        _ => return None,
    };
    (count > 1).then_some(ptr)
}

/// The bytes of every box reachable from `roots`, each distinct box once (rule 1). Walks with
/// an explicit stack, so any depth is fine; a box with a single reference cannot be reached
/// twice and is not remembered.
pub fn reachable<'a>(roots: impl IntoIterator<Item = &'a Value>) -> u64 {
    let mut seen: HashSet<usize> = HashSet::new();
    let mut stack: Vec<&'a Value> = Vec::new();
    let mut total = 0u64;
    let mut visit = |v: &'a Value, stack: &mut Vec<&'a Value>| {
        if node_size(v) == 0 {
            return;
        }
        if let Some(p) = shared_box(v)
            && !seen.insert(p)
        {
            return;
        }
        stack.push(v);
    };
    for r in roots {
        visit(r, &mut stack);
        while let Some(v) = stack.pop() {
            total += node_size(v);
            v.children().for_each(|k| visit(k, &mut stack));
        }
    }
    total
}

/// What an actor holds (rule 1): its register stack, frames and handlers, and every box its
/// registers reach.
pub fn measure(st: &ActorState) -> u64 {
    measure_parts(&st.regs, &st.frames, &st.handlers)
}

/// [`measure`] of an actor's parts.
pub fn measure_parts(regs: &[Value], frames: &[Frame], handlers: &[Handler]) -> u64 {
    // (The register stack's spare capacity is the vector's, which a slice does not show: it is
    // at most as large again, and the count of its growth in `Meter` covers it.)
    let fixed = regs.len() as u64 * SLOT
        + std::mem::size_of_val(frames) as u64
        + std::mem::size_of_val(handlers) as u64;
    fixed + reachable(regs.iter())
}

/// The size a queued message is charged (rule 2): its boxes, through at most [`MESSAGE_NODES`]
/// of them; 0 for a scalar.
///
/// Every native result and every received message is charged by this, so the common shapes
/// take no walk: a scalar is a test of the tag, a string or bytes value (a line read, a value
/// from a table) is its one box, and a tuple or list of fewer than [`MESSAGE_NODES`] items none
/// of which holds others (a command's words) is summed in one pass ([`message_size_boxed`]).
/// Only a value with a container inside takes the walk ([`message_size_walk`]). Each shortcut
/// gives exactly the walk's count.
#[inline(always)]
pub fn message_size(v: &Value) -> u64 {
    match v {
        Value::Nil
        | Value::Bool(_)
        | Value::Int(_)
        | Value::Float(_)
        | Value::Atom(_)
        | Value::Pid(_)
        | Value::Ref(_) => 0,
        Value::Bytes(b) => bytes_box(b.len()),
        Value::Str(s) => str_box(s.capacity()),
        _ => message_size_boxed(v),
    }
}

/// [`node_size`] of a bytes value of `len` bytes.
#[inline(always)]
const fn bytes_box(len: usize) -> u64 {
    COUNTS + 32 + len as u64
}

/// [`node_size`] of a string value with room for `cap` bytes.
#[inline(always)]
const fn str_box(cap: usize) -> u64 {
    COUNTS + VEC + cap as u64
}

/// [`node_size`] of a tuple or list with room for `cap` items.
#[inline(always)]
pub const fn seq_box(cap: usize) -> u64 {
    COUNTS + VEC + cap as u64 * SLOT
}

/// [`message_size`] of a value that may hold others: a tuple or list of fewer than
/// [`MESSAGE_NODES`] items, none a container, is at most [`MESSAGE_NODES`] boxes, each counted
/// once by the walk, so the sum of their sizes is the walk's count; anything else takes the
/// walk. The sum tests for bytes first (a command's words, a batch of replies) and keeps no
/// stack frame of its own: with the walk's work list in the same function, every call pushed
/// six registers and reserved half a kilobyte, about half of what a three-word command cost.
#[inline(never)]
fn message_size_boxed(v: &Value) -> u64 {
    let (Value::Tuple(items) | Value::List(items)) = v else { return message_size_walk(v) };
    if items.len() >= MESSAGE_NODES {
        return message_size_walk(v);
    }
    let mut total = seq_box(items.capacity());
    for item in items.iter() {
        total += match item {
            Value::Bytes(b) => bytes_box(b.len()),
            Value::Tuple(_) | Value::List(_) | Value::Map(_) | Value::Fun(_) => return message_size_walk(v),
            other => node_size(other),
        };
    }
    total
}

/// [`message_size`] by walking the value: its boxes, depth first, until [`MESSAGE_NODES`] have
/// been counted. The work list is an array on the stack (it never holds more than
/// [`MESSAGE_NODES`]): a growing `Vec` cost an allocation, a reallocation or two and a free per
/// boxed message or native result, about 250 of a kv request's instructions.
#[inline(never)]
fn message_size_walk(v: &Value) -> u64 {
    let mut total = 0;
    let mut left = MESSAGE_NODES;
    let mut stack = [v; MESSAGE_NODES];
    let mut len = 1;
    while len > 0 {
        len -= 1;
        let v = stack[len];
        total += node_size(v);
        left -= 1;
        if left == 0 {
            break;
        }
        for c in v.children() {
            if len >= MESSAGE_NODES {
                break;
            }
            if node_size(c) != 0 {
                stack[len] = c;
                len += 1;
            }
        }
    }
    total
}

/// The exit reason of an actor stopped by a memory limit: `{:limit, which}`.
pub fn limit_reason(which: &str) -> Value {
    Value::tuple(vec![Value::Atom(crate::atom::atoms::LIMIT), Value::atom(which)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_cost_nothing_and_boxes_their_contents() {
        assert_eq!(message_size(&Value::Int(3)), 0);
        assert_eq!(reachable([&Value::Int(3), &Value::Nil]), 0);
        let s = Value::str("x".repeat(1000));
        assert!(node_size(&s) >= 1000);
        let t = Value::tuple(vec![s.clone(), Value::Int(1)]);
        assert_eq!(message_size(&t), node_size(&t) + node_size(&s));
    }

    #[test]
    fn a_wide_message_is_charged_its_first_boxes_only() {
        let s = Value::str("z".repeat(100));
        let wide = Value::list(vec![s.clone(); 1000]);
        let want = node_size(&wide) + (MESSAGE_NODES as u64 - 1) * node_size(&s);
        assert_eq!(message_size(&wide), want);
        // A scalar child is no box and costs nothing.
        let mixed = Value::list(vec![Value::Int(1), s.clone(), Value::Nil]);
        assert_eq!(message_size(&mixed), node_size(&mixed) + node_size(&s));
    }

    /// Values of every shape `message_size` tells apart: scalars, strings and bytes of a few
    /// lengths, and tuples, lists, maps and function values, some wider than
    /// [`MESSAGE_NODES`], some holding containers.
    fn arb_message() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            (0usize..100).prop_map(|n| Value::str("s".repeat(n))),
            (0usize..100).prop_map(|n| Value::bytes(vec![7u8; n])),
        ];
        leaf.prop_recursive(3, 300, 70, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..70).prop_map(Value::tuple),
                proptest::collection::vec(inner.clone(), 0..70).prop_map(Value::list),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..4)
                    .prop_map(|kv| Value::Map(Arc::new(kv.into_iter().collect()))),
                proptest::collection::vec(inner, 0..3)
                    .prop_map(|env| Value::Fun(Arc::new(crate::value::Closure { func: 0, env }))),
            ]
        })
    }

    proptest::proptest! {
        /// The shortcuts of `message_size` (a string or bytes value, a flat tuple or list) give
        /// exactly what the walk gives.
        #[test]
        fn a_message_is_charged_what_the_walk_counts(v in arb_message()) {
            proptest::prop_assert_eq!(message_size(&v), message_size_walk(&v));
        }
    }

    proptest::proptest! {
        /// `Meter::add` in one add is the sum it always was: each charge rounded up to whole
        /// 32-byte units, the units saturating at `UNITS_MAX`, the gap left alone.
        #[test]
        fn the_meter_adds_whole_units_and_saturates(
            start in proptest::prop_oneof![0..=UNITS_MAX, UNITS_MAX - 1000..=UNITS_MAX],
            log in 10u32..31,
            bytes in proptest::prop_oneof![0u64..100_000, 0u64..=(u64::from(UNITS_MAX) * 32 + 64), proptest::prelude::any::<u64>()],
        ) {
            let mut m = Meter((start << 5) | log);
            let units = bytes.div_ceil(32).min(u64::from(UNITS_MAX));
            let want = (u64::from(start) + units).min(u64::from(UNITS_MAX));
            m.add(bytes);
            proptest::prop_assert_eq!(m.alloc(), want * 32);
            proptest::prop_assert_eq!(m.gap(), 1 << log);
        }
    }

    #[test]
    fn flat_values_around_the_node_limit_are_charged_as_the_walk_charges_them() {
        let s = Value::str("w".repeat(40));
        for n in [0, 1, MESSAGE_NODES - 2, MESSAGE_NODES - 1, MESSAGE_NODES, MESSAGE_NODES + 1, 200] {
            let mut items: Vec<Value> = (0..n).map(|i| Value::str("v".repeat(i))).collect();
            for l in [Value::list(items.clone()), Value::tuple(items.clone())] {
                assert_eq!(message_size(&l), message_size_walk(&l), "{n} items");
            }
            items.push(Value::Int(1));
            items.push(s.clone());
            let l = Value::list(items);
            assert_eq!(message_size(&l), message_size_walk(&l), "{n} items and two more");
        }
        // Below the limit a flat list is charged every box it holds.
        let l = Value::list(vec![s.clone(), Value::Nil, s.clone()]);
        assert_eq!(message_size(&l), node_size(&l) + 2 * node_size(&s));
        assert_eq!(message_size(&s), node_size(&s));
    }

    #[test]
    fn a_box_reached_twice_is_counted_once() {
        let s = Value::str("y".repeat(10_000));
        let t = Value::tuple(vec![s.clone(), s.clone(), s.clone()]);
        let once = node_size(&t) + node_size(&s);
        assert_eq!(reachable([&t]), once);
        assert_eq!(reachable([&t, &s]), once);
    }

    #[test]
    fn any_depth_is_measured_without_recursion() {
        let mut v = Value::Int(0);
        for _ in 0..200_000 {
            v = Value::list(vec![v]);
        }
        assert!(reachable([&v]) >= 200_000 * (COUNTS + VEC + SLOT));
        // A message is charged a bounded part of it.
        assert!(message_size(&v) <= MESSAGE_NODES as u64 * (COUNTS + VEC + SLOT));
        // (Dropping it is iterative too: see `Value`'s `Drop`.)
    }

    #[test]
    fn the_gap_between_counts_follows_the_live_size_and_the_limit() {
        let mut m = Meter::default();
        assert_eq!(m.gap(), u64::from(MIN_CHECK));
        m.counted(10 << 20, None);
        assert_eq!(m.gap(), 4 << 20);
        m.counted(0, None);
        assert_eq!(m.gap(), u64::from(MIN_CHECK));
        m.counted(10 << 20, Some(100_000));
        assert_eq!(m.gap(), 16_384);
        m.add(1);
        assert_eq!(m.alloc(), 32);
        assert!(!m.due());
        m.add(16_384);
        assert!(m.due());
        // `due` is `alloc() >= gap()` for every gap a count can set, on both sides of it.
        for (live, max) in [(0, None), (10 << 20, None), (10 << 20, Some(100_000)), (0, Some(1))] {
            let mut m = Meter::default();
            m.counted(live, max);
            let gap = m.gap();
            for add in [gap - 32, 31, 1, 32, gap] {
                m.add(add);
                assert_eq!(m.due(), m.alloc() >= m.gap(), "gap {gap}, allocated {}", m.alloc());
            }
        }
        m.add(u64::MAX);
        assert_eq!(m.alloc(), u64::from(UNITS_MAX) * 32);
        assert_eq!(growth(4, 4, 1, 16), 4 * 16);
        assert_eq!(growth(3, 4, 1, 16), 0);
    }
}
