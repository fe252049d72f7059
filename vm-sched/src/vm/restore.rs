//! What a snapshot reads and a restore sets of the VM itself (see `snapshot`): the counters,
//! the clock, the main actor, and restored actors' cells and tasks.

use super::{Outcome, Vm};
use crate::cell::ActorCell;
use crate::sync::{Ordering, lock};
use crate::trace;
use std::sync::Arc;
use vm_core::{ActorState, Pid};

/// What a snapshot reads and a restore sets of the VM itself (see `snapshot`).
impl Vm {
    /// The next pid, monitor reference and channel id.
    pub(crate) fn counters(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (
            s.next_pid.load(Ordering::SeqCst),
            s.next_ref.load(Ordering::SeqCst),
            s.next_chan.load(Ordering::SeqCst),
        )
    }

    /// Sets the counters and the clock of a VM being restored.
    pub(crate) fn restore_counters(&self, (pid, r, chan): (u64, u64, u64), clock_ms: u64) {
        let s = &self.shared;
        s.next_pid.store(pid, Ordering::SeqCst);
        s.next_ref.store(r, Ordering::SeqCst);
        s.next_chan.store(chan, Ordering::SeqCst);
        let elapsed = s.start.elapsed().as_millis() as u64;
        s.clock_offset_ms.store(clock_ms.saturating_sub(elapsed), Ordering::Relaxed);
    }

    /// Adds a restored actor's cell (its mailbox already filled) to the registry, counted live
    /// and active, reporting its outcome to `report` if given. [`Vm::start_restored`] starts it
    /// once every cell is in place.
    pub(crate) fn install_restored(
        &self,
        cell: Arc<ActorCell>,
        report: Option<tokio::sync::oneshot::Sender<Outcome>>,
    ) {
        let pid = cell.pid;
        if let Some(name) = cell.mailbox.with(|i| i.ext_ref().and_then(|e| e.name)) {
            lock(&cell.container.names).insert(name, pid);
        }
        // Counted in its container as a spawn counts it (its end counts it out).
        cell.container.actors.fetch_add(1, Ordering::SeqCst);
        lock(self.shard(pid)).insert(pid.0, cell);
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = report {
            lock(&self.shared.reporters).insert(pid.0, tx);
            self.shared.reporting.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Starts a restored actor's task with its state and its generator's saved state (`None`
    /// from a file older than format 1.2: the actor starts a new stream, docs/snapshots.md).
    pub(crate) fn start_restored(&self, cell: Arc<ActorCell>, mut st: ActorState, rng: Option<u64>) {
        st.rng = rng.unwrap_or_else(|| self.fresh_seed());
        let func = st.frames.first().map_or(0, |f| f.func);
        let span = trace::actor_span(cell.pid, &cell.module, func);
        (self.shared.start_actor)(self.clone(), cell, st, span);
    }

    /// Records the main actor, whose end ends `vm run` (a snapshot records it).
    pub(crate) fn set_main(&self, pid: Pid) {
        self.shared.main.store(pid.0, Ordering::Relaxed);
    }

    /// The main actor, if the VM has one.
    pub(crate) fn main(&self) -> Option<Pid> {
        Some(Pid(self.shared.main.load(Ordering::Relaxed))).filter(|p| p.0 != 0)
    }

    /// The sink of `print` (flushed before a snapshot, so no line prints twice after a resume).
    pub(crate) fn flush_output(&self) {
        self.shared.output.flush();
    }
}
