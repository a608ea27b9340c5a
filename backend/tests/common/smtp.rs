//! A real SMTP server for mail tests: Python's `aiosmtpd` (from PyPI, in a cached virtualenv) on a random
//! 127.0.0.1 port, writing every mail it receives to a file in a directory of the test's own.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const AIOSMTPD: &str = "aiosmtpd==1.4.6";

const SERVER: &str = r#"
import asyncio, os, sys, time
from aiosmtpd.smtp import SMTP

class Save:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(sys.argv[1], "%d.eml" % time.time_ns())
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(name + ".tmp", name)
        return "250 OK"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Save()), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// A running SMTP server; stopped when dropped.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    _child: Child,
}

/// One received mail, its body decoded from quoted-printable.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    pub body: String,
}

impl Mail {
    /// The first link in the body that contains `path` (e.g. `/reset?token=`).
    pub fn link(&self, path: &str) -> String {
        self.body
            .split_whitespace()
            .find(|word| word.contains(path))
            .unwrap_or_else(|| panic!("no {path} link in {}", self.raw))
            .to_owned()
    }
}

/// Undoes quoted-printable soft line breaks and `=XX` escapes (mail bodies with long lines use it).
fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SmtpServer {
    pub async fn start() -> Self {
        let venv = tokio::task::spawn_blocking(|| {
            super::python::venv(
                "PEPEUNIT_AIOSMTPD_VENV",
                "pepeunit-aiosmtpd-1.4.6",
                &[AIOSMTPD],
            )
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(SERVER)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start aiosmtpd");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(60),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("aiosmtpd printed its port")
        .unwrap();
        let port = line.trim().parse().expect("a port");
        Self {
            port,
            dir,
            _child: child,
        }
    }

    /// `smtp_url` for this server (plain SMTP on loopback).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let raw = std::fs::read_to_string(path).unwrap();
                let body = raw
                    .split_once("\r\n\r\n")
                    .or_else(|| raw.split_once("\n\n"))
                    .map(|(_, body)| body)
                    .unwrap_or_default();
                let body = if raw.to_ascii_lowercase().contains("quoted-printable") {
                    decode_quoted_printable(body)
                } else {
                    body.to_owned()
                };
                Mail { raw, body }
            })
            .collect()
    }

    /// Waits (generously) until mail number `count` (1-based) to `to` has arrived, and returns it.
    pub async fn wait_for(&self, to: &str, count: usize) -> Mail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mine: Vec<Mail> = self
                .mails()
                .into_iter()
                .filter(|m| {
                    m.raw
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(to))
                })
                .collect();
            if mine.len() >= count {
                return mine[count - 1].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no mail number {count} to {to}; received: {:?}",
                self.mails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
