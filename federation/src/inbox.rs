//! The federation routes and what receiving each activity does.
//!
//! An inbox request passes, in order: federation on (else 404, as for every federation route); a body
//! within `max_activity_bytes` (413); a `Signature` that covers `Date` and `Digest`, a `Date` within the
//! clock skew, a `Digest` that matches the body (401); a body that is one of [`Incoming`] (400); the
//! trust policy for the sending instance (403); the library's check of the signature against the
//! sending actor's key (401); an activity id not seen before (409). Only then is anything stored.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use activitypub_federation::axum::inbox::{ActivityData, receive_activity};
use activitypub_federation::axum::json::FederationJson;
use activitypub_federation::config::Data;
use activitypub_federation::kinds::activity::{AcceptType, RejectType};
use activitypub_federation::protocol::context::WithContext;
use activitypub_federation::traits::Activity;
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use sha2::{Digest, Sha256};
use url::Url;

use crate::actor::InstanceActor;
use crate::host::{HostError, Peer, PeerRequest, PeerRequestOutcome};
use crate::policy::{Intent, Mode, Refusal, admit};
use crate::wire::{Accept, Follow, Incoming, Reject};
use crate::{Context, Domain, Error, Federation, PeerStatus};

/// Most activity ids remembered for refusing replays. A replay older than the clock skew is refused by
/// its `Date`; within it, by this memory.
const REMEMBERED: usize = 100_000;

/// The ids seen, and the same ids in the order they arrived (to forget the oldest first).
type Seen = (HashSet<Url>, VecDeque<(Instant, Url)>);

/// Ids of activities received within the last clock-skew window (twice over, to be safe).
#[derive(Default)]
pub struct ReplayGuard(Mutex<Seen>);

impl ReplayGuard {
    /// Records `id`; `false` if it was seen within `window`.
    fn first_time(&self, id: &Url, window: Duration) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, order) = &mut *guard;
        let now = Instant::now();
        while let Some((at, old)) = order.front() {
            if now.duration_since(*at) <= window * 2 && order.len() < REMEMBERED {
                break;
            }
            seen.remove(old);
            order.pop_front();
        }
        if !seen.insert(id.clone()) {
            return false;
        }
        order.push_back((now, id.clone()));
        true
    }
}

impl Error {
    /// The status an inbox answers with; causes of internal errors are logged, not sent.
    fn status(&self) -> StatusCode {
        use activitypub_federation::error::Error as Lib;
        match self {
            Error::Host(HostError::Refused(_)) | Error::Refused(_) => StatusCode::FORBIDDEN,
            Error::Host(HostError::NotFound(_)) => StatusCode::NOT_FOUND,
            Error::Host(HostError::Internal(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Replayed(_) => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Delivery(..) | Error::Unreachable(..) => StatusCode::BAD_GATEWAY,
            Error::Library(e) => match e {
                Lib::ActivitySignatureInvalid | Lib::ActivityBodyDigestInvalid | Lib::Other(_) => {
                    StatusCode::UNAUTHORIZED
                }
                Lib::ParseReceivedActivity { .. } => StatusCode::BAD_REQUEST,
                Lib::UrlVerificationError(_) => StatusCode::FORBIDDEN,
                Lib::NotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            tracing::warn!(error = %self, "federation request failed");
            "the request could not be handled".to_owned()
        } else {
            tracing::debug!(error = %self, %status, "federation request refused");
            self.to_string()
        };
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    }
}

impl Federation {
    /// The federation routes under `/federation`, with their state; mount with `Router::merge`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/federation/actor", get(actor))
            .route("/federation/inbox", post(inbox))
            .route("/federation/units/{uuid}", get(crate::unit_fetch::get_unit))
            .with_state(self.clone())
    }

    pub(crate) async fn mode(&self) -> Result<Mode, Error> {
        Ok(self.context.host.mode().await?)
    }
}

pub(crate) fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": "no such route" })),
    )
        .into_response()
}

async fn actor(State(federation): State<Federation>) -> Response {
    match federation.mode().await {
        Ok(Mode::Off) => return not_found(),
        Ok(Mode::TrustedPeersOnly) => {}
        Err(error) => return error.into_response(),
    }
    match InstanceActor::local(&federation.context).await {
        Ok(actor) => FederationJson(WithContext::new(
            actor.json(),
            serde_json::json!([
                "https://www.w3.org/ns/activitystreams",
                "https://w3id.org/security/v1"
            ]),
        ))
        .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn inbox(State(federation): State<Federation>, request: Request) -> Response {
    match federation.mode().await {
        Ok(Mode::Off) => return not_found(),
        Ok(Mode::TrustedPeersOnly) => {}
        Err(error) => return error.into_response(),
    }
    match receive(&federation, request).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn receive(federation: &Federation, request: Request) -> Result<(), Error> {
    let settings = &federation.context.settings;
    let (parts, body) = request.into_parts();
    let limit = settings.max_activity_bytes;
    let too_large = || Error::TooLarge(limit);
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    check_headers(&parts.headers, &bytes, settings.clock_skew)?;
    let activity: Incoming = serde_json::from_slice(&bytes)?;
    let data = federation.data().await?;
    let domain = sender_domain(&activity)?;
    let peer = federation.context.host.peer(&domain).await?;
    let intent = intent(&data, &activity, peer.as_ref());
    admit(
        federation.mode().await?,
        peer.as_ref().map(|p| p.status),
        intent,
    )
    .map_err(|refusal| match refusal {
        Refusal::Off => Error::Refused("federation is off".into()),
        Refusal::Blocked => Error::Refused(format!("{domain} is blocked")),
        Refusal::NotPeer => Error::Refused(format!(
            "{domain} is not a peer of this instance; ask to peer first"
        )),
    })?;
    let request = Request::from_parts(parts, Body::from(bytes));
    let activity_data = ActivityData::from_request(request, &())
        .await
        .map_err(|_| Error::BadRequest("unreadable request".into()))?;
    receive_activity::<Incoming, InstanceActor, Context>(activity_data, &data).await
}

/// The checks the library leaves to its caller: the body must match its `Digest`, and the `Date` (which
/// the signature must cover, with the digest) must be recent.
fn check_headers(headers: &HeaderMap, body: &[u8], skew: Duration) -> Result<(), Error> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = header("signature")
        .ok_or_else(|| Error::Unauthenticated("the request is not signed".into()))?;
    let signed: Vec<&str> = signature
        .split(',')
        .find_map(|part| part.trim().strip_prefix("headers="))
        .map(|list| list.trim_matches('"').split(' ').collect())
        .unwrap_or_default();
    for needed in ["(request-target)", "date", "digest", "host"] {
        if !signed.contains(&needed) {
            return Err(Error::Unauthenticated(format!(
                "the signature does not cover {needed}"
            )));
        }
    }
    let date = header("date")
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .ok_or_else(|| Error::Unauthenticated("no valid Date header".into()))?;
    let now = SystemTime::now();
    let off = now
        .duration_since(date)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if off > skew {
        return Err(Error::Unauthenticated(format!(
            "the Date header is {} s from this instance's clock (at most {} s allowed)",
            off.as_secs(),
            skew.as_secs()
        )));
    }
    let digest =
        header("digest").ok_or_else(|| Error::Unauthenticated("no Digest header".into()))?;
    let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    let matches = digest.split(',').any(|part| {
        part.trim()
            .split_once('=')
            .is_some_and(|(alg, value)| alg.eq_ignore_ascii_case("SHA-256") && value == expected)
    });
    if !matches {
        return Err(Error::Unauthenticated(
            "the body does not match its Digest".into(),
        ));
    }
    Ok(())
}

/// The instance an activity comes from; its id must be on the same host as its actor.
fn sender_domain(activity: &Incoming) -> Result<Domain, Error> {
    let domain = Domain::of_url(activity.actor())
        .ok_or_else(|| Error::BadRequest("the actor has no host".into()))?;
    if Domain::of_url(activity.id()).as_ref() != Some(&domain) {
        return Err(Error::BadRequest(
            "the activity id is not on its actor's host".into(),
        ));
    }
    Ok(domain)
}

/// What the policy must decide about `activity`.
fn intent(data: &Data<Context>, activity: &Incoming, peer: Option<&Peer>) -> Intent {
    let me = &data.urls.actor;
    match activity {
        Incoming::Follow(follow) if &follow.object == me => Intent::AskToPeer,
        Incoming::Accept(Accept { object, .. }) | Incoming::Reject(Reject { object, .. })
            if &object.actor == me
                && peer.is_some_and(|p| p.actor == object.object && p.requested_here) =>
        {
            Intent::AnswerOwnRequest
        }
        _ => Intent::PeerTraffic,
    }
}

/// The peer that sent an activity that passed the policy.
async fn sender(data: &Data<Context>, activity: &Incoming) -> Result<Peer, Error> {
    let domain = sender_domain(activity)?;
    data.host
        .peer(&domain)
        .await?
        .ok_or_else(|| Error::Refused(format!("{domain} is not a peer")))
}

#[async_trait]
impl Activity for Incoming {
    type DataType = Context;
    type Error = Error;

    fn id(&self) -> &Url {
        Incoming::id(self)
    }

    fn actor(&self) -> &Url {
        Incoming::actor(self)
    }

    /// Runs after the signature is verified: a replayed id is refused before anything is stored.
    async fn verify(&self, data: &Data<Context>) -> Result<(), Error> {
        if data
            .replay
            .first_time(Incoming::id(self), data.settings.clock_skew)
        {
            Ok(())
        } else {
            Err(Error::Replayed(Incoming::id(self).clone()))
        }
    }

    async fn receive(self, data: &Data<Context>) -> Result<(), Error> {
        let me = data.urls.actor.clone();
        match self {
            Incoming::Follow(follow) if follow.object == me => ask_to_peer(data, follow).await,
            Incoming::Follow(follow) => follow_unit(data, follow).await,
            Incoming::Accept(accept) => {
                let peer = sender(data, &Incoming::Accept(accept.clone())).await?;
                answered(data, &peer, &accept.object, accept.result).await
            }
            Incoming::Reject(reject) => {
                let peer = sender(data, &Incoming::Reject(reject.clone())).await?;
                if reject.object.object == peer.actor && reject.object.actor == me {
                    // A refusal of our request, or the end of an accepted peering.
                    if peer.status == PeerStatus::Requested {
                        data.host.peer_answered(&peer.domain, false).await?;
                    } else {
                        data.host.peer_ended(&peer.domain).await?;
                    }
                    data.followers_changed.notify_one();
                    return Ok(());
                }
                answered(data, &peer, &reject.object, None).await
            }
            Incoming::Undo(undo) => {
                let peer = sender(data, &Incoming::Undo(undo.clone())).await?;
                if undo.object.actor != peer.actor {
                    return Err(Error::BadRequest(
                        "only one's own Follow can be undone".into(),
                    ));
                }
                if undo.object.object == me {
                    data.host.peer_ended(&peer.domain).await?;
                } else if let Some(unit) = data.urls.unit_of(&undo.object.object) {
                    data.host.follower_removed(&peer, unit).await?;
                } else {
                    return Err(Error::BadRequest("Undo of an unknown Follow".into()));
                }
                data.followers_changed.notify_one();
                Ok(())
            }
            Incoming::Block(block) => {
                let peer = sender(data, &Incoming::Block(block.clone())).await?;
                if block.object != me {
                    return Err(Error::BadRequest("Block of another actor".into()));
                }
                data.host.peer_ended(&peer.domain).await?;
                data.followers_changed.notify_one();
                Ok(())
            }
            Incoming::Values(values) => {
                let peer = sender(data, &Incoming::Values(values.clone())).await?;
                data.host.values(&peer, values.samples).await?;
                Ok(())
            }
        }
    }
}

/// Another instance asks to peer: stored for an admin, or accepted at once if this instance asked too.
async fn ask_to_peer(data: &Data<Context>, follow: Follow) -> Result<(), Error> {
    let actor = crate::actor::fetch(&follow.actor, data).await?;
    let domain = sender_domain(&Incoming::Follow(follow.clone()))?;
    let outcome = data
        .host
        .peer_requested(PeerRequest {
            domain,
            actor: actor.id.clone(),
            inbox: actor.inbox.clone(),
            public_key_pem: actor.public_key_pem.clone(),
            follow: follow.id.clone(),
        })
        .await?;
    if outcome == PeerRequestOutcome::Accepted {
        let accept = Accept {
            id: data.urls.activity(),
            kind: AcceptType::Accept,
            actor: data.urls.actor.clone(),
            object: follow,
            result: None,
        };
        Federation::send_later(data, actor.inbox, accept);
    }
    Ok(())
}

/// A peer follows one of this instance's units: accepted with the unit when it is shared with peers;
/// refused (404, nothing stored) when it does not exist or is internal or private.
async fn follow_unit(data: &Data<Context>, follow: Follow) -> Result<(), Error> {
    let peer = sender(data, &Incoming::Follow(follow.clone())).await?;
    if follow.actor != peer.actor {
        return Err(Error::BadRequest(
            "only instance actors follow units".into(),
        ));
    }
    let unit = data
        .urls
        .unit_of(&follow.object)
        .ok_or(HostError::NotFound("unit"))?;
    let object = data
        .host
        .shared_unit(&peer, unit)
        .await?
        .ok_or(HostError::NotFound("unit"))?;
    data.host.follower_added(&peer, unit, &follow.id).await?;
    data.followers_changed.notify_one();
    let accept = Accept {
        id: data.urls.activity(),
        kind: AcceptType::Accept,
        actor: data.urls.actor.clone(),
        object: follow,
        result: Some(object),
    };
    Federation::send_later(data, peer.inbox, accept);
    Ok(())
}

/// An answer (Accept, or Reject with `result` none) to a Follow this instance sent.
async fn answered(
    data: &Data<Context>,
    peer: &Peer,
    follow: &Follow,
    result: Option<crate::wire::UnitObject>,
) -> Result<(), Error> {
    if follow.actor != data.urls.actor {
        return Err(Error::BadRequest(
            "an answer to another instance's Follow".into(),
        ));
    }
    if follow.object == peer.actor {
        return Ok(data.host.peer_answered(&peer.domain, true).await?);
    }
    if Domain::of_url(&follow.object).as_ref() != Some(&peer.domain) {
        return Err(Error::BadRequest(
            "an answer about another instance's unit".into(),
        ));
    }
    let unit = follow
        .object
        .path_segments()
        .and_then(|mut s| s.next_back())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::BadRequest("the Follow's object is not a unit".into()))?;
    if let Some(object) = &result
        && (object.uuid != unit || object.id != follow.object)
    {
        return Err(Error::BadRequest("the Accept carries another unit".into()));
    }
    Ok(data.host.unit_answered(peer, unit, result).await?)
}

/// Builds the Reject that ends `follow` (sent by a peer to this instance).
pub fn reject(federation: &Federation, follow: Follow) -> Reject {
    Reject {
        id: federation.urls().activity(),
        kind: RejectType::Reject,
        actor: federation.urls().actor.clone(),
        object: follow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_once() {
        let guard = ReplayGuard::default();
        let id: Url = "https://a.example/federation/activities/1".parse().unwrap();
        assert!(guard.first_time(&id, Duration::from_secs(60)));
        assert!(!guard.first_time(&id, Duration::from_secs(60)));
        let other: Url = "https://a.example/federation/activities/2".parse().unwrap();
        assert!(guard.first_time(&other, Duration::from_secs(60)));
    }

    fn signed_headers(body: &[u8], date: SystemTime, covered: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
        headers.insert("digest", format!("SHA-256={digest}").parse().unwrap());
        headers.insert("date", httpdate::fmt_http_date(date).parse().unwrap());
        headers.insert(
            "signature",
            format!("keyId=\"https://a.example/federation/actor#main-key\",headers=\"{covered}\",signature=\"x\"")
                .parse()
                .unwrap(),
        );
        headers
    }

    const COVERED: &str = "(request-target) content-type date digest host";

    #[test]
    fn header_checks() {
        let skew = Duration::from_secs(300);
        let now = SystemTime::now();
        assert!(check_headers(&signed_headers(b"{}", now, COVERED), b"{}", skew).is_ok());
        // The body changed after signing.
        assert!(matches!(
            check_headers(&signed_headers(b"{}", now, COVERED), b"{ }", skew),
            Err(Error::Unauthenticated(_))
        ));
        // Stale and future dates.
        for date in [
            now - Duration::from_secs(900),
            now + Duration::from_secs(900),
        ] {
            assert!(matches!(
                check_headers(&signed_headers(b"{}", date, COVERED), b"{}", skew),
                Err(Error::Unauthenticated(_))
            ));
        }
        // A signature that does not cover the digest.
        assert!(matches!(
            check_headers(
                &signed_headers(b"{}", now, "(request-target) date host"),
                b"{}",
                skew
            ),
            Err(Error::Unauthenticated(_))
        ));
        // No signature at all.
        let mut unsigned = signed_headers(b"{}", now, COVERED);
        unsigned.remove("signature");
        assert!(matches!(
            check_headers(&unsigned, b"{}", skew),
            Err(Error::Unauthenticated(_))
        ));
    }
}
