//! Memory exhaustion ends an actor, not the VM (issue 20, point 2), through the real binary:
//! each program in `tests/programs/memory/` makes one child use memory without end (a list
//! growing forever, a flooded mailbox, a spawn bomb, deep calls with large register files) while
//! the process runs under `prlimit --as` (an address-space limit, where an allocation the VM did
//! not stop would abort the process with `memory allocation failed`). The child ends with
//! `{:limit, :memory}` (or a refused spawn), and main, which monitors it, prints the reason and
//! goes on.

use std::process::Command;
use std::time::Duration;
use vm_tests::{RunOutput, repo_root, run_with_timeout};

const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// The address-space limit the process runs under.
const ADDRESS_SPACE: u64 = 1 << 30;

/// Runs `vm run FLAGS... tests/programs/memory/NAME.vasm` under `prlimit --as`.
fn run_limited(name: &str, flags: &[&str]) -> RunOutput {
    let program = format!("tests/programs/memory/{name}.vasm");
    limited(name, "run", flags, program.as_ref())
}

/// Runs `vm COMMAND FLAGS... FILE` under `prlimit --as`, in the repository; checks that the VM,
/// not the allocator, stopped what ran out.
fn limited(name: &str, command: &str, flags: &[&str], file: &std::ffi::OsStr) -> RunOutput {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={ADDRESS_SPACE}"))
        .arg(VM)
        .arg(command)
        .args(flags)
        .arg(file)
        .current_dir(repo_root())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let run =
        run_with_timeout(&mut cmd, Duration::from_secs(120)).unwrap_or_else(|e| panic!("prlimit {VM}: {e}"));
    assert!(!run.timed_out, "{name} timed out");
    assert!(!run.stderr.contains("memory allocation"), "{name} ran out of memory:\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{name} panicked:\n{}", run.stderr);
    run
}

/// The child ended with `reason` and main went on to the end.
fn assert_contained(name: &str, run: &RunOutput, reason: &str) {
    assert_eq!(run.stdout, format!("{reason}\nmain goes on\n"), "{name}: stderr:\n{}", run.stderr);
    assert_eq!(run.code, Some(0), "{name}: stderr:\n{}", run.stderr);
}

#[test]
fn a_list_growing_forever_ends_its_actor() {
    let run = run_limited("runaway_list", &["--max-memory", "64m"]);
    assert_contained("runaway_list", &run, "{:limit, :memory}");
    // main then spawned an actor and talked to it: the VM works on.
}

#[test]
fn the_default_budget_comes_from_the_address_space_limit() {
    // No --max-memory: the budget is taken from RLIMIT_AS, below it, so the runaway is still
    // ended by the VM rather than by the allocator.
    let run = run_limited("runaway_list", &[]);
    assert_contained("runaway_list", &run, "{:limit, :memory}");
}

#[test]
fn a_flooded_mailbox_ends_its_receiver() {
    let run = run_limited("flood", &["--max-memory", "64m"]);
    assert_contained("flood", &run, "{:limit, :memory}");
}

#[test]
fn a_spawn_bomb_is_refused() {
    // The bomb's spawn raises :limit past the budget; it ends with that exception.
    let run = run_limited("spawn_bomb", &["--max-memory", "64m"]);
    assert_contained("spawn_bomb", &run, ":limit");
}

#[test]
fn deep_calls_with_large_frames_end_their_actor() {
    // 65,535 registers x 100,000 frames would be 100 GB of register stack.
    let run = run_limited("deep_frames", &["--max-memory", "64m"]);
    assert_contained("deep_frames", &run, "{:limit, :memory}");
}

/// Runs `vm up FLAGS... MANIFEST` under `prlimit --as`, the manifest holding two containers:
/// `hog` (the runaway list) and `calm` (hello), each printing its lines tagged with its name.
fn up_limited(test: &str, flags: &[&str]) -> RunOutput {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("memory").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let root = repo_root();
    let manifest = format!(
        r#"{{"containers": [
            {{"name": "hog", "module": "{}"}},
            {{"name": "calm", "module": "{}"}}
        ]}}"#,
        root.join("tests/programs/memory/runaway_list.vasm").display(),
        root.join("examples/hello.vasm").display()
    );
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest).expect("writing the manifest");
    limited(test, "up", flags, path.as_os_str())
}

/// The lines `container` printed under `vm up`, without its tag.
fn lines_of(run: &RunOutput, container: &str) -> Vec<String> {
    let tag = format!("[{container}] ");
    run.stdout.lines().filter_map(|l| l.strip_prefix(tag.as_str())).map(str::to_owned).collect()
}

#[test]
fn vm_up_takes_a_memory_budget_for_all_its_containers() {
    // The runaway in one container is ended by the budget; its main and the other container
    // go on to their ends.
    let run = up_limited("up_budget", &["--max-memory", "64m"]);
    assert_eq!(lines_of(&run, "hog"), ["{:limit, :memory}", "main goes on"], "stderr:\n{}", run.stderr);
    assert_eq!(lines_of(&run, "calm"), ["hello, world"], "stderr:\n{}", run.stderr);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
}

#[test]
fn vm_up_takes_its_default_budget_from_the_system() {
    // No --max-memory: as under `vm run`, the budget comes from the address-space limit, so the
    // VM ends the runaway before the allocator fails.
    let run = up_limited("up_default_budget", &[]);
    assert_eq!(lines_of(&run, "hog"), ["{:limit, :memory}", "main goes on"], "stderr:\n{}", run.stderr);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
}

#[test]
fn max_memory_refuses_nonsense() {
    let mut cmd = Command::new(VM);
    cmd.args(["run", "--max-memory", "lots", "examples/hello.vasm"]).current_dir(repo_root());
    let run = run_with_timeout(&mut cmd, Duration::from_secs(20)).expect("vm runs");
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("is not a size"), "{}", run.stderr);
}

#[test]
fn max_heap_ends_only_its_actor() {
    // The runtime's own program (run in-process by vm-sched's tests), here through the binary:
    // a growing list, a doubling string and deep large frames each end their actor with
    // {:limit, :max_heap}; garbage far beyond the limit does not; main goes on.
    for program in ["vm-sched/tests/programs/max_heap", "vm-sched/tests/programs/max_heap_mailbox"] {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--as={ADDRESS_SPACE}"))
            .args([VM, "run", &format!("{program}.vasm")])
            .current_dir(repo_root())
            .env_remove("RUST_LOG");
        let run = run_with_timeout(&mut cmd, Duration::from_secs(60)).expect("vm runs");
        let want =
            std::fs::read_to_string(repo_root().join(format!("{program}.out"))).expect("expected output");
        assert_eq!(run.stdout, want, "{program}: stderr:\n{}", run.stderr);
        assert_eq!(run.code, Some(0), "{program}: stderr:\n{}", run.stderr);
    }
}
