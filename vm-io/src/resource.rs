//! Resources (sockets, listeners, files) and who owns them.
//!
//! A resource is a [`Resource`] carried as the payload of a `Value::Res` handle, so using one
//! needs no table lookup, and the OS object is closed when the last handle goes away.
//!
//! Ownership protocol (all of it here; vm-sched calls the three entry points):
//! 1. [`Io::adopt`]: a native that opens something makes a resource owned by the calling actor
//!    and records a weak reference under that actor in the ownership table.
//! 2. [`Io::transfer`]: when an actor sends a message or passes spawn arguments, every resource
//!    in the value that it owns changes owner to the receiver (a compare-and-swap on the owner
//!    field), and the receiver's table entry gets a weak reference. From then on the old owner's
//!    uses fail with `:not_owner`.
//! 3. [`Io::release`]: when an actor ends, its table entry is removed and every resource in it
//!    that it still owns is closed. Resources it handed away are left alone (their owner field
//!    names someone else).
//!
//! Invariant: only the owner uses a resource, and an actor runs one native at a time, so an OS
//! object is never used by two operations at once; futures in flight hold an `Arc` of the object
//! (not of the [`Resource`]), so closing drops the resource's reference and the descriptor
//! closes when the last operation holding it ends.
//!
//! The table is only consulted when a resource exists ([`Io::live`] counts open ones), so
//! programs without I/O pay one relaxed load per send and per exit.

use crate::natives::Ctx;
use crate::perms::Permissions;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::net::{TcpStream, UdpSocket};
use vm_core::{Atom, Exception, Handle, Value};

/// Where `print` and `stdout_write` go, supplied by the runtime (so that both share one buffer
/// and stay in order), and where `stderr_write` goes.
pub trait Console: Send + Sync {
    /// Writes bytes to standard output, in order with `print` lines.
    fn stdout(&self, bytes: &[u8]);
    /// Writes bytes to standard error.
    fn stderr(&self, bytes: &[u8]);
}

/// The OS object behind a resource.
pub enum Obj {
    /// A TCP listener.
    Listener(crate::net::Listener),
    /// A TCP connection with its read buffer.
    Tcp(Conn),
    /// A UDP socket.
    Udp(UdpSocket),
    /// An open file (used only on the blocking pool).
    File(Mutex<std::fs::File>),
}

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::Listener(_) => "tcp listener",
            Obj::Tcp(_) => "tcp connection",
            Obj::Udp(_) => "udp socket",
            Obj::File(_) => "file",
        }
    }
}

/// A TCP connection: the stream and the bytes read but not yet consumed (what follows a line).
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// What has been read and not yet consumed, behind one lock.
    pub rbuf: Mutex<ReadBuf>,
}

/// A connection's read side: the bytes read past the last consumed item, and the RESP command
/// `tcp_read_resp` has read part of (one lock for both, taken once per read).
#[derive(Default)]
pub struct ReadBuf {
    /// Bytes read past the last consumed item.
    pub buf: BytesMut,
    /// The RESP command `tcp_read_resp` has read part of (see [`crate::resp`]).
    pub resp: crate::resp::Partial,
}

/// One resource: its id, its owner and, until closed, its OS object.
pub struct Resource {
    pub(crate) id: u64,
    owner: AtomicU64,
    pub(crate) obj: Mutex<Option<Arc<Obj>>>,
    /// A short description for introspection (`tcp connection 127.0.0.1:5000`).
    pub(crate) label: String,
    io: Weak<Io>,
    /// How to open it again in a restored VM (see `reopen`).
    pub(crate) reopen: crate::reopen::Reopen,
    /// Set on a resource a restore could not open again: why. Using it raises `:lost`.
    pub(crate) lost: Option<String>,
}

impl Resource {
    /// The owning actor's pid.
    pub fn owner(&self) -> u64 {
        self.owner.load(Ordering::Acquire)
    }

    /// What it is, for people.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Closes it; `false` if it was already closed.
    pub fn close(&self) -> bool {
        let obj = lock(&self.obj).take();
        if obj.is_some() {
            if let Some(io) = self.io.upgrade() {
                io.live.fetch_sub(1, Ordering::Relaxed);
            }
            true
        } else {
            false
        }
    }

    fn is_open(&self) -> bool {
        lock(&self.obj).is_some()
    }

    /// The exception for using it when it is not open: `:lost` if a restore could not open it
    /// again, else `:closed`.
    #[cold]
    fn gone(&self, what: &str, v: &Value) -> Exception {
        match &self.lost {
            Some(why) => Exception::new(
                Atom::new("lost"),
                format!("{what}: {} ({}) was lost: {why}", v.repr(), self.label),
            ),
            None => Exception::new(Atom::new("closed"), format!("{what}: {} is closed", v.repr())),
        }
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        self.close();
    }
}

/// Shared I/O state of one VM: permissions, the ownership table, standard input.
pub struct Io {
    /// What the program may do when no container says otherwise (`vm run`'s flags; a restore
    /// reopens resources with these).
    pub grants: Arc<crate::perms::Grants>,
    /// The answers granted host names are pinned to (`perms` rule 1).
    pub(crate) pins: crate::perms::Pins,
    /// Standard output and error.
    pub console: Arc<dyn Console>,
    next_id: AtomicU64,
    live: AtomicUsize,
    owned: Vec<Mutex<HashMap<u64, Vec<Weak<Resource>>>>>,
    /// Standard input and the bytes read past the last line.
    pub(crate) stdin: tokio::sync::Mutex<crate::stdio::StdinState>,
    /// Takes snapshots for `vm_snapshot` (installed by the runtime).
    pub(crate) snapshots: std::sync::OnceLock<Arc<dyn crate::request::SnapshotHook>>,
    /// The VM's membership in a cluster (installed by the runtime; see `cluster`).
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn crate::cluster::ClusterHook>>,
    /// Answers `publish` and `lookup` (installed by the runtime).
    pub(crate) services: std::sync::OnceLock<Arc<dyn crate::services::ServiceHook>>,
}

const SHARDS: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, so a panic elsewhere while a lock
    // was held is no reason to stop doing I/O.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Io {
    /// The I/O state for a VM with these permissions.
    pub fn new(perms: Permissions, console: Arc<dyn Console>) -> Arc<Io> {
        // Natives only run with an `Io`: from here on their caught panics print nothing.
        crate::natives::install_quiet_panic_hook();
        Arc::new(Io {
            grants: Arc::new(crate::perms::Grants::of(perms)),
            pins: Default::default(),
            console,
            next_id: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            owned: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            stdin: tokio::sync::Mutex::new(Default::default()),
            snapshots: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            services: std::sync::OnceLock::new(),
        })
    }

    /// How many resources are open.
    #[inline]
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn shard(&self, pid: u64) -> MutexGuard<'_, HashMap<u64, Vec<Weak<Resource>>>> {
        lock(&self.owned[(pid as usize) % SHARDS])
    }

    fn record(&self, pid: u64, r: &Arc<Resource>) {
        let mut shard = self.shard(pid);
        let list = shard.entry(pid).or_default();
        // Forget resources that are gone or were handed away once the list doubles, so an
        // actor that accepts connections and hands each one off keeps a short list.
        if list.len() >= 16 && list.len().is_power_of_two() {
            list.retain(|w| w.upgrade().is_some_and(|r| r.owner() == pid && r.is_open()));
        }
        list.push(Arc::downgrade(r));
    }

    /// A fresh id for a handle (resources and shared tables share one numbering, so two handles
    /// are equal only when they name the same object).
    pub fn next_handle_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Step 1 of the ownership protocol: wraps `obj` as a resource owned by `pid`. A restored
    /// VM cannot open it again (see [`Io::adopt_as`]).
    pub fn adopt(self: &Arc<Io>, pid: u64, obj: Obj, label: String) -> Value {
        self.adopt_as(pid, obj, label, crate::reopen::Reopen::Never)
    }

    /// [`Io::adopt`], recording how a restored VM opens it again.
    pub fn adopt_as(
        self: &Arc<Io>,
        pid: u64,
        obj: Obj,
        label: String,
        reopen: crate::reopen::Reopen,
    ) -> Value {
        let id = self.next_handle_id();
        let label = format!("{} {label}", obj.kind());
        self.install(id, pid, Some(obj), label, reopen, None)
    }

    /// Makes resource `id` owned by `pid`, open (`obj`) or not; a resource that is not open
    /// is closed, or lost when `lost` says why.
    pub(crate) fn install(
        self: &Arc<Io>,
        id: u64,
        pid: u64,
        obj: Option<Obj>,
        label: String,
        reopen: crate::reopen::Reopen,
        lost: Option<String>,
    ) -> Value {
        let open = obj.is_some();
        let r = Arc::new(Resource {
            id,
            owner: AtomicU64::new(pid),
            obj: Mutex::new(obj.map(Arc::new)),
            label,
            io: Arc::downgrade(self),
            reopen,
            lost,
        });
        if open {
            self.live.fetch_add(1, Ordering::Relaxed);
            self.record(pid, &r);
        }
        Value::Res(Handle::with_payload(id, r))
    }

    /// Makes the next handle id `next` (a restored VM goes on from the snapshot's counter).
    pub fn set_next_handle_id(&self, next: u64) {
        self.next_id.store(next, Ordering::Relaxed);
    }

    /// Step 2: hands every resource in `v` owned by `from` to `to`. Inlined into every send:
    /// with no resource open, or a scalar message, it is a load and a test or two; only a walk
    /// is a call.
    #[inline]
    pub fn transfer(&self, v: &Value, from: u64, to: u64) {
        if self.live() == 0 || from == to || !(v.is_container() || matches!(v, Value::Res(_))) {
            return;
        }
        self.transfer_in(v, from, to);
    }

    /// Walks `v` with a work list (a value may nest deeper than the stack could recurse).
    #[inline(never)]
    fn transfer_in(&self, v: &Value, from: u64, to: u64) {
        for v in v.walk() {
            if let Value::Res(h) = v
                && let Some(r) = resource_of(h)
                && r.owner.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                self.record(to, &r);
            }
        }
    }

    /// Step 3: closes everything `pid` still owns; call when the actor has ended.
    pub fn release(&self, pid: u64) {
        if self.live() == 0 {
            return;
        }
        let Some(list) = self.shard(pid).remove(&pid) else { return };
        for r in list.iter().filter_map(Weak::upgrade) {
            if r.owner() == pid {
                r.close();
            }
        }
    }

    /// The open resources `pid` owns, as `(id, label)` (for `vm repl`'s `info`).
    pub fn owned_by(&self, pid: u64) -> Vec<(u64, String)> {
        let shard = self.shard(pid);
        let mut out: Vec<(u64, String)> = shard
            .get(&pid)
            .into_iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .filter(|r| r.owner() == pid && r.is_open())
            .map(|r| (r.id, r.label.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The resource a handle carries, if it is one.
pub fn resource_of(h: &Handle) -> Option<Arc<Resource>> {
    h.payload().and_then(|p| p.clone().downcast::<Resource>().ok())
}

/// The resource a handle carries, borrowed (no reference-count traffic on the hot path).
pub fn resource_ref(h: &Handle) -> Option<&Resource> {
    h.payload().and_then(|p| (**p).downcast_ref::<Resource>())
}

/// An open resource's OS object, borrowed under the resource's lock (from [`Ctx::obj_ref`]).
/// Only the owner uses a resource, so the lock is contended only by a `close` racing it.
pub struct ObjRef<'v>(MutexGuard<'v, Option<Arc<Obj>>>);

impl ObjRef<'_> {
    /// A reference of its own, for an operation that outlives the borrow (a future).
    pub fn arc(&self) -> Arc<Obj> {
        self.0.clone().expect("an ObjRef is made only for an open resource")
    }
}

impl std::ops::Deref for ObjRef<'_> {
    type Target = Obj;
    fn deref(&self) -> &Obj {
        self.0.as_deref().expect("an ObjRef is made only for an open resource")
    }
}

impl Ctx<'_> {
    /// Borrows the object of type `T` behind handle `v` (a shared table, say), with no reference
    /// count traffic and no owner check: for objects that any actor holding the handle may use.
    /// `kind` names the expected object in the error ("a table").
    pub fn with_obj<'v, T: std::any::Any>(what: &str, kind: &str, v: &'v Value) -> Result<&'v T, Exception> {
        let found = match v {
            Value::Res(h) => h.payload().and_then(|p| (**p).downcast_ref::<T>()),
            _ => None,
        };
        found.ok_or_else(|| Exception::type_error(format!("{what}: expected {kind}, got {}", v.repr())))
    }

    /// The open OS object behind argument `v`, checking that it is a resource, that the caller
    /// owns it and that it is open.
    pub fn obj(&self, what: &str, v: &Value) -> Result<Arc<Obj>, Exception> {
        self.obj_ref(what, v).map(|o| o.arc())
    }

    /// Like [`Ctx::obj`], but borrowed under the resource's lock: no reference-count traffic,
    /// for a native that completes at once (it takes [`ObjRef::arc`] only if it must wait).
    pub fn obj_ref<'v>(&self, what: &str, v: &'v Value) -> Result<ObjRef<'v>, Exception> {
        let Value::Res(h) = v else {
            return Err(Exception::type_error(format!("{what}: expected a resource, got {}", v.type_atom())));
        };
        let Some(r) = resource_ref(h) else {
            return Err(Exception::badarg(format!("{what}: {} is not an I/O resource", v.repr())));
        };
        let owner = r.owner();
        if owner != self.pid {
            return Err(Exception::new(
                Atom::new("not_owner"),
                format!("{what}: {} belongs to actor <{owner}>", v.repr()),
            ));
        }
        let guard = lock(&r.obj);
        if guard.is_none() {
            return Err(r.gone(what, v));
        }
        Ok(ObjRef(guard))
    }

    /// Like [`Ctx::obj`] but for a resource that may already be closed (`close`).
    pub fn owned_resource(&self, what: &str, v: &Value) -> Result<Arc<Resource>, Exception> {
        let Value::Res(h) = v else {
            return Err(Exception::type_error(format!("{what}: expected a resource, got {}", v.type_atom())));
        };
        let r = resource_of(h)
            .ok_or_else(|| Exception::badarg(format!("{what}: {} is not an I/O resource", v.repr())))?;
        if r.owner() != self.pid {
            return Err(Exception::new(
                Atom::new("not_owner"),
                format!("{what}: {} belongs to actor <{}>", v.repr(), r.owner()),
            ));
        }
        Ok(r)
    }

    /// Wraps a new OS object as a resource owned by the caller.
    pub fn adopt(&self, obj: Obj, label: String) -> Value {
        self.io.adopt(self.pid, obj, label)
    }
}

/// A console that discards everything (for tests).
#[cfg(test)]
pub(crate) struct Quiet;

#[cfg(test)]
impl Console for Quiet {
    fn stdout(&self, _: &[u8]) {}
    fn stderr(&self, _: &[u8]) {}
}

/// A connection's description: its peer.
pub fn conn_label(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(String::new, |p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_obj() -> Obj {
        Obj::File(Mutex::new(tempfile_handle()))
    }

    fn tempfile_handle() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("vm-io-res-{}", std::process::id()));
        std::fs::File::create(&path).unwrap()
    }

    #[test]
    fn ownership_moves_and_release_closes_only_what_is_still_owned() {
        let io = Io::new(Permissions::all(), Arc::new(Quiet));
        let a = io.adopt(1, file_obj(), "a".into());
        let b = io.adopt(1, file_obj(), "b".into());
        assert_eq!(io.live(), 2);
        let ctx1 = Ctx::new(&io, 1);
        let ctx2 = Ctx::new(&io, 2);
        assert!(ctx1.obj("t", &a).is_ok());
        // Hand `b` (inside a message) to actor 2.
        io.transfer(&Value::tuple(vec![Value::Int(0), Value::list(vec![b.clone()])]), 1, 2);
        assert_eq!(ctx1.obj("t", &b).err().unwrap().kind, Atom::new("not_owner"));
        assert!(ctx2.obj("t", &b).is_ok());
        assert_eq!(io.owned_by(1).len(), 1);
        // Actor 1 ends: `a` closes, `b` (now actor 2's) stays open.
        io.release(1);
        assert_eq!(ctx1.obj("t", &a).err().unwrap().kind, Atom::new("closed"));
        assert!(ctx2.obj("t", &b).is_ok());
        assert_eq!(io.live(), 1);
        // Dropping the last handle closes too.
        drop(b);
        assert_eq!(io.live(), 0);
    }

    #[test]
    fn a_resource_at_the_bottom_of_a_deep_message_changes_owner() {
        let io = Io::new(Permissions::all(), Arc::new(Quiet));
        let r = io.adopt(1, file_obj(), "r".into());
        let deep =
            (0..100_000).fold(Value::list(vec![Value::Int(0), r.clone()]), |v, _| Value::list(vec![v]));
        // On a small stack: a walk recursing once per level would overflow it.
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(s, || io.transfer(&deep, 1, 2))
                .unwrap();
        });
        assert!(Ctx::new(&io, 2).obj("t", &r).is_ok());
        assert_eq!(io.owned_by(1).len(), 0);
    }
}
