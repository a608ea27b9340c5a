//! The server calls the simulator makes: GraphQL as the units' creator (log in, create units, link them,
//! run a rollout) and the device REST calls a unit makes (schema, firmware).

use std::time::Duration;

use pepeunit_protocol::device::{UnitEnv, UnitSchema};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A GraphQL session of a user.
pub struct Session {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

/// A unit created for the run, with the uuids of its first input and output (when it has them).
pub struct Created {
    pub env: Value,
    pub input: Option<String>,
    pub output: Option<String>,
}

/// A rollout's progress as the `rollout` query reports it.
pub struct RolloutState {
    pub status: String,
    pub wave: i64,
    pub detail: Option<String>,
}

async fn post(
    http: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    body: Value,
) -> Result<Value> {
    let mut request = http.post(endpoint).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let mut body: Value = response.json().await?;
    if let Some(error) = body["errors"].get(0) {
        return Err(Error::Invalid(format!(
            "GraphQL: {}",
            error["message"].as_str().unwrap_or("unknown error")
        )));
    }
    if !status.is_success() {
        return Err(Error::Status {
            what: "a GraphQL request".into(),
            status: status.as_u16(),
        });
    }
    Ok(body["data"].take())
}

impl Session {
    pub async fn login(
        http: reqwest::Client,
        server: &str,
        login: &str,
        password: &str,
    ) -> Result<Self> {
        let endpoint = format!("{}/graphql", server.trim_end_matches('/'));
        let data = post(
            &http,
            &endpoint,
            None,
            json!({
                "query": "mutation($l: String!, $p: String!) { login(login: $l, password: $p) { accessToken } }",
                "variables": { "l": login, "p": password },
            }),
        )
        .await?;
        let token = data["login"]["accessToken"]
            .as_str()
            .ok_or_else(|| Error::Invalid("the login answer has no access token".into()))?
            .to_owned();
        Ok(Self {
            http,
            endpoint,
            token,
        })
    }

    async fn call(&self, query: &str, variables: Value) -> Result<Value> {
        post(
            &self.http,
            &self.endpoint,
            Some(&self.token),
            json!({ "query": query, "variables": variables }),
        )
        .await
    }

    /// Creates a unit of `repo_unit`; pinned to `commit` on `branch` when given, so that only a rollout
    /// moves it.
    pub async fn create_unit(
        &self,
        repo_unit: Uuid,
        name: &str,
        pin: Option<(&str, &str)>,
    ) -> Result<Created> {
        let mut input = json!({ "repoUnitUuid": repo_unit, "name": name });
        if let Some((branch, commit)) = pin {
            input["followsDefaultBranch"] = json!(false);
            input["branch"] = json!(branch);
            input["commit"] = json!(commit);
        }
        let data = self
            .call(
                "mutation($i: CreateUnitInput!) { createUnit(input: $i) { env nodes { uuid kind } } }",
                json!({ "i": input }),
            )
            .await?;
        let unit = &data["createUnit"];
        let first = |kind: &str| {
            unit["nodes"].as_array().and_then(|nodes| {
                nodes
                    .iter()
                    .find(|n| n["kind"] == kind)
                    .and_then(|n| n["uuid"].as_str())
                    .map(str::to_owned)
            })
        };
        Ok(Created {
            env: unit["env"].clone(),
            input: first("INPUT"),
            output: first("OUTPUT"),
        })
    }

    pub async fn link(&self, output: &str, input: &str) -> Result<()> {
        self.call(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({ "o": output, "i": input }),
        )
        .await?;
        Ok(())
    }

    /// The default branch of a repo_unit and its newest commit.
    pub async fn head(&self, repo_unit: Uuid) -> Result<(String, String)> {
        let data = self
            .call(
                "query($u: ID!) { repoUnit(uuid: $u) { defaultBranch commits(limit: 1) { id } } }",
                json!({ "u": repo_unit }),
            )
            .await?;
        let repo = &data["repoUnit"];
        match (
            repo["defaultBranch"].as_str(),
            repo["commits"][0]["id"].as_str(),
        ) {
            (Some(branch), Some(commit)) => Ok((branch.to_owned(), commit.to_owned())),
            _ => Err(Error::Invalid(format!(
                "repo_unit {repo_unit} has no default branch or commit yet"
            ))),
        }
    }

    /// Starts a rollout; returns its uuid.
    pub async fn start_rollout(
        &self,
        repo_unit: Uuid,
        commit: &str,
        batch_size: u32,
        wave_timeout_seconds: u32,
    ) -> Result<String> {
        let data = self
            .call(
                "mutation($i: StartRolloutInput!) { startRollout(input: $i) { uuid } }",
                json!({ "i": {
                    "repoUnitUuid": repo_unit, "commit": commit, "batchSize": batch_size,
                    "waveTimeoutSeconds": wave_timeout_seconds,
                } }),
            )
            .await?;
        data["startRollout"]["uuid"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Invalid("startRollout answered without a uuid".into()))
    }

    pub async fn rollout(&self, uuid: &str) -> Result<RolloutState> {
        let data = self
            .call(
                "query($u: ID!) { rollout(uuid: $u) { status wave detail } }",
                json!({ "u": uuid }),
            )
            .await?;
        let rollout = &data["rollout"];
        Ok(RolloutState {
            status: rollout["status"].as_str().unwrap_or_default().to_owned(),
            wave: rollout["wave"].as_i64().unwrap_or_default(),
            detail: rollout["detail"].as_str().map(str::to_owned),
        })
    }
}

async fn device_get(
    http: &reqwest::Client,
    env: &UnitEnv,
    path: &str,
    query: &str,
) -> Result<reqwest::Response> {
    let url = format!("{}/{path}/{}{query}", env.api_base(), env.unit);
    let response = http
        .get(&url)
        .header("x-auth-token", &env.auth_token)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(Error::Status {
            what: format!("GET {path}"),
            status: response.status().as_u16(),
        });
    }
    Ok(response)
}

/// The unit's schema.json, as a device downloads it.
pub async fn schema(http: &reqwest::Client, env: &UnitEnv) -> Result<UnitSchema> {
    let bytes = device_get(http, env, "units/get_current_schema", "")
        .await?
        .bytes()
        .await?;
    Ok(UnitSchema::parse(&bytes)?)
}

/// Downloads the unit's firmware archive (tar.gz, zlib wbits 9 level 9, the device default) and checks it
/// against the announced SHA-256; returns its size. The hash covers the firmware alone, so with one the
/// archive is fetched without the generated env.json and schema.json (`unit_files=false`), as a device
/// that checks hashes does.
pub async fn firmware(
    http: &reqwest::Client,
    env: &UnitEnv,
    expected: Option<&str>,
) -> Result<u64> {
    let query = if expected.is_some() {
        "?unit_files=false"
    } else {
        ""
    };
    let bytes = device_get(http, env, "units/firmware/tgz", query)
        .await?
        .bytes()
        .await?;
    if let Some(expected) = expected {
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Error::Checksum {
                expected: expected.to_owned(),
                actual,
            });
        }
    }
    Ok(bytes.len() as u64)
}
