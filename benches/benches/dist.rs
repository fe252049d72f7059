//! Distribution over NATS against a plain loopback TCP round trip, measured in one run:
//!
//! - `tcp`: a tokio client and echo server on 127.0.0.1, one connection, 64-byte messages.
//! - `raw`: two async-nats clients in this process bouncing a 64-byte payload through the same
//!   nats-server, no vm-dist: the floor any NATS transport pays.
//! - `nats`: two vm-dist nodes in this process, each on its own connection to one nats-server
//!   (started here on a free port); an actor on `a` sends a 64-byte bytes value to an actor on
//!   `b`, whose runtime echoes it back.
//! - `direct`: the same with two other nodes (`c`, `d`) that take direct connections
//!   (`Config::direct` on 127.0.0.1): once they have switched, every signal goes over their one
//!   TCP connection, and NATS carries only announcements.
//!
//! Rounds alternate between the four (interleaved, so machine noise hits all alike); the median
//! round trip of each round is printed, then the median of those medians and their ratios.
//! Last, one-way throughput: messages per second from `a` to `b` (and `c` to `d`) with the
//! window's backpressure.
//!
//! Run with `cargo bench -p vm-benches --bench dist` (needs `nats-server` on the PATH or in
//! /usr/sbin). Results and the command are recorded in docs/BENCHMARKS.md.
#![allow(clippy::print_stdout, reason = "a benchmark binary: printing its figures is its job")]

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use vm_core::{Pid, Value};
use vm_dist::node::{Config, Node, SendError};
use vm_dist::tap::Tap;
use vm_dist::{NatsOptions, NatsTransport};

const ROUNDS: usize = 7;
const TRIPS: usize = 2000;
const ONE_WAY: usize = 300_000;

async fn node(url: &str, name: &str, direct: bool) -> (Arc<Tap>, mpsc::UnboundedReceiver<(Pid, Value)>) {
    let opts = NatsOptions { urls: vec![url.to_string()], ..Default::default() };
    let t = Arc::new(NatsTransport::connect(&opts, "bench").await.expect("nats-server reachable"));
    // A runtime whose every delivery goes to a channel (the bench plays the actors).
    let (tap, rx) = Tap::new(1);
    let tap = Arc::new(tap);
    let mut cfg = Config::new("bench", name);
    if direct {
        cfg.direct = Some("127.0.0.1:0".parse().unwrap());
    }
    let (n, driver) = Node::start(cfg, t, tap.clone()).await.unwrap();
    tap.node.set(n).unwrap();
    tokio::spawn(driver.run(|t| drop(tokio::spawn(t))));
    (tap, rx)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn nats_server() -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let child = std::process::Command::new(bin.unwrap_or("nats-server"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server starts");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, port)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut server, port) = nats_server();
    rt.block_on(async move {
        // The loopback TCP echo peer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).await.is_ok() {
                if s.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();

        let url = format!("nats://127.0.0.1:{port}");
        let (a, mut a_in) = node(&url, "a", false).await;
        let (b, b_in) = node(&url, "b", false).await;
        let an = a.node.get().unwrap().clone();
        let bn = b.node.get().unwrap().clone();
        an.wait_for("b", Duration::from_secs(5)).await.expect("a sees b");
        bn.wait_for("a", Duration::from_secs(5)).await.expect("b sees a");
        let (c, mut c_in) = node(&url, "c", true).await;
        let (d, d_in) = node(&url, "d", true).await;
        let cn = c.node.get().unwrap().clone();
        let dn = d.node.get().unwrap().clone();
        let t = Instant::now();
        while !(cn.is_direct("d") && dn.is_direct("c")) {
            assert!(t.elapsed() < Duration::from_secs(5), "c and d switch to their connection");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let pa = Pid(1);
        let to_b = an.pid_of(bn.me(), 1).unwrap();
        let to_d = cn.pid_of(dn.me(), 1).unwrap();
        // b's and d's runtimes echo everything back to a's and c's actors.
        let echo = |from: Node, to: Node, mut inbox: mpsc::UnboundedReceiver<(Pid, Value)>| {
            let back = from.pid_of(to.me(), 1).unwrap();
            tokio::spawn(async move {
                while let Some((_, msg)) = inbox.recv().await {
                    if msg == Value::Nil {
                        break;
                    }
                    from.send(Pid(1), back, &msg).unwrap();
                }
                inbox
            })
        };
        let echo_b = echo(bn.clone(), an.clone(), b_in);
        let echo_d = echo(dn.clone(), cn.clone(), d_in);
        // The raw async-nats pair: b echoes `raw.b` to `raw.a`.
        let ra = async_nats::connect(&url).await.unwrap();
        let rb = async_nats::connect(&url).await.unwrap();
        let mut ra_in = ra.subscribe("raw.a").await.unwrap();
        let mut rb_in = rb.subscribe("raw.b").await.unwrap();
        tokio::spawn(async move {
            while let Some(m) = rb_in.next().await {
                rb.publish("raw.a", m.payload).await.unwrap();
            }
        });
        ra.flush().await.unwrap();
        let msg = Value::bytes(vec![0x5a; 64]);
        let (mut tcp_medians, mut nats_medians, mut raw_medians, mut direct_medians) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut t = Vec::with_capacity(TRIPS);
            let mut buf = [0u8; 64];
            for _ in 0..TRIPS {
                let s = Instant::now();
                tcp.write_all(&[0x5a; 64]).await.unwrap();
                tcp.read_exact(&mut buf).await.unwrap();
                t.push(s.elapsed());
            }
            let mut n = Vec::with_capacity(TRIPS);
            for _ in 0..TRIPS {
                let s = Instant::now();
                an.send(pa, to_b, &msg).unwrap();
                let (_, back) = a_in.recv().await.unwrap();
                assert_eq!(back, msg);
                n.push(s.elapsed());
            }
            let mut r = Vec::with_capacity(TRIPS);
            let payload = bytes::Bytes::from_static(&[0x5a; 64]);
            for _ in 0..TRIPS {
                let s = Instant::now();
                ra.publish("raw.b", payload.clone()).await.unwrap();
                ra_in.next().await.unwrap();
                r.push(s.elapsed());
            }
            let mut dt = Vec::with_capacity(TRIPS);
            for _ in 0..TRIPS {
                let s = Instant::now();
                cn.send(pa, to_d, &msg).unwrap();
                let (_, back) = c_in.recv().await.unwrap();
                assert_eq!(back, msg);
                dt.push(s.elapsed());
            }
            let (tm, rm, nm, dm) = (median(t), median(r), median(n), median(dt));
            println!(
                "round {round}: tcp p50 {:>6.1} us   raw nats p50 {:>6.1} us   vm-dist p50 {:>6.1} us   vm-dist direct p50 {:>6.1} us",
                us(tm),
                us(rm),
                us(nm),
                us(dm)
            );
            tcp_medians.push(tm);
            raw_medians.push(rm);
            nats_medians.push(nm);
            direct_medians.push(dm);
        }
        let (tm, rm, nm, dm) =
            (median(tcp_medians), median(raw_medians), median(nats_medians), median(direct_medians));
        println!(
            "median of medians: tcp {:.1} us, raw nats {:.1} us ({:.2}x tcp), vm-dist {:.1} us ({:.2}x tcp, {:.2}x raw nats), vm-dist direct {:.1} us ({:.2}x tcp)",
            us(tm),
            us(rm),
            us(rm) / us(tm),
            us(nm),
            us(nm) / us(tm),
            us(nm) / us(rm),
            us(dm),
            us(dm) / us(tm)
        );
        an.send(pa, to_b, &Value::Nil).unwrap();
        cn.send(pa, to_d, &Value::Nil).unwrap();
        let b_in = echo_b.await.unwrap();
        let d_in = echo_d.await.unwrap();
        one_way("vm-dist", &an, to_b, b_in, &msg).await;
        one_way("vm-dist direct", &cn, to_d, d_in, &msg).await;
    });
    let _ = server.kill();
    let _ = server.wait();
}

/// One way: `from`'s actor sends ONE_WAY 64-byte messages to `to`, whose node counts them.
async fn one_way(
    label: &str,
    from: &Node,
    to: Pid,
    mut inbox: mpsc::UnboundedReceiver<(Pid, Value)>,
    msg: &Value,
) {
    let s = Instant::now();
    let sender = {
        let from = from.clone();
        let msg = msg.clone();
        tokio::spawn(async move {
            for _ in 0..ONE_WAY {
                loop {
                    match from.send(Pid(1), to, &msg) {
                        Ok(()) => break,
                        Err(SendError::Busy(c)) => c.wait().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        })
    };
    for _ in 0..ONE_WAY {
        inbox.recv().await.unwrap();
    }
    let took = s.elapsed();
    sender.await.unwrap();
    println!(
        "one way, {label}: {ONE_WAY} messages of 64 bytes in {took:?}: {:.0} msg/s",
        ONE_WAY as f64 / took.as_secs_f64()
    );
}
