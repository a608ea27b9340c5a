//! Federation between two real instances in one process: two servers on loopback, each with its own
//! database, broker and git server, talking ActivityPub over HTTP. Units on both sides are real MQTT
//! clients.
//!
//! Instances are named `localhost:<port>` (not `127.0.0.1`): ActivityPub ids need a host name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::mqtt::{MqttUnit, Seen};
use common::units::{Device, Fixture, device};
use common::{TestDb, TestServer};
use reqwest::StatusCode;
use rumqttc::QoS;
use serde_json::{Value, json};

/// Long enough for a loaded machine; polls end as soon as the condition holds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `probe` until it returns `Some`, or panics after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One instance: its fixture (git server, alice and a repo_unit) and an admin token.
struct Instance {
    fx: Fixture,
    admin: String,
}

/// An instance stopped for a while: its database, addresses and fixture, to start again on.
struct Stopped {
    db: TestDb,
    at: (std::net::SocketAddr, std::net::SocketAddr),
    parts: (
        tempfile::TempDir,
        common::git::SourceRepo,
        common::git::GitHttpServer,
    ),
    token: String,
    repo_unit: String,
    admin: String,
}

impl Stopped {
    /// Starts the instance again on the same database and ports.
    async fn start(self) -> Instance {
        let server = TestServer::start_at(self.db, Some(self.at), |c| {
            c.allow_local_remotes = true;
            named_localhost(c);
        })
        .await;
        let (remotes, source, http) = self.parts;
        Instance {
            fx: Fixture {
                remotes,
                source,
                http,
                server,
                token: self.token,
                repo_unit: self.repo_unit,
            },
            admin: self.admin,
        }
    }
}

/// ActivityPub ids need a host name: the instance is `localhost:<port>`.
fn named_localhost(config: &mut pepeunit_backend::Config) {
    config.public_url = config.public_url.replace("127.0.0.1", "localhost");
}

impl Instance {
    async fn start() -> Self {
        let fx = Fixture::with_config(|_| {}, named_localhost).await;
        let (_, admin) = fx.server.admin("root").await;
        let instance = Self { fx, admin };
        instance.set_federation(true).await;
        instance
    }

    fn server(&self) -> &TestServer {
        &self.fx.server
    }

    /// Stops the instance (as a signal would); [`Stopped::start`] starts it again.
    async fn stop(self) -> Stopped {
        let Fixture {
            remotes,
            source,
            http,
            server,
            token,
            repo_unit,
        } = self.fx;
        let at = (server.http_addr(), server.mqtt);
        Stopped {
            db: server.stop().await,
            at,
            parts: (remotes, source, http),
            token,
            repo_unit,
            admin: self.admin,
        }
    }

    /// `localhost:<port>`.
    fn domain(&self) -> String {
        self.server().base.replace("http://127.0.0.1", "localhost")
    }

    fn url(&self) -> String {
        format!("http://{}", self.domain())
    }

    async fn set_federation(&self, on: bool) {
        let (_, body) = self
            .gql_admin(
                "mutation($on: Boolean!) { updateInstanceSettings(input: { federationEnabled: $on }) { federationEnabled } }",
                json!({ "on": on }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }

    async fn gql_admin(&self, query: &str, variables: Value) -> (StatusCode, Value) {
        self.server().gql(query, variables, Some(&self.admin)).await
    }

    async fn gql_user(&self, query: &str, variables: Value) -> Value {
        self.server()
            .gql(query, variables, Some(&self.fx.token))
            .await
            .1
    }

    /// The peer rows as the admin sees them: domain → status.
    async fn peers(&self) -> Vec<(String, String)> {
        let (_, body) = self
            .gql_admin("{ federationPeers { domain status } }", json!({}))
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["federationPeers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["domain"].as_str().unwrap().to_owned(),
                    p["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn peer_status(&self, other: &Instance) -> Option<String> {
        self.peers()
            .await
            .into_iter()
            .find(|(d, _)| *d == other.domain())
            .map(|(_, s)| s)
    }

    async fn remote_units(&self) -> Value {
        let body = self
            .gql_user(
                "{ remoteUnits { uuid address status name outputs { uuid name topic lastValue } links { uuid outputName inputUuid } } }",
                json!({}),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["remoteUnits"].clone()
    }

    async fn followers(&self) -> Vec<Value> {
        let (_, body) = self
            .gql_admin("{ federationFollowers { unitUuid peerDomain } }", json!({}))
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["federationFollowers"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The topics `unit`'s schema.json lists for its input `set_fan_state/pepeunit`.
    async fn input_topics(&self, unit: &Device) -> Vec<String> {
        let schema = self
            .fx
            .device_json(
                &format!("/units/get_current_schema/{}", unit.uuid),
                &unit.token,
            )
            .await;
        schema["input_topic"]["set_fan_state/pepeunit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }
}

/// A asks B to peer; B's admin sees the request and accepts; both see `accepted`.
async fn peer(a: &Instance, b: &Instance) {
    let (_, body) = a
        .gql_admin(
            "mutation($a: String!) { requestPeering(address: $a) { domain status requestedHere } }",
            json!({ "a": b.url() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["requestPeering"]["status"], "requested");
    assert_eq!(body["data"]["requestPeering"]["domain"], b.domain());
    assert_eq!(b.peer_status(a).await.as_deref(), Some("pending"));
    let (_, body) = b
        .gql_admin(
            "mutation($d: String!) { acceptPeering(domain: $d) { status } }",
            json!({ "d": a.domain() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    eventually("A to see the peering accepted", || async {
        (a.peer_status(b).await.as_deref() == Some("accepted")).then_some(())
    })
    .await;
}

/// Links B's unit's output `current_temp/pepeunit` into A's unit's input; waits until A's unit's
/// schema lists the mirror's topic, and returns the link's uuid and that topic.
async fn link(a: &Instance, b: &Instance, from: &Device, into: &Device) -> (String, String) {
    let before = a.input_topics(into).await;
    let body = a
        .gql_user(
            "mutation($u: String!, $o: String!, $i: ID!) { linkRemoteOutput(unit: $u, output: $o, inputUuid: $i) { uuid } }",
            json!({
                "u": format!("{}@{}", from.uuid, b.domain()),
                "o": "current_temp/pepeunit",
                "i": into.node("set_fan_state/pepeunit"),
            }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let link = body["data"]["linkRemoteOutput"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let topic = eventually("the mirror topic in the input's schema.json", || async {
        let after = a.input_topics(into).await;
        after.into_iter().find(|t| !before.contains(t))
    })
    .await;
    (link, topic)
}

/// Waits for a message on `topic` with `payload`; other messages (commands) are skipped.
async fn receives(unit: &mut MqttUnit, topic: &str, payload: &str) {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "{payload} never arrived on {topic}"
        );
        match unit.next(Duration::from_secs(1)).await {
            Some(Seen::Message {
                topic: t,
                payload: p,
                ..
            }) if t == topic && p == payload => return,
            Some(Seen::Closed(why)) => panic!("connection closed: {why}"),
            _ => {}
        }
    }
}

/// Nothing arrives on `topic` (other topics, such as schema_update commands, may).
async fn nothing_on(unit: &mut MqttUnit, topic: &str) {
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        if let Some(Seen::Message {
            topic: t, payload, ..
        }) = unit.next(Duration::from_millis(100)).await
        {
            assert_ne!(t, topic, "{payload} still arrived on {topic}");
        }
    }
}

/// `LOCALHOST.:<port>`: the instance's domain in upper case with a trailing dot.
fn odd_spelling(instance: &Instance) -> String {
    let domain = instance.domain();
    let (host, port) = domain.split_once(':').unwrap();
    format!("{}.:{port}", host.to_uppercase())
}

/// Encrypts as pepeunit-client 1.3.0's `AesGcmCipher` does: `base64(nonce).base64(ciphertext+tag)`.
fn sync_encrypt(plaintext: &str) -> (Vec<u8>, String) {
    use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let key = aes_gcm::Aes256Gcm::generate_key(OsRng);
    let cipher = aes_gcm::Aes256Gcm::new(&key);
    let nonce = aes_gcm::Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher.encrypt(&nonce, plaintext.as_bytes()).unwrap();
    (
        key.to_vec(),
        format!("{}.{}", STANDARD.encode(nonce), STANDARD.encode(sealed)),
    )
}

fn sync_decrypt(key: &[u8], sealed: &str) -> String {
    use aes_gcm::aead::{Aead, KeyInit};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let (nonce, body) = sealed.split_once('.').unwrap();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).unwrap();
    let nonce = STANDARD.decode(nonce).unwrap();
    let plain = cipher
        .decrypt(
            aes_gcm::Nonce::from_slice(&nonce),
            STANDARD.decode(body).unwrap().as_slice(),
        )
        .unwrap();
    String::from_utf8(plain).unwrap()
}

/// Whether `text` is anywhere in the instance's database: every byte of SQLite's files, or every table a
/// value can land in on PostgreSQL.
async fn database_holds(instance: &Instance, text: &str) -> bool {
    use sea_orm::{ConnectionTrait, Statement};
    let server = instance.server();
    if !server.db.is_postgres() {
        return std::fs::read_dir(server.db.data_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("pepeunit.db"))
            .any(|e| {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                bytes.windows(text.len()).any(|w| w == text.as_bytes())
            });
    }
    let db = server.services.db();
    for (table, column) in [
        ("federation_remote_outputs", "last_value"),
        ("unit_nodes", "last_value"),
        ("unit_node_values", "value"),
        ("unit_logs", "text"),
    ] {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} LIKE $1");
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                sql,
                [format!("%{text}%").into()],
            ))
            .await
            .unwrap()
            .unwrap();
        if row.try_get::<i64>("", "n").unwrap() > 0 {
            return true;
        }
    }
    false
}

/// A unit on B publishing, connected; units on A subscribed to the mirror topic.
struct Flow {
    sensor: Device,
    sensor_mqtt: MqttUnit,
    output_topic: String,
}

async fn sensor(b: &Instance, name: &str) -> Flow {
    let sensor = device(&b.fx, name).await;
    let sensor_mqtt = sensor.connect(&b.fx).await;
    let output_topic = sensor.topic("current_temp/pepeunit");
    Flow {
        sensor,
        sensor_mqtt,
        output_topic,
    }
}

impl Flow {
    async fn publish(&self, value: &str) {
        self.sensor_mqtt
            .publish(&self.output_topic, value, QoS::AtLeastOnce)
            .await;
    }

    /// Publishes and waits for the PUBACK: B has stored the value.
    async fn publish_acked(&mut self, value: &str) {
        self.publish(value).await;
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < DEADLINE, "no PUBACK for {value}");
            match self.sensor_mqtt.next(Duration::from_secs(1)).await {
                Some(Seen::PubAck(_)) => return,
                Some(Seen::Closed(why)) => panic!("connection closed: {why}"),
                _ => {}
            }
        }
    }
}

/// Publishes from each flow until a value of each has reached `unit` on A (B's outbox knows the
/// follower and the subscriptions are in place); nothing here is timed.
async fn warm_up(flows: &[&Flow], unit: &mut MqttUnit, topics: &[&str]) {
    let started = Instant::now();
    let mut reached = vec![false; flows.len()];
    let mut n = 0;
    while reached.contains(&false) {
        assert!(started.elapsed() < DEADLINE, "no value from B arrived on A");
        n += 1;
        for (flow, done) in flows.iter().zip(&reached) {
            if !done {
                flow.publish(&format!("warmup-{n}")).await;
            }
        }
        while let Some(seen) = unit.next(Duration::from_millis(500)).await {
            if let Seen::Message { topic, .. } = &seen
                && let Some(i) = topics.iter().position(|t| t == topic)
            {
                reached[i] = true;
            }
        }
    }
}

/// Collects the values arriving on each topic of `wanted` until its newest value (the second item) has
/// arrived on every one; panics after [`DEADLINE`].
async fn values_until(unit: &mut MqttUnit, wanted: &[(&str, &str)]) -> Vec<Vec<String>> {
    let started = Instant::now();
    let mut values = vec![Vec::new(); wanted.len()];
    let mut done = vec![false; wanted.len()];
    while done.contains(&false) {
        assert!(
            started.elapsed() < DEADLINE,
            "the newest values {wanted:?} never all arrived; got {values:?}"
        );
        match unit.next(Duration::from_secs(1)).await {
            Some(Seen::Message { topic, payload, .. }) => {
                if let Some(i) = wanted.iter().position(|(t, _)| *t == topic) {
                    done[i] |= payload == wanted[i].1;
                    values[i].push(payload);
                }
            }
            Some(Seen::Closed(why)) => panic!("connection closed: {why}"),
            _ => {}
        }
    }
    values
}

/// `got` holds each value at most once and in the order `published` lists them.
fn in_order_without_duplicates(got: &[String], published: &[String]) {
    let positions: Vec<usize> = got
        .iter()
        .filter(|v| !v.starts_with("warmup-"))
        .map(|v| {
            published
                .iter()
                .position(|p| p == v)
                .unwrap_or_else(|| panic!("{v} was never published"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated: {got:?}"
    );
}

#[tokio::test]
async fn a_unit_on_one_instance_takes_values_from_a_unit_on_another_by_uuid() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    peer(&a, &b).await;
    let flow = sensor(&b, "greenhouse").await;
    let display = device(&a.fx, "display").await;
    let control = device(&a.fx, "control").await;
    let (display_link, topic) = link(&a, &b, &flow.sensor, &display).await;
    let (_, control_topic) = link(&a, &b, &flow.sensor, &control).await;
    assert_eq!(topic, control_topic, "one mirror per remote output");
    assert!(topic.starts_with(&format!("{}/", a.domain())), "{topic}");

    // B's admin sees who follows the unit; A sees the remote unit with its outputs.
    let followers = b.followers().await;
    assert_eq!(followers.len(), 1, "{followers:?}");
    assert_eq!(followers[0]["unitUuid"], flow.sensor.uuid.as_str());
    assert_eq!(followers[0]["peerDomain"], a.domain());
    let remote = a.remote_units().await;
    assert_eq!(remote[0]["status"], "accepted");
    assert_eq!(remote[0]["name"], "greenhouse");
    assert_eq!(remote[0]["outputs"][0]["name"], "current_temp/pepeunit");

    let schema_update = format!(
        "{}/input_base_topic/{}/schema_update/pepeunit",
        a.domain(),
        display.uuid
    );
    let mut display_mqtt = display.connect(&a.fx).await;
    display_mqtt.subscribe(&topic).await;
    display_mqtt.subscribe(&schema_update).await;
    let mut control_mqtt = control.connect(&a.fx).await;
    control_mqtt.subscribe(&topic).await;
    // Values flow once the subscriptions are in place and B's outbox knows the follower: publish until
    // one arrives (each attempt waits for it; nothing here is timed).
    let started = Instant::now();
    let mut n = 0;
    'warm: loop {
        assert!(started.elapsed() < DEADLINE, "no value from B arrived on A");
        n += 1;
        flow.publish(&format!("warmup-{n}")).await;
        while let Some(seen) = display_mqtt.next(Duration::from_millis(500)).await {
            if matches!(&seen, Seen::Message { topic: t, .. } if *t == topic) {
                break 'warm;
            }
        }
    }
    for value in ["21.5", "21.6", "21.7"] {
        flow.publish(value).await;
    }
    for value in ["21.5", "21.6", "21.7"] {
        receives(&mut display_mqtt, &topic, value).await;
        receives(&mut control_mqtt, &topic, value).await;
    }
    let remote = a.remote_units().await;
    assert_eq!(remote[0]["outputs"][0]["lastValue"], "21.7");

    // A value encrypted end to end with the units' SYNC_ENCRYPT_KEY (pepeunit-client's AesGcmCipher
    // format) crosses as opaque text: it decrypts at the receiving unit, and A never holds the plaintext.
    let plaintext = "greenhouse-secret-reading-42";
    let (key, sealed) = sync_encrypt(plaintext);
    flow.publish(&sealed).await;
    receives(&mut display_mqtt, &topic, &sealed).await;
    assert_eq!(sync_decrypt(&key, &sealed), plaintext);
    assert!(
        !database_holds(&a, plaintext).await,
        "the consuming instance stored the plaintext"
    );

    // Unlink: the display's schema no longer lists the topic and nothing reaches it there; the control,
    // still linked, keeps receiving.
    let body = a
        .gql_user(
            "mutation($u: ID!) { unlinkRemoteOutput(uuid: $u) }",
            json!({ "u": display_link }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    eventually("the display's schema without the mirror", || async {
        (!a.input_topics(&display).await.contains(&topic)).then_some(())
    })
    .await;
    receives(
        &mut display_mqtt,
        &schema_update,
        r#"{"COMMAND":"SchemaUpdate"}"#,
    )
    .await;
    flow.publish("22.0").await;
    receives(&mut control_mqtt, &topic, "22.0").await;
    nothing_on(&mut display_mqtt, &topic).await;
}

#[tokio::test]
async fn hiding_or_deleting_the_remote_unit_removes_its_mirror_and_links() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    peer(&a, &b).await;
    let flow = sensor(&b, "greenhouse").await;
    let display = device(&a.fx, "display").await;
    let (_, topic) = link(&a, &b, &flow.sensor, &display).await;

    // Made internal on B: A's mirror goes, the link with it.
    let body = b
        .fx
        .server
        .gql(
            "mutation($u: ID!) { updateUnit(uuid: $u, input: { visibility: INTERNAL }) { visibility } }",
            json!({ "u": flow.sensor.uuid }),
            Some(&b.fx.token),
        )
        .await
        .1;
    assert!(body["errors"].is_null(), "{body}");
    eventually("A to see the remote unit gone", || async {
        let remote = a.remote_units().await;
        (remote[0]["status"] == "gone" && remote[0]["links"].as_array().unwrap().is_empty())
            .then_some(())
    })
    .await;
    eventually("the display's schema without the mirror", || async {
        (!a.input_topics(&display).await.contains(&topic)).then_some(())
    })
    .await;
    assert!(b.followers().await.is_empty());

    // Federated again, linked again; then deleted on B.
    let body = b
        .fx
        .server
        .gql(
            "mutation($u: ID!) { updateUnit(uuid: $u, input: { visibility: FEDERATED }) { visibility } }",
            json!({ "u": flow.sensor.uuid }),
            Some(&b.fx.token),
        )
        .await
        .1;
    assert!(body["errors"].is_null(), "{body}");
    let (_, topic) = link(&a, &b, &flow.sensor, &display).await;
    let body =
        b.fx.server
            .gql(
                "mutation($u: ID!) { deleteUnit(uuid: $u) }",
                json!({ "u": flow.sensor.uuid }),
                Some(&b.fx.token),
            )
            .await
            .1;
    assert!(body["errors"].is_null(), "{body}");
    eventually("A to see the deleted unit gone", || async {
        (a.remote_units().await[0]["status"] == "gone").then_some(())
    })
    .await;
    eventually("the display's schema without the mirror", || async {
        (!a.input_topics(&display).await.contains(&topic)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn ending_the_peering_or_blocking_stops_the_flow_on_both_sides() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    peer(&a, &b).await;
    let flow = sensor(&b, "greenhouse").await;
    let display = device(&a.fx, "display").await;
    let (_, topic) = link(&a, &b, &flow.sensor, &display).await;

    // B ends the peering: A forgets the peer, its remote units and links.
    let (_, body) = b
        .gql_admin(
            "mutation($d: String!) { endPeering(domain: $d) }",
            json!({ "d": a.domain() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(b.followers().await.is_empty());
    eventually("A to forget B", || async {
        a.peer_status(&b).await.is_none().then_some(())
    })
    .await;
    assert_eq!(a.remote_units().await, json!([]));
    eventually("the display's schema without the mirror", || async {
        (!a.input_topics(&display).await.contains(&topic)).then_some(())
    })
    .await;

    // Peered and linked again, then B blocks A (spelled oddly): A is told, and may not ask again.
    peer(&a, &b).await;
    link(&a, &b, &flow.sensor, &display).await;
    let odd = format!("HTTP://{}/", odd_spelling(&a));
    let (_, body) = b
        .gql_admin(
            "mutation($a: String!) { blockInstance(address: $a) { domain status } }",
            json!({ "a": odd }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["blockInstance"]["domain"], a.domain());
    assert_eq!(body["data"]["blockInstance"]["status"], "blocked");
    assert!(b.followers().await.is_empty());
    eventually("A to forget B after the block", || async {
        a.peer_status(&b).await.is_none().then_some(())
    })
    .await;
    assert_eq!(a.remote_units().await, json!([]));
    let (_, body) = a
        .gql_admin(
            "mutation($a: String!) { requestPeering(address: $a) { status } }",
            json!({ "a": b.url() }),
        )
        .await;
    assert_eq!(common::code(&body), "FORBIDDEN", "{body}");
    assert_eq!(
        b.peers().await,
        vec![(a.domain(), "blocked".to_owned())],
        "nothing stored from a blocked instance"
    );
}

#[tokio::test]
async fn federation_off_answers_404_on_every_federation_route() {
    let a = Instance::start().await;
    let client = reqwest::Client::new();
    let actor = client
        .get(a.server().url("/federation/actor"))
        .send()
        .await
        .unwrap();
    assert_eq!(actor.status(), StatusCode::OK);
    let json: Value = actor.json().await.unwrap();
    assert_eq!(json["type"], "Application");
    assert_eq!(json["id"], format!("{}/federation/actor", a.url()));
    assert!(
        json["publicKey"]["publicKeyPem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    a.set_federation(false).await;
    for (method, path) in [
        ("GET", "/federation/actor"),
        ("POST", "/federation/inbox"),
        (
            "GET",
            "/federation/units/3f0c2a9e-6d1b-4c8a-9e7f-5b4a3c2d1e0f",
        ),
    ] {
        let response = client
            .request(method.parse().unwrap(), a.server().url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (_, body) = a
        .gql_admin(
            "mutation($a: String!) { requestPeering(address: $a) { status } }",
            json!({ "a": "http://localhost:9" }),
        )
        .await;
    assert_eq!(common::code(&body), "CONFLICT", "{body}");
}

/// The key pair is made once, sealed with the master key, and the same after a restart.
#[tokio::test]
async fn the_instance_key_is_sealed_and_kept() {
    use pepeunit_backend::entities::federation_keys;
    use sea_orm::EntityTrait;
    let a = Instance::start().await;
    let first: Value = reqwest::get(a.server().url("/federation/actor"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = federation_keys::Entity::find_by_id(federation_keys::SINGLETON_ID)
        .one(a.server().services.db())
        .await
        .unwrap()
        .unwrap();
    assert!(!row.private_key_sealed.contains("PRIVATE KEY"));
    let opened = a
        .server()
        .services
        .master_key()
        .decrypt(&row.private_key_sealed)
        .unwrap();
    assert!(String::from_utf8(opened).unwrap().contains("PRIVATE KEY"));
    assert_eq!(
        first["publicKey"]["publicKeyPem"].as_str().unwrap(),
        row.public_key_pem
    );
}

// ---------------------------------------------------------------------------------------------------
// Security: every refusal with its status, and nothing stored.

/// What B stores from others: peers, followers of its units.
async fn stored(b: &Instance) -> (Vec<(String, String)>, usize) {
    (b.peers().await, b.followers().await.len())
}

/// A request to `to`'s inbox signed with `from`'s instance key, dated `date`.
async fn signed(
    from: &Instance,
    to: &Instance,
    body: &Value,
    date: SystemTime,
) -> reqwest::Request {
    let data = from.server().services.federation().data().await.unwrap();
    let inbox = format!("{}/federation/inbox", to.url()).parse().unwrap();
    pepeunit_federation::send::signed_request(
        &data,
        &inbox,
        serde_json::to_vec(body).unwrap(),
        date,
    )
    .await
    .unwrap()
}

async fn send(request: reqwest::Request) -> StatusCode {
    reqwest::Client::new()
        .execute(request)
        .await
        .unwrap()
        .status()
}

fn activity_id(from: &Instance) -> String {
    format!(
        "{}/federation/activities/{}",
        from.url(),
        uuid::Uuid::new_v4()
    )
}

/// A Follow of `unit` on `to` by `from`'s actor.
fn follow_unit(from: &Instance, to: &Instance, unit: &str) -> Value {
    json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": activity_id(from),
        "type": "Follow",
        "actor": format!("{}/federation/actor", from.url()),
        "object": format!("{}/federation/units/{unit}", to.url()),
    })
}

#[tokio::test]
async fn forged_stale_replayed_and_unwanted_activities_are_refused_and_nothing_is_stored() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    let c = Instance::start().await;
    peer(&a, &b).await;
    let shared = device(&b.fx, "shared").await;
    let hidden =
        b.fx.create_unit(
            &b.fx.token,
            json!({ "name": "hidden", "visibility": "INTERNAL" }),
        )
        .await;
    let private =
        b.fx.create_unit(
            &b.fx.token,
            json!({ "name": "mine", "visibility": "PRIVATE" }),
        )
        .await;
    let before = stored(&b).await;
    let inbox = format!("{}/inbox", b.server().url("/federation"));
    let now = SystemTime::now();

    // Unsigned.
    let response = reqwest::Client::new()
        .post(&inbox)
        .header("content-type", "application/activity+json")
        .json(&follow_unit(&a, &b, &shared.uuid))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "unsigned");

    // Signed by another instance's key (C's) while claiming to be A.
    let forged = signed(&c, &b, &follow_unit(&a, &b, &shared.uuid), now).await;
    assert_eq!(
        send(forged).await,
        StatusCode::UNAUTHORIZED,
        "another host's key"
    );

    // A stale and a future Date, signed properly.
    for date in [
        now - Duration::from_secs(3600),
        now + Duration::from_secs(3600),
    ] {
        let request = signed(&a, &b, &follow_unit(&a, &b, &shared.uuid), date).await;
        assert_eq!(
            send(request).await,
            StatusCode::UNAUTHORIZED,
            "date {date:?}"
        );
    }

    // The body changed after signing.
    let mut changed = signed(&a, &b, &follow_unit(&a, &b, &shared.uuid), now).await;
    let other = serde_json::to_vec(&follow_unit(&a, &b, hidden["uuid"].as_str().unwrap())).unwrap();
    *changed.body_mut() = Some(other.into());
    assert_eq!(
        send(changed).await,
        StatusCode::UNAUTHORIZED,
        "digest mismatch"
    );

    // From an instance that is not a peer (properly signed by C, as C).
    let request = signed(&c, &b, &follow_unit(&c, &b, &shared.uuid), now).await;
    assert_eq!(send(request).await, StatusCode::FORBIDDEN, "not a peer");

    // Follows of internal and private units: not found, as if they did not exist.
    for unit in [&hidden, &private] {
        let uuid = unit["uuid"].as_str().unwrap();
        let request = signed(&a, &b, &follow_unit(&a, &b, uuid), now).await;
        assert_eq!(
            send(request).await,
            StatusCode::NOT_FOUND,
            "follow of {uuid}"
        );
    }

    // Larger than the inbox takes.
    let huge = json!({ "id": activity_id(&a), "padding": "x".repeat(2 * 1024 * 1024) });
    let request = signed(&a, &b, &huge, now).await;
    assert_eq!(
        send(request).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "oversized"
    );

    assert_eq!(
        stored(&b).await,
        before,
        "nothing stored by refused activities"
    );

    // A replay: the same signed request twice; the second is refused and changes nothing.
    let valid = follow_unit(&a, &b, &shared.uuid);
    let first = signed(&a, &b, &valid, now).await;
    let again = first.try_clone().unwrap();
    assert_eq!(send(first).await, StatusCode::ACCEPTED, "the original");
    let after_first = stored(&b).await;
    assert_eq!(after_first.1, 1, "the valid follow is stored");
    assert_eq!(send(again).await, StatusCode::CONFLICT, "the replay");
    assert_eq!(stored(&b).await, after_first);

    // Blocked in any spelling: C's requests to peer are refused.
    let spelled = odd_spelling(&c);
    let (_, body) = b
        .gql_admin(
            "mutation($a: String!) { blockInstance(address: $a) { domain } }",
            json!({ "a": spelled }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["blockInstance"]["domain"], c.domain());
    let ask = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": activity_id(&c),
        "type": "Follow",
        "actor": format!("{}/federation/actor", c.url()),
        "object": format!("{}/federation/actor", b.url()),
    });
    let blocked_before = stored(&b).await;
    let request = signed(&c, &b, &ask, now).await;
    assert_eq!(send(request).await, StatusCode::FORBIDDEN, "blocked");
    assert_eq!(stored(&b).await, blocked_before);
}

#[tokio::test]
async fn an_unknown_instance_may_only_ask_to_peer_and_waits_for_an_admin() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    let (_, body) = a
        .gql_admin(
            "mutation($a: String!) { requestPeering(address: $a) { status } }",
            json!({ "a": b.url() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(b.peer_status(&a).await.as_deref(), Some("pending"));
    // Rejected: A sees it, B keeps nothing.
    let (_, body) = b
        .gql_admin(
            "mutation($d: String!) { rejectPeering(domain: $d) }",
            json!({ "d": a.domain() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(b.peers().await.is_empty());
    eventually("A to see the refusal", || async {
        (a.peer_status(&b).await.as_deref() == Some("rejected")).then_some(())
    })
    .await;
    // A user cannot link a unit of an instance that is not a peer.
    let display = device(&a.fx, "display").await;
    let body = a
        .gql_user(
            "mutation($u: String!, $i: ID!) { linkRemoteOutput(unit: $u, output: \"current_temp/pepeunit\", inputUuid: $i) { uuid } }",
            json!({ "u": format!("{}@{}", uuid::Uuid::new_v4(), b.domain()), "i": display.node("set_fan_state/pepeunit") }),
        )
        .await;
    assert_eq!(common::code(&body), "VALIDATION", "{body}");
    // Only admins manage peers.
    let (_, body) = a
        .server()
        .gql(
            "{ federationPeers { domain } }",
            json!({}),
            Some(&a.fx.token),
        )
        .await;
    assert_eq!(common::code(&body), "FORBIDDEN", "{body}");
}

/// The instances blocked from `unit` on `instance`, as its creator sees them.
async fn unit_blocks(instance: &Instance, unit: &Device) -> Vec<String> {
    let body = instance
        .gql_user(
            "query($u: ID!) { unitBlockedInstances(unitUuid: $u) { domain } }",
            json!({ "u": unit.uuid }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["unitBlockedInstances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["domain"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_unit_owner_blocks_one_instance_from_one_unit() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    peer(&a, &b).await;
    let greenhouse = sensor(&b, "greenhouse").await;
    let barn = sensor(&b, "barn").await;
    let display = device(&a.fx, "display").await;
    let control = device(&a.fx, "control").await;
    let (_, topic) = link(&a, &b, &greenhouse.sensor, &display).await;
    let (_, barn_topic) = link(&a, &b, &barn.sensor, &control).await;
    assert_eq!(b.followers().await.len(), 2);

    // Another user of B may not block A from alice's unit.
    let (_, bob) = b.server().user("bob").await;
    let body = b
        .server()
        .gql(
            "mutation($u: ID!, $a: String!) { blockInstanceForUnit(unitUuid: $u, address: $a) { domain } }",
            json!({ "u": greenhouse.sensor.uuid, "a": a.domain() }),
            Some(&bob),
        )
        .await
        .1;
    assert_eq!(common::code(&body), "FORBIDDEN", "{body}");

    // Alice blocks A (spelled oddly) from the greenhouse only: A's follow of it ends, its mirror becomes
    // unavailable and the display's link goes; the barn keeps flowing to the control.
    let body = b
        .gql_user(
            "mutation($u: ID!, $a: String!) { blockInstanceForUnit(unitUuid: $u, address: $a) { domain unitUuid } }",
            json!({ "u": greenhouse.sensor.uuid, "a": format!("http://{}/", odd_spelling(&a)) }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["blockInstanceForUnit"]["domain"], a.domain());
    assert_eq!(unit_blocks(&b, &greenhouse.sensor).await, vec![a.domain()]);
    assert!(unit_blocks(&b, &barn.sensor).await.is_empty());
    let followers = b.followers().await;
    assert_eq!(followers.len(), 1, "{followers:?}");
    assert_eq!(followers[0]["unitUuid"], barn.sensor.uuid.as_str());
    let greenhouse_address = format!("{}@{}", greenhouse.sensor.uuid, b.domain());
    eventually("A to see the greenhouse gone", || async {
        let remote = a.remote_units().await;
        let unit = remote
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == greenhouse_address.as_str())?
            .clone();
        (unit["status"] == "gone"
            && unit["links"].as_array().unwrap().is_empty()
            && unit["outputs"].as_array().unwrap().is_empty())
        .then_some(())
    })
    .await;
    eventually("the display's schema without the mirror", || async {
        (!a.input_topics(&display).await.contains(&topic)).then_some(())
    })
    .await;
    assert!(a.input_topics(&control).await.contains(&barn_topic));
    assert!(b.peer_status(&a).await.as_deref() == Some("accepted"));

    // A may neither follow the greenhouse again nor read it; the barn is still readable.
    let body = a
        .gql_user(
            "mutation($u: String!, $o: String!, $i: ID!) { linkRemoteOutput(unit: $u, output: $o, inputUuid: $i) { uuid } }",
            json!({
                "u": greenhouse_address,
                "o": "current_temp/pepeunit",
                "i": display.node("set_fan_state/pepeunit"),
            }),
        )
        .await;
    assert_eq!(common::code(&body), "FORBIDDEN", "{body}");
    let preview = "query($u: String!) { previewRemoteUnit(address: $u) { name } }";
    let body = a
        .gql_user(preview, json!({ "u": greenhouse_address }))
        .await;
    assert_eq!(common::code(&body), "FORBIDDEN", "{body}");
    let body = a
        .gql_user(
            preview,
            json!({ "u": format!("{}@{}", barn.sensor.uuid, b.domain()) }),
        )
        .await;
    assert_eq!(body["data"]["previewRemoteUnit"]["name"], "barn", "{body}");
    assert_eq!(
        b.followers().await.len(),
        1,
        "nothing stored by the refusals"
    );

    // Unblocked: A links the greenhouse again.
    let body = b
        .gql_user(
            "mutation($u: ID!, $d: String!) { unblockInstanceForUnit(unitUuid: $u, domain: $d) }",
            json!({ "u": greenhouse.sensor.uuid, "d": a.domain() }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(unit_blocks(&b, &greenhouse.sensor).await.is_empty());
    link(&a, &b, &greenhouse.sensor, &display).await;
    assert_eq!(b.followers().await.len(), 2);
}

#[tokio::test]
async fn a_user_previews_a_remote_units_outputs_before_linking() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    let flow = sensor(&b, "greenhouse").await;
    let address = format!("{}@{}", flow.sensor.uuid, b.domain());
    let query = "query($u: String!) { previewRemoteUnit(address: $u) { address peerDomain name outputs { remoteUuid name lastValue lastValueAt } } }";

    // Not a peer yet: refused, and nothing is asked of B.
    let body = a.gql_user(query, json!({ "u": address })).await;
    assert_eq!(common::code(&body), "VALIDATION", "{body}");

    peer(&a, &b).await;
    flow.publish("19.5").await;
    let preview = eventually("the preview with the last value", || async {
        let body = a.gql_user(query, json!({ "u": address })).await;
        assert!(body["errors"].is_null(), "{body}");
        let preview = body["data"]["previewRemoteUnit"].clone();
        let outputs = preview["outputs"].as_array().unwrap().clone();
        outputs
            .iter()
            .any(|o| o["name"] == "current_temp/pepeunit" && o["lastValue"] == "19.5")
            .then_some(preview)
    })
    .await;
    assert_eq!(preview["name"], "greenhouse");
    assert_eq!(preview["address"], address);
    assert_eq!(preview["peerDomain"], b.domain());
    assert_eq!(
        preview["outputs"][0]["remoteUuid"],
        flow.sensor.node("current_temp/pepeunit")
    );
    // By URL too.
    let url = format!("{}/federation/units/{}", b.url(), flow.sensor.uuid);
    let body = a.gql_user(query, json!({ "u": url })).await;
    assert_eq!(
        body["data"]["previewRemoteUnit"]["name"], "greenhouse",
        "{body}"
    );

    // Previewing neither follows nor links.
    assert_eq!(a.remote_units().await, json!([]));
    assert!(b.followers().await.is_empty());

    // An internal unit, or one that does not exist, is not shown.
    let hidden = device(&b.fx, "hidden").await;
    let body = b
        .gql_user(
            "mutation($u: ID!) { updateUnit(uuid: $u, input: { visibility: INTERNAL }) { visibility } }",
            json!({ "u": hidden.uuid }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    for unit in [hidden.uuid.clone(), uuid::Uuid::new_v4().to_string()] {
        let body = a
            .gql_user(query, json!({ "u": format!("{unit}@{}", b.domain()) }))
            .await;
        assert_eq!(common::code(&body), "VALIDATION", "{body}");
    }

    // The unit's URL answers only a signed request from a peer.
    let response = reqwest::Client::new()
        .get(
            b.server()
                .url(&format!("/federation/units/{}", flow.sensor.uuid)),
        )
        .header("accept", "application/activity+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------------
// Restarts: the newest value of each linked output is not lost.

/// The restart tests' set-up: two sensors on B, each linked into one display unit on A.
struct TwoSensors {
    greenhouse: Flow,
    barn: Flow,
    display: Device,
    greenhouse_topic: String,
    barn_topic: String,
}

impl TwoSensors {
    /// Links them and returns them with the display connected, subscribed and warmed up.
    async fn linked(a: &Instance, b: &Instance) -> (Self, MqttUnit) {
        let greenhouse = sensor(b, "greenhouse").await;
        let barn = sensor(b, "barn").await;
        let display = device(&a.fx, "display").await;
        let (_, greenhouse_topic) = link(a, b, &greenhouse.sensor, &display).await;
        let (_, barn_topic) = link(a, b, &barn.sensor, &display).await;
        let mut display_mqtt = display.connect(&a.fx).await;
        display_mqtt.subscribe(&greenhouse_topic).await;
        display_mqtt.subscribe(&barn_topic).await;
        warm_up(
            &[&greenhouse, &barn],
            &mut display_mqtt,
            &[greenhouse_topic.as_str(), barn_topic.as_str()],
        )
        .await;
        let sensors = Self {
            greenhouse,
            barn,
            display,
            greenhouse_topic,
            barn_topic,
        };
        (sensors, display_mqtt)
    }
}

/// A's values while it was down: B keeps them and sends them once A is back; A's unit, which connects
/// again after the restart, gets the newest value of each output, with samples applied in order and
/// none twice.
#[tokio::test]
async fn the_newest_value_of_each_output_reaches_an_instance_that_restarted() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    peer(&a, &b).await;
    let (
        TwoSensors {
            mut greenhouse,
            mut barn,
            display,
            greenhouse_topic,
            barn_topic,
        },
        display_mqtt,
    ) = TwoSensors::linked(&a, &b).await;
    drop(display_mqtt);

    // A stops; B's units go on publishing and B acknowledges (stores) every value.
    let stopped = a.stop().await;
    let mut published = Vec::new();
    for i in 1..=5 {
        let value = format!("while-a-was-down-{i}");
        greenhouse.publish_acked(&value).await;
        barn.publish_acked(&format!("barn-{value}")).await;
        published.push(value);
    }
    let a = stopped.start().await;
    let mut display_mqtt = display.connect(&a.fx).await;
    display_mqtt.subscribe(&greenhouse_topic).await;
    display_mqtt.subscribe(&barn_topic).await;
    let newest = published.last().unwrap().clone();
    let barn_published: Vec<String> = published.iter().map(|v| format!("barn-{v}")).collect();
    let got = values_until(
        &mut display_mqtt,
        &[
            (greenhouse_topic.as_str(), newest.as_str()),
            (barn_topic.as_str(), barn_published.last().unwrap().as_str()),
        ],
    )
    .await;
    in_order_without_duplicates(&got[0], &published);
    in_order_without_duplicates(&got[1], &barn_published);
    eventually("A to show the newest values", || async {
        let remote = a.remote_units().await;
        let last: Vec<Value> = remote
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outputs"][0]["lastValue"].clone())
            .collect();
        (last.contains(&json!(newest)) && last.contains(&json!(format!("barn-{newest}"))))
            .then_some(())
    })
    .await;

    // And on from there: a value after the restart arrives once, after the others.
    greenhouse.publish("after-the-restart").await;
    let got = values_until(
        &mut display_mqtt,
        &[(greenhouse_topic.as_str(), "after-the-restart")],
    )
    .await;
    assert_eq!(got[0], vec!["after-the-restart".to_owned()]);
}

/// B, the home instance, stops right after acknowledging (storing) its units' values, and starts again:
/// A still gets the newest value of each output, in order and none twice. First with A up (what B had
/// not sent yet goes at its stop or at its start); then with A down as well, so that B's queue for A
/// can only be lost with B's memory and the newest values can only come from B's database at its start.
/// The stop also ends B's MQTT connections and its ingestion before its database closes: the units
/// connect again to the new B and their values after the restart arrive too.
#[tokio::test]
async fn the_newest_value_of_each_output_reaches_a_peer_after_the_home_instance_restarted() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    peer(&a, &b).await;
    let (
        TwoSensors {
            mut greenhouse,
            mut barn,
            display,
            greenhouse_topic,
            barn_topic,
        },
        mut display_mqtt,
    ) = TwoSensors::linked(&a, &b).await;

    // B stops right after its PUBACKs, and starts again.
    let mut published = Vec::new();
    for i in 1..=3 {
        let value = format!("right-before-b-stopped-{i}");
        greenhouse.publish_acked(&value).await;
        barn.publish_acked(&format!("barn-{value}")).await;
        published.push(value);
    }
    let b = b.stop().await.start().await;
    let barn_published: Vec<String> = published.iter().map(|v| format!("barn-{v}")).collect();
    let got = values_until(
        &mut display_mqtt,
        &[
            (
                greenhouse_topic.as_str(),
                published.last().unwrap().as_str(),
            ),
            (barn_topic.as_str(), barn_published.last().unwrap().as_str()),
        ],
    )
    .await;
    in_order_without_duplicates(&got[0], &published);
    in_order_without_duplicates(&got[1], &barn_published);

    // The units connect again to the new B; what they publish now arrives.
    greenhouse.sensor_mqtt = greenhouse.sensor.connect(&b.fx).await;
    barn.sensor_mqtt = barn.sensor.connect(&b.fx).await;
    greenhouse.publish_acked("after-b-restarted").await;
    let got = values_until(
        &mut display_mqtt,
        &[(greenhouse_topic.as_str(), "after-b-restarted")],
    )
    .await;
    assert_eq!(got[0], vec!["after-b-restarted".to_owned()]);
    drop(display_mqtt);

    // A goes down; B acknowledges values it cannot send, and stops right after; then both start.
    let a_stopped = a.stop().await;
    let mut published = Vec::new();
    for i in 1..=3 {
        let value = format!("while-a-was-down-{i}");
        greenhouse.publish_acked(&value).await;
        barn.publish_acked(&format!("barn-{value}")).await;
        published.push(value);
    }
    let b_stopped = b.stop().await;
    let a = a_stopped.start().await;
    let _b = b_stopped.start().await;
    let mut display_mqtt = display.connect(&a.fx).await;
    display_mqtt.subscribe(&greenhouse_topic).await;
    display_mqtt.subscribe(&barn_topic).await;
    let barn_published: Vec<String> = published.iter().map(|v| format!("barn-{v}")).collect();
    let got = values_until(
        &mut display_mqtt,
        &[
            (
                greenhouse_topic.as_str(),
                published.last().unwrap().as_str(),
            ),
            (barn_topic.as_str(), barn_published.last().unwrap().as_str()),
        ],
    )
    .await;
    // The retained value A kept from before its stop may come first.
    let mut greenhouse_seen = published.clone();
    greenhouse_seen.insert(0, "after-b-restarted".into());
    in_order_without_duplicates(&got[0], &greenhouse_seen);
    let mut barn_seen = barn_published.clone();
    barn_seen.insert(
        0,
        barn_published[0].replace("while-a-was-down-1", "right-before-b-stopped-3"),
    );
    in_order_without_duplicates(&got[1], &barn_seen);
}
