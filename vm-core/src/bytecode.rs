//! The `.vbc` binary format (placeholder signatures; being written).
use crate::module::Module;

/// Why bytes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a well-formed module.
    #[error("malformed module: {0}")]
    Malformed(String),
    /// The module is well-formed but failed verification.
    #[error("module failed verification")]
    Verify(Vec<crate::verify::VerifyError>),
}

/// Serialises a module.
pub fn encode(module: &Module) -> Vec<u8> {
    let _ = module;
    Vec::new()
}

/// Parses a module (without verifying it).
pub fn decode(bytes: &[u8]) -> Result<Module, LoadError> {
    let _ = bytes;
    Err(LoadError::Malformed("not yet".into()))
}
