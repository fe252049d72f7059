use super::*;
use crate::id::make_pid;
use proptest::prelude::*;
use vm_core::Pid;

const HASH: u64 = 0x1234_5678_9abc_def0;

fn me() -> NodeId {
    NodeId::new("a", 100).unwrap()
}

fn no_res(_: &Handle) -> &'static str {
    "resource"
}

fn ectx(table: &NodeTable) -> EncodeCtx<'_> {
    EncodeCtx {
        table,
        module_hash: HASH,
        peer_module_hash: Some(HASH),
        max_size: 1 << 20,
        max_depth: Limits::default().max_depth,
        res_kind: &no_res,
    }
}

/// Encodes on node `a` and decodes on node `b`, returning the envelope and b's table.
fn cross(epoch: u32, seq: u64, sig: &Signal, a: &NodeTable) -> (Envelope, NodeTable) {
    let bytes = encode(&ectx(a), epoch, seq, sig).expect("encodes");
    let b = NodeTable::new(NodeId::new("b", 200).unwrap());
    let env =
        decode(&DecodeCtx { table: &b, module_hash: HASH, limits: Limits::default() }, &Bytes::from(bytes))
            .expect("decodes");
    (env, b)
}

pub(crate) fn every_signal() -> Vec<Signal> {
    let msg = Value::tuple(vec![
        Value::atom("hello"),
        Value::Int(-7),
        Value::Float(1.5),
        Value::str("text ✓"),
        Value::bytes(&b"\0\x01"[..]),
        Value::list(vec![Value::Nil, Value::Bool(true), Value::Bool(false)]),
        Value::Map(Arc::new([(Value::Int(1), Value::str("one"))].into_iter().collect())),
        Value::Pid(Pid(9)),
        Value::Ref(vm_core::value::Ref(12)),
    ]);
    vec![
        Signal::Send { to: 5, msg: msg.clone() },
        Signal::SendName { name: Atom::new("logger"), msg: Value::Int(1) },
        Signal::Spawn {
            req: 3,
            from: 9,
            func: Arc::from("worker"),
            args: vec![Value::Int(1), msg.clone()],
            opts: SpawnOptions {
                link: true,
                monitor: Some(-4),
                max_mailbox: Some(10),
                max_frames: Some(99),
                max_heap: Some(1 << 20),
            },
        },
        Signal::Spawn { req: 4, from: 9, func: Arc::from("w"), args: vec![], opts: SpawnOptions::default() },
        Signal::Spawned { req: 3, result: Ok(77) },
        Signal::Spawned { req: 3, result: Err(Atom::new("undef")) },
        Signal::Link { from: 1, to: 2 },
        Signal::Unlink { from: 1, to: 2 },
        Signal::Exit { from: 1, to: 2, linked: true, reason: Value::atom("noconnection") },
        Signal::Monitor { watcher: 1, target: 2, r: 42 },
        Signal::Demonitor { watcher: 1, target: 2, r: 42 },
        Signal::Down { watcher: 1, target: 2, r: 42, reason: msg },
        Signal::Interrupt { from: 1, to: 2, mode: 1, kind: Atom::new("stop"), msg: Value::str("now") },
        Signal::Kill { from: 1, to: 2 },
        Signal::Tick { last_seq: 10, ack: Ack { epoch: 2, seq: 9, bytes: 1000 } },
        Signal::Ack(Ack { epoch: 1, seq: u64::MAX, bytes: 1 }),
        Signal::Reset { dead: 7 },
        Signal::Announce(Announce { actors: 3, module_hash: HASH, uptime_ms: 1234, direct: None }),
        Signal::Bye,
        Signal::Switch { conn: 3 },
        Signal::Announce(Announce {
            actors: 1,
            module_hash: HASH,
            uptime_ms: 5,
            direct: Some(DirectAddr {
                addr: "127.0.0.1:4711".parse().unwrap(),
                token: crate::direct::Token([9; crate::direct::TOKEN_LEN]),
            }),
        }),
        Signal::Announce(Announce {
            actors: 1,
            module_hash: HASH,
            uptime_ms: 5,
            direct: Some(DirectAddr {
                addr: "[::1]:80".parse().unwrap(),
                token: crate::direct::Token([1; crate::direct::TOKEN_LEN]),
            }),
        }),
    ]
}

/// The envelopes the fuzz target starts from (`fuzz/seeds/envelope`).
pub(crate) fn seed_envelopes() -> Vec<(String, Vec<u8>)> {
    let a = NodeTable::new(me());
    // A pid of a third node, so that seeds exercise a node list of more than one entry.
    let c = a.pid(&NodeId::new("c", 300).unwrap(), 4).unwrap();
    let mut out = Vec::new();
    for (i, sig) in every_signal().into_iter().enumerate() {
        let sig = match sig {
            Signal::Send { to, .. } => {
                Signal::Send { to, msg: Value::list(vec![Value::Pid(c), Value::Pid(Pid(1))]) }
            }
            s => s,
        };
        let seq = if sig.is_sequenced() { i as u64 + 1 } else { 0 };
        out.push((format!("{i:02}"), encode(&ectx(&a), 1, seq, &sig).unwrap()));
    }
    let fun = Value::Fun(Arc::new(Closure { func: 2, env: vec![Value::Int(1)] }));
    out.push(("fun".into(), encode(&ectx(&a), 1, 1, &Signal::Send { to: 1, msg: fun }).unwrap()));
    out
}

#[test]
fn every_signal_round_trips() {
    let a = NodeTable::new(me());
    for sig in every_signal() {
        let seq = if sig.is_sequenced() { 12 } else { 0 };
        let (env, b) = cross(3, seq, &sig, &a);
        assert_eq!(env.from, me());
        assert_eq!((env.epoch, env.seq), (3, seq));
        match (&sig, &env.signal) {
            // The pid inside the message is a's local <9>: on b it names a's slot.
            (Signal::Send { msg: Value::Tuple(sent), .. }, Signal::Send { msg: Value::Tuple(got), .. }) => {
                assert_eq!(sent[..7], got[..7]);
                let Value::Pid(p) = got[7] else { panic!("pid expected, got {:?}", got[7]) };
                assert_eq!(b.node_of(p), Some(me()));
                assert_eq!(serial_of(p), 9);
            }
            (Signal::Down { .. }, Signal::Down { .. }) | (Signal::Spawn { .. }, Signal::Spawn { .. }) => {}
            _ => assert_eq!(sig, env.signal),
        }
    }
}

#[test]
fn pids_of_the_receiver_come_back_local_and_of_third_nodes_keep_their_node() {
    let a = NodeTable::new(me());
    let bid = NodeId::new("b", 200).unwrap();
    let cid = NodeId::new("c", 300).unwrap();
    let on_b = a.pid(&bid, 5).unwrap();
    let on_c = a.pid(&cid, 6).unwrap();
    let msg = Value::list(vec![Value::Pid(on_b), Value::Pid(on_c), Value::Pid(on_c)]);
    let (env, b) = cross(1, 1, &Signal::Send { to: 1, msg }, &a);
    let Signal::Send { msg: Value::List(items), .. } = &env.signal else { panic!() };
    assert_eq!(items[0], Value::Pid(Pid(5)), "a pid of the receiving node is its local pid");
    let Value::Pid(p) = items[1] else { panic!() };
    assert_eq!(b.node_of(p), Some(cid));
    assert_eq!(items[1], items[2]);
}

#[test]
fn references_keep_their_node_across_the_wire_and_come_home_equal() {
    use crate::id::make_ref;
    use vm_core::value::Ref;
    let a = NodeTable::new(me());
    let mine = Value::Ref(make_ref(0, 7));
    // b receives a's reference 7: it names a there, so it differs from b's own reference 7.
    let (env, b) = cross(1, 1, &Signal::Send { to: 1, msg: mine.clone() }, &a);
    let Signal::Send { msg: on_b, .. } = env.signal else { panic!() };
    let Value::Ref(r) = on_b else { panic!("{on_b:?}") };
    assert_ne!(r.node(), 0, "a's reference is remote on b");
    assert_eq!(b.node_of(make_pid(r.node(), 0)), Some(me()));
    assert_ne!(on_b, Value::Ref(Ref(7)));
    // Sent back to a (in a reply, say), it is a's own reference again: equal to the original,
    // so a pattern holding it matches.
    let bytes = encode(&ectx(&b), 1, 1, &Signal::Send { to: 1, msg: on_b }).expect("encodes");
    let ctx = DecodeCtx { table: &a, module_hash: HASH, limits: Limits::default() };
    let Signal::Send { msg: home, .. } = decode(&ctx, &Bytes::from(bytes)).expect("decodes").signal else {
        panic!()
    };
    assert_eq!(home, mine);
}

#[test]
fn references_of_two_incarnations_and_of_another_node_never_collide() {
    use crate::id::make_ref;
    // c receives reference 7 from a's first incarnation, from its next one, and from b.
    let c = NodeTable::new(NodeId::new("c", 300).unwrap());
    let arrive = |from: NodeId| {
        let t = NodeTable::new(from);
        let bytes = encode(&ectx(&t), 1, 1, &Signal::Send { to: 1, msg: Value::Ref(make_ref(0, 7)) })
            .expect("encodes");
        let ctx = DecodeCtx { table: &c, module_hash: HASH, limits: Limits::default() };
        let Signal::Send { msg, .. } = decode(&ctx, &Bytes::from(bytes)).expect("decodes").signal else {
            panic!()
        };
        msg
    };
    let a1 = arrive(NodeId::new("a", 10).unwrap());
    let a2 = arrive(NodeId::new("a", 20).unwrap());
    let b = arrive(NodeId::new("b", 10).unwrap());
    let own = Value::Ref(make_ref(0, 7));
    let all = [&a1, &a2, &b, &own];
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            assert_ne!(x, y, "two references made by different incarnations are equal");
        }
    }
    assert_eq!(arrive(NodeId::new("a", 10).unwrap()), a1, "the same incarnation's reference is equal");
}

#[test]
fn a_stale_incarnation_of_the_receiver_stays_remote() {
    let a = NodeTable::new(me());
    let old_b = NodeId::new("b", 150).unwrap();
    let stale = a.pid(&old_b, 5).unwrap();
    let (env, b) = cross(1, 1, &Signal::Send { to: 1, msg: Value::Pid(stale) }, &a);
    let Signal::Send { msg: Value::Pid(p), .. } = env.signal else { panic!() };
    assert_ne!(slot_of(p), 0, "a pid of b's previous incarnation must not reach b's actor <5>");
    assert_eq!(b.node_of(p), Some(old_b));
}

#[test]
fn what_cannot_cross_is_refused() {
    let a = NodeTable::new(me());
    let ctx = ectx(&a);
    let chan = Value::Chan(Handle::new(1));
    let res = Value::Res(Handle::new(2));
    let nested = Value::tuple(vec![Value::Int(1), Value::list(vec![chan])]);
    assert_eq!(
        encode(&ctx, 1, 1, &Signal::Send { to: 1, msg: nested }),
        Err(EncodeError::NotDistributable("chan"))
    );
    assert_eq!(
        encode(&ctx, 1, 1, &Signal::Send { to: 1, msg: res }),
        Err(EncodeError::NotDistributable("resource"))
    );
    let table = |_: &Handle| "table";
    let tctx = EncodeCtx { res_kind: &table, ..ectx(&a) };
    let res = Value::Res(Handle::new(3));
    assert_eq!(
        encode(&tctx, 1, 1, &Signal::Send { to: 1, msg: res }),
        Err(EncodeError::NotDistributable("table"))
    );
    let fun = Value::Fun(Arc::new(Closure { func: 0, env: vec![] }));
    let other = EncodeCtx { peer_module_hash: Some(HASH + 1), ..ectx(&a) };
    assert_eq!(
        encode(&other, 1, 1, &Signal::Send { to: 1, msg: fun }),
        Err(EncodeError::NotDistributable("fun"))
    );
}

#[test]
fn the_size_limit_is_checked_before_anything_is_sent() {
    let a = NodeTable::new(me());
    let ctx = EncodeCtx { max_size: 1000, ..ectx(&a) };
    let big = Value::bytes(vec![0u8; 2000]);
    assert_eq!(
        encode(&ctx, 1, 1, &Signal::Send { to: 1, msg: big }),
        Err(EncodeError::TooLarge { limit: 1000 })
    );
    let many = Value::list((0..1000).map(Value::Int).collect());
    assert_eq!(
        encode(&ctx, 1, 1, &Signal::Send { to: 1, msg: many }),
        Err(EncodeError::TooLarge { limit: 1000 })
    );
    let fits = Value::bytes(vec![0u8; 900]);
    assert!(encode(&ctx, 1, 1, &Signal::Send { to: 1, msg: fits }).is_ok());
}

fn nested(depth: usize) -> Value {
    let mut v = Value::Nil;
    for _ in 0..depth {
        v = Value::tuple(vec![v]);
    }
    v
}

#[test]
fn depth_is_limited_on_both_sides() {
    let a = NodeTable::new(me());
    let max = Limits::default().max_depth;
    assert!(encode(&ectx(&a), 1, 1, &Signal::Send { to: 1, msg: nested(max) }).is_ok());
    assert_eq!(
        encode(&ectx(&a), 1, 1, &Signal::Send { to: 1, msg: nested(max + 1) }),
        Err(EncodeError::TooDeep(max))
    );
    // A hostile sender that ignores the limit: 100,000 nested tuples of one element each.
    let mut body = vec![VERSION, kind::SEND, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    body.extend(std::iter::repeat_n([tag::TUPLE, 1], 100_000).flatten());
    body.push(tag::NIL);
    let at = body.len() as u32;
    body.extend_from_slice(&[1, 1, b'a']);
    body.extend_from_slice(&100u64.to_le_bytes());
    body.extend_from_slice(&at.to_le_bytes());
    let b = NodeTable::new(NodeId::new("b", 1).unwrap());
    let err =
        decode(&DecodeCtx { table: &b, module_hash: HASH, limits: Limits::default() }, &Bytes::from(body));
    assert!(err.unwrap_err().0.contains("deep"));
}

fn dctx(t: &NodeTable) -> DecodeCtx<'_> {
    DecodeCtx { table: t, module_hash: HASH, limits: Limits::default() }
}

#[test]
fn every_truncation_and_every_byte_flip_is_refused_or_decodes_without_panicking() {
    let b = NodeTable::new(NodeId::new("b", 1).unwrap());
    for (_, seed) in seed_envelopes() {
        for n in 0..seed.len() {
            assert!(decode(&dctx(&b), &Bytes::copy_from_slice(&seed[..n])).is_err(), "a truncation decoded");
        }
        for i in 0..seed.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut m = seed.clone();
                m[i] ^= x;
                let _ = decode(&dctx(&b), &Bytes::from(m));
            }
        }
    }
}

#[test]
fn hostile_counts_and_names_are_refused() {
    let b = NodeTable::new(NodeId::new("b", 1).unwrap());
    let a = NodeTable::new(me());
    let good = encode(&ectx(&a), 1, 1, &Signal::Send { to: 1, msg: Value::list(vec![]) }).unwrap();
    // The list's count byte is at HEADER_LEN + 2 (after the serial and the tag): claim 2^62 items.
    let mut huge = good[..HEADER_LEN + 2].to_vec();
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    let at = huge.len() as u32;
    huge.extend_from_slice(&good[good.len() - 4 - 11..good.len() - 4]);
    huge.extend_from_slice(&at.to_le_bytes());
    assert!(decode(&dctx(&b), &Bytes::from(huge)).unwrap_err().0.contains("exceeds what follows"));
    // A node name that is not a subject token.
    let mut bad_name = good.clone();
    let name_at = good.len() - 4 - 8 - 1;
    bad_name[name_at] = b'.';
    assert!(decode(&dctx(&b), &Bytes::from(bad_name)).unwrap_err().0.contains("node name"));
    // A sequenced kind without a sequence number, and an unsequenced one with one.
    let mut unseq = good.clone();
    unseq[6] = 0;
    assert!(decode(&dctx(&b), &Bytes::from(unseq)).is_err());
    let tick = encode(&ectx(&a), 1, 5, &Signal::Bye).unwrap();
    assert!(decode(&dctx(&b), &Bytes::from(tick)).is_err());
}

#[test]
fn a_function_value_crosses_only_to_the_same_module() {
    let a = NodeTable::new(me());
    let fun = Value::Fun(Arc::new(Closure { func: 3, env: vec![Value::Int(2)] }));
    let (env, _) = cross(1, 1, &Signal::Send { to: 1, msg: fun.clone() }, &a);
    assert_eq!(env.signal, Signal::Send { to: 1, msg: fun.clone() });
    let bytes = encode(&ectx(&a), 1, 1, &Signal::Send { to: 1, msg: fun }).unwrap();
    let b = NodeTable::new(NodeId::new("b", 1).unwrap());
    let other = DecodeCtx { table: &b, module_hash: HASH ^ 1, limits: Limits::default() };
    assert!(decode(&other, &Bytes::from(bytes)).unwrap_err().0.contains("another module"));
}

#[test]
fn stamping_sets_epoch_and_sequence() {
    let a = NodeTable::new(me());
    let mut bytes = encode(&ectx(&a), 0, 1, &Signal::Kill { from: 1, to: 2 }).unwrap();
    stamp(&mut bytes, 9, 1 << 40);
    let b = NodeTable::new(NodeId::new("b", 1).unwrap());
    let env = decode(&dctx(&b), &Bytes::from(bytes)).unwrap();
    assert_eq!((env.epoch, env.seq), (9, 1 << 40));
}

fn fuzz_dir(sub: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(sub)
}

/// The committed seeds of the `envelope` fuzz target are what this build encodes; regenerate
/// with `UPDATE_EXPECT=1 cargo test -p vm-dist seed` (the workspace's one switch for expected
/// files).
#[test]
fn seed_corpus_is_up_to_date() {
    let dir = fuzz_dir("seeds/envelope");
    for (name, bytes) in seed_envelopes() {
        let path = dir.join(format!("{name}.bin"));
        if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            bytes,
            "{} is out of date: run UPDATE_EXPECT=1 cargo test -p vm-dist seed",
            path.display()
        );
    }
}

/// Replays every seed and every regression input of the fuzz target through the decoder: a bug
/// the fuzzer once found stays fixed without a fuzzer.
#[test]
fn replay_fuzz_seeds_and_regressions() {
    let mut n = 0;
    for sub in ["seeds/envelope", "regressions/envelope"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir(sub)) else { continue };
        for entry in dir {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            crate::fuzz_envelope(&bytes);
            n += 1;
        }
    }
    assert!(n >= seed_envelopes().len(), "the seed corpus is missing");
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        "[a-z_]{1,12}".prop_map(|s| Value::atom(&s)),
        ".{0,20}".prop_map(Value::str),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::bytes),
        (0u64..1000).prop_map(|s| Value::Pid(make_pid(0, s))),
        (1u64..1000).prop_map(|s| Value::Ref(crate::id::make_ref(0, s))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::tuple),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::list),
            proptest::collection::btree_map(inner.clone(), inner, 0..4).prop_map(|m| Value::Map(Arc::new(m))),
        ]
    })
}

proptest! {
    #[test]
    fn values_round_trip(v in value()) {
        let a = NodeTable::new(me());
        let (env, b) = cross(1, 1, &Signal::Send { to: 1, msg: v.clone() }, &a);
        let Signal::Send { msg, .. } = env.signal else { panic!() };
        // Pids change representation (a's local pids are remote on b); compare through b's table.
        prop_assert_eq!(same_up_to_pids(&v, &msg, &b), true);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        crate::fuzz_envelope(&bytes);
    }
}

fn same_up_to_pids(sent: &Value, got: &Value, b: &NodeTable) -> bool {
    match (sent, got) {
        (Value::Pid(p), Value::Pid(q)) => b.node_of(*q) == Some(me()) && serial_of(*p) == serial_of(*q),
        (Value::Ref(r), Value::Ref(s)) => {
            b.node_of(make_pid(s.node(), 0)) == Some(me()) && r.serial() == s.serial()
        }
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(s, g)| same_up_to_pids(s, g, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((k1, v1), (k2, v2))| same_up_to_pids(k1, k2, b) && same_up_to_pids(v1, v2, b))
        }
        _ => sent == got,
    }
}
