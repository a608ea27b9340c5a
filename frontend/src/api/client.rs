//! `POST /graphql` with the session's bearer token, refreshing the token pair once when it expired.

use serde_json::{Value, json};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, Response};

use crate::errors::ApiError;

const ACCESS_KEY: &str = "pepeunit.access";
const REFRESH_KEY: &str = "pepeunit.refresh";

/// The token pair, kept in the browser's local storage so a reload stays logged in.
pub struct Session;

impl Session {
    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok()?
    }

    pub fn access() -> Option<String> {
        Self::storage()?.get_item(ACCESS_KEY).ok()?
    }

    fn refresh() -> Option<String> {
        Self::storage()?.get_item(REFRESH_KEY).ok()?
    }

    /// Stores the pair of an `AuthPayload`.
    pub fn store(payload: &Value) {
        if let Some(storage) = Self::storage() {
            for (key, field) in [(ACCESS_KEY, "accessToken"), (REFRESH_KEY, "refreshToken")] {
                if let Some(token) = payload[field].as_str() {
                    let _ = storage.set_item(key, token);
                }
            }
        }
    }

    pub fn clear() {
        if let Some(storage) = Self::storage() {
            let _ = storage.remove_item(ACCESS_KEY);
            let _ = storage.remove_item(REFRESH_KEY);
        }
    }

    /// A value kept across reloads (canvas positions and the like).
    pub fn load(key: &str) -> Option<String> {
        Self::storage()?.get_item(key).ok()?
    }

    pub fn save(key: &str, value: &str) {
        if let Some(storage) = Self::storage() {
            let _ = storage.set_item(key, value);
        }
    }
}

fn js_error(error: JsValue) -> ApiError {
    ApiError::network(
        error
            .as_string()
            .or_else(|| {
                js_sys::JSON::stringify(&error)
                    .ok()
                    .and_then(|s| s.as_string())
            })
            .unwrap_or_else(|| "the server did not answer".into()),
    )
}

async fn post(body: &Value, token: Option<&str>) -> Result<Value, ApiError> {
    let window = web_sys::window().ok_or_else(|| ApiError::network("no window"))?;
    let headers = Headers::new().map_err(js_error)?;
    headers
        .set("Content-Type", "application/json")
        .map_err(js_error)?;
    if let Some(token) = token {
        headers
            .set("Authorization", &format!("Bearer {token}"))
            .map_err(js_error)?;
    }
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(&body.to_string()));
    let request = Request::new_with_str_and_init("/graphql", &init).map_err(js_error)?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(js_error)?
        .dyn_into()
        .map_err(js_error)?;
    let text = JsFuture::from(response.text().map_err(js_error)?)
        .await
        .map_err(js_error)?
        .as_string()
        .unwrap_or_default();
    serde_json::from_str(&text).map_err(|_| {
        ApiError::network(format!(
            "the server answered {} without GraphQL",
            response.status()
        ))
    })
}

/// Trades the refresh token for a new pair; false when there is none or it is no longer valid.
async fn refresh_session() -> bool {
    let Some(refresh) = Session::refresh() else {
        return false;
    };
    let body = json!({
        "query": "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }",
        "variables": { "t": refresh },
    });
    match post(&body, None).await {
        Ok(answer) if answer["errors"].is_null() => {
            Session::store(&answer["data"]["refreshToken"]);
            true
        }
        _ => false,
    }
}

/// Runs one operation; the `data` on success, else the first error.
pub async fn gql(query: &str, variables: Value) -> Result<Value, ApiError> {
    let body = json!({ "query": query, "variables": variables });
    let mut answer = post(&body, Session::access().as_deref()).await?;
    let expired = ApiError::from_response(&answer).is_some_and(|e| e.code == "UNAUTHENTICATED");
    if expired && Session::access().is_some() && refresh_session().await {
        answer = post(&body, Session::access().as_deref()).await?;
    }
    match ApiError::from_response(&answer) {
        Some(error) => Err(error),
        None => Ok(answer["data"].take()),
    }
}
