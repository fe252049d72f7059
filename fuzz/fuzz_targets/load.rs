//! Feeds arbitrary bytes to the loader (decode + verify). Any panic, overflow or runaway
//! allocation is a bug: `vm_core::load` must return `Ok` or `Err` for every input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(module) = vm_core::load(data) {
        // A module that loads must survive the rest of the pipeline that handles untrusted
        // files: re-encoding gives a file that loads to the same module, and the disassembler
        // renders it without panicking.
        let bytes = vm_core::bytecode::encode(&module);
        let again = vm_core::load(&bytes).expect("a re-encoded module loads");
        assert!(again == module, "re-encoding changed the module");
        let _ = vm_core::disasm::disassemble(&module);
    }
});
