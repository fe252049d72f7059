//! Thread-affine natives: what they run on and the objects that must stay on one thread.
//!
//! Some libraries want every call on one OS thread: a GUI toolkit or an OpenGL context (the
//! process's first thread), a SQLite connection (not `Sync`: one thread per connection is its
//! natural home). A native of kind [`crate::natives::Imp::Affine`] names its thread with a
//! [`Bind`]; the runtime (vm-sched, which owns every thread and task) keeps the *executors*,
//! one OS thread each, and runs the call there while the caller waits. This module is the part
//! the natives see:
//!
//! 1. An [`Executor`] is a queue of [`Job`]s served in order by one thread. vm-sched implements
//!    it; the natives only post to it (a close, below) through `Arc<dyn Executor>`.
//! 2. Each executor thread *enters* this module once ([`enter`]), so a native running there
//!    knows its executor ([`current`]) and has a thread-local store of objects.
//! 3. [`adopt`] puts an object (which need not be `Send`) into the current thread's store and
//!    returns a `Value::Res` handle whose payload is an [`AffineRes`]: the executor and the
//!    object's slot, never the object itself. Any actor holding the handle may pass it to the
//!    natives bound to that thread; no ownership protocol applies (as with shared tables).
//! 4. [`with`] lends a native the object behind a handle: only on the object's own executor
//!    thread. Anywhere else it raises `:wrong_thread` (a native bound elsewhere, or one that is
//!    not affine at all); a closed object raises `:closed`.
//! 5. **The close runs on the object's thread.** [`close`] (a native on that thread) drops the
//!    object there. When the last handle goes away first, wherever that happens (an actor's
//!    register overwritten on a tokio worker, a message dropped), [`AffineRes`]'s `Drop` posts
//!    the close to the object's executor as a job; it runs in order after the calls queued
//!    before it. The handle holds the executor, so the thread outlives every object on it.
//! 6. When an executor thread ends, [`leave`] drops whatever its store still holds, on that
//!    thread.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use vm_core::{Atom, Exception, Handle, Value};

/// How an affine native chooses its thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// The VM's executor of this name, made at its first use (`"main"` is the process's first
    /// thread, when the runtime was given it).
    Named(&'static str),
    /// The executor of the affine resource passed as the first argument.
    Arg0,
    /// A new executor of its own, its thread named after this: for a native that opens an
    /// object which then lives on that thread (`sqlite_open`). The thread ends when no object
    /// on it is left.
    Fresh(&'static str),
}

/// A unit of work for an executor's thread.
pub struct Job {
    /// The calling actor's pid (0 for the runtime's own jobs, such as a close).
    pub caller: u64,
    /// What it runs, for people (a native's name, `close`).
    pub what: &'static str,
    /// The work.
    pub run: Box<dyn FnOnce() + Send>,
}

/// One executor: a thread that serves its jobs in order (step 1 of the module docs).
pub trait Executor: Any + Send + Sync {
    /// Its name (`test`, `main`, `sqlite-3`).
    fn name(&self) -> &str;
    /// A number telling executors apart (no two live executors share one).
    fn id(&self) -> u64;
    /// Queues a job; it runs after those queued before it. A job posted to an executor that
    /// has stopped is dropped without running.
    fn post(&self, job: Job);
}

/// The payload of an affine resource's handle (step 3): which executor holds the object, and
/// where.
pub struct AffineRes {
    executor: Arc<dyn Executor>,
    slot: usize,
    label: String,
    closed: AtomicBool,
}

impl AffineRes {
    /// Its executor.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// What it is, for people (`sqlite connection data/kv.db`).
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for AffineRes {
    fn drop(&mut self) {
        // Step 5: the object is dropped on its own thread, never here.
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = self.slot;
        let id = self.executor.id();
        if current_id() == Some(id) {
            drop_slot(slot);
        } else {
            self.executor.post(Job { caller: 0, what: "close", run: Box::new(move || drop_slot(slot)) });
        }
    }
}

/// The objects of the executor running on this thread (steps 2 and 6).
#[derive(Default)]
struct Local {
    /// This thread's executor: weak, so the thread does not keep itself alive.
    executor: Option<(u64, Weak<dyn Executor>)>,
    slots: Vec<Option<Box<dyn Any>>>,
    free: Vec<usize>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Step 2: the calling thread serves `executor` from now on. Call once, first thing, on the
/// executor's thread.
pub fn enter(executor: Weak<dyn Executor>, id: u64) {
    LOCAL.with(|l| l.borrow_mut().executor = Some((id, executor)));
}

/// Step 6: the executor on this thread has stopped: every object still here is dropped, here.
pub fn leave() {
    let slots = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.executor = None;
        l.free.clear();
        std::mem::take(&mut l.slots)
    });
    // Dropped outside the borrow: an object's drop may itself drop handles of this thread.
    drop(slots);
}

/// The executor this thread serves, if it is an executor thread.
pub fn current() -> Option<Arc<dyn Executor>> {
    LOCAL.with(|l| l.borrow().executor.as_ref().and_then(|(_, w)| w.upgrade()))
}

fn current_id() -> Option<u64> {
    LOCAL.try_with(|l| l.borrow().executor.as_ref().map(|(id, _)| *id)).ok().flatten()
}

fn drop_slot(slot: usize) {
    let obj = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let obj = l.slots.get_mut(slot).and_then(Option::take);
        if obj.is_some() {
            l.free.push(slot);
        }
        obj
    });
    drop(obj);
}

/// Step 3: keeps `obj` on this (executor) thread and returns its handle, with a fresh `id`
/// (from `Io::next_handle_id`) and `label` for people. Outside an executor thread it raises
/// `:wrong_thread`.
pub fn adopt<T: Any>(id: u64, obj: T, label: String) -> Result<Value, Exception> {
    let Some(executor) = current() else {
        return Err(wrong_thread("an affine object can only be made on an executor thread"));
    };
    let slot = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let boxed: Box<dyn Any> = Box::new(obj);
        match l.free.pop() {
            Some(i) => {
                l.slots[i] = Some(boxed);
                i
            }
            None => {
                l.slots.push(Some(boxed));
                l.slots.len() - 1
            }
        }
    });
    let res = AffineRes { executor, slot, label, closed: AtomicBool::new(false) };
    Ok(Value::Res(Handle::with_payload(id, Arc::new(res))))
}

/// The affine resource behind `v`, if it is one.
pub fn resource(v: &Value) -> Option<&AffineRes> {
    match v {
        Value::Res(h) => h.payload().and_then(|p| (**p).downcast_ref::<AffineRes>()),
        _ => None,
    }
}

/// Step 4: runs `f` on the object of type `T` behind `v` (`what` names the native, `kind` the
/// object expected: "a sqlite connection").
pub fn with<T: Any, R>(
    what: &str,
    kind: &str,
    v: &Value,
    f: impl FnOnce(&mut T) -> R,
) -> Result<R, Exception> {
    let Some(res) = resource(v) else {
        return Err(Exception::type_error(format!("{what}: expected {kind}, got {}", v.repr())));
    };
    if current_id() != Some(res.executor.id()) {
        return Err(wrong_thread(&format!(
            "{what}: {} lives on thread {} and can only be used by natives bound to it",
            v.repr(),
            res.executor.name()
        )));
    }
    if res.closed.load(Ordering::Acquire) {
        return Err(closed(what, v));
    }
    // Taken out of the store while `f` runs, so that `f` may use the store itself (adopt
    // another object, drop a handle).
    let taken = LOCAL.with(|l| l.borrow_mut().slots.get_mut(res.slot).and_then(Option::take));
    let Some(obj) = taken else { return Err(closed(what, v)) };
    // Put back by a guard, so that a panic in `f` (a `:panic` for the caller) keeps the object.
    let mut lent = Lent { slot: res.slot, obj: Some(obj) };
    match lent.obj.as_mut().and_then(|o| o.downcast_mut::<T>()) {
        Some(t) => Ok(f(t)),
        None => Err(Exception::type_error(format!("{what}: expected {kind}, got {}", res.label))),
    }
}

/// An object lent out of the store by [`with`]; put back when dropped.
struct Lent {
    slot: usize,
    obj: Option<Box<dyn Any>>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let obj = self.obj.take();
        LOCAL.with(|l| {
            if let Some(s) = l.borrow_mut().slots.get_mut(self.slot) {
                *s = obj;
            }
        });
    }
}

/// Step 5: closes the object behind `v` now, on this thread (it must be the object's own);
/// `false` if it was closed already.
pub fn close(what: &str, v: &Value) -> Result<bool, Exception> {
    let Some(res) = resource(v) else {
        return Err(Exception::type_error(format!("{what}: expected an affine resource, got {}", v.repr())));
    };
    if current_id() != Some(res.executor.id()) {
        return Err(wrong_thread(&format!("{what}: {} lives on thread {}", v.repr(), res.executor.name())));
    }
    if res.closed.swap(true, Ordering::AcqRel) {
        return Ok(false);
    }
    drop_slot(res.slot);
    Ok(true)
}

/// The `:wrong_thread` exception.
pub fn wrong_thread(msg: &str) -> Exception {
    Exception::new(Atom::new("wrong_thread"), msg.to_string())
}

fn closed(what: &str, v: &Value) -> Exception {
    Exception::new(Atom::new("closed"), format!("{what}: {} is closed", v.repr()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    /// A minimal executor for these tests: a thread draining a channel.
    struct TestExec {
        id: u64,
        tx: Mutex<Option<mpsc::Sender<Job>>>,
    }

    impl Executor for TestExec {
        fn name(&self) -> &str {
            "unit"
        }
        fn id(&self) -> u64 {
            self.id
        }
        fn post(&self, job: Job) {
            if let Some(tx) = &*self.tx.lock().unwrap() {
                let _ = tx.send(job);
            }
        }
    }

    fn start(id: u64) -> (Arc<TestExec>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>();
        let exec = Arc::new(TestExec { id, tx: Mutex::new(Some(tx)) });
        let weak: Weak<dyn Executor> = Arc::downgrade(&(exec.clone() as Arc<dyn Executor>));
        let thread = std::thread::spawn(move || {
            enter(weak, id);
            for job in rx {
                (job.run)();
            }
            leave();
        });
        (exec, thread)
    }

    fn on<R: Send + 'static>(exec: &TestExec, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        exec.post(Job { caller: 1, what: "t", run: Box::new(move || drop(tx.send(f()))) });
        rx.recv().unwrap()
    }

    /// Counts drops and on which thread they ran.
    struct Probe(Arc<AtomicUsize>, std::thread::ThreadId);
    impl Drop for Probe {
        fn drop(&mut self) {
            assert_eq!(std::thread::current().id(), self.1, "closed on another thread");
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn objects_stay_on_their_thread_and_close_there() {
        let (a, ta) = start(101);
        let (b, tb) = start(102);
        let drops = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        let h = on(&a, move || adopt(7, Probe(d, std::thread::current().id()), "probe".into()).unwrap());
        assert_eq!(resource(&h).unwrap().label(), "probe");
        // Lent on its own thread; refused on another executor's and on a plain thread.
        let h2 = h.clone();
        assert_eq!(on(&a, move || with::<Probe, _>("use", "a probe", &h2, |_| 1)).unwrap(), 1);
        let h2 = h.clone();
        let e = on(&b, move || with::<Probe, _>("use", "a probe", &h2, |_| 1)).unwrap_err();
        assert_eq!(e.kind, Atom::new("wrong_thread"));
        assert_eq!(
            with::<Probe, _>("use", "a probe", &h, |_| 1).unwrap_err().kind,
            Atom::new("wrong_thread")
        );
        // The last handle dropped here: the close runs on `a`'s thread.
        drop(h);
        on(&a, || ());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // An explicit close, then a use of the closed object.
        let d = drops.clone();
        let h = on(&a, move || adopt(8, Probe(d, std::thread::current().id()), "p".into()).unwrap());
        let h2 = h.clone();
        assert!(on(&a, move || close("close", &h2)).unwrap());
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        let h2 = h.clone();
        assert_eq!(
            on(&a, move || with::<Probe, _>("use", "a probe", &h2, |_| 1)).unwrap_err().kind,
            Atom::new("closed")
        );
        drop(h);
        assert_eq!(drops.load(Ordering::SeqCst), 2, "closed once only");
        // Objects left when the thread stops are dropped there.
        let d = drops.clone();
        let kept = on(&a, move || adopt(9, Probe(d, std::thread::current().id()), "p".into()).unwrap());
        // Forget the handle's close job (the test executor stops below), keep its object.
        std::mem::forget(kept);
        for e in [a, b] {
            e.tx.lock().unwrap().take();
        }
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert_eq!(adopt(1, 0u8, "x".into()).unwrap_err().kind, Atom::new("wrong_thread"));
    }
}
