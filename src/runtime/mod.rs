//! What every actor runs on: the OTP-style supervisor, the registry of live actor states and
//! pipeline counters, and tasks owned by an actor.
//! Must never: import a pipeline or a client: actors classify their own errors.

pub mod fault;
pub mod registry;
pub mod supervisor;
pub mod task;
