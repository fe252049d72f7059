//! The snapshot codec on a VM of 100,000 idle actors (each waiting in `recv`, as a server's
//! connection handlers or a spawn benchmark's actors do): converting the live states
//! (`snapshot::Writer`), encoding the file, and loading it back (decode, module and state
//! checks, then rebuilding every state with `snapshot::Reader`). The runtime's pause and
//! resume add the capture and the spawning around these; `docs/BENCHMARKS.md` has the figures.
//!
//! Run with `cargo bench -p vm-benches --bench snapshot`.
#![allow(clippy::print_stderr, reason = "a benchmark binary: printing its figures is its job")]

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use vm_core::snapshot::{self, Reader, Snapshot, Writer, v1};
use vm_core::{ActorState, Module, Value};

const ACTORS: u64 = 100_000;

const PROGRAM: &str = "
.func main 0
    recv r0
    ret r0
.end
.func idle 1
    recv r1
    ret r1
.end
";

fn module() -> Arc<Module> {
    Arc::new(vm_core::asm::assemble_str("idle.vasm", PROGRAM).expect("the bench program assembles"))
}

/// The live states of the idle actors, each with its id as its argument.
fn states(m: &Module) -> Vec<ActorState> {
    let f = m.func_index("idle").expect("idle");
    (0..ACTORS).map(|i| ActorState::new(m, f, vec![Value::Int(i as i64)]).expect("a state")).collect()
}

fn capture(m: &Arc<Module>, states: &[ActorState]) -> Snapshot {
    let mut w = Writer::new();
    let actors = states
        .iter()
        .enumerate()
        .map(|(i, st)| v1::Actor {
            pid: i as u64 + 1,
            state: w.state(st),
            wait: v1::Wait::Runnable,
            mailbox: vec![],
            signals: vec![],
            name: None,
            links: vec![],
            monitors: vec![],
            monitoring: vec![],
            trap_exit: false,
            max_mailbox: None,
        })
        .collect();
    Snapshot {
        meta: v1::Meta {
            counters: v1::Counters { next_pid: ACTORS + 1, next_ref: 1, next_chan: 1, next_handle: 1 },
            config: v1::Config {
                fuel: 10_000,
                max_frames: 100_000,
                max_actors: 4_000_000,
                hog_threshold_ms: 100,
                workers: None,
            },
            main: Some(1),
            ..v1::Meta::default()
        },
        module: m.clone(),
        values: w.finish(),
        actors,
        channels: vec![],
        tables: vec![],
        resources: vec![],
        limits: vec![],
        rngs: vec![],
        containers: vec![],
        shared_channels: vec![],
    }
}

fn restore(bytes: &[u8]) -> Vec<ActorState> {
    let s = snapshot::decode(bytes).expect("the snapshot loads");
    let r = Reader::new(s.values, HashMap::new(), HashMap::new());
    s.actors.iter().map(|a| r.state(&a.state)).collect()
}

fn bench(c: &mut Criterion) {
    let m = module();
    let live = states(&m);
    let bytes = snapshot::encode(&capture(&m, &live));
    eprintln!(
        "snapshot of {ACTORS} idle actors: {} bytes, {:.1} bytes per actor",
        bytes.len(),
        bytes.len() as f64 / ACTORS as f64
    );
    let mut g = c.benchmark_group("snapshot_100k_idle");
    g.sample_size(10);
    g.bench_function("capture", |b| b.iter(|| black_box(capture(&m, black_box(&live)))));
    let s = capture(&m, &live);
    g.bench_function("encode", |b| b.iter(|| black_box(snapshot::encode(black_box(&s)))));
    g.bench_function("decode_check_rebuild", |b| b.iter(|| black_box(restore(black_box(&bytes)))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
