//! A ready Grafana dashboard for a unit: one time-series panel per output, each reading the output's
//! series endpoint (`GET /api/v1/unit_nodes/{uuid}/series`) through Grafana's Infinity data source.
//!
//! The data source is a dashboard variable (`$datasource`, of type `yesoreyeram-infinity-datasource`,
//! preset to the uid `pepeunit` that `docker/grafana/provisioning/` gives it), so the dashboard imports
//! into any Grafana whose Infinity data source has this server as its base URL and an API token as its
//! bearer token. Panels ask for paths only; the data source adds the base URL.

use serde_json::{Value, json};

use crate::entities::{unit_nodes, units};
use crate::services::units::nodes::NodeKind;

/// Grafana's id of the Infinity data source plugin.
pub const INFINITY: &str = "yesoreyeram-infinity-datasource";
/// The uid the provisioned data source has, preselected in the dashboard's variable.
pub const DATASOURCE_UID: &str = "pepeunit";
/// Points each panel asks for: about one per pixel of a wide panel.
const PANEL_POINTS: u32 = 1000;

/// The path of a variable's series, as a data source with this server as base URL reads it.
pub fn series_path(node: uuid::Uuid) -> String {
    format!("/api/v1/unit_nodes/{node}/series")
}

/// The dashboard of `unit` with a panel for each of its outputs among `nodes`, by topic name.
pub fn dashboard(unit: &units::Model, nodes: &[unit_nodes::Model]) -> Value {
    let datasource = json!({ "type": INFINITY, "uid": "${datasource}" });
    let mut outputs: Vec<&unit_nodes::Model> = nodes
        .iter()
        .filter(|n| n.unit_uuid == unit.uuid && NodeKind::of(n) == NodeKind::Output)
        .collect();
    outputs.sort_by(|a, b| a.topic_name.cmp(&b.topic_name));
    let panels: Vec<Value> = outputs
        .iter()
        .enumerate()
        .map(|(i, node)| {
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": node.topic_name,
                "gridPos": { "h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8 },
                "datasource": datasource,
                "targets": [{
                    "refId": "A",
                    "datasource": datasource,
                    "type": "json",
                    "source": "url",
                    "parser": "backend",
                    "format": "timeseries",
                    "url": series_path(node.uuid),
                    "url_options": {
                        "method": "GET",
                        "params": [
                            { "key": "from", "value": "${__from}" },
                            { "key": "to", "value": "${__to}" },
                            { "key": "maxPoints", "value": PANEL_POINTS.to_string() },
                            { "key": "aggregate", "value": "AVG" },
                        ],
                    },
                    "root_selector": "",
                    "columns": [
                        { "selector": "time", "text": "time", "type": "timestamp" },
                        { "selector": "value", "text": node.topic_name, "type": "number" },
                    ],
                }],
            })
        })
        .collect();
    json!({
        "uid": format!("pu-{}", unit.uuid),
        "title": format!("Pepeunit · {}", unit.name),
        "tags": ["pepeunit"],
        "timezone": "browser",
        "schemaVersion": 39,
        "editable": true,
        "refresh": "1m",
        "time": { "from": "now-24h", "to": "now" },
        "templating": {
            "list": [{
                "name": "datasource",
                "label": "Pepeunit",
                "type": "datasource",
                "query": INFINITY,
                "current": { "text": "Pepeunit", "value": DATASOURCE_UID },
                "hide": 0,
                "refresh": 1,
                "regex": "",
                "options": [],
            }],
        },
        "panels": panels,
    })
}
