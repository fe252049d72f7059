//! Native functions callable from bytecode by name (`native dst, :name, args, n`).
//!
//! Each native has one of three implementations, which tells the runtime how to run it:
//! - [`Imp::Inline`]: quick and never waits; called on the actor's worker thread, inside the
//!   interpreter (no suspension).
//! - [`Imp::Async`]: I/O that may wait (sockets, standard input). The function runs on the
//!   actor's thread and either completes at once ([`Started::Done`]: data already buffered, a
//!   write the socket took whole) or returns a future ([`Started::Pending`]) that the runtime
//!   awaits while the actor is *soft-blocked* (it costs no thread; a mode-0 interrupt drops the
//!   future and raises in the actor). Futures are written to be cancel-safe: dropping one loses
//!   no input (bytes read stay in the connection's buffer).
//! - [`Imp::Blocking`]: may block its thread (files, name resolution); run on tokio's blocking
//!   pool while the actor is *real-blocked*. A panic inside becomes a `:panic` exception in the
//!   calling actor only.
//! - [`Imp::Affine`]: must run on one particular OS thread (SQLite connections; libraries with
//!   thread-local state; GUI toolkits that want the process's first thread). The [`Bind`] says
//!   which; the runtime queues the call to that thread's executor (see [`crate::affine`]). While
//!   queued the actor is *soft-blocked* (a mode-0 interrupt cancels the call, which never
//!   runs); once it runs the actor is *real-blocked*. A panic is a `:panic` in the caller only,
//!   and the thread goes on serving.
//!
//! **Caught panics are quiet.** A panic inside a native becomes a `:panic` exception in the
//! calling actor ([`guarded`]); it is the program's business, so it prints nothing:
//! 1. [`guarded`] marks the thread as inside a native call (a thread-local flag, restored after)
//!    around the call and its `catch_unwind`; [`guarded_start`] and [`guarded_poll`] do the same
//!    around an async native's start and each poll of its future, so every path a native's code
//!    runs on is covered.
//! 2. A panic hook, installed once per process when the first [`Io`] is made, logs a panic
//!    raised while the flag is set through `tracing` at debug level (message and location), and
//!    hands every other panic to the hook it replaced: a panic in the VM itself is a bug and is
//!    still printed, with its backtrace when asked for.
//!
//! The registry is a static table (adding a native is adding a row); `docs/io.md` is its
//! reference and a test checks that every row is documented there. A native gets a [`Ctx`]: the
//! VM's [`Io`] state (ownership table, console), the caller's pid and the caller's grants.

pub use crate::affine::Bind;
use crate::resource::Io;
use std::future::Future;
use std::net::ToSocketAddrs;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use vm_core::{Atom, Exception, NativeId, Value, atoms};

/// What a native sees of the VM: its I/O state and who is calling.
pub struct Ctx<'a> {
    /// The VM's I/O state.
    pub io: &'a Arc<Io>,
    /// The calling actor's pid.
    pub pid: u64,
    /// What the caller may do: its container's grants (never the VM's, which a container may
    /// not hold).
    pub grants: &'a Arc<crate::perms::Grants>,
    /// Where the caller's `stdout_write` and `stderr_write` go: its container's console (which
    /// may put the container's name in front of each line), or the VM's ([`Io::console`]).
    pub console: &'a Arc<dyn crate::resource::Console>,
}

impl<'a> Ctx<'a> {
    /// A context with the VM's own grants ([`Io::grants`]) and console, for callers outside
    /// any container.
    pub fn new(io: &'a Arc<Io>, pid: u64) -> Ctx<'a> {
        Ctx { io, pid, grants: &io.grants, console: &io.console }
    }
}

/// The result of a native.
pub type NativeResult = Result<Value, Exception>;

/// An operation in flight.
pub type IoFuture = Pin<Box<dyn Future<Output = NativeResult> + Send>>;

/// What starting an async native gave.
pub enum Started {
    /// It completed at once.
    Done(NativeResult),
    /// It waits: await this (dropping it cancels the operation without losing input).
    Pending(IoFuture),
}

/// A synchronous native (inline or blocking).
pub type SyncFn = fn(&Ctx<'_>, &[Value]) -> NativeResult;
/// An async native.
pub type AsyncFn = fn(&Ctx<'_>, &[Value]) -> Started;

/// How a native runs; see the module docs.
#[derive(Clone, Copy)]
pub enum Imp {
    /// On the actor's thread, at once.
    Inline(SyncFn),
    /// As a future, the actor soft-blocked.
    Async(AsyncFn),
    /// On the blocking pool, the actor real-blocked.
    Blocking(SyncFn),
    /// On the thread the [`Bind`] names, queued to its executor.
    Affine(Bind, SyncFn),
}

/// How the runtime must run a native (the kind of its [`Imp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// On the actor's thread.
    Inline,
    /// Awaited, soft-blocked.
    Async,
    /// On the blocking pool, real-blocked.
    Blocking,
    /// On its executor's thread: soft-blocked while queued, real-blocked while it runs.
    Affine,
}

/// One registry row.
#[derive(Clone, Copy)]
pub struct Native {
    /// The name bytecode calls it by.
    pub name: &'static str,
    /// Fewest arguments.
    pub min_args: usize,
    /// Most arguments (optional trailing ones, such as a timeout, are `nil` when absent).
    pub max_args: usize,
    /// The implementation.
    pub imp: Imp,
    /// One line for people (`vm repl`'s help).
    pub doc: &'static str,
}

impl std::fmt::Debug for Native {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Native({}, {:?})", self.name, self.kind())
    }
}

impl Native {
    /// How it runs.
    pub fn kind(&self) -> Kind {
        match self.imp {
            Imp::Inline(_) => Kind::Inline,
            Imp::Async(_) => Kind::Async,
            Imp::Blocking(_) => Kind::Blocking,
            Imp::Affine(..) => Kind::Affine,
        }
    }

    /// Checks the argument count.
    #[inline]
    pub fn check_arity(&self, n: usize) -> Result<(), Exception> {
        if n < self.min_args || n > self.max_args {
            return Err(self.arity_error(n));
        }
        Ok(())
    }

    /// The `:badarity` exception for a call with `n` arguments (out of line: the check is on
    /// every call's path, the message almost never).
    #[cold]
    #[inline(never)]
    fn arity_error(&self, n: usize) -> Exception {
        let takes = if self.min_args == self.max_args {
            format!("{}", self.min_args)
        } else {
            format!("{} to {}", self.min_args, self.max_args)
        };
        Exception::new(atoms::BADARITY, format!("native {} takes {takes} arguments, got {n}", self.name))
    }

    /// Calls an inline native: the arity check, then the function itself. This is
    /// [`Native::call`] for a native known to be [`Imp::Inline`], without matching on the
    /// kind again; the runtime's path for every inline call.
    #[inline]
    pub fn call_sync(&self, f: SyncFn, ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
        self.check_arity(args.len())?;
        f(ctx, args)
    }

    /// Calls a synchronous native (inline or blocking) after checking the count. An async
    /// native is started instead, and `Pending` is reported as an error: use [`Native::start`].
    pub fn call(&self, ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
        self.check_arity(args.len())?;
        match self.imp {
            Imp::Inline(f) | Imp::Blocking(f) | Imp::Affine(_, f) => f(ctx, args),
            Imp::Async(f) => match f(ctx, args) {
                Started::Done(r) => r,
                Started::Pending(_) => Err(Exception::badarg(format!("native {} would wait", self.name))),
            },
        }
    }

    /// Starts a native of any kind: synchronous ones complete at once.
    pub fn start(&self, ctx: &Ctx<'_>, args: &[Value]) -> Started {
        if let Err(e) = self.check_arity(args.len()) {
            return Started::Done(Err(e));
        }
        match self.imp {
            Imp::Inline(f) | Imp::Blocking(f) | Imp::Affine(_, f) => Started::Done(f(ctx, args)),
            Imp::Async(f) => f(ctx, args),
        }
    }
}

macro_rules! natives {
    ($($name:literal, $min:literal..=$max:literal, $kind:ident($($imp:tt)*), $doc:literal;)*) => {
        /// Every native, by name.
        pub static NATIVES: &[Native] = &[
            $(Native { name: $name, min_args: $min, max_args: $max, imp: Imp::$kind($($imp)*), doc: $doc },)*
        ];
    };
}

use crate::{cluster, files, net, request, resp, services, sqlite, stdio, table};

natives! {
    "tcp_listen", 1..=1, Async(net::tcp_listen), "tcp_listen(addr): listens on host:port -> listener";
    "tcp_accept", 1..=2, Async(net::tcp_accept), "tcp_accept(listener, [timeout_ms]): waits for a connection -> connection";
    "tcp_connect", 1..=2, Async(net::tcp_connect), "tcp_connect(addr, [timeout_ms]): connects to host:port -> connection";
    "tcp_read", 2..=3, Async(net::tcp_read), "tcp_read(conn, max, [timeout_ms]): 1..max bytes, or nil at end of input";
    "tcp_read_exact", 2..=3, Async(net::tcp_read_exact), "tcp_read_exact(conn, n, [timeout_ms]): exactly n bytes (:closed if input ends first)";
    "tcp_read_line", 2..=3, Async(net::tcp_read_line), "tcp_read_line(conn, max, [timeout_ms]): a line with its newline, or nil at end of input";
    "tcp_read_resp", 2..=3, Async(net::tcp_read_resp), "tcp_read_resp(conn, max, [timeout_ms]): one Redis (RESP) command as a list of bytes, or nil at end of input";
    "tcp_write", 2..=3, Async(net::tcp_write), "tcp_write(conn, data, [timeout_ms]): writes all of data (bytes, a string, or a list of them)";
    "tcp_write_resp", 2..=3, Async(net::tcp_write_resp), "tcp_write_resp(conn, replies, [timeout_ms]): writes each value of the list replies as a RESP reply, in one write";
    "tcp_try_read_resp", 2..=2, Inline(net::tcp_try_read_resp), "tcp_try_read_resp(conn, max): the next Redis command if a whole one is already buffered, else false (never waits)";
    "tcp_buffered", 1..=1, Inline(net::tcp_buffered), "tcp_buffered(conn): how many received bytes wait in the read buffer";
    "tcp_shutdown", 1..=1, Inline(net::tcp_shutdown), "tcp_shutdown(conn): closes the writing half";
    "tcp_nodelay", 2..=2, Inline(net::tcp_nodelay), "tcp_nodelay(conn, on): sets TCP_NODELAY";
    "local_addr", 1..=1, Inline(net::local_addr), "local_addr(res): the local ip:port of a listener or socket";
    "peer_addr", 1..=1, Inline(net::peer_addr), "peer_addr(conn): the peer's ip:port";
    "close", 1..=1, Inline(net::close), "close(res): closes a resource -> true, or false if already closed";
    "resp_encode", 1..=1, Inline(resp::resp_encode), "resp_encode(value): value as a Redis (RESP) reply, bytes";
    "table_new", 0..=0, Inline(table::table_new), "table_new(): a new shared table";
    "table_get", 2..=2, Inline(table::table_get), "table_get(t, key): the value under key, or nil";
    "table_put", 3..=3, Inline(table::table_put), "table_put(t, key, value): stores value under key (nil removes it)";
    "table_del", 2..=2, Inline(table::table_del), "table_del(t, key): removes key -> whether it was there";
    "table_cas", 4..=4, Inline(table::table_cas), "table_cas(t, key, old, new): new under key if it holds old (nil: absent) -> whether it did";
    "table_incr", 3..=3, Inline(table::table_incr), "table_incr(t, key, delta): adds delta to the int under key (absent: 0) -> the sum";
    "table_size", 1..=1, Inline(table::table_size), "table_size(t): how many keys";
    "table_clear", 1..=1, Inline(table::table_clear), "table_clear(t): removes every key";
    "table_keys", 1..=1, Inline(table::table_keys), "table_keys(t): every key, sorted";
    "udp_bind", 1..=1, Async(net::udp_bind), "udp_bind(addr): a UDP socket bound to host:port";
    "udp_send_to", 3..=4, Async(net::udp_send_to), "udp_send_to(sock, addr, data, [timeout_ms]): sends one datagram";
    "udp_recv_from", 2..=3, Async(net::udp_recv_from), "udp_recv_from(sock, max, [timeout_ms]): {data, ip:port}";
    "file_open", 2..=2, Blocking(files::file_open), "file_open(path, mode): mode :read :write :append :create_new :read_write -> file";
    "file_read", 2..=2, Blocking(files::file_read), "file_read(file, max): up to max bytes, or nil at end of file";
    "file_write", 2..=2, Blocking(files::file_write), "file_write(file, data): writes all of data";
    "file_seek", 3..=3, Blocking(files::file_seek), "file_seek(file, offset, whence): whence :start :current :end -> new position";
    "file_read_all", 1..=1, Blocking(files::file_read_all), "file_read_all(path): the whole file as bytes";
    "file_write_all", 2..=2, Blocking(files::file_write_all), "file_write_all(path, data): creates or replaces the file";
    "dir_list", 1..=1, Blocking(files::dir_list), "dir_list(path): the entry names, sorted";
    "file_remove", 1..=1, Blocking(files::file_remove), "file_remove(path): removes a file or an empty directory";
    "stdin_read_line", 0..=1, Async(stdio::stdin_read_line), "stdin_read_line([timeout_ms]): a line of standard input, or nil at end of input";
    "stdout_write", 1..=1, Inline(stdio::stdout_write), "stdout_write(data): writes to standard output without a newline";
    "stderr_write", 1..=1, Inline(stdio::stderr_write), "stderr_write(data): writes to standard error";
    "env_get", 1..=1, Inline(stdio::env_get), "env_get(name): an environment variable, or nil";
    "strip_eol", 1..=1, Inline(strip_eol), "strip_eol(line): line (a string or bytes) without its final \"\\n\" or \"\\r\\n\", or nil if it does not end in \"\\n\"";
    "wall_clock_ms", 0..=0, Inline(wall_clock_ms), "wall_clock_ms(): milliseconds since the Unix epoch";
    "monotonic_us", 0..=0, Inline(monotonic_us), "monotonic_us(): microseconds on a monotonic clock";
    "resolve", 1..=1, Blocking(resolve), "resolve(host): the host's addresses as a list of strings";
    "sqlite_open", 1..=2, Affine(Bind::Fresh("sqlite"), sqlite::sqlite_open), "sqlite_open(path, [mode]): a SQLite connection on a thread of its own; mode :read_write (default) or :read; \":memory:\" for a private in-memory database";
    "sqlite_exec", 2..=3, Affine(Bind::Arg0, sqlite::sqlite_exec), "sqlite_exec(db, sql, [params]): runs a statement with positional parameters (a list) -> rows changed";
    "sqlite_query", 2..=3, Affine(Bind::Arg0, sqlite::sqlite_query), "sqlite_query(db, sql, [params]): runs a query -> a list of rows, each a list of values";
    "sqlite_transaction", 2..=2, Affine(Bind::Arg0, sqlite::sqlite_transaction), "sqlite_transaction(db, statements): runs a list of {sql, params} in one transaction, all or none -> rows changed";
    "sqlite_last_id", 1..=1, Affine(Bind::Arg0, sqlite::sqlite_last_id), "sqlite_last_id(db): the rowid of the last row inserted on the connection";
    "sqlite_close", 1..=1, Affine(Bind::Arg0, sqlite::sqlite_close), "sqlite_close(db): closes the connection -> true, or false if already closed";
    "node", 0..=0, Inline(cluster::node), "node(): this node's name as an atom (:nonode outside a cluster)";
    "nodes", 0..=0, Inline(cluster::nodes), "nodes(): the names of the other live nodes of the cluster";
    "node_of", 1..=1, Inline(cluster::node_of), "node_of(pid): the name of the node pid lives on";
    "spawn_on", 3..=4, Async(cluster::spawn_on), "spawn_on(node, func, args, [opts]): runs func (an atom naming a function of the module that node runs) there -> pid, or {pid, ref} with %{:monitor => true} (needs --cluster)";
    "monitor_node", 2..=2, Inline(cluster::monitor_node), "monitor_node(node, flag): {:nodedown, node} and {:nodeup, node} messages on (true) or off (needs --cluster)";
    "global_register", 1..=2, Async(cluster::global_register), "global_register(name, [pid]): registers the caller (or pid) cluster-wide; one winner when nodes race (needs --cluster)";
    "global_whereis", 1..=1, Async(cluster::global_whereis), "global_whereis(name): the pid registered cluster-wide as name, or nil (needs --cluster)";
    "global_unregister", 1..=1, Async(cluster::global_unregister), "global_unregister(name): removes a cluster-wide name an actor of this node holds (needs --cluster)";
    "vm_snapshot", 1..=1, Async(request::vm_snapshot), "vm_snapshot(path): writes a snapshot of the whole VM to path (needs --allow-write) -> :ok, or :resumed in a VM resumed from it";
    "publish", 2..=2, Inline(services::publish), "publish(name, chan_or_pid): offers a channel or pid to other containers as \"container/name\"";
    "lookup", 1..=1, Inline(services::lookup), "lookup(\"container/name\"): what that container published under name, or nil (needs allow_lookup of that container)";
}

thread_local! {
    /// Set while this thread runs a native call inside [`guarded`].
    static IN_NATIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a native call (`call` calls the native's function) so that a panic inside it becomes a
/// `:panic` exception for the caller and prints nothing (see the module docs).
#[inline]
pub fn guarded(call: impl FnOnce() -> NativeResult) -> NativeResult {
    catch(call, Err)
}

/// [`guarded`] for the start of an async native ([`Native::start`]): a panic is the
/// `:panic` exception, completed at once.
pub fn guarded_start(start: impl FnOnce() -> Started) -> Started {
    catch(start, |e| Started::Done(Err(e)))
}

/// [`guarded`] for one poll of an async native's future: a panic is the `:panic` exception,
/// ready at once (the future is not polled again).
pub fn guarded_poll(poll: impl FnOnce() -> std::task::Poll<NativeResult>) -> std::task::Poll<NativeResult> {
    catch(poll, |e| std::task::Poll::Ready(Err(e)))
}

/// Steps 1 and 2 of the module docs around `call`: its panic, quietly, as the `:panic`
/// exception, which `on_panic` makes the result. (The result is built in place rather than
/// wrapped in a `Result` and unwrapped again: each native call on the hot path paid ~11
/// instructions for moving the nested result.)
#[inline]
fn catch<T>(call: impl FnOnce() -> T, on_panic: impl FnOnce(Exception) -> T) -> T {
    let was = IN_NATIVE.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
    IN_NATIVE.set(was);
    match result {
        Ok(r) => r,
        Err(payload) => on_panic(panicked(&panic_text(payload))),
    }
}

/// The `:panic` exception for a native call that panicked with `text`.
#[cold]
pub fn panicked(text: &str) -> Exception {
    Exception::new(atoms::PANIC, format!("native call panicked: {text}"))
}

/// The message of a panic's payload (a `&str` or a `String`, as `panic!` makes).
pub fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast_ref::<&str>().map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
    }
}

/// Step 2 of the module docs: the panic hook that keeps caught native panics off stderr.
pub(crate) fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_NATIVE.try_with(std::cell::Cell::get).unwrap_or(false) {
                let message = info.payload_as_str().unwrap_or("(no message)");
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                tracing::debug!(%at, "native call panicked (raised as :panic in the caller): {message}");
            } else {
                previous(info);
            }
        }));
    });
}

/// Natives for tests, compiled only for tests and in builds with the `test-natives` feature
/// (which the test crates and the benchmark build enable), so the production table has none:
/// blocking a pool thread on purpose, and panicking on either path.
#[cfg(any(test, feature = "test-natives"))]
pub static TEST_NATIVES: &[Native] = &[
    Native {
        name: "sleep_blocking",
        min_args: 1,
        max_args: 1,
        imp: Imp::Blocking(sleep_blocking),
        doc: "sleep_blocking(ms): blocks a pool thread for ms (for tests of real blocking)",
    },
    Native {
        name: "panic",
        min_args: 1,
        max_args: 1,
        imp: Imp::Blocking(panic_native),
        doc: "panic(msg): panics inside a native (for tests: the caller gets :panic)",
    },
    Native {
        name: "panic_inline",
        min_args: 1,
        max_args: 1,
        imp: Imp::Inline(panic_native),
        doc: "panic_inline(msg): panics inside an inline native (for tests: the caller gets :panic)",
    },
    Native {
        name: "panic_start",
        min_args: 1,
        max_args: 1,
        imp: Imp::Async(panic_start),
        doc: "panic_start(msg): an async native that panics as it starts (for tests: the caller gets :panic)",
    },
    Native {
        name: "panic_poll",
        min_args: 1,
        max_args: 1,
        imp: Imp::Async(panic_poll),
        doc: "panic_poll(msg): an async native whose future waits once, then panics (for tests: the caller gets :panic)",
    },
    Native {
        name: "affine_probe",
        min_args: 0,
        max_args: 0,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_probe),
        doc: "affine_probe(): on thread test -> {os_thread_id, calls so far on it}; :overlap if two run at once",
    },
    Native {
        name: "affine_echo",
        min_args: 1,
        max_args: 1,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_echo),
        doc: "affine_echo(v): v, from thread test (an affine call's round trip, for benchmarks)",
    },
    Native {
        name: "affine_main_probe",
        min_args: 0,
        max_args: 0,
        imp: Imp::Affine(Bind::Named("main"), crate::probes::affine_main_probe),
        doc: "affine_main_probe(): on thread main -> {os_thread_id, whether it is the process's first thread}",
    },
    Native {
        name: "affine_sleep",
        min_args: 1,
        max_args: 1,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_sleep),
        doc: "affine_sleep(ms): holds thread test for ms",
    },
    Native {
        name: "affine_hold",
        min_args: 1,
        max_args: 1,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_hold),
        doc: "affine_hold(key): holds thread test until affine_release(key) (at most 30 s, then :timeout)",
    },
    Native {
        name: "affine_holding",
        min_args: 1,
        max_args: 1,
        imp: Imp::Inline(crate::probes::affine_holding),
        doc: "affine_holding(key): whether affine_hold(key) is holding thread test",
    },
    Native {
        name: "affine_release",
        min_args: 1,
        max_args: 1,
        imp: Imp::Inline(crate::probes::affine_release),
        doc: "affine_release(key): ends affine_hold(key); whether one was holding",
    },
    Native {
        name: "affine_log",
        min_args: 1,
        max_args: 1,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_log),
        doc: "affine_log(v): records v on thread test",
    },
    Native {
        name: "affine_log_take",
        min_args: 0,
        max_args: 0,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_log_take),
        doc: "affine_log_take(): what affine_log recorded on thread test, oldest first (then cleared)",
    },
    Native {
        name: "affine_panic",
        min_args: 1,
        max_args: 1,
        imp: Imp::Affine(Bind::Named("test"), panic_native),
        doc: "affine_panic(msg): panics on thread test (the caller gets :panic)",
    },
    Native {
        name: "affine_res_new",
        min_args: 0,
        max_args: 0,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_res_new),
        doc: "affine_res_new(): an object kept on thread test, as a handle",
    },
    Native {
        name: "affine_res_closes",
        min_args: 0,
        max_args: 0,
        imp: Imp::Affine(Bind::Named("test"), crate::probes::affine_res_closes),
        doc: "affine_res_closes(): how many affine_res_new objects were closed on thread test",
    },
    Native {
        name: "affine_res_use",
        min_args: 1,
        max_args: 1,
        imp: Imp::Affine(Bind::Arg0, crate::probes::affine_res_use),
        doc: "affine_res_use(res): uses the object on its own thread -> true",
    },
    Native {
        name: "affine_res_use_elsewhere",
        min_args: 1,
        max_args: 1,
        imp: Imp::Affine(Bind::Named("test2"), crate::probes::affine_res_use),
        doc: "affine_res_use_elsewhere(res): tries to use the object from thread test2 (:wrong_thread)",
    },
];

/// Every native this build has: [`NATIVES`], and [`TEST_NATIVES`] in builds that have them.
pub fn all() -> impl Iterator<Item = &'static Native> {
    #[cfg(any(test, feature = "test-natives"))]
    let test = TEST_NATIVES.iter();
    #[cfg(not(any(test, feature = "test-natives")))]
    let test = [].iter();
    NATIVES.iter().chain(test)
}

/// The native called `name`, with its identity (its index in [`all`]): an index by the atom's
/// number (atoms are small dense integers and the natives' names are interned together at first
/// use), so a call costs no hashing.
#[inline]
pub fn find(name: Atom) -> Option<(NativeId, &'static Native)> {
    static BY_ATOM: OnceLock<Vec<Option<(NativeId, &'static Native)>>> = OnceLock::new();
    let table = BY_ATOM.get_or_init(|| {
        let mut t = Vec::new();
        for (id, n) in all().enumerate() {
            let i = Atom::new(n.name).index() as usize;
            if t.len() <= i {
                t.resize(i + 1, None);
            }
            t[i] = Some((NativeId(id as u32), n));
        }
        t
    });
    table.get(name.index() as usize).copied().flatten()
}

/// The native called `name`.
pub fn lookup(name: Atom) -> Option<&'static Native> {
    find(name).map(|(_, n)| n)
}

/// The native with this identity (as [`find`] gave it).
pub fn get(id: NativeId) -> Option<&'static Native> {
    let i = id.0 as usize;
    #[cfg(any(test, feature = "test-natives"))]
    if i >= NATIVES.len() {
        return TEST_NATIVES.get(i - NATIVES.len());
    }
    NATIVES.get(i)
}

/// Argument `i`, or `nil` when an optional argument was left out.
pub(crate) fn arg(args: &[Value], i: usize) -> &Value {
    static NIL: Value = Value::Nil;
    args.get(i).unwrap_or(&NIL)
}

/// An int argument.
#[inline]
pub(crate) fn int_arg(what: &str, v: &Value) -> Result<i64, Exception> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(not_an_int(what, other)),
    }
}

// The error paths of the argument helpers are out of line, so the helpers themselves inline
// into every native (a `format!` in the body kept them as calls of ~20 instructions each).
#[cold]
#[inline(never)]
fn not_an_int(what: &str, v: &Value) -> Exception {
    Exception::type_error(format!("{what}: expected an int, got {}", v.type_atom()))
}

#[cold]
#[inline(never)]
fn not_a_size(what: &str, n: i64) -> Exception {
    Exception::badarg(format!("{what}: expected a size >= 0, got {n}"))
}

/// An atom argument (a mode, a whence).
pub(crate) fn atom_arg(what: &str, v: &Value) -> Result<Atom, Exception> {
    match v {
        Value::Atom(a) => Ok(*a),
        other => Err(Exception::type_error(format!("{what} must be an atom, got {}", other.repr()))),
    }
}

/// A non-negative size argument.
#[inline]
pub(crate) fn size_arg(what: &str, v: &Value) -> Result<usize, Exception> {
    match int_arg(what, v)? {
        n if n >= 0 => Ok(n as usize),
        n => Err(not_a_size(what, n)),
    }
}

/// A string argument (bytes must be UTF-8).
pub(crate) fn str_arg<'v>(what: &str, v: &'v Value) -> Result<std::borrow::Cow<'v, str>, Exception> {
    match v {
        Value::Str(s) => Ok(std::borrow::Cow::Borrowed(&**s)),
        Value::Bytes(b) => std::str::from_utf8(b)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|_| Exception::badarg(format!("{what}: expected text, got bytes that are not UTF-8"))),
        other => Err(Exception::type_error(format!("{what}: expected a string, got {}", other.type_atom()))),
    }
}

/// Data to write: the bytes of a string or bytes value.
pub(crate) fn data_arg<'v>(what: &str, v: &'v Value) -> Result<&'v [u8], Exception> {
    match v {
        Value::Str(s) => Ok(s.as_bytes()),
        Value::Bytes(b) => Ok(b),
        other => Err(Exception::type_error(format!(
            "{what}: expected a string or bytes, got {}",
            other.type_atom()
        ))),
    }
}

/// An optional `timeout_ms` argument: `nil` (or absent) for none.
pub(crate) fn timeout_arg(what: &str, v: &Value) -> Result<Option<Duration>, Exception> {
    match v {
        Value::Nil => Ok(None),
        v => Ok(Some(Duration::from_millis(size_arg(what, v)? as u64))),
    }
}

/// Turns an OS error into the exception a program sees (see docs/io.md for the kinds).
pub fn io_error(what: &str, e: &std::io::Error) -> Exception {
    use std::io::ErrorKind::*;
    let kind = match e.kind() {
        ConnectionRefused => "refused",
        ConnectionReset | ConnectionAborted | BrokenPipe => "reset",
        TimedOut => "timeout",
        NotFound => "not_found",
        PermissionDenied => "permission",
        AlreadyExists => "exists",
        AddrInUse => "addr_in_use",
        NotConnected | UnexpectedEof => "closed",
        InvalidInput => "badarg",
        _ => "io",
    };
    Exception::new(Atom::new(kind), format!("{what}: {e}"))
}

/// The `:timeout` exception.
pub(crate) fn timed_out(what: &str, d: Duration) -> Exception {
    Exception::new(atoms::TIMEOUT, format!("{what}: no result within {} ms", d.as_millis()))
}

/// Runs `fut` with an optional deadline.
pub(crate) fn with_timeout<F>(what: &'static str, t: Option<Duration>, fut: F) -> IoFuture
where
    F: Future<Output = NativeResult> + Send + 'static,
{
    match t {
        None => Box::pin(fut),
        Some(d) => Box::pin(async move {
            match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => Err(timed_out(what, d)),
            }
        }),
    }
}

#[cfg(any(test, feature = "test-natives"))]
fn sleep_blocking(_: &Ctx<'_>, args: &[Value]) -> Result<Value, Exception> {
    let ms = int_arg("sleep_blocking", &args[0])?;
    if ms < 0 {
        return Err(Exception::badarg(format!("sleep_blocking: negative time {ms}")));
    }
    std::thread::sleep(Duration::from_millis(ms as u64));
    Ok(Value::Nil)
}

fn resolve(ctx: &Ctx<'_>, args: &[Value]) -> Result<Value, Exception> {
    let host = match &args[0] {
        Value::Str(s) => s.to_string(),
        other => {
            return Err(Exception::type_error(format!(
                "resolve: expected a string, got {}",
                other.type_atom()
            )));
        }
    };
    // A query carries the name to a name server: it is network access (perms rule 2).
    ctx.grants.perms.check_resolve(&host)?;
    // Port 0 only satisfies the API; the addresses are what is wanted.
    let addrs = (host.as_str(), 0)
        .to_socket_addrs()
        .map_err(|e| Exception::new(atoms::NOT_FOUND, format!("resolve {host}: {e}")))?;
    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
    ips.dedup();
    Ok(Value::list(ips.into_iter().map(Value::str).collect()))
}

/// `strip_eol(line)`. A line as `tcp_read_line` gives it ends in "\n" unless the input ended in
/// the middle of it, so a protocol that needs whole lines (HTTP) learns both things in one call:
/// the text, or `nil` for a cut-off line. A bytes line is cut without copying.
fn strip_eol(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    /// The length of the text before the line end, if there is one.
    fn text_len(line: &[u8]) -> Option<usize> {
        let before = line.strip_suffix(b"\n")?;
        Some(before.strip_suffix(b"\r").unwrap_or(before).len())
    }
    Ok(match &args[0] {
        Value::Bytes(b) => text_len(b).map_or(Value::Nil, |n| Value::bytes(b.slice(..n))),
        // "\r" and "\n" are ASCII, so the cut falls on a character boundary.
        Value::Str(s) => text_len(s.as_bytes()).map_or(Value::Nil, |n| Value::str(&s[..n])),
        other => {
            return Err(Exception::type_error(format!(
                "strip_eol: expected a string or bytes, got {}",
                other.type_atom()
            )));
        }
    })
}

fn wall_clock_ms(_: &Ctx<'_>, _: &[Value]) -> Result<Value, Exception> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Ok(Value::Int(d.as_millis() as i64))
}

fn monotonic_us(_: &Ctx<'_>, _: &[Value]) -> Result<Value, Exception> {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    Ok(Value::Int(START.get_or_init(std::time::Instant::now).elapsed().as_micros() as i64))
}

#[cfg(any(test, feature = "test-natives"))]
fn panic_native(_: &Ctx<'_>, args: &[Value]) -> Result<Value, Exception> {
    panic!("{}", args[0]);
}

#[cfg(any(test, feature = "test-natives"))]
fn panic_start(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    Started::Done(panic_native(ctx, args))
}

#[cfg(any(test, feature = "test-natives"))]
fn panic_poll(_: &Ctx<'_>, args: &[Value]) -> Started {
    let msg = args[0].clone();
    Started::Pending(Box::pin(async move {
        // Pending once, so that the panic comes from a later poll, not from the start.
        tokio::task::yield_now().await;
        panic!("{msg}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::Permissions;
    use crate::resource::Quiet;

    fn with_ctx<R>(f: impl FnOnce(&Ctx<'_>) -> R) -> R {
        let io = Io::new(Permissions::all(), Arc::new(Quiet));
        f(&Ctx::new(&io, 1))
    }

    fn call(name: &str, args: &[Value]) -> NativeResult {
        with_ctx(|ctx| lookup(Atom::new(name)).unwrap().call(ctx, args))
    }

    #[test]
    fn lookup_and_arity() {
        assert!(matches!(call("wall_clock_ms", &[]), Ok(Value::Int(t)) if t > 1_600_000_000_000));
        assert_eq!(call("wall_clock_ms", &[Value::Nil]).unwrap_err().kind, atoms::BADARITY);
        let e = call("tcp_read", &[]).unwrap_err();
        assert!(e.msg.to_string().contains("takes 2 to 3 arguments"), "{}", e.msg);
        assert!(lookup(Atom::new("no_such_native")).is_none());
    }

    #[test]
    fn strip_eol_cuts_a_line_end_and_tells_a_cut_off_line() {
        let strip = |v: Value| call("strip_eol", &[v]);
        let b = |s: &[u8]| Value::bytes(s.to_vec());
        assert_eq!(strip(b(b"GET / HTTP/1.1\r\n")), Ok(b(b"GET / HTTP/1.1")));
        assert_eq!(strip(b(b"Host: x\n")), Ok(b(b"Host: x")));
        assert_eq!(strip(b(b"\r\n")), Ok(b(b"")));
        assert_eq!(strip(b(b"\n")), Ok(b(b"")));
        // Only the last line end goes; a "\r" alone is no line end.
        assert_eq!(strip(b(b"a\r\r\n")), Ok(b(b"a\r")));
        assert_eq!(strip(b(b"a\n\n")), Ok(b(b"a\n")));
        for cut_off in [&b"half a li"[..], b"", b"a\r", b"\r"] {
            assert_eq!(strip(b(cut_off)), Ok(Value::Nil), "{cut_off:?}");
        }
        assert_eq!(strip(Value::str("caf\u{e9}\r\n")), Ok(Value::str("caf\u{e9}")));
        assert_eq!(strip(Value::str("caf\u{e9}")), Ok(Value::Nil));
        let e = strip(Value::Int(1)).unwrap_err();
        assert_eq!(
            (e.kind, e.msg.to_string()),
            (atoms::TYPE_ERROR, "strip_eol: expected a string or bytes, got int".into())
        );
    }

    #[test]
    fn a_native_is_found_again_by_its_identity() {
        for n in all() {
            let (id, found) = find(Atom::new(n.name)).unwrap();
            assert_eq!(found.name, n.name);
            assert_eq!(get(id).map(|g| g.name), Some(n.name));
        }
        assert!(get(NativeId(u32::MAX)).is_none());
    }

    #[test]
    fn call_sync_checks_the_arity_as_call_does() {
        let clock = lookup(Atom::new("wall_clock_ms")).unwrap();
        let Imp::Inline(f) = clock.imp else { panic!("wall_clock_ms is inline") };
        with_ctx(|ctx| {
            assert!(matches!(clock.call_sync(f, ctx, &[]), Ok(Value::Int(_))));
            let e = clock.call_sync(f, ctx, &[Value::Nil]).unwrap_err();
            assert_eq!(e.kind, atoms::BADARITY);
            assert_eq!(e.msg.to_string(), clock.call(ctx, &[Value::Nil]).unwrap_err().msg.to_string());
            assert_eq!(e.msg.to_string(), "native wall_clock_ms takes 0 arguments, got 1");
        });
    }

    #[test]
    fn every_native_is_documented_in_docs_io_md() {
        let doc = include_str!("../../docs/io.md");
        for n in all() {
            assert!(doc.contains(&format!("`{}(", n.name)), "docs/io.md does not describe native {}", n.name);
        }
    }

    #[test]
    fn the_test_natives_are_not_in_the_production_table() {
        for name in ["sleep_blocking", "panic", "panic_inline"] {
            assert!(NATIVES.iter().all(|n| n.name != name), "{name} is in NATIVES");
            assert!(TEST_NATIVES.iter().any(|n| n.name == name), "{name} is not in TEST_NATIVES");
            assert!(lookup(Atom::new(name)).is_some(), "{name} is not found in a test build");
        }
    }

    #[test]
    fn resolve_localhost() {
        let ips = call("resolve", &[Value::str("localhost")]).unwrap();
        let Value::List(ips) = &ips else { panic!() };
        assert!(ips.iter().any(|ip| ip == &Value::str("127.0.0.1") || ip == &Value::str("::1")), "{ips:?}");
        assert_eq!(call("resolve", &[Value::Int(1)]).unwrap_err().kind, atoms::TYPE_ERROR);
    }

    #[test]
    fn sleep_blocking_blocks_and_checks_its_argument() {
        let t = std::time::Instant::now();
        call("sleep_blocking", &[Value::Int(20)]).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(call("sleep_blocking", &[Value::Int(-1)]).is_err());
    }

    #[test]
    fn os_errors_map_to_kinds() {
        use std::io::{Error, ErrorKind};
        let kind = |k| io_error("x", &Error::from(k)).kind;
        assert_eq!(kind(ErrorKind::ConnectionRefused), Atom::new("refused"));
        assert_eq!(kind(ErrorKind::BrokenPipe), Atom::new("reset"));
        assert_eq!(kind(ErrorKind::NotFound), atoms::NOT_FOUND);
        assert_eq!(kind(ErrorKind::Other), Atom::new("io"));
    }
}
