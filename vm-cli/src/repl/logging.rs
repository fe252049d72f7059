//! Logging: the `tracing` subscriber of `vm run` and of `vm repl`.
//!
//! Both read the same switches: `--trace` logs everything at trace level (the runtime's span per
//! actor, every message and effect of every actor); otherwise `RUST_LOG` decides when it is set
//! (`RUST_LOG=vm_sched=debug` shows the span per actor and every exit); otherwise only warnings
//! and errors are shown (an actor crash, an actor holding a worker thread too long), without
//! timestamps. With the cargo feature `tokio-console`, the runtime is also served to
//! `tokio-console` (build with `RUSTFLAGS="--cfg tokio_unstable"` for task details).
//!
//! `vm repl` adds a layer of its own, [`ActorLog`], that consumes the runtime's per-actor records
//! (see `vm_sched::session`): it prints the activity of the actors traced with `trace PID on`
//! and keeps each actor's recent exceptions and its exit for `info PID`. Its lines, and the
//! ordinary log lines, go above the prompt through the REPL's printer when it is interactive.

use super::printer::Printer;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use vm_sched::trace::{EVENT_TARGET, TRACE_TARGET};

/// The filter for ordinary log lines: everything with `--trace`, else `RUST_LOG`, else warnings.
/// The flag says whether to show timestamps (only when someone asked for detailed logs).
fn env_filter(trace: bool) -> (EnvFilter, bool) {
    if trace {
        return (EnvFilter::new("trace"), true);
    }
    match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, true),
        Err(_) => (EnvFilter::new("warn"), false),
    }
}

/// Logs go to standard error; see the module docs. `try_init` because in-process callers (tests)
/// may run several commands.
pub fn init_for_run(trace: bool) {
    let (filter, timed) = env_filter(trace);
    let fmt = fmt_layer(timed, BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry().with(console_layer()).with(fmt.with_filter(filter)).try_init();
}

/// Installs the REPL's subscriber: log lines go through `printer` when `logs_to_printer` (an
/// interactive session: above the prompt) and to standard error otherwise; [`ActorLog`] reports
/// traced actors through `printer` in both cases. Returns the shared state of the actor log.
pub fn init_for_repl(trace: bool, printer: &Printer, logs_to_printer: bool) -> Arc<ActorRecords> {
    let records = Arc::new(ActorRecords::default());
    let (filter, timed) = env_filter(trace);
    // The line editor logs every key through `log` at debug level; in a session those lines
    // would be printed above the prompt while it is being edited, which logs more keys.
    let filter = match "rustyline=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let fmt = if logs_to_printer {
        fmt_layer(timed, BoxMakeWriter::new(printer.clone()), std::io::stdout().is_terminal())
    } else {
        fmt_layer(timed, BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal())
    };
    let actor_log = ActorLog { records: records.clone(), printer: printer.clone() };
    let actor_filter = ActorFilter { records: records.clone() };
    let _ = tracing_subscriber::registry()
        .with(console_layer())
        .with(fmt.with_filter(filter))
        .with(actor_log.with_filter(actor_filter))
        .try_init();
    records
}

/// The format layer for log lines, with or without timestamps.
fn fmt_layer<S>(timed: bool, writer: BoxMakeWriter, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    if timed { fmt.boxed() } else { fmt.without_time().boxed() }
}

// console-subscriber panics at start-up in a tokio built without its unstable task tracing;
// refuse to build that instead. (`tokio_unstable` is tokio's cfg, set through RUSTFLAGS.)
#[cfg(feature = "tokio-console")]
#[allow(unexpected_cfgs)]
const _: () = assert!(
    cfg!(tokio_unstable),
    "the tokio-console feature needs RUSTFLAGS=\"--cfg tokio_unstable\" (see the README)"
);

/// The `tokio-console` layer, when built with that feature; it serves the runtime's tasks to
/// the console from a thread of its own.
#[cfg(feature = "tokio-console")]
fn console_layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    Some(console_subscriber::spawn().boxed())
}

#[cfg(not(feature = "tokio-console"))]
fn console_layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    None
}

/// How many records are kept per actor, and for how many actors.
const RECORDS_PER_ACTOR: usize = 8;
const ACTORS_RECORDED: usize = 10_000;

/// What the REPL knows about actors beyond the runtime's own introspection: which are traced,
/// and each one's recent exceptions and its exit.
#[derive(Default)]
pub struct ActorRecords {
    traced: RwLock<HashSet<u64>>,
    /// Set while `traced` is not empty: the filter checks it on every record.
    any_traced: AtomicBool,
    /// Recent exceptions and the exit of each actor, by pid; the lowest pids (the oldest actors)
    /// are dropped first past [`ACTORS_RECORDED`].
    events: Mutex<BTreeMap<u64, VecDeque<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent even if a holder panicked: every update is one insertion.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ActorRecords {
    /// Turns tracing of `pid` on or off.
    pub fn set_traced(&self, pid: u64, on: bool) {
        let mut set = self.traced.write().unwrap_or_else(|e| e.into_inner());
        if on {
            set.insert(pid);
        } else {
            set.remove(&pid);
        }
        self.any_traced.store(!set.is_empty(), Ordering::SeqCst);
        drop(set);
        // The most detailed level any layer wants changed; let `tracing` recompute it.
        tracing::callsite::rebuild_interest_cache();
    }

    /// Whether `pid` is traced.
    pub fn is_traced(&self, pid: u64) -> bool {
        self.any_traced.load(Ordering::Relaxed)
            && self.traced.read().unwrap_or_else(|e| e.into_inner()).contains(&pid)
    }

    /// The recent exceptions and the exit of `pid`, oldest first.
    pub fn events(&self, pid: u64) -> Vec<String> {
        lock(&self.events).get(&pid).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    fn record(&self, pid: u64, text: String) {
        let mut events = lock(&self.events);
        let q = events.entry(pid).or_default();
        if q.len() == RECORDS_PER_ACTOR {
            q.pop_front();
        }
        q.push_back(text);
        while events.len() > ACTORS_RECORDED {
            events.pop_first();
        }
    }
}

/// Lets through the runtime's activity records while some actor is traced, and its exit and
/// exception records always.
struct ActorFilter {
    records: Arc<ActorRecords>,
}

impl<S> Filter<S> for ActorFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.target() == EVENT_TARGET
            || (meta.target() == TRACE_TARGET && self.records.any_traced.load(Ordering::Relaxed))
    }

    fn callsite_enabled(&self, meta: &Metadata<'_>) -> Interest {
        // "Sometimes": the answer for the activity records changes with `trace PID on|off`.
        if meta.is_event() && (meta.target() == EVENT_TARGET || meta.target() == TRACE_TARGET) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if self.records.any_traced.load(Ordering::Relaxed) {
            LevelFilter::TRACE
        } else {
            LevelFilter::DEBUG
        })
    }
}

/// Prints traced actors' records and keeps exits and exceptions; see the module docs.
struct ActorLog {
    records: Arc<ActorRecords>,
    printer: Printer,
}

/// The `pid` and the message of a runtime record.
#[derive(Default)]
struct Fields {
    pid: Option<u64>,
    message: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "pid" {
            self.pid = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "pid" {
            self.pid = u64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for ActorLog {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(pid) = fields.pid else { return };
        if self.records.is_traced(pid) {
            self.printer.line(format!("[trace <{pid}>] {}", fields.message));
        }
        if event.metadata().target() == EVENT_TARGET {
            self.records.record(pid, fields.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_bounded_per_actor_and_in_number() {
        let r = ActorRecords::default();
        for i in 0..RECORDS_PER_ACTOR + 3 {
            r.record(1, format!("e{i}"));
        }
        let events = r.events(1);
        assert_eq!(events.len(), RECORDS_PER_ACTOR);
        assert_eq!(events.first().map(String::as_str), Some("e3"));
        for pid in 2..(ACTORS_RECORDED as u64 + 5) {
            r.record(pid, "x".into());
        }
        assert!(r.events(1).is_empty(), "the oldest actor's records go first");
        assert_eq!(r.events(ACTORS_RECORDED as u64 + 4), ["x"]);
    }

    #[test]
    fn tracing_is_switched_per_actor() {
        let r = ActorRecords::default();
        assert!(!r.is_traced(3));
        r.set_traced(3, true);
        assert!(r.is_traced(3) && !r.is_traced(4));
        r.set_traced(3, false);
        assert!(!r.is_traced(3));
        assert!(!r.any_traced.load(Ordering::Relaxed));
    }
}
