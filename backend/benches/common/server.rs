//! Release `pepeunit` servers started by a bench: each on free loopback ports with its own data
//! directory, on SQLite or on a PostgreSQL database created for it (and dropped after), with an admin;
//! and the GraphQL calls that set them up (a firmware repo on a local git remote, units, links).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use super::load::Identity;

pub const PASSWORD: &str = "a-long-admin-password";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` takes connections; panics with the log if the process exited.
pub async fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not listen on {port} within 60 s");
}

pub fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn pepeunit(bin: &Path, dir: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(bin);
    command
        .env_clear()
        .env("PEPEUNIT_DATA_DIR", dir.join("data"))
        .env("PEPEUNIT_LOG_LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    command
}

async fn admin_execute(admin: &str, sql: &str) {
    let db = Database::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {admin}: {e}"));
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = db.close().await;
}

async fn drop_database(admin: &str, name: &str) {
    let db = match Database::connect(admin).await {
        Ok(db) => db,
        Err(error) => {
            eprintln!("dropping database {name}: {error}");
            return;
        }
    };
    if let Err(error) = db
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("dropping database {name}: {error}");
    }
    let _ = db.close().await;
}

/// `postgres://user@host:port[/any][?query]` with the database `name` put in.
fn with_database(base: &str, name: &str) -> String {
    let (base, query) = base.split_once('?').unwrap_or((base, ""));
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{scheme}://{authority}/{name}{query}")
}

/// How to start one server.
pub struct Start<'a> {
    pub bin: &'a Path,
    pub env: &'a [(String, String)],
    /// A PostgreSQL server (`postgres://user@host:port[?query]`) and the name of the database to create
    /// there; SQLite in the data directory when `None`.
    pub postgres: Option<(&'a str, String)>,
    /// The public URL given the HTTP port; `http://127.0.0.1:<port>` when `None`.
    pub public_url: Option<String>,
}

/// A running server; killed (and its PostgreSQL database dropped by [`Server::stop`]) at the end.
pub struct Server {
    pub http: u16,
    pub mqtt: u16,
    pub pid: u32,
    pub dir: tempfile::TempDir,
    child: Child,
    database: Option<(String, String)>,
}

impl Server {
    /// Creates the database, the admin `root`, and serves on free ports.
    pub async fn start(start: Start<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut env = start.env.to_vec();
        let mut database = None;
        if let Some((postgres, name)) = start.postgres {
            let admin = with_database(postgres, "postgres");
            admin_execute(&admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
            admin_execute(&admin, &format!("CREATE DATABASE {name}")).await;
            env.push((
                "PEPEUNIT_DATABASE_URL".into(),
                with_database(postgres, &name),
            ));
            database = Some((admin, name));
        }
        let out = pepeunit(start.bin, dir.path(), &env)
            .args([
                "admin",
                "create",
                "--login",
                "root",
                "--email",
                "root@example.com",
            ])
            .env("PEPEUNIT_ADMIN_PASSWORD", PASSWORD)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", start.bin.display()));
        assert!(
            out.status.success(),
            "admin create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (http, mqtt) = (free_port(), free_port());
        let public_url = start
            .public_url
            .unwrap_or_else(|| format!("http://127.0.0.1:{http}"));
        let log = dir.path().join("server.log");
        let mut child = pepeunit(start.bin, dir.path(), &env)
            .arg("serve")
            .env("PEPEUNIT_HTTP_BIND", format!("127.0.0.1:{http}"))
            .env("PEPEUNIT_MQTT_BIND", format!("127.0.0.1:{mqtt}"))
            .env("PEPEUNIT_PUBLIC_URL", public_url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(mqtt, &mut child, &log).await;
        wait_for_port(http, &mut child, &log).await;
        Self {
            http,
            mqtt,
            pid: child.id(),
            dir,
            child,
            database,
        }
    }

    /// Logs in as the admin.
    pub async fn admin(&self) -> Api {
        let mut api = Api {
            http: reqwest::Client::new(),
            url: format!("http://127.0.0.1:{}/graphql", self.http),
            token: None,
        };
        let token = api
            .gql(
                "mutation($p: String!) { login(login: \"root\", password: $p) { accessToken } }",
                json!({ "p": PASSWORD }),
            )
            .await["login"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        api.token = Some(token);
        api
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((admin, name)) = self.database.take() {
            drop_database(&admin, &name).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GraphQL as one user.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
}

impl Api {
    /// The `data` of the answer; panics on errors.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let body: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(body["errors"].is_null(), "{query}: {body}");
        body["data"].clone()
    }

    /// A repo_unit on a local git repository in `dir` whose units have an input `in/pepeunit` and an
    /// output `out/pepeunit`; its uuid.
    pub async fn firmware(&self, dir: &Path) -> Value {
        let repo_dir: PathBuf = dir.join("firmware");
        std::fs::create_dir_all(&repo_dir).unwrap();
        std::fs::write(repo_dir.join("env_example.json"), r#"{"WIFI_SSID": "x"}"#).unwrap();
        std::fs::write(
            repo_dir.join("schema_example.json"),
            r#"{"input_base_topic": ["update/pepeunit"], "output_base_topic": ["state/pepeunit"],
                "input_topic": ["in/pepeunit"], "output_topic": ["out/pepeunit"]}"#,
        )
        .unwrap();
        git(&repo_dir, &["init", "-q", "-b", "main"]);
        git(&repo_dir, &["add", "-A"]);
        git(&repo_dir, &["commit", "-q", "-m", "bench"]);
        let url = format!("file://{}", repo_dir.display());
        self.gql(
            "mutation($u: String!) { createRepoUnit(input: { name: \"bench\", cloneUrl: $u }) { uuid } }",
            json!({ "u": url }),
        )
        .await["createRepoUnit"]["uuid"]
            .clone()
    }

    /// Creates a unit of `repo`; with `window`, its output keeps every value as history for an hour
    /// (each PUBACK then stands for a last value and a history row).
    pub async fn create_unit(&self, repo: &Value, name: String, window: bool) -> Created {
        let unit = self.gql("mutation($r: ID!, $n: String!) { createUnit(input: { repoUnitUuid: $r, name: $n }) { uuid env nodes { uuid topicName topic } } }", json!({ "r": repo, "n": name }))
            .await["createUnit"].clone();
        let node = |name: &str| {
            let n = unit["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["topicName"] == name)
                .unwrap();
            (
                n["uuid"].as_str().unwrap().to_owned(),
                n["topic"].as_str().unwrap().to_owned(),
            )
        };
        let ((output, output_topic), (input, _)) = (node("out/pepeunit"), node("in/pepeunit"));
        if window {
            self.gql("mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: WINDOW, historyWindowSeconds: 3600 }) { uuid } }", json!({ "n": output })).await;
        }
        Created {
            who: Identity {
                id: unit["uuid"].as_str().unwrap().to_owned(),
                token: Some(unit["env"]["PU_AUTH_TOKEN"].as_str().unwrap().to_owned()),
                topic: output_topic,
            },
            output,
            input,
        }
    }
}

/// One created unit: its identity for publishing (its output's topic), and its output and input node ids.
pub struct Created {
    pub who: Identity,
    pub output: String,
    pub input: String,
}
