//! The outgoing mail queue: requests hand a job over and return at once; one worker turns jobs into mails
//! and sends them over SMTP with retries, so a slow or failing SMTP server never slows a request.
//!
//! The queue is bounded ([`QUEUE`]); when it is full a job is dropped and counted in [`MAILS_DROPPED`] (the
//! user may ask again). It is held in memory: a restart loses queued mails, never a link's validity.
//! The SMTP server is the admin's configuration, never a user's input, so it does not pass the SSRF guard.

use std::sync::LazyLock;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::{Config, ConfigError};

/// Jobs waiting for the worker.
const QUEUE: usize = 256;
/// Tries per mail, with 1 s, 4 s, 16 s between them.
const ATTEMPTS: u32 = 4;
/// Longest one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Mail jobs dropped because the queue was full (`/metrics`).
pub static MAILS_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Mails the SMTP server refused after every retry (`/metrics`).
pub static MAILS_FAILED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// What a request asks the worker to do; the worker looks the user up and makes the link, so a request
/// takes the same time whether or not the address belongs to an account.
#[derive(Debug, Clone)]
pub enum Job {
    /// A verification link to the user, if their account still awaits it.
    Verify { user: Uuid },
    /// A verification link to the account with this address, if it awaits it.
    VerifyAgain { email: String },
    /// A password-reset link to the account with this address, if there is one.
    Reset { email: String },
}

/// A mail ready to send.
#[derive(Debug, Clone)]
pub struct Letter {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The SMTP side: the transport and the sender address.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// The transport `smtp_url` and `smtp_from` describe; `None` when mail is not configured.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        let (Some(url), Some(from)) = (&config.smtp_url, &config.smtp_from) else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            // lettre's message may quote the URL: its credentials stay out of the error.
            .map_err(|_| {
                ConfigError::new(
                    "smtp_url (PEPEUNIT_SMTP_URL) must be smtp://[user:password@]host[:port][?tls=required|opportunistic] or smtps://...",
                )
            })?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from = from.parse::<Mailbox>().map_err(|e| {
            ConfigError::new(format!(
                "smtp_from (PEPEUNIT_SMTP_FROM) is not a mail address: {e}"
            ))
        })?;
        Ok(Some(Self { transport, from }))
    }

    /// Sends one mail, retrying a failure a few times.
    pub async fn send(&self, letter: &Letter) {
        let to = match letter.to.parse::<Mailbox>() {
            Ok(to) => to,
            Err(error) => {
                tracing::warn!(%error, "an account's address is not a mailbox");
                return;
            }
        };
        let message = match Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(letter.subject.clone())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(letter.body.clone())
        {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "building a mail failed");
                return;
            }
        };
        for attempt in 1..=ATTEMPTS {
            match self.transport.send(message.clone()).await {
                Ok(_) => {
                    tracing::info!(subject = %letter.subject, "mail sent");
                    return;
                }
                Err(error) if attempt < ATTEMPTS && !error.is_permanent() => {
                    tracing::info!(%error, attempt, "sending a mail failed; retrying");
                    tokio::time::sleep(Duration::from_secs(4u64.pow(attempt - 1))).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "sending a mail failed");
                    MAILS_FAILED.inc();
                    return;
                }
            }
        }
    }
}

/// The request side of the queue.
pub struct Outbox {
    sender: mpsc::Sender<Job>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Job>>>,
}

impl Default for Outbox {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }
}

impl Outbox {
    /// Queues a job without waiting; a full queue drops it.
    pub fn push(&self, job: Job) {
        if self.sender.try_send(job).is_err() {
            MAILS_DROPPED.inc();
            tracing::warn!("the mail queue is full; a mail was dropped");
        }
    }

    /// The worker's end; `None` once taken.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Job>> {
        self.receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}
