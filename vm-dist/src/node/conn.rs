//! The direct path: one TCP connection per pair of nodes that carries all their signals, beside
//! NATS, which stays the membership (announcements, presence), discovery, global names and the
//! fallback. `crate::direct` has the frames, the handshake and the ordered writer. The rules:
//!
//! 1. A node with [`Config::direct`] listens there and announces the bound address and a fresh
//!    token. Of two nodes that both announce one, the one with the smaller name dials, on an
//!    announcement of the other while it holds no connection to it and is not dialing it. The
//!    listener refuses a hello that `direct::accept_hello` refuses, one from a node with a
//!    larger name, and one from a node it does not hold as up: so there is at most one
//!    connection per pair.
//! 2. Switching without reordering: once its side of the handshake is done (the dialer: the
//!    welcome checked; the listener: the welcome sent), a node, under the state lock, sends the
//!    peer `Switch { conn }` through NATS, behind everything it sent there, and from then on
//!    sends to the peer only on the connection. The receiver reads the connection's frames only
//!    once that marker has arrived through NATS, so it takes the peer's envelopes in numbering
//!    order across the switch. If NATS lost the marker, the receiver reads the connection once
//!    no envelope of the peer has come through NATS for `down_after` (a backlog still being
//!    delivered is not a lost marker); the numbering then finds any other loss. Sessions, numbering, ticks and acknowledgements are the same on both paths.
//! 3. Each frame holds one envelope of the handshake's peer: a frame naming another sender, or
//!    a `Switch` or an announcement (which travel only through NATS), ends the connection. An
//!    envelope that does not decode is dropped, as on NATS, and the numbering reports the loss.
//! 4. A connection that ends (closed, broken, a refused frame) ends the session with its peer
//!    as a lost node does (each link and monitor fires `:noconnection` once), and the peer is
//!    down until its next announcement, which dials again: frames in flight may be lost, so
//!    falling back to NATS silently is not an option. A hello from a peer incarnation whose
//!    previous connection this node still holds (it broke on the peer's side first) ends the
//!    session too; the peer is evidently reachable, so it stays up.
//! 5. A session that ends with the peer unreachable (silence, a 503, a departure notice, `Bye`,
//!    a lost connection) closes the connection. A peer that NATS has not heard from for
//!    `down_after` is down even while its connection is up (`session`'s heartbeat): NATS stays
//!    the membership, so a node cut off from the servers is out of the cluster.
//! 6. Each connection is a task of its own, from its handshake to its end, which the runtime
//!    spawns for the [`Driver`] (this crate spawns no tasks): its frames are taken (the session
//!    rules, under the state lock) and delivered to the local runtime on the task the socket
//!    wakes, with no hop through the driver's task. The tasks end with the driver.
//! 7. A hostile client on the listener costs one connection: it is closed at its first bad
//!    byte or at the handshake's deadline (`down_after`), and nothing else is affected. At most
//!    [`Config::max_handshakes`] handshakes are in progress at once: a connection accepted
//!    beyond that drops the oldest one still in its handshake, so a client that opens many
//!    connections and says nothing holds that many slots at most, and a real peer's handshake
//!    (a few milliseconds) still finds one.

use super::session::fail_spawns;
use super::*;
use crate::direct::{self, DirectError, Expect, FrameReader, Hello, Token, Welcome, Writer};
use crate::wire::DirectAddr;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A direct connection with a peer, held in its `Peer` (rule 2).
pub(super) struct Conn {
    /// The connection's number (the dialer's, from the hello).
    pub(super) conn: u64,
    /// Set once this node has switched: every envelope to the peer goes here.
    pub(super) writer: Option<Writer>,
    /// Notified when the peer's `Switch` for this connection arrives.
    ready: Arc<Notify>,
    /// Dropped with the `Conn`: the connection's future then ends and closes the socket. A
    /// value sent on it breaks the connection as a network fault would ([`Node::break_direct`]).
    close: Option<oneshot::Sender<()>>,
}

/// How a connection's future ended.
pub(super) struct ConnEnd {
    /// The peer, once known (an incoming connection refused at its hello has none).
    peer: Option<NodeId>,
    conn: u64,
    /// `None` when this side closed it.
    error: Option<DirectError>,
}

/// A connection's whole life: handshake, switch, reading, writing.
pub(super) type ConnFuture = BoxFuture<'static, ConnEnd>;

/// The task of a connection (rule 6): the connection, then its end reported; or nothing more
/// once the driver is gone (`stop`'s sender dropped: the node left or was dropped).
pub(super) fn task(
    inner: Arc<Inner>,
    conn: ConnFuture,
    mut stop: watch::Receiver<()>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        tokio::select! {
            end = conn => inner.conn_ended(end),
            _ = stop.changed() => {}
        }
    })
}

/// The slots of the handshakes in progress on the listener (rule 7), oldest first: each holds
/// the sender whose drop ends that handshake; an accepted connection drops its receiver once
/// its handshake is done, which frees the slot.
#[derive(Default)]
pub(super) struct Handshakes(std::collections::VecDeque<oneshot::Sender<()>>);

impl Handshakes {
    /// A slot for a newly accepted connection, with at most `max` in use: the oldest handshake
    /// is dropped if need be. The receiver resolves when the connection loses its slot.
    pub(super) fn slot(&mut self, max: usize) -> oneshot::Receiver<()> {
        self.0.retain(|s| !s.is_closed());
        while self.0.len() >= max.max(1) {
            self.0.pop_front();
            tracing::warn!(max, "too many direct handshakes in progress: dropped the oldest");
        }
        let (slot, evicted) = oneshot::channel();
        self.0.push_back(slot);
        evicted
    }
}

/// Opens the listener of rule 1; the announced address is the bound one (the port of `:0`).
pub(super) async fn listen(addr: SocketAddr) -> Result<(TcpListener, DirectAddr), StartError> {
    if addr.ip().is_unspecified() {
        return Err(StartError::Direct(format!(
            "{addr}: the address is announced to peers, so give one they can reach (not a wildcard)"
        )));
    }
    let l = TcpListener::bind(addr).await.map_err(|e| StartError::Direct(format!("{addr}: {e}")))?;
    let bound = l.local_addr().map_err(|e| StartError::Direct(format!("{addr}: {e}")))?;
    let token = Token::fresh().map_err(StartError::Direct)?;
    Ok((l, DirectAddr { addr: bound, token }))
}

impl Inner {
    /// Rule 1, on an announcement of `p` (under the state lock): dial it if this node should.
    pub(super) fn maybe_dial(&self, p: &mut Peer) {
        let (Some(_), Some(to)) = (self.direct, p.announce.direct) else { return };
        if self.me.name >= p.id.name || !p.alive || p.direct.is_some() || p.dialing.is_some() {
            return;
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        p.dialing = Some(conn);
        let _ = self.jobs.send(Job::Dial { peer: p.id.clone(), to, conn });
    }

    /// Rule 2: the peer's `Switch` arrived through NATS.
    pub(super) fn switch_seen(&self, p: &mut Peer, conn: u64) {
        p.switch_seen = Some(conn);
        if let Some(c) = p.direct.as_ref().filter(|c| c.conn == conn) {
            c.ready.notify_one();
        }
    }

    /// [`Node::break_direct`].
    pub(super) fn break_direct(&self, name: &str) -> bool {
        let mut st = self.state.lock();
        let Some(close) = st.peers.get_mut(name).and_then(|p| p.direct.as_mut()).and_then(|c| c.close.take())
        else {
            return false;
        };
        close.send(()).is_ok()
    }

    /// Rule 4: an envelope of the peer through NATS after its `Switch` to the connection held
    /// here means the peer no longer holds that connection (it sends through NATS only without
    /// one): it is lost, whether or not this side's socket has noticed yet.
    pub(super) fn nats_after_switch(
        &self,
        p: &mut Peer,
        sig: &Signal,
        ended: &mut Vec<Arc<str>>,
        fire: &mut Vec<Fire>,
    ) {
        let switched = p.direct.as_ref().is_some_and(|c| p.switch_seen == Some(c.conn));
        if switched && !matches!(sig, Signal::Switch { .. }) {
            tracing::warn!(peer = %p.id, "the peer sends through NATS again: its direct connection is lost");
            p.direct = None;
            if p.alive {
                self.end_session(p, EndCause::ConnectionLost, ended, fire);
            }
        }
    }

    /// Whether nothing but announcements came from `peer` through NATS for `down_after` (rule 2).
    fn nats_quiet(&self, peer: &NodeId) -> bool {
        let st = self.state.lock();
        st.peers.get(&peer.name).is_none_or(|p| p.last_nats_data.elapsed() > self.cfg.down_after)
    }

    /// Whether frames still wait to be written on a direct connection.
    pub(super) fn direct_pending(&self) -> bool {
        let st = self.state.lock();
        st.peers
            .values()
            .any(|p| p.direct.as_ref().and_then(|c| c.writer.as_ref()).is_some_and(|w| w.pending()))
    }

    /// Rule 2: the handshake is done; holds the connection in the peer's entry and switches.
    fn install(&self, peer: &NodeId, conn: Conn, writer: Writer) -> Result<(), DirectError> {
        let _order = self.inbound.lock();
        let mut fire = Vec::new();
        let r = {
            let mut st = self.state.lock();
            let st = &mut *st;
            match st.peers.get_mut(&peer.name).filter(|p| p.id == *peer && p.alive) {
                None => Err(DirectError::Refused(format!("{peer} is not up here"))),
                Some(p) => {
                    if p.dialing == Some(conn.conn) {
                        p.dialing = None;
                    }
                    let mut ended = Vec::new();
                    if let Some(old) = p.direct.take() {
                        // Rule 4: the old connection broke on the peer's side.
                        tracing::info!(peer = %p.id, old = old.conn, new = conn.conn, "a new direct connection replaces the old one");
                        drop(old);
                        self.end_session(p, EndCause::ConnectionReplaced, &mut ended, &mut fire);
                    }
                    let (n, ready) = (conn.conn, conn.ready.clone());
                    p.direct = Some(conn);
                    // Still through NATS (no writer yet): behind everything sent there.
                    self.push(p, &Signal::Switch { conn: n });
                    if p.switch_seen == Some(n) {
                        ready.notify_one();
                    }
                    if let Some(c) = p.direct.as_mut() {
                        c.writer = Some(writer);
                    }
                    for name in ended {
                        fail_spawns(st, &name, &mut fire);
                    }
                    Ok(())
                }
            }
        };
        self.fire(fire);
        r
    }

    /// Rule 3: one frame from `peer`'s connection.
    fn on_frame(&self, peer: &NodeId, frame: &Bytes) -> Result<(), DirectError> {
        let ctx =
            DecodeCtx { table: &self.table, module_hash: self.cfg.module_hash, limits: self.cfg.limits };
        let env = match wire::decode(&ctx, frame) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "dropped a malformed envelope");
                return Ok(());
            }
        };
        if env.from != *peer {
            return Err(DirectError::Refused(format!("a frame from {} on {peer}'s connection", env.from)));
        }
        if matches!(env.signal, Signal::Switch { .. } | Signal::Announce(_)) {
            return Err(DirectError::Malformed(format!("{peer} sent a NATS-only signal on its connection")));
        }
        self.take(env, frame.len(), false);
        Ok(())
    }

    /// Rule 4: a connection's future ended.
    pub(super) fn conn_ended(&self, end: ConnEnd) {
        let Some(peer) = end.peer else {
            if let Some(e) = end.error {
                tracing::warn!(error = %e, "refused a direct connection");
            }
            return;
        };
        let _order = self.inbound.lock();
        let mut fire = Vec::new();
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            if let Some(p) = st.peers.get_mut(&peer.name).filter(|p| p.id == peer) {
                if p.dialing == Some(end.conn) {
                    p.dialing = None;
                    if let Some(e) = &end.error {
                        tracing::info!(peer = %peer, error = %e, "could not dial the peer; trying again at its next announcement");
                    }
                }
                if p.direct.as_ref().is_some_and(|c| c.conn == end.conn) {
                    p.direct = None;
                    if p.alive {
                        match &end.error {
                            Some(e) => {
                                tracing::warn!(peer = %peer, error = %e, "the direct connection was lost")
                            }
                            None => tracing::warn!(peer = %peer, "the direct connection was closed"),
                        }
                        let mut ended = Vec::new();
                        self.end_session(p, EndCause::ConnectionLost, &mut ended, &mut fire);
                        fail_spawns(st, &peer.name, &mut fire);
                    }
                }
            }
        }
        self.fire(fire);
    }
}

/// Frames a connection takes before it lets its worker run other tasks.
const READ_BATCH: u32 = 64;

/// Returns `Pending` once, after waking its task (tokio's `yield_now`, which needs the `rt`
/// feature this crate does not take).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// The largest frame read from a peer: NATS's own largest `max_payload`, so whatever a peer may
/// send through its server it may send on its connection.
const MAX_FRAME: usize = 64 << 20;

fn timed_out(d: Duration) -> DirectError {
    DirectError::Timeout(d)
}

/// The dialer's side (rule 1): connect, hello, check the welcome, then [`run`].
pub(super) fn dial(inner: Arc<Inner>, peer: NodeId, to: DirectAddr, conn: u64) -> ConnFuture {
    Box::pin(async move {
        let r = async {
            let deadline = inner.cfg.down_after;
            let mine = inner.direct.ok_or_else(|| DirectError::Refused("no listener here".into()))?.token;
            let mut s = tokio::time::timeout(deadline, TcpStream::connect(to.addr))
                .await
                .map_err(|_| timed_out(deadline))??;
            s.set_nodelay(true)?;
            let hello = Hello {
                cluster: inner.cfg.cluster.clone(),
                from: inner.me.clone(),
                to: peer.clone(),
                token: to.token,
                conn,
            };
            s.write_all(&direct::frame(&hello.encode())).await?;
            let mut reader = FrameReader::new(direct::HELLO_MAX);
            let body = tokio::time::timeout(deadline, reader.read_frame(&mut s))
                .await
                .map_err(|_| timed_out(deadline))??
                .ok_or_else(|| DirectError::Refused(format!("{peer} closed the connection at the hello")))?;
            if !Welcome::decode(&body)?.token.matches(&mine) {
                return Err(DirectError::Refused(format!("{} answered with a wrong token", to.addr)));
            }
            // The peer may have switched and written frames right behind its welcome: the
            // reader keeps them.
            reader.set_max(MAX_FRAME);
            run(&inner, &peer, conn, s, reader).await
        }
        .await;
        ConnEnd { peer: Some(peer), conn, error: r.err() }
    })
}

/// The listener's side (rule 1): check the hello, welcome, then [`run`]; the handshake ends
/// early if the connection loses its slot (`evicted`, rule 7).
pub(super) fn accept(inner: Arc<Inner>, mut s: TcpStream, mut evicted: oneshot::Receiver<()>) -> ConnFuture {
    Box::pin(async move {
        let mut who = None;
        let r = async {
            let handshake = async {
                s.set_nodelay(true)?;
                let mine = inner.direct.ok_or_else(|| DirectError::Refused("no listener here".into()))?.token;
                let deadline = inner.cfg.down_after;
                let expect = Expect { cluster: &inner.cfg.cluster, me: &inner.me, token: &mine };
                let hello = direct::accept_hello(&mut s, &expect, deadline).await?;
                if hello.from.name >= inner.me.name {
                    return Err(DirectError::Refused(format!(
                        "{} dialed, but the node with the smaller name dials",
                        hello.from
                    )));
                }
                let token = {
                    let st = inner.state.lock();
                    st.peers
                        .get(&hello.from.name)
                        .filter(|p| p.id == hello.from && p.alive)
                        .and_then(|p| p.announce.direct)
                        .map(|d| d.token)
                }
                .ok_or_else(|| {
                    DirectError::Refused(format!("{} is not a live peer with a listener here", hello.from))
                })?;
                tokio::time::timeout(deadline, s.write_all(&direct::frame(&Welcome { token }.encode())))
                    .await
                    .map_err(|_| timed_out(deadline))??;
                Ok(hello)
            };
            let hello = tokio::select! {
                r = handshake => r?,
                _ = &mut evicted => {
                    return Err(DirectError::Refused("too many handshakes in progress".into()));
                }
            };
            // The handshake is done: its slot is free.
            drop(evicted);
            who = Some((hello.from.clone(), hello.conn));
            run(&inner, &hello.from, hello.conn, s, FrameReader::new(MAX_FRAME)).await
        }
        .await;
        let (peer, conn) = match who {
            Some((p, c)) => (Some(p), c),
            None => (None, 0),
        };
        ConnEnd { peer, conn, error: r.err() }
    })
}

/// A connection after its handshake: switch (rule 2), then read and write until it ends or
/// this side drops it.
async fn run(
    inner: &Arc<Inner>,
    peer: &NodeId,
    conn: u64,
    s: TcpStream,
    mut reader: FrameReader,
) -> Result<(), DirectError> {
    let s = Arc::new(s);
    let (writer, write_loop) = Writer::new(s.clone());
    let (close, closed) = oneshot::channel();
    let ready = Arc::new(Notify::new());
    inner.install(peer, Conn { conn, writer: None, ready: ready.clone(), close: Some(close) }, writer)?;
    let read = async {
        while tokio::time::timeout(inner.cfg.down_after, ready.notified()).await.is_err() {
            if inner.nats_quiet(peer) {
                tracing::warn!(peer = %peer, conn, "no switch marker through NATS; reading the connection");
                break;
            }
        }
        let mut taken = 0u32;
        loop {
            match reader.read_frame_from(&s).await? {
                Some(f) => inner.on_frame(peer, &f)?,
                None => return Err(DirectError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            }
            taken = taken.wrapping_add(1);
            if taken.is_multiple_of(READ_BATCH) {
                // A socket that always has data never makes this task wait: let the worker's
                // other tasks (the driver, the actors it delivers to) run between batches.
                yield_now().await;
            }
        }
    };
    tokio::select! {
        r = read => r,
        // It ends without an error only once its writer is dropped, with the `Conn`.
        r = write_loop.run() => r,
        broken = closed => match broken {
            Ok(()) => Err(DirectError::Io(std::io::ErrorKind::ConnectionAborted.into())),
            Err(_) => Ok(()),
        },
    }
}
