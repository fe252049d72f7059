//! Containers' services: the natives `publish(name, chan_or_pid)` and
//! `lookup("container/name")`.
//!
//! Which container an actor belongs to, and what each container has published, is the
//! runtime's knowledge (vm-sched's `container`), so the runtime installs a [`ServiceHook`] in
//! the VM's [`Io`] and these natives only check their arguments and ask it:
//! 1. `publish` accepts a name (a string or an atom, without `/`) and a pid or a channel;
//!    anything else is `:badarg` (a function, a resource or a table would hand another container
//!    authority it was not granted, the rule a message across containers follows).
//! 2. `lookup` accepts `"container/name"`; it answers `nil` while nothing is published under
//!    that name, and raises `:permission` naming `allow_lookup` when the caller's container was
//!    not granted lookups of that container (its own container needs no grant).
//! 3. Without a hook (a VM built outside vm-sched) both raise `:unsupported`.

use crate::natives::{Ctx, NativeResult};
use crate::resource::Io;
use std::sync::Arc;
use vm_core::{Atom, Exception, Value};

/// What the runtime offers for `publish` and `lookup`.
pub trait ServiceHook: Send + Sync {
    /// Publishes `value` (a pid or a channel) as `name` in the container of actor `caller`.
    fn publish(&self, caller: u64, name: &str, value: Value) -> NativeResult;
    /// The value published as `name` in container `container`, as actor `caller` may see it.
    fn lookup(&self, caller: u64, container: &str, name: &str) -> NativeResult;
}

impl Io {
    /// Installs the runtime's hook (once; later calls are ignored).
    pub fn set_service_hook(&self, hook: Arc<dyn ServiceHook>) {
        let _ = self.services.set(hook);
    }
}

fn hook<'a>(ctx: &'a Ctx<'_>, what: &str) -> Result<&'a Arc<dyn ServiceHook>, Exception> {
    ctx.io
        .services
        .get()
        .ok_or_else(|| Exception::new(Atom::new("unsupported"), format!("{what}: this VM has no containers")))
}

/// The text of a name argument: a string or an atom.
fn name_arg(what: &str, v: &Value) -> Result<String, Exception> {
    match v {
        Value::Str(s) => Ok(s.to_string()),
        Value::Atom(a) => Ok(a.name().to_string()),
        other => Err(Exception::badarg(format!(
            "{what}: a name must be a string or an atom, not {}",
            other.repr()
        ))),
    }
}

pub(crate) fn publish(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let name = name_arg("publish", &args[0])?;
    if name.is_empty() || name.contains('/') {
        return Err(Exception::badarg(format!(
            "publish: {name:?} is not a service name (non-empty, no '/')"
        )));
    }
    match &args[1] {
        Value::Pid(_) | Value::Chan(_) => {}
        other => {
            return Err(Exception::badarg(format!(
                "publish: only a pid or a channel can be published, not {}",
                other.repr()
            )));
        }
    }
    hook(ctx, "publish")?.publish(ctx.pid, &name, args[1].clone())
}

pub(crate) fn lookup(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let path = name_arg("lookup", &args[0])?;
    let Some((container, name)) = path.split_once('/').filter(|(c, n)| !c.is_empty() && !n.is_empty()) else {
        return Err(Exception::badarg(format!("lookup: {path:?} is not of the form \"container/name\"")));
    };
    hook(ctx, "lookup")?.lookup(ctx.pid, container, name)
}
