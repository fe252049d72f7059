//! The disassembler (placeholder signatures; being written).
use crate::module::Module;

/// Renders a module as assembly that re-assembles to the same bytes.
pub fn disassemble(module: &Module) -> String {
    let _ = module;
    String::new()
}
