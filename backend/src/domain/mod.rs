//! Domain values parsed at the edge: once a `Login` exists it is valid, and nothing re-checks it.

mod email;
mod login;
mod node_name;
mod password;
mod role;

pub use email::Email;
pub use login::Login;
pub use node_name::NodeName;
pub use password::Password;
pub use role::{UserRole, UserStatus};

/// A value that failed to parse, naming the field for the form that shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
