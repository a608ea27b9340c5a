//! Real git remotes for tests: source repositories made with the git CLI, served over the smart HTTP
//! protocol by `git http-backend` behind a small loopback server (optionally with basic auth and a delay),
//! or read through `file://` URLs.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine;
use tokio::io::AsyncWriteExt;

pub const ENV_EXAMPLE: &str =
    r#"{"WIFI_SSID": "ssid", "WIFI_PASS": "password", "PU_STATE_SEND_INTERVAL": 300}"#;
pub const SCHEMA_EXAMPLE: &str = r#"{
  "input_base_topic": ["update/pepeunit", "env_update/pepeunit", "schema_update/pepeunit", "log_sync/pepeunit"],
  "output_base_topic": ["state/pepeunit", "log/pepeunit"],
  "input_topic": ["set_fan_state/pepeunit"],
  "output_topic": ["current_temp/pepeunit"]
}"#;

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A working repository and the bare copy a server exposes as `<name>.git`.
pub struct SourceRepo {
    pub work: PathBuf,
    pub bare: PathBuf,
}

impl SourceRepo {
    /// A firmware repository on `main` with both example files, a `dev` branch and a `v1` tag.
    pub fn firmware(root: &Path, name: &str) -> Self {
        let repo = Self::empty(root, name);
        repo.write("README.md", "# firmware\n");
        repo.commit("readme only");
        repo.write("env_example.json", ENV_EXAMPLE);
        repo.write("schema_example.json", SCHEMA_EXAMPLE);
        repo.write("main.py", "print('hello')\n");
        repo.commit("firmware v1");
        git(&repo.work, &["tag", "v1"]);
        git(&repo.work, &["branch", "dev"]);
        repo.publish();
        repo
    }

    pub fn empty(root: &Path, name: &str) -> Self {
        let work = root.join("work").join(name);
        let bare = root.join("served").join(format!("{name}.git"));
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        Self { work, bare }
    }

    pub fn write(&self, file: &str, content: impl AsRef<[u8]>) {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Makes the served bare copy match the working repository.
    pub fn publish(&self) {
        if !self.bare.exists() {
            std::fs::create_dir_all(self.bare.parent().unwrap()).unwrap();
            git(
                self.bare.parent().unwrap(),
                &[
                    "init",
                    "-q",
                    "--bare",
                    self.bare.file_name().unwrap().to_str().unwrap(),
                ],
            );
        }
        let bare = self.bare.to_str().unwrap().to_owned();
        git(
            &self.work,
            &["push", "-q", "--force", &bare, "refs/heads/*:refs/heads/*"],
        );
        git(&self.work, &["push", "-q", "--force", "--tags", &bare]);
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

#[derive(Clone)]
struct Served {
    root: PathBuf,
    basic_auth: Option<String>,
    delay: Duration,
}

/// `git http-backend` behind a loopback HTTP server.
pub struct GitHttpServer {
    pub base: String,
    _task: tokio::task::JoinHandle<()>,
}

impl GitHttpServer {
    /// Serves every bare repository under `root/served` at `http://127.0.0.1:<port>/<name>.git`.
    pub async fn start(root: &Path, basic_auth: Option<(&str, &str)>, delay: Duration) -> Self {
        let served = Served {
            root: root.join("served"),
            basic_auth: basic_auth.map(|(u, p)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            }),
            delay,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(cgi)
            .with_state(Arc::new(served));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, _task: task }
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base)
    }
}

async fn cgi(
    State(served): State<Arc<Served>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Some(expected) = &served.basic_auth {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", "Basic realm=\"git\"")
                .body(Body::empty())
                .unwrap();
        }
    }
    if !served.delay.is_zero() {
        tokio::time::sleep(served.delay).await;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &served.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("REQUEST_METHOD", method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .expect("CGI headers");
    let head = String::from_utf8_lossy(&raw[..split.0]).to_string();
    let mut response = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.split_whitespace().next().unwrap().parse().unwrap();
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .body(Body::from(raw[split.0 + split.1..].to_vec()))
        .unwrap()
}
