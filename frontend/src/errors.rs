//! The API's errors as forms show them: the message, and the input field it is about when the server
//! says so (`extensions.field` of a `VALIDATION` error).

use serde_json::Value;

/// One error to show.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub message: String,
    /// `VALIDATION`, `UNAUTHENTICATED`, ... or `NETWORK` when the request did not get an answer.
    pub code: String,
    /// The GraphQL input field (e.g. `cloneUrl`) the error is about.
    pub field: Option<String>,
}

impl ApiError {
    pub fn network(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: "NETWORK".into(),
            field: None,
        }
    }

    /// The first error of a GraphQL response body, if it has any.
    pub fn from_response(body: &Value) -> Option<Self> {
        let first = body.get("errors")?.as_array()?.first()?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let extensions = first.get("extensions");
        Some(Self {
            message: text(first.get("message")).unwrap_or_else(|| "request failed".into()),
            code: text(extensions.and_then(|e| e.get("code"))).unwrap_or_else(|| "ERROR".into()),
            field: text(extensions.and_then(|e| e.get("field"))),
        })
    }

    /// Whether the error is about `field` (one of the form's inputs).
    pub fn is_about(&self, field: &str) -> bool {
        self.field.as_deref() == Some(field)
    }
}

/// The message to show beside `field`, if the error is about it.
pub fn for_field(error: Option<&ApiError>, field: &str) -> Option<String> {
    // The server's message starts with the field's name; beside the field that is said already.
    error.filter(|e| e.is_about(field)).map(|e| {
        e.message
            .strip_prefix(&format!("{field}: "))
            .unwrap_or(&e.message)
            .to_owned()
    })
}

/// The message to show at the top of a form whose inputs are `fields`: errors not about one of them.
pub fn general(error: Option<&ApiError>, fields: &[&str]) -> Option<String> {
    error
        .filter(|e| !fields.iter().any(|f| e.is_about(f)))
        .map(|e| e.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_errors_name_their_field() {
        let body = json!({"data": null, "errors": [{"message": "email: is not a valid e-mail address",
            "extensions": {"code": "VALIDATION", "field": "email"}}]});
        let error = ApiError::from_response(&body);
        assert_eq!(
            for_field(error.as_ref(), "email").as_deref(),
            Some("is not a valid e-mail address")
        );
        assert_eq!(for_field(error.as_ref(), "login"), None);
        assert_eq!(general(error.as_ref(), &["login", "email"]), None);
        assert!(general(error.as_ref(), &["login"]).is_some());
    }

    #[test]
    fn other_errors_have_a_code_and_no_field() {
        let body = json!({"errors": [{"message": "invalid login or password",
            "extensions": {"code": "UNAUTHENTICATED"}}]});
        let error = ApiError::from_response(&body);
        assert_eq!(
            error.as_ref().map(|e| e.code.as_str()),
            Some("UNAUTHENTICATED")
        );
        assert_eq!(ApiError::from_response(&json!({"data": {}})), None);
    }
}
