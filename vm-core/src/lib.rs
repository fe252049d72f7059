//! vm-core: values, the op list, the assembler, the binary module format, the verifier, the
//! disassembler, and the stepper.
//!
//! **This crate has no tokio, no threads, no I/O and nothing `async`, and forbids `unsafe`.**
//! The assembler reads included files through the [`asm::SourceLoader`] trait, which the caller
//! implements; the stepper reaches the outside world only through [`step::Host`] and by returning
//! [`step::Effect`]s.
//!
//! The pipeline: `asm::assemble` (text → [`Module`]) → `bytecode::encode` (→ `.vbc` bytes) →
//! `bytecode::decode` + `verify::verify` (= [`load`]) → `interp::step`.

#![forbid(unsafe_code)]
// `ops::instr_has_column!` walks the whole op list one macro expansion per op and column.
#![recursion_limit = "1024"]

pub mod asm;
pub mod atom;
pub mod bytecode;
pub mod disasm;
pub mod exception;
pub mod format;
pub mod interp;
pub mod mem;
pub mod module;
pub mod ops;
pub mod rng;
pub mod snapshot;
pub mod step;
#[cfg(test)]
mod testgen;
pub mod value;
pub mod verify;

pub use atom::{Atom, atoms};
pub use exception::Exception;
pub use module::{Function, Location, Module};
pub use ops::{Instr, Opcode, OperandKind};
pub use step::{
    ActorOp, ActorState, Begun, ChanArg, ChanTried, Effect, Fault, Fired, Host, NativeCall, NativeId,
    PROGRESS_EVERY, Priority, Received, Resume, SelectCase, SelectShape, SpawnOpts, Step, select_resume,
};
pub use value::{Closure, Handle, Pid, Value, set_node_namer};

/// Decodes and verifies a `.vbc` file: the only way bytes become a runnable module.
pub fn load(bytes: &[u8]) -> Result<Module, bytecode::LoadError> {
    let module = bytecode::decode(bytes)?;
    verify::verify(&module).map_err(bytecode::LoadError::Verify)?;
    Ok(module)
}
