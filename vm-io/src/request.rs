//! A program asking for a snapshot of its own VM: the native `vm_snapshot(path)`.
//!
//! Taking a snapshot is the runtime's work (vm-sched pauses every actor), so the runtime
//! installs a [`SnapshotHook`] in the VM's [`Io`]; the native checks the write grant for the
//! path and asks the hook, which takes and writes the snapshot on a task of its own (the calling
//! actor is one of the actors paused) and answers when the file is written. The call returns
//! `:ok`; in a VM resumed from that very snapshot it returns `:resumed` instead, so a program
//! can tell the two apart, as `fork` does.

use crate::natives::{Ctx, Started, str_arg};
use crate::resource::Io;
use std::path::PathBuf;
use std::sync::Arc;
use vm_core::{Atom, Exception, Value};

/// What the runtime offers for [`vm_snapshot`]: take a snapshot, write it to the path, and say
/// how that went.
pub trait SnapshotHook: Send + Sync {
    /// Starts taking a snapshot to `path`; the receiver gets the outcome.
    fn request(&self, path: PathBuf) -> tokio::sync::oneshot::Receiver<Result<(), String>>;
}

impl Io {
    /// Installs the runtime's hook (once; later calls are ignored).
    pub fn set_snapshot_hook(&self, hook: Arc<dyn SnapshotHook>) {
        let _ = self.snapshots.set(hook);
    }
}

/// `vm_snapshot(path)`: see the module docs.
pub(crate) fn vm_snapshot(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let path = match str_arg("vm_snapshot", &args[0]) {
        Ok(p) => p.into_owned(),
        Err(e) => return Started::Done(Err(e)),
    };
    // The grant is checked by name and by where links lead, as for the file natives; the file
    // itself is written by `durable` beside the path.
    let granted = crate::confine::with_path(
        &ctx.grants.perms,
        &path,
        &[crate::confine::Access::Write],
        "vm_snapshot",
        |_| Ok(()),
    );
    if let Err(e) = granted {
        return Started::Done(Err(e));
    }
    let Some(hook) = ctx.io.snapshots.get() else {
        return Started::Done(Err(Exception::new(
            Atom::new("unsupported"),
            "vm_snapshot: this VM cannot take snapshots",
        )));
    };
    let done = hook.request(PathBuf::from(&path));
    Started::Pending(Box::pin(async move {
        match done.await {
            Ok(Ok(())) => Ok(Value::Atom(vm_core::atoms::OK)),
            Ok(Err(e)) => Err(Exception::new(Atom::new("snapshot"), format!("vm_snapshot {path}: {e}"))),
            Err(_) => {
                Err(Exception::new(Atom::new("snapshot"), format!("vm_snapshot {path}: the runtime gave up")))
            }
        }
    }))
}
