use super::v1::{self, Actor, Counters, Meta, Recipe, VRef, Wait};
use super::*;
use crate::exception::Exception;
use crate::interp::step;
use crate::step::{
    ActorOp, ActorState, Effect, Fired, Host, NativeCall, NativeId, Resume, SelectCase, SpawnOpts, Step,
};
use crate::testgen::{expect_file, files_in};
use crate::value::{Closure, Handle, Pid, Value};
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

/// Calls several frames deep, a closure, a handler that catches, shared and nested values,
/// receives, sleeps and a native call, printing as it goes: a snapshot taken at any point of it
/// has something in every part of an actor's state.
const PROGRAM: &str = r#"
.func main 1
    int r1, 0
    int r2, 8
    const r3, [1, 2, 3]
    map r4
    int r10, 5
    closure r5, scale, r10, 1
loop:
    try r8, caught
    move r6, r1
    call r7, work, r5, 2
    endtry
    mput r4, r4, r1, r7
    append r3, r3, r7
    jmp next
caught:
    print r8
next:
    recv r9
    print r9
    int r12, 2
    sleep r12
    try r14, failed
    native r13, :test_echo, r1, 1
    endtry
    print r13
    jmp more
failed:
    print r14
more:
    addi r1, r1, 1
    jlt r1, r2, loop
    print r4
    print r3
    ret r4
.end

.func work 2
    jeqi r1, 4, bad
    move r2, r1
    callv r3, r0, r2, 1
    call r4, deep, r3, 1
    tuple r5, r3, 2
    ret r5
bad:
    call r4, deep, r1, 1
    const r6, :boom
    raise r6, r4
.end

.func deep 1
    jlei r0, 0, done
    addi r1, r0, -7
    call r2, deep, r1, 1
    addi r2, r2, 1
    ret r2
done:
    int r1, 0
    ret r1
.end

.func scale 2
    mul r2, r0, r1
    ret r2
.end
"#;

fn program() -> Arc<Module> {
    Arc::new(crate::asm::assemble_str("snap.vasm", PROGRAM).expect("the test program assembles"))
}

/// The runtime's side for one actor: a mailbox the test fills.
#[derive(Default)]
struct OneActor {
    mailbox: VecDeque<Value>,
}

impl Host for OneActor {
    fn self_pid(&self) -> Pid {
        Pid(1)
    }
    fn spawn(
        &mut self,
        _: Arc<Closure>,
        _: Vec<Value>,
        _: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception> {
        Err(Exception::badarg("no spawning here"))
    }
    fn send(&mut self, _: Pid, _: Value) -> Result<(), Exception> {
        Ok(())
    }
    fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value> {
        let i = self.mailbox.iter().position(|m| pattern.is_none_or(|p| crate::value::matches(p, m)))?;
        self.mailbox.remove(i)
    }
    fn now_ms(&self) -> i64 {
        0
    }
    fn control(&mut self, _: ActorOp) -> Result<Value, Exception> {
        Ok(Value::Nil)
    }
    fn chan_new(&mut self, _: usize) -> Result<Value, Exception> {
        Err(Exception::badarg("no channels here"))
    }
    fn chan_try(&mut self, _: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        Ok(None)
    }
    fn chan_close(&mut self, _: &Handle) -> Result<(), Exception> {
        Ok(())
    }
    /// `test_echo` is left to the runtime (the test), as a blocking native is.
    fn native(&mut self, name: crate::atom::Atom, _: &[Value]) -> NativeCall {
        if name == echo() { NativeCall::Deferred(NativeId(7)) } else { NativeCall::unknown(name) }
    }
}

fn echo() -> crate::atom::Atom {
    crate::atom::Atom::new("test_echo")
}

fn meta() -> Meta {
    Meta {
        writer: "snapshot tests".into(),
        taken_unix_ms: 1_700_000_000_000,
        vm_time_ms: 1234,
        counters: Counters { next_pid: 3, next_ref: 3, next_chan: 2, next_handle: 7 },
        config: v1::Config {
            fuel: 2,
            max_frames: 100,
            max_actors: 10,
            hog_threshold_ms: 100,
            workers: Some(2),
        },
        schedule: v1::Schedule { every_ms: Some(50), on_term: true, keep: 3 },
        main: Some(1),
        ..Meta::default()
    }
}

fn actor(pid: u64, state: v1::State, wait: Wait, mailbox: Vec<VRef>) -> Actor {
    Actor {
        pid,
        state,
        wait,
        mailbox,
        signals: vec![],
        name: None,
        links: vec![],
        monitors: vec![],
        monitoring: vec![],
        trap_exit: false,
        max_mailbox: None,
    }
}

/// What the one actor of [`run`] waits for, in live terms.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Waiting {
    Not,
    Timed(u64),
    Native(crate::atom::Atom),
}

fn wait_of(w: &mut Writer, waiting: Waiting) -> Wait {
    match waiting {
        Waiting::Not => Wait::Runnable,
        Waiting::Timed(ms) => Wait::Timed { remaining_ms: ms },
        Waiting::Native(name) => Wait::Native { name: w.atom(name) },
    }
}

/// A snapshot of the one actor of [`run`].
fn capture(m: &Arc<Module>, st: &ActorState, mailbox: &VecDeque<Value>, waiting: Waiting) -> Snapshot {
    let mut w = Writer::new();
    let state = w.state(st);
    let mailbox = mailbox.iter().map(|v| w.value(v)).collect();
    let wait = wait_of(&mut w, waiting);
    Snapshot {
        meta: meta(),
        module: m.clone(),
        values: w.finish(),
        actors: vec![actor(1, state, wait, mailbox)],
        channels: vec![],
        tables: vec![],
        resources: vec![],
        limits: vec![],
        rngs: vec![],
        containers: vec![],
        shared_channels: vec![],
    }
}

/// Captures, encodes, decodes and restores the actor, as a VM that is snapshotted and resumed
/// does; checks that the restored state captures to the very same bytes.
fn round_trip(m: &Arc<Module>, st: &mut ActorState, host: &mut OneActor, waiting: Waiting) {
    let bytes = encode(&capture(m, st, &host.mailbox, waiting));
    let back = decode(&bytes).unwrap_or_else(|e| panic!("a snapshot of a running actor loads: {e}"));
    let r = Reader::new(back.values.clone(), HashMap::new(), HashMap::new());
    let restored = match back.actors[0].wait {
        Wait::Runnable => Waiting::Not,
        Wait::Timed { remaining_ms } => Waiting::Timed(remaining_ms),
        Wait::Native { name } => Waiting::Native(r.atom(name)),
    };
    assert_eq!(restored, waiting);
    *st = r.state(&back.actors[0].state);
    host.mailbox = back.actors[0].mailbox.iter().map(|&x| r.value(x)).collect();
    assert_eq!(*back.module, **m);
    assert!(encode(&capture(m, st, &host.mailbox, waiting)) == bytes, "restore + capture changed the file");
}

/// Runs [`PROGRAM`] to its end with one unit of fuel per slice, snapshotting and restoring at
/// every `every`-th opportunity (0: never): after a yield, and when blocked (then the restored
/// actor must block again the same way, re-running its instruction). Returns what it printed
/// and did, its result, and how many snapshots were taken.
fn run(every: usize) -> (Vec<String>, Value, usize) {
    let m = program();
    let main = m.func_index("main").unwrap();
    let mut st = ActorState::new(&m, main, vec![Value::list(vec![])]).unwrap();
    let mut host = OneActor::default();
    let mut script: VecDeque<Value> =
        (0..10).map(|i| Value::tuple(vec![Value::atom("msg"), Value::Int(i)])).collect();
    let (mut log, mut chances, mut snaps) = (Vec::new(), 0usize, 0usize);
    let mut now = |snaps: &mut usize| {
        chances += 1;
        let yes = every > 0 && chances.is_multiple_of(every);
        *snaps += usize::from(yes);
        yes
    };
    loop {
        match step(&mut st, &m, &mut host, 1) {
            Step::Yielded => {
                if now(&mut snaps) {
                    round_trip(&m, &mut st, &mut host, Waiting::Not);
                }
            }
            Step::Blocked(effect) => {
                if now(&mut snaps) {
                    let waiting = match &effect {
                        Effect::Sleep { ms } => Waiting::Timed(*ms),
                        Effect::Native { .. } => Waiting::Native(echo()),
                        _ => Waiting::Not,
                    };
                    round_trip(&m, &mut st, &mut host, waiting);
                    // Restart, not replay: the instruction runs again and blocks the same way.
                    assert_eq!(step(&mut st, &m, &mut host, 1), Step::Blocked(effect.clone()));
                }
                match effect {
                    Effect::Print(text) => {
                        log.push(text);
                        st.resume(&m, Resume::Value(Value::Nil));
                    }
                    Effect::Sleep { ms } => {
                        log.push(format!("sleep {ms}"));
                        st.resume(&m, Resume::Value(Value::Nil));
                    }
                    // The message arrives; the receive runs again and takes it.
                    Effect::Receive { .. } => host.mailbox.push_back(script.pop_front().expect("a message")),
                    // The third call fails: its exception is raised at the instruction.
                    Effect::Native { args, .. } if args == [Value::Int(2)] => {
                        log.push("native test_echo fails".to_string());
                        st.resume(&m, Resume::Raise(Exception::new(echo(), "failed on purpose")));
                    }
                    Effect::Native { args, .. } => {
                        log.push(format!("native test_echo {args:?}"));
                        st.resume(&m, Resume::Value(Value::tuple(args)));
                    }
                    other => panic!("unexpected effect {other:?}"),
                }
                // Between a resume and the next slice (a pending exception, say).
                if now(&mut snaps) {
                    round_trip(&m, &mut st, &mut host, Waiting::Not);
                }
            }
            Step::Exited(v) => return (log, v, snaps),
            Step::Failed(f) => panic!("the program failed: {f:?}"),
        }
    }
}

#[test]
fn snapshots_taken_anywhere_change_nothing() {
    let (log, result, _) = run(0);
    assert!(log.len() > 20, "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("{:boom")), "the handler caught: {log:?}");
    assert!(log.iter().any(|l| l == "{:test_echo, \"failed on purpose\"}"), "{log:?}");
    for every in [1, 2, 3, 5, 7] {
        let (again, r, snaps) = run(every);
        assert!(snaps >= 10, "every {every}: only {snaps} snapshots");
        assert_eq!(again, log, "snapshotting at every {every}th chance changed the output");
        assert_eq!(r, result);
    }
}

#[test]
fn a_value_held_by_many_actors_is_written_once_and_restored_shared() {
    let m = program();
    let big = Value::list((0..1000).map(Value::Int).collect());
    let pair = Value::tuple(vec![big.clone(), big.clone()]);
    let mut w = Writer::new();
    let actors: Vec<Actor> = (1..=100u64)
        .map(|pid| {
            let mut st = ActorState::new(&m, m.func_index("deep").unwrap(), vec![Value::Int(1)]).unwrap();
            st.regs[1] = pair.clone();
            actor(pid, w.state(&st), Wait::Runnable, vec![w.value(&big)])
        })
        .collect();
    let values = w.finish();
    // The list, and the tuple holding it twice.
    assert_eq!(values.shared.len(), 2);
    let s = Snapshot {
        meta: Meta { counters: Counters { next_pid: 101, ..meta().counters }, ..meta() },
        module: m.clone(),
        values,
        actors,
        channels: vec![],
        tables: vec![],
        resources: vec![],
        limits: vec![],
        rngs: vec![],
        containers: vec![],
        shared_channels: vec![],
    };
    let bytes = encode(&s);
    let one_list = postcard::to_stdvec(&v1::Boxed::List((0..1000).map(VRef::Int).collect())).unwrap().len();
    assert!(
        bytes.len() < one_list + 100 * 40,
        "{} bytes for a {one_list}-byte list held 300 times",
        bytes.len()
    );
    let back = decode(&bytes).unwrap();
    let r = Reader::new(back.values, HashMap::new(), HashMap::new());
    let lists: Vec<Value> = back
        .actors
        .iter()
        .flat_map(|a| {
            let st = r.state(&a.state);
            let Value::Tuple(t) = &st.regs[1] else { panic!("a tuple") };
            [t[0].clone(), t[1].clone(), r.value(a.mailbox[0])]
        })
        .collect();
    let Value::List(first) = &lists[0] else { panic!("a list") };
    assert_eq!(lists[0], big);
    assert!(lists.iter().all(|l| matches!(l, Value::List(x) if Arc::ptr_eq(x, first))), "one allocation");
}

fn nested(depth: u32) -> Value {
    (0..depth).fold(Value::Int(7), |v, _| Value::list(vec![v]))
}

#[test]
fn values_nested_100_000_deep_are_written_checked_and_read_back() {
    // On a small stack: a walk recursing once per level would overflow it many times over.
    let run = || {
        let m = program();
        let mut st = ActorState::new(&m, m.func_index("deep").unwrap(), vec![Value::Int(1)]).unwrap();
        st.regs[1] = nested(100_000);
        let mut s = capture(&m, &st, &VecDeque::new(), Waiting::Not);
        s.meta.main = None;
        check(&s).unwrap();
        let back = decode(&encode(&s)).unwrap();
        let r = Reader::new(back.values, HashMap::new(), HashMap::new());
        assert_eq!(r.state(&back.actors[0].state).regs[1], nested(100_000));
    };
    std::thread::Builder::new().stack_size(256 * 1024).spawn(run).unwrap().join().unwrap();
}

/// A snapshot with something in every section: two actors (one waiting in a native call, one
/// with a name, links, monitors, signals and a mailbox holding handles), a channel that holds
/// its own handle, a table and a resource of every recipe.
fn rich() -> Snapshot {
    let m = program();
    let main = m.func_index("main").unwrap();
    let mut st = ActorState::new(&m, main, vec![Value::list(vec![])]).unwrap();
    let mut host = OneActor { mailbox: vec![Value::atom("hello")].into() };
    loop {
        match step(&mut st, &m, &mut host, 5) {
            Step::Blocked(Effect::Native { .. }) => break,
            Step::Blocked(Effect::Print(_) | Effect::Sleep { .. }) => {
                st.resume(&m, Resume::Value(Value::Nil))
            }
            Step::Blocked(Effect::Receive { .. }) => host.mailbox.push_back(Value::Int(1)),
            Step::Yielded => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let chan = Handle::new(1);
    let [listener, file, conn, closed] = [2, 3, 4, 5].map(Handle::new);
    let table = Handle::new(6);
    let mut w = Writer::new();
    let echo = w.atom(crate::atom::Atom::new("test_echo"));
    let mut first = actor(1, w.state(&st), Wait::Native { name: echo }, vec![]);
    first.monitoring = vec![(1, 2)];
    first.links = vec![2];
    let mut other =
        ActorState::new(&m, m.func_index("work").unwrap(), vec![Value::Nil, Value::Int(3)]).unwrap();
    other.set_pending(Some(Exception::new(crate::atom::Atom::new("later"), "raised next")));
    let msg = Value::tuple(vec![
        Value::Chan(chan.clone()),
        Value::Res(listener.clone()),
        Value::Res(file.clone()),
        Value::Res(conn.clone()),
        Value::Res(closed.clone()),
        Value::Res(table.clone()),
        Value::Pid(Pid(1)),
        Value::Ref(crate::value::Ref(2)),
        Value::Float(f64::NAN),
        Value::bytes(&b"\x00\xff"[..]),
        Value::Fun(Arc::new(Closure { func: m.func_index("scale").unwrap(), env: vec![Value::Int(2)] })),
    ]);
    let mut second =
        actor(2, w.state(&other), Wait::Runnable, vec![w.value(&msg), w.value(&Value::str("second"))]);
    second.name = Some(w.atom(crate::atom::Atom::new("worker")));
    second.links = vec![1];
    second.monitors = vec![(1, 1)];
    second.trap_exit = true;
    second.max_mailbox = Some(10);
    second.signals = vec![
        v1::Signal::Exit { from: 1, reason: w.value(&Value::atom("shutdown")) },
        v1::Signal::Interrupt { exc: w.exception(&Exception::badarg("stop that")), mode: 1 },
        v1::Signal::Kill { reason: VRef::Nil },
    ];
    let mut channels = Vec::new();
    let mut tables = Vec::new();
    let mut resources = Vec::new();
    loop {
        let (chans, res) = w.new_handles();
        if chans.is_empty() && res.is_empty() {
            break;
        }
        for h in chans {
            let buffer = vec![w.value(&Value::Chan(h.clone())), w.value(&Value::str("queued"))];
            channels.push(v1::Channel { id: h.id(), cap: 2, buffer, closed: false });
        }
        for h in res {
            let id = h.id();
            if id == table.id() {
                let entries = vec![(w.value(&Value::str("k")), w.value(&Value::list(vec![Value::Int(1)])))];
                tables.push(v1::Table { id, entries });
                continue;
            }
            let recipe = match id {
                2 => Recipe::Listener { addr: "127.0.0.1:6379".into() },
                3 => Recipe::File {
                    path: "/tmp/x".into(),
                    read: true,
                    write: false,
                    append: false,
                    pos: 3,
                    len: 9,
                },
                4 => Recipe::Lost,
                _ => Recipe::Closed,
            };
            resources.push(v1::Resource { id, owner: 2, label: format!("resource {id}"), recipe });
        }
    }
    Snapshot {
        meta: meta(),
        module: m,
        values: w.finish(),
        actors: vec![first, second],
        channels,
        tables,
        resources,
        limits: vec![v1::ActorLimits { pid: 2, max_heap: Some(1 << 20) }],
        rngs: vec![v1::ActorRng { pid: 2, state: 0x1234_5678_9abc_def0 }],
        containers: vec![],
        shared_channels: vec![],
    }
}

#[test]
fn a_rich_snapshot_round_trips() {
    let s = rich();
    assert_eq!(s.channels.len(), 1);
    assert_eq!((s.tables.len(), s.resources.len()), (1, 4));
    let bytes = encode(&s);
    let back = decode(&bytes).unwrap();
    assert_eq!(back.actors, s.actors);
    assert_eq!((&back.channels, &back.tables, &back.resources), (&s.channels, &s.tables, &s.resources));
    assert_eq!(back.values, s.values);
    assert_eq!(back.meta, Meta { module_hash: module_hash(&crate::bytecode::encode(&s.module)), ..s.meta });
    assert!(encode(&back) == bytes);
    // Handles resolve to the runtime's new ones, wherever they are.
    let chan = Handle::new(1);
    let r = Reader::new(back.values, HashMap::from([(1, chan.clone())]), HashMap::new());
    let Value::Chan(ref inside) = r.value(back.channels[0].buffer[0]) else { panic!("a channel") };
    assert_eq!(inside.id(), 1);
    // One handle: the test's, the reader's, the one in the shared message tuple, and `inside`.
    assert_eq!(chan.ref_count(), 4);
    let st = r.state(&back.actors[1].state);
    assert_eq!(st.pending().unwrap().kind, crate::atom::Atom::new("later"));
}

fn err(bytes: &[u8]) -> String {
    match decode(bytes) {
        Ok(_) => panic!("decoded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_damaged_byte_and_every_truncation_is_refused() {
    let bytes = encode(&rich());
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        let e = err(&b);
        assert!(e.starts_with("damaged snapshot: "), "byte {i}: {e}");
    }
    for n in 0..bytes.len() {
        let e = err(&bytes[..n]);
        assert!(e.starts_with("damaged snapshot: "), "length {n}: {e}");
    }
    assert!(err(&bytes[..bytes.len() - 13]).contains("without the end section (was a write interrupted?)"));
    assert_eq!(err(b""), "damaged snapshot: truncated header: the file has 0 bytes");
    assert_eq!(err(b"VMSNAP\r\n\x1a\n\x01"), "damaged snapshot: truncated header: the file has 11 bytes");
    assert_eq!(err(&crate::bytecode::encode(&program())), "damaged snapshot: bad magic: not a VM snapshot");
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(err(&extra).contains("1 bytes after the end section"));
    let mut flipped = bytes.clone();
    let at = 20;
    flipped[at] ^= 1;
    assert!(
        err(&flipped).contains("checksum mismatch in the meta section at offset 14: the file is corrupt")
    );
}

/// Splits an encoded file into its sections (id, body), without the end section.
fn sections(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut at = MAGIC.len() + 4;
    let mut out = Vec::new();
    while bytes[at] != section::END {
        let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push((bytes[at], bytes[at + 9..at + 9 + len].to_vec()));
        at += 9 + len;
    }
    out
}

/// Builds a file from sections, with correct checksums.
fn file(version: (u16, u16), parts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&version.0.to_le_bytes());
    out.extend_from_slice(&version.1.to_le_bytes());
    for (id, body) in parts {
        out.push(*id);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(body);
    }
    out.extend_from_slice(&[section::END, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    reseal(&out)
}

#[test]
fn versions_custom_sections_and_section_order() {
    let all = sections(&encode(&rich()));
    // Format 1.1 adds the limits section (0x80), a custom section, written only when an actor
    // has a limit; 1.2 the rng section (0x81). A 1.0 file without them still loads, and a 1.1
    // file without the rng section too (its actors get fresh generators).
    assert_eq!(all.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7, 0x80, 0x81]);
    let both = decode(&file((1, 2), &all)).unwrap();
    assert_eq!((both.limits, both.rngs), (rich().limits, rich().rngs));
    let parts = all[..7].to_vec();
    let old = decode(&file((1, 0), &parts)).unwrap();
    assert!(old.limits.is_empty() && old.rngs.is_empty());
    let v11 = decode(&file((1, 1), &all[..8])).unwrap();
    assert_eq!((v11.limits, v11.rngs), (rich().limits, vec![]));
    // The rng section must decode, name actors of the file, and appear once.
    let mut bad_rng = parts.clone();
    bad_rng.push((0x81, b"not postcard".to_vec()));
    assert!(err(&file((1, 2), &bad_rng)).contains("rng section"));
    let mut stranger = parts.clone();
    let rngs = vec![v1::ActorRng { pid: 99, state: 1 }];
    stranger.push((0x81, postcard::to_stdvec(&rngs).unwrap()));
    assert!(err(&file((1, 2), &stranger)).contains("the rng section names actor <99>"));
    let mut twice = all.clone();
    twice.push(all[8].clone());
    assert!(err(&file((1, 2), &twice)).contains("a second rng section"));
    // A newer minor version may add custom sections, which are skipped.
    let mut with_custom = parts.clone();
    with_custom.insert(3, (0x83, b"a newer writer's notes".to_vec()));
    with_custom.push((0xff, vec![]));
    assert!(decode(&file((1, 7), &with_custom)).is_ok());
    // The limits section must decode, name actors of the file, and appear once.
    let mut bad_limits = parts.clone();
    bad_limits.push((0x80, b"not postcard".to_vec()));
    assert!(err(&file((1, 1), &bad_limits)).contains("limits section"));
    let mut stranger = parts.clone();
    let limits = vec![v1::ActorLimits { pid: 99, max_heap: Some(1) }];
    stranger.push((0x80, postcard::to_stdvec(&limits).unwrap()));
    assert!(err(&file((1, 1), &stranger)).contains("names actor <99>"));
    let mut twice = all.clone();
    twice.push(all[7].clone());
    assert!(err(&file((1, 1), &twice)).contains("a second limits section"));
    assert_eq!(
        err(&file((2, 0), &parts)),
        "damaged snapshot: unsupported snapshot format version 2.0 (this VM reads 1.x)"
    );
    let mut unknown = parts.clone();
    unknown.insert(2, (9, vec![]));
    assert!(err(&file((1, 0), &unknown)).contains("unknown section id 9 at offset"));
    let mut swapped = parts.clone();
    swapped.swap(3, 4);
    assert!(err(&file((1, 0), &swapped)).contains("expected the actors section at offset"));
    let mut missing = parts.clone();
    missing.pop();
    assert_eq!(err(&file((1, 0), &missing)), "damaged snapshot: the resources section is missing");
    let mut twice = parts.clone();
    twice.push(parts[6].clone());
    assert!(err(&file((1, 0), &twice)).contains("unexpected resources section (id 7)"));
    let mut trailing = parts.clone();
    trailing[4].1.push(0);
    assert!(err(&file((1, 0), &trailing)).contains("1 unused bytes at the end of the channels section"));
    let mut cut = parts;
    cut[3].1.truncate(5);
    assert!(err(&file((1, 0), &cut)).contains("the actors section at offset"));
}

#[test]
fn a_module_from_another_program_is_refused() {
    let s = rich();
    let other = crate::asm::assemble_str("other.vasm", ".func main 1\n    ret r0\n.end\n").unwrap();
    // Its module section swapped in (checksums made right, as a tool could).
    let mut parts = sections(&encode(&s));
    parts[1].1 = crate::bytecode::encode(&other);
    let e = err(&file((1, 0), &parts));
    assert!(e.contains("the file mixes parts of different snapshots"), "{e}");
    // The hash made right too: the state no longer fits the module.
    let e = err(&encode(&Snapshot { module: Arc::new(other), ..s }));
    assert!(
        e.starts_with("inconsistent snapshot: shared value 4: refers to function 3, but the module has 1"),
        "{e}"
    );
    // A module that does not verify is refused as such.
    let mut broken = (*program()).clone();
    broken.funcs[0].code.pop();
    let e = err(&encode(&Snapshot { module: Arc::new(broken), ..rich() }));
    assert!(e.starts_with("the snapshot's module does not load: module failed verification"), "{e}");
}

/// Each edit of a valid snapshot and the start of the message the loader must give.
#[allow(clippy::type_complexity)]
fn state_damage() -> Vec<(&'static str, Box<dyn Fn(&mut Snapshot)>)> {
    fn first(s: &mut Snapshot) -> &mut v1::State {
        &mut s.actors[0].state
    }
    vec![
        ("actor <1>: frame 0: pc 999 is past the end of `main`", Box::new(|s| first(s).frames[0].pc = 999)),
        (
            "actor <1>: frame 0: refers to function 99, but the module has 4",
            Box::new(|s| first(s).frames[0].func = 99),
        ),
        ("actor <1>: it has no frames", Box::new(|s| first(s).frames.clear())),
        (
            "actor <2>: frame 1: its registers start at 3 but the frame below ends at 7",
            Box::new(|s| {
                let st = &mut s.actors[1].state;
                st.frames[0].pc = 2;
                st.frames.push(v1::Frame { func: 3, pc: 0, base: 3, ret: 3 });
            }),
        ),
        (
            "actor <2>: frame 1: returns into r9 but its caller's call writes r3",
            Box::new(|s| {
                let st = &mut s.actors[1].state;
                st.frames[0].pc = 2;
                st.regs.resize(10, VRef::Nil);
                st.frames.push(v1::Frame { func: 3, pc: 0, base: 7, ret: 9 });
            }),
        ),
        (
            "actor <2>: frame 0: a frame with a callee must be at a call, but `work` pc 0 is `jeqi`",
            Box::new(|s| {
                let st = &mut s.actors[1].state;
                st.regs.resize(10, VRef::Nil);
                st.frames.push(v1::Frame { func: 3, pc: 0, base: 7, ret: 3 });
            }),
        ),
        (
            "actor <2>: its frames need 7 registers but it has 6",
            Box::new(|s| s.actors[1].state.regs.truncate(6)),
        ),
        (
            "actor <2>: register 7 above the running frame (which ends at 7) is not nil",
            Box::new(|s| s.actors[1].state.regs.push(VRef::Int(1))),
        ),
        ("actor <2>: register 1: refers to pid <7>", Box::new(|s| s.actors[1].state.regs[1] = VRef::Pid(7))),
        (
            "actor <2>: register 1: refers to reference 99, which was never handed out",
            Box::new(|s| s.actors[1].state.regs[1] = VRef::Ref(99)),
        ),
        (
            "actor <2>: register 1: refers to atom 999",
            Box::new(|s| s.actors[1].state.regs[1] = VRef::Atom(999)),
        ),
        (
            "actor <2>: register 1: refers to shared value 999, but there are only",
            Box::new(|s| s.actors[1].state.regs[1] = VRef::Shared(999)),
        ),
        (
            "actor <2>: register 1: refers to channel 9, which the snapshot does not hold",
            Box::new(|s| s.actors[1].state.regs[1] = VRef::Chan(9)),
        ),
        (
            "actor <2>: register 1: refers to handle 9, which the snapshot does not hold",
            Box::new(|s| s.actors[1].state.regs[1] = VRef::Res(9)),
        ),
        (
            "actor <2>: handler 0: continues at 99 into r0, outside `work`",
            Box::new(|s| s.actors[1].state.handlers.push(v1::Handler { frame: 0, target: 99, dst: 0 })),
        ),
        (
            "actor <2>: handler 0: belongs to frame 4 of 1",
            Box::new(|s| s.actors[1].state.handlers.push(v1::Handler { frame: 4, target: 0, dst: 0 })),
        ),
        (
            "actor <2>: it waits in native `test_echo` but `work` pc 0 is `jeqi`",
            Box::new(|s| s.actors[1].wait = s.actors[0].wait),
        ),
        (
            "actor <2>: it waits with a deadline at `work` pc 0, which is `jeqi`",
            Box::new(|s| s.actors[1].wait = Wait::Timed { remaining_ms: 5 }),
        ),
        (
            "actor <2>: signal 1: interrupt mode 3",
            Box::new(|s| {
                if let v1::Signal::Interrupt { mode, .. } = &mut s.actors[1].signals[1] {
                    *mode = 3;
                }
            }),
        ),
        (
            "actor <2>: its name :worker is registered to another actor too",
            Box::new(|s| s.actors[0].name = s.actors[1].name),
        ),
        ("actor <2>: monitor reference 5 was never handed out", Box::new(|s| s.actors[1].monitors[0].0 = 5)),
        ("actor <2>: a link refers to pid <0>", Box::new(|s| s.actors[1].links[0] = 0)),
        ("actor <1> appears twice", Box::new(|s| s.actors[1].pid = 1)),
        ("actor <9>: refers to pid <9>, which was never handed out", Box::new(|s| s.actors[1].pid = 9)),
        (
            "the main actor <2> is not among the actors",
            Box::new(|s| {
                s.actors.remove(1);
                s.actors[0].links.clear();
                s.actors[0].monitoring.clear();
                s.meta.main = Some(2);
            }),
        ),
        (
            "channel 1: 3 buffered values exceed its capacity 2",
            Box::new(|s| s.channels[0].buffer.push(VRef::Nil)),
        ),
        ("channel id 1 is not below the next channel id 1", Box::new(|s| s.meta.counters.next_chan = 1)),
        ("handle id 6 is not below the next handle id 6", Box::new(|s| s.meta.counters.next_handle = 6)),
        ("handle id 2 names two tables or resources", Box::new(|s| s.tables[0].id = 2)),
        (
            "table 6: entry 0: holds a pid, channel, resource or function",
            Box::new(|s| s.tables[0].entries[0].1 = VRef::Pid(1)),
        ),
        (
            "resource 3: a file opened for neither reading nor writing",
            Box::new(|s| {
                if let Recipe::File { read, .. } = &mut s.resources[1].recipe {
                    *read = false;
                }
            }),
        ),
        ("resource 2: its owner refers to pid <9>", Box::new(|s| s.resources[0].owner = 9)),
        (
            "shared value 0: refers to shared value 0, which does not come before it",
            Box::new(|s| {
                s.values.shared[0] = v1::Boxed::List(vec![VRef::Shared(0)]);
            }),
        ),
        ("the fuel per slice is 0", Box::new(|s| s.meta.config.fuel = 0)),
    ]
}

#[test]
fn the_state_verifier_names_what_is_wrong() {
    assert!(check(&rich()).is_ok());
    for (want, edit) in state_damage() {
        let mut s = rich();
        edit(&mut s);
        let e = err(&encode(&s));
        assert!(e.starts_with(&format!("inconsistent snapshot: {want}")), "want {want:?}\n got {e:?}");
    }
}

#[test]
fn a_function_value_must_fit_its_function() {
    let mut s = rich();
    let i = s.values.shared.iter().position(|b| matches!(b, v1::Boxed::Fun { .. })).unwrap();
    let v1::Boxed::Fun { env, .. } = &mut s.values.shared[i] else { unreachable!() };
    env.extend([VRef::Nil, VRef::Nil]);
    assert!(
        err(&encode(&s)).contains("a function value of `scale` captures 3 values but the function takes 2")
    );
    let v1::Boxed::Fun { func, .. } = &mut s.values.shared[i] else { unreachable!() };
    *func = 40;
    assert!(err(&encode(&s)).contains("refers to function 40, but the module has 4"));
}

#[test]
fn keys_that_expand_beyond_the_file_are_refused() {
    // Each entry is a pair of the one before: 60 entries make a key of 2^61 nodes.
    let mut s = rich();
    let base = s.values.shared.len() as u32;
    s.values.shared.push(v1::Boxed::Tuple(vec![VRef::Int(1), VRef::Int(2)]));
    for i in 0..60 {
        s.values.shared.push(v1::Boxed::Tuple(vec![VRef::Shared(base + i), VRef::Shared(base + i)]));
    }
    s.values.shared.push(v1::Boxed::Map(vec![(VRef::Shared(base + 60), VRef::Nil)]));
    assert!(err(&encode(&s)).contains("its map or table keys expand to more nodes than the file could hold"));
}

/// The committed seeds of the `snapshot` fuzz target.
fn seed_snapshots() -> Vec<(&'static str, Snapshot)> {
    let m = program();
    let st = ActorState::new(&m, m.func_index("main").unwrap(), vec![Value::list(vec![])]).unwrap();
    let fresh = capture(&m, &st, &VecDeque::new(), Waiting::Not);
    let mut sleeping = rich();
    sleeping.actors.truncate(1);
    sleeping.actors[0].links.clear();
    sleeping.actors[0].monitoring.clear();
    sleeping.actors[0].wait = Wait::Runnable;
    sleeping.limits.clear();
    sleeping.rngs.clear();
    vec![
        ("rich.vsnap", rich()),
        ("fresh.vsnap", fresh),
        ("one_actor.vsnap", sleeping),
        ("containers.vsnap", with_containers()),
    ]
}

#[test]
fn seed_corpus_is_up_to_date() {
    for (name, s) in seed_snapshots() {
        expect_file(&format!("fuzz/seeds/snapshot/{name}"), &encode(&s), "seed_corpus");
    }
}

/// What the fuzz target does with one input (see fuzz/fuzz_targets/snapshot.rs).
fn exercise(bytes: &[u8]) {
    for b in [bytes.to_vec(), reseal(bytes)] {
        if let Ok(s) = decode(&b) {
            let again = encode(&s);
            let back = decode(&again).expect("a re-encoded snapshot loads");
            assert_eq!(back.actors, s.actors);
            let specs = |s: &Snapshot| s.containers.iter().map(|c| c.spec.clone()).collect::<Vec<_>>();
            assert_eq!(specs(&back), specs(&s));
            let r = Reader::new(s.values.clone(), HashMap::new(), HashMap::new());
            for a in &s.actors {
                let _ = r.state(&a.state);
            }
        }
    }
}

#[test]
fn replay_fuzz_seeds_and_regressions() {
    let seeds = files_in("seeds/snapshot");
    assert!(seeds.len() >= 4, "the seed corpus is missing");
    for (path, bytes) in seeds {
        if let Err(e) = decode(&bytes) {
            panic!("seed {} does not load: {e}", path.display());
        }
        exercise(&bytes);
    }
    // Reproducers of fixed crashes: any outcome but a panic is a pass.
    for (_, bytes) in files_in("regressions/snapshot") {
        exercise(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Damage inside the sections, with the checksums made right again, so that it reaches the
    /// body decoders and the state verifier: never a panic.
    #[test]
    fn damaged_bodies_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = encode(&rich());
        for (at, byte, how) in edits {
            let i = at.index(bytes.len() - 14) + 14;
            match how {
                0 => bytes[i] = byte,
                1 => bytes[i] ^= 1 << (byte % 8),
                _ => bytes[i] = bytes[i].wrapping_add(1),
            }
        }
        exercise(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 0]);
        bytes.extend_from_slice(&tail);
        exercise(&bytes);
        exercise(&tail);
    }
}

/// A small module of its own, for a second container.
fn tiny() -> Arc<Module> {
    Arc::new(crate::asm::assemble_str("tiny.vasm", ".func main 0\n    nil r0\n    ret r0\n.end\n").unwrap())
}

fn member(pid: u64, priority: v1::Priority) -> v1::Member {
    v1::Member { pid, priority }
}

fn container(name: &str, module: Arc<Module>, actors: Vec<v1::Member>) -> ContainerImage {
    ContainerImage {
        module,
        spec: v1::Container {
            name: name.into(),
            module: v1::Blob::default(),
            source: format!("{name}.vasm"),
            args: vec!["7000".into()],
            env: vec![("MODE".into(), "fast".into())],
            limits: v1::ContainerLimits { max_actors: Some(100), max_mailbox: Some(10), max_heap: None },
            restart: v1::Restart::Transient,
            max_restarts: 3,
            restart_period_ms: 5000,
            priority: v1::Priority::Normal,
            root: actors.first().map_or(0, |m| m.pid),
            status: v1::ContainerStatus::Running,
            actors,
            published: vec![],
        },
    }
}

/// [`rich`] as a VM of containers (`vm up`): both actors in `store`, which runs the program
/// and published its channel; `front` ended, with a module of its own; the default container
/// has no actor and an empty module.
fn with_containers() -> Snapshot {
    let mut s = rich();
    let mut store = container(
        "store",
        s.module.clone(),
        vec![member(1, v1::Priority::Normal), member(2, v1::Priority::High)],
    );
    store.spec.published = vec![("requests".into(), VRef::Chan(1))];
    let mut front = container("front", tiny(), vec![]);
    front.spec.status = v1::ContainerStatus::Ended;
    front.spec.restart = v1::Restart::Permanent;
    s.containers = vec![store, front];
    s.shared_channels = vec![1];
    s.module = Arc::new(Module::default());
    s.meta.main = None;
    s
}

#[test]
fn containers_round_trip_with_their_modules() {
    let s = with_containers();
    check(&s).unwrap();
    let bytes = encode(&s);
    assert_eq!(&bytes[MAGIC.len()..MAGIC.len() + 4], &[1, 0, 3, 0], "format 1.3");
    let back = decode(&bytes).unwrap();
    assert_eq!(back.containers.len(), 2);
    for (b, c) in back.containers.iter().zip(&s.containers) {
        assert_eq!(b.spec, c.spec, "the section holds every setting (the module apart)");
        assert_eq!(crate::bytecode::encode(&b.module), crate::bytecode::encode(&c.module));
    }
    assert_eq!(back.shared_channels, vec![1]);
    assert_eq!(back.module_of(2).funcs.len(), s.containers[0].module.funcs.len());
    assert!(back.module_of(99).funcs.is_empty(), "an actor of no container runs the module section");
    // A file of one program has no containers section, and reads as before.
    assert!(!sections(&encode(&rich())).iter().any(|p| p.0 == section::CONTAINERS));
}

/// A reader that skips the containers section (format 1.2) finds actors that do not fit the
/// module section: it refuses the file rather than run them as one program.
#[test]
fn without_the_containers_section_the_actors_do_not_fit() {
    let parts: Vec<_> =
        sections(&encode(&with_containers())).into_iter().filter(|p| p.0 != section::CONTAINERS).collect();
    let e = err(&file((1, 2), &parts));
    assert!(e.starts_with("inconsistent snapshot: ") && e.contains("but the module has 0"), "{e}");
}

/// An edit of a valid snapshot.
type Edit = Box<dyn Fn(&mut Snapshot)>;

/// Damage to the containers section, and the start of the message it gets.
fn containers_damage() -> Vec<(&'static str, Edit)> {
    vec![
        (
            "actor <2> is listed twice in the containers section",
            Box::new(|s| s.containers[1].spec.actors.push(member(2, v1::Priority::Low))),
        ),
        (
            "container \"front\": lists actor <7>, which is not among the actors",
            Box::new(|s| s.containers[1].spec.actors.push(member(7, v1::Priority::Low))),
        ),
        (
            "container \"main\": is not a container name",
            Box::new(|s| s.containers[1].spec.name = "main".into()),
        ),
        (
            "container \"a/b\": is not a container name",
            Box::new(|s| s.containers[1].spec.name = "a/b".into()),
        ),
        ("container \"store\": appears twice", Box::new(|s| s.containers[1].spec.name = "store".into())),
        ("container \"front\": its root refers to pid <9>", Box::new(|s| s.containers[1].spec.root = 9)),
        ("container \"front\": a limit is 0", Box::new(|s| s.containers[1].spec.limits.max_heap = Some(0))),
        (
            "container \"store\": its published \"requests\" refers to channel 5",
            Box::new(|s| s.containers[0].spec.published[0].1 = VRef::Chan(5)),
        ),
        ("shared channel 4 is not among the channels", Box::new(|s| s.shared_channels.push(4))),
        // Each actor is checked against its own container's module.
        (
            "actor <1>: frame 0: pc 19 is past the end of `main`",
            Box::new(|s| {
                s.module = s.containers[0].module.clone();
                s.containers[0].module = tiny();
            }),
        ),
    ]
}

#[test]
fn the_containers_section_is_checked() {
    for (want, edit) in containers_damage() {
        let mut s = with_containers();
        edit(&mut s);
        let e = err(&encode(&s));
        assert!(e.starts_with(&format!("inconsistent snapshot: {want}")), "want {want:?}\n got {e:?}");
    }
    // A container's module is loaded and verified as the module section is.
    let mut bytes = sections(&encode(&with_containers()));
    let at = bytes.iter().position(|p| p.0 == section::CONTAINERS).unwrap();
    let mut raw: v1::Containers = postcard::from_bytes(&bytes[at].1).unwrap();
    raw.containers[1].module.0.truncate(20);
    bytes[at].1 = postcard::to_stdvec(&raw).unwrap();
    assert!(err(&file((1, 3), &bytes)).contains("the module of container \"front\" does not load"));
    bytes[at].1 = b"not postcard".to_vec();
    assert!(err(&file((1, 3), &bytes)).contains("the containers section at offset"));
}

/// Names are per container: two containers may both register `:worker`; one may not twice.
#[test]
fn registered_names_are_unique_within_a_container() {
    let mut s = with_containers();
    let worker = s.actors[1].name;
    s.actors[0].name = worker;
    assert!(err(&encode(&s)).contains("actor <2>: its name :worker is registered to another actor too"));
    s.containers[0].spec.actors.truncate(1);
    s.containers[1].spec.actors.push(member(2, v1::Priority::Normal));
    s.containers[1].module = s.containers[0].module.clone();
    check(&s).unwrap();
    decode(&encode(&s)).unwrap();
}
