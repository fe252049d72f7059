//! I/O through the real command line: standard input and output of a program, the permission
//! flags of `vm run`, and reports on standard error that stay short whatever a crashed actor
//! held.

use std::process::Command;
use std::time::Duration;
use vm_tests::{repo_root, run_with_input};

const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// Runs `vm ARGS...` with `stdin` as its input; a run longer than a minute is killed and fails.
fn vm(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut cmd = Command::new(VM);
    cmd.args(args).current_dir(repo_root()).env("NO_COLOR", "1");
    let run = run_with_input(&mut cmd, Some(stdin), Duration::from_secs(60)).expect("vm starts");
    assert!(!run.timed_out, "vm {args:?} did not finish within a minute; stderr:\n{}", run.stderr);
    (run.code.unwrap_or(-1), run.stdout, run.stderr)
}

#[test]
fn a_program_reads_standard_input_to_its_end() {
    let input = "one\ntwo\nthree without newline";
    let (code, out, err) = vm(&["run", "tests/programs/io/stdin_upper.vasm"], input.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ONE\nTWO\nTHREE WITHOUT NEWLINE");
    assert_eq!(err, "3 lines\n");
}

#[test]
fn a_large_standard_input_arrives_whole_and_in_order() {
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let (code, out, err) = vm(&["run", "tests/programs/io/stdin_upper.vasm"], input.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, input.to_uppercase());
    assert_eq!(err, "20000 lines\n");
}

#[test]
fn permission_flags_are_parsed_and_denials_name_the_flag() {
    let listen = "tests/programs/io/listen.vasm";
    // Denied by default: an uncaught :permission exception (status 1) naming the flag.
    let (code, _, err) = vm(&["run", listen], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("permission: network access to 127.0.0.1:0 denied: run with --allow-net"), "{err}");
    // Granted for that host: it listens and reports a port.
    let (code, out, err) = vm(&["run", "--allow-net=127.0.0.1", listen], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("listening on 127.0.0.1:"), "{out}");
    // Granted for another host only: still denied.
    let (code, _, err) = vm(&["run", "--allow-net=example.com:80", listen], b"");
    assert_eq!(code, 1, "{err}");
    // A malformed grant is a usage error.
    let (code, _, err) = vm(&["run", "--allow-net=host:notaport", listen], b"");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad port"), "{err}");
}

/// An actor that ends holding a 10 MB string or a million-element list is reported with a
/// bounded excerpt, "…" and the value's size, never the whole value.
#[test]
fn a_crash_with_a_huge_value_is_reported_with_an_excerpt() {
    let prog = "tests/programs/io/huge_crash.vasm";
    // A child's crash, logged while the VM goes on.
    let (code, out, err) = vm(&["run", prog, "child"], b"");
    assert_eq!((code, out.as_str()), (0, "main goes on\n"), "{}", &err[..err.len().min(4000)]);
    assert!(
        err.contains("actor crashed") && err.contains("oops: 0123456789"),
        "{}",
        &err[..err.len().min(4000)]
    );
    assert!(err.contains("… (10485760 bytes)"), "{}", &err[..err.len().min(4000)]);
    assert!(err.len() < 4096, "the crash log is {} bytes", err.len());
    // Main's uncaught exception.
    let (code, out, err) = vm(&["run", prog, "main"], b"");
    assert_eq!((code, out.as_str()), (1, ""), "{}", &err[..err.len().min(4000)]);
    assert!(
        err.contains("oops: 01234567890123456789") && err.contains("… (10485760 bytes)"),
        "{}",
        &err[..err.len().min(4000)]
    );
    assert!(err.len() < 4096, "the report is {} bytes", err.len());
    // Main stopping with a huge reason.
    let (code, _, err) = vm(&["run", prog, "stop"], b"");
    assert_eq!(code, 1, "{}", &err[..err.len().min(4000)]);
    assert!(
        err.contains("exited with reason [\"a\", \"a\", ") && err.contains("… (1048577 elements)"),
        "{}",
        &err[..err.len().min(4000)]
    );
    assert!(err.len() < 4096, "the report is {} bytes", err.len());
}
