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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::engine::Engine;
    use crate::repl::logging::ActorRecords;
    use crate::repl::printer::Printer;
    use std::sync::Arc;

    #[test]
    fn words_complete_by_position() {
        let printer = Printer::start(Box::new(|_| {})).unwrap();
        let opts = vm_sched::RunOptions { workers: std::num::NonZeroUsize::new(1), ..Default::default() };
        let session = vm_sched::Session::new(&opts, Arc::new(printer)).unwrap();
        let mut engine = Engine::new(session, Arc::new(ActorRecords::default()), crate::Style::plain());
        let dir = std::env::temp_dir().join(format!("vm-repl-complete-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.vasm");
        std::fs::write(
            &file,
            ".func waiter 0\n    recv r0\n    ret r0\n.end\n.func worker 1\n    ret r0\n.end\n",
        )
        .unwrap();
        engine.load(&file.to_string_lossy()).unwrap();
        let h = ReplHelper::new(engine.completions());
        let words = |line: &str| h.candidates(line, line.len());

        assert_eq!(words("sp"), (0, vec!["spawn".to_string()]));
        assert_eq!(words("st"), (0, vec!["start".to_string(), "stop".to_string()]));
        assert_eq!(words("  pr").1, Vec::<String>::new());
        assert_eq!(words("spawn w"), (6, vec!["waiter".to_string(), "worker".to_string()]));
        assert_eq!(words("spawn wo").1, ["worker"]);
        assert_eq!(words("spawn worker ").1, Vec::<String>::new(), "operands of spawn are values");
        assert_eq!(words("help na").1, ["natives"]);
        assert_eq!(words("trace 1 o").1, ["off", "on"]);
        assert_eq!(words("interrupt 1 ").1, ["0", "1", "2"]);
        assert!(words("kill ").1.is_empty(), "no live actors yet");
        assert_eq!(engine.execute("spawn waiter"), crate::repl::engine::Reply::Text("<1>".into()));
        assert_eq!(words("kill ").1, ["<1>"]);
        assert_eq!(words("info <").1, ["<1>"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
