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
    // The cell lives in an `Arc` (16 bytes of counts in front). It grew from 168 to 200 bytes
    // with the container pointer and priority (containers) and the parked-state slot (snapshots):
    // a 216-byte block, 24 bytes more per actor than a 192-byte one. Shrinking it (the priority
    // byte into the state byte, the slot's lock into the mailbox's) is noted in the issue notes.
    let cell = std::mem::size_of::<crate::cell::ActorCell>();
    assert!(cell <= 200, "actor cell: {cell} bytes");
    let state = std::mem::size_of::<vm_core::ActorState>();
    assert!(state <= 128, "interpreter state: {state} bytes");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let vm = Vm::new(Config::default(), Arc::new(Lines::default()));
        let m = module(".func main 0\n ret r0\n.end\n");
        let st = vm_core::ActorState::new(&m, 0, vec![]).unwrap();
        let cell = Arc::new(crate::cell::ActorCell::new(
            vm_core::Pid(1),
            m.clone(),
            None,
            vm.default_container().clone(),
        ));
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
    // A busy loop for 2.5 s, yielding as its fuel runs out: well past the threshold, so a
    // heartbeat that missed the yields would report it. The threshold is generous, since a
    // loaded machine can deschedule a worker (or the test process) for hundreds of
    // milliseconds, which the heartbeat cannot tell from a hold.
    let config = Config { hog_threshold_ms: 1_000, ..Config::default() };
    let m = module(
        ".func main 0\n    now r0\n    addi r1, r0, 2500\nloop:\n    now r2\n    jlt r2, r1, loop\n    ret r2\n.end\n",
    );
    let ran = Setup { config, ..Setup::default() }.run(m);
    assert!(ran.outcome.is_some(), "the loop did not finish");
    assert_eq!(ran.vm.hog_reports(), 0);
}

#[test]
fn the_heartbeat_reports_an_affine_job_that_holds_its_thread() {
    let config = Config { hog_threshold_ms: 20, ..Config::default() };
    let m = module(".func main 0\n    int r0, 200\n    native r1, :affine_sleep, r0, 1\n    ret r1\n.end\n");
    let ran = Setup { config, ..Setup::default() }.run(m);
    assert!(ran.outcome.is_some(), "the call did not return");
    assert!(ran.vm.hog_reports() >= 1, "no report");
}

/// `ps`/`info` show an actor waiting on an executor, queued or running and for how long, and
/// the executors list shows each executor's queue, its running job and its busy time.
#[test]
fn introspection_shows_affine_calls_and_executors() {
    use crate::mailbox::Wait;
    use crate::vm::RunState;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _in = rt.enter();
    let vm = Vm::new(Config::default(), Arc::new(Lines::default()));
    let m = module(
        ".func hold 0\n    int r0, 400\n    native r1, :affine_sleep, r0, 1\n    ret r1\n.end\n\
         .func probe 0\n    native r1, :affine_probe, r0, 0\n    ret r1\n.end\n",
    );
    let spawn = |name: &str| {
        let fun = vm_core::Closure { func: m.func_index(name).unwrap(), env: vec![] };
        vm.spawn(m.clone(), &fun, vec![], vm_core::SpawnOpts::default(), None).unwrap().0
    };
    let holder = spawn("hold");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let queued = spawn("probe");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let info = |pid| vm.info(pid).unwrap();
    let (h, q) = (info(holder), info(queued));
    assert_eq!(h.state, RunState::RealBlocked, "{h:?}");
    let text = h.waiting.as_ref().map(Wait::to_string).unwrap_or_default();
    assert!(text.starts_with("affine test (affine_sleep: running ") && text.ends_with(" ms)"), "{text}");
    assert_eq!(q.state, RunState::Waiting);
    let text = q.waiting.as_ref().map(Wait::to_string).unwrap_or_default();
    assert!(text.starts_with("affine test (affine_probe: queued #1, "), "{text}");
    let execs = vm.executors();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!((execs[0].name.as_str(), execs[0].queued), ("test", 1));
    let (caller, what, for_how_long) = execs[0].current.unwrap();
    assert_eq!((caller, what), (holder.0, "affine_sleep"));
    assert!(for_how_long >= std::time::Duration::from_millis(150), "{for_how_long:?}");
    // Both calls end; the executor has run two jobs and was busy at least 400 ms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (vm.info(holder).is_some() || vm.info(queued).is_some()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let execs = vm.executors();
    assert_eq!((execs[0].jobs, execs[0].queued, execs[0].current), (2, 0, None));
    assert!(execs[0].busy >= std::time::Duration::from_millis(400), "{:?}", execs[0].busy);
}

/// `main` and two echo actors in lockstep: `main` sends `i` to both, waits for both echoes,
/// `M` times, and returns the sum of what came back (M·(M−1)). Every actor spends its time
/// parked in `recv` and woken by a message, so pauses race wakes all the time.
const LOCKSTEP_ROUNDS: i64 = 400;
const LOCKSTEP: &str = "
.func main 0
    self r0
    fun r1, echo
    spawn r2, r1, r0, 1
    spawn r3, r1, r0, 1
    int r4, 0
    int r5, 0
    int r9, 400
loop:
    jge r4, r9, done
    send r2, r4
    send r3, r4
    recv r6
    add r5, r5, r6
    recv r6
    add r5, r5, r6
    addi r4, r4, 1
    jmp loop
done:
    ret r5
.end

.func echo 1
loop:
    recv r1
    send r0, r1
    jmp loop
.end
";

#[test]
fn thousands_of_pauses_racing_wakes_each_restore_to_the_same_state() {
    use crate::snapshot::{Settings, Timers, restore, take};
    use crate::vm::Outcome;
    use vm_core::Value;
    let want = LOCKSTEP_ROUNDS * (LOCKSTEP_ROUNDS - 1);
    let m = module(LOCKSTEP);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Restores run on a runtime of their own that runs nothing until told: a restored VM is
    // snapshotted again before any of its actors takes a step.
    let quiet = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut snaps = Vec::new();
    let mut rounds = 0;
    while snaps.len() < 2_000 {
        rounds += 1;
        assert!(rounds <= 200, "only {} pauses in 200 runs", snaps.len());
        let vm = {
            let _in = rt.enter();
            Vm::new(Config::default(), Arc::new(Lines::default()))
        };
        let outcome = rt.block_on(async {
            let main = tokio::spawn({
                let (vm, m) = (vm.clone(), m.clone());
                async move { vm.run_main(m, vec![]).await }
            });
            while !main.is_finished() {
                // Only while `main` is known and alive (it is registered just after its spawn).
                let Some(pid) = vm.main() else {
                    tokio::task::yield_now().await;
                    continue;
                };
                match take(&vm, Settings { main: Some(pid), ..Settings::default() }).await {
                    Ok((s, _)) if s.actors.iter().any(|a| a.pid == pid.0) => snaps.push(s),
                    Ok(_) => {}
                    Err(e) => assert!(e.contains("no actor"), "{e}"),
                }
            }
            main.await.unwrap().unwrap()
        });
        assert!(matches!(&outcome, Outcome::Exited(Value::Int(n)) if *n == want), "{outcome:?}");
    }
    for (k, s) in snaps.iter().enumerate() {
        let loaded = vm_core::snapshot::decode(&vm_core::snapshot::encode(s)).expect("a snapshot loads");
        // Restored and snapshotted again at once: the same actors, states, mailboxes, values.
        let again = quiet.block_on(async {
            let fresh = Vm::new(Config::default(), Arc::new(Lines::default()));
            restore(&fresh, loaded.clone(), Timers::Frozen).await;
            take(&fresh, Settings { main: fresh.main(), ..Settings::default() }).await.expect("again").0
        });
        assert_eq!(again.actors, s.actors, "snapshot {k}: the actors differ after a restore");
        assert_eq!(again.values, s.values, "snapshot {k}: the values differ after a restore");
        // Every 20th runs on to its end: nothing was lost or duplicated at the cut.
        if k % 20 == 0 {
            let end = rt.block_on(async {
                let fresh = Vm::new(Config::default(), Arc::new(Lines::default()));
                let report = restore(&fresh, loaded, Timers::Frozen).await.expect("main is in the snapshot");
                tokio::time::timeout(std::time::Duration::from_secs(20), report).await
            });
            match end {
                Ok(Ok(Outcome::Exited(Value::Int(n)))) => assert_eq!(n, want, "snapshot {k}"),
                other => panic!("snapshot {k}: the resumed run ended with {other:?}"),
            }
        }
    }
}

/// Issue 18, point 5: a pool of workers on one channel (a hundred, so that a census is cheap and
/// only `MIN_GAP` spaces them) parks again after every job, each time
/// in a new wait. A census (which pauses every actor) is taken only when it could find
/// something: not for each new wait on a channel the last census found held by another actor,
/// only as the re-check backs off (50 ms, doubling to 2 s) or when an actor exits. Before,
/// every look found new waits and took a census every 50 ms.
#[test]
fn a_busy_worker_pool_is_not_censused_on_every_look() {
    let src = "
.func main 0
    int r0, 0
    chan r1, r0
    fun r2, worker
    int r3, 0
spawn:
    jgei r3, 100, send
    spawn r4, r2, r1, 1
    addi r3, r3, 1
    jmp spawn
send:
    int r3, 0
    int r5, 1
loop:
    jgei r3, 800, close
    csend r1, r3
    sleep r5
    addi r3, r3, 1
    jmp loop
close:
    cclose r1
    ret r3
.end

.func worker 1
loop:
    crecv r1, r0, closed
    jmp loop
closed:
    ret r0
.end
";
    let started = std::time::Instant::now();
    let ran = Setup::default().run(module(src));
    let took = started.elapsed();
    assert!(ran.outcome.is_some(), "the pool did not finish");
    let censuses = ran.vm.orphan_censuses();
    // The first census, one per doubling of the re-check from 50 ms, one per 2 s after that,
    // and one spare (an exit at the end).
    let doublings = (took.as_secs_f64() / 0.05).log2().ceil().max(0.0) as u64;
    let bound = 2 + doublings + took.as_secs() / 2;
    assert!(censuses >= 1, "the pool's waits were never judged");
    assert!(censuses <= bound, "{censuses} censuses in {took:?} (at most {bound} expected)");
}
