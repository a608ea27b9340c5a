//! Outgoing webhooks: each alert as a JSON POST, signed with HMAC-SHA256 over the body under the webhook's
//! own secret (`X-Pepeunit-Signature: sha256=<hex>`), with its id in `X-Pepeunit-Alert-Id` so a receiver
//! can drop a repeat (delivery is at least once); and the values of the variables a webhook chose
//! (`"event": "values"`, in batches), signed the same way.
//!
//! The SSRF guard of git remotes holds here too, at every connect: hosts are resolved through a resolver
//! that refuses loopback, private and the other internal addresses unless `allow_local_remotes` is on; IP
//! literals are checked before the request; no proxy, no redirects.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use url::{Host, Url};

use crate::entities::{alert_channels, alerts};
use crate::services::Services;
use crate::services::alerts::deliver::{AlertTransport, DeliveryError, addresses_allowed};
use crate::services::alerts::values::{NamedSample, ValueTransport};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-pepeunit-signature";
/// The header carrying the alert's id.
pub const ALERT_ID_HEADER: &str = "x-pepeunit-alert-id";

/// A host resolved to an address the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to a loopback or private address; allow_local_remotes is off")]
struct Refused(String);

struct GuardedResolver {
    allow_local: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_local = self.allow_local;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
            if !addresses_allowed(&ips, allow_local) {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The webhook transport.
pub struct Webhooks {
    client: reqwest::Client,
    allow_local: bool,
}

impl Webhooks {
    pub fn new(allow_local: bool) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("pepeunit/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_local }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Self {
            client,
            allow_local,
        })
    }

    /// POSTs `body` to the channel's URL, signed under its secret, with `alert`'s id if it is an alert.
    async fn post(
        &self,
        services: &Services,
        channel: &alert_channels::Model,
        body: String,
        alert: Option<uuid::Uuid>,
    ) -> Result<(), DeliveryError> {
        let raw = channel
            .webhook_url
            .as_deref()
            .ok_or_else(|| DeliveryError::Permanent("the webhook has no URL".into()))?;
        let url = Url::parse(raw)
            .map_err(|e| DeliveryError::Permanent(format!("the webhook URL is not valid: {e}")))?;
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !addresses_allowed(&[ip], self.allow_local)
        {
            return Err(DeliveryError::Permanent(
                Refused(ip.to_string()).to_string(),
            ));
        }
        let secret = crate::services::alerts::webhook_secret(services, channel)
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        let signature = sign(&secret, body.as_bytes());
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, format!("sha256={signature}"));
        if let Some(alert) = alert {
            request = request.header(ALERT_ID_HEADER, alert.to_string());
        }
        let response = request.body(body).send().await.map_err(|error| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            while let Some(current) = cause {
                if let Some(refused) = current.downcast_ref::<Refused>() {
                    return DeliveryError::Permanent(refused.to_string());
                }
                cause = current.source();
            }
            DeliveryError::Retry(format!("the webhook could not be reached: {error}"))
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Retry(format!(
                "the webhook answered HTTP {status}"
            )))
        }
    }
}

/// HMAC-SHA256 of `body` under `secret`, in hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The JSON a webhook receives.
fn body(alert: &alerts::Model) -> serde_json::Value {
    json!({
        "id": alert.uuid,
        "event": "alert",
        "kind": alert.kind,
        "rule": { "uuid": alert.rule_uuid, "kind": alert.rule_kind },
        "unit": { "uuid": alert.unit_uuid, "name": alert.unit_name },
        "variable": alert.variable,
        "value": alert.value,
        "message": alert.message,
        "at": alert.created_at.to_rfc3339(),
    })
}

impl AlertTransport for Webhooks {
    fn deliver<'a>(
        &'a self,
        services: &'a Services,
        channel: &'a alert_channels::Model,
        alert: &'a alerts::Model,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(self.post(services, channel, body(alert).to_string(), Some(alert.uuid)))
    }
}

/// The JSON of a batch of values: in order, with how many values this webhook has missed so far.
fn values_body(channel: &alert_channels::Model, samples: &[NamedSample], dropped: u64) -> String {
    let values: Vec<serde_json::Value> = samples
        .iter()
        .map(|s| {
            json!({
                "unit": { "uuid": s.sample.unit, "name": s.unit_name },
                "node": s.sample.node,
                "variable": s.variable,
                "value": s.sample.value,
                "at": s.sample.at.to_rfc3339(),
            })
        })
        .collect();
    json!({
        "event": "values",
        "webhook": channel.uuid,
        "values": values,
        "dropped": dropped,
    })
    .to_string()
}

impl ValueTransport for Webhooks {
    fn post_values<'a>(
        &'a self,
        services: &'a Services,
        channel: &'a alert_channels::Model,
        samples: &'a [NamedSample],
        dropped: u64,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(self.post(
            services,
            channel,
            values_body(channel, samples, dropped),
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
