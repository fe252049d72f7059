//! vm-dist: VM nodes in a cluster over NATS.
//!
//! A VM joins a cluster as a [`Node`]: it learns of its peers from their announcements, keeps a
//! numbered session with each, notices when one is lost (heartbeats, NATS's 503 for a subject
//! nobody listens on, a graceful `Bye`, a gap in the numbering), and then fires every link and
//! monitor to that node's actors exactly once with `:noconnection`. Pids name their node through
//! a slot in the VM's [`NodeTable`], so local pids (slot 0) are unchanged.
//!
//! The pieces:
//! - [`id`]: node incarnations, pid slots.
//! - [`wire`]: the envelope format and its hardened decoder (untrusted input; a fuzz target).
//! - [`transport`]: the [`Transport`] trait and the in-memory bus for in-process tests;
//!   [`nats`]: the NATS transport (async-nats), with credentials and TLS ([`options`]: how to
//!   reach and log in to the servers).
//! - [`node`]: sessions, failure detection, backpressure, remote links/monitors/spawn; the
//!   runtime implements [`Local`] and spawns the [`Driver`].
//! - [`global`]: cluster-wide names with exactly one winner.
//! - [`direct`]: frames, the authenticating handshake and the ordered writer of a direct TCP
//!   connection between two nodes (the direct path; `node`'s `conn` runs the connections).
//! - [`census`]: the live nodes, seen from outside the cluster (`vm nodes`).
//! - `outbox`: the order in which envelopes reach the transport (loom-checked).
//!
//! **This crate spawns no tasks** (the runtime spawns [`Driver::run`], and the direct
//! connections' tasks the driver hands it); async-nats spawns its connection task inside
//! `connect`, the one exception to "only vm-sched spawns tasks".

pub mod census;
pub mod direct;
pub mod global;
pub mod id;
#[cfg(not(vm_loom))]
pub mod nats;
pub mod node;
pub mod options;
mod outbox;
pub mod tap;
pub mod transport;
pub mod wire;

pub use global::GlobalError;
pub use id::{NodeId, NodeTable};
#[cfg(not(vm_loom))]
pub use nats::NatsTransport;
pub use node::{Config, Congestion, Driver, Local, Node, NodeInfo, Pulse, SendError, SpawnError, StartError};
pub use options::NatsOptions;
pub use transport::{MemBus, MemTransport, Transport};
pub use wire::SpawnOptions;

/// The fuzz target's body (also replayed over the seeds by a test): decoding arbitrary bytes
/// returns, and an envelope that decodes re-encodes to one that decodes to the same signal.
#[doc(hidden)]
pub fn fuzz_envelope(bytes: &[u8]) {
    // The same bytes as a direct connection's stream: its framing and handshake.
    direct::fuzz(bytes);
    let me = NodeId::new("fuzz", 1).expect("a valid name");
    let table = NodeTable::new(me);
    let ctx = wire::DecodeCtx { table: &table, module_hash: 7, limits: wire::Limits::default() };
    let Ok(env) = wire::decode(&ctx, &bytes::Bytes::copy_from_slice(bytes)) else { return };
    let no_res = |_: &vm_core::Handle| "resource";
    let ectx = wire::EncodeCtx {
        table: &table,
        module_hash: 7,
        peer_module_hash: Some(7),
        max_size: usize::MAX,
        max_depth: wire::Limits::default().max_depth,
        res_kind: &no_res,
    };
    let again = wire::encode(&ectx, env.epoch, env.seq, &env.signal).expect("a decoded signal encodes");
    let back = wire::decode(&ctx, &bytes::Bytes::from(again)).expect("a re-encoded signal decodes");
    assert_eq!(back.signal, env.signal, "the signal changed in a round trip");
    assert_eq!((back.epoch, back.seq), (env.epoch, env.seq));
}
