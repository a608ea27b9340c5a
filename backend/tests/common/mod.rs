//! Test harness: a real server on a random loopback port with its own database.
//!
//! SQLite in a temporary directory by default; with `PEPEUNIT_TEST_DATABASE_URL=postgres://...` each
//! server gets a fresh uuid-named PostgreSQL database, dropped afterwards.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use pepeunit_backend::config::Config;
use pepeunit_backend::domain::{UserRole, UserStatus};
use pepeunit_backend::services::Services;
use pepeunit_backend::services::users::{self, Registration};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

pub mod git;
pub mod mqtt;
pub mod process;
pub mod python;
pub mod smtp;
pub mod telegram;
pub mod units;
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct-horse-battery";

/// A database of the test's own, removed when dropped.
pub struct TestDb {
    pub url: Option<String>,
    pub dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match std::env::var("PEPEUNIT_TEST_DATABASE_URL") {
            Ok(admin_url) if admin_url.starts_with("postgres") => {
                let name = format!("pepeunit_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
                Self {
                    url: Some(format!("{base}/{name}")),
                    dir,
                    postgres: Some((admin_url, name)),
                }
            }
            _ => Self {
                url: None,
                dir,
                postgres: None,
            },
        }
    }

    /// A database on SQLite, whatever PEPEUNIT_TEST_DATABASE_URL says (to move data between engines).
    pub fn sqlite() -> Self {
        Self {
            url: None,
            dir: tempfile::tempdir().expect("tempdir"),
            postgres: None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self) -> Config {
        Config::for_tests(&self.data_dir(), self.url.clone())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop runs outside async; a short-lived runtime on its own thread removes the database.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                    }
                });
                Ok::<_, std::io::Error>(())
            })
            .join();
        }
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub mqtt: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub services: Services,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(TestDb::new().await, adjust).await
    }

    /// Starts a server on `db` (which may already hold data, e.g. restored from a backup).
    pub async fn start_on(db: TestDb, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(db, None, adjust).await
    }

    /// As [`TestServer::start_on`], on the HTTP and MQTT addresses of `at` (a restart keeps them, as
    /// topics and federation ids carry the instance's address) or on free ports.
    pub async fn start_at(
        db: TestDb,
        at: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        // Server logs (incidents included) show in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,pepeunit_backend=info")
            .with_test_writer()
            .try_init();
        let http = at.map_or(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), |(h, _)| h);
        let listener = tokio::net::TcpListener::bind(http).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = db.config();
        // Units' env.json points at this server, so real clients can call it back.
        config.public_url = base.clone();
        if let Some((_, mqtt)) = at {
            config.mqtt_bind = mqtt;
            config.mqtt_bind_explicit = true;
        }
        adjust(&mut config);
        // As `serve` does: the address bound (port 0 by default) goes into units' env.json.
        let mqtt_listener = pepeunit_backend::bind_mqtt(&mut config)
            .await
            .expect("bind mqtt");
        let mqtt = config.mqtt_bind;
        let app = pepeunit_backend::build(config)
            .await
            .expect("server builds")
            .with_mqtt_listener(mqtt_listener);
        let services = app.services().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            mqtt,
            client: reqwest::Client::new(),
            services,
            db,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// The HTTP address served.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("an address")
    }

    /// Stops the server as a signal would (in-flight requests drained, tasks ended, database closed)
    /// and gives back its database, for a restart on it.
    pub async fn stop(mut self) -> TestDb {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        std::mem::replace(&mut self.db, TestDb::sqlite())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts one GraphQL operation; returns the HTTP status and the JSON body.
    pub async fn gql(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.expect("json body"))
    }

    /// Registers through the API; panics unless it succeeds.
    pub async fn register(&self, login: &str) -> Value {
        let (_, body) = self
            .gql(
                "mutation($i: RegisterInput!) { register(input: $i) { uuid login status } }",
                json!({ "i": { "login": login, "email": format!("{login}@example.com"), "password": PASSWORD } }),
                None,
            )
            .await;
        assert!(body["errors"].is_null(), "register failed: {body}");
        body["data"]["register"].clone()
    }

    /// Logs in; returns the whole payload.
    pub async fn login(&self, login: &str, password: &str) -> (StatusCode, Value) {
        self.gql(
            "mutation($l: String!, $p: String!) { login(login: $l, password: $p) { accessToken refreshToken user { uuid login email role } } }",
            json!({ "l": login, "p": password }),
            None,
        )
        .await
    }

    /// Registers and logs in; returns (uuid, access token).
    pub async fn user(&self, login: &str) -> (String, String) {
        let user = self.register(login).await;
        let (_, body) = self.login(login, PASSWORD).await;
        let token = body["data"]["login"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned();
        (user["uuid"].as_str().expect("uuid").to_owned(), token)
    }

    /// Creates an admin directly through the service (as `pepeunit admin create` does) and logs in.
    pub async fn admin(&self, login: &str) -> (String, String) {
        let form = Registration {
            login: login.into(),
            email: format!("{login}@example.com"),
            password: PASSWORD.into(),
        };
        let user = users::create(&self.services, form, UserRole::Admin, UserStatus::Verified)
            .await
            .expect("admin created");
        let (_, body) = self.login(login, PASSWORD).await;
        let token = body["data"]["login"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned();
        (user.uuid.to_string(), token)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `code` extension of the first error.
pub fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<no code>")
}

/// Inserts a repo_unit row directly, for tests of rules that do not need a real mirror.
pub async fn insert_repo_unit(
    db: &sea_orm::DatabaseConnection,
    creator: uuid::Uuid,
    visibility: pepeunit_protocol::Visibility,
) -> uuid::Uuid {
    use pepeunit_backend::entities::repo_units;
    use sea_orm::{ActiveModelTrait, Set};
    let now = chrono::Utc::now();
    let uuid = uuid::Uuid::new_v4();
    repo_units::ActiveModel {
        uuid: Set(uuid),
        creator_uuid: Set(creator),
        name: Set(format!("repo-{visibility}")),
        visibility: Set(visibility),
        clone_url: Set("https://example.com/firmware.git".into()),
        is_private_repository: Set(false),
        credentials_encrypted: Set(None),
        webhook_secret_encrypted: Set(None),
        default_branch: Set(Some("main".into())),
        sync_period_seconds: Set(86_400),
        auto_sync: Set(true),
        last_synced_at: Set(None),
        last_sync_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    uuid
}

/// Inserts a unit row directly, until units have their own API.
pub async fn insert_unit(
    db: &sea_orm::DatabaseConnection,
    creator: uuid::Uuid,
    repo_unit: uuid::Uuid,
    name: &str,
) -> uuid::Uuid {
    use pepeunit_backend::entities::units;
    use sea_orm::{ActiveModelTrait, Set};
    let now = chrono::Utc::now();
    let uuid = uuid::Uuid::new_v4();
    units::ActiveModel {
        uuid: Set(uuid),
        creator_uuid: Set(creator),
        repo_unit_uuid: Set(repo_unit),
        name: Set(name.into()),
        visibility: Set(pepeunit_protocol::Visibility::Public),
        follows_default_branch: Set(true),
        repo_branch: Set(None),
        repo_commit: Set(None),
        repo_tag: Set(None),
        target_commit: Set(None),
        reported_commit: Set(None),
        update_status: Set(None),
        update_status_at: Set(None),
        env_encrypted: Set(Some("sealed".into())),
        token_version: Set(0),
        last_state: Set(Some("{}".into())),
        last_state_at: Set(Some(now)),
        state_storage: Set(Some("state".into())),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    uuid
}

pub async fn delete_unit(server: &TestServer, uuid: uuid::Uuid) {
    use pepeunit_backend::entities::units;
    use sea_orm::EntityTrait;
    units::Entity::delete_by_id(uuid)
        .exec(server.services.db())
        .await
        .unwrap();
}

/// Makes a repo_unit look as if it was never synced, so the scheduler finds it due.
pub async fn mark_never_synced(server: &TestServer, uuid: uuid::Uuid) {
    use pepeunit_backend::entities::repo_units;
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    let row = repo_units::Entity::find_by_id(uuid)
        .one(server.services.db())
        .await
        .unwrap()
        .unwrap();
    let mut active = row.into_active_model();
    active.last_synced_at = Set(None);
    active.update(server.services.db()).await.unwrap();
}
