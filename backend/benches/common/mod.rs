//! What the benches share (`#[path]`-included by each bench's `main.rs`): the MQTT load client, the
//! release `pepeunit` servers they start, /proc readings and the report's number formats.
#![allow(dead_code)]

pub mod load;
pub mod measure;
pub mod report;
pub mod server;
pub mod system;
