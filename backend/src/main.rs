//! The `pepeunit` binary: serve, migrate, create the first admin, print the configuration.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pepeunit_backend::backup;
use pepeunit_backend::config::{Config, ConfigArgs};
use pepeunit_backend::domain::{UserRole, UserStatus};
use pepeunit_backend::services::repo_units;
use pepeunit_backend::services::users::{self, Registration};
use pepeunit_backend::services::{Actor, AuthUser};
use pepeunit_backend::{bind, bind_mqtt, bind_mqtt_tls, build, shutdown_signal, telemetry};

/// Pepeunit: a federated IoT graph platform. Every setting below can also come from a
/// `PEPEUNIT_*` environment variable or a TOML file (`--config`).
#[derive(Parser)]
#[command(name = "pepeunit", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage admins.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print the effective configuration, secrets masked.
    Config,
    /// Write the whole instance (database, secrets, repository mirrors) to one archive; safe while the
    /// server runs. Encrypted when a passphrase is given (PEPEUNIT_BACKUP_PASSPHRASE or --passphrase-file).
    Backup {
        /// The archive to write (replaced when it exists).
        file: std::path::PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Restore an archive written by `backup` into the configured database and data directory, which
    /// must be empty unless --force. Stop the server first.
    Restore {
        /// The archive to read.
        file: std::path::PathBuf,
        /// Replace the data the target already holds.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

/// Where a backup's passphrase comes from, besides `backup_passphrase` (PEPEUNIT_BACKUP_PASSPHRASE).
#[derive(clap::Args)]
struct PassphraseArgs {
    /// File whose first line is the passphrase [default: backup_passphrase, else none]
    #[arg(long)]
    passphrase_file: Option<std::path::PathBuf>,
}

impl PassphraseArgs {
    fn read(&self, config: &Config) -> anyhow::Result<Option<String>> {
        let passphrase = match &self.passphrase_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the passphrase from {}", path.display()))?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            None => config
                .backup_passphrase
                .as_ref()
                .map(|p| p.expose().to_owned()),
        };
        if passphrase.as_ref().is_some_and(|p| p.is_empty()) {
            anyhow::bail!("the backup passphrase is empty");
        }
        Ok(passphrase)
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin account. The password is read from PEPEUNIT_ADMIN_PASSWORD or, failing that,
    /// from the first line of standard input, so it never shows in the process list.
    Create {
        #[arg(long)]
        login: String,
        #[arg(long)]
        email: String,
        /// Also add the configured standard unit repositories (`standard_repositories`) as public
        /// repo_units of this admin.
        #[arg(long)]
        with_standard_repositories: bool,
    },
}

fn read_admin_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("PEPEUNIT_ADMIN_PASSWORD") {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    // Only a person at a terminal needs the prompt; a piped password is read silently.
    if stdin.is_terminal() {
        eprintln!("password (one line on stdin):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    telemetry::init(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = shutdown_signal();
            // Every port first: a taken one stops the server before the data directory is written.
            let mut config = config;
            let listener = bind(&config).await?;
            let mqtt = bind_mqtt(&mut config).await?;
            let mqtt_tls = bind_mqtt_tls(&config).await?;
            let mut app = build(config).await?.with_mqtt_listener(mqtt);
            if let Some(tls) = mqtt_tls {
                app = app.with_mqtt_tls_listener(tls);
            }
            app.serve(listener, shutdown).await?;
        }
        Command::Migrate => {
            let db = pepeunit_backend::db::connect(&config).await?;
            pepeunit_backend::db::migrate(&db).await?;
            println!("migrations applied");
        }
        Command::Admin(AdminCommand::Create {
            login,
            email,
            with_standard_repositories,
        }) => {
            let password = read_admin_password()?;
            let config_urls = config.standard_repositories.clone();
            let app = build(config).await?;
            let form = Registration {
                login,
                email,
                password,
            };
            let user = users::create(app.services(), form, UserRole::Admin, UserStatus::Verified)
                .await
                .map_err(|e| anyhow::anyhow!(e.public_message()))?;
            println!("admin {} created ({})", user.login, user.uuid);
            if with_standard_repositories {
                let admin = Actor::User(AuthUser {
                    id: user.uuid.into(),
                    role: UserRole::Admin,
                });
                let urls = &config_urls;
                let failed = repo_units::add_standard(app.services(), &admin, urls).await;
                for (url, error) in &failed {
                    eprintln!(
                        "standard repository {url} not added: {}",
                        error.public_message()
                    );
                }
                println!("{} standard repositories added", urls.len() - failed.len());
            }
        }
        Command::Backup { file, passphrase } => {
            let passphrase = passphrase.read(&config)?;
            let manifest = backup::create(&config, &file, passphrase.as_deref()).await?;
            let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
            println!(
                "backup written to {} ({} rows, {} files, schema {}{})",
                file.display(),
                rows,
                manifest.members.len(),
                manifest.migration,
                if passphrase.is_some() {
                    ", encrypted"
                } else {
                    ""
                }
            );
        }
        Command::Restore {
            file,
            force,
            passphrase,
        } => {
            let passphrase = passphrase.read(&config)?;
            let manifest = backup::restore(&config, &file, passphrase.as_deref(), force).await?;
            let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
            println!(
                "restored {} rows and {} files from a backup of {} (Pepeunit {}, {})",
                rows,
                manifest.members.len(),
                manifest.created_at.to_rfc3339(),
                manifest.pepeunit_version,
                manifest.database_engine
            );
        }
        Command::Config => {
            print!("{}", config.to_masked_toml()?);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pepeunit: {error:#}");
            ExitCode::FAILURE
        }
    }
}
