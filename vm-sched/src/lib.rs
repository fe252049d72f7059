//! vm-sched: the runtime. **The only crate that spawns tasks.**
//!
//! Modules, lowest first (each uses only those above it; `chan::waits` and `mailbox` are
//! the exceptions noted):
//! - `sync`: the atomics and locks, swapped for loom's under `--cfg vm_loom`.
//! - `heartbeat`: the watchdog that reports an actor (or an affine job) holding its thread too
//!   long.
//! - `affine`: the executors, the OS threads that thread-affine natives run on (named ones,
//!   one per SQLite connection, and `main`, the process's first thread when `run` gives it).
//! - `chan`: rendezvous and buffered channels with a cancel-safe select (loom-checked); its
//!   `waits` submodule is the actor's side (see the next note).
//! - `mailbox`: an actor's message queue, control port and the wake protocol (loom-checked).
//! - `exit`: why actors end, and what each control signal does to a running, soft-blocked or
//!   real-blocked actor (the one signal-to-reason mapping).
//! - `container`: containers, the programs a VM runs side by side (grants, limits, names,
//!   boundaries, lifecycle).
//! - `cell`: [`ActorCell`], the part of an actor others can see (mailbox, run state, position).
//! - `trace`: the tracing the runtime emits about each actor (a span per actor, activity,
//!   exits).
//! - `prio`: wakeup priorities (precise timers for `:high` actors, stepping aside, `:low`'s
//!   shorter slices).
//! - `vm`: the runtime handle: registry, spawn (the one place actor tasks are spawned),
//!   routing, exits, deadlock detection, introspection.
//! - `chan::waits`: the actor's side of channels (the fast path, the waits, orphan detection).
//!   It sits in the `chan` folder with the channel core, but in this order it comes here: it
//!   uses `vm` and `cell`, and the channel core uses none of them.
//! - `cluster`: the VM as a node of a cluster (vm-dist's node wired in: remote sends, links,
//!   monitors, signals, spawns, the cluster natives).
//! - `host`: the `Host` the interpreter sees while it steps an actor.
//! - `native`: how the driver waits for a native call (awaited I/O, the blocking pool, an
//!   affine executor).
//! - `actor`: the per-actor driver loop, and [`Vm::new`], which wires it into the VM.
//! - `pause`: pausing every actor at a safe point for a snapshot (a consistent cut).
//! - `snapshot`: taking a snapshot of a running VM and restoring one into a fresh VM.
//! - `persist`: running a program with snapshots to a file (`vm run --snapshot`, `vm resume`).
//! - `run`: [`block_on_run`], which builds the tokio runtime and runs a program to its end with
//!   its output on standard output (what `vm run` calls, so the CLI spawns nothing).
//! - `manifest`: the JSON manifest of `vm up`, parsed and checked.
//! - `up`: [`up::block_on_up`], several containers in one VM under their restart types
//!   (what `vm up` calls).
//! - `session`: [`Session`], a long-lived runtime driven from outside (what `vm repl` uses).
//! - `testing` (tests, and the `testing` feature): the shared test support: output capture,
//!   running a program in-process on a fresh runtime, expected files (`UPDATE_EXPECT=1`).
//!
//! The runtime's behaviour is tested as data: `tests/programs/*.vasm`, each with its expected
//! output, run in-process by `tests/programs.rs` (its module docs give the format).

pub mod actor;
pub mod affine;
pub mod budget;
pub mod cell;
pub mod chan;
pub mod cluster;
pub mod container;
pub mod exit;
pub mod heartbeat;
mod host;
pub mod mailbox;
pub mod manifest;
mod native;
mod pause;
pub mod persist;
mod prio;
pub mod run;
pub mod session;
pub mod snapshot;
mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;
pub mod up;
pub mod vm;

pub use affine::ExecutorInfo;
pub use cell::{ActorCell, RunState};
pub use mailbox::{Signal, Wait};
pub use run::{RunError, RunOptions, block_on_run};
pub use session::{Eval, EvalEnd, Session};
pub use vm::{ActorInfo, Config, Hold, Outcome, Output, Vm};

#[cfg(all(test, not(vm_loom)))]
mod tests;
