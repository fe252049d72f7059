//! Native functions callable from bytecode by name (`native dst, :name, args, n`).
//!
//! Each native is marked with how it may be run:
//! - [`Kind::Inline`]: quick and never waits; the runtime calls it on the actor's worker thread.
//! - [`Kind::Blocking`]: may block its thread (a syscall with no async form, a long
//!   computation); the runtime runs it on tokio's blocking pool while the actor is *real-blocked*,
//!   so it never stalls other actors. A panic inside becomes an exception in the calling actor
//!   only.
//!
//! The registry is a static table: adding a native is adding a row. Natives receive their
//! arguments as a slice and return a value or an exception; they know nothing of actors.

use std::net::ToSocketAddrs;
use std::time::Duration;
use vm_core::{Atom, Exception, Value, atoms};

/// How the runtime must run a native; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// On the actor's thread.
    Inline,
    /// On the blocking pool, with the actor real-blocked.
    Blocking,
}

/// A native function.
pub type NativeFn = fn(&[Value]) -> Result<Value, Exception>;

/// One registry row.
#[derive(Clone, Copy, Debug)]
pub struct Native {
    /// The name bytecode calls it by.
    pub name: &'static str,
    /// How it must be run.
    pub kind: Kind,
    /// How many arguments it takes.
    pub arity: usize,
    /// What it does.
    pub f: NativeFn,
    /// One line for people (`vm repl`'s help).
    pub doc: &'static str,
}

/// Every native, by name.
pub static NATIVES: &[Native] = &[
    Native {
        name: "sleep_blocking",
        kind: Kind::Blocking,
        arity: 1,
        f: sleep_blocking,
        doc: "sleep_blocking(ms): blocks its thread for ms milliseconds (for tests of real blocking)",
    },
    Native {
        name: "resolve",
        kind: Kind::Blocking,
        arity: 1,
        f: resolve,
        doc: "resolve(host): the host's addresses as a list of strings (the system resolver)",
    },
    Native {
        name: "wall_clock_ms",
        kind: Kind::Inline,
        arity: 0,
        f: wall_clock_ms,
        doc: "wall_clock_ms(): milliseconds since the Unix epoch",
    },
    Native {
        name: "monotonic_us",
        kind: Kind::Inline,
        arity: 0,
        f: monotonic_us,
        doc: "monotonic_us(): microseconds on a monotonic clock (for measuring latency)",
    },
    Native {
        name: "panic",
        kind: Kind::Blocking,
        arity: 1,
        f: panic_native,
        doc: "panic(msg): panics inside a native (to test that a panic costs only the caller)",
    },
];

/// The native called `name`.
pub fn lookup(name: Atom) -> Option<&'static Native> {
    let name = name.name();
    NATIVES.iter().find(|n| n.name == &*name)
}

/// Calls `n` with `args` after checking the count.
pub fn call(n: &Native, args: &[Value]) -> Result<Value, Exception> {
    if args.len() != n.arity {
        return Err(Exception::new(
            atoms::BADARITY,
            format!("native {} takes {} arguments, got {}", n.name, n.arity, args.len()),
        ));
    }
    (n.f)(args)
}

fn int_arg(name: &str, v: &Value) -> Result<i64, Exception> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(Exception::type_error(format!("{name}: expected an int, got {}", other.type_atom()))),
    }
}

fn sleep_blocking(args: &[Value]) -> Result<Value, Exception> {
    let ms = int_arg("sleep_blocking", &args[0])?;
    if ms < 0 {
        return Err(Exception::badarg(format!("sleep_blocking: negative time {ms}")));
    }
    std::thread::sleep(Duration::from_millis(ms as u64));
    Ok(Value::Nil)
}

fn resolve(args: &[Value]) -> Result<Value, Exception> {
    let host = match &args[0] {
        Value::Str(s) => s.to_string(),
        other => {
            return Err(Exception::type_error(format!(
                "resolve: expected a string, got {}",
                other.type_atom()
            )));
        }
    };
    // Port 0 only satisfies the API; the addresses are what is wanted.
    let addrs = (host.as_str(), 0)
        .to_socket_addrs()
        .map_err(|e| Exception::new(atoms::NOT_FOUND, format!("resolve {host}: {e}")))?;
    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
    ips.dedup();
    Ok(Value::list(ips.into_iter().map(Value::str).collect()))
}

fn wall_clock_ms(_: &[Value]) -> Result<Value, Exception> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Ok(Value::Int(d.as_millis() as i64))
}

fn monotonic_us(_: &[Value]) -> Result<Value, Exception> {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    Ok(Value::Int(START.get_or_init(std::time::Instant::now).elapsed().as_micros() as i64))
}

fn panic_native(args: &[Value]) -> Result<Value, Exception> {
    panic!("{}", args[0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_arity() {
        let n = lookup(Atom::new("wall_clock_ms")).unwrap();
        assert!(matches!(call(n, &[]), Ok(Value::Int(t)) if t > 1_600_000_000_000));
        assert_eq!(call(n, &[Value::Nil]).unwrap_err().kind, atoms::BADARITY);
        assert!(lookup(Atom::new("no_such_native")).is_none());
    }

    #[test]
    fn resolve_localhost() {
        let n = lookup(Atom::new("resolve")).unwrap();
        let Value::List(ips) = call(n, &[Value::str("localhost")]).unwrap() else { panic!() };
        assert!(ips.iter().any(|ip| ip == &Value::str("127.0.0.1") || ip == &Value::str("::1")), "{ips:?}");
        assert_eq!(call(n, &[Value::Int(1)]).unwrap_err().kind, atoms::TYPE_ERROR);
    }

    #[test]
    fn sleep_blocking_blocks_and_checks_its_argument() {
        let n = lookup(Atom::new("sleep_blocking")).unwrap();
        let t = std::time::Instant::now();
        call(n, &[Value::Int(20)]).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(call(n, &[Value::Int(-1)]).is_err());
    }
}
