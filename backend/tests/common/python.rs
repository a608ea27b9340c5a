//! Python virtualenvs for tests that run a published Python program (the reference client, an SMTP
//! server), installed once from PyPI and cached; a machine without PyPI fails such a test loudly.

use std::path::PathBuf;
use std::process::Command;

/// Runs `command`, panicking with its output when it fails; returns its stdout.
pub fn run(command: &mut Command) -> String {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A virtualenv with `packages`, at `$env_var` or `~/.cache/<name>`, installed once.
pub fn venv(env_var: &str, name: &str, packages: &[&str]) -> PathBuf {
    let dir = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap())
                .join(".cache")
                .join(name)
        });
    let marker = dir.join("installed");
    let wanted = packages.join(" ");
    // nextest runs each test in its own process: the first one installs while the others wait on the lock.
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&dir);
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run(Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages));
        std::fs::write(&marker, &wanted).unwrap();
    }
    lock.unlock().unwrap();
    dir
}
