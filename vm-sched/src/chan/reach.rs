//! Reachability of channels, for orphan detection (`chan::orphans`): which actors can reach
//! which channels, and the detector's bookkeeping that the VM shares ([`Orphans`]). Plain data
//! in, answers out: the census that gathers the data is in `orphans`.
//!
//! An actor *reaches* a channel when the channel's handle is among its roots — its registers,
//! the exception it is about to raise or last caught, the messages and signals in its mailbox —
//! or nested in a tuple, list, map or closure it reaches, or in the buffer of a channel it
//! reaches (it could receive the value). Values are shared, not copied, so one value can be
//! reached by several actors; each actor's walk visits a shared value once.

use super::Channel;
use crate::cell::ActorCell;
use crate::mailbox::{ChanIds, Signal, Wait, WaitId};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, lock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use vm_core::{ActorState, Value};

/// The holder that stands for the containers' published services in a census (no actor has
/// pid 0: pids start at 1).
pub(crate) const PUBLISHED: u64 = 0;

/// A wait that only its channels can end, as found in an actor's `waiting`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChanWaiter {
    pub(crate) pid: u64,
    pub(crate) wait: WaitId,
    pub(crate) chans: ChanIds,
}

/// Every live actor's orphanable channel wait now (see `Wait::Chan`), in pid order.
pub(crate) fn orphanable_waits(cells: &[Arc<ActorCell>]) -> Vec<ChanWaiter> {
    cells
        .iter()
        .filter_map(|c| {
            let chans = c.mailbox.with(|i| match c.mailbox.waiting(i) {
                Some(Wait::Chan { chans, orphanable: true, .. }) => Some(chans),
                _ => None,
            })?;
            // Recorded before the wait parked, under the lock taken above: the current wait.
            Some(ChanWaiter { pid: c.pid.0, wait: c.wait_id(), chans })
        })
        .collect()
}

/// For each of the `targets` channels, the actors that reach it (each once, in the order
/// walked), and the channel itself if some actor reached it.
#[derive(Default)]
pub(crate) struct Reach {
    pub(crate) holders: HashMap<u64, Vec<u64>>,
    pub(crate) chans: HashMap<u64, Arc<Channel>>,
}

impl Reach {
    /// Walks everything actor `pid` reaches from `roots`, recording it as a holder of each
    /// target channel it meets.
    pub(crate) fn walk<'a>(
        &mut self,
        pid: u64,
        roots: impl IntoIterator<Item = &'a Value>,
        targets: &HashSet<u64>,
    ) {
        // Shared values (by address) and channels (by id) this actor has already walked.
        let mut seen: HashSet<usize> = HashSet::new();
        let mut seen_chans: HashSet<u64> = HashSet::new();
        let mut stack: Vec<Value> = Vec::new();
        let mut push = |v: &Value, stack: &mut Vec<Value>| match v {
            Value::Tuple(t) | Value::List(t) if seen.insert(Arc::as_ptr(t).addr()) => {
                stack.extend(t.iter().filter(|x| may_hold_channels(x)).cloned());
            }
            Value::Map(m) if seen.insert(Arc::as_ptr(m).addr()) => {
                for (k, x) in m.iter() {
                    stack.extend([k, x].into_iter().filter(|x| may_hold_channels(x)).cloned());
                }
            }
            Value::Fun(c) if seen.insert(Arc::as_ptr(c).addr()) => {
                stack.extend(c.env.iter().filter(|x| may_hold_channels(x)).cloned());
            }
            Value::Chan(_) => stack.push(v.clone()),
            _ => {}
        };
        for v in roots {
            push(v, &mut stack);
            while let Some(v) = stack.pop() {
                let Value::Chan(h) = &v else {
                    push(&v, &mut stack);
                    continue;
                };
                if !seen_chans.insert(h.id()) {
                    continue;
                }
                let chan = h.payload().and_then(|p| p.clone().downcast::<Channel>().ok());
                if targets.contains(&h.id()) {
                    let holders = self.holders.entry(h.id()).or_default();
                    if holders.last() != Some(&pid) {
                        holders.push(pid);
                    }
                    if let Some(c) = &chan {
                        self.chans.entry(h.id()).or_insert_with(|| c.clone());
                    }
                }
                // Whoever holds a channel can receive what is buffered in it.
                if let Some(c) = chan {
                    for x in c.image().0 {
                        push(&x, &mut stack);
                    }
                }
            }
        }
    }

    /// Whether `w` can never end: each of its channels is reached by no actor but `w` itself,
    /// and is neither closed nor holding a value (a closed or buffered channel completes a
    /// receive, and a wait that runs again after the census finds that).
    pub(crate) fn hopeless(&self, w: &ChanWaiter) -> bool {
        w.chans.as_slice().iter().all(|id| {
            let alone = self.holders.get(id).is_none_or(|h| h.iter().all(|&p| p == w.pid));
            // A channel nobody reached at all (not even `w`) is unknown here: never judged.
            let quiet = self.chans.get(id).is_some_and(|c| !c.is_closed() && c.is_empty());
            alone && quiet
        })
    }
}

/// Whether a value can contain a channel handle (scalars, strings and bytes cannot).
fn may_hold_channels(v: &Value) -> bool {
    matches!(v, Value::Tuple(_) | Value::List(_) | Value::Map(_) | Value::Fun(_) | Value::Chan(_))
}

/// The values of an actor's state that can hold channels: its registers, the exception it is
/// about to raise, the last one it caught.
pub(crate) fn state_roots(st: &ActorState) -> impl Iterator<Item = &Value> {
    st.regs
        .iter()
        .chain(st.pending().map(|e| &e.msg))
        .chain(st.caught().and_then(|c| c.last.as_ref()).map(|(e, _, _)| &e.msg))
}

/// The values of a pending signal (an exit reason or an exception's message).
pub(crate) fn signal_roots(s: &Signal) -> Option<&Value> {
    match s {
        Signal::Exit { reason, .. } | Signal::Kill(reason) => Some(reason),
        Signal::Interrupt { exc, .. } | Signal::Orphaned { exc, .. } => Some(&exc.msg),
        Signal::Pause => None,
    }
}

/// The detector's state, shared with the VM (which arms it, counts exits into it and asks it
/// whether the quiet VM's waits have been judged). See `orphans` for the protocol.
#[derive(Default)]
pub(crate) struct Orphans {
    /// Set while some actor may be in an orphanable wait; the detector ticks only then.
    armed: AtomicBool,
    /// Set when the VM went quiet with waits not yet judged: census at once.
    poked: AtomicBool,
    /// Set when the VM is gone: the detector ends.
    closed: AtomicBool,
    pub(crate) wake: tokio::sync::Notify,
    /// How many actors have exited (an exit may leave a channel unreachable).
    pub(crate) exits: AtomicU64,
    /// How many censuses the detector has taken (for tests and the debug log).
    pub(crate) censuses: AtomicU64,
    pub(crate) book: Mutex<Book>,
}

/// What the last census found.
#[derive(Default)]
pub(crate) struct Book {
    /// The waits it judged and found reachable (by pid).
    pub(crate) judged: HashMap<u64, WaitId>,
    /// For the channels of those waits: which actors reach each.
    pub(crate) holders: HashMap<u64, Vec<u64>>,
    /// `Orphans::exits` when it paused the actors: an exit since may have let a channel go.
    pub(crate) exits: u64,
}

impl Orphans {
    /// An actor parked in an orphanable wait: make sure the detector is ticking. One load when
    /// it already is (the common case: the flag stays set while such waits come and go).
    pub(crate) fn arm(&self) {
        if !self.armed.load(Ordering::Relaxed) && !self.armed.swap(true, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Whether the detector should tick.
    pub(crate) fn armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    /// The detector found no orphanable wait: stop ticking (it looks once more afterwards, so
    /// an `arm` racing with this is not lost).
    pub(crate) fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// The VM is quiet with waits not yet judged: census now.
    pub(crate) fn poke(&self) {
        self.poked.store(true, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(crate) fn take_poke(&self) -> bool {
        self.poked.swap(false, Ordering::SeqCst)
    }

    /// The VM is gone: the detector ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether every one of `waits` was judged reachable by the last census, in this very wait,
    /// and no actor has exited since (so nothing is left for a census to find while they stay
    /// as they are: the quiet VM reports a deadlock only then).
    pub(crate) fn judged(&self, waits: &[ChanWaiter]) -> bool {
        let book = lock(&self.book);
        book.exits == self.exits.load(Ordering::SeqCst)
            && waits.iter().all(|w| book.judged.get(&w.pid) == Some(&w.wait))
    }

    /// Whether a census now could find none of `waits` hopeless that the last one did not
    /// judge already: each wait was judged reachable in this very wait, or each of its
    /// channels was found reached by some actor other than this waiter. A new wait on such a
    /// channel (a worker of a pool parking again after each job) is hopeless only if those
    /// holders let go since, by exiting (counted in `exits`, which brings a census) or by
    /// dropping their copies while running on (the re-check finds that).
    pub(crate) fn settled<'a>(&self, waits: impl IntoIterator<Item = &'a ChanWaiter>) -> bool {
        let book = lock(&self.book);
        waits.into_iter().all(|w| {
            book.judged.get(&w.pid) == Some(&w.wait)
                || w.chans
                    .as_slice()
                    .iter()
                    .all(|id| book.holders.get(id).is_some_and(|h| h.iter().any(|&p| p != w.pid)))
        })
    }

    /// The actors the last census found reaching channel `id`, if it looked at it.
    pub(crate) fn holders(&self, id: u64) -> Option<Vec<u64>> {
        lock(&self.book).holders.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_core::Handle;

    fn chan(id: u64, cap: usize) -> (Value, Arc<Channel>) {
        let c = Channel::new(id, cap);
        (Value::Chan(Handle::with_payload(id, c.clone())), c)
    }

    fn waiter(pid: u64, chans: &[u64]) -> ChanWaiter {
        ChanWaiter {
            pid,
            wait: WaitId { position: 0, reductions: 0 },
            chans: ChanIds::Many(Arc::new(chans.to_vec())),
        }
    }

    #[test]
    fn a_channel_reached_only_by_its_waiter_is_hopeless_however_many_copies_it_holds() {
        let (a, _) = chan(1, 0);
        let case = Value::tuple(vec![Value::atom("recv"), a.clone()]);
        // The waiter (pid 1) holds the channel, its case tuple, and a list sharing the tuple.
        let own = [a.clone(), case.clone(), Value::list(vec![case.clone()]), case];
        let targets = HashSet::from([1]);
        let mut r = Reach::default();
        r.walk(1, own.iter(), &targets);
        r.walk(2, [Value::Int(5)].iter(), &targets);
        assert!(r.hopeless(&waiter(1, &[1])));
        assert_eq!(r.holders[&1], vec![1], "one holder, however many paths");
    }

    #[test]
    fn any_other_holder_nested_anywhere_keeps_a_channel_reachable() {
        let (a, _) = chan(1, 0);
        let (outer, _) = chan(2, 4);
        let targets = HashSet::from([1]);
        // Another actor holds `a` inside a closure in a map, or in a buffered channel's buffer.
        let fun = Value::Fun(Arc::new(vm_core::Closure { func: 0, env: vec![a.clone()] }));
        let map = Value::Map(Arc::new([(Value::Int(1), fun)].into_iter().collect()));
        let mut r = Reach::default();
        r.walk(1, [a.clone()].iter(), &targets);
        r.walk(2, [map].iter(), &targets);
        assert!(!r.hopeless(&waiter(1, &[1])));
        let Value::Chan(h) = &outer else { unreachable!() };
        let o = h.payload().unwrap().clone().downcast::<Channel>().unwrap();
        o.try_send(a.clone(), &crate::sync::AtomicUsize::new(1)).unwrap();
        let mut r = Reach::default();
        r.walk(1, [a.clone()].iter(), &targets);
        r.walk(3, [outer].iter(), &targets);
        assert_eq!(r.holders[&1], vec![1, 3]);
        assert!(!r.hopeless(&waiter(1, &[1])));
    }

    #[test]
    fn a_new_wait_is_settled_only_on_channels_the_last_census_found_held_by_another() {
        let o = Orphans::default();
        let mut book = Book::default();
        book.holders.insert(1, vec![5, 7]);
        book.holders.insert(2, vec![7]);
        *lock(&o.book) = book;
        // Worker 7 parks again on channel 1, which actor 5 reached: nothing new to judge.
        assert!(o.settled([&waiter(7, &[1])]));
        // Channel 2 was reached by 7 alone, channel 3 never looked at: a census must judge.
        assert!(!o.settled([&waiter(7, &[2])]));
        assert!(!o.settled([&waiter(7, &[3])]));
        assert!(!o.settled([&waiter(7, &[1, 3])]), "every channel of a select counts");
        assert!(!o.judged(&[waiter(7, &[1])]), "the quiet VM's check stays per wait");
    }

    #[test]
    fn a_select_is_hopeless_only_when_every_channel_is_and_none_is_closed_or_buffered() {
        let (a, _) = chan(1, 0);
        let (b, bc) = chan(2, 1);
        let targets = HashSet::from([1, 2]);
        let mut r = Reach::default();
        r.walk(1, [a.clone(), b.clone()].iter(), &targets);
        r.walk(2, [b.clone()].iter(), &targets);
        assert!(!r.hopeless(&waiter(1, &[1, 2])), "b is still held by <2>");
        let mut r = Reach::default();
        r.walk(1, [a.clone(), b.clone()].iter(), &targets);
        assert!(r.hopeless(&waiter(1, &[1, 2])));
        bc.try_send(Value::Int(1), &crate::sync::AtomicUsize::new(1)).unwrap();
        assert!(!r.hopeless(&waiter(1, &[1, 2])), "a value is waiting in b");
        let (c, cc) = chan(3, 0);
        let mut r = Reach::default();
        r.walk(1, [c].iter(), &HashSet::from([3]));
        cc.close(&crate::sync::AtomicUsize::new(1)).unwrap();
        assert!(!r.hopeless(&waiter(1, &[3])), "a closed channel completes a receive");
    }
}
