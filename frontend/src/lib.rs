//! The Pepeunit web app: a visual graph editor of repo_units, units, their variables and links.
//!
//! A Dioxus application compiled to wasm, served by the backend at `/`, talking only to the GraphQL API
//! (queries and mutations over `POST /graphql`, live data over `/graphql/ws`). The graph model, its
//! layout, filters and the API's error shape are plain Rust that builds and is tested on the host; the
//! user interface itself exists only on `wasm32`.

pub mod alerts;
pub mod chart;
pub mod errors;
pub mod filter;
pub mod layout;
pub mod mirrors;
pub mod model;

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod broker;
#[cfg(target_arch = "wasm32")]
mod forms;
#[cfg(target_arch = "wasm32")]
mod graph;

/// Mounts the app into the page.
#[cfg(target_arch = "wasm32")]
pub fn launch() {
    dioxus::launch(app::App);
}
