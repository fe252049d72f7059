//! Tab completion for the line editor: command names first, then each command's operands —
//! file names after `load`, function names of loaded programs after `spawn`, live pids and
//! registered names after `info`, `send`, `interrupt`, `kill` and `trace`, `on`/`off` after
//! `trace PID`, interrupt modes, and help topics.

use super::command::COMMANDS;
use super::engine::Completions;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

/// The REPL's rustyline helper: completion only (no hints, highlighting or validation).
pub struct ReplHelper {
    names: Completions,
    files: FilenameCompleter,
}

impl ReplHelper {
    /// A helper completing from `names`.
    pub fn new(names: Completions) -> ReplHelper {
        ReplHelper { names, files: FilenameCompleter::new() }
    }

    /// The candidates for the word ending at `pos`, and where that word starts.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let options: Vec<String> = match words.as_slice() {
            [] => COMMANDS.iter().map(|c| c.0.to_string()).collect(),
            ["help"] => COMMANDS.iter().map(|c| c.0.to_string()).chain(["natives".to_string()]).collect(),
            ["spawn"] => self.names.functions(),
            ["info" | "send" | "interrupt" | "kill" | "trace"] => self.names.actors(),
            ["interrupt", _] => ["0", "1", "2"].map(String::from).to_vec(),
            ["trace", _] => ["on", "off"].map(String::from).to_vec(),
            _ => Vec::new(),
        };
        let mut matching: Vec<String> = options.into_iter().filter(|o| o.starts_with(word)).collect();
        matching.sort();
        matching.dedup();
        (start, matching)
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        if line[..pos].trim_start().starts_with("load ") {
            return self.files.complete_path(line, pos);
        }
        let (start, words) = self.candidates(line, pos);
        let pairs = words.into_iter().map(|w| Pair { display: w.clone(), replacement: w }).collect();
        Ok((start, pairs))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}
