//! Test support, compiled for this crate's tests and for other crates that enable the `testing`
//! feature: assembling a program, running it in-process on a real multi-thread runtime, and
//! capturing what it prints.

use crate::vm::{Config, Outcome, Output, Vm};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use vm_core::Module;

/// An [`Output`] that keeps every line printed, in order.
#[derive(Default)]
pub struct Lines(Mutex<Vec<String>>);

impl Lines {
    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many lines have been printed.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing has been printed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Output for Lines {
    fn line(&self, text: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(text.to_string());
    }
}

/// An in-memory byte stream (for a [`vm_io::Output`] standing in for standard output); clones
/// share the bytes.
#[derive(Clone, Default)]
pub struct Bytes(Arc<Mutex<Vec<u8>>>);

impl Bytes {
    /// What was written, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Bytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Assembles and verifies `src` (named `t.vasm`), panicking with the errors if it is not a valid
/// program.
pub fn module(src: &str) -> Arc<Module> {
    let m = vm_core::asm::assemble_str("t.vasm", src).unwrap_or_else(|e| panic!("{e}"));
    vm_core::verify::verify(&m).unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(m)
}

/// How to run a program in-process.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The VM's configuration (fuel, limits, permissions).
    pub config: Config,
    /// Worker threads of the runtime.
    pub workers: usize,
    /// `main`'s command-line arguments.
    pub args: Vec<String>,
    /// How long the program may run before the run gives up on it.
    pub limit: Duration,
}

impl Default for Setup {
    /// The default configuration, two workers, no arguments, 30 s.
    fn default() -> Setup {
        Setup { config: Config::default(), workers: 2, args: vec![], limit: Duration::from_secs(30) }
    }
}

/// Runs `src`'s `main` on a new multi-thread runtime as `setup` says; returns its outcome
/// (`None` if it had not ended within the limit) and the lines it printed. Actors still running
/// when `main` ends are abandoned with the runtime, as `vm run` abandons them.
pub fn run_with(src: &str, setup: Setup) -> (Option<Outcome>, Vec<String>) {
    let module = module(src);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(setup.workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let out = Arc::new(Lines::default());
    let sink = out.clone();
    let Setup { config, args, limit, .. } = setup;
    let outcome = rt.block_on(async move {
        let vm = Vm::new(config, sink);
        tokio::time::timeout(limit, vm.run_main(module, args)).await
    });
    rt.shutdown_background();
    (outcome.ok().map(|o| o.expect("main starts")), out.lines())
}

/// Runs `src` with the default [`Setup`]; panics if it has not ended within the limit.
pub fn run(src: &str) -> (Outcome, Vec<String>) {
    let (outcome, lines) = run_with(src, Setup::default());
    (outcome.expect("the program did not finish within 30 s"), lines)
}

/// Owned lines, to compare with what a program printed.
pub fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
