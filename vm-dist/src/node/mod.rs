//! A VM's membership in a cluster: sessions with peers, failure detection, backpressure, links
//! and monitors across nodes, remote spawn.
//!
//! Subjects (cluster `cl`, this node `me` at incarnation `inc`):
//! - `vm.cl.n.me.inc`: every signal to this incarnation, on one subscription, so NATS's
//!   per-publisher order is the order signals are taken in.
//! - `vm.cl.r.me.inc.<peer>.<pinc>`: the reply subject of everything sent to that peer; NATS
//!   answers a publish that reaches no subscriber with a 503 there, naming the peer.
//! - `vm.cl.a.me`: announcements (presence, every heartbeat and in answer to a new node's).
//! - The NATS connection's client name is `vm.cl.me.inc` ([`client_name`]), so the server's
//!   disconnect notice (read when the transport has system-account access) names the node.
//! - `vm.cl.p.me`: the name probe. A starting node publishes there, with a reply subject, before
//!   it announces itself: NATS's 503 means no live node has the name; an answer (the holder's
//!   announcement) means it is taken and the newcomer does not join, so it never displaces a
//!   live node in its peers' views.
//!
//! The session protocol, per pair of node incarnations:
//! 1. Each side numbers the sequenced signals it sends to the other (1, 2, ...) within its
//!    *out-epoch*; the receiver takes signal `n` only right after `n - 1` of the same epoch.
//!    The receiver's record of the sender's epoch is its *in-epoch*; epochs up to its `in_dead`
//!    are over.
//! 2. Every heartbeat each side sends every live peer a `Tick` with its epoch and the last
//!    sequence number sent, on the same subject as the signals, so it arrives after them: a
//!    receiver that has taken less has lost signals (NATS dropped them) and ends the session.
//! 3. A session ends (exactly once per side): on a sequence gap, on a `Reset` naming its
//!    epoch, on an envelope of a newer epoch while it is live (the other side ended it), on a
//!    newer incarnation of the peer, on a 503 for the peer's subject, on the peer's `Bye`, when
//!    nothing was heard from the peer through NATS for `down_after` (its announcements, or its
//!    envelopes there; judged by the `pulse`, which also covers this node's own connection
//!    being down, never on a heartbeat this node itself came to late), and when the direct
//!    connection with the
//!    peer is lost (`conn`). Ending it fires every link to the peer's actors with the exit
//!    reason `:noconnection` and every monitor with `{:DOWN, ref, pid, :noconnection}` (each
//!    link and monitor is held once, in the peer's bonds, and removed when it fires or is
//!    answered), fires `nodedown` if the peer was up, starts a new out-epoch, marks the
//!    in-epoch over, and sends the peer a `Reset` so that it ends its side too.
//! 4. Envelopes of an ended epoch are dropped and answered with a `Reset`. An envelope of a new
//!    epoch must start at 1, else it is a gap. A peer that ended a session because of something
//!    it heard from the other side (a gap, a reset, a new epoch) is evidently reachable, so it
//!    is up again at once (`nodedown` then `nodeup`); one that went silent, said `Bye` or
//!    answered 503 stays down until its next announcement. The server's notice that the peer's
//!    connection closed ends the session as a 503 does.
//! 5. Backpressure: a sender counts the bytes of sequenced signals not yet acknowledged (the
//!    receiver acknowledges cumulatively every quarter window, and in every `Tick`); while they
//!    exceed the window (1 MiB by default), `send` returns [`SendError::Busy`] and the caller
//!    waits on [`Congestion::wait`] and tries again. Control signals (links, exits, monitors)
//!    are never held back: a dying actor cannot be suspended.
//! 6. Linked exits and `Down`s are delivered only while the bond they answer is still held, so
//!    a link fires once: by the peer's exit signal or by the session's end, never both.
//! 7. A remote spawn records the new actor's link or monitor, and queues the reply, before the
//!    actor runs (`Local::spawn` calls back with the pid first), so nothing the actor sends can
//!    overtake the reply.
//!
//! [`Node::start`] returns the node and a [`Driver`], one future that runs the receive loop,
//! the ticks and the publishing of queued envelopes; the runtime spawns it, and the tasks it
//! hands back (each direct connection is a task of its own, `conn`). The [`Pulse`] (announcing
//! this node every heartbeat, judging the peers' silence of point 3) runs inside the driver
//! unless the runtime takes it to run apart ([`Driver::take_pulse`]; `pulse` has its rules).
//!
//! The code, by concept: this file holds the settings, the runtime's side ([`Local`]) and the
//! API ([`Node`]); `session` the session rules above (numbering, acknowledgements, the end of
//! a session and what it fires, ticks); `pulse` presence and silence; `inbound` what arrives
//! (envelopes, announcements, probes, departures), what each signal does, and the [`Driver`]'s
//! loop; `conn` the direct path (one TCP connection per pair of nodes that both take them; its
//! own numbered rules).

use crate::global::Names;
use crate::id::{NodeId, NodeTable, check_node_name, make_pid, serial_of, slot_of};
use crate::outbox::Outbox;
use crate::transport::{Incoming, Outgoing, Transport, TransportEvent};
use crate::wire::{
    self, Ack, Announce, DecodeCtx, EncodeCtx, EncodeError, Envelope, Limits, Signal, SpawnOptions,
};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use vm_core::{Atom, Handle, Pid, Value};

/// Settings of one node.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster's name (subject prefix `vm.<cluster>`).
    pub cluster: String,
    /// This node's name.
    pub name: String,
    /// This node's incarnation (default: [`NodeId::fresh_incarnation`]).
    pub incarnation: Option<u64>,
    /// The hash of the module this node runs (function values cross only between equal ones).
    pub module_hash: u64,
    /// How often presence and ticks are sent.
    pub heartbeat: Duration,
    /// Silence after which a peer is declared down.
    pub down_after: Duration,
    /// Unacknowledged bytes to one peer past which senders are suspended.
    pub window: u64,
    /// How long a remote spawn waits for its answer.
    pub spawn_timeout: Duration,
    /// How long [`Node::start`] waits for the answer to its name probe (NATS answers at once;
    /// silence counts as "the name is free").
    pub discovery: Duration,
    /// Decoder limits.
    pub limits: Limits,
    /// Where to take direct connections from peers (`None`: no direct path; signals to every
    /// peer go through NATS). The address is announced, so it must be one peers can reach.
    pub direct: Option<std::net::SocketAddr>,
    /// Handshakes in progress on the direct listener past which the oldest is dropped (`conn`,
    /// rule 6): what a client that opens connections and says nothing can hold.
    pub max_handshakes: usize,
}

impl Config {
    /// Defaults for node `name` in `cluster`.
    pub fn new(cluster: &str, name: &str) -> Config {
        Config {
            cluster: cluster.into(),
            name: name.into(),
            incarnation: None,
            module_hash: 0,
            heartbeat: Duration::from_millis(500),
            down_after: Duration::from_secs(3),
            window: 1 << 20,
            spawn_timeout: Duration::from_secs(5),
            discovery: Duration::from_secs(2),
            limits: Limits::default(),
            direct: None,
            max_handshakes: 16,
        }
    }
}

/// What the distribution layer asks of the local runtime. Every method returns at once (it is
/// called from the receive loop, which must never wait); none is called with a lock held.
pub trait Local: Send + Sync + 'static {
    /// Puts `msg` in local actor `to`'s mailbox (dropped if there is no such actor).
    fn send(&self, to: Pid, msg: Value);
    /// Puts `msg` in the mailbox of the actor registered as `name`, if any.
    fn send_named(&self, name: Atom, msg: Value);
    /// Starts `func(args)` for remote actor `parent`. Must call `started(pid)` once the pid is
    /// known and before the actor can run; returns the pid or `:undef`, `:limit`, `:badarg`.
    fn spawn(
        &self,
        func: &str,
        args: Vec<Value>,
        opts: &SpawnOptions,
        parent: Pid,
        started: &mut dyn FnMut(Pid),
    ) -> Result<Pid, Atom>;
    /// Whether local actor `pid` is alive. Once it returns `false` for an actor, the runtime
    /// has called (or is about to call) [`Node::actor_exited`] for it.
    fn is_alive(&self, pid: Pid) -> bool;
    /// An exit signal from `from` to local actor `to`, through a link (`linked`) or explicit.
    fn exit_signal(&self, to: Pid, from: Pid, reason: Value, linked: bool);
    /// Monitor `r` of local `watcher` on `target` fired: deliver `{:DOWN, r, target, reason}`.
    fn down(&self, watcher: Pid, r: i64, target: Pid, reason: Value);
    /// `interrupt to, {kind, msg}, mode` from a remote actor.
    fn interrupt(&self, to: Pid, kind: Atom, msg: Value, mode: u8);
    /// `kill to` from remote actor `from`.
    fn kill(&self, to: Pid, from: Pid);
    /// A peer came up (`true`) or went down: `{:nodeup, name}` / `{:nodedown, name}` for the
    /// actors that monitor nodes.
    fn node_event(&self, node: &NodeId, up: bool);
    /// How many actors run here (announced to peers).
    fn actor_count(&self) -> u64;
    /// `"resource"` or `"table"` for a resource handle (the error a send of it raises).
    fn res_kind(&self, _h: &Handle) -> &'static str {
        "resource"
    }
}

/// Why a signal was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The peer is far behind: wait on the [`Congestion`] and try again.
    #[error("the peer is congested")]
    Busy(Congestion),
    /// The message cannot be encoded (too large, not distributable, too deep).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The node is not reachable.
    #[error("no connection to node {0}")]
    NoConnection(String),
}

/// Why a remote spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The node is not up, or went down before answering.
    #[error("no connection to node {0}")]
    NoConnection(String),
    /// No answer within the spawn timeout.
    #[error("node {0} did not answer the spawn")]
    Timeout(String),
    /// The node refused: `:undef`, `:limit`, `:badarg`.
    #[error("node refused the spawn: {0}")]
    Refused(Atom),
    /// The arguments cannot be sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A peer that senders wait on while it is far behind.
#[derive(Debug)]
pub struct Congestion {
    node: Node,
    peer: Arc<str>,
    notify: Arc<Notify>,
}

impl Congestion {
    /// Resolves once the peer has caught up (or its session ended); then send again.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.node.congested(&self.peer) {
                return;
            }
            notified.await;
        }
    }
}

/// What `nodes()` and `vm nodes` show about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Name and incarnation.
    pub id: NodeId,
    /// Live actors, as last announced.
    pub actors: u64,
    /// Uptime in milliseconds, as last announced.
    pub uptime_ms: u64,
    /// Milliseconds since anything was heard from it.
    pub last_heard_ms: u64,
    /// Whether this node sends to it on a direct connection (`false` from outside the cluster).
    pub direct: bool,
}

/// A handle on this VM's membership in the cluster (cheap to clone).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.inner.me)
    }
}

pub(crate) struct Inner {
    cfg: Config,
    me: NodeId,
    pub(crate) table: NodeTable,
    transport: Arc<dyn Transport>,
    pub(crate) local: Arc<dyn Local>,
    state: Mutex<State>,
    /// The way out to the transport, in numbering order (see `outbox`).
    out: Outbox<mpsc::UnboundedSender<Outgoing>>,
    pub(crate) jobs: mpsc::UnboundedSender<Job>,
    started: Instant,
    max_size: usize,
    prefix: String,
    announce_subject: Arc<str>,
    shutdown: Notify,
    /// Set by `leave` before its `Bye`s: the driver may still take a heartbeat tick before it
    /// sees `shutdown`, and an announcement then would show the node alive to a census.
    left: std::sync::atomic::AtomicBool,
    pub(crate) names: Names,
    /// Held while what arrives is taken and handed to the local runtime, and while a session's
    /// end is decided and fired: a direct connection's task and the driver both take signals
    /// of a peer, and the runtime must see them in the order the session state changed (a
    /// message taken before a session ended is delivered before the end's `:noconnection`).
    /// Taken before `state`, never while holding it.
    inbound: Mutex<()>,
    /// This node's direct-path listener, as announced (`None` when the path is off).
    direct: Option<wire::DirectAddr>,
    /// The number of the next direct connection this node dials.
    next_conn: std::sync::atomic::AtomicU64,
    /// How long this node's latest announcement took to come back to it through NATS, in
    /// milliseconds: how far behind this node's own receiving is.
    echo_delay_ms: std::sync::atomic::AtomicU64,
    /// Set once this node's own announcement has come back to it ([`Node::wait_echo`]).
    echoed: std::sync::atomic::AtomicBool,
    /// When the pulse last heard each peer's announcement, and of which incarnation (`pulse`).
    heard: Mutex<HashMap<Arc<str>, (u64, Instant)>>,
    /// Set once [`Node::leave`] is done: the pulse ends.
    stop: tokio::sync::watch::Sender<bool>,
}

/// Work the driver does for synchronous callers (it may wait).
pub(crate) enum Job {
    /// Delete a global name held by an actor that ended.
    DeleteName(String, u64),
    /// Dial peer `peer`'s direct listener as connection `conn`.
    Dial { peer: NodeId, to: wire::DirectAddr, conn: u64 },
}

#[derive(Default)]
struct State {
    peers: HashMap<Arc<str>, Peer>,
    spawns: HashMap<u64, PendingSpawn>,
    next_req: u64,
}

struct PendingSpawn {
    peer: Arc<str>,
    from: Pid,
    opts: SpawnOptions,
    reply: oneshot::Sender<Result<Pid, SpawnError>>,
}

/// Links and monitors between local actors and one peer incarnation's actors.
#[derive(Default)]
struct Bonds {
    /// Local serial → linked remote serials.
    links: HashMap<u64, HashSet<u64>>,
    /// Monitor reference → (local watcher, remote target).
    mon_out: HashMap<i64, (u64, u64)>,
    /// Local target → (remote watcher, reference).
    mon_in: HashMap<u64, Vec<(u64, i64)>>,
}

impl Bonds {
    fn unlink(&mut self, local: u64, remote: u64) -> bool {
        let Some(set) = self.links.get_mut(&local) else { return false };
        let had = set.remove(&remote);
        if set.is_empty() {
            self.links.remove(&local);
        }
        had
    }

    fn unwatch(&mut self, target: u64, watcher: u64, r: i64) -> bool {
        let Some(v) = self.mon_in.get_mut(&target) else { return false };
        let before = v.len();
        v.retain(|&(w, rr)| !(w == watcher && rr == r));
        let had = v.len() != before;
        if v.is_empty() {
            self.mon_in.remove(&target);
        }
        had
    }
}

struct Peer {
    id: NodeId,
    slot: u16,
    subject: Arc<str>,
    reply: Arc<str>,
    alive: bool,
    last_heard: Instant,
    /// When something last came from the peer through NATS (its announcements, at least every
    /// heartbeat): a peer NATS no longer hears from is down even if its connection is up.
    last_nats: Instant,
    /// When an envelope of the peer last came through NATS (not an announcement): a connection
    /// waiting for the peer's `Switch` waits while these still come (`conn`, rule 2).
    last_nats_data: Instant,
    announce: Announce,
    out_epoch: u32,
    out_seq: u64,
    out_bytes: u64,
    acked_bytes: u64,
    in_epoch: u32,
    in_seq: u64,
    in_bytes: u64,
    in_dead: u32,
    /// `in_bytes` when the last acknowledgement was sent.
    acked_in: u64,
    /// The last `in_dead` a `Reset` was sent for (one answer per ended epoch and heartbeat).
    reset_sent: Option<u32>,
    bonds: Bonds,
    gate: Arc<Notify>,
    /// The direct connection with the peer, once its handshake is done.
    direct: Option<conn::Conn>,
    /// The connection this node is dialing to the peer.
    dialing: Option<u64>,
    /// The connection named by the last `Switch` the peer sent through NATS.
    switch_seen: Option<u64>,
}

impl Peer {
    fn in_live(&self) -> bool {
        self.in_epoch > self.in_dead
    }
}

/// What to tell the local runtime once the state lock is released.
enum Fire {
    Exit { to: Pid, from: Pid, reason: Value, linked: bool },
    Down { watcher: Pid, r: i64, target: Pid, reason: Value },
    NodeEvent(NodeId, bool),
    Spawn(oneshot::Sender<Result<Pid, SpawnError>>, Result<Pid, SpawnError>),
}

/// Why a session ends (for the log, and whether the peer is still reachable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndCause {
    Gap,
    Reset,
    NewEpoch,
    NewIncarnation,
    Silence,
    NoResponders,
    Departed,
    Bye,
    /// The direct connection broke: frames in flight may be lost.
    ConnectionLost,
    /// The peer dialed again while its old connection was still held here (the old one broke
    /// on the peer's side); the peer is evidently reachable.
    ConnectionReplaced,
}

impl EndCause {
    /// What happened, for the log line that reports the peer down.
    fn describe(self) -> &'static str {
        match self {
            EndCause::Gap => "signals from it were lost in transit (a sequence gap)",
            EndCause::Reset => "it ended the session (it found a gap, or lost this node)",
            EndCause::NewEpoch => "it started a new session",
            EndCause::NewIncarnation => "it restarted (a new incarnation)",
            EndCause::Silence => "nothing heard from it for down_after",
            EndCause::NoResponders => "NATS has no subscriber for it (its connection closed)",
            EndCause::Departed => "the server reported its connection closed",
            EndCause::Bye => "it left the cluster",
            EndCause::ConnectionLost => "the direct connection was lost",
            EndCause::ConnectionReplaced => "it opened a new direct connection",
        }
    }

    fn still_reachable(self) -> bool {
        matches!(self, EndCause::Gap | EndCause::Reset | EndCause::NewEpoch | EndCause::ConnectionReplaced)
    }
}

fn noconnection() -> Value {
    Value::atom("noconnection")
}

/// The NATS client name of node `name` at incarnation `inc` in `cluster`: set it in the
/// connection's options ([`crate::NatsOptions::client_name`]) so that the server's disconnect
/// notices name the node.
pub fn client_name(cluster: &str, name: &str, inc: u64) -> String {
    format!("vm.{cluster}.{name}.{inc}")
}

/// Runs a node: the receive loop, the heartbeat and the publisher. Spawn [`Driver::run`].
pub struct Driver {
    node: Node,
    inbox: BoxStream<'static, Incoming>,
    replies: BoxStream<'static, Incoming>,
    announces: BoxStream<'static, Incoming>,
    probes: BoxStream<'static, Incoming>,
    departures: BoxStream<'static, String>,
    events: BoxStream<'static, TransportEvent>,
    out: mpsc::UnboundedReceiver<Outgoing>,
    jobs: mpsc::UnboundedReceiver<Job>,
    listener: Option<tokio::net::TcpListener>,
    /// The pulse, until the runtime takes it to run elsewhere ([`Driver::take_pulse`]).
    pulse: Option<Pulse>,
}

impl Driver {
    /// Takes the node's [`Pulse`] out of the driver, to run it where actors cannot hold it up
    /// (a thread of its own, with the NATS connection's task: `pulse`, rule 5). Not taken, it
    /// runs inside [`Driver::run`].
    pub fn take_pulse(&mut self) -> Option<Pulse> {
        self.pulse.take()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad cluster or node name.
    #[error("{0}")]
    Name(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// Another live node already has this name.
    #[error("node name {0} is already in use in this cluster")]
    NameTaken(String),
    /// The direct path's listener could not be opened.
    #[error("cannot take direct connections on {0}")]
    Direct(String),
}

impl Node {
    /// Joins the cluster: checks that no live node has this name ([`StartError::NameTaken`]),
    /// then subscribes. Spawn the driver at once: nothing is received or published until it
    /// runs, and its first act is to announce the node.
    pub async fn start(
        cfg: Config,
        transport: Arc<dyn Transport>,
        local: Arc<dyn Local>,
    ) -> Result<(Node, Driver), StartError> {
        check_node_name(&cfg.cluster).map_err(|e| StartError::Name(format!("cluster name: {e}")))?;
        let inc = cfg.incarnation.unwrap_or_else(NodeId::fresh_incarnation);
        let me = NodeId::new(&cfg.name, inc).map_err(StartError::Name)?;
        let listener = match cfg.direct {
            Some(addr) => Some(conn::listen(addr).await?),
            None => None,
        };
        let prefix = format!("vm.{}", cfg.cluster);
        let mut replies = transport.subscribe(format!("{prefix}.r.{}.{inc}.>", me.name)).await?;
        let probe = Outgoing {
            subject: Arc::from(format!("{prefix}.p.{}", me.name)),
            reply: Some(Arc::from(format!("{prefix}.r.{}.{inc}.probe", me.name))),
            payload: Bytes::new(),
        };
        transport.publish(probe).await?;
        transport.flush().await?;
        match tokio::time::timeout(cfg.discovery, replies.next()).await {
            Ok(Some(m)) if !m.no_responders => return Err(StartError::NameTaken(me.name.to_string())),
            Ok(_) => {}
            Err(_) => tracing::info!("no answer to the name probe: taking the name"),
        }
        let probes = transport.subscribe(format!("{prefix}.p.{}", me.name)).await?;
        let inbox = transport.subscribe(format!("{prefix}.n.{}.{inc}", me.name)).await?;
        // Announcements reach the pulse first, which hands them on to the driver (`pulse`).
        let heard = transport.subscribe(format!("{prefix}.a.*")).await?;
        let (forward, forwarded) = mpsc::unbounded_channel();
        let mut forwarded: mpsc::UnboundedReceiver<Incoming> = forwarded;
        let announces = futures::stream::poll_fn(move |cx| forwarded.poll_recv(cx)).boxed();
        let events = transport.events();
        let departures = transport.departures();
        let names = Names::new(transport.names().await);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let max_size = transport.max_payload();
        let announce_subject = Arc::from(format!("{prefix}.a.{}", me.name));
        let inner = Arc::new(Inner {
            table: NodeTable::new(me.clone()),
            me,
            transport,
            local,
            state: Mutex::new(State::default()),
            out: Outbox::new(out_tx),
            jobs: jobs_tx,
            started: Instant::now(),
            max_size,
            announce_subject,
            prefix,
            shutdown: Notify::new(),
            left: std::sync::atomic::AtomicBool::new(false),
            names,
            inbound: Mutex::new(()),
            direct: listener.as_ref().map(|(_, a)| *a),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            echo_delay_ms: std::sync::atomic::AtomicU64::new(0),
            echoed: std::sync::atomic::AtomicBool::new(false),
            heard: Mutex::new(HashMap::new()),
            stop: tokio::sync::watch::Sender::new(false),
            cfg,
        });
        let pulse =
            Pulse { inner: Arc::downgrade(&inner), announces: heard, forward, stop: inner.stop.subscribe() };
        let node = Node { inner };
        let driver = Driver {
            node: node.clone(),
            inbox,
            replies,
            announces,
            probes,
            departures,
            events,
            out: out_rx,
            jobs: jobs_rx,
            listener: listener.map(|(l, _)| l),
            pulse: Some(pulse),
        };
        Ok((node, driver))
    }

    /// This node.
    pub fn me(&self) -> &NodeId {
        &self.inner.me
    }

    /// The node of `pid` (this node for a local pid).
    pub fn node_of(&self, pid: Pid) -> Option<NodeId> {
        self.inner.table.node_of(pid)
    }

    /// Where this node takes direct connections (`None` when the direct path is off).
    pub fn direct_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.direct.map(|d| d.addr)
    }

    /// Whether this node sends to peer `name` on a direct connection now.
    pub fn is_direct(&self, name: &str) -> bool {
        let st = self.inner.state.lock();
        st.peers.get(name).is_some_and(|p| p.direct.as_ref().is_some_and(|c| c.writer.is_some()))
    }

    /// Breaks the direct connection with peer `name` as a network fault would (both sides then
    /// see it lost); `false` if there is none. For tests of what a lost connection does.
    #[doc(hidden)]
    pub fn break_direct(&self, name: &str) -> bool {
        self.inner.break_direct(name)
    }

    /// Whether `pid` is on this node.
    pub fn is_local(pid: Pid) -> bool {
        slot_of(pid) == 0
    }

    /// The pid of actor `serial` of node `id` as this VM writes it.
    pub fn pid_of(&self, id: &NodeId, serial: u64) -> Option<Pid> {
        self.inner.table.pid(id, serial)
    }

    /// The live peers.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let st = self.inner.state.lock();
        let mut v: Vec<NodeInfo> = st
            .peers
            .values()
            .filter(|p| p.alive)
            .map(|p| NodeInfo {
                id: p.id.clone(),
                actors: p.announce.actors,
                uptime_ms: p.announce.uptime_ms,
                last_heard_ms: p.last_heard.elapsed().as_millis() as u64,
                direct: p.direct.as_ref().is_some_and(|c| c.writer.is_some()),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The live incarnation of node `name`, if it is up.
    pub fn live(&self, name: &str) -> Option<NodeId> {
        self.inner.state.lock().peers.get(name).filter(|p| p.alive).map(|p| p.id.clone())
    }

    /// Waits until this node's own announcement has come back to it through NATS (every live
    /// node has then had it too, and answers it at once), for at most `timeout`; whether it
    /// came.
    pub async fn wait_echo(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.inner.echoed.load(std::sync::atomic::Ordering::Acquire) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Waits until node `name` is up, for at most `timeout`.
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.live(name) {
                return Some(id);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn congested(&self, peer: &str) -> bool {
        let st = self.inner.state.lock();
        st.peers.get(peer).is_some_and(|p| p.alive && p.out_bytes - p.acked_bytes > self.inner.cfg.window)
    }

    fn encode_ctx<'a>(
        &'a self,
        res_kind: &'a dyn Fn(&Handle) -> &'static str,
        peer_hash: u64,
    ) -> EncodeCtx<'a> {
        EncodeCtx {
            table: &self.inner.table,
            module_hash: self.inner.cfg.module_hash,
            peer_module_hash: Some(peer_hash),
            max_size: self.inner.max_size,
            max_depth: self.inner.cfg.limits.max_depth,
            res_kind,
        }
    }

    /// Sends `msg` from local `from` to remote `to`. A pid of a node that is down takes the
    /// message silently, as a dead local pid does (links and monitors report the loss).
    pub fn send(&self, from: Pid, to: Pid, msg: &Value) -> Result<(), SendError> {
        let _ = from;
        let Some(id) = self.inner.table.node_of(to) else { return Err(EncodeError::BadPid.into()) };
        self.send_user(&id.name, Some(&id), Signal::Send { to: serial_of(to), msg: msg.clone() })
    }

    /// Sends `msg` to the actor registered as `name` on node `node` (`{name, node} ! msg`).
    pub fn send_named(&self, node: &str, name: Atom, msg: &Value) -> Result<(), SendError> {
        self.send_user(node, None, Signal::SendName { name, msg: msg.clone() })
    }

    /// The user-message path: window check, encoding outside the lock, sequencing under it.
    fn send_user(&self, peer: &str, id: Option<&NodeId>, sig: Signal) -> Result<(), SendError> {
        let hash = {
            let st = self.inner.state.lock();
            let Some(p) = st.peers.get(peer).filter(|p| p.alive && id.is_none_or(|id| *id == p.id)) else {
                return Ok(());
            };
            if p.out_bytes - p.acked_bytes > self.inner.cfg.window {
                return Err(SendError::Busy(Congestion {
                    node: self.clone(),
                    peer: p.id.name.clone(),
                    notify: p.gate.clone(),
                }));
            }
            p.announce.module_hash
        };
        let local = self.inner.local.clone();
        let res_kind = move |h: &Handle| local.res_kind(h);
        let bytes = wire::encode(&self.encode_ctx(&res_kind, hash), 0, 1, &sig)?;
        let mut st = self.inner.state.lock();
        if let Some(p) = st.peers.get_mut(peer).filter(|p| p.alive && id.is_none_or(|id| *id == p.id)) {
            self.inner.push_encoded(p, bytes);
        }
        Ok(())
    }

    /// Runs `f` on the live peer of `pid`'s node, or returns `NoConnection`.
    fn with_peer<R>(&self, pid: Pid, f: impl FnOnce(&Inner, &mut Peer) -> R) -> Result<R, SendError> {
        let id = self.inner.table.node_of(pid).ok_or(EncodeError::BadPid)?;
        let mut st = self.inner.state.lock();
        match st.peers.get_mut(&id.name).filter(|p| p.alive && p.id == id) {
            Some(p) => Ok(f(&self.inner, p)),
            None => Err(SendError::NoConnection(id.name.to_string())),
        }
    }

    /// Links local `local` to remote `remote`. `NoConnection` when its node is down: the caller
    /// then delivers the exit signal `:noconnection` to `local`, as for any link to a node that
    /// cannot be reached.
    pub fn link(&self, local: Pid, remote: Pid) -> Result<(), SendError> {
        self.with_peer(remote, |inner, p| {
            if p.bonds.links.entry(serial_of(local)).or_default().insert(serial_of(remote)) {
                inner.push(p, &Signal::Link { from: serial_of(local), to: serial_of(remote) });
            }
        })
    }

    /// Removes the link between local `local` and remote `remote`.
    pub fn unlink(&self, local: Pid, remote: Pid) {
        let _ = self.with_peer(remote, |inner, p| {
            if p.bonds.unlink(serial_of(local), serial_of(remote)) {
                inner.push(p, &Signal::Unlink { from: serial_of(local), to: serial_of(remote) });
            }
        });
    }

    /// Local `watcher` monitors remote `target` under reference `r`. `NoConnection` when its
    /// node is down: the caller then delivers `{:DOWN, r, target, :noconnection}`.
    pub fn monitor(&self, watcher: Pid, target: Pid, r: i64) -> Result<(), SendError> {
        self.with_peer(target, |inner, p| {
            p.bonds.mon_out.insert(r, (serial_of(watcher), serial_of(target)));
            inner.push(p, &Signal::Monitor { watcher: serial_of(watcher), target: serial_of(target), r });
        })
    }

    /// Cancels monitor `r` of local `watcher` on remote `target`.
    pub fn demonitor(&self, watcher: Pid, target: Pid, r: i64) {
        let _ = self.with_peer(target, |inner, p| {
            if p.bonds.mon_out.remove(&r).is_some() {
                inner.push(
                    p,
                    &Signal::Demonitor { watcher: serial_of(watcher), target: serial_of(target), r },
                );
            }
        });
    }

    /// An explicit exit signal (`exit pid, reason`) from local `from` to remote `to`.
    pub fn exit(&self, from: Pid, to: Pid, reason: &Value) -> Result<(), SendError> {
        let reason = self.distributable_reason(reason);
        self.with_peer(to, |inner, p| {
            inner.push(p, &Signal::Exit { from: serial_of(from), to: serial_of(to), linked: false, reason });
        })
        .or_else(|e| if matches!(e, SendError::NoConnection(_)) { Ok(()) } else { Err(e) })
    }

    /// `kill to` from local `from`.
    pub fn kill(&self, from: Pid, to: Pid) {
        let _ = self.with_peer(to, |inner, p| {
            inner.push(p, &Signal::Kill { from: serial_of(from), to: serial_of(to) })
        });
    }

    /// `interrupt to, {kind, msg}, mode` from local `from`.
    pub fn interrupt(&self, from: Pid, to: Pid, kind: Atom, msg: &Value, mode: u8) -> Result<(), SendError> {
        let msg = self.distributable_reason(msg);
        self.with_peer(to, |inner, p| {
            inner.push(p, &Signal::Interrupt { from: serial_of(from), to: serial_of(to), mode, kind, msg });
        })
        .or_else(|e| if matches!(e, SendError::NoConnection(_)) { Ok(()) } else { Err(e) })
    }

    /// An exit reason that can cross: the reason itself, or `{:not_distributable, kind}` when
    /// it holds something that cannot (an exit must still be delivered).
    fn distributable_reason(&self, reason: &Value) -> Value {
        let local = self.inner.local.clone();
        let res_kind = move |h: &Handle| local.res_kind(h);
        let ctx = EncodeCtx { peer_module_hash: None, ..self.encode_ctx(&res_kind, 0) };
        match wire::encode(&ctx, 0, 1, &Signal::Send { to: 0, msg: reason.clone() }) {
            Ok(_) => reason.clone(),
            Err(EncodeError::NotDistributable(kind)) => {
                Value::tuple(vec![Value::atom("not_distributable"), Value::atom(kind)])
            }
            Err(_) => Value::atom("too_large"),
        }
    }

    /// Local actor `pid` ended with `reason`: linked remote actors get the exit signal, remote
    /// monitors their `Down`, its monitors of remote actors are cancelled, and global names it
    /// held are freed.
    pub fn actor_exited(&self, pid: Pid, reason: &Value) {
        let serial = serial_of(pid);
        let reason = self.distributable_reason(reason);
        {
            let mut st = self.inner.state.lock();
            for p in st.peers.values_mut() {
                let links = p.bonds.links.remove(&serial);
                let watchers = p.bonds.mon_in.remove(&serial);
                let mut watching = Vec::new();
                p.bonds.mon_out.retain(|&r, &mut (w, t)| {
                    if w == serial {
                        watching.push((r, t));
                    }
                    w != serial
                });
                if !p.alive {
                    continue;
                }
                for to in links.into_iter().flatten() {
                    self.inner
                        .push(p, &Signal::Exit { from: serial, to, linked: true, reason: reason.clone() });
                }
                for (watcher, r) in watchers.into_iter().flatten() {
                    self.inner.push(p, &Signal::Down { watcher, target: serial, r, reason: reason.clone() });
                }
                for (r, target) in watching {
                    self.inner.push(p, &Signal::Demonitor { watcher: serial, target, r });
                }
            }
        }
        self.inner.names.actor_exited(&self.inner, pid);
    }

    /// Starts `func(args)` on node `node` for local actor `from`; with `opts.link` or
    /// `opts.monitor` the link or monitor is in place before this returns.
    pub async fn spawn(
        &self,
        from: Pid,
        node: &str,
        func: &str,
        args: Vec<Value>,
        opts: SpawnOptions,
    ) -> Result<Pid, SpawnError> {
        let (tx, rx) = oneshot::channel();
        let sig_opts = opts.clone();
        {
            let mut st = self.inner.state.lock();
            st.next_req += 1;
            let req = st.next_req;
            let Some(p) = st.peers.get_mut(node).filter(|p| p.alive) else {
                return Err(SpawnError::NoConnection(node.to_string()));
            };
            let peer = p.id.name.clone();
            let hash = p.announce.module_hash;
            let local = self.inner.local.clone();
            let res_kind = move |h: &Handle| local.res_kind(h);
            let sig =
                Signal::Spawn { req, from: serial_of(from), func: Arc::from(func), args, opts: sig_opts };
            let bytes = wire::encode(&self.encode_ctx(&res_kind, hash), 0, 1, &sig)?;
            self.inner.push_encoded(p, bytes);
            st.spawns.insert(req, PendingSpawn { peer, from, opts, reply: tx });
        }
        // On a timeout the request stays pending with its receiver gone: an answer that comes
        // later undoes the link or monitor the other node recorded (`spawn_answered`), and the
        // session's end clears it otherwise.
        match tokio::time::timeout(self.inner.cfg.spawn_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SpawnError::NoConnection(node.to_string())),
            Err(_) => Err(SpawnError::Timeout(node.to_string())),
        }
    }

    /// Leaves the cluster gracefully: each peer gets `Bye` behind everything already sent to
    /// it (so nothing sent before is lost) and fires its links at once; the driver ends.
    pub async fn leave(&self) {
        self.inner.left.store(true, std::sync::atomic::Ordering::Release);
        for p in self.inner.state.lock().peers.values_mut().filter(|p| p.alive) {
            self.inner.push(p, &Signal::Bye);
        }
        // A peer that does not read its connection (hung) gets `down_after` to take the rest: it
        // would not notice the `Bye` anyway, and its silence ends its side of the session.
        // So does a NATS server that went away: a node told to leave leaves, whatever the
        // network does.
        let deadline = Instant::now() + self.inner.cfg.down_after;
        while (self.inner.out.pending() || self.inner.direct_pending()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = tokio::time::timeout(self.inner.cfg.down_after, self.inner.transport.flush()).await;
        self.inner.shutdown.notify_one();
        self.inner.stop.send_replace(true);
    }

    /// Registers `pid` under `name` cluster-wide; exactly one of racing registrations wins.
    pub async fn global_register(&self, name: Atom, pid: Pid) -> Result<(), crate::global::GlobalError> {
        self.inner.names.register(&self.inner, name, pid).await
    }

    /// The pid registered under `name` cluster-wide, if its owner is alive.
    pub async fn global_whereis(&self, name: Atom) -> Result<Option<Pid>, crate::global::GlobalError> {
        self.inner.names.whereis(&self.inner, name).await
    }

    /// Removes `name` if a local actor holds it.
    pub async fn global_unregister(&self, name: Atom) -> Result<(), crate::global::GlobalError> {
        self.inner.names.unregister(&self.inner, name).await
    }
}

mod conn;
mod inbound;
mod pulse;
mod session;

pub use pulse::Pulse;
