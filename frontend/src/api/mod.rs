//! The GraphQL API as the app uses it: requests, the operations themselves and live subscriptions.

pub mod client;
pub mod live;
pub mod queries;

pub use client::{Session, gql};
