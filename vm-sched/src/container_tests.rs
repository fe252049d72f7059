//! The crossing race (`container`, rule 4.5): a send of a function value on a channel not yet
//! shared against the channel's first crossing, raced for real thousands of rounds, and
//! model-checked with loom (`--cfg vm_loom`).

#[cfg(not(vm_loom))]
mod raced {
    use crate::chan::waits;
    use crate::container::crossing_refusal;
    use crate::testing::Lines;
    use crate::vm::{Config, Vm};
    use std::sync::{Arc, Barrier};
    use vm_core::{Closure, Fired, SelectCase, Value};

    /// How many rounds each race runs.
    const ROUNDS: usize = 20_000;

    /// Runs `send` (returning whether the value went in) against a crossing of a new buffered
    /// channel, `ROUNDS` times, and checks that exactly one of them got through each time: either
    /// the function went in first and the crossing, which reads what the channel holds, refuses
    /// the channel; or the crossing came first and the send is refused. Both through is the race
    /// this rule closes: a function in a channel another container can receive from.
    fn race(send: impl Fn(&Vm, &Value, &Value) -> bool + Sync) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let vm = Vm::new(Config::default(), Arc::new(Lines::default()));
        let fun = Value::Fun(Arc::new(Closure { func: 0, env: vec![] }));
        let both = Barrier::new(2);
        for round in 0..ROUNDS {
            let chan = waits::new_channel(&vm, 1);
            let (sent, crossed) = std::thread::scope(|s| {
                let sender = s.spawn(|| {
                    both.wait();
                    send(&vm, &chan, &fun)
                });
                both.wait();
                let crossed = crossing_refusal(&chan).is_none();
                (sender.join().unwrap(), crossed)
            });
            assert!(
                sent != crossed,
                "round {round}: the send {} and the crossing {}",
                if sent { "went in" } else { "was refused" },
                if crossed { "went through" } else { "was refused" },
            );
        }
    }

    /// `csend`, `ctrysend`: the host's one-channel try.
    #[test]
    fn a_csend_racing_a_crossing_is_seen_by_one_of_them() {
        race(|vm, chan, fun| {
            let Value::Chan(h) = chan else { unreachable!("a channel") };
            match waits::try_one(vm, "csend", h, Some(fun)) {
                Ok(Some(Fired::Sent(0))) => true,
                Err(e) => {
                    assert!(format!("{:?}", e.msg).contains("cannot be sent on"), "{e:?}");
                    false
                }
                other => panic!("a send on an empty buffered channel: {other:?}"),
            }
        });
    }

    /// A `select` with a send case beside a receive case (the case list's path).
    #[test]
    fn a_select_send_racing_a_crossing_is_seen_by_one_of_them() {
        race(|vm, chan, fun| {
            let Value::Chan(h) = chan else { unreachable!("a channel") };
            let Value::Chan(other) = &waits::new_channel(vm, 0) else { unreachable!("a channel") };
            let cases = [SelectCase::Recv(other.clone()), SelectCase::Send(h.clone(), fun.clone())];
            let m = crate::testing::module(".func main 0\n ret r0\n.end\n");
            let cell = crate::cell::ActorCell::new(vm_core::Pid(1), m, None, vm.default_container().clone());
            match waits::try_now(vm, &cell, &cases) {
                Ok(Some(Fired::Sent(1))) => true,
                Err(e) => {
                    assert!(format!("{:?}", e.msg).contains("cannot be sent on"), "{e:?}");
                    false
                }
                other => panic!("a send on an empty buffered channel: {other:?}"),
            }
        });
    }
}

/// Every interleaving of a send (as `chan::waits::try_one` makes it: check, then try under the
/// lock, checking again when sent back) against the channel's first crossing: exactly one of
/// them gets through.
#[cfg(vm_loom)]
#[test]
fn loom_a_send_racing_a_crossing_is_seen_by_one_of_them() {
    use crate::chan::{Channel, TrySendError};
    use crate::container::{check_chan_send, check_shared_chan_send, crossing_refusal};
    use crate::sync::AtomicUsize;
    use vm_core::{Closure, Handle, Value};

    loom::model(|| {
        let chan = Channel::new(1, 1);
        let value = Value::Chan(Handle::with_payload(1, chan.clone()));
        let sender = {
            let (chan, value) = (chan.clone(), value.clone());
            loom::thread::spawn(move || {
                let Value::Chan(h) = &value else { unreachable!("a channel") };
                let fun = Value::Fun(std::sync::Arc::new(Closure { func: 0, env: vec![] }));
                let active = AtomicUsize::new(1);
                let Ok(mut checked) = check_chan_send("csend", h, &fun) else { return false };
                loop {
                    match chan.try_send_checked(fun.clone(), checked, &active) {
                        Ok(()) => return true,
                        Err(TrySendError::Unchecked(_)) => match check_shared_chan_send("csend", h, &fun) {
                            Ok(()) => checked = true,
                            Err(_) => return false,
                        },
                        Err(e) => panic!("a send on an empty buffered channel: {e:?}"),
                    }
                }
            })
        };
        let crossed = crossing_refusal(&value).is_none();
        let sent = sender.join().unwrap();
        assert!(sent != crossed, "sent: {sent}, crossed: {crossed}");
    });
}
