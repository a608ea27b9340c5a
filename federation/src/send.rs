//! Sending one activity: signed with the instance key (HTTP signature over the request target, host,
//! date, content type and a SHA-256 digest of the body), posted to one inbox, and its answer seen.

use std::time::SystemTime;

use activitypub_federation::FEDERATION_CONTENT_TYPE;
use activitypub_federation::config::Data;
use activitypub_federation::protocol::context::WithContext;
use serde::Serialize;
use url::Url;

use crate::{Context, Error, Federation};

/// A signed request ready to send, for callers that want to change it first (tests of the inbox).
pub async fn signed_request(
    data: &Data<Context>,
    inbox: &Url,
    body: Vec<u8>,
    date: SystemTime,
) -> Result<reqwest::Request, Error> {
    let mut host = inbox
        .host_str()
        .ok_or_else(|| Error::Refused(format!("{inbox} has no host")))?
        .to_owned();
    if let Some(port) = inbox.port() {
        host = format!("{host}:{port}");
    }
    let builder = data
        .client
        .post(inbox.as_str())
        .header("content-type", FEDERATION_CONTENT_TYPE)
        .header("host", host)
        .header("date", httpdate::fmt_http_date(date))
        .timeout(data.settings.request_timeout);
    Ok(data.sign_request(builder, body.into()).await?)
}

/// Posts `activity` to `inbox`, signed; a refusal (any status but 2xx) is an error.
pub async fn deliver(
    data: &Data<Context>,
    inbox: &Url,
    activity: &impl Serialize,
) -> Result<(), Error> {
    crate::client::check_url(data.app_data(), inbox).await?;
    let body = serde_json::to_vec(&WithContext::new_default(activity))?;
    let request = signed_request(data, inbox, body, SystemTime::now()).await?;
    let response = data
        .client
        .execute(request)
        .await
        .map_err(|e| Error::Unreachable(inbox.clone(), e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Error::Delivery(inbox.clone(), status.as_u16()))
    }
}

impl Federation {
    /// Sends `activity` to `inbox` now.
    pub async fn send(&self, inbox: &Url, activity: &impl Serialize) -> Result<(), Error> {
        let data = self.data().await?;
        deliver(&data, inbox, activity).await
    }

    /// Sends `activity` in the background, logging a failure; for answers that must not hold up the
    /// request that caused them.
    pub(crate) fn send_later<A>(data: &Data<Context>, inbox: Url, activity: A)
    where
        A: Serialize + Send + Sync + 'static,
    {
        let data = data.clone();
        tokio::spawn(async move {
            if let Err(error) = deliver(&data, &inbox, &activity).await {
                tracing::warn!(%inbox, %error, "sending an activity failed");
            }
        });
    }
}
