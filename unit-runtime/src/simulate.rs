//! The fleet simulator: many virtual units in one process, for load tests and benchmarks.
//!
//! Units come from a directory of env.json files or are created through the GraphQL API (optionally
//! pinned to a commit, and linked in a ring: each unit's first output feeds the next unit's first input, so
//! every message sent should be received exactly once and its latency measured). Each unit speaks the device
//! protocol over its own MQTT connection (see [`unit`]). A run connects the units in batches, lets them
//! publish for `--seconds`, stops their outputs and waits for the last messages, optionally rolls the
//! fleet out to a new commit and times it, then reports.

mod api;
mod stats;
mod unit;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pepeunit_protocol::device::UnitEnv;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{Error, IoContext, Result};
use api::Session;
use stats::Stats;
use unit::{Phase, Shared, Spec};

/// `pepeunit-unit simulate`. The options sit behind a box so that the CLI's subcommand enum stays small
/// (they are far larger than the other subcommands' arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub options: Box<SimulateOptions>,
}

/// The options of `pepeunit-unit simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateOptions {
    /// Run the units whose env.json files (`*.json`) are in this directory.
    #[arg(
        long,
        conflicts_with = "repo_unit",
        required_unless_present = "repo_unit"
    )]
    pub env_dir: Option<PathBuf>,
    /// Server URL (`http://host:port`) for creating units and rollouts.
    #[arg(long, env = "PEPEUNIT_SERVER")]
    pub server: Option<String>,
    /// Login of the user who creates the units.
    #[arg(long, env = "PEPEUNIT_LOGIN")]
    pub login: Option<String>,
    /// That user's password.
    #[arg(long, env = "PEPEUNIT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Create the units from this repo_unit through the API (needs --server, --login, --password).
    #[arg(long, requires_all = ["server", "login", "password"])]
    pub repo_unit: Option<Uuid>,
    /// How many units: created with --repo-unit [default: 10]; the first N files of --env-dir [default: all]
    #[arg(long)]
    pub count: Option<usize>,
    /// Name prefix of created units; a random run id and the index follow it.
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,
    /// Pin created units to this commit of the default branch (so that only a rollout moves them).
    #[arg(long, requires = "repo_unit")]
    pub pin: Option<String>,
    /// Link each created unit's first output to the next unit's first input, in a ring.
    #[arg(long, requires = "repo_unit")]
    pub link: bool,
    /// Write each created unit's env.json into this directory (to rerun them with --env-dir).
    #[arg(long, requires = "repo_unit")]
    pub save_env: Option<PathBuf>,
    /// Output messages per second per unit, on each of its outputs (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// QoS of output messages (state always goes with QoS 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Seconds of traffic once all units are connected.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds between state messages, instead of each unit's PU_STATE_SEND_INTERVAL.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub state_interval: Option<u64>,
    /// Units that connect at once; the next batch starts when this one is connected.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_batch: u64,
    /// Firmware downloads running at once across the fleet.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub download_concurrency: u64,
    /// After the traffic, roll the repo_unit out to this commit and time it until it completes (outputs
    /// paused meanwhile).
    #[arg(long, requires = "repo_unit")]
    pub rollout_to: Option<String>,
    /// Units per rollout wave.
    #[arg(long, default_value_t = 100)]
    pub rollout_batch: u32,
    /// Seconds a wave's units have to report the commit.
    #[arg(long, default_value_t = 120)]
    pub rollout_wave_timeout: u32,
    /// Also report the memory of this process (the server), from /proc, before and after.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Resident memory in KiB at the start, once the units exist (created or read), and once connected.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub start_kib: Option<u64>,
    pub units_kib: Option<u64>,
    pub connected_kib: Option<u64>,
}

impl Memory {
    /// KiB per unit between two points.
    fn per_unit(from: Option<u64>, to: Option<u64>, units: usize) -> Option<f64> {
        Some((to? as f64 - from? as f64) / units.max(1) as f64)
    }
}

/// A rollout's outcome.
#[derive(Debug, Clone)]
pub struct RolloutReport {
    pub commit: String,
    /// `completed`, `halted`, or `running` if the simulator gave up waiting.
    pub status: String,
    pub waves: i64,
    pub detail: Option<String>,
    /// From `startRollout` to the rollout reported finished.
    pub elapsed: Duration,
    /// From `startRollout` until every simulated unit had applied the update.
    pub all_units_updated: Option<Duration>,
}

/// Latencies of linked messages, publish to receipt, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub units: usize,
    /// Creating (or reading) the units and fetching their schemas.
    pub setup: Duration,
    pub connected: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    /// From the first connect to the last unit's answer.
    pub ramp: Duration,
    /// From the start of outputs to the end of the drain.
    pub duration: Duration,
    pub sent: u64,
    pub send_dropped: u64,
    pub received: u64,
    pub states: u64,
    pub commands: u64,
    pub latency: Option<Latency>,
    pub updates_applied: u64,
    pub update_failures: u64,
    pub downloaded_bytes: u64,
    pub rollout: Option<RolloutReport>,
    pub memory: Memory,
    pub server_memory: Option<Memory>,
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn kib(value: Option<u64>) -> String {
    value.map_or_else(|| "?".into(), |v| format!("{:.1} MiB", v as f64 / 1024.0))
}

fn per_unit(value: Option<f64>) -> String {
    value.map_or_else(|| "?".into(), |v| format!("{v:.1} KiB/unit"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.duration.as_secs_f64().max(0.001);
        writeln!(
            f,
            "units: {} (set up in {:.1} s; {} connected, {} connect failures, {} disconnects); ramp {:.1} s",
            self.units,
            self.setup.as_secs_f64(),
            self.connected,
            self.connect_failures,
            self.disconnects,
            self.ramp.as_secs_f64()
        )?;
        writeln!(
            f,
            "messages: {} sent ({:.0}/s), {} received, {} not queued; {} state, {} commands",
            self.sent,
            self.sent as f64 / seconds,
            self.received,
            self.send_dropped,
            self.states,
            self.commands
        )?;
        match self.latency {
            Some(l) => writeln!(
                f,
                "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                millis(l.p50),
                millis(l.p99),
                millis(l.max)
            )?,
            None => writeln!(f, "latency: no linked messages received")?,
        }
        writeln!(
            f,
            "updates: {} applied, {} failed, {:.1} KiB downloaded",
            self.updates_applied,
            self.update_failures,
            self.downloaded_bytes as f64 / 1024.0
        )?;
        if let Some(r) = &self.rollout {
            write!(
                f,
                "rollout to {}: {} after {} waves in {:.1} s",
                r.commit,
                r.status,
                r.waves,
                r.elapsed.as_secs_f64()
            )?;
            if let Some(all) = r.all_units_updated {
                write!(f, "; all units updated after {:.1} s", all.as_secs_f64())?;
            }
            if let Some(detail) = &r.detail {
                write!(f, " ({detail})")?;
            }
            writeln!(f)?;
        }
        let m = self.memory;
        write!(
            f,
            "simulator RSS: {} at start, {} with units, {} connected ({} in all)",
            kib(m.start_kib),
            kib(m.units_kib),
            kib(m.connected_kib),
            per_unit(Memory::per_unit(m.start_kib, m.connected_kib, self.units)),
        )?;
        if let Some(s) = self.server_memory {
            write!(
                f,
                "\nserver RSS: {} at start, {} with units, {} connected ({} for the units, {} for their connections)",
                kib(s.start_kib),
                kib(s.units_kib),
                kib(s.connected_kib),
                per_unit(Memory::per_unit(s.start_kib, s.units_kib, self.units)),
                per_unit(Memory::per_unit(s.units_kib, s.connected_kib, self.units)),
            )?;
        }
        Ok(())
    }
}

/// `VmRSS` of a process (this one without a pid), in KiB; `None` where /proc does not tell.
fn rss(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `f` on every item, at most `limit` at a time; results in the items' order.
async fn parallel<I, T, F, Fut>(items: Vec<I>, limit: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize, I) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let limit = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = JoinSet::new();
    let total = items.len();
    for (index, item) in items.into_iter().enumerate() {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Invalid("the task limit closed".into()))?;
        let work = f(index, item);
        set.spawn(async move {
            let _permit = permit;
            (index, work.await)
        });
    }
    let mut results: Vec<Option<T>> = (0..total).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (index, result) = joined.map_err(|e| Error::Invalid(format!("a task failed: {e}")))?;
        results[index] = Some(result?);
    }
    Ok(results.into_iter().flatten().collect())
}

fn read_env_dir(dir: &Path, count: Option<usize>) -> Result<Vec<UnitEnv>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.truncate(count.unwrap_or(usize::MAX));
    if paths.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no env.json files (*.json)",
            dir.display()
        )));
    }
    paths
        .iter()
        .map(|path| Ok(UnitEnv::parse(&std::fs::read(path).at(path)?)?))
        .collect()
}

/// Creates `--count` units through the API (pinned and linked as asked); returns their env.json.
async fn create_units(
    session: &Arc<Session>,
    args: &SimulateOptions,
    repo_unit: Uuid,
) -> Result<Vec<UnitEnv>> {
    let count = args.count.unwrap_or(10);
    let pin = match &args.pin {
        Some(commit) => Some((session.head(repo_unit).await?.0, commit.clone())),
        None => None,
    };
    let run = Uuid::new_v4().simple().to_string();
    let prefix = format!("{}-{}", args.name_prefix, &run[..6]);
    let created = parallel(vec![(); count], 8, |index, ()| {
        let session = session.clone();
        let name = format!("{prefix}-{index:05}");
        let pin = pin.clone();
        async move {
            session
                .create_unit(
                    repo_unit,
                    &name,
                    pin.as_ref().map(|(b, c)| (b.as_str(), c.as_str())),
                )
                .await
        }
    })
    .await?;
    if args.link && created.len() > 1 {
        let missing =
            || Error::Invalid("the repo_unit's schema has no input or no output to link".into());
        let mut pairs = Vec::with_capacity(created.len());
        for (index, unit) in created.iter().enumerate() {
            let next = &created[(index + 1) % created.len()];
            pairs.push((
                unit.output.clone().ok_or_else(missing)?,
                next.input.clone().ok_or_else(missing)?,
            ));
        }
        parallel(pairs, 8, |_, (output, input)| {
            let session = session.clone();
            async move { session.link(&output, &input).await }
        })
        .await?;
    }
    if let Some(dir) = &args.save_env {
        std::fs::create_dir_all(dir).at(dir)?;
        for (index, unit) in created.iter().enumerate() {
            let path = dir.join(format!("{prefix}-{index:05}.json"));
            let text = serde_json::to_vec_pretty(&unit.env)
                .map_err(|e| Error::Invalid(format!("env.json: {e}")))?;
            std::fs::write(&path, text).at(&path)?;
        }
    }
    created
        .iter()
        .map(|unit| {
            let bytes = serde_json::to_vec(&unit.env)
                .map_err(|e| Error::Invalid(format!("env.json: {e}")))?;
            Ok(UnitEnv::parse(&bytes)?)
        })
        .collect()
}

/// Rolls the fleet out to `commit` and waits until the rollout finishes (or cannot have: every wave
/// timed out).
async fn roll_out(
    session: &Session,
    repo_unit: Uuid,
    commit: &str,
    args: &SimulateOptions,
    shared: &Shared,
    units: usize,
) -> Result<RolloutReport> {
    let applied_before = Stats::get(&shared.stats.updates_applied);
    let batch = args.rollout_batch.max(1);
    let waves = units.div_ceil(batch as usize) as u32;
    let give_up =
        Duration::from_secs(u64::from(args.rollout_wave_timeout) * u64::from(waves.max(1)) + 30);
    let start = Instant::now();
    let uuid = session
        .start_rollout(repo_unit, commit, batch, args.rollout_wave_timeout)
        .await?;
    let mut all_units_updated = None;
    loop {
        // The server checks a wave every 200 ms; polling faster would only measure the poll.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if all_units_updated.is_none()
            && Stats::get(&shared.stats.updates_applied) - applied_before >= units as u64
        {
            all_units_updated = Some(start.elapsed());
        }
        let state = session.rollout(&uuid).await?;
        if state.status != "running" || start.elapsed() > give_up {
            return Ok(RolloutReport {
                commit: commit.to_owned(),
                status: state.status,
                waves: state.wave,
                detail: state.detail,
                elapsed: start.elapsed(),
                all_units_updated,
            });
        }
    }
}

/// Runs the simulation `args` describes and reports what happened.
pub async fn run(args: SimulateArgs) -> Result<Report> {
    let args = *args.options;
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(Error::Invalid(
            "--rate must be a number of messages per second, at least 0".into(),
        ));
    }
    let start_kib = rss(None);
    let server_start_kib = args.server_pid.and_then(|pid| rss(Some(pid)));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(
            usize::try_from(args.download_concurrency)
                .unwrap_or(8)
                .max(16),
        )
        .build()?;
    let setup = Instant::now();
    let session = match (&args.server, &args.login, &args.password) {
        (Some(server), Some(login), Some(password)) => Some(Arc::new(
            Session::login(http.clone(), server, login, password).await?,
        )),
        _ => None,
    };
    let envs = match (&args.env_dir, &session, args.repo_unit) {
        (Some(dir), _, _) => read_env_dir(dir, args.count)?,
        (None, Some(session), Some(repo_unit)) => create_units(session, &args, repo_unit).await?,
        _ => {
            return Err(Error::Invalid(
                "give --env-dir, or --repo-unit with --server, --login and --password".into(),
            ));
        }
    };
    let specs = parallel(envs, 16, |_, env| {
        let http = http.clone();
        async move {
            let schema = api::schema(&http, &env).await?;
            Ok(Spec { env, schema })
        }
    })
    .await?;
    let units = specs.len();
    let setup = setup.elapsed();
    let units_kib = rss(None);
    let server_units_kib = args.server_pid.and_then(|pid| rss(Some(pid)));

    let shared = Arc::new(Shared {
        http,
        stats: Stats::default(),
        downloads: Semaphore::new(usize::try_from(args.download_concurrency).unwrap_or(8)),
        rate: args.rate,
        qos: unit::qos(args.qos),
        state_interval: args.state_interval.map(Duration::from_secs),
    });
    let (phase, watching) = watch::channel(Phase::Connect);
    let mut tasks = JoinSet::new();
    let begin = Instant::now();
    let mut specs = specs.into_iter().peekable();
    let batch = usize::try_from(args.connect_batch).unwrap_or(50);
    while specs.peek().is_some() {
        let mut answers = Vec::with_capacity(batch);
        for spec in specs.by_ref().take(batch) {
            let (tx, rx) = oneshot::channel();
            tasks.spawn(unit::run(spec, shared.clone(), watching.clone(), tx));
            answers.push(rx);
        }
        // A unit that never answers (a broker that drops CONNECTs) must not stall the ramp for ever.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            for answer in answers {
                let _ = answer.await;
            }
        })
        .await;
    }
    let ramp = begin.elapsed();
    // Let the last subscriptions and states land before outputs start and memory is measured.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected_kib = rss(None);
    let server_connected_kib = args.server_pid.and_then(|pid| rss(Some(pid)));
    let _ = phase.send(Phase::Run);
    let traffic = Instant::now();

    tokio::time::sleep(Duration::from_secs(args.seconds)).await;

    // Drain: no new outputs; wait until everything sent has arrived, or nothing more arrives.
    let _ = phase.send(Phase::Drain);
    let stats = &shared.stats;
    let drain_until = Instant::now() + Duration::from_secs(5);
    let mut last = (Stats::get(&stats.received), Instant::now());
    while Instant::now() < drain_until && Stats::get(&stats.received) < Stats::get(&stats.sent) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let received = Stats::get(&stats.received);
        if received != last.0 {
            last = (received, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    let duration = traffic.elapsed();
    // The rollout runs with outputs paused, so that its time and the message latencies measure one thing
    // each; units still publish state and answer commands.
    let rollout = match (&args.rollout_to, &session, args.repo_unit) {
        (Some(commit), Some(session), Some(repo_unit)) => {
            Some(roll_out(session, repo_unit, commit, &args, &shared, units).await?)
        }
        _ => None,
    };
    let _ = phase.send(Phase::Stop);
    shared.downloads.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    let latency = stats
        .latency
        .quantile(0.5)
        .zip(stats.latency.quantile(0.99))
        .map(|(p50, p99)| Latency {
            p50,
            p99,
            max: stats.latency.max(),
        });
    Ok(Report {
        units,
        setup,
        connected: Stats::get(&stats.connected),
        connect_failures: Stats::get(&stats.connect_failures),
        disconnects: Stats::get(&stats.disconnects),
        ramp,
        duration,
        sent: Stats::get(&stats.sent),
        send_dropped: Stats::get(&stats.send_dropped),
        received: Stats::get(&stats.received),
        states: Stats::get(&stats.states),
        commands: Stats::get(&stats.commands),
        latency,
        updates_applied: Stats::get(&stats.updates_applied),
        update_failures: Stats::get(&stats.update_failures),
        downloaded_bytes: Stats::get(&stats.downloaded_bytes),
        rollout,
        memory: Memory {
            start_kib,
            units_kib,
            connected_kib,
        },
        server_memory: args.server_pid.map(|_| Memory {
            start_kib: server_start_kib,
            units_kib: server_units_kib,
            connected_kib: server_connected_kib,
        }),
    })
}
