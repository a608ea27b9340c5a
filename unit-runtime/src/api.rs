//! The unit's calls to the server's REST API, authenticated with its own token.

use std::path::Path;

use futures_util::StreamExt;
use pepeunit_protocol::device::{UnitEnv, UnitSchema};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, IoContext, Result};

/// How long one REST call may take; archives get longer (see [`Api::download_firmware`]).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    unit: uuid::Uuid,
    token: String,
}

impl Api {
    pub fn new(env: &UnitEnv) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("pepeunit-unit/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            base: env.api_base(),
            unit: env.unit,
            token: env.auth_token.clone(),
        })
    }

    async fn get(&self, what: &str, path: &str) -> Result<reqwest::Response> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("x-auth-token", &self.token)
            .timeout(if what == "firmware" {
                DOWNLOAD_TIMEOUT
            } else {
                TIMEOUT
            })
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(Error::Status {
                what: what.into(),
                status: response.status().as_u16(),
            });
        }
        Ok(response)
    }

    /// The unit's env.json as the server renders it now, raw, and parsed to be sure it is usable.
    pub async fn env(&self) -> Result<(Vec<u8>, UnitEnv)> {
        let bytes = self
            .get("env.json", &format!("/units/env/{}", self.unit))
            .await?
            .bytes()
            .await?
            .to_vec();
        let env = UnitEnv::parse(&bytes)?;
        Ok((bytes, env))
    }

    pub async fn schema(&self) -> Result<(Vec<u8>, UnitSchema)> {
        let bytes = self
            .get(
                "schema.json",
                &format!("/units/get_current_schema/{}", self.unit),
            )
            .await?
            .bytes()
            .await?
            .to_vec();
        let schema = UnitSchema::parse(&bytes)?;
        Ok((bytes, schema))
    }

    /// Streams the unit's firmware (`firmware/tgz`, default compression, without the generated unit
    /// files: what the update command's hash covers) into `to`, flushed to disk; returns its SHA-256 in
    /// hex, computed on the way.
    pub async fn download_firmware(&self, to: &Path) -> Result<String> {
        let response = self
            .get(
                "firmware",
                &format!("/units/firmware/tgz/{}?unit_files=false", self.unit),
            )
            .await?;
        let mut file = tokio::fs::File::create(to).await.at(to)?;
        let mut hasher = Sha256::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.at(to)?;
        }
        file.sync_all().await.at(to)?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// The unit's name, looked up by one of its variables (the device API has no "who am I").
    pub async fn unit_name(&self, node: uuid::Uuid) -> Result<Option<String>> {
        #[derive(serde::Deserialize)]
        struct Unit {
            uuid: uuid::Uuid,
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct Page {
            units: Vec<Unit>,
        }
        let page: Page = self
            .get("units", &format!("/units?unit_node_uuids={node}"))
            .await?
            .json()
            .await?;
        Ok(page
            .units
            .into_iter()
            .find(|u| u.uuid == self.unit)
            .map(|u| u.name))
    }
}
