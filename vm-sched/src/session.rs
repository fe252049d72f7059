//! A long-lived runtime for `vm repl`.
//!
//! [`Session`] owns a multi-thread tokio runtime and a [`Vm`] on it that lives until the session
//! is dropped, with no `main`: the caller spawns actors by function name ([`Session::spawn`]),
//! sends them messages, interrupts and kills them from outside, and runs snippets as temporary
//! actors whose result it waits for ([`Session::eval`], [`Session::wait`]). The calling thread is
//! not a runtime thread; it blocks on the runtime only inside [`Session::wait`] and
//! [`Session::wait_gone`], so actors keep running while the caller waits for input.
//!
//! **Ctrl-C.** After [`Session::catch_ctrl_c`] (an interactive caller), SIGINT no longer ends the
//! process. The listener (vm-io's `ctrl_c::CtrlC`: only vm-io touches the OS) is registered at
//! once, so there is no moment where a Ctrl-C would kill the process; a Ctrl-C during
//! [`Session::wait`] stops the snippet with a mode-2 interrupt carrying `{:interrupted,
//! "interrupted by Ctrl-C"}`, and Ctrl-Cs at other times are dropped.
//!
//! A session holds a [`Hold`] on the VM for its whole life: the person at the prompt is an
//! external source of messages, so the VM is never idle in the sense of deadlock detection.
//! Dropping the session abandons every actor still running (as `vm run` does when `main` ends).

use crate::container::{Container, ContainerSpec};
use crate::mailbox::Signal;
use crate::run::{RunError, RunOptions};
use crate::vm::{Hold, Outcome, Output, Vm};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_core::{Atom, Closure, Exception, Module, Pid, SpawnOpts, Value};
use vm_io::ctrl_c::CtrlC;

/// A running VM with no `main`, driven from outside; see the module docs.
pub struct Session {
    /// `Some` until the session is dropped, when the runtime is shut down without waiting for
    /// the actors.
    runtime: Option<tokio::runtime::Runtime>,
    vm: Vm,
    _hold: Hold,
    /// Set by [`Session::catch_ctrl_c`].
    ctrl_c: Mutex<Option<CtrlC>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The listener has no invariant a panic could break.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A snippet running as a temporary actor; see [`Session::eval`].
pub struct Eval {
    /// The temporary actor.
    pub pid: Pid,
    done: tokio::sync::oneshot::Receiver<Outcome>,
}

/// How waiting for an [`Eval`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalEnd {
    /// The actor ended by itself.
    Done(Outcome),
    /// Ctrl-C was pressed; the actor was stopped (mode-2 interrupt) and ended like this.
    Interrupted(Outcome),
}

/// The exception a Ctrl-C raises in a running `eval`.
pub fn ctrl_c_exception() -> Exception {
    Exception::new(Atom::new("interrupted"), "interrupted by Ctrl-C")
}

impl Session {
    /// Builds the runtime and the VM. `opts` gives the worker threads, fuel and frame limit, as
    /// for `vm run`; `print` output goes to `output`.
    pub fn new(opts: &RunOptions, output: Arc<dyn Output>) -> Result<Session, RunError> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = opts.workers {
            builder.worker_threads(n.get());
        }
        let runtime = builder.enable_all().thread_name("vm-worker").build().map_err(RunError::Runtime)?;
        // `Vm::new` starts the heartbeat task, so it must run inside the runtime.
        let vm = {
            let _in_runtime = runtime.enter();
            Vm::new(opts.config(), output.clone())
        };
        let hold = vm.hold();
        // Containers started in the session are supervised by their restart types, as `vm up`'s.
        let report: crate::up::Report = Arc::new(move |line: &str| output.line(&format!("vm: {line}")));
        runtime.spawn(crate::up::supervise_session(vm.clone(), report));
        Ok(Session { runtime: Some(runtime), vm, _hold: hold, ctrl_c: Mutex::new(None) })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the session")
    }

    /// The VM, for introspection ([`Vm::actors`], [`Vm::info`], [`Vm::whereis`]).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Starts an actor running `func(args)` from `module`, with no parent; returns its pid. Fails
    /// with a message for people when there is no such function, the argument count is wrong, or
    /// the VM refuses (its actor limit).
    pub fn spawn(&self, module: &Arc<Module>, func: &str, args: Vec<Value>) -> Result<Pid, String> {
        self.spawn_in(self.vm.default_container(), module, func, args)
    }

    /// As [`Session::spawn`], in `container` (with its grants and limits).
    pub fn spawn_in(
        &self,
        container: &Arc<Container>,
        module: &Arc<Module>,
        func: &str,
        args: Vec<Value>,
    ) -> Result<Pid, String> {
        let f = function(module, func, args.len())?;
        let _in_runtime = self.runtime().enter();
        let fun = Closure { func: f, env: vec![] };
        self.vm
            .spawn_in(container, module.clone(), &fun, args, SpawnOpts::default(), None, Default::default())
            .map(|(pid, _)| pid)
            .map_err(|e| format!("cannot spawn `{func}`: {e}"))
    }

    /// Starts a container (see [`Vm::start_container`]) on the session's runtime.
    pub fn start_container(&self, spec: ContainerSpec) -> Result<Arc<Container>, String> {
        let _in_runtime = self.runtime().enter();
        self.vm.start_container(spec)
    }

    /// Stops a running container and waits (up to `limit`) until its actors are gone, so its
    /// resources are closed; false if some are still alive then.
    pub fn stop_container(&self, name: &str, limit: Duration) -> Result<bool, String> {
        let c = self.vm.container(name).ok_or_else(|| format!("no container named {name}"))?;
        self.vm.stop_container(name, Value::atom("shutdown"))?;
        let deadline = std::time::Instant::now() + limit;
        while c.live() > 0 {
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(true)
    }

    /// Starts `func` (taking no arguments) of `module` as a temporary actor whose outcome
    /// [`Session::wait`] returns.
    pub fn eval(&self, module: Arc<Module>, func: &str) -> Result<Eval, String> {
        self.eval_in(&self.vm.default_container().clone(), module, func)
    }

    /// As [`Session::eval`], in `container` (with its grants).
    pub fn eval_in(
        &self,
        container: &Arc<Container>,
        module: Arc<Module>,
        func: &str,
    ) -> Result<Eval, String> {
        let f = function(&module, func, 0)?;
        let _in_runtime = self.runtime().enter();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fun = Closure { func: f, env: vec![] };
        let (pid, _) = self
            .vm
            .spawn_in(
                container,
                module,
                &fun,
                vec![],
                SpawnOpts::default(),
                None,
                crate::vm::SpawnHooks { report: Some(tx), before_start: None },
            )
            .map_err(|e| format!("cannot start the snippet: {e}"))?;
        Ok(Eval { pid, done: rx })
    }

    /// From now on, a Ctrl-C (SIGINT) no longer ends the process: it is caught, and while
    /// [`Session::wait`] waits it stops the snippet instead; at any other time it is ignored.
    /// The handler stays installed for the life of the process. Fails if the signal cannot be
    /// caught.
    pub fn catch_ctrl_c(&self) -> Result<(), String> {
        let _in_runtime = self.runtime().enter();
        let listener = CtrlC::new().map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
        *lock(&self.ctrl_c) = Some(listener);
        Ok(())
    }

    /// Blocks until the snippet's actor ends. After [`Session::catch_ctrl_c`], a Ctrl-C during
    /// the wait stops the actor with a mode-2 interrupt carrying [`ctrl_c_exception`]; a Ctrl-C
    /// pressed before the wait began does not count.
    pub fn wait(&self, eval: Eval) -> EvalEnd {
        let Eval { pid, mut done } = eval;
        let vm = self.vm.clone();
        let lost = |r: Result<Outcome, _>| r.unwrap_or_else(|_| Outcome::Stopped(Value::atom("lost")));
        let mut guard = lock(&self.ctrl_c);
        let ctrl_c = guard.as_mut();
        self.runtime().block_on(async move {
            let Some(ctrl_c) = ctrl_c else { return EvalEnd::Done(lost((&mut done).await)) };
            ctrl_c.forget_earlier();
            tokio::select! {
                biased;
                r = &mut done => return EvalEnd::Done(lost(r)),
                () = ctrl_c.pressed() => {}
            }
            vm.signal(pid, Signal::Interrupt { exc: ctrl_c_exception(), mode: 2 });
            EvalEnd::Interrupted(lost(done.await))
        })
    }

    /// Joins the cluster `opts` names as a node serving remote spawns of `module`'s functions
    /// (see [`Session::serve`]).
    #[cfg(not(vm_loom))]
    pub fn join_cluster(
        &self,
        module: Arc<Module>,
        opts: &crate::cluster::ClusterOptions,
    ) -> Result<vm_dist::NodeId, String> {
        let vm = self.vm.clone();
        let opts = opts.clone();
        self.runtime()
            .block_on(async move { crate::cluster::join_nats(&vm, module, &opts).await })
            .map_err(|e| e.to_string())
    }

    /// Leaves the cluster gracefully, if the session is a node (its peers see it at once).
    pub fn leave_cluster(&self) {
        let vm = self.vm.clone();
        self.runtime().block_on(async move { vm.leave_cluster().await });
    }

    /// Serves remote spawns of `module`'s functions from now on (the newest program loaded).
    pub fn serve(&self, module: Arc<Module>) {
        self.vm.serve_module(module);
    }

    /// Delivers `msg` to `pid`; fails if there is no live actor with that pid. A pid of another
    /// node takes the message as a remote send does (waiting while that node is far behind).
    pub fn send(&self, pid: Pid, msg: Value) -> Result<(), String> {
        if !pid.is_local() {
            return match crate::cluster::send(&self.vm, Pid(0), pid, msg) {
                crate::cluster::Remote::Sent => Ok(()),
                crate::cluster::Remote::Refused(e) => Err(e.to_string()),
                crate::cluster::Remote::Wait(fut) => {
                    self.runtime().block_on(fut).map(|_| ()).map_err(|e| e.to_string())
                }
            };
        }
        let cell = self.vm.lookup(pid).ok_or_else(|| no_actor(pid))?;
        self.vm.deliver(&cell, msg);
        Ok(())
    }

    /// Raises `exc` in `pid` with interrupt `mode` (0: only if it is waiting; 1: also if it is
    /// running or in a native call; 2: stop it now). Fails if there is no live actor with that
    /// pid or the mode is not 0, 1 or 2.
    pub fn interrupt(&self, pid: Pid, exc: Exception, mode: u8) -> Result<(), String> {
        if mode > 2 {
            return Err(format!("interrupt mode {mode} does not exist (0, 1 or 2)"));
        }
        if !pid.is_local() {
            let op = vm_core::ActorOp::Interrupt(pid, exc, mode);
            return crate::cluster::control_from_outside(&self.vm, op).map_err(|e| e.to_string());
        }
        self.alive(pid)?;
        self.vm.signal(pid, Signal::Interrupt { exc, mode });
        Ok(())
    }

    /// Ends `pid` untrappably with reason `:killed`; fails if there is no live actor with that
    /// pid.
    pub fn kill(&self, pid: Pid) -> Result<(), String> {
        if !pid.is_local() {
            let op = vm_core::ActorOp::Kill(pid);
            return crate::cluster::control_from_outside(&self.vm, op).map_err(|e| e.to_string());
        }
        self.alive(pid)?;
        self.vm.signal(pid, Signal::Kill(Value::Atom(vm_core::atoms::KILLED)));
        Ok(())
    }

    /// Waits up to `limit` for `pid` to be gone from the actor table; true if it is.
    pub fn wait_gone(&self, pid: Pid, limit: Duration) -> bool {
        let vm = self.vm.clone();
        self.runtime().block_on(async move {
            let start = Instant::now();
            while vm.lookup(pid).is_some() {
                if start.elapsed() >= limit {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            true
        })
    }

    /// Takes a snapshot of the session's VM (see `snapshot`): every actor pauses at a safe point
    /// for the copy, then runs on. Refused while a container started in the session has actors:
    /// a session's snapshot is resumed by `rewind` or, from a file, by `vm resume`, and neither
    /// makes containers (`vm up --snapshot` snapshots a VM of containers; `vm resume --manifest`
    /// resumes it); the containers that have ended are left out.
    pub fn snapshot(&self) -> Result<vm_core::snapshot::Snapshot, String> {
        let vm = self.vm.clone();
        let settings = crate::snapshot::Settings::default();
        let mut s = self
            .runtime()
            .block_on(async move { crate::snapshot::take(&vm, settings).await.map(|(s, _)| s) })?;
        let mut busy: Vec<&str> =
            s.containers.iter().filter(|c| !c.spec.actors.is_empty()).map(|c| c.spec.name.as_str()).collect();
        if !busy.is_empty() {
            busy.sort_unstable();
            let one = busy.len() == 1;
            return Err(format!(
                "a VM of several containers cannot be snapshotted in the REPL, and container{} {} still {} \
                 actors (stop {} first; `vm up --snapshot` snapshots a VM of containers)",
                if one { "" } else { "s" },
                busy.join(", "),
                if one { "has" } else { "have" },
                if one { "it" } else { "them" },
            ));
        }
        s.containers.clear();
        Ok(s)
    }

    /// Writes a snapshot to `path` durably (`vm_io::durable`, one generation).
    pub fn write_snapshot(
        &self,
        s: vm_core::snapshot::Snapshot,
        path: &std::path::Path,
    ) -> Result<(), String> {
        let path = path.to_path_buf();
        self.runtime().block_on(crate::persist::write_file(s, path, 1))
    }

    /// Replaces every actor of the session's VM with those of `s` (`rewind`): the live actors are
    /// killed (their resources closed), then `s` is restored with its time frozen.
    pub fn rewind(&self, s: vm_core::snapshot::Snapshot) -> Result<(), String> {
        let vm = self.vm.clone();
        self.runtime().block_on(async move {
            for cell in vm.cells() {
                vm.signal_cell(&cell, Signal::Kill(Value::Atom(vm_core::atoms::KILLED)));
            }
            let start = Instant::now();
            while vm.live() > 0 {
                if start.elapsed() > Duration::from_secs(5) {
                    return Err(format!("{} actors are still alive after 5 s of being killed", vm.live()));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            crate::snapshot::restore(&vm, s, crate::snapshot::Timers::Frozen).await;
            Ok(())
        })
    }

    fn alive(&self, pid: Pid) -> Result<(), String> {
        self.vm.lookup(pid).map(drop).ok_or_else(|| no_actor(pid))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Actors still running are abandoned, as `vm run` abandons them when `main` ends.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn no_actor(pid: Pid) -> String {
    format!("no live actor {pid}")
}

/// The index of `func` in `module`, checking that it takes `n` arguments.
fn function(module: &Module, func: &str, n: usize) -> Result<u32, String> {
    let f = module.func_index(func).ok_or_else(|| format!("no function named `{func}`"))?;
    let arity = usize::from(module.funcs[f as usize].arity);
    if arity != n {
        let takes = if arity == 1 { "1 argument".to_string() } else { format!("{arity} arguments") };
        return Err(format!("`{func}` takes {takes}, not {n}"));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Lines, module};

    fn session() -> (Session, Arc<Lines>) {
        let out = Arc::new(Lines::default());
        let opts = RunOptions { workers: std::num::NonZeroUsize::new(2), ..RunOptions::default() };
        (Session::new(&opts, out.clone()).unwrap(), out)
    }

    const SERVER: &str = "
.func serve 1
    recv r1
    print r1
    add r0, r0, r1
    jmp again
again:
    tcall serve, r0, 1
.end
.func add3 0
    int r0, 1
    int r1, 2
    add r0, r0, r1
    addi r0, r0, 0
    ret r0
.end
.func spin 0
    int r0, 0
loop:
    addi r0, r0, 1
    jmp loop
.end
.func boom 0
    const r0, :boom
    raise r0, r0
.end
";

    #[test]
    fn max_heap_survives_a_snapshot_and_a_restore() {
        let (s, _) = session();
        let m = module(
            "
.func start 0
    fun r0, hold
    nil r1
    list r1, r1, 0
    const r2, %{:max_heap => 100000}
    spawnx r3, r0, r1, r2
    int r4, 100000
    sleep r4
    ret r3
.end
.func hold 0
    int r0, 100000
    sleep r0
    ret r0
.end
",
        );
        s.spawn(&m, "start", vec![]).unwrap();
        let limited = |snap: &vm_core::snapshot::Snapshot| {
            snap.limits.iter().find(|l| l.max_heap == Some(100_000)).map(|l| Pid(l.pid))
        };
        let mut holder = None;
        for _ in 0..1000 {
            holder = limited(&s.snapshot().unwrap());
            if holder.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let holder = holder.expect("the holder's limit is in the snapshot");
        s.rewind(s.snapshot().unwrap()).unwrap();
        assert_eq!(limited(&s.snapshot().unwrap()), Some(holder), "the restored actor keeps its limit");
        // And it applies: a message larger than the limit ends the restored holder.
        s.send(holder, Value::str("x".repeat(200_000))).unwrap();
        assert!(s.wait_gone(holder, Duration::from_secs(10)));
    }

    #[test]
    fn spawned_actors_take_messages_from_outside() {
        let (s, out) = session();
        let m = module(SERVER);
        let pid = s.spawn(&m, "serve", vec![Value::Int(0)]).unwrap();
        s.send(pid, Value::Int(5)).unwrap();
        s.send(pid, Value::Int(6)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(out.lines(), ["5", "6"]);
        let info = s.vm().info(pid).unwrap();
        assert_eq!(info.location.func, "serve");
        s.kill(pid).unwrap();
        assert!(s.wait_gone(pid, Duration::from_secs(10)));
        assert_eq!(s.send(pid, Value::Nil), Err(format!("no live actor {pid}")));
        assert_eq!(s.kill(pid), Err(format!("no live actor {pid}")));
    }

    #[test]
    fn info_lists_the_monitors_an_actor_holds_until_they_fire() {
        let (s, _) = session();
        let m = module(
            "
.func watch 1
    monitor r1, r0
    recv r2
    recv r2
    ret r2
.end
.func idle 0
    recv r0
    ret r0
.end
",
        );
        let target = s.spawn(&m, "idle", vec![]).unwrap();
        let watcher = s.spawn(&m, "watch", vec![Value::Pid(target)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let monitoring = |p| s.vm().info(p).map(|i| (i.monitoring, i.monitored_by));
        while monitoring(watcher).is_some_and(|(m, _)| m.is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(monitoring(watcher), Some((vec![target], vec![])));
        assert_eq!(monitoring(target), Some((vec![], vec![watcher])));
        // The target ends: the monitor fires and is no longer held.
        s.send(target, Value::Nil).unwrap();
        assert!(s.wait_gone(target, Duration::from_secs(10)));
        while monitoring(watcher).is_some_and(|(m, _)| !m.is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(monitoring(watcher), Some((vec![], vec![])));
    }

    #[test]
    fn spawning_checks_the_function_and_its_arity() {
        let (s, _) = session();
        let m = module(SERVER);
        assert_eq!(s.spawn(&m, "nope", vec![]), Err("no function named `nope`".into()));
        assert_eq!(s.spawn(&m, "serve", vec![]), Err("`serve` takes 1 argument, not 0".into()));
        assert_eq!(s.spawn(&m, "add3", vec![Value::Nil]), Err("`add3` takes 0 arguments, not 1".into()));
        assert!(s.eval(m.clone(), "serve").is_err());
    }

    #[test]
    fn eval_returns_the_value_or_the_failure() {
        let (s, _) = session();
        let m = module(SERVER);
        let e = s.eval(m.clone(), "add3").unwrap();
        assert_eq!(s.wait(e), EvalEnd::Done(Outcome::Exited(Value::Int(3))));
        let e = s.eval(m, "boom").unwrap();
        match s.wait(e) {
            EvalEnd::Done(Outcome::Failed { fault, location }) => {
                assert_eq!(fault.exception.kind, Atom::new("boom"));
                assert_eq!(location.func, "boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interrupts_reach_a_spinning_actor() {
        let (s, _) = session();
        let m = module(SERVER);
        let e = s.eval(m, "spin").unwrap();
        let pid = e.pid;
        assert!(s.interrupt(pid, ctrl_c_exception(), 3).is_err());
        s.interrupt(pid, Exception::new(Atom::new("stop"), "enough"), 1).unwrap();
        match s.wait(e) {
            EvalEnd::Done(Outcome::Failed { fault, .. }) => {
                assert_eq!(fault.exception.kind, Atom::new("stop"))
            }
            other => panic!("{other:?}"),
        }
        assert!(s.interrupt(Pid(9999), ctrl_c_exception(), 0).is_err());
    }
}
