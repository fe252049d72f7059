//! The order in which a node's envelopes reach the transport.
//!
//! Envelopes to a peer are numbered under the node's state lock, and must reach the transport
//! in that order (the receiver takes envelope `n` only right after `n - 1`). Two ways lead out:
//! straight to the transport on the sender's thread (`try_take`: the NATS client's queue has
//! room), or through the publisher task, which may wait. The protocol:
//!
//! 1. `queued` counts envelopes handed to the publisher and not yet taken by the transport.
//! 2. A sender, holding the state lock, tries the direct way only while `queued` is 0; if the
//!    transport will not take the envelope at once, or `queued` is not 0, it increments `queued`
//!    and then pushes the envelope to the publisher's queue.
//! 3. The publisher decrements `queued` only after the transport has taken an envelope.
//!
//! So a direct hand-over happens only when every queued envelope is already in the transport,
//! and a queued one only behind the others: the transport sees envelopes in numbering order.
//! Model-checked with loom (`RUSTFLAGS="--cfg vm_loom" cargo test -p vm-dist --release --lib
//! loom`).

#[cfg(not(vm_loom))]
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(vm_loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};

/// Where queued envelopes go: the publisher task's channel.
pub(crate) trait Queue<M> {
    /// Appends `m`.
    fn push(&self, m: M);
}

impl<M> Queue<M> for tokio::sync::mpsc::UnboundedSender<M> {
    fn push(&self, m: M) {
        // The publisher lives as long as the node; after it ends nothing is published anyway.
        let _ = self.send(m);
    }
}

/// The counter of point 1 and the publisher's queue.
pub(crate) struct Outbox<Q> {
    queued: AtomicUsize,
    queue: Q,
}

impl<Q> Outbox<Q> {
    pub(crate) fn new(queue: Q) -> Outbox<Q> {
        Outbox { queued: AtomicUsize::new(0), queue }
    }

    /// Point 2: hands `m` to `try_take` (which gives it back if the transport cannot take it
    /// now) or to the publisher. Callers that need order hold one lock across their calls.
    pub(crate) fn emit<M>(&self, m: M, try_take: impl FnOnce(M) -> Option<M>)
    where
        Q: Queue<M>,
    {
        let m = if self.queued.load(Ordering::SeqCst) == 0 {
            match try_take(m) {
                None => return,
                Some(m) => m,
            }
        } else {
            m
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.queue.push(m);
    }

    /// Point 3: the publisher's transport has taken one queued envelope.
    pub(crate) fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether the publisher still holds envelopes.
    pub(crate) fn pending(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
    }
}

#[cfg(all(test, vm_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::{Arc, Mutex};
    use std::collections::VecDeque;

    struct LoomQueue(Mutex<VecDeque<u32>>);

    impl Queue<u32> for LoomQueue {
        fn push(&self, m: u32) {
            self.0.lock().unwrap().push_back(m);
        }
    }

    /// Two senders number and emit one envelope each under a shared lock, while the
    /// transport's room comes on a third thread and the publisher forwards queued envelopes.
    /// The transport must see 1 then 2: had the second sender gone straight to the transport
    /// while the first envelope still waited in the queue (or had the publisher counted an
    /// envelope out before the transport took it), it could see 2 then 1.
    #[test]
    fn loom_the_transport_sees_envelopes_in_numbering_order() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(2);
        model.check(|| {
            let outbox = Arc::new(Outbox::new(LoomQueue(Mutex::new(VecDeque::new()))));
            let numbering = Arc::new(Mutex::new(0u32));
            let transport = Arc::new(Mutex::new(Vec::new()));
            let room = Arc::new(AtomicBool::new(false));
            let sender = || {
                let (outbox, numbering, transport, room) =
                    (outbox.clone(), numbering.clone(), transport.clone(), room.clone());
                loom::thread::spawn(move || {
                    let mut n = numbering.lock().unwrap();
                    *n += 1;
                    outbox.emit(*n, |m| {
                        if room.load(Ordering::SeqCst) {
                            transport.lock().unwrap().push(m);
                            None
                        } else {
                            Some(m)
                        }
                    });
                })
            };
            let s1 = sender();
            let s2 = sender();
            let toggler = {
                let room = room.clone();
                loom::thread::spawn(move || room.store(true, Ordering::SeqCst))
            };
            // The publisher forwards the queue's head, beside the senders for a bounded number
            // of rounds (loom needs bounded loops), then for whatever is left.
            let forward = {
                let (outbox, transport) = (outbox.clone(), transport.clone());
                move || {
                    let next = outbox.queue.0.lock().unwrap().pop_front();
                    let Some(m) = next else { return false };
                    transport.lock().unwrap().push(m);
                    outbox.taken();
                    true
                }
            };
            let publisher = {
                let forward = forward.clone();
                loom::thread::spawn(move || {
                    for _ in 0..2 {
                        if !forward() {
                            loom::thread::yield_now();
                        }
                    }
                })
            };
            s1.join().unwrap();
            s2.join().unwrap();
            toggler.join().unwrap();
            publisher.join().unwrap();
            while forward() {}
            assert_eq!(*transport.lock().unwrap(), vec![1, 2]);
            assert!(!outbox.pending());
        });
    }
}
