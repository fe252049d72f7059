//! Test natives for the affine kind (built only for tests and with the `test-natives`
//! feature): they report which OS thread they ran on and keep per-thread records, so tests can
//! see that calls stay on their thread, run one at a time, and that closes happen there.

use crate::affine;
use crate::natives::{Ctx, NativeResult, int_arg};
use std::cell::{Cell, RefCell};
use std::time::Duration;
use vm_core::{Exception, Value};

thread_local! {
    static CALLS: Cell<i64> = const { Cell::new(0) };
    static BUSY: Cell<bool> = const { Cell::new(false) };
    static LOG: RefCell<Vec<Value>> = const { RefCell::new(Vec::new()) };
    static CLOSES: Cell<i64> = const { Cell::new(0) };
}

/// The OS thread id of the calling thread (Linux's `gettid`, read from `/proc/thread-self`).
pub fn os_thread_id() -> i64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()))
        .unwrap_or(-1)
}

/// `affine_probe()` → `{os_thread_id, n}`: `n` counts the calls on this thread, 1 upwards. A
/// call that finds another still running on its thread raises `:overlap`.
pub(crate) fn affine_probe(_: &Ctx<'_>, _: &[Value]) -> NativeResult {
    if BUSY.replace(true) {
        return Err(Exception::new(vm_core::Atom::new("overlap"), "two affine calls at once on one thread"));
    }
    let n = CALLS.get() + 1;
    CALLS.set(n);
    // Long enough that two calls running at once on different threads would be seen.
    std::thread::sleep(Duration::from_micros(50));
    BUSY.set(false);
    Ok(Value::tuple(vec![Value::Int(os_thread_id()), Value::Int(n)]))
}

/// `affine_echo(v)` → `v`: nothing but the round trip to thread `test`.
pub(crate) fn affine_echo(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    Ok(args[0].clone())
}

/// `affine_main_probe()` → `{os_thread_id, is_the_process_main_thread}`.
pub(crate) fn affine_main_probe(_: &Ctx<'_>, _: &[Value]) -> NativeResult {
    let tid = os_thread_id();
    Ok(Value::tuple(vec![Value::Int(tid), Value::Bool(tid == i64::from(std::process::id()))]))
}

/// `affine_sleep(ms)`: holds the thread for `ms`.
pub(crate) fn affine_sleep(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let ms = int_arg("affine_sleep", &args[0])?.max(0);
    std::thread::sleep(Duration::from_millis(ms as u64));
    Ok(Value::Nil)
}

/// Holds of thread `test` (`affine_hold`) by key: whether each was released. Shared by every VM
/// in the process, so a test uses a key of its own (a reference).
static HOLDS: std::sync::Mutex<Vec<(Value, bool)>> = std::sync::Mutex::new(Vec::new());
/// Wakes holds when one is released.
static RELEASED: std::sync::Condvar = std::sync::Condvar::new();
/// How long a hold waits for its release at most, so that a failed test does not hang.
const HOLD_AT_MOST: Duration = Duration::from_secs(30);

fn holds() -> std::sync::MutexGuard<'static, Vec<(Value, bool)>> {
    HOLDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `affine_hold(key)`: holds thread `test` until `affine_release(key)` (a test's condition
/// instead of a guessed sleep); `:timeout` if no release comes within 30 s.
pub(crate) fn affine_hold(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let key = &args[0];
    let deadline = std::time::Instant::now() + HOLD_AT_MOST;
    let mut g = holds();
    g.push((key.clone(), false));
    loop {
        let i = g.iter().position(|(k, _)| k == key).expect("a hold stays listed until it ends");
        if g[i].1 {
            g.swap_remove(i);
            return Ok(Value::Nil);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            g.swap_remove(i);
            return Err(Exception::new(vm_core::atoms::TIMEOUT, "affine_hold: not released within 30 s"));
        }
        g = RELEASED.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// `affine_holding(key)` → whether an `affine_hold(key)` is running (inline: it answers while
/// thread `test` is held).
pub(crate) fn affine_holding(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    Ok(Value::Bool(holds().iter().any(|(k, released)| k == &args[0] && !released)))
}

/// `affine_release(key)` → whether a running `affine_hold(key)` was released.
pub(crate) fn affine_release(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let mut g = holds();
    let mut found = false;
    for (_, released) in g.iter_mut().filter(|(k, _)| k == &args[0]) {
        found |= !*released;
        *released = true;
    }
    drop(g);
    RELEASED.notify_all();
    Ok(Value::Bool(found))
}

/// `affine_log(v)`: records `v` on this thread.
pub(crate) fn affine_log(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    LOG.with(|l| l.borrow_mut().push(args[0].clone()));
    Ok(Value::Nil)
}

/// `affine_log_take()` → what `affine_log` recorded on this thread, oldest first; clears it.
pub(crate) fn affine_log_take(_: &Ctx<'_>, _: &[Value]) -> NativeResult {
    Ok(Value::list(LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))))
}

/// An affine object that counts its closes on the thread that closes it.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        CLOSES.set(CLOSES.get() + 1);
    }
}

/// `affine_res_new()` → a handle on an object kept on this thread.
pub(crate) fn affine_res_new(ctx: &Ctx<'_>, _: &[Value]) -> NativeResult {
    affine::adopt(ctx.io.next_handle_id(), Counted, "probe".into())
}

/// `affine_res_closes()` → how many probe objects were closed on this thread.
pub(crate) fn affine_res_closes(_: &Ctx<'_>, _: &[Value]) -> NativeResult {
    Ok(Value::Int(CLOSES.get()))
}

/// `affine_res_use(res)`: uses the object (true), wherever this native is bound.
pub(crate) fn affine_res_use(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    affine::with("affine_res_use", "a probe", &args[0], |_: &mut Counted| Value::Bool(true))
}
