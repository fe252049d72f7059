//! The `vm` binary; all logic is in the `vm_cli` library.

/// mimalloc, counted for the VM-wide memory budget (`vm_cli::alloc`).
#[global_allocator]
static GLOBAL: vm_cli::alloc::VmAllocator = vm_cli::alloc::vm_allocator();

fn main() -> std::process::ExitCode {
    vm_cli::main_entry()
}
