//! Units end to end: creation from a real mirrored repo, env.json and schema.json through the device API,
//! bundles, access, target changes with the schema rules, and links.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use common::code;
use common::units::{Fixture, node};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().entry_type(), tar::EntryType::Regular);
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (path, content)
        })
        .collect()
}

fn zip_files(bytes: Vec<u8>) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let name = file.name().unwrap().to_string();
            let mut content = Vec::new();
            file.read_to_end(&mut content).unwrap();
            (name, content)
        })
        .collect()
}

/// A repo with things that must stay out of bundles.
fn with_ignored_files(source: &common::git::SourceRepo) {
    source.write(".pepeignore", "*.log\nsecrets/\n");
    source.write("debug.log", "noise");
    source.write("secrets/key.pem", "KEY");
    source.write("examples/demo.py", "demo");
    source.write("lib/util.py", "def util(): pass\n");
    source.write("env.json", "{\"stale\": true}");
    std::os::unix::fs::symlink("/etc", source.work.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../../..", source.work.join("lib/up-link")).unwrap();
    source.commit("firmware with extras");
}

#[tokio::test]
async fn a_unit_gets_nodes_env_schema_and_bundles_through_the_device_api() {
    let fx = Fixture::new(with_ignored_files).await;
    let unit = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Kitchen fan", "env": { "WIFI_SSID": "home" } }),
        )
        .await;
    let uuid = unit["uuid"].as_str().unwrap();
    assert_eq!(unit["followsDefaultBranch"], true);
    assert_eq!(unit["branch"], "main");
    let head = common::git::git(&fx.source.work, &["rev-parse", "HEAD"]);
    assert_eq!(unit["targetCommit"], head);
    let input = node(&unit, "set_fan_state/pepeunit");
    let output = node(&unit, "current_temp/pepeunit");
    assert_eq!(input["kind"], "INPUT");
    assert_eq!(output["kind"], "OUTPUT");
    assert_eq!(unit["nodes"].as_array().unwrap().len(), 2);

    // env.json through the device API, with the unit's own token.
    let token = fx.unit_token(uuid).await;
    let env = fx.device_json(&format!("/units/env/{uuid}"), &token).await;
    let base = &fx.server.base;
    let domain = base.trim_start_matches("http://");
    assert_eq!(env["PU_DOMAIN"], domain);
    assert_eq!(env["PU_HTTP_TYPE"], "http");
    assert_eq!(env["PU_APP_PREFIX"], "");
    assert_eq!(env["PU_API_ACTUAL_PREFIX"], "/api/v1");
    assert_eq!(env["PU_MQTT_PORT"], fx.server.mqtt.port());
    assert_eq!(env["PU_MQTT_HOST"], "127.0.0.1");
    assert_eq!(
        env["PU_STATE_SEND_INTERVAL"], 300,
        "the example's value wins"
    );
    assert_eq!(env["PU_MAX_LOG_LENGTH"], 64);
    assert_eq!(env["PU_MIN_LOG_LEVEL"], "Debug");
    assert_eq!(env["PU_COMMIT_VERSION"], head);
    assert_eq!(env["WIFI_SSID"], "home");
    assert_eq!(env["WIFI_PASS"], "password");
    assert_eq!(env["PU_AUTH_TOKEN"], token);
    for key in ["PU_SECRET_KEY", "PU_ENCRYPT_KEY"] {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(env[key].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32, "{key}");
    }

    // schema.json: standard topics by unit, variables by node.
    let schema = fx
        .device_json(&format!("/units/get_current_schema/{uuid}"), &token)
        .await;
    assert_eq!(
        schema["input_base_topic"]["update/pepeunit"],
        json!([format!("{domain}/input_base_topic/{uuid}/update/pepeunit")])
    );
    assert_eq!(
        schema["output_base_topic"]["state/pepeunit"],
        json!([format!("{domain}/output_base_topic/{uuid}/state/pepeunit")])
    );
    assert!(
        schema["input_base_topic"]["reset/pepeunit"].is_null(),
        "not declared by the repo"
    );
    assert_eq!(
        schema["input_topic"]["set_fan_state/pepeunit"],
        json!([format!(
            "{domain}/{}/pepeunit",
            input["uuid"].as_str().unwrap()
        )])
    );
    assert_eq!(
        schema["output_topic"]["current_temp/pepeunit"],
        json!([output["topic"]])
    );

    // The device's archive: a zlib stream with a 512-byte window, as the reference client unpacks it.
    let response = fx
        .device_get(
            &format!("/units/firmware/tgz/{uuid}?wbits=9&level=9"),
            Some(&token),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes[0] >> 4, 1, "window announced in the zlib header");
    let mut tar = Vec::new();
    flate2::read::ZlibDecoder::new(&bytes[..])
        .read_to_end(&mut tar)
        .unwrap();
    let files = tar_files(&tar);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            ".pepeignore",
            "README.md",
            "env.json",
            "env_example.json",
            "lib/util.py",
            "main.py",
            "schema.json",
            "schema_example.json"
        ]
    );
    let bundled_env: Value = serde_json::from_slice(&files["env.json"]).unwrap();
    assert_eq!(bundled_env, env, "the repo's own env.json is replaced");
    let bundled_schema: Value = serde_json::from_slice(&files["schema.json"]).unwrap();
    assert_eq!(bundled_schema, schema);

    // The creator downloads zip, tar and tar.gz through short-lived links.
    for (format, unpack) in [
        ("ZIP", zip_files as fn(Vec<u8>) -> BTreeMap<String, Vec<u8>>),
        ("TAR", |b: Vec<u8>| tar_files(&b)),
        ("TAR_GZ", |b: Vec<u8>| {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&b[..])
                .read_to_end(&mut raw)
                .unwrap();
            tar_files(&raw)
        }),
    ] {
        let (_, body) = fx
            .server
            .gql(
                "query($u: ID!, $f: BundleFormat!) { unit(uuid: $u) { bundleUrl(format: $f) } }",
                json!({ "u": uuid, "f": format }),
                Some(&fx.token),
            )
            .await;
        let link = body["data"]["unit"]["bundleUrl"].as_str().unwrap();
        let response = fx
            .server
            .client
            .get(fx.server.url(link))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{format}");
        assert!(
            response.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .contains("Kitchen_fan."),
        );
        let files = unpack(response.bytes().await.unwrap().to_vec());
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            names,
            "{format}"
        );
        let tampered = link.replace("download_token=", "download_token=x");
        let response = fx
            .server
            .client
            .get(fx.server.url(&tampered))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    // State storage: empty, set (204), read back as a JSON string.
    let state_path = format!("/units/get_state_storage/{uuid}");
    let empty = fx.device_get(&state_path, Some(&token)).await;
    assert_eq!(empty.text().await.unwrap(), "\"\"");
    let set = fx
        .server
        .client
        .post(
            fx.server
                .url(&format!("/api/v1/units/set_state_storage/{uuid}")),
        )
        .header("x-auth-token", &token)
        .header("content-type", "application/json")
        .body(json!({ "state": "{\"boots\": 3}" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let stored = fx.device_get(&state_path, Some(&token)).await;
    assert_eq!(stored.json::<Value>().await.unwrap(), "{\"boots\": 3}");
    let bad = fx
        .server
        .client
        .post(
            fx.server
                .url(&format!("/api/v1/units/set_state_storage/{uuid}")),
        )
        .header("x-auth-token", &token)
        .body("{\"state\": {\"not\": \"a string\"}}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["code"],
        "VALIDATION"
    );

    // world_state: the time in UTC, for any authenticated caller.
    let world = fx.device_json("/world_state", &token).await;
    let utc = chrono::DateTime::parse_from_rfc3339(world["utc"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - utc.with_timezone(&chrono::Utc))
            .num_seconds()
            .abs()
            < 5,
        "{world}"
    );
    assert_eq!(
        fx.device_get("/world_state", None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Nothing the device holds is readable in the database.
    let secret = env["PU_SECRET_KEY"].as_str().unwrap();
    let row = fx.server.services.db();
    use sea_orm::EntityTrait;
    let stored_unit =
        pepeunit_backend::entities::units::Entity::find_by_id(uuid.parse::<uuid::Uuid>().unwrap())
            .one(row)
            .await
            .unwrap()
            .unwrap();
    let sealed = stored_unit.env_encrypted.unwrap();
    assert!(!sealed.contains(secret) && !sealed.contains("home"));
    assert!(!stored_unit.state_storage.unwrap().contains("boots"));
    if !fx.server.db.is_postgres() {
        let file = std::fs::read(fx.server.db.data_dir().join("pepeunit.db")).unwrap();
        let text = String::from_utf8_lossy(&file);
        assert!(!text.contains(secret) && !text.contains(&token));
    }
}

#[tokio::test]
async fn only_the_unit_and_its_creator_read_its_files() {
    let fx = Fixture::new(|_| {}).await;
    let unit = fx.create_unit(&fx.token, json!({ "name": "Door" })).await;
    let uuid = unit["uuid"].as_str().unwrap();
    let other_unit = fx.create_unit(&fx.token, json!({ "name": "Window" })).await;
    let other_unit_token = fx.unit_token(other_unit["uuid"].as_str().unwrap()).await;
    let (_, bob) = fx.server.user("bob").await;
    let (_, admin) = fx.server.admin("root").await;
    let paths = [
        format!("/units/env/{uuid}"),
        format!("/units/firmware/tgz/{uuid}"),
        format!("/units/firmware/zip/{uuid}"),
        format!("/units/get_state_storage/{uuid}"),
    ];
    for path in &paths {
        assert_eq!(
            fx.device_get(path, None).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            fx.device_get(path, Some("garbage")).await.status(),
            StatusCode::UNAUTHORIZED
        );
        for (who, token) in [
            ("bob", &bob),
            ("admin", &admin),
            ("another unit", &other_unit_token),
        ] {
            let response = fx.device_get(path, Some(token)).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{who} {path}");
            assert_eq!(
                response.json::<Value>().await.unwrap()["error"]["code"],
                "FORBIDDEN"
            );
        }
        assert_eq!(
            fx.device_get(path, Some(&fx.token)).await.status(),
            StatusCode::OK,
            "creator {path}"
        );
    }
    // schema.json has no secrets: admins may read it, other users may not.
    let schema = format!("/units/get_current_schema/{uuid}");
    assert_eq!(
        fx.device_get(&schema, Some(&admin)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        fx.device_get(&schema, Some(&bob)).await.status(),
        StatusCode::FORBIDDEN
    );
    // In GraphQL, env is the creator's alone.
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { name env } }",
            json!({ "u": uuid }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { bundleUrl(format: ZIP) } }",
            json!({ "u": uuid }),
            Some(&bob),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    // A private unit does not even show it exists.
    let private = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Safe", "visibility": "PRIVATE" }),
        )
        .await;
    let path = format!("/units/env/{}", private["uuid"].as_str().unwrap());
    assert_eq!(
        fx.device_get(&path, Some(&bob)).await.status(),
        StatusCode::NOT_FOUND
    );

    // Regenerating the token revokes the old one at once.
    let old = fx.unit_token(uuid).await;
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { regenerateUnitToken(uuid: $u) }",
            json!({ "u": uuid }),
            Some(&fx.token),
        )
        .await;
    let new = body["data"]["regenerateUnitToken"]["PU_AUTH_TOKEN"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    let env_path = format!("/units/env/{uuid}");
    assert_eq!(
        fx.device_get(&env_path, Some(&old)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fx.device_get(&env_path, Some(&new)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn creation_is_refused_cleanly() {
    let fx = Fixture::new(|source| {
        common::git::git(&source.work, &["checkout", "-q", "-b", "bare"]);
        common::git::git(&source.work, &["rm", "-q", "env_example.json"]);
        source.commit("no env example");
        common::git::git(&source.work, &["checkout", "-q", "main"]);
    })
    .await;
    let count = |fx: &Fixture| {
        let db = fx.server.services.db().clone();
        async move {
            use sea_orm::{EntityTrait, PaginatorTrait};
            (
                pepeunit_backend::entities::units::Entity::find()
                    .count(&db)
                    .await
                    .unwrap(),
                pepeunit_backend::entities::unit_nodes::Entity::find()
                    .count(&db)
                    .await
                    .unwrap(),
            )
        }
    };
    let bare_head = common::git::git(&fx.source.work, &["rev-parse", "bare"]);
    let main_head = common::git::git(&fx.source.work, &["rev-parse", "main"]);
    let cases = [
        (
            json!({ "name": "x", "followsDefaultBranch": false, "branch": "bare", "commit": bare_head }),
            "commit",
            "env_example.json: the file is missing",
        ),
        (
            json!({ "name": "x", "followsDefaultBranch": false, "branch": "dev", "commit": bare_head }),
            "commit",
            "not on that branch",
        ),
        (
            json!({ "name": "x", "followsDefaultBranch": false, "branch": "nope", "commit": main_head }),
            "revision",
            "nope",
        ),
        (
            json!({ "name": "x", "followsDefaultBranch": false, "tag": "v9" }),
            "revision",
            "v9",
        ),
        (
            json!({ "name": "x", "followsDefaultBranch": false }),
            "branch",
            "needs a branch",
        ),
        (
            json!({ "name": "x", "tag": "v1" }),
            "followsDefaultBranch",
            "takes no branch",
        ),
        (json!({ "name": " " }), "name", "1 to 100"),
        (
            json!({ "name": "x", "env": { "PU_AUTH_TOKEN": "mine" } }),
            "env",
            "generated by the server",
        ),
        (
            json!({ "name": "x", "env": { "NOT_IN_EXAMPLE": 1 } }),
            "env",
            "not a key",
        ),
    ];
    for (input, field, message) in cases {
        let body = fx.create_unit_body(&fx.token, input.clone()).await;
        assert_eq!(code(&body), "VALIDATION", "{input}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"], field,
            "{input}: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{input}: {body}"
        );
    }
    assert_eq!(count(&fx).await, (0, 0));
    fx.create_unit(&fx.token, json!({ "name": "Taken" })).await;
    let body = fx
        .create_unit_body(&fx.token, json!({ "name": "Taken" }))
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(count(&fx).await, (1, 2));
    let body = fx.create_unit_body("", json!({ "name": "anon" })).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
}

async fn wait_for_target(fx: &Fixture, uuid: &str, commit: &str) -> Value {
    for _ in 0..100 {
        let unit = fx.unit(&fx.token, uuid).await;
        if unit["targetCommit"] == commit {
            return unit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("unit {uuid} never moved to {commit}");
}

#[tokio::test]
async fn followers_move_with_the_branch_and_the_schema_rules_keep_add_and_remove() {
    let fx = Fixture::new(|_| {}).await;
    let v1 = common::git::git(&fx.source.work, &["rev-parse", "v1"]);
    let follower = fx
        .create_unit(&fx.token, json!({ "name": "Follower" }))
        .await;
    let pinned = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Pinned", "followsDefaultBranch": false, "branch": "main", "commit": &v1[..10] }),
        )
        .await;
    assert_eq!(
        pinned["commit"], v1,
        "an abbreviated commit is stored in full"
    );
    let tagged = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Tagged", "followsDefaultBranch": false, "tag": "v1" }),
        )
        .await;
    assert_eq!(
        (tagged["tag"].as_str(), tagged["targetCommit"].as_str()),
        (Some("v1"), Some(v1.as_str()))
    );
    let listener = fx
        .create_unit(&fx.token, json!({ "name": "Listener" }))
        .await;
    let uuid = follower["uuid"].as_str().unwrap();
    let kept = node(&follower, "current_temp/pepeunit").clone();
    let removed = node(&follower, "set_fan_state/pepeunit").clone();

    // History on the node that stays, and a link into the node that goes.
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { updateUnitNode(uuid: $u, input: { historyKind: LAST_N, historyLimit: 3 }) { historyKind } }",
            json!({ "u": kept["uuid"] }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(
        body["data"]["updateUnitNode"]["historyKind"], "LAST_N",
        "{body}"
    );
    let kept_row = pepeunit_backend::entities::unit_nodes::Entity::find_by_id(
        kept["uuid"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .unwrap(),
    );
    use sea_orm::EntityTrait;
    let kept_row = kept_row
        .one(fx.server.services.db())
        .await
        .unwrap()
        .unwrap();
    for value in ["20.5", "21.0", "21.5", "22.0"] {
        pepeunit_backend::services::units::data::record_value(
            fx.server.services.db(),
            &kept_row,
            value,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let (_, body) = fx
        .server
        .gql(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({ "o": node(&listener, "current_temp/pepeunit")["uuid"], "i": removed["uuid"] }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");

    // A commit with an unusable schema: followers stay where they are.
    fx.source.write(
        "schema_example.json",
        "{\"output_topic\": [\"no spaces allowed\"]}",
    );
    let broken = fx.source.commit("broken schema");
    fx.push_and_sync().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(fx.unit(&fx.token, uuid).await["targetCommit"], broken);

    // The next commit keeps current_temp, drops set_fan_state, adds target_temp and a new env key.
    fx.source.write(
        "schema_example.json",
        r#"{"input_base_topic": ["update/pepeunit"], "output_base_topic": ["state/pepeunit"],
            "input_topic": ["target_temp/pepeunit"], "output_topic": ["current_temp/pepeunit"]}"#,
    );
    fx.source.write(
        "env_example.json",
        r#"{"WIFI_SSID": "ssid", "THRESHOLD": 25}"#,
    );
    let v2 = fx.source.commit("v2: new input");
    fx.push_and_sync().await;
    let moved = wait_for_target(&fx, uuid, &v2).await;
    assert_eq!(
        node(&moved, "current_temp/pepeunit")["uuid"],
        kept["uuid"],
        "kept with its uuid"
    );
    assert_eq!(node(&moved, "current_temp/pepeunit")["lastValue"], "22.0");
    assert!(
        moved["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["topicName"] != "set_fan_state/pepeunit")
    );
    assert_eq!(node(&moved, "target_temp/pepeunit")["kind"], "INPUT");
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { history(limit: 10) { value } } }",
            json!({ "u": kept["uuid"] }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(
        body["data"]["unitNode"]["history"],
        json!([{ "value": "22.0" }, { "value": "21.5" }, { "value": "21.0" }]),
        "history kept, trimmed to the last 3"
    );
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { uuid } }",
            json!({ "u": removed["uuid"] }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "removed with its links");
    let listener_now = fx.unit(&fx.token, listener["uuid"].as_str().unwrap()).await;
    assert!(
        node(&listener_now, "current_temp/pepeunit")["links"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let env = fx.env(&fx.token, uuid).await;
    assert_eq!(env["PU_COMMIT_VERSION"], v2);
    assert_eq!(env["THRESHOLD"], 25);
    assert!(env.get("WIFI_PASS").is_none(), "dropped with the example");

    // Pinned and tagged units did not move; the user moves the pinned one by hand.
    for unit in [&pinned, &tagged] {
        let now = fx.unit(&fx.token, unit["uuid"].as_str().unwrap()).await;
        assert_eq!(now["targetCommit"], v1);
        assert!(node(&now, "set_fan_state/pepeunit")["uuid"].is_string());
    }
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!, $c: String!) { updateUnit(uuid: $u, input: { followsDefaultBranch: false, branch: \"main\", commit: $c }) { targetCommit nodes { topicName } } }",
            json!({ "u": pinned["uuid"], "c": v2 }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(body["data"]["updateUnit"]["targetCommit"], v2, "{body}");
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!, $c: String!) { updateUnit(uuid: $u, input: { followsDefaultBranch: false, branch: \"main\", commit: $c }) { targetCommit } }",
            json!({ "u": pinned["uuid"], "c": broken }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(code(&body), "VALIDATION", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("schema_example.json"),
        "{body}"
    );
}

#[tokio::test]
async fn links_feed_the_input_units_schema_and_the_look_ups() {
    let fx = Fixture::new(|_| {}).await;
    let (_, bob) = fx.server.user("bob").await;
    let sensor = fx.create_unit(&fx.token, json!({ "name": "Sensor" })).await;
    let fan = fx.create_unit(&bob, json!({ "name": "Bob's fan" })).await;
    let output = node(&sensor, "current_temp/pepeunit")["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let output_topic = node(&sensor, "current_temp/pepeunit")["topic"].clone();
    let bobs_input = node(&fan, "set_fan_state/pepeunit")["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let alices_input = node(&sensor, "set_fan_state/pepeunit")["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid outputUuid inputUuid } }";

    // Bob links Alice's public output into his own input.
    let (_, body) = fx
        .server
        .gql(link, json!({ "o": output, "i": bobs_input }), Some(&bob))
        .await;
    let edge = body["data"]["createLink"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let (_, body) = fx
        .server
        .gql(link, json!({ "o": output, "i": bobs_input }), Some(&bob))
        .await;
    assert_eq!(code(&body), "CONFLICT");
    let (_, body) = fx
        .server
        .gql(
            link,
            json!({ "o": bobs_input, "i": bobs_input }),
            Some(&bob),
        )
        .await;
    assert_eq!(
        code(&body),
        "VALIDATION",
        "an input is not an output: {body}"
    );

    // Bob's fan now listens to the sensor's topic.
    let fan_uuid = fan["uuid"].as_str().unwrap();
    let fan_token = {
        let (_, body) = fx
            .server
            .gql(
                "query($u: ID!) { unit(uuid: $u) { env } }",
                json!({ "u": fan_uuid }),
                Some(&bob),
            )
            .await;
        body["data"]["unit"]["env"]["PU_AUTH_TOKEN"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let schema = fx
        .device_json(&format!("/units/get_current_schema/{fan_uuid}"), &fan_token)
        .await;
    let topics = schema["input_topic"]["set_fan_state/pepeunit"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(topics.len(), 2);
    assert_eq!(topics[1], output_topic);

    // Look-ups the reference client makes.
    let sensor_token = fx.unit_token(sensor["uuid"].as_str().unwrap()).await;
    let inputs = fx
        .device_json(
            &format!(
                "/unit_nodes?output_uuid={output}&limit=100&offset=0&order_by_create_date=desc"
            ),
            &sensor_token,
        )
        .await;
    assert_eq!(inputs["count"], 1, "{inputs}");
    assert_eq!(inputs["unit_nodes"][0]["uuid"], bobs_input);
    assert_eq!(inputs["unit_nodes"][0]["type"], "Input");
    assert_eq!(inputs["unit_nodes"][0]["unit_uuid"], fan_uuid);
    let units = fx
        .device_json(&format!("/units?unit_node_uuids={bobs_input}&unit_node_uuids={output}&is_include_output_unit_nodes=true"), &sensor_token)
        .await;
    assert_eq!(units["count"], 2, "{units}");
    let fan_entry = units["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["uuid"] == fan_uuid)
        .unwrap();
    assert_eq!(fan_entry["unit_nodes"].as_array().unwrap().len(), 1);
    assert!(
        fan_entry["unit_state"].is_null(),
        "another's unit state is not shown"
    );

    // Bob may not write into Alice's input until she marks it rewritable.
    let (_, body) = fx
        .server
        .gql(link, json!({ "o": output, "i": alices_input }), Some(&bob))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { setInputValue(uuid: $u, value: \"1\") { lastValue } }",
            json!({ "u": alices_input }),
            Some(&bob),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { updateUnitNode(uuid: $u, input: { isRewritableInput: true }) { isRewritableInput } }",
            json!({ "u": alices_input }),
            Some(&bob),
        )
        .await;
    assert_eq!(
        code(&body),
        "FORBIDDEN",
        "only the creator changes it: {body}"
    );
    fx.server
        .gql(
            "mutation($u: ID!) { updateUnitNode(uuid: $u, input: { isRewritableInput: true }) { isRewritableInput } }",
            json!({ "u": alices_input }),
            Some(&fx.token),
        )
        .await;
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { setInputValue(uuid: $u, value: \"1\") { lastValue } }",
            json!({ "u": alices_input }),
            Some(&bob),
        )
        .await;
    assert_eq!(body["data"]["setInputValue"]["lastValue"], "1", "{body}");

    // Deleting the link takes the topic out of the schema; a stranger may not delete it.
    let (_, carol) = fx.server.user("carol").await;
    let delete = "mutation($u: ID!) { deleteLink(uuid: $u) }";
    let (_, body) = fx
        .server
        .gql(delete, json!({ "u": edge }), Some(&carol))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = fx
        .server
        .gql(delete, json!({ "u": edge }), Some(&bob))
        .await;
    assert_eq!(body["data"]["deleteLink"], true, "{body}");
    let schema = fx
        .device_json(&format!("/units/get_current_schema/{fan_uuid}"), &fan_token)
        .await;
    assert_eq!(
        schema["input_topic"]["set_fan_state/pepeunit"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn state_logs_and_deletion() {
    let fx = Fixture::new(|_| {}).await;
    let unit = fx
        .create_unit(&fx.token, json!({ "name": "Reporter" }))
        .await;
    let uuid = unit["uuid"].as_str().unwrap();
    let id: uuid::Uuid = uuid.parse().unwrap();
    let db = fx.server.services.db();
    use pepeunit_backend::services::units::data;
    data::record_state(
        db,
        id,
        br#"{"millis": 1000, "mem_free": 2048, "pu_commit_version": "abc"}"#,
    )
    .await
    .unwrap();
    assert!(data::record_state(db, id, b"[1, 2]").await.is_err());
    let day = Duration::from_secs(86_400);
    data::record_logs(db, id, br#"{"level": "Info", "text": "booted"}"#, day, 100)
        .await
        .unwrap();
    data::record_logs(db, id, br#"[{"level": "Warning", "text": "hot", "create_datetime": "2026-01-01T00:00:00Z"}, {"level": "Debug", "text": "old"}]"#, Duration::from_millis(1), 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let query = "query($u: ID!) { unit(uuid: $u) { state reportedCommit logs { total items { level text } } } }";
    let (_, body) = fx
        .server
        .gql(query, json!({ "u": uuid }), Some(&fx.token))
        .await;
    let seen = &body["data"]["unit"];
    assert_eq!(seen["state"]["mem_free"], 2048, "{body}");
    assert_eq!(seen["reportedCommit"], "abc");
    assert_eq!(
        seen["logs"],
        json!({ "total": 1, "items": [{ "level": "Info", "text": "booted" }] }),
        "expired lines are gone"
    );
    assert_eq!(
        data::purge_expired_logs(&fx.server.services).await.unwrap(),
        2
    );

    let (_, bob) = fx.server.user("bob").await;
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { name state } }",
            json!({ "u": uuid }),
            Some(&bob),
        )
        .await;
    assert!(body["data"]["unit"]["state"].is_null(), "{body}");
    let (_, body) = fx.server.gql(query, json!({ "u": uuid }), Some(&bob)).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");

    // Deleting: others may not; the creator takes everything with it.
    let delete = "mutation($u: ID!) { deleteUnit(uuid: $u) }";
    let (_, body) = fx
        .server
        .gql(delete, json!({ "u": uuid }), Some(&bob))
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    let (_, body) = fx
        .server
        .gql(delete, json!({ "u": uuid }), Some(&fx.token))
        .await;
    assert_eq!(body["data"]["deleteUnit"], true, "{body}");
    use pepeunit_backend::entities::{unit_logs, unit_node_values, unit_nodes, units};
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(units::Entity::find().count(db).await.unwrap(), 0);
    assert_eq!(unit_nodes::Entity::find().count(db).await.unwrap(), 0);
    assert_eq!(unit_logs::Entity::find().count(db).await.unwrap(), 0);
    assert_eq!(unit_node_values::Entity::find().count(db).await.unwrap(), 0);
    // With its units gone, the repo_unit can go too.
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { deleteRepoUnit(uuid: $u) }",
            json!({ "u": fx.repo_unit }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(body["data"]["deleteRepoUnit"], true, "{body}");
}

async fn wait_until(
    fx: &Fixture,
    query: &str,
    vars: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..100 {
        let (_, body) = fx.server.gql(query, vars.clone(), Some(&fx.token)).await;
        if done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never met for {query}");
}

#[tokio::test]
async fn a_rollout_updates_in_waves_and_halts_when_a_wave_fails() {
    let fx = Fixture::new(|_| {}).await;
    let v1 = common::git::git(&fx.source.work, &["rev-parse", "HEAD"]);
    let mut fleet = Vec::new();
    for i in 1..=4 {
        let unit = fx
            .create_unit(&fx.token, json!({ "name": format!("Fleet {i}"), "followsDefaultBranch": false, "branch": "main", "commit": v1 }))
            .await;
        fleet.push(
            unit["uuid"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    fx.source.write("main.py", "print('v2')\n");
    let v2 = fx.source.commit("v2");
    fx.push_and_sync().await;

    let (_, body) = fx
        .server
        .gql(
            "mutation($i: StartRolloutInput!) { startRollout(input: $i) { uuid status targetCommit } }",
            json!({ "i": { "repoUnitUuid": fx.repo_unit, "commit": v2, "batchSize": 2, "maxFailureRatio": 0.4, "waveTimeoutSeconds": 1 } }),
            Some(&fx.token),
        )
        .await;
    let rollout = body["data"]["startRollout"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let (_, again) = fx
        .server
        .gql(
            "mutation($i: StartRolloutInput!) { startRollout(input: $i) { uuid } }",
            json!({ "i": { "repoUnitUuid": fx.repo_unit, "commit": v2 } }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");

    let status = "query($u: ID!) { unit(uuid: $u) { targetCommit updateStatus updateAttempts { rolloutUuid wave status targetCommit fromCommit } } }";
    let report = |unit: uuid::Uuid| {
        let db = fx.server.services.db().clone();
        let state = json!({ "pu_commit_version": v2 }).to_string();
        async move {
            pepeunit_backend::services::units::data::record_state(&db, unit, state.as_bytes())
                .await
                .unwrap();
        }
    };
    // Wave 1: the first two units are told; they report; wave 2 starts.
    for unit in &fleet[..2] {
        wait_until(&fx, status, json!({ "u": unit.to_string() }), |b| {
            b["data"]["unit"]["updateStatus"] == "pending"
        })
        .await;
        report(*unit).await;
    }
    let third = wait_until(&fx, status, json!({ "u": fleet[2].to_string() }), |b| {
        b["data"]["unit"]["updateStatus"] == "pending"
    })
    .await;
    assert_eq!(
        third["data"]["unit"]["updateAttempts"][0]["wave"], 2,
        "{third}"
    );
    // Wave 2: one of two reports; the other times out, 50% > 40%: halted.
    report(fleet[2]).await;
    let rollout_query = "query($u: ID!) { rollout(uuid: $u) { status wave detail } }";
    let halted = wait_until(&fx, rollout_query, json!({ "u": rollout }), |b| {
        b["data"]["rollout"]["status"] != "running"
    })
    .await;
    assert_eq!(halted["data"]["rollout"]["status"], "halted", "{halted}");
    assert_eq!(halted["data"]["rollout"]["wave"], 2);
    assert!(
        halted["data"]["rollout"]["detail"]
            .as_str()
            .unwrap()
            .contains("1 of 2"),
        "{halted}"
    );

    let (_, first) = fx
        .server
        .gql(
            status,
            json!({ "u": fleet[0].to_string() }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(first["data"]["unit"]["updateStatus"], "done");
    assert_eq!(
        first["data"]["unit"]["updateAttempts"],
        json!([{ "rolloutUuid": rollout, "wave": 1, "status": "done", "targetCommit": v2, "fromCommit": v1 }])
    );
    let (_, fourth) = fx
        .server
        .gql(
            status,
            json!({ "u": fleet[3].to_string() }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(fourth["data"]["unit"]["updateStatus"], "failed", "{fourth}");
    assert_eq!(
        fourth["data"]["unit"]["updateAttempts"][0]["status"],
        "failed"
    );
}

async fn bundle_link(fx: &Fixture, uuid: &str) -> String {
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { bundleUrl(format: TAR) } }",
            json!({ "u": uuid }),
            Some(&fx.token),
        )
        .await;
    body["data"]["unit"]["bundleUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

/// Bundle amplification: a small mirror whose one large blob is referenced many times is refused with a
/// clear error before the download starts, instead of streaming gigabytes.
#[tokio::test]
async fn a_bundle_over_the_size_limits_is_refused_before_it_streams() {
    let fx = Fixture::with_config(
        |source| {
            // 1 MiB of zeros compresses to almost nothing; 20 copies share one blob.
            for i in 0..20 {
                source.write(&format!("blob-{i:02}.bin"), vec![0u8; 1 << 20]);
            }
            source.commit("amplify");
        },
        |c| {
            c.bundle_max_file_bytes = 2 << 20;
            c.bundle_max_total_bytes = 4 << 20;
        },
    )
    .await;
    let unit = fx
        .create_unit(&fx.token, json!({ "name": "Amplified" }))
        .await;
    let link = bundle_link(&fx, unit["uuid"].as_str().unwrap()).await;
    let response = fx
        .server
        .client
        .get(fx.server.url(&link))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "VALIDATION", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bundle is too large"),
        "{body}"
    );
}

/// A download link stops working once its creator is blocked.
#[tokio::test]
async fn a_download_link_dies_with_its_creators_account() {
    let fx = Fixture::new(|_| {}).await;
    let unit = fx.create_unit(&fx.token, json!({ "name": "Linked" })).await;
    let link = bundle_link(&fx, unit["uuid"].as_str().unwrap()).await;
    let get = || async {
        fx.server
            .client
            .get(fx.server.url(&link))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(get().await.status(), StatusCode::OK, "control");
    let (_, admin) = fx.server.admin("root").await;
    let (_, me) = fx
        .server
        .gql("{ me { uuid } }", json!({}), Some(&fx.token))
        .await;
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { setUserStatus(uuid: $u, status: BLOCKED) { status } }",
            json!({ "u": me["data"]["me"]["uuid"] }),
            Some(&admin),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(get().await.status(), StatusCode::UNAUTHORIZED);
}
