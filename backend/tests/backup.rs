//! Backup and restore of a whole instance, taken from a running server and restored into a fresh
//! database: on the test engine (SQLite, or PostgreSQL with PEPEUNIT_TEST_DATABASE_URL) and across engines.
//! After a restore a new server on the target serves the same users, units, tokens, history and
//! repositories; damaged archives and occupied targets are refused with nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mqtt::Seen;
use common::units::{Device, Fixture, device, node};
use common::{PASSWORD, TestDb, TestServer};
use pepeunit_backend::backup::{self, BackupError, Manifest, tables};
use rumqttc::QoS;
use serde_json::{Value, json};

/// Keeps every value of the node: the default keeps only the last one.
async fn keep_history(fx: &Fixture, device: &Device) {
    let (_, body) = fx
        .server
        .gql(
            "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: WINDOW, historyWindowSeconds: 31536000 }) { uuid } }",
            json!({ "n": device.node("current_temp/pepeunit") }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

/// Publishes `value` at QoS 1 and waits for its PUBACK.
async fn publish_acked(unit: &mut common::mqtt::MqttUnit, topic: &str, value: &str) {
    unit.publish(topic, value, QoS::AtLeastOnce).await;
    loop {
        match unit.next(Duration::from_secs(60)).await {
            Some(Seen::PubAck(_)) => return,
            Some(Seen::Message { .. }) => {}
            other => panic!("expected a PUBACK, saw {other:?}"),
        }
    }
}

/// The stored values of a unit's `current_temp` output, as its owner reads them.
async fn history(server: &TestServer, token: &str, unit: &str) -> Vec<String> {
    let (_, body) = server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { nodes { topicName history(limit: 100000) { value } } } }",
            json!({ "u": unit }),
            Some(token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    node(&body["data"]["unit"], "current_temp/pepeunit")["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap().to_owned())
        .collect()
}

async fn login(server: &TestServer, login: &str) -> String {
    let (_, body) = server.login(login, PASSWORD).await;
    body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{login} cannot log in: {body}"))
        .to_owned()
}

/// An instance with a mirrored repo_unit, a unit with a history, and a link.
struct Source {
    fx: Fixture,
    sensor: Device,
    values: Vec<String>,
}

async fn source(db: TestDb) -> Source {
    let fx = Fixture::on(db, |_| {}, |_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    keep_history(&fx, &sensor).await;
    let mut unit = sensor.connect(&fx).await;
    let topic = sensor.topic("current_temp/pepeunit");
    let values: Vec<String> = (0..5).map(|i| format!("2{i}.5")).collect();
    for value in &values {
        publish_acked(&mut unit, &topic, value).await;
    }
    Source { fx, sensor, values }
}

fn archive_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("instance.pepeunit-backup")
}

/// Every table of the restored database holds the manifest's rows.
async fn counts_match(server: &TestServer, manifest: &Manifest) {
    for table in &manifest.tables {
        let rows = tables::count(server.services.db(), &table.table)
            .await
            .unwrap();
        assert_eq!(rows, table.rows, "rows of {}", table.table);
    }
}

/// A new server on the restored `target` serves what `src` had.
async fn check_restored(src: &Source, target: TestDb, manifest: &Manifest) -> TestServer {
    let server = TestServer::start_on(target, |c| c.allow_local_remotes = true).await;
    counts_match(&server, manifest).await;
    assert!(manifest.rows("unit_node_values").unwrap() >= src.values.len() as u64);
    // The owner logs in with the same password and reads the unit's history.
    let token = login(&server, "alice").await;
    let mut kept = history(&server, &token, &src.sensor.uuid).await;
    kept.sort();
    assert_eq!(kept, src.values);
    // env.json decrypts under the restored master key and still carries the unit's token.
    let env: Value = server
        .client
        .get(server.url(&format!("/api/v1/units/env/{}", src.sensor.uuid)))
        .header("x-auth-token", &src.sensor.token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(env["PU_AUTH_TOKEN"], src.sensor.token.as_str());
    // The unit's token connects to the new broker and its values are stored again.
    let mut unit = common::mqtt::connect(&server, &src.sensor.uuid, &src.sensor.token)
        .await
        .expect("the restored unit's token is accepted");
    let topic = src.sensor.topic("current_temp/pepeunit");
    let topic = topic.replacen(
        src.fx.server.base.trim_start_matches("http://"),
        server.base.trim_start_matches("http://"),
        1,
    );
    publish_acked(&mut unit, &topic, "30.5").await;
    assert!(
        history(&server, &token, &src.sensor.uuid)
            .await
            .contains(&"30.5".to_owned())
    );
    // The repository mirror came back: its branches are read from the restored files.
    let (_, body) = server
        .gql(
            "query($u: ID!) { repoUnit(uuid: $u) { branches { name } } }",
            json!({ "u": src.fx.repo_unit }),
            Some(&token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let branches = body["data"]["repoUnit"]["branches"].as_array().unwrap();
    assert!(
        branches.iter().any(|b| b["name"] == "main"),
        "branches after restore: {body}"
    );
    server
}

/// Nothing of the instance is in the target: no secrets, no repositories, no schema.
async fn nothing_written(target: &TestDb) {
    let config = target.config();
    assert!(!config.secrets_path().exists(), "secrets written");
    assert!(!config.repositories_dir().exists(), "repositories written");
    match &target.url {
        None => assert!(
            !target.data_dir().join("pepeunit.db").exists(),
            "the SQLite database was created"
        ),
        Some(url) => {
            let db = sea_orm::Database::connect(url).await.unwrap();
            let row = sea_orm::ConnectionTrait::query_one_raw(
                &db,
                sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT COUNT(*)::bigint AS n FROM information_schema.tables WHERE table_schema = 'public'",
                ),
            )
            .await
            .unwrap()
            .unwrap();
            let tables: i64 = row.try_get("", "n").unwrap();
            assert_eq!(tables, 0, "tables were created");
            db.close().await.ok();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_restores_logins_tokens_history_and_repositories() {
    let src = source(TestDb::new().await).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_path(&dir);
    let manifest = backup::create(&src.fx.server.db.config(), &archive, None)
        .await
        .unwrap();
    assert_eq!(manifest.pepeunit_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest.tables.len(), tables::TABLES.len());
    assert!(manifest.members.contains_key("secrets.toml"));
    assert!(
        manifest
            .members
            .keys()
            .any(|m| m.starts_with("repositories/"))
    );
    let target = TestDb::new().await;
    let restored = backup::restore(&target.config(), &archive, None, false)
        .await
        .unwrap();
    assert_eq!(restored, manifest);
    check_restored(&src, target, &manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_moves_to_postgresql_and_back() {
    if std::env::var("PEPEUNIT_TEST_DATABASE_URL").is_err() {
        eprintln!("skipped: PEPEUNIT_TEST_DATABASE_URL is not set");
        return;
    }
    let src = source(TestDb::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_path(&dir);
    let manifest = backup::create(&src.fx.server.db.config(), &archive, None)
        .await
        .unwrap();
    assert_eq!(manifest.database_engine, "sqlite");
    let postgres = TestDb::new().await;
    assert!(postgres.is_postgres());
    backup::restore(&postgres.config(), &archive, None, false)
        .await
        .unwrap();
    let on_postgres = check_restored(&src, postgres, &manifest).await;
    // New rows get fresh ids after the restored ones (the sequences were moved).
    // And back: a backup of the PostgreSQL instance restores into SQLite.
    let back = dir.path().join("back.pepeunit-backup");
    let manifest = backup::create(&on_postgres.db.config(), &back, None)
        .await
        .unwrap();
    assert_eq!(manifest.database_engine, "postgres");
    let sqlite = TestDb::sqlite();
    backup::restore(&sqlite.config(), &back, None, false)
        .await
        .unwrap();
    let server = TestServer::start_on(sqlite, |_| {}).await;
    counts_match(&server, &manifest).await;
    let token = login(&server, "alice").await;
    let kept = history(&server, &token, &src.sensor.uuid).await;
    assert_eq!(kept.len(), src.values.len() + 1, "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_units_publish_holds_every_value_acknowledged_before_it() {
    let fx = Fixture::new(|_| {}).await;
    let mut devices = Vec::new();
    for i in 0..20 {
        let d = device(&fx, &format!("Meter{i}")).await;
        keep_history(&fx, &d).await;
        devices.push(d);
    }
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for d in &devices {
        let mut unit = d.connect(&fx).await;
        let topic = d.topic("current_temp/pepeunit");
        let (uuid, acked, stop) = (d.uuid.clone(), acked.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let value = i.to_string();
                publish_acked(&mut unit, &topic, &value).await;
                acked.lock().unwrap().push((uuid.clone(), value));
                i += 1;
            }
        }));
    }
    // Every unit has had values acknowledged; the backup starts with them in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "units are not publishing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = acked.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_path(&dir);
    let manifest = backup::create(&fx.server.db.config(), &archive, None)
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for p in publishers {
        p.await.unwrap();
    }
    let during = acked.lock().unwrap().len();
    let target = TestDb::new().await;
    backup::restore(&target.config(), &archive, None, false)
        .await
        .unwrap();
    let server = TestServer::start_on(target, |c| c.allow_local_remotes = true).await;
    counts_match(&server, &manifest).await;
    let token = login(&server, "alice").await;
    let mut restored = std::collections::HashSet::new();
    for d in &devices {
        for value in history(&server, &token, &d.uuid).await {
            restored.insert((d.uuid.clone(), value));
        }
    }
    let missing: Vec<_> = before.iter().filter(|v| !restored.contains(*v)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} values acknowledged before the backup are missing: {:?}",
        missing.len(),
        before.len(),
        &missing[..missing.len().min(10)]
    );
    // Values acknowledged while the backup ran may or may not be in it; none appears that was never sent.
    assert!(
        restored.len() <= during,
        "{} restored, {during} sent",
        restored.len()
    );
}

/// A small instance (one user) to back up for the refusal tests.
async fn small_instance() -> TestServer {
    let server = TestServer::start().await;
    server.user("alice").await;
    server
}

fn corrupt(error: BackupError) {
    assert!(
        matches!(error, BackupError::Invalid(_) | BackupError::Json(_)),
        "expected the archive to be refused as damaged, got {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_altered_archives_are_refused_with_nothing_written() {
    let server = small_instance().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_path(&dir);
    backup::create(&server.db.config(), &archive, None)
        .await
        .unwrap();
    let bytes = std::fs::read(&archive).unwrap();

    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let flipped = dir.path().join("flipped");
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x40;
    std::fs::write(&flipped, &altered).unwrap();
    // A well-formed archive whose users file was changed after the manifest was written.
    let edited = dir.path().join("edited");
    rewrite(&archive, &edited, |name, data| {
        if name == "database/users.jsonl" {
            let text = String::from_utf8(data.clone()).unwrap();
            assert!(text.contains("\"alice\""));
            *data = text.replace("\"alice\"", "\"admin\"").into_bytes();
        }
    });
    let not_a_backup = dir.path().join("not-a-backup");
    std::fs::write(&not_a_backup, b"hello").unwrap();

    for (what, path) in [
        ("truncated", &truncated),
        ("flipped", &flipped),
        ("edited", &edited),
        ("not a backup", &not_a_backup),
    ] {
        let target = TestDb::new().await;
        let error = backup::restore(&target.config(), path, None, false)
            .await
            .expect_err(what);
        eprintln!("{what}: {error}");
        corrupt(error);
        nothing_written(&target).await;
    }
}

/// Copies the tar.gz `from` to `to`, letting `edit` change members.
fn rewrite(from: &Path, to: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    use std::io::Read;
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(from).unwrap(),
    ));
    let mut output = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    ));
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        edit(&name, &mut data);
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        output
            .append_data(&mut header, &name, data.as_slice())
            .unwrap();
    }
    output.into_inner().unwrap().finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_archive_needs_its_passphrase_and_round_trips_through_the_cli() {
    let server = small_instance().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_path(&dir);
    let source = server.db.config();
    let run = |args: &[&str], config: &pepeunit_backend::Config, passphrase: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pepeunit"));
        command
            .args(args)
            .env("PEPEUNIT_DATA_DIR", &config.data_dir)
            .env("PEPEUNIT_BACKUP_PASSPHRASE", passphrase)
            .env("PEPEUNIT_LOG_LEVEL", "warn");
        match &config.database_url {
            Some(url) => command.env("PEPEUNIT_DATABASE_URL", url.expose()),
            None => command.env_remove("PEPEUNIT_DATABASE_URL"),
        };
        command.output().unwrap()
    };
    let out = run(
        &["backup", archive.to_str().unwrap()],
        &source,
        "correct horse",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("encrypted"));
    let bytes = std::fs::read(&archive).unwrap();
    assert!(bytes.starts_with(b"PEPEUNIT-BACKUP"));
    assert!(
        !bytes.windows(5).any(|w| w == b"alice"),
        "the login shows through the encryption"
    );

    // Without the passphrase, with a wrong one, or cut short: refused, nothing written.
    let target = TestDb::new().await;
    let error = backup::restore(&target.config(), &archive, None, false)
        .await
        .unwrap_err();
    assert!(matches!(error, BackupError::PassphraseNeeded), "{error}");
    nothing_written(&target).await;
    let error = backup::restore(&target.config(), &archive, Some("wrong horse"), false)
        .await
        .unwrap_err();
    corrupt(error);
    nothing_written(&target).await;
    let out = run(
        &["restore", archive.to_str().unwrap()],
        &target.config(),
        "wrong horse",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passphrase is wrong"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nothing_written(&target).await;
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let error = backup::restore(&target.config(), &cut, Some("correct horse"), false)
        .await
        .unwrap_err();
    corrupt(error);
    nothing_written(&target).await;

    // The right passphrase restores through the CLI, and the user logs in on the restored instance.
    let out = run(
        &["restore", archive.to_str().unwrap()],
        &target.config(),
        "correct horse",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = TestServer::start_on(target, |_| {}).await;
    login(&restored, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_data_is_refused_unless_forced() {
    let source = small_instance().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_path(&dir);
    backup::create(&source.db.config(), &archive, None)
        .await
        .unwrap();
    // Another instance, with its own user and secrets.
    let other = TestServer::start().await;
    let (bob, _) = other.user("bob").await;
    let target = other.db.config();
    let error = backup::restore(&target, &archive, None, false)
        .await
        .unwrap_err();
    assert!(matches!(error, BackupError::Refused(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("--force"), "{message}");
    assert!(message.contains("users"), "{message}");
    assert!(message.contains("secrets"), "{message}");
    // Still bob's instance.
    assert_eq!(users(&other).await, [bob]);
    // Forced: the backup replaces it (a restore runs with the server stopped; this one is idle).
    backup::restore(&target, &archive, None, true)
        .await
        .unwrap();
    let alice = users(&source).await;
    assert_eq!(users(&other).await, alice);
    assert_eq!(
        std::fs::read_to_string(target.secrets_path()).unwrap(),
        std::fs::read_to_string(source.db.config().secrets_path()).unwrap()
    );
}

async fn users(server: &TestServer) -> Vec<String> {
    use pepeunit_backend::entities::users;
    use sea_orm::EntityTrait;
    users::Entity::find()
        .all(server.services.db())
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.uuid.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_rotate_and_admins_see_the_last_one() {
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().to_path_buf();
    let server = TestServer::start_with(|c| {
        c.backup_dir = Some(dir.clone());
        c.backup_interval_seconds = 1;
        c.backup_keep = 2;
        c.backup_passphrase = Some(pepeunit_backend::config::Secret::new("scheduled"));
    })
    .await;
    let (_, admin) = server.admin("root").await;
    let (_, user) = server.user("alice").await;
    let query = "{ lastBackup { file bytes rows error removed } }";
    // Rotation has happened once a run removed an older archive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let last = loop {
        let (_, body) = server.gql(query, json!({}), Some(&admin)).await;
        assert!(body["errors"].is_null(), "{body}");
        let last = body["data"]["lastBackup"].clone();
        if last["removed"].as_array().is_some_and(|r| !r.is_empty()) {
            break last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation yet: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(last["error"].is_null(), "{last}");
    assert!(last["bytes"].as_u64().unwrap() > 0);
    let (_, body) = server.gql(query, json!({}), Some(&user)).await;
    assert_eq!(common::code(&body), "FORBIDDEN", "{body}");
    for removed in last["removed"].as_array().unwrap() {
        assert!(
            !dir.join(removed.as_str().unwrap()).exists(),
            "{removed} kept"
        );
    }
    drop(server);
    // The newest archive restores with the configured passphrase. It is copied first: a run may still
    // be finishing and rotating while the server stops.
    let copy = backups.path().join("copy");
    loop {
        let mut archives: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("pepeunit-") && n.ends_with(".backup"))
            .collect();
        archives.sort();
        let newest = archives.pop().expect("an archive");
        if std::fs::copy(dir.join(newest), &copy).is_ok() {
            break;
        }
    }
    let target = TestDb::new().await;
    backup::restore(&target.config(), &copy, Some("scheduled"), false)
        .await
        .unwrap();
    let restored = TestServer::start_on(target, |_| {}).await;
    login(&restored, "alice").await;
}

/// Rewrites a backup as a Pepeunit at the second migration would have written it: no tables of later
/// migrations, none of the columns later migrations added (`units.repo_tag`,
/// `instance_settings.email_verification`, `unit_nodes.processing`), the manifest's checksums to match.
fn as_older_version(from: &Path, to: &Path, migration: &str) {
    use sha2::Digest;
    use std::io::Read;
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(from).unwrap(),
    ));
    let mut members = Vec::new();
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        members.push((name, entry.header().clone(), data));
    }
    // The tables the first two migrations create, as that version's backup held them (it left the then
    // unused `federation_peers` out).
    let at_second = [
        "users",
        "instance_settings",
        "repo_units",
        "units",
        "unit_nodes",
        "unit_node_edges",
        "permissions",
        "unit_logs",
        "unit_node_values",
    ];
    let later: Vec<String> = members
        .iter()
        .map(|(name, _, _)| name.clone())
        .filter(|name| {
            name.strip_prefix("database/")
                .and_then(|file| file.strip_suffix(".jsonl"))
                .is_some_and(|table| !at_second.contains(&table))
        })
        .collect();
    members.retain(|(name, _, _)| !later.contains(name));
    // Columns later migrations added to those tables.
    let later_columns = [
        ("database/units.jsonl", "repo_tag"),
        ("database/instance_settings.jsonl", "email_verification"),
        ("database/unit_nodes.jsonl", "processing"),
    ];
    for (name, _, data) in &mut members {
        for (file, column) in later_columns {
            if name != file {
                continue;
            }
            let text = String::from_utf8(data.clone()).unwrap();
            let mut lines = text.lines();
            let mut header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            let columns = header["columns"].as_array_mut().unwrap();
            let at = columns.iter().position(|c| c == column).unwrap();
            columns.remove(at);
            let mut out = format!("{header}\n");
            for line in lines {
                let mut row: Vec<Value> = serde_json::from_str(line).unwrap();
                row.remove(at);
                out.push_str(&format!("{}\n", Value::from(row)));
            }
            *data = out.into_bytes();
        }
    }
    let sums: Vec<(String, String)> = members
        .iter()
        .map(|(n, _, d)| (n.clone(), hex::encode(sha2::Sha256::digest(d))))
        .collect();
    for (name, _, data) in &mut members {
        if name == "manifest.json" {
            let mut manifest: Manifest = serde_json::from_slice(data).unwrap();
            manifest.migration = migration.to_owned();
            manifest
                .tables
                .retain(|t| at_second.contains(&t.table.as_str()));
            manifest.members.retain(|n, _| !later.contains(n));
            for (n, sum) in &sums {
                if let Some(old) = manifest.members.get_mut(n) {
                    *old = sum.clone();
                }
            }
            *data = serde_json::to_vec(&manifest).unwrap();
        }
    }
    let mut output = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    ));
    for (name, mut header, data) in members {
        header.set_size(data.len() as u64);
        output
            .append_data(&mut header, &name, data.as_slice())
            .unwrap();
    }
    output.into_inner().unwrap().finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_an_older_schema_is_restored_into_it_and_migrated_forward() {
    let src = source(TestDb::new().await).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_path(&dir);
    backup::create(&src.fx.server.db.config(), &archive, None)
        .await
        .unwrap();
    let older = dir.path().join("older.backup");
    as_older_version(&archive, &older, "m20261123_000002_graph");
    let target = TestDb::new().await;
    let manifest = backup::restore(&target.config(), &older, None, false)
        .await
        .unwrap();
    assert_eq!(manifest.migration, "m20261123_000002_graph");
    assert_eq!(manifest.rows("rollouts"), None);
    // Restored, migrated to this version, and serving (units have their repo_tag column again).
    check_restored(&src, target, &manifest).await;

    // A backup from a schema this version does not know is refused before anything is written.
    let newer = dir.path().join("newer.backup");
    as_older_version(&archive, &newer, "m20991231_000001_future");
    let target = TestDb::new().await;
    let error = backup::restore(&target.config(), &newer, None, false)
        .await
        .unwrap_err();
    assert!(matches!(error, BackupError::Refused(_)), "{error}");
    assert!(error.to_string().contains("newer"), "{error}");
    nothing_written(&target).await;
}
