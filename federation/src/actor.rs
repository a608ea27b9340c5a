//! The instance actor: this instance's (with its private key) or a peer's (its public key only).
//!
//! A peer's actor is read from the host's peer table; an actor never seen is fetched over HTTP but not
//! stored here: only an admin's decision (or the peering flow) stores a peer.

use activitypub_federation::config::Data;
use activitypub_federation::fetch::object_id::ObjectId;
use activitypub_federation::kinds::actor::ApplicationType;
use activitypub_federation::protocol::verification::verify_domains_match;
use activitypub_federation::traits::{Actor, Object};
use async_trait::async_trait;
use url::Url;

use crate::wire::InstanceActorJson;
use crate::{Context, Domain, Error};

/// An instance's actor.
#[derive(Clone, Debug)]
pub struct InstanceActor {
    pub id: Url,
    pub inbox: Url,
    pub name: String,
    pub public_key_pem: String,
    private_key_pem: Option<String>,
}

impl InstanceActor {
    /// This instance's actor, with its key (made on first use).
    pub(crate) async fn local(context: &Context) -> Result<Self, Error> {
        let keys = context.host.key_pair().await?;
        Ok(Self {
            id: context.urls.actor.clone(),
            inbox: context.urls.inbox.clone(),
            name: Domain::of_url(&context.urls.actor)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            public_key_pem: keys.public_key_pem,
            private_key_pem: Some(keys.private_key_pem),
        })
    }

    /// The JSON document served at the actor's id.
    pub fn json(&self) -> InstanceActorJson {
        InstanceActorJson {
            kind: ApplicationType::Application,
            id: self.id.clone(),
            inbox: self.inbox.clone(),
            preferred_username: self.name.clone(),
            public_key: self.public_key(),
        }
    }
}

/// Fetches the actor at `url` (not stored).
pub(crate) async fn fetch(url: &Url, data: &Data<Context>) -> Result<InstanceActor, Error> {
    ObjectId::<InstanceActor>::from(url.clone())
        .dereference_forced(data)
        .await
}

#[async_trait]
impl Object for InstanceActor {
    type DataType = Context;
    type Kind = InstanceActorJson;
    type Error = Error;

    fn id(&self) -> &Url {
        &self.id
    }

    async fn read_from_id(id: Url, data: &Data<Context>) -> Result<Option<Self>, Error> {
        if id == data.urls.actor {
            return Ok(Some(Self::local(data.app_data()).await?));
        }
        let Some(domain) = Domain::of_url(&id) else {
            return Ok(None);
        };
        Ok(data
            .host
            .peer(&domain)
            .await?
            .filter(|peer| peer.actor == id)
            .map(|peer| Self {
                id: peer.actor,
                inbox: peer.inbox,
                name: peer.domain.to_string(),
                public_key_pem: peer.public_key_pem,
                private_key_pem: None,
            }))
    }

    async fn into_json(self, _data: &Data<Context>) -> Result<InstanceActorJson, Error> {
        Ok(self.json())
    }

    async fn verify(
        json: &InstanceActorJson,
        expected_domain: &Url,
        _data: &Data<Context>,
    ) -> Result<(), Error> {
        verify_domains_match(&json.id, expected_domain)?;
        if json.public_key.owner != json.id {
            return Err(Error::BadRequest(
                "the actor's key belongs to another actor".into(),
            ));
        }
        if Domain::of_url(&json.inbox) != Domain::of_url(&json.id) {
            return Err(Error::BadRequest(
                "the actor's inbox is on another host".into(),
            ));
        }
        Ok(())
    }

    async fn from_json(json: InstanceActorJson, _data: &Data<Context>) -> Result<Self, Error> {
        Ok(Self {
            name: json.preferred_username,
            id: json.id,
            inbox: json.inbox,
            public_key_pem: json.public_key.public_key_pem,
            private_key_pem: None,
        })
    }
}

impl Actor for InstanceActor {
    fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    fn private_key_pem(&self) -> Option<String> {
        self.private_key_pem.clone()
    }

    fn inbox(&self) -> Url {
        self.inbox.clone()
    }
}
