//! The session rules (the module docs of `node`, points 1 to 6): envelopes numbered and
//! emitted in order, acknowledgements, the peer table, the end of a session and everything it
//! fires, heartbeats and silence.

use super::*;

impl Inner {
    /// [`Inner::echo_delay_ms`]'s latest measure.
    pub(super) fn echo_delay_ms(&self) -> u64 {
        self.echo_delay_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn me(&self) -> &NodeId {
        &self.me
    }

    /// Whether `id` is this node or a live peer.
    pub(crate) fn is_up(&self, id: &NodeId) -> bool {
        *id == self.me || self.state.lock().peers.get(&id.name).is_some_and(|p| p.alive && p.id == *id)
    }

    pub(super) fn encode_plain(&self, sig: &Signal) -> Bytes {
        let res_kind = |_: &Handle| "resource";
        let ctx = EncodeCtx {
            table: &self.table,
            module_hash: self.cfg.module_hash,
            peer_module_hash: None,
            max_size: usize::MAX,
            max_depth: self.cfg.limits.max_depth,
            res_kind: &res_kind,
        };
        Bytes::from(
            wire::encode(&ctx, 0, 0, sig).expect("control signals hold no values that can fail to encode"),
        )
    }

    /// Publishes `msg` at once when the transport can take it without waiting and nothing is
    /// queued before it, else queues it for the publisher task (`outbox`). Envelopes to peers
    /// are emitted under the state lock, so this order is the order of sequence numbers.
    pub(super) fn emit(&self, msg: Outgoing) {
        self.out.emit(msg, |m| self.transport.try_publish(m));
    }

    /// Sequences an encoded envelope on `p`'s session and emits it (under the state lock).
    pub(super) fn push_encoded(&self, p: &mut Peer, mut bytes: Vec<u8>) {
        p.out_seq += 1;
        p.out_bytes += bytes.len() as u64;
        wire::stamp(&mut bytes, p.out_epoch, p.out_seq);
        self.emit_to(p, Bytes::from(bytes));
    }

    /// Emits an envelope to `p` (under the state lock) on its path: the direct connection once
    /// this node has switched to it, else NATS.
    pub(super) fn emit_to(&self, p: &Peer, payload: Bytes) {
        match p.direct.as_ref().and_then(|c| c.writer.as_ref()) {
            Some(w) => w.send(&payload),
            None => self.emit(Outgoing { subject: p.subject.clone(), reply: Some(p.reply.clone()), payload }),
        }
    }

    /// Encodes and queues a control signal: sequenced kinds take a sequence number, the others
    /// carry the current out-epoch only.
    pub(super) fn push(&self, p: &mut Peer, sig: &Signal) {
        let local = self.local.clone();
        let res_kind = move |h: &Handle| local.res_kind(h);
        let ctx = EncodeCtx {
            table: &self.table,
            module_hash: self.cfg.module_hash,
            peer_module_hash: Some(p.announce.module_hash),
            // Control signals are small and must not be refused by size; a value in one that
            // cannot cross was replaced beforehand (`distributable_reason`).
            max_size: usize::MAX,
            max_depth: usize::MAX,
            res_kind: &res_kind,
        };
        let seq = u64::from(sig.is_sequenced());
        match wire::encode(&ctx, p.out_epoch, seq, sig) {
            Ok(bytes) if sig.is_sequenced() => self.push_encoded(p, bytes),
            Ok(bytes) => self.emit_to(p, Bytes::from(bytes)),
            Err(e) => tracing::warn!(peer = %p.id, error = %e, "control signal not encoded"),
        }
    }

    /// This node's announcement (presence, every heartbeat; `pulse`).
    pub(super) fn announcement(&self) -> Bytes {
        let a = Announce {
            actors: self.local.actor_count(),
            module_hash: self.cfg.module_hash,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            direct: self.direct,
        };
        self.encode_plain(&Signal::Announce(a))
    }

    /// Announces this node now, behind what is queued in the outbox (the driver's first act,
    /// and its answer to a node it did not know).
    pub(super) fn announce(&self) {
        if self.left.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let payload = self.announcement();
        self.emit(Outgoing { subject: self.announce_subject.clone(), reply: None, payload });
    }

    pub(super) fn new_peer(&self, id: NodeId) -> Option<Peer> {
        let slot = self.table.slot(&id)?;
        Some(Peer {
            subject: Arc::from(format!("{}.n.{}.{}", self.prefix, id.name, id.inc)),
            reply: Arc::from(format!(
                "{}.r.{}.{}.{}.{}",
                self.prefix, self.me.name, self.me.inc, id.name, id.inc
            )),
            id,
            slot,
            alive: false,
            last_heard: Instant::now(),
            last_nats: Instant::now(),
            last_nats_data: Instant::now(),
            announce: Announce::default(),
            out_epoch: 1,
            out_seq: 0,
            out_bytes: 0,
            acked_bytes: 0,
            in_epoch: 0,
            in_seq: 0,
            in_bytes: 0,
            in_dead: 0,
            acked_in: 0,
            reset_sent: None,
            bonds: Bonds::default(),
            gate: Arc::new(Notify::new()),
            direct: None,
            dialing: None,
            switch_seen: None,
        })
    }

    /// The peer entry for incarnation `id`, replacing an older incarnation of the same name
    /// (whose session ends). `None` for a stale incarnation or a full node table.
    pub(super) fn peer_for<'s>(
        &self,
        st: &'s mut State,
        id: &NodeId,
        fire: &mut Vec<Fire>,
    ) -> Option<&'s mut Peer> {
        let replace = match st.peers.get(&id.name) {
            None => true,
            Some(p) if p.id == *id => false,
            Some(p) => id.inc > p.id.inc || !p.alive,
        };
        if replace {
            let fresh = self.new_peer(id.clone())?;
            if let Some(mut old) = st.peers.insert(id.name.clone(), fresh) {
                self.end_session(&mut old, EndCause::NewIncarnation, &mut Vec::new(), fire);
                fail_spawns(st, &id.name, fire);
            }
        }
        st.peers.get_mut(&id.name).filter(|p| p.id == *id)
    }

    /// Ends the session with `p` (see the module docs, point 3).
    pub(super) fn end_session(
        &self,
        p: &mut Peer,
        cause: EndCause,
        spawns_of: &mut Vec<Arc<str>>,
        fire: &mut Vec<Fire>,
    ) {
        if p.alive {
            tracing::warn!(peer = %p.id, "node {} is down: {}", p.id.name, cause.describe());
        } else {
            tracing::info!(peer = %p.id, ?cause, "session ended");
        }
        let bonds = std::mem::take(&mut p.bonds);
        for (local, remotes) in bonds.links {
            for remote in remotes {
                fire.push(Fire::Exit {
                    to: make_pid(0, local),
                    from: make_pid(p.slot, remote),
                    reason: noconnection(),
                    linked: true,
                });
            }
        }
        for (r, (watcher, target)) in bonds.mon_out {
            fire.push(Fire::Down {
                watcher: make_pid(0, watcher),
                r,
                target: make_pid(p.slot, target),
                reason: noconnection(),
            });
        }
        let was_alive = p.alive;
        if was_alive {
            fire.push(Fire::NodeEvent(p.id.clone(), false));
        }
        spawns_of.push(p.id.name.clone());
        p.alive = cause.still_reachable();
        if !p.alive {
            // The peer is down until its next announcement, which dials again: its connection
            // (if any) closes, and what this side sends meanwhile goes through NATS.
            p.direct = None;
        }
        if p.alive {
            fire.push(Fire::NodeEvent(p.id.clone(), true));
        }
        p.out_epoch += 1;
        p.out_seq = 0;
        p.out_bytes = 0;
        p.acked_bytes = 0;
        p.in_dead = p.in_dead.max(p.in_epoch);
        p.in_seq = 0;
        p.in_bytes = 0;
        p.acked_in = 0;
        p.gate.notify_waiters();
        if p.in_dead > 0 && cause != EndCause::NewIncarnation {
            p.reset_sent = Some(p.in_dead);
            self.push(p, &Signal::Reset { dead: p.in_dead });
        }
    }

    pub(super) fn fire(&self, fire: Vec<Fire>) {
        for f in fire {
            match f {
                Fire::Exit { to, from, reason, linked } => self.local.exit_signal(to, from, reason, linked),
                Fire::Down { watcher, r, target, reason } => self.local.down(watcher, r, target, reason),
                Fire::NodeEvent(id, up) => self.local.node_event(&id, up),
                Fire::Spawn(tx, r) => {
                    let _ = tx.send(r);
                }
            }
        }
    }

    /// The session rules (module docs, points 1 to 4): whether to act on `env`.
    pub(super) fn accept(
        &self,
        p: &mut Peer,
        env: &Envelope,
        ended: &mut Vec<Arc<str>>,
        fire: &mut Vec<Fire>,
    ) -> bool {
        match &env.signal {
            Signal::Bye => {
                self.end_session(p, EndCause::Bye, ended, fire);
                return false;
            }
            Signal::Reset { dead } => {
                if p.out_epoch <= *dead {
                    self.end_session(p, EndCause::Reset, ended, fire);
                }
                return true;
            }
            Signal::Ack(ack) => {
                self.take_ack(p, ack);
                return true;
            }
            Signal::Switch { conn } => {
                // Not part of the session: it orders the paths (the module docs of `conn`).
                self.switch_seen(p, *conn);
                return true;
            }
            _ => {}
        }
        let e = env.epoch;
        if e <= p.in_dead {
            // An envelope of a session that is over: the peer has not noticed yet.
            if p.reset_sent != Some(p.in_dead) || matches!(env.signal, Signal::Tick { .. }) {
                p.reset_sent = Some(p.in_dead);
                self.push(p, &Signal::Reset { dead: p.in_dead });
            }
            return false;
        }
        if e > p.in_epoch {
            if p.in_live() {
                self.end_session(p, EndCause::NewEpoch, ended, fire);
            }
            p.in_epoch = e;
            p.in_seq = 0;
            p.in_bytes = 0;
            p.acked_in = 0;
        }
        match &env.signal {
            Signal::Tick { last_seq, ack } => {
                self.take_ack(p, ack);
                if *last_seq > p.in_seq {
                    tracing::warn!(peer = %p.id, taken = p.in_seq, sent = last_seq, "signals lost in transit");
                    self.end_session(p, EndCause::Gap, ended, fire);
                    return false;
                }
                // Acknowledge on every tick, so a sender's window reopens even when little flows.
                if p.in_bytes != p.acked_in {
                    self.send_ack(p);
                }
                true
            }
            _ if env.seq != p.in_seq + 1 => {
                tracing::warn!(peer = %p.id, expected = p.in_seq + 1, got = env.seq, "sequence gap");
                self.end_session(p, EndCause::Gap, ended, fire);
                false
            }
            _ => {
                p.in_seq = env.seq;
                true
            }
        }
    }

    pub(super) fn take_ack(&self, p: &mut Peer, ack: &Ack) {
        if ack.epoch == p.out_epoch && ack.bytes > p.acked_bytes && ack.bytes <= p.out_bytes {
            p.acked_bytes = ack.bytes;
            p.gate.notify_waiters();
        }
    }

    pub(super) fn send_ack(&self, p: &mut Peer) {
        p.acked_in = p.in_bytes;
        let ack = Ack { epoch: p.in_epoch, seq: p.in_seq, bytes: p.in_bytes };
        self.push(p, &Signal::Ack(ack));
    }

    /// Ends the session with the peer named by the last two tokens of `tokens` (name and
    /// incarnation), if that incarnation is up.
    pub(super) fn lost(&self, tokens: &str, cause: EndCause) {
        let mut parts = tokens.rsplit('.');
        let (Some(inc), Some(name)) = (parts.next(), parts.next()) else { return };
        let Ok(inc) = inc.parse::<u64>() else { return };
        let _order = self.inbound.lock();
        let mut fire = Vec::new();
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            if let Some(p) = st.peers.get_mut(name).filter(|p| p.id.inc == inc && p.alive) {
                let mut ended = Vec::new();
                self.end_session(p, cause, &mut ended, &mut fire);
                let name = p.id.name.clone();
                fail_spawns(st, &name, &mut fire);
            }
        }
        self.fire(fire);
    }

    /// The driver's heartbeat: a `Tick` to every live peer (point 2; silence is the pulse's
    /// to judge, `pulse`).
    pub(super) fn tick_peers(&self) {
        let mut st = self.state.lock();
        for p in st.peers.values_mut().filter(|p| p.alive) {
            p.acked_in = p.in_bytes;
            let ack = Ack { epoch: p.in_epoch, seq: p.in_seq, bytes: p.in_bytes };
            self.push(p, &Signal::Tick { last_seq: p.out_seq, ack });
            p.reset_sent = None;
        }
    }
}

pub(super) fn fail_spawns(st: &mut State, peer: &str, fire: &mut Vec<Fire>) {
    let reqs: Vec<u64> = st.spawns.iter().filter(|(_, s)| &*s.peer == peer).map(|(r, _)| *r).collect();
    for r in reqs {
        if let Some(s) = st.spawns.remove(&r) {
            fire.push(Fire::Spawn(s.reply, Err(SpawnError::NoConnection(peer.to_string()))));
        }
    }
}
