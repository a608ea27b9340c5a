//! Federation between Pepeunit instances over ActivityPub.
//!
//! Instances share unit data with the peers an admin trusts, by uuid. This crate holds the wire types
//! ([`wire`]), signing and verification (through `activitypub_federation`: RSA-2048 HTTP signatures with
//! a SHA-256 body digest), the trust policy ([`policy`], [`Domain`]), the inbox ([`inbox`]) and the
//! batching of values between instances ([`outbox`]). It knows nothing of the server's storage: the
//! server implements [`Host`] and mounts [`Federation::router`].
//!
//! `activitypub_federation` 0.7.0-beta.8 is used because it is the last release on the server's axum 0.8
//! and reqwest 0.12 (0.6 needs axum 0.7; later betas reqwest 0.13). Of it this crate uses the signing,
//! the signature check, actor fetching and the URL checks; it sends through its own
//! [`send`] (so a refusal is seen, not swallowed) rather than the library's unbounded in-memory queue.

pub mod actor;
pub mod client;
pub mod domain;
pub mod host;
pub mod inbox;
pub mod outbox;
pub mod policy;
pub mod send;
pub mod unit_fetch;
pub mod wire;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use activitypub_federation::config::{Data, FederationConfig};
use tokio::sync::OnceCell;
use url::Url;
use uuid::Uuid;

pub use domain::{BadDomain, Domain};
pub use host::{Host, HostError, KeyPair, Peer, PeerRequest, PeerRequestOutcome};
pub use policy::{Mode, PeerStatus};

/// A new RSA-2048 key pair for an instance actor (slow: run it off the async threads).
pub fn generate_key_pair() -> Result<KeyPair, Error> {
    let keys = activitypub_federation::http_signatures::generate_actor_keypair()?;
    Ok(KeyPair {
        public_key_pem: keys.public_key,
        private_key_pem: keys.private_key,
    })
}

/// What a federation call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("federation: {0}")]
    Library(#[from] activitypub_federation::error::Error),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("signature: {0}")]
    Unauthenticated(String),
    #[error("an activity may have at most {0} bytes")]
    TooLarge(usize),
    #[error("activity {0} was already received")]
    Replayed(Url),
    #[error("{0} answered {1}")]
    Delivery(Url, u16),
    #[error("cannot reach {0}: {1}")]
    Unreachable(Url, String),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::BadRequest(e.to_string())
    }
}

/// How this instance federates.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The instance's public URL (what the actor's id and every activity id start with).
    pub public_url: Url,
    /// Plain http and loopback or private addresses for other instances (tests and labs only).
    pub allow_local: bool,
    /// The server's SSRF rule: whether an address is internal (loopback, private, link-local...).
    pub is_internal: fn(IpAddr) -> bool,
    /// Largest activity an inbox reads.
    pub max_activity_bytes: usize,
    /// How far a request's `Date` may be from this instance's clock.
    pub clock_skew: Duration,
    /// Timeout of each request to another instance.
    pub request_timeout: Duration,
    pub outbox: outbox::Limits,
}

/// The URLs of this instance's federation objects.
#[derive(Clone, Debug)]
pub struct Urls {
    base: Url,
    pub actor: Url,
    pub inbox: Url,
}

impl Urls {
    fn new(public_url: &Url) -> Result<Self, Error> {
        let mut base = public_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| Error::BadRequest(format!("public URL: {e}")))
        };
        Ok(Self {
            actor: join("federation/actor")?,
            inbox: join("federation/inbox")?,
            base,
        })
    }

    /// The id of one of this instance's units.
    pub fn unit(&self, uuid: Uuid) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}federation/units/{uuid}", self.base.path()));
        url
    }

    /// The unit of this instance that `url` names, if any.
    pub fn unit_of(&self, url: &Url) -> Option<Uuid> {
        let prefix = format!("{}federation/units/", self.base.path());
        if url.origin() != self.base.origin() {
            return None;
        }
        url.path().strip_prefix(&prefix)?.parse().ok()
    }

    /// A fresh activity id.
    pub fn activity(&self) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}federation/activities/{}",
            self.base.path(),
            Uuid::new_v4()
        ));
        url
    }
}

/// What every handler and sender shares; the library's `app_data`.
#[derive(Clone)]
pub struct Context {
    pub(crate) host: Arc<dyn Host>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) urls: Arc<Urls>,
    pub(crate) client: reqwest_middleware::ClientWithMiddleware,
    pub(crate) replay: Arc<inbox::ReplayGuard>,
    pub(crate) followers_changed: Arc<tokio::sync::Notify>,
}

/// The federation of one instance; cheap to clone.
#[derive(Clone)]
pub struct Federation {
    context: Context,
    domain: Domain,
    /// Built on first use: it needs the instance key, which is made only when federation is used.
    config: Arc<OnceCell<FederationConfig<Context>>>,
}

impl Federation {
    pub fn new(settings: Settings, host: Arc<dyn Host>) -> Result<Self, Error> {
        let urls = Urls::new(&settings.public_url)?;
        let domain = Domain::of_url(&settings.public_url)
            .ok_or_else(|| Error::BadRequest("the public URL has no host".into()))?;
        let client = client::guarded(&settings)?;
        Ok(Self {
            context: Context {
                host,
                urls: Arc::new(urls),
                client,
                replay: Arc::new(inbox::ReplayGuard::default()),
                followers_changed: Arc::new(tokio::sync::Notify::new()),
                settings: Arc::new(settings),
            },
            domain,
            config: Arc::new(OnceCell::new()),
        })
    }

    pub fn urls(&self) -> &Urls {
        &self.context.urls
    }

    /// This instance's canonical domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    pub fn host(&self) -> &Arc<dyn Host> {
        &self.context.host
    }

    pub fn settings(&self) -> &Settings {
        &self.context.settings
    }

    /// Tells the outbox that who follows which unit changed.
    pub fn followers_changed(&self) {
        self.context.followers_changed.notify_one();
    }

    /// The per-request handle the library works with; makes the instance key on first use.
    pub async fn data(&self) -> Result<Data<Context>, Error> {
        let config = self
            .config
            .get_or_try_init(|| async {
                let local = actor::InstanceActor::local(&self.context).await?;
                let settings = &self.context.settings;
                FederationConfig::builder()
                    .domain(self.domain.as_str())
                    .app_data(self.context.clone())
                    .client(self.context.client.clone())
                    // `debug` lets the library accept ports and loopback hosts; only with allow_local.
                    .debug(settings.allow_local)
                    .allow_http_urls(settings.allow_local)
                    .request_timeout(settings.request_timeout)
                    .http_fetch_limit(5)
                    .url_verifier(Box::new(client::BlocklistVerifier(self.context.clone())))
                    .signed_fetch_actor(&local)
                    .build()
                    .await
                    .map_err(|e| Error::BadRequest(format!("federation config: {e}")))
            })
            .await?;
        Ok(config.to_request_data())
    }

    /// Fetches another instance's actor (through the SSRF guard and the blocklist).
    pub async fn fetch_actor(&self, url: &Url) -> Result<actor::InstanceActor, Error> {
        let data = self.data().await?;
        actor::fetch(url, &data).await
    }
}
