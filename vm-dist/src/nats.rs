//! The NATS transport: core NATS through async-nats for every signal, JetStream key-value for
//! global names.
//!
//! 1. One client connection per node. async-nats runs the connection on a tokio task of its
//!    own (spawned by `connect`): the one place outside vm-sched where a task is spawned.
//! 2. Credentials: a user and password (the password only from the environment, never a flag),
//!    an nkey seed, or a `.creds` file (JWT + nkey). TLS: a CA file to trust, an optional client
//!    certificate, or `require_tls`. A refused login is [`TransportError::Auth`].
//! 3. The connection's own events (disconnected, reconnected, slow consumer) become
//!    [`TransportEvent`]s; a 503 status on a reply subject becomes an [`Incoming`] with
//!    `no_responders` set.
//! 4. Global names use the JetStream bucket `vm_<cluster>_names` (memory storage, history 1);
//!    a server without JetStream has no name store.
//! 5. With `system` options (a user of the server's system account), a second connection
//!    subscribes to `$SYS.ACCOUNT.*.DISCONNECT`: the server announces there, within
//!    milliseconds, every client connection that closes, by the client's name (a node's is
//!    `vm.<cluster>.<node>.<incarnation>`, see `node::client_name`).

use crate::transport::{
    Incoming, NameStore, Outgoing, StoreError, Transport, TransportError, TransportEvent,
};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub use crate::options::{NatsOptions, PASSWORD_ENV};

/// A NATS connection.
pub struct NatsTransport {
    client: async_nats::Client,
    events: Mutex<Option<mpsc::UnboundedReceiver<TransportEvent>>>,
    bucket: String,
    departures: Mutex<Option<BoxStream<'static, String>>>,
}

impl NatsTransport {
    /// Connects; `cluster` names the global-names bucket.
    pub async fn connect(opts: &NatsOptions, cluster: &str) -> Result<NatsTransport, TransportError> {
        let departures = match &opts.system {
            Some(sys) => {
                let watcher = Box::pin(Self::connect(sys, cluster)).await?;
                let sub = watcher.client.subscribe("$SYS.ACCOUNT.*.DISCONNECT").await.map_err(other)?;
                // The subscription keeps the watcher's connection open as long as it is read.
                let _keep = watcher.client.clone();
                let names = sub.filter_map(move |m| {
                    let _ = &_keep;
                    let name = serde_json::from_slice::<serde_json::Value>(&m.payload)
                        .ok()
                        .and_then(|v| v["client"]["name"].as_str().map(String::from));
                    async move { name }
                });
                Some(Box::pin(names) as BoxStream<'static, String>)
            }
            None => None,
        };
        if opts.urls.is_empty() {
            return Err(TransportError::Connection("no server URL given".into()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut o = async_nats::ConnectOptions::new()
            .event_callback(move |e| {
                let tx = tx.clone();
                async move {
                    let ev = match e {
                        async_nats::Event::Connected => TransportEvent::Connected,
                        async_nats::Event::Disconnected => TransportEvent::Disconnected,
                        async_nats::Event::SlowConsumer(_) => TransportEvent::SlowConsumer,
                        async_nats::Event::Closed => TransportEvent::Closed,
                        other => {
                            tracing::debug!(event = %other, "nats event");
                            return;
                        }
                    };
                    let _ = tx.send(ev);
                }
            })
            .connection_timeout(Duration::from_secs(5))
            // Subjects are built from checked names (`check_node_name`), so the client need not
            // scan every one again.
            .skip_subject_validation(true);
        if let Some(name) = &opts.client_name {
            o = o.name(name);
        }
        if let Some(p) = opts.ping_interval {
            o = o.ping_interval(p);
        }
        let urls: Vec<async_nats::ServerAddr> = opts
            .urls
            .iter()
            .map(|u| u.parse().map_err(|e| TransportError::Connection(format!("bad server URL {u:?}: {e}"))))
            .collect::<Result<_, _>>()?;
        if let Some(user) = &opts.user {
            o = o.user_and_password(user.clone(), opts.password.clone().unwrap_or_default());
        } else if let Some(url) = urls.iter().find(|u| u.has_user_pass()) {
            // `nats://user:password@host` (the client does not apply these by itself).
            let user = url.username().unwrap_or_default().to_string();
            o = o.user_and_password(user, url.password().unwrap_or_default().to_string());
        }
        if let Some(path) = &opts.nkey_file {
            let seed = std::fs::read_to_string(path).map_err(|e| {
                TransportError::Auth(format!("cannot read nkey file {}: {e}", path.display()))
            })?;
            o = o.nkey(seed.trim().to_string());
        }
        if let Some(path) = &opts.creds_file {
            o = o.credentials_file(path).await.map_err(|e| {
                TransportError::Auth(format!("cannot read credentials file {}: {e}", path.display()))
            })?;
        }
        if let Some(ca) = &opts.tls_ca {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &opts.tls_client {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        if opts.require_tls || opts.tls_ca.is_some() {
            o = o.require_tls(true);
        }
        let client = o.connect(urls).await.map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Authentication => TransportError::Auth(e.to_string()),
            _ => TransportError::Connection(e.to_string()),
        })?;
        Ok(NatsTransport {
            client,
            events: Mutex::new(Some(rx)),
            bucket: format!("vm_{cluster}_names"),
            departures: Mutex::new(departures),
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

fn other(e: impl std::fmt::Display) -> TransportError {
    TransportError::Other(e.to_string())
}

impl Transport for NatsTransport {
    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let limit = self.client.max_payload();
            if msg.payload.len() > limit {
                return Err(TransportError::TooLarge { size: msg.payload.len(), limit });
            }
            let r = match msg.reply {
                Some(reply) => {
                    self.client
                        .publish_with_reply(msg.subject.to_string(), reply.to_string(), msg.payload)
                        .await
                }
                None => self.client.publish(msg.subject.to_string(), msg.payload).await,
            };
            r.map_err(other)
        })
    }

    fn try_publish(&self, msg: Outgoing) -> Option<Outgoing> {
        // The client's publish only queues a command on a bounded channel: with room there it
        // completes on its first poll, and a publish dropped before that sent nothing.
        match self.publish(msg.clone()).now_or_never() {
            Some(Err(e)) => {
                tracing::warn!(error = %e, "publish failed");
                None
            }
            Some(Ok(())) => None,
            None => Some(msg),
        }
    }

    fn subscribe(
        &self,
        subject: String,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Incoming>, TransportError>> {
        Box::pin(async move {
            let sub = self.client.subscribe(subject).await.map_err(other)?;
            let stream = sub.map(|m| Incoming {
                no_responders: m.status == Some(async_nats::StatusCode::NO_RESPONDERS),
                subject: m.subject.to_string(),
                reply: m.reply.map(|r| r.to_string()),
                payload: m.payload,
            });
            Ok(Box::pin(stream) as BoxStream<'static, Incoming>)
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move { self.client.flush().await.map_err(other) })
    }

    fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    fn events(&self) -> BoxStream<'static, TransportEvent> {
        match self.events.lock().take() {
            Some(mut rx) => Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))),
            None => Box::pin(futures::stream::empty()),
        }
    }

    fn departures(&self) -> BoxStream<'static, String> {
        self.departures.lock().take().unwrap_or_else(|| Box::pin(futures::stream::empty()))
    }

    fn names(&self) -> BoxFuture<'_, Option<Arc<dyn NameStore>>> {
        Box::pin(async move {
            let js = async_nats::jetstream::new(self.client.clone());
            // The bucket's stream is created directly, with the settings JetStream KV uses:
            // async-nats's `create_key_value` first reads the account's limits in a shape that
            // nats-server 2.9 does not answer, and fails there.
            let stream = async_nats::jetstream::stream::Config {
                name: format!("KV_{}", self.bucket),
                subjects: vec![format!("$KV.{}.>", self.bucket)],
                max_messages_per_subject: 1,
                storage: async_nats::jetstream::stream::StorageType::Memory,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                num_replicas: 1,
                discard: async_nats::jetstream::stream::DiscardPolicy::New,
                max_message_size: -1,
                max_bytes: -1,
                ..Default::default()
            };
            if let Err(e) = js.get_or_create_stream(stream).await {
                tracing::info!("no JetStream, so no global names: {e}");
                return None;
            }
            let store = js
                .get_key_value(&self.bucket)
                .await
                .map_err(|e| tracing::warn!("the global-names bucket is unusable: {e}"))
                .ok()?;
            Some(Arc::new(KvNames(store)) as Arc<dyn NameStore>)
        })
    }
}

/// JetStream key-value as a [`NameStore`].
struct KvNames(kv::Store);

impl NameStore for KvNames {
    fn create(&self, key: String, value: Bytes) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.0.create(key, value).await.map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => StoreError::Exists,
                _ => StoreError::Other(e.to_string()),
            })
        })
    }

    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<(Bytes, u64)>, StoreError>> {
        Box::pin(async move {
            let e = self.0.entry(key).await.map_err(|e| StoreError::Other(e.to_string()))?;
            Ok(e.filter(|e| e.operation == kv::Operation::Put).map(|e| (e.value, e.revision)))
        })
    }

    fn update(&self, key: String, value: Bytes, revision: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.0.update(key, value, revision).await.map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => StoreError::Changed,
                _ => StoreError::Other(e.to_string()),
            })
        })
    }

    fn delete(&self, key: String, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // The server refuses a delete at another revision; async-nats reports that as an
            // error of kind `Other`, so every failure here means "not deleted".
            self.0.delete_expect_revision(key, Some(revision)).await.map_err(|_| StoreError::Changed)
        })
    }

    fn keys(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let keys = self.0.keys().await.map_err(|e| StoreError::Other(e.to_string()))?;
            Ok(keys.filter_map(|k| async move { k.ok() }).collect::<Vec<_>>().await)
        })
    }
}
