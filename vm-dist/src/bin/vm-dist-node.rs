//! A minimal node process for vm-dist's integration tests (the real one is `vm node`): it joins
//! a cluster over NATS and serves remote spawns of `worker` (an actor that answers
//! `{:echo, pid, x}` by sending `x` to `pid`) and `crash` (an actor that raises at once), until
//! it is killed or reads `leave` on standard input (a graceful leave).
//!
//! Usage: `vm-dist-node URL[,URL...] CLUSTER NAME [busy]` (a URL may carry `user:password@`);
//! it prints `ready` once it has joined. Its NATS client name is `node::client_name`'s, so the
//! server's disconnect notice names it.
//! With `busy`, two threads spin for the life of the process (a node at 100 % CPU).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test node process: its usage, errors and `ready` line are how the test harness talks to it"
)]

use parking_lot::Mutex;
use std::collections::HashSet;
use std::io::BufRead;
use std::sync::{Arc, OnceLock};
use vm_core::{Atom, Pid, Value};
use vm_dist::node::{Config, Local, Node};
use vm_dist::wire::SpawnOptions;
use vm_dist::{NatsOptions, NatsTransport, NodeId};

#[derive(Default)]
struct Actors {
    next: Mutex<(u64, HashSet<Pid>)>,
    node: OnceLock<Node>,
}

impl Local for Actors {
    fn send(&self, to: Pid, msg: Value) {
        if !self.is_alive(to) {
            return;
        }
        if let Value::Tuple(t) = &msg
            && t.len() == 3
            && t[0] == Value::atom("echo")
            && let Value::Pid(back) = t[1]
            && let Some(node) = self.node.get()
        {
            let _ = node.send(to, back, &t[2]);
        }
    }

    fn send_named(&self, _name: Atom, _msg: Value) {}

    fn spawn(
        &self,
        func: &str,
        _args: Vec<Value>,
        _opts: &SpawnOptions,
        _parent: Pid,
        started: &mut dyn FnMut(Pid),
    ) -> Result<Pid, Atom> {
        if func != "worker" && func != "crash" {
            return Err(Atom::new("undef"));
        }
        let pid = {
            let mut g = self.next.lock();
            g.0 += 1;
            Pid(g.0)
        };
        started(pid);
        if func == "crash" {
            let reason =
                Value::tuple(vec![Value::atom("exception"), Value::atom("badarith"), Value::str("boom")]);
            if let Some(node) = self.node.get() {
                node.actor_exited(pid, &reason);
            }
        } else {
            self.next.lock().1.insert(pid);
        }
        Ok(pid)
    }

    fn is_alive(&self, pid: Pid) -> bool {
        self.next.lock().1.contains(&pid)
    }

    fn exit_signal(&self, to: Pid, _from: Pid, _reason: Value, _linked: bool) {
        if self.next.lock().1.remove(&to)
            && let Some(node) = self.node.get()
        {
            node.actor_exited(to, &Value::atom("killed"));
        }
    }

    fn down(&self, _watcher: Pid, _r: i64, _target: Pid, _reason: Value) {}

    fn interrupt(&self, _to: Pid, _kind: Atom, _msg: Value, _mode: u8) {}

    fn kill(&self, to: Pid, _from: Pid) {
        self.exit_signal(to, to, Value::Nil, false);
    }

    fn node_event(&self, _node: &NodeId, _up: bool) {}

    fn actor_count(&self) -> u64 {
        self.next.lock().1.len() as u64
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: vm-dist-node URL[,URL...] CLUSTER NAME [busy]");
        std::process::exit(2);
    }
    if args.get(4).map(String::as_str) == Some("busy") {
        for _ in 0..2 {
            std::thread::spawn(|| {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        let inc = NodeId::fresh_incarnation();
        let opts = NatsOptions {
            urls: args[1].split(',').map(String::from).collect(),
            client_name: Some(vm_dist::node::client_name(&args[2], &args[3], inc)),
            ..Default::default()
        };
        let transport = match NatsTransport::connect(&opts, &args[2]).await {
            Ok(t) => Arc::new(t),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
        let actors = Arc::new(Actors::default());
        // `VM_CLUSTER_DIRECT` (an address such as 127.0.0.1:0) turns the direct path on, as for
        // the test harness's in-process nodes.
        let direct = std::env::var("VM_CLUSTER_DIRECT").ok().filter(|v| !v.is_empty()).map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("VM_CLUSTER_DIRECT: not an address: {v}");
                std::process::exit(2)
            })
        });
        let cfg = Config { incarnation: Some(inc), direct, ..Config::new(&args[2], &args[3]) };
        let (node, driver) = match Node::start(cfg, transport, actors.clone()).await {
            Ok(started) => started,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
        actors.node.set(node.clone()).expect("once");
        let driver = tokio::spawn(driver.run(|t| drop(tokio::spawn(t))));
        println!("ready");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            if line.trim() == "leave" {
                node.leave().await;
                break;
            }
        }
        let _ = driver.await;
    });
}
