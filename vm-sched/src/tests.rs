//! Runtime tests that need Rust because they look at the VM from outside: the sizes of its
//! per-actor structures and what the heartbeat counted. Behaviour a program can show is tested
//! as data instead, by the programs in `tests/programs/` (run by `tests/programs.rs`).

use crate::testing::{Lines, Setup, module};
use crate::vm::{Config, Vm};
use std::sync::Arc;

#[test]
fn per_actor_structures_stay_small() {
    // An idle actor is its shared cell, its task (the driver future holding the interpreter
    // state), a registry entry and a few small heap blocks; the spawn benchmark measures the
    // whole (docs/BENCHMARKS.md). These bounds catch regressions in the parts.
    let cell = std::mem::size_of::<crate::cell::ActorCell>();
    assert!(cell <= 168, "actor cell: {cell} bytes");
    let state = std::mem::size_of::<vm_core::ActorState>();
    assert!(state <= 128, "interpreter state: {state} bytes");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let vm = Vm::new(Config::default(), Arc::new(Lines::default()));
        let m = module(".func main 0\n ret r0\n.end\n");
        let st = vm_core::ActorState::new(&m, 0, vec![]).unwrap();
        let cell = Arc::new(crate::cell::ActorCell::new(vm_core::Pid(1), m.clone(), None));
        let task = crate::actor::drive(vm, cell, st);
        // tokio's task is a 128-byte-aligned block of header (32 bytes), scheduler and id (16),
        // the future, and trailer (48): at 400 bytes or less it takes 512 bytes, one step above
        // it 640 (docs/BENCHMARKS.md, memory per actor).
        assert!(std::mem::size_of_val(&task) <= 400, "driver future: {} bytes", std::mem::size_of_val(&task));
    });
}

/// A main that counts to `n` in a loop and returns.
fn count_to(n: u64) -> Arc<vm_core::Module> {
    module(&format!(
        ".func main 0\n    int r0, 0\nloop:\n    addi r0, r0, 1\n    jlti r0, {n}, loop\n    ret r0\n.end\n"
    ))
}

#[test]
fn the_heartbeat_reports_an_actor_that_never_yields() {
    // With effectively unlimited fuel a busy loop never yields; the watchdog must notice.
    let config = Config { fuel: u32::MAX, hog_threshold_ms: 20, ..Config::default() };
    let ran = Setup { config, ..Setup::default() }.run(count_to(30_000_000));
    assert!(ran.outcome.is_some(), "the loop did not finish");
    assert!(ran.vm.hog_reports() >= 1, "no report");
}

#[test]
fn the_heartbeat_stays_quiet_for_well_behaved_actors() {
    // A generous threshold: a loaded machine can deschedule a worker for tens of milliseconds.
    let config = Config { hog_threshold_ms: 500, ..Config::default() };
    let ran = Setup { config, ..Setup::default() }.run(count_to(3_000_000));
    assert!(ran.outcome.is_some(), "the loop did not finish");
    assert_eq!(ran.vm.hog_reports(), 0);
}
