//! Nothing secret is stored in the database in plaintext.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{PASSWORD, TestServer};

fn read_database_files(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["pepeunit.db", "pepeunit.db-wal"] {
        if let Ok(content) = std::fs::read(dir.join(name)) {
            bytes.extend(content);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn database_file_holds_no_plaintext_secret() {
    // The file-level check needs the SQLite file, whatever engine the suite runs on.
    let server = TestServer::start_with(|c| c.database_url = None).await;
    let (_, _) = server.admin("root").await;
    server.register("alice").await;
    let (_, body) = server.login("alice", PASSWORD).await;
    let access = body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = body["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let data_dir = server.db.data_dir();
    let secrets = std::fs::read_to_string(data_dir.join("secrets.toml")).unwrap();
    let secrets: toml::Table = toml::from_str(&secrets).unwrap();
    let bytes = read_database_files(&data_dir);
    assert!(
        contains(&bytes, "alice@example.com"),
        "control: the scan sees stored text"
    );
    assert!(
        contains(&bytes, "$argon2id$"),
        "passwords are stored as argon2id hashes"
    );
    for (what, secret) in [
        ("password", PASSWORD),
        ("JWT signing key", secrets["secret_key"].as_str().unwrap()),
        ("master key", secrets["encryption_key"].as_str().unwrap()),
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
    ] {
        assert!(
            !contains(&bytes, secret),
            "the database holds the {what} in plaintext"
        );
    }
}
