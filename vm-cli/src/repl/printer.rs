//! The REPL's output: one thread writes everything the session shows.
//!
//! Command results, actors' `print` lines, log lines and trace lines are all sent to one
//! [`Printer`] thread, which writes them in the order they were sent. In an interactive session
//! it writes through rustyline's external printer, which puts them *above* the prompt and redraws
//! the line being typed; otherwise it writes to standard output.
//!
//! - Senders never wait for the terminal while it has room in the queue ([`QUEUE`] chunks); a
//!   program printing faster than the terminal can show is slowed down there, as it would be by
//!   a full pipe, rather than filling memory.
//! - Lines waiting in the queue are written together (up to [`BATCH`] at a time), so a burst of
//!   output costs one redraw of the prompt, not one per line.
//! - [`Printer::sync`] returns once everything sent before it has been written. The REPL calls it
//!   before showing the prompt, so a command's output never lands after the prompt that follows
//!   it, and before it exits.

use std::io::Write as _;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// How many chunks of output may wait for the printer thread.
pub const QUEUE: usize = 4096;
/// How many queued lines are written in one go.
pub const BATCH: usize = 256;

enum Msg {
    /// Text without a trailing newline (one or more lines).
    Text(String),
    /// Answer once everything before has been written.
    Sync(SyncSender<()>),
}

/// Where the printer thread writes: a batch of text ending in a newline.
pub type Sink = Box<dyn FnMut(String) + Send>;

/// A handle on the printer thread; clones share it. See the module docs.
#[derive(Clone)]
pub struct Printer {
    tx: SyncSender<Msg>,
}

impl Printer {
    /// Starts the printer thread writing to `sink`. It ends when every handle is dropped.
    pub fn start(sink: Sink) -> std::io::Result<Printer> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new().name("vm-repl-printer".into()).spawn(move || run(rx, sink))?;
        Ok(Printer { tx })
    }

    /// A sink writing to standard output (a session that is not interactive).
    pub fn stdout_sink() -> Sink {
        Box::new(|text: String| {
            let mut out = std::io::stdout().lock();
            // Nothing useful can be done when standard output is gone; the session goes on.
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        })
    }

    /// Shows `text` (one or more lines, without a trailing newline).
    pub fn line(&self, text: impl Into<String>) {
        // A send fails only when the printer thread has ended, and then there is nowhere to
        // write anyway.
        let _ = self.tx.send(Msg::Text(text.into()));
    }

    /// Waits until everything sent before has been written.
    pub fn sync(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

fn run(rx: Receiver<Msg>, mut sink: Sink) {
    let mut pending = String::new();
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        let mut lines = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Text(text) => {
                    pending.push_str(&text);
                    pending.push('\n');
                    lines += 1;
                    if lines < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                Msg::Sync(done) => {
                    if !pending.is_empty() {
                        sink(std::mem::take(&mut pending));
                    }
                    // The waiter may have given up; that is fine.
                    let _ = done.try_send(());
                    next = rx.try_recv().ok();
                }
            }
        }
        if !pending.is_empty() {
            sink(std::mem::take(&mut pending));
        }
    }
}

/// Actors' `print` output.
impl vm_sched::Output for Printer {
    fn line(&self, text: &str) {
        Printer::line(self, text);
    }
}

/// Log lines: `tracing_subscriber::fmt` writes each event into one writer and drops it, so the
/// event is sent as one chunk when the writer is dropped.
pub struct LogWriter {
    printer: Printer,
    buf: Vec<u8>,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            // Never block a worker thread on a full queue for a log line: with [`QUEUE`] chunks
            // already waiting, one log line less is the lesser evil.
            let _ = self.printer.tx.try_send(Msg::Text(text.to_string()));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Printer {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter { printer: self.clone(), buf: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn capture() -> (Printer, Arc<Mutex<Vec<String>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let got = got.clone();
            Box::new(move |s: String| got.lock().unwrap().push(s))
        };
        (Printer::start(sink).unwrap(), got)
    }

    #[test]
    fn lines_arrive_in_order_and_sync_waits_for_them() {
        let (p, got) = capture();
        for i in 0..1000 {
            p.line(format!("{i}"));
        }
        p.sync();
        let all: String = got.lock().unwrap().concat();
        let want: String = (0..1000).map(|i| format!("{i}\n")).collect();
        assert_eq!(all, want);
        // Batches were written, not 1000 single lines.
        assert!(got.lock().unwrap().len() < 1000);
    }

    #[test]
    fn log_lines_are_sent_whole_when_the_writer_is_dropped() {
        let (p, got) = capture();
        {
            let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&p);
            w.write_all(b"WARN ").unwrap();
            w.write_all(b"something\n").unwrap();
            assert!(got.lock().unwrap().is_empty());
        }
        p.sync();
        assert_eq!(got.lock().unwrap().concat(), "WARN something\n");
    }
}
