//! A peer reads one shared unit (its name and outputs with their last values) without following it:
//! what a user sees before linking a remote output.
//!
//! `GET /federation/units/<uuid>` answers only a request signed by an accepted peer (HTTP signature
//! with the peer's stored key, covering `(request-target)` and `Date`, the `Date` within the clock
//! skew), and only for a unit the host shares with that peer: 404 when federation is off or the unit is
//! not shared, 401 for a missing or bad signature, 403 for an instance that is not a peer or is
//! blocked (from the instance or from that unit). Nothing is stored.

use std::collections::BTreeMap;
use std::time::SystemTime;

use activitypub_federation::FEDERATION_CONTENT_TYPE;
use activitypub_federation::axum::json::FederationJson;
use activitypub_federation::protocol::context::WithContext;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};
use url::Url;
use uuid::Uuid;

use crate::host::{HostError, Peer};
use crate::policy::Mode;
use crate::wire::UnitObject;
use crate::{Domain, Error, Federation, PeerStatus};

/// Largest unit document read from a peer.
const MAX_UNIT_BYTES: usize = 1024 * 1024;

impl Federation {
    /// Reads the unit at `url` (`https://<peer>/federation/units/<uuid>`) from its home instance, an
    /// accepted peer, with a signed GET.
    pub async fn fetch_unit(&self, url: &Url) -> Result<UnitObject, Error> {
        let data = self.data().await?;
        crate::client::check_url(data.app_data(), url).await?;
        let mut host = url
            .host_str()
            .ok_or_else(|| Error::Refused(format!("{url} has no host")))?
            .to_owned();
        if let Some(port) = url.port() {
            host = format!("{host}:{port}");
        }
        let builder = data
            .client
            .get(url.as_str())
            .header(header::ACCEPT, FEDERATION_CONTENT_TYPE)
            .header(header::HOST, host)
            .header(header::DATE, httpdate::fmt_http_date(SystemTime::now()))
            .timeout(data.settings.request_timeout);
        let request = data.sign_request(builder, Bytes::new()).await?;
        let response = data
            .client
            .execute(request)
            .await
            .map_err(|e| Error::Unreachable(url.clone(), e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Delivery(url.clone(), status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_UNIT_BYTES as u64)
        {
            return Err(Error::TooLarge(MAX_UNIT_BYTES));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Error::Unreachable(url.clone(), e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_UNIT_BYTES {
                return Err(Error::TooLarge(MAX_UNIT_BYTES));
            }
            body.extend_from_slice(&chunk);
        }
        let unit: UnitObject = serde_json::from_slice(&body)?;
        if &unit.id != url {
            return Err(Error::BadRequest(format!(
                "{url} answered with another unit"
            )));
        }
        Ok(unit)
    }
}

/// The route: a unit as the signing peer may see it.
pub(crate) async fn get_unit(
    State(federation): State<Federation>,
    Path(uuid): Path<Uuid>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match federation.mode().await {
        Ok(Mode::Off) => return crate::inbox::not_found(),
        Ok(Mode::TrustedPeersOnly) => {}
        Err(error) => return error.into_response(),
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match serve(&federation, path, &headers, uuid).await {
        Ok(unit) => FederationJson(WithContext::new_default(unit)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn serve(
    federation: &Federation,
    path: &str,
    headers: &HeaderMap,
    unit: Uuid,
) -> Result<UnitObject, Error> {
    let peer = signing_peer(federation, path, headers).await?;
    federation
        .context
        .host
        .shared_unit(&peer, unit)
        .await?
        .ok_or(Error::Host(HostError::NotFound("unit")))
}

/// The accepted peer whose key signed this GET.
async fn signing_peer(
    federation: &Federation,
    path: &str,
    headers: &HeaderMap,
) -> Result<Peer, Error> {
    let mut map = BTreeMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            map.insert(name.as_str().to_owned(), value.to_owned());
        }
    }
    let signature = map
        .get("signature")
        .ok_or_else(|| Error::Unauthenticated("the request is not signed".into()))?;
    let covers_target = signature
        .split(',')
        .find_map(|part| part.trim().strip_prefix("headers="))
        .is_some_and(|list| {
            list.trim_matches('"')
                .split(' ')
                .any(|h| h == "(request-target)")
        });
    if !covers_target {
        return Err(Error::Unauthenticated(
            "the signature does not cover (request-target)".into(),
        ));
    }
    check_date(&map, federation.settings().clock_skew)?;
    let unverified = http_signature_normalization::Config::new()
        .set_expiration(federation.settings().clock_skew)
        .require_header("date")
        .begin_verify(Method::GET.as_str(), path, map)
        .map_err(|e| Error::Unauthenticated(e.to_string()))?;
    let actor: Url = unverified
        .key_id()
        .split('#')
        .next()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::Unauthenticated("the signature's keyId is not a URL".into()))?;
    let domain = Domain::of_url(&actor)
        .ok_or_else(|| Error::Unauthenticated("the signature's keyId has no host".into()))?;
    let peer = federation
        .context
        .host
        .peer(&domain)
        .await?
        .filter(|p| p.status == PeerStatus::Accepted && p.actor == actor)
        .ok_or_else(|| Error::Refused(format!("{domain} is not a peer of this instance")))?;
    let public_key = RsaPublicKey::from_public_key_pem(&peer.public_key_pem)
        .map_err(|e| Error::Unauthenticated(format!("the peer's key is unreadable: {e}")))?;
    let verified = unverified.verify(|signature, signing_string| {
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        public_key
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(signing_string.as_bytes()),
                &signature,
            )
            .is_ok()
    });
    if verified {
        Ok(peer)
    } else {
        Err(Error::Unauthenticated(
            "the signature does not match the peer's key".into(),
        ))
    }
}

/// The `Date` must be there and within the clock skew, as for activities.
fn check_date(headers: &BTreeMap<String, String>, skew: std::time::Duration) -> Result<(), Error> {
    let date = headers
        .get("date")
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .ok_or_else(|| Error::Unauthenticated("no valid Date header".into()))?;
    let now = SystemTime::now();
    let off = now
        .duration_since(date)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if off > skew {
        return Err(Error::Unauthenticated(format!(
            "the Date header is {} s from this instance's clock",
            off.as_secs()
        )));
    }
    Ok(())
}
