//! vm-sched: the runtime. **The only crate that spawns tasks** (and builds the tokio runtime).
//!
//! Today this is a minimal driver for a single actor, `main`; the full scheduler (many actors,
//! mailboxes shared between tasks, channels, links, interrupts, whole-VM deadlock detection)
//! replaces its insides in a later issue while keeping this API: [`RunOptions`] in,
//! [`Outcome`] out, [`run_main`] for callers that already run tokio and [`block_on_run`] for the
//! CLI, which must not build runtimes or spawn tasks itself.
//!
//! The driver loop (see [`driver`]) steps the actor with `vm_core::interp::step` for
//! [`RunOptions::fuel_per_slice`] units of fuel at a time and completes the effects it blocks on:
//! - `Yielded`: `tokio::task::yield_now()`, so a busy loop cannot hold a worker thread;
//! - `Print`: the line goes to [`vm_io::Output`]; the actor resumes with `nil`, or with an
//!   `:io_error` exception raised at the `print` if standard output failed;
//! - `Sleep`: a tokio sleep, then resume; `Yield`: `yield_now`, then resume;
//! - `Stop(reason)`: the run ends with [`Outcome::Stopped`];
//! - `Receive` (with an optional selective-receive pattern): the actor's own mailbox (only the actor itself can send to it for now, with
//!   `send` to its own pid; sends to any other pid are dropped, as sends to exited actors are).
//!   An empty mailbox and no timeout means nothing can ever wake the actor: the run ends with
//!   [`Outcome::Deadlock`]. With a timeout the driver sleeps and resumes with `Timeout`.
//! - `spawn` fails with an `:unsupported` exception until the scheduler exists; the other actor
//!   operations (registry, links, monitors, signals, interrupts) act as they must when no other
//!   actor exists (see [`driver`]).
//!
//! Before the actor waits on anything other than `print`, the output is flushed, and it is
//! flushed again when the run ends, so the program's output is complete before the caller
//! reports the outcome.

pub mod driver;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use vm_core::{Fault, Location, Module, Value};

pub use driver::{run_main, run_main_with};

/// Fuel per time slice. Fuel is charged on backward jumps and calls, so 4000 units is a few
/// thousand loop iterations or calls: a few tens of microseconds of work for typical code, long
/// enough that the cost of yielding to tokio is negligible and short enough that other tasks
/// on the same worker are not kept waiting noticeably. It is the slice length BEAM uses
/// (4000 reductions).
pub const DEFAULT_FUEL_PER_SLICE: u32 = 4000;

/// How to run a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Fuel per slice before the actor yields to tokio (at least 1; 0 is treated as 1).
    pub fuel_per_slice: u32,
    /// Maximum frame-stack depth of each actor; deeper recursion raises `:stack_overflow`.
    pub max_frames: u32,
    /// Worker threads of the runtime [`block_on_run`] builds; `None` means one per core.
    /// Ignored by [`run_main`], which runs on whatever runtime it is awaited in.
    pub workers: Option<NonZeroUsize>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            fuel_per_slice: DEFAULT_FUEL_PER_SLICE,
            max_frames: vm_core::step::DEFAULT_MAX_FRAMES,
            workers: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `main` returned this value.
    Exited(Value),
    /// An exception was not caught in the main actor.
    Failed {
        /// The exception and the instruction that raised it.
        fault: Fault,
        /// Where that instruction came from.
        location: Location,
    },
    /// The main actor ended with an exit reason instead of returning: `stop reason`, `kill`, an
    /// exit signal (`exit`, a link to an actor that is gone) or an interrupt in mode 2.
    /// `:normal` is a normal end.
    Stopped {
        /// The exit reason.
        reason: Value,
        /// Where the actor was when it ended.
        location: Option<Location>,
    },
    /// Every actor waits and nothing can wake any of them; the report says who waits where.
    Deadlock(String),
}

/// Why a run could not start or finish normally (as opposed to the program failing, which is an
/// [`Outcome`]).
#[derive(Debug)]
pub enum RunError {
    /// The module has no function called `main`.
    NoMain,
    /// `main` takes neither 0 arguments nor 1 (the argument list).
    MainArity(u16),
    /// The tokio runtime could not be built.
    Runtime(std::io::Error),
    /// The VM itself panicked: a bug, never the program's fault.
    Panicked(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::NoMain => write!(f, "the program has no `main` function"),
            RunError::MainArity(n) => write!(
                f,
                "`main` takes {n} arguments; it must take 1 (the command-line arguments as a list \
                 of strings) or 0"
            ),
            RunError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            RunError::Panicked(msg) => write!(f, "internal error: the VM panicked: {msg}"),
        }
    }
}

impl std::error::Error for RunError {}

/// The function index of `main` and its arguments: `args` as a list of strings when `main` takes
/// one argument, nothing when it takes none.
pub fn main_args(module: &Module, args: Vec<String>) -> Result<(u32, Vec<Value>), RunError> {
    let func = module.func_index("main").ok_or(RunError::NoMain)?;
    match module.funcs[func as usize].arity {
        0 => Ok((func, Vec::new())),
        1 => Ok((func, vec![Value::list(args.into_iter().map(Value::str).collect())])),
        n => Err(RunError::MainArity(n)),
    }
}

/// Builds a multi-threaded tokio runtime (`opts.workers` threads, default one per core), runs
/// `main` on it as a task with its output going to standard output, and returns when it ends.
pub fn block_on_run(module: Arc<Module>, args: Vec<String>, opts: RunOptions) -> Result<Outcome, RunError> {
    // Check `main` before building anything, so usage errors are cheap and never race a runtime.
    main_args(&module, args.clone())?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.workers {
        builder.worker_threads(n.get());
    }
    let runtime = builder.enable_all().thread_name("vm-worker").build().map_err(RunError::Runtime)?;
    let output = Arc::new(vm_io::Output::stdout());
    // The actor runs on a worker thread like every actor will under the scheduler, rather than
    // on this thread inside `block_on`.
    let task = runtime.spawn(run_main_with(module, args, opts, output));
    match runtime.block_on(task) {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(RunError::Panicked(panic_message(e.into_panic()))),
        Err(e) => Err(RunError::Panicked(e.to_string())),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_core::{Function, Instr};

    fn module_with_main(arity: u16) -> Module {
        Module {
            consts: vec![],
            funcs: vec![Function {
                name: "main".into(),
                arity,
                nregs: arity.max(1),
                code: vec![Instr::Nil { dst: 0 }, Instr::Ret { a: 0 }],
            }],
            debug: None,
        }
    }

    #[test]
    fn main_gets_its_arguments_as_a_list_of_strings() {
        let (func, args) = main_args(&module_with_main(1), vec!["a".into(), "-b".into()]).unwrap();
        assert_eq!(func, 0);
        assert_eq!(args, vec![Value::list(vec![Value::str("a"), Value::str("-b")])]);
        let (_, args) = main_args(&module_with_main(0), vec!["ignored".into()]).unwrap();
        assert!(args.is_empty());
    }

    #[test]
    fn main_must_exist_and_take_zero_or_one_arguments() {
        assert!(matches!(main_args(&module_with_main(2), vec![]), Err(RunError::MainArity(2))));
        let mut m = module_with_main(1);
        m.funcs[0].name = "start".into();
        assert!(matches!(main_args(&m, vec![]), Err(RunError::NoMain)));
        assert!(matches!(block_on_run(Arc::new(m), vec![], RunOptions::default()), Err(RunError::NoMain)));
        assert!(RunError::MainArity(2).to_string().contains("takes 2 arguments"));
    }

    #[test]
    fn block_on_run_builds_a_runtime_and_runs_main_to_the_end() {
        let mut m = module_with_main(1);
        // main(args) returns its argument list; it prints nothing, keeping test output clean.
        m.funcs[0].code = vec![Instr::Ret { a: 0 }];
        let opts = RunOptions { workers: NonZeroUsize::new(1), ..RunOptions::default() };
        let outcome = block_on_run(Arc::new(m), vec!["a".into()], opts).unwrap();
        assert_eq!(outcome, Outcome::Exited(Value::list(vec![Value::str("a")])));
    }

    #[test]
    fn default_options() {
        let o = RunOptions::default();
        assert_eq!(o.fuel_per_slice, DEFAULT_FUEL_PER_SLICE);
        assert_eq!(o.max_frames, vm_core::step::DEFAULT_MAX_FRAMES);
        assert_eq!(o.workers, None);
    }

    #[test]
    fn panic_messages_are_recovered() {
        assert_eq!(panic_message(Box::new("boom")), "boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_message(Box::new(7)), "(no message)");
    }
}
