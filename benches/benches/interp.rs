//! The interpreter's hot loop, without the runtime: `benches/programs/fib.vasm` and `loop.vasm`
//! are assembled and verified in-process, and `vm_core::interp::step` is called until `main`
//! returns, with a host that has no other actors, an empty mailbox and a frozen clock. This
//! measures dispatch, calls and fuel accounting alone; `docs/BENCHMARKS.md` has the whole-program
//! comparison with Lua.
//!
//! Run with `cargo bench -p vm-benches --bench interp`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use vm_core::{
    ActorOp, ActorState, Closure, Effect, Exception, Fired, Handle, Host, Module, Pid, Resume, SelectCase,
    SpawnOpts, Step, Value,
};

/// Fuel per `step` call, of the order the runtime gives an actor before it yields to tokio.
const FUEL: u32 = 4000;

/// A host for a lone actor: nothing to spawn, nobody to talk to, and time stands still.
struct LoneHost;

impl Host for LoneHost {
    fn self_pid(&self) -> Pid {
        Pid(1)
    }

    fn spawn(
        &mut self,
        _fun: Arc<Closure>,
        _args: Vec<Value>,
        _opts: SpawnOpts,
    ) -> Result<(Pid, Option<i64>), Exception> {
        Err(Exception::badarg("the interpreter bench runs a single actor"))
    }

    fn send(&mut self, _to: Pid, _msg: Value) -> Result<(), Exception> {
        Ok(())
    }

    fn try_receive(&mut self, _pattern: Option<&Value>) -> Option<Value> {
        None
    }

    fn now_ms(&self) -> i64 {
        0
    }

    fn control(&mut self, op: ActorOp) -> Result<Value, Exception> {
        Err(Exception::badarg(format!("the interpreter bench runs a single actor: {op:?}")))
    }

    fn chan_new(&mut self, _cap: usize) -> Result<Value, Exception> {
        Err(Exception::badarg("the interpreter bench has no channels"))
    }

    fn chan_try(&mut self, _cases: &[SelectCase]) -> Result<Option<Fired>, Exception> {
        Err(Exception::badarg("the interpreter bench has no channels"))
    }

    fn chan_close(&mut self, _chan: &Handle) -> Result<(), Exception> {
        Err(Exception::badarg("the interpreter bench has no channels"))
    }
}

/// Assembles a benchmark program and verifies it, as every module must be before it runs.
fn load(name: &str, source: &str) -> Module {
    let module = vm_core::asm::assemble_str(name, source)
        .unwrap_or_else(|e| panic!("{name} does not assemble: {:?}", e.diagnostics));
    if let Err(errors) = vm_core::verify::verify(&module) {
        panic!("{name} does not verify: {errors:?}");
    }
    module
}

/// Runs `main(args)` to completion and returns what it returned. `print` effects are dropped
/// (the programs print once, at the end); any other effect means the program is not a pure
/// computation and the bench is wrong.
fn run(module: &Module, arg: &str) -> Value {
    let main = module.func_index("main").expect("the program has a main");
    let mut state = ActorState::new(module, main, vec![Value::list(vec![Value::str(arg)])])
        .expect("main takes the argument list");
    let mut host = LoneHost;
    loop {
        match vm_core::interp::step(&mut state, module, &mut host, FUEL) {
            Step::Yielded => {}
            Step::Blocked(Effect::Print(_)) => state.resume(module, Resume::Value(Value::Nil)),
            Step::Blocked(other) => panic!("unexpected effect {other:?}"),
            Step::Exited(v) => return v,
            Step::Failed(fault) => panic!("{}: {}", module.location(fault.func, fault.pc), fault.exception),
        }
    }
}

fn interp(c: &mut Criterion) {
    let fib = load("benches/programs/fib.vasm", include_str!("../programs/fib.vasm"));
    let looped = load("benches/programs/loop.vasm", include_str!("../programs/loop.vasm"));
    // Check the answers once, so the bench can never time a program that fails early.
    assert_eq!(run(&fib, "20"), Value::Int(6765));
    assert_eq!(run(&looped, "100000"), Value::Int(300_000));

    let mut group = c.benchmark_group("interp");
    for n in ["15", "20"] {
        group.bench_with_input(BenchmarkId::new("fib", n), n, |b, n| b.iter(|| run(&fib, black_box(n))));
    }
    for n in ["10000", "100000"] {
        group.bench_with_input(BenchmarkId::new("loop", n), n, |b, n| b.iter(|| run(&looped, black_box(n))));
    }
    group.finish();
}

criterion_group!(benches, interp);
criterion_main!(benches);
