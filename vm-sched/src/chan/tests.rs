use super::*;
use std::future::poll_fn;
use std::sync::atomic::AtomicBool;
use std::task::Poll;
use std::task::Wake;
use std::time::Duration;

struct Flag(AtomicBool);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}
impl Flag {
    fn woken(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// Polls once with a flag waker.
fn poll(s: &mut Select, active: &AtomicUsize) -> (Poll<Fired>, bool, Arc<Flag>) {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let (p, idle) = s.poll(&mut Context::from_waker(&waker), active);
    (p, idle, flag)
}

fn ready(p: Poll<Fired>) -> Fired {
    match p {
        Poll::Ready(f) => f,
        Poll::Pending => panic!("expected the select to be ready"),
    }
}

/// Runs a select to completion on the current thread.
fn block(cases: Vec<Case>, active: &AtomicUsize) -> Fired {
    let mut s = Select::new(cases, true);
    futures::executor::block_on(poll_fn(|cx| s.poll(cx, active).0))
}

#[test]
fn rendezvous_send_completes_only_when_a_receiver_takes_the_value() {
    let c = Channel::new(1, 0);
    let active = AtomicUsize::new(2);
    let mut s = Select::new(vec![Case::send(&c, Value::Int(7))], true);
    let (p, idle, flag) = poll(&mut s, &active);
    assert!(p.is_pending() && !idle);
    assert_eq!(active.load(Ordering::SeqCst), 1, "a parked indefinite send counts out");
    assert_eq!((c.len(), c.parked()), (0, (0, 1)), "nothing is buffered on a rendezvous channel");
    // A second sender does not complete either: there is no receiver and no room.
    assert_eq!(c.try_send(Value::Int(8), &active), Err(TrySendError::Full(Value::Int(8))));
    assert!(!flag.woken());
    assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(7)));
    assert!(flag.woken(), "the receiver wakes the parked sender");
    assert_eq!(active.load(Ordering::SeqCst), 2, "and counts it back in");
    assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
    assert_eq!(c.try_recv(&active), TryRecv::Empty);
    assert_eq!(s.cancel(&active), Ok(()), "cancelling a completed select is a no-op");
    assert_eq!(active.load(Ordering::SeqCst), 2);
}

#[test]
fn a_one_case_wait_parks_commits_cancels_and_closes_like_a_select() {
    let c = Channel::new(1, 0);
    let active = AtomicUsize::new(2);
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let cx = Context::from_waker(&waker);
    let counted = || -> Arc<dyn CountedFlag> { Arc::new(crate::sync::AtomicBool::new(false)) };
    // A receive parks, a sender hands over directly and wakes it.
    let mut w = c.complete_or_park(None, false, &waker, counted(), &active).unwrap_err();
    assert_eq!(c.parked(), (1, 0));
    assert_eq!(w.poll(&c, &cx, &active), Err(false), "a poll with nothing committed counts out");
    assert_eq!(active.load(Ordering::SeqCst), 1);
    assert_eq!(c.try_send(Value::Int(3), &active), Ok(()));
    assert!(flag.woken());
    assert_eq!(active.load(Ordering::SeqCst), 2, "the claimer counted it back in");
    assert_eq!(w.poll(&c, &cx, &active), Ok(Fired::Received { case: 0, value: Value::Int(3) }));
    assert_eq!(c.parked(), (0, 0), "the claimer removed the only entry");
    // A parked send that is cancelled leaves nothing behind and sent nothing.
    let w = c.complete_or_park(Some(&Value::Int(4)), false, &waker, counted(), &active).unwrap_err();
    assert_eq!(w.cancel(&c, Some(&active)), Ok(()));
    assert_eq!((c.parked(), c.try_recv(&active)), ((0, 0), TryRecv::Empty));
    // Cancelled after a receiver took the value: the cancel reports the send.
    let w = c.complete_or_park(Some(&Value::Int(5)), false, &waker, counted(), &active).unwrap_err();
    assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(5)));
    assert_eq!(w.cancel(&c, Some(&active)), Err(Fired::Sent { case: 0 }));
    // A sender already parked completes a receive at once.
    let mut s = Select::new(vec![Case::send(&c, Value::Int(6))], false);
    assert!(poll(&mut s, &active).0.is_pending());
    assert_eq!(
        c.complete_or_park(None, false, &waker, counted(), &active).unwrap(),
        Fired::Received { case: 0, value: Value::Int(6) }
    );
    assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
    // Close completes a parked receive with "closed".
    let mut w = c.complete_or_park(None, false, &waker, counted(), &active).unwrap_err();
    c.close(&active).unwrap();
    assert_eq!(w.poll(&c, &cx, &active), Ok(Fired::RecvClosed { case: 0 }));
    assert_eq!(active.load(Ordering::SeqCst), 2);
}

#[test]
fn rendezvous_across_threads_orders_send_after_receive() {
    let c = Channel::new(1, 0);
    let active = Arc::new(AtomicUsize::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let (c, active, done) = (c.clone(), active.clone(), done.clone());
        std::thread::spawn(move || {
            let f = block(vec![Case::send(&c, Value::Int(1))], &active);
            done.store(true, Ordering::SeqCst);
            f
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!done.load(Ordering::SeqCst), "the send must wait for a receiver");
    assert_eq!(block(vec![Case::recv(&c)], &active), Fired::Received { case: 0, value: Value::Int(1) });
    assert_eq!(t.join().unwrap(), Fired::Sent { case: 0 });
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(active.load(Ordering::SeqCst), 2);
}

#[test]
fn buffered_channel_takes_cap_sends_then_parks_and_keeps_fifo_order() {
    let c = Channel::new(1, 3);
    let active = AtomicUsize::new(1);
    for i in 0..3 {
        assert_eq!(c.try_send(Value::Int(i), &active), Ok(()));
    }
    assert_eq!(c.len(), 3);
    assert_eq!(c.try_send(Value::Int(99), &active), Err(TrySendError::Full(Value::Int(99))));
    let mut s = Select::new(vec![Case::send(&c, Value::Int(3))], true);
    let (p, idle, flag) = poll(&mut s, &active);
    assert!(p.is_pending() && idle, "the only actor parking makes the VM idle");
    assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(0)));
    assert!(flag.woken());
    assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
    assert_eq!(c.len(), 3, "the parked sender's value moved into the buffer");
    for i in 1..4 {
        assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(i)));
    }
    assert_eq!(c.try_recv(&active), TryRecv::Empty);
    assert_eq!(active.load(Ordering::SeqCst), 1);
}

#[test]
fn a_send_hands_over_directly_to_a_parked_receiver() {
    let c = Channel::new(1, 2);
    let active = AtomicUsize::new(2);
    let mut r = Select::new(vec![Case::recv(&c)], true);
    let (p, _, flag) = poll(&mut r, &active);
    assert!(p.is_pending());
    assert_eq!(c.try_send(Value::str("x"), &active), Ok(()));
    assert!(flag.woken());
    assert_eq!(c.len(), 0, "handed over, not buffered");
    assert_eq!(ready(poll(&mut r, &active).0), Fired::Received { case: 0, value: Value::str("x") });
    assert_eq!(active.load(Ordering::SeqCst), 2);
}

#[test]
fn close_drains_buffered_values_then_reports_closed_and_rejects_sends() {
    let c = Channel::new(1, 2);
    let active = AtomicUsize::new(1);
    c.try_send(Value::Int(1), &active).unwrap();
    c.try_send(Value::Int(2), &active).unwrap();
    assert_eq!(c.close(&active), Ok(()));
    assert!(c.is_closed());
    assert_eq!(c.try_send(Value::Int(3), &active), Err(TrySendError::Closed(Value::Int(3))));
    assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(1)));
    assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(2)));
    assert_eq!(c.try_recv(&active), TryRecv::Closed);
    assert_eq!(c.try_recv(&active), TryRecv::Closed, "closed stays closed");
    assert_eq!(c.close(&active), Err(ChanError::AlreadyClosed));
    assert_eq!(try_select(&[Case::send(&c, Value::Nil)], &active), Some(Fired::SendClosed { case: 0 }));
    assert_eq!(try_select(&[Case::recv(&c)], &active), Some(Fired::RecvClosed { case: 0 }));
}

#[test]
fn close_wakes_parked_receivers_and_senders() {
    let c = Channel::new(1, 0);
    let d = Channel::new(2, 0);
    let active = AtomicUsize::new(3);
    let mut r1 = Select::new(vec![Case::recv(&c)], true);
    let mut r2 = Select::new(vec![Case::recv(&d), Case::recv(&c)], true);
    let mut s = Select::new(vec![Case::send(&d, Value::Int(1))], true);
    let (p1, _, f1) = poll(&mut r1, &active);
    let (p2, _, f2) = poll(&mut r2, &active);
    assert!(p1.is_pending() && p2.is_pending());
    // r2 parked on d as a receiver, so the sender finds it.
    assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
    assert!(f2.woken());
    assert_eq!(ready(poll(&mut r2, &active).0), Fired::Received { case: 0, value: Value::Int(1) });
    assert_eq!(c.parked(), (1, 0), "r2's entry on c was removed on completion");
    let mut s2 = Select::new(vec![Case::send(&d, Value::Int(2))], true);
    let (p3, _, f3) = poll(&mut s2, &active);
    assert!(p3.is_pending());
    assert_eq!(active.load(Ordering::SeqCst), 1, "r1 and s2 are counted out");
    c.close(&active).unwrap();
    d.close(&active).unwrap();
    assert!(f1.woken() && f3.woken());
    assert_eq!(active.load(Ordering::SeqCst), 3, "close counts both back in");
    assert_eq!(ready(poll(&mut r1, &active).0), Fired::RecvClosed { case: 0 });
    assert_eq!(ready(poll(&mut s2, &active).0), Fired::SendClosed { case: 0 });
    assert_eq!((c.parked(), d.parked()), ((0, 0), (0, 0)));
}

#[test]
fn close_wakes_a_receiver_blocked_on_another_thread() {
    let c = Channel::new(1, 0);
    let active = Arc::new(AtomicUsize::new(2));
    let t = {
        let (c, active) = (c.clone(), active.clone());
        std::thread::spawn(move || block(vec![Case::recv(&c)], &active))
    };
    let start = std::time::Instant::now();
    while c.parked() != (1, 0) {
        assert!(start.elapsed() < Duration::from_secs(10), "the receiver never parked");
        std::thread::sleep(Duration::from_millis(1));
    }
    c.close(&active).unwrap();
    assert_eq!(t.join().unwrap(), Fired::RecvClosed { case: 0 });
    assert_eq!(active.load(Ordering::SeqCst), 2);
}

#[test]
fn a_parked_select_commits_exactly_one_case() {
    let a = Channel::new(1, 0);
    let b = Channel::new(2, 0);
    let active = AtomicUsize::new(2);
    let mut s = Select::new(vec![Case::recv(&a), Case::recv(&b)], true);
    let (p, _, flag) = poll(&mut s, &active);
    assert!(p.is_pending());
    assert_eq!((a.parked(), b.parked()), ((1, 0), (1, 0)), "one waiter on both channels");
    assert_eq!(a.try_send(Value::Int(1), &active), Ok(()));
    assert!(flag.woken());
    // The waiter is claimed: b's sender skips (and removes) the stale entry.
    assert_eq!(b.try_send(Value::Int(2), &active), Err(TrySendError::Full(Value::Int(2))));
    assert_eq!(b.parked(), (0, 0));
    assert_eq!(ready(poll(&mut s, &active).0), Fired::Received { case: 0, value: Value::Int(1) });
    assert_eq!(a.parked(), (0, 0));
    assert_eq!(active.load(Ordering::SeqCst), 2);
}

#[test]
fn a_select_may_name_one_channel_twice() {
    let c = Channel::new(1, 0);
    let active = AtomicUsize::new(2);
    // Locked once (no self-deadlock), and the select never matches itself.
    let mut s = Select::new(vec![Case::send(&c, Value::Int(5)), Case::recv(&c)], true);
    let (p, _, _) = poll(&mut s, &active);
    assert!(p.is_pending());
    assert_eq!(c.parked(), (1, 1));
    assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(5)));
    assert_eq!(ready(poll(&mut s, &active).0), Fired::Sent { case: 0 });
    assert_eq!(c.parked(), (0, 0), "the other entry is removed on completion");
}

#[test]
fn select_with_default_enqueues_nothing() {
    let a = Channel::new(1, 0);
    let b = Channel::new(2, 1);
    let active = AtomicUsize::new(1);
    let cases = [Case::recv(&a), Case::send(&a, Value::Int(1)), Case::recv(&b)];
    assert_eq!(try_select(&cases, &active), None);
    assert_eq!((a.parked(), b.parked()), ((0, 0), (0, 0)));
    assert_eq!(try_select(&[], &active), None);
    b.try_send(Value::Int(4), &active).unwrap();
    assert_eq!(try_select(&cases, &active), Some(Fired::Received { case: 2, value: Value::Int(4) }));
}

#[test]
fn cancelling_a_parked_send_leaves_nothing_behind() {
    let c = Channel::new(1, 0);
    let active = AtomicUsize::new(1);
    let mut s = Select::new(vec![Case::send(&c, Value::Int(1))], true);
    let (p, idle, _) = poll(&mut s, &active);
    assert!(p.is_pending() && idle);
    assert_eq!(s.cancel(&active), Ok(()));
    assert_eq!(active.load(Ordering::SeqCst), 1, "cancel counts the actor back in");
    assert_eq!(c.parked(), (0, 0));
    assert_eq!(c.try_recv(&active), TryRecv::Empty, "nothing was transferred");
}

#[test]
fn cancel_after_a_commit_reports_the_committed_case() {
    let c = Channel::new(1, 0);
    let active = AtomicUsize::new(2);
    let mut s = Select::new(vec![Case::send(&c, Value::Int(1))], true);
    assert!(poll(&mut s, &active).0.is_pending());
    assert_eq!(c.try_recv(&active), TryRecv::Value(Value::Int(1)));
    assert_eq!(s.cancel(&active), Err(Fired::Sent { case: 0 }), "the value went: report it");
    let a = Channel::new(2, 0);
    let b = Channel::new(3, 0);
    let mut r = Select::new(vec![Case::recv(&a), Case::recv(&b)], false);
    assert!(poll(&mut r, &active).0.is_pending());
    assert_eq!(active.load(Ordering::SeqCst), 2, "a wait with a deadline stays counted in");
    b.try_send(Value::Int(9), &active).unwrap();
    assert_eq!(r.cancel(&active), Err(Fired::Received { case: 1, value: Value::Int(9) }));
    assert_eq!((a.parked(), b.parked()), ((0, 0), (0, 0)));
    assert_eq!(active.load(Ordering::SeqCst), 2);
}

#[test]
fn dropping_a_parked_select_dequeues_it() {
    let c = Channel::new(1, 0);
    let active = AtomicUsize::new(1);
    let mut s = Select::new(vec![Case::recv(&c), Case::send(&c, Value::Int(3))], false);
    assert!(poll(&mut s, &active).0.is_pending());
    drop(s);
    assert_eq!(c.parked(), (0, 0));
    assert_eq!(c.try_send(Value::Int(1), &active), Err(TrySendError::Full(Value::Int(1))));
}

#[test]
fn a_select_without_cases_waits_until_cancelled() {
    let active = AtomicUsize::new(1);
    let mut s = Select::new(vec![], true);
    let (p, idle, _) = poll(&mut s, &active);
    assert!(p.is_pending() && idle);
    assert_eq!(s.cancel(&active), Ok(()));
    assert_eq!(active.load(Ordering::SeqCst), 1);
}

fn share(cases: &[Case], active: &AtomicUsize, refill: impl Fn(usize)) -> Vec<usize> {
    let mut hits = vec![0; cases.len()];
    for _ in 0..10_000 {
        let f = try_select(cases, active).expect("a case is always ready");
        hits[f.case()] += 1;
        refill(f.case());
    }
    hits
}

#[test]
fn select_is_fair_between_ready_cases() {
    let active = AtomicUsize::new(1);
    let a = Channel::new(1, 1);
    let b = Channel::new(2, 1);
    a.try_send(Value::Int(0), &active).unwrap();
    b.try_send(Value::Int(1), &active).unwrap();
    let chans = [a.clone(), b.clone()];
    let hits = share(&[Case::recv(&a), Case::recv(&b)], &active, |i| {
        chans[i].try_send(Value::Int(i as i64), &active).unwrap();
    });
    assert!(hits.iter().all(|&h| (4_000..=6_000).contains(&h)), "{hits:?}");
    // Two ready cases out of three: a rotation from a random start would favour the case
    // after the idle one (2/3); a shuffle gives each half.
    assert_eq!(a.try_recv(&active), TryRecv::Value(Value::Int(0)), "make room on a");
    let idle = Channel::new(3, 0);
    let hits = share(&[Case::send(&a, Value::Nil), Case::recv(&idle), Case::recv(&b)], &active, |i| {
        if i == 0 {
            assert_eq!(a.try_recv(&active), TryRecv::Value(Value::Nil));
        } else {
            b.try_send(Value::Int(1), &active).unwrap();
        }
    });
    assert_eq!(hits[1], 0);
    assert!((4_000..=6_000).contains(&hits[0]) && (4_000..=6_000).contains(&hits[2]), "{hits:?}");
}

/// How a stress-test wait ends if nothing fires.
#[derive(Clone, Copy)]
enum Until {
    /// No deadline: counts out of `active`.
    Forever,
    /// A timer, raced inside the claim protocol by cancelling when it fires.
    Deadline(Duration),
    /// An "interrupt" right after parking (cancel on the next poll).
    Interrupt,
}

/// How many cancels found that a case had committed first (the race the protocol resolves).
static CANCEL_LOST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs a select as the driver will: `None` if it was cancelled with nothing transferred.
async fn run_select(cases: Vec<Case>, active: &AtomicUsize, until: Until) -> Option<Fired> {
    let mut sel = Some(Select::new(cases, matches!(until, Until::Forever)));
    let mut timer = match until {
        Until::Deadline(d) => Some(Box::pin(tokio::time::sleep(d))),
        _ => None,
    };
    let mut polls = 0;
    poll_fn(move |cx| {
        let Some(s) = sel.as_mut() else { return Poll::Pending };
        let (p, idle) = s.poll(cx, active);
        assert!(!idle, "the test's main thread stays active");
        if let Poll::Ready(f) = p {
            return Poll::Ready(Some(f));
        }
        polls += 1;
        let cancel = match (&mut timer, until) {
            (Some(t), _) => t.as_mut().poll(cx).is_ready(),
            (None, Until::Interrupt) if polls == 1 => {
                cx.waker().wake_by_ref();
                false
            }
            (None, Until::Interrupt) => true,
            _ => false,
        };
        if cancel && let Some(s) = sel.take() {
            let out = s.cancel(active).err();
            if out.is_some() {
                CANCEL_LOST.fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(out);
        }
        Poll::Pending
    })
    .await
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn until(&mut self) -> Until {
        match self.below(10) {
            0 => Until::Deadline(Duration::from_micros(self.below(1500))),
            1 | 2 => Until::Interrupt,
            _ => Until::Forever,
        }
    }
}

#[allow(clippy::print_stderr, reason = "a test harness: it reports how many waits it cancelled")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_every_value_is_received_exactly_once_despite_cancellations() {
    const SENDERS: i64 = 8;
    const PER: i64 = 10_000;
    const RECEIVERS: usize = 4;
    let chans: Arc<Vec<Arc<Channel>>> =
        Arc::new([0, 0, 1, 4].iter().enumerate().map(|(i, &cap)| Channel::new(i as u64, cap)).collect());
    // Main plus every task.
    let active = Arc::new(AtomicUsize::new(1 + SENDERS as usize + RECEIVERS));
    let work = async {
        let mut senders = Vec::new();
        for s in 0..SENDERS {
            let (chans, active) = (chans.clone(), active.clone());
            senders.push(tokio::spawn(async move {
                let mut rng = Rng(0x1234_5678 + s as u64 * 7919);
                let mut cancelled = 0u32;
                for k in 0..PER {
                    let v = Value::Int(s * PER + k);
                    loop {
                        let i = rng.below(4) as usize;
                        let cases = if rng.below(2) == 0 {
                            vec![Case::send(&chans[i], v.clone())]
                        } else {
                            // The same value offered on two channels: at most one may take it.
                            let j = (i + 1 + rng.below(3) as usize) % 4;
                            vec![Case::send(&chans[i], v.clone()), Case::send(&chans[j], v.clone())]
                        };
                        match run_select(cases, &active, rng.until()).await {
                            Some(Fired::Sent { .. }) => break,
                            None => cancelled += 1,
                            Some(other) => panic!("unexpected {other:?}"),
                        }
                    }
                }
                active.fetch_sub(1, Ordering::SeqCst);
                cancelled
            }));
        }
        let mut receivers = Vec::new();
        for r in 0..RECEIVERS {
            let (chans, active) = (chans.clone(), active.clone());
            receivers.push(tokio::spawn(async move {
                let mut rng = Rng(0x9876_5432 + r as u64 * 104_729);
                let mut open: Vec<Arc<Channel>> = chans.to_vec();
                let mut got = Vec::new();
                let mut cancelled = 0u32;
                while !open.is_empty() {
                    let until = rng.until();
                    // A receiver waiting forever on one channel while every sender waits on
                    // another would be a real deadlock, so only bounded waits pick one.
                    let cases: Vec<Case> = if !matches!(until, Until::Forever) && rng.below(2) == 0 {
                        vec![Case::recv(&open[rng.below(open.len() as u64) as usize])]
                    } else {
                        open.iter().map(Case::recv).collect()
                    };
                    match run_select(cases.clone(), &active, until).await {
                        Some(Fired::Received { value: Value::Int(v), .. }) => got.push(v),
                        Some(Fired::RecvClosed { case }) => {
                            open.retain(|c| !Arc::ptr_eq(c, &cases[case].chan))
                        }
                        None => cancelled += 1,
                        Some(other) => panic!("unexpected {other:?}"),
                    }
                }
                active.fetch_sub(1, Ordering::SeqCst);
                (got, cancelled)
            }));
        }
        let mut cancels = 0;
        for s in senders {
            cancels += s.await.unwrap();
        }
        for c in chans.iter() {
            c.close(&active).unwrap();
        }
        let mut all = Vec::new();
        for r in receivers {
            let (got, c) = r.await.unwrap();
            all.extend(got);
            cancels += c;
        }
        (all, cancels)
    };
    let (mut all, cancels) =
        tokio::time::timeout(Duration::from_secs(60), work).await.expect("stress test finished in time");
    let n = SENDERS * PER;
    assert_eq!(all.len() as i64, n, "every value received, none twice");
    assert_eq!(all.iter().sum::<i64>(), n * (n - 1) / 2);
    all.sort_unstable();
    assert!(all.iter().enumerate().all(|(i, &v)| v == i as i64), "each value exactly once");
    let lost = CANCEL_LOST.load(Ordering::Relaxed);
    eprintln!("stress: {cancels} waits cancelled, {lost} cancels lost to a committed case");
    assert!(cancels > 100, "the test must really cancel waits (cancelled {cancels})");
    assert_eq!(active.load(Ordering::SeqCst), 1, "accounting balances");
    assert!(chans.iter().all(|c| c.parked() == (0, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_rendezvous_channels_passes_every_value_in_order() {
    const STAGES: usize = 50;
    const VALUES: i64 = 500;
    let chans: Vec<Arc<Channel>> = (0..=STAGES).map(|i| Channel::new(i as u64, 0)).collect();
    let active = Arc::new(AtomicUsize::new(1 + STAGES + 1));
    let work = async {
        for i in 0..STAGES {
            let (from, to, active) = (chans[i].clone(), chans[i + 1].clone(), active.clone());
            tokio::spawn(async move {
                loop {
                    match run_select(vec![Case::recv(&from)], &active, Until::Forever).await {
                        Some(Fired::Received { value: Value::Int(v), .. }) => {
                            let sent =
                                run_select(vec![Case::send(&to, Value::Int(v + 1))], &active, Until::Forever);
                            assert_eq!(sent.await, Some(Fired::Sent { case: 0 }));
                        }
                        Some(Fired::RecvClosed { .. }) => break,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                to.close(&active).unwrap();
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let feeder = {
            let (first, active) = (chans[0].clone(), active.clone());
            tokio::spawn(async move {
                for v in 0..VALUES {
                    let sent = run_select(vec![Case::send(&first, Value::Int(v))], &active, Until::Forever);
                    assert_eq!(sent.await, Some(Fired::Sent { case: 0 }));
                }
                first.close(&active).unwrap();
                active.fetch_sub(1, Ordering::SeqCst);
            })
        };
        let last = &chans[STAGES];
        let mut got = Vec::new();
        loop {
            match run_select(vec![Case::recv(last)], &active, Until::Forever).await {
                Some(Fired::Received { value: Value::Int(v), .. }) => got.push(v),
                Some(Fired::RecvClosed { .. }) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        feeder.await.unwrap();
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(60), work).await.expect("chain finished in time");
    assert_eq!(got, (0..VALUES).map(|v| v + STAGES as i64).collect::<Vec<_>>());
    // Every stage has closed its output, so all stage tasks have counted themselves out.
    let start = std::time::Instant::now();
    while active.load(Ordering::SeqCst) != 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "stages did not finish");
        tokio::task::yield_now().await;
    }
}

/// `csend`'s and `crecv`'s outcome mapped in one step on the hot path (`waits::done`) is the
/// one mapping's (`vm_core::step::one_case` of `waits::one_fired`) for every outcome, a
/// received value stored in the `crecv`'s register instead.
#[test]
fn one_outcome_agrees_with_one_case() {
    let outcomes = [
        Fired::Sent { case: 0 },
        Fired::Received { case: 0, value: Value::Int(9) },
        Fired::RecvClosed { case: 0 },
        Fired::SendClosed { case: 0 },
    ];
    for send in [true, false] {
        for f in &outcomes {
            let mut register = Value::atom("old");
            let direct = super::waits::done((!send).then_some(&mut register), f.clone());
            let mapped = vm_core::step::one_case(send, super::waits::one_fired(f.clone()));
            match mapped {
                vm_core::step::OneCase::Value(v) if !send => {
                    assert_eq!(direct, vm_core::ChanTried::Stored, "{f:?}");
                    assert_eq!(register, v, "{f:?}");
                }
                mapped => {
                    assert_eq!(direct, vm_core::ChanTried::Done(mapped), "send {send}, {f:?}");
                    assert_eq!(register, Value::atom("old"), "{f:?}");
                }
            }
        }
    }
}
