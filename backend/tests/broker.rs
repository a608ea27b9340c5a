//! The embedded broker with a real MQTT client over TCP: authentication, per-topic authorization, links,
//! ingestion, commands and the update flow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::mqtt::{MqttUnit, Seen, connect};
use common::units::{Fixture, device};
use rumqttc::{ConnectReturnCode, QoS};
use serde_json::{Value, json};

async fn link(fx: &Fixture, output: &str, input: &str) -> String {
    let (_, body) = fx
        .server
        .gql(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({ "o": output, "i": input }),
            Some(&fx.token),
        )
        .await;
    body["data"]["createLink"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

async fn last_value(fx: &Fixture, node: &str) -> Value {
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { lastValue } }",
            json!({ "u": node }),
            Some(&fx.token),
        )
        .await;
    body["data"]["unitNode"]["lastValue"].clone()
}

#[tokio::test]
async fn only_a_units_current_token_connects_and_revocation_disconnects() {
    let fx = Fixture::new(|_| {}).await;
    let a = device(&fx, "A").await;
    let b = device(&fx, "B").await;
    let refused = |r: Result<MqttUnit, ConnectReturnCode>| r.err();
    assert_eq!(
        refused(connect(&fx.server, &a.uuid, "garbage").await),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        refused(connect(&fx.server, &a.uuid, &fx.token).await),
        Some(ConnectReturnCode::NotAuthorized),
        "a user's token is not a unit's"
    );
    assert_eq!(
        refused(connect(&fx.server, &b.uuid, &a.token).await),
        Some(ConnectReturnCode::NotAuthorized),
        "another unit's id"
    );
    assert_eq!(
        refused(connect(&fx.server, "not-a-uuid", &a.token).await),
        Some(ConnectReturnCode::BadClientId)
    );

    let mut connected = a.connect(&fx).await;
    fx.server
        .gql(
            "mutation($u: ID!) { regenerateUnitToken(uuid: $u) }",
            json!({ "u": a.uuid }),
            Some(&fx.token),
        )
        .await;
    connected.closed().await;
    assert_eq!(
        refused(connect(&fx.server, &a.uuid, &a.token).await),
        Some(ConnectReturnCode::BadUserNamePassword)
    );

    let mut connected = b.connect(&fx).await;
    fx.server
        .gql(
            "mutation($u: ID!) { deleteUnit(uuid: $u) }",
            json!({ "u": b.uuid }),
            Some(&fx.token),
        )
        .await;
    connected.closed().await;
}

#[tokio::test]
async fn forbidden_publishes_and_subscribes_close_the_connection_and_deliver_nothing() {
    let fx = Fixture::new(|_| {}).await;
    let a = device(&fx, "A").await;
    let b = device(&fx, "B").await;
    let mut listener = a.connect(&fx).await;
    listener.subscribe(&a.topic("set_fan_state/pepeunit")).await;
    listener
        .subscribe(&a.base(&fx, "input_base_topic", "env_update"))
        .await;
    listener.quiet().await;

    for (what, forbidden) in [
        ("another unit's input", a.topic("set_fan_state/pepeunit")),
        ("another unit's output", a.topic("current_temp/pepeunit")),
        ("its own input", b.topic("set_fan_state/pepeunit")),
        (
            "another unit's command topic",
            a.base(&fx, "input_base_topic", "env_update"),
        ),
    ] {
        let mut intruder = b.connect(&fx).await;
        intruder.publish(&forbidden, "1", QoS::AtLeastOnce).await;
        intruder.closed().await;
        listener.quiet().await;
        let _ = what;
    }
    for forbidden in [
        "#".to_owned(),
        format!(
            "{}/+/pepeunit",
            fx.server.base.trim_start_matches("http://")
        ),
        a.topic("current_temp/pepeunit"),
        a.base(&fx, "input_base_topic", "update"),
    ] {
        let mut intruder = b.connect(&fx).await;
        intruder.subscribe(&forbidden).await;
        intruder.closed().await;
    }
    assert!(
        last_value(&fx, &a.node("set_fan_state/pepeunit"))
            .await
            .is_null()
    );
}

#[tokio::test]
async fn links_deliver_outputs_to_inputs_until_removed_and_values_are_stored_before_puback() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let fan = device(&fx, "Fan").await;
    let edge = link(
        &fx,
        &sensor.node("current_temp/pepeunit"),
        &fan.node("set_fan_state/pepeunit"),
    )
    .await;

    let mut fan_mqtt = fan.connect(&fx).await;
    let schema_update = fan.base(&fx, "input_base_topic", "schema_update");
    fan_mqtt.subscribe(&schema_update).await;
    fan_mqtt
        .subscribe(&sensor.topic("current_temp/pepeunit"))
        .await;
    let mut sensor_mqtt = sensor.connect(&fx).await;

    sensor_mqtt
        .publish(
            &sensor.topic("current_temp/pepeunit"),
            "21.5",
            QoS::AtLeastOnce,
        )
        .await;
    // The PUBACK means committed: the value is readable at once.
    let acked = sensor_mqtt.next(Duration::from_secs(2)).await;
    assert!(
        matches!(acked, Some(Seen::PubAck(_))),
        "expected a PUBACK, saw {acked:?}"
    );
    assert_eq!(
        last_value(&fx, &sensor.node("current_temp/pepeunit")).await,
        "21.5"
    );
    assert_eq!(
        fan_mqtt.message().await,
        (sensor.topic("current_temp/pepeunit"), "21.5".to_owned())
    );

    // Unlinking: the fan is told to reload its schema and gets nothing more from the sensor.
    fx.server
        .gql(
            "mutation($u: ID!) { deleteLink(uuid: $u) }",
            json!({ "u": edge }),
            Some(&fx.token),
        )
        .await;
    let (topic, payload) = fan_mqtt.message().await;
    assert_eq!(
        (topic, payload),
        (
            schema_update,
            json!({ "COMMAND": "SchemaUpdate" }).to_string()
        )
    );
    sensor_mqtt
        .publish(
            &sensor.topic("current_temp/pepeunit"),
            "22.0",
            QoS::AtMostOnce,
        )
        .await;
    fan_mqtt.quiet().await;
    // ... and may not subscribe there again.
    fan_mqtt
        .subscribe(&sensor.topic("current_temp/pepeunit"))
        .await;
    fan_mqtt.closed().await;
}

#[tokio::test]
async fn commands_fire_on_each_trigger_and_the_update_flow_completes() {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Worker").await;
    let other = device(&fx, "Other").await;
    let mut mqtt = unit.connect(&fx).await;
    for name in ["update", "env_update", "schema_update", "log_sync", "reset"] {
        mqtt.subscribe(&unit.base(&fx, "input_base_topic", name))
            .await;
    }
    mqtt.subscribe(&unit.topic("set_fan_state/pepeunit")).await;
    mqtt.quiet().await;
    let command = |name: &str, payload: Value| {
        (
            unit.base(&fx, "input_base_topic", name),
            payload.to_string(),
        )
    };

    fx.server
        .gql(
            "mutation($u: ID!) { setUnitEnv(uuid: $u, env: {WIFI_SSID: \"x\"}) }",
            json!({ "u": unit.uuid }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(
        mqtt.message().await,
        command("env_update", json!({ "COMMAND": "EnvUpdate" }))
    );
    link(
        &fx,
        &other.node("current_temp/pepeunit"),
        &unit.node("set_fan_state/pepeunit"),
    )
    .await;
    assert_eq!(
        mqtt.message().await,
        command("schema_update", json!({ "COMMAND": "SchemaUpdate" }))
    );
    for (mutation, name, word) in [
        ("requestLogSync", "log_sync", "LogSync"),
        ("resetUnit", "reset", "Reset"),
    ] {
        let (_, body) = fx
            .server
            .gql(
                &format!("mutation($u: ID!) {{ {mutation}(uuid: $u) }}"),
                json!({ "u": unit.uuid }),
                Some(&fx.token),
            )
            .await;
        assert_eq!(body["data"][mutation], true, "{body}");
        assert_eq!(
            mqtt.message().await,
            command(name, json!({ "COMMAND": word }))
        );
    }
    // A value set in the API reaches the input, retained for a later subscriber.
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { setInputValue(uuid: $u, value: \"on\") { lastValue } }",
            json!({ "u": unit.node("set_fan_state/pepeunit") }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(body["data"]["setInputValue"]["lastValue"], "on", "{body}");
    assert_eq!(
        mqtt.message().await,
        (unit.topic("set_fan_state/pepeunit"), "on".to_owned())
    );

    // The update flow: the branch moves, the follower is told (retained), reports the commit, done.
    fx.source.write("main.py", "print('v2')\n");
    let v2 = fx.source.commit("v2");
    fx.push_and_sync().await;
    let (topic, payload) = mqtt.message().await;
    assert_eq!(topic, unit.base(&fx, "input_base_topic", "update"));
    // The reference client's keys, plus the SHA-256 of the firmware archive without the unit's files.
    let command: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(command["COMMAND"], "Update");
    assert_eq!(command["PU_COMMIT_VERSION"], v2);
    let archive = fx
        .device_get(
            &format!("/units/firmware/tgz/{}?unit_files=false", unit.uuid),
            Some(&unit.token),
        )
        .await
        .bytes()
        .await
        .unwrap();
    use sha2::Digest;
    assert_eq!(
        command["PU_FIRMWARE_SHA256"],
        hex::encode(sha2::Sha256::digest(&archive))
    );
    let status = "query($u: ID!) { unit(uuid: $u) { targetCommit reportedCommit updateStatus updateStatusAt } }";
    let (_, body) = fx
        .server
        .gql(status, json!({ "u": unit.uuid }), Some(&fx.token))
        .await;
    assert_eq!(body["data"]["unit"]["updateStatus"], "pending", "{body}");
    // A unit connecting later still gets the pending update; its new session takes over the old one.
    let mut late = unit.connect(&fx).await;
    loop {
        match mqtt.next(Duration::from_secs(5)).await {
            Some(Seen::Closed(_)) => break,
            Some(_) => {}
            None => panic!("the older session stays open"),
        }
    }
    late.subscribe(&unit.base(&fx, "input_base_topic", "update"))
        .await;
    assert_eq!(
        late.message().await.0,
        unit.base(&fx, "input_base_topic", "update")
    );

    let state = json!({ "millis": 10, "mem_free": 1000, "pu_commit_version": v2 }).to_string();
    late.publish(
        &unit.base(&fx, "output_base_topic", "state"),
        &state,
        QoS::AtLeastOnce,
    )
    .await;
    late.publish(
        &unit.base(&fx, "output_base_topic", "log"),
        r#"[{"level": "Info", "text": "updated"}]"#,
        QoS::AtLeastOnce,
    )
    .await;
    let mut done = Value::Null;
    for _ in 0..40 {
        let (_, body) = fx
            .server
            .gql(status, json!({ "u": unit.uuid }), Some(&fx.token))
            .await;
        done = body["data"]["unit"].clone();
        if done["updateStatus"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["updateStatus"], "done", "{done}");
    assert_eq!(done["reportedCommit"], v2);
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { logs { items { text } } } }",
            json!({ "u": unit.uuid }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(
        body["data"]["unit"]["logs"]["items"][0]["text"], "updated",
        "{body}"
    );
}

/// A `graphql-transport-ws` client: init with the token, then one subscription.
async fn subscription(
    fx: &Fixture,
    token: &str,
    query: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/graphql/ws", fx.server.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    ws.send(Message::text(init.to_string())).await.unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack}");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    ws
}

#[track_caller]
fn next_event(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> impl std::future::Future<Output = Value> + '_ {
    let caller = std::panic::Location::caller();
    async move { next_event_at(ws, caller).await }
}

async fn next_event_at(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    caller: &std::panic::Location<'_>,
) -> Value {
    use futures_util::StreamExt;
    let message = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .unwrap_or_else(|_| panic!("no event in time at {caller}"))
        .unwrap()
        .unwrap();
    serde_json::from_str(message.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn graphql_subscriptions_see_values_state_logs_and_presence() {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Live").await;
    let (_, bob) = fx.server.user("bob").await;
    let mut values = subscription(
        &fx,
        &bob,
        &format!(
            "subscription {{ unitNodeValues(unitUuids: [\"{}\"]) {{ nodeUuid value }} }}",
            unit.uuid
        ),
    )
    .await;
    let mut private = subscription(
        &fx,
        &bob,
        &format!(
            "subscription {{ unitStates(unitUuids: [\"{}\"]) {{ state }} }}",
            unit.uuid
        ),
    )
    .await;
    let refused = next_event(&mut private).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    let mut states = subscription(
        &fx,
        &fx.token,
        &format!(
            "subscription {{ unitStates(unitUuids: [\"{}\"]) {{ state }} }}",
            unit.uuid
        ),
    )
    .await;
    let mut presence = subscription(
        &fx,
        &fx.token,
        &format!(
            "subscription {{ unitPresence(unitUuids: [\"{}\"]) {{ online }} }}",
            unit.uuid
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mqtt = unit.connect(&fx).await;
    let event = next_event(&mut presence).await;
    assert_eq!(
        event["payload"]["data"]["unitPresence"]["online"], true,
        "{event}"
    );
    mqtt.publish(
        &unit.topic("current_temp/pepeunit"),
        "19.5",
        QoS::AtLeastOnce,
    )
    .await;
    let event = next_event(&mut values).await;
    assert_eq!(
        event["payload"]["data"]["unitNodeValues"],
        json!({ "nodeUuid": unit.node("current_temp/pepeunit"), "value": "19.5" }),
        "{event}"
    );
    mqtt.publish(
        &unit.base(&fx, "output_base_topic", "state"),
        r#"{"millis": 5}"#,
        QoS::AtLeastOnce,
    )
    .await;
    let event = next_event(&mut states).await;
    assert_eq!(
        event["payload"]["data"]["unitStates"]["state"],
        json!({ "millis": 5 }),
        "{event}"
    );
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { online } }",
            json!({ "u": unit.uuid }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(body["data"]["unit"]["online"], true, "{body}");
    mqtt.client.disconnect().await.unwrap();
    let event = next_event(&mut presence).await;
    assert_eq!(
        event["payload"]["data"]["unitPresence"]["online"], false,
        "{event}"
    );
}

fn mqtt_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn mqtt_frame(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

#[tokio::test]
async fn mqtt_over_websocket_is_the_same_broker() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Browser unit").await;
    let mut request = format!("{}/mqtt", fx.server.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 60];
    mqtt_string(&mut connect, &unit.uuid);
    mqtt_string(&mut connect, &unit.token);
    ws.send(Message::binary(mqtt_frame(0x10, connect)))
        .await
        .unwrap();
    let connack = ws.next().await.unwrap().unwrap().into_data();
    assert_eq!(connack.as_ref(), &[0x20, 2, 0, 0], "accepted");

    let topic = unit.topic("set_fan_state/pepeunit");
    let mut subscribe = vec![0, 1];
    mqtt_string(&mut subscribe, &topic);
    subscribe.push(0);
    ws.send(Message::binary(mqtt_frame(0x82, subscribe)))
        .await
        .unwrap();
    let suback = ws.next().await.unwrap().unwrap().into_data();
    assert_eq!(suback.as_ref(), &[0x90, 3, 0, 1, 0]);

    fx.server
        .gql(
            "mutation($u: ID!) { setInputValue(uuid: $u, value: \"on\") { lastValue } }",
            json!({ "u": unit.node("set_fan_state/pepeunit") }),
            Some(&fx.token),
        )
        .await;
    let publish = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_data();
    let mut expected = Vec::new();
    mqtt_string(&mut expected, &topic);
    expected.extend_from_slice(b"on");
    assert_eq!(publish.as_ref(), mqtt_frame(0x30, expected).as_slice());

    // A forbidden subscribe closes the WebSocket too.
    let mut subscribe = vec![0, 2];
    mqtt_string(&mut subscribe, "#");
    subscribe.push(0);
    ws.send(Message::binary(mqtt_frame(0x82, subscribe)))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .unwrap();
    assert!(
        matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{end:?}"
    );
}

#[tokio::test]
async fn mqtt_over_tls_when_a_certificate_is_configured() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let fx = Fixture::with_config(
        |_| {},
        move |c| {
            c.mqtt_tls_cert = Some(cert_path);
            c.mqtt_tls_key = Some(key_path);
            c.mqtt_tls_bind = std::net::SocketAddr::from(([127, 0, 0, 1], tls_port));
        },
    )
    .await;
    let unit = device(&fx, "Secure").await;

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut stream = None;
    for _ in 0..50 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await {
            stream = Some(tcp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tls = connector
        .connect(
            ServerName::try_from("localhost").unwrap(),
            stream.expect("tls port open"),
        )
        .await
        .unwrap();
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 60];
    mqtt_string(&mut connect, &unit.uuid);
    mqtt_string(&mut connect, &unit.token);
    tls.write_all(&mqtt_frame(0x10, connect)).await.unwrap();
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
}

#[tokio::test]
async fn a_blocked_creators_units_are_disconnected_and_refused() {
    creator_status_disconnects("BLOCKED").await;
}

#[tokio::test]
async fn an_unverified_creators_units_are_disconnected_and_refused() {
    creator_status_disconnects("UNVERIFIED").await;
}

async fn creator_status_disconnects(status: &str) {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Owned").await;
    let mut mqtt = unit.connect(&fx).await;
    let (_, admin) = fx.server.admin("root").await;
    let (_, me) = fx
        .server
        .gql("{ me { uuid } }", json!({}), Some(&fx.token))
        .await;
    let (_, body) = fx
        .server
        .gql(
            &format!(
                "mutation($u: ID!) {{ setUserStatus(uuid: $u, status: {status}) {{ status }} }}"
            ),
            json!({ "u": me["data"]["me"]["uuid"] }),
            Some(&admin),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    mqtt.closed().await;
    assert_eq!(
        connect(&fx.server, &unit.uuid, &unit.token).await.err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
}

#[tokio::test]
async fn clearing_the_retained_update_on_a_token_change_delivers_nothing_to_the_unit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Updater").await;
    // A raw client sees every byte up to the close (a client library may drop what precedes an error).
    let mut stream = tokio::net::TcpStream::connect(fx.server.mqtt)
        .await
        .unwrap();
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 60];
    mqtt_string(&mut connect, &unit.uuid);
    mqtt_string(&mut connect, &unit.token);
    let mut subscribe = vec![0, 1];
    mqtt_string(
        &mut subscribe,
        &unit.base(&fx, "input_base_topic", "update"),
    );
    subscribe.push(0);
    stream
        .write_all(&[mqtt_frame(0x10, connect), mqtt_frame(0x82, subscribe)].concat())
        .await
        .unwrap();
    let mut acks = [0u8; 9];
    stream.read_exact(&mut acks).await.unwrap();
    assert_eq!(acks, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0], "CONNACK, SUBACK");
    fx.server
        .gql(
            "mutation($u: ID!) { regenerateUnitToken(uuid: $u) }",
            json!({ "u": unit.uuid }),
            Some(&fx.token),
        )
        .await;
    // An empty `update` would read as "update now" to the reference client: only the close may arrive.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .ok();
    assert!(rest.is_empty(), "the unit received {rest:?}");
}

// ---- persistent sessions ----

/// Waits (generously) until the server no longer counts `unit` as connected: its last connection has
/// ended and, with a persistent session, that session has been kept.
async fn offline(fx: &Fixture, unit: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = fx
            .server
            .gql(
                "query($u: ID!) { unit(uuid: $u) { online } }",
                json!({ "u": unit }),
                Some(&fx.token),
            )
            .await;
        if body["data"]["unit"]["online"] == false {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{unit} stays online: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects a unit's client with `clean_session` as given; returns it and CONNACK's session-present flag.
async fn connect_session(
    fx: &Fixture,
    unit: &common::units::Device,
    clean: bool,
    manual_acks: bool,
) -> (MqttUnit, bool) {
    common::mqtt::connect_with(&fx.server, &unit.uuid, &unit.token, |o| {
        o.set_clean_session(clean);
        o.set_manual_acks(manual_acks);
    })
    .await
    .unwrap()
}

/// Publishes at QoS 1 and waits for the PUBACK: the message is then stored and routed.
async fn publish_acked(mqtt: &mut MqttUnit, topic: &str, payload: &str) {
    mqtt.publish(topic, payload, QoS::AtLeastOnce).await;
    loop {
        match mqtt.next(Duration::from_secs(20)).await {
            Some(Seen::PubAck(_)) => return,
            Some(Seen::Message { .. }) => {}
            other => panic!("expected a PUBACK, saw {other:?}"),
        }
    }
}

/// The next delivery: (payload, dup, packet id).
async fn delivery(mqtt: &mut MqttUnit) -> (String, bool, u16) {
    match mqtt.next(Duration::from_secs(20)).await {
        Some(Seen::Message {
            payload, dup, pkid, ..
        }) => (payload, dup, pkid),
        other => panic!("expected a message, saw {other:?}"),
    }
}

/// A sensor linked to a fan; the fan may subscribe to the sensor's output.
async fn sensor_and_fan(fx: &Fixture) -> (common::units::Device, common::units::Device, String) {
    let sensor = device(fx, "Sensor").await;
    let fan = device(fx, "Fan").await;
    let edge = link(
        fx,
        &sensor.node("current_temp/pepeunit"),
        &fan.node("set_fan_state/pepeunit"),
    )
    .await;
    (sensor, fan, edge)
}

#[tokio::test]
async fn a_persistent_session_keeps_qos1_messages_while_offline_and_redelivers_in_order() {
    let fx = Fixture::new(|_| {}).await;
    let (sensor, fan, _) = sensor_and_fan(&fx).await;
    let output = sensor.topic("current_temp/pepeunit");
    let mut sensor_mqtt = sensor.connect(&fx).await;

    let (mut fan_mqtt, present) = connect_session(&fx, &fan, false, true).await;
    assert!(!present, "no session to resume the first time");
    fan_mqtt.subscribe_acked(&output).await;
    publish_acked(&mut sensor_mqtt, &output, "1").await;
    publish_acked(&mut sensor_mqtt, &output, "2").await;
    // The fan reads both and acknowledges neither before it goes away.
    let first = delivery(&mut fan_mqtt).await;
    let second = delivery(&mut fan_mqtt).await;
    assert_eq!((first.0.as_str(), first.1), ("1", false));
    assert_eq!((second.0.as_str(), second.1), ("2", false));
    fan_mqtt.client.disconnect().await.unwrap();
    offline(&fx, &fan.uuid).await;

    for value in ["3", "4", "5"] {
        publish_acked(&mut sensor_mqtt, &output, value).await;
    }

    // Back without subscribing again: the session is resumed, the unacknowledged ones come again (DUP,
    // same packet ids), then what was published while the fan was away, in order.
    let (mut fan_mqtt, present) = connect_session(&fx, &fan, false, false).await;
    assert!(present, "CONNACK says the session is present");
    assert_eq!(
        delivery(&mut fan_mqtt).await,
        ("1".to_owned(), true, first.2)
    );
    assert_eq!(
        delivery(&mut fan_mqtt).await,
        ("2".to_owned(), true, second.2)
    );
    for value in ["3", "4", "5"] {
        let (payload, dup, _) = delivery(&mut fan_mqtt).await;
        assert_eq!((payload.as_str(), dup), (value, false));
    }
    // The subscription itself came back too.
    publish_acked(&mut sensor_mqtt, &output, "6").await;
    assert_eq!(delivery(&mut fan_mqtt).await.0, "6");

    // Everything was acknowledged this time (the client acknowledges on its own): nothing is owed.
    fan_mqtt.client.disconnect().await.unwrap();
    offline(&fx, &fan.uuid).await;
    let (mut fan_mqtt, present) = connect_session(&fx, &fan, false, false).await;
    assert!(present);
    fan_mqtt.quiet().await;
}

#[tokio::test]
async fn a_clean_session_discards_the_kept_one() {
    let fx = Fixture::new(|_| {}).await;
    let (sensor, fan, _) = sensor_and_fan(&fx).await;
    let output = sensor.topic("current_temp/pepeunit");
    let mut sensor_mqtt = sensor.connect(&fx).await;
    let (mut fan_mqtt, _) = connect_session(&fx, &fan, false, false).await;
    fan_mqtt.subscribe_acked(&output).await;
    publish_acked(&mut sensor_mqtt, &output, "1").await;
    assert_eq!(delivery(&mut fan_mqtt).await.0, "1");
    fan_mqtt.client.disconnect().await.unwrap();
    offline(&fx, &fan.uuid).await;
    publish_acked(&mut sensor_mqtt, &output, "2").await;

    let (mut fan_mqtt, present) = connect_session(&fx, &fan, true, false).await;
    assert!(!present, "a clean session starts empty");
    fan_mqtt.quiet().await;
    publish_acked(&mut sensor_mqtt, &output, "3").await;
    fan_mqtt.quiet().await;
    // Nor is a clean session kept after it.
    fan_mqtt.client.disconnect().await.unwrap();
    offline(&fx, &fan.uuid).await;
    let (mut fan_mqtt, present) = connect_session(&fx, &fan, false, false).await;
    assert!(!present);
    fan_mqtt.quiet().await;
}

/// The value of a line of `/metrics`, if present.
async fn metric(fx: &Fixture, line_start: &str) -> Option<f64> {
    let text = fx
        .server
        .client
        .get(fx.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn an_mqtt5_session_expires_after_its_interval_and_its_messages_with_it() {
    use rumqttc::v5::mqttbytes::v5::Packet as V5Packet;
    let fx = Fixture::new(|_| {}).await;
    let (sensor, fan, _) = sensor_and_fan(&fx).await;
    let output = sensor.topic("current_temp/pepeunit");
    let mut sensor_mqtt = sensor.connect(&fx).await;

    // MQTT 5, clean start off, a session that outlives the connection by 1 s.
    let v5 = |clean_start: bool| {
        let mut options =
            rumqttc::v5::MqttOptions::new(&fan.uuid, "127.0.0.1", fx.server.mqtt.port());
        options.set_credentials(fan.token.clone(), "");
        options.set_clean_start(clean_start);
        options.set_session_expiry_interval(Some(1));
        rumqttc::v5::AsyncClient::new(options, 16)
    };
    async fn connack(events: &mut rumqttc::v5::EventLoop) -> bool {
        loop {
            if let rumqttc::v5::Event::Incoming(V5Packet::ConnAck(ack)) =
                events.poll().await.unwrap()
            {
                assert_eq!(
                    ack.code,
                    rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
                );
                return ack.session_present;
            }
        }
    }
    let (client, mut events) = v5(false);
    assert!(!connack(&mut events).await);
    client
        .subscribe(&output, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let rumqttc::v5::Event::Incoming(V5Packet::SubAck(_)) = events.poll().await.unwrap() {
            break;
        }
    }
    drop(client);
    drop(events);
    offline(&fx, &fan.uuid).await;
    publish_acked(&mut sensor_mqtt, &output, "while away").await;
    // The kept session shows in /metrics until it expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric(&fx, "pepeunit_mqtt_stored_sessions ").await != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_client, mut events) = v5(false);
    assert!(!connack(&mut events).await, "the expired session is gone");
    // ... and with it the message it held and the subscription.
    let quiet = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let rumqttc::v5::Event::Incoming(V5Packet::Publish(p)) = events.poll().await.unwrap()
            {
                return p;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "received {quiet:?}");
}

#[tokio::test]
async fn a_revoked_unit_cannot_resume_its_session_and_a_removed_link_is_not_resumed() {
    let fx = Fixture::new(|_| {}).await;
    let (sensor, fan, edge) = sensor_and_fan(&fx).await;
    let output = sensor.topic("current_temp/pepeunit");
    let mut sensor_mqtt = sensor.connect(&fx).await;

    // A link removed while the fan is away: its subscription and what it held are not resumed.
    let (mut fan_mqtt, _) = connect_session(&fx, &fan, false, false).await;
    fan_mqtt.subscribe_acked(&output).await;
    publish_acked(&mut sensor_mqtt, &output, "1").await;
    assert_eq!(delivery(&mut fan_mqtt).await.0, "1");
    fan_mqtt.client.disconnect().await.unwrap();
    offline(&fx, &fan.uuid).await;
    publish_acked(&mut sensor_mqtt, &output, "held").await;
    fx.server
        .gql(
            "mutation($u: ID!) { deleteLink(uuid: $u) }",
            json!({ "u": edge }),
            Some(&fx.token),
        )
        .await;
    publish_acked(&mut sensor_mqtt, &output, "after unlink").await;
    let (mut fan_mqtt, present) = connect_session(&fx, &fan, false, false).await;
    assert!(present);
    // Only the schema_update command could reach it, and the fan did not subscribe to that.
    fan_mqtt.quiet().await;
    fan_mqtt.client.disconnect().await.unwrap();
    offline(&fx, &fan.uuid).await;

    // Revoked while away: the old token cannot resume, and the new one finds no session.
    fx.server
        .gql(
            "mutation($u: ID!) { regenerateUnitToken(uuid: $u) }",
            json!({ "u": fan.uuid }),
            Some(&fx.token),
        )
        .await;
    let refused = common::mqtt::connect_with(&fx.server, &fan.uuid, &fan.token, |o| {
        o.set_clean_session(false);
    })
    .await
    .err();
    assert_eq!(refused, Some(ConnectReturnCode::BadUserNamePassword));
    let token = fx.unit_token(&fan.uuid).await;
    let (_, present) = common::mqtt::connect_with(&fx.server, &fan.uuid, &token, |o| {
        o.set_clean_session(false);
    })
    .await
    .unwrap();
    assert!(!present, "a revoked unit's session was dropped");
}

#[tokio::test]
async fn a_full_kept_session_drops_its_oldest_messages_and_counts_them() {
    let fx = Fixture::with_config(|_| {}, |c| c.mqtt_session_max_queued = 2).await;
    let (sensor, fan, _) = sensor_and_fan(&fx).await;
    let output = sensor.topic("current_temp/pepeunit");
    let mut sensor_mqtt = sensor.connect(&fx).await;
    let (mut fan_mqtt, _) = connect_session(&fx, &fan, false, false).await;
    fan_mqtt.subscribe_acked(&output).await;
    fan_mqtt.client.disconnect().await.unwrap();
    offline(&fx, &fan.uuid).await;
    for value in ["1", "2", "3", "4"] {
        publish_acked(&mut sensor_mqtt, &output, value).await;
    }
    // The two newest wait; the two oldest were dropped and counted.
    let (mut fan_mqtt, present) = connect_session(&fx, &fan, false, false).await;
    assert!(present);
    assert_eq!(delivery(&mut fan_mqtt).await.0, "3");
    assert_eq!(delivery(&mut fan_mqtt).await.0, "4");
    fan_mqtt.quiet().await;
    assert_eq!(
        metric(
            &fx,
            "pepeunit_limit_hits_total{limit=\"mqtt_session_queue\"}"
        )
        .await,
        Some(2.0)
    );
}

/// The next message's (payload, retain flag).
async fn retained_delivery(mqtt: &mut MqttUnit) -> (String, bool) {
    match mqtt.next(Duration::from_secs(20)).await {
        Some(Seen::Message {
            payload, retain, ..
        }) => (payload, retain),
        other => panic!("expected a message, saw {other:?}"),
    }
}

#[tokio::test]
async fn retained_values_reach_later_subscribers_with_the_retain_flag_until_an_empty_one_clears_them()
 {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Retained").await;
    let input = unit.topic("set_fan_state/pepeunit");
    let set = |value: &'static str| {
        let fx = &fx;
        let node = unit.node("set_fan_state/pepeunit");
        async move {
            let (_, body) = fx
                .server
                .gql(
                    "mutation($u: ID!, $v: String!) { setInputValue(uuid: $u, value: $v) { lastValue } }",
                    json!({ "u": node, "v": value }),
                    Some(&fx.token),
                )
                .await;
            assert!(body["errors"].is_null(), "{body}");
        }
    };
    // Nothing retained yet: a subscriber gets nothing.
    let mut first = unit.connect(&fx).await;
    first.subscribe_acked(&input).await;
    first.quiet().await;
    // A subscriber that is already there gets each value as it is set, without the retain flag
    // (MQTT 3.1.1 §3.3.1.3, MQTT 5 §3.3.1.3 without Retain As Published).
    set("on").await;
    assert_eq!(
        retained_delivery(&mut first).await,
        ("on".to_owned(), false)
    );
    set("off").await;
    assert_eq!(
        retained_delivery(&mut first).await,
        ("off".to_owned(), false)
    );
    drop(first);

    // A later subscriber gets the latest value only, with the retain flag.
    let mut later = unit.connect(&fx).await;
    later.subscribe_acked(&input).await;
    assert_eq!(
        retained_delivery(&mut later).await,
        ("off".to_owned(), true)
    );
    later.quiet().await;

    // An empty retained value clears it: not delivered to the subscriber, nor to a later one.
    set("").await;
    later.quiet().await;
    drop(later);
    let mut last = unit.connect(&fx).await;
    last.subscribe_acked(&input).await;
    last.quiet().await;
}
