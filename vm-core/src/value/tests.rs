//! Tests of values: equality, ordering, hashing, printing and dropping, at any depth.

use super::*;

#[test]
fn children_is_two_words() {
    assert_eq!(std::mem::size_of::<Children<'_>>(), 2 * std::mem::size_of::<usize>());
}

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

/// How deep the deep-value tests nest: what `list r1, r1, 1` in a loop builds in a moment.
const DEEP: usize = 100_000;

/// Runs `f` on a thread with a 256 KiB stack: recursing once per level of a value nested
/// [`DEEP`] levels would overflow it many times over (and abort the test process).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(256 * 1024).spawn(f).unwrap().join().unwrap()
}

/// `[[[...[leaf]...]]]`, `depth` lists around `leaf`, as `list r1, r1, 1` builds it.
fn nested_lists(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |v, _| Value::list(vec![v]))
}

/// Every kind of container in turn: a list, a tuple beside an int, a map value, a map key
/// and a function value's capture, `depth` levels in all.
fn nested_mix(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |v, i| match i % 5 {
        0 => Value::list(vec![v]),
        1 => Value::tuple(vec![Value::Int(i as i64), v]),
        2 => Value::Map(Arc::new(BTreeMap::from([(Value::atom("k"), v)]))),
        3 => Value::Map(Arc::new(BTreeMap::from([(v, Value::Nil)]))),
        _ => Value::Fun(Arc::new(Closure { func: 1, env: vec![Value::Nil, v] })),
    })
}

#[test]
fn walk_visits_each_value_before_its_contents_at_any_depth() {
    let v = Value::tuple(vec![
        Value::Int(1),
        Value::list(vec![Value::Int(2), Value::Int(3)]),
        Value::Map(Arc::new(BTreeMap::from([(Value::atom("k"), Value::Int(4))]))),
    ]);
    let seen: Vec<String> = v.walk().map(Value::repr).collect();
    assert_eq!(seen, ["{1, [2, 3], %{:k => 4}}", "1", "[2, 3]", "2", "3", "%{:k => 4}", ":k", "4"]);
    assert_eq!(Value::Int(7).walk().count(), 1);
    on_small_stack(|| {
        let deep = nested_mix(DEEP, Value::str("leaf"));
        assert_eq!(deep.walk().filter(|x| **x == Value::str("leaf")).count(), 1);
    });
}

#[test]
fn deep_values_drop_level_by_level() {
    on_small_stack(|| {
        drop(nested_lists(DEEP, Value::Int(1)));
        drop(nested_mix(DEEP, Value::str("leaf")));
        // A deep value shared at every level: dropping one holder frees nothing of the other's.
        let a = nested_mix(DEEP, Value::Nil);
        let b = Value::list(vec![a.clone(), a.clone()]);
        drop(a);
        assert_eq!(b.children().len(), 2);
        drop(b);
    });
}

#[test]
fn a_deep_value_frees_every_level() {
    // A channel handle at the bottom: its drop hook runs only if every level above it was freed.
    use std::sync::atomic::{AtomicU64, Ordering as O};
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    let h = Handle::with_drop_hook(7, Box::new(move |id| s2.store(id, O::SeqCst)));
    let v = nested_mix(DEEP, Value::Chan(h));
    on_small_stack(move || drop(v));
    assert_eq!(seen.load(O::SeqCst), 7);
}

#[test]
fn deep_values_compare_and_hash() {
    on_small_stack(|| {
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        for build in [nested_lists, nested_mix] {
            let a = build(DEEP, Value::Int(1));
            let b = build(DEEP, Value::Int(1));
            let c = build(DEEP, Value::Int(2));
            assert!(a == b);
            assert!(a != c);
            assert_eq!(a.cmp(&b), Ordering::Equal);
            assert_eq!(a.cmp(&c), Ordering::Less);
            assert_eq!(c.cmp(&a), Ordering::Greater);
            assert_eq!(state.hash_one(&a), state.hash_one(&b));
            assert_ne!(state.hash_one(&a), state.hash_one(&c));
            // As a key: a map and a hash set both find it.
            let m = BTreeMap::from([(a.clone(), 1), (c.clone(), 2)]);
            assert_eq!(m.get(&b), Some(&1));
            let set: std::collections::HashSet<Value> = [a, c].into_iter().collect();
            assert!(set.contains(&b));
        }
        // One level less is a shorter list at the bottom: it sorts first.
        let shallower = nested_lists(DEEP - 1, Value::list(vec![]));
        assert!(shallower < nested_lists(DEEP, Value::Int(1)));
    });
}

#[test]
fn deep_values_print_and_match() {
    on_small_stack(|| {
        let v = nested_lists(DEEP, Value::Int(1));
        let text = v.repr();
        assert_eq!(text, format!("{}1{}", "[".repeat(DEEP), "]".repeat(DEEP)));
        assert_eq!(v.to_string(), text);
        assert_eq!(format!("{v:?}"), text);
        let mix = nested_mix(10, Value::str("s")).repr();
        assert_eq!(mix, "#fun<1/2>", "a function value's captures are not shown, whatever they hold");
        let mix = nested_mix(9, Value::str("s")).repr();
        assert_eq!(mix, "%{%{:k => {6, [#fun<1/2>]}} => nil}");
        let mix = nested_mix(4, Value::str("s")).repr();
        assert_eq!(mix, r#"%{%{:k => {1, ["s"]}} => nil}"#);

        // A pattern as deep as the value, with a wildcard at the bottom.
        let pattern = nested_lists(DEEP, Value::atom("_"));
        assert!(matches(&pattern, &v));
        assert!(!matches(&pattern, &nested_lists(DEEP - 1, Value::Int(1))));
        assert!(matches(&nested_lists(DEEP, Value::Int(1)), &v));
        assert!(!matches(&nested_lists(DEEP, Value::Int(2)), &v));
    });
}

/// The order and equality as they were before they became iterative: children compared
/// lexicographically by recursion (what `Vec`'s and `BTreeMap`'s derived orders do).
fn reference_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Tuple(_), Value::Tuple(_))
        | (Value::List(_), Value::List(_))
        | (Value::Map(_), Value::Map(_))
        | (Value::Fun(_), Value::Fun(_)) => {
            if let (Value::Fun(x), Value::Fun(y)) = (a, b)
                && x.func != y.func
            {
                return x.func.cmp(&y.func);
            }
            let (mut x, mut y) = (a.children(), b.children());
            loop {
                match (x.next(), y.next()) {
                    (Some(p), Some(q)) => match reference_cmp(p, q) {
                        Ordering::Equal => {}
                        o => return o,
                    },
                    (None, None) => return Ordering::Equal,
                    (None, Some(_)) => return Ordering::Less,
                    (Some(_), None) => return Ordering::Greater,
                }
            }
        }
        _ => a.cmp_leaf(b),
    }
}

/// The same value in new allocations (so that no comparison can take the same-allocation
/// shortcut).
fn fresh_copy(v: &Value) -> Value {
    match v {
        Value::Tuple(t) => Value::tuple(t.iter().map(fresh_copy).collect()),
        Value::List(t) => Value::list(t.iter().map(fresh_copy).collect()),
        Value::Map(m) => {
            Value::Map(Arc::new(m.iter().map(|(k, x)| (fresh_copy(k), fresh_copy(x))).collect()))
        }
        Value::Fun(c) => {
            Value::Fun(Arc::new(Closure { func: c.func, env: c.env.iter().map(fresh_copy).collect() }))
        }
        Value::Str(s) => Value::str(s.as_str()),
        other => other.clone(),
    }
}

fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Nil),
        (0i64..3).prop_map(Value::Int),
        prop_oneof![Just(1.0), Just(f64::NAN), Just(-0.0)].prop_map(Value::Float),
        prop_oneof![Just("a"), Just("b")].prop_map(Value::str),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::tuple),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::list),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..3)
                .prop_map(|kv| Value::Map(Arc::new(kv.into_iter().collect()))),
            (0u32..2, proptest::collection::vec(inner, 0..2))
                .prop_map(|(func, env)| Value::Fun(Arc::new(Closure { func, env }))),
        ]
    })
}

proptest::proptest! {
    #[test]
    fn iterative_order_equality_and_hash_agree_with_recursive_ones(a in arb_value(), b in arb_value()) {
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        let want = reference_cmp(&a, &b);
        proptest::prop_assert_eq!(a.cmp(&b), want);
        proptest::prop_assert_eq!(b.cmp(&a), want.reverse());
        proptest::prop_assert_eq!(a == b, want == Ordering::Equal);
        if a == b {
            proptest::prop_assert_eq!(state.hash_one(&a), state.hash_one(&b));
        }
        // A copy made of fresh allocations is equal, orders equal and hashes equal.
        let copy = fresh_copy(&a);
        proptest::prop_assert!(a == copy);
        proptest::prop_assert_eq!(a.cmp(&copy), Ordering::Equal);
        proptest::prop_assert_eq!(state.hash_one(&a), state.hash_one(&copy));
    }
}

/// A hasher that keeps every byte written to it, to compare what two ways of hashing feed the
/// hasher (equal streams give equal hashes under any hasher).
#[derive(Default)]
struct Recorder(Vec<u8>);

impl std::hash::Hasher for Recorder {
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

/// What hashing fed the hasher before strings and bytes were hashed in `Hash::hash` itself.
fn hashed_the_old_way(v: &Value) -> Vec<u8> {
    let mut r = Recorder::default();
    if v.is_container() {
        super::hash_nested(v, &mut r)
    } else {
        v.hash_leaf(&mut r)
    }
    r.0
}

proptest::proptest! {
    /// `Hash::hash`'s own path for strings and bytes writes exactly what the general path
    /// writes, for those values and for every value holding them.
    #[test]
    fn a_string_or_bytes_key_hashes_as_the_general_path_does(
        v in arb_value(),
        text in "[a-z]{0,70}",
        b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70),
    ) {
        use std::hash::Hash;
        for v in [v, Value::str(text.as_str()), Value::bytes(b)] {
            let mut r = Recorder::default();
            v.hash(&mut r);
            proptest::prop_assert_eq!(r.0, hashed_the_old_way(&v));
        }
    }
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
