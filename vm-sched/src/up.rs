//! `vm up`: several containers in one VM, supervised by their restart types.
//!
//! [`block_on_up`] builds the runtime as `vm run` does (`run::on_runtime`: standard output,
//! worker threads), starts every container of the manifest in order, then supervises:
//! 1. A container ends when its root actor ends (`container`, rule 6); its end arrives here.
//! 2. `temporary`: reported, stays down. `transient`: restarted (a fresh container from the
//!    same spec) after an abnormal end; a normal end leaves it down; more than
//!    `intensity.max_restarts` restarts within `intensity.period_ms` leave it down too, reported
//!    as a crash loop. `permanent`: its end stops every other container and ends the VM —
//!    [`UpOutcome::PermanentEnded`], status 1 after a crash, 0 after a normal end.
//! 3. When no container runs any more, [`UpOutcome::AllEnded`]; when no actor can ever run
//!    again while some container is up, [`UpOutcome::Deadlock`] with the report.
//! 4. A container stopped on purpose (`Vm::stop_container`, the REPL's `stop`) is not
//!    restarted, whatever its type (whoever stopped it reports it).
//! 5. In the REPL ([`supervise_session`]) the same rules apply while the session lasts, except
//!    that a permanent container's end stops every other container but not the session.
//!
//! What happens is told through the caller's `report` callback, one line per event (the CLI
//! prints them on standard error): this crate prints nothing.
//!
//! **Snapshots** ([`block_on_up_with`], `vm up --snapshot`, `vm resume --manifest`), as
//! `persist` does for one program:
//! 1. With a [`Persist`], a snapshotter takes one every `Persist::every`, and with `on_term`
//!    SIGTERM takes a last one and ends the VM ([`UpOutcome::Snapshotted`], status 0).
//! 2. A resume ([`UpStart::Resume`]) restores the snapshot's containers and actors with the
//!    grants of the manifest only (`snapshot::restore_containers`), then starts fresh the
//!    manifest's containers that the snapshot lacks. Its ends are supervised from before the
//!    restore, so a root that ends at once is seen. Restart intensities start afresh.

use crate::container::{ContainerEnd, ContainerSpec, Restart, Status};
use crate::persist::Persist;
use crate::run::{RunError, RunOptions, on_runtime};
use crate::snapshot::{ContainerGrants, Settings, Timers};
use crate::vm::Vm;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_core::snapshot::Snapshot;

/// How `vm up` ended.
#[derive(Clone, Debug, PartialEq)]
pub enum UpOutcome {
    /// Every container ended and none is to be restarted.
    AllEnded,
    /// A permanent container ended, which ends the VM.
    PermanentEnded {
        /// Its name.
        name: String,
        /// Its root's exit reason, as the program would write it.
        reason: String,
        /// Whether it crashed (an abnormal end).
        crashed: bool,
    },
    /// No actor can run again; the report names each actor and what it waits on.
    Deadlock(String),
    /// A container could not be started.
    StartFailed(String),
    /// SIGTERM took a last snapshot (`--snapshot-on-term`) and ended the VM.
    Snapshotted,
}

/// How `vm up` starts.
pub enum UpStart {
    /// The manifest's containers, started fresh.
    Fresh(Vec<ContainerSpec>),
    /// A snapshot of a VM of containers (`vm resume --manifest`).
    Resume {
        /// The snapshot.
        snapshot: Box<Snapshot>,
        /// How its timers count the downtime.
        timers: Timers,
        /// Each of its containers' grants, from the manifest
        /// (`snapshot::grants_from_manifest`).
        grants: ContainerGrants,
        /// The manifest's containers that the snapshot lacks, started fresh.
        fresh: Vec<ContainerSpec>,
    },
}

/// Where `vm up` tells what happens to its containers (one line each).
pub type Report = Arc<dyn Fn(&str) + Send + Sync>;

/// Runs `specs` as containers of one VM until the supervision rules above end it.
pub fn block_on_up(
    specs: Vec<ContainerSpec>,
    opts: RunOptions,
    report: Report,
) -> Result<UpOutcome, RunError> {
    block_on_up_with(UpStart::Fresh(specs), opts, None, report)
}

/// [`block_on_up`], starting fresh or from a snapshot, with snapshots to `persist` if given
/// (see the module docs). A resumed VM keeps the snapshot's runtime settings, as
/// `persist::resume_options` says.
pub fn block_on_up_with(
    start: UpStart,
    opts: RunOptions,
    persist: Option<Persist>,
    report: Report,
) -> Result<UpOutcome, RunError> {
    let fresh = match &start {
        UpStart::Fresh(specs) => specs,
        UpStart::Resume { fresh, .. } => fresh,
    };
    for s in fresh {
        crate::run::check_main(&s.module)
            .map_err(|e| RunError::Usage(format!("container {}: {e}", s.name)))?;
    }
    let (opts, config) = match &start {
        UpStart::Fresh(_) => (opts.clone(), opts.config()),
        UpStart::Resume { snapshot, .. } => crate::persist::resume_options(snapshot, &opts),
    };
    let workers = opts.workers.map(|n| n.get() as u32);
    on_runtime(&opts, config, None, move |vm| async move {
        if persist.as_ref().is_some_and(|p| p.every.is_some()) {
            // As `persist` does: parked actors leave their state where a pause reads it.
            vm.arm_pauses();
        }
        let mut ends = vm.container_ends();
        let (specs, incarnation) = match start {
            UpStart::Fresh(specs) => (specs, 0),
            UpStart::Resume { snapshot, timers, grants, fresh } => {
                let incarnation = snapshot.meta.incarnation + 1;
                crate::snapshot::restore_containers(&vm, *snapshot, timers, &grants).await;
                (fresh, incarnation)
            }
        };
        if let Err(e) = start_all(&vm, specs) {
            return Ok(UpOutcome::StartFailed(e));
        }
        let Some(persist) = persist else { return Ok(watch(&vm, &mut ends, &report).await) };
        let settings = Settings { main: None, schedule: persist.schedule(), workers, incarnation };
        let snapshotter = tokio::spawn(crate::persist::snapshot_loop(vm.clone(), settings, persist.clone()));
        let term = persist.on_term.then(vm_io::ctrl_c::CtrlC::term).transpose().map_err(|e| e.to_string())?;
        let outcome = tokio::select! {
            outcome = watch(&vm, &mut ends, &report) => outcome,
            () = crate::persist::sigterm(term) => {
                // A last snapshot, then a clean end.
                snapshotter.abort();
                match crate::snapshot::take_and_stop(&vm, settings).await {
                    Ok((s, _)) => crate::persist::write(s, persist.clone()).await,
                    Err(e) => tracing::error!("no snapshot on SIGTERM: {e}"),
                }
                UpOutcome::Snapshotted
            }
        };
        snapshotter.abort();
        Ok(outcome)
    })
}

/// Starts the containers and applies their restart types; see the module docs.
pub async fn supervise(vm: &Vm, specs: Vec<ContainerSpec>, report: &Report) -> UpOutcome {
    let mut ends = vm.container_ends();
    if let Err(e) = start_all(vm, specs) {
        return UpOutcome::StartFailed(e);
    }
    watch(vm, &mut ends, report).await
}

/// Starts `specs` in order; on an error, stops every container and says why.
fn start_all(vm: &Vm, specs: Vec<ContainerSpec>) -> Result<(), String> {
    for spec in specs {
        if let Err(e) = vm.start_container(spec) {
            stop_all(vm);
            return Err(e);
        }
    }
    Ok(())
}

/// Applies the restart types of the containers as they end, until the rules end the VM.
async fn watch(
    vm: &Vm,
    ends: &mut tokio::sync::mpsc::UnboundedReceiver<ContainerEnd>,
    report: &Report,
) -> UpOutcome {
    let mut restarts: HashMap<String, VecDeque<Instant>> = HashMap::new();
    loop {
        if vm.containers().iter().all(|c| c.status() == Status::Ended) {
            // Ends already queued are reported before the VM goes.
            while let Ok(end) = ends.try_recv() {
                if let Some(out) = on_end(vm, end, &mut restarts, report, true) {
                    return out;
                }
            }
            if vm.containers().iter().all(|c| c.status() == Status::Ended) {
                return UpOutcome::AllEnded;
            }
        }
        tokio::select! {
            end = ends.recv() => {
                let Some(end) = end else { return UpOutcome::AllEnded };
                if let Some(out) = on_end(vm, end, &mut restarts, report, true) {
                    return out;
                }
            }
            () = vm.shared.idle.notified() => {
                if vm.stuck().await && ends.is_empty() {
                    return UpOutcome::Deadlock(vm.deadlock_report());
                }
            }
        }
    }
}

/// Supervises the containers started in a REPL session (rule 5) until the session's runtime
/// goes: each end is applied as `vm up` applies it, told through `report`.
pub async fn supervise_session(vm: Vm, report: Report) {
    let mut ends = vm.container_ends();
    let mut restarts: HashMap<String, VecDeque<Instant>> = HashMap::new();
    while let Some(end) = ends.recv().await {
        on_end(&vm, end, &mut restarts, &report, false);
    }
}

/// Applies the restart type of the container that ended; `Some` ends the VM (only when
/// `whole_vm`: under `vm up`, not in the REPL).
fn on_end(
    vm: &Vm,
    end: ContainerEnd,
    restarts: &mut HashMap<String, VecDeque<Instant>>,
    report: &Report,
    whole_vm: bool,
) -> Option<UpOutcome> {
    let spec = &end.container.spec;
    let how = if end.abnormal { "crashed" } else { "ended" };
    let reason = end.reason.repr();
    if end.stopped {
        // Whoever stopped it says so (the REPL's `stop`); it is not restarted.
        return None;
    }
    match spec.restart {
        Restart::Permanent if !whole_vm => {
            report(&format!(
                "container {} (permanent) {how} with reason {reason}: stopping every container",
                spec.name
            ));
            stop_all(vm);
            None
        }
        Restart::Permanent => {
            report(&format!(
                "container {} ({}) {how} with reason {reason}: stopping the VM",
                spec.name,
                spec.restart.name()
            ));
            stop_all(vm);
            Some(UpOutcome::PermanentEnded { name: spec.name.clone(), reason, crashed: end.abnormal })
        }
        Restart::Temporary => {
            report(&format!("container {} (temporary) {how} with reason {reason}; it stays down", spec.name));
            None
        }
        Restart::Transient if !end.abnormal => {
            report(&format!("container {} (transient) ended normally; it stays down", spec.name));
            None
        }
        Restart::Transient => {
            let now = Instant::now();
            let period = Duration::from_millis(spec.intensity.period_ms);
            let recent = restarts.entry(spec.name.clone()).or_default();
            while recent.front().is_some_and(|t| now.duration_since(*t) > period) {
                recent.pop_front();
            }
            if recent.len() >= spec.intensity.max_restarts as usize {
                report(&format!(
                    "container {} (transient) crashed with reason {reason}, its {}th crash within {} ms: \
                     it stays down (restart intensity reached)",
                    spec.name,
                    recent.len() + 1,
                    spec.intensity.period_ms
                ));
                return None;
            }
            recent.push_back(now);
            report(&format!(
                "container {} (transient) crashed with reason {reason}; restarting it",
                spec.name
            ));
            if let Err(e) = vm.start_container(spec.clone()) {
                report(&format!("container {} could not be restarted: {e}", spec.name));
            }
            None
        }
    }
}

/// Stops every running container (the VM is ending).
fn stop_all(vm: &Vm) {
    for c in vm.containers() {
        if c.status() == Status::Running {
            let _ = vm.stop_container(c.name(), vm_core::Value::atom("shutdown"));
        }
    }
}
