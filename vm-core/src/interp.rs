//! The stepper (being written).
use crate::module::Module;
use crate::step::{ActorState, Host, Step};

/// Runs `state` for at most `fuel` units.
pub fn step<H: Host + ?Sized>(state: &mut ActorState, module: &Module, host: &mut H, fuel: u32) -> Step {
    let _ = (state, module, host, fuel);
    Step::Yielded
}
