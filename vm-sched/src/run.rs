//! Running a whole program on a runtime built here: what `vm run` calls, so that the CLI builds
//! no runtime and spawns no task.
//!
//! [`block_on_run`] builds a multi-thread tokio runtime ([`RunOptions::workers`] threads, default
//! one per core), creates a [`Vm`] whose `print` output goes to standard output through
//! [`StdoutSink`], runs `main` as an actor with [`Vm::run_main`], and returns its [`Outcome`]
//! once `main` ends or the VM deadlocks. `vm run` exits when `main` returns: other actors still
//! running then are abandoned with the runtime, and lines they print after that are dropped.
//!
//! **The process's first thread.** A program that calls a native bound to `main` (a library
//! that insists on the process's first thread, as GUI toolkits do) gets that thread: when the
//! module names such a native ([`crate::affine::needs_main_thread`]), [`block_on_run`] starts
//! the runtime on a thread of its own (`vm-runtime`) and serves the `main` executor on the
//! thread that called it until the run ends. `vm run` calls it from the process's first thread;
//! a program without such natives runs as before, with no thread added.
//!
//! **Output buffering.** `print` output goes through [`vm_io::Output`], a 64 KiB buffer (a
//! `print` per loop iteration must not cost a system call). The buffer is flushed
//! - shortly after output appears: the first line written into an empty buffer wakes a flusher
//!   task, which waits [`FLUSH_DELAY`] (so a burst of lines becomes one write) and flushes. A
//!   program that prints and then waits (a server announcing its port) shows its output within a
//!   few milliseconds, and a VM where nothing prints wakes nobody, keeping it at 0 % CPU;
//! - after every line when standard output is a terminal (see [`vm_io::Output`]);
//! - when the buffer fills, and once more when `main` has ended, before [`block_on_run`] returns
//!   and the CLI reports the outcome. Output is therefore complete and in order at exit, whatever
//!   the exit status.

use crate::vm::{Config, Outcome, Output, Vm};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vm_core::Module;
use vm_dist::NodeId;

/// How long the flusher waits after output first appears before it flushes.
pub const FLUSH_DELAY: Duration = Duration::from_millis(5);

/// How to run a program.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Fuel per slice: an actor yields to tokio after this many calls and backward jumps
    /// (at least 1; 0 is treated as 1).
    pub fuel_per_slice: u32,
    /// Default maximum frame depth of each actor; deeper recursion raises `:stack_overflow`.
    pub max_frames: u32,
    /// Worker threads; `None` means one per core.
    pub workers: Option<NonZeroUsize>,
    /// What the program may do (`--allow-net`, `--allow-read`, `--allow-write`).
    pub perms: vm_io::Permissions,
    /// Seeds the actors' random generators (`--seed`), so a run can be repeated; `None`
    /// seeds them from the process's own randomness.
    pub seed: Option<u64>,
    /// The heartbeat warns of an actor holding a worker thread longer than this (milliseconds).
    pub hog_threshold_ms: u64,
    /// The VM-wide memory budget in bytes (`--max-memory`; see `budget`).
    pub max_memory: Option<u64>,
    /// The cluster to join as a node (`--node`, `--cluster`), if any.
    pub cluster: Option<crate::cluster::ClusterOptions>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        let config = Config::default();
        RunOptions {
            fuel_per_slice: config.fuel,
            max_frames: config.max_frames,
            workers: None,
            perms: vm_io::Permissions::default(),
            seed: None,
            hog_threshold_ms: config.hog_threshold_ms,
            max_memory: None,
            cluster: None,
        }
    }
}

impl RunOptions {
    /// The VM configuration these options describe (other settings at their defaults).
    pub fn config(&self) -> Config {
        Config {
            fuel: self.fuel_per_slice.max(1),
            max_frames: self.max_frames,
            perms: self.perms.clone(),
            seed: self.seed,
            hog_threshold_ms: self.hog_threshold_ms,
            max_memory: self.max_memory,
            ..Config::default()
        }
    }
}

/// Why a program could not be run to an [`Outcome`].
#[derive(Debug)]
pub enum RunError {
    /// The module cannot be started: no `main`, or `main` with the wrong arity.
    Usage(String),
    /// The tokio runtime could not be built.
    Runtime(std::io::Error),
    /// The VM itself panicked: a bug, never the program's fault.
    Panicked(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Usage(msg) => f.write_str(msg),
            RunError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            RunError::Panicked(msg) => write!(f, "internal error: the VM panicked: {msg}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Checks that `module` can be started by `vm run`: it has a `main` taking one argument (the
/// command-line arguments as a list of strings) or none.
pub fn check_main(module: &Module) -> Result<(), RunError> {
    let main = module
        .func_index("main")
        .ok_or_else(|| RunError::Usage("the program has no `main` function".into()))?;
    match module.funcs[main as usize].arity {
        0 | 1 => Ok(()),
        n => Err(RunError::Usage(format!(
            "`main` takes {n} arguments; it must take 1 (the command-line arguments as a list of \
             strings) or 0"
        ))),
    }
}

/// Runs `main` with `args` on a new multi-thread runtime, printing to standard output, and
/// returns how it ended. A program that calls natives bound to `main` has them run on the
/// calling thread meanwhile. See the module docs.
pub fn block_on_run(module: Arc<Module>, args: Vec<String>, opts: RunOptions) -> Result<Outcome, RunError> {
    // Usage errors are found before anything is built.
    check_main(&module)?;
    if !crate::affine::needs_main_thread(&module) {
        return run_here(module, args, opts, None);
    }
    let main = crate::affine::MainThread::new();
    let exec = main.executor();
    let runtime = std::thread::Builder::new()
        .name("vm-runtime".into())
        .spawn(move || {
            let outcome = run_here(module, args, opts, Some(exec.clone()));
            crate::affine::MainThread::stop(&exec);
            outcome
        })
        .map_err(RunError::Runtime)?;
    main.serve();
    runtime.join().unwrap_or_else(|p| Err(RunError::Panicked(panic_message(p))))
}

/// [`block_on_run`] on this thread, with `main`'s executor if one is given.
fn run_here(
    module: Arc<Module>,
    args: Vec<String>,
    opts: RunOptions,
    main: Option<Arc<crate::affine::ExecHandle>>,
) -> Result<Outcome, RunError> {
    let cluster = opts.cluster.clone();
    on_runtime(&opts, opts.config(), main, move |vm| async move {
        if let Some(c) = &cluster {
            join(&vm, module.clone(), c).await?;
        }
        let outcome = vm.run_main(module, args).await;
        // Peers see a node that ends as gone at once, not after their silence limit.
        vm.leave_cluster().await;
        outcome
    })
}

/// Joins the cluster `opts` names, or says why not.
async fn join(vm: &Vm, module: Arc<Module>, opts: &crate::cluster::ClusterOptions) -> Result<NodeId, String> {
    #[cfg(not(vm_loom))]
    return crate::cluster::join_nats(vm, module, opts).await.map_err(|e| e.to_string());
    #[cfg(vm_loom)]
    {
        let _ = (vm, module, opts);
        Err("this build has no NATS transport".into())
    }
}

/// `vm node`: joins the cluster `opts.cluster` names and serves remote spawns of `module`'s
/// functions (it has no `main`) until SIGTERM or SIGINT, then leaves the cluster gracefully
/// (its peers see it gone at once). `ready` is called with the node's identity once it is up.
pub fn block_on_node(
    module: Arc<Module>,
    opts: RunOptions,
    ready: impl FnOnce(&NodeId) + Send + 'static,
) -> Result<Outcome, RunError> {
    let Some(cluster) = opts.cluster.clone() else {
        return Err(RunError::Usage("a node needs --node NAME and --cluster URL".into()));
    };
    on_runtime(&opts, opts.config(), None, move |vm| async move {
        let mut term = vm_io::ctrl_c::CtrlC::term().map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
        let mut int = vm_io::ctrl_c::CtrlC::new().map_err(|e| format!("cannot catch SIGINT: {e}"))?;
        let me = join(&vm, module, &cluster).await?;
        ready(&me);
        tokio::select! {
            _ = term.pressed() => {}
            _ = int.pressed() => {}
        }
        vm.leave_cluster().await;
        Ok(Outcome::Exited(vm_core::Value::Nil))
    })
}

/// `vm nodes`: the live nodes of the cluster `opts` names, seen from outside it.
pub fn block_on_census(opts: &crate::cluster::ClusterOptions) -> Result<Vec<vm_dist::NodeInfo>, RunError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RunError::Runtime)?;
    #[cfg(not(vm_loom))]
    return runtime.block_on(crate::cluster::census(opts)).map_err(|e| RunError::Usage(e.to_string()));
    #[cfg(vm_loom)]
    {
        let _ = (runtime, opts);
        Err(RunError::Usage("this build has no NATS transport".into()))
    }
}

/// Builds the runtime `opts` describes, runs `body` on a VM with `config` printing to standard
/// output (and `main`'s executor, if given), and returns its outcome once `body` ends, output
/// flushed (see the module docs). `vm run` and `vm resume` (`persist`) both run this way.
pub(crate) fn on_runtime<F, Fut, T>(
    opts: &RunOptions,
    config: Config,
    main: Option<Arc<crate::affine::ExecHandle>>,
    body: F,
) -> Result<T, RunError>
where
    F: FnOnce(Vm) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send,
    T: Send + 'static,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.workers {
        builder.worker_threads(n.get());
    }
    let runtime = builder.enable_all().thread_name("vm-worker").build().map_err(RunError::Runtime)?;
    let sink = Arc::new(StdoutSink::new(Arc::new(vm_io::Output::stdout())));
    let task = runtime.spawn({
        let sink = sink.clone();
        async move {
            let flusher = tokio::spawn(sink.clone().flush_loop());
            let vm = Vm::new(config, sink.clone());
            if let Some(main) = main {
                vm.shared.executors.install_main(main);
            }
            let result = body(vm).await;
            flusher.abort();
            result
        }
    });
    let joined = runtime.block_on(task);
    // Whatever happened, what the program printed so far goes out before the caller reports.
    sink.close();
    // Actors still running are abandoned: `vm run` ends when `main` does.
    runtime.shutdown_background();
    match joined {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(msg)) => Err(RunError::Usage(msg)),
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

/// The VM's [`Output`] for `vm run`: lines go to a [`vm_io::Output`], flushed by a flusher task
/// shortly after they appear (see the module docs).
pub struct StdoutSink {
    out: Arc<vm_io::Output>,
    /// Set by the first line after a flush; the flusher clears it.
    dirty: AtomicBool,
    wake: tokio::sync::Notify,
    /// Set once the run has ended: later lines are dropped.
    closed: AtomicBool,
    /// Set after the first write error, so it is logged once.
    failed: AtomicBool,
}

impl StdoutSink {
    /// A sink writing to `out`.
    pub fn new(out: Arc<vm_io::Output>) -> StdoutSink {
        StdoutSink {
            out,
            dirty: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        }
    }

    /// Flushes shortly after output appears, forever; spawn it and abort it when done.
    pub async fn flush_loop(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(FLUSH_DELAY).await;
            // Clear before flushing: a line written during the flush sets it again and wakes
            // the next round, so no line can be left behind.
            self.dirty.store(false, Ordering::SeqCst);
            self.flush();
        }
    }

    /// Flushes what is buffered and drops every later line.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.flush();
    }

    fn report(&self, e: std::io::Error) {
        // Write errors are sticky in `vm_io::Output`; say it once. A reader that went away
        // (`vm run prog | head`) is normal and not worth a warning.
        if !self.failed.swap(true, Ordering::SeqCst) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                tracing::debug!("standard output closed: {e}");
            } else {
                tracing::warn!("cannot write to standard output: {e}");
            }
        }
    }
}

impl StdoutSink {
    fn emit(&self, write: impl FnOnce(&vm_io::Output) -> std::io::Result<()>) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = write(&self.out) {
            self.report(e);
            return;
        }
        if !self.dirty.swap(true, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

impl Output for StdoutSink {
    fn line(&self, text: &str) {
        self.emit(|out| out.print_line(text));
    }

    fn write(&self, bytes: &[u8]) {
        self.emit(|out| out.write_bytes(bytes));
    }

    fn flush(&self) {
        if let Err(e) = self.out.flush() {
            self.report(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Bytes as Capture;
    use vm_core::{Function, Instr, Value};

    fn module_with_main(arity: u16, code: Vec<Instr>) -> Module {
        Module {
            consts: vec![],
            funcs: vec![Function { name: "main".into(), arity, nregs: arity.max(1), code }],
            debug: None,
        }
    }

    #[test]
    fn main_must_exist_and_take_zero_or_one_arguments() {
        let ret = || vec![Instr::Nil { dst: 0 }, Instr::Ret { a: 0 }];
        assert!(check_main(&module_with_main(0, ret())).is_ok());
        assert!(check_main(&module_with_main(1, ret())).is_ok());
        let e = check_main(&module_with_main(2, ret())).unwrap_err();
        assert!(e.to_string().contains("`main` takes 2 arguments"), "{e}");
        let mut m = module_with_main(1, ret());
        m.funcs[0].name = "start".into();
        let e = block_on_run(Arc::new(m), vec![], RunOptions::default()).unwrap_err();
        assert_eq!(e.to_string(), "the program has no `main` function");
    }

    #[test]
    fn block_on_run_runs_main_to_the_end() {
        // main(args) returns its argument list; it prints nothing, keeping test output clean.
        let m = module_with_main(1, vec![Instr::Ret { a: 0 }]);
        let opts = RunOptions { workers: NonZeroUsize::new(1), fuel_per_slice: 0, ..RunOptions::default() };
        let outcome = block_on_run(Arc::new(m), vec!["a".into(), "-b".into()], opts).unwrap();
        assert_eq!(outcome, Outcome::Exited(Value::list(vec![Value::str("a"), Value::str("-b")])));
    }

    #[test]
    fn options_map_onto_the_vm_config() {
        let o = RunOptions::default();
        assert_eq!(o.fuel_per_slice, Config::default().fuel);
        assert_eq!(o.max_frames, vm_core::step::DEFAULT_MAX_FRAMES);
        assert_eq!(o.workers, None);
        let c = RunOptions {
            fuel_per_slice: 0,
            max_frames: 7,
            hog_threshold_ms: 5000,
            seed: Some(3),
            ..RunOptions::default()
        }
        .config();
        assert_eq!((c.fuel, c.max_frames, c.hog_threshold_ms, c.seed), (1, 7, 5000, Some(3)));
        let c = RunOptions { max_memory: Some(1 << 30), ..RunOptions::default() }.config();
        assert_eq!(c.max_memory, Some(1 << 30));
    }

    #[tokio::test]
    async fn output_is_flushed_shortly_after_it_appears() {
        let cap = Capture::default();
        let sink = Arc::new(StdoutSink::new(Arc::new(vm_io::Output::new(cap.clone(), false))));
        let flusher = tokio::spawn(sink.clone().flush_loop());
        sink.line("listening");
        assert_eq!(cap.text(), "", "buffered, not written line by line");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while cap.text().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(cap.text(), "listening\n");
        // A second burst wakes the flusher again.
        sink.line("a");
        sink.line("b");
        while cap.text().len() < "listening\na\nb\n".len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(cap.text(), "listening\na\nb\n");
        flusher.abort();
    }

    #[test]
    fn close_flushes_and_drops_later_lines() {
        let cap = Capture::default();
        let sink = StdoutSink::new(Arc::new(vm_io::Output::new(cap.clone(), false)));
        sink.line("before");
        sink.close();
        assert_eq!(cap.text(), "before\n");
        sink.line("after");
        sink.flush();
        assert_eq!(cap.text(), "before\n");
    }

    #[test]
    fn panic_messages_are_recovered() {
        assert_eq!(panic_message(Box::new("boom")), "boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_message(Box::new(7)), "(no message)");
    }
}
