//! Tests of the command line's parsing and refusals.

use super::*;
use vm_core::{Atom, Exception, Fault, Location};

#[test]
fn the_hog_threshold_comes_from_the_environment() {
    use std::ffi::OsStr;
    assert_eq!(hog_threshold_ms(None), Ok(100));
    assert_eq!(hog_threshold_ms(Some(OsStr::new(" 2500 "))), Ok(2500));
    for bad in ["0", "-1", "1.5", "", "ms"] {
        let e = hog_threshold_ms(Some(OsStr::new(bad))).unwrap_err();
        assert_eq!(
            e,
            format!("error: VM_HOG_THRESHOLD_MS={bad} is not a number of milliseconds (at least 1)\n")
        );
    }
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("vm").chain(args.iter().copied()))
}

/// Runs `vm ARGS...` in-process; returns the exit status and what went to standard error.
fn vm(args: &[&str]) -> (u8, String) {
    let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut err = Vec::new();
    let status = run_command(cli.command, &mut err, Style::plain());
    (status, String::from_utf8(err).unwrap())
}

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn run_passes_trailing_arguments_through_untouched() {
    let cli = parse(&["run", "--fuel", "10", "p.vasm", "--fuel", "-x", "--", "plain", "--trace"]).unwrap();
    let Command::Run(run) = cli.command else { panic!() };
    assert_eq!(run.runtime.fuel, 10);
    assert_eq!(run.file(), PathBuf::from("p.vasm"));
    assert_eq!(run.args(), ["--fuel", "-x", "--", "plain", "--trace"]);
    assert!(!cli.trace);
}

#[test]
fn run_defaults_and_flags() {
    let Command::Run(run) = parse(&["run", "p.vbc"]).unwrap().command else { panic!() };
    assert_eq!(run.runtime.fuel, vm_sched::Config::default().fuel);
    assert_eq!(run.runtime.max_frames, vm_core::step::DEFAULT_MAX_FRAMES);
    assert_eq!(run.runtime.workers, None);
    assert!(run.args().is_empty());
    let cli = parse(&["--trace", "run", "--workers", "2", "--max-frames", "9", "p.vbc", "a"]).unwrap();
    assert!(cli.trace);
    let Command::Run(run) = cli.command else { panic!() };
    assert_eq!(run.runtime.workers, NonZeroUsize::new(2));
    assert_eq!(run.runtime.max_frames, 9);
    assert_eq!(run.args(), ["a"]);
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert!(parse(&["run"]).is_err());
    assert!(parse(&["run", "--workers", "0", "p.vasm"]).is_err());
    assert!(parse(&["run", "--fuel", "0", "p.vasm"]).is_err());
    assert!(parse(&["frobnicate"]).is_err());
    // `run_cli` exits with 2 exactly when clap reports on stderr; clap agrees on the codes.
    for bad in [&["frobnicate"][..], &["run", "--fuel", "x", "p.vasm"], &["check"]] {
        let e = parse(bad).unwrap_err();
        assert!(e.use_stderr() && e.exit_code() == i32::from(EXIT_USAGE), "{bad:?}");
    }
    for info in [&["--version"][..], &["--help"], &["run", "--help"]] {
        let e = parse(info).unwrap_err();
        assert!(!e.use_stderr() && e.exit_code() == i32::from(EXIT_OK), "{info:?}");
    }
}

#[test]
fn asm_output_defaults_to_the_same_stem() {
    let Command::Asm { file, output } = parse(&["asm", "dir/p.vasm"]).unwrap().command else { panic!() };
    assert_eq!(output, None);
    assert_eq!(default_output(&file), PathBuf::from("dir/p.vbc"));
    assert_eq!(default_output(Path::new("noext")), PathBuf::from("noext.vbc"));
    let Command::Asm { output, .. } = parse(&["asm", "p.vasm", "-o", "out.vbc"]).unwrap().command else {
        panic!()
    };
    assert_eq!(output, Some(PathBuf::from("out.vbc")));
}

#[test]
fn missing_files_are_usage_errors() {
    let missing = std::env::temp_dir().join(format!("vm-cli-missing-{}.vbc", std::process::id()));
    let m = missing.to_string_lossy().into_owned();
    let want = (EXIT_USAGE, format!("error: cannot read {m}: No such file or directory (os error 2)\n"));
    assert_eq!(vm(&["run", &m]), want);
    assert_eq!(vm(&["disasm", &m]), want);
    // A missing file is read before anyone decides whether it is source or a module.
    let src = m.replace(".vbc", ".vasm");
    let want = (EXIT_USAGE, format!("error: cannot read {src}: No such file or directory (os error 2)\n"));
    assert_eq!(vm(&["check", &src]), want);
    assert_eq!(vm(&["run", &src]), want);
    let err = load_module(&missing).unwrap_err();
    assert!(err.starts_with("error: cannot read ") && err.contains("vm-cli-missing"), "{err}");
}

/// Writes `files` into a fresh directory and returns it.
fn scratch(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vm-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// The whole path from the command line to the exit status, in-process. The programs print
/// nothing, because a program's output goes to the real standard output.
#[test]
fn commands_exit_with_the_contracted_statuses() {
    let dir = scratch(
        "statuses",
        &[
            (
                "ok.vasm",
                ".include \"lib/args.vasm\"\n.func main 1\n    call r1, count, r0, 1\n    ret r1\n.end\n",
            ),
            ("lib/args.vasm", ".func count 1\n    len r1, r0\n    ret r1\n.end\n"),
            ("zero.vasm", ".func main 0\n    nil r0\n    ret r0\n.end\n"),
            ("raise.vasm", ".func main 0\n    const r0, :boom\n    raise r0, r0\n.end\n"),
            ("dead.vasm", ".func main 0\n    recv r0\n    ret r0\n.end\n"),
            ("bad.vasm", ".func main 0\n    ad r0, r0, r0\n    ret r0\n    jmp nowhere\n.end\n"),
            ("arity.vasm", ".func main 2\n    ret r0\n.end\n"),
            ("nomain.vasm", ".func start 0\n    nil r0\n    ret r0\n.end\n"),
        ],
    );
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ok = (EXIT_OK, String::new());
    assert_eq!(vm(&["run", &path("ok.vasm"), "-a", "--b"]), ok);
    assert_eq!(vm(&["run", "--workers", "1", "--fuel", "1", &path("zero.vasm")]), ok);
    let raise = path("raise.vasm");
    assert_eq!(
        vm(&["run", &raise]),
        (
            EXIT_EXCEPTION,
            format!(
                "error: uncaught exception in actor <1> (main)\n  boom: :boom\n  \
                 at {raise}:3 (in main, instruction 1)\n"
            )
        )
    );
    let (status, err) = vm(&["run", &path("dead.vasm")]);
    assert_eq!(status, EXIT_DEADLOCK);
    assert!(err.starts_with("deadlock") && err.contains(&format!("{}:2", path("dead.vasm"))), "{err}");
    let (status, err) = vm(&["run", &path("bad.vasm")]);
    assert_eq!(status, EXIT_USAGE);
    assert!(err.ends_with(&format!("error: 2 errors in {}\n", path("bad.vasm"))), "{err}");
    let (status, err) = vm(&["run", &path("arity.vasm")]);
    assert_eq!(status, EXIT_USAGE);
    assert!(err.contains("`main` takes 2 arguments"), "{err}");
    let (status, err) = vm(&["run", &path("nomain.vasm")]);
    assert_eq!(
        (status, err),
        (EXIT_USAGE, format!("error: {}: the program has no `main` function\n", path("nomain.vasm")))
    );
    assert_eq!(vm(&["run", &path("missing.vasm")]).0, EXIT_USAGE);
    assert_eq!(vm(&["check", &path("ok.vasm")]), ok);
    let (status, err) = vm(&["check", &path("bad.vasm")]);
    assert_eq!(status, EXIT_USAGE);
    assert!(err.contains(&format!("{}:2:5:", path("bad.vasm"))), "{err}");
    assert_eq!(vm(&["asm", &path("bad.vasm")]).0, EXIT_USAGE);
    assert!(!dir.join("bad.vbc").exists(), "a failed assembly wrote a module");
    let (status, err) = vm(&["asm", &path("ok.vasm"), "-o", &path("ok.vasm")]);
    assert_eq!(status, EXIT_USAGE);
    assert!(err.starts_with("error: refusing to overwrite the source"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_assembly_error_is_reported() {
    let dir = scratch(
        "every",
        &[("bad.vasm", ".func main 0\n    ad r0, r0, r0\n    ret r0\n    jmp nowhere\n.end\n")],
    );
    let name = dir.join("bad.vasm").to_string_lossy().into_owned();
    let msg = assemble_and_verify(Path::new(&name), Style::plain()).unwrap_err();
    assert!(msg.contains(&format!("{name}:2:5:")), "{msg}");
    assert!(msg.contains(&format!("{name}:4:9:")), "{msg}");
    assert!(msg.ends_with(&format!("error: 2 errors in {name}\n")), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outcomes_map_to_exit_statuses() {
    assert_eq!(outcome_report("p", Ok(Outcome::Exited(Value::Nil))), (EXIT_OK, String::new()));
    let fault = Fault { exception: Exception::new(Atom::new("badarg"), "no"), func: 0, pc: 1 };
    let location = Location { func: "main".into(), pc: 1, file: None, line: None };
    let (status, msg) = outcome_report("p", Ok(Outcome::Failed { fault, location }));
    assert_eq!(status, EXIT_EXCEPTION);
    assert_eq!(msg, "error: uncaught exception in actor <1> (main)\n  badarg: no\n  at main instruction 1\n");
    assert_eq!(outcome_report("p", Ok(Outcome::Stopped(Value::atom("normal")))), (EXIT_OK, String::new()));
    let (status, msg) = outcome_report("p", Ok(Outcome::Stopped(Value::atom("killed"))));
    assert_eq!(status, EXIT_EXCEPTION);
    assert_eq!(msg, "error: actor <1> (main) exited with reason :killed\n");
    let (status, msg) = outcome_report("p", Ok(Outcome::Deadlock("deadlock: x".into())));
    assert_eq!((status, msg.as_str()), (EXIT_DEADLOCK, "deadlock: x\n"));
    let (status, msg) = outcome_report("p.vasm", Err(RunError::Usage("`main` takes 3 arguments".into())));
    assert_eq!(status, EXIT_USAGE);
    assert!(msg.starts_with("error: p.vasm: `main` takes 3 arguments"), "{msg}");
    assert_eq!(outcome_report("p", Err(RunError::Panicked("x".into()))).0, EXIT_INTERNAL);
}
