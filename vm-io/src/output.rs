//! The sink for the `print` effect.
//!
//! Buffering policy (chosen for programs that print a lot; a `print` per loop iteration must not
//! cost a system call):
//! - Lines go into a 64 KiB buffer and reach the OS when it fills or when [`Output::flush`] is
//!   called. The runtime (`vm_sched::run`) flushes a few milliseconds after output first appears
//!   in an empty buffer, so a program that prints and then waits is not held back, and once more
//!   when `main` has ended, before the CLI reports how the program ended. Output is therefore
//!   complete and in order when the process exits, whatever its exit status.
//! - When the destination is a terminal, every line is flushed as it is written (C's stdio does
//!   the same), so an interactive user sees each line at once even from a program that computes
//!   for a long time between prints.
//! - Dropping an [`Output`] flushes it too, as a last resort (for example on a panic).
//!
//! Errors are sticky: once a write or flush fails (typically `EPIPE` when the reader of a pipe
//! has gone, e.g. `vm run prog.vasm | head -1`), every later call fails with the same kind of
//! error at once, so a failure found by a background flush is not lost and a dead pipe is not
//! written to again.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};

/// Capacity of the output buffer.
const BUFFER_BYTES: usize = 64 * 1024;

/// A buffered, thread-safe line sink (standard output for `vm run`). See the module docs.
pub struct Output {
    inner: Mutex<Inner>,
}

struct Inner {
    writer: BufWriter<Box<dyn Write + Send>>,
    /// Flush after every line (the destination is a terminal).
    line_flush: bool,
    /// The first error seen, replayed by every later call.
    failed: Option<(io::ErrorKind, String)>,
}

impl Output {
    /// Standard output; line-flushed when it is a terminal, block-buffered otherwise.
    pub fn stdout() -> Output {
        let tty = io::stdout().is_terminal();
        Output::new(io::stdout(), tty)
    }

    /// Any writer (tests use an in-memory one). `line_flush` flushes after every line.
    pub fn new(writer: impl Write + Send + 'static, line_flush: bool) -> Output {
        let writer: Box<dyn Write + Send> = Box::new(writer);
        Output {
            inner: Mutex::new(Inner {
                writer: BufWriter::with_capacity(BUFFER_BYTES, writer),
                line_flush,
                failed: None,
            }),
        }
    }

    /// Writes `line` followed by `\n`.
    pub fn print_line(&self, line: &str) -> io::Result<()> {
        let mut inner = self.lock();
        inner.check()?;
        let Inner { writer, line_flush, .. } = &mut *inner;
        let mut result = writer.write_all(line.as_bytes()).and_then(|()| writer.write_all(b"\n"));
        if result.is_ok() && *line_flush {
            result = writer.flush();
        }
        inner.record(result)
    }

    /// Writes `bytes` as they are (no newline added), in order with the lines.
    pub fn write_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        inner.check()?;
        let Inner { writer, line_flush, .. } = &mut *inner;
        let mut result = writer.write_all(bytes);
        if result.is_ok() && *line_flush {
            result = writer.flush();
        }
        inner.record(result)
    }

    /// Pushes buffered lines to the destination.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.check()?;
        let result = inner.writer.flush();
        inner.record(result)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the buffer in a state that is unsafe to
        // keep using, and losing program output would be worse, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    fn record(&mut self, result: io::Result<()>) -> io::Result<()> {
        if let Err(e) = &result {
            self.failed = Some((e.kind(), e.to_string()));
        }
        result
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // Errors cannot be reported from a destructor; the runtime flushes explicitly at the end
        // of a run and reports failures there.
        let _ = self.flush();
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An in-memory destination that counts the writes reaching it and can be made to fail.
    #[derive(Clone, Default)]
    struct Sink {
        data: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        broken: Arc<Mutex<bool>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if *self.broken.lock().unwrap() {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "reader went away"));
            }
            *self.writes.lock().unwrap() += 1;
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.data.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn buffers_until_flushed() {
        let sink = Sink::default();
        let out = Output::new(sink.clone(), false);
        for i in 0..1000 {
            out.print_line(&format!("line {i}")).unwrap();
        }
        // 1000 short lines fit in the buffer: nothing has reached the sink yet.
        assert_eq!(*sink.writes.lock().unwrap(), 0);
        out.flush().unwrap();
        let text = sink.text();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.starts_with("line 0\nline 1\n"));
        assert!(text.ends_with("line 999\n"));
        assert!(*sink.writes.lock().unwrap() <= 2);
    }

    #[test]
    fn line_flush_writes_each_line_at_once() {
        let sink = Sink::default();
        let out = Output::new(sink.clone(), true);
        out.print_line("a").unwrap();
        assert_eq!(sink.text(), "a\n");
        out.print_line("").unwrap();
        assert_eq!(sink.text(), "a\n\n");
    }

    #[test]
    fn drop_flushes() {
        let sink = Sink::default();
        let out = Output::new(sink.clone(), false);
        out.print_line("last words").unwrap();
        drop(out);
        assert_eq!(sink.text(), "last words\n");
    }

    #[test]
    fn errors_are_sticky() {
        let sink = Sink::default();
        let out = Output::new(sink.clone(), false);
        out.print_line("x").unwrap();
        *sink.broken.lock().unwrap() = true;
        let e = out.flush().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        // The destination works again, but the sink stays failed: the error is reported at the
        // next print rather than lost.
        *sink.broken.lock().unwrap() = false;
        let e = out.print_line("y").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(e.to_string().contains("reader went away"));
    }
}
