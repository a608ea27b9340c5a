//! The device agent: one unit, its connection, its program and its updates, driven by one event loop.
//!
//! Everything that changes the agent's state happens on this loop, one event at a time: messages from
//! the broker, lines from the program, a finished download, the state timer and the trial check. Slow
//! work (downloads) runs in tasks that report back to the loop, so an update never stops the unit from
//! publishing state or serving its program.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pepeunit_protocol::device::Route;
use pepeunit_protocol::device::{
    UPDATE_FAILURE_KEY, UnitEnv, UnitSchema, UpdateCommand, UpdateFailure,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::api::Api;
use crate::discovery;
use crate::durable;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::home::Home;
use crate::link::{Link, LinkEvent};
use crate::logbook::{Level, Logbook};
use crate::program::{self, ProgramEvent, Run, Supervisor};
use crate::queue::{OfflineQueue, Queued};
use crate::slots::{Recovery, Slot, Slots, Trial};
use crate::update::{self, Fetched};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The unit's directory: env.json (and schema.json) in it; firmware slots, the offline queue and the
    /// local socket are kept there too.
    #[arg(
        long,
        env = "PEPEUNIT_UNIT_HOME",
        default_value = "/var/lib/pepeunit-unit"
    )]
    pub home: PathBuf,
    /// Most outputs kept on disk while offline; the oldest go first.
    #[arg(long, env = "PEPEUNIT_UNIT_QUEUE_LIMIT", default_value_t = 10_000)]
    pub queue_limit: usize,
    /// Longest a new version may take to prove healthy before it is rolled back.
    #[arg(long, env = "PEPEUNIT_UNIT_HEALTH_TIMEOUT", default_value_t = 120)]
    pub health_timeout_seconds: u64,
    /// Do not advertise the unit on the local network (mDNS).
    #[arg(long, env = "PEPEUNIT_UNIT_NO_MDNS")]
    pub no_mdns: bool,
}

/// An update on trial: running, not yet confirmed.
struct TrialWatch {
    commit: String,
    deadline: Instant,
    health: Duration,
    running_since: Option<Instant>,
    state_sent: bool,
}

/// What a finished download task reports.
struct Downloaded {
    command: UpdateCommand,
    result: Result<Fetched>,
}

struct Agent {
    args: RunArgs,
    home: Home,
    env: UnitEnv,
    schema: UnitSchema,
    api: Api,
    slots: Slots,
    log: Logbook,
    queue: OfflineQueue,
    supervisor: Supervisor,
    link: Option<Link>,
    link_events: mpsc::Sender<LinkEvent>,
    downloads: mpsc::Sender<Downloaded>,
    started: Instant,
    trial: Option<TrialWatch>,
    downloading: Option<String>,
    /// An update that arrived while another was in progress; the newest wins.
    next_update: Option<UpdateCommand>,
    last_failure: Option<UpdateFailure>,
    program: String,
    advertiser: Option<discovery::Advertiser>,
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<()> {
    let home = Home::open(&args.home)?;
    let env = home.read_env()?;
    let api = Api::new(&env)?;
    let mut log = Logbook::new(&env.min_log_level, env.max_log_length.max(64));
    let (mut slots, recovery) = Slots::open(&home)?;
    if let Recovery::TrialUndone { commit } = &recovery {
        log.add(
            Level::Warning,
            format!(
                "the update to {commit} was interrupted; running {} again",
                slots.commit().unwrap_or("the previous version")
            ),
        );
    }
    let schema = match home.read_schema()? {
        Some(schema) => schema,
        None => {
            let (bytes, schema) = retry("fetching schema.json", || api.schema()).await;
            durable::write(&home.schema_file(), &bytes)?;
            schema
        }
    };
    if slots.commit().is_none() {
        install_first(&api, &home, &mut slots, &mut log).await?;
    }
    let queue = OfflineQueue::open(home.queue_file(), args.queue_limit)?;
    let (program_tx, mut program_rx) = mpsc::channel(1024);
    let supervisor = Supervisor::start(&home.socket(), program_tx)?;
    let (link_tx, mut link_rx) = mpsc::channel(1024);
    let (download_tx, mut download_rx) = mpsc::channel(4);
    let mut agent = Agent {
        args,
        home,
        env,
        schema,
        api,
        slots,
        log,
        queue,
        supervisor,
        link: None,
        link_events: link_tx,
        downloads: download_tx,
        started: Instant::now(),
        trial: None,
        downloading: None,
        next_update: None,
        last_failure: None,
        program: "starting".into(),
        advertiser: None,
    };
    agent.start_program();
    agent.connect();

    let mut state_timer = tokio::time::interval(agent.state_interval());
    state_timer.tick().await;
    let mut trial_timer = tokio::time::interval(Duration::from_millis(250));
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        let step = tokio::select! {
            Some(event) = link_rx.recv() => agent.on_link(event).await,
            Some(event) = program_rx.recv() => agent.on_program(event).await,
            Some(done) = download_rx.recv() => agent.on_downloaded(done).await,
            _ = state_timer.tick() => agent.publish_state().await,
            _ = trial_timer.tick(), if agent.trial.is_some() => agent.check_trial().await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        if let Err(error) = step {
            agent.note(Level::Error, error.to_string()).await;
        }
    }
    agent.supervisor.run(Run::default());
    if let Some(link) = agent.link.take() {
        link.stop().await;
    }
    // Let the program see SIGTERM before the runtime (and its pipes) go away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).map_err(|e| Error::Invalid(format!("signal handler: {e}")))
}

/// Retries `call` with backoff until it succeeds: at first start there is nothing to run without it.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = Duration::from_secs(1);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                tracing::warn!(%error, "{what} failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// The commit an unpacked bundle was made from, read from its own env.json.
fn bundle_commit(dir: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("env.json")).ok()?;
    let env: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    env.get(pepeunit_protocol::device::COMMIT_KEY)?
        .as_str()
        .map(str::to_owned)
}

/// First start: downloads the unit's current firmware into slot A and confirms it (nothing to roll
/// back to).
async fn install_first(api: &Api, home: &Home, slots: &mut Slots, log: &mut Logbook) -> Result<()> {
    loop {
        let attempt = async {
            let fetched = update::fetch(api, home, None).await?;
            update::install(home, slots, Slot::A, &fetched).await
        };
        match attempt.await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, "installing the firmware failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
    let commit = bundle_commit(&slots.dir(Slot::A)).unwrap_or_else(|| "unknown".into());
    slots.install_first(Slot::A, &commit)?;
    log.add(Level::Info, format!("installed firmware {commit}"));
    Ok(())
}

impl Agent {
    fn state_interval(&self) -> Duration {
        Duration::from_secs(self.env.state_send_interval_seconds)
    }

    fn topic(&self, section: &str, name: &str) -> Option<String> {
        let map = match section {
            "output_base_topic" => &self.schema.output_base_topic,
            _ => &self.schema.output_topic,
        };
        map.get(name)
            .or_else(|| map.get(&format!("{name}/pepeunit")))
            .and_then(|topics| topics.first())
            .cloned()
    }

    fn connect(&mut self) {
        let topics = self.schema.subscriptions().map(str::to_owned).collect();
        self.link = Some(Link::start(&self.env, topics, self.link_events.clone()));
    }

    async fn reconnect(&mut self) {
        if let Some(link) = self.link.take() {
            link.stop().await;
        }
        self.connect();
    }

    fn connected(&self) -> bool {
        self.link.as_ref().is_some_and(Link::is_connected)
    }

    fn start_program(&mut self) {
        let Some(dir) = self.slots.running_dir() else {
            return;
        };
        let home = self.home.root().display().to_string();
        let env = vec![
            ("PEPEUNIT_UNIT_UUID".into(), self.env.unit.to_string()),
            ("PEPEUNIT_HOME".into(), home),
            (
                "PEPEUNIT_ENV_FILE".into(),
                self.home.env_file().display().to_string(),
            ),
            (
                "PEPEUNIT_SCHEMA_FILE".into(),
                self.home.schema_file().display().to_string(),
            ),
            (
                "PEPEUNIT_SOCKET".into(),
                self.home.socket().display().to_string(),
            ),
            (
                "PEPEUNIT_COMMIT".into(),
                self.slots.running_commit().unwrap_or_default().to_owned(),
            ),
        ];
        self.supervisor.run(Run {
            dir: Some(dir),
            env,
            generation: 0,
        });
    }

    /// Publishes to `topic`, or keeps the message on disk while offline.
    async fn send(&mut self, topic: String, payload: String) -> Result<()> {
        if let Some(link) = self.link.as_ref().filter(|l| l.is_connected())
            && link.publish(&topic, payload.clone().into_bytes()).is_ok()
        {
            return Ok(());
        }
        self.queue.push(Queued { topic, payload })
    }

    /// Writes the unit's log and publishes the entry when connected (log lines are not queued offline:
    /// `log_sync` gets them later).
    async fn note(&mut self, level: Level, text: String) {
        let Some(entry) = self.log.add(level, text) else {
            return;
        };
        if let (Some(link), Some(topic)) = (
            self.link.as_ref().filter(|l| l.is_connected()),
            self.topic("output_base_topic", "log/pepeunit"),
        ) && let Ok(payload) = serde_json::to_vec(&entry)
        {
            let _ = link.publish(&topic, payload);
        }
    }

    async fn publish_state(&mut self) -> Result<()> {
        let Some(topic) = self.topic("output_base_topic", "state/pepeunit") else {
            return Ok(());
        };
        let Some(link) = self.link.as_ref().filter(|l| l.is_connected()) else {
            return Ok(());
        };
        let mut extra = Map::new();
        extra.insert("program".into(), json!(self.program));
        extra.insert("queue_length".into(), json!(self.queue.len()));
        extra.insert("queue_dropped".into(), json!(self.queue.dropped()));
        if let Some(trial) = &self.trial {
            extra.insert("pu_update_trial".into(), json!(trial.commit));
        }
        if let Some(failure) = &self.last_failure {
            extra.insert(UPDATE_FAILURE_KEY.into(), json!(failure));
        }
        // A trial reports the confirmed commit: the server counts the update done only once it is.
        let state =
            crate::system::state(self.started, self.home.root(), self.slots.commit(), extra);
        let payload = serde_json::to_vec(&state).map_err(|e| Error::Invalid(e.to_string()))?;
        link.publish(&topic, payload)?;
        if let Some(trial) = &mut self.trial {
            trial.state_sent = true;
        }
        Ok(())
    }

    async fn on_link(&mut self, event: LinkEvent) -> Result<()> {
        match event {
            LinkEvent::Connected => {
                let queued = self.queue.drain()?;
                let count = queued.len();
                for entry in queued {
                    self.send(entry.topic, entry.payload).await?;
                }
                let text = if count > 0 {
                    format!("connected; sent {count} values queued while offline")
                } else {
                    "connected".into()
                };
                self.note(Level::Info, text).await;
                self.publish_state().await?;
                self.advertise().await;
            }
            LinkEvent::Disconnected(why) => {
                tracing::warn!("disconnected: {why}");
                self.log.add(Level::Warning, format!("disconnected: {why}"));
            }
            LinkEvent::Message { topic, payload } => {
                enum Owned {
                    Command(String),
                    Input(String),
                }
                let route = self.schema.route(&topic).map(|route| match route {
                    Route::Command(name) => Owned::Command(name.to_owned()),
                    Route::Input(name) => Owned::Input(name.to_owned()),
                });
                match route {
                    Some(Owned::Command(name)) => self.on_command(&name, &payload).await?,
                    Some(Owned::Input(name)) => {
                        let value = String::from_utf8_lossy(&payload);
                        self.supervisor.input(&name, &value);
                    }
                    None => tracing::debug!(topic, "message on a topic the schema does not name"),
                }
            }
        }
        Ok(())
    }

    async fn on_command(&mut self, name: &str, payload: &[u8]) -> Result<()> {
        match name {
            "update/pepeunit" => {
                // An empty retained message clears the command (the unit's token was revoked).
                if payload.is_empty() {
                    return Ok(());
                }
                let command = UpdateCommand::parse(payload)?;
                self.on_update(command).await
            }
            "env_update/pepeunit" => self.refresh_env().await,
            "schema_update/pepeunit" => self.refresh_schema().await,
            "log_sync/pepeunit" => {
                let entries: Vec<_> = self.log.entries().cloned().collect();
                if let Some(topic) = self.topic("output_base_topic", "log/pepeunit") {
                    let payload = serde_json::to_string(&entries)
                        .map_err(|e| Error::Invalid(e.to_string()))?;
                    self.send(topic, payload).await?;
                }
                Ok(())
            }
            "reset/pepeunit" => {
                // A Linux device is not rebooted from afar: the program restarts and the unit reconnects.
                self.note(
                    Level::Warning,
                    "reset: restarting the program and reconnecting".into(),
                )
                .await;
                self.supervisor.restart();
                self.reconnect().await;
                Ok(())
            }
            other => {
                tracing::debug!(command = other, "unknown command");
                Ok(())
            }
        }
    }

    async fn refresh_env(&mut self) -> Result<()> {
        let (bytes, env) = self.api.env().await?;
        if env.unit != self.env.unit {
            return Err(Error::Invalid(
                "the server sent the env.json of another unit".into(),
            ));
        }
        durable::write(&self.home.env_file(), &bytes)?;
        self.copy_into_running_slot("env.json", &bytes)?;
        let reconnect = env.mqtt_host != self.env.mqtt_host
            || env.mqtt_port != self.env.mqtt_port
            || env.auth_token != self.env.auth_token;
        self.api = Api::new(&env)?;
        self.env = env;
        self.note(Level::Info, "env.json updated".into()).await;
        self.supervisor.restart();
        if reconnect {
            self.reconnect().await;
        }
        Ok(())
    }

    async fn refresh_schema(&mut self) -> Result<()> {
        let (bytes, schema) = self.api.schema().await?;
        durable::write(&self.home.schema_file(), &bytes)?;
        self.copy_into_running_slot("schema.json", &bytes)?;
        self.schema = schema;
        self.note(Level::Info, "schema.json updated".into()).await;
        self.supervisor.restart();
        // Subscriptions follow the schema: a new session subscribes to exactly the new topics.
        self.reconnect().await;
        Ok(())
    }

    /// Programs written for the reference client read ./env.json and ./schema.json from their folder.
    fn copy_into_running_slot(&self, file: &str, bytes: &[u8]) -> Result<()> {
        if let Some(dir) = self.slots.running_dir() {
            durable::write(&dir.join(file), bytes)?;
        }
        Ok(())
    }

    async fn on_update(&mut self, command: UpdateCommand) -> Result<()> {
        let busy = self.downloading.is_some() || self.trial.is_some();
        let running = self.slots.running_commit() == Some(command.commit.as_str());
        if running && self.trial.is_none() {
            return Ok(());
        }
        if busy {
            if self.downloading.as_deref() != Some(&command.commit)
                && self.trial.as_ref().map(|t| &t.commit) != Some(&command.commit)
            {
                self.next_update = Some(command);
            }
            return Ok(());
        }
        let sha = command.firmware_sha256.as_deref();
        if let Some(refusal) = self.slots.refusal(&command.commit, sha) {
            // The server repeats a retained command on every reconnect; say again why it is refused.
            self.last_failure = Some(UpdateFailure {
                commit: refusal.commit.clone(),
                reason: refusal.reason.clone(),
            });
            return self.publish_state().await;
        }
        if self.slots.interrupted_too_often(&command.commit) {
            return self
                .fail_update(
                    &command,
                    "the update was interrupted too many times".into(),
                    true,
                )
                .await;
        }
        self.note(
            Level::Info,
            format!("downloading update {}", command.commit),
        )
        .await;
        self.downloading = Some(command.commit.clone());
        let (api, home, downloads) = (self.api.clone(), self.home.clone(), self.downloads.clone());
        tokio::spawn(async move {
            let result = update::fetch(&api, &home, command.firmware_sha256.as_deref()).await;
            let _ = downloads.send(Downloaded { command, result }).await;
        });
        Ok(())
    }

    /// Refuses `command`: logged, reported in state, and remembered when `remember` (a bad archive
    /// stays bad; a network error is worth another try when the server repeats the command).
    async fn fail_update(
        &mut self,
        command: &UpdateCommand,
        reason: String,
        remember: bool,
    ) -> Result<()> {
        if remember {
            self.slots
                .refuse(&command.commit, command.firmware_sha256.as_deref(), &reason);
            self.slots.save_refusals()?;
        }
        self.note(
            Level::Error,
            format!("update to {} refused: {reason}", command.commit),
        )
        .await;
        self.last_failure = Some(UpdateFailure {
            commit: command.commit.clone(),
            reason,
        });
        self.publish_state().await
    }

    async fn on_downloaded(&mut self, done: Downloaded) -> Result<()> {
        self.downloading = None;
        let Downloaded { command, result } = done;
        let outcome = match result {
            Err(error @ Error::Checksum { .. }) => {
                self.fail_update(&command, error.to_string(), true).await
            }
            Err(error) => self.fail_update(&command, error.to_string(), false).await,
            Ok(fetched) => self.start_trial(&command, fetched).await,
        };
        if let Some(next) = self.next_update.take() {
            self.on_update(next).await?;
        }
        outcome
    }

    async fn start_trial(&mut self, command: &UpdateCommand, fetched: Fetched) -> Result<()> {
        let slot = self.slots.inactive();
        if let Err(error) = update::install(&self.home, &self.slots, slot, &fetched).await {
            return self
                .fail_update(command, format!("cannot unpack: {error}"), true)
                .await;
        }
        let health = program::spec(&self.slots.dir(slot))
            .ok()
            .flatten()
            .map_or(Duration::ZERO, |spec| {
                Duration::from_secs(spec.health_seconds)
            });
        self.slots.begin_trial(Trial {
            slot,
            commit: command.commit.clone(),
            sha256: Some(fetched.sha256),
        })?;
        self.trial = Some(TrialWatch {
            commit: command.commit.clone(),
            deadline: Instant::now() + Duration::from_secs(self.args.health_timeout_seconds),
            health,
            running_since: None,
            state_sent: false,
        });
        self.start_program();
        failpoint::hit("update.started");
        self.note(
            Level::Info,
            format!(
                "trying update {} (healthy after {}s)",
                command.commit,
                health.as_secs()
            ),
        )
        .await;
        Ok(())
    }

    async fn check_trial(&mut self) -> Result<()> {
        let Some(trial) = &self.trial else {
            return Ok(());
        };
        let healthy = trial
            .running_since
            .is_some_and(|since| since.elapsed() >= trial.health)
            && trial.state_sent
            && self.connected();
        if healthy {
            return self.confirm_trial().await;
        }
        if Instant::now() >= trial.deadline {
            let reason = format!(
                "not healthy within {}s (running and connected, with state published)",
                self.args.health_timeout_seconds
            );
            return self.roll_back(reason).await;
        }
        // State goes out as soon as possible during a trial: it is half of the health check.
        if !trial.state_sent && self.connected() {
            self.publish_state().await?;
        }
        Ok(())
    }

    async fn confirm_trial(&mut self) -> Result<()> {
        let Some(trial) = self.trial.take() else {
            return Ok(());
        };
        self.slots.confirm()?;
        failpoint::hit("update.committed");
        self.last_failure = None;
        // The new bundle carries the unit's files as the server rendered them for this commit.
        if let Some(dir) = self.slots.running_dir() {
            for (file, target) in [
                ("env.json", self.home.env_file()),
                ("schema.json", self.home.schema_file()),
            ] {
                if let Ok(bytes) = std::fs::read(dir.join(file)) {
                    durable::write(&target, &bytes)?;
                }
            }
            if let Ok(Some(schema)) = self.home.read_schema()
                && schema != self.schema
            {
                self.schema = schema;
                self.reconnect().await;
            }
        }
        self.note(Level::Info, format!("updated to {}", trial.commit))
            .await;
        self.publish_state().await
    }

    async fn roll_back(&mut self, reason: String) -> Result<()> {
        let Some(trial) = self.trial.take() else {
            return Ok(());
        };
        self.slots.roll_back(&reason)?;
        self.start_program();
        self.note(
            Level::Error,
            format!(
                "update to {} failed: {reason}; rolled back to {}",
                trial.commit,
                self.slots.commit().unwrap_or("the previous version")
            ),
        )
        .await;
        self.last_failure = Some(UpdateFailure {
            commit: trial.commit,
            reason,
        });
        self.publish_state().await
    }

    async fn on_program(&mut self, event: ProgramEvent) -> Result<()> {
        match event {
            ProgramEvent::Started { dir } => {
                self.program = "running".into();
                if let Some(trial) = &mut self.trial
                    && self.slots.running_dir().as_ref() == Some(&dir)
                {
                    trial.running_since = Some(Instant::now());
                }
            }
            ProgramEvent::Exited { status, success } => {
                self.program = format!("exited: {status}");
                if self.trial.is_some() {
                    let how = if success { "stopped" } else { "crashed" };
                    return self
                        .roll_back(format!("the new program {how} ({status})"))
                        .await;
                }
            }
            ProgramEvent::Output { name, value } => match self.topic("output_topic", &name) {
                Some(topic) => self.send(topic, value).await?,
                None => {
                    self.note(
                        Level::Warning,
                        format!(
                            "the program wrote to {name:?}, which is not an output of this unit"
                        ),
                    )
                    .await;
                }
            },
            ProgramEvent::Log { level, text } => self.note(level, text).await,
        }
        Ok(())
    }

    /// Announces the unit on the local network once its name is known (first connection).
    async fn advertise(&mut self) {
        if self.args.no_mdns || self.advertiser.is_some() {
            return;
        }
        let node = self
            .schema
            .output_topic
            .values()
            .chain(self.schema.input_topic.values())
            .flatten()
            .flat_map(|topic| topic.split('/'))
            .find_map(|part| part.parse::<uuid::Uuid>().ok());
        let name = match node {
            Some(node) => self.api.unit_name(node).await.ok().flatten(),
            None => None,
        };
        let info = discovery::Advertisement {
            unit: self.env.unit,
            name: name.unwrap_or_else(|| self.env.unit.to_string()),
            version: self.slots.commit().unwrap_or("unknown").to_owned(),
            port: 0,
        };
        match discovery::advertise(&info) {
            Ok(advertiser) => self.advertiser = Some(advertiser),
            Err(error) => tracing::warn!(%error, "mDNS advertisement failed"),
        }
    }
}
