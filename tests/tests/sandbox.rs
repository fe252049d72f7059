//! The sandbox and the command line's refusals, through the real binary (issue 20, points 3 to
//! 7): symbolic links cannot lead out of a file grant; every native that reaches outside the
//! process needs its flag; nonsense on the command line is refused with a clear message; a
//! native's caught panic leaves standard error empty; diagnostics are located.
//!
//! The programs these tests run are in `tests/programs/sandbox/` (not golden programs: they take
//! their operation from their arguments).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vm_tests::{RunOutput, repo_root, run_with_timeout};

const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// Runs `vm ARGS...` from the repository root with colours off and no `RUST_LOG`.
fn vm(args: &[&str]) -> RunOutput {
    vm_in(&repo_root(), args)
}

/// Runs `vm ARGS...` in `dir` (short file names keep diagnostics' headlines on one line).
fn vm_in(dir: &Path, args: &[&str]) -> RunOutput {
    let mut cmd = Command::new(VM);
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1").env_remove("RUST_LOG");
    let run = run_with_timeout(&mut cmd, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{VM}: {e}"));
    assert!(!run.timed_out, "vm {args:?} timed out");
    assert!(!run.stderr.contains("panicked"), "vm {args:?} panicked:\n{}", run.stderr);
    run
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Point 3: with `DIR/root -> /` and `DIR/out -> OUTSIDE`, a program granted only `DIR` can
/// neither read, list, overwrite nor create anything outside it through those links; the same
/// operations inside the grant, through a link that stays inside, work.
#[test]
fn symlinks_cannot_lead_out_of_a_file_grant() {
    let base = scratch("symlinks");
    let (grant, outside) = (base.join("grant"), base.join("outside"));
    std::fs::create_dir_all(grant.join("data")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::fs::write(grant.join("data/mine.txt"), "mine").unwrap();
    symlink("/", grant.join("root")).unwrap();
    symlink(&outside, grant.join("out")).unwrap();
    symlink("data", grant.join("here")).unwrap();
    let read_flag = format!("--allow-read={}", s(&grant));
    let write_flag = format!("--allow-write={}", s(&grant));
    let run = |op: &str, path: &Path| {
        vm(&["run", &read_flag, &write_flag, "tests/programs/sandbox/files.vasm", op, s(path)])
    };
    let denied = |op: &str, path: &Path, flag: &str| {
        let r = run(op, path);
        assert_eq!(r.code, Some(0), "{op} {path:?}: {}", r.stderr);
        assert!(
            r.stdout.starts_with("{:permission, \"")
                && r.stdout.contains("a symbolic link leads outside the paths granted by")
                && r.stdout.contains(flag),
            "{op} {path:?} was not denied: {}",
            r.stdout
        );
    };
    denied("read", &grant.join("root/etc/passwd"), "--allow-read");
    denied("read", &grant.join("out/secret.txt"), "--allow-read");
    denied("list", &grant.join("root"), "--allow-read");
    denied("list", &grant.join("out"), "--allow-read");
    denied("write", &grant.join("out/secret.txt"), "--allow-write");
    denied("create", &grant.join("out/new.txt"), "--allow-write");
    denied(
        "create",
        &grant.join("root").join(outside.strip_prefix("/").unwrap()).join("new2.txt"),
        "--allow-write",
    );
    assert_eq!(std::fs::read_to_string(outside.join("secret.txt")).unwrap(), "secret");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "a file was created outside the grant");

    // Inside the grant, through a link that stays inside, everything works.
    assert_eq!(run("read", &grant.join("here/mine.txt")).stdout, "b\"mine\"\n");
    assert_eq!(run("list", &grant.join("here")).stdout, "[\"mine.txt\"]\n");
    assert_eq!(run("create", &grant.join("here/new.txt")).stdout, ":written\n");
    assert_eq!(run("write", &grant.join("here/new.txt")).stdout, ":written\n");
    assert_eq!(std::fs::read_to_string(grant.join("data/new.txt")).unwrap(), "written by the program");
    // Removing a link removes the link, not what it points to.
    assert_eq!(run("remove", &grant.join("out")).stdout, ":removed\n");
    assert!(outside.join("secret.txt").exists() && !grant.join("out").exists());
    std::fs::remove_dir_all(&base).unwrap();
}

/// Point 4: `resolve` needs `--allow-net` (a name query carries data out of the process), as
/// do the sockets; `env_get` needs `--allow-env`; each flag grants only its own natives.
#[test]
fn every_native_reaching_outside_the_process_needs_its_flag() {
    let program = "tests/programs/sandbox/outside.vasm";
    let outcomes = |flags: &[&str]| {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.push(program);
        let r = vm(&args);
        assert_eq!(r.code, Some(0), "{flags:?}: {}", r.stderr);
        assert_eq!(r.stderr, "", "{flags:?}");
        r.stdout
    };
    let all = ["resolve", "env_get", "tcp_listen", "udp_bind", "file_read_all"];
    let expect = |ok: &[&str]| -> String {
        all.iter().map(|n| format!("{n}: {}\n", if ok.contains(n) { ":ok" } else { ":permission" })).collect()
    };
    assert_eq!(outcomes(&[]), expect(&[]));
    assert_eq!(outcomes(&["--allow-net"]), expect(&["resolve", "tcp_listen", "udp_bind"]));
    // An entry for the host allows resolving it; listening needs an entry for the address used.
    assert_eq!(outcomes(&["--allow-net=localhost"]), expect(&["resolve"]));
    assert_eq!(outcomes(&["--allow-net=127.0.0.1"]), expect(&["tcp_listen", "udp_bind"]));
    assert_eq!(outcomes(&["--allow-env=HOME"]), expect(&["env_get"]));
    assert_eq!(outcomes(&["--allow-env=PATH"]), expect(&[]));
    assert_eq!(
        outcomes(&["--allow-env", "--allow-read=tests/programs"]),
        expect(&["env_get", "file_read_all"])
    );
    // The denial names the flag.
    let r = vm(&["run", "tests/programs/sandbox/files.vasm", "read", "/etc/hostname"]);
    assert!(r.stdout.contains("run with --allow-read or --allow-read=/etc/hostname"), "{}", r.stdout);
}

/// Point 5: the command line refuses nonsense with a clear message and status 2, before
/// anything runs.
#[test]
fn the_command_line_refuses_nonsense() {
    let hello = "tests/programs/hello.vasm";
    let refused = |args: &[&str], want: &str| {
        let r = vm(args);
        assert_eq!(r.code, Some(2), "vm {args:?}: {}", r.stderr);
        assert!(r.stderr.contains(want), "vm {args:?}: stderr lacks {want:?}:\n{}", r.stderr);
        assert_eq!(r.stdout, "", "vm {args:?} ran the program");
    };
    // Far too many workers: capped, where it used to panic creating threads.
    refused(&["run", "--workers", "30000", hello], "the VM runs on 1 to 1024 worker threads, not 30000");
    refused(&["run", "--workers=0", hello], "the VM runs on 1 to 1024 worker threads, not 0");
    refused(&["repl", "--workers", "5000"], "not 5000");
    // An unknown option before FILE is an unknown option, not a file that cannot be read.
    refused(&["run", "--frobnicate", hello], "unexpected argument '--frobnicate'");
    refused(&["run", "-x", hello], "unexpected argument '-x'");
    // Malformed permission entries.
    refused(&["run", "--allow-net=:::", hello], "bad --allow-net entry \":::\"");
    refused(&["run", "--allow-net=host:99999", hello], "bad port");
    refused(&["run", "--allow-net=[localhost]:80", hello], "neither an IP address nor a host name");
    refused(&["run", "--allow-read=", hello], "--allow-read= needs at least one PATH");
    refused(&["run", "--allow-env=A=B", hello], "bad --allow-env entry");
    // After FILE everything is the program's, options or not.
    let r = vm(&["run", "tests/programs/args.vasm", "--frobnicate", "-x"]);
    assert!(r.stdout.starts_with("[\"--frobnicate\", \"-x\"]"), "{}", r.stdout);
    assert_eq!(vm(&["run", "--workers", "1024", hello]).stdout, "hello, world\n");
}

/// Point 5: a module is recognised by its magic bytes whatever its file is called, and source
/// text by their absence, whatever its file is called.
#[test]
fn a_module_is_recognised_by_its_magic_bytes() {
    let dir = scratch("magic");
    let module = dir.join("hello.module");
    let asm = vm(&["asm", "tests/programs/hello.vasm", "-o", s(&module)]);
    assert_eq!(asm.code, Some(0), "{}", asm.stderr);
    let r = vm(&["run", s(&module)]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (Some(0), "hello, world\n", ""));
    assert_eq!(vm(&["check", s(&module)]).code, Some(0));
    // Source text in a file named `.vbc` is assembled.
    let text = dir.join("text.vbc");
    std::fs::copy(repo_root().join("tests/programs/hello.vasm"), &text).unwrap();
    assert_eq!(vm(&["run", s(&text)]).stdout, "hello, world\n");
    // Bytes that are neither, named `.vbc`, are a module that fails to decode.
    let junk = dir.join("junk.vbc");
    std::fs::write(&junk, b"\xff\xfe\x00garbage").unwrap();
    let r = vm(&["run", s(&junk)]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("bad magic: not a .vbc file"), "{}", r.stderr);
}

/// Point 6: a native's panic that the program catches prints nothing: no Rust message, no
/// backtrace, even with `RUST_BACKTRACE` set. It is logged through tracing at debug level.
#[test]
fn caught_native_panics_leave_stderr_empty() {
    let program = "tests/programs/native_panic.vasm";
    let mut cmd = Command::new(VM);
    cmd.args(["run", program]).current_dir(repo_root()).env("RUST_BACKTRACE", "1").env_remove("RUST_LOG");
    let r = run_with_timeout(&mut cmd, Duration::from_secs(120)).unwrap();
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stderr, "", "a caught panic printed");
    assert!(r.stdout.ends_with("still running\n"), "{}", r.stdout);
    let mut cmd = Command::new(VM);
    cmd.args(["run", program]).current_dir(repo_root()).env("RUST_LOG", "vm_io=debug").env("NO_COLOR", "1");
    let r = run_with_timeout(&mut cmd, Duration::from_secs(120)).unwrap();
    assert_eq!(r.code, Some(0));
    assert!(
        r.stderr.contains("DEBUG vm_io::natives: native call panicked (raised as :panic in the caller): on the blocking pool")
            && r.stderr.contains("on the actor's thread"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("stack backtrace") && !r.stderr.contains("panicked at"), "{}", r.stderr);
}

/// Point 7: a verifier error in a program that assembled is drawn as an assembler error is:
/// file:line:col, the source line with the instruction underlined.
#[test]
fn verifier_errors_carry_a_column_and_a_snippet() {
    let dir = scratch("verify");
    let file = dir.join("arity.vasm");
    std::fs::write(&file, ".func main 0\n    nil r0\n    call r0, f, r0, 2   ; two for one\n    ret r0\n.end\n.func f 1\n    ret r0\n.end\n").unwrap();
    let r = vm_in(&dir, &["check", "arity.vasm"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("× arity.vasm:3:5: `call` of f passes 2 arguments but f takes 1\n"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(" 3 │     call r0, f, r0, 2   ; two for one\n"), "{}", r.stderr);
    assert!(
        r.stderr.contains("·     ─────────────────\n"),
        "the underline is the instruction:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("found by the verifier in `main`, instruction 1"), "{}", r.stderr);
    assert!(r.stderr.ends_with("error: 1 error in arity.vasm\n"), "{}", r.stderr);
    assert_eq!(vm_in(&dir, &["run", "arity.vasm"]).stderr, r.stderr);
}

/// Point 7: a source file that is not UTF-8 is reported where its first bad byte is, with the
/// line, even when it is included.
#[test]
fn invalid_utf8_is_located() {
    let dir = scratch("utf8");
    std::fs::write(dir.join("lib.vasm"), b".func greet 0\n    const r0, \"gr\xfc\xdf\"\n    ret r0\n.end\n")
        .unwrap();
    std::fs::write(dir.join("main.vasm"), ".include \"lib.vasm\"\n.func main 0\n    ret r0\n.end\n").unwrap();
    let r = vm_in(&dir, &["check", "main.vasm"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("× lib.vasm:2:18: invalid UTF-8: byte 0xFC\n"), "{}", r.stderr);
    assert!(r.stderr.contains(" 2 │     const r0, \"gr\u{FFFD}\u{FFFD}\"\n"), "{}", r.stderr);
    assert!(r.stderr.contains("source files must be UTF-8 text"), "{}", r.stderr);
}

/// Point 7: `vm check` refuses what `vm run` would refuse (no `main`, `main` of the wrong arity)
/// unless told the file is a library.
#[test]
fn check_reports_what_run_would_refuse() {
    let dir = scratch("check");
    let lib = dir.join("lib.vasm");
    std::fs::write(&lib, ".func double 1\n    add r0, r0, r0\n    ret r0\n.end\n").unwrap();
    let arity = dir.join("arity.vasm");
    std::fs::write(&arity, ".func main 2\n    ret r0\n.end\n").unwrap();
    for (file, want) in [(&lib, "the program has no `main` function"), (&arity, "`main` takes 2 arguments")] {
        let run = vm(&["run", s(file)]);
        let check = vm(&["check", s(file)]);
        assert_eq!((run.code, check.code), (Some(2), Some(2)), "{}{}", run.stderr, check.stderr);
        assert!(run.stderr.contains(want) && check.stderr.contains(want), "{}\n{}", run.stderr, check.stderr);
        assert!(check.stderr.contains("vm check --lib"), "{}", check.stderr);
        let r = vm(&["check", "--lib", s(file)]);
        assert_eq!((r.code, r.stderr.as_str()), (Some(0), ""));
    }
}

/// Point 7, while the actor still holds its worker: an actor spinning in a loop in `spin`
/// (called from `work`, called from `main`, where its one long slice began: `--fuel` lets it run
/// 30 million iterations without yielding) is reported at the loop in `spin`, as published at
/// its fuel checks, not at the slice's start in `main`.
#[test]
fn the_hog_warning_names_the_loop_a_long_slice_spins_in() {
    let line = spin_warning("tests/programs/sandbox/spin.vasm");
    assert!(line.contains("at=tests/programs/sandbox/spin.vasm:"), "{line}");
    assert!(line.contains("(in spin, instruction "), "{line}");
    assert!(!line.contains("slice_began_at"), "{line}");
}

/// Point 7 after an idle spell: the watchdog, parked while the VM slept, is woken by the long
/// slice's start and must report it while it runs. As a tokio task it was woken into the
/// spinning worker's LIFO slot, which the other worker may not steal, and never ran until the
/// slice ended: no warning at all (every run, before the watchdog became a thread).
#[test]
fn a_long_slice_after_an_idle_spell_is_reported_while_it_runs() {
    let line = spin_warning("tests/programs/sandbox/spin_after_idle.vasm");
    assert!(line.contains("(in spin, instruction "), "{line}");
}

/// Runs `program` (one long slice counting to 30 million in `spin`; `--fuel` lets it run without
/// yielding) and returns the watchdog's warning, given while the actor still held its worker.
fn spin_warning(program: &str) -> String {
    let mut cmd = Command::new(VM);
    cmd.args(["run", "--workers", "2", "--fuel", "4000000000", program])
        .current_dir(repo_root())
        .env_remove("RUST_LOG")
        // A low threshold, so that even a release build's loop (about 0.1 s) is reported.
        .env("VM_HOG_THRESHOLD_MS", "20");
    let r = run_with_timeout(&mut cmd, Duration::from_secs(120)).unwrap();
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "30000000\n"), "{}", r.stderr);
    r.stderr
        .lines()
        .find(|l| l.contains("actor has held a worker thread without yielding"))
        .unwrap_or_else(|| panic!("no warning while the actor held its worker:\n{}", r.stderr))
        .to_owned()
}

/// Point 7: the heartbeat's warning names where the actor is, not where its slice began. The
/// program's slice begins in `main`; one long `split` in `work` holds the worker; when the slice
/// ends, at the `print` after it, the warning names that line in `work`.
#[test]
fn the_hog_warning_names_where_the_actor_is() {
    let r = vm(&["run", "tests/programs/sandbox/hog.vasm"]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "4194305\n"), "{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("held a worker thread without yielding; it let go here"))
        .unwrap_or_else(|| panic!("no warning naming where the actor is:\n{}", r.stderr));
    assert!(line.contains("at=tests/programs/sandbox/hog.vasm:19 (in work, instruction 8)"), "{line}");
    // The watchdog's warning, while the slice still runs, names the actor once (the pid field)
    // and where its slice began.
    let early = r
        .stderr
        .lines()
        .find(|l| l.contains("actor has held a worker thread without yielding (where it is follows"))
        .unwrap_or_else(|| panic!("no watchdog warning:\n{}", r.stderr));
    assert!(
        early.contains("pid=1 ") && early.contains("slice_began_at=tests/programs/sandbox/hog.vasm:"),
        "{early}"
    );
    assert!(!early.contains("<1>"), "the pid is shown twice: {early}");

    // `VM_HOG_THRESHOLD_MS` raises the threshold (the golden harness does, so that a loaded
    // machine's slow slices are not output): the same run then warns of nothing.
    let mut cmd = Command::new(VM);
    cmd.args(["run", "tests/programs/sandbox/hog.vasm"]).current_dir(repo_root()).env_remove("RUST_LOG");
    let quiet = run_with_timeout(cmd.env("VM_HOG_THRESHOLD_MS", "600000"), Duration::from_secs(120)).unwrap();
    assert_eq!((quiet.code, quiet.stdout.as_str(), quiet.stderr.as_str()), (Some(0), "4194305\n", ""));
    let bad = run_with_timeout(cmd.env("VM_HOG_THRESHOLD_MS", "soon"), Duration::from_secs(120)).unwrap();
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("VM_HOG_THRESHOLD_MS=soon is not a number of milliseconds"),
        "{}",
        bad.stderr
    );
}
