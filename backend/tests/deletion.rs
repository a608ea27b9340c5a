//! Deleting a user removes everything the user owns, in one transaction, and nothing of anyone else's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use common::{TestServer, code};
use pepeunit_backend::entities::{
    permissions, repo_units, unit_logs, unit_node_edges, unit_node_values, unit_nodes, units, users,
};
use pepeunit_protocol::Visibility;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, PaginatorTrait, Set};
use serde_json::json;
use uuid::Uuid;

async fn repo(db: &DatabaseConnection, creator: Uuid) -> Uuid {
    common::insert_repo_unit(db, creator, Visibility::Public).await
}

async fn unit(
    db: &DatabaseConnection,
    creator: Uuid,
    repo: Uuid,
    name: &str,
) -> (Uuid, Uuid, Uuid) {
    let now = Utc::now();
    let uuid = common::insert_unit(db, creator, repo, name).await;
    let mut nodes = Vec::new();
    for kind in ["input", "output"] {
        let node = Uuid::new_v4();
        unit_nodes::ActiveModel {
            uuid: Set(node),
            unit_uuid: Set(uuid),
            kind: Set(kind.into()),
            topic_name: Set(format!("{kind}_value/pepeunit")),
            visibility: Set(Visibility::Public),
            is_rewritable_input: Set(false),
            history_policy: Set("last_n".into()),
            history_limit: Set(Some(10)),
            history_window_seconds: Set(None),
            last_value: Set(Some("1".into())),
            last_value_at: Set(Some(now)),
            processing: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
        unit_node_values::ActiveModel {
            id: Default::default(),
            unit_node_uuid: Set(node),
            value: Set("1".into()),
            created_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
        nodes.push(node);
    }
    unit_logs::ActiveModel {
        id: Default::default(),
        unit_uuid: Set(uuid),
        level: Set("info".into()),
        text: Set("booted".into()),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::days(1)),
    }
    .insert(db)
    .await
    .unwrap();
    (uuid, nodes[0], nodes[1])
}

async fn edge(db: &DatabaseConnection, creator: Uuid, output: Uuid, input: Uuid) {
    unit_node_edges::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        output_node_uuid: Set(output),
        input_node_uuid: Set(input),
        creator_uuid: Set(creator),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .unwrap();
}

async fn counts(db: &DatabaseConnection) -> [u64; 8] {
    [
        users::Entity::find().count(db).await.unwrap(),
        repo_units::Entity::find().count(db).await.unwrap(),
        units::Entity::find().count(db).await.unwrap(),
        unit_nodes::Entity::find().count(db).await.unwrap(),
        unit_node_edges::Entity::find().count(db).await.unwrap(),
        unit_node_values::Entity::find().count(db).await.unwrap(),
        unit_logs::Entity::find().count(db).await.unwrap(),
        permissions::Entity::find().count(db).await.unwrap(),
    ]
}

#[tokio::test]
async fn deleting_a_user_removes_everything_they_own_and_only_that() {
    let server = TestServer::start().await;
    let db = server.services.db();
    let (_, admin) = server.admin("root").await;
    let (alice, alice_token) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let (alice, bob): (Uuid, Uuid) = (alice.parse().unwrap(), bob.parse().unwrap());

    let alice_repo = repo(db, alice).await;
    let (_, alice_in, alice_out) = unit(db, alice, alice_repo, "alice-unit").await;
    let bob_repo = repo(db, bob).await;
    let (bob_unit, bob_in, bob_out) = unit(db, bob, bob_repo, "bob-unit").await;
    edge(db, alice, alice_out, bob_in).await; // alice's link into bob's unit
    edge(db, bob, bob_out, alice_in).await; // bob's link into alice's unit
    permissions::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        grantee_user_uuid: Set(alice),
        repo_unit_uuid: Set(None),
        unit_uuid: Set(Some(bob_unit)),
        unit_node_uuid: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .unwrap();
    assert_eq!(counts(db).await, [3, 2, 2, 4, 2, 4, 2, 1]);

    // Another user may not delete alice.
    let (_, carol) = server.user("carol").await;
    let (_, body) = server
        .gql(
            "mutation($u: ID!) { deleteUser(uuid: $u) }",
            json!({ "u": alice }),
            Some(&carol),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN");

    let (_, body) = server
        .gql(
            "mutation($u: ID!) { deleteUser(uuid: $u) }",
            json!({ "u": alice }),
            Some(&alice_token),
        )
        .await;
    assert_eq!(body["data"]["deleteUser"], true, "{body}");
    // Left: root, bob, carol; bob's repo, unit, 2 nodes, 2 values, 1 log; both edges touched alice's nodes.
    assert_eq!(counts(db).await, [3, 1, 1, 2, 0, 2, 1, 0]);
    assert!(
        units::Entity::find_by_id(bob_unit)
            .one(db)
            .await
            .unwrap()
            .is_some()
    );

    let (_, body) = server.login("alice", common::PASSWORD).await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let _ = admin;
}

#[tokio::test]
async fn deletion_is_refused_whole_while_others_build_on_the_users_repos() {
    let server = TestServer::start().await;
    let db = server.services.db();
    let (_, admin) = server.admin("root").await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let (alice, bob): (Uuid, Uuid) = (alice.parse().unwrap(), bob.parse().unwrap());
    let alice_repo = repo(db, alice).await;
    unit(db, alice, alice_repo, "alice-unit").await;
    unit(db, bob, alice_repo, "bob-unit").await;
    let before = counts(db).await;

    let (_, body) = server
        .gql(
            "mutation($u: ID!) { deleteUser(uuid: $u) }",
            json!({ "u": alice }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 unit(s) of other users")
    );
    assert_eq!(counts(db).await, before, "nothing half-deleted");
}
