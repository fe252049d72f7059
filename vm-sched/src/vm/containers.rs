//! Containers (see `container`): starting and ending them, finding them, checking what crosses
//! between them, and answering `publish` and `lookup` (vm-io's `services`) from them.

use super::{Shared, SpawnHooks, Vm};
use crate::cell::ActorCell;
use crate::container::{Container, ContainerEnd, ContainerSpec};
use crate::exit::ExitReason;
use crate::mailbox::Signal;
use crate::sync::{Ordering, lock};
use std::sync::Arc;
use vm_core::{Closure, Exception, Pid, SpawnOpts, Value, atoms};

/// Containers (see `container`): starting and ending them, finding them, their services.
impl Vm {
    /// The container of actors started from outside (`vm run`'s `main`, the REPL).
    pub fn default_container(&self) -> &Arc<Container> {
        &self.shared.default_container
    }

    /// The container named `name` (the newest of that name), or the default one for `main`.
    pub fn container(&self, name: &str) -> Option<Arc<Container>> {
        if name == self.shared.default_container.name() {
            return Some(self.shared.default_container.clone());
        }
        lock(&self.shared.containers).iter().find(|c| c.name() == name).cloned()
    }

    /// The containers started by name, in the order they were first started.
    pub fn containers(&self) -> Vec<Arc<Container>> {
        lock(&self.shared.containers).clone()
    }

    /// Starts a container: its root actor runs `main` of the spec's module with the spec's
    /// arguments. A running container of the same name is an error; an ended one is replaced.
    pub fn start_container(&self, spec: ContainerSpec) -> Result<Arc<Container>, String> {
        if spec.name.is_empty()
            || spec.name.contains('/')
            || spec.name == self.shared.default_container.name()
        {
            return Err(format!("{:?} cannot name a container (non-empty, no '/', not \"main\")", spec.name));
        }
        crate::run::check_main(&spec.module).map_err(|e| format!("container {}: {e}", spec.name))?;
        let container = self.add_container(spec)?;
        let spec = &container.spec;
        let main = spec.module.func_index("main").ok_or("no main")?;
        let args = match spec.module.funcs[main as usize].arity {
            0 => vec![],
            _ => vec![Value::list(spec.args.iter().map(|a| Value::str(a.as_str())).collect())],
        };
        let fun = Closure { func: main, env: vec![] };
        // The `report` hook records the root before the task starts, so even an instant exit
        // ends the container.
        match self.spawn_in(
            &container,
            spec.module.clone(),
            &fun,
            args,
            SpawnOpts::default(),
            None,
            SpawnHooks::default(),
        ) {
            Ok(_) => Ok(container),
            Err(e) => {
                container.end();
                Err(format!("container {}: {e}", container.name()))
            }
        }
    }

    /// Makes a container from `spec` with no actor and lists it, replacing an ended one of the
    /// same name; a running one of that name is an error.
    fn add_container(&self, spec: ContainerSpec) -> Result<Arc<Container>, String> {
        let container =
            Arc::new(Container::new(spec, Some(self.shared.output.clone()), self.shared.io.console.clone()));
        let mut all = lock(&self.shared.containers);
        match all.iter().position(|c| c.name() == container.name()) {
            Some(i) if all[i].status() == crate::container::Status::Running => {
                return Err(format!("container {} is already running", container.name()));
            }
            Some(i) => all[i] = container.clone(),
            None => all.push(container.clone()),
        }
        Ok(container)
    }

    /// A container being restored from a snapshot (`snapshot::restore_containers`): made and
    /// listed, with no actor yet; its actors, root and status are set by the restore. The
    /// snapshot's names are unique (its check), so it replaces nothing that runs.
    pub(crate) fn install_container(&self, spec: ContainerSpec) -> Arc<Container> {
        let name = spec.name.clone();
        self.add_container(spec).unwrap_or_else(|e| {
            // Only a VM that already runs containers could get here; a restore is into a fresh one.
            tracing::warn!("restoring container {name}: {e}");
            self.container(&name).unwrap_or_else(|| self.shared.default_container.clone())
        })
    }

    /// Ends a container as if its root had been killed with `reason` (the REPL's `stop`).
    pub fn stop_container(&self, name: &str, reason: Value) -> Result<(), String> {
        let c = self.container(name).ok_or_else(|| format!("no container named {name}"))?;
        match c.root() {
            Some(root) if c.status() == crate::container::Status::Running => {
                c.stopped.store(true, Ordering::SeqCst);
                self.signal(root, Signal::Kill(reason));
                Ok(())
            }
            _ => Err(format!("container {name} is not running")),
        }
    }

    /// Where each container's end is reported from now on (see [`ContainerEnd`]); a second
    /// call replaces the first receiver.
    pub fn container_ends(&self) -> tokio::sync::mpsc::UnboundedReceiver<ContainerEnd> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(&self.shared.ends) = Some(tx);
        rx
    }

    /// Ends `container` (its root ended with `reason`): withdraws its names, kills its other
    /// actors and reports the end (see `container`, rule 6).
    pub(crate) fn end_container(&self, container: &Arc<Container>, reason: &ExitReason) {
        if !container.end() {
            return;
        }
        let root = container.root.load(Ordering::SeqCst);
        for cell in self.cells() {
            if Arc::ptr_eq(&cell.container, container) && cell.pid.0 != root {
                self.signal_cell(&cell, Signal::Kill(Value::atom("shutdown")));
            }
        }
        let value = reason.value();
        let abnormal = !matches!(&value, Value::Atom(a) if *a == atoms::NORMAL);
        tracing::debug!(container = container.name(), reason = %value.repr(), "container ended");
        if let Some(tx) = lock(&self.shared.ends).as_ref() {
            let stopped = container.stopped.load(Ordering::SeqCst);
            let _ = tx.send(ContainerEnd { container: container.clone(), reason: value, abnormal, stopped });
        }
    }

    /// A message from `from` to `to` may not carry what rule 4 of `container` refuses: the
    /// exception to raise, if it does.
    pub(crate) fn check_crossing(from: &ActorCell, to: &ActorCell, msg: &Value) -> Result<(), Exception> {
        if Arc::ptr_eq(&from.container, &to.container) {
            return Ok(());
        }
        match crate::container::crossing_refusal(msg) {
            None => Ok(()),
            Some(what) => Err(Exception::badarg(format!(
                "send: {what} cannot cross from container {} to container {} (only data, pids and \
                 channels cross; nothing was sent)",
                from.container.name(),
                to.container.name()
            ))),
        }
    }
}

/// `publish` and `lookup` (vm-io's `services`), answered from the containers.
pub(super) struct Services(pub(super) std::sync::Weak<Shared>);

impl vm_io::services::ServiceHook for Services {
    fn publish(&self, caller: u64, name: &str, value: Value) -> vm_io::natives::NativeResult {
        let vm = Vm { shared: self.0.upgrade().ok_or_else(|| Exception::badarg("the VM has ended"))? };
        let cell =
            vm.lookup(Pid(caller)).ok_or_else(|| Exception::badarg("publish: the caller has ended"))?;
        cell.container.publish(name, value);
        Ok(Value::Nil)
    }

    fn lookup(&self, caller: u64, container: &str, name: &str) -> vm_io::natives::NativeResult {
        let vm = Vm { shared: self.0.upgrade().ok_or_else(|| Exception::badarg("the VM has ended"))? };
        let cell = vm.lookup(Pid(caller)).ok_or_else(|| Exception::badarg("lookup: the caller has ended"))?;
        if !cell.container.may_look_up(container) {
            return Err(Exception::new(
                vm_io::perms::permission_atom(),
                format!(
                    "lookup of {container}/{name} denied: container {} needs \"allow_lookup\": [\"{container}\"]",
                    cell.container.name()
                ),
            ));
        }
        let value = vm.container(container).and_then(|c| c.published(name)).unwrap_or(Value::Nil);
        // A value handed to another container crosses a boundary as a message does (rule 4).
        if container != cell.container.name()
            && let Some(what) = crate::container::crossing_refusal(&value)
        {
            return Err(Exception::badarg(format!(
                "lookup: {container}/{name} is {what}, which cannot cross to container {} (only data, \
                 pids and channels cross)",
                cell.container.name()
            )));
        }
        Ok(value)
    }
}
