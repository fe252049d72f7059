//! The frozen types of snapshot format 1: what the postcard bodies of the sections hold.
//!
//! These types *are* the file format, kept apart from the live types (`ActorState`, `Value`,
//! the runtime's cells) so that refactoring the VM cannot silently change what a file means.
//! postcard is not self-describing, so the rules are strict:
//! 1. A field is never added, removed, reordered or retyped in a released major version, and
//!    `#[serde(default)]`, `skip` and `skip_serializing_if` are never used (postcard would
//!    misread the bytes that follow).
//! 2. An enum's variants are written as their position: a new variant goes at the end, and a
//!    reader of an older minor version refuses it as a damaged file.
//! 3. Anything a newer minor version adds goes into a new *custom* section (ids `0x80..`), which
//!    older readers skip; anything else is a new major version.
//!
//! Values are written once each: [`Values::shared`] holds every boxed value (string, bytes,
//! tuple, list, map, function) reachable from the snapshot, children before parents, and a
//! [`VRef`] is either a scalar or the index of a shared entry. Atoms are indices into
//! [`Values::atoms`] (names, never interning numbers, which differ between processes).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reference to a value: a scalar written in place, or a boxed value in [`Values::shared`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VRef {
    /// `nil`.
    Nil,
    /// `false`.
    False,
    /// `true`.
    True,
    /// An int.
    Int(i64),
    /// A float, as its IEEE 754 bits (every NaN payload and `-0.0` survive).
    Float(u64),
    /// An atom: an index into [`Values::atoms`].
    Atom(u32),
    /// A pid.
    Pid(u64),
    /// A channel, by id: an entry of the channels section.
    Chan(u64),
    /// A resource or shared table, by handle id: an entry of the tables or resources section.
    Res(u64),
    /// A boxed value: an index into [`Values::shared`].
    Shared(u32),
    /// A reference (`make_ref`), as its 64 bits (appended in format 1.1: a 1.0 reader refuses
    /// a file holding one as damaged).
    Ref(u64),
}

/// A boxed value. Its children are [`VRef`]s to scalars or to *earlier* shared entries, so the
/// entries form no cycle and can be rebuilt in one pass, without recursion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Boxed {
    /// A string.
    Str(String),
    /// A byte string.
    Bytes(Blob),
    /// A tuple.
    Tuple(Vec<VRef>),
    /// A list.
    List(Vec<VRef>),
    /// A map, as (key, value) pairs in the map's order; keys are unique.
    Map(Vec<(VRef, VRef)>),
    /// A function value: a function index of the module and the captured values.
    Fun {
        /// The function index.
        func: u32,
        /// The captured values.
        env: Vec<VRef>,
    },
}

/// Bytes written as one length-prefixed run (postcard's byte array), not as a sequence of
/// numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// The values section: atom names and boxed values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Values {
    /// Atom names; [`VRef::Atom`] and every other atom field index this list.
    pub atoms: Vec<String>,
    /// Boxed values, children before parents.
    pub shared: Vec<Boxed>,
}

/// The meta section: everything about the VM that is not an actor, a channel or a resource.
/// Permissions are never stored: a resumed VM has exactly the grants of its command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// What wrote the file, for people (`vm 0.1.0`).
    pub writer: String,
    /// The hash of the module section's bytes ([`super::module_hash`]); written by
    /// [`super::encode`] and checked by [`super::decode`], so a module section spliced in from
    /// another file is refused.
    pub module_hash: u64,
    /// Wall-clock time when the snapshot was taken (ms since the Unix epoch), so that a resume
    /// with `--timers=wall` can count the downtime.
    pub taken_unix_ms: u64,
    /// The VM's own clock (`now_ms`) when the snapshot was taken; a resumed VM's clock goes on
    /// from here.
    pub vm_time_ms: u64,
    /// How many times this VM has been resumed (0 for a first run).
    pub incarnation: u64,
    /// The next fresh numbers.
    pub counters: Counters,
    /// The configuration that is not a grant.
    pub config: Config,
    /// The snapshot settings a resumed VM continues with.
    pub schedule: Schedule,
    /// The main actor (whose end ends `vm run`), if the VM has one (a REPL session has none).
    pub main: Option<u64>,
}

/// The VM's counters: each is the next number it will hand out, so every id in the file is
/// below its counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The next pid.
    pub next_pid: u64,
    /// The next monitor reference.
    pub next_ref: u64,
    /// The next channel id.
    pub next_chan: u64,
    /// The next resource or table handle id.
    pub next_handle: u64,
}

/// The runtime settings that survive a resume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Fuel per slice.
    pub fuel: u32,
    /// Default maximum frame depth of a new actor.
    pub max_frames: u32,
    /// Maximum number of live actors.
    pub max_actors: u64,
    /// The heartbeat's threshold for a slice that holds a worker too long.
    pub hog_threshold_ms: u64,
    /// Worker threads, if set on the command line.
    pub workers: Option<u32>,
}

/// When further snapshots are taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Take one every this many milliseconds.
    pub every_ms: Option<u64>,
    /// Take one on SIGTERM, then exit.
    pub on_term: bool,
    /// How many generations of the file to keep (`PATH`, `PATH.1`, ...).
    pub keep: u32,
}

/// One live actor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    /// Its pid.
    pub pid: u64,
    /// The interpreter's state.
    pub state: State,
    /// What it was waiting for, as far as a restore needs to know.
    pub wait: Wait,
    /// Its messages, oldest first.
    pub mailbox: Vec<VRef>,
    /// Its pending control signals, oldest first.
    pub signals: Vec<Signal>,
    /// Its registered name (an atom index).
    pub name: Option<u32>,
    /// Linked actors.
    pub links: Vec<u64>,
    /// Monitors on this actor: (reference, watcher).
    pub monitors: Vec<(u64, u64)>,
    /// Monitors this actor holds: (reference, monitored actor).
    pub monitoring: Vec<(u64, u64)>,
    /// Whether exit signals become messages.
    pub trap_exit: bool,
    /// The spawn option `:max_mailbox`.
    pub max_mailbox: Option<u64>,
}

/// Limits of one actor added in format 1.1, in the custom section `LIMITS` (0x80), which a
/// 1.0 reader skips. Only actors with a limit are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorLimits {
    /// The actor's pid (one of the actors section's).
    pub pid: u64,
    /// The spawn option `:max_heap`.
    pub max_heap: Option<u64>,
}

/// The state of one actor's random generator (`vm_core::rng`), added in format 1.2 in the
/// custom section `RNG` (0x81), which older readers skip: a resumed actor continues its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRng {
    /// The actor's pid (one of the actors section's).
    pub pid: u64,
    /// The generator's 64-bit state.
    pub state: u64,
}

/// The interpreter's state of one actor (the live `ActorState`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The register stack.
    pub regs: Vec<VRef>,
    /// The frames, the running one last.
    pub frames: Vec<Frame>,
    /// Installed exception handlers, innermost last.
    pub handlers: Vec<Handler>,
    /// An exception to raise at the current instruction on the next step.
    pub pending: Option<Exception>,
    /// Fuel spent so far.
    pub reductions: u64,
    /// Maximum frame depth.
    pub max_frames: u32,
    /// Exceptions caught so far, and the latest.
    pub caught: Option<Caught>,
}

/// One frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Function index.
    pub func: u32,
    /// The next instruction to run, or the blocked instruction (which runs again on restore).
    pub pc: u32,
    /// Index of the frame's first register in [`State::regs`].
    pub base: u32,
    /// The caller's register receiving the return value.
    pub ret: u16,
}

/// One exception handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handler {
    /// The index of the frame that installed it.
    pub frame: u32,
    /// Where to continue in that frame.
    pub target: u32,
    /// The register receiving the exception.
    pub dst: u16,
}

/// An exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// Its kind (an atom index).
    pub kind: u32,
    /// Its message.
    pub msg: VRef,
}

/// The exceptions an actor caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caught {
    /// How many.
    pub count: u64,
    /// The latest: the exception, and the function and instruction that raised it.
    pub last: Option<(Exception, u32, u32)>,
}

/// What an actor waited for when the snapshot was taken. Every blocked actor's program counter
/// is on its blocking instruction, which runs again after a restore; this says what that
/// re-run must know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// Nothing to carry over: runnable, or waiting with no deadline.
    Runnable,
    /// A wait with a deadline (sleep, a receive or select with a timeout): this much of it was
    /// left.
    Timed {
        /// Milliseconds left.
        remaining_ms: u64,
    },
    /// A native call was in flight (its outcome is unknown): the restore runs it again if the
    /// native may be re-run, else raises `:unknown_outcome` at the instruction.
    Native {
        /// The native's name (an atom index); the instruction at the program counter calls it.
        name: u32,
    },
}

/// A pending control signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// An exit signal from `from`.
    Exit {
        /// The sender.
        from: u64,
        /// The reason.
        reason: VRef,
    },
    /// An untrappable kill.
    Kill {
        /// The reason.
        reason: VRef,
    },
    /// An interrupt.
    Interrupt {
        /// The exception.
        exc: Exception,
        /// 0, 1 or 2.
        mode: u8,
    },
}

/// A channel: its buffered values (parked senders and receivers are not saved: each re-runs
/// its blocking instruction).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Its id.
    pub id: u64,
    /// Its capacity (0: rendezvous).
    pub cap: u64,
    /// Buffered values, oldest first; at most `cap`.
    pub buffer: Vec<VRef>,
    /// Whether it was closed.
    pub closed: bool,
}

/// A shared table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Its handle id.
    pub id: u64,
    /// Its entries (plain data only: no pids, channels, resources or functions).
    pub entries: Vec<(VRef, VRef)>,
}

/// An OS resource, as what it takes to open it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its handle id.
    pub id: u64,
    /// The owning actor.
    pub owner: u64,
    /// What it was, for people and for error messages (`tcp connection 127.0.0.1:5000`).
    pub label: String,
    /// How to reopen it.
    pub recipe: Recipe,
}

/// How a resource comes back after a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipe {
    /// It was closed; it stays closed.
    Closed,
    /// It cannot survive a process (a connection): using it raises `:lost`.
    Lost,
    /// A TCP listener: bind the same address again.
    Listener {
        /// The address it was bound to (`127.0.0.1:6379`).
        addr: String,
    },
    /// A UDP socket: bind the same address again.
    Udp {
        /// The address it was bound to.
        addr: String,
    },
    /// A file: open the path again (never creating or truncating it) and seek.
    File {
        /// Its path as opened.
        path: String,
        /// Opened for reading.
        read: bool,
        /// Opened for writing.
        write: bool,
        /// Opened for appending.
        append: bool,
        /// The position to seek to.
        pos: u64,
        /// Its length when the snapshot was taken (a changed file is reported).
        len: u64,
    },
}

/// The containers section (format 1.3, custom section `CONTAINERS`, 0x82): the named
/// containers of a VM started with `vm up` (the default container, `main`, runs the module
/// section and is not listed). A 1.2 reader skips the section; it then finds actors whose
/// frames do not fit the module section and refuses the file as inconsistent. Grants are never
/// stored: a resume takes every container's grants from a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Containers {
    /// The containers, in the order they were first started.
    pub containers: Vec<Container>,
    /// The channels that have reached a second container (their `shared` mark, never unset):
    /// only data, pids and channels may be sent on them.
    pub shared_channels: Vec<u64>,
}

/// One named container: what it was started from (but its grants), its state and its actors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Its name: unique, non-empty, no `/`, not `main`.
    pub name: String,
    /// Its module's `.vbc` bytes ([`crate::bytecode`]); its actors' frames index this module.
    pub module: Blob,
    /// Where the module came from, for people.
    pub source: String,
    /// `main`'s argument list (a restart of the container passes it again).
    pub args: Vec<String>,
    /// Its environment (what `env_get` answers without `allow_env`).
    pub env: Vec<(String, String)>,
    /// Its limits.
    pub limits: ContainerLimits,
    /// Its restart type.
    pub restart: Restart,
    /// Restarts of a transient container allowed within `restart_period_ms`.
    pub max_restarts: u32,
    /// The restart intensity's period.
    pub restart_period_ms: u64,
    /// Its actors' default wakeup priority.
    pub priority: Priority,
    /// Its root actor's pid (0: none).
    pub root: u64,
    /// Running, ended, or stopped on purpose.
    pub status: ContainerStatus,
    /// Its live actors (each one of the actors section's), with their wakeup priorities.
    pub actors: Vec<Member>,
    /// Its published services: name and value.
    pub published: Vec<(String, VRef)>,
}

/// A container's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLimits {
    /// Live actors at most.
    pub max_actors: Option<u64>,
    /// The default `:max_mailbox` of its actors.
    pub max_mailbox: Option<u64>,
    /// The default `:max_heap` of its actors, in bytes.
    pub max_heap: Option<u64>,
}

/// A container's restart type (OTP's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    /// Its end ends the VM.
    Permanent,
    /// Restarted after an abnormal end.
    Transient,
    /// Reported and left down.
    Temporary,
}

/// A wakeup priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// `:high`.
    High,
    /// `:normal`.
    Normal,
    /// `:low`.
    Low,
}

/// Whether a container runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerStatus {
    /// Its root runs.
    Running,
    /// Its root ended (its restart type was applied then).
    Ended,
    /// It was stopped on purpose (no restart type applies).
    Stopped,
}

/// An actor of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its pid.
    pub pid: u64,
    /// Its wakeup priority.
    pub priority: Priority,
}
