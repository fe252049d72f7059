//! The pulse: the half of the heartbeat that says this node is alive and judges whether its
//! peers are, apart from the [`Driver`] that moves signals. A node whose actors keep the
//! runtime's workers busy (issue 15: long slices of remote sends, a machine at full load) must
//! not look dead to its peers, and a node that is slow to read must not declare the others
//! dead. The rules:
//!
//! 1. Every heartbeat the pulse publishes this node's announcement itself (straight to the
//!    transport: an announcement is ordered with nothing, so it does not queue behind
//!    envelopes in the outbox).
//! 2. Every announcement that arrives reaches the pulse first: it notes when it heard each
//!    peer incarnation (and how late this node's own announcement came back), then hands the
//!    announcement on to the driver, which acts on it (`inbound`).
//! 3. A live peer is silent when neither the pulse nor the driver has heard from it through
//!    NATS for `down_after` (announcements, or envelopes through NATS); a silent peer's
//!    session ends (`session`, point 3), exactly as before.
//! 4. What arrived is read before the silence is judged (the pulse's `select!` is biased
//!    towards arrivals), and a heartbeat that is more than one period late when it comes to
//!    judge judges nothing: this node itself was not running (or waited for its locks), so
//!    what its peers sent meanwhile may not have been read yet; its own scheduling delay is
//!    not the peers' silence. The next heartbeat judges.
//! 5. The runtime may run the pulse on a thread of its own ([`Driver::take_pulse`]), together
//!    with the NATS connection's task: then neither waits behind actors on the runtime's
//!    workers. A pulse not taken runs inside the driver's future. The announcement takes none
//!    of the node's locks, and the judgement waits for them half a period at most (senders
//!    that take them back to back would otherwise keep the pulse parked for seconds on a busy
//!    machine, and its silence would look like this node's death).
//! 6. The pulse holds the node weakly: it ends when the node is gone, or once [`Node::leave`]
//!    is done.

use super::*;
use std::sync::Weak;
use tokio::sync::watch;

/// The pulse of a node (module docs of `pulse`): run [`Pulse::run`], on a thread of its own
/// or anywhere the runtime likes.
pub struct Pulse {
    pub(super) inner: Weak<Inner>,
    pub(super) announces: BoxStream<'static, Incoming>,
    pub(super) forward: mpsc::UnboundedSender<Incoming>,
    pub(super) stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for Pulse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pulse")
    }
}

impl Pulse {
    /// Announces this node and judges its peers' silence every heartbeat, until the node is
    /// gone or has left.
    pub async fn run(mut self) {
        let Some(period) = self.inner.upgrade().map(|i| i.cfg.heartbeat) else { return };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Rule 4: arrivals first, so a silence is judged after what came was read.
                biased;
                stopped = self.stop.changed() => if stopped.is_err() || *self.stop.borrow() {
                    break;
                },
                m = self.announces.next() => match m {
                    Some(m) => {
                        let Some(inner) = self.inner.upgrade() else { break };
                        inner.heard(&m.payload);
                        // The driver acts on it (rule 2); once it is gone, nothing needs it.
                        let _ = self.forward.send(m);
                    }
                    // The subscription is over (the transport closed): keep announcing and
                    // judging, so the peers this node no longer hears go down.
                    None => self.announces = futures::stream::pending().boxed(),
                },
                due = tick.tick() => {
                    let Some(inner) = self.inner.upgrade() else { break };
                    inner.beat(due).await;
                }
            }
        }
    }
}

impl Inner {
    /// Rule 2: an announcement arrived.
    fn heard(&self, payload: &Bytes) {
        let ctx =
            DecodeCtx { table: &self.table, module_hash: self.cfg.module_hash, limits: self.cfg.limits };
        let Ok(env) = wire::decode(&ctx, payload) else { return };
        let Signal::Announce(a) = &env.signal else { return };
        if env.from == self.me {
            let delay = (self.started.elapsed().as_millis() as u64).saturating_sub(a.uptime_ms);
            self.echo_delay_ms.store(delay, std::sync::atomic::Ordering::Relaxed);
            self.echoed.store(true, std::sync::atomic::Ordering::Release);
            if delay > self.cfg.heartbeat.as_millis() as u64 {
                tracing::info!(delay_ms = delay, "this node's announcement came back late");
            }
        } else if env.from.name != self.me.name {
            self.heard.lock().insert(env.from.name.clone(), (env.from.inc, Instant::now()));
        }
    }

    /// Rules 1, 3 and 4: one heartbeat of the pulse, due at `due`.
    async fn beat(&self, due: tokio::time::Instant) {
        let late = due.elapsed();
        if late > self.cfg.heartbeat {
            tracing::info!(late_ms = late.as_millis() as u64, "this node's heartbeat ran late");
        }
        if !self.left.load(std::sync::atomic::Ordering::Acquire) {
            let payload = self.announcement();
            let msg = Outgoing { subject: self.announce_subject.clone(), reply: None, payload };
            if let Err(e) = self.transport.publish(msg).await {
                tracing::warn!(error = %e, "could not announce this node");
            }
        }
        self.end_silent(due);
    }

    /// Rules 3 and 4: ends the session of every live peer heard from neither by the pulse nor
    /// by the driver for `down_after`, unless this heartbeat (due at `due`) is more than a
    /// period late by then. The node's locks are waited for half a period at most: senders
    /// that hold them back to back must not keep the pulse from announcing this node (rule 5);
    /// the next heartbeat judges instead.
    fn end_silent(&self, due: tokio::time::Instant) {
        let wait = self.cfg.heartbeat / 2;
        let Some(_order) = self.inbound.try_lock_for(wait) else { return };
        let mut fire = Vec::new();
        {
            let Some(mut st) = self.state.try_lock_for(wait) else { return };
            if due.elapsed() > self.cfg.heartbeat {
                // This node was held up (rule 4): what its peers sent may not be read yet.
                return;
            }
            let st = &mut *st;
            let mut silent = Vec::new();
            for p in st.peers.values_mut().filter(|p| p.alive) {
                let pulse =
                    self.heard.lock().get(&p.id.name).filter(|(inc, _)| *inc == p.id.inc).map(|h| h.1);
                let last = pulse.map_or(p.last_nats, |t| t.max(p.last_nats));
                if last.elapsed() > self.cfg.down_after {
                    tracing::warn!(
                        peer = %p.id,
                        silent_ms = last.elapsed().as_millis() as u64,
                        heard_ms = p.last_heard.elapsed().as_millis() as u64,
                        echo_ms = self.echo_delay_ms(),
                        "nothing heard from the peer through NATS for longer than down_after"
                    );
                    let mut ended = Vec::new();
                    self.end_session(p, EndCause::Silence, &mut ended, &mut fire);
                    silent.push(p.id.name.clone());
                }
            }
            for name in silent {
                super::session::fail_spawns(st, &name, &mut fire);
            }
        }
        self.fire(fire);
    }
}
