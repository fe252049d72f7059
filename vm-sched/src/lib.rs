//! vm-sched: the runtime. **The only crate that spawns tasks.**
//!
//! - `mailbox`: an actor's message queue, control port and the wake protocol (loom-checked).
//! - `vm`: the runtime handle: registry, spawn, routing, exits, deadlock detection,
//!   introspection.
//! - `actor`: the per-actor driver loop and the `Host` the interpreter sees.

pub mod actor;
pub mod chan;
pub mod mailbox;
mod sync;
pub mod vm;

pub use mailbox::{Signal, Wait};
pub use vm::{ActorInfo, Config, Hold, Outcome, Output, RunState, Vm};

#[cfg(all(test, not(vm_loom)))]
mod tests;
