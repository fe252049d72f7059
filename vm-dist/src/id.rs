//! Node identities and the table that lets a `Pid` name its node.
//!
//! 1. A node is a *name* (`[A-Za-z0-9_-]`, 1 to 64 bytes, unique among the live nodes of a
//!    cluster) plus an *incarnation*: the wall-clock time in microseconds at which the process
//!    started. A restarted node is a new incarnation, so pids of the old one never reach the new
//!    one (Erlang's "creation"). Incarnations of one name are ordered: a larger one replaces a
//!    smaller one that is still believed alive.
//! 2. A `Pid` stays a `u64`: the high 16 bits are a *slot* in this VM's [`NodeTable`] (0 = this
//!    node) and the low 48 bits are the serial the owning node gave the actor. Local pids are
//!    therefore unchanged, and a remote pid is as cheap to copy and compare as a local one.
//! 3. A slot names one incarnation for the life of the VM and is never reused, so a stale pid
//!    keeps naming its dead incarnation. The table is append-only; it refuses new entries once
//!    all 65,535 remote slots are taken (each honest node uses one slot per incarnation it sees).

use parking_lot::RwLock;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use vm_core::Pid;

/// The longest node name accepted.
pub const MAX_NODE_NAME: usize = 64;

/// Bits of a pid that hold the serial; the rest hold the slot (vm-core's split).
pub const SERIAL_BITS: u32 = Pid::SERIAL_BITS;

// References name their node as pids do (`vm_core::value::Ref`).
const _: () = assert!(SERIAL_BITS == vm_core::value::Ref::SERIAL_BITS);

/// The largest serial a pid can carry.
pub const MAX_SERIAL: u64 = Pid::MAX_SERIAL;

/// One incarnation of a node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The node's name, unique among live nodes.
    pub name: Arc<str>,
    /// Microseconds since the Unix epoch when the node started.
    pub inc: u64,
}

impl NodeId {
    /// A node id, checking the name.
    pub fn new(name: &str, inc: u64) -> Result<NodeId, String> {
        check_node_name(name)?;
        Ok(NodeId { name: Arc::from(name), inc })
    }

    /// This process's incarnation: the current time in microseconds, so a restart is a larger
    /// number than any earlier run of the same node (see the module docs).
    pub fn fresh_incarnation() -> u64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        u64::try_from(now.as_micros()).unwrap_or(u64::MAX).max(1)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.inc)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Checks that `name` can be a node name (it becomes a NATS subject token).
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME {
        return Err(format!("a node name has 1 to {MAX_NODE_NAME} characters, not {}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("node name {name:?} contains {c:?}: use only letters, digits, '_' and '-'"));
    }
    Ok(())
}

/// The slot part of a pid (0 for a local pid).
#[inline]
pub fn slot_of(pid: Pid) -> u16 {
    pid.slot()
}

/// The serial part of a pid.
#[inline]
pub fn serial_of(pid: Pid) -> u64 {
    pid.serial()
}

/// The pid with `slot` and `serial`.
#[inline]
pub fn make_pid(slot: u16, serial: u64) -> Pid {
    Pid::remote(slot, serial)
}

/// The reference with `slot` and `serial`: a reference names its node as a pid does
/// (`vm_core::value::Ref`).
#[inline]
pub fn make_ref(slot: u16, serial: u64) -> vm_core::value::Ref {
    vm_core::value::Ref(make_pid(slot, serial).0)
}

/// Maps slots to node incarnations and back (see the module docs).
pub struct NodeTable {
    inner: RwLock<TableInner>,
}

struct TableInner {
    /// `slots[0]` is this node.
    slots: Vec<NodeId>,
    index: HashMap<NodeId, u16>,
}

impl NodeTable {
    /// A table whose slot 0 is `me`.
    pub fn new(me: NodeId) -> NodeTable {
        let mut index = HashMap::new();
        index.insert(me.clone(), 0);
        NodeTable { inner: RwLock::new(TableInner { slots: vec![me], index }) }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.inner.read().slots[0].clone()
    }

    /// The incarnation in `slot`, if any.
    pub fn get(&self, slot: u16) -> Option<NodeId> {
        self.inner.read().slots.get(usize::from(slot)).cloned()
    }

    /// The node of `pid`, if its slot is known.
    pub fn node_of(&self, pid: Pid) -> Option<NodeId> {
        self.get(slot_of(pid))
    }

    /// The slot of `id`, allocating one for an incarnation seen for the first time; `None` when
    /// the table is full.
    pub fn slot(&self, id: &NodeId) -> Option<u16> {
        if let Some(&s) = self.inner.read().index.get(id) {
            return Some(s);
        }
        let mut t = self.inner.write();
        if let Some(&s) = t.index.get(id) {
            return Some(s);
        }
        let s = u16::try_from(t.slots.len()).ok()?;
        t.slots.push(id.clone());
        t.index.insert(id.clone(), s);
        Some(s)
    }

    /// The pid of actor `serial` on node `id`.
    pub fn pid(&self, id: &NodeId, serial: u64) -> Option<Pid> {
        if serial > MAX_SERIAL {
            return None;
        }
        Some(make_pid(self.slot(id)?, serial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_tokens() {
        assert!(check_node_name("node-b_2").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name("a.b").unwrap_err().contains("'.'"));
        assert!(check_node_name("a>").is_err());
        assert!(check_node_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_restart_gets_its_own_slot_and_old_pids_keep_the_old_one() {
        let me = NodeId::new("a", 1).unwrap();
        let t = NodeTable::new(me.clone());
        let b1 = NodeId::new("b", 10).unwrap();
        let b2 = NodeId::new("b", 20).unwrap();
        let old = t.pid(&b1, 7).unwrap();
        let new = t.pid(&b2, 7).unwrap();
        assert_ne!(old, new, "a stale pid must not alias the restarted node's actor");
        assert_eq!(t.node_of(old), Some(b1));
        assert_eq!(t.node_of(new), Some(b2));
        assert_eq!(t.pid(&me, 7), Some(Pid(7)), "local pids are unchanged");
        assert_eq!(serial_of(new), 7);
    }
}
