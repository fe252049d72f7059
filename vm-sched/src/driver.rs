//! The single-actor driver: steps `main`, completes its effects, and decides how the run ends.
//! See the crate docs for the effect-by-effect contract.
//!
//! With one actor, every pid other than `<1>` names an actor that does not exist (never started,
//! or exited), and the actor operations follow from that ([`SoloHost`]): a send there is dropped,
//! linking to it delivers the exit signal `:noproc` at once, monitoring it delivers
//! `{:DOWN, ref, pid, :noproc}` at once, and signals, kills and interrupts for it are dropped.
//! Aimed at itself they act on the running actor. Because `Host` calls cannot stop the stepper
//! mid-slice, an exit signal, kill or interrupt the actor sends itself takes effect when the
//! current `step` returns: before any effect it blocked on is performed, and at most one slice of
//! fuel later for pure computation.

use crate::{Outcome, RunError, RunOptions, main_args};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use vm_core::ops::OperandKind;
use vm_core::value::matches;
use vm_core::{
    ActorOp, ActorState, Atom, Closure, Effect, Exception, Host, Instr, Module, Pid, Resume, SpawnOpts, Step,
    Value, atoms, interp,
};
use vm_io::Output;

/// The pid of the main actor.
pub const MAIN_PID: Pid = Pid(1);

/// Runs `main` with `args`, printing to standard output. See [`run_main_with`].
pub async fn run_main(module: Arc<Module>, args: Vec<String>, opts: RunOptions) -> Result<Outcome, RunError> {
    run_main_with(module, args, opts, Arc::new(Output::stdout())).await
}

/// Runs `main` with `args` until it returns, fails, stops or deadlocks, sending its `print`s to
/// `output`. `output` is flushed before this returns.
pub async fn run_main_with(
    module: Arc<Module>,
    args: Vec<String>,
    opts: RunOptions,
    output: Arc<Output>,
) -> Result<Outcome, RunError> {
    let (func, argv) = main_args(&module, args)?;
    // `main_args` checked the arity, so this cannot fail; map the error anyway rather than panic.
    let mut state = ActorState::new(&module, func, argv).map_err(|_| RunError::NoMain)?;
    state.max_frames = opts.max_frames;
    let mut host = SoloHost::new();
    let fuel = opts.fuel_per_slice.max(1);
    tracing::debug!(fuel, max_frames = opts.max_frames, "main actor starts");

    let outcome = loop {
        let step = interp::step(&mut state, &module, &mut host, fuel);
        // Signals the actor sent itself during the slice come first: they happened before
        // whatever the slice ended on.
        if let Some(reason) = host.terminate.take() {
            break stopped(&module, &state, reason);
        }
        if let Some(e) = host.interrupt.take()
            && matches!(step, Step::Yielded | Step::Blocked(_))
        {
            state.resume(&module, Resume::Raise(e));
            continue;
        }
        match step {
            Step::Yielded => tokio::task::yield_now().await,
            Step::Blocked(Effect::Print(line)) => {
                let how = match output.print_line(&line) {
                    Ok(()) => Resume::Value(Value::Nil),
                    Err(e) => Resume::Raise(io_exception("stdout", &e)),
                };
                state.resume(&module, how);
            }
            Step::Blocked(Effect::Sleep { ms }) => {
                flush_before_wait(&output);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                state.resume(&module, Resume::Value(Value::Nil));
            }
            Step::Blocked(Effect::Yield(_)) => {
                tokio::task::yield_now().await;
                state.resume(&module, Resume::Value(Value::Nil));
            }
            Step::Blocked(Effect::Stop(reason)) => break stopped(&module, &state, reason),
            Step::Blocked(Effect::Receive { pattern, timeout_ms }) => {
                // The stepper takes a waiting message itself through `try_receive`, so nothing
                // matching is in the mailbox here; checking again keeps the driver correct
                // regardless.
                if let Some(msg) = host.try_receive(pattern.as_ref()) {
                    state.resume(&module, Resume::Value(msg));
                    continue;
                }
                match timeout_ms {
                    // Only this actor can fill its mailbox, and it is the one waiting.
                    None => {
                        let what = match &pattern {
                            Some(p) => format!("waiting in receive for a message matching {}", p.repr()),
                            None => "waiting in receive".to_string(),
                        };
                        break Outcome::Deadlock(deadlock_report(&module, &state, &what));
                    }
                    Some(ms) => {
                        flush_before_wait(&output);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let how = match host.try_receive(pattern.as_ref()) {
                            Some(msg) => Resume::Value(msg),
                            None => Resume::Timeout,
                        };
                        state.resume(&module, how);
                    }
                }
            }
            Step::Exited(value) => break Outcome::Exited(value),
            Step::Failed(fault) => {
                let location = module.location(fault.func, fault.pc);
                break Outcome::Failed { fault, location };
            }
        }
    };
    tracing::debug!(reductions = state.reductions, "main actor ends: {outcome:?}");
    if let Err(e) = output.flush() {
        // Nobody is left to raise this in; a reader that went away is normal (`| head`).
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!("standard output: {e}");
        }
    }
    Ok(outcome)
}

/// The outcome of the actor ending with `reason` (`stop`, `kill`, an exit signal) where it is now.
fn stopped(module: &Module, state: &ActorState, reason: Value) -> Outcome {
    let location = state.position().map(|(func, pc)| module.location(func, pc));
    Outcome::Stopped { reason, location }
}

/// Flushes before the actor waits, so nothing it printed is held back while it waits. A failure
/// is sticky in [`Output`] and raised at the next `print`, so it is not lost here.
fn flush_before_wait(output: &Output) {
    if let Err(e) = output.flush() {
        tracing::debug!("flush before waiting failed: {e}");
    }
}

/// The `:io_error` exception for a failed operation on `what`.
fn io_exception(what: &str, e: &std::io::Error) -> Exception {
    Exception::new(Atom::new("io_error"), format!("{what}: {e}"))
}

/// The host of the single main actor. See the module docs for what each operation means when
/// only one actor exists.
struct SoloHost {
    start: Instant,
    mailbox: VecDeque<Value>,
    /// Registered names; only the main actor can hold one.
    names: HashMap<Atom, Pid>,
    trap_exit: bool,
    next_monitor: i64,
    /// The actor ends with this reason when the current step returns.
    terminate: Option<Value>,
    /// This exception is raised in the actor when the current step returns.
    interrupt: Option<Exception>,
}

impl SoloHost {
    fn new() -> SoloHost {
        SoloHost {
            start: Instant::now(),
            mailbox: VecDeque::new(),
            names: HashMap::new(),
            trap_exit: false,
            next_monitor: 1,
            terminate: None,
            interrupt: None,
        }
    }

    /// An exit signal from `from` with `reason` arrives at the main actor.
    fn exit_signal(&mut self, from: Pid, reason: Value) {
        if self.trap_exit {
            self.mailbox.push_back(Value::tuple(vec![Value::Atom(atoms::EXIT), Value::Pid(from), reason]));
        } else if reason != Value::Atom(atoms::NORMAL) && self.terminate.is_none() {
            self.terminate = Some(reason);
        }
    }
}

impl Host for SoloHost {
    fn self_pid(&self) -> Pid {
        MAIN_PID
    }

    fn spawn(
        &mut self,
        _fun: Arc<Closure>,
        _args: Vec<Value>,
        _opts: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception> {
        Err(Exception::new(Atom::new("unsupported"), "spawn needs the scheduler (not yet available)"))
    }

    fn send(&mut self, to: Pid, msg: Value) -> Result<(), Exception> {
        // No other actor exists; a message to any other pid is dropped, exactly as a message
        // to an actor that has exited is.
        if to == MAIN_PID {
            self.mailbox.push_back(msg);
        }
        Ok(())
    }

    fn try_receive(&mut self, pattern: Option<&Value>) -> Option<Value> {
        let i = self.mailbox.iter().position(|m| pattern.is_none_or(|p| matches(p, m)))?;
        self.mailbox.remove(i)
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn control(&mut self, op: ActorOp) -> Result<Value, Exception> {
        let noproc = || Value::Atom(atoms::NOPROC);
        match op {
            ActorOp::Register(name, pid) => {
                if pid != MAIN_PID {
                    return Err(Exception::badarg(format!("register: actor {pid} is not alive")));
                }
                if self.names.contains_key(&name) {
                    return Err(Exception::badarg(format!("register: the name :{name} is already taken")));
                }
                self.names.insert(name, pid);
                Ok(Value::Nil)
            }
            ActorOp::Unregister(name) => {
                self.names.remove(&name);
                Ok(Value::Nil)
            }
            ActorOp::Whereis(name) => Ok(self.names.get(&name).map_or(Value::Nil, |p| Value::Pid(*p))),
            ActorOp::Link(pid) => {
                // Linking to oneself does nothing; every other actor has exited.
                if pid != MAIN_PID {
                    self.exit_signal(pid, noproc());
                }
                Ok(Value::Nil)
            }
            ActorOp::Unlink(_) | ActorOp::Demonitor(_) => Ok(Value::Nil),
            ActorOp::Monitor(pid) => {
                let r = self.next_monitor;
                self.next_monitor += 1;
                if pid != MAIN_PID {
                    self.mailbox.push_back(Value::tuple(vec![
                        Value::Atom(atoms::DOWN),
                        Value::Int(r),
                        Value::Pid(pid),
                        noproc(),
                    ]));
                }
                Ok(Value::Int(r))
            }
            ActorOp::TrapExit(on) => Ok(Value::Bool(std::mem::replace(&mut self.trap_exit, on))),
            ActorOp::Exit(pid, reason) => {
                if pid == MAIN_PID {
                    self.exit_signal(pid, reason);
                }
                Ok(Value::Nil)
            }
            ActorOp::Kill(pid) => {
                if pid == MAIN_PID && self.terminate.is_none() {
                    self.terminate = Some(Value::Atom(atoms::KILLED));
                }
                Ok(Value::Nil)
            }
            ActorOp::Interrupt(pid, exc, mode) => {
                // The target is the running actor itself: mode 0 (only if waiting) does not
                // apply; mode 1 raises at its next fuel check; mode 2 ends it.
                if pid == MAIN_PID {
                    match mode {
                        0 => {}
                        1 => self.interrupt = Some(exc),
                        _ => {
                            if self.terminate.is_none() {
                                self.terminate = Some(exc.to_value());
                            }
                        }
                    }
                }
                Ok(Value::Nil)
            }
        }
    }
}

/// The deadlock report: which actor waits, on which instruction, and where it came from.
///
/// ```text
/// deadlock: every actor is waiting and nothing can wake any of them
///   <1> main: waiting in receive at `recv r1`, prog.vasm:7 (in main, instruction 3)
/// ```
pub fn deadlock_report(module: &Module, state: &ActorState, what: &str) -> String {
    let mut report = String::from("deadlock: every actor is waiting and nothing can wake any of them\n");
    let name =
        state.frames.first().and_then(|f| module.funcs.get(f.func as usize)).map_or("?", |f| f.name.as_str());
    let _ = write!(report, "  {MAIN_PID} {name}: {what}");
    if let Some((func, pc)) = state.position() {
        if let Some(instr) = module.funcs.get(func as usize).and_then(|f| f.code.get(pc as usize)) {
            let _ = write!(report, " at `{}`,", render_instr(module, instr));
        }
        let _ = write!(report, " {}", module.location(func, pc));
    }
    report
}

/// One instruction in assembly syntax, for reports.
fn render_instr(module: &Module, instr: &Instr) -> String {
    let op = instr.opcode();
    let mut s = op.mnemonic().to_string();
    for (i, (&v, kind)) in instr.operands().as_slice().iter().zip(op.operands()).enumerate() {
        s.push_str(if i == 0 { " " } else { ", " });
        match kind {
            OperandKind::Dst | OperandKind::Reg => {
                let _ = write!(s, "r{v}");
            }
            OperandKind::Const => match module.consts.get(v as usize) {
                Some(c) => s.push_str(&c.repr()),
                None => {
                    let _ = write!(s, "const#{v}");
                }
            },
            OperandKind::Func => match module.funcs.get(v as usize) {
                Some(f) => s.push_str(&f.name),
                None => {
                    let _ = write!(s, "func#{v}");
                }
            },
            OperandKind::Label => {
                let _ = write!(s, "@{v}");
            }
            OperandKind::Count | OperandKind::Imm => {
                let _ = write!(s, "{v}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Write};
    use std::sync::Mutex;
    use vm_core::Function;
    use vm_core::module::{DebugInfo, FuncDebug};

    /// An in-memory standard output.
    #[derive(Clone, Default)]
    struct Capture {
        data: Arc<Mutex<Vec<u8>>>,
        broken: bool,
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "reader went away"));
            }
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.data.lock().unwrap().clone()).unwrap()
        }
    }

    fn func(name: &str, arity: u16, nregs: u16, code: Vec<Instr>) -> Function {
        Function { name: name.into(), arity, nregs, code }
    }

    /// A module whose instructions sit on lines 10, 11, 12, ... of `t.vasm`.
    fn module(consts: Vec<Value>, funcs: Vec<Function>) -> Arc<Module> {
        let debug = DebugInfo {
            files: vec!["t.vasm".into()],
            funcs: funcs
                .iter()
                .map(|f| FuncDebug { file: 0, lines: (0..f.code.len() as u32).map(|i| 10 + i).collect() })
                .collect(),
        };
        Arc::new(Module { consts, funcs, debug: Some(debug) })
    }

    /// Runs `module` with captured output, failing the test instead of hanging.
    async fn run(module: Arc<Module>, args: &[&str], opts: RunOptions) -> (Outcome, String) {
        let cap = Capture::default();
        let out = Arc::new(Output::new(cap.clone(), false));
        let args = args.iter().map(|s| s.to_string()).collect();
        let outcome = within(run_main_with(module, args, opts, out)).await.expect("the run could not start");
        (outcome, cap.text())
    }

    /// Awaits `fut`, failing the test if it takes more than 20 seconds.
    async fn within<F: std::future::Future>(fut: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), fut).await.expect("the run did not finish in 20 s")
    }

    #[tokio::test]
    async fn hello_prints_and_exits() {
        let m = module(
            vec![Value::str("hello, world")],
            vec![func(
                "main",
                1,
                2,
                vec![Instr::Const { dst: 1, k: 0 }, Instr::Print { a: 1 }, Instr::Ret { a: 1 }],
            )],
        );
        let (outcome, out) = run(m, &[], RunOptions::default()).await;
        assert_eq!(outcome, Outcome::Exited(Value::str("hello, world")));
        assert_eq!(out, "hello, world\n");
    }

    #[tokio::test]
    async fn main_receives_the_arguments_untouched() {
        let m = module(vec![], vec![func("main", 1, 1, vec![Instr::Print { a: 0 }, Instr::Ret { a: 0 }])]);
        let (outcome, out) = run(m, &["x", "-y", "--z=1"], RunOptions::default()).await;
        let want = Value::list(vec![Value::str("x"), Value::str("-y"), Value::str("--z=1")]);
        assert_eq!(outcome, Outcome::Exited(want));
        assert_eq!(out, "[\"x\", \"-y\", \"--z=1\"]\n");
    }

    #[tokio::test]
    async fn an_uncaught_exception_fails_with_its_location() {
        let m = module(
            vec![],
            vec![func(
                "main",
                0,
                3,
                vec![
                    Instr::Int { dst: 0, imm: 1 },
                    Instr::Int { dst: 1, imm: 0 },
                    Instr::Div { dst: 2, a: 0, b: 1 },
                    Instr::Ret { a: 2 },
                ],
            )],
        );
        let (outcome, _) = run(m, &[], RunOptions::default()).await;
        let Outcome::Failed { fault, location } = outcome else { panic!("{outcome:?}") };
        assert_eq!(fault.exception.kind, atoms::DIV_BY_ZERO);
        assert_eq!((fault.func, fault.pc), (0, 2));
        assert_eq!(location.to_string(), "t.vasm:12 (in main, instruction 2)");
    }

    #[tokio::test]
    async fn receive_on_an_empty_mailbox_is_a_deadlock() {
        let m = module(
            vec![Value::str("before")],
            vec![func(
                "main",
                0,
                2,
                vec![
                    Instr::Const { dst: 1, k: 0 },
                    Instr::Print { a: 1 },
                    Instr::Recv { dst: 0 },
                    Instr::Ret { a: 0 },
                ],
            )],
        );
        let (outcome, out) = run(m, &[], RunOptions::default()).await;
        let Outcome::Deadlock(report) = outcome else { panic!("{outcome:?}") };
        assert!(report.starts_with("deadlock:"), "{report}");
        assert!(
            report.contains("<1> main: waiting in receive at `recv r0`, t.vasm:12 (in main, instruction 2)"),
            "{report}"
        );
        // Output printed before the deadlock is not lost.
        assert_eq!(out, "before\n");
    }

    #[tokio::test]
    async fn an_actor_can_send_to_itself_and_other_sends_are_dropped() {
        let m = module(
            vec![Value::Pid(Pid(99))],
            vec![func(
                "main",
                0,
                4,
                vec![
                    Instr::Self_ { dst: 0 },
                    Instr::Int { dst: 1, imm: 42 },
                    // A send to a pid that does not exist is dropped, not an error.
                    Instr::Const { dst: 3, k: 0 },
                    Instr::Send { to: 3, msg: 3 },
                    Instr::Send { to: 0, msg: 1 },
                    Instr::Recv { dst: 2 },
                    Instr::Ret { a: 2 },
                ],
            )],
        );
        let (outcome, _) = run(m, &[], RunOptions::default()).await;
        assert_eq!(outcome, Outcome::Exited(Value::Int(42)));
    }

    #[tokio::test]
    async fn receive_with_a_timeout_times_out() {
        let m = module(
            vec![Value::atom("got"), Value::atom("timed_out")],
            vec![func(
                "main",
                0,
                3,
                vec![
                    Instr::Int { dst: 1, imm: 20 },
                    Instr::Recvt { dst: 0, ms: 1, target: 3 },
                    Instr::Const { dst: 2, k: 0 },
                    // pc 3: the timeout label.
                    Instr::Const { dst: 2, k: 1 },
                    Instr::Ret { a: 2 },
                ],
            )],
        );
        let started = std::time::Instant::now();
        let (outcome, _) = run(m, &[], RunOptions::default()).await;
        assert_eq!(outcome, Outcome::Exited(Value::atom("timed_out")));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[tokio::test]
    async fn sleep_waits_and_output_is_flushed_before_waiting() {
        let m = module(
            vec![Value::str("first")],
            vec![func(
                "main",
                0,
                2,
                vec![
                    Instr::Const { dst: 0, k: 0 },
                    Instr::Print { a: 0 },
                    Instr::Int { dst: 1, imm: 300 },
                    Instr::Sleep { ms: 1 },
                    Instr::Now { dst: 1 },
                    Instr::Ret { a: 1 },
                ],
            )],
        );
        let cap = Capture::default();
        let out = Arc::new(Output::new(cap.clone(), false));
        let task = tokio::spawn(run_main_with(m, vec![], RunOptions::default(), out));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The actor is asleep; what it printed before must already be visible.
        assert_eq!(cap.text(), "first\n");
        let outcome = within(task).await.unwrap().unwrap();
        let Outcome::Exited(Value::Int(now)) = outcome else { panic!("{outcome:?}") };
        assert!(now >= 300, "{now}");
    }

    #[tokio::test]
    async fn spawn_is_honestly_unsupported() {
        let m = module(
            vec![],
            vec![
                func(
                    "main",
                    0,
                    2,
                    vec![
                        Instr::Fun { dst: 0, f: 1 },
                        Instr::Spawn { dst: 1, f: 0, args: 1, n: 0 },
                        Instr::Ret { a: 1 },
                    ],
                ),
                func("child", 0, 1, vec![Instr::Nil { dst: 0 }, Instr::Ret { a: 0 }]),
            ],
        );
        let (outcome, _) = run(m, &[], RunOptions::default()).await;
        let Outcome::Failed { fault, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(fault.exception.kind, Atom::new("unsupported"));
        assert_eq!(fault.pc, 1);
    }

    #[tokio::test]
    async fn max_frames_bounds_recursion() {
        // f() calls itself forever.
        let m = module(
            vec![],
            vec![
                func("main", 0, 1, vec![Instr::Call { dst: 0, f: 1, args: 0, n: 0 }, Instr::Ret { a: 0 }]),
                func("f", 0, 1, vec![Instr::Call { dst: 0, f: 1, args: 0, n: 0 }, Instr::Ret { a: 0 }]),
            ],
        );
        let opts = RunOptions { max_frames: 50, ..RunOptions::default() };
        let (outcome, _) = run(m, &[], opts).await;
        let Outcome::Failed { fault, location } = outcome else { panic!("{outcome:?}") };
        assert_eq!(fault.exception.kind, atoms::STACK_OVERFLOW);
        assert_eq!(location.func, "f");
    }

    #[tokio::test]
    async fn a_print_to_a_broken_stdout_raises_a_catchable_io_error() {
        let m = module(
            vec![Value::str("x")],
            vec![func(
                "main",
                0,
                3,
                vec![
                    Instr::Try { dst: 1, target: 5 },
                    Instr::Const { dst: 0, k: 0 },
                    Instr::Print { a: 0 },
                    Instr::Endtry {},
                    Instr::Ret { a: 0 },
                    // pc 5: the handler returns the exception's kind.
                    Instr::Tget { dst: 2, t: 1, i: 0 },
                    Instr::Ret { a: 2 },
                ],
            )],
        );
        let out = Arc::new(Output::new(Capture { broken: true, ..Capture::default() }, true));
        let outcome = within(run_main_with(m, vec![], RunOptions::default(), out)).await.unwrap();
        assert_eq!(outcome, Outcome::Exited(Value::atom("io_error")));
    }

    /// A busy loop must yield to tokio: on a single-threaded runtime, the timeout below can only
    /// fire if the driver gives the thread back between slices.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_loop_yields_to_other_tasks() {
        let m = module(vec![], vec![func("main", 0, 1, vec![Instr::Nop {}, Instr::Jmp { target: 0 }])]);
        let cap = Capture::default();
        let fut = run_main_with(m, vec![], RunOptions { fuel_per_slice: 100, ..RunOptions::default() }, {
            Arc::new(Output::new(cap, false))
        });
        let r = tokio::time::timeout(Duration::from_millis(50), fut).await;
        assert!(r.is_err(), "an infinite loop finished: {r:?}");
    }

    /// Assembles `src` (as `t.vasm`), verifies it and runs it with captured output.
    async fn run_src(src: &str) -> (Outcome, String) {
        let m = vm_core::asm::assemble_str("t.vasm", src).unwrap_or_else(|e| panic!("{e:?}"));
        vm_core::verify::verify(&m).unwrap_or_else(|e| panic!("{e:?}"));
        run(Arc::new(m), &[], RunOptions::default()).await
    }

    #[tokio::test]
    async fn selective_receive_skips_other_messages_and_deadlocks_when_none_match() {
        let (outcome, out) = run_src(
            ".func main 0
                self r0
                const r1, {:a, 1}
                send r0, r1
                const r1, {:b, 2}
                send r0, r1
                const r2, {:b, :_}
                recvp r3, r2
                print r3
                recvp r3, r2
                ret r3
            .end",
        )
        .await;
        assert_eq!(out, "{:b, 2}\n");
        let Outcome::Deadlock(report) = outcome else { panic!("{outcome:?}") };
        assert!(
            report.contains(
                "<1> main: waiting in receive for a message matching {:b, :_} at `recvp r3, r2`, t.vasm:10"
            ),
            "{report}"
        );
    }

    #[tokio::test]
    async fn monitoring_or_linking_to_a_gone_actor_signals_noproc_at_once() {
        // Pid <7> names no actor. Hand-built, because assembly has no pid literals.
        let gone = || Value::Pid(Pid(7));
        let noproc = || Value::Atom(atoms::NOPROC);
        let m = module(
            vec![gone(), Value::Bool(true)],
            vec![func(
                "main",
                0,
                4,
                vec![
                    Instr::Const { dst: 0, k: 0 },
                    Instr::Monitor { dst: 1, pid: 0 },
                    Instr::Recv { dst: 2 },
                    Instr::Print { a: 2 },
                    Instr::Const { dst: 3, k: 1 },
                    Instr::Trapexit { dst: 3, on: 3 },
                    Instr::Link { pid: 0 },
                    Instr::Recv { dst: 2 },
                    Instr::Ret { a: 2 },
                ],
            )],
        );
        let (outcome, out) = run(m.clone(), &[], RunOptions::default()).await;
        assert_eq!(out, "{:DOWN, 1, <7>, :noproc}\n");
        assert_eq!(outcome, Outcome::Exited(Value::tuple(vec![Value::Atom(atoms::EXIT), gone(), noproc()])));

        // Without trapping exits, the link's signal ends the actor.
        let mut m = Arc::unwrap_or_clone(m);
        m.consts[1] = Value::Bool(false);
        let (outcome, _) = run(Arc::new(m), &[], RunOptions::default()).await;
        let Outcome::Stopped { reason, location } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason, noproc());
        assert_eq!(location.unwrap().pc, 7);
    }

    #[tokio::test]
    async fn registered_names_resolve_and_collide() {
        let (outcome, out) = run_src(
            ".func main 0
                self r0
                const r1, :me
                register r1, r0
                whereis r2, r1
                print r2
                const r3, \"hi\"
                send r1, r3
                recv r4
                print r4
                try r5, taken
                register r1, r0
                endtry
                ret r0
            taken:
                tget r6, r5, 0
                ret r6
            .end",
        )
        .await;
        assert_eq!(out, "<1>\nhi\n");
        assert_eq!(outcome, Outcome::Exited(Value::Atom(atoms::BADARG)));
    }

    #[tokio::test]
    async fn stop_and_kill_end_the_actor_with_a_reason() {
        let (outcome, _) = run_src(".func main 0\n const r0, :normal\n stop r0\n ret r0\n.end\n").await;
        let Outcome::Stopped { reason, location } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason, Value::Atom(atoms::NORMAL));
        assert_eq!(location.unwrap().to_string(), "t.vasm:3 (in main, instruction 1)");
        // A kill takes effect before the print that follows it.
        let (outcome, out) =
            run_src(".func main 0\n self r0\n kill r0\n const r1, \"after\"\n print r1\n ret r1\n.end\n")
                .await;
        assert_eq!(out, "");
        let Outcome::Stopped { reason, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason, Value::Atom(atoms::KILLED));
    }

    #[tokio::test]
    async fn exit_signals_to_oneself_end_the_actor_unless_trapped() {
        let src = |trap: &str| {
            format!(
                ".func main 0
                    const r0, {trap}
                    trapexit r1, r0
                    self r2
                    const r3, :normal
                    exit r2, r3
                    const r3, :shutdown
                    exit r2, r3
                    recv r4
                    ret r4
                .end"
            )
        };
        let (outcome, _) = run_src(&src("false")).await;
        let Outcome::Stopped { reason, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason, Value::atom("shutdown"));
        // Trapped, both signals arrive as messages; the first one is `:normal`.
        let (outcome, _) = run_src(&src("true")).await;
        let want =
            Value::tuple(vec![Value::Atom(atoms::EXIT), Value::Pid(MAIN_PID), Value::Atom(atoms::NORMAL)]);
        assert_eq!(outcome, Outcome::Exited(want));
    }

    #[tokio::test]
    async fn interrupting_oneself_raises_a_catchable_exception() {
        let (outcome, _) = run_src(
            ".func main 0
                self r0
                const r1, {:stop_it, \"please\"}
                const r2, 1
                try r3, caught
                interrupt r0, r1, r2
                const r4, 1000
                sleep r4
                endtry
                ret r0
            caught:
                ret r3
            .end",
        )
        .await;
        assert_eq!(
            outcome,
            Outcome::Exited(Value::tuple(vec![Value::atom("stop_it"), Value::str("please")]))
        );
    }

    #[tokio::test]
    async fn yield_resumes() {
        let (outcome, _) = run_src(".func main 0\n yield\n self r0\n yieldto r0\n ret r0\n.end\n").await;
        assert_eq!(outcome, Outcome::Exited(Value::Pid(MAIN_PID)));
    }

    #[test]
    fn deadlock_report_names_the_instruction() {
        let m = module(
            vec![Value::str("q")],
            vec![func(
                "main",
                0,
                3,
                vec![Instr::Const { dst: 1, k: 0 }, Instr::Recvt { dst: 0, ms: 2, target: 0 }],
            )],
        );
        let mut state = ActorState::new(&m, 0, vec![]).unwrap();
        state.frames[0].pc = 1;
        let r = deadlock_report(&m, &state, "waiting in receive");
        assert!(
            r.ends_with(
                "<1> main: waiting in receive at `recvt r0, r2, @0`, t.vasm:11 (in main, instruction 1)"
            ),
            "{r}"
        );
        assert_eq!(render_instr(&m, &Instr::Const { dst: 1, k: 0 }), "const r1, \"q\"");
        assert_eq!(render_instr(&m, &Instr::Call { dst: 1, f: 0, args: 2, n: 3 }), "call r1, main, r2, 3");
        assert_eq!(render_instr(&m, &Instr::Endtry {}), "endtry");
    }

    #[test]
    fn the_host_keeps_a_mailbox_for_itself_only() {
        let mut host = SoloHost::new();
        assert_eq!(host.self_pid(), Pid(1));
        host.send(Pid(1), Value::Int(1)).unwrap();
        host.send(Pid(2), Value::Int(2)).unwrap();
        host.send(Pid(1), Value::Int(3)).unwrap();
        assert_eq!(host.try_receive(None), Some(Value::Int(1)));
        assert_eq!(host.try_receive(None), Some(Value::Int(3)));
        assert_eq!(host.try_receive(None), None);
        let e =
            host.spawn(Arc::new(Closure { func: 0, env: vec![] }), vec![], SpawnOpts::default()).unwrap_err();
        assert_eq!(e.kind, Atom::new("unsupported"));
        assert!(host.now_ms() >= 0);
    }
}
