//! The Pepeunit device agent for Linux devices, and a fleet simulator.
//!
//! The agent speaks the device protocol (`pepeunit-protocol`): it reads env.json and schema.json, connects
//! to the broker, publishes state and outputs, runs and supervises the user's program, and applies
//! over-the-air updates with A/B slots and rollback. It depends on `pepeunit-protocol` only, never on the
//! server.

pub mod agent;
pub mod api;
pub mod discovery;
pub mod durable;
pub mod error;
pub mod failpoint;
pub mod home;
pub mod link;
pub mod logbook;
pub mod program;
pub mod queue;
pub mod simulate;
pub mod slots;
pub mod system;
pub mod update;

pub use error::{Error, Result};
