//! Feeds arbitrary text to the assembler. It must return `Ok` or `Err` for every input, and a
//! module it produces that passes verification must survive the whole tool chain: it is
//! canonical, it encodes to bytes that load back to the same module, and its disassembly
//! re-assembles to identical bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_core::{asm, bytecode, disasm, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(module) = asm::assemble_str("fuzz.vasm", text) else { return };
    let listing = disasm::disassemble(&module);
    if verify::verify(&module).is_err() {
        return;
    }
    assert!(
        disasm::is_canonical(&module),
        "assembler output is not canonical: {:?}",
        disasm::canonical_problems(&module)
    );
    let bytes = bytecode::encode(&module);
    let loaded = vm_core::load(&bytes).expect("an assembled, verified module loads");
    assert!(loaded == module, "encode/load changed the module");
    let again = asm::assemble_str("fuzz.vasm", &listing)
        .unwrap_or_else(|e| panic!("the disassembly does not assemble: {e}\n{listing}"));
    assert!(bytecode::encode(&again) == bytes, "disassemble + assemble changed the bytes:\n{listing}");
});
