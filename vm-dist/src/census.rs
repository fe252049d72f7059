//! Who is in a cluster, seen from outside it (`vm nodes`).
//!
//! 1. Every node announces itself on `vm.<cluster>.a.<name>` each heartbeat (see `node`), with
//!    its actor count and uptime. [`census`] subscribes to those subjects without joining: it
//!    takes no name, announces nothing, and no node sees it.
//! 2. It listens for one `wait` (a heartbeat and a little more, so that every live node has
//!    announced at least once) and keeps each name's newest incarnation.
//! 3. Announcements are untrusted input: one that does not decode is skipped.

use crate::id::{NodeId, NodeTable};
use crate::node::NodeInfo;
use crate::transport::{Transport, TransportError};
use crate::wire::{self, DecodeCtx, Limits, Signal};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The live nodes of `cluster`, as they announce themselves within `wait`, sorted by name.
pub async fn census(
    transport: &dyn Transport,
    cluster: &str,
    wait: Duration,
) -> Result<Vec<NodeInfo>, TransportError> {
    let mut announces = transport.subscribe(format!("vm.{cluster}.a.*")).await?;
    // The table only serves the decoder (pids in announcements have no meaning here).
    let table = NodeTable::new(NodeId { name: "census".into(), inc: 0 });
    let ctx = DecodeCtx { table: &table, module_hash: 0, limits: Limits::default() };
    let mut seen: HashMap<String, NodeInfo> = HashMap::new();
    let deadline = Instant::now() + wait;
    let start = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(m)) = tokio::time::timeout(left, announces.next()).await else { break };
        let Ok(env) = wire::decode(&ctx, &m.payload) else { continue };
        let Signal::Announce(a) = env.signal else { continue };
        let info = NodeInfo {
            id: env.from.clone(),
            actors: a.actors,
            uptime_ms: a.uptime_ms,
            last_heard_ms: start.elapsed().as_millis() as u64,
            direct: false,
        };
        match seen.get(&*env.from.name) {
            Some(old) if old.id.inc > info.id.inc => {}
            _ => {
                seen.insert(env.from.name.to_string(), info);
            }
        }
    }
    let mut nodes: Vec<NodeInfo> = seen.into_values().collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Config, Node};
    use crate::tap::Tap;
    use crate::transport::MemBus;
    use std::sync::Arc;

    #[tokio::test]
    async fn lists_the_live_nodes_without_joining() {
        let bus = MemBus::new();
        let mut cfg = Config::new("c", "a");
        cfg.heartbeat = Duration::from_millis(50);
        let (a, driver) =
            Node::start(cfg.clone(), Arc::new(bus.connect()), Arc::new(Tap::new(3).0)).await.unwrap();
        tokio::spawn(driver.run(|t| drop(tokio::spawn(t))));
        cfg.name = "b".into();
        let (b, driver) = Node::start(cfg, Arc::new(bus.connect()), Arc::new(Tap::new(5).0)).await.unwrap();
        tokio::spawn(driver.run(|t| drop(tokio::spawn(t))));
        let nodes = census(&bus.connect(), "c", Duration::from_millis(200)).await.unwrap();
        let got: Vec<(String, u64, u64)> =
            nodes.iter().map(|n| (n.id.name.to_string(), n.id.inc, n.actors)).collect();
        assert_eq!(got, vec![("a".into(), a.me().inc, 3), ("b".into(), b.me().inc, 5)]);
        // Nobody saw the census as a node.
        assert_eq!(a.nodes().iter().map(|n| n.id.name.to_string()).collect::<Vec<_>>(), vec!["b"]);
        b.leave().await;
        a.leave().await;
        let none = census(&bus.connect(), "c", Duration::from_millis(150)).await.unwrap();
        assert!(none.is_empty(), "{none:?}");
    }
}
