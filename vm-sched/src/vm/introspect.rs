//! The introspection API that `vm repl` (and a deadlock report) uses: every live actor, or one,
//! as an [`ActorInfo`].
//!
//! 1. Each actor's details are read under its own mailbox lock, one actor at a time: a listing
//!    is not a consistent cut of the whole VM (a snapshot pauses for that; see `pause`).
//! 2. Listings are in pid order.

use super::Vm;
use crate::cell::{ActorCell, RunState};
use crate::mailbox::Wait;
use crate::sync::lock;
use std::sync::Arc;
use vm_core::module::Location;
use vm_core::{Atom, Pid};

/// One actor as the introspection API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<Atom>,
    /// Running, runnable, waiting, real-blocked or exited.
    pub state: RunState,
    /// What it waits on, when waiting.
    pub waiting: Option<Wait>,
    /// Queued messages.
    pub mailbox_len: usize,
    /// Fuel spent so far.
    pub reductions: u64,
    /// Current function and source position.
    pub location: Location,
    /// Linked actors.
    pub links: Vec<Pid>,
    /// Actors monitoring this one.
    pub monitored_by: Vec<Pid>,
    /// Actors this one monitors.
    pub monitoring: Vec<Pid>,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// The open resources it owns: id and description (`tcp connection 127.0.0.1:5000`).
    pub resources: Vec<(u64, String)>,
    /// The name of its container (`main` for the default one).
    pub container: String,
}

impl Vm {
    /// Every live actor, in pid order.
    pub fn actors(&self) -> Vec<ActorInfo> {
        self.cells().iter().map(|c| self.info_of(c)).collect()
    }

    /// Every live actor's cell, in pid order.
    pub(crate) fn cells(&self) -> Vec<Arc<ActorCell>> {
        let mut cells: Vec<Arc<ActorCell>> = Vec::with_capacity(self.live());
        for shard in self.shared.shards.iter() {
            cells.extend(lock(shard).values().cloned());
        }
        // Pids are unique, so an unstable sort gives the same order, faster (a snapshot's pause
        // sorts every actor).
        cells.sort_unstable_by_key(|c| c.pid);
        cells
    }

    /// One actor's details.
    pub fn info(&self, pid: Pid) -> Option<ActorInfo> {
        self.lookup(pid).map(|c| self.info_of(&c))
    }

    fn info_of(&self, c: &ActorCell) -> ActorInfo {
        let (name, waiting, mailbox_len, links, monitored_by, monitoring, trap_exit) = c.mailbox.with(|i| {
            (
                i.ext_ref().and_then(|e| e.name),
                c.mailbox.waiting(i),
                i.messages.len(),
                i.ext_ref().map(|e| e.links.clone()).unwrap_or_default(),
                i.ext_ref().map(|e| e.monitors.iter().map(|(_, p)| *p).collect()).unwrap_or_default(),
                i.ext_ref().map(|e| e.monitoring.iter().map(|(_, p)| *p).collect()).unwrap_or_default(),
                i.trap_exit(),
            )
        });
        // A call running on an affine executor makes its caller real-blocked (the cell says
        // waiting: it waits the same way whether the call is queued or running).
        let state = match &waiting {
            Some(Wait::Affine(call)) if call.running() => RunState::RealBlocked,
            _ => c.state(),
        };
        ActorInfo {
            pid: c.pid,
            name,
            state,
            waiting,
            mailbox_len,
            reductions: c.reductions(),
            location: c.location(),
            links,
            monitored_by,
            monitoring,
            trap_exit,
            resources: self.shared.io.owned_by(c.pid.0),
            container: c.container.name().to_string(),
        }
    }

    /// The deadlock report: every actor and what it waits on, where; then each channel waited
    /// on, with the actors parked on it and those that hold it (can reach it, as the last
    /// orphan census found), so that a cycle of channel waits is visible.
    pub fn deadlock_report(&self) -> String {
        let mut out = String::from("deadlock: every actor is waiting and nothing can wake any of them\n");
        // Channel id -> the actors parked on it, in pid order.
        let mut parked: std::collections::BTreeMap<u64, Vec<Pid>> = Default::default();
        for a in self.actors() {
            let name = a.name.map(|n| format!(" ({n})")).unwrap_or_default();
            if let Some(Wait::Chan { chans, .. }) = &a.waiting {
                for id in chans.as_slice() {
                    parked.entry(*id).or_default().push(a.pid);
                }
            }
            let what =
                a.waiting.map(|w| w.to_string()).unwrap_or_else(|| format!("{:?}", a.state).to_lowercase());
            out.push_str(&format!("  {}{name}: waiting in {what} at {}\n", a.pid, a.location));
        }
        let pids = |ps: &mut dyn Iterator<Item = String>| ps.collect::<Vec<_>>().join(", ");
        for (id, on) in parked {
            let on = pids(&mut on.iter().map(|p| p.to_string()));
            let held = match self.shared.orphans.holders(id) {
                Some(h) if h.is_empty() => "; held by no one".to_string(),
                Some(h) => format!(
                    "; held by {}",
                    pids(&mut h.iter().map(|&p| match p {
                        crate::chan::reach::PUBLISHED => "a published service".to_string(),
                        p => Pid(p).to_string(),
                    }))
                ),
                None => String::new(),
            };
            out.push_str(&format!("  #chan<{id}>: parked on it: {on}{held}\n"));
        }
        out
    }
}
