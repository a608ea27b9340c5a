//! The editor's graph query costs a constant number of SQL statements, whatever the number of units.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::units::{Fixture, node};
use pepeunit_backend::entities::{unit_node_edges, unit_nodes, units};
use pepeunit_backend::graphql::build_schema;
use pepeunit_backend::secrets::InstanceSecrets;
use pepeunit_backend::services::{Services, users};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::json;

/// The web app's graph query (`frontend/src/api/queries.rs` GRAPH), for up to 500 units.
const GRAPH: &str = "query Graph {
  me { uuid login role }
  repoUnits(limit: 100) { uuid creatorUuid name visibility cloneUrl isPrivateRepository defaultBranch
    syncPeriodSeconds autoSync lastSyncedAt lastSyncError }
  units(limit: 500) { items { uuid name visibility creatorUuid repoUnitUuid followsDefaultBranch branch commit tag
    targetCommit reportedCommit online updateStatus
    nodes { uuid unitUuid kind topicName visibility lastValue lastValueAt links { uuid outputUuid inputUuid } } } }
}";

/// Copies `unit` (with its nodes) until there are `count` units, each copy's first output linked to
/// `input`.
async fn grow_to(fx: &Fixture, unit: &str, input: &str, count: usize) {
    let db = fx.server.services.db();
    let unit: uuid::Uuid = unit.parse().unwrap();
    let original = units::Entity::find_by_id(unit)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let nodes = unit_nodes::Entity::find()
        .filter(unit_nodes::Column::UnitUuid.eq(unit))
        .all(db)
        .await
        .unwrap();
    let output = nodes.iter().position(|n| n.kind == "output").unwrap();
    let have = units::Entity::find().all(db).await.unwrap().len();
    for i in have..count {
        let copy = uuid::Uuid::new_v4();
        let mut row = original.clone().into_active_model();
        row.uuid = Set(copy);
        row.name = Set(format!("copy-{i}"));
        row.insert(db).await.unwrap();
        for (n, model) in nodes.iter().enumerate() {
            let node = uuid::Uuid::new_v4();
            let mut row = model.clone().into_active_model();
            row.uuid = Set(node);
            row.unit_uuid = Set(copy);
            row.insert(db).await.unwrap();
            if n == output {
                unit_node_edges::ActiveModel {
                    uuid: Set(uuid::Uuid::new_v4()),
                    output_node_uuid: Set(node),
                    input_node_uuid: Set(input.parse().unwrap()),
                    creator_uuid: Set(original.creator_uuid),
                    created_at: Set(chrono::Utc::now()),
                }
                .insert(db)
                .await
                .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn the_graph_query_costs_the_same_statements_for_10_and_500_units() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = fx.create_unit(&fx.token, json!({ "name": "Sensor" })).await;
    let fan = fx.create_unit(&fx.token, json!({ "name": "Fan" })).await;
    let input = node(&fan, "set_fan_state/pepeunit")["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let sensor = sensor["uuid"].as_str().unwrap().to_owned();

    // A second view of the same database whose connection counts the statements it runs.
    let config = fx.server.db.config();
    let statements = Arc::new(AtomicUsize::new(0));
    let mut db = pepeunit_backend::db::connect(&config).await.unwrap();
    let counter = statements.clone();
    db.set_metric_callback(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let services = Services::new(
        &config,
        db,
        InstanceSecrets::load_or_create(&config).unwrap(),
    )
    .unwrap();
    let actor = users::authenticate(&services, &fx.token).await.unwrap();
    let schema = build_schema(&config, services);

    let mut costs = Vec::new();
    for count in [10, 500] {
        grow_to(&fx, &sensor, &input, count).await;
        let before = statements.load(Ordering::SeqCst);
        let response = schema
            .execute(async_graphql::Request::new(GRAPH).data(actor))
            .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = response.data.into_json().unwrap();
        let items = data["units"]["items"].as_array().unwrap();
        assert_eq!(items.len(), count);
        let fan = items.iter().find(|u| u["name"] == "Fan").unwrap();
        let links = fan["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["uuid"] == input.as_str())
            .unwrap()["links"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(links, count - 2, "every copy's output feeds the fan");
        costs.push(statements.load(Ordering::SeqCst) - before);
    }
    assert!(
        costs[1] < 10 && costs[1] <= costs[0],
        "statements for 10 and 500 units: {costs:?}"
    );
}
