//! The Pepeunit web app: a visual graph editor of repo_units, units, their variables and links.
//!
//! It will be a Dioxus application compiled to wasm, served by the backend at `/`, talking only to the
//! GraphQL API. It shares wire types with the server through `pepeunit-protocol`.
