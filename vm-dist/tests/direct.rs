//! The direct path (`node::conn`): in-process nodes on the memory bus (for NATS) with real TCP
//! connections on loopback between them: the switch keeps order, a broken connection ends the
//! session once and a new one works after, a hostile client costs one connection, a peer NATS
//! no longer hears from is down though its connection is up.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vm_core::{Pid, Value};
use vm_dist::direct::{Hello, Token, frame};
use vm_dist::node::Node;
use vm_dist::wire::SpawnOptions;
use vm_dist::{MemBus, MemTransport};

const T: Duration = Duration::from_secs(10);

async fn pair(bus: &MemBus) -> (Arc<FakeVm>, Arc<FakeVm>, Arc<MemTransport>, Arc<MemTransport>) {
    let ta = Arc::new(bus.connect());
    let tb = Arc::new(bus.connect());
    let (a, _) = start(direct(fast("t", "a")), ta.clone()).await;
    let (b, _) = start(direct(fast("t", "b")), tb.clone()).await;
    a.node().wait_for("b", T).await.expect("a sees b");
    b.node().wait_for("a", T).await.expect("b sees a");
    (a, b, ta, tb)
}

async fn switched(a: &FakeVm, b: &FakeVm) {
    until(T, || a.node().is_direct("b") && b.node().is_direct("a")).await.expect("both sides switch");
}

/// Four senders × 100,000 messages that start while `a` knows `b` only from a message (NATS
/// drops `b`'s first announcements to `a`, so `a` cannot dial yet): the switch from NATS to the
/// connection falls inside the stream, each sender's order is kept, and nothing is lost or
/// reported lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_senders_keep_their_order_across_the_switch() {
    const N: i64 = 100_000;
    let bus = MemBus::new();
    let ta = Arc::new(bus.connect());
    let tb = Arc::new(bus.connect());
    // b's announcements every 50 ms: the first 6 never reach a.
    bus.drop_next(&ta, "vm.t.a.b", 6);
    // The 400 ms silence limit of `fast` is too short for 400,000 messages in a debug build on
    // a loaded machine (a starved driver misses announcements); this test is about order.
    let cfg = |name| direct(vm_dist::node::Config { down_after: Duration::from_secs(3), ..fast("t", name) });
    let (b, _) = start(cfg("b"), tb.clone()).await;
    let sink = b.actor();
    let (a, _) = start(cfg("a"), ta.clone()).await;
    b.node().wait_for("a", T).await.expect("b sees a");
    let pa = a.actor();
    b.node().send(sink, remote_pid(&b, &a, pa), &Value::atom("hello")).unwrap();
    a.node().wait_for("b", T).await.expect("a sees b through b's message");
    let mut b_in = {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *b.tap.lock() = Some(tx);
        rx
    };
    let to = remote_pid(&a, &b, sink);
    let from: Vec<Pid> = (0..4).map(|_| a.actor()).collect();
    assert!(!a.node().is_direct("b"), "a switched before the stream began");
    for i in 0..500 {
        for (k, &f) in from.iter().enumerate() {
            a.node().send(f, to, &Value::tuple(vec![Value::Int(k as i64), Value::Int(i)])).unwrap();
        }
    }
    let mut senders = Vec::new();
    for (k, &f) in from.iter().enumerate() {
        let node = a.node().clone();
        senders.push(tokio::spawn(async move {
            for i in 500..N {
                send(&node, f, to, &Value::tuple(vec![Value::Int(k as i64), Value::Int(i)])).await;
                if i % 64 == 0 {
                    // As the runtime's actors do at the end of a slice: the two nodes' drivers
                    // share the test's two threads with the senders.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let mut next = [0i64; 4];
    for _ in 0..4 * N {
        let (_, m) = tokio::time::timeout(T, b_in.recv()).await.expect("a message within 10 s").unwrap();
        let Value::Tuple(t) = &m else { panic!("{m:?}") };
        let (Value::Int(k), Value::Int(i)) = (&t[0], &t[1]) else { panic!("{m:?}") };
        assert_eq!(
            *i,
            next[*k as usize],
            "sender {k}: out of order or lost (node events on a: {:?}, on b: {:?})",
            a.node_events("b"),
            b.node_events("a")
        );
        next[*k as usize] += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
    assert!(a.node().is_direct("b") && b.node().is_direct("a"), "both switched during the stream");
    assert_eq!(a.node_events("b"), vec![true], "no node-down during the run");
    assert_eq!(b.node_events("a"), vec![true], "no node-down during the run");
}

/// A round trip goes over the connection once both sides switched, and a message sent before
/// the switch arrives before one sent after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_go_over_the_connection() {
    let bus = MemBus::new();
    let (a, b, ta, _) = pair(&bus).await;
    switched(&a, &b).await;
    let pa = a.actor();
    let pb = b.actor();
    let before = ta.published();
    for i in 0..200 {
        a.node().send(pa, remote_pid(&a, &b, pb), &Value::Int(i)).unwrap();
    }
    until(T, || b.mail(pb).len() == 200).await.expect("delivered");
    assert_eq!(b.mail(pb), (0..200).map(Value::Int).collect::<Vec<_>>());
    // 200 messages, but NATS carried at most the heartbeats' announcements meanwhile.
    assert!(ta.published() - before < 50, "{} publishes through NATS", ta.published() - before);
}

/// A connection broken mid-stream ends the session on both sides: each link and monitor fires
/// `:noconnection` exactly once; the peer is down until its next announcement, then a new
/// connection and session work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_fires_noconnection_once_and_a_new_session_works() {
    let bus = MemBus::new();
    let (a, b, _, _) = pair(&bus).await;
    switched(&a, &b).await;
    watch_remote_actors(&a, &b, 100);
    let wb = b.actor();
    let la = a.actor();
    b.node().link(wb, remote_pid(&b, &a, la)).unwrap();
    let sink = b.actor();
    let to = remote_pid(&a, &b, sink);
    // A stream in flight when the connection breaks.
    let streamer = {
        let node = a.node().clone();
        let from = a.actor();
        tokio::spawn(async move {
            for i in 0..20_000i64 {
                send(&node, from, to, &Value::Int(i)).await;
            }
        })
    };
    until(T, || b.mail(sink).len() > 1000).await.expect("the stream flows");
    assert!(a.node().break_direct("b"), "a held a connection");
    // a's 100 links and monitors, and b's link to `la`, which a holds too.
    until(T, || {
        let s = a.seen.lock();
        s.exits.len() + s.downs.len() == 101
    })
    .await
    .expect("every link and monitor on a fires");
    until(T, || b.exits_to(wb).len() == 1).await.expect("b's link fires");
    streamer.await.unwrap();
    // The order held up to the break: what arrived is a prefix of each session's stream.
    let mail = b.mail(sink);
    for w in mail.windows(2) {
        let (Value::Int(x), Value::Int(y)) = (&w[0], &w[1]) else { panic!() };
        assert!(y > x, "out of order: {x} then {y}");
    }
    // Down, then up again at the next announcement, with a new connection.
    until(T, || a.node_events("b") == [true, false, true] && b.node_events("a") == [true, false, true])
        .await
        .expect("nodedown, then nodeup at the next announcement");
    switched(&a, &b).await;
    let p = a.actor();
    let spawned = a
        .node()
        .spawn(p, "b", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .expect("a spawn in the new session works");
    let n = b.mail(sink).len();
    a.node().send(p, to, &Value::atom("after")).unwrap();
    until(T, || b.mail(sink).len() == n + 1).await.expect("the new session delivers");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = a.seen.lock();
    assert_eq!(s.exits.len() + s.downs.len(), 101, "exactly once");
    assert!(s.exits.iter().all(|e| e.2 == Value::atom("noconnection") && e.3));
    assert!(s.downs.iter().all(|d| d.3 == Value::atom("noconnection")));
    drop(s);
    assert_eq!(b.exits_to(wb).len(), 1, "exactly once");
    assert!(a.node().node_of(spawned).is_some());
}

/// Whatever a client does on a node's direct port (garbage, a length beyond the limit, silence,
/// a hello with a wrong token, a hello from a node it does not know), that connection is closed
/// and the node's sessions go on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_on_the_direct_port_costs_one_connection() {
    let bus = MemBus::new();
    let (a, b, _, _) = pair(&bus).await;
    switched(&a, &b).await;
    let addr = b.node().direct_addr().expect("b listens");
    let hello = |from: &str, token: Token| {
        frame(
            &Hello {
                cluster: "t".into(),
                from: vm_dist::NodeId::new(from, 1).unwrap(),
                to: b.node().me().clone(),
                token,
                conn: 9,
            }
            .encode(),
        )
    };
    let attempts: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        u32::MAX.to_le_bytes().to_vec(),
        vec![],
        hello("a", Token([0; 16])).to_vec(),
        // The right cluster and b's incarnation, but the token is not b's.
        hello("aa", Token([7; 16])).to_vec(),
    ];
    let pa = a.actor();
    let pb = b.actor();
    let to = remote_pid(&a, &b, pb);
    for (i, bytes) in attempts.iter().enumerate() {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 64];
        // b closes it: at once for bad bytes, at the handshake deadline for silence.
        let n = tokio::time::timeout(T, s.read(&mut buf)).await.expect("b closes the connection");
        assert!(matches!(n, Ok(0) | Err(_)), "attempt {i}: b answered {n:?}");
        a.node().send(pa, to, &Value::Int(i as i64)).unwrap();
        until(T, || b.mail(pb).len() == i + 1).await.expect("a and b still talk");
    }
    assert!(a.node().is_direct("b") && b.node().is_direct("a"), "the real connection is untouched");
    assert_eq!(a.node_events("b"), vec![true]);
    assert_eq!(b.node_events("a"), vec![true]);
    assert!(a.seen.lock().exits.is_empty() && b.seen.lock().exits.is_empty());
}

/// A client that opens many connections to a node's direct port and says nothing holds at most
/// `max_handshakes` of them (a connection beyond that drops the oldest still in its handshake),
/// a real peer that dials meanwhile still connects, and the rest are dropped at the handshake's
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_half_open_connections_hold_a_few_slots_and_a_real_peer_still_connects() {
    const OPEN: usize = 100;
    const SLOTS: usize = 4;
    // A handshake deadline (`down_after`) far longer than the eviction takes, so that what
    // closes the first connections is the cap, not the deadline.
    const DEADLINE: Duration = Duration::from_secs(10);
    let bus = MemBus::new();
    let cfg = |name| vm_dist::node::Config {
        down_after: DEADLINE,
        max_handshakes: SLOTS,
        ..direct(fast("t", name))
    };
    let (b, _) = start(cfg("b"), Arc::new(bus.connect())).await;
    let addr = b.node().direct_addr().expect("b listens");
    let opened = std::time::Instant::now();
    let mut half_open = Vec::new();
    for _ in 0..OPEN {
        half_open.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // How many of the client's connections b has closed (a read that would wait: still open).
    let closed = |conns: &[tokio::net::TcpStream]| {
        let mut buf = [0u8; 8];
        conns
            .iter()
            .filter(|s| match s.try_read(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 0, "b answered a client that said nothing");
                    true
                }
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            })
            .count()
    };
    until(DEADLINE / 2, || closed(&half_open) >= OPEN - SLOTS)
        .await
        .expect("b drops all but the newest handshakes");
    assert!(opened.elapsed() < DEADLINE, "the cap, not the deadline, closed them");
    // A real peer dials while the client still holds its slots.
    let (a, _) = start(cfg("a"), Arc::new(bus.connect())).await;
    switched(&a, &b).await;
    let pb = b.actor();
    a.node().send(a.actor(), remote_pid(&a, &b, pb), &Value::atom("hi")).unwrap();
    until(T, || b.mail(pb) == [Value::atom("hi")]).await.expect("a and b talk on their connection");
    // The client's last slots end at the handshake's deadline.
    until(DEADLINE + T, || closed(&half_open) == OPEN).await.expect("every half-open connection is dropped");
    assert!(a.node().is_direct("b") && b.node().is_direct("a"), "the real connection is untouched");
    assert_eq!(a.node_events("b"), vec![true]);
}

/// NATS stays the membership: a peer whose announcements stop (a partition between the NATS
/// connections) is down after `down_after` though its direct connection is up; after healing it
/// is up again, on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_nats_cannot_hear_is_down_though_its_connection_is_up() {
    let bus = MemBus::new();
    let (a, b, ta, tb) = pair(&bus).await;
    switched(&a, &b).await;
    let wa = a.actor();
    let wb = b.actor();
    b.node().link(wb, remote_pid(&b, &a, wa)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let nodes = (&*a, &*b, &*ta, &*tb);
    partition_until_down(&bus, nodes, (wa, wb), T).await;
    assert!(!a.node().is_direct("b") && !b.node().is_direct("a"), "the connection is closed");
    heal_until_up(&bus, nodes, T).await;
    switched(&a, &b).await;
    spawn_works_and_no_second_firing(&a, wa).await;
}

/// A node whose listener address is a wildcard does not start: the address is announced, and
/// peers cannot dial `0.0.0.0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_listener_address_is_refused() {
    let bus = MemBus::new();
    let cfg = vm_dist::node::Config { direct: Some("0.0.0.0:0".parse().unwrap()), ..fast("t", "a") };
    let Err(err) = Node::start(cfg, Arc::new(bus.connect()), FakeVm::new()).await else {
        panic!("a node with a wildcard listener address started")
    };
    assert!(err.to_string().contains("not a wildcard"), "{err}");
}
