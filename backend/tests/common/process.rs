//! The server as a child process of the test, for tests that kill it with SIGKILL and start it again on
//! the same ports and database.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::TestDb;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `pepeunit serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub http: u16,
    pub mqtt: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `pepeunit` binary on `db`'s data directory and database, with nothing else from the environment.
/// `binary` is the caller's `env!("CARGO_BIN_EXE_pepeunit")`: only the backend's own test crates have it,
/// and other crates include this harness too.
pub fn pepeunit(binary: &str, db: &TestDb) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PEPEUNIT_DATA_DIR", db.data_dir())
        .env("PEPEUNIT_LOG_LEVEL", "warn")
        .stdin(Stdio::null());
    if let Some(url) = &db.url {
        command.env("PEPEUNIT_DATABASE_URL", url);
    }
    command
}

/// Starts `command` on these ports (a restart keeps them, as topics carry the instance's address) and
/// waits, at most `within`, until both accept connections.
pub fn start(mut command: Command, http: u16, mqtt: u16, within: Duration) -> Server {
    let child = command
        .env("PEPEUNIT_HTTP_BIND", format!("127.0.0.1:{http}"))
        .env("PEPEUNIT_MQTT_BIND", format!("127.0.0.1:{mqtt}"))
        .env("PEPEUNIT_PUBLIC_URL", format!("http://127.0.0.1:{http}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, http, mqtt };
    let deadline = Instant::now() + within;
    for port in [http, mqtt] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    server
}

/// A GraphQL request that must succeed; its `data`.
pub async fn gql(server: &Server, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/graphql", server.http))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body["errors"].is_null(), "{query}: {body}");
    body["data"].clone()
}

/// The password of the `root` admin that [`create_admin`] makes.
pub const ADMIN_PASSWORD: &str = "a-long-admin-password";

/// Runs `pepeunit admin create` for `root` with `command` (the server's command line, not yet started).
pub fn create_admin(mut command: Command) {
    let created = command
        .args([
            "admin",
            "create",
            "--login",
            "root",
            "--email",
            "root@example.com",
        ])
        .env("PEPEUNIT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
}

/// Logs `root` in and creates a repo_unit `fw` from `clone_url`: the access token and the repo_unit's uuid.
pub async fn admin_with_repo_unit(server: &Server, clone_url: &str) -> (String, Value) {
    let token = gql(
        server,
        None,
        "mutation($p: String!) { login(login: \"root\", password: $p) { accessToken } }",
        json!({ "p": ADMIN_PASSWORD }),
    )
    .await["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let repo = gql(
        server,
        Some(&token),
        "mutation($u: String!) { createRepoUnit(input: { name: \"fw\", cloneUrl: $u }) { uuid } }",
        json!({ "u": clone_url }),
    )
    .await["createRepoUnit"]["uuid"]
        .clone();
    (token, repo)
}
