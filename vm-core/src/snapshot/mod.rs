//! Snapshot files: a whole VM (its module, actors, channels, tables, resources) as bytes, and
//! back. Pure data: the runtime (vm-sched) captures and restores live state, vm-io writes the
//! file durably; this module is the format, the codec and the loader's checks.
//!
//! # Layout
//!
//! All integers in the container are little endian.
//!
//! ```text
//! file     = magic version section* end
//! magic    = 56 4d 53 4e 41 50 0d 0a 1a 0a     ("VMSNAP\r\n\x1a\n")
//! version  = major:u16 minor:u16                (this VM writes 1.3 and reads 1.x)
//! section  = id:u8 length:u32 crc32:u32 body[length]
//! end      = 00 04000000 crc32:u32 filecrc:u32
//! ```
//!
//! `crc32` is the CRC-32 (IEEE) of the section's body. The end section (id 0) is last and its
//! body is the CRC-32 of every byte before it, so a file cut short anywhere, even between two
//! sections, is refused; nothing may follow it.
//!
//! | id | section | body |
//! |---|---|---|
//! | 1 | meta | postcard [`v1::Meta`] |
//! | 2 | module | the module's `.vbc` bytes ([`crate::bytecode`]) |
//! | 3 | values | postcard [`v1::Values`]: atom names and every boxed value, once |
//! | 4 | actors | postcard `Vec<`[`v1::Actor`]`>` |
//! | 5 | channels | postcard `Vec<`[`v1::Channel`]`>` |
//! | 6 | tables | postcard `Vec<`[`v1::Table`]`>` |
//! | 7 | resources | postcard `Vec<`[`v1::Resource`]`>` |
//! | `0x80` | limits (1.1): optional | postcard `Vec<`[`v1::ActorLimits`]`>` |
//! | `0x81` | rng (1.2): optional | postcard `Vec<`[`v1::ActorRng`]`>` |
//! | `0x82` | containers (1.3): optional | postcard [`v1::Containers`] |
//! | `0x83..=0xff` | custom: skipped by this VM | anything |
//!
//! Sections 1 to 7 appear exactly once each, in that order; custom sections anywhere before the
//! end, a known one (limits, rng, containers) at most once. A newer minor version only adds custom sections (see [`v1`] for the rules that keep the
//! postcard bodies stable); a different major version is refused.
//!
//! # Loading
//!
//! [`decode`] is the only way bytes become a [`Snapshot`], and it refuses, with a message and
//! never a panic, anything the runtime could not restore safely:
//! 1. the container: magic, version, every section's length and checksum, the end section;
//! 2. the bodies: each decodes completely (no trailing bytes);
//! 3. the module: the hash recorded in the meta section matches the module section, which
//!    loads and verifies as a `.vbc` file does ([`crate::load`]); so does each container's;
//! 4. the state ([`check`]): every reference to an atom, a shared value, a function, a channel,
//!    a table or a resource resolves; shared values refer only to earlier ones (so they nest
//!    as deep as the file spells out: values are safe at any depth, see [`crate::value`]); every actor's frames, program counters, handlers and registers
//!    agree with the module (nil above the running frame included); pids, monitor references
//!    and handle ids are below their counters; names are unique (within each container);
//!    each container's actors agree with its module, and belong to it only.
//!
//! A snapshot that passes can be restored by the runtime without further checks: the
//! interpreter's invariants hold for every actor in it.

mod check;
mod format;
pub mod v1;
mod values;

pub use check::check;
pub use format::{MAGIC, VERSION_MAJOR, VERSION_MINOR, decode, encode, reseal, section};
pub use values::{Reader, Writer};

use crate::module::Module;
use std::sync::Arc;

/// A whole VM as data: what [`encode`] writes and [`decode`] returns.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Counters, configuration, clocks.
    pub meta: v1::Meta,
    /// The program every actor runs (verified, when it came from [`decode`]).
    pub module: Arc<Module>,
    /// Atom names and shared values.
    pub values: v1::Values,
    /// The live actors.
    pub actors: Vec<v1::Actor>,
    /// The channels reachable from them.
    pub channels: Vec<v1::Channel>,
    /// The shared tables reachable from them.
    pub tables: Vec<v1::Table>,
    /// The resources reachable from them, as reopen recipes.
    pub resources: Vec<v1::Resource>,
    /// The actors' limits that the actors section has no field for (format 1.1).
    pub limits: Vec<v1::ActorLimits>,
    /// The actors' random generators (format 1.2; empty when read from an older file).
    pub rngs: Vec<v1::ActorRng>,
    /// The named containers (format 1.3; empty for a VM of one program). An actor listed in
    /// none of them belongs to the default container and runs [`Snapshot::module`].
    pub containers: Vec<ContainerImage>,
    /// The channels that have reached a second container (format 1.3, with `containers`).
    pub shared_channels: Vec<u64>,
}

/// One named container of a snapshot: its module, loaded, and the rest as the file holds it.
#[derive(Clone, Debug)]
pub struct ContainerImage {
    /// The module its actors run (verified, when it came from [`decode`]).
    pub module: Arc<Module>,
    /// Everything else. Its `module` field is not used in memory: [`encode`] writes
    /// [`ContainerImage::module`]'s bytes there, and [`decode`] leaves it empty.
    pub spec: v1::Container,
}

impl Snapshot {
    /// The module actor `pid` runs: its container's, or the module section's.
    pub fn module_of(&self, pid: u64) -> &Arc<Module> {
        self.containers
            .iter()
            .find(|c| c.spec.actors.iter().any(|m| m.pid == pid))
            .map_or(&self.module, |c| &c.module)
    }
}

/// Why bytes are not a usable snapshot. The message says what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The container or a section body is damaged, truncated or not a snapshot at all.
    #[error("damaged snapshot: {0}")]
    Damaged(String),
    /// The embedded module does not load.
    #[error("the snapshot's module does not load: {0}")]
    Module(crate::bytecode::LoadError),
    /// The state does not agree with itself or with the module.
    #[error("inconsistent snapshot: {0}")]
    State(String),
}

/// The hash identifying a module's `.vbc` bytes (64-bit FNV-1a): recorded in the meta section
/// so that a module section from another file is noticed.
pub fn module_hash(vbc: &[u8]) -> u64 {
    vbc.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests;
