//! The node protocol between in-process nodes on the in-memory bus, with injected faults.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use vm_core::{Atom, Handle, Value};
use vm_dist::node::{Config, Node, SendError, SpawnError, StartError};
use vm_dist::wire::{EncodeError, SpawnOptions};
use vm_dist::{GlobalError, MemBus, MemTransport};

/// How long a test waits for a condition: generous, since a loaded machine is slow and a
/// condition met ends the wait at once.
const T: Duration = Duration::from_secs(20);

type Pair = (Arc<FakeVm>, Arc<FakeVm>, Arc<MemTransport>, Arc<MemTransport>);

/// Nodes a and b that see each other, whose sessions no stall of a loaded machine ends
/// ([`steady`]).
async fn pair(bus: &MemBus) -> Pair {
    pair_with(bus, steady("t", "a"), steady("t", "b")).await
}

/// Nodes a and b whose failure detectors notice a lost peer within 400 ms ([`fast`]), for the
/// tests of that.
async fn pair_fast(bus: &MemBus) -> Pair {
    pair_with(bus, fast("t", "a"), fast("t", "b")).await
}

/// Nodes a and b that see each other and, with `VM_CLUSTER_DIRECT`, send to each other on the
/// direct path.
async fn pair_with(bus: &MemBus, a_config: Config, b_config: Config) -> Pair {
    let ta = Arc::new(bus.connect());
    let tb = Arc::new(bus.connect());
    let (a, _) = start(a_config, ta.clone()).await;
    let (b, _) = start(b_config, tb.clone()).await;
    assert!(a.node().wait_for("b", T).await.is_some(), "a sees b");
    assert!(b.node().wait_for("a", T).await.is_some(), "b sees a");
    if direct_from_env().is_some() {
        // With `VM_CLUSTER_DIRECT` the tests are meant to run on the direct path: wait until both
        // sides have switched to it, so that a test does not race the switch (whose own tests
        // are `direct.rs`'s) and runs on NATS for a while on a loaded machine.
        let switched = |n: &FakeVm| n.node().nodes().iter().any(|p| p.direct);
        until(T, || switched(&a) && switched(&b)).await.expect("the direct path comes up");
    }
    (a, b, ta, tb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_order_and_names_resolve() {
    let bus = MemBus::new();
    let (a, b, _, _) = pair(&bus).await;
    let sender = a.actor();
    let receiver = b.actor();
    let to = remote_pid(&a, &b, receiver);
    assert!(is_remote(to));
    assert_eq!(a.node().node_of(to).unwrap().name.as_ref(), "b");
    for i in 0..2000 {
        a.node().send(sender, to, &Value::tuple(vec![Value::Int(i), Value::Pid(sender)])).unwrap();
    }
    until(T, || b.mail(receiver).len() == 2000).await.expect("all delivered");
    let mail = b.mail(receiver);
    for (i, m) in mail.iter().enumerate() {
        let Value::Tuple(t) = m else { panic!() };
        assert_eq!(t[0], Value::Int(i as i64), "in the order sent");
        // The sender's pid arrives as a remote pid naming node a.
        let Value::Pid(p) = t[1] else { panic!() };
        assert_eq!(b.node().node_of(p).unwrap().name.as_ref(), "a");
        assert_eq!(serial(p), serial(sender));
    }
    // {name, node} addressing.
    b.seen.lock().names.insert(Atom::new("logger"), receiver);
    a.node().send_named("b", Atom::new("logger"), &Value::atom("hi")).unwrap();
    until(T, || b.mail(receiver).len() == 2001).await.expect("named send delivered");
    assert_eq!(a.node().nodes().len(), 1);
    assert_eq!(a.node().nodes()[0].id.name.as_ref(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_spawn_link_and_monitor_have_local_semantics() {
    let bus = MemBus::new();
    let (a, b, _, _) = pair(&bus).await;
    let parent = a.actor();
    // A spawned function that raises: the link delivers the same reason as a local crash.
    let opts = SpawnOptions { link: true, monitor: Some(77), ..Default::default() };
    let child = a.node().spawn(parent, "b", "crash", vec![Value::Int(1)], opts).await.unwrap();
    assert!(is_remote(child));
    let reason = Value::tuple(vec![Value::atom("exception"), Value::atom("badarith"), Value::str("boom")]);
    until(T, || a.exits_to(parent).len() == 1 && a.seen.lock().downs.len() == 1)
        .await
        .expect("exit and down");
    assert_eq!(a.exits_to(parent), vec![(child, reason.clone())]);
    assert_eq!(a.seen.lock().downs[0], (parent, 77, child, reason));
    // An unknown function, and a node that is not there.
    match a.node().spawn(parent, "b", "nope", vec![], SpawnOptions::default()).await {
        Err(SpawnError::Refused(r)) => assert_eq!(r, Atom::new("undef")),
        other => panic!("expected :undef, got {other:?}"),
    }
    let t = std::time::Instant::now();
    assert!(matches!(
        a.node().spawn(parent, "zz", "worker", vec![], SpawnOptions::default()).await,
        Err(SpawnError::NoConnection(_))
    ));
    // At once: not after the spawn timeout (3 s). (The bound leaves room for a loaded machine.)
    assert!(t.elapsed() < Duration::from_secs(1), "an absent node answers at once");
    // A monitor of a remote pid that is gone: DOWN :noproc at once.
    let dead = b.actor();
    b.exit(dead, Value::atom("normal"));
    a.node().monitor(parent, remote_pid(&a, &b, dead), 5).unwrap();
    until(T, || a.seen.lock().downs.len() == 2).await.expect("noproc down");
    assert_eq!(a.seen.lock().downs[1].3, Value::atom("noproc"));
    // Link to a dead remote pid: exit :noproc.
    a.node().link(parent, remote_pid(&a, &b, dead)).unwrap();
    until(T, || a.exits_to(parent).len() == 2).await.expect("noproc exit");
    assert_eq!(a.exits_to(parent)[1].1, Value::atom("noproc"));
    // Unlink before the other side exits: nothing arrives.
    let w = a
        .node()
        .spawn(parent, "b", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .unwrap();
    a.node().unlink(parent, w);
    let spawned = b.seen.lock().spawned.last().unwrap().0;
    b.exit(spawned, Value::atom("shutdown"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.exits_to(parent).len(), 2, "an unlinked exit is not delivered");
    // Kill, interrupt and explicit exit reach the remote runtime.
    let target = b.actor();
    let rt = remote_pid(&a, &b, target);
    a.node().kill(parent, rt);
    a.node().interrupt(parent, rt, Atom::new("stop"), &Value::str("now"), 1).unwrap();
    a.node().exit(parent, rt, &Value::atom("bye")).unwrap();
    until(T, || {
        let s = b.seen.lock();
        s.kills.len() == 1 && s.interrupts.len() == 1 && s.exits.iter().any(|e| e.0 == target && !e.3)
    })
    .await
    .expect("kill, interrupt, exit delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_fires_each_link_and_monitor_exactly_once() {
    let bus = MemBus::new();
    let (a, b, _, tb) = pair_fast(&bus).await;
    watch_remote_actors(&a, &b, 200);
    // Let the links reach b, then crash b (its subscriptions vanish, as with kill -9).
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.kill(&tb);
    let took = until(T, || {
        let s = a.seen.lock();
        s.exits.len() + s.downs.len() == 200
    })
    .await
    .expect("every link and monitor fires");
    // The failure detector's `down_after` is 400 ms: a few periods, with room for a loaded machine.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = a.seen.lock();
    assert_eq!(s.exits.len() + s.downs.len(), 200, "exactly once");
    assert!(s.exits.iter().all(|e| e.2 == Value::atom("noconnection") && e.3));
    assert!(s.downs.iter().all(|d| d.3 == Value::atom("noconnection")));
    drop(s);
    assert_eq!(a.node_events("b"), vec![true, false]);
    // Later links to b's pids fail at once.
    let w = a.actor();
    let stale = remote_pid(&a, &b, b.actor());
    assert!(matches!(a.node().link(w, stale), Err(SendError::NoConnection(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_message_is_a_session_end_on_both_sides_never_a_silent_gap() {
    let bus = MemBus::new();
    // NATS loses the message, so the envelopes must go through NATS: the direct path stays
    // off here (a lost connection is `direct.rs`'s test).
    let ta = Arc::new(bus.connect());
    let tb = Arc::new(bus.connect());
    let (a, _) = start_nats_only(fast("t", "a"), ta.clone()).await;
    let (b, _) = start_nats_only(fast("t", "b"), tb.clone()).await;
    assert!(a.node().wait_for("b", T).await.is_some(), "a sees b");
    let wa = a.actor();
    let wb = b.actor();
    a.node().link(wa, remote_pid(&a, &b, wb)).unwrap();
    until(T, || b.node().nodes().len() == 1).await.unwrap();
    let rb = remote_pid(&a, &b, wb);
    // The link has reached b once a message sent after it has (a session keeps order), so the
    // message dropped below is one of the ten, never the link.
    a.node().send(wa, rb, &Value::atom("linked")).unwrap();
    until(T, || b.mail(wb).len() == 1).await.expect("the marker arrives");
    // NATS drops one message silently.
    bus.drop_next(&tb, "vm.t.n.>", 1);
    for i in 0..10 {
        a.node().send(wa, rb, &Value::Int(i)).unwrap();
    }
    until(T, || a.exits_to(wa).len() == 1 && b.exits_to(wb).len() == 1)
        .await
        .expect("both ends of the link fire");
    let got = b.mail(wb)[1..].to_vec();
    // What arrived is a prefix of what was sent in order, never something with a hole in it.
    assert!(got.iter().enumerate().all(|(i, v)| *v == Value::Int(i as i64 + 1)), "got {got:?}");
    assert!(got.len() < 10);
    assert_eq!(a.node_events("b"), vec![true, false, true], "nodedown then nodeup: a new session");
    assert_eq!(b.node_events("a")[..2], [true, false]);
    // The new session carries messages again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = b.mail(wb).len();
    a.node().send(wa, rb, &Value::atom("again")).unwrap();
    until(T, || b.mail(wb).len() == before + 1).await.expect("the new session delivers");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.exits_to(wa).len(), 1, "exactly once");
    assert_eq!(b.exits_to(wb).len(), 1, "exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_seen_on_both_sides_and_healing_brings_the_node_back() {
    let bus = MemBus::new();
    let (a, b, ta, tb) = pair_fast(&bus).await;
    let wa = a.actor();
    let wb = b.actor();
    b.node().link(wb, remote_pid(&b, &a, wa)).unwrap();
    // A message sent after the link arrives after it: then a knows the link too.
    b.node().send(wb, remote_pid(&b, &a, wa), &Value::atom("linked")).unwrap();
    until(T, || a.mail(wa).len() == 1).await.expect("the marker arrives");
    let nodes = (&*a, &*b, &*ta, &*tb);
    partition_until_down(&bus, nodes, (wa, wb), T).await;
    heal_until_up(&bus, nodes, T).await;
    spawn_works_and_no_second_firing(&a, wa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_to_a_peer_far_behind_is_suspended_not_buffered() {
    let bus = MemBus::new();
    let (a, b, ta, _) = pair(&bus).await;
    let s = a.actor();
    let r = b.actor();
    let to = remote_pid(&a, &b, r);
    let chunk = Value::bytes(vec![7u8; 16 * 1024]);
    // b's runtime stops taking messages: its receive loop stalls.
    let stall = b.stall();
    let before = ta.published();
    let mut sent = 0u64;
    loop {
        match a.node().send(s, to, &chunk) {
            Ok(()) => sent += 1,
            Err(SendError::Busy(_)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 1000, "never suspended");
    }
    // The window is 1 MiB: about 64 chunks of 16 KiB, not an unbounded buffer.
    assert!((60..=70).contains(&sent), "sent {sent} before suspension");
    assert!(ta.published() - before <= sent + 5);
    // The sender goes on as a runtime's actor would: suspended on `Busy`, trying again when
    // woken. b took at most one chunk, the one whose delivery stalls (a node takes a peer's
    // envelopes one at a time), and acknowledges what it took: with the direct path the stalled
    // task is the connection's, so b's driver goes on ticking, and its tick may let exactly
    // that one chunk more through. Never a second window.
    let more = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let (node, more, chunk) = (a.node().clone(), more.clone(), chunk.clone());
        tokio::spawn(async move {
            for _ in 0..64 {
                send(&node, s, to, &chunk).await;
                more.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let more = more.load(std::sync::atomic::Ordering::SeqCst);
        assert!(more <= 1, "sent {more} more while the peer is behind: {sent} were the window");
    }
    assert!(!sender.is_finished(), "still suspended while the peer is behind");
    drop(stall);
    tokio::time::timeout(T, sender).await.expect("resumes once the peer catches up").unwrap();
    until(T, || b.mail(r).len() as u64 == sent + 64).await.expect("nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_and_undistributable_messages_send_nothing() {
    let bus = MemBus::new();
    let (a, b, ta, _) = pair(&bus).await;
    let s = a.actor();
    let r = b.actor();
    let to = remote_pid(&a, &b, r);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = ta.published();
    let big = Value::bytes(vec![0u8; 2 << 20]);
    assert!(matches!(a.node().send(s, to, &big), Err(SendError::Encode(EncodeError::TooLarge { .. }))));
    let chan = Value::tuple(vec![Value::Int(1), Value::Chan(Handle::new(9))]);
    assert!(matches!(
        a.node().send(s, to, &chan),
        Err(SendError::Encode(EncodeError::NotDistributable("chan")))
    ));
    let res = Value::Res(Handle::new(3));
    assert!(matches!(
        a.node().spawn(s, "b", "worker", vec![res], SpawnOptions::default()).await,
        Err(SpawnError::Encode(EncodeError::NotDistributable("resource")))
    ));
    // Heartbeats may have gone out meanwhile, but no message to r did.
    let _ = before;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(b.mail(r).is_empty());
    assert!(b.seen.lock().spawned.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_a_new_incarnation_that_stale_pids_never_reach() {
    let bus = MemBus::new();
    let (a, b, _, tb) = pair_fast(&bus).await;
    let wa = a.actor();
    let old_actor = b.actor();
    let stale = remote_pid(&a, &b, old_actor);
    a.node().link(wa, stale).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.kill(&tb);
    // b restarts at once, before a has noticed the crash.
    let (b2, _) = start(fast("t", "b"), Arc::new(bus.connect())).await;
    let same_serial = b2.actor();
    assert_eq!(serial(same_serial), serial(old_actor));
    until(T, || a.exits_to(wa).len() == 1).await.expect("the old incarnation's link fires");
    assert_eq!(a.exits_to(wa)[0].1, Value::atom("noconnection"));
    let new = a.node().wait_for("b", T).await.unwrap();
    assert_ne!(new.inc, b.node().me().inc);
    a.node().send(wa, stale, &Value::atom("to the old b")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(b2.mail(same_serial).is_empty(), "a stale pid reached the new incarnation");
    let fresh = remote_pid(&a, &b2, same_serial);
    assert_ne!(fresh, stale);
    a.node().send(wa, fresh, &Value::atom("to the new b")).unwrap();
    until(T, || b2.mail(same_serial).len() == 1).await.expect("the new pid works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_at_once_and_a_name_cannot_be_taken_twice() {
    let bus = MemBus::new();
    // a's failure detector would take a minute (`steady`): a link that fires within `T` fired
    // on b's notice that it leaves, whatever the machine's load.
    let (a, b, _, _) = pair(&bus).await;
    let wa = a.actor();
    a.node().link(wa, remote_pid(&a, &b, b.actor())).unwrap();
    // A second node named "a" is refused while the first is alive, and disturbs nobody.
    let vm = FakeVm::new();
    let r = Node::start(fast("t", "a"), Arc::new(bus.connect()), vm.clone()).await;
    assert!(matches!(r, Err(StartError::NameTaken(_))));
    b.node().leave().await;
    until(T, || a.exits_to(wa).len() == 1).await.expect("link fires on b's notice, not on a timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_names_have_one_winner_and_a_dead_owner_frees_them() {
    let bus = MemBus::new();
    let (a, b, _, tb) = pair_fast(&bus).await;
    for round in 0..100 {
        let name = Atom::new(&format!("svc{round}"));
        let (pa, pb) = (a.actor(), b.actor());
        let (ra, rb) = tokio::join!(a.node().global_register(name, pa), b.node().global_register(name, pb));
        assert!(ra.is_ok() != rb.is_ok(), "round {round}: {ra:?} {rb:?}");
        let a_won = ra.is_ok();
        let loser = if a_won { rb } else { ra };
        assert_eq!(loser, Err(GlobalError::AlreadyRegistered));
        let winner = if a_won {
            a.node().pid_of(a.node().me(), serial(pa))
        } else {
            a.node().pid_of(b.node().me(), serial(pb))
        };
        assert_eq!(a.node().global_whereis(name).await.unwrap(), winner);
    }
    // A local owner's exit frees its name.
    let n = Atom::new("owner_exit");
    let p = a.actor();
    a.node().global_register(n, p).await.unwrap();
    a.exit(p, Value::atom("normal"));
    until(T, || futures::executor::block_on(b.node().global_whereis(n)).unwrap().is_none())
        .await
        .expect("freed");
    b.node().global_register(n, b.actor()).await.expect("the name is free again");
    // A dead node's names are free once it is seen down.
    let dn = Atom::new("on_dead_node");
    b.node().global_register(dn, b.actor()).await.unwrap();
    bus.kill(&tb);
    until(T, || a.node().live("b").is_none()).await.unwrap();
    assert_eq!(a.node().global_whereis(dn).await.unwrap(), None);
    a.node().global_register(dn, a.actor()).await.expect("taken over from the dead node");
}

/// A transport that often cannot take a message at once (the client's queue is full) and then
/// publishes it only after a few scheduler rounds, so envelopes take both paths out of a node:
/// straight to the transport and through the publisher task.
struct Flaky {
    inner: MemTransport,
    state: std::sync::atomic::AtomicU64,
}

impl Flaky {
    fn roll(&self) -> u64 {
        // xorshift: deterministic, cheap, good enough to mix the two paths.
        let mut x = self.state.load(std::sync::atomic::Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, std::sync::atomic::Ordering::Relaxed);
        x
    }
}

impl vm_dist::Transport for Flaky {
    fn publish(
        &self,
        msg: vm_dist::transport::Outgoing,
    ) -> futures::future::BoxFuture<'_, Result<(), vm_dist::transport::TransportError>> {
        let yields = self.roll() % 4;
        Box::pin(async move {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            self.inner.publish(msg).await
        })
    }
    fn try_publish(&self, msg: vm_dist::transport::Outgoing) -> Option<vm_dist::transport::Outgoing> {
        if self.roll().is_multiple_of(3) { Some(msg) } else { self.inner.try_publish(msg) }
    }
    fn subscribe(
        &self,
        subject: String,
    ) -> futures::future::BoxFuture<
        '_,
        Result<
            futures::stream::BoxStream<'static, vm_dist::transport::Incoming>,
            vm_dist::transport::TransportError,
        >,
    > {
        self.inner.subscribe(subject)
    }
    fn flush(&self) -> futures::future::BoxFuture<'_, Result<(), vm_dist::transport::TransportError>> {
        self.inner.flush()
    }
    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }
    fn events(&self) -> futures::stream::BoxStream<'static, vm_dist::transport::TransportEvent> {
        self.inner.events()
    }
    fn names(&self) -> futures::future::BoxFuture<'_, Option<Arc<dyn vm_dist::transport::NameStore>>> {
        self.inner.names()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_keep_order_whichever_way_envelopes_leave() {
    for round in 0..5u64 {
        let bus = MemBus::new();
        let flaky = Arc::new(Flaky { inner: bus.connect(), state: (0x9e37_79b9_7f4a_7c15 ^ round).into() });
        let (a, _) = start(steady("t", "a"), flaky).await;
        let (b, _) = start(steady("t", "b"), Arc::new(bus.connect())).await;
        a.node().wait_for("b", T).await.unwrap();
        let r = b.actor();
        let to = remote_pid(&a, &b, r);
        let mut senders = Vec::new();
        for k in 0..4i64 {
            let node = a.node().clone();
            let from = a.actor();
            senders.push(tokio::spawn(async move {
                for i in 0..2_000i64 {
                    send(&node, from, to, &Value::tuple(vec![Value::Int(k), Value::Int(i)])).await;
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        until(T, || b.mail(r).len() == 8_000).await.unwrap_or_else(|| panic!("round {round}: lost messages"));
        let mut next = [0i64; 4];
        for m in b.mail(r) {
            let Value::Tuple(t) = &m else { panic!() };
            let (Value::Int(k), Value::Int(i)) = (&t[0], &t[1]) else { panic!() };
            assert_eq!(*i, next[*k as usize], "round {round}: sender {k} out of order");
            next[*k as usize] += 1;
        }
        assert_eq!(b.node_events("a"), vec![true], "round {round}: a session ended (a gap was seen)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_answered_after_its_timeout_leaves_no_link_behind() {
    let bus = MemBus::new();
    let ta = Arc::new(bus.connect());
    let (a, _) = start(Config { spawn_timeout: Duration::from_millis(100), ..steady("t", "a") }, ta).await;
    let (b, _) = start(steady("t", "b"), Arc::new(bus.connect())).await;
    a.node().wait_for("b", T).await.unwrap();
    let parent = a.actor();
    let stall = b.stall();
    let r = a
        .node()
        .spawn(parent, "b", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await;
    assert!(matches!(r, Err(SpawnError::Timeout(_))), "{r:?}");
    drop(stall);
    // b started the actor after all and linked it to the spawner; the late answer undoes that.
    until(T, || b.seen.lock().exits.iter().any(|e| e.2 == Value::atom("noproc") && e.3))
        .await
        .expect("the orphan gets the exit signal :noproc");
    let child = b.seen.lock().spawned[0].0;
    assert!(b.seen.lock().exits.iter().any(|e| e.0 == child));
}
