//! The `vm` binary; all logic is in the `vm_cli` library.
fn main() -> std::process::ExitCode {
    vm_cli::main_entry()
}
