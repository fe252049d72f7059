//! `vm-under-test`: the `vm` command line, built inside the test crate so that its integration
//! tests can run it as a subprocess (Cargo only provides `CARGO_BIN_EXE_*` for a package's own
//! binaries).

fn main() -> std::process::ExitCode {
    vm_cli::main_entry()
}
