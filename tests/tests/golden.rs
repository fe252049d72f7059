//! Golden tests: every program in `tests/programs/` is run through the real command line
//! (`vm-under-test`, which is `vm`) and its standard output, exit status and standard error are
//! compared with the files beside it (see the `vm_tests` crate docs for the format).
//!
//! The heartbeat's warnings are kept out of the comparison by raising its threshold
//! (`VM_HOG_THRESHOLD_MS`, see [`vm`]) rather than by filtering stderr: the VM then prints
//! exactly what is compared, and no pattern has to recognise its log lines.
//!
//! A program may also have `NAME.flags`: `vm run` options, one per line, given before the
//! program's path (`--allow-net=127.0.0.1` for a program that uses the network).
//!
//! Each test collects every mismatch before failing, so one run lists all broken programs.
//! `UPDATE_EXPECT=1 cargo test -p vm-tests --test golden` rewrites the `.out` files from what the
//! programs print (never `.code` or `.err`, which are written by hand); check the diff before
//! committing it.
//!
//! The other tests here hold the tools to their contracts on the same programs: `vm asm` then
//! `vm run` of the `.vbc` prints what the source did, `vm disasm` output re-assembles to the same
//! bytes, `vm check` locates each of three mistakes, and garbage given as a `.vbc` is refused with
//! status 2 and a message rather than a panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use vm_tests::{
    Expected, Golden, RunOutput, XorShift, check_golden, first_difference, indent, load_goldens, repo_root,
    run_with_timeout, update_requested,
};

/// The `vm` binary under test.
const VM: &str = env!("CARGO_BIN_EXE_vm-under-test");

/// A program that runs longer than this is killed and counted as failed.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `vm ARGS...` from the repository root with colours off, and with the heartbeat's
/// threshold raised far above [`LIMIT`]: on a loaded machine any slice may be descheduled for
/// longer than the default 100 ms, and the warning would land in the stderr compared here.
fn vm(args: &[&str]) -> RunOutput {
    let mut cmd = Command::new(VM);
    cmd.args(args).current_dir(repo_root()).env("NO_COLOR", "1").env("VM_HOG_THRESHOLD_MS", "600000");
    run_with_timeout(&mut cmd, LIMIT).unwrap_or_else(|e| panic!("cannot start {VM}: {e}"))
}

/// The `vm run` options of a golden program, from `NAME.flags` (none without the file).
fn run_flags(g: &Golden) -> Vec<String> {
    let path = repo_root().join(g.sibling("flags"));
    match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

fn goldens() -> Vec<Golden> {
    load_goldens(&repo_root(), "tests/programs").expect("tests/programs is readable")
}

/// A fresh scratch directory for one test, under Cargo's per-target temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Runs `job` on every item on a few threads (the programs are mostly waiting on a clock or a
/// subprocess) and returns the results in input order.
fn par_map<T: Sync, R: Send>(items: &[T], job: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = job(item);
                    results.lock().expect("no worker panics while holding the lock")[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().expect("workers finished").into_iter().map(|r| r.expect("every item ran")).collect()
}

/// Fails with every collected problem, grouped by program.
fn report(what: &str, failures: Vec<(String, Vec<String>)>, total: usize) {
    let failures: Vec<_> = failures.into_iter().filter(|(_, p)| !p.is_empty()).collect();
    if failures.is_empty() {
        return;
    }
    let mut msg = format!("{} of {total} {what} failed:\n", failures.len());
    for (name, problems) in &failures {
        msg.push_str(&format!("\n=== {name}\n"));
        for p in problems {
            msg.push_str(&indent(p));
        }
    }
    panic!("{msg}");
}

#[test]
fn golden_programs() {
    let goldens = goldens();
    assert!(goldens.len() >= 35, "expected at least 35 golden programs, found {}", goldens.len());
    let update = update_requested();
    let failures = par_map(&goldens, |g| {
        let flags = run_flags(g);
        let mut args = vec!["run"];
        args.extend(flags.iter().map(String::as_str));
        args.push(g.rel_path.as_str());
        args.extend(g.args.iter().map(String::as_str));
        let run = vm(&args);
        if update && !run.timed_out {
            let path = repo_root().join(g.sibling("out"));
            std::fs::write(&path, &run.stdout).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut updated = g.clone();
            updated.expected.out = Some(run.stdout.clone());
            return (g.rel_path.clone(), check_golden(&updated, &run));
        }
        (g.rel_path.clone(), check_golden(g, &run))
    });
    report("golden programs", failures, goldens.len());
}

/// The programs the repository ships outside `tests/programs`, with small inputs.
#[test]
fn shipped_programs() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "examples/hello.vasm"], "hello, world\n"),
        (&["run", "benches/programs/fib.vasm", "20"], "6765\n"),
        (&["run", "benches/programs/fib.vasm", "1"], "1\n"),
        (&["run", "benches/programs/loop.vasm", "1000"], "3003\n"),
        (&["run", "benches/programs/loop.vasm", "0"], "0\n"),
        (&["run", "benches/programs/values.vasm", "1000"], "936\n"),
        (&["run", "benches/programs/values.vasm", "10"], "0\n"),
        // The fan-in pair issue 18 compares: a channel against a mailbox, the same sum.
        (&["run", "benches/programs/chan_fanin.vasm", "6400"], "chan_fanin 6400 result=323200\n"),
        (&["run", "benches/programs/fanin.vasm", "6400"], "fanin 6400 result=323200\n"),
        (&["run", "benches/programs/chan_pingpong.vasm", "5000"], "chan_pingpong 5000 result=5000\n"),
    ];
    let failures = par_map(cases, |(args, want)| {
        let run = vm(args);
        let g = Golden {
            name: args[1].to_string(),
            rel_path: args[1].to_string(),
            args: vec![],
            expected: Expected { out: Some(want.to_string()), err: vec![] },
            code: 0,
        };
        (args.join(" "), check_golden(&g, &run))
    });
    report("shipped programs", failures, cases.len());
}

/// Finds every `PATH:LINE:COL` in `text` and returns the `(line, col)` pairs.
fn locations(text: &str, path: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(path) {
        rest = &rest[at + path.len()..];
        let mut nums = rest.strip_prefix(':').into_iter().flat_map(|r| r.splitn(3, ':')).take(2);
        let line = nums.next().and_then(|s| s.parse::<u32>().ok());
        let col = nums.next().map(|s| s.chars().take_while(char::is_ascii_digit).collect::<String>());
        if let (Some(line), Some(Ok(col))) = (line, col.map(|c| c.parse::<u32>())) {
            found.push((line, col));
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn check_reports_each_of_three_mistakes_with_its_location() {
    let path = "tests/programs/asm_errors.vasm";
    let run = vm(&["check", path]);
    assert_eq!(run.code, Some(2), "vm check should exit with 2; stderr:\n{}", run.stderr);
    let locs = locations(&run.stderr, path);
    let lines: Vec<u32> = {
        let mut l: Vec<u32> = locs.iter().map(|(l, _)| *l).collect();
        l.dedup();
        l
    };
    assert_eq!(lines, [5, 6, 7], "want one file:line:col for each of lines 5, 6, 7; stderr:\n{}", run.stderr);
    assert!(locs.iter().all(|(_, c)| *c >= 1), "columns count from 1: {locs:?}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn check_accepts_every_valid_golden_program() {
    let goldens: Vec<Golden> = goldens().into_iter().filter(|g| g.code != 2).collect();
    let failures = par_map(&goldens, |g| {
        let run = vm(&["check", &g.rel_path]);
        let mut problems = Vec::new();
        if run.code != Some(0) {
            problems.push(format!("vm check exited with {:?}; stderr:\n{}", run.code, indent(&run.stderr)));
        }
        (g.rel_path.clone(), problems)
    });
    report("vm check runs", failures, goldens.len());
}

#[test]
fn assembled_programs_print_what_their_source_prints() {
    let dir = scratch("asm_run");
    let goldens: Vec<Golden> = goldens().into_iter().filter(|g| g.code == 0).collect();
    let failures = par_map(&goldens, |g| {
        let vbc = dir.join(format!("{}.vbc", g.name));
        let vbc = vbc.to_str().expect("utf-8 temp path");
        let asm = vm(&["asm", &g.rel_path, "-o", vbc]);
        if asm.code != Some(0) {
            let p = format!("vm asm exited with {:?}; stderr:\n{}", asm.code, indent(&asm.stderr));
            return (g.rel_path.clone(), vec![p]);
        }
        let flags = run_flags(g);
        let mut args = vec!["run"];
        args.extend(flags.iter().map(String::as_str));
        args.push(vbc);
        args.extend(g.args.iter().map(String::as_str));
        let run = vm(&args);
        (format!("{} (as .vbc)", g.rel_path), check_golden(g, &run))
    });
    report("assembled programs", failures, goldens.len());
}

#[test]
fn disassembly_reassembles_to_identical_bytes() {
    let dir = scratch("disasm");
    let goldens: Vec<Golden> = goldens().into_iter().filter(|g| g.code != 2).collect();
    let failures = par_map(&goldens, |g| {
        let first = dir.join(format!("{}.vbc", g.name));
        let text = dir.join(format!("{}.dis.vasm", g.name));
        let second = dir.join(format!("{}.re.vbc", g.name));
        let [first_s, text_s, second_s] =
            [&first, &text, &second].map(|p| p.to_str().expect("utf-8 temp path"));
        let mut problems = Vec::new();
        let asm = vm(&["asm", &g.rel_path, "-o", first_s]);
        if asm.code != Some(0) {
            problems.push(format!("vm asm exited with {:?}:\n{}", asm.code, indent(&asm.stderr)));
            return (g.rel_path.clone(), problems);
        }
        let dis = vm(&["disasm", first_s]);
        if dis.code != Some(0) {
            problems.push(format!("vm disasm exited with {:?}:\n{}", dis.code, indent(&dis.stderr)));
            return (g.rel_path.clone(), problems);
        }
        std::fs::write(&text, &dis.stdout).expect("write disassembly");
        let re = vm(&["asm", text_s, "-o", second_s]);
        if re.code != Some(0) {
            problems.push(format!(
                "the disassembly ({text_s}) does not assemble ({:?}):\n{}",
                re.code,
                indent(&re.stderr)
            ));
            return (g.rel_path.clone(), problems);
        }
        let a = std::fs::read(&first).expect("first .vbc");
        let b = std::fs::read(&second).expect("second .vbc");
        if a != b {
            let at = first_difference(&a, &b);
            problems.push(format!(
                "re-assembled bytes differ ({} vs {} bytes, first difference at offset {at}); \
                 disassembly kept in {text_s}",
                a.len(),
                b.len()
            ));
        }
        (g.rel_path.clone(), problems)
    });
    report("disassembly round trips", failures, goldens.len());
}

#[test]
fn garbage_bytecode_is_refused_without_a_panic() {
    let dir = scratch("garbage");
    // A real header followed by garbage reaches deeper into the decoder than pure noise does.
    let real = dir.join("hello.vbc");
    let asm = vm(&["asm", "tests/programs/hello.vasm", "-o", real.to_str().expect("utf-8 temp path")]);
    assert_eq!(asm.code, Some(0), "vm asm hello.vasm failed:\n{}", asm.stderr);
    let real = std::fs::read(&real).expect("hello.vbc");
    assert!(real.len() > 16, "vm asm wrote only {} bytes for hello.vasm", real.len());

    let mut cases: Vec<(String, Vec<u8>)> = vec![("empty".into(), vec![])];
    let mut rng = XorShift::new(0x5eed);
    for (i, n) in [1usize, 3, 8, 16, 64, 300, 4096].into_iter().enumerate() {
        cases.push((format!("noise{i}_{n}"), rng.bytes(n)));
    }
    for keep in [4usize, 8, 12, 16] {
        let mut bytes = real[..keep.min(real.len())].to_vec();
        bytes.extend(rng.bytes(200));
        cases.push((format!("header{keep}_noise"), bytes));
    }
    // Cut short: every proper prefix of a real module ends mid-structure.
    for cut in [real.len() / 3, real.len() / 2, real.len() - 1] {
        cases.push((format!("truncated_{cut}"), real[..cut].to_vec()));
    }

    let failures = par_map(&cases, |(name, bytes)| {
        let path = dir.join(format!("{name}.vbc"));
        std::fs::write(&path, bytes).expect("write garbage");
        let path = path.to_str().expect("utf-8 temp path");
        let mut problems = Vec::new();
        for cmd in ["run", "disasm"] {
            let run = vm(&[cmd, path]);
            if run.code != Some(2) {
                problems.push(format!("vm {cmd}: exit status {:?}, expected 2", run.code));
            }
            if run.stderr.trim().is_empty() {
                problems.push(format!("vm {cmd}: no message on stderr"));
            }
            if run.stderr.contains("panicked") {
                problems.push(format!("vm {cmd} panicked:\n{}", indent(&run.stderr)));
            }
        }
        (name.clone(), problems)
    });
    report("garbage inputs", failures, cases.len());
}

#[test]
fn locations_are_parsed_from_diagnostics() {
    let text = "error: x\n  ╭─[tests/p.vasm:5:3]\nerror at tests/p.vasm:7:12: y\ntests/p.vasm:9 no col\n";
    assert_eq!(locations(text, "tests/p.vasm"), [(5, 3), (7, 12)]);
}

/// Every instruction of the op list appears in at least one golden program, so a new op cannot
/// land without a program that shows what it does.
#[test]
fn every_instruction_is_used_by_a_golden_program() {
    let mut used = std::collections::BTreeSet::new();
    for g in goldens() {
        let text = std::fs::read_to_string(repo_root().join(&g.rel_path)).expect("golden source");
        for line in text.lines() {
            let code = line.split(';').next().unwrap_or("");
            // Skip a leading `label:`; the mnemonic is the first word after it.
            let code = match code.split_once(':') {
                Some((label, rest)) if !label.contains(char::is_whitespace) && !label.is_empty() => rest,
                _ => code,
            };
            if let Some(word) = code.split_whitespace().next() {
                used.insert(word.to_string());
            }
        }
    }
    let missing: Vec<&str> =
        vm_core::Opcode::ALL.iter().map(|op| op.mnemonic()).filter(|m| !used.contains(*m)).collect();
    assert!(missing.is_empty(), "no golden program uses: {}", missing.join(", "));
}

#[test]
fn a_seed_repeats_a_run_and_another_seed_does_not() {
    let run = |seed: Option<&str>| {
        let mut args = vec!["run"];
        if let Some(s) = seed {
            args.extend(["--seed", s]);
        }
        args.push("tests/programs/dice.vasm");
        let out = vm(&args);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout
    };
    assert_eq!(run(Some("7")), run(Some("7")));
    assert_ne!(run(Some("7")), run(Some("8")));
    // Without a seed each run has its own: two runs rolling the same ten dice, the same float
    // and the same bytes would be a 1 in 2^80 coincidence.
    assert_ne!(run(None), run(None));
    let bad = vm(&["run", "--seed", "x", "tests/programs/dice.vasm"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
}
