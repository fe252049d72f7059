//! The node protocol over real nats-server processes on loopback: throughput and order, node
//! crashes (`kill -9` of a node process), a server crash under a clustered pair, a partition
//! between two servers (a paused TCP proxy on their route), credentials, TLS, global names.
#![allow(clippy::print_stderr, reason = "a test harness: it reports the timings it measured")]

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_core::{Atom, Pid, Value};
use vm_dist::node::{Config, Node, SpawnError};
use vm_dist::transport::TransportError;
use vm_dist::wire::SpawnOptions;
use vm_dist::{GlobalError, NatsOptions, NatsTransport};

const T: Duration = Duration::from_secs(10);

fn remote(from: &FakeVm, on: &FakeVm, local: Pid) -> Pid {
    from.node().pid_of(on.node().me(), serial(local)).unwrap()
}

fn tap(vm: &FakeVm) -> tokio::sync::mpsc::UnboundedReceiver<(Pid, Value)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    *vm.tap.lock() = Some(tx);
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_four_ordered_streams() {
    let s = NatsServer::start("");
    let urls = vec![s.url()];
    let (a, _) = start(Config::new("rt", "a"), nats(&urls, "rt").await).await;
    let (b, _) = start(Config::new("rt", "b"), nats(&urls, "rt").await).await;
    a.node().wait_for("b", T).await.expect("a sees b");
    b.node().wait_for("a", T).await.expect("b sees a");
    let pa = a.actor();
    let pb = b.actor();
    let rb = remote(&a, &b, pb);
    // b echoes {:echo, from, x}; everything else goes to the collector.
    let mut b_in = tap(&b);
    let (collect_tx, mut collected) = tokio::sync::mpsc::unbounded_channel();
    let bvm = b.clone();
    tokio::spawn(async move {
        while let Some((to, msg)) = b_in.recv().await {
            if let Value::Tuple(t) = &msg
                && t.len() == 3
                && t[0] == Value::atom("echo")
                && let Value::Pid(from) = t[1]
            {
                bvm.node().send(to, from, &t[2]).unwrap();
                continue;
            }
            let _ = collect_tx.send(msg);
        }
    });
    let mut a_in = tap(&a);
    let t = Instant::now();
    for i in 0..10_000 {
        a.node()
            .send(pa, rb, &Value::tuple(vec![Value::atom("echo"), Value::Pid(pa), Value::Int(i)]))
            .unwrap();
        let (to, v) = a_in.recv().await.unwrap();
        assert_eq!((to, v), (pa, Value::Int(i)));
    }
    eprintln!("10,000 round trips in {:?} (debug build)", t.elapsed());
    // Four senders × 100,000 messages: per-sender order, nothing lost.
    let t = Instant::now();
    let mut senders = Vec::new();
    for k in 0..4i64 {
        let node = a.node().clone();
        let from = a.actor();
        senders.push(tokio::spawn(async move {
            for i in 0..100_000i64 {
                send(&node, from, rb, &Value::tuple(vec![Value::Int(k), Value::Int(i)])).await;
            }
        }));
    }
    let mut next = [0i64; 4];
    for _ in 0..400_000 {
        let m = tokio::time::timeout(T, collected.recv()).await.expect("a message within 10 s").unwrap();
        let Value::Tuple(t) = &m else { panic!() };
        let (Value::Int(k), Value::Int(i)) = (&t[0], &t[1]) else { panic!() };
        assert_eq!(*i, next[*k as usize], "sender {k}: out of order or lost");
        next[*k as usize] += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
    eprintln!("4 x 100,000 messages in {:?} (debug build)", t.elapsed());
    assert_eq!(a.node_events("b"), vec![true], "no node-down during the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_fires_every_link_and_monitor_exactly_once() {
    let s = NatsServer::start("");
    let mut b = NodeProcess::start(&s.url(), "k", "b", false);
    let (a, _) = start(Config::new("k", "a"), nats(&[s.url()], "k").await).await;
    a.node().wait_for("b", T).await.expect("a sees b");
    for i in 0..1000i64 {
        let w = a.actor();
        let opts = if i % 2 == 0 {
            SpawnOptions { link: true, ..Default::default() }
        } else {
            SpawnOptions { monitor: Some(i), ..Default::default() }
        };
        a.node().spawn(w, "b", "worker", vec![], opts).await.expect("spawns");
    }
    let t = Instant::now();
    b.kill();
    until(Duration::from_secs(5), || {
        let s = a.seen.lock();
        s.exits.len() + s.downs.len() >= 1000
    })
    .await
    .expect("every link and monitor fires");
    let took = t.elapsed();
    eprintln!("1,000 links and monitors fired {took:?} after kill -9");
    assert!(took <= Duration::from_millis(3500), "took {took:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let seen = a.seen.lock();
        assert_eq!(seen.exits.len(), 500, "each link exactly once");
        assert_eq!(seen.downs.len(), 500, "each monitor exactly once");
        assert!(seen.exits.iter().all(|e| e.2 == Value::atom("noconnection")));
        assert!(seen.downs.iter().all(|d| d.3 == Value::atom("noconnection")));
        let watchers: std::collections::HashSet<Pid> =
            seen.exits.iter().map(|e| e.0).chain(seen.downs.iter().map(|d| d.0)).collect();
        assert_eq!(watchers.len(), 1000);
    }
    // And spawning there now answers :noconnection at once.
    let t = Instant::now();
    let r = a.node().spawn(a.actor(), "b", "worker", vec![], SpawnOptions::default()).await;
    assert!(matches!(r, Err(SpawnError::NoConnection(_))));
    // At once: not after the spawn timeout. (The bound leaves room for a loaded machine.)
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_within_100_ms_and_remote_semantics_hold() {
    let s = NatsServer::start("");
    let mut b = NodeProcess::start(&s.url(), "g", "b", false);
    // a's failure detector would take a minute: a link that fires within `T` below fired on b's
    // notice that it leaves, whatever the machine's load (the time is printed).
    let cfg = Config { down_after: Duration::from_secs(60), ..Config::new("g", "a") };
    let (a, _) = start(cfg, nats(&[s.url()], "g").await).await;
    a.node().wait_for("b", T).await.expect("a sees b");
    // A second node named "b" is refused at once while the first is alive.
    let t = Instant::now();
    let twin = Node::start(Config::new("g", "b"), nats(&[s.url()], "g").await, FakeVm::new()).await;
    assert!(matches!(twin, Err(vm_dist::StartError::NameTaken(_))));
    assert!(t.elapsed() < Duration::from_millis(500));
    let w = a.actor();
    // A raising function spawned with a link delivers the same reason as a local crash.
    let c = a
        .node()
        .spawn(w, "b", "crash", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .unwrap();
    until(T, || a.exits_to(w).len() == 1).await.expect("the crash arrives");
    let reason = Value::tuple(vec![Value::atom("exception"), Value::atom("badarith"), Value::str("boom")]);
    assert_eq!(a.exits_to(w), vec![(c, reason)]);
    match a.node().spawn(w, "b", "missing", vec![], SpawnOptions::default()).await {
        Err(SpawnError::Refused(r)) => assert_eq!(r, Atom::new("undef")),
        other => panic!("{other:?}"),
    }
    // A monitor of a dead remote pid is answered :noproc.
    a.node().monitor(w, c, 9).unwrap();
    until(T, || a.seen.lock().downs.len() == 1).await.expect("noproc");
    assert_eq!(a.seen.lock().downs[0].3, Value::atom("noproc"));
    let w2 = a.actor();
    a.node()
        .spawn(w2, "b", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .unwrap();
    let t = Instant::now();
    b.leave();
    until(T, || a.exits_to(w2).len() == 1).await.expect("the link fires on leave");
    eprintln!("graceful leave seen after {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_node_down_in_60_s_with_an_idle_and_a_busy_peer() {
    let s = NatsServer::start("");
    let _idle = NodeProcess::start(&s.url(), "q", "idle", false);
    let _busy = NodeProcess::start(&s.url(), "q", "busy", true);
    let (a, _) = start(Config::new("q", "a"), nats(&[s.url()], "q").await).await;
    a.node().wait_for("idle", T).await.expect("sees idle");
    a.node().wait_for("busy", T).await.expect("sees busy");
    let w = a.actor();
    let r1 = a
        .node()
        .spawn(w, "idle", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .unwrap();
    let r2 = a
        .node()
        .spawn(w, "busy", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(a.node_events("idle"), vec![true], "idle peer declared down");
    assert_eq!(a.node_events("busy"), vec![true], "busy peer declared down");
    assert!(a.exits_to(w).is_empty());
    assert_eq!(a.node().nodes().len(), 2);
    let _ = (r1, r2);
}

fn cluster_conf(name: &str, listen: u16, route_to: Option<u16>) -> String {
    let routes = route_to.map(|p| format!("routes: [\"nats-route://127.0.0.1:{p}\"]")).unwrap_or_default();
    format!("cluster {{\n name: {name}\n listen: 127.0.0.1:{listen}\n {routes}\n}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_server_never_leaves_a_silent_gap() {
    let (c1, c2) = (free_port(), free_port());
    let mut s1 = NatsServer::start_on(free_port(), c1, &cluster_conf("sk", c1, None));
    let s2 = NatsServer::start_on(free_port(), c2, &cluster_conf("sk", c2, Some(c1)));
    let (a, _) = start(Config::new("sk", "a"), nats(&[s1.url(), s2.url()], "sk").await).await;
    let (b, _) = start(Config::new("sk", "b"), nats(&[s2.url()], "sk").await).await;
    a.node().wait_for("b", T).await.expect("a sees b across the route");
    b.node().wait_for("a", T).await.expect("b sees a across the route");
    let pa = a.actor();
    let pb = b.actor();
    let rb = remote(&a, &b, pb);
    let mut inbox = tap(&b);
    let n = 20_000i64;
    let node = a.node().clone();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            send(&node, pa, rb, &Value::Int(i)).await;
            if i % 1000 == 999 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut got = Vec::new();
    let mut killed_at = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(6), inbox.recv()).await {
            Ok(Some((_, Value::Int(i)))) => got.push(i),
            Ok(_) => panic!("unexpected message"),
            Err(_) => break,
        }
        if got.len() == 5000 && killed_at.is_none() {
            s1.kill();
            killed_at = Some(Instant::now());
        }
        if got.last() == Some(&(n - 1)) {
            break;
        }
    }
    sender.await.unwrap();
    assert!(killed_at.is_some());
    assert!(got.windows(2).all(|w| w[0] < w[1]), "messages arrived out of order");
    let complete = got.len() as i64 == n;
    let a_down = a.node_events("b").contains(&false);
    let b_down = b.node_events("a").contains(&false);
    eprintln!("server kill: {} of {n} arrived; nodedown seen by a: {a_down}, by b: {b_down}", got.len());
    if !complete {
        assert!(a_down && b_down, "messages were lost without a node-down on both sides: a silent gap");
        let gaps = got.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert!(gaps <= b.node_events("a").iter().filter(|u| !**u).count(), "more holes than session ends");
    } else if a_down || b_down {
        assert!(a_down && b_down, "only one side saw the session end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_servers_is_seen_by_both_sides_and_heals() {
    let (c1, c2) = (free_port(), free_port());
    let s1 = NatsServer::start_on(free_port(), c1, &cluster_conf("pt", c1, None));
    let proxy = Proxy::start(c1);
    let s2 = NatsServer::start_on(free_port(), c2, &cluster_conf("pt", c2, Some(proxy.port)));
    let (a, _) = start(Config::new("pt", "a"), nats(&[s1.url()], "pt").await).await;
    let (b, _) = start(Config::new("pt", "b"), nats(&[s2.url()], "pt").await).await;
    a.node().wait_for("b", T).await.expect("a sees b");
    b.node().wait_for("a", T).await.expect("b sees a");
    let wa = a.actor();
    let wb = b.actor();
    a.node().link(wa, remote(&a, &b, wb)).unwrap();
    // A message sent after the link arrives after it: then b knows the link too.
    a.node().send(wa, remote(&a, &b, wb), &Value::atom("linked")).unwrap();
    until(T, || b.mail(wb).len() == 1).await.expect("the marker arrives");
    proxy.pause(true);
    let took = until(Duration::from_secs(8), || {
        a.node_events("b") == [true, false] && b.node_events("a") == [true, false]
    })
    .await
    .expect("both sides see node-down");
    eprintln!("partition seen by both sides after {took:?}");
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    assert_eq!(a.exits_to(wa).len(), 1);
    assert_eq!(b.exits_to(wb).len(), 1);
    proxy.pause(false);
    let healed =
        until(Duration::from_secs(15), || a.node().live("b").is_some() && b.node().live("a").is_some())
            .await
            .expect("node-up after healing");
    eprintln!("node-up {healed:?} after healing");
    let p = a.actor();
    a.node()
        .spawn(p, "b", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .expect("spawn works again");
    assert_eq!(a.exits_to(wa).len(), 1, "the old link fired once");
    drop(s1);
    drop(s2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    let user = nkeys::KeyPair::new_user();
    let conf = format!(
        "authorization {{ users: [ {{user: \"vm\", password: \"s3cret\"}}, {{nkey: \"{}\"}} ] }}",
        user.public_key()
    );
    let s = NatsServer::start(&conf);
    let ok = NatsOptions {
        urls: vec![s.url()],
        user: Some("vm".into()),
        password: Some("s3cret".into()),
        ..Default::default()
    };
    assert!(NatsTransport::connect(&ok, "c").await.is_ok());
    let wrong = NatsOptions { password: Some("nope".into()), ..ok.clone() };
    assert!(matches!(NatsTransport::connect(&wrong, "c").await, Err(TransportError::Auth(_))));
    let none = NatsOptions { urls: vec![s.url()], ..Default::default() };
    assert!(matches!(NatsTransport::connect(&none, "c").await, Err(TransportError::Auth(_))));
    let seed = s.dir().join("user.nk");
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let nk = NatsOptions { urls: vec![s.url()], nkey_file: Some(seed), ..Default::default() };
    let t = Arc::new(NatsTransport::connect(&nk, "c").await.expect("nkey login"));
    let (a, _) = start(Config::new("c", "a"), t).await;
    assert_eq!(a.node().me().name.as_ref(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_required_and_verified() {
    let dir = std::env::temp_dir().join(format!("vm-dist-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(st.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&st.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vm test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let s = NatsServer::start(&format!(
        "tls {{ cert_file: \"{0}/server.pem\", key_file: \"{0}/server.key\" }}",
        dir.display()
    ));
    let ok = NatsOptions { urls: vec![s.url()], tls_ca: Some(dir.join("ca.pem")), ..Default::default() };
    let t = Arc::new(NatsTransport::connect(&ok, "tls").await.expect("TLS with the right CA"));
    let (a, _) = start(Config::new("tls", "a"), t).await;
    assert!(a.node().nodes().is_empty());
    // Without the CA the server's certificate is not trusted.
    let untrusted = NatsOptions { urls: vec![s.url()], require_tls: true, ..Default::default() };
    assert!(NatsTransport::connect(&untrusted, "tls").await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_names_race_with_one_winner_and_a_killed_owner_frees_its_name() {
    let s = NatsServer::start(
        "jetstream { store_dir: \"JS\" }"
            .replace(
                "JS",
                &std::env::temp_dir().join(format!("vm-js-{}", std::process::id())).display().to_string(),
            )
            .as_str(),
    );
    let urls = vec![s.url()];
    let (a, _) = start(Config::new("gn", "a"), nats(&urls, "gn").await).await;
    let (b, bdriver) = start(Config::new("gn", "b"), nats(&urls, "gn").await).await;
    a.node().wait_for("b", T).await.unwrap();
    b.node().wait_for("a", T).await.unwrap();
    for round in 0..100 {
        let name = Atom::new(&format!("svc{round}"));
        let (pa, pb) = (a.actor(), b.actor());
        let (ra, rb) = tokio::join!(a.node().global_register(name, pa), b.node().global_register(name, pb));
        assert!(ra.is_ok() != rb.is_ok(), "round {round}: {ra:?} {rb:?}");
        assert!(ra == Err(GlobalError::AlreadyRegistered) || rb == Err(GlobalError::AlreadyRegistered));
    }
    let name = Atom::new("owned_by_b");
    b.node().global_register(name, b.actor()).await.unwrap();
    assert!(a.node().global_whereis(name).await.unwrap().is_some());
    // Kill b: its connection goes away without a goodbye.
    bdriver.abort();
    let _ = bdriver.await;
    drop(b);
    let t = Instant::now();
    let freed = loop {
        if a.node().global_register(name, a.actor()).await.is_ok() {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(8), "the dead node's name was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("a killed owner's name was free after {freed:?}");
    assert!(freed <= Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_disconnect_notice_reports_a_killed_node_within_100_ms() {
    let conf = "accounts {\n VM: { users: [ {user: vm, password: vm} ] }\n SYS: { users: [ {user: sys, password: sys} ] }\n}\nsystem_account: SYS";
    let s = NatsServer::start(conf);
    let url = |u: &str| format!("nats://{u}:{u}@127.0.0.1:{}", s.port);
    let mut b = NodeProcess::start(&url("vm"), "dn", "b", false);
    let system = NatsOptions { urls: vec![url("sys")], ..Default::default() };
    let inc = vm_dist::NodeId::fresh_incarnation();
    let opts = NatsOptions {
        urls: vec![url("vm")],
        client_name: Some(vm_dist::node::client_name("dn", "a", inc)),
        system: Some(Box::new(system)),
        ..Default::default()
    };
    let t =
        Arc::new(NatsTransport::connect(&opts, "dn").await.expect("connects with a system-account watcher"));
    // A long heartbeat and a failure detector that would take a minute, so that only the
    // server's notice can fire the link within the wait below, whatever the machine's load.
    let cfg = Config {
        incarnation: Some(inc),
        heartbeat: Duration::from_secs(2),
        down_after: Duration::from_secs(60),
        ..Config::new("dn", "a")
    };
    let (a, _) = start(cfg, t).await;
    a.node().wait_for("b", T).await.expect("a sees b");
    let w = a.actor();
    a.node()
        .spawn(w, "b", "worker", vec![], SpawnOptions { link: true, ..Default::default() })
        .await
        .unwrap();
    let t = Instant::now();
    b.kill();
    until(Duration::from_secs(10), || a.exits_to(w).len() == 1).await.expect("the link fires");
    eprintln!("disconnect notice: link fired {:?} after kill -9", t.elapsed());
    assert_eq!(a.exits_to(w)[0].1, Value::atom("noconnection"));
}
