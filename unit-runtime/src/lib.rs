//! The Pepeunit device agent for Linux devices, and a fleet simulator.
//!
//! It will speak the device protocol (`pepeunit-protocol`): read env.json and schema.json, connect to the
//! broker, publish state and outputs, run and supervise the user's program, and apply over-the-air updates
//! with A/B slots and rollback. It depends on `pepeunit-protocol` only, never on the server.
