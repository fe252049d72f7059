//! The runtime's behaviour as data: every `tests/programs/NAME.vasm` of this crate is assembled
//! (with its `.include`s), run in this process on a fresh runtime ([`Setup`]) and checked
//! against the files beside it. Each program is a test of its own, named `NAME`, so
//! `cargo test -p vm-sched --test programs -- chan` runs the channel programs only.
//!
//! # The files
//!
//! 1. `NAME.vasm`: the program. Only files directly in `tests/programs/` are programs;
//!    `tests/programs/lib/` holds files they `.include`.
//! 2. `NAME.out` (required): exactly what the program prints, one line per `print`.
//! 3. `NAME.err` (optional): lines that must each appear in the run's error text (see
//!    [`outcome_text`]: empty when `main` returned; otherwise the uncaught exception and its
//!    location, the abnormal exit reason, the deadlock report, or `still running after N ms`).
//!    Without the file the error text must be empty, that is, `main` must have returned.
//!
//! A test asserting a property rather than exact output keeps the property in the program: the
//! program checks it and prints a fixed word only when it holds (`fair`, `waited for the
//! receiver`). A program whose returned value matters prints it before returning.
//!
//! # Settings
//!
//! The first line of a program may carry settings: `; run:` followed by words separated by
//! spaces, each `KEY` or `KEY=VALUE`:
//!
//! - `workers=N`: tokio worker threads (default 2);
//! - `fuel=N`, `max-frames=N`, `max-actors=N`: the VM's limits (defaults as for `vm run`);
//! - `allow-net`, `allow-net=LIST`, `allow-read[=LIST]`, `allow-write[=LIST]`, `allow-env[=LIST]`: grants, as the
//!   `vm run` flags of the same names (default: nothing granted);
//! - `arg=VALUE`: one argument for `main` (repeat the key for more);
//! - `limit-ms=N`: how long the program may run (default 30000); a program still running then
//!   is left behind and its error text is `still running after N ms`;
//! - `rounds=N`: run the program N times (default 1), each run checked: for races.
//! - `seed=N`: seeds the random generators, as `vm run --seed N`.
//!
//! In a value, `$TMP` stands for a scratch directory made empty for each run.
//!
//! # Regenerating
//!
//! `UPDATE_EXPECT=1 cargo test -p vm-sched --test programs` rewrites the `.out` files from what
//! the programs print (never `.err`, which is written by hand); check the diff before committing.

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vm_sched::testing::{Expected, Setup, load, outcome_text, update_requested};

/// Where the programs are, relative to this crate (the working directory of its tests).
const DIR: &str = "tests/programs";

/// Fewer programs than this means the directory was not found or lost files.
const AT_LEAST: usize = 40;

/// A program's settings, from its first line.
#[derive(Debug)]
struct Settings {
    setup: Setup,
    rounds: u32,
}

/// Parses the settings line of a program's `source` (see the module docs); `tmp` replaces
/// `$TMP` in values.
fn settings(source: &str, tmp: &Path) -> Result<Settings, String> {
    let mut s = Settings { setup: Setup::default(), rounds: 1 };
    let Some(words) = source.lines().next().and_then(|l| l.strip_prefix("; run:")) else { return Ok(s) };
    let tmp = tmp.to_str().ok_or("the scratch path is not UTF-8")?;
    for word in words.split_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v.replace("$TMP", tmp))),
            None => (word, None),
        };
        let number = |what: &str| -> Result<u64, String> {
            let v = value.as_deref().ok_or(format!("`{what}` needs a value: {what}=N"))?;
            v.parse().map_err(|_| format!("`{what}={v}`: not a number"))
        };
        let perms = &mut s.setup.config.perms;
        match key {
            "workers" => s.setup.workers = number(key)? as usize,
            "fuel" => s.setup.config.fuel = number(key)? as u32,
            "max-frames" => s.setup.config.max_frames = number(key)? as u32,
            "max-actors" => s.setup.config.max_actors = number(key)? as usize,
            "limit-ms" => s.setup.limit = Duration::from_millis(number(key)?),
            "rounds" => s.rounds = number(key)? as u32,
            "seed" => s.setup.config.seed = Some(number(key)?),
            "allow-net" => perms.net = vm_io::Permissions::parse_net(value.as_deref())?,
            "allow-read" => perms.read = vm_io::Permissions::parse_paths(value.as_deref(), "--allow-read")?,
            "allow-write" => {
                perms.write = vm_io::Permissions::parse_paths(value.as_deref(), "--allow-write")?
            }
            "allow-env" => perms.env = vm_io::Permissions::parse_env(value.as_deref())?,
            "arg" => s.setup.args.push(value.ok_or("`arg` needs a value: arg=VALUE")?),
            other => return Err(format!("unknown setting `{other}`")),
        }
    }
    Ok(s)
}

/// A scratch directory for `name`, made empty.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("programs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Runs the program `name` and checks it; the error lists every mismatch.
fn check(name: &str) -> Result<(), Failed> {
    let path = format!("{DIR}/{name}.vasm");
    let base = Path::new(DIR).join(name);
    let source = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let module = load(&path)?;
    let tmp = scratch(name);
    let settings = settings(&source, &tmp).map_err(|e| format!("{path}: line 1: {e}"))?;
    let mut expected = Expected::load(&base)?;
    let update = update_requested();
    for round in 1..=settings.rounds {
        if round > 1 {
            scratch(name);
        }
        let ran = settings.setup.run(module.clone());
        let out: String = ran.lines.iter().map(|l| format!("{l}\n")).collect();
        let err = outcome_text(ran.outcome.as_ref(), settings.setup.limit);
        if update && round == 1 {
            let file = base.with_extension("out");
            std::fs::write(&file, &out).map_err(|e| format!("{}: {e}", file.display()))?;
            expected.out = Some(out.clone());
        }
        let problems = expected.check(&format!("{DIR}/{name}.out"), &out, &err);
        if !problems.is_empty() {
            let of = if settings.rounds > 1 {
                format!(" (round {round} of {})", settings.rounds)
            } else {
                "".into()
            };
            return Err(format!("{path}{of}:\n{}", problems.join("\n")).into());
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// The names of the programs in [`DIR`], sorted.
fn programs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(DIR)
        .unwrap_or_else(|e| panic!("{DIR}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".vasm").map(str::to_string))
        .collect();
    names.sort();
    names
}

fn main() {
    let args = Arguments::from_args();
    let names = programs();
    let count = names.len();
    let mut trials: Vec<Trial> =
        names.into_iter().map(|name| Trial::test(name.clone(), move || check(&name))).collect();
    trials.push(Trial::test("programs_are_found", move || {
        if count < AT_LEAST {
            return Err(format!("found {count} programs in {DIR}, expected at least {AT_LEAST}").into());
        }
        Ok(())
    }));
    trials.push(Trial::test("settings_are_parsed", || {
        let tmp = Path::new("/scratch");
        let s = settings(
            "; run: workers=1 max-actors=10 allow-read=$TMP arg=$TMP arg=x rounds=3 limit-ms=300\n",
            tmp,
        )?;
        let want = (1, 10, vec!["/scratch".to_string(), "x".into()], 3, Duration::from_millis(300));
        let have = (s.setup.workers, s.setup.config.max_actors, s.setup.args, s.rounds, s.setup.limit);
        if have != want {
            return Err(format!("{have:?} != {want:?}").into());
        }
        if s.setup.config.perms.read != vm_io::perms::Grant::Only(vec![PathBuf::from("/scratch")]) {
            return Err("allow-read=$TMP grants the scratch directory only".into());
        }
        match settings("; run: workers\n", tmp) {
            Err(e) if e.contains("workers=N") => {}
            other => return Err(format!("a key without its number: {other:?}").into()),
        }
        match settings("; run: nope=1\n", tmp) {
            Err(e) if e.contains("unknown setting `nope`") => Ok(()),
            other => Err(format!("an unknown key: {other:?}").into()),
        }
    }));
    libtest_mimic::run(&args, trials).exit();
}
