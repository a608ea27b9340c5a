//! The Pepeunit server.
//!
//! Layers point inward: `http` and `graphql` (transport) call `services` (rules), which use `entities`
//! (storage). A service never knows which transport called it; the Telegram bot (`telegram`) and outgoing
//! webhooks (`alert_webhooks`) are transports too.

pub mod alert_webhooks;
pub mod app;
pub mod backup;
pub mod broker;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod entities;
pub mod error;
pub mod graphql;
pub mod http;
pub mod limits;
pub mod secrets;
pub mod services;
pub mod telegram;
pub mod telemetry;

pub use app::{App, StartError, bind, bind_mqtt, bind_mqtt_tls, build, shutdown_signal};
pub use config::Config;
