//! vm-sched: the runtime. **The only crate that spawns tasks.**
//!
//! - `mailbox`: an actor's message queue, control port and the wake protocol (loom-checked).
//! - `vm`: the runtime handle: registry, spawn, routing, exits, deadlock detection,
//!   introspection.
//! - `actor`: the per-actor driver loop and the `Host` the interpreter sees.
//! - `chan`: rendezvous and buffered channels with a cancel-safe select (loom-checked).
//! - `heartbeat`: the watchdog that reports an actor holding a worker thread too long.
//! - `run`: [`block_on_run`], which builds the tokio runtime and runs a program to its end with
//!   its output on standard output (what `vm run` calls, so the CLI spawns nothing).
//! - `session`: [`Session`], a long-lived runtime driven from outside (what `vm repl` uses), and
//!   the tracing the runtime emits about each actor (a span per actor, activity, exits).
//! - `testing` (tests and the `testing` feature only): the shared test support — output
//!   capture, running a program on a fresh runtime, expected files (`UPDATE_EXPECT=1`).
//!
//! The runtime's behaviour is tested as data: `tests/programs/*.vasm`, each with its expected
//! output, run in-process by `tests/programs.rs`.

pub mod actor;
pub mod chan;
pub mod heartbeat;
pub mod mailbox;
pub mod run;
mod select;
pub mod session;
mod sync;
pub mod vm;

pub use mailbox::{Signal, Wait};
pub use run::{RunError, RunOptions, block_on_run};
pub use session::{Eval, EvalEnd, Session};
pub use vm::{ActorInfo, Config, Hold, Outcome, Output, RunState, Vm};

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(all(test, not(vm_loom)))]
mod tests;
