//! The cluster natives: `node`, `nodes`, `node_of`, `spawn_on`, `monitor_node` and the global
//! names (`global_register`, `global_whereis`, `global_unregister`).
//!
//! Membership in a cluster is the runtime's (vm-sched, through vm-dist): a VM started with
//! `--node NAME --cluster URL` installs a [`ClusterHook`] in its [`Io`], and these natives ask
//! it. The rules:
//! 1. Without a hook the VM is no node of a cluster: `node()` and `node_of(pid)` answer
//!    `:nonode`, `nodes()` an empty list, and the natives that need a peer raise
//!    `:noconnection` (no node can be reached), the global names `:unsupported`.
//! 2. `spawn_on` and the global names wait for an answer from another node or from the NATS
//!    server: they are async natives (the caller is soft-blocked, so an interrupt cancels the
//!    wait). The others answer from the runtime's own state, at once.
//! 3. The hook owns the semantics (which errors, what is recorded); the natives only check and
//!    convert their arguments.

use crate::natives::{Ctx, IoFuture, NativeResult, Started, atom_arg};
use crate::resource::Io;
use std::sync::Arc;
use vm_core::{Atom, Exception, Pid, Value, atoms};

/// What a clustered runtime offers the natives (see the module docs).
pub trait ClusterHook: Send + Sync {
    /// This node's name.
    fn node(&self) -> Atom;
    /// The names of the live peers.
    fn nodes(&self) -> Vec<Atom>;
    /// The node of `pid` (`None` for a slot this VM never gave out).
    fn node_of(&self, pid: Pid) -> Option<Atom>;
    /// Starts `func(args)` on node `node` for actor `caller` with spawn options `opts` (a map,
    /// as `spawnx` takes); resolves to the pid, or `{pid, ref}` when monitoring.
    fn spawn_on(
        &self,
        caller: Pid,
        node: Atom,
        func: Atom,
        args: Vec<Value>,
        opts: Option<&Value>,
    ) -> Started;
    /// Subscribes (`on`) or unsubscribes `caller` to `{:nodedown, node}` / `{:nodeup, node}`.
    fn monitor_node(&self, caller: Pid, node: Atom, on: bool);
    /// Registers `pid` as `name` cluster-wide.
    fn global_register(&self, name: Atom, pid: Pid) -> IoFuture;
    /// The pid registered as `name` cluster-wide, or nil.
    fn global_whereis(&self, name: Atom) -> IoFuture;
    /// Removes `name` if an actor of this node holds it.
    fn global_unregister(&self, name: Atom) -> IoFuture;
}

impl Io {
    /// Installs the runtime's cluster membership (once; later calls are ignored).
    pub fn set_cluster(&self, hook: Arc<dyn ClusterHook>) {
        let _ = self.cluster.set(hook);
    }

    /// The cluster membership, if the VM is a node of a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterHook>> {
        self.cluster.get()
    }
}

/// The name `node()` answers outside a cluster.
fn nonode() -> Atom {
    Atom::new("nonode")
}

/// The exception of a native that needs a peer, in a VM that is no node of a cluster.
fn not_clustered(what: &str) -> Exception {
    Exception::new(
        Atom::new("noconnection"),
        format!("{what}: this VM is not a node of a cluster (start it with --node NAME --cluster URL)"),
    )
}

/// A global name: an atom, or a string taken as the atom of that name (so that programs can
/// make names at run time).
fn name_arg(what: &str, v: &Value) -> Result<Atom, Exception> {
    match v {
        Value::Str(s) => Ok(Atom::new(s)),
        v => atom_arg(what, v),
    }
}

fn pid_arg(what: &str, v: &Value) -> Result<Pid, Exception> {
    match v {
        Value::Pid(p) => Ok(*p),
        x => Err(Exception::new(atoms::TYPE_ERROR, format!("{what}: expected a pid, got {}", x.type_atom()))),
    }
}

/// `node()`: this node's name, or `:nonode`.
pub(crate) fn node(ctx: &Ctx<'_>, _args: &[Value]) -> NativeResult {
    Ok(Value::Atom(ctx.io.cluster().map_or_else(nonode, |c| c.node())))
}

/// `nodes()`: the live peers' names.
pub(crate) fn nodes(ctx: &Ctx<'_>, _args: &[Value]) -> NativeResult {
    let names = ctx.io.cluster().map(|c| c.nodes()).unwrap_or_default();
    Ok(Value::list(names.into_iter().map(Value::Atom).collect()))
}

/// `node_of(pid)`: the node `pid` lives on.
pub(crate) fn node_of(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let pid = pid_arg("node_of", &args[0])?;
    let name = match ctx.io.cluster() {
        Some(c) => c.node_of(pid).unwrap_or_else(nonode),
        None => nonode(),
    };
    Ok(Value::Atom(name))
}

/// `spawn_on(node, func, args, [opts])`.
pub(crate) fn spawn_on(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let checked = (|| {
        let node = atom_arg("spawn_on", &args[0])?;
        let func = atom_arg("spawn_on", &args[1])?;
        let list = match &args[2] {
            Value::List(l) => l.to_vec(),
            x => {
                return Err(Exception::new(
                    atoms::TYPE_ERROR,
                    format!("spawn_on: expected a list of arguments, got {}", x.type_atom()),
                ));
            }
        };
        let hook = ctx.io.cluster().ok_or_else(|| not_clustered("spawn_on"))?;
        Ok((hook, node, func, list))
    })();
    match checked {
        Ok((hook, node, func, list)) => {
            let opts = args.get(3).filter(|v| !matches!(v, Value::Nil));
            hook.spawn_on(Pid(ctx.pid), node, func, list, opts)
        }
        Err(e) => Started::Done(Err(e)),
    }
}

/// `monitor_node(node, flag)`.
pub(crate) fn monitor_node(ctx: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let node = atom_arg("monitor_node", &args[0])?;
    let hook = ctx.io.cluster().ok_or_else(|| not_clustered("monitor_node"))?;
    hook.monitor_node(Pid(ctx.pid), node, args[1].truthy());
    Ok(Value::Nil)
}

fn global(ctx: &Ctx<'_>, what: &str) -> Result<Arc<dyn ClusterHook>, Exception> {
    ctx.io.cluster().cloned().ok_or_else(|| {
        Exception::new(atoms::UNSUPPORTED, format!("{what}: this VM is not a node of a cluster"))
    })
}

/// `global_register(name, [pid])`: the caller, or `pid`, as `name` cluster-wide.
pub(crate) fn global_register(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    let r = name_arg("global_register", &args[0]).and_then(|name| {
        let pid = match args.get(1) {
            None | Some(Value::Nil) => Pid(ctx.pid),
            Some(v) => pid_arg("global_register", v)?,
        };
        Ok((global(ctx, "global_register")?, name, pid))
    });
    match r {
        Ok((hook, name, pid)) => Started::Pending(hook.global_register(name, pid)),
        Err(e) => Started::Done(Err(e)),
    }
}

/// `global_whereis(name)`.
pub(crate) fn global_whereis(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    match name_arg("global_whereis", &args[0]).and_then(|n| Ok((global(ctx, "global_whereis")?, n))) {
        Ok((hook, name)) => Started::Pending(hook.global_whereis(name)),
        Err(e) => Started::Done(Err(e)),
    }
}

/// `global_unregister(name)`.
pub(crate) fn global_unregister(ctx: &Ctx<'_>, args: &[Value]) -> Started {
    match name_arg("global_unregister", &args[0]).and_then(|n| Ok((global(ctx, "global_unregister")?, n))) {
        Ok((hook, name)) => Started::Pending(hook.global_unregister(name)),
        Err(e) => Started::Done(Err(e)),
    }
}
