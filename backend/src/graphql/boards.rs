//! Boards in GraphQL: the web app composes them, the Telegram bot shows them.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use crate::error::GqlResult;
use crate::graphql::{actor, parse_uuid, services};
use crate::services::boards::{self as service, NewItem, ShownItem};

/// One item of a board.
#[derive(SimpleObject)]
pub struct BoardItem {
    node_uuid: ID,
    label: String,
    /// Whether the node is an input (a button) rather than an output (a value shown).
    is_input: bool,
    /// The value an input's button sets; none: the bot asks for one.
    value: Option<String>,
    /// The node's last value.
    last_value: Option<String>,
}

/// A board: chosen inputs as buttons, outputs with their values.
#[derive(SimpleObject)]
pub struct Board {
    uuid: ID,
    name: String,
    items: Vec<BoardItem>,
    created_at: DateTime<Utc>,
}

impl From<ShownItem> for BoardItem {
    fn from(shown: ShownItem) -> Self {
        Self {
            node_uuid: ID(shown.node.uuid.to_string()),
            label: shown.label(),
            is_input: shown.is_input(),
            value: shown.item.value,
            last_value: shown.node.last_value,
        }
    }
}

#[derive(InputObject)]
pub struct BoardItemInput {
    node_uuid: ID,
    label: Option<String>,
    /// For an input: the value its button sets.
    value: Option<String>,
}

#[derive(InputObject)]
pub struct CreateBoardInput {
    name: String,
    items: Vec<BoardItemInput>,
}

#[derive(Default)]
pub struct BoardQuery;

#[Object]
impl BoardQuery {
    /// The caller's boards.
    async fn boards(&self, ctx: &Context<'_>) -> Result<Vec<Board>> {
        let services = services(ctx)?;
        let actor = actor(ctx);
        let mut out = Vec::new();
        for row in service::list(services, &actor).await.gql()? {
            let (row, items) = service::show(services, &actor, row.uuid).await.gql()?;
            out.push(Board {
                uuid: ID(row.uuid.to_string()),
                name: row.name,
                items: items.into_iter().map(Into::into).collect(),
                created_at: row.created_at,
            });
        }
        Ok(out)
    }
}

#[derive(Default)]
pub struct BoardMutation;

#[Object]
impl BoardMutation {
    /// Composes a board of nodes the caller may see (at most 24 items; 20 boards a user).
    async fn create_board(&self, ctx: &Context<'_>, input: CreateBoardInput) -> Result<Board> {
        let services = services(ctx)?;
        let actor = actor(ctx);
        let mut items = Vec::with_capacity(input.items.len());
        for item in input.items {
            items.push(NewItem {
                node: parse_uuid(&item.node_uuid).gql()?,
                label: item.label,
                value: item.value,
            });
        }
        let row = service::create(services, &actor, &input.name, items)
            .await
            .gql()?;
        let (row, items) = service::show(services, &actor, row.uuid).await.gql()?;
        Ok(Board {
            uuid: ID(row.uuid.to_string()),
            name: row.name,
            items: items.into_iter().map(Into::into).collect(),
            created_at: row.created_at,
        })
    }

    async fn delete_board(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::delete(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }
}
