//! Wire types that every part of Pepeunit agrees on: the server, the web app and the device runtime.
//!
//! This crate builds without a database or an HTTP stack so that the wasm frontend and the device agent
//! can use it; database derives for the server sit behind the `orm` feature.

pub mod device;
pub mod env;
pub mod ids;
pub mod schema;
pub mod visibility;

pub use ids::{RepoUnitId, UnitId, UnitNodeId, UserId};
pub use visibility::Visibility;
