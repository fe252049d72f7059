//! The envelope: what one NATS message between two nodes holds, and its hardened decoder.
//!
//! Layout (all integers little-endian; "varint" is unsigned LEB128, "zigzag" maps signed
//! integers onto it):
//!
//! 1. Byte 0 is the format version ([`VERSION`]), byte 1 the signal kind.
//! 2. Bytes 2..6 are the sender's session epoch with the receiver (`u32`) and bytes 6..14 the
//!    sequence number (`u64`; 0 for unsequenced kinds: ticks, acks, resets, announcements).
//!    They sit at fixed offsets so that the sender can encode outside its session lock and
//!    stamp them under it ([`stamp`]).
//! 3. Then the signal's body (see [`Signal`]); values use the tags of the `tag` module.
//! 4. Then the node list: a count byte and per node its name (length byte + bytes) and
//!    incarnation (`u64`). Entry 0 is the sender. A pid or a reference inside a value is written
//!    as (index into this list, serial), so a message naming pids of many nodes carries each
//!    node once, and a reference stays unique across nodes and their restarts.
//! 5. The last 4 bytes hold the offset of the node list (`u32`), so a decoder reads the nodes
//!    first and maps each to a local slot before it meets a pid.
//!
//! The decoder treats every byte as hostile: it never panics, never trusts a count beyond what
//! the remaining bytes could hold (so it never over-allocates), checks UTF-8, refuses duplicate
//! map keys, unknown tags, trailing bytes, containers nested deeper than [`Limits::max_depth`],
//! more than [`Limits::max_nodes`] nodes and atoms longer than [`MAX_ATOM_LEN`], and accepts a
//! function value only from a node running the same module (same module hash). Bytes values
//! are slices of the received buffer (no copy).
//!
//! The encoder refuses what cannot cross (channels, resources, tables: their protocols are
//! shared-memory ones; functions towards a node running another module) with
//! [`EncodeError::NotDistributable`], and stops as soon as the output passes the transport's
//! size limit ([`EncodeError::TooLarge`]); either way nothing is sent.

use crate::id::{MAX_SERIAL, NodeId, NodeTable, check_node_name, serial_of, slot_of};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use vm_core::{Atom, Closure, Handle, Value};

/// The envelope format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Bytes before the body: version, kind, epoch, sequence number.
pub const HEADER_LEN: usize = 14;

/// The longest atom (and function name) accepted, as in Erlang.
pub const MAX_ATOM_LEN: usize = 255;

/// Value tags: the `.vbc` constant tags, then the two kinds of value only a message can hold.
mod tag {
    pub(super) use vm_core::bytecode::tag::*;
    pub(super) const PID: u8 = MAP + 1;
    pub(super) const FUN: u8 = MAP + 2;
    pub(super) const REF: u8 = MAP + 3;
}

/// Signal kinds (byte 1).
mod kind {
    pub(super) const SEND: u8 = 1;
    pub(super) const SEND_NAME: u8 = 2;
    pub(super) const SPAWN: u8 = 3;
    pub(super) const SPAWNED: u8 = 4;
    pub(super) const LINK: u8 = 5;
    pub(super) const UNLINK: u8 = 6;
    pub(super) const EXIT: u8 = 7;
    pub(super) const MONITOR: u8 = 8;
    pub(super) const DEMONITOR: u8 = 9;
    pub(super) const DOWN: u8 = 10;
    pub(super) const INTERRUPT: u8 = 11;
    pub(super) const KILL: u8 = 12;
    /// Kinds below this one are sequenced.
    pub(super) const FIRST_UNSEQUENCED: u8 = 64;
    pub(super) const TICK: u8 = 64;
    pub(super) const ACK: u8 = 65;
    pub(super) const RESET: u8 = 66;
    pub(super) const ANNOUNCE: u8 = 67;
    pub(super) const BYE: u8 = 68;
    pub(super) const SWITCH: u8 = 69;
}

/// Decoder limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How deeply containers (tuples, lists, maps, closures) may nest.
    pub max_depth: usize,
    /// How many distinct nodes one envelope may name.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_depth: 256, max_nodes: 32 }
    }
}

/// A cumulative acknowledgement: the receiver has taken every sequenced envelope up to `seq`
/// (`bytes` bytes in all) of the sender's session `epoch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    /// The sender's session epoch this acknowledges.
    pub epoch: u32,
    /// The last sequence number taken.
    pub seq: u64,
    /// Bytes of sequenced envelopes taken in that epoch.
    pub bytes: u64,
}

/// What a node says about itself on the announcement subject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Announce {
    /// Live actors on the node.
    pub actors: u64,
    /// The hash of the module the node runs.
    pub module_hash: u64,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// Where the node takes direct connections, and the token a dialer presents (absent when
    /// it takes none; then nothing follows `uptime_ms` on the wire, as before the direct path).
    pub direct: Option<DirectAddr>,
}

/// A node's direct-connection listener, as announced (`direct`'s handshake, point 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectAddr {
    /// The address to dial.
    pub addr: std::net::SocketAddr,
    /// The token to present in the hello.
    pub token: crate::direct::Token,
}

/// Options of a remote spawn, as `spawnx` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Link the new actor to the spawner (recorded before the reply is sent).
    pub link: bool,
    /// Monitor the new actor from the spawner with this reference.
    pub monitor: Option<i64>,
    /// The new actor's mailbox limit.
    pub max_mailbox: Option<u64>,
    /// The new actor's frame limit.
    pub max_frames: Option<u32>,
    /// The new actor's memory limit (`:max_heap`, bytes).
    pub max_heap: Option<u64>,
}

/// What an envelope carries. `from`/`watcher`/`target` fields are serials: a field naming the
/// sender's actor is a serial on the sender's node, one naming the receiver's actor a serial on
/// the receiver's node.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// A message to an actor.
    Send {
        /// The receiving actor.
        to: u64,
        /// The message.
        msg: Value,
    },
    /// A message to a registered name on the receiving node.
    SendName {
        /// The name.
        name: Atom,
        /// The message.
        msg: Value,
    },
    /// Start `func(args)` on the receiving node; answered by `Spawned { req }`.
    Spawn {
        /// The request number, echoed in the answer.
        req: u64,
        /// The spawning actor.
        from: u64,
        /// The function's name.
        func: Arc<str>,
        /// The arguments.
        args: Vec<Value>,
        /// Link, monitor and limits.
        opts: SpawnOptions,
    },
    /// The answer to `Spawn`: the new actor's serial or the reason it was not started.
    Spawned {
        /// The request number.
        req: u64,
        /// The serial, or `:undef`, `:limit`, `:badarg`.
        result: Result<u64, Atom>,
    },
    /// `from` (sender's) links to `to` (receiver's).
    Link {
        /// The linking actor.
        from: u64,
        /// The linked actor.
        to: u64,
    },
    /// Removes a link.
    Unlink {
        /// The unlinking actor.
        from: u64,
        /// The other end.
        to: u64,
    },
    /// An exit signal: through a link (`linked`) or sent explicitly.
    Exit {
        /// The actor the signal comes from.
        from: u64,
        /// The receiving actor.
        to: u64,
        /// Whether a link carries it (dropped if the link is gone).
        linked: bool,
        /// The exit reason.
        reason: Value,
    },
    /// `watcher` (sender's) monitors `target` (receiver's) under reference `r`.
    Monitor {
        /// The watching actor.
        watcher: u64,
        /// The watched actor.
        target: u64,
        /// The watcher's reference.
        r: i64,
    },
    /// Cancels a monitor.
    Demonitor {
        /// The watching actor.
        watcher: u64,
        /// The watched actor.
        target: u64,
        /// The reference.
        r: i64,
    },
    /// `target` (sender's) ended; `watcher` (receiver's) gets `{:DOWN, r, pid, reason}`.
    Down {
        /// The watching actor.
        watcher: u64,
        /// The actor that ended.
        target: u64,
        /// The reference.
        r: i64,
        /// Why it ended.
        reason: Value,
    },
    /// `interrupt to, {kind, msg}, mode`.
    Interrupt {
        /// The interrupting actor.
        from: u64,
        /// The interrupted actor.
        to: u64,
        /// 0, 1 or 2.
        mode: u8,
        /// The exception's kind.
        kind: Atom,
        /// The exception's message.
        msg: Value,
    },
    /// `kill to`.
    Kill {
        /// The killing actor.
        from: u64,
        /// The killed actor.
        to: u64,
    },
    /// Sent to each peer every heartbeat: the last sequence number sent in the header's epoch,
    /// plus an acknowledgement of what was received.
    Tick {
        /// The last sequenced envelope sent in this epoch.
        last_seq: u64,
        /// What this node has taken from the receiver.
        ack: Ack,
    },
    /// An acknowledgement sent between ticks when much has been received.
    Ack(Ack),
    /// "Your sessions with me up to epoch `dead` are over": sent when a session ends, and in
    /// answer to an envelope of an ended session.
    Reset {
        /// The last of the receiver's epochs that is over.
        dead: u32,
    },
    /// Presence, on the announcement subject.
    Announce(Announce),
    /// A graceful leave, sent to each peer behind everything else sent to it.
    Bye,
    /// "From here on I send to you on direct connection `conn`": sent on NATS behind everything
    /// sent there, so the receiver takes the connection's frames only after it.
    Switch {
        /// The connection's number (the dialer's, from its hello).
        conn: u64,
    },
}

impl Signal {
    fn kind(&self) -> u8 {
        match self {
            Signal::Send { .. } => kind::SEND,
            Signal::SendName { .. } => kind::SEND_NAME,
            Signal::Spawn { .. } => kind::SPAWN,
            Signal::Spawned { .. } => kind::SPAWNED,
            Signal::Link { .. } => kind::LINK,
            Signal::Unlink { .. } => kind::UNLINK,
            Signal::Exit { .. } => kind::EXIT,
            Signal::Monitor { .. } => kind::MONITOR,
            Signal::Demonitor { .. } => kind::DEMONITOR,
            Signal::Down { .. } => kind::DOWN,
            Signal::Interrupt { .. } => kind::INTERRUPT,
            Signal::Kill { .. } => kind::KILL,
            Signal::Tick { .. } => kind::TICK,
            Signal::Ack(_) => kind::ACK,
            Signal::Reset { .. } => kind::RESET,
            Signal::Announce(_) => kind::ANNOUNCE,
            Signal::Bye => kind::BYE,
            Signal::Switch { .. } => kind::SWITCH,
        }
    }

    /// Whether the signal takes a place in the session's sequence.
    pub fn is_sequenced(&self) -> bool {
        self.kind() < kind::FIRST_UNSEQUENCED
    }
}

/// A decoded envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The sending node.
    pub from: NodeId,
    /// The sender's session epoch with the receiver.
    pub epoch: u32,
    /// The sequence number (0 for unsequenced signals).
    pub seq: u64,
    /// The signal.
    pub signal: Signal,
}

/// Why a value or signal was not encoded; nothing is sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The value holds something that cannot leave this VM (`"chan"`, `"resource"`, `"table"`,
    /// `"fun"`).
    #[error("a {0} cannot be sent to another node")]
    NotDistributable(&'static str),
    /// The encoded envelope would exceed the transport's limit.
    #[error("the message exceeds the transport's limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Containers nest deeper than the decoder accepts.
    #[error("the message nests containers more than {0} deep")]
    TooDeep(usize),
    /// A pid of a node this VM has no entry for, or a serial too large (a caller bug).
    #[error("the message holds a pid that names no node")]
    BadPid,
}

/// Why received bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct DecodeError(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// What the encoder needs to know about the two ends.
pub struct EncodeCtx<'a> {
    /// Pids to node incarnations.
    pub table: &'a NodeTable,
    /// The hash of the module this node runs.
    pub module_hash: u64,
    /// The receiver's module hash, if known: a function value crosses only when it is equal.
    pub peer_module_hash: Option<u64>,
    /// The largest envelope the transport takes.
    pub max_size: usize,
    /// How deep containers may nest (the receiver's decoder limit).
    pub max_depth: usize,
    /// Names the kind of a resource handle (`"resource"` or `"table"`); the runtime knows.
    pub res_kind: &'a dyn Fn(&Handle) -> &'static str,
}

/// Encodes `signal` in an envelope with `epoch` and `seq` (which [`stamp`] may overwrite).
pub fn encode(ctx: &EncodeCtx<'_>, epoch: u32, seq: u64, signal: &Signal) -> Result<Vec<u8>, EncodeError> {
    let mut e = Encoder { ctx, out: Vec::with_capacity(64), nodes: vec![0] };
    e.out.push(VERSION);
    e.out.push(signal.kind());
    e.out.extend_from_slice(&epoch.to_le_bytes());
    e.out.extend_from_slice(&seq.to_le_bytes());
    e.signal(signal)?;
    let nodes_at = u32::try_from(e.out.len()).map_err(|_| EncodeError::TooLarge { limit: ctx.max_size })?;
    let count = u8::try_from(e.nodes.len()).map_err(|_| EncodeError::BadPid)?;
    e.out.push(count);
    for &slot in &e.nodes {
        let id = ctx.table.get(slot).ok_or(EncodeError::BadPid)?;
        e.out.push(id.name.len() as u8);
        e.out.extend_from_slice(id.name.as_bytes());
        e.out.extend_from_slice(&id.inc.to_le_bytes());
    }
    e.out.extend_from_slice(&nodes_at.to_le_bytes());
    e.check_size()?;
    Ok(e.out)
}

/// Writes `epoch` and `seq` into an encoded envelope.
pub fn stamp(envelope: &mut [u8], epoch: u32, seq: u64) {
    envelope[2..6].copy_from_slice(&epoch.to_le_bytes());
    envelope[6..14].copy_from_slice(&seq.to_le_bytes());
}

struct Encoder<'a, 'c> {
    ctx: &'a EncodeCtx<'c>,
    out: Vec<u8>,
    /// Slots of the nodes named so far; index 0 is this node.
    nodes: Vec<u16>,
}

impl Encoder<'_, '_> {
    fn check_size(&self) -> Result<(), EncodeError> {
        if self.out.len() > self.ctx.max_size {
            return Err(EncodeError::TooLarge { limit: self.ctx.max_size });
        }
        Ok(())
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.out.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    fn zigzag(&mut self, n: i64) {
        self.varint(((n << 1) ^ (n >> 63)) as u64);
    }

    fn blob(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        self.varint(b.len() as u64);
        // Stop before copying what would not be sent anyway.
        if self.out.len() + b.len() > self.ctx.max_size {
            return Err(EncodeError::TooLarge { limit: self.ctx.max_size });
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    fn short_str(&mut self, s: &str) {
        // Atoms and function names are at most MAX_ATOM_LEN bytes by construction of the
        // callers; a longer one is cut at the limit and refused by the decoder.
        let b = &s.as_bytes()[..s.len().min(MAX_ATOM_LEN)];
        self.out.push(b.len() as u8);
        self.out.extend_from_slice(b);
    }

    fn atom(&mut self, a: Atom) -> Result<(), EncodeError> {
        let name = a.name();
        if name.len() > MAX_ATOM_LEN {
            return Err(EncodeError::NotDistributable("long atom"));
        }
        self.short_str(&name);
        Ok(())
    }

    fn node_index(&mut self, slot: u16) -> u64 {
        match self.nodes.iter().position(|&s| s == slot) {
            Some(i) => i as u64,
            None => {
                self.nodes.push(slot);
                (self.nodes.len() - 1) as u64
            }
        }
    }

    fn values(&mut self, items: &[Value], depth: usize) -> Result<(), EncodeError> {
        self.varint(items.len() as u64);
        for v in items {
            self.value(v, depth)?;
        }
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<(), EncodeError> {
        match v {
            Value::Nil => self.out.push(tag::NIL),
            Value::Bool(false) => self.out.push(tag::FALSE),
            Value::Bool(true) => self.out.push(tag::TRUE),
            Value::Int(i) => {
                self.out.push(tag::INT);
                self.zigzag(*i);
            }
            Value::Float(x) => {
                self.out.push(tag::FLOAT);
                self.out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
            Value::Atom(a) => {
                self.out.push(tag::ATOM);
                self.atom(*a)?;
            }
            Value::Str(s) => {
                self.out.push(tag::STR);
                self.blob(s.as_bytes())?;
            }
            Value::Bytes(b) => {
                self.out.push(tag::BYTES);
                self.blob(b)?;
            }
            Value::Pid(p) => {
                let slot = slot_of(*p);
                if self.ctx.table.get(slot).is_none() {
                    return Err(EncodeError::BadPid);
                }
                self.out.push(tag::PID);
                let i = self.node_index(slot);
                self.varint(i);
                self.varint(serial_of(*p));
            }
            // As a pid: its node's index in the node list (so its incarnation) and its serial.
            Value::Ref(r) => {
                let slot = r.node();
                if self.ctx.table.get(slot).is_none() {
                    return Err(EncodeError::BadPid);
                }
                self.out.push(tag::REF);
                let i = self.node_index(slot);
                self.varint(i);
                self.varint(r.serial());
            }
            Value::Chan(_) => return Err(EncodeError::NotDistributable("chan")),
            Value::Res(h) => return Err(EncodeError::NotDistributable((self.ctx.res_kind)(h))),
            Value::Tuple(_) | Value::List(_) | Value::Map(_) | Value::Fun(_) => {
                if depth >= self.ctx.max_depth {
                    return Err(EncodeError::TooDeep(self.ctx.max_depth));
                }
                match v {
                    Value::Tuple(items) => {
                        self.out.push(tag::TUPLE);
                        self.values(items, depth + 1)?;
                    }
                    Value::List(items) => {
                        self.out.push(tag::LIST);
                        self.values(items, depth + 1)?;
                    }
                    Value::Map(m) => {
                        self.out.push(tag::MAP);
                        self.varint(m.len() as u64);
                        for (k, v) in m.iter() {
                            self.value(k, depth + 1)?;
                            self.value(v, depth + 1)?;
                        }
                    }
                    Value::Fun(c) => {
                        if self.ctx.peer_module_hash != Some(self.ctx.module_hash) {
                            return Err(EncodeError::NotDistributable("fun"));
                        }
                        self.out.push(tag::FUN);
                        self.out.extend_from_slice(&self.ctx.module_hash.to_le_bytes());
                        self.varint(u64::from(c.func));
                        self.values(&c.env, depth + 1)?;
                    }
                    _ => unreachable!("matched as a container above"),
                }
            }
        }
        self.check_size()
    }

    fn signal(&mut self, s: &Signal) -> Result<(), EncodeError> {
        match s {
            Signal::Send { to, msg } => {
                self.varint(*to);
                self.value(msg, 0)?;
            }
            Signal::SendName { name, msg } => {
                self.atom(*name)?;
                self.value(msg, 0)?;
            }
            Signal::Spawn { req, from, func, args, opts } => {
                self.varint(*req);
                self.varint(*from);
                if func.len() > MAX_ATOM_LEN {
                    return Err(EncodeError::NotDistributable("long function name"));
                }
                self.short_str(func);
                self.values(args, 1)?;
                let flags = u8::from(opts.link)
                    | u8::from(opts.monitor.is_some()) << 1
                    | u8::from(opts.max_mailbox.is_some()) << 2
                    | u8::from(opts.max_frames.is_some()) << 3
                    | u8::from(opts.max_heap.is_some()) << 4;
                self.out.push(flags);
                if let Some(r) = opts.monitor {
                    self.zigzag(r);
                }
                if let Some(n) = opts.max_mailbox {
                    self.varint(n);
                }
                if let Some(n) = opts.max_frames {
                    self.varint(u64::from(n));
                }
                if let Some(n) = opts.max_heap {
                    self.varint(n);
                }
            }
            Signal::Spawned { req, result } => {
                self.varint(*req);
                match result {
                    Ok(serial) => {
                        self.out.push(0);
                        self.varint(*serial);
                    }
                    Err(reason) => {
                        self.out.push(1);
                        self.atom(*reason)?;
                    }
                }
            }
            Signal::Link { from, to } | Signal::Unlink { from, to } | Signal::Kill { from, to } => {
                self.varint(*from);
                self.varint(*to);
            }
            Signal::Exit { from, to, linked, reason } => {
                self.varint(*from);
                self.varint(*to);
                self.out.push(u8::from(*linked));
                self.value(reason, 0)?;
            }
            Signal::Monitor { watcher, target, r } | Signal::Demonitor { watcher, target, r } => {
                self.varint(*watcher);
                self.varint(*target);
                self.zigzag(*r);
            }
            Signal::Down { watcher, target, r, reason } => {
                self.varint(*watcher);
                self.varint(*target);
                self.zigzag(*r);
                self.value(reason, 0)?;
            }
            Signal::Interrupt { from, to, mode, kind, msg } => {
                self.varint(*from);
                self.varint(*to);
                self.out.push(*mode);
                self.atom(*kind)?;
                self.value(msg, 0)?;
            }
            Signal::Tick { last_seq, ack } => {
                self.varint(*last_seq);
                self.ack(ack);
            }
            Signal::Ack(ack) => self.ack(ack),
            Signal::Reset { dead } => self.varint(u64::from(*dead)),
            Signal::Announce(a) => {
                self.varint(a.actors);
                self.out.extend_from_slice(&a.module_hash.to_le_bytes());
                self.varint(a.uptime_ms);
                if let Some(d) = &a.direct {
                    match d.addr.ip() {
                        std::net::IpAddr::V4(ip) => {
                            self.out.push(4);
                            self.out.extend_from_slice(&ip.octets());
                        }
                        std::net::IpAddr::V6(ip) => {
                            self.out.push(6);
                            self.out.extend_from_slice(&ip.octets());
                        }
                    }
                    self.out.extend_from_slice(&d.addr.port().to_le_bytes());
                    self.out.extend_from_slice(&d.token.0);
                }
            }
            Signal::Bye => {}
            Signal::Switch { conn } => self.varint(*conn),
        }
        Ok(())
    }

    fn ack(&mut self, ack: &Ack) {
        self.varint(u64::from(ack.epoch));
        self.varint(ack.seq);
        self.varint(ack.bytes);
    }
}

/// What the decoder needs: where pids map to, this node's module, the limits.
pub struct DecodeCtx<'a> {
    /// Node incarnations to slots (new ones are added).
    pub table: &'a NodeTable,
    /// The module this node runs: a function value must come from the same one.
    pub module_hash: u64,
    /// Depth and node-count limits.
    pub limits: Limits,
}

/// Decodes an envelope. Never panics (see the module docs for what is refused).
pub fn decode(ctx: &DecodeCtx<'_>, bytes: &Bytes) -> Result<Envelope, DecodeError> {
    if bytes.len() < HEADER_LEN + 4 {
        return bad(format!("{} bytes is shorter than any envelope", bytes.len()));
    }
    if bytes[0] != VERSION {
        return bad(format!("unsupported envelope version {} (this node reads {VERSION})", bytes[0]));
    }
    let k = bytes[1];
    let epoch = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(bytes[6..14].try_into().expect("8 bytes"));
    let tail = bytes.len() - 4;
    let nodes_at = u32::from_le_bytes(bytes[tail..].try_into().expect("4 bytes")) as usize;
    if nodes_at < HEADER_LEN || nodes_at > tail {
        return bad(format!("node list offset {nodes_at} is outside the envelope"));
    }
    let mut nr = Reader { bytes, pos: nodes_at, end: tail };
    let count = usize::from(nr.u8()?);
    if count == 0 || count > ctx.limits.max_nodes {
        return bad(format!("{count} nodes named (1 to {} allowed)", ctx.limits.max_nodes));
    }
    let mut ids = Vec::with_capacity(count);
    let mut slots = Vec::with_capacity(count);
    for _ in 0..count {
        let name = nr.short_str()?;
        check_node_name(name).or_else(bad)?;
        let inc = u64::from_le_bytes(nr.take(8)?.try_into().expect("8 bytes"));
        let id = NodeId { name: Arc::from(name), inc };
        if ids.contains(&id) {
            return bad(format!("node {id} is named twice"));
        }
        slots.push(ctx.table.slot(&id).ok_or_else(|| DecodeError("the node table is full".into()))?);
        ids.push(id);
    }
    if !nr.at_end() {
        return bad("trailing bytes after the node list");
    }
    let sequenced = k < kind::FIRST_UNSEQUENCED;
    if sequenced != (seq != 0) {
        return bad(format!("kind {k} with sequence number {seq}"));
    }
    let mut d = Decoder { r: Reader { bytes, pos: HEADER_LEN, end: nodes_at }, ctx, slots };
    let signal = d.signal(k)?;
    if !d.r.at_end() {
        return bad(format!("{} trailing bytes after the signal", d.r.end - d.r.pos));
    }
    let from = ids.swap_remove(0);
    Ok(Envelope { from, epoch, seq, signal })
}

struct Reader<'a> {
    bytes: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos == self.end
    }

    fn left(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return bad(format!("truncated at byte {}", self.pos));
        }
        self.pos += n;
        let bytes: &'a Bytes = self.bytes;
        Ok(&bytes[self.pos - n..self.pos])
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return bad("varint overflows 64 bits");
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        bad("varint longer than 10 bytes")
    }

    fn direct_addr(&mut self) -> Result<DirectAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => std::net::IpAddr::from(<[u8; 4]>::try_from(self.take(4)?).expect("4 bytes")),
            6 => std::net::IpAddr::from(<[u8; 16]>::try_from(self.take(16)?).expect("16 bytes")),
            v => return bad(format!("address family {v}")),
        };
        let port = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        let token = crate::direct::Token(self.take(crate::direct::TOKEN_LEN)?.try_into().expect("16 bytes"));
        Ok(DirectAddr { addr: std::net::SocketAddr::new(ip, port), token })
    }

    fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let n = self.varint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn serial(&mut self) -> Result<u64, DecodeError> {
        let n = self.varint()?;
        if n > MAX_SERIAL {
            return bad(format!("serial {n} exceeds 48 bits"));
        }
        Ok(n)
    }

    /// A count of items of at least `min_size` bytes each, refused if the rest cannot hold it.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n.saturating_mul(min_size as u64) > self.left() as u64 {
            return bad(format!("count {n} at byte {} exceeds what follows", self.pos));
        }
        Ok(n as usize)
    }

    fn short_str(&mut self) -> Result<&'a str, DecodeError> {
        let n = usize::from(self.u8()?);
        let raw = self.take(n)?;
        std::str::from_utf8(raw).or_else(|_| bad("invalid UTF-8 in a name"))
    }

    fn atom(&mut self) -> Result<Atom, DecodeError> {
        Ok(Atom::new(self.short_str()?))
    }
}

struct Decoder<'a, 'c> {
    r: Reader<'a>,
    ctx: &'a DecodeCtx<'c>,
    /// Local slots of the envelope's node list.
    slots: Vec<u16>,
}

impl Decoder<'_, '_> {
    fn values(&mut self, depth: usize) -> Result<Vec<Value>, DecodeError> {
        let n = self.r.count(1)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth)?);
        }
        Ok(items)
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let at = self.r.pos;
        let t = self.r.u8()?;
        Ok(match t {
            tag::NIL => Value::Nil,
            tag::FALSE => Value::Bool(false),
            tag::TRUE => Value::Bool(true),
            tag::INT => Value::Int(self.r.zigzag()?),
            tag::FLOAT => {
                Value::Float(f64::from_bits(u64::from_le_bytes(self.r.take(8)?.try_into().expect("8 bytes"))))
            }
            tag::ATOM => Value::Atom(self.r.atom()?),
            tag::STR => {
                let n = self.r.count(1)?;
                let raw = self.r.take(n)?;
                match std::str::from_utf8(raw) {
                    Ok(s) => Value::str(s),
                    Err(_) => return bad(format!("invalid UTF-8 in the string at byte {at}")),
                }
            }
            tag::BYTES => {
                let n = self.r.count(1)?;
                let start = self.r.pos;
                self.r.take(n)?;
                Value::bytes(self.r.bytes.slice(start..start + n))
            }
            tag::PID => {
                let i = self.r.varint()?;
                let slot =
                    usize::try_from(i).ok().and_then(|i| self.slots.get(i)).copied().ok_or_else(|| {
                        DecodeError(format!("pid at byte {at} names node {i} of {}", self.slots.len()))
                    })?;
                Value::Pid(crate::id::make_pid(slot, self.r.serial()?))
            }
            tag::REF => {
                let i = self.r.varint()?;
                let slot =
                    usize::try_from(i).ok().and_then(|i| self.slots.get(i)).copied().ok_or_else(|| {
                        DecodeError(format!("reference at byte {at} names node {i} of {}", self.slots.len()))
                    })?;
                Value::Ref(crate::id::make_ref(slot, self.r.serial()?))
            }
            tag::TUPLE | tag::LIST | tag::MAP | tag::FUN => {
                if depth >= self.ctx.limits.max_depth {
                    return bad(format!(
                        "value at byte {at} nests containers more than {} deep",
                        self.ctx.limits.max_depth
                    ));
                }
                match t {
                    tag::TUPLE => Value::tuple(self.values(depth + 1)?),
                    tag::LIST => Value::list(self.values(depth + 1)?),
                    tag::MAP => {
                        let n = self.r.count(2)?;
                        let mut m = BTreeMap::new();
                        for _ in 0..n {
                            let key_at = self.r.pos;
                            let k = self.value(depth + 1)?;
                            let v = self.value(depth + 1)?;
                            if m.insert(k, v).is_some() {
                                return bad(format!("duplicate map key at byte {key_at}"));
                            }
                        }
                        Value::Map(Arc::new(m))
                    }
                    _ => {
                        let hash = u64::from_le_bytes(self.r.take(8)?.try_into().expect("8 bytes"));
                        if hash != self.ctx.module_hash {
                            return bad(format!("function value at byte {at} comes from another module"));
                        }
                        let func = u32::try_from(self.r.varint()?)
                            .or_else(|_| bad(format!("function index at byte {at} exceeds 32 bits")))?;
                        Value::Fun(Arc::new(Closure { func, env: self.values(depth + 1)? }))
                    }
                }
            }
            _ => return bad(format!("unknown value tag {t} at byte {at}")),
        })
    }

    fn ack(&mut self) -> Result<Ack, DecodeError> {
        let epoch = u32::try_from(self.r.varint()?).or_else(|_| bad("epoch exceeds 32 bits"))?;
        Ok(Ack { epoch, seq: self.r.varint()?, bytes: self.r.varint()? })
    }

    fn signal(&mut self, k: u8) -> Result<Signal, DecodeError> {
        let r = &mut self.r;
        Ok(match k {
            kind::SEND => {
                let to = r.serial()?;
                Signal::Send { to, msg: self.value(0)? }
            }
            kind::SEND_NAME => {
                let name = r.atom()?;
                Signal::SendName { name, msg: self.value(0)? }
            }
            kind::SPAWN => {
                let req = r.varint()?;
                let from = r.serial()?;
                let func: Arc<str> = Arc::from(r.short_str()?);
                let args = self.values(1)?;
                let r = &mut self.r;
                let flags = r.u8()?;
                if flags & !0b1_1111 != 0 {
                    return bad(format!("unknown spawn flags {flags:#x}"));
                }
                let monitor = if flags & 2 != 0 { Some(r.zigzag()?) } else { None };
                let max_mailbox = if flags & 4 != 0 { Some(r.varint()?) } else { None };
                let max_frames = if flags & 8 != 0 {
                    Some(u32::try_from(r.varint()?).or_else(|_| bad("max_frames exceeds 32 bits"))?)
                } else {
                    None
                };
                let max_heap = if flags & 16 != 0 { Some(r.varint()?) } else { None };
                let opts = SpawnOptions { link: flags & 1 != 0, monitor, max_mailbox, max_frames, max_heap };
                Signal::Spawn { req, from, func, args, opts }
            }
            kind::SPAWNED => {
                let req = r.varint()?;
                let result = match r.u8()? {
                    0 => Ok(r.serial()?),
                    1 => Err(r.atom()?),
                    b => return bad(format!("unknown spawn result {b}")),
                };
                Signal::Spawned { req, result }
            }
            kind::LINK | kind::UNLINK | kind::KILL => {
                let from = r.serial()?;
                let to = r.serial()?;
                match k {
                    kind::LINK => Signal::Link { from, to },
                    kind::UNLINK => Signal::Unlink { from, to },
                    _ => Signal::Kill { from, to },
                }
            }
            kind::EXIT => {
                let from = r.serial()?;
                let to = r.serial()?;
                let linked = match r.u8()? {
                    0 => false,
                    1 => true,
                    b => return bad(format!("exit flag {b} is not 0 or 1")),
                };
                Signal::Exit { from, to, linked, reason: self.value(0)? }
            }
            kind::MONITOR | kind::DEMONITOR => {
                let watcher = r.serial()?;
                let target = r.serial()?;
                let m = r.zigzag()?;
                if k == kind::MONITOR {
                    Signal::Monitor { watcher, target, r: m }
                } else {
                    Signal::Demonitor { watcher, target, r: m }
                }
            }
            kind::DOWN => {
                let watcher = r.serial()?;
                let target = r.serial()?;
                let m = r.zigzag()?;
                Signal::Down { watcher, target, r: m, reason: self.value(0)? }
            }
            kind::INTERRUPT => {
                let from = r.serial()?;
                let to = r.serial()?;
                let mode = r.u8()?;
                if mode > 2 {
                    return bad(format!("interrupt mode {mode}"));
                }
                let kind = r.atom()?;
                Signal::Interrupt { from, to, mode, kind, msg: self.value(0)? }
            }
            kind::TICK => {
                let last_seq = r.varint()?;
                Signal::Tick { last_seq, ack: self.ack()? }
            }
            kind::ACK => Signal::Ack(self.ack()?),
            kind::RESET => {
                Signal::Reset { dead: u32::try_from(r.varint()?).or_else(|_| bad("epoch exceeds 32 bits"))? }
            }
            kind::ANNOUNCE => {
                let actors = r.varint()?;
                let module_hash = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
                let uptime_ms = r.varint()?;
                let direct = if r.at_end() { None } else { Some(r.direct_addr()?) };
                Signal::Announce(Announce { actors, module_hash, uptime_ms, direct })
            }
            kind::BYE => Signal::Bye,
            kind::SWITCH => Signal::Switch { conn: r.varint()? },
            _ => return bad(format!("unknown signal kind {k}")),
        })
    }
}

#[cfg(test)]
mod tests;
