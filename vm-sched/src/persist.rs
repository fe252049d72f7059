//! Running a program with snapshots to a file: what `vm run --snapshot PATH` and `vm resume PATH`
//! call (the file's durability is `vm_io::durable`'s, its format `vm_core::snapshot`'s).
//!
//! 1. The VM starts fresh (`main` with its arguments) or from a snapshot ([`Start`]); a resumed
//!    VM keeps the snapshot's settings (fuel, frame limit, actor limit; how often, how many
//!    generations, on SIGTERM) and has exactly the grants given now.
//! 2. A snapshotter task takes a snapshot every [`Persist::every`] (if set): the pause is short
//!    (`snapshot::take`), then the snapshot is checked (a file this VM would refuse is never
//!    written), encoded and written on the blocking pool while the VM runs on. One snapshot at a
//!    time; a write that fails is logged and the VM carries on.
//! 3. With [`Persist::on_term`], SIGTERM takes a last snapshot, writes it, and the run ends as if
//!    `main` had returned (exit status 0).
//! 4. The run ends when `main` does (or the VM deadlocks), as `vm run` does.

use crate::run::{RunError, RunOptions, on_runtime};
use crate::snapshot::{self, Settings, Timers};
use crate::vm::{Config, Outcome, Vm};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vm_core::snapshot::{Snapshot, v1};
use vm_core::{Module, Pid, Value};

/// Where and when to write snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// The file (its generations are `PATH.1`, `PATH.2`, ...).
    pub path: PathBuf,
    /// Take one this often.
    pub every: Option<Duration>,
    /// Take one on SIGTERM, then end the run.
    pub on_term: bool,
    /// How many generations to keep (at least 1).
    pub keep: usize,
}

impl Persist {
    pub(crate) fn schedule(&self) -> v1::Schedule {
        v1::Schedule {
            every_ms: self.every.map(|d| d.as_millis() as u64),
            on_term: self.on_term,
            keep: self.keep as u32,
        }
    }

    /// The settings a snapshot recorded, writing to `path` again.
    pub fn from_schedule(path: PathBuf, s: v1::Schedule) -> Persist {
        Persist {
            path,
            every: s.every_ms.map(Duration::from_millis),
            on_term: s.on_term,
            keep: (s.keep as usize).max(1),
        }
    }
}

/// Why a snapshot of containers is not resumed as one program.
pub const CONTAINERS_NEED_A_MANIFEST: &str = "the snapshot is of a VM of several containers (`vm up`): \
     resume it with `vm resume --manifest MANIFEST.json`, whose entries give each container its grants \
     (a snapshot holds none)";

/// How a run with snapshots starts.
pub enum Start {
    /// `main` of this module, with these arguments.
    Fresh(Arc<Module>, Vec<String>),
    /// A snapshot, with timers counting the downtime or not.
    Resume(Box<Snapshot>, Timers),
}

/// The runtime settings a resumed VM takes from its snapshot, with `opts`'s grants and, if given
/// there, its worker count.
pub fn resume_options(s: &Snapshot, opts: &RunOptions) -> (RunOptions, Config) {
    let c = s.meta.config;
    let workers = opts.workers.or_else(|| c.workers.and_then(|n| std::num::NonZeroUsize::new(n as usize)));
    let opts = RunOptions { fuel_per_slice: c.fuel, max_frames: c.max_frames, workers, ..opts.clone() };
    let config =
        Config { max_actors: c.max_actors as usize, hog_threshold_ms: c.hog_threshold_ms, ..opts.config() };
    (opts, config)
}

/// Runs a program with snapshots (see the module docs) and returns how `main` ended.
pub fn block_on_persistent(start: Start, opts: RunOptions, persist: Persist) -> Result<Outcome, RunError> {
    if let Start::Resume(s, _) = &start
        && !s.containers.is_empty()
    {
        return Err(RunError::Usage(CONTAINERS_NEED_A_MANIFEST.into()));
    }
    let (opts, config) = match &start {
        Start::Fresh(module, _) => {
            crate::run::check_main(module)?;
            (opts.clone(), opts.config())
        }
        Start::Resume(s, _) => resume_options(s, &opts),
    };
    let workers = opts.workers.map(|n| n.get() as u32);
    on_runtime(&opts, config, None, move |vm| async move {
        // Snapshots on a schedule: parked actors leave their state where a pause reads it from
        // the start, so that no pause has to wake them (`pause`, step 2).
        if persist.every.is_some() {
            vm.arm_pauses();
        }
        let (main, incarnation) = match start {
            Start::Fresh(module, args) => (vm.start_main(module, args)?, 0),
            Start::Resume(s, timers) => {
                let incarnation = s.meta.incarnation + 1;
                let Some(pid) = s.meta.main.map(Pid) else {
                    return Err("the snapshot has no main actor (it was taken in a REPL session)".into());
                };
                let rx =
                    snapshot::restore(&vm, *s, timers).await.ok_or("the snapshot's main actor is missing")?;
                ((pid, rx), incarnation)
            }
        };
        let settings = Settings { main: Some(main.0), schedule: persist.schedule(), workers, incarnation };
        let snapshotter = tokio::spawn(snapshot_loop(vm.clone(), settings, persist.clone()));
        let term = persist.on_term.then(vm_io::ctrl_c::CtrlC::term).transpose().map_err(|e| e.to_string())?;
        let outcome = tokio::select! {
            outcome = vm.wait_for_main(main.1) => outcome,
            () = sigterm(term) => {
                // A last snapshot, then a clean end.
                snapshotter.abort();
                match snapshot::take_and_stop(&vm, settings).await {
                    Ok((s, _)) => write(s, persist.clone()).await,
                    Err(e) => tracing::error!("no snapshot on SIGTERM: {e}"),
                }
                Outcome::Exited(Value::Nil)
            }
        };
        snapshotter.abort();
        Ok(outcome)
    })
}

pub(crate) async fn sigterm(term: Option<vm_io::ctrl_c::CtrlC>) {
    match term {
        Some(mut t) => t.pressed().await,
        None => std::future::pending().await,
    }
}

/// Step 2: a snapshot every `persist.every`, written before the next is taken.
pub(crate) async fn snapshot_loop(vm: Vm, settings: Settings, persist: Persist) {
    let Some(every) = persist.every else { return };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match snapshot::take(&vm, settings).await {
            Ok((s, pause)) => {
                tracing::debug!(
                    pause_us = pause.as_micros() as u64,
                    actors = s.actors.len(),
                    "snapshot taken"
                );
                write(s, persist.clone()).await;
            }
            Err(e) => tracing::error!("no snapshot: {e}"),
        }
    }
}

/// Checks, encodes and writes a snapshot on the blocking pool; failures are logged.
pub(crate) async fn write(s: Snapshot, persist: Persist) {
    if let Err(e) = write_file(s, persist.path, persist.keep).await {
        tracing::error!("snapshot {e}");
    }
}

/// Checks, encodes and writes a snapshot to `path` on the blocking pool.
pub async fn write_file(s: Snapshot, path: PathBuf, keep: usize) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        vm_core::snapshot::check(&s).map_err(|e| format!("not written, it would not load: {e}"))?;
        let bytes = vm_core::snapshot::encode(&s);
        vm_io::durable::write(&path, &bytes, keep)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    })
    .await
    .map_err(|e| format!("snapshot writer failed: {e}"))?
}

/// Reads the newest generation of `path` that loads, for `vm resume`: the snapshot, and the
/// newer generations refused (each file with the reason).
pub fn load(path: &std::path::Path) -> Result<(Snapshot, Vec<(PathBuf, String)>), String> {
    vm_io::durable::load_newest(path, vm_core::snapshot::decode)
        .map(|l| (l.value, l.refused))
        .map_err(|e| e.to_string())
}
