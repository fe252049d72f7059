//! Memory limits at run time: an actor's `:max_heap` and the VM-wide budget
//! (`Config::max_memory`, `vm run --max-memory`). How memory is counted is `vm_core::mem`'s rule;
//! this module decides who pays when a limit is reached.
//!
//! 1. **`:max_heap`.** What an actor holds is its latest count (`Extras::live`, reported by the
//!    interpreter through `Host::memory`), what it allocated since, and its queued messages
//!    (`Inner::held`). Past the limit, the actor is ended with `{:limit, :max_heap}`: by itself
//!    when its own count or allocation shows it (the interpreter stops it before allocating), by
//!    the sender when a delivery shows it (a kill signal, its messages dropped at once).
//! 2. **The VM-wide budget** compares the process's allocated bytes ([`install_memory_probe`]:
//!    the counting allocator vm-cli installs; without it there is no budget) with
//!    `Config::max_memory`. The checks run where memory grows: an actor's count or large
//!    allocation, a delivery that may grow it (a boxed message, or a queue whose buffer is
//!    full: a scalar into a queue with room allocates nothing), a spawn (refused with `:limit`
//!    past the budget).
//! 3. **Who pays.** Past the budget, the actor holding the most (by rule 1's sum; the allocating
//!    actor's own figure includes what it is about to allocate) is ended with
//!    `{:limit, :memory}`: killed, and its queued messages dropped at once; but only if it holds
//!    at least an eighth of the process's memory (else it is not the cause, and ending it would
//!    free little: memory spread over many actors or held by none is left to refused spawns and
//!    rule 4). Only one such victim
//!    is chosen at a time: until it has exited (or for a second), later checks choose nobody, so
//!    one runaway does not take others with it while its memory is being given back. A search
//!    looks at every actor, so one that found nobody to end is not repeated for 20 ms.
//! 4. **The hard line.** Past the budget by an eighth, an actor that allocates more is stopped
//!    itself, whoever the victim is: memory the actors do not hold (socket buffers, tables) can
//!    put the process there, and it must not reach the operating system's limit, where the
//!    allocator would abort the process.

use crate::cell::{ActorCell, RunState};
use crate::mailbox::Signal;
use crate::vm::Vm;
use std::time::{Duration, Instant};
use vm_core::mem::{MemUse, limit_reason};
use vm_core::{Pid, Value};

/// The bytes the process has allocated (rule 2), once installed.
static MEMORY_IN_USE: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Installs the function that says how many bytes the process has allocated: the binary's
/// counting global allocator (vm-cli). Without it the VM-wide budget is not enforced. The first
/// installation stays.
pub fn install_memory_probe(in_use: fn() -> u64) {
    let _ = MEMORY_IN_USE.set(in_use);
}

/// How long a victim is waited for before another may be chosen.
const VICTIM_GRACE: Duration = Duration::from_secs(1);

/// How long after a search that found no victim the next search waits: a search looks at every
/// actor, and a VM past its budget may check at every delivery.
const SEARCH_GAP: Duration = Duration::from_millis(20);

/// The VM's budget state. (A plain `parking_lot` lock, not `crate::sync`'s: nothing here is part
/// of a loom model.)
#[derive(Default)]
pub(crate) struct Budget {
    state: parking_lot::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The latest victim and when it was chosen.
    victim: Option<(Pid, Instant)>,
    /// When the latest search that found no victim ended.
    idle_search: Option<Instant>,
}

/// What a check decided for the actor that made it.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Go on.
    Go,
    /// Stop with this reason.
    Stop(Value),
}

impl Vm {
    /// The process's allocated bytes plus `more`, and the budget, when there is one.
    fn budget_use(&self, more: u64) -> Option<(u64, u64)> {
        match (self.shared.config.max_memory, MEMORY_IN_USE.get()) {
            (Some(max), Some(in_use)) => Some((in_use().saturating_add(more), max)),
            _ => None,
        }
    }

    /// Whether the VM is past its budget (for refusing a spawn).
    pub(crate) fn past_budget(&self) -> bool {
        self.budget_use(0).is_some_and(|(used, max)| used > max)
    }

    /// Rule 1 and 3 for the running actor `cell` reporting `usage` (see `Host::memory`).
    pub(crate) fn check_memory(&self, cell: &ActorCell, usage: MemUse) -> (Verdict, Option<u64>) {
        let (held, max_heap) = cell.mailbox.with(|i| {
            if let Some(live) = usage.live {
                // Only an actor that has something to record (or a limit) gets the extras.
                if live >= u64::from(vm_core::mem::MIN_CHECK) || i.ext_ref().is_some() {
                    i.ext().live = live;
                }
            }
            (i.held(), i.ext_ref().and_then(|e| e.max_heap))
        });
        let mine = held.saturating_add(usage.since).saturating_add(usage.more);
        if max_heap.is_some_and(|max| mine > max) {
            return (Verdict::Stop(limit_reason("max_heap")), max_heap);
        }
        if let Some((used, max)) = self.budget_use(usage.more)
            && used > max
        {
            return (self.relieve(Some((cell, mine)), used, max), max_heap);
        }
        (Verdict::Go, max_heap)
    }

    /// After a delivery to `cell`: rule 3 if the VM is past its budget.
    #[inline]
    pub(crate) fn check_budget_after_delivery(&self) {
        if let Some((used, max)) = self.budget_use(0)
            && used > max
        {
            self.relieve(None, used, max);
        }
    }

    /// Rule 3 and 4: chooses and ends the largest actor. `me` is the actor checking and what it
    /// holds (with what it is about to allocate); the verdict is for it.
    #[cold]
    #[inline(never)]
    fn relieve(&self, me: Option<(&ActorCell, u64)>, used: u64, max: u64) -> Verdict {
        let stop_me = || Verdict::Stop(limit_reason("memory"));
        let hard = used > max.saturating_add(max / 8);
        let otherwise = if hard && me.is_some() { stop_me() } else { Verdict::Go };
        {
            let st = self.shared.budget.state.lock();
            if let Some((pid, at)) = st.victim {
                if me.is_some_and(|(c, _)| c.pid == pid) {
                    return stop_me();
                }
                let alive = self.lookup(pid).is_some_and(|c| c.state() != RunState::Exited);
                if alive && at.elapsed() < VICTIM_GRACE {
                    return otherwise;
                }
            }
            if st.idle_search.is_some_and(|t| t.elapsed() < SEARCH_GAP) {
                return otherwise;
            }
        }
        let mut largest: Option<(u64, std::sync::Arc<ActorCell>)> = None;
        for cell in self.cells() {
            let held = match me {
                Some((c, mine)) if c.pid == cell.pid => mine,
                _ => cell.mailbox.with(|i| if i.closed { 0 } else { i.held() }),
            };
            if largest.as_ref().is_none_or(|(h, _)| held > *h) {
                largest = Some((held, cell));
            }
        }
        // An actor that holds little is not the cause, and ending it would free little: memory
        // spread over many actors (a spawn bomb's children) or held by nobody (tables, socket
        // buffers) leaves the refused spawns and the hard line (rule 4) to act.
        let Some((held, victim)) = largest.filter(|(held, _)| *held >= used / 8) else {
            self.shared.budget.state.lock().idle_search = Some(Instant::now());
            return otherwise;
        };
        *self.shared.budget.state.lock() =
            State { victim: Some((victim.pid, Instant::now())), idle_search: None };
        tracing::warn!(pid = %victim.pid, held, used, budget = max, "the VM is past its memory budget: ending the actor that holds the most");
        if me.is_some_and(|(c, _)| c.pid == victim.pid) {
            return stop_me();
        }
        victim.mailbox.with(|i| i.clear_messages());
        self.signal_cell(&victim, Signal::Kill(limit_reason("memory")));
        otherwise
    }
}
