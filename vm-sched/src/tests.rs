//! Actor semantics, tested by running assembly programs on a real multi-thread runtime.

use crate::testing::{Lines, Setup, lines, run};
use crate::vm::{Config, Outcome, Vm};
use std::sync::Arc;
use vm_core::{Value, atoms};

fn run_with(src: &str, config: Config, workers: usize) -> (Outcome, Vec<String>) {
    let (outcome, lines) = crate::testing::run_with(src, Setup { config, workers, ..Setup::default() });
    (outcome.expect("the program did not finish within 30 s"), lines)
}

#[test]
fn selective_receive_takes_the_first_match_and_keeps_the_rest_in_order() {
    let (o, out) = run(r#"
.func main 0
    self r0
    const r1, {:a, 1}
    send r0, r1
    const r1, {:b, 2}
    send r0, r1
    const r1, {:a, 3}
    send r0, r1
    const r2, {:b, :_}
    recvp r3, r2
    print r3
    recv r3
    print r3
    recv r3
    print r3
    ret r3
.end
"#);
    assert_eq!(o, Outcome::Exited(Value::tuple(vec![Value::atom("a"), Value::Int(3)])));
    assert_eq!(out, lines(&["{:b, 2}", "{:a, 1}", "{:a, 3}"]));
}

#[test]
fn a_parked_selective_receive_skips_earlier_messages() {
    // The worker sends {:a, 1} then {:b, 2} to main, which is already waiting for a :b.
    let (_, out) = run(r#"
.func main 0
    self r0
    fun r1, worker
    spawn r2, r1, r0, 1
    const r3, {:b, :_}
    recvp r4, r3
    print r4
    recv r4
    print r4
    ret r4
.end

.func worker 1
    int r1, 20
    sleep r1
    const r2, {:a, 1}
    send r0, r2
    const r2, {:b, 2}
    send r0, r2
    ret r2
.end
"#);
    assert_eq!(out, lines(&["{:b, 2}", "{:a, 1}"]));
}

#[test]
fn receive_times_out_and_jumps() {
    let (_, out) = run(r#"
.func main 0
    int r1, 30
    now r5
    recvt r0, r1, late
    ret r0
late:
    now r6
    sub r6, r6, r5
    jlti r6, 25, early
    const r0, "timed out"
    print r0
    ret r0
early:
    const r0, "too early"
    print r0
    ret r0
.end
"#);
    assert_eq!(out, lines(&["timed out"]));
}

const WATCH: &str = r#"
; Runs `f` in a monitored actor and prints the DOWN reason.
.func watch 1
    list r1, r1, 0
    const r2, %{:monitor => true}
    spawnx r3, r0, r1, r2
    tget r4, r3, 1
    const r5, {:DOWN, :_, :_, :_}
    recvp r6, r5
    tget r7, r6, 1
    jne r7, r4, wrongref
    tget r8, r6, 3
    print r8
    ret r8
wrongref:
    const r8, "wrong monitor reference"
    print r8
    ret r8
.end

.func returns 0
    int r0, 1
    ret r0
.end

.func crashes 0
    const r0, :boom
    const r1, "bad"
    raise r0, r1
.end
"#;

#[test]
fn monitors_see_normal_and_abnormal_exits() {
    let src = format!(
        "{WATCH}
.func main 0
    fun r0, returns
    call r1, watch, r0, 1
    fun r0, crashes
    call r1, watch, r0, 1
    ret r1
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&[":normal", "{:exception, :boom, \"bad\"}"]));
}

#[test]
fn monitoring_a_dead_actor_reports_noproc_at_once() {
    let src = r#"
.func main 0
    fun r0, quick
    spawnm r1, r0, r0, 0
    const r2, {:DOWN, :_, :_, :_}
    recvp r3, r2
    tget r4, r1, 0
    monitor r5, r4
    recvp r3, r2
    tget r6, r3, 3
    print r6
    ret r6
.end

.func quick 0
    ret r0
.end
"#;
    let (_, out) = run(src);
    assert_eq!(out, lines(&[":noproc"]));
}

#[test]
fn links_propagate_abnormal_exits_and_ignore_normal_ones() {
    // `middle` links to a crasher and dies with the same reason; a second `middle` links to an
    // actor that returns normally and survives to report.
    let src = format!(
        "{WATCH}
.func main 0
    fun r0, middle_crash
    call r1, watch, r0, 1
    fun r0, middle_normal
    call r1, watch, r0, 1
    ret r1
.end

.func middle_crash 0
    fun r0, crashes
    spawnl r1, r0, r0, 0
    recv r2
    ret r2
.end

.func middle_normal 0
    fun r0, returns
    spawnl r1, r0, r0, 0
    int r2, 50
    sleep r2
    const r3, :survived
    stop r3
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&["{:exception, :boom, \"bad\"}", ":survived"]));
}

#[test]
fn trapping_exits_turns_signals_into_messages() {
    let src = format!(
        "{WATCH}
.func main 0
    const r0, true
    trapexit r1, r0
    fun r0, crashes
    spawnl r2, r0, r0, 0
    recv r3
    tget r4, r3, 0
    print r4
    tget r4, r3, 2
    print r4
    ret r4
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&[":EXIT", "{:exception, :boom, \"bad\"}"]));
}

#[test]
fn kill_cannot_be_trapped_or_caught() {
    let src = format!(
        "{WATCH}
.func main 0
    fun r0, killme
    call r1, watch, r0, 1
    ret r1
.end

.func killme 0
    const r0, true
    trapexit r1, r0
    try r2, caught
    self r3
    kill r3
    int r4, 1000
    sleep r4
    endtry
    ret r4
caught:
    const r5, \"caught a kill\"
    print r5
    ret r5
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&[":killed"]));
}

/// A worker that reports whether an interrupt reached it while doing `what`.
const TARGETS: &str = r#"
; r0 = parent. Sleeps inside a handler; reports :caught or :slept.
.func sleeper 1
    try r1, caught
    int r2, 5000
    sleep r2
    endtry
    const r3, :slept
    send r0, r3
    ret r3
caught:
    tget r3, r1, 0
    send r0, r3
    ret r3
.end

; r0 = parent. Waits for a message inside a handler.
.func receiver 1
    try r1, caught
    recv r2
    endtry
    const r3, :received
    send r0, r3
    ret r3
caught:
    tget r3, r1, 0
    send r0, r3
    ret r3
.end

; r0 = parent. Busy-loops `r1` times inside a handler (forever when r1 < 0).
.func busy 2
    try r2, caught
    int r3, 0
loop:
    jeq r3, r1, done
    addi r3, r3, 1
    jmp loop
done:
    endtry
    const r4, :finished
    send r0, r4
    ret r4
caught:
    tget r4, r2, 0
    send r0, r4
    ret r4
.end

; Spawns `f(self, extra)`, waits `delay` ms, interrupts it with {:poke, "hey"} in `mode`,
; and prints what the target reports.
.func probe 4
    self r4
    move r5, r3
    list r6, r4, 2
    const r7, %{}
    spawnx r8, r0, r6, r7
    sleep r1
    const r9, {:poke, "hey"}
    interrupt r8, r9, r2
    recv r10
    print r10
    ret r10
.end
"#;

#[test]
fn interrupt_mode_0_reaches_waiting_actors_only() {
    let src = format!(
        "{TARGETS}
.func main 0
    ; sleeping
    fun r0, sleeper_1
    int r1, 30
    int r2, 0
    int r3, 0
    call r4, probe, r0, 4
    ; receiving
    fun r0, receiver_1
    call r4, probe, r0, 4
    ; busy for a while: mode 0 is dropped and the loop finishes
    fun r0, busy
    int r1, 0
    int r3, 300000
    call r4, probe, r0, 4
    ret r4
.end

.func sleeper_1 2
    call r0, sleeper, r0, 1
    ret r0
.end

.func receiver_1 2
    call r0, receiver, r0, 1
    ret r0
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&[":poke", ":poke", ":finished"]));
}

/// A receive that is not the actor's first wait parks in its fast path and is re-run when woken
/// (see `mailbox`): interrupts of mode 0 and 1 still reach it as a wait (raised at the receive,
/// caught by the actor), a message after a caught interrupt is still received, and a kill ends it.
#[test]
fn interrupts_reach_a_receive_parked_in_its_fast_path() {
    let (_, out) = run(r#"
.func main 0
    self r0
    fun r1, waiter
    int r2, 20
    int r3, 0
mode:
    spawn r4, r1, r0, 1
    sleep r2                ; the waiter parks the ordinary way (its first wait)...
    const r5, :go
    send r4, r5
    recv r6                 ; ...takes :go, says so and parks again, in the fast path
    print r6
    sleep r2
    const r5, {:poke, "hey"}
    interrupt r4, r5, r3
    recv r6                 ; what the waiter caught
    print r6
    const r5, :more
    send r4, r5
    recv r6                 ; the waiter carries on receiving
    print r6
    addi r3, r3, 1
    jlti r3, 2, mode
    ; a kill reaches a waiter parked in the fast path too
    const r7, %{:monitor => true}
    list r8, r0, 1
    spawnx r9, r1, r8, r7
    tget r10, r9, 0
    sleep r2
    const r5, :go
    send r10, r5
    recv r6
    sleep r2
    kill r10
    recv r6
    tget r11, r6, 3
    print r11
    ret r11
.end

; r0 = parent. Waits for :go, then for anything inside a handler, then for one more message.
.func waiter 1
    recv r1
    send r0, r1
    try r2, caught
    recv r3
    endtry
    const r3, :not_interrupted
    send r0, r3
    ret r3
caught:
    tget r3, r2, 0
    send r0, r3
    recv r4
    send r0, r4
    ret r4
.end
"#);
    assert_eq!(out, lines(&[":go", ":poke", ":more", ":go", ":poke", ":more", ":killed"]));
}

#[test]
fn interrupt_mode_1_reaches_a_running_actor_which_can_carry_on() {
    let src = format!(
        "{TARGETS}
.func main 0
    fun r0, busy
    int r1, 30
    int r2, 1
    int r3, -1
    call r4, probe, r0, 4
    ret r4
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&[":poke"]));
}

#[test]
fn interrupt_mode_2_stops_the_actor_with_the_exception() {
    let src = format!(
        "{WATCH}
.func main 0
    fun r0, forever
    const r1, %{{:monitor => true}}
    list r2, r0, 0
    spawnx r3, r0, r2, r1
    tget r4, r3, 0
    int r5, 20
    sleep r5
    const r6, {{:stop_now, \"ctrl-c\"}}
    int r7, 2
    interrupt r4, r6, r7
    recv r8
    tget r9, r8, 3
    print r9
    ret r9
.end

.func forever 0
    try r0, caught
loop:
    jmp loop
caught:
    const r1, \"caught a mode-2 interrupt\"
    print r1
    jmp loop
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&["{:exception, :stop_now, \"ctrl-c\"}"]));
}

#[test]
fn deadlock_is_reported_with_every_actor_and_what_it_waits_on() {
    let (o, _) = run(r#"
.func main 0
    fun r0, stuck
    spawn r1, r0, r0, 0
    const r2, :ready
    recvp r3, r2
    ret r3
.end

.func stuck 0
    recv r0
    ret r0
.end
"#);
    let Outcome::Deadlock(report) = o else { panic!("expected a deadlock, got {o:?}") };
    assert!(report.contains("<1>") && report.contains("<2>"), "{report}");
    assert!(report.contains("receive matching :ready"), "{report}");
    assert!(report.contains("t.vasm:"), "names the source line: {report}");
}

#[test]
fn a_sleeping_actor_is_not_a_deadlock() {
    let (o, out) = run(r#"
.func main 0
    fun r0, later
    self r1
    spawn r2, r0, r1, 1
    recv r3
    print r3
    ret r3
.end

.func later 1
    int r1, 50
    sleep r1
    const r2, :woke
    send r0, r2
    ret r2
.end
"#);
    assert_eq!(o, Outcome::Exited(Value::atom("woke")));
    assert_eq!(out, lines(&[":woke"]));
}

#[test]
fn uncaught_exception_in_main_is_a_failure_with_a_location() {
    let (o, _) = run(".func main 0\n    int r0, 1\n    int r1, 0\n    div r2, r0, r1\n    ret r2\n.end\n");
    match o {
        Outcome::Failed { fault, location } => {
            assert_eq!(fault.exception.kind, atoms::DIV_BY_ZERO);
            assert_eq!(location.line, Some(4));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_busy_loop_does_not_starve_a_ticker() {
    // Four actors spin forever on two workers; a ticker must still complete 50 sleeps of 1 ms.
    let (o, _) = run(r#"
.func main 0
    fun r0, spin
    spawn r1, r0, r0, 0
    spawn r1, r0, r0, 0
    spawn r1, r0, r0, 0
    spawn r1, r0, r0, 0
    int r2, 0
    int r3, 1
tick:
    sleep r3
    addi r2, r2, 1
    jlti r2, 50, tick
    ret r2
.end

.func spin 0
loop:
    jmp loop
.end
"#);
    assert_eq!(o, Outcome::Exited(Value::Int(50)));
}

#[test]
fn spawning_past_the_actor_limit_raises_a_catchable_limit() {
    let config = Config { max_actors: 10, ..Config::default() };
    let (o, _) = run_with(
        r#"
.func main 0
    fun r0, wait
    int r1, 0
    try r2, full
loop:
    spawn r3, r0, r0, 0
    addi r1, r1, 1
    jmp loop
full:
    tget r2, r2, 0
    tuple r5, r1, 2
    ret r5
.end

.func wait 0
    recv r0
    ret r0
.end
"#,
        config,
        2,
    );
    // main itself is one of the ten.
    assert_eq!(o, Outcome::Exited(Value::tuple(vec![Value::Int(9), Value::Atom(atoms::LIMIT)])));
}

#[test]
fn flooding_a_mailbox_with_a_limit_kills_only_the_receiver() {
    // Eight senders flood one slow receiver. With a mailbox limit the receiver is killed with a
    // reason naming the limit, and the senders and main carry on.
    let src = r#"
.func main 0
    fun r0, slow
    list r1, r0, 0
    const r2, %{:monitor => true, :max_mailbox => 100}
    spawnx r3, r0, r1, r2
    tget r4, r3, 0
    fun r5, flood
    spawn r6, r5, r4, 1
    spawn r6, r5, r4, 1
    spawn r6, r5, r4, 1
    spawn r6, r5, r4, 1
    spawn r6, r5, r4, 1
    spawn r6, r5, r4, 1
    spawn r6, r5, r4, 1
    spawn r6, r5, r4, 1
    const r7, {:DOWN, :_, :_, :_}
    recvp r8, r7
    tget r9, r8, 3
    print r9
    ret r9
.end

.func slow 0
loop:
    int r0, 5
    sleep r0
    recv r1
    jmp loop
.end

.func flood 1
    int r1, 0
loop:
    send r0, r1
    addi r1, r1, 1
    jlti r1, 10000, loop
    ret r1
.end
"#;
    let (_, out) = run(src);
    assert_eq!(out, lines(&["{:limit, :max_mailbox}"]));
}

#[test]
fn registered_names_route_messages_and_are_released_on_exit() {
    let (_, out) = run(r#"
.func main 0
    fun r0, echo
    spawn r1, r0, r0, 0
    const r2, :echo
    register r2, r1
    whereis r3, r2
    eq r4, r3, r1
    print r4
    self r5
    send r2, r5
    recv r6
    print r6
    int r7, 20
    sleep r7
    whereis r3, r2
    print r3
    ret r3
.end

.func echo 0
    recv r0
    const r1, :pong
    send r0, r1
    ret r1
.end
"#);
    assert_eq!(out, lines(&["true", ":pong", "nil"]));
}

/// The counted stress test: 100 senders race a receiver whose receives time out constantly and
/// which is interrupted over and over; every message must arrive exactly once.
#[test]
fn messages_survive_racing_timeouts_and_interrupts() {
    let src = r#"
.func main 0
    self r0
    fun r1, sender
    int r2, 0
spawn_senders:
    spawn r3, r1, r0, 1
    addi r2, r2, 1
    jlti r2, 100, spawn_senders
    fun r4, pester
    spawn r5, r4, r0, 1
    int r6, 0          ; count
    int r7, 0          ; sum
    int r8, 1          ; timeout (ms)
    int r12, 0         ; interrupts caught
loop:
    try r9, interrupted
    recvt r10, r8, timed_out
    endtry
    addi r6, r6, 1
    add r7, r7, r10
    jmp loop_end
timed_out:
    endtry
loop_end:
    jlti r6, 20000, loop
    kill r5
    tuple r11, r6, 2
    print r11
    jgti r12, 0, saw_interrupts
    ret r11
saw_interrupts:
    const r13, "interrupted"
    print r13
    ret r11
interrupted:
    addi r12, r12, 1
    jmp loop_end
.end

; Sends 1..200 to r0, pausing a millisecond after each so that the receiver often waits.
.func sender 1
    int r1, 1
    int r2, 1
loop:
    send r0, r1
    sleep r2
    addi r1, r1, 1
    jlei r1, 200, loop
    ret r1
.end

; Interrupts r0 forever in mode 0, which cancels whatever receive it is waiting in.
.func pester 1
    const r1, {:poke, "again"}
    int r2, 0
loop:
    interrupt r0, r1, r2
    yield
    jmp loop
.end
"#;
    let (_, out) = run(src);
    // 100 senders × (1 + … + 200) = 100 × 20100.
    assert_eq!(out, lines(&["{20000, 2010000}", "interrupted"]));
}

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
        let m = Arc::new(vm_core::asm::assemble_str("t.vasm", ".func main 0\n ret r0\n.end\n").unwrap());
        let st = vm_core::ActorState::new(&m, 0, vec![]).unwrap();
        let cell = Arc::new(crate::cell::ActorCell::new(vm_core::Pid(1), m.clone(), None));
        let task = crate::actor::drive(vm, cell, st);
        // tokio's task is a 128-byte-aligned block of header (32 bytes), scheduler and id (16),
        // the future, and trailer (48): at 400 bytes or less it takes 512 bytes, one step above
        // it 640 (docs/BENCHMARKS.md, memory per actor).
        assert!(std::mem::size_of_val(&task) <= 400, "driver future: {} bytes", std::mem::size_of_val(&task));
    });
}

#[test]
fn the_heartbeat_reports_an_actor_that_never_yields() {
    // With effectively unlimited fuel a busy loop never yields; the watchdog must notice.
    let src = ".func main 0\n    int r0, 0\nloop:\n    addi r0, r0, 1\n    jlti r0, 30000000, loop\n    ret r0\n.end\n";
    let module = Arc::new(vm_core::asm::assemble_str("t.vasm", src).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hogs = rt.block_on(async move {
        let config = Config { fuel: u32::MAX, hog_threshold_ms: 20, ..Config::default() };
        let vm = Vm::new(config, Arc::new(Lines::default()));
        vm.run_main(module, vec![]).await.unwrap();
        vm.hog_reports()
    });
    rt.shutdown_background();
    assert!(hogs >= 1, "no report");
}

#[test]
fn the_heartbeat_stays_quiet_for_well_behaved_actors() {
    let src = ".func main 0\n    int r0, 0\nloop:\n    addi r0, r0, 1\n    jlti r0, 3000000, loop\n    ret r0\n.end\n";
    let module = Arc::new(vm_core::asm::assemble_str("t.vasm", src).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hogs = rt.block_on(async move {
        // A generous threshold: a loaded machine can deschedule a worker for tens of milliseconds.
        let vm = Vm::new(Config { hog_threshold_ms: 500, ..Config::default() }, Arc::new(Lines::default()));
        vm.run_main(module, vec![]).await.unwrap();
        vm.hog_reports()
    });
    rt.shutdown_background();
    assert_eq!(hogs, 0);
}

const BLOCKER: &str = r#"
; r0 = parent, r1 = extra: calls the blocking native sleep_blocking(r1) inside a handler.
.func blocker 2
    try r2, caught
    native r3, :sleep_blocking, r1, 1
    endtry
    const r4, :finished
    send r0, r4
    ret r4
caught:
    tget r4, r2, 0
    send r0, r4
    ret r4
.end
"#;

#[test]
fn interrupts_of_a_real_blocked_actor_follow_their_modes() {
    let src = format!(
        "{TARGETS}{BLOCKER}
.func main 0
    ; mode 0 does not reach a real-blocked actor: the call finishes
    fun r0, blocker
    int r1, 20
    int r2, 0
    int r3, 100
    call r4, probe, r0, 4
    ; mode 1 is raised when the call returns, not before
    int r2, 1
    int r3, 300
    now r10
    call r4, probe, r0, 4
    now r11
    sub r11, r11, r10
    jlti r11, 280, early
    const r12, \"raised after the call\"
    print r12
    ret r12
early:
    const r12, \"raised too early\"
    print r12
    ret r12
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&[":finished", ":poke", "raised after the call"]));
}

#[test]
fn interrupt_mode_2_abandons_a_blocking_call() {
    let src = format!(
        "{BLOCKER}
.func main 0
    self r0
    int r1, 5000
    list r2, r0, 2
    const r3, %{{:monitor => true}}
    fun r4, blocker
    now r10
    spawnx r5, r4, r2, r3
    tget r6, r5, 0
    int r7, 30
    sleep r7
    const r8, {{:halt, \"now\"}}
    int r9, 2
    interrupt r6, r8, r9
    const r12, {{:DOWN, :_, :_, :_}}
    recvp r13, r12
    now r11
    sub r11, r11, r10
    tget r14, r13, 3
    print r14
    jgti r11, 2000, slow
    ret r14
slow:
    const r15, \"waited for the call\"
    print r15
    ret r15
.end
"
    );
    let (_, out) = run(&src);
    assert_eq!(out, lines(&["{:exception, :halt, \"now\"}"]));
}

#[test]
fn a_panicking_native_raises_in_its_caller_only() {
    let (o, out) = run(r#"
.func main 0
    const r0, "boom"
    try r1, caught
    native r2, :panic, r0, 1
    endtry
    ret r2
caught:
    tget r3, r1, 0
    print r3
    const r4, :no_such_native
    try r1, unknown
    native r2, :no_such_native, r0, 1
    endtry
    ret r2
unknown:
    tget r3, r1, 0
    print r3
    ret r3
.end
"#);
    assert_eq!(out, lines(&[":panic", ":badarg"]));
    assert_eq!(o, Outcome::Exited(Value::atom("badarg")));
}

#[test]
fn a_panicking_inline_native_raises_in_its_caller_only() {
    // The inline path (`Host::native`, inside the step) catches the panic itself: the caller
    // gets `:panic` and goes on, and another actor is unaffected (it answers afterwards).
    let (o, out) = run(r#"
.func main 0
    self r7
    fun r5, other
    spawn r6, r5, r7, 1
    const r0, "boom"
    try r1, caught
    native r2, :panic_inline, r0, 1
    endtry
    ret r2
caught:
    tget r3, r1, 0
    print r3
    tget r3, r1, 1
    print r3
    try r1, arity
    native r2, :panic_inline, r0, 0
    endtry
    ret r2
arity:
    tget r3, r1, 0
    print r3
    recv r8
    print r8
    ret r3
.end
.func other 1
    const r1, :other_ran
    send r0, r1
    ret r1
.end
"#);
    assert_eq!(out, lines(&[":panic", "native call panicked: boom", ":badarity", ":other_ran"]));
    assert_eq!(o, Outcome::Exited(Value::atom("badarity")));
}

#[test]
fn yield_to_runs_the_named_actor_next() {
    // On one worker: B and C are both runnable, C most recently spawned (so tokio would run it
    // first); main yields to B, so B prints before C.
    let src = r#"
.func main 0
    fun r0, say
    const r1, "B"
    spawn r2, r0, r1, 1
    const r1, "C"
    spawn r3, r0, r1, 1
    yieldto r2
    int r4, 50
    sleep r4
    ret r4
.end

.func say 1
    print r0
    ret r0
.end
"#;
    let (_, out) = run_with(src, Config::default(), 1);
    assert_eq!(out, lines(&["B", "C"]));
}

#[test]
fn a_rendezvous_send_completes_only_when_received() {
    // The receiver waits 60 ms before receiving; main's send must take at least that long.
    let (_, out) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    fun r2, late_receiver
    spawn r3, r2, r1, 1
    now r4
    int r5, 42
    csend r1, r5
    now r6
    sub r6, r6, r4
    jlti r6, 55, early
    const r7, "waited for the receiver"
    print r7
    ret r7
early:
    const r7, "returned early"
    print r7
    ret r7
.end

.func late_receiver 1
    int r1, 60
    sleep r1
    crecv r2, r0, closed
    ret r2
closed:
    ret r0
.end
"#);
    assert_eq!(out, lines(&["waited for the receiver"]));
}

#[test]
fn buffered_channels_hold_their_capacity_and_drain_after_close() {
    let (_, out) = run(r#"
.func main 0
    int r0, 2
    chan r1, r0
    int r2, 10
    ctrysend r3, r1, r2
    print r3
    int r2, 20
    ctrysend r3, r1, r2
    print r3
    int r2, 30
    ctrysend r3, r1, r2
    print r3
    cclose r1
    crecv r4, r1, closed
    print r4
    ctryrecv r4, r1
    print r4
    ctryrecv r4, r1
    print r4
    crecv r4, r1, closed
    ret r4
closed:
    const r5, "closed"
    print r5
    try r6, send_failed
    csend r1, r2
    ret r6
send_failed:
    tget r7, r6, 0
    print r7
    try r6, close_failed
    cclose r1
    ret r6
close_failed:
    tget r7, r6, 0
    print r7
    ret r7
.end
"#);
    assert_eq!(
        out,
        lines(&["true", "true", "false", "10", "{:ok, 20}", ":closed", "closed", ":closed", ":closed"])
    );
}

#[test]
fn select_has_a_default_a_timeout_and_a_mailbox_case() {
    let (_, out) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    const r2, :recv
    move r3, r1
    tuple r20, r2, 2            ; r20 = {:recv, ch}
    const r21, {:msg, {:hello, :_}}
    list r4, r20, 1             ; [{:recv, ch}]
    int r5, 0
    select r6, r4, r5, nothing  ; ms = 0: the default branch
    ret r6
nothing:
    const r7, "default"
    print r7
    int r5, 30
    select r6, r4, r5, timed_out
    ret r6
timed_out:
    const r7, "timeout"
    print r7
    list r9, r20, 2             ; [{:recv, ch}, {:msg, {:hello, :_}}]
    self r10
    const r11, {:hello, 7}
    send r10, r11
    int r5, -1
    select r6, r9, r5, timed_out
    print r6
    ret r6
.end
"#);
    assert_eq!(out, lines(&["default", "timeout", "{1, :ok, {:hello, 7}}"]));
}

#[test]
fn select_is_fair_between_ready_cases() {
    // Two buffered channels always have values; 1000 selects must split roughly evenly.
    let (_, out) = run(r#"
.func main 0
    int r0, 2000
    chan r1, r0
    chan r2, r0
    int r3, 0
fill:
    csend r1, r3
    csend r2, r3
    addi r3, r3, 1
    jlti r3, 1000, fill
    const r4, :recv
    tuple r5, r4, 2          ; {:recv, ch1} (r4, r5? no: r4 = :recv, r5 = ch... see below)
    move r6, r1
    tuple r7, r4, 2
    int r10, 0               ; times case 0 fired
    int r11, 0
    int r12, -1
loop:
    move r5, r1
    tuple r7, r4, 2
    move r5, r2
    tuple r8, r4, 2
    list r9, r7, 2
    select r13, r9, r12, loop
    tget r14, r13, 0
    jnei r14, 0, other
    addi r10, r10, 1
other:
    addi r11, r11, 1
    jlti r11, 1000, loop
    jlti r10, 400, unfair
    jgti r10, 600, unfair
    const r15, "fair"
    print r15
    ret r10
unfair:
    print r10
    ret r10
.end
"#);
    assert_eq!(out, lines(&["fair"]));
}

/// Senders whose sends time out and retry, a receiver whose receives time out and are
/// interrupted: every value must arrive exactly once.
#[test]
fn channel_values_survive_racing_timeouts_and_interrupts() {
    let (_, out) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    fun r2, sender
    int r3, 0
spawn_senders:
    spawn r4, r2, r1, 1
    addi r3, r3, 1
    jlti r3, 20, spawn_senders
    self r5
    fun r6, pester
    spawn r7, r6, r5, 1
    const r8, :recv
    move r9, r1
    tuple r10, r8, 2
    list r11, r10, 1         ; [{:recv, ch}]
    int r12, 0               ; count
    int r13, 0               ; sum
    int r14, 1               ; timeout
    int r16, 0               ; interrupts caught
loop:
    try r15, interrupted
    select r17, r11, r14, timed_out
    endtry
    tget r18, r17, 2
    addi r12, r12, 1
    add r13, r13, r18
    jmp next
timed_out:
    endtry
next:
    jlti r12, 2000, loop
    kill r7
    tuple r19, r12, 2
    print r19
    jgti r16, 0, saw
    ret r19
saw:
    const r20, "interrupted"
    print r20
    ret r19
interrupted:
    addi r16, r16, 1
    jmp next
.end

; Sends 1..100 on r0, each with a 1 ms send timeout and retries until it goes through, pausing
; a millisecond after each value so that the receiver often waits.
.func sender 1
    int r1, 1
    const r2, :send
    int r5, 1
again:
    move r3, r0
    move r4, r1
    tuple r6, r2, 3          ; {:send, ch, i}
    list r7, r6, 1
    select r8, r7, r5, again
    sleep r5
    addi r1, r1, 1
    jlei r1, 100, again
    ret r1
.end

.func pester 1
    const r1, {:poke, "again"}
    int r2, 0
loop:
    interrupt r0, r1, r2
    yield
    jmp loop
.end
"#);
    // 20 senders × (1 + … + 100).
    assert_eq!(out, lines(&["{2000, 101000}", "interrupted"]));
}

#[test]
fn blocking_csend_and_crecv_lose_nothing_to_racing_interrupts() {
    // Both sides wait in plain `csend`/`crecv` (the one-case wait) while pesters interrupt them:
    // an interrupted send is retried, so each value must arrive exactly once — a send cancelled
    // after its value was taken is reported as sent, never repeated, and an interrupted receive
    // that had already been handed a value keeps it.
    let src = r#"
.func main 0
    int r0, 0
    chan r1, r0
    fun r2, sender
    int r3, 0
spawn_senders:
    spawn r4, r2, r1, 1
    addi r3, r3, 1
    jlti r3, 10, spawn_senders
    self r5
    fun r6, pester
    spawn r7, r6, r5, 1
    int r12, 0               ; count
    int r13, 0               ; sum
    int r16, 0               ; interrupts caught
loop:
    try r15, interrupted
    crecv r17, r1, closed
    endtry
    addi r12, r12, 1
    add r13, r13, r17
    jmp next
interrupted:
    addi r16, r16, 1
next:
    jlti r12, 5000, loop
    kill r7
    tuple r19, r12, 2
    print r19
    ret r19
closed:
    ret r0
.end

; Sends 1..500 on r0 with `csend`, retrying a value whose send was interrupted.
.func sender 1
    self r9
    fun r10, pester
    spawn r11, r10, r9, 1
    int r1, 1
again:
    try r2, interrupted
    csend r0, r1
    endtry
    addi r1, r1, 1
    jlei r1, 500, again
    kill r11
    ret r1
interrupted:
    jmp again
.end

.func pester 1
    const r1, {:poke, "again"}
    int r2, 0
loop:
    interrupt r0, r1, r2
    yield
    jmp loop
.end
"#;
    for _ in 0..3 {
        let (o, out) = run(src);
        // 10 senders × (1 + … + 500).
        assert_eq!(out, lines(&["{5000, 1252500}"]), "{o:?}");
    }
}

#[test]
fn deadlock_reports_name_channel_waits() {
    // Two actors wait on a channel both hold: not orphaned, but nobody will ever send.
    let (o, _) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    fun r2, waiter
    spawn r3, r2, r1, 1
    crecv r4, r1, closed
    ret r4
closed:
    ret r0
.end

.func waiter 1
    crecv r1, r0, closed
    ret r1
closed:
    ret r0
.end
"#);
    let Outcome::Deadlock(report) = o else { panic!("expected a deadlock, got {o:?}") };
    assert!(report.contains("<1>: waiting in channel receive"), "{report}");
    assert!(report.contains("<2>: waiting in channel receive"), "{report}");
}

#[test]
fn waiting_on_a_channel_no_one_else_holds_raises_orphaned() {
    let (_, out) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    try r2, caught
    crecv r3, r1, closed
    ret r3
caught:
    tget r4, r2, 0
    print r4
    ret r4
closed:
    ret r0
.end
"#);
    assert_eq!(out, lines(&[":orphaned"]));
}

#[test]
fn a_one_case_select_without_a_timeout_is_orphaned_too() {
    // `select` over a single channel case with no deadline waits as `crecv` does.
    let (_, out) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    const r2, :recv
    move r3, r1
    tuple r4, r2, 2          ; {:recv, ch}
    list r5, r4, 1
    int r4, 0                ; (the tuple is now reachable only through the list)
    int r6, -1               ; no timeout
    try r7, caught
    select r8, r5, r6, timed_out
    ret r8
caught:
    tget r9, r7, 0
    print r9
    ret r9
timed_out:
    ret r0
.end
"#);
    assert_eq!(out, lines(&[":orphaned"]));
}

#[test]
fn a_channel_in_a_shared_tuple_is_not_orphaned_while_another_actor_holds_it() {
    // The tuple {:recv, ch} is in r4 and in the list in r5: one clone of the handle, reached by
    // two paths. Counting it twice made the wait look orphaned although `sender` holds the
    // channel and sends on it 50 ms later.
    let (_, out) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    fun r10, sender
    spawn r11, r10, r1, 1
    const r2, :recv
    move r3, r1
    tuple r4, r2, 2          ; {:recv, ch}
    list r5, r4, 1           ; r4 and r5 share the tuple
    int r6, -1
    try r7, caught
    select r8, r5, r6, timed_out
    tget r9, r8, 2
    print r9
    ret r9
caught:
    tget r9, r7, 0
    print r9
    ret r9
timed_out:
    ret r0
.end

.func sender 1
    int r1, 50
    sleep r1
    const r2, "delivered"
    csend r0, r2
    ret r2
.end
"#);
    assert_eq!(out, lines(&["delivered"]));
}

#[test]
fn a_channel_becomes_orphaned_when_its_last_other_holder_exits() {
    // `holder` keeps the channel for 50 ms and exits without sending; main is then alone with it.
    // A second holder that does send must not trigger the exception.
    let (_, out) = run(r#"
.func main 0
    int r0, 0
    chan r1, r0
    fun r2, holder
    spawn r3, r2, r1, 1
    try r4, caught
    crecv r5, r1, closed
    ret r5
caught:
    tget r6, r4, 0
    print r6
    chan r1, r0
    fun r2, sender
    spawn r3, r2, r1, 1
    crecv r5, r1, closed
    print r5
    ret r5
closed:
    ret r0
.end

.func holder 1
    int r1, 50
    sleep r1
    ret r1
.end

.func sender 1
    int r1, 50
    sleep r1
    const r2, "delivered"
    csend r0, r2
    ret r2
.end
"#);
    assert_eq!(out, lines(&[":orphaned", "delivered"]));
}

#[test]
fn a_busy_channel_ping_pong_is_never_taken_for_a_deadlock() {
    // Each round trip passes `active` through zero for an instant (a select counts itself out
    // before it re-checks); the detector used to read zero twice across its grace period now
    // and then and report a deadlock in the middle of a healthy run.
    let src = r#"
.func main 0
    int r2, 0
    chan r3, r2
    chan r4, r2
    fun r5, echo
    spawn r6, r5, r3, 2
    int r7, 0
    int r1, 200000
loop:
    jge r7, r1, done
    csend r3, r7
    crecv r8, r4, done
    addi r7, r7, 1
    jmp loop
done:
    cclose r3
    ret r7
.end
.func echo 2
loop:
    crecv r2, r0, closed
    csend r1, r2
    jmp loop
closed:
    ret r2
.end
"#;
    let (o, _) = run(src);
    assert_eq!(o, Outcome::Exited(Value::Int(200_000)));
}
