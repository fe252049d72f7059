//! Model checks of the select protocol: every interleaving (up to a preemption bound) of
//! parking, claiming, cancelling and closing.
use super::*;
use crate::sync::AtomicBool;
use std::future::poll_fn;
use std::task::Poll;

/// Explores every interleaving of the model (loom's DPOR), or those with at most `bound`
/// preemptions. Only the largest model is bounded: exhaustively it explores 2.1 million
/// interleavings in about two minutes (and passes); with a bound of 4, 120 thousand in
/// seconds.
#[allow(clippy::print_stderr, reason = "a test harness: it reports how many interleavings it explored")]
fn model(bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    let mut b = loom::model::Builder::new();
    // `LOOM_MAX_PREEMPTIONS` overrides the bound.
    if b.preemption_bound.is_none() {
        b.preemption_bound = bound;
    }
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("explored {runs} interleavings");
    assert!(runs > 1, "a model with one interleaving checks nothing");
}

/// Runs a select to completion, parking the loom thread while it is pending. No model here
/// ever has every actor parked at once, so parking must never report idle.
fn block(cases: Vec<Case>, active: &AtomicUsize) -> Fired {
    let mut sel = Select::new(cases, true);
    loom::future::block_on(poll_fn(|cx| {
        let (p, idle) = sel.poll(cx, active);
        assert!(!idle, "an actor that could wake this one is still active");
        p
    }))
}

/// An actor thread exits. In the models that use this, someone else is always active when
/// an actor exits (the main thread, or a parked party the exiting one has woken and so
/// counted back in), so the exit must not bring `active` to zero.
fn exit(active: &AtomicUsize) {
    assert!(active.fetch_sub(1, Ordering::SeqCst) > 1, "a woken actor was left counted out");
}

/// Polls once (the driver's first poll), without blocking.
fn poll_once(sel: &mut Select, active: &AtomicUsize) -> Poll<Fired> {
    sel.poll(&mut Context::from_waker(Waker::noop()), active).0
}

/// A rendezvous send and receive meet exactly once, whoever parks first.
#[test]
fn loom_rendezvous_send_meets_recv() {
    model(None, || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let t = {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let f = block(vec![Case::send(&c, Value::Int(7))], &active);
                exit(&active);
                f
            })
        };
        let got = block(vec![Case::recv(&c)], &active);
        assert_eq!(got, Fired::Received { case: 0, value: Value::Int(7) });
        assert_eq!(t.join().unwrap(), Fired::Sent { case: 0 });
        assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances");
        assert_eq!(c.parked(), (0, 0));
    });
}

/// A select receiving from two channels against a sender on each: exactly one case commits,
/// and the other sender's value is still there for a later receive (on a rendezvous channel
/// its sender is still parked; on a buffered one the value is in the buffer).
#[test]
fn loom_select_over_two_channels_commits_one_case() {
    model(Some(4), || {
        let a = Channel::new(1, 0);
        let b = Channel::new(2, 1);
        let active = Arc::new(AtomicUsize::new(3));
        let sender = |c: &Arc<Channel>, v: i64| {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let f = block(vec![Case::send(&c, Value::Int(v))], &active);
                exit(&active);
                f
            })
        };
        let (t1, t2) = (sender(&a, 1), sender(&b, 2));
        let (first, other) = match block(vec![Case::recv(&a), Case::recv(&b)], &active) {
            Fired::Received { case: 0, value } => (value, &b),
            Fired::Received { case: 1, value } => (value, &a),
            f => panic!("unexpected {f:?}"),
        };
        let second = match block(vec![Case::recv(other)], &active) {
            Fired::Received { value, .. } => value,
            f => panic!("unexpected {f:?}"),
        };
        let mut got = [first, second];
        got.sort();
        assert_eq!(got, [Value::Int(1), Value::Int(2)], "each value exactly once");
        assert_eq!(t1.join().unwrap(), Fired::Sent { case: 0 });
        assert_eq!(t2.join().unwrap(), Fired::Sent { case: 0 });
        assert_eq!(active.load(Ordering::SeqCst), 1);
        assert_eq!((a.parked(), b.parked(), b.len()), ((0, 0), (0, 0), 0));
    });
}

/// A parked send of 5 on a rendezvous channel, cancelled (by `park_and_cancel`) while a
/// receiver tries to take it: either the cancel wins and nothing was transferred, or the
/// receiver got the value and the cancel reports the send as done. Never both, never neither.
fn cancel_races_a_committing_receiver(
    park_and_cancel: impl Fn(&Arc<Channel>, &AtomicUsize) -> Result<(), Fired> + Sync + Send + 'static,
) {
    model(None, move || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let t = {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let r = c.try_recv(&active);
                active.fetch_sub(1, Ordering::SeqCst);
                r
            })
        };
        let out = park_and_cancel(&c, &active);
        match (out, t.join().unwrap()) {
            (Ok(()), TryRecv::Empty) | (Err(Fired::Sent { case: 0 }), TryRecv::Value(Value::Int(5))) => {}
            other => panic!("inconsistent outcome {other:?}"),
        }
        assert_eq!(active.load(Ordering::SeqCst), 1);
        assert_eq!(c.parked(), (0, 0));
    });
}

/// The race above for a select.
#[test]
fn loom_cancel_races_a_committing_receiver() {
    cancel_races_a_committing_receiver(|c, active| {
        let mut s = Select::new(vec![Case::send(c, Value::Int(5))], true);
        match poll_once(&mut s, active) {
            Poll::Pending => s.cancel(active),
            Poll::Ready(f) => panic!("no receiver ever parks, yet {f:?}"),
        }
    });
}

/// Runs a one-case wait to completion as the actor's `ChanWait` does: the first poll
/// completes at once or parks, counting out under the channel lock
/// (`complete_or_park_counted`); later polls take the claim or count out again under that
/// lock (`OneWait::poll`). No model here has every actor parked at once, so it must never
/// report idle.
fn block_one(c: &Channel, send: Option<Value>, active: &AtomicUsize) -> Fired {
    let counted = Arc::new(AtomicBool::new(false));
    let mut parked: Option<OneWait> = None;
    loom::future::block_on(poll_fn(|cx| {
        let idle = match &mut parked {
            Some(w) => match w.poll(c, cx, active) {
                Ok(f) => return Poll::Ready(f),
                Err(idle) => idle,
            },
            None => {
                let flag = counted.clone();
                let counted = move || -> Arc<dyn CountedFlag> { flag };
                match c.complete_or_park_counted(
                    send.as_ref(),
                    None,
                    false,
                    &mut None,
                    Some(cx.waker()),
                    counted,
                    active,
                ) {
                    Ok(f) => return Poll::Ready(f),
                    Err((w, idle)) => {
                        parked = Some(w);
                        idle
                    }
                }
            }
        };
        assert!(!idle, "an actor that could wake this one is still active");
        Poll::Pending
    }))
}

/// A one-case wait (`csend`/`crecv`) meets a select sender on another thread exactly once,
/// whoever parks first, and the accounting balances.
#[test]
fn loom_one_wait_meets_a_sender() {
    model(None, || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let t = {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let mut sel = Select::new(vec![Case::send(&c, Value::Int(7))], true);
                let f = loom::future::block_on(poll_fn(|cx| sel.poll(cx, &active).0));
                active.fetch_sub(1, Ordering::SeqCst);
                f
            })
        };
        assert_eq!(block_one(&c, None, &active), Fired::Received { case: 0, value: Value::Int(7) });
        assert_eq!(t.join().unwrap(), Fired::Sent { case: 0 });
        assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances: each counted in once");
        assert_eq!(c.parked(), (0, 0));
    });
}

/// Runs a `csend`/`crecv` as the host parks it inside the step (`complete_or_park_counted`):
/// one lock both tries and, finding nothing, counts the actor out before its entry becomes
/// visible. A new waiter gets the task's waker there; a reused one (`spare`) keeps the one it
/// has, which its claimer clones, so the owner gives it nothing after parking. A claimer that
/// comes before the owner returns `Pending` has woken it already. The claimer counts it back
/// in. Once woken, the owner runs its instruction again, which takes the outcome
/// (`take_fired`) and keeps the waiter in `spare` for its next park to reuse, as the runtime
/// does (`waits::try_or_park`). The actor never counts out when it completes at once, so,
/// unlike `block_one`, this must never report idle while a counterpart runs. An async fn: an
/// actor's waits run in one task, whose waker a reused waiter keeps (`block_on` per wait would
/// give each wait a waker of its own).
async fn counted_wait(
    c: &Channel,
    send: Option<Value>,
    active: &AtomicUsize,
    counted: &Arc<AtomicBool>,
    spare: &mut Option<OneWait>,
) -> Fired {
    let mut parked: Option<OneWait> = None;
    poll_fn(|cx| {
        if let Some(w) = &mut parked {
            let Some(f) = w.take_fired() else { return Poll::Pending };
            *spare = parked.take();
            assert!(!counted.load(Ordering::SeqCst), "the claimer counted it back in");
            return Poll::Ready(f);
        }
        let flag = counted.clone();
        let kept = if spare.is_none() { Some(cx.waker().clone()) } else { None };
        match c.complete_or_park_counted(
            send.as_ref(),
            None,
            false,
            spare,
            kept.as_ref(),
            move || -> Arc<dyn CountedFlag> { flag },
            active,
        ) {
            Ok(f) => {
                assert!(!counted.load(Ordering::SeqCst), "completing at once never counts out");
                Poll::Ready(f)
            }
            Err((w, idle)) => {
                assert!(!idle, "an actor that could wake this one is still active");
                parked = Some(w);
                Poll::Pending
            }
        }
    })
    .await
}

/// One `csend`/`crecv` parked in the step, with a fresh waiter.
fn block_counted_once(c: &Channel, send: Option<Value>, active: &AtomicUsize) -> Fired {
    loom::future::block_on(counted_wait(c, send, active, &Arc::new(AtomicBool::new(false)), &mut None))
}

/// Two actors that both park inside the step (`csend` against `crecv`, the host's
/// `chan_try_or_park`) meet exactly once whoever comes first, the one that parked is counted
/// back in by the other, and `active` never reads zero on the way.
#[test]
fn loom_counted_parks_meet_and_balance() {
    model(None, || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let t = {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let f = block_counted_once(&c, Some(Value::Int(7)), &active);
                exit(&active);
                f
            })
        };
        assert_eq!(block_counted_once(&c, None, &active), Fired::Received { case: 0, value: Value::Int(7) });
        assert_eq!(t.join().unwrap(), Fired::Sent { case: 0 });
        assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances: each counted in once");
        assert_eq!(c.parked(), (0, 0));
    });
}

/// Two rounds of the race above with each actor reusing its waiter (`spare`) for its second
/// park, as the runtime does: a waiter is reused only once nothing else holds it
/// (its strong count is one), so a claimer that has not yet dropped its entry of the first round can
/// neither see the second round's wait as its own nor miss it; both values arrive once, in
/// order, and the accounting balances.
#[test]
fn loom_counted_parks_reuse_their_waiters() {
    model(Some(3), || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let t = {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let (counted, mut spare) = (Arc::new(AtomicBool::new(false)), None);
                let ab = loom::future::block_on(async {
                    let a = counted_wait(&c, Some(Value::Int(1)), &active, &counted, &mut spare).await;
                    (a, counted_wait(&c, Some(Value::Int(2)), &active, &counted, &mut spare).await)
                });
                exit(&active);
                ab
            })
        };
        let (counted, mut spare) = (Arc::new(AtomicBool::new(false)), None);
        let (a, b) = loom::future::block_on(async {
            let a = counted_wait(&c, None, &active, &counted, &mut spare).await;
            (a, counted_wait(&c, None, &active, &counted, &mut spare).await)
        });
        assert_eq!(a, Fired::Received { case: 0, value: Value::Int(1) });
        assert_eq!(b, Fired::Received { case: 0, value: Value::Int(2) });
        assert_eq!(t.join().unwrap(), (Fired::Sent { case: 0 }, Fired::Sent { case: 0 }));
        assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances: each counted in once");
        assert_eq!(c.parked(), (0, 0));
    });
}

/// The race above for a one-case wait (`OneWait`).
#[test]
fn loom_one_wait_cancel_races_a_committing_receiver() {
    cancel_races_a_committing_receiver(|c, active| {
        let counted: Arc<dyn CountedFlag> = Arc::new(AtomicBool::new(false));
        match c.complete_or_park(Some(&Value::Int(5)), false, Waker::noop(), counted, active) {
            Err(w) => w.cancel(c, Some(active)),
            Ok(f) => panic!("no receiver ever parks, yet {f:?}"),
        }
    });
}

/// How a woken one-case wait polls again: the channel, `active`, the owner's flag.
type PollAgain = fn(&mut OneWait, &Channel, &AtomicUsize, &AtomicBool) -> Result<Fired, bool>;

/// Issue 18 point 6.3, the window of a woken `ChanWait`: a receive parked in the step
/// (counted out) is woken by a message, which counts it in as a mailbox delivery does, and
/// polls again (`poll`) while a sender commits to it and then parks itself (counts out).
/// Whatever the order, once both are done an owner whose wait has committed (it is runnable,
/// woken by its claimer) must be counted in: `active` must not be left zero with it runnable,
/// which is what the deadlock detector reads.
fn woken_one_wait_races_a_claim(poll: PollAgain) {
    model(None, move || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let counted = Arc::new(AtomicBool::new(false));
        let flag = counted.clone();
        let mut w = match c.complete_or_park_counted(
            None,
            None,
            true,
            &mut None,
            Some(Waker::noop()),
            move || -> Arc<dyn CountedFlag> { flag },
            &active,
        ) {
            Err((w, idle)) => {
                assert!(!idle);
                w
            }
            Ok(f) => panic!("nobody sends yet, yet {f:?}"),
        };
        let t = {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                assert_eq!(c.try_send(Value::Int(7), &active), Ok(()), "the receiver is parked");
                // The sender parks on something else for good.
                active.fetch_sub(1, Ordering::SeqCst);
            })
        };
        // A message wakes the receiver: the delivery counts it in.
        count_in(&counted, &active);
        let polled = poll(&mut w, &c, &active, &counted);
        t.join().unwrap();
        let got = match polled {
            Ok(f) => f,
            // Pending: its claimer has woken it since, and its next poll takes the outcome.
            Err(_) => {
                assert_eq!(active.load(Ordering::SeqCst), 1, "a woken receiver was left counted out");
                poll(&mut w, &c, &active, &counted).expect("committed")
            }
        };
        assert_eq!(got, Fired::Received { case: 0, value: Value::Int(7) });
        assert_eq!(active.load(Ordering::SeqCst), 1, "only the receiver is counted in");
    });
}

/// The race above with `OneWait::poll`, which looks for the claim and counts out in one step
/// under the channel's lock.
#[test]
fn loom_a_woken_one_wait_is_never_left_counted_out() {
    woken_one_wait_races_a_claim(|w, c, active, _| w.poll(c, &Context::from_waker(Waker::noop()), active));
}

/// The race above with `ChanWait`'s poll before the fix: the look for the claim, then the
/// count-out, apart. The model finds the interleaving that leaves the woken receiver counted
/// out (which shows that the model above can see it).
#[test]
#[should_panic(expected = "a woken receiver was left counted out")]
fn loom_looking_then_counting_out_leaves_a_woken_wait_counted_out() {
    woken_one_wait_races_a_claim(|w, _, active, counted| {
        if let Some(f) = w.take_fired() {
            count_in(counted, active);
            return Ok(f);
        }
        Err(!counted.swap(true, Ordering::SeqCst) && active.fetch_sub(1, Ordering::SeqCst) == 1)
    });
}

/// A parked select polled again with a waker that would not wake its task (so it replaces
/// the one it has, under its channel locks) while a sender commits to it: the sender's value
/// arrives once and nothing reads the waker while it is replaced (loom checks the cell).
#[test]
fn loom_a_select_replacing_its_waker_races_a_claim() {
    model(None, || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(2));
        let mut sel = Select::new(vec![Case::recv(&c)], true);
        assert!(poll_once(&mut sel, &active).is_pending());
        let t = {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let r = c.try_send(Value::Int(3), &active);
                exit(&active);
                r
            })
        };
        // `block_on`'s waker is not the no-op one the select parked with.
        let got = loom::future::block_on(poll_fn(|cx| sel.poll(cx, &active).0));
        assert_eq!(got, Fired::Received { case: 0, value: Value::Int(3) });
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(active.load(Ordering::SeqCst), 1);
        assert_eq!(c.parked(), (0, 0));
    });
}

/// Cancelling a select parked on two channels while a sender tries each: at most one sender
/// succeeds, and it succeeds exactly when the cancel reports its value.
#[test]
fn loom_cancel_races_two_senders_on_a_select() {
    model(None, || {
        let a = Channel::new(1, 0);
        let b = Channel::new(2, 0);
        let active = Arc::new(AtomicUsize::new(3));
        let sender = |c: &Arc<Channel>, v: i64| {
            let (c, active) = (c.clone(), active.clone());
            loom::thread::spawn(move || {
                let r = c.try_send(Value::Int(v), &active);
                active.fetch_sub(1, Ordering::SeqCst);
                r.is_ok()
            })
        };
        let (t1, t2) = (sender(&a, 1), sender(&b, 2));
        let mut s = Select::new(vec![Case::recv(&a), Case::recv(&b)], true);
        assert!(poll_once(&mut s, &active).is_pending(), "no sender ever parks");
        let out = s.cancel(&active);
        let sent = [t1.join().unwrap(), t2.join().unwrap()];
        match out {
            Ok(()) => assert_eq!(sent, [false, false], "cancelled, so nothing may have been taken"),
            Err(Fired::Received { case, value }) => {
                assert_eq!(value, Value::Int(case as i64 + 1));
                let mut expect = [false, false];
                expect[case] = true;
                assert_eq!(sent, expect, "exactly the reported sender succeeded");
            }
            Err(f) => panic!("unexpected {f:?}"),
        }
        assert_eq!(active.load(Ordering::SeqCst), 1);
        assert_eq!((a.parked(), b.parked()), ((0, 0), (0, 0)));
    });
}

/// Close racing a receiver and a sender on one rendezvous channel: either they met before the
/// close, or both see the close (the receiver "closed", the sender the error); every party
/// finishes and is counted back in.
#[test]
fn loom_close_races_a_parked_receiver_and_sender() {
    model(None, || {
        let c = Channel::new(1, 0);
        let active = Arc::new(AtomicUsize::new(3));
        let party = |case: Case| {
            let active = active.clone();
            loom::thread::spawn(move || {
                let f = block(vec![case], &active);
                exit(&active);
                f
            })
        };
        let r = party(Case::recv(&c));
        let s = party(Case::send(&c, Value::Int(5)));
        c.close(&active).unwrap();
        match (r.join().unwrap(), s.join().unwrap()) {
            (Fired::Received { value: Value::Int(5), .. }, Fired::Sent { .. })
            | (Fired::RecvClosed { .. }, Fired::SendClosed { .. }) => {}
            other => panic!("inconsistent outcome {other:?}"),
        }
        assert_eq!(active.load(Ordering::SeqCst), 1);
        assert_eq!(c.parked(), (0, 0));
    });
}

/// Orphan detection, step 2 (`chan::orphans`): the detector disarms after a look that found no
/// orphanable wait, then looks once more, while an actor parks such a wait and arms it. In every
/// interleaving the wait is seen by the second look or the detector stays armed: an orphanable
/// wait is never left with nobody ticking.
#[test]
fn loom_arming_the_orphan_detector_is_never_lost() {
    use super::reach::Orphans;
    model(None, || {
        let orphans = Arc::new(Orphans::default());
        // An actor's `waiting`, behind its mailbox lock.
        let waiting = Arc::new(Mutex::new(false));
        // The detector is ticking when the actor comes to park.
        orphans.arm();
        let actor = {
            let (orphans, waiting) = (orphans.clone(), waiting.clone());
            loom::thread::spawn(move || {
                *lock(&waiting) = true;
                orphans.arm();
            })
        };
        // The detector's look, and if it saw nothing, disarm and look again.
        if !*lock(&waiting) {
            orphans.disarm();
            if *lock(&waiting) {
                orphans.arm();
            }
        }
        actor.join().unwrap();
        assert!(orphans.armed(), "a parked orphanable wait with the detector disarmed");
    });
}

/// An actor in the quiet-wait models: its mailbox, whose "counted out" flag its channel
/// waiter shares (as an actor's cell does).
struct Actor(crate::mailbox::Mailbox);

impl CountedFlag for Actor {
    fn counted(&self) -> &AtomicBool {
        self.0.counted()
    }
}

/// A `crecv` on `c` (channel id 1) as the runtime runs it: `waits::try_or_park` parks it on
/// the channel and, with no signal pending, quietly in the mailbox (`Mailbox::park_chan`);
/// once woken it runs again (`waits::rerun`): the claimer's outcome ends it (clearing the
/// mailbox's record with a store), or it is cancelled and tried again. With a signal pending
/// it is awaited as `waits::ChanWait` is, which takes the signal from the mailbox. Returns the
/// case that committed and the signal its wait took, if any. An async fn, as `counted_wait`.
async fn quiet_recv(
    c: &Channel,
    a: &Arc<Actor>,
    active: &AtomicUsize,
    spare: &mut Option<OneWait>,
) -> (Option<Fired>, Option<crate::mailbox::Signal>) {
    use crate::mailbox::{ChanIds, Wait, WaitSpec, Woken};
    use vm_core::SelectShape;
    enum At {
        Try,
        Quiet(OneWait),
        Loud(OneWait),
    }
    let mb = &a.0;
    let mut at = At::Try;
    poll_fn(|cx| {
        loop {
            match std::mem::replace(&mut at, At::Try) {
                At::Try => {
                    mb.keep_waker(cx.waker());
                    let had_spare = spare.is_some();
                    let kept = if had_spare { None } else { Some(cx.waker().clone()) };
                    let flag = a.clone();
                    let counted = move || -> Arc<dyn CountedFlag> { flag };
                    match c.complete_or_park_counted(None, None, true, spare, kept.as_ref(), counted, active)
                    {
                        Ok(f) => return Poll::Ready((Some(f), None)),
                        // Parking may report idle here: a signaller that has exited leaves a
                        // signal, which the wait then takes (as in the runtime).
                        Err((w, _idle)) => {
                            if mb.park_chan(SelectShape::Recv, 1) {
                                at = At::Quiet(w);
                                return Poll::Pending;
                            }
                            at = At::Loud(w);
                        }
                    }
                }
                At::Quiet(mut w) => match w.take_fired() {
                    Some(f) => {
                        *spare = Some(w);
                        mb.end_chan();
                        return Poll::Ready((Some(f), None));
                    }
                    None => {
                        let committed = w.cancel(c, Some(active));
                        mb.cancel_wait(active);
                        if let Err(f) = committed {
                            return Poll::Ready((Some(f), None));
                        }
                    }
                },
                At::Loud(mut w) => {
                    // Idle for a moment is allowed: the signaller counted the actor in and
                    // may have exited, and the mailbox, looked at next, has its signal.
                    let idle = match w.poll(c, cx, active) {
                        Ok(f) => {
                            mb.cancel_wait(active);
                            return Poll::Ready((Some(f), None));
                        }
                        Err(idle) => idle,
                    };
                    let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: true };
                    let describe =
                        || Wait::Chan { shape: SelectShape::Recv, chans: ChanIds::One(1), orphanable: true };
                    if let (Poll::Ready(Some(Woken::Signal(sig))), _) =
                        mb.poll_wait(cx, &spec, false, describe, active)
                    {
                        let committed = w.cancel(c, Some(active)).err();
                        mb.cancel_wait(active);
                        return Poll::Ready((committed, Some(sig)));
                    }
                    assert!(!idle, "parked with nobody left to wake it");
                    at = At::Loud(w);
                    return Poll::Pending;
                }
            }
        }
    })
    .await
}

/// Sends an interrupt (mode 1) to `a` and wakes it if the mailbox says so, as `Vm::signal` does.
fn interrupt(a: &Actor, active: &AtomicUsize) {
    let exc = vm_core::Exception::new(vm_core::atoms::INTERRUPT, "poke");
    if let crate::mailbox::Delivery::Wake(w) =
        a.0.signal(crate::mailbox::Signal::Interrupt { exc, mode: 1 }, active)
    {
        w.wake();
    }
}

/// A signal racing a `crecv` that parks quietly (`mailbox`'s "A quiet channel wait"): the
/// wait sees the signal or the signaller sees the wait, so the actor is never left asleep with
/// the signal pending; its wait ends with the signal, the channel keeps no entry, the mailbox
/// no wait, and the actor is counted back in.
#[test]
fn loom_a_signal_reaches_a_quiet_channel_wait() {
    model(None, || {
        let c = Channel::new(1, 0);
        let a = Arc::new(Actor(crate::mailbox::Mailbox::default()));
        let active = Arc::new(AtomicUsize::new(2));
        let t = {
            let (a, active) = (a.clone(), active.clone());
            loom::thread::spawn(move || {
                interrupt(&a, &active);
                // Not `exit`: a signal queued just before the wait records itself is taken
                // by the wait (step 1), and the actor, counted out on its channel, counts
                // itself back in only then.
                active.fetch_sub(1, Ordering::SeqCst);
            })
        };
        let (fired, sig) = loom::future::block_on(quiet_recv(&c, &a, &active, &mut None));
        t.join().unwrap();
        assert_eq!(fired, None, "nobody sends");
        assert!(matches!(sig, Some(crate::mailbox::Signal::Interrupt { mode: 1, .. })), "{sig:?}");
        assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances");
        assert_eq!(c.parked(), (0, 0));
        assert_eq!(a.0.with(|i| a.0.waiting(i)), None, "the wait is over");
    });
}
