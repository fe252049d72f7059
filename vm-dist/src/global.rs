//! Global names: one pid per name across the cluster, kept in the transport's key-value store
//! (JetStream KV on NATS).
//!
//! 1. An entry is `key(name) → "node\nincarnation\nserial"` of the owner.
//! 2. `register` *creates* the key (atomic: of racing creators exactly one succeeds). If the
//!    key exists but its owner is dead — the owner's node incarnation is down, or the owner is a
//!    local actor that ended — it *replaces* the entry with a compare-and-set on the revision it
//!    read, so again exactly one of racing registrants wins; any other outcome is
//!    `AlreadyRegistered`.
//! 3. `whereis` reads the key and answers only a live owner, so a dead node's names are free as
//!    soon as this node sees it down, before anyone deletes them.
//! 4. When a local owner ends, the driver deletes its entries (compare-and-set on the revision
//!    written, so a later owner's entry is never removed).

use crate::id::{NodeId, make_pid, serial_of, slot_of};
use crate::node::{Inner, Job};
use crate::transport::{NameStore, StoreError};
use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use vm_core::{Atom, Pid};

/// A failed global-name operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobalError {
    /// A live actor holds the name.
    #[error("the name is registered")]
    AlreadyRegistered,
    /// The transport has no key-value store (NATS without JetStream).
    #[error("global names need a NATS server with JetStream")]
    Unsupported,
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for GlobalError {
    fn from(e: StoreError) -> GlobalError {
        GlobalError::Store(e.to_string())
    }
}

/// How many times `register` retries after losing a compare-and-set to someone else.
const ROUNDS: usize = 8;

pub(crate) struct Names {
    store: Option<Arc<dyn NameStore>>,
    /// Local serial → the entries it holds, with the revision written.
    owned: Mutex<HashMap<u64, Vec<(String, u64)>>>,
}

/// The store key of `name`: the name itself when it is made of subject-safe characters,
/// otherwise its bytes in hex (prefixes keep the two forms apart).
fn key(name: Atom) -> String {
    let n = name.name();
    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        format!("n-{n}")
    } else {
        let mut k = String::from("h-");
        for b in n.bytes() {
            k.push_str(&format!("{b:02x}"));
        }
        k
    }
}

fn entry(id: &NodeId, serial: u64) -> Bytes {
    Bytes::from(format!("{}\n{}\n{}", id.name, id.inc, serial))
}

fn parse(v: &[u8]) -> Option<(NodeId, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.split('\n');
    let name = it.next()?;
    let inc = it.next()?.parse().ok()?;
    let serial = it.next()?.parse().ok()?;
    Some((NodeId::new(name, inc).ok()?, serial))
}

impl Names {
    pub(crate) fn new(store: Option<Arc<dyn NameStore>>) -> Names {
        Names { store, owned: Mutex::default() }
    }

    fn store(&self) -> Result<&Arc<dyn NameStore>, GlobalError> {
        self.store.as_ref().ok_or(GlobalError::Unsupported)
    }

    fn owner_alive(inner: &Inner, id: &NodeId, serial: u64) -> bool {
        if id == inner.me() { inner.local.is_alive(make_pid(0, serial)) } else { inner.is_up(id) }
    }

    fn record(&self, pid: Pid, key: String, rev: u64) {
        if slot_of(pid) == 0 {
            self.owned.lock().entry(serial_of(pid)).or_default().push((key, rev));
        }
    }

    pub(crate) async fn register(&self, inner: &Inner, name: Atom, pid: Pid) -> Result<(), GlobalError> {
        let store = self.store()?;
        let id =
            inner.table.node_of(pid).ok_or_else(|| GlobalError::Store("a pid of no known node".into()))?;
        let k = key(name);
        let value = entry(&id, serial_of(pid));
        for _ in 0..ROUNDS {
            match store.create(k.clone(), value.clone()).await {
                Ok(rev) => {
                    self.record(pid, k, rev);
                    return Ok(());
                }
                Err(StoreError::Exists) => {}
                Err(e) => return Err(e.into()),
            }
            let Some((v, rev)) = store.get(k.clone()).await? else { continue };
            if let Some((owner, serial)) = parse(&v)
                && Self::owner_alive(inner, &owner, serial)
            {
                return Err(GlobalError::AlreadyRegistered);
            }
            match store.update(k.clone(), value.clone(), rev).await {
                Ok(rev) => {
                    self.record(pid, k, rev);
                    return Ok(());
                }
                Err(StoreError::Changed) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(GlobalError::AlreadyRegistered)
    }

    pub(crate) async fn whereis(&self, inner: &Inner, name: Atom) -> Result<Option<Pid>, GlobalError> {
        let Some((v, _)) = self.store()?.get(key(name)).await? else { return Ok(None) };
        let Some((owner, serial)) = parse(&v) else { return Ok(None) };
        if !Self::owner_alive(inner, &owner, serial) {
            return Ok(None);
        }
        Ok(inner.table.pid(&owner, serial))
    }

    pub(crate) async fn unregister(&self, _inner: &Inner, name: Atom) -> Result<(), GlobalError> {
        let store = self.store()?;
        let k = key(name);
        let Some((v, rev)) = store.get(k.clone()).await? else { return Ok(()) };
        match store.delete(k.clone(), rev).await {
            Ok(()) | Err(StoreError::Changed) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some((_, serial)) = parse(&v) {
            let mut owned = self.owned.lock();
            if let Some(list) = owned.get_mut(&serial) {
                list.retain(|(kk, _)| *kk != k);
            }
        }
        Ok(())
    }

    /// Queues the deletion of what local `pid` held (the driver runs it).
    pub(crate) fn actor_exited(&self, inner: &Inner, pid: Pid) {
        if self.store.is_none() {
            return;
        }
        let held = self.owned.lock().remove(&serial_of(pid));
        for (k, rev) in held.into_iter().flatten() {
            let _ = inner.jobs.send(Job::DeleteName(k, rev));
        }
    }

    /// Deletes `key` if it is still at `rev`.
    pub(crate) fn delete(&self, key: String, rev: u64) -> BoxFuture<'static, ()> {
        let store = self.store.clone();
        Box::pin(async move {
            if let Some(store) = store {
                let _ = store.delete(key, rev).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous_subject_tokens() {
        assert_eq!(key(Atom::new("logger")), "n-logger");
        assert_eq!(key(Atom::new("a.b")), "h-612e62");
        assert_ne!(key(Atom::new("h-61")), key(Atom::new("a")));
        let id = NodeId::new("b", 7).unwrap();
        assert_eq!(parse(&entry(&id, 9)), Some((id, 9)));
        assert_eq!(parse(b"b\nx\n1"), None);
    }
}
