//! The visibility matrix, through the service layer's one access policy, against a real database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use common::TestDb;
use pepeunit_backend::domain::{UserRole, UserStatus};
use pepeunit_backend::entities::{permissions, repo_units};
use pepeunit_backend::error::Error;
use pepeunit_backend::services::users::{self, Registration};
use pepeunit_backend::services::{Actor, AuthUser, Services, access};
use pepeunit_backend::{build, config::Config};
use pepeunit_protocol::Visibility;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use uuid::Uuid;

async fn make_user(services: &Services, login: &str, role: UserRole) -> Actor {
    let form = Registration {
        login: login.into(),
        email: format!("{login}@example.com"),
        password: common::PASSWORD.into(),
    };
    let user = users::create(services, form, role, UserStatus::Verified)
        .await
        .unwrap();
    Actor::User(AuthUser {
        id: user.uuid.into(),
        role,
    })
}

async fn make_repo(services: &Services, creator: &Actor, visibility: Visibility) -> Uuid {
    common::insert_repo_unit(
        services.db(),
        creator.user_id().unwrap().as_uuid(),
        visibility,
    )
    .await
}

async fn services(db: &TestDb) -> Services {
    let config: Config = db.config();
    build(config).await.unwrap().services().clone()
}

#[tokio::test]
async fn matrix_for_single_reads_and_lists() {
    let db = TestDb::new().await;
    let services = services(&db).await;
    let owner = make_user(&services, "owner", UserRole::User).await;
    let other = make_user(&services, "other", UserRole::User).await;
    let granted = make_user(&services, "granted", UserRole::User).await;
    let admin = make_user(&services, "admin", UserRole::Admin).await;
    let anonymous = Actor::Anonymous;

    let mut repos = Vec::new();
    for visibility in Visibility::ALL {
        repos.push((visibility, make_repo(&services, &owner, visibility).await));
    }
    let private = repos[3].1;
    permissions::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        grantee_user_uuid: Set(granted.user_id().unwrap().as_uuid()),
        repo_unit_uuid: Set(Some(private)),
        unit_uuid: Set(None),
        unit_node_uuid: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(services.db())
    .await
    .unwrap();

    // Columns: public, federated, internal, private. Locally `federated` reads like `internal`.
    let matrix = [
        ("anonymous", &anonymous, [true, false, false, false]),
        ("other user", &other, [true, true, true, false]),
        ("granted user", &granted, [true, true, true, true]),
        ("owner", &owner, [true, true, true, true]),
        ("admin", &admin, [true, true, true, true]),
    ];
    for (who, actor, row) in matrix {
        for ((visibility, uuid), want) in repos.iter().zip(row) {
            let read = access::find_visible::<repo_units::Entity>(
                services.db(),
                actor,
                *uuid,
                "repo_unit",
            )
            .await;
            match (want, read) {
                (true, Ok(model)) => assert_eq!(model.uuid, *uuid),
                (false, Err(Error::NotFound("repo_unit"))) => {}
                (want, got) => panic!("{who} reading {visibility}: wanted {want}, got {got:?}"),
            }
        }
        let listed = access::visible_to(repo_units::Entity::find(), actor)
            .all(services.db())
            .await
            .unwrap();
        let mut listed: Vec<Uuid> = listed.into_iter().map(|r| r.uuid).collect();
        listed.sort();
        let mut expected: Vec<Uuid> = repos
            .iter()
            .zip(row)
            .filter(|(_, w)| *w)
            .map(|((_, u), _)| *u)
            .collect();
        expected.sort();
        assert_eq!(listed, expected, "{who}: list");
    }

    // Editing is the creator's and the admin's only, whatever the visibility.
    let creator = owner.user_id().unwrap().as_uuid();
    assert!(access::ensure_can_edit(&owner, creator).is_ok());
    assert!(access::ensure_can_edit(&admin, creator).is_ok());
    assert!(matches!(
        access::ensure_can_edit(&granted, creator),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        access::ensure_can_edit(&anonymous, creator),
        Err(Error::Unauthenticated)
    ));

    // A missing node and an invisible one answer alike.
    let missing = access::find_visible::<repo_units::Entity>(
        services.db(),
        &other,
        Uuid::new_v4(),
        "repo_unit",
    )
    .await;
    assert!(matches!(missing, Err(Error::NotFound("repo_unit"))));
}
