//! `vm-under-test`: the `vm` command line, built inside the test crate so that its integration
//! tests can run it as a subprocess (Cargo only provides `CARGO_BIN_EXE_*` for a package's own
//! binaries). It uses the real binary's allocator, counted for the memory budget.

#[global_allocator]
static GLOBAL: vm_cli::alloc::VmAllocator = vm_cli::alloc::vm_allocator();

fn main() -> std::process::ExitCode {
    vm_cli::main_entry()
}
