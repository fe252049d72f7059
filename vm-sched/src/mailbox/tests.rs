use super::*;
use std::sync::Arc as StdArc;
use std::task::Wake;

struct Flag(std::sync::atomic::AtomicBool);
impl Wake for Flag {
    fn wake(self: StdArc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn park(
    mb: &Mailbox,
    active: &AtomicUsize,
    pattern: Option<&Value>,
) -> (Poll<Option<Woken>>, bool, StdArc<Flag>) {
    let flag = StdArc::new(Flag(Default::default()));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let wait = || Wait::Receive { pattern: pattern.cloned(), timeout_ms: None };
    let spec = WaitSpec { receive: true, pattern, indefinite: true, soft: true };
    let (p, idle) = mb.poll_wait(&mut cx, &spec, false, wait, active);
    (p, idle, flag)
}

#[test]
fn selective_receive_keeps_skipped_messages_in_order() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    for i in 0..4 {
        mb.deliver(Value::tuple(vec![Value::atom(if i == 2 { "b" } else { "a" }), Value::Int(i)]), &active);
    }
    let pat = Value::tuple(vec![Value::atom("b"), Value::atom("_")]);
    assert_eq!(mb.try_take(Some(&pat)), Some(Value::tuple(vec![Value::atom("b"), Value::Int(2)])));
    let rest: Vec<_> = std::iter::from_fn(|| mb.try_take(None)).collect();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0], Value::tuple(vec![Value::atom("a"), Value::Int(0)]));
    assert_eq!(rest[2], Value::tuple(vec![Value::atom("a"), Value::Int(3)]));
}

#[test]
fn parking_counts_out_and_a_sender_counts_back_in() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    let (p, idle, flag) = park(&mb, &active, None);
    assert!(p.is_pending() && idle, "the only actor parking makes the VM idle");
    assert_eq!(active.load(Ordering::SeqCst), 0);
    match mb.deliver(Value::Int(1), &active) {
        Delivery::Wake(w) => w.wake(),
        other => panic!("{other:?}"),
    }
    assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(active.load(Ordering::SeqCst), 1, "counted back in by the sender");
    let (p, _, _) = park(&mb, &active, None);
    assert_eq!(p, Poll::Ready(Some(Woken::Message(Value::Int(1)))));
    assert_eq!(active.load(Ordering::SeqCst), 1);
    // A second delivery finds no waker: only one party wakes.
    assert!(matches!(mb.deliver(Value::Int(2), &active), Delivery::Queued));
}

#[test]
fn mode_zero_interrupts_only_reach_waiting_actors() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    let exc = Exception::new(atoms::INTERRUPT, "x");
    assert!(matches!(mb.signal(Signal::Interrupt { exc: exc.clone(), mode: 0 }, &active), Delivery::Dropped));
    let (p, _, _) = park(&mb, &active, None);
    assert!(p.is_pending());
    assert!(matches!(mb.signal(Signal::Interrupt { exc: exc.clone(), mode: 0 }, &active), Delivery::Wake(_)));
    let (p, _, _) = park(&mb, &active, None);
    assert_eq!(p, Poll::Ready(Some(Woken::Signal(Signal::Interrupt { exc, mode: 0 }))));
}

#[test]
fn trapped_exits_become_messages_and_normal_exits_are_ignored() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    assert!(matches!(
        mb.signal(Signal::Exit { from: Pid(9), reason: Value::Atom(atoms::NORMAL) }, &active),
        Delivery::Dropped
    ));
    mb.with(|i| i.ext().trap_exit = true);
    mb.signal(Signal::Exit { from: Pid(9), reason: Value::atom("boom") }, &active);
    assert_eq!(
        mb.try_take(None),
        Some(Value::tuple(vec![Value::Atom(atoms::EXIT), Value::Pid(Pid(9)), Value::atom("boom")]))
    );
}

#[test]
fn overflow_kills_with_a_reason_that_names_the_limit() {
    let mb = Mailbox::with_limit(Some(2));
    let active = AtomicUsize::new(1);
    mb.deliver(Value::Int(1), &active);
    mb.deliver(Value::Int(2), &active);
    assert!(matches!(mb.deliver(Value::Int(3), &active), Delivery::Overflow(_)));
    assert_eq!(mb.take_signal(), Some(Signal::Kill(mailbox_overflow_reason())));
}

#[test]
fn receive_parks_in_its_fast_path_once_the_waker_is_known() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    // Before any wait the waker is unknown: the fast path cannot park.
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Empty);
    assert_eq!(active.load(Ordering::SeqCst), 1);
    // The first wait stores the waker; a delivery wakes it and it takes the message.
    let (p, _, flag) = park(&mb, &active, None);
    assert!(p.is_pending());
    assert!(matches!(mb.deliver(Value::Int(1), &active), Delivery::Wake(_)));
    assert_eq!(park(&mb, &active, None).0, Poll::Ready(Some(Woken::Message(Value::Int(1)))));
    // A queued message is taken at once.
    mb.deliver(Value::Int(2), &active);
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Taken(Value::Int(2)));
    // Now the fast path parks: the actor is counted out (the VM would be idle), shows as
    // waiting, and the next delivery wakes it exactly once.
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Parked { idle: true });
    assert_eq!(active.load(Ordering::SeqCst), 0);
    assert!(mb.with(|i| i.waiting.is_some()));
    let Delivery::Wake(w) = mb.deliver(Value::Int(3), &active) else { panic!("not woken") };
    assert_eq!(active.load(Ordering::SeqCst), 1, "counted back in by the sender");
    assert!(matches!(mb.deliver(Value::Int(4), &active), Delivery::Queued), "one wake only");
    w.wake();
    assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
    // Woken, the receive runs again: it takes the message, and the wait is over.
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Taken(Value::Int(3)));
    assert!(mb.with(|i| i.waiting.is_none()));
    // Parked again, a signal that arrives during the wait is its outcome: the re-run receive
    // steps aside even though a message is queued, and the ordinary wait takes the signal.
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Taken(Value::Int(4)));
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Parked { idle: true });
    let exc = Exception::new(atoms::INTERRUPT, "poke");
    assert!(matches!(mb.signal(Signal::Interrupt { exc: exc.clone(), mode: 0 }, &active), Delivery::Wake(_)));
    mb.deliver(Value::Int(5), &active);
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Empty);
    let interrupt = Woken::Signal(Signal::Interrupt { exc, mode: 0 });
    assert_eq!(park(&mb, &active, None).0, Poll::Ready(Some(interrupt)));
    assert_eq!(mb.try_take(None), Some(Value::Int(5)));
    // A signal pending before the receive starts makes the fast path step aside too.
    mb.signal(Signal::Kill(Value::Nil), &active);
    assert_eq!(mb.take_or_park(None, &active), TakeOrPark::Empty);
    assert_eq!(active.load(Ordering::SeqCst), 1);
}

#[test]
fn a_closed_mailbox_drops_everything() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    mb.with(|i| i.ext().links.push(Pid(4)));
    let (links, _, _) = mb.close();
    assert_eq!(links, vec![Pid(4)]);
    assert!(matches!(mb.deliver(Value::Int(1), &active), Delivery::Dropped));
}

/// The save point: a failed scan for a pattern is not repeated over the same messages, yet no
/// match is ever missed — not one arriving later, not one put back at the front, not one for
/// another pattern among the skipped messages — and skipped messages keep their order.
#[test]
fn the_save_point_skips_only_messages_already_seen_not_to_match() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    let cast = |i| Value::tuple(vec![Value::atom("cast"), Value::Int(i)]);
    let reply = Value::tuple(vec![Value::atom("reply"), Value::atom("_")]);
    for i in 0..3 {
        mb.deliver(cast(i), &active);
    }
    assert_eq!(mb.try_take(Some(&reply)), None);
    assert_eq!(
        mb.with(|i| i.ext_ref().and_then(|e| e.save.clone())),
        Some((smallvec::smallvec![reply.clone()], 3))
    );
    mb.deliver(cast(3), &active);
    assert_eq!(mb.try_take(Some(&reply)), None);
    assert_eq!(
        mb.with(|i| i.ext_ref().and_then(|e| e.save.clone())),
        Some((smallvec::smallvec![reply.clone()], 4))
    );
    // Another pattern scans from the front: it finds a message the save point skipped.
    assert_eq!(mb.try_take(Some(&cast(1))), Some(cast(1)));
    assert_eq!(mb.with(|i| i.ext_ref().and_then(|e| e.save.clone())), None, "indexes moved");
    let r = Value::tuple(vec![Value::atom("reply"), Value::Int(9)]);
    assert_eq!(mb.try_take(Some(&reply)), None);
    mb.deliver(r.clone(), &active);
    assert_eq!(mb.try_take(Some(&reply)), Some(r.clone()), "a match that arrived after the save point");
    // A message put back at the front is seen, although it sits before the save point.
    assert_eq!(mb.try_take(Some(&reply)), None);
    mb.put_back(r.clone());
    assert_eq!(mb.try_take(Some(&reply)), Some(r));
    let rest: Vec<Value> = std::iter::from_fn(|| mb.try_take(None)).collect();
    assert_eq!(rest, vec![cast(0), cast(2), cast(3)]);
}

/// A scan with a budget looks at no more messages than it allows, one unit each, and stops
/// with its place kept: the next scan goes on from there, and a match found is charged only
/// for the messages up to it. Taking the oldest message costs nothing.
#[test]
fn a_bounded_scan_stops_at_its_budget_and_goes_on_from_there() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    for i in 0..10 {
        mb.deliver(Value::tuple(vec![Value::atom(if i == 9 { "b" } else { "a" }), Value::Int(i)]), &active);
    }
    let pat = Value::tuple(vec![Value::atom("b"), Value::atom("_")]);
    let mut budget = 4;
    assert_eq!(mb.try_take_within(Some(&pat), &mut budget), Err(Unfinished));
    assert_eq!(budget, 0);
    let mut budget = 4;
    assert_eq!(mb.try_take_within(Some(&pat), &mut budget), Err(Unfinished));
    assert_eq!(budget, 0);
    // Messages 8 and 9 are left to look at: the match is the second, and 2 units are left.
    assert_eq!(mb.take_or_park_within(Some(&pat), &mut budget, &active), TakeOrPark::Unfinished);
    let mut budget = 4;
    let got = mb.take_or_park_within(Some(&pat), &mut budget, &active);
    assert_eq!(got, TakeOrPark::Taken(Value::tuple(vec![Value::atom("b"), Value::Int(9)])));
    assert_eq!(budget, 2);
    // The skipped messages are all there, in order; the oldest is taken for nothing.
    let mut budget = 0;
    assert_eq!(
        mb.try_take_within(None, &mut budget),
        Ok(Some(Value::tuple(vec![Value::atom("a"), Value::Int(0)])))
    );
    assert_eq!(std::iter::from_fn(|| mb.try_take(None)).count(), 8);
}

/// A select's mailbox cases are scanned in one pass: the oldest message matching any of them is
/// taken, with the first case it matches; the scan is bounded by its budget like a selective
/// receive's, and goes on from where it stopped only for the same list of patterns (a save
/// point left for the list says nothing about one of its patterns alone, and the other way
/// round).
#[test]
fn a_scan_for_several_patterns_takes_the_oldest_match_and_keeps_its_own_place() {
    let mb = Mailbox::default();
    let active = AtomicUsize::new(1);
    let msg = |tag: &str, i: i64| Value::tuple(vec![Value::atom(tag), Value::Int(i)]);
    for i in 0..10 {
        mb.deliver(
            msg(
                if i == 6 {
                    "b"
                } else if i == 8 {
                    "c"
                } else {
                    "a"
                },
                i,
            ),
            &active,
        );
    }
    let pat = |tag: &str| Value::tuple(vec![Value::atom(tag), Value::atom("_")]);
    let both = [pat("c"), pat("b")];
    let mut budget = 4;
    assert_eq!(mb.try_take_any_within(&both, &mut budget), Err(Unfinished));
    assert_eq!(budget, 0);
    // Another pattern starts from the front (it is charged for messages 0 to 3 again).
    let mut budget = 5;
    assert_eq!(mb.try_take_within(Some(&pat("c")), &mut budget), Err(Unfinished));
    // The list went on from message 4 before the other scan; now it starts over, and takes
    // message 6, the older of the two matches, as case 1 (the case of `{:b, _}`).
    let mut budget = 20;
    assert_eq!(mb.try_take_any_within(&both, &mut budget), Ok(Some((1, msg("b", 6)))));
    assert_eq!(budget, 20 - 7);
    let mut budget = 20;
    assert_eq!(mb.try_take_any_within(&both, &mut budget), Ok(Some((0, msg("c", 8)))));
    assert_eq!(budget, 20 - 8);
    // Nothing left to match: the whole queue is looked at once, and then only new messages.
    let mut budget = 20;
    assert_eq!(mb.try_take_any_within(&both, &mut budget), Ok(None));
    assert_eq!(budget, 20 - 8);
    mb.deliver(msg("b", 10), &active);
    let mut budget = 20;
    assert_eq!(mb.try_take_any_within(&both, &mut budget), Ok(Some((1, msg("b", 10)))));
    assert_eq!(budget, 19);
    // No patterns look at nothing.
    let mut budget = 20;
    assert_eq!(mb.try_take_any_within(&[], &mut budget), Ok(None));
    assert_eq!(budget, 20);
    assert_eq!(std::iter::from_fn(|| mb.try_take(None)).count(), 8);
}
