//! Start-up failures are clean errors naming the setting to change, never panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::TestDb;
use common::units::Fixture;
use pepeunit_backend::config::Secret;
use serde_json::json;

fn pepeunit(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pepeunit"));
    command
        .env_clear()
        .env("PEPEUNIT_DATA_DIR", data_dir)
        .env("PEPEUNIT_HTTP_BIND", "127.0.0.1:0")
        .env("PEPEUNIT_MQTT_BIND", "127.0.0.1:0")
        .stdin(Stdio::null());
    command
}

#[tokio::test]
async fn corrupt_sqlite_file_names_the_setting() {
    let db = TestDb::new().await;
    let mut config = db.config();
    config.database_url = None;
    std::fs::create_dir_all(&config.data_dir).unwrap();
    std::fs::write(config.data_dir.join("pepeunit.db"), vec![0x42u8; 8192]).unwrap();
    let error = pepeunit_backend::build(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("PEPEUNIT_DATABASE_URL"), "{error}");

    let output = pepeunit(&db.data_dir()).arg("serve").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PEPEUNIT_DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn unreachable_postgres_names_the_setting_and_hides_the_password() {
    let db = TestDb::new().await;
    let mut config = db.config();
    config.database_url = Some(Secret::new(
        "postgres://pepeunit:hunter2@127.0.0.1:1/pepeunit",
    ));
    let error = pepeunit_backend::build(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("PEPEUNIT_DATABASE_URL"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn port_in_use_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = pepeunit(&data)
        .env("PEPEUNIT_HTTP_BIND", &addr)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PEPEUNIT_HTTP_BIND"), "{stderr}");
    assert!(!data.exists(), "the data directory was created: {stderr}");
}

#[test]
fn explicit_mqtt_port_in_use_names_the_setting_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = pepeunit(&data)
        .env("PEPEUNIT_MQTT_BIND", &addr)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PEPEUNIT_MQTT_BIND"), "{stderr}");
    assert!(!data.exists(), "the data directory was created: {stderr}");

    // The same address in a config file is explicit too.
    let file = dir.path().join("pepeunit.toml");
    std::fs::write(&file, format!("mqtt_bind = \"{addr}\"\n")).unwrap();
    let output = pepeunit(&data)
        .env_remove("PEPEUNIT_MQTT_BIND")
        .env("PEPEUNIT_CONFIG", &file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PEPEUNIT_MQTT_BIND"), "{stderr}");
    assert!(!data.exists(), "the data directory was created: {stderr}");
}

/// The default MQTT port taken (here by a listener of the test) with `mqtt_bind` not set: the broker
/// listens on another port, new units' env.json names it, a unit connects there and GraphQL shows it.
#[tokio::test]
async fn taken_default_mqtt_port_falls_back_and_units_connect_there() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let default = taken.local_addr().unwrap();
    let fx = Fixture::with_config(
        |_| {},
        |c| {
            c.mqtt_bind = default;
            c.mqtt_bind_explicit = false;
        },
    )
    .await;
    let bound = fx.server.mqtt.port();
    assert_ne!(bound, default.port());

    let unit = fx.create_unit(&fx.token, json!({ "name": "fan" })).await;
    let uuid = unit["uuid"].as_str().unwrap();
    let env = fx.env(&fx.token, uuid).await;
    assert_eq!(env["PU_MQTT_PORT"], json!(bound), "{env}");
    let token = fx.unit_token(uuid).await;
    common::mqtt::connect(&fx.server, uuid, &token)
        .await
        .expect("the unit connects on the port in its env.json");

    let (_, body) = fx
        .server
        .gql("{ mqttBroker { port defaultPortTaken } }", json!({}), None)
        .await;
    assert_eq!(
        body["data"]["mqttBroker"],
        json!({ "port": bound, "defaultPortTaken": default.port() }),
        "{body}"
    );
}

/// The binary on a machine where 127.0.0.1:1883 is taken (by Mosquitto, or else by this test) comes up,
/// says so in its log, and its broker answers MQTT on the port it names.
#[tokio::test]
async fn first_run_with_1883_taken_comes_up_serving() {
    // Whoever holds 1883, it stays taken while this test runs.
    let _held = std::net::TcpListener::bind("127.0.0.1:1883");
    assert!(std::net::TcpListener::bind("127.0.0.1:1883").is_err());
    let dir = tempfile::tempdir().unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = pepeunit(&dir.path().join("data"))
        .env_remove("PEPEUNIT_MQTT_BIND")
        .env("PEPEUNIT_HTTP_BIND", http.to_string())
        .env("PEPEUNIT_PUBLIC_URL", format!("http://{http}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let mut log = String::new();
    while !log.contains("listening") || !log.contains(&http.to_string()) {
        match seen.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(_) => panic!("the server did not come up:\n{log}"),
        }
    }
    assert!(
        log.contains("THE DEFAULT MQTT PORT 1883 IS IN USE"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log}"
    );

    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{http}/graphql"))
        .json(&json!({ "query": "{ mqttBroker { port defaultPortTaken } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let broker = &body["data"]["mqttBroker"];
    assert_eq!(broker["defaultPortTaken"], json!(1883), "{body}");
    let port = u16::try_from(broker["port"].as_u64().unwrap()).unwrap();
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");

    // An MQTT CONNECT with a wrong token gets the broker's refusal (a CONNACK), not a closed socket.
    let mut options = rumqttc::MqttOptions::new("nobody", "127.0.0.1", port);
    options.set_credentials("not-a-token", "");
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 4);
    let refused = tokio::time::timeout(std::time::Duration::from_secs(30), events.poll())
        .await
        .expect("the broker answers");
    assert!(
        matches!(
            refused,
            Err(rumqttc::ConnectionError::ConnectionRefused(_))
                | Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))
        ),
        "{refused:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cli_creates_an_admin_and_prints_a_masked_config() {
    let dir = tempfile::tempdir().unwrap();
    let output = pepeunit(dir.path())
        .args([
            "admin",
            "create",
            "--login",
            "root",
            "--email",
            "root@example.com",
        ])
        .env("PEPEUNIT_ADMIN_PASSWORD", "a-long-admin-password")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("admin root created"));

    let again = pepeunit(dir.path())
        .args([
            "admin",
            "create",
            "--login",
            "root",
            "--email",
            "root2@example.com",
        ])
        .env("PEPEUNIT_ADMIN_PASSWORD", "a-long-admin-password")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already taken"));

    let output = pepeunit(dir.path())
        .arg("config")
        .env(
            "PEPEUNIT_SECRET_KEY",
            "a-secret-key-that-is-long-enough-0123456789",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(stdout.contains("secret_key = \"********\""), "{stdout}");
    assert!(!stdout.contains("long-enough"), "{stdout}");
}

#[test]
fn a_piped_admin_password_is_read_without_a_prompt() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = pepeunit(dir.path())
        .args([
            "admin",
            "create",
            "--login",
            "root",
            "--email",
            "root@example.com",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-long-admin-password\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("password"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("admin root created"));
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = pepeunit(dir.path())
        .env("PEPEUNIT_HTTP_BIND", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("shutdown requested") && stderr.contains("stopped"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a piped log: {stderr}"
    );
}

#[test]
fn first_admin_can_add_the_standard_repositories() {
    let remotes = tempfile::tempdir().unwrap();
    let source = common::git::SourceRepo::firmware(remotes.path(), "standard-fan");
    let dir = tempfile::tempdir().unwrap();
    let urls = format!("{},https://nonexistent.invalid/x.git", source.file_url());
    let output = pepeunit(dir.path())
        .args([
            "admin",
            "create",
            "--login",
            "root",
            "--email",
            "root@example.com",
            "--with-standard-repositories",
        ])
        .env("PEPEUNIT_ADMIN_PASSWORD", "a-long-admin-password")
        .env("PEPEUNIT_STANDARD_REPOSITORIES", urls)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("1 standard repositories added"), "{stdout}");
    assert!(
        stderr.contains("nonexistent.invalid/x.git not added"),
        "{stderr}"
    );
    let mirrors = std::fs::read_dir(dir.path().join("repositories"))
        .unwrap()
        .count();
    assert_eq!(mirrors, 1);
}
