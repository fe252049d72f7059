//! The `vm` binary; all logic is in the `vm_cli` library.

/// mimalloc rather than glibc's malloc: message passing, channel waits and the socket natives
/// allocate and free small blocks on every worker thread, and mimalloc's thread-local free lists
/// made those paths measurably cheaper (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vm_cli::main_entry()
}
