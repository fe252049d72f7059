//! The shared part of an actor ([`ActorCell`]): what other actors and the runtime can see and
//! touch (its mailbox, its run state, where it is), as opposed to its interpreter state, which
//! only its own driver holds.

use crate::container::Container;
use crate::mailbox::{Mailbox, WaitId};
use crate::pause::Slot;
use crate::sync::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::Arc;
use vm_core::module::Location;
use vm_core::{Module, Pid};

/// What an actor is doing, for introspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// Being stepped on a worker thread.
    Running = 0,
    /// Ready to run, waiting for a worker.
    Runnable = 1,
    /// Parked on a receive, a timer, a channel or I/O ("soft-blocked").
    Waiting = 2,
    /// In a blocking native call on another thread ("real-blocked").
    RealBlocked = 3,
    /// Finished.
    Exited = 4,
}

impl RunState {
    fn from_u8(v: u8) -> RunState {
        match v {
            0 => RunState::Running,
            1 => RunState::Runnable,
            2 => RunState::Waiting,
            3 => RunState::RealBlocked,
            _ => RunState::Exited,
        }
    }
}

/// The shared part of an actor: what other actors and the runtime can see and touch.
pub struct ActorCell {
    /// Its pid.
    pub pid: Pid,
    /// Its mailbox, control port and bookkeeping.
    pub mailbox: Mailbox,
    /// Set when a signal is queued, so a running actor checks its control port at the next
    /// safe point without taking the lock every slice.
    pub has_signals: AtomicBool,
    state: AtomicU8,
    /// Its wakeup priority (`vm_core::Priority` as a byte; see `prio`).
    priority: u8,
    /// Counted in the VM's runnable `:high` actors (see `prio`, rule 2).
    pub(crate) prio_pending: AtomicBool,
    /// `func << 32 | pc` of the running frame, updated after every slice.
    position: AtomicU64,
    reductions: AtomicU64,
    /// The module the actor runs (for locations in reports).
    pub module: Arc<Module>,
    /// Its interpreter state while it is parked in a receive, and its snapshot publications
    /// (see `pause`).
    pub(crate) slot: Slot,
    /// The container it belongs to (fixed for its life; see `container`).
    pub container: Arc<Container>,
}

impl ActorCell {
    pub(crate) fn new(
        pid: Pid,
        module: Arc<Module>,
        max_mailbox: Option<usize>,
        container: Arc<Container>,
    ) -> ActorCell {
        ActorCell {
            pid,
            mailbox: Mailbox::with_limit(max_mailbox),
            has_signals: AtomicBool::new(false),
            state: AtomicU8::new(RunState::Runnable as u8),
            priority: container.priority as u8,
            prio_pending: AtomicBool::new(false),
            position: AtomicU64::new(0),
            reductions: AtomicU64::new(0),
            module,
            slot: Slot::default(),
            container,
        }
    }

    /// The cell of an actor being restored from a snapshot, its mailbox refilled.
    pub(crate) fn restored(
        pid: Pid,
        module: Arc<Module>,
        mailbox: Mailbox,
        container: Arc<Container>,
    ) -> ActorCell {
        ActorCell { mailbox, ..ActorCell::new(pid, module, None, container) }
    }

    /// Its wakeup priority.
    pub fn priority(&self) -> vm_core::Priority {
        vm_core::Priority::from_u8(self.priority)
    }

    /// Sets the priority of an actor not yet started.
    pub(crate) fn with_priority(mut self, p: vm_core::Priority) -> ActorCell {
        self.priority = p as u8;
        self
    }

    pub(crate) fn set_state(&self, s: RunState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The current run state.
    pub fn state(&self) -> RunState {
        RunState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn record(&self, position: Option<(u32, u32)>, reductions: u64) {
        if let Some((f, pc)) = position {
            self.position.store((u64::from(f) << 32) | u64::from(pc), Ordering::Relaxed);
        }
        self.reductions.store(reductions, Ordering::Relaxed);
    }

    /// The wait the actor is in, as of its last slice (see [`WaitId`]).
    pub fn wait_id(&self) -> WaitId {
        WaitId { position: self.position.load(Ordering::Relaxed), reductions: self.reductions() }
    }

    /// Fuel the actor has spent, as of its last slice.
    pub fn reductions(&self) -> u64 {
        self.reductions.load(Ordering::Relaxed)
    }

    /// Where the actor is (or was last seen).
    pub fn location(&self) -> Location {
        let p = self.position.load(Ordering::Relaxed);
        self.module.location((p >> 32) as u32, p as u32)
    }
}

/// A select reaches the actor's "counted out" flag through its cell (no extra allocation).
impl crate::sync::CountedFlag for ActorCell {
    fn counted(&self) -> &crate::sync::AtomicBool {
        self.mailbox.counted()
    }
}
