//! Model checks of the wake protocol: every interleaving of a parking receiver with
//! concurrent senders and signallers.
use super::*;
use crate::sync::{Arc, AtomicBool};
use std::future::poll_fn;

/// One poll of an ordinary indefinite receive (steps 1 and 4 of the protocol).
fn poll_receive(mb: &Mailbox, cx: &mut Context<'_>, active: &AtomicUsize) -> Poll<Option<Woken>> {
    let wait = || Wait::Receive { pattern: None, timeout_ms: None };
    let spec = WaitSpec { receive: true, pattern: None, indefinite: true, soft: true };
    mb.poll_wait(cx, &spec, false, wait, active).0
}

fn receive(mb: &Mailbox, active: &AtomicUsize) -> Option<Woken> {
    loom::future::block_on(poll_fn(|cx| poll_receive(mb, cx, active)))
}

fn wake(d: Delivery) {
    if let Delivery::Wake(w) = d {
        w.wake();
    }
}

/// A message sent while the receiver parks is received exactly once, and the receiver is
/// counted back in, whatever the interleaving.
#[test]
fn loom_message_is_received_once_and_accounting_balances() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::default());
        // Two live actors: the receiver and the sender.
        let active = Arc::new(AtomicUsize::new(2));
        let (mb2, active2) = (mb.clone(), active.clone());
        let sender = loom::thread::spawn(move || {
            wake(mb2.deliver(Value::Int(7), &active2));
            // The sender exits.
            active2.fetch_sub(1, Ordering::SeqCst);
        });
        assert_eq!(receive(&mb, &active), Some(Woken::Message(Value::Int(7))));
        sender.join().unwrap();
        assert_eq!(active.load(Ordering::SeqCst), 1, "only the receiver is left, and it is active");
        assert_eq!(mb.try_take(None), None, "no duplicate");
    });
}

/// A receive as the host and the driver run it once the waker is known: `take_or_park`;
/// when that parks (the step's `Begun::Receive`), wait for one wake and run it again; when it
/// steps aside (`Empty`: the step's plain `Effect::Receive`), the ordinary wait.
async fn rerun_receive(mb: &Mailbox, active: &AtomicUsize) -> Option<Woken> {
    loop {
        match mb.take_or_park(None, active) {
            TakeOrPark::Taken(m) => return Some(Woken::Message(m)),
            TakeOrPark::Parked { .. } => {
                let mut first = true;
                poll_fn(|_| if std::mem::take(&mut first) { Poll::Pending } else { Poll::Ready(()) }).await;
            }
            TakeOrPark::Empty => {
                return poll_fn(|cx| poll_receive(mb, cx, active)).await;
            }
            // A plain receive has no scan to leave unfinished.
            TakeOrPark::Unfinished => unreachable!("take_or_park's scan is unbounded"),
        }
    }
}

/// The second of two receives parks in its fast path (`take_or_park`, as the interpreter's
/// receive does once the waker is known) and is re-run when woken, while the sender
/// delivers: both messages arrive once, in order, and the accounting balances.
#[test]
fn loom_a_receive_parked_in_its_fast_path_is_woken() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::default());
        let active = Arc::new(AtomicUsize::new(2));
        let (mb2, active2) = (mb.clone(), active.clone());
        let sender = loom::thread::spawn(move || {
            wake(mb2.deliver(Value::Int(1), &active2));
            wake(mb2.deliver(Value::Int(2), &active2));
            active2.fetch_sub(1, Ordering::SeqCst);
        });
        // One task (one waker) for both receives, as an actor is one tokio task.
        let got = loom::future::block_on(async {
            let first = poll_fn(|cx| poll_receive(&mb, cx, &active)).await;
            (first, rerun_receive(&mb, &active).await)
        });
        sender.join().unwrap();
        assert_eq!(got, (Some(Woken::Message(Value::Int(1))), Some(Woken::Message(Value::Int(2)))));
        assert_eq!(active.load(Ordering::SeqCst), 1);
        assert!(mb.with(|i| i.waiting.is_none()), "the wait is over");
    });
}

/// A mode-0 interrupt and a message racing to a receive parked in its fast path: the re-run
/// receive ends with the interrupt or the message, whichever the mailbox saw first while it
/// waited; the interrupt is never dropped once it was accepted for the wait, the message is
/// never lost, and the actor is counted back in once.
#[test]
fn loom_an_interrupt_reaches_a_receive_parked_in_its_fast_path() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::default());
        let active = Arc::new(AtomicUsize::new(3));
        let exc = Exception::new(atoms::INTERRUPT, "poke");
        // One task throughout, as an actor is one tokio task: its first wait stores the
        // waker (here woken by a message the actor sends itself), the second parks in the
        // fast path while a sender and a signaller race.
        let (got, sender, signaller) = loom::future::block_on(async {
            let first = poll_fn(|cx| {
                let p = poll_receive(&mb, cx, &active);
                if p.is_pending() {
                    wake(mb.deliver(Value::Int(0), &active));
                }
                p
            })
            .await;
            assert_eq!(first, Some(Woken::Message(Value::Int(0))));
            let (mb2, a2) = (mb.clone(), active.clone());
            let sender = loom::thread::spawn(move || {
                wake(mb2.deliver(Value::Int(1), &a2));
                a2.fetch_sub(1, Ordering::SeqCst);
            });
            let (mb3, a3, e3) = (mb.clone(), active.clone(), exc.clone());
            let signaller = loom::thread::spawn(move || {
                let d = mb3.signal(Signal::Interrupt { exc: e3, mode: 0 }, &a3);
                let accepted = !matches!(d, Delivery::Dropped);
                wake(d);
                a3.fetch_sub(1, Ordering::SeqCst);
                accepted
            });
            (rerun_receive(&mb, &active).await, sender, signaller)
        });
        sender.join().unwrap();
        let accepted = signaller.join().unwrap();
        let interrupt = Some(Woken::Signal(Signal::Interrupt { exc, mode: 0 }));
        if got == interrupt {
            assert!(accepted);
            assert_eq!(mb.try_take(None), Some(Value::Int(1)), "the message is still there");
        } else {
            assert_eq!(got, Some(Woken::Message(Value::Int(1))));
            // Accepted means it arrived while the actor waited, and then it ends the wait.
            assert!(!accepted, "an interrupt accepted for the wait was not its outcome");
            assert_eq!(mb.take_signal(), None);
        }
        assert!(mb.with(|i| i.waiting.is_none()), "the wait is over");
        assert_eq!(active.load(Ordering::SeqCst), 1, "counted back in exactly once");
    });
}

/// A signal and a message racing to a parked receiver: it sees the signal or the message
/// first, and whichever it did not take is still there afterwards.
#[test]
fn loom_signal_and_message_race_loses_nothing() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::default());
        let active = Arc::new(AtomicUsize::new(3));
        let exc = Exception::new(atoms::INTERRUPT, "stop");
        let (mb2, a2) = (mb.clone(), active.clone());
        let t1 = loom::thread::spawn(move || {
            wake(mb2.deliver(Value::Int(1), &a2));
            a2.fetch_sub(1, Ordering::SeqCst);
        });
        let (mb3, a3, e3) = (mb.clone(), active.clone(), exc.clone());
        let t2 = loom::thread::spawn(move || {
            wake(mb3.signal(Signal::Interrupt { exc: e3, mode: 1 }, &a3));
            a3.fetch_sub(1, Ordering::SeqCst);
        });
        let first = receive(&mb, &active);
        t1.join().unwrap();
        t2.join().unwrap();
        match first {
            Some(Woken::Message(_)) => assert!(mb.take_signal().is_some()),
            Some(Woken::Signal(_)) => assert_eq!(mb.try_take(None), Some(Value::Int(1))),
            None => panic!("no deadline, so some outcome"),
        }
        assert_eq!(active.load(Ordering::SeqCst), 1);
    });
}

/// Lets a select reach a mailbox's flag, as the runtime does through the actor's cell.
struct MailboxFlag(Arc<Mailbox>);

impl crate::sync::CountedFlag for MailboxFlag {
    fn counted(&self) -> &AtomicBool {
        self.0.counted()
    }
}

/// A select parked on a channel and on the mailbox's control port at once, sharing the
/// actor's "counted out" flag: woken concurrently through both paths, it is counted back in
/// exactly once, and the waker threads never see `active` at zero while they run.
#[test]
fn loom_a_select_and_its_mailbox_count_the_actor_in_once() {
    use crate::chan::{Case, Channel, Select};
    // Three threads over two protocols: bounded preemptions keep the model to seconds.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(|| {
        let mb = Arc::new(Mailbox::default());
        let chan = Channel::new(1, 0);
        // The receiver plus two wakers.
        let active = Arc::new(AtomicUsize::new(3));
        let (c2, a2) = (chan.clone(), active.clone());
        let sender = loom::thread::spawn(move || {
            let _ = c2.try_send(Value::Int(1), &a2);
            assert!(a2.load(Ordering::SeqCst) >= 1);
            a2.fetch_sub(1, Ordering::SeqCst);
        });
        let (mb3, a3) = (mb.clone(), active.clone());
        let signaller = loom::thread::spawn(move || {
            let exc = Exception::new(atoms::INTERRUPT, "x");
            wake(mb3.signal(Signal::Interrupt { exc, mode: 1 }, &a3));
            assert!(a3.load(Ordering::SeqCst) >= 1);
            a3.fetch_sub(1, Ordering::SeqCst);
        });
        let flag = std::sync::Arc::new(MailboxFlag(mb.clone()));
        let mut sel = Select::with_flag(vec![Case::recv(&chan)], false, flag);
        let woke = loom::future::block_on(poll_fn(|cx| {
            // Count out first, then publish both wakers, then re-check (as the driver does).
            mb.count_out(&active);
            if sel.poll(cx, &active).0.is_ready() {
                return Poll::Ready("channel");
            }
            let spec = WaitSpec { receive: false, pattern: None, indefinite: false, soft: true };
            let wait = || Wait::Other("select");
            match mb.poll_wait(cx, &spec, false, wait, &active).0 {
                Poll::Ready(_) => Poll::Ready("signal"),
                Poll::Pending => Poll::Pending,
            }
        }));
        if woke == "signal" {
            let _ = sel.cancel(&active);
        }
        mb.count_in(&active);
        sender.join().unwrap();
        signaller.join().unwrap();
        assert_eq!(active.load(Ordering::SeqCst), 1, "counted back in exactly once");
    });
}

/// With one actor parked forever and nobody else, `active` reaches zero exactly once; with a
/// sender that wakes it, it never reaches zero while the sender is alive.
#[test]
fn loom_idle_is_reported_only_when_no_one_can_wake() {
    loom::model(|| {
        let mb = Arc::new(Mailbox::default());
        let active = Arc::new(AtomicUsize::new(2));
        let (mb2, a2) = (mb.clone(), active.clone());
        let t = loom::thread::spawn(move || {
            wake(mb2.deliver(Value::Int(1), &a2));
            // Still alive here, so the VM cannot be idle yet.
            assert!(a2.load(Ordering::SeqCst) >= 1);
            a2.fetch_sub(1, Ordering::SeqCst);
        });
        assert_eq!(receive(&mb, &active), Some(Woken::Message(Value::Int(1))));
        t.join().unwrap();
        assert_eq!(active.load(Ordering::SeqCst), 1);
    });
}
