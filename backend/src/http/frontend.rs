//! The web app: the static files `pepeunit-frontend-build` wrote, `index.html` at `/`.
//!
//! Anything that is not a file of the app keeps the JSON 404 of the API, and `/api/...` is never looked
//! up on disk. File names are not content-hashed, so every file is revalidated (`no-cache` with an ETag
//! of its size and modification time) instead of cached blindly after an upgrade.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Pepeunit</title>
<h1>The Pepeunit web app has not been built</h1>
<p>Release builds of the server build it (<code>cargo run --release</code>); or run
<code>cargo run -p pepeunit-frontend-build</code> and restart, or point <code>PEPEUNIT_FRONTEND_DIR</code>
at a built app. The GraphQL API is at <a href=\"/graphql\">/graphql</a>.</p>";

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The file under `root` a request path names, if it stays inside `root`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (plain && !relative.as_os_str().is_empty()).then(|| root.join(relative))
}

async fn serve(path: &Path, headers: &HeaderMap) -> Option<Response> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if !meta.is_file() {
        return None;
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let etag = format!("\"{:x}-{modified:x}\"", meta.len());
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let common = [
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::ETAG, etag),
    ];
    if fresh {
        return Some((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let bytes = tokio::fs::read(path).await.ok()?;
    Some(
        (
            [(header::CONTENT_TYPE, content_type(path).to_owned())],
            common,
            Body::from(bytes),
        )
            .into_response(),
    )
}

/// `GET /`: the app, or a page saying how to build it.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match serve(&state.frontend_dir.join("index.html"), &headers).await {
        Some(response) => response,
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(NOT_BUILT)).into_response(),
    }
}

/// Files of the app; everything else is the API's JSON 404.
pub async fn file_or_not_found(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if (method == Method::GET || method == Method::HEAD)
        && !path.starts_with("/api/")
        && let Some(file) = resolve(&state.frontend_dir, path)
        && let Some(response) = serve(&file, &headers).await
    {
        return response;
    }
    super::not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_app() {
        let root = Path::new("/srv/app");
        assert_eq!(
            resolve(root, "/snippets/a/b.js"),
            Some(root.join("snippets/a/b.js"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../b"), None);
        assert_eq!(resolve(root, "/"), None);
    }

    #[test]
    fn wasm_gets_its_own_type() {
        assert_eq!(content_type(Path::new("x_bg.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("x.js")),
            "text/javascript; charset=utf-8"
        );
    }
}
