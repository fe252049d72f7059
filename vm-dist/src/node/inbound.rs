//! What arrives: envelopes on this node's subject (checked against the session rules, then
//! acted on), announcements, name probes, the server's departure notices and 503s; and the
//! [`Driver`]'s loop that receives, publishes and keeps the heartbeat.

use super::session::fail_spawns;
use super::*;
use futures::future::BoxFuture;

impl Inner {
    /// One message on this node's subject.
    fn on_envelope(&self, payload: &Bytes) {
        let ctx =
            DecodeCtx { table: &self.table, module_hash: self.cfg.module_hash, limits: self.cfg.limits };
        let env = match wire::decode(&ctx, payload) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = %e, "dropped a malformed envelope");
                return;
            }
        };
        if env.from.name == self.me.name {
            return;
        }
        self.take(env, payload.len(), true);
    }

    /// Takes a decoded envelope from another node, through NATS (`via_nats`) or its direct
    /// connection (whose reader checked the sender).
    pub(super) fn take(&self, env: Envelope, size: usize, via_nats: bool) {
        let _order = self.inbound.lock();
        let mut fire = Vec::new();
        let mut deliver = None;
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            let mut ended = Vec::new();
            if let Some(p) = self.peer_for(st, &env.from, &mut fire) {
                if via_nats {
                    self.nats_after_switch(p, &env.signal, &mut ended, &mut fire);
                }
                if self.accept(p, &env, &mut ended, &mut fire) {
                    p.last_heard = Instant::now();
                    if via_nats {
                        p.last_nats = p.last_heard;
                        p.last_nats_data = p.last_heard;
                    }
                    if !p.alive {
                        p.alive = true;
                        fire.push(Fire::NodeEvent(p.id.clone(), true));
                    }
                    if env.signal.is_sequenced() {
                        // Acknowledge by the sender's measure: whole envelopes of sequenced signals.
                        p.in_bytes += size as u64;
                        if p.in_bytes - p.acked_in >= self.cfg.window / 4 {
                            self.send_ack(p);
                        }
                    }
                    match self.handle(p, env, &mut fire) {
                        Some(Deliver::Spawned { req, result, slot }) => {
                            self.spawn_answered(st, req, result, slot, &mut fire)
                        }
                        d => deliver = d,
                    }
                }
            }
            for name in ended {
                fail_spawns(st, &name, &mut fire);
            }
        }
        self.fire(fire);
        if let Some(d) = deliver {
            self.deliver(d);
        }
    }

    /// Acts on an accepted envelope under the lock; returns what to deliver after it.
    fn handle(&self, p: &mut Peer, env: Envelope, fire: &mut Vec<Fire>) -> Option<Deliver> {
        let slot = p.slot;
        let remote = |serial| make_pid(slot, serial);
        match env.signal {
            Signal::Send { to, msg } => Some(Deliver::Send(make_pid(0, to), msg)),
            Signal::SendName { name, msg } => Some(Deliver::SendName(name, msg)),
            Signal::Spawn { req, from, func, args, opts } => {
                Some(Deliver::Spawn { peer: p.id.clone(), req, from, func, args, opts })
            }
            Signal::Spawned { req, result } => Some(Deliver::Spawned { req, result, slot }),
            Signal::Link { from, to } => {
                p.bonds.links.entry(to).or_default().insert(from);
                Some(Deliver::CheckLink { peer: p.id.clone(), local: to, remote: from })
            }
            Signal::Unlink { from, to } => {
                p.bonds.unlink(to, from);
                None
            }
            Signal::Exit { from, to, linked, reason } => {
                if !linked || p.bonds.unlink(to, from) {
                    fire.push(Fire::Exit { to: make_pid(0, to), from: remote(from), reason, linked });
                }
                None
            }
            Signal::Monitor { watcher, target, r } => {
                p.bonds.mon_in.entry(target).or_default().push((watcher, r));
                Some(Deliver::CheckMonitor { peer: p.id.clone(), target, watcher, r })
            }
            Signal::Demonitor { watcher, target, r } => {
                p.bonds.unwatch(target, watcher, r);
                None
            }
            Signal::Down { watcher, target, r, reason } => {
                if p.bonds.mon_out.get(&r) == Some(&(watcher, target)) {
                    p.bonds.mon_out.remove(&r);
                    fire.push(Fire::Down {
                        watcher: make_pid(0, watcher),
                        r,
                        target: remote(target),
                        reason,
                    });
                }
                None
            }
            Signal::Interrupt { to, mode, kind, msg, .. } => {
                Some(Deliver::Interrupt(make_pid(0, to), kind, msg, mode))
            }
            Signal::Kill { from, to } => Some(Deliver::Kill(make_pid(0, to), remote(from))),
            Signal::Tick { .. }
            | Signal::Ack(_)
            | Signal::Reset { .. }
            | Signal::Announce(_)
            | Signal::Switch { .. }
            | Signal::Bye => None,
        }
    }

    fn spawn_answered(
        &self,
        st: &mut State,
        req: u64,
        result: Result<u64, Atom>,
        slot: u16,
        fire: &mut Vec<Fire>,
    ) {
        let Some(ps) = st.spawns.remove(&req) else { return };
        let Some(p) = st.peers.get_mut(&ps.peer).filter(|p| p.slot == slot) else { return };
        let r = match result {
            Ok(serial) => {
                let pid = make_pid(slot, serial);
                if ps.reply.is_closed() {
                    // The spawner is gone: undo what the remote side recorded for it.
                    if ps.opts.link {
                        self.push(
                            p,
                            &Signal::Exit {
                                from: serial_of(ps.from),
                                to: serial,
                                linked: true,
                                reason: Value::atom("noproc"),
                            },
                        );
                    }
                    if let Some(r) = ps.opts.monitor {
                        self.push(p, &Signal::Demonitor { watcher: serial_of(ps.from), target: serial, r });
                    }
                    return;
                }
                if ps.opts.link {
                    p.bonds.links.entry(serial_of(ps.from)).or_default().insert(serial);
                }
                if let Some(r) = ps.opts.monitor {
                    p.bonds.mon_out.insert(r, (serial_of(ps.from), serial));
                }
                Ok(pid)
            }
            Err(reason) => Err(SpawnError::Refused(reason)),
        };
        fire.push(Fire::Spawn(ps.reply, r));
    }

    /// Calls into the local runtime for an accepted signal (no lock held).
    fn deliver(&self, d: Deliver) {
        match d {
            Deliver::Send(to, msg) => self.local.send(to, msg),
            Deliver::SendName(name, msg) => self.local.send_named(name, msg),
            Deliver::Interrupt(to, kind, msg, mode) => self.local.interrupt(to, kind, msg, mode),
            Deliver::Kill(to, from) => self.local.kill(to, from),
            Deliver::CheckLink { peer, local, remote } => {
                if !self.local.is_alive(make_pid(0, local)) {
                    let mut st = self.state.lock();
                    if let Some(p) = st.peers.get_mut(&peer.name).filter(|p| p.id == peer && p.alive)
                        && p.bonds.unlink(local, remote)
                    {
                        self.push(
                            p,
                            &Signal::Exit {
                                from: local,
                                to: remote,
                                linked: true,
                                reason: Value::atom("noproc"),
                            },
                        );
                    }
                }
            }
            Deliver::CheckMonitor { peer, target, watcher, r } => {
                if !self.local.is_alive(make_pid(0, target)) {
                    let mut st = self.state.lock();
                    if let Some(p) = st.peers.get_mut(&peer.name).filter(|p| p.id == peer && p.alive)
                        && p.bonds.unwatch(target, watcher, r)
                    {
                        self.push(p, &Signal::Down { watcher, target, r, reason: Value::atom("noproc") });
                    }
                }
            }
            Deliver::Spawn { peer, req, from, func, args, opts } => {
                self.serve_spawn(peer, req, from, &func, args, opts)
            }
            Deliver::Spawned { .. } => {}
        }
    }

    fn serve_spawn(
        &self,
        peer: NodeId,
        req: u64,
        from: u64,
        func: &str,
        args: Vec<Value>,
        opts: SpawnOptions,
    ) {
        let Some(parent) = self.table.pid(&peer, from) else { return };
        let mut answered = false;
        let mut started = |pid: Pid| {
            let mut st = self.state.lock();
            let Some(p) = st.peers.get_mut(&peer.name).filter(|p| p.id == peer && p.alive) else { return };
            let serial = serial_of(pid);
            if opts.link {
                p.bonds.links.entry(serial).or_default().insert(from);
            }
            if let Some(r) = opts.monitor {
                p.bonds.mon_in.entry(serial).or_default().push((from, r));
            }
            self.push(p, &Signal::Spawned { req, result: Ok(serial) });
            answered = true;
        };
        let result = self.local.spawn(func, args, &opts, parent, &mut started);
        if let Err(reason) = result
            && !answered
        {
            let mut st = self.state.lock();
            if let Some(p) = st.peers.get_mut(&peer.name).filter(|p| p.id == peer && p.alive) {
                self.push(p, &Signal::Spawned { req, result: Err(reason) });
            }
        }
    }

    /// A message on the announcement subject.
    fn on_announce(&self, payload: &Bytes) {
        let ctx =
            DecodeCtx { table: &self.table, module_hash: self.cfg.module_hash, limits: self.cfg.limits };
        let Ok(env) = wire::decode(&ctx, payload) else {
            tracing::warn!("dropped a malformed announcement");
            return;
        };
        if env.from.name == self.me.name {
            if env.from.inc != self.me.inc {
                // Two nodes started together, both probed before either announced.
                tracing::error!(other = %env.from, "another live node has this node's name");
            }
            return;
        }
        let _order = self.inbound.lock();
        let mut fire = Vec::new();
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            let known = st.peers.get(&env.from.name).is_some_and(|p| p.id == env.from && p.alive);
            match env.signal {
                Signal::Announce(a) => {
                    let Some(p) = self.peer_for(st, &env.from, &mut fire) else { return };
                    if known {
                        let sent = a.uptime_ms.saturating_sub(p.announce.uptime_ms);
                        let heard = p.last_nats.elapsed().as_millis() as u64;
                        if sent.max(heard) > 2 * self.cfg.heartbeat.as_millis() as u64 {
                            tracing::info!(peer = %p.id, sent_ms = sent, heard_ms = heard, "announcements of the peer came far apart");
                        }
                    }
                    p.announce = a;
                    p.last_heard = Instant::now();
                    p.last_nats = p.last_heard;
                    if !p.alive {
                        p.alive = true;
                        fire.push(Fire::NodeEvent(p.id.clone(), true));
                    }
                    self.maybe_dial(p);
                    if !known {
                        // A node we did not know: tell it about us now, not a heartbeat later.
                        self.announce();
                    }
                }
                _ => tracing::warn!("unexpected signal on the announcement subject"),
            }
        }
        self.fire(fire);
    }

    /// Another process asks whether this node's name is taken: it is.
    fn on_probe(&self, m: Incoming) {
        if let Some(reply) = m.reply {
            let payload = self.encode_plain(&Signal::Announce(Announce::default()));
            self.emit(Outgoing { subject: Arc::from(reply), reply: None, payload });
        }
    }

    /// The server saw the connection named `client` close.
    fn on_departure(&self, client: &str) {
        let Some(rest) = client.strip_prefix(&self.prefix).and_then(|r| r.strip_prefix('.')) else { return };
        self.lost(rest, EndCause::Departed);
    }

    /// A 503 on a reply subject: the peer's incarnation has no subscriber.
    fn on_no_responders(&self, subject: &str) {
        self.lost(subject, EndCause::NoResponders);
    }

    fn on_message(&self, m: Incoming) {
        if !m.no_responders {
            self.on_envelope(&m.payload);
        }
    }
}

/// An accepted signal's work for the local runtime.
enum Deliver {
    Send(Pid, Value),
    SendName(Atom, Value),
    Interrupt(Pid, Atom, Value, u8),
    Kill(Pid, Pid),
    CheckLink { peer: NodeId, local: u64, remote: u64 },
    CheckMonitor { peer: NodeId, target: u64, watcher: u64, r: i64 },
    Spawn { peer: NodeId, req: u64, from: u64, func: Arc<str>, args: Vec<Value>, opts: SpawnOptions },
    Spawned { req: u64, result: Result<u64, Atom>, slot: u16 },
}

impl Driver {
    /// Runs until [`Node::leave`]: receives, publishes and keeps the heartbeat. `spawn` runs a
    /// future as a task of its own (this crate spawns none itself): the driver hands it each
    /// direct connection, so that a frame is taken and delivered on the task its socket wakes,
    /// with no hop through this one. Those tasks end when this future ends or is dropped.
    pub async fn run(self, spawn: impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static) {
        let Driver {
            node,
            inbox,
            replies,
            announces,
            probes,
            mut departures,
            mut events,
            mut out,
            mut jobs,
            listener,
            pulse,
        } = self;
        let inner = node.inner.clone();
        let publisher = {
            let inner = inner.clone();
            async move {
                while let Some(msg) = out.recv().await {
                    if let Err(e) = inner.transport.publish(msg).await {
                        tracing::warn!(error = %e, "publish failed");
                    }
                    inner.out.taken();
                }
            }
        };
        enum In {
            Envelope(Incoming),
            Reply(Incoming),
            Announce(Incoming),
            Probe(Incoming),
        }
        let mut incoming = futures::stream::select_all([
            inbox.map(In::Envelope).boxed(),
            replies.map(In::Reply).boxed(),
            announces.map(In::Announce).boxed(),
            probes.map(In::Probe).boxed(),
        ]);
        let mut deletions = futures::stream::FuturesUnordered::new();
        // The direct connections (`conn`) run as tasks of their own, each from its handshake to
        // its end; dropping `stop` (when this future ends) ends them.
        let (stop, stopped) = tokio::sync::watch::channel(());
        let run_conn = |c: conn::ConnFuture| spawn(conn::task(inner.clone(), c, stopped.clone()));
        let mut handshakes = conn::Handshakes::default();
        let receiver = async {
            inner.announce();
            let mut tick = tokio::time::interval(inner.cfg.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Unbiased (branches are polled from a random start): under a backlog from one
                // source (NATS, a connection) the others still get their turn, so a busy node
                // still announces itself every heartbeat (its peers count its announcements,
                // `conn`) and answers handshakes.
                tokio::select! {
                    _ = inner.shutdown.notified() => break,
                    _ = tick.tick() => inner.tick_peers(),
                    m = incoming.next() => match m {
                        Some(In::Envelope(m)) => inner.on_message(m),
                        Some(In::Reply(m)) => if m.no_responders { inner.on_no_responders(&m.subject) },
                        Some(In::Announce(m)) => inner.on_announce(&m.payload),
                        Some(In::Probe(m)) => inner.on_probe(m),
                        None => break,
                    },
                    Some(name) = departures.next() => inner.on_departure(&name),
                    Some(e) = events.next() => match e {
                        TransportEvent::SlowConsumer => tracing::warn!("this node fell behind: NATS dropped messages to it"),
                        TransportEvent::Disconnected => tracing::warn!("lost the connection to NATS; reconnecting"),
                        TransportEvent::Connected => tracing::info!("connected to NATS"),
                        TransportEvent::Closed => tracing::warn!("the NATS connection is closed"),
                    },
                    Some(job) = jobs.recv() => match job {
                        // Run beside the loop: a store round trip must not hold up receiving.
                        Job::DeleteName(key, rev) => deletions.push(inner.names.delete(key, rev)),
                        Job::Dial { peer, to, conn } => run_conn(conn::dial(inner.clone(), peer, to, conn)),
                    },
                    Some(()) = deletions.next(), if !deletions.is_empty() => {}
                    accepted = async { listener.as_ref().expect("guarded").accept().await }, if listener.is_some() => {
                        match accepted {
                            Ok((s, _)) => {
                                let evicted = handshakes.slot(inner.cfg.max_handshakes);
                                run_conn(conn::accept(inner.clone(), s, evicted));
                            }
                            Err(e) => tracing::warn!(error = %e, "could not accept a direct connection"),
                        }
                    }
                }
            }
        };
        // A pulse the runtime did not take runs here (`pulse`, rule 5).
        let pulse = async {
            match pulse {
                Some(p) => p.run().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = publisher => {}
            _ = receiver => {}
            _ = pulse => {}
        }
        drop(stop);
    }
}
