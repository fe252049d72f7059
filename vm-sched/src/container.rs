//! Containers: several programs in one VM, each with its own grants, limits, names and restart
//! type (docs/containers.md is the user's view).
//!
//! A [`Container`] is a record the actors of one program share: its name, the module its root
//! runs, its grants (vm-io's [`Grants`]: permissions and environment), its limits, its restart
//! type, the containers it may look up, its root actor and the services it has published. One
//! runtime and one scheduler serve every container. The rules:
//! 1. **Membership.** Every actor belongs to exactly one container, fixed at spawn: an actor an
//!    actor spawns belongs to its parent's container (the cell holds an `Arc` to it), so a child
//!    never holds other grants than its parent's container — there is no call that widens
//!    them. An actor started from outside (the REPL, `vm run`'s `main`, a restored snapshot)
//!    joins the VM's default container, [`Vm::default_container`], whose grants are the command
//!    line's; `vm run FILE` is a VM with that one container and nothing else.
//! 2. **Grants.** A native sees the *calling actor's* container's grants (`natives::Ctx`), never
//!    the VM's.
//! 3. **Limits.** `max_actors` counts the container's live actors (spawning past it raises
//!    `:limit`, as the VM's own limit does); `max_mailbox` is the default of every actor's
//!    `:max_mailbox` in the container (a `spawnx` option still overrides it).
//! 4. **Boundaries.** A message from an actor of one container to an actor of another may hold
//!    plain data, pids and channels; a function value, a resource or a shared table anywhere in
//!    it makes the send raise `:badarg`, and nothing is delivered ([`crossing_refusal`]). The
//!    host checks this only when it looks the receiver up: the cached receiver of the send fast
//!    path is always in the sender's container, so the fast path pays nothing.
//! 5. **Names.** Each container has its own table of published services (`publish`); another
//!    container reaches one with `lookup("container/name")` only if its `allow_lookup` names
//!    that container. Pids are global, so links and monitors work across containers.
//! 6. **Lifecycle.** A container with a root actor ends when the root ends: every other actor of
//!    the container is killed (their resources close as each one ends), its published names
//!    are withdrawn, and the end ([`ContainerEnd`]) is reported to whoever supervises the VM
//!    (`vm up`, the REPL), which applies the restart type: `permanent` (its end ends the VM,
//!    status 1 after a crash), `transient` (restarted after an abnormal end, within an intensity
//!    limit) or `temporary` (reported, stays down). The default container has no root.

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use std::collections::HashMap;
use std::sync::Arc;
use vm_core::{Module, Pid, Value};
use vm_io::Grants;

/// What happens when a container ends (OTP's application restart types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// Its end ends the VM (with status 1 if it crashed).
    Permanent,
    /// Restarted after an abnormal end (a crash, a kill), within the restart intensity.
    Transient,
    /// Reported and left down (the default).
    #[default]
    Temporary,
}

impl Restart {
    /// The manifest's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }

    /// Parses the manifest's spelling.
    pub fn parse(text: &str) -> Option<Restart> {
        match text {
            "permanent" => Some(Restart::Permanent),
            "transient" => Some(Restart::Transient),
            "temporary" => Some(Restart::Temporary),
            _ => None,
        }
    }
}

/// A container's limits (see the module docs, rule 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Live actors at most.
    pub max_actors: Option<usize>,
    /// The default `:max_mailbox` of its actors.
    pub max_mailbox: Option<usize>,
}

/// Everything a container is started from (a manifest entry, the REPL's `start`).
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// Its name: unique in the VM, no `/`.
    pub name: String,
    /// The module its root runs `main` of.
    pub module: Arc<Module>,
    /// Where the module came from, for people (`containers` in the REPL).
    pub source: String,
    /// `main`'s argument list.
    pub args: Vec<String>,
    /// What its actors may do.
    pub grants: Grants,
    /// The containers whose published names it may look up.
    pub allow_lookup: Vec<String>,
    /// Its limits.
    pub limits: Limits,
    /// Its restart type.
    pub restart: Restart,
    /// How often a transient container may be restarted.
    pub intensity: Intensity,
    /// The wakeup priority of its actors (a `spawnx` option overrides it).
    pub priority: vm_core::Priority,
}

/// The restart intensity of a transient container (OTP's): more than `max_restarts` restarts
/// within `period_ms` and it stays down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
}

impl Default for Intensity {
    fn default() -> Intensity {
        Intensity { max_restarts: 3, period_ms: 5_000 }
    }
}

/// A container's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Its root runs.
    Running,
    /// Its root ended; its actors are being (or have been) killed.
    Ended,
}

/// One container of a running VM; see the module docs.
pub struct Container {
    /// What it was started from.
    pub spec: ContainerSpec,
    /// Its grants, shared with the natives its actors call.
    pub grants: Arc<Grants>,
    /// Its actors' default priority (copied from the spec, for the cell).
    pub(crate) priority: vm_core::Priority,
    /// `[name] `, put in front of each line its actors print; `None` for the default container
    /// (`vm run`'s output is the program's own).
    pub(crate) tag: Option<Box<str>>,
    /// Its live actors.
    pub(crate) actors: AtomicUsize,
    /// The root actor's pid (0: none, as in the default container).
    pub(crate) root: AtomicU64,
    ended: AtomicBool,
    /// Its published services.
    published: Mutex<HashMap<String, Value>>,
}

impl Container {
    /// A container started from `spec`, with no actor yet; `tagged` puts its name in front of
    /// its output lines.
    pub(crate) fn new(spec: ContainerSpec, tagged: bool) -> Container {
        Container {
            grants: Arc::new(spec.grants.clone()),
            priority: spec.priority,
            tag: tagged.then(|| format!("[{}] ", spec.name).into_boxed_str()),
            spec,
            actors: AtomicUsize::new(0),
            root: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its root actor, if it has one.
    pub fn root(&self) -> Option<Pid> {
        Some(Pid(self.root.load(Ordering::SeqCst))).filter(|p| p.0 != 0)
    }

    /// How many of its actors are alive.
    pub fn live(&self) -> usize {
        self.actors.load(Ordering::SeqCst)
    }

    /// Running or ended.
    pub fn status(&self) -> Status {
        if self.ended.load(Ordering::SeqCst) { Status::Ended } else { Status::Running }
    }

    /// Marks it ended; true for the first caller only.
    pub(crate) fn end(&self) -> bool {
        let first = !self.ended.swap(true, Ordering::SeqCst);
        if first {
            lock(&self.published).clear();
        }
        first
    }

    /// Publishes `value` as `name` (replacing an earlier one).
    pub(crate) fn publish(&self, name: &str, value: Value) {
        if !self.ended.load(Ordering::SeqCst) {
            lock(&self.published).insert(name.to_string(), value);
        }
    }

    /// Everything it has published (roots for orphan detection: a published channel can be
    /// looked up again by any actor allowed to).
    pub(crate) fn published_values(&self) -> Vec<Value> {
        lock(&self.published).values().cloned().collect()
    }

    /// What it published as `name`.
    pub(crate) fn published(&self, name: &str) -> Option<Value> {
        lock(&self.published).get(name).cloned()
    }

    /// The names it has published, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.published).keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether an actor of this container may look up names of `other`.
    pub(crate) fn may_look_up(&self, other: &str) -> bool {
        other == self.name() || self.spec.allow_lookup.iter().any(|n| n == other || n == "*")
    }
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("name", &self.name()).field("status", &self.status()).finish()
    }
}

/// How a container ended, for its supervisor.
#[derive(Clone, Debug)]
pub struct ContainerEnd {
    /// The container.
    pub container: Arc<Container>,
    /// Its root's exit reason (`:normal` when `main` returned).
    pub reason: Value,
    /// Whether that is an abnormal end (a crash, a kill, a reason other than `:normal`).
    pub abnormal: bool,
}

/// The first function value, resource or shared table inside `v`, by kind (`"a function
/// value"`, `"a resource"`), or `None` if `v` may cross to another container (rule 4). Walks
/// tuples, lists and maps with a stack of its own (no recursion: a message may nest deeply);
/// channels and pids are capabilities that may cross, and are not looked into.
pub(crate) fn crossing_refusal(v: &Value) -> Option<&'static str> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Fun(_) => return Some("a function value"),
            Value::Res(h) => {
                let table = h.payload().is_some_and(|p| p.is::<vm_io::table::Table>());
                return Some(if table { "a shared table" } else { "a resource" });
            }
            Value::Tuple(items) | Value::List(items) => stack.extend(items.iter()),
            Value::Map(m) => {
                for (k, x) in m.iter() {
                    stack.push(k);
                    stack.push(x);
                }
            }
            _ => {}
        }
    }
    None
}
