//! Affine executors: the OS threads that thread-affine natives run on (see `vm_io::affine` for
//! the natives' side, and `native` for the waiting actor's side).
//!
//! An executor is a named queue of jobs served in order by one OS thread. The runtime owns
//! them, as it owns every thread and task: [`Executors`] (one per VM) makes each named one
//! (`Bind::Named`) at its first use and keeps it while the VM lives; a `Bind::Fresh` native
//! gets a new one (`sqlite-1`, `sqlite-2`, ...), kept alive by the objects made on it and
//! ended when the last of them is gone. The `main` executor is not a thread the runtime starts:
//! [`MainThread`] lets the process's first thread serve it (see `run`).
//!
//! **A call** ([`Call`]) goes through these steps:
//! 1. The driver queues a job and the actor waits, *soft-blocked*: the call is `Queued`.
//! 2. The executor's thread takes the job and claims it, `Queued` → `Running` (a
//!    compare-and-swap); only then does the native run. From here the actor is *real-blocked*.
//! 3. A signal that reaches the waiting actor first tries to cancel, `Queued` → `Cancelled`.
//!    Whichever of 2 and 3 swaps first wins: a cancelled job is skipped and never runs; a
//!    signal that loses meets a real-blocked actor (`exit`'s rules: mode 0 is dropped, mode 1
//!    raised when the call returns, a kill, an exit or mode 2 ends the actor and abandons the
//!    call, whose result is dropped).
//! 4. The result goes back over a oneshot channel; a panic in the native is a `:panic`
//!    exception for the caller only (`vm_io::natives::guarded`), and the thread goes on.
//!
//! **Turns.** The thread takes at most [`TURN`] jobs from its queue at a time (one lock for
//! the batch), runs them, and comes back: a thread that also serves an event loop (a GUI
//! toolkit's, on `main`) gets a turn of its own between batches, so a stream of calls cannot
//! starve it (wx's livelock). Callers are served in the order they queued; each actor has at
//! most one call in flight, so one busy caller cannot starve the others either.
//!
//! **Waiting for work.** An idle thread spins briefly ([`SPIN`]) before it sleeps on its
//! condition variable, and a poster wakes it only if it sleeps: a call that follows the last
//! one closely (an actor's next statement) finds the thread awake, saving a futex wake-up on
//! each side of a round trip.
//!
//! The claim of steps 2 and 3 is model-checked with loom (`loom_tests` below).

use crate::heartbeat::Heartbeat;
use crate::sync::{AtomicU8, Ordering};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use vm_io::affine::Job;

/// The most jobs a thread takes from its queue in one turn.
pub const TURN: usize = 32;

/// How long an idle executor thread spins for new work before it sleeps.
pub const SPIN: Duration = Duration::from_micros(50);

/// Unique among all executors of the process (objects compare their executor by it).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A call's phase (steps 1 to 3 of the module docs).
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

/// One affine call, shared by the waiting actor (and introspection) and the job.
pub struct Call {
    phase: AtomicU8,
    /// The executor's name.
    executor: Arc<str>,
    /// The native's name.
    native: &'static str,
    /// Where it stands in its executor's sequence of jobs (to say how many are before it).
    seq: u64,
    exec: Weak<Inner>,
    queued_at: Instant,
    /// Microseconds from `queued_at` to when it started (step 2), once it has.
    started_after_us: std::sync::atomic::AtomicU64,
}

impl Call {
    /// Step 2, on the executor's thread: true if the job may run.
    fn start(&self) -> bool {
        let won = self.phase.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if won {
            self.started_after_us.store(self.queued_at.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        won
    }

    /// Step 3, for the waiting actor: true if the call was still queued and now never runs.
    pub(crate) fn cancel(&self) -> bool {
        self.phase.compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether the native is running (or has run): the caller is real-blocked.
    pub fn running(&self) -> bool {
        self.phase.load(Ordering::Acquire) == RUNNING
    }
}

/// Two waits on calls are equal when they are the same call.
impl PartialEq for Call {
    fn eq(&self, other: &Call) -> bool {
        std::ptr::eq(self, other)
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Call({} on {})", self.native, self.executor)
    }
}

/// For `ps` and `info`: `affine test (affine_sleep: running 12 ms)`, or `(affine_log: queued #2,
/// 3 ms)`: the second job its thread will take, queued 3 ms ago.
impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waited = self.queued_at.elapsed();
        if self.running() {
            let started = Duration::from_micros(self.started_after_us.load(Ordering::Relaxed));
            let ran = waited.saturating_sub(started);
            write!(f, "affine {} ({}: running {} ms)", self.executor, self.native, ran.as_millis())
        } else {
            // Its place in the line: 1 when it is the next job the thread takes.
            let place =
                self.exec.upgrade().map_or(0, |e| self.seq.saturating_sub(e.taken.load(Ordering::Relaxed)))
                    + 1;
            write!(
                f,
                "affine {} ({}: queued #{place}, {} ms)",
                self.executor,
                self.native,
                waited.as_millis()
            )
        }
    }
}

/// An executor's shared state: its queue and its figures.
struct Inner {
    name: Arc<str>,
    id: u64,
    queue: parking_lot::Mutex<VecDeque<Job>>,
    ready: parking_lot::Condvar,
    /// Set while the thread sleeps on `ready`: only then does a poster notify.
    sleeping: AtomicBool,
    /// Set when nobody can post any more (or the runtime ended): the thread drains and ends.
    stopping: AtomicBool,
    /// Jobs posted and taken so far (a call's `seq` is `posted` when it was queued).
    posted: AtomicU64,
    taken: AtomicU64,
    /// Figures for `executors`.
    busy_us: AtomicU64,
    jobs: AtomicU64,
    /// The job running now: its caller, what it runs, when it started.
    current: parking_lot::Mutex<Option<(u64, &'static str, Instant)>>,
    /// The thread ended.
    ended: AtomicBool,
    /// The VM's heartbeat (set when the executor is installed, for `main`).
    heartbeat: parking_lot::Mutex<Weak<Heartbeat>>,
}

impl Inner {
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _q = self.queue.lock();
        self.ready.notify_one();
    }

    /// The thread's loop: turns of at most [`TURN`] jobs until stopped and drained (then every
    /// object still on the thread is dropped there, `vm_io::affine::leave`).
    fn serve(self: Arc<Inner>, handle: Weak<dyn vm_io::affine::Executor>) {
        vm_io::affine::enter(handle, self.id);
        let mut batch = Vec::with_capacity(TURN);
        while self.next_turn(&mut batch) {
            for job in batch.drain(..) {
                self.run(job);
            }
        }
        vm_io::affine::leave();
        if let Some(hb) = self.heartbeat.lock().upgrade() {
            hb.leave();
        }
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Waits for jobs and takes up to [`TURN`] of them; false once stopped with none left.
    fn next_turn(&self, batch: &mut Vec<Job>) -> bool {
        let spin_until = Instant::now() + SPIN;
        let mut q = self.queue.lock();
        loop {
            if !q.is_empty() {
                let n = q.len().min(TURN);
                batch.extend(q.drain(..n));
                self.taken.fetch_add(n as u64, Ordering::Relaxed);
                return true;
            }
            if self.stopping.load(Ordering::SeqCst) {
                return false;
            }
            if Instant::now() < spin_until {
                drop(q);
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                q = self.queue.lock();
                continue;
            }
            self.sleeping.store(true, Ordering::SeqCst);
            self.ready.wait(&mut q);
            self.sleeping.store(false, Ordering::SeqCst);
        }
    }

    fn run(&self, job: Job) {
        let started = Instant::now();
        *self.current.lock() = Some((job.caller, job.what, started));
        let hb = self.heartbeat.lock().upgrade();
        if let Some(hb) = &hb {
            hb.begin_job(job.caller, &self.name, job.what);
        }
        // A call catches its native's panic itself (step 4); this keeps the thread alive
        // through anything else, such as a panic while an object closes.
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job.run)) {
            tracing::error!(executor = %self.name, job = job.what, "affine job panicked: {}", vm_io::natives::panic_text(p));
        }
        if let Some(hb) = &hb
            && let Some(ms) = hb.end()
        {
            tracing::warn!(executor = %self.name, job = job.what, held_ms = ms, "the affine job that held its executor thread has ended");
        }
        *self.current.lock() = None;
        self.busy_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.jobs.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a native's job posts to: an executor (`vm_io::affine::Executor`). Dropping the last
/// handle stops the executor: its thread runs what is queued and ends.
pub struct ExecHandle(Arc<Inner>);

impl vm_io::affine::Executor for ExecHandle {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn id(&self) -> u64 {
        self.0.id
    }

    fn post(&self, job: Job) {
        let inner = &self.0;
        let mut q = inner.queue.lock();
        if inner.stopping.load(Ordering::SeqCst) && inner.ended.load(Ordering::SeqCst) {
            // Dropped after the lock is released: the job may hold the last handle of an object
            // of this executor, whose drop posts here again.
            drop(q);
            drop(job);
            return;
        }
        q.push_back(job);
        inner.posted.fetch_add(1, Ordering::Relaxed);
        if inner.sleeping.load(Ordering::SeqCst) {
            inner.ready.notify_one();
        }
    }
}

impl Drop for ExecHandle {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl ExecHandle {
    /// Queues a call of `native` (its function `f`, with `args`) by actor `caller` and returns
    /// the call's state and where its result will arrive (steps 1, 2 and 4). `keep` stays
    /// alive until the job has run (a fresh executor's handle, so its thread lives that long).
    pub(crate) fn call(
        self: &Arc<Self>,
        io: Arc<vm_io::Io>,
        container: Arc<crate::container::Container>,
        caller: u64,
        native: &'static vm_io::natives::Native,
        args: Vec<vm_core::Value>,
    ) -> (Arc<Call>, tokio::sync::oneshot::Receiver<vm_io::natives::NativeResult>) {
        let inner = &self.0;
        let call = Arc::new(Call {
            phase: AtomicU8::new(QUEUED),
            executor: inner.name.clone(),
            native: native.name,
            seq: inner.posted.load(Ordering::Relaxed),
            exec: Arc::downgrade(inner),
            queued_at: Instant::now(),
            started_after_us: std::sync::atomic::AtomicU64::new(0),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let claim = call.clone();
        let keep = self.clone();
        let run = move || {
            if claim.start() {
                let ctx = vm_io::natives::Ctx {
                    io: &io,
                    pid: caller,
                    grants: &container.grants,
                    console: &container.console,
                };
                let _ = tx.send(vm_io::natives::guarded(|| native.call(&ctx, &args)));
            }
            drop(keep);
        };
        vm_io::affine::Executor::post(&**self, Job { caller, what: native.name, run: Box::new(run) });
        (call, rx)
    }
}

/// One executor as `executors` in the REPL shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorInfo {
    /// Its name.
    pub name: String,
    /// Jobs waiting in its queue.
    pub queued: usize,
    /// Jobs it has run.
    pub jobs: u64,
    /// Time spent running jobs.
    pub busy: Duration,
    /// The job running now: the calling actor (0: the runtime), what it runs, for how long.
    pub current: Option<(u64, &'static str, Duration)>,
}

/// The executors of one VM (see the module docs).
pub struct Executors {
    named: parking_lot::Mutex<HashMap<String, Arc<ExecHandle>>>,
    /// Every executor made, for listing; dead ones are dropped from it as they are seen.
    all: parking_lot::Mutex<Vec<Weak<Inner>>>,
    /// How many fresh executors each prefix has had (for their names).
    fresh: parking_lot::Mutex<HashMap<&'static str, u64>>,
    heartbeat: Weak<Heartbeat>,
}

impl Executors {
    pub(crate) fn new(heartbeat: &Arc<Heartbeat>) -> Executors {
        Executors {
            named: Default::default(),
            all: Default::default(),
            fresh: Default::default(),
            heartbeat: Arc::downgrade(heartbeat),
        }
    }

    fn make(&self, name: String) -> Arc<ExecHandle> {
        let exec = new_executor(name, self.heartbeat.clone());
        self.remember(&exec);
        exec
    }

    fn remember(&self, exec: &Arc<ExecHandle>) {
        let mut all = self.all.lock();
        all.retain(|w| w.upgrade().is_some_and(|e| !e.ended.load(Ordering::Relaxed)));
        all.push(Arc::downgrade(&exec.0));
    }

    /// Makes `exec` (served by the process's first thread, see `run`) this VM's `main`.
    pub(crate) fn install_main(&self, exec: Arc<ExecHandle>) {
        *exec.0.heartbeat.lock() = self.heartbeat.clone();
        self.remember(&exec);
        self.named.lock().insert(MAIN.to_string(), exec);
    }

    /// Starts the thread serving `exec`.
    fn spawn(exec: &Arc<ExecHandle>) -> Result<(), vm_core::Exception> {
        let inner = exec.0.clone();
        let handle: Arc<dyn vm_io::affine::Executor> = exec.clone();
        let weak = Arc::downgrade(&handle);
        std::thread::Builder::new()
            .name(format!("vm-affine-{}", inner.name))
            .spawn(move || inner.serve(weak))
            .map(drop)
            .map_err(|e| {
                vm_core::Exception::new(
                    vm_core::atoms::LIMIT,
                    format!("cannot start an executor thread: {e}"),
                )
            })
    }

    /// The executor a native bound with `bind` runs on, for a call with `args`: `Named`, made
    /// at its first use (`main` only if a [`MainThread`] was installed); `Arg0`, the executor
    /// of the affine resource in the first argument; `Fresh`, a new one.
    pub(crate) fn for_call(
        &self,
        bind: vm_io::natives::Bind,
        native: &str,
        args: &[vm_core::Value],
    ) -> Result<Arc<ExecHandle>, vm_core::Exception> {
        use vm_io::natives::Bind;
        match bind {
            Bind::Named(name) => {
                let mut named = self.named.lock();
                if let Some(e) = named.get(name) {
                    return Ok(e.clone());
                }
                if name == MAIN {
                    return Err(vm_io::affine::wrong_thread(&format!(
                        "{native} must run on the process's main thread, which this VM was not given \
                         (`vm run` gives it to a program that calls such a native)"
                    )));
                }
                let e = self.make(name.to_string());
                Self::spawn(&e)?;
                named.insert(name.to_string(), e.clone());
                Ok(e)
            }
            Bind::Arg0 => {
                let nil = vm_core::Value::Nil;
                let first = args.first().unwrap_or(&nil);
                let Some(res) = vm_io::affine::resource(first) else {
                    return Err(vm_core::Exception::type_error(format!(
                        "{native}: expected a resource bound to a thread, got {}",
                        first.repr()
                    )));
                };
                // Every executor that makes objects is one of the runtime's.
                let any: Arc<dyn std::any::Any + Send + Sync> = res.executor().clone();
                any.downcast::<ExecHandle>().map_err(|_| {
                    vm_io::affine::wrong_thread(&format!(
                        "{native}: {} has no executor of this VM",
                        first.repr()
                    ))
                })
            }
            Bind::Fresh(prefix) => {
                let n = {
                    let mut fresh = self.fresh.lock();
                    let n = fresh.entry(prefix).or_insert(0);
                    *n += 1;
                    *n
                };
                let e = self.make(format!("{prefix}-{n}"));
                Self::spawn(&e)?;
                Ok(e)
            }
        }
    }

    /// Every executor, in the order they were made (for `executors` in the REPL).
    pub fn list(&self) -> Vec<ExecutorInfo> {
        let all: Vec<Arc<Inner>> = self.all.lock().iter().filter_map(Weak::upgrade).collect();
        all.iter()
            .filter(|e| !e.ended.load(Ordering::Relaxed))
            .map(|e| ExecutorInfo {
                name: e.name.to_string(),
                queued: e.queue.lock().len(),
                jobs: e.jobs.load(Ordering::Relaxed),
                busy: Duration::from_micros(e.busy_us.load(Ordering::Relaxed)),
                current: e.current.lock().map(|(caller, what, at)| (caller, what, at.elapsed())),
            })
            .collect()
    }
}

/// The name of the process's first thread's executor.
pub const MAIN: &str = "main";

/// A new executor (no thread serves it yet).
fn new_executor(name: String, heartbeat: Weak<Heartbeat>) -> Arc<ExecHandle> {
    Arc::new(ExecHandle(Arc::new(Inner {
        name: name.into(),
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        queue: Default::default(),
        ready: Default::default(),
        sleeping: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        posted: AtomicU64::new(0),
        taken: AtomicU64::new(0),
        busy_us: AtomicU64::new(0),
        jobs: AtomicU64::new(0),
        current: Default::default(),
        ended: AtomicBool::new(false),
        heartbeat: parking_lot::Mutex::new(heartbeat),
    })))
}

/// The `main` executor, served by the thread that calls [`MainThread::serve`]: the process's
/// first thread, when `run` gives it (see `run`'s docs).
pub(crate) struct MainThread(Arc<ExecHandle>);

impl MainThread {
    pub(crate) fn new() -> MainThread {
        MainThread(new_executor(MAIN.to_string(), Weak::new()))
    }

    /// The executor, to install in the VM.
    pub(crate) fn executor(&self) -> Arc<ExecHandle> {
        self.0.clone()
    }

    /// Serves the executor on the calling thread until [`MainThread::stop`].
    pub(crate) fn serve(&self) {
        let handle: Arc<dyn vm_io::affine::Executor> = self.0.clone();
        self.0.0.clone().serve(Arc::downgrade(&handle));
    }

    /// Ends [`MainThread::serve`] once what is queued has run (from any thread).
    pub(crate) fn stop(exec: &ExecHandle) {
        exec.0.stop();
    }
}

/// Whether `module` calls a native bound to the process's first thread (`main`): then `run`
/// gives that thread to the executor.
pub fn needs_main_thread(module: &vm_core::Module) -> bool {
    module.funcs.iter().flat_map(|f| f.code.iter()).any(|i| match i {
        vm_core::Instr::Native { name, .. } => match module.consts.get(*name as usize) {
            Some(vm_core::Value::Atom(a)) => vm_io::natives::lookup(*a).is_some_and(|n| {
                matches!(n.imp, vm_io::natives::Imp::Affine(vm_io::natives::Bind::Named(MAIN), _))
            }),
            _ => false,
        },
        _ => false,
    })
}

#[cfg(all(test, vm_loom))]
mod loom_tests {
    use super::*;

    /// Steps 2 and 3: the executor claiming a call and a signal cancelling it, in every
    /// interleaving: exactly one wins; a cancelled call never runs, a started one is never
    /// reported cancelled.
    #[test]
    fn a_call_is_either_run_or_cancelled() {
        loom::model(|| {
            let phase = std::sync::Arc::new(AtomicU8::new(QUEUED));
            let ran = std::sync::Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (p, r) = (phase.clone(), ran.clone());
            let executor = loom::thread::spawn(move || {
                if p.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    r.store(true, Ordering::Release);
                }
            });
            let cancelled =
                phase.compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok();
            executor.join().unwrap();
            assert_ne!(cancelled, ran.load(Ordering::Acquire), "exactly one of run and cancel");
            let end = phase.load(Ordering::Acquire);
            assert_eq!(end, if cancelled { CANCELLED } else { RUNNING });
        });
    }
}
