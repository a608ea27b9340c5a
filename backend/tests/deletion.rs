//! Deleting a user removes everything the user owns, in one transaction, and nothing of anyone else's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use common::{TestServer, code};
use pepeunit_backend::entities::{
    permissions, repo_units, unit_logs, unit_node_edges, unit_node_values, unit_nodes, units, users,
};
use pepeunit_backend::services::units::events::UnitEvent;
use pepeunit_backend::services::user_deletion::GHOST_UUID;
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
async fn a_repo_unit_others_build_on_passes_to_the_ghost_and_the_plan_says_so_first() {
    let server = TestServer::start().await;
    let db = server.services.db();
    let (_, admin) = server.admin("root").await;
    let (alice, alice_token) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let (_, carol) = server.user("carol").await;
    let (alice, bob): (Uuid, Uuid) = (alice.parse().unwrap(), bob.parse().unwrap());
    let shared_repo = repo(db, alice).await; // bob builds on it
    let own_repo = repo(db, alice).await; // only alice's
    let (_, _, alice_out) = unit(db, alice, shared_repo, "alice-sensor").await;
    unit(db, alice, own_repo, "alice-lamp").await;
    let (bob_unit, bob_in, _) = unit(db, bob, shared_repo, "bob-fan").await;
    edge(db, bob, alice_out, bob_in).await; // bob's fan listens to alice's sensor
    let plan_query = "query($u: ID!) { userDeletionPlan(uuid: $u) { user { login } unitCount \
        units { name } repoUnitCount repoUnits { uuid } keptRepoUnits { uuid unitsOfOthers } \
        linkCount affectedUnitCount } }";
    let before = counts(db).await;

    // Nobody else may look at the plan; the user and admins may, and it changes nothing.
    let (_, body) = server
        .gql(plan_query, json!({ "u": alice }), Some(&carol))
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    let (_, body) = server
        .gql(plan_query, json!({ "u": alice }), Some(&alice_token))
        .await;
    let plan = &body["data"]["userDeletionPlan"];
    assert_eq!(
        *plan,
        json!({
            "user": { "login": "alice" },
            "unitCount": 2,
            "units": [{ "name": "alice-lamp" }, { "name": "alice-sensor" }],
            "repoUnitCount": 1,
            "repoUnits": [{ "uuid": own_repo.to_string() }],
            "keptRepoUnits": [{ "uuid": shared_repo.to_string(), "unitsOfOthers": 1 }],
            "linkCount": 1,
            "affectedUnitCount": 1,
        }),
        "{body}"
    );
    assert_eq!(counts(db).await, before, "a plan changes nothing");

    // The fan's unit is told its schema changed (it lost its input link); its device reads that as
    // `schema_update`.
    let mut events = server.services.unit_events().subscribe();
    let (_, body) = server
        .gql(
            "mutation($u: ID!) { deleteUser(uuid: $u) }",
            json!({ "u": alice }),
            Some(&admin),
        )
        .await;
    assert_eq!(body["data"]["deleteUser"], true, "{body}");
    let mut schema_changed = false;
    while let Ok(event) = events.try_recv() {
        schema_changed |= event == UnitEvent::SchemaChanged(bob_unit);
    }
    assert!(schema_changed, "bob's unit was sent schema_update");

    // The shared repo_unit stays, now the ghost's; alice's own one and both her units are gone.
    let kept = repo_units::Entity::find_by_id(shared_repo)
        .one(db)
        .await
        .unwrap()
        .expect("the repo_unit bob builds on stays");
    assert_eq!(kept.creator_uuid, GHOST_UUID);
    assert!(
        repo_units::Entity::find_by_id(own_repo)
            .one(db)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        units::Entity::find_by_id(bob_unit)
            .one(db)
            .await
            .unwrap()
            .is_some()
    );
    let (_, body) = server
        .gql(
            "query($u: ID!) { repoUnit(uuid: $u) { name } }",
            json!({ "u": shared_repo }),
            Some(&admin),
        )
        .await;
    assert!(body["data"]["repoUnit"]["name"].is_string(), "{body}");
    // Users: root, bob, carol and the ghost; units: bob's; the link went with alice's sensor.
    let after = counts(db).await;
    assert_eq!((after[0], after[1], after[2], after[4]), (4, 1, 1, 0));

    // The ghost cannot log in, its name cannot be registered, and it cannot be deleted.
    let (_, body) = server.login("ghost", common::PASSWORD).await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let (_, body) = server
        .gql(
            "mutation { register(input: { login: \"Ghost\", email: \"g@example.com\", \
             password: \"correct horse battery\" }) { uuid } }",
            json!({}),
            None,
        )
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("reserved"),
        "{body}"
    );
    let (_, body) = server
        .gql(
            "mutation($u: ID!) { deleteUser(uuid: $u) }",
            json!({ "u": GHOST_UUID }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT");
}
