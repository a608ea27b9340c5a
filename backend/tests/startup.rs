//! Start-up failures are clean errors naming the setting to change, never panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::TestDb;
use pepeunit_backend::config::Secret;

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
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = pepeunit(dir.path())
        .env("PEPEUNIT_HTTP_BIND", &addr)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PEPEUNIT_HTTP_BIND"), "{stderr}");
}

#[test]
fn mqtt_port_in_use_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = pepeunit(dir.path())
        .env("PEPEUNIT_MQTT_BIND", &addr)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PEPEUNIT_MQTT_BIND"), "{stderr}");
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
