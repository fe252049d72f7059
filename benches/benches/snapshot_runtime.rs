//! Snapshots of a running VM of 100,000 idle actors (each waiting in `recv`, as a spawn
//! benchmark's or a server's idle handlers are), in-process on a multi-thread runtime:
//! - `pause`: the time no actor runs while a snapshot is taken (every actor stops at a safe
//!   point and publishes its state, the snapshot is built, the actors go on) — the figure
//!   `vm_sched::snapshot::take` reports;
//! - `resume`: loading the file (checks included) and restoring every actor into a fresh VM,
//!   until every actor's task is started.
//!
//! Run with `cargo bench -p vm-benches --bench snapshot_runtime`; `docs/BENCHMARKS.md` has the
//! figures.
#![allow(clippy::print_stderr, reason = "a benchmark binary: printing its figures is its job")]

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_sched::snapshot::{Settings, Timers, restore, take};
use vm_sched::{Config, Vm};

const ACTORS: usize = 100_000;

const PROGRAM: &str = "
.func idle 1
    recv r1
    ret r1
.end
";

/// A sink for `print` (nothing prints here).
struct Quiet;
impl vm_sched::Output for Quiet {
    fn line(&self, _: &str) {}
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

/// A VM with `ACTORS` actors parked in `recv`.
async fn idle_vm() -> Vm {
    let module = Arc::new(vm_core::asm::assemble_str("idle.vasm", PROGRAM).expect("assembles"));
    let vm = Vm::new(Config::default(), Arc::new(Quiet));
    let fun = vm_core::Closure { func: 0, env: vec![] };
    for i in 0..ACTORS {
        vm.spawn(module.clone(), &fun, vec![vm_core::Value::Int(i as i64)], Default::default(), None)
            .expect("spawn");
    }
    // Let every actor reach its receive.
    while vm.actors().iter().any(|a| a.state != vm_sched::RunState::Waiting) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    vm
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let vm = rt.block_on(idle_vm());
    let mut g = c.benchmark_group("snapshot_runtime_100k_idle");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("pause", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_, pause) = rt.block_on(take(&vm, Settings::default())).expect("a snapshot");
                total += pause;
            }
            total
        })
    });
    let (s, _) = rt.block_on(take(&vm, Settings::default())).expect("a snapshot");
    let bytes = vm_core::snapshot::encode(&s);
    eprintln!(
        "snapshot of {ACTORS} idle actors in a running VM: {} bytes, {:.1} bytes per actor",
        bytes.len(),
        bytes.len() as f64 / ACTORS as f64
    );
    g.bench_function("resume", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let rt2 = runtime();
                let started = Instant::now();
                let fresh = rt2.block_on(async {
                    let s = vm_core::snapshot::decode(&bytes).expect("loads");
                    let vm = Vm::new(Config::default(), Arc::new(Quiet));
                    restore(&vm, s, Timers::Frozen).await;
                    vm
                });
                total += started.elapsed();
                assert_eq!(fresh.live(), ACTORS);
                rt2.shutdown_background();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
