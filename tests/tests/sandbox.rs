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
    let mut cmd = Command::new(VM);
    cmd.args(args).current_dir(repo_root()).env("NO_COLOR", "1").env_remove("RUST_LOG");
    let run = run_with_timeout(&mut cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{VM}: {e}"));
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
