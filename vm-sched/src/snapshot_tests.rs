//! Snapshots of a VM of containers, in process: what crosses between containers (links,
//! monitors, a published channel and its shared mark) survives a snapshot and a restore, and
//! so do each container's actors, module, names and status.

use super::{ContainerGrants, Granted, Settings, Timers, restore_containers, take};
use crate::container::{ContainerSpec, Status};
use crate::testing::{Lines, module};
use crate::vm::{Config, Vm};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_core::{Pid, Value};

/// `b` publishes itself and a channel, then waits for one message and stops with `:bye`.
const B: &str = r#"
.func main 0
    self r4
    const r3, "me"
    native r5, :publish, r3, 2
    int r1, 4
    chan r4, r1
    const r3, "chan"
    native r5, :publish, r3, 2
    recv r6
    const r7, :bye
    stop r7
.end
"#;

/// `a` finds `b` and its channel, links to and monitors `b`, says `ready` and waits for `:go`.
/// Then it sends a function value on the channel (refused: the channel is shared), tells `b`
/// to stop, and prints what its link and its monitor deliver.
const A: &str = r#"
.func main 0
    const r1, true
    trapexit r2, r1
    const r1, "b/me"
find:
    native r3, :lookup, r1, 1
    jt r3, found
    int r2, 2
    sleep r2
    jmp find
found:
    const r1, "b/chan"
    native r4, :lookup, r1, 1
    link r3
    monitor r5, r3
    const r1, "ready"
    print r1
    recv r6
    fun r7, helper
    try r8, refused
    csend r4, r7
    endtry
    const r1, "sent a function"
    print r1
    jmp next
refused:
    tget r1, r8, 0
    print r1
next:
    const r1, :stop
    send r3, r1
    recv r9
    print r9
    recv r9
    print r9
    ret r9
.end

.func helper 0
    ret r0
.end
"#;

/// `c` ends at once: a temporary container that stays down.
const C: &str = ".func main 0\n    nil r0\n    ret r0\n.end\n";

fn spec(name: &str, src: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        module: module(src),
        source: format!("{name}.vasm"),
        args: vec![],
        grants: vm_io::Grants::default(),
        allow_lookup: vec!["b".into()],
        limits: Default::default(),
        restart: Default::default(),
        intensity: Default::default(),
        priority: Default::default(),
    }
}

/// Waits (bounded) until `lines` holds `want`.
async fn until_printed(lines: &Lines, want: &str) {
    let start = Instant::now();
    while !lines.lines().iter().any(|l| l == want) {
        assert!(start.elapsed() < Duration::from_secs(20), "no {want:?} in {:?}", lines.lines());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn links_monitors_and_a_shared_channel_across_containers_survive_a_restore() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let before = Arc::new(Lines::default());
        let vm = Vm::new(Config::default(), before.clone());
        let _ends = vm.container_ends();
        for (name, src) in [("b", B), ("a", A), ("c", C)] {
            vm.start_container(spec(name, src)).unwrap();
        }
        until_printed(&before, "[a] ready").await;
        while vm.container("c").unwrap().status() == Status::Running {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // `a` waits in its receive, `b` in its own.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (s, _) = take(&vm, Settings::default()).await.unwrap();
        let names: Vec<&str> = s.containers.iter().map(|c| c.spec.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(s.shared_channels.len(), 1, "the channel `a` looked up is shared");
        let s = vm_core::snapshot::decode(&vm_core::snapshot::encode(&s)).expect("it loads");

        let after = Arc::new(Lines::default());
        let fresh = Vm::new(Config::default(), after.clone());
        let _ends = fresh.container_ends();
        let grants: ContainerGrants =
            ["a", "b", "c"].map(|n| (n.to_string(), Granted::default())).into_iter().collect();
        restore_containers(&fresh, s, Timers::Frozen, &grants).await;
        let (a, b, c) =
            (fresh.container("a").unwrap(), fresh.container("b").unwrap(), fresh.container("c").unwrap());
        assert_eq!((a.status(), b.status(), c.status()), (Status::Running, Status::Running, Status::Ended));
        assert_eq!((a.live(), b.live(), c.live()), (1, 1, 0));
        assert_eq!(b.services(), ["chan", "me"]);
        assert_eq!(b.spec.allow_lookup, Vec::<String>::new(), "grants come from the caller's map");
        let root = a.root().unwrap();
        assert!(Arc::ptr_eq(&fresh.lookup(root).unwrap().container, &a));
        fresh.send(root, Value::atom("go"));
        let b_root: Pid = b.root().unwrap();
        let start = Instant::now();
        while after.len() < 3 {
            assert!(start.elapsed() < Duration::from_secs(20), "{:?}", after.lines());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut printed = after.lines();
        assert_eq!(printed[0], "[a] :badarg", "the channel is still shared: {printed:?}");
        printed[1..].sort();
        assert_eq!(printed[1], format!("[a] {{:DOWN, 1, {b_root}, :bye}}"), "the monitor: {printed:?}");
        assert_eq!(printed[2], format!("[a] {{:EXIT, {b_root}, :bye}}"), "the link: {printed:?}");
    });
}
