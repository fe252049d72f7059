//! Rendering of errors for people: assembler diagnostics (with miette), verifier errors, and the
//! messages for uncaught exceptions.
//!
//! Every function here returns a `String`; the caller decides where it goes, which keeps the
//! rendering testable and the printing in one place.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Report};
use vm_core::asm::{AsmErrors, Diagnostic};
use vm_core::verify::VerifyError;
use vm_core::{Fault, Location, Module};

/// How to draw diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Use ANSI colours (only when stderr is a terminal and `NO_COLOR` is not set).
    pub color: bool,
    /// Line width to wrap messages at.
    pub width: usize,
}

impl Style {
    /// The style for standard error: colour only on a terminal and when `NO_COLOR` is unset or
    /// empty (<https://no-color.org>). Unicode box drawing is kept either way: it is readable in
    /// logs and CI output, and only ANSI escapes make piped output unreadable.
    pub fn for_stderr() -> Style {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style { color: std::io::stderr().is_terminal() && !no_color, width: 100 }
    }

    /// Plain text, for tests and logs.
    pub fn plain() -> Style {
        Style { color: false, width: 100 }
    }

    fn handler(self) -> GraphicalReportHandler {
        let theme = if self.color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        GraphicalReportHandler::new_themed(theme).with_width(self.width).with_links(false)
    }
}

/// `1 error` / `3 errors`.
pub(crate) fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// All assembler diagnostics, each as a miette report whose first line reads
/// `× file:line:col: message`, followed by the source snippet and the hint, then the summary
/// `error: N errors in FILE`.
pub(crate) fn asm_errors(file: &str, errors: &AsmErrors, style: Style) -> String {
    let mut out = String::new();
    for d in &errors.diagnostics {
        out.push_str(&asm_diagnostic(d, errors, style));
        if !out.ends_with('\n') {
            out.push('\n');
        }
        // A blank line between reports keeps the snippets apart.
        out.push('\n');
    }
    if errors.diagnostics.is_empty() {
        // The assembler failed without saying why; still say that it failed.
        out.push_str(&format!("error: {file} could not be assembled\n"));
    } else {
        out.push_str(&format!("error: {} in {file}\n", count(errors.diagnostics.len(), "error")));
    }
    out
}

/// One assembler diagnostic. Falls back to a single `error: file:line:col: message` line (plus
/// `help:`) when there is no text to show, e.g. when the file itself could not be read.
pub(crate) fn asm_diagnostic(d: &Diagnostic, errors: &AsmErrors, style: Style) -> String {
    diagnostic(d, &errors.sources, style)
}

/// A located diagnostic drawn with its snippet from `sources` (`(file name, text)` pairs).
fn diagnostic(d: &Diagnostic, sources: &[(String, String)], style: Style) -> String {
    let headline = format!("{}:{}:{}: {}", d.file, d.line, d.col, d.message);
    let source = sources.iter().find(|(name, text)| *name == d.file && !text.is_empty());
    let Some((_, text)) = source else {
        let mut s = format!("error: {headline}\n");
        if let Some(hint) = &d.hint {
            s.push_str(&format!("  help: {hint}\n"));
        }
        return s;
    };
    let (start, end) = clamp_span(text, d.offset, d.len);
    let mut diag = MietteDiagnostic::new(headline).with_label(LabeledSpan::underline(start..end));
    if let Some(hint) = &d.hint {
        diag = diag.with_help(hint.clone());
    }
    let report = Report::new(diag).with_source_code(NamedSource::new(&d.file, text.clone()));
    let mut s = String::new();
    if style.handler().render_report(&mut s, report.as_ref()).is_err() {
        // Rendering into a String only fails if a Display impl fails; keep the plain line.
        s = format!("error: {}:{}:{}: {}\n", d.file, d.line, d.col, d.message);
    }
    s
}

/// Keeps a diagnostic's span inside `text` and on character boundaries, so that a slightly
/// wrong offset from the assembler can never make rendering panic.
fn clamp_span(text: &str, offset: usize, len: usize) -> (usize, usize) {
    let mut start = offset.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = start.saturating_add(len).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// Verifier errors, then the summary. An error in an instruction whose source line is among
/// `sources` (`(file name, text)` of the files just assembled) is drawn as an assembler
/// diagnostic is: `× t.vasm:12:5: message`, the snippet with the instruction underlined, and
/// where the verifier found it. Any other is one line
/// (`error: verification failed: t.vasm:12 (in main, instruction 2): message`), as for a
/// `.vbc` module, whose sources are not at hand.
pub(crate) fn verify_errors(
    file: &str,
    module: Option<&Module>,
    errors: &[VerifyError],
    sources: &[(String, String)],
    style: Style,
) -> String {
    let mut out = String::new();
    for e in errors {
        if let Some(d) = module.and_then(|m| verify_diagnostic(m, e, sources)) {
            out.push_str(&diagnostic(&d, sources, style));
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push('\n');
            continue;
        }
        let place = match (e.func.as_deref(), e.pc) {
            (Some(name), Some(pc)) => match module.and_then(|m| m.func_index(name).map(|i| (m, i))) {
                Some((m, i)) => format!("{}: ", m.location(i, pc)),
                None => format!("{name} instruction {pc}: "),
            },
            (Some(name), None) => format!("in function {name}: "),
            (None, Some(pc)) => format!("instruction {pc}: "),
            (None, None) => String::new(),
        };
        out.push_str(&format!("error: verification failed: {place}{}\n", e.message));
    }
    out.push_str(&format!("error: {} in {file}\n", count(errors.len().max(1), "error")));
    out
}

/// A verifier error as a located diagnostic: its instruction's line from the module's debug
/// section, the column and span of the code on that line from the source text.
fn verify_diagnostic(m: &Module, e: &VerifyError, sources: &[(String, String)]) -> Option<Diagnostic> {
    let (func, pc) = (m.func_index(e.func.as_deref()?)?, e.pc?);
    let location = m.location(func, pc);
    let (file, line) = (location.file?, location.line?);
    let text = &sources.iter().find(|(name, _)| *name == file)?.1;
    let (start, end) = vm_core::asm::code_span(text, line)?;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..start].chars().count() + 1;
    Some(Diagnostic {
        file,
        line,
        col: u32::try_from(col).unwrap_or(u32::MAX),
        offset: start,
        len: end - start,
        message: e.message.clone(),
        hint: Some(format!("found by the verifier in `{}`, instruction {pc}", location.func)),
    })
}

/// The report for an exception that ended the main actor.
pub(crate) fn uncaught(fault: &Fault, location: &Location) -> String {
    format!(
        "error: uncaught exception in actor <1> (main)\n  {}: {}\n  at {location}\n",
        fault.exception.kind,
        fault.exception.msg.excerpt(vm_core::value::EXCERPT_BYTES)
    )
}

/// The report for a main actor that ended with an abnormal exit reason (`stop`, a kill, an exit
/// signal from a linked actor).
pub(crate) fn stopped(reason: &vm_core::Value) -> String {
    format!(
        "error: actor <1> (main) exited with reason {}\n",
        reason.repr_excerpt(vm_core::value::EXCERPT_BYTES)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_core::{Atom, Exception};

    fn diag(file: &str, line: u32, col: u32, offset: usize, len: usize, message: &str) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            line,
            col,
            offset,
            len,
            message: message.into(),
            hint: Some("did you mean 'add'?".into()),
        }
    }

    const SRC: &str = ".func main 1\n    const r1, 2\n    ad r1, r1, r1\n    ret r1\n.end\n";

    #[test]
    fn every_diagnostic_is_rendered_with_its_location_and_a_summary() {
        let off = SRC.find("ad r1").unwrap();
        let errors = AsmErrors {
            diagnostics: vec![
                diag("p.vasm", 3, 5, off, 2, "unknown mnemonic 'ad'"),
                diag("p.vasm", 4, 9, SRC.find("r1\n.end").unwrap(), 2, "second problem"),
            ],
            sources: vec![("p.vasm".into(), SRC.into())],
        };
        let out = asm_errors("p.vasm", &errors, Style::plain());
        assert!(!out.contains('\x1b'), "ANSI escapes in plain output:\n{out}");
        let first = out.lines().find(|l| !l.trim().is_empty()).unwrap();
        assert!(first.contains("p.vasm:3:5: unknown mnemonic 'ad'"), "{out}");
        assert!(out.contains("p.vasm:4:9: second problem"), "{out}");
        // The snippet shows the offending line and the hint.
        assert!(out.contains("ad r1, r1, r1"), "{out}");
        assert!(out.contains("did you mean 'add'?"), "{out}");
        assert!(out.ends_with("error: 2 errors in p.vasm\n"), "{out}");
    }

    #[test]
    fn missing_sources_and_bad_spans_do_not_panic() {
        let errors = AsmErrors {
            diagnostics: vec![
                diag("gone.vasm", 1, 1, 0, 0, "cannot read gone.vasm: No such file or directory"),
                diag("p.vasm", 99, 1, 10_000, 50, "offset past the end"),
                diag("u.vasm", 1, 2, 1, 1, "inside a multi-byte character"),
            ],
            sources: vec![
                ("gone.vasm".into(), String::new()),
                ("p.vasm".into(), SRC.into()),
                ("u.vasm".into(), "é = 1\n".into()),
            ],
        };
        let out = asm_errors("p.vasm", &errors, Style::plain());
        assert!(out.contains("error: gone.vasm:1:1: cannot read gone.vasm"), "{out}");
        assert!(out.contains("help: did you mean 'add'?"), "{out}");
        assert!(out.contains("p.vasm:99:1: offset past the end"), "{out}");
        assert!(out.contains("u.vasm:1:2: inside a multi-byte character"), "{out}");
        assert!(out.ends_with("error: 3 errors in p.vasm\n"), "{out}");
        assert_eq!(clamp_span("é", 1, 1), (0, 2));
    }

    #[test]
    fn color_is_only_used_when_asked_for() {
        let errors = AsmErrors {
            diagnostics: vec![diag("p.vasm", 3, 5, SRC.find("ad r1").unwrap(), 2, "unknown mnemonic 'ad'")],
            sources: vec![("p.vasm".into(), SRC.into())],
        };
        let colored = asm_errors("p.vasm", &errors, Style { color: true, width: 100 });
        assert!(colored.contains('\x1b'));
        assert!(colored.ends_with("error: 1 error in p.vasm\n"), "{colored}");
    }

    #[test]
    fn an_empty_failure_still_says_so() {
        let out = asm_errors("p.vasm", &AsmErrors::default(), Style::plain());
        assert_eq!(out, "error: p.vasm could not be assembled\n");
    }

    #[test]
    fn verifier_errors_name_their_place() {
        let module = Module {
            consts: vec![],
            funcs: vec![vm_core::Function { name: "main".into(), arity: 0, nregs: 1, code: vec![] }],
            debug: None,
        };
        let errors = vec![
            VerifyError {
                func: Some("main".into()),
                pc: Some(3),
                message: "register r9 out of range".into(),
            },
            VerifyError { func: Some("nope".into()), pc: Some(1), message: "x".into() },
            VerifyError { func: None, pc: None, message: "no functions".into() },
        ];
        let out = verify_errors("p.vbc", Some(&module), &errors, &[], Style::plain());
        assert_eq!(
            out,
            "error: verification failed: main instruction 3: register r9 out of range\n\
             error: verification failed: nope instruction 1: x\n\
             error: verification failed: no functions\n\
             error: 3 errors in p.vbc\n"
        );
    }

    #[test]
    fn uncaught_exceptions_name_actor_kind_message_and_place() {
        let fault =
            Fault { exception: Exception::new(Atom::new("div_by_zero"), "division by zero"), func: 0, pc: 2 };
        let location = Location { func: "main".into(), pc: 2, file: Some("p.vasm".into()), line: Some(4) };
        assert_eq!(
            uncaught(&fault, &location),
            "error: uncaught exception in actor <1> (main)\n  div_by_zero: division by zero\n  \
             at p.vasm:4 (in main, instruction 2)\n"
        );
    }
}
