//! The REPL's command language: parsing one input line into a [`Command`].
//!
//! A line is a command word and its operands, separated by spaces. Blank lines and lines whose
//! first non-blank character is `;` (a comment, as in assembly) do nothing.
//!
//! - An actor is named by its pid, written `<3>` or `3`, or by its registered name, `:echo` or
//!   `echo` (a [`Target`]).
//! - Values (`send`, `spawn`) are constants in the assembly's literal syntax
//!   (`docs/language.md`): `42`, `"text"`, `:ok`, `{:ok, [1, 2]}`, `%{"k" => 1}`. The operands of
//!   `spawn` are separated by spaces or commas outside brackets and strings.
//! - `eval` takes instructions separated by `;` (outside string literals), since a line holds
//!   only one: `eval int r0, 2; int r1, 3; add r0, r0, r1`.
//!
//! Parsing never touches the VM; the [`super::engine`] resolves names and runs commands.

use vm_core::{Atom, Pid, Value};

/// One parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `help [TOPIC]`.
    Help(Option<String>),
    /// `load FILE`.
    Load(String),
    /// `spawn FUNC ARGS...`: the operands as written (their meaning depends on the function).
    Spawn {
        /// The function's name.
        func: String,
        /// Each operand's text.
        args: Vec<String>,
    },
    /// `ps [--in CONTAINER]`.
    Ps(Option<String>),
    /// `containers`.
    Containers,
    /// `enter [CONTAINER]`: `spawn` and `eval` then run in that container (none: the default).
    Enter(Option<String>),
    /// `start NAME FILE [GRANTS...] [ARGS...]`.
    Start {
        /// The container's name.
        name: String,
        /// Its module file.
        file: String,
        /// Its grants, as flags (`--allow-net=127.0.0.1:7000`, `--allow-lookup=store`), and
        /// `main`'s arguments (the words that are not flags).
        grants: Vec<String>,
    },
    /// `stop NAME`.
    Stop(String),
    /// `restart NAME`.
    Restart(String),
    /// `info PID`.
    Info(Target),
    /// `executors`.
    Executors,
    /// `nodes`: the other live nodes of the cluster.
    Nodes,
    /// `send PID VALUE`.
    Send(Target, Value),
    /// `interrupt PID [MODE]`.
    Interrupt(Target, u8),
    /// `kill PID`.
    Kill(Target),
    /// `eval INSTRUCTIONS`: the instructions, one per element.
    Eval(Vec<String>),
    /// `trace PID on|off`.
    Trace(Target, bool),
    /// `snapshot FILE`.
    Snapshot(String),
    /// `checkpoint`.
    Checkpoint,
    /// `rewind [N]`: the Nth latest checkpoint (1 is the latest).
    Rewind(usize),
    /// `quit`.
    Quit,
}

/// An actor as named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// By pid.
    Pid(Pid),
    /// By registered name.
    Name(Atom),
    /// An actor of another node of the cluster, as pids print (`<b.7>`): node name and serial.
    Remote(Atom, u64),
}

/// The interrupt mode `interrupt` uses when none is given: it reaches a running actor too.
pub const DEFAULT_INTERRUPT_MODE: u8 = 1;

/// Every command: name, usage, one-line summary, details for `help COMMAND`.
pub const COMMANDS: &[(&str, &str, &str, &str)] = &[
    ("help", "help [COMMAND|natives]", "this list; one command in detail; the native functions", ""),
    (
        "load",
        "load FILE",
        "assemble (or read a .vbc) and verify a program",
        "Its functions can then be spawned and called from `eval`. Loading the same file again \
         replaces it; actors already running keep the code they started with. When several \
         programs define a function, the one loaded last wins.",
    ),
    (
        "spawn",
        "spawn FUNC ARGS...",
        "start an actor running FUNC with ARGS; prints its pid",
        "Each ARG is a constant: `spawn worker 7 {:ok, \"x\"}`. `main` taking one argument is the \
         exception: it gets its ARGS as the list of strings `vm run` would pass, so \
         `spawn main 7000` starts a program as `vm run FILE 7000` does.",
    ),
    (
        "ps",
        "ps [--in CONTAINER]",
        "list live actors (of one container)",
        "Columns: pid, registered name, state and what it waits on, queued messages, reductions \
         (fuel spent), and the function:line it is at.",
    ),
    (
        "containers",
        "containers",
        "list the containers",
        "Columns: name, module file, status, live actors, queued messages, reductions, grants. \
         `main` is the default container (actors started from the REPL outside any container).",
    ),
    (
        "enter",
        "enter [CONTAINER]",
        "make `spawn` and `eval` run in a container (none: leave it)",
        "Inside a container, `spawn` and `eval` use its module (the snippet can call its \
         functions) and its grants. `enter` alone goes back to the default container.",
    ),
    (
        "start",
        "start NAME FILE [GRANTS...] [ARGS...]",
        "start a container running FILE's main with ARGS",
        "GRANTS are the run flags (`--allow-net[=...]`, `--allow-read[=...]`, `--allow-write[=...]`, \
         `--allow-env[=...]`) and `--allow-lookup=NAME,...`; a container has exactly the grants \
         listed. `--restart=permanent|transient|temporary` (default temporary) is its restart type, \
         applied as `vm up` applies it (a permanent one's end stops every container, not the \
         session); `stop` never restarts one.",
    ),
    ("stop", "stop NAME", "end a container: its actors are killed and their resources closed", ""),
    ("restart", "restart NAME", "stop a container (if it runs) and start it again from its file", ""),
    (
        "info",
        "info PID",
        "one actor in detail",
        "Its state, location, links, monitors, trap_exit, resources, whether it is traced, and its \
         recent exceptions; for an actor that has ended, its exit reason.",
    ),
    (
        "nodes",
        "nodes",
        "list the other live nodes of the cluster",
        "Only in a session started with --node NAME --cluster URL. Columns: node, incarnation, \
         actors, uptime, and how long ago it was last heard from. Pids of other nodes print as \
         <b.7> (actor 7 of node b), in `info` and in messages, and `send`, `interrupt`, `kill` and \
         `info` take them.",
    ),
    (
        "executors",
        "executors",
        "list the threads of thread-affine natives",
        "Columns: the executor's name (a SQLite connection's is sqlite-N), the calls queued to it, \
         the jobs it has run, the time it spent running them, and the job running now: its \
         caller, the native and for how long. An actor waiting on one shows in `ps` as waiting \
         (queued) or blocked (running).",
    ),
    ("send", "send PID VALUE", "deliver VALUE (a constant) to an actor's mailbox", ""),
    (
        "interrupt",
        "interrupt PID [MODE]",
        "raise {:interrupted, \"...\"} in an actor",
        "MODE 0: only if it is waiting (receive, sleep, channel, I/O); 1 (the default): also if it \
         is running (at its next safe point) or in a native call (when it returns); 2: stop it \
         now. Modes 0 and 1 can be caught with `try`.",
    ),
    ("kill", "kill PID", "end an actor untrappably (reason :killed)", ""),
    (
        "eval",
        "eval INSTRUCTIONS",
        "run instructions as a temporary actor and print the result",
        "Instructions are separated by `;`. They form the body of a function of no arguments; \
         the result is what `ret` returns, or r0 when the last instruction falls through. The \
         functions of the program loaded last can be called. Ctrl-C stops a snippet that runs \
         too long. Example: `eval int r0, 2; int r1, 3; add r0, r0, r1` prints 5.",
    ),
    (
        "trace",
        "trace PID on|off",
        "log every message and effect of an actor",
        "Messages it receives and sends, effects it waits on (receive, sleep, select, native \
         calls, print), actors it spawns, links, monitors, signals, exceptions and its exit, \
         printed above the prompt as they happen.",
    ),
    (
        "snapshot",
        "snapshot FILE",
        "write a snapshot of every actor to FILE",
        "Every actor pauses at a safe point for the copy, then runs on. `vm resume FILE` continues \
         a program's snapshot; see docs/snapshots.md.",
    ),
    (
        "checkpoint",
        "checkpoint",
        "keep a snapshot in memory (for `rewind`)",
        "Checkpoints are numbered from the latest: `rewind 1` goes back to the latest one.",
    ),
    (
        "rewind",
        "rewind [N]",
        "replace every actor with those of the Nth latest checkpoint (default 1)",
        "The live actors are killed (their sockets and files closed) and the checkpoint's actors \
         carry on from where they were, with their mailboxes: time travel for debugging.",
    ),
    ("quit", "quit", "leave the REPL (also Ctrl-D); running actors are abandoned", ""),
];

/// Parses one input line; `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with(';') {
        return Ok(None);
    }
    let (word, rest) = split_word(line);
    let cmd = match word {
        "help" | "?" => Command::Help(non_empty(rest).map(str::to_string)),
        "load" => Command::Load(path(rest)?),
        "spawn" => {
            let (func, rest) = split_word(rest);
            if func.is_empty() {
                return Err(usage("spawn"));
            }
            let args = split_top_level(rest, |c| c.is_whitespace() || c == ',')?;
            Command::Spawn { func: func.to_string(), args: args.into_iter().map(str::to_string).collect() }
        }
        "ps" => match split_word(rest) {
            ("", _) => Command::Ps(None),
            ("--in", name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                Command::Ps(Some(name.to_string()))
            }
            _ => return Err(usage("ps")),
        },
        "containers" => {
            no_more(rest, "containers")?;
            Command::Containers
        }
        "enter" => match split_word(rest) {
            ("", _) => Command::Enter(None),
            (name, "") => Command::Enter(Some(name.to_string())),
            _ => return Err(usage("enter")),
        },
        "start" => {
            let (name, rest) = split_word(rest);
            let (file, rest) = split_word(rest);
            if name.is_empty() || file.is_empty() {
                return Err(usage("start"));
            }
            let grants = rest.split_whitespace().map(str::to_string).collect();
            Command::Start { name: name.to_string(), file: file.to_string(), grants }
        }
        "stop" | "restart" => {
            let (name, rest) = split_word(rest);
            if name.is_empty() {
                return Err(usage(word));
            }
            no_more(rest, word)?;
            if word == "stop" { Command::Stop(name.to_string()) } else { Command::Restart(name.to_string()) }
        }
        "info" => Command::Info(one_target(rest, "info")?),
        "nodes" => {
            no_more(rest, "nodes")?;
            Command::Nodes
        }
        "executors" => {
            no_more(rest, "executors")?;
            Command::Executors
        }
        "kill" => Command::Kill(one_target(rest, "kill")?),
        "send" => {
            let (who, value) = split_word(rest);
            if who.is_empty() || value.is_empty() {
                return Err(usage("send"));
            }
            let value = vm_core::asm::parse_value(value).map_err(|e| format!("malformed value: {e}"))?;
            Command::Send(target(who)?, value)
        }
        "interrupt" => {
            let (who, rest) = split_word(rest);
            if who.is_empty() {
                return Err(usage("interrupt"));
            }
            let (mode, rest) = split_word(rest);
            no_more(rest, "interrupt")?;
            let mode = match mode {
                "" => DEFAULT_INTERRUPT_MODE,
                "0" => 0,
                "1" => 1,
                "2" => 2,
                other => return Err(format!("interrupt mode `{other}` does not exist: use 0, 1 or 2")),
            };
            Command::Interrupt(target(who)?, mode)
        }
        "eval" => {
            let instrs: Vec<String> = split_top_level(rest, |c| c == ';')?
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if instrs.is_empty() {
                return Err(usage("eval"));
            }
            Command::Eval(instrs)
        }
        "trace" => {
            let (who, rest) = split_word(rest);
            let (switch, rest) = split_word(rest);
            no_more(rest, "trace")?;
            let on = match switch {
                "on" => true,
                "off" => false,
                _ => return Err(usage("trace")),
            };
            Command::Trace(target(who)?, on)
        }
        "snapshot" => Command::Snapshot(path(rest).map_err(|_| usage("snapshot"))?),
        "checkpoint" if rest.is_empty() => Command::Checkpoint,
        "checkpoint" => return Err(usage("checkpoint")),
        "rewind" => Command::Rewind(match rest {
            "" => 1,
            n => n.parse().ok().filter(|&n| n > 0).ok_or_else(|| usage("rewind"))?,
        }),
        "quit" | "exit" => {
            no_more(rest, word)?;
            Command::Quit
        }
        other => return Err(unknown(other)),
    };
    Ok(Some(cmd))
}

/// The first word and the rest (trimmed).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn usage(cmd: &str) -> String {
    let usage = COMMANDS.iter().find(|c| c.0 == cmd).map_or(cmd, |c| c.1);
    format!("usage: {usage}")
}

fn no_more(rest: &str, cmd: &str) -> Result<(), String> {
    if rest.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected `{}` ({})", rest.trim(), usage(cmd)))
    }
}

fn unknown(word: &str) -> String {
    let near = COMMANDS
        .iter()
        .map(|c| c.0)
        .filter(|c| c.starts_with(word) || word.starts_with(c) || edit_distance(c, word) <= 2)
        .collect::<Vec<_>>();
    match near.as_slice() {
        [] => format!("unknown command `{word}` (type `help` for the list)"),
        [one] => format!("unknown command `{word}`; did you mean `{one}`?"),
        many => format!("unknown command `{word}`; did you mean one of {}?", many.join(", ")),
    }
}

/// The number of single-character edits between two short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A file name: the rest of the line, or a string literal for names with odd characters.
fn path(rest: &str) -> Result<String, String> {
    match rest {
        "" => Err(usage("load")),
        quoted if quoted.starts_with('"') => match &vm_core::asm::parse_value(quoted) {
            Ok(Value::Str(s)) => Ok(s.to_string()),
            _ => Err(format!("malformed file name {quoted}")),
        },
        plain => Ok(plain.to_string()),
    }
}

fn one_target(rest: &str, cmd: &str) -> Result<Target, String> {
    let (who, rest) = split_word(rest);
    if who.is_empty() {
        return Err(usage(cmd));
    }
    no_more(rest, cmd)?;
    target(who)
}

/// `<3>`, `3`, `:name`, `name`, or `<b.7>` (an actor of node b).
pub fn target(word: &str) -> Result<Target, String> {
    let bad = || format!("`{word}` is not a pid (<3> or 3) or a registered name (:name)");
    let digits = word.strip_prefix('<').and_then(|w| w.strip_suffix('>')).unwrap_or(word);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return digits.parse().map(|n| Target::Pid(Pid(n))).map_err(|_| bad());
    }
    if let Some((node, serial)) = digits.rsplit_once('.')
        && word.starts_with('<')
        && vm_dist::id::check_node_name(node).is_ok()
        && let Ok(serial) = serial.parse()
    {
        return Ok(Target::Remote(Atom::new(node), serial));
    }
    let name = word.strip_prefix(':').unwrap_or(word);
    let mut chars = name.chars();
    let ident = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident {
        return Ok(Target::Name(Atom::new(name)));
    }
    // A quoted atom (`:"odd name"`).
    match vm_core::asm::parse_value(word) {
        Ok(Value::Atom(a)) => Ok(Target::Name(a)),
        _ => Err(bad()),
    }
}

/// Splits `text` at characters `sep` accepts that stand outside string literals and brackets;
/// the pieces are trimmed and empty ones dropped.
pub fn split_top_level(text: &str, sep: impl Fn(char) -> bool) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            c if depth == 0 && sep(c) => {
                out.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_string {
        return Err("unterminated string literal (a `\"` is missing)".to_string());
    }
    out.push(&text[start..]);
    Ok(out.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line).unwrap_or_else(|e| panic!("{line}: {e}")).unwrap_or_else(|| panic!("{line}: nothing"))
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(parse("; a comment").unwrap(), None);
        assert_eq!(ok("help"), Command::Help(None));
        assert_eq!(ok("help eval"), Command::Help(Some("eval".into())));
        assert_eq!(ok("load examples/echo.vasm"), Command::Load("examples/echo.vasm".into()));
        assert_eq!(ok("load \"a b.vasm\""), Command::Load("a b.vasm".into()));
        assert_eq!(ok("ps"), Command::Ps(None));
        assert_eq!(ok("ps --in store"), Command::Ps(Some("store".into())));
        assert_eq!(ok("containers"), Command::Containers);
        assert_eq!(ok("enter store"), Command::Enter(Some("store".into())));
        assert_eq!(ok("enter"), Command::Enter(None));
        assert_eq!(
            ok("start front f.vasm --allow-net=127.0.0.1:7000 --allow-lookup=store"),
            Command::Start {
                name: "front".into(),
                file: "f.vasm".into(),
                grants: vec!["--allow-net=127.0.0.1:7000".into(), "--allow-lookup=store".into()]
            }
        );
        assert_eq!(ok("stop front"), Command::Stop("front".into()));
        assert_eq!(ok("restart front"), Command::Restart("front".into()));
        assert_eq!(ok("executors"), Command::Executors);
        assert_eq!(ok("info <3>"), Command::Info(Target::Pid(Pid(3))));
        assert_eq!(ok("kill 12"), Command::Kill(Target::Pid(Pid(12))));
        assert_eq!(ok("info :echo"), Command::Info(Target::Name(Atom::new("echo"))));
        assert_eq!(ok("info echo"), Command::Info(Target::Name(Atom::new("echo"))));
        assert_eq!(ok("interrupt <3>"), Command::Interrupt(Target::Pid(Pid(3)), DEFAULT_INTERRUPT_MODE));
        assert_eq!(ok("interrupt <3> 2"), Command::Interrupt(Target::Pid(Pid(3)), 2));
        assert_eq!(ok("trace 3 on"), Command::Trace(Target::Pid(Pid(3)), true));
        assert_eq!(ok("trace 3 off"), Command::Trace(Target::Pid(Pid(3)), false));
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(ok("exit"), Command::Quit);
        assert_eq!(
            ok("send <2> {:ok, [1, \"a b\"]}"),
            Command::Send(
                Target::Pid(Pid(2)),
                Value::tuple(vec![Value::atom("ok"), Value::list(vec![Value::Int(1), Value::str("a b")])])
            )
        );
    }

    #[test]
    fn spawn_operands_split_outside_brackets_and_strings() {
        assert_eq!(
            ok("spawn worker 1 {2, 3}  \"a, b\" [4,5], :x"),
            Command::Spawn {
                func: "worker".into(),
                args: vec!["1".into(), "{2, 3}".into(), "\"a, b\"".into(), "[4,5]".into(), ":x".into()]
            }
        );
        assert_eq!(ok("spawn main"), Command::Spawn { func: "main".into(), args: vec![] });
    }

    #[test]
    fn eval_splits_at_semicolons_outside_strings() {
        assert_eq!(
            ok("eval int r0, 2; const r1, \"a;b\\\";\" ;ret r0;"),
            Command::Eval(vec!["int r0, 2".into(), "const r1, \"a;b\\\";\"".into(), "ret r0".into()])
        );
    }

    #[test]
    fn mistakes_are_explained() {
        let err = |line: &str| parse(line).unwrap_err();
        assert_eq!(err("frobnicate"), "unknown command `frobnicate` (type `help` for the list)");
        assert_eq!(err("spwn f"), "unknown command `spwn`; did you mean `spawn`?");
        assert_eq!(err("send"), "usage: send PID VALUE");
        assert_eq!(err("send <1>"), "usage: send PID VALUE");
        assert!(err("send <1> {1, ").starts_with("malformed value: "), "{}", err("send <1> {1, "));
        assert!(err("send <1> hello").contains("`hello` is not a value"), "{}", err("send <1> hello"));
        assert_eq!(err("info"), "usage: info PID");
        assert_eq!(err("info <1> <2>"), "unexpected `<2>` (usage: info PID)");
        assert!(err("kill <x>").contains("is not a pid"));
        assert_eq!(err("interrupt 3 9"), "interrupt mode `9` does not exist: use 0, 1 or 2");
        assert_eq!(err("trace 3"), "usage: trace PID on|off");
        assert_eq!(err("eval"), "usage: eval INSTRUCTIONS");
        assert_eq!(err("eval ;;"), "usage: eval INSTRUCTIONS");
        assert_eq!(err("eval const r0, \"open"), "unterminated string literal (a `\"` is missing)");
        assert_eq!(err("ps now"), "usage: ps [--in CONTAINER]");
        assert_eq!(err("ps --in"), "usage: ps [--in CONTAINER]");
        assert_eq!(err("start store"), "usage: start NAME FILE [GRANTS...] [ARGS...]");
        assert_eq!(err("stop"), "usage: stop NAME");
        assert_eq!(err("enter a b"), "usage: enter [CONTAINER]");
        assert_eq!(err("load"), "usage: load FILE");
    }

    #[test]
    fn targets() {
        assert_eq!(target("<7>"), Ok(Target::Pid(Pid(7))));
        assert_eq!(target("<b-2.7>"), Ok(Target::Remote(Atom::new("b-2"), 7)));
        assert_eq!(ok("nodes"), Command::Nodes);
        assert_eq!(target(":\"a b\""), Ok(Target::Name(Atom::new("a b"))));
        assert!(target("<>").is_err());
        assert!(target("99999999999999999999999").is_err());
        assert!(target("a-b").is_err());
    }
}
