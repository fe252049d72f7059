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
//!    `:max_mailbox` in the container and `max_heap` of every actor's `:max_heap` (a `spawnx`
//!    option still overrides either).
//! 4. **Boundaries.** A message from an actor of one container to an actor of another may hold
//!    plain data, pids and channels; a function value, a resource or a shared table anywhere in
//!    it makes the send raise `:badarg`, and nothing is delivered ([`crossing_refusal`]). The
//!    host checks this only when it looks the receiver up: the cached receiver of the send fast
//!    path is always in the sender's container, so the fast path pays nothing. The same holds
//!    for values a published name hands to another container (`lookup`). Channels:
//!    1. A channel does not know who will receive what is sent on it, so the rule is kept per
//!       channel: a channel that has reached a second container is *shared* (its flag is set
//!       by the walk that checks a crossing message or lookup, and by a send of the channel on
//!       a shared channel — [`crossing_refusal`] marks every channel it meets). Never unset.
//!    2. A `csend`, `ctrysend` or `select` send of a value holding a function, a resource or a
//!       table on a shared channel raises `:badarg` before anything is sent, whoever would
//!       receive it ([`check_chan_send`]); channels inside the value become shared too.
//!    3. The check runs where every send is tried (`chan::waits`: `try_one`, `try_or_park`,
//!       and the case lists of `try_now` and `start_select`). Scalars are not looked at, and a
//!       compound value costs a flag load unless the channel is shared, so sends within one
//!       container pay next to nothing.
//!    4. What a channel holds when it crosses (buffered values, parked senders' values) was put
//!       in while no other container could reach it, so no send checked it: the crossing walk
//!       checks it too ([`Channel::share`](crate::chan::Channel::share)), and a channel holding a
//!       function, a resource or a table does not cross.
//!    5. **The crossing race.** A send checks before it takes the channel's lock, so a
//!       crossing may come between its check and its enqueue. The channel keeps its shared
//!       flag under its lock too, set in the same critical section in which the crossing
//!       reads what it holds (4). Every send carries whether it was *checked* (a scalar, or a
//!       value walked with the channel shared: [`check_chan_send`]); under the lock, a send
//!       that was not and finds the channel shared enqueues nothing and is sent back
//!       ([`crate::chan::Fired::Unchecked`]) to be checked ([`check_shared_chan_send`]) and
//!       tried again (a blocking select in the driver runs its instruction again). So every
//!       value enqueued either went in before the crossing's read (and was seen by it) or was
//!       checked with the channel shared. The cost within one container is the test of a
//!       bool under a lock already held.
//! 5. **Names.** Each container has its own registry (`register`, `whereis`, a send to a name):
//!    two containers may both register `:db`, each meaning its own actor. An actor is registered
//!    only in its own container's registry (registering an actor of another container raises
//!    `:badarg`), so its name leaves with it. The registry of the default container is the one
//!    the REPL and remote name sends from other nodes see. Each container also has its own table
//!    of published services (`publish`); another container reaches one with
//!    `lookup("container/name")` only if its `allow_lookup` names that container. Pids are
//!    global, so links and monitors work across containers.
//! 6. **Lifecycle.** A container with a root actor ends when the root ends: every other actor of
//!    the container is killed (their resources close as each one ends), its published names
//!    are withdrawn, and the end ([`ContainerEnd`]) is reported to whoever supervises the VM
//!    (`vm up`, the REPL), which applies the restart type: `permanent` (its end ends the VM,
//!    status 1 after a crash), `transient` (restarted after an abnormal end, within an intensity
//!    limit) or `temporary` (reported, stays down). The default container has no root.

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use crate::vm::Output;
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
    /// The default `:max_heap` of its actors, in bytes.
    pub max_heap: Option<u64>,
}

/// Everything a container is started from (a manifest entry, the REPL's `start`). `M` is its
/// module: loaded (`Arc<Module>`, what a VM starts) or still a file to load (`PathBuf`: a
/// manifest's entry, `manifest::Entry`); the other settings are the same in both.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSpec<M = Arc<Module>> {
    /// Its name: unique in the VM, no `/`.
    pub name: String,
    /// The module its root runs `main` of.
    pub module: M,
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

impl<M> ContainerSpec<M> {
    /// The same settings with `module` as the module (`vm up` loads each entry's file).
    pub fn with_module<N>(self, module: N) -> ContainerSpec<N> {
        let ContainerSpec {
            name,
            module: _,
            source,
            args,
            grants,
            allow_lookup,
            limits,
            restart,
            intensity,
            priority,
        } = self;
        ContainerSpec {
            name,
            module,
            source,
            args,
            grants,
            allow_lookup,
            limits,
            restart,
            intensity,
            priority,
        }
    }
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
    /// Its output, which puts `[name] ` in front of each line its actors write; `None` for the
    /// default container (`vm run`'s output is the program's own).
    pub(crate) tag: Option<Arc<Tagged>>,
    /// Where its actors' `stdout_write` and `stderr_write` go: `tag`, or the VM's console.
    pub console: Arc<dyn vm_io::Console>,
    /// Its live actors.
    pub(crate) actors: AtomicUsize,
    /// The root actor's pid (0: none, as in the default container).
    pub(crate) root: AtomicU64,
    ended: AtomicBool,
    /// Set by [`crate::Vm::stop_container`]: it is ending because someone stopped it, and no
    /// restart type applies.
    pub(crate) stopped: AtomicBool,
    /// Its registered names (rule 5).
    pub(crate) names: Mutex<HashMap<vm_core::Atom, Pid>>,
    /// Its published services.
    published: Mutex<HashMap<String, Value>>,
}

impl Container {
    /// A container started from `spec`, with no actor yet. With `tagged`, its output lines go
    /// to that sink with its name in front; without, its actors write to `console`, the VM's.
    pub(crate) fn new(
        spec: ContainerSpec,
        tagged: Option<Arc<dyn Output>>,
        console: Arc<dyn vm_io::Console>,
    ) -> Container {
        let tag = tagged.map(|output| {
            Arc::new(Tagged {
                tag: format!("[{}] ", spec.name).into_boxed_str(),
                output,
                partial: Mutex::new(Vec::new()),
            })
        });
        Container {
            grants: Arc::new(spec.grants.clone()),
            priority: spec.priority,
            console: match &tag {
                Some(t) => t.clone(),
                None => console,
            },
            tag,
            spec,
            actors: AtomicUsize::new(0),
            root: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            names: Mutex::new(HashMap::new()),
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
            if let Some(t) = &self.tag {
                t.flush_partial();
            }
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

    /// Everything it has published, by name (sorted): what a snapshot keeps.
    pub(crate) fn published_all(&self) -> Vec<(String, Value)> {
        let mut all: Vec<(String, Value)> =
            lock(&self.published).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
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

/// The output of a named container: every line its actors write (`print`, `stdout_write`)
/// leaves with `[name] ` in front. The protocol:
/// 1. `stdout_write` bytes up to each newline complete a line: the unfinished line so far, then
///    those bytes, leave as one tagged line.
/// 2. Bytes after the last newline wait in `partial` (the container's unfinished line) until a
///    newline or a `print` completes them, so a line written in pieces is tagged once.
/// 3. A `print` is a whole line: the unfinished line, if any, is its beginning (as on a
///    terminal, where `stdout_write("a")` then `print("b")` shows `ab`).
/// 4. When the container ends, an unfinished line leaves as it is, tagged.
///
/// Standard error is not tagged: the supervisor's own lines are there.
pub(crate) struct Tagged {
    tag: Box<str>,
    output: Arc<dyn Output>,
    partial: Mutex<Vec<u8>>,
}

impl Tagged {
    /// Writes a whole line (rule 3).
    pub(crate) fn line(&self, text: &str) {
        let mut partial = lock(&self.partial);
        if partial.is_empty() {
            drop(partial);
            self.output.line(&format!("{}{text}", self.tag));
        } else {
            let start = std::mem::take(&mut *partial);
            self.output.line(&format!("{}{}{text}", self.tag, String::from_utf8_lossy(&start)));
        }
    }

    /// Writes what is left of the unfinished line (rule 4).
    fn flush_partial(&self) {
        let start = std::mem::take(&mut *lock(&self.partial));
        if !start.is_empty() {
            self.output.line(&format!("{}{}", self.tag, String::from_utf8_lossy(&start)));
        }
    }
}

impl vm_io::Console for Tagged {
    fn stdout(&self, bytes: &[u8]) {
        // Rules 1 and 2; the lock keeps the pieces of one container's line together.
        let mut partial = lock(&self.partial);
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            partial.extend_from_slice(&rest[..nl]);
            let line = std::mem::take(&mut *partial);
            self.output.line(&format!("{}{}", self.tag, String::from_utf8_lossy(&line)));
            rest = &rest[nl + 1..];
        }
        partial.extend_from_slice(rest);
    }

    fn stderr(&self, bytes: &[u8]) {
        vm_io::stdio::write_stderr(bytes);
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
    /// Whether it was stopped on purpose (`Vm::stop_container`): then it is not restarted.
    pub stopped: bool,
}

/// The first function value, resource or shared table inside `v`, by kind (`"a function
/// value"`, `"a resource"`), or `None` if `v` may cross to another container (rule 4). Walks
/// tuples, lists and maps with a work list of its own (no recursion: a message may nest deeply).
/// Channels and pids are capabilities that may cross; every channel met is marked shared and
/// what it already holds (its buffer, its parked senders' values) is checked too, since a value
/// put in before the channel could cross was never checked (rule 4a).
pub(crate) fn crossing_refusal(v: &Value) -> Option<&'static str> {
    let mut stack = vec![v.clone()];
    while let Some(v) = stack.pop() {
        match &v {
            Value::Chan(h) => {
                if let Some(c) = h.payload().and_then(|p| p.downcast_ref::<crate::chan::Channel>()) {
                    stack.extend(c.share());
                }
            }
            Value::Fun(_) => return Some("a function value"),
            Value::Res(h) => {
                let table = h.payload().is_some_and(|p| p.is::<vm_io::table::Table>());
                return Some(if table { "a shared table" } else { "a resource" });
            }
            Value::Tuple(items) | Value::List(items) => stack.extend(items.iter().cloned()),
            Value::Map(m) => {
                for (k, x) in m.iter() {
                    stack.push(k.clone());
                    stack.push(x.clone());
                }
            }
            _ => {}
        }
    }
    None
}

/// Rule 4b: a send of `v` on channel `h` by `op` (`csend`, `select`), refused if the channel is
/// shared and `v` holds a function, a resource or a table. Scalars return at once (rule 4c),
/// inlined, so that the fast path makes no call. `Ok` says whether the value now counts as
/// *checked* for the channel's lock (rule 4.5): true for a scalar and for a value walked with
/// the channel shared, false for a compound value on a channel not shared when looked at.
#[inline]
pub(crate) fn check_chan_send(op: &str, h: &vm_core::Handle, v: &Value) -> Result<bool, vm_core::Exception> {
    if !matches!(
        v,
        Value::Fun(_) | Value::Res(_) | Value::Tuple(_) | Value::List(_) | Value::Map(_) | Value::Chan(_)
    ) {
        return Ok(true);
    }
    let shared =
        h.payload().and_then(|p| p.downcast_ref::<crate::chan::Channel>()).is_some_and(|c| c.is_shared());
    if !shared {
        return Ok(false);
    }
    check_shared_chan_send(op, h, v).map(|()| true)
}

/// The walk of rule 4b for a send on a channel known to be shared: also the re-check of a send
/// the channel's lock sent back ([`crate::chan::Fired::Unchecked`], rule 4.5).
pub(crate) fn check_shared_chan_send(
    op: &str,
    h: &vm_core::Handle,
    v: &Value,
) -> Result<(), vm_core::Exception> {
    match crossing_refusal(v) {
        None => Ok(()),
        Some(what) => Err(vm_core::Exception::badarg(format!(
            "{op}: {what} cannot be sent on #chan<{}>, which another container can reach (only data, \
             pids and channels cross; nothing was sent)",
            h.id()
        ))),
    }
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
