//! The transport trait (what the distribution layer needs from a message bus) and an in-memory
//! bus for in-process tests.
//!
//! What a transport must provide, which is what core NATS guarantees and no more:
//! 1. `publish` to a subject, with an optional reply subject. Messages from one connection to
//!    one subscriber arrive in the order published, or not at all (at most once).
//! 2. `subscribe` to a subject; a subject is dot-separated tokens, and a subscription may end in
//!    `>` (any tail) or use `*` (any one token).
//! 3. A publish with a reply subject that no subscription matches is answered at once on the
//!    reply subject with a message whose `no_responders` flag is set (NATS's 503).
//! 4. A limit on the size of a message (`max_payload`), and events about the connection itself.
//! 5. Optionally a key-value store with atomic create and compare-and-set (`names`), for
//!    global names, and the server's notices of other clients' connections closing
//!    (`departures`), a faster sign of a crashed node than its silence.
//!
//! [`MemBus`] implements all of this between [`MemTransport`]s in one process, and adds faults a
//! test can inject: partitions between connections, dropping the next N messages to one, and
//! closing a connection (as a `kill -9` would).

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// A message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The subject (shared: a node sends to each peer on one subject).
    pub subject: Arc<str>,
    /// Where a 503 (no responders) goes, if anywhere.
    pub reply: Option<Arc<str>>,
    /// The envelope.
    pub payload: Bytes,
}

/// A received message.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The subject it was published to.
    pub subject: String,
    /// The reply subject the publisher gave, if any.
    pub reply: Option<String>,
    /// The envelope (empty for a no-responders notice).
    pub payload: Bytes,
    /// Set on the notice that a publish with this reply subject reached no subscriber.
    pub no_responders: bool,
}

/// Something that happened to the connection itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// (Re)connected to a server.
    Connected,
    /// Lost the connection to the server; the client is reconnecting.
    Disconnected,
    /// Messages for a subscription were dropped because it fell behind.
    SlowConsumer,
    /// The connection is closed for good.
    Closed,
}

/// A transport failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The credentials were refused.
    #[error("cluster authentication failed: {0}")]
    Auth(String),
    /// Could not connect, or the connection is gone.
    #[error("cluster connection failed: {0}")]
    Connection(String),
    /// The message exceeds the server's limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Anything else the transport reported.
    #[error("{0}")]
    Other(String),
}

/// A message bus (see the module docs for the contract).
pub trait Transport: Send + Sync + 'static {
    /// Publishes one message. Resolves once the transport has taken it (not delivered it).
    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Publishes `msg` if that needs no waiting, else gives it back untouched. A failure to
    /// publish counts as taken (the message is lost, as NATS may lose any; the session's
    /// numbering reports it). The default always gives it back.
    fn try_publish(&self, msg: Outgoing) -> Option<Outgoing> {
        Some(msg)
    }
    /// Subscribes to `subject` (which may hold wildcards).
    fn subscribe(
        &self,
        subject: String,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Incoming>, TransportError>>;
    /// Resolves when everything published so far has reached the server.
    fn flush(&self) -> BoxFuture<'_, Result<(), TransportError>>;
    /// The largest payload the server takes.
    fn max_payload(&self) -> usize;
    /// The connection's events; the first call takes the stream, later calls get an empty one.
    fn events(&self) -> BoxStream<'static, TransportEvent>;
    /// The key-value store for global names, if the server offers one.
    fn names(&self) -> BoxFuture<'_, Option<Arc<dyn NameStore>>>;
    /// The names of other clients whose connections the server saw close (NATS's disconnect
    /// notices, when this transport may read them); the first call takes the stream. The
    /// default has none.
    fn departures(&self) -> BoxStream<'static, String> {
        Box::pin(futures::stream::empty())
    }
}

/// A failure of the name store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `create` found the key present.
    #[error("the key exists")]
    Exists,
    /// `update`/`delete` found another revision.
    #[error("the key changed")]
    Changed,
    /// Anything else.
    #[error("name store: {0}")]
    Other(String),
}

/// A key-value store with atomic create and compare-and-set, as JetStream KV provides.
pub trait NameStore: Send + Sync + 'static {
    /// Puts `value` under `key` if the key is absent (or deleted); returns the revision.
    fn create(&self, key: String, value: Bytes) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// The value and revision under `key`, if present.
    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<(Bytes, u64)>, StoreError>>;
    /// Replaces the value if the key is still at `revision`.
    fn update(&self, key: String, value: Bytes, revision: u64) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Deletes the key if it is still at `revision`.
    fn delete(&self, key: String, revision: u64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every present key.
    fn keys(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
}

/// Whether `subject` matches the subscription `pattern` (`*` one token, `>` the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// An in-process message bus with fault injection (see the module docs).
#[derive(Clone, Default)]
pub struct MemBus {
    inner: Arc<Mutex<BusInner>>,
}

#[derive(Default)]
struct BusInner {
    next_conn: u64,
    subs: Vec<MemSub>,
    /// Pairs of connections that cannot reach each other.
    cut: HashSet<(u64, u64)>,
    /// Per connection: a subject pattern and how many of the next messages to it matching the
    /// pattern to drop.
    drop_next: BTreeMap<u64, (String, u64)>,
    closed: HashSet<u64>,
    max_payload: Option<usize>,
    kv: BTreeMap<String, (Bytes, u64)>,
    kv_rev: u64,
    events: BTreeMap<u64, mpsc::UnboundedSender<TransportEvent>>,
}

struct MemSub {
    conn: u64,
    pattern: String,
    tx: mpsc::UnboundedSender<Incoming>,
}

impl MemBus {
    /// A bus with a 1 MiB payload limit.
    pub fn new() -> MemBus {
        MemBus::default()
    }

    /// Sets the payload limit.
    pub fn set_max_payload(&self, n: usize) {
        self.inner.lock().max_payload = Some(n);
    }

    /// A new connection to the bus.
    pub fn connect(&self) -> MemTransport {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut b = self.inner.lock();
        b.next_conn += 1;
        let id = b.next_conn;
        b.events.insert(id, tx);
        MemTransport { bus: self.clone(), id, events: Mutex::new(Some(rx)), published: AtomicU64::new(0) }
    }

    /// Cuts (`true`) or heals (`false`) the path between two connections, both ways.
    pub fn partition(&self, a: &MemTransport, b: &MemTransport, cut: bool) {
        let mut inner = self.inner.lock();
        for pair in [(a.id, b.id), (b.id, a.id)] {
            if cut {
                inner.cut.insert(pair);
            } else {
                inner.cut.remove(&pair);
            }
        }
    }

    /// Drops the next `n` messages on subjects matching `pattern` delivered to `conn` (as NATS
    /// may, silently).
    pub fn drop_next(&self, conn: &MemTransport, pattern: &str, n: u64) {
        self.inner.lock().drop_next.insert(conn.id, (pattern.to_string(), n));
    }

    /// Ends `conn` as a crash would: its subscriptions vanish and it can publish no more.
    pub fn kill(&self, conn: &MemTransport) {
        let mut b = self.inner.lock();
        b.closed.insert(conn.id);
        b.subs.retain(|s| s.conn != conn.id);
        if let Some(tx) = b.events.remove(&conn.id) {
            let _ = tx.send(TransportEvent::Closed);
        }
    }
}

/// One connection to a [`MemBus`].
pub struct MemTransport {
    bus: MemBus,
    id: u64,
    events: Mutex<Option<mpsc::UnboundedReceiver<TransportEvent>>>,
    published: AtomicU64,
}

impl MemTransport {
    /// How many messages this connection has published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    fn deliver(&self, msg: Outgoing) -> Result<(), TransportError> {
        let mut b = self.bus.inner.lock();
        if b.closed.contains(&self.id) {
            return Err(TransportError::Connection("connection closed".into()));
        }
        let limit = b.max_payload.unwrap_or(1 << 20);
        if msg.payload.len() > limit {
            return Err(TransportError::TooLarge { size: msg.payload.len(), limit });
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut targets = Vec::new();
        let mut any = false;
        for s in &b.subs {
            if subject_matches(&s.pattern, &msg.subject) {
                any = true;
                if !b.cut.contains(&(self.id, s.conn)) {
                    targets.push((s.conn, s.tx.clone()));
                }
            }
        }
        for (conn, tx) in targets {
            if let Some((_, n)) =
                b.drop_next.get_mut(&conn).filter(|(p, n)| *n > 0 && subject_matches(p, &msg.subject))
            {
                *n -= 1;
                continue;
            }
            let _ = tx.send(Incoming {
                subject: msg.subject.to_string(),
                reply: msg.reply.as_ref().map(|r| r.to_string()),
                payload: msg.payload.clone(),
                no_responders: false,
            });
        }
        if !any && let Some(reply) = msg.reply {
            for s in &b.subs {
                if s.conn == self.id && subject_matches(&s.pattern, &reply) {
                    let _ = s.tx.send(Incoming {
                        subject: reply.to_string(),
                        reply: None,
                        payload: Bytes::new(),
                        no_responders: true,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Transport for MemTransport {
    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<(), TransportError>> {
        let r = self.deliver(msg);
        Box::pin(async move { r })
    }

    fn try_publish(&self, msg: Outgoing) -> Option<Outgoing> {
        let _ = self.deliver(msg);
        None
    }

    fn subscribe(
        &self,
        subject: String,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Incoming>, TransportError>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.bus.inner.lock().subs.push(MemSub { conn: self.id, pattern: subject, tx });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Box::pin(async move { Ok(Box::pin(stream) as BoxStream<'static, Incoming>) })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }

    fn max_payload(&self) -> usize {
        self.bus.inner.lock().max_payload.unwrap_or(1 << 20)
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        match self.events.lock().take() {
            Some(mut rx) => Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))),
            None => Box::pin(futures::stream::empty()),
        }
    }

    fn names(&self) -> BoxFuture<'_, Option<Arc<dyn NameStore>>> {
        let store: Arc<dyn NameStore> = Arc::new(self.bus.clone());
        Box::pin(async move { Some(store) })
    }
}

impl NameStore for MemBus {
    fn create(&self, key: String, value: Bytes) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut b = self.inner.lock();
        let r = if b.kv.contains_key(&key) {
            Err(StoreError::Exists)
        } else {
            b.kv_rev += 1;
            let rev = b.kv_rev;
            b.kv.insert(key, (value, rev));
            Ok(rev)
        };
        Box::pin(async move { r })
    }

    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<(Bytes, u64)>, StoreError>> {
        let r = self.inner.lock().kv.get(&key).cloned();
        Box::pin(async move { Ok(r) })
    }

    fn update(&self, key: String, value: Bytes, revision: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut b = self.inner.lock();
        let r = match b.kv.get(&key) {
            Some((_, rev)) if *rev == revision => {
                b.kv_rev += 1;
                let rev = b.kv_rev;
                b.kv.insert(key, (value, rev));
                Ok(rev)
            }
            _ => Err(StoreError::Changed),
        };
        Box::pin(async move { r })
    }

    fn delete(&self, key: String, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut b = self.inner.lock();
        let r = match b.kv.get(&key) {
            Some((_, rev)) if *rev == revision => {
                b.kv.remove(&key);
                Ok(())
            }
            _ => Err(StoreError::Changed),
        };
        Box::pin(async move { r })
    }

    fn keys(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let keys = self.inner.lock().kv.keys().cloned().collect();
        Box::pin(async move { Ok(keys) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn wildcards() {
        assert!(subject_matches("vm.c.hb.*", "vm.c.hb.a"));
        assert!(!subject_matches("vm.c.hb.*", "vm.c.hb.a.b"));
        assert!(subject_matches("vm.c.r.a.1.>", "vm.c.r.a.1.b.2"));
        assert!(!subject_matches("vm.c.r.a.1.>", "vm.c.r.a.1"));
        assert!(!subject_matches("vm.c.n.a.1", "vm.c.n.a.2"));
    }

    #[tokio::test]
    async fn no_responders_and_faults() {
        let bus = MemBus::new();
        let a = bus.connect();
        let b = bus.connect();
        let mut a_reply = a.subscribe("r.a.>".into()).await.unwrap();
        let mut b_in = b.subscribe("n.b".into()).await.unwrap();
        let out = |s: &str| Outgoing {
            subject: s.into(),
            reply: Some("r.a.x".into()),
            payload: Bytes::from_static(b"1"),
        };
        a.publish(out("n.b")).await.unwrap();
        assert_eq!(b_in.next().await.unwrap().payload, Bytes::from_static(b"1"));
        a.publish(out("n.nobody")).await.unwrap();
        assert!(a_reply.next().await.unwrap().no_responders);
        // A partition drops silently: the subscriber exists, so no 503 either.
        bus.partition(&a, &b, true);
        a.publish(out("n.b")).await.unwrap();
        bus.partition(&a, &b, false);
        bus.drop_next(&b, "n.*", 1);
        a.publish(out("n.b")).await.unwrap();
        a.publish(Outgoing { payload: Bytes::from_static(b"2"), ..out("n.b") }).await.unwrap();
        assert_eq!(b_in.next().await.unwrap().payload, Bytes::from_static(b"2"));
        bus.kill(&b);
        a.publish(out("n.b")).await.unwrap();
        assert!(a_reply.next().await.unwrap().no_responders, "a killed connection's subjects answer 503");
    }
}
