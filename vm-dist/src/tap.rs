//! [`Tap`]: a [`Local`] for a process that is a node without a VM behind it (benchmarks, test
//! harnesses): whatever arrives for one of its pids is handed to a channel, and the process plays
//! its actors itself.
//!
//! 1. A message for a local pid (or a registered name, as pid 0) goes to the channel, in order;
//!    nothing is dropped while the receiver lives.
//! 2. It has no code to run: a remote spawn is refused with `:undef`.
//! 3. Its actors never exit: every pid is alive, and exit signals, kills, interrupts, monitor
//!    notices and node events are ignored.
//! 4. It announces the actor count it was made with (what `vm nodes` and a census show).

use crate::id::NodeId;
use crate::node::{Local, Node};
use crate::wire::SpawnOptions;
use std::sync::OnceLock;
use tokio::sync::mpsc;
use vm_core::{Atom, Pid, Value};

/// See the module docs.
pub struct Tap {
    tx: mpsc::UnboundedSender<(Pid, Value)>,
    actors: u64,
    /// The node this tap serves, once started (for a harness that answers through it).
    pub node: OnceLock<Node>,
}

impl Tap {
    /// A tap announcing `actors` actors, and the receiving end of its deliveries.
    pub fn new(actors: u64) -> (Tap, mpsc::UnboundedReceiver<(Pid, Value)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Tap { tx, actors, node: OnceLock::new() }, rx)
    }
}

impl Local for Tap {
    fn send(&self, to: Pid, msg: Value) {
        // A receiver that is gone wants nothing more (rule 1 holds only while it lives).
        let _ = self.tx.send((to, msg));
    }
    fn send_named(&self, _: Atom, msg: Value) {
        let _ = self.tx.send((Pid(0), msg));
    }
    fn spawn(
        &self,
        _: &str,
        _: Vec<Value>,
        _: &SpawnOptions,
        _: Pid,
        _: &mut dyn FnMut(Pid),
    ) -> Result<Pid, Atom> {
        Err(Atom::new("undef"))
    }
    fn is_alive(&self, _: Pid) -> bool {
        true
    }
    fn exit_signal(&self, _: Pid, _: Pid, _: Value, _: bool) {}
    fn down(&self, _: Pid, _: i64, _: Pid, _: Value) {}
    fn interrupt(&self, _: Pid, _: Atom, _: Value, _: u8) {}
    fn kill(&self, _: Pid, _: Pid) {}
    fn node_event(&self, _: &NodeId, _: bool) {}
    fn actor_count(&self) -> u64 {
        self.actors
    }
}
