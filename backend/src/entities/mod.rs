//! sea-orm entities: one module per table of the `pepeunit-migrations` schema.

pub mod alert_channels;
pub mod alert_deliveries;
pub mod alert_rules;
pub mod alerts;
pub mod board_items;
pub mod boards;
pub mod federation_followers;
pub mod federation_keys;
pub mod federation_peers;
pub mod federation_remote_links;
pub mod federation_remote_outputs;
pub mod federation_remote_units;
pub mod instance_settings;
pub mod mail_tokens;
pub mod permissions;
pub mod repo_units;
pub mod rollouts;
pub mod telegram_link_codes;
pub mod unit_logs;
pub mod unit_node_edges;
pub mod unit_node_values;
pub mod unit_nodes;
pub mod units;
pub mod update_attempts;
pub mod users;
