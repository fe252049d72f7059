//! Why an actor ends, and what a control signal does to it: the one place where signals become
//! exit reasons or exceptions.
//!
//! A signal's effect depends on what the actor is doing when it takes the signal ([`Doing`]):
//! 1. A kill ends the actor with its reason (untrappable); an exit signal ends it with its reason
//!    (a trapping actor's exit signals became messages before they got here); a mode-2
//!    interrupt ends it with reason `{:exception, kind, msg}`. All three, whatever it is doing.
//! 2. A mode-1 interrupt raises its exception: at the current instruction of a running actor
//!    (its next safe point), at the blocked instruction of a soft-blocked one, and when the call
//!    returns for a real-blocked one.
//! 3. A mode-0 interrupt raises only in a soft-blocked actor (the mailbox accepts it only while
//!    the actor waits); one that meets a running or real-blocked actor is stale and dropped.
//! 4. An orphaned-channel signal raises `:orphaned` at the blocked instruction of an actor that
//!    is still in the wait the signal names (its [`WaitId`]): soft-blocked in it, or running
//!    just before it runs the instruction again (after a pause, which is when the census that
//!    sends the signal runs). In any other wait, or real-blocked, it is stale and dropped.

use crate::mailbox::{Signal, WaitId};
use vm_core::{Atom, Exception, Fault, Value, atoms};

/// Why an actor ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ExitReason {
    /// Its first function returned this value (reason `:normal`).
    Returned(Value),
    /// It raised an exception nobody caught (reason `{:exception, kind, msg}`).
    Failed(Fault),
    /// `stop`, an exit signal, or a mode-2 interrupt ended it with this reason.
    Stopped(Value),
    /// It was killed (untrappable) with this reason.
    Killed(Value),
}

impl ExitReason {
    /// The reason value links and monitors see.
    pub fn value(&self) -> Value {
        match self {
            ExitReason::Returned(_) => Value::Atom(atoms::NORMAL),
            ExitReason::Failed(f) => exception_reason(&f.exception),
            ExitReason::Stopped(v) | ExitReason::Killed(v) => v.clone(),
        }
    }
}

/// The reason `{:exception, kind, msg}` of an actor ended by an exception.
pub(crate) fn exception_reason(e: &Exception) -> Value {
    Value::tuple(vec![Value::Atom(atoms::EXCEPTION), Value::Atom(e.kind), e.msg.clone()])
}

/// What an actor is doing when it takes a signal (the design's three thread states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Doing {
    /// Running, or between slices (a safe point).
    Running,
    /// Waiting on a receive, a timer, a channel or I/O.
    SoftBlocked,
    /// In a native call on the blocking pool.
    RealBlocked,
}

/// What a signal does; see the module docs.
#[derive(Debug, PartialEq)]
pub(crate) enum OnSignal {
    /// The actor ends with this reason.
    End(ExitReason),
    /// Raise this exception in the actor (when, depends on what it is doing).
    Raise(Exception),
    /// Stale for what the actor is doing: dropped.
    Ignore,
}

/// The effect of `sig` on an actor that is `doing` this, in the wait `wait` if known; see the
/// module docs.
pub(crate) fn on_signal(sig: Signal, doing: Doing, wait: Option<WaitId>) -> OnSignal {
    match sig {
        Signal::Kill(reason) => OnSignal::End(ExitReason::Killed(reason)),
        Signal::Exit { reason, .. } => OnSignal::End(ExitReason::Stopped(reason)),
        Signal::Interrupt { exc, mode: 1 } => OnSignal::Raise(exc),
        Signal::Interrupt { exc, mode: 0 } => match doing {
            Doing::SoftBlocked => OnSignal::Raise(exc),
            Doing::Running | Doing::RealBlocked => OnSignal::Ignore,
        },
        Signal::Orphaned { exc, at } => match doing {
            Doing::SoftBlocked | Doing::Running if wait == Some(at) => OnSignal::Raise(exc),
            _ => OnSignal::Ignore,
        },
        // A snapshot's pause: the wait gives way and runs again afterwards (see `pause`).
        Signal::Pause => OnSignal::Ignore,
        // Mode 2 (the only other mode the instruction and the REPL let through).
        Signal::Interrupt { exc, .. } => OnSignal::End(ExitReason::Stopped(exception_reason(&exc))),
    }
}

/// The exception raised in an actor waiting on channels (`ids`) that no other live actor can
/// reach.
pub(crate) fn orphaned(ids: &[u64]) -> Exception {
    let names: Vec<String> = ids.iter().map(|id| format!("#chan<{id}>")).collect();
    Exception::new(
        Atom::new("orphaned"),
        format!("orphaned channel: no other live actor can reach {}", names.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_exits_raises_or_nothing_by_what_the_actor_does() {
        let exc = || Exception::new(Atom::new("poke"), "x");
        let int = |mode| Signal::Interrupt { exc: exc(), mode };
        let all = [Doing::Running, Doing::SoftBlocked, Doing::RealBlocked];
        let none = None;
        for doing in all {
            let r = Value::atom("why");
            assert_eq!(
                on_signal(Signal::Kill(r.clone()), doing, none),
                OnSignal::End(ExitReason::Killed(r.clone()))
            );
            let exit = Signal::Exit { from: vm_core::Pid(2), reason: r.clone() };
            assert_eq!(on_signal(exit, doing, none), OnSignal::End(ExitReason::Stopped(r)));
            let stopped = ExitReason::Stopped(exception_reason(&exc()));
            assert_eq!(on_signal(int(2), doing, none), OnSignal::End(stopped));
            assert_eq!(on_signal(int(1), doing, none), OnSignal::Raise(exc()));
        }
        assert_eq!(on_signal(int(0), Doing::SoftBlocked, none), OnSignal::Raise(exc()));
        assert_eq!(on_signal(int(0), Doing::Running, none), OnSignal::Ignore);
        assert_eq!(on_signal(int(0), Doing::RealBlocked, none), OnSignal::Ignore);
        // An orphaned-channel signal applies only in the wait it names.
        let at = WaitId { position: 3 << 32 | 9, reductions: 40 };
        let later = WaitId { reductions: 41, ..at };
        let orphan = || Signal::Orphaned { exc: orphaned(&[7]), at };
        assert_eq!(on_signal(orphan(), Doing::SoftBlocked, Some(at)), OnSignal::Raise(orphaned(&[7])));
        assert_eq!(on_signal(orphan(), Doing::Running, Some(at)), OnSignal::Raise(orphaned(&[7])));
        assert_eq!(on_signal(orphan(), Doing::SoftBlocked, Some(later)), OnSignal::Ignore);
        assert_eq!(on_signal(orphan(), Doing::Running, Some(later)), OnSignal::Ignore);
        assert_eq!(on_signal(orphan(), Doing::RealBlocked, Some(at)), OnSignal::Ignore);
        assert_eq!(on_signal(orphan(), Doing::SoftBlocked, None), OnSignal::Ignore);
        assert_eq!(ExitReason::Stopped(Value::atom("x")).value(), Value::atom("x"));
        assert_eq!(ExitReason::Returned(Value::Int(1)).value(), Value::Atom(atoms::NORMAL));
    }
}
