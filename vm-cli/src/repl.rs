//! `vm repl [FLAGS] [FILE...]`: an interactive session on a live VM.
//!
//! The session loads the FILEs given (as `load FILE` would), then reads commands with a line
//! editor (rustyline): history across sessions, Tab completion of commands, loaded function
//! names, pids and file names. The commands (`help`, `load`, `spawn`, `ps`, `info`, `send`,
//! `interrupt`, `kill`, `eval`, `trace`, `nodes`, `quit`) are parsed by [`command`] and carried out by
//! [`engine`]; `help` lists them.
//!
//! - **Runtime.** The VM runs on a [`vm_sched::Session`]: the same multi-thread runtime and
//!   options as `vm run` (`--workers`, `--fuel`, `--max-frames`, and the permission flags
//!   `--allow-net`, `--allow-read`, `--allow-write`), living until the REPL ends. Actors keep
//!   running while the prompt waits for input. With `--node NAME --cluster URL` the session is
//!   a node of a cluster: it serves remote spawns of the newest program's functions, pids of
//!   other nodes print as `<b.7>` (and `send`, `info`, `interrupt`, `kill` take them), and
//!   `nodes` lists the other nodes.
//! - **Output.** Everything shown (command results, actors' `print` lines, log and trace lines)
//!   goes through one [`printer::Printer`] thread. In an interactive session it writes through
//!   rustyline's external printer, so output appears above the prompt and the line being typed
//!   is redrawn intact.
//! - **Keys.** Ctrl-C at the prompt clears the line; during `eval` it stops the snippet (a mode-2
//!   interrupt of its actor), not the VM. Ctrl-D on an empty line quits.
//! - **History** is kept in `$VM_HISTORY` when that is set (an empty value keeps none), else in
//!   `$HOME/.vm_history`; it is appended after every command, so it survives a crash.
//! - **Errors** (an unknown command, a bad pid, a malformed value, an assembly error in `eval` or
//!   `load`) print a message starting with `error:` and the session goes on.
//! - **Without a terminal** (standard input or output redirected) the REPL reads commands line by
//!   line without editing or history and prints to standard output, so it can be scripted.
//!
//! Exit status: 0 when the session ends by `quit` or end of input, 2 when it cannot start.

pub mod command;
pub mod complete;
pub mod engine;
pub mod logging;
pub mod printer;

use crate::{EXIT_OK, EXIT_USAGE, Style};
use clap::Args;
use engine::{Engine, Reply};
use printer::Printer;
use rustyline::error::ReadlineError;
use rustyline::history::{FileHistory, History as _};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

/// The prompt.
pub const PROMPT: &str = "vm> ";

/// The environment variable naming the history file.
pub const HISTORY_VAR: &str = "VM_HISTORY";

/// How many commands the history keeps.
const HISTORY_SIZE: usize = 1000;

/// Arguments of `vm repl`.
#[derive(Debug, Args)]
pub struct ReplArgs {
    /// Runtime settings and permissions, as for `vm run`.
    #[command(flatten)]
    pub runtime: crate::RuntimeFlags,
    /// Join a cluster as a node (`--node NAME --cluster URL`); `nodes` lists the others.
    #[command(flatten)]
    pub cluster: crate::ClusterFlags,
    /// Programs to load at the start (`.vasm` source or `.vbc` modules).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

impl ReplArgs {
    /// The runtime options these flags describe; a malformed permission flag is an error.
    pub fn run_options(&self) -> Result<vm_sched::RunOptions, String> {
        self.runtime.run_options()
    }
}

/// The history file: `$VM_HISTORY` (empty: none), else `$HOME/.vm_history`.
pub fn history_path() -> Option<PathBuf> {
    match std::env::var_os(HISTORY_VAR) {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => {
            std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".vm_history"))
        }
    }
}

type Editor = rustyline::Editor<complete::ReplHelper, FileHistory>;

/// Runs the REPL; `trace` is the global `--trace` flag. Returns the exit status.
#[allow(clippy::print_stderr, reason = "vm-cli prints: the REPL reports why it cannot start")]
pub fn main(args: ReplArgs, trace: bool) -> u8 {
    let cluster = match args.cluster.cluster_options() {
        Ok(c) => c,
        Err(msg) => {
            eprint!("{msg}");
            return EXIT_USAGE;
        }
    };
    let opts = match args.run_options() {
        Ok(opts) => opts,
        Err(msg) => {
            eprint!("{msg}");
            return EXIT_USAGE;
        }
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)
        .and_then(|b| b.max_history_size(HISTORY_SIZE))
        .map(|b| b.build());
    let editor = config.and_then(Editor::with_config);
    let mut editor = match editor {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return EXIT_USAGE;
        }
    };
    // In a terminal, output goes above the prompt; if the editor cannot do that (an unsupported
    // terminal), it is written as it comes.
    let external = if interactive { editor.create_external_printer().ok() } else { None };
    let logs_above_prompt = external.is_some();
    let sink: printer::Sink = match external {
        Some(mut p) => Box::new(move |text: String| {
            use rustyline::ExternalPrinter as _;
            // Nothing useful can be done when the terminal is gone; the session ends on its own.
            let _ = p.print(text);
        }),
        None => Printer::stdout_sink(),
    };
    let printer = match Printer::start(sink) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot start the output thread: {e}");
            return EXIT_USAGE;
        }
    };
    let records = logging::init_for_repl(trace, &printer, logs_above_prompt);
    let session = match vm_sched::Session::new(&opts, Arc::new(printer.clone())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    // In a terminal, Ctrl-C stops a running `eval` rather than the VM. A script read from a
    // pipe keeps the default, so Ctrl-C ends it.
    if interactive && let Err(e) = session.catch_ctrl_c() {
        printer.line(format!("warning: {e}; Ctrl-C will end the session"));
    }
    let mut engine = Engine::new(session, records, Style::for_stderr());
    editor.set_helper(Some(complete::ReplHelper::new(engine.completions())));
    let history = if interactive { history_path() } else { None };
    if let Some(path) = &history {
        // A missing history file is normal on the first run.
        let _ = editor.load_history(path);
    }

    for file in &args.files {
        show(&printer, engine.execute(&format!("load \"{}\"", escape(&file.to_string_lossy()))));
    }
    if let Some(c) = &cluster {
        match engine.join_cluster(c) {
            Ok(msg) => printer.line(msg),
            Err(e) => {
                printer.sync();
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    if interactive {
        printer.line("vm repl: type `help` for the commands, Ctrl-D to quit");
    }
    loop {
        // Everything the last command printed goes out before the next prompt.
        printer.sync();
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            // Ctrl-C at the prompt abandons the line being typed, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                printer.line(format!("error: cannot read the terminal: {e}"));
                break;
            }
        };
        if let Some(path) = &history
            && !line.trim().is_empty()
        {
            // Appending after every command keeps the history even if the session is killed.
            if editor.add_history_entry(line.as_str()).unwrap_or(false) {
                let _ = editor.history_mut().append(path);
            }
        }
        match engine.execute(&line) {
            Reply::Quit => break,
            // The terminal echoed `^C` where the cursor was; start the message on a line of its own.
            Reply::Error(e) if interactive && e == engine::INTERRUPTED => printer.line(format!("\n{e}")),
            reply => show(&printer, reply),
        }
    }
    engine.leave_cluster();
    printer.sync();
    EXIT_OK
}

fn show(printer: &Printer, reply: Reply) {
    match reply {
        Reply::Text(t) | Reply::Error(t) => printer.line(t),
        Reply::Nothing | Reply::Quit => {}
    }
}

/// `text` with `\` and `"` escaped, for a string literal.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}
