//! Instance secrets: the JWT signing key and the AES master key.
//!
//! Taken from the configuration when set there; otherwise generated on first start into
//! `<data dir>/secrets.toml`, created with mode 0600 and never overwritten. They never enter the database:
//! back up this file together with the database.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Secret};
use crate::crypto::MasterKey;

/// The loaded secrets.
#[derive(Clone, Debug)]
pub struct InstanceSecrets {
    pub jwt_key: Secret,
    pub master_key: MasterKey,
}

#[derive(Serialize, Deserialize)]
struct SecretsFile {
    secret_key: String,
    encryption_key: String,
}

/// The secrets could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read or create the secrets file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the secrets file {0} is not valid: {1}")]
    Invalid(String, String),
    #[error("{0}")]
    BadSetting(String),
}

impl InstanceSecrets {
    /// Loads the configured secrets, filling the gaps from (or into) the secrets file.
    pub fn load_or_create(config: &Config) -> Result<Self, SecretsError> {
        let path = config.secrets_path();
        let stored = if config.secret_key.is_some() && config.encryption_key.is_some() {
            None
        } else {
            Some(read_or_create(&path)?)
        };
        let missing =
            || SecretsError::BadSetting("no secret configured and no secrets file".into());
        let jwt_key = config
            .secret_key
            .clone()
            .or_else(|| stored.as_ref().map(|f| Secret::new(f.secret_key.clone())))
            .ok_or_else(missing)?;
        if jwt_key.expose().len() < 32 {
            return Err(SecretsError::BadSetting(
                "secret_key (PEPEUNIT_SECRET_KEY) must be at least 32 bytes long".into(),
            ));
        }
        let encoded_master = config
            .encryption_key
            .as_ref()
            .map(|k| k.expose().to_owned())
            .or_else(|| stored.as_ref().map(|f| f.encryption_key.clone()))
            .ok_or_else(missing)?;
        let master_key = MasterKey::parse(&encoded_master).map_err(|e| {
            SecretsError::BadSetting(format!("encryption_key (PEPEUNIT_ENCRYPTION_KEY): {e}"))
        })?;
        Ok(Self {
            jwt_key,
            master_key,
        })
    }
}

/// The instance secrets in the form of the secrets file, for a backup: the configured values where set,
/// else those of the secrets file. Never creates the file: a backup of an instance that has none is refused.
pub fn export(config: &Config) -> Result<String, SecretsError> {
    let path = config.secrets_path();
    let stored = if config.secret_key.is_some() && config.encryption_key.is_some() {
        None
    } else if path.exists() {
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        Some(
            toml::from_str::<SecretsFile>(&text)
                .map_err(|e| SecretsError::Invalid(path.display().to_string(), e.to_string()))?,
        )
    } else {
        return Err(SecretsError::BadSetting(format!(
            "no secrets configured and no secrets file {}",
            path.display()
        )));
    };
    let pick = |configured: &Option<Secret>, stored: Option<String>| {
        configured
            .as_ref()
            .map(|s| s.expose().to_owned())
            .or(stored)
            .ok_or_else(|| SecretsError::BadSetting("incomplete secrets".into()))
    };
    let file = SecretsFile {
        secret_key: pick(
            &config.secret_key,
            stored.as_ref().map(|f| f.secret_key.clone()),
        )?,
        encryption_key: pick(
            &config.encryption_key,
            stored.as_ref().map(|f| f.encryption_key.clone()),
        )?,
    };
    toml::to_string(&file)
        .map_err(|e| SecretsError::Invalid(path.display().to_string(), e.to_string()))
}

/// Checks that `text` (a secrets file taken from a backup) agrees with the secrets configured for this
/// instance, and is a valid secrets file. A configured key that differs would leave the restored data
/// sealed under a key the server does not use.
pub fn check_import(config: &Config, text: &str) -> Result<(), SecretsError> {
    let file: SecretsFile = toml::from_str(text)
        .map_err(|e| SecretsError::Invalid("secrets.toml in the backup".into(), e.to_string()))?;
    MasterKey::parse(&file.encryption_key)
        .map_err(|e| SecretsError::Invalid("secrets.toml in the backup".into(), e.to_string()))?;
    if config
        .encryption_key
        .as_ref()
        .is_some_and(|k| k.expose().trim() != file.encryption_key.trim())
    {
        return Err(SecretsError::BadSetting(
            "encryption_key (PEPEUNIT_ENCRYPTION_KEY) is set and differs from the backup's: the restored \
             data could not be decrypted. Unset it, or set it to the backup's key"
                .into(),
        ));
    }
    if config
        .secret_key
        .as_ref()
        .is_some_and(|k| k.expose() != file.secret_key)
    {
        return Err(SecretsError::BadSetting(
            "secret_key (PEPEUNIT_SECRET_KEY) is set and differs from the backup's: the restored units' \
             tokens would no longer be accepted. Unset it, or set it to the backup's key"
                .into(),
        ));
    }
    Ok(())
}

/// Writes `text` as the secrets file, readable by the server's user only, replacing any file there
/// (through a temporary file renamed into place, so a crash leaves the old or the new one).
pub fn write_file(config: &Config, text: &str) -> Result<(), SecretsError> {
    let path = config.secrets_path();
    let tmp = path.with_extension("toml.restoring");
    let _ = fs::remove_file(&tmp);
    write_private_file(&tmp, text.as_bytes()).map_err(io_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_error(&path))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SecretsError + '_ {
    move |source| SecretsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_or_create(path: &Path) -> Result<SecretsFile, SecretsError> {
    if path.exists() {
        let text = fs::read_to_string(path).map_err(io_error(path))?;
        return toml::from_str(&text)
            .map_err(|e| SecretsError::Invalid(path.display().to_string(), e.to_string()));
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir).map_err(io_error(path))?;
    }
    let mut signing = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut signing);
    let file = SecretsFile {
        secret_key: BASE64.encode(signing),
        encryption_key: MasterKey::generate_encoded(),
    };
    let text = toml::to_string(&file)
        .map_err(|e| SecretsError::Invalid(path.display().to_string(), e.to_string()))?;
    write_private_file(path, text.as_bytes()).map_err(io_error(path))?;
    tracing::info!(path = %path.display(), "generated instance secrets; back this file up with the database");
    Ok(file)
}

/// Creates the data dir readable by the server's user only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    // create_new: two servers starting at once must not each write their own key.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_with_private_permissions_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(&dir.path().join("data"), None);
        let first = InstanceSecrets::load_or_create(&config).unwrap();
        let second = InstanceSecrets::load_or_create(&config).unwrap();
        assert_eq!(first.jwt_key, second.jwt_key);
        let sealed = first.master_key.encrypt(b"x").unwrap();
        assert_eq!(second.master_key.decrypt(&sealed).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(config.secrets_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_secrets_win_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path(), None);
        config.secret_key = Some(Secret::new("short"));
        config.encryption_key = Some(Secret::new(MasterKey::generate_encoded()));
        let err = InstanceSecrets::load_or_create(&config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PEPEUNIT_SECRET_KEY"), "{err}");
        assert!(!config.secrets_path().exists());
    }
}
