//! Shared tables: a concurrent hash table that any actor holding its handle may read and write,
//! like an ETS table in BEAM. It is mutable state shared outside the actor model, for what
//! message passing makes slow: a key-value server's data, read and written by every connection.
//!
//! - A table is a `Value::Res` handle whose payload is a [`Table`]. It has no owner: sending the
//!   handle shares the table (the ownership protocol of [`crate::resource`] passes it by, since
//!   its payload is no [`crate::resource::Resource`]), and it lives while some value refers to it.
//! - Keys and values are *data*: nil (only as "absent"), booleans, numbers, atoms, strings,
//!   bytes, and tuples, lists and maps of those. Pids, channels, resources (tables included) and
//!   functions are refused with `:type_error`: a table must not keep an actor's channel or socket
//!   alive, nor form a cycle of tables.
//! - Values are immutable, so a value read from a table is shared, not copied.
//! - Every operation takes one shard's lock (a key's shard is chosen by its hash), so each is
//!   atomic, and operations on keys in different shards run in parallel. `table_cas` and
//!   `table_incr` are read-modify-write under that lock.

use crate::natives::{Ctx, NativeResult, int_arg};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use vm_core::{Exception, Handle, Value, atoms};

const SHARDS: usize = 32;

type Shard = HashMap<Value, Value, RandomState>;

/// Which shard holds `key`. For text and bytes keys a cheap multiplicative hash of the words
/// (the map inside hashes again with SipHash, which resists crafted keys; a poor shard choice
/// costs only lock sharing); for other keys the map's own hash.
/// Stores `value` under `key` in a locked shard (`nil` removes the key) and returns what it
/// replaced, for the caller to drop once the lock is released.
fn store(s: &mut Shard, key: Value, value: Value) -> Option<Value> {
    if matches!(value, Value::Nil) {
        s.remove(&key)
    } else if let Some(slot) = s.get_mut(&key) {
        Some(std::mem::replace(slot, value))
    } else {
        s.insert(key, value)
    }
}

fn shard_of(hasher: &RandomState, key: &Value) -> usize {
    let data: &[u8] = match key {
        Value::Bytes(b) => b,
        Value::Str(s) => s.as_bytes(),
        other => return (hasher.hash_one(other) >> 58) as usize % SHARDS,
    };
    let mut h = data.len() as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    for &b in words.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    (h >> 58) as usize % SHARDS
}

/// A shared table (see the module docs).
pub struct Table {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Table {
    fn default() -> Table {
        let hasher = RandomState::new();
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(hasher.clone()))).collect();
        Table { hasher, shards }
    }
}

impl Table {
    fn shard(&self, key: &Value) -> MutexGuard<'_, Shard> {
        let m = &self.shards[shard_of(&self.hasher, key)];
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The value under `key`.
    pub fn get(&self, key: &Value) -> Option<Value> {
        self.shard(key).get(key).cloned()
    }

    /// Stores `value` under `key` (`nil` removes the key).
    pub fn put(&self, key: Value, value: Value) {
        // What is replaced is freed after the lock is released: the lock is held only to move
        // values, which keeps it short when every client writes one key.
        let _old = store(&mut self.shard(&key), key, value);
    }

    /// Removes `key`; whether it was there.
    pub fn del(&self, key: &Value) -> bool {
        let old = self.shard(key).remove(key);
        old.is_some()
    }

    /// Replaces `old` with `new` under `key` if the key holds `old` (`nil`: is absent); `new`
    /// nil removes the key. Whether it did.
    pub fn cas(&self, key: Value, old: &Value, new: Value) -> bool {
        let _replaced = {
            let mut s = self.shard(&key);
            let holds_old = match s.get(&key) {
                Some(now) => now == old,
                None => matches!(old, Value::Nil),
            };
            if !holds_old {
                return false;
            }
            store(&mut s, key, new)
        };
        true
    }

    /// Adds `delta` to the int under `key` (absent counts as 0) and returns the sum.
    pub fn incr(&self, key: Value, delta: i64) -> Result<i64, Exception> {
        let mut s = self.shard(&key);
        let now = match s.get(&key) {
            None => 0,
            Some(Value::Int(n)) => *n,
            Some(other) => {
                return Err(Exception::type_error(format!(
                    "table_incr: the value under {} is a {}, not an int",
                    key.repr(),
                    other.type_atom().name()
                )));
            }
        };
        let sum = now.checked_add(delta).ok_or_else(|| {
            Exception::new(atoms::OVERFLOW, format!("table_incr: {now} + {delta} overflows"))
        })?;
        s.insert(key, Value::Int(sum));
        Ok(sum)
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.all().map(|s| s.len()).sum()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every key.
    pub fn clear(&self) {
        self.all().for_each(|mut s| s.clear());
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<Value> {
        let mut keys: Vec<Value> = self.all().flat_map(|s| s.keys().cloned().collect::<Vec<_>>()).collect();
        keys.sort();
        keys
    }
}

/// Refuses values a table may not hold (see the module docs). Iterative, so a deeply nested
/// value cannot overflow the stack.
pub fn check_data(what: &str, v: &Value) -> Result<(), Exception> {
    match v.walk().find(|x| matches!(x, Value::Pid(_) | Value::Chan(_) | Value::Res(_) | Value::Fun(_))) {
        Some(bad) => Err(Exception::type_error(format!(
            "{what}: a table holds only data, not a {}",
            bad.type_atom().name()
        ))),
        None => Ok(()),
    }
}

/// A key or value argument: data (a flat value is checked with one match).
fn data<'v>(what: &str, v: &'v Value) -> Result<&'v Value, Exception> {
    match v {
        Value::Int(_) | Value::Str(_) | Value::Bytes(_) | Value::Atom(_) | Value::Nil => Ok(v),
        _ => check_data(what, v).map(|()| v),
    }
}

fn table<'v>(what: &str, v: &'v Value) -> Result<&'v Table, Exception> {
    Ctx::with_obj::<Table>(what, "a table", v)
}

/// Snapshots: a table's entries (a restore refills a new table with `put`).
impl Table {
    /// Every entry (values are shared, so this copies references).
    pub fn entries(&self) -> Vec<(Value, Value)> {
        self.all()
            .flat_map(|shard| shard.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>())
            .collect()
    }
}

pub(crate) fn table_new(ctx: &Ctx<'_>, _: &[Value]) -> NativeResult {
    let t: Arc<Table> = Arc::new(Table::default());
    Ok(Value::Res(Handle::with_payload(ctx.io.next_handle_id(), t)))
}

pub(crate) fn table_get(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let t = table("table_get", &args[0])?;
    Ok(t.get(&args[1]).unwrap_or(Value::Nil))
}

pub(crate) fn table_put(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let t = table("table_put", &args[0])?;
    let key = data("table_put", &args[1])?.clone();
    let value = data("table_put", &args[2])?.clone();
    t.put(key, value);
    Ok(Value::Nil)
}

pub(crate) fn table_del(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let t = table("table_del", &args[0])?;
    Ok(Value::Bool(t.del(&args[1])))
}

pub(crate) fn table_cas(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let t = table("table_cas", &args[0])?;
    let key = data("table_cas", &args[1])?.clone();
    let new = data("table_cas", &args[3])?.clone();
    Ok(Value::Bool(t.cas(key, &args[2], new)))
}

pub(crate) fn table_incr(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    let t = table("table_incr", &args[0])?;
    let key = data("table_incr", &args[1])?.clone();
    let delta = int_arg("table_incr", &args[2])?;
    Ok(Value::Int(t.incr(key, delta)?))
}

pub(crate) fn table_size(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    Ok(Value::Int(table("table_size", &args[0])?.len() as i64))
}

pub(crate) fn table_clear(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    table("table_clear", &args[0])?.clear();
    Ok(Value::Nil)
}

pub(crate) fn table_keys(_: &Ctx<'_>, args: &[Value]) -> NativeResult {
    Ok(Value::list(table("table_keys", &args[0])?.keys()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natives::lookup;
    use crate::perms::Permissions;
    use crate::resource::{Io, Quiet};
    use vm_core::Atom;

    fn call(io: &Arc<Io>, name: &str, args: &[Value]) -> NativeResult {
        lookup(Atom::new(name)).unwrap().call(&Ctx::new(io, 1), args)
    }

    #[test]
    fn operations() {
        let io = Io::new(Permissions::default(), Arc::new(Quiet));
        let t = call(&io, "table_new", &[]).unwrap();
        let k = Value::str("k");
        assert_eq!(call(&io, "table_get", &[t.clone(), k.clone()]).unwrap(), Value::Nil);
        call(&io, "table_put", &[t.clone(), k.clone(), Value::Int(1)]).unwrap();
        assert_eq!(call(&io, "table_get", &[t.clone(), k.clone()]).unwrap(), Value::Int(1));
        // A string key and a bytes key with the same text are different keys.
        assert_eq!(call(&io, "table_get", &[t.clone(), Value::bytes(&b"k"[..])]).unwrap(), Value::Nil);
        let cas = |old: Value, new: Value| call(&io, "table_cas", &[t.clone(), k.clone(), old, new]).unwrap();
        assert_eq!(cas(Value::Int(2), Value::Int(3)), Value::Bool(false));
        assert_eq!(cas(Value::Int(1), Value::Int(3)), Value::Bool(true));
        assert_eq!(call(&io, "table_incr", &[t.clone(), k.clone(), Value::Int(-5)]).unwrap(), Value::Int(-2));
        assert_eq!(cas(Value::Int(-2), Value::Nil), Value::Bool(true));
        assert_eq!(call(&io, "table_size", std::slice::from_ref(&t)).unwrap(), Value::Int(0));
        assert_eq!(cas(Value::Nil, Value::str("new")), Value::Bool(true));
        let e = call(&io, "table_incr", &[t.clone(), k.clone(), Value::Int(1)]).unwrap_err();
        assert_eq!(e.kind, atoms::TYPE_ERROR);
        call(&io, "table_put", &[t.clone(), Value::Int(7), Value::Int(i64::MAX)]).unwrap();
        let e = call(&io, "table_incr", &[t.clone(), Value::Int(7), Value::Int(1)]).unwrap_err();
        assert_eq!(e.kind, atoms::OVERFLOW);
        let keys = call(&io, "table_keys", std::slice::from_ref(&t)).unwrap();
        assert_eq!(keys, Value::list(vec![Value::Int(7), Value::str("k")]));
        assert_eq!(call(&io, "table_del", &[t.clone(), Value::Int(7)]).unwrap(), Value::Bool(true));
        assert_eq!(call(&io, "table_del", &[t.clone(), Value::Int(7)]).unwrap(), Value::Bool(false));
        call(&io, "table_put", &[t.clone(), k.clone(), Value::Nil]).unwrap();
        assert_eq!(call(&io, "table_size", std::slice::from_ref(&t)).unwrap(), Value::Int(0));
        call(&io, "table_put", &[t.clone(), Value::Int(1), Value::Int(1)]).unwrap();
        call(&io, "table_clear", std::slice::from_ref(&t)).unwrap();
        assert_eq!(call(&io, "table_size", std::slice::from_ref(&t)).unwrap(), Value::Int(0));
    }

    #[test]
    fn only_data_goes_in() {
        let io = Io::new(Permissions::default(), Arc::new(Quiet));
        let t = call(&io, "table_new", &[]).unwrap();
        let pid = Value::Pid(vm_core::Pid(3));
        let nested = Value::list(vec![Value::Int(1), Value::tuple(vec![pid.clone()])]);
        for (k, v) in [
            (Value::Int(1), pid.clone()),
            (pid.clone(), Value::Int(1)),
            (Value::Int(1), nested),
            (Value::Int(1), t.clone()),
        ] {
            let e = call(&io, "table_put", &[t.clone(), k, v]).unwrap_err();
            assert_eq!(e.kind, atoms::TYPE_ERROR);
            assert!(e.msg.to_string().contains("holds only data"), "{}", e.msg);
        }
        let ok = Value::tuple(vec![
            Value::atom("a"),
            Value::Float(1.5),
            Value::list(vec![Value::bytes(&b"x"[..])]),
        ]);
        call(&io, "table_put", &[t.clone(), ok.clone(), ok.clone()]).unwrap();
        assert_eq!(call(&io, "table_get", &[t.clone(), ok.clone()]).unwrap(), ok);
        // Not a table.
        let e = call(&io, "table_get", &[Value::Int(1), Value::Int(1)]).unwrap_err();
        assert_eq!(e.kind, atoms::TYPE_ERROR);
    }

    #[test]
    fn cas_and_incr_are_atomic_under_concurrency() {
        const THREADS: i64 = 8;
        const EACH: i64 = 5_000;
        let t = Arc::new(Table::default());
        let k = Value::bytes(&b"counter"[..]);
        std::thread::scope(|s| {
            for i in 0..THREADS {
                let (t, k) = (&t, &k);
                s.spawn(move || {
                    for _ in 0..EACH {
                        if i % 2 == 0 {
                            t.incr(k.clone(), 1).unwrap();
                        } else {
                            // A compare-and-swap loop, as a program writes one.
                            loop {
                                let old = t.get(k).unwrap_or(Value::Nil);
                                let n = match old {
                                    Value::Nil => 0,
                                    Value::Int(n) => n,
                                    _ => panic!("{old:?}"),
                                };
                                if t.cas(k.clone(), &old, Value::Int(n + 1)) {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(t.get(&k), Some(Value::Int(THREADS * EACH)));
    }
}
