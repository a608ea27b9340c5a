//! Runs the user's program from the current slot and keeps it running.
//!
//! The program is named in the repo's `pepeunit.toml` (`[program] command = ["python3", "main.py"]`), or
//! found by convention: `main.py` runs with `python3`, an executable `main` or `run` runs as is.
//!
//! The local interface is line-delimited JSON, the same on the program's stdin/stdout and on the agent's
//! Unix socket (`$PEPEUNIT_SOCKET`) for programs that prefer a socket:
//! - agent → program: `{"input": "<name>/pepeunit", "value": "<payload>"}` for every input value;
//! - program → agent: `{"output": "<name>", "value": <string or JSON>}` publishes an output,
//!   `{"log": "<text>", "level": "Info"}` writes the unit's log; any other line is logged as Info.
//!
//! stderr lines go to the log as warnings. Exits are logged with their status and the program is
//! restarted with exponential backoff (1 s doubling to 60 s, reset after a minute of running).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc, watch};

use crate::error::{Error, IoContext, Result};
use crate::logbook::Level;

/// How a program is started and judged after an update.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProgramSpec {
    pub command: Vec<String>,
    /// How long a new version must run without exiting to count as healthy.
    #[serde(default = "default_health_seconds")]
    pub health_seconds: u64,
}

fn default_health_seconds() -> u64 {
    10
}

#[derive(Deserialize)]
struct Manifest {
    program: ProgramSpec,
}

/// The program in `dir`, if it has one.
pub fn spec(dir: &Path) -> Result<Option<ProgramSpec>> {
    let manifest = dir.join("pepeunit.toml");
    match std::fs::read_to_string(&manifest) {
        Ok(text) => {
            let manifest: Manifest =
                toml::from_str(&text).map_err(|e| Error::Invalid(format!("pepeunit.toml: {e}")))?;
            if manifest.program.command.is_empty() {
                return Err(Error::Invalid(
                    "pepeunit.toml: program.command is empty".into(),
                ));
            }
            return Ok(Some(manifest.program));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(manifest),
        Err(_) => {}
    }
    if dir.join("main.py").is_file() {
        return Ok(Some(ProgramSpec {
            command: vec!["python3".into(), "main.py".into()],
            health_seconds: default_health_seconds(),
        }));
    }
    for name in ["main", "run"] {
        let path = dir.join(name);
        let executable = std::fs::metadata(&path).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        });
        if executable {
            return Ok(Some(ProgramSpec {
                command: vec![format!("./{name}")],
                health_seconds: default_health_seconds(),
            }));
        }
    }
    Ok(None)
}

/// What the supervisor tells the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgramEvent {
    Started { dir: PathBuf },
    Output { name: String, value: String },
    Log { level: Level, text: String },
    Exited { status: String, success: bool },
}

/// What the supervisor should run: the directory and the environment to give the program.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Run {
    pub dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Bumped to restart the program even when nothing else changed.
    pub generation: u64,
}

#[derive(Serialize)]
struct InputLine<'a> {
    input: &'a str,
    value: &'a str,
}

/// Handle to the supervisor task.
#[derive(Clone)]
pub struct Supervisor {
    run: watch::Sender<Run>,
    inputs: broadcast::Sender<String>,
}

impl Supervisor {
    /// Starts the supervisor (nothing runs until [`Supervisor::run`]) and the local socket at `socket`.
    pub fn start(socket: &Path, events: mpsc::Sender<ProgramEvent>) -> Result<Self> {
        let (run, runs) = watch::channel(Run::default());
        let (inputs, _) = broadcast::channel(1024);
        match std::fs::remove_file(socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(socket),
            _ => {}
        }
        let listener = UnixListener::bind(socket).at(socket)?;
        tokio::spawn(serve_socket(listener, inputs.clone(), events.clone()));
        tokio::spawn(supervise(runs, inputs.clone(), events));
        Ok(Self { run, inputs })
    }

    /// Runs the program in `run.dir` (restarting it), or stops it when `dir` is `None`.
    pub fn run(&self, run: Run) {
        self.run.send_modify(|current| {
            let generation = current.generation + 1;
            *current = Run { generation, ..run };
        });
    }

    /// Restarts the program as it is.
    pub fn restart(&self) {
        self.run.send_modify(|current| current.generation += 1);
    }

    /// Hands an input value to the program and to every socket client.
    pub fn input(&self, name: &str, value: &str) {
        if let Ok(line) = serde_json::to_string(&InputLine { input: name, value }) {
            // No receiver means no program is listening right now; the value is not kept.
            let _ = self.inputs.send(line);
        }
    }
}

/// Parses one line the program wrote.
fn parse_line(line: &str) -> ProgramEvent {
    #[derive(Deserialize)]
    struct Line {
        output: Option<String>,
        value: Option<Value>,
        log: Option<String>,
        level: Option<String>,
    }
    if let Ok(parsed) = serde_json::from_str::<Line>(line) {
        if let (Some(name), Some(value)) = (parsed.output, parsed.value) {
            let value = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            return ProgramEvent::Output { name, value };
        }
        if let Some(text) = parsed.log {
            let level = parsed
                .level
                .as_deref()
                .and_then(Level::parse)
                .unwrap_or(Level::Info);
            return ProgramEvent::Log { level, text };
        }
    }
    ProgramEvent::Log {
        level: Level::Info,
        text: line.to_owned(),
    }
}

async fn forward_lines<R>(reader: R, default: Option<Level>, events: mpsc::Sender<ProgramEvent>)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let event = match default {
            Some(level) => ProgramEvent::Log { level, text: line },
            None => parse_line(&line),
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

async fn feed_inputs<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut inputs: broadcast::Receiver<String>,
) {
    loop {
        match inputs.recv().await {
            Ok(line) => {
                let written = async {
                    writer.write_all(line.as_bytes()).await?;
                    writer.write_all(b"\n").await?;
                    writer.flush().await
                };
                if written.await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the program reads inputs too slowly; values skipped"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn serve_socket(
    listener: UnixListener,
    inputs: broadcast::Sender<String>,
    events: mpsc::Sender<ProgramEvent>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let (reader, writer) = stream.into_split();
        tokio::spawn(forward_lines(reader, None, events.clone()));
        tokio::spawn(feed_inputs(writer, inputs.subscribe()));
    }
}

fn spawn(dir: &Path, spec: &ProgramSpec, env: &[(String, String)]) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.command[0]);
    command
        .args(&spec.command[1..])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.spawn()
}

/// Asks the program to stop (SIGTERM), then kills it if it is still there after five seconds.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const STABLE_AFTER: Duration = Duration::from_secs(60);

async fn supervise(
    mut runs: watch::Receiver<Run>,
    inputs: broadcast::Sender<String>,
    events: mpsc::Sender<ProgramEvent>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let run = runs.borrow_and_update().clone();
        let log = |level, text: String| {
            let events = events.clone();
            async move {
                let _ = events.send(ProgramEvent::Log { level, text }).await;
            }
        };
        let Some(dir) = run.dir.clone() else {
            if runs.changed().await.is_err() {
                return;
            }
            continue;
        };
        let spec = match spec(&dir) {
            Ok(Some(spec)) => spec,
            Ok(None) => {
                log(Level::Info, "the firmware names no program to run".into()).await;
                let _ = events.send(ProgramEvent::Started { dir }).await;
                if runs.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Err(error) => {
                log(Level::Error, format!("cannot start the program: {error}")).await;
                let _ = events
                    .send(ProgramEvent::Exited {
                        status: error.to_string(),
                        success: false,
                    })
                    .await;
                if runs.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let started = Instant::now();
        let exit = match spawn(&dir, &spec, &run.env) {
            Ok(mut child) => {
                let _ = events
                    .send(ProgramEvent::Started { dir: dir.clone() })
                    .await;
                if let Some(stdout) = child.stdout.take() {
                    tokio::spawn(forward_lines(stdout, None, events.clone()));
                }
                if let Some(stderr) = child.stderr.take() {
                    tokio::spawn(forward_lines(stderr, Some(Level::Warning), events.clone()));
                }
                if let Some(stdin) = child.stdin.take() {
                    tokio::spawn(feed_inputs(stdin, inputs.subscribe()));
                }
                tokio::select! {
                    status = child.wait() => Some(match status {
                        Ok(status) => (status.to_string(), status.success()),
                        Err(error) => (error.to_string(), false),
                    }),
                    changed = runs.changed() => {
                        stop(&mut child).await;
                        if changed.is_err() {
                            return;
                        }
                        None
                    }
                }
            }
            Err(error) => Some((format!("cannot start {:?}: {error}", spec.command), false)),
        };
        // A restart was asked for: no backoff, the new run starts at once.
        let Some((status, success)) = exit else {
            backoff = BACKOFF_START;
            continue;
        };
        let level = if success { Level::Info } else { Level::Error };
        log(level, format!("program exited: {status}")).await;
        let _ = events.send(ProgramEvent::Exited { status, success }).await;
        if started.elapsed() >= STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            changed = runs.changed() => if changed.is_err() { return },
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_outputs_and_logs() {
        assert_eq!(
            parse_line(r#"{"output": "temp/pepeunit", "value": 21.5}"#),
            ProgramEvent::Output {
                name: "temp/pepeunit".into(),
                value: "21.5".into()
            }
        );
        assert_eq!(
            parse_line(r#"{"log": "hot", "level": "warning"}"#),
            ProgramEvent::Log {
                level: Level::Warning,
                text: "hot".into()
            }
        );
        assert_eq!(
            parse_line("plain text"),
            ProgramEvent::Log {
                level: Level::Info,
                text: "plain text".into()
            }
        );
    }

    #[test]
    fn finds_the_program() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(spec(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("main.py"), "").unwrap();
        assert_eq!(
            spec(dir.path()).unwrap().unwrap().command,
            ["python3", "main.py"]
        );
        std::fs::write(
            dir.path().join("pepeunit.toml"),
            "[program]\ncommand = [\"./app\", \"--fast\"]\nhealth_seconds = 2\n",
        )
        .unwrap();
        let spec = spec(dir.path()).unwrap().unwrap();
        assert_eq!(spec.command, ["./app", "--fast"]);
        assert_eq!(spec.health_seconds, 2);
        std::fs::write(
            dir.path().join("pepeunit.toml"),
            "[program]\ncommand = []\n",
        )
        .unwrap();
        assert!(super::spec(dir.path()).is_err());
    }
}
