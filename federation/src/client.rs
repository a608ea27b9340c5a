//! Outgoing HTTP: one client for fetching actors and sending activities, behind the server's SSRF guard,
//! and the check every URL passes before it is fetched or sent to (scheme, blocklist).
//!
//! The guard resolves every host itself and refuses loopback, private and other internal addresses
//! unless `allow_local` is set, at connect time, so a name that changes its address (DNS rebinding) is
//! still refused. Redirects are not followed; every request has a timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use activitypub_federation::config::UrlVerifier;
use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::{Context, Domain, Error, PeerStatus, Settings};

struct GuardedResolver {
    allow_local: bool,
    is_internal: fn(std::net::IpAddr) -> bool,
}

/// Why a name was not resolved.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_local = self.allow_local;
        let is_internal = self.is_internal;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses.is_empty() {
                return Err(Box::new(Refused(format!("{host} has no address"))) as _);
            }
            if !allow_local && addresses.iter().any(|a| is_internal(a.ip())) {
                return Err(Box::new(Refused(format!(
                    "{host} resolves to a loopback or private address; an admin can allow such \
                     instances with allow_local_remotes (PEPEUNIT_ALLOW_LOCAL_REMOTES)"
                ))) as _);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// The client every outgoing federation request uses.
pub(crate) fn guarded(
    settings: &Settings,
) -> Result<reqwest_middleware::ClientWithMiddleware, Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout)
        .dns_resolver(Arc::new(GuardedResolver {
            allow_local: settings.allow_local,
            is_internal: settings.is_internal,
        }))
        .build()
        .map_err(|e| Error::BadRequest(format!("HTTP client: {e}")))?;
    Ok(client.into())
}

/// Checks a URL this instance is about to fetch or send to: https (http only with `allow_local`), no
/// internal IP literal (which no resolver sees), not a blocked instance.
pub(crate) async fn check_url(context: &Context, url: &Url) -> Result<Domain, Error> {
    let settings = &context.settings;
    match url.scheme() {
        "https" => {}
        "http" if settings.allow_local => {}
        other => {
            return Err(Error::Refused(format!(
                "{other}:// is not allowed for other instances; use https"
            )));
        }
    }
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = ip
        && !settings.allow_local
        && (settings.is_internal)(ip)
    {
        return Err(Error::Refused(format!("{ip} is an internal address")));
    }
    let domain = Domain::of_url(url).ok_or_else(|| Error::Refused(format!("{url} has no host")))?;
    if context
        .host
        .peer(&domain)
        .await?
        .is_some_and(|p| p.status == PeerStatus::Blocked)
    {
        return Err(Error::Refused(format!("{domain} is blocked")));
    }
    Ok(domain)
}

/// The library's hook for URLs it fetches, sends to or receives ids from.
#[derive(Clone)]
pub(crate) struct BlocklistVerifier(pub(crate) Context);

#[async_trait]
impl UrlVerifier for BlocklistVerifier {
    async fn verify(&self, url: &Url) -> Result<(), activitypub_federation::error::Error> {
        check_url(&self.0, url).await.map(|_| ()).map_err(|e| {
            tracing::debug!(%url, error = %e, "federation URL refused");
            activitypub_federation::error::Error::UrlVerificationError("refused by policy")
        })
    }
}
