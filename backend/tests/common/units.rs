//! Units through the API: a loopback git server, a repo_unit on it, units made from it, and the device
//! calls made with a unit's token.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::TestServer;
use super::git::{GitHttpServer, SourceRepo};

pub const UNIT_FIELDS: &str = "uuid name followsDefaultBranch branch commit tag targetCommit
    nodes { uuid kind topicName topic lastValue isRewritableInput links { uuid outputUuid inputUuid } }";

/// A server that may mirror loopback remotes, a firmware repo served over HTTP, a user and a repo_unit.
pub struct Fixture {
    pub remotes: tempfile::TempDir,
    pub source: SourceRepo,
    pub http: GitHttpServer,
    pub server: TestServer,
    pub token: String,
    pub repo_unit: String,
}

impl Fixture {
    /// `prepare` may add files to the firmware repo before it is published and mirrored.
    pub async fn new(prepare: impl FnOnce(&SourceRepo)) -> Self {
        Self::with_config(prepare, |_| {}).await
    }

    /// As [`Fixture::new`], with `adjust` changing the server's configuration.
    pub async fn with_config(
        prepare: impl FnOnce(&SourceRepo),
        adjust: impl FnOnce(&mut pepeunit_backend::Config),
    ) -> Self {
        Self::on(super::TestDb::new().await, prepare, adjust).await
    }

    /// As [`Fixture::with_config`], on the database `db`.
    pub async fn on(
        db: super::TestDb,
        prepare: impl FnOnce(&SourceRepo),
        adjust: impl FnOnce(&mut pepeunit_backend::Config),
    ) -> Self {
        let remotes = tempfile::tempdir().unwrap();
        let source = SourceRepo::firmware(remotes.path(), "firmware");
        prepare(&source);
        source.publish();
        let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
        let server = TestServer::start_on(db, |c| {
            c.allow_local_remotes = true;
            adjust(c);
        })
        .await;
        let (_, token) = server.user("alice").await;
        let (_, body) = server
            .gql(
                "mutation($i: CreateRepoUnitInput!) { createRepoUnit(input: $i) { uuid } }",
                json!({ "i": { "name": "Firmware", "cloneUrl": http.url("firmware") } }),
                Some(&token),
            )
            .await;
        let repo_unit = body["data"]["createRepoUnit"]["uuid"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned();
        Self {
            remotes,
            source,
            http,
            server,
            token,
            repo_unit,
        }
    }

    /// Creates a unit; returns the whole response body.
    pub async fn create_unit_body(&self, token: &str, input: Value) -> Value {
        let mut input = input;
        input["repoUnitUuid"] = json!(self.repo_unit);
        let query = format!(
            "mutation($i: CreateUnitInput!) {{ createUnit(input: $i) {{ {UNIT_FIELDS} }} }}"
        );
        self.server
            .gql(&query, json!({ "i": input }), Some(token))
            .await
            .1
    }

    /// Creates a unit and returns it.
    pub async fn create_unit(&self, token: &str, input: Value) -> Value {
        let body = self.create_unit_body(token, input).await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["createUnit"].clone()
    }

    pub async fn unit(&self, token: &str, uuid: &str) -> Value {
        let query = format!("query($u: ID!) {{ unit(uuid: $u) {{ {UNIT_FIELDS} }} }}");
        let (_, body) = self
            .server
            .gql(&query, json!({ "u": uuid }), Some(token))
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["unit"].clone()
    }

    /// The unit's env.json as its creator reads it in the API.
    pub async fn env(&self, token: &str, uuid: &str) -> Value {
        let (_, body) = self
            .server
            .gql(
                "query($u: ID!) { unit(uuid: $u) { env } }",
                json!({ "u": uuid }),
                Some(token),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["unit"]["env"].clone()
    }

    /// The unit's own token, from its env.json.
    pub async fn unit_token(&self, uuid: &str) -> String {
        self.env(&self.token, uuid).await["PU_AUTH_TOKEN"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A device API call with `x-auth-token`.
    pub async fn device_get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .server
            .client
            .get(self.server.url(&format!("/api/v1{path}")));
        if let Some(token) = token {
            request = request.header("x-auth-token", token);
        }
        request.send().await.unwrap()
    }

    pub async fn device_json(&self, path: &str, token: &str) -> Value {
        let response = self.device_get(path, Some(token)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// Pushes the working repo and syncs the repo_unit now.
    pub async fn push_and_sync(&self) {
        self.source.publish();
        let (_, body) = self
            .server
            .gql(
                "mutation($u: ID!) { syncRepoUnit(uuid: $u) { lastSyncError } }",
                json!({ "u": self.repo_unit }),
                Some(&self.token),
            )
            .await;
        assert!(
            body["data"]["syncRepoUnit"]["lastSyncError"].is_null(),
            "{body}"
        );
    }
}

/// The node of `unit` with this topic name.
pub fn node<'a>(unit: &'a Value, topic_name: &str) -> &'a Value {
    unit["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topicName"] == topic_name)
        .unwrap_or_else(|| panic!("no node {topic_name} in {unit}"))
}

/// A unit made for a test and the token its device would hold.
pub struct Device {
    pub uuid: String,
    pub token: String,
    pub unit: Value,
}

/// Creates a unit named `name` from the fixture's repo_unit and reads its token.
pub async fn device(fx: &Fixture, name: &str) -> Device {
    let unit = fx.create_unit(&fx.token, json!({ "name": name })).await;
    let uuid = unit["uuid"].as_str().unwrap().to_owned();
    let token = fx.unit_token(&uuid).await;
    Device { uuid, token, unit }
}

impl Device {
    /// The full MQTT topic of the variable with this topic name.
    pub fn topic(&self, name: &str) -> String {
        node(&self.unit, name)["topic"].as_str().unwrap().to_owned()
    }

    /// The uuid of the variable with this topic name.
    pub fn node(&self, name: &str) -> String {
        node(&self.unit, name)["uuid"].as_str().unwrap().to_owned()
    }

    /// One of the unit's base topics: `section` is `input_base_topic` or `output_base_topic`.
    pub fn base(&self, fx: &Fixture, section: &str, name: &str) -> String {
        let domain = fx.server.base.trim_start_matches("http://");
        format!("{domain}/{section}/{}/{name}/pepeunit", self.uuid)
    }

    /// Posts a batch of output values as this unit does over REST (`POST /api/v1/units/{uuid}/values`).
    pub async fn post_values(&self, fx: &Fixture, batch: &serde_json::Value) -> reqwest::Response {
        fx.server
            .client
            .post(
                fx.server
                    .url(&format!("/api/v1/units/{}/values", self.uuid)),
            )
            .header("x-auth-token", &self.token)
            .json(batch)
            .send()
            .await
            .unwrap()
    }

    /// Connects over MQTT as this unit.
    pub async fn connect(&self, fx: &Fixture) -> super::mqtt::MqttUnit {
        super::mqtt::connect(&fx.server, &self.uuid, &self.token)
            .await
            .unwrap()
    }
}
